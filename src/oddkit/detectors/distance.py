"""Distance-based detectors: k-nearest-neighbour distance (KNN) and the local outlier factor (LOF).

Both measure plain Euclidean distances in the input space and search neighbours with
:class:`oddkit.detectors._neighbors.NeighborIndex` (exact by default: a float32 GEMM or a kd-tree
for candidates, float64 refinement, certified against float32 rounding; duplicates
collapsed; memory bounded for any size). The fitted state is the training matrix plus,
for LOF, two numbers per training row; the search index is rebuilt from it after
:func:`oddkit.detectors.load`. :func:`set_num_threads` sets the threads of the search
(default: every core).

Constant columns are harmless: a column that is constant in training adds nothing to the
distance between training rows and a fixed, finite amount to the distance of a test row
that differs there, so every score stays finite (no scaling is done, by design: scale the
features beforehand if their units differ).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._neighbors import NeighborIndex, set_num_threads
from .base import Detector, check_choice, check_int, register

__all__ = ["KNN", "LOF", "set_num_threads"]

_INDEX_KINDS = ("flat", "hnsw")


class _NeighborDetector(Detector):
    """Shared plumbing: the training matrix as state and a lazily rebuilt search index."""

    family = "distance"
    n_neighbors: int
    index: str

    def min_fit_rows(self) -> int:
        """``n_neighbors + 1``: every training row needs ``n_neighbors`` *other* rows."""
        return self.n_neighbors + 1

    def _build_index(self, X: np.ndarray) -> None:
        self.X_train_ = np.array(X, dtype=np.float64, copy=True)
        self._nn = NeighborIndex(self.X_train_, index=self.index)
        self._nn_source = self.X_train_

    def _neighbors(self) -> NeighborIndex:
        """The search index over ``X_train_`` (rebuilt once after loading)."""
        if getattr(self, "_nn_source", None) is not self.X_train_:
            self._build_index(self.X_train_)
        return self._nn


@register
class KNN(_NeighborDetector):
    """Distance to the k-th nearest training row (or the mean/median of the k distances).

    Method: the score of ``x`` is a summary of the Euclidean distances from ``x`` to its
    ``n_neighbors`` nearest training rows: the largest one (``method="largest"``,
    Ramaswamy, Rastogi & Shim, "Efficient algorithms for mining outliers from large data
    sets", SIGMOD 2000), their mean (``"mean"``, Angiulli & Pizzuti, "Fast outlier
    detection in high dimensional spaces", PKDD 2002) or their median (``"median"``).
    Identical training rows count once per copy.

    Defaults ``n_neighbors=5``, ``method="largest"`` are PyOD's ``KNN`` defaults.
    ``index="hnsw"`` switches to an approximate FAISS HNSW search (faster on very large,
    high-dimensional training sets); the default ``"flat"`` is exact.

    Differences from PyOD: PyOD also scores the training rows inside ``fit``
    (``decision_scores_``); here that is :meth:`score_training`, computed on request, so
    ``fit`` does no neighbour search. PyOD/scikit-learn shrink ``n_neighbors`` when the
    training set is too small; here fewer than ``n_neighbors + 1`` rows (what the
    leave-one-out training scores need) is an :class:`~oddkit.errors.InputError`.
    Constant columns are harmless (see the module docstring).
    """

    name = "knn"
    reference = (
        "Ramaswamy, Rastogi & Shim, SIGMOD 2000 (largest); "
        "Angiulli & Pizzuti, PKDD 2002 (mean)"
    )

    def __init__(self, n_neighbors: int = 5, method: str = "largest", index: str = "flat") -> None:
        self.n_neighbors = n_neighbors
        self.method = method
        self.index = index
        self._check_params()

    def _check_params(self) -> None:
        self.n_neighbors = check_int("n_neighbors", self.n_neighbors, low=1)
        check_choice("method", self.method, ("largest", "mean", "median"))
        check_choice("index", self.index, _INDEX_KINDS)

    def _fit(self, X: np.ndarray, y: Any = None, **context: Any) -> None:
        self._build_index(X)

    def _score(self, X: np.ndarray) -> np.ndarray:
        dist, _ = self._neighbors().query(X, self.n_neighbors)
        return self._summarise(dist)

    def score_training(self) -> np.ndarray:
        """Leave-one-out scores of the training rows (each row's own copy left out).

        Equal to PyOD's ``decision_scores_``.
        """
        self._check_fitted()
        dist, _ = self._neighbors().query_self(self.n_neighbors)
        return self._summarise(dist)

    def _summarise(self, dist: np.ndarray) -> np.ndarray:
        if self.method == "largest":
            return dist[:, -1].copy()
        if self.method == "mean":
            return dist.mean(axis=1)
        return np.median(dist, axis=1)


@register
class LOF(_NeighborDetector):
    """Local outlier factor: how much sparser a point's neighbourhood is than its neighbours'.

    Method (Breunig, Kriegel, Ng & Sander, "LOF: identifying density-based local
    outliers", SIGMOD 2000), in scikit-learn's novelty mode: with ``k = n_neighbors``,
    the reachability distance of ``q`` from a training row ``o`` is
    ``max(k_distance(o), d(q, o))``; the local reachability density is
    ``lrd(q) = 1 / (mean reachability distance to q's k nearest training rows + 1e-10)``
    (the ``1e-10`` is scikit-learn's guard against duplicates); the score is
    ``mean over those neighbours o of lrd(o) / lrd(q)``, i.e. ``-score_samples`` of
    ``sklearn.neighbors.LocalOutlierFactor(novelty=True)``. The training rows' k-distances
    and densities use neighbourhoods that leave the row itself out (one copy: an identical
    training row is still a neighbour at distance 0). Euclidean distance.

    Default ``n_neighbors=20`` is PyOD's and scikit-learn's. ``index="hnsw"`` gives an
    approximate FAISS HNSW search; the default ``"flat"`` is exact.

    Differences from scikit-learn: it shrinks ``n_neighbors`` to ``n_train - 1`` with a
    warning; here fewer than ``n_neighbors + 1`` training rows is an
    :class:`~oddkit.errors.InputError`. Ties at the k-th distance are broken by the lower
    training row index, and identical training rows always get identical densities
    (scikit-learn's choice among tied rows depends on its search structure). More than
    ``n_neighbors`` copies of one row give that row a k-distance of 0 and a density of
    1e10, as in scikit-learn: scores stay finite but large. Constant columns are harmless
    (see the module docstring).
    """

    name = "lof"
    reference = "Breunig, Kriegel, Ng & Sander, SIGMOD 2000"

    def __init__(self, n_neighbors: int = 20, index: str = "flat") -> None:
        self.n_neighbors = n_neighbors
        self.index = index
        self._check_params()

    def _check_params(self) -> None:
        self.n_neighbors = check_int("n_neighbors", self.n_neighbors, low=1)
        check_choice("index", self.index, _INDEX_KINDS)

    def _fit(self, X: np.ndarray, y: Any = None, **context: Any) -> None:
        self._build_index(X)
        dist, idx = self._nn.query_self(self.n_neighbors)
        self.k_distance_ = dist[:, -1].copy()
        self.lrd_ = self._density(dist, idx)

    def _score(self, X: np.ndarray) -> np.ndarray:
        dist, idx = self._neighbors().query(X, self.n_neighbors)
        return self._lof(self._density(dist, idx), idx)

    def score_training(self) -> np.ndarray:
        """LOF of the training rows with their own copy left out.

        Equal to ``-negative_outlier_factor_`` of scikit-learn and PyOD's ``decision_scores_``.
        """
        self._check_fitted()
        _, idx = self._neighbors().query_self(self.n_neighbors)
        return self._lof(self.lrd_, idx)

    def _density(self, dist: np.ndarray, idx: np.ndarray) -> np.ndarray:
        """Local reachability density from the k neighbour distances and indices."""
        reach = np.maximum(self.k_distance_[idx], dist)
        return 1.0 / (reach.mean(axis=1) + 1e-10)

    def _lof(self, lrd_query: np.ndarray, idx: np.ndarray) -> np.ndarray:
        return self.lrd_[idx].mean(axis=1) / lrd_query

"""Linear detectors: principal component analysis (PCA).

The principal axes come from our own eigendecomposition / SVD (numpy, scipy) of the
standardised training data; the fitted state is the standardisation statistics, the
axes and their variances, all plain arrays.
"""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np
from scipy import linalg

from ..errors import InputError, ParamError
from .base import Detector, check_bool, check_choice, check_float, check_int, register

__all__ = ["PCA", "principal_axes", "standardisation"]

_EPS = np.finfo(np.float64).eps


def standardisation(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Column means and scales (population standard deviations) of ``X``.

    A column whose variance cannot be told apart from the rounding error of computing
    it (the bound of Chan, Golub & LeVeque for the two-pass algorithm:
    ``var <= n eps var + (n eps mean)^2``, which includes exactly constant columns) gets
    scale 1, so standardising never divides by zero: the column is only centred. This
    is the rule scikit-learn's ``StandardScaler`` (and so PyOD) applies.
    """
    n = X.shape[0]
    mean = X.mean(axis=0)
    var = np.mean((X - mean) ** 2, axis=0)
    constant = var <= n * _EPS * var + (n * _EPS * mean) ** 2
    scale = np.sqrt(var)
    scale[constant] = 1.0
    return mean, scale


def principal_axes(Z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Principal axes of ``Z`` (rows, by decreasing variance) and their variances.

    All ``min(n, d)`` axes are returned. Variances use ``n - 1``. For tall data
    (``n >= 10 d`` and ``d <= 1000``) the axes are the eigenvectors of the covariance
    matrix (one pass over the data, then a d x d problem); otherwise they come from the
    SVD of the centred data. This is the same choice scikit-learn's ``PCA`` makes with
    ``svd_solver="auto"`` for all components, so the two agree to rounding. Each axis'
    sign is fixed so that its largest-magnitude coordinate is positive.
    """
    n, d = Z.shape
    mean = Z.mean(axis=0)
    if d <= 1000 and n >= 10 * d:
        # Gram matrix minus the mean's outer product: no centred copy of the data
        # (Z is standardised, so the subtraction loses nothing worth noting).
        cov = Z.T @ Z
        cov -= n * np.outer(mean, mean)
        cov /= max(n - 1, 1)
        values, vectors = np.linalg.eigh(cov)
        variances = np.clip(values[::-1], 0.0, None)
        axes = vectors[:, ::-1].T
    else:
        _, s, axes = linalg.svd(Z - mean, full_matrices=False)
        variances = s**2 / max(n - 1, 1)
    axes = np.array(axes[: min(n, d)], dtype=np.float64, order="C")
    variances = np.array(variances[: min(n, d)], dtype=np.float64)
    biggest = np.argmax(np.abs(axes), axis=1)
    axes *= np.sign(axes[np.arange(axes.shape[0]), biggest])[:, None]
    return axes, variances


@register
class PCA(Detector):
    """PCA detector: distance of a row to the principal axes of the (standardised) training data.

    The training data is standardised (``standardization=True``) and its principal axes
    ``v_j`` with explained-variance ratios ``r_j`` are found.

    ``method="distance"`` (default) is the score PyOD's ``PCA`` computes, after the
    principal component classifier of Shyu et al.: over the selected axes,
    ``score(x) = sum_j ||z - v_j|| / r_j`` where ``z`` is the standardised row and
    ``||z - v_j||`` the Euclidean distance between ``z`` and the unit axis vector
    ``v_j`` (``r_j`` replaced by 1 when ``weighted=False``). The axes kept are the first
    ``n_components`` (``None``: all ``min(n, d)``; an int; or a float in (0, 1): the
    fewest axes explaining more than that share of variance) and, of those, the last
    ``n_selected_components`` (the minor ones; ``None``: all). Dividing by ``r_j`` lets
    the low-variance (minor) axes dominate, where anomalies stand out.

    ``method="reconstruction"``: the widely used reconstruction error, the squared
    distance of the centred, standardised row to the subspace of the first
    ``n_components`` axes (``None`` here means the fewest axes explaining more than 95%
    of the variance, since all axes reconstruct every row exactly).
    ``n_selected_components`` and ``weighted`` do not apply to it.

    Reference: M.-L. Shyu, S.-C. Chen, K. Sarinnapakorn and L. Chang, "A novel anomaly
    detection scheme based on principal component classifier", ICDM Foundations and
    New Directions of Data Mining workshop, 2003; the distance score as implemented in
    PyOD (``pyod.models.pca.PCA``, whose defaults these are: ``n_components=None``,
    ``n_selected_components=None``, ``weighted=True``, ``standardization=True``).
    Note the paper's own score is the sum of squared principal-component scores
    divided by their eigenvalues (major and minor components separately), not this
    distance.

    Deliberate differences from PyOD: axes whose variance is numerically zero
    (at most ``max(n, d) * eps`` times the largest one; from constant or collinear
    columns or fewer rows than columns) are dropped from the score: their direction
    is arbitrary and PyOD divides by a ratio of about 0, giving scores that swamp
    everything else or overflow. PyOD's ``whiten``, ``svd_solver``, ``tol``,
    ``iterated_power`` and ``random_state`` are not offered: whitening does not change
    the score and our decomposition is always exact (PyOD may pick a randomized SVD
    for wide data with few components). With ``standardization=False`` the distance
    score uses the raw rows, uncentred, exactly as PyOD does.

    Constant columns: standardisation leaves them unscaled (scale 1, see
    :func:`standardisation`) and their zero-variance axis is dropped, so scores stay
    finite; a test row that differs in such a column still scores higher, through
    ``||z||``. Needs two training rows that are not all identical.
    """

    name = "pca"
    family = "linear"
    reference = (
        "Shyu et al., A novel anomaly detection scheme based on principal component "
        "classifier, 2003 (score as implemented in PyOD)"
    )

    def __init__(
        self,
        n_components: int | float | None = None,
        n_selected_components: int | None = None,
        weighted: bool = True,
        standardization: bool = True,
        method: str = "distance",
    ) -> None:
        self.n_components = n_components
        self.n_selected_components = n_selected_components
        self.weighted = weighted
        self.standardization = standardization
        self.method = method
        self._check_params()

    # ------------------------------------------------------------------ params
    def _check_params(self) -> None:
        nc = self.n_components
        if nc is not None:
            if isinstance(nc, numbers.Integral) and not isinstance(nc, bool):
                check_int("n_components", nc, low=1)
            else:
                check_float("n_components", nc, 0.0, 1.0, low_inclusive=False, high_inclusive=False)
        if self.n_selected_components is not None:
            check_int("n_selected_components", self.n_selected_components, low=1)
            if isinstance(nc, numbers.Integral) and self.n_selected_components > nc:
                raise ParamError(
                    f"n_selected_components ({self.n_selected_components}) must be <= "
                    f"n_components ({nc})."
                )
        check_bool("weighted", self.weighted)
        check_bool("standardization", self.standardization)
        check_choice("method", self.method, ("distance", "reconstruction"))

    def min_fit_rows(self) -> int:
        return 2

    # ------------------------------------------------------------------ fit
    def _fit(self, X: np.ndarray, y: np.ndarray | None, **context: Any) -> None:
        n, d = X.shape
        if self.standardization:
            self.mean_, self.scale_ = standardisation(X)
            Z = (X - self.mean_) / self.scale_
        else:
            self.mean_, self.scale_ = X.mean(axis=0), np.ones(d)
            Z = X
        axes, variances = principal_axes(Z)
        if not variances.size or variances[0] <= 0.0:
            raise InputError(
                "PCA needs at least two training rows that are not all identical; every "
                "column of the training data is constant."
            )
        self.components_ = axes
        self.explained_variance_ = variances
        self.explained_variance_ratio_ = variances / variances.sum()
        self.n_components_ = self._resolve_n_components(self.explained_variance_ratio_)
        # axes without (numerical) variance have an arbitrary direction: never scored
        informative = variances > max(n, d) * _EPS * variances[0]
        kept = np.flatnonzero(informative[: self.n_components_])
        if self.method == "distance":  # the last (minor) n_selected of the kept axes
            kept = kept[-min(self._resolve_n_selected(self.n_components_), kept.size) :]
        self.selected_ = kept.astype(np.int64)

    def _resolve_n_components(self, ratio: np.ndarray) -> int:
        nc = self.n_components
        if nc is None:
            nc = 0.95 if self.method == "reconstruction" else ratio.size
        if isinstance(nc, numbers.Integral):
            if nc > ratio.size:
                raise InputError(
                    f"n_components={nc} exceeds min(n_samples, n_features) = {ratio.size} of "
                    "the training data; lower it or pass more rows/columns."
                )
            return int(nc)
        # fewest axes whose cumulated share of variance exceeds nc
        return int(min(np.searchsorted(np.cumsum(ratio), float(nc), side="right") + 1, ratio.size))

    def _resolve_n_selected(self, n_components: int) -> int:
        if self.n_selected_components is None:
            return n_components
        if self.n_selected_components > n_components:
            raise InputError(
                f"n_selected_components={self.n_selected_components} exceeds the "
                f"{n_components} components kept."
            )
        return int(self.n_selected_components)

    # ------------------------------------------------------------------ score
    def _score(self, X: np.ndarray) -> np.ndarray:
        Z = (X - self.mean_) / self.scale_
        axes = self.components_[self.selected_]
        if self.method == "reconstruction":
            residual = Z - (Z @ axes.T) @ axes
            return np.einsum("ij,ij->i", residual, residual)
        if not self.standardization:  # PyOD measures the raw, uncentred rows
            Z = X
        weights = np.ones(axes.shape[0])
        if self.weighted:
            weights = self.explained_variance_ratio_[self.selected_]
        # ||z - v||^2 = ||z||^2 - 2 <z, v> + ||v||^2, with ||v|| = 1
        sq = np.einsum("ij,ij->i", Z, Z)[:, None] - 2.0 * (Z @ axes.T) + 1.0
        np.maximum(sq, 0.0, out=sq)
        return np.sqrt(sq, out=sq) @ (1.0 / weights)

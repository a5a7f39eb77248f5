"""Feature-space post-hoc OOD detectors: Mahalanobis, RMDS, KNN, ViM, Residual, NECO, fDBD.

Each one is fitted on the in-distribution training features ``X`` (n, d) of a classifier
and its head ``head=(W, b)`` (Mahalanobis and RMDS also take the class labels ``y``), and
scores new feature rows, higher = more OOD. Statistics are accumulated in float64 in
chunks of rows; symmetric matrices are decomposed with ``eigh`` and never inverted
blindly.

Singular covariances (a feature that is constant in training, such as a dead ReLU unit,
or fewer training rows than features) are handled with the Moore-Penrose pseudo-inverse
computed from the eigendecomposition, with the cut-off of ``scipy.linalg.pinvh`` and
``sklearn.covariance.EmpiricalCovariance``: eigenvalues at or below
``d * eps * largest eigenvalue`` count as zero, and the directions they belong to add
nothing to a distance. Scores therefore stay finite, and on a full-rank covariance the
result is the ordinary inverse.

Scoring is batch-independent: a row's score depends only on that row and the fitted state.

Narrow features (64-d for the CIFAR ResNets) make every matrix product here small, and
OpenBLAS's threads then cost more than they save: BLAS runs on one thread for them (see
:func:`_blas_for`). KNN asks the exact neighbour search for the one distance it needs
(:meth:`~oddkit.detectors._neighbors.NeighborIndex.kth_distance`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, ClassVar

import numpy as np
from scipy import sparse

from ...errors import InputError, ParamError
from .._neighbors import (
    NeighborIndex,
    _one_blas_thread,
)
from ..base import check_bool, check_choice, check_int, register
from .base import PosthocDetector, logsumexp

__all__ = ["FDBD", "KNNOOD", "NECO", "RMDS", "Mahalanobis", "Residual", "ViM", "vim_default_dim"]

_EPS = float(np.finfo(np.float64).eps)
#: rows per chunk when accumulating training statistics.
_FIT_CHUNK = 8192
#: matrix products of fewer multiply-adds run on one BLAS thread (see _blas_for).
_THREADED_BLAS_WORK = 1e8


# --------------------------------------------------------------------------- helpers
def _chunks(n: int, step: int = _FIT_CHUNK) -> Iterator[slice]:
    for lo in range(0, n, step):
        yield slice(lo, min(n, lo + step))


def _second_moment(X: np.ndarray, shift: Callable[[slice], np.ndarray]) -> np.ndarray:
    """``sum_i (x_i - s_i)(x_i - s_i)^T / n`` in float64, accumulated over row chunks.

    ``shift(rows)`` gives the vector subtracted from each row of the chunk (a class mean,
    the global mean or the ViM origin), broadcastable to ``X[rows]``.
    """
    d = X.shape[1]
    acc = np.zeros((d, d))
    for rows in _chunks(X.shape[0]):
        Z = X[rows] - shift(rows)
        acc += Z.T @ Z
    acc /= X.shape[0]
    return (acc + acc.T) / 2.0  # exactly symmetric for eigh


def _eigh_descending(S: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues (descending) and eigenvectors (columns, same order) of a symmetric ``S``."""
    vals, vecs = np.linalg.eigh(S)
    return vals[::-1].copy(), np.ascontiguousarray(vecs[:, ::-1])


def _rank_cutoff(vals: np.ndarray) -> float:
    """Eigenvalues at or below this count as zero (``pinvh``'s default relative cut-off)."""
    top = float(vals.max(initial=0.0))
    return vals.size * _EPS * top


def _pinv_whitener(S: np.ndarray) -> np.ndarray:
    """``L`` (d, r) with ``L @ L.T`` = the pseudo-inverse of the covariance ``S``.

    ``r`` is the numerical rank of ``S`` (eigenvalues above :func:`_rank_cutoff`), so
    ``||(x - m) @ L||^2`` is the squared Mahalanobis distance ``(x-m)^T S^+ (x-m)``;
    directions of zero variance are left out. All-constant features give ``r = 0``
    (every distance is then 0).
    """
    vals, vecs = _eigh_descending(S)
    keep = vals > _rank_cutoff(vals)
    return np.ascontiguousarray(vecs[:, keep] / np.sqrt(vals[keep]))


def _sq_dists_to_centres(Z: np.ndarray, C: np.ndarray) -> np.ndarray:
    """Squared Euclidean distances (n, k) between the rows of ``Z`` and of ``C``.

    Expanded as ``|z|^2 - 2 z.c + |c|^2`` (one GEMM, no (n, k, d) temporary), clipped at
    0 against round-off. Callers centre both on the training mean first, which keeps the
    cancellation small.
    """
    sq = (Z * Z).sum(axis=1)[:, None] - 2.0 * (Z @ C.T) + (C * C).sum(axis=1)[None, :]
    return np.maximum(sq, 0.0)


def _row_norms(Z: np.ndarray) -> np.ndarray:
    """Euclidean norm of every row (as ``np.linalg.norm(Z, axis=1)``, with fewer temporaries)."""
    return np.sqrt(np.einsum("ij,ij->i", Z, Z))


def _l2_normalise(X: np.ndarray) -> np.ndarray:
    """Rows scaled to unit Euclidean norm; an all-zero row stays zero."""
    norm = np.linalg.norm(X, axis=1, keepdims=True)
    return np.divide(X, norm, out=np.zeros_like(X), where=norm > 0)


def _pairwise_row_distances(W: np.ndarray) -> np.ndarray:
    """``||w_i - w_j||`` for every pair of rows of ``W`` (C, d), accurate to round-off.

    From the Gram matrix (``|w_i|^2 + |w_j|^2 - 2 w_i.w_j``, one GEMM), except for pairs
    whose squared distance is below ``1e-4`` of their squared norms, where that form
    loses digits to cancellation: those are recomputed as ``||w_i - w_j||`` directly.
    """
    sq_norms = (W * W).sum(axis=1)
    scale = sq_norms[:, None] + sq_norms[None, :]
    sq = np.maximum(scale - 2.0 * (W @ W.T), 0.0)
    np.fill_diagonal(sq, 0.0)
    close = np.argwhere((sq <= 1e-4 * scale) & ~np.eye(W.shape[0], dtype=bool))
    for part in np.array_split(close, max(1, close.size * W.shape[1] // 2**22)):
        diff = W[part[:, 0]] - W[part[:, 1]]
        sq[part[:, 0], part[:, 1]] = (diff * diff).sum(axis=1)
    return np.sqrt(sq)


def vim_default_dim(n_features: int) -> int:
    """ViM's principal-space dimension ``D`` for a feature width ``N`` (Wang et al. 2022).

    ``D = 1000`` if ``N >= 1500``, ``512`` if ``768 <= N < 1500``, else ``N // 2``:
    1000 for 2048-d ResNet/BiT features, 512 for 768-d ViT and 1280-d EfficientNet
    features, 256 for a 512-d ResNet-18 (OpenOOD's CIFAR setting), 32 for the 64-d CIFAR
    ResNets.
    """
    if n_features >= 1500:
        return 1000
    if n_features >= 768:
        return 512
    return n_features // 2


class _FeatureDetector(PosthocDetector):
    """Shared settings of this module's detectors (not registered).

    BLAS runs on one thread while a detector fits or scores narrow features (see
    :func:`_blas_for`): their matrix products are too small for threads to pay.
    """

    #: rows per scoring chunk: keeps (rows x classes) and (rows x residual dims) small.
    score_chunk_rows: ClassVar[int] = 4096

    def _fit(self, X: np.ndarray, y: np.ndarray | None, **context: Any) -> None:
        with _blas_for(min(X.shape[0], _FIT_CHUNK), X.shape[1]):
            super()._fit(X, y, **context)

    def score(self, X: Any) -> np.ndarray:
        """Anomaly scores of ``X`` (float64, shape (n,), higher = more OOD)."""
        width = getattr(self, "n_features_in_", 0)
        with _blas_for(self.score_chunk_rows, width):
            return super().score(X)


@contextmanager
def _blas_for(rows: int, width: int) -> Iterator[None]:
    """One BLAS thread when the largest product of a chunk is small, else BLAS as set.

    The products here are (rows x width) times (width x at most width). Below
    :data:`_THREADED_BLAS_WORK` multiply-adds (64-d features: always), OpenBLAS threads
    cost more than they save; on a busy machine a threaded 8192 x 64 x 10 product was
    measured ten times slower than a single-threaded one (7.8 ms against 0.8 ms); on an
    idle one the threads save 5-10% of a whole fit + score. The limit is taken once for
    all threads inside such a block and lifted when the last one leaves (shared with the
    pooled neighbour search).
    """
    if float(rows) * width * width >= _THREADED_BLAS_WORK:
        yield
        return
    with _one_blas_thread():
        yield


# --------------------------------------------------------------------------- Mahalanobis
@register
class Mahalanobis(_FeatureDetector):
    """Class-conditional Gaussians with one shared covariance; score = min squared Mahalanobis distance.

    Method (Lee, Lee, Lee & Shin, "A simple unified framework for detecting
    out-of-distribution samples and adversarial attacks", NeurIPS 2018, eq. 1-2): from the
    training features ``f(x_i)`` and labels ``y_i``, class means
    ``mu_c = mean of f(x_i) over y_i = c`` and one tied covariance
    ``Sigma = 1/n sum_i (f(x_i) - mu_{y_i})(f(x_i) - mu_{y_i})^T``. The paper's confidence
    is ``M(x) = max_c -(f(x) - mu_c)^T Sigma^{-1} (f(x) - mu_c)``; the score here is
    ``-M(x)``, the smallest squared Mahalanobis distance to a class mean (its square root
    ranks identically).

    Not part of it here: the paper's input pre-processing (a gradient step on the input,
    which needs the network) and its feature ensemble over several layers with a logistic
    regression fitted on OOD validation data. This is the penultimate-layer score without
    either, as in OpenOOD's ``mds`` and pytorch-ood's ``Mahalanobis.predict_features``.
    No hyperparameters.

    Singular covariance (dead units, fewer rows than features): the pseudo-inverse (see
    the module docstring); the result equals
    ``sklearn.covariance.EmpiricalCovariance(assume_centered=True)`` fitted on the
    class-centred features, whose ``mahalanobis(f(x) - mu_c)`` is this squared distance.

    Difference from pytorch-ood 0.4.0: its covariance is the un-normalised scatter
    ``n * Sigma`` plus ``1e-6 I``, inverted directly, and its score is half the squared
    distance; on a full-rank covariance its score is ours divided by ``2 n`` (same
    ranking). On a singular covariance its ``1e-6`` ridge gives the null directions a
    weight of about ``1e6``: a test row that moves along a dead unit gets a huge score.
    """

    name = "mahalanobis"
    reference = (
        "Lee, Lee, Lee & Shin, 'A simple unified framework for detecting out-of-distribution "
        "samples and adversarial attacks', NeurIPS 2018"
    )
    inputs = ("features", "head", "labels")

    def __init__(self) -> None:
        self._check_params()

    def _fit_posthoc(self, X: np.ndarray, y: np.ndarray | None) -> None:
        assert y is not None  # PosthocDetector checked the labels
        n_classes = self.W_.shape[0]
        counts = np.bincount(y, minlength=n_classes).astype(np.float64)
        onehot = sparse.csr_matrix(
            (np.ones(y.size), (y, np.arange(y.size))), shape=(n_classes, y.size)
        )
        means = np.asarray(onehot @ X) / counts[:, None]
        self.location_ = (counts / X.shape[0]) @ means  # the training mean, without another pass
        self.class_means_ = means
        self.covariance_ = _second_moment(X, lambda rows: means[y[rows]])
        self.whitener_ = _pinv_whitener(self.covariance_)
        self.white_means_ = (means - self.location_) @ self.whitener_

    def _class_sq_dists(self, X: np.ndarray) -> np.ndarray:
        """Squared Mahalanobis distances (n, n_classes) to every class mean."""
        Z = (X - self.location_) @ self.whitener_
        return _sq_dists_to_centres(Z, self.white_means_)

    def _score(self, X: np.ndarray) -> np.ndarray:
        return self._class_sq_dists(X).min(axis=1)


@register
class RMDS(Mahalanobis):
    """Relative Mahalanobis distance: class-conditional distance minus a class-agnostic background one.

    Method (Ren, Fort, Liu, Roy, Padhy & Lakshminarayanan, "A simple fix to Mahalanobis
    distance for improving near-OOD detection", arXiv 2106.09022, 2021, eq. 3-4): the
    class-conditional Gaussians of :class:`Mahalanobis` (class means, one shared
    covariance) and a background Gaussian fitted to all training features, mean
    ``mu_0`` and covariance ``Sigma_0 = 1/n sum_i (f(x_i) - mu_0)(f(x_i) - mu_0)^T``.
    With ``MD_c`` the squared Mahalanobis distance to class ``c`` and ``MD_0`` the one
    under the background, ``RMD_c(x) = MD_c(x) - MD_0(x)``; the paper's confidence is
    ``-min_c RMD_c(x)`` and the score here is ``min_c MD_c(x) - MD_0(x)``. It can be
    negative. No hyperparameters.

    Singular covariances: pseudo-inverses, as for :class:`Mahalanobis`. ``Sigma_0`` is
    computed from the class statistics by the law of total covariance,
    ``Sigma_0 = Sigma + sum_c (n_c / n) (mu_c - mu_0)(mu_c - mu_0)^T`` (equal to the direct
    formula up to round-off; one pass over the training rows instead of two).

    Difference from pytorch-ood 0.4.0 (``RMD``): both of its covariances are un-normalised
    scatters plus ``1e-6 I``, so on full-rank covariances its score is ours divided by
    ``n`` (same ranking).
    """

    name = "rmds"
    reference = (
        "Ren, Fort, Liu, Roy, Padhy & Lakshminarayanan, 'A simple fix to Mahalanobis distance "
        "for improving near-OOD detection', arXiv:2106.09022, 2021"
    )

    def _fit_posthoc(self, X: np.ndarray, y: np.ndarray | None) -> None:
        super()._fit_posthoc(X, y)
        # law of total covariance: Sigma_0 = Sigma + sum_c (n_c / n) (mu_c - mu_0)(mu_c - mu_0)^T,
        # from the class statistics (no second pass over the rows; both terms are PSD)
        assert y is not None
        share = np.bincount(y, minlength=self.W_.shape[0]) / X.shape[0]
        D = self.class_means_ - self.location_
        between = (D.T * share) @ D
        self.background_covariance_ = self.covariance_ + (between + between.T) / 2.0
        self.background_whitener_ = _pinv_whitener(self.background_covariance_)

    def _score(self, X: np.ndarray) -> np.ndarray:
        Zb = (X - self.location_) @ self.background_whitener_
        background = (Zb * Zb).sum(axis=1)
        return self._class_sq_dists(X).min(axis=1) - background


# --------------------------------------------------------------------------- KNN
@register
class KNNOOD(_FeatureDetector):
    """Distance from the L2-normalised feature to its k-th nearest normalised training feature.

    Method (Sun, Ming, Zhu & Li, "Out-of-distribution detection with deep nearest
    neighbors", ICML 2022): ``z = f(x) / ||f(x)||``, the same normalisation of every
    training feature, and the score is ``||z - z_(k)||``, the Euclidean distance to the
    k-th nearest normalised training feature (the paper thresholds its negative). An
    all-zero feature stays zero.

    The search is exact (:meth:`oddkit.detectors._neighbors.NeighborIndex.kth_distance`:
    float32 GEMM candidates, the compiled selection, float64 refinement and a
    rounding-error certificate; ties and near-ties are settled exactly). On C10-OOD-local
    (50,000 x 64 training rows, 26,000 queries, k = 50, 2 cores) fit + score take about
    2.3 s; the float32 GEMM (26,000 x 50,000 x 64) is most of it. ``index="hnsw"`` makes
    the search approximate (FAISS HNSW) for very large training sets.

    Default ``k=50``: the paper's choice for CIFAR-10 (it uses 200 for CIFAR-100 and 1000
    for ImageNet with 1% of the training set). Needs at least ``k`` training rows. The
    head is not used (it is stored like every post-hoc detector's). The paper's code
    returns the squared distance (FAISS ``IndexFlatL2``); the distance here, as in
    pytorch-ood's ``KNN``, ranks identically.
    """

    name = "knn_ood"
    reference = (
        "Sun, Ming, Zhu & Li, 'Out-of-distribution detection with deep nearest neighbors', "
        "ICML 2022"
    )
    #: the search chunks the rows itself (memory-bounded) and spreads them over threads
    score_chunk_rows: ClassVar[int] = 65536

    def __init__(self, k: int = 50, index: str = "flat") -> None:
        self.k = k
        self.index = index
        self._check_params()

    def _check_params(self) -> None:
        self.k = check_int("k", self.k, low=1)
        check_choice("index", self.index, ("flat", "hnsw"))

    def min_fit_rows(self) -> int:
        return self.k

    def _fit_posthoc(self, X: np.ndarray, y: np.ndarray | None) -> None:
        self.train_features_ = _l2_normalise(X)

    def _score(self, X: np.ndarray) -> np.ndarray:
        return self._neighbors().kth_distance(_l2_normalise(X), self.k)

    def _neighbors(self) -> NeighborIndex:
        """The search index over ``train_features_`` (built on first use, also after loading)."""
        if getattr(self, "_nn_source", None) is not self.train_features_:
            self._nn = NeighborIndex(self.train_features_, index=self.index)
            self._nn_source = self.train_features_
        return self._nn


# --------------------------------------------------------------------------- ViM / Residual
class _PrincipalResidual(_FeatureDetector):
    """ViM's geometry: the origin ``u = -W^+ b`` and the residual of ``x - u``.

    The principal space is spanned by the ``D`` leading eigenvectors of the uncentred
    second moment of ``x - u`` over the training features (``EmpiricalCovariance`` with
    ``assume_centered=True`` in the paper's code); ``residual_basis_`` (N, N - D) holds
    the other eigenvectors, and ``||(x - u) @ residual_basis_||`` is the residual norm.
    """

    dim: int | None

    def _check_params(self) -> None:
        if self.dim is not None:
            self.dim = check_int("dim", self.dim, low=1)

    def principal_dim(self, n_features: int) -> int:
        """``dim``, or :func:`vim_default_dim` of the feature width when ``dim`` is None."""
        D = vim_default_dim(n_features) if self.dim is None else self.dim
        if D >= n_features:
            raise ParamError(
                f"dim={D} must be smaller than the feature width {n_features} (the residual "
                "space would be empty); pass a smaller dim."
            )
        return D

    def _fit_residual(self, X: np.ndarray) -> None:
        n, N = X.shape
        D = self.principal_dim(N)
        if n <= D:
            raise InputError(
                f"{type(self).__name__} with a {D}-dimensional principal space needs at least "
                f"{D + 1} training rows, got {n}; pass more rows or a smaller dim."
            )
        self.origin_ = -(np.linalg.pinv(self.W_) @ self.b_)
        vals, vecs = _eigh_descending(_second_moment(X, lambda rows: self.origin_))
        if D > 0 and vals[D - 1] <= _rank_cutoff(vals):
            rank = int((vals > _rank_cutoff(vals)).sum())
            raise InputError(
                f"the training features span only {rank} directions around the ViM origin, "
                f"fewer than dim={D}: the principal space is not determined. Pass a dim of at "
                f"most {max(rank - 1, 1)} or training rows that span at least {D + 1} directions."
            )
        self.principal_dim_ = int(D)
        self.residual_basis_ = np.ascontiguousarray(vecs[:, D:])

    def _residual_norm(self, X: np.ndarray) -> np.ndarray:
        return np.linalg.norm((X - self.origin_) @ self.residual_basis_, axis=1)


@register
class Residual(_PrincipalResidual):
    """Norm of the feature's residual outside the principal subspace of the training features.

    Method (the "Residual" score of Wang, Li, Feng & Zhang, "ViM: Out-of-distribution
    with virtual-logit matching", CVPR 2022, sec. 4.1): with the origin ``u = -W^+ b``
    (``W^+`` the pseudo-inverse of the head weights, so that ``W u + b = 0`` in the least
    squares sense) and ``P`` the span of the ``D`` leading eigenvectors of
    ``1/n sum_i (x_i - u)(x_i - u)^T`` over the training features, the score is
    ``||x^{P-perp}||``, the norm of the part of ``x - u`` orthogonal to ``P``.

    Default ``dim=None`` picks ``D`` with the ViM paper's rule (:func:`vim_default_dim`:
    1000 for ``N >= 1500`` features, 512 for ``768 <= N < 1500``, else ``N // 2``; so 32
    for a 64-d CIFAR ResNet, 512 for a 1280-d EfficientNet-Lite0). Interpretation: the
    paper states the rule in its implementation details; its released code hard-codes
    ``1000 if N >= 2048 else 512``, which agrees on every model it evaluates, and
    OpenOOD's CIFAR setting (``dim=256`` for a 512-d ResNet-18) is ``N // 2``.

    Needs more than ``D`` training rows spanning more than ``D`` directions around ``u``
    (otherwise the principal space is not determined: :class:`~oddkit.errors.InputError`).
    """

    name = "residual"
    reference = (
        "Wang, Li, Feng & Zhang, 'ViM: Out-of-distribution with virtual-logit matching', "
        "CVPR 2022 (Residual score)"
    )

    def __init__(self, dim: int | None = None) -> None:
        self.dim = dim
        self._check_params()

    def _fit_posthoc(self, X: np.ndarray, y: np.ndarray | None) -> None:
        self._fit_residual(X)

    def _score(self, X: np.ndarray) -> np.ndarray:
        return self._residual_norm(X)


@register
class ViM(_PrincipalResidual):
    """Virtual-logit matching: the scaled feature residual as an extra logit, against the energy.

    Method (Wang, Li, Feng & Zhang, "ViM: Out-of-distribution with virtual-logit
    matching", CVPR 2022, eq. 4-8): the residual ``x^{P-perp}`` of :class:`Residual`
    (origin ``u = -W^+ b``, principal space of dimension ``D``) becomes a virtual logit
    ``l_0 = alpha ||x^{P-perp}||``, with ``alpha = sum_i max_j l_j(x_i) /
    sum_i ||x_i^{P-perp}||`` over the training features (the mean maximum logit over the
    mean residual norm). The paper's OOD probability is the softmax of ``l_0`` among
    ``l_0, l_1, ..., l_C``, a monotone function of
    ``alpha ||x^{P-perp}|| - log sum_j exp(l_j)``, which is the score here (the paper's
    released code and OpenOOD use its negative as the ID score; pytorch-ood's ``ViM``
    returns exactly this).

    Default ``dim=None``: the paper's rule for ``D``, see :func:`vim_default_dim` and
    :class:`Residual` (32 for 64-d CIFAR ResNet features, 512 for 1280-d EfficientNet).
    Needs more than ``D`` training rows spanning more than ``D`` directions, and a
    positive mean maximum logit (otherwise ``alpha`` would flip the residual's sign).
    """

    name = "vim"
    reference = (
        "Wang, Li, Feng & Zhang, 'ViM: Out-of-distribution with virtual-logit matching', "
        "CVPR 2022"
    )

    def __init__(self, dim: int | None = None) -> None:
        self.dim = dim
        self._check_params()

    def _fit_posthoc(self, X: np.ndarray, y: np.ndarray | None) -> None:
        self._fit_residual(X)
        max_logit = residual = total = 0.0
        for rows in _chunks(X.shape[0]):
            res, logits, Z = self._residual_and_logits(X[rows])
            max_logit += float(logits.max(axis=1).sum())
            residual += float(res.sum())
            total += float(_row_norms(Z).sum())
        if residual <= 1e-12 * total:
            raise InputError(
                "the training features have no residual outside the principal space, so "
                "ViM's alpha is undefined; pass training rows spanning at least dim + 1 "
                "directions or a smaller dim."
            )
        alpha = max_logit / residual
        if not alpha > 0:
            raise InputError(
                f"the mean maximum logit of the training features is {max_logit / X.shape[0]:.4g}, "
                "not positive, so ViM's alpha = mean max logit / mean residual would flip the "
                "virtual logit; check that the head (W, b) belongs to these features."
            )
        self.alpha_ = alpha

    def _score(self, X: np.ndarray) -> np.ndarray:
        residual, logits, _ = self._residual_and_logits(X)
        return self.alpha_ * residual - logsumexp(logits)

    def _residual_and_logits(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Residual norms, logits and ``X - u`` from one matrix product.

        ``(X - u) @ [residual basis | W^T]`` gives the residual coordinates and, plus the
        constant ``u W^T + b``, the logits (``X W^T + b``, to round-off).
        """
        Z = X - self.origin_
        n_res = self.residual_basis_.shape[1]
        Y = Z @ np.hstack([self.residual_basis_, self.W_.T])
        res = Y[:, :n_res]
        logits = Y[:, n_res:] + (self.origin_ @ self.W_.T + self.b_)
        return _row_norms(res), logits, Z


# --------------------------------------------------------------------------- NECO
@register
class NECO(_FeatureDetector):
    """Neural-collapse score: share of the standardised feature's norm inside the leading principal subspace.

    Method (Ben Ammar, Belkhir, Popescu, Manzanera & Franchi, "NECO: NEural Collapse
    based out-of-distribution detection", ICLR 2024, eq. 6 and the released code): the
    training features are standardised per unit (``z = (x - mean) / std``; a unit that
    is constant in training keeps scale 1), ``P`` projects on the ``dim`` leading
    principal components of the standardised training features, and
    ``NECO(x) = ||P z|| / ||z||``. ID features, which neural collapse concentrates near
    the span of the class means, score close to 1. With ``maxlogit=True`` the ratio is
    multiplied by the maximum logit ``max_j l_j(x)``, as the paper's code does for
    transformer backbones (ViT, Swin, DeiT) and not for ResNets. The score is
    ``-NECO(x)`` (times the max logit when asked). A row equal to the training mean
    (``z = 0``) gets the ratio 1 (it lies in every subspace through the mean).

    Defaults: ``maxlogit=False`` (the paper's ResNet setting). ``dim=None`` uses the
    number of classes ``C`` (at most ``N - 1``). Interpretation: the paper tunes ``dim``
    per model and data set and gives no general default; ``C`` is the dimension of the
    span of the ``C`` class means that neural collapse predicts (``C - 1`` around their
    mean, plus one). Needs training rows spanning at least ``dim`` directions.
    """

    name = "neco"
    reference = (
        "Ben Ammar, Belkhir, Popescu, Manzanera & Franchi, 'NECO: NEural Collapse based "
        "out-of-distribution detection', ICLR 2024"
    )

    def __init__(self, dim: int | None = None, maxlogit: bool = False) -> None:
        self.dim = dim
        self.maxlogit = maxlogit
        self._check_params()

    def _check_params(self) -> None:
        if self.dim is not None:
            self.dim = check_int("dim", self.dim, low=1)
        self.maxlogit = check_bool("maxlogit", self.maxlogit)

    def _subspace_dim(self, n_features: int) -> int:
        if self.dim is None:
            return max(1, min(self.W_.shape[0], n_features - 1))
        if self.dim >= n_features:
            raise ParamError(
                f"dim={self.dim} must be smaller than the feature width {n_features} (the "
                "ratio would be 1 for every input); pass a smaller dim."
            )
        return self.dim

    def _fit_posthoc(self, X: np.ndarray, y: np.ndarray | None) -> None:
        n, N = X.shape
        d = self._subspace_dim(N)
        mean = X.mean(axis=0)
        cov = _second_moment(X, lambda rows: mean)
        var = cov.diagonal().copy()
        # Chan, Golub & LeVeque's bound on the two-pass variance's rounding error: a unit
        # whose variance is within it is constant and keeps scale 1 (as in scikit-learn).
        constant = var <= n * _EPS * var + (n * _EPS * mean) ** 2
        scale = np.where(constant, 1.0, np.sqrt(var))
        # covariance of the standardised features = PCA of the standardised training rows
        vals, vecs = _eigh_descending(cov / np.outer(scale, scale))
        if vals[d - 1] <= _rank_cutoff(vals):
            rank = int((vals > _rank_cutoff(vals)).sum())
            raise InputError(
                f"NECO with dim={d} needs training features spanning at least {d} directions "
                f"(at least {d + 1} varied rows); these span {rank}. Pass more rows or a "
                "smaller dim."
            )
        self.mean_ = mean
        self.scale_ = scale
        self.components_ = np.ascontiguousarray(vecs[:, :d])

    def _score(self, X: np.ndarray) -> np.ndarray:
        Z = (X - self.mean_) / self.scale_
        inside = np.linalg.norm(Z @ self.components_, axis=1)
        total = np.linalg.norm(Z, axis=1)
        ratio = np.divide(inside, total, out=np.ones_like(total), where=total > 0)
        if self.maxlogit:
            ratio = ratio * self._logits(X).max(axis=1)
        return -ratio


# --------------------------------------------------------------------------- fDBD
@register
class FDBD(_FeatureDetector):
    """Mean distance to the decision boundaries in feature space, relative to the distance to the training mean.

    Method (Liu & Qin, "Fast decision boundary based out-of-distribution detector",
    ICML 2024, eq. 5-6): for a feature ``z`` predicted as class ``p`` (largest logit),
    the distance from ``z`` to the linear boundary between ``p`` and class ``c`` is
    ``|l_p - l_c| / ||w_p - w_c||`` (closed form for a linear head). fDBD averages it
    over the ``C - 1`` other classes and divides by ``||z - mu||``, the distance to the
    mean ``mu`` of the training features:
    ``fDBD(z) = 1/(C-1) sum_{c != p} |l_p - l_c| / (||w_p - w_c|| ||z - mu||)``. ID
    features lie farther from the boundaries; the score is ``-fDBD(z)``.
    Hyperparameter-free.

    Guards: ``||z - mu||`` is floored at ``1e-12`` times the mean distance of the training
    features to ``mu`` (pytorch-ood floors it at ``1e-8``), so a row exactly at the mean
    gets a large finite negative score; a head with two identical weight rows (no
    boundary between them) is an :class:`~oddkit.errors.InputError`.
    """

    name = "fdbd"
    reference = "Liu & Qin, 'Fast decision boundary based out-of-distribution detector', ICML 2024"

    def __init__(self) -> None:
        self._check_params()

    def _fit_posthoc(self, X: np.ndarray, y: np.ndarray | None) -> None:
        W = self.W_
        norms = _pairwise_row_distances(W)
        off = ~np.eye(W.shape[0], dtype=bool)
        if (norms[off] == 0).any():
            i, j = np.argwhere((norms == 0) & off)[0]
            raise InputError(
                f"head rows {i} and {j} have identical weights: there is no decision boundary "
                "between those classes, so fDBD is undefined. Check the head."
            )
        np.fill_diagonal(norms, 1.0)  # the predicted class itself adds |l_p - l_p| = 0
        self.train_mean_ = X.mean(axis=0)
        spread = sum(
            float(_row_norms(X[rows] - self.train_mean_).sum()) for rows in _chunks(X.shape[0])
        ) / X.shape[0]
        self.min_distance_ = max(1e-12 * spread, np.finfo(np.float64).tiny)
        self.boundary_norms_ = norms

    def _score(self, X: np.ndarray) -> np.ndarray:
        logits = self._logits(X)
        pred = logits.argmax(axis=1)
        top = np.take_along_axis(logits, pred[:, None], axis=1)
        boundary = (np.abs(top - logits) / self.boundary_norms_[pred]).sum(axis=1)
        boundary /= logits.shape[1] - 1
        dist = np.maximum(_row_norms(X - self.train_mean_), self.min_distance_)
        return -boundary / dist

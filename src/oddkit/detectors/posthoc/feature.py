"""Feature-space post-hoc OOD detectors: Mahalanobis, RMDS, KNN, ViM, Residual, NECO, fDBD.

Each one is fitted on the in-distribution training features ``X`` (n, d) of a classifier
and its head ``head=(W, b)`` (Mahalanobis and RMDS also take the class labels ``y``), and
scores new feature rows, higher = more OOD. Symmetric matrices are decomposed with
``eigh`` and never inverted blindly.

Singular covariances (a feature that is constant in training, such as a dead ReLU unit,
or fewer training rows than features) are handled with the Moore-Penrose pseudo-inverse
computed from the eigendecomposition, with the cut-off of ``scipy.linalg.pinvh`` and
``sklearn.covariance.EmpiricalCovariance``: eigenvalues at or below
``d * eps * largest eigenvalue`` count as zero, and the directions they belong to add
nothing to a distance. Scores therefore stay finite, and on a full-rank covariance the
result is the ordinary inverse.

Scoring is batch-independent: a row's score depends only on that row and the fitted state.

Precision. A network's float32 features stay float32 (no float64 copy of the matrix).
Training statistics (means, covariances, sums over the rows) are accumulated in float64,
in one pass over the rows (:func:`_shifted_sums`: the compiled kernel for narrow rows,
float64 copies of blocks of :data:`_BLOCK_ROWS` rows and BLAS otherwise). At score time
each method is one matrix product followed by reductions: the rows (centred on the training mean, or
on ViM's origin in the product's offset) times a fitted matrix that stacks every
projection the score needs (:class:`_Projection`: whitening and class means for
Mahalanobis, residual basis and head for ViM, head and boundary weights for fDBD). For
float32 rows the centring and the product run in float32, as in the network, and so do
the squared norms of up to :data:`_FLOAT32_NORM_MAX_WIDTH` projected values (relative
rounding about 1e-7 each); the per-class values (logits, class terms) are then
converted, and every later step (minima, log-sum-exp, ratios, the score) is float64. On
C10-OOD-local, float32 and float64 input give scores within 2e-6 relative (RMDS and
ViM, which cross zero: within 1e-5 of the largest score) and AUROCs within 1e-6.
float64 rows are computed in float64 throughout.

Speed. Narrow features (64-d for the CIFAR ResNets) make every matrix product here
small, and OpenBLAS's threads then cost more than they save: BLAS runs on one thread for
them (see :func:`_blas_for`), and the training passes and the scoring instead cut the
rows into tasks of :data:`_TASK_ROWS` rows that run on the neighbour search's thread
pool (:func:`oddkit.detectors._neighbors.set_num_threads`). Task and block boundaries
depend only on the number of rows, never on the number of threads, so neither do the
results. KNN asks the exact neighbour search for the one distance it needs
(:meth:`~oddkit.detectors._neighbors.NeighborIndex.kth_distance`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, ClassVar, TypeVar

import numpy as np

from ...errors import InputError, ParamError
from .._neighbors import NeighborIndex, _pool, get_num_threads
from ..base import check_bool, check_choice, check_int, l2_normalise_rows, register
from .base import (
    THREADED_BLAS_WORK,
    PosthocDetector,
    _posthoc_native,
    blas_for_work,
    logsumexp,
    row_span,
)

__all__ = ["FDBD", "KNNOOD", "NECO", "RMDS", "Mahalanobis", "Residual", "ViM", "vim_default_dim"]

_EPS = float(np.finfo(np.float64).eps)
_TINY = float(np.finfo(np.float64).tiny)
#: rows of one float64 block in a training pass (2048 x 64 float64 = 1 MiB, stays in cache).
_BLOCK_ROWS = 2048
#: rows per task of a training pass or a scoring call (tasks run on the thread pool).
_TASK_ROWS = 4096
#: float32 rows up to this wide have their squared norms summed in float32 (relative error
#: about 1e-7 for 64 values, a third of the time of a float64 sum); wider ones in float64.
_FLOAT32_NORM_MAX_WIDTH = 256
#: the widest rows whose training passes use the compiled kernel (its work per row grows
#: as d^2 without cache blocking; wider rows go to BLAS): benchmarks/posthoc_kernels.py
#: measured the kernel 3.0x faster than BLAS at width 64, 1.3x at 256 and 0.88x at 512.
_NATIVE_SUMS_MAX_WIDTH = 256
_EMPTY = np.empty(0)
_EMPTY_INT = np.empty(0, dtype=np.int64)
#: rows of the stride sample that gives the provisional class means of _class_moments.
_SAMPLE_ROWS = 2048

T = TypeVar("T")


# --------------------------------------------------------------------------- row passes
def _chunks(n: int, step: int) -> Iterator[slice]:
    for lo in range(0, n, step):
        yield slice(lo, min(n, lo + step))


def _map_rows(fn: Callable[[slice], T], n: int, parallel: bool) -> list[T]:
    """``fn(rows)`` for consecutive tasks of :data:`_TASK_ROWS` rows, results in row order.

    With ``parallel`` (narrow features, BLAS on one thread), the tasks are dealt round
    robin to the threads of the neighbour search's pool, one batch per thread, each task
    single-threaded inside (numpy releases the GIL in the products and the element-wise
    passes). Tasks write nothing shared; which thread runs a task changes no result.
    """
    tasks = list(_chunks(n, _TASK_ROWS))
    threads = min(get_num_threads(), len(tasks)) if parallel else 1
    if threads <= 1:
        return [fn(rows) for rows in tasks]
    runs = [tasks[i::threads] for i in range(threads)]
    done = _pool(threads).map(lambda run: [fn(rows) for rows in run], runs)
    out: list[T] = [None] * len(tasks)  # type: ignore[list-item]
    for i, results in enumerate(done):
        out[i::threads] = results
    return out


def _shifted_sums(
    X: np.ndarray,
    shifts: np.ndarray,
    labels: np.ndarray | None,
    parallel: bool,
    second: bool = True,
) -> tuple[np.ndarray | None, np.ndarray]:
    """One float64 pass over the rows: ``(S, sums)`` of the shifted rows ``z_i = x_i - s_{g_i}``.

    ``shifts`` is float64 ``(G, d)``; row ``i`` belongs to group ``g_i = labels[i]`` (int,
    in ``[0, G)``), or to group 0 without labels. ``sums[g]`` (G, d) is the sum of the
    ``z_i`` of group ``g`` and, with ``second``, ``S = sum_i z_i z_i^T`` (d, d; None
    without). Every training statistic of this module is made from these.

    Rows up to :data:`_NATIVE_SUMS_MAX_WIDTH` wide go through the compiled kernel
    (``_posthoc_native.shifted_sums``: each row widened and shifted once, the upper
    triangle of ``S`` in register tiles, every entry a sum in row order); others, or an
    install without the kernel, through float64 blocks of :data:`_BLOCK_ROWS` rows and
    BLAS, with the group sums from the same product (each block extended by its one-hot
    group columns: ``B^T B`` holds ``S`` and, off its diagonal block, the group sums).
    """
    n, d = X.shape
    shifts = np.ascontiguousarray(shifts, dtype=np.float64)
    G = shifts.shape[0]
    span = None
    if _posthoc_native is not None and d <= _NATIVE_SUMS_MAX_WIDTH:
        span = row_span(X)
    native = span is not None
    if native:
        lab = _EMPTY_INT if labels is None else np.ascontiguousarray(labels, dtype=np.int64)
        dp = -(-d // 16) * 16

    def kernel_task(rows: slice) -> tuple[np.ndarray | None, np.ndarray]:
        S = np.zeros((dp, dp)) if second else _EMPTY
        sums = np.zeros((G, d))
        _posthoc_native.shifted_sums(
            span[0], lab, labels is not None, shifts, n, d, span[1], G, rows.start, rows.stop,
            X.dtype == np.float64, S, second, sums,
        )
        return (S[:d, :d] if second else None), sums

    def blas_task(rows: slice) -> tuple[np.ndarray | None, np.ndarray]:
        k = 0 if G == 1 else G  # one group: its sums are a matrix-vector product
        acc = np.zeros((d + k, d + k)) if second else None
        sums = np.zeros((G, d))
        buf = np.empty((min(_BLOCK_ROWS, rows.stop - rows.start), d + k))
        for lo in range(rows.start, rows.stop, _BLOCK_ROWS):
            block = slice(lo, min(rows.stop, lo + _BLOCK_ROWS))
            B = buf[: block.stop - block.start]
            Z = B[:, :d]
            group = None if labels is None else labels[block]
            # the float64 differences of the (exactly converted) rows and their shifts
            np.subtract(X[block], shifts[0] if group is None else shifts[group], out=Z)
            if k:
                B[:, d:] = 0.0
                B[np.arange(B.shape[0]), d + group] = 1.0
                if acc is not None:
                    acc += B.T @ B
                else:
                    sums += B[:, d:].T @ Z
            else:
                if acc is not None:
                    acc += Z.T @ Z
                sums[0] += _ones(Z.shape[0]) @ Z
        if acc is not None and k:
            sums += acc[d:, :d]
        return (None if acc is None else acc[:d, :d]), sums

    parts = _map_rows(kernel_task if native else blas_task, n, parallel)
    sums = _ordered_sum([p[1] for p in parts])
    if not second:
        return None, sums
    S = _ordered_sum([p[0] for p in parts])
    if native:  # the kernel fills the upper triangle (and parts of the lower)
        S = np.triu(S) + np.triu(S, 1).T
    return S, sums


def _moment_about(X: np.ndarray, u: np.ndarray, parallel: bool) -> np.ndarray:
    """``sum_i (x_i - u)(x_i - u)^T / n`` in float64, from the rows shifted by ``u``."""
    S, _ = _shifted_sums(X, u[None, :], None, parallel)
    S /= X.shape[0]
    return (S + S.T) / 2.0  # exactly symmetric for eigh


def _column_mean(X: np.ndarray, parallel: bool) -> np.ndarray:
    """The mean of the rows of ``X``, accumulated in float64."""
    _, sums = _shifted_sums(X, np.zeros((1, X.shape[1])), None, parallel, second=False)
    return sums[0] / X.shape[0]


def _mean_and_covariance(X: np.ndarray, parallel: bool) -> tuple[np.ndarray, np.ndarray]:
    """The mean and the covariance ``sum_i (x_i - mu)(x_i - mu)^T / n`` of the rows, float64.

    One pass, as :func:`_class_moments` with a single class: rows shifted by the mean of a
    stride of the rows, then ``S - n o o^T`` with ``o`` the mean of the shifted rows.
    """
    n = X.shape[0]
    shift = _provisional_means(X, np.zeros(n, dtype=np.intp), 1)
    S, sums = _shifted_sums(X, shift, None, parallel)
    offset = sums[0] / n
    S /= n
    S -= np.outer(offset, offset)
    return shift[0] + offset, (S + S.T) / 2.0  # exactly symmetric for eigh


def _class_moments(
    X: np.ndarray, y: np.ndarray, n_classes: int, parallel: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Class counts, class means and the pooled within-class second moment, in one pass.

    Returns ``counts`` (C,), ``means`` (C, d) and
    ``sum_i (x_i - mu_{y_i})(x_i - mu_{y_i})^T / n`` (d, d), all accumulated in float64.
    Each row is first shifted by a provisional mean of its class ``s_c`` (from a stride
    of at most :data:`_SAMPLE_ROWS` rows), and with ``o_c = mu_c - s_c`` (the class mean
    of the shifted rows) the result is ``sum_i (x_i - s)(x_i - s)^T - sum_c n_c o_c o_c^T``:
    ``s_c`` lies near ``mu_c``, so the subtracted term is small and cancels no digits that
    matter (the two-pass formula's accuracy without the second pass; a unit constant
    within a class contributes exact zeros, as in the two-pass formula).
    """
    n = X.shape[0]
    shifts = _provisional_means(X, y, n_classes)
    moment, sums = _shifted_sums(X, shifts, y, parallel)
    counts = np.bincount(y, minlength=n_classes).astype(np.float64)
    offsets = sums / np.maximum(counts, 1.0)[:, None]
    moment -= (offsets.T * counts) @ offsets
    moment /= n
    return counts, shifts + offsets, (moment + moment.T) / 2.0  # exactly symmetric for eigh


def _provisional_means(X: np.ndarray, labels: np.ndarray, n_classes: int) -> np.ndarray:
    """float64 ``(n_classes, d)``: class means of a stride of the rows (a class the stride
    misses gets the stride's overall mean)."""
    rows = np.arange(0, X.shape[0], max(1, X.shape[0] // _SAMPLE_ROWS))
    sample = X[rows].astype(np.float64)
    counts = np.bincount(labels[rows], minlength=n_classes)
    sums = _onehot(labels[rows], n_classes) @ sample
    overall = sample.mean(axis=0)
    seen = counts > 0
    return np.where(seen[:, None], sums / np.maximum(counts, 1)[:, None], overall)


def _onehot(labels: np.ndarray, n_classes: int) -> np.ndarray:
    """float64 ``(n_classes, len(labels))`` indicator matrix (class sums as one product)."""
    out = np.zeros((n_classes, labels.size))
    out[labels, np.arange(labels.size)] = 1.0
    return out


def _ones(n: int) -> np.ndarray:
    return np.ones(n)


def _ordered_sum(parts: list[np.ndarray]) -> np.ndarray:
    """Sum of the per-task results in task order (the same rounding for any thread count)."""
    total = parts[0].copy()
    for p in parts[1:]:
        total += p
    return total


def _first_argmax(L: np.ndarray) -> np.ndarray:
    """``L.argmax(axis=0)`` for a class-major ``L`` (C, n): the first class at the maximum.

    As whole-row operations: numpy's argmax over the leading axis runs one short column
    at a time (about 3.5x slower for 10 classes in an ad hoc timing). Each class at the maximum gets the
    weight ``C - c``; the largest weight is the first such class.
    """
    C = L.shape[0]
    if C > 255:  # weights beyond uint8; long columns make numpy's argmax efficient anyway
        return L.argmax(axis=0)
    hit = (L == L.max(axis=0)).view(np.uint8)
    hit *= np.arange(C, 0, -1, dtype=np.uint8)[:, None]
    return C - hit.max(axis=0).astype(np.intp)


# --------------------------------------------------------------------------- linear algebra
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


class _Projection:
    """``((X - centre) * scale) @ A + offset`` for a block of rows ``X`` (n, d).

    Everything runs in ``X``'s dtype: for float32 rows in float32, with ``centre``,
    ``scale``, ``A`` and the offset rounded to float32 once, and the rounding of the
    float32 centre removed through the offset (``offset + ((centre32 - centre) * scale)
    @ A``, computed in float64), so the outputs are centred on the exact float64 centre
    up to the product's rounding. float64 rows: float64. ``centre_rows=False`` skips the
    centring pass over the rows: the product is ``(X * scale) @ A`` and the centre enters
    through the offset only (``- (centre * scale) @ A``, float64). Built from fitted state
    at first use (never saved).
    """

    def __init__(
        self,
        A: np.ndarray,
        centre: np.ndarray,
        offset: np.ndarray | None = None,
        scale: np.ndarray | None = None,
        centre_rows: bool = True,
    ) -> None:
        self.A = np.ascontiguousarray(A)
        self.A32 = self.A.astype(np.float32)
        self.centre, self.centre32 = centre, centre.astype(np.float32)
        self.scale = scale
        self.scale32 = None if scale is None else scale.astype(np.float32)
        self.centre_rows = centre_rows
        offset = np.zeros(A.shape[1]) if offset is None else offset
        if centre_rows:
            error = self.centre32 - centre  # what float32 rows are centred on, less the centre
            offset32 = offset + (error if scale is None else error * scale) @ A
        else:  # (x * s) @ A - (c * s) @ A, the second term in float64
            offset = offset - (centre if scale is None else centre * scale) @ A
            offset32 = offset
        self.offset, self.offset32 = offset, offset32.astype(np.float32)

    def __call__(self, X: np.ndarray) -> _Projected:
        single = X.dtype == np.float32
        Z = X
        if self.centre_rows:
            Z = np.subtract(X, self.centre32 if single else self.centre)
        if self.scale is not None:
            Z = np.multiply(Z, self.scale32 if single else self.scale, out=None if Z is X else Z)
        Y = Z @ (self.A32 if single else self.A)
        Y += self.offset32 if single else self.offset  # one contiguous pass over Y
        return _Projected(Z, Y)


class _Projected:
    """One block's projection: ``Z`` (the centred, scaled rows; ``X`` itself when the rows
    are not centred) and ``Y`` (n, k), both in the rows' dtype.

    Columns whose rows only need a squared norm (whitened coordinates, residual
    coordinates) stay in the rows' dtype; the few per-class columns are handed out
    class-major in float64 (``(m, n)``, column ``i`` = row ``i``), where the reductions
    over the classes of a row (max, min, log-sum-exp) run along the leading axis as
    whole-row vector operations instead of one short row at a time.
    """

    def __init__(self, Z: np.ndarray, Y: np.ndarray) -> None:
        self.Z, self.Y = Z, Y

    def sq_norms(self, cols: slice) -> np.ndarray:
        """float64 squared norm of each row of the output columns ``cols``."""
        return _sq_norms(self.Y[:, cols])

    def class_major(self, cols: slice) -> np.ndarray:
        """The output columns ``cols`` as float64 ``(m, n)``."""
        part = self.Y[:, cols]
        out = np.empty((part.shape[1], part.shape[0]))
        out[...] = part.T
        return out


def _sq_norms(Z: np.ndarray) -> np.ndarray:
    """Squared Euclidean norm of every row of ``Z``, float64."""
    if Z.dtype == np.float32 and Z.shape[1] > _FLOAT32_NORM_MAX_WIDTH:
        return np.einsum("ij,ij->i", Z, Z, dtype=np.float64)
    return np.einsum("ij,ij->i", Z, Z).astype(np.float64, copy=False)


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


# --------------------------------------------------------------------------- shared base
class _FeatureDetector(PosthocDetector):
    """Shared machinery of this module's detectors (not registered).

    BLAS runs on one thread while a detector fits or scores narrow features (see
    :func:`_blas_for`), and their row tasks run on the thread pool instead. Subclasses
    implement ``_score_rows`` on a task's rows and ``_prepare`` (the matrices scoring
    needs, derived from the fitted state, rebuilt after a refit or a load).
    """

    #: rows per call of ``_score`` (cut into tasks of _TASK_ROWS rows inside)
    score_chunk_rows: ClassVar[int] = 65536
    #: rows of the products a task multiplies at once (for the BLAS thread choice)
    _task_rows: ClassVar[int] = _TASK_ROWS

    def _fit(self, X: np.ndarray, y: np.ndarray | None, **context: Any) -> None:
        with _blas_for(self._task_rows, X.shape[1]):
            super()._fit(X, y, **context)

    def score(self, X: Any) -> np.ndarray:
        """Anomaly scores of ``X`` (float64, shape (n,), higher = more OOD)."""
        width = getattr(self, "n_features_in_", 0)
        with _blas_for(self._task_rows, width):
            return super().score(X)

    def _parallel(self, width: int) -> bool:
        """Whether row tasks go to the thread pool: narrow features (BLAS on one thread)."""
        return _narrow(self._task_rows, width)

    def _score(self, X: np.ndarray) -> np.ndarray:
        prepared = self._prepared()
        score_rows = lambda rows: self._score_rows(X[rows], prepared)
        return np.concatenate(_map_rows(score_rows, X.shape[0], self._parallel(X.shape[1])))

    def _prepared(self) -> Any:
        """``_prepare()``, cached until a fitted array it reads is replaced (refit, load)."""
        sources = tuple(getattr(self, name) for name in self._prepared_from)
        cached = self.__dict__.get("_prepared_cache")
        stale = cached is None or any(a is not b for a, b in zip(cached[0], sources))
        if stale:
            cached = self._prepared_cache = (sources, self._prepare())
        return cached[1]

    #: the fitted attributes ``_prepare`` reads
    _prepared_from: ClassVar[tuple[str, ...]] = ()

    def _prepare(self) -> Any:
        raise NotImplementedError

    def _score_rows(self, X: np.ndarray, prepared: Any) -> np.ndarray:
        raise NotImplementedError


def _narrow(rows: int, width: int) -> bool:
    """Whether a task's largest product, (rows x width) times (width x at most width +
    classes), is below :data:`~oddkit.detectors.posthoc.base.THREADED_BLAS_WORK`
    multiply-adds (64-d features: always)."""
    return float(rows) * width * width < THREADED_BLAS_WORK


def _blas_for(rows: int, width: int) -> Any:
    """One BLAS thread for a task's products when they are narrow (:func:`_narrow`), else
    BLAS as set (:func:`~oddkit.detectors.posthoc.base.blas_for_work`)."""
    return blas_for_work(float(rows) * width * width)


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

    Computation: the class means and ``Sigma`` come from one float64 pass over the
    training rows (:func:`_class_moments`). With ``L`` the whitener
    (``L L^T = Sigma^+``), ``m_c`` the whitened class means and ``z = (x - mu) L``
    (``mu`` the training mean), the squared distance is ``|z|^2 - 2 z.m_c + |m_c|^2``: one
    product of the centred rows with ``[L | L m^T]`` gives ``z`` and every ``z.m_c``.

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
    _prepared_from = ("location_", "whitener_", "white_means_")

    def __init__(self) -> None:
        self._check_params()

    def _fit_posthoc(self, X: np.ndarray, y: np.ndarray | None) -> None:
        assert y is not None  # PosthocDetector checked the labels
        n_classes = self.W_.shape[0]
        parallel = self._parallel(X.shape[1])
        counts, means, covariance = _class_moments(X, y, n_classes, parallel)
        self.location_ = (counts / X.shape[0]) @ means  # the training mean, without another pass
        self.class_means_ = means
        self.covariance_ = covariance
        self.whitener_ = _pinv_whitener(self.covariance_)
        self.white_means_ = (means - self.location_) @ self.whitener_

    def _prepare(self) -> tuple[_Projection, np.ndarray]:
        return self._projection(), (self.white_means_**2).sum(axis=1)

    def _projection(self, *extra: np.ndarray) -> _Projection:
        """Centred rows times ``[L | L m^T | extra...]``."""
        L = self.whitener_
        return _Projection(np.hstack([L, L @ self.white_means_.T, *extra]), self.location_)

    def _score_rows(self, X: np.ndarray, prepared: Any) -> np.ndarray:
        projection, mean_sq = prepared
        return self._min_class_sq_dist(projection(X), mean_sq)

    def _min_class_sq_dist(self, p: _Projected, mean_sq: np.ndarray) -> np.ndarray:
        """``min_c |z - m_c|^2 = |z|^2 + min_c (|m_c|^2 - 2 z.m_c)`` from the projection."""
        r = self.whitener_.shape[1]
        cross = p.class_major(slice(r, r + mean_sq.size))
        cross *= -2.0
        cross += mean_sq[:, None]
        # the expansion can round below 0 for a row at a class mean
        return np.maximum(p.sq_norms(slice(0, r)) + cross.min(axis=0), 0.0)


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
    formula up to round-off; no extra pass over the training rows). At score time the
    background distance is the class-conditional whitening's minus a rank-``C`` term
    (Woodbury's identity, see :meth:`_background_update`), so one product with
    ``C`` extra columns gives both distances and ``|z|^2`` cancels.

    Difference from pytorch-ood 0.4.0 (``RMD``): both of its covariances are un-normalised
    scatters plus ``1e-6 I``, so on full-rank covariances its score is ours divided by
    ``n`` (same ranking).
    """

    name = "rmds"
    reference = (
        "Ren, Fort, Liu, Roy, Padhy & Lakshminarayanan, 'A simple fix to Mahalanobis distance "
        "for improving near-OOD detection', arXiv:2106.09022, 2021"
    )
    _prepared_from = (*Mahalanobis._prepared_from, "background_whitener_")

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

    def _prepare(self) -> tuple[_Projection, np.ndarray, bool]:
        mean_sq = (self.white_means_**2).sum(axis=1)
        K = self._background_update()
        if K is None:
            return self._projection(self.background_whitener_), mean_sq, False
        return self._projection(self.whitener_ @ K), mean_sq, True

    def _score_rows(self, X: np.ndarray, prepared: Any) -> np.ndarray:
        projection, mean_sq, low_rank = prepared
        p = projection(X)
        r, C = self.whitener_.shape[1], mean_sq.size
        if low_rank:  # MD_c - MD_0 = min_c (|m_c|^2 - 2 z.m_c) + |z K|^2: |z|^2 cancels
            cross = p.class_major(slice(r, r + C))
            cross *= -2.0
            cross += mean_sq[:, None]
            return cross.min(axis=0) + p.sq_norms(slice(r + C, None))
        return self._min_class_sq_dist(p, mean_sq) - p.sq_norms(slice(r + C, None))

    def _background_update(self) -> np.ndarray | None:
        """``K`` (r, <= C) with ``MD_0(x) = |z|^2 - |z K|^2``, ``z = (x - mu) L``; or None.

        ``Sigma_0 = Sigma + B`` with ``B`` the between-class scatter (rank < C). Where
        ``B`` lies inside the span of ``Sigma`` (always, unless a unit is constant within
        every class but not across classes), the whitened background covariance is
        ``I + L^T B L``, and with ``L^T B L = U diag(m) U^T`` its inverse is
        ``I - K K^T``, ``K = U diag(sqrt(m / (1 + m)))`` (Woodbury): the background
        distance is the class whitening's minus a rank-``C`` term, so scoring needs
        ``C`` projected columns instead of ``d`` and no second squared norm. None (use
        the background whitener) when ``B`` leaves the span of ``Sigma``, or when the two
        pseudo-inverses' cut-offs would keep different directions.
        """
        L = self.whitener_
        if L.shape[1] == 0:
            return None
        between = self.background_covariance_ - self.covariance_
        kept = 1.0 / np.einsum("ij,ij->j", L, L)  # the eigenvalues of Sigma that L keeps
        cutoff = _rank_cutoff(np.linalg.eigvalsh(self.background_covariance_))
        inside = (L * kept) @ L.T  # projection onto the span of Sigma
        outside = between - inside @ between @ inside
        if kept.min() <= cutoff or np.abs(outside).max() > cutoff:
            return None
        M = L.T @ between @ L
        m, U = np.linalg.eigh((M + M.T) / 2.0)
        keep = m > _EPS * max(float(m.max()), 0.0)
        return U[:, keep] * np.sqrt(m[keep] / (1.0 + m[keep]))


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
    #: the search chunks the rows itself (memory-bounded), spreads them over threads and
    #: limits BLAS itself
    score_chunk_rows: ClassVar[int] = 65536
    _task_rows: ClassVar[int] = 65536

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
        self.train_features_ = l2_normalise_rows(X)

    def _score(self, X: np.ndarray) -> np.ndarray:
        return self._neighbors().kth_distance(l2_normalise_rows(X), self.k)

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
    _prepared_from = ("origin_", "residual_basis_", "W_", "b_")
    #: whether the projection also gives the logits (ViM) or only the residual (Residual)
    _with_logits: ClassVar[bool] = False

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

    def _fit_residual(self, X: np.ndarray) -> np.ndarray:
        """Fit the origin and the residual basis; returns the eigenvalues (descending)."""
        n, N = X.shape
        D = self.principal_dim(N)
        if n <= D:
            raise InputError(
                f"{type(self).__name__} with a {D}-dimensional principal space needs at least "
                f"{D + 1} training rows, got {n}; pass more rows or a smaller dim."
            )
        self.origin_ = -(np.linalg.pinv(self.W_) @ self.b_)
        moment = _moment_about(X, self.origin_, self._parallel(N))
        vals, vecs = _eigh_descending(moment)
        if D > 0 and vals[D - 1] <= _rank_cutoff(vals):
            rank = int((vals > _rank_cutoff(vals)).sum())
            raise InputError(
                f"the training features span only {rank} directions around the ViM origin, "
                f"fewer than dim={D}: the principal space is not determined. Pass a dim of at "
                f"most {max(rank - 1, 1)} or training rows that span at least {D + 1} directions."
            )
        self.principal_dim_ = int(D)
        self.residual_basis_ = np.ascontiguousarray(vecs[:, D:])
        return vals

    def _prepare(self) -> _Projection:
        """Rows minus ``u`` times ``[residual basis | W^T]`` (logits: plus ``u W^T + b``)."""
        R = self.residual_basis_
        # rows are not centred first: u = -W^+ b, where every logit is ~0, lies away from
        # the features, so the product's rounding on x is no larger than on x - u
        if not self._with_logits:
            return _Projection(R, self.origin_, centre_rows=False)
        offset = np.concatenate([np.zeros(R.shape[1]), self.origin_ @ self.W_.T + self.b_])
        return _Projection(np.hstack([R, self.W_.T]), self.origin_, offset, centre_rows=False)

    def _residual_and_logits(
        self, X: np.ndarray, projection: _Projection
    ) -> tuple[np.ndarray, np.ndarray]:
        """Residual norms (n,) and class-major float64 logits (C, n; none without the head)."""
        p = projection(X)
        n_res = self.residual_basis_.shape[1]
        return np.sqrt(p.sq_norms(slice(0, n_res))), p.class_major(slice(n_res, None))


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

    def _score_rows(self, X: np.ndarray, prepared: Any) -> np.ndarray:
        return self._residual_and_logits(X, prepared)[0]


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

    Computation: one float64 pass over the training rows for the second moment, a second
    one (the scoring product) for ``alpha``; at score time one product of ``x - u`` with
    ``[residual basis | W^T]`` gives the residual and the logits.

    Default ``dim=None``: the paper's rule for ``D``, see :func:`vim_default_dim` and
    :class:`Residual` (32 for 64-d CIFAR ResNet features, 512 for 1280-d EfficientNet).
    Needs more than ``D`` training rows spanning more than ``D`` directions, a residual
    (training rows spanning more than ``D`` directions around ``u``, else ``alpha`` is
    undefined) and a positive mean maximum logit (otherwise ``alpha`` would flip the
    residual's sign).
    """

    name = "vim"
    reference = (
        "Wang, Li, Feng & Zhang, 'ViM: Out-of-distribution with virtual-logit matching', "
        "CVPR 2022"
    )
    _with_logits = True

    def __init__(self, dim: int | None = None) -> None:
        self.dim = dim
        self._check_params()

    def _fit_posthoc(self, X: np.ndarray, y: np.ndarray | None) -> None:
        vals = self._fit_residual(X)
        if vals[self.principal_dim_] <= _rank_cutoff(vals):
            raise InputError(
                "the training features have no residual outside the principal space (they "
                f"span only {self.principal_dim_} directions around the ViM origin), so ViM's "
                "alpha is undefined; pass training rows spanning at least dim + 1 directions "
                "or a smaller dim."
            )
        projection = self._prepared()

        def sums(rows: slice) -> tuple[float, float]:
            residual, logits = self._residual_and_logits(X[rows], projection)
            return float(logits.max(axis=0).sum()), float(residual.sum())

        parts = _map_rows(sums, X.shape[0], self._parallel(X.shape[1]))
        max_logit = sum(p[0] for p in parts)
        alpha = max_logit / sum(p[1] for p in parts)
        if not alpha > 0:
            raise InputError(
                f"the mean maximum logit of the training features is {max_logit / X.shape[0]:.4g}, "
                "not positive, so ViM's alpha = mean max logit / mean residual would flip the "
                "virtual logit; check that the head (W, b) belongs to these features."
            )
        self.alpha_ = alpha

    def _score_rows(self, X: np.ndarray, prepared: Any) -> np.ndarray:
        residual, logits = self._residual_and_logits(X, prepared)
        return self.alpha_ * residual - logsumexp(logits, axis=0)


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
    _prepared_from = ("mean_", "scale_", "components_", "W_", "b_")

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
        parallel = self._parallel(N)
        mean, cov = _mean_and_covariance(X, parallel)
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

    def _prepare(self) -> _Projection:
        """Standardised rows ``z`` times ``[components | scale W^T]`` (the logits, from ``z``)."""
        A, offset = self.components_, None
        if self.maxlogit:
            A = np.hstack([A, self.scale_[:, None] * self.W_.T])
            logits_offset = self.mean_ @ self.W_.T + self.b_
            offset = np.concatenate([np.zeros(self.components_.shape[1]), logits_offset])
        return _Projection(A, self.mean_, offset, scale=1.0 / self.scale_)

    def _score_rows(self, X: np.ndarray, prepared: Any) -> np.ndarray:
        p = prepared(X)
        d = self.components_.shape[1]
        inside = np.sqrt(p.sq_norms(slice(0, d)))
        total = np.sqrt(_sq_norms(p.Z))
        ratio = np.divide(inside, total, out=np.ones_like(total), where=total > 0)
        if self.maxlogit:
            ratio *= p.class_major(slice(d, None)).max(axis=0)
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

    Computation: for the predicted class ``p`` every ``l_p - l_c`` is non-negative, so
    the sum is linear in ``z``: ``sum_c (l_p - l_c) / ||w_p - w_c|| = z.g_p + h_p`` with
    ``g_p = sum_c (w_p - w_c) / ||w_p - w_c||`` and ``h_p`` the same sum over ``b``. One
    product of ``z - mu`` with ``[W^T | G^T]`` gives the logits (for ``p``) and every
    class's boundary sum.

    Guards: ``||z - mu||`` is floored at ``1e-12 ||mu||`` (and at the smallest normal
    float64; pytorch-ood floors it at ``1e-8``), so a row exactly at the mean gets a large
    finite negative score; a head with two identical weight rows (no boundary between
    them) is an :class:`~oddkit.errors.InputError`.
    """

    name = "fdbd"
    reference = "Liu & Qin, 'Fast decision boundary based out-of-distribution detector', ICML 2024"
    _prepared_from = ("train_mean_", "boundary_norms_", "W_", "b_")

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
        self.train_mean_ = _column_mean(X, self._parallel(X.shape[1]))
        self.min_distance_ = max(1e-12 * float(np.linalg.norm(self.train_mean_)), _TINY)
        self.boundary_norms_ = norms

    def _prepare(self) -> _Projection:
        """``z - mu`` times ``[W^T | G^T]``, offsets ``mu W^T + b`` and ``mu G^T + h``."""
        W, b = self.W_, self.b_
        inv = 1.0 / self.boundary_norms_
        np.fill_diagonal(inv, 0.0)
        weight = inv.sum(axis=1)
        G = weight[:, None] * W - inv @ W  # row p: sum_c (w_p - w_c) / ||w_p - w_c||
        h = weight * b - inv @ b
        A = np.hstack([W.T, G.T])
        offset = np.concatenate([self.train_mean_ @ W.T + b, self.train_mean_ @ G.T + h])
        return _Projection(A, self.train_mean_, offset)

    def _score_rows(self, X: np.ndarray, prepared: Any) -> np.ndarray:
        p = prepared(X)
        C = self.W_.shape[0]
        column = C + _first_argmax(p.class_major(slice(0, C)))
        boundary = p.Y[np.arange(X.shape[0]), column] / (C - 1)
        dist = np.maximum(np.sqrt(_sq_norms(p.Z)), self.min_distance_)
        return -boundary / dist

"""The shared base of the post-hoc detectors: the classifier head as fitted state.

:class:`PosthocDetector` validates and stores the head ``(W, b)`` given to ``fit`` as
``head=``; subclasses implement ``_fit_posthoc`` and ``_score`` on float32 or float64
feature matrices and use :meth:`PosthocDetector._logits` for ``X @ W.T + b`` (rows x
classes) or :meth:`PosthocDetector._class_logits` for the same logits class-major
(classes x rows). The head is saved with the detector (``W_``, ``b_``), so a loaded
detector scores without the network.

Why class-major: the scores reduce over the classes of each row (max, log-sum-exp, sums).
numpy reduces over the *leading* axis of a C-ordered array with whole-row vector
operations, but over a short trailing axis (10 classes) one row at a time: on a 8192 x 10
float64 block, ``max(axis=1)`` took about 0.33 ms and the same maximum over axis 0 of the
10 x 8192 transpose 0.02 ms (ad hoc timings during development). :class:`HeadProductDetector` is the base of the detectors
whose work is the head product and element-wise work on its result.

The head product: heads of up to :data:`NATIVE_MAX_CLASSES` classes go through the
compiled kernel ``_posthoc_native`` (setup.py builds it where a C compiler exists), which
reads each row once and writes the class-major float64 logits directly, where numpy
needs the input's NaN scan, BLAS's product and a transposing float64 pass
(benchmarks/posthoc_kernels.py: 1.5x faster for 10,000 x 64 float32 rows and 10 or 16
classes, one thread). Since finite logits prove a row finite, the logit
detectors leave the NaN / inf check of their scoring input to it
(:attr:`~oddkit.detectors.base.Detector.defers_finite_check`). Wider heads, and installs
without the kernel, use BLAS on one thread (:data:`THREADED_BLAS_WORK`) and numpy.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from ...errors import FeatureMismatchError, InputError, NonFiniteError
from .._neighbors import _one_blas_thread
from ..base import DeferredNonFinite, Detector, all_finite

try:  # the optional compiled head product (setup.py); numpy and BLAS otherwise
    from .. import _posthoc_native
except ImportError:  # pragma: no cover - depends on the install
    _posthoc_native = None

#: the widest head the compiled kernel takes (float32: 16 lanes; float64: 2 x 8); wider
#: heads are faster through BLAS and a transposing pass (see ``_posthoc_native.c``)
NATIVE_MAX_CLASSES = 16
_EMPTY = np.empty(0)

__all__ = ["Head", "HeadProductDetector", "PosthocDetector", "as_head", "logsumexp", "softmax"]

#: head products (rows x features x classes) of fewer multiply-adds run on one BLAS thread:
#: OpenBLAS threads cost more than they save on such small products, and on a busy
#: 2-core machine a threaded 8192 x 64 x 10 float32 product took 4-8 ms against 0.27 ms
#: single-threaded (an ad hoc measurement during development, not a benchmark script). ImageNet-sized heads (2048 x 1000) stay threaded.
THREADED_BLAS_WORK = 1e8


@dataclass(frozen=True)
class Head:
    """A classifier's last linear layer: logits = ``features @ W.T + b``."""

    W: np.ndarray  # (n_classes, n_features)
    b: np.ndarray  # (n_classes,)

    @property
    def n_classes(self) -> int:
        return int(self.W.shape[0])

    @property
    def n_features(self) -> int:
        return int(self.W.shape[1])


def as_head(head: Any, n_features: int | None = None) -> Head:
    """Validate a head given as :class:`Head`, ``(W, b)``, ``(W, None)`` or a ``torch.nn.Linear``.

    ``W`` must be (n_classes, n_features) with ``n_classes >= 2``, ``b`` (n_classes,) or
    None (zeros); both finite. ``n_features``, when given, must match ``W``'s width.
    """
    if head is None:
        raise InputError(
            "this detector needs the classifier head: fit(X, head=(W, b)) with W of shape "
            "(n_classes, n_features) and b of shape (n_classes,) (logits = X @ W.T + b)."
        )
    if isinstance(head, Head):
        W, b = head.W, head.b
    elif hasattr(head, "weight") and hasattr(head, "bias"):  # torch.nn.Linear and the like
        W = head.weight.detach().cpu().numpy()
        b = None if head.bias is None else head.bias.detach().cpu().numpy()
    else:
        try:
            W, b = head
        except (TypeError, ValueError) as exc:
            raise InputError(
                f"head must be (W, b), a Head or a torch.nn.Linear; got {type(head).__name__}."
            ) from exc
    try:
        W = np.asarray(W, dtype=np.float64)
        b = np.zeros(W.shape[0]) if b is None else np.asarray(b, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InputError(f"head W and b must be numeric arrays ({exc}).") from exc
    if W.ndim != 2 or W.shape[0] < 2 or W.shape[1] < 1:
        raise InputError(
            f"head W must be 2-D (n_classes >= 2, n_features); got shape {W.shape}."
        )
    if b.shape != (W.shape[0],):
        raise InputError(f"head b must have shape ({W.shape[0]},) to match W; got {b.shape}.")
    if not (np.isfinite(W).all() and np.isfinite(b).all()):
        raise NonFiniteError("head W / b contain NaN or inf; check the classifier's weights.")
    if n_features is not None and W.shape[1] != n_features:
        raise FeatureMismatchError(
            f"head W has {W.shape[1]} input features but X has {n_features}; pass the "
            "penultimate features that feed this head (or the matching head)."
        )
    return Head(np.ascontiguousarray(W), np.ascontiguousarray(b))


def logsumexp(z: np.ndarray, axis: int = 1) -> np.ndarray:
    """``log(sum(exp(z)))`` along ``axis``, without overflow."""
    m = z.max(axis=axis, keepdims=True)
    return (m + np.log(np.exp(z - m).sum(axis=axis, keepdims=True))).squeeze(axis)


def softmax(z: np.ndarray, axis: int = 1) -> np.ndarray:
    """Row-wise softmax, without overflow."""
    e = np.exp(z - z.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def row_span(X: np.ndarray) -> tuple[np.ndarray, int] | None:
    """``(span, ld)`` for the compiled kernels: the memory from ``X``'s first to its last
    value as a 1-D array, and the distance between row starts in values; None where the
    kernels cannot read ``X`` in place (not float32/float64, columns not adjacent, rows
    overlapping or in reverse order). A column slice of a C-ordered matrix qualifies."""
    if X.dtype not in (np.float32, np.float64) or X.ndim != 2 or X.size == 0:
        return None
    n, d = X.shape
    item = X.itemsize
    if d > 1 and X.strides[1] != item:
        return None
    ld = d if n == 1 else X.strides[0] // item
    if n > 1 and (X.strides[0] % item or ld < d):
        return None
    span = np.lib.stride_tricks.as_strided(X, shape=((n - 1) * ld + d,), strides=(item,))
    return span, ld


def kernel_product(
    X: np.ndarray,
    span: tuple[np.ndarray, int],
    WT: np.ndarray,
    C: int,
    bias: np.ndarray,
    row_scale: np.ndarray | None = None,
) -> tuple[np.ndarray, bool]:
    """``(out, all finite)``: the compiled kernel's class-major float64 ``out[c, i] =
    row_scale[i] * (X[i] . W[c]) + bias[c]`` for all rows, from ``span = row_span(X)`` and
    ``WT = _kernel_layout(W, X.dtype)`` (``W`` with ``C`` rows)."""
    out = np.empty((C, X.shape[0]))
    scale = _EMPTY if row_scale is None else np.ascontiguousarray(row_scale, np.float64)
    finite = _posthoc_native.class_logits(
        span[0], WT, np.ascontiguousarray(bias, np.float64), scale, row_scale is not None,
        X.shape[0], X.shape[1], span[1], C, 0, X.shape[0], X.dtype == np.float64, out,
    )
    return out, bool(finite)


def _kernel_applies(W: np.ndarray) -> bool:
    """Whether the compiled kernel is installed and takes a head of ``W``'s width."""
    return _posthoc_native is not None and W.shape[0] <= NATIVE_MAX_CLASSES


def _as_dtype(A: np.ndarray, dtype: np.dtype) -> np.ndarray:
    return A.astype(dtype)


def _kernel_layout(W: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """``W`` (C, d) as ``_posthoc_native`` takes it: ``WT[j]`` = feature ``j``'s weights of
    every class, zero-padded to whole vectors (16 float32 or 8 float64 lanes),
    C-contiguous, in ``dtype``."""
    lanes = 16 if dtype == np.float32 else 8
    vectors = -(-W.shape[0] // lanes)
    WT = np.zeros((W.shape[1], vectors * lanes), dtype=dtype)
    WT[:, : W.shape[0]] = W.T
    return WT


class PosthocDetector(Detector):
    """Base of the classifier-based detectors: ``fit(X, [y,] head=(W, b))``, ``score(X)``.

    Subclasses set ``name``, ``reference``, ``inputs`` (``("features", "head")``, plus
    ``"labels"`` when they use ``y``) and implement :meth:`_fit_posthoc` (the head is
    already stored as ``W_`` / ``b_``) and ``_score``.
    """

    family: ClassVar[str] = "posthoc"
    inputs: ClassVar[tuple[str, ...]] = ("features", "head")
    #: a network's float32 features stay float32 (no float64 copy of the whole matrix);
    #: the large products run in float32, as in the network, and every reduction and
    #: every score is float64. Other input is converted to float64.
    input_dtypes: ClassVar[tuple[type, ...]] = (np.float32, np.float64)

    def _fit(self, X: np.ndarray, y: np.ndarray | None, **context: Any) -> None:
        head = as_head(context.get("head"), X.shape[1])
        self.W_ = head.W
        self.b_ = head.b
        if "labels" in self.inputs:
            y = self._check_labels(y, head.n_classes)
        self._fit_posthoc(X, y)

    def _fit_posthoc(self, X: np.ndarray, y: np.ndarray | None) -> None:
        """Learn what the method needs from the ID training features (default: nothing)."""

    @property
    def head(self) -> Head:
        self._check_fitted()
        return Head(self.W_, self.b_)

    def _logits(self, X: np.ndarray) -> np.ndarray:
        """``X @ W.T + b`` in float64 (the product in float32 when ``X`` is float32)."""
        return np.add(X @ self._weights_like(X).T, self.b_)

    def _class_logits(
        self,
        X: np.ndarray,
        W: np.ndarray | None = None,
        row_scale: np.ndarray | None = None,
        check_input: bool = False,
    ) -> np.ndarray:
        """The logits class-major: float64 ``(n_classes, n)``, column ``i`` = logits of row ``i``.

        ``W`` replaces the head's weights (same shape; default ``W_``); ``row_scale``
        (float64, ``(n,)``) multiplies each row's product before the bias is added:
        ``out[:, i] = row_scale[i] * (W @ X[i]) + b``. The product runs in ``X``'s dtype
        (float32 features: in float32, as in the network); scaling and bias in float64.
        The result is a new array the caller may overwrite.

        Heads of up to :data:`NATIVE_MAX_CLASSES` classes go through the compiled kernel
        (``_posthoc_native``: one pass over ``X`` writes the class-major float64 result);
        wider heads, or an install without the kernel, through BLAS and one float64 pass.
        ``check_input=True`` makes this call the check that ``X`` is finite (the caller
        declared :attr:`~oddkit.detectors.base.Detector.defers_finite_check`): finite
        logits prove the rows finite (see ``_posthoc_native.c``), so the kernel's check costs
        no extra pass; a non-finite row raises :class:`~oddkit.detectors.base.DeferredNonFinite`.
        """
        W = self.W_ if W is None else W
        native = self._native_head(X, W)
        if native is not None:
            out, finite = kernel_product(X, native[1], native[0], W.shape[0], self.b_, row_scale)
            if not finite and check_input and not all_finite(X):
                raise DeferredNonFinite
            return out
        if check_input and not all_finite(X):
            raise DeferredNonFinite
        product = X @ self._in_dtype_of(X, W).T  # (n, C), C-ordered
        out = np.empty((product.shape[1], product.shape[0]))
        if row_scale is None:
            np.add(product.T, self.b_[:, None], out=out)
        else:
            np.multiply(product.T, row_scale, out=out)
            out += self.b_[:, None]
        return out

    def _native_head(
        self, X: np.ndarray, W: np.ndarray
    ) -> tuple[np.ndarray, tuple[np.ndarray, int]] | None:
        """``(WT, row_span(X))`` for the compiled kernel, or None where it does not apply
        (absent, wide head, ``X`` not readable in place). ``WT`` is ``W`` transposed, in
        ``X``'s dtype, classes padded to whole vectors; made once per fitted array and
        cached like :meth:`_in_dtype_of`."""
        if not _kernel_applies(W):
            return None
        span = row_span(X)
        if span is None:
            return None
        return self._derived(X.dtype, W, _kernel_layout), span

    def _weights_like(self, X: np.ndarray) -> np.ndarray:
        """``W_`` in ``X``'s dtype (the float32 copy is made once per fit)."""
        return self._in_dtype_of(X, self.W_)

    def _in_dtype_of(self, X: np.ndarray, A: np.ndarray) -> np.ndarray:
        """Fitted array ``A`` in ``X``'s dtype: as it is, or a float32 copy made once."""
        if X.dtype != np.float32 or A.dtype == np.float32:
            return A
        return self._derived(np.dtype(np.float32), A, _as_dtype)

    def _derived(self, dtype: np.dtype, A: np.ndarray, make: Any) -> np.ndarray:
        """``make(A, dtype)`` for the fitted array ``A``, computed once and cached.

        The results are cached on the instance (not fitted state: the name starts with an
        underscore), keyed by the array itself, the dtype and ``make``, so a refit (new
        arrays) never sees a stale one; results for arrays the detector no longer holds are
        dropped.
        """
        key = (id(A), dtype.str, make)
        cache: dict[Any, tuple[np.ndarray, np.ndarray]] = self.__dict__.get("_derived_cache", {})
        hit = cache.get(key)
        if hit is None or hit[0] is not A:
            # a new dict, never one that another thread may be reading, replaces the old
            held = {id(v) for v in vars(self).values() if isinstance(v, np.ndarray)}
            fresh = {k: v for k, v in cache.items() if id(v[0]) in held}
            hit = fresh[key] = (A, make(A, dtype))
            self._derived_cache = fresh
        return hit[1]

    @staticmethod
    def _check_labels(y: np.ndarray | None, n_classes: int) -> np.ndarray:
        """Integer class labels in ``[0, n_classes)``, every class present at least once."""
        y = np.asarray(y)
        if y.dtype.kind == "f" and np.all(y == np.round(y)):
            y = y.astype(np.int64)
        if y.dtype.kind not in "iu":
            raise InputError(f"labels y must be integer class indices; got dtype {y.dtype}.")
        if y.size and (y.min() < 0 or y.max() >= n_classes):
            raise InputError(
                f"labels must lie in [0, {n_classes}) to match the head's {n_classes} classes; "
                f"got values from {int(y.min())} to {int(y.max())}."
            )
        missing = np.flatnonzero(np.bincount(y.astype(np.int64), minlength=n_classes) == 0)
        if missing.size:
            raise InputError(
                f"class(es) {missing[:10].tolist()} have no training rows; every class of the "
                "head needs at least one (the class-conditional statistics need them)."
            )
        return y.astype(np.int64)


class HeadProductDetector(PosthocDetector):
    """A post-hoc detector that scores by small head products and element-wise work on them.

    The logit and activation-shaping detectors and GradNorm: each chunk's work is one
    product with the head (or a shaped head) and element-wise work on its result.
    ``score`` runs on one BLAS thread while a chunk's head product ``rows x features x
    classes`` is below :data:`THREADED_BLAS_WORK`; subclasses take the same setting for
    their fit with :meth:`_head_blas`. (The limit is threadpoolctl's, counted and shared
    with the neighbour search, so detectors scoring side by side do not undo it.)
    """

    #: True where ``_score``'s only BLAS work is the head product: where the compiled
    #: kernel does that product, ``score`` then skips setting the BLAS thread limit.
    head_product_only: ClassVar[bool] = False

    def score(self, X: Any) -> np.ndarray:
        """Anomaly scores of ``X`` (float64, shape (n,), higher = more OOD)."""
        with self._head_blas(scoring=True):
            return super().score(X)

    def _head_blas(self, scoring: bool = False) -> Any:
        """One BLAS thread when a chunk's head product is small (else BLAS as set); no
        limit while ``scoring`` a :attr:`head_product_only` detector with the kernel."""
        W = getattr(self, "W_", None)
        if scoring and self.head_product_only and W is not None and _kernel_applies(W):
            return nullcontext()
        return blas_for_work(0.0 if W is None else float(self.score_chunk_rows) * W.size)


def blas_for_work(multiply_adds: float) -> Any:
    """A context with BLAS on one thread when a product of ``multiply_adds`` is below
    :data:`THREADED_BLAS_WORK`, else with BLAS as set (shared by every post-hoc detector)."""
    return nullcontext() if multiply_adds >= THREADED_BLAS_WORK else _one_blas_thread()

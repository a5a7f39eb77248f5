"""The shared base of the post-hoc detectors: the classifier head as fitted state.

:class:`PosthocDetector` validates and stores the head ``(W, b)`` given to ``fit`` as
``head=``; subclasses implement ``_fit_posthoc`` and ``_score`` on float64 feature
matrices and use :meth:`PosthocDetector._logits` for ``X @ W.T + b``. The head is saved
with the detector (``W_``, ``b_``), so a loaded detector scores without the network.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from ...errors import FeatureMismatchError, InputError, NonFiniteError
from ..base import Detector

__all__ = ["Head", "PosthocDetector", "as_head", "softmax", "logsumexp"]


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

    def _weights_like(self, X: np.ndarray) -> np.ndarray:
        """``W_`` in ``X``'s dtype (the float32 copy is made once per fit)."""
        if X.dtype != np.float32:
            return self.W_
        cached = getattr(self, "_w32", None)
        if cached is None or cached[0] is not self.W_:
            cached = self._w32 = (self.W_, self.W_.astype(np.float32))
        return cached[1]

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
        missing = np.setdiff1d(np.arange(n_classes), y)
        if missing.size:
            raise InputError(
                f"class(es) {missing[:10].tolist()} have no training rows; every class of the "
                "head needs at least one (the class-conditional statistics need them)."
            )
        return y.astype(np.int64)

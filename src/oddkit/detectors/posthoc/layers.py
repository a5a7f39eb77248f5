"""Detectors on features from several layers of a network.

:class:`MahalanobisEnsemble` is Lee et al.'s feature ensemble: one class-conditional
Mahalanobis score per layer, combined with weights. The features are the mean-pooled
outputs of several layers, concatenated column-wise (``oddkit.features.pooled_layers``
extracts them), and ``blocks`` gives the width of each layer's block of columns.
"""

from __future__ import annotations

import numbers
from typing import Any, ClassVar

import numpy as np

from ...errors import InputError, ParamError
from ..base import Detector, check_float, register
from .feature import Mahalanobis

__all__ = ["MahalanobisEnsemble"]

#: separator between a block's index and its Mahalanobis state names in saved state.
_SEP = "__"


@register
class MahalanobisEnsemble(Detector):
    """Mahalanobis scores of several layers' features, standardised and summed with weights.

    Method (Lee, Lee, Lee & Shin, "A simple unified framework for detecting
    out-of-distribution samples and adversarial attacks", NeurIPS 2018, section 2, the
    "feature ensemble"): for every layer ``l``, class means ``mu_{l,c}`` and one tied
    covariance ``Sigma_l`` of that layer's mean-pooled training features, and the score
    ``M_l(x) = min_c (f_l(x) - mu_{l,c})^T Sigma_l^{-1} (f_l(x) - mu_{l,c})`` (computed
    by :class:`~oddkit.detectors.posthoc.feature.Mahalanobis`, pseudo-inverse included).
    The detector's score is ``sum_l w_l (M_l(x) - m_l) / s_l``, where ``m_l`` and ``s_l``
    are the mean and standard deviation of ``M_l`` over the training rows.

    ``weights``: the paper fits them with a logistic regression on validation ID and
    OOD samples; :meth:`learn_weights` does that on data you choose (use a validation
    OOD set disjoint from every test set, see ``oddkit.detectors.posthoc.tuning``).
    ``weights=None`` (the default) gives every layer weight 1 on the standardised
    scores. Interpretation: the paper has no weight-free variant; the standardisation
    by the training scores is ours, so that no layer dominates by its scale alone.

    Not part of it here: the paper's input pre-processing (a gradient step on the input,
    which needs the network); the features are read as given, e.g. from the cache.

    ``blocks``: the widths of the layers' column blocks, in order (their sum must be the
    number of columns). ``None`` means one block: the plain Mahalanobis score,
    standardised.
    """

    name = "mahalanobis_ensemble"
    family = "posthoc"
    inputs = ("features", "labels")
    input_dtypes: ClassVar[tuple[type, ...]] = (np.float32, np.float64)
    reference = (
        "Lee, Lee, Lee & Shin, 'A simple unified framework for detecting out-of-distribution "
        "samples and adversarial attacks', NeurIPS 2018 (feature ensemble)"
    )

    def __init__(self, blocks: list[int] | None = None, weights: list[float] | None = None) -> None:
        self.blocks = blocks
        self.weights = weights
        self._check_params()

    def _check_params(self) -> None:
        if self.blocks is not None:
            if not isinstance(self.blocks, (list, tuple)) or not self.blocks:
                raise ParamError(f"blocks must be a non-empty list of widths or None, got {self.blocks!r}.")
            for width in self.blocks:
                if isinstance(width, bool) or not isinstance(width, numbers.Integral) or width < 1:
                    raise ParamError(f"blocks must hold positive integer widths, got {self.blocks!r}.")
            self.blocks = [int(w) for w in self.blocks]
        if self.weights is not None:
            if not isinstance(self.weights, (list, tuple)) or not self.weights:
                raise ParamError(f"weights must be a non-empty list of numbers or None, got {self.weights!r}.")
            self.weights = [check_float("weights[i]", w) for w in self.weights]
            if self.blocks is not None:  # without blocks the count is checked by fit
                self._check_weight_count(len(self.blocks), ParamError)

    def _check_weight_count(self, n_blocks: int, error: type[Exception]) -> None:
        if self.weights is not None and len(self.weights) != n_blocks:
            raise error(
                f"weights has {len(self.weights)} value(s) but there are {n_blocks} block(s); "
                "give one weight per block."
            )

    # ------------------------------------------------------------------ fit
    def _bounds(self, width: int) -> list[tuple[int, int]]:
        widths = [width] if self.blocks is None else self.blocks
        if sum(widths) != width:
            raise InputError(
                f"blocks {widths} add up to {sum(widths)} columns but X has {width}; pass the "
                "widths of the layers whose pooled features were concatenated, in order."
            )
        edges = np.cumsum([0, *widths])
        return [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:])]

    def _fit(self, X: np.ndarray, y: np.ndarray | None, **context: Any) -> None:
        bounds = self._bounds(X.shape[1])
        self._check_weight_count(len(bounds), InputError)
        self.classes_, codes = self._class_codes(y)
        zero_head = lambda width: (np.zeros((self.classes_.size, width)), None)  # noqa: E731
        self._members = [
            Mahalanobis().fit(X[:, lo:hi], codes, head=zero_head(hi - lo)) for lo, hi in bounds
        ]
        raw = self._raw_scores(X)
        self.block_center_ = raw.mean(axis=0)
        scale = raw.std(axis=0)
        self.block_scale_ = np.where(scale > 0, scale, 1.0)

    @staticmethod
    def _class_codes(y: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        y = np.asarray(y)
        if y.dtype.kind == "f" and np.all(y == np.round(y)):
            y = y.astype(np.int64)
        if y.dtype.kind not in "iub":
            raise InputError(f"labels y must be integer class indices; got dtype {y.dtype}.")
        classes, codes = np.unique(y, return_inverse=True)
        if classes.size < 2:
            raise InputError(
                f"the training labels hold {classes.size} class; the class-conditional Gaussians "
                "need at least 2 (for one class use oddkit's 'mahalanobis' family of tabular detectors)."
            )
        return classes, codes.astype(np.int64)

    # ------------------------------------------------------------------ score
    def _raw_scores(self, X: np.ndarray) -> np.ndarray:
        bounds = self._bounds(X.shape[1])
        return np.column_stack(
            [m.score(X[:, lo:hi]) for m, (lo, hi) in zip(self._members, bounds)]
        )

    def _standardised(self, X: np.ndarray) -> np.ndarray:
        return (self._raw_scores(X) - self.block_center_) / self.block_scale_

    def _score(self, X: np.ndarray) -> np.ndarray:
        weights = np.ones(len(self._members)) if self.weights is None else np.asarray(self.weights)
        return self._standardised(X) @ weights

    def layer_scores(self, X: Any) -> np.ndarray:
        """The standardised per-layer scores ``(M_l(x) - m_l) / s_l``, shape (n, n_blocks)."""
        return self._standardised(self._scoring_input(X))

    def learn_weights(self, X_id: Any, X_ood: Any, C: float = 1.0) -> list[float]:
        """Per-layer weights from a logistic regression of OOD (1) against ID (0) rows.

        The paper's way of combining the layers: fit on *validation* rows, never on a test
        set. Returns the coefficients (a larger weight, a layer that separates better);
        use them with ``MahalanobisEnsemble(blocks, weights=...)`` or
        ``set_params(weights=...)`` and fit again. ``C`` is scikit-learn's inverse
        regularisation strength.
        """
        from sklearn.linear_model import LogisticRegression

        C = check_float("C", C, 0.0, low_inclusive=False)
        A, B = self.layer_scores(X_id), self.layer_scores(X_ood)
        Z = np.vstack([A, B])
        t = np.r_[np.zeros(len(A)), np.ones(len(B))]
        model = LogisticRegression(C=C, max_iter=1000).fit(Z, t)
        return [float(w) for w in model.coef_[0]]

    # ------------------------------------------------------------------ persistence
    def _get_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        meta, arrays = super()._get_state()
        meta["n_members"] = len(self._members)
        for i, member in enumerate(self._members):
            sub_meta, sub_arrays = member._get_state()
            meta.update({f"block{i}{_SEP}{k}": v for k, v in sub_meta.items()})
            arrays.update({f"block{i}{_SEP}{k}": v for k, v in sub_arrays.items()})
        return meta, arrays

    def _set_state(self, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        own_meta = {k: v for k, v in meta.items() if _SEP not in k and k != "n_members"}
        own_arrays = {k: v for k, v in arrays.items() if _SEP not in k}
        super()._set_state(own_meta, own_arrays)
        members = []
        for i in range(int(meta["n_members"])):
            prefix = f"block{i}{_SEP}"
            member = Mahalanobis()
            member._set_state(
                {k[len(prefix):]: v for k, v in meta.items() if k.startswith(prefix)},
                {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)},
            )
            member._fitted = True
            members.append(member)
        self._members = members

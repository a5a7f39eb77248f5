"""Logit-based post-hoc OOD scores: MSP, MaxLogit, energy, entropy, GEN, KL-Matching.

Each detector maps a feature row to the classifier's logits ``z = x @ W.T + b`` and
scores those logits alone; only KL-Matching learns anything from the training features
(one typical softmax per predicted class). All scores are float64 and follow oddkit's
convention, higher = more OOD: confidences (maximum softmax probability, maximum logit,
the negative energy) are negated, uncertainties (energy, entropy, generalized entropy,
KL divergence) are used as they are.

Everything is computed from log-probabilities (``z - logsumexp(z)``), so no score
overflows for large logits or loses the tail of a softmax that underflows. The helpers
:func:`log_softmax` and :func:`energy` are shared with the activation-shaping detectors in
:mod:`oddkit.detectors.posthoc.shaping`.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from ..base import check_float, check_int, register
from .base import PosthocDetector, logsumexp

__all__ = [
    "GEN",
    "MSP",
    "Energy",
    "Entropy",
    "KLMatching",
    "MaxLogit",
    "energy",
    "log_softmax",
]

#: Rows per scoring chunk: bounds the (rows x classes) temporaries for large label spaces.
_CHUNK_ROWS = 8192


# --------------------------------------------------------------------------- helpers
def log_softmax(z: np.ndarray) -> np.ndarray:
    """Row-wise ``log(softmax(z))``, finite for any finite logits (no underflow to -inf)."""
    return z - logsumexp(z, axis=1)[:, None]


def energy(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """The free energy ``E(z) = -T log sum_c exp(z_c / T)`` of each row (higher = more OOD)."""
    return -temperature * logsumexp(logits / temperature, axis=1)


def _log_one_minus_softmax(z: np.ndarray, lse: np.ndarray) -> np.ndarray:
    """Row-wise ``log(1 - softmax(z))``, accurate also where a probability is close to 1.

    A class that is not the row's arg-max has probability at most 1/2, where
    ``log1p(-p)`` is accurate. For the arg-max class ``1 - p`` is the probability mass
    of all other classes, ``exp(logsumexp(z_others) - logsumexp(z))``, which keeps its
    value even when ``p`` rounds to 1.
    """
    rows = np.arange(z.shape[0])
    top = z.argmax(axis=1)
    p = np.exp(z - lse[:, None])
    p[rows, top] = 0.0  # replaced below; avoids log1p(-1) where the top p rounds to 1
    out = np.log1p(-p)
    others = z.copy()
    others[rows, top] = -np.inf
    out[rows, top] = logsumexp(others, axis=1) - lse
    return out


class _LogitDetector(PosthocDetector):
    """A post-hoc detector whose score is a function of the logits of each row."""

    score_chunk_rows: ClassVar[int] = _CHUNK_ROWS

    def _score(self, X: np.ndarray) -> np.ndarray:
        return self._score_logits(self._logits(X))

    def _score_logits(self, z: np.ndarray) -> np.ndarray:
        raise NotImplementedError


# --------------------------------------------------------------------------- detectors
@register
class MSP(_LogitDetector):
    """Maximum softmax probability (MSP) baseline, negated: ``-max_c softmax(z)_c``.

    The score is ``-max_c exp(z_c) / sum_k exp(z_k)`` of the logits ``z = x W^T + b``,
    computed as ``-exp(max_c z_c - logsumexp(z))``; it lies in ``[-1, -1/C]``.

    Reference: D. Hendrycks and K. Gimpel, "A Baseline for Detecting Misclassified and
    Out-of-Distribution Examples in Neural Networks", ICLR 2017. No hyperparameters (the
    paper uses the plain softmax, temperature 1). Equals pytorch-ood's ``MaxSoftmax``
    with ``t=1``.
    """

    name: ClassVar[str] = "msp"
    reference: ClassVar[str] = "Hendrycks & Gimpel, ICLR 2017 (maximum softmax probability)"

    def __init__(self) -> None:
        self._check_params()

    def _score_logits(self, z: np.ndarray) -> np.ndarray:
        return -np.exp(z.max(axis=1) - logsumexp(z, axis=1))


@register
class MaxLogit(_LogitDetector):
    """Maximum logit, negated: ``-max_c z_c``.

    The unnormalised counterpart of MSP; it does not squash the logits through a
    softmax, which the paper shows helps with many classes.

    Reference: D. Hendrycks, S. Basart, M. Mazeika, A. Zou, J. Kwon, M. Mostajabi,
    J. Steinhardt and D. Song, "Scaling Out-of-Distribution Detection for Real-World
    Settings", ICML 2022. No hyperparameters. Equals pytorch-ood's ``MaxLogit``.
    """

    name: ClassVar[str] = "maxlogit"
    reference: ClassVar[str] = "Hendrycks et al., ICML 2022 (maximum logit)"

    def __init__(self) -> None:
        self._check_params()

    def _score_logits(self, z: np.ndarray) -> np.ndarray:
        return -z.max(axis=1)


@register
class Energy(_LogitDetector):
    """Energy score: the free energy ``E(x) = -T log sum_c exp(z_c / T)`` of the logits.

    The paper uses the negative energy as an in-distribution score; the energy itself is
    therefore the OOD score (higher = more OOD), computed with a stable log-sum-exp.

    Reference: W. Liu, X. Wang, J. Owens and Y. Li, "Energy-based Out-of-distribution
    Detection", NeurIPS 2020. Default ``temperature=1`` (the paper's choice for the
    post-hoc score). Equals pytorch-ood's ``EnergyBased``.
    """

    name: ClassVar[str] = "energy"
    reference: ClassVar[str] = "Liu, Wang, Owens & Li, NeurIPS 2020 (energy score)"

    def __init__(self, temperature: float = 1.0) -> None:
        self.temperature = temperature
        self._check_params()

    def _check_params(self) -> None:
        self.temperature = check_float("temperature", self.temperature, 0.0, low_inclusive=False)

    def _score_logits(self, z: np.ndarray) -> np.ndarray:
        return energy(z, self.temperature)


@register
class Entropy(_LogitDetector):
    """Shannon entropy of the softmax: ``H(p) = -sum_c p_c log p_c`` with ``p = softmax(z)``.

    Computed as ``logsumexp(z') - sum_c p_c z'_c`` with ``z' = z - max(z)``, which is exact
    also for classes whose probability underflows (their ``p log p`` is 0). Higher entropy
    = flatter posterior = more OOD. No hyperparameters.

    Reference: softmax entropy is a classical uncertainty measure; pytorch-ood cites it as
    R. Chan, M. Rottmann and H. Gottschalk, "Entropy Maximization and Meta Classification
    for Out-of-Distribution Detection in Semantic Segmentation", ICCV 2021. Difference from
    pytorch-ood: it clips probabilities to ``[1e-7, 1]`` before the logarithm, which adds
    up to ``~1.6e-6`` per clipped class; we compute the exact entropy.
    """

    name: ClassVar[str] = "entropy"
    reference: ClassVar[str] = "softmax entropy, e.g. Chan, Rottmann & Gottschalk, ICCV 2021"

    def __init__(self) -> None:
        self._check_params()

    def _score_logits(self, z: np.ndarray) -> np.ndarray:
        z = z - z.max(axis=1, keepdims=True)
        lse = logsumexp(z, axis=1)
        p = np.exp(z - lse[:, None])
        return np.maximum(lse - (p * z).sum(axis=1), 0.0)


@register
class GEN(_LogitDetector):
    """Generalized entropy (GEN) of the top-M softmax probabilities.

    ``G_gamma(x) = sum_{j in top-M} p_j^gamma (1 - p_j)^gamma`` over the ``M`` largest
    softmax probabilities ``p_j`` (all classes when ``M >= C``). The paper scores
    in-distribution confidence as ``-G``; ``G`` itself is the OOD score. Each term is
    computed as ``exp(gamma (log p_j + log(1 - p_j)))`` from log-probabilities, so tail
    probabilities that underflow and a top probability that rounds to 1 keep their exact
    contribution.

    Reference: X. Liu, Y. Lochman and C. Zach, "GEN: Pushing the Limits of Softmax-Based
    Out-of-Distribution Detection", CVPR 2023. Defaults ``gamma=0.1`` and ``M=100``, the
    paper's ImageNet setting (also the authors' code and OpenOOD's config); with fewer
    than 100 classes all classes are used.

    Differences from pytorch-ood's ``GEN``: it averages the ``M`` terms instead of summing
    them (a constant factor ``M``, same ranking) and clamps probabilities to
    ``[1e-7, 1 - 1e-7]`` (with ``gamma=0.1`` this changes the term of a probability of
    1e-9 from 0.126 to 0.200, so rankings can differ); we follow the paper: the exact sum.
    """

    name: ClassVar[str] = "gen"
    reference: ClassVar[str] = "Liu, Lochman & Zach, CVPR 2023 (GEN)"

    def __init__(self, gamma: float = 0.1, M: int = 100) -> None:
        self.gamma = gamma
        self.M = M
        self._check_params()

    def _check_params(self) -> None:
        self.gamma = check_float("gamma", self.gamma, 0.0, low_inclusive=False)
        self.M = check_int("M", self.M, low=1)

    def _score_logits(self, z: np.ndarray) -> np.ndarray:
        lse = logsumexp(z, axis=1)
        log_terms = self.gamma * ((z - lse[:, None]) + _log_one_minus_softmax(z, lse))
        m = min(self.M, z.shape[1])
        if m < z.shape[1]:
            # The M largest probabilities are the M largest logits of the row.
            top = np.argpartition(-z, m - 1, axis=1)[:, :m]
            log_terms = np.take_along_axis(log_terms, top, axis=1)
        return np.exp(log_terms).sum(axis=1)


@register
class KLMatching(_LogitDetector):
    """KL-Matching: KL divergence of a row's softmax to the nearest class template.

    Fit: for each class ``k`` the template ``d_k`` is the mean softmax vector of the
    training rows the classifier *predicts* as ``k`` (no labels needed). Score:
    ``min_k KL(p(x) || d_k) = min_k sum_c p_c (log p_c - log d_kc)``.

    The templates are kept as ``log d_k`` (a log-mean-exp of log-probabilities), so a
    template probability that underflows never makes a divergence infinite.

    Reference: D. Hendrycks, S. Basart, M. Mazeika, A. Zou, J. Kwon, M. Mostajabi,
    J. Steinhardt and D. Song, "Scaling Out-of-Distribution Detection for Real-World
    Settings", ICML 2022. The paper estimates the templates on a held-out validation set;
    here they come from the rows passed to ``fit`` (pass a validation split to follow the
    paper exactly). No hyperparameters.

    Interpretation: a class that no fitting row is predicted as has no template and takes
    no part in the minimum (its expected posterior is undefined; inventing one, e.g. a
    one-hot vector, would be a guess). ``template_classes_`` lists the classes that have
    a template. pytorch-ood's ``KLMatching`` does the same.
    """

    name: ClassVar[str] = "klmatching"
    reference: ClassVar[str] = "Hendrycks et al., ICML 2022 (KL-Matching)"

    def __init__(self) -> None:
        self._check_params()

    def _fit_posthoc(self, X: np.ndarray, y: np.ndarray | None) -> None:
        C = self.W_.shape[0]
        log_sums = np.full((C, C), -np.inf)
        counts = np.zeros(C, dtype=np.int64)
        for start in range(0, X.shape[0], self.score_chunk_rows):
            z = self._logits(X[start : start + self.score_chunk_rows])
            pred = z.argmax(axis=1)
            order = np.argsort(pred, kind="stable")
            classes, first = np.unique(pred[order], return_index=True)
            chunk_sums = np.logaddexp.reduceat(log_softmax(z)[order], first, axis=0)
            log_sums[classes] = np.logaddexp(log_sums[classes], chunk_sums)
            counts += np.bincount(pred, minlength=C)
        seen = np.flatnonzero(counts)
        self.template_classes_ = seen.astype(np.int64)
        self.log_templates_ = log_sums[seen] - np.log(counts[seen])[:, None]

    def _score_logits(self, z: np.ndarray) -> np.ndarray:
        lp = log_softmax(z)
        p = np.exp(lp)
        kl = (p * lp).sum(axis=1)[:, None] - p @ self.log_templates_.T
        return kl.min(axis=1)

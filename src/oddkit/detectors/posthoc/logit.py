"""Logit-based post-hoc OOD scores: MSP, MaxLogit, energy, entropy, GEN, KL-Matching.

Each detector maps a feature row to the classifier's logits ``z = x @ W.T + b`` and
scores those logits alone; only KL-Matching learns anything from the training features
(one typical softmax per predicted class). All scores are float64 and follow oddkit's
convention, higher = more OOD: confidences (maximum softmax probability, maximum logit,
the negative energy) are negated, uncertainties (energy, entropy, generalized entropy,
KL divergence) are used as they are.

Everything is computed from the shifted logits ``z - max(z)`` and log-probabilities
(``z - logsumexp(z)``), so no score overflows for large logits or loses the tail of a
softmax that underflows.

Speed: a chunk's logits come class-major, ``(classes, rows)`` float64 (see
:meth:`~oddkit.detectors.posthoc.base.PosthocDetector._class_logits`): every reduction over
the classes is then a few whole-row vector operations, and each score works in place on
that one array. Float32 features are processed in float32 as the network produced them up
to the logits (the head product); from the logits on, everything is float64. The helpers
:func:`energy` and :func:`class_energy_` are shared with the activation-shaping detectors
in :mod:`oddkit.detectors.posthoc.shaping`.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from ..base import check_float, check_int, register
from .base import HeadProductDetector, logsumexp

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

#: Rows per scoring chunk: bounds the (classes x rows) temporaries for large label spaces.
_CHUNK_ROWS = 8192
#: Below this, ``exp`` is subnormal (< 2.2e-308) and numpy's float64 ``exp`` about ten
#: times slower (an ad hoc timing during development: 1.1 ms instead of 0.1 ms for 82,000
#: values near -4000).
_EXP_FLOOR = -708.0
#: Where every logit is above :data:`_EXP_FLOOR` and every column's largest below this,
#: ``exp`` of the logits neither overflows nor underflows, so a sum of exponentials needs
#: no shift by the column maximum.
_EXP_CEILING = 600.0
#: A template or "other classes" probability sum below this is recomputed in log space:
#: its terms may be subnormal (below 2.2e-308) and have lost relative precision there.
_TINY = 1e-280


# --------------------------------------------------------------------------- helpers
def log_softmax(z: np.ndarray) -> np.ndarray:
    """Row-wise ``log(softmax(z))``, finite for any finite logits (no underflow to -inf)."""
    return z - logsumexp(z, axis=1)[:, None]


def energy(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """The free energy ``E(z) = -T log sum_c exp(z_c / T)`` of each row (higher = more OOD)."""
    return -temperature * logsumexp(logits / temperature, axis=1)


def shifted_exp_(z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For class-major logits ``z`` (C, n): ``z -= max``, and return ``(max, exp(z))``.

    ``z`` is overwritten with ``z - max_c z`` (every column's largest entry becomes 0);
    ``max`` has shape (n,). ``log(exp(z).sum(0)) + max`` is the log-sum-exp of each column,
    without overflow and exact also where some ``exp`` underflow.
    """
    top = z.max(axis=0)
    z -= top
    return top, np.exp(z)


def first_argmax(z: np.ndarray, top: np.ndarray | float) -> np.ndarray:
    """``z.argmax(axis=0)`` of class-major ``z`` (C, n) given its column maxima ``top``.

    The first (lowest) class of each column that equals the maximum, as ``argmax``. numpy's
    ``argmax(axis=0)`` copies ``z`` to rows-major first; with few classes, one comparison per
    class is about twice as fast.
    """
    C = z.shape[0]
    if C > 64:
        return z.argmax(axis=0)
    index = np.full(z.shape[1], C - 1, dtype=np.intp)
    for c in range(C - 2, -1, -1):
        np.copyto(index, c, where=z[c] == top)
    return index


def class_energy_(z: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """:func:`energy` of class-major logits ``z`` (C, n), overwriting ``z`` (no temporaries)."""
    if temperature != 1.0:
        z /= temperature
    top, shifted, sums = exp_sums_(z)
    lse = np.log(sums)
    if shifted:
        lse += top
    lse *= -temperature
    return lse


def exp_sums_(z: np.ndarray, top: np.ndarray | None = None) -> tuple[np.ndarray, bool, np.ndarray]:
    """``(top, shifted, sums)`` of class-major logits ``z`` (C, n), overwriting ``z``.

    ``top`` is each column's maximum. Where no ``exp(z)`` overflows or underflows (see
    :data:`_EXP_CEILING`), ``sums`` is ``sum_c exp(z_c)`` (two passes less) and ``shifted``
    is False; otherwise ``sums`` is ``sum_c exp(z_c - top)``, with the shifted logits
    raised to :data:`_EXP_FLOOR` first: a term below ``e^-708`` next to the column's
    largest term 1 changes no sum (nor any softmax beyond 1e-307), and subnormal results
    would make ``exp`` ten times slower. Either way ``z`` ends up holding the summed
    terms, so ``z / sums`` is the softmax. ``top`` may be passed when it is known. The two
    ways agree to a few float64 roundings, so choosing per chunk keeps scores independent
    of the other rows of the batch beyond rounding (as the chunked matrix product does).
    """
    top = z.max(axis=0) if top is None else top
    shifted = not (top.max() < _EXP_CEILING and z.min() > _EXP_FLOOR)
    if shifted:
        z -= top
        np.maximum(z, _EXP_FLOOR, out=z)
    np.exp(z, out=z)
    return top, shifted, z.sum(axis=0)


def _log_p_plus_log_one_minus_p_(z: np.ndarray) -> np.ndarray:
    """``log p + log(1 - p)`` of every softmax probability, for class-major logits (C, n).

    ``z`` is overwritten with ``z - max``. With ``e = exp(z - max)``, ``s = sum e`` and
    ``p = e / s``: ``log p = z - max - log s`` keeps its value where ``e`` underflows. A
    class that is not the column's arg-max has ``p <= 1/2``, so ``1 - p = (s - e) / s``
    without cancellation. For the arg-max class (``e = 1``), ``1 - p`` is the mass of the
    other classes, ``o / s`` with ``o`` summed over them directly, which keeps its value
    even when ``p`` rounds to 1; where ``o`` is so small that its terms may have lost
    precision (below :data:`_TINY`), it is recomputed as a log-sum-exp of the other logits.
    """
    cols = np.arange(z.shape[1])
    _, e = shifted_exp_(z)
    top = first_argmax(z, 0.0)  # the arg-max class of each column
    e[top, cols] = 0.0
    others = e.sum(axis=0)
    log_s = np.log1p(others)  # s = 1 + others (the arg-max's e is exactly 1)
    with np.errstate(divide="ignore"):
        log_others = np.log(others)
    tiny = np.flatnonzero(others < _TINY)
    if tiny.size:
        rest = z[:, tiny]
        rest[top[tiny], np.arange(tiny.size)] = -np.inf
        log_others[tiny] = logsumexp(rest, axis=0)
    out = np.subtract(1.0 + others, e, out=e)  # s (1 - p), but s at the arg-max
    np.log(out, out=out)
    out[top, cols] = log_others  # log(s (1 - p)) at the arg-max: log o
    out += z  # + log(s p)
    out -= 2.0 * log_s
    return out


class _LogitDetector(HeadProductDetector):
    """A post-hoc detector whose score is a function of the logits of each row.

    Subclasses implement ``_score_class_logits(z)`` on the class-major float64 logits
    ``z`` (C, n) of a chunk (see :meth:`PosthocDetector._class_logits`), which they may
    overwrite.
    """

    score_chunk_rows: ClassVar[int] = _CHUNK_ROWS
    #: the head product of the raw rows proves them finite (see ``_class_logits``)
    defers_finite_check: ClassVar[bool] = True
    head_product_only: ClassVar[bool] = True

    def _score(self, X: np.ndarray) -> np.ndarray:
        return self._score_class_logits(self._class_logits(X, check_input=True))

    def _score_class_logits(self, z: np.ndarray) -> np.ndarray:
        raise NotImplementedError


# --------------------------------------------------------------------------- detectors
@register
class MSP(_LogitDetector):
    """Maximum softmax probability (MSP) baseline, negated: ``-max_c softmax(z)_c``.

    The score is ``-max_c exp(z_c) / sum_k exp(z_k)`` of the logits ``z = x W^T + b``,
    computed as ``-1 / sum_k exp(z_k - max_c z_c)`` (or, where no exponential can
    overflow or underflow, ``-exp(max_c z_c) / sum_k exp(z_k)``); it lies in
    ``[-1, -1/C]``.

    Reference: D. Hendrycks and K. Gimpel, "A Baseline for Detecting Misclassified and
    Out-of-Distribution Examples in Neural Networks", ICLR 2017. No hyperparameters (the
    paper uses the plain softmax, temperature 1). Equals pytorch-ood's ``MaxSoftmax``
    with ``t=1``.
    """

    name: ClassVar[str] = "msp"
    reference: ClassVar[str] = "Hendrycks & Gimpel, ICLR 2017 (maximum softmax probability)"

    def __init__(self) -> None:
        self._check_params()

    def _score_class_logits(self, z: np.ndarray) -> np.ndarray:
        # exp(max - logsumexp(z)) = 1 / sum_c exp(z_c - max) = exp(max) / sum_c exp(z_c)
        top, shifted, sums = exp_sums_(z)
        return -(1.0 / sums if shifted else np.exp(top) / sums)


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

    def _score_class_logits(self, z: np.ndarray) -> np.ndarray:
        return -z.max(axis=0)


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

    def _score_class_logits(self, z: np.ndarray) -> np.ndarray:
        return class_energy_(z, self.temperature)


@register
class Entropy(_LogitDetector):
    """Shannon entropy of the softmax: ``H(p) = -sum_c p_c log p_c`` with ``p = softmax(z)``.

    Computed as ``log s - sum_c e_c z'_c / s`` with ``z' = z - max(z)``, ``e = exp(z')``
    and ``s = sum_c e_c`` (that is, ``logsumexp(z') - sum_c p_c z'_c``), which is exact
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

    def _score_class_logits(self, z: np.ndarray) -> np.ndarray:
        # with z' = z - max and e = exp(z'), s = sum e: H = log s - sum(e z') / s
        _, e = shifted_exp_(z)
        s = e.sum(axis=0)
        weighted = np.multiply(e, z, out=z).sum(axis=0)
        return np.maximum(np.log(s) - weighted / s, 0.0)


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

    def _score_class_logits(self, z: np.ndarray) -> np.ndarray:
        C = z.shape[0]
        log_terms = _log_p_plus_log_one_minus_p_(z)
        m = min(self.M, C)
        if m < C:
            # The M largest probabilities are the M largest logits of the row (z now
            # holds z - max, same order).
            top = np.argpartition(z, C - m, axis=0)[C - m :]
            log_terms = np.take_along_axis(log_terms, top, axis=0)
        log_terms *= self.gamma
        return np.exp(log_terms, out=log_terms).sum(axis=0)


@register
class KLMatching(_LogitDetector):
    """KL-Matching: KL divergence of a row's softmax to the nearest class template.

    Fit: for each class ``k`` the template ``d_k`` is the mean softmax vector of the
    training rows the classifier *predicts* as ``k`` (no labels needed). Score:
    ``min_k KL(p(x) || d_k) = min_k sum_c p_c (log p_c - log d_kc)``.

    The templates are kept as ``log d_k``: the softmax vectors are summed per predicted
    class in float64; where a sum falls below ``1e-280`` (its terms may have underflowed)
    all templates are recomputed as log-mean-exps of log-probabilities, so a template
    probability that underflows never makes a divergence infinite.

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
    head_product_only: ClassVar[bool] = False  # the templates product

    def __init__(self) -> None:
        self._check_params()

    def _fit_posthoc(self, X: np.ndarray, y: np.ndarray | None) -> None:
        C = self.W_.shape[0]
        class_sums = np.zeros((C, C))  # [k, c]: sum of p_c over the rows predicted as k
        counts = np.zeros(C, dtype=np.int64)
        pair = np.arange(C)[:, None]
        with self._head_blas():
            for start in range(0, X.shape[0], self.score_chunk_rows):
                z = self._class_logits(X[start : start + self.score_chunk_rows])
                top = z.max(axis=0)
                pred = first_argmax(z, top)
                _, _, sums = exp_sums_(z, top)
                p = z
                p /= sums  # the softmax, class-major
                # one weighted count over the (predicted class, class) pairs of the chunk
                cells = pred * C + pair  # (C, n): cell of p[c, i] is (pred[i], c)
                pair_sums = np.bincount(cells.ravel(), weights=p.ravel(), minlength=C * C)
                class_sums += pair_sums.reshape(C, C)
                counts += np.bincount(pred, minlength=C)
        seen = np.flatnonzero(counts)
        self.template_classes_ = seen.astype(np.int64)
        if (class_sums[seen] < _TINY).any():
            # a template probability whose terms may have underflowed: all in log space
            log_sums = self._log_template_sums(X)[seen]
        else:
            log_sums = np.log(class_sums[seen])
        self.log_templates_ = log_sums - np.log(counts[seen])[:, None]

    def _log_template_sums(self, X: np.ndarray) -> np.ndarray:
        """``log(class_sums)`` of :meth:`_fit_posthoc` as running log-sum-exps (slower, exact)."""
        C = self.W_.shape[0]
        log_sums = np.full((C, C), -np.inf)
        for start in range(0, X.shape[0], self.score_chunk_rows):
            z = self._logits(X[start : start + self.score_chunk_rows])
            pred = z.argmax(axis=1)
            order = np.argsort(pred, kind="stable")
            classes, first = np.unique(pred[order], return_index=True)
            chunk_sums = np.logaddexp.reduceat(log_softmax(z)[order], first, axis=0)
            log_sums[classes] = np.logaddexp(log_sums[classes], chunk_sums)
        return log_sums

    def _score_class_logits(self, z: np.ndarray) -> np.ndarray:
        # with z' = z - max, e = exp(z'), s = sum e: p = e / s, log p = z' - log s
        _, e = shifted_exp_(z)
        s = e.sum(axis=0)
        z -= np.log(s)  # log p
        e /= s  # p
        neg_entropy = np.multiply(e, z, out=z).sum(axis=0)
        kl = self.log_templates_ @ e  # (templates, n): sum_c p_c log d_kc
        np.subtract(neg_entropy, kl, out=kl)
        return kl.min(axis=0)

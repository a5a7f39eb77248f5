"""Turning scores into decisions: conformal thresholds and p-values.

Both use held-out scores of **normal** data (the calibration set), which must not have
been used to fit the detector. With ``n`` calibration scores and a target false-alarm
rate ``alpha``, the threshold is the ``ceil((n + 1)(1 - alpha))``-th smallest
calibration score; flagging ``score > threshold`` then has a false-alarm rate of at most
``alpha`` on new normal data whenever calibration and test normal data are exchangeable
(split-conformal guarantee). The conformal p-value of a score ``s`` is
``(1 + #{calibration scores >= s}) / (n + 1)``: small means anomalous, and it is
uniformly distributed (super-uniform) for normal data.

:meth:`oddkit.detectors.Detector.calibrate` / ``predict`` / ``pvalues`` use these.
"""

from __future__ import annotations

import math

import numpy as np

from .errors import CalibrationError


def _as_scores(scores: np.ndarray, what: str) -> np.ndarray:
    arr = np.asarray(scores, dtype=np.float64).reshape(-1)
    if arr.size == 0:
        raise CalibrationError(f"{what} is empty; pass held-out scores of normal data.")
    if not np.isfinite(arr).all():
        raise CalibrationError(f"{what} contains NaN/inf.")
    return arr


def _check_alpha(alpha: float) -> float:
    if not 0.0 < alpha < 1.0:
        raise CalibrationError(f"alpha must be in (0, 1), got {alpha}.")
    return float(alpha)


def _rank(n: int, alpha: float) -> int:
    """``ceil((n + 1)(1 - alpha))``, robust to floating-point error (0.43 * 100 = 43.000...07)."""
    return math.ceil((n + 1) * (1.0 - alpha) - 1e-9)


def min_calibration_size(alpha: float) -> int:
    """Fewest calibration scores for which a finite conformal threshold exists."""
    alpha = _check_alpha(alpha)
    n = 1
    while _rank(n, alpha) > n:
        n += 1
    return n


def conformal_threshold(calibration_scores: np.ndarray, alpha: float) -> float:
    """Threshold with false-alarm rate <= ``alpha`` (flag ``score > threshold``)."""
    alpha = _check_alpha(alpha)
    cal = np.sort(_as_scores(calibration_scores, "calibration_scores"))
    n = cal.size
    k = _rank(n, alpha)
    if k > n:
        raise CalibrationError(
            f"{n} calibration scores are too few for alpha={alpha}: at least "
            f"{min_calibration_size(alpha)} are needed. Hold out more normal data or raise alpha."
        )
    return float(cal[k - 1])


def conformal_pvalues(calibration_scores: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Conformal p-values of ``scores`` against the calibration scores."""
    cal = np.sort(_as_scores(calibration_scores, "calibration_scores"))
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    if not np.isfinite(s).all():
        raise CalibrationError("scores contain NaN/inf; p-values are defined for finite scores only.")
    n_ge = cal.size - np.searchsorted(cal, s, side="left")
    return (1.0 + n_ge) / (cal.size + 1.0)

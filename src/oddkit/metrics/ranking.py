"""Threshold-free ranking metrics for anomaly / OOD scores.

Conventions (``shared/docs/protocols.md``, "Metrics"):

* labels: ``1`` (or ``True``) = anomaly / OOD, ``0`` (or ``False``) = normal / in-distribution;
* scores: higher = more anomalous, as every oddkit detector returns them.

Definitions:

``auroc``
    Area under the ROC curve with the anomaly class positive; tied scores count one half
    (the trapezoid through tie groups, equal to the Mann-Whitney U statistic).
``aupr_out``
    Average precision with the anomaly class positive:
    ``sum_k (R_k - R_{k-1}) P_k`` over the distinct score thresholds, highest first.
``aupr_in``
    Average precision with the normal class positive and the negated score.
``fpr_at_tpr`` (FPR95 for ``tpr=0.95``)
    Normal class positive with ``-score``: on the ROC curve, the FPR at the first point
    whose TPR >= ``tpr``. In words: the share of anomalies accepted as normal when the
    threshold accepts ``tpr`` of the normal samples (Hendrycks & Gimpel 2017; Liang et al.
    2018). The curve has one point per distinct score, as scikit-learn's
    ``roc_curve(..., drop_intermediate=False)`` builds it. scikit-learn's default
    (``drop_intermediate=True``) drops collinear points; that can only happen inside a run
    of tie groups and then it may report a *looser* threshold (higher FPR) than the one
    that really accepts ``tpr`` of the normal data, so oddkit keeps every point.
``detection_error``
    ``min`` over thresholds of ``0.5 (1 - TPR) + 0.5 FPR`` (anomaly positive), including
    the two trivial thresholds, so it is at most 0.5.

Everything is computed from one sort of the scores (``O(n log n)`` time, ``O(n)`` memory)
with exact integer counts; scikit-learn is used only as the oracle in the tests.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import MetricError

__all__ = [
    "auroc",
    "aupr_in",
    "aupr_out",
    "detection_error",
    "evaluate",
    "fpr_at_tpr",
    "roc_points",
]


# --------------------------------------------------------------------------- public metrics
def auroc(y_true: Any, scores: Any) -> float:
    """Area under the ROC curve, anomaly (label 1) positive; ties count one half."""
    y, s = check_labels_scores(y_true, scores)
    return _auroc(*_counts(y, s))


def aupr_out(y_true: Any, scores: Any) -> float:
    """Average precision with the anomaly class (label 1) positive."""
    y, s = check_labels_scores(y_true, scores)
    return _average_precision(*_counts(y, s))


def aupr_in(y_true: Any, scores: Any) -> float:
    """Average precision with the normal class (label 0) positive and the negated score."""
    y, s = check_labels_scores(y_true, scores)
    return _average_precision(*_counts(~y, -s))


def fpr_at_tpr(y_true: Any, scores: Any, tpr: float = 0.95) -> float:
    """Share of anomalies accepted when the threshold accepts ``tpr`` of the normal data.

    Normal (label 0) is the positive class with ``-score``; the value is the FPR at the
    first point of the full ROC curve whose TPR is at least ``tpr`` (lower is better).
    """
    tpr = _check_tpr(tpr)
    y, s = check_labels_scores(y_true, scores)
    return _fpr_at_tpr(*_counts(~y, -s), tpr)


def detection_error(y_true: Any, scores: Any) -> float:
    """Minimum over thresholds of ``0.5 (1 - TPR) + 0.5 FPR`` (anomaly positive)."""
    y, s = check_labels_scores(y_true, scores)
    return _detection_error(*_counts(y, s))


def roc_points(y_true: Any, scores: Any) -> tuple[np.ndarray, np.ndarray]:
    """The ROC curve ``(fpr, tpr)`` with anomaly positive, one point per distinct score.

    Starts at (0, 0) and ends at (1, 1); for plotting and for custom operating points.
    """
    y, s = check_labels_scores(y_true, scores)
    fps, tps = _counts(y, s)
    return fps / fps[-1], tps / tps[-1]


def evaluate(y_true: Any, scores: Any, tpr: float = 0.95) -> dict[str, float]:
    """All ranking metrics at once, as a dict of Python floats.

    Keys: ``auroc``, ``aupr_in``, ``aupr_out``, ``fpr95``, ``detection_error``; the FPR
    key is named after ``tpr`` (``fpr95`` for 0.95, ``fpr90`` for 0.9). The scores are
    sorted twice (once per positive class), not once per metric.
    """
    tpr = _check_tpr(tpr)
    y, s = check_labels_scores(y_true, scores)
    out_counts = _counts(y, s)
    in_counts = _counts(~y, -s)
    return {
        "auroc": _auroc(*out_counts),
        "aupr_in": _average_precision(*in_counts),
        "aupr_out": _average_precision(*out_counts),
        f"fpr{round(tpr * 100)}": _fpr_at_tpr(*in_counts, tpr),
        "detection_error": _detection_error(*out_counts),
    }


# --------------------------------------------------------------------------- validation
def check_labels_scores(y_true: Any, scores: Any) -> tuple[np.ndarray, np.ndarray]:
    """Validate labels and scores; return ``(bool labels, float64 scores)`` or raise MetricError."""
    y = _as_1d(y_true, "y_true")
    s = _as_1d(scores, "scores")
    if y.shape[0] != s.shape[0]:
        raise MetricError(
            f"y_true has {y.shape[0]} labels but scores has {s.shape[0]} values; pass one "
            "score per labelled sample."
        )
    if y.shape[0] == 0:
        raise MetricError("y_true and scores are empty; a metric needs labelled samples.")
    labels = _as_binary(y)
    if s.dtype.kind not in "biuf":
        raise MetricError(f"scores must be numeric; got dtype {s.dtype}.")
    s = s.astype(np.float64)
    if not np.isfinite(s).all():
        bad = np.flatnonzero(~np.isfinite(s))
        raise MetricError(
            f"scores contain {bad.size} NaN/inf value(s) (first at positions {bad[:5].tolist()}); "
            "a detector must return finite scores. Fix or drop those samples first."
        )
    n_pos = int(labels.sum())
    if n_pos == 0 or n_pos == labels.size:
        only = "anomalous (1)" if n_pos else "normal (0)"
        raise MetricError(
            f"the metric needs both normal (0) and anomalous (1) samples; y_true has only "
            f"{only} samples ({labels.size} of them)."
        )
    return labels, s


def _as_1d(value: Any, what: str) -> np.ndarray:
    if value is None:
        raise MetricError(f"{what} is None; pass a 1-D array.")
    try:
        arr = np.asarray(value)
    except Exception as exc:  # ragged lists and the like
        raise MetricError(f"{what} could not be read as an array ({exc}).") from exc
    if arr.ndim != 1:
        raise MetricError(f"{what} must be 1-D; got shape {arr.shape}.")
    return arr


def _as_binary(y: np.ndarray) -> np.ndarray:
    if y.dtype.kind == "b":
        return y.astype(bool)
    if y.dtype.kind not in "iuf":
        raise MetricError(
            f"y_true must hold 0 (normal) / 1 (anomaly) labels or booleans; got dtype {y.dtype}."
        )
    is_one = y == 1
    bad = ~(is_one | (y == 0))
    if bad.any():
        examples = np.unique(y[bad])[:5].tolist()
        raise MetricError(
            f"y_true must hold only 0 (normal) and 1 (anomaly); found other values {examples}. "
            "Map your labels to 0/1 first (1 = anomaly / OOD)."
        )
    return is_one


def _check_tpr(tpr: Any) -> float:
    if isinstance(tpr, bool) or not isinstance(tpr, (int, float, np.integer, np.floating)):
        raise MetricError(f"tpr must be a number in (0, 1], got {tpr!r}.")
    tpr = float(tpr)
    if not 0.0 < tpr <= 1.0:
        raise MetricError(f"tpr must be in (0, 1], got {tpr}.")
    return tpr


# --------------------------------------------------------------------------- core
def _counts(positive: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cumulative (false, true) positive counts at each distinct threshold, highest first.

    Both arrays start with the (0, 0) point of the threshold above every score and end
    with the totals (number of negatives, number of positives). Tied scores form one
    step, which is what makes ties count one half in the trapezoid area.
    """
    order = np.argsort(scores, kind="stable")[::-1]
    sorted_scores = scores[order]
    hits = positive[order].astype(np.int64)
    last_of_group = np.r_[np.flatnonzero(np.diff(sorted_scores)), sorted_scores.size - 1]
    tps = np.cumsum(hits)[last_of_group]
    fps = last_of_group + 1 - tps
    zero = np.zeros(1, dtype=np.int64)
    return np.concatenate([zero, fps]), np.concatenate([zero, tps])


def _auroc(fps: np.ndarray, tps: np.ndarray) -> float:
    # Twice the trapezoid area in integer counts: exact below ~3e9 samples.
    twice_area = np.sum(np.diff(fps) * (tps[1:] + tps[:-1]))
    return float(twice_area / (2.0 * tps[-1] * fps[-1]))


def _average_precision(fps: np.ndarray, tps: np.ndarray) -> float:
    """``sum_k (R_k - R_{k-1}) P_k`` over the distinct thresholds."""
    precision = tps[1:] / (tps[1:] + fps[1:])
    # integer recall steps, one division at the end: exact 1.0 for a perfect ranking.
    return float(np.dot(np.diff(tps), precision) / tps[-1])


def _fpr_at_tpr(fps: np.ndarray, tps: np.ndarray, tpr: float) -> float:
    first = int(np.argmax(tps / tps[-1] >= tpr))
    return float(fps[first] / fps[-1])


def _detection_error(fps: np.ndarray, tps: np.ndarray) -> float:
    errors = 0.5 * (1.0 - tps / tps[-1]) + 0.5 * (fps / fps[-1])
    return float(errors.min())

"""Metrics for anomaly / OOD detection (definitions: ``shared/docs/protocols.md``).

Positive class = anomaly / OOD = label 1; scores: higher = more anomalous.
:mod:`oddkit.metrics.ranking` documents every definition; the names are re-exported here::

    from oddkit.metrics import evaluate
    evaluate(y_test, scores)
    # {'auroc': ..., 'aupr_in': ..., 'aupr_out': ..., 'fpr95': ..., 'detection_error': ...}
"""

from .ranking import (
    auroc,
    aupr_in,
    aupr_out,
    check_labels_scores,
    detection_error,
    evaluate,
    fpr_at_tpr,
    generalizability_score,
    roc_points,
)

__all__ = [
    "auroc",
    "aupr_in",
    "aupr_out",
    "check_labels_scores",
    "detection_error",
    "evaluate",
    "fpr_at_tpr",
    "generalizability_score",
    "roc_points",
]

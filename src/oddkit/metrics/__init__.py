"""Metrics for anomaly / OOD detection (definitions: ``shared/docs/protocols.md``).

Positive class = anomaly / OOD = label 1; scores: higher = more anomalous.
:mod:`oddkit.metrics.ranking` documents every definition; the names are re-exported here::

    from oddkit.metrics import evaluate
    evaluate(y_test, scores)
    # {'auroc': ..., 'aupr_in': ..., 'aupr_out': ..., 'fpr95': ..., 'detection_error': ...}
"""

from .generalizability import (
    GeneralizabilityWarning,
    generalizability_score,
    list_gs_definitions,
    register_gs_definition,
)
from .ranking import (
    aupr_in,
    aupr_out,
    auroc,
    check_labels_scores,
    detection_error,
    evaluate,
    fpr_at_tpr,
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
    "GeneralizabilityWarning",
    "generalizability_score",
    "list_gs_definitions",
    "register_gs_definition",
    "roc_points",
]

"""oddkit.metrics against scikit-learn (the oracle) and against hand-computed values.

Definitions: shared/docs/protocols.md, "Metrics". Label 1 = anomaly, higher score = more
anomalous.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

from oddkit.errors import MetricError, OddkitError
from oddkit.metrics import (
    aupr_in,
    aupr_out,
    auroc,
    detection_error,
    evaluate,
    fpr_at_tpr,
    generalizability_score,
    roc_points,
)


# --------------------------------------------------------------------------- oracle
def sk_fpr_at_tpr(y, s, tpr=0.95, drop_intermediate=False):
    """protocols.md FPR@TPR through scikit-learn: ID positive, -score, first TPR >= tpr."""
    fpr, tpr_curve, _ = roc_curve(
        1 - np.asarray(y), -np.asarray(s), drop_intermediate=drop_intermediate
    )
    return fpr[np.argmax(tpr_curve >= tpr)]


def sk_detection_error(y, s):
    fpr, tpr, _ = roc_curve(y, s, drop_intermediate=False)
    return np.min(0.5 * (1 - tpr) + 0.5 * fpr)


def random_case(rng, kind):
    n = int(rng.randint(2, 400))
    y = (rng.rand(n) < rng.uniform(0.02, 0.9)).astype(int)
    y[rng.choice(n, 2, replace=False)] = [0, 1]  # both classes present
    if kind == "continuous":
        s = rng.randn(n) + y * rng.uniform(-1, 3)
    elif kind == "integer":  # integer-valued scores: many ties
        s = rng.randint(0, rng.randint(2, 12), n) + y * rng.randint(0, 3, n)
    else:  # heavy ties on floats: a handful of distinct values
        s = rng.choice(rng.randn(int(rng.randint(1, 5))), n) + 0.3 * y * rng.randint(0, 2, n)
    return y, s


CASES = [(seed, kind) for seed in range(60) for kind in ("continuous", "integer", "ties")]


@pytest.mark.parametrize("seed,kind", CASES)
def test_agrees_with_sklearn(seed, kind):
    y, s = random_case(np.random.RandomState(seed), kind)
    assert auroc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert aupr_out(y, s) == pytest.approx(average_precision_score(y, s), abs=1e-12)
    assert aupr_in(y, s) == pytest.approx(average_precision_score(1 - y, -s), abs=1e-12)
    for t in (0.95, 0.9, 0.5, 1.0):
        assert fpr_at_tpr(y, s, t) == pytest.approx(sk_fpr_at_tpr(y, s, t), abs=1e-12)
    assert detection_error(y, s) == pytest.approx(sk_detection_error(y, s), abs=1e-12)
    fpr, tpr = roc_points(y, s)
    sk_fpr, sk_tpr, _ = roc_curve(y, s, drop_intermediate=False)
    np.testing.assert_allclose(fpr, sk_fpr, atol=1e-12)
    np.testing.assert_allclose(tpr, sk_tpr, atol=1e-12)


def test_large_input_agrees_with_sklearn():
    """200k samples: integer counts stay exact; float scores with float32-like ties."""
    rng = np.random.RandomState(7)
    y = (rng.rand(200_000) < 0.1).astype(int)
    s = np.round(rng.randn(y.size) + 1.5 * y, 2)
    res = evaluate(y, s)
    assert res["auroc"] == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert res["aupr_out"] == pytest.approx(average_precision_score(y, s), abs=1e-12)
    assert res["aupr_in"] == pytest.approx(average_precision_score(1 - y, -s), abs=1e-12)
    assert res["fpr95"] == pytest.approx(sk_fpr_at_tpr(y, s), abs=1e-12)
    assert res["detection_error"] == pytest.approx(sk_detection_error(y, s), abs=1e-12)


# --------------------------------------------------------------------------- by hand
def test_hand_computed_distinct_scores():
    y = [0, 0, 1, 1]
    s = [0.1, 0.4, 0.35, 0.8]
    # AUROC: (anomaly, normal) pairs won: 0.35>0.1, 0.35<0.4, 0.8>0.1, 0.8>0.4 -> 3/4.
    assert auroc(y, s) == 0.75
    # AUPR-Out, descending 0.8(1) 0.4(0) 0.35(1) 0.1(0):
    #   recall 0 -> 1/2 at precision 1/1, recall 1/2 -> 1 at precision 2/3:
    #   1/2 * 1 + 1/2 * 2/3 = 5/6.
    assert aupr_out(y, s) == pytest.approx(5 / 6, abs=1e-15)
    # AUPR-In, ascending 0.1(0) 0.35(1) 0.4(0) 0.8(1): 1/2 * 1 + 1/2 * 2/3 = 5/6.
    assert aupr_in(y, s) == pytest.approx(5 / 6, abs=1e-15)
    # FPR95: accepting both normals (<= 0.4) also accepts the anomaly at 0.35: 1/2.
    assert fpr_at_tpr(y, s) == 0.5
    # Detection error: points (FPR, TPR) = (0,0) (0,1/2) (1/2,1/2) (1/2,1) (1,1);
    #   0.5 (1 - TPR) + 0.5 FPR = 1/2, 1/4, 1/2, 1/4, 1/2 -> 1/4.
    assert detection_error(y, s) == 0.25


def test_hand_computed_with_ties():
    y = [0, 1, 0, 1, 1]
    s = [1, 1, 2, 2, 3]
    # AUROC over the 3 x 2 (anomaly, normal) pairs, a tie counting 1/2:
    #   a=1: vs 1 tie 1/2, vs 2 loss 0; a=2: vs 1 win 1, vs 2 tie 1/2; a=3: two wins 2.
    #   (1/2 + 0 + 1 + 1/2 + 2) / 6 = 4/6.
    assert auroc(y, s) == pytest.approx(4 / 6, abs=1e-15)
    # AUPR-Out, tie groups from the top: {3: 1a} {2: 1a 1n} {1: 1a 1n}:
    #   (TP, FP) = (1,0) (2,1) (3,2); each group adds recall 1/3 at precision 1, 2/3, 3/5:
    #   1/3 + 2/9 + 1/5 = 34/45.
    assert aupr_out(y, s) == pytest.approx(34 / 45, abs=1e-15)
    # AUPR-In, normals positive from the lowest score: {1: 1n 1a} {2: 1n 1a} {3: 1a}:
    #   recall 1/2 at precision 1/2, recall 1 at precision 2/4: 1/4 + 1/4 = 1/2.
    assert aupr_in(y, s) == pytest.approx(0.5, abs=1e-15)
    # FPR95: both normals are accepted only at threshold 2, which accepts 2 of 3 anomalies.
    assert fpr_at_tpr(y, s) == pytest.approx(2 / 3, abs=1e-15)
    # FPR50: one normal is accepted at threshold 1, with 1 of 3 anomalies.
    assert fpr_at_tpr(y, s, tpr=0.5) == pytest.approx(1 / 3, abs=1e-15)
    # Detection error, (FPR, TPR) = (0,0) (0,1/3) (1/2,2/3) (1,1):
    #   1/2, 1/3, 1/6 + 1/4 = 5/12, 1/2 -> 1/3.
    assert detection_error(y, s) == pytest.approx(1 / 3, abs=1e-15)


def test_fpr_keeps_collinear_points_that_sklearn_default_drops():
    """Tie groups of identical make-up are collinear on the ROC curve.

    20 normals, 20 anomalies: 17 normals at 1..17, then three groups {18}, {19}, {20}
    each holding one normal and one anomaly, then 17 anomalies at 21..37. Accepting 95% of
    normals (19 of 20) needs threshold 19, which also accepts 2 of 20 anomalies: 0.10.
    scikit-learn's default drop_intermediate=True removes that point and reports the next
    one (threshold 20, 3 anomalies: 0.15); oddkit reports the true 0.10.
    """
    s = np.r_[np.arange(1, 18), [18, 18, 19, 19, 20, 20], np.arange(21, 38)].astype(float)
    y = np.r_[np.zeros(17), [0, 1, 0, 1, 0, 1], np.ones(17)].astype(int)
    assert fpr_at_tpr(y, s) == pytest.approx(0.10, abs=1e-15)
    assert sk_fpr_at_tpr(y, s, drop_intermediate=False) == pytest.approx(0.10, abs=1e-15)
    assert sk_fpr_at_tpr(y, s, drop_intermediate=True) == pytest.approx(0.15, abs=1e-15)


def test_perfect_inverted_and_constant_detectors():
    y = np.r_[np.zeros(80, int), np.ones(20, int)]
    perfect = np.r_[np.linspace(0, 1, 80), np.linspace(2, 3, 20)]
    assert evaluate(y, perfect) == {
        "auroc": 1.0, "aupr_in": 1.0, "aupr_out": 1.0, "fpr95": 0.0, "detection_error": 0.0,
    }
    inverted = evaluate(y, -perfect)
    assert inverted["auroc"] == 0.0
    assert inverted["fpr95"] == 1.0
    assert inverted["detection_error"] == 0.5  # only the trivial thresholds remain
    assert inverted["aupr_out"] == pytest.approx(average_precision_score(y, -perfect), abs=1e-12)
    # AUPR-Out of the inverted detector: the k-th anomaly comes after all 80 normals,
    # at precision k / (80 + k); each adds recall 1/20.
    assert inverted["aupr_out"] == pytest.approx(sum(k / (80 + k) for k in range(1, 21)) / 20)
    const = evaluate(y, np.ones(100))
    assert const["auroc"] == 0.5
    assert const["aupr_out"] == pytest.approx(0.2)  # the anomaly prevalence
    assert const["aupr_in"] == pytest.approx(0.8)
    assert const["fpr95"] == 1.0


def test_evaluate_keys_types_and_tpr_name():
    rng = np.random.RandomState(3)
    y = rng.randint(0, 2, 300)
    s = rng.randn(300) + y
    res = evaluate(y, s)
    assert list(res) == ["auroc", "aupr_in", "aupr_out", "fpr95", "detection_error"]
    assert all(type(v) is float for v in res.values())
    assert res["auroc"] == auroc(y, s) and res["fpr95"] == fpr_at_tpr(y, s)
    res90 = evaluate(y, s, tpr=0.9)
    assert "fpr90" in res90 and res90["fpr90"] == fpr_at_tpr(y, s, 0.9)


def test_accepts_lists_bools_and_float_labels():
    y = [False, True, False, True]
    s = [1, 3, 2, 4]  # integer scores
    assert auroc(y, s) == 1.0
    assert auroc(np.array([0.0, 1.0, 0.0, 1.0]), np.array(s, dtype=np.float32)) == 1.0
    assert auroc((0, 1, 0, 1), (0.2, 0.1, 0.3, 0.4)) == 0.5


# --------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "y,s,match",
    [
        ([0, 0, 0], [0.1, 0.2, 0.3], "both normal \\(0\\) and anomalous \\(1\\)"),
        ([1, 1], [0.1, 0.2], "both normal \\(0\\) and anomalous \\(1\\)"),
        ([0, 2, 1], [0.1, 0.2, 0.3], "only 0 \\(normal\\) and 1"),
        ([0, -1, 1], [0.1, 0.2, 0.3], "only 0 \\(normal\\) and 1"),
        ([0, 0.5, 1], [0.1, 0.2, 0.3], "only 0 \\(normal\\) and 1"),
        (["normal", "anomaly"], [0.1, 0.2], "0 \\(normal\\) / 1 \\(anomaly\\)"),
        ([0, 1, 1], [0.1, 0.2], "3 labels but scores has 2"),
        ([], [], "empty"),
        ([0, 1, 1], [0.1, np.nan, 0.3], "NaN/inf"),
        ([0, 1, 1], [0.1, np.inf, 0.3], "NaN/inf"),
        ([0, 1], [[0.1], [0.2]], "1-D"),
        ([0, 1], ["a", "b"], "numeric"),
        (None, [0.1], "None"),
    ],
)
def test_bad_inputs_raise_metric_error(y, s, match):
    for fn in (auroc, aupr_in, aupr_out, fpr_at_tpr, detection_error, evaluate, roc_points):
        with pytest.raises(MetricError, match=match):
            fn(y, s)


def test_metric_error_is_a_value_error_and_oddkit_error():
    with pytest.raises(ValueError):
        auroc([0, 0], [1, 2])
    with pytest.raises(OddkitError):
        auroc([0, 0], [1, 2])


@pytest.mark.parametrize("tpr", [0.0, -0.1, 1.5, math.nan, "0.95", True])
def test_bad_tpr(tpr):
    with pytest.raises(MetricError, match="tpr"):
        fpr_at_tpr([0, 1], [0.0, 1.0], tpr)


# --------------------------------------------------------------------------- GS
def test_generalizability_score_definition():
    # (0.8 - 0.5) / (0.9 - 0.5) = 0.3 / 0.4 = 0.75
    assert generalizability_score(0.9, 0.8) == pytest.approx(0.75)
    assert type(generalizability_score(0.9, 0.8)) is float
    assert generalizability_score(0.9, 0.9) == 1.0
    assert generalizability_score(0.9, 0.97) == 1.0  # clipped: shift cannot "add" power
    assert generalizability_score(0.9, 0.5) == 0.0
    assert generalizability_score(0.9, 0.3) == 0.0  # clipped at 0 below chance


def test_generalizability_score_undefined_is_nan_with_warning():
    for standard in (0.5, 0.42):
        with pytest.warns(RuntimeWarning, match="undefined"):
            assert math.isnan(generalizability_score(standard, 0.7))


def test_generalizability_score_vectorised():
    standard = np.array([0.9, 0.7, 0.5, 0.95])
    shifted = np.array([0.8, 0.8, 0.6, 0.5])
    with pytest.warns(RuntimeWarning):
        gs = generalizability_score(standard, shifted)
    assert gs.shape == (4,)
    np.testing.assert_allclose(gs[[0, 1, 3]], [0.75, 1.0, 0.0])
    assert math.isnan(gs[2])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning when every standard AUROC > 0.5
        np.testing.assert_allclose(generalizability_score(0.9, [0.9, 0.7]), [1.0, 0.5])


def test_generalizability_score_validation_and_plug_in():
    with pytest.raises(MetricError, match="\\[0, 1\\]"):
        generalizability_score(1.2, 0.8)
    with pytest.raises(MetricError, match="\\[0, 1\\]"):
        generalizability_score(0.9, math.nan)
    with pytest.raises(MetricError, match="broadcast"):
        generalizability_score([0.9, 0.8], [0.7, 0.6, 0.5])
    ratio = generalizability_score(0.9, 0.72, definition=lambda std, sh: sh / std)
    assert ratio == pytest.approx(0.8)

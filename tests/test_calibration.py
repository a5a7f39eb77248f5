"""Conformal thresholds and p-values (oddkit.calibration) and Detector.calibrate/predict/pvalues.

The split-conformal guarantee: with n held-out normal scores and the threshold at the
ceil((n + 1)(1 - alpha))-th smallest, flagging ``score > threshold`` has an expected
false-alarm rate of at most alpha on new normal data (exactly 1 - k/(n+1) for continuous
scores), and the p-values are super-uniform for normal data.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats
from sklearn.datasets import load_breast_cancer

from oddkit import detectors
from oddkit.calibration import conformal_pvalues, conformal_threshold, min_calibration_size
from oddkit.errors import CalibrationError
from oddkit.metrics import auroc


def rank_k(n, alpha):
    return math.ceil((n + 1) * (1 - alpha))


# --------------------------------------------------------------------------- by hand
def test_threshold_by_hand():
    cal = np.arange(1.0, 20.0)  # 19 scores 1..19, given unsorted below
    shuffled = np.random.RandomState(0).permutation(cal)
    # alpha 0.05: k = ceil(20 * 0.95) = 19 -> the largest score, 19.
    assert conformal_threshold(shuffled, 0.05) == 19.0
    # alpha 0.1: k = ceil(20 * 0.9) = 18 -> 18.
    assert conformal_threshold(shuffled, 0.1) == 18.0
    # 20 scores 1..20, alpha 0.1: k = ceil(21 * 0.9) = ceil(18.9) = 19 -> 19.
    assert conformal_threshold(np.arange(1.0, 21.0), 0.1) == 19.0


def test_pvalues_by_hand():
    cal = np.array([3.0, 1.0, 4.0, 2.0])
    s = np.array([0.0, 2.5, 4.0, 5.0, 2.0])
    # p = (1 + #{cal >= s}) / (n + 1), n = 4; a tie counts as ">=" (conservative):
    #   0 -> (1+4)/5 = 1.0; 2.5 -> (1+2)/5 = 0.6; 4 -> (1+1)/5 = 0.4; 5 -> 1/5 = 0.2; 2 -> 4/5.
    np.testing.assert_allclose(conformal_pvalues(cal, s), [1.0, 0.6, 0.4, 0.2, 0.8])


# --------------------------------------------------------------------------- guarantee
@pytest.mark.parametrize("alpha", [0.05, 0.1, 0.2])
@pytest.mark.parametrize("n", ["min", 50, 200])
def test_false_alarm_rate_on_gaussian_normals(alpha, n):
    """Expected false-alarm rate over 3000 calibration draws: <= alpha, and not wasteful.

    For each draw the exact false-alarm rate of the threshold t is P(N(0,1) > t); its mean
    over draws must match 1 - k/(n+1) (<= alpha) within 5 standard errors.
    """
    n = min_calibration_size(alpha) if n == "min" else n
    reps = 3000
    cal = np.random.RandomState(n).randn(reps, n)
    far = stats.norm.sf([conformal_threshold(row, alpha) for row in cal])
    k = rank_k(n, alpha)
    expected = 1 - k / (n + 1)
    a, b = n + 1 - k, k  # the false-alarm rate is Beta(a, b) distributed
    se = math.sqrt(a * b / ((a + b) ** 2 * (a + b + 1)) / reps)
    assert expected <= alpha + 1e-12
    assert far.mean() <= alpha + 5 * se
    assert abs(far.mean() - expected) < 5 * se


def test_false_alarm_rate_with_tied_integer_scores():
    """Poisson scores tie a lot; flagging strictly above the threshold stays <= alpha."""
    alpha, n, reps = 0.1, 99, 3000
    cal = np.random.RandomState(1).poisson(3.0, size=(reps, n)).astype(float)
    far = stats.poisson.sf([conformal_threshold(row, alpha) for row in cal], 3.0)
    assert far.mean() <= alpha


def test_pvalues_super_uniform_for_normal_data():
    rng = np.random.RandomState(2)
    n, reps = 49, 400
    hits = {u: [] for u in (0.02, 0.05, 0.1, 0.3, 0.5)}
    for _ in range(reps):
        p = conformal_pvalues(rng.standard_t(3, n), rng.standard_t(3, 200))
        assert p.min() >= 1 / (n + 1) and p.max() <= 1.0
        for u in hits:
            hits[u].append(np.mean(p <= u))
    for u, h in hits.items():
        exact = math.floor(u * (n + 1) + 1e-9) / (n + 1)  # uniform on {1/(n+1), ..., 1}
        assert np.mean(h) <= u + 0.01
        assert abs(np.mean(h) - exact) < 0.01


def test_pvalues_small_for_anomalies():
    rng = np.random.RandomState(3)
    cal = rng.randn(500)
    p_anom = conformal_pvalues(cal, rng.randn(300) + 4.0)
    p_norm = conformal_pvalues(cal, rng.randn(300))
    assert np.median(p_anom) < 0.01
    assert np.mean(p_anom <= 0.05) > 0.9
    assert np.median(p_norm) > 0.3


# --------------------------------------------------------------------------- sizes and errors
def test_too_few_calibration_scores_says_how_many():
    with pytest.raises(CalibrationError, match="10 calibration scores are too few.*at least 19"):
        conformal_threshold(np.arange(10.0), 0.05)
    with pytest.raises(CalibrationError, match="at least 99"):
        conformal_threshold(np.arange(50.0), 0.01)


@pytest.mark.parametrize("alpha,expected", [(0.5, 1), (0.2, 4), (0.1, 9), (0.05, 19), (0.01, 99),
                                            (0.3, 3), (0.07, 14)])
def test_min_calibration_size_values(alpha, expected):
    # n is enough iff ceil((n+1)(1-alpha)) <= n iff n >= 1/alpha - 1.
    assert min_calibration_size(alpha) == expected


def test_min_calibration_size_is_exactly_the_boundary():
    for alpha in np.r_[np.arange(0.005, 0.9, 0.005), [1 / 3, 1 / 7, 0.025]]:
        m = min_calibration_size(alpha)
        conformal_threshold(np.arange(float(m)), alpha)  # enough
        if m > 1:
            with pytest.raises(CalibrationError, match=f"at least {m} "):
                conformal_threshold(np.arange(float(m - 1)), alpha)


@pytest.mark.parametrize("alpha", [0.0, 1.0, -0.1, 1.5])
def test_alpha_out_of_range(alpha):
    with pytest.raises(CalibrationError, match="alpha"):
        conformal_threshold(np.arange(100.0), alpha)


def test_bad_calibration_scores():
    with pytest.raises(CalibrationError, match="empty"):
        conformal_threshold(np.array([]), 0.1)
    with pytest.raises(CalibrationError, match="NaN"):
        conformal_threshold(np.r_[np.arange(20.0), np.nan], 0.1)
    with pytest.raises(CalibrationError, match="empty"):
        conformal_pvalues([], [1.0])


def test_decision_and_pvalue_agree_for_common_alphas():
    """score > threshold exactly when the conformal p-value is <= alpha."""
    for alpha in (0.01, 0.05, 0.1, 0.2):
        for n in range(min_calibration_size(alpha), 400, 13):
            cal = np.arange(float(n))
            s = np.arange(-0.5, n + 0.5, 0.5)
            flag = s > conformal_threshold(cal, alpha)
            np.testing.assert_array_equal(flag, conformal_pvalues(cal, s) <= alpha)


def test_rank_is_not_pushed_up_by_rounding():
    cal = np.arange(99.0)
    assert conformal_threshold(cal, 0.57) == 42.0  # k = 100 * 0.43 = 43 -> cal[42]
    s = np.array([42.5])
    assert (s > conformal_threshold(cal, 0.57)) == (conformal_pvalues(cal, s) <= 0.57)


# --------------------------------------------------------------------------- real detector
@pytest.fixture(scope="module")
def cancer():
    X, y = load_breast_cancer(return_X_y=True)
    Z = (X - X.mean(0)) / X.std(0)
    return Z[y == 1], Z[y == 0]  # benign (normal), malignant (anomalous)


def test_knn_calibration_on_real_data(cancer):
    """kNN fitted on benign tumours: held-out benign false-alarm rate <= alpha on average."""
    normal, anomalous = cancer
    alpha, reps = 0.1, 60
    rng = np.random.RandomState(0)
    far, detected, agree = [], [], []
    pv_hits = {u: [] for u in (0.05, 0.1, 0.3)}
    for _ in range(reps):
        idx = rng.permutation(len(normal))
        fit, cal, test = idx[:150], idx[150:250], idx[250:]
        det = detectors.create("knn").fit(normal[fit]).calibrate(normal[cal], alpha=alpha)
        flags = det.predict(np.vstack([normal[test], anomalous]))
        p_all = det.pvalues(np.vstack([normal[test], anomalous]))
        far.append(flags[: len(test)].mean())
        detected.append(flags[len(test) :].mean())
        for u in pv_hits:
            pv_hits[u].append(np.mean(p_all[: len(test)] <= u))
        agree.append(np.array_equal(flags, p_all <= alpha))
    expected = 1 - rank_k(100, alpha) / 101  # 1 - 91/101 = 0.099
    se = np.std(far) / math.sqrt(reps)
    assert np.mean(far) <= alpha + 3 * se, (np.mean(far), se)
    assert abs(np.mean(far) - expected) < 4 * se + 0.005
    for u, h in pv_hits.items():
        assert np.mean(h) <= u + 3 * np.std(h) / math.sqrt(reps)
    assert np.mean(detected) > 0.6  # most malignant tumours are flagged (0.72 measured with k=5)
    assert all(agree)


def test_knn_pvalues_rank_real_anomalies(cancer):
    normal, anomalous = cancer
    det = detectors.create("knn").fit(normal[:150]).calibrate(normal[150:250], alpha=0.05)
    p_norm, p_anom = det.pvalues(normal[250:]), det.pvalues(anomalous)
    assert np.median(p_anom) < 0.05 < np.median(p_norm)
    y = np.r_[np.zeros(len(p_norm)), np.ones(len(p_anom))]
    assert auroc(y, -np.r_[p_norm, p_anom]) > 0.9


def test_detector_calibrate_needs_enough_rows(cancer):
    normal, _ = cancer
    det = detectors.create("knn").fit(normal[:150])
    with pytest.raises(CalibrationError, match="at least 19"):
        det.calibrate(normal[150:160], alpha=0.05)

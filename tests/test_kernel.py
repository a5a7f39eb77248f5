"""OCSVM: our kernel expansion against scikit-learn's and PyOD's one-class SVM.

Data: ADBench sets from ../shared (ADB-dev cut and 70/30 split, protocols.md) and
scikit-learn's bundled breast-cancer set.
"""

from __future__ import annotations


import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer
from sklearn.metrics import roc_auc_score
from sklearn.metrics.pairwise import pairwise_kernels
from sklearn.svm import OneClassSVM

from oddkit.detectors import kernel
from oddkit.detectors.kernel import OCSVM, kernel_matrix
from oddkit.errors import ParamError
from helpers import ADB, HAS_PYOD, SHARED, adb_dev, needs_pyod  # noqa: F401





@pytest.fixture(scope="module")
def cancer():
    X, y = load_breast_cancer(return_X_y=True)
    Z = (X - X[:400].mean(0)) / X[:400].std(0)
    return Z[:400], Z[400:], (y[400:] == 0).astype(int)


def _close(ours: np.ndarray, ref: np.ndarray, rel: float = 1e-8) -> None:
    np.testing.assert_allclose(ours, ref, rtol=0, atol=rel * max(1.0, np.abs(ref).max()))


@pytest.mark.parametrize("gamma", ["auto", "scale"])
def test_rbf_equals_sklearn_on_cardio(gamma):
    Xtr, Xte, yte = adb_dev("6_cardio")
    ours = OCSVM(gamma=gamma).fit(Xtr).score(Xte)
    ref = -OneClassSVM(gamma=gamma, nu=0.5).fit(Xtr).decision_function(Xte)
    _close(ours, ref)
    assert roc_auc_score(yte, ours) > 0.85


@pytest.mark.skipif(not HAS_PYOD, reason="pyod is not installed")
@pytest.mark.parametrize("name", ["6_cardio", "30_satellite"])
def test_equals_pyod_decision_function(name):
    from pyod.models.ocsvm import OCSVM as PyodOCSVM

    Xtr, Xte, yte = adb_dev(name, seed=1)
    Xtr = Xtr[:1500]  # keeps libsvm's fit short; the scores are still compared in full
    ours = OCSVM().fit(Xtr).score(Xte)
    ref = PyodOCSVM().fit(Xtr).decision_function(Xte)
    _close(ours, ref)
    assert abs(roc_auc_score(yte, ours) - roc_auc_score(yte, ref)) < 1e-3


@pytest.mark.parametrize(
    "params",
    [
        {"kernel": "linear"},
        {"kernel": "poly", "gamma": 0.05, "coef0": 1.0, "degree": 2},
        {"kernel": "poly", "degree": 3},
        {"kernel": "sigmoid", "gamma": 0.01, "coef0": 0.5},
        {"kernel": "rbf", "nu": 0.1, "gamma": 0.2},
    ],
)
def test_other_kernels_equal_sklearn(params, cancer):
    Xtr, Xte, _ = cancer
    ours = OCSVM(**params).fit(Xtr).score(Xte)
    sk_params = dict(params)
    sk_params.setdefault("gamma", "auto")
    ref = -OneClassSVM(**sk_params).fit(Xtr).decision_function(Xte)
    _close(ours, ref)


def test_rbf_stays_exact_far_from_the_origin(cancer):
    """Raw features with a large offset: centring keeps the distance expansion exact."""
    Xtr, Xte, _ = cancer
    Xtr, Xte = Xtr + 1e5, Xte + 1e5
    ours = OCSVM(gamma=0.05).fit(Xtr).score(Xte)
    ref = -OneClassSVM(gamma=0.05).fit(Xtr).decision_function(Xte)
    _close(ours, ref)


def test_blocks_do_not_change_scores(cancer, monkeypatch):
    Xtr, Xte, _ = cancer
    det = OCSVM().fit(Xtr)
    full = det.score(Xte)
    monkeypatch.setattr(kernel, "_KERNEL_BLOCK", 10)  # one row per block
    np.testing.assert_allclose(det.score(Xte), full, rtol=0, atol=1e-12)


@pytest.mark.parametrize("name", ["rbf", "linear", "poly", "sigmoid"])
def test_kernel_matrix_equals_sklearn_pairwise(name, cancer):
    Xtr, Xte, _ = cancer
    kw = {"gamma": 0.03}
    if name in ("poly", "sigmoid"):
        kw.update(coef0=0.7)
    if name == "poly":
        kw.update(degree=3)
    ours = kernel_matrix(
        Xte, Xtr[:50], name, kw["gamma"], kw.get("degree", 3), kw.get("coef0", 0.0)
    )
    if name == "linear":
        kw = {}
    ref = pairwise_kernels(Xte, Xtr[:50], metric=name, **kw)
    np.testing.assert_allclose(ours, ref, rtol=1e-10, atol=1e-12)


def test_fitted_state_and_gamma_resolution(cancer):
    Xtr, _, _ = cancer
    det = OCSVM().fit(Xtr)
    assert det.gamma_ == pytest.approx(1.0 / Xtr.shape[1])
    n_sv = det.support_vectors_.shape[0]
    assert det.dual_coef_.shape == (n_sv,)
    # nu-SVM: the alphas sum to nu * n, each in [0, 1]; at least nu * n support vectors
    assert det.dual_coef_.sum() == pytest.approx(0.5 * Xtr.shape[0])
    assert n_sv >= 0.5 * Xtr.shape[0]
    det = OCSVM(gamma="scale").fit(Xtr)
    assert det.gamma_ == pytest.approx(1.0 / (Xtr.shape[1] * Xtr.var()))
    assert OCSVM(gamma="scale").fit(np.ones((5, 3))).gamma_ == 1.0


def test_outside_points_score_higher(cancer):
    X, y = load_breast_cancer(return_X_y=True)
    Z = (X - X.mean(0)) / X.std(0)
    benign = np.flatnonzero(y == 1)
    det = OCSVM().fit(Z[benign[:250]])  # one-class: fit on normal rows only
    Xte, yte = np.delete(Z, benign[:250], axis=0), np.delete(y == 0, benign[:250])
    s = det.score(Xte)
    assert roc_auc_score(yte, s) > 0.9
    assert det.score(Xte[:3] + 20.0).min() > s.max()


@pytest.mark.parametrize(
    "params",
    [
        {"kernel": "precomputed"},
        {"nu": 0.0},
        {"nu": 1.5},
        {"gamma": "other"},
        {"gamma": 0.0},
        {"degree": -1},
        {"tol": 0},
        {"shrinking": 1},
        {"cache_size": 0},
        {"max_iter": 0},
        {"max_iter": -2},
    ],
)
def test_bad_params_raise(params):
    with pytest.raises(ParamError):
        OCSVM(**params)

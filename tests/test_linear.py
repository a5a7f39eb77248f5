"""PCA detector: parity with PyOD's PCA score and scikit-learn's PCA on real data.

Data: ADBench sets from ../shared (ADB-dev cut and 70/30 split, protocols.md) and
scikit-learn's bundled breast-cancer set.
"""

from __future__ import annotations


import numpy as np
import pytest
from scipy.spatial.distance import cdist
from sklearn.datasets import load_breast_cancer
from sklearn.decomposition import PCA as SkPCA
from sklearn.metrics import roc_auc_score
from sklearn.preprocessing import StandardScaler

from oddkit.detectors.linear import PCA, principal_axes, standardisation
from oddkit.errors import InputError, ParamError
from helpers import ADB, HAS_PYOD, SHARED, adb_dev, needs_pyod  # noqa: F401





@pytest.fixture(scope="module")
def cancer():
    X, y = load_breast_cancer(return_X_y=True)
    return X[:400], X[400:], (y[400:] == 0).astype(int)


def _pyod(**params):
    from pyod.models.pca import PCA as PyodPCA

    return PyodPCA(**params)


@needs_pyod
@pytest.mark.parametrize("name", ["23_mammography", "30_satellite", "32_shuttle", "43_WDBC"])
def test_equals_pyod_on_adbench(name):
    Xtr, Xte, yte = adb_dev(name)
    ours = PCA().fit(Xtr).score(Xte)
    ref = _pyod().fit(Xtr).decision_function(Xte)
    np.testing.assert_allclose(ours, ref, rtol=1e-8)
    assert abs(roc_auc_score(yte, ours) - roc_auc_score(yte, ref)) < 1e-12


@needs_pyod
@pytest.mark.parametrize(
    "params",
    [
        {"weighted": False},
        {"standardization": False},
        {"n_components": 10},
        {"n_components": 12, "n_selected_components": 4},
        {"n_components": 0.9},
    ],
)
def test_equals_pyod_for_other_settings(params, cancer):
    Xtr, Xte, _ = cancer
    ours = PCA(**params).fit(Xtr).score(Xte)
    ref = _pyod(**params).fit(Xtr).decision_function(Xte)
    np.testing.assert_allclose(ours, ref, rtol=1e-8)


@needs_pyod
def test_wide_data_uses_svd_and_matches_pyod(cancer):
    """Fewer than 10 rows per column: the SVD route (scikit-learn's choice too)."""
    Xtr, Xte, _ = cancer
    ours = PCA().fit(Xtr[:200]).score(Xte)
    ref = _pyod().fit(Xtr[:200]).decision_function(Xte)
    np.testing.assert_allclose(ours, ref, rtol=1e-8)


@needs_pyod
def test_zero_variance_axis_dropped_where_pyod_overflows():
    """6_cardio has a constant training column: PyOD divides by a ratio of 0.

    Ours drops that axis and equals PyOD's own formula over its remaining axes.
    """
    Xtr, Xte, yte = adb_dev("6_cardio")
    with np.errstate(divide="ignore", invalid="ignore"):
        ref_model = _pyod().fit(Xtr)
        ref_full = ref_model.decision_function(Xte)
    assert not np.isfinite(ref_full).all()  # the behaviour we deliberately avoid
    det = PCA().fit(Xtr)
    ours = det.score(Xte)
    ev = ref_model.explained_variance_
    keep = ev > max(Xtr.shape) * np.finfo(float).eps * ev.max()
    assert keep.sum() == det.selected_.size == Xtr.shape[1] - 1
    Z = ref_model.scaler_.transform(Xte)
    ref = (cdist(Z, ref_model.components_[keep]) / ref_model.w_components_[keep]).sum(axis=1)
    np.testing.assert_allclose(ours, ref, rtol=1e-8)
    assert roc_auc_score(yte, ours) > 0.85


def test_principal_axes_match_sklearn_pca(cancer):
    Xtr, _, _ = cancer
    Z = StandardScaler().fit_transform(Xtr)
    for rows in (400, 150):  # covariance route, then SVD route
        axes, var = principal_axes(Z[:rows])
        ref = SkPCA().fit(Z[:rows])
        np.testing.assert_allclose(var, ref.explained_variance_, rtol=1e-8, atol=1e-12)
        top = var > 1e-8 * var[0]
        np.testing.assert_allclose(axes[top], ref.components_[top], atol=1e-6)


def test_standardisation_matches_standard_scaler_and_guards_constants(cancer):
    Xtr, _, _ = cancer
    X = Xtr.copy()
    X[:, 3] = 2.5
    X[:, 7] = 1e6 + 1e-12 * np.arange(X.shape[0])  # variance below rounding error
    mean, scale = standardisation(X)
    ref = StandardScaler().fit(X)
    np.testing.assert_allclose(mean, ref.mean_, rtol=1e-12)
    np.testing.assert_allclose(scale, ref.scale_, rtol=1e-10)
    assert scale[3] == 1.0 and scale[7] == 1.0


def test_reconstruction_equals_sklearn_reconstruction_error(cancer):
    Xtr, Xte, yte = cancer
    det = PCA(method="reconstruction").fit(Xtr)
    scaler = StandardScaler().fit(Xtr)
    sk = SkPCA(n_components=0.95).fit(scaler.transform(Xtr))
    assert det.selected_.size == sk.n_components_  # None = 95% of the variance
    Z = scaler.transform(Xte)
    ref = ((Z - sk.inverse_transform(sk.transform(Z))) ** 2).sum(axis=1)
    np.testing.assert_allclose(det.score(Xte), ref, rtol=1e-7, atol=1e-9)
    all_axes = PCA(method="reconstruction", n_components=30).fit(Xtr).score(Xte)
    assert np.abs(all_axes).max() < 1e-8  # every axis kept: rows are rebuilt exactly


@pytest.mark.parametrize("method", ["distance", "reconstruction"])
def test_malignant_tumours_rank_above_benign(method):
    X, y = load_breast_cancer(return_X_y=True)
    benign = np.flatnonzero(y == 1)[:250]
    det = PCA(method=method).fit(X[benign])
    Xte, yte = np.delete(X, benign, axis=0), np.delete(y == 0, benign)
    assert roc_auc_score(yte, det.score(Xte)) > 0.9


def test_constant_column_is_finite_and_deviation_raises_score(cancer):
    Xtr, Xte, _ = cancer
    Xtr = Xtr.copy()
    Xtr[:, 4] = 0.3
    det = PCA().fit(Xtr)
    assert det.scale_[4] == 1.0 and det.selected_.size == Xtr.shape[1] - 1
    row = Xte[:1].copy()
    row[0, 4] = 0.3
    moved = row.copy()
    moved[0, 4] = 5.0
    s_row, s_moved = det.score(np.vstack([row, moved]))
    assert np.isfinite([s_row, s_moved]).all() and s_moved > s_row


def test_identical_rows_raise_a_clear_error():
    with pytest.raises(InputError, match="at least two"):
        PCA().fit(np.ones((10, 4)))
    with pytest.raises(InputError, match="at least 2"):
        PCA().fit(np.ones((1, 4)))


def test_too_many_components_raise_at_fit(cancer):
    Xtr, _, _ = cancer
    with pytest.raises(InputError, match="n_components"):
        PCA(n_components=31).fit(Xtr)


@pytest.mark.parametrize(
    "params",
    [
        {"n_components": 0},
        {"n_components": 1.0},
        {"n_components": "mle"},
        {"n_selected_components": 0},
        {"n_components": 3, "n_selected_components": 4},
        {"weighted": 1},
        {"standardization": None},
        {"method": "shyu"},
    ],
)
def test_bad_params_raise(params):
    with pytest.raises(ParamError):
        PCA(**params)

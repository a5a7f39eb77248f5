"""Density detectors (ECOD, COPOD, HBOS, Gaussian, GMM, KDE) against their references.

Data: ADBench sets from ``../shared`` under the ADB-dev split (protocols.md) where the
shared folder exists, scikit-learn's bundled breast-cancer set always. References: PyOD
3.6.x (ECOD, COPOD, HBOS, GMM, KDE) and scikit-learn (covariance estimators,
GaussianMixture, KernelDensity), each run on the same arrays as ours.
"""

from __future__ import annotations

import functools
import warnings

import numpy as np
import pytest
from scipy.special import logsumexp
from scipy.stats import skew
from sklearn.datasets import load_breast_cancer
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import train_test_split

from oddkit.detectors import density
from oddkit.detectors.density import COPOD, ECOD, GMM, HBOS, KDE, Gaussian
from oddkit.errors import InputError, ParamError
from helpers import ADB, HAS_PYOD, SHARED, needs_pyod  # noqa: F401
from helpers import adb_dev as _adb_dev



# --------------------------------------------------------------------------- data


@functools.lru_cache(maxsize=None)
def _breast_cancer():
    """Bundled real data: 70/30 stratified split, malignant (sklearn's 0) = anomaly."""
    X, y = load_breast_cancer(return_X_y=True)
    anomaly = (y == 0).astype(int)
    Xtr, Xte, _, yte = train_test_split(X, anomaly, test_size=0.3, stratify=anomaly, random_state=0)
    return Xtr, Xte, yte


def _standardise(Xtr, Xte):
    mu, sd = Xtr.mean(0), Xtr.std(0)
    sd[sd == 0] = 1.0
    return (Xtr - mu) / sd, (Xte - mu) / sd


def _data(key: str):
    return _breast_cancer() if key == "breast_cancer" else _adb_dev(key)


DATASETS = ["breast_cancer", "6_cardio", "23_mammography", "30_satellite"]


def _with_constant_column(Xtr, Xte, col=1, value=3.0, other=7.0):
    Xtr, Xte = Xtr.copy(), Xte.copy()
    Xtr[:, col] = value
    Xte[:, col] = value
    Xte[: Xte.shape[0] // 2, col] = other
    return Xtr, Xte


# --------------------------------------------------------------------------- ECOD / COPOD
def _pyod_one_row(pyod_cls, Xtr, row):
    """PyOD's score of ``row`` scored alone, its tails for that row and its skew signs."""
    model = pyod_cls().fit(Xtr)
    score = model.decision_function(row[None, :])[0]
    union_sign = np.sign(np.nan_to_num(skew(np.vstack([Xtr, row]), axis=0)))
    return score, model.U_l[-1], model.U_r[-1], union_sign


@needs_pyod
@pytest.mark.parametrize("key", DATASETS)
@pytest.mark.parametrize("name", ["ecod", "copod"])
def test_ecdf_detectors_equal_pyod_scoring_one_row_at_a_time(name, key):
    """Our inductive score = PyOD's score of the row scored alone (the +1 smoothing)."""
    from pyod.models.copod import COPOD as PyodCOPOD
    from pyod.models.ecod import ECOD as PyodECOD

    pyod_cls = PyodECOD if name == "ecod" else PyodCOPOD
    ours_cls = ECOD if name == "ecod" else COPOD
    Xtr, Xte, _ = _data(key)
    rows = Xte[np.random.RandomState(0).choice(Xte.shape[0], 8, replace=False)]
    ours_pyod = ours_cls(aggregation="pyod").fit(Xtr).score(rows)
    ours_paper = ours_cls(aggregation="paper").fit(Xtr).score(rows)
    train_sign = np.sign(np.nan_to_num(skew(Xtr, axis=0)))
    compared = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for i, row in enumerate(rows):
            ref, u_left, u_right, union_sign = _pyod_one_row(pyod_cls, Xtr, row)
            # The paper's aggregation, computed from PyOD's own tail values of the row.
            skewed = np.where(train_sign < 0, u_left, u_right)
            paper = max(u_left.sum(), u_right.sum(), skewed.sum())
            np.testing.assert_allclose(ours_paper[i], paper, rtol=1e-10)
            if np.array_equal(union_sign, train_sign):  # PyOD re-estimates skew with the row
                np.testing.assert_allclose(ours_pyod[i], ref, rtol=1e-10)
                compared += 1
    assert compared >= 6, f"only {compared} of 8 rows kept the training skewness signs"


def test_paper_aggregation_is_max_of_three_sums_and_ecod_equals_copod_there():
    Xtr, Xte, _ = _breast_cancer()
    ecod = ECOD().fit(Xtr)
    left, right = ecod._tails(Xte)
    skewed = np.where(ecod.skewness_[:, None] < 0, left, right)
    expected = np.max([left.sum(0), right.sum(0), skewed.sum(0)], axis=0)
    np.testing.assert_allclose(ecod.score(Xte), expected, rtol=1e-12)
    np.testing.assert_array_equal(COPOD(aggregation="paper").fit(Xtr).score(Xte), ecod.score(Xte))
    # the default aggregations differ, so the two registered detectors are different
    assert not np.allclose(COPOD().fit(Xtr).score(Xte), ecod.score(Xte))


def test_tail_probabilities_count_the_query_once():
    train = np.array([[1.0], [2.0], [2.0], [3.0]])
    det = ECOD(aggregation="pyod").fit(train)
    left, right = det._tails(np.array([[0.0], [2.0], [9.0]]))
    # F_left = (1 + #train <= v) / 5, F_right = (1 + #train >= v) / 5
    np.testing.assert_allclose(np.exp(-left[0]), [1 / 5, 4 / 5, 5 / 5])
    np.testing.assert_allclose(np.exp(-right[0]), [5 / 5, 4 / 5, 1 / 5])


@needs_pyod
@pytest.mark.parametrize("name", ["ecod", "copod"])
def test_ecdf_inductive_where_pyod_is_batch_dependent(name):
    from pyod.models.copod import COPOD as PyodCOPOD
    from pyod.models.ecod import ECOD as PyodECOD

    Xtr, Xte, yte = _data("6_cardio")
    ours = (ECOD if name == "ecod" else COPOD)(aggregation="pyod").fit(Xtr)
    batch = ours.score(Xte)
    alone = np.concatenate([ours.score(Xte[i : i + 1]) for i in range(10)])
    np.testing.assert_allclose(alone, batch[:10], rtol=1e-12)
    pyod = (PyodECOD if name == "ecod" else PyodCOPOD)().fit(Xtr)
    pyod_batch = pyod.decision_function(Xte)
    pyod_alone = np.array([pyod.decision_function(Xte[i : i + 1])[0] for i in range(10)])
    assert np.abs(pyod_alone - pyod_batch[:10]).max() > 1e-3  # PyOD: the batch matters
    np.testing.assert_allclose(batch[:10], pyod_alone, rtol=1e-10)
    # ranking quality is the same up to PyOD's batch effect
    assert abs(roc_auc_score(yte, batch) - roc_auc_score(yte, pyod_batch)) < 5e-3


@pytest.mark.parametrize("cls", [ECOD, COPOD])
@pytest.mark.parametrize("aggregation", ["paper", "pyod"])
def test_ecdf_constant_training_column(cls, aggregation):
    Xtr, Xte, _ = _breast_cancer()
    Xtr, Xte = _with_constant_column(Xtr, Xte)  # column 1: 3.0 in training, 7.0 in half the test
    det = cls(aggregation=aggregation).fit(Xtr)
    s = det.score(Xte)
    assert np.isfinite(s).all()
    half = Xte.shape[0] // 2
    left, right = det._tails(Xte)
    np.testing.assert_allclose(right[1, :half], np.log(Xtr.shape[0] + 1.0))  # p = 1/(n+1)
    np.testing.assert_allclose(left[1], 0.0, atol=1e-12)
    np.testing.assert_allclose(right[1, half:], 0.0, atol=1e-12)
    same = Xte.copy()
    same[:, 1] = 3.0
    gain = s[:half] - det.score(same)[:half]
    assert (gain >= 0).all()
    if aggregation == "pyod":  # per-feature aggregation: the deviation always counts
        assert (gain > 1.0).all()


@needs_pyod
@pytest.mark.parametrize("name", ["ecod", "copod"])
def test_ecdf_constant_training_column_equals_pyod_one_row_at_a_time(name):
    """Zero training skewness (a constant column): PyOD's rule, below/at/above it."""
    from pyod.models.copod import COPOD as PyodCOPOD
    from pyod.models.ecod import ECOD as PyodECOD

    Xtr, Xte = _with_constant_column(*_breast_cancer()[:2])
    rows = Xte[:6].copy()
    rows[:, 1] = [-5.0, 3.0, 7.0, -1.0, 3.0, 9.0]  # the training constant is 3.0
    ours = (ECOD if name == "ecod" else COPOD)(aggregation="pyod").fit(Xtr).score(rows)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        pyod_cls = PyodECOD if name == "ecod" else PyodCOPOD
        ref = [_pyod_one_row(pyod_cls, Xtr, row)[0] for row in rows]
    np.testing.assert_allclose(ours, ref, rtol=1e-10)


# --------------------------------------------------------------------------- HBOS
def _hbos_probe_rows(Xtr, Xte, edges):
    """Test rows plus values just (within tol) and far outside the training range."""
    width_lo = edges[1] - edges[0]
    width_hi = edges[-1] - edges[-2]
    probes = [Xte]
    for factor in (0.2, 0.5, 0.8, 3.0):
        below = Xte[:20].copy()
        below[:, ::2] = edges[0, ::2] - factor * width_lo[::2]
        above = Xte[:20].copy()
        above[:, 1::2] = edges[-1, 1::2] + factor * width_hi[1::2]
        probes += [below, above]
    exact = Xte[:5].copy()
    exact[:] = edges[3]  # values on inner bin edges
    probes.append(exact)
    probes.append(np.vstack([Xtr.min(0), Xtr.max(0)]))
    return np.vstack(probes)


@needs_pyod
@pytest.mark.parametrize("key", DATASETS)
@pytest.mark.parametrize("params", [{}, {"n_bins": 5, "alpha": 0.5, "tol": 0.2}])
def test_hbos_equals_pyod_including_out_of_range(key, params):
    from pyod.models.hbos import HBOS as PyodHBOS

    Xtr, Xte, yte = _data(key)
    ours = HBOS(**params).fit(Xtr)
    ref = PyodHBOS(**params).fit(Xtr)
    np.testing.assert_allclose(ours.bin_edges_, ref.bin_edges_, rtol=0, atol=0)
    np.testing.assert_allclose(ours.hist_, ref.hist_, rtol=1e-12, atol=0)
    probe = _hbos_probe_rows(Xtr, Xte, ours.bin_edges_)
    assert (probe < Xtr.min(0)).any() and (probe > Xtr.max(0)).any()
    np.testing.assert_allclose(
        ours.score(probe), ref.decision_function(probe), rtol=1e-10, atol=1e-10
    )
    assert roc_auc_score(yte, ours.score(Xte)) == pytest.approx(
        roc_auc_score(yte, ref.decision_function(Xte)), abs=1e-12
    )


def test_hbos_out_of_range_rules():
    """Within tol bin widths: the edge bin's density; beyond: the feature's lowest."""
    train = np.array([[0.0], [0.0], [1.0], [4.0]])  # 4 bins of width 1 on [0, 4]
    det = HBOS(n_bins=4, alpha=0.1, tol=0.5).fit(train)
    log_density = np.log2(det.hist_[:, 0] + 0.1)  # densities 0.5, 0.25, 0, 0.25
    np.testing.assert_allclose(det.hist_[:, 0], [0.5, 0.25, 0.0, 0.25])
    got = det.score(np.array([[-0.4], [-0.6], [4.5], [4.6], [2.0], [1.0]]))
    expected = -np.array(
        [log_density[0], log_density.min(), log_density[3], log_density.min(),
         log_density[1], log_density[0]]  # 2.0 and 1.0 lie on inner edges: lower bin
    )
    np.testing.assert_allclose(got, expected)


@needs_pyod
def test_hbos_constant_training_column_equals_pyod():
    from pyod.models.hbos import HBOS as PyodHBOS

    Xtr, Xte = _with_constant_column(*_breast_cancer()[:2])
    s = HBOS().fit(Xtr).score(Xte)
    assert np.isfinite(s).all()
    np.testing.assert_allclose(s, PyodHBOS().fit(Xtr).decision_function(Xte), rtol=1e-10)


# --------------------------------------------------------------------------- Gaussian
@pytest.mark.parametrize("key", DATASETS)
@pytest.mark.parametrize("covariance", ["empirical", "ledoit_wolf"])
def test_gaussian_equals_sklearn_mahalanobis(key, covariance):
    from sklearn.covariance import EmpiricalCovariance, LedoitWolf

    Xtr, Xte, _ = _data(key)
    ref = (EmpiricalCovariance() if covariance == "empirical" else LedoitWolf()).fit(Xtr)
    ours = Gaussian(covariance=covariance).fit(Xtr)
    np.testing.assert_allclose(ours.score(Xte), ref.mahalanobis(Xte), rtol=1e-8)
    assert ours.precision_.dtype == np.float64 and ours.location_.shape == (Xtr.shape[1],)


@pytest.mark.parametrize("key", ["breast_cancer", "6_cardio"])
def test_gaussian_mcd_equals_sklearn_mincovdet(key):
    from sklearn.covariance import MinCovDet

    Xtr, Xte, yte = _data(key)
    ours = Gaussian(covariance="mcd", random_state=3).fit(Xtr)
    ref = MinCovDet(random_state=3).fit(Xtr)
    np.testing.assert_allclose(ours.score(Xte), ref.mahalanobis(Xte), rtol=1e-8)
    assert roc_auc_score(yte, ours.score(Xte)) > 0.7


def test_gaussian_constant_column():
    Xtr, Xte = _with_constant_column(*_standardise(*_breast_cancer()[:2]))
    same = Xte.copy()
    same[:, 1] = 3.0
    half = Xte.shape[0] // 2
    # empirical: pseudo-inverse, the zero-variance direction is ignored (documented)
    emp = Gaussian(covariance="empirical").fit(Xtr)
    np.testing.assert_allclose(emp.score(Xte), emp.score(same), rtol=1e-6, atol=1e-6)
    # Ledoit-Wolf: shrinkage gives the column a variance, so the deviation counts
    lw = Gaussian().fit(Xtr)
    assert np.isfinite(lw.score(Xte)).all()
    assert (lw.score(Xte)[:half] > lw.score(same)[:half] + 1.0).all()


# --------------------------------------------------------------------------- GMM
@needs_pyod
@pytest.mark.parametrize("covariance_type", ["full", "tied", "diag", "spherical"])
def test_gmm_equals_sklearn_and_pyod(covariance_type):
    from pyod.models.gmm import GMM as PyodGMM
    from sklearn.mixture import GaussianMixture

    Xtr, Xte = _standardise(*_breast_cancer()[:2])
    kw = {"n_components": 3, "covariance_type": covariance_type, "random_state": 0}
    ours = GMM(**kw).fit(Xtr).score(Xte)
    ref = -GaussianMixture(**kw).fit(Xtr).score_samples(Xte)
    np.testing.assert_allclose(ours, ref, rtol=1e-8)
    if covariance_type == "full":  # PyOD's GMM wraps the same GaussianMixture
        pyod = PyodGMM(**kw).fit(Xtr).decision_function(Xte)
        np.testing.assert_allclose(ours, pyod, rtol=1e-8)


def test_gmm_defaults_are_pyods_and_min_rows():
    assert GMM.default_params() == {
        "n_components": 1, "covariance_type": "full", "tol": 1e-3, "reg_covar": 1e-6,
        "max_iter": 100, "n_init": 1, "init_params": "kmeans", "random_state": None,
    }
    Xtr, Xte, _ = _breast_cancer()
    with pytest.raises(InputError, match="at least 5"):
        GMM(n_components=5, random_state=0).fit(Xtr[:4])
    Xc, Xtc = _with_constant_column(*_standardise(Xtr, Xte))
    assert np.isfinite(GMM(random_state=0).fit(Xc).score(Xtc)).all()


# --------------------------------------------------------------------------- KDE
def _kde_reference(Xtr, Xte, h):
    """-log of the Gaussian KDE by brute force (all pairwise differences, float64)."""
    sq = ((Xte[:, None, :] - Xtr[None, :, :]) ** 2).sum(-1)
    n, d = Xtr.shape
    log_p = logsumexp(-sq / (2 * h * h), axis=1) - np.log(n) - 0.5 * d * np.log(2 * np.pi * h * h)
    return -log_p


@pytest.mark.parametrize("bandwidth", [1.0, "scott", "silverman", 0.3])
def test_kde_equals_exact_density(bandwidth):
    Xtr, Xte = _standardise(*_breast_cancer()[:2])
    det = KDE(bandwidth=bandwidth).fit(Xtr)
    n, d = Xtr.shape
    expected_h = {"scott": n ** (-1 / (d + 4)), "silverman": (n * (d + 2) / 4) ** (-1 / (d + 4))}
    assert det.bandwidth_ == pytest.approx(expected_h.get(bandwidth, bandwidth), rel=1e-15)
    np.testing.assert_allclose(det.score(Xte), _kde_reference(Xtr, Xte, det.bandwidth_), rtol=1e-10)


@needs_pyod
def test_kde_equals_sklearn_and_pyod_at_the_default_bandwidth():
    """scikit-learn's tree (atol = rtol = 0) agrees closely at the default bandwidth.

    With small bandwidths its tree bounds lose accuracy for points far from the data
    (we measured up to 14 nats on cardio with "scott"); our blocks are exact, as the
    brute-force test above shows.
    """
    from pyod.models.kde import KDE as PyodKDE
    from sklearn.neighbors import KernelDensity

    key = "6_cardio" if ADB.is_dir() else "breast_cancer"
    Xtr, Xte = _standardise(*_data(key)[:2])
    ours = KDE().fit(Xtr).score(Xte)
    # 2e-6: scikit-learn's tree is approximate even with zero tolerances (7.7e-7 relative
    # measured on breast cancer); exactness of ours is checked against brute force above.
    np.testing.assert_allclose(ours, -KernelDensity().fit(Xtr).score_samples(Xte), rtol=2e-6)
    np.testing.assert_allclose(ours, PyodKDE().fit(Xtr).decision_function(Xte), rtol=2e-6)


def test_kde_blocks_bound_memory_without_changing_scores(monkeypatch):
    Xtr, Xte = _standardise(*_breast_cancer()[:2])
    det = KDE(bandwidth=0.5).fit(Xtr)
    full = det.score(Xte)
    monkeypatch.setattr(density, "_KDE_BLOCK", 7)  # 1 query x 7 training rows per block
    np.testing.assert_allclose(det.score(Xte), full, rtol=1e-12)
    far = Xte[:3] + 1e3  # kernel values underflow: the running logsumexp keeps them finite
    s = det.score(far)
    np.testing.assert_allclose(s, _kde_reference(Xtr, far, 0.5), rtol=1e-10)


def test_kde_constant_column_is_finite():
    Xtr, Xte = _with_constant_column(*_standardise(*_breast_cancer()[:2]))
    assert np.isfinite(KDE().fit(Xtr).score(Xte)).all()


# --------------------------------------------------------------------------- params
@pytest.mark.parametrize(
    "cls, params",
    [
        (ECOD, {"aggregation": "mean"}),
        (COPOD, {"aggregation": None}),
        (HBOS, {"n_bins": 1}),
        (HBOS, {"n_bins": 2.5}),
        (HBOS, {"alpha": 0.0}),
        (HBOS, {"tol": -0.1}),
        (Gaussian, {"covariance": "oas"}),
        (Gaussian, {"support_fraction": 1.5}),
        (Gaussian, {"random_state": -1}),
        (GMM, {"n_components": 0}),
        (GMM, {"covariance_type": "banded"}),
        (GMM, {"reg_covar": -1e-6}),
        (GMM, {"init_params": "spectral"}),
        (KDE, {"bandwidth": 0.0}),
        (KDE, {"bandwidth": "auto"}),
        (KDE, {"bandwidth": True}),
        (KDE, {"kernel": "tophat"}),
    ],
)
def test_bad_params_raise_param_error(cls, params):
    with pytest.raises(ParamError):
        cls(**params)


def test_min_fit_rows():
    assert Gaussian().min_fit_rows() == 2
    assert GMM().min_fit_rows() == 2 and GMM(n_components=4).min_fit_rows() == 4
    one = np.array([[1.0, 2.0]])
    for cls in (ECOD, COPOD, HBOS, KDE):  # one row is enough for these
        assert np.isfinite(cls().fit(one).score(np.array([[0.0, 5.0], [1.0, 2.0]]))).all()
    with pytest.raises(InputError, match="at least 2"):
        Gaussian().fit(one)


def test_degenerate_mcd_fit_is_a_typed_error():
    with pytest.raises(InputError, match="ledoit_wolf"):
        Gaussian(covariance="mcd", random_state=0).fit(np.ones((6, 3)))
    scores = Gaussian().fit(np.ones((6, 3))).score(np.array([[1.0, 1.0, 1.0], [2.0, 0.0, 5.0]]))
    assert np.isfinite(scores).all()

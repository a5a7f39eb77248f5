"""The ensemble: exact composition of its members, validation, bounded normalisation."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer

from oddkit import detectors
from oddkit.detectors.ensemble import DEFAULT_MEMBERS, Ensemble
from oddkit.errors import ParamError, UnknownDetectorError
from oddkit.metrics import auroc

from helpers import adb_dev


@pytest.fixture(scope="module")
def cancer():
    X, y = load_breast_cancer(return_X_y=True)
    anomaly = (y == 0).astype(int)
    rng = np.random.RandomState(0)
    idx = rng.permutation(len(y))
    normal = idx[anomaly[idx] == 0]
    tr, te = normal[:250], np.concatenate([normal[250:], np.flatnonzero(anomaly)])
    return X[tr], X[te], anomaly[te]


def _by_hand(members, Xtr, Xte, seed, robust=False, combine=np.mean):
    cols = []
    for m in members:
        cls = detectors.get(m)
        det = detectors.create(m, **({"random_state": seed} if cls.randomized else {})).fit(Xtr)
        tr, te = det.score(Xtr), det.score(Xte)
        if robust:
            c = np.median(tr)
            w = 1.4826 * np.median(np.abs(tr - c))
        else:
            c, w = tr.mean(), tr.std()
        cols.append((te - c) / w)
    return combine(np.column_stack(cols), axis=1)


def test_default_members_are_the_documented_ones():
    assert [m["name"] for m in DEFAULT_MEMBERS] == ["iforest", "knn", "hbos", "gaussian"]
    ens = Ensemble(random_state=0)
    assert [d.name for d in ens._build_members()] == ["iforest", "knn", "hbos", "gaussian"]


@pytest.mark.parametrize("normalization,combination", [("zscore", "mean"), ("robust", "max")])
def test_score_is_the_standardised_combination_of_members(cancer, normalization, combination):
    Xtr, Xte, _ = cancer
    members = ["iforest", "knn", "ecod"]
    ens = Ensemble(members=members, normalization=normalization, combination=combination,
                   random_state=4).fit(Xtr)
    expected = _by_hand(members, Xtr, Xte, 4, robust=normalization == "robust",
                        combine=np.mean if combination == "mean" else np.max)
    np.testing.assert_allclose(ens.score(Xte), expected, rtol=1e-10)


def test_member_params_are_passed_on(cancer):
    Xtr, Xte, _ = cancer
    ens = Ensemble(members=[{"name": "knn", "params": {"n_neighbors": 12, "method": "mean"}}]).fit(Xtr)
    knn = detectors.create("knn", n_neighbors=12, method="mean").fit(Xtr)
    s = knn.score(Xtr)
    np.testing.assert_allclose(ens.score(Xte), (knn.score(Xte) - s.mean()) / s.std(), rtol=1e-10)


def test_normalisation_uses_a_seeded_bounded_subsample(cancer):
    Xtr, Xte, _ = cancer
    a = Ensemble(members=["knn"], norm_rows=50, random_state=1).fit(Xtr)
    b = Ensemble(members=["knn"], norm_rows=50, random_state=1).fit(Xtr)
    full = Ensemble(members=["knn"], random_state=1).fit(Xtr)
    np.testing.assert_array_equal(a.score(Xte), b.score(Xte))
    assert not np.allclose(a.loc_, full.loc_)
    # the ranking of a single member does not depend on its standardisation
    assert auroc((np.arange(len(Xte)) % 2), a.score(Xte)) == pytest.approx(
        auroc((np.arange(len(Xte)) % 2), full.score(Xte)))


def test_bad_members_are_refused_before_fitting():
    with pytest.raises(UnknownDetectorError, match="available"):
        Ensemble(members=["knn", "nope"])
    with pytest.raises(ParamError, match="at least one"):
        Ensemble(members=[])
    with pytest.raises(ParamError, match="another ensemble"):
        Ensemble(members=["ensemble"])
    with pytest.raises(ParamError, match="unknown keys"):
        Ensemble(members=[{"name": "knn", "k": 3}])
    with pytest.raises(ParamError):
        Ensemble(members="knn")
    with pytest.raises(ParamError, match="norm_rows"):
        Ensemble(norm_rows=1)


def test_default_beats_its_weakest_member_on_real_sets():
    """On real ADBench sets the combination is never worse than its worst member."""
    for name in ("6_cardio", "30_satellite", "42_WBC"):
        Xtr, Xte, yte = adb_dev(name)
        ens = auroc(yte, Ensemble(random_state=0).fit(Xtr).score(Xte))
        singles = []
        for m in DEFAULT_MEMBERS:
            cls = detectors.get(m["name"])
            det = detectors.create(m["name"], **({"random_state": 0} if cls.randomized else {}))
            singles.append(auroc(yte, det.fit(Xtr).score(Xte)))
        assert ens > min(singles), (name, ens, singles)

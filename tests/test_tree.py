"""IForest: parity with scikit-learn's and PyOD's Isolation Forest on real data.

Data: ADBench sets from ../shared with the ADB-dev cut and 70/30 split (protocols.md),
and scikit-learn's bundled breast-cancer set.
"""

from __future__ import annotations


import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer
from sklearn.ensemble import IsolationForest
from sklearn.metrics import roc_auc_score

from oddkit.detectors import tree
from oddkit.detectors.tree import IForest, average_path_length
from oddkit.errors import ParamError
from helpers import ADB, HAS_PYOD, SHARED, adb_dev, needs_pyod  # noqa: F401





@pytest.fixture(scope="module")
def cancer():
    X, _ = load_breast_cancer(return_X_y=True)
    return X[:400], X[400:]


@pytest.mark.parametrize("name", ["6_cardio", "23_mammography", "30_satellite"])
def test_equals_sklearn_score_samples_on_adbench(name):
    Xtr, Xte, _ = adb_dev(name)
    ours = IForest(random_state=0).fit(Xtr).score(Xte)
    ref = -IsolationForest(random_state=0).fit(Xtr).score_samples(Xte)
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-10)


@pytest.mark.parametrize(
    "params",
    [
        {"max_features": 0.5, "bootstrap": True},
        {"max_samples": 100, "n_estimators": 30},
        {"max_samples": 0.3, "max_features": 7},
    ],
)
def test_equals_sklearn_for_other_settings(params, cancer):
    Xtr, Xte = cancer
    ours = IForest(random_state=4, **params).fit(Xtr).score(Xte)
    ref = -IsolationForest(random_state=4, **params).fit(Xtr).score_samples(Xte)
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-10)


@pytest.mark.skipif(not HAS_PYOD, reason="pyod is not installed")
def test_equals_pyod_up_to_its_constant_offset():
    from pyod.models.iforest import IForest as PyodIForest

    Xtr, Xte, yte = adb_dev("23_mammography", seed=1)
    ours = IForest(random_state=1).fit(Xtr).score(Xte)
    ref = PyodIForest(random_state=1).fit(Xtr).decision_function(Xte)
    shift = ref - ours
    assert np.ptp(shift) < 1e-10  # a constant: PyOD subtracts its offset_
    assert abs(roc_auc_score(yte, ours) - roc_auc_score(yte, ref)) < 1e-12
    assert roc_auc_score(yte, ours) > 0.8


def test_linked_walk_equals_padded_walk(cancer, monkeypatch):
    """The fallback traversal (very large max_samples) gives the same scores."""
    Xtr, Xte = cancer
    det = IForest(random_state=0).fit(Xtr)
    assert isinstance(det._walker, tree._PaddedForest)
    padded = det.score(Xte)
    monkeypatch.setattr(tree, "_MAX_PADDED_NODES", 0)
    det._build_table()
    assert isinstance(det._walker, tree._LinkedForest)
    np.testing.assert_array_equal(det.score(Xte), padded)


def test_block_size_does_not_change_scores(cancer, monkeypatch):
    Xtr, Xte = cancer
    det = IForest(random_state=0).fit(Xtr)
    full = det.score(Xte)
    monkeypatch.setattr(tree, "_CELLS_PER_BLOCK", 7)  # one row per block
    np.testing.assert_array_equal(det.score(Xte), full)


def test_fitted_state_is_plain_node_arrays(cancer):
    Xtr, _ = cancer
    det = IForest(n_estimators=10, random_state=0).fit(Xtr)
    meta, arrays = det._get_state()
    n_nodes = det.tree_offsets_[-1]
    for key in ("children_left_", "children_right_", "split_feature_", "split_threshold_",
                "node_depth_", "n_node_samples_"):
        assert arrays[key].shape == (n_nodes,)
    assert det.tree_offsets_.shape == (11,)
    leaf = det.children_left_ < 0
    assert (det.split_feature_[~leaf] < Xtr.shape[1]).all()
    assert (det.split_feature_[leaf] == -1).all()
    assert (det.node_depth_[det.tree_offsets_[:-1]] == 0).all()
    assert det.node_depth_.max() <= np.ceil(np.log2(det.max_samples_))
    assert meta["max_samples_"] == 256


def test_scores_lie_in_unit_interval_and_rank_outliers(cancer):
    Xtr, Xte = cancer
    det = IForest(random_state=0).fit(Xtr)
    s = det.score(Xte)
    assert (s > 0).all() and (s <= 1).all()
    far = Xte[:5] * 50.0  # far outside the training range
    assert det.score(far).min() > np.quantile(s, 0.99)


def test_seed_controls_the_forest(cancer):
    Xtr, Xte = cancer
    a = IForest(random_state=3).fit(Xtr).score(Xte)
    b = IForest(random_state=3).fit(Xtr).score(Xte)
    c = IForest(random_state=4).fit(Xtr).score(Xte)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


def test_identical_training_rows_give_half():
    X = np.ones((20, 3))
    s = IForest(random_state=0).fit(X).score(np.array([[1.0, 1.0, 1.0], [5.0, -2.0, 0.0]]))
    np.testing.assert_allclose(s, 0.5)


def test_average_path_length_values():
    c = average_path_length(np.array([0, 1, 2, 3, 256]))
    harmonic_255 = np.sum(1.0 / np.arange(1, 256))
    assert c[0] == 0 and c[1] == 0 and c[2] == 1
    assert c[3] == pytest.approx(2 * (np.log(2) + np.euler_gamma) - 4 / 3)
    # the paper approximates H(i) by ln(i) + gamma (error about 1 / 2i)
    assert c[4] == pytest.approx(2 * harmonic_255 - 2 * 255 / 256, rel=1e-3)


@pytest.mark.parametrize(
    "params",
    [
        {"n_estimators": 0},
        {"max_samples": "all"},
        {"max_samples": 0},
        {"max_samples": 1.5},
        {"max_features": 0.0},
        {"bootstrap": "yes"},
        {"random_state": -1},
    ],
)
def test_bad_params_raise(params):
    with pytest.raises(ParamError):
        IForest(**params)


def test_max_features_above_width_raises_at_fit(cancer):
    Xtr, _ = cancer
    with pytest.raises(ParamError, match="max_features"):
        IForest(max_features=31).fit(Xtr)


def test_corrupt_saved_trees_are_refused(cancer, tmp_path):
    from oddkit.detectors import load
    from oddkit.errors import PersistenceError

    Xtr, Xte = cancer
    det = IForest(n_estimators=5, random_state=0).fit(Xtr)
    det.save(tmp_path / "ok")
    np.testing.assert_array_equal(load(tmp_path / "ok").score(Xte), det.score(Xte))
    det.children_left_[0] = det.children_left_.size + 3  # a child outside the forest
    det.save(tmp_path / "bad")
    with pytest.raises(PersistenceError, match="valid trees"):
        load(tmp_path / "bad")

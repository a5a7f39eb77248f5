"""The PyOD adapter: same scores as PyOD, batch independence, persistence, clear errors.

Data: scikit-learn's bundled Wisconsin breast-cancer set (benign = normal), standardised
with training statistics; ADBench's cardio set from ../shared where present.
"""

from __future__ import annotations

import importlib
import inspect
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer

pytest.importorskip("pyod", reason="pyod is not installed (pip install oddkit[pyod])")

from oddkit import detectors  # noqa: E402
from oddkit.detectors.pyod_adapter import (  # noqa: E402
    APPENDS_BATCH_TO_TRAIN,
    INSTALL_HINT,
    SCORES_WITHIN_BATCH,
    MissingDependencyError,
    PyODAdapter,
)
from oddkit.errors import InputError, OddkitError, ParamError  # noqa: E402
from oddkit.metrics import auroc  # noqa: E402

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
# PyOD's CD and SOS divide by zero on tiny batches; those are PyOD's warnings, not ours.
pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning:pyod")


@pytest.fixture(scope="module")
def cancer():
    X, y = load_breast_cancer(return_X_y=True)
    anomaly = (y == 0).astype(int)  # 0 = malignant in scikit-learn's coding
    rng = np.random.RandomState(0)
    normal = rng.permutation(np.flatnonzero(anomaly == 0))
    train = normal[:200]
    test = np.concatenate([normal[200:260], rng.permutation(np.flatnonzero(anomaly == 1))[:40]])
    mu, sd = X[train].mean(0), X[train].std(0)
    Z = (X - mu) / sd
    return Z[train], Z[test], anomaly[test]


def pyod_class(name):
    module = {"IForest": "iforest", "KNN": "knn", "LOF": "lof", "HBOS": "hbos", "PCA": "pca",
              "OCSVM": "ocsvm", "GMM": "gmm", "MCD": "mcd", "LODA": "loda", "INNE": "inne",
              "CBLOF": "cblof", "KDE": "kde", "ABOD": "abod", "ECOD": "ecod", "COPOD": "copod",
              "SOD": "sod", "COF": "cof", "CD": "cd", "LMDD": "lmdd", "LOCI": "loci",
              "ROD": "rod", "SOS": "sos", "RGraph": "rgraph", "Sampling": "sampling",
              "KPCA": "kpca", "QMCD": "qmcd"}[name]
    return getattr(importlib.import_module(f"pyod.models.{module}"), name)


def pyod_direct(name, seed=0, **params):
    """The PyOD model as a PyOD user builds it (seeded when it takes a seed)."""
    cls = pyod_class(name)
    if "random_state" in inspect.signature(cls.__init__).parameters:
        params["random_state"] = seed
    return cls(**params)


# --------------------------------------------------------------------------- parity
# Models whose first use costs seconds of numba compilation (or a slow first fit) carry
# the ``slow`` marker: ``-m "not slow"`` leaves them out of a quick local run.
slow = [
    pytest.mark.slow,
]
INDUCTIVE = ["IForest", "KNN", "LOF", "PCA", "OCSVM", "GMM", "MCD", "LODA", "INNE", "KDE",
             "Sampling", "KPCA"] + [pytest.param(n, marks=slow) for n in ("HBOS", "ABOD", "CBLOF")]


@pytest.mark.parametrize("name", INDUCTIVE)
def test_scores_equal_pyod_own(name, cancer):
    Xtr, Xte, yte = cancer
    ours = detectors.create("pyod", model=name, random_state=0).fit(Xtr).score(Xte)
    theirs = pyod_direct(name).fit(Xtr).decision_function(Xte)
    np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=1e-12)
    assert auroc(yte, ours) == pytest.approx(auroc(yte, theirs), abs=1e-12)
    assert auroc(yte, ours) > 0.8, f"{name} should separate malignant from benign"


def test_params_reach_pyod(cancer):
    Xtr, Xte, _ = cancer
    ours = PyODAdapter("KNN", params={"n_neighbors": 12, "method": "mean"}).fit(Xtr).score(Xte)
    theirs = pyod_direct("KNN", n_neighbors=12, method="mean").fit(Xtr).decision_function(Xte)
    np.testing.assert_allclose(ours, theirs, rtol=1e-12)
    default = PyODAdapter("KNN").fit(Xtr).score(Xte)
    assert not np.allclose(ours, default)


@pytest.mark.skipif(not (SHARED / "data/adbench/classical/6_cardio.npz").is_file(),
                    reason="../shared/data/adbench is not available")
def test_adbench_cardio_parity():
    data = np.load(SHARED / "data/adbench/classical/6_cardio.npz")
    X, y = data["X"], data["y"].astype(int)
    idx = np.random.RandomState(0).permutation(len(y))
    tr, te = idx[:1200], idx[1200:]
    for name in ("IForest", "OCSVM"):
        ours = PyODAdapter(name, random_state=0).fit(X[tr]).score(X[te])
        theirs = pyod_direct(name).fit(X[tr]).decision_function(X[te])
        np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=1e-12)
        assert auroc(y[te], ours) == pytest.approx(auroc(y[te], theirs), abs=1e-12)
        assert auroc(y[te], ours) > 0.8


# --------------------------------------------------------------------------- transductive
@pytest.fixture(scope="module")
def small(cancer):
    """A small slice so the slow transductive PyOD models stay fast."""
    Xtr, Xte, yte = cancer
    return Xtr[:60, :6], Xte[::4, :6]


def _pyod_batch_vs_alone(name, Xtr, Xte, n_alone=2):
    """PyOD's own scores of the first rows inside the batch and scored alone (None: fails)."""
    params = {"verbose": 0} if name == "RGraph" else {}
    model = pyod_direct(name, **params).fit(Xtr)
    batch = np.asarray(model.decision_function(Xte), dtype=float)[:n_alone]
    try:
        alone = [float(model.decision_function(Xte[i : i + 1])[0]) for i in range(n_alone)]
    except Exception:  # SOD/COF cannot score one row alone
        return batch, None
    return batch, np.array(alone)


SLOW_TRANSDUCTIVE = {"LOCI", "ROD", "SOD"}


@pytest.mark.parametrize(
    "name",
    [pytest.param(n, marks=slow if n in SLOW_TRANSDUCTIVE else [])
     for n in sorted(APPENDS_BATCH_TO_TRAIN | SCORES_WITHIN_BATCH)],
)
def test_listed_models_really_are_transductive_in_pyod(name, small):
    """The documented sets are honest: PyOD's score of a row depends on its batch."""
    Xtr, Xte = small
    batch, alone = _pyod_batch_vs_alone(name, Xtr, Xte)
    assert alone is None or not np.allclose(batch, alone, rtol=1e-6), (
        f"PyOD's {name} scores rows alone and in a batch alike; drop it from the set"
    )


@pytest.mark.parametrize(
    "name",
    ["IForest", "KNN", "LOF", "PCA", "OCSVM", "KPCA", "INNE", "LODA", "MCD", "GMM", "KDE",
     "Sampling"] + [pytest.param(n, marks=slow) for n in ("HBOS", "ABOD", "CBLOF", "QMCD")],
)
def test_unlisted_models_are_inductive_in_pyod(name, small):
    Xtr, Xte = small
    batch, alone = _pyod_batch_vs_alone(name, Xtr, Xte, n_alone=4)
    np.testing.assert_allclose(alone, batch, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize(
    "name",
    ["ECOD", "COPOD", "COF", "CD", "SOS", "LMDD"] + [pytest.param("SOD", marks=slow)],
)
def test_transductive_models_are_scored_row_by_row(name, small):
    Xtr, Xte = small
    Xte = Xte[:5]
    det = PyODAdapter(name, random_state=0).fit(Xtr)
    full = det.score(Xte)
    model = pyod_direct(name).fit(Xtr)
    if name in APPENDS_BATCH_TO_TRAIN:  # PyOD itself appends the row to the training data
        expected = [model.decision_function(Xte[i : i + 1])[0] for i in range(len(Xte))]
    else:  # the row scored as one more row of the training data
        expected = [model.decision_function(np.vstack([Xtr, Xte[i : i + 1]]))[-1]
                    for i in range(len(Xte))]
    np.testing.assert_allclose(full, expected, rtol=1e-12, atol=1e-12)
    perm = np.random.RandomState(1).permutation(len(Xte))
    np.testing.assert_allclose(det.score(Xte[perm]), full[perm], rtol=1e-12)
    np.testing.assert_allclose(det.score(Xte[:3]), full[:3], rtol=1e-12)


def test_row_by_row_scores_still_rank_anomalies(cancer):
    Xtr, Xte, yte = cancer
    for name in ("ECOD", "COPOD"):
        s = PyODAdapter(name).fit(Xtr).score(Xte)
        assert auroc(yte, s) > 0.85, name


# --------------------------------------------------------------------------- persistence
@pytest.mark.parametrize(
    "name,seed", [("IForest", None), ("IForest", 5), ("ECOD", None), ("LODA", 1)]
)
def test_save_load_refits_to_identical_scores(name, seed, cancer, tmp_path):
    Xtr, Xte, _ = cancer
    det = PyODAdapter(name, random_state=seed).fit(Xtr)
    det.save(tmp_path / "d")
    config = json.loads((tmp_path / "d" / "config.json").read_text())
    assert config["params"] == {"model": name, "params": None, "random_state": seed}
    with np.load(tmp_path / "d" / "arrays.npz", allow_pickle=False) as npz:
        np.testing.assert_array_equal(npz["train_"], Xtr)
    back = detectors.load(tmp_path / "d")
    assert isinstance(back, PyODAdapter) and back.seed_ == det.seed_
    np.testing.assert_array_equal(back.score(Xte), det.score(Xte))


def test_unseeded_fits_draw_different_seeds(cancer):
    Xtr, Xte, _ = cancer
    a = PyODAdapter("IForest").fit(Xtr)
    b = PyODAdapter("IForest").fit(Xtr)
    assert a.seed_ != b.seed_
    assert not np.array_equal(a.score(Xte), b.score(Xte))


def test_training_data_is_copied(cancer):
    Xtr, Xte, _ = cancer
    X = Xtr.copy()
    det = PyODAdapter("KNN").fit(X)
    before = det.score(Xte)
    X[:] = 0.0
    np.testing.assert_array_equal(det.score(Xte), before)


# --------------------------------------------------------------------------- errors
def test_missing_pyod_gives_install_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "pyod", None)  # makes `import pyod` fail
    with pytest.raises(MissingDependencyError) as info:
        detectors.create("pyod", model="IForest")
    assert INSTALL_HINT in str(info.value) and 'pip install "oddkit[pyod]"' in str(info.value)
    assert isinstance(info.value, ImportError) and isinstance(info.value, OddkitError)


def test_unknown_model_lists_suggestions():
    with pytest.raises(ParamError, match=r"Did you mean \['IForest'\]") as info:
        PyODAdapter("IForrest")
    assert "Known models" in str(info.value) and "ECOD" in str(info.value)
    with pytest.raises(ParamError, match="no model named 'NoSuchThing'"):
        PyODAdapter("NoSuchThing")


def test_model_names_are_case_insensitive(cancer):
    Xtr, Xte, _ = cancer
    a = PyODAdapter("knn").fit(Xtr).score(Xte)
    b = PyODAdapter("KNN").fit(Xtr).score(Xte)
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"model": "KNN", "params": {"n_neighbours": 3}}, r"no parameter\(s\) \['n_neighbours'\]"),
        ({"model": "KNN", "params": {"n_neighbors": (3,)}}, "plain JSON"),
        ({"model": "KNN", "params": {"metric_params": object()}}, "plain JSON"),
        ({"model": "KNN", "params": [("n_neighbors", 3)]}, "dict"),
        ({"model": "IForest", "params": {"random_state": 3}}, "random_state"),
        ({"model": "XGBOD"}, "supervised"),
        ({"model": "EmbeddingOD"}, r"needs parameter\(s\) \['encoder'\]"),
        ({"model": ""}, "class name"),
        ({"model": "KNN", "random_state": -1}, "random_state"),
    ],
)
def test_bad_params_raise_param_error(kwargs, match):
    with pytest.raises(ParamError, match=match):
        PyODAdapter(**kwargs)


def test_min_fit_rows_follows_neighbours(cancer):
    Xtr, _, _ = cancer
    assert PyODAdapter("KNN").min_fit_rows() == 6  # PyOD's default n_neighbors = 5
    assert PyODAdapter("KNN", params={"n_neighbors": 10}).min_fit_rows() == 11
    assert PyODAdapter("LOF").min_fit_rows() == 21  # PyOD's default n_neighbors = 20
    assert PyODAdapter("IForest").min_fit_rows() == 2
    with pytest.raises(InputError, match="at least 21"):
        PyODAdapter("LOF").fit(Xtr[:20])
    PyODAdapter("LOF").fit(Xtr[:21])


def test_pyod_fit_failure_is_a_typed_error(cancer):
    Xtr, _, _ = cancer
    with pytest.raises(InputError, match="MAD could not be fitted"):
        PyODAdapter("MAD").fit(Xtr)  # PyOD's MAD takes one feature only
    with pytest.raises(InputError, match="could not be fitted"):
        PyODAdapter("KNN", params={"method": "no-such-method"}).fit(Xtr)


def test_non_finite_pyod_scores_are_refused(cancer):
    Xtr, Xte, _ = cancer
    det = PyODAdapter("KNN").fit(Xtr)
    det._pyod.decision_function = lambda X: np.full(X.shape[0], np.nan)
    with pytest.raises(OddkitError, match="NaN/inf score"):
        det.score(Xte)


def test_registry_entry():
    info = {i.name: i for i in detectors.list_detectors()}["pyod"]
    assert info.family == "adapter" and info.inputs == ("features",)
    assert "PyOD" in info.reference and info.randomized
    assert info.defaults == {"model": "IForest", "params": None, "random_state": None}

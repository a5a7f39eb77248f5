"""KNN and LOF (oddkit.detectors.distance) and the neighbour search under them.

Reference implementations on the same inputs: PyOD 3.6.7 ``KNN`` / ``LOF`` and
scikit-learn's ``NearestNeighbors`` / ``LocalOutlierFactor(novelty=True)``.
Data: ADBench cardio and mammography (ADB-dev 70/30 split) from ../shared, and
scikit-learn's bundled breast-cancer and wine sets. Every test runs twice: with the
compiled kernels of the search and with the numpy path used where they are not built.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer, load_wine
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import train_test_split
from sklearn.neighbors import LocalOutlierFactor, NearestNeighbors

from oddkit import detectors
from oddkit.detectors import _neighbors
from oddkit.detectors._neighbors import NeighborIndex
from oddkit.detectors.distance import KNN, LOF
from oddkit.errors import InputError, ParamError

pyod_knn = pytest.importorskip("pyod.models.knn")
pyod_lof = pytest.importorskip("pyod.models.lof")

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
ADBENCH = SHARED / "data" / "adbench" / "classical"


# --------------------------------------------------------------------------- data
def _adb_dev(name: str):
    """ADB-dev protocol split (seed 0) of one ADBench set: Xtr, Xte, yte."""
    path = ADBENCH / f"{name}.npz"
    if not path.is_file():
        pytest.skip(f"{path} not found: ../shared (ADBench data) is absent")
    with np.load(path) as z:
        X, y = z["X"].astype(np.float64), z["y"]
    if X.shape[0] > 10000:
        X, _, y, _ = train_test_split(X, y, train_size=10000, stratify=y, random_state=0)
    Xtr, Xte, _, yte = train_test_split(X, y, test_size=0.3, stratify=y, random_state=0)
    return Xtr, Xte, yte


def _bundled(loader):
    X, y = loader(return_X_y=True)
    X = (X - X.mean(0)) / X.std(0)
    y = (y != np.bincount(y).argmax()).astype(int)  # minority classes = anomalies
    Xtr, Xte, _, yte = train_test_split(X, y, test_size=0.3, stratify=y, random_state=0)
    return Xtr, Xte, yte


DATASETS = {
    "cardio": lambda: _adb_dev("6_cardio"),  # 21 features: GEMM path
    "mammography": lambda: _adb_dev("23_mammography"),  # 6 features, duplicates: kd-tree
    "breast_cancer": lambda: _bundled(load_breast_cancer),
    "wine": lambda: _bundled(load_wine),
}


@pytest.fixture(autouse=True, params=["compiled", "numpy"])
def kernels(request, monkeypatch):
    """Every test runs with the compiled kernels (_knn_native) and with the numpy path."""
    if request.param == "compiled":
        if _neighbors._native is None:
            pytest.skip("compiled kernels not built (no C compiler at install)")
    else:
        monkeypatch.setattr(_neighbors, "_native", None)
    return request.param


@pytest.fixture(scope="module", params=sorted(DATASETS))
def data(request):
    return request.param, DATASETS[request.param]()


def _assert_scores_equal(ours, theirs, y, what):
    np.testing.assert_allclose(ours, theirs, rtol=1e-6, atol=1e-9, err_msg=what)
    # LOF gives many exact ties (score 1 where all densities agree) that rounding noise of
    # 1e-16 would order at random: compare AUROC on scores rounded to 9 decimals.
    auc = [roc_auc_score(y, np.round(s, 9)) for s in (ours, theirs)]
    assert abs(auc[0] - auc[1]) < 1e-6, (what, auc)


# --------------------------------------------------------------------------- agreement
@pytest.mark.parametrize("method", ["largest", "mean", "median"])
def test_knn_equals_pyod(data, method):
    name, (Xtr, Xte, yte) = data
    ours = KNN(method=method).fit(Xtr)
    ref = pyod_knn.KNN(method=method).fit(Xtr)
    _assert_scores_equal(ours.score(Xte), ref.decision_function(Xte), yte, f"{name} test")
    np.testing.assert_allclose(ours.score_training(), ref.decision_scores_, rtol=1e-6, atol=1e-9)


def test_lof_equals_pyod_and_sklearn_novelty(data):
    name, (Xtr, Xte, yte) = data
    ours = LOF().fit(Xtr)
    s = ours.score(Xte)
    ref = pyod_lof.LOF().fit(Xtr)
    _assert_scores_equal(s, ref.decision_function(Xte), yte, f"{name} vs PyOD")
    sk = LocalOutlierFactor(n_neighbors=20, novelty=True).fit(Xtr)
    _assert_scores_equal(s, -sk.score_samples(Xte), yte, f"{name} vs scikit-learn")
    np.testing.assert_allclose(ours.score_training(), -sk.negative_outlier_factor_, rtol=1e-6)


def test_lof_other_k_equals_sklearn(data):
    name, (Xtr, Xte, yte) = data
    for k in (3, 35):
        s = LOF(n_neighbors=k).fit(Xtr).score(Xte)
        sk = LocalOutlierFactor(n_neighbors=k, novelty=True).fit(Xtr)
        _assert_scores_equal(s, -sk.score_samples(Xte), yte, f"{name} k={k}")


@pytest.mark.parametrize("n_features", [4, 21])  # kd-tree and GEMM backends
def test_neighbors_equal_sklearn_brute_force(n_features):
    X, _ = load_breast_cancer(return_X_y=True)
    X = (X - X.mean(0)) / X.std(0)
    Xtr, Xte = X[:400, :n_features], X[400:, :n_features]
    nn = NearestNeighbors(n_neighbors=9, algorithm="brute").fit(Xtr)
    ix = NeighborIndex(Xtr)
    d, i = ix.query(Xte, 9)
    d_ref, i_ref = nn.kneighbors(Xte)
    np.testing.assert_allclose(d, d_ref, rtol=1e-9, atol=1e-7)
    np.testing.assert_array_equal(i, i_ref)
    d, i = ix.query_self(9)
    d_ref, i_ref = nn.kneighbors()
    np.testing.assert_allclose(d, d_ref, rtol=1e-9, atol=1e-7)
    np.testing.assert_array_equal(i, i_ref)
    assert not (i == np.arange(400)[:, None]).any(), "a row is its own neighbour"


# --------------------------------------------------------------------------- duplicates
@pytest.fixture(scope="module")
def dup_data():
    """Breast cancer with copies: 30 rows twice, 10 rows three times (fewer than k+1)."""
    Xtr, Xte, yte = DATASETS["breast_cancer"]()
    rng = np.random.RandomState(0)
    extra = np.concatenate([Xtr[:30], Xtr[30:40], Xtr[30:40]])
    X = np.concatenate([Xtr, extra])[rng.permutation(Xtr.shape[0] + extra.shape[0])]
    return X, Xte, yte


def test_duplicates_agree_with_references(dup_data):
    X, Xte, yte = dup_data
    _assert_scores_equal(
        KNN().fit(X).score(Xte), pyod_knn.KNN().fit(X).decision_function(Xte), yte, "knn"
    )
    np.testing.assert_allclose(
        KNN().fit(X).score_training(), pyod_knn.KNN().fit(X).decision_scores_, atol=1e-6
    )
    sk = LocalOutlierFactor(n_neighbors=20, novelty=True).fit(X)
    lof = LOF().fit(X)
    _assert_scores_equal(lof.score(Xte), -sk.score_samples(Xte), yte, "lof")
    np.testing.assert_allclose(lof.score_training(), -sk.negative_outlier_factor_, rtol=1e-6)


def test_self_query_leaves_out_one_copy_by_index(dup_data):
    X, _, _ = dup_data
    d, i = NeighborIndex(X).query_self(5)
    same = (X[:, None, :] == X[None, :, :]).all(axis=2)
    np.fill_diagonal(same, False)
    copies = same.sum(axis=1)
    assert (copies == 1).sum() == 60 and (copies == 2).sum() == 30
    assert not (i == np.arange(X.shape[0])[:, None]).any(), "a row is its own neighbour"
    for c in (1, 2):
        rows = np.flatnonzero(copies == c)
        np.testing.assert_array_equal(d[rows, :c], 0.0)  # the other copies, at distance 0
        assert (d[rows, c] > 0).all()  # ... and only them
        others = np.array([np.flatnonzero(same[r]) for r in rows])  # ascending
        np.testing.assert_array_equal(i[rows, :c], others)
    # identical rows get identical neighbour distances and LOF states
    first = (X[:, None, :] == X[None, :, :]).all(axis=2).argmax(axis=1)
    np.testing.assert_array_equal(d, d[first])
    lof = LOF(n_neighbors=5).fit(X)
    np.testing.assert_array_equal(lof.lrd_, lof.lrd_[first])


def test_many_copies_give_zero_k_distance_and_finite_scores():
    X, _ = load_wine(return_X_y=True)
    X = np.concatenate([X, np.repeat(X[:1], 25, axis=0)])  # 26 copies of row 0 > k + 1
    lof = LOF().fit(X)
    assert lof.k_distance_[0] == 0.0 and lof.lrd_[0] == pytest.approx(1e10)
    s = lof.score(X[:40] + 0.5)
    assert np.isfinite(s).all()
    assert KNN().fit(X).score(X[:1])[0] == 0.0


# --------------------------------------------------------------------------- exactness
def test_chunking_does_not_change_results():
    Xtr, Xte, _ = DATASETS["cardio"]()
    big = NeighborIndex(Xtr)
    tiny = NeighborIndex(Xtr, memory_budget=1)  # one query row per chunk
    assert tiny._rows_per_chunk(5) == 1
    for a, b in zip(big.query(Xte, 5), tiny.query(Xte, 5)):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(big.query_self(20), tiny.query_self(20)):
        np.testing.assert_array_equal(a, b)


def test_exhaustive_fallback_equals_certified_search():
    """The path taken by rows the float32 certificate rejects gives the same answer."""
    Xtr, Xte, _ = DATASETS["cardio"]()
    ix = NeighborIndex(Xtr)
    assert type(ix._backend).__name__ == "_FlatGemm"
    for Q, own in ((Xte[:200], None), (ix.unique[:150], np.arange(150))):
        certified = ix._search(Q, 7, own)
        exhaustive = NeighborIndex(Xtr, memory_budget=1)._search_all(Q, 7, own)
        for a, b in zip(certified, exhaustive):
            np.testing.assert_array_equal(a, b)


def test_float32_overflow_falls_back_to_exact_search():
    """Queries too large for float32 squares: the GEMM certificate fails, the float64
    exhaustive search answers, and the neighbours still equal scikit-learn's."""
    Xtr, Xte, _ = DATASETS["cardio"]()
    Q = np.concatenate([Xte[:5], Xte[5:10] * 1e40])  # beyond float32: inf and NaN there
    ix = NeighborIndex(Xtr)
    assert type(ix._backend).__name__ == "_FlatGemm"
    d, i = ix.query(Q, 5)
    d_ref, i_ref = NearestNeighbors(n_neighbors=5, algorithm="brute").fit(Xtr).kneighbors(Q)
    np.testing.assert_allclose(d, d_ref, rtol=1e-9)
    np.testing.assert_array_equal(i[:5], i_ref[:5])
    assert np.isfinite(d).all()


@pytest.mark.parametrize("backend", ["kdtree", "gemm"])
def test_ties_broken_by_lower_index_on_a_grid(backend, monkeypatch):
    """Integer grid: many exactly tied distances; the k-th tie goes to the lower row index."""
    if backend == "gemm":
        monkeypatch.setattr(_neighbors, "KDTREE_MAX_DIM", 0)
        monkeypatch.setattr(_neighbors, "PROBE_MAX_DIM", 0)
    g = np.arange(6.0)
    Xtr = np.stack(np.meshgrid(g, g, g, g, g, indexing="ij"), -1).reshape(-1, 5)  # 7776 x 5
    Xq = np.array([[2.0, 2.0, 2.0, 2.0, 2.0], [0.5, 0.0, 0.0, 0.0, 0.0]])
    ix = NeighborIndex(Xtr)
    assert type(ix._backend).__name__ == {"kdtree": "_KDTree", "gemm": "_FlatGemm"}[backend]
    d, i = ix.query(Xq, 4)
    sq = ((Xq[:, None, :] - Xtr[None]) ** 2).sum(-1)
    ref = np.lexsort((np.broadcast_to(np.arange(len(Xtr)), sq.shape), sq), axis=1)[:, :4]
    np.testing.assert_array_equal(i, ref)
    np.testing.assert_array_equal(d, np.sqrt(np.take_along_axis(sq, ref, 1)))


def test_rows_scored_alone_equal_rows_in_a_batch():
    Xtr, Xte, _ = DATASETS["cardio"]()
    for det in (KNN().fit(Xtr), LOF().fit(Xtr)):
        full = det.score(Xte)
        alone = np.array([det.score(Xte[j : j + 1])[0] for j in range(0, Xte.shape[0], 37)])
        np.testing.assert_array_equal(alone, full[::37])


def test_threads_do_not_change_results():
    Xtr, Xte, _ = DATASETS["cardio"]()
    shift = np.repeat(np.arange(4.0), Xtr.shape[0])[:, None]
    ix = NeighborIndex(np.tile(Xtr, (4, 1)) + shift)  # 5,104 rows: work above SMALL_WORK
    Q = np.tile(Xte, (4, 1)) + 0.01
    before = _neighbors._num_threads
    try:
        _neighbors.set_num_threads(1)
        one = ix.query(Q, 5)
        _neighbors.set_num_threads(2)
        two = ix.query(Q, 5)
    finally:
        _neighbors.set_num_threads(before)
    np.testing.assert_array_equal(one[0], two[0])
    np.testing.assert_array_equal(one[1], two[1])
    with pytest.raises(ParamError):
        _neighbors.set_num_threads(0)


def test_hnsw_is_close_to_exact():
    Xtr, Xte, yte = DATASETS["cardio"]()
    exact = KNN().fit(Xtr).score(Xte)
    approx = KNN(index="hnsw").fit(Xtr).score(Xte)
    assert (approx >= exact - 1e-12).all()  # approximate neighbours are never closer
    assert np.mean(np.isclose(approx, exact, rtol=1e-9)) > 0.95
    assert abs(roc_auc_score(yte, approx) - roc_auc_score(yte, exact)) < 0.01


# --------------------------------------------------------------------------- behaviour
def test_constant_column_changes_nothing_for_training_rows():
    Xtr, Xte, _ = DATASETS["wine"]()
    add = lambda X, v: np.column_stack([X, np.full(X.shape[0], v)])
    for cls in (KNN, LOF):
        base = cls().fit(Xtr).score(Xte)
        np.testing.assert_allclose(cls().fit(add(Xtr, 3.0)).score(add(Xte, 3.0)), base, rtol=1e-12)
        shifted = cls().fit(add(Xtr, 3.0)).score(add(Xte, 5.0))
        assert np.isfinite(shifted).all()
    # for KNN the shift adds exactly 2 in quadrature
    s = KNN().fit(add(Xtr, 3.0)).score(add(Xte, 5.0))
    np.testing.assert_allclose(s, np.sqrt(KNN().fit(Xtr).score(Xte) ** 2 + 4.0), rtol=1e-12)


def test_too_few_rows_and_bad_params_are_typed_errors():
    X = load_wine(return_X_y=True)[0]
    with pytest.raises(InputError, match="at least 6"):
        KNN().fit(X[:5])
    with pytest.raises(InputError, match="at least 21"):
        LOF().fit(X[:20])
    LOF().fit(X[:21])  # exactly enough
    ix = NeighborIndex(X[:10])
    with pytest.raises(InputError, match="only 10 training rows"):
        ix.query(X[:2], 11)
    with pytest.raises(InputError, match="only 9 other"):
        ix.query_self(10)
    with pytest.raises(ParamError):
        KNN(method="max")
    with pytest.raises(ParamError):
        KNN(n_neighbors=0)
    with pytest.raises(ParamError):
        LOF(index="ivf")
    with pytest.raises(ParamError):
        NeighborIndex(X, index="ivf")


def test_registry_entries():
    infos = {i.name: i for i in detectors.list_detectors()}
    assert infos["knn"].family == infos["lof"].family == "distance"
    assert infos["knn"].defaults == {"n_neighbors": 5, "method": "largest", "index": "flat"}
    assert infos["lof"].defaults == {"n_neighbors": 20, "index": "flat"}
    assert "Ramaswamy" in infos["knn"].reference and "Breunig" in infos["lof"].reference


def test_save_load_with_duplicates(dup_data, tmp_path):
    X, Xte, _ = dup_data
    det = LOF(n_neighbors=7).fit(X)
    det.save(tmp_path / "lof")
    back = detectors.load(tmp_path / "lof")
    np.testing.assert_array_equal(back.score(Xte), det.score(Xte))
    np.testing.assert_array_equal(back.score_training(), det.score_training())

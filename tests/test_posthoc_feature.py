"""Feature-space post-hoc OOD detectors (oddkit.detectors.posthoc.feature).

Data: ``helpers.digits_posthoc()``, a real small classifier (an MLP with 64 ReLU units
trained on scikit-learn's bundled digits 0-4; digits 5-9 are OOD). Five of its 64 units
are dead on the training rows, so its covariances are singular: the pseudo-inverse path
is exercised by every Mahalanobis/RMDS test that uses all 64 features.

References, on the same features/head/labels:

* pytorch-ood 0.4.0 ``Mahalanobis``, ``RMD``, ``KNN``, ``ViM`` and ``fDBD`` through their
  feature-level ``fit_features`` / ``predict_features``. Its Mahalanobis/RMD use the
  un-normalised scatter matrix plus a ``1e-6`` ridge (the papers use the covariance), so
  they are compared on the 59 live units (full rank) after rescaling, with and without
  their ridge. Its ViM and fDBD compute in float32.
* scikit-learn: ``EmpiricalCovariance.mahalanobis`` (the papers' covariance, ``pinvh``
  precision), ``StandardScaler`` + ``PCA`` (NECO's released code), ``NearestNeighbors``.
* hand-written float64 formulas from the papers (ViM, Residual, fDBD).
"""

from __future__ import annotations

import numpy as np
import pytest
from helpers import digits_posthoc, fit_both_precisions, pytorch_ood_detector
from scipy.special import logsumexp
from sklearn.covariance import EmpiricalCovariance
from sklearn.decomposition import PCA
from sklearn.metrics import roc_auc_score
from sklearn.neighbors import NearestNeighbors
from sklearn.preprocessing import StandardScaler

from oddkit import detectors
from oddkit.detectors._neighbors import NeighborIndex
from oddkit.detectors.base import l2_normalise_rows
from oddkit.detectors.posthoc import feature
from oddkit.errors import InputError, ParamError

NAMES = ["mahalanobis", "rmds", "knn_ood", "vim", "residual", "neco", "fdbd"]


# --------------------------------------------------------------------------- data
@pytest.fixture(scope="module")
def digits():
    d = digits_posthoc()
    return {**d, "live": d["Ftr"].std(axis=0) > 0}


def _fit(name: str, d: dict, X: np.ndarray | None = None, y=None, head=None, **params):
    det = detectors.create(name, **params)
    X = d["Ftr"] if X is None else X
    labels = (d["ytr"] if y is None else y) if "labels" in det.inputs else None
    return det.fit(X, labels, head=d["head"] if head is None else head)


def _live(d: dict):
    """Training/test features and head restricted to the units alive in training (full rank)."""
    live = d["live"]
    return d["Ftr"][:, live], d["test"][:, live], (d["W"][:, live], d["b"])


def _auroc(d: dict, scores: np.ndarray) -> float:
    return roc_auc_score(d["is_ood"], scores)


# --------------------------------------------------------------------------- pytorch-ood
_pood = pytorch_ood_detector


@pytest.fixture
def torch64():
    """torch with float64 as default dtype (pytorch-ood allocates its statistics with it)."""
    torch = pytest.importorskip("torch")
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield torch
    torch.set_default_dtype(old)


def _drop_ridge(torch, cov):
    """pytorch-ood's precision without the 1e-6 ridge it adds to the scatter matrix."""
    return torch.linalg.inv(cov - 1e-6 * torch.eye(cov.shape[0]))


# --------------------------------------------------------------------------- parity
def test_mahalanobis_equals_pytorch_ood(digits, torch64):
    torch = torch64
    Ftr, Fte, head = _live(digits)
    n = Ftr.shape[0]
    ours = _fit("mahalanobis", digits, Ftr, head=head).score(Fte)
    ref = _pood("mahalanobis").Mahalanobis(None)
    ref.fit_features(torch.from_numpy(Ftr), torch.from_numpy(digits["ytr"]))
    theirs = ref.predict_features(torch.from_numpy(Fte)).numpy()
    # pytorch-ood: half the squared distance under the scatter matrix n * Sigma (+ 1e-6 I)
    np.testing.assert_allclose(ours, 2 * n * theirs, rtol=1e-4)
    assert abs(_auroc(digits, ours) - _auroc(digits, theirs)) < 1e-4
    ref.precision = _drop_ridge(torch, ref.cov)
    theirs = ref.predict_features(torch.from_numpy(Fte)).numpy()
    np.testing.assert_allclose(ours, 2 * n * theirs, rtol=1e-9)


def test_rmds_equals_pytorch_ood(digits, torch64):
    torch = torch64
    Ftr, Fte, head = _live(digits)
    n = Ftr.shape[0]
    ours = _fit("rmds", digits, Ftr, head=head).score(Fte)
    ref = _pood("rmd").RMD(None)
    ref.fit_features(torch.from_numpy(Ftr), torch.from_numpy(digits["ytr"]))
    theirs = n * ref.predict_features(torch.from_numpy(Fte)).numpy()
    scale = np.abs(ours).max()  # RMD crosses zero: compare on the scores' scale
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-4 * scale)
    assert abs(_auroc(digits, ours) - _auroc(digits, theirs)) < 1e-4
    ref.precision = _drop_ridge(torch, ref.cov)
    ref.background_precision = _drop_ridge(torch, ref.background_cov)
    theirs = n * ref.predict_features(torch.from_numpy(Fte)).numpy()
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-10 * scale)


def _sklearn_class_sq_dists(Ftr, ytr, X):
    """Squared Mahalanobis distances to each class mean with scikit-learn's tied covariance."""
    classes = np.unique(ytr)
    means = np.stack([Ftr[ytr == c].mean(axis=0) for c in classes])
    cov = EmpiricalCovariance(assume_centered=True).fit(Ftr - means[ytr])
    return np.stack([cov.mahalanobis(X - m) for m in means], axis=1)


def test_mahalanobis_equals_sklearn_on_singular_covariance(digits):
    assert (~digits["live"]).sum() > 0  # dead units: the covariance is singular
    det = _fit("mahalanobis", digits)
    ref = _sklearn_class_sq_dists(digits["Ftr"], digits["ytr"], digits["test"]).min(axis=1)
    np.testing.assert_allclose(det.score(digits["test"]), ref, rtol=1e-9)


def test_rmds_equals_sklearn_on_singular_covariance(digits):
    Ftr, X = digits["Ftr"], digits["test"]
    background = EmpiricalCovariance().fit(Ftr).mahalanobis(X)
    ref = _sklearn_class_sq_dists(Ftr, digits["ytr"], X).min(axis=1) - background
    ours = _fit("rmds", digits).score(X)
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-9 * np.abs(ref).max())


def test_rmds_low_rank_background_and_its_fallback_equal_sklearn(digits):
    """The background distance as the class whitening's minus a rank-C term (Woodbury)
    is used when the between-class scatter lies in the span of the within-class
    covariance; a unit constant within every class but not across classes breaks that,
    and the background pseudo-inverse is used instead. Both equal scikit-learn's."""
    Ftr, ytr, X = digits["Ftr"].copy(), digits["ytr"], digits["test"].copy()
    det = _fit("rmds", digits)
    assert det._prepared()[2]  # low-rank path on the digits features (dead units included)
    Ftr[:, 0] = ytr  # within-class variance 0, between-class variance > 0
    X[:, 0] = np.random.RandomState(0).randint(0, 5, len(X))
    det = _fit("rmds", digits, Ftr)
    assert not det._prepared()[2]
    background = EmpiricalCovariance().fit(Ftr).mahalanobis(X)
    ref = _sklearn_class_sq_dists(Ftr, ytr, X).min(axis=1) - background
    np.testing.assert_allclose(det.score(X), ref, rtol=0, atol=1e-9 * np.abs(ref).max())


@pytest.mark.parametrize("k", [50, 5])
def test_knn_equals_pytorch_ood_and_sklearn(digits, k):
    torch = pytest.importorskip("torch")
    Ftr, X = digits["Ftr"], digits["test"]
    ours = _fit("knn_ood", digits, k=k).score(X)
    ref = _pood("knn").KNN(None, k=k)
    ref.fit_features(torch.from_numpy(Ftr), torch.from_numpy(digits["ytr"]))
    theirs = ref.predict_features(torch.from_numpy(X)).numpy()
    np.testing.assert_allclose(ours, theirs, rtol=1e-10)
    assert abs(_auroc(digits, ours) - _auroc(digits, theirs)) < 1e-4
    unit = lambda A: A / np.linalg.norm(A, axis=1, keepdims=True)
    dist, _ = NearestNeighbors(n_neighbors=k).fit(unit(Ftr)).kneighbors(unit(X))
    np.testing.assert_allclose(ours, dist[:, -1], rtol=1e-10)


# --------------------------------------------------------------------------- KNN search
def _exact_kth(train: np.ndarray, X: np.ndarray, k: int) -> np.ndarray:
    """k-th distance from the exact index's full neighbour lists (the reference)."""
    unit = l2_normalise_rows
    dist, _ = NeighborIndex(unit(np.asarray(train, float))).query(unit(np.asarray(X, float)), k)
    return dist[:, -1]


def _head(width: int):
    rng = np.random.RandomState(0)
    return rng.normal(size=(3, width)), np.zeros(3)


@pytest.mark.parametrize("k", [1, 7, 50])
def test_knn_search_is_bit_identical_to_the_exact_index(digits, k):
    X = digits["test"]
    ours = _fit("knn_ood", digits, k=k).score(X)
    np.testing.assert_array_equal(ours, _exact_kth(digits["Ftr"], X, k))


@pytest.mark.parametrize("k", [1, 3, 60])
def test_knn_search_with_duplicate_rows_and_tied_distances(digits, k):
    """Coarse values give many exactly tied distances; copied rows fill several slots."""
    base = np.round(digits["Ftr"][:300] * 2) / 2
    base = base[np.linalg.norm(base, axis=1) > 0]
    train = np.vstack([base, base[:100], base[:20]])
    X = np.vstack([base[:50], np.round(digits["test"][:200] * 2) / 2])  # some equal training rows
    ours = _fit("knn_ood", digits, train, k=k).score(X)
    np.testing.assert_array_equal(ours, _exact_kth(train, X, k))


def test_knn_rows_the_certificate_cannot_settle_are_answered_exactly():
    """16 training rows at exactly the same distance from the query: the k-th lies in the
    tie, so the float32 certificate fails and the exact search answers."""
    d = 16
    train = np.vstack([np.eye(d), -np.eye(d), np.ones((1, d))])
    X = np.vstack([np.ones(d), np.random.RandomState(1).normal(size=d)])
    det = detectors.create("knn_ood", k=4).fit(train, head=_head(d))
    ours = det.score(X)
    np.testing.assert_array_equal(ours, _exact_kth(train, X, 4))
    assert ours[0] == pytest.approx(np.sqrt(2 - 2 / np.sqrt(d)), rel=1e-12)


def test_knn_near_ties_below_float32_resolution_are_resolved_exactly():
    """20 training rows whose distances to the query differ by ~1e-10 (float32 sees one
    value), stored farthest first: the float32 selection keeps the wrong ones, the
    certificate must notice, and the exact search gives the true 4th distance."""
    d = 24
    theta = 0.5 + 1e-10 * np.arange(20, 0, -1)  # column 0 is the farthest
    near = np.zeros((20, d))
    near[:, 0] = np.cos(theta)
    near[np.arange(20), np.arange(1, 21)] = np.sin(theta)
    train = np.vstack([near, -np.eye(d)])
    q = np.eye(d)[:1]
    det = detectors.create("knn_ood", k=4).fit(train, head=_head(d))
    ours = det.score(q)
    np.testing.assert_array_equal(ours, _exact_kth(train, q, 4))
    assert ours[0] == pytest.approx(2 * np.sin((0.5 + 4e-10) / 2), rel=1e-12)  # the 4th nearest


def test_knn_search_over_threads_and_chunks(digits, monkeypatch):
    """Many small chunks on the thread pool give the single-thread, one-chunk result."""
    from oddkit.detectors import _neighbors

    X = np.vstack([digits["test"]] * 3)
    det = _fit("knn_ood", digits, k=10)
    whole = det.score(X)
    monkeypatch.setattr(_neighbors, "CHUNK_BYTES", 1)  # chunks of MIN_CHUNK_ROWS rows
    monkeypatch.setattr(_neighbors, "MIN_CHUNK_ROWS", 37)
    det = _fit("knn_ood", digits, k=10)
    assert det._neighbors()._rows_per_chunk(10) == 37
    old = _neighbors.get_num_threads()
    try:
        _neighbors.set_num_threads(2)
        pooled = det.score(X)
        _neighbors.set_num_threads(1)
        single = det.score(X)
    finally:
        _neighbors.set_num_threads(None if old == _neighbors._CPU_COUNT else old)
    np.testing.assert_array_equal(pooled, whole)
    np.testing.assert_array_equal(single, whole)
    rows = [0, 5, len(X) - 1]
    np.testing.assert_array_equal([det.score(X[i : i + 1])[0] for i in rows], whole[rows])


def test_knn_without_compiled_kernels_gives_the_same_distances(digits, monkeypatch):
    """The numpy path sums squares in another order: equal to round-off, not bit for bit."""
    from oddkit.detectors import _neighbors

    ref = _exact_kth(digits["Ftr"], digits["test"], 50)
    monkeypatch.setattr(_neighbors, "_native", None)
    np.testing.assert_allclose(_fit("knn_ood", digits).score(digits["test"]), ref, rtol=1e-12)


def test_knn_with_fewer_training_rows_than_candidates(digits):
    """k + margin >= training rows: every row is a candidate (no selection, no certificate)."""
    Ftr, X = digits["Ftr"][:30], digits["test"][:100]
    ours = _fit("knn_ood", digits, Ftr, k=25).score(X)
    np.testing.assert_array_equal(ours, _exact_kth(Ftr, X, 25))


def _vim_reference(Ftr, X, W, b, D):
    """ViM from the paper in float64: origin -W^+ b, eigh of the uncentred covariance."""
    u = -np.linalg.pinv(W) @ b
    cov = EmpiricalCovariance(assume_centered=True).fit(Ftr - u).covariance_
    _, vecs = np.linalg.eigh(cov)  # ascending: the first N - D span the residual space
    NS = vecs[:, : Ftr.shape[1] - D]
    residual = lambda A: np.linalg.norm((A - u) @ NS, axis=1)
    alpha = (Ftr @ W.T + b).max(axis=1).mean() / residual(Ftr).mean()
    return residual(X), alpha * residual(X) - logsumexp(X @ W.T + b, axis=1)


def test_vim_equals_float64_paper_formula(digits):
    W, b = digits["head"]
    res, ref = _vim_reference(digits["Ftr"], digits["test"], W, b, D=32)
    det = _fit("vim", digits)
    assert det.principal_dim_ == 32  # N // 2 for 64-d features
    np.testing.assert_allclose(det.score(digits["test"]), ref, rtol=1e-9)
    np.testing.assert_allclose(_fit("residual", digits).score(digits["test"]), res, rtol=1e-9)


def test_vim_equals_pytorch_ood(digits):
    torch = pytest.importorskip("torch")
    W, b = digits["head"]
    ours = _fit("vim", digits).score(digits["test"])
    ref = _pood("vim").ViM(None, d=32, w=torch.from_numpy(W), b=torch.from_numpy(b))
    ref.fit_features(torch.from_numpy(digits["Ftr"]), torch.from_numpy(digits["ytr"]))
    theirs = ref.predict_features(torch.from_numpy(digits["test"])).numpy()
    # pytorch-ood computes in float32: its eigh resolves the split between the 32nd and
    # 33rd eigenvalue (0.0095 vs 0.0089) to ~1e-4, and alpha ~ 20 scales the residual.
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-2)
    assert abs(ref.alpha - _fit("vim", digits).alpha_) < 1e-5 * ref.alpha
    assert abs(_auroc(digits, ours) - _auroc(digits, theirs)) < 1e-4


@pytest.mark.parametrize("maxlogit", [False, True])
@pytest.mark.parametrize("dim", [None, 20])
def test_neco_equals_sklearn_pipeline_of_the_paper_code(digits, dim, maxlogit):
    Ftr, X = digits["Ftr"], digits["test"]
    W, b = digits["head"]
    ss = StandardScaler().fit(Ftr)
    pca = PCA(Ftr.shape[1]).fit(ss.transform(Ftr))
    Z = ss.transform(X)
    d = 5 if dim is None else dim  # default: the number of classes
    ratio = np.linalg.norm(pca.transform(Z)[:, :d], axis=1) / np.linalg.norm(Z, axis=1)
    if maxlogit:
        ratio *= (X @ W.T + b).max(axis=1)
    ours = _fit("neco", digits, dim=dim, maxlogit=maxlogit).score(X)
    np.testing.assert_allclose(ours, -ratio, rtol=1e-9)


def test_fdbd_equals_pytorch_ood_and_formula(digits):
    torch = pytest.importorskip("torch")
    Ftr, X = digits["Ftr"], digits["test"]
    W, b = digits["head"]
    ours = _fit("fdbd", digits).score(X)
    head = torch.nn.Linear(W.shape[1], W.shape[0])
    with torch.no_grad():
        head.weight.copy_(torch.from_numpy(W))
        head.bias.copy_(torch.from_numpy(b))
    ref = _pood("fdbd").fDBD(None, head).fit_features(torch.from_numpy(Ftr))
    theirs = ref.predict_features(torch.from_numpy(X)).numpy()
    np.testing.assert_allclose(ours, theirs, rtol=1e-5)  # pytorch-ood runs in float32
    assert abs(_auroc(digits, ours) - _auroc(digits, theirs)) < 1e-4
    # float64, straight from the paper: mean over c != pred of |l_p - l_c| / ||w_p - w_c||
    logits = X @ W.T + b
    C = W.shape[0]
    total = np.zeros(len(X))
    for i, p in enumerate(logits.argmax(axis=1)):  # one row at a time: an independent oracle
        for c in range(C):
            if c != p:
                total[i] += abs(logits[i, p] - logits[i, c]) / np.linalg.norm(W[p] - W[c])
    ref64 = -total / (C - 1) / np.linalg.norm(X - Ftr.mean(axis=0), axis=1)
    np.testing.assert_allclose(ours, ref64, rtol=1e-12)


# --------------------------------------------------------------------------- behaviour
@pytest.mark.parametrize("name", NAMES)
def test_direction_ood_scores_higher(digits, name):
    auc = _auroc(digits, _fit(name, digits).score(digits["test"]))
    assert auc > 0.8, f"{name}: AUROC {auc:.4f}"


def test_registry_declarations():
    for name in NAMES:
        cls = detectors.get(name)
        assert cls.family == "posthoc" and cls.reference
        expected = ("features", "head", "labels") if name in ("mahalanobis", "rmds") else ("features", "head")
        assert cls.inputs == expected
    assert detectors.get("knn").family == "distance"  # the tabular kNN keeps its name


@pytest.mark.parametrize(
    "name, params",
    [
        ("knn_ood", {"k": 0}),
        ("knn_ood", {"k": 2.5}),
        ("knn_ood", {"index": "ivf"}),
        ("vim", {"dim": 0}),
        ("vim", {"dim": "auto"}),
        ("residual", {"dim": -3}),
        ("neco", {"dim": 0}),
        ("neco", {"maxlogit": "yes"}),
        ("mahalanobis", {"eps": 0.01}),
        ("fdbd", {"k": 1}),
    ],
)
def test_bad_params(name, params):
    with pytest.raises(ParamError):
        detectors.create(name, **params)


@pytest.mark.parametrize("name", ["vim", "residual", "neco"])
def test_subspace_dim_must_be_below_the_width(digits, name):
    with pytest.raises(ParamError, match="smaller"):
        _fit(name, digits, dim=64)
    assert _fit(name, digits, dim=48).is_fitted


def test_vim_default_dim_rule():
    widths = [1, 64, 512, 767, 768, 1280, 1499, 1500, 2048]
    assert [feature.vim_default_dim(n) for n in widths] == [0, 32, 256, 383, 512, 512, 512, 1000, 1000]


@pytest.mark.parametrize("name", ["mahalanobis", "rmds"])
def test_labels_are_required_and_checked(digits, name):
    det = detectors.create(name)
    X, y, head = digits["Ftr"], digits["ytr"], digits["head"]
    with pytest.raises(InputError, match="labels"):
        det.fit(X, head=head)
    with pytest.raises(InputError, match="shape"):
        det.fit(X, y[:-1], head=head)
    with pytest.raises(InputError, match="integer"):
        det.fit(X, y + 0.5, head=head)
    with pytest.raises(InputError, match="integer"):
        det.fit(X, y.astype(str), head=head)
    with pytest.raises(InputError, match=r"\[0, 5\)"):
        det.fit(X, np.where(y == 4, 5, y), head=head)
    with pytest.raises(InputError, match="no training rows"):
        det.fit(X, np.where(y == 4, 3, y), head=head)
    det.fit(X, y.astype(float), head=head)  # integral floats are accepted
    np.testing.assert_array_equal(det.score(X[:5]), _fit(name, digits).score(X[:5]))


# --------------------------------------------------------------------------- degenerate input
def test_fewer_rows_than_features_gives_finite_scores(digits):
    """15 rows, 64 features: rank-deficient covariances, handled by the pseudo-inverse."""
    y = digits["ytr"]
    rows = np.concatenate([np.flatnonzero(y == c)[:3] for c in range(5)])
    Ftr, ytr = digits["Ftr"][rows], y[rows]
    X = digits["test"]
    maha = _fit("mahalanobis", digits, Ftr, y=ytr).score(X)
    assert np.isfinite(maha).all()
    np.testing.assert_allclose(maha, _sklearn_class_sq_dists(Ftr, ytr, X).min(axis=1), rtol=1e-8)
    rmds = _fit("rmds", digits, Ftr, y=ytr).score(X)
    assert np.isfinite(rmds).all()
    for name in ("fdbd", "neco"):
        assert np.isfinite(_fit(name, digits, Ftr).score(X)).all()
    assert np.isfinite(_fit("knn_ood", digits, Ftr, k=5).score(X)).all()
    for name in ("vim", "residual"):  # 15 rows cannot determine a 32-d principal space
        with pytest.raises(InputError, match="at least 33"):
            _fit(name, digits, Ftr)
        assert np.isfinite(_fit(name, digits, Ftr, dim=8).score(X)).all()


@pytest.mark.parametrize("name", NAMES)
def test_constant_features_give_finite_scores(digits, name):
    Ftr, X = digits["Ftr"].copy(), digits["test"].copy()
    Ftr[:, :10] = 0.5  # constant in training ...
    X[:3, :10] = 9.0  # ... and different at test time
    X[3] = Ftr.mean(axis=0)  # exactly the training mean
    X[4] = 0.0  # an all-zero feature vector
    s = _fit(name, digits, Ftr).score(X)
    assert np.isfinite(s).all()


@pytest.mark.parametrize("name", ["mahalanobis", "rmds", "fdbd", "knn_ood"])
def test_all_constant_features_give_finite_scores(digits, name):
    Ftr = np.full_like(digits["Ftr"], 0.25)
    s = _fit(name, digits, Ftr).score(digits["test"])
    assert np.isfinite(s).all()


@pytest.mark.parametrize("name", ["vim", "residual", "neco"])
def test_all_constant_features_are_a_clear_error(digits, name):
    Ftr = np.full_like(digits["Ftr"], 0.25)
    with pytest.raises(InputError, match="at least"):
        _fit(name, digits, Ftr)


def test_neco_row_at_the_training_mean_is_in_distribution(digits):
    det = _fit("neco", digits)
    np.testing.assert_allclose(det.mean_, digits["Ftr"].mean(axis=0), rtol=1e-13, atol=1e-15)
    s = det.score(np.vstack([det.mean_, digits["test"][:5]]))
    assert s[0] == -1.0  # z = 0 lies in the principal subspace: the largest possible ratio
    assert (s[1:] > -1.0).all()
    # float32 rows: a row equal to the float32-rounded mean is at z = 0 as well
    s32 = det.score(np.vstack([det.mean_, digits["test"][:5]]).astype(np.float32))
    assert s32[0] == -1.0 and (s32[1:] > -1.0).all()


def test_knn_needs_k_rows(digits):
    with pytest.raises(InputError, match="at least 50"):
        _fit("knn_ood", digits, digits["Ftr"][:49])


def test_fdbd_identical_head_rows_are_an_error(digits):
    W, b = digits["head"]
    W = W.copy()
    W[1] = W[0]
    with pytest.raises(InputError, match="identical"):
        _fit("fdbd", digits, head=(W, b))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_vim_rejects_features_without_a_residual(digits, dtype):
    """Rows spanning exactly dim directions around the ViM origin: the principal space is
    all there is, alpha = mean max logit / mean residual is undefined (float32 products
    alone would leave a residual of rounding noise, ~1e-7, and a huge alpha)."""
    W, b = digits["head"]
    u = -np.linalg.pinv(W) @ b
    rng = np.random.RandomState(3)
    basis = np.linalg.qr(rng.normal(size=(64, 32)))[0].T  # 32 orthonormal directions
    X = (u + rng.normal(size=(500, 32)) @ basis).astype(dtype)
    with pytest.raises(InputError, match="no residual"):
        _fit("vim", digits, X)
    assert np.isfinite(_fit("residual", digits, X).score(digits["test"])).all()


def test_vim_rejects_a_head_with_negative_mean_max_logit(digits):
    W, b = digits["head"]
    with pytest.raises(InputError, match="alpha"):
        _fit("vim", digits, head=(W, b - 1e3))


# --------------------------------------------------------------------------- BLAS threads
def _blas_thread_counts():
    threadpoolctl = pytest.importorskip("threadpoolctl")
    return [i["num_threads"] for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas"]


def test_narrow_features_score_on_one_blas_thread_and_restore_it(digits, monkeypatch):
    """64-d features: BLAS on one thread inside fit/score; threads scoring side by side
    leave the setting as it was."""
    import threading

    before = _blas_thread_counts()
    dets = [_fit(name, digits) for name in ("vim", "fdbd", "mahalanobis", "rmds")]
    seen = []
    score = dets[0]._score
    monkeypatch.setattr(dets[0], "_score", lambda X: seen.append(_blas_thread_counts()) or score(X))

    def work(det):
        for _ in range(30):
            det.score(digits["test"])

    threads = [threading.Thread(target=work, args=(det,)) for det in dets]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert seen and all(set(counts) == {1} for counts in seen)
    assert _blas_thread_counts() == before


# --------------------------------------------------------------------------- float32 features
def _scores_match(a: np.ndarray, b: np.ndarray, rtol: float) -> None:
    """Equal to ``rtol`` of each score, or of the largest score where scores cross zero."""
    np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol * np.abs(b).max())


@pytest.mark.parametrize("name", NAMES)
def test_float32_features_give_the_float64_scores(digits, name):
    """Network features arrive as float32 and stay float32 (products in float32): the
    statistics equal the float64 fit of the same values, the scores the float64 scores to
    float32 rounding (~1e-6), the AUROC to 1e-6."""
    det32, det64 = fit_both_precisions(name, digits)
    for key in det64._fitted_names():  # statistics accumulated in float64 either way
        a, b = getattr(det32, key), getattr(det64, key)
        if isinstance(a, np.ndarray) and a.dtype == np.float64:  # (KNN keeps its rows float32)
            np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12 * np.abs(b).max(), err_msg=key)
    X32 = digits["test"].astype(np.float32)
    s32, s64 = det32.score(X32), det64.score(X32.astype(np.float64))
    assert s32.dtype == np.float64 and np.isfinite(s32).all()
    _scores_match(s32, s64, rtol=1e-5)
    assert abs(_auroc(digits, s32) - _auroc(digits, s64)) < 1e-6


@pytest.mark.parametrize("name", NAMES)
def test_float32_scores_are_batch_independent_and_survive_save_load(digits, name, tmp_path):
    det = fit_both_precisions(name, digits)[0]
    X = digits["test"].astype(np.float32)
    full = det.score(X)
    rows = [0, 7, len(X) - 1]
    # float32 products: a lone row or another block may be summed in another order by BLAS
    alone = np.concatenate([det.score(X[i : i + 1]) for i in rows])
    _scores_match(alone, full[rows], rtol=1e-5)
    perm = np.random.RandomState(0).permutation(len(X))
    _scores_match(det.score(X[perm]), full[perm], rtol=1e-5)
    det.save(tmp_path / "det")
    np.testing.assert_array_equal(detectors.load(tmp_path / "det").score(X), full)


@pytest.mark.parametrize("name", ["mahalanobis", "rmds", "vim", "residual", "neco", "fdbd"])
def test_results_do_not_depend_on_threads_or_blocks(digits, name, monkeypatch):
    """Training passes and scoring cut the rows into tasks and blocks, run on the thread
    pool: the same tasks on one or two threads give bit-identical state and scores; other
    task and block sizes give the same statistics up to float64 round-off and the same
    scores up to the float32 product's rounding."""
    from oddkit.detectors import _neighbors

    X = np.vstack([digits["Ftr"]] * 4).astype(np.float32)  # 1,800 rows
    y = np.tile(digits["ytr"], 4)
    Q = digits["test"].astype(np.float32)

    def fit_score(threads: int):
        old = _neighbors.get_num_threads()
        _neighbors.set_num_threads(threads)
        try:
            det = detectors.create(name)
            det.fit(X, y if "labels" in det.inputs else None, head=digits["head"])
            return det, det.score(Q)
        finally:
            _neighbors.set_num_threads(None if old == _neighbors._CPU_COUNT else old)

    default, ref = fit_score(2)
    monkeypatch.setattr(feature, "_TASK_ROWS", 256)  # 8 tasks
    monkeypatch.setattr(feature, "_BLOCK_ROWS", 96)  # 3 blocks per task, the last one short
    one, s1 = fit_score(1)
    two, s2 = fit_score(2)
    np.testing.assert_array_equal(s1, s2)
    for key in one._fitted_names():
        np.testing.assert_array_equal(getattr(one, key), getattr(two, key), err_msg=key)
        if key.endswith(("mean_", "covariance_")) or key == "location_":
            b = getattr(default, key)
            np.testing.assert_allclose(getattr(two, key), b, rtol=0, atol=1e-13 * np.abs(b).max())
    _scores_match(s2, ref, rtol=1e-5)


def test_non_contiguous_features_give_the_same_scores(digits):
    """A column slice (as the Mahalanobis feature ensemble passes) is read in place."""
    wide = np.hstack([digits["Ftr"], digits["Ftr"][:, :7]]).astype(np.float32)
    test = np.hstack([digits["test"], digits["test"][:, :7]]).astype(np.float32)
    for name in NAMES:
        det = detectors.create(name)
        y = digits["ytr"] if "labels" in det.inputs else None
        a = det.fit(wide[:, :64], y, head=digits["head"]).score(test[:, :64])
        b = detectors.create(name).fit(np.ascontiguousarray(wide[:, :64]), y, head=digits["head"])
        np.testing.assert_array_equal(a, b.score(np.ascontiguousarray(test[:, :64])), err_msg=name)


# --------------------------------------------------------------------------- one-pass statistics
def _two_pass(X: np.ndarray, y: np.ndarray, n_classes: int):
    X = np.asarray(X, dtype=np.float64)
    means = np.stack([X[y == c].mean(axis=0) for c in range(n_classes)])
    Z = X - means[y]
    return means, Z.T @ Z / len(X)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_one_pass_class_moments_equal_the_two_pass_formula(dtype):
    """Rows far from the origin (offset 1e4, spread ~1), labels sorted (the stride sample
    then sees every class in turn) and a dead unit: the one-pass statistics equal the
    two-pass ones to float64 round-off, and the dead unit's variance is exactly 0."""
    rng = np.random.RandomState(0)
    n, d, C = 5000, 12, 4
    y = np.sort(rng.randint(0, C, n))
    centres = rng.normal(scale=3.0, size=(C, d))
    X = (1e4 + centres[y] + rng.normal(size=(n, d))).astype(dtype)
    X[:, 3] = dtype(1e4 + 0.25)  # dead unit
    counts, means, cov = feature._class_moments(X, y, C, parallel=False)
    ref_means, ref_cov = _two_pass(X, y, C)
    np.testing.assert_array_equal(counts, np.bincount(y))
    np.testing.assert_allclose(means, ref_means, rtol=1e-14)
    np.testing.assert_allclose(cov, ref_cov, rtol=0, atol=1e-12 * np.abs(ref_cov).max())
    assert (cov[3] == 0).all() and (cov[:, 3] == 0).all()
    mean, total = feature._mean_and_covariance(X, parallel=False)
    ref_mean, ref_total = _two_pass(X, np.zeros(n, int), 1)
    np.testing.assert_allclose(mean, ref_mean[0], rtol=1e-14)
    np.testing.assert_allclose(total, ref_total, rtol=0, atol=1e-12 * np.abs(ref_total).max())
    assert (total[3] == 0).all()


def test_moment_about_the_vim_origin_and_column_mean():
    """float64 statistics of float32 rows (3,001 rows: the last block is short)."""
    rng = np.random.RandomState(1)
    X = rng.gamma(2.0, size=(3001, 16)).astype(np.float32)  # ReLU-like, not a multiple of 64 rows
    u = rng.normal(size=16)
    Z = X.astype(np.float64) - u
    ref = Z.T @ Z / len(X)
    moment = feature._moment_about(X, u, parallel=False)
    np.testing.assert_allclose(moment, ref, rtol=0, atol=1e-13 * np.abs(ref).max())
    exact = X.astype(np.float64).mean(axis=0)
    np.testing.assert_allclose(feature._column_mean(X, parallel=False), exact, rtol=1e-14)


def test_first_argmax_takes_the_first_class_at_the_maximum():
    rng = np.random.RandomState(2)
    for C in (2, 10, 255, 256, 300):
        L = rng.randint(0, 3, size=(C, 400)).astype(np.float64)  # many ties
        np.testing.assert_array_equal(feature._first_argmax(L), L.argmax(axis=0))


def test_fdbd_row_at_the_training_mean_gets_the_floor(digits):
    det = _fit("fdbd", digits)
    assert det.min_distance_ == pytest.approx(1e-12 * np.linalg.norm(det.train_mean_))
    s = det.score(det.train_mean_[None, :])
    W, b = digits["head"]
    logits = det.train_mean_ @ W.T + b
    p = logits.argmax()
    others = [c for c in range(W.shape[0]) if c != p]
    boundary = sum((logits[p] - logits[c]) / np.linalg.norm(W[p] - W[c]) for c in others)
    np.testing.assert_allclose(s, -boundary / len(others) / det.min_distance_, rtol=1e-6)

"""The compiled kernels of the neighbour search (src/oddkit/detectors/_knn_native.c).

Each kernel is checked against a plain numpy reference on inputs made to be hard for it
(ties, NaN, inf, duplicates, rows shorter than the block layout), and the search built
on them against the numpy path it replaces. The whole of tests/test_distance.py also
runs once with the kernels and once without.
"""

from __future__ import annotations

import shutil
import sysconfig

import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer

from oddkit.detectors import _neighbors
from oddkit.detectors._neighbors import NeighborIndex

native = _neighbors._native
needs_native = pytest.mark.skipif(native is None, reason="compiled kernels not built")


def test_kernels_are_built_where_a_compiler_exists():
    """setup.py marks the extension optional; a machine with a C compiler must build it."""
    compiler = (sysconfig.get_config_var("CC") or "cc").split()[0]
    if shutil.which(compiler) is None:
        pytest.skip(f"no C compiler ({compiler}): the numpy path is used")
    assert native is not None, "a C compiler exists but oddkit.detectors._knn_native is missing"


def _reference_smallest(t: np.ndarray, norms: np.ndarray, m: int):
    """Columns of the m smallest of t + norms per row by (value, column); NaN as +inf."""
    v = t + norms
    v = np.where(np.isnan(v), np.inf, v)
    cols = np.broadcast_to(np.arange(v.shape[1]), v.shape)
    order = np.lexsort((cols, v), axis=1)[:, :m]
    return order, np.take_along_axis(v, order, 1).max(axis=1)


@needs_native
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n_cols", [5, 27, 28, 100, 731, 4096])
def test_smallest_equals_a_sort(dtype, n_cols):
    rng = np.random.default_rng(n_cols)
    n_rows, m = 40, min(27, n_cols)
    t = rng.integers(0, 12, (n_rows, n_cols)).astype(dtype)  # many exact ties
    t[1] = rng.standard_normal(n_cols)
    t[2, ::3] = np.nan  # overflowed GEMM values count as +inf
    t[3, :] = np.inf
    t[4, : n_cols // 2] = -np.inf
    norms = rng.integers(0, 3, n_cols).astype(dtype)
    idx = np.empty((n_rows, m), dtype=np.int64)
    kth = np.empty(n_rows, dtype=dtype)
    native.smallest(t, norms, n_rows, n_cols, m, idx, kth, dtype == np.float64)
    ref_idx, ref_kth = _reference_smallest(t, norms, m)
    np.testing.assert_array_equal(np.sort(idx, axis=1), np.sort(ref_idx, axis=1))
    np.testing.assert_array_equal(kth, ref_kth.astype(dtype))


@needs_native
def test_smallest_certificate_property_on_real_scale_data():
    """Every value left out is >= the returned k-th one (what the certificate relies on)."""
    X, _ = load_breast_cancer(return_X_y=True)
    C = (X - X.mean(0)).astype(np.float32)
    t = np.ascontiguousarray(C[:100] @ (-2 * C.T))
    norms = np.einsum("ij,ij->i", C, C).astype(np.float32)
    m = 26
    idx = np.empty((100, m), dtype=np.int64)
    kth = np.empty(100, dtype=np.float32)
    native.smallest(t, norms, 100, C.shape[0], m, idx, kth, False)
    v = t + norms
    left_out = np.ones_like(v, dtype=bool)
    np.put_along_axis(left_out, idx, False, 1)
    assert (np.where(left_out, v, np.inf).min(axis=1) >= kth).all()
    np.testing.assert_array_equal(np.take_along_axis(v, idx, 1).max(axis=1), kth)


@needs_native
def test_kernels_reject_buffers_of_the_wrong_size():
    t = np.zeros((4, 10), dtype=np.float32)
    norms = np.zeros(10, dtype=np.float32)
    idx = np.empty((4, 3), dtype=np.int64)
    kth = np.empty(4, dtype=np.float32)
    with pytest.raises(ValueError, match="buffer"):
        native.smallest(t, norms, 5, 10, 3, idx, kth, False)  # 5 rows claimed, 4 given
    with pytest.raises(ValueError, match="m <= n_cols"):
        native.smallest(t, norms, 4, 10, 11, idx, kth, False)
    Q = np.zeros((2, 3))
    out = [np.empty((2, 2)), np.empty((2, 2), np.int64), np.empty((2, 2), np.int64), np.empty(2)]
    counts = np.ones(4, dtype=np.int64)
    cand = np.zeros((2, 5), dtype=np.int64)
    with pytest.raises(ValueError, match="buffer"):
        native.refine(Q, np.zeros((3, 3)), cand, counts, cand, False, 2, 5, 3, 4, 2, False, *out)


def _data_with_copies():
    X, _ = load_breast_cancer(return_X_y=True)
    X = (X - X.mean(0)) / X.std(0)
    rng = np.random.default_rng(0)
    X = np.concatenate([X, X[:40], X[:15]])[rng.permutation(X.shape[0] + 55)]
    return X[:, :12]


@needs_native
def test_compiled_refine_equals_numpy_refine(monkeypatch):
    """Same groups, copies and slots as the numpy refinement, distances to round-off."""
    X = _data_with_copies()
    ix = NeighborIndex(X)
    rng = np.random.default_rng(1)
    Q = np.concatenate([X[:50] + 0.01, ix.unique[:50]])
    cand = rng.permuted(np.tile(np.arange(ix.n_unique), (100, 1)), axis=1)[:, :30]
    cand[::7, -4:] = -1  # missing candidates
    cand[5, :] = -1  # no candidate at all: short
    for own in (None, np.r_[np.full(50, -1), np.arange(50)]):
        k = 9
        compiled = ix._refine(Q, cand, k, own)
        monkeypatch.setattr(_neighbors, "_native", None)
        plain = ix._refine(Q, cand, k, own)
        monkeypatch.setattr(_neighbors, "_native", native)
        ok = np.isfinite(plain[3])
        np.testing.assert_array_equal(np.isfinite(compiled[3]), ok)
        np.testing.assert_allclose(compiled[0][ok], plain[0][ok], rtol=1e-12)
        np.testing.assert_array_equal(compiled[1][ok], plain[1][ok])
        np.testing.assert_array_equal(compiled[2][ok], plain[2][ok])
        np.testing.assert_allclose(compiled[3][ok], plain[3][ok], rtol=1e-12)


@needs_native
def test_small_integer_data_need_no_exhaustive_search(monkeypatch):
    """Binary features tie everywhere; exact float32 values and the (value, group)
    selection answer every row without the exhaustive fallback, ties to the lower group."""
    rng = np.random.default_rng(0)
    Xtr = (rng.random((3000, 24)) < 0.2).astype(float)
    Xq = (rng.random((300, 24)) < 0.2).astype(float)
    calls = []
    original = NeighborIndex._search_all

    def counted(self, Q, k, own):
        calls.append(Q.shape[0])
        return original(self, Q, k, own)

    monkeypatch.setattr(NeighborIndex, "_search_all", counted)
    ix = NeighborIndex(Xtr)
    assert type(ix._backend).__name__ == "_FlatGemm" and ix._backend.exact
    d, i = ix.query(Xq, 10)
    ds, is_ = ix.query_self(10)
    assert calls == [], f"exhaustive fallback ran for {sum(calls)} rows"
    # copies of a row are reported together, in row order, at their first row's place
    first = (Xtr[:, None, :] == Xtr[None, :, :]).all(axis=2).argmax(axis=1)
    assert (first != np.arange(len(Xtr))).any(), "the test wants duplicate rows"
    for Q, dd, ii, self_query in ((Xq, d, i, False), (Xtr, ds, is_, True)):
        sq = ((Q[:, None, :] - Xtr[None]) ** 2).sum(-1)
        if self_query:
            np.fill_diagonal(sq, np.inf)
        rows = np.broadcast_to(np.arange(len(Xtr)), sq.shape)
        ref = np.lexsort((rows, np.broadcast_to(first, sq.shape), sq), axis=1)[:, :10]
        np.testing.assert_array_equal(ii, ref)
        np.testing.assert_array_equal(dd, np.sqrt(np.take_along_axis(sq, ref, 1)))


@needs_native
def test_non_integer_queries_against_integer_training_rows_are_certified():
    """Exact mode is per query row: other rows still go through the float32 certificate."""
    rng = np.random.default_rng(2)
    Xtr = rng.integers(0, 5, (2500, 20)).astype(float)
    Q = np.concatenate([Xtr[:20] + rng.normal(0, 0.3, (20, 20)), Xtr[20:40]])
    ix = NeighborIndex(Xtr)
    assert ix._backend.exact
    d, i = ix.query(Q, 6)
    sq = ((Q[:, None, :] - Xtr[None]) ** 2).sum(-1)
    ref = np.lexsort((np.broadcast_to(np.arange(len(Xtr)), sq.shape), sq), axis=1)[:, :6]
    np.testing.assert_array_equal(i, ref)
    np.testing.assert_allclose(d, np.sqrt(np.take_along_axis(sq, ref, 1)), rtol=1e-12)

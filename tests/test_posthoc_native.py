"""The compiled kernels of the post-hoc detectors (src/oddkit/detectors/_posthoc_native.c).

The head product is checked against float64 numpy on awkward shapes (row counts that
leave a partial block, every supported head width, one feature), for its finiteness flag
(NaN, inf, overflow) and for row ranges; the training passes (shifted sums and second
moments) against float64 numpy and a plain loop; views read in place; and the detectors
built on both against the numpy / BLAS paths they replace, including the errors for
non-finite input, which the logit detectors now find through the kernel instead of a
scan of their own.
"""

from __future__ import annotations

import shutil
import sysconfig

import numpy as np
import pytest
from helpers import digits_posthoc

from oddkit import detectors
from oddkit.detectors.posthoc import base as posthoc_base
from oddkit.detectors.posthoc import feature
from oddkit.errors import NonFiniteError

native = posthoc_base._posthoc_native
needs_native = pytest.mark.skipif(native is None, reason="compiled head kernel not built")
#: the detectors whose scoring leaves the NaN / inf check to the kernel
DEFERRING = ("msp", "maxlogit", "energy", "entropy", "gen", "klmatching", "gradnorm")
#: every detector whose scoring goes through PosthocDetector._class_logits
THROUGH_KERNEL = (*DEFERRING, "react", "ash_p", "ash_b", "ash_s", "scale", "dice")


def test_kernel_is_built_where_a_compiler_exists():
    """setup.py marks the extension optional; a machine with a C compiler must build it."""
    compiler = (sysconfig.get_config_var("CC") or "cc").split()[0]
    if shutil.which(compiler) is None:
        pytest.skip(f"no C compiler ({compiler}): numpy and BLAS are used")
    assert native is not None, "a C compiler exists but oddkit.detectors._posthoc_native is missing"


def _kernel(X, W, b, scale=None, rows=None):
    """One direct kernel call over ``rows`` (default all): (out, all finite)."""
    n, d = X.shape
    WT = posthoc_base._kernel_layout(W, X.dtype)
    out = np.full((W.shape[0], n), -7.0)  # rows outside the range keep this
    lo, hi = rows or (0, n)
    s = posthoc_base._EMPTY if scale is None else scale
    ok = native.class_logits(
        X, WT, b, s, scale is not None, n, d, d, W.shape[0], lo, hi, X.dtype == np.float64, out
    )
    return out, ok


@needs_native
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("C", [2, 8, 9, 10, 16])
@pytest.mark.parametrize("shape", [(1, 1), (13, 7), (203, 64), (64, 130)])
def test_kernel_equals_float64_product(dtype, C, shape):
    rng = np.random.default_rng(C * 1000 + shape[0])
    n, d = shape
    X = rng.standard_normal((n, d)).astype(dtype)
    W = rng.standard_normal((C, d))
    b = rng.standard_normal(C)
    scale = rng.uniform(0.5, 3.0, n)
    # the product in X's dtype, as BLAS did it: float32 rounding for float32 rows
    tol = 1e-5 if dtype == np.float32 else 1e-12
    Wd = W.astype(dtype).astype(np.float64)
    ref = X.astype(np.float64) @ Wd.T
    for s in (None, scale):
        out, ok = _kernel(X, W, b, s)
        expect = (ref if s is None else ref * s[:, None]) + b
        assert ok
        np.testing.assert_allclose(out, expect.T, rtol=tol, atol=tol * np.abs(expect).max())


@needs_native
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_kernel_writes_only_its_rows_and_splits_exactly(dtype):
    """A row range writes only its columns; two halves give the same bits as one call."""
    rng = np.random.default_rng(3)
    X = rng.standard_normal((1001, 64)).astype(dtype)
    W, b = rng.standard_normal((10, 64)), rng.standard_normal(10)
    whole, _ = _kernel(X, W, b)
    part, _ = _kernel(X, W, b, rows=(300, 777))
    assert (part[:, :300] == -7.0).all() and (part[:, 777:] == -7.0).all()
    np.testing.assert_array_equal(part[:, 300:777], whole[:, 300:777])


@needs_native
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_kernel_flags_any_non_finite_value(dtype, bad):
    rng = np.random.default_rng(4)
    X = rng.standard_normal((77, 9)).astype(dtype)
    W, b = rng.standard_normal((10, 9)), rng.standard_normal(10)
    W[:, 4] = 0.0  # inf * 0 is NaN: still flagged
    for r, c in ((0, 0), (76, 8), (40, 4)):
        Y = X.copy()
        Y[r, c] = bad
        out, ok = _kernel(Y, W, b)
        assert not ok
        assert not np.isfinite(out[:, r]).any()  # the whole row's logits
        assert np.isfinite(np.delete(out, r, axis=1)).all()


@needs_native
def test_kernel_flags_overflow_of_finite_rows():
    X = np.full((5, 4), 1e300)
    W = np.full((3, 4), 1e10)
    _, ok = _kernel(X, W, np.zeros(3))
    assert not ok


def test_kernel_layout_pads_whole_vectors():
    W = np.arange(30.0).reshape(10, 3)
    assert posthoc_base._kernel_layout(W, np.dtype(np.float32)).shape == (3, 16)
    assert posthoc_base._kernel_layout(W, np.dtype(np.float64)).shape == (3, 16)
    W7 = np.ones((7, 3))
    assert posthoc_base._kernel_layout(W7, np.dtype(np.float32)).shape == (3, 16)
    assert posthoc_base._kernel_layout(W7, np.dtype(np.float64)).shape == (3, 8)
    WT = posthoc_base._kernel_layout(W, np.dtype(np.float32))
    np.testing.assert_array_equal(WT[:, :10], W.T)
    assert (WT[:, 10:] == 0).all()


# --------------------------------------------------------------------------- detectors
@pytest.fixture(scope="module")
def digits():
    return digits_posthoc()


def _scores(name, d, X):
    det = detectors.create(name)
    det.fit(d["Ftr"], d["ytr"] if "labels" in det.inputs else None, head=(d["W"], d["b"]))
    return det.score(X)


@needs_native
@pytest.mark.parametrize("name", THROUGH_KERNEL)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_detectors_agree_with_the_blas_path(name, dtype, digits, monkeypatch):
    X = np.ascontiguousarray(digits["test"], dtype=dtype)
    d = dict(digits, Ftr=np.ascontiguousarray(digits["Ftr"], dtype=dtype))
    with_kernel = _scores(name, d, X)
    monkeypatch.setattr(posthoc_base, "_posthoc_native", None)
    without = _scores(name, d, X)
    tol = 2e-5 if dtype == np.float32 else 1e-10
    np.testing.assert_allclose(with_kernel, without, rtol=tol, atol=tol)


@pytest.mark.parametrize("with_kernel", [True, False])
@pytest.mark.parametrize("name", DEFERRING)
def test_non_finite_rows_are_named_across_chunks(name, with_kernel, digits, monkeypatch):
    """The check the kernel does instead of the scan still names every bad row, by its
    index in the whole input (row 9000 lies in the second scoring chunk)."""
    if with_kernel and native is None:
        pytest.skip("compiled head kernel not built")
    if not with_kernel:
        monkeypatch.setattr(posthoc_base, "_posthoc_native", None)
    det = detectors.create(name)
    det.fit(
        digits["Ftr"],
        digits["ytr"] if "labels" in det.inputs else None,
        head=(digits["W"], digits["b"]),
    )
    X = np.ascontiguousarray(np.tile(digits["test"], (40, 1))[:9500], dtype=np.float32)
    X[9000, 5] = np.nan
    X[17, 0] = np.inf
    with pytest.raises(NonFiniteError, match=r"2 NaN/inf value\(s\) in 2 row\(s\) \(first rows \[17, 9000\]\)"):
        det.score(X)
    assert det.defers_finite_check


# --------------------------------------------------------------------------- training passes
def _reference_sums(X, shifts, labels):
    groups = np.zeros(len(X), dtype=np.int64) if labels is None else labels
    Z = X.astype(np.float64) - shifts[groups]
    sums = np.zeros_like(shifts)
    np.add.at(sums, groups, Z)
    return Z.T @ Z, sums


@needs_native
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("d", [1, 7, 16, 64, 130])
@pytest.mark.parametrize("groups", [1, 3])
def test_shifted_sums_equal_float64_sums(dtype, d, groups):
    rng = np.random.default_rng(d * 10 + groups)
    n = 301  # two blocks of 128 rows and a short one
    X = (rng.standard_normal((n, d)) * 3 + 5).astype(dtype)
    labels = rng.integers(0, groups, n) if groups > 1 else None
    shifts = rng.standard_normal((groups, d))
    S_ref, sums_ref = _reference_sums(X, shifts, labels)
    S, sums = feature._shifted_sums(X, shifts, labels, parallel=False)
    np.testing.assert_allclose(S, S_ref, rtol=1e-12, atol=1e-12 * np.abs(S_ref).max())
    np.testing.assert_allclose(sums, sums_ref, rtol=1e-12, atol=1e-12 * np.abs(sums_ref).max())
    assert (S == S.T).all()
    none, only_sums = feature._shifted_sums(X, shifts, labels, parallel=False, second=False)
    assert none is None
    np.testing.assert_array_equal(only_sums, sums)


@needs_native
def test_shifted_sums_add_rows_in_order():
    """Each entry is a plain float64 sum over the rows in row order (a loop reproduces it
    bit for bit without FMA; with FMA to a rounding per row)."""
    rng = np.random.default_rng(7)
    X = rng.standard_normal((200, 5)).astype(np.float32)
    shifts = rng.standard_normal((1, 5))
    S, sums = feature._shifted_sums(X, shifts, None, parallel=False)
    loop_S, loop_sums = np.zeros((5, 5)), np.zeros(5)
    for x in X.astype(np.float64):
        z = x - shifts[0]
        loop_S += np.outer(z, z)
        loop_sums += z
    np.testing.assert_array_equal(sums[0], loop_sums)
    np.testing.assert_allclose(S, loop_S, rtol=1e-14, atol=1e-13)


@needs_native
def test_shifted_sums_reject_bad_labels():
    X = np.ones((4, 3))
    with pytest.raises(ValueError, match="label 5 of row 2"):
        feature._shifted_sums(X, np.zeros((2, 3)), np.array([0, 1, 5, 0]), parallel=False)


@pytest.mark.parametrize(
    "make, readable",
    [
        (lambda A: A, True),
        (lambda A: A[:, :5], True),  # a column slice: rows ld = 9 apart
        (lambda A: A[:, 2:7], True),
        (lambda A: A[::2], True),  # every other row
        (lambda A: np.asfortranarray(A), False),
        (lambda A: A[::-1], False),
        (lambda A: A[:, ::2], False),
        (lambda A: A.astype(np.float16), False),
    ],
)
def test_row_span_reads_views_in_place(make, readable):
    A = np.arange(8 * 9, dtype=np.float64).reshape(8, 9)
    X = make(A)
    got = posthoc_base.row_span(X)
    assert (got is not None) == readable
    if got is not None:
        span, ld = got
        rows = np.stack([span[i * ld : i * ld + X.shape[1]] for i in range(X.shape[0])])
        np.testing.assert_array_equal(rows, X)


FEATURE_DETECTORS = ("mahalanobis", "rmds", "vim", "residual", "neco", "fdbd")


@needs_native
@pytest.mark.parametrize("name", FEATURE_DETECTORS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_feature_detectors_fit_the_same_with_and_without_the_kernel(name, dtype, digits, monkeypatch):
    Xtr = np.ascontiguousarray(digits["Ftr"], dtype=dtype)
    X = np.ascontiguousarray(digits["test"], dtype=dtype)

    def fitted():
        det = detectors.create(name)
        det.fit(Xtr, digits["ytr"] if "labels" in det.inputs else None, head=(digits["W"], digits["b"]))
        return det

    a = fitted()
    monkeypatch.setattr(feature, "_posthoc_native", None)
    b = fitted()
    for key in a._fitted_names():
        va, vb = np.asarray(getattr(a, key)), np.asarray(getattr(b, key))
        if key.endswith(_BASES):  # eigenvectors: compare what they span, not their signs
            va, vb = va @ va.T, vb @ vb.T
        elif key == "white_means_":  # in the whitener's coordinates
            continue
        if va.dtype.kind == "f":
            scale = max(float(np.abs(vb).max()) if vb.size else 1.0, 1.0)
            np.testing.assert_allclose(va, vb, rtol=1e-8, atol=1e-9 * scale, err_msg=key)
        else:
            np.testing.assert_array_equal(va, vb, err_msg=key)
    sa, sb = a.score(X), b.score(X)
    np.testing.assert_allclose(sa, sb, rtol=0, atol=2e-6 * np.abs(sb).max())


#: fitted eigenvector bases (a degenerate eigenvalue leaves their rotation free)
_BASES = ("basis_", "whitener_", "components_")

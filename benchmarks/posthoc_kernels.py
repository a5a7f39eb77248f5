"""The compiled post-hoc kernels (``oddkit.detectors._posthoc_native``) against the numpy /
BLAS paths they replace, on the same inputs, side by side in one run.

* **Head product** (``PosthocDetector._class_logits`` with ``check_input=True``, as the
  logit detectors call it): class-major float64 logits of ``--rows`` float32 rows of 64
  features for heads of 10 and 16 classes. Kernel: one pass that also proves the rows
  finite. Numpy path: the NaN scan (``all_finite``), BLAS's float32 product on one thread
  and the transposing float64 pass.
* **Training pass** (``feature._shifted_sums`` as Mahalanobis's fit calls it: rows
  shifted by their class's provisional mean, class sums and the second moment, 10 classes,
  one thread): ``--train-rows`` float32 rows of width 64, 128, 256 and 512. Above
  ``_NATIVE_SUMS_MAX_WIDTH`` (256) oddkit uses BLAS; the kernel is timed there too (the
  limit lifted for the run) to show where the two cross.

* **KNN floor** (``--knn-floor``): the float32 product that an exact k-nearest-neighbour
  search of C10-OOD-local cannot skip, 26,000 query rows against 50,000 training rows of
  64 features, in chunks of 2,048 query rows, BLAS with its default threads, nothing else
  (no selection). Best of 3. This is the lower bound behind the issue's KNN target
  (docs/benchmarks.md): the whole exact search cannot be faster than this product.

Times are the best of ``--repeats`` with the two sides alternating; the features are
random non-negative float32 values (the time does not depend on them). Prints
milliseconds and the ratio numpy / kernel. Needs the kernels built (``pip install .``
with a C compiler).

    python benchmarks/posthoc_kernels.py
    python benchmarks/posthoc_kernels.py --rows 8192 --train-rows 50000 --repeats 30
    python benchmarks/posthoc_kernels.py --knn-floor
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from oddkit.detectors import create
from oddkit.detectors._neighbors import _one_blas_thread
from oddkit.detectors.posthoc import base as posthoc_base
from oddkit.detectors.posthoc import feature


def best_of(sides: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Best wall time (ms) of each side, the sides alternating."""
    times: dict[str, list[float]] = {name: [] for name in sides}
    for r in range(repeats):
        order = list(sides) if r % 2 == 0 else list(reversed(sides))
        for name in order:
            start = time.perf_counter()
            sides[name]()
            times[name].append(time.perf_counter() - start)
    return {name: 1e3 * min(t) for name, t in times.items()}


def head_product(rows: int, repeats: int, rng: np.random.Generator) -> None:
    X = np.maximum(rng.standard_normal((rows, 64)), 0).astype(np.float32)
    print(f"head product: {rows} x 64 float32 rows, class-major float64 logits, one thread")
    print(f"  {'classes':>7}  {'kernel ms':>9}  {'numpy ms':>8}  {'ratio':>5}")
    for C in (10, 16):
        det = create("energy").fit(X[:100], head=(rng.standard_normal((C, 64)), rng.standard_normal(C)))
        kernel = lambda: det._class_logits(X, check_input=True)
        native = posthoc_base._posthoc_native

        def numpy_path() -> object:
            posthoc_base._posthoc_native = None
            try:
                return det._class_logits(X, check_input=True)
            finally:
                posthoc_base._posthoc_native = native

        np.testing.assert_allclose(kernel(), numpy_path(), rtol=1e-5, atol=1e-5)
        t = best_of({"kernel": kernel, "numpy": numpy_path}, repeats)
        print(f"  {C:>7}  {t['kernel']:9.3f}  {t['numpy']:8.3f}  {t['numpy'] / t['kernel']:4.2f}x")


def training_pass(rows: int, repeats: int, rng: np.random.Generator) -> None:
    print(f"training pass: {rows} float32 rows, 10 classes, class sums + second moment, one thread")
    print(f"  {'width':>5}  {'kernel ms':>9}  {'BLAS ms':>8}  {'ratio':>5}  oddkit uses")
    labels = rng.integers(0, 10, rows)
    limit, native = feature._NATIVE_SUMS_MAX_WIDTH, feature._posthoc_native
    for d in (64, 128, 256, 512):
        X = np.maximum(rng.standard_normal((rows, d)), 0).astype(np.float32)
        shifts = feature._provisional_means(X, labels, 10)

        def kernel() -> object:
            feature._NATIVE_SUMS_MAX_WIDTH = 1 << 30
            try:
                return feature._shifted_sums(X, shifts, labels, parallel=False)
            finally:
                feature._NATIVE_SUMS_MAX_WIDTH = limit

        def blas() -> object:
            feature._posthoc_native = None
            try:
                return feature._shifted_sums(X, shifts, labels, parallel=False)
            finally:
                feature._posthoc_native = native

        (S1, s1), (S2, s2) = kernel(), blas()
        np.testing.assert_allclose(S1, S2, rtol=1e-10, atol=1e-10 * np.abs(S2).max())
        t = best_of({"kernel": kernel, "blas": blas}, repeats)
        uses = "kernel" if d <= limit else "BLAS"
        print(f"  {d:>5}  {t['kernel']:9.2f}  {t['blas']:8.2f}  {t['blas'] / t['kernel']:4.2f}x  {uses}")


def knn_floor(rng: np.random.Generator, queries: int = 26_000, train: int = 50_000) -> None:
    Q = rng.random((queries, 64), dtype=np.float32)
    R = np.ascontiguousarray(rng.random((train, 64), dtype=np.float32).T)
    out = np.empty((2048, train), dtype=np.float32)

    def product() -> None:
        for lo in range(0, queries, 2048):
            part = Q[lo : lo + 2048]
            np.matmul(part, R, out=out[: part.shape[0]])

    t = best_of({"product": product}, 3)["product"]
    flops = 2.0 * queries * train * 64
    print(
        f"KNN floor: {queries} x {train} x 64 float32 product, BLAS default threads: "
        f"{t / 1e3:.2f} s ({flops / t / 1e6:.0f} GFLOP/s)"
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=10_000, help="rows of the head product")
    ap.add_argument("--train-rows", type=int, default=20_000, help="rows of the training pass")
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--knn-floor", action="store_true", help="also time the exact KNN product floor")
    args = ap.parse_args(argv)
    if posthoc_base._posthoc_native is None:
        print("oddkit.detectors._posthoc_native is not built (no C compiler at install); nothing to compare.")
        return 1
    rng = np.random.default_rng(args.seed)
    with _one_blas_thread():
        head_product(args.rows, args.repeats, rng)
        training_pass(args.train_rows, max(3, args.repeats // 4), rng)
    if args.knn_floor:
        knn_floor(rng)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""How the recommended default ensemble was chosen: every subset of candidate detectors on ADB-dev.

For each ADB-dev cell (37 sets x seeds 0, 1, 2), each candidate detector is fitted once
on the train part; its scores on the train part (the ensemble's standardisation
statistics) and on the test part are cached under ``--cache``. Then every subset of 2 to
``--max-size`` candidates is combined exactly as ``oddkit.detectors.create("ensemble",
members=subset)`` does (z-score with training statistics, mean) and ranked by mean AUROC
(seeds first, then data sets). Single detectors are printed for comparison.

The choice is made on the same 37 data sets it is reported on, so the winning subset's
number is optimistic; the script also prints a leave-one-data-set-out estimate (choose
the subset on 36 sets, score it on the 37th) that removes that selection bias.

    python benchmarks/ensemble_selection.py                 # about 10 minutes here, cached
"""

from __future__ import annotations

import argparse
import itertools
import sys
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from oddkit import detectors  # noqa: E402
from oddkit.data import load_table  # noqa: E402
from oddkit.detectors.ensemble import DEFAULT_MEMBERS  # noqa: E402
from oddkit.data.splits import adb_dev_split  # noqa: E402
from oddkit.metrics import auroc  # noqa: E402

SHARED = ROOT.parent / "shared" / "data" / "adbench" / "classical"
CANDIDATES = ["iforest", "knn", "lof", "ecod", "copod", "hbos", "pca", "gaussian", "gmm", "ocsvm"]
SEEDS = (0, 1, 2)


def collect(cache: Path, names: list[str]) -> None:
    cache.mkdir(parents=True, exist_ok=True)
    for f in sorted(SHARED.glob("*.npz")):
        table = load_table(f)
        for seed in SEEDS:
            Xtr, Xte, _, yte = adb_dev_split(table.X, table.y, seed)
            for name in names:
                path = cache / f"{f.stem}__{seed}__{name}.npz"
                if path.exists():
                    continue
                params = {"random_state": seed} if detectors.get(name).randomized else {}
                det = detectors.create(name, **params).fit(Xtr)
                np.savez(path, tr=det.score(Xtr), te=det.score(Xte), yte=yte)
        print(f"collected {f.stem}", flush=True)


def load_cache(cache: Path, names: list[str]):
    cells = {}
    for path in cache.glob("*.npz"):
        ds, seed, name = path.stem.split("__")
        if name in names:
            with np.load(path) as d:
                cells[(ds, int(seed), name)] = (d["tr"], d["te"], d["yte"])
    return cells


def per_dataset_auroc(cells, datasets, members) -> np.ndarray:
    """Seed-mean AUROC per data set of the z-score/mean ensemble of ``members``."""
    out = []
    for ds in datasets:
        vals = []
        for seed in SEEDS:
            z = []
            for m in members:
                tr, te, y = cells[(ds, seed, m)]
                c, w = tr.mean(), tr.std()
                z.append((te - c) / (w if w > 1e-12 * max(1.0, abs(c)) else 1.0))
            vals.append(auroc(y, np.mean(z, axis=0)))
        out.append(np.mean(vals))
    return np.asarray(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cache", type=Path, default=ROOT / "oddkit-out" / "ensemble-selection")
    ap.add_argument("--max-size", type=int, default=6)
    ap.add_argument("--top", type=int, default=10)
    args = ap.parse_args()
    if not SHARED.is_dir():
        sys.exit(f"needs {SHARED} (the ADBench sets in ../shared); not found")
    warnings.simplefilter("ignore")
    collect(args.cache, CANDIDATES)
    cells = load_cache(args.cache, CANDIDATES)
    datasets = sorted({k[0] for k in cells})
    print(f"\nsingle detectors (mean AUROC over {len(datasets)} sets, seeds {SEEDS}):")
    for name in CANDIDATES:
        print(f"  {name:10s} {per_dataset_auroc(cells, datasets, [name]).mean():.4f}")
    subsets = [c for r in range(2, args.max_size + 1) for c in itertools.combinations(CANDIDATES, r)]
    table = {c: per_dataset_auroc(cells, datasets, c) for c in subsets}
    ranked = sorted(table, key=lambda c: -table[c].mean())
    print(f"\nbest {args.top} of {len(subsets)} subsets:")
    for c in ranked[: args.top]:
        print(f"  {table[c].mean():.4f}  {', '.join(c)}")
    default = tuple(m["name"] for m in DEFAULT_MEMBERS)
    print(f"\ndefault ensemble ({', '.join(default)}): {per_dataset_auroc(cells, datasets, default).mean():.4f}")
    # leave one data set out: choose on the others, score the held-out one
    held = []
    for i, ds in enumerate(datasets):
        others = [j for j in range(len(datasets)) if j != i]
        best = max(subsets, key=lambda c: table[c][others].mean())
        held.append(table[best][i])
    print(f"leave-one-data-set-out estimate of the selected ensemble: {np.mean(held):.4f}")


if __name__ == "__main__":
    main()

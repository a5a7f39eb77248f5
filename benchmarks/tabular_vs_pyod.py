"""oddkit against PyOD on ADB-dev, side by side in one run.

For each of IForest, ECOD, COPOD, HBOS, KNN, LOF, OCSVM and PCA (both libraries'
defaults), on every ``*.npz`` of ``../shared/data/adbench/classical`` under the ADB-dev
protocol (protocols.md: sets over 10,000 rows cut to 10,000, then a stratified 70/30
split for seeds 0, 1, 2; fit on the train part without labels, score the test part),
prints per detector: mean AUROC of each side and the median over data sets of the time
ratio (PyOD fit+score seconds / oddkit's). Also runs oddkit's recommended default
(``ensemble``) and compares it with the best single PyOD detector of the same run.

Both sides run in this process, one cell after the other, each on the same arrays.
PyOD runs with its defaults (n_jobs=1); oddkit with its defaults (BLAS / FAISS may use
both cores). Times are wall-clock (time.perf_counter).

    python benchmarks/tabular_vs_pyod.py                 # full run (about 15 minutes here)
    python benchmarks/tabular_vs_pyod.py --sets 6_cardio 23_mammography --seeds 0
    python benchmarks/tabular_vs_pyod.py --detectors ecod ecod:aggregation=pyod
    python benchmarks/tabular_vs_pyod.py --scale         # full 16_http and 11_donors

``--scale`` fits kNN, ECOD and the ensemble on 70% of the full ``16_http`` and
``11_donors`` sets (ADB-dev-full, seed 0), scores the other 30%, and prints times and the
peak resident memory of a fresh process per cell.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import resource
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from oddkit import detectors  # noqa: E402
from oddkit.bench.runner import parse_spec  # noqa: E402
from oddkit.data import load_table  # noqa: E402
from oddkit.data.splits import adb_dev_split  # noqa: E402
from oddkit.metrics import aupr_out, auroc  # noqa: E402

SHARED = ROOT.parent / "shared" / "data" / "adbench" / "classical"

# oddkit registry name -> PyOD class path
PAIRS = {
    "iforest": "pyod.models.iforest.IForest",
    "ecod": "pyod.models.ecod.ECOD",
    "copod": "pyod.models.copod.COPOD",
    "hbos": "pyod.models.hbos.HBOS",
    "knn": "pyod.models.knn.KNN",
    "lof": "pyod.models.lof.LOF",
    "ocsvm": "pyod.models.ocsvm.OCSVM",
    "pca": "pyod.models.pca.PCA",
}
RANDOMIZED_PYOD = {"iforest"}


def pyod_model(name: str, seed: int):
    module, cls = PAIRS[name].rsplit(".", 1)
    mod = __import__(module, fromlist=[cls])
    kwargs = {"random_state": seed} if name in RANDOMIZED_PYOD else {}
    return getattr(mod, cls)(**kwargs)


def oddkit_model(spec: str, seed: int):
    """``spec`` is a registry name or ``name:key=value,...`` (the CLI's detector syntax)."""
    parsed = parse_spec(spec)
    params = dict(parsed.params)
    if parsed.randomized:
        params["random_state"] = seed
    return detectors.create(parsed.name, **params)


def pyod_name(spec: str) -> str | None:
    """The PyOD counterpart of an oddkit spec (by registry name), or None."""
    name = parse_spec(spec).name
    return name if name in PAIRS else None


def timed(fit, score, Xtr, Xte):
    t0 = time.perf_counter()
    fit(Xtr)
    t1 = time.perf_counter()
    s = np.asarray(score(Xte), dtype=np.float64)
    t2 = time.perf_counter()
    return s, t1 - t0, t2 - t1


def run_cell(side: str, name: str, seed: int, Xtr, Xte, yte) -> dict:
    if side == "pyod":
        m = pyod_model(pyod_name(name), seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            s, tf, ts = timed(m.fit, m.decision_function, Xtr, Xte)
        s = np.nan_to_num(s, nan=0.0, posinf=np.finfo(float).max, neginf=-np.finfo(float).max)
    else:
        m = oddkit_model(name, seed)
        s, tf, ts = timed(m.fit, m.score, Xtr, Xte)
    return {"auroc": auroc(yte, s), "aupr_out": aupr_out(yte, s), "fit_s": tf, "score_s": ts}


def adb_dev(args) -> dict:
    files = sorted(SHARED.glob("*.npz"))
    if args.sets:
        files = [f for f in files if f.stem in set(args.sets)]
    names = args.detectors
    rows = []
    t_start = time.perf_counter()
    for f in files:
        table = load_table(f)
        for seed in args.seeds:
            Xtr, Xte, _, yte = adb_dev_split(table.X, table.y, seed)
            for name in names:
                for side in ("oddkit", "pyod"):
                    if side == "pyod" and pyod_name(name) is None:
                        continue
                    r = run_cell(side, name, seed, Xtr, Xte, yte)
                    rows.append({"dataset": f.stem, "seed": seed, "detector": name, "side": side, **r})
            done = [r for r in rows if r["dataset"] == f.stem and r["seed"] == seed]
            brief = " ".join(
                f"{r['detector']}:{r['auroc']:.3f}" for r in done if r["side"] == "oddkit"
            )
            print(f"[{time.perf_counter() - t_start:7.1f}s] {f.stem} seed {seed}: {brief}", flush=True)
    return {"rows": rows, "files": [f.name for f in files], "seeds": args.seeds}


def dataset_means(rows, detector, side, key):
    by_ds: dict[str, list[float]] = {}
    for r in rows:
        if r["detector"] == detector and r["side"] == side:
            by_ds.setdefault(r["dataset"], []).append(r[key])
    return {ds: float(np.mean(v)) for ds, v in by_ds.items()}


def summarise(result: dict) -> str:
    rows = result["rows"]
    lines = [
        f"ADB-dev: {len(result['files'])} data sets x seeds {result['seeds']}",
        f"{'detector':22s} {'AUROC oddkit':>12s} {'AUROC PyOD':>11s} {'diff':>7s} "
        f"{'AUPR-Out odk':>12s} {'AUPR-Out PyOD':>13s} {'median time ratio PyOD/oddkit':>30s}",
    ]
    best_pyod = (None, -1.0)
    for name in sorted({r["detector"] for r in rows}):
        a_o = dataset_means(rows, name, "oddkit", "auroc")
        p_o = dataset_means(rows, name, "oddkit", "aupr_out")
        if pyod_name(name) is None:
            lines.append(
                f"{name:22s} {np.mean(list(a_o.values())):12.4f} {'-':>11s} {'':>7s} "
                f"{np.mean(list(p_o.values())):12.4f}"
            )
            continue
        a_p = dataset_means(rows, name, "pyod", "auroc")
        p_p = dataset_means(rows, name, "pyod", "aupr_out")
        t_o = dataset_means([{**r, "t": r["fit_s"] + r["score_s"]} for r in rows], name, "oddkit", "t")
        t_p = dataset_means([{**r, "t": r["fit_s"] + r["score_s"]} for r in rows], name, "pyod", "t")
        ratio = statistics.median(t_p[d] / max(t_o[d], 1e-9) for d in t_o)
        mo, mp_ = np.mean(list(a_o.values())), np.mean(list(a_p.values()))
        if mp_ > best_pyod[1]:
            best_pyod = (pyod_name(name), mp_)
        lines.append(
            f"{name:22s} {mo:12.4f} {mp_:11.4f} {mo - mp_:+7.4f} "
            f"{np.mean(list(p_o.values())):12.4f} {np.mean(list(p_p.values())):13.4f} {ratio:30.2f}"
        )
    if best_pyod[0] is not None:
        lines.append(f"best single PyOD detector: {best_pyod[0]} (mean AUROC {best_pyod[1]:.4f})")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- scale
def _scale_cell(args_tuple, queue):
    path, name = args_tuple
    table = load_table(path)
    Xtr, Xte, _, yte = adb_dev_split(table.X, table.y, 0, cap=None)
    m = oddkit_model(name, 0)
    s, tf, ts = timed(m.fit, m.score, Xtr, Xte)
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    queue.put({
        "dataset": Path(path).stem, "detector": name, "n_train": len(Xtr), "n_test": len(Xte),
        "d": Xtr.shape[1], "fit_s": tf, "score_s": ts, "auroc": auroc(yte, s),
        "peak_rss_gib": peak_kib / 2**20,
    })


def scale(args) -> list[dict]:
    out = []
    ctx = mp.get_context("spawn")
    for ds in ("16_http", "11_donors"):
        for name in args.scale_detectors:
            q = ctx.Queue()
            p = ctx.Process(target=_scale_cell, args=((str(SHARED / f"{ds}.npz"), name), q))
            p.start()
            r = q.get()
            p.join()
            out.append(r)
            print(
                f"{r['dataset']:10s} {r['detector']:9s} n_train={r['n_train']:7d} n_test={r['n_test']:7d} "
                f"d={r['d']:3d} fit {r['fit_s']:7.1f}s score {r['score_s']:7.1f}s "
                f"AUROC {r['auroc']:.4f} peak RSS {r['peak_rss_gib']:.2f} GiB",
                flush=True,
            )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sets", nargs="*", help="data set stems (default: all 37)")
    ap.add_argument("--seeds", nargs="*", type=int, default=[0, 1, 2])
    ap.add_argument("--detectors", nargs="*", default=[*PAIRS, "ensemble"])
    ap.add_argument("--scale", action="store_true", help="run the full-size scale check instead")
    ap.add_argument("--scale-detectors", nargs="*", default=["knn", "ecod", "ensemble"])
    ap.add_argument("--out", type=Path, help="write raw results as JSON here")
    args = ap.parse_args()
    if not SHARED.is_dir():
        sys.exit(f"needs {SHARED} (the ADBench sets in ../shared); not found")
    if args.scale:
        result = {"scale": scale(args)}
    else:
        result = adb_dev(args)
        print()
        print(summarise(result))
    if args.out:
        args.out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()

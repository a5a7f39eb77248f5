"""Tuned vs default hyperparameters of the post-hoc detectors on C10-OOD-local.

For every method of ``DEFAULT_GRIDS`` (or ``--methods``): tune on validation data only
(fit on 90% of the CIFAR-10 train features, ID validation = the other 10%, stratified by
class with seed 0; OOD validation = the validation OOD sets of ``oddkit.data.ood_sets``,
made from CIFAR-10 train images and smooth noise), refusing any overlap with the test
features. Then fit the default and the tuned configuration on all 50,000 train features
(the protocol's fit data) and report the mean test AUROC over the protocol's four test OOD
sets (mnist, textures, gaussian, uniform) against the 10,000 CIFAR-10 test images.

Also prints how OOD-like each validation set is for the backbone (MSP AUROC against the
CIFAR-10 test images). Features come from the on-disk cache (``--cache-dir``, default
``~/.cache/oddkit/features``); the validation sets are extracted on first use (about
20 s for ResNet-20 on 2 CPU cores, a few minutes for ResNet-56).

    python benchmarks/tune_posthoc.py --depth 20
    python benchmarks/tune_posthoc.py --depth 56 --methods react,knn_ood,vim
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from oddkit import detectors
from oddkit.data import c10_ood_local
from oddkit.data.ood_sets import VALIDATION_SET_NAMES, c10_validation_ood
from oddkit.detectors.posthoc.tuning import (
    DEFAULT_GRIDS,
    spec_string,
    split_id_validation,
    tune,
)
from oddkit.features import create_backbone, extract
from oddkit.metrics import auroc

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    args = _parse_args()
    shared = Path(args.shared)
    if not (shared / "data" / "cifar10").is_dir():
        print(f"{shared}/data/cifar10 not found; pass --shared", file=sys.stderr)
        return 2
    methods = args.methods.split(",") if args.methods else list(DEFAULT_GRIDS)
    feats, head = _features(shared, args.depth, Path(args.cache_dir).expanduser(), args.val_sets)
    _report_validation_sets(feats, head)
    split = split_id_validation(feats["train"].features, feats["train"].labels, args.holdout, args.seed)
    tests = {"id_test": feats["test"].features, **{n: feats[n].features for n in ("mnist", "textures", "gaussian", "uniform")}}
    ood_val = {n: feats[n].features for n in args.val_sets}
    print(f"\nfit rows {split.X_fit.shape[0]}, ID-val rows {split.X_val.shape[0]}, OOD-val "
          f"{ {n: v.shape[0] for n, v in ood_val.items()} }; test AUROC: fit on all 50,000 train rows\n")  # fmt: skip
    rows = []
    for name in methods:
        t0 = time.perf_counter()
        result = tune(name, split.X_fit, split.y_fit, head, split.X_val, ood_val, test_sets=tests, progress=False)
        default_val = _default_row_value(result)
        train = feats["train"]
        test_default = _test_aurocs(detectors.create(name), train, head, feats)
        test_tuned = _test_aurocs(result.detector(), train, head, feats)
        failed = sum(not p.ok for p in result.table)
        rows.append((name, result, default_val, test_default, test_tuned, failed, time.perf_counter() - t0))
    _print_table(rows, args.depth)
    return 0


def _parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--depth", type=int, default=20, choices=(20, 32, 44, 56))
    p.add_argument("--shared", default=str(ROOT.parent / "shared"))
    p.add_argument("--cache-dir", default="~/.cache/oddkit/features")
    p.add_argument("--methods", default="", help="comma-separated; default: every method of DEFAULT_GRIDS")
    p.add_argument("--val-sets", default=",".join(VALIDATION_SET_NAMES), type=lambda s: s.split(","))
    p.add_argument("--holdout", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args()


def _features(shared: Path, depth: int, cache_dir: Path, val_sets: list[str]) -> tuple[dict, tuple]:
    sources = c10_ood_local(shared)
    backbone = create_backbone(f"cifar_resnet{depth}", weights=shared / "weights" / f"cifar10_resnet{depth}.th")
    named = {"train": sources.train, "test": sources.test, **sources.ood}
    validation = c10_validation_ood(shared)
    named.update({n: validation[n] for n in val_sets})
    out = {}
    for name, source in named.items():
        t0 = time.perf_counter()
        out[name] = extract(backbone, source, cache_dir=cache_dir, progress=False)
        print(f"features {name:15s} {len(source):6d} images, {time.perf_counter() - t0:6.1f} s"
              f"{' (cache)' if out[name].from_cache else ''}", flush=True)  # fmt: skip
    W, b = backbone.head()
    acc = float((out["test"].logits.argmax(1) == out["test"].labels).mean())
    print(f"ResNet-{depth}: CIFAR-10 test accuracy {acc:.4f}")
    return out, (W, b)


def _report_validation_sets(feats: dict, head: tuple) -> None:
    msp = detectors.create("msp").fit(feats["train"].features, head=head)
    s_id = msp.score(feats["test"].features)
    print("\nMSP AUROC vs CIFAR-10 test (how OOD-like each set is for this network):")
    for name in (*VALIDATION_SET_NAMES, "mnist", "textures", "gaussian", "uniform"):
        if name in feats:
            kind = "validation" if name in VALIDATION_SET_NAMES else "test"
            print(f"  {name:15s} ({kind:10s}) {_auroc(s_id, msp.score(feats[name].features)):.4f}")


def _test_aurocs(det, train, head, feats) -> dict[str, float]:
    det.fit(train.features, train.labels if "labels" in det.inputs else None, head=head)
    s_id = det.score(feats["test"].features)
    return {n: _auroc(s_id, det.score(feats[n].features)) for n in ("mnist", "textures", "gaussian", "uniform")}


def _auroc(s_id: np.ndarray, s_ood: np.ndarray) -> float:
    return auroc(np.r_[np.zeros(s_id.size), np.ones(s_ood.size)], np.r_[s_id, s_ood])


def _default_row_value(result) -> float:
    defaults = detectors.get(result.name).default_params()
    for point in result.table:
        if all(defaults.get(k) == v for k, v in point.params.items()):
            return point.value
    return float("nan")


def _print_table(rows: list, depth: int) -> None:
    print(f"C10-OOD-local, ResNet-{depth}: validation AUROC (mean over the OOD-val sets) and test "
          "AUROC (mean over mnist, textures, gaussian, uniform)")  # fmt: skip
    head = (f"{'method':9s} {'default':24s} {'tuned':28s} {'val def':>8s} {'val tun':>8s} "
            f"{'test def':>8s} {'test tun':>8s} {'delta':>7s} {'failed':>7s} {'sec':>5s}")  # fmt: skip
    print(head)
    print("-" * len(head))
    deltas = []
    for name, result, default_val, t_def, t_tun, failed, sec in rows:
        m_def, m_tun = float(np.mean(list(t_def.values()))), float(np.mean(list(t_tun.values())))
        deltas.append(m_tun - m_def)
        default_spec = spec_string(name, {k: detectors.get(name).default_params()[k] for k in result.params})
        print(f"{name:9s} {default_spec[len(name) + 1:]:24s} {result.spec[len(name) + 1:]:28s} "
              f"{default_val:8.4f} {result.value:8.4f} {m_def:8.4f} {m_tun:8.4f} {m_tun - m_def:+7.4f} "
              f"{failed:3d}/{len(result.table):<3d} {sec:5.1f}")  # fmt: skip
    print(f"\nmean test-AUROC change over {len(deltas)} methods: {np.mean(deltas):+.4f}; improved "
          f"{sum(d > 1e-4 for d in deltas)}, unchanged {sum(abs(d) <= 1e-4 for d in deltas)}, worse "
          f"{sum(d < -1e-4 for d in deltas)}")  # fmt: skip
    print("\nper test set (default -> tuned):")
    for name, _result, _dv, t_def, t_tun, _f, _s in rows:
        cells = "  ".join(f"{k} {t_def[k]:.4f}->{t_tun[k]:.4f}" for k in t_def)
        print(f"  {name:9s} {cells}")


if __name__ == "__main__":
    sys.exit(main())

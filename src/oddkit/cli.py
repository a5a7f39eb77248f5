"""The ``oddkit`` command.

::

    oddkit demo                          # benchmark on bundled offline data, write a report
    oddkit bench tabular --data DIR      # ADB-dev on every table file in DIR (resumable)
    oddkit bench ood --protocol c10-ood-local   # post-hoc OOD detectors on image features
    oddkit detectors                     # the registered detectors
    oddkit fit --data FILE --detector knn --out model/
    oddkit score --model model/ --data FILE --out scores.csv

Errors a user can cause (an :class:`~oddkit.errors.OddkitError`, a missing file) print
one line ``error: ...`` on stderr and exit with code 2; a traceback is shown only with
``oddkit --debug ...`` or ``ODDKIT_DEBUG=1``. Ctrl-C during a benchmark exits with 130
and keeps every finished cell and cached feature set (rerun the same command to resume).
"""

from __future__ import annotations

import csv
import functools
import json
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import typer

from .errors import CalibrationError, DataError, FeatureMismatchError, OddkitError, ParamError, one_line

F = TypeVar("F", bound=Callable[..., Any])

#: Detectors left out of the default benchmark list: ``pyod`` is an adapter whose
#: default wraps a method oddkit already has, and ``kde`` is slow in high dimension.
DEFAULT_EXCLUDED = ("pyod", "kde")
#: Bundled sets the demo runs on (``digits_k`` variants would repeat ``digits``).
DEMO_DATASETS = ("breast_cancer", "digits", "wine")
DEFAULT_SEEDS = "0,1,2"
STORE_NAME = "results.jsonl"
FIT_INFO = "oddkit-fit.json"
#: ``oddkit bench ood --protocol`` choices.
OOD_PROTOCOLS = ("c10-ood-local", "c10-osr6", "folders")
DEFAULT_FEATURE_CACHE = Path("~/.cache/oddkit/features")

app = typer.Typer(
    name="oddkit",
    help="Anomaly, novelty and out-of-distribution detection: benchmark, fit, score.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
bench_app = typer.Typer(
    help="Benchmarks under the protocols of docs/protocols.md.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(bench_app, name="bench")
shifts_app = typer.Typer(
    help="Image shifts (corruptions, geometric, photometric) with severities 1-5.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(shifts_app, name="shifts")

_STATE = {"debug": False}


def main() -> None:
    """Console entry point (``oddkit = "oddkit.cli:main"``)."""
    app()


# --------------------------------------------------------------------------- errors
def _debug() -> bool:
    return _STATE["debug"] or os.environ.get("ODDKIT_DEBUG", "") not in ("", "0")


def friendly_errors(fn: F) -> F:
    """Turn user errors into ``error: ...`` + exit code 2 (tracebacks only in debug)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (OddkitError, OSError) as exc:
            if _debug():
                raise
            typer.echo(f"error: {one_line(exc)}", err=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            if _debug():
                raise
            typer.echo(
                "interrupted: finished work is kept (benchmark cells, cached features); rerun the "
                "same command to resume.",
                err=True,
            )
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


@app.callback()
def _root(
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors."),
) -> None:
    """oddkit: one contract for anomaly / novelty / OOD detectors."""
    _STATE["debug"] = debug


# --------------------------------------------------------------------------- helpers
def default_detectors() -> list[str]:
    """Every registered tabular detector except :data:`DEFAULT_EXCLUDED` (the one default list)."""
    from .detectors import list_detectors

    return [
        info.name
        for info in list_detectors()
        if info.name not in DEFAULT_EXCLUDED and set(info.inputs) <= {"features"}
    ]


def _specs(detectors: str | None) -> list[Any]:
    from .bench.runner import parse_spec_list, resolve_specs

    return resolve_specs(parse_spec_list(detectors) if detectors else default_detectors())


def _seeds(text: str) -> list[int]:
    out = []
    for piece in text.split(","):
        piece = piece.strip()
        if not piece:
            continue
        if not piece.isdigit():
            raise ParamError(f"--seeds takes non-negative integers separated by commas, got {text!r}.")
        out.append(int(piece))
    if not out:
        raise ParamError("--seeds is empty; pass e.g. --seeds 0,1,2.")
    return out


def _fresh_store(path: Path) -> None:
    """Remove a previous run's store (only if it is an oddkit store) with its side files."""
    from .bench.store import log_path_for, read_store, scores_dir_for

    if not path.exists():
        return
    read_store(path)  # raises StoreError when the file is not ours: never delete it then
    path.unlink()
    log_path_for(path).unlink(missing_ok=True)
    if scores_dir_for(path).is_dir():
        shutil.rmtree(scores_dir_for(path))


def _run_benchmark(
    *,
    title: str,
    tables: list[Any],
    specs: list[Any],
    seeds: list[int],
    protocol: Any,
    out: Path,
    resume: bool,
    progress: bool,
    data_info: dict[str, Any],
) -> None:
    from .bench import collect, curves, leaderboard, run_grid, strip_scores
    from .bench.provenance import file_entry
    from .bench.store import log_path_for
    from .report import leaderboard_text, write_report

    store = out / STORE_NAME
    prov = collect(
        **protocol.metadata(),
        **data_info,
        resume=resume,
        datasets=[
            {**file_entry(t.source, t.fingerprint()), "name": t.name, "rows": t.n_rows,
             "features": t.n_features, "anomaly_rate": t.anomaly_rate}
            for t in tables
        ],
        seeds=seeds,
        detectors=[{"name": s.display, "detector": s.name, "params": s.resolved} for s in specs],
    )
    start = time.perf_counter()
    cells = run_grid(
        tables, specs, seeds, protocol=protocol, store_path=store, progress=progress,
        resume=resume, keep_scores=True, echo=typer.echo,
    )
    prov["wall_seconds_this_run"] = round(time.perf_counter() - start, 3)
    board = leaderboard(cells)
    curve_seed = 0 if 0 in seeds else seeds[0]
    paths = write_report(
        out, title=title, cells=strip_scores(cells), leaderboard=board, provenance=prov,
        curves=curves(cells, seed=curve_seed),
    )
    (out / "provenance.json").write_text(json.dumps(prov, indent=2, default=str) + "\n")
    n_err = sum(c.get("status") == "error" for c in cells)
    typer.echo("")
    typer.echo(leaderboard_text(board))
    typer.echo("")
    typer.echo(
        f"{len(cells)} cells ({len(tables)} data sets x {len(seeds)} seeds x {len(specs)} "
        f"detectors), {n_err} errors" + (f"; tracebacks in {log_path_for(store)}" if n_err else "")
    )
    typer.echo(f"results: {paths['results_csv']}")
    typer.echo(f"report: {paths['html']}")


# --------------------------------------------------------------------------- demo
@app.command()
@friendly_errors
def demo(
    out: Path = typer.Option(Path("oddkit-report"), "--out", help="Folder for the report."),
    seeds: str = typer.Option(DEFAULT_SEEDS, "--seeds", help="Comma-separated split seeds."),
    detectors: str | None = typer.Option(
        None, "--detectors", help="Comma-separated specs, e.g. knn,lof:n_neighbors=10 (default: all tabular)."
    ),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
) -> None:
    """Benchmark detectors on bundled offline data (ADB-dev splits) and write a report."""
    from .data import list_bundled, load_bundled
    from .protocols import ADBDev

    available = list_bundled()
    names = [n for n in DEMO_DATASETS if n in available] or available
    tables = [load_bundled(n) for n in names]
    specs = _specs(detectors)
    seed_list = _seeds(seeds)
    out.mkdir(parents=True, exist_ok=True)
    _fresh_store(out / STORE_NAME)
    typer.echo(
        f"oddkit demo: {len(specs)} detectors on {len(tables)} bundled data sets "
        f"({', '.join(names)}), seeds {seed_list}, protocol ADB-dev"
    )
    _run_benchmark(
        title="oddkit demo: bundled data sets, ADB-dev splits",
        tables=tables, specs=specs, seeds=seed_list, protocol=ADBDev(), out=out,
        resume=False, progress=progress, data_info={"data": "bundled (scikit-learn, offline)"},
    )


# --------------------------------------------------------------------------- bench
@bench_app.command("tabular")
@friendly_errors
def bench_tabular(
    data: Path = typer.Option(..., "--data", help="Folder of table files (.npz, .mat, .csv, .parquet)."),
    detectors: str | None = typer.Option(None, "--detectors", help="Comma-separated specs (default: all tabular)."),
    seeds: str = typer.Option(DEFAULT_SEEDS, "--seeds", help="Comma-separated split seeds."),
    out: Path = typer.Option(Path("oddkit-out"), "--out", help="Folder for the store and report."),
    full: bool = typer.Option(False, "--full", help="ADB-dev-full: skip the 10,000-row cut."),
    resume: bool = typer.Option(True, "--resume/--no-resume", help="Skip cells already in the store."),
    label: str | None = typer.Option(None, "--label", help="Label column of CSV/Parquet files (default: auto)."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
) -> None:
    """ADB-dev on every table file in --data; resumable, prints the leaderboard, writes a report."""
    from .bench.runner import load_tables
    from .data import load_folder
    from .protocols import ADBDev

    specs = _specs(detectors)
    seed_list = _seeds(seeds)
    protocol = ADBDev(full=full)
    files = load_folder(data)
    typer.echo(f"loading {len(files)} data files from {data} ...")
    tables = load_tables(files, label=label)
    typer.echo(
        f"{protocol.name} v{protocol.version}: {len(tables)} data sets x {len(seed_list)} seeds x "
        f"{len(specs)} detectors = {len(tables) * len(seed_list) * len(specs)} cells; store {out / STORE_NAME}"
    )
    _run_benchmark(
        title=f"oddkit bench tabular: {protocol.name} on {data.name or data}",
        tables=tables, specs=specs, seeds=seed_list, protocol=protocol, out=out,
        resume=resume, progress=progress, data_info={"data": str(data)},
    )


@bench_app.command("ood")
@friendly_errors
def bench_ood(
    protocol: str = typer.Option(
        "c10-ood-local", "--protocol", help="c10-ood-local, c10-osr6 or folders (docs/protocols.md)."
    ),
    shared: Path = typer.Option(
        Path("../shared"), "--shared", help="Folder holding data/cifar10, data/mnist and weights/ (C10 protocols)."
    ),
    depth: int | None = typer.Option(
        None, "--depth", help="CIFAR ResNet depth for c10-ood-local: 20 (default), 32, 44 or 56."
    ),
    config: Path | None = typer.Option(
        None, "--config", help="JSON config of --protocol folders (train/test/ood folders, weights)."
    ),
    detectors: str | None = typer.Option(
        None, "--detectors", help="Comma-separated specs, e.g. msp,energy,vim:dim=32 (default: all post-hoc)."
    ),
    cache_dir: Path = typer.Option(DEFAULT_FEATURE_CACHE, "--cache-dir", help="Feature cache folder."),
    out: Path = typer.Option(Path("oddkit-ood"), "--out", help="Folder for results.csv, leaderboard.md, report.html."),
    batch_size: int | None = typer.Option(
        None, "--batch-size", min=1, help="Images per forward pass (default: 256, 64 for c10-osr6)."
    ),
    threads: int | None = typer.Option(None, "--threads", min=1, help="Torch threads (default: torch's own setting)."),
    limit: int | None = typer.Option(
        None, "--limit", min=1, help="c10-osr6 only: N images per source, spread evenly (quick check)."
    ),
    tune: bool = typer.Option(
        False, "--tune/--no-tune",
        help="c10-ood-local only: choose hyperparameters on validation data (held-out train images "
        "and validation OOD sets disjoint from the test sets), never on the test sets.",
    ),  # fmt: skip
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show progress."),
) -> None:
    """Post-hoc OOD detectors on classifier features: prints the leaderboard, writes a report."""
    from .bench.provenance import collect
    from .report.html import fmt_seconds
    from .report.ood import leaderboard_text, ood_leaderboard, write_ood_report

    protocol = protocol.strip().lower()
    _check_ood_options(protocol, shared, depth, config, limit)
    if tune and protocol != "c10-ood-local":
        raise ParamError("--tune applies to --protocol c10-ood-local only (its validation sets come from CIFAR-10 train).")
    specs = _ood_specs(detectors)
    options: dict[str, Any] = {"detectors": specs, "cache_dir": cache_dir.expanduser(), "threads": threads,
                               "progress": progress}  # fmt: skip
    if batch_size is not None:
        options["batch_size"] = batch_size
    if tune:
        options["tune"] = True
    shown = f"{len(specs)} detectors" if specs is not None else "the default post-hoc detectors"
    typer.echo(f"oddkit bench ood: {protocol}, {shown}; feature cache {options['cache_dir']}")
    start = time.perf_counter()
    result = _run_ood_protocol(protocol, shared, depth, config, limit, options)
    wall = time.perf_counter() - start
    info = result.info
    ran = list(dict.fromkeys(r["detector"] for r in result.rows))
    prov = collect(**info, detectors=ran, cache_dir=str(options["cache_dir"]), wall_seconds=round(wall, 3))
    title = f"oddkit bench ood: {info.get('protocol', protocol)}, {info.get('backbone', '')}".rstrip(", ")
    paths = write_ood_report(result, out, title, provenance=prov)
    typer.echo("")
    typer.echo(_ood_header(info))
    typer.echo("")
    typer.echo(leaderboard_text(ood_leaderboard(result.rows)))
    typer.echo("")
    features_s = sum(info.get("extract_seconds", {}).values())
    typer.echo(f"wall time {fmt_seconds(wall)} (features {fmt_seconds(features_s)}; per set in provenance.json)")
    typer.echo(f"results: {paths['results_csv']}")
    typer.echo(f"leaderboard: {paths['leaderboard_md']}")
    typer.echo(f"report: {paths['html']}")


def _check_ood_options(protocol: str, shared: Path, depth: int | None, config: Path | None, limit: int | None) -> None:
    """Refuse option combinations that would be ignored, and a missing shared folder, up front."""
    if protocol not in OOD_PROTOCOLS:
        raise ParamError(f"--protocol must be one of {', '.join(OOD_PROTOCOLS)}; got {protocol!r}.")
    if depth is not None and protocol != "c10-ood-local":
        raise ParamError("--depth applies to --protocol c10-ood-local only.")
    if depth is not None and depth not in (20, 32, 44, 56):
        raise ParamError(f"--depth must be 20, 32, 44 or 56; got {depth}.")
    if (config is None) == (protocol == "folders"):
        raise ParamError("--config FILE is needed with --protocol folders, and only there.")
    if limit is not None and protocol != "c10-osr6":
        raise ParamError("--limit applies to --protocol c10-osr6 only.")
    if protocol != "folders" and not shared.is_dir():
        raise DataError(
            f"shared folder {shared} not found (resolved: {shared.resolve()}); pass --shared PATH, "
            "the folder that holds data/cifar10, data/mnist and weights/."
        )


def _ood_specs(detectors: str | None) -> list[str] | None:
    """Validated detector specs (display strings), post-hoc detectors only; None (the
    protocol's default set) when none are given."""
    from .bench.runner import parse_spec_list, resolve_specs
    from .detectors import get
    from .protocols.image_ood import DEFAULT_DETECTORS

    if not detectors:
        return None
    specs = resolve_specs(parse_spec_list(detectors))
    other = [s.name for s in specs if get(s.name).family != "posthoc"]
    if other:
        raise ParamError(
            f"{', '.join(other)}: not post-hoc detector(s); bench ood runs detectors that use the "
            f"classifier's features and head: {', '.join(DEFAULT_DETECTORS)}."
        )
    return [s.display for s in specs]


def _run_ood_protocol(
    protocol: str, shared: Path, depth: int | None, config: Path | None, limit: int | None, options: dict[str, Any]
) -> Any:
    from .protocols import c10_ood_local, c10_osr6, run_folders

    if protocol == "c10-ood-local":
        return c10_ood_local(shared, depth=depth or 20, **options)
    if protocol == "c10-osr6":
        return c10_osr6(shared, limit=limit, **options)
    assert config is not None  # _check_ood_options
    return run_folders(config, **options)


def _ood_header(info: dict[str, Any]) -> str:
    from .report.html import is_missing

    acc = info.get("id_accuracy")
    shown = "n/a" if is_missing(acc) else f"{100 * acc:.2f}%"
    version = f" v{info['protocol_version']}" if info.get("protocol_version") else ""
    return (
        f"ID accuracy: {shown} ({info.get('backbone')}, {info.get('n_id_test')} ID test images; "
        f"protocol {info.get('protocol')}{version}; weights sha256 {str(info.get('weights_hash', ''))[:16]})"
    )


@bench_app.command("shift")
@friendly_errors
def bench_shift(
    protocol: str = typer.Option(..., "--protocol", help="c10-oc, c10-r, spa or ssa (docs/protocols.md)."),
    shared: Path = typer.Option(Path("../shared"), "--shared", help="Folder holding data/cifar10 (CIFAR-10 protocols)."),
    config: Path | None = typer.Option(
        None, "--config", help="JSON config of another ImageFolder data set (train/test folders, semantic table)."
    ),
    backbone: str = typer.Option("efficientnet_lite0", "--backbone", help="Feature backbone (oddkit backbones)."),
    weights: Path | None = typer.Option(None, "--weights", help="Weights file for the backbone."),
    detectors: str | None = typer.Option(
        None, "--detectors",
        help="Comma-separated specs; '+l2' runs one on L2-normalised features "
        "(default: knn:n_neighbors=1,knn:n_neighbors=1+l2,gaussian).",
    ),  # fmt: skip
    settings: str | None = typer.Option(None, "--settings", help="c10-r: a subset of U,A,C (default all)."),
    corruptions: str | None = typer.Option(None, "--corruptions", help="c10-r setting C: names (default all 19)."),
    severities: str | None = typer.Option(None, "--severities", help="c10-r setting C: e.g. 1,3,5 (default 1-5)."),
    limit: int | None = typer.Option(
        None, "--limit", min=1, help="Test images per class per group, spread evenly (a CPU-sized subset)."
    ),
    train_limit: int | None = typer.Option(None, "--train-limit", min=1, help="Train images per class."),
    cache_dir: Path = typer.Option(DEFAULT_FEATURE_CACHE, "--cache-dir", help="Feature cache folder."),
    out: Path = typer.Option(Path("oddkit-shift"), "--out", help="Folder for results, leaderboard, plot, report."),
    batch_size: int = typer.Option(64, "--batch-size", min=1, help="Images per forward pass."),
    threads: int | None = typer.Option(None, "--threads", min=1, help="Torch threads (default: torch's own setting)."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show progress."),
) -> None:
    """Realistic-shift protocols (C10-OC, C10-R, SPA, SSA): AUROC beside GS, per class and mean."""
    from .protocols.shift import run_shift_bench
    from .report.html import fmt_seconds
    from .report.shift import leaderboard_markdown

    options: dict[str, Any] = {"batch_size": batch_size, "threads": threads}
    if weights is not None:
        options["weights"] = weights
    if settings:
        options["settings"] = [s.strip().upper() for s in settings.split(",") if s.strip()]
    if corruptions:
        options["corruptions"] = [s.strip() for s in corruptions.split(",") if s.strip()]
    if severities:
        try:
            options["severities"] = [int(s) for s in severities.split(",") if s.strip()]
        except ValueError as exc:
            raise ParamError(f"--severities must be integers 1-5 separated by commas; got {severities!r}.") from exc
    typer.echo(f"oddkit bench shift: {protocol}, backbone {backbone}; feature cache {cache_dir.expanduser()}")
    start = time.perf_counter()
    result = run_shift_bench(
        protocol.strip().lower(), shared=shared, config=config, backbone=backbone, detectors=detectors,
        limit=limit, train_limit=train_limit, cache_dir=cache_dir.expanduser(), out=out, progress=progress,
        **options,
    )  # fmt: skip
    typer.echo("")
    typer.echo(leaderboard_markdown(result))
    typer.echo(f"wall time {fmt_seconds(time.perf_counter() - start)}")
    for name, path in result.info.get("files", {}).items():
        typer.echo(f"{name}: {path}")


@shifts_app.command("list")
@friendly_errors
def shifts_list() -> None:
    """List the registered shifts: name, kind, what severity changes."""
    from .shifts import list_shifts

    rows = [("name", "kind", "summary")] + [(s.name, s.kind, s.summary) for s in list_shifts()]
    width = [max(len(r[i]) for r in rows) for i in range(2)]
    for r in rows:
        typer.echo(f"{r[0]:<{width[0]}}  {r[1]:<{width[1]}}  {r[2]}")


@shifts_app.command("gallery")
@friendly_errors
def shifts_gallery(
    image: Path = typer.Argument(..., help="An image file (any size; RGB, grey or RGBA are read as RGB)."),
    out: Path = typer.Option(Path("shift-gallery.png"), "--out", help="PNG file to write."),
    shifts: str | None = typer.Option(None, "--shifts", help="Comma-separated names (default: all)."),
    size: int | None = typer.Option(None, "--size", min=8, help="Resize the image to SIZE x SIZE first."),
    seed: int = typer.Option(0, "--seed", min=0, help="Seed of the random shifts."),
) -> None:
    """Write a PNG grid of IMAGE under every shift (rows) at severities 1-5 (columns)."""
    from .data.images import read_rgb
    from .shifts.gallery import write_gallery

    names = [s.strip() for s in shifts.split(",") if s.strip()] if shifts else None
    picture = read_rgb(image, None if size is None else (size, size))
    path = write_gallery(picture, out, shifts=names, seed=seed)
    typer.echo(f"gallery: {path}")


# --------------------------------------------------------------------------- detectors
@app.command("detectors")
@friendly_errors
def detectors_cmd() -> None:
    """List the registered detectors: name, family, inputs, reference."""
    from .detectors import list_detectors

    rows = [("name", "family", "inputs", "reference")]
    rows += [(i.name, i.family, ",".join(i.inputs), i.reference) for i in list_detectors()]
    widths = [max(len(r[k]) for r in rows) for k in range(3)]
    for n, row in enumerate(rows):
        typer.echo("  ".join(v.ljust(w) for v, w in zip(row[:3], widths)) + "  " + row[3])
        if n == 0:
            typer.echo("  ".join("-" * w for w in widths) + "  " + "-" * 9)


# --------------------------------------------------------------------------- fit / score
@app.command()
@friendly_errors
def fit(
    data: Path = typer.Option(..., "--data", help="Training table file."),
    detector: str = typer.Option(..., "--detector", help="Detector spec, e.g. knn or knn:n_neighbors=10."),
    out: Path = typer.Option(..., "--out", help="Folder to save the fitted detector in."),
    label: str | None = typer.Option(None, "--label", help="Label column (1 = anomaly); default: auto-detect."),
    calibrate: float = typer.Option(
        0.1, "--calibrate", help="Share of normal rows held out to calibrate a threshold (0 = none)."
    ),
    alpha: float = typer.Option(0.05, "--alpha", help="Target false-alarm rate of the threshold."),
    seed: int = typer.Option(0, "--seed", help="Seed of the hold-out draw and randomised detectors."),
) -> None:
    """Fit a detector on the normal rows of a table and save it (optionally calibrated)."""
    from .bench.runner import parse_spec
    from .bench.provenance import collect
    from .data import load_table
    from .detectors import create

    if not 0.0 <= calibrate < 1.0:
        raise ParamError(f"--calibrate must be in [0, 1), got {calibrate}.")
    spec = parse_spec(detector)
    table = load_table(data, label=label)
    X = _normal_rows(table)
    params = dict(spec.params)
    if spec.randomized:
        params.setdefault("random_state", seed)
    det = create(spec.name, **params)
    X_fit, X_cal = _holdout(X, calibrate, seed)
    det.fit(X_fit)
    if X_cal is not None:
        det.calibrate(X_cal, alpha=alpha)
    det.save(out)
    info = {
        "data": Path(data).name,
        "data_fingerprint": table.fingerprint(),
        "feature_names": table.feature_names,
        "n_features": table.n_features,
        "detector": spec.display,
        "n_fit": int(X_fit.shape[0]),
        "n_calibration": 0 if X_cal is None else int(X_cal.shape[0]),
        "alpha": alpha if X_cal is not None else None,
        "seed": seed,
        "provenance": collect(),
    }
    (Path(out) / FIT_INFO).write_text(json.dumps(info, indent=2, default=str) + "\n")
    cal = f", calibrated on {X_cal.shape[0]} held-out normal rows (alpha={alpha})" if X_cal is not None else ""
    typer.echo(f"fitted {spec.display} on {X_fit.shape[0]} rows{cal}; saved to {out}")


def _normal_rows(table: Any) -> np.ndarray:
    if table.y is None:
        typer.echo(f"no labels in {Path(table.source).name}: fitting on all {table.n_rows} rows.")
        return table.X
    normal = table.y == 0
    if not normal.any():
        raise DataError(f"{table.source}: every row is labelled anomalous; nothing normal to fit on.")
    typer.echo(
        f"labels found: fitting on the {int(normal.sum())} normal rows of {table.n_rows} "
        f"(leaving out {int((~normal).sum())} labelled anomalies)."
    )
    return table.X[normal]


def _holdout(X: np.ndarray, share: float, seed: int) -> tuple[np.ndarray, np.ndarray | None]:
    if share == 0.0:
        return X, None
    n_cal = int(round(share * X.shape[0]))
    if n_cal < 1 or n_cal >= X.shape[0]:
        raise CalibrationError(
            f"--calibrate {share} of {X.shape[0]} normal rows leaves {n_cal} for calibration; "
            "use more data, another share, or --calibrate 0."
        )
    order = np.random.default_rng(seed).permutation(X.shape[0])
    return X[np.sort(order[n_cal:])], X[np.sort(order[:n_cal])]


@app.command()
@friendly_errors
def score(
    model: Path = typer.Option(..., "--model", help="Folder written by `oddkit fit`."),
    data: Path = typer.Option(..., "--data", help="Table file to score."),
    out: Path = typer.Option(Path("scores.csv"), "--out", help="CSV file to write."),
) -> None:
    """Score a table with a saved detector; write scores (+ decisions and p-values) as CSV."""
    from .data import load_table
    from .detectors import load

    det = load(model)
    info = _fit_info(model)
    table = load_table(data, label=False)
    X = _model_columns(table, info)
    scores = det.score(X)
    calibrated = det.is_calibrated
    columns = ["row", "score"] + (["is_anomaly", "p_value"] if calibrated else [])
    values: list[np.ndarray] = [np.arange(len(scores)), scores]
    if calibrated:
        values += [det.predict(X).astype(int), det.pvalues(X)]
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(columns)
        writer.writerows(zip(*[v.tolist() for v in values]))
    flagged = f"; {int(values[2].sum())} flagged as anomalies" if calibrated else ""
    typer.echo(f"wrote {len(scores)} scores to {out}{flagged}")


def _fit_info(model: Path) -> dict[str, Any]:
    file = Path(model) / FIT_INFO
    if not file.is_file():
        return {}
    try:
        return json.loads(file.read_text())
    except ValueError:
        return {}


def _model_columns(table: Any, info: dict[str, Any]) -> np.ndarray:
    """The fitted feature columns of ``table``, by name when both sides have names.

    The scoring file is read without labels, so a label column present there is simply
    not among the fitted features and is dropped here.
    """
    names = info.get("feature_names")
    if not names or not table.feature_names:
        return table.X
    index = {n: j for j, n in enumerate(table.feature_names)}
    missing = [n for n in names if n not in index]
    if missing:
        raise FeatureMismatchError(
            f"{Path(table.source).name} lacks {len(missing)} column(s) the detector was fitted on: "
            f"{missing[:10]}. Score a file with the training columns."
        )
    return table.X[:, [index[n] for n in names]]


if __name__ == "__main__":  # pragma: no cover
    main()

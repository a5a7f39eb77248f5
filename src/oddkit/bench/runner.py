"""The benchmark grid runner: (data set x seed x detector) cells under one protocol.

:func:`run_grid` does, in this order:

1. **Validates everything before any long work**: parses the detector specs (an
   unknown name fails with the list of available detectors, a bad parameter with the
   detector's message), loads every data set once (a bad file fails with its name), and
   checks labels, seeds and the store's protocol version.
2. For each data set and seed, makes the protocol's split once; for each detector,
   fits on the train rows **without labels** (``random_state=seed`` where the detector
   is randomised), scores the test rows, computes the metrics and times fit and score
   separately with :func:`time.perf_counter`.
3. Appends each finished cell to the results store (flushed and fsynced), so an
   interruption loses no finished cell. With ``resume=True`` cells already in the store
   are skipped.

A detector that raises (an oddkit error or any other exception) gives a cell with
``status="error"`` and the message; the traceback goes to the log file next to the
store and the grid goes on. ``KeyboardInterrupt`` stops the run (finished cells stay).

Detector specs are strings ``name`` or ``name:key=value,key=value`` (values parsed as
int, float, bool, None, JSON list/object, else string), e.g.
``"knn:n_neighbors=10,method=mean"``; see :func:`parse_spec`.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import sys
import time
import traceback
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .. import __version__
from ..errors import DataError, OddkitError, ParamError, one_line
from ..protocols import ADBDev, get_protocol
from .store import ResultStore, canonical_params, cell_key

__all__ = [
    "DetectorSpec",
    "parse_spec",
    "parse_spec_list",
    "resolve_specs",
    "load_tables",
    "run_grid",
    "curves",
    "strip_scores",
]

Echo = Callable[[str], None]
SCORE_KEYS = ("y_true", "scores")


# --------------------------------------------------------------------------- specs
@dataclass(frozen=True)
class DetectorSpec:
    """A detector configuration of a grid: display name, registry name, parameters.

    ``params`` are the parameters given in the spec; ``resolved`` all constructor
    parameters after defaults (without ``random_state``, which the seed sets). The
    store keys cells by ``name`` + ``resolved``, so ``"knn"`` and
    ``"knn:n_neighbors=5"`` (the default) are the same configuration.
    """

    display: str
    name: str
    params: dict[str, Any] = field(default_factory=dict)
    resolved: dict[str, Any] = field(default_factory=dict)
    randomized: bool = False


def parse_spec(text: str) -> DetectorSpec:
    """Parse ``"name"`` or ``"name:key=value,..."`` and validate it against the registry.

    Raises :class:`~oddkit.errors.UnknownDetectorError` (listing the available
    detectors) or :class:`~oddkit.errors.ParamError`.
    """
    if isinstance(text, DetectorSpec):
        return text
    raw = str(text).strip()
    name, sep, rest = raw.partition(":")
    name = name.strip().lower()
    if not name:
        raise ParamError(f"detector spec {text!r} has no detector name; write e.g. 'knn' or 'knn:n_neighbors=10'.")
    if sep and not rest.strip():
        raise ParamError(f"detector spec {text!r} has ':' but no parameters; write e.g. '{name}:key=value'.")
    params, shown = _parse_params(rest, raw) if sep else ({}, [])
    return _validated(name, params, shown)


def parse_spec_list(text: str | Sequence[str]) -> list[DetectorSpec]:
    """Parse a comma-separated list of specs (the CLI's ``--detectors``).

    Commas separate both specs and a spec's parameters: a piece ``key=value`` without
    its own ``name:`` continues the previous spec, so
    ``"knn:n_neighbors=10,method=mean,lof"`` is two specs. Commas inside ``[...]`` or
    ``{...}`` do not split. A sequence of strings is parsed item by item.
    """
    if not isinstance(text, str):
        return [s for item in text for s in parse_spec_list(item)]
    pieces = [p.strip() for p in _split_top_level(text, ",")]
    groups: list[str] = []
    for piece in pieces:
        if not piece:
            continue
        if _is_continuation(piece):
            if not groups:
                raise ParamError(f"detector list {text!r} starts with parameter {piece!r} without a detector name.")
            groups[-1] += "," + piece
        else:
            groups.append(piece)
    if not groups:
        raise ParamError("no detectors given; pass e.g. --detectors knn,lof,iforest.")
    return [parse_spec(g) for g in groups]


def resolve_specs(specs: Iterable[str | DetectorSpec]) -> list[DetectorSpec]:
    """Parse and validate specs; refuse two specs with the same configuration."""
    out: list[DetectorSpec] = []
    seen: dict[tuple[str, str], str] = {}
    for item in specs:
        for spec in parse_spec_list(item) if isinstance(item, str) else [parse_spec(item)]:
            key = (spec.name, canonical_params(spec.resolved))
            if key in seen:
                raise ParamError(
                    f"detectors {seen[key]!r} and {spec.display!r} are the same configuration; list it once."
                )
            seen[key] = spec.display
            out.append(spec)
    if not out:
        raise ParamError("no detectors given.")
    return out


def _parse_params(rest: str, raw: str) -> tuple[dict[str, Any], list[str]]:
    params: dict[str, Any] = {}
    shown: list[str] = []
    for item in _split_top_level(rest, ","):
        key, eq, value = item.partition("=")
        key = key.strip()
        if not eq or not key.isidentifier():
            raise ParamError(f"in detector spec {raw!r}: {item.strip()!r} is not of the form key=value.")
        if key in params:
            raise ParamError(f"in detector spec {raw!r}: parameter {key!r} is given twice.")
        params[key] = parse_value(value)
        shown.append(f"{key}={value.strip()}")
    return params, shown


def parse_value(text: str) -> Any:
    """JSON-ish value: int, float, true/false, none/null, [..]/{..} JSON, else string."""
    t = text.strip()
    low = t.lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("none", "null"):
        return None
    for kind in (int, float):
        try:
            value = kind(t)
        except ValueError:
            continue
        if kind is float and not math.isfinite(value):
            break
        return value
    if t[:1] in "[{":
        try:
            return json.loads(t)
        except ValueError as exc:
            raise ParamError(f"value {t!r} looks like JSON but does not parse ({exc}).") from exc
    if len(t) >= 2 and t[0] == t[-1] and t[0] in "'\"":
        return t[1:-1]
    return t


def _validated(name: str, params: dict[str, Any], shown: list[str]) -> DetectorSpec:
    from .. import detectors

    cls = detectors.get(name)  # UnknownDetectorError lists the available names
    if cls.randomized and "random_state" in params:
        raise ParamError(
            f"{name}: random_state is set from the benchmark seed; remove it from the spec."
        )
    probe = dict(params)
    if cls.randomized:
        probe["random_state"] = 0
    resolved = detectors.create(name, **probe).get_params()
    if cls.randomized:
        resolved.pop("random_state", None)
    display = name + (":" + ",".join(shown) if shown else "")
    return DetectorSpec(display, name, dict(params), _plain(resolved), bool(cls.randomized))


def _plain(params: dict[str, Any]) -> dict[str, Any]:
    """JSON round trip, so stored and fresh params compare equal."""
    return json.loads(canonical_params(params))


def _split_top_level(text: str, sep: str) -> list[str]:
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch in "[{(":
            depth += 1
        elif ch in "]})":
            depth = max(0, depth - 1)
        elif ch == sep and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return parts


def _is_continuation(piece: str) -> bool:
    if "=" not in piece:
        return False
    return ":" not in piece or piece.index("=") < piece.index(":")


# --------------------------------------------------------------------------- data
def load_tables(items: Iterable[Any], *, label: Any = None) -> list[Any]:
    """Load every data set up front: :class:`~oddkit.data.Table` objects pass through,
    paths are read with :func:`oddkit.data.load_table`. Any failure names the file.
    """
    from ..data import Table, load_table

    tables = []
    for item in items:
        if isinstance(item, Table):
            tables.append(item)
            continue
        path = Path(item)
        try:
            tables.append(load_table(path, label=label))
        except OddkitError as exc:
            raise DataError(_with_file(str(exc), path)) from exc
        except Exception as exc:  # noqa: BLE001 - any reader failure is a bad file
            raise DataError(f"{path}: cannot be loaded ({type(exc).__name__}: {exc}).") from exc
    if not tables:
        raise DataError("no data sets to run on.")
    _check_tables(tables)
    return tables


def _with_file(message: str, path: Path) -> str:
    return message if (str(path) in message or path.name in message) else f"{path}: {message}"


def _check_tables(tables: list[Any]) -> None:
    """Labels usable by the protocol, names unique: fail now, not after an hour."""
    from ..protocols.adb_dev import _check_labels

    names: dict[str, str] = {}
    prints: dict[str, str] = {}
    for table in tables:
        where = table.source or table.name
        if table.y is None:
            raise DataError(
                f"{where} has no labels; a benchmark needs them (1 = anomaly). Name the label "
                "column with --label / label=..."
            )
        try:
            _check_labels(table.y, table.n_rows)
        except DataError as exc:
            raise DataError(f"{where}: {exc}") from exc
        if table.name in names:
            raise DataError(
                f"two data sets are named {table.name!r} ({names[table.name]} and {where}); "
                "rename one so results can be told apart."
            )
        names[table.name] = where
        fingerprint = table.fingerprint()
        if fingerprint in prints:
            raise DataError(
                f"{prints[fingerprint]} and {where} hold the same data (fingerprint "
                f"{fingerprint}); run it once."
            )
        prints[fingerprint] = where


def _check_seeds(seeds: Iterable[Any]) -> list[int]:
    out: list[int] = []
    for s in seeds:
        if isinstance(s, bool) or not isinstance(s, (int, np.integer)) or int(s) < 0:
            raise ParamError(f"seeds must be non-negative integers, got {s!r}.")
        if int(s) in out:
            raise ParamError(f"seed {int(s)} is listed twice.")
        out.append(int(s))
    if not out:
        raise ParamError("no seeds given; pass e.g. seeds=[0, 1, 2].")
    return out


# --------------------------------------------------------------------------- grid
def run_grid(
    tables_or_paths: Iterable[Any],
    detector_specs: Iterable[str | DetectorSpec],
    seeds: Iterable[int],
    *,
    protocol: ADBDev | str = "ADB-dev",
    store_path: str | os.PathLike[str],
    progress: bool = True,
    resume: bool = True,
    keep_scores: bool = False,
    label: Any = None,
    retry_errors: bool = False,
    echo: Echo | None = None,
) -> list[dict[str, Any]]:
    """Run every (data set, seed, detector) cell; return the grid's cells in grid order.

    ``resume=True`` skips cells already in the store (``retry_errors=True`` re-runs
    the ones that failed); ``resume=False`` runs every cell again (the store keeps
    the newest line per cell). With ``keep_scores=True`` the returned cells carry
    ``y_true`` and ``scores`` arrays (also kept on disk next to the store, so resumed
    cells have them too); see :func:`curves` and :func:`strip_scores`. ``echo``
    receives one-line status messages (default: stderr when ``progress``).
    """
    protocol = get_protocol(protocol) if isinstance(protocol, str) else protocol
    specs = resolve_specs(detector_specs)
    seeds = _check_seeds(seeds)
    tables = load_tables(tables_or_paths, label=label)
    store = ResultStore(store_path, protocol=protocol.name, protocol_version=protocol.version)
    say = echo or (_stderr if progress else (lambda _msg: None))

    plan = _plan(tables, seeds, specs, protocol)
    done = store.done_keys(include_errors=not retry_errors) if resume else set()
    todo = [p for p in plan if p[-1] not in done]
    if resume and len(todo) < len(plan):
        say(
            f"resuming from {store.path}: {len(plan) - len(todo)} of {len(plan)} cells already "
            f"done, {len(todo)} to run."
        )
    _run_cells(todo, protocol, store, keep_scores, progress)

    cells = []
    for table, _fp, seed, spec, key in plan:
        cell = dict(store.get(key) or {})
        cell["detector"] = spec.display
        cell["dataset"] = table.name
        if keep_scores and cell.get("status") == "ok":
            kept = store.load_scores(key)
            if kept is not None:
                cell["y_true"], cell["scores"] = kept
        cells.append(cell)
    return cells


def _plan(tables: list[Any], seeds: list[int], specs: list[DetectorSpec], protocol: ADBDev) -> list[tuple]:
    plan = []
    for table in tables:
        fingerprint = table.fingerprint()
        for seed in seeds:
            for spec in specs:
                key = cell_key(
                    {
                        "protocol": protocol.name,
                        "protocol_version": protocol.version,
                        "dataset_fingerprint": fingerprint,
                        "detector_name": spec.name,
                        "params": spec.resolved,
                        "seed": seed,
                    }
                )
                plan.append((table, fingerprint, seed, spec, key))
    return plan


def _run_cells(todo: list[tuple], protocol: ADBDev, store: ResultStore, keep_scores: bool, progress: bool) -> None:
    from tqdm.auto import tqdm

    split_cache: tuple[Any, int, Any] | None = None
    with tqdm(total=len(todo), disable=not progress or not todo, unit="cell", file=sys.stderr) as bar:
        for table, fingerprint, seed, spec, key in todo:
            bar.set_description(f"{table.name}/{spec.display}")
            if split_cache is None or split_cache[0] is not table or split_cache[1] != seed:
                split_cache = (table, seed, protocol.split_table(table, seed))
            cell, scores = run_cell(table, split_cache[2], spec, protocol, store, fingerprint=fingerprint)
            if keep_scores and scores is not None:
                store.save_scores(key, split_cache[2].y_test, scores)
            store.append(cell)
            bar.update(1)


def run_cell(
    table: Any,
    split: Any,
    spec: DetectorSpec,
    protocol: ADBDev,
    store: ResultStore | None = None,
    *,
    fingerprint: str | None = None,
) -> tuple[dict[str, Any], np.ndarray | None]:
    """Fit, score and evaluate one cell; errors become ``status="error"`` cells.

    Returns the cell dict and the test scores (None for an error cell).
    """
    from .. import detectors
    from ..metrics import evaluate

    cell = _cell_header(table, fingerprint or table.fingerprint(), split, spec, protocol)
    scores = None
    fit_s = score_s = None
    try:
        params = dict(spec.params)
        if spec.randomized:
            params["random_state"] = split.seed
        det = detectors.create(spec.name, **params)
        t0 = time.perf_counter()
        det.fit(split.X_train)
        fit_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        scores = det.score(split.X_test)
        score_s = time.perf_counter() - t0
        metrics = evaluate(split.y_test, scores)
    except Exception as exc:  # noqa: BLE001 - any failure of one cell must not stop the grid
        cell.update(status="error", error=one_line(exc, with_type=True), fit_seconds=fit_s, score_seconds=score_s)
        if store is not None:
            store.log_error(_traceback_entry(cell))
        return cell, None
    cell.update(status="ok", error=None, fit_seconds=fit_s, score_seconds=score_s)
    for k in ("auroc", "aupr_out", "aupr_in", "fpr95", "detection_error"):
        cell[k] = float(metrics[k])
    return cell, scores


def _cell_header(table: Any, fingerprint: str, split: Any, spec: DetectorSpec, protocol: ADBDev) -> dict[str, Any]:
    return {
        "protocol": protocol.name,
        "protocol_version": protocol.version,
        "dataset": table.name,
        "dataset_fingerprint": fingerprint,
        "seed": split.seed,
        "detector": spec.display,
        "detector_name": spec.name,
        "params": spec.resolved,
        "status": None,
        "error": None,
        "auroc": None,
        "aupr_out": None,
        "aupr_in": None,
        "fpr95": None,
        "detection_error": None,
        "fit_seconds": None,
        "score_seconds": None,
        "n_train": int(split.X_train.shape[0]),
        "n_test": int(split.X_test.shape[0]),
        "n_features": int(split.X_train.shape[1]),
        "anomaly_rate": float(np.mean(split.y_test)),
        "oddkit_version": __version__,
        "finished": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


def _traceback_entry(cell: dict[str, Any]) -> str:
    head = (
        f"=== {cell['finished']} {cell['dataset']} seed={cell['seed']} "
        f"detector={cell['detector']} params={canonical_params(cell['params'])}"
    )
    return head + "\n" + traceback.format_exc()


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- helpers
def curves(cells: Iterable[dict[str, Any]], seed: int = 0) -> dict[str, dict[str, tuple[np.ndarray, np.ndarray]]]:
    """``{dataset: {detector: (y_true, scores)}}`` of the given seed (cells with kept scores)."""
    out: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]] = {}
    for c in cells:
        if c.get("seed") == seed and c.get("scores") is not None:
            out.setdefault(str(c["dataset"]), {})[str(c["detector"])] = (c["y_true"], c["scores"])
    return out


def strip_scores(cells: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Cells without the ``y_true`` / ``scores`` arrays (for CSV reports)."""
    return [{k: v for k, v in c.items() if k not in SCORE_KEYS} for c in cells]

"""Benchmark reports: one HTML page, the raw results as CSV, and the leaderboard as CSV / Markdown / text.

Used by ``oddkit demo`` and ``oddkit bench tabular``::

    from oddkit.report import write_report, leaderboard_text
    paths = write_report("oddkit-report", title="ADB-dev", cells=cells,
                         leaderboard=board, provenance=prov, curves=curves)
    print(leaderboard_text(board))

``cells`` holds one dict per (data set, seed, detector) result (keys in
:data:`RESULT_COLUMNS`); ``leaderboard`` is already aggregated and sorted best first by
the runner (keys in :data:`LEADERBOARD_COLUMNS`). This module only aggregates what the
page needs beyond that: the mean and std over seeds per (detector, data set).

Every file is rendered in memory first and then written atomically (temporary file in
the same folder + :func:`os.replace`), so an interrupted run leaves either the previous
file or the new one, never half of one. This module does not depend on
``oddkit.metrics``; ROC curves for the figures come from scikit-learn.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
import tempfile
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from . import plots
from .html import PerDataset, Plot, fmt_float, fmt_int, fmt_seconds, is_missing, render_page

__all__ = [
    "write_report", "leaderboard_text", "leaderboard_markdown", "per_dataset_auroc",
    "RESULT_COLUMNS", "LEADERBOARD_COLUMNS",
]

RESULT_COLUMNS: tuple[str, ...] = (
    "protocol", "protocol_version", "dataset", "dataset_fingerprint", "seed", "detector",
    "params", "status", "error", "auroc", "aupr_out", "aupr_in", "fpr95", "detection_error",
    "fit_seconds", "score_seconds", "n_train", "n_test", "n_features", "anomaly_rate",
)
"""Column order of ``results.csv``; keys a cell has beyond these follow, sorted by name."""

LEADERBOARD_COLUMNS: tuple[str, ...] = (
    "rank", "detector", "n_datasets", "mean_auroc", "std_auroc", "mean_aupr_out",
    "mean_rank", "total_seconds", "n_errors",
)
"""Column order of ``leaderboard.csv``."""

FILE_NAMES = {
    "html": "report.html",
    "results_csv": "results.csv",
    "leaderboard_csv": "leaderboard.csv",
    "leaderboard_md": "leaderboard.md",
}


def write_report(
    out_dir: str | os.PathLike,
    *,
    title: str,
    cells: list[dict],
    leaderboard: list[dict],
    provenance: dict,
    curves: dict | None = None,
) -> dict[str, Path]:
    """Write ``report.html``, ``results.csv``, ``leaderboard.csv`` and ``leaderboard.md`` into ``out_dir``.

    ``out_dir`` is created when missing. ``curves`` (optional) maps data set -> detector ->
    ``(y_true, scores)`` for the ROC figure (first six data sets). Zero successful
    cells, NaN metrics, one data set or one detector all give a valid report.
    Returns the written paths keyed ``html``, ``results_csv``, ``leaderboard_csv`` and
    ``leaderboard_md``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    table = per_dataset_auroc(cells, _detector_order(cells, leaderboard))
    contents = {
        "results_csv": _csv_text(cells, _result_columns(cells)),
        "leaderboard_csv": _csv_text(leaderboard, LEADERBOARD_COLUMNS),
        "leaderboard_md": leaderboard_markdown(leaderboard),
        "html": render_page(
            title=title,
            cells=cells,
            leaderboard=leaderboard,
            provenance=provenance or {},
            table=table,
            figures=_figures(leaderboard, table, curves),
            files={FILE_NAMES[k]: what for k, what in _FILE_NOTES.items()},
            generated=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
        ),
    }
    paths = {key: out / FILE_NAMES[key] for key in FILE_NAMES}
    for key in ("results_csv", "leaderboard_csv", "leaderboard_md", "html"):
        _atomic_write(paths[key], contents[key].encode("utf-8"))
    return paths


_FILE_NOTES = {
    "results_csv": "every cell, one row each (params as JSON)",
    "leaderboard_csv": "the leaderboard above",
    "leaderboard_md": "the leaderboard as a Markdown table",
}


# ---------------------------------------------------------------- text tables

_TEXT_HEAD = ("#", "detector", "AUROC", "std", "AUPR-Out", "mean rank", "time", "errors")


def leaderboard_text(leaderboard: Sequence[Mapping]) -> str:
    """Fixed-width plain-text leaderboard for a terminal (no trailing newline).

    Columns: rank, detector, mean AUROC, its std over data sets, mean AUPR-Out, mean
    rank, total wall time and number of failed cells. Missing values show as an em dash.
    """
    rows = [_display_row(r) for r in leaderboard]
    widths = [max([len(h)] + [len(row[k]) for row in rows]) for k, h in enumerate(_TEXT_HEAD)]

    def line(values: Sequence[str]) -> str:
        parts = [v.ljust(w) if k == 1 else v.rjust(w) for k, (v, w) in enumerate(zip(values, widths))]
        return "  ".join(parts).rstrip()

    out = [line(_TEXT_HEAD), "  ".join("-" * w for w in widths)]
    out += [line(row) for row in rows] or ["(no results)"]
    return "\n".join(out)


def leaderboard_markdown(leaderboard: Sequence[Mapping]) -> str:
    """The leaderboard as a GitHub-flavoured Markdown table (ends with a newline)."""
    head = ("Rank", "Detector", "Data sets", "Mean AUROC", "Std AUROC", "Mean AUPR-Out",
            "Mean rank", "Total time", "Errors")
    align = ("---:", ":---") + ("---:",) * 7
    lines = ["| " + " | ".join(head) + " |", "| " + " | ".join(align) + " |"]
    for r in leaderboard:
        shown = _display_row(r)
        row = shown[:2] + (fmt_int(r.get("n_datasets")),) + shown[2:]
        lines.append("| " + " | ".join(_md_cell(v) for v in row) + " |")
    return "\n".join(lines) + "\n"


def _display_row(r: Mapping) -> tuple[str, ...]:
    return (
        fmt_int(r.get("rank")),
        str(r.get("detector", "")),
        fmt_float(r.get("mean_auroc")),
        fmt_float(r.get("std_auroc")),
        fmt_float(r.get("mean_aupr_out")),
        fmt_float(r.get("mean_rank"), 2),
        fmt_seconds(r.get("total_seconds")),
        fmt_int(r.get("n_errors") or 0),
    )


def _md_cell(text: str) -> str:
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


# ---------------------------------------------------------------- aggregation


def per_dataset_auroc(cells: Sequence[Mapping], detectors: Sequence[str]) -> PerDataset:
    """Mean and std (ddof=0) over seeds of AUROC per (detector, data set), over ok cells with a finite AUROC.

    Data sets are in natural order of their names (``2_x`` before ``10_x``).
    """
    datasets = sorted({str(c.get("dataset")) for c in cells}, key=_natural_key)
    row = {d: i for i, d in enumerate(detectors)}
    col = {d: j for j, d in enumerate(datasets)}
    shape = (len(detectors), len(datasets))
    values: dict[tuple[int, int], list[float]] = {}
    n_cells = np.zeros(shape, dtype=int)
    for c in cells:
        i, j = row[str(c.get("detector"))], col[str(c.get("dataset"))]
        n_cells[i, j] += 1
        auc = _as_float(c.get("auroc"))
        if c.get("status") == "ok" and math.isfinite(auc):
            values.setdefault((i, j), []).append(auc)
    mean, std = np.full(shape, np.nan), np.full(shape, np.nan)
    n_ok = np.zeros(shape, dtype=int)
    for (i, j), v in values.items():
        mean[i, j], std[i, j], n_ok[i, j] = np.mean(v), np.std(v), len(v)
    return PerDataset(list(detectors), datasets, mean, std, n_ok, n_cells, _dataset_meta(cells))


def _dataset_meta(cells: Sequence[Mapping]) -> dict[str, dict]:
    """Sizes and anomaly rate per data set, taken from its first cell that has each value."""
    keys = ("n_train", "n_test", "n_features", "anomaly_rate")
    meta: dict[str, dict] = {}
    for c in sorted(cells, key=lambda c: c.get("status") != "ok"):  # ok cells first
        m = meta.setdefault(str(c.get("dataset")), {})
        for k in keys:
            if k not in m and not is_missing(c.get(k)):
                m[k] = c.get(k)
    return meta


def _detector_order(cells: Sequence[Mapping], leaderboard: Sequence[Mapping]) -> list[str]:
    """Leaderboard order, then detectors that appear only in cells, in order of appearance."""
    names = [str(r.get("detector")) for r in leaderboard]
    names += [str(c.get("detector")) for c in cells]
    return list(dict.fromkeys(names))


def _natural_key(text: str) -> list:
    return [(0, int(p), "") if p.isdigit() else (1, 0, p.lower()) for p in re.split(r"(\d+)", text) if p]


def _as_float(value) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


# ---------------------------------------------------------------- figures


def _figures(leaderboard: Sequence[Mapping], table: PerDataset, curves: Mapping | None) -> list[Plot]:
    """Render the figures that have data; a figure with nothing to show is left out."""
    names = [str(r.get("detector")) for r in leaderboard]
    mean = [_as_float(r.get("mean_auroc")) for r in leaderboard]
    std = [_as_float(r.get("std_auroc")) for r in leaderboard]
    seconds = [_as_float(r.get("total_seconds")) for r in leaderboard]
    candidates = [
        ("auroc-bars", "Mean AUROC per detector over data sets, with the std over data sets; "
         "the dashed line is chance (0.5).", plots.auroc_bars(names, mean, std), False),
        ("auroc-heatmap", "Mean AUROC over seeds for each detector (rows) and data set "
         "(columns); grey: no successful run.",
         plots.auroc_heatmap(table.detectors, table.datasets, table.mean), True),
        ("auroc-vs-time", "Mean AUROC against total fit + score time (log scale): "
         "up and to the left is better.", plots.auroc_vs_time(names, mean, seconds), False),
    ]
    if curves:
        shown = min(len(curves), plots.MAX_ROC_PANELS)
        caption = (f"ROC curves on {shown} of {len(curves)} data sets (one seed)."
                   if len(curves) > shown else "ROC curves (one seed).")
        candidates.append(("roc", caption, plots.roc_panels(curves), False))
    return [Plot(key, caption, png, wide) for key, caption, png, wide in candidates if png]


# ---------------------------------------------------------------- files


def _result_columns(cells: Sequence[Mapping]) -> tuple[str, ...]:
    extra = sorted({k for c in cells for k in c} - set(RESULT_COLUMNS))
    return RESULT_COLUMNS + tuple(extra)


def _csv_text(rows: Sequence[Mapping], columns: Sequence[str]) -> str:
    """CSV with a header; None and NaN become empty fields, dicts and lists JSON."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows([_csv_value(r.get(k)) for k in columns] for r in rows)
    return buffer.getvalue()


def _csv_value(value) -> str:
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(value, sort_keys=True, default=_json_default)
    return str(value)


def _json_default(value):
    if isinstance(value, (np.generic, np.ndarray)):
        return value.tolist() if isinstance(value, np.ndarray) else value.item()
    return str(value)


def _atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to a temporary file next to ``path``, flush it to disk, then rename over ``path``."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; a report is meant to be shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise

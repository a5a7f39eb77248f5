"""Report of a shift protocol run (C10-OC, C10-R, SPA, SSA): tables, the severity plot, HTML.

::

    from oddkit.protocols.shift import c10_r
    from oddkit.report.shift import write_shift_report, leaderboard_markdown
    result = c10_r("../shared", limit=20, corruptions=["gaussian_noise", "fog"])
    write_shift_report(result, "oddkit-shift")

Input is a :class:`~oddkit.protocols.shift.ShiftResult`: ``rows`` (one per protocol,
setting, seed, class, detector, shift, severity), ``summary`` (means over seeds, then
classes; :func:`oddkit.protocols.shift.summarize`) and ``info`` (provenance).

* :func:`leaderboard_markdown`: the protocol's main table (C10-R: AUROC U, A, C with
  GS(A), GS(C) beside them; SPA: clean, the mean over transforms and each transform with
  GS; SSA: SSA-self and SSA-all; C10-OC: the mean and each class), detectors ordered by
  the first AUROC column, the number of classes (units) behind each mean;
* :func:`severity_plot`: AUROC against severity, one small panel per corruption, one
  line per detector (severity 0 = the unshifted setting U), PNG via the Agg canvas;
* :func:`write_shift_report`: ``results.csv``, ``summary.csv``, ``leaderboard.md``,
  ``auroc_vs_severity.png`` (when there is a severity axis), ``report.html`` (reusing
  the page pieces of :mod:`oddkit.report.html`) and ``provenance.json``, each written
  atomically.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from . import _atomic_write, _csv_text, _md_cell
from .html import (
    Plot,
    _e,
    _figures_section,
    _files_section,
    _head,
    _provenance_section,
    _table,
    fmt_float,
)

__all__ = ["leaderboard_columns", "leaderboard_markdown", "severity_plot", "severity_table", "write_shift_report"]

RESULT_COLUMNS: tuple[str, ...] = (
    "protocol", "setting", "seed", "class", "class_index", "detector", "shift", "severity", "auroc",
    "auroc_standard", "gs", "fpr95", "aupr_in", "aupr_out", "detection_error", "n_normal", "n_anomalous",
    "fit_s", "error",
)  # fmt: skip
SUMMARY_COLUMNS: tuple[str, ...] = (
    "protocol", "setting", "detector", "shift", "severity", "auroc", "auroc_std", "auroc_standard", "gs",
    "gs_std", "n_units", "n_units_gs", "n_seeds", "fpr95", "aupr_in", "aupr_out", "errors",
)  # fmt: skip
FILE_NAMES = {
    "results_csv": "results.csv",
    "summary_csv": "summary.csv",
    "leaderboard_md": "leaderboard.md",
    "severity_png": "auroc_vs_severity.png",
    "html": "report.html",
    "provenance": "provenance.json",
}
_FILE_NOTES = {
    "results_csv": "every (setting, seed, class, detector, shift, severity) row",
    "summary_csv": "means over seeds, then classes, with the number of classes",
    "leaderboard_md": "the main table as Markdown",
    "severity_png": "AUROC against severity per corruption",
    "provenance": "protocol, data fingerprints, backbone, weights hash, versions, machine",
}
PANEL_INCHES = 2.3
MAX_PANEL_COLUMNS = 5


# ---------------------------------------------------------------- tables
Column = tuple[str, str, str, Any, str]  # (title, setting, shift, severity, metric)


def leaderboard_columns(summary: Sequence[Mapping[str, Any]], protocol: str) -> list[Column]:
    """The columns of the main table for ``protocol`` (display name, e.g. ``"C10-R"``)."""
    present = {(r["setting"], r["shift"], r["severity"]) for r in summary}
    if protocol == "C10-R":
        cols: list[Column] = [("AUROC U", "U", "", None, "auroc")]
        for s in ("A", "C"):
            if (s, "all", None) in present:
                cols += [(f"AUROC {s}", s, "all", None, "auroc"), (f"GS({s})", s, "all", None, "gs")]
        return cols
    if protocol == "SPA":
        cols = [("AUROC clean", "clean", "", None, "auroc"), ("AUROC SPA mean", "SPA", "mean", 5, "auroc"),
                ("GS mean", "SPA", "mean", 5, "gs")]  # fmt: skip
        shifts = list(dict.fromkeys(r["shift"] for r in summary if r["setting"] == "SPA" and r["shift"] != "mean"))
        return cols + [(t, "SPA", t, 5, "auroc") for t in shifts]
    if protocol == "SSA":
        return [("AUROC SSA-self", "SSA-self", "", 5, "auroc"), ("AUROC SSA-all", "SSA-all", "", 5, "auroc")]
    return [("AUROC", "clean", "", None, "auroc")]


def _pivot(summary: Sequence[Mapping[str, Any]], columns: list[Column]) -> tuple[list[str], np.ndarray, dict]:
    """Detectors (best first by the first column) x columns of summary values, and unit counts."""
    detectors = list(dict.fromkeys(str(r["detector"]) for r in summary))
    index = {(r["detector"], r["setting"], r["shift"], r["severity"]): r for r in summary}
    values = np.full((len(detectors), len(columns)), np.nan)
    units: dict[str, Any] = {}
    for i, det in enumerate(detectors):
        for j, (_, setting, shift, severity, metric) in enumerate(columns):
            r = index.get((det, setting, shift, severity))
            if r is not None:
                values[i, j] = _num(r.get(metric))
                if j == 0:
                    units[det] = r.get("n_units")
    order = sorted(range(len(detectors)), key=lambda i: (not np.isfinite(values[i, 0]), -np.nan_to_num(values[i, 0])))
    return [detectors[i] for i in order], values[order], units


def leaderboard_markdown(result: Any) -> str:
    """The protocol's main table as Markdown, with a summary line and the subset note."""
    info = dict(result.info or {})
    protocol = str(info.get("protocol", ""))
    columns = leaderboard_columns(result.summary, protocol)
    detectors, values, units = _pivot(result.summary, columns)
    version = f" v{info['protocol_version']}" if info.get("protocol_version") else ""
    lines = [f"# {_md_cell(protocol)}{version} leaderboard", "", _md_cell(_summary_text(info)), ""]
    head = ["Rank", "Detector", *[c[0] for c in columns], "Classes"]
    lines += ["| " + " | ".join(_md_cell(h) for h in head) + " |",
              "| " + " | ".join(["---:", ":---"] + ["---:"] * (len(columns) + 1)) + " |"]  # fmt: skip
    for i, det in enumerate(detectors):
        cells = [fmt_float(v) for v in values[i]]
        lines.append("| " + " | ".join([str(i + 1), _md_cell(det), *cells, str(units.get(det, ""))]) + " |")
    lines += ["", _legend(protocol), ""]
    lines += _severity_markdown(result.summary)
    failed = sorted({r["detector"] for r in result.rows if r.get("error")})
    if failed:
        lines += ["Rows with errors (see results.csv): " + ", ".join(f"`{_md_cell(d)}`" for d in failed), ""]
    return "\n".join(lines)


def severity_table(summary: Sequence[Mapping[str, Any]], setting: str = "C") -> tuple[list[str], list[int], np.ndarray]:
    """Per detector and severity: the mean over shifts of the per-group AUROC (itself a mean
    over classes). Returns (detectors, severities, values of shape (detectors, severities))."""
    rows = [r for r in summary if r["setting"] == setting and r["shift"] not in ("all", "mean")
            and isinstance(r["severity"], (int, np.integer))]  # fmt: skip
    detectors = list(dict.fromkeys(str(r["detector"]) for r in rows))
    severities = sorted({int(r["severity"]) for r in rows})
    values = np.full((len(detectors), len(severities)), np.nan)
    for i, det in enumerate(detectors):
        for j, sev in enumerate(severities):
            vals = [_num(r.get("auroc")) for r in rows if r["detector"] == det and r["severity"] == sev]
            with np.errstate(invalid="ignore"):
                values[i, j] = float(np.mean(vals)) if vals else np.nan
    return detectors, severities, values


def _severity_markdown(summary: Sequence[Mapping[str, Any]]) -> list[str]:
    detectors, severities, values = severity_table(summary)
    if not detectors:
        return []
    n_shifts = len({r["shift"] for r in summary if r["setting"] == "C" and r["shift"] not in ("all", "mean")})
    lines = [f"## AUROC by severity (setting C, mean over {n_shifts} corruptions)", "",
             "| Detector | " + " | ".join(f"severity {s}" for s in severities) + " |",
             "| :--- | " + " | ".join("---:" for _ in severities) + " |"]  # fmt: skip
    for i, det in enumerate(detectors):
        lines.append(f"| {_md_cell(det)} | " + " | ".join(fmt_float(v) for v in values[i]) + " |")
    return [*lines, ""]


def _legend(protocol: str) -> str:
    common = ("Means: first over seeds, then over classes (the units; 'Classes' = classes with a finite "
              "AUROC in the first column). ")  # fmt: skip
    if protocol == "C10-R":
        return common + ("U: clean one-class AUROC. A / C: the class's clean test images plus all its shifted "
                         "copies as normal, clean other-class images as anomalies. GS = clip((AUROC_shifted - "
                         "0.5) / (AUROC_U - 0.5), 0, 1), per class, then averaged (NaN classes left out).")
    if protocol == "SPA":
        return common + "Every test image under the same transform at severity 5; GS relative to clean."
    if protocol == "SSA":
        return common + ("One transform per test image; meaning-changing transforms make an image anomalous "
                         "for its class. SSA-all adds the other classes' images as anomalies.")
    return common


def _summary_text(info: Mapping[str, Any]) -> str:
    bits = [f"data {info.get('data', '?')}", f"backbone {info.get('backbone', '?')}"]
    if info.get("weights_hash"):
        bits.append(f"weights sha256 {str(info['weights_hash'])[:16]}")
    bits.append(f"{info.get('n_train', '?')} train / {info.get('n_test', '?')} test images")
    bits.append(f"seeds {info.get('seeds')}")
    bits.append(str(info.get("subset", "")))
    return " \u00b7 ".join(b for b in bits if b)


def _num(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


# ---------------------------------------------------------------- severity plot
def severity_plot(summary: Sequence[Mapping[str, Any]], setting: str = "C", reference: str = "U") -> bytes | None:
    """AUROC (mean over classes) against severity: a panel per shift, a line per detector.

    Severity 0 is the ``reference`` setting (unshifted). Only rows of ``setting`` with a
    numeric severity are drawn; None when there are none.
    """
    from matplotlib import colormaps
    from matplotlib.figure import Figure

    from .plots import _png

    rows = [r for r in summary if r["setting"] == setting and isinstance(r["severity"], (int, np.integer))
            and r["shift"] not in ("all", "mean")]  # fmt: skip
    if not rows:
        return None
    shifts = list(dict.fromkeys(r["shift"] for r in rows))
    detectors = list(dict.fromkeys(r["detector"] for r in rows))
    base = {r["detector"]: _num(r.get("auroc")) for r in summary if r["setting"] == reference}
    ncols = min(MAX_PANEL_COLUMNS, len(shifts))
    nrows = -(-len(shifts) // ncols)
    fig = Figure(figsize=(PANEL_INCHES * ncols + 1.8, PANEL_INCHES * nrows + 0.6), dpi=100, layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False, sharex=True, sharey=True)
    colours = colormaps["tab10"]
    for k, shift in enumerate(shifts):
        ax = axes[k // ncols][k % ncols]
        for j, det in enumerate(detectors):
            pts = sorted((int(r["severity"]), _num(r.get("auroc"))) for r in rows if r["shift"] == shift
                         and r["detector"] == det)  # fmt: skip
            if det in base:
                pts = [(0, base[det])] + pts
            x, y = zip(*pts) if pts else ((), ())
            ax.plot(x, y, marker="o", markersize=3, linewidth=1.4, color=colours(j % 10), label=det)
        ax.set_title(shift, fontsize=9)
        ax.axhline(0.5, color="#999999", linestyle="--", linewidth=0.8)
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=8)
    for k in range(len(shifts), nrows * ncols):
        axes[k // ncols][k % ncols].set_visible(False)
    fig.supxlabel("severity (0 = unshifted)", fontsize=9)
    fig.supylabel("AUROC (mean over classes)", fontsize=9)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside right upper", fontsize=8)
    return _png(fig)


# ---------------------------------------------------------------- writer
def write_shift_report(
    result: Any,
    out_dir: str | os.PathLike[str],
    title: str | None = None,
    *,
    provenance: Mapping[str, Any] | None = None,
) -> dict[str, Path]:
    """Write the report files (module docstring) into ``out_dir`` (created); return their paths."""
    from ..bench.provenance import collect

    info = dict(result.info or {})
    title = title or f"oddkit shift benchmark: {info.get('protocol', '')}, {info.get('backbone', '')}"
    prov = dict(provenance) if provenance is not None else collect(**info)
    png = severity_plot(result.summary)
    contents: dict[str, bytes] = {
        "results_csv": _csv_text(result.rows, _columns(result.rows, RESULT_COLUMNS)).encode(),
        "summary_csv": _csv_text(result.summary, _columns(result.summary, SUMMARY_COLUMNS)).encode(),
        "leaderboard_md": leaderboard_markdown(result).encode(),
        "provenance": (json.dumps(prov, indent=2, default=str) + "\n").encode(),
    }
    if png is not None:
        contents["severity_png"] = png
    contents["html"] = _page(title, result, prov, png).encode()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {key: out / FILE_NAMES[key] for key in contents}
    for key, data in contents.items():
        _atomic_write(paths[key], data)
    return paths


def _columns(rows: Sequence[Mapping[str, Any]], first: tuple[str, ...]) -> tuple[str, ...]:
    keys = {k for r in rows for k in r}
    return tuple(k for k in first if k in keys) + tuple(sorted(keys - set(first)))


def _page(title: str, result: Any, prov: Mapping[str, Any], png: bytes | None) -> str:
    info = dict(result.info or {})
    protocol = str(info.get("protocol", ""))
    columns = leaderboard_columns(result.summary, protocol)
    detectors, values, units = _pivot(result.summary, columns)
    head = ["#", "Detector", *[c[0] for c in columns], "Classes"]
    body = []
    for i, det in enumerate(detectors):
        cells = [f"<td class=\"num\">{i + 1}</td>", f"<td>{_e(det)}</td>"]
        cells += [f"<td class=\"num\">{_e(fmt_float(v))}</td>" for v in values[i]]
        cells.append(f"<td class=\"num\">{_e(units.get(det, ''))}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    generated = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    figures = [Plot("severity", "AUROC (mean over classes) against severity per corruption; severity 0 = "
                    "setting U (no shift).", png, True)] if png else []  # fmt: skip
    files = {FILE_NAMES[k]: v for k, v in _FILE_NOTES.items() if k != "severity_png" or png}
    parts = [
        _head(title), f"<h1>{_e(title)}</h1>",
        f"<p class=\"summary\">{_e(_summary_text(info))} &middot; generated {_e(generated)}</p>",
        "<h2>Leaderboard</h2>", "<div class=\"scroll\">" + _table(head, body, "leaderboard") + "</div>",
        f"<p class=\"summary\">{_e(_legend(protocol))}</p>",
        _figures_section(figures), _provenance_section(prov), _files_section(files), "</body>\n</html>\n",
    ]  # fmt: skip
    return "\n".join(p for p in parts if p)

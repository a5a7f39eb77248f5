"""Report of an image OOD benchmark (``oddkit bench ood``): HTML page, CSV rows, Markdown leaderboard.

::

    from oddkit.protocols import c10_ood_local
    from oddkit.report.ood import write_ood_report, ood_leaderboard, leaderboard_text
    result = c10_ood_local("../shared", detectors=["msp", "energy", "vim"])
    paths = write_ood_report(result, "oddkit-ood", title="C10-OOD-local")
    print(leaderboard_text(ood_leaderboard(result.rows)))

Input is an :class:`~oddkit.protocols.image_ood.OODResult`: one row per (detector, OOD
set) with AUROC, FPR95, AUPR-In and AUPR-Out (OOD = positive class), the raw scores of
every detector that ran, and ``info`` (protocol, backbone, weights hash, ID accuracy,
set sizes, ...). The leaderboard orders detectors by their mean AUROC over all OOD sets
(failed detectors last) and adds, per group (near / far, and ``all`` when both occur),
the mean of each metric over the group's sets.

Files written into the output folder (each rendered in memory, then written
atomically): ``report.html`` (self-contained: inline CSS, figures as PNG data URIs),
``results.csv`` (every row), ``leaderboard.md`` (one table per metric) and
``provenance.json``. The page shows a summary, the four leaderboard tables, figures
(score histograms of the best detectors, ROC curves per OOD set, an AUROC heatmap),
the errors and the provenance. One detector, failed detectors and NaN metrics all give
a valid report.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from . import _atomic_write, _csv_text, _md_cell, plots
from .html import (
    MISSING,
    Plot,
    _e,
    _figures_section,
    _files_section,
    _head,
    _provenance_section,
    _table,
    fmt_float,
    fmt_seconds,
    is_missing,
)

__all__ = [
    "RESULT_COLUMNS",
    "OODBoard",
    "leaderboard_markdown",
    "leaderboard_text",
    "ood_leaderboard",
    "write_ood_report",
]

#: metrics of a row in report order, with their display names and direction.
METRICS: dict[str, str] = {"auroc": "AUROC", "fpr95": "FPR95", "aupr_in": "AUPR-In", "aupr_out": "AUPR-Out"}
LOWER_IS_BETTER = frozenset({"fpr95"})
GROUP_ORDER = ("near", "far")

RESULT_COLUMNS: tuple[str, ...] = (
    "protocol", "detector", "ood_set", "group", "auroc", "fpr95", "aupr_in", "aupr_out",
    "n_id", "n_ood", "fit_s", "score_s", "error",
)  # fmt: skip
"""Column order of ``results.csv``; keys a row has beyond these follow, sorted by name."""

FILE_NAMES = {
    "html": "report.html",
    "results_csv": "results.csv",
    "leaderboard_md": "leaderboard.md",
    "provenance": "provenance.json",
}
_FILE_NOTES = {
    "results_csv": "every (detector, OOD set) row with all metrics and times",
    "leaderboard_md": "the leaderboard tables as Markdown",
    "provenance": "protocol, data fingerprints, backbone, weights hash, versions, machine",
}
HIST_DETECTORS = 4  # detectors (best first) in the score-histogram figure
ROC_DETECTORS = 10  # detectors (best first) drawn in the ROC panels


# ---------------------------------------------------------------- leaderboard


@dataclass
class OODBoard:
    """The leaderboard: detectors best first, one column per OOD set and per group mean.

    ``columns`` are ``(kind, name)`` pairs, kind ``"set"`` (an OOD set) or ``"group"``
    (a group mean: ``near``, ``far``, ``all``); ``values[metric]`` has shape
    (len(detectors), len(columns)). ``mean_auroc`` is the mean AUROC over all sets (the
    sort key); ``errors`` maps failed detectors to their message.
    """

    detectors: list[str]
    columns: list[tuple[str, str]]
    values: dict[str, np.ndarray]
    mean_auroc: np.ndarray
    groups: dict[str, str] = field(default_factory=dict)
    group_sizes: dict[str, int] = field(default_factory=dict)
    fit_s: dict[str, float] = field(default_factory=dict)
    score_s: dict[str, float] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)

    def column_title(self, column: tuple[str, str]) -> str:
        kind, name = column
        if kind == "set":
            return f"{name} ({self.groups.get(name, '?')})"
        n = self.group_sizes.get(name, 0)
        return f"{name} mean ({n} set{'' if n == 1 else 's'})"


def ood_leaderboard(rows: Sequence[Mapping[str, Any]]) -> OODBoard:
    """Aggregate rows into an :class:`OODBoard` (group means as :func:`group_means` defines them)."""
    from ..protocols.image_ood import group_means

    sets = _ordered_sets(rows)
    groups = {s: g for s, g in sets}
    group_cols = [g for g in GROUP_ORDER if g in groups.values()]
    if len(group_cols) > 1:
        group_cols.append("all")
    columns = [("set", s) for s, _ in sets] + [("group", g) for g in group_cols]
    detectors = list(dict.fromkeys(str(r["detector"]) for r in rows))
    col = {c: j for j, c in enumerate(columns)}
    values = {m: np.full((len(detectors), len(columns)), np.nan) for m in METRICS}
    row_of = {d: i for i, d in enumerate(detectors)}
    for r in rows:
        for m in METRICS:
            values[m][row_of[str(r["detector"])], col[("set", str(r["ood_set"]))]] = _num(r.get(m))
    for g in group_means(rows):
        key = ("group", str(g["group"]))
        if key in col:
            for m in METRICS:
                values[m][row_of[str(g["detector"])], col[key]] = _num(g.get(m))
    set_cols = [col[("set", s)] for s, _ in sets]
    with np.errstate(invalid="ignore"):
        mean_auroc = values["auroc"][:, set_cols].mean(axis=1)
    order = sorted(range(len(detectors)), key=lambda i: _rank_key(mean_auroc[i]))
    one_row = {str(r["detector"]): r for r in rows}  # times are the same on each of its rows
    errors: dict[str, str] = {}
    for r in rows:
        if r.get("error"):
            errors.setdefault(str(r["detector"]), str(r["error"]))
    return OODBoard(
        detectors=[detectors[i] for i in order],
        columns=columns,
        values={m: v[order] for m, v in values.items()},
        mean_auroc=mean_auroc[order],
        groups=groups,
        group_sizes={g: sum(1 for _, gg in sets if g in (gg, "all")) for g in group_cols},
        fit_s={d: _num(r.get("fit_s")) for d, r in one_row.items()},
        score_s={d: _num(r.get("score_s")) for d, r in one_row.items()},
        errors=errors,
    )


def _rank_key(mean_auroc: float) -> tuple[bool, float]:
    """Best mean AUROC first; NaN (failed) last, in order of appearance (the sort is stable)."""
    finite = bool(np.isfinite(mean_auroc))
    return (not finite, -float(mean_auroc) if finite else 0.0)


def _ordered_sets(rows: Sequence[Mapping[str, Any]]) -> list[tuple[str, str]]:
    """(OOD set, group) pairs: near sets first, then far, each in order of appearance."""
    seen = dict.fromkeys((str(r["ood_set"]), str(r["group"])) for r in rows)
    rank = {g: i for i, g in enumerate(GROUP_ORDER)}
    return sorted(seen, key=lambda sg: rank.get(sg[1], len(rank)))


def _num(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _best(values: np.ndarray, metric: str) -> np.ndarray:
    """Per column, the best finite value (NaN where a column has none)."""
    out = np.full(values.shape[1], np.nan)
    for j in range(values.shape[1]):
        col = values[:, j][np.isfinite(values[:, j])]
        if col.size:
            out[j] = col.min() if metric in LOWER_IS_BETTER else col.max()
    return out


# ---------------------------------------------------------------- text and Markdown


def leaderboard_text(board: OODBoard, metrics: Sequence[str] = ("auroc", "fpr95")) -> str:
    """Two fixed-width tables for a terminal: per OOD set, then per group; cells ``AUROC / FPR95``.

    Detectors are best first by mean AUROC over all sets; a failed detector shows
    ``failed`` and its message is listed below. No trailing newline.
    """
    label = " / ".join(METRICS[m] for m in metrics)
    set_cols = [c for c in board.columns if c[0] == "set"]
    group_cols = [c for c in board.columns if c[0] == "group"]
    parts = [
        f"{label} per OOD set (best mean AUROC first; FPR95: share of OOD accepted at 95% ID recall)",
        _text_table(board, set_cols, metrics),
        "",
        f"{label} means per group",
        _text_table(board, group_cols, metrics),
    ]
    if board.errors:
        parts += ["", "failed detectors:"] + [f"  {d}: {msg}" for d, msg in board.errors.items()]
    return "\n".join(parts)


def _text_table(board: OODBoard, columns: list[tuple[str, str]], metrics: Sequence[str]) -> str:
    head = ["#", "detector"] + [board.column_title(c) for c in columns]
    index = [board.columns.index(c) for c in columns]
    body = []
    for i, det in enumerate(board.detectors):
        cells = [_pair(board, i, j, metrics) for j in index]
        body.append([str(i + 1), det] + cells)
    widths = [max(len(r[k]) for r in [head, *body]) for k in range(len(head))]

    def line(values: list[str]) -> str:
        return "  ".join(v.ljust(w) if k == 1 else v.rjust(w) for k, (v, w) in enumerate(zip(values, widths))).rstrip()

    return "\n".join([line(head), "  ".join("-" * w for w in widths)] + [line(r) for r in body])


def _pair(board: OODBoard, i: int, j: int, metrics: Sequence[str]) -> str:
    if board.detectors[i] in board.errors:
        return "failed"
    return " / ".join(fmt_float(board.values[m][i, j]) for m in metrics)


def leaderboard_markdown(board: OODBoard, info: Mapping[str, Any] | None = None) -> str:
    """The leaderboard as Markdown: a summary line, one table per metric, the failures."""
    lines = [f"# OOD leaderboard: {_md_cell(str((info or {}).get('protocol', 'image OOD')))}", ""]
    if info:
        lines += [_md_cell(_summary_text(info, board)), ""]
    for metric, name in METRICS.items():
        direction = "lower is better" if metric in LOWER_IS_BETTER else "higher is better"
        head = ["Rank", "Detector"] + [board.column_title(c) for c in board.columns]
        lines += [f"## {name} ({direction})", "",
                  "| " + " | ".join(_md_cell(h) for h in head) + " |",
                  "| " + " | ".join(["---:", ":---"] + ["---:"] * len(board.columns)) + " |"]
        for i, det in enumerate(board.detectors):
            cells = ["failed" if det in board.errors else fmt_float(v) for v in board.values[metric][i]]
            lines.append("| " + " | ".join([str(i + 1), _md_cell(det)] + cells) + " |")
        lines.append("")
    if board.errors:
        lines += ["## Failed detectors", ""] + [f"- `{_md_cell(d)}`: {_md_cell(m)}" for d, m in board.errors.items()]
        lines.append("")
    return "\n".join(lines)


def _summary_text(info: Mapping[str, Any], board: OODBoard) -> str:
    bits = []
    if info.get("protocol"):
        version = f" v{info['protocol_version']}" if info.get("protocol_version") else ""
        bits.append(f"protocol {info['protocol']}{version}")
    if info.get("backbone"):
        bits.append(f"backbone {info['backbone']}")
    if info.get("weights_hash"):
        bits.append(f"weights sha256 {str(info['weights_hash'])[:16]}")
    if not is_missing(info.get("id_accuracy")):
        bits.append(f"ID accuracy {_percent(info.get('id_accuracy'))}")
    if info.get("n_train") is not None:
        bits.append(f"{info['n_train']} train / {info.get('n_id_test', MISSING)} ID test images")
    sizes = info.get("ood_sizes") or {}
    if sizes:
        bits.append("OOD: " + ", ".join(f"{k} {v}" for k, v in sizes.items()))
    bits.append(f"{len(board.detectors)} detectors ({len(board.errors)} failed)")
    return " \u00b7 ".join(bits)


def _percent(value: Any) -> str:
    return MISSING if is_missing(value) else f"{100 * float(value):.2f}%"


# ---------------------------------------------------------------- writer


def write_ood_report(
    result: Any,
    out_dir: str | os.PathLike[str],
    title: str | None = None,
    *,
    provenance: Mapping[str, Any] | None = None,
) -> dict[str, Path]:
    """Write ``report.html``, ``results.csv``, ``leaderboard.md`` and ``provenance.json``.

    ``result``: an ``OODResult`` (``rows``, ``scores``, ``info``). ``title`` defaults to
    the protocol's name. ``provenance`` defaults to
    :func:`oddkit.bench.provenance.collect` with ``result.info``. ``out_dir`` is created
    when missing. Returns the written paths keyed ``html``, ``results_csv``,
    ``leaderboard_md`` and ``provenance``.
    """
    from ..bench.provenance import collect

    info = dict(result.info or {})
    title = title or f"oddkit OOD benchmark: {info.get('protocol', 'image OOD')}"
    prov = dict(provenance) if provenance is not None else collect(**info)
    board = ood_leaderboard(result.rows)
    rows = [{"protocol": info.get("protocol", ""), **r} for r in result.rows]
    contents = {
        "results_csv": _csv_text(rows, _result_columns(rows)),
        "leaderboard_md": leaderboard_markdown(board, info),
        "provenance": json.dumps(prov, indent=2, default=str) + "\n",
        "html": _page(title, board, info, prov, _figures(board, result.scores)),
    }
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {key: out / name for key, name in FILE_NAMES.items()}
    for key, text in contents.items():
        _atomic_write(paths[key], text.encode("utf-8"))
    return paths


def _result_columns(rows: Sequence[Mapping[str, Any]]) -> tuple[str, ...]:
    return RESULT_COLUMNS + tuple(sorted({k for r in rows for k in r} - set(RESULT_COLUMNS)))


# ---------------------------------------------------------------- figures


def _figures(board: OODBoard, scores: Mapping[str, Mapping[str, np.ndarray]]) -> list[Plot]:
    """Histograms of the best detectors, ROC panels per OOD set, the AUROC heatmap (those with data)."""
    ranked = [d for d in board.detectors if d in scores and d not in board.errors]
    top = ranked[:HIST_DETECTORS]
    shown_roc = ranked[:ROC_DETECTORS]
    curves = _curves({d: scores[d] for d in shown_roc})
    titles = [board.column_title(c) for c in board.columns]
    roc_note = f" (the best {len(shown_roc)} of {len(ranked)} detectors)" if len(ranked) > len(shown_roc) else ""
    hist_caption = (f"Score distributions of the {len(top)} best detectors by mean AUROC: ID test (grey) "
                    "against each OOD set, density-normalised (higher score = more OOD).")
    heat_caption = ("AUROC of each detector (rows, best first) on each OOD set and the group means "
                    "(columns); grey: the detector failed.")
    candidates = [
        ("score-histograms", hist_caption, plots.score_histograms({d: scores[d] for d in top}), True),
        ("roc", f"ROC curves per OOD set, OOD = positive class{roc_note}.", plots.roc_panels(curves), False),
        ("auroc-heatmap", heat_caption,
         plots.auroc_heatmap(board.detectors, titles, board.values["auroc"], colorbar_label="AUROC"), True),
    ]  # fmt: skip
    return [Plot(key, caption, png, wide) for key, caption, png, wide in candidates if png]


def _curves(scores: Mapping[str, Mapping[str, np.ndarray]]) -> dict[str, dict[str, tuple]]:
    """OOD set -> detector -> (y_true, scores) with ID = 0 and OOD = 1, for plots.roc_panels."""
    out: dict[str, dict[str, tuple]] = {}
    for det, per in scores.items():
        s_id = np.asarray(per["ID"], dtype=float)
        for name, s_ood in per.items():
            if name == "ID":
                continue
            s_ood = np.asarray(s_ood, dtype=float)
            y = np.r_[np.zeros(s_id.size, int), np.ones(s_ood.size, int)]
            out.setdefault(name, {})[det] = (y, np.r_[s_id, s_ood])
    return out


# ---------------------------------------------------------------- HTML


def _page(title: str, board: OODBoard, info: Mapping[str, Any], prov: Mapping[str, Any], figures: list[Plot]) -> str:
    generated = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    parts = [
        _head(title),
        f"<h1>{_e(title)}</h1>",
        f"<p class=\"summary\">{_e(_summary_text(info, board))} &middot; generated {_e(generated)}</p>",
    ]
    if board.detectors and len(board.errors) == len(board.detectors):
        parts.append("<p class=\"notice\">No detector finished, so there is nothing to rank or plot. "
                     "The errors section below lists what went wrong.</p>")
    parts += [_leaderboard_sections(board), _figures_section(figures), _errors_section(board),
              _provenance_section(prov),
              _files_section({FILE_NAMES[k]: what for k, what in _FILE_NOTES.items()}),
              "</body>\n</html>\n"]  # fmt: skip
    return "\n".join(p for p in parts if p)


def _leaderboard_sections(board: OODBoard) -> str:
    if not board.detectors:
        return "<h2>Leaderboard</h2>\n<p>No detector has a result.</p>"
    note = ("<p class=\"summary\">Detectors are ordered by mean AUROC over all OOD sets. Group columns are "
            "means over the group's sets. Bold: best in the column. FPR95: the share of OOD images "
            "accepted when the threshold keeps 95% of the ID test images (lower is better).</p>")
    out = ["<h2>Leaderboard</h2>", note]
    for metric, name in METRICS.items():
        direction = "lower is better" if metric in LOWER_IS_BETTER else "higher is better"
        out.append(f"<h3>{_e(name)} ({direction})</h3>")
        out.append("<div class=\"scroll\">" + _metric_table(board, metric) + "</div>")
    return "\n".join(out)


def _metric_table(board: OODBoard, metric: str) -> str:
    with_times = metric == "auroc"
    head = ["#", "Detector"] + [board.column_title(c) for c in board.columns]
    head += ["Fit", "Score"] if with_times else []
    values = board.values[metric]
    best = _best(values, metric)
    rows = []
    for i, det in enumerate(board.detectors):
        failed = det in board.errors
        cells = [f"<td class=\"num\">{i + 1}</td>", f"<td>{_e(det)}</td>"]
        for j, v in enumerate(values[i]):
            if failed:
                cells.append("<td class=\"num bad\">failed</td>")
            else:
                top = " top" if np.isfinite(v) and v == best[j] else ""
                cells.append(f"<td class=\"num{top}\">{_e(fmt_float(v))}</td>")
        if with_times:
            cells += [f"<td class=\"num\">{_e(fmt_seconds(board.fit_s.get(det)))}</td>",
                      f"<td class=\"num\">{_e(fmt_seconds(board.score_s.get(det)))}</td>"]
        cls = " class=\"best\"" if i == 0 and not failed and metric == "auroc" else ""
        rows.append(f"<tr{cls}>" + "".join(cells) + "</tr>")
    return _table(head, rows, f"leaderboard-{metric.replace('_', '-')}")


def _errors_section(board: OODBoard) -> str:
    if not board.errors:
        return "<h2>Errors</h2>\n<p>No errors.</p>"
    rows = [f"<tr><td>{_e(d)}</td><td><pre>{_e(m)}</pre></td></tr>" for d, m in board.errors.items()]
    return (f"<h2>Errors</h2>\n<p>{len(board.errors)} of {len(board.detectors)} detectors failed.</p>\n"
            + _table(["Detector", "Message"], rows, "errors"))

"""Self-contained HTML page for a benchmark run, plus the number formats all report files share.

The page has no external resource: the CSS is inline and figures are base64 PNG data
URIs, so it opens offline and can be mailed as one file. Every piece of text that comes
from the caller (titles, detector and data set names, error messages, provenance) goes
through :func:`html.escape`.

Order of the page: summary line, leaderboard (best row highlighted), figures, per data
set table (mean over seeds +- std), errors, provenance, links to the CSV/Markdown files.
"""

from __future__ import annotations

import base64
import html
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

MISSING = "\u2014"  # em dash shown for None / NaN


@dataclass
class Plot:
    """One embedded PNG with its caption (``alt`` doubles as the text for screen readers)."""

    key: str
    caption: str
    png: bytes
    wide: bool = False  # wide figures keep their natural size inside a scrolling box


@dataclass
class PerDataset:
    """Mean and std over seeds of AUROC for each (detector, data set), from the ok cells.

    ``mean``, ``std`` and ``n_ok`` have shape (len(detectors), len(datasets)); ``n_cells``
    counts all cells (ok or not). ``meta`` holds n_train / n_test / n_features /
    anomaly_rate per data set.
    """

    detectors: list[str]
    datasets: list[str]
    mean: np.ndarray
    std: np.ndarray
    n_ok: np.ndarray
    n_cells: np.ndarray
    meta: dict[str, dict] = field(default_factory=dict)


# ---------------------------------------------------------------- number formats


def is_missing(value) -> bool:
    """True for None and for float NaN (also numpy floats)."""
    if value is None:
        return True
    try:
        return math.isnan(value)
    except TypeError:
        return False


def fmt_float(value, digits: int = 3) -> str:
    """Fixed decimals, or an em dash for None / NaN."""
    if is_missing(value):
        return MISSING
    try:
        return f"{float(value):.{digits}f}"
    except (TypeError, ValueError):
        return str(value)


def fmt_seconds(value) -> str:
    """Human wall time: ``0.42s``, ``12.3s``, ``4m05s``, ``2h07m``; em dash when missing."""
    if is_missing(value):
        return MISSING
    s = float(value)
    if s < 10:
        return f"{s:.2f}s"
    if s < 60:
        return f"{s:.1f}s"
    if s < 3600:
        minutes, rest = divmod(int(round(s)), 60)
        return f"{minutes}m{rest:02d}s"
    hours, rest = divmod(int(round(s)), 3600)
    return f"{hours}h{rest // 60:02d}m"


def fmt_int(value) -> str:
    """Integer text, or an em dash for None / NaN."""
    if is_missing(value):
        return MISSING
    try:
        return str(int(value))
    except (TypeError, ValueError):
        return str(value)


# ---------------------------------------------------------------- page


def render_page(
    *,
    title: str,
    cells: Sequence[Mapping],
    leaderboard: Sequence[Mapping],
    provenance: Mapping,
    table: PerDataset,
    figures: Sequence[Plot],
    files: Mapping[str, str],
    generated: str,
) -> str:
    """The whole HTML document as one string."""
    n_ok = sum(1 for c in cells if c.get("status") == "ok")
    parts = [
        _head(title),
        f"<h1>{_e(title)}</h1>",
        _summary(cells, n_ok, table, provenance, generated),
    ]
    if n_ok == 0:
        parts.append(_notice(cells))
    parts += [
        _leaderboard_section(leaderboard),
        _figures_section(figures),
        _per_dataset_section(table),
        _errors_section(cells),
        _provenance_section(provenance),
        _files_section(files),
        "</body>\n</html>\n",
    ]
    return "\n".join(p for p in parts if p)


def _e(value) -> str:
    """Escaped text of any value."""
    return html.escape(str(value), quote=True)


_CSS = """
body { font-family: -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif;
       margin: 24px auto; max-width: 1400px; padding: 0 16px; color: #222; line-height: 1.4; }
h1 { font-size: 1.6em; margin-bottom: 4px; }
h2 { font-size: 1.25em; margin-top: 32px; border-bottom: 1px solid #ddd; padding-bottom: 4px; }
.summary { color: #555; margin-top: 0; }
.notice { background: #fff4e5; border: 1px solid #f0b46a; padding: 10px 14px; border-radius: 4px; }
table { border-collapse: collapse; font-size: 0.9em; margin: 8px 0; }
th, td { border: 1px solid #ddd; padding: 4px 8px; vertical-align: top; }
th { background: #f3f3f3; text-align: left; position: sticky; top: 0; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tr.best td { background: #e5f5e0; font-weight: 600; }
td.bad { color: #b00020; }
td.top { font-weight: 700; }
.scroll { overflow-x: auto; max-width: 100%; }
figure { margin: 16px 0 28px 0; }
figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figure.wide img { max-width: none; }
figcaption { color: #555; font-size: 0.9em; margin-top: 4px; }
pre { margin: 0; white-space: pre-wrap; word-break: break-word; font-size: 0.85em; }
"""


def _head(title: str) -> str:
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
        f"<title>{_e(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>"
    )


def _summary(cells, n_ok: int, table: PerDataset, provenance: Mapping, generated: str) -> str:
    protocol = provenance.get("protocol") or _first(cells, "protocol")
    version = provenance.get("protocol_version") or _first(cells, "protocol_version")
    bits = []
    if protocol:
        bits.append(f"protocol {_e(protocol)}" + (f" v{_e(version)}" if version else ""))
    bits.append(f"{len(cells)} cells ({n_ok} ok, {len(cells) - n_ok} failed)")
    bits.append(f"{len(table.datasets)} data sets, {len(table.detectors)} detectors")
    bits.append(f"generated {_e(generated)}")
    return f"<p class=\"summary\">{' &middot; '.join(bits)}</p>"


def _first(cells, key: str):
    return next((c.get(key) for c in cells if c.get(key)), None)


def _notice(cells) -> str:
    if not cells:
        text = "No cells were run, so there is nothing to rank or plot."
    else:
        text = ("No cell finished successfully, so there is nothing to rank or plot. "
                "The errors section below lists what went wrong.")
    return f"<p class=\"notice\">{_e(text)}</p>"


def _leaderboard_section(leaderboard: Sequence[Mapping]) -> str:
    head = ["Rank", "Detector", "Data sets", "Mean AUROC", "Std AUROC", "Mean AUPR-Out",
            "Mean rank", "Total time", "Errors"]
    if not leaderboard:
        return "<h2>Leaderboard</h2>\n<p>No detector has a result.</p>"
    rows = []
    for i, r in enumerate(leaderboard):
        errors = r.get("n_errors") or 0
        cls = " class=\"best\"" if i == 0 else ""
        rows.append(
            f"<tr{cls}><td class=\"num\">{_e(fmt_int(r.get('rank')))}</td>"
            f"<td>{_e(r.get('detector'))}</td>"
            f"<td class=\"num\">{_e(fmt_int(r.get('n_datasets')))}</td>"
            f"<td class=\"num\">{_e(fmt_float(r.get('mean_auroc')))}</td>"
            f"<td class=\"num\">{_e(fmt_float(r.get('std_auroc')))}</td>"
            f"<td class=\"num\">{_e(fmt_float(r.get('mean_aupr_out')))}</td>"
            f"<td class=\"num\">{_e(fmt_float(r.get('mean_rank'), 2))}</td>"
            f"<td class=\"num\">{_e(fmt_seconds(r.get('total_seconds')))}</td>"
            f"<td class=\"num{' bad' if errors else ''}\">{_e(fmt_int(errors))}</td></tr>"
        )
    note = ("<p class=\"summary\">Means are over data sets of the per-data-set means over seeds; "
            "the std is over data sets. Mean rank: average rank of the detector across data sets "
            "(1 = best).</p>")
    return "<h2>Leaderboard</h2>\n" + _table(head, rows, "leaderboard") + "\n" + note


def _figures_section(figures: Sequence[Plot]) -> str:
    if not figures:
        return ""
    blocks = []
    for fig in figures:
        data = base64.b64encode(fig.png).decode("ascii")
        img = f"<img alt=\"{_e(fig.caption)}\" src=\"data:image/png;base64,{data}\">"
        if fig.wide:
            img = f"<div class=\"scroll\">{img}</div>"
        cls = " class=\"wide\"" if fig.wide else ""
        blocks.append(f"<figure id=\"fig-{_e(fig.key)}\"{cls}>{img}"
                      f"<figcaption>{_e(fig.caption)}</figcaption></figure>")
    return "<h2>Figures</h2>\n" + "\n".join(blocks)


def _per_dataset_section(t: PerDataset) -> str:
    if not t.datasets or not t.detectors:
        return ""
    head = ["Data set", "Train", "Test", "Features", "Anomaly rate"] + list(t.detectors)
    rows = []
    for j, ds in enumerate(t.datasets):
        meta = t.meta.get(ds, {})
        col = t.mean[:, j]
        best = np.nanmax(col) if np.isfinite(col).any() else math.nan
        cells = [f"<td>{_e(ds)}</td>"]
        cells += [f"<td class=\"num\">{_e(fmt_int(meta.get(k)))}</td>"
                  for k in ("n_train", "n_test", "n_features")]
        cells.append(f"<td class=\"num\">{_e(fmt_float(meta.get('anomaly_rate')))}</td>")
        cells += [_mean_cell(t, i, j, best) for i in range(len(t.detectors))]
        rows.append("<tr>" + "".join(cells) + "</tr>")
    note = ("<p class=\"summary\">AUROC, mean &plusmn; std over the seeds that finished (std with "
            "ddof=0; shown when at least two seeds finished). Bold: best on the data set. "
            "&dagger;: some seeds failed; &ldquo;failed&rdquo;: all seeds failed.</p>")
    return ("<h2>Per data set</h2>\n" + note + "\n<div class=\"scroll\">"
            + _table(head, rows, "per-dataset") + "</div>")


def _mean_cell(t: PerDataset, i: int, j: int, best: float) -> str:
    n_ok, n_all = int(t.n_ok[i, j]), int(t.n_cells[i, j])
    if n_all == 0:
        return f"<td class=\"num\">{MISSING}</td>"
    if n_ok == 0:
        return "<td class=\"num bad\">failed</td>"
    m, s = t.mean[i, j], t.std[i, j]
    text = fmt_float(m) + (f" \u00b1 {fmt_float(s)}" if n_ok >= 2 and not is_missing(s) else "")
    mark = "\u2020" if n_ok < n_all else ""
    title = f" title=\"{n_ok} of {n_all} seeds finished\"" if mark else ""
    cls = "num top" if np.isfinite(m) and m == best else "num"
    return f"<td class=\"{cls}\"{title}>{_e(text)}{mark}</td>"


def _errors_section(cells: Sequence[Mapping]) -> str:
    failed = [c for c in cells if c.get("status") != "ok"]
    if not failed:
        return "<h2>Errors</h2>\n<p>No errors.</p>"
    head = ["Data set", "Seed", "Detector", "Status", "Message"]
    rows = [
        f"<tr><td>{_e(c.get('dataset'))}</td><td class=\"num\">{_e(c.get('seed'))}</td>"
        f"<td>{_e(c.get('detector'))}</td><td>{_e(c.get('status'))}</td>"
        f"<td><pre>{_e(c.get('error') or '(no message)')}</pre></td></tr>"
        for c in failed
    ]
    return (f"<h2>Errors</h2>\n<p>{len(failed)} of {len(cells)} cells failed.</p>\n"
            + _table(head, rows, "errors"))


def _provenance_section(provenance: Mapping) -> str:
    if not provenance:
        return "<h2>Provenance</h2>\n<p>No provenance recorded.</p>"
    rows = [f"<tr><th>{_e(k)}</th><td>{_provenance_value(v)}</td></tr>" for k, v in provenance.items()]
    return "<h2>Provenance</h2>\n" + _table([], rows, "provenance")


def _provenance_value(value) -> str:
    if isinstance(value, (Mapping, list, tuple)):
        text = json.dumps(value, indent=2, sort_keys=False, default=str)
        return f"<pre>{_e(text)}</pre>"
    return _e("" if value is None else value)


def _files_section(files: Mapping[str, str]) -> str:
    if not files:
        return ""
    items = "".join(f"<li><a href=\"{_e(name)}\">{_e(name)}</a>: {_e(what)}</li>"
                    for name, what in files.items())
    return f"<h2>Files</h2>\n<ul>{items}</ul>"


def _table(head: Sequence[str], rows: Sequence[str], css_id: str) -> str:
    thead = ("<thead><tr>" + "".join(f"<th>{_e(h)}</th>" for h in head) + "</tr></thead>") if head else ""
    return f"<table id=\"{css_id}\">{thead}<tbody>\n" + "\n".join(rows) + "\n</tbody></table>"

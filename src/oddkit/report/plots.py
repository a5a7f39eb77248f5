"""Figures for benchmark reports, rendered off-screen to PNG bytes.

Every function builds its own :class:`matplotlib.figure.Figure` and draws it with the
Agg canvas, so nothing here touches pyplot's global state or the backend of a user's
interactive session. Functions take plain numbers (already aggregated by the caller),
return the PNG as ``bytes``, and return ``None`` when there is nothing to draw (for
example when every value is NaN).

Figure sizes grow with the number of detectors and data sets so labels stay readable
(a heatmap of 15 detectors x 37 data sets is about 19 x 8 inches at 100 dpi).
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from sklearn.metrics import roc_curve

DPI = 100
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MAX_ROC_PANELS = 6
MAX_HIST_SETS = 6  # OOD sets (panels) per detector row in score_histograms
HIST_BINS = 50
_CHAR_INCH = 0.075  # rough width of one tick-label character at font size 9


def auroc_bars(names: Sequence[str], means: Sequence[float], stds: Sequence[float]) -> bytes | None:
    """Horizontal bars of mean AUROC per detector with std error bars, best at the top.

    Detectors whose mean is NaN are left out. Returns ``None`` when none is left.
    """
    mean = np.asarray(means, dtype=float)
    std = np.nan_to_num(np.asarray(stds, dtype=float), nan=0.0)
    keep = np.flatnonzero(np.isfinite(mean))
    if keep.size == 0:
        return None
    order = keep[np.argsort(-mean[keep], kind="stable")][::-1]  # best drawn last = on top
    labels = [str(names[i]) for i in order]
    width = 6.5 + _label_inches(labels)
    height = max(2.6, 1.2 + 0.32 * len(order))
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    ax = fig.add_subplot()
    y = np.arange(len(order))
    ax.barh(y, mean[order], xerr=std[order], color="#4C72B0", ecolor="#333333", capsize=3, height=0.7)
    for yi, m, s in zip(y, mean[order], std[order]):
        ax.text(min(m + s, 1.0) + 0.005, yi, f"{m:.3f}", va="center", fontsize=8)
    ax.set_yticks(y, labels)
    lo = float(np.nanmin(mean[order] - std[order]))
    ax.set_xlim(max(0.0, min(0.5, lo) - 0.05), 1.06)
    ax.axvline(0.5, color="#999999", linestyle="--", linewidth=1)
    ax.set_xlabel("mean AUROC over data sets (error bar: std over data sets)")
    ax.grid(axis="x", alpha=0.3)
    return _png(fig)


def auroc_heatmap(
    detectors: Sequence[str],
    datasets: Sequence[str],
    values: np.ndarray,
    colorbar_label: str = "mean AUROC over seeds",
) -> bytes | None:
    """Heatmap of mean AUROC with detectors as rows and data sets as columns.

    ``values`` has shape (len(detectors), len(datasets)); NaN cells are drawn grey.
    Values are written into the cells while the cells are wide enough to hold them.
    ``colorbar_label`` names what the values are.
    """
    values = np.asarray(values, dtype=float)
    if values.size == 0 or not np.isfinite(values).any():
        return None
    n_det, n_ds = values.shape
    col_w = 0.45 if n_ds <= 40 else max(0.12, 18.0 / n_ds)
    annotate = col_w >= 0.4 and n_det <= 60
    label_w = _label_inches(detectors)
    width = max(5.0, 1.8 + label_w + col_w * n_ds)
    height = 1.2 + 0.35 * n_det + _label_inches(datasets) * 0.75
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    ax = fig.add_subplot()
    cmap = _colormap("RdYlGn")
    vmin = min(0.5, float(np.nanmin(values)))
    image = ax.imshow(np.ma.masked_invalid(values), cmap=cmap, vmin=vmin, vmax=1.0, aspect="auto")
    ax.set_xticks(np.arange(n_ds), [str(d) for d in datasets], rotation=60, ha="right",
                  rotation_mode="anchor", fontsize=8)
    ax.set_yticks(np.arange(n_det), [str(d) for d in detectors], fontsize=9)
    ax.set_xticks(np.arange(n_ds + 1) - 0.5, minor=True)
    ax.set_yticks(np.arange(n_det + 1) - 0.5, minor=True)
    ax.grid(which="minor", color="white", linewidth=0.8)
    ax.tick_params(which="minor", length=0)
    if annotate:
        _annotate_cells(ax, values, cmap, vmin)
    bar = fig.colorbar(image, ax=ax, fraction=0.04, pad=0.01)
    bar.set_label(colorbar_label)
    return _png(fig)


def auroc_vs_time(names: Sequence[str], aurocs: Sequence[float], seconds: Sequence[float]) -> bytes | None:
    """Scatter of mean AUROC against total wall time (log axis), one labelled point per detector."""
    auc = np.asarray(aurocs, dtype=float)
    sec = np.asarray(seconds, dtype=float)
    keep = np.flatnonzero(np.isfinite(auc) & np.isfinite(sec))
    if keep.size == 0:
        return None
    floor = 1e-3
    t = np.maximum(sec[keep], floor)
    fig = Figure(figsize=(8.0, 5.5), dpi=DPI, layout="constrained")
    ax = fig.add_subplot()
    ax.scatter(t, auc[keep], s=40, color="#DD8452", edgecolor="#333333", zorder=3)
    for x, y, i in zip(t, auc[keep], keep):
        ax.annotate(str(names[i]), (x, y), xytext=(5, 4), textcoords="offset points", fontsize=8)
    ax.set_xscale("log")
    lo, hi = float(t.min()), float(t.max())
    ax.set_xlim(lo / 2.0, hi * 4.0)  # room on the right for the labels
    ax.set_xlabel(f"total fit + score time over all cells (seconds, log scale; floored at {floor:g})")
    ax.set_ylabel("mean AUROC over data sets")
    ax.grid(True, which="both", alpha=0.3)
    return _png(fig)


def roc_panels(curves: Mapping[str, Mapping[str, tuple]]) -> bytes | None:
    """ROC curves, one panel per data set (the first :data:`MAX_ROC_PANELS`), one line per detector.

    ``curves`` maps data set -> detector -> ``(y_true, scores)`` with 1 = anomaly. Pairs
    with a single class or non-finite scores are skipped. Colours are shared across
    panels and explained in one legend below the panels.
    """
    panels = _roc_points(curves)
    if not panels:
        return None
    detectors = list(dict.fromkeys(det for lines in panels.values() for det in lines))
    palette = _colormap("tab10" if len(detectors) <= 10 else "tab20")
    colour = {det: palette(i % palette.N) for i, det in enumerate(detectors)}
    ncols = min(3, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    legend_rows = math.ceil(len(detectors) / 3)
    fig = Figure(figsize=(4.2 * ncols, 4.0 * nrows + 0.3 * legend_rows), dpi=DPI, layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for ax, (dataset, lines) in zip(axes.flat, panels.items()):
        for det, (fpr, tpr) in lines.items():
            ax.plot(fpr, tpr, color=colour[det], linewidth=1.3, label=det)
        ax.plot([0, 1], [0, 1], color="#999999", linestyle="--", linewidth=0.8)
        ax.set_title(str(dataset), fontsize=10)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.01)
        ax.set_aspect("equal")
        ax.set_xlabel("false positive rate")
        ax.set_ylabel("true positive rate")
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    handles = [_line_handle(colour[d]) for d in detectors]
    fig.legend(handles, detectors, loc="outside lower center", ncols=min(3, len(detectors)), fontsize=9)
    return _png(fig)


def score_histograms(
    scores: Mapping[str, Mapping[str, np.ndarray]], id_key: str = "ID", bins: int = HIST_BINS
) -> bytes | None:
    """Score histograms, ID against each OOD set: one row per detector, one panel per OOD set.

    ``scores`` maps detector -> {``id_key``: ID scores, OOD set name: scores, ...} (the
    first :data:`MAX_HIST_SETS` OOD sets are drawn). In each panel the ID histogram (grey)
    and the OOD set's (its own colour, the same in every row) are density-normalised, so
    sets of different sizes compare. A row shares one bin range: the 0.5th to 99.5th
    percentile of all its scores (values outside fall into the edge bins), so a few
    extreme scores do not squash the rest. Detectors without finite ID scores are skipped.
    """
    rows = {str(det): per for det, per in scores.items() if _finite(per.get(id_key))}
    sets = list(dict.fromkeys(k for per in rows.values() for k in per if k != id_key))[:MAX_HIST_SETS]
    if not rows or not sets:
        return None
    palette = _colormap("tab10")
    colour = {name: palette(i % palette.N) for i, name in enumerate(sets)}
    fig = Figure(figsize=(3.2 * len(sets), 2.5 * len(rows) + 0.5), dpi=DPI, layout="constrained")
    axes = fig.subplots(len(rows), len(sets), squeeze=False)
    for r, (det, per) in enumerate(rows.items()):
        edges = _bin_edges([per[k] for k in [id_key, *sets] if _finite(per.get(k))], bins)
        for c, name in enumerate(sets):
            ax = axes[r, c]
            _hist(ax, per[id_key], edges, "#7F7F7F", id_key)
            if _finite(per.get(name)):
                _hist(ax, per[name], edges, colour[name], name)
            ax.set_title(f"{det}: {name}", fontsize=9)
            ax.tick_params(labelsize=7)
            ax.set_yticks([])
            if r == len(rows) - 1:
                ax.set_xlabel("score (higher = more OOD)", fontsize=8)
    handles = [_line_handle("#7F7F7F")] + [_line_handle(colour[n]) for n in sets]
    fig.legend(handles, [id_key, *sets], loc="outside lower center", ncols=min(6, len(sets) + 1), fontsize=9)
    return _png(fig)


def _finite(values) -> bool:
    """True for a non-empty array of finite numbers."""
    if values is None:
        return False
    v = np.asarray(values, dtype=float)
    return v.size > 0 and bool(np.isfinite(v).all())


def _bin_edges(arrays: Sequence[np.ndarray], bins: int) -> np.ndarray:
    both = np.concatenate([np.asarray(a, dtype=float).ravel() for a in arrays])
    lo, hi = np.percentile(both, [0.5, 99.5])
    if not hi > lo:  # (almost) constant scores: a small window around them
        lo, hi = float(both.min()) - 0.5, float(both.max()) + 0.5
    return np.linspace(lo, hi, bins + 1)


def _hist(ax, values, edges: np.ndarray, colour, label: str) -> None:
    v = np.clip(np.asarray(values, dtype=float).ravel(), edges[0], edges[-1])
    ax.hist(v, bins=edges, density=True, color=colour, alpha=0.45, label=label)
    ax.hist(v, bins=edges, density=True, histtype="step", color=colour, linewidth=1.0)


def _roc_points(curves: Mapping[str, Mapping[str, tuple]]) -> dict[str, dict[str, tuple]]:
    """(fpr, tpr) per data set and detector for the first panels that have a usable pair."""
    panels: dict[str, dict[str, tuple]] = {}
    for dataset, per_det in curves.items():
        lines = {}
        for det, (y_true, scores) in per_det.items():
            y = np.asarray(y_true).ravel()
            s = np.asarray(scores, dtype=float).ravel()
            if y.size != s.size or y.size == 0 or np.unique(y).size != 2 or not np.isfinite(s).all():
                continue
            fpr, tpr, _ = roc_curve(y, s)
            lines[str(det)] = (fpr, tpr)
        if lines:
            panels[str(dataset)] = lines
        if len(panels) == MAX_ROC_PANELS:
            break
    return panels


def _annotate_cells(ax, values: np.ndarray, cmap, vmin: float) -> None:
    """Write each finite value into its cell, dark on light colours and light on dark."""
    rows, cols = np.nonzero(np.isfinite(values))
    for r, c in zip(rows, cols):
        v = values[r, c]
        red, green, blue, _ = cmap((v - vmin) / max(1.0 - vmin, 1e-12))
        light = 0.299 * red + 0.587 * green + 0.114 * blue > 0.55
        ax.text(c, r, f"{v:.2f}", ha="center", va="center", fontsize=7,
                color="black" if light else "white")


def _label_inches(labels: Sequence[str]) -> float:
    """Rough width in inches that the longest tick label needs."""
    return _CHAR_INCH * max((len(str(s)) for s in labels), default=0)


def _colormap(name: str):
    """A copy of a registered colormap with NaN (masked) drawn light grey."""
    return colormaps[name].with_extremes(bad="#DDDDDD")


def _line_handle(colour) -> Line2D:
    return Line2D([0], [0], color=colour, linewidth=2)


def _png(fig: Figure) -> bytes:
    """Render a figure through the Agg canvas and return the PNG bytes."""
    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, facecolor="white")
    return buffer.getvalue()

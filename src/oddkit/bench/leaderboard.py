"""Aggregating benchmark cells into a leaderboard.

Order of aggregation (``docs/protocols.md``, "Means over classes or data sets"): for
each detector and data set, first the mean over seeds; then the mean over data sets.
So a data set run with three seeds weighs as much as one run with one seed.

Columns of :func:`leaderboard` (one row per detector, best first):

``rank``           1 = best, by ``mean_auroc`` (then ``mean_rank``, then name).
``detector``       display name (unique per configuration).
``n_datasets``     data sets with at least one successful seed; the means below are
                   over these, each data set's value being the mean over its
                   successful seeds.
``mean_auroc``     mean over data sets of the per-data-set seed-mean AUROC.
``std_auroc``      standard deviation over data sets of the same per-data-set values
                   (population std, ``ddof=0``; 0 for one data set).
``mean_aupr_out``  as ``mean_auroc`` for AUPR-Out.
``mean_rank``      on each data set, detectors are ranked by their seed-mean AUROC
                   (1 = best, ties get the average rank); the mean of these ranks over
                   data sets. **Only data sets on which every detector succeeded on
                   every seed count**, so that a detector that fails on a hard data set
                   is not ranked against a smaller field there. NaN when no data set
                   qualifies.
``total_seconds``  sum of fit + score seconds over all of the detector's cells.
``n_errors``       cells with status "error".
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np
from scipy.stats import rankdata

__all__ = ["leaderboard", "per_dataset"]


def per_dataset(cells: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (detector, data set): means over seeds and counts.

    Keys: detector, dataset, n_seeds, n_ok, n_errors, mean_auroc, std_auroc (over
    seeds, ``ddof=0``), mean_aupr_out, mean_aupr_in, mean_fpr95, mean_fit_seconds,
    mean_score_seconds, seconds (fit + score summed over the seeds).
    """
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for cell in cells:
        groups.setdefault((str(cell["detector"]), str(cell["dataset"])), []).append(cell)
    rows = []
    for (detector, dataset), group in groups.items():
        ok = [c for c in group if c.get("status") == "ok"]
        rows.append(
            {
                "detector": detector,
                "dataset": dataset,
                "n_seeds": len(group),
                "n_ok": len(ok),
                "n_errors": len(group) - len(ok),
                "mean_auroc": _mean(c.get("auroc") for c in ok),
                "std_auroc": _std(c.get("auroc") for c in ok),
                "mean_aupr_out": _mean(c.get("aupr_out") for c in ok),
                "mean_aupr_in": _mean(c.get("aupr_in") for c in ok),
                "mean_fpr95": _mean(c.get("fpr95") for c in ok),
                "mean_fit_seconds": _mean(c.get("fit_seconds") for c in ok),
                "mean_score_seconds": _mean(c.get("score_seconds") for c in ok),
                "seconds": _seconds(group),
            }
        )
    return rows


def leaderboard(cells: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rank detectors over data sets (see the module docstring for every column)."""
    cells = list(cells)
    table = per_dataset(cells)
    detectors = _unique(str(c["detector"]) for c in cells)
    ranks = _mean_ranks(table, detectors)
    rows = []
    for det in detectors:
        mine = [r for r in table if r["detector"] == det]
        usable = [r for r in mine if r["n_ok"] > 0]
        aurocs = [r["mean_auroc"] for r in usable]
        rows.append(
            {
                "detector": det,
                "n_datasets": len(usable),
                "mean_auroc": _mean(aurocs),
                "std_auroc": _std(aurocs),
                "mean_aupr_out": _mean(r["mean_aupr_out"] for r in usable),
                "mean_rank": ranks.get(det, math.nan),
                "total_seconds": float(sum(r["seconds"] for r in mine)),
                "n_errors": int(sum(r["n_errors"] for r in mine)),
            }
        )
    rows.sort(key=_sort_key)
    return [{"rank": i, **row} for i, row in enumerate(rows, start=1)]


# --------------------------------------------------------------------------- helpers
def _mean_ranks(table: list[dict[str, Any]], detectors: list[str]) -> dict[str, float]:
    """Mean AUROC rank per detector over data sets where all detectors fully succeeded."""
    by_dataset: dict[str, dict[str, dict[str, Any]]] = {}
    for row in table:
        by_dataset.setdefault(row["dataset"], {})[row["detector"]] = row
    ranks: dict[str, list[float]] = {d: [] for d in detectors}
    for rows in by_dataset.values():
        complete = all(
            d in rows and rows[d]["n_errors"] == 0 and rows[d]["n_ok"] > 0 for d in detectors
        )
        if not complete:
            continue
        values = np.array([rows[d]["mean_auroc"] for d in detectors], dtype=np.float64)
        for d, r in zip(detectors, rankdata(-values, method="average")):
            ranks[d].append(float(r))
    return {d: _mean(r) for d, r in ranks.items()}


def _sort_key(row: dict[str, Any]) -> tuple[Any, ...]:
    auroc = row["mean_auroc"]
    rank = row["mean_rank"]
    return (
        math.isnan(auroc),
        -auroc if not math.isnan(auroc) else 0.0,
        math.isnan(rank),
        rank if not math.isnan(rank) else 0.0,
        row["detector"],
    )


def _values(values: Iterable[Any]) -> np.ndarray:
    return np.array([float(v) for v in values if v is not None], dtype=np.float64)


def _mean(values: Iterable[Any]) -> float:
    arr = _values(values)
    return float(arr.mean()) if arr.size else math.nan


def _std(values: Iterable[Any]) -> float:
    arr = _values(values)
    return float(arr.std(ddof=0)) if arr.size else math.nan


def _seconds(group: list[dict[str, Any]]) -> float:
    total = 0.0
    for cell in group:
        for key in ("fit_seconds", "score_seconds"):
            value = cell.get(key)
            if value is not None and math.isfinite(float(value)):
                total += float(value)
    return total


def _unique(items: Iterable[str]) -> list[str]:
    seen: dict[str, None] = {}
    for item in items:
        seen.setdefault(item, None)
    return list(seen)

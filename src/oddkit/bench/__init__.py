"""Benchmarking: the grid runner, the results store, leaderboards and provenance.

>>> from oddkit.bench import run_grid, leaderboard
>>> cells = run_grid(["data/14_glass.npz"], ["knn", "iforest"], [0, 1, 2],
...                  protocol="ADB-dev", store_path="out/results.jsonl")  # doctest: +SKIP
>>> leaderboard(cells)[0]["detector"]  # doctest: +SKIP
"""

from .leaderboard import leaderboard, per_dataset
from .provenance import collect
from .runner import DetectorSpec, curves, load_tables, parse_spec, parse_spec_list, run_grid, strip_scores
from .store import ResultStore, StoreError, cell_key, read_store

__all__ = [
    "DetectorSpec",
    "ResultStore",
    "StoreError",
    "cell_key",
    "collect",
    "curves",
    "leaderboard",
    "load_tables",
    "parse_spec",
    "parse_spec_list",
    "per_dataset",
    "read_store",
    "run_grid",
    "strip_scores",
]

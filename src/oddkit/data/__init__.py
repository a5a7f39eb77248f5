"""Data for oddkit: tabular files, bundled demo sets and reproducible splits.

* :func:`load_table` reads ``.npz`` / ``.mat`` / ``.csv`` / ``.tsv`` / ``.txt`` /
  ``.parquet`` into a :class:`Table` (float64 ``X``, optional 0/1 ``y`` with 1 = anomaly);
  :func:`load_folder` lists a benchmark folder's files.
* :func:`load_bundled` / :func:`list_bundled`: offline demo sets from scikit-learn's
  bundled data.
* :func:`stratified_split`, :func:`adb_dev_cut`, :func:`adb_dev_split`: the splits of
  the ADB-dev protocol (``shared/docs/protocols.md``).
"""

from __future__ import annotations

from .bundled import list_bundled, load_bundled
from .splits import adb_dev_cut, adb_dev_split, stratified_split
from .tabular import Table, load_folder, load_table

__all__ = [
    "Table",
    "adb_dev_cut",
    "adb_dev_split",
    "list_bundled",
    "load_bundled",
    "load_folder",
    "load_table",
    "stratified_split",
]

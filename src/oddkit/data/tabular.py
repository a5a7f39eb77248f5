"""Tabular data files as :class:`Table` objects (npz, mat, csv/tsv/txt, parquet).

:func:`load_table` reads one file into a :class:`Table` (features ``X`` as 2-D float64,
optional labels ``y`` as int64 with **1 = anomaly**); :func:`load_folder` lists the data
files of a benchmark folder. Every problem a user can hit with a file (missing, empty,
a label column that does not exist, text in a feature column, empty cells, ...) raises
:class:`~oddkit.errors.DataError` with a message that says what is wrong and what to do.
Nothing is imputed or dropped silently.

Formats
-------
``.npz``
    Arrays ``X`` (required) and ``y`` (optional), as ADBench ships them.
``.mat``
    ODDS files: variables ``X`` and ``y``. MATLAB v5 files are read with
    :func:`scipy.io.loadmat`; v7.3 files are HDF5 inside and need ``h5py``
    (``pip install h5py``).
``.csv``, ``.tsv``, ``.txt``
    A header row with column names, then one row per sample. ``.csv`` is comma
    separated, ``.tsv`` tab separated; for ``.txt`` the delimiter is sniffed among
    comma, tab, semicolon and space. The first non-blank row is always the header.
    Read with the standard :mod:`csv` module in chunks of rows (linear time, bounded
    temporary memory per chunk).
``.parquet``
    Needs ``pyarrow`` (``pip install 'oddkit[parquet]'``).

Label column
------------
``label`` selects the labels: a column name or a 0-based column index (negative counts
from the end) for CSV/TSV/Parquet; the name of the label array for ``.npz``/``.mat``.
``None`` (default) auto-detects: for CSV/TSV/Parquet a column named one of
``label``, ``y``, ``class``, ``outlier``, ``anomaly``, ``is_anomaly`` (case-insensitive);
for ``.npz``/``.mat`` an array named ``y``. No match means no labels. ``False`` turns
labels off even when such a column exists (the column then stays a feature).

Label values
------------
Labels must be binary. Accepted encodings (after stripping spaces, case-insensitive):

* read as 1 (anomaly): ``1`` (also ``1.0``), ``true``, ``t``, ``yes``, ``y``, ``o``
  (ODDS style), ``outlier``, ``anomaly``, ``anomalous``, ``abnormal``;
* read as 0 (normal): ``0`` (also ``0.0``), ``false``, ``f``, ``no``, ``n``,
  ``inlier``, ``normal``, ``nominal``.

Both values of a column must come from these lists (pairs such as ``o``/``n``,
``yes``/``no``, ``anomaly``/``normal``, ``outlier``/``inlier``).
Booleans are taken as True = anomaly. Anything else (for example ``-1``/``1``, which is
scikit-learn's *prediction* coding, or class numbers ``2``/``4``) is refused with the
values found and how to re-encode them; oddkit does not guess which value is the anomaly.
A label set with a single class loads (detectors fit on normal data only) and is flagged
by :attr:`Table.single_class`.
"""

from __future__ import annotations

import csv
import hashlib
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError

PathLike = str | os.PathLike[str]
LabelSpec = str | int | bool | None

#: Column names taken as the label column when ``label=None`` (compared case-insensitively).
LABEL_COLUMN_NAMES = ("label", "y", "class", "outlier", "anomaly", "is_anomaly")
#: Label tokens read as 1 (anomaly) and as 0 (normal); see the module docstring.
ANOMALY_TOKENS = frozenset(
    {"1", "true", "t", "yes", "y", "o", "outlier", "anomaly", "anomalous", "abnormal"}
)
NORMAL_TOKENS = frozenset({"0", "false", "f", "no", "n", "inlier", "normal", "nominal"})
#: Cell contents read as a missing value in CSV files (case-insensitive).
MISSING_TOKENS = ("", "nan", "na", "n/a", "null", "none", "?")
#: File suffixes :func:`load_table` understands.
SUPPORTED_SUFFIXES = (".npz", ".mat", ".csv", ".tsv", ".txt", ".parquet")
DEFAULT_FOLDER_PATTERNS = ("*.npz", "*.mat", "*.csv", "*.parquet")

_CSV_CHUNK_ROWS = 50_000  # rows parsed per step; module level so tests can shrink it
_FINGERPRINT_TAG = b"oddkit.data.Table/1"


# --------------------------------------------------------------------------- Table
@dataclass(eq=False, repr=False)
class Table:
    """A tabular data set: float64 features, optional 0/1 labels (1 = anomaly), provenance.

    Construction validates and converts: ``X`` becomes a finite 2-D float64 array,
    ``y`` (if given) an int64 vector of 0/1 with one entry per row. Bad input raises
    :class:`~oddkit.errors.DataError`.
    """

    X: np.ndarray
    y: np.ndarray | None
    name: str
    source: str
    feature_names: list[str] | None = None

    def __post_init__(self) -> None:
        where = self.source or self.name
        self.X = _as_features(self.X, where)
        self.feature_names = _as_feature_names(self.feature_names, self.X.shape[1], where)
        _check_finite(self.X, self.feature_names, where)
        if self.y is not None:
            self.y = _binary_labels(self.y, f"the labels (y) of {where}")
            if self.y.shape[0] != self.X.shape[0]:
                raise DataError(
                    f"{where}: y has {self.y.shape[0]} labels but X has {self.X.shape[0]} "
                    "rows; there must be exactly one label per row."
                )

    @property
    def n_rows(self) -> int:
        return int(self.X.shape[0])

    @property
    def n_features(self) -> int:
        return int(self.X.shape[1])

    @property
    def has_labels(self) -> bool:
        return self.y is not None

    @property
    def n_anomalies(self) -> int | None:
        """Number of rows labelled 1, or ``None`` without labels."""
        return None if self.y is None else int(self.y.sum())

    @property
    def anomaly_rate(self) -> float | None:
        """Share of rows labelled 1 (anomaly), or ``None`` without labels."""
        return None if self.y is None else float(self.y.mean())

    @property
    def single_class(self) -> bool:
        """True when labels exist but hold only one class (loading allows it; AUROC needs both)."""
        return self.y is not None and np.unique(self.y).size < 2

    def fingerprint(self) -> str:
        """Short hex digest (16 chars) of the shape, the ``X`` bytes and the ``y`` bytes.

        Computed from float64 little-endian ``X`` and int64 little-endian ``y``, so it is
        the same on every run and machine; ``name``, ``source`` and feature names do not
        enter it. Any change of a single value changes it.
        """
        digest = hashlib.sha256(_FINGERPRINT_TAG)
        digest.update(repr(tuple(self.X.shape)).encode())
        digest.update(memoryview(np.ascontiguousarray(self.X, dtype="<f8")).cast("B"))
        if self.y is None:
            digest.update(b"no-labels")
        else:
            digest.update(b"labels")
            digest.update(memoryview(np.ascontiguousarray(self.y, dtype="<i8")).cast("B"))
        return digest.hexdigest()[:16]

    def summary(self) -> dict[str, Any]:
        """JSON-able description for provenance records."""
        return {
            "name": self.name,
            "source": self.source,
            "n_rows": self.n_rows,
            "n_features": self.n_features,
            "n_anomalies": self.n_anomalies,
            "anomaly_rate": self.anomaly_rate,
            "fingerprint": self.fingerprint(),
        }

    def __repr__(self) -> str:
        rate = "None" if self.anomaly_rate is None else f"{self.anomaly_rate:.4f}"
        return (
            f"Table(name={self.name!r}, n_rows={self.n_rows}, n_features={self.n_features}, "
            f"anomaly_rate={rate}, source={self.source!r})"
        )


# --------------------------------------------------------------------------- public loaders
def load_table(path: PathLike, label: LabelSpec = None, *, name: str | None = None) -> Table:
    """Read one data file into a :class:`Table`; the format follows the file suffix.

    ``label`` picks the labels (see the module docstring): a column name or index for
    CSV/TSV/Parquet, an array name for ``.npz``/``.mat``, ``None`` to auto-detect,
    ``False`` for no labels. ``name`` defaults to the file name without suffix.
    """
    file = _existing_file(path)
    _check_label_spec(label)
    reader = _READERS[file.suffix.lower()]
    X, y, feature_names = reader(file, label)
    return Table(X=X, y=y, name=name or file.stem, source=str(file), feature_names=feature_names)


def load_folder(
    path: PathLike, pattern: str | Sequence[str] = DEFAULT_FOLDER_PATTERNS
) -> list[Path]:
    """Sorted data files of a benchmark folder (not recursive) matching any of ``pattern``."""
    folder = Path(path).expanduser()
    if not folder.exists():
        raise DataError(f"No such folder: {folder}. Check the path.")
    if not folder.is_dir():
        raise DataError(f"{folder} is a file, not a folder; use load_table() for a single file.")
    patterns = (pattern,) if isinstance(pattern, str) else tuple(pattern)
    files = sorted({f for p in patterns for f in folder.glob(p) if f.is_file()})
    if not files:
        raise DataError(
            f"No data files matching {list(patterns)} in {folder}. Put the data sets there "
            f"(supported: {', '.join(SUPPORTED_SUFFIXES)}) or pass pattern=..."
        )
    return files


# --------------------------------------------------------------------------- file checks
def _existing_file(path: PathLike) -> Path:
    file = Path(path).expanduser()
    if not file.exists():
        raise DataError(
            f"No such data file: {file} (relative paths start at {Path.cwd()}). Check the path."
        )
    if file.is_dir():
        raise DataError(f"{file} is a folder; use load_folder() to list its data files.")
    if file.suffix.lower() not in SUPPORTED_SUFFIXES:
        raise DataError(
            f"Unsupported file type {file.suffix!r} for {file}; supported: "
            f"{', '.join(SUPPORTED_SUFFIXES)}. Convert the file, e.g. to .npz with "
            "np.savez(path, X=X, y=y) or to .csv with a header row."
        )
    if file.stat().st_size == 0:
        raise DataError(f"{file} is empty (0 bytes). Re-export the data set.")
    return file.resolve()


def _check_label_spec(label: Any) -> None:
    if label is None or label is False:
        return
    if label is True or not isinstance(label, (str, int, np.integer)):
        raise DataError(
            f"label must be a column name (str), a column index (int), None (auto-detect) or "
            f"False (no labels); got {label!r}."
        )


# --------------------------------------------------------------------------- .npz / .mat
ArrayGetter = Callable[[str], Any]


def _read_npz(file: Path, label: LabelSpec) -> tuple[Any, Any, None]:
    try:
        with np.load(file, allow_pickle=False) as archive:
            return _pick_xy(list(archive.files), archive.__getitem__, label, file)
    except DataError:
        raise
    except Exception as exc:  # not a zip, object arrays (pickle), truncated file
        raise DataError(
            f"Could not read {file} as a .npz archive ({exc}). Save it with "
            "np.savez(path, X=X, y=y) using numeric arrays."
        ) from exc


def _read_mat(file: Path, label: LabelSpec) -> tuple[Any, Any, None]:
    import scipy.io

    try:
        major, _ = scipy.io.matlab.matfile_version(str(file))
    except Exception as exc:
        raise DataError(f"{file} is not a readable MATLAB .mat file ({exc}).") from exc
    if major == 2:
        return _read_mat_v73(file, label)
    try:
        variables = scipy.io.loadmat(str(file))
    except Exception as exc:
        raise DataError(f"Could not read {file} as a MATLAB file ({exc}).") from exc
    names = [k for k in variables if not k.startswith("__")]
    return _pick_xy(names, lambda key: _dense(variables[key]), label, file)


def _read_mat_v73(file: Path, label: LabelSpec) -> tuple[Any, Any, None]:
    """MATLAB v7.3 = HDF5; arrays are stored column-major, so h5py sees them transposed."""
    try:
        import h5py
    except ImportError as exc:
        raise DataError(
            f"{file} is a MATLAB v7.3 file (HDF5 inside); reading it needs h5py: "
            "pip install h5py. Or re-save it from MATLAB with save(..., '-v7')."
        ) from exc
    try:
        with h5py.File(file, "r") as handle:
            names = [k for k, v in handle.items() if isinstance(v, h5py.Dataset)]
            return _pick_xy(names, lambda key: np.asarray(handle[key][()]).T, label, file)
    except DataError:
        raise
    except Exception as exc:
        raise DataError(f"Could not read {file} as a MATLAB v7.3 (HDF5) file ({exc}).") from exc


def _dense(value: Any) -> Any:
    import scipy.sparse

    return value.toarray() if scipy.sparse.issparse(value) else value


def _pick_xy(
    names: list[str], get: ArrayGetter, label: LabelSpec, file: Path
) -> tuple[Any, Any, None]:
    """Features from the array ``X``; labels from ``label`` (an array name) or ``y``."""
    x_key = _find_name(names, "X")
    if x_key is None:
        raise DataError(
            f"{file} has no array named 'X' (found: {_preview(names)}). Store the features as "
            "X (rows x features) and the labels as y, e.g. np.savez(path, X=X, y=y)."
        )
    y_key = _label_array_name(names, label, file)
    X = get(x_key)
    y = None if y_key is None else get(y_key)
    return X, y, None


def _label_array_name(names: list[str], label: LabelSpec, file: Path) -> str | None:
    if label is False:
        return None
    if label is None:
        return _find_name(names, "y")
    if not isinstance(label, str):
        raise DataError(
            f"For {file.suffix} files, label names the label array (e.g. label='y'), not a "
            f"column index; arrays in {file.name}: {_preview(names)}."
        )
    if label not in names:
        raise DataError(f"No array named {label!r} in {file}; available arrays: {_preview(names)}.")
    return label


def _find_name(names: Iterable[str], wanted: str) -> str | None:
    """Exact match first, then a unique case-insensitive match."""
    names = list(names)
    if wanted in names:
        return wanted
    folded = [n for n in names if n.lower() == wanted.lower()]
    return folded[0] if len(folded) == 1 else None


# --------------------------------------------------------------------------- delimited text
def _read_delimited(file: Path, label: LabelSpec) -> tuple[np.ndarray, Any, list[str]]:
    with open(file, newline="", encoding="utf-8-sig") as handle:
        delimiter = _delimiter(file, handle)
        rows = filter(None, csv.reader(handle, delimiter=delimiter, skipinitialspace=True))
        header = next(rows, None)
        if header is None:
            raise DataError(f"{file} has no content (only blank lines). Re-export the data set.")
        header = [h.strip() for h in header]
        label_col = _resolve_label_column(header, label, file)
        feature_cols = [i for i in range(len(header)) if i != label_col]
        if not feature_cols:
            raise _no_features_error(file, header[label_col])
        X, raw_labels = _parse_rows(rows, header, feature_cols, label_col, file, delimiter)
    y = None
    if label_col is not None:
        y = _binary_labels(raw_labels, f"label column {header[label_col]!r} of {file}")
    return X, y, [header[i] for i in feature_cols]


def _delimiter(file: Path, handle: Any) -> str:
    suffix = file.suffix.lower()
    if suffix == ".csv":
        return ","
    if suffix == ".tsv":
        return "\t"
    sample = handle.read(65536)
    handle.seek(0)
    try:
        return csv.Sniffer().sniff(sample, delimiters=",\t; ").delimiter
    except csv.Error:
        return ","


def _parse_rows(
    rows: Iterator[list[str]],
    header: list[str],
    feature_cols: list[int],
    label_col: int | None,
    file: Path,
    delimiter: str,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Parse the data rows chunk by chunk into float features and raw label strings."""
    x_parts: list[np.ndarray] = []
    y_parts: list[np.ndarray] = []
    bad_examples: dict[int, list[str]] = {}
    n_done = 0
    while chunk := list(islice(rows, _CSV_CHUNK_ROWS)):
        cells = _cells(chunk, len(header), n_done, file, delimiter)
        values, bad = _to_float(cells[:, feature_cols])
        for col, examples in bad.items():
            kept = bad_examples.setdefault(feature_cols[col], [])
            kept.extend(e for e in examples if e not in kept)
        x_parts.append(values)
        if label_col is not None:
            y_parts.append(cells[:, label_col])
        n_done += len(chunk)
    if n_done == 0:
        raise DataError(f"{file} has a header row but no data rows. Re-export the data set.")
    if bad_examples:
        raise _non_numeric_error(bad_examples, header, label_col, file)
    X = np.concatenate(x_parts)
    return X, (np.concatenate(y_parts) if y_parts else None)


def _cells(
    chunk: list[list[str]], n_cols: int, n_done: int, file: Path, delimiter: str
) -> np.ndarray:
    """A chunk of rows as a 2-D object array of str; rows of the wrong length raise DataError."""
    try:
        cells = np.array(chunk, dtype=object)
    except ValueError:
        cells = None
    if cells is not None and cells.ndim == 2 and cells.shape[1] == n_cols:
        return cells
    lengths = np.fromiter(map(len, chunk), dtype=np.int64, count=len(chunk))
    first = int(np.flatnonzero(lengths != n_cols)[0])
    raise DataError(
        f"Data row {n_done + first + 1} of {file} (counting after the header) has "
        f"{lengths[first]} fields but the header has {n_cols} columns. Fix that row, or "
        f"check the delimiter (used {delimiter!r})."
    )


def _to_float(cells: np.ndarray) -> tuple[np.ndarray, dict[int, list[str]]]:
    """Parse string cells to float64; missing markers become NaN (reported later).

    Returns the values and, per column that holds text, up to three example bad values.
    The fast path is one vectorised conversion; only chunks with missing markers or text
    take the slower column-wise path.
    """
    try:
        return cells.astype(np.float64), {}
    except ValueError:
        pass
    stripped = np.char.strip(cells.astype(str))
    missing = np.isin(np.char.lower(stripped), MISSING_TOKENS)
    filled = np.where(missing, "nan", stripped)
    values = np.full(filled.shape, np.nan)
    bad: dict[int, list[str]] = {}
    for j in range(filled.shape[1]):  # loop over columns only, on the slow path
        try:
            values[:, j] = filled[:, j].astype(np.float64)
        except ValueError:
            bad[j] = _non_numbers(np.unique(filled[:, j]))
    return values, bad


def _non_numbers(candidates: Iterable[str], limit: int = 3) -> list[str]:
    found: list[str] = []
    for value in candidates:
        try:
            float(value)
        except ValueError:
            found.append(str(value))
            if len(found) == limit:
                break
    return found


def _no_features_error(file: Path, label_name: str) -> DataError:
    return DataError(
        f"{file} has no feature columns besides the label column {label_name!r}; "
        "a data set needs at least one feature."
    )


def _non_numeric_error(
    bad: dict[int, list[str]], header: list[str], label_col: int | None, file: Path
) -> DataError:
    described = "; ".join(
        f"{header[c]!r} (e.g. {', '.join(repr(v) for v in bad[c][:3])})" for c in sorted(bad)
    )
    hint = ""
    if label_col is None:
        hint = " If one of them holds the labels, pass label='<column name>'."
    return DataError(
        f"Non-numeric values in {len(bad)} feature column(s) of {file}: {described}. "
        "oddkit needs numeric features: drop these columns or encode them as numbers "
        f"(e.g. one-hot) before loading.{hint}"
    )


# --------------------------------------------------------------------------- parquet
def _read_parquet(file: Path, label: LabelSpec) -> tuple[np.ndarray, Any, list[str]]:
    try:
        import pyarrow as pa
        import pyarrow.compute as pc
        import pyarrow.parquet as pq
    except ImportError as exc:
        raise DataError(
            f"Reading {file} needs pyarrow: pip install 'oddkit[parquet]' (or pip install pyarrow)."
        ) from exc
    try:
        table = pq.read_table(file)
    except Exception as exc:
        raise DataError(f"Could not read {file} as a Parquet file ({exc}).") from exc
    header = [str(n) for n in table.column_names]
    label_col = _resolve_label_column(header, label, file)
    feature_cols = [i for i in range(len(header)) if i != label_col]
    if table.num_rows == 0:
        raise DataError(f"{file} has columns but no rows. Re-export the data set.")
    if not feature_cols:
        raise _no_features_error(file, header[label_col])
    bad = {
        i: _parquet_examples(table.column(i), pc)
        for i in feature_cols
        if not _arrow_numeric(table.column(i).type, pa)
    }
    if bad:
        raise _non_numeric_error(bad, header, label_col, file)
    X = np.column_stack(
        [table.column(i).cast(pa.float64()).to_numpy(zero_copy_only=False) for i in feature_cols]
    )
    y = None
    if label_col is not None:
        raw = table.column(label_col).to_numpy(zero_copy_only=False)
        y = _binary_labels(raw, f"label column {header[label_col]!r} of {file}")
    return X, y, [header[i] for i in feature_cols]


def _arrow_numeric(dtype: Any, pa: Any) -> bool:
    t = pa.types
    return t.is_integer(dtype) or t.is_floating(dtype) or t.is_boolean(dtype) or t.is_decimal(dtype)


def _parquet_examples(column: Any, pc: Any) -> list[str]:
    distinct = pc.unique(column.slice(0, 10_000).drop_null())
    return [str(v) for v in distinct.slice(0, 3).to_pylist()]


_READERS: dict[str, Callable[[Path, LabelSpec], tuple[Any, Any, Any]]] = {
    ".npz": _read_npz,
    ".mat": _read_mat,
    ".csv": _read_delimited,
    ".tsv": _read_delimited,
    ".txt": _read_delimited,
    ".parquet": _read_parquet,
}


# --------------------------------------------------------------------------- label column
def _resolve_label_column(header: list[str], label: LabelSpec, file: Path) -> int | None:
    """Index of the label column in ``header``, or ``None`` for no labels."""
    if label is False:
        return None
    if label is None:
        return _auto_label_column(header, file)
    if isinstance(label, str):
        return _named_column(header, label, file)
    n = len(header)
    index = int(label)
    if not -n <= index < n:
        raise DataError(
            f"label={index} is out of range: {file} has {n} columns (0..{n - 1}): "
            f"{_preview(header)}."
        )
    return index % n


def _auto_label_column(header: list[str], file: Path) -> int | None:
    found = [i for i, h in enumerate(header) if h.lower() in LABEL_COLUMN_NAMES]
    if len(found) > 1:
        names = ", ".join(repr(header[i]) for i in found)
        raise DataError(
            f"Several columns of {file} look like labels ({names}); pass label='<name>' to "
            "pick one (the others then count as features), or label=False for no labels."
        )
    return found[0] if found else None


def _named_column(header: list[str], label: str, file: Path) -> int:
    exact = [i for i, h in enumerate(header) if h == label.strip()]
    found = exact or [i for i, h in enumerate(header) if h.lower() == label.strip().lower()]
    if not found:
        raise DataError(
            f"No column named {label!r} in {file}. Available columns: {_preview(header)}. "
            "Pass one of them (or its 0-based index) as label=."
        )
    if len(found) > 1:
        raise DataError(
            f"{len(found)} columns of {file} are named {label!r}; rename them or pass the "
            f"label column by index (one of {found})."
        )
    return found[0]


def _preview(names: Sequence[str], limit: int = 20) -> str:
    shown = ", ".join(repr(str(n)) for n in names[:limit])
    more = len(names) - limit
    return shown + (f", ... ({more} more)" if more > 0 else "") if names else "(none)"


# --------------------------------------------------------------------------- label values
def _binary_labels(values: Any, where: str) -> np.ndarray:
    """Map a label vector to int64 0/1 (1 = anomaly) following the documented encodings."""
    arr = np.asarray(values)
    if arr.ndim == 2 and 1 in arr.shape:  # MATLAB-style column or row vector
        arr = arr.reshape(-1)
    if arr.ndim != 1:
        raise DataError(f"{where} must be a vector (one label per row); got shape {arr.shape}.")
    kind = arr.dtype.kind
    if kind == "b":
        return arr.astype(np.int64)
    if kind in "iuf":
        return _numeric_labels(arr, arr, where)
    if kind in "USO":
        return _text_labels(arr, where)
    raise DataError(
        f"{where} has unsupported dtype {arr.dtype}; encode the labels as 0/1 (1 = anomaly)."
    )


def _numeric_labels(numbers: np.ndarray, original: np.ndarray, where: str) -> np.ndarray:
    missing = np.isnan(numbers) if numbers.dtype.kind == "f" else np.zeros(numbers.shape, bool)
    if missing.any():
        raise _missing_labels_error(int(missing.sum()), where)
    if np.isin(np.unique(numbers), (0, 1)).all():
        return numbers.astype(np.int64)
    raise _bad_labels_error(np.unique(original), where)


def _text_labels(arr: np.ndarray, where: str) -> np.ndarray:
    tokens = np.char.lower(np.char.strip(arr.astype(str)))
    missing = np.isin(tokens, MISSING_TOKENS)
    if missing.any():
        raise _missing_labels_error(int(missing.sum()), where)
    distinct = np.unique(tokens)
    try:
        as_numbers = tokens.astype(np.float64)
    except ValueError:
        as_numbers = None
    if as_numbers is not None:
        return _numeric_labels(as_numbers, np.char.strip(arr.astype(str)), where)
    known = ANOMALY_TOKENS | NORMAL_TOKENS
    if all(t in known for t in distinct.tolist()):
        return np.isin(tokens, list(ANOMALY_TOKENS)).astype(np.int64)
    raise _bad_labels_error(np.unique(np.char.strip(arr.astype(str))), where)


def _missing_labels_error(count: int, where: str) -> DataError:
    return DataError(
        f"{count} label(s) in {where} are missing (empty or NaN). Every row needs a label: "
        "fill them in or drop those rows, or load without labels (label=False)."
    )


def _bad_labels_error(distinct: np.ndarray, where: str) -> DataError:
    shown = ", ".join(repr(v) for v in distinct[:10].tolist())
    more = f" (and {distinct.size - 10} more)" if distinct.size > 10 else ""
    hint = ""
    if distinct.size == 2 and np.isin(distinct.astype(str), ("-1", "1", "-1.0", "1.0")).all():
        hint = (
            " -1/1 looks like scikit-learn's prediction coding (-1 = outlier); if so, "
            "convert with y = (y == -1).astype(int)."
        )
    return DataError(
        f"{where} must be binary with 1 = anomaly; found {distinct.size} distinct value(s): "
        f"{shown}{more}. Encode them as 0/1, e.g. y = (y == <anomaly value>).astype(int), or "
        "use a recognised pair: 0/1, true/false, yes/no, y/n, o/n, anomaly/normal, "
        f"outlier/inlier, abnormal/normal.{hint}"
    )


# --------------------------------------------------------------------------- features
def _as_features(X: Any, where: str) -> np.ndarray:
    arr = np.asarray(X)
    if arr.dtype.kind not in "biuf":
        raise DataError(
            f"{where}: features (X) must be numeric; got dtype {arr.dtype}. Drop or encode "
            "non-numeric columns (e.g. one-hot) before loading."
        )
    if arr.ndim != 2:
        raise DataError(
            f"{where}: features (X) must be 2-D (rows x features); got shape {arr.shape}. "
            "For a single feature use X.reshape(-1, 1)."
        )
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise DataError(f"{where}: features (X) are empty (shape {arr.shape}); nothing to load.")
    return np.asarray(arr, dtype=np.float64)


def _as_feature_names(names: Any, n_features: int, where: str) -> list[str] | None:
    if names is None:
        return None
    names = [str(n) for n in names]
    if len(names) != n_features:
        raise DataError(f"{where}: {len(names)} feature names for {n_features} feature columns.")
    return names


def _check_finite(X: np.ndarray, names: list[str] | None, where: str) -> None:
    """Refuse NaN / inf (CSV: empty cells and missing markers) with counts per column."""
    if np.isfinite(X).all():
        return
    per_column = (~np.isfinite(X)).sum(axis=0)
    columns = np.flatnonzero(per_column)
    label = (lambda j: repr(names[j])) if names else (lambda j: f"column {j}")
    listed = ", ".join(f"{label(j)} ({per_column[j]})" for j in columns[:10])
    more = f", ... ({columns.size - 10} more columns)" if columns.size > 10 else ""
    raise DataError(
        f"{where}: {int(per_column.sum())} missing or non-finite value(s) (empty cells, NaN, "
        f"NA, ?, inf) in {columns.size} column(s): {listed}{more}. oddkit does not impute "
        "silently: drop those rows or columns, or impute them yourself, before loading."
    )

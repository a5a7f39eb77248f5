"""Append-only JSONL results store: one line per finished benchmark cell.

Layout of a store ``results.jsonl``::

    {"record": "header", "format": "oddkit-results", "protocol": "ADB-dev", ...}
    {"record": "cell", "protocol": "ADB-dev", "dataset": "14_glass", "seed": 0, ...}
    ...

Durability: every cell is written as one line followed by ``flush`` and ``os.fsync``,
so an interruption (Ctrl-C, ``kill``, a crash) never loses a cell that had finished.
An interruption *during* a write can leave a truncated last line; reading ignores it
with a warning, and the next append first cuts that fragment off so the file stays one
JSON object per line. A damaged line anywhere else is an error (it is not something an
interruption can produce).

A store holds the results of exactly one protocol name and version: opening it for
another one is refused, so numbers computed under different definitions never mix.

Cells are identified by :func:`cell_key` = (protocol, protocol_version,
dataset_fingerprint, detector registry name, canonical JSON of params, seed). A key
written twice (a run with ``resume=False``) keeps the last line.

With ``keep_scores`` the runner also writes each cell's test labels and scores to
``<store stem>.scores/<key hash>.npz`` (before the cell's line, so a cell in the store
always has its scores). Tracebacks of failed cells go to ``<store stem>.log``.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import math
import os
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import StoreError

FORMAT = "oddkit-results"
FORMAT_VERSION = 1

CellKey = tuple[str, str, str, str, str, int]


class StoreWarning(UserWarning):
    """A truncated last line was ignored."""


# --------------------------------------------------------------------------- keys
def canonical_params(params: dict[str, Any] | None) -> str:
    """Canonical JSON of a parameter dict: sorted keys, no spaces, numpy made plain."""
    return json.dumps(params or {}, sort_keys=True, separators=(",", ":"), default=_plain)


def cell_key(cell: dict[str, Any]) -> CellKey:
    """The identity of a cell (see the module docstring)."""
    return (
        str(cell["protocol"]),
        str(cell["protocol_version"]),
        str(cell["dataset_fingerprint"]),
        str(cell.get("detector_name") or cell["detector"]),
        canonical_params(cell.get("params")),
        int(cell["seed"]),
    )


def key_hash(key: CellKey) -> str:
    """A short, file-name-safe hash of a cell key."""
    return hashlib.sha1(json.dumps(list(key)).encode()).hexdigest()[:24]


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable")


def _json_safe(value: Any) -> Any:
    """Replace non-finite floats by None (JSON has no NaN) recursively."""
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


# --------------------------------------------------------------------------- store
def log_path_for(store_path: str | os.PathLike[str]) -> Path:
    """The traceback log next to a store: ``results.jsonl`` -> ``results.log``."""
    p = Path(store_path)
    return p.with_name(p.stem + ".log")


def scores_dir_for(store_path: str | os.PathLike[str]) -> Path:
    """The kept-scores folder next to a store: ``results.jsonl`` -> ``results.scores/``."""
    p = Path(store_path)
    return p.with_name(p.stem + ".scores")


class ResultStore:
    """An append-only JSONL file of benchmark cells under one protocol version."""

    def __init__(self, path: str | os.PathLike[str], *, protocol: str, protocol_version: str) -> None:
        self.path = Path(path)
        self.protocol = str(protocol)
        self.protocol_version = str(protocol_version)
        self._cells: dict[CellKey, dict[str, Any]] = {}
        if self.path.exists():
            header, cells = read_store(self.path)
            self._check_protocol(header, cells)
            for cell in cells:
                cell = {k: v for k, v in cell.items() if k != "record"}
                self._cells[cell_key(cell)] = cell

    # ----------------------------------------------------------------- paths
    @property
    def log_path(self) -> Path:
        """Where tracebacks of failed cells are appended."""
        return log_path_for(self.path)

    @property
    def scores_dir(self) -> Path:
        """Where kept test scores live (one ``.npz`` per cell)."""
        return scores_dir_for(self.path)

    # ----------------------------------------------------------------- reading
    def cells(self) -> list[dict[str, Any]]:
        """Every stored cell (the last line per key)."""
        return list(self._cells.values())

    def get(self, key: CellKey) -> dict[str, Any] | None:
        return self._cells.get(key)

    def done_keys(self, *, include_errors: bool = True) -> set[CellKey]:
        """Keys of finished cells (``include_errors=False``: only successful ones)."""
        return {
            k for k, c in self._cells.items() if include_errors or c.get("status") == "ok"
        }

    def __len__(self) -> int:
        return len(self._cells)

    # ----------------------------------------------------------------- writing
    def append(self, cell: dict[str, Any]) -> None:
        """Write one finished cell durably (one line, flush, fsync)."""
        if (str(cell.get("protocol")), str(cell.get("protocol_version"))) != (
            self.protocol,
            self.protocol_version,
        ):
            raise StoreError(
                f"cell of protocol {cell.get('protocol')!r} v{cell.get('protocol_version')} "
                f"cannot go into a store of {self.protocol!r} v{self.protocol_version}."
            )
        record = {"record": "cell", **_json_safe(cell)}
        line = json.dumps(record, sort_keys=False, default=_plain, allow_nan=False)
        self._ensure_file()
        _append_line(self.path, line)
        self._cells[cell_key(cell)] = {k: v for k, v in record.items() if k != "record"}

    def save_scores(self, key: CellKey, y_true: np.ndarray, scores: np.ndarray) -> Path:
        """Atomically write a cell's test labels and scores."""
        self.scores_dir.mkdir(parents=True, exist_ok=True)
        final = self.scores_dir / f"{key_hash(key)}.npz"
        tmp = final.with_name(final.stem + ".tmp.npz")
        with open(tmp, "wb") as fh:
            np.savez(fh, y_true=np.asarray(y_true), scores=np.asarray(scores, dtype=np.float64))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, final)
        return final

    def load_scores(self, key: CellKey) -> tuple[np.ndarray, np.ndarray] | None:
        """A cell's (y_true, scores) if they were kept, else None."""
        file = self.scores_dir / f"{key_hash(key)}.npz"
        if not file.is_file():
            return None
        with np.load(file, allow_pickle=False) as npz:
            return npz["y_true"], npz["scores"]

    def log_error(self, text: str) -> None:
        """Append a traceback (or any text) to the log file next to the store."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "a", encoding="utf-8") as fh:
            fh.write(text.rstrip("\n") + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    # ----------------------------------------------------------------- internals
    def _check_protocol(self, header: dict[str, Any] | None, cells: list[dict[str, Any]]) -> None:
        found: set[tuple[str, str]] = set()
        if header is not None:
            found.add((str(header.get("protocol")), str(header.get("protocol_version"))))
        found.update((str(c.get("protocol")), str(c.get("protocol_version"))) for c in cells)
        other = sorted(found - {(self.protocol, self.protocol_version)})
        if other:
            written = ", ".join(f"{p} v{v}" for p, v in other)
            raise StoreError(
                f"{self.path} holds results of {written}, not {self.protocol} "
                f"v{self.protocol_version}; results of different protocol versions must not "
                "be mixed. Use another output folder (or move the old store away)."
            )

    def _ensure_file(self) -> None:
        if self.path.exists() and self.path.stat().st_size > 0:
            _repair_tail(self.path)
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        header = {
            "record": "header",
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "protocol": self.protocol,
            "protocol_version": self.protocol_version,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        }
        _append_line(self.path, json.dumps(header))
        _fsync_dir(self.path.parent)


def read_store(path: str | os.PathLike[str]) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """Read a store file: (header or None, cells in file order).

    A truncated or unparsable **last** line is ignored with a :class:`StoreWarning`;
    a damaged line elsewhere raises :class:`StoreError`.
    """
    path = Path(path)
    raw = path.read_bytes()
    lines = raw.split(b"\n")
    complete_tail = raw.endswith(b"\n")
    if complete_tail:
        lines = lines[:-1]
    header: dict[str, Any] | None = None
    cells: list[dict[str, Any]] = []
    for number, line in enumerate(lines, start=1):
        is_last = number == len(lines)
        if not line.strip():
            continue
        record = _parse_line(line, path, number, tolerate=is_last)
        if record is None:
            continue
        kind = record.get("record", "cell")
        if kind == "header":
            _check_header(record, path)
            header = record
        elif kind == "cell":
            cells.append(record)
    return header, cells


def _parse_line(line: bytes, path: Path, number: int, *, tolerate: bool) -> dict[str, Any] | None:
    try:
        record = json.loads(line.decode("utf-8"))
        if not isinstance(record, dict):
            raise ValueError("not a JSON object")
        if record.get("record", "cell") == "cell":
            cell_key(record)
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
        if tolerate:
            warnings.warn(
                f"{path}: ignoring a truncated last line (line {number}); the cell it held "
                "did not finish writing and will run again.",
                StoreWarning,
                stacklevel=3,
            )
            return None
        raise StoreError(f"{path} line {number} is damaged ({exc}); fix or remove that line.") from exc
    return record


def _check_header(header: dict[str, Any], path: Path) -> None:
    if header.get("format") != FORMAT:
        raise StoreError(f"{path} is not an oddkit results store (format {header.get('format')!r}).")
    if header.get("format_version") != FORMAT_VERSION:
        raise StoreError(
            f"{path} has store format_version {header.get('format_version')!r}; this oddkit "
            f"reads {FORMAT_VERSION}."
        )


def _append_line(path: Path, line: str) -> None:
    if "\n" in line:
        raise StoreError("internal error: a store record must be one line.")
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(line + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def _repair_tail(path: Path) -> None:
    """Make the file end with a newline: keep a parsable last fragment, cut a broken one."""
    with open(path, "rb+") as fh:
        fh.seek(0, os.SEEK_END)
        size = fh.tell()
        if size == 0:
            return
        fh.seek(size - 1)
        if fh.read(1) == b"\n":
            return
        fh.seek(0)
        data = fh.read()
        start = data.rfind(b"\n") + 1
        try:
            json.loads(data[start:].decode("utf-8"))
            fh.seek(size)
            fh.write(b"\n")
        except (ValueError, UnicodeDecodeError):
            fh.truncate(start)
        fh.flush()
        os.fsync(fh.fileno())


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # not supported on this platform (Windows)
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def iter_cells(paths: Iterable[str | os.PathLike[str]]) -> list[dict[str, Any]]:
    """Cells of several stores (for reports over more than one run)."""
    out: list[dict[str, Any]] = []
    for p in paths:
        out.extend(read_store(p)[1])
    return out

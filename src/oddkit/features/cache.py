"""On-disk cache of extracted features and logits.

An entry lives at ``<cache_dir>/<key>/{features.npy, logits.npy, meta.json}``. The key is
the sha256 of (backbone name, weights hash, data fingerprint, transform description,
feature-format version): change any of them (one pixel, another weights file, another
resize) and the key changes, so a stale entry is never read.

Writes are atomic: the three files go to a temporary directory inside ``cache_dir``
(``.tmp-*``, ignored by readers), are flushed to disk, and the directory is then renamed
to ``<key>`` in one step. A crash mid-write leaves at most a ``.tmp-*`` directory, never
a half-written entry. Arrays are read with ``allow_pickle=False``.

Unusable cache directory (read-only, not creatable, disk full): caching is an
optimisation, so oddkit does **not** fail. It warns with :class:`FeatureCacheWarning`
(before extraction when the directory is not writable, so the user can stop early; at
write time when the disk fills up) and returns the features uncached. Existing entries
of a read-only cache are still read. A damaged entry (bad meta, wrong shapes) is
reported with a warning, recomputed, and replaced.

This module needs numpy only (no torch).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..data.images import array_fingerprint  # noqa: F401  (the one array hasher; re-exported)

from ..errors import one_line

#: bump when the stored layout or the meaning of stored features changes
FEATURE_FORMAT_VERSION = 1
_TMP_PREFIX = ".tmp-"


class FeatureCacheWarning(UserWarning):
    """The feature cache could not be used; features were (or will be) computed uncached."""


def cache_key(backbone: str, weights_hash: str, data_fingerprint: str, transform: str) -> str:
    """The entry name: sha256 of everything the cached features depend on."""
    parts = {
        "format": FEATURE_FORMAT_VERSION,
        "backbone": backbone,
        "weights": weights_hash,
        "data": data_fingerprint,
        "transform": transform,
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class CacheEntry:
    """A cache hit: float32 ``features`` (n, d), ``logits`` (n, k) and the stored ``meta``."""

    features: np.ndarray
    logits: np.ndarray
    meta: dict[str, Any]


class FeatureCache:
    """A directory of feature entries; see the module docstring for the guarantees."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).expanduser()  # "~/.cache/..." as users write it
        self.problem = self._probe_writable()

    @property
    def writable(self) -> bool:
        return self.problem is None

    def _probe_writable(self) -> str | None:
        """None when entries can be written here, else the reason (one line)."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            probe = tempfile.mkdtemp(prefix=_TMP_PREFIX + "probe-", dir=self.root)
            os.rmdir(probe)
        except OSError as exc:
            return one_line(exc)
        return None

    def path(self, key: str) -> Path:
        return self.root / key

    # ------------------------------------------------------------------ read
    def read(self, key: str, n: int) -> CacheEntry | None:
        """The entry for ``key`` holding ``n`` rows, or None (absent or damaged: warns)."""
        entry = self.path(key)
        if not entry.is_dir():
            return None
        try:
            return self._read_entry(entry, key, n)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            warnings.warn(
                f"feature cache entry {entry} is damaged ({one_line(exc)}); recomputing it.",
                FeatureCacheWarning,
                stacklevel=3,
            )
            return None

    @staticmethod
    def _read_entry(entry: Path, key: str, n: int) -> CacheEntry:
        meta = json.loads((entry / "meta.json").read_text())
        if meta.get("format") != FEATURE_FORMAT_VERSION or meta.get("key") != key:
            raise ValueError(f"meta.json has format {meta.get('format')!r} / another key")
        features = np.load(entry / "features.npy", allow_pickle=False)
        logits = np.load(entry / "logits.npy", allow_pickle=False)
        for name, arr, width in (
            ("features", features, meta["feature_dim"]),
            ("logits", logits, meta["n_logits"]),
        ):
            if arr.dtype != np.float32 or arr.shape != (n, width):
                raise ValueError(f"{name}.npy is {arr.dtype} {arr.shape}, expected float32 {(n, width)}")
        return CacheEntry(features, logits, meta)

    # ------------------------------------------------------------------ write
    def write(self, key: str, features: np.ndarray, logits: np.ndarray, meta: dict[str, Any]) -> Path | None:
        """Store an entry atomically; on any OS error warn and return None (nothing half-written)."""
        if not self.writable:
            return None
        meta = {
            **meta,
            "format": FEATURE_FORMAT_VERSION,
            "key": key,
            "feature_dim": int(features.shape[1]),
            "n_logits": int(logits.shape[1]),
        }
        tmp: str | None = None
        try:
            tmp = tempfile.mkdtemp(prefix=f"{_TMP_PREFIX}{key[:16]}-", dir=self.root)
            _save_array(Path(tmp) / "features.npy", features)
            _save_array(Path(tmp) / "logits.npy", logits)
            _save_text(Path(tmp) / "meta.json", json.dumps(meta, indent=1, sort_keys=True))
            return self._publish(Path(tmp), key, features.shape[0])
        except OSError as exc:
            warnings.warn(
                f"could not write the feature cache entry in {self.root} ({one_line(exc)}); "
                "the features were extracted but are not cached.",
                FeatureCacheWarning,
                stacklevel=3,
            )
            return None
        finally:
            if tmp is not None and os.path.isdir(tmp):
                shutil.rmtree(tmp, ignore_errors=True)

    def _publish(self, tmp: Path, key: str, n: int) -> Path:
        """Rename the finished temp dir to ``<key>``; replace a damaged entry, keep a valid one."""
        final = self.path(key)
        if final.is_dir():
            try:
                self._read_entry(final, key, n)
                return final  # written meanwhile by another process: keep it
            except (OSError, ValueError, KeyError, TypeError):
                trash = Path(tempfile.mkdtemp(prefix=f"{_TMP_PREFIX}old-", dir=self.root))
                os.rename(final, trash / "entry")
                shutil.rmtree(trash, ignore_errors=True)
        try:
            os.rename(tmp, final)
        except OSError:
            if not final.is_dir():  # not a lost race: a real failure
                raise
        return final


def _save_array(path: Path, array: np.ndarray) -> None:
    with open(path, "wb") as fh:
        np.save(fh, np.ascontiguousarray(array), allow_pickle=False)
        fh.flush()
        os.fsync(fh.fileno())


def _save_text(path: Path, text: str) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())

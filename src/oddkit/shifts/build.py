"""Shifted copies of an image data set (the ``-R`` construction), streamed, on disk or on the fly.

A *shifted set* of a data set is its images under a list of ``(shift, severity)`` pairs,
for example CIFAR-10-R-C: the 10,000 CIFAR-10 test images under each of the 19
corruptions at each severity 1-5 (950,000 images). Three ways to get one:

* :func:`shifted_dataset`: a generator of :class:`ShiftedBlock` (never more than one
  block of images in memory);
* :func:`build_shifted_set`: writes ``<shift>_s<severity>.npy`` per pair plus
  ``labels.npy`` and ``manifest.json`` into a folder; :func:`open_shifted_set` reads it
  back with the manifest verified (sha256 of every file);
* :class:`ShiftedSource`: an image source (``len``, ``load(indices)``, ``labels``,
  ``classes``, ``fingerprint``) that makes the shifted images when asked, so the feature
  extractor and its cache use it like any other data set and the images are never stored.

Determinism in fixed blocks
---------------------------
Shifts with randomness draw their numbers per call (:func:`oddkit.shifts.apply_shift`),
so a result would depend on how a caller batches the images. Here the source is cut
into fixed blocks of ``block_size`` images (``[0, B)``, ``[B, 2B)``, ...; default
:data:`BLOCK_SIZE`) and block ``k`` is always shifted in one call with the seed
:func:`block_seed` ``(seed, k)``. Image ``i`` of a shifted set therefore depends only on
the source, the shift, the severity, ``seed``, ``block_size`` and ``i``: the same on
disk, on the fly, and for any batch size of the reader. (The same images under another
``block_size`` differ: it is recorded in the manifest and in the fingerprint.)

Files on disk
-------------
``build_shifted_set(images, shifts, folder)`` writes each array to a temporary name
(``.tmp-*``) in the folder, flushes it, then renames it; the manifest lists a file with
its sha256 only after the rename, and is itself replaced atomically after every file.
A crash therefore leaves at most a ``.tmp-*`` file and a manifest with
``"complete": false``; re-running the same build resumes (files already listed and
intact are kept, stray ``.tmp-*`` files are removed). A folder whose manifest describes
another build (another source, shift list, seed, block size or oddkit version), or a
non-empty folder without a manifest, is refused: nothing is overwritten.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..data.images import ArraySource, as_indices
from ..errors import DataError, InputError, ParamError
from .base import apply_shift, check_severity, check_shift_images, get_shift

__all__ = [
    "BLOCK_SIZE",
    "BUILD_FORMAT",
    "MANIFEST_NAME",
    "ShiftedBlock",
    "ShiftedSet",
    "ShiftedSource",
    "block_seed",
    "build_shifted_set",
    "check_shifts",
    "file_name",
    "open_shifted_set",
    "shifted_dataset",
    "shifted_fingerprint",
]

#: images per deterministic block (see the module docstring).
BLOCK_SIZE = 256
#: the manifest's ``format`` and its version.
BUILD_FORMAT = "oddkit-shifted-set"
BUILD_FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
_TMP_PREFIX = ".tmp-"
_HASH_CHUNK = 16 << 20
_FINGERPRINT_BYTES = 8


# --------------------------------------------------------------------------- validation
def check_shifts(shifts: Any) -> list[tuple[str, int]]:
    """``shifts`` as a list of ``(name, severity)``; unknown names, severities outside
    1-5, malformed entries and duplicates raise :class:`ParamError` (before any work)."""
    if isinstance(shifts, (str, bytes)) or not isinstance(shifts, Sequence):
        raise ParamError(
            f"shifts must be a list of (name, severity) pairs, e.g. [('gaussian_noise', 3)], got {shifts!r}."
        )
    if not shifts:
        raise ParamError("shifts is empty; give at least one (name, severity) pair.")
    out: list[tuple[str, int]] = []
    for entry in shifts:
        if isinstance(entry, (str, bytes)) or not isinstance(entry, Sequence) or len(entry) != 2:
            raise ParamError(f"each shift must be a (name, severity) pair, got {entry!r}.")
        name, severity = entry
        get_shift(name)  # unknown name: ParamError with the closest names
        pair = (str(name), check_severity(severity))
        if pair in out:
            raise ParamError(f"shift {pair} is listed twice; list each (name, severity) once.")
        out.append(pair)
    return out


def _check_seed(seed: Any) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ParamError(f"seed must be a non-negative integer, got {seed!r}.")
    return int(seed)


def _check_block_size(block_size: Any) -> int:
    if isinstance(block_size, bool) or not isinstance(block_size, (int, np.integer)) or block_size < 1:
        raise ParamError(f"block_size must be a positive integer, got {block_size!r}.")
    return int(block_size)


def block_seed(seed: int, block: int) -> int:
    """The seed block ``block`` is shifted with: a 32-bit number from ``SeedSequence([seed, block])``."""
    return int(np.random.SeedSequence([int(seed), int(block)]).generate_state(1, np.uint32)[0])


def _as_source(images: Any) -> Any:
    """An image source for ``images`` (a uint8 array is wrapped in an :class:`ArraySource`)."""
    if isinstance(images, np.ndarray):
        check_shift_images(images)
        return ArraySource(images)
    for attr in ("__len__", "load", "fingerprint"):
        # getattr_static: a lazy ``fingerprint`` property (hashing files) must not run here
        if inspect.getattr_static(images, attr, None) is None:
            raise InputError(
                f"images must be a uint8 array (n, H, W, 3) or an image source; {type(images).__name__} lacks {attr}."
            )
    if len(images) == 0:
        raise InputError("the image source is empty.")
    return images


def _check_source_images(source: Any, pairs: Sequence[tuple[str, int]]) -> tuple[int, int]:
    """Check the source's image size and mode against every shift (one image decoded)."""
    first = source.load(np.array([0]))
    for name, _ in pairs:
        check_shift_images(first, name)
    return int(first.shape[1]), int(first.shape[2])


# --------------------------------------------------------------------------- streaming
@dataclass(frozen=True)
class ShiftedBlock:
    """One block of a shifted set: images ``[start, start + len(images))`` under (shift, severity)."""

    shift: str
    severity: int
    start: int
    images: np.ndarray


def _shift_block(source: Any, name: str, severity: int, seed: int, block: int, block_size: int) -> np.ndarray:
    n = len(source)
    start = block * block_size
    images = source.load(np.arange(start, min(n, start + block_size)))
    return apply_shift(images, name, severity, seed=block_seed(seed, block))


def shifted_dataset(
    images: Any, shifts: Any, *, seed: int = 0, block_size: int = BLOCK_SIZE
) -> Iterator[ShiftedBlock]:
    """Yield the shifted copies of ``images`` block by block, pair by pair.

    ``images``: a uint8 array ``(n, H, W, 3)`` or an image source; ``shifts``: a list of
    ``(name, severity)``. Every name, severity and the image size are checked before the
    first block is made. A generator: at most one block of source images and one of
    shifted images are alive at a time (the caller decides what to keep).
    """
    pairs = check_shifts(shifts)
    seed, block_size = _check_seed(seed), _check_block_size(block_size)
    source = _as_source(images)
    _check_source_images(source, pairs)
    return _blocks(source, pairs, seed, block_size)


def _blocks(source: Any, pairs: list[tuple[str, int]], seed: int, block_size: int) -> Iterator[ShiftedBlock]:
    n_blocks = -(-len(source) // block_size)
    for name, severity in pairs:
        for block in range(n_blocks):
            yield ShiftedBlock(name, severity, block * block_size,
                               _shift_block(source, name, severity, seed, block, block_size))  # fmt: skip


# --------------------------------------------------------------------------- fingerprints
def shifted_fingerprint(
    source_fingerprint: str, name: str, severity: int, seed: int, block_size: int, version: str | None = None
) -> str:
    """Fingerprint of a shifted copy: BLAKE2b (16 hex) over the source's fingerprint, the
    shift, severity, seed, block size and the oddkit version (the shift code's version)."""
    from .. import __version__

    h = hashlib.blake2b(digest_size=_FINGERPRINT_BYTES)
    h.update(json.dumps({
        "kind": "oddkit.ShiftedSource", "format": BUILD_FORMAT_VERSION, "source": str(source_fingerprint),
        "shift": name, "severity": int(severity), "seed": int(seed), "block_size": int(block_size),
        "oddkit": version or __version__,
    }, sort_keys=True).encode())  # fmt: skip
    return h.hexdigest()


# --------------------------------------------------------------------------- on the fly
class ShiftedSource:
    """An image source: ``source`` under ``(name, severity)``, made on demand, never stored.

    ``load(indices)`` shifts the fixed blocks that hold ``indices`` (module docstring:
    the result does not depend on how a caller batches) and keeps the last
    ``cache_blocks`` shifted blocks, so a reader whose batches do not line up with the
    blocks does not shift a block twice. ``labels`` and ``classes`` are the source's;
    ``fingerprint`` is :func:`shifted_fingerprint` of the source's fingerprint (computed
    on first use), so the feature cache keys each (shift, severity, seed) separately.
    The name, severity and the image size (one image decoded) are checked here, before
    any long work.
    """

    def __init__(
        self,
        source: Any,
        name: str,
        severity: int,
        *,
        seed: int = 0,
        block_size: int = BLOCK_SIZE,
        cache_blocks: int = 2,
    ) -> None:
        (self.shift, self.severity), = check_shifts([(name, severity)])
        self.seed, self.block_size = _check_seed(seed), _check_block_size(block_size)
        self.source = _as_source(source)
        self.image_size = _check_source_images(self.source, [(self.shift, self.severity)])
        labels = getattr(self.source, "labels", None)
        self.labels = np.full(len(self.source), -1, np.int64) if labels is None else np.asarray(labels)
        self.classes = list(getattr(self.source, "classes", []) or [])
        self._cache_size = max(1, int(cache_blocks))
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()
        self._fingerprint: str | None = None

    def __len__(self) -> int:
        return len(self.source)

    def __repr__(self) -> str:
        return f"ShiftedSource({self.shift!r}, severity={self.severity}, seed={self.seed}, images={len(self)})"

    @property
    def fingerprint(self) -> str:
        if self._fingerprint is None:
            self._fingerprint = shifted_fingerprint(
                str(self.source.fingerprint), self.shift, self.severity, self.seed, self.block_size
            )
        return self._fingerprint

    def load(self, indices: Any) -> np.ndarray:
        """The shifted images at ``indices``: a new uint8 array ``(n, H, W, 3)``."""
        idx = as_indices(indices, len(self))
        out = np.empty((idx.size, *self.image_size, 3), dtype=np.uint8)
        blocks = idx // self.block_size
        for block in np.unique(blocks).tolist():
            rows = np.flatnonzero(blocks == block)
            out[rows] = self._block(block)[idx[rows] - block * self.block_size]
        return out

    def _block(self, block: int) -> np.ndarray:
        with self._lock:
            if block in self._cache:
                self._cache.move_to_end(block)
                return self._cache[block]
            images = _shift_block(self.source, self.shift, self.severity, self.seed, block, self.block_size)
            self._cache[block] = images
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
            return images


# --------------------------------------------------------------------------- on disk
def file_name(name: str, severity: int) -> str:
    """The file of one (shift, severity) in a built set: ``<name>_s<severity>.npy``."""
    return f"{name}_s{int(severity)}.npy"


def build_shifted_set(
    images: Any,
    shifts: Any,
    folder: str | os.PathLike[str],
    *,
    seed: int = 0,
    block_size: int = BLOCK_SIZE,
    progress: bool = True,
) -> Path:
    """Write the shifted copies of ``images`` under ``shifts`` into ``folder``; return the manifest path.

    One ``<shift>_s<severity>.npy`` (uint8 ``(n, H, W, 3)``) per pair, ``labels.npy``
    (int64) and ``manifest.json``: format and version, the source (fingerprint, number
    of images, image size, classes), the shift list with each shift's reference and
    notes, ``seed``, ``block_size`` and the block-seed rule, the oddkit version, and each
    finished file with its sha256. Streams block by block (memory: one block plus the
    page cache of the file being written). Files appear only complete (temporary name,
    then rename); an interrupted build resumes when called again with the same
    arguments; a folder holding another build (or other files) is refused with
    :class:`DataError`. Everything is checked before the first image is shifted.
    """
    from tqdm.auto import tqdm

    pairs = check_shifts(shifts)
    seed, block_size = _check_seed(seed), _check_block_size(block_size)
    source = _as_source(images)
    size = _check_source_images(source, pairs)
    folder = Path(folder)
    manifest = _new_manifest(source, pairs, seed, block_size, size)
    manifest = _claim_folder(folder, manifest)
    labels = getattr(source, "labels", None)
    labels = np.full(len(source), -1, np.int64) if labels is None else np.asarray(labels, dtype=np.int64)
    if "labels.npy" not in manifest["files"]:
        manifest["files"]["labels.npy"] = _write_npy(folder, "labels.npy", labels)
        _write_manifest(folder, manifest)
    todo = [p for p in pairs if file_name(*p) not in manifest["files"]]
    n_blocks = -(-len(source) // block_size)
    with tqdm(total=len(todo) * n_blocks, unit="block", desc="shifted set", disable=not progress) as bar:
        for name, severity in todo:
            blocks = _blocks(source, [(name, severity)], seed, block_size)
            manifest["files"][file_name(name, severity)] = _write_blocks(
                folder, file_name(name, severity), (len(source), *size, 3), blocks, bar
            )
            _write_manifest(folder, manifest)
    manifest["complete"] = True
    _write_manifest(folder, manifest)
    return folder / MANIFEST_NAME


def _new_manifest(
    source: Any, pairs: list[tuple[str, int]], seed: int, block_size: int, size: tuple[int, int]
) -> dict[str, Any]:
    from .. import __version__

    return {
        "format": BUILD_FORMAT,
        "format_version": BUILD_FORMAT_VERSION,
        "oddkit_version": __version__,
        "source": {
            "fingerprint": str(source.fingerprint),
            "n_images": len(source),
            "image_size": list(size),
            "classes": list(getattr(source, "classes", []) or []),
        },
        "shifts": [
            {"name": n, "severity": s, "file": file_name(n, s), "kind": get_shift(n).kind,
             "reference": get_shift(n).reference, "notes": get_shift(n).notes}
            for n, s in pairs
        ],
        "seed": seed,
        "block_size": block_size,
        "block_seed_rule": "block k (images [k*B, (k+1)*B)) is shifted in one apply_shift call with "
        "seed = SeedSequence([seed, k]).generate_state(1, uint32)[0]",
        "files": {},
        "complete": False,
    }


_IDENTITY_KEYS = ("format", "format_version", "oddkit_version", "source", "shifts", "seed", "block_size")


def _claim_folder(folder: Path, manifest: dict[str, Any]) -> dict[str, Any]:
    """Create ``folder`` or resume the same build there; refuse anything else."""
    path = folder / MANIFEST_NAME
    if not folder.exists():
        folder.mkdir(parents=True)
        _write_manifest(folder, manifest)
        return manifest
    if not folder.is_dir():
        raise DataError(f"{folder} exists and is not a folder; choose another output folder.")
    if not path.is_file():
        others = [p.name for p in folder.iterdir()]
        if others:
            raise DataError(
                f"{folder} is not empty ({', '.join(sorted(others)[:5])}) and has no {MANIFEST_NAME}; "
                "refusing to write a shifted set into it. Choose an empty or new folder."
            )
        _write_manifest(folder, manifest)
        return manifest
    old = _read_manifest(folder)
    changed = [k for k in _IDENTITY_KEYS if old.get(k) != manifest[k]]
    if changed:
        raise DataError(
            f"{folder} holds another shifted set (its manifest differs in: {', '.join(changed)}); "
            "refusing to overwrite it. Use another folder, or delete this one first."
        )
    for stray in folder.glob(_TMP_PREFIX + "*"):  # left by an interrupted build of this set
        stray.unlink(missing_ok=True)
    files = {}
    for name, entry in dict(old.get("files", {})).items():
        if (folder / name).is_file() and _sha256(folder / name) == entry.get("sha256"):
            files[name] = entry  # finished and intact: keep
    manifest["files"] = files
    _write_manifest(folder, manifest)
    return manifest


def _write_blocks(
    folder: Path, name: str, shape: tuple[int, ...], blocks: Iterator[ShiftedBlock], bar: Any
) -> dict[str, Any]:
    """Stream blocks into ``folder/name`` through a temporary file; return its manifest entry."""
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f"{_TMP_PREFIX}{name}.")
    os.close(fd)
    try:
        array = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=shape)
        for block in blocks:
            array[block.start : block.start + block.images.shape[0]] = block.images
            bar.update(1)
        array.flush()
        del array
        return _publish(Path(tmp), folder / name)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _write_npy(folder: Path, name: str, array: np.ndarray) -> dict[str, Any]:
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f"{_TMP_PREFIX}{name}.")
    try:
        with os.fdopen(fd, "wb") as fh:
            np.save(fh, np.ascontiguousarray(array), allow_pickle=False)
        return _publish(Path(tmp), folder / name)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _publish(tmp: Path, final: Path) -> dict[str, Any]:
    """fsync ``tmp``, hash it, rename it to ``final``; the manifest entry."""
    with open(tmp, "rb+") as fh:
        os.fsync(fh.fileno())
    entry = {"sha256": _sha256(tmp), "bytes": tmp.stat().st_size}
    os.chmod(tmp, 0o644)
    os.replace(tmp, final)
    return entry


def _write_manifest(folder: Path, manifest: dict[str, Any]) -> None:
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f"{_TMP_PREFIX}{MANIFEST_NAME}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, folder / MANIFEST_NAME)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _read_manifest(folder: Path) -> dict[str, Any]:
    try:
        manifest = json.loads((folder / MANIFEST_NAME).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(f"cannot read {folder / MANIFEST_NAME}: {exc}") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != BUILD_FORMAT:
        raise DataError(f"{folder / MANIFEST_NAME} is not an oddkit shifted-set manifest.")
    if manifest.get("format_version") != BUILD_FORMAT_VERSION:
        raise DataError(
            f"{folder / MANIFEST_NAME} has format version {manifest.get('format_version')!r}; "
            f"this oddkit reads version {BUILD_FORMAT_VERSION}. Rebuild the set."
        )
    return manifest


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_HASH_CHUNK):
            h.update(chunk)
    return h.hexdigest()


# --------------------------------------------------------------------------- reading back
class ShiftedSet:
    """A built shifted set opened by :func:`open_shifted_set` (manifest checked).

    ``pairs``: the (shift, severity) pairs; :meth:`array` gives one pair's images
    (memory-mapped, read-only), :meth:`source` an image source over them whose
    fingerprint equals that of the :class:`ShiftedSource` that made them (same source,
    shift, severity, seed, block size and oddkit version), so the feature cache shares
    entries between the two.
    """

    def __init__(self, folder: Path, manifest: dict[str, Any], verify: bool) -> None:
        self.folder, self.manifest, self.verify = folder, manifest, verify
        self.pairs = [(s["name"], int(s["severity"])) for s in manifest["shifts"]]
        self.labels = np.load(self._checked("labels.npy"), allow_pickle=False)
        self.classes = list(manifest["source"].get("classes", []))

    def _checked(self, name: str) -> Path:
        entry = self.manifest["files"].get(name)
        path = self.folder / name
        if entry is None or not path.is_file():
            raise DataError(f"{path} is not a finished file of this shifted set (not in its manifest).")
        if self.verify and _sha256(path) != entry["sha256"]:
            raise DataError(f"{path} does not match the sha256 in its manifest; the file is damaged or was changed.")
        return path

    def array(self, name: str, severity: int) -> np.ndarray:
        """The images of (name, severity): uint8 ``(n, H, W, 3)``, memory-mapped read-only."""
        if (name, severity) not in self.pairs:
            raise ParamError(f"({name!r}, {severity}) is not in this shifted set; it has {self.pairs}.")
        return np.load(self._checked(file_name(name, severity)), mmap_mode="r", allow_pickle=False)

    def source(self, name: str, severity: int) -> _BuiltSource:
        """An image source over :meth:`array` with the on-the-fly fingerprint."""
        fp = shifted_fingerprint(self.manifest["source"]["fingerprint"], name, severity, self.manifest["seed"],
                                 self.manifest["block_size"], self.manifest["oddkit_version"])  # fmt: skip
        return _BuiltSource(self.array(name, severity), self.labels, self.classes, fp)


class _BuiltSource:
    """Images of a built shifted set (memory-mapped) as an image source."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, classes: list[str], fingerprint: str) -> None:
        self.images, self.labels, self.classes, self.fingerprint = images, labels, classes, fingerprint
        self.image_size = (int(images.shape[1]), int(images.shape[2]))

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def load(self, indices: Any) -> np.ndarray:
        return np.array(self.images[as_indices(indices, len(self))])


def open_shifted_set(folder: str | os.PathLike[str], *, verify: bool = True) -> ShiftedSet:
    """Open a folder written by :func:`build_shifted_set`.

    Refuses (:class:`DataError`) a folder without a valid manifest or an unfinished
    build (``"complete": false``). With ``verify`` (default) each file's sha256 is
    checked against the manifest when it is first opened.
    """
    folder = Path(folder)
    if not (folder / MANIFEST_NAME).is_file():
        raise DataError(f"{folder} has no {MANIFEST_NAME}; it is not a built shifted set.")
    manifest = _read_manifest(folder)
    if not manifest.get("complete"):
        raise DataError(
            f"the shifted set in {folder} is unfinished (the build was interrupted); run the build again to finish it."
        )
    return ShiftedSet(folder, manifest, verify)

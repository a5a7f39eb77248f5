"""Image sources: image folders, in-memory arrays and the standard image data sets.

An *image source* (:class:`ImageSource`) is what the feature extractor consumes: any
object with ``len(source)``, ``source.load(indices)`` returning uint8 RGB images of
shape ``(n, H, W, 3)`` (decoding only the images asked for, all of the source's one size),
``labels`` (int64, shape ``(N,)``, ``-1`` where unknown), ``classes`` (list of names,
``labels`` index into it) and ``fingerprint`` (a 16-hex-character string that identifies
the pixels and labels the source delivers; it is stable across runs and changes when any
file's content, the file list or a decoding option changes).

Sources here
------------
* :class:`ImageFolder`: ``root/<class>/<image>`` (sub-folders of a class folder are
  searched too), decoded lazily per file with Pillow.
* :class:`ArraySource`: an in-memory array ``(N, H, W, 3)``.
* :func:`load_mnist_idx`, :func:`load_cifar_pickle`, :func:`load_svhn_mat`: the official
  MNIST, CIFAR-10/100 and SVHN files as :class:`ArraySource`.
* :func:`from_torchvision`: a ``torchvision.datasets`` class, where torchvision is installed.

Pixel conversion (every source delivers RGB uint8)
--------------------------------------------------
* 8-bit RGB is returned as stored; grey (``L``), 1-bit, palette (``P``), CMYK, YCbCr, ...
  go through Pillow's ``convert("RGB")`` (grey copied to the three channels).
* Alpha is **dropped**, not composited: the stored colour of each pixel is kept, as
  torchvision's ``ImageFolder`` loader (``convert("RGB")``) does, so features match
  pipelines built on it. A palette image's transparency is ignored in the same way.
* 16-bit samples keep their high byte (``v >> 8``). Pillow itself reads 16-bit RGB(A)
  PNGs that way; oddkit applies the same rule to 16-bit grey images (Pillow mode
  ``I;16``) and to 32-bit integer images whose values lie in ``[0, 65535]``. Floating-point
  images (mode ``F``) and integer images outside that range are refused (DataError).
* Float arrays given to :class:`ArraySource` must lie in ``[0, 1]`` and become
  ``rint(255 * x)`` (round half to even; the error is at most half a grey level, where
  torchvision's ``ToPILImage`` truncates instead).
* Only the first frame of a multi-frame file (GIF, TIFF) is used; the EXIF orientation
  tag is not applied (pixels as stored, as in torchvision).
* ``size=(H, W)`` resizes with Pillow's bilinear filter (antialiased when shrinking, as
  torchvision's ``Resize`` on PIL images) after the conversion to RGB.

Fingerprints of folders
-----------------------
Paths, sizes and modification times are not enough (a file rewritten with the same size
within the clock's granularity, or a copied tree with fresh times, would fool them), so
an :class:`ImageFolder` hashes the bytes of every file (BLAKE2b) together with its
relative path, label, the class list, the ``size`` option and the version of the
conversion rules above. This is done lazily, on the first access of ``fingerprint``
(listing and loading do not need it), reading files in chunks on a few threads, and each
file's digest is cached in this process under (path, size, modification time, inode).
Files modified less than two seconds before hashing are not cached (the "racy" case git
also guards against), so a rewrite within the clock's granularity is still seen. Within
one process, a file rewritten later with identical size and modification time would reuse
the cached digest; a new process always re-reads. The fingerprint of a source object is
computed once and describes the files as they were then.
"""

from __future__ import annotations

import gzip
import hashlib
import inspect
import json
import os
import pickle
import struct
import time
import warnings
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from ..errors import DataError, InputError, MissingDependencyError, ParamError, one_line

PathLike = str | os.PathLike[str]
Size = tuple[int, int]

#: File name endings (case-insensitive) that :class:`ImageFolder` treats as images.
IMAGE_EXTENSIONS = (
    ".bmp",
    ".gif",
    ".jpeg",
    ".jpg",
    ".pgm",
    ".png",
    ".ppm",
    ".tif",
    ".tiff",
    ".webp",
)
#: Version of the pixel conversion rules (module docstring); part of every fingerprint.
CONVERSION_VERSION = 1
ON_ERROR_CHOICES = ("raise", "skip")
DIGITS = [str(d) for d in range(10)]

_FINGERPRINT_BYTES = 8  # 16 hex characters, as oddkit.data.Table.fingerprint
_FLOAT_CHUNK = 4096  # images per step when converting float/integer arrays to uint8
_HASH_CHUNK = 256  # files per task when hashing a folder
_HASH_WORKERS = 8  # file reads and BLAKE2b release the GIL; threads overlap the I/O
_RACY_NS = 2_000_000_000  # files newer than this are hashed but not cached
_DIGEST_CACHE: dict[tuple[str, int, int, int], bytes] = {}


# --------------------------------------------------------------------------- protocol
@runtime_checkable
class ImageSource(Protocol):
    """What the feature extractor consumes (see the module docstring)."""

    labels: np.ndarray
    classes: list[str]

    @property
    def fingerprint(self) -> str: ...

    def __len__(self) -> int: ...

    def load(self, indices: Any) -> np.ndarray: ...


def check_image_batch(images: Any, *, contiguous: bool = True) -> np.ndarray:
    """Return ``images`` as a uint8 array ``(n, H, W, 3)`` (C-contiguous copy only if asked
    and needed), or raise InputError."""
    if not isinstance(images, np.ndarray):
        raise InputError(f"images must be a numpy array, got {type(images).__name__}.")
    if images.dtype != np.uint8:
        raise InputError(
            f"images must be uint8 (0-255), got {images.dtype}; convert with "
            "(np.clip(x, 0, 1) * 255).round().astype(np.uint8) for floats in [0, 1]."
        )
    if images.ndim != 4 or images.shape[3] != 3:
        raise InputError(
            f"images must have shape (n, H, W, 3) (RGB, channels last), got {images.shape}; "
            "stack grey images to 3 channels with np.repeat(x[..., None], 3, axis=3)."
        )
    return np.ascontiguousarray(images) if contiguous else images


def iter_batches(
    source: ImageSource, batch_size: int = 256
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield ``(indices, images)`` over the whole source in order, ``batch_size`` at a time.

    At most one batch of decoded images is held at a time.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)):
        raise ParamError(f"batch_size must be a positive integer, got {batch_size!r}.")
    if batch_size < 1:
        raise ParamError(f"batch_size must be a positive integer, got {batch_size}.")
    n = len(source)
    for start in range(0, n, int(batch_size)):
        indices = np.arange(start, min(n, start + int(batch_size)), dtype=np.int64)
        yield indices, source.load(indices)


def check_same_classes(
    reference: Any, other: Any, names: tuple[str, str] = ("train", "test")
) -> list[str]:
    """Check that two sources (or class lists / ``class_to_idx`` dicts) share classes.

    Labels of the two are comparable only when both list the same class names in the same
    order. Returns the class list; raises :class:`DataError` listing the classes found in
    only one of them (or the positions where the order differs).
    """
    first, second = _class_list(reference), _class_list(other)
    if first == second:
        return first
    only_first = sorted(set(first) - set(second))
    only_second = sorted(set(second) - set(first))
    if only_first or only_second:
        raise DataError(
            f"The {names[0]} and {names[1]} class folders differ: only in {names[0]}: "
            f"{only_first or 'none'}; only in {names[1]}: {only_second or 'none'}. "
            "Both must hold the same class folders so that labels mean the same class."
        )
    moved = [f"{c!r} ({i} vs {second.index(c)})" for i, c in enumerate(first) if second[i] != c]
    raise DataError(
        f"The {names[0]} and {names[1]} classes are the same but ordered differently: "
        f"{', '.join(moved)}. Use one class order for both."
    )


# --------------------------------------------------------------------------- ImageFolder
class ImageFolder:
    """Images stored as ``root/<class>/<image>``, decoded on demand.

    ``classes`` are the sub-folder names of ``root`` in sorted order (hidden folders
    ignored); every file under a class folder (recursively, hidden files ignored) whose
    name ends in one of :data:`IMAGE_EXTENSIONS` is an image of that class. ``labels[i]``
    is the class index of ``files[i]`` (paths relative to ``root``, sorted per folder).

    ``size=(H, W)`` resizes every image (bilinear); without it all images must have one
    size, the size of the first image, and :meth:`load` raises :class:`DataError` naming
    any file of another size. Construction lists files and reads one header; it does not
    decode the folder. ``on_error="raise"`` (default): an unreadable file raises a
    :class:`DataError` naming it when it is loaded (:meth:`scan` checks every file up
    front). ``on_error="skip"``: every file gets a cheap check at construction (a JPEG is
    decoded at 1/8 scale, which reads all of its compressed data; a PNG's chunk checksums
    are verified to its end; other formats are decoded) and failing files are left out,
    counted in ``skipped``, listed in ``skipped_files`` and reported in one warning.
    Conversion to RGB and the fingerprint follow the module docstring.
    """

    def __init__(
        self, root: PathLike, size: Size | int | None = None, on_error: str = "raise"
    ) -> None:
        self.root = _existing_folder(root)
        self.size = _check_size(size)
        if on_error not in ON_ERROR_CHOICES:
            raise ParamError(f"on_error must be one of {list(ON_ERROR_CHOICES)}, got {on_error!r}.")
        self.on_error = on_error
        self.classes, files, labels = _list_class_folders(self.root)
        self.class_to_idx = {name: i for i, name in enumerate(self.classes)}
        self.skipped_files: list[str] = []
        reference = None
        if on_error == "skip":
            files, labels, reference = self._drop_unreadable(files, labels)
        self.files: list[str] = files
        self.labels = _read_only(np.asarray(labels, dtype=np.int64))
        self.image_size: Size = self.size or reference or _header_size(self.root / files[0])
        self._fingerprint: str | None = None

    @property
    def skipped(self) -> int:
        """Number of files left out by ``on_error="skip"``."""
        return len(self.skipped_files)

    @property
    def paths(self) -> list[Path]:
        """Absolute paths of the images, in index order."""
        return [self.root / name for name in self.files]

    def __len__(self) -> int:
        return len(self.files)

    def __repr__(self) -> str:
        h, w = self.image_size
        return (
            f"ImageFolder(root={str(self.root)!r}, images={len(self)}, "
            f"classes={len(self.classes)}, size={h}x{w}, skipped={self.skipped})"
        )

    def load(self, indices: Any) -> np.ndarray:
        """Decode the images at ``indices`` (1-D integers or a slice): ``(n, H, W, 3)`` uint8."""
        idx = as_indices(indices, len(self))
        out = np.empty((idx.size, *self.image_size, 3), dtype=np.uint8)
        for k, i in enumerate(idx.tolist()):
            out[k] = self._decode(i)
        return out

    @property
    def fingerprint(self) -> str:
        """Content hash of the folder as delivered (module docstring); computed on first use."""
        if self._fingerprint is None:
            digests = file_digests(self.paths)
            h = hashlib.blake2b(digest_size=_FINGERPRINT_BYTES)
            h.update(
                _canonical_json(
                    {
                        "kind": "oddkit.ImageFolder",
                        "version": 1,
                        "conversion": CONVERSION_VERSION,
                        "size": list(self.size) if self.size else None,
                        "classes": self.classes,
                    }
                )
            )
            for name, label, digest in zip(self.files, self.labels.tolist(), digests):
                h.update(f"{name}\0{label}\0".encode())
                h.update(digest)
            self._fingerprint = h.hexdigest()
        return self._fingerprint

    def scan(self) -> None:
        """Check every file now (the cheap check of ``on_error="skip"``, plus the size rule).

        Raises :class:`DataError` naming the first file that fails. Costs one header read
        and a partial decode per file.
        """
        for name in self.files:
            hw = _cheap_check(self.root / name)
            if isinstance(hw, str):
                raise DataError(f"Cannot decode image {self.root / name}: {hw}.")
            self._check_size_of(name, hw)

    # ------------------------------------------------------------------ internals
    def _decode(self, i: int) -> np.ndarray:
        name = self.files[i]
        image = read_rgb(self.root / name, self.size)
        self._check_size_of(name, image.shape[:2])
        return image

    def _check_size_of(self, name: str, hw: tuple[int, ...]) -> None:
        if self.size is None and tuple(hw) != tuple(self.image_size):
            raise DataError(
                f"Image {self.root / name} is {hw[0]}x{hw[1]} (height x width) but the "
                f"folder's images are {self.image_size[0]}x{self.image_size[1]} (the size "
                f"of {self.root / self.files[0]}). Pass size=(H, W) to resize all images."
            )

    def _drop_unreadable(
        self, files: list[str], labels: list[int]
    ) -> tuple[list[str], list[int], Size | None]:
        kept_files, kept_labels, reference = [], [], None
        for name, label in zip(files, labels):
            hw = _cheap_check(self.root / name)
            if isinstance(hw, str):
                self.skipped_files.append(name)
                continue
            if self.size is None and reference is not None and hw != reference:
                raise DataError(
                    f"Image {self.root / name} is {hw[0]}x{hw[1]} (height x width) but "
                    f"{self.root / kept_files[0]} is {reference[0]}x{reference[1]}. Pass "
                    "size=(H, W) to resize all images."
                )
            reference = reference or hw
            kept_files.append(name)
            kept_labels.append(label)
        if self.skipped_files:
            shown = ", ".join(self.skipped_files[:5]) + (" ..." if self.skipped > 5 else "")
            warnings.warn(
                f"ImageFolder({self.root}): skipped {self.skipped} unreadable file(s): {shown}",
                stacklevel=3,
            )
        if not kept_files:
            raise DataError(f"No readable image under {self.root}: all {len(files)} files failed.")
        return kept_files, kept_labels, reference


# --------------------------------------------------------------------------- ArraySource
class ArraySource:
    """Images held in memory as one array ``(N, H, W, 3)``.

    ``images``: uint8; any other integer array with values in ``[0, 255]`` (cast); or a
    float array with finite values in ``[0, 1]``, converted to ``rint(255 * x)`` (round
    half to even). ``(N, H, W, 1)`` grey is copied to three channels; other shapes,
    including channels-first ``(N, 3, H, W)``, are refused. A uint8 C-contiguous array is
    kept without a copy (behind a read-only view): do not modify it afterwards, the
    fingerprint (computed at construction from the pixels, labels and classes) would no
    longer describe it. ``labels``: int, ``-1`` for unknown (default: all unknown);
    ``classes`` default to ``"0"``, ``"1"``, ... up to the largest label.
    """

    def __init__(
        self,
        images: Any,
        labels: Any = None,
        classes: Sequence[str] | None = None,
        name: str = "array",
    ) -> None:
        self.name = str(name)
        self.images = _read_only(_as_uint8_images(images, self.name))
        n = self.images.shape[0]
        self.labels = _read_only(_as_labels(labels, n, self.name))
        self.classes = _as_classes(classes, self.labels, self.name)
        self.image_size: Size = (int(self.images.shape[1]), int(self.images.shape[2]))
        self._fingerprint = _array_fingerprint(self.images, self.labels, self.classes)

    @property
    def fingerprint(self) -> str:
        """Hash of the pixels, labels and class names (16 hex characters)."""
        return self._fingerprint

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __repr__(self) -> str:
        h, w = self.image_size
        return f"ArraySource(name={self.name!r}, images={len(self)}, size={h}x{w})"

    def load(self, indices: Any) -> np.ndarray:
        """The images at ``indices`` (1-D integers or a slice): a new ``(n, H, W, 3)`` uint8."""
        return self.images[as_indices(indices, len(self))]


class SubsetSource:
    """The images of another source at ``index``, decoded only when loaded.

    ``labels`` and ``classes`` follow the source's (labels subset to ``index``). The
    fingerprint is the source's plus a hash of ``index`` (not of ``description``), so the
    same rows share cache entries and other rows never read them; it is computed on first
    use (the source's may hash every file).
    """

    def __init__(self, source: Any, index: Any, description: str = "subset") -> None:
        self.source = source
        self.index = as_indices(index, len(source))
        labels = getattr(source, "labels", None)
        self.labels = None if labels is None else np.asarray(labels)[self.index]
        self.classes = getattr(source, "classes", None)
        self.image_size = getattr(source, "image_size", None)
        self.description = str(description)
        self._fingerprint: str | None = None

    @classmethod
    def evenly(cls, source: Any, n: int) -> SubsetSource:
        """``n`` images spread evenly over ``source`` (all of them if it has fewer)."""
        total = len(source)
        index = np.unique(np.linspace(0, total - 1, min(int(n), total)).round().astype(np.int64))
        return cls(source, index, f"{index.size} of {total}, evenly spaced")

    @property
    def fingerprint(self) -> str:
        if self._fingerprint is None:
            digest = hashlib.blake2b(self.index.astype("<i8").tobytes(), digest_size=8).hexdigest()
            self._fingerprint = f"{self.source.fingerprint}[{self.index.size} rows {digest}]"
        return self._fingerprint

    def __len__(self) -> int:
        return int(self.index.size)

    def __repr__(self) -> str:
        return f"SubsetSource({self.description}, {len(self)} of {len(self.source)} images)"

    def load(self, indices: Any) -> np.ndarray:
        """The images at ``indices`` of the subset (1-D integers or a slice)."""
        return self.source.load(self.index[as_indices(indices, len(self))])


# --------------------------------------------------------------------------- standard sets
def load_mnist_idx(
    images_path: PathLike, labels_path: PathLike | None = None, size: Size | int | None = None
) -> ArraySource:
    """MNIST-style IDX files (raw or gzip) as an :class:`ArraySource` of RGB images.

    The images file must be an unsigned-byte IDX with 3 dimensions (magic 2051), the
    labels file one with 1 dimension (magic 2049), each exactly as long as its header
    says. Grey is copied to 3 channels; ``size=(H, W)`` resizes bilinearly (Pillow, on the
    grey image, one image at a time). Classes are ``"0"`` to ``"9"`` with labels.
    """
    grey = _read_idx(images_path, ndim=3)
    labels = None
    if labels_path is not None:
        labels = _read_idx(labels_path, ndim=1).astype(np.int64)
        if labels.shape[0] != grey.shape[0]:
            raise DataError(
                f"{labels_path} holds {labels.shape[0]} labels but {images_path} holds "
                f"{grey.shape[0]} images; use the matching pair of files."
            )
        if labels.size and labels.max() > 9:
            raise DataError(f"{labels_path}: labels must be digits 0-9, found {labels.max()}.")
    target = _check_size(size)
    if target is not None:
        grey = _resize_grey(grey, target)
    rgb = np.repeat(grey[..., None], 3, axis=3)
    return ArraySource(
        rgb,
        labels,
        classes=DIGITS if labels is not None else [],
        name=f"mnist-idx:{Path(images_path).name}",
    )


def load_cifar_pickle(
    directory: PathLike, split: str = "train", label_kind: str = "fine"
) -> ArraySource:
    """The official CIFAR-10 / CIFAR-100 "python version" files as an :class:`ArraySource`.

    ``directory`` is the ``cifar-10-batches-py`` or ``cifar-100-python`` folder or the
    folder that contains one of them. ``split`` is ``"train"`` (CIFAR-10: ``data_batch_1``
    to ``_5``; CIFAR-100: ``train``) or ``"test"``; ``label_kind`` (``"fine"`` or
    ``"coarse"``) picks the CIFAR-100 labels. Class names come from the meta file.

    The files are pickles. They are read with a restricted unpickler that resolves only
    numpy's array and dtype reconstruction functions, ``_codecs.encode`` and a few builtin
    container types, and refuses everything else (and persistent ids). Pickle runs code
    only by calling objects it looked up through that resolver, so a crafted file can at
    most build arrays, dicts, lists and strings; it cannot import or call anything else.
    """
    if split not in ("train", "test"):
        raise ParamError(f"split must be 'train' or 'test', got {split!r}.")
    if label_kind not in ("fine", "coarse"):
        raise ParamError(f"label_kind must be 'fine' or 'coarse', got {label_kind!r}.")
    folder, kind = _cifar_folder(directory)
    if kind == 10:
        meta, label_key = _safe_unpickle(folder / "batches.meta"), "labels"
        classes = _names(_entry(meta, "label_names", folder / "batches.meta"))
        batches = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    else:
        meta, label_key = _safe_unpickle(folder / "meta"), f"{label_kind}_labels"
        classes = _names(_entry(meta, f"{label_kind}_label_names", folder / "meta"))
        batches = [split]
    parts = [_cifar_batch(folder / name, label_key, len(classes)) for name in batches]
    data = np.concatenate([p[0] for p in parts]) if len(parts) > 1 else parts[0][0]
    labels = np.concatenate([p[1] for p in parts])
    images = np.ascontiguousarray(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
    return ArraySource(images, labels, classes, name=f"cifar{kind}:{split}")


def load_svhn_mat(path: PathLike) -> ArraySource:
    """An SVHN "format 2" ``.mat`` file (``train_32x32.mat``, ...) as an :class:`ArraySource`.

    ``X`` is uint8 ``(32, 32, 3, N)``, ``y`` holds 1-10 with 10 meaning the digit 0; labels
    become the digits 0-9 (``y % 10``), classes ``"0"`` to ``"9"``.
    """
    import scipy.io

    path = Path(path)
    if not path.is_file():
        raise DataError(f"SVHN file not found: {path}.")
    try:
        mat = scipy.io.loadmat(path, variable_names=["X", "y"])
    except NotImplementedError as exc:
        raise DataError(f"{path} is a MATLAB v7.3 (HDF5) file; save it as v5.") from exc
    except (scipy.io.matlab.MatReadError, ValueError, TypeError, OSError) as exc:
        raise DataError(f"Cannot read {path} as a .mat file: {one_line(exc)}") from exc
    if "X" not in mat or "y" not in mat:
        raise DataError(f"{path} must hold variables X and y, found {sorted(mat)}.")
    X, y = np.asarray(mat["X"]), np.asarray(mat["y"]).ravel()
    if X.ndim != 4 or X.shape[2] != 3 or X.dtype != np.uint8:
        raise DataError(f"{path}: X must be uint8 (H, W, 3, N), got {X.dtype} {X.shape}.")
    if y.shape[0] != X.shape[3] or not np.isin(y, np.arange(1, 11)).all():
        raise DataError(f"{path}: y must hold one value in 1..10 per image ({X.shape[3]}).")
    images = np.ascontiguousarray(np.moveaxis(X, 3, 0))
    return ArraySource(images, y.astype(np.int64) % 10, DIGITS, name=f"svhn:{path.name}")


def from_torchvision(
    name: str,
    root: PathLike,
    split: str = "train",
    download: bool = False,
    size: Size | int | None = None,
) -> TorchvisionSource:
    """A ``torchvision.datasets`` data set (``"CIFAR10"``, ``"SVHN"``, ...) as an image source.

    Datasets whose constructor takes ``train`` get ``train=(split == "train")`` (split
    must then be ``"train"`` or ``"test"``); those that take ``split`` get it as given.
    ``download`` is passed on where the constructor has it (default False: oddkit never
    downloads unless asked). Needs torchvision (``pip install torchvision``).
    """
    try:
        import torchvision.datasets as tv_datasets
    except ImportError as exc:
        raise MissingDependencyError(
            "from_torchvision needs torchvision: pip install torchvision"
        ) from exc
    classes = {
        n.lower(): getattr(tv_datasets, n) for n in dir(tv_datasets) if not n.startswith("_")
    }
    if name.lower() not in classes or not isinstance(classes[name.lower()], type):
        raise ParamError(f"torchvision.datasets has no data set {name!r}.")
    cls = classes[name.lower()]
    params = inspect.signature(cls).parameters
    kwargs: dict[str, Any] = {"root": str(root)}
    if "train" in params:
        if split not in ("train", "test"):
            raise ParamError(f"{name} takes split 'train' or 'test', got {split!r}.")
        kwargs["train"] = split == "train"
    elif "split" in params:
        kwargs["split"] = split
    if "download" in params:
        kwargs["download"] = bool(download)
    try:
        dataset = cls(**kwargs)
    except (RuntimeError, OSError, ValueError) as exc:
        raise DataError(f"torchvision {name}({kwargs}) failed: {one_line(exc)}") from exc
    return TorchvisionSource(dataset, name=cls.__name__, split=split, size=size)


class TorchvisionSource:
    """A torchvision data set (built without transforms) seen as an image source.

    Images (PIL) go through the conversion rules of this module; ``labels`` come from the
    data set's ``targets`` / ``labels`` / ``_labels`` / ``_samples`` (``-1`` when it has
    none of them). The fingerprint hashes the data set's ``data`` array where it has one,
    otherwise the bytes of its image files (``samples``, ``imgs``, ``_image_files``,
    ``_samples``), otherwise every file under its ``root`` (conservative: unrelated files
    there change it too).
    """

    def __init__(self, dataset: Any, name: str, split: str, size: Size | int | None = None):
        self.dataset, self.name, self.split = dataset, name, split
        self.size = _check_size(size)
        self.labels = _read_only(_torchvision_labels(dataset))
        self.classes = [str(c) for c in getattr(dataset, "classes", None) or []]
        if len(dataset) == 0:
            raise DataError(f"torchvision {name} ({split}) is empty.")
        self.image_size: Size = self.size or self._decode(0).shape[:2]
        self._fingerprint: str | None = None

    def __len__(self) -> int:
        return len(self.dataset)

    def load(self, indices: Any) -> np.ndarray:
        idx = as_indices(indices, len(self))
        out = np.empty((idx.size, *self.image_size, 3), dtype=np.uint8)
        for k, i in enumerate(idx.tolist()):
            image = self._decode(i)
            if image.shape[:2] != tuple(self.image_size):
                raise DataError(
                    f"{self.name} item {i} is {image.shape[0]}x{image.shape[1]}, not "
                    f"{self.image_size[0]}x{self.image_size[1]}; pass size=(H, W)."
                )
            out[k] = image
        return out

    @property
    def fingerprint(self) -> str:
        if self._fingerprint is None:
            h = hashlib.blake2b(digest_size=_FINGERPRINT_BYTES)
            h.update(
                _canonical_json(
                    {
                        "kind": "oddkit.torchvision",
                        "name": self.name,
                        "split": self.split,
                        "size": list(self.size) if self.size else None,
                        "n": len(self),
                        "conversion": CONVERSION_VERSION,
                        "classes": self.classes,
                    }
                )
            )
            h.update(self.labels.astype("<i8").tobytes())
            for chunk in _torchvision_content(self.dataset):
                h.update(chunk)
            self._fingerprint = h.hexdigest()
        return self._fingerprint

    def _decode(self, i: int) -> np.ndarray:
        image = self.dataset[i][0]
        return np.asarray(_resize_rgb(_to_rgb(image, f"{self.name}[{i}]"), self.size))


# --------------------------------------------------------------------------- decoding
def read_rgb(path: PathLike, size: Size | None = None) -> np.ndarray:
    """Decode one image file to ``(H, W, 3)`` uint8 by the module's conversion rules."""
    Image = _pil()
    try:
        with Image.open(path) as image:
            rgb = _resize_rgb(_to_rgb(image, str(path)), size)
            return np.asarray(rgb)
    except (DataError, MemoryError):
        raise
    except Exception as exc:  # Pillow raises many types on damaged files
        raise DataError(
            f"Cannot decode image {path}: {one_line(exc)}. Replace or remove the file, "
            "or pass on_error='skip' to leave unreadable files out."
        ) from exc


def _to_rgb(image: Any, where: str) -> Any:
    """A PIL image in mode RGB (see the conversion rules in the module docstring)."""
    Image = _pil()
    mode = image.mode
    if mode == "RGB":
        return image
    if mode.startswith("I"):
        values = np.asarray(image)
        if values.size and (values.min() < 0 or values.max() > 65535):
            raise DataError(f"{where}: integer image values outside [0, 65535] are not supported.")
        return Image.fromarray((values.astype(np.uint32) >> 8).astype(np.uint8)).convert("RGB")
    if mode == "F":
        raise DataError(
            f"{where}: floating-point images (mode F) are not supported; save as 8-bit."
        )
    return image.convert("RGB")


def _resize_rgb(image: Any, size: Size | None) -> Any:
    if size is None or image.size == (size[1], size[0]):
        return image
    return image.resize((size[1], size[0]), _pil().Resampling.BILINEAR)


def _resize_grey(grey: np.ndarray, size: Size) -> np.ndarray:
    """Bilinear resize of a stack of grey uint8 images (Pillow, one image at a time)."""
    Image = _pil()
    out = np.empty((grey.shape[0], *size), dtype=np.uint8)
    for k in range(grey.shape[0]):
        out[k] = np.asarray(Image.fromarray(grey[k]).resize(size[::-1], Image.Resampling.BILINEAR))
    return out


def _header_size(path: Path) -> Size:
    Image = _pil()
    try:
        with Image.open(path) as image:
            return int(image.height), int(image.width)
    except Exception as exc:
        raise DataError(
            f"Cannot read image {path}: {one_line(exc)}. Replace or remove the file, or "
            "pass on_error='skip' to leave unreadable files out."
        ) from exc


def _cheap_check(path: Path) -> Size | str:
    """(height, width) of a file that passes the cheap check, else the reason it failed."""
    Image = _pil()
    try:
        with Image.open(path) as image:
            hw = (int(image.height), int(image.width))
            if image.format == "JPEG":
                image.draft(None, (1, 1))  # DCT scaling: decodes all data at 1/8 size
                image.load()
            elif image.format == "PNG":
                image.verify()
            else:
                image.load()
            return hw
    except MemoryError:
        raise
    except Exception as exc:  # noqa: BLE001 - any failure means "unreadable", reported by name
        return one_line(exc, with_type=True)


def _pil() -> Any:
    try:
        from PIL import Image
    except ImportError as exc:  # pragma: no cover - pillow comes with matplotlib
        raise MissingDependencyError("Image data needs Pillow: pip install pillow") from exc
    return Image


# --------------------------------------------------------------------------- folders
def _existing_folder(root: PathLike) -> Path:
    path = Path(root).expanduser()
    if not path.exists():
        raise DataError(f"Image folder not found: {path}.")
    if not path.is_dir():
        raise DataError(f"{path} is a file; ImageFolder needs a folder root/<class>/<image>.")
    return path.resolve()


def _is_image_name(name: str) -> bool:
    return not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS)


def _list_class_folders(root: Path) -> tuple[list[str], list[str], list[int]]:
    """Classes (sorted sub-folders) and the relative image paths and labels under them."""
    with os.scandir(root) as entries:
        entries_list = list(entries)
    classes = sorted(e.name for e in entries_list if e.is_dir() and not e.name.startswith("."))
    loose = sum(1 for e in entries_list if e.is_file() and _is_image_name(e.name))
    files: list[str] = []
    counts = []
    for name in classes:
        found = _images_under(root / name, name)
        if not found:
            warnings.warn(
                f"ImageFolder({root}): class folder {name!r} holds no images.", stacklevel=3
            )
        files.extend(found)
        counts.append(len(found))
    if not files:
        hint = (
            f" {loose} images lie directly in the root; put them in one sub-folder per class."
            if loose
            else ""
        )
        raise DataError(
            f"No images under {root} (expected {root}/<class>/<image> with a name ending in "
            f"one of {', '.join(IMAGE_EXTENSIONS)}).{hint}"
        )
    labels = np.repeat(np.arange(len(classes)), counts).tolist()
    return classes, files, labels


def _images_under(folder: Path, prefix: str) -> list[str]:
    found = []
    for current, dirs, names in os.walk(folder, followlinks=True):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        rel = os.path.relpath(current, folder)
        base = prefix if rel == "." else f"{prefix}/{Path(rel).as_posix()}"
        found.extend(f"{base}/{n}" for n in sorted(names) if _is_image_name(n))
    return found


def file_digests(paths: Sequence[PathLike]) -> list[bytes]:
    """BLAKE2b-128 of each file's bytes, cached in-process (see the module docstring)."""
    chunks = [paths[i : i + _HASH_CHUNK] for i in range(0, len(paths), _HASH_CHUNK)]
    if len(chunks) <= 1:
        return [_digest_file(p) for p in paths]
    workers = min(_HASH_WORKERS, len(chunks))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        parts = list(pool.map(lambda chunk: [_digest_file(p) for p in chunk], chunks))
    return [digest for part in parts for digest in part]


def clear_digest_cache() -> None:
    """Forget the cached file digests of this process (the next fingerprint re-reads files)."""
    _DIGEST_CACHE.clear()


def _digest_file(path: PathLike) -> bytes:
    try:
        stat = os.stat(path)
        key = (os.fspath(path), stat.st_size, stat.st_mtime_ns, stat.st_ino)
        cached = _DIGEST_CACHE.get(key)
        if cached is not None:
            return cached
        h = hashlib.blake2b(digest_size=16)
        with open(path, "rb") as handle:
            while block := handle.read(1 << 20):
                h.update(block)
    except OSError as exc:
        raise DataError(f"Cannot read {path} to fingerprint it: {one_line(exc)}") from exc
    digest = h.digest()
    if time.time_ns() - stat.st_mtime_ns > _RACY_NS:
        _DIGEST_CACHE[key] = digest
    return digest


# --------------------------------------------------------------------------- arrays
def as_indices(indices: Any, n: int) -> np.ndarray:
    """``indices`` (1-D integers, negative ones from the end, or a slice) checked against ``n``."""
    if isinstance(indices, slice):
        return np.arange(n, dtype=np.int64)[indices]
    idx = np.asarray(indices)
    if idx.ndim != 1:
        raise InputError(f"indices must be 1-D (got shape {idx.shape}); for one image pass [i].")
    if idx.size == 0:
        return np.empty(0, dtype=np.int64)
    if idx.dtype == bool or not np.issubdtype(idx.dtype, np.integer):
        raise InputError(f"indices must be integers, got dtype {idx.dtype}.")
    idx = idx.astype(np.int64)
    if idx.min() < -n or idx.max() >= n:
        bad = idx[(idx < -n) | (idx >= n)][0]
        raise InputError(f"index {bad} is out of range for a source of {n} images.")
    return np.where(idx < 0, idx + n, idx)


def _as_uint8_images(images: Any, where: str) -> np.ndarray:
    arr = np.asarray(images)
    if arr.dtype == bool or not (
        np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)
    ):
        raise DataError(
            f"{where}: images must be a uint8, integer or float array, got {arr.dtype}."
        )
    if arr.ndim != 4 or arr.shape[3] not in (1, 3):
        hint = (
            " (channels first? use images.transpose(0, 2, 3, 1))"
            if arr.ndim == 4 and arr.shape[1] in (1, 3)
            else ""
        )
        raise DataError(f"{where}: images must have shape (N, H, W, 3), got {arr.shape}{hint}.")
    if 0 in arr.shape[:3]:
        raise DataError(f"{where}: images must be non-empty, got shape {arr.shape}.")
    if arr.dtype != np.uint8:
        arr = _to_uint8(arr, where)
    if arr.shape[3] == 1:
        arr = np.repeat(arr, 3, axis=3)
    return np.ascontiguousarray(arr)


def _to_uint8(arr: np.ndarray, where: str) -> np.ndarray:
    """Integers in [0, 255] cast; floats in [0, 1] to rint(255 x); chunked over images."""
    is_float = np.issubdtype(arr.dtype, np.floating)
    high = 1 if is_float else 255
    out = np.empty(arr.shape, dtype=np.uint8)
    for start in range(0, arr.shape[0], _FLOAT_CHUNK):
        part = arr[start : start + _FLOAT_CHUNK]
        if is_float and not np.isfinite(part).all():
            raise DataError(f"{where}: float images contain NaN or infinite values.")
        low_found, high_found = part.min(), part.max()
        if low_found < 0 or high_found > high:
            raise DataError(
                f"{where}: {'float' if is_float else 'integer'} images must lie in [0, {high}], "
                f"found values in [{low_found}, {high_found}]."
            )
        out[start : start + _FLOAT_CHUNK] = np.rint(part * 255.0) if is_float else part
    return out


def _as_labels(labels: Any, n: int, where: str) -> np.ndarray:
    if labels is None:
        return np.full(n, -1, dtype=np.int64)
    arr = np.asarray(labels)
    if arr.ndim != 1 or arr.shape[0] != n:
        raise DataError(f"{where}: labels must have shape ({n},), got {arr.shape}.")
    if n and (arr.dtype == bool or not np.issubdtype(arr.dtype, np.integer)):
        raise DataError(f"{where}: labels must be integers (-1 = unknown), got {arr.dtype}.")
    arr = arr.astype(np.int64)
    if n and arr.min() < -1:
        raise DataError(f"{where}: labels must be >= -1 (-1 = unknown), found {arr.min()}.")
    return arr


def _as_classes(classes: Sequence[str] | None, labels: np.ndarray, where: str) -> list[str]:
    top = int(labels.max()) if labels.size else -1
    if classes is None:
        return [str(i) for i in range(top + 1)]
    names = [str(c) for c in classes]
    if top >= len(names):
        raise DataError(f"{where}: label {top} has no class name ({len(names)} classes given).")
    return names


def array_fingerprint(images: np.ndarray, chunk_bytes: int = 64 << 20) -> str:
    """sha256 over an array's dtype, shape and bytes (C order): the data part of a cache key.

    Hashed in slices along the first axis, so a non-contiguous array is never copied whole.
    """
    images = np.asarray(images)
    digest = hashlib.sha256(f"ndarray|{images.dtype.str}|{images.shape}|".encode())
    if images.size:
        rows = max(1, chunk_bytes // max(1, images[:1].nbytes)) if images.ndim else 1
        parts = [images] if images.ndim == 0 else (images[i : i + rows] for i in range(0, len(images), rows))
        for part in parts:
            digest.update(memoryview(np.ascontiguousarray(part)).cast("B"))
    return digest.hexdigest()


def _array_fingerprint(images: np.ndarray, labels: np.ndarray, classes: list[str]) -> str:
    h = hashlib.blake2b(digest_size=_FINGERPRINT_BYTES)
    h.update(
        _canonical_json(
            {
                "kind": "oddkit.ArraySource",
                "version": 1,
                "shape": list(images.shape),
                "classes": classes,
            }
        )
    )
    h.update(array_fingerprint(images).encode())
    h.update(labels.astype("<i8").tobytes())
    return h.hexdigest()


def _read_only(arr: np.ndarray) -> np.ndarray:
    view = arr.view()
    view.flags.writeable = False
    return view


def _check_size(size: Size | int | None) -> Size | None:
    if size is None:
        return None
    pair = (
        (size, size) if isinstance(size, (int, np.integer)) and not isinstance(size, bool) else size
    )
    try:
        h, w = pair  # type: ignore[misc]
    except (TypeError, ValueError):
        raise ParamError(f"size must be None, an int or (height, width), got {size!r}.") from None
    for v in (h, w):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise ParamError(f"size must hold positive integers (height, width), got {size!r}.")
    return int(h), int(w)


def _class_list(x: Any) -> list[str]:
    if isinstance(x, dict):
        return [str(k) for k, _ in sorted(x.items(), key=lambda kv: kv[1])]
    if hasattr(x, "classes"):
        return [str(c) for c in x.classes]
    return [str(c) for c in x]


def _canonical_json(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode() + b"\0"


# --------------------------------------------------------------------------- IDX files
def _read_idx(path: PathLike, ndim: int) -> np.ndarray:
    """An unsigned-byte IDX file (gzip or raw) with ``ndim`` dimensions, fully validated."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"IDX file not found: {path}.")
    try:
        with open(path, "rb") as handle:
            raw = handle.read()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except (OSError, EOFError) as exc:
        raise DataError(f"Cannot read {path}: {one_line(exc)}") from exc
    magic, header = 0x0800 + ndim, 4 + 4 * ndim
    found = struct.unpack(">I", raw[:4])[0] if len(raw) >= 4 else None
    if found != magic:
        kind = "images" if ndim == 3 else "labels"
        raise DataError(
            f"{path} is not an unsigned-byte IDX file with {ndim} dimension(s): magic number "
            f"{found} instead of {magic} (MNIST {kind} files start with {magic})."
        )
    if len(raw) < header:
        raise DataError(f"{path}: the IDX header is cut short ({len(raw)} bytes).")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    expected = header + int(np.prod(dims, dtype=np.int64))
    if len(raw) != expected:
        raise DataError(
            f"{path}: the header announces {dims} ({expected} bytes with the header) but the "
            f"file holds {len(raw)} bytes; it is truncated or damaged."
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


# --------------------------------------------------------------------------- CIFAR pickles
class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickler that resolves only numpy array reconstruction and plain builtins."""

    def find_class(self, module: str, name: str) -> Any:
        found = _ALLOWED_GLOBALS.get((module, name))
        if found is None:
            raise pickle.UnpicklingError(
                f"refused to load {module}.{name}: only numpy arrays and plain data are allowed"
            )
        return found


def _allowed_globals() -> dict[tuple[str, str], Any]:
    import _codecs

    reconstruct = np.ndarray.__reduce__(np.zeros(1))[0]  # numpy's _reconstruct
    frombuffer = np.ndarray.__reduce_ex__(np.zeros(1), 5)[0]  # protocol-5 rebuild
    allowed: dict[tuple[str, str], Any] = {("_codecs", "encode"): _codecs.encode}
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed[(module, "_reconstruct")] = reconstruct
    for module in ("numpy.core.numeric", "numpy._core.numeric"):
        allowed[(module, "_frombuffer")] = frombuffer
    allowed[("numpy", "ndarray")] = np.ndarray
    allowed[("numpy", "dtype")] = np.dtype
    for builtin in (bytearray, bytes, complex, dict, float, frozenset, int, list, set, str, tuple):
        for module in ("builtins", "__builtin__"):
            allowed[(module, builtin.__name__)] = builtin
    return allowed


_ALLOWED_GLOBALS = _allowed_globals()


def _safe_unpickle(path: Path) -> Any:
    if not path.is_file():
        raise DataError(f"CIFAR file not found: {path}.")
    try:
        with open(path, "rb") as handle:
            # latin1: the official files were written by Python 2; numpy reads their
            # array bytes back from latin1 strings.
            return _NumpyOnlyUnpickler(handle, encoding="latin1").load()
    except (
        pickle.UnpicklingError,
        EOFError,
        ValueError,
        TypeError,
        AttributeError,
        IndexError,
        KeyError,
        struct.error,
    ) as exc:
        raise DataError(f"Cannot read {path} as a CIFAR pickle: {one_line(exc)}") from exc


def _cifar_folder(directory: PathLike) -> tuple[Path, int]:
    base = Path(directory)
    for folder in (base, base / "cifar-10-batches-py", base / "cifar-100-python"):
        if (folder / "batches.meta").is_file():
            return folder, 10
        if (folder / "meta").is_file():
            return folder, 100
    raise DataError(
        f"No CIFAR python files under {base}: expected cifar-10-batches-py/batches.meta or "
        "cifar-100-python/meta (the official 'python version' archives, extracted)."
    )


def _entry(mapping: Any, key: str, where: Path) -> Any:
    if isinstance(mapping, dict):
        for candidate in (key, key.encode()):
            if candidate in mapping:
                return mapping[candidate]
    raise DataError(f"{where} has no entry {key!r}; is it an official CIFAR file?")


def _names(values: Any) -> list[str]:
    return [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in values]


def _cifar_batch(path: Path, label_key: str, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    batch = _safe_unpickle(path)
    data = np.asarray(_entry(batch, "data", path))
    labels = np.asarray(_entry(batch, label_key, path))
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise DataError(f"{path}: data must be uint8 (n, 3072), got {data.dtype} {data.shape}.")
    if labels.shape != (data.shape[0],) or not np.issubdtype(labels.dtype, np.integer):
        raise DataError(f"{path}: expected {data.shape[0]} integer labels, got {labels.shape}.")
    if labels.size and (labels.min() < 0 or labels.max() >= n_classes):
        raise DataError(f"{path}: labels must lie in 0..{n_classes - 1}.")
    return data, labels.astype(np.int64)


# --------------------------------------------------------------------------- torchvision
def _torchvision_labels(dataset: Any) -> np.ndarray:
    n = len(dataset)
    for attr in ("targets", "labels", "_labels"):
        values = getattr(dataset, attr, None)
        if values is not None and len(values) == n:
            return np.asarray(values, dtype=np.int64).reshape(n)
    samples = getattr(dataset, "_samples", None)
    if samples is not None and len(samples) == n:
        return np.asarray([s[1] for s in samples], dtype=np.int64)
    return np.full(n, -1, dtype=np.int64)


def _torchvision_content(dataset: Any) -> Iterator[bytes]:
    data = getattr(dataset, "data", None)
    if data is not None:
        arr = np.ascontiguousarray(np.asarray(data))
        yield _canonical_json({"data": list(arr.shape), "dtype": str(arr.dtype)})
        yield arr.tobytes()
        return
    for attr in ("samples", "imgs", "_image_files", "_samples"):
        items = getattr(dataset, attr, None)
        if items:
            paths = [item[0] if isinstance(item, (tuple, list)) else item for item in items]
            break
    else:
        paths = sorted(p for p in Path(getattr(dataset, "root", ".")).rglob("*") if p.is_file())
    root = Path(getattr(dataset, "root", "."))
    for path, digest in zip(paths, file_digests([Path(p) for p in paths])):
        yield os.path.relpath(path, root).encode() + b"\0" + digest

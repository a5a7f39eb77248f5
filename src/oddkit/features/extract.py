"""Batched extraction of penultimate features and logits, with prefetch, progress and cache.

:func:`extract` runs a :class:`~oddkit.features.backbones.Backbone` over images given as
a uint8 array ``(n, H, W, 3)`` or as an :class:`ImageSource` (decodes only the images
asked for). Batches are loaded (decoded) in a background thread while the network runs
on the previous one, so at most two batches of images are in memory at
once. The network runs under ``torch.inference_mode()`` in eval mode (the module's
previous mode is restored), with ``torch.set_num_threads(threads)`` for the call (the
previous setting is restored). Features and logits come back as float32 numpy arrays.
"""

from __future__ import annotations

import contextlib
import inspect
import os
import warnings
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from .._memory import keep_freed_memory
from ..data.images import ArraySource, ImageSource, check_image_batch
from ..detectors.base import check_bool, check_int
from ..errors import EmptyInputError, InputError
from .backbones import Backbone
from .cache import FeatureCache, FeatureCacheWarning, cache_key


@dataclass(frozen=True)
class Extracted:
    """Result of :func:`extract`: float32 ``features`` (n, d), ``logits`` (n, k), ``labels``.

    ``labels`` come from the image source (None for a bare array); ``from_cache`` tells
    whether the arrays were read from the cache; ``cache_key`` names the entry (None
    without a cache).
    """

    features: np.ndarray
    logits: np.ndarray
    labels: np.ndarray | None = None
    from_cache: bool = False
    cache_key: str | None = None

    def __len__(self) -> int:
        return int(self.features.shape[0])


def extract(
    backbone: Backbone,
    images: np.ndarray | ImageSource,
    batch_size: int = 256,
    threads: int | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    progress: bool = True,
) -> Extracted:
    """Features and logits of every image, batch by batch, optionally cached on disk.

    ``images``: uint8 ``(n, H, W, 3)`` or an :class:`ImageSource`. ``threads``: torch
    intra-op threads for this call (None keeps the current setting). ``cache_dir``:
    read the entry for (backbone, weights, data, transform) if present, else compute and
    store it (see :mod:`oddkit.features.cache`; an unusable directory gives a
    :class:`~oddkit.features.cache.FeatureCacheWarning`, never a failure).
    """
    if not isinstance(backbone, Backbone):
        raise InputError(
            "backbone must be an oddkit Backbone (create_backbone / from_module), "
            f"got {type(backbone).__name__}."
        )
    batch_size = check_int("batch_size", batch_size, low=1)
    threads = None if threads is None else check_int("threads", threads, low=1)
    progress = check_bool("progress", progress)
    source = as_source(images)
    n = len(source)
    if n == 0:
        raise EmptyInputError("no images to extract features from (the source is empty).")
    labels = None if isinstance(images, np.ndarray) else _labels_of(source, n)

    cache, key = _open_cache(cache_dir, backbone, source)
    if cache is not None and key is not None:
        hit = cache.read(key, n)
        if hit is not None:
            return Extracted(hit.features, hit.logits, labels, from_cache=True, cache_key=key)
    features, logits = _run(backbone, source, n, batch_size, threads, progress)
    if cache is not None and key is not None:
        cache.write(key, features, logits, _meta(backbone, source, n))
    return Extracted(features, logits, labels, from_cache=False, cache_key=key)


def as_source(images: Any) -> ImageSource:
    """A uint8 array is wrapped as a source; an image source is checked and returned."""
    if isinstance(images, np.ndarray):
        check_image_batch(images, contiguous=False)
        if images.shape[0] == 0:
            raise EmptyInputError("no images to extract features from (the array is empty).")
        return ArraySource(images)
    # getattr_static: a lazy ``fingerprint`` property (hashing every file) must not run here
    missing = [
        attr
        for attr in ("__len__", "load", "fingerprint")
        if inspect.getattr_static(images, attr, None) is None
    ]
    if missing:
        raise InputError(
            f"images must be a uint8 array (n, H, W, 3) or an image source with __len__, "
            f"load(indices) and fingerprint; {type(images).__name__} lacks {', '.join(missing)}."
        )
    return images


def _labels_of(source: ImageSource, n: int) -> np.ndarray | None:
    labels = getattr(source, "labels", None)
    if labels is None:
        return None
    labels = np.asarray(labels)
    if labels.shape != (n,):
        raise InputError(f"the source's labels have shape {labels.shape}, expected ({n},).")
    return labels


# ----------------------------------------------------------------------------- cache glue
def _open_cache(
    cache_dir: str | os.PathLike[str] | None, backbone: Backbone, source: ImageSource
) -> tuple[FeatureCache | None, str | None]:
    if cache_dir is None:
        return None, None
    description = getattr(backbone.transform, "description", None)
    if not isinstance(description, str):
        warnings.warn(
            f"the transform of {backbone.name} has no 'description' string, so its features "
            "cannot be keyed safely; extracting without the cache.",
            FeatureCacheWarning,
            stacklevel=3,
        )
        return None, None
    cache = FeatureCache(Path(cache_dir))
    if not cache.writable:
        warnings.warn(
            f"feature cache directory {cache.root} is not writable ({cache.problem}); existing "
            "entries are still read, new features will not be cached.",
            FeatureCacheWarning,
            stacklevel=3,
        )
    key = cache_key(backbone.name, backbone.weights_hash, str(source.fingerprint), description)
    return cache, key


def _meta(backbone: Backbone, source: ImageSource, n: int) -> dict[str, Any]:
    from .. import __version__

    return {
        "backbone": backbone.name,
        "weights_hash": backbone.weights_hash,
        "data_fingerprint": str(source.fingerprint),
        "transform": getattr(backbone.transform, "description", None),
        "n": n,
        "oddkit_version": __version__,
        "torch_version": torch.__version__,
    }


# ----------------------------------------------------------------------------- the loop
def _run(
    backbone: Backbone, source: ImageSource, n: int, batch_size: int, threads: int | None, progress: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Forward every batch; the next batch is decoded in a background thread meanwhile."""
    bounds = [(start, min(start + batch_size, n)) for start in range(0, n, batch_size)]
    out: dict[str, np.ndarray] = {}
    with (
        _torch_threads(threads),
        _eval_mode(backbone.model),
        keep_freed_memory(),
        ThreadPoolExecutor(max_workers=1, thread_name_prefix="oddkit-prefetch") as pool,
        tqdm(total=n, unit="img", desc=f"features {backbone.name}", disable=not progress) as bar,
    ):
        pending: Future[np.ndarray] = pool.submit(_load, source, *bounds[0])
        for i, (start, stop) in enumerate(bounds):
            images = pending.result()
            if i + 1 < len(bounds):
                pending = pool.submit(_load, source, *bounds[i + 1])
            x = _network_input(backbone, images)
            with torch.inference_mode():
                features, logits = backbone.forward_features(x)
            _store(out, "features", features, start, stop, n)
            _store(out, "logits", logits, start, stop, n)
            bar.update(stop - start)
    return out["features"], out["logits"]


def _load(source: ImageSource, start: int, stop: int) -> np.ndarray:
    """Decode images ``[start, stop)`` (in the prefetch thread: no torch work there)."""
    images = check_image_batch(source.load(np.arange(start, stop)))
    if images.shape[0] != stop - start:
        raise InputError(f"the image source returned {images.shape[0]} images for {stop - start} indices.")
    return images


def _network_input(backbone: Backbone, images: np.ndarray) -> torch.Tensor:
    """Transform decoded images into the network's input (on the thread that runs it).

    The transform's torch operations run here rather than in the prefetch thread: torch
    work started on a second thread brings up a second intra-op thread team that competes
    with the network's for the same cores (the extraction ran about 6% slower on ResNet-20
    that way, ad hoc timing during development); the transform itself is a few percent of
    the forward pass.
    """
    x = backbone.transform(images)
    if not isinstance(x, torch.Tensor) or x.ndim != 4:
        raise InputError(f"the transform of {backbone.name} must return a 4-D tensor (n, C, H, W).")
    fmt = torch.channels_last if backbone.channels_last else torch.contiguous_format
    return x.contiguous(memory_format=fmt)


def _store(out: dict[str, np.ndarray], name: str, value: torch.Tensor, start: int, stop: int, n: int) -> None:
    """Copy a batch result into the float32 output array (allocated on the first batch)."""
    if not isinstance(value, torch.Tensor) or value.ndim != 2 or value.shape[0] != stop - start:
        shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
        raise InputError(
            f"forward_features returned {name} of shape {shape}; expected ({stop - start}, width)."
        )
    if name not in out:
        out[name] = np.empty((n, value.shape[1]), dtype=np.float32)
    elif out[name].shape[1] != value.shape[1]:
        raise InputError(f"{name} width changed between batches ({out[name].shape[1]} -> {value.shape[1]}).")
    out[name][start:stop] = value.detach().to(device="cpu", dtype=torch.float32).numpy()


@contextlib.contextmanager
def _torch_threads(threads: int | None) -> Iterator[None]:
    """``torch.set_num_threads(threads)`` inside the block, the previous value restored after."""
    if threads is None:
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@contextlib.contextmanager
def _eval_mode(model: torch.nn.Module) -> Iterator[None]:
    """Eval mode inside the block; every submodule's previous train/eval flag restored after."""
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for module, training in modes:
            module.training = training

"""The shift registry: named image transforms with severities 1-5, applied deterministically.

A *shift* maps uint8 RGB images ``(n, H, W, 3)`` to images of the same shape and dtype.
Each is registered with a :class:`ShiftInfo` (kind, summary, reference, whether it draws
random numbers, whether it needs square images, and how it differs from its reference,
if at all) and a function ``fn(images, severity, rng) -> images``:

* ``images``: a C-contiguous uint8 array ``(n, H, W, 3)``, ``H, W >=`` :data:`MIN_SIDE`,
  already checked; the function must not modify it;
* ``severity``: an int in 1..5, already checked (shifts without a strength, such as
  ``rot90``, ignore it and say so in their summary);
* ``rng``: a ``numpy.random.Generator`` that is the function's only source of randomness.

:func:`apply_shift` is the one entry point: it checks the name, the severity and the
images *before* any work and seeds the generator from ``(seed, name, severity)``, so the
same call gives the same images on every machine. Every function works on a whole batch
at once (no Python loop over images where the work is per pixel) and on any image size;
parameters published for 32x32 images (CIFAR-10-C) are scaled with the image side where
they are lengths, as each function documents.
"""

from __future__ import annotations

import difflib
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..data.images import check_image_batch
from ..errors import InputError, ParamError

__all__ = [
    "KINDS",
    "MIN_SIDE",
    "SEVERITIES",
    "ShiftInfo",
    "apply_shift",
    "blockwise",
    "check_severity",
    "get_shift",
    "list_shifts",
    "register_shift",
    "clipped_zoom",
    "gaussian_filter_images",
    "reference_scale",
    "resize_bilinear",
    "scale_side",
    "scaled_length",
    "separable",
    "zoom_axis_matrices",
    "to_float",
    "to_uint8",
]

SEVERITIES: tuple[int, ...] = (1, 2, 3, 4, 5)
#: ``corruption``: the 19 CIFAR-10-C corruptions; ``geometric``: rotations, flips, crops,
#: translations; ``photometric``: colour changes that are not corruptions (colour jitter).
KINDS: tuple[str, ...] = ("corruption", "geometric", "photometric")
#: Smallest image side a shift accepts (blur kernels and crops need some room).
MIN_SIDE = 8

ShiftFunction = Callable[[np.ndarray, int, np.random.Generator], np.ndarray]


@dataclass(frozen=True)
class ShiftInfo:
    """What a registered shift is: ``name``, ``kind`` (one of :data:`KINDS`), a one-line
    ``summary`` (what severity changes), the ``reference`` it follows, ``random`` (whether
    it draws random numbers), ``square_only`` (rotations by 90 degrees) and ``notes``: how
    it differs from the reference, empty where it does not."""

    name: str
    kind: str
    summary: str
    reference: str
    random: bool
    square_only: bool = False
    notes: str = ""


_REGISTRY: dict[str, tuple[ShiftInfo, ShiftFunction]] = {}


def register_shift(info: ShiftInfo, fn: ShiftFunction) -> None:
    """Add a shift to the registry (names are unique, lower-case)."""
    if info.kind not in KINDS:
        raise ParamError(f"shift kind must be one of {KINDS}, got {info.kind!r}.")
    if not info.name or info.name != info.name.lower() or info.name in _REGISTRY:
        raise ParamError(
            f"shift name {info.name!r} is empty, not lower-case or already registered."
        )
    _REGISTRY[info.name] = (info, fn)


def list_shifts(kind: str | None = None) -> list[ShiftInfo]:
    """Every registered shift (of one ``kind`` if given), in registration order."""
    if kind is not None and kind not in KINDS:
        raise ParamError(f"kind must be one of {KINDS} or None, got {kind!r}.")
    return [info for info, _ in _REGISTRY.values() if kind is None or info.kind == kind]


def get_shift(name: Any) -> ShiftInfo:
    """The :class:`ShiftInfo` of ``name``; an unknown name is a :class:`ParamError` that
    suggests the closest names."""
    return _lookup(name)[0]


def check_severity(severity: Any) -> int:
    """``severity`` as an int in 1..5, or a :class:`ParamError`."""
    if (
        isinstance(severity, bool)
        or not isinstance(severity, (int, np.integer))
        or severity not in SEVERITIES
    ):
        raise ParamError(f"severity must be an integer from 1 to 5, got {severity!r}.")
    return int(severity)


def check_shift_images(images: Any, name: str | None = None) -> np.ndarray:
    """``images`` as a C-contiguous uint8 array ``(n, H, W, 3)`` a shift accepts, or an
    :class:`InputError` saying what is wrong (mode, size, squareness for ``name``)."""
    images = check_image_batch(images)
    n, h, w = images.shape[:3]
    if n == 0:
        raise InputError("images is empty; pass at least one image (n >= 1).")
    if min(h, w) < MIN_SIDE:
        raise InputError(
            f"images must be at least {MIN_SIDE}x{MIN_SIDE} pixels for the shifts, got {h}x{w}."
        )
    if name is not None and h != w and _lookup(name)[0].square_only:
        raise InputError(
            f"shift {name!r} turns images by 90 degrees and needs square images, got {h}x{w}."
        )
    return images


def apply_shift(
    images: Any, name: str, severity: int = 3, *, seed: int = 0
) -> np.ndarray:
    """``images`` (uint8 ``(n, H, W, 3)``) under shift ``name`` at ``severity`` (1-5).

    Deterministic: the random numbers come from a generator seeded with
    ``(seed, name, severity)``, so the same images, name, severity and seed give the same
    result everywhere. Everything is checked before any work starts. Returns a new uint8
    array of the same shape (the input is never modified).
    """
    info, fn = _lookup(name)
    severity = check_severity(severity)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ParamError(f"seed must be a non-negative integer, got {seed!r}.")
    images = check_shift_images(images, name)
    rng = np.random.default_rng(
        np.random.SeedSequence([int(seed), zlib.crc32(name.encode()), severity])
    )
    out = fn(images, severity, rng)
    if (
        not isinstance(out, np.ndarray)
        or out.dtype != np.uint8
        or out.shape != images.shape
    ):
        got = (
            f"{out.dtype} {out.shape}"
            if isinstance(out, np.ndarray)
            else type(out).__name__
        )
        raise RuntimeError(
            f"internal error: shift {info.name!r} returned {got} for uint8 {images.shape}; please report this."
        )
    return out


def _lookup(name: Any) -> tuple[ShiftInfo, ShiftFunction]:
    if not isinstance(name, str) or name not in _REGISTRY:
        close = difflib.get_close_matches(str(name), list(_REGISTRY), n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise ParamError(
            f"unknown shift {name!r}.{hint} Known shifts: {', '.join(_REGISTRY)}."
        )
    return _REGISTRY[name]


# ----------------------------------------------------------------------------- shared helpers
def to_float(images: np.ndarray) -> np.ndarray:
    """uint8 images as float32 in [0, 1]."""
    return images.astype(np.float32) * np.float32(1.0 / 255.0)


def to_uint8(x: np.ndarray) -> np.ndarray:
    """Float images in [0, 1] (values outside are clipped) as uint8, rounded to nearest."""
    out = np.clip(x, 0.0, 1.0)
    out *= 255.0
    out += 0.5
    return out.astype(np.uint8)


def scale_side(images: np.ndarray) -> int:
    """The side published pixel lengths are scaled with: ``min(H, W)`` (32 on CIFAR), so a
    non-square image gets the lengths of its shorter side."""
    return int(min(images.shape[1], images.shape[2]))


def reference_scale(height: int, width: int) -> float:
    """``min(H, W) / 32``: the factor that turns a length published for 32x32 images
    into the length for ``H x W`` images (:func:`scale_side`'s rule)."""
    return scaled_length(1.0, min(height, width))


def blockwise(images: np.ndarray, fn: Callable[[np.ndarray], np.ndarray], values: int = 1 << 21) -> np.ndarray:
    """``fn`` (uint8 block -> uint8 block of the same shape) over consecutive blocks of
    whole images holding about ``values`` colour values each, into a new array.

    Temporaries stay bounded whatever ``n`` is. Blocks are visited in order, so a ``fn``
    that draws from a generator stays a function of the images and the seed (for a given
    ``values``)."""
    n = images.shape[0]
    per_block = max(1, values // int(np.prod(images.shape[1:])))
    if n <= per_block:
        return fn(images)
    out = np.empty_like(images)
    for start in range(0, n, per_block):
        out[start : start + per_block] = fn(images[start : start + per_block])
    return out


def scaled_length(length: float, side: int, reference_side: int = 32) -> float:
    """A length published for ``reference_side`` images (CIFAR: 32) scaled to ``side``."""
    return float(length) * side / reference_side


def _linear_weights(coords: np.ndarray, n_in: int) -> np.ndarray:
    """Linear-interpolation weights ``(m, n_out, n_in)`` sampling an axis of ``n_in`` pixels
    at ``coords`` ``(m, n_out)`` (input pixel indices, fractional; clamped to the edges)."""
    coords = np.clip(coords, 0.0, n_in - 1.0)
    lo = np.floor(coords).astype(np.intp)
    hi = np.minimum(lo + 1, n_in - 1)
    frac = (coords - lo).astype(np.float32)
    m, n_out = coords.shape
    weights = np.zeros((m, n_out, n_in), dtype=np.float32)
    win, row = np.meshgrid(np.arange(m), np.arange(n_out), indexing="ij")
    np.add.at(weights, (win, row, lo), 1.0 - frac)
    np.add.at(weights, (win, row, hi), frac)
    return weights


def _interpolation_matrices(
    n_in: int, n_out: int, start: np.ndarray, length: np.ndarray
) -> np.ndarray:
    """Bilinear weights ``(m, n_out, n_in)``: for each of ``m`` windows
    ``[start, start + length)`` (input pixel units) the matrix that samples it at ``n_out``
    output pixels, pixel centres at ``i + 0.5`` (``align_corners=False``). Samples are
    clamped to the window's first and last pixels, as resizing the cropped window would."""
    start = np.asarray(start, dtype=np.float64).reshape(-1, 1)
    length = np.asarray(length, dtype=np.float64).reshape(-1, 1)
    coords = start + (np.arange(n_out) + 0.5) * (length / n_out) - 0.5
    first = np.clip(np.ceil(start), 0, n_in - 1)
    last = np.clip(np.floor(start + length) - 1, first, n_in - 1)
    return _linear_weights(np.clip(coords, first, last), n_in)


def resize_bilinear(
    x: np.ndarray, height: int, width: int, boxes: np.ndarray | None = None
) -> np.ndarray:
    """Bilinear resize of float images ``(n, H, W, C)`` to float32 ``(n, height, width, C)``.

    Without ``boxes`` the whole image is resized (``align_corners=False``, as PIL and
    torch do when enlarging; no antialiasing, so use it to enlarge or for mild shrinking).
    ``boxes`` (``(n, 4)``: ``top, left, box_height, box_width`` per image, in input pixels,
    fractional allowed) resizes each image's box to the output size: a crop and resize in
    one step. Separable: two batched matrix products, no Python loop over images.
    """
    n, h, w = x.shape[:3]
    x = x.astype(np.float32, copy=False)
    if boxes is None:
        ry = _interpolation_matrices(h, height, np.zeros(1), np.full(1, h))[0]
        rx = _interpolation_matrices(w, width, np.zeros(1), np.full(1, w))[0]
        return np.einsum("yh,nhwc,xw->nyxc", ry, x, rx, optimize=True)
    boxes = np.asarray(boxes, dtype=np.float64)
    if boxes.shape != (n, 4):
        raise InputError(
            f"resize_bilinear: boxes must have shape ({n}, 4), got {boxes.shape}."
        )
    ry = _interpolation_matrices(h, height, boxes[:, 0], boxes[:, 2])
    rx = _interpolation_matrices(w, width, boxes[:, 1], boxes[:, 3])
    return np.einsum("nyh,nhwc,nxw->nyxc", ry, x, rx, optimize=True)


def gaussian_filter_images(x: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur of float images ``(n, H, W, C)`` over the two spatial axes only.

    The same filter as ``skimage.filters.gaussian(img, sigma, channel_axis=-1)`` (the
    CIFAR-10-C reference's blur): edge pixels repeated (``mode="nearest"``), kernel
    truncated at 4 sigma; ``sigma`` in pixels of ``x`` (scale it yourself for other sizes).
    """
    from scipy.ndimage import gaussian_filter

    if sigma <= 0:
        return x.astype(np.float32, copy=True)
    return gaussian_filter(
        x.astype(np.float32, copy=False),
        sigma=(0, sigma, sigma, 0),
        mode="nearest",
        truncate=4.0,
    )


def clipped_zoom(x: np.ndarray, factor: float) -> np.ndarray:
    """Zoom into the centre of float images ``(n, H, W, C)`` by ``factor >= 1``, same size out.

    The CIFAR-10-C construction (zoom blur, snow): the central ``ceil(side / factor)`` crop
    is enlarged by linear interpolation to ``round(crop * factor)`` pixels, sampling as
    ``scipy.ndimage.zoom(order=1)`` does (first and last pixels of crop and result
    aligned), and the centre ``H x W`` of the result is kept. Both axes are handled
    separately, so non-square images work (the reference assumes square ones).
    """
    ry, rx = zoom_axis_matrices(x.shape[1], x.shape[2], factor)
    return separable(x.astype(np.float32, copy=False), ry, rx)


def zoom_axis_matrices(
    height: int, width: int, factor: float
) -> tuple[np.ndarray, np.ndarray]:
    """The two linear maps of :func:`clipped_zoom`: ``(H, H)`` over rows, ``(W, W)`` over columns."""
    mats = []
    for side in (height, width):
        crop = int(np.ceil(side / factor))
        top = (side - crop) // 2
        zoomed = int(round(crop * factor))
        trim = (zoomed - side) // 2
        if zoomed > 1:
            coords = top + np.arange(trim, trim + side) * ((crop - 1) / (zoomed - 1))
        else:
            coords = np.full(side, float(top))
        mats.append(_linear_weights(coords[None, :], side)[0])
    return mats[0], mats[1]


def separable(x: np.ndarray, ry: np.ndarray, rx: np.ndarray) -> np.ndarray:
    """``ry @ image @ rx.T`` for every channel of float images ``x`` (n, H, W, C): a linear
    map over rows (``ry``: (H', H)) and one over columns (``rx``: (W', W)), as two batched
    matrix products (BLAS), giving ``(n, H', W', C)``."""
    n, h, w, c = x.shape
    rows = np.matmul(ry, x.reshape(n, h, w * c)).reshape(n, ry.shape[0], w, c)
    return np.matmul(rx, rows)

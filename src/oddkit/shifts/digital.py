"""Weather and digital corruptions of CIFAR-10-C: fog, brightness, contrast, elastic
transform, pixelate, JPEG compression and saturate.

Each follows the CIFAR-10-C generation script (Hendrycks & Dietterich, ICLR 2019,
``make_cifar_c.py``) with its published severity parameters, rewritten for whole
batches (no Python loop over images, except the per-image PIL calls of JPEG coding):

* ``fog``: a diamond-square plasma fractal per image added to the image, then the
  image rescaled by ``max / (max + c0)``;
* ``brightness`` / ``saturate``: the HSV value / saturation channel shifted / scaled;
* ``contrast``: each channel pulled towards its own mean;
* ``elastic_transform``: a random affine warp, then a smooth random displacement field;
* ``pixelate``: PIL's BOX resize down and back up, reproduced bit for bit;
* ``jpeg_compression``: PIL JPEG coding at the published qualities.

Lengths published for 32x32 images (the elastic displacements, sigma and affine jitter)
are scaled by ``min(H, W) / 32``; the fog map grows with the image (a power of two at
least as large as the longer side); pixelate shrinks each side by the published
fraction. Results are rounded to uint8 where the reference truncates (``np.uint8``).
Work is done in chunks of 65,536 pixels (64 CIFAR images, one 224x224 image), which
keeps memory bounded for any ``n`` and the arrays in cache (measured fastest); random
shifts draw their numbers chunk after chunk, which keeps them deterministic.
"""

from __future__ import annotations

import functools
import io
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from ..errors import ParamError
from .base import (
    ShiftInfo,
    blockwise,
    register_shift,
    scaled_length,
    to_float,
    to_uint8,
)
from .geometric import _hsv_to_rgb, _rgb_to_hsv

__all__ = ["DIGITAL", "bilinear_sample", "box_resize", "plasma_fractal"]

#: The corruptions of this module, in the order of the CIFAR-10-C protocol list.
DIGITAL: tuple[str, ...] = (
    "fog",
    "brightness",
    "contrast",
    "elastic_transform",
    "pixelate",
    "jpeg_compression",
    "saturate",
)

_REFERENCE = "CIFAR-10-C, Hendrycks & Dietterich, ICLR 2019 (make_cifar_c.py); our own batched implementation"
_ROUNDING = "uint8 by rounding where the reference truncates"
_IMSIZE = 32  # the side the published lengths refer to

# Published severity parameters of make_cifar_c.py (severity 1..5).
_FOG = ((0.2, 3.0), (0.5, 3.0), (0.75, 2.5), (1.0, 2.0), (1.5, 1.75))  # (strength, wibble decay)
_BRIGHTNESS = (0.05, 0.1, 0.15, 0.2, 0.3)  # added to HSV value
_CONTRAST = (0.75, 0.5, 0.4, 0.3, 0.15)  # factor on the distance to the channel mean
# (alpha, sigma, affine jitter) as fractions of IMSIZE: IMSIZE * 0.05 etc. in the script
_ELASTIC = ((0.0, 0.0, 0.08), (0.05, 0.2, 0.07), (0.08, 0.06, 0.06), (0.1, 0.04, 0.05), (0.1, 0.03, 0.03))
_PIXELATE = (0.95, 0.9, 0.85, 0.75, 0.65)  # kept fraction of each side
_JPEG_QUALITY = (80, 65, 58, 50, 40)
_SATURATE = ((0.3, 0.0), (0.1, 0.0), (1.5, 0.0), (2.0, 0.1), (2.5, 0.2))  # (factor, offset) on HSV saturation

_CHUNK_PIXELS = 1 << 16  # images per chunk: this many pixels / (H * W), at least one (64 CIFAR images)
_JPEG_BLOCK = 256  # images per task of the JPEG thread pool

ShiftFunction = Callable[[np.ndarray, int, np.random.Generator], np.ndarray]


def _in_chunks(fn: ShiftFunction) -> ShiftFunction:
    """Run a shift on consecutive chunks of about :data:`_CHUNK_PIXELS` pixels each
    (:func:`~oddkit.shifts.base.blockwise`): temporaries stay a few MB whatever ``n`` is."""

    @functools.wraps(fn)
    def run(images: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
        return blockwise(images, lambda block: fn(block, severity, rng), values=_CHUNK_PIXELS * images.shape[3])

    return run


# ----------------------------------------------------------------------------- fog
def plasma_fractal(n: int, mapsize: int, decay: float, rng: np.random.Generator) -> np.ndarray:
    """``n`` diamond-square height maps ``(n, mapsize, mapsize)`` (float64, each in [0, 1]).

    The construction of the CIFAR-10-C fog: start from a zero corner; at every level the
    centre of each square of corners becomes the mean of its four corners plus noise
    ``wibble * U(-wibble, wibble)``, then the edge midpoints (diamonds) likewise, with
    wrap-around neighbours; the step halves and ``wibble`` (starting at 100) is divided by
    ``decay`` after each level. Each map is finally rescaled to [0, 1]. All ``n`` maps
    are built at once; ``mapsize`` must be a power of two. For ``n = 1`` the random draws
    are those of the reference, in the same order.
    """
    if mapsize < 2 or mapsize & (mapsize - 1):
        raise ParamError(f"mapsize must be a power of two >= 2, got {mapsize}.")
    maps = np.empty((n, mapsize, mapsize), dtype=np.float64)
    maps[:, 0, 0] = 0.0
    step, wibble = mapsize, 100.0

    def wibbled(total: np.ndarray) -> np.ndarray:
        return total / 4 + wibble * rng.uniform(-wibble, wibble, total.shape)

    while step >= 2:
        half = step // 2
        corners = maps[:, ::step, ::step]
        squares = corners + np.roll(corners, -1, axis=1)
        squares += np.roll(squares, -1, axis=2)
        maps[:, half::step, half::step] = wibbled(squares)
        centres = maps[:, half::step, half::step]
        left = (centres + np.roll(centres, 1, axis=1)) + (corners + np.roll(corners, -1, axis=2))
        maps[:, ::step, half::step] = wibbled(left)
        top = (centres + np.roll(centres, 1, axis=2)) + (corners + np.roll(corners, -1, axis=1))
        maps[:, half::step, ::step] = wibbled(top)
        step = half
        wibble /= decay
    maps -= maps.min(axis=(1, 2), keepdims=True)
    maps /= maps.max(axis=(1, 2), keepdims=True)
    return maps


@_in_chunks
def _fog(images: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """Fog: ``(x + c0 * map) * m / (m + c0)``, ``m`` the image's maximum (over pixels and
    channels), ``map`` a plasma fractal of wibble decay ``c1`` (one per image, the same
    for the three channels). ``(c0, c1)`` by severity: (0.2, 3), (0.5, 3), (0.75, 2.5),
    (1, 2), (1.5, 1.75). The map is ``2**k >= max(H, W)`` pixels wide (32 for CIFAR, as in
    the reference; 256 for 224-pixel images, as in ImageNet-C) and cropped to ``H x W``,
    so the fog's structure scales with the image."""
    strength, decay = _FOG[severity - 1]
    n, h, w = images.shape[:3]
    mapsize = 1 << (max(h, w) - 1).bit_length()
    fractal = plasma_fractal(n, mapsize, decay, rng)[:, :h, :w, None].astype(np.float32)
    x = to_float(images)
    peak = x.max(axis=(1, 2, 3), keepdims=True)
    x += np.float32(strength) * fractal
    x *= peak / (peak + np.float32(strength))
    return to_uint8(x)


# ----------------------------------------------------------------------------- colour
def _planar(x: np.ndarray) -> np.ndarray:
    """``x`` ``(..., 3)``, same shape and values, stored channel after channel: the shared
    RGB-to-HSV conversion reads one channel at a time and runs ~1.3x faster on
    contiguous planes (measured on 64-image chunks)."""
    return np.moveaxis(np.ascontiguousarray(np.moveaxis(x, -1, 0)), 0, -1)


@_in_chunks
def _brightness(images: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """Brightness: in HSV (scikit-image conventions), ``V <- clip(V + c, 0, 1)`` with
    ``c`` = 0.05, 0.1, 0.15, 0.2, 0.3 by severity, then back to RGB (float32)."""
    hsv = _rgb_to_hsv(to_float(_planar(images)))
    hsv[..., 2] = np.clip(hsv[..., 2] + np.float32(_BRIGHTNESS[severity - 1]), 0.0, 1.0)
    return to_uint8(_hsv_to_rgb(hsv))


@_in_chunks
def _saturate(images: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """Saturate: in HSV (scikit-image conventions), ``S <- clip(S * c0 + c1, 0, 1)`` with
    ``(c0, c1)`` = (0.3, 0), (0.1, 0), (1.5, 0), (2, 0.1), (2.5, 0.2) by severity, then back
    to RGB (float32). Severities 1-2 desaturate, 3-5 oversaturate (the published order)."""
    factor, offset = _SATURATE[severity - 1]
    hsv = _rgb_to_hsv(to_float(_planar(images)))
    hsv[..., 1] = np.clip(hsv[..., 1] * np.float32(factor) + np.float32(offset), 0.0, 1.0)
    return to_uint8(_hsv_to_rgb(hsv))


@_in_chunks
def _contrast(images: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """Contrast: ``(x - mean) * c + mean``, ``mean`` per image and channel (over H and W),
    ``c`` = 0.75, 0.5, 0.4, 0.3, 0.15 by severity."""
    x = to_float(images)
    means = x.mean(axis=(1, 2), keepdims=True, dtype=np.float64).astype(np.float32)
    x -= means
    x *= np.float32(_CONTRAST[severity - 1])
    x += means
    return to_uint8(x)


# ----------------------------------------------------------------------------- elastic
def bilinear_sample(planes: np.ndarray, rows: np.ndarray, cols: np.ndarray, mode: str) -> np.ndarray:
    """Float images stored channel first, ``planes`` ``(C, n, H, W)``, sampled bilinearly at
    ``(rows, cols)`` (pixel coordinates, broadcastable to ``(n, H', W')``; pixel centres
    at integers). Returns float32 ``(C, n, H', W')``.

    ``mode`` extends the image beyond its edges: ``"mirror"`` repeats it mirrored about
    the edge pixels (``d c b | a b c d | c b a``: OpenCV's ``BORDER_REFLECT_101``,
    scipy's ``mirror``), ``"reflect"`` about the pixel edges (``b a | a b c d | d c``:
    scipy's ``reflect``). Interpolation is linear on that extended grid, as both
    libraries do; since the extended image is symmetric, each coordinate is first folded
    into ``[0, side - 1]``, so the four neighbours always lie inside the image. Channel
    first keeps every gather and product on long contiguous arrays.
    """
    c, n, h, w = planes.shape
    top, frac_r = _fold(rows, h, mode)
    left, frac_c = _fold(cols, w, mode)
    corner = (np.arange(n, dtype=np.intp).reshape(n, 1, 1) * h + top) * w + left
    shape = corner.shape
    rest_r, rest_c = 1.0 - frac_r, 1.0 - frac_c
    taps = [
        (corner, rest_r * rest_c),
        (corner + 1, rest_r * frac_c),
        (corner + w, frac_r * rest_c),
        (corner + (w + 1), frac_r * frac_c),
    ]
    flat = planes.astype(np.float32, copy=False).reshape(c, n * h * w)
    out = np.empty((c, *shape), dtype=np.float32)
    for k in range(c):
        acc = out[k]
        np.multiply(np.take(flat[k], taps[0][0]), taps[0][1], out=acc)
        for index, weight in taps[1:]:
            acc += np.take(flat[k], index) * weight
    return out


def _fold(coords: np.ndarray, size: int, mode: str) -> tuple[np.ndarray, np.ndarray]:
    """Coordinates on an axis of ``size`` pixels folded into ``[0, size - 1]`` by ``mode``
    (see bilinear_sample), as the lower neighbour (int, at most ``size - 2``) and the
    fraction towards the upper one (float32). Coordinates inside are left as they are."""
    u = np.asarray(coords, dtype=np.float32)
    if mode == "mirror":  # symmetric about 0 and size - 1: period 2 (size - 1)
        period = np.float32(2 * size - 2)
        u = u - period * np.floor(u / period)
        u = np.where(u > size - 1, period - u, u)
    elif mode == "reflect":  # symmetric about -1/2 and size - 1/2: period 2 size
        period = np.float32(2 * size)
        u = u - period * np.floor((u + np.float32(0.5)) / period)
        u = np.where(u > size - 0.5, period - 1 - u, u)
    else:
        raise ParamError(f"mode must be 'mirror' or 'reflect', got {mode!r}.")
    u = np.clip(u, 0, size - 1)
    lower = np.minimum(np.floor(u), size - 2)
    return lower.astype(np.intp), (u - lower).astype(np.float32)


def _affine_source_coords(
    n: int, h: int, w: int, jitter: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Source ``(rows, cols)`` ``(n, H, W)`` of the reference's random affine warp.

    Three points around the centre, ``(cx + s, cy + s), (cx + s, cy - s), (cx - s, cy - s)``
    in (x, y) = (column, row) with ``s = min(H, W) // 3``, are moved by ``U(-jitter,
    jitter)`` each; the warp maps the points to their moved places, so every output
    pixel reads the input at the inverse affine map of its position, which is solved
    here in closed form for all images at once.
    """
    cx, cy, s = w // 2, h // 2, min(h, w) // 3
    src = np.array([[cx + s, cy + s], [cx + s, cy - s], [cx - s, cy - s]], dtype=np.float32)
    dst = src + rng.uniform(-jitter, jitter, size=(n, 3, 2)).astype(np.float32)
    src, dst = src.astype(np.float64), dst.astype(np.float64)
    # linear part L with L @ (dst_k - dst_2) = src_k - src_2 for k = 0, 1
    d0, d1 = dst[:, 0] - dst[:, 2], dst[:, 1] - dst[:, 2]  # (n, 2)
    e0, e1 = src[0] - src[2], src[1] - src[2]  # (2,)
    det = d0[:, 0] * d1[:, 1] - d1[:, 0] * d0[:, 1]
    inv = np.stack([[d1[:, 1], -d1[:, 0]], [-d0[:, 1], d0[:, 0]]]) / det  # (2, 2, n): D^-1
    lin = e0[:, None, None] * inv[0][None] + e1[:, None, None] * inv[1][None]  # (2, 2, n): L[i, j]
    shift = src[2][:, None] - np.einsum("ijn,nj->in", lin, dst[:, 2])  # (2, n)
    lin, shift = lin.astype(np.float32), shift.astype(np.float32)
    ys, xs = np.arange(h, dtype=np.float32)[:, None], np.arange(w, dtype=np.float32)[None, :]

    def along(i: int) -> np.ndarray:
        return lin[i, 0][:, None, None] * xs + lin[i, 1][:, None, None] * ys + shift[i][:, None, None]

    return along(1), along(0)


@functools.lru_cache(maxsize=64)
def _gaussian_matrix(size: int, sigma: float) -> np.ndarray:
    """``(size, size)`` matrix of scipy's 1-D Gaussian filter (``mode="reflect"``,
    ``truncate=3``: skimage's ``gaussian(mode="reflect", truncate=3)``): ``K @ v`` filters
    ``v``. Built by filtering the identity, so it equals the filter exactly."""
    from scipy.ndimage import gaussian_filter1d

    matrix = gaussian_filter1d(np.eye(size), sigma, axis=0, mode="reflect", truncate=3.0)
    matrix.setflags(write=False)
    return matrix


def _smooth_noise(n: int, h: int, w: int, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """``n`` fields ``U(-1, 1)`` of ``H x W`` smoothed by a Gaussian of ``sigma`` pixels
    (reflecting edges, truncated at 3 sigma), float32 ``(n, H, W)``."""
    field = rng.uniform(-1.0, 1.0, size=(n, h, w))
    if sigma > 0:
        field = np.matmul(_gaussian_matrix(h, sigma), field) @ _gaussian_matrix(w, sigma).T
    return field.astype(np.float32)


@_in_chunks
def _elastic_transform(images: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """Elastic transform: a random affine warp (three control points moved by
    ``U(-c2, c2)``, bilinear, mirrored edges), then every pixel moved by a smooth random
    displacement ``c0 * G_c1 * U(-1, 1)`` per axis (Gaussian of sigma ``c1``, reflecting
    edges, truncated at 3 sigma), sampled bilinearly with reflecting edges.

    ``(c0, c1, c2)`` are the published ``IMSIZE * (0, 0, 0.08)``, ``(0.05, 0.2, 0.07)``,
    ``(0.08, 0.06, 0.06)``, ``(0.1, 0.04, 0.05)``, ``(0.1, 0.03, 0.03)`` with ``IMSIZE``
    the image's shorter side (32 for CIFAR: (0, 0, 2.56) ... (3.2, 0.96, 0.96) pixels),
    i.e. the 32-pixel lengths scaled by ``min(H, W) / 32``. Severity 1 is the affine warp
    alone (``c0 = 0``). The published jitter shrinks as the displacement grows, so the
    mean pixel change from the clean image *falls* with severity (on CIFAR-10 test
    images: 22.8, 20.6, 18.5, 17.1, 14.3 grey levels); the local, non-affine distortion
    grows.
    """
    n, h, w = images.shape[:3]
    alpha, sigma, jitter = (scaled_length(_IMSIZE * f, min(h, w)) for f in _ELASTIC[severity - 1])
    rows, cols = _affine_source_coords(n, h, w, jitter, rng)
    planes = to_float(np.ascontiguousarray(np.moveaxis(images, -1, 0)))  # (3, n, H, W)
    planes = bilinear_sample(planes, rows, cols, mode="mirror")
    if alpha > 0:
        d_cols = _smooth_noise(n, h, w, sigma, rng) * np.float32(alpha)
        d_rows = _smooth_noise(n, h, w, sigma, rng) * np.float32(alpha)
        d_rows += np.arange(h, dtype=np.float32)[:, None]
        d_cols += np.arange(w, dtype=np.float32)[None, :]
        planes = bilinear_sample(planes, d_rows, d_cols, mode="reflect")
    return np.ascontiguousarray(np.moveaxis(to_uint8(planes), 0, -1))


# ----------------------------------------------------------------------------- pixelate
_PRECISION_BITS = 22  # PIL's fixed-point precision for 8-bit resampling


@functools.lru_cache(maxsize=64)
def _box_taps(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray]:
    """PIL's BOX-filter taps for resizing an axis of ``n_in`` pixels to ``n_out``: input
    indices and fixed-point weights, both ``(n_out, k)``.

    As Pillow's resampler computes them: output pixel ``i`` covers the input interval
    ``scale * [i, i + 1)`` (``scale = n_in / n_out``); an input pixel counts, with weight 1,
    when its centre falls in that interval widened to at least one pixel (half-open,
    ``(-1/2, 1/2]`` in filter units); weights are normalised, then rounded to integers
    of ``2**22``."""
    scale = n_in / n_out
    filterscale = max(scale, 1.0)
    support = 0.5 * filterscale
    centre = (np.arange(n_out) + 0.5) * scale
    lo = np.maximum((centre - support + 0.5).astype(np.int64), 0)
    count = np.minimum((centre + support + 0.5).astype(np.int64), n_in) - lo
    offsets = np.arange(int(count.max()))
    index = lo[:, None] + offsets
    t = (index - centre[:, None] + 0.5) * (1.0 / filterscale)
    weight = np.where((t > -0.5) & (t <= 0.5) & (offsets < count[:, None]), 1.0, 0.0)
    weight /= np.maximum(weight.sum(axis=1, keepdims=True), 1.0)
    fixed = np.floor(0.5 + weight * (1 << _PRECISION_BITS)).astype(np.int32)
    index = np.minimum(index, n_in - 1)
    index.setflags(write=False)
    fixed.setflags(write=False)
    return index, fixed


def _box_pass(x: np.ndarray, axis: int, n_out: int) -> np.ndarray:
    """One PIL BOX pass over ``axis`` (1: rows, 2: columns) of uint8 images, in PIL's
    integer arithmetic: ``(sum(pixel * weight) + 2**21) >> 22``, clipped to 0..255."""
    index, fixed = _box_taps(x.shape[axis], n_out)
    shape = [1, 1, 1, 1]
    shape[axis] = n_out
    size = list(x.shape)
    size[axis] = n_out
    total = np.full(size, 1 << (_PRECISION_BITS - 1), dtype=np.int32)  # PIL's rounding offset
    for k in range(index.shape[1]):
        total += np.take(x, index[:, k], axis=axis) * fixed[:, k].reshape(shape)
    total >>= _PRECISION_BITS
    return np.clip(total, 0, 255).astype(np.uint8)


def box_resize(images: np.ndarray, height: int, width: int) -> np.ndarray:
    """uint8 images ``(n, H, W, C)`` resized to ``(n, height, width, C)`` exactly as
    ``PIL.Image.resize((width, height), Image.BOX)`` does for RGB images: a horizontal
    pass, rounding to uint8, then a vertical pass (each only where the size changes)."""
    x = images
    if width != x.shape[2]:
        x = _box_pass(x, 2, width)
    if height != x.shape[1]:
        x = _box_pass(x, 1, height)
    return x if x is not images else images.copy()


@_in_chunks
def _pixelate(images: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """Pixelate: PIL BOX resize to ``int(H * c) x int(W * c)`` and BOX back to ``H x W``,
    ``c`` = 0.95, 0.9, 0.85, 0.75, 0.65 by severity (32 px: 30, 28, 27, 24, 20). Our
    numpy resize reproduces PIL's fixed-point arithmetic, so results are identical."""
    h, w = images.shape[1:3]
    frac = _PIXELATE[severity - 1]
    small = box_resize(images, int(h * frac), int(w * frac))
    return box_resize(small, h, w)


# ----------------------------------------------------------------------------- JPEG
def _jpeg_roundtrip(image: np.ndarray, quality: int) -> np.ndarray:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=quality)
    # PIL's JPEG decoder as Image.open configures it for a 3-channel JPEG (raw mode RGB),
    # called directly: it skips the file identification and marker parsing in Python.
    decoded = Image.frombytes("RGB", (image.shape[1], image.shape[0]), buffer.getvalue(), "jpeg", "RGB", "")
    return np.asarray(decoded)


def _jpeg_compression(images: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """JPEG compression: each image encoded by PIL as JPEG at quality 80, 65, 58, 50, 40
    by severity (PIL's other defaults, 4:2:0 chroma subsampling) and decoded again. PIL
    codes one image per call; blocks of images run on a thread pool (PIL releases the
    GIL while coding)."""
    quality = _JPEG_QUALITY[severity - 1]
    out = np.empty_like(images)

    def code(start: int) -> None:
        for i in range(start, min(start + _JPEG_BLOCK, len(images))):
            out[i] = _jpeg_roundtrip(images[i], quality)

    starts = range(0, len(images), _JPEG_BLOCK)
    workers = min(len(starts), os.cpu_count() or 1, 4)
    if workers <= 1:
        for start in starts:
            code(start)
    else:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            list(pool.map(code, starts))
    return out


# ----------------------------------------------------------------------------- registry
register_shift(
    ShiftInfo(
        "fog",
        "corruption",
        "plasma-fractal fog of strength 0.2, 0.5, 0.75, 1, 1.5 (decay 3, 3, 2.5, 2, 1.75)",
        _REFERENCE,
        True,
        notes=(
            "fractal map 2**k >= max(H, W) px, cropped to H x W (32 for CIFAR as the reference); "
            "float32 image arithmetic; " + _ROUNDING
        ),
    ),
    _fog,
)
register_shift(
    ShiftInfo(
        "brightness",
        "corruption",
        "HSV value + 0.05, 0.1, 0.15, 0.2, 0.3",
        _REFERENCE,
        False,
        notes="HSV conversion in float32 (the reference: float64 skimage); " + _ROUNDING,
    ),
    _brightness,
)
register_shift(
    ShiftInfo(
        "contrast",
        "corruption",
        "distance to the per-channel mean x 0.75, 0.5, 0.4, 0.3, 0.15",
        _REFERENCE,
        False,
        notes="float32 arithmetic; " + _ROUNDING,
    ),
    _contrast,
)
register_shift(
    ShiftInfo(
        "elastic_transform",
        "corruption",
        "random affine (jitter 2.56 ... 0.96 px at 32 px) then smooth displacement (alpha 0 ... 3.2 px)",
        _REFERENCE,
        True,
        notes=(
            "exact bilinear sampling where OpenCV's warpAffine rounds positions to 1/32 px; "
            "lengths scaled by min(H, W) / 32 and the affine centre at (W // 2, H // 2) "
            "(interpretation for non-square images); " + _ROUNDING + ". As published, the affine jitter "
            "shrinks while the displacement grows with severity, so the mean pixel change falls from 1 to 5"
        ),
    ),
    _elastic_transform,
)
register_shift(
    ShiftInfo(
        "pixelate",
        "corruption",
        "PIL BOX resize to 0.95, 0.9, 0.85, 0.75, 0.65 of each side and back",
        _REFERENCE,
        False,
    ),
    _pixelate,
)
register_shift(
    ShiftInfo(
        "jpeg_compression",
        "corruption",
        "PIL JPEG round trip at quality 80, 65, 58, 50, 40",
        _REFERENCE,
        False,
    ),
    _jpeg_compression,
)
register_shift(
    ShiftInfo(
        "saturate",
        "corruption",
        "HSV saturation x 0.3, x 0.1, x 1.5, x 2 + 0.1, x 2.5 + 0.2 (1-2 desaturate, 3-5 saturate)",
        _REFERENCE,
        False,
        notes="HSV conversion in float32 (the reference: float64 skimage); " + _ROUNDING,
    ),
    _saturate,
)

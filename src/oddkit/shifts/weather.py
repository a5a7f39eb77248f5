"""CIFAR-10-C corruptions whose reference needs ImageMagick, OpenCV or photographs.

``motion_blur``, ``snow``, ``frost`` and ``spatter`` of CIFAR-10-C (Hendrycks &
Dietterich, "Benchmarking Neural Network Robustness to Common Corruptions and
Perturbations", ICLR 2019; script ``make_cifar_c.py``), re-implemented with numpy and
scipy only, vectorised over the batch, with the published CIFAR severity parameters.

* :func:`motion_blur_images` is ImageMagick's ``MotionBlurImage(radius, sigma, angle)``
  for a batch with one angle per image: a one-sided line kernel of
  ``2 * ceil(radius) + 1`` taps, weights ``exp(-i^2 / (2 sigma^2))`` normalised to sum 1,
  tap ``i`` reading the pixel at the integer offset ``(ceil(i cos a - 0.5),
  ceil(i sin a - 0.5))`` (x to the right, y down), pixels outside the image repeating the
  edge (ImageMagick's default "edge" virtual pixels). ``motion_blur`` blurs the image
  with it, ``snow`` its snow layer.
* ``frost``: the reference blends random crops of six frost photographs; they are not
  shipped (see :func:`frost_texture` for the procedural ice texture used instead).
* ``spatter``: OpenCV's ``Canny``, ``distanceTransform``, ``threshold``, ``blur``,
  ``equalizeHist`` and ``filter2D`` are replaced by numpy/scipy equivalents (see
  :func:`spatter_mask`).

Any image size: the parameters are published for 32x32 images; lengths (motion-blur
radius and sigma, the snow flakes' zoom, the frost texture's scales) are multiplied by
``s = min(H, W) / 32``; spatter builds its liquid layer on a grid whose shorter side is
32 pixels (exactly the reference at 32x32) and resizes it bilinearly to the image, which
scales all of its lengths (blur, edge distances, the 3x3 filters) by ``s`` at once. Intensities,
thresholds and blend coefficients are not lengths and stay as published. The reference
truncates its results to uint8; here they are rounded (:func:`~oddkit.shifts.base.to_uint8`).

:func:`motion_blur_images` and :func:`reference_scale` are shared primitives (a sibling
corruption may need them).
"""

from __future__ import annotations

import math
from itertools import pairwise

import numpy as np

from ..errors import ParamError
from .base import (
    ShiftInfo,
    clipped_zoom,
    gaussian_filter_images,
    reference_scale,
    register_shift,
    resize_bilinear,
    to_float,
    to_uint8,
)

__all__ = [
    "WEATHER",
    "frost_texture",
    "motion_blur_images",
    "motion_blur_kernel",
    "motion_blur_offsets",
    "reference_scale",
    "spatter_mask",
]

#: The corruptions of this module, in the order of ``CIFAR10_C``.
WEATHER: tuple[str, ...] = ("motion_blur", "snow", "frost", "spatter")

_REFERENCE = "CIFAR-10-C, Hendrycks & Dietterich, ICLR 2019 (make_cifar_c.py), own implementation"

# Published CIFAR-10-C parameters (make_cifar_c.py), severities 1..5.
#: motion_blur: (radius, sigma) of ImageMagick's motion blur; angle ~ U(-45, 45) degrees.
MOTION_BLUR_PARAMS = ((6, 1), (6, 1.5), (6, 2), (8, 2), (9, 2.5))
#: snow: (mean, std, zoom, threshold, blur radius, blur sigma, image weight);
#: angle ~ U(-135, -45) degrees.
SNOW_PARAMS = (
    (0.1, 0.2, 1, 0.6, 8, 3, 0.95),
    (0.1, 0.2, 1, 0.5, 10, 4, 0.9),
    (0.15, 0.3, 1.75, 0.55, 10, 4, 0.9),
    (0.25, 0.3, 2.25, 0.6, 12, 6, 0.85),
    (0.3, 0.3, 1.25, 0.65, 14, 12, 0.8),
)
#: frost: (image weight, frost weight).
FROST_PARAMS = ((1, 0.2), (1, 0.3), (0.9, 0.4), (0.85, 0.4), (0.75, 0.45))
#: spatter: (mean, std, sigma, threshold, intensity (water) or sigma (mud), mud?).
SPATTER_PARAMS = (
    (0.62, 0.1, 0.7, 0.7, 0.5, 0),
    (0.65, 0.1, 0.8, 0.7, 0.5, 0),
    (0.65, 0.3, 1, 0.69, 0.5, 0),
    (0.65, 0.1, 0.7, 0.69, 0.6, 1),
    (0.65, 0.1, 0.5, 0.68, 0.6, 1),
)

# Weights of OpenCV's RGB -> grey conversion (ITU-R BT.601), as the snow reference uses.
_GREY = np.array([0.299, 0.587, 0.114], dtype=np.float32)
_WATER = np.array([175, 238, 238], dtype=np.float32) / 255.0  # pale turquoise (R, G, B)
_MUD = np.array([63, 42, 20], dtype=np.float32) / 255.0  # mud brown (R, G, B)
# Normalised kernel taps below this weight change no float32 sum; they are skipped.
_NEGLIGIBLE_TAP = 1e-9
# Working memory (bytes) one chunk of a batched step may take.
_CHUNK_BYTES = 48 * 2**20


def _chunk_size(bytes_per_image: int) -> int:
    return max(1, _CHUNK_BYTES // max(1, bytes_per_image))


# ----------------------------------------------------------------------------- motion blur
def motion_blur_kernel(radius: float, sigma: float) -> np.ndarray:
    """ImageMagick's motion-blur weights (float64, summing to 1) for ``radius > 0``.

    ``GetOptimalKernelWidth1D`` gives ``2 * ceil(radius) + 1`` taps for a positive
    radius; tap ``i`` weighs ``exp(-i^2 / (2 sigma^2))`` (one-sided: ``i = 0`` is the
    pixel itself), normalised to sum 1 (``GetMotionBlurKernel``).
    """
    if not radius > 0 or not sigma > 0:
        raise ParamError(f"motion blur needs radius > 0 and sigma > 0, got {radius!r}, {sigma!r}.")
    taps = np.arange(2 * math.ceil(radius) + 1, dtype=np.float64)
    weights = np.exp(-(taps * taps) / (2.0 * sigma * sigma))
    return weights / weights.sum()


def motion_blur_offsets(width: int, angles: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Integer pixel offsets ``(dx, dy)``, each ``(n, width)``, of the ``width`` kernel taps
    for ``n`` angles in degrees, computed as ImageMagick does: the direction
    ``(width sin a, width cos a)`` normalised by its length, tap ``i`` at
    ``ceil(i * component - 0.5)`` (x to the right, y down)."""
    radians = np.pi * np.asarray(angles, dtype=np.float64).reshape(-1, 1) / 180.0
    point_x, point_y = width * np.sin(radians), width * np.cos(radians)
    length = np.hypot(point_x, point_y)
    steps = np.arange(width, dtype=np.float64)
    dx = np.ceil(steps * point_y / length - 0.5).astype(np.intp)
    dy = np.ceil(steps * point_x / length - 0.5).astype(np.intp)
    return dx, dy


def motion_blur_images(x: np.ndarray, radius: float, sigma: float, angles: np.ndarray) -> np.ndarray:
    """ImageMagick's ``MotionBlurImage(radius, sigma, angle)`` of images ``(n, H, W, C)``
    (any real dtype, values kept in their scale), one angle in degrees per image; float32.

    Output pixel ``(y, x) = sum_i k_i * image(y + dy_i, x + dx_i)`` with the weights of
    :func:`motion_blur_kernel` and the offsets of :func:`motion_blur_offsets`; reads
    outside the image repeat the nearest edge pixel (ImageMagick's default "edge"
    virtual-pixel method). ``radius`` and ``sigma`` are in pixels of ``x``.

    Batched without a loop over images: the images are sorted by angle, so for every tap
    the images sharing one offset form a few contiguous runs, each added with one slice of
    an edge-padded copy (one pass per tap; memory bounded by chunks of images). Taps whose
    weight is below 1e-9 are skipped (they cannot change a float32 sum).
    """
    n, h, w, c = x.shape
    angles = np.asarray(angles, dtype=np.float64).reshape(-1)
    if angles.shape != (n,):
        raise ParamError(f"motion_blur_images needs one angle per image ({n}), got {angles.shape}.")
    weights = motion_blur_kernel(radius, sigma)
    keep = np.flatnonzero(weights >= _NEGLIGIBLE_TAP)
    dx, dy = motion_blur_offsets(weights.size, angles)
    weights, dx, dy = weights[keep].astype(np.float32), dx[:, keep], dy[:, keep]
    reach = int(keep[-1])
    per_image = (h + 2 * reach) * (w + 2 * reach) * c * x.itemsize + h * w * c * 8
    order = np.argsort(angles, kind="stable")
    out = np.empty((n, h, w, c), dtype=np.float32)
    step = _chunk_size(per_image)
    for start in range(0, n, step):
        rows = order[start : start + step]
        out[rows] = _motion_blur_sorted(x[rows], weights, dx[rows], dy[rows])
    return out


def _motion_blur_sorted(x: np.ndarray, weights: np.ndarray, dx: np.ndarray, dy: np.ndarray) -> np.ndarray:
    """The kernel applied to images already sorted by angle (runs of equal offsets)."""
    m, h, w = x.shape[:3]
    top, bottom = max(0, -int(dy.min())), max(0, int(dy.max()))
    left, right = max(0, -int(dx.min())), max(0, int(dx.max()))
    padded = _pad_edge(x, top, bottom, left, right)
    acc = np.zeros(x.shape, dtype=np.float32)
    term = np.empty(x.shape, dtype=np.float32)
    for tap, weight in enumerate(weights):
        col_x, col_y = dx[:, tap], dy[:, tap]
        change = np.flatnonzero((np.diff(col_x) != 0) | (np.diff(col_y) != 0)) + 1
        bounds = np.concatenate(([0], change, [m]))
        for a, b in pairwise(bounds):
            oy, ox = top + col_y[a], left + col_x[a]
            np.multiply(padded[a:b, oy : oy + h, ox : ox + w], weight, out=term[a:b])
        acc += term
    return acc


def _pad_edge(x: np.ndarray, top: int, bottom: int, left: int, right: int) -> np.ndarray:
    """``np.pad(x, ..., mode="edge")`` over axes 1 and 2 of ``(n, H, W, C)``, by slicing."""
    n, h, w, c = x.shape
    out = np.empty((n, h + top + bottom, w + left + right, c), dtype=x.dtype)
    out[:, top : top + h, left : left + w] = x
    out[:, top : top + h, :left] = x[:, :, :1]
    out[:, top : top + h, left + w :] = x[:, :, -1:]
    out[:, :top] = out[:, top : top + 1]
    out[:, top + h :] = out[:, top + h - 1 : top + h]
    return out


def _motion_blur(images: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """``motion_blur``: ImageMagick's motion blur with the published ``(radius, sigma)``
    (both times ``s = min(H, W) / 32``), angle ~ U(-45, 45) degrees per image.

    Severities 3 and 4, ``(6, 2)`` and ``(8, 2)``, are the same blur (in the reference
    too): the taps that radius 8 adds weigh below 1e-9 with sigma 2.
    """
    n, h, w = images.shape[:3]
    radius, sigma = MOTION_BLUR_PARAMS[severity - 1]
    scale = reference_scale(h, w)
    angles = rng.uniform(-45.0, 45.0, size=n)
    blurred = motion_blur_images(images, radius * scale, sigma * scale, angles)
    return to_uint8(blurred * np.float32(1.0 / 255.0))


# ----------------------------------------------------------------------------- snow
def _snow(images: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """``snow``: a thresholded, zoomed Gaussian snow layer, motion-blurred (angle ~
    U(-135, -45) degrees per image), added twice (as is and turned by 180 degrees) to the
    image brightened towards ``max(x, 1.5 grey(x) + 0.5)``.

    Published ``(mean, std, zoom, threshold, radius, sigma, weight)``; zoom, radius and
    sigma are lengths (times ``s = min(H, W) / 32``; the zoom is at least 1, so a flake is
    never below one pixel on images under 32 pixels). The reference stores the snow layer
    as 8-bit images before and after ImageMagick's blur; here it stays float.
    """
    n, h, w = images.shape[:3]
    mean, std, zoom, threshold, radius, sigma, weight = SNOW_PARAMS[severity - 1]
    scale = reference_scale(h, w)
    layer = rng.normal(mean, std, size=(n, h, w, 1)).astype(np.float32)
    factor = max(1.0, zoom * scale)
    if factor > 1.0:  # a zoom by 1 is the identity
        layer = clipped_zoom(layer, factor)
    layer[layer < threshold] = 0.0
    np.clip(layer, 0.0, 1.0, out=layer)
    angles = rng.uniform(-135.0, -45.0, size=n)
    layer = motion_blur_images(layer, radius * scale, sigma * scale, angles)
    x = to_float(images)
    bright = np.maximum(x, (x @ _GREY)[..., None] * np.float32(1.5) + np.float32(0.5))
    x = np.float32(weight) * x + np.float32(1.0 - weight) * bright
    x += layer
    x += layer[:, ::-1, ::-1]
    return to_uint8(x)


# ----------------------------------------------------------------------------- frost
_FROST_BACKGROUND = np.array([0.10, 0.15, 0.22], dtype=np.float32)  # dark blue-grey glass
_FROST_ICE = np.array([0.80, 0.89, 0.98], dtype=np.float32)  # bluish white ice


def frost_texture(rng: np.random.Generator, n: int, height: int, width: int) -> np.ndarray:
    """``n`` procedural frost images, float32 ``(n, height, width, 3)`` in ``[0, 1]``.

    Stands in for the crops of the six frost photographs of the reference (not
    shipped): thin bright ice needles on dark glass. Per image, from ``rng``:

    1. a growth direction ``a ~ U(0, 180)`` degrees and smooth noise ``v`` (white noise,
       Gaussian sigma ``0.8 s``, periodic borders so the texture has no edge artefacts);
    2. needles: ``v`` stretched along ``a`` with :func:`motion_blur_images` (radius
       ``6 s``, sigma ``3 s``); its zero lines, drawn with constant width
       (``exp(-u^2 / (2 (0.35 s |grad u|)^2))`` of the stretched field ``u``), are long
       thin streaks along ``a``;
    3. side branches: ``v`` stretched along ``a + 60`` and ``a - 60`` degrees (radius
       ``3 s``, sigma ``1.5 s``: shorter), at 0.6 of the strength (ice grows in hexagonal
       symmetry; sharing ``v`` makes branches start on the needles);
    4. coverage: smooth noise on a coarse grid (one value per ``2 s`` pixels) enlarged
       bilinearly, through a logistic curve with a random offset per image, so that frost
       is dense in some places and thin in others;
    5. a soft halo (the lines blurred with sigma ``s``, weight 0.5) and the colours: dark
       blue-grey glass ``(0.10, 0.15, 0.22)`` to bluish white ice ``(0.80, 0.89, 0.98)``.

    ``s = min(height, width) / 32``. Measured on 1,000 32x32 textures: mean 0.37 (channel
    means 0.30, 0.36, 0.44: bluish), std 0.21, median grey level 0.29, a quarter of the
    pixels above 0.5 and 9% above 0.7: mostly bright thin structures on a dark
    background (224x224: mean 0.39). The photographs' own statistics are not available
    here, so the texture matches them in kind, not in measured value.
    """
    scale = reference_scale(height, width)
    growth = rng.uniform(0.0, 180.0, size=n)
    base = _periodic_smooth_noise(rng, n, height, width, 0.8 * scale)
    ice = _ice_lines(base, scale, growth, radius=6.0, sigma=3.0)
    for turn in (60.0, -60.0):
        branch = _ice_lines(base, scale, growth + turn, radius=3.0, sigma=1.5)
        np.maximum(ice, np.float32(0.6) * branch, out=ice)
    ice *= _coverage(rng, n, height, width, scale)
    ice += np.float32(0.5) * gaussian_filter_images(ice, scale)
    np.clip(ice, 0.0, 1.0, out=ice)
    return _FROST_BACKGROUND + ice * (_FROST_ICE - _FROST_BACKGROUND)


def _periodic_smooth_noise(rng: np.random.Generator, n: int, h: int, w: int, sigma: float) -> np.ndarray:
    """White noise ``(n, h, w, 1)`` smoothed with a Gaussian of ``sigma`` pixels with
    periodic borders (a stationary texture, no edge artefacts)."""
    from scipy.ndimage import gaussian_filter

    noise = rng.standard_normal((n, h, w, 1), dtype=np.float32)
    return gaussian_filter(noise, sigma=(0, sigma, sigma, 0), mode="wrap", truncate=4.0)


def _ice_lines(base: np.ndarray, scale: float, angles: np.ndarray, radius: float, sigma: float) -> np.ndarray:
    """Thin lines along ``angles`` (``(n, h, w, 1)`` in ``[0, 1]``): the zero lines of the
    noise ``base`` stretched in that direction, of constant width ``~s`` pixels (the
    profile ``u / |grad u|`` does not depend on the noise's scale)."""
    field = motion_blur_images(base, radius * scale, sigma * scale, angles)
    grad_y, grad_x = np.gradient(field, axis=(1, 2))
    profile = np.square(grad_x, out=grad_x)
    profile += np.square(grad_y, out=grad_y)
    np.sqrt(profile, out=profile)  # |grad u|
    profile *= np.float32(0.35 * scale)  # half width of the line, in units of u
    profile += np.float32(1e-12)
    np.divide(field, profile, out=profile)
    np.square(profile, out=profile)
    profile *= np.float32(-0.5)
    return np.exp(profile, out=profile)


def _coverage(rng: np.random.Generator, n: int, h: int, w: int, scale: float) -> np.ndarray:
    """Where the frost is dense: ``(n, h, w, 1)`` in ``(0, 1)``, smooth over ``~4 s``
    pixels: unit-std noise on a coarse grid (one value per ``2 s`` pixels, smoothed over a
    cell), enlarged bilinearly, through a logistic curve with a random offset per image."""
    cell = 2.0 * scale
    shape = (n, max(2, math.ceil(h / cell) + 1), max(2, math.ceil(w / cell) + 1), 1)
    coarse = _periodic_smooth_noise(rng, *shape[:3], 1.0) * np.float32(1.0 / _white_noise_gain(1.0))
    field = resize_bilinear(coarse, h, w)
    density = rng.uniform(-0.5, 1.0, size=(n, 1, 1, 1)).astype(np.float32)
    return 1.0 / (1.0 + np.exp(-(2.5 * field + density)))


def _white_noise_gain(sigma: float) -> float:
    """Std of white noise after the 2-d Gaussian of ``sigma`` (scipy's kernel, truncated
    at 4 sigma): ``sum k_i^2`` of the normalised 1-d kernel ``k``."""
    radius = int(4.0 * sigma + 0.5)
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    taps /= taps.sum()
    return float(np.sum(taps * taps))


def _frost(images: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """``frost``: ``c0 * x + c1 * frost`` with the published ``(c0, c1)`` and a procedural
    frost image per image (:func:`frost_texture`) in place of the reference's photographs."""
    n, h, w = images.shape[:3]
    image_weight, frost_weight = FROST_PARAMS[severity - 1]
    frost = frost_texture(rng, n, h, w)
    return to_uint8(np.float32(image_weight) * to_float(images) + np.float32(frost_weight) * frost)


# ----------------------------------------------------------------------------- spatter
def spatter_mask(liquid: np.ndarray, intensity: float) -> np.ndarray:
    """The water-spatter mask ``m`` (float32 ``(n, h, w)``) of thresholded liquid layers
    ``liquid`` (float ``(n, h, w)``, zero outside the drops), as the reference computes it
    with OpenCV, with these substitutions (each vectorised over the batch):

    * ``(liquid * 255).astype(uint8)``: floor after clipping to ``[0, 255]`` (the
      reference wraps values above 1 around; they do not occur in practice);
    * ``Canny(50, 150)``: :func:`_canny`, the same algorithm (3x3 Sobel with replicated
      borders, L1 magnitude, OpenCV's four-sector non-maximum suppression with its
      fixed-point tan(22.5) test, hysteresis over 8-connected pixels) in numpy and
      ``scipy.ndimage.label``;
    * ``distanceTransform(DIST_L2, 5)`` and ``threshold(20, THRESH_TRUNC)``: the exact
      Euclidean distance, truncated at 20 (:func:`_distance_to_edges`); OpenCV uses a 5x5
      chamfer approximation (weights 1, 1.4, 2.1969), which differs from it by at most
      about 2%;
    * ``blur((3, 3))``: 3x3 mean with mirrored borders (OpenCV's default border), float
      then truncated to uint8, or uint8 rounded, as the reference's types give;
    * ``equalizeHist``: OpenCV's look-up table per image (float32 scale, rounded) from
      per-image histograms;
    * ``filter2D(CV_8U)`` with the emboss kernel ``[[-2,-1,0],[-1,1,1],[0,1,2]]``:
      correlation with mirrored borders, saturated to ``[0, 255]``.

    Then ``m = levels * d`` (the reference multiplies its 8-bit liquid image, ``levels``
    above), divided by its per-image maximum (0 where an image has no liquid; the reference
    divides by zero there) and times ``intensity``.
    """
    n, h, w = liquid.shape
    out = np.empty((n, h, w), dtype=np.float32)
    step = _chunk_size(h * w * 64)
    for start in range(0, n, step):
        out[start : start + step] = _water_chunk(liquid[start : start + step], intensity)
    return out


def _water_chunk(liquid: np.ndarray, intensity: float) -> np.ndarray:
    levels = np.floor(np.clip(liquid * 255.0, 0.0, 255.0)).astype(np.uint8)
    edges = _canny(levels, 50, 150)
    dist = _distance_to_edges(edges, 20)
    dist = np.floor(_box3_mean(dist).astype(np.float32)).astype(np.uint8)
    dist = _equalize_hist(dist)
    dist = _emboss(dist)
    dist = np.rint(_box3_mean(dist)).astype(np.float32)
    m = levels.astype(np.float32) * dist
    peak = m.max(axis=(1, 2), keepdims=True)
    m = np.where(peak > 0, m / np.where(peak > 0, peak, 1), 0)
    return m * np.float32(intensity)


def _canny(img: np.ndarray, low: int, high: int) -> np.ndarray:
    """OpenCV's ``Canny(img, low, high)`` (aperture 3, L1 gradient) of uint8 images
    ``(n, h, w)``, as a bool edge map."""
    p = np.pad(img.astype(np.int32), ((0, 0), (1, 1), (1, 1)), mode="edge")
    diff_x = p[:, :, 2:] - p[:, :, :-2]
    gx = diff_x[:, :-2] + 2 * diff_x[:, 1:-1] + diff_x[:, 2:]
    diff_y = p[:, 2:, :] - p[:, :-2, :]
    gy = diff_y[:, :, :-2] + 2 * diff_y[:, :, 1:-1] + diff_y[:, :, 2:]
    mag = np.abs(gx) + np.abs(gy)
    peak = _non_maximum(mag, gx, gy)
    candidate = peak & (mag > low)
    return _hysteresis(candidate, candidate & (mag > high))


def _non_maximum(mag: np.ndarray, gx: np.ndarray, gy: np.ndarray) -> np.ndarray:
    """OpenCV's non-maximum suppression: the gradient direction falls in one of four
    sectors (fixed-point tan(22.5 deg) = 13573 / 2^15); a pixel is kept where its magnitude
    beats its two neighbours across that direction (``>`` one side, ``>=`` the other
    for the axis sectors); magnitudes outside the image count as 0."""
    mp = np.pad(mag, ((0, 0), (1, 1), (1, 1)))
    centre = mp[:, 1:-1, 1:-1]
    ax = np.abs(gx).astype(np.int64)
    ay = np.abs(gy).astype(np.int64) << 15
    tg22 = ax * 13573
    horizontal = ay < tg22
    vertical = ~horizontal & (ay > tg22 + (ax << 16))
    opposite = (gx < 0) != (gy < 0)
    keep_h = (centre > mp[:, 1:-1, :-2]) & (centre >= mp[:, 1:-1, 2:])
    keep_v = (centre > mp[:, :-2, 1:-1]) & (centre >= mp[:, 2:, 1:-1])
    keep_same = (centre > mp[:, :-2, :-2]) & (centre > mp[:, 2:, 2:])
    keep_opposite = (centre > mp[:, :-2, 2:]) & (centre > mp[:, 2:, :-2])
    keep_d = np.where(opposite, keep_opposite, keep_same)
    return np.where(horizontal, keep_h, np.where(vertical, keep_v, keep_d))


def _hysteresis(candidate: np.ndarray, strong: np.ndarray) -> np.ndarray:
    """Candidates 8-connected (within one image) to a strong pixel."""
    from scipy.ndimage import label

    structure = np.zeros((3, 3, 3), dtype=bool)
    structure[1] = True
    labels, count = label(candidate, structure=structure)
    keep = np.zeros(count + 1, dtype=bool)
    keep[labels[strong]] = True
    keep[0] = False
    return keep[labels]


def _distance_to_edges(edges: np.ndarray, limit: int) -> np.ndarray:
    """``minimum(d, limit)`` (float32) where ``d`` is the exact Euclidean distance of every
    pixel of ``(n, h, w)`` bool edge maps to the nearest edge pixel of its own image.

    Separable and truncated: ``g`` = distance to the nearest edge in the same row (capped
    at ``limit + 1``), then ``d^2 = min over |dy| <= limit of dy^2 + g(y + dy)^2`` in small
    integers; distances beyond ``limit`` only need to be known to exceed it. The square
    root is taken in float64 and stored as float32, as ``scipy.ndimage.distance_transform_edt``
    followed by the reference's float32 would give.
    """
    h, w = edges.shape[1:]
    cap = limit + 1
    cols = np.arange(w, dtype=np.int32)
    left = np.maximum.accumulate(np.where(edges, cols, -(cap + w)), axis=2)
    right = np.minimum.accumulate(np.where(edges, cols, cap + 2 * w)[:, :, ::-1], axis=2)[:, :, ::-1]
    g = np.minimum(np.minimum(cols - left, right - cols), cap).astype(np.int16)
    best = g * g
    for dy in range(1, min(limit, h - 1) + 1):
        lifted = g[:, :-dy] * g[:, :-dy] + np.int16(dy * dy)
        np.minimum(best[:, dy:], lifted, out=best[:, dy:])
        lifted = g[:, dy:] * g[:, dy:] + np.int16(dy * dy)
        np.minimum(best[:, :-dy], lifted, out=best[:, :-dy])
    return np.minimum(np.sqrt(best.astype(np.float64)), float(limit)).astype(np.float32)


def _box3_mean(x: np.ndarray) -> np.ndarray:
    """3x3 mean of ``(n, h, w)`` images with mirrored borders (``d c b | a b c d``), as
    OpenCV's ``blur`` computes it: float64 sums times 1/9 (OpenCV then stores float32 for
    a float32 image, which absorbs the float64 rounding before the reference truncates)."""
    p = np.pad(x.astype(np.float64), ((0, 0), (1, 1), (1, 1)), mode="reflect")
    rows = p[:, :-2] + p[:, 1:-1] + p[:, 2:]
    return (rows[:, :, :-2] + rows[:, :, 1:-1] + rows[:, :, 2:]) * (1.0 / 9.0)


def _equalize_hist(img: np.ndarray) -> np.ndarray:
    """OpenCV's ``equalizeHist`` of each uint8 image ``(n, h, w)``: the lowest level
    present maps to 0, level ``v`` to ``round(255 * #{min < value <= v} / #{value > min})``
    (float32 arithmetic); a constant image stays as it is."""
    n = img.shape[0]
    flat = img.reshape(n, -1).astype(np.intp)
    total = flat.shape[1]
    hist = np.bincount((flat + 256 * np.arange(n)[:, None]).ravel(), minlength=256 * n).reshape(n, 256)
    first = np.argmax(hist > 0, axis=1)
    first_count = hist[np.arange(n), first]
    above = np.cumsum(hist, axis=1) - first_count[:, None]
    rest = total - first_count
    scale = np.float32(255.0) / np.maximum(rest, 1).astype(np.float32)
    lut = np.clip(np.rint(above.astype(np.float32) * scale[:, None]), 0, 255).astype(np.uint8)
    out = np.take_along_axis(lut, flat, axis=1).reshape(img.shape)
    constant = rest == 0
    out[constant] = img[constant]
    return out


_EMBOSS = np.array([[-2, -1, 0], [-1, 1, 1], [0, 1, 2]], dtype=np.int32)


def _emboss(img: np.ndarray) -> np.ndarray:
    """``filter2D(img, CV_8U, emboss)``: 3x3 correlation, mirrored borders, saturated."""
    h, w = img.shape[1:]
    p = np.pad(img.astype(np.int32), ((0, 0), (1, 1), (1, 1)), mode="reflect")
    acc = np.zeros(img.shape, dtype=np.int32)
    for i in range(3):
        for j in range(3):
            if _EMBOSS[i, j]:
                acc += _EMBOSS[i, j] * p[:, i : i + h, j : j + w]
    return np.clip(acc, 0, 255).astype(np.uint8)


def _mud_mask(liquid: np.ndarray, threshold: float, sigma: float) -> np.ndarray:
    """The mud mask: drops (``liquid > threshold``) blurred with ``sigma``, kept where
    at least 0.8."""
    m = gaussian_filter_images((liquid > threshold).astype(np.float32)[..., None], sigma)[..., 0]
    m[m < 0.8] = 0.0
    return m


def _spatter(images: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """``spatter``: a thresholded smoothed Gaussian liquid layer; severities 1-3 add pale
    turquoise water shaded by :func:`spatter_mask`, 4-5 paint brown mud drops over the image.

    The liquid layer is built on a grid whose shorter side is 32 pixels (the image itself
    at 32x32, so the published parameters apply unchanged) and resized bilinearly to the
    image (enlarged for larger images, sampled down for smaller ones): all its lengths
    scale with ``s = min(H, W) / 32``.
    """
    n, h, w = images.shape[:3]
    mean, std, sigma, threshold, strength, mud = SPATTER_PARAMS[severity - 1]
    scale = reference_scale(h, w)
    gh, gw = max(1, round(h / scale)), max(1, round(w / scale))
    liquid = rng.normal(mean, std, size=(n, gh, gw, 1)).astype(np.float32)
    liquid = gaussian_filter_images(liquid, sigma)[..., 0]
    liquid[liquid < threshold] = 0.0
    m = _mud_mask(liquid, threshold, strength) if mud else spatter_mask(liquid, strength)
    m = m[..., None]
    if (gh, gw) != (h, w):
        m = resize_bilinear(m, h, w)
    x = to_float(images)
    if mud:
        return to_uint8(x * (1.0 - m) + _MUD * m)
    return to_uint8(x + _WATER * m)


# ----------------------------------------------------------------------------- registry
_MAGICK_NOTE = (
    "ImageMagick's MotionBlurImage re-implemented (one-sided line kernel of 2*ceil(radius)+1 taps, "
    "weights exp(-i^2/(2 sigma^2)) normalised, integer offsets ceil(i*cos(a)-0.5), ceil(i*sin(a)-0.5), "
    "edge pixels repeated)"
)

register_shift(
    ShiftInfo(
        "motion_blur",
        "corruption",
        "ImageMagick-style motion blur, (radius, sigma) = (6,1) (6,1.5) (6,2) (8,2) (9,2.5), angle U(-45,45)",
        _REFERENCE + "; ImageMagick MotionBlurImage",
        True,
        notes=_MAGICK_NOTE + "; radius and sigma times min(H,W)/32; rounded, not truncated, to uint8",
    ),
    _motion_blur,
)
register_shift(
    ShiftInfo(
        "snow",
        "corruption",
        "zoomed, thresholded, motion-blurred snow layer added twice (as is and turned 180 degrees) to a "
        "brightened image; more and bigger flakes with severity",
        _REFERENCE + "; ImageMagick MotionBlurImage",
        True,
        notes=_MAGICK_NOTE
        + " for the snow layer, which stays float (the reference stores it as 8-bit before and after the "
        "blur); zoom, radius and sigma times min(H,W)/32 (zoom at least 1); rounded to uint8",
    ),
    _snow,
)
register_shift(
    ShiftInfo(
        "frost",
        "corruption",
        "c0*x + c1*frost with (c0, c1) = (1,.2) (1,.3) (.9,.4) (.85,.4) (.75,.45)",
        _REFERENCE,
        True,
        notes="the reference's six frost photographs are not shipped: a procedural ice texture (thin bright "
        "bluish-white needles along a random growth direction with side branches at 60 degrees, patchy "
        "coverage, on dark blue-grey glass; mean 0.37, bluish) is generated per image from the seed instead, "
        "its scales times min(H,W)/32; same blend and coefficients; rounded to uint8",
    ),
    _frost,
)
register_shift(
    ShiftInfo(
        "spatter",
        "corruption",
        "liquid drops: pale turquoise water (severities 1-3) or brown mud (4-5), denser with severity",
        _REFERENCE,
        True,
        notes="OpenCV replaced: Canny as OpenCV computes it (numpy + scipy.ndimage.label), exact Euclidean "
        "distance transform (OpenCV: 5x5 chamfer approximation, within ~2%), threshold/blur/equalizeHist/"
        "filter2D in numpy with OpenCV's borders, types and rounding; liquid layer built with the shorter "
        "side at 32 px and resized bilinearly; values above 1 clipped before the 8-bit edge image (the "
        "reference wraps them); rounded to uint8",
    ),
    _spatter,
)

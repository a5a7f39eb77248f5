"""The noise and blur corruptions of CIFAR-10-C, batched and for any image size.

Eight of the 19 corruptions of Hendrycks & Dietterich (ICLR 2019), with the severity
parameters of their CIFAR-10 generation script (``make_cifar_c.py``):

* noise: ``gaussian_noise`` (additive Gaussian), ``shot_noise`` (Poisson photon counts),
  ``impulse_noise`` (salt and pepper per colour value), ``speckle_noise`` (multiplicative
  Gaussian);
* blur: ``defocus_blur`` (antialiased disk), ``glass_blur`` (Gaussian blur, local pixel
  scrambling, Gaussian blur), ``zoom_blur`` (mean of centre zooms), ``gaussian_blur``.

Every function works on a whole batch ``(n, H, W, 3)`` at once, in blocks of images so
that memory stays bounded for any ``n``. Parameters that are lengths in pixels (blur
sigmas, the disk radius, the scrambling distance) were published for 32x32 images; they
are scaled by ``min(H, W) / 32`` (:func:`scale_side`), so a 224x224 image gets the blur a
32x32 image would get, enlarged. Noise strengths and zoom factors are not lengths and stay
as published. Where the reference truncates to uint8 we round to the nearest value
(:func:`oddkit.shifts.base.to_uint8`); every shift's ``notes`` say so.
"""

from __future__ import annotations

import itertools

import numpy as np
from scipy import ndimage, sparse

from ..errors import InputError
from .base import (
    ShiftInfo,
    blockwise,
    gaussian_filter_images,
    register_shift,
    scale_side,
    scaled_length,
    to_float,
    to_uint8,
    zoom_axis_matrices,
)

__all__ = [
    "NOISE_BLUR",
    "defocus_kernel",
    "glass_positions",
    "glass_shuffle",
    "zoom_blur_operator",
    "zoom_factors",
]

NOISE_BLUR: tuple[str, ...] = (
    "gaussian_noise",
    "shot_noise",
    "impulse_noise",
    "speckle_noise",
    "defocus_blur",
    "glass_blur",
    "zoom_blur",
    "gaussian_blur",
)

# ----------------------------------------------------------------------------- published parameters
# make_cifar_c.py (hendrycks/robustness), one entry per severity 1..5.
GAUSSIAN_NOISE_STD = (0.04, 0.06, 0.08, 0.09, 0.10)  # std of the added noise, image in [0, 1]
SHOT_NOISE_RATE = (500, 250, 100, 75, 50)  # photons at full intensity
IMPULSE_AMOUNT = (0.01, 0.02, 0.03, 0.05, 0.07)  # share of colour values set to 0 or 1
SPECKLE_NOISE_STD = (0.06, 0.10, 0.12, 0.16, 0.20)  # std of the multiplicative noise
DEFOCUS = ((0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1.0, 0.2), (1.5, 0.1))  # disk radius, antialias sigma (px)
GLASS = ((0.05, 1, 1), (0.25, 1, 1), (0.4, 1, 1), (0.25, 1, 2), (0.4, 1, 2))  # sigma (px), max shift (px), passes
ZOOM_STOP = (1.06, 1.11, 1.16, 1.21, 1.26)  # zoom factors: np.arange(1, stop, 0.01)
GAUSSIAN_BLUR_SIGMA = (0.4, 0.6, 0.7, 0.8, 1.0)  # sigma (px)

_REFERENCE = "CIFAR-10-C, Hendrycks & Dietterich, ICLR 2019 (make_cifar_c.py); our own batched implementation"
_ROUNDING = "rounds to the nearest uint8 where the reference truncates"
#: Colour values (n * H * W * 3) per block of images processed at once.


# ----------------------------------------------------------------------------- noise
def _gaussian_noise(images: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """``clip(x + N(0, c^2))`` per colour value, ``c`` = 0.04 ... 0.10 (image in [0, 1])."""
    std = np.float32(GAUSSIAN_NOISE_STD[severity - 1])

    def run(block: np.ndarray) -> np.ndarray:
        noise = rng.standard_normal(block.shape, dtype=np.float32)
        noise *= std
        noise += to_float(block)
        return to_uint8(noise)

    return blockwise(images, run)


def _shot_noise(images: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """``clip(Poisson(c x) / c)`` per colour value, ``c`` = 500 ... 50 photons at full
    intensity (fewer photons, more noise)."""
    rate = SHOT_NOISE_RATE[severity - 1]

    def run(block: np.ndarray) -> np.ndarray:
        counts = rng.poisson(block * (rate / 255.0))
        return to_uint8(counts.astype(np.float32) * np.float32(1.0 / rate))

    return blockwise(images, run)


def _impulse_noise(images: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """Salt and pepper: each colour value independently, with probability ``c`` = 0.01 ...
    0.07, is replaced by 0 or 255 with equal chances (skimage ``random_noise(mode="s&p")``)."""
    amount = IMPULSE_AMOUNT[severity - 1]

    def run(block: np.ndarray) -> np.ndarray:
        # one uniform draw per value: [0, c/2) pepper, [c/2, c) salt, the rest unchanged;
        # the same law as skimage's two Bernoulli draws (hit with p = c, salt with 1/2).
        u = rng.random(block.shape, dtype=np.float32)
        out = block.copy()
        out[u < amount] = 255
        out[u < amount / 2] = 0
        return out

    return blockwise(images, run)


def _speckle_noise(images: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """``clip(x + x N(0, c^2))`` per colour value, ``c`` = 0.06 ... 0.20."""
    std = np.float32(SPECKLE_NOISE_STD[severity - 1])

    def run(block: np.ndarray) -> np.ndarray:
        x = to_float(block)
        noise = rng.standard_normal(block.shape, dtype=np.float32)
        noise *= std
        noise *= x
        noise += x
        return to_uint8(noise)

    return blockwise(images, run)


# ----------------------------------------------------------------------------- defocus blur
def defocus_kernel(radius: float, alias_sigma: float, alias_half_width: int = 1) -> np.ndarray:
    """The defocus kernel: a disk of ``radius`` pixels, antialiased, summing to 1 (float64).

    The reference's construction: the indicator of the integer offsets ``(i, j)`` with
    ``i^2 + j^2 <= radius^2``, normalised to sum 1, then blurred by a Gaussian of
    ``alias_sigma`` truncated at ``alias_half_width`` pixels (``cv2.GaussianBlur`` with a
    3x3 window: half-width 1). The reference draws the disk on a 17x17 grid; the grid only
    adds zero rows, so ours is just large enough (``ceil(radius) + alias_half_width``
    around the centre) and its zero border is trimmed: the same non-zero weights.
    """
    grid = int(np.ceil(radius)) + alias_half_width
    offsets = np.arange(-grid, grid + 1)
    disk = (offsets[:, None] ** 2 + offsets[None, :] ** 2 <= radius**2).astype(np.float64)
    disk /= disk.sum()
    taps = np.arange(-alias_half_width, alias_half_width + 1, dtype=np.float64)
    gauss = np.exp(-(taps**2) / (2.0 * alias_sigma**2))
    gauss /= gauss.sum()
    kernel = ndimage.correlate1d(disk, gauss, axis=0, mode="constant")
    kernel = ndimage.correlate1d(kernel, gauss, axis=1, mode="constant")
    keep = np.flatnonzero(kernel.any(axis=0))  # symmetric: the same rows and columns
    return kernel[keep[0] : keep[-1] + 1, keep[0] : keep[-1] + 1]


def _defocus_blur(images: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """Correlate each channel with :func:`defocus_kernel` (edges mirrored without repeating
    the edge pixel, as ``cv2.filter2D``'s default border). Disk radius 0.3, 0.4, 0.5, 1,
    1.5 and antialias sigma 0.4, 0.5, 0.6, 0.2, 0.1 pixels at 32 px, both scaled by
    ``min(H, W) / 32``; the antialias window (3x3 at 32 px) is scaled alike to
    ``2 max(1, round(min(H, W) / 32)) + 1`` pixels."""
    radius, alias_sigma = DEFOCUS[severity - 1]
    side = scale_side(images)
    kernel = defocus_kernel(
        scaled_length(radius, side),
        scaled_length(alias_sigma, side),
        max(1, round(scaled_length(1, side))),
    ).astype(np.float32)
    weights = kernel[None, :, :, None]

    def run(block: np.ndarray) -> np.ndarray:
        return to_uint8(ndimage.correlate(to_float(block), weights, mode="mirror"))

    return blockwise(images, run)


# ----------------------------------------------------------------------------- glass blur
def glass_positions(height: int, width: int, max_shift: int) -> np.ndarray:
    """The pixels the glass scrambling visits, ``(m, 2)`` rows ``(row, column)``, in the
    reference's order: rows from ``height - max_shift`` down to ``max_shift + 1``, and in
    each row columns from ``width - max_shift`` down to ``max_shift + 1``."""
    rows = np.arange(height - max_shift, max_shift, -1)
    cols = np.arange(width - max_shift, max_shift, -1)
    return np.stack(np.meshgrid(rows, cols, indexing="ij"), axis=-1).reshape(-1, 2)


def glass_shuffle(pixels: np.ndarray, offsets: np.ndarray, max_shift: int) -> None:
    """One pass of the glass scrambling on uint8 images ``(n, H, W, 3)``, in place.

    The reference visits the pixels of :func:`glass_positions` one at a time and, for the
    visited pixel ``p`` with random offset ``o`` (``offsets[:, k]``: ``(dy, dx)``, each in
    ``[-max_shift, max_shift - 1]``), executes ``x[p], x[p + o] = x[p + o], x[p]`` on numpy
    row views. That statement does not swap: the right-hand side holds views, so ``x[p]``
    receives ``x[p + o]`` and ``x[p + o]`` is then written back unchanged (numpy issue
    #14428). The pass is therefore ``x[p] = x[p + o]`` in visiting order, each pixel
    reading the image as left by the pixels visited before it.

    We reproduce exactly that result with whole-array steps. Visit ``p`` only reads
    ``p + o`` and only writes ``p``, so two visits interact only when their pixels are at
    most ``max_shift`` apart in both directions. Give the pixel in row ``r`` and column
    ``c`` (counted in visiting order) the step ``(max_shift + 1) r + c``: interacting visits
    get different steps in their visiting order, and the pixels of one step never interact,
    so each step is one gather and one scatter over the batch. At 32 px (``max_shift`` 1)
    every read even falls on a pixel not yet visited, so a pass equals a gather from the
    unchanged image; the steps give the same result at every shift.
    """
    n, height, width = pixels.shape[:3]
    positions = glass_positions(height, width, max_shift)
    if not pixels.flags.c_contiguous or offsets.shape != (n, len(positions), 2):
        raise InputError(
            f"glass_shuffle needs C-contiguous pixels and offsets of shape ({n}, {len(positions)}, 2), "
            f"got contiguous={pixels.flags.c_contiguous} and {offsets.shape}."
        )
    rank_row, rank_col = (height - max_shift) - positions[:, 0], (width - max_shift) - positions[:, 1]
    step = (max_shift + 1) * rank_row + rank_col
    order = np.argsort(step, kind="stable")
    bounds = np.r_[0, np.flatnonzero(np.diff(step[order])) + 1, len(order)]
    # flat pixel indices over the whole batch, one row per visit in step order: (visits, n)
    first = np.arange(n, dtype=np.int64) * (height * width)
    targets = (positions[:, 0] * width + positions[:, 1])[order, None] + first
    shifts = offsets[..., 0].astype(np.int64) * width + offsets[..., 1]
    sources = shifts.T[order] + targets
    # an RGB pixel moves as one 32-bit word: pad to four channels and view as uint32
    packed = np.zeros((n, height, width, 4), dtype=np.uint8)
    packed[..., :3] = pixels
    flat = packed.view(np.uint32).reshape(-1)
    for lo, hi in itertools.pairwise(bounds):
        flat[targets[lo:hi].ravel()] = flat[sources[lo:hi].ravel()]
    pixels[...] = packed[..., :3]


def _glass_blur(images: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """Gaussian blur, quantise to uint8, scramble pixels locally (:func:`glass_shuffle`,
    1 or 2 passes), Gaussian blur again. Sigma 0.05, 0.25, 0.4, 0.25, 0.4 pixels and
    maximal shift 1 pixel at 32 px, scaled by ``min(H, W) / 32`` (the shift rounded, at
    least 1); passes 1, 1, 1, 2, 2.

    As published, the severities are not monotone in distortion: 1-3 differ only in a
    sigma that barely blurs (0.05, 0.25) or slightly (0.4), 4-5 scramble twice, and the
    larger sigma of 5 smooths the scrambled pixels back towards the clean image (mean
    absolute difference from clean CIFAR images, the reference's loop and ours alike:
    about 11.4, 11.4, 11.2, 18.3, 17.4 grey levels)."""
    sigma, max_shift, passes = GLASS[severity - 1]
    height, width = images.shape[1:3]
    side = scale_side(images)
    sigma = scaled_length(sigma, side)
    max_shift = max(1, round(scaled_length(max_shift, side)))
    visits = len(glass_positions(height, width, max_shift))

    def run(block: np.ndarray) -> np.ndarray:
        pixels = to_uint8(gaussian_filter_images(to_float(block), sigma))
        for _ in range(passes):
            offsets = rng.integers(-max_shift, max_shift, size=(len(block), visits, 2), dtype=np.int32)
            glass_shuffle(pixels, offsets, max_shift)
        return to_uint8(gaussian_filter_images(to_float(pixels), sigma))

    return blockwise(images, run)


# ----------------------------------------------------------------------------- zoom and gaussian blur
def zoom_factors(severity: int) -> np.ndarray:
    """The published zoom factors: ``np.arange(1, stop, 0.01)`` with stop 1.06, 1.11, 1.16,
    1.21, 1.26; float rounding lets the first two lists include their stop (1.00 to 1.06
    and to 1.11: 7 and 12 factors), the others end at 1.15, 1.20, 1.25 (16, 21, 26
    factors), as in the reference."""
    return np.arange(1.0, ZOOM_STOP[severity - 1], 0.01)


def zoom_blur_operator(height: int, width: int, factors: np.ndarray) -> sparse.csr_matrix:
    """The whole zoom blur of ``(H, W)`` images as one sparse ``(H W, H W)`` matrix acting
    on row-major flattened channels: the mean of the identity and, for each factor, the
    Kronecker product of its :func:`zoom_axis_matrices` (linear interpolation: two
    weights per row and axis, so at most ``4 len(factors) + 1`` weights per pixel; about
    12 at 32x32, severity 5, after merging)."""
    parts = [sparse.identity(height * width, dtype=np.float32, format="coo")]
    for factor in factors:
        rows, cols = zoom_axis_matrices(height, width, float(factor))
        parts.append(sparse.kron(sparse.coo_matrix(rows), sparse.coo_matrix(cols), format="coo"))
    weights = np.concatenate([part.data for part in parts]) * np.float32(1.0 / (len(factors) + 1))
    index = (np.concatenate([part.row for part in parts]), np.concatenate([part.col for part in parts]))
    # duplicate entries (several factors reading the same pixel) are summed here
    return sparse.csr_matrix((weights, index), shape=(height * width, height * width))


def _zoom_blur(images: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """The mean of the clean image and its centre zooms
    (:func:`oddkit.shifts.base.clipped_zoom`) by each of :func:`zoom_factors`. Zoom
    factors are ratios, the same at every image size.

    The 7 to 26 zooms and the mean are one sparse linear map of each channel
    (:func:`zoom_blur_operator`), applied to a whole block of images in one sparse matrix
    product: much less work than zooming factor by factor (on 32x32 images about 12
    multiply-adds per value in place of 128 per factor)."""
    height, width, channels = images.shape[1:]
    pixels = height * width
    operator = zoom_blur_operator(height, width, zoom_factors(severity)) * np.float32(1.0 / 255.0)

    def run(block: np.ndarray) -> np.ndarray:
        m = len(block)
        planes = block.reshape(m, pixels, channels).transpose(1, 0, 2).astype(np.float32, order="C")
        blurred = (operator @ planes.reshape(pixels, m * channels)).reshape(pixels, m, channels)
        return to_uint8(blurred.transpose(1, 0, 2)).reshape(m, height, width, channels)

    return blockwise(images, run)


def _gaussian_blur(images: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """Gaussian blur (:func:`oddkit.shifts.base.gaussian_filter_images`), sigma 0.4, 0.6,
    0.7, 0.8, 1 pixel at 32 px, scaled by ``min(H, W) / 32``."""
    sigma = scaled_length(GAUSSIAN_BLUR_SIGMA[severity - 1], scale_side(images))
    return blockwise(images, lambda block: to_uint8(gaussian_filter_images(to_float(block), sigma)))


# ----------------------------------------------------------------------------- registry
_SCALED = "pixel lengths scaled by min(H, W) / 32"

register_shift(
    ShiftInfo(
        "gaussian_noise",
        "corruption",
        "additive Gaussian noise, std 0.04, 0.06, 0.08, 0.09, 0.10 of the full range",
        _REFERENCE,
        True,
        notes=_ROUNDING,
    ),
    _gaussian_noise,
)
register_shift(
    ShiftInfo(
        "shot_noise",
        "corruption",
        "Poisson noise with 500, 250, 100, 75, 50 photons at full intensity",
        _REFERENCE,
        True,
        notes=_ROUNDING,
    ),
    _shot_noise,
)
register_shift(
    ShiftInfo(
        "impulse_noise",
        "corruption",
        "salt and pepper on 1, 2, 3, 5, 7 % of the colour values",
        _REFERENCE,
        True,
        notes="one uniform draw per colour value in place of skimage's two Bernoulli draws (the same law); "
        "unchanged values are kept exactly, where the reference's round trip through float and truncation "
        "can lower some by 1",
    ),
    _impulse_noise,
)
register_shift(
    ShiftInfo(
        "speckle_noise",
        "corruption",
        "multiplicative Gaussian noise, std 0.06, 0.10, 0.12, 0.16, 0.20",
        _REFERENCE,
        True,
        notes=_ROUNDING,
    ),
    _speckle_noise,
)
register_shift(
    ShiftInfo(
        "defocus_blur",
        "corruption",
        "antialiased disk blur, radius 0.3, 0.4, 0.5, 1, 1.5 px at 32 px",
        _REFERENCE,
        False,
        notes=f"{_SCALED} (disk radius, antialias sigma and its 3x3 window); scipy correlation with "
        f"mirrored edges in place of cv2.filter2D's identical BORDER_REFLECT_101; {_ROUNDING}",
    ),
    _defocus_blur,
)
register_shift(
    ShiftInfo(
        "glass_blur",
        "corruption",
        "blur, local pixel scrambling (1-2 passes, 1 px at 32 px), blur; sigma 0.05 to 0.4 px",
        _REFERENCE,
        True,
        notes="the reference's per-pixel loop 'swaps' with numpy views, which copies the neighbour into the "
        "pixel instead of exchanging them; we reproduce that published behaviour exactly (same law, the "
        "sequential order kept by processing non-interacting pixels together), not a true swap; "
        f"{_SCALED} (sigma, maximal shift); {_ROUNDING} (also in the intermediate quantisation)",
    ),
    _glass_blur,
)
register_shift(
    ShiftInfo(
        "zoom_blur",
        "corruption",
        "mean of the image and its centre zooms by 1.00 to 1.06, 1.11, 1.15, 1.20, 1.25 (step 0.01)",
        _REFERENCE,
        False,
        notes="non-square images are zoomed along each axis separately (the reference assumes square ones); "
        + _ROUNDING,
    ),
    _zoom_blur,
)
register_shift(
    ShiftInfo(
        "gaussian_blur",
        "corruption",
        "Gaussian blur, sigma 0.4, 0.6, 0.7, 0.8, 1 px at 32 px",
        _REFERENCE,
        False,
        notes=f"{_SCALED} (sigma); {_ROUNDING}",
    ),
    _gaussian_blur,
)

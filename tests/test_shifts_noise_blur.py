"""The CIFAR-10-C noise and blur corruptions (oddkit.shifts.noise_blur) on real images.

Faithfulness is checked against independent computations of the published formulas
(skimage's Gaussian filter, scipy's zoom, cv2-style kernels built with numpy padding and
scipy.signal), against a literal per-pixel version of the reference's glass-blur loop, and,
for the noises, through their statistics on mid-grey images.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage, signal

import oddkit.shifts.noise_blur as nb
from oddkit.errors import InputError
from oddkit.shifts import CIFAR10_C, apply_shift, get_shift

CIFAR_TEST = Path("/work/shared/data/cifar10/test")
RANDOM = {"gaussian_noise", "shot_noise", "impulse_noise", "speckle_noise", "glass_blur"}
NOISES = ("gaussian_noise", "shot_noise", "impulse_noise", "speckle_noise")
BLURS = ("defocus_blur", "glass_blur", "zoom_blur", "gaussian_blur")


# ----------------------------------------------------------------------------- data
@pytest.fixture(scope="module")
def cifar() -> np.ndarray:
    """100 CIFAR-10 test images (the first 10 of each class), uint8 (100, 32, 32, 3)."""
    if not CIFAR_TEST.is_dir():
        pytest.skip(f"CIFAR-10 test images not found at {CIFAR_TEST}")
    from PIL import Image

    paths = [p for d in sorted(CIFAR_TEST.iterdir()) for p in sorted(d.glob("*.jpg"))[:10]]
    return np.stack([np.asarray(Image.open(p).convert("RGB")) for p in paths])


@pytest.fixture(scope="module")
def photos() -> np.ndarray:
    """Two of scikit-image's bundled photos (astronaut, coffee), cropped to 400x400."""
    data = pytest.importorskip("skimage.data")
    return np.stack([data.astronaut()[:400, :400], data.coffee()[:400, :400]])


def resized(images: np.ndarray, height: int, width: int) -> np.ndarray:
    from PIL import Image

    return np.stack([np.asarray(Image.fromarray(im).resize((width, height), Image.BILINEAR)) for im in images])


def rounded(x: np.ndarray) -> np.ndarray:
    """A float image in [0, 1] (reference computation) as uint8, rounded as oddkit does."""
    return np.floor(np.clip(x, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def assert_close_uint8(ours: np.ndarray, ref: np.ndarray, min_exact: float = 0.99) -> None:
    """Equal up to one grey level, and exactly equal almost everywhere: float32 (ours)
    against float64 (reference) can only move a value across a rounding boundary."""
    diff = np.abs(ours.astype(np.int16) - ref.astype(np.int16))
    assert diff.max() <= 1, f"max difference {diff.max()} grey levels"
    assert (diff == 0).mean() >= min_exact, f"only {(diff == 0).mean():.4f} of the values equal"


def high_frequency_energy(images: np.ndarray) -> float:
    """Mean squared difference of horizontally and vertically adjacent values."""
    x = images.astype(np.float64)
    return float(np.mean(np.diff(x, axis=1) ** 2) + np.mean(np.diff(x, axis=2) ** 2))


# ----------------------------------------------------------------------------- contract
def test_registered_with_reference_and_notes():
    assert set(nb.NOISE_BLUR) <= set(CIFAR10_C) and len(nb.NOISE_BLUR) == 8
    for name in nb.NOISE_BLUR:
        info = get_shift(name)
        assert info.kind == "corruption" and info.random == (name in RANDOM)
        assert "Hendrycks" in info.reference and "round" in info.notes


@pytest.mark.parametrize("name", nb.NOISE_BLUR)
@pytest.mark.parametrize("size", [(32, 32), (64, 48), (224, 224)])
def test_shape_dtype_kept_input_unchanged(name, size, photos):
    images = resized(photos, *size)
    before = images.copy()
    for severity in (1, 5):
        out = apply_shift(images, name, severity, seed=0)
        assert out.dtype == np.uint8 and out.shape == images.shape
        np.testing.assert_array_equal(images, before)
    assert not np.array_equal(out, images), "severity 5 left the images unchanged"


@pytest.mark.parametrize("name", nb.NOISE_BLUR)
def test_deterministic_and_seeded(name, cifar):
    images = cifar[:20]
    first = apply_shift(images, name, 3, seed=7)
    np.testing.assert_array_equal(first, apply_shift(images, name, 3, seed=7))
    other = apply_shift(images, name, 3, seed=8)
    assert np.array_equal(first, other) == (name not in RANDOM)


def test_blocks_cover_large_batches(cifar):
    """More images than one block: the result is the same as block by block by hand."""
    images = np.concatenate([cifar] * 8)  # 800 images, more than one block of values
    assert images.size > 1 << 21  # more than one block of base.blockwise's default size
    out = apply_shift(images, "gaussian_blur", 2)
    np.testing.assert_array_equal(out[:100], apply_shift(cifar, "gaussian_blur", 2))
    np.testing.assert_array_equal(out[-100:], out[:100])


# ----------------------------------------------------------------------------- severity
@pytest.mark.parametrize("name", NOISES + ("zoom_blur", "defocus_blur", "gaussian_blur"))
def test_severity_increases_distortion(name, cifar):
    """Mean absolute difference from the clean images grows from severity 1 to 5."""
    clean = cifar.astype(np.float64)
    distortion = [np.abs(apply_shift(cifar, name, s, seed=1) - clean).mean() for s in range(1, 6)]
    assert np.all(np.diff(distortion) > 0), distortion


@pytest.mark.parametrize("name", ("defocus_blur", "zoom_blur", "gaussian_blur"))
def test_severity_removes_more_high_frequencies(name, cifar):
    """The loss of high-frequency energy grows from severity 1 to 5."""
    clean = high_frequency_energy(cifar)
    loss = [1 - high_frequency_energy(apply_shift(cifar, name, s, seed=1)) / clean for s in range(1, 6)]
    assert loss[0] > 0 and np.all(np.diff(loss) > 0), loss


def mean_abs_difference(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.float64) - b).mean())


def test_glass_blur_severities_follow_the_published_parameters(cifar):
    """Glass blur is not monotone in distortion, in the reference too (its literal loop
    gives mean absolute differences of 11.4, 11.4, 11.3, 18.2, 17.5 grey levels on these
    images; see the next test): severities 1-3 scramble once with sigma 0.05, 0.25, 0.4,
    severities 4-5 twice with sigma 0.25, 0.4, and the second blur smooths the scrambled
    pixels back towards the clean image. Check the orderings the parameters do imply:
    a second pass moves more, a larger sigma removes more high frequencies."""
    outs = {s: apply_shift(cifar, "glass_blur", s, seed=1) for s in range(1, 6)}
    mad = {s: mean_abs_difference(out, cifar) for s, out in outs.items()}
    assert min(mad[4], mad[5]) > 1.3 * max(mad[1], mad[2], mad[3]), mad
    clean = high_frequency_energy(cifar)
    loss = {s: 1 - high_frequency_energy(out) / clean for s, out in outs.items()}
    assert loss[3] > loss[2] + 0.2 and loss[5] > loss[4] + 0.2, loss


def reference_glass_blur(image: np.ndarray, severity: int, state: np.random.RandomState) -> np.ndarray:
    """The reference's glass blur for one 32x32 image, step by step as published
    (skimage blur, truncation to uint8, the per-pixel loop, blur, truncation)."""
    filters = pytest.importorskip("skimage.filters")
    sigma, max_shift, passes = nb.GLASS[severity - 1]
    x = np.uint8(filters.gaussian(image / 255.0, sigma=sigma, channel_axis=-1) * 255)
    for _ in range(passes):
        positions = nb.glass_positions(32, 32, max_shift)
        reference_glass_pass(x, state.randint(-max_shift, max_shift, size=(len(positions), 2)), max_shift)
    return np.uint8(np.clip(filters.gaussian(x / 255.0, sigma=sigma, channel_axis=-1), 0, 1) * 255)


def test_glass_blur_distortion_matches_the_literal_reference(cifar):
    """Same law, different random numbers: the mean absolute difference from the clean
    images agrees with the literal reference's within 4% at every severity (seen: within
    1.5%; truncation versus rounding accounts for about 1%)."""
    images = cifar[::8]
    state = np.random.RandomState(0)
    for severity in range(1, 6):
        ref = np.stack([reference_glass_blur(im, severity, state) for im in images])
        ours = apply_shift(images, "glass_blur", severity, seed=0)
        assert mean_abs_difference(ours, images) == pytest.approx(mean_abs_difference(ref, images), rel=0.04)


# ----------------------------------------------------------------------------- noise statistics
@pytest.fixture(scope="module")
def grey() -> np.ndarray:
    """40 mid-grey images (value 128): the noises never reach the clipping range there."""
    return np.full((40, 32, 32, 3), 128, dtype=np.uint8)


def check_residual(noisy: np.ndarray, expected_std: float, rel_tol: float = 0.015) -> None:
    """Residual std within ``rel_tol`` of ``expected_std`` (sampling standard error
    1/sqrt(2N) = 0.2% over N = 123k values) and mean 128 within 5 standard errors."""
    residual = noisy.astype(np.float64) - 128
    assert residual.std() / expected_std == pytest.approx(1, abs=rel_tol)
    assert abs(residual.mean()) < 5 * expected_std / np.sqrt(residual.size)


@pytest.mark.parametrize("severity", range(1, 6))
def test_gaussian_noise_std_is_published(severity, grey):
    """Residual std = c (in [0, 1] units; rounding adds 1/12 level^2 of variance, < 0.1%
    of the std), mean unchanged."""
    noisy = apply_shift(grey, "gaussian_noise", severity, seed=severity)
    check_residual(noisy, nb.GAUSSIAN_NOISE_STD[severity - 1] * 255)


@pytest.mark.parametrize("severity", range(1, 6))
def test_speckle_noise_std_is_proportional(severity, grey):
    """Residual std = x c: noise multiplied by the value 128/255."""
    noisy = apply_shift(grey, "speckle_noise", severity, seed=severity)
    check_residual(noisy, 128 * nb.SPECKLE_NOISE_STD[severity - 1])


@pytest.mark.parametrize("severity", range(1, 6))
def test_shot_noise_is_poisson(severity, grey):
    """Poisson(c x) / c has mean x and variance x / c (rounding adds < 0.2% to the std)."""
    rate = nb.SHOT_NOISE_RATE[severity - 1]
    noisy = apply_shift(grey, "shot_noise", severity, seed=severity)
    check_residual(noisy, np.sqrt(128 / 255 / rate) * 255)


@pytest.mark.parametrize("severity", range(1, 6))
def test_impulse_noise_share_is_amount(severity, grey):
    """Each colour value becomes 0 or 255 with probability amount / 2 each (skimage s&p,
    per value): shares within 5 binomial standard errors, the rest untouched."""
    amount = nb.IMPULSE_AMOUNT[severity - 1]
    noisy = apply_shift(grey, "impulse_noise", severity, seed=severity)
    size = noisy.size
    tolerance = 5 * np.sqrt(amount / 2 * (1 - amount / 2) / size)
    assert (noisy == 0).mean() == pytest.approx(amount / 2, abs=tolerance)
    assert (noisy == 255).mean() == pytest.approx(amount / 2, abs=tolerance)
    assert np.isin(noisy, (0, 128, 255)).all()
    # channels are hit independently: the share of pixels with exactly one value hit
    hits = (noisy != 128).sum(axis=-1)
    one = 3 * amount * (1 - amount) ** 2
    assert (hits == 1).mean() == pytest.approx(one, abs=5 * np.sqrt(one * (1 - one) / hits.size))


# ----------------------------------------------------------------------------- gaussian blur
@pytest.mark.parametrize("upscale", [1, 2])
def test_gaussian_blur_matches_skimage(upscale, cifar):
    """skimage.filters.gaussian (the reference's call), sigma scaled by the side / 32."""
    filters = pytest.importorskip("skimage.filters")
    images = cifar[:20] if upscale == 1 else resized(cifar[:10], 64, 64)
    for severity in range(1, 6):
        sigma = nb.GAUSSIAN_BLUR_SIGMA[severity - 1] * upscale
        ref = np.stack([rounded(filters.gaussian(im / 255.0, sigma=sigma, channel_axis=-1)) for im in images])
        assert_close_uint8(apply_shift(images, "gaussian_blur", severity), ref)


# ----------------------------------------------------------------------------- defocus blur
def reference_disk(radius: float, alias_sigma: float) -> np.ndarray:
    """The reference's kernel: aliased disk on the 17x17 grid, normalised, then a 3x3
    Gaussian blur with the reflect-101 border (built with numpy padding and scipy.signal)."""
    grid = np.arange(-8, 9)
    disk = (grid[:, None] ** 2 + grid[None, :] ** 2 <= radius**2).astype(np.float64)
    disk /= disk.sum()
    g = np.exp(-np.array([1.0, 0.0, 1.0]) / (2 * alias_sigma**2))
    g /= g.sum()
    return signal.correlate2d(np.pad(disk, 1, mode="reflect"), np.outer(g, g), mode="valid")


def reference_filter2d(image: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """cv2.filter2D per channel: correlation, reflect-101 border (numpy 'reflect')."""
    half = kernel.shape[0] // 2
    return np.stack(
        [signal.correlate2d(np.pad(image[..., c], half, mode="reflect"), kernel, mode="valid") for c in range(3)],
        axis=-1,
    )


@pytest.mark.parametrize("severity", range(1, 6))
def test_defocus_kernel_is_the_reference_kernel(severity):
    radius, alias = nb.DEFOCUS[severity - 1]
    ref = reference_disk(radius, alias)
    ours = nb.defocus_kernel(radius, alias)
    half = ours.shape[0] // 2
    inner = ref[8 - half : 9 + half, 8 - half : 9 + half]
    np.testing.assert_allclose(ours, inner, rtol=1e-12, atol=1e-300)
    assert ref.sum() == pytest.approx(inner.sum(), abs=1e-15)  # nothing outside the trimmed kernel


def test_defocus_blur_matches_reference_formula(cifar):
    images = cifar[:15]
    for severity in range(1, 6):
        kernel = reference_disk(*nb.DEFOCUS[severity - 1])
        ref = np.stack([rounded(reference_filter2d(im / 255.0, kernel)) for im in images])
        assert_close_uint8(apply_shift(images, "defocus_blur", severity), ref)


# ----------------------------------------------------------------------------- zoom blur
def reference_zoom_blur(image: np.ndarray, severity: int) -> np.ndarray:
    """The published recipe with scipy.ndimage.zoom (order 1) on each axis's centre crop."""
    x = image.astype(np.float32) / 255.0
    total = np.zeros_like(x)
    factors = np.arange(1, nb.ZOOM_STOP[severity - 1], 0.01)
    for factor in factors:
        crops = [int(np.ceil(side / factor)) for side in x.shape[:2]]
        tops = [(side - crop) // 2 for side, crop in zip(x.shape[:2], crops)]
        zoomed = ndimage.zoom(x[tops[0] : tops[0] + crops[0], tops[1] : tops[1] + crops[1]], (factor, factor, 1), order=1)
        trims = [(z - side) // 2 for z, side in zip(zoomed.shape[:2], x.shape[:2])]
        total += zoomed[trims[0] : trims[0] + x.shape[0], trims[1] : trims[1] + x.shape[1]]
    return rounded((x + total) / (len(factors) + 1))


def test_zoom_factors_are_published():
    assert [len(nb.zoom_factors(s)) for s in range(1, 6)] == [7, 12, 16, 21, 26]
    assert nb.zoom_factors(5)[0] == 1.0 and nb.zoom_factors(5)[-1] == pytest.approx(1.25)


@pytest.mark.parametrize("size", [(32, 32), (48, 64)])
def test_zoom_blur_matches_scipy_zoom(size, cifar):
    images = cifar[:8] if size == (32, 32) else resized(cifar[:4], *size)
    for severity in range(1, 6):
        ref = np.stack([reference_zoom_blur(im, severity) for im in images])
        assert_close_uint8(apply_shift(images, "zoom_blur", severity), ref)


# ----------------------------------------------------------------------------- glass blur
def reference_glass_pass(image: np.ndarray, offsets: np.ndarray, max_shift: int) -> None:
    """The reference's loop, written out pixel by pixel, with the statement it executes on
    numpy row views (which copies the neighbour in rather than swapping; numpy #14428)."""
    height, width = image.shape[:2]
    k = 0
    for h in range(height - max_shift, max_shift, -1):
        for w in range(width - max_shift, max_shift, -1):
            dy, dx = offsets[k]
            image[h, w], image[h + dy, w + dx] = image[h + dy, w + dx], image[h, w]
            k += 1


@pytest.mark.parametrize(("size", "max_shift"), [((32, 32), 1), ((48, 40), 2), ((40, 37), 3)])
def test_glass_shuffle_equals_the_sequential_loop(size, max_shift, cifar):
    images = resized(cifar[:6], *size)
    positions = nb.glass_positions(*size, max_shift)
    offsets = np.random.default_rng(5).integers(-max_shift, max_shift, size=(6, len(positions), 2))
    ref = images.copy()
    for image, off in zip(ref, offsets):
        reference_glass_pass(image, off, max_shift)
    ours = images.copy()
    nb.glass_shuffle(ours, offsets, max_shift)
    np.testing.assert_array_equal(ours, ref)
    assert (ours != images).any(axis=-1).mean() > 0.5


def test_glass_shuffle_checks_its_inputs(cifar):
    positions = nb.glass_positions(32, 32, 1)
    with pytest.raises(InputError, match="offsets of shape"):
        nb.glass_shuffle(cifar[:2].copy(), np.zeros((2, len(positions) - 1, 2), dtype=np.int32), 1)
    with pytest.raises(InputError, match="C-contiguous"):
        nb.glass_shuffle(cifar[:2, :, ::-1], np.zeros((2, len(positions), 2), dtype=np.int32), 1)


def test_glass_blur_severity1_copies_from_up_left_neighbours(cifar):
    """Severity 1 blurs with sigma 0.05 (no effect), so each visited pixel (rows and columns
    2..31) holds one of its four up-left candidates, each chosen with probability 1/4."""
    out = apply_shift(cifar, "glass_blur", 1, seed=3).astype(np.int16)
    x = cifar.astype(np.int16)
    np.testing.assert_array_equal(out[:, :2], x[:, :2])
    np.testing.assert_array_equal(out[:, :, :2], x[:, :, :2])
    candidates = np.stack([x[:, 2:, 2:], x[:, 1:-1, 2:], x[:, 2:, 1:-1], x[:, 1:-1, 1:-1]])
    match = (candidates == out[None, :, 2:, 2:]).all(axis=-1)
    assert match.any(axis=0).all()
    distinct = np.array([[(candidates[i] != candidates[j]).any(axis=-1) for j in range(4)] for i in range(4)])
    distinct = distinct[~np.eye(4, dtype=bool)].all(axis=0)
    shares = match[:, distinct].mean(axis=1)
    m = distinct.sum()
    np.testing.assert_allclose(shares, 0.25, atol=5 * np.sqrt(0.25 * 0.75 / m))


def test_glass_blur_scales_the_shift_with_the_side(photos):
    """At 64 px the maximal shift is 2 px (offsets -2..1, so copied pixels can also come
    from below and the right, in chains): sigma 0.1 px keeps the pixel values, and many
    pixels no longer hold one of the four 1-px up-left candidates that 32 px allows."""
    images = resized(photos, 64, 64)
    out = apply_shift(images, "glass_blur", 1, seed=0)
    x = images.astype(np.int16)
    one_step = np.zeros(out.shape[:3], dtype=bool)
    for dy in (-1, 0):
        for dx in (-1, 0):
            one_step |= (np.roll(x, (-dy, -dx), axis=(1, 2)) == out).all(axis=-1)
    assert (~one_step[:, 3:, 3:]).mean() > 0.2

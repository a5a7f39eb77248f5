"""oddkit.shifts.weather: motion_blur, snow, frost and spatter (CIFAR-10-C).

Real images: CIFAR-10 test JPEGs from ../shared (skipped with a reason when absent) and
scikit-image's bundled photos (skipped when scikit-image is missing). Faithfulness is
checked against independent single-image computations of the published formulas written
here from their definitions: ImageMagick's motion blur as a clamped-index gather per tap,
the reference's clipped zoom with ``scipy.ndimage.zoom``, ``skimage.filters.gaussian``,
OpenCV's Canny as a per-pixel loop with float angle sectors and a stack, a brute-force
Euclidean distance, OpenCV's equalizeHist as a loop, ``scipy.ndimage`` box and
correlation filters. The random numbers are reproduced by seeding a generator the way
``apply_shift`` does (``(seed, crc32(name), severity)``) and drawing in the shift's order.
"""

from __future__ import annotations

import math
import zlib
from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from oddkit.errors import ParamError
from oddkit.shifts import apply_shift, get_shift, weather

CIFAR_TEST = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "cifar10" / "test"
NAMES = ("motion_blur", "snow", "frost", "spatter")


# ----------------------------------------------------------------------------- data
@pytest.fixture(scope="module")
def cifar() -> np.ndarray:
    """200 CIFAR-10 test images (every 50th file, all classes)."""
    if not CIFAR_TEST.is_dir():
        pytest.skip(f"CIFAR-10 test images not found at {CIFAR_TEST}")
    files = sorted(CIFAR_TEST.glob("*/*.jpg"))[::50]
    if len(files) < 100:
        pytest.skip(f"too few CIFAR-10 test images at {CIFAR_TEST}")
    return np.stack([np.asarray(Image.open(f).convert("RGB")) for f in files])


@pytest.fixture(scope="module")
def photos() -> list[np.ndarray]:
    """Three of scikit-image's bundled photos (RGB uint8)."""
    data = pytest.importorskip("skimage.data", reason="scikit-image is not installed (bundled photos)")
    return [data.astronaut(), data.chelsea(), data.coffee()]


def resized(photos: list[np.ndarray], height: int, width: int) -> np.ndarray:
    return np.stack([np.asarray(Image.fromarray(p).resize((width, height), Image.BILINEAR)) for p in photos])


def shift_rng(name: str, severity: int, seed: int) -> np.random.Generator:
    """The generator ``apply_shift`` hands to the shift (same seeding as oddkit.shifts.base)."""
    return np.random.default_rng(np.random.SeedSequence([seed, zlib.crc32(name.encode()), severity]))


def as_uint8(x: np.ndarray) -> np.ndarray:
    return np.rint(np.clip(x, 0, 1) * 255).astype(np.uint8)


def assert_close_uint8(ours: np.ndarray, ref: np.ndarray, max_diff: int = 1, share: float = 1e-3) -> None:
    """At most ``max_diff`` grey levels apart and at most ``share`` of the values differing."""
    diff = np.abs(ours.astype(np.int64) - ref.astype(np.int64))
    assert diff.max() <= max_diff, f"max difference {diff.max()}"
    assert (diff > 0).mean() <= share, f"share of differing values {(diff > 0).mean():.4f}"


# ----------------------------------------------------------------------------- registry, contract
def test_registered_with_published_parameters():
    assert weather.WEATHER == NAMES
    for name in NAMES:
        info = get_shift(name)
        assert info.kind == "corruption" and info.random and info.notes
    # the published CIFAR-10-C severities (make_cifar_c.py)
    assert weather.MOTION_BLUR_PARAMS == ((6, 1), (6, 1.5), (6, 2), (8, 2), (9, 2.5))
    assert weather.SNOW_PARAMS[0] == (0.1, 0.2, 1, 0.6, 8, 3, 0.95)
    assert weather.SNOW_PARAMS[2] == (0.15, 0.3, 1.75, 0.55, 10, 4, 0.9)
    assert weather.SNOW_PARAMS[4] == (0.3, 0.3, 1.25, 0.65, 14, 12, 0.8)
    assert weather.FROST_PARAMS == ((1, 0.2), (1, 0.3), (0.9, 0.4), (0.85, 0.4), (0.75, 0.45))
    assert weather.SPATTER_PARAMS[2] == (0.65, 0.3, 1, 0.69, 0.5, 0)
    assert weather.SPATTER_PARAMS[4] == (0.65, 0.1, 0.5, 0.68, 0.6, 1)
    assert "photograph" in get_shift("frost").notes and "procedural" in get_shift("frost").notes
    assert "chamfer" in get_shift("spatter").notes


@pytest.mark.parametrize("name", NAMES)
def test_contract_on_three_sizes(name, cifar, photos):
    for images in (cifar[:16], resized(photos, 64, 48), resized(photos[:2], 224, 224), cifar[:3, :8, :8]):
        before = images.copy()
        for severity in (1, 5):
            out = apply_shift(images, name, severity, seed=0)
            assert out.dtype == np.uint8 and out.shape == images.shape
            assert not np.shares_memory(out, images)
        # (at severity 1 an 8x8 image is barely touched: the lengths scale by 8/32)
        assert np.abs(apply_shift(images, name, 5, seed=0).astype(int) - images).mean() > 0.3
        np.testing.assert_array_equal(images, before)


@pytest.mark.parametrize("name", NAMES)
def test_deterministic_and_seeded(name, cifar):
    images = cifar[:20]
    first = apply_shift(images, name, 3, seed=7)
    np.testing.assert_array_equal(first, apply_shift(images, name, 3, seed=7))
    assert not np.array_equal(first, apply_shift(images, name, 3, seed=8))


# ----------------------------------------------------------------------------- severity
def high_frequency_energy(images: np.ndarray) -> float:
    x = images.astype(np.float64)
    return float((np.diff(x, axis=1) ** 2).mean() + (np.diff(x, axis=2) ** 2).mean())


def rms_change(images: np.ndarray, clean: np.ndarray) -> float:
    return float(np.sqrt(((images.astype(np.float64) - clean) ** 2).mean()))


def lost_correlation(images: np.ndarray, clean: np.ndarray) -> float:
    """1 - mean per-image correlation with the clean image."""
    a = images.reshape(len(images), -1).astype(np.float64)
    b = clean.reshape(len(clean), -1).astype(np.float64)
    a -= a.mean(axis=1, keepdims=True)
    b -= b.mean(axis=1, keepdims=True)
    return float(1 - ((a * b).sum(1) / np.sqrt((a * a).sum(1) * (b * b).sum(1))).mean())


def test_severity_motion_blur(cifar):
    """High-frequency energy falls with severity. Severities 3 and 4 are the same blur:
    (6, 2) and (8, 2) differ only in taps 13-16, which weigh below 1e-9 with sigma 2."""
    energy = [high_frequency_energy(apply_shift(cifar, "motion_blur", s, seed=0)) for s in range(1, 6)]
    assert high_frequency_energy(cifar) > energy[0] > energy[1] > energy[2] > energy[4]
    assert energy[3] > energy[4] and abs(energy[3] - energy[2]) < 0.03 * energy[2]
    np.testing.assert_allclose(weather.motion_blur_kernel(6, 2), weather.motion_blur_kernel(8, 2)[:13], atol=1e-9)


def test_severity_snow(cifar):
    change = [rms_change(apply_shift(cifar, "snow", s, seed=0), cifar) for s in range(1, 6)]
    assert all(a < b for a, b in pairwise(change)), change


def test_severity_frost(cifar):
    """Frost's mean change is not monotone in the published coefficients (c0 falls while
    c1 stays at 0.4 from 3 to 4); the image's share of the result is: the correlation
    with the clean image falls with every severity."""
    lost = [lost_correlation(apply_shift(cifar, "frost", s, seed=0), cifar) for s in range(1, 6)]
    assert all(a < b for a, b in pairwise(lost)), lost


def test_severity_spatter(cifar):
    """Severities 1-3 are water, 4-5 mud (published); the change grows within each kind
    and severity 5 changes the images most. Water at 3 (std 0.3) covers more of the image
    than mud at 4, so the change is not monotone from 3 to 4 (a property of the
    published parameters)."""
    change = [rms_change(apply_shift(cifar, "spatter", s, seed=0), cifar) for s in range(1, 6)]
    assert change[0] < change[1] < change[2] and change[3] < change[4]
    assert change[4] == max(change)


# ----------------------------------------------------------------------------- motion blur
def magick_motion_blur(img: np.ndarray, radius: float, sigma: float, angle: float) -> np.ndarray:
    """ImageMagick's MotionBlurImage of one float image (H, W, C), from its definition:
    2*ceil(radius)+1 taps, Gaussian weights normalised, tap i reading the pixel at the
    rounded point i*(cos a, sin a) (halves rounded up), coordinates clamped to the image."""
    h, w = img.shape[:2]
    taps = np.arange(2 * math.ceil(radius) + 1)
    k = np.exp(-(taps**2) / (2.0 * sigma**2))
    k /= k.sum()
    yy, xx = np.mgrid[0:h, 0:w]
    out = np.zeros(img.shape, dtype=np.float64)
    for i, weight in zip(taps, k):
        ox = math.ceil(i * math.cos(math.radians(angle)) - 0.5)
        oy = math.ceil(i * math.sin(math.radians(angle)) - 0.5)
        out += weight * img[np.clip(yy + oy, 0, h - 1), np.clip(xx + ox, 0, w - 1)]
    return out


def test_motion_blur_kernel_is_imagemagicks():
    for radius, width in ((6, 13), (8, 17), (9, 19), (14, 29), (1.5, 5)):
        k = weather.motion_blur_kernel(radius, 2.0)
        assert k.size == width  # GetOptimalKernelWidth1D: 2 * ceil(radius) + 1
        np.testing.assert_allclose(k.sum(), 1.0)
        np.testing.assert_allclose(k / k[0], np.exp(-np.arange(width) ** 2 / 8.0))
    with pytest.raises(ParamError):
        weather.motion_blur_kernel(0, 1)


def test_motion_blur_impulse_response_and_edges():
    """Angle 0: every pixel averages the pixels to its right, so a point leaves a trail
    to its left with the kernel's weights; 90 degrees: a trail upwards; a constant image
    stays constant (edge pixels repeated, weights sum to 1)."""
    img = np.zeros((3, 40, 40, 1), dtype=np.float32)
    img[:, 20, 20] = 1.0
    out = weather.motion_blur_images(img, 6, 2.0, np.array([0.0, 90.0, 180.0]))
    k = weather.motion_blur_kernel(6, 2.0).astype(np.float32)
    np.testing.assert_allclose(out[0, 20, 20 - np.arange(13), 0], k, atol=1e-7)
    np.testing.assert_allclose(out[1, 20 - np.arange(13), 20, 0], k, atol=1e-7)
    np.testing.assert_allclose(out[2, 20, 20 + np.arange(13), 0], k, atol=1e-7)
    np.testing.assert_allclose(out.sum(axis=(1, 2, 3)), 1.0, atol=1e-6)
    flat = np.full((2, 10, 12, 3), 0.25, dtype=np.float32)
    np.testing.assert_allclose(weather.motion_blur_images(flat, 9, 2.5, np.array([30.0, -150.0])), 0.25, atol=1e-6)


def test_motion_blur_matches_imagemagick_reference(cifar, photos):
    for images in (cifar[:24], resized(photos, 64, 48)):
        n, h, w = images.shape[:3]
        scale = min(h, w) / 32
        for severity in (1, 3, 5):
            radius, sigma = weather.MOTION_BLUR_PARAMS[severity - 1]
            angles = shift_rng("motion_blur", severity, 5).uniform(-45, 45, size=n)
            ours = apply_shift(images, "motion_blur", severity, seed=5)
            ref = np.stack(
                [magick_motion_blur(im / 255.0, radius * scale, sigma * scale, a) for im, a in zip(images, angles)]
            )
            # float32 accumulation vs float64: a value within 1e-5 of a rounding boundary may
            # land one grey level apart
            assert_close_uint8(ours, as_uint8(ref))


# ----------------------------------------------------------------------------- snow
def reference_clipped_zoom(layer: np.ndarray, factor: float) -> np.ndarray:
    """The reference's clipped zoom of one square (H, W, 1) array with scipy.ndimage.zoom."""
    h = layer.shape[0]
    crop = int(np.ceil(h / factor))
    top = (h - crop) // 2
    zoomed = ndimage.zoom(layer[top : top + crop, top : top + crop], (factor, factor, 1), order=1)
    trim = (zoomed.shape[0] - h) // 2
    return zoomed[trim : trim + h, trim : trim + h]


def reference_snow(img: np.ndarray, severity: int, noise: np.ndarray, angle: float) -> np.ndarray:
    zoom, threshold, radius, sigma, weight = weather.SNOW_PARAMS[severity - 1][2:]
    x = img / 255.0
    layer = reference_clipped_zoom(noise, zoom)
    layer[layer < threshold] = 0
    layer = magick_motion_blur(np.clip(layer, 0, 1), radius, sigma, angle)
    grey = x[..., 0] * 0.299 + x[..., 1] * 0.587 + x[..., 2] * 0.114
    x = weight * x + (1 - weight) * np.maximum(x, grey[..., None] * 1.5 + 0.5)
    return np.clip(x + layer + np.rot90(layer, k=2), 0, 1)


def test_snow_matches_reference_formula(cifar):
    images = cifar[:24]
    n, h, w = images.shape[:3]
    for severity in range(1, 6):
        mean, std = weather.SNOW_PARAMS[severity - 1][:2]
        rng = shift_rng("snow", severity, 3)
        noise = rng.normal(mean, std, size=(n, h, w, 1)).astype(np.float32).astype(np.float64)
        angles = rng.uniform(-135, -45, size=n)
        ours = apply_shift(images, "snow", severity, seed=3)
        ref = np.stack([reference_snow(im, severity, z, a) for im, z, a in zip(images, noise, angles)])
        assert_close_uint8(ours, as_uint8(ref))


def test_snow_layer_is_near_the_8bit_reference(cifar):
    """The reference keeps its snow layer as 8-bit images around ImageMagick (truncated
    before, rounded after); ours stays float. The difference is a few grey levels at most."""
    images = cifar[:24]
    n, h, w = images.shape[:3]
    severity = 5
    mean, std, zoom, threshold, radius, sigma, weight = weather.SNOW_PARAMS[severity - 1]
    rng = shift_rng("snow", severity, 4)
    noise = rng.normal(mean, std, size=(n, h, w, 1))
    angles = rng.uniform(-135, -45, size=n)
    ours = apply_shift(images, "snow", severity, seed=4).astype(np.float64)
    for im, z, a, got in zip(images, noise, angles, ours):
        layer = reference_clipped_zoom(z, zoom)
        layer[layer < threshold] = 0
        layer = np.floor(np.clip(layer, 0, 1) * 255) / 255
        layer = np.rint(magick_motion_blur(layer, radius, sigma, a) * 255) / 255
        x = im / 255.0
        grey = x @ np.array([0.299, 0.587, 0.114])
        x = weight * x + (1 - weight) * np.maximum(x, grey[..., None] * 1.5 + 0.5)
        ref = np.clip(x + layer + np.rot90(layer, k=2), 0, 1) * 255
        assert np.abs(got - ref).max() <= 3.0


# ----------------------------------------------------------------------------- frost
def test_frost_is_the_published_blend(cifar):
    images = cifar[:32]
    n, h, w = images.shape[:3]
    for severity in range(1, 6):
        c0, c1 = weather.FROST_PARAMS[severity - 1]
        texture = weather.frost_texture(shift_rng("frost", severity, 2), n, h, w)
        expected = np.rint(np.clip(c0 * images / 255.0 + c1 * texture, 0, 1) * 255)
        assert_close_uint8(apply_shift(images, "frost", severity, seed=2), expected, share=1e-3)


@pytest.mark.parametrize("side", [32, 224])
def test_frost_texture_statistics(side):
    """Bluish-white thin structures on a dark background: mean about 0.37, blue the
    brightest channel, median below the mean, a minority of bright pixels; every image
    its own texture."""
    n = 128 if side == 32 else 4
    tex = weather.frost_texture(np.random.default_rng(11), n, side, side)
    assert tex.dtype == np.float32 and tex.shape == (n, side, side, 3)
    assert tex.min() >= 0 and tex.max() <= 1
    grey = tex.mean(axis=-1)
    assert 0.25 < tex.mean() < 0.45
    red, green, blue = tex.mean(axis=(0, 1, 2))
    assert red < green < blue
    assert np.median(grey) < grey.mean()
    assert 0.1 < (grey > 0.5).mean() < 0.4
    assert (grey > 0.7).mean() > 0.02  # real bright ice, not a grey haze
    assert np.abs(tex[0] - tex[1]).mean() > 0.05


def test_frost_texture_is_thin_and_oriented():
    """Lines along the growth direction: on large textures the intensity varies much more
    across the needles than along them (structure tensor), and thin lines carry most of
    the energy at high spatial frequencies."""
    base = weather._periodic_smooth_noise(np.random.default_rng(3), 4, 128, 128, 0.8 * 4.0)
    grey = weather._ice_lines(base, 4.0, np.zeros(4), 8.0, 4.0)[..., 0]
    gy, gx = np.gradient(grey, axis=(1, 2))
    assert (gy**2).mean() > 3 * (gx**2).mean()  # growth along x: changes across (y) dominate
    assert grey.mean() < 0.35


# ----------------------------------------------------------------------------- spatter pieces
def reference_equalize(img: np.ndarray) -> np.ndarray:
    """OpenCV's equalizeHist for one uint8 image, as a loop."""
    hist = np.bincount(img.ravel(), minlength=256)
    first = int(np.flatnonzero(hist)[0])
    total = img.size
    if hist[first] == total:
        return img.copy()
    scale = np.float32(255.0) / np.float32(total - hist[first])
    lut = np.zeros(256, dtype=np.uint8)
    running = 0
    for level in range(first + 1, 256):
        running += hist[level]
        lut[level] = min(255, int(np.rint(np.float32(running) * scale)))
    return lut[img]


def reference_canny(img: np.ndarray, low: int = 50, high: int = 150) -> np.ndarray:
    """OpenCV's Canny (aperture 3, L1 magnitude) for one uint8 image, as per-pixel loops:
    Sobel with replicated borders; non-maximum suppression in four sectors with the
    float tangents of 22.5 and 67.5 degrees; hysteresis with a stack over 8 neighbours."""
    h, w = img.shape
    a = img.astype(np.int64)

    def pix(y: int, x: int) -> int:
        return int(a[min(max(y, 0), h - 1), min(max(x, 0), w - 1)])

    gx = np.zeros((h, w), dtype=np.int64)
    gy = np.zeros((h, w), dtype=np.int64)
    for y in range(h):
        for x in range(w):
            gx[y, x] = (pix(y - 1, x + 1) + 2 * pix(y, x + 1) + pix(y + 1, x + 1)) - (
                pix(y - 1, x - 1) + 2 * pix(y, x - 1) + pix(y + 1, x - 1)
            )
            gy[y, x] = (pix(y + 1, x - 1) + 2 * pix(y + 1, x) + pix(y + 1, x + 1)) - (
                pix(y - 1, x - 1) + 2 * pix(y - 1, x) + pix(y - 1, x + 1)
            )
    mag = np.abs(gx) + np.abs(gy)

    def m(y: int, x: int) -> int:
        return int(mag[y, x]) if 0 <= y < h and 0 <= x < w else 0

    state = np.ones((h, w), dtype=np.int64)  # 1 no edge, 0 maybe, 2 edge
    stack = []
    tan22, tan67 = math.tan(math.radians(22.5)), math.tan(math.radians(67.5))
    for y in range(h):
        for x in range(w):
            v = int(mag[y, x])
            if v <= low:
                continue
            ax, ay = abs(int(gx[y, x])), abs(int(gy[y, x]))
            if ay < ax * tan22:
                peak = v > m(y, x - 1) and v >= m(y, x + 1)
            elif ay > ax * tan67:
                peak = v > m(y - 1, x) and v >= m(y + 1, x)
            elif (gx[y, x] < 0) != (gy[y, x] < 0):
                peak = v > m(y - 1, x + 1) and v > m(y + 1, x - 1)
            else:
                peak = v > m(y - 1, x - 1) and v > m(y + 1, x + 1)
            if peak:
                state[y, x] = 2 if v > high else 0
                if v > high:
                    stack.append((y, x))
    while stack:
        y, x = stack.pop()
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                yy, xx = y + dy, x + dx
                if 0 <= yy < h and 0 <= xx < w and state[yy, xx] == 0:
                    state[yy, xx] = 2
                    stack.append((yy, xx))
    return state == 2


def reference_distance(edges: np.ndarray) -> np.ndarray:
    """Brute-force Euclidean distance of every pixel to the nearest edge pixel (inf if none)."""
    points = np.argwhere(edges)
    if len(points) == 0:
        return np.full(edges.shape, np.inf)
    grid = np.indices(edges.shape).reshape(2, -1).T
    d = np.sqrt(((grid[:, None, :] - points[None, :, :]) ** 2).sum(-1)).min(axis=1)
    return d.reshape(edges.shape)


def liquid_layers(n: int, severity: int, seed: int) -> np.ndarray:
    mean, std, sigma, threshold = weather.SPATTER_PARAMS[severity - 1][:4]
    skf = pytest.importorskip("skimage.filters")
    rng = np.random.default_rng(seed)
    layers = [skf.gaussian(rng.normal(mean, std, size=(32, 32)), sigma=sigma) for _ in range(n)]
    layers = np.stack(layers)
    layers[layers < threshold] = 0
    return layers


def test_equalize_hist_matches_opencv_loop():
    rng = np.random.default_rng(0)
    images = np.stack(
        [
            rng.integers(0, 21, size=(32, 32)),
            rng.integers(3, 9, size=(32, 32)),
            np.minimum(rng.poisson(4, size=(32, 32)), 255),
            np.full((32, 32), 7),
            rng.integers(0, 256, size=(32, 32)),
        ]
    ).astype(np.uint8)
    images[1, 0, 0] = 200
    ours = weather._equalize_hist(images)
    for got, img in zip(ours, images):
        np.testing.assert_array_equal(got, reference_equalize(img))


def test_canny_matches_opencv_algorithm(cifar):
    levels = np.floor(np.clip(liquid_layers(6, 3, 1) * 255, 0, 255)).astype(np.uint8)
    grey = np.rint(cifar[:4] @ np.array([0.299, 0.587, 0.114])).astype(np.uint8)
    images = np.concatenate([levels, grey])
    ours = weather._canny(images, 50, 150)
    assert ours.any()
    for got, img in zip(ours, images):
        np.testing.assert_array_equal(got, reference_canny(img))


def test_distance_and_filters_match_references():
    edges = np.zeros((3, 20, 24), dtype=bool)
    rng = np.random.default_rng(2)
    edges[0][rng.random((20, 24)) < 0.02] = True
    edges[1, 5, 7] = True
    got = weather._distance_to_edges(edges, 20)
    for g, e in zip(got[:2], edges[:2]):
        np.testing.assert_array_equal(g, np.minimum(reference_distance(e), 20).astype(np.float32))
    assert np.all(got[2] == 20)  # no edges: truncated
    big = np.zeros((1, 64, 64), dtype=bool)
    big[0, 3, 60] = True
    np.testing.assert_array_equal(
        weather._distance_to_edges(big, 20)[0], np.minimum(reference_distance(big[0]), 20).astype(np.float32)
    )
    x = rng.random((2, 20, 24)) * 20
    np.testing.assert_allclose(
        weather._box3_mean(x), ndimage.uniform_filter(x, size=(1, 3, 3), mode="mirror"), atol=1e-12
    )
    u8 = rng.integers(0, 256, size=(2, 20, 24)).astype(np.uint8)
    kernel = np.array([[-2, -1, 0], [-1, 1, 1], [0, 1, 2]])
    expected = np.clip(ndimage.correlate(u8.astype(np.int64), kernel[None], mode="mirror"), 0, 255)
    np.testing.assert_array_equal(weather._emboss(u8), expected)


# ----------------------------------------------------------------------------- spatter, whole
def reference_water(liquid: np.ndarray, intensity: float) -> np.ndarray:
    """The reference's water mask for one liquid layer, from the loop references above."""
    levels = np.floor(np.clip(liquid * 255, 0, 255)).astype(np.uint8)
    dist = np.minimum(reference_distance(reference_canny(levels)), 20).astype(np.float32)
    dist = ndimage.uniform_filter(dist.astype(np.float64), size=3, mode="mirror").astype(np.float32)
    dist = np.floor(dist).astype(np.uint8)  # OpenCV's float32 result, truncated by astype(uint8)
    dist = reference_equalize(dist)
    kernel = np.array([[-2, -1, 0], [-1, 1, 1], [0, 1, 2]])
    dist = np.clip(ndimage.correlate(dist.astype(np.int64), kernel, mode="mirror"), 0, 255)
    dist = np.rint(ndimage.uniform_filter(dist.astype(np.float64), size=3, mode="mirror"))
    m = levels * dist  # the reference reuses its 8-bit liquid image here
    return m / m.max() * intensity if m.max() > 0 else m


def test_spatter_matches_reference_formula(cifar):
    skf = pytest.importorskip("skimage.filters")
    images = cifar[:12]
    n, h, w = images.shape[:3]
    water = np.array([175, 238, 238]) / 255.0
    mud = np.array([63, 42, 20]) / 255.0
    for severity in range(1, 6):
        mean, std, sigma, threshold, strength, is_mud = weather.SPATTER_PARAMS[severity - 1]
        noise = shift_rng("spatter", severity, 9).normal(mean, std, size=(n, h, w, 1)).astype(np.float32)
        ours = apply_shift(images, "spatter", severity, seed=9)
        refs = []
        for img, z in zip(images, noise[..., 0].astype(np.float64)):
            liquid = skf.gaussian(z, sigma=sigma)
            liquid[liquid < threshold] = 0
            x = img / 255.0
            if is_mud:
                m = skf.gaussian((liquid > threshold).astype(np.float64), sigma=strength)
                m[m < 0.8] = 0
                refs.append(x * (1 - m[..., None]) + mud * m[..., None])
            else:
                refs.append(x + water * reference_water(liquid, strength)[..., None])
        # float32 vs float64 liquid layers and float rounding at half grey levels
        assert_close_uint8(ours, as_uint8(np.stack(refs)))


def test_spatter_non_square_uses_the_reference_grid(photos):
    """On 64x48 images the liquid layer is built on a 43x32 grid and enlarged: the drops
    are bigger than on 32x32 images, in proportion."""
    images = resized(photos, 64, 48)
    out = apply_shift(images, "spatter", 5, seed=0)
    changed = np.abs(out.astype(int) - images).max(axis=-1) > 10
    assert 0.01 < changed.mean() < 0.5

"""Tests of oddkit.shifts.digital: fog, brightness, contrast, elastic_transform, pixelate,
jpeg_compression and saturate (CIFAR-10-C), on real CIFAR-10 test images and
scikit-image's bundled photo, against independent single-image reference computations."""

from __future__ import annotations

import io

import numpy as np
import pytest
from helpers import SHARED

from oddkit.shifts import apply_shift, digital, get_shift, list_shifts
from oddkit.shifts.geometric import _hsv_to_rgb, _rgb_to_hsv

NAMES = digital.DIGITAL
RANDOM = {"fog", "elastic_transform"}
CIFAR_TEST = SHARED / "data" / "cifar10" / "test"


# ----------------------------------------------------------------------------- data
@pytest.fixture(scope="module")
def cifar() -> np.ndarray:
    """80 CIFAR-10 test images, 8 from each class, uint8 (80, 32, 32, 3)."""
    if not CIFAR_TEST.is_dir():
        pytest.skip(f"{CIFAR_TEST} is absent (../shared is not on this machine)")
    from PIL import Image

    paths = [p for folder in sorted(CIFAR_TEST.iterdir()) for p in sorted(folder.glob("*.jpg"))[:8]]
    return np.stack([np.asarray(Image.open(p).convert("RGB")) for p in paths])


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    """scikit-image's astronaut photo, uint8 (512, 512, 3)."""
    data = pytest.importorskip("skimage.data")
    return np.ascontiguousarray(data.astronaut())


def _sized(photo: np.ndarray, h: int, w: int, n: int = 2) -> np.ndarray:
    """``n`` different ``h x w`` crops of the photo (subsampled by 2), uint8."""
    small = photo[::2, ::2]
    return np.ascontiguousarray(np.stack([small[8 * i : 8 * i + h, 4 * i : 4 * i + w] for i in range(n)]))


def _mad(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


def _assert_rounds(ours: np.ndarray, ref: np.ndarray, slack: float = 1e-3) -> None:
    """``ours`` (uint8) is the reference's float result ``clip(ref, 0, 1) * 255`` rounded:
    within half a grey level plus ``slack``. The slack covers our float32 arithmetic
    against the reference's float64 (relative 1e-7 of 255: 3e-5 levels; resampling
    positions 1e-5 px times at most 255 levels per px: 3e-3 levels in the worst case,
    so elastic_transform passes a larger slack). Values exactly on a half level (common:
    saturate's 0.3 x ... lands on tenths) may round either way, which this allows."""
    target = np.clip(ref, 0.0, 1.0) * 255.0
    err = np.abs(ours.astype(np.float64) - target)
    assert err.max() <= 0.5 + slack, f"max error {err.max():.5f} grey levels"


# ----------------------------------------------------------------------------- registry and contract
def test_all_seven_are_registered_as_corruptions():
    names = [info.name for info in list_shifts("corruption")]
    for name in NAMES:
        info = get_shift(name)
        assert name in names and info.kind == "corruption"
        assert info.random == (name in RANDOM)


@pytest.mark.parametrize("name", NAMES)
def test_contract_on_three_sizes(name, cifar, photo):
    """Shape and dtype kept, input untouched, deterministic per seed; random shifts differ
    between seeds, the others ignore the seed; works on 32x32, 48x64 and 224x224."""
    for images in (cifar[:6], _sized(photo, 48, 64, 3), _sized(photo, 224, 224, 2)):
        before = images.copy()
        out = apply_shift(images, name, 3, seed=7)
        assert out.dtype == np.uint8 and out.shape == images.shape
        assert np.array_equal(images, before)
        assert np.array_equal(out, apply_shift(images, name, 3, seed=7))
        other = apply_shift(images, name, 3, seed=8)
        assert np.array_equal(out, other) != (name in RANDOM)
        assert not np.array_equal(out, images)


@pytest.mark.parametrize("name", sorted(set(NAMES) - RANDOM))
def test_deterministic_shifts_are_per_image(name, cifar):
    """A batch gives what each image gives alone (means, resizes, JPEG are per image)."""
    batch = apply_shift(cifar[:5], name, 4)
    single = np.concatenate([apply_shift(cifar[i : i + 1], name, 4) for i in range(5)])
    assert np.array_equal(batch, single)


@pytest.mark.parametrize("name", NAMES)
def test_chunking_gives_the_same_images(name, cifar, monkeypatch):
    """With chunks of 3 images, deterministic shifts give the unchunked result; random
    ones stay deterministic and keep drawing new numbers (copies of one image in
    different chunks come out different)."""
    whole = apply_shift(cifar[:10], name, 5, seed=3)
    monkeypatch.setattr(digital, "_CHUNK_PIXELS", 3 * 32 * 32)
    chunked = apply_shift(cifar[:10], name, 5, seed=3)
    if name in RANDOM:
        assert np.array_equal(chunked, apply_shift(cifar[:10], name, 5, seed=3))
        copies = apply_shift(np.repeat(cifar[:1], 10, axis=0), name, 5, seed=3)
        assert not np.array_equal(copies[0], copies[3]) and not np.array_equal(copies[3], copies[6])
    else:
        assert np.array_equal(chunked, whole)


# ----------------------------------------------------------------------------- severity
@pytest.mark.parametrize("name", [name for name in NAMES if name != "elastic_transform"])
def test_severity_increases_the_distortion(name, cifar):
    """Mean absolute difference from the clean images grows with severity, except where
    the published parameters are not ordered so: saturate desaturates at 1-2 (x 0.3,
    x 0.1) and saturates at 3-5, so only 1 < 2 and 3 < 4 < 5 hold (measured on these
    images: 11.6, 14.9, 7.5, 19.5, 28.6 grey levels). elastic_transform: see below."""
    dist = [_mad(apply_shift(cifar, name, s, seed=0), cifar) for s in range(1, 6)]
    if name == "saturate":
        assert dist[0] < dist[1] and dist[2] < dist[3] < dist[4], dist
    else:
        assert np.all(np.diff(dist) > 0), dist


def test_elastic_displacement_part_grows_with_severity(cifar):
    """The published elastic parameters shrink the affine jitter (2.56 ... 0.96 px) while
    the displacement grows (alpha 0 ... 3.2 px, sigma 6.4 ... 0.96 px), so the total pixel
    change falls with severity (measured here: 22.8, 20.6, 18.5, 17.1, 14.3 grey levels).
    What grows is the change the displacement adds to the same affine warp."""
    from oddkit.shifts.base import to_float, to_uint8

    n, h, w = cifar.shape[:3]
    added = []
    for s in range(1, 6):
        full = digital._elastic_transform(cifar, s, np.random.default_rng(s))
        jitter = 32 * digital._ELASTIC[s - 1][2]
        rows, cols = digital._affine_source_coords(n, h, w, jitter, np.random.default_rng(s))
        planes = to_float(np.ascontiguousarray(np.moveaxis(cifar, -1, 0)))
        affine = np.moveaxis(to_uint8(digital.bilinear_sample(planes, rows, cols, "mirror")), 0, -1)
        added.append(_mad(full, affine))
    assert added[0] == 0 and np.all(np.diff(added) > 0), added


# ----------------------------------------------------------------------------- HSV (shared with colour jitter)
def test_hsv_conversion_equals_skimage(cifar):
    """geometric's HSV conversion (reused here) equals skimage.color in float32, including
    grey pixels and ties between channels; tolerance: one float32 ulp of [0, 1] values."""
    color = pytest.importorskip("skimage.color")
    rng = np.random.default_rng(0)
    x = np.concatenate([cifar[:20].reshape(-1, 3), rng.integers(0, 4, (5000, 3)) * 85]).astype(np.float32) / 255
    x = np.concatenate([x, rng.random((5000, 3), dtype=np.float32)])
    np.testing.assert_allclose(_rgb_to_hsv(x), color.rgb2hsv(x), rtol=0, atol=1.2e-7)
    hsv = color.rgb2hsv(x)
    np.testing.assert_allclose(_hsv_to_rgb(hsv), color.hsv2rgb(hsv), rtol=0, atol=1.2e-7)


@pytest.mark.parametrize("severity", [1, 2, 3, 4, 5])
def test_brightness_and_saturate_match_skimage_reference(severity, cifar):
    """The published formulas computed per image with skimage.color in float64."""
    color = pytest.importorskip("skimage.color")
    images = cifar[:40]
    bright, (factor, offset) = digital._BRIGHTNESS[severity - 1], digital._SATURATE[severity - 1]
    ref_b, ref_s = [], []
    for image in images:
        hsv = color.rgb2hsv(image / 255.0)
        b = hsv.copy()
        b[..., 2] = np.clip(b[..., 2] + bright, 0, 1)
        ref_b.append(color.hsv2rgb(b))
        hsv[..., 1] = np.clip(hsv[..., 1] * factor + offset, 0, 1)
        ref_s.append(color.hsv2rgb(hsv))
    _assert_rounds(apply_shift(images, "brightness", severity), np.stack(ref_b))
    _assert_rounds(apply_shift(images, "saturate", severity), np.stack(ref_s))


@pytest.mark.parametrize("severity", [1, 3, 5])
def test_contrast_matches_reference(severity, cifar, photo):
    c = digital._CONTRAST[severity - 1]
    for images in (cifar[:20], _sized(photo, 48, 64)):
        ref = []
        for image in images:
            x = image / 255.0
            means = x.mean(axis=(0, 1), keepdims=True)
            ref.append((x - means) * c + means)
        _assert_rounds(apply_shift(images, "contrast", severity), np.stack(ref))


# ----------------------------------------------------------------------------- fog
def _plasma_by_points(mapsize: int, decay: float, rng: np.random.Generator) -> np.ndarray:
    """Diamond-square written point by point: each new point is the mean of its four
    neighbours (wrapping around) plus ``wibble * U(-wibble, wibble)``, drawn per level in
    row-major order for squares, then the points between row neighbours, then between
    column neighbours."""
    grid = np.zeros((mapsize, mapsize))
    step, wibble = mapsize, 100.0
    while step >= 2:
        half, k = step // 2, mapsize // step
        noise = rng.uniform(-wibble, wibble, (k, k))
        for a in range(k):
            for b in range(k):
                r, c = a * step, b * step
                corners = [grid[(r + i) % mapsize, (c + j) % mapsize] for i in (0, step) for j in (0, step)]
                grid[r + half, c + half] = sum(corners) / 4 + wibble * noise[a, b]
        neighbours = ((-half, 0), (half, 0), (0, -half), (0, half))
        for offset in ((0, half), (half, 0)):
            noise = rng.uniform(-wibble, wibble, (k, k))
            for a in range(k):
                for b in range(k):
                    r, c = a * step + offset[0], b * step + offset[1]
                    around = [grid[(r + i) % mapsize, (c + j) % mapsize] for i, j in neighbours]
                    grid[r, c] = sum(around) / 4 + wibble * noise[a, b]
        step, wibble = half, wibble / decay
    grid -= grid.min()
    return grid / grid.max()


@pytest.mark.parametrize("decay", [3.0, 1.75])
def test_plasma_fractal_equals_pointwise_construction(decay):
    maps = digital.plasma_fractal(1, 32, decay, np.random.default_rng(11))
    np.testing.assert_allclose(maps[0], _plasma_by_points(32, decay, np.random.default_rng(11)), rtol=0, atol=1e-9)
    many = digital.plasma_fractal(6, 64, decay, np.random.default_rng(1))
    assert many.shape == (6, 64, 64)
    assert np.allclose(many.min(axis=(1, 2)), 0) and np.allclose(many.max(axis=(1, 2)), 1)
    assert len({m.tobytes() for m in many}) == 6


@pytest.mark.parametrize("severity", [1, 3, 5])
def test_fog_matches_reference_formula(severity, cifar):
    """Per image: x + c0 * map, times max / (max + c0), float64, same random draws."""
    c0, decay = digital._FOG[severity - 1]
    for i in range(6):
        image = cifar[i]
        ours = digital._fog(image[None], severity, np.random.default_rng(i))[0]
        x = image / 255.0
        peak = x.max()
        x = x + c0 * _plasma_by_points(32, decay, np.random.default_rng(i))[..., None]
        _assert_rounds(ours, x * peak / (peak + c0))


def test_fog_map_spans_zero_to_one_on_grey_images():
    """On constant images the fractal can be read back: it spans [0, 1] on 32x32 (the map
    is the image), stays in [0, 1] on a 48x64 crop of a 64-map, and differs per image."""
    v, c0 = 0.5, digital._FOG[4][0]
    tol = 0.6 / 255 * (v + c0) / v / c0  # half a grey level, through the inverse formula
    for shape in ((32, 32), (48, 64)):
        grey = np.full((4, *shape, 3), round(v * 255), dtype=np.uint8)
        v_exact = grey[0, 0, 0, 0] / 255
        out = apply_shift(grey, "fog", 5, seed=2) / 255.0
        fractal = (out[..., 0] * (v_exact + c0) / v_exact - v_exact) / c0
        assert np.all(out[..., 0] == out[..., 2])
        assert fractal.min() > -tol and fractal.max() < 1 + tol
        if shape == (32, 32):
            assert np.all(fractal.min(axis=(1, 2)) < tol) and np.all(fractal.max(axis=(1, 2)) > 1 - tol)
        assert not np.allclose(fractal[0], fractal[1], atol=0.05)


# ----------------------------------------------------------------------------- elastic
def _elastic_reference(image: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """The reference recipe for one image with scipy/skimage in place of OpenCV:
    getAffineTransform by a linear solve, its inverse applied with scipy's
    affine_transform (order 1, mode mirror = BORDER_REFLECT_101), skimage's gaussian for
    the displacement fields and map_coordinates (order 1, reflect) as in the script."""
    from scipy.ndimage import affine_transform, map_coordinates
    from skimage.filters import gaussian

    h, w = image.shape[:2]
    scale = min(h, w) / 32
    alpha, sigma, jitter = (32 * f * scale for f in digital._ELASTIC[severity - 1])
    x = image.astype(np.float32) / 255
    s = min(h, w) // 3
    pts1 = np.float32([[w // 2 + s, h // 2 + s], [w // 2 + s, h // 2 - s], [w // 2 - s, h // 2 - s]])
    pts2 = pts1 + rng.uniform(-jitter, jitter, size=(3, 2)).astype(np.float32)
    forward = np.linalg.solve(np.c_[pts1, np.ones(3)].astype(np.float64), pts2.astype(np.float64)).T  # (2, 3)
    inverse = np.linalg.inv(np.vstack([forward, [0, 0, 1]]))[:2]
    matrix = np.array([[inverse[1, 1], inverse[1, 0]], [inverse[0, 1], inverse[0, 0]]])  # (row, col) order
    offset = np.array([inverse[1, 2], inverse[0, 2]])
    x = np.stack([affine_transform(x[..., k], matrix, offset, order=1, mode="mirror") for k in range(3)], axis=-1)
    if alpha > 0:
        dx = (gaussian(rng.uniform(-1, 1, size=(h, w)), sigma, mode="reflect", truncate=3) * alpha).astype(np.float32)
        dy = (gaussian(rng.uniform(-1, 1, size=(h, w)), sigma, mode="reflect", truncate=3) * alpha).astype(np.float32)
        cols, rows, chans = np.meshgrid(np.arange(w), np.arange(h), np.arange(3))
        coords = (rows + dy[..., None]).ravel(), (cols + dx[..., None]).ravel(), chans.ravel()
        x = map_coordinates(x, coords, order=1, mode="reflect").reshape(h, w, 3)
    return x


@pytest.mark.parametrize("severity", [1, 2, 3, 4, 5])
def test_elastic_matches_reference_recipe(severity, cifar, photo):
    pytest.importorskip("skimage")
    for i, image in enumerate([*cifar[:4], _sized(photo, 48, 64, 1)[0]]):
        ours = digital._elastic_transform(image[None], severity, np.random.default_rng(100 + i))[0]
        _assert_rounds(ours, _elastic_reference(image, severity, np.random.default_rng(100 + i)), slack=3e-3)


def test_elastic_displacement_field_statistics():
    """The smoothed U(-1, 1) field has, away from the edges, the standard deviation of a
    Gaussian-weighted sum of independent uniforms: sqrt(sum(k^2) / 3), k the 2-D kernel."""
    sigma = digital._ELASTIC[3][1] * 32
    fields = digital._smooth_noise(400, 32, 32, sigma, np.random.default_rng(0))
    radius = int(3 * sigma + 0.5)
    k1 = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    k1 /= k1.sum()
    expected = np.sqrt((k1**2).sum() ** 2 / 3)
    inner = fields[:, radius : 32 - radius, radius : 32 - radius]
    assert abs(inner.std() / expected - 1) < 0.03
    assert abs(inner.mean()) < 0.01


# ----------------------------------------------------------------------------- pixelate and JPEG
@pytest.mark.parametrize("shape", [(32, 32), (48, 64), (37, 29), (224, 224)])
def test_pixelate_equals_pil_box_resize(shape, cifar, photo):
    """Identical to PIL's two BOX resizes (tolerance 0: PIL's integer arithmetic is reproduced)."""
    from PIL import Image

    images = cifar[:8] if shape == (32, 32) else _sized(photo, *shape)
    h, w = shape
    for severity in range(1, 6):
        c = digital._PIXELATE[severity - 1]
        ref = [
            np.asarray(Image.fromarray(im).resize((int(w * c), int(h * c)), Image.BOX).resize((w, h), Image.BOX))
            for im in images
        ]
        assert np.array_equal(apply_shift(images, "pixelate", severity), np.stack(ref))


def test_box_resize_equals_pil_for_any_sizes(photo):
    from PIL import Image

    rng = np.random.default_rng(5)
    for _ in range(20):
        h, w, oh, ow = rng.integers(3, 90, size=4)
        image = np.ascontiguousarray(photo[:h, 100 : 100 + w])
        ref = np.asarray(Image.fromarray(image).resize((int(ow), int(oh)), Image.BOX))
        assert np.array_equal(digital.box_resize(image[None], int(oh), int(ow))[0], ref)


@pytest.mark.parametrize("severity", [1, 5])
def test_jpeg_equals_pil_round_trip(severity, cifar):
    """Identical to PIL's own save/open per image, also through the thread pool (300
    images: more than one block)."""
    from PIL import Image

    images = np.concatenate([cifar] * 4)[:300]
    quality = digital._JPEG_QUALITY[severity - 1]
    ref = []
    for image in images:
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, "JPEG", quality=quality)
        ref.append(np.asarray(Image.open(buffer)))
    assert np.array_equal(apply_shift(images, "jpeg_compression", severity), np.stack(ref))


@pytest.mark.parametrize("mode", ["mirror", "reflect"])
def test_bilinear_sample_equals_scipy_map_coordinates(mode, photo):
    """Our sampler against scipy's map_coordinates (order 1, same mode) at coordinates far
    outside the image too; tolerance 1e-4: float32 coordinates up to 150 px are exact to
    1e-5 px, times at most one (the image is in [0, 1] per pixel)."""
    from scipy.ndimage import map_coordinates

    plane = photo[:40, 100:131, 1] / 255.0
    rng = np.random.default_rng(9)
    rows = rng.uniform(-120, 160, size=(3, 20, 25))
    cols = rng.uniform(-90, 130, size=(3, 20, 25))
    ours = digital.bilinear_sample(np.broadcast_to(plane, (1, 3, 40, 31)), rows, cols, mode)[0]
    ref = map_coordinates(plane, [rows.ravel(), cols.ravel()], order=1, mode=mode).reshape(rows.shape)
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-4)

"""The shift registry (oddkit.shifts.base) and the geometric / photometric shifts.

Real images: CIFAR-10 test JPEGs when ../shared is present, else scikit-image's bundled
photos resized to 32 px; references: PIL's transposes, torch's bilinear interpolation,
scikit-image's HSV conversion.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from oddkit.errors import InputError, ParamError
from oddkit.shifts import (
    GEOMETRIC,
    PHOTOMETRIC,
    ShiftInfo,
    apply_shift,
    get_shift,
    list_shifts,
    register_shift,
)
from oddkit.shifts.base import (
    clipped_zoom,
    gaussian_filter_images,
    resize_bilinear,
    to_float,
    to_uint8,
)

CIFAR_TEST = (
    Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10" / "test"
)


@pytest.fixture(scope="module")
def photos() -> np.ndarray:
    """40 real 32x32 RGB images (CIFAR-10 test JPEGs, or scikit-image photos as a fallback)."""
    files = (
        sorted(CIFAR_TEST.glob("*/*.jpg"))[::250][:40] if CIFAR_TEST.is_dir() else []
    )
    if len(files) == 40:
        return np.stack([np.asarray(Image.open(f).convert("RGB")) for f in files])
    data = pytest.importorskip(
        "skimage.data", reason="neither ../shared nor scikit-image is available"
    )
    big = [data.astronaut(), data.chelsea(), data.coffee(), data.rocket()]
    return np.stack(
        [np.asarray(Image.fromarray(p).resize((32, 32), Image.BILINEAR)) for p in big]
        * 10
    )


# ----------------------------------------------------------------------------- registry
def test_registry_lists_the_geometric_and_photometric_shifts():
    names = {s.name for s in list_shifts()}
    assert set(GEOMETRIC) | set(PHOTOMETRIC) <= names
    assert {s.name for s in list_shifts("geometric")} >= set(GEOMETRIC)
    assert [s.name for s in list_shifts("photometric")][:1] == ["color_jitter"]
    assert get_shift("rot90").square_only and not get_shift("hflip").square_only
    assert get_shift("crop_resize").random and not get_shift("rot90").random
    with pytest.raises(ParamError, match="kind"):
        list_shifts("weather")
    with pytest.raises(ParamError, match="already registered"):
        register_shift(
            ShiftInfo("rot90", "geometric", "again", "-", False), lambda x, s, r: x
        )


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda x: apply_shift(x, "rot91", 1), ParamError, "Did you mean rot90"),
        (
            lambda x: apply_shift(x, "hflip", 0),
            ParamError,
            "severity must be an integer from 1 to 5",
        ),
        (lambda x: apply_shift(x, "hflip", 6), ParamError, "from 1 to 5"),
        (lambda x: apply_shift(x, "hflip", 2.0), ParamError, "from 1 to 5"),
        (lambda x: apply_shift(x, "hflip", True), ParamError, "from 1 to 5"),
        (lambda x: apply_shift(x, "hflip", 1, seed=-1), ParamError, "seed"),
        (lambda x: apply_shift(x[..., 0], "hflip", 1), InputError, "RGB"),
        (lambda x: apply_shift(x.astype(np.float32), "hflip", 1), InputError, "uint8"),
        (lambda x: apply_shift(x[:, :4, :4], "hflip", 1), InputError, "at least 8x8"),
        (lambda x: apply_shift(x[:0], "hflip", 1), InputError, "empty"),
        (lambda x: apply_shift(x[:, :, :20], "rot90", 1), InputError, "square"),
        (lambda x: apply_shift(list(x), "hflip", 1), InputError, "numpy array"),
    ],
)
def test_bad_input_is_refused_before_any_work(photos, call, error, match):
    with pytest.raises(error, match=match):
        call(photos[:3])


# ----------------------------------------------------------------------------- geometric
@pytest.mark.parametrize(
    "name, pil",
    [
        ("rot90", Image.Transpose.ROTATE_90),
        ("rot270", Image.Transpose.ROTATE_270),
        ("hflip", Image.Transpose.FLIP_LEFT_RIGHT),
        ("vflip", Image.Transpose.FLIP_TOP_BOTTOM),
    ],
)
def test_rotations_and_flips_equal_pils_and_ignore_severity(photos, name, pil):
    before = photos.copy()
    out = apply_shift(photos, name, 1)
    expected = np.stack([np.asarray(Image.fromarray(p).transpose(pil)) for p in photos])
    np.testing.assert_array_equal(out, expected)
    np.testing.assert_array_equal(apply_shift(photos, name, 5), out)
    np.testing.assert_array_equal(photos, before)  # input untouched
    assert out.flags.c_contiguous


def test_flips_work_on_non_square_images(photos):
    wide = np.ascontiguousarray(photos[:4, :, :20])
    np.testing.assert_array_equal(apply_shift(wide, "hflip", 3), wide[:, :, ::-1])


def _torch_bilinear(x: np.ndarray, h: int, w: int) -> np.ndarray:
    torch = pytest.importorskip(
        "torch", reason="torch is the reference for bilinear resizing"
    )
    t = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
    out = torch.nn.functional.interpolate(
        t, size=(h, w), mode="bilinear", align_corners=False
    )
    return out.numpy().transpose(0, 2, 3, 1)


def test_resize_bilinear_equals_torch_when_enlarging(photos):
    x = to_float(photos[:6])
    np.testing.assert_allclose(
        resize_bilinear(x, 57, 45), _torch_bilinear(x, 57, 45), atol=2e-6
    )
    boxes = np.array([[3, 5, 24, 20]] * 6)
    crop = x[:, 3:27, 5:25]
    np.testing.assert_allclose(
        resize_bilinear(x, 32, 32, boxes=boxes),
        _torch_bilinear(crop, 32, 32),
        atol=2e-6,
    )
    with pytest.raises(InputError, match="boxes"):
        resize_bilinear(x, 32, 32, boxes=boxes[:2])


def test_crop_resize_at_severity_5_is_a_24px_crop_resized_back(photos):
    """Each output is one of the 81 possible 24x24 crops of its image, resized bilinearly."""
    x = photos[:8]
    out = apply_shift(x, "crop_resize", 5, seed=4)
    crops = np.stack(
        [to_float(x[:, t : t + 24, l : l + 24]) for t in range(9) for l in range(9)]
    )
    candidates = np.stack(
        [to_uint8(_torch_bilinear(c, 32, 32)) for c in crops]
    )  # (81, n, 32, 32, 3)
    diff = np.abs(candidates.astype(int) - out[None].astype(int)).max(
        axis=(2, 3, 4)
    )  # (81, n)
    assert (diff.min(axis=0) <= 1).all()  # every image matches one crop to rounding
    positions = diff.argmin(axis=0)
    assert len(set(positions.tolist())) > 1  # positions are drawn, not fixed
    np.testing.assert_array_equal(apply_shift(x, "crop_resize", 5, seed=4), out)
    assert not np.array_equal(apply_shift(x, "crop_resize", 5, seed=5), out)


def test_translate_moves_each_image_by_a_bounded_offset_with_reflected_fill(photos):
    x = photos[:6]
    sev = 4
    m = round(0.05 * sev * 32)
    out = apply_shift(x, "translate", sev, seed=1)
    padded = np.pad(x, ((0, 0), (m, m), (m, m), (0, 0)), mode="reflect")
    found = []
    for i in range(len(x)):
        hits = [
            (dy, dx)
            for dy in range(-m, m + 1)
            for dx in range(-m, m + 1)
            if np.array_equal(
                out[i], padded[i, m - dy : m - dy + 32, m - dx : m - dx + 32]
            )
        ]
        assert hits, f"image {i} is not a translation of its input"
        found.append(hits[0])
    assert len(set(found)) > 1


def test_color_jitter_hsv_conversion_matches_scikit_image():
    color = pytest.importorskip(
        "skimage.color", reason="scikit-image is the HSV reference"
    )
    from oddkit.shifts.geometric import _hsv_to_rgb, _rgb_to_hsv

    rng = np.random.default_rng(0)
    x = rng.random((4, 16, 16, 3)).astype(np.float32)
    x[0, :4] = 0.5  # greys: hue and saturation 0
    hsv = _rgb_to_hsv(x)
    np.testing.assert_allclose(hsv, color.rgb2hsv(x), atol=1e-5)
    np.testing.assert_allclose(_hsv_to_rgb(hsv), x, atol=1e-5)
    np.testing.assert_allclose(_hsv_to_rgb(hsv), color.hsv2rgb(hsv), atol=1e-5)


def test_color_jitter_strength_grows_with_severity_and_keeps_shapes(photos):
    x = photos
    change = [
        np.abs(apply_shift(x, "color_jitter", s).astype(float) - x).mean()
        for s in (1, 3, 5)
    ]
    assert change[0] < change[1] < change[2]
    out = apply_shift(x, "color_jitter", 5, seed=2)
    np.testing.assert_array_equal(out, apply_shift(x, "color_jitter", 5, seed=2))
    # the structure stays: most jittered images still correlate best with their own source (at
    # the protocol's strength a hue turn of up to half the circle can break it for a few)
    a = to_float(out).reshape(len(x), -1)
    b = to_float(x).reshape(len(x), -1)
    a = (a - a.mean(1, keepdims=True)) / a.std(1, keepdims=True)
    b = (b - b.mean(1, keepdims=True)) / b.std(1, keepdims=True)
    corr = a @ b.T / a.shape[1]
    assert (corr.argmax(axis=1) == np.arange(len(x))).mean() >= 0.8


@pytest.mark.parametrize("size", [(32, 32), (48, 64), (224, 224)])
def test_every_registered_shift_keeps_shape_and_dtype_at_any_size(photos, size):
    x = np.stack(
        [
            np.asarray(Image.fromarray(p).resize(size[::-1], Image.BILINEAR))
            for p in photos[:3]
        ]
    )
    for info in list_shifts():
        if info.square_only and size[0] != size[1]:
            continue
        out = apply_shift(x, info.name, 5)
        assert out.shape == x.shape and out.dtype == np.uint8, info.name


# ----------------------------------------------------------------------------- shared helpers
def test_shared_blur_and_zoom_match_the_reference_libraries():
    filters = pytest.importorskip(
        "skimage.filters", reason="scikit-image is the blur reference"
    )
    from scipy.ndimage import zoom

    rng = np.random.default_rng(1)
    img = rng.random((32, 32, 3)).astype(np.float32)
    np.testing.assert_allclose(
        gaussian_filter_images(img[None], 0.7)[0],
        filters.gaussian(img, sigma=0.7, channel_axis=-1),
        atol=1e-6,
    )
    for factor in (1.06, 1.25, 2.25):
        crop = int(np.ceil(32 / factor))
        top = (32 - crop) // 2
        ref = zoom(
            img[top : top + crop, top : top + crop], (factor, factor, 1), order=1
        )
        trim = (ref.shape[0] - 32) // 2
        np.testing.assert_allclose(
            clipped_zoom(img[None], factor)[0],
            ref[trim : trim + 32, trim : trim + 32],
            atol=1e-6,
        )

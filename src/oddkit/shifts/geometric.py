"""Geometric and photometric shifts: rotations, flips, crop-resize, translation, colour jitter.

These are the augmentation-style transforms of the C10-R setting ``A`` and of the SPA/SSA
transform pool (docs/protocols.md). Whether one keeps an image's meaning depends on the
class (a rotated bird is still a bird, a rotated car is not); the shift itself is neutral.

Severities: ``rot90``, ``rot270``, ``hflip`` and ``vflip`` have no strength and give the
same images at every severity. ``crop_resize`` keeps a random square-ish box of
``1 - 0.05 * severity`` of each side (severity 5: 24x24 of a 32x32 image, the protocol's
crop) and resizes it back bilinearly; ``translate`` moves by up to ``0.05 * severity`` of
each side, filling with the reflected image; ``color_jitter`` draws brightness, contrast,
saturation and hue factors with strength ``0.1 * severity`` each (severity 5: 0.5, 0.5,
0.5, 0.5, the protocol's), applied in a random order per image, as torchvision's
``ColorJitter`` does.
"""

from __future__ import annotations

import numpy as np

from .base import ShiftInfo, register_shift, resize_bilinear, to_float, to_uint8

__all__ = ["GEOMETRIC", "PHOTOMETRIC"]

_TV = "torchvision.transforms semantics (our own implementation)"


# ----------------------------------------------------------------------------- geometric
def _rot90(images: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    return np.ascontiguousarray(np.rot90(images, k=1, axes=(1, 2)))


def _rot270(images: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    return np.ascontiguousarray(np.rot90(images, k=3, axes=(1, 2)))


def _hflip(images: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    return np.ascontiguousarray(images[:, :, ::-1])


def _vflip(images: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    return np.ascontiguousarray(images[:, ::-1])


def crop_fraction(severity: int) -> float:
    """Side fraction ``crop_resize`` keeps at ``severity``: 0.95, 0.90, ..., 0.75."""
    return 1.0 - 0.05 * severity


def _crop_resize(
    images: np.ndarray, severity: int, rng: np.random.Generator
) -> np.ndarray:
    n, h, w = images.shape[:3]
    frac = crop_fraction(severity)
    ch, cw = max(1, round(frac * h)), max(1, round(frac * w))
    top = rng.integers(0, h - ch + 1, size=n)
    left = rng.integers(0, w - cw + 1, size=n)
    boxes = np.stack([top, left, np.full(n, ch), np.full(n, cw)], axis=1)
    return to_uint8(resize_bilinear(to_float(images), h, w, boxes=boxes))


def _translate(
    images: np.ndarray, severity: int, rng: np.random.Generator
) -> np.ndarray:
    n, h, w = images.shape[:3]
    my, mx = max(1, round(0.05 * severity * h)), max(1, round(0.05 * severity * w))
    dy = rng.integers(-my, my + 1, size=n)
    dx = rng.integers(-mx, mx + 1, size=n)
    padded = np.pad(images, ((0, 0), (my, my), (mx, mx), (0, 0)), mode="reflect")
    rows = (np.arange(h)[None, :] + my - dy[:, None])[:, :, None]
    cols = (np.arange(w)[None, :] + mx - dx[:, None])[:, None, :]
    return padded[np.arange(n)[:, None, None], rows, cols]


# ----------------------------------------------------------------------------- colour jitter
_GREY = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def _grey(x: np.ndarray) -> np.ndarray:
    return x @ _GREY


def _rgb_to_hsv(x: np.ndarray) -> np.ndarray:
    r, g, b = x[..., 0], x[..., 1], x[..., 2]
    v = x.max(axis=-1)
    c = v - x.min(axis=-1)
    s = np.where(v > 0, c / np.where(v > 0, v, 1), 0)
    safe = np.where(c > 0, c, 1)
    h = np.where(
        v == r,
        (g - b) / safe,
        np.where(v == g, 2.0 + (b - r) / safe, 4.0 + (r - g) / safe),
    )
    h = np.where(c > 0, (h / 6.0) % 1.0, 0.0)
    return np.stack([h, s, v], axis=-1).astype(np.float32)


def _hsv_to_rgb(x: np.ndarray) -> np.ndarray:
    h, s, v = x[..., 0], x[..., 1], x[..., 2]
    i = np.floor(h * 6.0)
    f = h * 6.0 - i
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    i = i.astype(np.int64) % 6
    choices = [
        np.stack(c, axis=-1)
        for c in ((v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q))
    ]
    return np.choose(i[..., None], choices).astype(np.float32)


def _jitter_op(x: np.ndarray, op: int, factor: np.ndarray) -> np.ndarray:
    """One ColorJitter step on float images ``x`` (m, H, W, 3) with per-image ``factor``."""
    f = factor[:, None, None, None].astype(np.float32)
    if op == 0:  # brightness: scale
        return np.clip(x * f, 0, 1)
    if op == 1:  # contrast: blend with the image's mean grey level
        mean = _grey(x).mean(axis=(1, 2))[:, None, None, None]
        return np.clip(f * x + (1 - f) * mean, 0, 1)
    if op == 2:  # saturation: blend with the grey image
        return np.clip(f * x + (1 - f) * _grey(x)[..., None], 0, 1)
    hsv = _rgb_to_hsv(x)  # hue: rotate the hue circle
    hsv[..., 0] = (hsv[..., 0] + f[..., 0]) % 1.0
    return _hsv_to_rgb(hsv)


def _color_jitter(
    images: np.ndarray, severity: int, rng: np.random.Generator
) -> np.ndarray:
    n = images.shape[0]
    strength = 0.1 * severity
    factors = np.stack(
        [
            rng.uniform(max(0.0, 1 - strength), 1 + strength, size=n),  # brightness
            rng.uniform(max(0.0, 1 - strength), 1 + strength, size=n),  # contrast
            rng.uniform(max(0.0, 1 - strength), 1 + strength, size=n),  # saturation
            rng.uniform(-strength, strength, size=n),  # hue (fraction of the circle)
        ],
        axis=1,
    )
    order = np.argsort(
        rng.random((n, 4)), axis=1
    )  # a random order of the four per image
    x = to_float(images)
    for step in range(4):
        for op in range(4):
            rows = np.flatnonzero(order[:, step] == op)
            if rows.size:
                x[rows] = _jitter_op(x[rows], op, factors[rows, op])
    return to_uint8(x)


# ----------------------------------------------------------------------------- registry
GEOMETRIC = ("rot90", "rot270", "hflip", "vflip", "crop_resize", "translate")
PHOTOMETRIC = ("color_jitter",)

register_shift(
    ShiftInfo(
        "rot90",
        "geometric",
        "rotate 90 degrees counter-clockwise (no severity)",
        _TV,
        False,
        square_only=True,
    ),
    _rot90,
)
register_shift(
    ShiftInfo(
        "rot270",
        "geometric",
        "rotate 270 degrees counter-clockwise (no severity)",
        _TV,
        False,
        square_only=True,
    ),
    _rot270,
)
register_shift(
    ShiftInfo("hflip", "geometric", "mirror left-right (no severity)", _TV, False),
    _hflip,
)
register_shift(
    ShiftInfo("vflip", "geometric", "mirror top-bottom (no severity)", _TV, False),
    _vflip,
)
register_shift(
    ShiftInfo(
        "crop_resize",
        "geometric",
        "random crop of 1 - 0.05 x severity of each side, resized back bilinearly (5: 24 of 32 px)",
        "RandomCrop + Resize, " + _TV,
        True,
    ),
    _crop_resize,
)
register_shift(
    ShiftInfo(
        "translate",
        "geometric",
        "random shift by up to 0.05 x severity of each side, reflected fill",
        "RandomAffine(translate), " + _TV,
        True,
        notes="fills with the reflected image rather than black, so no border marks the shift",
    ),
    _translate,
)
register_shift(
    ShiftInfo(
        "color_jitter",
        "photometric",
        "brightness, contrast, saturation and hue jitter of strength 0.1 x severity each, random order",
        "ColorJitter, " + _TV,
        True,
    ),
    _color_jitter,
)

"""Image shifts with severities 1-5: corruptions, geometric and photometric transforms.

Real test data drifts in ways that keep its meaning (blur, noise, lighting, a rotated bird)
and in ways that change it (a rotated car). This package makes such drift on demand,
deterministically and for whole batches::

    from oddkit.shifts import apply_shift, list_shifts
    blurred = apply_shift(images_uint8_nhwc, "gaussian_blur", severity=3, seed=0)

* :func:`apply_shift`, :func:`list_shifts`, :func:`get_shift`: the registry
  (:mod:`oddkit.shifts.base` documents the contract of a shift);
* :data:`CIFAR10_C`: the 19 corruptions of the C10-R protocol (docs/protocols.md);
* :data:`GEOMETRIC`, :data:`PHOTOMETRIC`: rotations, flips, crop-resize, translation and
  colour jitter (:mod:`oddkit.shifts.geometric`); the corruptions live in
  :mod:`~oddkit.shifts.noise_blur`, :mod:`~oddkit.shifts.weather` and
  :mod:`~oddkit.shifts.digital`;
* :func:`shifted_dataset`, :func:`build_shifted_set`, :func:`open_shifted_set`,
  :class:`ShiftedSource`: shifted (``-R``) versions of an image data set, on disk with a
  manifest or on the fly (:mod:`oddkit.shifts.build`);
* :mod:`oddkit.shifts.gallery`: a PNG grid of one image under every shift and severity.
"""

from __future__ import annotations

from . import digital, noise_blur, weather  # noqa: F401  (registers their shifts)
from .base import (
    KINDS,
    MIN_SIDE,
    SEVERITIES,
    ShiftInfo,
    apply_shift,
    check_severity,
    get_shift,
    list_shifts,
    register_shift,
    resize_bilinear,
)
from .build import (
    ShiftedSet,
    ShiftedSource,
    build_shifted_set,
    open_shifted_set,
    shifted_dataset,
)
from .geometric import GEOMETRIC, PHOTOMETRIC

#: The 19 corruptions of CIFAR-10-C (Hendrycks & Dietterich, ICLR 2019), in the order of
#: docs/protocols.md (C10-R setting ``C``).
CIFAR10_C: tuple[str, ...] = (
    "gaussian_noise",
    "shot_noise",
    "impulse_noise",
    "speckle_noise",
    "defocus_blur",
    "glass_blur",
    "motion_blur",
    "zoom_blur",
    "gaussian_blur",
    "snow",
    "frost",
    "fog",
    "brightness",
    "contrast",
    "elastic_transform",
    "pixelate",
    "jpeg_compression",
    "spatter",
    "saturate",
)

__all__ = [
    "CIFAR10_C",
    "GEOMETRIC",
    "KINDS",
    "MIN_SIDE",
    "PHOTOMETRIC",
    "SEVERITIES",
    "ShiftInfo",
    "ShiftedSet",
    "ShiftedSource",
    "apply_shift",
    "build_shifted_set",
    "check_severity",
    "get_shift",
    "list_shifts",
    "open_shifted_set",
    "register_shift",
    "resize_bilinear",
    "shifted_dataset",
]

"""Detectors: one contract (see :mod:`oddkit.detectors.base`), a registry, persistence.

Families live in their own modules; importing this package registers them all.
"""

from .base import (
    Detector,
    DetectorInfo,
    create,
    get,
    list_detectors,
    load,
    register,
)

# Importing a family module registers its detectors.
from . import distance, density, tree, kernel, linear, ensemble, pyod_adapter  # noqa: E402,F401
from . import posthoc  # noqa: E402,F401
from . import trained  # noqa: E402,F401

__all__ = ["Detector", "DetectorInfo", "create", "get", "list_detectors", "load", "register"]

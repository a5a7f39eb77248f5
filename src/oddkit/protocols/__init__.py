"""Benchmark protocols: one object per protocol defined in ``docs/protocols.md``.

A protocol turns a data set and a seed into the exact train/test split the
definition prescribes and carries the name and version recorded with every result,
so that results from different protocol definitions are never mixed.

The classifier-based image OOD protocols (C10-OOD-local, C10-OSR6, image folders) are
functions in :mod:`oddkit.protocols.image_ood`; they return an :class:`OODResult`
(rows per detector and OOD set, raw scores, provenance in ``info``). The realistic-shift
protocols (C10-OC, C10-R, SPA, SSA) are in :mod:`oddkit.protocols.shift`; they return a
:class:`ShiftResult` (rows with AUROC and GS, per-setting means, provenance).

>>> from oddkit.protocols import get_protocol
>>> get_protocol("ADB-dev").version
'1'
"""

from __future__ import annotations

from ..errors import ParamError
from .adb_dev import ADBDev, Split
from .image_ood import (
    DEFAULT_DETECTORS,
    LAYERED_DETECTORS,
    Layered,
    OODResult,
    OODSet,
    c10_ood_local,
    c10_osr6,
    evaluate_posthoc,
    group_means,
    run_folders,
    tune_detectors,
)
from .shift import (
    CIFAR10_SEMANTIC,
    SHIFT_POOL,
    ShiftResult,
    c10_oc,
    c10_r,
    run_shift_bench,
    run_shift_protocol,
    spa,
    ssa,
)

__all__ = [
    "DEFAULT_DETECTORS",
    "LAYERED_DETECTORS",
    "Layered",
    "ADBDev",
    "CIFAR10_SEMANTIC",
    "SHIFT_POOL",
    "ShiftResult",
    "c10_oc",
    "c10_r",
    "run_shift_bench",
    "run_shift_protocol",
    "spa",
    "ssa",
    "OODResult",
    "OODSet",
    "Split",
    "c10_ood_local",
    "c10_osr6",
    "evaluate_posthoc",
    "get_protocol",
    "group_means",
    "list_protocols",
    "run_folders",
    "tune_detectors",
]


def list_protocols() -> list[str]:
    """Names accepted by :func:`get_protocol`."""
    return [ADBDev().name, ADBDev(full=True).name]


def get_protocol(name: str) -> ADBDev:
    """The protocol object registered under ``name`` (case-insensitive)."""
    for candidate in (ADBDev(), ADBDev(full=True)):
        if candidate.name.lower() == str(name).lower():
            return candidate
    raise ParamError(f"unknown protocol {name!r}; available: {', '.join(list_protocols())}.")

"""Generalizability score (GS): how much of a detector's ranking power survives a shift.

The default definition is oddkit's own (``shared/docs/protocols.md``, "Metrics"; the
source paper's formula was not available to us)::

    GS = clip((AUROC_shifted - 0.5) / (AUROC_standard - 0.5), 0, 1)

the share of above-chance ranking power kept under a realistic, meaning-preserving shift:
1 = the shift costs nothing, 0 = the detector is at (or below) chance under the shift.
It is undefined (NaN, with a :class:`GeneralizabilityWarning`) where
``AUROC_standard <= 0.5``: there is no above-chance power to keep. Always report it
beside both AUROCs (it hides how good the detector was to begin with).

Pluggable: ``definition`` is a registered name (:func:`list_gs_definitions`,
:func:`register_gs_definition`) or any callable ``f(standard, shifted) -> array`` of two
float64 arrays of equal shape. Whatever the definition, the rule above (NaN with a
warning where ``AUROC_standard <= 0.5``) is applied on top of it: interpretation: a
generalizability score measures power *kept*, so it is undefined for every definition
when there was no power.

Everything is vectorised: scalars give a Python float, arrays (broadcast against each
other) give a float64 array.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import MetricError, ParamError

__all__ = [
    "DEFAULT_GS_DEFINITION",
    "GSDefinition",
    "GeneralizabilityWarning",
    "chance_corrected_gs",
    "generalizability_score",
    "get_gs_definition",
    "list_gs_definitions",
    "ratio_gs",
    "register_gs_definition",
]

GSFunction = Callable[[np.ndarray, np.ndarray], np.ndarray]
#: name of the protocols.md definition (the default).
DEFAULT_GS_DEFINITION = "chance_corrected"
#: what ``missing`` accepts: raise on NaN AUROCs, or give NaN GS for them.
MISSING_POLICIES = ("raise", "propagate")


class GeneralizabilityWarning(RuntimeWarning):
    """GS is undefined (NaN) for some entries: their standard AUROC is at most 0.5."""


@dataclass(frozen=True)
class GSDefinition:
    """A registered GS formula: ``name``, ``fn(standard, shifted) -> array``, ``summary``."""

    name: str
    fn: GSFunction
    summary: str


def chance_corrected_gs(standard: np.ndarray, shifted: np.ndarray) -> np.ndarray:
    """protocols.md GS: ``clip((shifted - 0.5) / (standard - 0.5), 0, 1)``, NaN where
    ``standard <= 0.5``."""
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = (shifted - 0.5) / (standard - 0.5)
    return np.where(standard > 0.5, np.clip(ratio, 0.0, 1.0), np.nan)


def ratio_gs(standard: np.ndarray, shifted: np.ndarray) -> np.ndarray:
    """Plain AUROC ratio ``clip(shifted / standard, 0, 1)`` (no chance correction).

    An alternative offered for comparison, not from a paper: it credits a detector at
    chance under the shift with GS = 0.5 / AUROC_standard instead of 0.
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = shifted / standard
    return np.where(standard > 0.0, np.clip(ratio, 0.0, 1.0), np.nan)


_REGISTRY: dict[str, GSDefinition] = {}


def register_gs_definition(name: str, fn: GSFunction, summary: str = "") -> None:
    """Register a GS formula under ``name`` (lower-case, unique)."""
    if not isinstance(name, str) or not name or name != name.lower():
        raise ParamError(f"GS definition name must be a non-empty lower-case string, got {name!r}.")
    if name in _REGISTRY:
        raise ParamError(f"GS definition {name!r} is already registered.")
    if not callable(fn):
        raise ParamError(f"GS definition {name!r}: fn must be callable, got {type(fn).__name__}.")
    _REGISTRY[name] = GSDefinition(name, fn, summary)


def list_gs_definitions() -> list[GSDefinition]:
    """The registered GS definitions, the default first."""
    return list(_REGISTRY.values())


def get_gs_definition(definition: str | GSFunction | None) -> GSFunction:
    """The formula for ``definition``: None (the default), a registered name or a callable."""
    if definition is None:
        return _REGISTRY[DEFAULT_GS_DEFINITION].fn
    if callable(definition):
        return definition
    if isinstance(definition, str) and definition in _REGISTRY:
        return _REGISTRY[definition].fn
    raise ParamError(
        f"unknown GS definition {definition!r}; registered: {', '.join(_REGISTRY)} (or pass a callable)."
    )


register_gs_definition(
    DEFAULT_GS_DEFINITION,
    chance_corrected_gs,
    "clip((AUROC_shifted - 0.5) / (AUROC_standard - 0.5), 0, 1) (docs/protocols.md, oddkit's definition)",
)
register_gs_definition("ratio", ratio_gs, "clip(AUROC_shifted / AUROC_standard, 0, 1) (no chance correction)")


def generalizability_score(
    auroc_standard: Any,
    auroc_shifted: Any,
    *,
    definition: str | GSFunction | None = None,
    missing: str = "raise",
) -> Any:
    """GS of ``auroc_shifted`` relative to ``auroc_standard`` (module docstring).

    Both are AUROC values in [0, 1], scalars or arrays that broadcast together.
    ``definition``: None (protocols.md), a registered name or ``f(standard, shifted)``.
    ``missing="raise"`` (default) refuses NaN AUROCs with :class:`MetricError`;
    ``"propagate"`` gives NaN GS where either AUROC is NaN (a detector that failed), with
    no warning for those entries. Entries with ``AUROC_standard <= 0.5`` are NaN with one
    :class:`GeneralizabilityWarning` per call. Returns a float for scalar inputs, else a
    float64 array.
    """
    if missing not in MISSING_POLICIES:
        raise ParamError(f"missing must be one of {list(MISSING_POLICIES)}, got {missing!r}.")
    fn = get_gs_definition(definition)
    allow_nan = missing == "propagate"
    standard = _check_auroc_values(auroc_standard, "auroc_standard", allow_nan)
    shifted = _check_auroc_values(auroc_shifted, "auroc_shifted", allow_nan)
    try:
        standard, shifted = np.broadcast_arrays(standard, shifted)
    except ValueError as exc:
        raise MetricError(
            f"auroc_standard {standard.shape} and auroc_shifted {shifted.shape} do not broadcast."
        ) from exc
    known = ~(np.isnan(standard) | np.isnan(shifted))
    undefined = known & (standard <= 0.5)
    if undefined.any():
        warnings.warn(
            f"generalizability score is undefined (NaN) for {int(undefined.sum())} entr"
            f"{'y' if undefined.sum() == 1 else 'ies'} whose standard AUROC is <= 0.5: the "
            "detector has no above-chance ranking power to keep under the shift.",
            GeneralizabilityWarning,
            stacklevel=2,
        )
    with np.errstate(invalid="ignore", divide="ignore"):
        gs = np.asarray(fn(standard.copy(), shifted.copy()), dtype=np.float64)
    if gs.shape != standard.shape:
        raise MetricError(f"GS definition returned shape {gs.shape}, expected {standard.shape}.")
    gs = np.where(known & ~undefined, gs, np.nan)
    return float(gs) if gs.ndim == 0 else gs


def _check_auroc_values(value: Any, what: str, allow_nan: bool) -> np.ndarray:
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise MetricError(f"{what} must be a number or an array of numbers ({exc}).") from exc
    valid = (arr >= 0.0) & (arr <= 1.0)  # False for NaN
    if allow_nan:
        valid |= np.isnan(arr)
    if not np.all(valid):
        hint = "" if allow_nan else " (NaN too; pass missing='propagate' to get NaN GS for failed runs)"
        raise MetricError(f"{what} must be AUROC values in [0, 1]{hint}; got {value!r}.")
    return arr

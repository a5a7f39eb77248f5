"""Generalizability score (oddkit.metrics.generalizability) against hand-computed values."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from oddkit.errors import MetricError, ParamError
from oddkit.metrics.generalizability import (
    DEFAULT_GS_DEFINITION,
    GeneralizabilityWarning,
    generalizability_score,
    list_gs_definitions,
    register_gs_definition,
)


def test_hand_computed_values():
    # (0.8 - 0.5) / (0.9 - 0.5) = 0.3 / 0.4 = 0.75
    assert generalizability_score(0.9, 0.8) == pytest.approx(0.75)
    # (0.62 - 0.5) / (0.74 - 0.5) = 0.12 / 0.24 = 0.5
    assert generalizability_score(0.74, 0.62) == pytest.approx(0.5)
    # (0.55 - 0.5) / (1.0 - 0.5) = 0.1
    assert generalizability_score(1.0, 0.55) == pytest.approx(0.1)
    assert type(generalizability_score(0.9, 0.8)) is float


def test_clipping_at_both_ends():
    assert generalizability_score(0.8, 0.95) == 1.0  # a shift cannot add power
    assert generalizability_score(0.8, 0.8) == 1.0
    assert generalizability_score(0.8, 0.5) == 0.0
    assert generalizability_score(0.8, 0.2) == 0.0  # below chance: nothing kept


def test_undefined_is_nan_with_one_warning():
    for standard in (0.5, 0.3):
        with pytest.warns(GeneralizabilityWarning, match="undefined"):
            assert math.isnan(generalizability_score(standard, 0.9))
    assert issubclass(GeneralizabilityWarning, RuntimeWarning)


def test_vectorised_matches_elementwise():
    standard = np.array([0.9, 0.74, 0.5, 0.95, 1.0])
    shifted = np.array([0.8, 0.62, 0.9, 0.4, 0.55])
    with pytest.warns(GeneralizabilityWarning, match="1 entry"):
        gs = generalizability_score(standard, shifted)
    np.testing.assert_allclose(gs, [0.75, 0.5, np.nan, 0.0, 0.1], equal_nan=True)
    assert gs.dtype == np.float64 and gs.shape == (5,)
    # broadcasting: one standard AUROC against a (2, 2) grid of shifted ones
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # all standard AUROCs > 0.5: no warning
        grid = generalizability_score(0.9, [[0.9, 0.7], [0.5, 0.8]])
    np.testing.assert_allclose(grid, [[1.0, 0.5], [0.0, 0.75]])


def test_missing_policy():
    with pytest.raises(MetricError, match=r"\[0, 1\]"):
        generalizability_score(0.9, math.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # NaN inputs are not "undefined" entries: no warning
        out = generalizability_score([0.9, math.nan, 0.9], [math.nan, 0.8, 0.7], missing="propagate")
    np.testing.assert_allclose(out, [np.nan, np.nan, 0.5], equal_nan=True)
    with pytest.raises(ParamError, match="missing"):
        generalizability_score(0.9, 0.8, missing="ignore")


def test_bad_values():
    with pytest.raises(MetricError, match=r"\[0, 1\]"):
        generalizability_score(1.2, 0.8)
    with pytest.raises(MetricError, match=r"\[0, 1\]"):
        generalizability_score(0.9, -0.1)
    with pytest.raises(MetricError, match="broadcast"):
        generalizability_score([0.9, 0.8], [0.7, 0.6, 0.5])
    with pytest.raises(MetricError):
        generalizability_score("high", 0.7)


def test_pluggable_definitions():
    names = [d.name for d in list_gs_definitions()]
    assert names[0] == DEFAULT_GS_DEFINITION and "ratio" in names
    # registered name: 0.72 / 0.9 = 0.8
    assert generalizability_score(0.9, 0.72, definition="ratio") == pytest.approx(0.8)
    # callable: AUROC drop
    drop = generalizability_score([0.9, 0.8], [0.7, 0.8], definition=lambda std, sh: std - sh)
    np.testing.assert_allclose(drop, [0.2, 0.0])
    # the "no power to keep" rule applies to every definition
    with pytest.warns(GeneralizabilityWarning):
        assert math.isnan(generalizability_score(0.45, 0.7, definition="ratio"))
    with pytest.raises(ParamError, match="unknown GS definition"):
        generalizability_score(0.9, 0.8, definition="nope")
    with pytest.raises(ParamError, match="already registered"):
        register_gs_definition("ratio", lambda a, b: a)
    with pytest.raises(MetricError, match="shape"):
        generalizability_score([0.9, 0.8], [0.7, 0.7], definition=lambda std, sh: std.sum())



"""Fixtures shared by several test files."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def digits():
    """The small real classifier of tests/helpers.py ``digits_posthoc`` (features, head, labels)."""
    from helpers import digits_posthoc

    return digits_posthoc()

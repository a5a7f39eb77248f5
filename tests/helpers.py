"""Shared test helpers: where ../shared is, and the ADB-dev split computed independently.

``adb_dev`` rebuilds the protocol's split with scikit-learn directly (not through
oddkit.data), so tests that use it also check oddkit against an independent oracle.
"""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path

import numpy as np
import pytest
from sklearn.model_selection import train_test_split

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
ADB = SHARED / "data" / "adbench" / "classical"
HAS_PYOD = importlib.util.find_spec("pyod") is not None
needs_pyod = pytest.mark.skipif(not HAS_PYOD, reason="pyod is not installed (pip install oddkit[pyod])")


@functools.lru_cache(maxsize=None)
def _split(name: str, seed: int):
    path = ADB / f"{name}.npz"
    if not path.is_file():
        return None
    with np.load(path) as npz:
        X, y = npz["X"].astype(np.float64), npz["y"].astype(int)
    if X.shape[0] > 10_000:
        X, _, y, _ = train_test_split(X, y, train_size=10_000, stratify=y, random_state=0)
    Xtr, Xte, _, yte = train_test_split(X, y, test_size=0.3, stratify=y, random_state=seed)
    return Xtr, Xte, yte


def adb_dev(name: str, seed: int = 0):
    """(X_train, X_test, y_test) of one ADBench set under ADB-dev; skips without ../shared."""
    out = _split(name, seed)
    if out is None:
        pytest.skip(f"{ADB / (name + '.npz')} is absent (../shared is not on this machine)")
    return out

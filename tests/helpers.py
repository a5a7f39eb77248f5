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


# --------------------------------------------------------------------------- post-hoc OOD
@functools.lru_cache(maxsize=None)
def digits_posthoc():
    """A small real classifier for the post-hoc detectors, trained here in a second.

    scikit-learn's bundled handwritten digits (8x8, real scans): classes 0-4 are in
    distribution, 5-9 are OOD. An ``MLPClassifier`` with one ReLU hidden layer of 64
    units is trained on half of the ID images; its hidden activations are the
    "penultimate features" (non-negative, as after a CNN's last ReLU) and its output
    layer is the head. Returns a dict with ``Ftr, ytr`` (ID train features and labels),
    ``Fid`` (ID test features), ``Food`` (OOD features), ``W, b`` and ``head`` (W is
    (5, 64)), ``X`` / ``test`` (ID test then OOD rows), ``y`` / ``is_ood`` (1 = OOD)
    and ``acc`` (ID test accuracy).
    """
    import warnings

    from sklearn.datasets import load_digits
    from sklearn.neural_network import MLPClassifier

    X, y = load_digits(return_X_y=True)
    X = X / 16.0
    idd = y < 5
    rng = np.random.RandomState(0)
    order = rng.permutation(np.flatnonzero(idd))
    tr, te = order[: order.size // 2], order[order.size // 2 :]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mlp = MLPClassifier(hidden_layer_sizes=(64,), max_iter=300, random_state=0).fit(X[tr], y[tr])

    def feats(A):
        return np.maximum(A @ mlp.coefs_[0] + mlp.intercepts_[0], 0.0)

    Fid, Food = feats(X[te]), feats(X[~idd])
    test = np.concatenate([Fid, Food])
    is_ood = np.r_[np.zeros(len(Fid), int), np.ones(len(Food), int)]
    W, b = mlp.coefs_[1].T.copy(), mlp.intercepts_[1].copy()
    return {
        "Ftr": feats(X[tr]),
        "ytr": y[tr],
        "Fid": Fid,
        "Food": Food,
        "W": W,
        "b": b,
        "head": (W, b),
        "X": test,  # ID test rows, then OOD rows (also under "test")
        "y": is_ood,  # 1 = OOD (also under "is_ood")
        "test": test,
        "is_ood": is_ood,
        "acc": float((mlp.predict(X[te]) == y[te]).mean()),
    }


def pytorch_ood_detector(module: str):
    """A module of pytorch-ood 0.4.0's ``detector`` package, e.g. ``"energy"``, or a skip.

    pytorch-ood's top-level ``__init__`` imports its dataset and model packages, which
    need torchvision; its detectors do not. torchvision does not install beside the CPU
    torch used here, so the detector modules are loaded without running the package
    ``__init__`` files (``pip install --no-deps pytorch-ood==0.4.0``; .ci/run does this).
    """
    import importlib
    import sys
    import types

    if "pytorch_ood.detector" in sys.modules:  # the skeleton packages are in place already
        return importlib.import_module(f"pytorch_ood.detector.{module}")
    if importlib.util.find_spec("torch") is None:
        pytest.skip("torch is not installed (pip install oddkit[vision])")
    spec = importlib.util.find_spec("pytorch_ood")
    if spec is None or spec.origin is None:
        pytest.skip("pytorch-ood is not installed (pip install --no-deps pytorch-ood==0.4.0)")
    root = Path(spec.origin).parent
    for name, path in (("pytorch_ood", root), ("pytorch_ood.detector", root / "detector")):
        if name not in sys.modules:
            pkg = types.ModuleType(name)
            pkg.__path__ = [str(path)]
            sys.modules[name] = pkg
    return importlib.import_module(f"pytorch_ood.detector.{module}")


def fit_posthoc(name: str, d: dict, **params):
    """``create(name, **params)`` fitted on ``digits_posthoc()``'s training features and head."""
    from oddkit import detectors

    return detectors.create(name, **params).fit(d["Ftr"], head=d["head"])


def fit_both_precisions(name: str, d: dict, **params):
    """The same detector fitted on ``digits_posthoc()``'s float32-rounded training features,
    once given as float32 (products in float32) and once as float64; labels where it takes them."""
    from oddkit import detectors

    Ftr32 = d["Ftr"].astype(np.float32)
    fitted = []
    for X in (Ftr32, Ftr32.astype(np.float64)):
        det = detectors.create(name, **params)
        y = d["ytr"] if "labels" in det.inputs else None
        fitted.append(det.fit(X, y, head=d["head"]))
    return tuple(fitted)

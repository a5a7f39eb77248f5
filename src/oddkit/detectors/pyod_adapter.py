"""PyOD's long tail of tabular detectors behind the oddkit contract.

PyOD (Zhao et al., JMLR 2019) is an optional dependency: ``pip install "oddkit[pyod]"``.
This module never imports it at import time; the first :class:`PyODAdapter` built does,
and a missing PyOD raises :class:`MissingDependencyError` naming the install command.

What the adapter adds to a plain PyOD model:

* **Batch independence.** Some PyOD models score a batch *together*: their
  ``decision_function(X)`` result for one row depends on the other rows of ``X``. In
  PyOD 3.6.7 these are (from reading the source, confirmed by scoring rows alone and in
  batches; ``tests/test_pyod_adapter.py`` re-checks it):

  - models that append the scored batch to the stored training rows and re-estimate on
    the union (:data:`APPENDS_BATCH_TO_TRAIN`: ECOD, COPOD, RGraph). The adapter scores
    each row alone, which is exactly "this row added to the training data";
  - models that compute on the scored batch only and ignore the training rows at score
    time (:data:`SCORES_WITHIN_BATCH`: CD, COF, LMDD, LOCI, ROD, SOD, SOS). Alone, one row
    has no neighbours; the adapter scores each row as the last row of
    ``vstack(train, row)`` (the same "row added to the training data" meaning).

  For these models scoring cannot be vectorised: each test row costs one PyOD call on
  ``n_train + 1`` rows (ECOD/COPOD ``O(n_train d)``, SOS/LOCI/COF at least
  ``O(n_train^2 d)``) per row. Use oddkit's own ECOD/COPOD for speed. Deep models
  (AutoEncoder, VAE, DeepSVDD, ...) score with training statistics and are inductive
  by their source; they need ``torch`` and were not run here.

* **Persistence without pickle.** The training matrix is kept as the fitted array
  ``train_`` and loading a saved adapter **refits** the PyOD model on it with the stored
  seed ``seed_`` (drawn at fit time when ``random_state`` is None), so a loaded adapter
  scores exactly as the saved one for every PyOD model that takes ``random_state`` or is
  deterministic. The cost is a refit at load time and ``train_`` on disk.
"""

from __future__ import annotations

import difflib
import functools
import importlib
import inspect
import json
import re
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError, MissingDependencyError, OddkitError, ParamError
from .base import Detector, check_random_state, register

INSTALL_HINT = 'pip install "oddkit[pyod]"'

#: PyOD class name -> module in ``pyod.models`` for the common tabular models.
KNOWN_MODELS: dict[str, str] = {
    "ABOD": "abod",
    "AutoEncoder": "auto_encoder",
    "CBLOF": "cblof",
    "CD": "cd",
    "COF": "cof",
    "COPOD": "copod",
    "DeepSVDD": "deep_svdd",
    "DIF": "dif",
    "ECOD": "ecod",
    "FeatureBagging": "feature_bagging",
    "GMM": "gmm",
    "HBOS": "hbos",
    "HDBSCAN": "hdbscan",
    "IForest": "iforest",
    "INNE": "inne",
    "KDE": "kde",
    "KNN": "knn",
    "KPCA": "kpca",
    "LMDD": "lmdd",
    "LOCI": "loci",
    "LODA": "loda",
    "LOF": "lof",
    "LUNAR": "lunar",
    "MAD": "mad",
    "MCD": "mcd",
    "OCSVM": "ocsvm",
    "PCA": "pca",
    "QMCD": "qmcd",
    "RGraph": "rgraph",
    "ROD": "rod",
    "Sampling": "sampling",
    "SOD": "sod",
    "SOS": "sos",
    "VAE": "vae",
}

#: PyOD 3.6.7 models whose ``decision_function`` appends the batch to the training rows.
APPENDS_BATCH_TO_TRAIN = frozenset({"ECOD", "COPOD", "RGraph"})
#: PyOD 3.6.7 models whose ``decision_function`` works on the scored batch alone.
SCORES_WITHIN_BATCH = frozenset({"CD", "COF", "LMDD", "LOCI", "ROD", "SOD", "SOS"})

#: Models the adapter refuses, with the reason.
UNSUPPORTED: dict[str, str] = {
    "XGBOD": "it is supervised (needs anomaly labels at fit time)",
    "DevNet": "it is semi-supervised (needs anomaly labels at fit time)",
    "LSCP": "it needs a list of fitted detector objects, which cannot be saved as JSON",
    "SUOD": "it needs a list of detector objects, which cannot be saved as JSON",
}

# pyod.models modules that hold no stand-alone tabular detector.
_SKIP_MODULE = re.compile(r"^(_|ts_|pyg_|base|sklearn_base$|thresholds$|combination$|gaal_base$)")
_CLASS_DEF = re.compile(r"^class\s+([A-Za-z]\w*)\s*\(([^)]*)\)\s*:", re.MULTILINE)


# --------------------------------------------------------------------------- the adapter
@register
class PyODAdapter(Detector):
    """Any PyOD tabular detector (``model="IForest"``, ``"KNN"``, ...) behind the oddkit contract.

    Fits ``pyod.models.<module>.<model>(**params)`` on the training rows and scores with
    its ``decision_function`` (PyOD's convention is already higher = more anomalous).
    ``model`` is a PyOD class name (case-insensitive), resolved lazily: the common ones
    through :data:`KNOWN_MODELS`, any other by searching the ``pyod.models`` sources; an
    unknown name raises :class:`ParamError` with close matches. ``params`` are the PyOD
    constructor arguments (JSON data only, checked against the class signature and by
    building the model); ``random_state`` is passed on when the class takes one.

    Reference: Zhao, Nasrullah and Li, "PyOD: A Python Toolbox for Scalable Outlier
    Detection", JMLR 20(96), 2019. Defaults: PyOD's own for every model's parameters;
    the default ``model="IForest"`` is oddkit's choice (fast, randomised, a robust
    baseline on tabular data).

    Deliberate differences from calling PyOD directly (see the module docstring):
    transductive models (:data:`APPENDS_BATCH_TO_TRAIN`, :data:`SCORES_WITHIN_BATCH`) are
    scored one row at a time so scores never depend on the other test rows (slow: one
    PyOD call on ``n_train + 1`` rows per test row; LOCI and SOS are then impractical
    beyond a few hundred training rows); ``contamination`` only affects PyOD's own
    labels, which oddkit ignores (use :meth:`calibrate`). Saving keeps the training matrix ``train_`` and loading
    refits on it with the stored seed (``seed_``). Constant training columns are passed
    to PyOD unchanged; a model that then returns NaN/inf scores raises a clear
    :class:`OddkitError` instead of a silent wrong score. ``min_fit_rows`` is
    ``n_neighbors + 1`` when the model has neighbours, else 2.
    """

    name = "pyod"
    family = "adapter"
    inputs = ("features",)
    reference = "Zhao et al., PyOD: A Python Toolbox for Scalable Outlier Detection, JMLR 2019"
    randomized = True

    def __init__(
        self,
        model: str = "IForest",
        params: dict[str, Any] | None = None,
        random_state: int | None = None,
    ) -> None:
        self.model = model
        self.params = params
        self.random_state = random_state
        self._check_params()

    # ------------------------------------------------------------- params
    def _check_params(self) -> None:
        if not isinstance(self.model, str) or not self.model.strip():
            raise ParamError(
                f"model must be a PyOD class name such as 'IForest', got {self.model!r}."
            )
        _check_json_params(self.params)
        self.random_state = check_random_state(self.random_state)
        if self.params and "random_state" in self.params:
            raise ParamError(
                "pass the seed as PyODAdapter(random_state=...), not inside params; the "
                "adapter hands it to the PyOD model."
            )
        self._model_cls = resolve_model(self.model)
        self._takes_seed = "random_state" in _init_parameters(self._model_cls)
        self._check_against_signature()
        self._build(seed=0)  # lets PyOD's constructor validate the values now

    def _check_against_signature(self) -> None:
        accepted = _init_parameters(self._model_cls)
        given = dict(self.params or {})
        unknown = sorted(set(given) - set(accepted))
        if unknown:
            raise ParamError(
                f"PyOD's {self._model_cls.__name__} has no parameter(s) {unknown}; valid: "
                f"{sorted(accepted)}."
            )
        missing = [
            n for n, p in accepted.items()
            if p.default is inspect.Parameter.empty and n not in given and n != "random_state"
        ]
        if missing:
            raise ParamError(
                f"PyOD's {self._model_cls.__name__} needs parameter(s) {missing} in params."
            )

    def _effective_params(self) -> dict[str, Any]:
        """PyOD's defaults overlaid with ``params``."""
        out = {
            n: p.default
            for n, p in _init_parameters(self._model_cls).items()
            if p.default is not inspect.Parameter.empty
        }
        out.update(self.params or {})
        return out

    def _build(self, seed: int) -> Any:
        kwargs = dict(self.params or {})
        if self._takes_seed:
            kwargs["random_state"] = seed
        try:
            return self._model_cls(**kwargs)
        except Exception as exc:
            raise ParamError(
                f"PyOD's {self._model_cls.__name__} rejected params {self.params!r}: "
                f"{type(exc).__name__}: {exc}"
            ) from exc

    def min_fit_rows(self) -> int:
        params = self._effective_params()
        for key in ("n_neighbors", "n_neighbours"):
            k = params.get(key)
            if isinstance(k, int) and not isinstance(k, bool):
                return max(2, k + 1)
        return 2

    # ------------------------------------------------------------- fit / score
    def _fit(self, X: np.ndarray, y: np.ndarray | None = None, **context: Any) -> None:
        self.train_ = np.array(X, dtype=np.float64, copy=True)
        if self.random_state is not None:
            self.seed_ = int(self.random_state)
        else:
            self.seed_ = int(np.random.SeedSequence().generate_state(1)[0])
        self._pyod = self._fit_pyod()

    def _fit_pyod(self) -> Any:
        model = self._build(self.seed_)
        try:
            model.fit(self.train_.copy())
        except Exception as exc:
            n, d = self.train_.shape
            raise InputError(
                f"PyOD's {self._model_cls.__name__} could not be fitted on {n} rows x {d} "
                f"features: {type(exc).__name__}: {exc}"
            ) from exc
        return model

    def _score(self, X: np.ndarray) -> np.ndarray:
        name = self._model_cls.__name__
        if name in APPENDS_BATCH_TO_TRAIN:
            scores = [self._decide(X[i : i + 1]) for i in range(X.shape[0])]
        elif name in SCORES_WITHIN_BATCH:
            scores = [
                self._decide(np.vstack([self.train_, X[i : i + 1]]))[-1:]
                for i in range(X.shape[0])
            ]
        else:
            scores = [self._decide(X)]
        out = np.concatenate(scores).astype(np.float64, copy=False)
        if not np.isfinite(out).all():
            bad = int((~np.isfinite(out)).sum())
            raise OddkitError(
                f"PyOD's {name} returned {bad} NaN/inf score(s) out of {out.size}. This is a "
                "limit of that PyOD model on this data (often constant or near-constant "
                "columns); drop such columns or use another model."
            )
        return out

    def _decide(self, X: np.ndarray) -> np.ndarray:
        scores = self._pyod.decision_function(X.copy())
        return np.asarray(scores, dtype=np.float64).reshape(-1)

    # ------------------------------------------------------------- persistence
    def _set_state(self, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        """Restore ``train_`` / ``seed_`` and refit the PyOD model on them (no pickle)."""
        super()._set_state(meta, arrays)
        self.train_ = np.asarray(self.train_, dtype=np.float64)
        self.seed_ = int(self.seed_)
        self._pyod = self._fit_pyod()


# --------------------------------------------------------------------------- resolving names
def require_pyod() -> Any:
    """Import PyOD or raise :class:`MissingDependencyError` saying how to install it."""
    try:
        return importlib.import_module("pyod")
    except ImportError as exc:
        raise MissingDependencyError(
            f"the 'pyod' detector needs PyOD, which is not installed ({exc}). Install it with "
            f"{INSTALL_HINT}, or use oddkit's own detectors (oddkit.detectors.list_detectors())."
        ) from exc


def resolve_model(name: str) -> type:
    """The PyOD detector class called ``name`` (case-insensitive)."""
    require_pyod()
    table = _model_table()
    canonical = {k.lower(): k for k in table}.get(name.strip().lower())
    if canonical is None:
        close = difflib.get_close_matches(name.strip(), sorted(table), n=5, cutoff=0.5)
        close += [k for k in sorted(table) if name.strip().lower() in k.lower() and k not in close]
        hint = f" Did you mean {close}?" if close else ""
        raise ParamError(
            f"PyOD has no model named {name!r}.{hint} Known models: {sorted(KNOWN_MODELS)}."
        )
    if canonical in UNSUPPORTED:
        raise ParamError(
            f"PyOD's {canonical} is not supported by the adapter: {UNSUPPORTED[canonical]}."
        )
    module = f"pyod.models.{table[canonical]}"
    try:
        cls = getattr(importlib.import_module(module), canonical)
    except ImportError as exc:
        raise MissingDependencyError(
            f"PyOD's {canonical} needs a package that is not installed ({exc}). Install it "
            "(e.g. pip install torch for PyOD's deep models) or pick another model."
        ) from exc
    from pyod.models.base import BaseDetector

    if not (isinstance(cls, type) and issubclass(cls, BaseDetector)):
        raise ParamError(f"{module}.{canonical} is not a PyOD detector.")
    return cls


def _model_table() -> dict[str, str]:
    """Every detector-looking class in ``pyod.models`` (from the sources) plus the known ones."""
    pyod = require_pyod()
    return {**_scan_sources(str(Path(pyod.__file__).parent / "models")), **KNOWN_MODELS}


@functools.lru_cache(maxsize=4)
def _scan_sources(models_dir: str) -> dict[str, str]:
    """Detector class name -> module, read from the source text without importing anything.

    A detector class is one whose bases name a ``...Detector`` (PyOD's ``BaseDetector``,
    ``BaseDeepLearningDetector``); the abstract ``Base...`` classes are left out.
    """
    found: dict[str, str] = {}
    for path in sorted(Path(models_dir).glob("*.py")):
        if _SKIP_MODULE.match(path.stem):
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        for cls_name, bases in _CLASS_DEF.findall(text):
            if "Detector" in bases and not cls_name.startswith("Base"):
                found.setdefault(cls_name, path.stem)
    return found


def _init_parameters(cls: type) -> dict[str, inspect.Parameter]:
    params = inspect.signature(cls.__init__).parameters
    return {
        n: p for n, p in params.items()
        if n != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    }


def _check_json_params(params: Any) -> None:
    if params is None:
        return
    if not isinstance(params, dict) or not all(isinstance(k, str) for k in params):
        raise ParamError(f"params must be None or a dict with string keys, got {params!r}.")
    try:
        same = json.loads(json.dumps(params, allow_nan=False)) == params
    except (TypeError, ValueError):
        same = False
    if not same:
        raise ParamError(
            f"params must be plain JSON data (str, number, bool, None, list, dict) so that a "
            f"saved detector can be read back exactly; got {params!r}."
        )

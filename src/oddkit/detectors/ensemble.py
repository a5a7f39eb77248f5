"""Ensembles: several detectors, their scores put on one scale and averaged.

Scores of different detectors live on different scales (a distance, a -log probability,
a path-length ratio), so each member's test score is first standardised with statistics
of that member's scores on the *training* data, which keeps the ensemble inductive and
batch-independent: a test row's score depends only on that row and the fitted state.
This is the classical "score normalisation + average" combination studied by Aggarwal &
Sathe (Theoretical Foundations and Algorithms for Outlier Ensembles, SIGKDD Explorations
2015) and used by PyOD's ``combination`` utilities, applied here inductively.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from ..errors import ParamError, PersistenceError
from .base import Detector, check_choice, check_int, check_random_state, create, get, register

#: The recommended default: see docs/benchmarks.md for the ADB-dev measurements behind it.
DEFAULT_MEMBERS: tuple[dict[str, Any], ...] = (
    {"name": "iforest"},
    {"name": "knn"},
    {"name": "hbos"},
    {"name": "gaussian"},
)


def _member_specs(members: Any) -> list[dict[str, Any]]:
    """Validate ``members`` and return them as ``[{"name": str, "params": dict}, ...]``."""
    if members is None:
        members = DEFAULT_MEMBERS
    if isinstance(members, (str, bytes)) or not hasattr(members, "__iter__"):
        raise ParamError("members must be a list of detector names or {'name', 'params'} dicts.")
    specs = []
    for m in members:
        if isinstance(m, str):
            spec = {"name": m, "params": {}}
        elif isinstance(m, dict) and isinstance(m.get("name"), str):
            extra = set(m) - {"name", "params"}
            if extra:
                raise ParamError(f"member spec {m!r} has unknown keys {sorted(extra)}.")
            spec = {"name": m["name"], "params": dict(m.get("params") or {})}
        else:
            raise ParamError(f"member {m!r} must be a detector name or a {{'name', 'params'}} dict.")
        if spec["name"] == Ensemble.name:
            raise ParamError("an ensemble cannot contain another ensemble.")
        get(spec["name"])  # raises UnknownDetectorError listing the available names
        specs.append(spec)
    if not specs:
        raise ParamError("members must name at least one detector.")
    return specs


@register
class Ensemble(Detector):
    """Average of standardised member scores; oddkit's recommended default detector.

    Each member is fitted on the same training data. Its training-data scores give a
    location and a scale (``normalization="zscore"``: mean and standard deviation;
    ``"robust"``: median and 1.4826 x median absolute deviation), which standardise its
    test scores; the ensemble score is the mean (or max) of the standardised scores.
    A member whose training scores are constant gets scale 1.

    The default members (Isolation Forest, kNN, HBOS and a Gaussian with Ledoit-Wolf
    shrinkage: one detector from each of four families, which fail in different places)
    were chosen on ADB-dev among all subsets of oddkit's tabular detectors; the
    measurements, and the caveat that the choice was made on the same 37 data sets, are in
    docs/benchmarks.md. ``random_state`` seeds the randomised members and the subsample.

    The standardisation statistics come from the scores of at most ``norm_rows`` training
    rows (a seeded random subset when there are more), which bounds the extra cost on very
    large training sets. Interpretation: these training scores are in-sample (a training
    row is its own nearest neighbour, for instance), so the statistics are slightly
    optimistic; they are the same for every test row, so each member's ranking is unchanged.
    """

    name = "ensemble"
    family = "ensemble"
    reference = (
        "Aggarwal & Sathe, Theoretical Foundations and Algorithms for Outlier Ensembles, "
        "SIGKDD Explorations 2015"
    )
    randomized = True

    def __init__(
        self,
        members: list[Any] | None = None,
        normalization: str = "zscore",
        combination: str = "mean",
        norm_rows: int = 20000,
        random_state: int | None = None,
    ) -> None:
        self.members = members
        self.normalization = normalization
        self.combination = combination
        self.norm_rows = norm_rows
        self.random_state = random_state
        self._check_params()

    def _check_params(self) -> None:
        _member_specs(self.members)
        check_choice("normalization", self.normalization, ("zscore", "robust"))
        check_choice("combination", self.combination, ("mean", "max"))
        check_int("norm_rows", self.norm_rows, low=2)
        check_random_state(self.random_state)

    def _build_members(self) -> list[Detector]:
        dets = []
        for spec in _member_specs(self.members):
            params = dict(spec["params"])
            if get(spec["name"]).randomized and "random_state" not in params:
                params["random_state"] = self.random_state
            dets.append(create(spec["name"], **params))
        return dets

    def min_fit_rows(self) -> int:
        return max(2, *(d.min_fit_rows() for d in self._build_members()))

    def _fit(self, X: np.ndarray, y: np.ndarray | None, **context: Any) -> None:
        self._members = [d.fit(X) for d in self._build_members()]
        if X.shape[0] > self.norm_rows:
            rng = np.random.RandomState(self.random_state)
            X = X[np.sort(rng.choice(X.shape[0], self.norm_rows, replace=False))]
        loc, scale = [], []
        for det in self._members:
            s = det.score(X)
            if self.normalization == "zscore":
                c, w = s.mean(), s.std()
            else:
                c = np.median(s)
                w = 1.4826 * np.median(np.abs(s - c))
            loc.append(c)
            scale.append(w if w > 1e-12 * max(1.0, abs(c)) else 1.0)
        self.loc_ = np.asarray(loc, dtype=np.float64)
        self.scale_ = np.asarray(scale, dtype=np.float64)

    def _score(self, X: np.ndarray) -> np.ndarray:
        Z = np.column_stack([det.score(X) for det in self._members])
        Z = (Z - self.loc_) / self.scale_
        return Z.mean(axis=1) if self.combination == "mean" else Z.max(axis=1)

    def _clear_fitted(self) -> None:
        super()._clear_fitted()
        self.__dict__.pop("_members", None)

    # Members are detectors: save each one's state under a prefix.
    def _get_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        meta, arrays = super()._get_state()
        meta["member_states"] = []
        for i, det in enumerate(self._members):
            m_meta, m_arrays = det._get_state()
            meta["member_states"].append(m_meta)
            arrays.update({f"member{i}__{k}": v for k, v in m_arrays.items()})
        return meta, arrays

    def _set_state(self, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        meta = dict(meta)
        member_states = meta.pop("member_states", None)
        own = {k: v for k, v in arrays.items() if not k.startswith("member")}
        super()._set_state(meta, own)
        dets = self._build_members()
        if member_states is None or len(member_states) != len(dets):
            raise PersistenceError(
                "saved ensemble state does not match its members: "
                + json.dumps(_member_specs(self.members))
            )
        for i, (det, m_meta) in enumerate(zip(dets, member_states)):
            prefix = f"member{i}__"
            m_arrays = {k[len(prefix) :]: v for k, v in arrays.items() if k.startswith(prefix)}
            det._set_state(m_meta, m_arrays)
            det._fitted = True
        self._members = dets

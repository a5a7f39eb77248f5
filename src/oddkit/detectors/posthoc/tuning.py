"""Hyperparameter tuning for post-hoc OOD detectors on validation data only (OpenOOD v1.5 style).

OpenOOD v1.5 gives every postprocessor a small sweep grid; each grid point is scored on
the ID *validation* split against an OOD *validation* set that shares nothing with the
test OOD sets, the point with the best AUROC is kept, and only then is the detector run
on the test sets. :func:`tune` does the same for any registered oddkit detector::

    from oddkit.detectors.posthoc.tuning import split_id_validation, tune

    split = split_id_validation(F_train, y_train, fraction=0.1, seed=0)
    result = tune("react", split.X_fit, split.y_fit, (W, b), split.X_val,
                  {"jigsaw": F_jigsaw, "smooth_noise": F_smooth},
                  test_sets={"id_test": F_test, "mnist": F_mnist})
    result.params                                    # {'percentile': 95.0}
    det = result.fit_best(F_train, y_train, head=(W, b))   # refit on all the fit data

Rules :func:`tune` enforces:

* Validation data never overlaps test data: every validation array (``id_val`` and each
  ``ood_val`` set) is compared row by row with every array passed as ``test_sets=``; one
  shared row (or the same array) is an :class:`~oddkit.errors.InputError`. Rows are
  compared through a 64-bit hash of their float64 bytes (:func:`row_hashes`, vectorised),
  and every hash match is confirmed by comparing the rows exactly.
* ID validation rows are held out of the fit rows: pass ``holdout=fraction`` (the fit
  data is split by :func:`split_id_validation`, stratified by class) or an ``id_val``
  that shares no row with ``X_fit`` (checked the same way). OOD validation rows must not
  appear among the ID fit or ID validation rows either.
* Grid keys must be parameters of the detector, and every grid point must construct
  (:class:`~oddkit.errors.ParamError`, naming the valid parameters or the bad value),
  before anything is fitted.
* A grid point whose fit or scoring fails with a ``ParamError`` / ``InputError`` (a
  ViM ``dim`` not below the feature width, a ``k`` larger than the fit set, ...) is kept
  in the table with its error and never chosen; only when every point fails does
  :func:`tune` raise. Other exceptions are bugs and propagate.
* The metric of a grid point is computed per OOD validation set and averaged
  (``aggregate="mean"``, as protocols.md averages over sets), or on all OOD validation
  rows pooled into one set (``aggregate="pooled"``, as OpenOOD's single validation
  loader does). Ties: the FIRST grid point with the best value wins (a later point must
  be strictly better, as in OpenOOD's search); grid points are enumerated as
  :func:`itertools.product` of the grid's lists in key order (first key slowest).

:data:`DEFAULT_GRIDS` holds a grid for every post-hoc method with a hyperparameter worth
sweeping, each with its source; every grid contains the method's default configuration,
so tuning can always fall back to it. :data:`NOT_SWEPT` says why the other
hyperparameters of the post-hoc family are left at their defaults.
"""

from __future__ import annotations

import itertools
import json
import math
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ...errors import InputError, ParamError, one_line
from ...metrics import aupr_in, aupr_out, auroc, fpr_at_tpr
from ..base import (
    Detector,
    as_matrix,
    check_choice,
    check_float,
    check_int,
    create,
    get,
)
from .base import as_head

__all__ = [
    "DEFAULT_GRIDS",
    "METRICS",
    "NOT_SWEPT",
    "GridPoint",
    "IDSplit",
    "TuningResult",
    "expand_grid",
    "row_hashes",
    "shared_rows",
    "split_id_validation",
    "tune",
]

_PERCENTILES_65_95 = [65.0, 70.0, 75.0, 80.0, 85.0, 90.0, 95.0]

#: Sweep grids per detector. Sources (OpenOOD v1.5 = ``configs/postprocessors/<name>.yml``,
#: ``postprocessor_sweep``, of Jingkang50/OpenOOD; "+ default" = the detector's own default
#: added so that the grid contains it):
#:
#: * ``energy.temperature``: OpenOOD v1.5 ``ebo.yml`` ``[1, 10, 100, 1000]``.
#: * ``gen.gamma`` x ``gen.M``: OpenOOD v1.5 ``gen.yml`` ``[0.01, 0.1, 0.5, 1, 2, 5, 10]`` x
#:   ``[10, 50, 100, 200, 500, 1000]`` (every ``M >= n_classes`` is the same score, so with
#:   10 classes the ties resolve to ``M=10``).
#: * ``react.percentile``: OpenOOD v1.5 ``react.yml`` ``[85, 90, 95, 99]``.
#: * ``ash_p`` / ``ash_b`` / ``ash_s`` / ``scale`` ``percentile``: OpenOOD v1.5 ``ash.yml`` and
#:   ``scale.yml`` ``[65, 70, ..., 95]``; + default 60 for ASH-P.
#: * ``dice.percentile``: OpenOOD's own ``dice.yml`` does not sweep (``p_list: [90]``);
#:   OpenMIBOOD (an OpenOOD v1.5 derivative) sweeps 60-95. Interpretation: 50-90 in steps
#:   of 10 and 95, plus 10 and 30, because a 64-unit CIFAR ResNet head has far fewer
#:   weights than the paper's DenseNet and may need less sparsity.
#: * ``knn_ood.k``: OpenOOD v1.5 ``knn.yml`` ``[50, 100, 200, 500, 1000]`` (as copied by
#:   OpenOOD-based repositories; an older upstream version sweeps only ``[50]``), plus 1,
#:   10, 20 for small fit sets; 50 is the paper's CIFAR-10 setting.
#: * ``vim.dim`` / ``residual.dim``: OpenOOD v1.5 ``vim.yml`` ``[256, 1000]`` (for 512-d and
#:   2048-d backbones) + default (None: the paper's width rule) + 8, 16, 32, 48, 128, 512,
#:   so that narrow backbones (64-d CIFAR ResNets) have candidates; dims not below the
#:   feature width fail at fit and are recorded as failed points.
#: * ``neco.dim``: the NECO authors' OpenOOD config ``[50, 100, 150, 200]`` + default (None:
#:   the number of classes) + 5, 8, 16, 32 for narrow backbones (same failure rule).
DEFAULT_GRIDS: dict[str, dict[str, list[Any]]] = {
    "energy": {"temperature": [1.0, 10.0, 100.0, 1000.0]},
    "gen": {"gamma": [0.01, 0.1, 0.5, 1.0, 2.0, 5.0, 10.0], "M": [10, 50, 100, 200, 500, 1000]},
    "react": {"percentile": [85.0, 90.0, 95.0, 99.0]},
    "ash_p": {"percentile": [60.0, *_PERCENTILES_65_95]},
    "ash_b": {"percentile": list(_PERCENTILES_65_95)},
    "ash_s": {"percentile": list(_PERCENTILES_65_95)},
    "scale": {"percentile": list(_PERCENTILES_65_95)},
    "dice": {"percentile": [10.0, 30.0, 50.0, 60.0, 70.0, 80.0, 90.0, 95.0]},
    "knn_ood": {"k": [1, 10, 20, 50, 100, 200, 500, 1000]},
    "vim": {"dim": [None, 8, 16, 32, 48, 128, 256, 512, 1000]},
    "residual": {"dim": [None, 8, 16, 32, 48, 128, 256, 512, 1000]},
    "neco": {"dim": [None, 5, 8, 16, 32, 50, 100, 150, 200]},
}

#: Post-hoc hyperparameters deliberately not swept, and why.
NOT_SWEPT: dict[str, str] = {
    "gradnorm.temperature": "OpenOOD v1.5 gradnorm.yml has no sweep; the paper finds T=1 best.",
    "neco.maxlogit": "a backbone choice in the paper (True for ViT/Swin/DeiT, False for ResNets), not tuned.",
    "knn_ood.index": "the search structure (exact 'flat' or approximate 'hnsw'), not a method parameter.",
}

#: metric name -> (function of (y_true, scores), True when higher is better).
METRICS: dict[str, tuple[Callable[[np.ndarray, np.ndarray], float], bool]] = {
    "auroc": (auroc, True),
    "aupr_in": (aupr_in, True),
    "aupr_out": (aupr_out, True),
    "fpr95": (fpr_at_tpr, False),
}
AGGREGATES = ("mean", "pooled")
#: grids with at least this many points show a progress bar when ``progress=True``.
PROGRESS_MIN_POINTS = 10

Progress = bool | Callable[[str], None]


# --------------------------------------------------------------------------- results
@dataclass(frozen=True)
class GridPoint:
    """One row of the tuning table: a parameter setting and its validation metric.

    ``value`` is the aggregated metric (NaN when the point failed, with the message in
    ``error``); ``per_set`` the metric on each OOD validation set.
    """

    params: dict[str, Any]
    value: float
    per_set: dict[str, float] = field(default_factory=dict)
    error: str = ""
    fit_s: float = float("nan")
    score_s: float = float("nan")

    @property
    def ok(self) -> bool:
        return not self.error


@dataclass
class TuningResult:
    """What :func:`tune` chose and the whole table it chose from.

    ``params`` are the chosen parameters (only the grid's keys; the others stay at the
    detector's defaults), ``value`` their validation metric, ``best_index`` their row in
    ``table``. ``metric`` / ``aggregate`` say how rows were compared.
    """

    name: str
    params: dict[str, Any]
    metric: str
    value: float
    table: list[GridPoint]
    best_index: int
    aggregate: str = "mean"
    higher_is_better: bool = True
    n_fit: int = 0
    n_id_val: int = 0
    n_ood_val: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def spec(self) -> str:
        """The chosen configuration as a bench spec, ``"name:key=value,..."``."""
        return spec_string(self.name, self.params)

    def detector(self) -> Detector:
        """A new, unfitted detector with the chosen parameters."""
        return create(self.name, **self.params)

    def fit_best(self, X: Any, y: Any = None, head: Any = None) -> Detector:
        """The chosen detector fitted on ``X`` (typically all the fit data, validation rows included)."""
        det = self.detector()
        return det.fit(X, y if "labels" in det.inputs else None, **_context(det, head))

    def rows(self) -> list[dict[str, Any]]:
        """The table as plain dicts (``spec``, ``value``, per-set values, ``error``, ``chosen``)."""
        out = []
        for i, point in enumerate(self.table):
            row: dict[str, Any] = {"spec": spec_string(self.name, point.params), self.metric: point.value}
            row.update({f"{self.metric}/{k}": v for k, v in point.per_set.items()})
            row.update({"fit_s": point.fit_s, "score_s": point.score_s, "error": point.error,
                        "chosen": i == self.best_index})  # fmt: skip
            out.append(row)
        return out


@dataclass(frozen=True)
class IDSplit:
    """Disjoint fit / validation parts of ID data and their row indices in the original array."""

    X_fit: np.ndarray
    y_fit: np.ndarray | None
    X_val: np.ndarray
    y_val: np.ndarray | None
    fit_index: np.ndarray
    val_index: np.ndarray


# --------------------------------------------------------------------------- tuning
def tune(
    name: str,
    X_fit: Any,
    y_fit: Any,
    head: Any,
    id_val: Any,
    ood_val: Mapping[str, Any] | Any,
    grid: Mapping[str, Sequence[Any]] | None = None,
    metric: str = "auroc",
    *,
    test_sets: Mapping[str, Any] | Sequence[Any] | np.ndarray | None = None,
    holdout: float | None = None,
    seed: int = 0,
    aggregate: str = "mean",
    progress: Progress = True,
) -> TuningResult:
    """Choose the hyperparameters of detector ``name`` on validation data; see the module docstring.

    ``X_fit`` / ``y_fit``: ID training features and labels (labels go only to detectors
    that declare them; may be None otherwise). ``head``: the classifier's ``(W, b)``
    (ignored by detectors that take no head). ``id_val``: ID validation features, disjoint
    from ``X_fit``; or None with ``holdout=fraction`` to split ``X_fit`` by
    :func:`split_id_validation` (``seed``). ``ood_val``: OOD validation features, a dict
    name -> array or one array. ``grid``: dict param -> list of values (default
    :data:`DEFAULT_GRIDS` ``[name]``). ``metric``: one of :data:`METRICS`. ``test_sets``:
    arrays the validation data must not overlap (dict, sequence or one array).
    ``progress``: True shows a progress bar for grids of at least
    :data:`PROGRESS_MIN_POINTS` points; a callable receives one line per grid point.
    """
    t_start = time.perf_counter()
    cls = get(name)
    check_choice("metric", metric, tuple(METRICS))
    check_choice("aggregate", aggregate, AGGREGATES)
    points = expand_grid(name, DEFAULT_GRIDS.get(cls.name) if grid is None else grid)
    data = _prepare(cls, X_fit, y_fit, head, id_val, ood_val, test_sets, holdout, seed)
    score_fn, higher = METRICS[metric]
    table = []
    for params in _progress(points, cls.name, progress):
        table.append(_evaluate_point(cls.name, params, data, score_fn, aggregate))
    best = _best_index(table, higher)
    return TuningResult(
        name=cls.name, params=dict(table[best].params), metric=metric, value=table[best].value,
        table=table, best_index=best, aggregate=aggregate, higher_is_better=higher,
        n_fit=int(data.X_fit.shape[0]), n_id_val=int(data.id_val.shape[0]),
        n_ood_val={k: int(v.shape[0]) for k, v in data.ood_val.items()},
        seconds=time.perf_counter() - t_start,
    )  # fmt: skip


def expand_grid(name: str, grid: Mapping[str, Sequence[Any]] | None) -> list[dict[str, Any]]:
    """Every grid point of ``grid`` for detector ``name``, each checked by constructing it.

    Raises :class:`~oddkit.errors.ParamError` for a missing grid, a key that is not one of
    the detector's parameters (naming them), a value that is not a non-empty list, or a
    point the detector's constructor refuses.
    """
    cls = get(name)
    valid = cls._param_names()
    if grid is None:
        raise ParamError(
            f"no default grid for {cls.name!r} (it has no hyperparameter worth sweeping, see "
            f"NOT_SWEPT; grids exist for {sorted(DEFAULT_GRIDS)}); pass grid={{param: [values]}}."
        )
    if not isinstance(grid, Mapping) or not grid:
        raise ParamError(f"grid must be a non-empty dict param -> list of values, got {grid!r}.")
    unknown = sorted(set(grid) - set(valid))
    if unknown:
        raise ParamError(
            f"grid key(s) {unknown} are not parameters of {cls.__name__} ({cls.name!r}); its "
            f"parameters are {valid or 'none (it has no hyperparameters)'}."
        )
    for key, values in grid.items():
        if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or len(values) == 0:
            raise ParamError(f"grid[{key!r}] must be a non-empty list of values, got {values!r}.")
    keys = list(grid)
    points = [dict(zip(keys, combo)) for combo in itertools.product(*(list(grid[k]) for k in keys))]
    for params in points:
        try:
            create(cls.name, **params)
        except ParamError as exc:
            raise ParamError(f"grid point {spec_string(cls.name, params)} is invalid: {exc}") from exc
    return points


def split_id_validation(X: Any, y: Any = None, fraction: float = 0.1, seed: int = 0) -> IDSplit:
    """Split ID rows into disjoint fit and validation parts, stratified by class when ``y`` is given.

    Each class ``c`` with ``n_c`` rows gives ``fraction * n_c`` rows (rounded half to even;
    at least 1, at most ``n_c - 1``) to validation, drawn with
    ``numpy.random.default_rng(seed)``; with ``y=None`` the split is a plain random one of
    ``fraction * n`` rows (same rounding and bounds). Both parts
    keep the original row order; ``fit_index`` / ``val_index`` give the rows.
    """
    fraction = check_float("fraction", fraction, 0.0, 1.0, low_inclusive=False, high_inclusive=False)
    seed = check_int("seed", seed, low=0)
    X = as_matrix(X, "X", (np.float32, np.float64))
    n = X.shape[0]
    rng = np.random.default_rng(seed)
    if y is None:
        if n < 2:
            raise InputError("split_id_validation needs at least 2 rows.")
        n_val = min(max(1, round(fraction * n)), n - 1)
        val = np.sort(rng.permutation(n)[:n_val])
    else:
        y = np.asarray(y)
        if y.shape != (n,):
            raise InputError(f"y must have shape ({n},) to match X, got {y.shape}.")
        val = _stratified_val_rows(y, fraction, rng)
    mask = np.zeros(n, dtype=bool)
    mask[val] = True
    fit = np.flatnonzero(~mask)
    return IDSplit(
        X_fit=X[fit], y_fit=None if y is None else y[fit], X_val=X[val],
        y_val=None if y is None else y[val], fit_index=fit, val_index=val,
    )  # fmt: skip


def _stratified_val_rows(y: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    classes, inverse, counts = np.unique(y, return_inverse=True, return_counts=True)
    if counts.min() < 2:
        bad = classes[counts < 2][:5].tolist()
        raise InputError(
            f"class(es) {bad} have fewer than 2 rows; a stratified split needs at least one fit "
            "and one validation row per class. Pass y=None for an unstratified split."
        )
    n_val = np.clip(np.rint(fraction * counts).astype(np.int64), 1, counts - 1)
    # a random rank of every row within its class; the n_val lowest ranks go to validation
    order = np.lexsort((rng.random(y.size), inverse))
    start = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rank = np.empty(y.size, dtype=np.int64)
    rank[order] = np.arange(y.size) - np.repeat(start, counts)
    return np.flatnonzero(rank < n_val[inverse])


# --------------------------------------------------------------------------- row overlap
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_HASH_CHUNK_ROWS = 8192


def row_hashes(X: Any) -> np.ndarray:
    """A 64-bit hash of each row's values (``uint64``, shape ``(n,)``).

    Rows are compared as float64 (so float32 and float64 copies of the same rows hash
    alike, and ``-0.0`` as ``0.0``); each 64-bit word is mixed with its column's salt by
    the SplitMix64 finaliser and the words are summed modulo 2**64. Vectorised, in chunks
    of rows (bounded memory). Equal rows have equal hashes; use :func:`shared_rows` for
    an exact answer.
    """
    A = _as_rows(X)
    salts = _mix(np.arange(1, A.shape[1] + 1, dtype=np.uint64) * _GOLDEN)
    out = np.empty(A.shape[0], dtype=np.uint64)
    for start in range(0, A.shape[0], _HASH_CHUNK_ROWS):
        block = np.ascontiguousarray(A[start : start + _HASH_CHUNK_ROWS], dtype=np.float64) + 0.0
        out[start : start + block.shape[0]] = _mix(block.view(np.uint64) ^ salts).sum(axis=1)
    return out


def shared_rows(A: Any, B: Any) -> np.ndarray:
    """Boolean mask over the rows of ``A``: True where the row also occurs in ``B`` (exactly).

    Candidates come from :func:`row_hashes`; each is confirmed by comparing the row with
    a row of ``B`` that has the same hash. Arrays of different widths share no rows.
    """
    A, B = _as_rows(A), _as_rows(B)
    if A.shape[1] != B.shape[1]:
        return np.zeros(A.shape[0], dtype=bool)
    hA, hB = row_hashes(A), row_hashes(B)
    order = np.argsort(hB, kind="stable")
    sorted_hB = hB[order]
    pos = np.minimum(np.searchsorted(sorted_hB, hA), sorted_hB.size - 1)
    candidate = np.flatnonzero(sorted_hB[pos] == hA)
    mask = np.zeros(A.shape[0], dtype=bool)
    for start in range(0, candidate.size, _HASH_CHUNK_ROWS):
        c = candidate[start : start + _HASH_CHUNK_ROWS]
        rows_a = np.asarray(A[c], dtype=np.float64)
        rows_b = np.asarray(B[order[pos[c]]], dtype=np.float64)
        mask[c] = (rows_a == rows_b).all(axis=1)
    return mask


def _as_rows(X: Any) -> np.ndarray:
    A = np.asarray(X)
    if A.ndim == 0:
        raise InputError("row comparison needs an array with rows, got a scalar.")
    return A.reshape(A.shape[0], -1) if A.ndim != 2 else A


def _mix(x: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser on uint64 arrays (wrap-around arithmetic)."""
    x = x ^ (x >> np.uint64(30))
    x = x * np.uint64(0xBF58476D1CE4E5B9)
    x = x ^ (x >> np.uint64(27))
    x = x * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


# --------------------------------------------------------------------------- internals
@dataclass
class _Data:
    X_fit: np.ndarray
    y_fit: np.ndarray | None
    head: Any
    id_val: np.ndarray
    ood_val: dict[str, np.ndarray]


def _prepare(
    cls: type[Detector],
    X_fit: Any,
    y_fit: Any,
    head: Any,
    id_val: Any,
    ood_val: Any,
    test_sets: Any,
    holdout: float | None,
    seed: int,
) -> _Data:
    """Validate the inputs shared by every grid point; apply the holdout and overlap rules."""
    dtypes = (np.float32, np.float64)
    X_fit = as_matrix(X_fit, "X_fit", dtypes)
    if "labels" in cls.inputs and y_fit is None:
        raise InputError(f"{cls.__name__} needs the ID class labels: pass y_fit.")
    if holdout is not None:
        if id_val is not None:
            raise InputError("pass either id_val or holdout=, not both.")
        split = split_id_validation(X_fit, y_fit, holdout, seed)
        X_fit, y_fit, id_val = split.X_fit, split.y_fit, split.X_val
    elif id_val is None:
        raise InputError(
            "no ID validation data: pass id_val (rows not in X_fit, e.g. from "
            "split_id_validation) or holdout=0.1 to split X_fit."
        )
    id_val = as_matrix(id_val, "id_val", dtypes)
    ood = _named_arrays(ood_val, "ood_val")
    if not ood:
        raise InputError("ood_val is empty; pass at least one OOD validation set.")
    ood = {k: as_matrix(v, f"ood_val[{k!r}]", dtypes) for k, v in ood.items()}
    width = X_fit.shape[1]
    for what, A in (("id_val", id_val), *((f"ood_val[{k!r}]", v) for k, v in ood.items())):
        if A.shape[1] != width:
            raise InputError(f"{what} has {A.shape[1]} features but X_fit has {width}; use one backbone.")
    if "head" in cls.inputs:
        as_head(head, width)  # fail once here rather than at every grid point
    _check_disjoint(X_fit, id_val, ood, test_sets)
    y = None if y_fit is None or "labels" not in cls.inputs else np.asarray(y_fit)
    return _Data(X_fit, y, head, id_val, ood)


def _named_arrays(value: Any, what: str) -> dict[str, Any]:
    if value is None:
        return {}
    if isinstance(value, Mapping):
        return {str(k): v for k, v in value.items()}
    if isinstance(value, (list, tuple)) and value and np.ndim(value[0]) == 2:
        return {f"{what}[{i}]": v for i, v in enumerate(value)}
    return {what: value}


def _check_disjoint(
    X_fit: np.ndarray, id_val: np.ndarray, ood: dict[str, np.ndarray], test_sets: Any
) -> None:
    _refuse_overlap("id_val", id_val, "X_fit", X_fit,
                    "the ID validation rows must be held out of the fit rows: use "
                    "split_id_validation(X, y) or holdout=0.1")  # fmt: skip
    for name, A in ood.items():
        for other, B in (("X_fit", X_fit), ("id_val", id_val)):
            _refuse_overlap(f"ood_val[{name!r}]", A, other, B, "an OOD validation row cannot be ID data")
    tests = _named_arrays(test_sets, "test_sets")
    validation = {"id_val": id_val, **{f"ood_val[{k!r}]": v for k, v in ood.items()}}
    for test_name, T in tests.items():
        T = np.asarray(T)
        for val_name, A in validation.items():
            _refuse_overlap(val_name, A, f"test set {test_name!r}", T,
                            "validation data must be disjoint from every test set (choosing "
                            "hyperparameters on test data overstates the test results)")  # fmt: skip


def _refuse_overlap(what: str, A: np.ndarray, other: str, B: np.ndarray, why: str) -> None:
    if A.shape == B.shape and np.array_equal(A, B):
        raise InputError(f"{what} is identical to {other}; {why}.")
    shared = np.flatnonzero(shared_rows(A, B))
    if shared.size:
        raise InputError(
            f"{what} shares {shared.size} of its {A.shape[0]} rows with {other} (first rows "
            f"{shared[:5].tolist()}); {why}."
        )


def _context(det: Detector, head: Any) -> dict[str, Any]:
    return {"head": head} if "head" in det.inputs else {}


def _evaluate_point(
    name: str,
    params: dict[str, Any],
    data: _Data,
    score_fn: Callable[[np.ndarray, np.ndarray], float],
    aggregate: str,
) -> GridPoint:
    """Fit one grid point and compute its validation metric; a fit/score failure becomes a row."""
    det = create(name, **params)
    try:
        t0 = time.perf_counter()
        det.fit(data.X_fit, data.y_fit, **_context(det, data.head))
        fit_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        s_id = det.score(data.id_val)
        s_ood = {k: det.score(v) for k, v in data.ood_val.items()}
        score_s = time.perf_counter() - t0
    except (ParamError, InputError) as exc:
        return GridPoint(dict(params), float("nan"), error=one_line(exc, with_type=True))
    per_set = {k: _metric(score_fn, s_id, s) for k, s in s_ood.items()}
    if aggregate == "pooled":
        value = _metric(score_fn, s_id, np.concatenate(list(s_ood.values())))
    else:
        value = float(np.mean(list(per_set.values())))
    return GridPoint(dict(params), value, per_set, "", fit_s, score_s)


def _metric(score_fn: Callable[[np.ndarray, np.ndarray], float], s_id: np.ndarray, s_ood: np.ndarray) -> float:
    y = np.r_[np.zeros(s_id.size, dtype=np.int64), np.ones(s_ood.size, dtype=np.int64)]
    return float(score_fn(y, np.r_[s_id, s_ood]))


def _best_index(table: list[GridPoint], higher: bool) -> int:
    """Index of the first best row (a later row must be strictly better); raise if all failed."""
    best = -1
    for i, point in enumerate(table):
        if not point.ok or math.isnan(point.value):
            continue
        if best < 0 or (point.value > table[best].value if higher else point.value < table[best].value):
            best = i
    if best < 0:
        errors = [f"{p.params}: {p.error or 'metric is NaN'}" for p in table]
        shown = "; ".join(errors[:5]) + (f"; ... ({len(errors) - 5} more)" if len(errors) > 5 else "")
        kind = ParamError if all(p.error.startswith("ParamError") for p in table) else InputError
        raise kind(f"every grid point failed ({len(table)}): {shown}")
    return best


def _progress(points: list[dict[str, Any]], name: str, progress: Progress) -> Any:
    """Iterate over the grid points, reporting progress as asked."""
    if callable(progress):
        for i, params in enumerate(points):
            progress(f"tune {name} [{i + 1}/{len(points)}]: {spec_string(name, params)}")
            yield params
        return
    from tqdm.auto import tqdm

    show = bool(progress) and len(points) >= PROGRESS_MIN_POINTS
    with tqdm(total=len(points), disable=not show, unit="point", desc=f"tune {name}", file=sys.stderr) as bar:
        for params in points:
            yield params
            bar.update(1)


def spec_string(name: str, params: Mapping[str, Any]) -> str:
    """``"name:key=value,..."`` in the bench runner's spec syntax (None -> none, bools lower-case)."""
    if not params:
        return name

    def fmt(v: Any) -> str:
        if v is None:
            return "none"
        if isinstance(v, (bool, np.bool_)):
            return "true" if v else "false"
        if isinstance(v, (list, tuple, dict)):
            return json.dumps(v)
        return repr(v) if isinstance(v, str) else str(v)

    return name + ":" + ",".join(f"{k}={fmt(v)}" for k, v in params.items())

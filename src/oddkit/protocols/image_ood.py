"""Classifier-based image OOD protocols: C10-OOD-local, C10-OSR6 and user-given folders.

Each protocol turns images into penultimate features and logits once (cached on disk by
:func:`oddkit.features.extract`), then fits every post-hoc detector on the training
features (with the classifier head and, where a method needs them, the labels) and scores
the ID test set and each OOD set. :func:`evaluate_posthoc` is that second half, shared by
all protocols and usable on any cached features.

Results are rows, one per (detector, OOD set): ``auroc``, ``fpr95``, ``aupr_in``,
``aupr_out`` (OOD = positive class, docs/protocols.md), the OOD set's ``group`` (near /
far), the set sizes ``n_id`` / ``n_ood``, fit / score seconds (``score_s`` is the time to
score the ID test set and every OOD set, the same on each of a detector's rows) and
``error`` (empty when the detector ran); plus the raw scores for plots.

* C10-OOD-local (shared/docs/protocols.md): a CIFAR-10 ResNet from ``shared/weights``,
  fit on the 50,000 training images, ID test = the 10,000 test images, OOD = mnist,
  textures, gaussian, uniform (all far).
* C10-OSR6: EfficientNet-Lite0 (ImageNet weights) features at 224 px, classes 0-5 known,
  a multinomial logistic-regression head on the L2-normalised features of the known
  training images (C chosen on a 10% validation split of them); near-OOD = test images
  of classes 6-9, far-OOD = the four sets above. Interpretation: C is picked by
  validation accuracy from (0.01, 0.1, 1, 10, 100, 1000); the post-hoc detectors get the
  same L2-normalised features the head was trained on.
* :func:`run_folders`: any ID train / ID test / OOD folders from a config file.

Every protocol records its name and version, the backbone and its weights hash, the ID
accuracy of the classifier, set sizes, data fingerprints and extraction times in
:attr:`OODResult.info`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .._memory import keep_freed_memory
from ..data.images import SubsetSource
from ..errors import DataError, InputError, ParamError
from ..metrics import evaluate
from ._config import read_config, resolve_path

__all__ = [
    "DEFAULT_DETECTORS",
    "GROUPS",
    "LAYERED_DETECTORS",
    "METRICS",
    "ImageInputs",
    "Layered",
    "OODResult",
    "OODSet",
    "c10_ood_local",
    "c10_osr6",
    "evaluate_posthoc",
    "group_means",
    "run_folders",
    "tune_detectors",
]

#: every post-hoc detector oddkit registers that works on cached features, at its paper
#: defaults (ODIN needs the network and the images, so it is not among them).
DEFAULT_DETECTORS: tuple[str, ...] = (
    "msp", "maxlogit", "energy", "entropy", "gen", "klmatching", "react", "ash_p", "ash_b",
    "ash_s", "scale", "dice", "mahalanobis", "rmds", "knn_ood", "vim", "residual", "neco",
    "fdbd", "gradnorm", "mahalanobis_ensemble",
)  # fmt: skip
#: the detectors above that need the pooled features of several layers (see
#: :class:`Layered`); protocols extract those only when one of them is asked for.
LAYERED_DETECTORS: frozenset[str] = frozenset({"mahalanobis_ensemble"})
#: the groups an OOD set can belong to.
GROUPS: tuple[str, ...] = ("near", "far")
#: versions of the protocol definitions (shared/docs/protocols.md) recorded with results.
#: (C10-OOD-local carries its own, from oddkit.data.ood_sets.)
VERSIONS = {"C10-OSR6": "1", "folders": "1"}


@dataclass
class OODSet:
    """Features of one OOD set and its group (``"near"`` or ``"far"``)."""

    features: np.ndarray
    group: str = "far"


@dataclass
class Layered:
    """Mean-pooled features of several layers (``oddkit.features.pooled_layers``) of every
    set, for the detectors in :data:`LAYERED_DETECTORS`; ``blocks`` = columns per layer."""

    train: np.ndarray
    test: np.ndarray
    ood: dict[str, np.ndarray]
    blocks: list[int]


@dataclass
class ImageInputs:
    """The network and the images themselves, for detectors that score images (ODIN):
    ``test`` and every ``ood`` entry are image sources (``len`` and ``load(indices)``)."""

    model: Any
    test: Any
    ood: dict[str, Any]


@dataclass
class OODResult:
    """Rows (one per detector x OOD set), raw scores and what the run was."""

    rows: list[dict[str, Any]]
    scores: dict[str, dict[str, np.ndarray]]  # detector -> {"ID": ..., ood name: ...}
    info: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------- evaluation
@keep_freed_memory()
def evaluate_posthoc(
    train_features: np.ndarray,
    train_labels: np.ndarray | None,
    head: Any,
    id_features: np.ndarray,
    ood: Mapping[str, OODSet],
    detectors: Sequence[str] = DEFAULT_DETECTORS,
    progress: Callable[[str], None] | None = None,
    layered: Layered | None = None,
    images: ImageInputs | None = None,
) -> OODResult:
    """Fit each detector spec (``"name"`` or ``"name:key=value,..."``) and score ID and OOD sets.

    ``head`` is the classifier's last layer ``(W, b)``; ``train_labels`` are passed to
    the detectors that declare ``labels``. The detectors of :data:`LAYERED_DETECTORS`
    run on ``layered`` (the same images' pooled multi-layer features; their ``blocks``
    default to ``layered.blocks``) and fail without it. Detectors that take ``images``
    (ODIN) are fitted with ``images.model`` and score ``images.test`` / ``images.ood``
    (slow: a forward and a backward pass per image, nothing cached). A detector that fails (unknown name, bad
    parameters for this model, a degenerate fit) is reported in its rows with the
    message in ``error`` and NaN metrics instead of stopping the run. Inputs shared by
    every detector (the OOD sets, their groups, the feature widths) are checked first
    and raise :class:`~oddkit.errors.InputError`.
    """
    from ..errors import one_line

    _check_inputs(train_features, id_features, ood, detectors)
    rows: list[dict[str, Any]] = []
    scores: dict[str, dict[str, np.ndarray]] = {}
    for spec in detectors:
        if progress is not None:
            progress(spec)
        try:
            fit_s, score_s, s_id, s_ood = _fit_and_score(
                spec, train_features, train_labels, head, id_features, ood, layered, images
            )
        except Exception as exc:  # noqa: BLE001  (one bad detector must not end the run)
            message = one_line(exc, with_type=True)
            rows += [_error_row(spec, name, o, len(id_features), message) for name, o in ood.items()]
            continue
        scores[spec] = {"ID": s_id, **s_ood}
        for name, o in ood.items():
            y_true = np.r_[np.zeros(s_id.size, int), np.ones(s_ood[name].size, int)]
            m = evaluate(y_true, np.r_[s_id, s_ood[name]])
            rows.append({
                "detector": spec, "ood_set": name, "group": o.group,
                "auroc": m["auroc"], "fpr95": m["fpr95"], "aupr_in": m["aupr_in"],
                "aupr_out": m["aupr_out"], "n_id": int(s_id.size), "n_ood": int(s_ood[name].size),
                "fit_s": fit_s, "score_s": score_s, "error": "",
            })  # fmt: skip
    return OODResult(rows, scores)


def _fit_and_score(
    spec: str,
    train_features: np.ndarray,
    train_labels: np.ndarray | None,
    head: Any,
    id_features: np.ndarray,
    ood: Mapping[str, OODSet],
    layered: Layered | None = None,
    images: ImageInputs | None = None,
) -> tuple[float, float, np.ndarray, dict[str, np.ndarray]]:
    """One detector: (fit seconds, score seconds, ID scores, scores per OOD set)."""
    from ..bench.runner import parse_spec
    from ..detectors import create

    parsed = parse_spec(spec)  # unknown names and bad parameters raise here
    params = dict(parsed.params)
    sets = {name: o.features for name, o in ood.items()}
    if parsed.name in LAYERED_DETECTORS:
        if layered is None:
            raise InputError(
                f"{parsed.name} needs the pooled features of several layers; this protocol has "
                "them for the CIFAR ResNets only (c10-ood-local, folders with cifar_resnet*)."
            )
        params.setdefault("blocks", list(layered.blocks))
        train_features, id_features, sets = layered.train, layered.test, layered.ood
    det = create(parsed.name, **params)
    if "images" in det.inputs:
        return _fit_and_score_images(det, images, ood)
    y = train_labels if "labels" in det.inputs else None
    context = {"head": head} if "head" in det.inputs else {}
    t0 = time.perf_counter()
    det.fit(train_features, y, **context)
    fit_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    s_id = det.score(id_features)
    s_ood = {name: det.score(F) for name, F in sets.items()}
    return fit_s, time.perf_counter() - t0, s_id, s_ood


def _fit_and_score_images(
    det: Any, images: ImageInputs | None, ood: Mapping[str, OODSet]
) -> tuple[float, float, np.ndarray, dict[str, np.ndarray]]:
    """A detector that scores images through the network (ODIN)."""
    if images is None:
        raise InputError(
            f"{det.name} scores images through the network; this run has only features "
            "(the c10-ood-local and folders protocols pass the images)."
        )
    missing = sorted(set(ood) - set(images.ood))
    if missing:
        raise InputError(f"{det.name}: no images for OOD set(s) {missing}.")
    t0 = time.perf_counter()
    det.fit(model=images.model)
    fit_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    s_id = det.score(images.test)
    s_ood = {name: det.score(images.ood[name]) for name in ood}
    return fit_s, time.perf_counter() - t0, s_id, s_ood


def _check_inputs(
    train_features: Any, id_features: Any, ood: Mapping[str, OODSet], detectors: Sequence[str]
) -> None:
    """Problems every detector would hit: raise once instead of failing each detector."""
    if isinstance(detectors, str):
        raise InputError("detectors must be a sequence of specs, e.g. ['msp', 'energy'], not one string.")
    if not detectors:
        raise InputError("no detectors given.")
    duplicates = sorted({d for d in detectors if list(detectors).count(d) > 1})
    if duplicates:
        raise InputError(f"detector spec(s) {duplicates} are listed twice; list each once.")
    if not ood:
        raise InputError("at least one OOD set is needed.")
    width = _width(train_features, "train_features")
    for what, F in (("id_features", id_features), *((f"OOD set {n!r}", o.features) for n, o in ood.items())):
        if _width(F, what) != width:
            raise InputError(
                f"{what} has {_width(F, what)} features but train_features has {width}; "
                "all sets must come from the same backbone."
            )
    for name, o in ood.items():
        if o.group not in GROUPS:
            raise InputError(f"OOD set {name!r}: group must be one of {list(GROUPS)}, got {o.group!r}.")
        if name == "ID":
            raise InputError("'ID' is reserved for the ID test scores; rename that OOD set.")


def _width(F: Any, what: str) -> int:
    shape = np.shape(F)
    if len(shape) != 2 or shape[0] == 0:
        raise InputError(f"{what} must be a non-empty 2-D array (n, features); got shape {shape}.")
    return int(shape[1])


def _error_row(spec: str, ood_set: str, o: OODSet, n_id: int, message: str) -> dict[str, Any]:
    nan = float("nan")
    return {
        "detector": spec, "ood_set": ood_set, "group": o.group, "auroc": nan, "fpr95": nan,
        "aupr_in": nan, "aupr_out": nan, "n_id": int(n_id), "n_ood": len(o.features),
        "fit_s": nan, "score_s": nan, "error": message,
    }  # fmt: skip


#: the metrics of a row, in report order.
METRICS: tuple[str, ...] = ("auroc", "fpr95", "aupr_in", "aupr_out")


def group_means(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Per detector and group: mean of each metric over that group's OOD sets.

    Groups appear in the order near, far; ``all`` (the mean over every set) follows when
    there is more than one group. A failed detector has NaN means and its ``error``.
    """
    out: list[dict[str, Any]] = []
    detectors = list(dict.fromkeys(r["detector"] for r in rows))
    for det in detectors:
        mine = [r for r in rows if r["detector"] == det]
        groups = [g for g in GROUPS if any(r["group"] == g for r in mine)]
        for group in [*groups, "all"] if len(groups) > 1 else groups:
            part = [r for r in mine if group == "all" or r["group"] == group]
            entry: dict[str, Any] = {"detector": det, "group": group, "n_sets": len(part)}
            for key in METRICS:
                entry[key] = float(np.mean([r[key] for r in part]))
            entry["error"] = next((r["error"] for r in part if r["error"]), "")
            out.append(entry)
    return out


# --------------------------------------------------------------------------- protocols
def c10_ood_local(
    shared: str | Path,
    depth: int = 20,
    weights: str | Path | None = None,
    detectors: Sequence[str] | None = None,
    cache_dir: str | Path | None = None,
    batch_size: int = 256,
    threads: int | None = None,
    progress: bool = True,
    tune: bool = False,
) -> OODResult:
    """C10-OOD-local with the CIFAR-10 ResNet of the given depth (20, 32, 44 or 56).

    ``shared``: the folder holding ``data/cifar10``, ``data/mnist`` and (unless
    ``weights`` is given) ``weights/cifar10_resnet<depth>.th``. ``tune=True`` chooses
    hyperparameters on validation data only (:func:`tune_detectors`: 10% of the training
    images as ID validation, the validation OOD sets of
    :func:`oddkit.data.c10_validation_ood`), never on the test sets; the tuned specs
    replace the plain names in the results and ``info["tuning"]`` records every choice.
    """
    from ..data import c10_ood_local as c10_sources
    from ..features import create_backbone

    if depth not in (20, 32, 44, 56):
        raise ParamError(f"depth must be 20, 32, 44 or 56 (the CIFAR ResNets), got {depth!r}.")
    shared = Path(shared)
    if weights is None:
        weights = shared / "weights" / f"cifar10_resnet{depth}.th"
    if not Path(weights).is_file():
        raise DataError(f"weights file {weights} not found (C10-OOD-local needs shared/weights).")
    sources = c10_sources(shared)
    backbone = create_backbone(f"cifar_resnet{depth}", weights=weights)
    detectors = _detectors_for(backbone, detectors)
    named = {"train": sources.train, "test": sources.test, **sources.ood}
    extracted, timing = _extract_all(backbone, named, cache_dir, batch_size, threads, progress)
    train, test = extracted["train"], extracted["test"]
    ood = {name: OODSet(extracted[name].features, "far") for name in sources.ood}
    layered = None
    if _wants_layers(detectors):
        layered, layer_timing = _extract_layered(backbone, named, cache_dir, batch_size, threads, progress)
        timing = _merge_timing(timing, layer_timing)
    tuning: dict[str, Any] = {}
    if tune:
        from ..data import c10_validation_ood

        val_sources = c10_validation_ood(shared)
        val, _ = _extract_all(backbone, val_sources, cache_dir, batch_size, threads, progress)
        val_layered = None
        if layered is not None:
            val_layered, _ = _extract_all(pooled_layers_of(backbone), val_sources, cache_dir, batch_size,
                                          threads, progress)  # fmt: skip
        test_sets = {"test": test.features, **{n: o.features for n, o in ood.items()}}
        detectors, tuning = tune_detectors(
            detectors, train.features, train.labels, backbone.head(),
            {n: v.features for n, v in val.items()}, test_sets, layered,
            None if val_layered is None else {n: v.features for n, v in val_layered.items()},
            progress=_progress_printer(progress),
        )  # fmt: skip
        tuning["validation_fingerprints"] = {n: _fingerprint(src) for n, src in val_sources.items()}
    result = evaluate_posthoc(
        train.features, train.labels, backbone.head(), test.features, ood, detectors,
        _progress_printer(progress), layered, ImageInputs(backbone, sources.test, dict(sources.ood)),
    )  # fmt: skip
    result.info = {
        "protocol": sources.protocol,
        "protocol_version": sources.version,
        "backbone": backbone.name,
        "weights": Path(weights).name,
        "weights_hash": backbone.weights_hash,
        "id_accuracy": _accuracy(test.logits, test.labels),
        "n_train": len(train),
        "n_id_test": len(test),
        "ood_sizes": {name: len(extracted[name]) for name in sources.ood},
        "ood_groups": {name: o.group for name, o in ood.items()},
        "fingerprints": {name: _fingerprint(src) for name, src in named.items()},
        **timing,
    }
    if tune:
        result.info["tuning"] = tuning
    return result


def tune_detectors(
    detectors: Sequence[str],
    train_features: np.ndarray,
    train_labels: np.ndarray,
    head: Any,
    val_ood: Mapping[str, np.ndarray],
    test_sets: Mapping[str, np.ndarray],
    layered: Layered | None = None,
    val_ood_layered: Mapping[str, np.ndarray] | None = None,
    *,
    holdout: float = 0.1,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
) -> tuple[list[str], dict[str, Any]]:
    """Tuned specs for ``detectors`` and a record of every choice (OpenOOD v1.5 practice).

    A plain name with a sweep grid (:data:`oddkit.detectors.posthoc.tuning.DEFAULT_GRIDS`)
    is tuned by :func:`~oddkit.detectors.posthoc.tuning.tune`: fit on 90% of the training
    rows (``holdout``, stratified, ``seed``), AUROC of the held-out 10% against the mean
    over the ``val_ood`` sets; ``test_sets`` are only checked for overlap, never scored.
    ``mahalanobis_ensemble`` gets the paper's logistic-regression layer weights from the
    same split of ``layered`` and the ``val_ood_layered`` sets. A spec that already sets
    parameters, and a method without a grid, is kept as given. Returns the specs to run
    and ``{spec: record}``.
    """
    from ..bench.runner import parse_spec
    from ..detectors import create
    from ..detectors.posthoc.tuning import DEFAULT_GRIDS, split_id_validation, tune

    specs: list[str] = []
    record: dict[str, Any] = {"holdout": holdout, "seed": seed, "metric": "auroc", "choices": {}}
    for spec in detectors:
        parsed = parse_spec(spec)
        if parsed.params or (parsed.name not in DEFAULT_GRIDS and parsed.name not in LAYERED_DETECTORS):
            specs.append(spec)
            record["choices"][spec] = "kept (parameters given or nothing to tune)"
            continue
        if progress is not None:
            progress(f"tuning {parsed.name}")
        if parsed.name in LAYERED_DETECTORS:
            if layered is None or val_ood_layered is None:
                specs.append(spec)
                record["choices"][spec] = "kept (no layered validation features)"
                continue
            split = split_id_validation(layered.train, train_labels, holdout, seed)
            det = create(parsed.name, blocks=list(layered.blocks)).fit(split.X_fit, split.y_fit)
            weights = det.learn_weights(split.X_val, np.vstack(list(val_ood_layered.values())))
            chosen = f"{parsed.name}:weights=[{','.join(f'{w:.4g}' for w in weights)}]"
            record["choices"][spec] = {"spec": chosen, "weights": weights}
        else:
            res = tune(parsed.name, train_features, train_labels, head, None, val_ood,
                       holdout=holdout, seed=seed, test_sets=test_sets, progress=False)  # fmt: skip
            chosen = res.spec
            record["choices"][spec] = {"spec": chosen, "auroc": res.value, "table": res.rows()}
        specs.append(chosen)
    return specs, record


#: C10-OSR6: the first six CIFAR-10 classes are known, the other four unknown.
OSR6_KNOWN = 6
#: C values tried for the C10-OSR6 head (validation accuracy picks one).
OSR6_C_GRID: tuple[float, ...] = (0.01, 0.1, 1.0, 10.0, 100.0, 1000.0)


def c10_osr6(
    shared: str | Path,
    detectors: Sequence[str] | None = None,
    cache_dir: str | Path | None = None,
    batch_size: int = 64,
    threads: int | None = None,
    progress: bool = True,
    limit: int | None = None,
) -> OODResult:
    """C10-OSR6: EfficientNet-Lite0 features, logistic head on known classes, near and far OOD.

    Only the train images of the known classes are decoded (the protocol uses no other
    train image): 30,000 train, 10,000 test and 16,000 far-OOD images at 224 px, about
    56,000 in all (docs/benchmarks.md has the measured time). ``limit`` keeps ``limit``
    images of every source, spread evenly over it (the CIFAR-10 folders are sorted by
    class, so the first images would all be airplanes), for quick checks. The near-OOD
    set is named ``near``.
    """
    from ..data import c10_ood_local as c10_sources
    from ..features import create_backbone

    sources = c10_sources(Path(shared))
    backbone = create_backbone("efficientnet_lite0")
    detectors = _detectors_for(backbone, detectors)
    known_train = SubsetSource(
        sources.train, np.flatnonzero(np.asarray(sources.train.labels) < OSR6_KNOWN), "known classes"
    )
    named: dict[str, Any] = {"train": known_train, "test": sources.test, **sources.ood}
    if limit is not None:
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise InputError(f"limit must be a positive integer, got {limit!r}.")
        named = {k: SubsetSource.evenly(src, limit) for k, src in named.items()}
    extracted, timing = _extract_all(backbone, named, cache_dir, batch_size, threads, progress)
    train, test = extracted["train"], extracted["test"]
    known_te = test.labels < OSR6_KNOWN
    Ftr, ytr = _l2(train.features), train.labels
    Fid = _l2(test.features[known_te])
    head, C = _logistic_head(Ftr, ytr)
    ood = {"near": OODSet(_l2(test.features[~known_te]), "near")}
    for name in sources.ood:
        ood[name] = OODSet(_l2(extracted[name].features), "far")
    result = evaluate_posthoc(Ftr, ytr, head, Fid, ood, detectors, _progress_printer(progress))
    result.info = {
        "protocol": "C10-OSR6",
        "protocol_version": VERSIONS["C10-OSR6"],
        "backbone": backbone.name,
        "weights_hash": backbone.weights_hash,
        "head": f"multinomial logistic regression on L2-normalised features, C={C:g}",
        "id_accuracy": _accuracy(Fid @ head[0].T + head[1], test.labels[known_te]),
        "n_train": int(ytr.size),
        "n_id_test": int(known_te.sum()),
        "ood_sizes": {name: int(o.features.shape[0]) for name, o in ood.items()},
        "ood_groups": {name: o.group for name, o in ood.items()},
        "fingerprints": {name: _fingerprint(src) for name, src in named.items()},
        "limit": limit,
        **timing,
    }
    return result


def run_folders(config: str | Path | Mapping[str, Any], **kw: Any) -> OODResult:
    """ID / OOD image folders from a JSON config (or a dict); see the keys below.

    ``{"backbone": "cifar_resnet20", "weights": "path.th", "train": "dir", "test": "dir",
    "ood": {"name": {"path": "dir", "group": "near" | "far"}, ...}, "size": [32, 32]}``.
    ``train`` and ``test`` are ImageFolder trees (``dir/<class>/<image>``) with the same
    class folders; the classifier's classes must be these, in sorted folder order. An
    OOD folder holds its images either directly (``dir/<image>``) or in sub-folders of
    any names; ``"name": "dir"`` is short for group ``far``. ``size`` resizes every
    image (default: the size of the first training image). ``weights`` is required for
    the ``cifar_resnet*`` backbones (they are random without it). Relative paths in a
    config file are relative to the file's folder. Keyword arguments go to the run
    (``detectors``, ``cache_dir``, ``batch_size``, ``threads``, ``progress``).
    """
    from ..data import ImageFolder, check_same_classes
    from ..features import create_backbone

    cfg, base = _read_config(config)
    name = str(cfg.get("backbone", "cifar_resnet20"))
    weights = resolve_path(cfg["weights"], base) if cfg.get("weights") else None
    if weights is None and name.startswith("cifar_resnet"):
        raise DataError(f"the OOD config needs 'weights' (a checkpoint path) for backbone {name}.")
    size = tuple(cfg["size"]) if cfg.get("size") else None
    train = ImageFolder(resolve_path(cfg["train"], base), size=size)
    size = size or train.image_size
    test = ImageFolder(resolve_path(cfg["test"], base), size=size)
    check_same_classes(train, test)
    named: dict[str, Any] = {"train": train, "test": test}
    groups: dict[str, str] = {}
    for set_name, spec in cfg["ood"].items():
        spec = {"path": spec} if isinstance(spec, str) else dict(spec)
        groups[set_name] = spec.get("group", "far")
        if groups[set_name] not in GROUPS or set_name in ("train", "test", "ID"):
            raise DataError(
                f"OOD set {set_name!r}: the name must not be train/test/ID and the group must "
                f"be 'near' or 'far' (got {groups[set_name]!r})."
            )
        named[set_name] = _ood_folder(resolve_path(spec["path"], base), size)
    backbone = create_backbone(name, weights=weights)
    detectors = _detectors_for(backbone, kw.get("detectors"))
    opts = {k: kw[k] for k in ("cache_dir", "batch_size", "threads", "progress") if k in kw}
    progress = opts.get("progress", True)
    extracted, timing = _extract_all(backbone, named, opts.get("cache_dir"), opts.get("batch_size", 256),
                                     opts.get("threads"), progress)  # fmt: skip
    train_x, test_x = extracted["train"], extracted["test"]
    layered = None
    if _wants_layers(detectors) and _has_default_layers(backbone):
        layered, layer_timing = _extract_layered(backbone, named, opts.get("cache_dir"), opts.get("batch_size", 256),
                                                 opts.get("threads"), progress)  # fmt: skip
        timing = _merge_timing(timing, layer_timing)
    result = evaluate_posthoc(
        train_x.features, train_x.labels, backbone.head(), test_x.features,
        {n: OODSet(extracted[n].features, groups[n]) for n in groups},
        detectors, _progress_printer(progress), layered,
        ImageInputs(backbone, test, {n: named[n] for n in groups}),
    )  # fmt: skip
    result.info = {
        "protocol": "folders",
        "protocol_version": VERSIONS["folders"],
        "backbone": backbone.name,
        "weights": None if weights is None else str(weights),
        "weights_hash": backbone.weights_hash,
        "id_accuracy": _accuracy(test_x.logits, test_x.labels),
        "classes": list(train.classes),
        "n_train": len(train_x),
        "n_id_test": len(test_x),
        "ood_sizes": {n: len(extracted[n]) for n in groups},
        "ood_groups": dict(groups),
        "fingerprints": {n: _fingerprint(src) for n, src in named.items()},
        **timing,
    }
    return result


# --------------------------------------------------------------------------- helpers
def _extract_all(
    backbone: Any,
    named: Mapping[str, Any],
    cache_dir: str | Path | None,
    batch_size: int,
    threads: int | None,
    progress: bool,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Features of every source, and the seconds each took and whether it came from the cache."""
    from ..features import extract

    out, seconds, cached = {}, {}, {}
    for name, source in named.items():
        if progress:
            print(f"features: {name} ({len(source)} images)", flush=True)
        t0 = time.perf_counter()
        out[name] = extract(backbone, source, batch_size=batch_size, threads=threads,
                            cache_dir=cache_dir, progress=progress)  # fmt: skip
        seconds[name] = round(time.perf_counter() - t0, 3)
        cached[name] = bool(out[name].from_cache)
    return out, {"extract_seconds": seconds, "from_cache": cached}


def _has_default_layers(backbone: Any) -> bool:
    return str(backbone.name).startswith("cifar_resnet")


def _detectors_for(backbone: Any, detectors: Sequence[str] | None) -> Sequence[str]:
    """``detectors``, or by default every detector of :data:`DEFAULT_DETECTORS` this
    backbone supports (the layered ones only where default layers are known)."""
    if detectors is not None:
        return detectors
    if _has_default_layers(backbone):
        return DEFAULT_DETECTORS
    return tuple(d for d in DEFAULT_DETECTORS if d not in LAYERED_DETECTORS)


def _wants_layers(detectors: Sequence[str]) -> bool:
    from ..bench.runner import parse_spec

    names = set()
    for spec in detectors:
        try:
            names.add(parse_spec(spec).name)
        except Exception:  # noqa: BLE001  (a bad spec is reported in its own rows later)
            continue
    return bool(names & LAYERED_DETECTORS)


def pooled_layers_of(backbone: Any) -> Any:
    """The backbone with its default pooled layers (:func:`oddkit.features.pooled_layers`)."""
    from ..features import pooled_layers

    return pooled_layers(backbone)


def _extract_layered(backbone: Any, named: Mapping[str, Any], *options: Any) -> tuple[Layered, dict[str, Any]]:
    """The pooled multi-layer features of every source (for :data:`LAYERED_DETECTORS`);
    ``options`` are :func:`_extract_all`'s (cache_dir, batch_size, threads, progress)."""
    layers = pooled_layers_of(backbone)
    out, timing = _extract_all(layers, named, *options)
    ood = {name: out[name].features for name in named if name not in ("train", "test")}
    return Layered(out["train"].features, out["test"].features, ood, layers.widths), timing


def _merge_timing(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """Extraction seconds added per source; from the cache only when both runs were."""
    return {
        "extract_seconds": {k: round(v + b["extract_seconds"].get(k, 0.0), 3) for k, v in a["extract_seconds"].items()},
        "from_cache": {k: v and b["from_cache"].get(k, True) for k, v in a["from_cache"].items()},
    }


def _progress_printer(progress: bool) -> Callable[[str], None] | None:
    if not progress:
        return None
    return lambda spec: print(f"detector: {spec}", flush=True)


def _accuracy(logits: np.ndarray, labels: np.ndarray | None) -> float:
    if labels is None or labels.size == 0 or (labels < 0).any():
        return float("nan")
    if logits.shape[1] <= int(labels.max()):  # the head has fewer classes than the folders
        return float("nan")
    return float((logits.argmax(axis=1) == labels).mean())


def _fingerprint(source: Any) -> str:
    return str(getattr(source, "fingerprint", ""))


def _l2(F: np.ndarray) -> np.ndarray:
    from ..detectors.base import l2_normalise_rows

    return l2_normalise_rows(np.asarray(F, dtype=np.float64))


@keep_freed_memory()
def _logistic_head(F: np.ndarray, y: np.ndarray, seed: int = 0) -> tuple[tuple[np.ndarray, np.ndarray], float]:
    """Multinomial logistic regression; C from a stratified 10% validation split (accuracy).

    The grid is walked from the smallest C up, each fit starting from the previous
    solution (a warm start along the regularisation path), and the final fit on all rows
    starts from the chosen C's solution: the same convex optima, reached in a fraction of
    the iterations (L-BFGS from zero needs thousands at the largest C on 1,280-d features).
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split

    idx_tr, idx_va = train_test_split(np.arange(y.size), test_size=0.1, stratify=y, random_state=seed)
    path = LogisticRegression(max_iter=2000, warm_start=True)
    best_c, best_acc, best_start = OSR6_C_GRID[0], -1.0, None
    for c in sorted(OSR6_C_GRID):
        path.set_params(C=c).fit(F[idx_tr], y[idx_tr])
        acc = path.score(F[idx_va], y[idx_va])
        if acc > best_acc:
            best_c, best_acc, best_start = c, acc, (path.coef_.copy(), path.intercept_.copy())
    clf = LogisticRegression(C=best_c, max_iter=2000, warm_start=True)
    clf.coef_, clf.intercept_ = best_start  # type: ignore[misc]
    clf.fit(F, y)
    return (clf.coef_.astype(np.float64), clf.intercept_.astype(np.float64)), best_c


class _LooseFolder:
    """The images lying directly in one folder (an OOD set without class folders), resized to ``size``."""

    def __init__(self, root: Path, files: list[str], size: tuple[int, int]) -> None:
        self.root, self.files, self.size = root, files, (int(size[0]), int(size[1]))
        self.labels = np.full(len(files), -1, dtype=np.int64)
        self._fingerprint: str | None = None

    def __len__(self) -> int:
        return len(self.files)

    def load(self, indices: np.ndarray) -> np.ndarray:
        from ..data.images import read_rgb

        idx = np.asarray(indices, dtype=np.int64)
        out = np.empty((idx.size, *self.size, 3), dtype=np.uint8)
        for k, i in enumerate(idx.tolist()):  # one decode per file; Pillow has no batch decode
            out[k] = read_rgb(self.root / self.files[i], self.size)
        return out

    @property
    def fingerprint(self) -> str:
        """BLAKE2b over the size, the file names and each file's content digest."""
        if self._fingerprint is None:
            import hashlib

            from ..data.images import file_digests

            h = hashlib.blake2b(digest_size=8)
            h.update(json.dumps({"kind": "oddkit.LooseFolder", "size": list(self.size)}).encode())
            for name, digest in zip(self.files, file_digests([self.root / f for f in self.files])):
                h.update(f"{name}\0".encode())
                h.update(digest)
            self._fingerprint = h.hexdigest()
        return self._fingerprint


def _ood_folder(path: Path, size: tuple[int, int]) -> Any:
    """An OOD folder as an image source: an ImageFolder, or its loose images when it has no sub-folders."""
    from ..data import ImageFolder
    from ..data.images import IMAGE_EXTENSIONS

    if not path.is_dir():
        raise DataError(f"OOD folder not found: {path}.")
    entries = sorted(path.iterdir())
    loose = [e.name for e in entries if e.is_file() and not e.name.startswith(".")
             and e.name.lower().endswith(IMAGE_EXTENSIONS)]  # fmt: skip
    folders = [e for e in entries if e.is_dir() and not e.name.startswith(".")]
    if loose and folders:
        raise DataError(
            f"OOD folder {path} holds images both directly and in sub-folders; use one layout."
        )
    if loose:
        return _LooseFolder(path.resolve(), loose, size)
    return ImageFolder(path, size=size)


def _read_config(config: str | Path | Mapping[str, Any]) -> tuple[dict[str, Any], Path | None]:
    """The config as a dict, and the folder relative paths are resolved against (None: cwd)."""
    cfg, base = read_config(config, "OOD", ("train", "test", "ood"))
    if not isinstance(cfg["ood"], Mapping) or not cfg["ood"]:
        raise DataError("'ood' must map OOD set names to folders (at least one).")
    return cfg, base

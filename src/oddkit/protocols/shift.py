"""One-class protocols under distribution shift: C10-OC, C10-R (U, A, C), SPA, SSA-self / SSA-all.

Definitions: ``shared/docs/protocols.md``; this module implements them on frozen backbone
features (EfficientNet-Lite0 by default, any oddkit backbone by name) for CIFAR-10 (the
ImageFolder JPEGs of ``shared/data/cifar10``) and for any ImageFolder data set given by a
config (:func:`folder_data`). Every protocol is one-class per class ``c``: each detector
is fitted once per class on the features of the class-``c`` training images, then that
fitted detector scores every test group (strict fit-then-score; nothing is refitted).

* **C10-OC**: test = all test images, anomaly = class != c.
* **C10-R** (after arXiv 2211.10892): settings ``U`` (= C10-OC), ``A`` (the class-c
  test images also under rot90, rot270, hflip, crop_resize at severity 5 = a 24x24 crop
  of 32x32, color_jitter at severity 5 = 0.5/0.5/0.5/0.5; all normal) and ``C`` (the
  class-c test images also under every corruption at severities 1-5; all normal);
  anomalies are only the clean test images of the other classes. Transforms use seed
  123. Rows give AUROC for U, A, C and GS(A) = GS(U -> A), GS(C) = GS(U -> C)
  (:mod:`oddkit.metrics.generalizability`) beside both AUROCs.
* **SPA** (after arXiv 2406.10617): every test image (normal and anomalous) under the
  same transform ``t`` of the pool at severity 5; AUROC per ``t``, the mean over ``t``
  and, for comparison, the clean (C10-OC) AUROC with GS(clean -> t).
* **SSA**: each test image gets one transform of the pool drawn uniformly
  (``RandomState(seed).randint``, seed 0); an image of class ``c`` is anomalous for
  class ``c`` when its transform changes the meaning for ``c`` (the per-class semantic
  table); ``SSA-self`` scores only the class-``c`` images, ``SSA-all`` adds the other
  classes' (transformed) images, all anomalous.

Streaming: a shifted test group is an :class:`oddkit.shifts.build.ShiftedSource` (made
on the fly, never stored, its own feature-cache entry); one group's features are
extracted, scored by every fitted class detector, and only the scores are kept.

``limit`` (CPU runs): the test set is cut to ``limit`` images per class, spread evenly
over each class's images in file order (``np.linspace`` over the class's indices,
rounded); every test group (clean and shifted) is made from that cut, so a group has
``limit`` images per class. ``train_limit`` cuts the training images per class the same
way. Results record both and say "subset" in ``info["subset"]``.

Detectors are spec strings as in ``oddkit bench ood`` (``"knn:n_neighbors=1"``,
``"gaussian"``); a ``+l2`` suffix (``"knn:n_neighbors=1+l2"``) runs the detector on
L2-normalised features (train and test), which is what the C10-R paper's feature
"post-processing" before kNN amounts to; ``l2_normalize=True`` applies it to every spec
and ``"both"`` runs every spec both ways. Only detectors that need nothing but features
can run here (one-class: no labels, no classifier head).

Rows: one per (protocol, setting, seed, class, detector, shift, severity) with
``auroc``, ``fpr95``, ``aupr_in``, ``aupr_out``, ``detection_error``, ``n_normal``,
``n_anomalous``, ``fit_s``, ``score_s``, ``error``; the shifted rows also carry
``auroc_standard`` (the clean/U AUROC of the same class and detector) and ``gs``.
:func:`summarize` makes the means: first over seeds, then over classes (the units),
with the number of units and the standard deviation over units (and over seeds where
there are several).

Interpretations (protocols.md leaves these open):

* Pooled AUROC of C10-R ``A`` / ``C``: one AUROC per class over all normal images of the
  setting (the clean class-``c`` images plus every shifted copy) against the clean
  anomalies. Per-group rows (``shift`` = a transform, ``severity`` = its level) use only
  that group's shifted class-``c`` images as normal, against the same clean anomalies;
  those make the AUROC-against-severity plot (severity 0 there = setting U).
* Shifts without a strength (rot90, rot270, hflip) are applied at severity 5 and recorded
  so; they give the same images at every severity.
* Randomness of the transforms: seed 123 for C10-R (protocols.md), ``seed`` (default 0)
  for SPA and SSA, used both for the SSA draw and the transforms. Shifted images are
  made in fixed blocks (:mod:`oddkit.shifts.build`); with ``limit`` the blocks run over
  the cut test set, so a subset run's shifted images are not a subset of a full run's.
* SSA draws the transforms over the test set in file order (after the ``limit`` cut).
* "Training-time copies use severity 1" (SPA/SSA): with ``train_shifts=True`` the
  training set of class ``c`` also holds, for every pool transform that keeps the
  meaning for ``c`` (SPA: every transform of the pool), one severity-1 copy of each
  class-``c`` training image. Off by default: the default detectors are fitted on clean
  features as in C10-OC, and the copies multiply the training feature cost up to 10x.
* A class whose SSA-self test part is all normal or all anomalous (possible with a small
  ``limit``) gets NaN metrics and an ``error`` message for that row.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .._memory import keep_freed_memory
from ..data.images import SubsetSource
from ..errors import DataError, InputError, ParamError
from ._config import read_config, resolve_path

__all__ = [
    "C10R_AUGMENTATIONS",
    "C10R_SEED",
    "CIFAR10_SEMANTIC",
    "DEFAULT_DETECTORS",
    "PROTOCOLS",
    "SHIFT_POOL",
    "ShiftData",
    "ShiftDetector",
    "ShiftPlan",
    "ShiftResult",
    "c10_oc",
    "c10_r",
    "cifar10_data",
    "folder_data",
    "parse_shift_detectors",
    "per_class_subset",
    "plan_protocol",
    "run_shift_bench",
    "run_shift_protocol",
    "spa",
    "ssa",
    "ssa_draw",
    "ssa_labels",
    "summarize",
]

#: protocol names accepted by :func:`run_shift_protocol` (lower-case, as the CLI takes them).
PROTOCOLS: tuple[str, ...] = ("c10-oc", "c10-r", "spa", "ssa")
#: display names and versions of the definitions (shared/docs/protocols.md) recorded with results.
NAMES = {"c10-oc": "C10-OC", "c10-r": "C10-R", "spa": "SPA", "ssa": "SSA"}
VERSIONS = {"C10-OC": "1", "C10-R": "1", "SPA": "1", "SSA": "1"}
C10R_SETTINGS: tuple[str, ...] = ("U", "A", "C")
#: C10-R setting A: (shift, severity) pairs (crop_resize 5 = 24 of 32 px; color_jitter 5 = 0.5 each).
C10R_AUGMENTATIONS: tuple[tuple[str, int], ...] = (
    ("rot90", 5), ("rot270", 5), ("hflip", 5), ("crop_resize", 5), ("color_jitter", 5),
)  # fmt: skip
#: transforms with randomness use this seed in C10-R (protocols.md: RandomState(123)).
C10R_SEED = 123
#: the SPA/SSA pool of 10 transforms (protocols.md), as registry names.
SHIFT_POOL: tuple[str, ...] = (
    "hflip", "rot90", "rot270", "crop_resize", "color_jitter",
    "gaussian_noise", "glass_blur", "jpeg_compression", "snow", "gaussian_blur",
)  # fmt: skip
TEST_SEVERITY = 5
TRAIN_SEVERITY = 1
#: CIFAR-10: the transforms that change the meaning, per class (protocols.md, SSA).
#: ``"*"`` applies to every class.
CIFAR10_SEMANTIC: dict[str, tuple[str, ...]] = {
    "*": ("gaussian_noise", "glass_blur"),
    "airplane": ("rot90", "rot270"),
    "automobile": ("rot90", "rot270"),
    "deer": ("rot90", "rot270"),
    "horse": ("rot90", "rot270"),
    "ship": ("rot90", "rot270"),
    "truck": ("rot90", "rot270"),
}
#: default detectors: kNN (k=1) without and with L2 normalisation, and a Gaussian.
DEFAULT_DETECTORS: tuple[str, ...] = ("knn:n_neighbors=1", "knn:n_neighbors=1+l2", "gaussian")
L2_SUFFIX = "+l2"
METRIC_KEYS: tuple[str, ...] = ("auroc", "fpr95", "aupr_in", "aupr_out", "detection_error")


# =========================================================================== data
@dataclass
class ShiftData:
    """A one-class data set: ``train`` / ``test`` image sources with the same ``classes``,
    and ``semantic``: class name -> transforms that change its meaning (``"*"`` = every
    class)."""

    name: str
    train: Any
    test: Any
    classes: list[str]
    semantic: dict[str, tuple[str, ...]] = field(default_factory=dict)
    builtin_semantic: bool = False  # True for oddkit's own tables (names checked only within the pool)

    def changing(self, cls: str) -> set[str]:
        """Transforms that change the meaning for class ``cls``."""
        return set(self.semantic.get("*", ())) | set(self.semantic.get(cls, ()))


def cifar10_data(shared: str | Path) -> ShiftData:
    """CIFAR-10 from ``shared/data/cifar10/{train,test}`` with :data:`CIFAR10_SEMANTIC`."""
    from ..data import ImageFolder, check_same_classes

    root = Path(shared) / "data" / "cifar10"
    if not (root / "train").is_dir() or not (root / "test").is_dir():
        raise DataError(f"{root}/train and {root}/test not found; pass shared= the folder holding data/cifar10.")
    train, test = ImageFolder(root / "train"), ImageFolder(root / "test")
    classes = check_same_classes(train, test)
    return ShiftData("cifar10", train, test, classes, dict(CIFAR10_SEMANTIC), builtin_semantic=True)


def folder_data(config: str | Path | Mapping[str, Any]) -> ShiftData:
    """Any ImageFolder data set from a JSON config file (or a dict).

    ``{"name": "mydata", "train": "dir", "test": "dir", "size": [H, W],
    "semantic": {"<class>": ["rot90", ...], "*": ["gaussian_noise"]}}``: ``train`` and
    ``test`` are ``dir/<class>/<image>`` trees with the same class folders; ``size``
    resizes every image (optional: without it all images must share one size);
    ``semantic`` lists, per class, the transforms that change its meaning (SSA; ``"*"``
    = every class; default: none). Relative paths are relative to the config file.
    """
    from ..data import ImageFolder, check_same_classes

    cfg, base = read_config(config, "shift", ("train", "test"))
    size = tuple(cfg["size"]) if cfg.get("size") else None
    train = ImageFolder(resolve_path(cfg["train"], base), size=size)
    test = ImageFolder(resolve_path(cfg["test"], base), size=size)
    classes = check_same_classes(train, test)
    if train.image_size != test.image_size:
        raise DataError(
            f"train images are {train.image_size[0]}x{train.image_size[1]} but test images "
            f"{test.image_size[0]}x{test.image_size[1]}; give the config a 'size' [H, W] to resize both."
        )
    semantic = cfg.get("semantic") or {}
    if not isinstance(semantic, Mapping):
        raise DataError("'semantic' must map class names to lists of transform names.")
    table = {str(k): tuple(str(t) for t in ([v] if isinstance(v, str) else v)) for k, v in semantic.items()}
    return ShiftData(str(cfg.get("name", Path(str(cfg["train"])).parent.name or "folders")), train, test,
                     classes, table)  # fmt: skip


def per_class_subset(labels: np.ndarray, limit: int | None) -> np.ndarray:
    """Indices keeping ``limit`` images of every class, spread evenly over each class's
    indices (rounded ``linspace``), in increasing order; all indices when ``limit`` is None."""
    labels = np.asarray(labels)
    if limit is None:
        return np.arange(labels.size, dtype=np.int64)
    keep = []
    for c in np.unique(labels[labels >= 0]):
        idx = np.flatnonzero(labels == c)
        keep.append(idx[np.unique(np.linspace(0, idx.size - 1, min(limit, idx.size)).round().astype(np.int64))])
    return np.sort(np.concatenate(keep)) if keep else np.empty(0, np.int64)


# =========================================================================== detectors
@dataclass(frozen=True)
class ShiftDetector:
    """A detector of a shift protocol: ``display`` name, parsed registry spec, ``l2`` flag."""

    display: str
    spec: Any  # oddkit.bench.runner.DetectorSpec
    l2: bool


def parse_shift_detectors(specs: str | Sequence[str] | None, l2_normalize: bool | str = False) -> list[ShiftDetector]:
    """Parse detector specs (a comma-separated string or a list; ``+l2`` suffix allowed).

    ``l2_normalize``: False (as written), True (every spec on L2-normalised features) or
    ``"both"`` (every spec plain and with ``+l2``). Unknown names, bad parameters,
    duplicates and detectors that need more than features raise :class:`ParamError`.
    """
    from ..bench.runner import parse_spec, parse_spec_list
    from ..detectors import get

    if l2_normalize not in (False, True, "both"):
        raise ParamError(f"l2_normalize must be False, True or 'both', got {l2_normalize!r}.")
    raw = list(DEFAULT_DETECTORS) if specs is None else _split_specs(specs)
    items: list[tuple[str, bool]] = []
    for text in raw:
        l2 = text.endswith(L2_SUFFIX)
        base = text[: -len(L2_SUFFIX)].strip() if l2 else text
        variants = [l2] if l2_normalize is False or l2 else ([True] if l2_normalize is True else [False, True])
        items += [(base, v) for v in variants]
    out: list[ShiftDetector] = []
    for base, l2 in items:
        spec = parse_spec_list(base)
        if len(spec) != 1:
            raise ParamError(f"detector spec {base!r} holds more than one detector.")
        spec = parse_spec(spec[0])
        extra = set(get(spec.name).inputs) - {"features"}
        if extra:
            raise ParamError(
                f"{spec.name} needs {sorted(extra)}; the one-class shift protocols give detectors features "
                "only (no labels, no classifier head). Use e.g. knn, gaussian, lof, iforest."
            )
        display = spec.display + (L2_SUFFIX if l2 else "")
        if any(d.display == display for d in out):
            raise ParamError(f"detector {display!r} is listed twice; list it once.")
        out.append(ShiftDetector(display, spec, l2))
    if not out:
        raise ParamError("no detectors given.")
    return out


def _split_specs(specs: str | Sequence[str]) -> list[str]:
    """Specs as a list: list items are one spec each; a string is split like the CLI's
    ``--detectors`` (commas separate specs; a ``key=value`` piece continues the previous spec)."""
    from ..bench.runner import _is_continuation, _split_top_level

    if not isinstance(specs, str):
        if not all(isinstance(s, str) for s in specs):
            raise ParamError(f"detectors must be spec strings, got {list(specs)!r}.")
        return [s.strip() for s in specs]
    groups: list[str] = []
    for piece in (p.strip() for p in _split_top_level(specs, ",")):
        if not piece:
            continue
        if groups and _is_continuation(piece):
            groups[-1] += "," + piece
        else:
            groups.append(piece)
    return groups


# =========================================================================== results
@dataclass
class ShiftResult:
    """Rows (module docstring), the per-setting means (:func:`summarize`) and ``info`` (provenance)."""

    rows: list[dict[str, Any]]
    summary: list[dict[str, Any]]
    info: dict[str, Any] = field(default_factory=dict)


# =========================================================================== entry points
def c10_oc(shared: str | Path, **kw: Any) -> ShiftResult:
    """C10-OC on CIFAR-10 from ``shared`` (keywords: :func:`run_shift_protocol`)."""
    return run_shift_protocol("c10-oc", shared=shared, **kw)


def c10_r(shared: str | Path, **kw: Any) -> ShiftResult:
    """C10-R (settings U, A, C) on CIFAR-10 from ``shared`` (keywords: :func:`run_shift_protocol`)."""
    return run_shift_protocol("c10-r", shared=shared, **kw)


def spa(shared: str | Path, **kw: Any) -> ShiftResult:
    """SPA on CIFAR-10 from ``shared`` (keywords: :func:`run_shift_protocol`)."""
    return run_shift_protocol("spa", shared=shared, **kw)


def ssa(shared: str | Path, **kw: Any) -> ShiftResult:
    """SSA-self and SSA-all on CIFAR-10 from ``shared`` (keywords: :func:`run_shift_protocol`)."""
    return run_shift_protocol("ssa", shared=shared, **kw)


@keep_freed_memory()
def run_shift_protocol(
    protocol: str,
    *,
    shared: str | Path | None = None,
    config: str | Path | Mapping[str, Any] | None = None,
    data: ShiftData | None = None,
    backbone: Any = "efficientnet_lite0",
    weights: str | Path | None = None,
    detectors: str | Sequence[str] | None = None,
    l2_normalize: bool | str = False,
    settings: Sequence[str] = C10R_SETTINGS,
    corruptions: Sequence[str] | None = None,
    severities: Sequence[int] = (1, 2, 3, 4, 5),
    augmentations: Sequence[tuple[str, int]] = C10R_AUGMENTATIONS,
    pool: Sequence[str] | None = None,
    semantic: Mapping[str, Sequence[str]] | None = None,
    seeds: Sequence[int] | None = None,
    train_shifts: bool = False,
    limit: int | None = None,
    train_limit: int | None = None,
    cache_dir: str | Path | None = None,
    batch_size: int = 64,
    threads: int | None = None,
    progress: bool = True,
) -> ShiftResult:
    """Run ``protocol`` (one of :data:`PROTOCOLS`) and return its rows, means and provenance.

    Data: ``data`` (a :class:`ShiftData`), else ``config`` (:func:`folder_data`), else
    CIFAR-10 from ``shared``. ``backbone``: a backbone name (``weights`` for it; the
    ``cifar_resnet*`` ones default to ``shared/weights/cifar10_resnet<depth>.th``) or a
    built :class:`oddkit.features.Backbone`. ``detectors``: specs (module docstring;
    default :data:`DEFAULT_DETECTORS`). C10-R: ``settings`` (subset of U, A, C; U is
    always computed, as the reference of GS), ``augmentations`` (setting A),
    ``corruptions`` (setting C; default the 19 of :data:`oddkit.shifts.CIFAR10_C`) and
    ``severities``. SPA/SSA: ``pool`` (default :data:`SHIFT_POOL`), ``semantic`` (the
    per-class table; default the data set's), ``train_shifts``. ``seeds``: transform
    seeds (default ``(123,)`` for C10-R, ``(0,)`` for SPA/SSA; C10-OC has no randomness).
    ``limit`` / ``train_limit``: images per class (module docstring). Everything is
    validated before the first feature is extracted.
    """
    protocol = _check_protocol(protocol)
    dets = parse_shift_detectors(detectors, l2_normalize)
    _check_limit("limit", limit)
    _check_limit("train_limit", train_limit)
    data = data or (folder_data(config) if config is not None else cifar10_data(_need_shared(shared)))
    plan = plan_protocol(protocol, data, settings, corruptions, severities, augmentations, pool, semantic, seeds)
    test_idx = per_class_subset(data.test.labels, limit)
    train_idx = per_class_subset(data.train.labels, train_limit)
    test = SubsetSource(data.test, test_idx, "limit") if limit is not None else data.test
    train = SubsetSource(data.train, train_idx, "train_limit") if train_limit is not None else data.train
    _check_images(train, test, plan)
    model = _backbone(backbone, weights, shared)
    run = _Run(model, dets, data, train, test, plan, cache_dir, batch_size, threads, progress, train_shifts)
    t0 = time.perf_counter()
    rows = run.execute()
    info = run.info(protocol, limit, train_limit, time.perf_counter() - t0)
    return ShiftResult(rows, summarize(rows), info)


# =========================================================================== validation
@dataclass
class ShiftPlan:
    """What a run will do, validated: protocol, groups of shifts, seeds, pool, semantic table."""

    protocol: str
    settings: tuple[str, ...] = ()
    groups: dict[str, list[tuple[str, int]]] = field(default_factory=dict)  # setting -> (shift, severity)
    pool: tuple[str, ...] = ()
    semantic: dict[str, tuple[str, ...]] = field(default_factory=dict)
    seeds: tuple[int, ...] = (0,)


def _check_protocol(protocol: Any) -> str:
    name = str(protocol).strip().lower()
    if name not in PROTOCOLS:
        raise ParamError(f"protocol must be one of {', '.join(PROTOCOLS)}; got {protocol!r}.")
    return name


def _check_limit(name: str, value: Any) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1):
        raise ParamError(f"{name} must be a positive integer (images per class) or None, got {value!r}.")


def _need_shared(shared: Any) -> Path:
    if shared is None:
        raise ParamError("give shared= (the folder holding data/cifar10), config= or data=.")
    path = Path(shared)
    if not path.is_dir():
        raise DataError(f"shared folder {path} not found (resolved: {path.resolve()}).")
    return path


def plan_protocol(
    protocol: str,
    data: ShiftData,
    settings: Sequence[str] = C10R_SETTINGS,
    corruptions: Sequence[str] | None = None,
    severities: Sequence[int] = (1, 2, 3, 4, 5),
    augmentations: Sequence[tuple[str, int]] = C10R_AUGMENTATIONS,
    pool: Sequence[str] | None = None,
    semantic: Mapping[str, Sequence[str]] | None = None,
    seeds: Sequence[int] | None = None,
) -> ShiftPlan:
    """Validate a run's options against the registry and ``data`` (no image is read):
    the shift groups per setting, the pool, the semantic table and the seeds."""
    from ..shifts import CIFAR10_C, check_severity
    from ..shifts.build import check_shifts

    plan = ShiftPlan(protocol, seeds=_check_seeds(seeds, C10R_SEED if protocol == "c10-r" else 0))
    if protocol == "c10-oc":
        plan.seeds = (0,)
        return plan
    if protocol == "c10-r":
        if isinstance(settings, str) or not settings or set(settings) - set(C10R_SETTINGS):
            raise ParamError(f"settings must be a non-empty subset of {list(C10R_SETTINGS)}, got {settings!r}.")
        plan.settings = tuple(s for s in C10R_SETTINGS if s in settings)
        if "A" in plan.settings:
            plan.groups["A"] = check_shifts(list(augmentations))
        if "C" in plan.settings:
            names = list(CIFAR10_C if corruptions is None else _names(corruptions, "corruptions"))
            _known(names, "corruptions" if corruptions is not None else "the 19 CIFAR-10-C corruptions (pass "
                   "corruptions=[...] to run the registered ones only)")  # fmt: skip
            sev = [check_severity(s) for s in severities]
            if not sev or len(set(sev)) != len(sev):
                raise ParamError(f"severities must be distinct values from 1 to 5, got {severities!r}.")
            plan.groups["C"] = check_shifts([(n, s) for n in names for s in sev])
        return plan
    plan.pool = tuple(SHIFT_POOL if pool is None else _names(pool, "pool"))
    if len(set(plan.pool)) != len(plan.pool) or not plan.pool:
        raise ParamError(f"pool must list distinct transforms, got {list(plan.pool)}.")
    _known(list(plan.pool), "the SPA/SSA pool" if pool is None else "pool")
    if semantic is not None and not isinstance(semantic, Mapping):
        raise ParamError(f"semantic must map class names to lists of transforms, got {semantic!r}.")
    table = dict(data.semantic if semantic is None else {str(k): v for k, v in semantic.items()})
    builtin = semantic is None and data.builtin_semantic
    plan.semantic = _check_semantic(table, data.classes, plan.pool, builtin)
    check_shifts([(t, TEST_SEVERITY) for t in plan.pool])
    return plan


def _names(values: Any, what: str) -> list[str]:
    if isinstance(values, str) or not isinstance(values, Sequence) or not values:
        raise ParamError(f"{what} must be a non-empty list of transform names, got {values!r}.")
    return [str(v) for v in values]


def _known(names: list[str], what: str) -> None:
    """Every name registered (looked up now, so shifts registered later count)."""
    from ..shifts import list_shifts

    registered = {s.name for s in list_shifts()}
    missing = [n for n in names if n not in registered]
    if missing:
        from ..shifts import get_shift

        try:
            get_shift(missing[0])  # the registry's message suggests close names
        except ParamError as exc:
            raise ParamError(f"{what}: {len(missing)} unknown transform(s) {missing}. {exc}") from None


def _check_semantic(
    table: dict[str, Any], classes: list[str], pool: Sequence[str], builtin: bool
) -> dict[str, tuple[str, ...]]:
    """Class names must exist; transform names must be registered shifts. Names outside
    the pool cannot matter and are kept as given; in oddkit's built-in tables they are
    not checked against the registry (so a pool restricted to the registered shifts
    works while some corruptions are not available)."""
    from ..shifts import get_shift

    out: dict[str, tuple[str, ...]] = {}
    for cls, transforms in table.items():
        if cls != "*" and cls not in classes:
            raise ParamError(
                f"the semantic table names class {cls!r}, which this data set does not have; classes: "
                f"{', '.join(classes)} (or '*' for every class)."
            )
        if isinstance(transforms, str) or not isinstance(transforms, Sequence):
            raise ParamError(f"semantic[{cls!r}] must be a list of transform names, got {transforms!r}.")
        for t in transforms:
            if not builtin or t in pool:
                get_shift(t)  # ParamError with close names
        out[cls] = tuple(str(t) for t in transforms)
    return out


def _check_seeds(seeds: Sequence[int] | None, default: int) -> tuple[int, ...]:
    if seeds is None:
        return (default,)
    if isinstance(seeds, (int, str)) or not seeds:
        raise ParamError(f"seeds must be a non-empty list of non-negative integers, got {seeds!r}.")
    out = []
    for s in seeds:
        if isinstance(s, bool) or not isinstance(s, (int, np.integer)) or s < 0:
            raise ParamError(f"seeds must be non-negative integers, got {s!r}.")
        out.append(int(s))
    if len(set(out)) != len(out):
        raise ParamError(f"seeds are listed twice: {list(seeds)}.")
    return tuple(out)


def _check_images(train: Any, test: Any, plan: ShiftPlan) -> None:
    """Image size and mode of one train and one test image against every shift; folder headers."""
    from ..shifts.base import check_shift_images

    names = {n for pairs in plan.groups.values() for n, _ in pairs} | set(plan.pool)
    for what, source in (("train", train), ("test", test)):
        if len(source) == 0:
            raise DataError(f"the {what} set is empty.")
        first = source.load(np.array([0]))
        for name in sorted(names):
            try:
                check_shift_images(first, name)
            except InputError as exc:
                raise InputError(f"{what} images: {exc}") from None
        _check_headers(source, (int(first.shape[1]), int(first.shape[2])), what)


def _check_headers(source: Any, size: tuple[int, int], what: str) -> None:
    """For image folders without a resize: every used file's header has the first image's
    size and a mode Pillow converts to RGB (cheap: headers only, no decoding)."""
    from PIL import Image

    folder, indices = source, None
    if isinstance(source, SubsetSource):
        folder, indices = source.source, source.index
    files = getattr(folder, "files", None)
    if files is None or getattr(folder, "size", None) is not None:
        return
    root = Path(folder.root)
    for i in range(len(files)) if indices is None else indices.tolist():
        try:
            with Image.open(root / files[i]) as im:
                hw, mode = (im.size[1], im.size[0]), im.mode
        except OSError as exc:
            raise DataError(f"{what} image {root / files[i]} cannot be read: {exc}") from None
        if hw != size:
            raise DataError(
                f"{what} image {root / files[i]} is {hw[0]}x{hw[1]} but the others are {size[0]}x{size[1]}; "
                "give the config a 'size' to resize every image."
            )
        if mode == "F":
            raise DataError(f"{what} image {root / files[i]} has mode {mode!r}, which oddkit does not read as RGB.")


def _backbone(backbone: Any, weights: str | Path | None, shared: Any) -> Any:
    from ..features import Backbone, create_backbone

    if isinstance(backbone, Backbone):
        return backbone
    name = str(backbone)
    if weights is None and name.startswith("cifar_resnet") and shared is not None:
        candidate = Path(shared) / "weights" / f"cifar10_{name.removeprefix('cifar_')}.th"
        weights = candidate if candidate.is_file() else None
    return create_backbone(name, weights=weights)


# =========================================================================== the run
class _Run:
    """One protocol run: extract, fit once per (class, detector), score every group, rows."""

    def __init__(self, model, dets, data, train, test, plan, cache_dir, batch_size, threads, progress,
                 train_shifts) -> None:  # fmt: skip
        self.model, self.dets, self.data, self.plan = model, dets, data, plan
        self.train, self.test = train, test
        self.opts = {"cache_dir": cache_dir, "batch_size": batch_size, "threads": threads, "progress": progress}
        self.progress, self.train_shifts = progress, bool(train_shifts)
        self.classes = list(data.classes)
        self.test_labels = np.asarray(test.labels)
        self.train_labels = np.asarray(train.labels)
        self.timing: dict[str, float] = {}
        self.cached: dict[str, bool] = {}
        self.fingerprints: dict[str, str] = {}
        self._memo: dict[str, np.ndarray] = {}

    # ------------------------------------------------------------------ features
    def features(self, key: str, source: Any) -> np.ndarray:
        """Features of ``source`` (float32); the clean train and test sets are kept for the run."""
        from ..features import extract

        if key in self._memo:
            return self._memo[key]
        if self.progress:
            print(f"features: {key} ({len(source)} images)", flush=True)
        t0 = time.perf_counter()
        out = extract(self.model, source, batch_size=self.opts["batch_size"], threads=self.opts["threads"],
                      cache_dir=self.opts["cache_dir"], progress=self.progress)  # fmt: skip
        self.timing[key] = round(time.perf_counter() - t0, 3)
        self.cached[key] = bool(out.from_cache)
        self.fingerprints[key] = str(source.fingerprint)
        features = np.asarray(out.features, dtype=np.float32)
        if key in ("train", "test"):
            self._memo[key] = features
        return features

    def shifted(self, key: str, source: Any, name: str, severity: int, seed: int) -> np.ndarray:
        from ..shifts.build import ShiftedSource

        return self.features(key, ShiftedSource(source, name, severity, seed=seed))

    # ------------------------------------------------------------------ fit
    def fit_all(self, train_F: np.ndarray, train_y: np.ndarray, seed: int) -> dict[tuple[str, int], Any]:
        """Fit every detector once per class: (display, class index) -> (detector | None, error, seconds)."""
        from ..detectors import create
        from ..errors import one_line

        fitted: dict[tuple[str, int], Any] = {}
        for d in self.dets:
            for c in range(len(self.classes)):
                X = train_F[train_y == c]
                params = dict(d.spec.params)
                if d.spec.randomized:
                    params["random_state"] = seed
                t0 = time.perf_counter()
                try:
                    det = create(d.spec.name, **params).fit(_l2(X) if d.l2 else X)
                    fitted[(d.display, c)] = (det, "", time.perf_counter() - t0)
                except Exception as exc:  # noqa: BLE001  (one detector's failure is reported in its rows)
                    fitted[(d.display, c)] = (None, one_line(exc, with_type=True), float("nan"))
        return fitted

    def score(self, fitted: dict, d: ShiftDetector, c: int, F: np.ndarray) -> np.ndarray | None:
        """Scores of ``F`` by the fitted class-``c`` detector; None when it failed (a failure
        while scoring marks the detector failed for the rest of the run, with the message)."""
        from ..errors import one_line

        det, _, fit_s = fitted[(d.display, c)]
        if det is None or F.shape[0] == 0:
            return None if det is None else np.empty(0)
        try:
            return det.score(_l2(F) if d.l2 else F)
        except Exception as exc:  # noqa: BLE001  (reported in the detector's rows)
            fitted[(d.display, c)] = (None, "scoring failed: " + one_line(exc, with_type=True), fit_s)
            return None

    # ------------------------------------------------------------------ protocol drivers
    def execute(self) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        for seed in self.plan.seeds:
            rows += {"c10-oc": self._c10_oc, "c10-r": self._c10_r, "spa": self._spa, "ssa": self._ssa}[
                self.plan.protocol](seed)  # fmt: skip
        return rows

    def _train_features(self, seed: int) -> tuple[np.ndarray, np.ndarray]:
        F = self.features("train", self.train)
        y = self.train_labels
        if not self.train_shifts or self.plan.protocol not in ("spa", "ssa"):
            return F, y
        parts, labels = [F], [y]
        for t in self.plan.pool:
            keeps = [c for c, cls in enumerate(self.classes) if t not in self._changing(cls)]
            keep = np.isin(y, keeps)
            if not keep.any():
                continue
            Ft = self.shifted(f"train:{t}:s{TRAIN_SEVERITY}:seed{seed}", self.train, t, TRAIN_SEVERITY, seed)
            parts.append(Ft[keep])
            labels.append(y[keep])
        return np.concatenate(parts), np.concatenate(labels)

    def _changing(self, cls: str) -> set[str]:
        if self.plan.protocol == "spa":
            return set()  # SPA: every transform is treated as meaning-preserving
        return set(self.plan.semantic.get("*", ())) | set(self.plan.semantic.get(cls, ()))

    def _clean_scores(self, fitted: dict, F: np.ndarray) -> dict[tuple[str, int], np.ndarray | None]:
        """Each class detector's scores of the whole clean test set."""
        return {(d.display, c): self.score(fitted, d, c, F) for d in self.dets for c in range(len(self.classes))}

    def _c10_oc(self, seed: int) -> list[dict[str, Any]]:
        fitted = self.fit_all(*self._train_features(seed), seed)
        clean = self._clean_scores(fitted, self.features("test", self.test))
        return [self._one_class_row("C10-OC", "clean", seed, d, c, fitted, clean, "", None)
                for d in self.dets for c in range(len(self.classes))]  # fmt: skip

    def _one_class_row(self, protocol, setting, seed, d, c, fitted, scores, shift, severity, standard=None) -> dict:
        """Normal = class c, anomalous = the rest, all from ``scores`` of one test group."""
        s = scores[(d.display, c)]
        y = (self.test_labels != c).astype(int)
        return self._row(protocol, setting, seed, d, c, fitted, y, s, shift, severity, standard)

    def _c10_r(self, seed: int) -> list[dict[str, Any]]:
        from tqdm.auto import tqdm

        fitted = self.fit_all(*self._train_features(seed), seed)
        clean = self._clean_scores(fitted, self.features("test", self.test))
        n_classes = len(self.classes)
        rows = [self._one_class_row("C10-R", "U", seed, d, c, fitted, clean, "", None)
                for d in self.dets for c in range(n_classes)]  # fmt: skip
        standard = {(r["detector"], r["class_index"]): r["auroc"] for r in rows}
        groups = [(setting, n, s) for setting in ("A", "C") for n, s in self.plan.groups.get(setting, [])]
        shifted: dict[tuple[str, int], dict[str, list[np.ndarray]]] = {}  # kept scores only
        for setting, name, sev in tqdm(groups, desc="shift groups", unit="group", disable=not self.progress):
            F = self.shifted(f"{setting}:{name}:s{sev}:seed{seed}", self.test, name, sev, seed)
            for d in self.dets:
                for c in range(n_classes):
                    s_norm = self.score(fitted, d, c, F[self.test_labels == c])
                    shifted.setdefault((d.display, c), {}).setdefault(setting, []).append(s_norm)
                    rows.append(self._mixed_row("C10-R", setting, seed, d, c, fitted, clean, s_norm, name, sev,
                                                standard[(d.display, c)]))  # fmt: skip
        for setting in [s for s in ("A", "C") if s in self.plan.groups]:
            for d in self.dets:
                for c in range(n_classes):
                    parts = shifted.get((d.display, c), {}).get(setting, [])
                    pooled = None if any(p is None for p in parts) else np.concatenate(parts)
                    rows.append(self._mixed_row("C10-R", setting, seed, d, c, fitted, clean, pooled, "all", None,
                                                standard[(d.display, c)], with_clean=True))  # fmt: skip
        return rows

    def _mixed_row(self, protocol, setting, seed, d, c, fitted, clean, s_norm, shift, severity, standard,
                   with_clean=False) -> dict:  # fmt: skip
        """Normal = ``s_norm`` (shifted class-c images; plus the clean ones if ``with_clean``),
        anomalous = the clean test images of the other classes."""
        s_clean = clean[(d.display, c)]
        if s_norm is None or s_clean is None:
            return self._row(protocol, setting, seed, d, c, fitted, None, None, shift, severity, standard)
        anomalies = s_clean[self.test_labels != c]
        normal = np.concatenate([s_clean[self.test_labels == c], s_norm]) if with_clean else s_norm
        y = np.r_[np.zeros(normal.size, int), np.ones(anomalies.size, int)]
        return self._row(protocol, setting, seed, d, c, fitted, y, np.r_[normal, anomalies], shift, severity, standard)

    def _spa(self, seed: int) -> list[dict[str, Any]]:
        from tqdm.auto import tqdm

        fitted = self.fit_all(*self._train_features(seed), seed)
        clean = self._clean_scores(fitted, self.features("test", self.test))
        n_classes = len(self.classes)
        rows = [self._one_class_row("SPA", "clean", seed, d, c, fitted, clean, "", None)
                for d in self.dets for c in range(n_classes)]  # fmt: skip
        standard = {(r["detector"], r["class_index"]): r["auroc"] for r in rows}
        per_t: list[dict[str, Any]] = []
        for t in tqdm(self.plan.pool, desc="SPA transforms", unit="transform", disable=not self.progress):
            F = self.shifted(f"SPA:{t}:s{TEST_SEVERITY}:seed{seed}", self.test, t, TEST_SEVERITY, seed)
            scores = self._clean_scores(fitted, F)
            per_t += [self._one_class_row("SPA", "SPA", seed, d, c, fitted, scores, t, TEST_SEVERITY,
                                          standard[(d.display, c)])
                      for d in self.dets for c in range(n_classes)]  # fmt: skip
        return rows + per_t + _mean_over_shifts(per_t)

    def _ssa(self, seed: int) -> list[dict[str, Any]]:
        from tqdm.auto import tqdm

        fitted = self.fit_all(*self._train_features(seed), seed)
        n, pool = len(self.test), self.plan.pool
        draw = ssa_draw(n, len(pool), seed)
        F: np.ndarray | None = None
        for k in tqdm(range(len(pool)), desc="SSA transforms", unit="transform", disable=not self.progress):
            idx = np.flatnonzero(draw == k)
            if idx.size == 0:
                continue
            part = self.shifted(f"SSA:{pool[k]}:s{TEST_SEVERITY}:seed{seed}", SubsetSource(self.test, idx, "ssa"),
                                pool[k], TEST_SEVERITY, seed)  # fmt: skip
            if F is None:
                F = np.empty((n, part.shape[1]), dtype=np.float32)
            F[idx] = part
        assert F is not None
        scores = self._clean_scores(fitted, F)
        rows = []
        for d in self.dets:
            for c, cls in enumerate(self.classes):
                own, y_all = ssa_labels(self.test_labels, c, draw, pool, self._changing(cls))
                s = scores[(d.display, c)]
                rows.append(self._row("SSA", "SSA-self", seed, d, c, fitted, y_all[own],
                                      None if s is None else s[own], "", TEST_SEVERITY))  # fmt: skip
                rows.append(self._row("SSA", "SSA-all", seed, d, c, fitted, y_all, s, "", TEST_SEVERITY))
        return rows

    # ------------------------------------------------------------------ rows
    def _row(self, protocol, setting, seed, d, c, fitted, y, s, shift, severity, standard=None) -> dict[str, Any]:
        from ..errors import one_line
        from ..metrics import evaluate
        from ..metrics.generalizability import generalizability_score

        det, error, fit_s = fitted[(d.display, c)]
        row: dict[str, Any] = {
            "protocol": protocol, "setting": setting, "seed": seed, "class": self.classes[c], "class_index": c,
            "detector": d.display, "shift": shift, "severity": severity,
            **{k: float("nan") for k in METRIC_KEYS},
            "n_normal": 0 if y is None else int((np.asarray(y) == 0).sum()),
            "n_anomalous": 0 if y is None else int((np.asarray(y) == 1).sum()),
            "fit_s": round(float(fit_s), 4), "error": error,
        }  # fmt: skip
        if det is not None and s is not None and y is not None:
            try:
                m = evaluate(y, s)
                row.update({k: float(m[k]) for k in METRIC_KEYS})
            except Exception as exc:  # noqa: BLE001  (one class/group without both labels)
                row["error"] = one_line(exc, with_type=True)
        if standard is not None:
            row["auroc_standard"] = standard
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # undefined GS is NaN in the row; summarize counts them
                row["gs"] = generalizability_score(standard, row["auroc"], missing="propagate")
        return row

    # ------------------------------------------------------------------ provenance
    def info(self, protocol: str, limit: int | None, train_limit: int | None, seconds: float) -> dict[str, Any]:
        name = NAMES[protocol]
        subset = limit is not None or train_limit is not None
        info: dict[str, Any] = {
            "protocol": name,
            "protocol_version": VERSIONS[name],
            "data": self.data.name,
            "backbone": self.model.name,
            "weights_hash": self.model.weights_hash,
            "detectors": [d.display for d in self.dets],
            "classes": self.classes,
            "seeds": list(self.plan.seeds),
            "limit": limit,
            "train_limit": train_limit,
            "subset": (f"SUBSET: {limit or 'all'} test images per class per group, {train_limit or 'all'} train "
                       "images per class (evenly spaced); not the full protocol") if subset else "full",
            "n_test": len(self.test),
            "n_train": len(self.train),
            "data_fingerprints": {"train": str(self.train.fingerprint), "test": str(self.test.fingerprint)},
            "group_fingerprints": self.fingerprints,
            "extract_seconds": self.timing,
            "from_cache": self.cached,
            "run_seconds": round(seconds, 3),
        }  # fmt: skip
        if protocol == "c10-r":
            info["settings"] = list(self.plan.settings)
            info["groups"] = {k: [list(p) for p in v] for k, v in self.plan.groups.items()}
        if protocol in ("spa", "ssa"):
            info["pool"] = list(self.plan.pool)
            info["semantic"] = {k: list(v) for k, v in self.plan.semantic.items()}
            info["train_shifts"] = self.train_shifts
            info["severities"] = {"test": TEST_SEVERITY, "train": TRAIN_SEVERITY}
        return info


def ssa_draw(n: int, pool_size: int, seed: int) -> np.ndarray:
    """SSA: the pool index of each of ``n`` test images (file order), uniform, ``RandomState(seed)``."""
    return np.random.RandomState(seed).randint(0, pool_size, size=n)


def ssa_labels(
    labels: np.ndarray, c: int, draw: np.ndarray, pool: Sequence[str], changing: set[str]
) -> tuple[np.ndarray, np.ndarray]:
    """SSA labels for class ``c``: (``own`` = mask of class-c images, ``y`` for every image).

    ``y = 1`` (anomalous) for an image of another class, and for a class-c image whose
    drawn transform ``pool[draw[i]]`` is in ``changing`` (changes the meaning for c).
    SSA-self uses ``y[own]``; SSA-all uses ``y``.
    """
    labels = np.asarray(labels)
    own = labels == c
    changed = np.isin(draw, [k for k, t in enumerate(pool) if t in changing])
    return own, (~own | changed).astype(int)


def _mean_over_shifts(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (seed, class, detector): the mean of each metric over the SPA transforms (``shift="mean"``)."""
    out: dict[tuple, dict[str, Any]] = {}
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["seed"], r["class_index"], r["detector"]), []).append(r)
    for key, part in groups.items():
        first = part[0]
        row = {**first, "shift": "mean", "severity": TEST_SEVERITY,
               "n_normal": sum(r["n_normal"] for r in part), "n_anomalous": sum(r["n_anomalous"] for r in part),
               "error": next((r["error"] for r in part if r["error"]), "")}  # fmt: skip
        for k in (*METRIC_KEYS, "gs"):
            vals = np.array([r.get(k, np.nan) for r in part], dtype=float)
            row[k] = float(vals.mean())  # NaN when a transform failed: the mean is then undefined
        out[key] = row
    return list(out.values())


def _l2(F: np.ndarray) -> np.ndarray:
    from ..detectors.base import l2_normalise_rows

    return l2_normalise_rows(np.asarray(F, dtype=np.float32))


# =========================================================================== means
SUMMARY_KEYS: tuple[str, ...] = ("auroc", "auroc_standard", "gs", "fpr95", "aupr_in", "aupr_out")


def summarize(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Means per (protocol, setting, detector, shift, severity): first over seeds, then over classes.

    For each metric: ``<metric>`` = mean over classes (units) of the per-class mean over
    seeds, NaN units left out; ``<metric>_std`` = standard deviation over those units
    (ddof=0); ``n_units`` = classes with a finite AUROC, ``n_units_gs`` = classes with a
    finite GS; ``n_seeds``; with several seeds ``auroc_seed_std`` = the mean over units of
    the standard deviation over seeds.
    """
    groups: dict[tuple, list[Mapping[str, Any]]] = {}
    for r in rows:
        key = (r["protocol"], r["setting"], r["detector"], r["shift"], r["severity"])
        groups.setdefault(key, []).append(r)
    out = []
    for (protocol, setting, detector, shift, severity), part in groups.items():
        entry: dict[str, Any] = {"protocol": protocol, "setting": setting, "detector": detector, "shift": shift,
                                 "severity": severity}  # fmt: skip
        seeds = sorted({r["seed"] for r in part})
        units = list(dict.fromkeys(r["class"] for r in part))
        for k in SUMMARY_KEYS:
            if not any(k in r for r in part):
                continue
            table = np.full((len(units), len(seeds)), np.nan)
            for r in part:
                table[units.index(r["class"]), seeds.index(r["seed"])] = _float(r.get(k))
            finite_cells = np.isfinite(table)
            with np.errstate(invalid="ignore", divide="ignore"):  # a unit without a finite value: NaN
                per_unit = np.where(finite_cells, table, 0.0).sum(axis=1) / finite_cells.sum(axis=1)
            finite = per_unit[np.isfinite(per_unit)]
            entry[k] = float(finite.mean()) if finite.size else float("nan")
            entry[f"{k}_std"] = float(finite.std()) if finite.size else float("nan")
            if k == "auroc":
                entry["n_units"] = int(finite.size)
                if len(seeds) > 1:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN units
                        entry["auroc_seed_std"] = float(np.nanmean(np.nanstd(table, axis=1)))
            if k == "gs":
                entry["n_units_gs"] = int(finite.size)
        entry["n_seeds"] = len(seeds)
        entry["errors"] = sum(1 for r in part if r.get("error"))
        out.append(entry)
    return out


def _float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


# =========================================================================== bench entry point
def run_shift_bench(
    protocol: str,
    *,
    shared: str | Path | None = "../shared",
    config: str | Path | None = None,
    backbone: str = "efficientnet_lite0",
    detectors: str | Sequence[str] | None = None,
    limit: int | None = None,
    train_limit: int | None = None,
    cache_dir: str | Path | None = None,
    out: str | Path = "oddkit-shift",
    progress: bool = True,
    title: str | None = None,
    **options: Any,
) -> ShiftResult:
    """Run a shift protocol and write ``results.csv``, ``summary.csv``, ``leaderboard.md``,
    ``auroc_vs_severity.png`` (C10-R setting C), ``report.html`` and ``provenance.json``
    into ``out``. ``options`` go to :func:`run_shift_protocol` (``l2_normalize``,
    ``settings``, ``corruptions``, ``severities``, ``pool``, ``semantic``, ``seeds``,
    ``train_shifts``, ``weights``, ``batch_size``, ``threads``). Returns the result; the
    written paths are in ``result.info["files"]``.
    """
    from ..bench.provenance import collect
    from ..report.shift import write_shift_report

    t0 = time.perf_counter()
    result = run_shift_protocol(
        protocol, shared=None if config is not None else shared, config=config, backbone=backbone,
        detectors=detectors, limit=limit, train_limit=train_limit, cache_dir=cache_dir, progress=progress,
        **options,
    )  # fmt: skip
    prov = collect(**result.info, cache_dir=None if cache_dir is None else str(cache_dir),
                   wall_seconds=round(time.perf_counter() - t0, 3))  # fmt: skip
    paths = write_shift_report(result, out, title, provenance=prov)
    result.info["files"] = {k: str(v) for k, v in paths.items()}
    return result

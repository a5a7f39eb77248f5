"""oddkit's post-hoc OOD detectors against pytorch-ood 0.4.0 on the same cached ResNet features.

Protocol C10-OOD-local (``../shared/docs/protocols.md``): a CIFAR-10 ResNet from
``../shared/weights`` (ResNet-20 unless ``--depth`` says otherwise) gives pooled 64-d
features and logits; detectors are fitted on the 50,000 CIFAR-10 train features (and
labels, for Mahalanobis and RMDS) with the network's linear head ``(W, b)``; ID test =
the 10,000 CIFAR-10 test images; OOD = ``mnist``, ``textures``, ``gaussian``,
``uniform``. Features come from :func:`oddkit.features.extract` and are cached in
``--cache-dir``: the first run extracts about 76,000 images (a few minutes on 2 cores),
later runs read the cache.

For every method that both libraries have, with the same hyperparameters on both sides
(oddkit at its defaults, pytorch-ood configured to match: see ``PAIRS``), it prints the
AUROC of each side on each OOD set and their difference, the mean AUROC, and the time
ratio ``pytorch-ood seconds / oddkit seconds`` for fit + scoring of the ID test set and
of every OOD set; then the median ratio and the ratio for KNN.

ODIN is the exception: it back-propagates to the input image, so it needs the network
and the images, not the cached features. It runs both libraries' ODIN through the same
ResNet on the same images: ``--odin-images N`` images of the ID test set and of each
OOD set (default 500; 0 = every image, 26,000 forward + backward passes per side, tens
of minutes on 2 cores), spread evenly over each set by a fixed rule (indices
``floor(linspace(0, len - 1, N))``; the CIFAR-10 test folder is sorted by class, so the
first N would hold one class). Its AUROCs are on that subset (said in the output and in
``--out``). Both sides get the same uint8 images in memory (decoded before timing) and
turn them into normalised tensors with the backbone's transform inside the timed run,
in batches of oddkit's ``batch_size`` (128); time = fit + scoring of the five sets, best
of ``--odin-repeats`` (default ``min(--repeats, 2)``: each run is long), alternating
sides, after untimed forward + backward passes to warm up. ODIN's time ratio is
reported on its own line, not in the median (it times the network, not a detector's
arithmetic).

Fairness: both sides run in this process, one after the other, on the same features:
numpy float32 arrays for oddkit (which computes in float64), the same memory as float32
torch tensors for pytorch-ood (``torch.from_numpy``, CPU), pytorch-ood's feature-level
API (``fit_features`` / ``predict_features``, ``predict_logits`` on ``head(features)``,
``predict_feature_maps`` on ``(n, 64, 1, 1)`` maps for ASH and SCALE) under
``torch.no_grad()`` except GradNorm, which needs autograd. Both sides may use every core
(``--threads``: torch intra-op threads, BLAS threads, oddkit's neighbour-search threads;
pytorch-ood's KNN runs scikit-learn with ``n_jobs=-1``). Each side is timed
``--repeats`` times, alternating which side goes first, and the best time of each is
kept (wall clock, ``time.perf_counter``).

Run it on an otherwise idle machine: both libraries' threads (torch's OpenMP pool,
OpenBLAS) slow down badly when other processes compete for the cores (pytorch-ood's
Mahalanobis took 1.5-2.7 s instead of 0.06 s on a busy 2-core machine). The script
prints the load average at the start and the end and records it in ``--out``.

    python benchmarks/posthoc_vs_pytorch_ood.py                        # all 17 pairs and ODIN
    python benchmarks/posthoc_vs_pytorch_ood.py --methods knn_ood,vim --out results.json
    python benchmarks/posthoc_vs_pytorch_ood.py --methods odin --odin-images 1000
    python benchmarks/posthoc_vs_pytorch_ood.py --depth 56 --cache-dir /tmp/features

Needs torch and pytorch-ood 0.4.0 (``pip install --no-deps pytorch-ood==0.4.0``; its
detector modules are loaded without torchvision by ``tests/helpers.py``).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "tests"))

from oddkit import detectors
from oddkit.bench import provenance
from oddkit.detectors import _neighbors
from oddkit.detectors.posthoc.feature import vim_default_dim
from oddkit.metrics import auroc

SHARED = ROOT.parent / "shared"
DEFAULT_CACHE = Path.home() / ".cache" / "oddkit" / "features"
OOD_SETS = ("mnist", "textures", "gaussian", "uniform")
#: issue targets
MAX_AUROC_DIFF = 0.002
MIN_MEDIAN_RATIO = 2.0
MIN_KNN_RATIO = 10.0

TorchFit = Callable[[Any, Any], Any] | None  # (features, labels) -> anything
TorchScore = Callable[[Any], Any]  # features -> scores tensor


# --------------------------------------------------------------------------- the pairs
@dataclass(frozen=True)
class Pair:
    """One method in both libraries.

    ``name``: oddkit registry name (run at its defaults). ``theirs``: the pytorch-ood
    call as configured here. ``build(P, lin, dim)`` returns pytorch-ood's (fit, score)
    functions on torch tensors, from ``P`` (loads a pytorch-ood detector module), the
    head as a float32 ``torch.nn.Linear`` and the feature width. ``note``: settings we
    changed from pytorch-ood's defaults and known differences in the computation.
    """

    name: str
    theirs: str
    build: Callable[[Callable[[str], Any], Any, int], tuple[TorchFit, TorchScore]]
    note: str = ""


def _flat_head(lin: Any) -> Callable[[Any], Any]:
    return lambda maps: lin(maps.flatten(1))


def _maps(z: Any) -> Any:
    return z[:, :, None, None]


def _logit_pair(make: Callable[[Callable[[str], Any]], Any], fitted: bool = False):
    def build(P, lin, dim):
        det = make(P)
        fit = (lambda z, y: det.fit_logits(lin(z), y)) if fitted else None
        return fit, lambda z: det.predict_logits(lin(z))

    return build


def _features_pair(make: Callable[[Callable[[str], Any], Any, int], Any], labels: bool = True):
    def build(P, lin, dim):
        det = make(P, lin, dim)
        fit = (lambda z, y: det.fit_features(z, y)) if labels else (lambda z, y: det.fit_features(z))
        return fit, det.predict_features

    return build


def _ash(variant: str, fraction: float):
    def build(P, lin, dim):
        det = P("ash").ASH(None, _flat_head(lin), variant=variant, percentile=fraction)
        return None, lambda z: det.predict_feature_maps(_maps(z))

    return build


def _react(P, lin, dim):
    det = P("react").ReAct(backbone=None, head=lin, percentile=0.9)
    return det.fit_feature_maps, det.predict_feature_maps


def _scale(P, lin, dim):
    det = P("scale").SCALE(None, _flat_head(lin), percentile=0.85)
    return None, lambda z: det.predict_feature_maps(_maps(z))


def _gradnorm(P, lin, dim):
    det = P("gradnorm").GradNorm(lin, param_filter=lambda name: name == "weight", temperature=1.0)
    return None, det.predict


FLOAT32 = "pytorch-ood computes in float32 on the float32 features, oddkit in float64"
PAIRS: tuple[Pair, ...] = (
    Pair("msp", "MaxSoftmax(t=1)", _logit_pair(lambda P: P("softmax").MaxSoftmax(None, t=1.0)), FLOAT32),
    Pair("maxlogit", "MaxLogit()", _logit_pair(lambda P: P("maxlogit").MaxLogit(None)), FLOAT32),
    Pair("energy", "EnergyBased(t=1)", _logit_pair(lambda P: P("energy").EnergyBased(None, t=1.0)), FLOAT32),
    Pair(
        "entropy",
        "Entropy()",
        _logit_pair(lambda P: P("entropy").Entropy(None)),
        FLOAT32 + "; pytorch-ood clips probabilities to [1e-7, 1] before the log (oddkit: exact entropy)",
    ),
    Pair(
        "gen",
        "GEN(gamma=0.1, M=100)",
        _logit_pair(lambda P: P("gen").GEN(None, gamma=0.1, M=100)),
        "M=100 set to oddkit's default (pytorch-ood: None = all classes; the same for 10 classes); "
        "pytorch-ood averages the terms (same ranking) and clamps probabilities to "
        "[1e-7, 1 - 1e-7], so confident rows tie; oddkit sums exact float64 terms from "
        "log-probabilities (the paper's formula). On ResNet-20, 13% of the ID test rows have "
        "p_max > 1 - 1e-7; oddkit's formula with that clamp added gives pytorch-ood's AUROCs "
        "to 1e-4 (deliberate difference)",
    ),
    Pair(
        "klmatching",
        "KLMatching() fitted on the train logits",
        _logit_pair(lambda P: P("klmatching").KLMatching(None), fitted=True),
        FLOAT32,
    ),
    Pair("react", "ReAct(percentile=0.9)", _react, FLOAT32),
    Pair("ash_p", "ASH('ash-p', percentile=0.60)", _ash("ash-p", 0.60), "percentile 0.60 set to oddkit's (pytorch-ood default 0.65); " + FLOAT32),
    Pair("ash_b", "ASH('ash-b', percentile=0.65)", _ash("ash-b", 0.65), FLOAT32),
    Pair("ash_s", "ASH('ash-s', percentile=0.90)", _ash("ash-s", 0.90), "percentile 0.90 set to oddkit's (pytorch-ood default 0.65); " + FLOAT32),
    Pair("scale", "SCALE(percentile=0.85)", _scale, "percentile 0.85 set to oddkit's (pytorch-ood default 0.65); " + FLOAT32),
    Pair(
        "dice",
        "DICE(p=0.9)",
        _features_pair(lambda P, lin, dim: P("dice").DICE(None, lin.weight, lin.bias, p=0.9)),
        "p=0.9 set to oddkit's (pytorch-ood has no default); " + FLOAT32,
    ),
    Pair(
        "mahalanobis",
        "Mahalanobis()",
        _features_pair(lambda P, lin, dim: P("mahalanobis").Mahalanobis(None)),
        "pytorch-ood: scatter matrix n*Sigma + 1e-6 I inverted in float32 and half the squared "
        "distance (same ranking up to rounding); oddkit: covariance pseudo-inverse in float64",
    ),
    Pair(
        "rmds",
        "RMD()",
        _features_pair(lambda P, lin, dim: P("rmd").RMD(None)),
        "pytorch-ood: scatter matrices + 1e-6 I inverted in float32 (score / n, same ranking); "
        "oddkit: covariance pseudo-inverses in float64",
    ),
    Pair(
        "knn_ood",
        "KNN(k=50)",
        _features_pair(lambda P, lin, dim: P("knn").KNN(None, k=50)),
        "pytorch-ood: scikit-learn NearestNeighbors (n_jobs=-1) on float32 unit vectors; "
        "oddkit: exact float64 k-th distance",
    ),
    Pair(
        "vim",
        "ViM(d=N//2)",
        _features_pair(lambda P, lin, dim: P("vim").ViM(None, d=vim_default_dim(dim), w=lin.weight, b=lin.bias)),
        "d = oddkit's default N // 2 = 32 for 64-d features (pytorch-ood has no default); "
        "pytorch-ood computes the eigenvectors in float32",
    ),
    Pair(
        "fdbd",
        "fDBD()",
        _features_pair(lambda P, lin, dim: P("fdbd").fDBD(None, lin), labels=False),
        FLOAT32,
    ),
    Pair(
        "gradnorm",
        "GradNorm(param_filter=head weight, temperature=1)",
        _gradnorm,
        "param_filter = the head's weight (the paper's setting, oddkit's closed form; pytorch-ood's "
        "default is every parameter); pytorch-ood: per-sample autograd (torch.func.vmap, its "
        "default micro_batch_size=32) in float32; oddkit: closed form in float64",
    ),
)
PAIR_BY_NAME = {p.name: p for p in PAIRS}


@dataclass(frozen=True)
class ImagePair:
    """A method both libraries run through the network on images (ODIN), not on features."""

    name: str
    theirs: str
    note: str = ""


ODIN = ImagePair(
    "odin",
    "ODIN(model, eps=0.0014, temperature=1000, norm_std=the backbone's ImageNet std)",
    "eps and temperature = oddkit's defaults (the paper's code; pytorch-ood's defaults too); "
    "norm_std = the backbone transform's std on both sides (pytorch-ood default None), so eps "
    "is in [0, 1] pixel units; pytorch-ood averages the loss over the batch and takes the "
    "final softmax in float32, oddkit sums the loss (the same signs) and takes it in float64; "
    "AUROCs on a subset of the images (--odin-images)",
)
IMAGE_PAIRS: tuple[ImagePair, ...] = (ODIN,)
IMAGE_PAIR_BY_NAME = {p.name: p for p in IMAGE_PAIRS}
METHOD_NAMES = (*PAIR_BY_NAME, *IMAGE_PAIR_BY_NAME)
#: the sets ODIN scores: the ID test images, then the OOD sets
ODIN_SETS = ("test", *OOD_SETS)
DEFAULT_ODIN_IMAGES = 500
INDEX_RULE = "floor(linspace(0, len(set) - 1, N)): N indices spread evenly over each set"


# --------------------------------------------------------------------------- data
@dataclass
class Features:
    """The C10-OOD-local features of one backbone, float32, and its head."""

    train: np.ndarray
    train_labels: np.ndarray
    test: np.ndarray
    ood: dict[str, np.ndarray]
    W: np.ndarray
    b: np.ndarray
    id_accuracy: float
    info: dict[str, Any]


def weights_path(shared: Path, depth: int) -> Path:
    """The checkpoint of the ResNet of ``depth``; exits (nothing run) when the data or it is absent."""
    weights = shared / "weights" / f"cifar10_resnet{depth}.th"
    if not (shared / "data" / "cifar10").is_dir() or not weights.is_file():
        raise SystemExit(
            f"C10-OOD-local needs {shared}/data/cifar10 and {weights}; pass --shared (the "
            "folder with data/ and weights/). Nothing was run."
        )
    return weights


def load_features(shared: Path, depth: int, cache_dir: Path, progress: bool) -> Features:
    from oddkit.data import c10_ood_local
    from oddkit.features import create_backbone, extract

    weights = weights_path(shared, depth)
    data = c10_ood_local(shared)
    backbone = create_backbone(f"cifar_resnet{depth}", weights=weights)
    start = time.perf_counter()
    parts = {}
    for name, source in (("train", data.train), ("test", data.test), *data.ood.items()):
        parts[name] = extract(backbone, source, cache_dir=cache_dir, progress=progress)
    seconds = time.perf_counter() - start
    test = parts["test"]
    W, b = backbone.head()
    own = lambda a: np.array(a, dtype=np.float32, order="C")  # writable (cache reads are not)
    return Features(
        train=own(parts["train"].features),
        train_labels=np.array(parts["train"].labels, dtype=np.int64),
        test=own(test.features),
        ood={name: own(parts[name].features) for name in OOD_SETS},
        W=W,
        b=b,
        id_accuracy=float((test.logits.argmax(axis=1) == test.labels).mean()),
        info={
            "backbone": f"cifar_resnet{depth}",
            "weights": provenance.file_entry(weights, backbone.weights_hash),
            "data_fingerprints": data.fingerprints(),
            "rows": {name: len(p) for name, p in parts.items()},
            "from_cache": all(p.from_cache for p in parts.values()),
            "feature_seconds": round(seconds, 1),
        },
    )


@dataclass
class OdinImages:
    """The network and a fixed subset of each C10-OOD-local set's images (uint8 NHWC), for ODIN."""

    backbone: Any
    images: dict[str, np.ndarray]  # "test" and the OOD sets
    id_accuracy: float  # of the network on the ID test images of the subset
    info: dict[str, Any]


def spread_indices(total: int, n: int) -> np.ndarray:
    """``n`` indices spread evenly over ``range(total)``; all of them when ``n`` is 0 or >= total.

    The CIFAR-10 test folder is sorted by class, so the first ``n`` would be one class.
    """
    if n <= 0 or n >= total:
        return np.arange(total, dtype=np.int64)
    return np.floor(np.linspace(0, total - 1, n)).astype(np.int64)


def load_odin_images(shared: Path, depth: int, per_set: int) -> OdinImages:
    """The ResNet and ``per_set`` images of the ID test set and of each OOD set, decoded."""
    import torch

    from oddkit.data import c10_ood_local
    from oddkit.features import create_backbone

    weights = weights_path(shared, depth)
    data = c10_ood_local(shared)
    backbone = create_backbone(f"cifar_resnet{depth}", weights=weights)
    sources = {"test": data.test, **{s: data.ood[s] for s in OOD_SETS}}
    picked = {s: spread_indices(len(src), per_set) for s, src in sources.items()}
    images = {s: np.ascontiguousarray(src.load(picked[s])) for s, src in sources.items()}
    with torch.no_grad():
        logits = backbone.model(backbone.transform(images["test"]))
    labels = np.asarray(data.test.labels)[picked["test"]]
    return OdinImages(
        backbone=backbone,
        images=images,
        id_accuracy=float((logits.argmax(dim=1).numpy() == labels).mean()),
        info={
            "backbone": f"cifar_resnet{depth}",
            "weights": provenance.file_entry(weights, backbone.weights_hash),
            "data_fingerprints": {"test": data.test.fingerprint}
            | {f"ood/{s}": data.ood[s].fingerprint for s in OOD_SETS},
            "images_per_set_requested": per_set,
            "index_rule": INDEX_RULE,
            "rows": {s: int(picked[s].size) for s in ODIN_SETS},
            "rows_in_set": {s: len(src) for s, src in sources.items()},
            "batch_size": detectors.create(ODIN.name).batch_size,
            "note": "ODIN AUROCs are on these subsets, not on the full sets",
        },
    )


def odin_header(D: OdinImages, threads: int, repeats: int) -> str:
    rows = D.info["rows"]
    return (
        f"ODIN on images, not the cached features: {D.info['backbone']}, "
        + ", ".join(f"{s} {rows[s]} of {D.info['rows_in_set'][s]}" for s in ODIN_SETS)
        + f" images, indices {INDEX_RULE.split(':')[0]} per set (ID test accuracy on them "
        f"{D.id_accuracy:.4f}); batch size {D.info['batch_size']}, {threads} threads, best of "
        f"{repeats}. ODIN AUROCs are on this subset, not the full sets."
    )


# --------------------------------------------------------------------------- timing
def run_ours(name: str, F: Features) -> dict[str, np.ndarray]:
    det = detectors.create(name)
    y = F.train_labels if "labels" in det.inputs else None
    det.fit(F.train, y, head=(F.W, F.b))
    out = {"test": det.score(F.test)}
    out.update({s: det.score(F.ood[s]) for s in OOD_SETS})
    return out


def run_theirs(pair: Pair, F: Features, T: dict[str, Any], P: Callable[[str], Any]) -> dict[str, np.ndarray]:
    import torch

    with torch.no_grad():
        fit, score = pair.build(P, T["lin"], F.train.shape[1])
        if fit is not None:
            fit(T["train"], T["labels"])
        out = {"test": score(T["test"])}
        out.update({s: score(T[s]) for s in OOD_SETS})
    return {k: v.detach().cpu().numpy().astype(np.float64) for k, v in out.items()}


def run_odin_ours(D: OdinImages) -> dict[str, np.ndarray]:
    det = detectors.create(ODIN.name).fit(model=D.backbone)
    return {s: det.score(D.images[s], progress=False) for s in ODIN_SETS}


def run_odin_theirs(D: OdinImages, P: Callable[[str], Any]) -> dict[str, np.ndarray]:
    """pytorch-ood's ODIN with oddkit's settings, on the same images in the same batches."""
    import torch

    bb, params = D.backbone, detectors.create(ODIN.name).get_params()
    det = P("odin").ODIN(
        bb.model, eps=params["epsilon"], temperature=params["temperature"], norm_std=list(bb.transform.std)
    )
    step, out = params["batch_size"], {}
    for s in ODIN_SETS:
        images = D.images[s]
        parts = [det.predict(bb.transform(images[i : i + step])) for i in range(0, len(images), step)]
        out[s] = torch.cat(parts).detach().cpu().numpy().astype(np.float64)
    return out


def warm_up(D: OdinImages) -> None:
    """Untimed forward + backward passes of one full batch and of a small one (the last
    batch of a set is smaller), so that neither side pays torch's first-call costs."""
    import torch

    bb, step = D.backbone, D.info["batch_size"]
    for rows in (step, 7):
        x = bb.transform(np.resize(D.images["test"], (rows, *D.images["test"].shape[1:])))
        x.requires_grad_(True)
        with torch.enable_grad():
            torch.autograd.grad(bb.model(x).sum(), x)
        with torch.no_grad():
            bb.model(x.detach())


def timed(fn: Callable[[], dict[str, np.ndarray]]) -> tuple[dict[str, np.ndarray], float]:
    gc.collect()
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def aurocs(scores: dict[str, np.ndarray]) -> dict[str, float]:
    """AUROC of every OOD set against the ID test set (OOD positive)."""
    id_scores = scores["test"]
    out = {}
    for s in OOD_SETS:
        y = np.r_[np.zeros(id_scores.size, int), np.ones(scores[s].size, int)]
        out[s] = auroc(y, np.r_[id_scores, scores[s]])
    return out


Runs = dict[str, Callable[[], dict[str, np.ndarray]]]


def race(runs: Runs, repeats: int) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, list[float]]]:
    """Both sides ``repeats`` times, alternating who goes first: first scores, all times."""
    times: dict[str, list[float]] = {"oddkit": [], "pytorch_ood": []}
    scores: dict[str, dict[str, np.ndarray]] = {}
    for r in range(repeats):
        order = ("oddkit", "pytorch_ood") if r % 2 == 0 else ("pytorch_ood", "oddkit")
        for side in order:
            out, seconds = timed(runs[side])
            times[side].append(seconds)
            scores.setdefault(side, out)
    return scores, times


def compare(pair: Pair, F: Features, T: dict[str, Any], P: Callable[[str], Any], repeats: int) -> dict[str, Any]:
    """Both sides ``repeats`` times (alternating who goes first); best times, AUROCs."""
    runs = {"oddkit": lambda: run_ours(pair.name, F), "pytorch_ood": lambda: run_theirs(pair, F, T, P)}
    return result_row(pair, *race(runs, repeats))


def compare_odin(D: OdinImages, P: Callable[[str], Any], repeats: int) -> dict[str, Any]:
    """ODIN on both sides through the same network and images; AUROCs on the subset."""
    warm_up(D)
    runs = {"oddkit": lambda: run_odin_ours(D), "pytorch_ood": lambda: run_odin_theirs(D, P)}
    scores, times = race(runs, repeats)
    row = result_row(ODIN, scores, times)
    row["images_per_set"] = D.info["rows"]
    row["index_rule"] = INDEX_RULE
    row["max_abs_score_diff"] = max(
        float(np.max(np.abs(scores["oddkit"][s] - scores["pytorch_ood"][s]))) for s in ODIN_SETS
    )
    return row


def result_row(
    pair: Pair | ImagePair, scores: dict[str, dict[str, np.ndarray]], times: dict[str, list[float]]
) -> dict[str, Any]:
    """AUROCs of both sides, their differences and the best times of one method."""
    ours, theirs = aurocs(scores["oddkit"]), aurocs(scores["pytorch_ood"])
    best = {side: min(t) for side, t in times.items()}
    return {
        "method": pair.name,
        "pytorch_ood": pair.theirs,
        "oddkit_params": detectors.create(pair.name).get_params(),
        "auroc_oddkit": ours,
        "auroc_pytorch_ood": theirs,
        "auroc_diff": {s: abs(ours[s] - theirs[s]) for s in OOD_SETS},
        "mean_auroc_oddkit": float(np.mean(list(ours.values()))),
        "mean_auroc_pytorch_ood": float(np.mean(list(theirs.values()))),
        "seconds_oddkit": best["oddkit"],
        "seconds_pytorch_ood": best["pytorch_ood"],
        "all_seconds": times,
        "ratio": best["pytorch_ood"] / best["oddkit"],
        "note": pair.note,
    }


# --------------------------------------------------------------------------- report
def print_method(row: dict[str, Any]) -> None:
    print(f"\n{row['method']}  (pytorch-ood: {row['pytorch_ood']})")
    if "images_per_set" in row:
        counts = ", ".join(f"{s} {n}" for s, n in row["images_per_set"].items())
        print(f"  on a subset of the images ({counts}); max |score diff| {row['max_abs_score_diff']:.2e}")
    print(f"  {'OOD set':<10} {'oddkit':>8} {'pt-ood':>8} {'|diff|':>8}")
    for s in OOD_SETS:
        a, b = row["auroc_oddkit"][s], row["auroc_pytorch_ood"][s]
        flag = "  > 0.002" if abs(a - b) > MAX_AUROC_DIFF else ""
        print(f"  {s:<10} {a:8.4f} {b:8.4f} {abs(a - b):8.4f}{flag}")
    print(f"  {'mean':<10} {row['mean_auroc_oddkit']:8.4f} {row['mean_auroc_pytorch_ood']:8.4f}")
    print(
        f"  fit+score: oddkit {row['seconds_oddkit']:.3f} s, pytorch-ood "
        f"{row['seconds_pytorch_ood']:.3f} s, ratio {row['ratio']:.1f}x"
    )


def summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Median and smallest time ratio of the feature pairs (ODIN's apart), worst AUROC gaps."""
    ratios = [r["ratio"] for r in rows if r["method"] in PAIR_BY_NAME]
    worst = {r["method"]: max(r["auroc_diff"].values()) for r in rows}
    knn = next((r["ratio"] for r in rows if r["method"] == "knn_ood"), None)
    out = {
        "median_ratio": statistics.median(ratios) if ratios else None,
        "min_ratio": min(ratios) if ratios else None,
        "knn_ratio": knn,
        "max_auroc_diff": worst,
        "over_auroc_target": sorted(m for m, d in worst.items() if d > MAX_AUROC_DIFF),
    }
    odin = next((r for r in rows if r["method"] == ODIN.name), None)
    if odin is not None:
        out["odin_ratio"] = odin["ratio"]
        out["odin_images_per_set"] = odin["images_per_set"]
    return out


def print_summary(rows: list[dict[str, Any]], summ: dict[str, Any]) -> None:
    print("\nSummary (AUROC: mean over the four OOD sets; ratio = pytorch-ood s / oddkit s)")
    print(f"  {'method':<12} {'oddkit':>8} {'pt-ood':>8} {'max|d|':>8} {'oddkit s':>9} {'pt-ood s':>9} {'ratio':>7}")
    for r in rows:
        print(
            f"  {r['method']:<12} {r['mean_auroc_oddkit']:8.4f} {r['mean_auroc_pytorch_ood']:8.4f} "
            f"{max(r['auroc_diff'].values()):8.4f} {r['seconds_oddkit']:9.3f} "
            f"{r['seconds_pytorch_ood']:9.3f} {r['ratio']:6.1f}x"
        )
    if summ["median_ratio"] is not None:
        print(f"\nmedian time ratio: {summ['median_ratio']:.1f}x (target >= {MIN_MEDIAN_RATIO:g})")
        print(f"smallest ratio:    {summ['min_ratio']:.1f}x (target >= 1)")
    if summ["knn_ratio"] is not None:
        print(f"KNN ratio:         {summ['knn_ratio']:.1f}x (target >= {MIN_KNN_RATIO:g})")
    if "odin_ratio" in summ:
        counts = ", ".join(f"{s} {n}" for s, n in summ["odin_images_per_set"].items())
        print(
            f"ODIN ratio:        {summ['odin_ratio']:.2f}x (not in the median: both sides time the "
            f"network's forward and backward passes); ODIN AUROCs on a subset: {counts} images"
        )
    over = summ["over_auroc_target"]
    print(f"|AUROC diff| > {MAX_AUROC_DIFF}: {', '.join(over) if over else 'none'}")
    for r in rows:
        if r["method"] in over:
            print(f"  {r['method']}: {r['note']}")


# --------------------------------------------------------------------------- main
def torch_inputs(F: Features) -> dict[str, Any]:
    """The features as float32 CPU tensors (sharing memory with the numpy arrays) and the head."""
    import torch

    lin = torch.nn.Linear(F.W.shape[1], F.W.shape[0])
    with torch.no_grad():
        lin.weight.copy_(torch.from_numpy(F.W))
        lin.bias.copy_(torch.from_numpy(F.b))
    T = {"lin": lin, "train": torch.from_numpy(F.train), "labels": torch.from_numpy(F.train_labels)}
    T["test"] = torch.from_numpy(F.test)
    T.update({s: torch.from_numpy(F.ood[s]) for s in OOD_SETS})
    return T


def pytorch_ood_loader() -> Callable[[str], Any]:
    try:
        import pytest
        from helpers import pytorch_ood_detector
    except ImportError as exc:
        raise SystemExit(f"needs tests/helpers.py and pytest to load pytorch-ood ({exc}).") from exc
    try:
        pytorch_ood_detector("energy")
    except pytest.skip.Exception as exc:
        raise SystemExit(f"pytorch-ood is not usable here: {exc.msg}") from exc
    return pytorch_ood_detector


def set_threads(n: int) -> None:
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(n)
    threadpool_limits(n, "blas")
    _neighbors.set_num_threads(n)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shared", type=Path, default=SHARED, help="folder with data/ and weights/")
    ap.add_argument("--depth", type=int, choices=(20, 32, 44, 56), default=20, help="CIFAR ResNet depth")
    ap.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE, help="feature cache folder")
    ap.add_argument("--methods", default="", help="comma-separated oddkit names (default: all pairs and odin)")
    ap.add_argument("--repeats", type=int, default=5, help="timed runs per side (best kept)")
    ap.add_argument(
        "--odin-images",
        type=int,
        default=DEFAULT_ODIN_IMAGES,
        help="ODIN: images per set (ID test and each OOD set), spread evenly; 0 = all 26,000",
    )
    ap.add_argument(
        "--odin-repeats", type=int, default=None, help="ODIN: timed runs per side (default min(--repeats, 2))"
    )
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="threads per side")
    ap.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    ap.add_argument("--no-progress", action="store_true", help="no progress bars while extracting")
    args = ap.parse_args(argv)
    names = [m.strip() for m in args.methods.split(",") if m.strip()] or list(METHOD_NAMES)
    unknown = [m for m in names if m not in METHOD_NAMES]
    if unknown:
        ap.error(f"no pytorch-ood pair for {unknown}; choose from {', '.join(METHOD_NAMES)}")
    args.methods = names
    if args.odin_repeats is None:
        args.odin_repeats = min(args.repeats, 2)
    if args.repeats < 1 or args.threads < 1 or args.odin_repeats < 1:
        ap.error("--repeats, --odin-repeats and --threads must be at least 1")
    if args.odin_images < 0:
        ap.error("--odin-images must be 0 (every image) or more")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    P = pytorch_ood_loader()
    set_threads(args.threads)
    F = T = D = None
    if any(m in PAIR_BY_NAME for m in args.methods):
        F = load_features(args.shared, args.depth, args.cache_dir.expanduser(), not args.no_progress)
        T = torch_inputs(F)
        print(
            f"C10-OOD-local, {F.info['backbone']} (ID test accuracy {F.id_accuracy:.4f}), "
            f"train {F.train.shape}, test {F.test.shape}, "
            + ", ".join(f"{s} {F.ood[s].shape[0]}" for s in OOD_SETS)
            + f"; {args.threads} threads, best of {args.repeats}"
        )
    if ODIN.name in args.methods:
        D = load_odin_images(args.shared, args.depth, args.odin_images)
        print(odin_header(D, args.threads, args.odin_repeats))
    load_start = os.getloadavg()
    rows = []
    for name in args.methods:
        if name == ODIN.name:
            row = compare_odin(D, P, args.odin_repeats)
        else:
            row = compare(PAIR_BY_NAME[name], F, T, P, args.repeats)
        print_method(row)
        rows.append(row)
    summ = summary(rows)
    print_summary(rows, summ)
    print(f"load average (1 min) at start {load_start[0]:.2f}, at end {os.getloadavg()[0]:.2f}")
    if args.out is not None:
        result = {
            "protocol": "C10-OOD-local",
            "provenance": provenance.collect(
                benchmark="posthoc_vs_pytorch_ood",
                pytorch_ood=_version("pytorch-ood"),
                threads=args.threads,
                repeats=args.repeats,
                load_average_start=load_start,
                load_average_end=os.getloadavg(),
                **(F.info if F is not None else {}),
                **({"odin_repeats": args.odin_repeats, "odin": D.info} if D is not None else {}),
            ),
            "id_accuracy": F.id_accuracy if F is not None else None,
            "methods": rows,
            "summary": summ,
        }
        if D is not None:
            result["odin_id_accuracy_on_subset"] = D.id_accuracy
        args.out.write_text(json.dumps(result, indent=2, default=_plain))
        print(f"\nwrote {args.out}")
    return 0


def _version(dist: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


if __name__ == "__main__":
    sys.exit(main())

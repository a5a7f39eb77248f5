"""Shift protocols (oddkit.protocols.shift) and their report on tiny real CIFAR-10 subsets.

The backbone is the cheap CIFAR ResNet-20 from shared/weights (the protocol logic does
not depend on the backbone); every run uses a few images per class (``limit``).
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from oddkit.errors import DataError, InputError, ParamError

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
CIFAR = SHARED / "data" / "cifar10"
WEIGHTS = SHARED / "weights" / "cifar10_resnet20.th"
pytestmark = pytest.mark.skipif(
    not (CIFAR / "test").is_dir() or not WEIGHTS.is_file(),
    reason="needs ../shared/data/cifar10 and ../shared/weights/cifar10_resnet20.th",
)

DETS = ["knn:n_neighbors=1", "knn:n_neighbors=1+l2", "gaussian"]
LIMIT, TRAIN_LIMIT = 5, 20
C_SHIFTS, C_SEVERITIES = ["translate"], (1, 5)  # registered now; the 19 corruptions are not needed


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("features")


@pytest.fixture(scope="module")
def backbone():
    from oddkit.features import create_backbone

    return create_backbone("cifar_resnet20", weights=WEIGHTS)


def _run(protocol, backbone, cache, **kw):
    from oddkit.protocols.shift import run_shift_protocol

    opts = {"shared": SHARED, "backbone": backbone, "detectors": DETS, "limit": LIMIT, "train_limit": TRAIN_LIMIT,
                "cache_dir": cache, "progress": False, "batch_size": 128, "threads": 1}  # fmt: skip
    opts.update(kw)
    return run_shift_protocol(protocol, **opts)


@pytest.fixture(scope="module")
def c10r(backbone, cache):
    return _run("c10-r", backbone, cache, corruptions=C_SHIFTS, severities=C_SEVERITIES)


def _rows(result, **match):
    return [r for r in result.rows if all(r[k] == v for k, v in match.items())]


# ----------------------------------------------------------------------------- C10-R
def test_c10r_labelling(c10r):
    assert c10r.info["protocol"] == "C10-R" and "SUBSET" in c10r.info["subset"]
    assert not [r for r in c10r.rows if r["error"]]
    n_other = 9 * LIMIT
    # U: no shifted copies
    u = _rows(c10r, setting="U")
    assert len(u) == 10 * len(DETS)
    assert {(r["n_normal"], r["n_anomalous"]) for r in u} == {(LIMIT, n_other)}
    # A: five shifted copies per image (one group each), pooled with the clean ones
    a_groups = {(r["shift"], r["severity"]) for r in _rows(c10r, setting="A") if r["shift"] != "all"}
    assert a_groups == {("rot90", 5), ("rot270", 5), ("hflip", 5), ("crop_resize", 5), ("color_jitter", 5)}
    assert {(r["n_normal"], r["n_anomalous"]) for r in _rows(c10r, setting="A", shift="all")} == {
        (LIMIT * (1 + 5), n_other)}
    # C: one copy per (corruption, severity); anomalies always the clean other-class images
    n_c = len(C_SHIFTS) * len(C_SEVERITIES)
    assert {(r["n_normal"], r["n_anomalous"]) for r in _rows(c10r, setting="C", shift="all")} == {
        (LIMIT * (1 + n_c), n_other)}
    per_group = [r for r in c10r.rows if r["setting"] in "AC" and r["shift"] != "all"]
    assert {(r["n_normal"], r["n_anomalous"]) for r in per_group} == {(LIMIT, n_other)}
    assert len(per_group) == (5 + n_c) * 10 * len(DETS)


def test_c10r_gs_beside_both_aurocs(c10r):
    from oddkit.metrics.generalizability import generalizability_score

    u = {(r["detector"], r["class"]): r["auroc"] for r in _rows(c10r, setting="U")}
    shifted = [r for r in c10r.rows if r["setting"] in ("A", "C")]
    for r in shifted:
        assert r["auroc_standard"] == u[(r["detector"], r["class"])]
        if r["auroc_standard"] > 0.5:
            assert r["gs"] == pytest.approx(generalizability_score(r["auroc_standard"], r["auroc"]))
        else:
            assert np.isnan(r["gs"])
    summary = {(s["setting"], s["detector"], s["shift"]): s for s in c10r.summary}
    for det in DETS:
        s = summary[("A", det, "all")]
        assert s["n_units"] == 10 and s["n_seeds"] == 1
        per_class = [r["gs"] for r in _rows(c10r, setting="A", shift="all", detector=det)]
        assert s["gs"] == pytest.approx(np.nanmean(per_class))
        assert summary[("U", det, "")]["auroc"] == pytest.approx(np.mean([u[(det, c)] for c in
                                                                          c10r.info["classes"]]))  # fmt: skip
    # the features are informative: kNN on ResNet-20 features beats chance on clean one-class CIFAR
    assert summary[("U", "knn:n_neighbors=1+l2", "")]["auroc"] > 0.6


def test_c10r_pooled_auroc_recomputed_by_hand(c10r, backbone, cache):
    """Class 0, kNN k=1: fit on its train features, normal = clean + the five A copies, anomalies = clean rest."""
    from oddkit.data import ImageFolder, SubsetSource
    from oddkit.detectors import create
    from oddkit.features import extract
    from oddkit.metrics import auroc
    from oddkit.protocols.shift import (
        C10R_AUGMENTATIONS,
        C10R_SEED,
        per_class_subset,
    )
    from oddkit.shifts.build import ShiftedSource

    train, test = ImageFolder(CIFAR / "train"), ImageFolder(CIFAR / "test")
    train = SubsetSource(train, per_class_subset(train.labels, TRAIN_LIMIT))
    test = SubsetSource(test, per_class_subset(test.labels, LIMIT))

    def feats(src):
        return extract(backbone, src, cache_dir=cache, progress=False).features

    Ftr, Fte = feats(train), feats(test)
    det = create("knn", n_neighbors=1).fit(Ftr[train.labels == 0])
    clean = det.score(Fte)
    normal = [clean[test.labels == 0]]
    for name, sev in C10R_AUGMENTATIONS:
        normal.append(det.score(feats(ShiftedSource(test, name, sev, seed=C10R_SEED))[test.labels == 0]))
    anomalies = clean[test.labels != 0]
    y = np.r_[np.zeros(sum(n.size for n in normal)), np.ones(anomalies.size)]
    expected = auroc(y, np.r_[np.concatenate(normal), anomalies])
    (row,) = _rows(c10r, setting="A", shift="all", detector="knn:n_neighbors=1", class_index=0)
    assert row["auroc"] == pytest.approx(expected, abs=1e-12)


def test_c10r_deterministic(c10r, backbone, tmp_path):
    """A second run (setting C only) without the cache and another batch size gives the same results."""
    again = _run("c10-r", backbone, None, corruptions=C_SHIFTS, severities=C_SEVERITIES, batch_size=17,
                 settings=["U", "C"])
    first = [r for r in c10r.rows if r["setting"] in ("U", "C")]
    assert len(again.rows) == len(first)
    for a, b in zip(first, again.rows):
        assert {k: a[k] for k in ("setting", "class", "detector", "shift", "severity")} == {
            k: b[k] for k in ("setting", "class", "detector", "shift", "severity")}
        np.testing.assert_allclose(a["auroc"], b["auroc"], atol=1e-6)
    assert again.info["group_fingerprints"].items() <= c10r.info["group_fingerprints"].items()


def test_c10r_default_corruptions_are_the_19_times_5(backbone):
    from oddkit.protocols.shift import cifar10_data, plan_protocol
    from oddkit.shifts import CIFAR10_C, list_shifts

    data = cifar10_data(SHARED)
    registered = {s.name for s in list_shifts()}
    if set(CIFAR10_C) <= registered:
        plan = plan_protocol("c10-r", data)
        assert len(plan.groups["C"]) == 95 and len(plan.groups["A"]) == 5
    else:  # corruptions still missing from the registry: a clear error naming them
        with pytest.raises(ParamError, match="unknown transform"):
            plan_protocol("c10-r", data)


# ----------------------------------------------------------------------------- SPA / SSA
def test_ssa_labels_by_hand():
    from oddkit.protocols.shift import (
        CIFAR10_SEMANTIC,
        SHIFT_POOL,
        ShiftData,
        ssa_labels,
    )

    classes = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    data = ShiftData("cifar10", None, None, classes, dict(CIFAR10_SEMANTIC))
    labels = np.array([0, 2, 2, 0, 5, 2])
    drawn = ["rot90", "rot90", "gaussian_noise", "hflip", "hflip", "jpeg_compression"]
    draw = np.array([SHIFT_POOL.index(t) for t in drawn])
    own, y = ssa_labels(labels, 0, draw, SHIFT_POOL, data.changing("airplane"))
    assert own.tolist() == [True, False, False, True, False, False]
    assert y.tolist() == [1, 1, 1, 0, 1, 1]  # rotated airplane: anomalous; flipped airplane: normal
    own, y = ssa_labels(labels, 2, draw, SHIFT_POOL, data.changing("bird"))
    assert y[own].tolist() == [0, 1, 0]  # rotated bird normal, noisy bird anomalous, JPEG bird normal
    assert y[~own].tolist() == [1, 1, 1]  # SSA-all: other classes anomalous whatever their transform
    assert data.changing("frog") == {"gaussian_noise", "glass_blur"}
    assert data.changing("truck") == {"gaussian_noise", "glass_blur", "rot90", "rot270"}


def _pool():
    """The SPA/SSA pool restricted to the transforms registered now (the corruptions may still be missing)."""
    from oddkit.protocols.shift import SHIFT_POOL
    from oddkit.shifts import list_shifts

    registered = {s.name for s in list_shifts()}
    return [t for t in SHIFT_POOL if t in registered]


def test_ssa_run(backbone, cache):
    from oddkit.protocols.shift import CIFAR10_SEMANTIC, ShiftData, ssa_draw, ssa_labels

    pool, limit = _pool(), 10
    res = _run("ssa", backbone, cache, pool=pool, limit=limit)
    assert res.info["semantic"] == {k: list(v) for k, v in CIFAR10_SEMANTIC.items()}  # built-in table as given
    draw = ssa_draw(10 * limit, len(pool), 0)
    labels = np.repeat(np.arange(10), limit)  # the cut test set is sorted by class
    data = ShiftData("c", None, None, res.info["classes"], dict(CIFAR10_SEMANTIC))
    for c, cls in enumerate(res.info["classes"]):
        own, y = ssa_labels(labels, c, draw, pool, data.changing(cls))
        for r in _rows(res, class_index=c, setting="SSA-self"):
            assert (r["n_normal"], r["n_anomalous"]) == (int((y[own] == 0).sum()), int(y[own].sum()))
        for r in _rows(res, class_index=c, setting="SSA-all"):
            assert (r["n_normal"], r["n_anomalous"]) == (int((y == 0).sum()), int(y.sum()))
    assert len(_rows(res, setting="SSA-self")) == len(_rows(res, setting="SSA-all")) == 10 * len(DETS)
    # one feature group per transform, each over the images that drew it
    keys = [k for k in res.info["group_fingerprints"] if k.startswith("SSA:")]
    assert len(keys) == len(set(draw.tolist()))
    assert {s["setting"] for s in res.summary} == {"SSA-self", "SSA-all"}


def test_spa_same_transform_on_normal_and_anomalous(backbone, cache):
    from oddkit.data import ImageFolder, SubsetSource
    from oddkit.protocols.shift import per_class_subset
    from oddkit.shifts.build import ShiftedSource

    pool = ["hflip", "rot90"]
    res = _run("spa", backbone, cache, pool=pool, limit=5)
    spa_rows = [r for r in _rows(res, setting="SPA") if r["shift"] != "mean"]
    assert {(r["shift"], r["n_normal"], r["n_anomalous"]) for r in spa_rows} == {
        ("hflip", 5, 45), ("rot90", 5, 45)}
    # one shifted source covers every test image (normal and anomalous) for each transform
    test = ImageFolder(CIFAR / "test")
    test = SubsetSource(test, per_class_subset(test.labels, 5))
    for t in pool:
        assert res.info["group_fingerprints"][f"SPA:{t}:s5:seed0"] == ShiftedSource(test, t, 5, seed=0).fingerprint
    for det in DETS:
        for c in range(10):
            (mean,) = _rows(res, setting="SPA", shift="mean", detector=det, class_index=c)
            per = [r["auroc"] for r in spa_rows if r["detector"] == det and r["class_index"] == c]
            assert mean["auroc"] == pytest.approx(np.mean(per))
    assert len(_rows(res, setting="clean")) == 10 * len(DETS)


def test_c10_oc(backbone, cache):
    res = _run("c10-oc", backbone, cache, limit=8, detectors=["knn:n_neighbors=1+l2"])
    assert {(r["setting"], r["n_normal"], r["n_anomalous"]) for r in res.rows} == {("clean", 8, 72)}
    (s,) = res.summary
    assert s["n_units"] == 10 and s["auroc"] > 0.6


# ----------------------------------------------------------------------------- folders, report
def _write_folder(root: Path, sizes: dict[str, list[tuple[int, int]]]) -> None:
    from PIL import Image

    from oddkit.data import ImageFolder

    src = ImageFolder(CIFAR / "test")
    k = 0
    for cls, shapes in sizes.items():
        (root / cls).mkdir(parents=True)
        for i, (h, w) in enumerate(shapes):
            img = src.load([k])[0]
            k = (k + 997) % len(src)
            Image.fromarray(img).resize((w, h)).save(root / cls / f"{i}.png")


def test_config_folders_and_report(backbone, tmp_path):
    from oddkit.protocols.shift import run_shift_bench

    for split, n in (("train", 8), ("test", 4)):
        _write_folder(tmp_path / split, {"cat": [(32, 32)] * n, "car": [(32, 32)] * n, "ship": [(32, 32)] * n})
    config = {"name": "tiny", "train": str(tmp_path / "train"), "test": str(tmp_path / "test"),
              "semantic": {"car": ["rot90"], "*": ["vflip"]}}  # fmt: skip
    res = run_shift_bench("c10-r", config=config, backbone=backbone, detectors=DETS, out=tmp_path / "out",
                          progress=False, corruptions=["translate"], severities=(2, 4))  # fmt: skip
    assert res.info["classes"] == ["car", "cat", "ship"] and res.info["data"] == "tiny"
    out = tmp_path / "out"
    for name in ("results.csv", "summary.csv", "leaderboard.md", "report.html", "provenance.json"):
        assert (out / name).is_file(), name
    assert (out / "auroc_vs_severity.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with open(out / "results.csv") as fh:
        assert len(list(csv.DictReader(fh))) == len(res.rows)
    board = (out / "leaderboard.md").read_text()
    for title in ("AUROC U", "AUROC A", "GS(A)", "AUROC C", "GS(C)", "AUROC by severity", *DETS):
        assert title in board
    ssa = run_shift_bench("ssa", config=config, backbone=backbone, detectors=DETS[:1], out=tmp_path / "ssa",
                          progress=False, pool=["hflip", "rot90", "vflip"])  # fmt: skip
    assert "SSA-self" in (tmp_path / "ssa" / "leaderboard.md").read_text()
    assert not (tmp_path / "ssa" / "auroc_vs_severity.png").exists()
    assert ssa.info["semantic"] == {"car": ["rot90"], "*": ["vflip"]}


def test_bad_input_fails_before_any_work(backbone, tmp_path):
    from oddkit.protocols.shift import run_shift_protocol

    cache = tmp_path / "cache"
    base = {"shared": SHARED, "backbone": backbone, "cache_dir": cache, "progress": False, "limit": 2}
    cases = [
        (ParamError, "protocol", {"protocol": "c10-x"}),
        (ParamError, "unknown transform", {"protocol": "c10-r", "corruptions": ["gaussian_nois"]}),
        (ParamError, "severity", {"protocol": "c10-r", "corruptions": ["translate"], "severities": (0, 3)}),
        (ParamError, "distinct", {"protocol": "c10-r", "corruptions": ["translate"], "severities": (3, 3)}),
        (ParamError, "severity", {"protocol": "c10-r", "corruptions": ["translate"], "severities": (6,)}),
        (ParamError, "class 'spaceship'", {"protocol": "ssa", "pool": ["hflip"], "semantic": {"spaceship": ["rot90"]}}),
        (ParamError, "unknown shift", {"protocol": "ssa", "pool": ["hflip"], "semantic": {"cat": ["rot45"]}}),
        (ParamError, "limit", {"protocol": "c10-oc", "limit": 0}),
        (ParamError, "needs", {"protocol": "c10-oc", "detectors": ["msp"]}),
        (Exception, "knnn", {"protocol": "c10-oc", "detectors": ["knnn"]}),
        (ParamError, "settings", {"protocol": "c10-r", "settings": ["B"]}),
    ]
    for error, message, kw in cases:
        with pytest.raises(error, match=message):
            run_shift_protocol(**{**base, **kw})
    # images of unexpected size: one file of another size in a folder without a resize
    _write_folder(tmp_path / "train", {"a": [(32, 32)] * 3, "b": [(32, 32)] * 3})
    _write_folder(tmp_path / "test", {"a": [(32, 32), (40, 40)], "b": [(32, 32)] * 2})
    config = {"train": str(tmp_path / "train"), "test": str(tmp_path / "test")}
    with pytest.raises(DataError, match="40x40"):
        run_shift_protocol("c10-oc", config=config, backbone=backbone, cache_dir=cache, progress=False)
    # rotations need square images
    with pytest.raises(InputError, match="square"):
        run_shift_protocol("spa", config={**config, "size": [32, 40]}, backbone=backbone, cache_dir=cache,
                           pool=["rot90"], progress=False)  # fmt: skip
    assert not cache.exists()  # nothing was extracted

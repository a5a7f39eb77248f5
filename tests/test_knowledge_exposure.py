"""Knowledge Exposure detectors (arXiv 2406.10617): ``ke_head`` (CPU) and ``ke_resnet18`` (paper).

They take images and networks rather than a feature matrix, so tests/test_contract.py
skips them; this file is their contract variant: direction on a small real one-class task
(CIFAR-10 automobile against the other classes, EfficientNet-Lite0 as knowledge model and
frozen backbone), batch independence, determinism for a seed, save/load without pickle
(networks re-attached), parameters and input refused before any network runs, the
contrastive loss against a per-sample loop, and ``ke_resnet18`` training and persisting a
ResNet-18 on a handful of images for one short epoch. Real-data tests are skipped without
../shared.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="KE trains networks (pip install 'oddkit[vision]')")
pytest.importorskip("ot", reason="KE ranks transforms with POT (pip install pot)")

from helpers import SHARED

import oddkit.detectors.trained  # noqa: F401  (registers ke_head, ke_resnet18)
from oddkit import detectors
from oddkit.detectors.trained.knowledge_exposure import contrastive_loss
from oddkit.errors import InputError, NotFittedError, ParamError
from oddkit.features import create_backbone
from oddkit.features.knowledge import BackboneKnowledge
from oddkit.metrics import auroc

CIFAR = SHARED / "data" / "cifar10"
RESNET20 = SHARED / "weights" / "cifar10_resnet20.th"
POOL = ["hflip", "rot90", "crop_resize", "color_jitter"]
OTHERS = ("airplane", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def _cifar(cls: str, n: int, split: str = "train", start: int = 0) -> np.ndarray:
    from PIL import Image

    files = sorted((CIFAR / split / cls).glob("*.jpg"))[start : start + n]
    return np.stack([np.asarray(Image.open(f).convert("RGB")) for f in files])


def _need_cifar() -> None:
    if not (CIFAR / "train" / "automobile").is_dir():
        pytest.skip(f"CIFAR-10 JPEGs not found under {CIFAR}")


class Counting:
    """A knowledge model that counts calls (to prove bad input fails before any embedding)."""

    name = "counting"

    def __init__(self) -> None:
        self.calls = 0

    def embed(self, images: np.ndarray) -> np.ndarray:
        self.calls += 1
        return images.reshape(len(images), -1)[:, :8].astype(np.float32) + 1.0


def _resnet20_knowledge() -> BackboneKnowledge:
    weights = RESNET20 if RESNET20.is_file() else None
    torch.manual_seed(0)
    return BackboneKnowledge(create_backbone("cifar_resnet20", weights=weights), batch_size=32)


# ----------------------------------------------------------------------------- ke_head on real data
HEAD_PARAMS = {
    "transforms": POOL, "k": 1, "rank_images": 32, "max_train_images": 64, "epochs": 30,
    "batch_size": 32, "extract_batch_size": 64, "progress": False, "random_state": 0,
}  # fmt: skip


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    """64 automobile train images; test: 40 automobile + 45 other-class test images."""
    _need_cifar()
    train = _cifar("automobile", 64)
    normal = _cifar("automobile", 40, "test")
    anomalies = np.concatenate([_cifar(c, 5, "test") for c in OTHERS])
    X = np.concatenate([normal, anomalies])
    y = np.r_[np.zeros(len(normal)), np.ones(len(anomalies))].astype(int)
    cache = tmp_path_factory.mktemp("ke-cache")
    return train, X, y, str(cache)


@pytest.fixture(scope="module")
def fitted(task):
    train, _, _, cache = task
    return detectors.create("ke_head", cache_dir=cache, **HEAD_PARAMS).fit(train)


def test_direction_anomalies_score_higher(fitted, task):
    _, X, y, _ = task
    scores = fitted.score(X)
    assert scores.dtype == np.float64 and scores.shape == (len(X),) and np.isfinite(scores).all()
    value = auroc(y, scores)
    print(f"ke_head AUROC automobile vs rest (64 train images): {value:.3f}")
    assert value > 0.8


def test_fitted_state_is_the_ranking_and_a_trained_head(fitted):
    ranking = fitted.ranking_
    assert sorted(ranking["names"]) == sorted(POOL) and ranking["knowledge"] == "efficientnet_lite0"
    assert ranking["distances"] == sorted(ranking["distances"])
    assert fitted.positives_ == ranking["names"][:1] and fitted.negatives_ == ranking["names"][-1:]
    assert fitted.head_w1_.shape == (512, 1280) and fitted.head_w2_.shape == (128, 512)
    assert len(fitted.loss_history_) == 30 and fitted.loss_history_[-1] < fitted.loss_history_[0]
    assert fitted.n_train_images_ == 64 and fitted.n_rank_images_ == 32
    json.dumps(fitted._get_state()[0])  # the non-array state is JSON


def test_representation_is_what_the_ocsvm_sees(fitted, task):
    """``concat`` (default): [frozen, head_weight * head] normalised; ``head``: the head alone."""
    _, X, _, _ = task
    F = _l2(fitted._attached_features().embed(X[:5]))
    Z_head = _l2(fitted._head(F))
    expected = _l2(np.hstack([F, fitted.head_weight * Z_head]))
    np.testing.assert_allclose(fitted._represent(F), expected, rtol=1e-12)
    assert fitted._ocsvm.support_vectors_.shape[1] == 1280 + 128
    head_only = detectors.create("ke_head", **{**fitted.get_params(), "representation": "head"})
    head_only.__dict__.update({k: v for k, v in fitted.__dict__.items() if k.startswith("head_")})
    np.testing.assert_allclose(head_only._represent(F), Z_head, rtol=1e-12)


def _l2(X):
    X = np.asarray(X, dtype=np.float64)
    return X / np.linalg.norm(X, axis=1, keepdims=True)


def test_scores_are_batch_independent(fitted, task):
    _, X, _, _ = task
    full = fitted.score(X)
    parts = np.concatenate([fitted.score(X[i : i + 7]) for i in range(0, len(X), 7)])
    # other batches give the network other float32 rounding (about 1e-7), nothing more
    np.testing.assert_allclose(parts, full, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(fitted.score(X[[5]]), full[[5]], rtol=1e-5, atol=1e-7)


def test_same_seed_same_detector(fitted, task):
    train, X, _, cache = task
    again = detectors.create("ke_head", cache_dir=cache, **HEAD_PARAMS).fit(train)
    np.testing.assert_array_equal(again.head_w1_, fitted.head_w1_)
    np.testing.assert_array_equal(again.score(X), fitted.score(X))


def test_save_load_round_trip(fitted, task, tmp_path):
    _, X, _, _ = task
    fitted.save(tmp_path / "ke")
    config = json.loads((tmp_path / "ke" / "config.json").read_text())
    assert config["name"] == "ke_head" and config["state"]["positives_"] == fitted.positives_
    with np.load(tmp_path / "ke" / "arrays.npz", allow_pickle=False) as npz:
        assert {"head_w1_", "ocsvm__support_vectors_"} <= set(npz.files)
    loaded = detectors.load(tmp_path / "ke")  # the feature network is rebuilt from its spec
    np.testing.assert_allclose(loaded.score(X), fitted.score(X), rtol=1e-12, atol=1e-12)


def test_calibration_works_on_images(fitted, task, tmp_path):
    _, X, _, _ = task
    det = detectors.load(fitted.save(tmp_path / "ke"))
    det.calibrate(X[:20], alpha=0.2)
    assert det.predict(X).dtype == bool and det.pvalues(X).shape == (len(X),)


# ----------------------------------------------------------------------------- networks as objects
def test_object_networks_are_reattached_after_load(tmp_path):
    _need_cifar()
    km = _resnet20_knowledge()
    images = _cifar("ship", 24)
    det = detectors.create("ke_head", transforms=POOL, k=1, rank_images=8, max_train_images=24,
                           epochs=3, hidden_dim=32, out_dim=16, progress=False)  # fmt: skip
    det.fit(images, knowledge=km)
    assert det.features_name_ == "cifar_resnet20" and det.ranking_["knowledge"] == "cifar_resnet20"
    expected = det.score(images)
    loaded = detectors.load(det.save(tmp_path / "ke"))
    with pytest.raises(NotFittedError, match="attach"):
        loaded.score(images)  # fitted on an object: its spec (efficientnet_lite0) is another network
    with pytest.raises(InputError, match="not the one"):
        loaded.attach(backbone=Counting())
    np.testing.assert_allclose(loaded.attach(backbone=km).score(images), expected, rtol=1e-12, atol=1e-12)


def test_separate_feature_backbone(tmp_path):
    _need_cifar()
    km = _resnet20_knowledge()
    images = _cifar("frog", 20)
    det = detectors.create("ke_head", transforms=POOL, k=2, rank_images=10, max_train_images=20,
                           epochs=2, hidden_dim=16, out_dim=8, progress=False)  # fmt: skip
    det.fit(images, knowledge=Counting(), backbone=km)
    assert det.ranking_["knowledge"] == "counting" and det.features_name_ == "cifar_resnet20"
    assert det.head_w1_.shape == (16, 64) and np.isfinite(det.score(images[:4])).all()


# ----------------------------------------------------------------------------- errors
@pytest.mark.parametrize("name", ["ke_head", "ke_resnet18"])
@pytest.mark.parametrize(
    "params, match",
    [
        ({"transforms": ["hflip", "rot45"]}, "unknown shift 'rot45'"),
        ({"transforms": ["hflip", "hflip"]}, "duplicates"),
        ({"transforms": "hflip"}, "list of shift names"),
        ({"severity": 0}, "severity"),
        ({"severity": 6}, "severity"),
        ({"k": 0}, "k must be"),
        ({"k": 3, "transforms": POOL}, "pool has 4"),
        ({"knowledge": "no_such_network"}, "unknown knowledge model"),
        ({"knowledge": ""}, "spec string"),
        ({"temperature": 0.0}, "temperature"),
        ({"nu": 0.0}, "nu"),
        ({"gamma": "wide"}, "gamma"),
        ({"max_train_images": 1}, "max_train_images"),
        ({"cache_dir": 3}, "cache_dir"),
        ({"progress": "yes"}, "progress"),
        ({"random_state": -1}, "random_state"),
    ],
)
def test_bad_params_are_refused_at_construction(name, params, match):
    with pytest.raises(ParamError, match=match):
        detectors.create(name, **params)


def test_bad_params_specific_to_each_setting():
    with pytest.raises(ParamError, match="backbone"):
        detectors.create("ke_head", backbone="no_such_network")
    with pytest.raises(ParamError, match="hidden_dim"):
        detectors.create("ke_head", hidden_dim=0)
    with pytest.raises(ParamError, match="representation must be one of"):
        detectors.create("ke_head", representation="both")
    with pytest.raises(ParamError, match="head_weight"):
        detectors.create("ke_head", head_weight=0.0)
    with pytest.raises(ParamError, match="momentum"):
        detectors.create("ke_resnet18", momentum=1.0)
    with pytest.raises(ParamError, match="image_size"):
        detectors.create("ke_resnet18", image_size=4)
    det = detectors.create("ke_head")
    with pytest.raises(ParamError, match="severity"):
        det.set_params(severity=9)


def test_bad_input_fails_before_any_network_runs():
    rng = np.random.default_rng(0)
    square = rng.integers(0, 256, size=(6, 16, 16, 3), dtype=np.uint8)
    km = Counting()
    det = detectors.create("ke_head", transforms=POOL, k=1, progress=False)
    with pytest.raises(InputError, match="square"):
        det.fit(np.ascontiguousarray(square[:, :, :12]), knowledge=km)
    with pytest.raises(InputError, match="uint8"):
        det.fit(square.astype(np.float32), knowledge=km)
    with pytest.raises(InputError, match="at least 2"):
        det.fit(square[:1], knowledge=km)
    with pytest.raises(InputError, match="takes no input 'model'"):
        det.fit(square, knowledge=km, model=km)
    with pytest.raises(ParamError, match="unknown knowledge model"):
        det.fit(square, knowledge="no_such_network")
    with pytest.raises(ParamError, match="unknown knowledge model"):
        det.fit(square, knowledge=km, backbone="no_such_network")
    with pytest.raises(NotFittedError):
        det.score(square)
    assert km.calls == 0


def test_registry_entries():
    infos = {i.name: i for i in detectors.list_detectors()}
    for name in ("ke_head", "ke_resnet18"):
        info = infos[name]
        assert info.family == "trained" and info.inputs == ("images",) and info.randomized
        assert "2406.10617" in info.reference and info.summary


# ----------------------------------------------------------------------------- the loss
@pytest.mark.parametrize("batch_negatives", [False, True])
def test_contrastive_loss_matches_a_per_sample_loop(batch_negatives):
    gen = torch.Generator().manual_seed(0)
    B, K, D, tau = 5, 2, 6, 0.5
    z0 = torch.nn.functional.normalize(torch.randn(B, D, generator=gen), dim=1)
    zp = torch.nn.functional.normalize(torch.randn(B, K, D, generator=gen), dim=2)
    zn = torch.nn.functional.normalize(torch.randn(B, K, D, generator=gen), dim=2)
    total, count = 0.0, 0
    for i in range(B):
        others = [zp[i, j] for j in range(K)] + [zn[i, j] for j in range(K)]
        if batch_negatives:
            others += [z0[j] for j in range(B) if j != i]
        denom = sum(float(torch.exp(z0[i] @ o / tau)) for o in others)
        for j in range(K):
            total += -np.log(float(torch.exp(z0[i] @ zp[i, j] / tau)) / denom)
            count += 1
    value = float(contrastive_loss(z0, zp, zn, tau, batch_negatives))
    assert value == pytest.approx(total / count, rel=1e-5)


# ----------------------------------------------------------------------------- ke_resnet18
def test_ke_resnet18_trains_scores_and_round_trips(tmp_path):
    _need_cifar()
    km = _resnet20_knowledge()
    train = _cifar("airplane", 12)
    X = np.concatenate([_cifar("airplane", 4, "test"), _cifar("frog", 4, "test")])
    params = {"transforms": POOL, "k": 1, "epochs": 1, "batch_size": 4, "rank_images": 8,
              "extract_batch_size": 8, "progress": False, "random_state": 3}  # fmt: skip
    det = detectors.create("ke_resnet18", **params).fit(train, knowledge=km)
    scores = det.score(X)
    assert scores.shape == (8,) and np.isfinite(scores).all()
    assert len(det.loss_history_) == 1 and det.ranking_["knowledge"] == "cifar_resnet20"
    np.testing.assert_allclose(det.score(X[2:5]), scores[2:5], rtol=1e-5, atol=1e-7)
    loaded = detectors.load(det.save(tmp_path / "ke18"))  # needs no network: the encoder is saved
    np.testing.assert_allclose(loaded.score(X), scores, rtol=1e-12, atol=1e-12)
    again = detectors.create("ke_resnet18", **params).fit(train, knowledge=km)
    np.testing.assert_array_equal(again.score(X), scores)

"""Knowledge models and the transform ranking of Knowledge Exposure (arXiv 2406.10617).

* the exact EMD against brute force (optimal assignment for equal sizes, the transport
  linear programme for unequal ones);
* the ranking's plumbing with a transparent knowledge model (mean colour), its JSON form,
  and bad input refused before any embedding is computed;
* BackboneKnowledge through the feature cache, the spec factory and its errors;
* on real EfficientNet-Lite0 features of real CIFAR-10 train images (skipped without
  ../shared): rot90 ranks farther (more meaning-changing) for vehicles than for animals;
* the CLIP path with a tiny randomly initialised open_clip model (skipped where open_clip
  cannot be imported, e.g. beside a torch without torchvision).
"""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

pytest.importorskip("torch", reason="knowledge models need torch (pip install 'oddkit[vision]')")
pytest.importorskip("ot", reason="the ranking needs POT (pip install pot)")

from helpers import SHARED
from scipy.optimize import linear_sum_assignment, linprog

from oddkit.errors import InputError, MissingDependencyError, ParamError
from oddkit.features import create_backbone
from oddkit.features.backbones import WeightsError
from oddkit.features.knowledge import (
    DEFAULT_TRANSFORMS,
    BackboneKnowledge,
    KnowledgeModel,
    TransformRanking,
    cosine_cost,
    emd_cosine,
    knowledge_model,
    rank_transforms,
)
from oddkit.shifts import list_shifts

CIFAR_TRAIN = SHARED / "data" / "cifar10" / "train"
RESNET20 = SHARED / "weights" / "cifar10_resnet20.th"
VEHICLES = ("airplane", "automobile", "ship", "truck")
ANIMALS = ("bird", "cat", "deer", "dog", "frog", "horse")


class MeanColour:
    """A transparent knowledge model: the mean RGB of each image, plus a constant 1."""

    name = "mean_colour"

    def __init__(self) -> None:
        self.calls = 0

    def embed(self, images: np.ndarray) -> np.ndarray:
        self.calls += 1
        rgb = images.reshape(len(images), -1, 3).mean(axis=1) / 255.0
        return np.hstack([rgb, np.ones((len(images), 1))]).astype(np.float32)


def _registered(names):
    known = {info.name for info in list_shifts()}
    return [n for n in names if n in known]


def _cifar(cls: str, n: int, split: str = "train") -> np.ndarray:
    from PIL import Image

    files = sorted((SHARED / "data" / "cifar10" / split / cls).glob("*.jpg"))[:n]
    return np.stack([np.asarray(Image.open(f).convert("RGB")) for f in files])


# ----------------------------------------------------------------------------- EMD
def test_emd_equals_optimal_assignment_for_equal_sizes():
    rng = np.random.default_rng(0)
    for n, d in ((1, 3), (5, 4), (9, 16)):
        A, B = rng.normal(size=(n, d)), rng.normal(size=(n, d)) + 0.3
        M = cosine_cost(A, B)
        rows, cols = linear_sum_assignment(M)
        assert emd_cosine(A, B) == pytest.approx(M[rows, cols].mean(), rel=1e-9, abs=1e-12)


def test_emd_equals_transport_lp_for_unequal_sizes():
    rng = np.random.default_rng(1)
    A, B = rng.normal(size=(3, 5)), rng.normal(size=(7, 5))
    M = cosine_cost(A, B)
    n, m = M.shape
    eq = np.zeros((n + m, n * m))
    for i in range(n):
        eq[i, i * m : (i + 1) * m] = 1.0
    for j in range(m):
        eq[n + j, j::m] = 1.0
    rhs = np.concatenate([np.full(n, 1 / n), np.full(m, 1 / m)])
    lp = linprog(M.ravel(), A_eq=eq, b_eq=rhs, bounds=(0, None), method="highs")
    assert lp.status == 0
    assert emd_cosine(A, B) == pytest.approx(lp.fun, rel=1e-9, abs=1e-12)


def test_emd_is_zero_for_a_permuted_copy_and_cosine_scale_free():
    rng = np.random.default_rng(2)
    A = rng.normal(size=(20, 8))
    assert emd_cosine(A, A[rng.permutation(20)]) == pytest.approx(0.0, abs=1e-12)
    assert emd_cosine(A, 3.0 * A[::-1]) == pytest.approx(0.0, abs=1e-12)
    line = np.outer(rng.uniform(0.5, 2.0, size=6), rng.normal(size=8))  # one direction
    assert emd_cosine(line, -line[:4]) == pytest.approx(2.0, abs=1e-12)  # every cost is 2


def test_emd_bad_input():
    with pytest.raises(InputError, match="width"):
        emd_cosine(np.ones((3, 2)), np.ones((3, 4)))
    with pytest.raises(InputError, match="NaN"):
        emd_cosine(np.full((2, 2), np.nan), np.ones((2, 2)))


# ----------------------------------------------------------------------------- ranking plumbing
def _rgb_images(n: int = 12, side: int = 16) -> np.ndarray:
    """Left-right symmetric images of random colours (hflip changes no pixel)."""
    rng = np.random.default_rng(3)
    half = rng.integers(0, 256, size=(n, side, side // 2, 3), dtype=np.uint8)
    return np.ascontiguousarray(np.concatenate([half, half[:, :, ::-1]], axis=2))


def test_ranking_orders_by_distance_with_a_transparent_model():
    images = _rgb_images()
    km = MeanColour()
    ranking = rank_transforms(km, images, ["color_jitter", "hflip", "rot90"], severity=5, seed=0)
    # hflip and rot90 keep every image's mean colour: distance 0; jitter changes colours
    assert ranking.names[-1] == "color_jitter"
    assert set(ranking.names[:2]) == {"hflip", "rot90"}
    assert ranking.distances[1] == pytest.approx(0.0, abs=1e-9)
    assert ranking.distances[2] > 1e-4
    assert list(ranking.distances) == sorted(ranking.distances)
    assert ranking.position("color_jitter") == 2
    assert ranking.nearest(2) == ranking.names[:2] and ranking.farthest(1) == ("color_jitter",)
    assert ranking.knowledge == "mean_colour" and ranking.n_images == len(images)
    assert km.calls == 4  # clean once, each transform once


def test_ranking_is_json_able_and_round_trips():
    ranking = rank_transforms(MeanColour(), _rgb_images(), ["color_jitter", "hflip"], severity=2, seed=7)
    data = json.loads(json.dumps(ranking.to_dict()))
    assert TransformRanking.from_dict(data) == ranking
    assert data["severity"] == 2 and data["seed"] == 7


def test_ranking_bad_input_fails_before_any_embedding():
    images = _rgb_images()
    km = MeanColour()
    with pytest.raises(ParamError, match="unknown shift 'rot45'"):
        rank_transforms(km, images, ["hflip", "rot45"])
    for severity in (0, 6, 1.5):
        with pytest.raises(ParamError, match="severity"):
            rank_transforms(km, images, ["hflip"], severity=severity)
    with pytest.raises(ParamError, match="duplicates"):
        rank_transforms(km, images, ["hflip", "hflip"])
    with pytest.raises(InputError, match="square"):
        rank_transforms(km, images[:, :, :12], ["hflip", "rot90"])
    with pytest.raises(ParamError, match="unknown knowledge model"):
        rank_transforms("no_such_network", images, ["hflip"])
    with pytest.raises(InputError, match="uint8"):
        rank_transforms(km, images.astype(np.float32), ["hflip"])
    assert km.calls == 0


def test_default_pool_is_the_protocol_pool():
    assert DEFAULT_TRANSFORMS == (
        "hflip", "rot90", "rot270", "crop_resize", "color_jitter",
        "gaussian_noise", "glass_blur", "jpeg_compression", "snow", "gaussian_blur",
    )  # fmt: skip


# ----------------------------------------------------------------------------- models and specs
def _resnet20():
    weights = RESNET20 if RESNET20.is_file() else None
    return create_backbone("cifar_resnet20", weights=weights)


def test_backbone_knowledge_uses_the_feature_cache(tmp_path):
    images = _rgb_images(n=10, side=32)
    km = BackboneKnowledge(_resnet20(), cache_dir=tmp_path, batch_size=4)
    assert isinstance(km, KnowledgeModel)
    first = km.embed(images)
    assert first.dtype == np.float32 and first.shape == (10, 64)
    assert len([p for p in tmp_path.iterdir() if not p.name.startswith(".")]) == 1
    again = km.embed(images)
    np.testing.assert_array_equal(first, again)
    assert len(km.fingerprint) == 64


def test_knowledge_model_factory_and_errors():
    bb = _resnet20()
    km = knowledge_model(bb)
    assert isinstance(km, BackboneKnowledge) and km.backbone is bb
    mine = MeanColour()
    assert knowledge_model(mine) is mine
    with pytest.warns(UserWarning, match="randomly initialised"):
        assert knowledge_model("cifar_resnet20").name == "cifar_resnet20"
    with pytest.raises(WeightsError, match="does not exist"):
        knowledge_model("cifar_resnet20@/no/such/file.th")
    for bad in ("no_such_network", "", "clip:", 3, None):
        with pytest.raises(ParamError):
            knowledge_model(bad)


# ----------------------------------------------------------------------------- real features
#: images per class of the real ranking test (a sample: enough for a stable order of rot90
#: against noise and blur, small enough for the test's time budget)
N_PER_CLASS = 24
#: the pool of the real ranking test: the geometric/photometric part of the SPA/SSA pool
#: (rot270 left out: it mirrors rot90) plus its two always-meaning-changing corruptions,
#: where the registry has them
RANK_POOL = ("hflip", "rot90", "crop_resize", "color_jitter", "gaussian_noise", "glass_blur")


@pytest.fixture(scope="module")
def cifar_rankings():
    """EfficientNet-Lite0 rankings (severity 1) for each CIFAR-10 class's first train images."""
    if not CIFAR_TRAIN.is_dir():
        pytest.skip(f"CIFAR-10 train JPEGs not found under {CIFAR_TRAIN}")
    km = knowledge_model("efficientnet_lite0", batch_size=64)
    pool = _registered(RANK_POOL)
    return {cls: rank_transforms(km, _cifar(cls, N_PER_CLASS), pool, severity=1, seed=0) for cls in VEHICLES + ANIMALS}


def test_rot90_moves_vehicles_farther_than_animals(cifar_rankings):
    # rot90's EMD relative to the farthest transform of the same class: near 1 for
    # vehicles (rotation is the most meaning-changing transform for them), lower for
    # animals whose rotated images stay closer than noise does (bird, cat, frog)
    rel = {c: r.distances[r.position("rot90")] / max(r.distances) for c, r in cifar_rankings.items()}
    print("rot90 distance / farthest:", {c: round(v, 3) for c, v in rel.items()})
    assert np.mean([rel[v] for v in VEHICLES]) > np.mean([rel[a] for a in ANIMALS]), rel


def test_rot90_ranks_farther_for_vehicles_than_for_animals(cifar_rankings):
    pool = next(iter(cifar_rankings.values())).names
    pos = {c: r.position("rot90") for c, r in cifar_rankings.items()}
    print("rot90 positions (0 = nearest) in", sorted(pool), pos)
    if not {"gaussian_noise", "glass_blur"} & set(pool):
        pytest.skip(
            "no corruption registered: rot90 is the farthest of the geometric/photometric pool for "
            "every class, so its position cannot differ"
        )
    # share of (vehicle, animal) pairs where rot90 ranks farther for the vehicle (ties: half)
    wins = [1.0 if pos[v] > pos[a] else 0.5 if pos[v] == pos[a] else 0.0 for v in VEHICLES for a in ANIMALS]
    assert np.mean(wins) > 0.5, pos


# ----------------------------------------------------------------------------- CLIP
def _open_clip():
    try:
        import open_clip
    except ImportError as exc:
        return None, str(exc)
    return open_clip, ""


def test_clip_without_open_clip_names_the_install():
    open_clip, _ = _open_clip()
    if open_clip is not None:
        pytest.skip("open_clip imports here; the missing-dependency path cannot be exercised")
    with pytest.raises(MissingDependencyError, match=r"oddkit\[clip\]"):
        knowledge_model("clip:ViT-B-32")


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    open_clip, why = _open_clip()
    if open_clip is None:
        pytest.skip(f"open_clip cannot be imported here ({why}); pip install 'oddkit[clip]'")
    config = {
        "embed_dim": 32,
        "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "head_width": 32, "patch_size": 8},
        "text_cfg": {"context_length": 16, "vocab_size": 1000, "width": 32, "heads": 2, "layers": 1},
    }
    path = tmp_path_factory.mktemp("clip") / "oddkit-tiny-vit.json"
    path.write_text(json.dumps(config))
    open_clip.add_model_config(path)
    from oddkit.features.knowledge import ClipKnowledge

    with _seeded():
        return ClipKnowledge("oddkit-tiny-vit", pretrained=None)


class _seeded:
    def __enter__(self):
        import torch

        self._state = torch.random.get_rng_state()
        torch.manual_seed(0)

    def __exit__(self, *exc):
        import torch

        torch.random.set_rng_state(self._state)


def test_clip_embed_and_ranking_with_a_tiny_random_model(tiny_clip):
    images = _rgb_images(n=8, side=32)
    emb = tiny_clip.embed(images)
    assert emb.dtype == np.float32 and emb.shape == (8, 32) and np.isfinite(emb).all()
    np.testing.assert_allclose(tiny_clip.embed(images[:3]), emb[:3], rtol=1e-5, atol=1e-6)
    ranking = rank_transforms(tiny_clip, images, ["hflip", "rot90", "color_jitter"], severity=3)
    assert ranking.distances[0] == pytest.approx(0.0, abs=1e-6)  # symmetric images: hflip is a no-op
    assert ranking.names[0] == "hflip" and ranking.knowledge == "clip:oddkit-tiny-vit:random"


def test_clip_vit_b32_randomly_initialised_embeds_at_its_own_resolution():
    """The paper's knowledge model, ViT-B/32, with random weights (none are shipped here)."""
    open_clip, why = _open_clip()
    if open_clip is None:
        pytest.skip(f"open_clip cannot be imported here ({why})")
    from oddkit.features.knowledge import ClipKnowledge

    with _seeded():
        km = ClipKnowledge("ViT-B-32", pretrained=None)
    images = _rgb_images(n=3, side=32)
    emb = km.embed(images)  # 32-px images go through CLIP's own 224-px preprocessing
    assert emb.shape == (3, 512) and emb.dtype == np.float32 and np.isfinite(emb).all()
    assert km.name == "clip:ViT-B-32:random"
    # different images, different embeddings (random weights still see the pixels)
    assert np.abs(emb[0] - emb[1]).max() > 1e-4


def test_ke_head_with_a_clip_knowledge_model(tiny_clip):
    """KE end to end with CLIP as the knowledge model and feature network (tiny, random)."""
    from oddkit import detectors

    images = _rgb_images(n=24, side=32)
    pool = ["hflip", "rot90", "color_jitter", "gaussian_noise"]
    det = detectors.create("ke_head", transforms=pool, k=1, rank_images=8, max_train_images=16,
                           epochs=3, batch_size=8, progress=False, random_state=0)  # fmt: skip
    det.fit(images[:16], knowledge=tiny_clip)
    assert det.ranking_["knowledge"] == "clip:oddkit-tiny-vit:random"
    assert det.positives_ == ["hflip"]  # symmetric images: hflip changes nothing
    assert det.head_w1_.shape == (512, 32)
    scores = det.score(images[16:])
    assert scores.shape == (8,) and np.isfinite(scores).all()


def test_clip_bad_model_and_offline_tag_fail_fast():
    open_clip, why = _open_clip()
    if open_clip is None:
        pytest.skip(f"open_clip cannot be imported here ({why})")
    from oddkit.features.knowledge import ClipKnowledge

    with pytest.raises(ParamError, match="unknown open_clip model"):
        ClipKnowledge("no-such-arch", pretrained=None)
    with pytest.raises(ParamError, match="no pretrained tag"):
        ClipKnowledge("RN50", pretrained="no-such-tag")
    with pytest.raises(WeightsError, match="does not exist"):
        ClipKnowledge("RN50", pretrained="/no/such/weights.bin")
    from oddkit.features.knowledge import _reachable

    if _reachable("huggingface.co", 443, timeout=3.0):
        pytest.skip("the network is reachable: the offline failure cannot be checked without a download")
    start = time.perf_counter()
    try:
        ClipKnowledge("RN50", pretrained="openai", download_timeout=5.0)
    except WeightsError as exc:  # no network and no cached copy: a clear error, quickly
        assert "pretrained=<path" in str(exc)
    assert time.perf_counter() - start < 120

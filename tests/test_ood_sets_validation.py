"""Validation OOD sets of oddkit.data.ood_sets: deterministic, disjoint from the test sets, OOD-like.

The transforms are checked on a synthetic train source (their defining properties: a
pixel permutation keeps each image's pixels, a jigsaw keeps its tiles, neither is the
identity) and re-implemented from the module docstring on the real CIFAR-10 train
folder. Disjointness from C10-OOD-local's test sets is checked by fingerprint and row by
row, on pixels and on ResNet-20 features; OOD-likeness is the MSP AUROC of a real
ResNet-20 against CIFAR-10 test images. Tests that need ../shared skip without it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from oddkit.data import ArraySource, ImageFolder
from oddkit.data.ood_sets import (
    N_VALIDATION,
    VALIDATION_SEEDS,
    VALIDATION_SET_NAMES,
    c10_validation_ood,
    gaussian_ood,
    jigsaw_ood,
    load_validation_set,
    mnist_ood,
    pixel_permuted_ood,
    smooth_noise_ood,
    textures_ood,
    uniform_ood,
    validation_source_indices,
)
from oddkit.detectors.posthoc.tuning import row_hashes, shared_rows
from oddkit.errors import DataError

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
CIFAR = SHARED / "data" / "cifar10"
needs_cifar = pytest.mark.skipif(not CIFAR.is_dir(), reason=f"{CIFAR} is absent (../shared is not on this machine)")


@pytest.fixture(scope="module")
def fake_train() -> ArraySource:
    """2,500 random 32x32 images, so that every pixel and tile is distinguishable."""
    rng = np.random.default_rng(5)
    return ArraySource(rng.integers(0, 256, size=(2500, 32, 32, 3), dtype=np.uint8), name="fake")


@pytest.fixture(scope="module")
def real() -> dict:
    if not CIFAR.is_dir():
        pytest.skip(f"{CIFAR} is absent (../shared is not on this machine)")
    train = ImageFolder(CIFAR / "train")
    return {"train": train, "sets": c10_validation_ood(SHARED)}


def _flat(images: np.ndarray) -> np.ndarray:
    return images.reshape(images.shape[0], -1)


# --------------------------------------------------------------------------- definitions
def test_source_indices_are_the_documented_draw() -> None:
    idx = validation_source_indices(50_000)
    expected = np.sort(np.random.RandomState(VALIDATION_SEEDS["draw"]).choice(50_000, N_VALIDATION, replace=False))
    np.testing.assert_array_equal(idx, expected)
    assert idx.size == np.unique(idx).size == 2000 and idx.min() >= 0 and idx.max() < 50_000
    with pytest.raises(DataError, match="need 2000 source images"):
        validation_source_indices(100)


def test_pixel_permutation_keeps_each_images_pixels(fake_train) -> None:
    out = pixel_permuted_ood(fake_train).images
    src = fake_train.load(validation_source_indices(len(fake_train)))
    assert out.shape == src.shape == (2000, 32, 32, 3)

    def sorted_pixels(images):  # each image's RGB triples as sorted packed integers
        packed = images.astype(np.int64) @ np.array([65536, 256, 1])
        return np.sort(packed.reshape(len(images), -1), axis=1)

    np.testing.assert_array_equal(sorted_pixels(out), sorted_pixels(src))
    assert (_flat(out) != _flat(src)).any(axis=1).all()
    # the documented permutation, re-implemented
    perm = np.argsort(np.random.RandomState(VALIDATION_SEEDS["pixel_permuted"]).random_sample((2000, 1024)), axis=1)
    i = 1234
    np.testing.assert_array_equal(out[i].reshape(1024, 3), src[i].reshape(1024, 3)[perm[i]])


def test_jigsaw_shuffles_whole_tiles_never_the_identity(fake_train) -> None:
    out = jigsaw_ood(fake_train).images
    src = fake_train.load(validation_source_indices(len(fake_train)))

    def tiles(images):
        t = images.reshape(len(images), 4, 8, 4, 8, 3).transpose(0, 1, 3, 2, 4, 5)
        return t.reshape(len(images), 16, -1)

    t_out, t_src = tiles(out), tiles(src)
    np.testing.assert_array_equal(np.sort(t_out, axis=1), np.sort(t_src, axis=1))  # same tiles
    order = np.argsort(np.random.RandomState(VALIDATION_SEEDS["jigsaw"]).random_sample((2000, 16)), axis=1)
    order[(order == np.arange(16)).all(axis=1)] = np.roll(np.arange(16), -1)
    np.testing.assert_array_equal(t_out, np.take_along_axis(t_src, order[:, :, None], axis=1))
    assert (_flat(out) != _flat(src)).any(axis=1).all()


def test_jigsaw_replaces_an_identity_order(fake_train, monkeypatch) -> None:
    real_state = np.random.RandomState

    class FirstRowSorted:
        """RandomState whose first row of draws is increasing: argsort gives the identity."""

        def __init__(self, seed):
            self._rs = real_state(seed)

        def __getattr__(self, name):
            return getattr(self._rs, name)

        def random_sample(self, size):
            draws = self._rs.random_sample(size)
            draws[0] = np.arange(size[1])
            return draws

    monkeypatch.setattr(np.random, "RandomState", FirstRowSorted)
    out = jigsaw_ood(fake_train).images
    monkeypatch.undo()
    src = fake_train.load(validation_source_indices(len(fake_train)))
    tiles = src[0].reshape(4, 8, 4, 8, 3).transpose(0, 2, 1, 3, 4).reshape(16, 8, 8, 3)
    shifted = np.roll(tiles, -1, axis=0).reshape(4, 4, 8, 8, 3).transpose(0, 2, 1, 3, 4).reshape(32, 32, 3)
    np.testing.assert_array_equal(out[0], shifted)  # new tile t = old tile t + 1
    with pytest.raises(DataError, match="divisible by 4"):
        jigsaw_ood(ArraySource(np.zeros((2000, 30, 30, 3), np.uint8)))


def test_smooth_noise_is_smooth_full_range_and_not_pixel_noise() -> None:
    s = smooth_noise_ood()
    x = s.images.astype(np.float64)
    assert x.shape == (2000, 32, 32, 3)
    assert (x.min(axis=(1, 2)) == 0).all() and (x.max(axis=(1, 2)) == 255).all()  # per channel min-max

    def roughness(images):  # mean absolute difference of horizontal neighbours, in grey levels
        return float(np.abs(np.diff(images.astype(np.float64), axis=2)).mean())

    assert roughness(s.images) < 15
    assert roughness(uniform_ood().images) > 60
    assert roughness(s.images) < roughness(gaussian_ood().images) / 4


def test_deterministic_fingerprints(fake_train) -> None:
    for build in (pixel_permuted_ood, jigsaw_ood):
        a, b = build(fake_train), build(fake_train)
        np.testing.assert_array_equal(a.images, b.images)
        assert a.fingerprint == b.fingerprint
    assert smooth_noise_ood().fingerprint == smooth_noise_ood().fingerprint
    assert pixel_permuted_ood(fake_train, seed=1).fingerprint != pixel_permuted_ood(fake_train).fingerprint


def test_load_validation_set_by_name(fake_train) -> None:
    assert load_validation_set("smooth_noise").fingerprint == smooth_noise_ood().fingerprint
    assert load_validation_set("jigsaw", fake_train).fingerprint == jigsaw_ood(fake_train).fingerprint
    assert load_validation_set("pixel_permuted", fake_train).name == "pixel_permuted"
    with pytest.raises(DataError, match="pass train="):
        load_validation_set("jigsaw")
    with pytest.raises(DataError, match="Unknown validation OOD set 'gaussian'"):
        load_validation_set("gaussian", fake_train)
    with pytest.raises(DataError, match="train folder not found"):
        c10_validation_ood("/nonexistent")


# --------------------------------------------------------------------------- real data
@needs_cifar
def test_real_sets_match_their_definition_and_are_stable(real) -> None:
    sets = real["sets"]
    assert list(sets) == list(VALIDATION_SET_NAMES)
    src = real["train"].load(validation_source_indices(len(real["train"])))
    perm = np.argsort(np.random.RandomState(VALIDATION_SEEDS["pixel_permuted"]).random_sample((2000, 1024)), axis=1)
    expected = np.take_along_axis(src.reshape(2000, 1024, 3), perm[:, :, None], axis=1).reshape(src.shape)
    np.testing.assert_array_equal(sets["pixel_permuted"].images, expected)
    again = c10_validation_ood(SHARED)
    assert {k: v.fingerprint for k, v in again.items()} == {k: v.fingerprint for k, v in sets.items()}


@needs_cifar
def test_disjoint_from_the_test_sets_and_from_id_images(real) -> None:
    sets = real["sets"]
    tests = {"textures": textures_ood(), "gaussian": gaussian_ood(), "uniform": uniform_ood()}
    if (SHARED / "data" / "mnist").is_dir():
        tests["mnist"] = mnist_ood(SHARED / "data" / "mnist")
    cifar_test = ImageFolder(CIFAR / "test")
    test_images = {**{k: v.images for k, v in tests.items()}, "cifar10_test": cifar_test.load(slice(None))}
    fingerprints = {v.fingerprint for v in tests.values()} | {cifar_test.fingerprint}
    test_images["train_sources"] = real["train"].load(validation_source_indices(len(real["train"])))
    # equal rows have equal hashes, so no common hash = no common row (hash each array once)
    test_hashes = {k: row_hashes(_flat(T)) for k, T in test_images.items()}
    for name, s in sets.items():
        assert s.fingerprint not in fingerprints
        h = row_hashes(_flat(s.images))
        for test_name, hT in test_hashes.items():
            assert not np.isin(h, hT).any(), (name, test_name)
    assert len({s.fingerprint for s in sets.values()}) == len(sets)


@pytest.fixture(scope="module")
def resnet20(real):
    weights = SHARED / "weights" / "cifar10_resnet20.th"
    if not weights.is_file():
        pytest.skip(f"{weights} is absent")
    pytest.importorskip("torch")
    from oddkit.features import create_backbone, extract

    bb = create_backbone("cifar_resnet20", weights=weights)
    test = ImageFolder(CIFAR / "test")
    take = np.arange(0, 2000, 8)  # 250 images of each set, spread over the source draw

    def feats(images):
        return extract(bb, images, progress=False).features

    return {
        "head": bb.head(),
        "id": feats(test.load(np.arange(5, len(test), 16))),  # 625 test images, all classes
        "val": {n: feats(s.images[take]) for n, s in real["sets"].items()},
        "textures": feats(textures_ood().images[take]),
        "uniform": feats(uniform_ood().images[take]),
    }


def test_resnet20_sees_the_validation_sets_as_ood(resnet20) -> None:
    from oddkit import detectors
    from oddkit.metrics import auroc

    W, b = resnet20["head"]
    msp = detectors.create("msp").fit(resnet20["id"], head=(W, b))  # MSP needs no fit statistics
    s_id = msp.score(resnet20["id"])
    aurocs = {}
    for name, F in resnet20["val"].items():
        s = msp.score(F)
        aurocs[name] = auroc(np.r_[np.zeros(s_id.size), np.ones(s.size)], np.r_[s_id, s])
    # measured on this sample: 0.639 / 0.725 / 0.809 (pixel_permuted / jigsaw / smooth_noise);
    # on all 2,000 images vs the 10,000 test images: 0.639 / 0.741 / 0.816
    assert all(v > 0.6 for v in aurocs.values()), aurocs
    # and in feature space, too, no validation row equals a test row
    for name, F in resnet20["val"].items():
        for other in ("id", "textures", "uniform"):
            assert not shared_rows(F, resnet20[other]).any(), (name, other)

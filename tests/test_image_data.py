"""oddkit.data.images and oddkit.data.ood_sets: image sources and the C10-OOD-local sets.

Real files: the CIFAR-10 ImageFolder and MNIST IDX files in ../shared (skipped with a
reason when absent), checked against plain Pillow decoding and MNIST's known digit
counts. Every format and every kind of damaged input (truncated JPEG, text renamed
.png, grey / RGBA / palette / 16-bit PNGs, CIFAR pickles, SVHN .mat, IDX files) is
generated in tmp_path. The synthetic OOD sets are checked against the protocol text
re-implemented here in a few lines and against their distributions.
"""

from __future__ import annotations

import gzip
import importlib.util
import io
import os
import pickle
import shutil
import struct
import time
import zlib
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
import scipy.io
from PIL import Image
from scipy.stats import norm

import oddkit.data.images as images_mod
from oddkit.data.images import (
    ArraySource,
    ImageFolder,
    ImageSource,
    check_same_classes,
    clear_digest_cache,
    from_torchvision,
    iter_batches,
    load_cifar_pickle,
    load_mnist_idx,
    load_svhn_mat,
)
from oddkit.data.ood_sets import (
    OOD_SET_NAMES,
    c10_ood_local,
    gaussian_ood,
    load_ood_set,
    mnist_ood,
    skimage_textures,
    texture_plan,
    textures_ood,
    uniform_ood,
)
from oddkit.errors import DataError, InputError, MissingDependencyError, ParamError

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
CIFAR = SHARED / "data" / "cifar10"
MNIST = SHARED / "data" / "mnist"
CIFAR_CLASSES = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
]
# Digit counts of the official MNIST test set (t10k-labels-idx1-ubyte).
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
BILINEAR = Image.Resampling.BILINEAR


def need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"{path} is absent (../shared is not on this machine)")
    return path


def pil_rgb(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def rng_image(seed: int, shape: tuple[int, ...] = (8, 10, 3)) -> np.ndarray:
    return np.random.RandomState(seed).randint(0, 256, shape).astype(np.uint8)


def make_folder(root: Path, classes: dict[str, int], shape=(8, 10, 3), fmt="png") -> Path:
    """root/<class>/<k>.<fmt> with distinct random images; returns root."""
    for c, (name, count) in enumerate(classes.items()):
        (root / name).mkdir(parents=True)
        for k in range(count):
            Image.fromarray(rng_image(100 * c + k, shape)).save(root / name / f"{k}.{fmt}")
    return root


def png_bytes(width: int, height: int, rows: bytes, bit_depth: int, colour_type: int) -> bytes:
    """A PNG written by hand (Pillow cannot write 16-bit RGB)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


# --------------------------------------------------------------------------- real CIFAR-10
@pytest.fixture(scope="module")
def cifar_test() -> ImageFolder:
    return ImageFolder(need(CIFAR / "test"))


def test_cifar10_test_folder_layout_and_labels(cifar_test: ImageFolder) -> None:
    assert cifar_test.classes == CIFAR_CLASSES
    assert len(cifar_test) == 10_000 and cifar_test.image_size == (32, 32)
    assert cifar_test.labels.dtype == np.int64
    assert np.bincount(cifar_test.labels).tolist() == [1000] * 10
    folder_of = np.array([cifar_test.class_to_idx[f.split("/")[0]] for f in cifar_test.files])
    np.testing.assert_array_equal(cifar_test.labels, folder_of)
    assert isinstance(cifar_test, ImageSource)
    with pytest.raises(ValueError):
        cifar_test.labels[0] = 3  # read-only


def test_cifar10_load_matches_pillow(cifar_test: ImageFolder) -> None:
    idx = [0, 1234, 5678, 9999, -1]
    got = cifar_test.load(idx)
    assert got.shape == (5, 32, 32, 3) and got.dtype == np.uint8
    for k, i in enumerate(idx):
        np.testing.assert_array_equal(got[k], pil_rgb(cifar_test.paths[i]))
    assert cifar_test.files[1234] == "automobile/0234.jpg" and cifar_test.labels[1234] == 1


def test_cifar10_fingerprint_stable_and_split_specific(cifar_test: ImageFolder) -> None:
    first = cifar_test.fingerprint
    clear_digest_cache()  # the second construction re-reads every file
    again = ImageFolder(CIFAR / "test")
    assert again.fingerprint == first and len(first) == 16
    train = ImageFolder(need(CIFAR / "train"))
    assert len(train) == 50_000 and train.classes == CIFAR_CLASSES
    assert train.fingerprint != first
    check_same_classes(train, cifar_test)
    resized = ImageFolder(CIFAR / "test", size=(24, 24))
    assert resized.fingerprint != first  # a decoding option enters the fingerprint


# --------------------------------------------------------------------------- real MNIST
def test_mnist_idx_real_files() -> None:
    src = load_mnist_idx(
        need(MNIST / "t10k-images-idx3-ubyte.gz"), MNIST / "t10k-labels-idx1-ubyte.gz"
    )
    assert len(src) == 10_000 and src.images.shape == (10_000, 28, 28, 3)
    assert src.classes == [str(d) for d in range(10)]
    assert np.bincount(src.labels).tolist() == MNIST_TEST_COUNTS
    x = src.load(np.arange(10_000))
    assert (x[..., 0] == x[..., 1]).all() and (x[..., 1] == x[..., 2]).all()
    assert 30 < x.mean() < 37  # MNIST's mean intensity is 0.13 * 255
    assert (x[:, 0, 0] == 0).all()  # digits are centred on a black background


def test_mnist_ood_is_pillow_bilinear_resize(tmp_path: Path) -> None:
    ood = mnist_ood(need(MNIST))
    assert ood.images.shape == (10_000, 32, 32, 3) and ood.images.dtype == np.uint8
    assert (ood.labels == -1).all() and ood.classes == []
    raw = gzip.decompress((MNIST / "t10k-images-idx3-ubyte.gz").read_bytes())
    grey = np.frombuffer(raw, np.uint8, offset=16).reshape(10_000, 28, 28)
    for i in (0, 17, 9999):
        expect = np.asarray(Image.fromarray(grey[i]).resize((32, 32), BILINEAR))
        np.testing.assert_array_equal(ood.images[i], np.repeat(expect[..., None], 3, axis=2))
    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(raw)  # the raw (not gzip) file
    assert mnist_ood(tmp_path).fingerprint == ood.fingerprint == mnist_ood(MNIST).fingerprint


def test_c10_ood_local_assembles_the_protocol() -> None:
    data = c10_ood_local(need(SHARED))
    assert list(data.ood) == list(OOD_SET_NAMES) == ["mnist", "textures", "gaussian", "uniform"]
    assert (len(data.train), len(data.test)) == (50_000, 10_000)
    assert [len(data.ood[n]) for n in OOD_SET_NAMES] == [10_000, 2000, 2000, 2000]
    assert all(s.image_size == (32, 32) for s in data.ood.values())
    prints = data.fingerprints()
    assert len(set(prints.values())) == 6 and data.protocol == "C10-OOD-local"
    with pytest.raises(DataError, match="CIFAR-10 folders not found"):
        c10_ood_local(SHARED / "nowhere")


# --------------------------------------------------------------------------- synthetic OOD
def test_gaussian_ood_follows_the_protocol_and_its_distribution() -> None:
    src = gaussian_ood()
    pixels = np.clip(np.random.RandomState(1).normal(0.5, 0.25, (2000, 32, 32, 3)), 0, 1)
    np.testing.assert_array_equal(src.images, np.rint(pixels * 255).astype(np.uint8))
    assert src.images.shape == (2000, 32, 32, 3) and src.images.dtype == np.uint8
    assert abs(src.images.mean() - 127.5) < 0.3
    freq = np.bincount(src.images.ravel(), minlength=256) / src.images.size
    edges = (np.arange(257) - 0.5) / 255  # value k covers x in [(k - .5)/255, (k + .5)/255)
    expect = np.diff(norm.cdf(edges, 0.5, 0.25))
    expect[0], expect[255] = norm.cdf(edges[1], 0.5, 0.25), norm.sf(edges[255], 0.5, 0.25)
    assert np.abs(freq - expect).max() < 3e-4
    assert gaussian_ood().fingerprint == src.fingerprint


def test_uniform_ood_follows_the_protocol_and_its_distribution() -> None:
    src = uniform_ood()
    pixels = np.random.RandomState(2).uniform(0, 1, (2000, 32, 32, 3))
    np.testing.assert_array_equal(src.images, np.rint(pixels * 255).astype(np.uint8))
    freq = np.bincount(src.images.ravel(), minlength=256) * 255 / src.images.size
    assert np.abs(freq[1:255] - 1).max() < 0.05  # flat inside
    assert abs(freq[0] - 0.5) < 0.05 and abs(freq[255] - 0.5) < 0.05  # half bins at the ends
    assert uniform_ood().fingerprint == src.fingerprint != gaussian_ood().fingerprint


def test_textures_ood_crops_come_from_all_three_textures() -> None:
    src = textures_ood()
    x = src.images
    assert x.shape == (2000, 32, 32, 3) and x.dtype == np.uint8 and (src.labels == -1).all()
    assert (x[..., 0] == x[..., 2]).all()
    assert textures_ood().fingerprint == src.fingerprint
    textures = skimage_textures()
    plan = texture_plan([t.shape for t in textures])
    assert np.bincount(plan.texture).tolist() == [667, 667, 666]
    assert plan.factor.min() >= 0.25 and plan.factor.max() < 1.0
    assert plan.factor.std() > 0.2  # spread over the range
    # The documented draws, re-done one crop at a time: resize the texture, then crop.
    rs = np.random.RandomState(0)
    factors = rs.uniform(0.25, 1.0, 2000)
    sides = np.rint(512 * factors).astype(int)
    tops, lefts = rs.randint(0, sides - 31), rs.randint(0, sides - 31)
    for i in [*range(6), 1000, 1001, 1002, 1997, 1998, 1999]:
        side, top, left = int(sides[i]), int(tops[i]), int(lefts[i])
        own = np.asarray(Image.fromarray(textures[i % 3]).resize((side, side), BILINEAR))
        window = own[top : top + 32, left : left + 32]
        np.testing.assert_array_equal(x[i, ..., 0], window)
        for other in {0, 1, 2} - {i % 3}:  # and not the same window of another texture
            alien = np.asarray(Image.fromarray(textures[other]).resize((side, side), BILINEAR))
            diff = alien[top : top + 32, left : left + 32].astype(int) - window
            assert np.abs(diff).mean() > 10
    assert len({x[i].tobytes() for i in range(2000)}) == 2000


def test_load_ood_set_by_name() -> None:
    assert load_ood_set("uniform").fingerprint == uniform_ood().fingerprint
    with pytest.raises(DataError, match="Unknown OOD set"):
        load_ood_set("svhn")
    with pytest.raises(DataError, match="mnist_dir"):
        load_ood_set("mnist")


# --------------------------------------------------------------------------- folders
def test_folder_labels_files_and_lazy_decoding(tmp_path: Path, monkeypatch) -> None:
    root = make_folder(tmp_path / "d", {"b_cls": 2, "a_cls": 3})
    (root / "a_cls" / "notes.txt").write_text("ignored")
    (root / "a_cls" / ".hidden.png").write_bytes(b"ignored")
    nested = root / "b_cls" / "more"
    nested.mkdir()
    Image.fromarray(rng_image(7)).save(nested / "x.png")
    src = ImageFolder(root)
    assert src.classes == ["a_cls", "b_cls"] and src.class_to_idx == {"a_cls": 0, "b_cls": 1}
    assert src.files == [
        "a_cls/0.png",
        "a_cls/1.png",
        "a_cls/2.png",
        "b_cls/0.png",
        "b_cls/1.png",
        "b_cls/more/x.png",
    ]
    assert src.labels.tolist() == [0, 0, 0, 1, 1, 1]
    calls = []
    real = images_mod.read_rgb
    monkeypatch.setattr(images_mod, "read_rgb", lambda p, s=None: calls.append(p) or real(p, s))
    got = src.load([5, 1])
    assert len(calls) == 2  # only the images asked for are decoded
    np.testing.assert_array_equal(got[0], rng_image(7))
    np.testing.assert_array_equal(got[1], rng_image(101))  # a_cls was made second
    assert src.load(slice(0, 2)).shape == (2, 8, 10, 3)
    assert src.load([]).shape == (0, 8, 10, 3)
    np.testing.assert_array_equal(src.load([-1]), src.load([5]))


@pytest.mark.parametrize("bad", [[6], [-7], [[0, 1]], [0.5], 3])
def test_folder_bad_indices(tmp_path: Path, bad) -> None:
    src = ImageFolder(make_folder(tmp_path / "d", {"a": 3, "b": 3}))
    with pytest.raises(InputError):
        src.load(bad)


def test_mode_conversions_to_rgb(tmp_path: Path) -> None:
    root = tmp_path / "modes"
    (root / "c").mkdir(parents=True)
    grey = rng_image(1, (6, 5))
    rgba = rng_image(2, (6, 5, 4))
    rgba[..., 3] = 0  # fully transparent: alpha is dropped, the colour kept
    grey16 = np.random.RandomState(3).randint(0, 65536, (6, 5)).astype(np.uint16)
    rgb16 = np.random.RandomState(4).randint(0, 65536, (6, 5, 3)).astype(">u2")
    palette = Image.fromarray(rng_image(5, (6, 5, 3))).quantize(colors=16)
    Image.fromarray(grey).save(root / "c" / "1_grey.png")
    Image.fromarray(rgba).save(root / "c" / "2_rgba.png")
    Image.fromarray(grey16).save(root / "c" / "3_grey16.png")
    rows = b"".join(b"\x00" + rgb16[r].tobytes() for r in range(6))
    (root / "c" / "4_rgb16.png").write_bytes(png_bytes(5, 6, rows, 16, 2))
    palette.save(root / "c" / "5_palette.png")
    Image.fromarray(grey > 128).save(root / "c" / "6_bilevel.png")
    src = ImageFolder(root)
    with Image.open(root / "c" / "3_grey16.png") as check:
        assert check.mode.startswith("I")  # Pillow really read 16 bits
    x = src.load(np.arange(6))
    assert x.dtype == np.uint8 and x.shape == (6, 6, 5, 3)
    np.testing.assert_array_equal(x[0], np.repeat(grey[..., None], 3, axis=2))
    np.testing.assert_array_equal(x[1], rgba[..., :3])
    np.testing.assert_array_equal(x[2], np.repeat((grey16 >> 8).astype(np.uint8)[..., None], 3, 2))
    np.testing.assert_array_equal(x[3], (rgb16.astype(np.uint16) >> 8).astype(np.uint8))
    np.testing.assert_array_equal(x[4], np.asarray(palette.convert("RGB")))
    np.testing.assert_array_equal(x[5], np.repeat(np.where(grey > 128, 255, 0)[..., None], 3, 2))


def test_sizes_must_agree_unless_resized(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "d", {"a": 2})
    odd = root / "a" / "9_odd.png"
    Image.fromarray(rng_image(9, (12, 7, 3))).save(odd)
    src = ImageFolder(root)
    assert src.image_size == (8, 10)
    src.load([0, 1])
    with pytest.raises(DataError, match="9_odd.png.*12x7.*size=") as err:
        src.load([2])
    assert str(odd) in str(err.value)
    with pytest.raises(DataError, match="9_odd.png"):
        src.scan()
    resized = ImageFolder(root, size=(16, 20))
    x = resized.load([0, 1, 2])
    assert x.shape == (3, 16, 20, 3)
    expect = Image.fromarray(rng_image(9, (12, 7, 3))).resize((20, 16), BILINEAR)
    np.testing.assert_array_equal(x[2], np.asarray(expect))
    assert ImageFolder(root, size=5).image_size == (5, 5)
    for bad in [(0, 3), (2.5, 3), "big", (1, 2, 3), True]:
        with pytest.raises(ParamError):
            ImageFolder(root, size=bad)
    with pytest.raises(ParamError):
        ImageFolder(root, on_error="ignore")


def damaged_folder(root: Path) -> Path:
    """Three good PNGs, a truncated JPEG and a text file renamed .png."""
    make_folder(root, {"a": 3})
    buf = io.BytesIO()
    Image.fromarray(rng_image(11, (8, 10, 3))).save(buf, format="JPEG")
    (root / "a" / "8_truncated.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    (root / "a" / "9_text.png").write_text("this is not an image\n")
    return root


def test_damaged_files_raise_naming_the_file(tmp_path: Path) -> None:
    root = damaged_folder(tmp_path / "d")
    src = ImageFolder(root)  # construction reads one header only
    assert len(src) == 5 and src.skipped == 0
    assert src.load([0, 1, 2]).shape == (3, 8, 10, 3)
    with pytest.raises(DataError, match=r"8_truncated\.jpg.*[Tt]runcated.*on_error='skip'"):
        src.load([3])
    with pytest.raises(DataError, match=r"9_text\.png"):
        src.load([4])
    with pytest.raises(DataError, match=r"8_truncated\.jpg"):
        src.scan()


def test_damaged_files_skipped_with_a_warning(tmp_path: Path) -> None:
    root = damaged_folder(tmp_path / "d")
    with pytest.warns(UserWarning, match="skipped 2 unreadable"):
        src = ImageFolder(root, on_error="skip")
    assert src.skipped == 2 and src.skipped_files == ["a/8_truncated.jpg", "a/9_text.png"]
    assert src.files == ["a/0.png", "a/1.png", "a/2.png"]
    assert src.load(np.arange(3)).shape == (3, 8, 10, 3)
    src.scan()  # everything left is readable


def test_empty_and_malformed_roots(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="No images"):
        ImageFolder(tmp_path / "empty")
    (tmp_path / "no_images" / "a").mkdir(parents=True)
    (tmp_path / "no_images" / "a" / "readme.txt").write_text("x")
    with (
        pytest.warns(UserWarning, match="holds no images"),
        pytest.raises(DataError, match="No images"),
    ):
        ImageFolder(tmp_path / "no_images")
    (tmp_path / "flat").mkdir()
    Image.fromarray(rng_image(0)).save(tmp_path / "flat" / "x.png")
    with pytest.raises(DataError, match="directly in the root"):
        ImageFolder(tmp_path / "flat")
    with pytest.raises(DataError, match="not found"):
        ImageFolder(tmp_path / "missing")
    with pytest.raises(DataError, match="is a file"):
        ImageFolder(tmp_path / "flat" / "x.png")
    (tmp_path / "bad_only" / "a").mkdir(parents=True)
    (tmp_path / "bad_only" / "a" / "x.png").write_text("nope")
    with pytest.raises(DataError, match="x.png"):
        ImageFolder(tmp_path / "bad_only")
    with pytest.warns(UserWarning), pytest.raises(DataError, match="No readable image"):
        ImageFolder(tmp_path / "bad_only", on_error="skip")


def test_empty_class_folder_kept_with_a_warning(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "d", {"a": 2, "c": 1})
    (root / "b").mkdir()
    with pytest.warns(UserWarning, match="'b' holds no images"):
        src = ImageFolder(root)
    assert src.classes == ["a", "b", "c"] and src.labels.tolist() == [0, 0, 2]


def test_class_compatibility_check(tmp_path: Path) -> None:
    train = ImageFolder(make_folder(tmp_path / "train", {"cat": 1, "dog": 1, "owl": 1}))
    test = ImageFolder(make_folder(tmp_path / "test", {"cat": 1, "dog": 1, "eel": 1}))
    same = ImageFolder(make_folder(tmp_path / "same", {"cat": 2, "dog": 1, "owl": 1}))
    assert check_same_classes(train, same) == ["cat", "dog", "owl"]
    with pytest.raises(DataError, match=r"only in train: \['owl'\]; only in test: \['eel'\]"):
        check_same_classes(train, test)
    with pytest.raises(DataError, match="ordered differently"):
        check_same_classes(["a", "b"], ["b", "a"])
    assert check_same_classes(train.class_to_idx, ["cat", "dog", "owl"]) == train.classes


def test_folder_fingerprint_tracks_content_not_metadata(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "d", {"a": 2, "b": 2})
    base = ImageFolder(root).fingerprint
    assert ImageFolder(root).fingerprint == base
    copy = shutil.copytree(root, tmp_path / "elsewhere")  # new times, same bytes
    assert ImageFolder(copy).fingerprint == base
    target = root / "b" / "1.png"
    stat = target.stat()
    old = target.read_bytes()
    changed = bytearray(old)
    changed[-20] ^= 0xFF  # same size; then restore the modification time
    target.write_bytes(bytes(changed))
    os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    clear_digest_cache()
    assert ImageFolder(root).fingerprint != base  # content, not size or time, decides
    target.write_bytes(old)  # written just now: too recent to cache, re-read every time
    assert ImageFolder(root).fingerprint == base
    target.write_bytes(bytes(changed))
    assert ImageFolder(root).fingerprint != base
    recent = time.time_ns()  # a rewrite with the same size and the same recent time
    os.utime(target, ns=(recent, recent))
    assert ImageFolder(root).fingerprint != base
    target.write_bytes(old)
    os.utime(target, ns=(recent, recent))
    assert ImageFolder(root).fingerprint == base  # recent files are never served from cache
    Image.fromarray(rng_image(50)).save(root / "b" / "2.png")
    assert ImageFolder(root).fingerprint != base  # the file list changed
    (root / "b" / "2.png").unlink()
    (root / "b" / "1.png").rename(root / "b" / "1b.png")
    assert ImageFolder(root).fingerprint != base  # a renamed file


def test_iter_batches_covers_the_source_in_order(tmp_path: Path) -> None:
    src = ImageFolder(make_folder(tmp_path / "d", {"a": 4, "b": 3}))
    seen = list(iter_batches(src, batch_size=3))
    assert [len(i) for i, _ in seen] == [3, 3, 1]
    np.testing.assert_array_equal(np.concatenate([i for i, _ in seen]), np.arange(7))
    np.testing.assert_array_equal(np.concatenate([x for _, x in seen]), src.load(np.arange(7)))
    with pytest.raises(ParamError):
        next(iter_batches(src, batch_size=0))


# --------------------------------------------------------------------------- arrays
def test_array_source_uint8_shared_and_read_only() -> None:
    x = rng_image(0, (5, 4, 6, 3))
    src = ArraySource(x, labels=[0, 2, 1, -1, 2])
    assert np.shares_memory(src.images, x) and not src.images.flags.writeable
    assert src.classes == ["0", "1", "2"] and src.image_size == (4, 6)
    got = src.load([4, 0])
    np.testing.assert_array_equal(got, x[[4, 0]])
    got[:] = 0  # a copy: the source is untouched
    assert src.images[4].any()
    assert isinstance(src, ImageSource)
    assert ArraySource(x.copy(), labels=[0, 2, 1, -1, 2]).fingerprint == src.fingerprint
    y = x.copy()
    y[3, 2, 1, 0] ^= 1
    assert ArraySource(y, labels=[0, 2, 1, -1, 2]).fingerprint != src.fingerprint
    assert ArraySource(x, labels=[0, 2, 1, -1, 1]).fingerprint != src.fingerprint
    assert (ArraySource(x).labels == -1).all() and ArraySource(x).classes == []


def test_array_source_conversions() -> None:
    floats = np.array([0.0, 0.2, 0.5, 1.0, 0.5 / 255, 1.5 / 255, 0.9999]).reshape(1, 1, 7, 1)
    src = ArraySource(floats)
    assert src.images.shape == (1, 1, 7, 3)
    assert src.images[0, 0, :, 0].tolist() == [0, 51, 128, 255, 0, 2, 255]  # rint, half to even
    ints = np.arange(256, dtype=np.int64).reshape(1, 16, 16, 1)
    assert ArraySource(ints).images[0, ..., 1].ravel().tolist() == list(range(256))
    cases = [
        (np.zeros((2, 3, 8, 8), np.uint8), "channels first"),
        (np.zeros((8, 8, 3), np.uint8), r"\(N, H, W, 3\)"),
        (np.full((1, 2, 2, 3), 1.2), r"\[0, 1\]"),
        (np.full((1, 2, 2, 3), np.nan), "NaN"),
        (np.full((1, 2, 2, 3), 256), r"\[0, 255\]"),
        (np.zeros((1, 2, 2, 3), bool), "bool"),
        (np.zeros((0, 2, 2, 3), np.uint8), "non-empty"),
    ]
    for images, message in cases:
        with pytest.raises(DataError, match=message):
            ArraySource(images)
    x = np.zeros((3, 2, 2, 3), np.uint8)
    for labels, message in [
        ([0, 1], r"\(3,\)"),
        ([0.0, 1.0, 2.0], "integers"),
        ([0, -2, 1], ">= -1"),
    ]:
        with pytest.raises(DataError, match=message):
            ArraySource(x, labels=labels)
    with pytest.raises(DataError, match="no class name"):
        ArraySource(x, labels=[0, 1, 2], classes=["a", "b"])


# --------------------------------------------------------------------------- IDX
def idx_bytes(array: np.ndarray) -> bytes:
    return (
        struct.pack(">I", 0x0800 + array.ndim)
        + struct.pack(f">{array.ndim}I", *array.shape)
        + array.tobytes()
    )


def test_idx_raw_gzip_resize_and_damage(tmp_path: Path) -> None:
    grey = rng_image(3, (4, 28, 28))
    labels = np.array([3, 0, 9, 3], np.uint8)
    (tmp_path / "img").write_bytes(idx_bytes(grey))
    (tmp_path / "lab.gz").write_bytes(gzip.compress(idx_bytes(labels)))
    src = load_mnist_idx(tmp_path / "img", tmp_path / "lab.gz")
    np.testing.assert_array_equal(src.images[..., 1], grey)
    assert src.labels.tolist() == [3, 0, 9, 3]
    big = load_mnist_idx(tmp_path / "img", size=(32, 32))
    assert big.classes == [] and (big.labels == -1).all()
    expect = np.asarray(Image.fromarray(grey[2]).resize((32, 32), BILINEAR))
    np.testing.assert_array_equal(big.images[2, ..., 0], expect)
    (tmp_path / "short").write_bytes(idx_bytes(grey)[:-5])
    (tmp_path / "three").write_bytes(idx_bytes(labels[:3]))
    (tmp_path / "tens").write_bytes(idx_bytes(np.array([1, 10, 2, 3], np.uint8)))
    with pytest.raises(DataError, match="truncated"):
        load_mnist_idx(tmp_path / "short")
    with pytest.raises(DataError, match="magic number 2049 instead of 2051"):
        load_mnist_idx(tmp_path / "lab.gz")
    with pytest.raises(DataError, match="3 labels but"):
        load_mnist_idx(tmp_path / "img", tmp_path / "three")
    with pytest.raises(DataError, match="digits 0-9"):
        load_mnist_idx(tmp_path / "img", tmp_path / "tens")
    with pytest.raises(DataError, match="not found"):
        load_mnist_idx(tmp_path / "none")


# --------------------------------------------------------------------------- CIFAR pickles
class Py2Pickler(pickle._Pickler):  # type: ignore[name-defined]
    """Writes str and bytes as Python 2 strings, as the official CIFAR files hold them."""

    dispatch: ClassVar[dict] = dict(pickle._Pickler.dispatch)  # type: ignore[attr-defined]

    def save_py2_string(self, obj) -> None:
        data = obj.encode("latin1") if isinstance(obj, str) else bytes(obj)
        if len(data) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(data)]) + data)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(data)) + data)
        self.memoize(obj)

    dispatch[str] = save_py2_string
    dispatch[bytes] = save_py2_string


def write_py2_pickle(path: Path, obj: object) -> None:
    buf = io.BytesIO()
    Py2Pickler(buf, protocol=2).dump(obj)
    # numpy 1.x (which wrote the official files) lived in numpy.core
    path.write_bytes(
        buf.getvalue().replace(b"numpy._core.multiarray\n", b"numpy.core.multiarray\n")
    )


def test_cifar10_python_batches(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    names = CIFAR_CLASSES
    write_py2_pickle(folder / "batches.meta", {"label_names": names, "num_vis": 3072})
    batches = {}
    for k, name in enumerate([f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]):
        data = rng_image(k, (3, 3072))
        batches[name] = (data, [k % 10, (k + 3) % 10, 9])
        write_py2_pickle(
            folder / name,
            {
                "batch_label": name,
                "labels": batches[name][1],
                "data": data,
                "filenames": [f"{name}_{j}.png" for j in range(3)],
            },
        )
    train = load_cifar_pickle(tmp_path, "train")  # the parent folder works too
    assert len(train) == 15 and train.classes == names
    expect = [label for i in range(1, 6) for label in batches[f"data_batch_{i}"][1]]
    assert train.labels.tolist() == expect
    data = batches["data_batch_2"][0][1]  # 5th image overall: rows of R, then G, then B
    np.testing.assert_array_equal(train.images[4], data.reshape(3, 32, 32).transpose(1, 2, 0))
    test = load_cifar_pickle(folder, "test")
    np.testing.assert_array_equal(
        test.images[2, 5, 7],
        batches["test_batch"][0][2][[5 * 32 + 7, 1024 + 5 * 32 + 7, 2048 + 5 * 32 + 7]],
    )
    assert test.fingerprint != train.fingerprint
    with pytest.raises(ParamError):
        load_cifar_pickle(folder, "val")
    with pytest.raises(DataError, match="No CIFAR python files"):
        load_cifar_pickle(tmp_path / "elsewhere")


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_cifar100_python_files(tmp_path: Path, protocol: int) -> None:
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    meta = {
        "fine_label_names": [f"fine{i}" for i in range(100)],
        "coarse_label_names": [f"c{i}" for i in range(20)],
    }
    (folder / "meta").write_bytes(pickle.dumps(meta, protocol=protocol))
    data = rng_image(1, (4, 3072))
    batch = {b"fine_labels": [5, 99, 0, 7], b"coarse_labels": [1, 19, 0, 2], b"data": data}
    (folder / "test").write_bytes(pickle.dumps(batch, protocol=protocol))
    fine = load_cifar_pickle(folder, "test")
    coarse = load_cifar_pickle(folder, "test", label_kind="coarse")
    assert fine.labels.tolist() == [5, 99, 0, 7] and fine.classes[99] == "fine99"
    assert coarse.labels.tolist() == [1, 19, 0, 2] and len(coarse.classes) == 20
    np.testing.assert_array_equal(fine.images, coarse.images)
    with pytest.raises(DataError, match="CIFAR file not found"):
        load_cifar_pickle(folder, "train")


class Exploit:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class GetattrExploit:
    def __reduce__(self):
        return (getattr, ([], "append"))


class EvalExploit:
    def __reduce__(self):
        return (eval, ("1 + 1",))


@pytest.mark.parametrize("payload", ["os.system", "getattr", "eval"])
def test_cifar_pickle_refuses_code(tmp_path: Path, payload: str) -> None:
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    marker = tmp_path / "pwned"
    evil = {"os.system": Exploit(marker), "getattr": GetattrExploit(), "eval": EvalExploit()}[
        payload
    ]
    (folder / "batches.meta").write_bytes(
        pickle.dumps({"label_names": ["a"], "x": evil}, protocol=2)
    )
    with pytest.raises(DataError, match="refused to load"):
        load_cifar_pickle(folder, "test")
    assert not marker.exists()


def test_cifar_pickle_damaged_content(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    write_py2_pickle(folder / "batches.meta", {"label_names": ["a", "b"]})
    write_py2_pickle(
        folder / "test_batch", {"labels": [0, 1], "data": np.zeros((2, 100), np.uint8)}
    )
    with pytest.raises(DataError, match=r"uint8 \(n, 3072\)"):
        load_cifar_pickle(folder, "test")
    write_py2_pickle(
        folder / "test_batch", {"labels": [0, 2], "data": np.zeros((2, 3072), np.uint8)}
    )
    with pytest.raises(DataError, match=r"labels must lie in 0..1"):
        load_cifar_pickle(folder, "test")
    (folder / "test_batch").write_bytes(b"\x80\x02}q\x00(")  # cut short
    with pytest.raises(DataError, match="Cannot read"):
        load_cifar_pickle(folder, "test")


# --------------------------------------------------------------------------- SVHN
def test_svhn_mat(tmp_path: Path) -> None:
    X = rng_image(5, (32, 32, 3, 6))
    y = np.array([[10], [1], [2], [10], [9], [5]], dtype=np.uint8)
    scipy.io.savemat(tmp_path / "test_32x32.mat", {"X": X, "y": y})
    src = load_svhn_mat(tmp_path / "test_32x32.mat")
    assert src.labels.tolist() == [0, 1, 2, 0, 9, 5] and src.classes[0] == "0"
    for k in range(6):
        np.testing.assert_array_equal(src.images[k], X[..., k])
    scipy.io.savemat(tmp_path / "bad.mat", {"X": X, "y": np.zeros((6, 1))})
    with pytest.raises(DataError, match="1..10"):
        load_svhn_mat(tmp_path / "bad.mat")
    scipy.io.savemat(tmp_path / "noy.mat", {"X": X})
    with pytest.raises(DataError, match="X and y"):
        load_svhn_mat(tmp_path / "noy.mat")
    (tmp_path / "junk.mat").write_text("not a mat file")
    with pytest.raises(DataError):
        load_svhn_mat(tmp_path / "junk.mat")


# --------------------------------------------------------------------------- torchvision
@pytest.mark.skipif(
    importlib.util.find_spec("torchvision") is not None, reason="torchvision is installed here"
)
def test_from_torchvision_without_torchvision(tmp_path: Path) -> None:
    with pytest.raises(MissingDependencyError, match="pip install torchvision"):
        from_torchvision("CIFAR10", tmp_path, "test")


def test_subset_source_loads_its_rows_and_keys_its_own_fingerprint():
    from oddkit.data import ArraySource, SubsetSource

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(20, 8, 8, 3), dtype=np.uint8)
    base = ArraySource(images, labels=np.arange(20) % 4)
    sub = SubsetSource(base, [3, 7, 11], "three rows")
    assert len(sub) == 3 and sub.labels.tolist() == [3, 3, 3]
    np.testing.assert_array_equal(sub.load([2, 0]), images[[11, 3]])
    np.testing.assert_array_equal(sub.load(slice(None)), images[[3, 7, 11]])
    other = SubsetSource(base, [3, 7, 12], "three rows")
    assert sub.fingerprint.startswith(base.fingerprint) and sub.fingerprint != other.fingerprint
    even = SubsetSource.evenly(base, 5)
    assert even.index.tolist() == [0, 5, 10, 14, 19] and len(SubsetSource.evenly(base, 50)) == 20
    with pytest.raises(InputError, match="out of range"):
        SubsetSource(base, [20])
    with pytest.raises(InputError, match="out of range"):
        sub.load([3])

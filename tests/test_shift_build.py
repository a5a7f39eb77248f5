"""Shifted test-set builder (oddkit.shifts.build): determinism, streaming, manifest, atomic files."""

from __future__ import annotations

import inspect
import json

import numpy as np
import pytest

from oddkit.data import ArraySource
from oddkit.errors import DataError, InputError, ParamError
from oddkit.shifts import apply_shift
from oddkit.shifts.build import (
    MANIFEST_NAME,
    ShiftedSource,
    block_seed,
    build_shifted_set,
    check_shifts,
    file_name,
    open_shifted_set,
    shifted_dataset,
)

BLOCK = 16  # small blocks so a few dozen images span several


@pytest.fixture(scope="module")
def tiles() -> ArraySource:
    """70 real 32x32 RGB tiles cut from scikit-image's astronaut photograph, with labels."""
    from skimage import data

    img = data.astronaut()[:320, :224]  # 10 x 7 tiles
    t = img.reshape(10, 32, 7, 32, 3).swapaxes(1, 2).reshape(70, 32, 32, 3)
    return ArraySource(np.ascontiguousarray(t), labels=np.arange(70) % 3, classes=["a", "b", "c"])


class CountingSource:
    """Wraps a source and records how many images were loaded."""

    def __init__(self, source, fail_after: int | None = None):
        self.source, self.loaded, self.fail_after = source, 0, fail_after
        self.labels, self.classes = source.labels, source.classes

    @property
    def fingerprint(self):
        return self.source.fingerprint

    def __len__(self):
        return len(self.source)

    def load(self, indices):
        idx = np.asarray(indices)
        if self.fail_after is not None and self.loaded + idx.size > self.fail_after:
            raise RuntimeError("simulated crash while reading images")
        self.loaded += idx.size
        return self.source.load(idx)


RANDOM_SHIFTS = [("crop_resize", 5), ("color_jitter", 3)]


# ----------------------------------------------------------------------------- determinism
def test_block_rule_and_batch_independence(tiles):
    src = ShiftedSource(tiles, "crop_resize", 5, seed=7, block_size=BLOCK)
    whole = src.load(np.arange(len(src)))
    # the documented rule: block k = apply_shift of images [kB, (k+1)B) with block_seed(seed, k)
    expected = np.concatenate([
        apply_shift(tiles.load(np.arange(s, min(70, s + BLOCK))), "crop_resize", 5, seed=block_seed(7, s // BLOCK))
        for s in range(0, 70, BLOCK)
    ])
    np.testing.assert_array_equal(whole, expected)
    # any batching, order or repetition of the reader gives the same images
    fresh = ShiftedSource(tiles, "crop_resize", 5, seed=7, block_size=BLOCK, cache_blocks=1)
    for batch in (1, 5, 13, 64):
        parts = [fresh.load(np.arange(i, min(70, i + batch))) for i in range(0, 70, batch)]
        np.testing.assert_array_equal(np.concatenate(parts), whole)
    perm = np.random.default_rng(0).permutation(70)
    np.testing.assert_array_equal(fresh.load(perm), whole[perm])
    # the random shift really is random per image (crops differ), and another seed differs
    assert not np.array_equal(whole, ShiftedSource(tiles, "crop_resize", 5, seed=8, block_size=BLOCK).load(slice(None)))


def test_streams_match_source_and_are_lazy(tiles):
    counting = CountingSource(tiles)
    gen = shifted_dataset(counting, RANDOM_SHIFTS, seed=3, block_size=BLOCK)
    assert inspect.isgenerator(gen)
    first = next(gen)
    assert (first.shift, first.severity, first.start) == ("crop_resize", 5, 0)
    assert first.images.shape == (BLOCK, 32, 32, 3)
    assert counting.loaded <= 1 + BLOCK  # one image for the size check, one block: nothing else made
    blocks = [first, *gen]
    assert len(blocks) == 2 * 5  # two shifts x ceil(70 / 16) blocks
    for name, severity in RANDOM_SHIFTS:
        streamed = np.concatenate([b.images for b in blocks if b.shift == name])
        on_the_fly = ShiftedSource(tiles, name, severity, seed=3, block_size=BLOCK).load(slice(None))
        np.testing.assert_array_equal(streamed, on_the_fly)


def test_fingerprint_keys_every_ingredient(tiles):
    fp = ShiftedSource(tiles, "color_jitter", 3, seed=0).fingerprint
    assert len(fp) == 16 and fp != tiles.fingerprint
    assert fp == ShiftedSource(tiles, "color_jitter", 3, seed=0).fingerprint
    others = {
        ShiftedSource(tiles, "color_jitter", 4, seed=0).fingerprint,
        ShiftedSource(tiles, "color_jitter", 3, seed=1).fingerprint,
        ShiftedSource(tiles, "crop_resize", 3, seed=0).fingerprint,
        ShiftedSource(tiles, "color_jitter", 3, seed=0, block_size=BLOCK).fingerprint,
        ShiftedSource(ArraySource(tiles.images[::-1].copy()), "color_jitter", 3, seed=0).fingerprint,
    }
    assert fp not in others and len(others) == 5
    src = ShiftedSource(tiles, "hflip", 1)
    np.testing.assert_array_equal(src.labels, tiles.labels)
    assert src.classes == ["a", "b", "c"] and len(src) == 70


# ----------------------------------------------------------------------------- on disk
def test_build_and_read_back(tiles, tmp_path):
    out = tmp_path / "set"
    manifest_path = build_shifted_set(tiles, RANDOM_SHIFTS, out, seed=5, block_size=BLOCK, progress=False)
    manifest = json.loads(manifest_path.read_text())
    assert manifest["complete"] is True
    assert manifest["source"]["fingerprint"] == tiles.fingerprint and manifest["source"]["n_images"] == 70
    assert [(s["name"], s["severity"]) for s in manifest["shifts"]] == RANDOM_SHIFTS
    assert manifest["seed"] == 5 and manifest["block_size"] == BLOCK and manifest["oddkit_version"]
    import hashlib

    for name, entry in manifest["files"].items():
        assert hashlib.sha256((out / name).read_bytes()).hexdigest() == entry["sha256"]
    assert sorted(p.name for p in out.iterdir()) == sorted([MANIFEST_NAME, "labels.npy",
                                                            *(file_name(*p) for p in RANDOM_SHIFTS)])
    built = open_shifted_set(out)
    for name, severity in RANDOM_SHIFTS:
        fly = ShiftedSource(tiles, name, severity, seed=5, block_size=BLOCK)
        np.testing.assert_array_equal(built.array(name, severity), fly.load(slice(None)))
        source = built.source(name, severity)
        assert source.fingerprint == fly.fingerprint  # the feature cache shares entries
        np.testing.assert_array_equal(source.load([3, 1]), fly.load([3, 1]))
    np.testing.assert_array_equal(built.labels, tiles.labels)
    with pytest.raises(ParamError, match="not in this shifted set"):
        built.array("hflip", 1)


def test_same_build_resumes_other_build_refused(tiles, tmp_path):
    out = tmp_path / "set"
    build_shifted_set(tiles, RANDOM_SHIFTS, out, seed=5, block_size=BLOCK, progress=False)
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir() if p.suffix == ".npy"}
    build_shifted_set(tiles, RANDOM_SHIFTS, out, seed=5, block_size=BLOCK, progress=False)  # same: no rewrite
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir() if p.suffix == ".npy"} == before
    for kwargs in ({"seed": 6}, {"block_size": BLOCK * 2}):
        with pytest.raises(DataError, match="another shifted set"):
            build_shifted_set(tiles, RANDOM_SHIFTS, out, progress=False, **{"seed": 5, "block_size": BLOCK, **kwargs})
    with pytest.raises(DataError, match="shifts"):
        build_shifted_set(tiles, RANDOM_SHIFTS[:1], out, seed=5, block_size=BLOCK, progress=False)
    other = ArraySource(tiles.images[:40].copy())
    with pytest.raises(DataError, match="source"):
        build_shifted_set(other, RANDOM_SHIFTS, out, seed=5, block_size=BLOCK, progress=False)
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir() if p.suffix == ".npy"} == before
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(DataError, match="no manifest.json"):
        build_shifted_set(tiles, RANDOM_SHIFTS, foreign, progress=False)
    assert sorted(p.name for p in foreign.iterdir()) == ["notes.txt"]


def test_interrupted_build_leaves_nothing_that_looks_complete(tiles, tmp_path):
    out = tmp_path / "set"
    # crash while making the second shift (after the size check, the whole first shift and one block)
    crashing = CountingSource(tiles, fail_after=1 + 70 + BLOCK)
    with pytest.raises(RuntimeError, match="simulated crash"):
        build_shifted_set(crashing, RANDOM_SHIFTS, out, seed=5, block_size=BLOCK, progress=False)
    names = sorted(p.name for p in out.iterdir())
    assert file_name(*RANDOM_SHIFTS[1]) not in names  # the half-made file never got its final name
    assert not [n for n in names if n.startswith(".tmp-")]  # and its temporary file is gone
    manifest = json.loads((out / MANIFEST_NAME).read_text())
    assert manifest["complete"] is False
    assert set(manifest["files"]) == {"labels.npy", file_name(*RANDOM_SHIFTS[0])}
    with pytest.raises(DataError, match="unfinished"):
        open_shifted_set(out)
    # a stray temporary file (a killed process cannot clean up) is removed on resume
    (out / ".tmp-crop_resize_s5.npy.zzz").write_bytes(b"partial")
    build_shifted_set(tiles, RANDOM_SHIFTS, out, seed=5, block_size=BLOCK, progress=False)
    built = open_shifted_set(out)
    np.testing.assert_array_equal(
        built.array(*RANDOM_SHIFTS[1]),
        ShiftedSource(tiles, *RANDOM_SHIFTS[1], seed=5, block_size=BLOCK).load(slice(None)),
    )
    assert not list(out.glob(".tmp-*"))


def test_damaged_file_is_detected(tiles, tmp_path):
    out = tmp_path / "set"
    build_shifted_set(tiles, [("hflip", 1)], out, progress=False)
    path = out / file_name("hflip", 1)
    raw = bytearray(path.read_bytes())
    raw[-1] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(DataError, match="sha256"):
        open_shifted_set(out).array("hflip", 1)
    assert open_shifted_set(out, verify=False).array("hflip", 1).shape == (70, 32, 32, 3)


# ----------------------------------------------------------------------------- bad input
def test_bad_input_fails_before_work(tiles, tmp_path):
    with pytest.raises(ParamError, match="unknown shift"):
        check_shifts([("gausian_blurr", 3)])
    for severity in (0, 6, 2.5, True):
        with pytest.raises(ParamError, match="severity"):
            ShiftedSource(tiles, "crop_resize", severity)
    with pytest.raises(ParamError, match="listed twice"):
        check_shifts([("hflip", 1), ("hflip", 1)])
    with pytest.raises(ParamError, match="pairs"):
        check_shifts("hflip")
    with pytest.raises(ParamError, match="seed"):
        ShiftedSource(tiles, "hflip", 1, seed=-1)
    wide = ArraySource(np.zeros((4, 32, 48, 3), np.uint8))
    with pytest.raises(InputError, match="square"):
        ShiftedSource(wide, "rot90", 1)
    with pytest.raises(InputError, match="at least"):
        ShiftedSource(ArraySource(np.zeros((4, 4, 4, 3), np.uint8)), "hflip", 1)
    with pytest.raises(InputError, match="uint8"):
        list(shifted_dataset(np.zeros((4, 32, 32, 3), np.float32), [("hflip", 1)]))
    with pytest.raises(InputError, match=r"\(n, H, W, 3\)"):
        list(shifted_dataset(np.zeros((4, 32, 32), np.uint8), [("hflip", 1)]))
    counting = CountingSource(tiles)
    with pytest.raises(ParamError, match="unknown shift"):
        build_shifted_set(counting, [("hflip", 1), ("nope", 2)], tmp_path / "x", progress=False)
    assert counting.loaded == 0 and not (tmp_path / "x").exists()

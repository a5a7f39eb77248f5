"""The on-disk feature cache: hits, keys that never go stale, atomic writes, unusable dirs.

Policy under test (oddkit.features.cache): an unusable cache directory (read-only, not
creatable, disk full) gives a FeatureCacheWarning and the features uncached, never a
failure; entries of a read-only cache are still read.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from oddkit.data import ArraySource

torch = pytest.importorskip("torch", reason="torch is not installed (pip install 'oddkit[vision]')")
from torch import nn

import oddkit.features as of
from oddkit.features import cache as cache_mod
from oddkit.features.cache import FeatureCacheWarning


class Net(nn.Module):
    """A tiny classifier that counts its forward passes."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(6, 3)
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return self.fc(self.avgpool(torch.relu(self.conv(x))).flatten(1))


def images(n: int = 12, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, 16, 16, 3), dtype=np.uint8)


def make_backbone(seed: int = 0, transform=None):
    torch.manual_seed(seed)
    return of.from_module(Net(), transform=transform)


def run(bb, X, cache_dir, **kw):
    return of.extract(bb, X, batch_size=5, cache_dir=cache_dir, progress=False, **kw)


def entries(cache_dir) -> list[str]:
    return sorted(p.name for p in cache_dir.iterdir() if not p.name.startswith(".tmp-"))


# ----------------------------------------------------------------------------- hits and misses
def test_second_call_reads_the_cache_without_running_the_model(tmp_path):
    bb, X = make_backbone(), images()
    with warnings.catch_warnings():
        warnings.simplefilter("error", FeatureCacheWarning)  # the normal path is silent
        first = run(bb, X, tmp_path)
        calls = bb.model.calls
        assert calls == 3 and not first.from_cache
        second = run(bb, X, tmp_path)
    assert bb.model.calls == calls and second.from_cache and second.cache_key == first.cache_key
    np.testing.assert_array_equal(second.features, first.features)
    np.testing.assert_array_equal(second.logits, first.logits)
    assert second.features.dtype == np.float32
    uncached = of.extract(bb, X, progress=False)
    np.testing.assert_array_equal(uncached.features, first.features)


def test_entry_layout_and_meta(tmp_path):
    bb, X = make_backbone(), images()
    out = run(bb, X, tmp_path)
    assert entries(tmp_path) == [out.cache_key]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]
    entry = tmp_path / out.cache_key
    assert sorted(p.name for p in entry.iterdir()) == ["features.npy", "logits.npy", "meta.json"]
    import json

    meta = json.loads((entry / "meta.json").read_text())
    assert (
        meta["key"] == out.cache_key
        and meta["n"] == 12
        and meta["feature_dim"] == 6
        and meta["n_logits"] == 3
    )
    assert meta["backbone"] == bb.name and meta["weights_hash"] == bb.weights_hash
    assert meta["data_fingerprint"] == ArraySource(X).fingerprint and meta["format"] == of.FEATURE_FORMAT_VERSION


def test_one_changed_pixel_is_a_miss(tmp_path):
    bb, X = make_backbone(), images()
    a = run(bb, X, tmp_path)
    Y = X.copy()
    Y[7, 3, 4, 1] ^= 1
    calls = bb.model.calls
    b = run(bb, Y, tmp_path)
    assert not b.from_cache and bb.model.calls > calls and b.cache_key != a.cache_key
    assert not np.array_equal(a.features[7], b.features[7])
    np.testing.assert_array_equal(a.features[:5], b.features[:5])
    assert len(entries(tmp_path)) == 2


def test_another_weights_file_is_a_miss(tmp_path):
    paths = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        state = {f"module.{k}": v for k, v in of.create_backbone("cifar_resnet20").model.state_dict().items()}
        paths.append(tmp_path / f"w{seed}.th")
        torch.save({"best_prec1": 0.0, "state_dict": state}, paths[-1])
    X = np.random.default_rng(0).integers(0, 256, size=(6, 32, 32, 3), dtype=np.uint8)
    cache = tmp_path / "cache"
    a = run(of.create_backbone("cifar_resnet20", weights=paths[0]), X, cache)
    bb1 = of.create_backbone("cifar_resnet20", weights=paths[1])
    b = run(bb1, X, cache)
    assert not b.from_cache and a.cache_key != b.cache_key
    np.testing.assert_allclose(b.features, of.extract(bb1, X, progress=False).features, rtol=1e-5)
    assert not np.allclose(a.features, b.features)
    # the same file again is a hit
    assert run(of.create_backbone("cifar_resnet20", weights=paths[0]), X, cache).from_cache


def test_another_transform_is_a_miss(tmp_path):
    X = images()
    a = run(make_backbone(0), X, tmp_path)
    bb = make_backbone(0, transform=of.ImageTransform(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)))
    b = run(bb, X, tmp_path)
    assert not b.from_cache and b.cache_key != a.cache_key
    assert not np.allclose(a.features, b.features)
    resized = run(make_backbone(0, transform=of.ImageTransform(size=20)), X, tmp_path)
    assert not resized.from_cache and len(entries(tmp_path)) == 3


def test_source_fingerprint_keys_the_cache(tmp_path):
    class Source:
        def __init__(self, X, fingerprint):
            self.X, self.fingerprint, self.loads = X, fingerprint, 0

        def __len__(self):
            return len(self.X)

        def load(self, idx):
            self.loads += 1
            return self.X[idx]

    bb, X = make_backbone(), images()
    run(bb, Source(X, "v1"), tmp_path)
    again = Source(X, "v1")
    assert run(bb, again, tmp_path).from_cache and again.loads == 0  # nothing decoded on a hit
    assert not run(bb, Source(X, "v2"), tmp_path).from_cache


def test_key_and_fingerprint_parts():
    X = images(4)
    fp = of.array_fingerprint(X)
    assert fp == of.array_fingerprint(X.copy()) == of.array_fingerprint(np.asfortranarray(X))
    assert fp != of.array_fingerprint(X.reshape(2, 2, 16, 16, 3))  # same bytes, other shape
    assert fp != of.array_fingerprint(X.view(np.int8))  # same bytes, other dtype
    assert of.array_fingerprint(X, chunk_bytes=700) == fp  # hashed in slices, same digest
    assert of.array_fingerprint(X[::2, :, ::-1]) == of.array_fingerprint(X[::2, :, ::-1].copy())
    base = ("bb", "w", "d", "t")
    keys = {of.cache_key(*base)}
    for i in range(4):
        changed = list(base)
        changed[i] += "x"
        keys.add(of.cache_key(*changed))
    assert len(keys) == 5


def test_transform_without_description_is_not_cached(tmp_path):
    bb = make_backbone(transform=lambda x: of.ImageTransform()(x))
    with pytest.warns(FeatureCacheWarning, match="no 'description'"):
        out = run(bb, images(), tmp_path)
    assert out.cache_key is None and entries(tmp_path) == []


# ----------------------------------------------------------------------------- atomicity and damage
def test_a_crash_mid_write_leaves_no_entry(tmp_path, monkeypatch):
    bb, X = make_backbone(), images()

    def crash(path, text):
        raise KeyboardInterrupt  # features.npy and logits.npy are written, meta.json is not

    monkeypatch.setattr(cache_mod, "_save_text", crash)
    with pytest.raises(KeyboardInterrupt):
        run(bb, X, tmp_path)
    assert entries(tmp_path) == []
    monkeypatch.undo()
    out = run(bb, X, tmp_path)
    assert not out.from_cache and run(bb, X, tmp_path).from_cache


def test_leftover_temp_dirs_are_never_read(tmp_path):
    bb, X = make_backbone(), images()
    key = run(bb, X, tmp_path / "first").cache_key
    stale = tmp_path / "second" / f".tmp-{key[:16]}-dead"
    stale.mkdir(parents=True)
    np.save(stale / "features.npy", np.zeros((12, 6), np.float32))
    out = run(bb, X, tmp_path / "second")
    assert not out.from_cache and out.features.any()


def test_damaged_entry_is_recomputed_and_replaced(tmp_path):
    bb, X = make_backbone(), images()
    good = run(bb, X, tmp_path)
    np.save(tmp_path / good.cache_key / "features.npy", np.zeros((5, 6), np.float32))
    calls = bb.model.calls
    with pytest.warns(FeatureCacheWarning, match="damaged"):
        again = run(bb, X, tmp_path)
    assert not again.from_cache and bb.model.calls > calls
    np.testing.assert_array_equal(again.features, good.features)
    third = run(bb, X, tmp_path)
    assert third.from_cache


# ----------------------------------------------------------------------------- unusable directories
def _chmod_is_ignored(path) -> bool:
    try:
        (path / "probe").mkdir()
    except OSError:
        return False
    (path / "probe").rmdir()
    return True


def _rerun_without_dac_override(test_name: str) -> None:
    """As root, chmod does not stop writes; rerun the test in a root process without CAP_DAC_OVERRIDE."""
    drop = [shutil.which("setpriv") or "setpriv", "--bounding-set=-dac_override,-dac_read_search"]
    try:
        probe = subprocess.run([*drop, "true"], check=False, capture_output=True, text=True, timeout=30)
    except OSError as exc:
        pytest.skip(f"running as root and setpriv cannot run ({exc}): chmod cannot make a dir read-only")
    if probe.returncode != 0:
        pytest.skip(f"running as root and capabilities cannot be dropped here: {probe.stderr.strip()[:200]}")
    cmd = [*drop, sys.executable, "-m", "pytest", f"{__file__}::{test_name}", "-q"]
    cmd += ["-p", "no:cacheprovider", "-p", "no:xdist"]
    proc = subprocess.run(
        cmd, check=False, capture_output=True, text=True, timeout=300, cwd=Path(__file__).parents[1]
    )
    assert proc.returncode == 0 and "1 passed" in proc.stdout, proc.stdout + proc.stderr


def test_read_only_cache_dir_warns_extracts_and_still_serves_hits(tmp_path):
    bb, X = make_backbone(), images()
    cache = tmp_path / "ro"
    run(bb, X, cache)
    cache.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        if _chmod_is_ignored(cache):
            _rerun_without_dac_override("test_read_only_cache_dir_warns_extracts_and_still_serves_hits")
            return
        with pytest.warns(FeatureCacheWarning, match="not writable"):
            hit = run(bb, X, cache)
        assert hit.from_cache
        calls = bb.model.calls
        with pytest.warns(FeatureCacheWarning, match="not writable"):
            miss = run(bb, images(seed=1), cache)
        assert not miss.from_cache and bb.model.calls > calls and miss.features.shape == (12, 6)
        assert len(entries(cache)) == 1
    finally:
        cache.chmod(stat.S_IRWXU)


def test_cache_dir_that_cannot_be_created(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    bb, X = make_backbone(), images()
    with pytest.warns(FeatureCacheWarning, match="not writable") as record:
        out = run(bb, X, blocker / "cache")
    assert len(record) == 1
    np.testing.assert_array_equal(out.features, of.extract(bb, X, progress=False).features)


def test_full_disk_warns_and_returns_the_features(tmp_path, monkeypatch):
    bb, X = make_backbone(), images()

    def full(path, array):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(cache_mod, "_save_array", full)
    with pytest.warns(FeatureCacheWarning, match="No space left on device"):
        out = run(bb, X, tmp_path)
    assert out.features.shape == (12, 6) and out.features.any()
    assert list(tmp_path.iterdir()) == []  # no entry and no temp dir left behind

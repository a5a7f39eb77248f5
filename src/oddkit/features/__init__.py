"""Features for oddkit: backbones, batched extraction and an on-disk cache.

Needs PyTorch (``pip install 'oddkit[vision]'``); the rest of oddkit works without it::

    import oddkit.features as of
    bb = of.create_backbone("cifar_resnet20", weights="cifar10_resnet20.th")
    out = of.extract(bb, images_uint8_nhwc, cache_dir="feature-cache")
    W, b = bb.head()                    # out.logits == out.features @ W.T + b

* :func:`create_backbone` / :func:`list_backbones`: ``cifar_resnet20/32/44/56``,
  ``efficientnet_lite0``, ``torchvision:<name>``, ``timm:<name>``;
  :func:`from_module` wraps any ``torch.nn.Module`` (features from a named layer);
  :func:`fold_batchnorm` folds eval-mode BatchNorm into convolutions (inference speed).
* :func:`extract` -> :class:`Extracted` (float32 features, logits, labels), from a
  uint8 array or an :class:`ImageSource` decoded batch by batch.
* :mod:`oddkit.features.cache`: the cache layout, keys and failure policy.
"""

from __future__ import annotations

from ..errors import MissingDependencyError

try:
    import torch  # noqa: F401
except ModuleNotFoundError as _exc:  # only a missing torch; a broken install raises as is
    if _exc.name != "torch":
        raise
    raise MissingDependencyError(
        "oddkit.features needs PyTorch, which is not installed: pip install 'oddkit[vision]' "
        "(or pip install torch; see pytorch.org for the CPU-only build)."
    ) from _exc

from .backbones import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    CIFAR_RESNET_LAYERS,
    Backbone,
    BackboneInfo,
    HookBackbone,
    ImageTransform,
    LinearHeadBackbone,
    PooledLayersBackbone,
    WeightsError,
    create_backbone,
    fold_batchnorm,
    from_module,
    list_backbones,
    load_weights_file,
    pooled_layers,
    register_backbone,
    state_dict_hash,
)
from .cache import FEATURE_FORMAT_VERSION, FeatureCache, FeatureCacheWarning, array_fingerprint, cache_key
from .extract import Extracted, ImageSource, extract

__all__ = [
    "CIFAR_RESNET_LAYERS",
    "PooledLayersBackbone",
    "pooled_layers",
    "FEATURE_FORMAT_VERSION",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "Backbone",
    "BackboneInfo",
    "Extracted",
    "FeatureCache",
    "FeatureCacheWarning",
    "HookBackbone",
    "ImageSource",
    "ImageTransform",
    "LinearHeadBackbone",
    "WeightsError",
    "array_fingerprint",
    "cache_key",
    "create_backbone",
    "extract",
    "fold_batchnorm",
    "from_module",
    "list_backbones",
    "load_weights_file",
    "register_backbone",
    "state_dict_hash",
]

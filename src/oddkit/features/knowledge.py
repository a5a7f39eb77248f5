"""Knowledge models: pretrained networks that embed images, and transform rankings made with them.

A *knowledge model* is anything with a ``name`` and ``embed(images) -> (n, d) float32``
(uint8 ``(n, H, W, 3)`` in). Knowledge Exposure (arXiv 2406.10617) asks one such model,
per normal class, how far each candidate transform moves the class's images, and trains
its detector on the nearest transforms as positives and the farthest as negatives
(:mod:`oddkit.detectors.trained.knowledge_exposure`)::

    from oddkit.features.knowledge import knowledge_model, rank_transforms
    km = knowledge_model("efficientnet_lite0", cache_dir="feature-cache")
    ranking = rank_transforms(km, bird_images, ["hflip", "rot90", "gaussian_noise"])
    ranking.names, ranking.distances        # ascending: meaning-preserving first

* :class:`BackboneKnowledge`: any oddkit :class:`~oddkit.features.Backbone` (its pooled
  penultimate features, through :func:`~oddkit.features.extract` and its on-disk cache);
* :class:`ClipKnowledge`: an open_clip image encoder (the paper's knowledge model is
  OpenAI's CLIP ViT-B/32); open_clip is imported only when one is built;
* :func:`knowledge_model`: the factory for specs ``"efficientnet_lite0"``,
  ``"cifar_resnet20[@weights.th]"``, ``"clip:ViT-B-32[:pretrained]"``, or objects;
* :func:`rank_transforms` -> :class:`TransformRanking` and :func:`emd_cosine`, the exact
  earth mover's distance between two embedding sets (POT's network simplex).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable
from urllib.parse import urlparse

import numpy as np
import torch

from ..data.images import check_image_batch
from ..detectors.base import check_bool, check_int
from ..errors import (
    InputError,
    MissingDependencyError,
    OddkitError,
    ParamError,
    one_line,
)
from .backbones import (
    Backbone,
    ImageTransform,
    WeightsError,
    create_backbone,
    list_backbones,
    state_dict_hash,
)
from .extract import extract

__all__ = [
    "DEFAULT_TRANSFORMS",
    "BackboneKnowledge",
    "ClipKnowledge",
    "KnowledgeModel",
    "TransformRanking",
    "check_knowledge_spec",
    "check_transforms",
    "emd_cosine",
    "knowledge_fingerprint",
    "knowledge_model",
    "rank_transforms",
]

#: The SPA/SSA candidate pool of docs/protocols.md (arXiv 2406.10617's ten transforms).
DEFAULT_TRANSFORMS: tuple[str, ...] = (
    "hflip",
    "rot90",
    "rot270",
    "crop_resize",
    "color_jitter",
    "gaussian_noise",
    "glass_blur",
    "jpeg_compression",
    "snow",
    "gaussian_blur",
)

#: CLIP's own normalisation (OpenAI), used when an open_clip model does not carry one.
_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
_CLIP_INSTALL = "pip install 'oddkit[clip]' (open_clip_torch, which needs torchvision)"
_POT_INSTALL = "pip install 'oddkit[ke]' (or pip install pot)"
#: seconds a CLIP weights download may stall on one socket operation before it fails
_DOWNLOAD_TIMEOUT = 20.0


# ----------------------------------------------------------------------------- the protocol
@runtime_checkable
class KnowledgeModel(Protocol):
    """A pretrained image embedder: ``name`` and ``embed(uint8 (n, H, W, 3)) -> float32 (n, d)``.

    Optionally ``fingerprint`` (a string naming the network *and* its weights), which a
    saved detector compares when the model is attached again; without it the name is used.
    """

    name: str

    def embed(self, images: np.ndarray) -> np.ndarray: ...


def knowledge_fingerprint(model: Any) -> str:
    """The model's ``fingerprint`` if it has one, else its ``name``."""
    fingerprint = getattr(model, "fingerprint", None)
    return str(fingerprint) if isinstance(fingerprint, str) and fingerprint else str(model.name)


class BackboneKnowledge:
    """Any oddkit Backbone as a knowledge model: its pooled penultimate features.

    ``embed`` runs :func:`~oddkit.features.extract` (batched, eval mode, optional on-disk
    cache keyed on network, weights, transform and pixels, so the same images are never
    embedded twice). ``batch_size`` and ``threads`` only change speed, ``progress`` shows
    extract's progress bar.
    """

    def __init__(
        self,
        backbone: Backbone,
        cache_dir: str | os.PathLike[str] | None = None,
        batch_size: int = 64,
        progress: bool = False,
        threads: int | None = None,
    ) -> None:
        if not isinstance(backbone, Backbone):
            raise InputError(
                f"BackboneKnowledge needs an oddkit Backbone (create_backbone / from_module), got "
                f"{type(backbone).__name__}."
            )
        self.backbone = backbone
        self.cache_dir = cache_dir
        self.batch_size = check_int("batch_size", batch_size, low=1)
        self.progress = check_bool("progress", progress)
        self.threads = None if threads is None else check_int("threads", threads, low=1)
        self.name = backbone.name

    @property
    def fingerprint(self) -> str:
        """sha256 of (network name, weights hash, transform description)."""
        parts = {
            "name": self.backbone.name,
            "weights": self.backbone.weights_hash,
            "transform": getattr(self.backbone.transform, "description", None),
        }
        return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()

    def embed(self, images: np.ndarray) -> np.ndarray:
        """float32 features ``(n, d)`` of uint8 images ``(n, H, W, 3)``."""
        images = check_image_batch(images, contiguous=False)
        if images.shape[0] == 0:
            raise InputError("no images to embed (the array has 0 rows).")
        out = extract(
            self.backbone,
            images,
            batch_size=self.batch_size,
            threads=self.threads,
            cache_dir=self.cache_dir,
            progress=self.progress,
        )
        return np.ascontiguousarray(out.features, dtype=np.float32)

    def __repr__(self) -> str:
        return f"BackboneKnowledge({self.backbone!r}, cache_dir={self.cache_dir!r})"


# ----------------------------------------------------------------------------- CLIP
class _EmbeddingBackbone(Backbone):
    """A Backbone whose features are an embedding function's output (no classifier: 0 logits)."""

    def __init__(self, name: str, model: torch.nn.Module, transform: Any, embed: Any, weights_hash: str) -> None:
        super().__init__(name, model, transform, weights_hash=weights_hash, feature_dim=None)
        self._embed = embed

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self._embed(x).float().flatten(1)
        return features, features[:, :0]

    def _head_layer(self) -> None:
        return None


class ClipKnowledge:
    """An open_clip image encoder as a knowledge model (the paper's choice: CLIP ViT-B/32).

    ``model_name``: an open_clip architecture (``open_clip.list_models()``).
    ``pretrained``: ``None`` for random weights (tests only), a local weights file
    (``.pt``/``.bin``/``.safetensors``, loaded by open_clip), or a pretrained tag of that
    architecture (``"openai"``, ``"laion2b_s34b_b79k"``, ...), taken from open_clip's local
    cache or downloaded by open_clip's normal path where the network is reachable. Without
    network and without a cached copy, loading fails at once with a :class:`WeightsError`
    naming what to do (a reachability probe first; Hugging Face Hub is then put offline
    so it only looks in its cache, and every socket operation times out after
    ``download_timeout`` seconds, so nothing hangs).

    Embedding: the image tower's output (``encode_image``), float32. interpretation: the
    images go through oddkit's batched :class:`ImageTransform` (resize to the model's
    ``image_size`` with bicubic interpolation, the model's mean/std, CLIP's by default)
    rather than open_clip's per-image PIL pipeline (resize shorter side + centre crop):
    for square images this is the same geometry; torch's bicubic kernel differs slightly
    from PIL's, so embeddings differ from open_clip's preprocess by interpolation rounding.
    ``cache_dir``, ``batch_size``, ``progress``: as :class:`BackboneKnowledge`.
    """

    def __init__(
        self,
        model_name: str = "ViT-B-32",
        pretrained: str | os.PathLike[str] | None = "openai",
        *,
        cache_dir: str | os.PathLike[str] | None = None,
        batch_size: int = 64,
        progress: bool = False,
        download_timeout: float = _DOWNLOAD_TIMEOUT,
    ) -> None:
        open_clip = _import_open_clip()
        if not isinstance(model_name, str) or model_name not in open_clip.list_models():
            raise ParamError(
                f"unknown open_clip model {model_name!r}; see open_clip.list_models() "
                "(e.g. 'ViT-B-32', 'RN50')."
            )
        model = _create_clip(open_clip, model_name, pretrained, float(download_timeout))
        model.eval()
        self.model = model
        self.model_name = model_name
        self.pretrained = None if pretrained is None else str(pretrained)
        tag = "random" if pretrained is None else Path(str(pretrained)).name
        self.name = f"clip:{model_name}:{tag}"
        size, mean, std = _clip_preprocess(model)
        transform = ImageTransform(size=size, mean=mean, std=std, interpolation="bicubic")
        backbone = _EmbeddingBackbone(self.name, model, transform, model.encode_image, state_dict_hash(model))
        self._knowledge = BackboneKnowledge(backbone, cache_dir, batch_size, progress)

    @property
    def backbone(self) -> Backbone:
        """The image encoder wrapped as an oddkit Backbone (features = CLIP embedding)."""
        return self._knowledge.backbone

    @property
    def fingerprint(self) -> str:
        return self._knowledge.fingerprint

    def embed(self, images: np.ndarray) -> np.ndarray:
        """float32 CLIP image embeddings ``(n, d)`` of uint8 images ``(n, H, W, 3)``."""
        return self._knowledge.embed(images)

    def __repr__(self) -> str:
        return f"ClipKnowledge({self.model_name!r}, pretrained={self.pretrained!r})"


def _import_open_clip() -> Any:
    try:
        import open_clip
    except ImportError as exc:  # missing, or present but broken (e.g. no torchvision)
        raise MissingDependencyError(
            f"CLIP knowledge models need open_clip, which could not be imported ({one_line(exc)}): "
            f"{_CLIP_INSTALL}."
        ) from exc
    return open_clip


def _looks_like_path(value: str) -> bool:
    return os.sep in value or value.endswith((".pt", ".pth", ".bin", ".safetensors", ".ckpt"))


def _create_clip(open_clip: Any, name: str, pretrained: Any, timeout: float) -> torch.nn.Module:
    """Build the model; random, from a local file, or by pretrained tag (never hangs offline)."""
    if pretrained is None:
        return open_clip.create_model(name, pretrained=None, device="cpu")
    text = str(pretrained)
    if Path(text).is_file():
        return open_clip.create_model(name, pretrained=text, device="cpu")
    if isinstance(pretrained, os.PathLike) or _looks_like_path(text):
        raise WeightsError(f"CLIP weights file {text} does not exist.")
    tags = list(open_clip.list_pretrained_tags_by_model(name))
    if text not in tags:
        raise ParamError(
            f"open_clip has no pretrained tag {text!r} for {name}; known: {tags or 'none'} "
            "(or pass a local weights file, or None for random weights)."
        )
    host, port = _weights_host(open_clip, name, text)
    online = _reachable(host, port, timeout=min(timeout, 3.0))
    try:
        with _socket_timeout(timeout), _hub_offline(not online):
            return open_clip.create_model(name, pretrained=text, device="cpu")
    except Exception as exc:  # any download / cache failure becomes one clear error
        where = (
            f"downloading them from {host} failed"
            if online
            else f"they are not in the local cache and {host} cannot be reached (no network)"
        )
        raise WeightsError(
            f"cannot load CLIP weights {name}:{text}: {where} ({one_line(exc, with_type=True)}). "
            "Load them once on a machine with network (open_clip caches them), or pass "
            "pretrained=<path to a local weights file>."
        ) from exc


def _weights_host(open_clip: Any, name: str, tag: str) -> tuple[str, int]:
    """Host (and port) the weights would come from, or the HTTPS proxy in between."""
    proxy = os.environ.get("HTTPS_PROXY") or os.environ.get("https_proxy")
    if proxy:
        parsed = urlparse(proxy if "://" in proxy else f"http://{proxy}")
        return parsed.hostname or "localhost", parsed.port or 80
    cfg: dict[str, Any] = {}
    with contextlib.suppress(Exception):
        cfg = dict(open_clip.get_pretrained_cfg(name, tag) or {})
    if cfg.get("url") and not cfg.get("hf_hub"):
        return urlparse(str(cfg["url"])).hostname or "huggingface.co", 443
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    return urlparse(endpoint).hostname or "huggingface.co", 443


def _reachable(host: str, port: int, timeout: float) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


@contextlib.contextmanager
def _socket_timeout(seconds: float) -> Iterator[None]:
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)


@contextlib.contextmanager
def _hub_offline(offline: bool) -> Iterator[None]:
    """Hugging Face Hub in offline mode (cache only) inside the block, when ``offline``."""
    if not offline:
        yield
        return
    constants = None
    with contextlib.suppress(ImportError):
        from huggingface_hub import constants
    old_env = os.environ.get("HF_HUB_OFFLINE")
    old_flag = getattr(constants, "HF_HUB_OFFLINE", None)
    os.environ["HF_HUB_OFFLINE"] = "1"
    if constants is not None:
        constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        if old_env is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = old_env
        if constants is not None:
            constants.HF_HUB_OFFLINE = old_flag


def _clip_preprocess(model: torch.nn.Module) -> tuple[int, tuple[float, ...], tuple[float, ...]]:
    """Input size, mean and std of an open_clip model's image tower."""
    visual = getattr(model, "visual", model)
    size = getattr(visual, "image_size", 224)
    if isinstance(size, (tuple, list)):
        size = size[0]
    cfg = dict(getattr(visual, "preprocess_cfg", None) or {})
    mean = tuple(cfg.get("mean") or getattr(visual, "image_mean", None) or _CLIP_MEAN)
    std = tuple(cfg.get("std") or getattr(visual, "image_std", None) or _CLIP_STD)
    return int(size), tuple(float(v) for v in mean), tuple(float(v) for v in std)


# ----------------------------------------------------------------------------- the factory
def check_knowledge_spec(spec: Any) -> None:
    """Cheap check of a knowledge spec (no network is built); a bad one is a ParamError."""
    if isinstance(spec, (Backbone, KnowledgeModel)) and not isinstance(spec, str):
        return
    if not isinstance(spec, str) or not spec:
        raise ParamError(
            "a knowledge model is a spec string ('efficientnet_lite0', 'cifar_resnet20@weights.th', "
            f"'clip:ViT-B-32[:pretrained]'), a Backbone or a KnowledgeModel; got {spec!r}."
        )
    if spec.startswith("clip:"):
        if not spec.split(":", 2)[1]:
            raise ParamError(f"knowledge spec {spec!r} names no CLIP model; e.g. 'clip:ViT-B-32'.")
        return
    name = spec.split("@", 1)[0]
    if name.startswith(("torchvision:", "timm:")):
        return
    known = [info.name for info in list_backbones()]
    if name not in known:
        raise ParamError(
            f"unknown knowledge model {spec!r}; known: {', '.join(known)}, torchvision:<name>, "
            "timm:<name>, clip:<open_clip model>[:<pretrained tag or file>]."
        )


def knowledge_model(
    spec: Any,
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    batch_size: int = 64,
    progress: bool = False,
) -> Any:
    """A knowledge model from a spec string or an object.

    * a :class:`KnowledgeModel` (anything with ``name`` and ``embed``): returned as is;
    * a :class:`~oddkit.features.Backbone`: wrapped in :class:`BackboneKnowledge`;
    * ``"<backbone>"`` or ``"<backbone>@<weights file>"``: :func:`create_backbone` (e.g.
      ``"efficientnet_lite0"``, ``"cifar_resnet20@../shared/weights/cifar10_resnet20.th"``;
      a CIFAR ResNet without weights is randomly initialised, with a warning);
    * ``"clip:<model>[:<pretrained>]"``: :class:`ClipKnowledge`; ``pretrained`` defaults to
      ``"openai"``, ``"none"`` gives random weights, a path loads a local file.

    ``cache_dir``, ``batch_size``, ``progress`` go to the model built (not to objects).
    """
    check_knowledge_spec(spec)
    if not isinstance(spec, str):
        if isinstance(spec, Backbone):
            return BackboneKnowledge(spec, cache_dir, batch_size, progress)
        return spec
    if spec.startswith("clip:"):
        _, rest = spec.split(":", 1)
        model_name, _, pretrained = rest.partition(":")
        tag: str | None = pretrained or "openai"
        if tag is not None and tag.lower() == "none":
            tag = None
        return ClipKnowledge(
            model_name, tag, cache_dir=cache_dir, batch_size=batch_size, progress=progress
        )
    name, _, weights = spec.partition("@")
    if name.startswith("cifar_resnet") and not weights:
        warnings.warn(
            f"knowledge model {name!r} without weights is randomly initialised; pass "
            f"'{name}@<checkpoint>' for a trained one.",
            UserWarning,
            stacklevel=2,
        )
    backbone = create_backbone(name, weights=weights or None)
    return BackboneKnowledge(backbone, cache_dir, batch_size, progress)


# ----------------------------------------------------------------------------- ranking
@dataclass(frozen=True)
class TransformRanking:
    """Transforms sorted by how far they move a class's embeddings (ascending EMD).

    ``names[0]`` moves the class least (the most meaning-preserving by the knowledge
    model), ``names[-1]`` most. ``distances`` are the EMDs (cosine cost, in [0, 2]).
    ``knowledge``: the knowledge model's name; ``severity``/``seed``: of the transformed
    copies; ``n_images``: how many images were compared. JSON-able through
    :meth:`to_dict` / :meth:`from_dict`.
    """

    names: tuple[str, ...]
    distances: tuple[float, ...]
    knowledge: str = ""
    severity: int = 1
    seed: int = 0
    n_images: int = 0

    def position(self, name: str) -> int:
        """0-based rank of ``name`` (0 = nearest)."""
        if name not in self.names:
            raise ParamError(f"{name!r} was not ranked; ranked: {', '.join(self.names)}.")
        return self.names.index(name)

    def nearest(self, k: int) -> tuple[str, ...]:
        """The ``k`` transforms that move the class least, nearest first."""
        return self.names[: check_int("k", k, low=0, high=len(self.names))]

    def farthest(self, k: int) -> tuple[str, ...]:
        """The ``k`` transforms that move the class most, farthest first."""
        k = check_int("k", k, low=0, high=len(self.names))
        return tuple(reversed(self.names[len(self.names) - k :]))

    def to_dict(self) -> dict[str, Any]:
        return {
            "names": list(self.names),
            "distances": [float(d) for d in self.distances],
            "knowledge": self.knowledge,
            "severity": int(self.severity),
            "seed": int(self.seed),
            "n_images": int(self.n_images),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TransformRanking:
        return cls(
            tuple(str(n) for n in data["names"]),
            tuple(float(d) for d in data["distances"]),
            str(data.get("knowledge", "")),
            int(data.get("severity", 1)),
            int(data.get("seed", 0)),
            int(data.get("n_images", 0)),
        )


def check_transforms(transforms: Any, images: np.ndarray | None = None) -> tuple[str, ...]:
    """Transform names checked against the shift registry (and ``images``, if given).

    Unknown names, duplicates, an empty pool, and square-only shifts (rotations) on
    non-square images are a ParamError / InputError, before any work starts.
    """
    from ..shifts import get_shift
    from ..shifts.base import check_shift_images

    if isinstance(transforms, str) or not isinstance(transforms, Sequence):
        raise ParamError(f"transforms must be a list of shift names, got {transforms!r}.")
    names = tuple(transforms)
    if not names:
        raise ParamError("transforms is empty; give at least one shift name.")
    if len(set(names)) != len(names):
        raise ParamError(f"transforms has duplicates: {list(names)}.")
    for name in names:
        get_shift(name)  # ParamError naming the known shifts
    if images is not None:
        for name in names:
            check_shift_images(images, name)
    return names


def rank_transforms(
    knowledge: Any,
    images: np.ndarray,
    transforms: Sequence[str] = DEFAULT_TRANSFORMS,
    severity: int = 1,
    seed: int = 0,
) -> TransformRanking:
    """Rank ``transforms`` by the EMD between clean and transformed embeddings of ``images``.

    For each transform ``t``: ``d(t) = EMD({phi(x_i)}, {phi(t(x_i))})`` with uniform
    weights and cost ``1 - cos`` (:func:`emd_cosine`), ``phi`` = the knowledge model's
    embedding, ``t(x_i)`` = :func:`oddkit.shifts.apply_shift` at ``severity`` with
    ``seed``. Sorted ascending (ties keep the given order). ``knowledge``: anything
    :func:`knowledge_model` takes. Names, severity, images and the spec are checked before
    any embedding is computed.
    """
    ranking, _ = rank_with_embeddings(knowledge, images, transforms, severity, seed)
    return ranking


def rank_with_embeddings(
    knowledge: Any,
    images: np.ndarray,
    transforms: Sequence[str] = DEFAULT_TRANSFORMS,
    severity: int = 1,
    seed: int = 0,
    progress: bool | None = False,
) -> tuple[TransformRanking, dict[str, np.ndarray]]:
    """:func:`rank_transforms` plus the embeddings it computed (``"clean"`` and each name)."""
    from tqdm.auto import tqdm

    from ..shifts import apply_shift, check_severity

    severity = check_severity(severity)
    seed = check_int("seed", seed, low=0)
    images = check_image_batch(images, contiguous=False)
    if images.shape[0] == 0:
        raise InputError("no images to rank transforms on (the array has 0 rows).")
    names = check_transforms(transforms, images)
    _require_pot()
    model = knowledge_model(knowledge)
    embeddings = {"clean": model.embed(images)}
    distances = []
    disable = None if progress is None else not progress
    for name in tqdm(names, desc="KE ranking transforms", unit="transform", disable=disable):
        embeddings[name] = model.embed(apply_shift(images, name, severity, seed=seed))
        distances.append(emd_cosine(embeddings["clean"], embeddings[name]))
    order = np.argsort(np.asarray(distances), kind="stable")
    ranking = TransformRanking(
        tuple(names[i] for i in order),
        tuple(float(distances[i]) for i in order),
        str(model.name),
        severity,
        seed,
        int(images.shape[0]),
    )
    return ranking, embeddings


# ----------------------------------------------------------------------------- EMD
def _require_pot() -> Any:
    try:
        import ot
    except ImportError as exc:
        raise MissingDependencyError(
            f"the transform ranking needs POT (Python Optimal Transport): {_POT_INSTALL}."
        ) from exc
    return ot


def cosine_cost(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    """``1 - cos(a_i, b_j)`` as a float64 ``(n, m)`` matrix in [0, 2]; a zero row has cos 0."""
    A = np.asarray(A, dtype=np.float64)
    B = np.asarray(B, dtype=np.float64)
    An = A / np.maximum(np.linalg.norm(A, axis=1, keepdims=True), 1e-300)
    Bn = B / np.maximum(np.linalg.norm(B, axis=1, keepdims=True), 1e-300)
    return np.clip(1.0 - An @ Bn.T, 0.0, 2.0)


def emd_cosine(A: np.ndarray, B: np.ndarray) -> float:
    """Exact earth mover's distance between the point sets ``A`` and ``B`` (rows).

    Uniform weights (``1/n`` on each row of ``A``, ``1/m`` on each of ``B``), ground cost
    ``1 - cos`` (:func:`cosine_cost`), solved exactly by POT's network simplex
    (``ot.emd2``). For ``n == m`` this equals the mean cost of the optimal one-to-one
    assignment. A solver that stops before optimality raises an OddkitError.
    """
    ot = _require_pot()
    A = np.asarray(A)
    B = np.asarray(B)
    if A.ndim != 2 or B.ndim != 2 or A.shape[1] != B.shape[1] or not len(A) or not len(B):
        raise InputError(f"emd_cosine needs two non-empty (n, d) arrays of one width; got {A.shape}, {B.shape}.")
    if not (np.isfinite(A).all() and np.isfinite(B).all()):
        raise InputError("emd_cosine: the embeddings contain NaN or inf values.")
    M = cosine_cost(A, B)
    a = np.full(M.shape[0], 1.0 / M.shape[0])
    b = np.full(M.shape[1], 1.0 / M.shape[1])
    cost, log = ot.emd2(a, b, M, numItermax=max(100_000, 50 * M.size), log=True)
    if log.get("warning"):  # None when the network simplex reached the optimum
        raise OddkitError(
            f"the EMD solver stopped before optimality ({log.get('warning')}); please report this "
            f"with the set sizes {A.shape[0]} x {B.shape[0]}."
        )
    return float(cost)

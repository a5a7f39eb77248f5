"""Knowledge Exposure (KE): a one-class detector trained on transforms a pretrained model ranks.

After Akhavan Anvari, Kashefi, Khazaie, Khalooei & Sabokrou, "Enhancing Anomaly Detection
Generalization through Knowledge Exposure: The Dual Effects of Augmentation"
(arXiv 2406.10617, 2024). Whether a transform keeps an image's meaning depends on the
class (a rotated bird is a bird, a rotated car is odd). KE asks a pretrained *knowledge
model* (the paper: CLIP) per normal class:

1. rank the candidate transforms by the exact earth mover's distance between the
   knowledge model's embeddings of the clean and the transformed class images (cosine
   cost; :func:`oddkit.features.knowledge.rank_transforms`);
2. take the ``k`` nearest transforms as positives (meaning-preserving) and the ``k``
   farthest as negatives (meaning-changing);
3. train an encoder with a contrastive loss pulling each clean image towards its positive
   views and away from its negative views;
4. score with a one-class SVM on the L2-normalised encoder features of the clean
   training images: ``score(x) = -f_OCSVM(z(x) / ||z(x)||)`` (higher = more anomalous).

Two settings, two registered names:

* ``ke_resnet18``: the paper's, a CIFAR ResNet-18 encoder trained from scratch on the
  images (slow on CPU);
* ``ke_head``: oddkit's CPU setting, a small MLP projection head trained on frozen
  backbone features of the clean and transformed views (EfficientNet-Lite0 by default,
  also the knowledge model), features extracted once and cached.

Networks are never saved (they cannot be stored without pickle): the fitted state is the
ranking, the trained encoder's weights as numpy arrays, and the OCSVM's support vectors,
so a saved detector is data. ``ke_head`` needs its frozen feature network again to
score; a spec string is rebuilt automatically after ``load`` (and checked against the
saved fingerprint), an object is re-attached with :meth:`KEHead.attach`.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from ...errors import (
    InputError,
    MissingDependencyError,
    NotFittedError,
    ParamError,
    PersistenceError,
)
from ..base import (
    Detector,
    check_bool,
    check_float,
    check_int,
    check_random_state,
    create,
    l2_normalise_rows,
    register,
)

__all__ = ["KEHead", "KEResNet18"]

_REFERENCE = (
    "Akhavan Anvari, Kashefi, Khazaie, Khalooei & Sabokrou, 'Enhancing Anomaly Detection "
    "Generalization through Knowledge Exposure: The Dual Effects of Augmentation', "
    "arXiv:2406.10617, 2024"
)
#: The SPA/SSA candidate pool (docs/protocols.md); kept here so the module imports without torch.
_DEFAULT_POOL = (
    "hflip", "rot90", "rot270", "crop_resize", "color_jitter",
    "gaussian_noise", "glass_blur", "jpeg_compression", "snow", "gaussian_blur",
)  # fmt: skip
#: CIFAR mean / std of the paper's code (its evaluation script), in [0, 1] units.
_CIFAR_MEAN = (125.3 / 255, 123.0 / 255, 113.9 / 255)
_CIFAR_STD = (63.0 / 255, 62.1 / 255, 66.7 / 255)
_ENCODER_PREFIX = "encoder__"
#: what ke_head's one-class SVM sees (KEHead docstring)
_REPRESENTATIONS = ("concat", "head")
_OCSVM_PREFIX = "ocsvm__"


# =========================================================================== shared machinery
class _KnowledgeExposure(Detector):
    """Shared fit / score / persistence of the two KE settings (not registered)."""

    family = "trained"
    inputs = ("images",)
    reference = _REFERENCE
    randomized = True
    #: keyword inputs ``fit`` takes besides ``knowledge``
    _fit_context: tuple[str, ...] = ()

    # ------------------------------------------------------------------ params
    def _check_common(self) -> None:
        self.knowledge = _check_spec("knowledge", self.knowledge)
        self.transforms = _check_pool(self.transforms)
        pool_size = len(_DEFAULT_POOL if self.transforms is None else self.transforms)
        self.severity = check_int("severity", self.severity, low=1, high=5)
        self.k = check_int("k", self.k, low=1)
        if 2 * self.k > pool_size:
            raise ParamError(
                f"k={self.k} needs 2k = {2 * self.k} transforms (k positives, k negatives) but the "
                f"pool has {pool_size}."
            )
        self.temperature = check_float("temperature", self.temperature, 0.0, low_inclusive=False)
        self.batch_negatives = check_bool("batch_negatives", self.batch_negatives)
        self.epochs = check_int("epochs", self.epochs, low=1)
        self.batch_size = check_int("batch_size", self.batch_size, low=1)
        self.lr = check_float("lr", self.lr, 0.0, low_inclusive=False)
        self.weight_decay = check_float("weight_decay", self.weight_decay, 0.0)
        self.max_train_images = check_int("max_train_images", self.max_train_images, low=2)
        self.rank_images = check_int("rank_images", self.rank_images, low=2)
        self.nu = check_float("nu", self.nu, 0.0, 1.0, low_inclusive=False)
        create("ocsvm", nu=self.nu, gamma=self.gamma)  # same checks as the scorer's
        if self.cache_dir is not None:
            if not isinstance(self.cache_dir, (str, os.PathLike)):
                raise ParamError(f"cache_dir must be None or a path, got {self.cache_dir!r}.")
            self.cache_dir = os.fspath(self.cache_dir)
        self.extract_batch_size = check_int("extract_batch_size", self.extract_batch_size, low=1)
        if self.progress is not None:
            self.progress = check_bool("progress", self.progress)
        self.random_state = check_random_state(self.random_state)

    @property
    def pool(self) -> tuple[str, ...]:
        """The candidate transforms (``transforms`` or the SPA/SSA pool)."""
        return _DEFAULT_POOL if self.transforms is None else tuple(self.transforms)

    def min_fit_rows(self) -> int:
        return 2

    # ------------------------------------------------------------------ fit
    def fit(self, images: Any, y: Any = None, *, knowledge: Any = None, **context: Any) -> _KnowledgeExposure:
        """Rank the transforms, train the encoder and fit the OCSVM on ``images``.

        ``images``: uint8 ``(n, H, W, 3)`` of the normal class (square when the pool has
        rotations). ``y`` is ignored. ``knowledge``: a knowledge model object or spec that
        overrides the ``knowledge`` parameter for this fit (e.g. a CLIP model built with
        custom weights). Everything is checked before any network runs.
        """
        from ...data.images import check_image_batch
        from ...features.knowledge import check_transforms, knowledge_model

        bad = sorted(set(context) - set(self._fit_context))
        if bad:
            raise InputError(
                f"{type(self).__name__} takes no input {bad[0]!r}; fit(images, knowledge=..."
                + "".join(f", {k}=..." for k in self._fit_context) + ")."
            )
        images = check_image_batch(images, contiguous=False)
        if images.shape[0] < self.min_fit_rows():
            raise InputError(
                f"{type(self).__name__} needs at least {self.min_fit_rows()} normal images, got "
                f"{images.shape[0]}."
            )
        pool = check_transforms(self.pool, images)
        spec = self.knowledge if knowledge is None else knowledge
        self._check_context(context)
        km = knowledge_model(spec, cache_dir=self.cache_dir, batch_size=self.extract_batch_size,
                             progress=bool(self.progress))  # fmt: skip
        self._clear_fitted()
        seed = self._seed()
        train_idx, rank_idx = _subsets(images.shape[0], self.max_train_images, self.rank_images, seed)
        ranking, rank_emb = self._rank(km, images[rank_idx], pool, seed)
        positives, negatives = ranking.nearest(self.k), ranking.farthest(self.k)
        Z = self._train(images, train_idx, rank_idx, rank_emb, km, positives, negatives, seed, context)
        ocsvm = create("ocsvm", nu=self.nu, gamma=self.gamma).fit(Z)
        self.ranking_ = ranking.to_dict()
        self.positives_ = list(positives)
        self.negatives_ = list(negatives)
        self.knowledge_name_ = str(km.name)
        self.n_train_images_ = len(train_idx)
        self.n_rank_images_ = len(rank_idx)
        self._ocsvm = ocsvm
        self._fitted = True
        return self

    def _seed(self) -> int:
        if self.random_state is not None:
            return int(self.random_state)
        return int(np.random.default_rng().integers(0, 2**31 - 1))

    def _rank(self, km: Any, images: np.ndarray, pool: tuple[str, ...], seed: int) -> tuple[Any, dict[str, np.ndarray]]:
        from ...features.knowledge import rank_with_embeddings

        return rank_with_embeddings(km, images, pool, self.severity, seed % 2**31, self.progress)

    def _check_context(self, context: dict[str, Any]) -> None:
        """Resolve / check the extra fit inputs before any long work (subclasses)."""

    def _train(self, images: np.ndarray, train_idx: np.ndarray, rank_idx: np.ndarray,
               rank_emb: dict[str, np.ndarray], km: Any, positives: tuple[str, ...],
               negatives: tuple[str, ...], seed: int, context: dict[str, Any]) -> np.ndarray:  # fmt: skip
        """Train the encoder; return the L2-normalised features of the clean images for the OCSVM."""
        raise NotImplementedError

    # ------------------------------------------------------------------ score
    def score(self, images: Any) -> np.ndarray:  # type: ignore[override]
        """Anomaly scores of uint8 images ``(n, H, W, 3)``: float64, higher = more anomalous."""
        from ...data.images import check_image_batch

        self._check_fitted()
        images = check_image_batch(images, contiguous=False)
        if images.shape[0] == 0:
            raise InputError("no images to score (the array has 0 rows).")
        Z = self._encode(images)
        scores = self._ocsvm.score(Z)
        if not np.isfinite(scores).all():  # pragma: no cover - guarded by the encoders
            raise InputError("non-finite encoder features; the images may be corrupted.")
        return scores

    def decision_function(self, images: Any) -> np.ndarray:  # type: ignore[override]
        return self.score(images)

    def _encode(self, images: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _check_fitted(self) -> None:
        super()._check_fitted()
        if self.__dict__.get("_ocsvm") is None:
            raise NotFittedError(f"{type(self).__name__} has no fitted one-class SVM; fit it again.")

    def _clear_fitted(self) -> None:
        super()._clear_fitted()
        for key in ("_ocsvm", "_net", "_features_model", "_encoder_state"):
            self.__dict__.pop(key, None)

    # ------------------------------------------------------------------ persistence
    def _get_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        meta, arrays = super()._get_state()
        ocsvm = self._ocsvm
        sub_meta, sub_arrays = ocsvm._get_state()
        meta["ocsvm_state"] = {"params": ocsvm.get_params(), "state": sub_meta}
        arrays.update({_OCSVM_PREFIX + k: v for k, v in sub_arrays.items()})
        encoder = self.__dict__.get("_encoder_state")
        if encoder is not None:
            meta["encoder_keys"] = list(encoder)
            arrays.update({_ENCODER_PREFIX + k: v for k, v in encoder.items()})
        return meta, arrays

    def _set_state(self, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        meta = dict(meta)
        ocsvm_state = meta.pop("ocsvm_state", None)
        keys = meta.pop("encoder_keys", None)
        if ocsvm_state is None:
            raise PersistenceError(f"saved {self.name} has no one-class SVM state.")
        own = {k: v for k, v in arrays.items() if not k.startswith((_OCSVM_PREFIX, _ENCODER_PREFIX))}
        super()._set_state(meta, own)
        ocsvm = create("ocsvm", **ocsvm_state["params"])
        sub = {k[len(_OCSVM_PREFIX):]: v for k, v in arrays.items() if k.startswith(_OCSVM_PREFIX)}
        ocsvm._set_state(ocsvm_state["state"], sub)
        ocsvm._fitted = True
        self._ocsvm = ocsvm
        if keys is not None:
            missing = [k for k in keys if _ENCODER_PREFIX + k not in arrays]
            if missing:
                raise PersistenceError(f"saved {self.name} lacks encoder arrays {missing[:5]}.")
            self._encoder_state = {k: arrays[_ENCODER_PREFIX + k] for k in keys}

    # ------------------------------------------------------------------ helpers
    def _bar(self, **kw: Any) -> Any:
        from tqdm.auto import tqdm

        return tqdm(disable=None if self.progress is None else not self.progress, **kw)


def _check_spec(name: str, spec: Any) -> str:
    """A knowledge/backbone spec string, checked against the registries when torch is there."""
    if not isinstance(spec, str) or not spec:
        raise ParamError(
            f"{name} must be a spec string such as 'efficientnet_lite0' or 'clip:ViT-B-32' (pass "
            f"network objects to fit(..., {name}=obj)); got {spec!r}."
        )
    try:
        from ...features.knowledge import check_knowledge_spec
    except MissingDependencyError:  # no torch: checked at fit, which needs it anyway
        return spec
    try:
        check_knowledge_spec(spec)
    except ParamError as exc:
        raise ParamError(f"{name}: {exc}") from None
    return spec


def _check_pool(transforms: Any) -> list[str] | None:
    """``None`` (the SPA/SSA pool, checked at fit) or a list of registered shift names."""
    if transforms is None:
        return None
    from ...shifts import get_shift

    if isinstance(transforms, str) or not isinstance(transforms, Sequence):
        raise ParamError(f"transforms must be None or a list of shift names, got {transforms!r}.")
    names = [str(t) if isinstance(t, str) else t for t in transforms]
    if len(set(map(str, names))) != len(names):
        raise ParamError(f"transforms has duplicates: {names}.")
    for name in names:
        get_shift(name)  # ParamError naming the known shifts (and the closest ones)
    return names


def _subsets(n: int, max_train: int, max_rank: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A seeded random training subset of ``max_train`` rows; its first ``max_rank`` rank the transforms."""
    order = np.random.default_rng(seed).permutation(n)
    train_idx = order[: min(n, max_train)]
    return train_idx, train_idx[: min(len(train_idx), max_rank)]


def _l2_normalise(X: np.ndarray) -> np.ndarray:
    """Unit rows in float64 (the OCSVM's and the head's numpy side run in float64)."""
    return l2_normalise_rows(np.asarray(X, dtype=np.float64))


def contrastive_loss(z0: Any, zp: Any, zn: Any, temperature: float, batch_negatives: bool = False) -> Any:
    """The KE contrastive loss of a batch (torch tensors, rows L2-normalised).

    ``z0``: clean anchors ``(B, D)``; ``zp`` / ``zn``: their positive / negative views
    ``(B, K, D)``. With ``s(u, v) = <u, v> / temperature``, for each anchor ``i`` and
    positive ``p``: ``-log( exp s(z_i, z_ip) / sum_{z' in Z_i} exp s(z_i, z') )``, where
    ``Z_i`` = the anchor's ``K`` positive and ``K`` negative views (plus the other anchors
    of the batch with ``batch_negatives``), averaged over positives and anchors.
    """
    import torch

    sp = torch.einsum("bd,bkd->bk", z0, zp) / temperature
    sn = torch.einsum("bd,bkd->bk", z0, zn) / temperature
    logits = [sp, sn]
    if batch_negatives and z0.shape[0] > 1:
        other = z0 @ z0.T / temperature
        eye = torch.eye(z0.shape[0], dtype=torch.bool, device=z0.device)
        logits.append(other.masked_fill(eye, float("-inf")))
    lse = torch.logsumexp(torch.cat(logits, dim=1), dim=1, keepdim=True)
    return (lse - sp).mean()


@contextlib.contextmanager
def _seeded_torch(seed: int) -> Iterator[Any]:
    """torch's global RNG seeded inside the block and restored after (init is reproducible)."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield torch.Generator().manual_seed(seed + 1)


# =========================================================================== CPU setting
@register
class KEHead(_KnowledgeExposure):
    """Knowledge Exposure, CPU setting: a contrastive MLP head on frozen backbone features, OCSVM score.

    Method (Akhavan Anvari et al., arXiv 2406.10617, 2024, with the encoder replaced by a
    head on a frozen network): the knowledge model ranks the candidate transforms of the
    normal class by ``EMD(phi(X), phi(t(X)))`` (cosine cost, exact; on ``rank_images``
    images); the ``k`` nearest are positives ``T+``, the ``k`` farthest negatives ``T-``.
    With frozen features ``f(x)`` (L2-normalised) and the head
    ``h(u) = W2 relu(W1 u + b1) + b2``, ``z = h(f(x)) / ||h(f(x))||``, the head minimises
    ``mean_i mean_{t in T+} [ log sum_{t' in T+ u T-} exp(<z_i, z_i^t'>/tau) - <z_i, z_i^t>/tau ]``
    over ``max_train_images`` normal images and their views (:func:`contrastive_loss`).
    Score: ``-f_OCSVM(r(x))``, the one-class SVM (oddkit's ``ocsvm``) fitted on ``r`` of
    every clean training image, where ``r`` is L2-normalised and, with
    ``representation="concat"`` (default), ``r = [f(x), head_weight * z(x)]``
    normalised; with ``representation="head"``, ``r = z`` (the paper's form, the encoder's
    output alone).

    Networks: ``knowledge`` (spec; default ``"efficientnet_lite0"``, ImageNet weights, no
    download) ranks the transforms; ``backbone`` (spec, ``None`` = the knowledge model)
    gives the frozen features. Objects (an oddkit Backbone, a ``KnowledgeModel`` such as
    :class:`~oddkit.features.knowledge.ClipKnowledge`) go to
    ``fit(images, knowledge=obj, backbone=obj)``; parameters stay JSON-able.

    Defaults and where they come from:
    ``transforms=None``: the SPA/SSA pool of docs/protocols.md (the paper's ten:
    hflip, rot90, rot270, crop_resize, color_jitter, gaussian_noise, glass_blur,
    jpeg_compression, snow, gaussian_blur), ``severity=1`` (training copies at severity 1,
    docs/protocols.md). ``temperature=0.5``: the paper's code's default. ``nu=0.1``, RBF
    kernel: the one-class SVM of the paper's code (not oddkit's ``ocsvm`` default
    ``nu=0.5``). ``weight_decay=5e-4``: the paper's code. ``gamma=40.0`` (the paper's code
    uses ``"auto"``, 1 / feature width, which on 1,408 normalised dimensions makes the
    RBF kernel almost linear), ``representation="concat"``, ``head_weight=0.5``, ``k=2``,
    ``hidden_dim=512``, ``out_dim=128``, ``epochs=100``, ``batch_size=256``,
    ``lr=1e-3``: oddkit's (see the interpretations and the status).
    CPU bounds: ``max_train_images=1000`` anchors and ``rank_images=250`` ranking images
    (random subsets, seeded); features of all training images are extracted once (for the
    OCSVM), views only for the subsets: on one CIFAR class (5,000 images) with
    EfficientNet-Lite0 that is 5,000 + 10 x 250 + 2k x 750 = 10,500 forward passes
    (``benchmarks/ke_vs_knn.py`` measured 2-7 minutes per class to fit and score,
    extraction included, on 2 cores shared with other work); with ``cache_dir`` repeated
    fits and scoring reuse them. ``extract_batch_size`` only changes speed; ``progress`` (None: on a terminal)
    shows progress bars. ``random_state`` seeds the subsets, the random transforms, the
    head's initialisation and the batch order (deterministic on CPU).

    interpretation: the paper does not fix ``k``; its code takes 1 to 3 pairs (1 by
    default). ``k=2`` keeps two views of each kind per anchor; with the ten-transform
    pool two negatives are the transforms that move a class most. The loss is the
    paper's InfoNCE form with ``Z_i`` = the anchor's own positive and negative views (as
    the paper's code contrasts each image only with its own views); with several
    positives, each positive's term is averaged (SupCon-style). ``batch_negatives=True``
    adds the batch's other clean images to ``Z_i`` (SimCLR-style instance
    discrimination); not the paper's. The head, its size, Adam, ``epochs``, ``lr`` and
    the L2 normalisation of the frozen features (as oddkit's C10-OSR6 feeds kNN) are
    oddkit's: the paper trains the whole encoder. The views are drawn once (one
    transformed copy per image and transform, as the paper's code precomputes them).
    ``representation="concat"`` is oddkit's: the paper's encoder is the whole network,
    trained from scratch, so its output carries what the images look like as well as
    what the contrastive loss taught it; a head on frozen features, trained on one class
    and its views only, keeps only the latter (it learns "rotated or not") and its
    output alone ranks the other classes as more normal than the class itself. The
    concatenation gives the one-class SVM both the frozen features and the head's
    view; ``representation="head"`` is the paper's form for comparison.

    Measured (``python benchmarks/ke_vs_knn.py --limit 200``, docs/benchmarks.md): over
    the 10 CIFAR-10 classes, against kNN (k=1) on the same L2-normalised
    EfficientNet-Lite0 features, C10-OC 0.878 vs 0.879, SSA-self 0.897 vs 0.840, SSA-all
    0.838 vs 0.833 (200 test images per class). The defaults (``representation``,
    ``head_weight``, ``gamma``) were chosen on one class (airplane) in ad hoc runs; with
    the paper's form (``representation="head"``, ``gamma="auto"``) airplane scored 0.47
    on C10-OC where kNN scored 0.92.

    Persistence: the ranking (``ranking_``, ``positives_``, ``negatives_``), the head
    (``head_w1_``, ``head_b1_``, ``head_w2_``, ``head_b2_``), the OCSVM's support vectors
    and the feature network's name and fingerprint; never a network. After ``load``, the
    feature network given by spec is rebuilt on the first ``score`` (and must match the
    saved fingerprint); one given as an object is re-attached with :meth:`attach`.
    """

    name = "ke_head"
    _fit_context = ("backbone",)

    def __init__(
        self,
        knowledge: str = "efficientnet_lite0",
        backbone: str | None = None,
        transforms: Sequence[str] | None = None,
        severity: int = 1,
        k: int = 2,
        temperature: float = 0.5,
        batch_negatives: bool = False,
        hidden_dim: int = 512,
        out_dim: int = 128,
        representation: str = "concat",
        head_weight: float = 0.5,
        epochs: int = 100,
        batch_size: int = 256,
        lr: float = 1e-3,
        weight_decay: float = 5e-4,
        max_train_images: int = 1000,
        rank_images: int = 250,
        nu: float = 0.1,
        gamma: str | float = 40.0,
        cache_dir: str | None = None,
        extract_batch_size: int = 64,
        progress: bool | None = None,
        random_state: int | None = 0,
    ) -> None:
        self.knowledge = knowledge
        self.backbone = backbone
        self.transforms = transforms
        self.severity = severity
        self.k = k
        self.temperature = temperature
        self.batch_negatives = batch_negatives
        self.hidden_dim = hidden_dim
        self.out_dim = out_dim
        self.representation = representation
        self.head_weight = head_weight
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.max_train_images = max_train_images
        self.rank_images = rank_images
        self.nu = nu
        self.gamma = gamma
        self.cache_dir = cache_dir
        self.extract_batch_size = extract_batch_size
        self.progress = progress
        self.random_state = random_state
        self._check_params()

    def _check_params(self) -> None:
        self._check_common()
        if self.backbone is not None:
            self.backbone = _check_spec("backbone", self.backbone)
        self.hidden_dim = check_int("hidden_dim", self.hidden_dim, low=1)
        self.out_dim = check_int("out_dim", self.out_dim, low=1)
        if self.representation not in _REPRESENTATIONS:
            raise ParamError(
                f"representation must be one of {list(_REPRESENTATIONS)}, got {self.representation!r}."
            )
        self.head_weight = check_float("head_weight", self.head_weight, 0.0, low_inclusive=False)

    # ------------------------------------------------------------------ fit
    def fit(  # type: ignore[override]
        self, images: Any, y: Any = None, *, knowledge: Any = None, backbone: Any = None, **context: Any
    ) -> KEHead:
        """Fit on uint8 normal images; ``knowledge`` / ``backbone``: objects or specs overriding the parameters."""
        if backbone is not None:
            context["backbone"] = backbone
        return super().fit(images, y, knowledge=knowledge, **context)  # type: ignore[return-value]

    def _check_context(self, context: dict[str, Any]) -> None:
        from ...features.knowledge import check_knowledge_spec

        if context.get("backbone") is not None:
            check_knowledge_spec(context["backbone"])

    def _feature_model(self, km: Any, context: dict[str, Any]) -> Any:
        from ...features.knowledge import knowledge_model

        spec = context.get("backbone", self.backbone)
        if spec is None:
            return km
        return knowledge_model(spec, cache_dir=self.cache_dir, batch_size=self.extract_batch_size,
                               progress=bool(self.progress))  # fmt: skip

    def _train(self, images: np.ndarray, train_idx: np.ndarray, rank_idx: np.ndarray,
               rank_emb: dict[str, np.ndarray], km: Any, positives: tuple[str, ...],
               negatives: tuple[str, ...], seed: int, context: dict[str, Any]) -> np.ndarray:  # fmt: skip
        from ...features.knowledge import knowledge_fingerprint

        fe = self._feature_model(km, context)
        clean = _l2_normalise(fe.embed(images))
        views = self._views(fe, fe is km, images, train_idx, rank_idx, rank_emb, positives + negatives, seed)
        P = np.stack([views[t] for t in positives], axis=1)
        N = np.stack([views[t] for t in negatives], axis=1)
        weights, history = self._train_head(clean[train_idx], P, N, seed)
        self.head_w1_, self.head_b1_, self.head_w2_, self.head_b2_ = weights
        self.loss_history_ = history
        self.features_name_ = str(fe.name)
        self.features_fingerprint_ = knowledge_fingerprint(fe)
        self._features_model = fe
        return self._represent(clean)

    def _views(self, fe: Any, reuse: bool, images: np.ndarray, train_idx: np.ndarray, rank_idx: np.ndarray,
               rank_emb: dict[str, np.ndarray], names: tuple[str, ...], seed: int) -> dict[str, np.ndarray]:  # fmt: skip
        """L2-normalised features of each training image's view under each transform in ``names``.

        With the knowledge model as feature network, the ranking images' views are reused.
        """
        from ...shifts import apply_shift

        rest = train_idx[len(rank_idx) :] if reuse else train_idx
        views = {}
        with self._bar(total=len(names), desc="KE views", unit="transform") as bar:
            for name in names:
                parts = [rank_emb[name]] if reuse else []
                if len(rest):
                    shifted = apply_shift(images[rest], name, self.severity, seed=seed % 2**31)
                    parts.append(fe.embed(shifted))
                views[name] = _l2_normalise(np.concatenate(parts))
                bar.update(1)
        return views

    def _train_head(self, X0: np.ndarray, P: np.ndarray, N: np.ndarray, seed: int) -> tuple[list[np.ndarray], list[float]]:
        """Adam on the contrastive loss; returns (W1, b1, W2, b2) as float32 numpy and the loss per epoch."""
        import torch
        import torch.nn.functional as F
        from torch import nn

        m, _, d = P.shape
        x0 = torch.from_numpy(X0.astype(np.float32))
        xp = torch.from_numpy(P.astype(np.float32))
        xn = torch.from_numpy(N.astype(np.float32))
        with _seeded_torch(seed) as gen:
            head = nn.Sequential(nn.Linear(d, self.hidden_dim), nn.ReLU(), nn.Linear(self.hidden_dim, self.out_dim))
        opt = torch.optim.Adam(head.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        history = []
        with torch.enable_grad(), self._bar(total=self.epochs, desc="KE head", unit="epoch") as bar:
            for _ in range(self.epochs):
                perm = torch.randperm(m, generator=gen)
                total = 0.0
                for start in range(0, m, self.batch_size):
                    b = perm[start : start + self.batch_size]
                    z0 = F.normalize(head(x0[b]), dim=1)
                    zp = F.normalize(head(xp[b]), dim=2)
                    zn = F.normalize(head(xn[b]), dim=2)
                    loss = contrastive_loss(z0, zp, zn, self.temperature, self.batch_negatives)
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
                    total += float(loss.detach()) * len(b)
                history.append(total / m)
                bar.update(1)
        weights = [p.detach().cpu().numpy().astype(np.float32, copy=True) for p in head.parameters()]
        return weights, history

    def _head(self, X: np.ndarray) -> np.ndarray:
        """The trained head in float64 numpy: ``W2 relu(W1 x + b1) + b2`` row by row."""
        H = np.maximum(X @ self.head_w1_.T.astype(np.float64) + self.head_b1_, 0.0)
        return H @ self.head_w2_.T.astype(np.float64) + self.head_b2_

    def _represent(self, F: np.ndarray) -> np.ndarray:
        """The OCSVM's input from L2-normalised frozen features ``F``: the normalised head
        output (``"head"``) or ``[F, head_weight * head]`` (``"concat"``), L2-normalised."""
        Z = _l2_normalise(self._head(F))
        if self.representation == "concat":
            Z = np.hstack([F, self.head_weight * Z])
        return _l2_normalise(Z)

    # ------------------------------------------------------------------ score
    def _encode(self, images: np.ndarray) -> np.ndarray:
        fe = self._attached_features()
        return self._represent(_l2_normalise(fe.embed(images)))

    def _attached_features(self) -> Any:
        """The frozen feature network: attached, or rebuilt from its spec after ``load``."""
        fe = self.__dict__.get("_features_model")
        if fe is not None:
            return fe
        from ...features.knowledge import knowledge_fingerprint, knowledge_model

        spec = self.backbone if self.backbone is not None else self.knowledge
        fe = knowledge_model(spec, cache_dir=self.cache_dir, batch_size=self.extract_batch_size,
                             progress=bool(self.progress))  # fmt: skip
        if knowledge_fingerprint(fe) != self.features_fingerprint_:
            raise NotFittedError(
                f"this {self.name} was fitted with the feature network {self.features_name_!r} given "
                f"as an object, not by its spec {spec!r}; attach it: det.attach(backbone=<that network>)."
            )
        self._features_model = fe
        return fe

    def attach(self, backbone: Any) -> KEHead:
        """Re-attach the frozen feature network after ``load`` (a Backbone, KnowledgeModel or spec).

        It must be the network the detector was fitted with (same fingerprint: name,
        weights and transform), else an InputError; the fitted state is unchanged.
        """
        from ...features.knowledge import knowledge_fingerprint, knowledge_model

        Detector._check_fitted(self)
        fe = knowledge_model(backbone, cache_dir=self.cache_dir, batch_size=self.extract_batch_size,
                             progress=bool(self.progress))  # fmt: skip
        if knowledge_fingerprint(fe) != self.features_fingerprint_:
            raise InputError(
                f"the network {fe.name!r} is not the one this {self.name} was fitted with "
                f"({self.features_name_!r}; fingerprints differ)."
            )
        self._features_model = fe
        return self


# =========================================================================== paper setting
@register
class KEResNet18(_KnowledgeExposure):
    """Knowledge Exposure, the paper's setting: a CIFAR ResNet-18 trained from scratch, OCSVM score.

    Method (Akhavan Anvari et al., arXiv 2406.10617, 2024): the knowledge model (default
    CLIP ViT-B/32 with OpenAI's weights, as in the paper) ranks the candidate transforms
    of the normal class by the exact EMD between clean and transformed embeddings
    (cosine cost); the ``k`` nearest are positives, the ``k`` farthest negatives. A CIFAR
    ResNet-18 encoder ``g`` (3x3 stem, no max-pool, stages of 64-128-256-512 channels, two
    basic blocks each, global average pooling: 512-d), randomly initialised, is trained
    on the images with the contrastive loss (:func:`contrastive_loss`, on
    ``z = g(x)/||g(x)||``; each batch holds the clean images and their views). Score:
    ``-f_OCSVM(z(x))`` with the one-class SVM fitted on ``z`` of every clean training
    image (eval mode, so scores are batch-independent).

    Defaults and where they come from: ``knowledge="clip:ViT-B-32"`` (the paper; needs
    ``pip install 'oddkit[clip]'`` and the weights: cached, downloadable, or pass
    ``fit(knowledge=ClipKnowledge(..., pretrained=<file>))``); the SPA/SSA pool at
    ``severity=1`` (docs/protocols.md); ``temperature=0.5``, ``epochs=50``,
    ``batch_size=64``, SGD with ``lr=1e-3``, ``momentum=0.9``, ``weight_decay=5e-4``:
    the paper's code's defaults; ``nu=0.1``, ``gamma="auto"``: its one-class SVM;
    inputs in [0, 1] normalised with the CIFAR mean/std of its evaluation script,
    ``image_size=32`` (other sizes are resized bilinearly). ``k=2``: as ``ke_head``.
    ``max_train_images=5000`` (one CIFAR class), ``rank_images=250``. Slow on CPU: an
    epoch over 5,000 images is 25,000 ResNet-18 forward and backward passes.

    interpretation: as :class:`KEHead` for ``k``, the loss and the one-shot views; the
    paper's code augments once offline too. The ResNet's last stage output (before any
    classifier) is the feature, as in the paper's code. ``random_state`` seeds the
    subsets, views, initialisation and batch order; CPU training is deterministic.

    Persistence: the ranking, the encoder's state dict as numpy arrays (``encoder__*`` in
    ``arrays.npz``) and the OCSVM; a loaded detector scores without any other network.
    """

    name = "ke_resnet18"

    def __init__(
        self,
        knowledge: str = "clip:ViT-B-32",
        transforms: Sequence[str] | None = None,
        severity: int = 1,
        k: int = 2,
        temperature: float = 0.5,
        batch_negatives: bool = False,
        epochs: int = 50,
        batch_size: int = 64,
        lr: float = 1e-3,
        momentum: float = 0.9,
        weight_decay: float = 5e-4,
        image_size: int = 32,
        max_train_images: int = 5000,
        rank_images: int = 250,
        nu: float = 0.1,
        gamma: str | float = "auto",
        cache_dir: str | None = None,
        extract_batch_size: int = 64,
        progress: bool | None = None,
        random_state: int | None = 0,
    ) -> None:
        self.knowledge = knowledge
        self.transforms = transforms
        self.severity = severity
        self.k = k
        self.temperature = temperature
        self.batch_negatives = batch_negatives
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.momentum = momentum
        self.weight_decay = weight_decay
        self.image_size = image_size
        self.max_train_images = max_train_images
        self.rank_images = rank_images
        self.nu = nu
        self.gamma = gamma
        self.cache_dir = cache_dir
        self.extract_batch_size = extract_batch_size
        self.progress = progress
        self.random_state = random_state
        self._check_params()

    def _check_params(self) -> None:
        self._check_common()
        self.momentum = check_float("momentum", self.momentum, 0.0, 1.0, high_inclusive=False)
        self.image_size = check_int("image_size", self.image_size, low=8)

    def _transform(self) -> Any:
        from ...features.backbones import ImageTransform

        return ImageTransform(size=self.image_size, mean=_CIFAR_MEAN, std=_CIFAR_STD)

    def _train(self, images: np.ndarray, train_idx: np.ndarray, rank_idx: np.ndarray,
               rank_emb: dict[str, np.ndarray], km: Any, positives: tuple[str, ...],
               negatives: tuple[str, ...], seed: int, context: dict[str, Any]) -> np.ndarray:  # fmt: skip
        import torch
        import torch.nn.functional as F

        from ...shifts import apply_shift

        X = np.ascontiguousarray(images[train_idx])
        names = positives + negatives
        views = [apply_shift(X, t, self.severity, seed=seed % 2**31) for t in names]
        transform = self._transform()
        with _seeded_torch(seed) as gen:
            net = _resnet18()
        opt = torch.optim.SGD(net.parameters(), lr=self.lr, momentum=self.momentum, weight_decay=self.weight_decay)
        m, k = X.shape[0], self.k
        history = []
        net.train()
        steps = self.epochs * -(-m // self.batch_size)
        with torch.enable_grad(), self._bar(total=steps, desc="KE ResNet-18", unit="step") as bar:
            for _ in range(self.epochs):
                perm = torch.randperm(m, generator=gen).numpy()
                total = 0.0
                for start in range(0, m, self.batch_size):
                    b = perm[start : start + self.batch_size]
                    batch = np.concatenate([X[b]] + [v[b] for v in views])
                    z = F.normalize(net(transform(batch)), dim=1).view(1 + 2 * k, len(b), -1)
                    zp, zn = z[1 : 1 + k].transpose(0, 1), z[1 + k :].transpose(0, 1)
                    loss = contrastive_loss(z[0], zp, zn, self.temperature, self.batch_negatives)
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
                    total += float(loss.detach()) * len(b)
                    bar.update(1)
                history.append(total / m)
        net.eval()
        self._encoder_state = {key: v.detach().cpu().numpy().copy() for key, v in net.state_dict().items()}
        self._net = net
        self.loss_history_ = history
        return _l2_normalise(self._embed(net, images))

    def _embed(self, net: Any, images: np.ndarray) -> np.ndarray:
        """Encoder features of ``images`` (eval mode, batches of ``extract_batch_size``)."""
        import torch

        transform = self._transform()
        out = np.empty((images.shape[0], 512), dtype=np.float64)
        step = self.extract_batch_size
        with torch.inference_mode(), self._bar(total=images.shape[0], desc="KE encode", unit="img") as bar:
            for start in range(0, images.shape[0], step):
                part = np.ascontiguousarray(images[start : start + step])
                out[start : start + len(part)] = net(transform(part)).double().numpy()
                bar.update(len(part))
        return out

    def _network(self) -> Any:
        net = self.__dict__.get("_net")
        if net is None:
            import torch

            net = _resnet18()
            state = {k: torch.from_numpy(np.array(v)) for k, v in self._encoder_state.items()}
            net.load_state_dict(state, strict=True)
            net.eval()
            self._net = net
        return net

    def _encode(self, images: np.ndarray) -> np.ndarray:
        return _l2_normalise(self._embed(self._network(), images))

    def _check_fitted(self) -> None:
        super()._check_fitted()
        if self.__dict__.get("_encoder_state") is None:
            raise NotFittedError("this ke_resnet18 holds no encoder weights; fit it again.")


def _resnet18() -> Any:
    """A CIFAR ResNet-18 trunk (He et al. 2016 basic blocks; 3x3 stem, no max-pool) -> 512-d."""
    import torch.nn.functional as F
    from torch import nn

    class Block(nn.Module):
        def __init__(self, cin: int, cout: int, stride: int) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(cout)
            self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(cout)
            self.shortcut = nn.Sequential()
            if stride != 1 or cin != cout:
                self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

        def forward(self, x: Any) -> Any:
            out = F.relu(self.bn1(self.conv1(x)))
            return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))

    class ResNet18(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(64)
            stages, cin = [], 64
            for cout, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
                stages.append(nn.Sequential(Block(cin, cout, stride), Block(cout, cout, 1)))
                cin = cout
            self.layers = nn.Sequential(*stages)

        def forward(self, x: Any) -> Any:
            out = self.layers(F.relu(self.bn1(self.conv1(x))))
            return F.adaptive_avg_pool2d(out, 1).flatten(1)

    return ResNet18()

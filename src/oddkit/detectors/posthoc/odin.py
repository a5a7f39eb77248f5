"""ODIN: temperature scaling plus a small input perturbation, scored through the network.

Unlike the other post-hoc detectors, which work on cached penultimate features and the
head, ODIN needs the network itself: it takes the gradient of the classifier's
confidence with respect to the *input image*, nudges the image along that gradient's
sign and scores the nudged image. So :class:`ODIN` is fitted with the network
(``fit(model=...)``) and scores images, not feature rows.

The network is held on a private attribute and never saved (it cannot be stored
without pickle); see :class:`ODIN` for what ``save`` writes and how a loaded detector
gets its network back. Needs PyTorch (``pip install 'oddkit[vision]'``); the rest of
oddkit, including creating an ``ODIN`` object, works without it.
"""

from __future__ import annotations

import contextlib
import numbers
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ...errors import (
    EmptyInputError,
    InputError,
    MissingDependencyError,
    NonFiniteError,
    NotFittedError,
    ParamError,
    one_line,
)
from ..base import Detector, check_float, check_int, register

if TYPE_CHECKING:
    import torch

__all__ = ["ODIN"]

#: rows checked for NaN/inf at a time before scoring (bounds the boolean temporary).
_FINITE_CHUNK_ROWS = 1024
#: rows pushed through the network (gradient included) by ``fit`` to check the model.
_PROBE_ROWS = 2
#: fitted state that calibration adds (kept when the same network is attached again).
_CALIBRATION_STATE = ("calibration_scores_", "calibration_alpha_", "calibration_threshold_")


@register
class ODIN(Detector):
    """ODIN: negated max softmax at temperature T of an input nudged to raise it (needs the network).

    Method (Liang, Li & Srikant, ICLR 2018, eq. 1-2): with logits ``f(x)``, temperature
    ``T`` and ``S(x) = max_c softmax(f(x) / T)_c``, the input is perturbed one signed
    gradient step in the direction that *raises* the confidence,
    ``x~ = x - eps * sign(-grad_x log S(x))`` (a descent step on the cross-entropy of the
    predicted class at temperature ``T``), and the score is ``-S(x~)`` (higher = more
    OOD). The step acts per pixel of the network's input; with ``norm_std`` the sign of
    channel ``c`` is divided by ``norm_std[c]``, so that ``eps`` is in [0, 1] pixel units
    of the *un-normalised* image, as in the paper's code.

    Defaults: ``temperature=1000``, ``epsilon=0.0014``: the values of the paper's
    released code for its DenseNet-BC on CIFAR-10 (the paper chose ``eps`` on held-out
    OOD images per setting; these are not tuned for other networks). ``batch_size=128``
    is not from the paper: it bounds memory (a backward pass keeps a batch's
    activations) and does not change any score. ``norm_std=None``: taken from an oddkit
    ``Backbone``'s transform (its ``std``) when the model is one; for a plain
    ``torch.nn.Module`` without ``norm_std``, ``eps`` is in the network's input units.
    ``epsilon=0`` gives the temperature-scaled maximum softmax probability (no backward
    pass is run).

    Inputs: ``fit(images=None, *, model)``: ``model`` is an oddkit ``Backbone``
    (``oddkit.features.create_backbone`` / ``from_module``; uint8 images go through its
    transform) or a ``torch.nn.Module`` mapping a normalised float NCHW tensor to
    logits. ODIN learns nothing from in-distribution data; ``images``, when given, are
    only used to check that the network runs on them. ``score(images)``: a uint8
    ``(n, H, W, 3)`` array (needs a Backbone), a float ``(n, C, H, W)`` numpy array or
    torch tensor (already normalised), or an image source (``len`` and ``load(indices)``,
    read ``batch_size`` images at a time). The model runs in eval mode; gradients are
    taken with respect to the input only (parameters get no ``.grad``; their
    ``requires_grad`` flags and the modules' train/eval modes are restored after each
    batch, so do not train the same model in another thread meanwhile). Each row's
    gradient depends on that row only (eval mode, loss summed over the batch), so
    scores are batch-independent.

    Persistence: ``save`` writes the hyperparameters, the sha256 of the network's state
    dict (``model_hash_``), the ``norm_std_`` and transform description used, and any
    calibration, but never the network. A loaded ODIN raises ``NotFittedError`` on
    ``score`` until ``fit(model=...)`` attaches the network again (save the network
    itself with ``torch.save(model.state_dict(), ...)``); when the attached network has
    the saved hash, norm_std and transform, the calibration is kept, otherwise it is
    dropped with a warning.

    Differences from the paper's code and from pytorch-ood 0.4.0's ``ODIN``:
    interpretation: where a pixel's gradient is exactly zero the step is zero
    (``sign(0) = 0``, as in pytorch-ood); the paper's code maps it to +1. The loss is
    summed over the batch (pytorch-ood and the paper's code average it): the same signs,
    without shrinking gradients towards underflow in large batches. The final softmax is
    computed in float64 from the network's logits (pytorch-ood: float32), so scores
    differ from pytorch-ood's by float32 rounding (about 1e-7 relative). Like both, the
    perturbed input is not clipped to the valid pixel range.
    """

    name = "odin"
    family = "posthoc"
    inputs = ("images", "model")
    reference = (
        "Liang, Li & Srikant, 'Enhancing the reliability of out-of-distribution image "
        "detection in neural networks', ICLR 2018"
    )

    def __init__(
        self,
        temperature: float = 1000.0,
        epsilon: float = 0.0014,
        batch_size: int = 128,
        norm_std: Sequence[float] | None = None,
    ) -> None:
        self.temperature = temperature
        self.epsilon = epsilon
        self.batch_size = batch_size
        self.norm_std = norm_std
        self._check_params()

    def _check_params(self) -> None:
        self.temperature = check_float("temperature", self.temperature, 0.0, low_inclusive=False)
        self.epsilon = check_float("epsilon", self.epsilon, 0.0)
        self.batch_size = check_int("batch_size", self.batch_size, low=1)
        self.norm_std = _check_norm_std(self.norm_std)

    # ------------------------------------------------------------------ fit
    def fit(self, images: Any = None, y: Any = None, *, model: Any = None, **context: Any) -> ODIN:
        """Attach the network ``model`` (a Backbone or a ``torch.nn.Module``); see the class.

        ``images`` (optional, any input ``score`` takes): a few are run through the
        network to check it yields 2-D logits of at least two classes. ``y`` is ignored
        (ODIN uses the network's predicted class). Other inputs (``head=``, as the
        feature-based post-hoc detectors take) are refused with an InputError.
        """
        if context:
            raise InputError(
                f"ODIN takes no input {min(context)!r}; it declares {list(self.inputs)}: it "
                "scores images through the network, fit(model=backbone_or_module)."
            )
        net = _Network.of(model, self.norm_std)
        if images is not None:
            probe = _as_input(images, net)
            self._score_rows(net, probe.rows(0, min(_PROBE_ROWS, probe.n)))
        kept = self._calibration_for(net)
        self._clear_fitted()
        self.model_hash_ = net.weights_hash
        self.norm_std_ = net.std
        self.transform_ = net.transform_description
        for key, value in kept.items():
            setattr(self, key, value)
        self._net = net
        self._fitted = True
        return self

    def _calibration_for(self, net: _Network) -> dict[str, Any]:
        """The calibration to keep: only one made with the same network, std and transform."""
        calibration = {k: self.__dict__[k] for k in _CALIBRATION_STATE if k in self.__dict__}
        if not calibration:
            return {}
        same = (
            self.__dict__.get("model_hash_") == net.weights_hash
            and self.__dict__.get("norm_std_") == net.std
            and self.__dict__.get("transform_") == net.transform_description
        )
        if not same:
            warnings.warn(
                "ODIN: the network (or its norm_std / transform) differs from the one the "
                "calibration was made with; the calibration was dropped, call calibrate() again.",
                UserWarning,
                stacklevel=3,
            )
            return {}
        return calibration

    def _clear_fitted(self) -> None:
        super()._clear_fitted()
        self.__dict__.pop("_net", None)

    def _check_fitted(self) -> None:
        super()._check_fitted()
        if self.__dict__.get("_net") is None:
            raise NotFittedError(
                "This ODIN holds no network (a saved ODIN stores only its settings and the "
                "network's hash); call fit(model=<the same network>) before scoring."
            )

    # ------------------------------------------------------------------ score
    def score(self, images: Any, *, progress: bool | None = None) -> np.ndarray:
        """ODIN scores of ``images``: float64, shape (n,), higher = more OOD.

        ``images``: uint8 ``(n, H, W, 3)`` (through the Backbone's transform), float
        ``(n, C, H, W)`` numpy or torch (already normalised), or an image source.
        ``progress``: a progress bar; ``None`` shows one on a terminal when there is more
        than one batch.
        """
        self._check_fitted()
        net: _Network = self._net
        data = _as_input(images, net)
        n_batches = -(-data.n // self.batch_size)
        out = np.empty(data.n, dtype=np.float64)
        disable = (None if n_batches > 1 else True) if progress is None else not progress
        from tqdm.auto import tqdm

        with tqdm(total=data.n, unit="img", desc="ODIN", disable=disable) as bar:
            for start in range(0, data.n, self.batch_size):
                stop = min(start + self.batch_size, data.n)
                out[start:stop] = self._score_rows(net, data.rows(start, stop))
                bar.update(stop - start)
        return out

    def _score_rows(self, net: _Network, x: torch.Tensor) -> np.ndarray:
        """Scores of one batch of network input (eval mode, parameters frozen meanwhile)."""
        torch = _torch()
        with net.frozen(), torch.inference_mode(False):
            x = net.prepare(x)
            if self.epsilon > 0.0:
                x = x + self.epsilon * self._step(net, x)
            with torch.no_grad():
                logits = net.logits(x)
            top = torch.softmax(logits.double() / self.temperature, dim=1).max(dim=1).values
        return -top.cpu().numpy()

    def _step(self, net: _Network, x: torch.Tensor) -> torch.Tensor:
        """``sign(grad_x log S(x))`` per pixel, divided by the channel's ``norm_std``."""
        torch = _torch()
        x = x.detach().requires_grad_(True)
        with torch.enable_grad():
            scaled = net.logits(x) / self.temperature
            log_top = torch.log_softmax(scaled, dim=1).max(dim=1).values
            (grad,) = torch.autograd.grad(log_top.sum(), x)
        step = grad.sign()
        if net.std is not None:
            std = torch.tensor(net.std, dtype=step.dtype, device=step.device)
            step = step / std.view(1, -1, 1, 1)
        return step


# --------------------------------------------------------------------------- params
def _check_norm_std(value: Any) -> list[float] | None:
    """``None`` or a non-empty sequence of positive finite numbers, as a list of floats."""
    if value is None:
        return None
    if isinstance(value, (str, bytes, numbers.Number)) or not hasattr(value, "__len__"):
        raise ParamError(
            f"norm_std must be None or one standard deviation per input channel (e.g. "
            f"(0.229, 0.224, 0.225)), got {value!r}."
        )
    values = list(value)
    if not values:
        raise ParamError("norm_std must hold one standard deviation per input channel; got none.")
    return [
        check_float(f"norm_std[{i}]", v, 0.0, low_inclusive=False) for i, v in enumerate(values)
    ]


def _torch() -> Any:
    """The ``torch`` module, or a MissingDependencyError saying how to install it."""
    try:
        import torch
    except ModuleNotFoundError as exc:
        if exc.name != "torch":
            raise
        raise MissingDependencyError(
            "ODIN needs PyTorch (it back-propagates through the network): "
            "pip install 'oddkit[vision]' (or pip install torch)."
        ) from exc
    return torch


# --------------------------------------------------------------------------- the network
@dataclass
class _Network:
    """The model ODIN runs: logits, optional input transform and normalisation std."""

    module: Any  # torch.nn.Module: modes and parameters to manage
    logits_of: Callable[[Any], Any]  # normalised NCHW tensor -> logits
    transform: Callable[[np.ndarray], Any] | None  # uint8 NHWC -> NCHW tensor (Backbone only)
    std: list[float] | None
    weights_hash: str
    transform_description: str | None
    channels_last: bool = False

    @classmethod
    def of(cls, model: Any, norm_std: list[float] | None) -> _Network:
        torch = _torch()
        from ...features.backbones import Backbone, state_dict_hash

        if model is None:
            raise InputError(
                "ODIN needs the network: fit(model=backbone) with an oddkit Backbone "
                "(oddkit.features.create_backbone / from_module) or fit(model=module) with a "
                "torch.nn.Module mapping normalised NCHW images to logits."
            )
        if isinstance(model, Backbone):
            transform = model.transform
            std = norm_std if norm_std is not None else _transform_std(transform, model.name)
            description = getattr(transform, "description", None)
            return cls(
                model.model,
                lambda x: model.forward_features(x)[1],
                transform,
                std,
                state_dict_hash(model.model),
                description if isinstance(description, str) else None,
                bool(model.channels_last),
            )
        if isinstance(model, torch.nn.Module):
            return cls(model, model, None, norm_std, state_dict_hash(model), None)
        raise InputError(
            f"model must be an oddkit Backbone or a torch.nn.Module, got {type(model).__name__}."
        )

    @property
    def dtype_device(self) -> tuple[Any, Any]:
        """dtype and device of the first floating parameter (float32 on the CPU without one)."""
        torch = _torch()
        for p in self.module.parameters():
            if p.is_floating_point():
                return p.dtype, p.device
        return torch.float32, torch.device("cpu")

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """A fresh (non-inference) tensor in the network's dtype, device and memory format."""
        torch = _torch()
        dtype, device = self.dtype_device
        fmt = torch.channels_last if self.channels_last else torch.contiguous_format
        x = x.detach().to(device=device, dtype=dtype)
        if torch.is_inference(x):
            x = x.clone()
        return x.contiguous(memory_format=fmt)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """The network's logits for a batch, checked: (rows, >= 2 classes), finite."""
        torch = _torch()
        try:
            out = self.logits_of(x)
        except RuntimeError as exc:
            raise InputError(
                f"the network could not run on a batch of shape {tuple(x.shape)}: {one_line(exc)}"
            ) from exc
        if not isinstance(out, torch.Tensor) or out.ndim != 2 or out.shape[0] != x.shape[0]:
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise InputError(
                f"the network must return logits of shape ({x.shape[0]}, n_classes); got {shape}. "
                "Wrap the model so that its output is the logits tensor."
            )
        if out.shape[1] < 2:
            raise InputError(
                f"ODIN needs logits of at least 2 classes; the network returns {out.shape[1]}."
            )
        if not bool(torch.isfinite(out).all()):
            rows = torch.nonzero(~torch.isfinite(out).all(dim=1)).flatten()[:5].tolist()
            raise NonFiniteError(
                f"the network produced NaN/inf logits (batch rows {rows}); check the input's "
                "scale and the network's weights."
            )
        return out

    @contextlib.contextmanager
    def frozen(self) -> Iterator[None]:
        """Eval mode and ``requires_grad=False`` on every parameter; both restored after."""
        modes = [(m, m.training) for m in self.module.modules()]
        flags = [(p, p.requires_grad) for p in self.module.parameters()]
        self.module.eval()
        for p, _ in flags:
            p.requires_grad_(False)
        try:
            yield
        finally:
            for p, flag in flags:
                p.requires_grad_(flag)
            for m, training in modes:
                m.training = training


def _transform_std(transform: Any, name: str) -> list[float] | None:
    """The per-channel std of a Backbone's transform, or None (with a warning) when it has none."""
    std = getattr(transform, "std", None)
    if std is not None:
        try:
            return _check_norm_std(tuple(std))
        except (ParamError, TypeError):
            pass
    warnings.warn(
        f"ODIN: the transform of {name} has no per-channel 'std', so epsilon is applied in the "
        "network's input units; pass norm_std=(...) to give it in [0, 1] pixel units.",
        UserWarning,
        stacklevel=4,
    )
    return None


# --------------------------------------------------------------------------- inputs
@dataclass
class _Input:
    """``n`` rows of network input, read ``rows(start, stop)`` at a time."""

    n: int
    rows: Callable[[int, int], Any]


def _as_input(images: Any, net: _Network) -> _Input:
    """Dispatch on the kind of ``images`` (see :meth:`ODIN.score`) and check it."""
    torch = _torch()
    if isinstance(images, torch.Tensor):
        return _float_input(images, net, "tensor")
    if isinstance(images, np.ndarray):
        if images.dtype == np.uint8:
            return _uint8_input(images, net)
        if images.dtype.kind == "f":
            return _float_input(images, net, "array")
        raise InputError(
            f"images must be uint8 (n, H, W, 3) or a float (n, C, H, W) array of normalised "
            f"network input; got dtype {images.dtype}."
        )
    if hasattr(images, "__len__") and callable(getattr(images, "load", None)):
        return _source_input(images, net)
    raise InputError(
        "images must be a uint8 array (n, H, W, 3), a float (n, C, H, W) numpy array or torch "
        f"tensor, or an image source with __len__ and load(indices); got {type(images).__name__}."
    )


def _float_input(x: Any, net: _Network, kind: str) -> _Input:
    """Already-normalised NCHW input (numpy or torch): shape, channels and finiteness checked."""
    torch = _torch()
    if kind == "tensor" and not x.is_floating_point():
        raise InputError(
            f"a tensor of images must be floating point (normalised NCHW); got {x.dtype}."
        )
    if x.ndim != 4:
        hint = (
            " ODIN scores images through the network, not feature rows."
            if x.ndim == 2
            else ""
        )
        raise InputError(
            f"float images must be 4-D (n, C, H, W), normalised as the network expects; got shape "
            f"{tuple(x.shape)}.{hint}"
        )
    _check_channels(int(x.shape[1]), net, tuple(x.shape))
    n = int(x.shape[0])
    if n == 0:
        raise EmptyInputError("no images to score (the input has 0 rows).")
    for start in range(0, n, _FINITE_CHUNK_ROWS):
        part = x[start : start + _FINITE_CHUNK_ROWS]
        ok = bool(torch.isfinite(part).all()) if kind == "tensor" else bool(np.isfinite(part).all())
        if not ok:
            raise NonFiniteError(
                f"images contain NaN or infinite values (first in rows {start}-"
                f"{min(n, start + _FINITE_CHUNK_ROWS) - 1}); oddkit never guesses a score for them."
            )
    if kind == "tensor":
        return _Input(n, lambda a, b: x[a:b])
    return _Input(n, lambda a, b: torch.from_numpy(np.ascontiguousarray(x[a:b])))


def _uint8_input(images: np.ndarray, net: _Network) -> _Input:
    from ...data.images import check_image_batch

    transform = _need_transform(net)
    check_image_batch(images, contiguous=False)
    if images.shape[0] == 0:
        raise EmptyInputError("no images to score (the array has 0 rows).")
    return _Input(int(images.shape[0]), lambda a, b: _transformed(transform, net, images[a:b]))


def _source_input(source: Any, net: _Network) -> _Input:
    from ...data.images import check_image_batch

    transform = _need_transform(net)
    n = len(source)
    if n == 0:
        raise EmptyInputError("no images to score (the image source is empty).")

    def rows(a: int, b: int) -> Any:
        images = check_image_batch(source.load(np.arange(a, b)))
        if images.shape[0] != b - a:
            raise InputError(
                f"the image source returned {images.shape[0]} images for {b - a} indices."
            )
        return _transformed(transform, net, images)

    return _Input(int(n), rows)


def _need_transform(net: _Network) -> Callable[[np.ndarray], Any]:
    if net.transform is None:
        raise InputError(
            "uint8 images need the network's input transform, and ODIN was fitted with a plain "
            "torch.nn.Module: fit it with an oddkit Backbone (oddkit.features.from_module(model, "
            "transform=...)) or score normalised float (n, C, H, W) input."
        )
    return net.transform


def _transformed(transform: Callable[[np.ndarray], Any], net: _Network, images: np.ndarray) -> Any:
    torch = _torch()
    x = transform(np.ascontiguousarray(images))
    if not isinstance(x, torch.Tensor) or x.ndim != 4:
        raise InputError("the Backbone's transform must return a 4-D tensor (n, C, H, W).")
    _check_channels(int(x.shape[1]), net, tuple(x.shape))
    return x


def _check_channels(channels: int, net: _Network, shape: tuple[int, ...]) -> None:
    if net.std is not None and channels != len(net.std):
        hint = " (channels last? use x.transpose(0, 3, 1, 2))" if shape[-1] == len(net.std) else ""
        raise InputError(
            f"images have {channels} channels (shape {shape}) but norm_std has {len(net.std)} "
            f"values; pass (n, C, H, W) input with C = {len(net.std)}{hint}."
        )

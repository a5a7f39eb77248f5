"""The data of the C10-OOD-local protocol (``shared/docs/protocols.md``), deterministic.

In-distribution: the CIFAR-10 train and test :class:`~oddkit.data.images.ImageFolder`
folders. Out-of-distribution ("far") sets, each an
:class:`~oddkit.data.images.ArraySource` of 32x32 RGB uint8 images with unknown labels
(``-1``) and a content fingerprint:

``mnist``
    The 10,000 MNIST test images, resized 28 -> 32 with Pillow's bilinear filter on the
    grey image, then grey copied to 3 channels (the same pixels as copying first, since
    channels are resized independently).
``textures``
    2,000 crops of 32x32 from scikit-image's bundled ``brick``, ``grass`` and ``gravel``
    (512x512 grey), grey copied to 3 channels. Interpretation (the protocol leaves the
    details open): crop ``i`` comes from texture ``i % 3`` (667 brick, 667 grass,
    666 gravel), and every crop has its own factor. With ``rs = RandomState(0)`` the draws
    are, in this order and vectorised over all crops: ``factor = rs.uniform(0.25, 1.0,
    2000)``; the resized texture is ``rint(512 * factor)`` pixels per side; ``top =
    rs.randint(0, side - 32 + 1)`` and then ``left = rs.randint(0, side - 32 + 1)``
    (per-crop upper bounds). The crop is the window ``[top, top + 32) x [left, left +
    32)`` of the texture resized bilinearly to that size (Pillow, antialiased when
    shrinking). Each distinct (texture, size) pair is resized once (about 950 of them).
``gaussian``
    2,000 images, pixels N(0.5, 0.25^2) clipped to [0, 1]: ``RandomState(1).normal(0.5,
    0.25, size=(2000, 32, 32, 3))`` (draws fill the array in C order: image, row,
    column, channel).
``uniform``
    2,000 images, pixels ``RandomState(2).uniform(0, 1, size=(2000, 32, 32, 3))``.

Float pixels become uint8 as ``rint(255 * x)`` (round half to even), the rule of
:class:`~oddkit.data.images.ArraySource`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DataError, MissingDependencyError
from .images import (
    ArraySource,
    ImageFolder,
    PathLike,
    _pil,
    check_same_classes,
    load_mnist_idx,
)

PROTOCOL = "C10-OOD-local"
VERSION = "1"
OOD_SET_NAMES = ("mnist", "textures", "gaussian", "uniform")
SIDE = 32
N_SYNTHETIC = 2000
TEXTURES = ("brick", "grass", "gravel")
FACTOR_RANGE = (0.25, 1.0)
SEEDS = {"textures": 0, "gaussian": 1, "uniform": 2}
MNIST_TEST_IMAGES = "t10k-images-idx3-ubyte"


# --------------------------------------------------------------------------- the protocol
@dataclass
class C10OODLocal:
    """The ID folders and the four OOD sets of C10-OOD-local, with provenance."""

    train: ImageFolder
    test: ImageFolder
    ood: dict[str, ArraySource]
    protocol: str = PROTOCOL
    version: str = VERSION

    def fingerprints(self) -> dict[str, str]:
        """Fingerprint of every part (``train``, ``test``, ``ood/<name>``), for provenance."""
        out = {"train": self.train.fingerprint, "test": self.test.fingerprint}
        out.update({f"ood/{name}": source.fingerprint for name, source in self.ood.items()})
        return out


def c10_ood_local(shared_dir: PathLike) -> C10OODLocal:
    """The C10-OOD-local data from ``shared_dir`` (the folder holding ``data/cifar10``).

    CIFAR-10 comes from ``data/cifar10/{train,test}`` (ImageFolder, 50,000 / 10,000
    images), MNIST from ``data/mnist``; the OOD sets are in the order of
    :data:`OOD_SET_NAMES`.
    """
    data = Path(shared_dir) / "data"
    cifar = data / "cifar10"
    if not (cifar / "train").is_dir() or not (cifar / "test").is_dir():
        raise DataError(
            f"CIFAR-10 folders not found at {cifar}/train and {cifar}/test; pass the "
            "shared folder that holds data/cifar10 (ImageFolder layout)."
        )
    train, test = ImageFolder(cifar / "train"), ImageFolder(cifar / "test")
    check_same_classes(train, test)
    ood = {name: load_ood_set(name, mnist_dir=data / "mnist") for name in OOD_SET_NAMES}
    return C10OODLocal(train=train, test=test, ood=ood)


def load_ood_set(name: str, mnist_dir: PathLike | None = None) -> ArraySource:
    """One OOD set by name (:data:`OOD_SET_NAMES`); ``mnist`` needs ``mnist_dir``."""
    if name == "mnist":
        if mnist_dir is None:
            raise DataError(
                "The mnist OOD set needs mnist_dir (the folder of the MNIST IDX files)."
            )
        return mnist_ood(mnist_dir)
    builders: dict[str, Callable[[], ArraySource]] = {
        "textures": textures_ood,
        "gaussian": gaussian_ood,
        "uniform": uniform_ood,
    }
    if name not in builders:
        raise DataError(f"Unknown OOD set {name!r}; available: {', '.join(OOD_SET_NAMES)}.")
    return builders[name]()


# --------------------------------------------------------------------------- the sets
def mnist_ood(mnist_dir: PathLike) -> ArraySource:
    """The 10,000 MNIST test images as 32x32 RGB (module docstring), labels unknown."""
    folder = Path(mnist_dir)
    for name in (MNIST_TEST_IMAGES + ".gz", MNIST_TEST_IMAGES):
        if (folder / name).is_file():
            digits = load_mnist_idx(folder / name, size=(SIDE, SIDE))
            return ArraySource(digits.images, name="mnist")
    raise DataError(f"MNIST test images not found: {folder / MNIST_TEST_IMAGES}[.gz].")


def textures_ood() -> ArraySource:
    """2,000 32x32 texture crops (brick, grass, gravel), as the module docstring specifies."""
    Image = _pil()
    textures = skimage_textures()
    plan = texture_plan([t.shape for t in textures])
    crops = np.empty((plan.texture.size, SIDE, SIDE), dtype=np.uint8)
    sizes = np.stack([plan.texture, plan.height, plan.width], axis=1)
    distinct, group = np.unique(sizes, axis=0, return_inverse=True)
    for g, (t, h, w) in enumerate(distinct.tolist()):  # each resized texture made once
        resized = np.asarray(Image.fromarray(textures[t]).resize((w, h), Image.Resampling.BILINEAR))
        members = np.flatnonzero(group.ravel() == g)
        crops[members] = _windows(resized, plan.top[members], plan.left[members])
    return ArraySource(np.repeat(crops[..., None], 3, axis=3), name="textures")


def _windows(image: np.ndarray, top: np.ndarray, left: np.ndarray) -> np.ndarray:
    """The SIDE x SIDE windows of ``image`` at the given corners, ``(m, SIDE, SIDE)``."""
    offsets = np.arange(SIDE)
    rows = (top[:, None] + offsets)[:, :, None]
    cols = (left[:, None] + offsets)[:, None, :]
    return image[rows, cols]


def gaussian_ood() -> ArraySource:
    """2,000 images of N(0.5, 0.25^2) pixels clipped to [0, 1], RandomState(1)."""
    rs = np.random.RandomState(SEEDS["gaussian"])
    pixels = rs.normal(0.5, 0.25, size=(N_SYNTHETIC, SIDE, SIDE, 3))
    return ArraySource(np.clip(pixels, 0.0, 1.0, out=pixels), name="gaussian")


def uniform_ood() -> ArraySource:
    """2,000 images of U(0, 1) pixels, RandomState(2)."""
    rs = np.random.RandomState(SEEDS["uniform"])
    return ArraySource(rs.uniform(0.0, 1.0, size=(N_SYNTHETIC, SIDE, SIDE, 3)), name="uniform")


# --------------------------------------------------------------------------- textures
@dataclass(frozen=True)
class TexturePlan:
    """Where each texture crop comes from: texture index, factor, resized size, window."""

    texture: np.ndarray
    factor: np.ndarray
    height: np.ndarray
    width: np.ndarray
    top: np.ndarray
    left: np.ndarray


def texture_plan(
    shapes: list[tuple[int, ...]], n: int = N_SYNTHETIC, seed: int = SEEDS["textures"]
) -> TexturePlan:
    """The random draws of the ``textures`` set, in the documented order (vectorised)."""
    rs = np.random.RandomState(seed)
    texture = np.arange(n) % len(shapes)
    factor = rs.uniform(*FACTOR_RANGE, size=n)
    sizes = np.asarray([s[:2] for s in shapes], dtype=np.float64)[texture]
    height = np.rint(sizes[:, 0] * factor).astype(np.int64)
    width = np.rint(sizes[:, 1] * factor).astype(np.int64)
    if height.min() < SIDE or width.min() < SIDE:
        raise DataError(
            f"A texture is too small for {SIDE}x{SIDE} crops at factor {FACTOR_RANGE[0]}."
        )
    top = rs.randint(0, height - SIDE + 1)
    left = rs.randint(0, width - SIDE + 1)
    return TexturePlan(texture, factor, height, width, top.astype(np.int64), left.astype(np.int64))


def skimage_textures() -> list[np.ndarray]:
    """scikit-image's bundled brick, grass and gravel as 2-D uint8 grey images."""
    try:
        import skimage.data
    except ImportError as exc:
        raise MissingDependencyError(
            "The textures OOD set needs scikit-image: pip install scikit-image"
        ) from exc
    out = []
    for name in TEXTURES:
        image = np.asarray(getattr(skimage.data, name)())
        if image.ndim == 3:  # a future colour version: reduce to grey as the protocol says
            image = np.asarray(_pil().fromarray(image[..., :3]).convert("L"))
        out.append(np.ascontiguousarray(image, dtype=np.uint8))
    return out

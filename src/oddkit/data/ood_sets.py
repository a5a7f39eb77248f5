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

Validation OOD sets (for choosing hyperparameters; not part of the protocol's test)
----------------------------------------------------------------------------------
OpenOOD v1.5 tunes each post-hoc method on an OOD *validation* set that is disjoint from
every test OOD set. The material OpenOOD uses for CIFAR-10 (a Tiny ImageNet subset) is not
available here, so these sets are made offline from **CIFAR-10 train** images (never test
images) or from a noise family the test sets do not use. None of them can coincide with a
test set: MNIST, the scikit-image textures and the pixel-wise i.i.d. ``gaussian`` /
``uniform`` noise are other material, and every image here is either a spatial
rearrangement of a CIFAR-10 train image or spatially smooth noise.

Source images: ``validation_source_indices(len(train))``, i.e.
``numpy.sort(RandomState(100).choice(len(train), 2000, replace=False))``, indices into the
train source (for an :class:`~oddkit.data.images.ImageFolder`, its sorted file order). The
same 2,000 images feed ``pixel_permuted`` and ``jigsaw``. Choice made here: the ID fit set
MAY include these source images. The transforms destroy the objects (a pixel permutation
keeps nothing spatial; the 4x4 jigsaw breaks every object into shuffled 8x8 pieces), no
validation image equals any ID image (checked row by row in the tests), and excluding 4% of
the train set would make the tuned fit differ from the protocol's. A caller who wants the
stricter variant can drop ``validation_source_indices(...)`` from the fit rows.

``pixel_permuted``
    Each source image with its 1,024 pixel positions permuted (each image its own
    permutation; the RGB triple of a pixel moves together): the colour histogram stays,
    every spatial structure goes. ``rs = RandomState(101)``; the permutation of image ``i``
    is ``argsort(rs.random_sample((2000, 1024)))[i]`` (new pixel ``j`` = old pixel
    ``perm[j]`` in row-major order).
``jigsaw``
    Each source image cut into a 4x4 grid of 8x8 tiles, the 16 tiles shuffled (each image
    its own order): local texture and colour stay, objects are broken. ``rs =
    RandomState(102)``; tile order ``argsort(rs.random_sample((2000, 16)))`` (new tile
    ``t`` = old tile ``order[t]``, tiles numbered row-major); an order that is the identity
    is replaced by the cyclic shift ``(1, 2, ..., 15, 0)`` so that no image is left intact.
``smooth_noise``
    2,000 images of spatially smooth random colour blobs (low-frequency noise, unlike the
    test sets' pixel-wise noise): with ``rs = RandomState(103)``, white noise ``rs.normal(size=
    (2000, 3, 32, 32))`` (image, channel, row, column), then ``cutoff = rs.uniform(0.04, 0.12,
    2000)`` cycles per pixel; each channel is low-pass filtered in the Fourier domain with
    the Gaussian gain ``exp(-f^2 / (2 cutoff^2))`` (``f`` the radial frequency of
    ``numpy.fft.rfft2``) and rescaled to ``[0, 1]`` by its own minimum and maximum.
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
    ImageSource,
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


# --------------------------------------------------------------------------- validation OOD
#: the validation OOD sets (module docstring), disjoint from :data:`OOD_SET_NAMES` by construction.
VALIDATION_SET_NAMES = ("pixel_permuted", "jigsaw", "smooth_noise")
VALIDATION_VERSION = "1"
N_VALIDATION = 2000
VALIDATION_SEEDS = {"draw": 100, "pixel_permuted": 101, "jigsaw": 102, "smooth_noise": 103}
JIGSAW_GRID = 4
SMOOTH_CUTOFF_RANGE = (0.04, 0.12)


def c10_validation_ood(shared_dir: PathLike) -> dict[str, ArraySource]:
    """The validation OOD sets of :data:`VALIDATION_SET_NAMES`, built from the CIFAR-10 train folder.

    ``shared_dir`` is the folder holding ``data/cifar10`` (as for :func:`c10_ood_local`);
    only ``data/cifar10/train`` is read, never the test images.
    """
    train_dir = Path(shared_dir) / "data" / "cifar10" / "train"
    if not train_dir.is_dir():
        raise DataError(
            f"CIFAR-10 train folder not found at {train_dir}; pass the shared folder that "
            "holds data/cifar10 (ImageFolder layout)."
        )
    train = ImageFolder(train_dir)
    return {name: load_validation_set(name, train) for name in VALIDATION_SET_NAMES}


def load_validation_set(name: str, train: ImageSource | None = None) -> ArraySource:
    """One validation OOD set by name; ``pixel_permuted`` and ``jigsaw`` need the ID ``train`` source."""
    if name == "smooth_noise":
        return smooth_noise_ood()
    builders: dict[str, Callable[[ImageSource], ArraySource]] = {
        "pixel_permuted": pixel_permuted_ood,
        "jigsaw": jigsaw_ood,
    }
    if name not in builders:
        raise DataError(
            f"Unknown validation OOD set {name!r}; available: {', '.join(VALIDATION_SET_NAMES)}."
        )
    if train is None:
        raise DataError(
            f"The {name} validation set is made from the ID training images; pass train= "
            "(the CIFAR-10 train source, never the test images)."
        )
    return builders[name](train)


def validation_source_indices(
    n_train: int, n: int = N_VALIDATION, seed: int = VALIDATION_SEEDS["draw"]
) -> np.ndarray:
    """Sorted indices of the ``n`` train images the transformed validation sets start from."""
    if n_train < n:
        raise DataError(f"The validation sets need {n} source images; the train source has {n_train}.")
    return np.sort(np.random.RandomState(seed).choice(n_train, n, replace=False))


def pixel_permuted_ood(
    train: ImageSource, n: int = N_VALIDATION, seed: int = VALIDATION_SEEDS["pixel_permuted"]
) -> ArraySource:
    """``n`` train images with their pixel positions permuted, one permutation per image."""
    images = _validation_sources(train, n)
    m, h, w, c = images.shape
    flat = images.reshape(m, h * w, c)
    perm = np.argsort(np.random.RandomState(seed).random_sample((m, h * w)), axis=1)
    out = np.take_along_axis(flat, perm[:, :, None], axis=1).reshape(images.shape)
    return ArraySource(out, name="pixel_permuted")


def jigsaw_ood(
    train: ImageSource, n: int = N_VALIDATION, seed: int = VALIDATION_SEEDS["jigsaw"]
) -> ArraySource:
    """``n`` train images cut into a 4x4 grid of tiles, shuffled per image (never the identity)."""
    images = _validation_sources(train, n)
    m, h, w, c = images.shape
    g = JIGSAW_GRID
    if h % g or w % g:
        raise DataError(f"jigsaw needs image sides divisible by {g}; the train images are {h}x{w}.")
    th, tw = h // g, w // g
    tiles = images.reshape(m, g, th, g, tw, c).transpose(0, 1, 3, 2, 4, 5).reshape(m, g * g, th, tw, c)
    order = np.argsort(np.random.RandomState(seed).random_sample((m, g * g)), axis=1)
    identity = (order == np.arange(g * g)).all(axis=1)
    order[identity] = np.roll(np.arange(g * g), -1)
    shuffled = np.take_along_axis(tiles, order[:, :, None, None, None], axis=1)
    out = shuffled.reshape(m, g, g, th, tw, c).transpose(0, 1, 3, 2, 4, 5).reshape(images.shape)
    return ArraySource(out, name="jigsaw")


def smooth_noise_ood(
    n: int = N_VALIDATION, seed: int = VALIDATION_SEEDS["smooth_noise"]
) -> ArraySource:
    """``n`` 32x32 images of low-frequency colour noise (module docstring), RandomState(103)."""
    rs = np.random.RandomState(seed)
    white = rs.normal(size=(n, 3, SIDE, SIDE))
    cutoff = rs.uniform(*SMOOTH_CUTOFF_RANGE, size=n)
    f2 = np.fft.fftfreq(SIDE)[:, None] ** 2 + np.fft.rfftfreq(SIDE)[None, :] ** 2
    gain = np.exp(-f2[None, :, :] / (2.0 * cutoff[:, None, None] ** 2))  # (n, SIDE, SIDE//2+1)
    smooth = np.fft.irfft2(np.fft.rfft2(white) * gain[:, None], s=(SIDE, SIDE))
    low = smooth.min(axis=(2, 3), keepdims=True)
    span = smooth.max(axis=(2, 3), keepdims=True) - low
    scaled = (smooth - low) / np.where(span > 0, span, 1.0)
    return ArraySource(np.clip(scaled.transpose(0, 2, 3, 1), 0.0, 1.0), name="smooth_noise")


def _validation_sources(train: ImageSource, n: int) -> np.ndarray:
    """The source images of the transformed validation sets, ``(n, H, W, 3)`` uint8."""
    images = np.asarray(train.load(validation_source_indices(len(train), n)))
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise DataError(
            f"The train source must deliver uint8 RGB images (n, H, W, 3); got {images.dtype} "
            f"{images.shape}."
        )
    return images

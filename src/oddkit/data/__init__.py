"""Data for oddkit: tabular files, bundled demo sets and reproducible splits.

* :func:`load_table` reads ``.npz`` / ``.mat`` / ``.csv`` / ``.tsv`` / ``.txt`` /
  ``.parquet`` into a :class:`Table` (float64 ``X``, optional 0/1 ``y`` with 1 = anomaly);
  :func:`load_folder` lists a benchmark folder's files.
* :func:`load_bundled` / :func:`list_bundled`: offline demo sets from scikit-learn's
  bundled data.
* :func:`stratified_split`, :func:`adb_dev_cut`, :func:`adb_dev_split`: the splits of
  the ADB-dev protocol (``shared/docs/protocols.md``).
* Images (:mod:`oddkit.data.images`): image *sources* that decode only the images asked
  for (:class:`ImageFolder`, :class:`ArraySource`, MNIST IDX, CIFAR pickles, SVHN .mat,
  torchvision datasets), and the OOD sets of C10-OOD-local (:mod:`oddkit.data.ood_sets`).
"""

from __future__ import annotations

from .bundled import list_bundled, load_bundled
from .images import (
    ArraySource,
    ImageFolder,
    ImageSource,
    SubsetSource,
    check_same_classes,
    from_torchvision,
    iter_batches,
    load_cifar_pickle,
    load_mnist_idx,
    load_svhn_mat,
)
from .ood_sets import (
    OOD_SET_NAMES,
    VALIDATION_SET_NAMES,
    C10OODLocal,
    c10_ood_local,
    c10_validation_ood,
    gaussian_ood,
    jigsaw_ood,
    load_ood_set,
    load_validation_set,
    mnist_ood,
    pixel_permuted_ood,
    smooth_noise_ood,
    textures_ood,
    uniform_ood,
    validation_source_indices,
)
from .splits import adb_dev_cut, adb_dev_split, stratified_split
from .tabular import Table, load_folder, load_table

__all__ = [
    "OOD_SET_NAMES",
    "VALIDATION_SET_NAMES",
    "c10_validation_ood",
    "jigsaw_ood",
    "load_validation_set",
    "pixel_permuted_ood",
    "smooth_noise_ood",
    "validation_source_indices",
    "ArraySource",
    "C10OODLocal",
    "ImageFolder",
    "ImageSource",
    "SubsetSource",
    "Table",
    "c10_ood_local",
    "check_same_classes",
    "from_torchvision",
    "gaussian_ood",
    "iter_batches",
    "load_cifar_pickle",
    "load_mnist_idx",
    "load_ood_set",
    "load_svhn_mat",
    "mnist_ood",
    "textures_ood",
    "uniform_ood",
    "adb_dev_cut",
    "adb_dev_split",
    "list_bundled",
    "load_bundled",
    "load_folder",
    "load_table",
    "stratified_split",
]

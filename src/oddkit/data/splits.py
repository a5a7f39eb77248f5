"""Reproducible stratified splits, including the ADB-dev protocol's exact splits.

ADB-dev (``shared/docs/protocols.md``): a set with more than 10,000 rows is first cut to
10,000 rows with ``train_test_split(X, y, train_size=10000, stratify=y, random_state=0)``
(the first part is kept); then, per seed, ``train_test_split(X, y, test_size=0.3,
stratify=y, random_state=seed)``. :func:`adb_dev_split` makes exactly these two calls, so
its arrays equal scikit-learn's bit for bit.

Stratification needs at least two rows of each class (and enough rows on each side for
one of each class); otherwise a :class:`~oddkit.errors.DataError` explains what is short.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import DataError

ADB_DEV_CAP = 10_000
ADB_DEV_TEST_SIZE = 0.3
ADB_DEV_CUT_SEED = 0

Split = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def stratified_split(X: Any, y: Any, test_size: float | int, seed: int) -> Split:
    """``train_test_split(X, y, test_size=test_size, stratify=y, random_state=seed)``.

    Returns ``(X_train, X_test, y_train, y_test)``.
    """
    X, y = _check_xy(X, y)
    return _split(X, y, seed, test_size=test_size)


def adb_dev_cut(X: Any, y: Any, cap: int | None = ADB_DEV_CAP) -> tuple[np.ndarray, np.ndarray]:
    """ADB-dev's size cut: more than ``cap`` rows -> a stratified subset of ``cap`` rows.

    ``cap=None`` skips the cut (ADB-dev-full). Sets with at most ``cap`` rows come back
    unchanged (the same arrays).
    """
    X, y = _check_xy(X, y)
    if cap is None or X.shape[0] <= cap:
        return X, y
    X_cut, _, y_cut, _ = _split(X, y, ADB_DEV_CUT_SEED, train_size=cap)
    return X_cut, y_cut


def adb_dev_split(X: Any, y: Any, seed: int, cap: int | None = ADB_DEV_CAP) -> Split:
    """ADB-dev's split for one seed: :func:`adb_dev_cut`, then a stratified 70/30 split.

    Returns ``(X_train, X_test, y_train, y_test)``; the detector is fitted on
    ``X_train`` without labels (it contains anomalies) and scores ``X_test``.
    """
    X, y = adb_dev_cut(X, y, cap)
    return _split(X, y, seed, test_size=ADB_DEV_TEST_SIZE)


def _check_xy(X: Any, y: Any) -> tuple[np.ndarray, np.ndarray]:
    if y is None:
        raise DataError("A stratified split needs labels (y); this data set has none.")
    X, y = np.asarray(X), np.asarray(y)
    if y.ndim != 1 or X.ndim < 1 or X.shape[0] != y.shape[0]:
        raise DataError(
            f"X and y do not match: X has shape {X.shape}, y has shape {y.shape}; y must be "
            "a vector with one label per row of X."
        )
    return X, y


def _split(X: np.ndarray, y: np.ndarray, seed: int, **size: Any) -> Split:
    from sklearn.model_selection import train_test_split

    classes, counts = np.unique(y, return_counts=True)
    if classes.size < 2 or counts.min() < 2:
        raise DataError(_too_few_message(classes, counts))
    try:
        X_tr, X_te, y_tr, y_te = train_test_split(X, y, stratify=y, random_state=seed, **size)
    except ValueError as exc:
        raise DataError(
            f"Cannot make a stratified split with {size} of {y.size} rows (class counts "
            f"{_counts(classes, counts)}): {exc} Use a larger set or a different split size."
        ) from exc
    return X_tr, X_te, y_tr, y_te


def _too_few_message(classes: np.ndarray, counts: np.ndarray) -> str:
    return (
        f"Cannot stratify: class counts are {_counts(classes, counts)}; a stratified split "
        "needs at least 2 rows of each of two classes (one for each side). This set has too "
        "few anomalies for a labelled evaluation split: add anomalies, or fit on all rows "
        "and evaluate elsewhere."
    )


def _counts(classes: np.ndarray, counts: np.ndarray) -> str:
    return ", ".join(f"{c}: {n}" for c, n in zip(classes.tolist(), counts.tolist()))

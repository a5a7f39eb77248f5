"""ADB-dev: the unsupervised tabular protocol of ``docs/protocols.md``.

Definition (version "1"):

* A set with more than 10,000 rows is first cut to 10,000 rows with
  ``train_test_split(X, y, train_size=10000, stratify=y, random_state=0)`` (the first
  part is kept). ``ADB-dev-full`` skips this cut; it exists for scale tests only.
* For each seed (0, 1, 2 by default): ``train_test_split(X, y, test_size=0.3,
  stratify=y, random_state=seed)``.
* Detectors are fitted on the train part **without labels** (it contains anomalies)
  and score the test part; AUROC, AUPR-Out and fit / score seconds are recorded.
* Detector defaults are the published / PyOD defaults; a randomised detector gets
  ``random_state=seed``.

The split itself is :func:`oddkit.data.splits.adb_dev_split`; this module wraps it in
a small object that also carries the protocol's name, version and metadata.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import DataError

#: Bump when the definition changes in a way that changes numbers; a results store
#: refuses to mix versions.
VERSION = "1"
CAP_ROWS = 10_000
TEST_SIZE = 0.3
DEFAULT_SEEDS = (0, 1, 2)


@dataclass(frozen=True)
class Split:
    """One train/test split of one data set under one seed."""

    X_train: np.ndarray
    X_test: np.ndarray
    y_train: np.ndarray
    y_test: np.ndarray
    seed: int


@dataclass(frozen=True)
class ADBDev:
    """The ADB-dev protocol (``full=True``: ADB-dev-full, without the 10,000-row cut)."""

    full: bool = False

    @property
    def name(self) -> str:
        return "ADB-dev-full" if self.full else "ADB-dev"

    @property
    def version(self) -> str:
        return VERSION

    @property
    def cap(self) -> int | None:
        """Row cap applied before splitting (``None`` for ADB-dev-full)."""
        return None if self.full else CAP_ROWS

    @property
    def default_seeds(self) -> tuple[int, ...]:
        return DEFAULT_SEEDS

    def split(self, X: Any, y: Any, seed: int) -> Split:
        """The protocol's split of ``(X, y)`` for ``seed`` (labels: 1 = anomaly)."""
        from ..data.splits import adb_dev_split

        X = np.asarray(X)
        y = _check_labels(y, X.shape[0])
        X_tr, X_te, y_tr, y_te = adb_dev_split(X, y, int(seed), cap=self.cap)
        return Split(np.asarray(X_tr), np.asarray(X_te), np.asarray(y_tr), np.asarray(y_te), int(seed))

    def split_table(self, table: Any, seed: int) -> Split:
        """Same as :meth:`split` for an :class:`oddkit.data.Table`."""
        if table.y is None:
            raise DataError(
                f"data set {table.name!r} has no labels; {self.name} needs labels "
                "(1 = anomaly) to evaluate. Pass label=COLUMN when loading it."
            )
        return self.split(table.X, table.y, seed)

    def metadata(self) -> dict[str, Any]:
        """What is recorded with every result under this protocol."""
        return {
            "protocol": self.name,
            "protocol_version": self.version,
            "cap_rows": self.cap,
            "test_size": TEST_SIZE,
            "stratified": True,
            "fit_on": "train part without labels (contains anomalies)",
            "cut_random_state": 0,
        }


def _check_labels(y: Any, n_rows: int) -> np.ndarray:
    """Labels must be binary 0/1 with both classes present, one per row."""
    if y is None:
        raise DataError("ADB-dev needs labels (1 = anomaly); got none.")
    y = np.asarray(y).reshape(-1)
    if y.shape[0] != n_rows:
        raise DataError(f"labels have {y.shape[0]} entries for {n_rows} rows.")
    values = set(np.unique(y).tolist())
    if not values <= {0, 1}:
        raise DataError(f"labels must be 0 (normal) / 1 (anomaly); got values {sorted(values)[:10]}.")
    if len(values) < 2:
        raise DataError("labels hold one class only; AUROC needs normal and anomalous rows.")
    fewest = int(np.bincount(y.astype(np.int64), minlength=2).min())
    if fewest < 2:
        raise DataError(
            "labels hold fewer than 2 rows of one class; the stratified split needs at "
            "least 2 normal and 2 anomalous rows."
        )
    return y.astype(np.int64)

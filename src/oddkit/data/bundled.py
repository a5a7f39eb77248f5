"""Small offline demo sets built from scikit-learn's bundled data (real measurements, no network).

Each set takes one class of a scikit-learn data set as *normal* (all of its rows) and
draws anomalies from the other classes so that anomalies make up about 10% of the rows:
``n_anomalies = round(n_normal / 9)``. The draw (without replacement) and a final
shuffle of the rows both use ``numpy.random.RandomState(0)``, so every call returns the
same table (same :meth:`~oddkit.data.Table.fingerprint`).

* ``breast_cancer``: benign tumours normal (357 rows) + 40 malignant = 397 rows, rate 0.1008;
* ``digits`` (the same as ``digits_0``): the digit 0 normal (178) + 20 other digits = 198
  rows, rate 0.1010;
* ``digits_k`` for k = 0..9: the digit k normal (n_k rows) + round(n_k / 9) other digits,
  rate 0.098 to 0.102 (e.g. ``digits_8``: 174 + 19 = 193 rows);
* ``wine``: cultivar class_0 normal (59) + 7 of the other two cultivars = 66 rows,
  rate 0.1061.

Rows are real measurements, unchanged (no scaling); feature names are scikit-learn's.

Why subsample: the full breast-cancer set is 37% malignant, far from the rare-anomaly
setting detectors are built for (ADBench's WDBC version of it keeps 2.7%); 10% keeps
enough anomalies for stable AUROC on a few hundred rows.
"""

from __future__ import annotations

import numpy as np

from ..errors import DataError
from .tabular import Table

ANOMALY_RATE = 0.10
SEED = 0


def list_bundled() -> list[str]:
    """Names accepted by :func:`load_bundled`."""
    return sorted(_SETS)


def load_bundled(name: str) -> Table:
    """One of the bundled demo sets (see the module docstring) as a labelled :class:`Table`."""
    if name not in _SETS:
        raise DataError(
            f"Unknown bundled data set {name!r}; available: {', '.join(list_bundled())}."
        )
    import sklearn.datasets

    loader, normal_class = _SETS[name]
    bunch = getattr(sklearn.datasets, loader)()
    X, target = np.asarray(bunch.data, dtype=np.float64), np.asarray(bunch.target)
    rows, y = _one_class_vs_rest(target, normal_class)
    return Table(
        X=X[rows],
        y=y,
        name=name,
        source=f"sklearn:{loader}",
        feature_names=[str(f) for f in bunch.feature_names],
    )


def _one_class_vs_rest(target: np.ndarray, normal_class: int) -> tuple[np.ndarray, np.ndarray]:
    """Row indices (normal class + drawn anomalies, shuffled) and their 0/1 labels."""
    rng = np.random.RandomState(SEED)
    normal = np.flatnonzero(target == normal_class)
    others = np.flatnonzero(target != normal_class)
    n_anomalies = max(1, round(normal.size * ANOMALY_RATE / (1.0 - ANOMALY_RATE)))
    anomalies = np.sort(rng.choice(others, size=n_anomalies, replace=False))
    rows = np.concatenate([normal, anomalies])
    y = np.concatenate([np.zeros(normal.size, np.int64), np.ones(n_anomalies, np.int64)])
    order = rng.permutation(rows.size)
    return rows[order], y[order]


# name -> (scikit-learn loader, class taken as normal); imported lazily in load_bundled
_SETS: dict[str, tuple[str, int]] = {
    "breast_cancer": ("load_breast_cancer", 1),  # scikit-learn codes benign as 1
    "digits": ("load_digits", 0),
    "wine": ("load_wine", 0),
    **{f"digits_{k}": ("load_digits", k) for k in range(10)},
}

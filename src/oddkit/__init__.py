"""oddkit: anomaly, novelty and out-of-distribution detection with one contract.

Every detector is fitted on normal / in-distribution data and scores new inputs with
float64 scores where **higher = more anomalous**::

    import oddkit
    det = oddkit.detectors.create("knn", n_neighbors=5).fit(X_train)
    scores = det.score(X_test)
    oddkit.metrics.evaluate(y_test, scores)
"""

__version__ = "0.1.0"

from . import calibration, detectors, errors, metrics  # noqa: E402,F401

__all__ = ["__version__", "calibration", "detectors", "errors", "metrics"]

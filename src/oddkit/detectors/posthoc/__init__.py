"""Post-hoc OOD detectors for classifiers: scores from penultimate features and the head.

Every detector here is fitted on the in-distribution training features ``X`` (n, d) of a
classifier, with its linear head ``head=(W, b)`` (``W`` of shape (n_classes, d), ``b`` of
shape (n_classes,); logits = ``X @ W.T + b``) and, where the method needs them, the
class labels ``y``; it scores new feature rows. Scores follow oddkit's convention:
higher = more OOD (confidences such as MSP or energy are negated).

They need no network: extract features once (``oddkit.features``), cache them, and fit
or score any number of methods on the cached arrays. Only input-gradient methods (ODIN)
need the model itself.

If you only have logits, pass them as features with an identity head:
``fit(logits, head=(np.eye(C), np.zeros(C)))`` (logit-only methods then work as usual).
"""

from .base import Head, PosthocDetector, as_head

from . import feature, gradient, layers, logit, odin, shaping  # noqa: E402,F401  (registers the detectors)

__all__ = ["Head", "PosthocDetector", "as_head"]

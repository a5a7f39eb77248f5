"""Typed errors raised by oddkit.

Every error a user can trigger with bad input derives from :class:`OddkitError`, and
each also derives from the builtin exception a Python user would expect (``ValueError``
for bad values, ``TypeError`` for wrong types, ...), so ``except ValueError`` keeps
working. Messages say what is wrong *and* what to do about it.
"""

from __future__ import annotations


class OddkitError(Exception):
    """Base class of every error oddkit raises on purpose."""


def one_line(exc: BaseException, *, with_type: bool = False) -> str:
    """An exception as one line of text (white space folded) for terminals and records.

    ``OSError`` shows its reason and file name; ``with_type`` prefixes the class name
    (useful in stored results, where the kind of failure matters).
    """
    text = " ".join(str(exc).split())
    if isinstance(exc, OSError) and exc.filename is not None:
        text = f"{exc.strerror or text}: {exc.filename}"
    if not text:
        return type(exc).__name__
    return f"{type(exc).__name__}: {text}" if with_type else text


class InputError(OddkitError, ValueError):
    """The data passed in is unusable (wrong shape, wrong dtype, ...)."""


class EmptyInputError(InputError):
    """The data passed in has no rows (or no columns)."""


class NonFiniteError(InputError):
    """The data passed in contains NaN or infinite values."""


class FeatureMismatchError(InputError):
    """The number of features at score time differs from the one seen at fit time."""


class NotFittedError(OddkitError, RuntimeError):
    """A method that needs a fitted detector was called before ``fit``."""


class ParamError(OddkitError, ValueError):
    """A hyperparameter is out of range or of the wrong type."""


class UnknownDetectorError(OddkitError, KeyError):
    """No detector is registered under the requested name."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0]) if self.args else ""


class PersistenceError(OddkitError, ValueError):
    """A saved detector cannot be read (missing files, wrong format, unknown version)."""


class DataError(OddkitError, ValueError):
    """A data file cannot be loaded (missing label column, non-numeric values, empty file, ...)."""


class MetricError(OddkitError, ValueError):
    """A metric cannot be computed for the given labels/scores (one class only, ...)."""


class MissingDependencyError(OddkitError, ImportError):
    """An optional dependency is not installed; the message names the ``pip install`` to run."""


class StoreError(OddkitError, ValueError):
    """A benchmark results store cannot be used (other protocol version, damaged line, ...)."""


class CalibrationError(OddkitError, ValueError):
    """A calibration cannot be done (too few calibration scores for the target rate, ...)."""

"""Kernel detectors: the one-class support vector machine.

scikit-learn's libsvm solver finds the support vectors and their weights; the fitted
state is those plain arrays, and scoring evaluates the kernel expansion with our own
chunked, BLAS-backed code (no fitted third-party object is kept or saved).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import ParamError
from .base import Detector, check_bool, check_choice, check_float, check_int, register

__all__ = ["OCSVM", "kernel_matrix"]

KERNELS = ("rbf", "linear", "poly", "sigmoid")

#: Kernel-matrix entries evaluated per block (8 MB of float64): bounds the memory of
#: scoring for any number of rows and support vectors.
_KERNEL_BLOCK = 1 << 20


def kernel_matrix(
    X: np.ndarray,
    Y: np.ndarray,
    kernel: str,
    gamma: float,
    degree: int = 3,
    coef0: float = 0.0,
    Y_sq_norms: np.ndarray | None = None,
) -> np.ndarray:
    """Kernel values ``k(X[i], Y[j])`` as an (n_X, n_Y) float64 matrix (libsvm's kernels).

    ``rbf``: ``exp(-gamma ||x - y||^2)``; ``linear``: ``<x, y>``; ``poly``:
    ``(gamma <x, y> + coef0) ** degree``; ``sigmoid``: ``tanh(gamma <x, y> + coef0)``.
    For ``rbf`` the scaled squared distances come from a single matrix product of
    rows augmented with their squared norms (``||x||^2 + ||y||^2 - 2 <x, y>``); centre
    both sides on a common point first to keep the cancellation error small
    (:class:`OCSVM` does). ``Y_sq_norms`` may pass precomputed ``||y||^2``.
    """
    if kernel == "rbf":
        # one product gives -gamma ||x - y||^2 = 2 gamma <x, y> - gamma ||y||^2 - gamma ||x||^2:
        # [x, 1, ||x||^2] . [2 gamma y, -gamma ||y||^2, -gamma]
        y_sq = np.einsum("ij,ij->i", Y, Y) if Y_sq_norms is None else Y_sq_norms
        d = X.shape[1]
        xa = np.empty((X.shape[0], d + 2))
        xa[:, :d] = X
        xa[:, d] = 1.0
        np.einsum("ij,ij->i", X, X, out=xa[:, d + 1])
        ya = np.empty((Y.shape[0], d + 2))
        np.multiply(Y, 2.0 * gamma, out=ya[:, :d])
        np.multiply(y_sq, -gamma, out=ya[:, d])
        ya[:, d + 1] = -gamma
        G = xa @ ya.T
        np.minimum(G, 0.0, out=G)  # squared distances are never negative
        return np.exp(G, out=G)
    G = X @ Y.T
    if kernel == "linear":
        return G
    G *= gamma
    G += coef0
    if kernel == "poly":
        return np.power(G, degree, out=G)
    return np.tanh(G, out=G)


@register
class OCSVM(Detector):
    """One-class SVM: the score is how far a row lies outside the estimated support region.

    The one-class SVM (nu formulation) separates the training data from the origin in
    the kernel's feature space with maximum margin; its decision function is
    ``f(x) = sum_i alpha_i k(sv_i, x) - rho`` over the support vectors ``sv_i``, positive
    inside the estimated support. ``nu`` is an upper bound on the share of training
    rows left outside and a lower bound on the share of support vectors. The score is
    ``-f(x)``: higher = further outside = more anomalous.

    Reference: B. Schölkopf, J. C. Platt, J. Shawe-Taylor, A. J. Smola and
    R. C. Williamson, "Estimating the support of a high-dimensional distribution",
    Neural Computation 13(7), 2001.

    Defaults are PyOD's (``pyod.models.ocsvm.OCSVM``): ``kernel="rbf"``, ``nu=0.5``,
    ``gamma="auto"`` (= 1 / n_features; ``"scale"`` = 1 / (n_features * X.var()), 1 when
    the training data has zero variance; or a positive number), ``degree=3``,
    ``coef0=0.0``, ``tol=1e-3``, ``shrinking=True``, ``cache_size=200`` (MB),
    ``max_iter=-1`` (no limit). scikit-learn's ``OneClassSVM`` has the same defaults
    except ``gamma="scale"``.

    Implementation: scikit-learn's ``OneClassSVM`` (libsvm) solves the dual problem;
    we keep ``support_vectors_``, ``dual_coef_`` (the alphas), ``intercept_`` (= -rho)
    and the resolved ``gamma_`` and evaluate ``-f(x)`` ourselves in row blocks with one
    matrix product per block (rbf distances are taken relative to the support vectors'
    mean, ``center_``, to limit cancellation). Scores equal PyOD's
    ``OCSVM.decision_function`` and scikit-learn's ``-decision_function`` to rounding.
    Unlike PyOD, fitting does not also score the training rows. Only the four libsvm
    kernels are offered (no callable or precomputed kernels: they could not be saved
    as data).

    Constant columns: they add the same amount to every kernel value's inputs and
    are harmless; ``gamma="scale"`` on all-constant data falls back to 1, as in
    scikit-learn. One training row is enough (it becomes the only support vector).
    """

    name = "ocsvm"
    family = "kernel"
    reference = (
        "Schölkopf et al., Estimating the support of a high-dimensional distribution, "
        "Neural Computation 2001"
    )

    def __init__(
        self,
        kernel: str = "rbf",
        nu: float = 0.5,
        gamma: str | float = "auto",
        degree: int = 3,
        coef0: float = 0.0,
        tol: float = 1e-3,
        shrinking: bool = True,
        cache_size: float = 200,
        max_iter: int = -1,
    ) -> None:
        self.kernel = kernel
        self.nu = nu
        self.gamma = gamma
        self.degree = degree
        self.coef0 = coef0
        self.tol = tol
        self.shrinking = shrinking
        self.cache_size = cache_size
        self.max_iter = max_iter
        self._check_params()

    # ------------------------------------------------------------------ params
    def _check_params(self) -> None:
        check_choice("kernel", self.kernel, KERNELS)
        check_float("nu", self.nu, 0.0, 1.0, low_inclusive=False)
        if isinstance(self.gamma, str):
            check_choice("gamma", self.gamma, ("auto", "scale"))
        else:
            check_float("gamma", self.gamma, 0.0, low_inclusive=False)
        check_int("degree", self.degree, low=0)
        check_float("coef0", self.coef0)
        check_float("tol", self.tol, 0.0, low_inclusive=False)
        check_bool("shrinking", self.shrinking)
        check_float("cache_size", self.cache_size, 0.0, low_inclusive=False)
        check_int("max_iter", self.max_iter, low=-1)
        if self.max_iter == 0:
            raise ParamError("max_iter must be -1 (no limit) or >= 1, got 0.")

    def _resolve_gamma(self, X: np.ndarray) -> float:
        if self.gamma == "auto":
            return 1.0 / X.shape[1]
        if self.gamma == "scale":
            var = float(X.var())
            return 1.0 / (X.shape[1] * var) if var != 0.0 else 1.0
        return float(self.gamma)

    # ------------------------------------------------------------------ fit
    def _fit(self, X: np.ndarray, y: np.ndarray | None, **context: Any) -> None:
        from sklearn.svm import OneClassSVM

        gamma = self._resolve_gamma(X)
        svm = OneClassSVM(
            kernel=self.kernel,
            nu=float(self.nu),
            gamma=gamma,
            degree=int(self.degree),
            coef0=float(self.coef0),
            tol=float(self.tol),
            shrinking=bool(self.shrinking),
            cache_size=float(self.cache_size),
            max_iter=int(self.max_iter),
        ).fit(X)
        sv = np.ascontiguousarray(svm.support_vectors_, dtype=np.float64)
        self.support_vectors_ = sv
        self.dual_coef_ = np.asarray(svm.dual_coef_, dtype=np.float64).reshape(-1)
        self.intercept_ = float(np.asarray(svm.intercept_).reshape(-1)[0])
        self.gamma_ = gamma
        self.center_ = sv.mean(axis=0)

    # ------------------------------------------------------------------ score
    def _score(self, X: np.ndarray) -> np.ndarray:
        alpha = self.dual_coef_
        sv = self.support_vectors_
        if self.kernel == "linear":  # sum_i alpha_i <sv_i, x> = <sum_i alpha_i sv_i, x>
            return -(X @ (sv.T @ alpha) + self.intercept_)
        sv_sq = None
        if self.kernel == "rbf":  # distances are shift-invariant: centre both sides
            X = X - self.center_
            sv = sv - self.center_
            sv_sq = np.einsum("ij,ij->i", sv, sv)
        block = max(1, _KERNEL_BLOCK // max(1, sv.shape[0]))
        out = np.empty(X.shape[0], dtype=np.float64)
        for start in range(0, X.shape[0], block):
            K = kernel_matrix(
                X[start : start + block], sv, self.kernel, self.gamma_,
                int(self.degree), float(self.coef0), Y_sq_norms=sv_sq,
            )
            out[start : start + block] = K @ alpha
        out += self.intercept_
        return -out

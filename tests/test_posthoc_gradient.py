"""Gradient-based post-hoc OOD detectors (oddkit.detectors.posthoc.gradient): GradNorm.

Data: ``helpers.digits_posthoc()`` (an MLP with 64 ReLU units trained on the bundled
digits 0-4; digits 5-9 are OOD). References on the same features and head, both through
torch autograd, so they check the closed form against real gradients:

* pytorch-ood 0.4.0 ``GradNorm`` with the head as the model and ``param_filter``
  selecting its weight (the paper's setting: last-layer weights only), in float64;
* the paper's released code (a per-sample backward pass of the cross-entropy to the
  all-ones target, summed over classes), which is ``C`` times the paper's KL gradient.
"""

from __future__ import annotations

import numpy as np
import pytest
from helpers import pytorch_ood_detector
from sklearn.metrics import roc_auc_score

from oddkit import detectors
from oddkit.detectors.posthoc import gradient  # noqa: F401  (registers gradnorm)
from oddkit.errors import FeatureMismatchError, InputError, ParamError


def _fit(d: dict, X=None, **params):
    return detectors.create("gradnorm", **params).fit(d["Ftr"] if X is None else X, head=d["head"])


_pood = pytorch_ood_detector


def _torch_head(torch, W, b):
    head = torch.nn.Linear(W.shape[1], W.shape[0]).double()
    with torch.no_grad():
        head.weight.copy_(torch.from_numpy(W))
        head.bias.copy_(torch.from_numpy(b))
    return head


@pytest.mark.parametrize("temperature", [1.0, 2.5])
def test_equals_pytorch_ood_autograd(digits, temperature):
    torch = pytest.importorskip("torch")
    W, b = digits["head"]
    X = digits["test"]
    ref = _pood("gradnorm").GradNorm(
        _torch_head(torch, W, b), param_filter=lambda name: name == "weight", temperature=temperature
    )
    theirs = ref.predict(torch.from_numpy(X)).numpy()
    ours = _fit(digits, temperature=temperature).score(X)
    np.testing.assert_allclose(ours, theirs, rtol=1e-10)
    auc = lambda s: roc_auc_score(digits["is_ood"], s)
    assert abs(auc(ours) - auc(theirs)) < 1e-4


def test_official_code_is_n_classes_times_the_score(digits):
    """The paper's code: backward of sum_c -log softmax_c on the fc layer, one sample at a time."""
    torch = pytest.importorskip("torch")
    W, b = digits["head"]
    X = digits["test"][::45]  # 30 rows: an independent per-sample oracle
    fc = _torch_head(torch, W, b)
    norms = []
    for row in torch.from_numpy(X):
        fc.zero_grad()
        loss = torch.sum(-torch.log_softmax(fc(row[None]), dim=-1))
        loss.backward()
        norms.append(fc.weight.grad.abs().sum().item())
    ours = _fit(digits).score(X)
    np.testing.assert_allclose(-W.shape[0] * ours, norms, rtol=1e-10)


def test_direction_ood_scores_higher(digits):
    auc = roc_auc_score(digits["is_ood"], _fit(digits).score(digits["test"]))
    assert auc > 0.8, f"AUROC {auc:.4f}"


@pytest.mark.parametrize("value", [0, -1.0, float("inf"), float("nan"), "1", True])
def test_bad_temperature(value):
    with pytest.raises(ParamError, match="temperature"):
        detectors.create("gradnorm", temperature=value)


def test_declaration_and_input_errors(digits):
    cls = detectors.get("gradnorm")
    assert cls.family == "posthoc" and cls.inputs == ("features", "head") and cls.reference
    with pytest.raises(InputError, match="head"):
        detectors.create("gradnorm").fit(digits["Ftr"])
    W, b = digits["head"]
    with pytest.raises(FeatureMismatchError, match="head W"):
        detectors.create("gradnorm").fit(digits["Ftr"], head=(W[:, :-1], b))
    det = _fit(digits)
    with pytest.raises(FeatureMismatchError, match="features"):
        det.score(digits["test"][:, :-1])


def test_degenerate_inputs_are_finite_and_exact(digits):
    det = _fit(digits)
    X = digits["test"][:3].copy()
    X[0] = 0.0  # no activation: zero gradient
    X[1] *= 1e6  # saturated softmax: |p - u|_1 -> 2 (1 - 1/C)
    s = det.score(X)
    assert np.isfinite(s).all() and s[0] == 0.0
    np.testing.assert_allclose(s[1], -2 * (1 - 1 / 5) * np.abs(X[1]).sum(), rtol=1e-9)
    const = np.full_like(digits["Ftr"], 0.3)
    assert np.isfinite(_fit(digits, const).score(digits["test"])).all()


def test_scoring_leaves_the_blas_threads_as_they_were(digits):
    """The head product runs on one BLAS thread; the setting is restored afterwards."""
    from threadpoolctl import threadpool_info

    before = [(i["filepath"], i["num_threads"]) for i in threadpool_info()]
    _fit(digits).score(digits["test"])
    assert [(i["filepath"], i["num_threads"]) for i in threadpool_info()] == before

"""Logit-based post-hoc detectors (MSP, MaxLogit, energy, entropy, GEN, KL-Matching).

Data: ``digits_posthoc`` (tests/helpers.py): the ReLU features and output layer of a
small MLP trained on scikit-learn's bundled digits 0-4; digits 5-9 are OOD. Reference:
pytorch-ood 0.4.0 (float32, torch), run on the same features through the same head
wrapped in a ``torch.nn.Linear``; where pytorch-ood departs from the paper (entropy's and
GEN's probability clipping, GEN's mean), the comparison is restricted to the rows where
the departure is inactive and a float64 formula written here checks every row.
"""

from __future__ import annotations

import numpy as np
import pytest
from helpers import fit_both_precisions, fit_posthoc, pytorch_ood_detector
from scipy.special import logsumexp as sp_logsumexp
from scipy.special import rel_entr
from scipy.special import softmax as sp_softmax

from oddkit import detectors
from oddkit.detectors.posthoc import logit
from oddkit.detectors.posthoc.logit import GEN, Energy, KLMatching
from oddkit.errors import ParamError
from oddkit.metrics import auroc

NAMES = ["msp", "maxlogit", "energy", "entropy", "gen", "klmatching"]
#: float64 (ours) against float32 (pytorch-ood): what a float32 computation of these
#: O(10) logits meets.
RTOL, ATOL = 2e-5, 2e-5


# --------------------------------------------------------------------------- data
_fit = fit_posthoc


def _logits(digits, X):
    return X @ digits["W"].T + digits["b"]


# --------------------------------------------------------------------------- pytorch-ood
_pood = pytorch_ood_detector


def _torch_logits(digits, X, dtype: str = "float32"):
    torch = pytest.importorskip("torch")
    dt = getattr(torch, dtype)
    lin = torch.nn.Linear(digits["W"].shape[1], digits["W"].shape[0]).to(dt)
    with torch.no_grad():
        lin.weight.copy_(torch.as_tensor(digits["W"], dtype=dt))
        lin.bias.copy_(torch.as_tensor(digits["b"], dtype=dt))
        return lin(torch.as_tensor(X, dtype=dt))


def _reference(name, digits, X):
    """pytorch-ood's scores of ``X`` with the paper's settings (float64 numpy)."""
    z = _torch_logits(digits, X)
    if name == "msp":
        out = _pood("softmax").MaxSoftmax(None, t=1.0).predict_logits(z)
    elif name == "maxlogit":
        out = _pood("maxlogit").MaxLogit(None).predict_logits(z)
    elif name == "energy":
        out = _pood("energy").EnergyBased(None, t=1.0).predict_logits(z)
    elif name == "entropy":
        out = _pood("entropy").Entropy(None).predict_logits(z)
    elif name == "klmatching":
        ref = _pood("klmatching").KLMatching(None)
        ref.fit_logits(_torch_logits(digits, digits["Ftr"]))
        out = ref.predict_logits(z)
    else:
        raise KeyError(name)
    return out.detach().numpy().astype(np.float64)


@pytest.mark.parametrize("name", ["msp", "maxlogit", "energy", "entropy", "klmatching"])
def test_scores_equal_pytorch_ood(name, digits):
    X, y = digits["X"], digits["y"]
    ours = _fit(name, digits).score(X)
    ref = _reference(name, digits, X)
    np.testing.assert_allclose(ours, ref, rtol=RTOL, atol=ATOL)
    assert abs(auroc(y, ours) - auroc(y, ref)) < 1e-4


def test_energy_temperature_equals_pytorch_ood(digits):
    X = digits["X"]
    ours = _fit("energy", digits, temperature=3.0).score(X)
    z = _torch_logits(digits, X)
    ref = _pood("energy").EnergyBased(None, t=3.0).predict_logits(z).numpy()
    np.testing.assert_allclose(ours, ref, rtol=RTOL, atol=ATOL)


def test_gen_equals_pytorch_ood_where_its_clamp_is_inactive(digits):
    """pytorch-ood averages (we sum, as the paper) and clamps p to [1e-7, 1 - 1e-7]."""
    X, y = digits["X"], digits["y"]
    ours = _fit("gen", digits).score(X)
    z = _torch_logits(digits, X)
    ref = _pood("gen").GEN(None, gamma=0.1, M=100).predict_logits(z).numpy() * 5  # 5 classes
    p = sp_softmax(_logits(digits, X), axis=1)
    unclamped = (p.min(axis=1) > 1e-6) & (p.max(axis=1) < 1 - 1e-6)
    assert unclamped.mean() > 0.9  # the comparison covers most rows
    np.testing.assert_allclose(ours[unclamped], ref[unclamped], rtol=RTOL, atol=ATOL)
    assert abs(auroc(y[unclamped], ours[unclamped]) - auroc(y[unclamped], ref[unclamped])) < 1e-4
    # ... and on the clamped rows the clamp makes a visible difference
    assert np.abs(ours[~unclamped] - ref[~unclamped]).max() > 1e-2


@pytest.mark.parametrize("M", [100, 3, 1])
def test_gen_equals_pytorch_ood_in_float64(M, digits):
    """The same in float64, to 1e-10: with M = 1 only the top term ``(1 - p_max)^0.1``
    is left, which float32 cannot resolve for p_max close to 1."""
    X = digits["X"]
    ours = _fit("gen", digits, M=M).score(X)
    m = min(M, digits["W"].shape[0])
    z = _torch_logits(digits, X, "float64")
    ref = _pood("gen").GEN(None, gamma=0.1, M=M).predict_logits(z).numpy() * m
    p = sp_softmax(_logits(digits, X), axis=1)
    top = np.sort(p, axis=1)[:, ::-1][:, :m]
    unclamped = (top.min(axis=1) > 1e-7) & (top.max(axis=1) < 1 - 1e-7)
    assert unclamped.mean() > 0.9
    np.testing.assert_allclose(ours[unclamped], ref[unclamped], rtol=1e-10)


@pytest.mark.parametrize("gamma, M", [(0.1, 100), (0.5, 2), (2.0, 4)])
def test_gen_equals_the_papers_formula_on_every_row(gamma, M, digits):
    X = digits["X"]
    p = np.sort(sp_softmax(_logits(digits, X), axis=1), axis=1)[:, ::-1][:, :M]
    expected = (p**gamma * (1 - p) ** gamma).sum(axis=1)
    ours = _fit("gen", digits, gamma=gamma, M=M).score(X)
    np.testing.assert_allclose(ours, expected, rtol=1e-9, atol=1e-14)


def test_extreme_logits_keep_exact_values():
    """Logits (L, 0, 0) with L = 800: the softmax of the naive formulas is (1, 0, 0)."""
    L, gamma = 800.0, 0.1
    X = np.array([[L, 0.0, 0.0]])
    head = (np.eye(3), np.zeros(3))
    # log p_tail = -L - log(1 + 2 e^-L) = -L; log(1 - p_top) = log 2 - L (to 1e-300 relative)
    gen = GEN(gamma=gamma).fit(X, head=head).score(X)[0]
    expected = (2.0 + 2.0**gamma) * np.exp(-gamma * L)
    assert gen > 0 and gen == pytest.approx(expected, rel=1e-12)
    ent = detectors.create("entropy").fit(X, head=head).score(X)[0]
    assert ent == pytest.approx(2 * (L + 1) * np.exp(-L), abs=1e-300)  # = 0 to float64
    msp = detectors.create("msp").fit(X, head=head).score(X)[0]
    assert msp == -1.0
    energy = detectors.create("energy").fit(X, head=head).score(X)[0]
    assert energy == -L
    # KL to a template fitted on the same row is 0, finite although two p's underflow
    assert KLMatching().fit(X, head=head).score(X)[0] == pytest.approx(0.0, abs=1e-12)


# --------------------------------------------------------------------------- KL-Matching
def _kl_by_hand(P_fit, P_test, classes=None):
    pred = P_fit.argmax(axis=1)
    classes = np.unique(pred) if classes is None else classes
    templates = np.stack([P_fit[pred == k].mean(axis=0) for k in classes])
    kl = rel_entr(P_test[:, None, :], templates[None, :, :]).sum(axis=2)
    return kl.min(axis=1)


def test_klmatching_equals_the_papers_formula(digits):
    X = digits["X"]
    P_fit = sp_softmax(_logits(digits, digits["Ftr"]), axis=1)
    P_test = sp_softmax(_logits(digits, X), axis=1)
    det = _fit("klmatching", digits)
    np.testing.assert_array_equal(det.template_classes_, np.arange(5))
    np.testing.assert_allclose(det.score(X), _kl_by_hand(P_fit, P_test), rtol=1e-9, atol=1e-12)


def test_klmatching_class_without_predicted_rows_has_no_template(digits):
    """Fit on rows predicted as classes 0-2 only: classes 3 and 4 take no part in the min."""
    pred = _logits(digits, digits["Ftr"]).argmax(axis=1)
    rows = pred <= 2
    det = KLMatching().fit(digits["Ftr"][rows], head=digits["head"])
    np.testing.assert_array_equal(det.template_classes_, [0, 1, 2])
    assert det.log_templates_.shape == (3, 5)
    X = digits["X"]
    P_fit = sp_softmax(_logits(digits, digits["Ftr"][rows]), axis=1)
    P_test = sp_softmax(_logits(digits, X), axis=1)
    ours = det.score(X)
    np.testing.assert_allclose(ours, _kl_by_hand(P_fit, P_test), rtol=1e-9, atol=1e-12)
    # pytorch-ood skips such classes too
    ref = _pood("klmatching").KLMatching(None)
    ref.fit_logits(_torch_logits(digits, digits["Ftr"][rows]))
    theirs = ref.predict_logits(_torch_logits(digits, X)).numpy()
    np.testing.assert_allclose(ours, theirs, rtol=RTOL, atol=ATOL)
    # rows predicted as 3 or 4 now look far from every template
    test_pred = _logits(digits, X).argmax(axis=1)
    assert np.median(ours[test_pred >= 3]) > 10 * np.median(ours[test_pred <= 2])


def test_klmatching_fit_in_chunks_equals_one_pass(digits):
    one = _fit("klmatching", digits)
    chunked = KLMatching()
    chunked.score_chunk_rows = 7  # instance override: 65 chunks, classes spread over them
    chunked.fit(digits["Ftr"], head=digits["head"])
    np.testing.assert_allclose(chunked.log_templates_, one.log_templates_, rtol=1e-12, atol=1e-12)


# --------------------------------------------------------------------------- declaration (batch independence, chunking and save/load: tests/test_contract.py)
@pytest.mark.parametrize("name", NAMES)
def test_direction_auroc_on_digits(name, digits):
    s = _fit(name, digits).score(digits["X"])
    assert s.dtype == np.float64 and s.shape == (digits["X"].shape[0],) and np.isfinite(s).all()
    assert auroc(digits["y"], s) > 0.95, f"{name}: AUROC {auroc(digits['y'], s):.4f}"


@pytest.mark.parametrize("name", NAMES)
def test_registry_declaration(name):
    info = {i.name: i for i in detectors.list_detectors()}[name]
    assert info.family == "posthoc" and info.inputs == ("features", "head")
    assert info.reference and info.summary
    assert detectors.get(name).__module__ == logit.__name__


@pytest.mark.parametrize(
    "name, params",
    [
        ("energy", {"temperature": 0.0}),
        ("energy", {"temperature": -1.0}),
        ("energy", {"temperature": "1"}),
        ("energy", {"temperature": float("inf")}),
        ("gen", {"gamma": 0.0}),
        ("gen", {"gamma": -0.1}),
        ("gen", {"M": 0}),
        ("gen", {"M": 2.5}),
        ("gen", {"M": True}),
        ("msp", {"t": 2.0}),
    ],
)
def test_bad_params_raise_param_error(name, params):
    with pytest.raises(ParamError):
        detectors.create(name, **params)


def test_set_params_validates():
    det = Energy()
    with pytest.raises(ParamError, match="temperature"):
        det.set_params(temperature=-2.0)


def test_logit_helpers_agree_with_scipy(digits):
    z = _logits(digits, digits["X"]) * 30.0  # large logits: naive exp would overflow
    np.testing.assert_allclose(logit.energy(z, 2.0), -2.0 * sp_logsumexp(z / 2.0, axis=1), rtol=1e-13)
    np.testing.assert_allclose(logit.log_softmax(z), z - sp_logsumexp(z, axis=1)[:, None], rtol=1e-13, atol=1e-12)


# --------------------------------------------------------------------------- float32, class-major
def test_klmatching_templates_of_float32_and_float64_fits_agree(digits):
    f32, f64 = fit_both_precisions("klmatching", digits)
    np.testing.assert_array_equal(f32.template_classes_, f64.template_classes_)
    np.testing.assert_allclose(f32.log_templates_, f64.log_templates_, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_class_logits_are_the_transposed_logits(dtype, digits):
    det = _fit("energy", digits)
    X = digits["X"].astype(dtype)
    np.testing.assert_allclose(det._class_logits(X), det._logits(X).T, rtol=1e-12, atol=1e-12)
    W2 = digits["W"] * (np.arange(digits["W"].size).reshape(digits["W"].shape) % 3 == 0)
    scale = np.linspace(0.5, 2.0, X.shape[0])
    expected = (scale[:, None] * (X.astype(np.float64) @ W2.T) + digits["b"]).T
    rtol = 1e-5 if dtype == np.float32 else 1e-12
    ours = det._class_logits(X, W=W2, row_scale=scale)
    np.testing.assert_allclose(ours, expected, rtol=rtol, atol=1e-5)


def test_first_argmax_is_numpys_argmax_with_ties():
    rng = np.random.RandomState(0)
    for C in (2, 5, 70):
        z = rng.randint(0, 3, size=(C, 500)).astype(float)  # many ties at the maximum
        np.testing.assert_array_equal(logit.first_argmax(z, z.max(axis=0)), z.argmax(axis=0))


@pytest.mark.parametrize("offset", [0.0, 900.0, -900.0])  # no shift needed / needed (both signs)
def test_class_energy_is_the_energy(offset, digits):
    z = _logits(digits, digits["X"]) * 30.0 + offset
    for T in (1.0, 2.5):
        ours = logit.class_energy_(z.T.copy(), T)
        np.testing.assert_allclose(ours, logit.energy(z, T), rtol=1e-13)
    msp = detectors.create("msp").fit(digits["Ftr"], head=digits["head"])
    expected = -np.exp(z.max(axis=1) - sp_logsumexp(z, axis=1))
    ours = msp._score_class_logits(z.T.copy())
    np.testing.assert_allclose(ours, expected, rtol=1e-12, atol=1e-300)


def test_energy_and_msp_of_logits_whose_exp_underflows():
    """Terms below e^-708 are raised to it (a fast exp); no sum changes."""
    z = np.array(
        [[0.0, -5000.0, -800.0], [3000.0, 0.0, -3000.0], [-710.0, -720.0, -5.0], [1.0, 2.0, 3.0]]
    )
    ours = logit.class_energy_(z.T.copy())
    np.testing.assert_allclose(ours, -sp_logsumexp(z, axis=1), rtol=1e-15)
    msp = detectors.create("msp").fit(z, head=(np.eye(3), np.zeros(3)))
    np.testing.assert_allclose(msp.score(z), -sp_softmax(z, axis=1).max(axis=1), rtol=1e-15)


def test_gen_mixed_extreme_and_ordinary_rows_in_one_chunk():
    """Rows whose other-class mass underflows take the log-space path, the others not."""
    gamma, head = 0.1, (np.eye(3), np.zeros(3))
    X = np.array([[800.0, 0, 0], [1.0, 0, 0], [0, 0, 700.0], [3.0, 3.0, 0], [0, 40.0, 0]])
    scores = GEN(gamma=gamma).fit(X, head=head).score(X)
    closed = lambda L: (2.0 + 2.0**gamma) * np.exp(-gamma * L)  # logits (L, 0, 0)
    assert scores[0] == pytest.approx(closed(800.0), rel=1e-12)
    assert scores[2] == pytest.approx(closed(700.0), rel=1e-12)
    p = sp_softmax(X[[1, 3]], axis=1)  # no underflow, 1 - p exact enough
    np.testing.assert_allclose(scores[[1, 3]], (p**gamma * (1 - p) ** gamma).sum(axis=1), rtol=1e-9)
    # (0, 40, 0): 1 - p_top = 2e^-40 / (1 + 2e^-40), which 1 - p would round to 0
    t = 2 * np.exp(-40.0)
    p_tail = np.exp(-40.0) / (1 + t)
    expected = 2 * (p_tail * (1 - p_tail)) ** gamma + (t / (1 + t) ** 2) ** gamma
    assert scores[4] == pytest.approx(expected, rel=1e-12)
    # the same, one row at a time
    single = [GEN(gamma=gamma).fit(X, head=head).score(X[i : i + 1])[0] for i in range(len(X))]
    np.testing.assert_allclose(scores, single, rtol=1e-14)


def test_klmatching_fast_templates_equal_the_log_space_ones(digits):
    det = _fit("klmatching", digits)
    pred = _logits(digits, digits["Ftr"]).argmax(axis=1)
    counts = np.bincount(pred, minlength=5)[det.template_classes_]
    exact = det._log_template_sums(digits["Ftr"])[det.template_classes_] - np.log(counts)[:, None]
    np.testing.assert_allclose(det.log_templates_, exact, rtol=1e-12, atol=1e-12)


def test_klmatching_underflowing_template_switches_to_log_space():
    """A class whose rows all give another class probability ~e^-800: the log-space path."""
    head = (np.eye(3), np.zeros(3))
    X = np.array([[800.0, 0, 0], [810.0, 0, 0], [0, 2.0, 1.0], [0, 1.0, 0]])
    det = KLMatching().fit(X, head=head)
    lp = X - sp_logsumexp(X, axis=1, keepdims=True)
    pred = X.argmax(axis=1)
    for row, k in enumerate(det.template_classes_):
        expected = sp_logsumexp(lp[pred == k], axis=0) - np.log((pred == k).sum())
        np.testing.assert_allclose(det.log_templates_[row], expected, rtol=1e-12)
    assert np.isfinite(det.score(X)).all()
    assert det.score(X[:1])[0] == pytest.approx(0.0, abs=1e-9)  # close to its own template

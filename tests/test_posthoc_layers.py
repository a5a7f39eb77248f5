"""MahalanobisEnsemble (Lee et al. 2018 feature ensemble) and pooled multi-layer features."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import SHARED
from sklearn.linear_model import LogisticRegression

from oddkit import detectors
from oddkit.detectors.posthoc.layers import MahalanobisEnsemble
from oddkit.errors import FeatureMismatchError, InputError, ParamError
from oddkit.metrics import auroc


def _maha(d, X, y, Xs):
    """Plain Mahalanobis scores of ``Xs`` fitted on ``X`` (the reference per block)."""
    n_classes = int(y.max()) + 1
    m = detectors.create("mahalanobis").fit(X, y, head=(np.ones((n_classes, X.shape[1])), None))
    return m.score(X), m.score(Xs)


def test_each_block_is_a_standardised_mahalanobis_score(digits):
    X, y, T = digits["Ftr"], digits["ytr"], digits["test"]
    det = MahalanobisEnsemble(blocks=[20, 44]).fit(X, y)
    layers = det.layer_scores(T)
    for j, (lo, hi) in enumerate(((0, 20), (20, 64))):
        train, test = _maha(digits, X[:, lo:hi], y, T[:, lo:hi])
        np.testing.assert_allclose(layers[:, j], (test - train.mean()) / train.std(), rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(det.score(T), layers.sum(axis=1), rtol=1e-12)
    weighted = MahalanobisEnsemble(blocks=[20, 44], weights=[0.5, -2.0]).fit(X, y)
    np.testing.assert_allclose(weighted.score(T), layers @ [0.5, -2.0], rtol=1e-9, atol=1e-9)


def test_one_block_ranks_like_mahalanobis_and_detects_ood(digits):
    X, y, T = digits["Ftr"], digits["ytr"], digits["test"]
    one = MahalanobisEnsemble().fit(X, y).score(T)
    _, plain = _maha(digits, X, y, T)
    assert np.array_equal(np.argsort(one, kind="stable"), np.argsort(plain, kind="stable"))
    assert auroc(digits["is_ood"], one) > 0.9


def test_learned_weights_favour_the_informative_layer(digits):
    """A block of pure noise (same for ID and OOD) next to the real features: the logistic
    regression gives the real block the larger weight, and the weights equal scikit-learn's
    fit on the standardised layer scores."""
    rng = np.random.default_rng(0)
    X, y, T, is_ood = digits["Ftr"], digits["ytr"], digits["test"], digits["is_ood"]
    noise = lambda n: rng.normal(size=(n, 8))  # noqa: E731
    Xn, Tn = np.hstack([noise(len(X)), X]), np.hstack([noise(len(T)), T])
    det = MahalanobisEnsemble(blocks=[8, X.shape[1]]).fit(Xn, y)
    half = np.arange(len(T)) % 2 == 0  # validation half / test half
    val_id, val_ood = Tn[half & ~is_ood], Tn[half & is_ood]
    w = det.learn_weights(val_id, val_ood)
    assert w[1] > 0 and w[1] > abs(w[0])
    Z = np.vstack([det.layer_scores(val_id), det.layer_scores(val_ood)])
    ref = LogisticRegression(max_iter=1000).fit(Z, np.r_[np.zeros(len(val_id)), np.ones(len(val_ood))])
    np.testing.assert_allclose(w, ref.coef_[0], rtol=1e-6)
    tuned = MahalanobisEnsemble(blocks=[8, X.shape[1]], weights=w).fit(Xn, y)
    test = ~half
    assert auroc(is_ood[test], tuned.score(Tn[test])) >= auroc(is_ood[test], det.score(Tn[test])) - 0.01


def test_float32_features_give_the_same_scores(digits):
    X, y, T = digits["Ftr"], digits["ytr"], digits["test"]
    a = MahalanobisEnsemble(blocks=[32, 32]).fit(X, y).score(T)
    b = MahalanobisEnsemble(blocks=[32, 32]).fit(X.astype(np.float32), y).score(T.astype(np.float32))
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
    assert abs(auroc(digits["is_ood"], a) - auroc(digits["is_ood"], b)) < 1e-4


def test_save_load_round_trip(digits, tmp_path):
    det = MahalanobisEnsemble(blocks=[16, 48], weights=[1.0, 2.0]).fit(digits["Ftr"], digits["ytr"])
    det.save(tmp_path / "ens")
    back = detectors.load(tmp_path / "ens")
    assert back.get_params() == det.get_params()
    np.testing.assert_array_equal(back.score(digits["test"]), det.score(digits["test"]))


def test_bad_input_and_params(digits):
    X, y = digits["Ftr"], digits["ytr"]
    for bad in ([], [0, 64], [1.5], "64"):
        with pytest.raises(ParamError):
            MahalanobisEnsemble(blocks=bad)
    with pytest.raises(ParamError, match="one weight per block"):
        MahalanobisEnsemble(blocks=[32, 32], weights=[1.0])
    with pytest.raises(InputError, match="one weight per block"):
        MahalanobisEnsemble(weights=[1.0, 2.0]).fit(X, y)  # no blocks: one block
    with pytest.raises(InputError, match="add up to"):
        MahalanobisEnsemble(blocks=[32, 31]).fit(X, y)
    with pytest.raises(InputError, match="at least 2"):
        MahalanobisEnsemble().fit(X, np.zeros(len(X), int))
    with pytest.raises(InputError, match="labels"):
        MahalanobisEnsemble().fit(X)
    det = MahalanobisEnsemble(blocks=[32, 32]).fit(X, y)
    with pytest.raises(FeatureMismatchError, match="features"):
        det.layer_scores(X[:, :10])


# --------------------------------------------------------------------------- pooled layers
torch = pytest.importorskip("torch", reason="oddkit.features needs torch (pip install oddkit[vision])")


def test_pooled_layers_are_the_mean_pooled_stage_outputs():
    """The last block equals the penultimate features; each block is its layer's spatial
    mean (checked against a manual forward of the stages)."""
    from oddkit.features import create_backbone, extract, pooled_layers

    torch.manual_seed(0)
    bb = create_backbone("cifar_resnet20")
    pl = pooled_layers(bb)
    assert pl.widths == [16, 16, 32, 64] and "+pool(stem_relu,layer1,layer2,layer3)" in pl.name
    x = np.random.default_rng(0).integers(0, 256, (6, 32, 32, 3), dtype=np.uint8)
    a, b = extract(pl, x, progress=False), extract(bb, x, progress=False)
    np.testing.assert_array_equal(a.features[:, -64:], b.features)
    np.testing.assert_array_equal(a.logits, b.logits)
    m = bb.model
    with torch.inference_mode():
        h0 = torch.relu(m.bn1(m.conv1(bb.transform(x))))
        h1 = m.layer1(h0)
        h2 = m.layer2(h1)
    manual = torch.cat([h0.mean((2, 3)), h1.mean((2, 3)), h2.mean((2, 3))], 1).numpy()
    np.testing.assert_allclose(a.features[:, :64], manual, rtol=1e-5, atol=1e-6)
    with pytest.raises(ParamError, match="not a layer"):
        pooled_layers(bb, ["layer9"])
    with pytest.raises(ParamError, match="give the layers"):
        pooled_layers(type(bb)("other", bb.model, bb.transform, trunk=bb.model.forward_features,
                               fc=bb.model.linear, weights_hash="x"))
    with pytest.raises(ParamError, match="no linear head"):
        pl.head()


@pytest.mark.skipif(not (SHARED / "weights" / "cifar10_resnet20.th").is_file(), reason="needs ../shared/weights")
def test_pooled_layers_load_real_weights_and_separate_noise_from_cifar():
    """ResNet-20 with its CIFAR-10 weights: the ensemble over the four pooled layers
    separates uniform noise from CIFAR-10 test images."""
    from oddkit.data.ood_sets import uniform_ood
    from oddkit.features import create_backbone, extract, pooled_layers

    cifar = SHARED / "data" / "cifar10"
    if not cifar.is_dir():
        pytest.skip("needs ../shared/data/cifar10")
    from oddkit.data import ImageFolder

    pl = pooled_layers(create_backbone("cifar_resnet20", weights=SHARED / "weights" / "cifar10_resnet20.th"))
    train, test = ImageFolder(cifar / "train"), ImageFolder(cifar / "test")
    pick = lambda src, n: np.linspace(0, len(src) - 1, n).astype(int)  # noqa: E731 (every class)
    tr_idx = pick(train, 1000)
    Ftr = extract(pl, train.load(tr_idx), progress=False).features
    Fte = extract(pl, test.load(pick(test, 200)), progress=False).features
    noise = uniform_ood()
    Fno = extract(pl, noise.load(np.arange(200)), progress=False).features
    det = MahalanobisEnsemble(blocks=pl.widths).fit(Ftr, train.labels[tr_idx])
    s = np.r_[det.score(Fte), det.score(Fno)]
    assert auroc(np.r_[np.zeros(200), np.ones(200)], s) > 0.95

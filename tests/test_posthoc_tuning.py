"""oddkit.detectors.posthoc.tuning: grid search on validation data only.

Unit tests run on the real small classifier of ``helpers.digits_posthoc`` (digits 0-4 ID,
5-9 OOD; the OOD digits are split into a validation part and a test part). The
CIFAR-10 / ResNet-20 test extracts a small sample of real features (skipped without
../shared) and checks the whole path: stratified split on real labels, no false overlap
alarms on genuinely disjoint real features, a refusal when one test row is slipped in.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from helpers import digits_posthoc

from oddkit import detectors
from oddkit.bench.runner import parse_spec
from oddkit.detectors.posthoc.tuning import (
    DEFAULT_GRIDS,
    NOT_SWEPT,
    PROGRESS_MIN_POINTS,
    expand_grid,
    row_hashes,
    shared_rows,
    split_id_validation,
    tune,
)
from oddkit.errors import InputError, ParamError
from oddkit.metrics import auroc, fpr_at_tpr

SHARED = Path(__file__).resolve().parents[1].parent / "shared"


@pytest.fixture(scope="module")
def data():
    """digits_posthoc split into fit / ID-val / OOD-val / test parts (all disjoint)."""
    d = digits_posthoc()
    split = split_id_validation(d["Ftr"], d["ytr"], fraction=0.2, seed=0)
    food = d["Food"]
    return {
        "d": d,
        "split": split,
        "X_fit": split.X_fit,
        "y_fit": split.y_fit,
        "head": d["head"],
        "id_val": split.X_val,
        "ood_val": {"a": food[:200], "b": food[200:400]},
        "tests": {"id_test": d["Fid"], "ood_test": food[400:]},
    }


def _tune(data, name, grid=None, **kw):
    kw.setdefault("progress", False)
    return tune(name, data["X_fit"], data["y_fit"], data["head"], data["id_val"], data["ood_val"],
                grid=grid, test_sets=data["tests"], **kw)  # fmt: skip


def _val_auroc(det, data, ood):
    s_id = det.score(data["id_val"])
    s_ood = det.score(ood)
    return auroc(np.r_[np.zeros(s_id.size), np.ones(s_ood.size)], np.r_[s_id, s_ood])


# --------------------------------------------------------------------------- grids
@pytest.mark.parametrize("name", sorted(DEFAULT_GRIDS))
def test_default_grid_points_construct_and_contain_the_default(name) -> None:
    cls = detectors.get(name)
    grid = DEFAULT_GRIDS[name]
    assert set(grid) <= set(cls._param_names())
    points = expand_grid(name, grid)
    assert len(points) == math.prod(len(v) for v in grid.values())
    for params in points:
        det = detectors.create(name, **params)
        assert {k: det.get_params()[k] for k in params} == params
    defaults = {k: cls.default_params()[k] for k in grid}
    assert defaults in points, f"{name}: the default {defaults} is not in the grid"


def test_not_swept_names_real_parameters() -> None:
    for key in NOT_SWEPT:
        name, param = key.split(".")
        assert param in detectors.get(name)._param_names()
        assert name not in DEFAULT_GRIDS or param not in DEFAULT_GRIDS[name]


def test_grid_validation_names_the_parameters() -> None:
    with pytest.raises(ParamError, match=r"not parameters of ReAct.*\['percentile'\]"):
        expand_grid("react", {"percentil": [90]})
    with pytest.raises(ParamError, match="non-empty list"):
        expand_grid("react", {"percentile": 90})
    with pytest.raises(ParamError, match="non-empty list"):
        expand_grid("react", {"percentile": []})
    with pytest.raises(ParamError, match=r"react:percentile=150.*percentile must be <= 100"):
        expand_grid("react", {"percentile": [90, 150]})
    with pytest.raises(ParamError, match="no default grid for 'msp'"):
        expand_grid("msp", None)
    with pytest.raises(ParamError, match="no hyperparameters"):
        expand_grid("msp", {"temperature": [1.0]})


def test_grid_order_is_a_product_with_the_first_key_slowest() -> None:
    points = expand_grid("gen", {"gamma": [0.1, 1.0], "M": [3, 5]})
    assert points == [{"gamma": 0.1, "M": 3}, {"gamma": 0.1, "M": 5},
                      {"gamma": 1.0, "M": 3}, {"gamma": 1.0, "M": 5}]  # fmt: skip


# --------------------------------------------------------------------------- choice
@pytest.mark.parametrize("name", sorted(DEFAULT_GRIDS))
def test_chosen_point_is_the_first_argmax_of_the_table(data, name) -> None:
    result = _tune(data, name)
    values = np.array([p.value if p.ok else -np.inf for p in result.table])
    assert result.best_index == int(np.argmax(values))  # argmax returns the first maximum
    assert result.value == values.max()
    assert result.params == result.table[result.best_index].params
    assert result.table[result.best_index].ok
    # the value is really the mean validation AUROC of that configuration
    det = detectors.create(name, **result.params).fit(
        data["X_fit"], data["y_fit"] if "labels" in detectors.get(name).inputs else None, head=data["head"]
    )
    per_set = {k: _val_auroc(det, data, v) for k, v in data["ood_val"].items()}
    assert result.table[result.best_index].per_set == pytest.approx(per_set, abs=1e-12)
    assert result.value == pytest.approx(np.mean(list(per_set.values())), abs=1e-12)


def test_planted_bad_point_is_never_chosen(data) -> None:
    # percentile=0 clips every activation at the smallest training activation (0 after a
    # ReLU): every row gets the same logits, a constant score, AUROC exactly 0.5.
    result = _tune(data, "react", {"percentile": [0.0, 50.0, 90.0, 99.0]})
    assert result.table[0].value == 0.5
    assert result.params["percentile"] != 0.0
    assert result.value > 0.9
    # and a planted point that cannot fit (dim not below the 64-d width) is recorded, not chosen
    result = _tune(data, "vim", {"dim": [64, 1000, 16]})
    assert [p.ok for p in result.table] == [False, False, True]
    assert "ParamError" in result.table[0].error and "dim=64" in result.table[0].error
    assert math.isnan(result.table[0].value)
    assert result.params == {"dim": 16}


def test_ties_go_to_the_first_grid_point(data) -> None:
    # with 5 classes every M >= 5 is the same score: identical AUROCs
    result = _tune(data, "gen", {"M": [100, 5, 50], "gamma": [0.1]})
    assert len({p.value for p in result.table}) == 1
    assert result.params == {"M": 100, "gamma": 0.1}
    result = _tune(data, "gen", {"M": [50, 100, 5], "gamma": [0.1]})
    assert result.params["M"] == 50


def test_lower_is_better_metric_and_pooled_aggregate(data) -> None:
    grid = {"percentile": [50.0, 70.0, 90.0, 99.0]}
    result = _tune(data, "react", grid, metric="fpr95", aggregate="pooled")
    assert not result.higher_is_better
    values = [p.value for p in result.table]
    assert result.best_index == int(np.argmin(values))
    det = detectors.create("react", **result.params).fit(data["X_fit"], head=data["head"])
    s_id, s_ood = det.score(data["id_val"]), det.score(np.concatenate(list(data["ood_val"].values())))
    expected = fpr_at_tpr(np.r_[np.zeros(s_id.size), np.ones(s_ood.size)], np.r_[s_id, s_ood])
    assert result.value == pytest.approx(expected, abs=1e-12)
    with pytest.raises(ParamError, match="metric"):
        _tune(data, "react", grid, metric="accuracy")
    with pytest.raises(ParamError, match="aggregate"):
        _tune(data, "react", grid, aggregate="median")


def test_all_points_failing_raises(data) -> None:
    with pytest.raises(ParamError, match="every grid point failed"):
        _tune(data, "vim", {"dim": [64, 100]})
    with pytest.raises(InputError, match="every grid point failed"):
        _tune(data, "knn_ood", {"k": [5000, 10000]})  # more neighbours than fit rows


def test_fit_best_refits_with_the_chosen_params_and_spec_round_trips(data) -> None:
    d = data["d"]
    result = _tune(data, "knn_ood")
    det = result.fit_best(d["Ftr"], d["ytr"], head=data["head"])
    assert det.is_fitted and det.k == result.params["k"]
    assert det.train_features_.shape[0] == d["Ftr"].shape[0]  # all fit rows, validation included
    ref = detectors.create("knn_ood", **result.params).fit(d["Ftr"], head=data["head"])
    np.testing.assert_array_equal(det.score(d["test"]), ref.score(d["test"]))
    assert parse_spec(result.spec).params == result.params
    assert not result.detector().is_fitted
    rows = result.rows()
    assert sum(r["chosen"] for r in rows) == 1 and rows[result.best_index]["chosen"]
    assert rows[result.best_index]["auroc"] == result.value


# --------------------------------------------------------------------------- data rules
def test_refuses_validation_data_overlapping_test_sets(data) -> None:
    tests = data["tests"]
    grid = {"temperature": [1.0]}
    base = {"grid": grid, "progress": False}
    fit, y, head, id_val = data["X_fit"], data["y_fit"], data["head"], data["id_val"]
    # the test OOD set itself as validation OOD
    with pytest.raises(InputError, match=r"ood_val\['ood_test'\] is identical to test set 'ood_test'"):
        tune("energy", fit, y, head, id_val, {"ood_test": tests["ood_test"]}, test_sets=tests, **base)
    # one test row slipped into a validation set; the test set is float32 (as extracted
    # features are) and the validation set float64: an exact upcast is still the same row
    tests32 = {k: v.astype(np.float32) for k, v in tests.items()}
    sneaky = np.concatenate([data["ood_val"]["a"], tests32["ood_test"][7:8].astype(np.float64)])
    with pytest.raises(InputError, match=r"shares 1 of its 201 rows with test set 'ood_test' \(first rows \[200\]\)"):
        tune("energy", fit, y, head, id_val, {"a": sneaky}, test_sets=tests32, **base)
    # the ID test set used as ID validation; test sets given as a list or one array
    with pytest.raises(InputError, match="id_val is identical to test set"):
        tune("energy", fit, y, head, tests["id_test"], data["ood_val"], test_sets=[tests["id_test"]], **base)
    with pytest.raises(InputError, match="id_val shares 1 of"):
        tune("energy", fit, y, head, np.r_[id_val, tests["id_test"][:1]], data["ood_val"],
             test_sets=tests["id_test"], **base)  # fmt: skip
    # disjoint data passes; without test_sets nothing is compared
    assert tune("energy", fit, y, head, id_val, data["ood_val"], test_sets=tests, **base).params == grid_first(grid)
    assert tune("energy", fit, y, head, id_val, {"t": tests["ood_test"]}, **base).params == grid_first(grid)


def grid_first(grid):
    return {k: v[0] for k, v in grid.items()}


def test_id_validation_must_be_held_out_of_the_fit_rows(data) -> None:
    d = data["d"]
    grid = {"k": [1, 5]}
    # the ID validation rows inside the fit rows: k=1 would see distance 0 for each of them
    with pytest.raises(InputError, match=r"id_val shares 90 of its 90 rows with X_fit.*held out"):
        tune("knn_ood", d["Ftr"], d["ytr"], data["head"], data["id_val"], data["ood_val"], grid, progress=False)
    with pytest.raises(InputError, match="either id_val or holdout"):
        tune("knn_ood", d["Ftr"], d["ytr"], data["head"], data["id_val"], data["ood_val"], grid,
             holdout=0.2, progress=False)  # fmt: skip
    with pytest.raises(InputError, match="no ID validation data"):
        tune("knn_ood", d["Ftr"], d["ytr"], data["head"], None, data["ood_val"], grid, progress=False)
    with pytest.raises(InputError, match="cannot be ID data"):
        tune("knn_ood", data["X_fit"], data["y_fit"], data["head"], data["id_val"],
             {"x": data["X_fit"][:10]}, grid, progress=False)  # fmt: skip
    # holdout= splits the fit data exactly as split_id_validation does (same seed)
    held = tune("knn_ood", d["Ftr"], d["ytr"], data["head"], None, data["ood_val"], grid,
                holdout=0.2, seed=0, progress=False)  # fmt: skip
    explicit = _tune(data, "knn_ood", grid)
    assert [p.value for p in held.table] == [p.value for p in explicit.table]
    assert (held.n_fit, held.n_id_val) == (data["X_fit"].shape[0], data["id_val"].shape[0])


def test_inputs_are_checked_once(data) -> None:
    grid = {"temperature": [1.0]}
    with pytest.raises(InputError, match="has 10 features but X_fit has 64"):
        tune("energy", data["X_fit"], None, data["head"], data["id_val"], {"a": np.ones((5, 10))}, grid,
             progress=False)  # fmt: skip
    with pytest.raises(InputError, match="ood_val is empty"):
        tune("energy", data["X_fit"], None, data["head"], data["id_val"], {}, grid, progress=False)
    with pytest.raises(InputError, match="head"):
        tune("energy", data["X_fit"], None, None, data["id_val"], data["ood_val"], grid, progress=False)
    # one array as ood_val, no labels needed for a label-free detector
    result = tune("energy", data["X_fit"], None, data["head"], data["id_val"], data["ood_val"]["a"], grid,
                  progress=False)  # fmt: skip
    assert list(result.n_ood_val) == ["ood_val"]


def test_progress_callback_and_bar(data, capsys) -> None:
    lines: list[str] = []
    grid = {"gamma": [0.1, 1.0], "M": [5, 10]}
    _tune(data, "gen", grid, progress=lines.append)
    assert lines == [f"tune gen [{i}/4]: gen:gamma={g},M={m}" for i, (g, m) in
                     enumerate([(0.1, 5), (0.1, 10), (1.0, 5), (1.0, 10)], start=1)]  # fmt: skip
    assert len(expand_grid("gen", DEFAULT_GRIDS["gen"])) >= PROGRESS_MIN_POINTS
    _tune(data, "gen", progress=True)
    assert "tune gen" in capsys.readouterr().err
    _tune(data, "gen", grid, progress=True)  # a small grid: no bar
    assert "tune gen" not in capsys.readouterr().err


# --------------------------------------------------------------------------- split
def test_split_is_disjoint_stratified_and_seeded() -> None:
    d = digits_posthoc()
    X, y = d["Ftr"], d["ytr"]
    s = split_id_validation(X, y, fraction=0.1, seed=0)
    assert np.intersect1d(s.fit_index, s.val_index).size == 0
    np.testing.assert_array_equal(np.sort(np.r_[s.fit_index, s.val_index]), np.arange(len(y)))
    np.testing.assert_array_equal(s.X_val, X[s.val_index])
    np.testing.assert_array_equal(s.y_fit, y[s.fit_index])
    counts = np.bincount(y)
    np.testing.assert_array_equal(np.bincount(s.y_val, minlength=5), np.rint(0.1 * counts).astype(int))
    again = split_id_validation(X, y, fraction=0.1, seed=0)
    np.testing.assert_array_equal(again.val_index, s.val_index)
    other = split_id_validation(X, y, fraction=0.1, seed=1)
    assert not np.array_equal(other.val_index, s.val_index)
    assert not shared_rows(s.X_val, s.X_fit).any()
    plain = split_id_validation(X, None, fraction=0.25, seed=3)
    assert plain.y_fit is None and plain.val_index.size == round(0.25 * len(X))
    # tiny classes keep one row on each side; one-row classes cannot be stratified
    tiny = split_id_validation(X[:4], np.array([0, 0, 1, 1]), fraction=0.01)
    assert sorted(tiny.y_val.tolist()) == [0, 1]
    with pytest.raises(InputError, match="fewer than 2 rows"):
        split_id_validation(X[:3], np.array([0, 0, 1]))
    with pytest.raises(ParamError, match="fraction"):
        split_id_validation(X, y, fraction=1.0)


# --------------------------------------------------------------------------- row hashing
def test_row_hashes_and_shared_rows_are_exact() -> None:
    rng = np.random.default_rng(0)
    A = rng.normal(size=(3000, 16)).astype(np.float32)
    B = rng.normal(size=(2000, 16)).astype(np.float32)
    B[[5, 77, 1999]] = A[[10, 2000, 2999]]
    np.testing.assert_array_equal(row_hashes(A), row_hashes(A.astype(np.float64)))
    assert np.unique(row_hashes(A)).size == len(A)
    mask = shared_rows(A, B)
    brute = (A[:, None, :] == B[None, :, :]).all(axis=2).any(axis=1)
    np.testing.assert_array_equal(mask, brute)
    assert np.flatnonzero(mask).tolist() == [10, 2000, 2999]
    # signed zero is the same value; a one-ulp change or a column swap is a different row
    z = np.zeros((1, 4))
    assert shared_rows(-z, z).all()
    bumped = A[:1].copy()
    bumped[0, 3] = np.nextafter(bumped[0, 3], np.float32(np.inf))
    assert not shared_rows(bumped, A).any()
    assert not shared_rows(A[:1, ::-1], A).any()
    assert not shared_rows(A[:, :8], A).any()  # other width: nothing shared


# --------------------------------------------------------------------------- real features
@pytest.fixture(scope="module")
def resnet20_sample():
    weights = SHARED / "weights" / "cifar10_resnet20.th"
    if not (SHARED / "data" / "cifar10").is_dir() or not weights.is_file():
        pytest.skip(f"{SHARED} (CIFAR-10 and the ResNet-20 weights) is absent")
    pytest.importorskip("torch")
    from oddkit.data import ImageFolder
    from oddkit.data.ood_sets import load_validation_set, textures_ood
    from oddkit.features import create_backbone, extract

    bb = create_backbone("cifar_resnet20", weights=weights)
    train = ImageFolder(SHARED / "data" / "cifar10" / "train")
    test = ImageFolder(SHARED / "data" / "cifar10" / "test")
    tr_idx = np.arange(7, len(train), 25)  # 2,000 train images, 200 per class
    te_idx = np.arange(3, len(test), 20)  # 500 test images

    def feats(images):
        return extract(bb, images, progress=False).features

    val = {n: load_validation_set(n, train).images[:200] for n in ("jigsaw", "smooth_noise")}
    return {
        "X": feats(train.load(tr_idx)), "y": train.labels[tr_idx], "head": bb.head(),
        "test": feats(test.load(te_idx)), "textures": feats(textures_ood().images[:300]),
        "val": {n: feats(v) for n, v in val.items()},
    }  # fmt: skip


def test_resnet20_tuning_on_real_features(resnet20_sample) -> None:
    r = resnet20_sample
    split = split_id_validation(r["X"], r["y"], fraction=0.1, seed=0)
    assert np.bincount(split.y_val).tolist() == [20] * 10
    tests = {"id_test": r["test"], "textures": r["textures"]}
    result = tune("react", split.X_fit, split.y_fit, r["head"], split.X_val, r["val"], test_sets=tests,
                  progress=False)  # fmt: skip
    values = [p.value for p in result.table]
    assert all(p.ok for p in result.table) and result.best_index == int(np.argmax(values))
    assert result.value > 0.6  # the validation sets are OOD for this network
    # one real test row slipped into the ID validation rows is caught
    with pytest.raises(InputError, match="shares 1 of its 201 rows with test set 'id_test'"):
        tune("react", split.X_fit, split.y_fit, r["head"], np.r_[split.X_val, r["test"][42:43]], r["val"],
             test_sets=tests, progress=False)  # fmt: skip

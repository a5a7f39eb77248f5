"""The benchmark runner, results store, leaderboard and provenance, on real data.

Data: the bundled offline sets (scikit-learn's wine and breast-cancer measurements) and,
when ``../shared`` is present, small ADBench files (14_glass, 42_WBC, 21_Lymphography,
23_mammography). Expected metrics are recomputed independently with scikit-learn's
``train_test_split``, ``roc_auc_score`` and ``average_precision_score``.
"""

from __future__ import annotations

import json
import math
import re
import socket
import warnings
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score
from sklearn.model_selection import train_test_split

from oddkit import detectors
from oddkit.bench import collect, leaderboard, per_dataset, read_store, run_grid
from oddkit.bench.runner import parse_spec, parse_spec_list, parse_value, resolve_specs
from oddkit.bench.store import ResultStore, StoreError, StoreWarning, cell_key
from oddkit.data import load_bundled, load_table
from oddkit.detectors.base import Detector
from oddkit.errors import DataError, ParamError, UnknownDetectorError
from oddkit.protocols import ADBDev, get_protocol

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
ADB = SHARED / "data" / "adbench" / "classical"


@pytest.fixture(scope="module")
def wine():
    return load_bundled("wine")


@pytest.fixture(scope="module")
def cancer():
    return load_bundled("breast_cancer")


def _adb(name: str) -> Path:
    path = ADB / f"{name}.npz"
    if not path.is_file():
        pytest.skip(f"{path} is absent (needs ../shared with the ADBench files)")
    return path


def _direct_cell(X, y, seed: int, name: str, **params):
    """Protocol split + fit + score + metrics, written out with scikit-learn only."""
    if X.shape[0] > 10_000:
        X, _, y, _ = train_test_split(X, y, train_size=10_000, stratify=y, random_state=0)
    X_tr, X_te, _, y_te = train_test_split(X, y, test_size=0.3, stratify=y, random_state=seed)
    if detectors.get(name).randomized:
        params["random_state"] = seed
    scores = detectors.create(name, **params).fit(X_tr).score(X_te)
    return y_te, scores


# --------------------------------------------------------------------------- grid
def test_grid_cells_equal_a_direct_computation(tmp_path, wine, cancer):
    store = tmp_path / "results.jsonl"
    specs = ["hbos", "iforest:n_estimators=50"]
    cells = run_grid([wine, cancer], specs, [0, 1], protocol="ADB-dev", store_path=store,
                     progress=False, keep_scores=True)
    assert len(cells) == 2 * 2 * 2
    assert [c["status"] for c in cells] == ["ok"] * 8
    assert [(c["dataset"], c["seed"], c["detector"]) for c in cells[:3]] == [
        ("wine", 0, "hbos"), ("wine", 0, "iforest:n_estimators=50"), ("wine", 1, "hbos")]

    cell = next(c for c in cells if c["dataset"] == "breast_cancer" and c["seed"] == 1
                and c["detector"] == "iforest:n_estimators=50")
    y_te, scores = _direct_cell(cancer.X, cancer.y, 1, "iforest", n_estimators=50)
    np.testing.assert_array_equal(cell["scores"], scores)
    np.testing.assert_array_equal(cell["y_true"], y_te)
    assert cell["auroc"] == pytest.approx(roc_auc_score(y_te, scores), abs=1e-12)
    assert cell["aupr_out"] == pytest.approx(average_precision_score(y_te, scores), abs=1e-12)
    assert cell["aupr_in"] == pytest.approx(average_precision_score(1 - y_te, -scores), abs=1e-12)
    assert (cell["n_train"], cell["n_test"], cell["n_features"]) == (cancer.n_rows - len(y_te), len(y_te), 30)
    assert cell["params"]["n_estimators"] == 50 and "random_state" not in cell["params"]
    assert cell["dataset_fingerprint"] == cancer.fingerprint()
    assert cell["protocol"] == "ADB-dev" and cell["protocol_version"] == "1"
    assert cell["fit_seconds"] > 0 and cell["score_seconds"] > 0

    # everything returned is also in the store, one line per cell plus the header
    header, stored = read_store(store)
    assert header["protocol"] == "ADB-dev" and len(stored) == 8
    assert {cell_key(c) for c in stored} == {cell_key(c) for c in cells}
    assert not any("scores" in c for c in stored)  # arrays live beside the store, not in it


def test_adbench_files_through_the_runner(tmp_path):
    paths = [_adb("14_glass"), _adb("42_WBC"), _adb("21_Lymphography")]
    cells = run_grid(paths, ["hbos", "iforest"], [0], store_path=tmp_path / "r.jsonl", progress=False)
    assert len(cells) == 6 and all(c["status"] == "ok" for c in cells)
    table = load_table(paths[1])
    cell = next(c for c in cells if c["dataset"] == "42_WBC" and c["detector"] == "hbos")
    y_te, scores = _direct_cell(table.X, table.y, 0, "hbos")
    assert cell["auroc"] == pytest.approx(roc_auc_score(y_te, scores), abs=1e-12)
    assert cell["dataset_fingerprint"] == table.fingerprint()
    # WBC is an easy set: a working histogram detector ranks its anomalies high
    assert cell["auroc"] > 0.8


def test_protocol_cut_and_full_variant():
    table = load_table(_adb("23_mammography"))  # 11,183 rows > the 10,000-row cap
    cut = ADBDev().split_table(table, 2)
    full = ADBDev(full=True).split_table(table, 2)
    assert cut.X_train.shape[0] + cut.X_test.shape[0] == 10_000
    assert full.X_train.shape[0] + full.X_test.shape[0] == table.n_rows
    X, _, y, _ = train_test_split(table.X, table.y, train_size=10_000, stratify=table.y, random_state=0)
    _, X_te, _, _ = train_test_split(X, y, test_size=0.3, stratify=y, random_state=2)
    np.testing.assert_array_equal(cut.X_test, X_te)
    assert get_protocol("adb-dev-full").name == "ADB-dev-full"
    assert ADBDev().metadata()["protocol_version"] == "1"


def test_a_failing_detector_gives_an_error_cell_and_the_grid_goes_on(tmp_path, wine):
    store = tmp_path / "r.jsonl"
    # wine's train part has 46 rows: 60 bins per feature is fine, but gmm with 60
    # components cannot be fitted on 46 rows -> a typed error naming the minimum.
    cells = run_grid([wine], ["hbos", "gmm:n_components=60"], [0, 1], store_path=store, progress=False)
    bad = [c for c in cells if c["detector"].startswith("gmm")]
    good = [c for c in cells if c["detector"] == "hbos"]
    assert all(c["status"] == "error" and "at least" in c["error"] for c in bad)
    assert all(c["auroc"] is None for c in bad)
    assert all(c["status"] == "ok" for c in good)
    log = (tmp_path / "r.log").read_text()
    assert log.count("Traceback") == 2 and "gmm:n_components=60" in log
    board = {r["detector"]: r for r in leaderboard(cells)}
    assert board["gmm:n_components=60"]["n_errors"] == 2
    assert board["gmm:n_components=60"]["n_datasets"] == 0
    assert board["hbos"]["rank"] == 1


# --------------------------------------------------------------------------- resume
def test_resume_after_interruption_runs_only_missing_cells(tmp_path, monkeypatch, wine, cancer):
    store = tmp_path / "results.jsonl"
    grid = ([wine, cancer], ["hbos", "ecod", "iforest:n_estimators=20"], [0, 1])
    total = 2 * 3 * 2
    original_fit = Detector.fit
    calls = {"n": 0}

    def interrupted_fit(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] > 5:
            raise KeyboardInterrupt  # what Ctrl-C raises in the main thread
        return original_fit(self, *args, **kwargs)

    monkeypatch.setattr(Detector, "fit", interrupted_fit)
    with pytest.raises(KeyboardInterrupt):
        run_grid(*grid, store_path=store, progress=False)
    _, first = read_store(store)
    assert len(first) == 5  # every finished cell survived the interruption

    ran = []

    def counting_fit(self, *args, **kwargs):
        ran.append(self.name)
        return original_fit(self, *args, **kwargs)

    monkeypatch.setattr(Detector, "fit", counting_fit)
    messages = []
    cells = run_grid(*grid, store_path=store, progress=False, echo=messages.append)
    assert len(ran) == total - 5
    assert any("5 of 12 cells already done, 7 to run" in m for m in messages)
    assert len(cells) == total and all(c["status"] == "ok" for c in cells)
    _, stored = read_store(store)
    assert len(stored) == total and len({cell_key(c) for c in stored}) == total
    assert stored[:5] == first  # earlier lines untouched (append-only)

    ran.clear()
    run_grid(*grid, store_path=store, progress=False)
    assert ran == []  # a third run has nothing to do
    run_grid(*grid, store_path=store, progress=False, resume=False)
    assert len(ran) == total  # --no-resume re-runs everything
    assert len(ResultStore(store, protocol="ADB-dev", protocol_version="1")) == total


def test_truncated_last_line_is_ignored_and_repaired(tmp_path, wine):
    store = tmp_path / "r.jsonl"
    grid = ([wine], ["hbos", "ecod"], [0])
    run_grid(*grid, store_path=store, progress=False)
    lines = store.read_bytes().splitlines(keepends=True)
    assert len(lines) == 3  # header + 2 cells
    store.write_bytes(b"".join(lines[:-1]) + lines[-1][: len(lines[-1]) // 2])  # killed mid-write

    with pytest.warns(StoreWarning, match="truncated last line"):
        rs = ResultStore(store, protocol="ADB-dev", protocol_version="1")
    assert len(rs.done_keys()) == 1

    with pytest.warns(StoreWarning):
        cells = run_grid(*grid, store_path=store, progress=False, echo=lambda m: None)
    assert [c["status"] for c in cells] == ["ok", "ok"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the fragment was cut off: the file is clean again
        header, stored = read_store(store)
    assert len(stored) == 2 and store.read_bytes().endswith(b"\n")
    assert [json.loads(line)["record"] for line in store.read_text().splitlines()] == ["header", "cell", "cell"]


def test_damaged_line_in_the_middle_is_an_error(tmp_path, wine):
    store = tmp_path / "r.jsonl"
    run_grid([wine], ["hbos", "ecod"], [0], store_path=store, progress=False)
    lines = store.read_text().splitlines()
    lines[1] = lines[1][:20]
    store.write_text("\n".join(lines) + "\n")
    with pytest.raises(StoreError, match="line 2"):
        read_store(store)


def test_store_refuses_another_protocol_version(tmp_path, wine):
    store = tmp_path / "r.jsonl"
    run_grid([wine], ["hbos"], [0], store_path=store, progress=False)
    with pytest.raises(StoreError, match="ADB-dev v1.*different protocol versions"):
        ResultStore(store, protocol="ADB-dev", protocol_version="2")
    size = store.stat().st_size
    with pytest.raises(StoreError, match="ADB-dev-full"):
        run_grid([wine], ["hbos"], [0], protocol=ADBDev(full=True), store_path=store, progress=False)
    assert store.stat().st_size == size  # nothing was written
    rs = ResultStore(store, protocol="ADB-dev", protocol_version="1")
    cell = dict(rs.cells()[0], protocol_version="2")
    with pytest.raises(StoreError, match="cannot go into"):
        rs.append(cell)


# --------------------------------------------------------------------------- leaderboard
def _cell(det, ds, seed, auroc, status="ok", fit=1.0, score=0.5):
    return {"detector": det, "dataset": ds, "seed": seed, "status": status,
            "auroc": auroc if status == "ok" else None,
            "aupr_out": auroc / 2 if status == "ok" else None,
            "fit_seconds": fit, "score_seconds": score}


def test_leaderboard_means_over_seeds_first_then_data_sets():
    cells = [
        # A: d1 seeds (0.9, 0.7) -> 0.8; d2 three seeds of 0.6 -> 0.6; mean 0.7.
        # (Pooling all five cells would give 0.68: the order of means matters.)
        _cell("A", "d1", 0, 0.9), _cell("A", "d1", 1, 0.7),
        _cell("A", "d2", 0, 0.6), _cell("A", "d2", 1, 0.6), _cell("A", "d2", 2, 0.6),
        # B: d1 0.8 (ties with A), d2 0.5 -> mean 0.65
        _cell("B", "d1", 0, 0.8), _cell("B", "d1", 1, 0.8), _cell("B", "d2", 0, 0.5),
    ]
    board = leaderboard(cells)
    assert [r["detector"] for r in board] == ["A", "B"] and [r["rank"] for r in board] == [1, 2]
    a, b = board
    assert a["mean_auroc"] == pytest.approx(0.7) and b["mean_auroc"] == pytest.approx(0.65)
    assert a["std_auroc"] == pytest.approx(0.1) and b["std_auroc"] == pytest.approx(0.15)
    assert a["mean_aupr_out"] == pytest.approx(0.35)
    # ranks: d1 tie -> 1.5 each; d2 A=1, B=2
    assert a["mean_rank"] == pytest.approx(1.25) and b["mean_rank"] == pytest.approx(1.75)
    assert a["n_datasets"] == 2 and a["total_seconds"] == pytest.approx(5 * 1.5)
    assert a["n_errors"] == 0

    # C fails on one seed of d2: d2 no longer counts for mean_rank (only d1 does);
    # C's d2 value is the mean over its successful seed.
    cells += [_cell("C", "d1", 0, 0.95), _cell("C", "d1", 1, 0.85),
              _cell("C", "d2", 0, None, "error"), _cell("C", "d2", 1, 0.3)]
    board = {r["detector"]: r for r in leaderboard(cells)}
    assert [r["detector"] for r in leaderboard(cells)] == ["A", "B", "C"]
    assert board["C"]["mean_auroc"] == pytest.approx(0.6) and board["C"]["n_datasets"] == 2
    assert board["C"]["n_errors"] == 1 and board["C"]["total_seconds"] == pytest.approx(6.0)
    assert board["C"]["mean_rank"] == 1.0  # best on d1, the only complete data set
    assert board["A"]["mean_rank"] == 2.5 and board["B"]["mean_rank"] == 2.5
    # a detector that failed everywhere on d3 takes d3 out of the ranking too
    cells += [_cell("A", "d3", 0, 0.9), _cell("B", "d3", 0, 0.1), _cell("C", "d3", 0, None, "error")]
    board = {r["detector"]: r for r in leaderboard(cells)}
    assert board["C"]["mean_rank"] == 1.0 and board["C"]["n_datasets"] == 2
    assert board["A"]["n_datasets"] == 3 and board["A"]["mean_auroc"] == pytest.approx((0.8 + 0.6 + 0.9) / 3)

    rows = {(r["detector"], r["dataset"]): r for r in per_dataset(cells)}
    assert rows[("A", "d1")]["mean_auroc"] == pytest.approx(0.8)
    assert rows[("A", "d1")]["std_auroc"] == pytest.approx(0.1)
    assert rows[("A", "d2")]["n_seeds"] == 3
    assert rows[("C", "d2")]["n_ok"] == 1 and rows[("C", "d2")]["n_errors"] == 1
    assert rows[("C", "d2")]["mean_auroc"] == pytest.approx(0.3)
    assert rows[("C", "d3")]["n_ok"] == 0 and math.isnan(rows[("C", "d3")]["mean_auroc"])


def test_leaderboard_with_no_complete_data_set_has_nan_rank():
    cells = [_cell("A", "d1", 0, 0.7), _cell("B", "d1", 0, None, "error")]
    board = leaderboard(cells)
    assert [r["detector"] for r in board] == ["A", "B"]
    assert all(math.isnan(r["mean_rank"]) for r in board)
    assert math.isnan(board[1]["mean_auroc"])


# --------------------------------------------------------------------------- specs
def test_spec_parsing():
    spec = parse_spec("hbos")
    assert (spec.display, spec.name, spec.params) == ("hbos", "hbos", {})
    assert spec.resolved == detectors.get("hbos").default_params()

    spec = parse_spec("HBOS:n_bins=20, alpha=0.2")
    assert spec.name == "hbos" and spec.display == "hbos:n_bins=20,alpha=0.2"
    assert spec.params == {"n_bins": 20, "alpha": 0.2}
    assert type(spec.params["n_bins"]) is int and type(spec.params["alpha"]) is float

    assert parse_value("true") is True and parse_value("False") is False
    assert parse_value("none") is None and parse_value("1e-3") == 0.001
    assert parse_value("[1, 2]") == [1, 2] and parse_value("'7'") == "7"
    assert parse_value("auto") == "auto" and parse_value("inf") == "inf"

    specs = parse_spec_list("hbos:n_bins=20,alpha=0.2,iforest,ecod")
    assert [s.display for s in specs] == ["hbos:n_bins=20,alpha=0.2", "iforest", "ecod"]
    specs = parse_spec_list("ensemble:members=[\"iforest\",\"ecod\"],hbos")
    assert [s.name for s in specs] == ["ensemble", "hbos"]
    assert specs[0].params == {"members": ["iforest", "ecod"]}


@pytest.mark.parametrize(
    "text, error, match",
    [
        ("no_such_detector", UnknownDetectorError, "available: .*iforest"),
        ("hbos:", ParamError, "no parameters"),
        ("hbos:n_bins", ParamError, "key=value"),
        ("hbos:n_bins=3,n_bins=4", ParamError, "twice"),
        ("hbos:bogus=1", ParamError, "no parameter"),
        ("hbos:n_bins=-3", ParamError, "n_bins"),
        ("iforest:random_state=3", ParamError, "seed"),
        (":n_bins=3", ParamError, "no detector name"),
    ],
)
def test_spec_errors(text, error, match):
    with pytest.raises(error, match=match):
        parse_spec_list(text)


def test_same_configuration_twice_is_refused():
    default_bins = detectors.get("hbos").default_params()["n_bins"]
    with pytest.raises(ParamError, match="same configuration"):
        resolve_specs(["hbos", f"hbos:n_bins={default_bins}"])


def test_bad_specs_and_bad_files_fail_before_any_work(tmp_path, wine):
    store = tmp_path / "r.jsonl"
    with pytest.raises(UnknownDetectorError, match="available"):
        run_grid([wine], ["hbos", "nope"], [0], store_path=store, progress=False)
    assert not store.exists()

    good = tmp_path / "good.npz"
    np.savez(good, X=wine.X, y=wine.y)
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b,label\n1,2,0\n3,oops,1\n5,6,0\n")
    with pytest.raises(DataError, match="bad.csv"):
        run_grid([good, bad], ["hbos"], [0], store_path=store, progress=False)
    one_class = tmp_path / "one_class.npz"
    np.savez(one_class, X=wine.X, y=np.zeros(wine.n_rows, dtype=int))
    with pytest.raises(DataError, match="one_class.npz.*one class"):
        run_grid([good, one_class], ["hbos"], [0], store_path=store, progress=False)
    no_labels = tmp_path / "no_labels.npz"
    np.savez(no_labels, X=wine.X)
    with pytest.raises(DataError, match="no_labels.npz has no labels"):
        run_grid([good, no_labels], ["hbos"], [0], store_path=store, progress=False)
    with pytest.raises(DataError, match="same data"):
        run_grid([good, wine], ["hbos"], [0], store_path=store, progress=False)
    with pytest.raises(ParamError, match="seed"):
        run_grid([good], ["hbos"], [0, 0], store_path=store, progress=False)
    assert not store.exists()


# --------------------------------------------------------------------------- provenance
def test_provenance_is_complete_and_personal_data_free():
    prov = collect(protocol="ADB-dev", seeds=[0, 1, 2])
    assert prov["protocol"] == "ADB-dev" and prov["seeds"] == [0, 1, 2]
    assert prov["libraries"]["numpy"] == np.__version__
    import sklearn
    assert prov["libraries"]["scikit-learn"] == sklearn.__version__
    assert prov["libraries"]["faiss"] != "not installed"
    assert re.fullmatch(r"[0-9a-f]{40}|unknown", prov["git_commit"])
    assert prov["cpu_cores"] >= 1 and prov["gpu"] == "none"
    assert prov["oddkit_version"] and prov["python"].count(".") == 2
    text = json.dumps(prov)
    host = socket.gethostname()
    if len(host) >= 4:
        assert host not in text
    assert str(Path.home()) not in text

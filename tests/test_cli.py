"""The ``oddkit`` command through Typer's CliRunner, on real data written to tmp_path.

Data: the bundled offline sets (scikit-learn's wine and breast-cancer measurements).
"""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from oddkit import detectors
from oddkit.bench import read_store
from oddkit.cli import DEFAULT_EXCLUDED, app, default_detectors
from oddkit.data import load_bundled, load_table
from oddkit.errors import DataError

runner = CliRunner()


def _invoke(*args: str, env: dict | None = None):
    return runner.invoke(app, list(args), env=env)


def _read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _write_table_csv(path: Path, table, label: str | None = "label") -> Path:
    names = [f"f{j}" for j in range(table.n_features)]
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(names + ([label] if label else []))
        for i in range(table.n_rows):
            w.writerow([repr(float(v)) for v in table.X[i]] + ([int(table.y[i])] if label else []))
    return path


@pytest.fixture(scope="module")
def cancer_csv(tmp_path_factory):
    return _write_table_csv(tmp_path_factory.mktemp("data") / "cancer.csv", load_bundled("breast_cancer"))


def _assert_one_line_error(result, *fragments: str) -> None:
    assert result.exit_code == 2, result.output
    err = result.stderr.strip()
    assert err.startswith("error: ") and "\n" not in err, err
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in err, err


# --------------------------------------------------------------------------- demo
def test_demo_with_default_detectors_writes_a_report(tmp_path):
    out = tmp_path / "report"
    start = time.perf_counter()
    result = _invoke("demo", "--out", str(out), "--no-progress")
    seconds = time.perf_counter() - start
    assert result.exit_code == 0, result.output
    assert seconds < 60, f"demo took {seconds:.1f} s"
    for name in ("report.html", "results.csv", "leaderboard.csv", "leaderboard.md", "provenance.json"):
        assert (out / name).is_file(), name
    names = default_detectors()
    assert not set(DEFAULT_EXCLUDED) & set(names) and {"iforest", "ensemble"} <= set(names)
    # the leaderboard is printed, every default detector in it, best first
    board = _read_csv(out / "leaderboard.csv")
    assert {r["detector"] for r in board} == set(names)
    assert [int(r["rank"]) for r in board] == list(range(1, len(names) + 1))
    for row in board:
        assert row["detector"] in result.stdout
    assert "AUROC" in result.stdout and f"report: {out / 'report.html'}" in result.stdout
    results = _read_csv(out / "results.csv")
    assert len(results) == 3 * 3 * len(names)  # 3 data sets x 3 seeds
    assert {r["dataset"] for r in results} == {"breast_cancer", "digits", "wine"}
    assert all(r["status"] == "ok" for r in results), [r["error"] for r in results if r["error"]]
    # the detectors do their job on these easy sets
    assert float(board[0]["mean_auroc"]) > 0.85
    html = (out / "report.html").read_text()
    assert "<img" in html or "<svg" in html
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["protocol"] == "ADB-dev" and prov["seeds"] == [0, 1, 2]


def test_demo_rerun_starts_fresh(tmp_path):
    out = tmp_path / "r"
    for _ in range(2):
        result = _invoke("demo", "--out", str(out), "--no-progress", "--seeds", "0",
                         "--detectors", "hbos,ecod")
        assert result.exit_code == 0, result.output
    _, cells = read_store(out / "results.jsonl")
    assert len(cells) == 3 * 2  # the second run replaced the first one's store


# --------------------------------------------------------------------------- bench
def test_bench_tabular_is_resumable(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    for name in ("wine", "breast_cancer"):
        t = load_bundled(name)
        np.savez(data / f"{name}.npz", X=t.X, y=t.y)
    out = tmp_path / "bench"
    args = ("bench", "tabular", "--data", str(data), "--detectors", "hbos:n_bins=5,ecod",
            "--seeds", "0,1", "--out", str(out), "--no-progress")
    first = _invoke(*args)
    assert first.exit_code == 0, first.output
    assert "8 cells" in first.stdout and "hbos:n_bins=5" in first.stdout
    assert (out / "report.html").is_file() and (out / "results.csv").is_file()

    second = _invoke(*args)
    assert second.exit_code == 0, second.output
    assert "8 of 8 cells already done, 0 to run" in second.stdout
    _, cells = read_store(out / "results.jsonl")
    assert len(cells) == 8  # nothing ran again
    assert _read_csv(out / "leaderboard.csv") == _read_csv(out / "leaderboard.csv")

    (data / "broken.csv").write_text("a,b,label\n1,x,0\n")
    _assert_one_line_error(_invoke(*args), "broken.csv")


# --------------------------------------------------------------------------- detectors
def test_detectors_lists_the_registry():
    result = _invoke("detectors")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split()[:4] == ["name", "family", "inputs", "reference"]
    for info in detectors.list_detectors():
        line = next(l for l in lines if l.split()[0] == info.name)
        assert info.family in line and info.reference in line


# --------------------------------------------------------------------------- fit / score
def test_fit_score_round_trip_equals_the_python_api(tmp_path, cancer_csv):
    model = tmp_path / "model"
    fit = _invoke("fit", "--data", str(cancer_csv), "--detector", "hbos:n_bins=15",
                  "--out", str(model), "--calibrate", "0")
    assert fit.exit_code == 0, fit.output
    assert "labels found: fitting on the 357 normal rows of 397" in fit.stdout
    scores_csv = tmp_path / "s.csv"
    score = _invoke("score", "--model", str(model), "--data", str(cancer_csv), "--out", str(scores_csv))
    assert score.exit_code == 0, score.output
    rows = _read_csv(scores_csv)
    assert list(rows[0]) == ["row", "score"]  # not calibrated: no decisions

    table = load_table(cancer_csv)
    expected = detectors.create("hbos", n_bins=15).fit(table.X[table.y == 0]).score(table.X)
    got = np.array([float(r["score"]) for r in rows])
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(got, detectors.load(model).score(table.X))


def test_fit_with_calibration_writes_decisions_and_pvalues(tmp_path, cancer_csv):
    model = tmp_path / "model"
    fit = _invoke("fit", "--data", str(cancer_csv), "--detector", "gmm:n_components=2",
                  "--out", str(model), "--calibrate", "0.2", "--alpha", "0.1", "--seed", "3")
    assert fit.exit_code == 0, fit.output
    assert "calibrated on 71 held-out normal rows (alpha=0.1)" in fit.stdout
    det = detectors.load(model)
    assert det.random_state == 3 and det.calibration_alpha_ == 0.1
    # feature-only scoring file without the label column works too
    plain = _write_table_csv(tmp_path / "plain.csv", load_bundled("breast_cancer"), label=None)
    out = tmp_path / "s.csv"
    result = _invoke("score", "--model", str(model), "--data", str(plain), "--out", str(out))
    assert result.exit_code == 0, result.output
    rows = _read_csv(out)
    assert list(rows[0]) == ["row", "score", "is_anomaly", "p_value"]
    X = load_table(plain).X
    np.testing.assert_array_equal([int(r["is_anomaly"]) for r in rows], det.predict(X).astype(int))
    np.testing.assert_allclose([float(r["p_value"]) for r in rows], det.pvalues(X), rtol=0, atol=0)
    y = load_bundled("breast_cancer").y
    flagged = np.array([int(r["is_anomaly"]) for r in rows], dtype=bool)
    assert flagged[y == 1].mean() > flagged[y == 0].mean()  # it flags the malignant rows more


# --------------------------------------------------------------------------- errors
def test_missing_label_column_is_a_one_line_error(tmp_path, cancer_csv):
    result = _invoke("fit", "--data", str(cancer_csv), "--label", "no_such_column",
                     "--detector", "hbos", "--out", str(tmp_path / "m"))
    _assert_one_line_error(result, "no_such_column")
    assert not (tmp_path / "m").exists()


def test_unknown_detector_is_a_one_line_error(tmp_path, cancer_csv):
    result = _invoke("fit", "--data", str(cancer_csv), "--detector", "nosuch", "--out", str(tmp_path / "m"))
    _assert_one_line_error(result, "nosuch", "available", "iforest")
    result = _invoke("demo", "--out", str(tmp_path / "d"), "--detectors", "hbos,nosuch")
    _assert_one_line_error(result, "nosuch")


def test_non_numeric_csv_is_a_one_line_error(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b,label\n1.0,2.0,0\n3.0,hello,1\n")
    result = _invoke("fit", "--data", str(bad), "--detector", "hbos", "--out", str(tmp_path / "m"))
    _assert_one_line_error(result, "bad.csv")


def test_score_with_wrong_columns_and_missing_model(tmp_path, cancer_csv):
    model = tmp_path / "model"
    assert _invoke("fit", "--data", str(cancer_csv), "--detector", "ecod", "--out", str(model),
                   "--calibrate", "0").exit_code == 0
    other = tmp_path / "other.csv"
    other.write_text("x,y2\n1,2\n")
    _assert_one_line_error(_invoke("score", "--model", str(model), "--data", str(other)), "lacks 30 column")
    _assert_one_line_error(_invoke("score", "--model", str(tmp_path / "nope"), "--data", str(cancer_csv)),
                           "not a saved oddkit detector")


def test_debug_shows_the_exception(tmp_path, cancer_csv):
    args = ("fit", "--data", str(cancer_csv), "--label", "nope", "--detector", "hbos", "--out", str(tmp_path / "m"))
    result = runner.invoke(app, ["--debug", *args])
    assert result.exit_code != 0 and isinstance(result.exception, DataError)
    result = runner.invoke(app, list(args), env={"ODDKIT_DEBUG": "1"})
    assert isinstance(result.exception, DataError)
    result = runner.invoke(app, list(args), env={"ODDKIT_DEBUG": "0"})
    assert result.exit_code == 2


# --------------------------------------------------------------------------- shifts
def test_shifts_list_and_gallery(tmp_path):
    from PIL import Image

    listed = runner.invoke(app, ["shifts", "list"])
    assert listed.exit_code == 0, listed.output
    for name in ("gaussian_noise", "frost", "jpeg_compression", "rot90", "color_jitter"):
        assert f"\n{name} " in listed.output
    rng = np.random.default_rng(0)
    picture = (rng.random((40, 40, 3)) * 255).astype(np.uint8)
    Image.fromarray(picture).save(tmp_path / "in.png")
    out = tmp_path / "g.png"
    res = runner.invoke(
        app, ["shifts", "gallery", str(tmp_path / "in.png"), "--out", str(out), "--shifts", "fog,rot90,hflip"]
    )
    assert res.exit_code == 0, res.output
    with Image.open(out) as im:
        width, height = im.size
    assert width > height  # 3 rows x 6 columns (clean + 5 severities)
    bad = runner.invoke(app, ["shifts", "gallery", str(tmp_path / "in.png"), "--shifts", "fogg"])
    assert bad.exit_code != 0 and "Did you mean fog" in bad.output


def test_bench_shift_refuses_bad_input_before_work(tmp_path):
    res = runner.invoke(app, ["bench", "shift", "--protocol", "c10-x", "--out", str(tmp_path / "o")])
    assert res.exit_code != 0 and "c10-r" in res.output
    shared = Path(__file__).resolve().parents[2] / "shared"
    if not shared.is_dir():
        pytest.skip(f"{shared} is absent (../shared is not on this machine)")
    res = runner.invoke(
        app,
        ["bench", "shift", "--protocol", "c10-r", "--severities", "1,7", "--shared", str(shared), "--out",
         str(tmp_path / "o")],
    )  # fmt: skip
    assert res.exit_code != 0 and "severit" in res.output.lower()
    assert not (tmp_path / "o").exists()

"""The report writer on the results of a real, small benchmark run.

The run: scikit-learn's bundled breast-cancer and wine sets (real measurements), each
split per seed into normal training rows and a test set with anomalies; detectors are
scikit-learn's IsolationForest, a Mahalanobis distance (EmpiricalCovariance) and one that
always fails (to exercise the errors section, with HTML in its message). Metrics come
from scikit-learn, so the numbers in the report are real.
"""

from __future__ import annotations

import base64
import csv
import json
import math
import os
import re
import time

import numpy as np
import pytest
from sklearn.covariance import EmpiricalCovariance
from sklearn.datasets import load_breast_cancer, load_wine
from sklearn.ensemble import IsolationForest
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

import oddkit.report as report
from oddkit.report import LEADERBOARD_COLUMNS, RESULT_COLUMNS, leaderboard_text, write_report

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
EVIL = "could not fit: <script>alert('x')</script> & co"
SEEDS = (0, 1)


# ---------------------------------------------------------------- a real mini benchmark


def _datasets():
    X, y = load_breast_cancer(return_X_y=True)
    wine_X, wine_y = load_wine(return_X_y=True)
    return {
        "breast_cancer": (X, (y == 0).astype(int)),  # malignant = anomaly
        "wine": (wine_X, (wine_y == 2).astype(int)),  # cultivar 3 = anomaly
    }


def _split(X, y, seed):
    rng = np.random.RandomState(seed)
    normal = rng.permutation(np.flatnonzero(y == 0))
    train = normal[: len(normal) // 2]
    test = np.concatenate([normal[len(normal) // 2:], np.flatnonzero(y == 1)])
    mu, sd = X[train].mean(0), X[train].std(0) + 1e-12
    return (X[train] - mu) / sd, (X[test] - mu) / sd, y[test]


class _Broken:
    def fit(self, X):
        raise ValueError(EVIL)


DETECTORS = {
    "iforest(n=100)": (lambda seed: IsolationForest(n_estimators=100, random_state=seed),
                       {"n_estimators": 100}),
    "mahalanobis": (lambda seed: EmpiricalCovariance(), {}),
    "broken": (lambda seed: _Broken(), {"why": "test"}),
}


def _scores(model, X_train, X_test):
    model.fit(X_train)
    if isinstance(model, IsolationForest):
        return -model.score_samples(X_test)
    return model.mahalanobis(X_test)


def _metrics(y, s):
    fpr, tpr, _ = roc_curve(y, s)
    id_threshold = np.quantile(s[y == 0], 0.95)
    return {
        "auroc": roc_auc_score(y, s),
        "aupr_out": average_precision_score(y, s),
        "aupr_in": average_precision_score(1 - y, -s),
        "fpr95": float(np.mean(s[y == 1] <= id_threshold)),
        "detection_error": float(np.min(0.5 * (1 - tpr) + 0.5 * fpr)),
    }


def _run_cell(dataset, fingerprint, X, y, seed, name):
    make, params = DETECTORS[name]
    X_train, X_test, y_test = _split(X, y, seed)
    cell = {
        "protocol": "mini", "protocol_version": "1", "dataset": dataset,
        "dataset_fingerprint": fingerprint, "seed": seed, "detector": name, "params": params,
        "n_train": len(X_train), "n_test": len(X_test), "n_features": X.shape[1],
        "anomaly_rate": float(y_test.mean()),
    }
    nan_metrics = dict.fromkeys(("auroc", "aupr_out", "aupr_in", "fpr95", "detection_error"), math.nan)
    start = time.perf_counter()
    try:
        scores = _scores(make(seed), X_train, X_test)
    except Exception as exc:  # the runner's job: record the failure, keep going
        cell.update(status="error", error=str(exc), fit_seconds=math.nan, score_seconds=math.nan,
                    **nan_metrics)
        return cell, None
    elapsed = time.perf_counter() - start
    cell.update(status="ok", error=None, fit_seconds=elapsed, score_seconds=0.0, **_metrics(y_test, scores))
    return cell, (y_test, scores)


def _leaderboard(cells):
    """What the bench runner computes: per-data-set seed means, then over data sets."""
    names = list(dict.fromkeys(c["detector"] for c in cells))
    datasets = sorted({c["dataset"] for c in cells})
    per = {}
    for n in names:
        for d in datasets:
            ok = [c for c in cells if c["detector"] == n and c["dataset"] == d and c["status"] == "ok"]
            per[n, d] = (np.mean([c["auroc"] for c in ok]) if ok else math.nan,
                         np.mean([c["aupr_out"] for c in ok]) if ok else math.nan)
    ranks = {n: [] for n in names}
    for d in datasets:
        finite = sorted((n for n in names if math.isfinite(per[n, d][0])), key=lambda n: -per[n, d][0])
        for r, n in enumerate(finite, 1):
            ranks[n].append(r)
    rows = []
    for n in names:
        auc = np.array([per[n, d][0] for d in datasets])
        aupr = np.array([per[n, d][1] for d in datasets])
        mine = [c for c in cells if c["detector"] == n]
        finite = np.isfinite(auc)
        rows.append({
            "detector": n,
            "n_datasets": int(finite.sum()),
            "mean_auroc": float(auc[finite].mean()) if finite.any() else math.nan,
            "std_auroc": float(auc[finite].std()) if finite.any() else math.nan,
            "mean_aupr_out": float(aupr[finite].mean()) if finite.any() else math.nan,
            "mean_rank": float(np.mean(ranks[n])) if ranks[n] else math.nan,
            "total_seconds": float(np.nansum([c["fit_seconds"] for c in mine] + [c["score_seconds"] for c in mine])),
            "n_errors": sum(c["status"] != "ok" for c in mine),
        })
    rows.sort(key=lambda r: (not math.isfinite(r["mean_auroc"]), -np.nan_to_num(r["mean_auroc"], nan=0)))
    for i, r in enumerate(rows, 1):
        r["rank"] = i
    return rows


def _mini_run(datasets=None, detectors=tuple(DETECTORS)):
    cells, curves = [], {}
    for name, (X, y) in (datasets or _datasets()).items():
        fingerprint = f"{X.shape[0]}x{X.shape[1]}"
        for seed in SEEDS:
            for det in detectors:
                cell, pair = _run_cell(name, fingerprint, X, y, seed, det)
                cells.append(cell)
                if pair is not None and seed == SEEDS[0]:
                    curves.setdefault(name, {})[det] = pair
    return cells, _leaderboard(cells), curves


PROVENANCE = {
    "protocol": "mini", "protocol_version": "1", "oddkit_version": "0.1.0",
    "python": "3.11", "numpy": np.__version__, "cores": os.cpu_count(), "seeds": list(SEEDS),
    "note": "a <b>bold</b> claim",
}


@pytest.fixture(scope="module")
def run():
    return _mini_run()


@pytest.fixture(scope="module")
def written(run, tmp_path_factory):
    cells, board, curves = run
    out = tmp_path_factory.mktemp("report") / "nested" / "dir"  # created by write_report
    paths = write_report(out, title="Mini <bench>", cells=cells, leaderboard=board,
                         provenance=PROVENANCE, curves=curves)
    return out, paths, paths["html"].read_text(encoding="utf-8")


def _images(page: str) -> list[bytes]:
    return [base64.b64decode(b) for b in re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)]


def _png_size(png: bytes) -> tuple[int, int]:
    return int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")


def _section(page: str, table_id: str) -> str:
    start = page.index(f'<table id="{table_id}">')
    return page[start: page.index("</table>", start)]


# ---------------------------------------------------------------- tests


def test_the_run_is_real_and_sensible(run):
    cells, board, _ = run
    ok = [c for c in cells if c["status"] == "ok"]
    assert len(cells) == 2 * len(SEEDS) * 3 and len(ok) == 2 * len(SEEDS) * 2
    assert all(0.6 < c["auroc"] <= 1.0 for c in ok)  # both methods find these anomalies
    assert [r["detector"] for r in board][-1] == "broken"


def test_files_are_written_and_returned(written):
    out, paths, _ = written
    assert set(paths) == {"html", "results_csv", "leaderboard_csv", "leaderboard_md"}
    assert {p.name for p in paths.values()} == {"report.html", "results.csv", "leaderboard.csv", "leaderboard.md"}
    assert all(p.parent == out and p.stat().st_size > 0 for p in paths.values())
    assert sorted(os.listdir(out)) == sorted(p.name for p in paths.values())  # no temp files left


def test_html_lists_the_leaderboard_in_order_with_the_best_highlighted(written, run):
    _, _, page = written
    board = run[1]
    table = _section(page, "leaderboard")
    positions = [table.index(f"<td>{r['detector']}</td>") for r in board]
    assert positions == sorted(positions)
    first_row = table[table.index("<tr", table.index("<tbody>")):]
    assert first_row.startswith('<tr class="best">') and board[0]["detector"] in first_row.split("</tr>")[0]
    assert f"{board[0]['mean_auroc']:.3f}" in first_row.split("</tr>")[0]
    assert page.index('id="leaderboard"') < page.index("<img") < page.index('id="per-dataset"')
    assert page.index('id="per-dataset"') < page.index('id="errors"') < page.index('id="provenance"')


def test_embedded_images_are_png_and_the_page_is_self_contained(written):
    _, _, page = written
    images = _images(page)
    assert page.count("<img") == len(images) == 4  # bars, heatmap, time scatter, ROC
    assert all(png.startswith(PNG_SIGNATURE) for png in images)
    assert all(min(_png_size(png)) >= 200 for png in images)
    assert "http://" not in page and "https://" not in page
    assert "<link" not in page and "<script" not in page


def test_per_dataset_table_shows_seed_mean_and_std(written, run):
    _, _, page = written
    cells = run[0]
    aucs = [c["auroc"] for c in cells if c["detector"] == "mahalanobis" and c["dataset"] == "wine"]
    expected = f"{np.mean(aucs):.3f} \u00b1 {np.std(aucs):.3f}"
    table = _section(page, "per-dataset")
    wine_row = next(r for r in table.split("<tr>") if r.startswith("<td>wine</td>"))
    assert expected in wine_row and "failed" in wine_row  # the broken detector's column


def test_errors_are_listed_and_escaped(written, run):
    _, _, page = written
    errors = _section(page, "errors")
    n_failed = sum(c["status"] != "ok" for c in run[0])
    assert errors.count("<tr>") == n_failed + 1  # header + one row per failed cell
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; co" in errors
    assert "<script" not in page
    assert "Mini &lt;bench&gt;" in page and "a &lt;b&gt;bold&lt;/b&gt; claim" in page


def test_results_csv_has_one_row_per_cell_in_a_stable_column_order(written, run):
    _, paths, _ = written
    cells = run[0]
    with open(paths["results_csv"], newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
        handle.seek(0)
        header = next(csv.reader(handle))
    assert tuple(header) == RESULT_COLUMNS
    assert len(rows) == len(cells)
    for row, cell in zip(rows, cells):
        assert (row["dataset"], int(row["seed"]), row["detector"]) == (cell["dataset"], cell["seed"], cell["detector"])
        assert json.loads(row["params"]) == cell["params"]
        if cell["status"] == "ok":
            assert float(row["auroc"]) == cell["auroc"] and row["error"] == ""
        else:
            assert row["auroc"] == "" and row["error"] == EVIL


def test_leaderboard_csv_and_markdown(written, run):
    _, paths, _ = written
    board = run[1]
    with open(paths["leaderboard_csv"], newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
        assert tuple(rows[0]) == LEADERBOARD_COLUMNS
    assert [r["detector"] for r in rows] == [r["detector"] for r in board]
    assert float(rows[0]["mean_auroc"]) == board[0]["mean_auroc"]
    assert rows[-1]["mean_auroc"] == ""  # NaN for the detector that always failed
    md = paths["leaderboard_md"].read_text(encoding="utf-8").splitlines()
    assert len(md) == 2 + len(board)
    assert all(line.startswith("| ") and line.endswith(" |") for line in md)
    assert md[1].startswith("| ---: | :--- |")
    piped = report.leaderboard_markdown([{**board[0], "detector": "a|b"}]).splitlines()[2]
    assert "| a\\|b |" in piped and piped.count(" | ") == 8
    assert md[2].startswith(f"| 1 | {board[0]['detector']} | 2 | {board[0]['mean_auroc']:.3f} |")


def test_leaderboard_text_is_fixed_width(run):
    board = run[1]
    text = leaderboard_text(board)
    lines = text.splitlines()
    assert len(lines) == 2 + len(board)
    header = lines[0]
    auroc_end = header.index("AUROC") + len("AUROC")
    for line, row in zip(lines[2:], board):
        assert line.split()[1] == row["detector"]
        value = "\u2014" if math.isnan(row["mean_auroc"]) else f"{row['mean_auroc']:.3f}"
        assert line[auroc_end - len(value): auroc_end] == value  # right-aligned under its header
    assert "nan" not in text.lower()
    assert leaderboard_text([]).splitlines()[-1] == "(no results)"


def test_nan_metrics_in_ok_cells_show_as_missing(run, tmp_path):
    cells, board, _ = run
    cells = [dict(c) for c in cells]
    cells[0]["aupr_in"] = math.nan
    cells[0]["fpr95"] = None
    board = [dict(r) for r in board]
    board[0]["std_auroc"] = math.nan
    paths = write_report(tmp_path, title="nan", cells=cells, leaderboard=board, provenance={})
    page = paths["html"].read_text(encoding="utf-8")
    first = _section(page, "leaderboard").split("</tr>")[1]
    assert "\u2014" in first and "nan" not in first.lower()
    row = next(csv.DictReader(open(paths["results_csv"], newline="", encoding="utf-8")))
    assert row["aupr_in"] == "" and row["fpr95"] == ""
    assert len(_images(page)) == 3  # no curves given: no ROC figure


def test_zero_successful_cells_still_give_a_report(tmp_path):
    cells, board, _ = _mini_run(detectors=("broken",))
    paths = write_report(tmp_path / "r", title="all failed", cells=cells, leaderboard=board,
                         provenance=PROVENANCE, curves={})
    page = paths["html"].read_text(encoding="utf-8")
    assert "No cell finished successfully" in page
    assert "<img" not in page
    assert _section(page, "errors").count("&lt;script&gt;") == len(cells)
    assert sum(1 for _ in open(paths["results_csv"], encoding="utf-8")) == len(cells) + 1
    empty = write_report(tmp_path / "e", title="empty", cells=[], leaderboard=[], provenance={})
    assert "No cells were run" in empty["html"].read_text(encoding="utf-8")


def test_single_dataset_and_single_detector(tmp_path):
    X, y = load_breast_cancer(return_X_y=True)
    cells, board, curves = _mini_run({"breast_cancer": (X, (y == 0).astype(int))}, ("mahalanobis",))
    paths = write_report(tmp_path, title="one", cells=cells, leaderboard=board,
                         provenance=PROVENANCE, curves=curves)
    page = paths["html"].read_text(encoding="utf-8")
    images = _images(page)
    assert len(images) == 4 and all(png.startswith(PNG_SIGNATURE) for png in images)
    assert "No errors." in page
    assert board[0]["n_datasets"] == 1 and board[0]["std_auroc"] == 0.0


def test_heatmap_grows_with_many_datasets_and_rows_are_naturally_ordered(run, tmp_path):
    cells, _, _ = run
    many = []
    for k in range(37):  # 37 data sets, like the ADBench classical collection
        for c in cells:
            if c["dataset"] == "wine":
                many.append({**c, "dataset": f"{k + 1}_set"})
    board = _leaderboard(many)
    page = write_report(tmp_path, title="many", cells=many, leaderboard=board,
                        provenance={})["html"].read_text(encoding="utf-8")
    heat = _images(page)[1]
    width, height = _png_size(heat)
    assert width > 1400 and width > 2 * height
    table = _section(page, "per-dataset")
    assert table.index("<td>2_set</td>") < table.index("<td>10_set</td>")


def test_an_interrupted_write_keeps_the_previous_report(written, run, monkeypatch, tmp_path):
    cells, board, _ = run
    paths = write_report(tmp_path, title="first", cells=cells, leaderboard=board, provenance={})
    before = paths["html"].read_bytes()

    def fail(src, dst):
        raise KeyboardInterrupt

    monkeypatch.setattr(report.os, "replace", fail)
    with pytest.raises(KeyboardInterrupt):
        write_report(tmp_path, title="second", cells=cells[:2], leaderboard=board[:1], provenance={})
    assert paths["html"].read_bytes() == before
    assert not [n for n in os.listdir(tmp_path) if n.endswith(".tmp")]

"""Image OOD benchmarking: ``evaluate_posthoc``, the OOD report and ``oddkit bench ood``.

Data: the small real classifier of ``helpers.digits_posthoc`` (scikit-learn's bundled
handwritten digits; classes 0-4 in distribution, 5-9 OOD). Its ID test features are the
ID set, all OOD digits the "far" set and the first 150 of them a "near" set. The CLI runs
end to end with ``--protocol folders`` on a small ImageFolder tree of PNGs written to
tmp_path, with a CIFAR ResNet-20 of fixed random weights saved by ``torch.save``.
"""

from __future__ import annotations

import base64
import csv
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score
from typer.testing import CliRunner

from oddkit.cli import app
from oddkit.detectors import create, list_detectors
from oddkit.errors import InputError
from oddkit.metrics import evaluate
from oddkit.protocols import (
    DEFAULT_DETECTORS,
    LAYERED_DETECTORS,
    Layered,
    OODResult,
    OODSet,
    evaluate_posthoc,
    group_means,
    tune_detectors,
)
from oddkit.report.ood import (
    RESULT_COLUMNS,
    leaderboard_text,
    ood_leaderboard,
    write_ood_report,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
N_NEAR = 150
DETECTORS = ["msp", "energy", "mahalanobis", "vim"]
FAILING = ["nosuch", "vim:dim=1000"]  # an unknown name; a parameter this model cannot take


def _ood(d) -> dict[str, OODSet]:
    return {"near": OODSet(d["Food"][:N_NEAR], "near"), "far": OODSet(d["Food"], "far")}


@pytest.fixture(scope="module")
def result(digits) -> OODResult:
    specs = ["msp", "nosuch", "energy", "mahalanobis", "vim:dim=1000", "vim"]
    res = evaluate_posthoc(digits["Ftr"], digits["ytr"], digits["head"], digits["Fid"], _ood(digits), specs)
    res.info = {"protocol": "digits-test", "protocol_version": "1", "backbone": "mlp-64",
                "weights_hash": "ab" * 32, "id_accuracy": digits["acc"], "n_train": len(digits["Ftr"]),
                "n_id_test": len(digits["Fid"]), "ood_sizes": {"near": N_NEAR, "far": len(digits["Food"])}}
    return res


# --------------------------------------------------------------------------- evaluate_posthoc
def test_rows_hold_the_metrics_of_the_detectors_own_scores(digits, result):
    ok = [r for r in result.rows if not r["error"]]
    assert [(r["detector"], r["ood_set"]) for r in ok] == [(d, s) for d in DETECTORS for s in ("near", "far")]
    for r in ok:
        name = r["detector"]
        labels = (digits["ytr"],) if name == "mahalanobis" else ()
        det = create(name).fit(digits["Ftr"], *labels, head=digits["head"])
        s_id, s_ood = result.scores[name]["ID"], result.scores[name][r["ood_set"]]
        np.testing.assert_array_equal(s_id, det.score(digits["Fid"]))
        np.testing.assert_array_equal(s_ood, det.score(_ood(digits)[r["ood_set"]].features))
        y = np.r_[np.zeros(s_id.size, int), np.ones(s_ood.size, int)]
        s = np.r_[s_id, s_ood]
        m = evaluate(y, s)
        assert {k: r[k] for k in ("auroc", "fpr95", "aupr_in", "aupr_out")} == {
            k: m[k] for k in ("auroc", "fpr95", "aupr_in", "aupr_out")}
        assert r["auroc"] == pytest.approx(roc_auc_score(y, s), abs=1e-12)  # independent oracle
        assert r["aupr_out"] == pytest.approx(average_precision_score(y, s), abs=1e-12)
        assert (r["group"], r["n_id"], r["n_ood"]) == (r["ood_set"], len(digits["Fid"]), s_ood.size)
        assert r["fit_s"] >= 0 and r["score_s"] > 0
    assert all(r["auroc"] > 0.9 for r in ok if r["detector"] in ("energy", "vim"))  # OOD scores higher


def test_group_means_per_detector(result):
    means = {(g["detector"], g["group"]): g for g in group_means(result.rows)}
    rows = {(r["detector"], r["ood_set"]): r for r in result.rows}
    for det in DETECTORS:
        assert [k[1] for k in means if k[0] == det] == ["near", "far", "all"]
        for key in ("auroc", "fpr95", "aupr_in", "aupr_out"):
            assert means[det, "near"][key] == rows[det, "near"][key]
            assert means[det, "far"][key] == rows[det, "far"][key]
            assert means[det, "all"][key] == pytest.approx((rows[det, "near"][key] + rows[det, "far"][key]) / 2)
        assert (means[det, "near"]["n_sets"], means[det, "all"]["n_sets"]) == (1, 2)
    only_far = [r for r in result.rows if r["group"] == "far"]
    assert {g["group"] for g in group_means(only_far)} == {"far"}  # no "all" for a single group


def test_a_failing_detector_gives_error_rows_and_the_run_goes_on(result):
    failed = [r for r in result.rows if r["error"]]
    assert sorted({r["detector"] for r in failed}) == sorted(FAILING)
    assert len(failed) == 2 * len(FAILING)
    for r in failed:
        assert all(math.isnan(r[k]) for k in ("auroc", "fpr95", "aupr_in", "aupr_out", "fit_s"))
    messages = {r["detector"]: r["error"] for r in failed}
    assert messages["nosuch"].startswith("UnknownDetectorError:") and "available" in messages["nosuch"]
    assert messages["vim:dim=1000"].startswith("ParamError:") and "dim" in messages["vim:dim=1000"]
    assert set(result.scores) == set(DETECTORS)  # the detectors after the failures ran
    means = {(g["detector"], g["group"]): g for g in group_means(result.rows)}
    assert math.isnan(means["nosuch", "all"]["auroc"]) and "UnknownDetectorError" in means["nosuch", "all"]["error"]


def test_inputs_shared_by_every_detector_are_checked_once(digits):
    args = (digits["Ftr"], digits["ytr"], digits["head"], digits["Fid"])
    with pytest.raises(InputError, match="group"):
        evaluate_posthoc(*args, {"x": OODSet(digits["Food"], "medium")}, ["msp"])
    with pytest.raises(InputError, match="features"):
        evaluate_posthoc(*args, {"x": OODSet(digits["Food"][:, :10])}, ["msp"])
    with pytest.raises(InputError, match="twice"):
        evaluate_posthoc(*args, {"x": OODSet(digits["Food"])}, ["msp", "msp"])
    with pytest.raises(InputError, match="OOD set"):
        evaluate_posthoc(*args, {}, ["msp"])


def test_default_detectors_are_every_registered_posthoc_detector_on_features():
    """Every post-hoc detector that needs no network input (images) is in the default run."""
    registered = {i.name for i in list_detectors() if i.family == "posthoc" and "images" not in i.inputs}
    assert sorted(DEFAULT_DETECTORS) == sorted(registered)
    assert LAYERED_DETECTORS <= set(DEFAULT_DETECTORS)


def test_layered_detector_runs_on_layered_features_and_fails_clearly_without(digits):
    """mahalanobis_ensemble gets the layered sets (blocks filled in); without them its rows
    carry an error naming what is missing, and the other detectors still run."""
    args = (digits["Ftr"], digits["ytr"], digits["head"], digits["Fid"], _ood(digits))
    missing = evaluate_posthoc(*args, ["mahalanobis_ensemble", "energy"])
    errors = {r["detector"]: r["error"] for r in missing.rows}
    assert "several layers" in errors["mahalanobis_ensemble"] and errors["energy"] == ""
    half = digits["Ftr"].shape[1] // 2
    layered = Layered(digits["Ftr"], digits["Fid"], {k: o.features for k, o in _ood(digits).items()}, [half, half])
    res = evaluate_posthoc(*args, ["mahalanobis_ensemble"], layered=layered)
    assert all(r["error"] == "" for r in res.rows)
    assert min(r["auroc"] for r in res.rows) > 0.9


# --------------------------------------------------------------------------- report
def _images(html: str) -> list[bytes]:
    return [base64.b64decode(m) for m in re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)]


def test_leaderboard_is_sorted_by_mean_auroc_with_failures_last(result):
    board = ood_leaderboard(result.rows)
    means = {d: np.mean([r["auroc"] for r in result.rows if r["detector"] == d]) for d in DETECTORS}
    assert board.detectors[:4] == sorted(DETECTORS, key=lambda d: -means[d])
    assert sorted(board.detectors[4:]) == sorted(FAILING) and set(board.errors) == set(FAILING)
    assert [board.column_title(c) for c in board.columns] == [
        "near (near)", "far (far)", "near mean (1 set)", "far mean (1 set)", "all mean (2 sets)"]
    text = leaderboard_text(board)
    best = board.detectors[0]
    r_near = next(r for r in result.rows if r["detector"] == best and r["ood_set"] == "near")
    assert f"{r_near['auroc']:.3f} / {r_near['fpr95']:.3f}" in text.splitlines()[3]
    assert "failed detectors:" in text and "nosuch" in text


def test_report_files_tables_and_figures(tmp_path, result):
    paths = write_ood_report(result, tmp_path / "rep", "digits <OOD> test")
    assert {p.name for p in paths.values()} == {"report.html", "results.csv", "leaderboard.md", "provenance.json"}
    with open(paths["results_csv"], newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == len(result.rows) and tuple(rows[0])[: len(RESULT_COLUMNS)] == RESULT_COLUMNS
    by_key = {(r["detector"], r["ood_set"]): r for r in rows}
    assert float(by_key["energy", "far"]["auroc"]) == pytest.approx(
        next(r["auroc"] for r in result.rows if (r["detector"], r["ood_set"]) == ("energy", "far")))
    assert by_key["nosuch", "far"]["auroc"] == "" and "UnknownDetectorError" in by_key["nosuch", "far"]["error"]
    assert {r["protocol"] for r in rows} == {"digits-test"}

    html = paths["html"].read_text()
    for table in ("leaderboard-auroc", "leaderboard-fpr95", "leaderboard-aupr-in", "leaderboard-aupr-out",
                  "errors", "provenance"):
        assert f'<table id="{table}">' in html, table
    assert "digits &lt;OOD&gt; test" in html and "<OOD>" not in html
    assert "ID accuracy" in html and "mlp-64" in html and "abababababababab" in html
    images = _images(html)
    assert len(images) == 3 and all(png.startswith(PNG_SIGNATURE) for png in images)
    for fig in ("score-histograms", "roc", "auroc-heatmap"):
        assert f'id="fig-{fig}"' in html

    md = paths["leaderboard_md"].read_text()
    assert all(f"## {m}" in md for m in ("AUROC", "FPR95", "AUPR-In", "AUPR-Out"))
    assert md.count("| nosuch | failed |") == 4
    prov = json.loads(paths["provenance"].read_text())
    assert prov["protocol"] == "digits-test" and "oddkit_version" in prov


def test_report_for_one_detector_all_failed_and_nan(tmp_path, digits):
    args = (digits["Ftr"], digits["ytr"], digits["head"], digits["Fid"], _ood(digits))
    one = evaluate_posthoc(*args, ["energy"])
    html = write_ood_report(one, tmp_path / "one")["html"].read_text()
    assert len(_images(html)) == 3 and "No errors." in html

    failed = evaluate_posthoc(*args, ["nosuch"])
    paths = write_ood_report(failed, tmp_path / "failed")
    html = paths["html"].read_text()
    assert _images(html) == [] and "No detector finished" in html and "nosuch" in html
    assert paths["leaderboard_md"].is_file() and paths["results_csv"].is_file()

    nan_row = dict(one.rows[0], auroc=float("nan"))
    nan = OODResult([nan_row, one.rows[1]], one.scores, {"protocol": "nan-test"})
    paths = write_ood_report(nan, tmp_path / "nan")
    html = paths["html"].read_text()
    assert "\u2014" in html and len(_images(html)) == 3
    with open(paths["results_csv"], newline="") as fh:
        assert next(csv.DictReader(fh))["auroc"] == ""


# --------------------------------------------------------------------------- the CLI
runner = CliRunner()


def _png(path: Path, pixels: np.ndarray) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)


def _smooth(rng: np.random.RandomState, channel: int) -> np.ndarray:
    """A 32x32 image dominated by one colour channel, with a gradient and mild noise."""
    base = np.full((32, 32, 3), 40.0)
    base[..., channel] = 150 + 80 * np.linspace(0, 1, 32)[None, :] * rng.uniform(0.5, 1.0)
    return np.clip(base + rng.normal(0, 8, base.shape), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> Path:
    """train/{red,blue} (16 each), test/{red,blue} (8 each), ood/noise (loose files), near/green/."""
    torch = pytest.importorskip("torch", reason="oddkit.features needs torch (pip install oddkit[vision])")
    from oddkit.features import create_backbone

    root = tmp_path_factory.mktemp("ood-folders")
    rng = np.random.RandomState(0)
    for split, n in (("train", 16), ("test", 8)):
        for name, channel in (("red", 0), ("blue", 2)):
            for i in range(n):
                _png(root / split / name / f"{i:02d}.png", _smooth(rng, channel))
    for i in range(16):
        _png(root / "noise" / f"{i:02d}.png", rng.randint(0, 256, (32, 32, 3)).astype(np.uint8))
        _png(root / "near" / "green" / f"{i:02d}.png", _smooth(rng, 1))
    torch.manual_seed(0)
    model = create_backbone("cifar_resnet20", num_classes=2).model
    torch.save({"state_dict": model.state_dict()}, root / "resnet20_2class.th")
    config = {"backbone": "cifar_resnet20", "weights": "resnet20_2class.th", "train": "train",
              "test": "test", "ood": {"noise": "noise", "near": {"path": "near", "group": "near"}}}
    (root / "config.json").write_text(json.dumps(config))  # relative paths: to the file's folder
    return root


def _bench(folders: Path, out: Path, *extra: str):
    args = ["bench", "ood", "--protocol", "folders", "--config", str(folders / "config.json"),
            "--cache-dir", str(folders / "cache"), "--out", str(out), "--no-progress", *extra]
    return runner.invoke(app, args)


def test_cli_folders_end_to_end(tmp_path, folders):
    specs = "msp,energy,mahalanobis,knn_ood:k=5,vim:dim=1000"
    result = _bench(folders, tmp_path / "out", "--detectors", specs)
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert re.search(r"ID accuracy: \d+\.\d\d% \(cifar_resnet20, 16 ID test images", out)
    assert "near (near)" in out and "noise (far)" in out and "all mean (2 sets)" in out
    assert "vim:dim=1000: ParamError" in out
    lines = out.splitlines()
    table = lines[lines.index(next(ln for ln in lines if ln.startswith("AUROC / FPR95 per OOD set"))) + 3:]
    assert table[0].split()[1] != "vim:dim=1000" and any("vim:dim=1000" in ln and "failed" in ln for ln in table)
    files = {p.name for p in (tmp_path / "out").iterdir()}
    assert {"results.csv", "leaderboard.md", "report.html", "provenance.json"} <= files
    with open(tmp_path / "out" / "results.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 5 * 2 and {r["group"] for r in rows} == {"near", "far"}
    noise = {r["detector"]: float(r["auroc"]) for r in rows if r["ood_set"] == "noise" and not r["error"]}
    assert noise["mahalanobis"] > 0.9 and noise["knn_ood:k=5"] > 0.9  # noise is far from smooth colours
    prov = json.loads((tmp_path / "out" / "provenance.json").read_text())
    assert prov["protocol"] == "folders" and prov["ood_sizes"] == {"noise": 16, "near": 16}
    assert not any(prov["from_cache"].values())

    again = _bench(folders, tmp_path / "again", "--detectors", "msp")
    assert again.exit_code == 0, again.output
    prov = json.loads((tmp_path / "again" / "provenance.json").read_text())
    assert all(prov["from_cache"].values())  # second run: every set from the feature cache


def test_cli_folders_runs_odin_on_images_and_the_layer_ensemble_on_pooled_layers(tmp_path, folders):
    """ODIN scores the images through the network; mahalanobis_ensemble gets the pooled
    features of the CIFAR ResNet's four layers (16+16+32+64 columns)."""
    result = _bench(folders, tmp_path / "out", "--detectors", "odin,mahalanobis_ensemble,msp")
    assert result.exit_code == 0, result.output
    with open(tmp_path / "out" / "results.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert {r["detector"] for r in rows} == {"odin", "mahalanobis_ensemble", "msp"}
    assert all(r["error"] == "" for r in rows), [r["error"] for r in rows if r["error"]]
    noise = {r["detector"]: float(r["auroc"]) for r in rows if r["ood_set"] == "noise"}
    assert noise["mahalanobis_ensemble"] > 0.9
    prov = json.loads((tmp_path / "out" / "provenance.json").read_text())
    assert prov["detectors"] == ["odin", "mahalanobis_ensemble", "msp"]


def test_tune_detectors_chooses_on_validation_data_only(digits):
    """Plain names with a grid become tuned specs, given parameters are kept, the layer
    ensemble gets learned weights, and validation data equal to a test set is refused."""
    X, y, head, T = digits["Ftr"], digits["ytr"], digits["head"], digits["test"]
    is_ood = digits["is_ood"].astype(bool)
    half = np.arange(len(T)) % 2 == 0
    val_ood = {"val": T[half & is_ood]}
    tests = {"test": T[~half]}
    h = X.shape[1] // 2
    layered = Layered(X, T[~half], {}, [h, h])
    specs, record = tune_detectors(
        ["react", "energy:temperature=2.0", "msp", "mahalanobis_ensemble"], X, y, head, val_ood, tests,
        layered, val_ood,
    )
    assert specs[0].startswith("react:percentile=") and specs[1:3] == ["energy:temperature=2.0", "msp"]
    assert re.fullmatch(r"mahalanobis_ensemble:weights=\[[-\d.e,]+\]", specs[3])
    assert record["choices"]["react"]["spec"] == specs[0]
    chosen = [r for r in record["choices"]["react"]["table"] if r["chosen"]]
    assert len(chosen) == 1 and chosen[0]["auroc"] == max(r["auroc"] for r in record["choices"]["react"]["table"])
    res = evaluate_posthoc(X, y, head, T[~half], {"ood": OODSet(T[~half & is_ood])}, specs[3:], layered=Layered(
        X, T[~half & ~is_ood], {"ood": T[~half & is_ood]}, [h, h]))
    assert res.rows[0]["error"] == "" and res.rows[0]["auroc"] > 0.9
    with pytest.raises(InputError):
        tune_detectors(["react"], X, y, head, {"val": T[~half]}, tests)


def test_cli_errors_are_one_line(tmp_path, folders):
    cases = [
        (["bench", "ood", "--shared", str(tmp_path / "nope")], "shared folder"),
        (["bench", "ood", "--protocol", "folders"], "--config"),
        (["bench", "ood", "--protocol", "imagenet"], "--protocol must be one of"),
        (["bench", "ood", "--protocol", "folders", "--config", str(folders / "config.json"), "--tune"],
         "--tune applies"),
        (["bench", "ood", "--protocol", "folders", "--config", str(folders / "config.json"), "--detectors", "knn"],
         "not post-hoc"),
        (["bench", "ood", "--protocol", "folders", "--config", str(folders / "config.json"), "--detectors", "nosuch"],
         "no detector named 'nosuch'"),
        (["bench", "ood", "--protocol", "folders", "--config", str(tmp_path / "missing.json")], "could not read"),
    ]
    for args, fragment in cases:
        result = runner.invoke(app, args)
        assert result.exit_code == 2, (args, result.output)
        err = result.stderr.strip()
        assert err.startswith("error: ") and "\n" not in err and fragment in err, (args, err)

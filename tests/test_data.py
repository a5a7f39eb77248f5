"""oddkit.data: file formats, label handling, error messages, bundled sets, ADB-dev splits.

Round trips write real data (scikit-learn's bundled wine / breast-cancer measurements) to
tmp_path in every supported format and read it back; the ADB-dev tests use the ADBench
files in ../shared (skipped with a reason when absent).
"""

from __future__ import annotations

import csv
import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from sklearn.datasets import load_wine
from sklearn.model_selection import train_test_split

import oddkit.data.tabular as tabular
from oddkit.data import (
    Table,
    adb_dev_cut,
    adb_dev_split,
    list_bundled,
    load_bundled,
    load_folder,
    load_table,
    stratified_split,
)
from oddkit.errors import DataError

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
ADBENCH = SHARED / "data" / "adbench" / "classical"
HAS_PYARROW = importlib.util.find_spec("pyarrow") is not None
HAS_H5PY = importlib.util.find_spec("h5py") is not None
needs_pyarrow = pytest.mark.skipif(
    not HAS_PYARROW, reason="pyarrow not installed (optional extra oddkit[parquet])"
)


def adbench_files() -> list[Path]:
    if not ADBENCH.is_dir():
        pytest.skip(f"ADBench files not found at {ADBENCH} (../shared is absent)")
    return sorted(ADBENCH.glob("*.npz"))


@pytest.fixture(scope="module")
def wine() -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Wine measurements; class 2 (48 of 178 rows) as the 'anomaly' label."""
    data = load_wine()
    return data.data, (data.target == 2).astype(np.int64), list(data.feature_names)


def write_csv(
    path: Path, header: list[str], rows: list[list[object]], delimiter: str = ","
) -> Path:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle, delimiter=delimiter)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def write_table(
    path: Path,
    X: np.ndarray,
    y: np.ndarray | None,
    names: list[str],
    label_at: int | None,
    label_name: str = "label",
    delimiter: str = ",",
) -> Path:
    """Write X (and y at column position label_at) as delimited text with repr() floats."""
    cells = [[repr(float(v)) for v in row] for row in X]
    header = list(names)
    if y is not None and label_at is not None:
        header.insert(label_at, label_name)
        for row, value in zip(cells, y):
            row.insert(label_at, str(int(value)))
    return write_csv(path, header, cells, delimiter)


# --------------------------------------------------------------------------- round trips
def test_npz_round_trip(tmp_path, wine):
    X, y, _ = wine
    np.savez(tmp_path / "wine.npz", X=X, y=y)
    table = load_table(tmp_path / "wine.npz")
    assert table.X.dtype == np.float64 and table.y.dtype == np.int64
    np.testing.assert_array_equal(table.X, X)
    np.testing.assert_array_equal(table.y, y)
    assert (table.name, table.n_rows, table.n_features) == ("wine", 178, 13)
    assert table.anomaly_rate == pytest.approx(48 / 178)
    assert table.source == str((tmp_path / "wine.npz").resolve())
    assert load_table(tmp_path / "wine.npz", name="w").name == "w"


def test_npz_without_labels_and_integer_features(tmp_path, wine):
    X, _, _ = wine
    np.savez(tmp_path / "ints.npz", X=np.round(X).astype(np.int16))
    table = load_table(tmp_path / "ints.npz")
    assert table.y is None and table.anomaly_rate is None and not table.single_class
    assert table.X.dtype == np.float64
    np.testing.assert_array_equal(table.X, np.round(X))


def test_npz_label_array_by_name_and_off(tmp_path, wine):
    X, y, _ = wine
    np.savez(tmp_path / "t.npz", X=X, target=y.astype(bool), y=np.zeros_like(y))
    np.testing.assert_array_equal(load_table(tmp_path / "t.npz", label="target").y, y)
    assert load_table(tmp_path / "t.npz", label=False).y is None


def test_mat_v5_round_trip(tmp_path, wine):
    X, y, _ = wine
    scipy.io.savemat(tmp_path / "wine.mat", {"X": X, "y": y.reshape(-1, 1).astype(float)})
    table = load_table(tmp_path / "wine.mat")
    np.testing.assert_array_equal(table.X, X)
    np.testing.assert_array_equal(table.y, y)
    assert table.y.shape == (178,)


def _write_mat_v73(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """A MATLAB v7.3 file: HDF5 with a 512-byte user block holding MATLAB's header."""
    import h5py

    with h5py.File(path, "w", userblock_size=512) as handle:
        for key, value in arrays.items():
            handle.create_dataset(key, data=np.asarray(value).T)  # MATLAB is column-major
    header = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: test HDF5 schema 1.00 ."
    with open(path, "r+b") as handle:
        handle.write(header.ljust(116, b" ") + b"\x00" * 8 + b"\x00\x02IM")


@pytest.mark.skipif(not HAS_H5PY, reason="h5py not installed (optional, for MATLAB v7.3 files)")
def test_mat_v73_round_trip(tmp_path, wine):
    X, y, _ = wine
    _write_mat_v73(tmp_path / "v73.mat", {"X": X, "y": y.reshape(-1, 1).astype(float)})
    table = load_table(tmp_path / "v73.mat")
    np.testing.assert_array_equal(table.X, X)
    np.testing.assert_array_equal(table.y, y)


def test_mat_v73_without_h5py_says_how_to_install(tmp_path, monkeypatch):
    header = b"MATLAB 7.3 MAT-file, Platform: GLNXA64".ljust(116, b" ")
    (tmp_path / "v73.mat").write_bytes(header + b"\x00" * 8 + b"\x00\x02IM" + b"\x00" * 512)
    monkeypatch.setitem(sys.modules, "h5py", None)  # import h5py -> ImportError
    with pytest.raises(DataError, match=r"v7\.3.*pip install h5py"):
        load_table(tmp_path / "v73.mat")


@pytest.mark.parametrize("spec", ["label", 5, -9, None])
def test_csv_label_by_name_index_and_auto(tmp_path, wine, spec):
    X, y, names = wine
    path = write_table(tmp_path / "wine.csv", X, y, names, label_at=5)
    table = load_table(path, label=spec)
    np.testing.assert_array_equal(table.X, X)
    np.testing.assert_array_equal(table.y, y)
    assert table.feature_names == names


@pytest.mark.parametrize("column", ["LABEL", "y", "Class", "outlier", "anomaly", "is_anomaly"])
def test_csv_auto_detects_label_names(tmp_path, wine, column):
    X, y, names = wine
    path = write_table(tmp_path / "w.csv", X, y, names, label_at=13, label_name=column)
    np.testing.assert_array_equal(load_table(path).y, y)


def test_csv_without_label_column_and_label_false(tmp_path, wine):
    X, y, names = wine
    assert load_table(write_table(tmp_path / "a.csv", X, None, names, None)).y is None
    table = load_table(write_table(tmp_path / "b.csv", X, y, names, label_at=0), label=False)
    assert table.y is None and table.n_features == 14 and table.feature_names[0] == "label"


def test_tsv_and_sniffed_txt(tmp_path, wine):
    X, y, names = wine
    tsv = load_table(write_table(tmp_path / "w.tsv", X, y, names, label_at=13, delimiter="\t"))
    np.testing.assert_array_equal(tsv.X, X)
    np.testing.assert_array_equal(tsv.y, y)
    txt = load_table(write_table(tmp_path / "w.txt", X, y, names, label_at=13, delimiter=";"))
    np.testing.assert_array_equal(txt.X, X)
    np.testing.assert_array_equal(txt.y, y)


def test_csv_tolerates_bom_quotes_spaces_and_blank_lines(tmp_path):
    text = '\ufeff"a", b ,label\n\n 1.5 ,"2",o\n3,4e-1, n \n\n'
    (tmp_path / "x.csv").write_text(text, encoding="utf-8")
    table = load_table(tmp_path / "x.csv")
    np.testing.assert_array_equal(table.X, [[1.5, 2.0], [3.0, 0.4]])
    np.testing.assert_array_equal(table.y, [1, 0])
    assert table.feature_names == ["a", "b"]


def test_csv_is_parsed_in_chunks(tmp_path, wine, monkeypatch):
    X, y, names = wine
    path = write_table(tmp_path / "w.csv", X, y, names, label_at=13)
    monkeypatch.setattr(tabular, "_CSV_CHUNK_ROWS", 7)  # 178 rows -> 26 chunks
    table = load_table(path)
    np.testing.assert_array_equal(table.X, X)
    np.testing.assert_array_equal(table.y, y)
    rows = [[repr(float(v)) for v in X[i, :2]] for i in range(30)]
    rows[3][1] = ""
    rows[20][0] = "NA"
    rows[25][1] = "?"
    with pytest.raises(DataError, match=r"3 missing.*'alcohol' \(1\), 'malic_acid' \(2\)"):
        load_table(write_csv(tmp_path / "m.csv", names[:2], rows))


@needs_pyarrow
def test_parquet_round_trip(tmp_path, wine):
    import pyarrow as pa
    import pyarrow.parquet as pq

    X, y, names = wine
    columns = {n: X[:, j] for j, n in enumerate(names)}
    columns["n_int"] = np.arange(178, dtype=np.int32)
    columns["status"] = np.where(y == 1, "anomaly", "normal")
    pq.write_table(pa.table(columns), tmp_path / "wine.parquet")
    table = load_table(tmp_path / "wine.parquet", label="status")
    np.testing.assert_array_equal(table.X[:, :13], X)
    np.testing.assert_array_equal(table.X[:, 13], np.arange(178))
    np.testing.assert_array_equal(table.y, y)
    assert table.feature_names == names + ["n_int"]


@needs_pyarrow
def test_parquet_errors(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"a": [1.0, 2.0], "city": ["Oslo", "Rome"]}), tmp_path / "t.parquet")
    pattern = r"'city' \(e\.g\. 'Oslo', 'Rome'\).*drop these columns or encode"
    with pytest.raises(DataError, match=pattern):
        load_table(tmp_path / "t.parquet")
    pq.write_table(pa.table({"a": [1.0, None, 3.0], "label": [0, 1, 0]}), tmp_path / "n.parquet")
    with pytest.raises(DataError, match=r"1 missing.*'a' \(1\)"):
        load_table(tmp_path / "n.parquet")


def test_parquet_without_pyarrow_says_how_to_install(tmp_path, monkeypatch):
    (tmp_path / "t.parquet").write_bytes(b"PAR1 not really")
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    with pytest.raises(DataError, match=r"pip install 'oddkit\[parquet\]'"):
        load_table(tmp_path / "t.parquet")


# --------------------------------------------------------------------------- label values
@pytest.mark.parametrize(
    ("anomaly", "normal"),
    [
        ("o", "n"),
        ("yes", "no"),
        ("Anomaly", "normal"),
        ("outlier", "inlier"),
        ("True", "False"),
        ("1.0", "0.0"),
        ("abnormal", "normal"),
    ],
)
def test_text_label_pairs(tmp_path, anomaly, normal):
    rows = [[1.0, anomaly], [2.0, normal], [3.0, normal]]
    table = load_table(write_csv(tmp_path / "l.csv", ["f", "label"], rows))
    np.testing.assert_array_equal(table.y, [1, 0, 0])


def test_bool_labels_in_npz(tmp_path):
    np.savez(tmp_path / "b.npz", X=np.eye(3), y=np.array([True, False, False]))
    np.testing.assert_array_equal(load_table(tmp_path / "b.npz").y, [1, 0, 0])


@pytest.mark.parametrize(
    ("values", "pattern"),
    [
        (["2", "4", "4"], r"found 2 distinct value\(s\): '2', '4'.*Encode them as 0/1"),
        (["-1", "1", "1"], r"scikit-learn's prediction coding"),
        (["cat", "dog", "dog"], r"'cat', 'dog'.*recognised pair"),
        (["0", "1", "2"], r"found 3 distinct"),
    ],
)
def test_bad_label_values_are_refused(tmp_path, values, pattern):
    rows = [[float(i), v] for i, v in enumerate(values)]
    with pytest.raises(DataError, match=pattern):
        load_table(write_csv(tmp_path / "bad.csv", ["f", "class"], rows))


def test_missing_and_non_binary_labels_in_arrays(tmp_path):
    np.savez(tmp_path / "m.npz", X=np.eye(3), y=np.array([0.0, np.nan, 1.0]))
    with pytest.raises(DataError, match=r"1 label\(s\).*missing"):
        load_table(tmp_path / "m.npz")
    np.savez(tmp_path / "c.npz", X=np.eye(3), y=np.array([0, 1, 3]))
    with pytest.raises(DataError, match=r"0, 1, 3"):
        load_table(tmp_path / "c.npz")


def test_single_class_loads_and_is_flagged(tmp_path, wine):
    X, y, _ = wine
    np.savez(tmp_path / "normal.npz", X=X[y == 0], y=y[y == 0])
    table = load_table(tmp_path / "normal.npz")
    assert table.single_class and table.anomaly_rate == 0.0 and table.n_anomalies == 0
    two = write_csv(tmp_path / "two.csv", ["f", "y"], [[1, 0], [2, 1]])
    assert not load_table(two).single_class


# --------------------------------------------------------------------------- errors
def test_missing_file(tmp_path):
    with pytest.raises(DataError, match=r"No such data file: .*nope\.csv.*Check the path"):
        load_table(tmp_path / "nope.csv")


@pytest.mark.parametrize("suffix", [".npz", ".mat", ".csv", ".parquet"])
def test_empty_file(tmp_path, suffix):
    (tmp_path / f"e{suffix}").write_bytes(b"")
    with pytest.raises(DataError, match=r"is empty \(0 bytes\)"):
        load_table(tmp_path / f"e{suffix}")


def test_header_only_and_blank_csv(tmp_path):
    (tmp_path / "h.csv").write_text("a,b,label\n")
    with pytest.raises(DataError, match="header row but no data rows"):
        load_table(tmp_path / "h.csv")
    (tmp_path / "blank.csv").write_text("\n\n")
    with pytest.raises(DataError, match="only blank lines"):
        load_table(tmp_path / "blank.csv")


def test_unknown_suffix_and_folder_given_as_file(tmp_path):
    (tmp_path / "x.xlsx").write_bytes(b"abc")
    with pytest.raises(DataError, match=r"Unsupported file type '\.xlsx'.*\.npz, \.mat, \.csv"):
        load_table(tmp_path / "x.xlsx")
    with pytest.raises(DataError, match="is a folder; use load_folder"):
        load_table(tmp_path)


def test_named_label_column_missing_lists_columns(tmp_path):
    path = write_csv(tmp_path / "t.csv", ["alpha", "beta"], [[1, 2]])
    pattern = r"No column named 'target'.*Available columns: 'alpha', 'beta'"
    with pytest.raises(DataError, match=pattern):
        load_table(path, label="target")
    with pytest.raises(DataError, match=r"label=7 is out of range.*2 columns"):
        load_table(path, label=7)
    with pytest.raises(DataError, match=r"label must be a column name"):
        load_table(path, label=True)


def test_several_auto_label_columns_is_ambiguous(tmp_path):
    path = write_csv(tmp_path / "t.csv", ["f", "label", "class"], [[1, 0, 1]])
    with pytest.raises(DataError, match=r"Several columns.*'label', 'class'.*pass label="):
        load_table(path)
    assert load_table(path, label="label").feature_names == ["f", "class"]


def test_non_numeric_feature_columns(tmp_path):
    rows = [
        [1.0, "red", "2020-01-01", 0],
        [2.0, "blue", "2020-01-02", 1],
        [3.0, "red", "2020-01-03", 0],
    ]
    path = write_csv(tmp_path / "t.csv", ["x", "colour", "date", "label"], rows)
    pattern = (
        r"2 feature column\(s\).*'colour' \(e\.g\. 'blue', 'red'\); "
        r"'date' \(e\.g\. '2020-01-01'.*drop these columns or encode"
    )
    with pytest.raises(DataError, match=pattern):
        load_table(path)


def test_nan_and_empty_cells_are_reported_not_imputed(tmp_path):
    rows = [[1.0, "", 0], ["nan", 2.0, 1], [3.0, "inf", 0], [4.0, 5.0, 0]]
    path = write_csv(tmp_path / "t.csv", ["a", "b", "label"], rows)
    pattern = r"3 missing or non-finite.*'a' \(1\), 'b' \(2\).*does not impute"
    with pytest.raises(DataError, match=pattern):
        load_table(path)
    np.savez(tmp_path / "n.npz", X=np.array([[1.0, np.nan], [2.0, 3.0]]))
    with pytest.raises(DataError, match=r"1 missing or non-finite.*column 1 \(1\)"):
        load_table(tmp_path / "n.npz")


def test_ragged_csv_row(tmp_path):
    (tmp_path / "r.csv").write_text("a,b\n1,2\n3\n")
    with pytest.raises(DataError, match=r"Data row 2 .* has 1 fields but the header has 2"):
        load_table(tmp_path / "r.csv")


def test_npz_without_x_and_bad_shapes(tmp_path):
    np.savez(tmp_path / "nox.npz", data=np.eye(3), y=np.zeros(3))
    with pytest.raises(DataError, match=r"no array named 'X' \(found: 'data', 'y'\).*np\.savez"):
        load_table(tmp_path / "nox.npz")
    np.savez(tmp_path / "one_d.npz", X=np.arange(5.0))
    with pytest.raises(DataError, match=r"must be 2-D.*shape \(5,\).*reshape"):
        load_table(tmp_path / "one_d.npz")
    np.savez(tmp_path / "short_y.npz", X=np.eye(4), y=np.array([0, 1, 0]))
    with pytest.raises(DataError, match="y has 3 labels but X has 4 rows"):
        load_table(tmp_path / "short_y.npz")
    np.savez(tmp_path / "text.npz", X=np.array([["a", "b"]]))
    with pytest.raises(DataError, match="must be numeric"):
        load_table(tmp_path / "text.npz")
    with pytest.raises(DataError, match=r"No array named 'target'.*'X'"):
        load_table(tmp_path / "short_y.npz", label="target")


def test_corrupt_files(tmp_path):
    (tmp_path / "c.npz").write_bytes(b"this is not a zip archive")
    with pytest.raises(DataError, match=r"Could not read .* as a \.npz archive"):
        load_table(tmp_path / "c.npz")
    (tmp_path / "c.mat").write_bytes(b"\x01" * 200)
    with pytest.raises(DataError, match="MATLAB"):
        load_table(tmp_path / "c.mat")


# --------------------------------------------------------------------------- folders
def test_load_folder_sorted_and_filtered(tmp_path):
    for name in ["b.npz", "a.csv", "c.mat", "d.parquet", "notes.md"]:
        (tmp_path / name).write_bytes(b"x")
    assert [p.name for p in load_folder(tmp_path)] == ["a.csv", "b.npz", "c.mat", "d.parquet"]
    assert [p.name for p in load_folder(tmp_path, "*.npz")] == ["b.npz"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"No data files matching \['\*\.npz'"):
        load_folder(tmp_path / "empty")
    with pytest.raises(DataError, match="No such folder"):
        load_folder(tmp_path / "missing")


def test_all_adbench_files_load():
    files = adbench_files()
    assert len(files) == 37
    assert load_folder(ADBENCH, "*.npz") == files
    for path in files:
        table = load_table(path)
        assert table.X.ndim == 2 and table.X.dtype == np.float64, path.name
        assert np.isfinite(table.X).all(), path.name
        assert set(np.unique(table.y).tolist()) == {0, 1}, path.name
        assert table.n_rows == table.y.shape[0]


# --------------------------------------------------------------------------- splits
@pytest.mark.parametrize(("file", "seed"), [("23_mammography.npz", 1), ("6_cardio.npz", 2)])
def test_adb_dev_split_is_sklearns_two_step_split(file, seed):
    adbench_files()
    table = load_table(ADBENCH / file)
    X, y = table.X, table.y
    if X.shape[0] > 10_000:
        X, _, y, _ = train_test_split(X, y, train_size=10_000, stratify=y, random_state=0)
    expected = train_test_split(X, y, test_size=0.3, stratify=y, random_state=seed)
    got = adb_dev_split(table.X, table.y, seed)
    for a, b in zip(got, expected):
        np.testing.assert_array_equal(a, b)
    assert got[0].shape[0] + got[1].shape[0] == min(table.n_rows, 10_000)


def test_adb_dev_cut_and_full_variant():
    adbench_files()
    table = load_table(ADBENCH / "23_mammography.npz")
    X_cut, y_cut = adb_dev_cut(table.X, table.y)
    assert X_cut.shape == (10_000, 6)
    assert abs(y_cut.mean() - table.anomaly_rate) < 1e-3  # stratified
    X_full, y_full = adb_dev_cut(table.X, table.y, cap=None)
    assert X_full is table.X and y_full is table.y
    X_tr, X_te, _, _ = adb_dev_split(table.X, table.y, 0, cap=None)
    assert X_tr.shape[0] + X_te.shape[0] == table.n_rows


def test_splits_refuse_too_few_anomalies(wine):
    X, y, _ = wine
    y_one = np.zeros_like(y)
    y_one[0] = 1
    with pytest.raises(DataError, match=r"Cannot stratify: class counts are 0: 177, 1: 1"):
        adb_dev_split(X, y_one, 0)
    with pytest.raises(DataError, match="Cannot stratify"):
        stratified_split(X, np.zeros_like(y), 0.3, 0)
    with pytest.raises(DataError, match="needs labels"):
        adb_dev_split(X, None, 0)
    with pytest.raises(DataError, match="Cannot make a stratified split"):
        stratified_split(X, y, 1, 0)  # one test row cannot hold both classes


def test_stratified_split_matches_sklearn(wine):
    X, y, _ = wine
    got = stratified_split(X, y, 0.25, 3)
    expected = train_test_split(X, y, test_size=0.25, stratify=y, random_state=3)
    for a, b in zip(got, expected):
        np.testing.assert_array_equal(a, b)


# --------------------------------------------------------------------------- bundled
@pytest.mark.parametrize(
    ("name", "rows", "anomalies", "features"),
    [
        ("breast_cancer", 397, 40, 30),
        ("digits", 198, 20, 64),
        ("wine", 66, 7, 13),
        ("digits_8", 193, 19, 64),
    ],
)
def test_bundled_sizes_and_rates(name, rows, anomalies, features):
    table = load_bundled(name)
    assert (table.n_rows, table.n_anomalies, table.n_features) == (rows, anomalies, features)
    assert 0.095 < table.anomaly_rate < 0.11
    assert table.source.startswith("sklearn:") and len(table.feature_names) == features
    assert load_bundled(name).fingerprint() == table.fingerprint()  # fixed seed


def test_bundled_rows_are_real_and_labelled_by_class():
    from sklearn.datasets import load_breast_cancer, load_digits

    cancer = load_breast_cancer()
    table = load_bundled("breast_cancer")
    benign = {r.tobytes() for r in cancer.data[cancer.target == 1]}
    is_benign = np.array([r.tobytes() in benign for r in table.X])
    np.testing.assert_array_equal(is_benign, table.y == 0)
    assert is_benign.sum() == 357 and 0 < np.flatnonzero(table.y)[0] < table.n_rows - 40  # shuffled
    digits = load_digits()
    zeros = {r.tobytes() for r in digits.data[digits.target == 0]}
    d0 = load_bundled("digits")
    np.testing.assert_array_equal([r.tobytes() in zeros for r in d0.X], d0.y == 0)


def test_list_bundled_and_unknown_name():
    names = list_bundled()
    assert {"breast_cancer", "digits", "wine"} <= set(names)
    assert {f"digits_{k}" for k in range(10)} <= set(names)
    with pytest.raises(DataError, match=r"Unknown bundled data set 'iris'.*breast_cancer"):
        load_bundled("iris")


# --------------------------------------------------------------------------- fingerprint
def test_fingerprint_is_stable_and_sensitive():
    X = np.arange(12.0).reshape(4, 3)
    y = np.array([0, 1, 0, 0])
    base = Table(X=X, y=y, name="a", source="memory")
    assert base.fingerprint() == "8eb26db4a9a761aa"  # same on every run and machine
    as_int = Table(X=X.astype(np.int32), y=y, name="b", source="other")
    assert as_int.fingerprint() == base.fingerprint()  # data only, not name/source/dtype
    changed = X.copy()
    changed[2, 1] += 1e-12
    assert Table(X=changed, y=y, name="a", source="memory").fingerprint() != base.fingerprint()
    assert Table(X=X, y=y[::-1], name="a", source="memory").fingerprint() != base.fingerprint()
    assert Table(X=X, y=None, name="a", source="memory").fingerprint() != base.fingerprint()
    unlabelled = Table(X=X, y=None, name="a", source="m").fingerprint()
    assert Table(X=X.reshape(3, 4), y=None, name="a", source="m").fingerprint() != unlabelled


def test_fingerprint_survives_a_file_round_trip(tmp_path, wine):
    X, y, names = wine
    direct = Table(X=X, y=y, name="wine", source="sklearn:load_wine")
    np.savez(tmp_path / "w.npz", X=X, y=y)
    path = write_table(tmp_path / "w.csv", X, y, names, label_at=13)
    assert load_table(tmp_path / "w.npz").fingerprint() == direct.fingerprint()
    assert load_table(path).fingerprint() == direct.fingerprint()

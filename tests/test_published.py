"""bss build-manifest on the six settings' files as they are published: each fixture copies the
real files' structure (headers, column order, list names, folder names, array layouts) of
CREMA-D (OGM-GE's lists), Kinetics-Sounds (the authors' annotations, the official Kinetics CSV,
OGM-GE's lists), VGGSound (vggsound.csv, the authors' lists), Twitter2015 (TomBERT's TSVs),
Sarcasm (MMSD2.0's JSON, MMSD's raw text) and NVGesture (NVIDIA's lists, the authors' flow
arrays). Tests check labels, splits, pairing and frame indices, and compare the tensors bss train
reads with what the authors' loaders compute for the same files (recomputed here)."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
from conftest import sarcasm_folder
from test_audio_visual import write_wav
from typer.testing import CliRunner

from bss_cli.cli.app import app
from bss_cli.data.manifest import load_manifest

PIL = pytest.importorskip("PIL.Image")
runner = CliRunner()
SMALL = ["--sample-rate", "8000", "--seconds", "0.25", "--n-fft", "128", "--hop", "64", "--image-size", "16"]


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def meta(path) -> dict:
    """The manifest's JSON metadata entries (bss.*), decoded."""
    out = {}
    for k, v in pq.read_schema(path).metadata.items():
        try:
            out[k.decode()] = json.loads(v.decode())
        except ValueError:
            out[k.decode()] = v.decode()
    return out


def frames_folder(folder, n, shade=0):
    folder.mkdir(parents=True, exist_ok=True)
    for f in range(n):
        PIL.new("RGB", (12, 10), (shade % 256, (40 * f) % 256, 90)).save(folder / f"frame_{f:05d}.jpg")


# --- CREMA-D: OGM-GE's train.csv / test.csv (clip,EMOTION, no header), AudioWAV/, Image-01-FPS/ -------------------
CREMA_CODES = ["NEU", "HAP", "SAD", "FEA", "DIS", "ANG"]  # the authors' class ids 0..5


def crema_root(tmp_path, bad=()):
    root = tmp_path / "CREMA-D"
    (root / "AudioWAV").mkdir(parents=True)
    (root / "annotations").mkdir()
    train, test = [], []
    for a, actor in enumerate(range(1001, 1008)):  # every actor in both lists, as the published lists
        for e, emo in enumerate(CREMA_CODES):
            for k, sentence in enumerate(("DFA", "IEO", "TIE")):
                clip = f"{actor}_{sentence}_{emo}_XX"
                write_wav(root / "AudioWAV" / f"{clip}.wav", 200 + 100 * e, rate=16000, seed=a + e + k)
                frames_folder(root / "Image-01-FPS" / clip, 2, 40 * e)
                (test if k == 2 else train).append(f"{clip},{emo}")
    for clip, emo in bad:
        write_wav(root / "AudioWAV" / f"{clip}.wav", 300)
        frames_folder(root / "Image-01-FPS" / clip, 1)
        train.append(f"{clip},{emo}")
    (root / "annotations" / "train.csv").write_text("\ufeff" + "\r\n".join(train) + "\r\n", encoding="utf-8")
    (root / "annotations" / "test.csv").write_text("\n".join(test) + "\n")
    return root, train, test


def test_crema_d_trains_on_the_given_lists_with_the_authors_label_ids(tmp_path):
    root, train, test = crema_root(tmp_path)
    out = tmp_path / "crema.parquet"
    r = run("build-manifest", "crema-d", root, "-o", out, *SMALL)
    assert r.exit_code == 0, r.output
    rows = pq.read_table(out).to_pylist()
    assert sorted(r["sample_id"] for r in rows if r["split"] == "test") == sorted(x.split(",")[0] for x in test)
    assert {r["sample_id"] for r in rows if r["split"] != "test"} == {x.split(",")[0] for x in train}
    assert sum(r["split"] == "val" for r in rows) == 6  # a tenth of each class of train.csv, carved and stated
    assert all(r["label"] == CREMA_CODES.index(r["sample_id"].split("_")[2]) for r in rows)  # NEU 0 ... ANG 5
    m = meta(out)
    assert m["bss.split"] == "given" and m["bss.val_from_train"] == 0.1 and m["bss.classes"] == CREMA_CODES
    r = run("build-manifest", "crema-d", root, "-o", tmp_path / "by-speaker.parquet", "--split", "speaker", *SMALL)
    assert r.exit_code == 0, r.output
    rows = pq.read_table(tmp_path / "by-speaker.parquet").to_pylist()
    by_split = {s: {r["meta_actor"] for r in rows if r["split"] == s} for s in ("train", "val", "test")}
    assert not (by_split["train"] & by_split["test"]) and meta(tmp_path / "by-speaker.parquet")["bss.split"] == "speaker"
    assert load_manifest(tmp_path / "crema.parquet").media.seconds == 0.25  # a flag overrides the layout default


def test_crema_d_defaults_are_the_authors_loader_and_inspect_shows_them(tmp_path):
    root, _, _ = crema_root(tmp_path)
    out = tmp_path / "crema.parquet"
    assert run("build-manifest", "crema-d", root, "-o", out).exit_code == 0
    media = load_manifest(out, load_features=False).media
    assert (media.sample_rate, media.seconds, media.frames, media.image_size) == (22050, 20.0, 1, 224)
    assert media.spectrogram_shape == [257, 1250]
    r = run("inspect", out, "--json")
    assert json.loads(r.stdout)["metadata"]["media"]["seconds"] == 20.0


def test_crema_d_names_the_known_broken_clips_and_skip_bad_drops_them(tmp_path):
    root, _, _ = crema_root(tmp_path, bad=[("1076_MTI_SAD_XX", "SAD")])
    import wave

    with wave.open(str(root / "AudioWAV" / "1002_DFA_HAP_XX.wav"), "wb") as w:  # a WAV with no audio
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(16000)
    r = run("build-manifest", "crema-d", root, "-o", tmp_path / "m.parquet", *SMALL)
    assert r.exit_code == 1 and not (tmp_path / "m.parquet").exists()
    assert "1076_MTI_SAD_XX.wav: reported silent; pass --skip-bad" in r.stderr
    assert "1002_DFA_HAP_XX.wav: holds no audio (0 frames)" in r.stderr
    r = run("build-manifest", "crema-d", root, "-o", tmp_path / "m.parquet", "--skip-bad", *SMALL)
    assert r.exit_code == 0, r.output
    assert set(meta(tmp_path / "m.parquet")["bss.dropped_clips"]) == {"1076_MTI_SAD_XX", "1002_DFA_HAP_XX"}
    (root / "annotations" / "test.csv").write_text("1001_DFA_NEU_XX,HAP\n")
    r = run("build-manifest", "crema-d", root, "-o", tmp_path / "x.parquet", "--skip-bad", *SMALL)
    assert r.exit_code == 1 and "test.csv row 1: emotion 'HAP' disagrees with the clip name's 'NEU'" in r.stderr


# --- Kinetics-Sounds -------------------------------------------------------------------------------------------
KS_CLASSES = ["playing drums", "dog barking", "singing"]


def ks_root(tmp_path, fmt="official", short=(), missing=()):
    """The authors' layout: annotations/{train,test}.csv, {split}_wav/<id>.wav, {split}_img/Image-01-FPS/<id>/."""
    root = tmp_path / "KS"
    (root / "annotations").mkdir(parents=True)
    listed = {}
    for split, n in (("train", 6), ("test", 2)):
        lines = ["label,youtube_id,time_start,time_end,split,is_cc"] if fmt == "official" else []
        for i in range(n):
            for k, c in enumerate([KS_CLASSES[1], KS_CLASSES[0], KS_CLASSES[2]]):
                yt = f"{split[:2]}{i}{k}x-_Ab{k}"  # YouTube ids hold - and _
                name = yt if fmt != "kinetics-names" else f"{yt}_000030_000040"
                listed[yt] = (split, c)
                if yt not in missing:
                    (root / f"{split}_wav").mkdir(exist_ok=True)
                    write_wav(root / f"{split}_wav" / f"{name}.wav", 200 + 150 * k, seed=i + k)
                    frames_folder(root / f"{split}_img" / "Image-01-FPS" / name, 3 if yt in short else 5, 60 * k)
                if fmt in ("official", "kinetics-names"):
                    lines.append(f'"{c}",{yt},30,40,{split},0')
                else:  # OGM-GE's lists: clip,10,class id (no header)
                    lines.append(f"{yt},10,{KS_CLASSES.index(c)}")
        if fmt == "kinetics-names":
            lines.insert(0, "label,youtube_id,time_start,time_end,split,is_cc")
        name = f"{split}.csv" if fmt != "ogm" else f"my_{split}.txt"
        (root / "annotations" / name).write_text("\n".join(lines) + "\n")
    return root, listed


def test_kinetics_sounds_official_csv_read_by_name_with_the_loaders_drop_rule_and_class_order(tmp_path):
    root, listed = ks_root(tmp_path, short=("tr00x-_Ab0",))  # the first 'dog barking' clip has 3 frames
    out = tmp_path / "ks.parquet"
    r = run("build-manifest", "ks", root, "-o", out, *SMALL)
    assert r.exit_code == 0, r.output
    assert "1 clip(s) left out by the loader's rules" in r.stdout
    m = meta(out)
    assert m["bss.dropped_clips"] == ["tr00x-_Ab0"] and m["bss.label_from"] == "the 'label' column"
    # class ids in order of first appearance among the kept train clips: with tr00 (dog) dropped,
    # drums (tr01) and singing (tr02) come before dog (tr10)
    assert m["bss.classes"] == [KS_CLASSES[0], KS_CLASSES[2], KS_CLASSES[1]]
    rows = pq.read_table(out).to_pylist()
    assert all(m["bss.classes"][r["label"]] == listed[r["sample_id"]][1] for r in rows)
    assert {r["sample_id"] for r in rows if r["split"] == "test"} == {k for k, v in listed.items() if v[0] == "test"}
    assert all(r["audio"].startswith(f"KS/{listed[r['sample_id']][0]}_wav/") for r in rows)  # per-split folders
    assert all(f"{listed[r['sample_id']][0]}_img/Image-01-FPS/{r['sample_id']}" in r["visual"] for r in rows)
    media = load_manifest(out, load_features=False).media
    assert media.frames == 3 and media.image_size == 16  # 3 frames: the layout's default; a flag overrides


def test_kinetics_names_with_times_and_ogm_ge_lists(tmp_path):
    root, _ = ks_root(tmp_path / "a", fmt="kinetics-names")
    r = run("build-manifest", "ks", root, "-o", tmp_path / "a.parquet", *SMALL)
    assert r.exit_code == 0, r.output
    assert pq.read_table(tmp_path / "a.parquet")["visual"][0].as_py().endswith("_000030_000040")
    root, listed = ks_root(tmp_path / "b", fmt="ogm")
    out = tmp_path / "b.parquet"
    r = run("build-manifest", "ks", root, "-o", out, *SMALL)
    assert r.exit_code == 0, r.output
    rows = pq.read_table(out).to_pylist()
    assert all(r["label"] == KS_CLASSES.index(listed[r["sample_id"]][1]) for r in rows)  # column 3, as given
    assert meta(out)["bss.label_from"] == "column 3 (OGM-GE's class id)"


def test_kinetics_lists_of_an_unknown_shape_or_one_label_are_refused(tmp_path):
    root, _ = ks_root(tmp_path)
    for split in ("train", "test"):  # youtube_id,label without a header: not a published format
        path = root / "annotations" / f"{split}.csv"
        rows = [line.split(",") for line in path.read_text().splitlines()[1:]]
        path.write_text("\n".join(f"{r[1]},{r[0]}" for r in rows) + "\n")
    r = run("build-manifest", "ks", root, "-o", tmp_path / "m.parquet", *SMALL)
    assert r.exit_code == 1 and "train.csv: an unknown list format" in r.stderr and "youtube_id and label" in r.stderr
    root, _ = ks_root(tmp_path / "one")
    for split in ("train", "test"):
        path = root / "annotations" / f"{split}.csv"
        lines = path.read_text().splitlines()
        path.write_text("\n".join([lines[0]] + ['"singing"' + x[x.index('",') + 1:] for x in lines[1:]]) + "\n")
    r = run("build-manifest", "ks", root, "-o", tmp_path / "m.parquet", *SMALL)
    assert r.exit_code == 1 and "1 distinct label(s) (read from the 'label' column)" in r.stderr
    assert not (tmp_path / "m.parquet").exists()


def test_missing_youtube_clips_are_named_or_skipped(tmp_path):
    root, _ = ks_root(tmp_path, missing=("tr11x-_Ab1", "te01x-_Ab1"))
    r = run("build-manifest", "ks", root, "-o", tmp_path / "m.parquet", *SMALL)
    assert r.exit_code == 1 and "2 listed clip(s) have no audio file or frames folder" in r.stderr
    assert "train.csv row 6: 'tr11x-_Ab1'" in r.stderr and "--skip-missing" in r.stderr
    r = run("build-manifest", "ks", root, "-o", tmp_path / "m.parquet", "--skip-missing", *SMALL)
    assert r.exit_code == 0, r.output
    assert meta(tmp_path / "m.parquet")["bss.missing_clips"] == ["tr11x-_Ab1", "te01x-_Ab1"]


def test_a_listed_clip_id_that_leaves_the_folder_is_refused(tmp_path):
    root, _ = ks_root(tmp_path)
    path = root / "annotations" / "test.csv"
    path.write_text(path.read_text() + '"singing",../../etc/passwd,1,2,test,0\n')
    r = run("build-manifest", "ks", root, "-o", tmp_path / "m.parquet", *SMALL)
    assert r.exit_code == 1 and "test.csv row 8: clip id '../../etc/passwd' is not a plain file name" in r.stderr


# --- VGGSound --------------------------------------------------------------------------------------------------
VGG = ["dog barking", "airplane", "people marching"]


def vgg_root(tmp_path, fmt="published", encoding=None):
    root = tmp_path / "VGGSound"
    root.mkdir(parents=True)
    lines, per_split = [], {"train": [], "test": []}
    for split, n in (("train", 6), ("test", 2)):
        for i in range(n):
            for k, c in enumerate(VGG):
                yt, start = f"-{split[:2]}{i}{k}_q", 10 * i + k
                clip = f"{yt}_{start:06d}"
                (root / "AudioWAV").mkdir(exist_ok=True)
                write_wav(root / "AudioWAV" / f"{clip}.wav", 300 + 100 * k, seed=i)
                frames_folder(root / "Image-01-FPS" / clip, 4, 70 * k)
                lines.append(f"{yt},{start},{c},{split}")
                per_split[split].append(f"{len(per_split[split])},{c}, {clip}")
    if fmt == "published":
        (root / "vggsound.csv").write_text("\n".join(lines) + "\n")
    else:
        for split, rows in per_split.items():
            (root / f"{split}.csv").write_text("\n".join(rows) + "\n")
    if encoding:
        (root / "label_encoding.json").write_text(json.dumps(encoding))
    return root


@pytest.mark.parametrize("fmt", ["published", "authors"])
def test_vggsound_reads_the_published_csv_and_the_authors_lists(tmp_path, fmt):
    enc = {c: i for i, c in enumerate(["people marching", "dog barking", "airplane"])}
    root = vgg_root(tmp_path, fmt, encoding=enc)
    out = tmp_path / "vgg.parquet"
    r = run("build-manifest", "vggsound", root, "-o", out, *SMALL, "--frames", "1")
    assert r.exit_code == 0, r.output
    rows = pq.read_table(out).to_pylist()
    assert {r["sample_id"] for r in rows if r["split"] == "test"} == {f"-te{i}{k}_q_{10 * i + k:06d}" for i in range(2)
                                                                      for k in range(3)}
    assert all(r["label"] == enc[VGG[int(r["sample_id"][4])]] for r in rows)  # label_encoding.json's ids
    assert meta(out)["bss.label_encoding"] == "label_encoding.json"


def test_vggsound_without_label_encoding_codes_sorted_names_and_checks_the_split_column(tmp_path):
    root = vgg_root(tmp_path)
    out = tmp_path / "vgg.parquet"
    assert run("build-manifest", "vggsound", root, "-o", out, *SMALL, "--frames", "1").exit_code == 0
    m = meta(out)
    assert m["bss.classes"] == sorted(VGG) and "sorted" in m["bss.label_encoding"]
    assert load_manifest(out, load_features=False).media.sample_rate == 8000
    csv = root / "vggsound.csv"
    csv.write_text(csv.read_text().replace(",test\n", ",validation-ish\n", 1))
    r = run("build-manifest", "vggsound", root, "-o", tmp_path / "x.parquet", *SMALL, "--frames", "1")
    assert r.exit_code == 1 and "vggsound.csv row 19: split 'validation-ish', expected train or test" in r.stderr


# --- Twitter2015: TomBERT's TSVs ---------------------------------------------------------------------------------
def twitter_root(tmp_path):
    root = tmp_path / "twitter2015"
    (root / "twitter2015_images").mkdir(parents=True)
    words = {0: "awful terrible day at", 1: "meeting today at", 2: "great happy time at"}
    headers = {"train": "index\t#1 Label\t#2 ImageID\t#3 String\t#3 String",
               "dev": "index\t#1 Label\t#2 ImageID\t#3 String\t#3 String",
               "test": "index\t#1 ImageID\t#2 String\t#2 String"}  # test.tsv names 4 columns over 5, as published
    for split, n in (("train", 6), ("dev", 2), ("test", 2)):
        lines = [headers[split]]
        for i in range(n):
            for k in range(3):
                image = f"{1000 * (i + 1) + 10 * k + len(split)}.jpg"
                PIL.new("RGB", (12, 10), (80 * k, 30, 30)).save(root / "twitter2015_images" / image)
                lines.append(f"{3 * i + k + 1}\t{k}\t{image}\tRT @ x : {words[k]} $T$ !\tNew York")
        (root / f"{split}.tsv").write_text("\n".join(lines) + "\n")
    return root


def test_twitter2015_reads_tombert_files_by_position_with_the_target(tmp_path):
    root = twitter_root(tmp_path)
    out = tmp_path / "tw.parquet"
    r = run("build-manifest", "twitter2015", root, "-o", out, "--image-size", "16")
    assert r.exit_code == 0, r.output
    rows = pq.read_table(out).to_pylist()
    first = next(r for r in rows if r["sample_id"] == "test-1")
    assert first["label"] == 0 and first["image"].endswith("1004.jpg")
    assert first["text"] == "RT @ x : awful terrible day at New York ! | New York"  # $T$ filled, target appended
    assert [sum(r["split"] == s for r in rows) for s in ("train", "val", "test")] == [18, 6, 6]  # dev.tsv is val
    m = load_manifest(out)
    assert m.modalities["text"].kind == "text" and m.media.image_size == 16
    assert meta(out)["bss.target"] == "append"
    out2 = tmp_path / "tw2.parquet"
    assert run("build-manifest", "twitter2015", root, "-o", out2, "--target", "column").exit_code == 0
    row = next(r for r in pq.read_table(out2).to_pylist() if r["sample_id"] == "test-1")
    assert row["text"] == "RT @ x : awful terrible day at New York !" and row["meta_target"] == "New York"
    assert load_manifest(out2, load_features=False).media.image_size == 384  # the authors' Resize 384
    (root / "twitter2015_images" / "2014.jpg").unlink()
    r = run("build-manifest", "twitter2015", root, "-o", tmp_path / "x.parquet")
    assert r.exit_code == 1 and "test.tsv line 6: no image" in r.stderr


# --- Sarcasm: MMSD2.0 JSON, MMSD raw text, the authors' JSON ------------------------------------------------------
def sarcasm_releases(tmp_path, releases=("mmsd2",)):
    root = tmp_path / "MMSD"
    (root / "data" / "dataset_image").mkdir(parents=True)
    ids = {s: [int(f"8{i:017d}") + 10 ** 6 * n for i in range(8 if s == "train" else 4)]
           for n, s in enumerate(("train", "valid", "test"))}
    for s, values in ids.items():
        for i, v in enumerate(values):
            PIL.new("RGB", (12, 10), (120 * (i % 2), 60, 60)).save(root / "data" / "dataset_image" / f"{v}.jpg")
    if "mmsd2" in releases:  # MMSD2.0: data/text_json_final/{train,valid,test}.json, integer image ids
        (root / "data" / "text_json_final").mkdir()
        for s, values in ids.items():
            items = [{"image_id": v, "text": f"so great {i}", "label": i % 2} for i, v in enumerate(values)]
            (root / "data" / "text_json_final" / f"{s}.json").write_text(json.dumps(items))
    if "mmsd" in releases:  # MMSD: text/train.txt [id, text, label]; valid2/test2 [id, text, hashtag, annotator]
        (root / "data" / "text").mkdir()
        for s, name in (("train", "train.txt"), ("valid", "valid2.txt"), ("test", "test2.txt")):
            lines = [repr([str(v), f"oh nice {i} # tag", i % 2] if s == "train" else [str(v), f"oh nice {i}", 1, i % 2])
                     for i, v in enumerate(ids[s])]
            (root / "data" / "text" / name).write_text("\n".join(lines) + "\n")
    return root, ids


def test_sarcasm_mmsd2_json_and_mmsd_raw_text_record_the_release_and_label(tmp_path):
    root, ids = sarcasm_releases(tmp_path / "a")
    out = tmp_path / "s.parquet"
    r = run("build-manifest", "sarcasm", root, "-o", out, "--image-size", "16")
    assert r.exit_code == 0, r.output
    rows = pq.read_table(out).to_pylist()
    assert {r["sample_id"] for r in rows if r["split"] == "test"} == {f"test-{v}" for v in ids["test"]}
    assert all(r["label"] == int(r["text"].split()[-1]) % 2 for r in rows)
    assert meta(out)["bss.sarcasm"]["release"] == "mmsd2"
    root, ids = sarcasm_releases(tmp_path / "b", releases=("mmsd2", "mmsd"))
    r = run("build-manifest", "sarcasm", root, "-o", tmp_path / "x.parquet")
    assert r.exit_code == 1 and "several Sarcasm releases (mmsd2, mmsd)" in r.stderr and "--release" in r.stderr
    for source, want in (("annotator", lambda i: i % 2), ("hashtag", lambda i: 1)):
        out = tmp_path / f"{source}.parquet"
        r = run("build-manifest", "sarcasm", root, "-o", out, "--release", "mmsd", "--label-source", source)
        assert r.exit_code == 0, r.output
        rows = [r for r in pq.read_table(out).to_pylist() if r["split"] == "test"]
        assert [r["label"] for r in rows] == [want(i) for i in range(4)]
        assert meta(out)["bss.sarcasm"] == {"release": "mmsd", "folder": "data/text", "label": source,
                                             "repeated_rows_kept_once": 0}


def test_sarcasm_the_authors_json_and_an_image_with_two_labels(tmp_path):
    root = sarcasm_folder(tmp_path / "sarcasm", {"train": 8, "valid": 2, "test": 2},
                          ("what a lovely day", "oh great another monday"), json_list=("valid",))
    out = tmp_path / "s.parquet"
    r = run("build-manifest", "sarcasm", root, "-o", out, "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["splits"] == {"train": 16, "val": 4, "test": 4}
    assert load_manifest(out).text["text"]["max_words"] == 50 and meta(out)["bss.sarcasm"]["release"] == "json"
    with open(root / "test.json", "a") as f:
        f.write("\n" + json.dumps({"image": "test00", "text": "what a lovely day", "label": 1}) + "\n")
    r = run("build-manifest", "sarcasm", root, "-o", tmp_path / "x.parquet")
    assert r.exit_code == 1 and "test.json item 4: image test00 is listed again with another text or label" in r.stderr


# --- NVGesture: NVIDIA's lists, frame folders (window or whole video), the authors' [H, W, 2, T] flow ------------------
def nvgesture_root(tmp_path, whole=False, window=(10, 22)):
    """Each frame's red channel and each flow step's first channel encode the video frame index,
    an RGB frame's blue channel and the flow's second channel the pixel's column, so a test can
    read which frames and which crop a batch took."""
    root = tmp_path / "nvGesture"
    s, e = window
    for split, n in (("train", 8), ("test", 3)):
        lines = []
        (root / "Video_data" / "flow_data" / split).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            label, subject = i % 3 + 1, i % 4 + (1 if split == "train" else 20)
            rel = f"./Video_data/class_{label:02d}/subject{subject}_r{i}"
            for name, first in (("sk_color", 0 if whole else s), ("sk_depth", 0 if whole else s)):
                folder = root / rel / name
                folder.mkdir(parents=True, exist_ok=True)
                for frame in range(first, e + 3 if whole else e):
                    pixels = np.zeros((16, 16, 3), np.uint8)
                    pixels[..., 0], pixels[..., 1], pixels[..., 2] = frame * 5, 7 * label, np.arange(16) * 15
                    PIL.fromarray(pixels).save(folder / f"{frame - first:05d}.png")
            flow = np.zeros((16, 16, 2, e - s), np.float32) + (s + np.arange(e - s, dtype=np.float32))  # [H, W, 2, T]
            flow[:, :, 1, :] = np.arange(16, dtype=np.float32)[None, :, None]
            np.save(root / "Video_data" / "flow_data" / split / f"{i}.npy", flow)
            lines.append(f"path:{rel} depth:sk_depth:{s}:{e} color:sk_color:{s}:{e} duo_left:duo_left:{s + 2}:{e + 2} "
                         f"label:{label}")
        (root / f"nvgesture_{split}_correct_cvpr2016_v2.lst").write_text("\n".join(lines) + "\n")
    return root


@pytest.mark.parametrize("whole", [False, True])
def test_nvgesture_samples_rgb_depth_and_flow_in_step_inside_the_listed_window(tmp_path, whole):
    import torch

    from bss_cli.data.datasets import ManifestData

    root = nvgesture_root(tmp_path, whole=whole)
    out = tmp_path / "nv.parquet"
    r = run("build-manifest", "nvgesture", root, "-o", out, "--image-size", "14", "--frames", "4")
    assert r.exit_code == 0, r.output
    m = load_manifest(out)
    assert {k: v.kind for k, v in m.modalities.items()} == {"rgb": "image", "depth": "image", "flow": "volume"}
    assert m.modalities["flow"].layout == "HWCT" and m.modalities["flow"].shape == [2]
    rows = pq.read_table(out).to_pylist()
    assert sorted({r["label"] for r in rows}) == [0, 1, 2]  # label:N -> N - 1
    assert all(r["meta_rgb_from"] == (10 if whole else 0) and r["meta_flow_from"] == 0 for r in rows)
    val = {r["meta_subject"] for r in rows if r["split"] == "val"}
    assert val and not val & {r["meta_subject"] for r in rows if r["split"] == "train"}
    data = ManifestData(m)
    torch.manual_seed(0)
    for train in (True, False):
        x, _ = data.batch(list(range(len(rows))), train=train)
        assert tuple(x["rgb"].shape) == (len(rows), 4, 3, 14, 14) and tuple(x["depth"].shape) == (len(rows), 4, 1, 14, 14)
        assert tuple(x["flow"].shape) == (len(rows), 2, 4, 14, 14)
        rgb_frame = ((x["rgb"][:, :, 0] * 0.229 + 0.485) * 255 / 5).round()  # ImageNet-normalised red -> frame index
        depth_frame = (x["depth"][:, :, 0] * 255 / 5).round()  # depth: one channel in [0, 1], not normalised
        flow_frame = x["flow"][:, 0]
        rgb_left = ((x["rgb"][:, :, 2, :, 0] * 0.225 + 0.406) * 255 / 15).round()  # the crop's first column
        flow_left = x["flow"][:, 1, :, :, 0]
        assert torch.equal(rgb_left, flow_left)  # the same crop for RGB and flow
        assert torch.equal(rgb_left.amin(dim=(1, 2)), rgb_left.amax(dim=(1, 2)))  # one crop for all of a clip's frames
        if not train:
            assert set(rgb_left.flatten().tolist()) == {1.0}  # the centre crop: (16 - 14) // 2
        else:
            assert len(set(rgb_left[:, 0, 0].tolist())) > 1  # a random crop per sample (seeded)
        for t in (rgb_frame, depth_frame, flow_frame):
            assert torch.equal(t.amin(dim=(2, 3)), t.amax(dim=(2, 3)))  # a frame is one index
        idx = [t.amin(dim=(2, 3)) for t in (rgb_frame, depth_frame, flow_frame)]
        assert torch.equal(idx[0], idx[1]) and torch.equal(idx[0], idx[2])  # the three modalities in step
        assert int(idx[0].min()) >= 10 and int(idx[0].max()) <= 21  # inside the listed window 10..21
        steps = idx[0] - idx[0][:, :1]
        if train:
            assert torch.equal(steps, torch.arange(4).expand_as(steps))  # consecutive frames from a random start
        else:
            assert idx[0][0].tolist() == [10, 14, 17, 21]  # evenly spaced over the whole window
    r = run("train", out, "--out", tmp_path / "run", "--hidden", "4", "--epochs", "1", "--batch-size", "4", "--json")
    assert r.exit_code == 0, r.output
    assert {"acc_rgb", "acc_depth", "acc_flow"} <= set(json.loads(r.stdout)["test"])


def test_nvgesture_names_a_video_without_frames_and_a_folder_that_does_not_hold_the_window(tmp_path):
    import shutil

    root = nvgesture_root(tmp_path)
    clip_dir = root / "Video_data" / "class_02" / "subject2_r1"
    shutil.rmtree(clip_dir / "sk_depth")
    (clip_dir / "sk_depth.avi").write_bytes(b"")
    for f in list((root / "Video_data" / "class_01" / "subject1_r0" / "sk_color").iterdir())[:3]:
        f.unlink()
    (root / "Video_data" / "flow_data" / "test" / "2.npy").unlink()
    r = run("build-manifest", "nvgesture", root, "-o", tmp_path / "nv.parquet", "--frames", "3")
    assert r.exit_code == 1 and not (tmp_path / "nv.parquet").exists()
    lst = "nvgesture_train_correct_cvpr2016_v2.lst"
    assert f"{lst} line 2: no depth frames folder" in r.stderr
    assert "mkdir -p" in r.stderr and "ffmpeg -i" in r.stderr and "between(n\\,10\\,21)" in r.stderr
    assert f"{lst} line 1:" in r.stderr and "holds 9 frame(s); the window 10..21 needs 12" in r.stderr
    assert "nvgesture_test_correct_cvpr2016_v2.lst line 3: no optical flow file" in r.stderr


# --- the tensors bss train reads, against what the authors' loaders compute -------------------------------------------
def _authors_spectrogram(path, rate: int, seconds: float, tiles: int | None = None) -> np.ndarray:
    """The authors' audio, recomputed: librosa.load(sr=rate) (soxr_hq), tiled (KS, VGGSound: doubled
    until `seconds`; CREMA-D: np.tile(x, 20)), the first `seconds`, clipped to [-1, 1],
    librosa.stft(n_fft=512, hop=353) (centred, zero-padded, periodic Hann), log(|.| + 1e-7)."""
    import wave

    import soxr

    with wave.open(str(path)) as w:
        ch, sr = w.getnchannels(), w.getframerate()
        x = np.frombuffer(w.readframes(w.getnframes()), "<i2").astype(np.float32).reshape(-1, ch).mean(1) / 32768
    x = soxr.resample(x, sr, rate, quality="soxr_hq")
    if tiles:
        x = np.tile(x, tiles)
    while len(x) / rate < seconds:
        x = np.tile(x, 2)
    x = np.clip(x[:int(rate * seconds)], -1, 1)
    padded = np.pad(x, 256)
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(512) / 512)
    frames = np.stack([padded[i:i + 512] * window for i in range(0, len(padded) - 512 + 1, 353)])
    return np.log(np.abs(np.fft.rfft(frames, axis=1)).T + 1e-7)


@pytest.mark.parametrize("layout,shape", [("ks", (257, 1003)), ("vggsound", (257, 2006))])
def test_audio_matches_the_authors_loader_at_the_layouts_defaults(tmp_path, layout, shape):
    from bss_cli.data.datasets import ManifestData

    root = ks_root(tmp_path)[0] if layout == "ks" else vgg_root(tmp_path)
    out = tmp_path / "m.parquet"
    r = run("build-manifest", layout, root, "-o", out, "--image-size", "16")
    assert r.exit_code == 0, r.output
    m = load_manifest(out)
    x, _ = ManifestData(m).batch([0, 1])
    for row in (0, 1):
        want = _authors_spectrogram(m.paths["audio"][row], 35400, 10.0 if layout == "ks" else 20.0)
        assert want.shape == shape and tuple(x["audio"][row].shape) == shape
        got = x["audio"][row].numpy()
        assert np.allclose(np.exp(got), np.exp(want), rtol=1e-3, atol=1e-5)  # magnitudes; float32 vs float64
        assert np.abs(got[want > -5] - want[want > -5]).max() < 5e-3  # log values above the noise floor
    frames = 3 if layout == "ks" else 1
    assert tuple(x["visual"].shape) == (2, frames, 3, 16, 16)


def test_crema_d_audio_and_frames_match_the_authors_loader(tmp_path):
    from bss_cli.data.datasets import ManifestData
    from bss_cli.data.media import MEAN, STD

    root, _, _ = crema_root(tmp_path)
    for clip in ("1001_DFA_NEU_XX", "1001_IEO_NEU_XX"):  # CREMA-D clips last 1.3 to 5 s
        write_wav(root / "AudioWAV" / f"{clip}.wav", 330, rate=16000, seconds=1.6, seed=3)
    out = tmp_path / "m.parquet"
    assert run("build-manifest", "crema-d", root, "-o", out, "--image-size", "32").exit_code == 0
    m = load_manifest(out)
    row = [str(x) for x in m.sample_ids.to_pylist()].index("1001_DFA_NEU_XX")
    x, _ = ManifestData(m).batch([row])
    want = _authors_spectrogram(m.paths["audio"][row], 22050, 20.0, tiles=20)
    got = x["audio"][0].numpy()
    assert want.shape == got.shape == (257, 1250)
    assert np.allclose(np.exp(got), np.exp(want), rtol=1e-3, atol=1e-5)
    first = sorted(m.paths["visual"][row].iterdir())[0]  # test transform: Resize(224) (here 32), ImageNet stats
    with PIL.open(first) as im:
        frame = (np.asarray(im.convert("RGB").resize((32, 32), PIL.BILINEAR), np.float32) / 255 - MEAN) / STD
    assert np.allclose(x["visual"][0, 0].numpy().transpose(1, 2, 0), frame, atol=1e-5)


def test_image_text_images_are_normalised_as_the_authors_do(tmp_path):
    from bss_cli.data.datasets import ManifestData
    from bss_cli.data.media import NORMALISATIONS

    root = twitter_root(tmp_path)
    out = tmp_path / "tw.parquet"
    assert run("build-manifest", "twitter2015", root, "-o", out, "--image-size", "16").exit_code == 0
    m = load_manifest(out)
    x, _ = ManifestData(m).batch([0])
    with PIL.open(m.paths["image"][0]) as im:  # Twitter2015: Resize(384), ToTensor, no normalisation
        want = np.asarray(im.convert("RGB").resize((16, 16), PIL.BILINEAR), np.float32) / 255
    assert np.allclose(x["image"][0, 0].numpy().transpose(1, 2, 0), want, atol=1e-6)
    root, _ = sarcasm_releases(tmp_path / "s")
    out = tmp_path / "s.parquet"
    assert run("build-manifest", "sarcasm", root, "-o", out, "--image-size", "16").exit_code == 0
    m = load_manifest(out)
    x, _ = ManifestData(m).batch([0])
    mean, std = NORMALISATIONS["clip"]
    with PIL.open(m.paths["image"][0]) as im:  # Sarcasm: CLIP's mean and std
        want = (np.asarray(im.convert("RGB").resize((16, 16), PIL.BILINEAR), np.float32) / 255 - mean) / std
    assert np.allclose(x["image"][0, 0].numpy().transpose(1, 2, 0), want, atol=1e-5)


def test_resampling_is_band_limited(tmp_path):
    """16 kHz speech up-sampled to 35.4 kHz: nothing above the old 8 kHz Nyquist (linear
    interpolation put images of the signal there), and the same samples as soxr itself."""
    import soxr

    from bss_cli.data.media import resample

    rng = np.random.default_rng(0)
    x = rng.normal(size=16000).astype(np.float32) * 0.3
    y = resample(x, 16000, 35400)
    assert np.array_equal(y, soxr.resample(x, 16000, 35400, quality="HQ"))
    spectrum = np.abs(np.fft.rfft(y)) ** 2
    freqs = np.fft.rfftfreq(len(y), 1 / 35400)
    assert spectrum[freqs > 8400].sum() / spectrum.sum() < 1e-4
    linear = np.interp(np.linspace(0, len(x) - 1, len(y)), np.arange(len(x)), x)
    lin_spec = np.abs(np.fft.rfft(linear)) ** 2
    assert lin_spec[freqs > 8400].sum() / lin_spec.sum() > 1e-2  # what the old resampler did


def test_a_layout_refuses_options_it_does_not_take(tmp_path):
    root, _ = ks_root(tmp_path)
    r = run("build-manifest", "ks", root, "-o", tmp_path / "m.parquet", "--split", "random")
    assert r.exit_code == 1 and "--split does not apply to the ks layout" in r.stderr


def test_a_pickled_file_in_a_layout_is_refused_and_never_loaded(tmp_path):
    root, _ = ks_root(tmp_path)
    (root / "train_wav" / "tr00x-_Ab0.pkl").write_bytes(b"\x80\x04not really")
    r = run("build-manifest", "ks", root, "-o", tmp_path / "m.parquet", *SMALL)
    assert r.exit_code == 1 and "pickled files" in r.stderr and "train_wav/tr00x-_Ab0.pkl" in r.stderr


def test_pretrained_resnet50_weights_load_from_a_torchvision_style_file_checked_for_shape(tmp_path):
    """The image-text settings' ResNet-50: a state_dict named as torchvision names it (conv1, layer1.0...,
    fc) loads into the image encoder's trunk; another width or architecture is refused by shape; a file
    that is not tensors only is refused without running it."""
    import pickle

    import torch

    from bss_cli.errors import ConfigError
    from bss_cli.models.fusion import LateFusion, ModelConfig
    from bss_cli.models.resnet import ResNet50Trunk

    torch.manual_seed(3)
    donor = ResNet50Trunk(3, width=8)
    state = {**donor.state_dict(), "fc.weight": torch.zeros(10, 256), "fc.bias": torch.zeros(10)}
    torch.save(state, tmp_path / "resnet50.pth")
    cfg = ModelConfig(modalities={"image": [1, 3, 32, 32], "v": 4}, n_classes=3, hidden=8,
                      kinds={"image": "image", "v": "vector"}, extra={"image_encoder": "resnet50"},
                      encoder_weights={"image": str(tmp_path / "resnet50.pth")})
    model = LateFusion(cfg)
    got = model.encoders["image"].trunk.state_dict()
    assert all(torch.equal(got[k], v) for k, v in donor.state_dict().items())
    assert model({"image": torch.randn(2, 1, 3, 32, 32), "v": torch.randn(2, 4)}).fused.shape == (2, 3)
    torch.save(ResNet50Trunk(3, width=4).state_dict(), tmp_path / "narrow.pth")
    cfg.encoder_weights = {"image": str(tmp_path / "narrow.pth")}
    with pytest.raises(ConfigError, match=r"265 tensor\(s\) have another shape .*bn1.bias: file \[4\], encoder \[8\]"):
        LateFusion(cfg)

    class Payload:
        def __reduce__(self):
            return (print, ("this ran",))

    (tmp_path / "evil.pth").write_bytes(pickle.dumps({"conv1.weight": Payload()}))
    cfg.encoder_weights = {"image": str(tmp_path / "evil.pth")}
    with pytest.raises(ConfigError, match="cannot be read as tensors only"):
        LateFusion(cfg)




def test_broken_published_lists_end_in_one_error_naming_file_and_row(tmp_path):
    root, _ = ks_root(tmp_path / "ks")
    (root / "annotations" / "test.csv").write_bytes(b'label,youtube_id\n"singing",te00x\xff\n')
    r = run("build-manifest", "ks", root, "-o", tmp_path / "m.parquet", *SMALL)
    assert r.exit_code == 1 and "test.csv: not UTF-8 text" in r.stderr and "Traceback" not in r.output
    (root / "annotations" / "test.csv").write_text('label,youtube_id\n"' + "a" * (1 << 20) + '",x\n')
    r = run("build-manifest", "ks", root, "-o", tmp_path / "m.parquet", *SMALL)
    assert r.exit_code == 1 and "test.csv row 2: not a CSV row" in r.stderr
    root, _ = sarcasm_releases(tmp_path / "s")
    path = root / "data" / "text_json_final" / "test.json"
    items = json.loads(path.read_text())
    items[1]["label"], items[2]["text"] = 1e20, None
    path.write_text(json.dumps(items))
    r = run("build-manifest", "sarcasm", root, "-o", tmp_path / "m.parquet")
    assert r.exit_code == 1 and "test.json item 1: label '1e+20', expected 0 or 1" in r.stderr
    assert "test.json item 2: image_id must be a string or integer and text a string" in r.stderr
    root = nvgesture_root(tmp_path / "nv")
    lst = root / "nvgesture_test_correct_cvpr2016_v2.lst"
    lines = lst.read_text().splitlines()
    lines[0] = lines[0].replace("color:sk_color:10:22", "color:sk_color").replace("label:1", "label:\u00b9")
    lines[1] = lines[1].replace("path:./Video_data", "path:../../outside")
    lst.write_text("\n".join(lines) + "\n")
    r = run("build-manifest", "nvgesture", root, "-o", tmp_path / "m.parquet")
    assert r.exit_code == 1 and not (tmp_path / "m.parquet").exists()
    assert "nvgesture_test_correct_cvpr2016_v2.lst line 1: label" in r.stderr
    assert "line 2: path '../../outside" in r.stderr and "leaves the data folder" in r.stderr


@pytest.mark.parametrize("bad,needle", [
    (lambda p: np.save(p, np.zeros((16, 16, 3, 12), np.float32)), "has 3 channel(s), the first flow file 2"),
    (lambda p: np.save(p, np.array([{"a": 1}], dtype=object), allow_pickle=True), "is not a usable HWCT flow array"),
    (lambda p: np.save(p, np.zeros((16, 16, 2, 12), np.complex64)), "its values are complex64"),
    (lambda p: p.write_bytes(b"\x93NUMPY\x01\x00v\x00{'descr': '<f4', 'fortran_order': False, "
                             b"'shape': (100000, 100000, 2, 10000), }" + b" " * 40 + b"\n"), "not a usable HWCT"),
])
def test_a_bad_flow_file_is_named_by_line_at_build(tmp_path, bad, needle):
    root = nvgesture_root(tmp_path)
    bad(root / "Video_data" / "flow_data" / "train" / "5.npy")
    r = run("build-manifest", "nvgesture", root, "-o", tmp_path / "nv.parquet")
    assert r.exit_code == 1 and not (tmp_path / "nv.parquet").exists()
    assert "nvgesture_train_correct_cvpr2016_v2.lst line 6:" in r.stderr and needle in r.stderr, r.stderr
    assert "Traceback" not in r.output


def test_a_color_field_without_its_range_an_empty_test_list_and_a_wav_folder(tmp_path):
    root = nvgesture_root(tmp_path / "nv")
    lst = root / "nvgesture_train_correct_cvpr2016_v2.lst"
    lst.write_text(lst.read_text().replace("color:sk_color:10:22", "color:sk_color", 1))
    r = run("build-manifest", "nvgesture", root, "-o", tmp_path / "m.parquet")
    assert r.exit_code == 1 and "line 1: color:sk_color needs <folder>:<start>:<end>" in r.stderr
    (root / "nvgesture_test_correct_cvpr2016_v2.lst").write_text("")
    lst.write_text(lst.read_text().replace("color:sk_color ", "color:sk_color:10:22 ", 1))
    r = run("build-manifest", "nvgesture", root, "-o", tmp_path / "m.parquet")
    assert r.exit_code == 1 and "the test list has 0 clip(s)" in r.stderr
    root, _ = ks_root(tmp_path / "ks")
    wav = root / "train_wav" / "tr01x-_Ab1.wav"
    wav.unlink()
    wav.mkdir()  # a folder named like the clip's audio
    r = run("build-manifest", "ks", root, "-o", tmp_path / "m.parquet", *SMALL)
    assert r.exit_code == 1 and "1 listed clip(s) have no audio file" in r.stderr and "tr01x-_Ab1" in r.stderr
    assert not (tmp_path / "m.parquet").exists()

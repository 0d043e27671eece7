"""Manifest builders for the paper's image-text settings (method.md section 8), on the shared
helpers of :mod:`bss_cli.data.published` (no torch):

* ``twitter2015``: ``{train,dev,test}.tsv`` with columns ``#1 Label``, ``#2 ImageID``,
  ``#3 String`` (the first), images in ``<images_dir>/<ImageID>``; labels 0, 1, 2 (negative,
  neutral, positive); the text column is declared as text with the loader's preprocessing
  (English words, lower-case, no punctuation, <= 20 words, 30 tokens).
* ``sarcasm``: ``{train,valid,test}.json`` (a JSON list or JSON lines of objects with ``image``,
  ``text``, ``label``), images in ``<images_dir>/<image>[.jpg]``; labels 0, 1; text <= 50 words,
  30 tokens.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pyarrow as pa

from bss_cli import schema as S
from bss_cli.data.media import MediaConfig
from bss_cli.data.published import VAL_FRACTION, _refuse_pickles, _rel, _split_files, _with_val
from bss_cli.errors import ManifestError

TWITTER_LABELS = {"0": 0, "1": 1, "2": 2}


def _images_folder(root: Path, images_dir: str) -> Path:
    """The image folder of an image-text layout, checked to exist and to hold no pickled file."""
    images = root / images_dir
    if not images.is_dir():
        raise ManifestError(root, [f"no image folder {images}; name it with --images-dir"])
    _refuse_pickles(root, [images])
    return images


def _image(images: Path, name: str) -> Path | None:
    p = images / name
    if p.is_file():
        return p
    for ext in (".jpg", ".jpeg", ".png"):
        if (images / f"{name}{ext}").is_file():
            return images / f"{name}{ext}"
    return None


def _text_table(root: Path, out: Path, rows: list[tuple], problems: list[str], seed: int, text_spec: dict,
                classes: list[str]) -> pa.Table:
    if problems:
        raise ManifestError(root, problems)
    splits, carved = _with_val(root, [r[1] for r in rows], [r[3] for r in rows], seed)
    rel = _rel(out)
    table = pa.table({S.SAMPLE_ID: [r[0] for r in rows], S.LABEL: pa.array([r[1] for r in rows], pa.int64()),
                      S.SPLIT: splits, "image": [rel(r[2]) for r in rows], "text": [r[4] for r in rows]})
    return table.replace_schema_metadata({"bss.text": json.dumps({"text": text_spec}),
                                          "bss.classes": json.dumps(classes),
                                          "bss.val_from_train": json.dumps(VAL_FRACTION if carved else None)})


def twitter2015(root: Path, out: Path, *, media: MediaConfig, images_dir: str = "twitter2015_images",
                seed: int = 0) -> pa.Table:
    root = Path(root)
    files = _split_files(root, {"train": ("train",), "val": ("dev", "val", "valid"), "test": ("test",)},
                         (".tsv", ".txt"))
    if "train" not in files or "test" not in files:
        raise ManifestError(root, [f"expected train.tsv and test.tsv (dev.tsv optional) in {root}, with columns "
                                   "'#1 Label', '#2 ImageID', '#3 String'"])
    images = _images_folder(root, images_dir)
    rows, problems = [], []
    for split in ("train", "val", "test"):
        if split not in files:
            continue
        with open(files[split], newline="", encoding="utf-8") as f:
            lines = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
        header = [h.strip() for h in lines[0]] if lines else []
        col = {k: next((i for i, h in enumerate(header) if k in h), None) for k in ("Label", "ImageID", "String")}
        if None in col.values():
            problems.append(f"{files[split].name}: header {header!r} lacks a Label, ImageID or String column")
            continue
        for i, line in enumerate(lines[1:], start=1):
            if len(line) <= max(col.values()):
                problems.append(f"{files[split].name} line {i + 1}: {len(line)} fields, expected {len(header)}")
                continue
            label, image_id, text = line[col["Label"]].strip(), line[col["ImageID"]].strip(), line[col["String"]]
            if label not in TWITTER_LABELS:
                problems.append(f"{files[split].name} line {i + 1}: label {label!r}, expected 0, 1 or 2")
                continue
            image = _image(images, image_id)
            if image is None:
                problems.append(f"{files[split].name} line {i + 1}: no image {images / image_id}")
                continue
            rows.append((f"{split}-{i}", TWITTER_LABELS[label], image, split, text))
    return _text_table(root, out, rows, problems, seed, {"max_tokens": 30, "max_words": 20, "clean": True},
                       ["negative", "neutral", "positive"])


def sarcasm(root: Path, out: Path, *, media: MediaConfig, images_dir: str = "dataset_image", seed: int = 0
            ) -> pa.Table:
    root = Path(root)
    files = _split_files(root, {"train": ("train",), "val": ("valid", "val", "dev"), "test": ("test",)},
                         (".json", ".jsonl"))
    if "train" not in files or "test" not in files:
        raise ManifestError(root, [f"expected train.json and test.json (valid.json optional) in {root}: objects with "
                                   "image, text and label"])
    images = _images_folder(root, images_dir)
    rows, problems = [], []
    for split in ("train", "val", "test"):
        if split not in files:
            continue
        text = files[split].read_text(encoding="utf-8")
        try:
            items = json.loads(text) if text.lstrip().startswith("[") else \
                [json.loads(line) for line in text.splitlines() if line.strip()]
        except (ValueError, RecursionError) as exc:
            problems.append(f"{files[split].name}: not JSON or JSON lines ({str(exc)[:120]})")
            continue
        for i, item in enumerate(items):
            if not isinstance(item, dict) or not {"image", "text", "label"} <= set(item):
                problems.append(f"{files[split].name} item {i}: expected an object with image, text and label")
                continue
            label = item["label"]
            if isinstance(label, bool) or str(label) not in ("0", "1"):
                problems.append(f"{files[split].name} item {i}: label {label!r}, expected 0 or 1")
                continue
            image = _image(images, str(item["image"]))
            if image is None:
                problems.append(f"{files[split].name} item {i}: no image {images / str(item['image'])}[.jpg]")
                continue
            rows.append((f"{split}-{item['image']}", int(str(label)), image, split, str(item["text"])))
    return _text_table(root, out, rows, problems, seed, {"max_tokens": 30, "max_words": 50, "clean": False},
                       ["not sarcastic", "sarcastic"])

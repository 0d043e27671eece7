"""Manifest builders for the paper's image-text settings (method.md section 8), on the shared
helpers of :mod:`bss_cli.data.published` (no torch):

* ``twitter2015``: TomBERT's ``{train,dev,test}.tsv`` (index, label, image id, sentence with
  ``$T$``, target), images in ``<images_dir>/<image id>``; labels 0, 1, 2 (negative, neutral,
  positive); the text is declared as text with the loader's preprocessing (English words,
  lower-case, no punctuation, <= 20 words, 30 tokens).
* ``sarcasm``: MMSD2.0 and MMSD as published, or the authors' JSON; see :func:`sarcasm`.
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa

from bss_cli import schema as S
from bss_cli.data.media import MediaConfig
from bss_cli.data.published import VAL_FRACTION, _refuse_pickles, _rel, _split_files, _with_val, unsafe_name
from bss_cli.errors import ConfigError, ManifestError

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
                classes: list[str], normalize: str) -> pa.Table:
    if problems:
        raise ManifestError(root, problems)
    splits, carved = _with_val(root, [r[1] for r in rows], [r[3] for r in rows], seed)
    rel = _rel(out)
    table = pa.table({S.SAMPLE_ID: [r[0] for r in rows], S.LABEL: pa.array([r[1] for r in rows], pa.int64()),
                      S.SPLIT: splits, "image": [rel(r[2]) for r in rows], "text": [r[4] for r in rows]})
    return table.replace_schema_metadata({"bss.text": json.dumps({"text": text_spec}),
                                          "bss.images": json.dumps({"image": {"normalize": normalize}}),
                                          "bss.classes": json.dumps(classes),
                                          "bss.val_from_train": json.dumps(VAL_FRACTION if carved else None)})


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ManifestError(path.parent, [f"{path.name}: not UTF-8 text (byte {exc.start})"]) from None


TARGET_MODES = ("append", "column")


def _twitter_rows(path: Path, split: str) -> tuple[list[tuple], list[str]]:
    """(index, label, image id, sentence, target or None, where) of one Twitter2015 TSV.

    TomBERT's files (the published ones): a header starting ``index`` (``train.tsv`` and
    ``dev.tsv`` name 5 columns, ``test.tsv`` 4, over 5), rows ``index, label, image id, sentence
    with $T$, target``: read by position. Otherwise a header naming ``Label``, ``ImageID`` and
    ``String`` (the authors' loader reads these names), without a target."""
    lines = [ln for ln in _read_text(path).split("\n") if ln.strip()]
    if not lines:
        return [], [f"{path.name}: the file is empty"]
    header = [h.strip() for h in lines[0].rstrip("\r").split("\t")]
    rows, problems = [], []
    if header and header[0].lower() == "index":
        for i, line in enumerate(lines[1:], start=2):
            f = line.rstrip("\r").split("\t")
            if len(f) != 5:
                problems.append(f"{path.name} line {i}: {len(f)} fields, expected 5 (index, label, image id, "
                                "sentence with $T$, target)")
                continue
            rows.append((f[0].strip(), f[1].strip(), f[2].strip(), f[3], f[4].strip(), f"{path.name} line {i}"))
        return rows, problems
    names = {h.lower().split(" ")[-1]: i for i, h in enumerate(header)}
    if not {"label", "imageid", "string"} <= set(names):
        return [], [f"{path.name}: header {header[:6]!r} is neither TomBERT's (index, #1 Label, #2 ImageID, "
                    "#3 String, #3 String) nor names Label, ImageID and String"]
    for i, line in enumerate(lines[1:], start=2):
        f = line.rstrip("\r").split("\t")
        if len(f) < len(header):
            problems.append(f"{path.name} line {i}: {len(f)} fields, the header names {len(header)}")
            continue
        rows.append((str(i - 1), f[names["label"]].strip(), f[names["imageid"]].strip(), f[names["string"]], None,
                     f"{path.name} line {i}"))
    return rows, problems


def twitter2015(root: Path, out: Path, *, media: MediaConfig, images_dir: str = "twitter2015_images",
                seed: int = 0, target: str | None = None) -> pa.Table:
    """Twitter2015 (target-oriented sentiment): TomBERT's ``{train,dev,test}.tsv`` in ROOT or
    ROOT/annotations, images ``<images_dir>/<image id>``; labels 0, 1, 2 (negative, neutral,
    positive). ``target``: ``append`` (default) gives one text per row, the sentence with ``$T$``
    replaced by the target, then `` | `` and the target (the pair TomBERT feeds BERT, as one
    text); ``column`` keeps the filled sentence as text and the target in ``meta_target``."""
    root = Path(root)
    target = target or "append"
    if target not in TARGET_MODES:
        raise ConfigError(f"--target {target!r}: expected one of {', '.join(TARGET_MODES)}")
    folder = root / "annotations" if (root / "annotations" / "train.tsv").is_file() else root
    files = _split_files(folder, {"train": ("train",), "val": ("dev", "val", "valid"), "test": ("test",)},
                         (".tsv",))
    if "train" not in files or "test" not in files:
        raise ManifestError(root, [f"expected train.tsv and test.tsv (dev.tsv optional) in {root} or its annotations "
                                   "folder: TomBERT's Twitter2015 files"])
    images = _images_folder(root, images_dir)
    rows, problems = [], []
    for split in ("train", "val", "test"):
        if split not in files:
            continue
        listed, found = _twitter_rows(files[split], split)
        problems += found
        for index, label, image_id, sentence, tgt, where in listed:
            if label not in TWITTER_LABELS:
                problems.append(f"{where}: label {label[:40]!r}, expected 0, 1 or 2")
                continue
            if unsafe_name(image_id):
                problems.append(f"{where}: image id {image_id[:80]!r} is not a plain file name")
                continue
            image = _image(images, image_id)
            if image is None:
                problems.append(f"{where}: no image {images / image_id}")
                continue
            filled = sentence.replace("$T$", tgt) if tgt is not None else sentence
            text = f"{filled} | {tgt}" if tgt is not None and target == "append" else filled
            rows.append((f"{split}-{index}", TWITTER_LABELS[label], image, split, text, tgt or ""))
    table = _text_table(root, out, rows, problems, seed, {"max_tokens": 30, "max_words": 20, "clean": True},
                        ["negative", "neutral", "positive"], normalize="none")  # the authors: Resize 384, ToTensor
    if target == "column":
        table = table.append_column("meta_target", pa.array([r[5] for r in rows]))
    return table.replace_schema_metadata({**(table.schema.metadata or {}), b"bss.target": json.dumps(target).encode()})


SARCASM_RELEASES = {  # release -> (folder under ROOT, file of each split)
    "mmsd2": ("text_json_final", {"train": "train.json", "val": "valid.json", "test": "test.json"}),
    "mmsd-clean": ("text_json_clean", {"train": "train.json", "val": "valid.json", "test": "test.json"}),
    "mmsd": ("text", {"train": "train.txt", "val": "valid2.txt", "test": "test2.txt"}),
    "json": (".", {"train": "train.json", "val": "valid.json", "test": "test.json"}),
}
LABEL_SOURCES = ("annotator", "hashtag")


def _sarcasm_release(root: Path, release: str | None) -> tuple[str, Path]:
    """The release to read and its folder: the one asked for, or the only one ROOT (or ROOT/data,
    as MMSD2.0 ships) holds."""
    found = {}
    for name, (sub, files) in SARCASM_RELEASES.items():
        for base in (root, root / "data"):
            if (base / sub / files["train"]).is_file() and (base / sub / files["test"]).is_file():
                found.setdefault(name, base / sub)
    if release is not None:
        if release not in SARCASM_RELEASES:
            raise ConfigError(f"--release {release!r}: expected one of {', '.join(SARCASM_RELEASES)}")
        if release not in found:
            sub, files = SARCASM_RELEASES[release]
            raise ManifestError(root, [f"--release {release}: no {sub}/{files['train']} and {sub}/{files['test']} in "
                                       f"{root} or {root / 'data'}"])
        return release, found[release]
    if not found:
        raise ManifestError(root, [f"no Sarcasm files in {root}: expected MMSD2.0's text_json_final/ (or "
                                   "text_json_clean/), MMSD's text/train.txt, valid2.txt, test2.txt, or the authors' "
                                   "train.json, valid.json, test.json (image, text, label)"])
    if len(found) > 1:
        raise ConfigError(f"{root} holds several Sarcasm releases ({', '.join(found)}), whose samples and labels "
                          "differ; choose one with --release")
    return next(iter(found.items()))


def _sarcasm_items(path: Path, release: str, split: str, label_source: str) -> tuple[list[tuple], list[str]]:
    """(image id, text, label, where) of one Sarcasm file; the label is 0/1 or given as text."""
    import ast

    text = _read_text(path)
    problems, out = [], []
    if release == "mmsd":  # one Python list literal a line (never evaluated: literal_eval parses literals only)
        for i, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            where = f"{path.name} line {i}"
            try:
                item = ast.literal_eval(line.strip()) if len(line) < 100_000 else None
            except (ValueError, SyntaxError, MemoryError, RecursionError):
                item = None
            want = 3 if split == "train" else 4
            if not isinstance(item, (list, tuple)) or len(item) != want or not isinstance(item[0], str) \
                    or not isinstance(item[1], str):
                problems.append(f"{where}: expected a list [id, text{', label' if want == 3 else ', hashtag label, annotator label'}]")
                continue
            label = item[-1] if want == 3 or label_source == "annotator" else item[-2]
            out.append((item[0], item[1], label, where))
        return out, problems
    try:
        items = json.loads(text) if text.lstrip().startswith("[") else \
            [json.loads(line) for line in text.splitlines() if line.strip()]
    except (ValueError, RecursionError) as exc:
        return [], [f"{path.name}: not JSON or JSON lines ({str(exc)[:120]})"]
    if not isinstance(items, list):
        return [], [f"{path.name}: expected a JSON list of objects"]
    key = "image" if release == "json" else "image_id"
    for i, item in enumerate(items):
        where = f"{path.name} item {i}"
        if not isinstance(item, dict) or not {key, "text", "label"} <= set(item):
            problems.append(f"{where}: expected an object with {key}, text and label")
            continue
        image, words = item[key], item["text"]
        if isinstance(image, bool) or not isinstance(image, (str, int)) or not isinstance(words, str):
            problems.append(f"{where}: {key} must be a string or integer and text a string")
            continue
        image = str(image)
        if release == "json" and "/" in image and ".." not in image.split("/") and not image.startswith("/"):
            image = image.split("/")[-1]  # the authors' loader keeps the file name of a path
        out.append((image, words, item["label"], where))
    return out, problems


def sarcasm(root: Path, out: Path, *, media: MediaConfig, images_dir: str = "dataset_image", seed: int = 0,
            release: str | None = None, label_source: str | None = None) -> pa.Table:
    """Twitter multi-modal sarcasm: MMSD2.0 (``text_json_final/``), MMSD's cleaned JSON
    (``text_json_clean/``), MMSD's raw ``text/*.txt`` (valid and test carry a hashtag label and an
    annotator label; ``label_source`` picks one) or the authors' ``{train,valid,test}.json``;
    images ``<images_dir>/<id>.jpg``; labels 0, 1. The release and label used are stored in the
    manifest's ``bss.sarcasm``. A repeated image id with the same text and label is kept once
    (as MMSD2.0's loader does); with another label it is refused."""
    root = Path(root)
    label_source = label_source or "annotator"
    if label_source not in LABEL_SOURCES:
        raise ConfigError(f"--label-source {label_source!r}: expected one of {', '.join(LABEL_SOURCES)}")
    release, folder = _sarcasm_release(root, release)
    images = _images_folder(root if (root / images_dir).is_dir() or not (root / "data").is_dir() else root / "data",
                            images_dir)
    files = SARCASM_RELEASES[release][1]
    rows, problems, seen, repeated = [], [], {}, 0
    for split in ("train", "val", "test"):
        if not (folder / files[split]).is_file():
            continue
        items, found = _sarcasm_items(folder / files[split], release, split, label_source)
        problems += found
        for image_id, text, label, where in items:
            if isinstance(label, bool) or str(label) not in ("0", "1"):
                problems.append(f"{where}: label {str(label)[:40]!r}, expected 0 or 1")
                continue
            if unsafe_name(image_id):
                problems.append(f"{where}: image id {image_id[:80]!r} is not a plain file name")
                continue
            sid = f"{split}-{image_id}"
            if sid in seen:
                if seen[sid] != (text, int(str(label))):
                    problems.append(f"{where}: image {image_id} is listed again with another text or label")
                repeated += 1
                continue
            seen[sid] = (text, int(str(label)))
            image = _image(images, image_id)
            if image is None:
                problems.append(f"{where}: no image {images / image_id}[.jpg]")
                continue
            rows.append((sid, int(str(label)), image, split, text))
    table = _text_table(root, out, rows, problems, seed, {"max_tokens": 30, "max_words": 50, "clean": False},
                        ["not sarcastic", "sarcastic"], normalize="clip")  # the authors: CLIP's mean and std
    used = {"release": release, "folder": str(folder.relative_to(root)),
            "label": (label_source if release == "mmsd" else "label"), "repeated_rows_kept_once": repeated}
    return table.replace_schema_metadata({**(table.schema.metadata or {}), b"bss.sarcasm": json.dumps(used).encode()})

"""Manifest builders for the paper's other audio-visual and gesture settings, reading the files the authors' loaders read
(method.md section 8), with their label coding and their splits (no torch):

* ``ks`` (Kinetics-Sounds): ``annotations/{train,val,test}.csv`` (youtube_id, label; val optional),
  audio ``<audio_dir>/<id>.wav``, frames ``<frames_dir>/<id>/``; class ids in order of first
  appearance in train.csv; 3 frames per clip (clips with fewer are refused by name, or dropped with
  ``drop_short``, as the loader drops them).
* ``vggsound``: ``{train,val,test}.csv`` (id, label; or youtube_id, start_seconds, label: the clip is
  ``<youtube_id>_<start:06d>``), ``label_encoding.json`` (label -> class id; 310 classes), the
  same audio and frames folders, 1 frame.
* ``nvgesture``: see :func:`nvgesture`. The image-text layouts (``twitter2015``, ``sarcasm``) are in
  :mod:`bss_cli.data.published_text`.

Every missing file is named (all of them, by row), given splits are kept, a missing val split is
carved from train (stratified, seeded, stated in the manifest's ``bss.val_from_train``), and a
pickled file where the loader expects data is refused with how to convert it; none is loaded.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np
import pyarrow as pa

from bss_cli import schema as S
from bss_cli.data.media import IMAGE_EXTS, MediaConfig
from bss_cli.errors import ConfigError, ManifestError

PICKLE_EXTS = (".pkl", ".pickle", ".pk")
VAL_FRACTION = 0.1  # of train, per class, when a layout gives no val split
PICKLE_HOW = ("bss never unpickles (a pickle can run code); convert it once where you trust the file, e.g. "
              "python -c \"import pickle, numpy; numpy.save('x.npy', pickle.load(open('x.pkl', 'rb')))\" for an "
              "array, or re-extract it as .wav / image files")


def _pickles(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in PICKLE_EXTS) if folder.is_dir() else []


def _refuse_pickles(root: Path, folders: list[Path]) -> None:
    found = [p for f in folders for p in _pickles(f)]
    if found:
        shown = ", ".join(str(p.relative_to(root)) for p in found[:5])
        more = f" and {len(found) - 5} more" if len(found) > 5 else ""
        raise ManifestError(root, [f"pickled files where the loader reads data: {shown}{more}; {PICKLE_HOW}"])


def _rel(out: Path):
    base = Path(out).resolve().parent
    return lambda p: os.path.relpath(Path(p).resolve(), base)


def _val_from_train(labels: list, splits: list[str], seed: int) -> list[str]:
    """Mark a stratified VAL_FRACTION of each class's train rows 'val' (seeded)."""
    rng = np.random.default_rng(seed)
    labels, splits = np.asarray(labels, dtype=object), np.asarray(splits, dtype=object)
    for c in sorted(set(labels[splits == "train"].tolist()), key=str):
        idx = rng.permutation(np.flatnonzero((labels == c) & (splits == "train")))
        splits[idx[:int(round(VAL_FRACTION * len(idx)))]] = "val"
    return splits.tolist()


def _frames(folder: Path) -> int:
    return sum(1 for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTS) if folder.is_dir() else 0


def _read_csv(path: Path) -> list[list[str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return [row for row in csv.reader(f) if row and any(c.strip() for c in row)]


def _clips(root: Path, rows: list[tuple[str, str, str]], audio_dir: str, frames_dir: str, media: MediaConfig,
           drop_short: bool) -> tuple[list[tuple], list[str], list[str]]:
    """Check every (clip, label, split)'s audio file and frames folder; (kept rows, problems, dropped)."""
    audio_root, frame_root = root / audio_dir, root / frames_dir
    problems, kept, dropped = [], [], []
    for clip, label, split in rows:
        wav, frames = audio_root / f"{clip}.wav", frame_root / clip
        if not wav.is_file():
            problems.append(f"{split} clip {clip!r}: no audio file {wav}")
            continue
        n = _frames(frames)
        if n == 0:
            problems.append(f"{split} clip {clip!r}: no frames folder with images at {frames}")
            continue
        if n < media.frames:
            if drop_short:
                dropped.append(clip)
                continue
            problems.append(f"{split} clip {clip!r}: {n} frame(s) in {frames}, fewer than --frames {media.frames} (the "
                            "authors' loader drops such clips: pass --drop-short to do the same)")
            continue
        kept.append((clip, label, split, wav, frames))
    return kept, problems, dropped


def _with_val(root: Path, labels: list, splits: list[str], seed: int) -> tuple[list[str], bool]:
    """The splits, a val split carved from train when the layout gives none (and whether it was);
    a ConfigError when a split would still be empty."""
    carved = "val" not in splits
    if carved:
        splits = _val_from_train(labels, splits, seed)
    missing = [s for s in ("train", "val", "test") if s not in splits]
    if missing:
        raise ConfigError(f"{root}: the {', '.join(missing)} split(s) would be empty; the layout's files must give "
                          "train and test samples")
    return splits, carved


def _av_manifest(root: Path, out: Path, rows: list[tuple[str, int, str]], problems: list[str], classes: list[str], *,
                 media: MediaConfig, audio_dir: str, frames_dir: str, drop_short: bool, seed: int) -> pa.Table:
    """The audio + frames manifest of (clip, class id, split) rows, every clip's files checked."""
    kept, found, dropped = _clips(root, rows, audio_dir, frames_dir, media, drop_short)
    if problems or found:
        raise ManifestError(root, problems + found)
    splits, carved = _with_val(root, [r[1] for r in kept], [r[2] for r in kept], seed)
    rel = _rel(out)
    table = pa.table({S.SAMPLE_ID: [r[0] for r in kept], S.LABEL: pa.array([r[1] for r in kept], pa.int64()),
                      S.SPLIT: splits, "audio": [rel(r[3]) for r in kept], "visual": [rel(r[4]) for r in kept]})
    return table.replace_schema_metadata({"bss.val_from_train": json.dumps(VAL_FRACTION if carved else None),
                                          "bss.dropped_clips": json.dumps(dropped), "bss.classes": json.dumps(classes)})


def _split_files(root: Path, stem_sets: dict[str, tuple[str, ...]], exts: tuple[str, ...]) -> dict[str, Path]:
    """{split: file} for the first existing ROOT/<stem><ext> of each split's stems."""
    out = {}
    for split, stems in stem_sets.items():
        for stem in stems:
            for ext in exts:
                if (root / f"{stem}{ext}").is_file():
                    out.setdefault(split, root / f"{stem}{ext}")
    return out


def kinetics_sounds(root: Path, out: Path, *, media: MediaConfig, audio_dir: str = "audio",
                    frames_dir: str = "frames", seed: int = 0, drop_short: bool = False) -> pa.Table:
    root = Path(root)
    ann = root / "annotations"
    files = _split_files(ann, {"train": ("train",), "val": ("val", "valid"), "test": ("test",)}, (".csv",))
    if "train" not in files or "test" not in files:
        raise ManifestError(root, [f"expected annotations/train.csv and annotations/test.csv in {root} (youtube_id, "
                                   "label per row); point bss at the unpacked Kinetics-Sounds folder"])
    _refuse_pickles(root, [root / audio_dir, root / frames_dir])
    codes: dict[str, int] = {}
    rows, problems = [], []
    for split in ("train", "val", "test"):
        if split not in files:
            continue
        for i, row in enumerate(_read_csv(files[split])):
            if len(row) < 2:
                problems.append(f"{files[split].name} row {i}: expected youtube_id,label, found {row!r}")
                continue
            clip, label = row[0].strip(), row[1].strip()
            if i == 0 and label.lower() == "label":
                continue  # a header
            if split == "train":
                codes.setdefault(label, len(codes))  # class ids in order of first appearance in train.csv
            if label not in codes:
                problems.append(f"{files[split].name} row {i}: label {label!r} does not occur in train.csv")
                continue
            rows.append((clip, codes[label], split))
    return _av_manifest(root, out, rows, problems, list(codes), media=media, audio_dir=audio_dir,
                        frames_dir=frames_dir, drop_short=drop_short, seed=seed)


def vggsound(root: Path, out: Path, *, media: MediaConfig, audio_dir: str = "audio", frames_dir: str = "frames",
             seed: int = 0, drop_short: bool = False) -> pa.Table:
    root = Path(root)
    files = _split_files(root, {"train": ("train",), "val": ("val", "valid"), "test": ("test",)}, (".csv",))
    enc = root / "label_encoding.json"
    if "train" not in files or "test" not in files or not enc.is_file():
        raise ManifestError(root, [f"expected train.csv, test.csv and label_encoding.json in {root}; point bss at "
                                   "the prepared VGGSound folder"])
    _refuse_pickles(root, [root / audio_dir, root / frames_dir])
    try:
        codes = json.loads(enc.read_text())
        assert isinstance(codes, dict) and all(isinstance(v, int) and not isinstance(v, bool) for v in codes.values())
    except (ValueError, UnicodeDecodeError, AssertionError, RecursionError):
        raise ManifestError(root, [f"{enc}: expected a JSON object label -> class id (integer)"]) from None
    rows, problems = [], []
    for split in ("train", "val", "test"):
        for i, row in enumerate(_read_csv(files[split]) if split in files else []):
            row = [c.strip() for c in row]
            if i == 0 and any(c.lower() == "label" for c in row):
                continue
            if len(row) >= 3 and row[1].replace(".", "", 1).isdigit():  # youtube_id, start_seconds, label[, split]
                clip, label = f"{row[0]}_{int(float(row[1])):06d}", row[2]
            elif len(row) >= 2:
                clip, label = row[0], row[1]
            else:
                problems.append(f"{files[split].name} row {i}: expected id,label or youtube_id,start,label")
                continue
            if label not in codes:
                problems.append(f"{files[split].name} row {i}: label {label!r} is not in label_encoding.json")
                continue
            rows.append((clip, int(codes[label]), split))
    names = [k for k, _ in sorted(codes.items(), key=lambda kv: kv[1])]
    return _av_manifest(root, out, rows, problems, names, media=media, audio_dir=audio_dir, frames_dir=frames_dir,
                        drop_short=drop_short, seed=seed)


def _flow_layout(root: Path, path: Path) -> str:
    from bss_cli.data.media import volume_shape

    shape = volume_shape(path)
    if len(shape) == 3:
        return "THW"
    if len(shape) == 4 and shape[0] in (1, 2, 3):
        return "CTHW"
    if len(shape) == 4 and shape[-1] in (1, 2, 3):
        return "THWC"
    raise ManifestError(root, [f"{path}: a flow array of shape {list(shape)}; expected [2, T, H, W] or [T, H, W, 2]"])


def nvgesture(root: Path, out: Path, *, media: MediaConfig, seed: int = 0) -> pa.Table:
    """NVGesture: ``nvgesture_{train,test}_correct_v2.lst`` (one clip per line: ``path:`` its folder,
    ``color:sk_color:S:E``, ``depth:sk_depth:S:E``, ``label:N`` with N from 1), RGB and depth as
    frame folders ``<path>/sk_color/``, ``<path>/sk_depth/`` (the clip's frames S..E-1, extracted
    from the videos; a video without its folder is named with the ffmpeg line that extracts it), and
    optical flow ``flow_data/{train,test}/<line index>.npy``. Labels N - 1 (25 gestures); val: about
    a tenth of the train subjects (no subject in two splits), seeded."""
    import re

    root = Path(root)
    lists = {split: root / f"nvgesture_{split}_correct_v2.lst" for split in ("train", "test")}
    if not all(p.is_file() for p in lists.values()):
        raise ManifestError(root, [f"expected nvgesture_train_correct_v2.lst and nvgesture_test_correct_v2.lst in "
                                   f"{root}; point bss at the NVGesture folder"])
    _refuse_pickles(root, [root / "flow_data"])
    rows, problems = [], []
    for split, lst in lists.items():
        for idx, line in enumerate(x for x in lst.read_text().splitlines() if x.strip()):
            fields = dict(tok.split(":", 1) for tok in line.split() if ":" in tok)
            try:
                clip_dir = root / fields["path"].removeprefix("./")
                label = int(fields["label"]) - 1
                color, depth = fields["color"].split(":")[0:3], fields["depth"].split(":")[0:3]
            except (KeyError, ValueError):
                problems.append(f"{lst.name} line {idx + 1}: expected path:, color:, depth: and label: fields")
                continue
            if not 0 <= label < 25:
                problems.append(f"{lst.name} line {idx + 1}: label {label + 1}, expected 1 to 25")
                continue
            folders = {}
            for modality, (name, start, end) in (("rgb", color), ("depth", depth)):
                folder = clip_dir / name
                n = _frames(folder)
                if n == 0:
                    video = clip_dir / f"{name}.avi"
                    how = (f"; extract it: ffmpeg -i {video} -vf \"select=between(n\\,{start}\\,{int(end) - 1})\" "
                           f"-vsync 0 {folder}/%05d.jpg") if video.is_file() else ""
                    problems.append(f"{lst.name} line {idx + 1}: no {modality} frames folder {folder}{how}")
                elif n < media.frames:
                    problems.append(f"{lst.name} line {idx + 1}: {n} {modality} frame(s) in {folder}, fewer than "
                                    f"--frames {media.frames}")
                folders[modality] = folder
            flow = root / "flow_data" / split / f"{idx}.npy"
            if not flow.is_file():
                problems.append(f"{lst.name} line {idx + 1}: no optical flow file {flow}")
            subject = re.search(r"subject(\d+)", str(clip_dir))
            rows.append((f"{split}-{idx}", label, split, folders.get("rgb"), folders.get("depth"), flow,
                         subject.group(1) if subject else str(clip_dir.name)))
    if problems:
        raise ManifestError(root, problems)
    subjects = sorted({r[6] for r in rows if r[2] == "train"})
    order = np.random.default_rng(seed).permutation(len(subjects))
    val = {subjects[i] for i in order[:max(1, int(round(VAL_FRACTION * len(subjects))))]} if len(subjects) > 1 else set()
    splits = ["val" if r[2] == "train" and r[6] in val else r[2] for r in rows]
    if "val" not in splits:
        raise ConfigError(f"{root}: the train clips come from {len(subjects)} subject(s); a val split by subject needs "
                          "two or more")
    rel = _rel(out)
    table = pa.table({S.SAMPLE_ID: [r[0] for r in rows], S.LABEL: pa.array([r[1] for r in rows], pa.int64()),
                      S.SPLIT: splits, "rgb": [rel(r[3]) for r in rows], "depth": [rel(r[4]) for r in rows],
                      "flow": [rel(r[5]) for r in rows], "meta_subject": [r[6] for r in rows]})
    return table.replace_schema_metadata({"bss.arrays": json.dumps({"flow": {"layout": _flow_layout(root, rows[0][5])}}),
                                          "bss.val_subjects": json.dumps(sorted(val))})

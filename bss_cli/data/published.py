"""Manifest builders for the paper's other audio-visual and gesture settings, reading the files as
they are published and as the authors' loaders read them (method.md section 8), with their label
coding and their splits (no torch):

* ``ks`` (Kinetics-Sounds): see :func:`kinetics_sounds` (the authors' annotations, the official
  Kinetics CSVs, OGM-GE's lists; per-split media folders; clips with more than 3 frames).
* ``vggsound``: see :func:`vggsound` (the published ``vggsound.csv`` or the authors' lists).
* ``nvgesture``: in :mod:`bss_cli.data.published_nvgesture` (NVIDIA's lists; every modality
  sampled in step inside the listed window). The image-text layouts (``twitter2015``, ``sarcasm``) are in
  :mod:`bss_cli.data.published_text`.

Every problem is named by file and row and reported together; given splits are kept, a missing
val split is carved from train (stratified, seeded, stated in the manifest's
``bss.val_from_train``); clips left out are listed in the manifest (``bss.dropped_clips``,
``bss.missing_clips``); a listed name that is not a plain file name is refused; a pickled file
where the loader expects data is refused with how to convert it; none is loaded.
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
    """The non-empty rows of a CSV list (UTF-8, a BOM allowed); a ManifestError naming the file and
    row for bytes that are not UTF-8 or a field past 1 MB."""
    rows = []
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            for row in reader:
                if row and any(c.strip() for c in row):
                    rows.append(row)
    except UnicodeDecodeError as exc:
        raise ManifestError(path.parent, [f"{path.name}: not UTF-8 text (byte {exc.start}); re-save it as UTF-8"]) \
            from None
    except csv.Error as exc:
        raise ManifestError(path.parent, [f"{path.name} row {reader.line_num}: not a CSV row ({exc})"]) from None
    return rows


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


def _split_files(root: Path, stem_sets: dict[str, tuple[str, ...]], exts: tuple[str, ...]) -> dict[str, Path]:
    """{split: file} for the first existing ROOT/<stem><ext> of each split's stems."""
    out = {}
    for split, stems in stem_sets.items():
        for stem in stems:
            for ext in exts:
                if (root / f"{stem}{ext}").is_file():
                    out.setdefault(split, root / f"{stem}{ext}")
    return out


MIN_FRAMES = 4  # the authors' KS and VGGSound loaders keep a clip only with more than 3 frames
MAX_CLASSES = 100_000  # a class id read from a list names one of this many at most (VGGSound has 310)
SHOWN = 10  # missing clips named in an error before "and N more"


def _media_dir(root: Path, pattern: str, split: str) -> Path:
    """ROOT/<pattern with {split} filled>; a val split without folders of its own uses train's
    (the authors' loader reads its held-out list from the train folders)."""
    folder = root / pattern.replace("{split}", split)
    if split == "val" and "{split}" in pattern and not folder.is_dir():
        folder = root / pattern.replace("{split}", "train")
    return folder


def unsafe_name(name: str) -> bool:
    """A listed file name that would reach outside its folder (a path, '..', absolute) or is empty."""
    return not name or name in (".", "..") or "/" in name or "\\" in name or "\x00" in name


def _clips(root: Path, rows: list[tuple], audio_dir: str, frames_dir: str, media: MediaConfig, *,
           drop_short: bool, skip_missing: bool) -> tuple[list[tuple], list[str], dict[str, list[str]]]:
    """Check every (names, label, split, where) row's audio file and frames folder, trying each of
    the row's candidate clip names. Returns (kept rows, problems, {"missing": [...], "dropped": [...]})."""
    problems, kept, missing, dropped, short = [], [], [], [], []
    for names, label, split, where in rows:
        audio, frames = _media_dir(root, audio_dir, split), _media_dir(root, frames_dir, split)
        if unsafe_name(names[0]):
            problems.append(f"{where}: clip id {names[0]!r} is not a plain file name (a path or '..' would read "
                            "outside the data folder)")
            continue
        names = [n for n in names if not unsafe_name(n)]
        clip = next((n for n in names if (audio / f"{n}.wav").is_file() and (frames / n).is_dir()), None)
        if clip is None:
            missing.append((names[0], where, audio / f"{names[0]}.wav", frames / names[0]))
            continue
        n = _frames(frames / clip)
        if n < MIN_FRAMES:
            dropped.append(clip)  # the authors' rule: more than 3 frames, else the clip is left out
            continue
        if n < media.frames:
            if drop_short:
                short.append(clip)
                continue
            problems.append(f"{where}: clip {clip!r} has {n} frame(s) in {frames / clip}, fewer than --frames "
                            f"{media.frames} (pass --drop-short to leave such clips out)")
            continue
        kept.append((clip, label, split, audio / f"{clip}.wav", frames / clip))
    if missing and not skip_missing:
        shown = "; ".join(f"{where}: {clip!r} ({'no ' + str(wav) if not wav.is_file() else 'no frames folder ' + str(fr)})"
                          for clip, where, wav, fr in missing[:SHOWN])
        more = f" and {len(missing) - SHOWN} more" if len(missing) > SHOWN else ""
        problems.insert(0, f"{len(missing)} listed clip(s) have no audio file or frames folder: {shown}{more}. Clips "
                           "of YouTube-sourced sets go missing; pass --skip-missing to leave them out (they are "
                           "listed in the manifest's bss.missing_clips)")
    return kept, problems, {"missing": [m[0] for m in missing], "dropped": dropped + short}


def _av_manifest(root: Path, out: Path, rows: list[tuple], problems: list[str], *, media: MediaConfig,
                 audio_dir: str, frames_dir: str, drop_short: bool, skip_missing: bool, seed: int,
                 classes: list[str] | None, label_from: str, extra_meta: dict | None = None) -> pa.Table:
    """The audio + frames manifest of (names, label, split, where) rows, every clip's files checked.

    ``classes`` None: labels are names, coded by order of first appearance among the kept train
    rows (the authors' KS loader); else labels are names in ``classes`` or ids into it."""
    if problems:
        raise ManifestError(root, problems)
    kept, found, left_out = _clips(root, rows, audio_dir, frames_dir, media, drop_short=drop_short,
                                   skip_missing=skip_missing)
    if found:
        raise ManifestError(root, found)
    if classes is None:
        classes = []
        for r in kept:
            if r[2] == "train" and r[1] not in classes:
                classes.append(r[1])
        unknown = sorted({r[1] for r in kept if r[1] not in classes}, key=str)
        if unknown:
            raise ManifestError(root, [f"label(s) {', '.join(map(repr, unknown[:5]))} of the held-out lists occur in "
                                       "no kept train clip"])
        ids = [classes.index(r[1]) for r in kept]
    else:
        ids = [r[1] if isinstance(r[1], int) else classes.index(r[1]) for r in kept]
    train_ids = {i for i, r in zip(ids, kept) if r[2] == "train"}
    if len(train_ids) < 2:
        raise ManifestError(root, [f"the train clips have {len(train_ids)} distinct label(s) (read from {label_from}); "
                                   "a classifier needs two or more: is that the label column?"])
    splits, carved = _with_val(root, ids, [r[2] for r in kept], seed)
    rel = _rel(out)
    table = pa.table({S.SAMPLE_ID: [r[0] for r in kept], S.LABEL: pa.array(ids, pa.int64()), S.SPLIT: splits,
                      "audio": [rel(r[3]) for r in kept], "visual": [rel(r[4]) for r in kept]})
    return table.replace_schema_metadata({"bss.val_from_train": json.dumps(VAL_FRACTION if carved else None),
                                          "bss.dropped_clips": json.dumps(left_out["dropped"]),
                                          "bss.missing_clips": json.dumps(left_out["missing"]),
                                          "bss.classes": json.dumps([str(c) for c in classes]),
                                          "bss.label_from": json.dumps(label_from), **(extra_meta or {})})


def _header(row: list[str]) -> dict[str, int]:
    return {c.strip().lower(): i for i, c in enumerate(row)}


def _is_int(text: str) -> bool:
    return text.isascii() and text.strip().isdigit()


def _is_number(text: str) -> bool:
    t = text.strip()
    return t.isascii() and t.replace(".", "", 1).isdigit()


SPLIT_WORDS = {"train": "train", "training": "train", "val": "val", "valid": "val", "validate": "val",
               "validation": "val", "test": "test", "testing": "test"}


def _ks_list(path: Path, split: str) -> tuple[list[tuple], list[str], str]:
    """One Kinetics-Sounds list: (rows of (clip names, label, split, where), problems, label source).

    Known formats: a header naming ``youtube_id`` and ``label`` (the authors' annotations; the
    official Kinetics CSVs ``label,youtube_id,time_start,time_end,split[,is_cc]``, whose clips may
    also be named ``<id>_<start:06d>_<end:06d>``), or OGM-GE's lists ``clip,10,class_id`` without a
    header. Anything else is refused, naming what it would have read."""
    table = _read_csv(path)
    if not table:
        return [], [f"{path.name}: the list is empty"], ""
    head = _header(table[0])
    rows, problems = [], []
    if "youtube_id" in head and "label" in head:
        yt, lab = head["youtube_id"], head["label"]
        start, end, col_split = head.get("time_start"), head.get("time_end"), head.get("split")
        for i, row in enumerate(table[1:], start=2):
            where = f"{path.name} row {i}"
            if len(row) < len(head):
                problems.append(f"{where}: {len(row)} field(s), the header names {len(head)}")
                continue
            if col_split is not None and SPLIT_WORDS.get(row[col_split].strip().lower(), split) != split:
                problems.append(f"{where}: split column says {row[col_split].strip()!r} in the {split} list")
                continue
            names = [row[yt].strip()]
            if start is not None and end is not None and _is_number(row[start]) and _is_number(row[end]):
                names.append(f"{names[0]}_{int(float(row[start])):06d}_{int(float(row[end])):06d}")
            rows.append((names, row[lab].strip(), split, where))
        return rows, problems, "the 'label' column"
    if all(len(r) == 3 and _is_number(r[1]) and _is_int(r[2]) for r in table):
        for i, row in enumerate(table, start=1):
            if int(row[2]) >= MAX_CLASSES:
                problems.append(f"{path.name} row {i}: class id {row[2].strip()[:30]}, expected below {MAX_CLASSES}")
                continue
            rows.append(([row[0].strip()], int(row[2]), split, f"{path.name} row {i}"))
        return rows, problems, "column 3 (OGM-GE's class id)"
    return [], [f"{path.name}: an unknown list format (first row {table[0][:6]!r}); expected a header naming "
                "youtube_id and label (the authors' annotations, the official Kinetics CSVs) or OGM-GE's "
                "clip,10,class_id rows without a header; column 2 would not be a label"], ""


def kinetics_sounds(root: Path, out: Path, *, media: MediaConfig, audio_dir: str = "{split}_wav",
                    frames_dir: str = "{split}_img/Image-01-FPS", seed: int = 0, drop_short: bool = False,
                    skip_missing: bool = False) -> pa.Table:
    """Kinetics-Sounds as the authors' loader reads it: ``annotations/{train,test}.csv`` (val
    optional), audio ``{split}_wav/<id>.wav``, frames ``{split}_img/Image-01-FPS/<id>/``; a clip is
    kept with more than 3 frames; class ids in order of first appearance among the kept train
    clips (OGM-GE's lists carry their ids)."""
    root = Path(root)
    ann = root / "annotations" if (root / "annotations").is_dir() else root
    files = _split_files(ann, {"train": ("train", "my_train"), "val": ("val", "valid", "validate"),
                               "test": ("test", "my_test")}, (".csv", ".txt"))
    if "train" not in files or "test" not in files:
        raise ManifestError(root, [f"expected annotations/train.csv and annotations/test.csv in {root} (the authors' "
                                   "lists; OGM-GE's my_train.txt and my_test.txt also work); point bss at the "
                                   "unpacked Kinetics-Sounds folder"])
    _refuse_pickles(root, [_media_dir(root, d, s) for d in (audio_dir, frames_dir) for s in files])
    rows, problems, sources = [], [], set()
    for split in ("train", "val", "test"):
        if split in files:
            r, p, source = _ks_list(files[split], split)
            rows, problems = rows + r, problems + p
            sources.add(source)
    if len(sources - {""}) > 1:
        problems.append(f"the lists mix formats ({', '.join(sorted(sources - {''}))}); give all splits in one format")
    ids = all(isinstance(r[1], int) for r in rows) and bool(rows)
    classes = [str(i) for i in range(max(r[1] for r in rows) + 1)] if ids else None
    return _av_manifest(root, out, rows, problems, media=media, audio_dir=audio_dir, frames_dir=frames_dir,
                        drop_short=drop_short, skip_missing=skip_missing, seed=seed, classes=classes,
                        label_from=", ".join(sorted(sources - {""})))


def _vgg_rows(root: Path, files: dict[str, Path]) -> tuple[list[tuple], list[str], str]:
    """(names, label, split, where) rows of the VGGSound lists: the original ``vggsound.csv``
    (``youtube_id,start_seconds,label,split``, no header; the clip is ``<id>_<start:06d>``) or the
    authors' ``train.csv`` / ``test.csv`` (no header; label in column 1, the clip in column 2 less
    its first character, as their loader reads it)."""
    rows, problems = [], []
    if "all" in files:
        for i, row in enumerate(_read_csv(files["all"]), start=1):
            where = f"{files['all'].name} row {i}"
            if len(row) != 4 or not _is_number(row[1]):
                problems.append(f"{where}: expected youtube_id,start_seconds,label,split, found {row[:5]!r}")
                continue
            split = SPLIT_WORDS.get(row[3].strip().lower())
            if split is None:
                problems.append(f"{where}: split {row[3].strip()!r}, expected train or test")
                continue
            rows.append(([f"{row[0].strip()}_{int(float(row[1])):06d}"], row[2].strip(), split, where))
        return rows, problems, "column 3 of vggsound.csv"
    for split in ("train", "val", "test"):
        for i, row in enumerate(_read_csv(files[split]) if split in files else [], start=1):
            where = f"{files[split].name} row {i}"
            if len(row) < 3 or not row[2].strip():
                problems.append(f"{where}: expected the authors' rows (label in column 2, clip in column 3), found "
                                f"{row[:5]!r}")
                continue
            rows.append(([row[2][1:], row[2].strip()], row[1].strip(), split, where))
    return rows, problems, "column 2 of the authors' lists"


def vggsound(root: Path, out: Path, *, media: MediaConfig, audio_dir: str = "AudioWAV",
             frames_dir: str = "Image-01-FPS", seed: int = 0, drop_short: bool = False,
             skip_missing: bool = False) -> pa.Table:
    """VGGSound: the original ``vggsound.csv`` or the authors' ``train.csv`` / ``test.csv``;
    ``AudioWAV/<clip>.wav`` and ``Image-01-FPS/<clip>/``; class ids from ``label_encoding.json``
    (label -> id) when present, else the sorted label names of the train rows (stated in
    ``bss.label_encoding``); a clip is kept with more than 3 frames."""
    root = Path(root)
    files = _split_files(root, {"train": ("train",), "val": ("val", "valid"), "test": ("test",),
                                "all": ("vggsound",)}, (".csv",))
    if "all" in files:
        files = {"all": files["all"]}
    elif "train" not in files or "test" not in files:
        raise ManifestError(root, [f"expected vggsound.csv (the published list) or the authors' train.csv and "
                                   f"test.csv in {root}; point bss at the VGGSound folder"])
    _refuse_pickles(root, [root / audio_dir, root / frames_dir])
    rows, problems, label_from = _vgg_rows(root, files)
    enc = root / "label_encoding.json"
    built = not enc.is_file()
    if built:
        names = sorted({r[1] for r in rows if r[2] == "train"})
        codes = {name: i for i, name in enumerate(names)}
    else:
        try:
            codes = json.loads(enc.read_text(encoding="utf-8"))
            assert isinstance(codes, dict) and codes
            assert all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v < MAX_CLASSES for v in codes.values())
            assert len(set(codes.values())) == len(codes)
        except (ValueError, UnicodeDecodeError, AssertionError, RecursionError):
            raise ManifestError(root, [f"{enc}: expected a JSON object label -> distinct class id (0 or more)"]) \
                from None
    for names, label, split, where in rows:
        if label not in codes:
            problems.append(f"{where}: label {label!r} is not in "
                            f"{'the train rows' if built else 'label_encoding.json'}")
    rows = [(names, codes[label], split, where) for names, label, split, where in rows if label in codes]
    classes = [""] * (max(codes.values()) + 1)
    for name, i in codes.items():
        classes[i] = name
    return _av_manifest(root, out, rows, problems, media=media, audio_dir=audio_dir, frames_dir=frames_dir,
                        drop_short=drop_short, skip_missing=skip_missing, seed=seed, classes=classes,
                        label_from=label_from,
                        extra_meta={"bss.label_encoding": json.dumps("built from the train rows' sorted labels"
                                                                     if built else "label_encoding.json")})

"""Manifest builders for data sets in their published folder layouts (no torch).

CREMA-D: ``ROOT/AudioWAV/<clip>.wav`` with ``<clip>`` = ``<actor>_<sentence>_<emotion>_<level>``
(e.g. ``1001_DFA_ANG_XX``) and one frames folder per clip, ``ROOT/<frames_dir>/<clip>/``
(``Image-01-FPS`` in the authors' preprocessing); the split lists ``train.csv`` / ``test.csv``
when present. See :func:`crema_d`.

The other published layouts are in :mod:`bss_cli.data.published` (audio-visual),
:mod:`bss_cli.data.published_nvgesture` (gestures) and :mod:`bss_cli.data.published_text` (image-text); :data:`LAYOUT_MEDIA` holds each layout's
decoding defaults, its authors' loader's.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pyarrow as pa

from bss_cli import schema as S
from bss_cli.artifacts import base_metadata, write_table
from bss_cli.data.media import IMAGE_EXTS, MediaConfig
from bss_cli.errors import ConfigError, ManifestError

# The authors' CREMA-D class ids (their loader's class_dict): NEU 0, HAP 1, SAD 2, FEA 3, DIS 4, ANG 5
CREMA_CLASSES = ("NEU", "HAP", "SAD", "FEA", "DIS", "ANG")
CREMA_EMOTIONS = {"ANG": "anger", "DIS": "disgust", "FEA": "fear", "HAP": "happy", "NEU": "neutral", "SAD": "sad"}
CREMA_NAME = re.compile(r"^(\d+)_([A-Za-z0-9]+)_([A-Z]{3})_([A-Za-z0-9]+)$")
# Clips of the published CREMA-D known to be broken (reported on the data set's own tracker)
CREMA_BAD = {"1076_MTI_NEU_XX": "reported unplayable", "1076_MTI_SAD_XX": "reported silent",
             "1064_TIE_SAD_XX": "reported zero-length"}
SPLIT_FRACTIONS = (0.7, 0.15, 0.15)
CREMA_SPLITS = ("given", "speaker", "random")


def _split_groups(groups: list[str], seed: int) -> dict[str, str]:
    """Assign whole groups (speakers) to train/val/test in the standard fractions, seeded."""
    uniq = sorted(set(groups))
    order = np.random.default_rng(seed).permutation(len(uniq))
    n_train = max(1, int(round(SPLIT_FRACTIONS[0] * len(uniq))))
    n_val = int(round(SPLIT_FRACTIONS[1] * len(uniq)))
    out = {}
    for rank, i in enumerate(order):
        out[uniq[i]] = "train" if rank < n_train else ("val" if rank < n_train + n_val else "test")
    return out


def _crema_lists(root: Path) -> dict[str, Path]:
    """The given split lists (OGM-GE's ``train.csv`` / ``test.csv``: ``clip,EMOTION`` rows, no
    header), in ROOT or ROOT/annotations (where the authors' loader reads them)."""
    for folder in (root, root / "annotations"):
        found = {s: folder / f"{s}.csv" for s in ("train", "test")}
        if all(p.is_file() for p in found.values()):
            return found
    return {}


def _wav_problem(wav: Path) -> str | None:
    """Why a WAV cannot be used (unreadable header, no audio frames), read from its header only."""
    import wave

    try:
        with wave.open(str(wav), "rb") as w:
            return "holds no audio (0 frames)" if w.getnframes() == 0 else None
    except (wave.Error, EOFError, OSError) as exc:
        return f"is not a readable PCM WAV ({exc})"


def crema_d(root: Path, out: Path, *, media: MediaConfig | None = None, frames_dir: str = "Image-01-FPS",
            split: str | None = None, seed: int = 0, skip_bad: bool = False) -> pa.Table:
    """The CREMA-D manifest table (audio + visual), paths relative to ``out``'s folder.

    ``split``: ``given`` (the default when ``train.csv`` and ``test.csv`` are present: the lists
    the paper's code trains and tests on, val carved from train), ``speaker`` (no actor in two
    splits, 70/15/15; the default without lists) or ``random`` (stratified). Labels are the
    authors' ids (NEU 0, HAP 1, SAD 2, FEA 3, DIS 4, ANG 5). The known broken clips and any WAV
    without audio are named; ``skip_bad`` drops them."""
    from bss_cli.data.published import VAL_FRACTION, _refuse_pickles, _rel, _with_val

    root = Path(root)
    audio_dir, frame_root = root / "AudioWAV", root / frames_dir
    if not audio_dir.is_dir():
        raise ManifestError(root, [f"no AudioWAV folder in {root}; point bss at the unpacked CREMA-D folder"])
    if not frame_root.is_dir():
        raise ManifestError(root, [f"no frames folder {frames_dir!r} in {root}; extract frames per clip into "
                                   f"{frame_root}/<clip>/ or name the folder with --frames-dir"])
    _refuse_pickles(root, [audio_dir, frame_root])
    lists = _crema_lists(root)
    split = split or ("given" if lists else "speaker")
    if split not in CREMA_SPLITS:
        raise ConfigError(f"--split {split!r}: expected one of {', '.join(CREMA_SPLITS)}")
    if split == "given" and not lists:
        raise ManifestError(root, [f"--split given needs train.csv and test.csv (clip,EMOTION rows, as OGM-GE "
                                   f"published them) in {root} or {root / 'annotations'}; or use --split speaker"])
    if split == "given":
        listed = _crema_listed(lists)
    else:
        listed = [(wav.stem, None, None, None) for wav in sorted(audio_dir.glob("*.wav"))]
        if not listed:
            raise ManifestError(root, [f"{audio_dir} holds no .wav files"])
    rows, problems, bad = [], [], []
    for clip, emotion, where, given in listed:
        where = where or f"{clip}.wav"
        m = CREMA_NAME.match(clip)
        if not m:
            problems.append(f"{where}: clip name {clip!r} does not follow <actor>_<sentence>_<emotion>_<level>")
            continue
        actor, _, code, _ = m.groups()
        emotion = emotion if emotion is not None else code
        if emotion not in CREMA_CLASSES:
            problems.append(f"{where}: unknown emotion {emotion!r}; expected one of {', '.join(CREMA_CLASSES)}")
            continue
        if emotion != code:
            problems.append(f"{where}: emotion {emotion!r} disagrees with the clip name's {code!r}")
            continue
        wav, frames = audio_dir / f"{clip}.wav", frame_root / clip
        if not wav.is_file():
            problems.append(f"{where}: no audio file {wav}")
            continue
        if not frames.is_dir() or not any(p.suffix.lower() in IMAGE_EXTS for p in frames.iterdir()):
            problems.append(f"{where}: no frames folder with images at {frames}")
            continue
        why = CREMA_BAD.get(clip) or _wav_problem(wav)
        if why:
            bad.append((clip, why))
            if skip_bad:
                continue
        rows.append((clip, CREMA_CLASSES.index(emotion), actor, wav, frames, given))
    if bad and not skip_bad:
        problems += [f"{clip}.wav: {why}; pass --skip-bad to drop the known broken clips" for clip, why in bad]
    if problems:
        raise ManifestError(root, problems)
    labels = [r[1] for r in rows]
    carved = False
    if split == "given":
        splits, carved = _with_val(root, labels, [r[5] for r in rows], seed)
    elif split == "speaker":
        by_actor = _split_groups([r[2] for r in rows], seed)
        splits = [by_actor[r[2]] for r in rows]
    else:
        from bss_cli.data.sample_data import stratified_split

        splits = stratified_split(np.asarray(labels, dtype=object), seed).tolist()
    empty = [name for name in ("train", "val", "test") if name not in splits]
    if empty:
        found = sorted({r[2] for r in rows})
        how = (f"a split by speaker needs at least 3 actors, found {len(found)} ({', '.join(found[:5])}); add "
               "actors or use --split random" if split == "speaker" else f"{len(rows)} clips are too few")
        raise ConfigError(f"{root}: the {', '.join(empty)} split(s) would be empty: {how}")
    rel = _rel(out)
    table = pa.table({S.SAMPLE_ID: [r[0] for r in rows], S.LABEL: pa.array(labels, pa.int64()), S.SPLIT: splits,
                      "audio": [rel(r[3]) for r in rows], "visual": [rel(r[4]) for r in rows],
                      "meta_actor": [r[2] for r in rows]})
    return table.replace_schema_metadata({
        "bss.classes": json.dumps(list(CREMA_CLASSES)), "bss.split": json.dumps(split),
        "bss.val_from_train": json.dumps(VAL_FRACTION if carved else None),
        "bss.dropped_clips": json.dumps([clip for clip, _ in bad] if skip_bad else [])})


def _crema_listed(lists: dict[str, Path]) -> list[tuple[str, str, str, str]]:
    """(clip, emotion, 'train.csv row N', split) of the given lists, in their order."""
    from bss_cli.data.published import _read_csv

    out = []
    for split, path in lists.items():
        for i, row in enumerate(_read_csv(path), start=1):  # UTF-8 with a BOM, as the authors' loader reads it
            emotion = row[1].strip() if len(row) > 1 else ""
            out.append((row[0].strip(), emotion, f"{path.name} row {i}", split))
    return out


def _layouts() -> dict:
    from bss_cli.data import published as P
    from bss_cli.data import published_nvgesture as N
    from bss_cli.data import published_text as T

    return {"crema-d": crema_d, "ks": P.kinetics_sounds, "vggsound": P.vggsound, "twitter2015": T.twitter2015,
            "sarcasm": T.sarcasm, "nvgesture": N.nvgesture}


LAYOUT_NAMES = ("crema-d", "ks", "vggsound", "twitter2015", "sarcasm", "nvgesture")

# Each layout's decoding defaults are what the authors' loader for it does (method.md section 8);
# a flag overrides one, and the manifest's bss.media records what was used.
LAYOUT_MEDIA = {
    "crema-d": {"sample_rate": 22050, "seconds": 20.0, "frames": 1, "image_size": 224},
    "ks": {"sample_rate": 35400, "seconds": 10.0, "frames": 3, "image_size": 224},
    "vggsound": {"sample_rate": 35400, "seconds": 20.0, "frames": 1, "image_size": 384},
    "twitter2015": {"image_size": 384},
    "sarcasm": {"image_size": 224},
    "nvgesture": {"frames": 64, "image_size": 224},
}


def layout_media(layout: str, **given) -> MediaConfig:
    """The layout's decoding settings: its defaults, then every setting given (not None)."""
    return MediaConfig(**{**LAYOUT_MEDIA.get(layout, {}), **{k: v for k, v in given.items() if v is not None}})


def build_manifest(layout: str, root: str | Path, out: str | Path, media: MediaConfig, **options) -> pa.Table:
    """Build a manifest for ``layout`` and write it (with ``bss.media``) atomically to ``out``.

    ``options`` that are None are left to the layout's defaults; one the layout does not take is
    refused (naming the flag), never ignored."""
    import inspect

    layouts = _layouts()
    if layout not in layouts:
        raise ConfigError(f"unknown layout {layout!r}; choose one of: {', '.join(layouts)}")
    builder = layouts[layout]
    takes = set(inspect.signature(builder).parameters) - {"root", "out", "media"}
    given = {k: v for k, v in options.items() if v is not None}
    refused = sorted(k for k in given if k not in takes)
    if refused:
        flags = ", ".join("--" + k.replace("_", "-") for k in refused)
        raise ConfigError(f"{flags} does not apply to the {layout} layout (it takes "
                          f"{', '.join('--' + k.replace('_', '-') for k in sorted(takes)) or 'no options'})")
    table = builder(Path(root), Path(out), media=media, **given)
    extra = {k.decode(): v.decode() for k, v in (table.schema.metadata or {}).items()}
    meta = base_metadata(S.KIND_MANIFEST, **{"bss.media": media.to_dict(), "bss.layout": layout})
    write_table(table.replace_schema_metadata(None), out, {**meta, **extra})
    return table

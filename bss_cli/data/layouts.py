"""Manifest builders for data sets in their published folder layouts (no torch).

CREMA-D: ``ROOT/AudioWAV/<clip>.wav`` with ``<clip>`` = ``<actor>_<sentence>_<emotion>_<level>``
(e.g. ``1001_DFA_ANG_XX``) and one frames folder per clip, ``ROOT/<frames_dir>/<clip>/``
(``Image-01-FPS`` in the authors' preprocessing). The label is the emotion code. The split is by
speaker (no actor in two splits) unless ``split="random"``.

Other audio-visual sets follow the same pattern: an audio folder and a frames folder keyed by the
clip name, with labels from the names (CREMA-D) or from a CSV (Kinetics-Sounds, VGGSound, AVE),
so a builder for them is one more function in :data:`LAYOUTS`.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pyarrow as pa

from bss_cli import schema as S
from bss_cli.artifacts import base_metadata, write_table
from bss_cli.data.media import IMAGE_EXTS, MediaConfig
from bss_cli.errors import ConfigError, ManifestError

CREMA_EMOTIONS = {"ANG": "anger", "DIS": "disgust", "FEA": "fear", "HAP": "happy", "NEU": "neutral", "SAD": "sad"}
CREMA_NAME = re.compile(r"^(\d+)_([A-Za-z0-9]+)_([A-Z]{3})_([A-Za-z0-9]+)$")
SPLIT_FRACTIONS = (0.7, 0.15, 0.15)


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


def crema_d(root: Path, out: Path, *, frames_dir: str = "Image-01-FPS", split: str = "speaker", seed: int = 0,
            media: MediaConfig | None = None) -> pa.Table:
    """The CREMA-D manifest table (audio + visual), paths relative to ``out``'s folder."""
    root = Path(root)
    audio_dir, frame_root = root / "AudioWAV", root / frames_dir
    problems = []
    if not audio_dir.is_dir():
        raise ManifestError(root, [f"no AudioWAV folder in {root}; point bss at the unpacked CREMA-D folder"])
    if not frame_root.is_dir():
        raise ManifestError(root, [f"no frames folder {frames_dir!r} in {root}; extract frames per clip into "
                                   f"{frame_root}/<clip>/ or name the folder with --frames-dir"])
    from bss_cli.data.published import _refuse_pickles

    _refuse_pickles(root, [audio_dir, frame_root])
    wavs = sorted(audio_dir.glob("*.wav"))
    if not wavs:
        raise ManifestError(root, [f"{audio_dir} holds no .wav files"])
    rows = []
    for wav in wavs:
        m = CREMA_NAME.match(wav.stem)
        if not m:
            problems.append(f"{wav.name}: name does not follow <actor>_<sentence>_<emotion>_<level>")
            continue
        actor, _, emotion, _ = m.groups()
        if emotion not in CREMA_EMOTIONS:
            problems.append(f"{wav.name}: unknown emotion code {emotion!r}; expected one of {', '.join(CREMA_EMOTIONS)}")
            continue
        frames = frame_root / wav.stem
        if not frames.is_dir() or not any(p.suffix.lower() in IMAGE_EXTS for p in frames.iterdir()):
            problems.append(f"{wav.name}: no frames folder with images at {frames}")
            continue
        rows.append((wav.stem, CREMA_EMOTIONS[emotion], actor, wav, frames))
    if problems:
        raise ManifestError(root, problems)
    if split == "speaker":
        by_actor = _split_groups([r[2] for r in rows], seed)
        splits = [by_actor[r[2]] for r in rows]
    elif split == "random":
        from bss_cli.data.sample_data import stratified_split

        splits = stratified_split(np.asarray([r[1] for r in rows], dtype=object), seed).tolist()
    else:
        raise ConfigError(f"--split {split!r}: expected speaker or random")
    empty = [name for name in ("train", "val", "test") if name not in splits]
    if empty:
        found = sorted({r[2] for r in rows})
        how = (f"a split by speaker needs at least 3 actors, found {len(found)} ({', '.join(found[:5])}); add "
               "actors or use --split random" if split == "speaker" else f"{len(rows)} clips are too few")
        raise ConfigError(f"{root}: the {', '.join(empty)} split(s) would be empty: {how}")
    base = Path(out).resolve().parent
    rel = lambda p: os.path.relpath(Path(p).resolve(), base)  # noqa: E731
    return pa.table({S.SAMPLE_ID: [r[0] for r in rows], S.LABEL: [r[1] for r in rows], S.SPLIT: splits,
                     "audio": [rel(r[3]) for r in rows], "visual": [rel(r[4]) for r in rows],
                     "meta_actor": [r[2] for r in rows]})


def _layouts() -> dict:
    from bss_cli.data import published as P
    from bss_cli.data import published_text as T

    return {"crema-d": crema_d, "ks": P.kinetics_sounds, "vggsound": P.vggsound, "twitter2015": T.twitter2015,
            "sarcasm": T.sarcasm, "nvgesture": P.nvgesture}


LAYOUT_NAMES = ("crema-d", "ks", "vggsound", "twitter2015", "sarcasm", "nvgesture")


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

"""``bss build-manifest``: a manifest from a data set in its published folder layout."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Optional

import typer

from bss_cli.artifacts import check_output
from bss_cli.bounds import bound_problems
from bss_cli.cli.common import choices, handle_errors, out, print_json, written, wrote
from bss_cli.data.layouts import LAYOUT_NAMES, layout_media
from bss_cli.errors import ConfigError

Layout = choices("Layout", LAYOUT_NAMES)


@handle_errors
def build_manifest(
    layout: Annotated[Layout, typer.Argument(help="Folder layout of the data set.")],
    root: Annotated[Path, typer.Argument(help="The unpacked data set's folder.")],
    out_path: Annotated[Path, typer.Option("--out", "-o", help="Manifest to write (.parquet).")],
    frames_dir: Annotated[Optional[str], typer.Option(help="Folder of per-clip frame folders under ROOT; {split} is "
                                                           "replaced by the split (default: crema-d Image-01-FPS; ks "
                                                           "{split}_img/Image-01-FPS; vggsound Image-01-FPS).")] = None,
    audio_dir: Annotated[Optional[str], typer.Option(help="ks, vggsound: folder of <clip>.wav files under ROOT; {split} "
                                                          "is replaced by the split (default: ks {split}_wav; vggsound "
                                                          "AudioWAV).")] = None,
    images_dir: Annotated[Optional[str], typer.Option(help="twitter2015, sarcasm: image folder under ROOT (default: "
                                                           "twitter2015_images, dataset_image).")] = None,
    drop_short: Annotated[Optional[bool], typer.Option("--drop-short", help="ks, vggsound: leave out clips with more "
                                                       "than 3 frames but fewer than --frames (default: they are "
                                                       "refused by name; clips with 3 or fewer are always left out, "
                                                       "as the authors' loaders do).")] = None,
    skip_missing: Annotated[Optional[bool], typer.Option("--skip-missing", help="ks, vggsound: leave out listed clips "
                                                         "whose files are missing, listed in the manifest (default: "
                                                         "refused, naming them).")] = None,
    skip_bad: Annotated[Optional[bool], typer.Option("--skip-bad", help="crema-d: leave out the known broken clips "
                                                     "and WAVs without audio (default: refused, naming them).")] = None,
    split: Annotated[Optional[str], typer.Option(help="crema-d: given (train.csv/test.csv, val carved from train; the "
                                                      "default when they are present), speaker (no actor in two "
                                                      "splits; the default without lists) or random.")] = None,
    release: Annotated[Optional[str], typer.Option(help="sarcasm: which published files to read when ROOT holds "
                                                        "several: mmsd2 (text_json_final), mmsd-clean "
                                                        "(text_json_clean), mmsd (text/*.txt) or json (the authors' "
                                                        "{train,valid,test}.json) (default: the only one "
                                                        "present).")] = None,
    label_source: Annotated[Optional[str], typer.Option(help="sarcasm --release mmsd: which of the two labels of "
                                                             "valid2.txt/test2.txt: annotator (the last; default) or "
                                                             "hashtag.")] = None,
    target: Annotated[Optional[str], typer.Option(help="twitter2015: append (the text is the sentence with $T$ "
                                                       "filled in, then the target; default) or column (the sentence "
                                                       "as text, the target in meta_target).")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the split (and of a val split carved from train where a layout "
                                           "gives none).")] = 0,
    sample_rate: Annotated[Optional[int], typer.Option(help="Audio is resampled to this rate (default: the layout's "
                                                            "loader: crema-d 22050, ks and vggsound 35400).")] = None,
    seconds: Annotated[Optional[float], typer.Option(help="Clips are tiled or cut to this length (default: crema-d "
                                                          "20, ks 10, vggsound 20).")] = None,
    n_fft: Annotated[Optional[int], typer.Option(help="STFT size (default: 512).")] = None,
    hop: Annotated[Optional[int], typer.Option(help="STFT hop (default: 353).")] = None,
    image_size: Annotated[Optional[int], typer.Option(help="Frames are resized (eval) or crop-resized (train) to this "
                                                           "(default: 224; vggsound and twitter2015 384).")] = None,
    frames: Annotated[Optional[int], typer.Option(help="Frames per clip (default: crema-d and vggsound 1, ks 3, "
                                                       "nvgesture 64, a window inside the listed gesture).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print what was written as JSON on stdout (default: off).")] = False,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing output file (atomically) (default: off, an existing file is refused).")] = False,
) -> None:
    """Build a manifest from a data set's published layout: crema-d, ks, vggsound (audio WAV paths +
    frame folders), twitter2015, sarcasm (image paths + text, declared as text), nvgesture (RGB and
    depth frames + optical flow arrays).

    The decoding settings are stored in the manifest, so every later command uses the same ones.
    """
    from bss_cli.data.layouts import build_manifest as build

    started = time.perf_counter()
    check_output(out_path, force)
    problems = bound_problems({"seed": seed})
    if problems:
        raise ConfigError(problems[0])
    media = layout_media(Layout(layout).value, sample_rate=sample_rate, seconds=seconds, n_fft=n_fft, hop=hop,
                         image_size=image_size, frames=frames).validate()
    table = build(Layout(layout).value, root, out_path, media, frames_dir=frames_dir, audio_dir=audio_dir,
                  images_dir=images_dir, drop_short=drop_short, skip_missing=skip_missing, skip_bad=skip_bad,
                  split=split, release=release, label_source=label_source, target=target, seed=seed)
    counts = {s: table["split"].to_pylist().count(s) for s in ("train", "val", "test")}
    classes = sorted({str(c) for c in table["label"].to_pylist()})
    if as_json:
        print_json(written(out_path, table.num_rows, started, kind="manifest", splits=counts, classes=classes))
        return
    wrote(table.num_rows, out_path)
    out.print(f"splits: {counts}; classes: {', '.join(classes)}", markup=False)
    meta = {k.decode(): v.decode() for k, v in (table.schema.metadata or {}).items()}
    for key, what in (("bss.missing_clips", "listed clip(s) without files left out (--skip-missing)"),
                      ("bss.dropped_clips", "clip(s) left out by the loader's rules (too few frames, --skip-bad)")):
        left = json.loads(meta.get(key, "[]"))
        if left:
            out.print(f"{len(left)} {what}: {', '.join(left[:5])}{' ...' if len(left) > 5 else ''}", markup=False)


def register(app: typer.Typer) -> None:
    app.command("build-manifest")(build_manifest)

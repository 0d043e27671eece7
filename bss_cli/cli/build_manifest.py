"""``bss build-manifest``: a manifest from a data set in its published folder layout."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Optional

import typer

from bss_cli.artifacts import check_output
from bss_cli.bounds import bound_problems
from bss_cli.cli.common import choices, handle_errors, out, print_json, written, wrote
from bss_cli.data.layouts import LAYOUT_NAMES
from bss_cli.data.media import MediaConfig
from bss_cli.errors import ConfigError

Layout = choices("Layout", LAYOUT_NAMES)
_M = MediaConfig()


@handle_errors
def build_manifest(
    layout: Annotated[Layout, typer.Argument(help="Folder layout of the data set.")],
    root: Annotated[Path, typer.Argument(help="The unpacked data set's folder.")],
    out_path: Annotated[Path, typer.Option("--out", "-o", help="Manifest to write (.parquet).")],
    frames_dir: Annotated[Optional[str], typer.Option(help="Folder of per-clip frame folders under ROOT (default: "
                                                           "crema-d Image-01-FPS; ks, vggsound frames).")] = None,
    audio_dir: Annotated[Optional[str], typer.Option(help="ks, vggsound: folder of <clip>.wav files under ROOT "
                                                          "(default: audio).")] = None,
    images_dir: Annotated[Optional[str], typer.Option(help="twitter2015, sarcasm: image folder under ROOT (default: "
                                                           "twitter2015_images, dataset_image).")] = None,
    drop_short: Annotated[Optional[bool], typer.Option("--drop-short", help="ks, vggsound: drop clips with fewer than "
                                                       "--frames frames, as the authors' loader does (default: they "
                                                       "are refused by name).")] = None,
    split: Annotated[Optional[str], typer.Option(help="crema-d: speaker (no actor in two splits) or random "
                                                      "(stratified) (default: speaker). The other layouts keep their "
                                                      "given splits.")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the split (and of a val split carved from train where a layout "
                                           "gives none).")] = 0,
    sample_rate: Annotated[int, typer.Option(help="Audio is resampled to this rate.")] = _M.sample_rate,
    seconds: Annotated[float, typer.Option(help="Clips are tiled or cut to this length.")] = _M.seconds,
    n_fft: Annotated[int, typer.Option(help="STFT size.")] = _M.n_fft,
    hop: Annotated[int, typer.Option(help="STFT hop.")] = _M.hop,
    image_size: Annotated[int, typer.Option(help="Frames are resized (eval) or crop-resized (train) to this.")] = _M.image_size,
    frames: Annotated[int, typer.Option(help="Frames per clip: the first k in sorted name order.")] = _M.frames,
    as_json: Annotated[bool, typer.Option("--json", help="Print what was written as JSON on stdout (default: off).")] = False,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing output file (atomically) (default: off, an existing file is refused).")] = False,
) -> None:
    """Build a manifest from a data set's published layout: crema-d, ks, vggsound (audio WAV paths +
    frame folders), twitter2015, sarcasm (image paths + text, declared as text).

    The decoding settings are stored in the manifest, so every later command uses the same ones.
    """
    from bss_cli.data.layouts import build_manifest as build

    started = time.perf_counter()
    check_output(out_path, force)
    problems = bound_problems({"seed": seed})
    if problems:
        raise ConfigError(problems[0])
    media = MediaConfig(sample_rate=sample_rate, seconds=seconds, n_fft=n_fft, hop=hop, image_size=image_size,
                        frames=frames).validate()
    table = build(Layout(layout).value, root, out_path, media, frames_dir=frames_dir, audio_dir=audio_dir,
                  images_dir=images_dir, drop_short=drop_short, split=split, seed=seed)
    counts = {s: table["split"].to_pylist().count(s) for s in ("train", "val", "test")}
    classes = sorted({str(c) for c in table["label"].to_pylist()})
    if as_json:
        print_json(written(out_path, table.num_rows, started, kind="manifest", splits=counts, classes=classes))
        return
    wrote(table.num_rows, out_path)
    out.print(f"splits: {counts}; classes: {', '.join(classes)}")


def register(app: typer.Typer) -> None:
    app.command("build-manifest")(build_manifest)

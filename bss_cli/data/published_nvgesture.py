"""The NVGesture builder: NVIDIA's lists, RGB and depth frame folders and the authors' optical flow
arrays, every modality sampled in step inside the listed gesture window (see :func:`nvgesture`);
on the shared helpers of :mod:`bss_cli.data.published` (no torch)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa

from bss_cli import schema as S
from bss_cli.data.media import MediaConfig
from bss_cli.data.published import VAL_FRACTION, _frames, _is_int, _refuse_pickles, _rel, unsafe_name
from bss_cli.errors import ConfigError, ManifestError


def _flow_layout(root: Path, path: Path) -> str:
    from bss_cli.data.media import volume_shape

    try:
        shape = volume_shape(path)
    except (ValueError, OSError) as exc:
        raise ManifestError(root, [f"{path}: not a readable .npy array ({str(exc)[:120]})"]) from None
    if len(shape) == 4 and shape[2] in (1, 2, 3) and shape[0] == shape[1] and shape[0] > 3:
        return "HWCT"  # the authors' flow files: [H, W, 2, T]
    if len(shape) == 4 and shape[0] in (1, 2, 3):
        return "CTHW"
    if len(shape) == 4 and shape[-1] in (1, 2, 3):
        return "THWC"
    if len(shape) == 3:
        return "THW"
    raise ManifestError(root, [f"{path}: a flow array of shape {list(shape)}; expected [H, W, 2, T] (the authors' "
                               "files), [2, T, H, W] or [T, H, W, 2]"])


NV_LISTS = (("nvgesture_{}_correct_cvpr2016_v2.lst", "NVIDIA's release"), ("nvgesture_{}_correct_v2.lst", "the authors'"))


def _nv_lists(root: Path) -> dict[str, Path]:
    for pattern, _ in NV_LISTS:
        found = {s: root / pattern.format(s) for s in ("train", "test")}
        if all(p.is_file() for p in found.values()):
            return found
    raise ManifestError(root, [f"expected nvgesture_train_correct_cvpr2016_v2.lst and nvgesture_test_correct_cvpr2016_v2"
                               f".lst (NVIDIA's names; the authors' nvgesture_{{train,test}}_correct_v2.lst also work) "
                               f"in {root}; point bss at the NVGesture folder"])


def _nv_line(line: str, where: str) -> tuple[dict, str | None]:
    """A list line's fields: path, label (N - 1), and each sensor's (folder, S, E)."""
    fields = {}
    for tok in line.split():
        key, _, value = tok.partition(":")
        fields[key] = value
    if "path" not in fields or "label" not in fields or "color" not in fields or "depth" not in fields:
        return {}, f"{where}: expected path:, color:, depth: and label: fields"
    out = {"path": fields["path"]}
    if not _is_int(fields["label"]) or not 1 <= int(fields["label"]) <= 25:
        return {}, f"{where}: label {fields['label'][:20]!r}, expected 1 to 25"
    out["label"] = int(fields["label"]) - 1
    for sensor in ("color", "depth"):
        parts = fields[sensor].split(":")
        if len(parts) != 3 or not _is_int(parts[1]) or not _is_int(parts[2]) or int(parts[2]) <= int(parts[1]):
            return {}, f"{where}: {sensor}:{fields[sensor][:40]} needs <folder>:<start>:<end> with start < end"
        if unsafe_name(parts[0]):
            return {}, f"{where}: {sensor} folder {parts[0][:40]!r} is not a plain folder name"
        out[sensor] = (parts[0], int(parts[1]), int(parts[2]))
    rel = out["path"].removeprefix("./")
    if not rel or rel.startswith("/") or ".." in Path(rel).parts or "\x00" in rel:
        return {}, f"{where}: path {out['path'][:80]!r} leaves the data folder"
    out["path"] = rel
    return out, None


def _window_offset(n: int, start: int, end: int) -> int | None:
    """Where the list's window S..E-1 starts in a folder or array of n steps: 0 when it holds the
    window alone (as the printed ffmpeg line extracts it), S when it holds the whole video."""
    return 0 if n == end - start else start if n >= end else None


def _nv_clip(root: Path, flow: Path, f: dict, where: str, first: dict) -> tuple[tuple | None, list[str]]:
    """One listed clip's ((rgb folder, from), (depth folder, from), (flow file, from), subject,
    window length) and the problems found; ``first`` holds the flow layout and channel count of
    the first flow file, which every other one must share."""
    import re

    from bss_cli.data.media import check_volume, volume_steps

    clip_dir, problems, froms = root / f["path"], [], {}
    (_, c_start, c_end), (_, d_start, d_end) = f["color"], f["depth"]
    length = c_end - c_start
    if d_end - d_start != length:
        return None, [f"{where}: the color window has {length} frames, the depth window {d_end - d_start}"]
    for modality, (name, start, end) in (("rgb", f["color"]), ("depth", f["depth"])):
        folder = clip_dir / name
        n = _frames(folder)
        if n == 0:
            video = clip_dir / f"{name}.avi"
            how = (f"; extract its window: mkdir -p {folder} && ffmpeg -i {video} -vf "
                   f"\"select=between(n\\,{start}\\,{end - 1})\" -vsync 0 {folder}/%05d.jpg") if video.is_file() else ""
            problems.append(f"{where}: no {modality} frames folder {folder}{how}")
        elif (offset := _window_offset(n, start, end)) is None:
            problems.append(f"{where}: {folder} holds {n} frame(s); the window {start}..{end - 1} needs "
                            f"{end - start} (the window alone) or at least {end} (the whole video)")
        else:
            froms[modality] = (folder, offset)
    if not flow.is_file():
        return None, problems + [f"{where}: no optical flow file {flow}"]
    if "layout" not in first:
        first["layout"] = _flow_layout(root, flow)
    layout = first["layout"]
    try:
        a = np.load(flow, mmap_mode="r", allow_pickle=False)  # the header alone
        steps, channels = volume_steps(a.shape, layout), check_volume(a, layout)
    except (ValueError, OSError, IndexError, KeyError) as exc:
        return None, problems + [f"{where}: {flow} is not a usable {layout} flow array ({str(exc)[:160]})"]
    if first.setdefault("channels", channels) != channels:
        return None, problems + [f"{where}: {flow} has {channels} channel(s), the first flow file "
                                 f"{first['channels']}; every clip's flow has the same channels"]
    flow_from = _window_offset(steps, c_start, c_end)
    if flow_from is None:
        problems.append(f"{where}: {flow} has {steps} time step(s); the window needs {length} or at least {c_end}")
    if problems:
        return None, problems
    subject = re.search(r"subject(\d+)", f["path"])
    return (froms["rgb"], froms["depth"], (flow, flow_from), subject.group(1) if subject else clip_dir.name,
            length), []


def nvgesture(root: Path, out: Path, *, media: MediaConfig, seed: int = 0) -> pa.Table:
    """NVGesture: NVIDIA's ``nvgesture_{train,test}_correct_cvpr2016_v2.lst`` (one clip a line:
    ``path:``, ``color:sk_color:S:E``, ``depth:sk_depth:S:E``, ``label:N`` with N from 1), RGB and
    depth as frame folders ``<path>/sk_color/``, ``<path>/sk_depth/`` (the window S..E-1 alone, or
    the whole video; a video without its folder is named with the ffmpeg line that extracts the
    window), and optical flow ``flow_data/{train,test}/<line index>.npy`` in ROOT or
    ROOT/Video_data (the authors' ``[H, W, 2, T]`` over the window, or the whole video). Every
    modality of a sample is sampled at the same steps of its window (``bss.clip``, see
    media.clip_plan); depth is read as one channel without ImageNet normalisation. Labels N - 1
    (25 gestures); val: about a tenth of the train subjects (no subject in two splits), seeded."""
    root = Path(root)
    lists = _nv_lists(root)
    flow_root = root / "flow_data" if (root / "flow_data").is_dir() else root / "Video_data" / "flow_data"
    _refuse_pickles(root, [flow_root])
    rows, problems, first = [], [], {}
    for split, lst in lists.items():
        try:
            lines = lst.read_text(encoding="utf-8").splitlines()
        except UnicodeDecodeError as exc:
            raise ManifestError(root, [f"{lst.name}: not UTF-8 text (byte {exc.start})"]) from None
        idx = -1
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            idx += 1  # the flow file's index: the line's place among the list's clips
            where = f"{lst.name} line {number}"
            f, problem = _nv_line(line, where)
            if problem:
                problems.append(problem)
                continue
            row, found = _nv_clip(root, flow_root / split / f"{idx}.npy", f, where, first)
            problems += found
            if row is not None:
                rows.append((f"{split}-{idx}", f["label"], split, *row))
    if problems:
        raise ManifestError(root, problems)
    subjects = sorted({r[6] for r in rows if r[2] == "train"})
    order = np.random.default_rng(seed).permutation(len(subjects))
    val = {subjects[i] for i in order[:max(1, int(round(VAL_FRACTION * len(subjects))))]} if len(subjects) > 1 else set()
    splits = ["val" if r[2] == "train" and r[6] in val else r[2] for r in rows]
    if "val" not in splits or "test" not in splits:
        raise ConfigError(f"{root}: the train clips come from {len(subjects)} subject(s) and the test list has "
                          f"{splits.count('test')} clip(s); a val split by subject needs two or more train subjects, "
                          "and the test list clips")
    rel = _rel(out)
    table = pa.table({S.SAMPLE_ID: [r[0] for r in rows], S.LABEL: pa.array([r[1] for r in rows], pa.int64()),
                      S.SPLIT: splits, "rgb": [rel(r[3][0]) for r in rows], "depth": [rel(r[4][0]) for r in rows],
                      "flow": [rel(r[5][0]) for r in rows], "meta_subject": [r[6] for r in rows],
                      "meta_window": pa.array([r[7] for r in rows], pa.int64()),
                      "meta_rgb_from": pa.array([r[3][1] for r in rows], pa.int64()),
                      "meta_depth_from": pa.array([r[4][1] for r in rows], pa.int64()),
                      "meta_flow_from": pa.array([r[5][1] for r in rows], pa.int64())})
    clip = {"length": "meta_window", "from": {"rgb": "meta_rgb_from", "depth": "meta_depth_from",
                                              "flow": "meta_flow_from"}}
    return table.replace_schema_metadata({"bss.arrays": json.dumps({"flow": {"layout": first["layout"]}}),
                                          "bss.clip": json.dumps(clip),
                                          "bss.images": json.dumps({"depth": {"channels": 1, "normalize": "none"}}),
                                          "bss.val_subjects": json.dumps(sorted(val))})

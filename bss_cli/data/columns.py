"""Decoding and checking one manifest column: inline vectors, text vectors, or file paths."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from bss_cli.bounds import FILE_BOUNDS
from bss_cli.data.media import (
    AUDIO_EXTS,
    IMAGE_EXTS,
    VOLUME_LAYOUTS,
    MediaConfig,
    check_image,
    check_volume,
    check_wav,
    kind_of,
    volume_layout,
)
from bss_cli.errors import MAX_ROWS_LISTED, ConfigError
from bss_cli.errors import rows_text as _rows

KNOWN_EXTENSIONS = (".npy",) + AUDIO_EXTS + IMAGE_EXTS


def vector_column(x: np.ndarray) -> pa.Array:
    """[N, D] numbers -> a list<float32> Arrow column (how bss writes inline vectors and logits)."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    return pa.FixedSizeListArray.from_arrays(pa.array(x.ravel()), x.shape[1]).cast(pa.list_(pa.float32()))


MAX_ARRAY_LENGTH = int(FILE_BOUNDS["bss.arrays length"].high)  # far past any clip, far below exhausting memory


def _load_npy(path: Path) -> np.ndarray:
    return np.asarray(np.load(path, allow_pickle=False), dtype=np.float32)


def column_settings(metadata: dict | None, key: str, example: str) -> dict[str, dict]:
    """A manifest metadata entry ``key`` that maps each column to a table of settings (``bss.arrays``,
    ``bss.text``); {} when absent, a ConfigError quoting ``example`` when it is not such a table."""
    raw = (metadata or {}).get(key.encode())
    if not raw:
        return {}
    try:
        settings = json.loads(raw)
        assert isinstance(settings, dict) and all(isinstance(v, dict) for v in settings.values())
    except (json.JSONDecodeError, UnicodeDecodeError, AssertionError, RecursionError):
        raise ConfigError(f"manifest metadata {key} is not valid: {raw[:200]!r}; expected {example}") from None
    return settings


def array_settings(metadata: dict | None) -> dict[str, dict]:
    """``bss.arrays`` of a manifest: column -> {"length": L, "time_axis": 0 or 1} for 2-D modalities,
    {"layout": ...} for volumes."""
    settings = column_settings(metadata, "bss.arrays", '{"column": {"length": 32, "time_axis": 1}}')
    for column, spec in settings.items():
        length, axis = spec.get("length"), spec.get("time_axis", 0)
        if length is not None and (not isinstance(length, int) or isinstance(length, bool)
                                   or not 1 <= length <= MAX_ARRAY_LENGTH):
            raise ConfigError(f"manifest metadata bss.arrays: column {column!r} has length {length!r}; expected an "
                              f"integer from 1 to {MAX_ARRAY_LENGTH:,} (the frames every array is padded or cut to)")
        if spec.get("layout") is not None and spec.get("layout") not in VOLUME_LAYOUTS:
            raise ConfigError(f"manifest metadata bss.arrays: column {column!r} has layout {spec.get('layout')!r}; "
                              f"expected one of {', '.join(VOLUME_LAYOUTS)} (how a 3-D or 4-D .npy volume is laid out)")
        if axis not in (0, 1) or isinstance(axis, bool):
            raise ConfigError(f"manifest metadata bss.arrays: column {column!r} has time_axis {axis!r}; expected 0 "
                              "(arrays are [time, features]) or 1 ([features, time])")
    return settings


def fit_time(a: np.ndarray, length: int | None, time_axis: int) -> np.ndarray:
    """Pad with zeros or crop a 2-D array along its time axis to ``length`` (None: as it is)."""
    if length is None or a.shape[time_axis] == length:
        return a
    if a.shape[time_axis] > length:
        return a[:length] if time_axis == 0 else a[:, :length]
    pad = [(0, length - a.shape[0]), (0, 0)] if time_axis == 0 else [(0, 0), (0, length - a.shape[1])]
    return np.pad(a, pad)


def stack_arrays(name: str, arrays: list[np.ndarray], spec: dict, problems: list[str]) -> np.ndarray | None:
    """[N, A, B] from 2-D arrays, each padded or cropped along time to the manifest's length."""
    time_axis = int(spec.get("time_axis", 1))
    if time_axis not in (0, 1):
        problems.append(f"bss.arrays[{name!r}].time_axis {time_axis}: expected 0 (rows are time) or 1 (columns)")
        return None
    length = spec.get("length")
    fitted = [fit_time(a, length, time_axis) for a in arrays]
    shapes = {a.shape for a in fitted}
    if len(shapes) > 1:
        lengths = sorted({a.shape[time_axis] for a in arrays})
        problems.append(f"column '{name}' holds 2-D arrays of shapes {sorted(shapes)[:4]}; to pad or crop them "
                        f"along time (lengths {lengths[0]}..{lengths[-1]}) set the manifest metadata "
                        f'bss.arrays = {{"{name}": {{"length": L, "time_axis": {time_axis}}}}}')
        return None
    return np.stack(fitted).astype(np.float32)


def inline_arrays(name: str, col: pa.ChunkedArray, spec: dict, problems: list[str]) -> np.ndarray | None:
    """[N, A, B] from a list<list<number>> column (one fixed-shape 2-D array per row)."""
    arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    if arr.null_count == 0 and len(arr):  # fast path: every row has the same shape
        outer = pc.list_value_length(arr).to_numpy()
        inner_lists = arr.flatten()
        if inner_lists.null_count == 0 and (outer == outer[0]).all():
            inner = pc.list_value_length(inner_lists).to_numpy()
            values = inner_lists.flatten()
            numeric = pa.types.is_integer(values.type) or pa.types.is_floating(values.type)
            if numeric and len(inner) and (inner == inner[0]).all() and values.null_count == 0:
                x = values.to_numpy(zero_copy_only=False).astype(np.float32)
                return stack_arrays(name, list(x.reshape(len(arr), int(outer[0]), int(inner[0]))), spec, problems)
    values = col.to_pylist()
    empty = [i for i, v in enumerate(values) if not v]
    if empty:
        problems.append(f"{_rows(empty)}: column '{name}' is empty; every sample needs every modality")
        return None
    arrays, ragged = [], []
    for i, v in enumerate(values):
        try:
            arrays.append(np.asarray(v, dtype=np.float32))
        except (ValueError, TypeError):
            ragged.append(i)
    if ragged or any(a.ndim != 2 for a in arrays):
        bad = ragged or [i for i, a in enumerate(arrays) if a.ndim != 2]
        problems.append(f"{_rows(bad)}: column '{name}' is not a 2-D array of numbers (rows of equal length)")
        return None
    return stack_arrays(name, arrays, spec, problems)


def _exists(p: Path) -> bool:
    try:
        return p.exists()
    except (OSError, ValueError):  # a name too long for the file system names no file
        return False


def _parse_text_vector(text: str) -> list[float]:
    text = text.strip()
    if text.startswith("["):
        return [float(v) for v in json.loads(text)]
    return [float(v) for v in text.replace(",", " ").replace(";", " ").split()]


def inline_matrix(name: str, col: pa.ChunkedArray, problems: list[str]) -> np.ndarray | None:
    """[N, D] float32 from a list column; record length, null and NaN/inf problems."""
    col = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    if pa.types.is_large_list(col.type) or pa.types.is_fixed_size_list(col.type):
        col = col.cast(pa.list_(col.type.value_type))
    nulls = np.flatnonzero(col.is_null().to_numpy(zero_copy_only=False))
    if len(nulls):
        problems.append(f"{_rows(nulls)}: column '{name}' is empty; every sample needs every modality")
        return None
    if not (pa.types.is_integer(col.type.value_type) or pa.types.is_floating(col.type.value_type)):
        problems.append(f"column '{name}' holds lists of {col.type.value_type}; expected numbers")
        return None
    lengths = pc.list_value_length(col).to_numpy()
    expected = int(lengths[0]) if len(lengths) else 0
    bad = np.flatnonzero(lengths != expected)
    if len(bad):
        problems.append(
            f"{_rows(bad)}: column '{name}' has {lengths[bad[0]]} values, expected {expected} "
            "(the first row's length)"
        )
        return None
    if expected == 0:
        problems.append(f"column '{name}' holds empty vectors")
        return None
    flat = col.flatten().fill_null(float("nan")).to_numpy(zero_copy_only=False).astype(np.float32)
    return flat.reshape(len(col), expected)


def text_values(name: str, col: pa.ChunkedArray, base: Path, media: MediaConfig,
                 problems: list[str], array_spec: dict | None = None, progress=None
                 ) -> tuple[np.ndarray | None, str, str, list[Path] | None]:
    """Decode a string column: file paths (kind by extension) or inline vectors written as text.

    Returns (vectors or None, source, kind, paths of raw files or None). Vector files are loaded;
    audio and image files are checked to decode and kept as paths.
    """
    values = col.to_pylist()
    rows_out: list[np.ndarray | None] = []
    paths: list[Path] = []
    kinds: dict[str, int] = {}
    missing, unreadable, unparsable, empty = [], [], [], []
    volumes: dict[int, int] = {}  # channel count -> first row (a volume column holds one count)
    for i, v in enumerate(values):
        rows_out.append(None)
        paths.append(Path())
        if v is None or str(v).strip() == "":
            empty.append(i)
            continue
        kind = kind_of(str(v), base)
        if kind is None:
            try:
                rows_out[i] = np.asarray(_parse_text_vector(str(v)), dtype=np.float32)
                kinds.setdefault("inline vector", i)
            except (ValueError, TypeError):
                # a path-like value whose folder is gone reads as a missing file, not as bad text
                (missing.append((i, v)) if "/" in str(v) or "\\" in str(v) else unparsable.append((i, v)))
            continue
        kinds.setdefault(kind, i)
        if progress and kind in ("audio", "image") and (i % 32 == 31 or i == len(values) - 1):
            progress(f"checking {name} files", i + 1, len(values))  # decoding every file takes a while
        p = Path(v) if Path(v).is_absolute() else base / v
        paths[i] = p
        if not _exists(p):
            missing.append((i, v))
            continue
        if p.suffix.lower() in KNOWN_EXTENSIONS and not p.is_file():  # a folder named x.wav, a FIFO (it would block)
            unreadable.append((i, v, ValueError("not a regular file (a folder, FIFO or device); expected a file")))
            continue
        try:
            if kind == "vector" and (a := np.load(p, mmap_mode="r", allow_pickle=False)).ndim >= 3:
                channels = check_volume(a, volume_layout(array_spec, a.shape))  # a volume: read when batched
                volumes.setdefault(channels, i)
                kinds.setdefault("volume", i)
                if kinds.get("vector") == i:  # counted as a vector file above, before its shape was known
                    del kinds["vector"]
                continue
            if kind == "vector":
                rows_out[i] = _load_npy(p)
                if rows_out[i].ndim > 2:
                    raise ValueError(f"a {rows_out[i].ndim}-D array; bss reads 1-D vectors and 2-D arrays")
            elif kind == "audio":
                check_wav(p)
            else:
                check_image(p, media.frames)
        except ConfigError:
            raise
        except Exception as exc:  # any decode failure is the file's fault, reported by row
            unreadable.append((i, v, exc))
    if empty:
        problems.append(f"{_rows(empty)}: column '{name}' is empty; every sample needs every modality")
    if missing:
        problems.append(
            f"{_rows([r for r, _ in missing])}: column '{name}' names a file or folder that does not exist: "
            f"{missing[0][1]!r} (relative paths resolve against {base})"
        )
    for r, v, exc in unreadable[:MAX_ROWS_LISTED]:
        problems.append(f"row {r}: column '{name}' file {v!r} cannot be read: {exc}")
    if len(unreadable) > MAX_ROWS_LISTED:
        problems.append(f"... and {len(unreadable) - MAX_ROWS_LISTED} more unreadable files in column '{name}'")
    if unparsable:
        problems.append(
            f"{_rows([r for r, _ in unparsable])}: column '{name}' value {str(unparsable[0][1])[:40]!r} is neither "
            f"a numeric vector nor a path with a known extension ({', '.join(KNOWN_EXTENSIONS)}) or a frames folder"
        )
    if len(volumes) > 1:
        shown = ", ".join(f"{c} (first at row {r})" for c, r in volumes.items())
        problems.append(f"column '{name}' holds volumes with different channel counts: {shown}")
    if len(kinds) > 1:
        shown = ", ".join(f"{k} (first at row {r})" for k, r in kinds.items())
        problems.append(f"column '{name}' mixes modality kinds: {shown}; one column holds one kind")
    if empty or missing or unreadable or unparsable or len(kinds) != 1:
        return None, "file", "vector", None
    kind = next(iter(kinds))
    if kind in ("audio", "image"):
        return None, "file", kind, paths
    if kind == "volume":
        if len(volumes) != 1:
            return None, "file", "vector", None
        return np.array([next(iter(volumes))]), "file", "volume", paths  # x: the channel count
    ndims = {r.ndim for r in rows_out}
    if ndims == {2}:  # precomputed spectrograms, MFCC frames, small images
        stacked = stack_arrays(name, rows_out, array_spec or {}, problems)
        return stacked, "file", "array", None
    if len(ndims) > 1:
        problems.append(f"column '{name}' mixes 1-D vectors and 2-D arrays; one column holds one kind")
        return None, "file", "vector", None
    lengths = np.array([len(r) for r in rows_out])
    bad = np.flatnonzero(lengths != lengths[0])
    if len(bad):
        problems.append(
            f"{_rows(bad)}: column '{name}' has {lengths[bad[0]]} values, expected {lengths[0]} (the first row's length)"
        )
        return None, "file", "vector", None
    return np.stack(rows_out).astype(np.float32), ("inline" if kind == "inline vector" else "file"), "vector", None


def check_finite(name: str, x: np.ndarray, problems: list[str]) -> None:
    bad = np.flatnonzero(~np.isfinite(x).all(axis=1))
    if len(bad):
        problems.append(f"{_rows(bad)}: column '{name}' holds NaN or infinite values; clean or impute them")



"""Dataset manifests: one row per sample, ``sample_id``, ``label``, ``split`` and a column per modality.

A modality value is an inline numeric vector (a list column in Parquet or JSON Lines; in CSV a
JSON list ``[0.1, 2, 3]`` or whitespace-separated numbers) or a path whose extension names its
kind: ``.npy`` -> vector, ``.wav`` -> audio, an image file or a folder of frames -> image.
Relative paths resolve against the manifest's folder. Columns named ``meta_*`` are carried along
and ignored. Validation collects every problem of a manifest and raises one
:class:`ManifestError` that lists them all, each with row and column (column decoding lives in
:mod:`bss_cli.data.columns`).
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from bss_cli import schema as S
from bss_cli.artifacts import fingerprint_file
from bss_cli.data.columns import (
    MAX_ROWS_LISTED,
    array_settings,
    check_finite,
    inline_arrays,
    inline_matrix,
    text_values,
)
from bss_cli.data.media import MediaConfig, kind_of, volume_layout, volume_shape
from bss_cli.data.text import text_specs, token_ids
from bss_cli.errors import ManifestError
from bss_cli.errors import rows_text as _rows

META_PREFIX = "meta_"
READERS = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl"}


@dataclass
class Modality:
    name: str
    kind: str  # "vector", "array" (2-D, e.g. a spectrogram), "audio", "image" or "text" (token ids)
    source: str  # "inline" or "file"
    dim: int | None = None  # vector length (arrays: A * B), known once values are loaded
    shape: list[int] | None = None  # arrays: [A, B] (features stay flattened to [N, A * B]); volumes: [C]
    layout: str | None = None  # volumes: how the .npy files are laid out (CTHW, THWC or THW)


@dataclass
class Manifest:
    """A validated manifest. ``features[m]`` is an [N, D] float32 array when loaded."""

    path: Path
    fingerprint: str
    sample_ids: pa.Array  # strings or integers, as in the file
    labels: np.ndarray  # class codes: int64 (without load_features: the smallest integer type)
    classes: list
    split_codes: np.ndarray  # int8: position in schema.SPLITS (one byte per row, not a string)
    modalities: dict[str, Modality]
    features: dict[str, np.ndarray] = field(default_factory=dict)  # vector modalities
    paths: dict[str, list[Path]] = field(default_factory=dict)  # audio and image modalities
    media: MediaConfig = field(default_factory=MediaConfig)
    text: dict[str, dict] = field(default_factory=dict)  # text modality -> its TextSpec and padding id
    # clips sampled in step (bss.clip): {"length": [N] window lengths, "from": {modality: [N] first step}}
    clip: dict | None = None
    images: dict[str, dict] = field(default_factory=dict)  # image modality -> {"channels": 1|3, "normalize": stats}

    @property
    def n(self) -> int:
        return len(self.labels)

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    @property
    def modality_names(self) -> list[str]:
        return list(self.modalities)

    @property
    def splits(self) -> np.ndarray:
        """Every row's split name (a str array built on each call; prefer :meth:`split_of` for some rows)."""
        return self.split_of(slice(None))

    def split_of(self, rows) -> np.ndarray:
        """The split names of ``rows`` (an index array or a slice)."""
        return np.asarray(S.SPLITS)[self.split_codes[rows]]

    def indices(self, split: str) -> np.ndarray:
        """Manifest row indices of a split (``all`` gives every row)."""
        if split == "all":
            return np.arange(self.n)
        return np.flatnonzero(self.split_codes == S.SPLITS.index(split))

    def count(self, split: str) -> int:
        """How many rows a split has."""
        return self.n if split == "all" else int(np.count_nonzero(self.split_codes == S.SPLITS.index(split)))

    def compact_indices(self, split: str) -> np.ndarray | RowRange:
        """:meth:`indices` as a :class:`RowRange` when the split's rows are consecutive (the usual
        case at scale), found without building the n-long index array (8 bytes a row)."""
        if split == "all":
            return RowRange(0, self.n)
        mask = self.split_codes == S.SPLITS.index(split)
        count = int(np.count_nonzero(mask))
        if count:
            first, last = int(np.argmax(mask)), self.n - 1 - int(np.argmax(mask[::-1]))
            if last - first + 1 == count:
                return RowRange(first, last + 1)
        return np.flatnonzero(mask)


class StoredIds:
    """A Parquet manifest's ``sample_id`` column left on disk: read back a row group at a time when
    rows are taken, in the type the loaded column had. It stands in for ``Manifest.sample_ids``
    once every id has been checked, so scoring 1e8 samples does not keep 1e8 strings in memory
    while it ranks them and writes the scores (which take the ids in increasing row order).

    The file must not change meanwhile: its size and modification time are those it had before it
    was loaded (``stat``), or the next read fails and names it."""

    def __init__(self, path: str | Path, stat: tuple[int, int], type: pa.DataType):
        import pyarrow.parquet as pq

        self.path, self._stat, self.type = Path(path), stat, type
        self._file = pq.ParquetFile(self.path)
        self._n = self._file.metadata.num_rows
        sizes = [self._file.metadata.row_group(g).num_rows for g in range(self._file.metadata.num_row_groups)]
        self._starts = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        self._cache: dict[int, pa.Array] = {}

    @staticmethod
    def stat_of(path: str | Path) -> tuple[int, int]:
        st = Path(path).stat()
        return st.st_size, st.st_mtime_ns

    def __len__(self) -> int:
        return self._n

    def _group(self, g: int) -> pa.Array:
        if g not in self._cache:
            if self.stat_of(self.path) != self._stat:
                raise ManifestError(self.path, ["the file changed while it was being scored; score it again"])
            col = self._file.read_row_group(g, columns=[S.SAMPLE_ID]).column(0)
            self._cache = {k: v for k, v in self._cache.items() if k == g - 1}  # the group before: chunk edges
            self._cache[g] = col.combine_chunks().cast(self.type)
        return self._cache[g]

    def take(self, rows) -> pa.Array:
        """The ids of manifest ``rows`` (increasing row order reads each row group once)."""
        rows = np.asarray(rows.to_numpy() if isinstance(rows, (pa.Array, pa.ChunkedArray)) else rows, np.int64)
        if len(rows) == 0:
            return pa.array([], self.type)
        span = compact_rows(rows)
        if isinstance(span, RowRange) and 0 <= span.start and span.stop <= self._n:
            return self.slice(span.start, len(span))  # consecutive rows (the usual case): no gather
        if rows.min() < 0 or rows.max() >= self._n:
            raise IndexError(f"row {int(rows.max())} is out of range for {self._n} ids")
        groups = np.searchsorted(self._starts, rows, side="right") - 1
        parts, order = [], []
        for g in np.unique(groups):
            mine = np.flatnonzero(groups == g)
            parts.append(self._group(int(g)).take(pa.array(rows[mine] - self._starts[g])))
            order.append(mine)
        taken = pa.concat_arrays(parts) if len(parts) > 1 else parts[0]
        if len(parts) > 1:
            where = np.concatenate(order)
            if (np.diff(where) < 0).any():  # rows not in increasing order: put them back in theirs
                inverse = np.empty_like(where)
                inverse[where] = np.arange(len(where))
                taken = taken.take(pa.array(inverse))
        return taken

    def slice(self, offset: int, length: int | None = None) -> pa.Array:
        """Ids of rows ``offset:offset + length``: slices of the row groups that hold them."""
        stop = self._n if length is None else min(self._n, offset + length)
        if offset < 0:
            raise IndexError(f"row {offset} is out of range for {self._n} ids")
        if stop <= offset:  # past the end, as an Arrow array's slice: nothing
            return pa.array([], self.type)
        first, last = (int(np.searchsorted(self._starts, r, side="right")) - 1 for r in (offset, stop - 1))
        parts = []
        for g in range(first, last + 1):
            a, b = max(offset, int(self._starts[g])), min(stop, int(self._starts[g + 1]))
            parts.append(self._group(g).slice(a - int(self._starts[g]), b - a))
        return pa.concat_arrays(parts) if len(parts) > 1 else parts[0]

    def __getitem__(self, i: int) -> pa.Scalar:
        return self.take([int(i)])[0]

    @classmethod
    def if_in_order(cls, path: str | Path, stat: tuple[int, int]) -> "StoredIds | None":
        """The file's ids left on disk, when a pass over them, a row group at a time, finds them
        valid without keeping them: one ``sample_id`` column of strings or integers, no empty cell,
        strictly increasing (so distinct), as most manifests at scale are. None otherwise: the
        caller reads them into memory and validates them there (and names what is wrong)."""
        import pyarrow.parquet as pq

        try:
            pf = pq.ParquetFile(path)
        except (pa.ArrowInvalid, OSError):
            return None
        schema = pf.schema_arrow
        if schema.names.count(S.SAMPLE_ID) != 1:
            return None
        t = schema.field(S.SAMPLE_ID).type
        if not (pa.types.is_integer(t) or pa.types.is_string(t) or pa.types.is_large_string(t)):
            return None
        last = None
        try:
            for chunk in _chunks(pf, S.SAMPLE_ID):
                if not len(chunk):
                    continue
                if not _increasing(chunk) or (last is not None and not pc.greater(chunk[0], last).as_py()):
                    return None
                last = chunk[len(chunk) - 1]
        except (_HasNulls, pa.ArrowInvalid, OSError):
            return None
        return cls(path, stat, t) if pf.metadata.num_rows else None


class RowRange:
    """Manifest rows start, start + 1, ..., stop - 1 without an array of them (8 bytes a row saved
    at scale): indexing gives numpy arrays, as indexing the array would."""

    def __init__(self, start: int, stop: int):
        self.start, self.stop = int(start), int(stop)

    def __len__(self) -> int:
        return self.stop - self.start

    def __getitem__(self, key):
        if isinstance(key, slice):
            a, b, step = key.indices(len(self))
            return np.arange(self.start + a, self.start + b, step)
        key = np.asarray(key)
        if key.dtype == bool:
            return np.arange(self.start, self.stop)[key]
        return self.start + key

    def __array__(self, dtype=None, copy=None):
        return np.arange(self.start, self.stop, dtype=dtype)

    def tolist(self) -> list[int]:
        return list(range(self.start, self.stop))


def compact_rows(rows: np.ndarray) -> np.ndarray | RowRange:
    """``rows`` as a :class:`RowRange` when they are consecutive, else unchanged."""
    if len(rows) and int(rows[-1]) - int(rows[0]) + 1 == len(rows) and bool((np.diff(rows) == 1).all()):
        return RowRange(rows[0], rows[-1] + 1)
    return rows


def _stored_int_type(pf, name: str):
    """int64, or for a label column whose row-group statistics say it holds small non-negative
    integers, the smallest type that holds them (1 byte a row instead of 8 for most data sets)."""
    if name != S.LABEL:
        return np.int64
    index = pf.schema_arrow.get_field_index(name)
    lows, highs = [], []
    for g in range(pf.metadata.num_row_groups):
        stats = pf.metadata.row_group(g).column(index).statistics
        if stats is None or not stats.has_min_max:
            return np.int64
        lows.append(stats.min)
        highs.append(stats.max)
    if not lows or min(lows) < 0:
        return np.int64
    return np.min_scalar_type(max(highs))


def _lean_column(pf, name: str, t: pa.DataType) -> pa.Array:
    """One column of a Parquet manifest, read a row group at a time into one compact array: integers
    into an int64 array (labels: the type their values need), split names as int16 indices into a
    dictionary of the names found. Memory holds the result and one row group, never the whole
    column twice; strings (ids, class names) into one buffer of their bytes. Other types and columns
    with empty cells are read whole (validation then names the rows)."""
    dictionary = pa.types.is_dictionary(pf.schema_arrow.field(name).type)
    compact = None
    if dictionary:
        compact = _compact_dictionary(pf, name)
    elif pa.types.is_integer(t):
        compact = _compact_integers(pf, name)
    elif pa.types.is_string(t) or pa.types.is_large_string(t):
        compact = _compact_strings(pf, name)
    if compact is not None:
        return compact
    col = pf.read(columns=[name]).column(0)
    return col.unify_dictionaries().combine_chunks() if dictionary else col.combine_chunks()


def _chunks(pf, name: str):
    """The column's chunks, a row group at a time; :class:`_HasNulls` at a row group with empty cells."""
    for g in range(pf.metadata.num_row_groups):
        col = pf.read_row_group(g, columns=[name]).column(0)
        if col.null_count:
            raise _HasNulls
        yield from col.chunks


class _HasNulls(Exception):
    pass


def _compact_integers(pf, name: str) -> pa.Array | None:
    out = np.empty(pf.metadata.num_rows, _stored_int_type(pf, name))
    pos = 0
    try:
        for chunk in _chunks(pf, name):
            if out.dtype != np.int64:  # statistics are the writer's word: check the values
                low, high = (v.as_py() for v in pc.min_max(chunk).values())
                if low is None or low < 0 or high > np.iinfo(out.dtype).max:
                    return None
            out[pos:pos + len(chunk)] = chunk.to_numpy()
            pos += len(chunk)
    except _HasNulls:
        return None
    return pa.array(out)


def _compact_strings(pf, name: str) -> pa.Array | None:
    """A string column as one array, filled a row group at a time: its bytes go into a buffer sized
    by the footer's uncompressed column sizes (an upper bound for plain and dictionary pages; the
    pages never written to are never touched, so they cost no memory), grown if a chunk overflows."""
    meta = pf.metadata
    bound = sum(meta.row_group(g).column(j).total_uncompressed_size for g in range(meta.num_row_groups)
                for j in range(meta.num_columns) if meta.row_group(g).column(j).path_in_schema == name)
    wide = bound >= 2**31 - 1 or pa.types.is_large_string(pf.schema_arrow.field(name).type)
    data = np.empty(max(bound, 1), np.uint8)
    offsets = np.empty(meta.num_rows + 1, np.int64 if wide else np.int32)
    offsets[0] = 0
    row = used = 0
    try:
        for chunk in _chunks(pf, name):
            k = len(chunk)
            own = np.frombuffer(chunk.buffers()[1], np.int64 if pa.types.is_large_string(chunk.type) else np.int32,
                                count=chunk.offset + k + 1)[chunk.offset:]
            first, last = int(own[0]), int(own[-1])
            if used + last - first > len(data):  # a page encoding smaller than its bytes: grow
                need = used + last - first
                if not wide and need >= 2**31 - 1:
                    return None
                grown = np.empty(max(2 * len(data), need), np.uint8)
                grown[:used] = data[:used]
                data = grown
            if last > first:
                data[used:used + last - first] = np.frombuffer(chunk.buffers()[2], np.uint8, count=last)[first:]
            offsets[row + 1:row + k + 1] = own[1:]
            offsets[row + 1:row + k + 1] -= first - used  # in the offsets' own type
            row += k
            used += last - first
    except _HasNulls:
        return None
    kind = pa.large_string() if wide else pa.string()
    return pa.Array.from_buffers(kind, row, [None, pa.py_buffer(offsets[:row + 1]), pa.py_buffer(data[:max(used, 1)])])


def _compact_dictionary(pf, name: str) -> pa.Array | None:
    out = np.empty(pf.metadata.num_rows, np.int16)
    names: dict[str, int] = {}
    pos = 0
    try:
        for chunk in _chunks(pf, name):
            remap = [names.setdefault(v, len(names)) for v in chunk.dictionary.to_pylist()]
            if len(names) >= 2**15:
                return None
            out[pos:pos + len(chunk)] = np.array(remap or [0], np.int16)[chunk.indices.to_numpy()]
            pos += len(chunk)
    except _HasNulls:
        return None
    return pa.DictionaryArray.from_arrays(pa.array(out), pa.array(list(names), pa.string()))


def read_table(path: Path, lean: bool = False, skip: tuple[str, ...] = ()) -> tuple[pa.Table, pa.Schema]:
    """Read a manifest file (Parquet, CSV or JSON Lines) into an Arrow table, and its schema.

    ``lean``: of a Parquet file read only sample_id, label and split (the schema still lists every
    column), so a manifest of 1e8 rows costs its ids and labels, not its modality columns; and not
    the columns in ``skip`` either.
    """
    fmt = READERS.get(path.suffix.lower())
    if not path.exists():
        raise ManifestError(path, ["no such file or folder"])
    if fmt is None:
        raise ManifestError(path, [f"unknown file type '{path.suffix}'; use one of {', '.join(READERS)}"])
    if not path.is_file():
        raise ManifestError(path, ["not a file"])
    try:
        if fmt == "parquet":
            import pyarrow.parquet as pq

            if lean:
                schema = pq.read_schema(path)
                columns = [c for c in S.REQUIRED_MANIFEST_COLUMNS if schema.names.count(c) == 1 and c not in skip]
                text = [c for c in (S.SPLIT,) if c in columns and schema.field(c).type in (pa.string(), pa.large_string())]
                # One column at a time, each made one contiguous array before the next is read (the
                # peak is one column twice, not all of them), the split column as a dictionary: one
                # int32 per row instead of a string.
                pf = pq.ParquetFile(path, read_dictionary=text)
                arrays = {}
                for c in columns:
                    arrays[c] = _lean_column(pf, c, schema.field(c).type)
                    pa.default_memory_pool().release_unused()  # the decode buffers, before the next column
                return pa.table(arrays), schema
            table = pq.read_table(path)
            return table, table.schema
        if fmt == "csv":
            import pyarrow.csv as pcsv

            table = pcsv.read_csv(path)
            return table, table.schema
        import pyarrow.json as pjson

        table = pjson.read_json(path)
        return table, table.schema
    except (pa.ArrowInvalid, OSError, ValueError) as exc:
        raise ManifestError(path, [f"cannot be read as {fmt}: {exc}"]) from None


def _encode_labels(col: pa.ChunkedArray, problems: list[str]) -> tuple[np.ndarray, list]:
    nulls = np.flatnonzero(col.is_null().to_numpy(zero_copy_only=False))
    if len(nulls):
        problems.append(f"{_rows(nulls)}: column 'label' is empty; every sample needs a label")
        return np.zeros(len(col), np.int64), []
    t = col.type
    if pa.types.is_integer(t) and len(col):
        low = pc.min_max(col)["min"].as_py()
        if low >= 0:  # the common case, checked without a float copy (the caller picks the final type)
            codes = col.chunk(0).to_numpy() if col.num_chunks == 1 else col.to_numpy()
            return codes, list(range(int(pc.max(col).as_py()) + 1))
    if pa.types.is_integer(t) or pa.types.is_boolean(t) or pa.types.is_floating(t):
        values = col.to_numpy().astype(np.float64)
        bad = np.flatnonzero((values != np.round(values)) | (values < 0) | ~np.isfinite(values))
        if len(bad):
            problems.append(
                f"{_rows(bad)}: column 'label' has {float(values[bad[0]])!r}; numeric labels must be "
                "integers >= 0 (class indices), or use class names as strings"
            )
            return np.zeros(len(col), np.int64), []
        codes = values.astype(np.int64)
        return codes, list(range(int(codes.max()) + 1 if len(codes) else 0))
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        # Class names: code = position in sorted order of the distinct names (documented).
        enc = col.combine_chunks().dictionary_encode()
        names = enc.dictionary.to_pylist()
        order = sorted(range(len(names)), key=names.__getitem__)
        remap = np.empty(len(names), np.int64)
        remap[order] = np.arange(len(names))
        return remap[enc.indices.to_numpy()], [names[i] for i in order]
    problems.append(f"column 'label' has type {t}; expected integer class indices or class-name strings")
    return np.zeros(len(col), np.int64), []


def _check_ids(col: pa.ChunkedArray, problems: list[str]) -> pa.Array:
    ids = col.chunk(0) if col.num_chunks == 1 else col.combine_chunks()
    if not (pa.types.is_integer(ids.type) or pa.types.is_string(ids.type) or pa.types.is_large_string(ids.type)):
        problems.append(f"column 'sample_id' has type {ids.type}; expected strings or integers")
        return ids
    nulls = np.flatnonzero(ids.is_null().to_numpy(zero_copy_only=False))
    if len(nulls):
        problems.append(f"{_rows(nulls)}: column 'sample_id' is empty")
    if not _unique(ids):
        counts = pc.value_counts(ids)
        dups = counts.field("values").filter(pc.greater(counts.field("counts"), 1))
        for value in dups.to_pylist()[:MAX_ROWS_LISTED]:
            rows = np.flatnonzero(pc.equal(ids, pa.scalar(value, ids.type)).to_numpy(zero_copy_only=False))
            problems.append(f"{_rows(rows)}: duplicate sample_id {value!r}; ids must be unique")
        if len(dups) > MAX_ROWS_LISTED:
            problems.append(f"... {len(dups) - MAX_ROWS_LISTED} more duplicated sample_ids")
    return ids


def _unique(ids: pa.Array) -> bool:
    """Are the ids distinct? Strictly increasing ids (the usual case) are checked in one pass, other
    integer ids by sorting a copy; strings that are not in order through a hash table."""
    if len(ids) < 2 or ids.null_count:
        return len(pc.unique(ids)) == len(ids)
    if _increasing(ids):
        return True
    if pa.types.is_integer(ids.type):
        ordered = np.sort(ids.to_numpy())
        return not bool((ordered[1:] == ordered[:-1]).any())
    return len(pc.unique(ids)) == len(ids)


def _increasing(ids: pa.Array) -> bool:
    """Is each id greater than the one before (so all distinct)? One vectorised pass."""
    return len(ids) < 2 or bool(pc.all(pc.greater(ids.slice(1), ids.slice(0, len(ids) - 1))).as_py())


def _check_splits(col: pa.ChunkedArray, problems: list[str]) -> np.ndarray:
    """Split codes (int8 positions in ``schema.SPLITS``), through a dictionary: no string per row."""
    if not pa.types.is_dictionary(col.type):
        col = col.cast(pa.string()).dictionary_encode()
    arr = col.unify_dictionaries().combine_chunks() if col.num_chunks != 1 else col.chunk(0)
    names = arr.dictionary.cast(pa.string()).to_pylist()
    remap = np.array([S.SPLITS.index(v) if v in S.SPLITS else -1 for v in names] + [-1], np.int8)
    indices = (arr.indices.fill_null(len(names)) if arr.null_count else arr.indices).to_numpy()  # empty: extra code
    names.append("<empty>")
    for k in sorted(range(len(names)), key=names.__getitem__):
        if remap[k] < 0:
            rows = np.flatnonzero(indices == k)
            if len(rows):
                problems.append(f"{_rows(rows)}: column 'split' has unknown value {names[k]!r}; expected one of "
                                f"{', '.join(S.SPLITS)}")
    codes = remap[indices]
    if not (codes == S.SPLITS.index("train")).any():
        problems.append("the train split is empty; mark at least one row with split 'train'")
    return codes


def _is_nested(t: pa.DataType) -> bool:
    """list<list<...>>: a 2-D array per row."""
    lists = (pa.types.is_list, pa.types.is_large_list, pa.types.is_fixed_size_list)
    return any(f(t) for f in lists) and any(f(t.value_type) for f in lists)


def _modality_columns(schema: pa.Schema, problems: list[str]) -> list[str]:
    names = [c for c in schema.names if c not in S.REQUIRED_MANIFEST_COLUMNS and not c.startswith(META_PREFIX)]
    for c in names:
        t = schema.field(c).type
        ok = (pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t)
              or pa.types.is_string(t) or pa.types.is_large_string(t))
        if not ok:
            problems.append(
                f"column '{c}' has type {t}; a modality column holds numeric vectors or file paths "
                f"(prefix non-modality columns with '{META_PREFIX}' to carry them along)"
            )
    if len(names) < 2:
        problems.append(
            f"found {len(names)} modality column(s) ({', '.join(names) or 'none'}); BSS needs two or more"
        )
    return names


def _first_value(path: Path, table: pa.Table, name: str):
    """Row 0 of column ``name``, from ``table`` or, when a lean read left it out, from the file."""
    if name in table.column_names:
        return table[name][0].as_py()
    import pyarrow.parquet as pq

    first = next(pq.ParquetFile(path).iter_batches(batch_size=1, columns=[name]))
    return first.column(0)[0].as_py()


def load_manifest(path: str | Path, *, load_features: bool = True, progress=None, text: list[str] | None = None,
                  text_options: dict | None = None, ids_stat: tuple[int, int] | None = None) -> Manifest:
    """Read and validate a manifest; with ``load_features`` also decode every modality value.

    ``text``: columns of strings to read as text modalities, besides those the manifest's
    ``bss.text`` metadata declares; ``text_options``: TextSpec values (max_tokens, max_words,
    clean, model) that override the metadata's for every text column (None: keep).

    Without ``load_features`` (scoring from a predictions file, inspecting), ids, labels, splits
    and modality column types are validated, values are not decoded. ``progress(stage, done,
    total)`` hears how far the check of audio and image files is.

    ``ids_stat`` (without ``load_features``, a Parquet file): the file's (size, mtime_ns) from
    before the call (:meth:`StoredIds.stat_of`). Ids found valid in one pass (strictly increasing)
    then stay on disk: ``sample_ids`` is a :class:`StoredIds`, and 1e8 string ids cost no memory.
    """
    path = Path(path)
    stored = None
    if ids_stat is not None and not load_features and READERS.get(path.suffix.lower()) == "parquet" and path.is_file():
        stored = StoredIds.if_in_order(path, ids_stat)
    table, schema = read_table(path, lean=not load_features, skip=(S.SAMPLE_ID,) if stored is not None else ())
    problems: list[str] = []
    counts = Counter(schema.names)
    for c, k in counts.items():
        if k > 1:
            problems.append(f"column '{c}' appears {k} times; column names must be unique")
    missing = [c for c in S.REQUIRED_MANIFEST_COLUMNS if c not in counts]
    if missing:
        problems.append(
            f"missing required column(s) {', '.join(repr(c) for c in missing)}; a manifest needs "
            f"{', '.join(S.REQUIRED_MANIFEST_COLUMNS)} and one column per modality"
        )
    rows = len(stored) if stored is not None else table.num_rows
    if rows == 0:
        problems.append("the manifest has no rows")
    if missing or rows == 0 or any(k > 1 for k in counts.values()):
        raise ManifestError(path, problems)

    ids = stored if stored is not None else _check_ids(table[S.SAMPLE_ID], problems)
    labels, classes = _encode_labels(table[S.LABEL], problems)
    splits = _check_splits(table[S.SPLIT], problems)
    names = _modality_columns(schema, problems)
    media = MediaConfig.from_json((schema.metadata or {}).get(b"bss.media", b"").decode() or None)
    arrays = array_settings(schema.metadata)
    specs = text_specs(schema.metadata, text, text_options)
    undeclared = [c for c in specs if c not in names]
    if undeclared:
        problems.append(f"text column(s) {', '.join(map(repr, undeclared))} declared (bss.text or --text) but not in "
                        f"the manifest; its modality columns are {', '.join(names)}")
    text_info: dict[str, dict] = {}
    modalities: dict[str, Modality] = {}
    features: dict[str, np.ndarray] = {}
    raw_paths: dict[str, list[Path]] = {}
    for name in names:
        t = schema.field(name).type
        is_text = pa.types.is_string(t) or pa.types.is_large_string(t)
        if name in specs:
            if not is_text:
                problems.append(f"column '{name}' is declared as text but holds {t}; a text column holds strings")
                continue
            if not load_features:
                modalities[name] = Modality(name, "text", "inline", specs[name].max_tokens)
                continue
            values = table[name].to_pylist()
            nulls = [i for i, v in enumerate(values) if v is None]
            if nulls:
                problems.append(f"{_rows(nulls)}: column '{name}' (text) is empty; every sample needs every "
                                "modality (an empty string is a valid, empty text)")
                continue
            ids, pad = token_ids(values, specs[name])
            features[name] = ids.astype(np.float32)  # ids < 2^24 are exact in float32, the feature dtype
            modalities[name] = Modality(name, "text", "inline", int(ids.shape[1]))
            text_info[name] = {**specs[name].to_dict(), "pad_id": pad}
            continue
        if not load_features:
            first = _first_value(path, table, name) if is_text and table.num_rows else None
            kind = (kind_of(str(first), path.parent) or "vector") if first else "vector"
            modalities[name] = Modality(name, kind, "file" if is_text else "inline")
            continue
        kind, files = "vector", None
        if is_text:
            x, source, kind, files = text_values(name, table[name], path.parent, media, problems,
                                                 arrays.get(name), progress)
        elif _is_nested(t):
            x, source, kind = inline_arrays(name, table[name], arrays.get(name, {}), problems), "inline", "array"
        elif pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
            x, source = inline_matrix(name, table[name], problems), "inline"
        else:
            continue  # type problem already reported
        if files is not None:
            if kind == "volume":  # x holds the channel count; the files are read when batched
                layout = volume_layout(arrays.get(name), volume_shape(files[0]))
                modalities[name] = Modality(name, kind, "file", shape=[int(x[0])], layout=layout)
            else:
                modalities[name] = Modality(name, kind, "file")
            raw_paths[name] = files
            continue
        if x is None:
            continue
        shape = None
        if kind == "array":
            shape = [int(x.shape[1]), int(x.shape[2])]
            x = x.reshape(len(x), -1)
        check_finite(name, x, problems)
        modalities[name] = Modality(name, kind, source, int(x.shape[1]), shape)
        features[name] = x
    clip = _clip_settings(schema.metadata, table, modalities, problems) if load_features else None
    images = _image_settings(schema.metadata, modalities, problems)
    if problems:
        raise ManifestError(path, problems)
    if len(classes) < 2:
        raise ManifestError(path, [f"found {len(classes)} class(es) in column 'label'; classification needs two or more"])
    # without features nothing makes tensors of them: the smallest integer type holds the codes
    labels = labels.astype(np.int64 if load_features else np.min_scalar_type(max(len(classes) - 1, 0)), copy=False)
    return Manifest(path, fingerprint_file(path), ids, labels, classes, splits, modalities, features, raw_paths, media,
                    text_info, clip, images)


def _meta_json(metadata, key: str, problems: list[str]):
    raw = (metadata or {}).get(key.encode())
    if raw is None:
        return None
    try:
        return json.loads(raw.decode())
    except (ValueError, UnicodeDecodeError, RecursionError):
        problems.append(f"manifest metadata {key} is not JSON")
        return None


def _clip_settings(metadata, table: pa.Table, modalities: dict, problems: list[str]) -> dict | None:
    """``bss.clip`` = {"length": column, "from": {modality: column}}: per row, a clip's window
    length and where each modality's window starts (in its folder's frames or its array's steps),
    so that every modality of a sample is sampled at the same steps (see media.clip_plan)."""
    spec = _meta_json(metadata, "bss.clip", problems)
    if spec is None:
        return None
    if not isinstance(spec, dict) or not isinstance(spec.get("length"), str) or not isinstance(spec.get("from"), dict):
        problems.append('manifest metadata bss.clip: expected {"length": column, "from": {modality: column}}')
        return None
    out = {"length": None, "from": {}}
    for key, column in [("length", spec["length"]), *spec["from"].items()]:
        if key != "length" and (key not in modalities or modalities[key].kind not in ("image", "volume")):
            problems.append(f"manifest metadata bss.clip: {key!r} is not an image or volume modality")
            continue
        if not isinstance(column, str) or column not in table.column_names or \
                not pa.types.is_integer(table.schema.field(column).type):
            problems.append(f"manifest metadata bss.clip: column {column!r} of {key!r} is not an integer column")
            continue
        values = table[column].to_numpy(zero_copy_only=False)
        low = 1 if key == "length" else 0
        bad = np.flatnonzero(~(values >= low))
        if len(bad):
            problems.append(f"{_rows(bad.tolist())}: column '{column}' is below {low} (bss.clip)")
            continue
        if key == "length":
            out["length"] = values.astype(np.int64)
        else:
            out["from"][key] = values.astype(np.int64)
    return out if out["length"] is not None and out["from"] else None


def _image_settings(metadata, modalities: dict, problems: list[str]) -> dict[str, dict]:
    """``bss.images`` = {modality: {"channels": 1 or 3, "normalize": "imagenet", "clip" or "none"}}
    (default 3 channels, ImageNet statistics)."""
    from bss_cli.data.media import NORMALISATIONS

    spec = _meta_json(metadata, "bss.images", problems) or {}
    out = {}
    for name, s in (spec.items() if isinstance(spec, dict) else []):
        if name not in modalities or modalities[name].kind != "image" or not isinstance(s, dict) \
                or s.get("channels", 3) not in (1, 3) or s.get("normalize", "imagenet") not in NORMALISATIONS:
            problems.append(f"manifest metadata bss.images: {name!r} needs an image modality with channels 1 or 3 "
                            f"and normalize one of {', '.join(NORMALISATIONS)}")
            continue
        out[name] = {"channels": int(s.get("channels", 3)), "normalize": s.get("normalize", "imagenet")}
    return out

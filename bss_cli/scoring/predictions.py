"""Predictions files: per-sample model outputs from bss or any other trainer (no torch here).

Schema (Parquet; extra columns are ignored):

========================  ==================  =========================================
column                    type                meaning
========================  ==================  =========================================
``sample_id``             string or integer   matches the manifest's ``sample_id``
``logits_<modality>``     list<float>, C      unimodal head logits; two or more modalities
``logits_fused``          list<float>, C      optional fused-head logits (loss term w_mm)
``embedding_<modality>``  list<float>, D      optional encoder features (feature-sim)
``grad_norm``             float               optional per-sample gradient norm (gradient)
========================  ==================  =========================================

C is the number of classes: logits index the manifest's class codes (integer labels as they
are, string labels in sorted order).
"""

from __future__ import annotations

import os
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from bss_cli import schema as S
from bss_cli.artifacts import fingerprint_file, ordered_map, prefetched
from bss_cli.data.columns import vector_column
from bss_cli.data.manifest import Manifest, StoredIds
from bss_cli.errors import PredictionsError
from bss_cli.errors import rows_text as _rows
from bss_cli.scoring.criteria import LossWeights, Predictions, RowParts, get_criterion, row_parts


# Predictions rows converted at a time: bounded memory whatever N is. Small batches stay in the
# CPU's caches; at 2^17 the decoder's buffers alone held 90 MiB, at 2^14 about 30 (no slower).
BATCH_ROWS = 1 << 14
# Threads that reduce batches to per-sample parts (the exps and sums of the softmaxes: most of the
# work). The decoding thread and this one keep two cores busy already, so the work moves to a pool
# only from 4 cores on (on 2 cores a pool was no faster and held 15-20 MiB more). The results do
# not depend on it.
_CORES = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
SCORE_THREADS = max(1, min(4, _CORES - 2))
# Whether pyarrow decodes a batch's columns on its own threads too: not on 2 cores, where they
# only contend with the reducing thread (1e7 rows: about 4% slower with them).
DECODE_THREADS = _CORES > 2
# From this many rows, a file read in manifest order keeps its per-sample parts in temporary files
# (read back a chunk at a time when the scores are written), not in memory.
SPILL_ROWS = 1 << 22


class SpilledColumn:
    """One per-sample column kept in a temporary file and read back by slices.

    Plain file reads, no memory map: the page cache holds the data, not this process. The min
    and max are kept while writing (the normalisation needs them)."""

    def __init__(self, folder: tempfile.TemporaryDirectory, name: str, dtype):
        self._folder = folder  # the folder lives as long as a column of it does
        self.path = Path(folder.name) / f"{name}.bin"
        self.dtype = np.dtype(dtype)
        self._file = open(self.path, "wb")
        self.n = 0
        self._lo = self._hi = None

    def append(self, values: np.ndarray) -> None:
        values = np.ascontiguousarray(values, self.dtype)
        if len(values):
            lo, hi = values.min(), values.max()
            self._lo = lo if self._lo is None else min(self._lo, lo)
            self._hi = hi if self._hi is None else max(self._hi, hi)
        self._file.write(values.tobytes())
        self.n += len(values)

    def done(self) -> None:
        self._file.close()

    def __len__(self) -> int:
        return self.n

    def min(self):
        return self._lo

    def max(self):
        return self._hi

    def __getitem__(self, key: slice) -> np.ndarray:
        start, stop, step = key.indices(self.n)
        if step != 1:
            raise IndexError("spilled columns are read by contiguous slices")
        count = max(stop - start, 0)
        return np.fromfile(self.path, self.dtype, count=count, offset=start * self.dtype.itemsize)


def _spilled(part: RowParts) -> RowParts:
    """Empty spilled columns shaped like ``part`` (in the system's temporary folder, $TMPDIR)."""
    folder = tempfile.TemporaryDirectory(prefix="bss-score-")
    return RowParts(SpilledColumn(folder, "labels", part.labels.dtype),
                    {k: SpilledColumn(folder, f"raw-{k}", np.float64) for k in part.raw},
                    {k: SpilledColumn(folder, f"loss-{k}", np.float32) for k in part.head_loss})


@dataclass
class LoadedParts:
    rows: np.ndarray  # manifest rows of the scored split, in manifest order
    parts: RowParts  # row i = manifest row rows[i]
    fingerprint: str


def _is_list(t: pa.DataType) -> bool:
    return pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t)


def _column_type_problems(schema: pa.Schema, names: list[str]) -> list[str]:
    problems = []
    for name in names:
        t = schema.field(name).type
        if name == S.GRAD_NORM:
            if not (pa.types.is_integer(t) or pa.types.is_floating(t)):
                problems.append(f"column 'grad_norm' has type {t}; expected float")
        elif not _is_list(t):
            problems.append(f"column '{name}' has type {t}; expected list<float>")
        elif not (pa.types.is_integer(t.value_type) or pa.types.is_floating(t.value_type)):
            problems.append(f"column '{name}' holds lists of {t.value_type}; expected list<float>")
    return problems


def criterion_columns(names: list[str], logit_cols: list[str], criterion: str) -> list[str]:
    """The predictions columns ``criterion`` reads: logits always, embeddings and grad_norm only
    when its parts use them."""
    crit = get_criterion(criterion)
    columns = logit_cols + [c for c in names if c == S.FUSED_LOGITS]
    if "feat_sim" in crit.parts:
        columns += [c for c in names if c.startswith(S.EMBEDDING_PREFIX)]
    if "grad_norm" in crit.parts and S.GRAD_NORM in names:
        columns.append(S.GRAD_NORM)
    return columns


def _matrix(name: str, col, rows_of, width: int | None, expected: str, problems: list[str]) -> np.ndarray | None:
    """A batch's list column as [n, width] float (float32 stays float32). ``rows_of(i)`` maps the
    batch's row numbers to the file's for messages; ``expected`` says what width is right and why."""
    arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    if pa.types.is_large_list(arr.type) or pa.types.is_fixed_size_list(arr.type):
        arr = arr.cast(pa.list_(arr.type.value_type))
    if arr.null_count:
        problems.append(f"{_rows(rows_of(np.flatnonzero(arr.is_null().to_numpy(zero_copy_only=False))))}: column "
                        f"'{name}' is empty")
        return None
    lengths = pc.list_value_length(arr).to_numpy()
    width = int(lengths[0]) if width is None else width
    bad = np.flatnonzero(lengths != width)
    if len(bad):
        problems.append(f"{_rows(rows_of(bad))}: column '{name}' has {lengths[bad[0]]} values, expected {width} "
                        f"({expected})")
        return None
    values = arr.flatten()
    if values.null_count:
        values = values.fill_null(np.nan)
    x = values.to_numpy(zero_copy_only=False)
    if x.dtype != np.float32:
        x = x.astype(np.float64, copy=False)
    x = x.reshape(len(arr), width)
    if np.isfinite(x).all():  # one flat pass; rows are located only when something is wrong
        return x
    bad = np.flatnonzero(~np.isfinite(x).all(axis=1))
    if len(bad):
        problems.append(f"{_rows(rows_of(bad))}: column '{name}' holds NaN or infinite values")
        return None
    return x


class _NotAligned(Exception):
    """The file's rows are not the manifest's in order: align through the ids instead."""


def _same_ids(a: pa.Array, b: pa.Array) -> bool:
    if not (pa.types.is_integer(a.type) and pa.types.is_integer(b.type)):
        a, b = a.cast(pa.string()), b.cast(pa.string())
    return len(a) == len(b) and a.null_count == 0 and bool(pc.all(pc.equal(a, b)).as_py())


def _fingerprint_in_background(path: Path) -> tuple[threading.Thread, dict]:
    """sha256 of the file, computed by a thread while the rows are scored (hashlib releases the GIL)."""
    box: dict = {}
    thread = threading.Thread(target=lambda: box.setdefault("fp", fingerprint_file(path)), daemon=True)
    thread.start()
    return thread, box


def read_parts(path: str | Path, manifest: Manifest, split: str, criterion: str,
               weights: LossWeights = LossWeights(), *, batch_rows: int | None = None, progress=None) -> LoadedParts:
    """Reduce a predictions file to per-sample scoring parts, aligned with ``manifest``'s rows of
    ``split``, reading ``batch_rows`` rows at a time and only the columns the criterion needs.

    Every sample of the split needs a prediction (the scores are normalised over the whole split);
    predictions for other samples are ignored. A file whose rows are the split's (or the whole
    manifest's) in manifest order is read once with no id lookup table; any other order is
    aligned through its ``sample_id`` column first. ``progress(done, total)`` hears of the rows.
    """
    path = Path(path)
    batch_rows = batch_rows or BATCH_ROWS  # read when called (tests set it small)
    if not path.is_file():
        raise PredictionsError(f"{path}: no such predictions file")
    try:
        # Buffered reads without pre-buffering: a row group's column chunks are not all held
        # at once (about 120 MiB less at 5e6 rows, no slower on the benchmark).
        pf = pq.ParquetFile(path, buffer_size=4 << 20, pre_buffer=False)
    except (pa.ArrowInvalid, OSError) as exc:
        raise PredictionsError(f"{path}: not a readable Parquet file ({exc})") from None
    schema = pf.schema_arrow
    names = schema.names
    logit_cols = [c for c in names if c.startswith(S.LOGITS_PREFIX) and c != S.FUSED_LOGITS]
    problems: list[str] = []
    if S.SAMPLE_ID not in names:
        problems.append("missing column 'sample_id'")
    else:
        id_type = schema.field(S.SAMPLE_ID).type
        if not (pa.types.is_integer(id_type) or pa.types.is_string(id_type) or pa.types.is_large_string(id_type)):
            problems.append(f"column 'sample_id' is {id_type}; expected strings or integers, as in the manifest")
    if len(logit_cols) < 2:
        problems.append(
            f"found {len(logit_cols)} unimodal logits column(s); expected 'logits_<modality>' for two or "
            "more modalities (see the predictions schema in the README)"
        )
    if problems:
        raise PredictionsError(f"{path}: " + "; ".join(problems))
    columns = criterion_columns(names, logit_cols, criterion)
    problems = _column_type_problems(schema, columns)
    if problems:
        raise PredictionsError(f"{path}: " + "\n  - ".join(["problems in the predictions file:"] + problems))

    thread, box = _fingerprint_in_background(path)
    wanted = manifest.compact_indices(split)
    n_file = pf.metadata.num_rows
    if n_file in (len(wanted), manifest.n):
        try:
            parts = _score_batches(path, pf, manifest, split, wanted, None, columns, criterion, weights, batch_rows,
                                   progress)
        except _NotAligned:
            parts = None
    else:
        parts = None
    if parts is None:
        dest = _align(path, pf, manifest, split, wanted)
        pa.default_memory_pool().release_unused()
        parts = _score_batches(path, pf, manifest, split, wanted, dest, columns, criterion, weights, batch_rows,
                               progress)
    thread.join()
    return LoadedParts(wanted, parts, box.get("fp") or fingerprint_file(path))


def _align(path: Path, pf: pq.ParquetFile, manifest: Manifest, split: str, wanted: np.ndarray) -> np.ndarray:
    """For each file row, its position among the split's rows (-1: a row of another split)."""
    wanted = np.asarray(wanted)
    pred_ids = pf.read(columns=[S.SAMPLE_ID]).column(0).combine_chunks()
    if pred_ids.null_count:
        bad = np.flatnonzero(pred_ids.is_null().to_numpy(zero_copy_only=False))
        raise PredictionsError(f"{path}: {_rows(bad)}: column 'sample_id' is empty")
    if len(pc.unique(pred_ids)) != len(pred_ids):
        raise PredictionsError(f"{path}: column 'sample_id' has duplicate values; one prediction per sample")
    manifest_ids = manifest.sample_ids
    if isinstance(manifest_ids, StoredIds):  # left on disk: the id table needs them all
        manifest_ids = manifest_ids.slice(0)
    if not (pa.types.is_integer(pred_ids.type) and pa.types.is_integer(manifest_ids.type)):
        pred_ids, manifest_ids = pred_ids.cast(pa.string()), manifest_ids.cast(pa.string())
    found = pc.index_in(pred_ids, value_set=manifest_ids)
    if found.null_count:
        unknown = np.flatnonzero(found.is_null().to_numpy(zero_copy_only=False))
        first = pred_ids[int(unknown[0])].as_py()
        raise PredictionsError(
            f"{path}: {_rows(unknown)}: sample_id {first!r} is not in the manifest "
            f"{manifest.path}; predictions must come from the same data set"
        )
    del pred_ids
    pos = found.to_numpy().astype(np.int64)
    slot = np.full(manifest.n, -1, np.int64)
    slot[wanted] = np.arange(len(wanted))
    dest = slot[pos]
    del slot, pos
    covered = np.zeros(len(wanted), bool)
    covered[dest[dest >= 0]] = True
    missing = wanted[~covered]
    if len(missing):
        raise PredictionsError(
            f"{path}: no prediction for {len(missing)} sample(s) of split '{split}' of {manifest.path}, e.g. "
            f"{manifest.sample_ids[int(missing[0])].as_py()!r} (manifest row {int(missing[0])}); predict every "
            "sample of the split"
        )
    return dest


def _batches(pf: pq.ParquetFile, batch_rows: int, columns: list[str]):
    """The file's rows ``batch_rows`` at a time, one row group after another: memory holds one row
    group's column chunks (iterating the whole file at once pre-buffers every row group: the file)."""
    def read():
        for group in range(pf.metadata.num_row_groups):
            yield from pf.iter_batches(batch_size=batch_rows, row_groups=[group], columns=columns,
                                        use_threads=DECODE_THREADS)

    return prefetched(read())  # the next batch decodes while this one is scored


def _score_batches(path: Path, pf: pq.ParquetFile, manifest: Manifest, split: str, wanted: np.ndarray,
                   dest: np.ndarray | None, columns: list[str], criterion: str, weights: LossWeights, batch_rows: int,
                   progress) -> RowParts:
    """One pass over the file, ``batch_rows`` at a time: each batch becomes per-sample parts,
    written into place. ``dest`` None: the file is the split's rows (or the manifest's) in order,
    checked batch by batch against the manifest's ids (:class:`_NotAligned` at the first mismatch)."""
    n, n_file = len(wanted), pf.metadata.num_rows
    whole = dest is None and n_file == manifest.n and n != manifest.n  # the manifest's rows, all splits
    in_split = (manifest.split_codes == S.SPLITS.index(split)) if whole and split != "all" else None
    labels_dtype = np.min_scalar_type(max(manifest.n_classes - 1, 0))
    widths: dict[str, int] = {}

    def checked():  # each batch's rows checked and converted, in this thread, in file order
        offset = filled = 0
        for batch in _batches(pf, batch_rows, [S.SAMPLE_ID, *columns]):
            k = batch.num_rows
            ids = batch.column(0)
            if dest is None:
                expected = manifest.sample_ids.slice(offset, k) if (whole or n == manifest.n) else \
                    manifest.sample_ids.take(pa.array(wanted[offset:offset + k]))  # noqa: E501
                if not _same_ids(ids, expected):
                    raise _NotAligned
                if in_split is not None:
                    keep = np.flatnonzero(in_split[offset:offset + k])
                    where = np.arange(filled, filled + len(keep))
                else:
                    keep, where = None, np.arange(offset, offset + k)
            else:
                d = dest[offset:offset + k]
                keep = np.flatnonzero(d >= 0)
                where = d[keep]
            if keep is not None and len(keep) < k:
                batch = batch.take(pa.array(keep))
                rows_of = (lambda i, base=offset + keep: base[i])  # noqa: E731
            else:
                rows_of = (lambda i, base=offset: base + i)  # noqa: E731
            labels = manifest.labels[wanted[where]]
            offset += k
            filled += len(where)
            yield where, batch_predictions(path, batch, columns, manifest.n_classes, widths, rows_of, labels), offset

    def reduce(job):  # the numpy work, on the worker threads
        where, preds, done = job
        return where, row_parts(preds, criterion, weights), done

    out: RowParts | None = None
    spill = False
    for where, part, done in ordered_map(reduce, checked(), SCORE_THREADS):
        if out is None:
            spill = dest is None and n >= SPILL_ROWS  # in order: the parts arrive in the order they are written
            out = _spilled(part) if spill else RowParts(
                np.empty(n, labels_dtype), {name: np.empty(n, np.float64) for name in part.raw},
                {h: np.empty(n, np.float32) for h in part.head_loss})
        if spill:
            out.labels.append(part.labels.astype(labels_dtype))
            for name, v in part.raw.items():
                out.raw[name].append(v)
            for h, v in part.head_loss.items():
                out.head_loss[h].append(v)
        else:
            out.labels[where] = part.labels
            for name, v in part.raw.items():
                out.raw[name][where] = v
            for h, v in part.head_loss.items():
                out.head_loss[h][where] = v
        if progress:
            progress(done, n_file)
    if out is None:
        raise PredictionsError(f"{path}: the file has no rows; predict every sample of split '{split}'")
    if spill:
        for column in [out.labels, *out.raw.values(), *out.head_loss.values()]:
            column.done()
    return out


def batch_predictions(path, batch: pa.RecordBatch | pa.Table, columns: list[str], n_classes: int,
                      widths: dict[str, int], rows_of, labels: np.ndarray,
                      whose: str = "the manifest's") -> Predictions:
    """One batch of a predictions file as :class:`Predictions`, every value checked.

    ``rows_of(i)`` maps the batch's row numbers to the file's (for messages); ``widths`` holds the
    embedding widths seen so far (the first row's length, filled in here when unknown)."""
    problems: list[str] = []
    classes = f"one per class code 0..{n_classes - 1}: {whose} {n_classes} classes"
    logits = {c[len(S.LOGITS_PREFIX):]: _matrix(c, batch.column(c), rows_of, n_classes, classes, problems)
              for c in columns if c.startswith(S.LOGITS_PREFIX) and c != S.FUSED_LOGITS}
    fused = (_matrix(S.FUSED_LOGITS, batch.column(S.FUSED_LOGITS), rows_of, n_classes, classes, problems)
             if S.FUSED_LOGITS in columns else None)
    emb = {}
    for c in columns:
        if c.startswith(S.EMBEDDING_PREFIX):
            x = _matrix(c, batch.column(c), rows_of, widths.get(c), "the first row's length", problems)
            if x is not None:
                emb[c[len(S.EMBEDDING_PREFIX):]] = x
                widths.setdefault(c, x.shape[1])
    grad = None
    if S.GRAD_NORM in columns:
        grad = batch.column(S.GRAD_NORM).to_numpy(zero_copy_only=False).astype(np.float64)
        bad = np.flatnonzero(~np.isfinite(grad) | (grad < 0))
        if len(bad):
            problems.append(f"{_rows(rows_of(bad))}: column 'grad_norm' must be finite and >= 0")
    if problems:
        raise PredictionsError(f"{path}: " + "\n  - ".join(["problems in the predictions file:"] + problems))
    return Predictions(labels=labels, logits=logits, fused_logits=fused, embeddings=emb, grad_norm=grad)


def predictions_table(sample_ids: pa.Array, p: Predictions) -> pa.Table:
    """The predictions-file table for ``p`` (used by bss's own model and by tests)."""
    cols = {S.SAMPLE_ID: sample_ids}
    cols.update({S.LOGITS_PREFIX + m: vector_column(z) for m, z in p.logits.items()})
    if p.fused_logits is not None:
        cols[S.FUSED_LOGITS] = vector_column(p.fused_logits)
    cols.update({S.EMBEDDING_PREFIX + m: vector_column(e) for m, e in p.embeddings.items()})
    if p.grad_norm is not None:
        cols[S.GRAD_NORM] = pa.array(np.asarray(p.grad_norm, np.float64))
    return pa.table(cols)

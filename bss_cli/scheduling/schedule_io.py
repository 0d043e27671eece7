"""The schedule artifact: long form, one row per (epoch, position), one row group per epoch.

Columns: ``epoch`` (int32, from 0), ``position`` (int64, from 0 within the epoch),
``sample_id``, ``row`` (the sample's manifest row), ``probability`` (the sampler's p_i, or 1/n),
``balance`` (the score the epoch was drawn from). Written epoch by epoch, so memory stays bounded
by one epoch. Also streams to stdout as CSV, JSON Lines, .npy (int64 [rows, 3]: epoch, position,
row) or Parquet.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Callable, Iterable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from bss_cli import schema as S
from bss_cli.artifacts import atomic_path, base_metadata, meta_json, require_kind
from bss_cli.errors import ArtifactError, ConfigError
from bss_cli.scheduling.keys import DRAW
from bss_cli.scheduling.schedulers import Accumulator, ScheduleConfig, make_scheduler
from bss_cli.scoring.scores import Scores

FORMATS = ("parquet", "csv", "jsonl", "npy")


def schedule_schema(id_type: pa.DataType, metadata: dict[str, str], labels: bool = False) -> pa.Schema:
    fields = [(S.EPOCH, pa.int32()), (S.POSITION, pa.int64()), (S.SAMPLE_ID, id_type), (S.ROW, pa.int64()),
              (S.PROBABILITY, pa.float64()), (S.BALANCE, pa.float64())]
    return pa.schema(fields + ([(S.LABEL, pa.int64())] if labels else []), metadata=metadata)


def scores_fingerprint(scores: Scores) -> str:
    """Content hash of the rows and balance scores (the same whether read from a file or made in memory)."""
    h = hashlib.sha256(np.ascontiguousarray(scores.rows, np.int64).tobytes())
    h.update(np.ascontiguousarray(scores.balance, np.float64).tobytes())
    return h.hexdigest()[:16]


def schedule_metadata(scores_meta: dict[str, str], config: ScheduleConfig, epochs: list[int], n: int,
                      fingerprint: str, history: list[str] = ()) -> dict[str, str]:
    """A schedule's metadata, from its scores' metadata and how it was drawn."""
    return base_metadata(S.KIND_SCHEDULE, **{
        S.META_SCHEDULER: config.scheduler,
        S.META_SCHEDULER_PARAMS: config.params(),
        S.META_SEED: str(config.seed),
        S.META_EPOCHS: list(epochs),
        S.META_N_SAMPLES: str(n),
        S.META_SCORES_FINGERPRINT: fingerprint,
        S.META_MANIFEST_FINGERPRINT: scores_meta.get(S.META_MANIFEST_FINGERPRINT, ""),
        S.META_CRITERION: scores_meta.get(S.META_CRITERION, ""),
        S.META_CLASSES: meta_json(scores_meta, S.META_CLASSES, []),
        "bss.history_fingerprints": list(history),
        S.META_DRAW: DRAW,
    })


@dataclass
class ScheduleJob:
    """What to schedule: scores (plus earlier scores for the accumulated rule), config, epochs."""

    scores: Scores
    config: ScheduleConfig
    epochs: list[int]
    history: tuple[Scores, ...] = ()
    balance: np.ndarray | None = None  # the scores to draw from, when the caller accumulated them itself
    fingerprint: str | None = None  # scores_fingerprint(scores), when the caller knows it already

    def effective_balance(self) -> np.ndarray:
        if self.balance is not None:
            return self.balance
        if not self.history:
            return self.scores.balance
        acc = Accumulator.for_config(self.config)
        if acc is None:
            raise ConfigError("--history needs an accumulating rule: --accumulate (scripts rule) or --rule paper")
        for old in self.history:  # oldest first
            if not np.array_equal(old.rows, self.scores.rows):
                raise ConfigError("a --history scores file covers other samples than SCORES; score the same split "
                                  "of the same manifest every epoch")
            acc.add(old.balance)
        return acc.add(self.scores.balance)

    def metadata(self) -> dict[str, str]:
        return schedule_metadata(self.scores.metadata, self.config, self.epochs, len(self.scores.balance),
                                 self.fingerprint or scores_fingerprint(self.scores),
                                 [scores_fingerprint(h) for h in self.history])

    def labels(self) -> np.ndarray | None:
        """Each scored sample's class code, when the scores carry them (bss score writes them)."""
        t = self.scores.table
        return t[S.LABEL].to_numpy() if S.LABEL in t.column_names else None

    def tables(self) -> Iterator[pa.Table]:
        """One table per epoch, in order; only one epoch is in memory at a time."""
        draw = self.drawer()
        for e in self.epochs:
            yield draw(e)

    def drawer(self) -> Callable[[int], pa.Table]:
        """A function giving any epoch's table, with the scheduler built once (a trainer draws one
        epoch at a time from fixed scores)."""
        balance = self.effective_balance()
        labels = self.labels()
        ids, rows = self.scores.table[S.SAMPLE_ID].combine_chunks(), self.scores.rows
        scheduler = make_scheduler(balance, self.config, labels, rows=rows)

        def draw(e: int) -> pa.Table:
            idx, prob = scheduler.epoch(e)
            cols = {
                S.EPOCH: pa.array(np.full(len(idx), e, np.int32)),
                S.POSITION: pa.array(np.arange(len(idx), dtype=np.int64)),
                S.SAMPLE_ID: ids.take(pa.array(idx)),
                S.ROW: pa.array(rows[idx]),
                S.PROBABILITY: pa.array(prob),
                S.BALANCE: pa.array(balance[idx]),
            }
            if labels is not None:
                cols[S.LABEL] = pa.array(labels[idx], pa.int64())
            return pa.table(cols)

        return draw

    def total_rows(self) -> int:
        scheduler = make_scheduler(self.scores.balance, self.config, self.labels(), rows=self.scores.rows)
        return sum(scheduler.size(e) for e in self.epochs)


PARQUET_OPTIONS = {"compression": "zstd"}


def _file_schema(job: ScheduleJob) -> pa.Schema:
    return schedule_schema(job.scores.table.schema.field(S.SAMPLE_ID).type, job.metadata(),
                           labels=job.labels() is not None)


def _write_parquet(sink, job: ScheduleJob, tables: Iterable[pa.Table]) -> int:
    schema = _file_schema(job)
    n = 0
    with pq.ParquetWriter(sink, schema, **PARQUET_OPTIONS) as writer:
        for t in tables:
            writer.write_table(t.cast(schema), row_group_size=max(1, t.num_rows))
            n += t.num_rows
    return n


def one_epoch_file(job: ScheduleJob, table: pa.Table) -> tuple[pa.Table, dict]:
    """A one-epoch job's file as a table (the file's schema and metadata) and Parquet options:
    ``pq.write_table(table, path, **options)`` writes what :func:`write_schedule` writes, and
    the encoding can run on another thread (the trainer's per-epoch artifact)."""
    return table.cast(_file_schema(job)), {**PARQUET_OPTIONS, "row_group_size": max(1, table.num_rows)}


def _write_csv(sink: BinaryIO, job: ScheduleJob, tables: Iterable[pa.Table]) -> int:
    import pyarrow.csv as pcsv

    n = 0
    writer = None
    for t in tables:
        if writer is None:
            writer = pcsv.CSVWriter(sink, t.schema)
        writer.write_table(t)
        n += t.num_rows
    if writer is not None:
        writer.close()
    return n


def _write_jsonl(sink: BinaryIO, job: ScheduleJob, tables: Iterable[pa.Table]) -> int:
    n = 0
    for t in tables:
        cols = [t[c].to_pylist() for c in t.column_names]
        names = t.column_names
        lines = (json.dumps(dict(zip(names, values))) for values in zip(*cols))
        sink.write(("\n".join(lines) + "\n").encode())
        n += t.num_rows
    return n


def _write_npy(sink: BinaryIO, job: ScheduleJob, tables: Iterable[pa.Table]) -> int:
    total = job.total_rows()
    np.lib.format.write_array_header_1_0(sink, {"descr": "<i8", "fortran_order": False, "shape": (total, 3)})
    n = 0
    for t in tables:
        block = np.stack([t[S.EPOCH].to_numpy().astype(np.int64), t[S.POSITION].to_numpy(), t[S.ROW].to_numpy()], axis=1)
        sink.write(np.ascontiguousarray(block, "<i8").tobytes())
        n += t.num_rows
    return n


def read_npy(stream: BinaryIO) -> np.ndarray:
    """An ``.npy`` array from a stream that cannot seek (a pipe: ``read_npy(sys.stdin.buffer)``).

    ``np.load`` and ``np.lib.format.read_array`` both seek, so they fail on a pipe; this reads the
    header and then exactly the array's bytes.
    """
    version = np.lib.format.read_magic(stream)
    if version == (1, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(stream)
    else:
        shape, fortran, dtype = np.lib.format.read_array_header_2_0(stream)
    count = int(np.prod(shape)) if shape else 1
    data = stream.read(count * dtype.itemsize)
    if len(data) != count * dtype.itemsize:
        raise ArtifactError(f"the npy stream ended after {len(data)} of {count * dtype.itemsize} bytes")
    return np.frombuffer(data, dtype=dtype).reshape(shape, order="F" if fortran else "C")


WRITERS = {"parquet": _write_parquet, "csv": _write_csv, "jsonl": _write_jsonl, "npy": _write_npy}


def write_schedule(job: ScheduleJob, out: str | Path | BinaryIO, fmt: str = "parquet",
                   tables: Iterable[pa.Table] | None = None, progress=None) -> int:
    """Write ``job`` to a path (atomically) or to an open binary stream; return the row count.

    ``tables``: the job's epoch tables when the caller already drew them (the trainer trains on
    the table it writes, so the ordering is not drawn twice).
    """
    if fmt not in WRITERS:
        raise ConfigError(f"--format {fmt!r}: expected one of {', '.join(FORMATS)}")
    tables = job.tables() if tables is None else tables
    if progress is not None:  # progress(stage, epochs written, epochs)
        tables = _counted(tables, len(job.epochs), progress)
    if isinstance(out, (str, Path)):
        with atomic_path(out) as tmp, open(tmp, "wb") as f:
            return WRITERS[fmt](f, job, tables)
    return WRITERS[fmt](out, job, tables)


def _counted(tables: Iterable[pa.Table], total: int, progress) -> Iterator[pa.Table]:
    for i, t in enumerate(tables):
        yield t
        progress("epochs", i + 1, total)


class ScheduleFile:
    """A schedule artifact on disk; ``epoch(e)`` reads only that epoch's row group.

    An epoch past the written ones is drawn by the file's own rule when it can be: the metadata
    holds the scheduler, its parameters and the seed, and the rows hold the scores they were drawn
    from, so once the epochs cover every scored sample the scores are known again (checked against
    the file's scores fingerprint) and epoch E is exactly what ``bss schedule --epoch E`` gives.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.metadata = require_kind(self.path, S.KIND_SCHEDULE)
        try:
            self._file = pq.ParquetFile(self.path)
        except (pa.ArrowException, OSError) as exc:
            raise ArtifactError(f"{self.path}: not a readable Parquet file ({exc})") from None
        self.epochs: list[int] = [int(e) for e in meta_json(self.metadata, S.META_EPOCHS, [])]
        if len(self.epochs) != self._file.num_row_groups:
            raise ArtifactError(f"{self.path}: {self._file.num_row_groups} row groups for {len(self.epochs)} epochs; "
                                "the file was not written by bss schedule")
        self._job: ScheduleJob | None = None
        self.columns = self._file.schema_arrow.names

    def epoch(self, epoch: int, columns: Iterable[str] | None = None) -> pa.Table:
        columns = list(columns) if columns else None
        if epoch in self.epochs:
            return self._file.read_row_group(self.epochs.index(epoch), columns=columns)
        if epoch < 0:
            raise ConfigError(f"{self.path}: epochs count from 0, not {epoch}")
        job = self._extension(epoch)
        table = next(ScheduleJob(job.scores, job.config, [epoch], balance=job.balance).tables())
        return table.select(columns) if columns else table

    def _extension(self, epoch: int) -> "ScheduleJob":
        """The job that draws epochs past the file, or a clear refusal."""
        if self._job is not None:
            return self._job
        why = f"{self.path}: holds epochs {_span(self.epochs)}, not epoch {epoch}, and cannot draw it: "
        meta = self.metadata
        if meta.get(S.META_FORMAT_VERSION) != S.format_version(S.KIND_SCHEDULE):
            raise ConfigError(why + f"it is a format {meta.get(S.META_FORMAT_VERSION)} schedule, drawn by an earlier "
                                    "generator; write the epochs you need with this bss schedule --epochs")
        if meta_json(meta, "bss.history_fingerprints", []):
            raise ConfigError(why + "it was made with --history (accumulated scores); write more epochs with "
                                    "bss schedule --epochs")
        n = int(meta.get(S.META_N_SAMPLES, "0") or 0)
        cols = [S.SAMPLE_ID, S.ROW, S.BALANCE] + ([S.LABEL] if S.LABEL in self._file.schema_arrow.names else [])
        parts = [self._file.read_row_group(i, columns=cols) for i in range(self._file.num_row_groups)]
        if not parts:
            raise ConfigError(why + "it holds no epochs")
        rows = pa.concat_tables(parts)
        unique = pc.unique(rows[S.ROW]).to_numpy()
        if len(unique) != n:
            raise ConfigError(why + f"its epochs cover {len(unique)} of its {n} scored samples, so the scores of the "
                                    f"rest are unknown; write the epochs you need with bss schedule --epochs {epoch + 1}")
        first = pc.index_in(pa.array(np.sort(unique)), value_set=rows[S.ROW])
        table = rows.take(first).replace_schema_metadata(None)
        scores = Scores(table, {S.META_MANIFEST_FINGERPRINT: meta.get(S.META_MANIFEST_FINGERPRINT, ""),
                                S.META_CRITERION: meta.get(S.META_CRITERION, "")})
        if scores_fingerprint(scores) != meta.get(S.META_SCORES_FINGERPRINT):
            raise ConfigError(why + "the scores in its rows do not match its scores fingerprint (the file was "
                                    "edited); write the epochs you need with bss schedule")
        params = meta_json(meta, S.META_SCHEDULER_PARAMS, {}) or {}
        config = ScheduleConfig(scheduler=meta.get(S.META_SCHEDULER, ""), seed=int(meta.get(S.META_SEED, "0")),
                                **params).validate()
        self._job = ScheduleJob(scores, config, [])
        return self._job


EPOCH_FOLDER = "epoch={:05d}"


class ScheduleFolder:
    """A schedule written as a folder of partitions (``bss schedule --engine ray``):
    ``epoch=00000/part-00000.parquet``, ... Read like a :class:`ScheduleFile`: ``epoch(e)`` reads
    that epoch's files, in order."""

    def __init__(self, path: str | Path):
        from bss_cli.data.partitions import open_set

        self.path = Path(path)
        folders = {}
        for child in sorted(self.path.iterdir()) if self.path.is_dir() else []:
            name = child.name
            if name.startswith(("_", ".")):
                continue
            if not (child.is_dir() and name.startswith("epoch=") and name[6:].isdigit()):
                raise ArtifactError(f"{child}: not an epoch folder (epoch=NNNNN); a schedule folder holds one folder "
                                    "per epoch, as bss schedule --engine ray writes it")
            folders[int(name[6:])] = child
        if not folders:
            raise ArtifactError(f"{self.path}: no epoch=NNNNN folders; expected a schedule folder written by bss "
                                "schedule --engine ray")
        self.epochs = sorted(folders)
        self._sets = {e: open_set(folders[e], "schedule epoch") for e in self.epochs}
        first = self._sets[self.epochs[0]]
        self.metadata = require_kind(first.files[0], S.KIND_SCHEDULE)
        for e, part in self._sets.items():
            if not part.schema.equals(first.schema):
                raise ArtifactError(f"{part.files[0]}: its columns differ from {first.files[0]}'s; the epochs of a "
                                    "schedule folder come from one bss schedule run")
            for f in part.files:
                if require_kind(f, S.KIND_SCHEDULE) != self.metadata:
                    raise ArtifactError(f"{f}: its metadata differs from {first.files[0]}'s; the partitions of a "
                                        "schedule folder come from one bss schedule run (re-create the folder)")
        said = [int(e) for e in meta_json(self.metadata, S.META_EPOCHS, [])]
        if said != self.epochs:
            raise ArtifactError(f"{self.path}: holds epoch folders {_span(self.epochs)} but was written with epochs "
                                f"{_span(said)}; a folder is missing or extra (re-create it)")
        self.columns = first.schema.names

    def epoch(self, epoch: int, columns: Iterable[str] | None = None) -> pa.Table:
        if epoch not in self._sets:
            raise ConfigError(f"{self.path}: holds epochs {_span(self.epochs)}, not epoch {epoch}; write the epochs "
                              "you need with bss schedule --epochs")
        return self._sets[epoch].read(list(columns) if columns else None)


def read_schedule_table(path: str | Path) -> pa.Table:
    """A schedule written by ``bss schedule`` as CSV or JSON Lines, as one table (all epochs)."""
    import pyarrow.csv as pcsv
    import pyarrow.json as pjson

    path = Path(path)
    suffix = path.suffix.lower()
    try:
        table = pcsv.read_csv(path) if suffix == ".csv" else pjson.read_json(path)
    except (pa.ArrowException, OSError) as exc:
        raise ArtifactError(f"{path}: not a readable schedule ({str(exc)[:200]})") from None
    missing = [c for c in (S.EPOCH, S.POSITION, S.SAMPLE_ID, S.ROW) if c not in table.column_names]
    if missing:
        raise ArtifactError(f"{path}: lacks schedule column(s) {', '.join(missing)}; expected what bss schedule "
                            "writes (epoch, position, sample_id, row, probability, balance)")
    return table


class TableSchedule:
    """A whole schedule in memory (from CSV / JSON Lines), read like a :class:`ScheduleFile`."""

    def __init__(self, table: pa.Table, metadata: dict | None = None):
        self.table, self.metadata = table, metadata or {}
        self.columns = table.column_names
        self.epochs = sorted(pc.unique(table[S.EPOCH]).to_pylist())

    def epoch(self, epoch: int, columns: Iterable[str] | None = None) -> pa.Table:
        if epoch not in self.epochs:
            raise ConfigError(f"the schedule holds epochs {_span(self.epochs)}, not epoch {epoch}")
        t = self.table.filter(pc.equal(self.table[S.EPOCH], epoch)).sort_by(S.POSITION)
        return t.select(list(columns)) if columns else t


def open_schedule(path: str | Path):
    """A schedule file in any format bss schedule writes: a ScheduleFile, or a table for CSV/JSONL."""
    suffix = Path(path).suffix.lower()
    if suffix in (".csv", ".jsonl", ".json"):
        return read_schedule_table(path)
    if Path(path).is_dir():
        return ScheduleFolder(path)
    return ScheduleFile(path)


def _span(epochs: list[int]) -> str:
    if epochs and epochs == list(range(epochs[0], epochs[-1] + 1)):
        return f"{epochs[0]}..{epochs[-1]}"
    return ", ".join(map(str, epochs))

"""Schedule order for data that is not a map-style dataset: ``ScheduledRows``, an IterableDataset
that reads each scheduled row by its index from a random-access store.

A bss schedule names manifest rows; an iterable source (a stream) cannot be asked for row 1,234,
so the schedule's order can only be followed by a store that can: a Parquet file read a row group
at a time (:class:`ParquetRows`), an Arrow or Hugging Face ``datasets`` table, or anything with
``take(rows) -> list[dict]``. Formats that can only be read front to back (WebDataset tar shards,
MosaicML ``streaming`` shards, litdata) cannot follow a per-sample order; convert them to Parquet
(one row per sample, in manifest order) or use their own shuffling.

    rows = ScheduledRows("schedule.parquet", ParquetRows("train.parquet"), batch_size=32)
    loader = DataLoader(rows, batch_size=None, num_workers=4)   # each item is one batch
    for epoch in range(epochs):
        rows.set_epoch(epoch)
        for b, batch in enumerate(loader):
            ...
            state = rows.state_at(epoch, b + 1)        # save it with your checkpoint
    # to resume: rows.load_state_dict(state)          (on any number of processes)

Sharding: ranks as :class:`~bss_cli.scheduling.sampler.ScheduleSampler` (positions r, r + W, ...
of the epoch, padded by wrapping); DataLoader workers take this rank's batches round-robin
(worker w: batches w, w + n, ...), which a DataLoader with ``batch_size=None`` interleaves back in
order, so the batches arrive exactly in schedule order with any number of workers.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from bss_cli import schema as S
from bss_cli.artifacts import require_regular_file
from bss_cli.errors import ArtifactError, ConfigError
from bss_cli.scheduling.sampler import ScheduleSampler


class ParquetRows:
    """Rows of a Parquet file by row index, read a row group at a time (the last ``cache`` groups
    kept), returned as dicts in the order asked for."""

    def __init__(self, path: str | Path, columns: list[str] | None = None, cache: int = 2):
        self.path = require_regular_file(path)
        try:
            self._file = pq.ParquetFile(self.path)
        except (pa.ArrowException, OSError) as exc:
            raise ArtifactError(f"{self.path}: not a readable Parquet file ({exc})") from None
        self.columns, self.cache = columns, max(1, cache)
        sizes = [self._file.metadata.row_group(i).num_rows for i in range(self._file.num_row_groups)]
        self._starts = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        self._groups: OrderedDict[int, pa.Table] = OrderedDict()

    def __len__(self) -> int:
        return int(self._starts[-1])

    @property
    def sample_ids(self) -> pa.Array | None:
        """The file's ``sample_id`` column (read alone, once), or None when it has none."""
        if "_ids" not in self.__dict__:
            names = self._file.schema_arrow.names
            self._ids = self._file.read(columns=[S.SAMPLE_ID]).column(0).combine_chunks() \
                if S.SAMPLE_ID in names else None
        return self._ids

    def __getstate__(self):  # a DataLoader worker opens its own file handle
        state = dict(self.__dict__)
        state["_file"], state["_groups"] = None, OrderedDict()
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._file = pq.ParquetFile(self.path)

    def _group(self, g: int) -> pa.Table:
        if g not in self._groups:
            self._groups[g] = self._file.read_row_group(g, columns=self.columns)
            while len(self._groups) > self.cache:
                self._groups.popitem(last=False)
        self._groups.move_to_end(g)
        return self._groups[g]

    def take(self, rows: np.ndarray) -> list[dict]:
        rows = np.asarray(rows, np.int64)
        if len(rows) and (rows.min() < 0 or rows.max() >= len(self)):
            bad = int(rows[(rows < 0) | (rows >= len(self))][0])
            raise ConfigError(f"{self.path}: row {bad} is scheduled but the file has {len(self)} rows; the "
                              "schedule must come from a manifest whose rows are this file's rows, in order")
        groups = np.searchsorted(self._starts, rows, side="right") - 1
        out: list[dict | None] = [None] * len(rows)
        for g in np.unique(groups):
            at = np.flatnonzero(groups == g)
            picked = self._group(int(g)).take(pa.array(rows[at] - self._starts[g])).to_pylist()
            for i, row in zip(at, picked):
                out[i] = row
        return out


class TableRows:
    """Rows of an in-memory or memory-mapped table by row index: a ``pyarrow.Table`` or a Hugging
    Face ``datasets.Dataset`` (its ``select``, so an indices mapping from ``shuffle``/``select`` is
    honoured), as dicts in the order asked for."""

    def __init__(self, table):
        if not (isinstance(table, pa.Table) or hasattr(table, "select") and hasattr(table, "column_names")):
            raise ConfigError(f"TableRows: expected a pyarrow.Table or a datasets.Dataset, got {type(table).__name__}")
        self.table = table

    def __len__(self) -> int:
        return self.table.num_rows if isinstance(self.table, pa.Table) else len(self.table)

    @property
    def sample_ids(self):
        """The table's ``sample_id`` column (in its order), or None when it has none."""
        if S.SAMPLE_ID not in self.table.column_names:
            return None
        return self.table[S.SAMPLE_ID] if isinstance(self.table, pa.Table) else list(self.table[S.SAMPLE_ID])

    def take(self, rows: np.ndarray) -> list[dict]:
        rows = np.asarray(rows, np.int64)
        if len(rows) and (rows.min() < 0 or rows.max() >= len(self)):
            raise ConfigError(f"row {int(rows.max())} is scheduled but the table has {len(self)} rows")
        if isinstance(self.table, pa.Table):
            return self.table.take(pa.array(rows)).to_pylist()
        return self.table.select(rows.tolist()).to_list()


class ScheduledRows(torch.utils.data.IterableDataset):
    """Each epoch's scheduled rows of ``source`` (``take(rows) -> list[dict]``), in schedule order,
    as batches of ``batch_size`` dicts (``collate`` turns a list of rows into a batch; default:
    torch's ``default_collate``). Ranks from the process group or torchrun; workers from the
    DataLoader.

    Rows are looked up by the schedule's ``sample_id`` in the source's ``sample_id`` column
    (``source.sample_ids``), so the source may hold its rows in any order, or only the train rows;
    a scheduled sample the source lacks is an error. A source without sample ids is read by the
    schedule's manifest row numbers only with ``trust_row_order=True`` (its rows must then be the
    manifest's, in manifest order: nothing can check it)."""

    def __init__(self, schedule, source, batch_size: int, *, collate: Callable | None = None,
                 rank: int | None = None, world_size: int | None = None, drop_last: bool = False,
                 trust_row_order: bool = False):
        if not hasattr(source, "take"):
            raise ConfigError(f"source {type(source).__name__}: expected an object with take(rows) -> list of rows "
                              "(ParquetRows, or your own over an Arrow or datasets table)")
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigError(f"batch_size {batch_size!r}: expected an integer >= 1")
        ids = None if trust_row_order else getattr(source, "sample_ids", None)
        if ids is None and not trust_row_order:
            raise ConfigError(f"source {type(source).__name__} has no sample_id column, so the rows it returns cannot be "
                              "checked against the schedule's samples (a file sorted otherwise would train the wrong "
                              "ones); add the manifest's sample_id column, or pass trust_row_order=True if its rows "
                              "are the manifest's, in manifest order")
        shard = {"rank": rank, "world_size": world_size}
        self.sampler = ScheduleSampler(schedule, ids=ids, **shard) if ids is not None else \
            ScheduleSampler(schedule, rows=True, **shard)  # by id: any row order, a train-only file
        self.source, self.batch_size, self.drop_last = source, batch_size, drop_last
        self._resumed: tuple[int, int] | None = None  # (epoch, offset) the current pass started at
        self.collate = collate or torch.utils.data.default_collate
        if hasattr(source, "__len__") and len(self.sampler.order()) and self.sampler.order().max() >= len(source):
            raise ConfigError(f"the schedule names manifest row {int(self.sampler.order().max())} but the source has "
                              f"{len(source)} rows; the source must hold every manifest row in manifest order")

    def set_epoch(self, epoch: int) -> None:
        """Call before each epoch's ``iter(loader)`` (workers copy the dataset when a pass starts, so
        ``persistent_workers=True`` would keep them on the old epoch: leave it off)."""
        if epoch != self.sampler.epoch:
            self._resumed = None
        self.sampler.set_epoch(epoch)

    def _batches(self) -> list[np.ndarray]:
        """This rank's batches of the epoch, from its current position (a resume) on."""
        return list(self.sampler.batches(self.batch_size, self.drop_last).slices())

    def __len__(self) -> int:
        return len(self.sampler.batches(self.batch_size, self.drop_last))

    def __iter__(self) -> Iterator:
        info = torch.utils.data.get_worker_info()
        worker, workers = (0, 1) if info is None else (info.id, info.num_workers)
        for i, rows in enumerate(self._batches()):
            if i % workers == worker:
                yield self.collate(self.source.take(rows))

    # --- resume --------------------------------------------------------------------------------
    def state_at(self, epoch: int, batches_done: int) -> dict:
        """The state after ``batches_done`` batches of ``epoch`` on this rank (the count your loop
        saw, not what workers prefetched): epoch and global position, for any world size."""
        start = self._resumed[1] if self._resumed and self._resumed[0] == epoch else 0
        return {"epoch": int(epoch), "offset": int(self.sampler.offset_after(epoch, start, batches_done, self.batch_size))}

    def load_state_dict(self, state: dict) -> None:
        """Continue at a saved position: the next pass yields the rest of that epoch."""
        self.sampler.load_state_dict(state)
        self._resumed = (int(state["epoch"]), int(state["offset"]))

"""``ScheduleSampler``: a torch Sampler that yields a bss schedule's order, epoch by epoch.

**Which dataset index is each scheduled sample?** Said explicitly, never guessed: ``ids`` (your
dataset's sample ids in dataset order, e.g. the train rows you built it from), a ``dataset``
exposing ``sample_ids``, ``index_of`` (sample_id -> index), or ``rows=True`` when the dataset
holds every manifest row in manifest order. A scheduled id the mapping lacks is an error.

**Sharding across ranks**: an epoch of n indices is padded by wrapping around to
ceil(n / W) * W (``pad="wrap"``, the default, as DistributedSampler does) or cut to
floor(n / W) * W (``pad="drop"``), and rank r takes positions r, r + W, ... So every rank gets the
same number of indices in every epoch, even as a curriculum's subset grows; the shards cover the
epoch, and each keeps the balanced-first order.

**Resuming, also on another number of processes**: the state is the epoch and the *global*
position reached in its order (all ranks advance in lockstep, so after k indices per rank the
first k * W positions are done). Loaded at any world size W', the rest of the epoch is sharded
over W' ranks: no sample repeated, none skipped (beyond the padding above), as MosaicML
``streaming`` users expect. With DataLoader workers, wrap the loader in torchdata's
``StatefulDataLoader``: it snapshots ``state_dict()`` when each batch is dispatched, so the state
it saves counts the batches you received, not the ones prefetched.

**Epochs past the file**: a schedule file carries its scheduler, parameters and seed, and its
rows carry their scores; epoch E beyond the last written one is drawn by the same rule (see
:meth:`~bss_cli.scheduling.schedule_io.ScheduleFile.epoch`), or refused with the reason.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterator, Mapping, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from torch.utils.data import Sampler

from bss_cli import schema as S
from bss_cli.bounds import FILE_BOUNDS
from bss_cli.errors import ConfigError

PADS = ("wrap", "drop")
HOW_TO_MAP = ("pass ids=<your dataset's sample ids, in dataset order> (or dataset=<a Dataset with .sample_ids>), "
              "index_of={sample_id: dataset index}, or rows=True when the dataset holds every manifest row in "
              "manifest order")


def shard(order: np.ndarray, rank: int, world_size: int, pad: str = "wrap") -> np.ndarray:
    """This rank's part of an epoch's order (see the module docstring)."""
    n = len(order)
    if pad == "wrap":
        per_rank = -(-n // world_size)
        total = per_rank * world_size
        order = np.resize(order, total) if total > n else order  # np.resize repeats from the start
    elif pad == "drop":
        total = (n // world_size) * world_size
        if total == 0 and n:
            raise ConfigError(f"an epoch of {n} samples cannot be split over {world_size} ranks with pad='drop'")
        order = order[:total]
    else:
        raise ConfigError(f"pad {pad!r}: expected one of {', '.join(PADS)}")
    return order[rank::world_size]


class ScheduleSampler(Sampler[int]):
    """Yields dataset indices in a schedule's order for the current epoch (``set_epoch``).

    ``schedule``: a schedule file path (Parquet, or the CSV / JSON Lines that ``bss schedule``
    writes), a :class:`~bss_cli.scheduling.schedule_io.ScheduleFile`, or a table with the schedule
    columns. The mapping to dataset indices: exactly one of ``ids``, ``dataset``, ``index_of`` or
    ``rows=True`` (see the module docstring). ``rank``/``world_size`` default to the initialised
    ``torch.distributed`` process group, else torchrun's ``RANK``/``WORLD_SIZE``, else 0/1.
    """

    def __init__(self, schedule, index_of: Mapping | Callable | None = None, *, ids: Sequence | None = None,
                 dataset=None, rows: bool = False, rank: int | None = None, world_size: int | None = None,
                 pad: str = "wrap"):
        self.auto_shard = rank is None and world_size is None  # the process group's, possibly known only later
        if rank is None or world_size is None:
            auto_rank, auto_world = _process_group()
            rank = auto_rank if rank is None else rank
            world_size = auto_world if world_size is None else world_size
        if not 0 <= rank < world_size:
            raise ConfigError(f"rank {rank} is outside 0..{world_size - 1}")
        if pad not in PADS:
            raise ConfigError(f"pad {pad!r}: expected one of {', '.join(PADS)}")
        self.rank, self.world_size, self.pad = rank, world_size, pad
        if dataset is not None and any(c.__name__ == "IterableDataset" for c in type(dataset).__mro__):
            raise ConfigError(f"dataset {type(dataset).__name__} is an IterableDataset: it has no indices, so no "
                              "sampler (bss's or torch's) can order it, and ids= cannot help. Read the rows by "
                              "index instead: bss_cli.scheduling.streaming.ScheduledRows over a Parquet file "
                              "(ParquetRows) or any store with take(rows), or use a map-style dataset (dataset[i])")
        if dataset is not None and ids is None and index_of is None and not rows:
            ids = getattr(dataset, "sample_ids", None)
            names = getattr(dataset, "column_names", None)  # a Hugging Face datasets.Dataset
            if ids is None and isinstance(names, list) and S.SAMPLE_ID in names:
                ids = list(dataset[S.SAMPLE_ID])  # in the dataset's order (select/shuffle included)
            if ids is None:
                raise ConfigError(f"dataset {type(dataset).__name__} exposes no sample_ids (nor a 'sample_id' column); "
                                  f"{HOW_TO_MAP}")
        given = [name for name, on in (("ids", ids is not None), ("index_of", index_of is not None),
                                       ("rows=True", rows)) if on]
        if len(given) != 1:
            raise ConfigError(f"ScheduleSampler needs exactly one way to map scheduled samples to dataset indices "
                              f"({'got ' + ' and '.join(given) if given else 'got none'}): {HOW_TO_MAP}")
        self._dataset_len = len(dataset) if dataset is not None and hasattr(dataset, "__len__") else None
        self._ids = None
        if ids is not None:
            self._ids = ids if isinstance(ids, (pa.Array, pa.ChunkedArray)) else pa.array(list(ids))
            if isinstance(self._ids, pa.ChunkedArray):
                self._ids = self._ids.combine_chunks()
            if len(pc.unique(self._ids)) != len(self._ids):
                raise ConfigError("ids: the dataset's sample ids must be unique (one dataset index per sample)")
            if self._dataset_len is not None and self._dataset_len != len(self._ids):
                raise ConfigError(f"the dataset has {self._dataset_len} items but {len(self._ids)} sample ids; "
                                  "they must match one to one")
        self.index_of, self.rows = index_of, rows
        self._source = _open(schedule)
        self.epochs = list(self._source.epochs)
        if not self.epochs:
            raise ConfigError("the schedule holds no epochs")
        self.epoch = self.epochs[0]
        self._cache: tuple[int, np.ndarray] | None = None
        self._resume: int | None = None  # global position to start the next pass at (load_state_dict)
        self._start = 0  # global position the current pass started at
        self._yielded = 0  # indices this rank yielded in the current pass

    # --- the epoch's order -------------------------------------------------------------
    def _epoch_table(self, epoch: int) -> pa.Table:
        return self._source.epoch(epoch, columns=[S.POSITION, S.SAMPLE_ID, S.ROW])

    def order(self, epoch: int | None = None) -> np.ndarray:
        """Dataset indices of a whole epoch, in schedule order (all ranks, no padding)."""
        epoch = self.epoch if epoch is None else epoch
        if self._cache is not None and self._cache[0] == epoch:
            return self._cache[1]
        t = self._epoch_table(epoch)
        if self.rows:
            order = t[S.ROW].to_numpy()
            if self._dataset_len is not None and len(order) and (order.max() >= self._dataset_len or order.min() < 0):
                raise ConfigError(f"epoch {epoch} schedules manifest row {int(order.max())} but the dataset has "
                                  f"{self._dataset_len} items; with rows=True the dataset must hold every manifest "
                                  f"row in manifest order, else {HOW_TO_MAP}")
        elif self._ids is not None:
            sched_ids = t[S.SAMPLE_ID].combine_chunks()
            if _id_kind(sched_ids.type) != _id_kind(self._ids.type):
                raise ConfigError(f"ids are {self._ids.type} but the schedule's sample ids are {sched_ids.type}; pass "
                                  "the dataset's ids as the manifest holds them (e.g. [str(i) for i in ids])")
            found = pc.index_in(sched_ids.cast(self._ids.type) if sched_ids.type != self._ids.type else sched_ids,
                                value_set=self._ids)
            missing = np.flatnonzero(found.is_null().to_numpy(zero_copy_only=False))
            if len(missing):
                shown = ", ".join(repr(sched_ids[int(i)].as_py()) for i in missing[:5])
                raise ConfigError(f"epoch {epoch} schedules {len(missing)} sample(s) that the dataset's ids lack "
                                  f"({shown}); build the dataset from the rows the schedule was made from "
                                  "(bss score --split)")
            order = found.to_numpy().astype(np.int64)
        else:
            look = self.index_of.__getitem__ if isinstance(self.index_of, Mapping) else self.index_of
            ids = t[S.SAMPLE_ID].to_pylist()
            try:
                order = np.fromiter((look(i) for i in ids), np.int64, len(ids))
            except KeyError as exc:
                raise ConfigError(f"sample_id {exc.args[0]!r} of the schedule (epoch {epoch}) is not in index_of; "
                                  "the mapping must cover every scheduled sample") from None
        self._cache = (epoch, order)
        return order

    def epoch_quantities(self, epoch: int | None = None) -> tuple[dict[str, float], dict[str, np.ndarray]]:
        """What trackers show of an epoch's order (default: the current one): ``bss/epoch_size``,
        ``bss/prefix_fraction`` (the size over the samples the schedule holds: ``bss.n_samples``,
        else the dataset's size) and ``bss/mean_balance``; and the balance scores and sampling
        probabilities of the epoch's rows, for histograms (when the schedule has them)."""
        import json

        epoch = self.epoch if epoch is None else epoch
        have = [c for c in (S.BALANCE, S.PROBABILITY) if c in (getattr(self._source, "columns", None) or [])]
        t = self._source.epoch(epoch, columns=[S.POSITION, *have])
        n = (getattr(self._source, "metadata", None) or {}).get(S.META_N_SAMPLES)
        try:
            n = int(json.loads(n)) if n is not None else (self._dataset_len or 0)
        except (TypeError, ValueError):
            n = self._dataset_len or 0
        values = {"bss/epoch_size": float(t.num_rows)}
        if n:
            values["bss/prefix_fraction"] = t.num_rows / n
        arrays = {}
        if S.BALANCE in have and t.num_rows:
            arrays["bss/balance_scores"] = t[S.BALANCE].to_numpy()
            values["bss/mean_balance"] = float(arrays["bss/balance_scores"].mean())
        if S.PROBABILITY in have and t.num_rows:
            arrays["bss/sampling_probability"] = t[S.PROBABILITY].to_numpy()
        return values, arrays

    def _mine(self, start: int, epoch: int | None = None) -> np.ndarray:
        """This rank's indices for the rest of the epoch (default: the current one) from global
        position ``start``."""
        rest = self.order(epoch)[start:]
        if self.pad == "drop" and len(rest) < self.world_size:
            return rest[:0]
        return shard(rest, self.rank, self.world_size, self.pad)

    # --- the Sampler protocol ------------------------------------------------------------
    def shard_as(self, rank: int, world_size: int) -> None:
        """Shard over ``world_size`` processes as ``rank`` (a trainer that starts its processes after
        the sampler was made, e.g. Lightning's own launcher, tells it here)."""
        if not 0 <= rank < world_size:
            raise ConfigError(f"rank {rank} is outside 0..{world_size - 1}")
        self.rank, self.world_size = int(rank), int(world_size)

    def set_epoch(self, epoch: int) -> None:
        if isinstance(epoch, bool) or not isinstance(epoch, (int, np.integer)) or not 0 <= epoch < MAX_EPOCH:
            raise ConfigError(f"set_epoch({epoch!r}): expected an epoch number from 0 to {MAX_EPOCH - 1:,}")
        if epoch != self.epoch:
            self._resume, self._start, self._yielded = None, 0, 0
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self._mine(self._resume if self._resume is not None else 0))

    def _begin(self) -> np.ndarray:
        if self.world_size > 1:
            _refuse_second_sharding(self.world_size)
        start = self._resume if self._resume is not None else 0
        self._resume, self._start, self._yielded = None, start, 0
        return self._mine(start)

    def __iter__(self) -> Iterator[int]:
        mine = self._begin()
        for i in range(len(mine)):
            self._yielded = i + 1
            yield int(mine[i])

    def batches(self, batch_size: int, drop_last: bool = False, min_size: int = 1) -> "ScheduleBatchSampler":
        """A batch sampler over this order: one numpy slice per batch instead of one int per sample.

        ``min_size``: a final batch shorter than this is skipped (2 for BatchNorm models)."""
        return ScheduleBatchSampler(self, batch_size, drop_last, min_size)

    def batch_count(self, epoch: int, batch_size: int, drop_last: bool = False, offset: int = 0,
                    min_size: int = 1) -> int:
        """This rank's batches of ``epoch`` from global position ``offset``, as :meth:`batches`
        would give them; the sampler's own epoch and position are left as they are."""
        batches = ScheduleBatchSampler(self, batch_size, drop_last, min_size)
        return -(-batches._stop(len(self._mine(offset, epoch))) // batch_size)

    def offset_after(self, epoch: int, start: int, batches: int, batch_size: int) -> int:
        """The global position in ``epoch``'s order once every rank has taken ``batches`` batches of
        ``batch_size`` from ``start`` (what a trainer's checkpoint records; any world size resumes it)."""
        return min(len(self.order(epoch)), start + batches * batch_size * self.world_size)

    # --- state -----------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """``epoch`` and ``offset``: the global position reached in the epoch's order (any world size)."""
        if self._resume is not None:
            offset = self._resume
        else:
            offset = min(len(self.order()), self._start + self._yielded * self.world_size)
        return {"epoch": self.epoch, "offset": int(offset), "world_size": self.world_size}

    def load_state_dict(self, state: dict) -> None:
        """Continue at the saved position; the next pass covers the rest of the epoch on this world size."""
        try:
            epoch = int(state["epoch"])
            if "offset" in state:
                offset = int(state["offset"])
            else:  # bss < 0.2: per-rank count at an unrecorded world size (taken as this one)
                offset = int(state["consumed"]) * int(state.get("world_size", self.world_size))
        except (KeyError, TypeError, ValueError):
            raise ConfigError(f"not a ScheduleSampler state: {state!r}; expected keys 'epoch' and 'offset'") from None
        self.set_epoch(epoch)
        n = len(self.order())
        if not 0 <= offset <= n:
            raise ConfigError(f"sampler state offset {offset} is outside epoch {epoch}'s {n} positions; "
                              "the state belongs to another schedule")
        self._resume, self._start, self._yielded = offset, offset, 0


class ScheduleBatchSampler(Sampler[list[int]]):
    """Batches of a :class:`ScheduleSampler`'s order, sliced with numpy (for ``batch_sampler=``).

    ``set_epoch``, ``state_dict`` and ``load_state_dict`` are the sampler's, so a DataLoader,
    torchdata's ``StatefulDataLoader`` or Lightning can drive it like the sampler itself.
    """

    def __init__(self, sampler: ScheduleSampler, batch_size: int, drop_last: bool = False, min_size: int = 1):
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigError(f"batch_size {batch_size!r}: expected an integer >= 1")
        self.sampler, self.batch_size, self.drop_last, self.min_size = sampler, batch_size, drop_last, min_size

    def _stop(self, n: int) -> int:
        """How many of ``n`` indices are handed out in batches."""
        full = (n // self.batch_size) * self.batch_size
        return full if self.drop_last or n - full < self.min_size else n

    def __len__(self) -> int:
        return -(-self._stop(len(self.sampler)) // self.batch_size)

    def __iter__(self) -> Iterator[list[int]]:
        for batch in self.slices():
            yield batch.tolist()

    def slices(self) -> Iterator[np.ndarray]:
        """The same batches as numpy slices of the order (for a consumer in this process; a
        DataLoader's batch sampler must yield lists)."""
        s = self.sampler
        if not isinstance(s, ScheduleSampler):  # a trainer swapped in its own sampler, e.g. a DistributedSampler
            raise ConfigError(f"the schedule's batch sampler now draws from a {type(s).__name__}, which a trainer put "
                              f"in place of the ScheduleSampler; {NO_SECOND_SHARD}")
        mine = s._begin()
        stop = self._stop(len(mine))
        for i in range(0, stop, self.batch_size):
            batch = mine[i:i + self.batch_size]
            s._yielded = i + len(batch)
            yield batch

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)

    def state_dict(self) -> dict:
        return self.sampler.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.sampler.load_state_dict(state)


MAX_EPOCH = int(FILE_BOUNDS["schedule epoch"].high) + 1  # epochs are int32 in schedule files
# Wrappers that shard batches over processes themselves (accelerate's prepare): on top of a sampler
# that already shards by rank, each process would train 1/W of its own share.
RESHARDERS = ("BatchSamplerShard", "DataLoaderDispatcher", "IterableDatasetShard")
# Lightning's DistributedSamplerWrapper (Trainer and Fabric with use_distributed_sampler=True) iterates
# the sampler through this dataset, and exists only when it shards over several processes
LIGHTNING_RESHARDERS = ("_DatasetSamplerWrapper", "DistributedSamplerWrapper")
NO_SECOND_SHARD = ("the ScheduleSampler shards the schedule by rank itself, so a second sharding would train each "
                   "process a fraction of its share. Lightning Fabric: fabric.setup_dataloaders(loader, "
                   "use_distributed_sampler=False); Lightning Trainer: Trainer(use_distributed_sampler=False); "
                   "accelerate: do not pass the DataLoader to accelerator.prepare() (docs/integrations.md)")


def _refuse_second_sharding(world_size: int) -> None:
    """Refuse to be iterated by a wrapper that shards again over more than one process."""
    import sys

    frame = sys._getframe(2)
    for _ in range(8):  # the sampler's iterator <- torch's BatchSampler <- accelerate's shard, at most
        if frame is None:
            return
        owner = frame.f_locals.get("self")
        if type(owner).__name__ in LIGHTNING_RESHARDERS:
            raise ConfigError(f"{type(owner).__module__}.{type(owner).__name__} iterates the ScheduleSampler to shard "
                              f"it over the processes again; {NO_SECOND_SHARD}")
        if type(owner).__name__ in RESHARDERS and getattr(owner, "num_processes", 1) > 1:
            raise ConfigError(f"the ScheduleSampler shards the schedule over {world_size} processes itself, and "
                              f"{type(owner).__module__}.{type(owner).__name__} shards its batches again, so each "
                              "process would train a fraction of its share. With accelerate, do not pass this "
                              "DataLoader to accelerator.prepare(); move each batch to accelerator.device yourself "
                              "(see docs/integrations.md)")
        frame = frame.f_back


def _id_kind(t: pa.DataType) -> str:
    """'int', 'str' or another type's name: ids of one kind are compared, of two kinds refused."""
    if pa.types.is_integer(t):
        return "int"
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return "str"
    return str(t)


def _process_group() -> tuple[int, int]:
    """(rank, world size): the initialised process group's, else torchrun's environment, else (0, 1)."""
    import os

    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:  # under torchrun, before init_process_group
        return int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    return 0, 1


def _open(schedule):
    """Anything with ``epochs`` and ``epoch(e, columns)``: a file, or a table held in memory."""
    from bss_cli.scheduling.schedule_io import TableSchedule, open_schedule

    if isinstance(schedule, (str, Path)):
        schedule = open_schedule(schedule)
    return TableSchedule(schedule) if isinstance(schedule, pa.Table) else schedule


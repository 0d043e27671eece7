"""``ScheduleSampler``: a torch Sampler that yields a bss schedule's order, epoch by epoch.

Sharding across ranks: an epoch of n indices is padded by wrapping around to
ceil(n / world_size) * world_size (``pad="wrap"``, the default, as DistributedSampler does) or cut
to floor(n / world_size) * world_size (``pad="drop"``), and rank r takes positions r, r + W, ...
So every rank gets the same number of indices in every epoch, even as a curriculum's subset
grows, and no rank waits in a collective op for another; with ``wrap`` the shards of an epoch
cover its whole ordering, and each shard keeps the balanced-first order.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterator, Mapping

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from torch.utils.data import Sampler

from bss_cli import schema as S
from bss_cli.errors import ConfigError

PADS = ("wrap", "drop")


def shard(order: np.ndarray, rank: int, world_size: int, pad: str = "wrap") -> np.ndarray:
    """This rank's part of an epoch's order (see the module docstring)."""
    n = len(order)
    if pad == "wrap":
        per_rank = -(-n // world_size)
        total = per_rank * world_size
        order = np.resize(order, total) if total > n else order  # np.resize repeats from the start
    elif pad == "drop":
        total = (n // world_size) * world_size
        if total == 0:
            raise ConfigError(f"an epoch of {n} samples cannot be split over {world_size} ranks with pad='drop'")
        order = order[:total]
    else:
        raise ConfigError(f"pad {pad!r}: expected one of {', '.join(PADS)}")
    return order[rank::world_size]


class ScheduleSampler(Sampler[int]):
    """Yields dataset indices in a schedule's order for the current epoch (``set_epoch``).

    ``schedule``: a schedule file path, a :class:`~bss_cli.scheduling.schedule_io.ScheduleFile`, or a table with
    the schedule columns. ``index_of``: sample_id -> dataset index (a mapping or a callable); by
    default the manifest ``row`` column is the index. ``rank``/``world_size`` default to the
    initialised ``torch.distributed`` process group, else 0/1.

    Resuming mid-epoch: ``state_dict()`` records the epoch and how many of this rank's indices were
    consumed (by default: how many this sampler has yielded, exact for a DataLoader with
    ``num_workers=0``; with workers, pass ``state_dict(consumed=batches_done * batch_size)``), and
    ``load_state_dict`` makes the next ``__iter__`` start right after them.
    """

    def __init__(self, schedule, index_of: Mapping | Callable | None = None, *, rank: int | None = None,
                 world_size: int | None = None, pad: str = "wrap"):
        if rank is None or world_size is None:
            import torch.distributed as dist

            ready = dist.is_available() and dist.is_initialized()
            rank = rank if rank is not None else (dist.get_rank() if ready else 0)
            world_size = world_size if world_size is not None else (dist.get_world_size() if ready else 1)
        if not 0 <= rank < world_size:
            raise ConfigError(f"rank {rank} is outside 0..{world_size - 1}")
        if pad not in PADS:
            raise ConfigError(f"pad {pad!r}: expected one of {', '.join(PADS)}")
        self.rank, self.world_size, self.pad = rank, world_size, pad
        self.index_of = index_of
        if isinstance(schedule, (str, Path)):
            from bss_cli.scheduling.schedule_io import ScheduleFile

            schedule = ScheduleFile(schedule)
        self._source = schedule
        self.epochs = list(schedule.epochs) if hasattr(schedule, "epochs") else \
            sorted(set(schedule[S.EPOCH].to_pylist()))
        self.epoch = self.epochs[0]
        self._consumed = 0  # of this rank's indices in self.epoch
        self._cache: tuple[int, np.ndarray] | None = None

    def _epoch_table(self, epoch: int) -> pa.Table:
        if hasattr(self._source, "epoch"):
            return self._source.epoch(epoch, columns=[S.POSITION, S.SAMPLE_ID, S.ROW])
        t = self._source.filter(pc.equal(self._source[S.EPOCH], epoch))
        return t.sort_by(S.POSITION)

    def _indices(self) -> np.ndarray:
        if self._cache is None or self._cache[0] != self.epoch:
            if self.epoch not in self.epochs:
                raise ConfigError(f"the schedule holds epochs {self.epochs[0]}..{self.epochs[-1]}, not epoch {self.epoch}")
            t = self._epoch_table(self.epoch)
            if self.index_of is None:
                order = t[S.ROW].to_numpy()
            else:
                ids = t[S.SAMPLE_ID].to_pylist()
                look = self.index_of.__getitem__ if isinstance(self.index_of, Mapping) else self.index_of
                try:
                    order = np.fromiter((look(i) for i in ids), np.int64, len(ids))
                except KeyError as exc:
                    raise ConfigError(f"sample_id {exc.args[0]!r} of the schedule is not in index_of") from None
            self._cache = (self.epoch, shard(order, self.rank, self.world_size, self.pad))
        return self._cache[1]

    def set_epoch(self, epoch: int) -> None:
        if epoch != self.epoch:
            self._consumed = 0
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self._indices()) - self._consumed

    def __iter__(self) -> Iterator[int]:
        idx = self._indices()
        start = self._consumed
        for i in range(start, len(idx)):
            self._consumed = i + 1
            yield int(idx[i])
        # the epoch is done; a later iteration of the same epoch starts over
        self._consumed = 0

    def state_dict(self, consumed: int | None = None) -> dict:
        return {"epoch": self.epoch, "consumed": self._consumed if consumed is None else int(consumed)}

    def load_state_dict(self, state: dict) -> None:
        self.epoch = int(state["epoch"])
        self._consumed = int(state["consumed"])

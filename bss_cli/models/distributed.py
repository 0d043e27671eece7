"""torch.distributed set-up for ``torchrun`` launches: one process per GPU (or CPU rank, gloo)."""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist

from bss_cli.models.devices import resolve_device


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup(device: str, threads: int | None = None) -> tuple[DistInfo, str]:
    """Join the process group that torchrun describes in the environment (if any).

    NCCL on CUDA, gloo on CPU. Each rank takes the GPU of its LOCAL_RANK. ``threads`` sets torch's
    CPU thread count (on a loaded machine fewer threads can be much faster).
    """
    if threads is not None:
        torch.set_num_threads(threads)
    device = resolve_device(device)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo(), device
    info = DistInfo(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device == "cuda" else "gloo")
    if device == "cuda":
        torch.cuda.set_device(info.local_rank)
        device = f"cuda:{info.local_rank}"
    return info, device


def _collective_device() -> torch.device:
    """NCCL moves CUDA tensors only; gloo moves CPU tensors."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def gather_strided(local: np.ndarray, n: int, info: DistInfo) -> np.ndarray:
    """The [n, k] float64 array whose rows r, r + W, ... rank r holds (``local``), on every rank.

    One tensor all_gather of k floats per row (ranks' shards differ in length by at most one, so
    each is padded to ceil(n / W) rows): traffic and memory O(n k), never pickled objects.
    """
    if not info.enabled:
        return local
    w, dev = info.world_size, _collective_device()
    width = -(-n // w)
    mine = torch.zeros(width, local.shape[1], dtype=torch.float64, device=dev)
    mine[:len(local)] = torch.from_numpy(np.ascontiguousarray(local, np.float64)).to(dev)
    parts = [torch.empty_like(mine) for _ in range(w)]
    dist.all_gather(parts, mine)
    out = np.empty((n, local.shape[1]), np.float64)
    for r, part in enumerate(parts):
        count = len(range(r, n, w))
        out[r::w] = part[:count].cpu().numpy()
    return out


def merge_owned(local: np.ndarray, seen: np.ndarray, info: DistInfo) -> np.ndarray:
    """Rows each rank computed for the samples it saw, merged on every rank with two tensor
    all_reduces: a row seen by several ranks (padding) takes the highest such rank's values, a row
    no rank saw takes rank 0's."""
    if not info.enabled:
        return local
    dev = _collective_device()
    owner = torch.where(torch.from_numpy(np.asarray(seen, bool)), info.rank, -1).to(dev)
    dist.all_reduce(owner, op=dist.ReduceOp.MAX)
    owner[owner < 0] = 0
    mask = (owner == info.rank).to(torch.float64)[:, None]
    values = torch.from_numpy(np.ascontiguousarray(local, np.float64)).to(dev) * mask
    dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values.cpu().numpy()


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


TEARDOWN_WAIT_S = 60  # how long a rank waits at teardown for the others (longer only when one has failed)


def teardown(info: DistInfo) -> None:
    """Leave the process group together: a rank that destroys it while a peer still talks to it can
    abort that peer in gloo ("terminate called without an active exception"), failing a run that
    succeeded. A rank whose peer failed waits at most TEARDOWN_WAIT_S, then leaves anyway.

    Call it once the DDP model is freed: a gloo group destroyed while a model still holds it is
    destructed when that model goes, and its destructor can wait forever for a worker thread (seen
    in a 2-rank CPU run)."""
    if info.enabled and dist.is_initialized():
        import gc
        from datetime import timedelta

        gc.collect()  # a model held only in a reference cycle goes while the group is whole
        if dist.get_backend() == "gloo":  # NCCL needs no such wait (and its barrier cannot time out)
            try:
                dist.monitored_barrier(timeout=timedelta(seconds=TEARDOWN_WAIT_S))
            except Exception:  # a peer failed or left: nothing to wait for
                pass
        dist.destroy_process_group()

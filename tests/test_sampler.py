import socket

import numpy as np
import pytest
import torch.multiprocessing as mp
from torch.utils.data import DataLoader, TensorDataset

from bss_cli import ScheduleSampler
from bss_cli.errors import ConfigError
from bss_cli.scheduling.sampler import shard
from bss_cli.scheduling.schedule_io import ScheduleFile, ScheduleJob, write_schedule
from bss_cli.scheduling.schedulers import ScheduleConfig
from bss_cli.scoring.scores import score_manifest


@pytest.fixture
def schedule_file(tiny_manifest, tmp_path):
    job = ScheduleJob(score_manifest(tiny_manifest), ScheduleConfig(scheduler="curriculum", t_grow=4), list(range(6)))
    write_schedule(job, tmp_path / "sched.parquet")
    return tmp_path / "sched.parquet"


@pytest.mark.parametrize("n", [1, 5, 7, 8, 36])
@pytest.mark.parametrize("world", [1, 2, 3, 4])
def test_shards_are_equal_and_cover_the_epoch(n, world):
    order = np.arange(100, 100 + n)
    parts = [shard(order, r, world, "wrap") for r in range(world)]
    assert len({len(p) for p in parts}) == 1 and len(parts[0]) == -(-n // world)
    assert set(np.concatenate(parts)) == set(order)
    if n >= world:
        dropped = [shard(order, r, world, "drop") for r in range(world)]
        assert len({len(p) for p in dropped}) == 1 and sum(map(len, dropped)) == (n // world) * world


def test_sampler_follows_the_schedule_and_resumes_mid_epoch(schedule_file):
    f = ScheduleFile(schedule_file)
    s = ScheduleSampler(schedule_file)
    for e in f.epochs:
        s.set_epoch(e)
        assert list(s) == f.epoch(e)["row"].to_pylist()
    s.set_epoch(4)
    it = iter(s)
    first = [next(it) for _ in range(10)]
    state = s.state_dict()
    assert state == {"epoch": 4, "consumed": 10}
    resumed = ScheduleSampler(schedule_file)
    resumed.load_state_dict(state)
    assert first + list(resumed) == f.epoch(4)["row"].to_pylist()


def test_sampler_with_id_mapping_and_dataloader(schedule_file):
    f = ScheduleFile(schedule_file)
    ids = f.epoch(5)["sample_id"].to_pylist()
    index_of = {sid: i for i, sid in enumerate(sorted(ids))}
    s = ScheduleSampler(schedule_file, index_of)
    s.set_epoch(5)
    import torch

    ds = TensorDataset(torch.arange(len(index_of)))
    got = [int(x) for (batch,) in DataLoader(ds, batch_size=4, sampler=s) for x in batch]
    assert got == [index_of[i] for i in ids]
    with pytest.raises(ConfigError, match="is not in index_of"):
        s2 = ScheduleSampler(schedule_file, {})
        list(s2)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _worker(rank, world, port, path, out):
    import torch
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    s = ScheduleSampler(path)  # rank and world size from the process group
    result = {}
    for e in s.epochs:
        s.set_epoch(e)
        mine = list(s)
        # one collective per index: a rank with fewer indices would hang here
        for _ in mine:
            dist.all_reduce(torch.ones(1))
        gathered = [None] * world
        dist.all_gather_object(gathered, mine)
        result[e] = gathered
    if rank == 0:
        out.put(result)
    dist.barrier()
    dist.destroy_process_group()


def test_two_process_gloo_sharding(schedule_file):
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    port = _free_port()
    procs = [ctx.Process(target=_worker, args=(r, 2, port, str(schedule_file), queue)) for r in range(2)]
    for p in procs:
        p.start()
    result = queue.get(timeout=60)
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    f = ScheduleFile(schedule_file)
    for e, (r0, r1) in result.items():
        order = f.epoch(e)["row"].to_pylist()
        assert len(r0) == len(r1)
        assert set(r0) | set(r1) == set(order)
        assert r0 == shard(np.array(order), 0, 2).tolist()

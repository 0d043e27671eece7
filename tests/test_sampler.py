import socket

import numpy as np
import pyarrow as pa
import pytest
import torch
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
    s = ScheduleSampler(schedule_file, rows=True)
    for e in f.epochs:
        s.set_epoch(e)
        assert list(s) == f.epoch(e)["row"].to_pylist()
    s.set_epoch(4)
    it = iter(s)
    first = [next(it) for _ in range(10)]
    state = s.state_dict()
    assert state == {"epoch": 4, "offset": 10, "world_size": 1}
    resumed = ScheduleSampler(schedule_file, rows=True)
    resumed.load_state_dict(state)
    assert first + list(resumed) == f.epoch(4)["row"].to_pylist()
    assert len(list(resumed)) == len(f.epoch(4))  # the next pass of the epoch is whole again


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


class TrainOnly(torch.utils.data.Dataset):
    """What users build: a dataset of the train rows only, exposing their ids."""

    def __init__(self, manifest_path):
        import pyarrow.parquet as pq

        t = pq.read_table(manifest_path)
        keep = [i for i, s in enumerate(t["split"].to_pylist()) if s == "train"]
        self.sample_ids = [t["sample_id"][i].as_py() for i in keep]

    def __len__(self):
        return len(self.sample_ids)

    def __getitem__(self, i):
        return self.sample_ids[i]


def test_train_only_dataset_gets_the_scheduled_samples(tiny_manifest, schedule_file):
    """The case that went wrong silently: a dataset of the train rows, indexed by manifest row."""
    ds = TrainOnly(tiny_manifest)
    f = ScheduleFile(schedule_file)
    for how in ({"dataset": ds}, {"ids": ds.sample_ids}):
        s = ScheduleSampler(schedule_file, **how)
        for e in f.epochs:
            s.set_epoch(e)
            got = [sid for batch in DataLoader(ds, batch_size=5, sampler=s) for sid in batch]
            assert got == f.epoch(e)["sample_id"].to_pylist()
    with pytest.raises(ConfigError, match="exactly one way to map"):
        ScheduleSampler(schedule_file)  # no silent default to manifest rows
    with pytest.raises(ConfigError, match="exactly one way"):
        ScheduleSampler(schedule_file, ids=ds.sample_ids, rows=True)
    with pytest.raises(ConfigError, match="that the dataset's ids lack"):
        s = ScheduleSampler(schedule_file, ids=ds.sample_ids[1:])
        s.set_epoch(5)
        list(s)
    with pytest.raises(ConfigError, match="must be unique"):
        ScheduleSampler(schedule_file, ids=ds.sample_ids + ds.sample_ids[:1])
    with pytest.raises(ConfigError, match="with rows=True the dataset must hold every manifest row"):
        s = ScheduleSampler(schedule_file, dataset=ds, rows=True)
        s.set_epoch(5)
        list(s)


def _drain(samplers, steps):
    """Each rank takes ``steps`` indices (lockstep, as under DDP); return what each took."""
    its = [iter(s) for s in samplers]
    return [[next(it) for _ in range(steps)] for it in its]


@pytest.mark.parametrize("pad", ["wrap", "drop"])
@pytest.mark.parametrize("before,after", [(1, 2), (2, 1), (2, 3), (3, 2), (4, 3), (1, 1), (2, 2)])
def test_elastic_resume_repeats_and_skips_nothing(schedule_file, before, after, pad):
    f = ScheduleFile(schedule_file)
    order = f.epoch(5)["row"].to_pylist()  # 36 samples
    old = [ScheduleSampler(schedule_file, rows=True, rank=r, world_size=before, pad=pad) for r in range(before)]
    for s in old:
        s.set_epoch(5)
    done = _drain(old, 4)
    state = old[0].state_dict()
    assert state["offset"] == 4 * before
    new = [ScheduleSampler(schedule_file, rows=True, rank=r, world_size=after, pad=pad) for r in range(after)]
    rest = []
    for s in new:
        s.load_state_dict(state)
        rest.append(list(s))
    assert len({len(r) for r in rest}) == 1  # equal counts on every rank: no collective hangs
    trained = [i for part in done for i in part] + [i for part in rest for i in part]
    n = len(order)
    tail = order[4 * before:]
    if pad == "wrap":
        assert set(trained) == set(order)  # nothing skipped
        repeats = len(trained) - n  # only the documented wrap padding repeats
        assert repeats == (-(-len(tail) // after) * after - len(tail))
    else:
        assert len(trained) == len(set(trained))  # nothing repeated
        assert len(set(order) - set(trained)) == len(tail) % after  # only the documented drop


def test_batch_sampler_equals_the_sampler_and_shares_its_state(schedule_file):
    s = ScheduleSampler(schedule_file, rows=True)
    s.set_epoch(3)
    whole = list(s)
    b = s.batches(5)
    batches = list(b)
    assert [i for batch in batches for i in batch] == whole and len(b) == len(batches)
    assert list(s.batches(5, drop_last=True))[-1] == whole[(len(whole) // 5 - 1) * 5:(len(whole) // 5) * 5]
    it = iter(b)
    next(it), next(it)
    state = b.state_dict()
    assert state["offset"] == 10
    again = ScheduleSampler(schedule_file, rows=True).batches(5)
    again.load_state_dict(state)
    assert [i for batch in again for i in batch] == whole[10:]


def test_epochs_past_the_file_follow_the_same_rule(tiny_manifest, tmp_path):
    from bss_cli.scoring.scores import score_manifest

    scores = score_manifest(tiny_manifest)
    for cfg in (ScheduleConfig(scheduler="learned", temperature=0.5, seed=3),
                ScheduleConfig(scheduler="curriculum", t_grow=2, seed=1)):
        write_schedule(ScheduleJob(scores, cfg, [0, 1, 2]), tmp_path / "short.parquet")
        write_schedule(ScheduleJob(scores, cfg, list(range(8))), tmp_path / "long.parquet")
        short, long = ScheduleFile(tmp_path / "short.parquet"), ScheduleFile(tmp_path / "long.parquet")
        for e in (3, 7):
            assert short.epoch(e)["row"].to_pylist() == long.epoch(e)["row"].to_pylist()
        s = ScheduleSampler(tmp_path / "short.parquet", rows=True)
        s.set_epoch(7)
        assert list(s) == long.epoch(7)["row"].to_pylist()
    # a curriculum whose written epochs do not reach every sample cannot know the rest's scores
    write_schedule(ScheduleJob(scores, ScheduleConfig(scheduler="curriculum", t_grow=40), [0, 1]),
                   tmp_path / "partial.parquet")
    with pytest.raises(ConfigError, match=r"holds epochs 0..1, not epoch 5, and cannot draw it: its epochs cover"):
        ScheduleFile(tmp_path / "partial.parquet").epoch(5)


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_sampler_reads_text_schedules(schedule_file, tmp_path, fmt, scores_path=None):
    from bss_cli.scheduling.schedule_io import open_schedule

    f = ScheduleFile(schedule_file)
    table = pa.concat_tables([f.epoch(e) for e in f.epochs])
    path = tmp_path / f"s.{fmt}"
    if fmt == "csv":
        import pyarrow.csv as pcsv

        pcsv.write_csv(table, path)
    else:
        import json

        path.write_text("".join(json.dumps(r) + "\n" for r in table.to_pylist()))
    assert open_schedule(path).num_rows == table.num_rows
    s = ScheduleSampler(path, rows=True)
    for e in f.epochs:
        s.set_epoch(e)
        assert list(s) == f.epoch(e)["row"].to_pylist()


@pytest.mark.integration
@pytest.mark.parametrize("workers", [0, 2])
def test_stateful_dataloader_with_workers_resumes_exactly(schedule_file, workers):
    """With workers the loader prefetches; torchdata's StatefulDataLoader snapshots the sampler at
    dispatch, so the saved state counts the batches received. (The documented recipe.)"""
    stateful = pytest.importorskip("torchdata.stateful_dataloader")
    ds = TensorDataset(torch.arange(60))

    def loader():
        s = ScheduleSampler(schedule_file, rows=True)
        s.set_epoch(5)
        return stateful.StatefulDataLoader(ds, batch_size=4, sampler=s, num_workers=workers)

    full = [int(x) for (b,) in loader() for x in b]
    dl = loader()
    got = []
    for i, (b,) in enumerate(dl):
        got += [int(x) for x in b]
        if i == 2:
            state = dl.state_dict()
            break
    again = loader()
    again.load_state_dict(state)
    got += [int(x) for (b,) in again for x in b]
    assert got == full


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _worker(rank, world, port, path, out):
    import torch
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    s = ScheduleSampler(path, rows=True)  # rank and world size from the process group
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


@pytest.mark.slow  # two processes and a gloo group: 5 s
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


def _elastic_worker(rank, world, port, path, steps, state, out):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    s = ScheduleSampler(path, rows=True)
    s.set_epoch(5)
    if state is not None:
        s.load_state_dict(state)
    it = iter(s)
    mine = [next(it) for _ in range(steps)] if steps is not None else list(it)
    gathered = [None] * world
    dist.all_gather_object(gathered, mine)
    if rank == 0:
        out.put((gathered, s.state_dict()))
    dist.barrier()
    dist.destroy_process_group()


def _run_world(world, path, steps, state):
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    port = _free_port()
    procs = [ctx.Process(target=_elastic_worker, args=(r, world, port, str(path), steps, state, queue))
             for r in range(world)]
    for p in procs:
        p.start()
    result = queue.get(timeout=90)
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    return result


@pytest.mark.slow
def test_elastic_resume_under_gloo_two_to_three_processes(schedule_file):
    """State saved by rank 0 of 2 gloo processes, loaded by 3: the epoch continues exactly."""
    order = ScheduleFile(schedule_file).epoch(5)["row"].to_pylist()
    first, state = _run_world(2, schedule_file, 5, None)
    assert state == {"epoch": 5, "offset": 10, "world_size": 2}
    rest, _ = _run_world(3, schedule_file, None, state)
    trained = [i for part in first + rest for i in part]
    assert set(trained) == set(order)  # none skipped
    assert len(trained) == len(order) + 1  # 26 left over 3 ranks: 27, the one documented wrap-padding repeat


def test_manifest_dataset_items_are_the_split_rows_as_bss_train_decodes_them(tmp_path):
    """ManifestDataset (the docs' train_set): item i is the split's i-th row in manifest order,
    vectors standardised with the train split's statistics; its sample_ids map a schedule."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from bss_cli import ManifestDataset

    rng = np.random.default_rng(0)
    n = 30
    splits = ["train"] * 20 + ["val"] * 5 + ["test"] * 5
    a = rng.normal(3, 2, size=(n, 4))
    pq.write_table(pa.table({"sample_id": [f"s{i}" for i in range(n)], "label": [i % 3 for i in range(n)],
                             "split": splits, "a": a.tolist(), "b": rng.normal(size=(n, 2)).tolist()}),
                   tmp_path / "m.parquet")
    train = ManifestDataset(tmp_path / "m.parquet")
    val = ManifestDataset(tmp_path / "m.parquet", split="val")
    assert len(train) == 20 and len(val) == 5 and train.n_classes == 3 and train.modalities == ["a", "b"]
    assert val.sample_ids == [f"s{i}" for i in range(20, 25)]
    mean, std = a[:20].mean(0), a[:20].std(0)
    np.testing.assert_allclose(val[2]["a"].numpy(), (a[22] - mean) / std, rtol=1e-5, atol=1e-5)
    assert int(val[2]["labels"]) == 22 % 3
    raw = ManifestDataset(tmp_path / "m.parquet", split="val", standardise=False)
    np.testing.assert_allclose(raw[2]["a"].numpy(), a[22], rtol=1e-6)
    with pytest.raises(IndexError):
        val[5]
    job = ScheduleJob(score_manifest(tmp_path / "m.parquet"), ScheduleConfig(scheduler="learned"), [0])
    write_schedule(job, tmp_path / "sched.parquet")
    sampler = ScheduleSampler(tmp_path / "sched.parquet", dataset=train)
    sampler.set_epoch(0)
    order = ScheduleFile(tmp_path / "sched.parquet").epoch(0)["sample_id"].to_pylist()
    assert [train.sample_ids[i] for i in sampler] == order and sorted(order) != order

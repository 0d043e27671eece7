"""bss orderings in the real Lightning and Hugging Face trainers (the integration tier).

Each test trains with the example script a user would copy, records the sample ids every epoch
trained on (per rank), and compares them with the schedule file: the whole epoch, in order, in
one process and under DDP (torchrun, gloo).
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np
import pytest
from conftest import ROOT, free_port, run_processes
from typer.testing import CliRunner

from bss_cli.cli.app import app
from bss_cli.errors import ConfigError
from bss_cli.scheduling.sampler import shard
from bss_cli.scheduling.schedule_io import ScheduleFile

pytestmark = pytest.mark.integration
EPOCHS = 4


@pytest.fixture
def schedule(tiny_manifest, tmp_path):
    runner = CliRunner()
    assert runner.invoke(app, ["score", str(tiny_manifest), "-o", str(tmp_path / "s.parquet")]).exit_code == 0
    r = runner.invoke(app, ["schedule", str(tmp_path / "s.parquet"), "-o", str(tmp_path / "sched.parquet"),
                            "--epochs", str(EPOCHS), "--t-grow", "3"])
    assert r.exit_code == 0, r.output
    return tmp_path / "sched.parquet"


def expected(schedule, rank: int, world: int) -> dict[str, list]:
    f = ScheduleFile(schedule)
    out = {}
    for e in range(EPOCHS):
        ids = np.array(f.epoch(e)["sample_id"].to_pylist(), dtype=object)
        out[str(e)] = shard(ids, rank, world).tolist()
    assert len({len(v) for v in out.values()}) > 1  # a growing curriculum: the case trainers got wrong
    return out


def run_example(script, manifest, schedule, record, world: int, *extra):
    args = [str(ROOT / "examples" / script), str(manifest), str(schedule), "--epochs", str(EPOCHS),
            "--batch-size", "4", "--record", str(record), *extra]
    cmd = ([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(world), "--master_port",
            str(free_port())] if world > 1 else [sys.executable]) + args
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    r = run_processes(cmd, timeout=300, env=env, cwd=ROOT)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-6000:]
    return [json.loads((record.parent / f"{record.name}.rank{k}.json").read_text()) for k in range(world)]


@pytest.mark.parametrize("world", [1, 2])
@pytest.mark.parametrize("script,extra", [("lightning_train.py", ()), ("hf_train.py", ()),
                                          ("hf_train.py", ("--datasets",)), ("accelerate_train.py", ()),
                                          ("rows_train.py", ("--workers", "2"))])
def test_every_epoch_trains_on_its_schedule_rows(tiny_manifest, schedule, tmp_path, script, extra, world):
    if script == "lightning_train.py" and world > 1:
        extra = ("--devices", str(world))
    if "--datasets" in extra:
        pytest.importorskip("datasets")
    records = run_example(script, tiny_manifest, schedule, tmp_path / "rec", world, *extra)
    for rank, got in enumerate(records):
        assert got == expected(schedule, rank, world)


def test_lightning_refuses_settings_that_break_the_order(tiny_manifest, schedule):
    import lightning as L

    from bss_cli import ScheduleSampler
    from bss_cli.integrations.lightning import ScheduleCallback

    sys.path.insert(0, str(ROOT / "examples"))
    from lightning_train import Classifier, TrainRows

    data = TrainRows(str(tiny_manifest))
    for settings, needle in [({"reload_dataloaders_every_n_epochs": 0}, "reload_dataloaders_every_n_epochs=1"),
                             ({"use_distributed_sampler": True}, "use_distributed_sampler=False"),
                             ({"limit_train_batches": 2}, "limit_train_batches")]:
        bss = ScheduleCallback(ScheduleSampler(schedule, dataset=data))
        kwargs = {"reload_dataloaders_every_n_epochs": 1, "use_distributed_sampler": False, **settings}
        trainer = L.Trainer(max_epochs=1, accelerator="cpu", callbacks=[bss], logger=False,
                            enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                            **kwargs)
        with pytest.raises(ConfigError, match=needle):
            trainer.fit(Classifier(data, bss, 4))


def test_hf_trainer_without_the_mixin_truncates_a_growing_curriculum(tiny_manifest, schedule, tmp_path):
    """What the mixin fixes, shown on the real library: a sampler override alone keeps epoch 0's length."""
    from transformers import Trainer, TrainerCallback, TrainingArguments

    from bss_cli import ScheduleSampler

    sys.path.insert(0, str(ROOT / "examples"))
    from hf_train import Classifier, TrainRows

    data = TrainRows(str(tiny_manifest))
    model = Classifier(data)
    sampler = ScheduleSampler(schedule, dataset=data)

    class Plain(Trainer):
        def _get_train_sampler(self, train_dataset=None):
            return sampler

    class NewEpoch(TrainerCallback):
        def on_epoch_begin(self, args, state, control, **kw):
            sampler.set_epoch(len(model.trained))
            model.trained.append([])

    args = TrainingArguments(output_dir=str(tmp_path / "o"), num_train_epochs=EPOCHS, per_device_train_batch_size=4,
                             report_to=[], save_strategy="no", logging_strategy="no", use_cpu=True, disable_tqdm=True)
    Plain(model=model, args=args, train_dataset=data, callbacks=[NewEpoch()]).train()
    sizes = {len(v) for v in model.trained}
    assert len(sizes) == 1, "transformers now sizes every epoch itself; the mixin may be simplified"
    assert sizes != {len(v) for v in expected(schedule, 0, 1).values()}


def test_hf_resume_mid_epoch_continues_the_schedule(tiny_manifest, schedule, tmp_path):
    """A checkpoint taken inside epoch 2 resumes there: the rest of epoch 2, then epoch 3 whole."""
    from transformers import TrainerCallback, TrainingArguments

    from bss_cli import ScheduleSampler

    sys.path.insert(0, str(ROOT / "examples"))
    from hf_train import BSSTrainer, Classifier, TrainRows

    data = TrainRows(str(tiny_manifest))
    want = expected(schedule, 0, 1)
    steps = [-(-len(want[str(e)]) // 4) for e in range(EPOCHS)]
    save_at = steps[0] + steps[1] + 2  # two batches into epoch 2

    def trainer_for(model, resume_dir=None):
        class NewEpoch(TrainerCallback):
            def on_epoch_begin(self, *a, **k):
                model.trained.append([])

        args = TrainingArguments(output_dir=str(tmp_path / "o"), num_train_epochs=EPOCHS,
                                 per_device_train_batch_size=4, report_to=[], save_strategy="steps",
                                 save_steps=save_at, logging_strategy="no", use_cpu=True, disable_tqdm=True)
        return BSSTrainer(model=model, args=args, train_dataset=data, callbacks=[NewEpoch()],
                          bss_sampler=ScheduleSampler(schedule, dataset=data))

    torch_seed()
    first = Classifier(data)
    trainer_for(first).train()
    assert [len(v) for v in first.trained] == [len(want[str(e)]) for e in range(EPOCHS)]
    torch_seed()
    second = Classifier(data)
    trainer_for(second).train(resume_from_checkpoint=str(tmp_path / "o" / f"checkpoint-{save_at}"))
    assert second.trained == [want["2"][2 * 4:], want["3"]]


@pytest.mark.parametrize("before,after", [(1, 2), (2, 1)])
def test_hf_resume_on_another_number_of_processes_continues_the_epoch(tiny_manifest, schedule, tmp_path, before,
                                                                       after):
    """A checkpoint taken mid-epoch by `before` processes, resumed on `after`: the rest of that
    epoch's order is sharded over the new processes (none repeated or skipped beyond the wrap
    padding), then the later epochs whole."""
    f = ScheduleFile(schedule)
    order = {e: np.array(f.epoch(e)["sample_id"].to_pylist(), dtype=object) for e in range(EPOCHS)}
    per_rank = [-(-len(order[e]) // before) for e in range(EPOCHS)]
    steps = [-(-n // 4) for n in per_rank]
    save_at = steps[0] + 2  # two steps into epoch 1
    run_example("hf_train.py", tiny_manifest, schedule, tmp_path / "full", before, "--output-dir",
                str(tmp_path / "o"), "--save-steps", str(save_at))
    ckpt = tmp_path / "o" / f"checkpoint-{save_at}"
    saved = json.loads((ckpt / "bss_sampler.json").read_text())
    assert saved == {"epoch": 1, "offset": 2 * 4 * before, "world_size": before, "global_step": save_at}
    records = run_example("hf_train.py", tiny_manifest, schedule, tmp_path / "rec", after, "--output-dir",
                          str(tmp_path / "o2"), "--resume", str(ckpt))
    for rank, got in enumerate(records):
        want = {"1": shard(order[1][saved["offset"]:], rank, after).tolist()}
        want.update({str(e): shard(order[e], rank, after).tolist() for e in range(2, EPOCHS)})
        assert got == want
    # the linear lr schedule continues from where the run is, counted in the new process count's
    # steps, and reaches its end with the last step (no jump, no steps at lr 0)
    steps_after = [-(-(-(-len(order[e]) // after)) // 4) for e in range(EPOCHS)]
    rest = -(-(-(-(len(order[1]) - saved["offset"]) // after)) // 4) + sum(steps_after[2:])
    total, lrs = sum(steps_after), json.loads((tmp_path / "rec.lr.rank0.json").read_text())
    assert np.allclose(lrs, [0.01 * (1 - (total - rest + k) / total) for k in range(rest)])
    assert min(lrs) > 0


def torch_seed():
    import torch

    torch.manual_seed(0)


def _lightning_trainer(bss, **kwargs):
    import lightning as L

    settings = dict(max_epochs=EPOCHS, accelerator="cpu", logger=False, enable_checkpointing=False,
                    enable_progress_bar=False, enable_model_summary=False, reload_dataloaders_every_n_epochs=1,
                    use_distributed_sampler=False)
    return L.Trainer(**{**settings, **kwargs})


def test_lightning_without_the_callback_registered_fails_on_the_first_epoch(tiny_manifest, schedule):
    from bss_cli import ScheduleSampler
    from bss_cli.integrations.lightning import ScheduleCallback

    sys.path.insert(0, str(ROOT / "examples"))
    from lightning_train import Classifier, TrainRows

    data = TrainRows(str(tiny_manifest))
    bss = ScheduleCallback(ScheduleSampler(schedule, dataset=data))
    model = Classifier(data, bss, 4)
    with pytest.raises(ConfigError, match=r"not registered with the Trainer.*callbacks=\[callback\]"):
        _lightning_trainer(bss).fit(model)  # callbacks=[bss] left out
    assert model.trained == {}


def test_lightning_max_steps_ends_cleanly_on_the_schedule(tiny_manifest, schedule):
    from bss_cli import ScheduleSampler
    from bss_cli.integrations.lightning import ScheduleCallback

    sys.path.insert(0, str(ROOT / "examples"))
    from lightning_train import Classifier, TrainRows

    data = TrainRows(str(tiny_manifest))
    bss = ScheduleCallback(ScheduleSampler(schedule, dataset=data))
    model = Classifier(data, bss, 4)
    trainer = _lightning_trainer(bss, callbacks=[bss], max_steps=5)
    trainer.fit(model)
    assert trainer.global_step == 5
    trained = [i for e in sorted(model.trained) for i in model.trained[e]]
    assert trained == [i for e in range(EPOCHS) for i in expected(schedule, 0, 1)[str(e)]][:len(trained)]


def test_an_iterable_dataset_is_refused_with_the_way_out():
    import torch

    from bss_cli import ScheduleSampler

    class Stream(torch.utils.data.IterableDataset):
        def __iter__(self):
            return iter(range(3))

    with pytest.raises(ConfigError, match="IterableDataset: it has no indices.*ScheduledRows"):
        ScheduleSampler("unused.parquet", dataset=Stream())


@pytest.mark.parametrize("world", [1, 2])
@pytest.mark.parametrize("at", ["mid-epoch", "last-batch"])
def test_lightning_resumes_a_mid_epoch_checkpoint_exactly(tiny_manifest, schedule, tmp_path, world, at):
    """Checkpoints every step on one process; resumed on `world` processes from one taken two batches
    into epoch 1, or at epoch 0's last batch: every rank trains exactly the rest of the schedule."""
    import torch

    run_example("lightning_train.py", tiny_manifest, schedule, tmp_path / "full", 1, "--checkpoint-every", "1",
                "--checkpoint-dir", str(tmp_path / "ck"))
    f = ScheduleFile(schedule)
    sizes = [f.epoch(e).num_rows for e in range(EPOCHS)]
    steps_before = -(-sizes[0] // 4)  # epoch 0's batches (of 4)
    step = steps_before + 2 if at == "mid-epoch" else steps_before
    ckpt = tmp_path / "ck" / f"step={step}.ckpt"
    state = torch.load(ckpt, weights_only=False)["callbacks"]["ScheduleCallback"]
    resumed_epoch = 1 if at == "mid-epoch" else 0
    assert state["epoch"] == resumed_epoch and state["offset"] == (8 if at == "mid-epoch" else sizes[0]), state
    extra = ("--resume", str(ckpt)) + (("--devices", str(world)) if world > 1 else ())
    records = run_example("lightning_train.py", tiny_manifest, schedule, tmp_path / "rec", world, *extra)
    order = {e: np.array(f.epoch(e)["sample_id"].to_pylist(), dtype=object) for e in range(EPOCHS)}
    for rank, got in enumerate(records):
        want = {"1": shard(order[1][state["offset"]:] if at == "mid-epoch" else order[1], rank, world).tolist()}
        want.update({str(e): shard(order[e], rank, world).tolist() for e in range(2, EPOCHS)})
        assert {k: v for k, v in got.items() if v} == want


def test_lightning_datamodule_in_two_lines(tiny_manifest, schedule):
    import lightning as L

    from bss_cli.integrations.lightning import ScheduleDataModule

    sys.path.insert(0, str(ROOT / "examples"))
    from lightning_train import Classifier, TrainRows

    data = TrainRows(str(tiny_manifest))
    dm = ScheduleDataModule(data, schedule, batch_size=4)
    trainer = L.Trainer(max_epochs=EPOCHS, accelerator="cpu", callbacks=[dm.callback], logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        **dm.trainer_kwargs)
    model = Classifier(data, dm.callback, 4)
    trainer.fit(model, datamodule=dm)  # the DataModule's loader takes precedence over the module's
    assert {str(e): v for e, v in model.trained.items()} == expected(schedule, 0, 1)


def test_hf_trainer_on_a_datasets_dataset(tiny_manifest, schedule, tmp_path):
    """The way most HF users hold data: a datasets.Dataset with a sample_id column (and others that
    forward() does not take), passed as dataset=; the mixin drops the unused columns as the Trainer does."""
    import datasets
    from transformers import TrainerCallback, TrainingArguments

    from bss_cli import ScheduleSampler

    sys.path.insert(0, str(ROOT / "examples"))
    from hf_train import BSSTrainer, Classifier, TrainRows

    rows = TrainRows(str(tiny_manifest))
    ds = datasets.Dataset.from_dict({"sample_id": rows.sample_ids, "x": rows.x.tolist(), "labels": rows.y.tolist(),
                                     "index": list(range(len(rows.y))),
                                     "n_tokens": [7] * len(rows.y)})  # a numeric column forward() lacks
    ds.set_format("torch")
    model = Classifier(rows)

    class NewEpoch(TrainerCallback):
        def on_epoch_begin(self, *a, **k):
            model.trained.append([])

    args = TrainingArguments(output_dir=str(tmp_path / "o"), num_train_epochs=EPOCHS, per_device_train_batch_size=4,
                             report_to=[], save_strategy="no", logging_strategy="no", use_cpu=True, disable_tqdm=True)
    BSSTrainer(model=model, args=args, train_dataset=ds, callbacks=[NewEpoch()],
               bss_sampler=ScheduleSampler(schedule, dataset=ds)).train()
    assert {str(e): v for e, v in enumerate(model.trained)} == expected(schedule, 0, 1)


def test_accelerate_sharding_a_second_time_is_refused(tiny_manifest, schedule, tmp_path):
    args = [str(ROOT / "examples" / "accelerate_train.py"), str(tiny_manifest), str(schedule), "--epochs", "2",
            "--batch-size", "4", "--prepare-loader"]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
           str(free_port())] + args
    r = run_processes(cmd, timeout=300, cwd=ROOT, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert r.returncode != 0 and "shards its batches again" in r.stdout + r.stderr, r.stderr[-2000:]


@pytest.mark.parametrize("workers", [0, 2])
def test_scheduled_rows_over_a_datasets_table(tiny_manifest, schedule, workers):
    """Streaming-style training from a Hugging Face datasets table read by row index, with workers."""
    import datasets
    import pyarrow.parquet as pq
    from torch.utils.data import DataLoader

    from bss_cli.scheduling.streaming import ScheduledRows, TableRows

    manifest = pq.read_table(tiny_manifest)
    ds = datasets.Dataset.from_dict({"sample_id": manifest["sample_id"].to_pylist(),
                                     "row": list(range(manifest.num_rows))})
    rows = ScheduledRows(schedule, TableRows(ds), batch_size=4, rank=0, world_size=1,
                         collate=lambda items: [r["sample_id"] for r in items])
    loader = DataLoader(rows, batch_size=None, num_workers=workers)
    for e in range(EPOCHS):
        rows.set_epoch(e)
        assert [i for batch in loader for i in batch] == expected(schedule, 0, 1)[str(e)]


def _lightning_epochs(schedule_path, manifest, accumulate: int, with_bss: bool, onecycle: bool = False) -> dict:
    """What Lightning did, epoch by epoch, on a schedule: with the ScheduleCallback, or with plain
    Lightning handed the same rows per epoch (a Subset loader rebuilt every epoch, the reference)."""
    import lightning as L
    import pyarrow.parquet as pq
    import torch
    from torch import nn
    from torch.utils.data import DataLoader, Dataset, Subset

    from bss_cli import ScheduleSampler
    from bss_cli.integrations.lightning import ScheduleCallback

    ids = pq.read_table(manifest)["sample_id"].to_pylist()

    class Rows(Dataset):
        sample_ids = ids

        def __len__(self):
            return len(ids)

        def __getitem__(self, i):
            return {"x": torch.randn(4, generator=torch.Generator().manual_seed(i)), "y": i % 3, "i": i}

    rows, epochs = Rows(), 6
    f = ScheduleFile(schedule_path)
    callbacks = []
    if with_bss:
        bss = ScheduleCallback(ScheduleSampler(schedule_path, dataset=rows), log=False)
        callbacks, make = [bss], lambda: bss.dataloader(rows, batch_size=4)
    else:
        make = None

    class Model(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.net, self.seen = nn.Linear(4, 3), {"val": 0, "steps": 0, "lr": [], "batches": [], "ids": []}

        def train_dataloader(self):
            if make:
                return make()
            order = f.epoch(self.trainer.current_epoch)["row"].to_pylist()
            return DataLoader(Subset(rows, order), batch_size=4, shuffle=False)

        def val_dataloader(self):
            return DataLoader(Subset(rows, list(range(6))), batch_size=6)

        def training_step(self, batch, batch_idx):
            self.seen["ids"].append(batch["i"].tolist())
            return nn.functional.cross_entropy(self.net(batch["x"]), batch["y"])

        def validation_step(self, batch, batch_idx):
            pass

        def on_validation_epoch_end(self):
            self.seen["val"] += 1

        def on_train_epoch_start(self):
            self.seen["lr"].append(self.optimizers().param_groups[0]["lr"])
            self.seen["batches"].append(self.trainer.num_training_batches)

        def optimizer_step(self, *args, **kwargs):
            self.seen["steps"] += 1
            super().optimizer_step(*args, **kwargs)

        def configure_optimizers(self):
            opt = torch.optim.SGD(self.parameters(), lr=0.1)
            self.seen["estimated"] = self.trainer.estimated_stepping_batches
            if onecycle:  # raises when stepped more often than total_steps
                sched = {"scheduler": torch.optim.lr_scheduler.OneCycleLR(opt, 0.1, total_steps=self.seen["estimated"]),
                         "interval": "step"}
            else:
                sched = {"scheduler": torch.optim.lr_scheduler.StepLR(opt, 1, 0.5), "interval": "epoch"}
            return {"optimizer": opt, "lr_scheduler": sched}

    torch.manual_seed(0)
    model = Model()
    trainer = L.Trainer(max_epochs=epochs, accelerator="cpu", callbacks=callbacks, reload_dataloaders_every_n_epochs=1,
                        use_distributed_sampler=False, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, accumulate_grad_batches=accumulate,
                        num_sanity_val_steps=0)
    trainer.fit(model)
    return {**model.seen, "global_step": trainer.global_step}


@pytest.mark.parametrize("accumulate", [1, 3])
def test_lightning_epochs_equal_plain_lightnings_on_the_same_batches(tiny_manifest, schedule, accumulate):
    """Epoch length, validation after every epoch, a per-epoch StepLR, gradient accumulation closing
    each epoch's last group: the callback's run equals plain Lightning given the same rows per epoch."""
    got = _lightning_epochs(schedule, tiny_manifest, accumulate, with_bss=True)
    want = _lightning_epochs(schedule, tiny_manifest, accumulate, with_bss=False)
    for key in ("ids", "batches", "val", "lr", "steps", "global_step"):
        assert got[key] == want[key], key
    assert got["val"] == 6 and len(set(got["lr"])) == 6  # validated and stepped every epoch
    # the real optimizer steps, which plain Lightning under-counts for a growing curriculum
    assert got["estimated"] == got["steps"] > want["estimated"]


def test_lightning_one_cycle_over_estimated_stepping_batches_runs_to_the_end(tiny_manifest, schedule):
    got = _lightning_epochs(schedule, tiny_manifest, 2, with_bss=True, onecycle=True)
    assert got["steps"] == got["estimated"]


def test_lightning_own_launcher_shards_a_sampler_made_before_it(tiny_manifest, schedule, tmp_path):
    """devices=2 without torchrun: Lightning starts the second process itself, after the sampler
    was made in the first; the callback shards it as the Trainer's rank."""
    record = tmp_path / "rec"
    cmd = [sys.executable, str(ROOT / "examples" / "lightning_train.py"), str(tiny_manifest), str(schedule),
           "--epochs", str(EPOCHS), "--batch-size", "4", "--devices", "2", "--record", str(record)]
    r = run_processes(cmd, timeout=300, env={**os.environ, "PYTHONWARNINGS": "ignore"}, cwd=tmp_path)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-6000:]
    for rank in range(2):
        got = json.loads((tmp_path / f"rec.rank{rank}.json").read_text())
        assert got == expected(schedule, rank, 2)


def test_a_sampler_sharded_by_hand_against_the_trainer_is_refused_naming_the_arguments(tiny_manifest, schedule):
    import lightning as L
    import pyarrow.parquet as pq

    from bss_cli import ScheduleSampler
    from bss_cli.integrations.lightning import ScheduleCallback

    ids = pq.read_table(tiny_manifest)["sample_id"].to_pylist()
    bss = ScheduleCallback(ScheduleSampler(schedule, ids=ids, rank=1, world_size=2))
    trainer = L.Trainer(max_epochs=1, accelerator="cpu", callbacks=[bss], reload_dataloaders_every_n_epochs=1,
                        use_distributed_sampler=False, logger=False, enable_checkpointing=False)
    with pytest.raises(ConfigError, match=r"rank 1 of 2 but this Trainer process is rank 0 of 1; pass "
                                          r"ScheduleSampler\(\.\.\., rank=trainer.global_rank"):
        bss.setup(trainer, None, "fit")


def _fabric(tiny_manifest, schedule, tmp_path, devices: int, *extra):
    cmd = [sys.executable, str(ROOT / "examples" / "fabric_train.py"), str(tiny_manifest), str(schedule), "--epochs",
           str(EPOCHS), "--batch-size", "4", "--devices", str(devices), "--record", str(tmp_path / "rec"), *extra]
    return run_processes(cmd, timeout=300, env={**os.environ, "PYTHONWARNINGS": "ignore"}, cwd=tmp_path)


@pytest.mark.parametrize("devices", [1, 2])
def test_fabric_trains_every_epoch_on_its_schedule_rows(tiny_manifest, schedule, tmp_path, devices):
    r = _fabric(tiny_manifest, schedule, tmp_path, devices)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-6000:]
    for rank in range(devices):
        assert json.loads((tmp_path / f"rec.rank{rank}.json").read_text()) == expected(schedule, rank, devices)


def test_fabric_sharding_a_second_time_is_refused(tiny_manifest, schedule, tmp_path):
    r = _fabric(tiny_manifest, schedule, tmp_path, 2, "--fabric-shards")
    assert r.returncode != 0 and "use_distributed_sampler=False" in r.stderr and "shard" in r.stderr
    assert not list(tmp_path.glob("rec.rank*.json"))


PLAIN_ACCELERATE = """
import sys, torch
from accelerate import Accelerator
from torch import nn
from torch.utils.data import DataLoader, Subset
sys.path.insert(0, sys.argv[1])
from _train_rows import TrainRows
from bss_cli.scheduling.schedule_io import ScheduleFile
manifest, schedule, epochs, k, out = sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), sys.argv[6]
accelerator = Accelerator(cpu=True, gradient_accumulation_steps=k)
torch.manual_seed(0)
data = TrainRows(manifest)
net = nn.Sequential(nn.Linear(data.dim, 64), nn.ReLU(), nn.Linear(64, data.n_classes))
net, opt = accelerator.prepare(net, torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9))
where = {s: i for i, s in enumerate(data.sample_ids)}
f = ScheduleFile(schedule)
for epoch in range(epochs):  # plain accelerate, handed the same rows per epoch in a loader it prepares
    rows = [where[s] for s in f.epoch(epoch)["sample_id"].to_pylist()]
    for batch in accelerator.prepare(DataLoader(Subset(data, rows), batch_size=4, shuffle=False)):
        with accelerator.accumulate(net):
            loss = nn.functional.cross_entropy(net(batch["x"]), batch["labels"])
            accelerator.backward(loss)
            opt.step()
            opt.zero_grad()
torch.save(accelerator.unwrap_model(net).state_dict(), out)
"""


def test_accelerate_recipe_with_accumulation_equals_plain_accelerate(tiny_manifest, schedule, tmp_path):
    """--accumulate 3: the example's loop (its loader not prepared) trains the same weights as
    accelerate's own accumulation over a prepared loader of the same rows, which steps each epoch's
    last, partial group."""
    import torch

    run_example("accelerate_train.py", tiny_manifest, schedule, tmp_path / "bss", 1, "--accumulate", "3")
    (tmp_path / "plain.py").write_text(PLAIN_ACCELERATE)
    r = run_processes([sys.executable, str(tmp_path / "plain.py"), str(ROOT / "examples"), str(tiny_manifest),
                       str(schedule), str(EPOCHS), "3", str(tmp_path / "plain.pt")], timeout=300, cwd=ROOT,
                      env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert r.returncode == 0, r.stderr[-4000:]
    got, want = torch.load(tmp_path / "bss.weights.pt"), torch.load(tmp_path / "plain.pt")
    assert all(torch.allclose(got[k], want[k], atol=1e-6) for k in want)
    records = run_example("accelerate_train.py", tiny_manifest, schedule, tmp_path / "two", 2, "--accumulate", "3")
    assert records == [expected(schedule, rank, 2) for rank in range(2)]

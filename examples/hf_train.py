"""Hugging Face Trainer on a bss schedule: every epoch trains on exactly that epoch's rows, in order.

    bss score data.parquet -o scores.parquet
    bss schedule scores.parquet -o schedule.parquet --epochs 10 --t-grow 5
    python examples/hf_train.py data.parquet schedule.parquet --epochs 10
    torchrun --nproc_per_node 2 examples/hf_train.py data.parquet schedule.parquet --epochs 10

What a Trainer user adds: ``ScheduleTrainerMixin`` before ``Trainer`` in a subclass, a
ScheduleSampler over the train set passed as ``bss_sampler=``, and ``num_train_epochs`` (not
``max_steps``): the schedule decides each epoch's length.
"""

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import torch
from torch import nn
from transformers import Trainer, TrainingArguments

sys.path.insert(0, str(Path(__file__).parent))
from _train_rows import TrainRows, leave_process_group  # noqa: E402

from bss_cli import ScheduleSampler  # noqa: E402
from bss_cli.integrations.hf import ScheduleTrainerMixin  # noqa: E402


class BSSTrainer(ScheduleTrainerMixin, Trainer):
    pass


class Classifier(nn.Module):
    def __init__(self, data: TrainRows):
        super().__init__()
        self.data = data
        self.net = nn.Sequential(nn.Linear(data.dim, 64), nn.ReLU(), nn.Linear(64, data.n_classes))
        self.trained: list[list] = []  # per epoch, filled by the callback below
        self.epochs: list[int] = []  # which epoch each list is (a resumed run starts mid-way)

    def forward(self, x, labels=None, index=None):
        if self.training and index is not None:
            self.trained[-1].extend(self.data.sample_ids[i] for i in index.tolist())
        logits = self.net(x)
        loss = nn.functional.cross_entropy(logits, labels) if labels is not None else None
        return {"loss": loss, "logits": logits}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("manifest")
    ap.add_argument("schedule")
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--record", help="write the sample ids each epoch trained on (per rank) to RECORD.rankN.json")
    ap.add_argument("--output-dir", help="where the Trainer writes checkpoints (default: a temporary folder)")
    ap.add_argument("--save-steps", type=int, default=0, help="save a checkpoint every N steps")
    ap.add_argument("--resume", help="a checkpoint folder to resume from (also on another number of processes)")
    ap.add_argument("--datasets", action="store_true", help="hold the rows in a Hugging Face datasets.Dataset")
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    data = TrainRows(args.manifest)
    model = Classifier(data)
    from transformers import TrainerCallback

    lrs: list[float] = []  # the learning rate of every optimiser step

    class NewEpoch(TrainerCallback):
        def on_epoch_begin(self, args, state, control, **k):
            model.trained.append([])
            model.epochs.append(int(state.epoch + 1e-9))

        def on_step_begin(self, args, state, control, optimizer=None, **k):
            lrs.append(optimizer.param_groups[0]["lr"])

    out = args.output_dir or tempfile.mkdtemp(prefix="bss-hf-")
    saving = {"save_strategy": "steps", "save_steps": args.save_steps} if args.save_steps else {"save_strategy": "no"}
    targs = TrainingArguments(output_dir=out, num_train_epochs=args.epochs, per_device_train_batch_size=args.batch_size,
                              learning_rate=0.01, report_to=[], logging_strategy="no", **saving,
                              use_cpu=True, disable_tqdm=True,
                              ddp_backend="gloo" if int(os.environ.get("WORLD_SIZE", "1")) > 1 else None)
    train_set = data
    if args.datasets:  # the way most HF users hold data; forward() does not take its sample_id column
        import datasets

        train_set = datasets.Dataset.from_dict({"sample_id": data.sample_ids, "x": data.x.tolist(),
                                                "labels": data.y.tolist(), "index": list(range(len(data)))})
        train_set.set_format("torch", columns=["x", "labels", "index"], output_all_columns=True)
    trainer = BSSTrainer(model=model, args=targs, train_dataset=train_set, callbacks=[NewEpoch()],
                         bss_sampler=ScheduleSampler(args.schedule, dataset=train_set))
    trainer.train(resume_from_checkpoint=args.resume)
    rank = trainer.args.process_index
    if args.record:
        Path(f"{args.record}.rank{rank}.json").write_text(json.dumps(dict(zip(model.epochs, model.trained))))
        Path(f"{args.record}.lr.rank{rank}.json").write_text(json.dumps(lrs))
    if rank == 0:
        print(f"trained {args.epochs} epochs: " + ", ".join(str(len(v)) for v in model.trained)
              + " samples per epoch on rank 0")


if __name__ == "__main__":
    main()
    leave_process_group()  # after main(): its DDP model is freed while the process group is still whole

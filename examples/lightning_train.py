"""Lightning on a bss schedule: every epoch trains on exactly that epoch's rows, in order.

    bss score data.parquet -o scores.parquet
    bss schedule scores.parquet -o schedule.parquet --epochs 10 --t-grow 5
    python examples/lightning_train.py data.parquet schedule.parquet --epochs 10
    torchrun --nproc_per_node 2 examples/lightning_train.py data.parquet schedule.parquet --epochs 10 --devices 2

What a Lightning user adds: a ScheduleSampler over the train set, the ScheduleCallback, the
loader from ``callback.dataloader(...)`` in ``train_dataloader()``, and two Trainer settings
(``reload_dataloaders_every_n_epochs=1``, ``use_distributed_sampler=False``).
"""

import argparse
import json
import sys
from pathlib import Path

import lightning as L
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))
from _train_rows import TrainRows, leave_process_group  # noqa: E402

from bss_cli import ScheduleSampler  # noqa: E402
from bss_cli.integrations.lightning import ScheduleCallback  # noqa: E402


class Classifier(L.LightningModule):
    def __init__(self, data: TrainRows, bss: ScheduleCallback, batch_size: int):
        super().__init__()
        self.data, self.bss, self.batch_size = data, bss, batch_size
        self.net = nn.Sequential(nn.Linear(data.dim, 64), nn.ReLU(), nn.Linear(64, data.n_classes))
        self.trained: dict[int, list] = {}

    def train_dataloader(self):
        return self.bss.dataloader(self.data, batch_size=self.batch_size)  # sized for this epoch

    def training_step(self, batch, batch_idx):
        ids = [self.data.sample_ids[i] for i in batch["index"].tolist()]
        self.trained.setdefault(self.current_epoch, []).extend(ids)
        return nn.functional.cross_entropy(self.net(batch["x"]), batch["labels"])

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.05, momentum=0.9)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("manifest")
    ap.add_argument("schedule")
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--devices", type=int, default=1)
    ap.add_argument("--record", help="write the sample ids each epoch trained on (per rank) to RECORD.rankN.json")
    ap.add_argument("--checkpoint-every", type=int, default=0, help="save a Lightning checkpoint every N steps")
    ap.add_argument("--checkpoint-dir", default="checkpoints")
    ap.add_argument("--resume", help="a Lightning checkpoint to resume from (mid-epoch ones too)")
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    data = TrainRows(args.manifest)
    bss = ScheduleCallback(ScheduleSampler(args.schedule, dataset=data))  # rank and world size from torchrun
    callbacks = [bss]
    if args.checkpoint_every:  # the callback's position is saved in each checkpoint
        from lightning.pytorch.callbacks import ModelCheckpoint

        callbacks.append(ModelCheckpoint(dirpath=args.checkpoint_dir, every_n_train_steps=args.checkpoint_every,
                                         save_top_k=-1, filename="{step}"))
    trainer = L.Trainer(max_epochs=args.epochs, accelerator="cpu", devices=args.devices,
                        strategy="ddp" if args.devices > 1 else "auto", callbacks=callbacks,
                        reload_dataloaders_every_n_epochs=1, use_distributed_sampler=False,
                        logger=False, enable_checkpointing=bool(args.checkpoint_every), enable_progress_bar=False,
                        enable_model_summary=False)
    model = Classifier(data, bss, args.batch_size)
    trainer.fit(model, ckpt_path=args.resume)
    if args.record:
        Path(f"{args.record}.rank{trainer.global_rank}.json").write_text(json.dumps(model.trained))
    if trainer.is_global_zero:
        print(f"trained {args.epochs} epochs: " + ", ".join(str(len(v)) for v in model.trained.values())
              + " samples per epoch on rank 0")


if __name__ == "__main__":
    main()
    leave_process_group()  # after main(): its DDP model is freed while the process group is still whole

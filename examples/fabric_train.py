"""Lightning Fabric on a bss schedule: every process trains exactly its share of each epoch's order.

    bss score data.parquet -o scores.parquet
    bss schedule scores.parquet -o schedule.parquet --epochs 10 --t-grow 5
    python examples/fabric_train.py data.parquet schedule.parquet --epochs 10 --devices 2

What a Fabric user does: the ScheduleSampler shards each epoch by rank itself, so the loader is set
up with ``fabric.setup_dataloaders(loader, use_distributed_sampler=False)``; with ``True`` (Fabric's
default, and how BalanceBenchmark's trainer runs it) Fabric would shard the shard again, which bss
refuses loudly. The loader is set up once: Fabric tells its batch sampler the epoch at every pass,
and each pass has that epoch's size.
"""

import argparse
import json
import sys
from pathlib import Path

import lightning as L
import torch
from torch import nn
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).parent))
from _train_rows import TrainRows  # noqa: E402

from bss_cli import ScheduleSampler  # noqa: E402


def train(fabric: L.Fabric, args) -> None:
    torch.manual_seed(0)
    data = TrainRows(args.manifest)
    sampler = ScheduleSampler(args.schedule, dataset=data)  # rank and world size from Fabric's process group
    net = nn.Sequential(nn.Linear(data.dim, 64), nn.ReLU(), nn.Linear(64, data.n_classes))
    net, opt = fabric.setup(net, torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9))
    # set up once: Fabric calls set_epoch(n) on the batch sampler at the n-th pass over the loader, so
    # every pass takes that epoch's order and length (a loader set up anew each epoch would be told
    # epoch 0 every time)
    loader = DataLoader(data, batch_sampler=sampler.batches(args.batch_size))
    loader = fabric.setup_dataloaders(loader, use_distributed_sampler=args.fabric_shards)  # False: bss shards
    trained: dict[int, list] = {}
    for epoch in range(args.epochs):
        for batch in loader:
            trained.setdefault(epoch, []).extend(data.sample_ids[i] for i in batch["index"].tolist())
            loss = nn.functional.cross_entropy(net(batch["x"]), batch["labels"])
            opt.zero_grad()
            fabric.backward(loss)
            opt.step()
    if args.record:
        Path(f"{args.record}.rank{fabric.global_rank}.json").write_text(json.dumps(trained))
    if fabric.is_global_zero:
        print(f"trained {args.epochs} epochs: " + ", ".join(str(len(v)) for v in trained.values())
              + " samples per epoch on rank 0")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("manifest")
    ap.add_argument("schedule")
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--devices", type=int, default=1)
    ap.add_argument("--record", help="write the sample ids each epoch trained on (per rank) to RECORD.rankN.json")
    ap.add_argument("--fabric-shards", action="store_true",
                    help="the mistake bss refuses: let Fabric shard the loader too (use_distributed_sampler=True)")
    args = ap.parse_args(argv)
    fabric = L.Fabric(accelerator="cpu", devices=args.devices, strategy="ddp" if args.devices > 1 else "auto")
    fabric.launch(train, args)


if __name__ == "__main__":
    main()

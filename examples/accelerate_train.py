"""accelerate on a bss schedule: every process trains exactly its share of each epoch's order.

    bss score data.parquet -o scores.parquet
    bss schedule scores.parquet -o schedule.parquet --epochs 10 --t-grow 5
    accelerate launch --num_processes 2 examples/accelerate_train.py data.parquet schedule.parquet --epochs 10
    torchrun --nproc_per_node 2 examples/accelerate_train.py data.parquet schedule.parquet --epochs 10

What an accelerate user does: prepare the model and optimiser as usual, but NOT the DataLoader.
The ScheduleSampler already shards each epoch by rank (from the process group accelerate starts);
accelerator.prepare(loader) would shard its batches a second time (bss refuses that loudly), so
each batch is moved to ``accelerator.device`` here instead.

Gradient accumulation (``--accumulate K``): accelerate learns where an epoch ends from a loader it
prepared, which this one is not, so ``accelerator.accumulate(model)`` would let groups run across
epochs and never step an epoch's last batches. The loop steps itself: every K batches and at the
epoch's last batch, each micro-batch's loss divided by K, as accelerate does with a prepared loader
(tested against it).
"""

import argparse
import contextlib
import json
import sys
from pathlib import Path

import torch
from accelerate import Accelerator
from torch import nn
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).parent))
from _train_rows import TrainRows, leave_process_group  # noqa: E402

from bss_cli import ScheduleSampler  # noqa: E402


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("manifest")
    ap.add_argument("schedule")
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--record", help="write the sample ids each epoch trained on (per rank) to RECORD.rankN.json")
    ap.add_argument("--prepare-loader", action="store_true", help="the mistake bss refuses: prepare the loader too")
    ap.add_argument("--accumulate", type=int, default=1, help="gradient accumulation: step every K batches")
    args = ap.parse_args(argv)
    accelerator = Accelerator(cpu=True)
    torch.manual_seed(0)
    data = TrainRows(args.manifest)
    sampler = ScheduleSampler(args.schedule, dataset=data)  # rank and world size from accelerate's process group
    net = nn.Sequential(nn.Linear(data.dim, 64), nn.ReLU(), nn.Linear(64, data.n_classes))
    net, opt = accelerator.prepare(net, torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9))
    opt.zero_grad()
    trained: dict[int, list] = {}
    for epoch in range(args.epochs):
        sampler.set_epoch(epoch)
        loader = DataLoader(data, batch_sampler=sampler.batches(args.batch_size))  # rebuilt: each epoch has its size
        if args.prepare_loader:
            loader = accelerator.prepare(loader)
        for b, batch in enumerate(loader):
            batch = {k: v.to(accelerator.device) for k, v in batch.items()}
            trained.setdefault(epoch, []).extend(data.sample_ids[i] for i in batch["index"].tolist())
            step_now = (b + 1) % args.accumulate == 0 or b + 1 == len(loader)  # an epoch's last group steps too
            with contextlib.nullcontext() if step_now else accelerator.no_sync(net):  # no all-reduce mid-group
                loss = nn.functional.cross_entropy(net(batch["x"]), batch["labels"])
                accelerator.backward(loss / args.accumulate)
            if step_now:
                opt.step()
                opt.zero_grad()
    if args.record:
        Path(f"{args.record}.rank{accelerator.process_index}.json").write_text(json.dumps(trained))
        if accelerator.is_main_process:  # the trained weights, to compare runs
            torch.save(accelerator.unwrap_model(net).state_dict(), f"{args.record}.weights.pt")
    if accelerator.is_main_process:
        print(f"trained {args.epochs} epochs: " + ", ".join(str(len(v)) for v in trained.values())
              + " samples per epoch on rank 0")


if __name__ == "__main__":
    main()
    leave_process_group()  # after main(): its DDP model is freed while the process group is still whole

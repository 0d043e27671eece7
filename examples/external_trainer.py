"""A plain PyTorch trainer that takes its per-epoch data order from bss.

It uses none of bss's training code: it reads the manifest with pyarrow, builds its own
two-branch model, and asks bss only for orderings, in one of two ways:

* ``--via sampler``: ``bss score`` once, ``bss schedule`` a curriculum file, and iterate with
  ``bss_cli.ScheduleSampler`` in a DataLoader (the static curriculum of the paper);
* ``--via pipe``: the dynamic loop of the learned scheduler. After each epoch the trainer writes
  its own predictions, ``bss score --predictions`` turns them into scores and
  ``bss schedule --epoch E -o - --format npy`` pipes the next epoch's order back.

    python examples/external_trainer.py sample_data/htad.parquet --via pipe --epochs 5
"""

from __future__ import annotations

import argparse
import io
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from bss_cli import ScheduleSampler

BSS = [sys.executable, "-m", "bss_cli"]


def bss(*args: str) -> bytes:
    return subprocess.run([*BSS, *map(str, args)], check=True, capture_output=True).stdout


def load(manifest: Path):
    t = pq.read_table(manifest)
    mods = [c for c in t.column_names if c not in ("sample_id", "label", "split") and not c.startswith("meta_")]
    x = {m: torch.tensor(np.stack(t[m].to_numpy(zero_copy_only=False)), dtype=torch.float32) for m in mods}
    classes = sorted(set(t["label"].to_pylist()))
    y = torch.tensor([classes.index(v) for v in t["label"].to_pylist()])
    split = np.asarray(t["split"].to_pylist())
    for m in mods:  # standardise with train statistics
        tr = x[m][torch.from_numpy(split == "train")]
        x[m] = (x[m] - tr.mean(0)) / tr.std(0).clamp_min(1e-6)
    return t["sample_id"], x, y, split, len(classes)


class TwoHeads(nn.Module):
    def __init__(self, dims: dict[str, int], n_classes: int, hidden: int = 64):
        super().__init__()
        self.enc = nn.ModuleDict({m: nn.Sequential(nn.Linear(d, hidden), nn.ReLU()) for m, d in dims.items()})
        self.head = nn.ModuleDict({m: nn.Linear(hidden, n_classes) for m in dims})
        self.fused = nn.Linear(hidden * len(dims), n_classes)

    def forward(self, x):
        e = {m: enc(x[m]) for m, enc in self.enc.items()}
        return {m: self.head[m](e[m]) for m in e}, self.fused(torch.cat(list(e.values()), 1))


def step(model, opt, x, y, rows):
    uni, fused = model({m: v[rows] for m, v in x.items()})
    loss = sum(nn.functional.cross_entropy(z, y[rows]) for z in uni.values()) + nn.functional.cross_entropy(fused, y[rows])
    opt.zero_grad()
    loss.backward()
    opt.step()


@torch.no_grad()
def accuracy(model, x, y, rows) -> float:
    uni, fused = model({m: v[rows] for m, v in x.items()})
    return float(((sum(uni.values()) + fused).argmax(1) == y[rows]).float().mean())


@torch.no_grad()
def write_predictions(model, ids, x, rows, path: Path) -> None:
    uni, fused = model({m: v[rows] for m, v in x.items()})
    cols = {"sample_id": ids.take(pa.array(rows))}
    cols.update({f"logits_{m}": z.tolist() for m, z in uni.items()})
    cols["logits_fused"] = fused.tolist()
    pq.write_table(pa.table(cols), path)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("manifest", type=Path)
    ap.add_argument("--via", choices=("sampler", "pipe"), default="pipe")
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    torch.manual_seed(args.seed)
    ids, x, y, split, n_classes = load(args.manifest)
    train, val = np.flatnonzero(split == "train"), np.flatnonzero(split == "val")
    model = TwoHeads({m: v.shape[1] for m, v in x.items()}, n_classes)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    work = Path(tempfile.mkdtemp(prefix="bss-external-"))
    history = []

    if args.via == "sampler":
        bss("score", args.manifest, "-o", work / "scores.parquet", "--seed", args.seed)
        bss("schedule", work / "scores.parquet", "-o", work / "schedule.parquet", "--epochs", args.epochs,
            "--t-grow", args.epochs, "--seed", args.seed)
        sampler = ScheduleSampler(work / "schedule.parquet", ids=ids)  # dataset index i holds sample ids[i]
        for epoch in range(args.epochs):
            sampler.set_epoch(epoch)
            loader = DataLoader(TensorDataset(torch.arange(len(y))), batch_size=args.batch_size, sampler=sampler)
            n = 0
            for (rows,) in loader:
                step(model, opt, x, y, rows)
                n += len(rows)
            history.append({"epoch": epoch, "samples": n, "val_acc": accuracy(model, x, y, val)})
    else:
        order = np.random.default_rng(args.seed).permutation(train)  # epoch 0: nothing scored yet
        for epoch in range(args.epochs):
            for start in range(0, len(order), args.batch_size):
                step(model, opt, x, y, torch.from_numpy(order[start:start + args.batch_size]))
            history.append({"epoch": epoch, "samples": len(order), "val_acc": accuracy(model, x, y, val)})
            # re-score with this model's predictions and draw the next epoch's order
            write_predictions(model, ids, x, train, work / "preds.parquet")
            bss("score", args.manifest, "-o", work / "scores.parquet", "--predictions", work / "preds.parquet",
                "--force")
            npy = bss("schedule", work / "scores.parquet", "-o", "-", "--format", "npy", "--scheduler", "learned",
                      "--epoch", epoch + 1, "--seed", args.seed)
            order = np.load(io.BytesIO(npy))[:, 2]  # columns: epoch, position, manifest row
    for h in history:
        print(f"epoch {h['epoch']}: {h['samples']} samples, val acc {h['val_acc']:.3f}")
    return {"history": history}


if __name__ == "__main__":
    main()

"""``bss train`` against a bare PyTorch loop doing the same training and validation.

The bare loop (written here) trains the same late-fusion model (bss's own ``LateFusion``, same
initialisation, standardisation and joint loss) with the same SGD and cosine schedule, batch size
and a fresh shuffle per epoch, indexing tensors already in memory, and evaluates accuracy on the
validation split once per epoch. ``bss train --scheduler none`` does that plus everything a run
does: the ordering through the schedule code, the sampler, per-batch divergence checks, metrics,
per-epoch artifacts (on, the default), checkpoints, metrics files. Whole-epoch wall time over the
epochs after the first, both measured in this process, runs interleaved.

``bss train`` brings its run folder up to date at most once a second by default (``--save-every``),
so on short epochs the checkpoint and file writing land on some epochs only: the headline ratio
is of *mean* epoch times (the whole run's time per epoch, saves included), and ``--save-every 0``
(a save after every epoch) is measured as well. Each ratio is given for the wall clock and for
the process's CPU time (all threads, the file writer's included): on this shared VM the wall
clock swings by 2x when the host is busy, while CPU time is what the run itself spent.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np

from common import now, paired_ratios

ROOT = Path(__file__).resolve().parents[1]


def _diffs(stamps: list[tuple[float, float]]) -> np.ndarray:
    return np.diff(np.array(stamps), axis=0)  # [epochs, 2]: wall and CPU seconds per epoch


def bare_loop(manifest: Path, epochs: int, hidden: int, layers: int, batch_size: int = 32) -> np.ndarray:
    import torch

    from bss_cli.data.datasets import ManifestData
    from bss_cli.data.manifest import load_manifest
    from bss_cli.models.fusion import joint_loss
    from bss_cli.scoring.predict import fresh_model

    m = load_manifest(manifest)
    data = ManifestData(m, device="cpu")
    model, _ = fresh_model(m, data, 0, hidden, layers=layers)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
    train_rows = torch.as_tensor(m.indices("train"))
    val_rows = torch.as_tensor(m.indices("val"))
    x = {k: v for k, v in data.x.items()}
    y = data.y
    gen = torch.Generator().manual_seed(0)
    stamps = [now()]
    for _ in range(epochs):
        model.train()
        order = train_rows[torch.randperm(len(train_rows), generator=gen)]
        for s in range(0, len(order), batch_size):
            idx = order[s:s + batch_size]
            out = model({k: v[idx] for k, v in x.items()})
            loss = joint_loss(out, y[idx], 1.0, 1.0).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)  # bss train's default recipe clips too
            opt.step()
        sched.step()
        model.eval()
        with torch.inference_mode():
            out = model({k: v[val_rows] for k, v in x.items()})
            logits = sum(out.logits.values()) + (out.fused if out.fused is not None else 0)
            float((logits.argmax(1) == y[val_rows]).float().mean())
        stamps.append(now())
    return _diffs(stamps)


def bss_loop(manifest: Path, epochs: int, hidden: int, layers: int, **extra) -> np.ndarray:
    from bss_cli.training.config import TrainConfig
    from bss_cli.training.trainer import Callbacks, train

    stamps: list[tuple[float, float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        stamps.append(now())
        train(TrainConfig(manifest=str(manifest), out=f"{tmp}/run", epochs=epochs, hidden=hidden, layers=layers,
                          quiet=True, **extra),
              Callbacks(on_epoch_end=lambda row: stamps.append(now())))
    return _diffs(stamps)


def compare(name: str, manifest: Path, hidden: int, layers: int, epochs: int = 8, repeats: int = 3) -> dict:
    """Per repeat, the bare loop and each bss variant run back to back; each ratio is taken within
    one repeat (paired, so the machine's slow drift cancels) and reported as the median over the
    repeats with its range."""
    modes = {"none": {"scheduler": "none"}, "none/save-every-0": {"scheduler": "none", "save_every": 0},
             "learned/pass": {"scheduler": "learned", "rescore": "pass"},
             "learned/online": {"scheduler": "learned", "rescore": "online"}}
    means: dict[str, list[np.ndarray]] = {mode: [] for mode in ("bare", *modes)}  # per repeat: [wall, cpu]
    for _ in range(repeats):
        means["bare"].append(bare_loop(manifest, epochs, hidden, layers)[1:].mean(0))
        for mode, extra in modes.items():
            means[mode].append(bss_loop(manifest, epochs, hidden, layers, **extra)[1:].mean(0))

    def ratio(mode: str, base: str) -> dict:
        return paired_ratios(means[mode], means[base])

    return {"data": name, "hidden": hidden, "layers": layers, "epochs_per_run": epochs, "repeats": repeats,
            "bare_epoch_seconds": float(np.median(np.array(means["bare"])[:, 0])),
            "none_epoch_seconds": float(np.median(np.array(means["none"])[:, 0])),
            "none_over_bare": ratio("none", "bare"),
            "none_save_every_0_over_bare": ratio("none/save-every-0", "bare"),
            **{f"{mode}_over_none": ratio(mode, "none") for mode in modes if mode.startswith("learned")}}


def run() -> dict:
    return {"htad_default_width": compare("htad", ROOT / "sample_data" / "htad.parquet", 64, 2, epochs=24, repeats=6),
            "mfeat_width_512": compare("mfeat", ROOT / "sample_data" / "mfeat.parquet", 512, 3, repeats=3)}


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))

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
is therefore the *mean* epoch time (the whole run's time per epoch, saves included), with the
median beside it, and ``--save-every 0`` (a save after every epoch) is measured as well.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def bare_loop(manifest: Path, epochs: int, hidden: int, layers: int, batch_size: int = 32) -> list[float]:
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
    stamps = [time.perf_counter()]
    for _ in range(epochs):
        model.train()
        order = train_rows[torch.randperm(len(train_rows), generator=gen)]
        for s in range(0, len(order), batch_size):
            idx = order[s:s + batch_size]
            out = model({k: v[idx] for k, v in x.items()})
            loss = joint_loss(out, y[idx], 1.0, 1.0).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        sched.step()
        model.eval()
        with torch.inference_mode():
            out = model({k: v[val_rows] for k, v in x.items()})
            logits = sum(out.logits.values()) + (out.fused if out.fused is not None else 0)
            float((logits.argmax(1) == y[val_rows]).float().mean())
        stamps.append(time.perf_counter())
    return list(np.diff(stamps))


def bss_loop(manifest: Path, epochs: int, hidden: int, layers: int, **extra) -> list[float]:
    from bss_cli.training.config import TrainConfig
    from bss_cli.training.trainer import Callbacks, train

    stamps: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        stamps.append(time.perf_counter())
        train(TrainConfig(manifest=str(manifest), out=f"{tmp}/run", epochs=epochs, hidden=hidden, layers=layers,
                          quiet=True, **extra),
              Callbacks(on_epoch_end=lambda row: stamps.append(time.perf_counter())))
    return list(np.diff(stamps))


def compare(name: str, manifest: Path, hidden: int, layers: int, epochs: int = 8, repeats: int = 3) -> dict:
    bare: list[float] = []
    modes = {"none": {"scheduler": "none"}, "none/save-every-0": {"scheduler": "none", "save_every": 0},
             "learned/pass": {"scheduler": "learned", "rescore": "pass"},
             "learned/online": {"scheduler": "learned", "rescore": "online"}}
    ours: dict[str, list[float]] = {mode: [] for mode in modes}
    for _ in range(repeats):  # interleaved, so drift on a shared machine hits every variant alike
        bare += bare_loop(manifest, epochs, hidden, layers)[1:]
        for mode, extra in modes.items():
            ours[mode] += bss_loop(manifest, epochs, hidden, layers, **extra)[1:]
    base, none = float(np.mean(bare)), float(np.mean(ours["none"]))
    return {"data": name, "hidden": hidden, "layers": layers, "epochs_timed": len(bare),
            "bare_epoch_seconds": base, "none_epoch_seconds": none,
            "none_over_bare": none / base,
            "none_over_bare_median": float(np.median(ours["none"]) / np.median(bare)),
            "none_save_every_0_over_bare": float(np.mean(ours["none/save-every-0"])) / base,
            **{f"{mode}_over_none": float(np.mean(t)) / none for mode, t in ours.items() if mode.startswith("learned")}}


def run() -> dict:
    return {"htad_default_width": compare("htad", ROOT / "sample_data" / "htad.parquet", 64, 2, epochs=24),
            "mfeat_width_512": compare("mfeat", ROOT / "sample_data" / "mfeat.parquet", 512, 3)}


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))

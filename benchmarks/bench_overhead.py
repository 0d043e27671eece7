"""Per-epoch cost of the learned scheduler's re-scoring against plain shuffled training.

Same data, model, seed and run; ``none`` is the baseline measured in the same process. Epoch
time = the wall time from one epoch's end to the next: plan, training pass, re-scoring,
validation, metrics and checkpoint (work overlapped by a thread is counted once, as it is paid);
the ratios are of mean epoch times (the whole run's), taken within each repeat (paired) and
reported as the median over repeats with their range, for the wall clock and for the process's
CPU time (all threads; steadier on this shared VM, whose wall clock swings when the host is busy).
Two settings: the model widened until compute dominates (mfeat, 6 modalities, hidden 512, 3
layers) and bss train's defaults on HTAD (width 64: 0.1 s epochs, where fixed per-epoch costs
show; more epochs and repeats there, since this VM's noise is of the same size).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np

from common import now, paired_ratios

ROOT = Path(__file__).resolve().parents[1]


def _ratios(manifest: str, epochs: int, repeats: int, **model) -> dict:
    import torch

    from bss_cli.training.config import TrainConfig
    from bss_cli.training.trainer import Callbacks, train

    torch.set_num_threads(max(1, torch.get_num_threads()))
    modes = {"none": {"scheduler": "none"}, "learned/pass": {"scheduler": "learned", "rescore": "pass"},
             "learned/online": {"scheduler": "learned", "rescore": "online"}}
    means: dict[str, list[np.ndarray]] = {m: [] for m in modes}  # per repeat: [wall, cpu]
    for _ in range(repeats):  # interleave modes so drift hits them alike
        for name, extra in modes.items():
            ends: list[tuple[float, float]] = []  # (wall clock, CPU time of the process: all threads)
            with tempfile.TemporaryDirectory() as tmp:
                train(TrainConfig(manifest=manifest, out=f"{tmp}/run", epochs=epochs, epoch_artifacts=False,
                                  quiet=True, **model, **extra),
                      Callbacks(on_epoch_end=lambda row: ends.append(now())))
            # whole epochs, end to end; epoch 0 (warm-up of allocator and caches) is not timed. The
            # mean is the run's time per epoch: bss train saves its folder at most once a second by
            # default (--save-every), so on short epochs the saves land on some epochs only
            means[name].append(np.diff(np.array(ends), axis=0).mean(0))
    out = {"epochs_per_run": epochs - 1, "repeats": repeats}
    for name, m in means.items():  # ratios within a repeat (paired), median and range over repeats
        out[name] = {"mean_epoch_seconds": float(np.median(np.array(m)[:, 0])),
                     **{f"{clock}_ratio_to_none": r for clock, r in paired_ratios(m, means["none"]).items()}}
    return out


def run(epochs: int = 6, repeats: int = 3) -> dict:
    out = {"mfeat, MLP encoders hidden 512 x 3 layers, 6 modalities, batch 32":
           _ratios(str(ROOT / "sample_data" / "mfeat.parquet"), epochs, repeats, hidden=512, layers=3)}
    htad = ROOT / "sample_data" / "htad.parquet"
    if htad.exists():
        out["HTAD, bss train defaults (width 64)"] = _ratios(str(htad), 4 * epochs, 3 * repeats)
    return out


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))

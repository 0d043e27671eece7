"""Per-epoch cost of the learned scheduler's re-scoring against plain shuffled training.

Same data, model, seed and run; ``none`` is the baseline measured in the same process. Epoch
time = training pass + re-scoring (the validation pass is the same for every mode and left out).
The model is widened until compute dominates (mfeat, 6 modalities, hidden 512, 3 layers).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def run(epochs: int = 6, hidden: int = 512, layers: int = 3, repeats: int = 2) -> dict:
    import torch

    from bss_cli.training.config import TrainConfig
    from bss_cli.training.trainer import train

    torch.set_num_threads(max(1, torch.get_num_threads()))
    modes = {"none": {"scheduler": "none"}, "learned/pass": {"scheduler": "learned", "rescore": "pass"},
             "learned/online": {"scheduler": "learned", "rescore": "online"}}
    times: dict[str, list[float]] = {m: [] for m in modes}
    for _ in range(repeats):  # interleave modes so drift hits them alike
        for name, extra in modes.items():
            with tempfile.TemporaryDirectory() as tmp:
                r = train(TrainConfig(manifest=str(ROOT / "sample_data" / "mfeat.parquet"), out=f"{tmp}/run",
                                      epochs=epochs, hidden=hidden, layers=layers, epoch_artifacts=False,
                                      quiet=True, **extra))
            # skip epoch 0 (warm-up of allocator and caches); epoch time = train + re-score
            times[name] += [h["train_seconds"] + h["score_seconds"] + h["plan_seconds"] for h in r.history[1:-1]]
    base = float(np.median(times["none"]))
    return {"model": f"mfeat, MLP encoders hidden {hidden} x {layers} layers, 6 modalities, batch 32",
            "epochs_timed": len(times["none"]),
            **{name: {"median_epoch_seconds": float(np.median(t)), "ratio_to_none": float(np.median(t)) / base}
               for name, t in times.items()}}


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))

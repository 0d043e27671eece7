"""What experiment trackers (``bss train --log``) add to a ``none`` epoch at HTAD defaults.

Per repeat, the same run (``--scheduler none``, the default model and batch size, 40 epochs) is
trained without trackers, once more without (the noise floor: two identical runs), and with each
tracker, back to back; each ratio is of mean epoch time (epochs after the first) over the untracked
run of the same repeat, median and range over repeats, for the wall clock and the process's CPU
time (all threads: the tracker thread's work included). The trackers' start (a W&B offline run,
an MLflow run) happens before the first epoch and is reported apart.

A run without ``--log`` constructs no tracker and imports no tracker module (tests/test_tracking.py
checks that), so the only cost it carries is one ``is None`` test per epoch.
"""

from __future__ import annotations

import importlib.util
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from common import now, paired_ratios

ROOT = Path(__file__).resolve().parents[1]
LIBRARY = {"tensorboard": "tensorboard", "mlflow": "mlflow", "wandb": "wandb", "csv": None}


def one_run(manifest: Path, epochs: int, log: list[str] | None) -> tuple[np.ndarray, float]:
    from bss_cli.training.config import TrainConfig
    from bss_cli.training.trainer import Callbacks, train

    stamps, started = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        train(TrainConfig(manifest=str(manifest), out=f"{tmp}/run", epochs=epochs, scheduler="none", quiet=True,
                          log=log),
              Callbacks(on_epoch_start=lambda e, n: started.setdefault("t", time.perf_counter()),
                        on_epoch_end=lambda row: stamps.append(now())))
        start_seconds = started["t"] - t0
    return np.diff(np.array(stamps), axis=0).mean(0), start_seconds


def isolated_cost(manifest: Path, epochs: int, trackers: list[str], repeats: int = 5) -> dict:
    """CPU seconds each tracker spends per epoch (process time, every thread: the tracker thread's
    included; a W&B run's own service process is not), replaying a real run's metrics rows through
    the same code path the trainer uses, start and close excluded; as a fraction of the untracked
    epoch. The end-to-end ratios above carry this VM's noise (a few %); this does not."""
    import pyarrow.parquet as pq

    from bss_cli.tracking import Target, Tracking, epoch_values
    from bss_cli.training.config import TrainConfig
    from bss_cli.training.trainer import train

    with tempfile.TemporaryDirectory() as tmp:
        train(TrainConfig(manifest=str(manifest), out=f"{tmp}/run", epochs=epochs, scheduler="none", quiet=True))
        rows = pq.read_table(f"{tmp}/run/metrics.parquet").to_pylist()
        timings = pq.read_table(f"{tmp}/run/timings.parquet").to_pylist()
    epoch_cpu = float(np.median([sum(t[k] for k in ("plan_seconds", "train_seconds", "score_seconds",
                                                     "eval_seconds")) for t in timings[1:]]))
    def replay(name: str, n_rows: list) -> float:
        with tempfile.TemporaryDirectory() as tmp:
            tracking = Tracking([name], Target(Path(tmp)), {"scheduler": "none"}, Path(tmp))
            t0 = time.process_time()
            for r in n_rows:
                tracking.scalars(epoch_values(r, rows[0]["subset_size"]), r["epoch"])
            tracking.close()  # waits for the tracker thread to write everything, then closes
            return time.process_time() - t0

    many = [dict(r, epoch=i) for i, r in enumerate(rows * 10)]  # 240 epochs: the close is a small share
    out = {}
    for name in trackers:
        costs = [(replay(name, many) - replay(name, [])) / len(many) for _ in range(repeats)]
        out[name] = {"cpu_ms_per_epoch": 1e3 * float(np.median(costs)),
                     "fraction_of_none_epoch": float(np.median(costs)) / epoch_cpu}
    return {"none_epoch_seconds": epoch_cpu, "per_tracker": out}


def run(epochs: int = 40, repeats: int = 8) -> dict:
    os.environ.setdefault("WANDB_MODE", "offline")
    manifest = ROOT / "sample_data" / "htad.parquet"
    trackers = [n for n, lib in LIBRARY.items() if lib is None or importlib.util.find_spec(lib)]
    modes = {"none (again)": None, **{n: [n] for n in trackers}}
    if len(trackers) > 1:
        modes["all: " + ",".join(trackers)] = trackers
    means = {m: [] for m in ("none", *modes)}
    starts = {m: [] for m in ("none", *modes)}
    one_run(manifest, 2, trackers)  # imports and first-use costs out of the way
    for _ in range(repeats):
        for mode, log in {"none": None, **modes}.items():
            mean, start = one_run(manifest, epochs, log)
            means[mode].append(mean)
            starts[mode].append(start)
    return {"data": "htad", "scheduler": "none", "epochs_per_run": epochs, "repeats": repeats,
            "trackers_installed": trackers,
            "none_epoch_seconds": float(np.median(np.array(means["none"])[:, 0])),
            "over_none": {m: paired_ratios(means[m], means["none"]) for m in modes},
            "start_seconds_median": {m: float(np.median(starts[m])) for m in ("none", *modes)},
            "isolated": isolated_cost(manifest, epochs, trackers)}


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))

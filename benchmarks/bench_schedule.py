"""Ordering generation against a plain argsort, and schedule-file writing (size, memory).

Baseline: ``np.argsort`` of N random float64 keys, measured in the same run. The goal is that
one epoch's ordering costs within 1.5x of that sort. Memory: peak RSS of a child process that
writes E epochs of N samples, for two values of E; bounded by one epoch means it does not grow
with E.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from common import best_of, peak_rss_mib  # noqa: E402

from bss_cli.scheduling.schedulers import ScheduleConfig, make_scheduler  # noqa: E402


def orderings(n: int, repeat: int = 3) -> dict:
    rng = np.random.default_rng(0)
    keys = rng.random(n)
    balance = rng.uniform(-1, 1, n)
    base = best_of(lambda: np.argsort(keys), repeat)
    out = {"n": n, "argsort_seconds": base}
    for name, cfg in {
        "learned": ScheduleConfig(scheduler="learned"),
        "curriculum (full epoch, shuffled)": ScheduleConfig(scheduler="curriculum", t_grow=1),
        "random": ScheduleConfig(scheduler="random"),
    }.items():
        sched = make_scheduler(balance, cfg)
        t = best_of(lambda: sched.epoch(1), repeat)
        out[name] = {"seconds": t, "ratio_to_argsort": t / base}
    return out


def _write_child(n: int, epochs: int, path: str) -> None:
    """Child process: write a learned schedule of n samples x epochs, print peak RSS and time."""
    import time

    import pyarrow as pa

    from bss_cli.scheduling.schedule_io import ScheduleJob, write_schedule
    from bss_cli.scoring.scores import Scores

    rng = np.random.default_rng(0)
    table = pa.table({"sample_id": pa.array(np.arange(n, dtype=np.int64)), "row": pa.array(np.arange(n, dtype=np.int64)),
                      "balance": pa.array(rng.uniform(-1, 1, n))})
    scores = Scores(table, {"bss.kind": "scores"})
    before = peak_rss_mib()
    t0 = time.perf_counter()
    write_schedule(ScheduleJob(scores, ScheduleConfig(scheduler="learned"), list(range(epochs))), path)
    print(json.dumps({"seconds": time.perf_counter() - t0, "peak_rss_mib": peak_rss_mib(),
                      "rss_before_mib": before, "bytes": os.path.getsize(path)}))


def writing(n: int, epochs: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "schedule.parquet")
        proc = subprocess.run([sys.executable, __file__, "--write-child", str(n), str(epochs), path],
                              capture_output=True, text=True, check=True)
        res = json.loads(proc.stdout)
    res.update(n=n, epochs=epochs, bytes_per_row=res["bytes"] / (n * epochs))
    return res


def run(sizes=(1_000_000, 10_000_000)) -> dict:
    return {"orderings": [orderings(n) for n in sizes],
            "writing": [writing(1_000_000, 2), writing(1_000_000, 8)]}


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--write-child":
        _write_child(int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
    else:
        print(json.dumps(run(), indent=2))

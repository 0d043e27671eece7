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


def command(n: int) -> dict:
    """``bss schedule`` (read scores, draw one learned epoch, write it) against a bare pipeline of
    the same work: read_table of the three needed columns + argsort + write_table of six columns."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from bss_cli.artifacts import base_metadata
    from bss_cli.scoring.scores import Scores, write_scores

    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        cols = {"sample_id": pa.array(np.arange(n, dtype=np.int64)), "row": pa.array(np.arange(n, dtype=np.int64)),
                "label": pa.array(rng.integers(0, 10, n)), "split": pa.array(np.full(n, "train"))}
        for c in ("pred_sim", "loss", "pred_sim_norm", "loss_norm", "balance", "loss_a", "p_true_a", "loss_b",
                  "p_true_b"):
            cols[c] = pa.array(rng.uniform(-1, 1, n))
        scores_path = os.path.join(tmp, "scores.parquet")
        write_scores(Scores(pa.table(cols), base_metadata("scores")), scores_path)
        out = os.path.join(tmp, "s.parquet")

        def bare():
            t = pq.read_table(scores_path, columns=["sample_id", "row", "balance"])
            idx = np.argsort(rng.random(n))
            pq.write_table(pa.table({"epoch": pa.array(np.zeros(n, np.int32)), "position": pa.array(np.arange(n)),
                                     "sample_id": t["sample_id"].take(idx), "row": t["row"].take(idx),
                                     "probability": pa.array(np.full(n, 1.0 / n)),
                                     "balance": t["balance"].take(idx)}), out, compression="zstd")

        def cli():
            subprocess.run([sys.executable, "-m", "bss_cli", "schedule", scores_path, "-o", out, "--scheduler",
                            "learned", "--epochs", "1", "--force", "--quiet"], check=True)

        def startup():
            subprocess.run([sys.executable, "-m", "bss_cli", "--version"], check=True, capture_output=True)

        base, whole, start = best_of(bare, 2), best_of(cli, 2), best_of(startup, 2)
    return {"n": n, "bare_pipeline_seconds": base, "bss_schedule_seconds": whole, "cli_startup_seconds": start,
            "ratio_to_bare": whole / base, "ratio_to_bare_without_startup": (whole - start) / base}


def sampler(n: int = 10_000_000, batch: int = 256) -> dict:
    """Per-sample cost of handing out an epoch: the batch sampler and the per-int sampler against a
    bare loop of numpy slices turned into lists (what a DataLoader needs), same order."""
    import pyarrow as pa

    from bss_cli.scheduling.sampler import ScheduleSampler

    rng = np.random.default_rng(0)
    order = rng.permutation(n)
    table = pa.table({"epoch": pa.array(np.zeros(n, np.int32)), "position": pa.array(np.arange(n)),
                      "sample_id": pa.array(order), "row": pa.array(order)})
    s = ScheduleSampler(table, rows=True)
    s.order()  # the epoch is read once; time the handing out

    def bare():
        for i in range(0, n, batch):
            order[i:i + batch].tolist()

    base = best_of(bare, 2)
    batched = best_of(lambda: sum(1 for _ in s.batches(batch)), 2)
    single = best_of(lambda: sum(1 for _ in s), 1)
    return {"n": n, "batch": batch, "bare_slices_ns_per_sample": base / n * 1e9,
            "batch_sampler_ns_per_sample": batched / n * 1e9, "batch_ratio": batched / base,
            "int_sampler_ns_per_sample": single / n * 1e9, "int_ratio": single / base}


def run(sizes=(1_000_000, 10_000_000)) -> dict:
    return {"orderings": [orderings(n) for n in sizes],
            "writing": [writing(1_000_000, 2), writing(1_000_000, 8)],
            "command": command(10_000_000), "sampler": sampler()}


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--write-child":
        _write_child(int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
    else:
        print(json.dumps(run(), indent=2))

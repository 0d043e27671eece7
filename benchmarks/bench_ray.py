"""The Ray Data engine against one machine: rows/s and peak memory per worker.

A predictions set (string ids, 10 classes, two modalities + fused logits as float32 lists, 8
partitions) is scored, then one learned epoch is drawn from the scores:

* one machine: ``score_set_local`` + write, and ``bss schedule`` 's path for one epoch;
* Ray with 1 and 2 local workers (``ray.init(num_cpus=k)``): the same two stages on the engine.

Each configuration runs in a fresh process. Memory: the driver's peak RSS (VmHWM), and each Ray
worker process's peak private memory (RssAnon, sampled every 50 ms; the largest is reported). A
worker's peak RSS is reported too, but it counts the object store's shared pages the worker has
mapped, which over a job add up to the whole data set on one machine: it is not what the worker
holds. Baseline for time: ``pyarrow.parquet.read_table``
of the same folder in its own process. Needs the ``bss[ray]`` extra.

    python benchmarks/bench_ray.py 1e6      # one size
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

HERE = Path(__file__).parent
ROOT = HERE.parent
PARTS = 8

CHILD = r"""
import json, os, sys, time, shutil
sys.path.insert(0, {here!r}); sys.path.insert(0, {root!r})
from common import peak_rss_mib
mode, tmp = sys.argv[1], sys.argv[2]
out = {{}}
if mode == "read":
    import pyarrow.parquet as pq
    before = peak_rss_mib(); t0 = time.perf_counter()
    n = pq.read_table(tmp + "/set").num_rows
    out = {{"seconds": time.perf_counter() - t0, "rows": n}}
elif mode == "local":
    from bss_cli.scheduling.schedule_io import ScheduleJob, write_schedule
    from bss_cli.scheduling.schedulers import ScheduleConfig
    from bss_cli.scoring.scores import SCHEDULE_COLUMNS, read_scores, write_scores
    from bss_cli.scoring.sets import score_set_local
    before = peak_rss_mib(); t0 = time.perf_counter()
    s = score_set_local(tmp + "/set", criterion="prediction-sim+loss")
    write_scores(s, tmp + "/scores.parquet"); n = len(s); del s
    t1 = time.perf_counter()
    write_schedule(ScheduleJob(read_scores(tmp + "/scores.parquet", SCHEDULE_COLUMNS), ScheduleConfig(), [0]),
                   tmp + "/sched.parquet")
    out = {{"score_seconds": t1 - t0, "schedule_seconds": time.perf_counter() - t1, "rows": n}}
else:
    import ray
    from bss_cli.engines import ray_data
    from bss_cli.scheduling.schedulers import ScheduleConfig
    from bss_cli.scoring.criteria import LossWeights
    import threading
    from pathlib import Path
    workers = int(mode)
    anon = {{}}  # worker pid -> peak private memory (RssAnon, MiB), sampled every 50 ms
    stop = threading.Event()

    def watch():
        while not stop.is_set():
            for proc in Path("/proc").iterdir():
                try:
                    if not proc.name.isdigit() or not (proc / "cmdline").read_bytes().startswith(b"ray::"):
                        continue
                    for line in (proc / "status").read_text().splitlines():
                        if line.startswith("RssAnon:"):
                            anon[int(proc.name)] = max(anon.get(int(proc.name), 0), int(line.split()[1]) / 1024)
                except OSError:
                    pass
            stop.wait(0.05)

    threading.Thread(target=watch, daemon=True).start()
    ray.init(address="local", num_cpus=workers, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    ray_data.connect()
    before = peak_rss_mib(); t0 = time.perf_counter()
    r = ray_data.score(tmp + "/set", tmp + "/scores_ray", criterion="prediction-sim+loss", weights=LossWeights(),
                       split="train", alpha=0.5)
    t1 = time.perf_counter()
    ray_data.schedule(tmp + "/scores_ray", tmp + "/sched_ray", ScheduleConfig(), [0])
    t2 = time.perf_counter()

    @ray.remote
    def peak():  # on a worker: its own peak (VmHWM), read here (the benchmarks folder is not on its path)
        time.sleep(0.2)
        with open("/proc/self/status") as f:
            hwm = [int(line.split()[1]) / 1024 for line in f if line.startswith("VmHWM:")]
        return os.getpid(), hwm[0]

    peaks = dict(ray.get([peak.remote() for _ in range(8 * workers)]))
    stop.set()
    out = {{"score_seconds": t1 - t0, "schedule_seconds": t2 - t1, "rows": r["rows"], "worker_processes": len(peaks),
           "worker_peak_rss_mib": max(peaks.values()),
           "worker_peak_private_mib": max(anon.get(pid, 0) for pid in peaks),
           "any_ray_process_peak_private_mib": max(anon.values())}}
    ray.shutdown()
    shutil.rmtree(tmp + "/scores_ray"); shutil.rmtree(tmp + "/sched_ray")
out.update({{"driver_peak_mib": peak_rss_mib(), "driver_before_mib": before}})
print(json.dumps(out))
"""


def _child(mode: str, tmp: Path) -> dict:
    code = CHILD.format(here=str(HERE), root=str(ROOT))
    # the read and one machine in the user's environment (OMP_NUM_THREADS=1 would cut pyarrow's
    # thread pool to one thread: the figures in docs/scale.md were made so, and their read was slow)
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("RAY_ADDRESS", None)
    r = subprocess.run([sys.executable, "-c", code, mode, str(tmp)], capture_output=True, text=True, env=env)
    if r.returncode:
        raise RuntimeError(f"bench_ray {mode}: {r.stderr[-2000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def _write_set(folder: Path, n: int, classes: int, seed: int) -> None:
    folder.mkdir()
    rng = np.random.default_rng(seed)
    edges = np.linspace(0, n, PARTS + 1).astype(int)
    for k in range(PARTS):
        a, b = edges[k], edges[k + 1]
        cols = {"sample_id": pa.array([f"clip-{i:010d}" for i in range(a, b)]),
                "label": pa.array(rng.integers(0, classes, b - a))}
        for head in ("audio", "video", "fused"):
            z = rng.normal(size=(b - a) * classes).astype(np.float32)
            cols[f"logits_{head}"] = pa.FixedSizeListArray.from_arrays(pa.array(z), classes).cast(
                pa.list_(pa.float32()))
        pq.write_table(pa.table(cols), folder / f"part-{k:05d}.parquet", row_group_size=1 << 18)


def measure(n: int, classes: int = 10, seed: int = 0) -> dict:
    with tempfile.TemporaryDirectory(prefix="bss-bench-ray-") as d:
        tmp = Path(d)
        _write_set(tmp / "set", n, classes, seed)
        read = _child("read", tmp)
        one = _child("local", tmp)
        out = {"rows": n, "read_seconds": read["seconds"], "one_machine": one}
        for workers in (1, 2):
            r = _child(str(workers), tmp)
            r["score_rows_per_s"] = n / r["score_seconds"]
            r["score_vs_one_machine"] = r["score_seconds"] / one["score_seconds"]
            r["schedule_vs_one_machine"] = r["schedule_seconds"] / one["schedule_seconds"]
            out[f"ray_{workers}_workers"] = r
        one["score_rows_per_s"] = n / one["score_seconds"]
        one["score_vs_read"] = one["score_seconds"] / read["seconds"]
        return out


def run(sizes=(1_000_000, 10_000_000)) -> dict:
    return {"name": "score + one learned epoch: one machine vs Ray Data (local, 1 and 2 workers)",
            "sizes": [measure(n) for n in sizes]}


if __name__ == "__main__":
    sizes = [int(float(a)) for a in sys.argv[1:]] or [1_000_000, 10_000_000]
    print(json.dumps(run(sizes), indent=2))

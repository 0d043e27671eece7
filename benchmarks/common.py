"""Timing helpers shared by the benchmarks: best-of-k wall time, paired ratios, peak RSS."""

from __future__ import annotations

import resource
import time

import numpy as np


def best_of(fn, repeat: int = 3) -> float:
    """Best wall time of ``repeat`` calls (seconds); the minimum is the least noisy estimate."""
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def peak_rss_mib() -> float:
    """Peak resident memory of this process (VmHWM; unlike ru_maxrss it is not inherited across exec)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def now() -> tuple[float, float]:
    """(wall clock, CPU time of the whole process: every thread, a file writer's included)."""
    return time.perf_counter(), time.process_time()


def paired_ratios(values: list, base: list) -> dict:
    """Per-repeat [wall, cpu] means of a variant over those of its baseline from the same repeat
    (paired, so the machine's slow drift cancels): median and range over repeats, per clock."""
    r = np.array(values) / np.array(base)
    return {clock: {"median": float(np.median(r[:, i])), "min": float(r[:, i].min()), "max": float(r[:, i].max())}
            for i, clock in enumerate(("wall", "cpu"))}

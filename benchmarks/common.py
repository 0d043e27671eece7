"""Timing helpers shared by the benchmarks: best-of-k wall time and peak RSS."""

from __future__ import annotations

import resource
import time


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

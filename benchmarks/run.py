"""Run every benchmark; print a summary and write benchmarks/results.json.

    make bench                         # all
    python benchmarks/run.py schedule  # some, by name
"""

from __future__ import annotations

import json
import platform
import sys
import time
from pathlib import Path

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))

BENCHMARKS = {
    "score": ("bench_score", "run"),
    "schedule": ("bench_schedule", "run"),
    "overhead": ("bench_overhead", "run"),
    "trainer": ("bench_trainer", "run"),
    "media": ("bench_media", "run"),
    "logging": ("bench_logging", "run"),
    "ray": ("bench_ray", "run"),  # needs the bss[ray] extra
}


def machine() -> dict:
    import os

    return {"python": platform.python_version(), "cpus": os.cpu_count(), "machine": platform.machine(),
            "processor": platform.processor() or platform.machine()}


def main(names: list[str]) -> None:
    import importlib

    names = names or list(BENCHMARKS)
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        sys.exit(f"unknown benchmark(s) {unknown}; choose from {list(BENCHMARKS)}")
    results = {"machine": machine(), "when": time.strftime("%Y-%m-%d %H:%M:%S")}
    for name in names:
        module, fn = BENCHMARKS[name]
        print(f"== {name}", flush=True)
        results[name] = getattr(importlib.import_module(module), fn)()
        print(json.dumps(results[name], indent=2), flush=True)
    out = HERE / "results.json"
    old = json.loads(out.read_text()) if out.exists() else {}
    old.update(results)
    out.write_text(json.dumps(old, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main(sys.argv[1:])

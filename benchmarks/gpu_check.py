"""The GPU check: one call, under 8 minutes on one H100/H200, writing benchmarks/results-gpu.json.

    make gpu-check                                   # on a GPU machine
    python benchmarks/gpu_check.py --device cpu --tiny --out /tmp/gpu.json   # dry run anywhere

1. The CUDA tests (``pytest -m cuda``: training with bf16 autocast, exact resume, scoring on the GPU).
2. ``bss train`` on CREMA-D-shaped synthetic audio-visual data (3 s 22,050 Hz WAV -> 257x188
   spectrogram, one 224 px frame; two ResNet-18 from scratch, bf16), in the CREMA-D folder layout
   through ``bss build-manifest``: samples/s and GPU utilisation (nvidia-smi, sampled every 0.2 s)
   for DataLoader workers 0 and N, with and without the spectrogram cache.
3. The learned scheduler's re-scoring overhead: a ``--rescore pass`` epoch and an ``online`` epoch
   against a ``none`` epoch, same data and model, same run of this script.
4. One of the paper's other settings: Twitter2015-shaped image + text (``bss build-manifest
   twitter2015`` on generated files in its layout; ResNet-50 image encoder, the built-in text
   encoder, the learned scheduler, batch 32): samples/s and GPU utilisation.

Every figure is from this run; ratios are against a baseline measured here too.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))


class GpuSampler:
    """GPU utilisation (%) and memory (MiB) sampled by nvidia-smi in a thread; nothing without it."""

    def __init__(self, period: float = 0.2):
        self.period, self.samples, self._stop = period, [], threading.Event()
        self.available = shutil.which("nvidia-smi") is not None

    def __enter__(self):
        if self.available:
            self.thread = threading.Thread(target=self._run, daemon=True)
            self.thread.start()
        return self

    def _run(self):
        while not self._stop.is_set():
            out = subprocess.run(["nvidia-smi", "--query-gpu=utilization.gpu,memory.used",
                                  "--format=csv,noheader,nounits"], capture_output=True, text=True)
            if out.returncode == 0 and out.stdout.strip():
                util, mem = out.stdout.splitlines()[0].split(",")
                self.samples.append((float(util), float(mem)))
            time.sleep(self.period)

    def __exit__(self, *exc):
        self._stop.set()
        if self.available:
            self.thread.join(timeout=5)

    def summary(self) -> dict:
        if not self.samples:
            return {"gpu_util_mean": None, "gpu_util_max": None, "gpu_mem_max_mib": None}
        util = [u for u, _ in self.samples]
        return {"gpu_util_mean": round(sum(util) / len(util), 1), "gpu_util_max": max(util),
                "gpu_mem_max_mib": max(m for _, m in self.samples)}


def bss(*args, timeout: int = 600) -> subprocess.CompletedProcess:
    r = subprocess.run([sys.executable, "-m", "bss_cli", *map(str, args)], capture_output=True, text=True,
                       timeout=timeout, cwd=ROOT)
    if r.returncode != 0:
        raise SystemExit(f"bss {' '.join(map(str, args))} failed:\n{r.stderr[-3000:]}")
    return r


def train_run(manifest: Path, out: Path, device: str, settings: dict, extra: list[str]) -> dict:
    """One ``bss train`` run; figures of its middle epochs (warm caches and kernels; still re-scoring)."""
    # audio and image columns take the ResNet-18 encoders by their kind
    args = ["train", manifest, "--out", out, "--device", device, "--quiet", "--json", "--no-epoch-artifacts"]
    for k, v in settings.items():
        args += [f"--{k.replace('_', '-')}", v]
    with GpuSampler() as gpu:
        t0 = time.perf_counter()
        bss(*args, *extra)
        wall = time.perf_counter() - t0
    import pyarrow.parquet as pq

    timings = pq.read_table(out / "timings.parquet").to_pylist()
    later = timings[1:-1] or timings  # not the first (warm-up) nor the last (the learned rule re-scores no more)
    per_epoch = {k: sum(r[k] for r in later) / len(later) for k in ("train_seconds", "score_seconds",
                                                                      "plan_seconds", "eval_seconds")}
    return {"samples_per_s": round(sum(r["samples_per_s"] for r in later) / len(later), 1),
            "epoch_seconds": round(sum(per_epoch.values()), 3), **{k: round(v, 3) for k, v in per_epoch.items()},
            "wall_seconds": round(wall, 1), **gpu.summary()}


def make_twitter(root: Path, n: int, size: int) -> None:
    """A Twitter2015-layout folder of ``n`` generated tweets and images (3 sentiment classes)."""
    import numpy as np
    from PIL import Image

    words = {0: "awful terrible sad angry", 1: "meeting today at noon", 2: "great happy wonderful win"}
    rng = np.random.default_rng(0)
    (root / "twitter2015_images").mkdir(parents=True, exist_ok=True)
    for split, count in (("train", int(n * 0.7)), ("dev", int(n * 0.15)), ("test", n - int(n * 0.7) - int(n * 0.15))):
        lines = ["index\t#1 Label\t#2 ImageID\t#3 String\t#3 String"]
        for i in range(count):
            k = i % 3
            image = f"{split}{i}.jpg"
            pixels = (rng.random((size, size, 3)) * 80 + 60 * k).astype("uint8")
            Image.fromarray(pixels).save(root / "twitter2015_images" / image)
            lines.append(f"{i}\t{k}\t{image}\tRT @x: {words[k]} {rng.integers(1000)}\t$T$")
        (root / f"{split}.tsv").write_text("\n".join(lines) + "\n")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--tiny", action="store_true", help="a few clips, small images: checks the script runs")
    ap.add_argument("--clips", type=int, default=1200)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--workers", type=int, default=8)
    ap.add_argument("--out", default=str(HERE / "results-gpu.json"))
    args = ap.parse_args(argv)
    import torch
    from bench_media import _make

    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA device visible; run with --device cpu --tiny for a dry run")
    clips = 48 if args.tiny else args.clips
    epochs = 3 if args.tiny else max(3, args.epochs)
    workers = 2 if args.tiny else args.workers
    results = {"machine": {"python": platform.python_version(), "torch": torch.__version__, "device": args.device,
                           "gpu": torch.cuda.get_device_name(0) if args.device == "cuda" else None,
                           "cpus": os.cpu_count()},
               "when": time.strftime("%Y-%m-%d %H:%M:%S"), "tiny": args.tiny, "clips": clips, "epochs": epochs}
    t0 = time.perf_counter()
    tests = subprocess.run([sys.executable, "-m", "pytest", "-m", "cuda", "-q", "-p", "no:cacheprovider",
                            str(ROOT / "tests")], capture_output=True, text=True, cwd=ROOT, timeout=240)
    results["cuda_tests"] = {"exit_code": tests.returncode, "seconds": round(time.perf_counter() - t0, 1),
                             "last_line": (tests.stdout.strip().splitlines() or [""])[-1]}
    print("cuda tests:", results["cuda_tests"], flush=True)
    work = Path(tempfile.mkdtemp(prefix="bss-gpu-"))
    try:
        _make(work / "CREMA-D", clips)
        media = ["--image-size", "32", "--seconds", "0.5"] if args.tiny else []
        bss("build-manifest", "crema-d", work / "CREMA-D", "-o", work / "m.parquet", *media)
        base = {"epochs": epochs, "batch_size": 8 if args.tiny else 64, "hidden": 8 if args.tiny else 64,
                "lr": 0.01, "seed": 0}
        runs = {}
        for name, settings, extra in [
            ("none_w0_nocache", {"scheduler": "none", "workers": 0}, []),
            (f"none_w{workers}_nocache", {"scheduler": "none", "workers": workers}, []),
            (f"none_w{workers}_cache", {"scheduler": "none", "workers": workers}, ["--cache-dir", work / "cache"]),
            ("learned_pass", {"scheduler": "learned", "workers": workers}, ["--cache-dir", work / "cache"]),
            ("learned_online", {"scheduler": "learned", "rescore": "online", "workers": workers},
             ["--cache-dir", work / "cache"]),
        ]:
            runs[name] = train_run(work / "m.parquet", work / name, args.device, {**base, **settings}, extra)
            print(name, runs[name], flush=True)
        results["train"] = runs
        cached = runs[f"none_w{workers}_cache"]["epoch_seconds"]
        results["rescoring_overhead"] = {
            "pass_over_none": round(runs["learned_pass"]["epoch_seconds"] / cached, 3),
            "online_over_none": round(runs["learned_online"]["epoch_seconds"] / cached, 3),
            "baseline": f"none_w{workers}_cache epoch (train + eval), same run"}
        results["workers_speedup"] = round(runs[f"none_w{workers}_nocache"]["samples_per_s"]
                                           / runs["none_w0_nocache"]["samples_per_s"], 2)
        results["cache_speedup"] = round(runs[f"none_w{workers}_cache"]["samples_per_s"]
                                         / runs[f"none_w{workers}_nocache"]["samples_per_s"], 2)
        size = 32 if args.tiny else 224
        make_twitter(work / "twitter2015", clips, size)
        bss("build-manifest", "twitter2015", work / "twitter2015", "-o", work / "tw.parquet", "--image-size", size)
        results["twitter2015_resnet50"] = train_run(
            work / "tw.parquet", work / "tw", args.device,
            {"epochs": epochs, "batch_size": 8 if args.tiny else 32, "hidden": 8 if args.tiny else 64, "lr": 0.001,
             "seed": 0, "scheduler": "learned", "workers": workers, "image_encoder": "resnet50"}, [])
        print("twitter2015_resnet50", results["twitter2015_resnet50"], flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    results["seconds"] = round(time.perf_counter() - t0, 1)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out} in {results['seconds']} s")


if __name__ == "__main__":
    main()

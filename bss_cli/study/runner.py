"""``bss study``: variants x paired seeds of ``bss train``, resumable and several at once.

    STUDY/study.json                 the design: manifest, base settings, variants, seeds, baseline
    STUDY/runs/<variant>/seed=<s>/   one bss train run folder per (variant, seed)
    STUDY/runs/<variant>/seed=<s>.json   that run's settings (what bss train --config reads)
    STUDY/study.parquet              one row per finished run (kind 'study')
    STUDY/summary.json               per variant: mean, sd, paired difference to the baseline, ...

A run whose ``summary.json`` exists is done and skipped; one with a ``settings.json`` but no
summary was interrupted and resumes (``--resume``); so a killed study re-run with the same design
continues where it stopped. Each run is a ``bss train`` process of its own (``--jobs`` at once;
on a machine with several GPUs, one per GPU).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Callable

import pyarrow as pa

from bss_cli import schema as S
from bss_cli.artifacts import base_metadata, write_table
from bss_cli.errors import BSSError, ConfigError
from bss_cli.study import stats
from bss_cli.training import runs
from bss_cli.training.config import TrainConfig

DESIGN = "study.json"
TABLE = "study.parquet"
SUMMARY = "summary.json"
RUNS = "runs"
FREE = ("quiet", "resume", "out", "manifest")  # set by the study itself


@dataclass
class StudyDesign:
    manifest: str
    variants: dict[str, dict]  # name -> bss train settings on top of ``base``
    seeds: list[int]
    base: dict = field(default_factory=dict)
    baseline: str | None = None

    def __post_init__(self):
        if not self.variants:
            raise ConfigError("a study needs at least one variant (--schedulers or --variants)")
        self.baseline = self.baseline or next(iter(self.variants))
        if self.baseline not in self.variants:
            raise ConfigError(f"--baseline {self.baseline!r} is not a variant; variants: {', '.join(self.variants)}")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ConfigError(f"seeds {self.seeds}: expected distinct seeds (--seeds N for 0..N-1)")
        known = {f.name for f in fields(TrainConfig)} - set(FREE) - {"seed"}
        for name, settings in {"base": self.base, **self.variants}.items():
            unknown = sorted(set(settings) - known)
            if unknown:
                raise ConfigError(f"variant {name!r}: unknown setting(s) {', '.join(unknown)}; settings are the "
                                  "flags of bss train (without --out, --seed, --resume)")

    def settings(self, variant: str, seed: int) -> dict:
        return {"manifest": self.manifest, **self.base, **self.variants[variant], "seed": seed}

    def to_dict(self) -> dict:
        return {"manifest": self.manifest, "variants": self.variants, "seeds": self.seeds, "base": self.base,
                "baseline": self.baseline}

    def validate(self) -> None:
        """Every run's settings pass bss train's checks before anything is created."""
        for v in self.variants:
            TrainConfig(out="study", **self.settings(v, self.seeds[0])).validate(
                lambda name, v=v: f"variant {v!r}: {name} =")


@dataclass
class RunRecord:
    variant: str
    seed: int
    folder: Path
    state: str  # done | resume | new


def plan(study: Path, design: StudyDesign) -> list[RunRecord]:
    out = []
    for v in design.variants:
        for s in design.seeds:
            folder = study / RUNS / v / f"seed={s}"
            state = "done" if (folder / runs.SUMMARY).exists() else (
                "resume" if (folder / runs.SETTINGS).exists() else "new")
            out.append(RunRecord(v, s, folder, state))
    return out


def _check_design(study: Path, design: StudyDesign) -> None:
    path = study / DESIGN
    if path.exists():
        saved = json.loads(path.read_text())
        if saved != json.loads(json.dumps(design.to_dict())):
            raise ConfigError(f"{study} holds a study of another design ({path}); continue it with the same "
                              "manifest, variants, settings and seeds, or choose another --out")
    elif study.exists() and any(study.iterdir()):
        raise ConfigError(f"--out {study}: the folder exists and is not a bss study; choose another --out")


def run_study(study: str | Path, design: StudyDesign, jobs: int = 1, device: str = "auto",
              on_run: Callable[[RunRecord, str], None] | None = None) -> dict:
    """Run (or continue) the study; return its summary. ``on_run(record, outcome)`` after each run."""
    study = Path(study)
    if jobs < 1:
        raise ConfigError(f"--jobs {jobs}: expected an integer >= 1")
    design.validate()
    _check_design(study, design)
    study.mkdir(parents=True, exist_ok=True)
    runs.write_json(study / DESIGN, design.to_dict())
    todo = [r for r in plan(study, design) if r.state != "done"]
    gpus = _gpus() if device != "cpu" else 0
    slots = list(range(jobs))
    lock = threading.Lock()
    failures: list[str] = []

    def one(record: RunRecord) -> None:
        with lock:
            slot = slots.pop()
        try:
            outcome = _train(record, design, slot, gpus, device)
        finally:
            with lock:
                slots.append(slot)
        if outcome != "done":
            failures.append(f"{record.variant} seed {record.seed}: {outcome}")
        if on_run:
            on_run(record, outcome)

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        list(pool.map(one, todo))
    rows = collect(study, design)
    summary = stats.summarise(rows, design.baseline) if rows else {}
    if rows:
        write_table(pa.Table.from_pylist(rows), study / TABLE, base_metadata(S.KIND_STUDY, **{
            "bss.baseline": design.baseline, "bss.variants": list(design.variants), "bss.seeds": design.seeds}))
        runs.write_json(study / SUMMARY, summary)
    if failures:
        raise BSSError(f"{len(failures)} run(s) of the study failed (the others are kept; run the same bss study "
                       "again to retry them):\n  - " + "\n  - ".join(failures[:20]))
    return summary


def _gpus() -> int:
    try:
        import torch

        return torch.cuda.device_count()
    except Exception:  # no torch build with CUDA: no GPUs to spread over
        return 0


def _train(record: RunRecord, design: StudyDesign, slot: int, gpus: int, device: str) -> str:
    """One bss train process; 'done' or the reason it failed."""
    config = record.folder.parent / f"{record.folder.name}.json"
    runs.write_json(config, design.settings(record.variant, record.seed))
    cmd = [sys.executable, "-m", "bss_cli", "train", "--config", str(config), "--out", str(record.folder),
           "--quiet", "--device", device]
    if record.state == "resume":
        cmd.append("--resume")
    env = dict(os.environ)
    if gpus > 1 and device != "cpu":  # one run per GPU
        env["CUDA_VISIBLE_DEVICES"] = str(slot % gpus)
    if (device == "cpu" or gpus == 0) and "threads" not in design.settings(record.variant, record.seed):
        # One thread per CPU run: the thread count changes float summation order, so tying it to
        # --jobs would make the results depend on how many ran at once. --set threads=N overrides.
        cmd += ["--threads", "1"]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if done.returncode == 0:
        return "done"
    lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
    return lines[-1][:300] if lines else f"exit code {done.returncode}"


def collect(study: Path, design: StudyDesign) -> list[dict]:
    """One row per finished run, from its run folder."""
    import pyarrow.parquet as pq

    rows = []
    for record in plan(study, design):
        if record.state != "done":
            continue
        summary = json.loads((record.folder / runs.SUMMARY).read_text())
        seconds = None
        if (record.folder / runs.TIMINGS).exists():
            t = pq.read_table(record.folder / runs.TIMINGS).to_pylist()
            seconds = sum(r.get(k) or 0 for r in t for k in ("plan_seconds", "train_seconds", "score_seconds",
                                                            "eval_seconds"))
        row = {"variant": record.variant, "seed": record.seed, "best_epoch": summary["best_epoch"],
               "val_acc": summary["best_val_acc"], "seconds": seconds}
        row.update({f"test_{k}": v for k, v in summary["test"].items()})
        rows.append(row)
    keys = list(dict.fromkeys(k for r in rows for k in r))
    return [{k: r.get(k) for k in keys} for r in rows]


def design_from(manifest: str, schedulers: list[str] | None, variants_file: str | None, seeds: int,
                settings: dict, baseline: str | None) -> StudyDesign:
    """The design from the command line: ``--schedulers`` or a TOML ``[base]`` / ``[variants.NAME]`` file."""
    import tomllib

    base, variants = dict(settings), {}
    if variants_file:
        try:
            raw = tomllib.loads(Path(variants_file).read_text())
        except FileNotFoundError:
            raise ConfigError(f"--variants {variants_file}: no such file") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"--variants {variants_file}: not valid TOML ({exc})") from None
        base = {**{k.replace("-", "_"): v for k, v in raw.get("base", {}).items()}, **base}
        variants = {name: {k.replace("-", "_"): v for k, v in body.items()}
                    for name, body in raw.get("variants", {}).items()}
        if not variants:
            raise ConfigError(f"--variants {variants_file}: no [variants.NAME] tables")
    for name in schedulers or []:
        variants.setdefault(name, {"scheduler": name})
    if seeds < 1:
        raise ConfigError(f"--seeds {seeds}: expected an integer >= 1")
    return StudyDesign(manifest=str(manifest), variants=variants, seeds=list(range(seeds)), base=base,
                       baseline=baseline)

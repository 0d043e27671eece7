"""``bss study``: variants x paired seeds of ``bss train``, resumable and several at once.

    STUDY/study.json                 the design: manifest, base settings, variants, seeds, baseline, lr grid
    STUDY/runs/<variant>/seed=<s>/   one bss train run folder per (variant, seed)
    STUDY/runs/<variant>/lr=<lr>/seed=<s>/   the same, per learning rate of the grid (--tune-lr)
    STUDY/runs/<variant>/seed=<s>.json   that run's settings (what bss train --config reads)
    STUDY/study.parquet              one row per finished run (kind 'study')
    STUDY/summary.json               per variant: mean, sd, paired difference to the baseline, ...

A run whose ``summary.json`` exists is done and skipped; one with a ``settings.json`` but no
summary was interrupted and resumes (``--resume``); so a killed study re-run with the same design
continues where it stopped. Each run is a ``bss train`` process of its own (``--jobs`` at once;
on a machine with several GPUs, one per GPU).

With a learning-rate grid (``--tune-lr``) every variant is tuned before it is compared, so no
variant wins by rescuing a badly tuned baseline: ``per-variant`` trains each variant at every rate
and keeps, per variant, the rate of the best mean *validation* accuracy over the seeds;
``shared`` tunes the baseline alone and trains every other variant at the baseline's rate. Test
figures of the kept rate are reported, once; the others are never looked at.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pyarrow as pa

from bss_cli import schema as S
from bss_cli.artifacts import base_metadata, check_no_link, guarded, write_table
from bss_cli.errors import BSSError, ConfigError
from bss_cli.study import stats
from bss_cli.study.design import (  # noqa: F401  (re-exported: the study's public names live here too)
    DEFAULT_SCHEDULERS,
    SCHEDULER_VARIANTS,
    StudyDesign,
    design_from,
)
from bss_cli.training import runs

DESIGN = "study.json"
TABLE = "study.parquet"
SUMMARY = "summary.json"
RUNS = "runs"


@dataclass
class RunRecord:
    variant: str
    seed: int
    folder: Path
    state: str  # done | resume | new
    lr: float | None = None  # the grid's rate (None: no grid)


def run_folder(study: Path, variant: str, seed: int, lr: float | None = None) -> Path:
    base = study / RUNS / variant
    return (base if lr is None else base / f"lr={lr:g}") / f"seed={seed}"


def plan(study: Path, design: StudyDesign, rates: dict[str, list[float | None]] | None = None) -> list[RunRecord]:
    """Every run of the design (``rates``: the learning rates per variant, default its grid)."""
    out = []
    for v in design.variants:
        for lr in rates.get(v, []) if rates is not None else design.rates(v):
            for s in design.seeds:
                folder = run_folder(study, v, s, lr)
                state = "done" if (folder / runs.SUMMARY).exists() else (
                    "resume" if (folder / runs.SETTINGS).exists() else "new")
                out.append(RunRecord(v, s, folder, state, lr))
    return out


def _check_design(study: Path, design: StudyDesign) -> None:
    """The folder is empty, or holds this design, or one this design extends (more seeds or more
    variants, everything else the same); otherwise say what differs."""
    path = study / DESIGN
    if path.is_symlink() or (path.exists() and not path.is_file()):
        raise ConfigError(f"--out {study}: {path} is not a regular file; the study folder is damaged")
    if path.exists():
        try:
            saved = json.loads(path.read_text())
        except (ValueError, UnicodeDecodeError) as exc:
            raise ConfigError(f"--out {study}: {path} is not readable JSON ({exc}); the study folder is damaged") \
                from None
        new = json.loads(json.dumps(design.to_dict()))
        if not isinstance(saved, dict):
            raise ConfigError(f"--out {study}: {path} is not a study design; the study folder is damaged")
        differs = [k for k in sorted(set(saved) | set(new)) if k not in ("seeds", "variants", "lr_grid")
                   and saved.get(k) != new.get(k)]
        old_grid, new_grid = saved.get("lr_grid"), new.get("lr_grid")
        if (old_grid is None) != (new_grid is None) or (old_grid and not set(old_grid) <= set(new_grid)):
            differs.append("lr_grid")
        old_variants, old_seeds = saved.get("variants") or {}, saved.get("seeds") or []
        changed = [v for v in old_variants if v in new["variants"] and old_variants[v] != new["variants"][v]]
        dropped = [v for v in old_variants if v not in new["variants"]]
        fewer = sorted(set(old_seeds) - set(new["seeds"]))
        said = [f"{k}: {saved.get(k)!r} there, {new.get(k)!r} now" for k in differs]
        said += [f"variant {v!r} has other settings" for v in changed]
        said += [f"variant(s) {', '.join(dropped)} missing" for _ in dropped[:1]]
        said += [f"seed(s) {fewer} missing" for _ in fewer[:1]]
        if said:
            raise ConfigError(f"--out {study} holds a study of another design ({path}): " + "; ".join(said)
                              + ". Continue it with the same settings (more seeds, variants or learning rates extend "
                                "it), or choose another --out")
    elif study.exists() and (not study.is_dir() or any(p.name != runs.LOCK for p in study.iterdir())):
        raise ConfigError(f"--out {study}: the folder exists and is not a bss study; choose another --out")
    _check_outputs(study)


def _check_outputs(study: Path) -> None:
    """The study's own results, when present, must be readable: a damaged one is named (bss
    rebuilds both from the runs once it is removed), never silently replaced."""
    import pyarrow.parquet as pq

    from bss_cli.artifacts import read_metadata

    table, summary = study / TABLE, study / SUMMARY
    for path in (table, summary):
        if path.is_symlink() or (path.exists() and not path.is_file()):
            raise ConfigError(f"--out {study}: {path} is not a regular file; the study folder is damaged")
    try:
        if table.exists():
            pq.read_schema(table)
            if read_metadata(table).get("bss.kind") != S.KIND_STUDY:
                raise ValueError("not a study table")
        if summary.exists() and not isinstance(json.loads(summary.read_text()), dict):
            raise ValueError("not a study summary")
    except (OSError, ValueError, UnicodeDecodeError, RecursionError, pa.ArrowException) as exc:
        raise ConfigError(f"--out {study}: {table.name} or {summary.name} is damaged ({str(exc)[:120]}); remove both "
                          "and run the same bss study again: they are rebuilt from the runs") from None


def _check_inputs(design: StudyDesign, device: str) -> None:
    """What every run needs, checked before the study folder is created."""
    from bss_cli.training.config import DEVICES

    if device not in DEVICES:
        raise ConfigError(f"--device {device!r}: expected one of {', '.join(DEVICES)}")
    manifest = Path(design.manifest)
    if not manifest.is_file():
        raise ConfigError(f"{manifest}: no such manifest file (a study's runs all read it); check the path")


def run_study(study: str | Path, design: StudyDesign, jobs: int = 1, device: str = "auto",
              on_run: Callable[[RunRecord, str], None] | None = None, unstable_drop: float | None = None,
              log: list[str] | None = None) -> dict:
    """Run (or continue) the study; return its summary. ``on_run(record, outcome)`` after each run.

    ``log``: experiment trackers for every run (one tracker run per study run, under STUDY/, named
    ``variant[/lr=R]/seed=N``, grouped by the study's folder name and tagged with the variant)."""
    from bss_cli.tracking.backends import parse_names

    study = Path(study)
    launch = _log_args(study, parse_names(log)) if log else []
    if jobs < 1:
        raise ConfigError(f"--jobs {jobs}: expected an integer >= 1")
    design.validate()
    _check_inputs(design, device)
    _check_design(study, design)  # before anything is created ...
    with guarded(study), runs.folder_lock(study, "--out", "the study folder", "another bss study is running in this "
                                          "folder right now; wait for it to finish, or choose another --out"):
        _check_design(study, design)  # ... and again under the lock: another study may have started it
        for record in plan(study, design):  # no run folder is reached through a link (STUDY/runs/<variant>)
            check_no_link(record.folder)
        runs.write_json(study / DESIGN, design.to_dict())
        return _run_locked(study, design, jobs, device, on_run, unstable_drop, launch)


def _log_args(study: Path, names: list[str]) -> list[str]:
    """The bss train flags that send a run of the study to its trackers (its name is added per run)."""
    return [*(a for n in names for a in ("--log", n)), "--log-dir", str(study.resolve()),
            "--log-group", study.resolve().name]


def _run_locked(study: Path, design: StudyDesign, jobs: int, device: str,
                on_run: Callable[[RunRecord, str], None] | None, unstable_drop: float | None,
                launch: list[str]) -> dict:
    failures: list[str] = []
    _run_all([r for r in plan(study, design) if r.state != "done"], design, jobs, device, on_run, failures, launch)
    if design.lr_grid is not None and design.tune == "shared" and not failures:
        # the baseline's grid is done: every other variant trains at the rate it selected on validation
        chosen = stats.select_rate(collect(study, design), design.baseline, design.lr_grid, len(design.seeds))
        if chosen is not None:
            rates = {v: [chosen] for v in design.variants if v != design.baseline}
            _run_all([r for r in plan(study, design, rates) if r.state != "done"], design, jobs, device, on_run,
                     failures, launch)
    summary = summarise(study, design, unstable_drop)
    if failures:
        raise BSSError(f"{len(failures)} run(s) of the study failed (the others are kept; run the same bss study "
                       "again to retry them):\n  - " + "\n  - ".join(failures[:20]))
    return summary


def summarise(study: Path, design: StudyDesign, unstable_drop: float | None = None) -> dict:
    """Collect the finished runs, write study.parquet and summary.json; return the summary."""
    rows = collect(study, design, unstable_drop)
    if not rows:
        return {}
    summary = stats.summarise_study(rows, design.baseline, controls=design.controls(), reverses=design.reverses(),
                                    lr_grid=design.lr_grid, tune=design.tune, n_seeds=len(design.seeds))
    write_table(pa.Table.from_pylist(rows), study / TABLE, base_metadata(S.KIND_STUDY, **{
        "bss.baseline": design.baseline, "bss.variants": list(design.variants), "bss.seeds": design.seeds}))
    runs.write_json(study / SUMMARY, summary)
    return summary


def _run_all(todo: list[RunRecord], design: StudyDesign, jobs: int, device: str,
             on_run: Callable[[RunRecord, str], None] | None, failures: list[str], launch: list[str]) -> None:
    gpus = _gpus() if device != "cpu" and todo else 0
    slots = list(range(jobs))
    lock = threading.Lock()

    def one(record: RunRecord) -> None:
        with lock:
            slot = slots.pop()
        try:
            outcome = _train(record, design, slot, gpus, device, launch)
        finally:
            with lock:
                slots.append(slot)
        if outcome != "done":
            rate = "" if record.lr is None else f" lr {record.lr:g}"
            failures.append(f"{record.variant}{rate} seed {record.seed}: {outcome}")
        if on_run:
            on_run(record, outcome)

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        list(pool.map(one, todo))


def _gpus() -> int:
    try:
        import torch

        return torch.cuda.device_count()
    except Exception:  # no torch build with CUDA: no GPUs to spread over
        return 0


def _die_with_parent() -> Callable[[], None] | None:
    """A pre-exec hook that has the kernel send the child SIGTERM when the study dies (Linux
    prctl PR_SET_PDEATHSIG): a killed study (even kill -9) leaves no bss train behind writing and
    locking its run folder. Resolved here, in the parent, so the child only makes one call."""
    import ctypes
    import ctypes.util
    import signal

    try:
        prctl = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True).prctl
    except (OSError, AttributeError):  # not Linux: the runs outlive a killed study, as before
        return None
    pr_set_pdeathsig = 1
    return lambda: prctl(pr_set_pdeathsig, signal.SIGTERM)


def _train(record: RunRecord, design: StudyDesign, slot: int, gpus: int, device: str, launch: list[str]) -> str:
    """One bss train process; 'done' or the reason it failed."""
    config = record.folder.parent / f"{record.folder.name}.json"
    runs.write_json(config, design.settings(record.variant, record.seed, record.lr))
    # -P: the study's current folder is not put first on the import path (a rich.py there would run)
    cmd = [sys.executable, "-P", "-m", "bss_cli", "train", "--config", str(config), "--out", str(record.folder),
           "--quiet", "--device", device]
    if record.state == "resume":
        cmd.append("--resume")
    if launch:  # trackers: the run's name under the study is its folder's path under STUDY/runs
        cmd += [*launch, "--log-name", record.folder.relative_to(record.folder.parents[
            1 if record.lr is None else 2]).as_posix()]
    env = dict(os.environ)
    if gpus > 1 and device != "cpu":  # one run per GPU
        env["CUDA_VISIBLE_DEVICES"] = str(slot % gpus)
    if (device == "cpu" or gpus == 0) and "threads" not in design.settings(record.variant, record.seed):
        # One thread per CPU run: the thread count changes float summation order, so tying it to
        # --jobs would make the results depend on how many ran at once. --set threads=N overrides.
        cmd += ["--threads", "1"]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, preexec_fn=_die_with_parent())
    if done.returncode == 0:
        return "done"
    lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
    return lines[-1][:300] if lines else f"exit code {done.returncode}"


def collect(study: Path, design: StudyDesign, unstable_drop: float | None = None) -> list[dict]:
    """One row per finished run, from its run folder: selection (val), test once, the instability
    signature of its validation curve and, under the paper's protocol, its best test epoch."""
    import pyarrow.parquet as pq

    from bss_cli.training.metrics import UNSTABLE_DROP, stability

    rows = []
    rates = {v: design.lr_grid or [None] for v in design.variants}  # whatever of the grid has finished
    for record in plan(study, design, rates):
        if record.state != "done":
            continue
        try:
            summary = json.loads((record.folder / runs.SUMMARY).read_text())
            history = pq.read_table(record.folder / runs.METRICS).to_pylist()
        except (OSError, ValueError, pa.ArrowException) as exc:
            raise BSSError(f"{record.folder}: its summary.json or metrics.parquet is unreadable ({str(exc)[:200]}); "
                           f"delete that run folder and run the same bss study again to redo it") from None
        seconds = None
        if (record.folder / runs.TIMINGS).exists():
            t = pq.read_table(record.folder / runs.TIMINGS).to_pylist()
            seconds = sum(r.get(k) or 0 for r in t for k in ("plan_seconds", "train_seconds", "score_seconds",
                                                            "eval_seconds"))
        stable = stability([r.get("val_acc") for r in history], UNSTABLE_DROP if unstable_drop is None
                           else unstable_drop)
        row = {"variant": record.variant, "lr": record.lr, "seed": record.seed, "best_epoch": summary["best_epoch"],
               "val_acc": summary["best_val_acc"], "peak_drop": stable["peak_drop"], "unstable": stable["unstable"],
               "unstable_why": stable["why"], "seconds": seconds,
               "first_class_share": history[0].get("top_class_share") if history else None}
        row.update({f"test_{k}": v for k, v in summary["test"].items()})
        paper = [r.get("paper_test_acc") for r in history if r.get("paper_test_acc") is not None]
        if paper:  # the paper's protocol: the best test accuracy over epochs (selected on test: optimistic)
            row.update(paper_test_acc=max(paper), paper_best_epoch=int(paper.index(max(paper))))
        rows.append(row)
    keys = list(dict.fromkeys(k for r in rows for k in r))
    return [{k: r.get(k) for k in keys} for r in rows]


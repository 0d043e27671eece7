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
import math
import os
import re
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
from bss_cli.training.config import TRAIN_SCHEDULERS, TrainConfig

DESIGN = "study.json"
TABLE = "study.parquet"
SUMMARY = "summary.json"
RUNS = "runs"
FREE = ("quiet", "resume", "out", "manifest")  # set by the study itself
TUNE_MODES = ("per-variant", "shared")
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+=-]{0,99}")  # a variant name is a folder name: no '/', no '..'
# Names --schedulers accepts beyond the schedulers themselves: the learned scheduler's variants
# and its control (scores shuffled across samples).
SCHEDULER_VARIANTS = {
    "learned-shuffled": {"scheduler": "learned", "shuffle_scores": True},
    "learned-paced": {"scheduler": "learned", "paced": True},
    "learned-paced-shuffled": {"scheduler": "learned", "paced": True, "shuffle_scores": True},
}
DEFAULT_SCHEDULERS = ("none", "curriculum", "paced-random", "learned", "learned-shuffled")
# Settings a random-order control does not read (it scores nothing): ignored when pairing a
# curriculum with its paced-random control.
SCORING_ONLY = ("criterion", "alpha", "scores", "warmup", "rescore", "rescore_every")


@dataclass
class StudyDesign:
    manifest: str
    variants: dict[str, dict]  # name -> bss train settings on top of ``base``
    seeds: list[int]
    base: dict = field(default_factory=dict)
    baseline: str | None = None
    lr_grid: list[float] | None = None  # --tune-lr: every variant (or the baseline) at each rate
    tune: str = "per-variant"  # per-variant | shared

    def __post_init__(self):
        if not self.variants:
            raise ConfigError("a study needs at least one variant (--schedulers or --variants)")
        bad = [n for n in self.variants if not isinstance(n, str) or not NAME.fullmatch(n)]
        if bad:
            raise ConfigError(f"variant name(s) {', '.join(map(repr, bad))}: a name becomes a folder of the study; "
                              "use letters, digits and . _ + = - (not starting with . or -), at most 100")
        for name, body in self.variants.items():
            if not isinstance(body, dict):
                raise ConfigError(f"variant {name!r}: expected a table of bss train settings, found "
                                  f"{type(body).__name__} {body!r}")
            nested = [k for k, v in body.items() if isinstance(v, dict)]
            if nested:
                raise ConfigError(f"variant {name!r}: {', '.join(nested)} holds a table, not a setting; a variant "
                                  "name with a dot must be quoted in TOML: [variants.\"sgd-0.05\"]")
        if self.tune not in TUNE_MODES:
            raise ConfigError(f"--tune {self.tune!r}: expected one of {', '.join(TUNE_MODES)}")
        if self.lr_grid is not None:
            if not self.lr_grid or any(not isinstance(x, (int, float)) or isinstance(x, bool) or not math.isfinite(x)
                                       or x <= 0 for x in self.lr_grid) or len(set(self.lr_grid)) != len(self.lr_grid):
                raise ConfigError(f"--tune-lr {self.lr_grid}: expected distinct learning rates > 0, e.g. "
                                  "--tune-lr 0.003,0.01,0.03")
            self.lr_grid = sorted(float(x) for x in self.lr_grid)
            if len({f"{x:g}" for x in self.lr_grid}) != len(self.lr_grid):  # a rate names a folder: lr=<rate:g>
                raise ConfigError(f"--tune-lr {self.lr_grid}: rates must differ in their first 6 significant digits")
            setting_lr = [n for n, b in {"base": self.base, **self.variants}.items() if "lr" in b]
            if setting_lr:
                raise ConfigError(f"--tune-lr gives the learning rates, and {', '.join(setting_lr)} also set(s) lr; "
                                  "drop one of them")
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

    def settings(self, variant: str, seed: int, lr: float | None = None) -> dict:
        extra = {} if lr is None else {"lr": lr}
        return {"manifest": self.manifest, **self.base, **self.variants[variant], **extra, "seed": seed}

    def to_dict(self) -> dict:
        out = {"manifest": self.manifest, "variants": self.variants, "seeds": self.seeds, "base": self.base,
               "baseline": self.baseline}
        if self.lr_grid is not None:  # only then: a study without a grid keeps its old design file
            out.update(lr_grid=self.lr_grid, tune=self.tune)
        return out

    def validate(self) -> None:
        """Every run's settings pass bss train's checks before anything is created."""
        for v in self.variants:
            for lr in self.lr_grid or [None]:
                TrainConfig(out="study", **self.settings(v, self.seeds[0], lr)).validate(
                    lambda name, v=v: f"variant {v!r}: {name} =")

    def rates(self, variant: str) -> list[float | None]:
        """The learning rates ``variant`` trains at before selection (None: its own setting)."""
        if self.lr_grid is None:
            return [None]
        return self.lr_grid if self.tune == "per-variant" or variant == self.baseline else []

    def _full_settings(self) -> dict[str, dict]:
        """Every variant's complete bss train settings (defaults filled in), for pairing variants."""
        return {v: TrainConfig(out="-", **self.settings(v, 0)).to_dict() for v in self.variants}

    def controls(self) -> dict[str, str]:
        """Each variant's random-order control among the variants: the curriculum's (and the
        anti-curriculum's) is paced-random with the same settings otherwise; the learned
        scheduler's is itself with --shuffle-scores."""
        full = self._full_settings()

        def same(a: dict, b: dict, ignore: tuple) -> bool:
            return all(a[k] == b[k] for k in a if k not in ignore)

        out = {}
        for v, s in full.items():
            if s["scheduler"] in ("curriculum", "anti-curriculum"):
                want = {**s, "scheduler": "paced-random"}
                ignore = SCORING_ONLY
            elif s["scheduler"] == "learned" and not s["shuffle_scores"]:
                want, ignore = {**s, "shuffle_scores": True}, ()
            else:
                continue
            found = [c for c, cs in full.items() if c != v and same(cs, want, ignore)]
            if found:
                out[v] = found[0]
        return out

    def reverses(self) -> dict[str, str]:
        """Each curriculum's anti-curriculum twin (the same settings, the order reversed)."""
        full = self._full_settings()
        return {v: c for v, s in full.items() if s["scheduler"] == "curriculum"
                for c, cs in full.items() if cs == {**s, "scheduler": "anti-curriculum"}}


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


def _check_inputs(design: StudyDesign, device: str) -> None:
    """What every run needs, checked before the study folder is created."""
    from bss_cli.training.config import DEVICES

    if device not in DEVICES:
        raise ConfigError(f"--device {device!r}: expected one of {', '.join(DEVICES)}")
    manifest = Path(design.manifest)
    if not manifest.is_file():
        raise ConfigError(f"{manifest}: no such manifest file (a study's runs all read it); check the path")


def run_study(study: str | Path, design: StudyDesign, jobs: int = 1, device: str = "auto",
              on_run: Callable[[RunRecord, str], None] | None = None, unstable_drop: float | None = None) -> dict:
    """Run (or continue) the study; return its summary. ``on_run(record, outcome)`` after each run."""
    study = Path(study)
    if jobs < 1:
        raise ConfigError(f"--jobs {jobs}: expected an integer >= 1")
    design.validate()
    _check_inputs(design, device)
    _check_design(study, design)  # before anything is created ...
    with runs.folder_lock(study, "--out", "the study folder", "another bss study is running in this folder right "
                                                              "now; wait for it to finish, or choose another --out"):
        _check_design(study, design)  # ... and again under the lock: another study may have started it
        runs.write_json(study / DESIGN, design.to_dict())
        return _run_locked(study, design, jobs, device, on_run, unstable_drop)


def _run_locked(study: Path, design: StudyDesign, jobs: int, device: str,
                on_run: Callable[[RunRecord, str], None] | None, unstable_drop: float | None) -> dict:
    failures: list[str] = []
    _run_all([r for r in plan(study, design) if r.state != "done"], design, jobs, device, on_run, failures)
    if design.lr_grid is not None and design.tune == "shared" and not failures:
        # the baseline's grid is done: every other variant trains at the rate it selected on validation
        chosen = stats.select_rate(collect(study, design), design.baseline, design.lr_grid, len(design.seeds))
        if chosen is not None:
            rates = {v: [chosen] for v in design.variants if v != design.baseline}
            _run_all([r for r in plan(study, design, rates) if r.state != "done"], design, jobs, device, on_run,
                     failures)
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
             on_run: Callable[[RunRecord, str], None] | None, failures: list[str]) -> None:
    gpus = _gpus() if device != "cpu" and todo else 0
    slots = list(range(jobs))
    lock = threading.Lock()

    def one(record: RunRecord) -> None:
        with lock:
            slot = slots.pop()
        try:
            outcome = _train(record, design, slot, gpus, device)
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


def _train(record: RunRecord, design: StudyDesign, slot: int, gpus: int, device: str) -> str:
    """One bss train process; 'done' or the reason it failed."""
    config = record.folder.parent / f"{record.folder.name}.json"
    runs.write_json(config, design.settings(record.variant, record.seed, record.lr))
    # -P: the study's current folder is not put first on the import path (a rich.py there would run)
    cmd = [sys.executable, "-P", "-m", "bss_cli", "train", "--config", str(config), "--out", str(record.folder),
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
               "unstable_why": stable["why"], "seconds": seconds}
        row.update({f"test_{k}": v for k, v in summary["test"].items()})
        paper = [r.get("paper_test_acc") for r in history if r.get("paper_test_acc") is not None]
        if paper:  # the paper's protocol: the best test accuracy over epochs (selected on test: optimistic)
            row.update(paper_test_acc=max(paper), paper_best_epoch=int(paper.index(max(paper))))
        rows.append(row)
    keys = list(dict.fromkeys(k for r in rows for k in r))
    return [{k: r.get(k) for k in keys} for r in rows]


def design_from(manifest: str, schedulers: list[str] | None, variants_file: str | None, seeds: int,
                settings: dict, baseline: str | None, lr_grid: list[float] | None = None,
                tune: str = "per-variant", paper_protocol: bool = False) -> StudyDesign:
    """The design from the command line: ``--schedulers`` or a TOML ``[base]`` / ``[variants.NAME]`` file."""
    import tomllib

    base, variants = dict(settings), {}
    if variants_file:
        if Path(variants_file).exists() and not Path(variants_file).is_file() and not Path(variants_file).is_dir():
            raise ConfigError(f"--variants {variants_file}: not a regular file (a FIFO, device or socket)")
        try:
            raw = tomllib.loads(Path(variants_file).read_text())
        except (FileNotFoundError, IsADirectoryError):
            raise ConfigError(f"--variants {variants_file}: no such file") from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"--variants {variants_file}: not valid TOML ({exc})") from None
        if not isinstance(raw.get("base", {}), dict) or not isinstance(raw.get("variants", {}), dict):
            raise ConfigError(f"--variants {variants_file}: expected [base] and [variants.NAME] tables")
        base = {**{k.replace("-", "_"): v for k, v in raw.get("base", {}).items()}, **base}
        variants = {name: ({k.replace("-", "_"): v for k, v in body.items()} if isinstance(body, dict) else body)
                    for name, body in raw.get("variants", {}).items()}
        if not variants:
            raise ConfigError(f"--variants {variants_file}: no [variants.NAME] tables")
    for name in schedulers or []:
        if name not in SCHEDULER_VARIANTS and name not in TRAIN_SCHEDULERS:
            raise ConfigError(f"--schedulers: unknown {name!r}; expected schedulers of bss train "
                              f"({', '.join(TRAIN_SCHEDULERS)}) or {', '.join(SCHEDULER_VARIANTS)}")
        variants.setdefault(name, dict(SCHEDULER_VARIANTS.get(name, {"scheduler": name})))
    if seeds < 1:
        raise ConfigError(f"--seeds {seeds}: expected an integer >= 1")
    if paper_protocol:
        base["test_every_epoch"] = True
    # the manifest by its absolute path: the same study continued from another folder is the same design
    return StudyDesign(manifest=str(Path(manifest).resolve()), variants=variants, seeds=list(range(seeds)), base=base,
                       baseline=baseline, lr_grid=lr_grid, tune=tune)

"""The run folder: layout declared once, settings, metrics, timings and summary files, the lock.

    RUN/settings.json          what the run computes (TrainConfig, without how it was launched)
    RUN/metrics.parquet        one row per epoch (kind 'metrics'): losses, val metrics, subset size
    RUN/timings.parquet        one row per epoch (kind 'timings'): seconds per phase, samples/s
    RUN/summary.json           best epoch by validation, test metrics of that checkpoint
    RUN/last.pt, RUN/best.pt   checkpoints
    RUN/epochs/epoch=3/        scores.parquet (when scored for that epoch), schedule.parquet (Hive-style:
                               a glob read with DuckDB, polars or pyarrow recovers the epoch)
    RUN/plan/                  the scores that order the next epoch (scores-epoch=N.parquet, with the
                               accumulated scores when accumulating) and a curriculum's scores
                               (static.parquet); the checkpoint names them and their fingerprints
    RUN/.bss-lock              held (flock) by the one bss train writing the folder

Everything but ``timings.parquet`` is the same, byte for byte, for the same settings and seed
on CPU; wall-clock figures live in ``timings.parquet`` alone.
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
from pathlib import Path

import pyarrow as pa

from bss_cli import schema as S
from bss_cli.artifacts import FileWriter, atomic_path, base_metadata, check_no_link, file_in_the_way
from bss_cli.errors import ConfigError

SETTINGS = "settings.json"
METRICS = "metrics.parquet"
TIMINGS = "timings.parquet"
SUMMARY = "summary.json"
LAST = "last.pt"
BEST = "best.pt"
LOCK = ".bss-lock"
EPOCHS_DIR = "epochs"
SCORES_FILE = "scores.parquet"
SCHEDULE_FILE = "schedule.parquet"
PLAN_DIR = "plan"
STATIC_FILE = "static.parquet"
TIMING_KEYS = ("plan_seconds", "train_seconds", "score_seconds", "eval_seconds", "samples_per_s")
# How this invocation runs, not what the run computes: never saved, never compared.
LAUNCH_KEYS = ("out", "resume", "quiet", "log", "log_dir", "log_group", "log_name")


def epoch_dir(run: Path, epoch: int) -> Path:
    return Path(run) / EPOCHS_DIR / f"epoch={epoch}"


def plan_path(run: Path, epoch: int | None) -> Path:
    """The plan file for the scores that order ``epoch`` on (None: a curriculum's fixed scores)."""
    return Path(run) / PLAN_DIR / (STATIC_FILE if epoch is None else f"scores-epoch={epoch}.parquet")


def remove_plan_files(run: Path, keep: set[str]) -> None:
    """Delete the plan files that no checkpoint needs any longer (``keep``: paths relative to ``run``)."""
    folder = Path(run) / PLAN_DIR
    if not folder.is_dir():
        return
    for p in folder.glob("*.parquet"):
        if f"{PLAN_DIR}/{p.name}" not in keep:
            with contextlib.suppress(FileNotFoundError):
                p.unlink()


def epoch_of(folder: Path) -> int:
    return int(folder.name.partition("=")[2])


def write_json(path: Path, obj) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def _json_default(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return str(value)


def run_settings(settings: dict) -> dict:
    """The settings saved in (and compared against) ``settings.json``."""
    return {k: v for k, v in settings.items() if k not in LAUNCH_KEYS}


def read_settings(run: Path) -> dict:
    path = Path(run) / SETTINGS
    try:
        saved = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"--resume: {path} is missing, so the run's settings are unknown; start a new run "
                          "in another --out") from None
    except (json.JSONDecodeError, UnicodeDecodeError, OSError, RecursionError) as exc:
        raise ConfigError(f"--resume: {path} is not readable JSON ({type(exc).__name__}); start a new run in "
                          "another --out") from None
    if not isinstance(saved, dict):
        raise ConfigError(f"--resume: {path} holds a {type(saved).__name__}, expected the run's settings (an object)")
    return saved


def check_run_folder(run: Path, settings: dict, resume: bool, free_keys: tuple[str, ...]) -> bool:
    """May this invocation use ``run``? Return whether there is a checkpoint to resume from.

    A new run needs a folder without a checkpoint. ``--resume`` needs the same settings (but
    ``free_keys``); a run killed before its first checkpoint has nothing to resume and starts over.
    """
    run = Path(run)
    if run.exists() and not run.is_dir():
        raise ConfigError(f"--out {run}: is a file, not a folder; choose a folder for the run")
    blocked = file_in_the_way(run)
    if blocked:
        raise ConfigError(f"--out {run}: {blocked} is a file, not a folder")
    foreign = foreign_files(run)
    if foreign:
        shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
        raise ConfigError(f"--out {run}: holds files bss did not write ({shown}) and no bss run; a run goes into a "
                          "new or empty folder, or one of bss's own run folders; choose another --out")
    last = run / LAST
    if not resume:
        if last.exists():
            raise ConfigError(f"{run} already holds a run; pass --resume to continue it, or choose another --out")
        return False
    if not last.exists() and not (run / SETTINGS).exists():
        return False  # killed before it wrote anything (or never started): a requeued job starts it over
    saved = read_settings(run)
    now = run_settings(settings)
    diff = [k for k in now if k not in free_keys and saved.get(k) != now[k]
            and not (k == "manifest" and _same_file(saved.get(k), now[k]))]
    if diff:
        shown = ", ".join(f"{k} (run: {saved.get(k)!r}, now: {now[k]!r})" for k in diff)
        raise ConfigError(f"--resume: settings differ from the run's {SETTINGS}: {shown}; resume with the same settings")
    return last.exists()


def foreign_files(run: Path) -> list[str]:
    """The entries of an existing ``run`` folder when it is not one of bss's run folders (those
    hold ``.bss-lock``, created before anything else): a folder of the user's own files."""
    run = Path(run)
    if not run.is_dir() or (run / LOCK).is_file() or (run / LOCK).is_symlink():  # a linked lock: refused by the lock
        return []
    return sorted(p.name for p in run.iterdir())


def _same_file(a, b) -> bool:
    """Two manifest paths name the same file (a relative and an absolute spelling, say)."""
    try:
        return isinstance(a, str) and isinstance(b, str) and Path(a).resolve() == Path(b).resolve()
    except (OSError, RuntimeError, ValueError):
        return False


def run_lock(run: Path):
    """Hold an exclusive lock on the run folder while training writes it.

    ``flock`` on ``RUN/.bss-lock``: a second ``bss train`` on the same folder fails at once, and the
    lock dies with its process, so a kill -9 never leaves the folder locked.
    """
    return folder_lock(run, "--out", "the run folder",
                       "another bss train is writing this run folder right now; wait for it to finish (then "
                       "--resume), or choose another --out")


@contextlib.contextmanager
def folder_lock(folder: Path, flag: str, what: str, busy: str):
    """``flock`` on ``FOLDER/.bss-lock`` (created; never through a symbolic link) while the body runs;
    a second holder fails at once with ``flag folder: busy``."""
    import fcntl

    folder = Path(folder)
    check_no_link(folder)  # a run folder inside a study: no link on the way (STUDY/runs/<variant>)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(folder / LOCK, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise ConfigError(f"{flag} {folder}: {folder / LOCK} is a symbolic link; bss never writes through one. "
                              "Remove it and run again") from None
        raise ConfigError(f"{flag} {folder}: cannot create {what} ({exc.strerror})") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno in (errno.EWOULDBLOCK, errno.EACCES):
                raise ConfigError(f"{flag} {folder}: {busy}") from None
            raise
        yield
    finally:
        os.close(fd)  # releases the lock


def remove_stale_temporaries(run: Path) -> list[Path]:
    """Delete the ``.NAME.*.tmp`` files that a killed writer left (only under the run's lock)."""
    stale = [p for p in Path(run).rglob(".*.tmp") if p.is_file()]
    for p in stale:
        with contextlib.suppress(FileNotFoundError):
            p.unlink()
    return stale


def write_metrics(run: Path, rows: list[dict], meta: dict, files: FileWriter | None = None) -> None:
    """``metrics.parquet`` (what was computed) and ``timings.parquet`` (how long it took), through
    ``files`` when given (encoded and written on its thread), else at once."""
    if not rows:
        return
    files = files or FileWriter(background=False)
    keys = list(dict.fromkeys(k for r in rows for k in r))
    measured = [k for k in keys if k not in TIMING_KEYS]
    timed = ["epoch"] + [k for k in keys if k in TIMING_KEYS]
    files.write_table(run / METRICS, pa.table({k: [r.get(k) for r in rows] for k in measured}),
                      base_metadata(S.KIND_METRICS, **meta))
    files.write_table(run / TIMINGS, pa.table({k: [r.get(k) for r in rows] for k in timed}),
                      base_metadata(S.KIND_TIMINGS, **meta))


def without_timings(row: dict) -> dict:
    return {k: v for k, v in row.items() if k not in TIMING_KEYS}


def read_timings(run: Path) -> dict[int, dict]:
    """Per-epoch timings of an earlier part of the run, when its file is readable (else none)."""
    import pyarrow.parquet as pq

    try:
        rows = pq.read_table(Path(run) / TIMINGS).to_pylist()
        return {int(r["epoch"]): {k: r[k] for k in TIMING_KEYS if k in r} for r in rows}
    except (OSError, pa.ArrowException, KeyError, TypeError, ValueError):
        return {}

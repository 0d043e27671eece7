"""The run folder: layout declared once, settings, metrics and summary files (no torch).

    RUN/settings.json          effective settings (TrainConfig)
    RUN/metrics.parquet        one row per epoch (kind 'metrics')
    RUN/summary.json           best epoch by validation, test metrics of that checkpoint
    RUN/last.pt, RUN/best.pt   checkpoints
    RUN/epochs/epoch-0003/     scores.parquet (when scored for that epoch), schedule.parquet
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pyarrow as pa

from bss_cli import schema as S
from bss_cli.artifacts import atomic_path, base_metadata, write_table
from bss_cli.errors import ConfigError

SETTINGS = "settings.json"
METRICS = "metrics.parquet"
SUMMARY = "summary.json"
LAST = "last.pt"
BEST = "best.pt"
EPOCHS_DIR = "epochs"
SCORES_FILE = "scores.parquet"
SCHEDULE_FILE = "schedule.parquet"


def epoch_dir(run: Path, epoch: int) -> Path:
    return Path(run) / EPOCHS_DIR / f"epoch-{epoch:04d}"


def write_json(path: Path, obj) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def _json_default(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return str(value)


def check_run_folder(run: Path, settings: dict, resume: bool, free_keys: tuple[str, ...]) -> None:
    """A new run needs an empty folder; a resumed run needs the same settings (but ``free_keys``)."""
    last = run / LAST
    if not resume:
        if last.exists():
            raise ConfigError(f"{run} already holds a run; pass --resume to continue it, or choose another --out")
        return
    if not last.exists():
        raise ConfigError(f"--resume: {run} holds no {LAST} to resume from; start the run without --resume")
    saved = json.loads((run / SETTINGS).read_text())
    diff = [k for k in settings if k not in free_keys and saved.get(k) != settings[k]]
    if diff:
        shown = ", ".join(f"{k} (run: {saved.get(k)!r}, now: {settings[k]!r})" for k in diff)
        raise ConfigError(f"--resume: settings differ from the run's {SETTINGS}: {shown}; resume with the same settings")


def write_metrics(run: Path, rows: list[dict], meta: dict) -> None:
    if not rows:
        return
    keys = list(dict.fromkeys(k for r in rows for k in r))
    table = pa.table({k: [r.get(k) for r in rows] for k in keys})
    write_table(table, run / METRICS, base_metadata(S.KIND_METRICS, **meta))

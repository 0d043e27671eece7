"""Which samples each training epoch sees, in which order: none, curriculum, learned or a
schedule file, through the same scheduling code as ``bss schedule`` (torch only for scoring)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from bss_cli import schema as S
from bss_cli.artifacts import (
    fingerprint_bytes,
    fingerprint_file,
    read_metadata,
    table_bytes,
    write_bytes,
)
from bss_cli.errors import ArtifactError, ConfigError, rows_text
from bss_cli.scheduling.schedule_io import ScheduleFile, ScheduleFolder, ScheduleJob, scores_fingerprint
from bss_cli.scheduling.schedulers import Accumulator, ScheduleConfig
from bss_cli.scoring.scores import SCHEDULE_COLUMNS, WRITE_OPTIONS, Scores, read_scores
from bss_cli.training.config import STATIC_SCORED, TrainConfig

ACCUMULATED = "accumulated_balance"  # a plan file's extra column: the accumulated scores that order the epoch


@dataclass
class PlanState:
    """What the learned scheduler carries from one epoch to the next.

    Its scores live in a Parquet plan file of the run folder; a checkpoint names that file and its
    fingerprint (:meth:`to_state`) and holds only the accumulator's scalars.
    """

    scores: Scores | None = None  # the scores that order the next epoch
    accumulator: Accumulator | None = None
    balance: np.ndarray | None = None  # effective (possibly accumulated) scores for the next epoch
    extra: dict = field(default_factory=dict)

    def encode(self, path: Path) -> tuple[bytes, dict] | None:
        """The plan file's bytes (scores, plus the accumulated scores when accumulating) and the
        plain-values entry a checkpoint keeps to find it again at ``path``; None without scores."""
        if self.scores is None:
            return None
        acc = self.accumulator
        data, entry = scores_file_bytes(path, self.scores, None if acc is None else acc.total)
        if acc is not None:
            entry.update(acc_weight=acc.weight, acc_decay=acc.decay, acc_beta=acc.beta)
        return data, entry

    @classmethod
    def load(cls, run: Path, entry: dict | None) -> "PlanState":
        if entry is None:
            return cls()
        scores, total = load_scores_file(run, entry)
        acc = None
        if entry.get("acc_decay") is not None:
            beta = entry.get("acc_beta")
            acc = Accumulator(float(entry["acc_decay"]), None if beta is None else float(beta))
            if total is None:
                raise ArtifactError(f"{Path(run) / entry['file']}: lacks column {ACCUMULATED!r} that the checkpoint "
                                    "needs to resume; the run folder is damaged, start the run again")
            acc.total, acc.weight = total, float(entry["acc_weight"])
        return cls(scores=scores, accumulator=acc, balance=None if acc is None else acc.total.copy())


def scores_file_bytes(path: Path, scores: Scores, accumulated: np.ndarray | None = None) -> tuple[bytes, dict]:
    """``scores`` (and an ``accumulated_balance`` column) as Parquet bytes, and the entry
    {file: ``path`` relative to the run folder, fingerprint} a checkpoint names it by."""
    table = scores.table.replace_schema_metadata(None)
    if accumulated is not None:
        table = table.append_column(ACCUMULATED, pa.array(np.asarray(accumulated, np.float64)))
    data = table_bytes(table, dict(scores.metadata), **WRITE_OPTIONS)
    return data, {"file": f"{Path(path).parent.name}/{Path(path).name}", "fingerprint": fingerprint_bytes(data)}


def save_scores_file(path: Path, scores: Scores, accumulated: np.ndarray | None = None,
                     write: Callable[[Path, bytes], None] = write_bytes) -> dict:
    """Write ``scores`` (and an ``accumulated_balance`` column) atomically through ``write``;
    return {file, fingerprint}."""
    data, entry = scores_file_bytes(path, scores, accumulated)
    write(path, data)
    return entry


def load_scores_file(run: Path, entry: dict) -> tuple[Scores, np.ndarray | None]:
    """The scores a checkpoint names, checked against the fingerprint it recorded."""
    import pyarrow.parquet as pq

    path = Path(run) / str(entry["file"])
    if not path.is_file():
        raise ArtifactError(f"{path}: missing, and the checkpoint needs it to resume (it holds the scores that "
                            "order the next epoch); the run folder is damaged, start the run again")
    found = fingerprint_file(path)
    if found != entry.get("fingerprint"):
        raise ArtifactError(f"{path}: changed since the checkpoint was written (fingerprint {found}, checkpoint: "
                            f"{entry.get('fingerprint')}); the run folder is damaged, start the run again")
    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as exc:
        raise ArtifactError(f"{path}: not a readable Parquet file ({str(exc)[:200]})") from None
    total = None
    if ACCUMULATED in table.column_names:
        total = table[ACCUMULATED].to_numpy()
        table = table.drop_columns([ACCUMULATED])
    return Scores(table.replace_schema_metadata(None), read_metadata(path)), total


def schedule_config(cfg: TrainConfig) -> ScheduleConfig:
    name = "random" if cfg.scheduler == "none" else cfg.scheduler
    return ScheduleConfig(scheduler=name, seed=cfg.seed, pacing=cfg.pacing, lambda0=cfg.lambda0, t_grow=cfg.grow,
                          shuffle=not cfg.ordered, stratify=cfg.stratify, temperature=cfg.temperature, eps=cfg.eps,
                          accumulate=cfg.accumulate, decay=cfg.decay, rule=cfg.rule, beta=cfg.beta,
                          paced=cfg.paced, shuffle_scores=cfg.shuffle_scores)


def uniform_scores(manifest, train_rows: np.ndarray) -> Scores:
    """Scores for none and paced-random: their orders ignore them (all zero, no ranking); the
    label column lets paced-random stratify by class."""
    return Scores(pa.table({S.SAMPLE_ID: manifest.sample_ids.take(pa.array(train_rows)),
                            S.ROW: pa.array(train_rows, pa.int64()),
                            S.BALANCE: pa.array(np.zeros(len(train_rows))),
                            S.LABEL: pa.array(np.asarray(manifest.labels[train_rows], np.int64))}),
                  {S.META_MANIFEST_FINGERPRINT: manifest.fingerprint, S.META_CRITERION: "none"})


def check_scores_fit(scores: Scores, manifest, train_rows: np.ndarray, where: str) -> None:
    fp = scores.metadata.get(S.META_MANIFEST_FINGERPRINT)
    if fp and fp != manifest.fingerprint:
        raise ConfigError(f"{where}: scored another manifest (fingerprint {fp}, this one {manifest.fingerprint}); "
                          "score this manifest")
    rows = np.sort(scores.rows)
    if not np.array_equal(rows, train_rows):
        outside = np.setdiff1d(rows, train_rows)
        missing = np.setdiff1d(train_rows, rows)
        said = []
        if len(outside):
            said.append(f"{_rows_named(manifest, outside)} are not in the train split (a schedule or score "
                        "over them would train on held-out data)")
        if len(missing):
            said.append(f"{_rows_named(manifest, missing)} of the train split are missing")
        if not said:
            said.append("some rows appear more than once")
        raise ConfigError(f"{where}: does not cover exactly the train split of {manifest.path}: "
                          f"{'; '.join(said)}; score it with bss score --split train")


def _rows_named(manifest, rows: np.ndarray) -> str:
    """'manifest rows 3, 9 (split 'test')' for messages, with the splits those rows are in."""
    rows = np.asarray(rows)
    in_range = rows[(rows >= 0) & (rows < manifest.n)]
    splits = sorted({str(s) for s in manifest.split_of(in_range)}) if len(in_range) else []
    where = f" (split {', '.join(splits)})" if splits else " (not rows of the manifest)"
    return f"manifest {rows_text(rows.tolist())}{where}"


def check_schedule_rows(file: ScheduleFile, epochs: int, manifest, train_rows: np.ndarray) -> None:
    """Every row of every epoch a run trains on is a train-split row of this manifest."""
    allowed = np.zeros(manifest.n, bool)
    allowed[train_rows] = True
    for e in range(epochs):
        table = file.epoch(e, [S.ROW, S.SAMPLE_ID])
        rows = table[S.ROW].to_numpy()
        bad = rows[(rows < 0) | (rows >= manifest.n)]
        if not len(bad):
            bad = rows[~allowed[rows]]
        if not len(bad):
            ids = manifest.sample_ids.take(pa.array(rows))
            wrong = np.flatnonzero(~np.asarray(pc.equal(ids.cast(pa.string()),
                                                               table[S.SAMPLE_ID].cast(pa.string()))))
            if len(wrong):
                raise ConfigError(f"--schedule {file.path}: epoch {e} names sample ids that are not those of its "
                                  f"rows in {manifest.path} ({rows_text(wrong.tolist())} of the epoch's table); "
                                  "the schedule was made for another version of the manifest")
        if len(bad):
            bad = np.unique(bad)
            raise ConfigError(f"--schedule {file.path}: epoch {e} holds {_rows_named(manifest, bad)}, which are "
                              f"not in the train split of {manifest.path}; a schedule must only order training "
                              "rows: make it from scores of --split train")


class Planner:
    """Gives each epoch's ordering as a one-epoch schedule table."""

    def __init__(self, cfg: TrainConfig, manifest, train_rows: np.ndarray):
        self.cfg, self.manifest, self.train_rows = cfg, manifest, train_rows
        self.sched_cfg = schedule_config(cfg)
        self.file = None
        if cfg.schedule:
            self.file = ScheduleFolder(cfg.schedule) if Path(cfg.schedule).is_dir() else ScheduleFile(cfg.schedule)
            missing = [e for e in range(cfg.epochs) if e not in self.file.epochs]
            if missing:
                raise ConfigError(f"--schedule {cfg.schedule}: has no epoch(s) {missing[:5]}; "
                                  f"write {cfg.epochs} epochs with bss schedule --epochs {cfg.epochs}")
            fp = self.file.metadata.get(S.META_MANIFEST_FINGERPRINT)
            if fp and fp != manifest.fingerprint:
                raise ConfigError(f"--schedule {cfg.schedule}: made for another manifest (fingerprint {fp})")
            check_schedule_rows(self.file, cfg.epochs, manifest, train_rows)
        self.static: Scores | None = None
        self._fixed_for: Scores | None = None  # the static scores _fixed_job was made for
        self._fixed_job: tuple[ScheduleJob, Callable[[int], pa.Table]] | None = None
        if cfg.scheduler in STATIC_SCORED and cfg.scores:  # read and checked before the run folder is made
            self.set_static_scores(read_scores(cfg.scores, SCHEDULE_COLUMNS), f"--scores {cfg.scores}")

    @property
    def needs_initial_scores(self) -> bool:
        return self.file is None and self.cfg.scheduler in (*STATIC_SCORED, "learned") and not self.cfg.scores \
            and not self.cfg.warmup

    @property
    def rescoring(self) -> bool:
        return self.file is None and self.cfg.scheduler == "learned"

    def set_static_scores(self, scores: Scores, where: str = "scores") -> None:
        check_scores_fit(scores, self.manifest, self.train_rows, where)
        self.static = scores

    def job(self, epoch: int, state: PlanState) -> ScheduleJob:
        """The one-epoch schedule job of ``epoch``."""
        if self.cfg.scheduler == "learned":
            return ScheduleJob(state.scores, self.sched_cfg, [epoch], balance=state.balance)
        return dataclasses.replace(self._fixed()[0], epochs=[epoch])

    def _fixed(self) -> tuple[ScheduleJob, Callable[[int], pa.Table]]:
        """For fixed scores (a curriculum's, or the all-zero ones of none and paced-random): a job without
        epochs and its drawer, made once (the scores hashed once, the scheduler built once)."""
        if self._fixed_for is not self.static or self._fixed_job is None:
            scores = self.static if self.static is not None else uniform_scores(self.manifest, self.train_rows)
            job = ScheduleJob(scores, self.sched_cfg, [], fingerprint=scores_fingerprint(scores))
            self._fixed_for, self._fixed_job = self.static, (job, job.drawer())
        return self._fixed_job

    def epoch_table(self, epoch: int, state: PlanState) -> tuple[pa.Table, ScheduleJob | None]:
        if self.file is not None:
            return self.file.epoch(epoch), None
        job = self.job(epoch, state)
        table = next(job.tables()) if self.cfg.scheduler == "learned" else self._fixed()[1](epoch)
        return table, job

    def update(self, state: PlanState, scores: Scores) -> None:
        """New scores for the next epoch (learned); the accumulated rule folds them in."""
        state.scores = scores
        state.accumulator = state.accumulator or Accumulator.for_config(self.sched_cfg)
        state.balance = state.accumulator.add(scores.balance) if state.accumulator is not None else None

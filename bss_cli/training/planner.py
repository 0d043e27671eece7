"""Which samples each training epoch sees, in which order: none, curriculum, learned or a
schedule file, through the same scheduling code as ``bss schedule`` (torch only for scoring)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from bss_cli import schema as S
from bss_cli.errors import ConfigError
from bss_cli.scheduling.schedule_io import ScheduleFile, ScheduleJob
from bss_cli.scheduling.schedulers import Accumulator, ScheduleConfig
from bss_cli.scoring.scores import Scores, read_scores
from bss_cli.training.config import TrainConfig


@dataclass
class PlanState:
    """What the learned scheduler carries from one epoch to the next (saved in checkpoints)."""

    scores: Scores | None = None  # the scores that order the next epoch
    accumulator: Accumulator | None = None
    balance: np.ndarray | None = None  # effective (possibly accumulated) scores for the next epoch
    extra: dict = field(default_factory=dict)


def schedule_config(cfg: TrainConfig) -> ScheduleConfig:
    name = {"none": "random", "curriculum": "curriculum", "learned": "learned"}[cfg.scheduler]
    return ScheduleConfig(scheduler=name, seed=cfg.seed, pacing=cfg.pacing, lambda0=cfg.lambda0, t_grow=cfg.grow,
                          shuffle=not cfg.ordered, temperature=cfg.temperature, eps=cfg.eps,
                          accumulate=cfg.accumulate, decay=cfg.decay)


def uniform_scores(manifest, train_rows: np.ndarray) -> Scores:
    """Scores for the shuffled baseline: the random scheduler ignores them (all zero, no ranking)."""
    return Scores(pa.table({S.SAMPLE_ID: manifest.sample_ids.take(pa.array(train_rows)),
                            S.ROW: pa.array(train_rows, pa.int64()),
                            S.BALANCE: pa.array(np.zeros(len(train_rows)))}),
                  {S.META_MANIFEST_FINGERPRINT: manifest.fingerprint, S.META_CRITERION: "none"})


def check_scores_fit(scores: Scores, manifest, train_rows: np.ndarray, where: str) -> None:
    fp = scores.metadata.get(S.META_MANIFEST_FINGERPRINT)
    if fp and fp != manifest.fingerprint:
        raise ConfigError(f"{where}: scored another manifest (fingerprint {fp}, this one {manifest.fingerprint}); "
                          "score this manifest")
    if not np.array_equal(np.sort(scores.rows), train_rows):
        raise ConfigError(f"{where}: does not cover exactly the train split of {manifest.path}; "
                          "score it with --split train")


class Planner:
    """Gives each epoch's ordering as a one-epoch schedule table."""

    def __init__(self, cfg: TrainConfig, manifest, train_rows: np.ndarray):
        self.cfg, self.manifest, self.train_rows = cfg, manifest, train_rows
        self.sched_cfg = schedule_config(cfg)
        self.file = None
        if cfg.schedule:
            self.file = ScheduleFile(cfg.schedule)
            missing = [e for e in range(cfg.epochs) if e not in self.file.epochs]
            if missing:
                raise ConfigError(f"--schedule {cfg.schedule}: has no epoch(s) {missing[:5]}; "
                                  f"write {cfg.epochs} epochs with bss schedule --epochs {cfg.epochs}")
            fp = self.file.metadata.get(S.META_MANIFEST_FINGERPRINT)
            if fp and fp != manifest.fingerprint:
                raise ConfigError(f"--schedule {cfg.schedule}: made for another manifest (fingerprint {fp})")
        self.static: Scores | None = None

    @property
    def needs_initial_scores(self) -> bool:
        return self.file is None and self.cfg.scheduler in ("curriculum", "learned") and not self.cfg.scores \
            and not self.cfg.warmup

    @property
    def rescoring(self) -> bool:
        return self.file is None and self.cfg.scheduler == "learned"

    def set_static_scores(self, scores: Scores) -> None:
        check_scores_fit(scores, self.manifest, self.train_rows, "scores")
        self.static = scores

    def load_curriculum_scores(self) -> None:
        if self.cfg.scores:
            self.set_static_scores(read_scores(self.cfg.scores))

    def job(self, epoch: int, state: PlanState) -> ScheduleJob:
        """The one-epoch schedule job of ``epoch``."""
        if self.cfg.scheduler == "learned":
            return ScheduleJob(state.scores, self.sched_cfg, [epoch], balance=state.balance)
        scores = self.static if self.static is not None else uniform_scores(self.manifest, self.train_rows)
        return ScheduleJob(scores, self.sched_cfg, [epoch])

    def epoch_table(self, epoch: int, state: PlanState) -> tuple[pa.Table, ScheduleJob | None]:
        if self.file is not None:
            return self.file.epoch(epoch), None
        job = self.job(epoch, state)
        return next(job.tables()), job

    def update(self, state: PlanState, scores: Scores) -> None:
        """New scores for the next epoch (learned); the accumulated rule folds them in."""
        state.scores = scores
        if self.cfg.accumulate:
            state.accumulator = state.accumulator or Accumulator(self.cfg.decay)
            state.balance = state.accumulator.add(scores.balance)
        else:
            state.balance = None

"""Schedulers (method.md sections 4 and 5): from balance scores to one ordering per epoch.

Epochs are counted from 0 in artifacts and samplers; pacing sees t = epoch + 1. Each epoch draws
per-row keys from a counter-based generator of (seed, epoch, manifest row) (keys.py), so epoch E
alone (``bss schedule --epoch E``) equals epoch E of a full run, the same seed gives the same
orderings, and the orderings do not depend on how the rows are split into blocks. numpy only.

An epoch is ``(idx, prob)``: positions into the scores table in training order, and each
sample's selection probability (the learned sampler's p_i; 1/n for the others).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Protocol

import numpy as np

from bss_cli.bounds import bound_problems
from bss_cli.errors import ConfigError
from bss_cli.scheduling import keys
from bss_cli.scheduling.keys import CONTROL_STREAM
from bss_cli.scheduling.pacing import check_pacing, subset_size
from bss_cli.scheduling.sums import exact_sum


@dataclass
class ScheduleConfig:
    scheduler: str = "learned"
    seed: int = 0
    # curriculum / anti-curriculum
    pacing: str = "root"
    lambda0: float = 0.1
    t_grow: int = 40
    shuffle: bool = True  # shuffle within the epoch's subset (the scripts do)
    stratify: bool = False  # take the balanced-first prefix within each class (not the authors' default)
    # learned
    rule: str = "scripts"  # scripts: p ~ (1 + s + eps)^(1/T); paper: p = softmax(s_hat / T), s_hat an EMA
    temperature: float = 1.0  # T < 1 sharpens, T > 1 flattens
    eps: float = 0.01  # scripts rule
    beta: float = 0.5  # paper rule: s_hat(k+1) = (1 - beta) s_hat(k) + beta s(k+1)
    paced: bool = False  # learned: keep the first floor(N lambda(e + 1)) of each draw (the curriculum's pacing)
    accumulate: bool = False  # scripts rule: a decayed running mean of the epochs' scores
    decay: float = 1.0  # weight of older scores in that mean (1 = plain running mean)
    shuffle_scores: bool = False  # learned, control: each sample draws with another sample's score

    def validate(self) -> "ScheduleConfig":
        """Check every number (type, finiteness, range) and the names; all problems at once."""
        problems = bound_problems({k: getattr(self, k) for k in ("seed", "lambda0", "t_grow", "temperature", "eps",
                                                                 "decay", "beta")})
        if self.rule not in RULES:
            problems.append(f"--rule {self.rule!r}: expected one of {', '.join(RULES)}")
        if self.rule == "paper" and self.accumulate:
            problems.append("--accumulate is the scripts rule's memory; the paper rule accumulates with --beta")
        if self.scheduler not in SCHEDULERS:
            problems.append(f"--scheduler {self.scheduler!r}: expected one of {', '.join(SCHEDULERS)}")
        if problems:
            raise ConfigError("bad schedule settings:\n  - " + "\n  - ".join(problems))
        return self

    def params(self) -> dict:
        """The parameters that matter for this scheduler (saved in the artifact's metadata)."""
        keys = {"curriculum": ("pacing", "lambda0", "t_grow", "shuffle", "stratify"),
                "anti-curriculum": ("pacing", "lambda0", "t_grow", "shuffle", "stratify"),
                "paced-random": ("pacing", "lambda0", "t_grow", "shuffle", "stratify"),
                "learned": (("rule", "temperature", "eps", "accumulate", "decay") if self.rule == "scripts"
                            else ("rule", "temperature", "beta"))
                + (("paced", "pacing", "lambda0", "t_grow") if self.paced else ())
                + (("shuffle_scores",) if self.shuffle_scores else ()),
                "random": ()}[self.scheduler]
        return {k: v for k, v in asdict(self).items() if k in keys}


# Every random order is a sort by counter-based keys of (seed, stream, manifest row) (keys.py): an
# epoch's draws use stream = epoch; the controls' fixed orders use CONTROL_STREAM, which no epoch
# reaches, so a control's order is independent of every epoch's shuffle. The order of a sample does
# not depend on which other samples a process or partition holds.


def control_permutation(seed: int, rows: np.ndarray) -> np.ndarray:
    """A fixed, seeded permutation of the positions of ``rows`` (the controls' random stand-in for a
    balance order)."""
    return keys.permutation(seed, CONTROL_STREAM, rows)


def _rows(rows: np.ndarray | None, n: int) -> np.ndarray:
    if rows is None:
        return np.arange(n, dtype=np.int64)
    rows = np.asarray(rows, dtype=np.int64)
    if len(rows) != n:
        raise ConfigError(f"{len(rows)} rows for {n} scores")
    return rows


class Scheduler(Protocol):
    def size(self, epoch: int) -> int: ...

    def epoch(self, epoch: int) -> tuple[np.ndarray, np.ndarray]: ...


class Curriculum:
    """Balanced first (descending score; ties in manifest order), a growing prefix per epoch.

    ``stratify``: the prefix is taken within each class (each class contributes the same pacing
    fraction of its own samples, its most balanced first), so no class is left out of an early
    epoch; the epoch is then ordered balanced-first across classes as without it.
    """

    def __init__(self, balance: np.ndarray, cfg: ScheduleConfig, reverse: bool = False,
                 labels: np.ndarray | None = None, rows: np.ndarray | None = None):
        self.pace = check_pacing(cfg.pacing, cfg.lambda0, cfg.t_grow)
        self.cfg = cfg
        self.rows = _rows(rows, len(balance))
        key = balance if reverse else -balance
        self.order = keys.order_by(key, self.rows)  # ties in manifest order
        self.rank = np.empty(len(self.order), np.int64)
        self.rank[self.order] = np.arange(len(self.order))
        self.classes: list[np.ndarray] | None = None
        if cfg.stratify:
            if labels is None:
                raise ConfigError("--stratify needs each sample's class: scores with a 'label' column (bss score "
                                  "writes one)")
            ordered_labels = np.asarray(labels)[self.order]
            self.classes = [self.order[ordered_labels == c] for c in np.unique(ordered_labels)]

    def _fraction(self, epoch: int) -> float:
        return self.pace(epoch + 1, lambda0=self.cfg.lambda0, t_grow=self.cfg.t_grow)

    def size(self, epoch: int) -> int:
        if self.classes is not None:
            return sum(subset_size(len(c), self._fraction(epoch)) for c in self.classes)
        return subset_size(len(self.order), self._fraction(epoch))

    def _subset(self, epoch: int) -> np.ndarray:
        if self.classes is None:
            return self.order[:self.size(epoch)]
        f = self._fraction(epoch)
        picked = np.concatenate([c[:subset_size(len(c), f)] for c in self.classes])
        return picked[np.argsort(self.rank[picked], kind="stable")]  # balanced-first across classes

    def epoch(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        idx = self._subset(epoch)
        n = len(idx)
        if self.cfg.shuffle:
            idx = idx[keys.permutation(self.cfg.seed, epoch, self.rows[idx])]
        return idx, np.full(n, 1.0 / n)


def paced_random(balance: np.ndarray, cfg: ScheduleConfig, labels: np.ndarray | None = None,
                 rows: np.ndarray | None = None) -> Curriculum:
    """Control for the curriculum: the same growing prefix sizes (and, with ``stratify``, the same
    per-class sizes) over a fixed seeded random order instead of the balance order. What the
    curriculum gains over this is the effect of *which* samples come first; what this gains over
    ``none`` is the effect of pacing alone (training on a growing subset, a warm-up of sorts)."""
    rows = _rows(rows, len(balance))
    key = np.empty(len(balance), np.float64)
    key[control_permutation(cfg.seed, rows)] = np.arange(len(balance), dtype=np.float64)
    return Curriculum(key, cfg, reverse=True, labels=labels, rows=rows)  # ascending key: the permutation's order


RULES = ("scripts", "paper")


class Learned:
    """Weighted sampling without replacement, p = w / sum(w), with

    * the scripts' rule: w = (1 + s + eps)^(1/T) (the authors' code at T = 1, eps = 0.01);
    * the paper's rule: w = exp(s / T), i.e. p = softmax(s / T), s being the accumulated s_hat.

    sum(w) is exact (:mod:`bss_cli.scheduling.sums`), so p does not depend on how the rows are
    partitioned. Drawn as argsort(E_i / p_i) with E_i ~ Exp(1) (Efraimidis-Spirakis), which has the law of
    ``torch.multinomial(p, N, replacement=False)`` and costs one sort; E_i is a counter-based draw
    of (seed, epoch, manifest row), so the order does not depend on how the rows are partitioned.

    ``shuffle_scores`` (a control): sample i draws with the score of sample pi(i), pi a fixed
    seeded permutation; the weights keep their distribution but lose their link to the samples.
    """

    def __init__(self, balance: np.ndarray, cfg: ScheduleConfig, rows: np.ndarray | None = None):
        self.rows = _rows(rows, len(balance))
        if cfg.shuffle_scores:
            balance = np.asarray(balance)[control_permutation(cfg.seed, self.rows)]
        w = learned_weights(balance, cfg)
        self.cfg = cfg
        self.p = w / exact_sum(w)

    def size(self, epoch: int) -> int:
        if self.cfg.paced:  # only the first floor(N lambda(e + 1)) of the draw, as a curriculum paces
            pace = check_pacing(self.cfg.pacing, self.cfg.lambda0, self.cfg.t_grow)
            return subset_size(len(self.p), pace(epoch + 1, lambda0=self.cfg.lambda0, t_grow=self.cfg.t_grow))
        return len(self.p)

    def epoch(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        idx = keys.weighted_order(self.p, self.cfg.seed, epoch, self.rows)
        if self.cfg.paced:
            idx = idx[:self.size(epoch)]
        return idx, self.p[idx]


def learned_weights(balance: np.ndarray, cfg: ScheduleConfig, zmax: float | None = None) -> np.ndarray:
    """The learned rule's w_i, element by element: (1 + s + eps)^(1/T) (scripts), or exp(s/T - zmax)
    (paper; ``zmax`` = max(s)/T over the whole set, given when ``balance`` is one block of it)."""
    s = np.asarray(balance, np.float64)
    if cfg.temperature <= 0:
        raise ConfigError(f"--temperature {cfg.temperature}: expected a value > 0")
    if cfg.rule == "paper":
        z = s / cfg.temperature
        return np.exp(z - (z.max() if zmax is None else zmax))
    if cfg.eps <= 0:
        raise ConfigError(f"--eps {cfg.eps}: expected a value > 0 (it keeps every weight above zero)")
    w = 1.0 + s + cfg.eps
    if (w <= 0).any():
        raise ConfigError("a balance score below -1 - eps gives a weight <= 0; the learned scheduler needs "
                          "scores in [-1, 1] (a pair criterion)")
    if cfg.temperature != 1.0:
        w = np.exp(np.log(w) / cfg.temperature)
    if not np.isfinite(w).all():
        raise ConfigError(f"--temperature {cfg.temperature}: the weights (1 + s + eps)^(1/T) overflow; use a "
                          "larger temperature")
    return w


class Random:
    """A fresh uniform permutation each epoch (the baseline)."""

    def __init__(self, balance: np.ndarray, cfg: ScheduleConfig, rows: np.ndarray | None = None):
        self.n, self.cfg = len(balance), cfg
        self.rows = _rows(rows, self.n)

    def size(self, epoch: int) -> int:
        return self.n

    def epoch(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        return keys.permutation(self.cfg.seed, epoch, self.rows), np.full(self.n, 1.0 / self.n)


SCHEDULERS = {
    "curriculum": lambda b, c, labels=None, rows=None: Curriculum(b, c, labels=labels, rows=rows),
    "anti-curriculum": lambda b, c, labels=None, rows=None: Curriculum(b, c, reverse=True, labels=labels, rows=rows),
    "paced-random": paced_random,
    "learned": lambda b, c, labels=None, rows=None: Learned(b, c, rows=rows),
    "random": lambda b, c, labels=None, rows=None: Random(b, c, rows=rows),
}


def make_scheduler(balance: np.ndarray, cfg: ScheduleConfig, labels: np.ndarray | None = None,
                   rows: np.ndarray | None = None) -> Scheduler:
    """The scheduler ``cfg`` names over ``balance`` (``labels``: each sample's class, for ``stratify``;
    ``rows``: each sample's manifest row, which keys its random draws; default 0..N-1)."""
    cfg.validate()
    if len(balance) == 0:
        raise ConfigError("no scores to schedule")
    if cfg.shuffle_scores and cfg.scheduler != "learned":
        raise ConfigError(f"--shuffle-scores is a control of the learned scheduler; for {cfg.scheduler} use "
                          "--scheduler paced-random (the curriculum's control)")
    if cfg.stratify and cfg.scheduler not in ("curriculum", "anti-curriculum", "paced-random"):
        raise ConfigError(f"--stratify shapes a curriculum's growing prefix; {cfg.scheduler} has none")
    return SCHEDULERS[cfg.scheduler](np.asarray(balance, np.float64), cfg, labels=labels, rows=rows)


class Accumulator:
    """Scores accumulated over re-scorings, one mechanism for both rules: an exponential moving
    average s_hat(k) = (1 - b_k) s_hat(k-1) + b_k s(k), s_hat(0) = s(0), whose step b_k is

    * ``beta`` (the paper's rule: a constant step; beta = 1 forgets everything but the last scores);
    * 1 / W_k with W_k = 1 + decay W_(k-1) (the scripts' ``--accumulate --decay``): exactly the
      decayed running mean sum_j decay^(k-j) s(j) / sum_j decay^(k-j); decay 1 is the plain mean,
      which orders like the element-wise sum while staying in the scores' range (w = 1 + s + eps > 0).
    """

    def __init__(self, decay: float = 1.0, beta: float | None = None):
        if not 0 <= decay <= 1:
            raise ConfigError(f"--decay {decay}: expected a value in [0, 1]")
        if beta is not None and not 0 < beta <= 1:
            raise ConfigError(f"--beta {beta}: expected a value in (0, 1]")
        self.decay, self.beta = decay, beta
        self.total: np.ndarray | None = None  # s_hat
        self.weight = 0.0  # W_k (the running mean's normaliser)

    @classmethod
    def for_config(cls, cfg: "ScheduleConfig") -> "Accumulator | None":
        if cfg.rule == "paper":
            return cls(beta=cfg.beta)
        return cls(decay=cfg.decay) if cfg.accumulate else None

    def add(self, scores: np.ndarray) -> np.ndarray:
        scores = np.asarray(scores, np.float64)
        if self.total is not None and self.total.shape != scores.shape:
            raise ConfigError(f"scores of {len(scores)} samples cannot accumulate onto {len(self.total)}")
        self.weight = self.decay * self.weight + 1.0
        step = 1.0 if self.total is None else (self.beta if self.beta is not None else 1.0 / self.weight)
        self.total = scores.copy() if self.total is None else (1.0 - step) * self.total + step * scores
        return self.total.copy()

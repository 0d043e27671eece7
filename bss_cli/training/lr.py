"""The learning rate as a pure function of where training is (no scheduler state to save).

lr(epoch, progress) = lr * decay(epoch) * warm(epoch + progress), with ``progress`` in (0, 1] the
fraction of the epoch's batches done (including the current one):

* ``decay``: ``cosine`` (1 + cos(pi e / E)) / 2, as torch's CosineAnnealingLR at eta_min 0;
  ``step`` gamma^floor(e / step), as StepLR; ``none`` 1.
* ``warm``: a linear warm-up over ``lr_warmup`` epochs, min(1, (e + progress) / W), counted in
  epochs (fractions of each epoch's batches), so every scheduler warms up over the same share of its
  epochs, whatever their size: a curriculum's small early epochs are not warmed up for longer in
  epochs than a full shuffle's.
"""

from __future__ import annotations

import math

from bss_cli.training.config import TrainConfig


def decay(cfg: TrainConfig, epoch: int) -> float:
    if cfg.lr_schedule == "cosine":
        return (1.0 + math.cos(math.pi * epoch / cfg.epochs)) / 2.0
    if cfg.lr_schedule == "step":
        return cfg.lr_gamma ** (epoch // cfg.lr_step)
    return 1.0


def warm(cfg: TrainConfig, epoch: int, progress: float) -> float:
    """The warm-up factor in (0, 1]; 1 past the warm-up (or without one)."""
    if cfg.lr_warmup <= 0:
        return 1.0
    return min(1.0, (epoch + progress) / cfg.lr_warmup)


def lr_at(cfg: TrainConfig, epoch: int, progress: float = 1.0) -> float:
    """The learning rate of the batch that ends ``progress`` of epoch ``epoch`` (from 0)."""
    return cfg.lr * decay(cfg, epoch) * warm(cfg, epoch, progress)


def warming(cfg: TrainConfig, epoch: int) -> bool:
    """Whether the rate changes within ``epoch`` (so it is set every step, not once)."""
    return epoch < cfg.lr_warmup

"""The training step: optimisers and one epoch over a given ordering (torch)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from bss_cli.criteria import LossWeights
from bss_cli.data import ManifestData
from bss_cli.errors import ConfigError
from bss_cli.model import joint_loss

OPTIMIZERS = ("sgd", "adam")


@dataclass
class OptimConfig:
    name: str = "sgd"
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 1e-4


def make_optimizer(model: torch.nn.Module, cfg: OptimConfig) -> torch.optim.Optimizer:
    if cfg.name == "sgd":
        return torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    if cfg.name == "adam":
        return torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    raise ConfigError(f"unknown optimiser {cfg.name!r}; choose one of: {', '.join(OPTIMIZERS)}")


def train_epoch(model, optimizer, data: ManifestData, order: np.ndarray, *, batch_size: int, weights: LossWeights,
                on_batch: Callable[[int, float], None] | None = None) -> float:
    """One pass over ``order`` (manifest rows) in that order; returns the mean per-sample loss."""
    model.train()
    total, count = 0.0, 0
    for start in range(0, len(order), batch_size):
        xb, yb = data.batch(order[start:start + batch_size], train=True)
        dev = next(model.parameters()).device
        xb, yb = {m: v.to(dev) for m, v in xb.items()}, yb.to(dev)
        loss = joint_loss(model(xb), yb, weights.fused, weights.unimodal)
        optimizer.zero_grad(set_to_none=True)
        loss.mean().backward()
        optimizer.step()
        total += float(loss.detach().sum())
        count += len(yb)
        if on_batch:
            on_batch(len(yb), float(loss.detach().mean()))
    return total / max(count, 1)

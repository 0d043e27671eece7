"""The training step: optimisers and one epoch over a given ordering (torch)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from bss_cli.data.datasets import ManifestData
from bss_cli.errors import ConfigError
from bss_cli.models.devices import autocast
from bss_cli.models.fusion import joint_loss

if TYPE_CHECKING:  # a type only: the weights are the joint loss's, declared next to the criteria
    from bss_cli.scoring.criteria import LossWeights

OPTIMIZERS = ("sgd", "adam", "adamw")


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
    if cfg.name == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    raise ConfigError(f"unknown optimiser {cfg.name!r}; choose one of: {', '.join(OPTIMIZERS)}")


def train_step(model, optimizer, xb: dict, yb: torch.Tensor, weights: LossWeights, amp: bool = False,
               clip: float = 0.0):
    """One optimiser step on a batch; returns the model output and the per-sample loss (detached).

    ``amp``: bf16 autocast on CUDA (no loss scaling needed with bf16). ``clip`` > 0: the gradient's
    global norm is clipped to it before the step.
    """
    with autocast(yb.device, amp):
        out = model(xb)
        loss = joint_loss(out, yb, weights.fused, weights.unimodal)
    optimizer.zero_grad(set_to_none=True)
    loss.mean().backward()
    if clip > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
    optimizer.step()
    return out, loss.detach()


def has_batchnorm(model: torch.nn.Module) -> bool:
    return any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules())


def min_batch(model: torch.nn.Module) -> int:
    """The smallest training batch ``model`` can take: 2 with BatchNorm (a batch of one has no
    variance to normalise by, and train-mode BatchNorm refuses it), else 1. A shorter final batch
    of an epoch is skipped: at most one sample of the epoch, and only for BatchNorm models."""
    return 2 if has_batchnorm(model) else 1


def train_epoch(model, optimizer, data: ManifestData, order: np.ndarray, *, batch_size: int,
                weights: LossWeights, clip: float = 0.0) -> float:
    """One plain pass over ``order`` (manifest rows) in that order, e.g. a warm-up; mean loss.
    ``clip`` > 0 clips the gradient's global norm, as the run's own steps do."""
    model.train()
    dev = next(model.parameters()).device
    total, count = 0.0, 0
    smallest = min_batch(model)
    for start in range(0, len(order), batch_size):
        if len(order) - start < smallest:
            break
        xb, yb = data.batch(order[start:start + batch_size], train=True)
        _, loss = train_step(model, optimizer, {m: v.to(dev) for m, v in xb.items()}, yb.to(dev), weights, clip=clip)
        total += float(loss.sum())
        count += len(yb)
    return total / max(count, 1)

"""Checkpoint files: keys declared once, atomic writes, model rebuilt from the saved config."""

from __future__ import annotations

from pathlib import Path

import torch

from bss_cli.artifacts import atomic_path, fingerprint_file
from bss_cli.errors import ArtifactError
from bss_cli.models.fusion import ModelConfig, build_model

MODEL_STATE = "model"
MODEL_CONFIG = "model_config"
MODEL_FACTORY = "model_factory"
OPTIMIZER_STATE = "optimizer"
LR_SCHEDULER_STATE = "lr_scheduler"
EPOCH = "epoch"
RNG_STATE = "rng"
TRAINER_STATE = "trainer"
FORMAT = "bss_checkpoint_version"
VERSION = 1


def save_checkpoint(path: str | Path, state: dict) -> None:
    """Write ``state`` (plus the format version) atomically."""
    with atomic_path(path) as tmp:
        torch.save({FORMAT: VERSION, **state}, tmp)


def load_checkpoint(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"{path}: no such checkpoint")
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # torch raises many kinds for a damaged or foreign file
        raise ArtifactError(f"{path}: not a readable bss checkpoint ({exc})") from None
    if not isinstance(state, dict) or state.get(FORMAT) != VERSION or MODEL_STATE not in state:
        raise ArtifactError(f"{path}: not a bss checkpoint (expected keys {MODEL_STATE!r}, {MODEL_CONFIG!r})")
    return state


def model_from_checkpoint(path: str | Path) -> tuple[torch.nn.Module, ModelConfig, str]:
    """The model stored in a checkpoint, in eval mode, and the file's fingerprint."""
    state = load_checkpoint(path)
    cfg = ModelConfig(**state[MODEL_CONFIG])
    model = build_model(cfg, state.get(MODEL_FACTORY))
    model.load_state_dict(state[MODEL_STATE])
    model.eval()
    return model, cfg, fingerprint_file(path)

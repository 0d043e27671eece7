"""Checkpoint files: keys declared once, atomic and reproducible writes, safe loads.

A checkpoint holds tensors and plain values only (numbers, strings, lists, dicts), so it is read
with ``torch.load(weights_only=True)``: a crafted file cannot run code on load. It never makes
bss import a module either: a model built by a ``--model`` plug-in is rebuilt only when the user
names that plug-in again on the command line.
"""

from __future__ import annotations

import io
import pickle
from dataclasses import fields
from pathlib import Path

import numpy as np
import torch

from bss_cli.artifacts import fingerprint_file, write_bytes
from bss_cli.bounds import FILE_BOUNDS
from bss_cli.errors import ArtifactError, ConfigError
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
VERSION = 2  # 2: plain values only (1 pickled trainer objects and is refused)
# Bounds on the sizes a checkpoint's model settings may claim (a hostile file must not allocate terabytes)
MAX_CLASSES, MAX_WIDTH, MAX_LAYERS, MAX_INPUT = (int(FILE_BOUNDS[f"checkpoint {k}"].high)
                                                 for k in ("n_classes", "hidden", "layers", "input values"))


def to_tensors(state):
    """numpy arrays -> tensors, recursively: what a checkpoint may hold besides plain values."""
    import numpy as np

    if isinstance(state, dict):
        return {k: to_tensors(v) for k, v in state.items()}
    if isinstance(state, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(state).copy())
    return state


def to_arrays(state):
    """The inverse of :func:`to_tensors`."""
    if isinstance(state, dict):
        return {k: to_arrays(v) for k, v in state.items()}
    if isinstance(state, torch.Tensor):
        return state.numpy()
    return state


def checkpoint_bytes(state: dict) -> bytes:
    """``state`` (plus the format version) as checkpoint file bytes.

    Saved into a buffer, so the zip archive's inner name is fixed ("archive"), not a file's name:
    the same state gives the same bytes.
    """
    buffer = io.BytesIO()
    torch.save({FORMAT: VERSION, **state}, buffer)
    return buffer.getvalue()


def save_checkpoint(path: str | Path, state: dict) -> None:
    """Write ``state`` (plus the format version) atomically."""
    write_bytes(path, checkpoint_bytes(state))


def load_checkpoint(path: str | Path) -> dict:
    """Read a bss checkpoint without running code from it (tensors and plain values only)."""
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"{path}: no such checkpoint file")
    import zipfile

    if not zipfile.is_zipfile(path):  # torch.save writes a zip archive; anything else is not ours
        raise ArtifactError(f"{path}: not a readable bss checkpoint (not a torch zip archive)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        raise ArtifactError(f"{path}: refused: the file asks to load Python objects, not only tensors and plain "
                            f"values ({first[:200]}); bss never runs code from a file. Use a checkpoint written by "
                            "this version of bss train") from None
    except Exception as exc:  # torch raises many kinds for a damaged or foreign file
        raise ArtifactError(f"{path}: not a readable bss checkpoint ({type(exc).__name__}: {str(exc)[:200]})") from None
    if not isinstance(state, dict) or MODEL_STATE not in state or not isinstance(state.get(MODEL_CONFIG), dict):
        raise ArtifactError(f"{path}: not a bss checkpoint (expected keys {MODEL_STATE!r}, {MODEL_CONFIG!r})")
    if state.get(FORMAT) != VERSION:
        raise ArtifactError(f"{path}: bss checkpoint format {state.get(FORMAT)!r}, this bss reads {VERSION}; "
                            "re-create it with this version of bss train")
    return state


def model_config_of(state: dict, path: str | Path) -> ModelConfig:
    raw = state[MODEL_CONFIG]
    known = {f.name for f in fields(ModelConfig)}
    unknown = sorted(set(raw) - known)
    try:
        if unknown:
            raise TypeError(f"unknown field(s) {', '.join(map(str, unknown))}")
        cfg = ModelConfig(**raw)
        cfg.encoder_weights = {}  # the state_dict holds the weights; the files named at training are not read
        if not isinstance(cfg.n_classes, int) or cfg.n_classes < 2 or not isinstance(cfg.modalities, dict):
            raise TypeError(f"n_classes {cfg.n_classes!r}, modalities {cfg.modalities!r}")
        # sizes a model is built from are bounded before anything is allocated
        def size_ok(v, high):
            return isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= high
        shapes = [s if isinstance(s, list) else [s] for s in cfg.modalities.values()]
        if not size_ok(cfg.n_classes, MAX_CLASSES) or not size_ok(cfg.hidden, MAX_WIDTH) or \
                not size_ok(cfg.layers, MAX_LAYERS) or not all(shapes) or \
                not all(size_ok(d, MAX_INPUT) for s in shapes for d in s) or \
                any(int(np.prod(s, dtype=np.float64)) > MAX_INPUT for s in shapes):
            raise TypeError(f"sizes out of range: n_classes {cfg.n_classes!r} (at most {MAX_CLASSES:,}), hidden "
                            f"{cfg.hidden!r} (at most {MAX_WIDTH:,}), layers {cfg.layers!r}, inputs "
                            f"{cfg.modalities!r} (at most {MAX_INPUT:,} values)")
    except TypeError as exc:
        raise ArtifactError(f"{path}: the checkpoint's model settings are not valid ({exc})") from None
    return cfg


def model_from_checkpoint(path: str | Path, factory: str | None = None) -> tuple[torch.nn.Module, ModelConfig, str]:
    """The model stored in a checkpoint, in eval mode, and the file's fingerprint.

    ``factory`` is the ``--model`` plug-in the user named; a checkpoint of a plug-in model needs
    it, and it must be the plug-in that wrote the checkpoint.
    """
    state = load_checkpoint(path)
    cfg = model_config_of(state, path)
    saved = state.get(MODEL_FACTORY)
    if saved and factory != saved:
        raise ConfigError(f"--checkpoint {path}: the model was built by the plug-in {saved!r}; bss does not import "
                          f"code that a file names. If you trust that code, pass --model {saved}")
    if factory and not saved:
        raise ConfigError(f"--model {factory}: the checkpoint {path} holds the built-in model, not a plug-in's; "
                          "drop --model")
    model = build_model(cfg, factory)
    try:
        model.load_state_dict(state[MODEL_STATE])
    except (RuntimeError, TypeError, AttributeError) as exc:
        raise ArtifactError(f"{path}: the weights do not fit the model they describe ({str(exc)[:300]})") from None
    model.eval()
    return model, cfg, fingerprint_file(path)

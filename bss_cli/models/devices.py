"""Device choice (torch)."""

from __future__ import annotations

import contextlib

import torch

from bss_cli.errors import ConfigError

DEVICES = ("auto", "cpu", "cuda")


def resolve_device(name: str) -> str:
    """'auto' -> cuda when available, else cpu; 'cuda' without a GPU is an error."""
    if name not in DEVICES:
        raise ConfigError(f"--device {name!r}: expected one of {', '.join(DEVICES)}")
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda: no CUDA device is visible to torch; use --device cpu or auto")
    return name


def autocast(device: torch.device | str, enabled: bool):
    """bf16 autocast on CUDA when ``enabled`` (bf16 needs no loss scaling); a no-op elsewhere."""
    if not (enabled and torch.device(device).type == "cuda"):
        return contextlib.nullcontext()  # even a disabled torch.autocast costs ~50 us per training step
    return torch.autocast(device_type="cuda", dtype=torch.bfloat16)

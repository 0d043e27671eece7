"""bss: balance-aware sequence sampling for multi-modal training.

Light at import: torch is imported only by the modules that train or run models, so
``import bss_cli`` and ``bss --help`` stay fast. ``ScheduleSampler`` and ``ManifestDataset`` are loaded on first use.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__", "ScheduleSampler", "ManifestDataset", "read_npy"]


def __getattr__(name: str):
    if name == "ScheduleSampler":
        from bss_cli.scheduling.sampler import ScheduleSampler

        return ScheduleSampler
    if name == "ManifestDataset":
        from bss_cli.data.datasets import ManifestDataset

        return ManifestDataset
    if name == "read_npy":
        from bss_cli.scheduling.schedule_io import read_npy

        return read_npy
    raise AttributeError(f"module 'bss_cli' has no attribute {name!r}")

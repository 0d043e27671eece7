"""Every numeric setting checked once, in one place: type, finiteness and range.

A setting has the same name as a flag (``--lr``), a TOML key (``lr``) and a dataclass field, in
every command that takes it, so one table serves ``bss train``, ``bss schedule``, ``bss score`` and
``bss build-manifest``, for flags and TOML alike. Callers collect the problems of one input and
report them together, before anything is created.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Mapping


@dataclass(frozen=True)
class Bound:
    """``kind`` int or float; ``low``/``high`` inclusive unless ``*_open``; ``None`` allowed if ``optional``."""

    kind: type
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    optional: bool = False

    def describe(self) -> str:
        what = "an integer" if self.kind is int else "a finite number"
        if self.low is not None and self.high is not None:
            left, right = "(" if self.low_open else "[", ")" if self.high_open else "]"
            return f"{what} in {left}{_num(self.low)}, {_num(self.high)}{right}"
        if self.low is not None:
            return f"{what} {'>' if self.low_open else '>='} {_num(self.low)}"
        if self.high is not None:
            return f"{what} {'<' if self.high_open else '<='} {_num(self.high)}"
        return what

    def accepts(self, value: object) -> bool:
        if value is None:
            return self.optional
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        if self.kind is int and not isinstance(value, int):
            return False
        if not math.isfinite(value):
            return False
        if self.low is not None and (value < self.low or (self.low_open and value == self.low)):
            return False
        if self.high is not None and (value > self.high or (self.high_open and value == self.high)):
            return False
        return True


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


_POSITIVE_INT = Bound(int, 1)
_COUNT = Bound(int, 0)
_POSITIVE = Bound(float, 0, low_open=True)
_WEIGHT = Bound(float, 0, 1e6)
# optimiser factors: finite is not enough (--lr 1e300 overflows float32 in the first step)
_FACTOR = Bound(float, 0, 10, low_open=True)

BOUNDS: dict[str, Bound] = {
    # shared
    "seed": Bound(int, 0, 2**63 - 1),
    "epochs": _POSITIVE_INT,
    "epoch": _COUNT,
    "batch_size": _POSITIVE_INT,
    "workers": _COUNT,
    "threads": Bound(int, 1, optional=True),
    "save_every": Bound(float, 0),
    "warmup": _COUNT,
    "hidden": _POSITIVE_INT,
    "fused_weight": _WEIGHT,
    "unimodal_weight": _WEIGHT,
    # scheduling
    "lambda0": Bound(float, 0, 1, low_open=True),
    "t_grow": Bound(int, 1, optional=True),
    "temperature": Bound(float, 0, 1e6, low_open=True),
    "eps": _POSITIVE,
    "decay": Bound(float, 0, 1),
    "beta": Bound(float, 0, 1, low_open=True),
    "alpha": Bound(float, 0, 1),
    "rescore_every": _POSITIVE_INT,
    # model and optimisation
    "layers": _POSITIVE_INT,
    "dropout": Bound(float, 0, 1, high_open=True),
    "lr": _FACTOR,
    "momentum": Bound(float, 0, 1),
    "weight_decay": Bound(float, 0, 10),
    "lr_step": _POSITIVE_INT,
    "lr_gamma": _FACTOR,
    "lr_warmup": Bound(float, 0, 1e6),
    "clip_grad": Bound(float, 0, 1e6),
    # media decoding (build-manifest)
    "sample_rate": Bound(int, 1, 768_000),
    "seconds": Bound(float, 0, 3600, low_open=True),
    "n_fft": Bound(int, 2, 65_536),
    "hop": Bound(int, 1, 1_000_000),
    "image_size": Bound(int, 1, 8192),
    "frames": Bound(int, 1, 100_000),
}


# Sizes read from files (a manifest's metadata, a checkpoint, a schedule) are bounded before
# anything is allocated from them: a damaged or hostile file must not claim terabytes.
FILE_BOUNDS: dict[str, Bound] = {
    "bss.arrays length": Bound(int, 1, 10_000_000),  # frames every 2-D array is padded or cut to
    "checkpoint n_classes": Bound(int, 2, 10_000_000),
    "checkpoint hidden": Bound(int, 1, 1_000_000),
    "checkpoint layers": Bound(int, 1, 1_000),
    "checkpoint input values": Bound(int, 1, 1_000_000_000),  # per modality (the product of its shape)
    "schedule epoch": Bound(int, 0, 2**31 - 1),  # int32 in schedule files
}


def flag_label(name: str) -> str:
    return "--" + name.replace("_", "-")


def bound_problems(values: Mapping[str, object], label: Callable[[str], str] = flag_label) -> list[str]:
    """One message per value of ``values`` (setting name -> value) that its bound refuses."""
    problems = []
    for name, value in values.items():
        bound = BOUNDS[name]
        if not bound.accepts(value):
            shown = "nothing" if value is None else repr(value)
            problems.append(f"{label(name)} {shown}: expected {bound.describe()}")
    return problems

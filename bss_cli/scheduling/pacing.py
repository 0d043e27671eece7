"""Pacing functions: the fraction of the balanced-first order used at epoch t (t counted from 1).

All share the signature ``f(t, *, lambda0, t_grow) -> float`` in (0, 1], are non-decreasing in
t, and reach 1 at t = t_grow (and stay there). Values at the first and last epoch:

* ``root`` (the paper's): sqrt((1 - l0^2) / T * t + l0^2); 0.1864 at t=1 for l0=0.1, T=40.
* ``linear``: l0 + (1 - l0) t / T.
* ``quadratic``: l0 + (1 - l0) (t / T)^2 (slow start).
* ``geometric``: l0^(1 - t/T) (exponential growth from l0 to 1).
* ``step``: l0 + (1 - l0) floor(STEPS t / T) / STEPS, four equal steps; exactly l0 at t=1 when T >= 4.
"""

from __future__ import annotations

import math
from typing import Callable

from bss_cli.errors import ConfigError

STEPS = 4


def root(t: int, *, lambda0: float, t_grow: int) -> float:
    return min(1.0, math.sqrt((1 - lambda0**2) / t_grow * t + lambda0**2))


def linear(t: int, *, lambda0: float, t_grow: int) -> float:
    return min(1.0, lambda0 + (1 - lambda0) * t / t_grow)


def quadratic(t: int, *, lambda0: float, t_grow: int) -> float:
    return min(1.0, lambda0 + (1 - lambda0) * (t / t_grow) ** 2)


def geometric(t: int, *, lambda0: float, t_grow: int) -> float:
    return min(1.0, lambda0 ** max(0.0, 1 - t / t_grow))


def step(t: int, *, lambda0: float, t_grow: int) -> float:
    return min(1.0, lambda0 + (1 - lambda0) * math.floor(STEPS * t / t_grow) / STEPS)


PACING: dict[str, Callable[..., float]] = {
    "root": root, "linear": linear, "quadratic": quadratic, "geometric": geometric, "step": step,
}


def check_pacing(name: str, lambda0: float, t_grow: int) -> Callable[..., float]:
    if name not in PACING:
        raise ConfigError(f"unknown pacing {name!r}; choose one of: {', '.join(PACING)}")
    if not 0 < lambda0 <= 1:
        raise ConfigError(f"--lambda0 {lambda0}: expected a fraction in (0, 1]")
    if t_grow < 1:
        raise ConfigError(f"--t-grow {t_grow}: expected a number of epochs >= 1")
    return PACING[name]


def subset_size(n: int, fraction: float) -> int:
    """floor(n * fraction), at least 1 and at most n."""
    return max(1, min(n, math.floor(n * fraction)))

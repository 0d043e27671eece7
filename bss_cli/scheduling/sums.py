"""Exact sums of float64 arrays: the same result whatever order or partition the values come in.

numpy's ``sum`` rounds as it goes (pairwise), so a sum over partitions differs from the sum over
the whole array in the last bits, and the learned sampler's p_i = w_i / sum(w) with it. Here each
value x = m * 2**(e - 53) (m an integer of 53 bits) adds m into the integer total of its exponent
e, held as two int64 halves that cannot overflow; a partition's totals add exactly into another's,
and the float is rounded once, at the end (correctly: via an exact fraction).
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np

_SHIFT = 26  # m = hi * 2**26 + lo; hi < 2**27, lo < 2**26
_CHUNK = 1 << 20  # values per pass: a chunk's half-sums stay below 2**53, exact in float64 bincounts
_BIAS = 1100  # exponents from frexp lie in -1073..1024


def partial(x: np.ndarray) -> dict[int, int]:
    """The exact sum of ``x`` as {exponent: integer}: value = sum(integer * 2**(exponent - 53))."""
    x = np.asarray(x, np.float64)
    if not np.isfinite(x).all():
        raise ValueError("an exact sum needs finite values")
    totals: dict[int, int] = {}
    for start in range(0, len(x), _CHUNK):
        m, e = np.frexp(x[start:start + _CHUNK])
        mi = np.ldexp(m, 53).astype(np.int64)  # exact: |m| < 1 holds 53 bits
        idx = e.astype(np.int64) + _BIAS
        hi = np.bincount(idx, weights=(mi >> _SHIFT).astype(np.float64), minlength=1)
        lo = np.bincount(idx, weights=(mi & ((1 << _SHIFT) - 1)).astype(np.float64), minlength=1)
        for i in np.flatnonzero((hi != 0) | (lo != 0)):
            exp = int(i) - _BIAS
            totals[exp] = totals.get(exp, 0) + (int(hi[i]) << _SHIFT) + int(lo[i])
    return totals


def merge(*parts: dict[int, int]) -> dict[int, int]:
    out: dict[int, int] = {}
    for p in parts:
        for exp, value in p.items():
            out[exp] = out.get(exp, 0) + value
    return out


def total(parts: dict[int, int]) -> float:
    """The float nearest the exact sum the parts hold."""
    if not parts:
        return 0.0
    low = min(parts)
    integer = sum(value << (exp - low) for exp, value in parts.items())
    return float(Fraction(integer) * Fraction(2) ** (low - 53))


def exact_sum(x: np.ndarray) -> float:
    """sum(x), correctly rounded: independent of the order and grouping of the values."""
    return total(partial(x))

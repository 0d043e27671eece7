"""Counter-based random keys: the random number of a sample is a function of (seed, stream, row).

Every random order bss draws (the learned scheduler's weighted draw, a curriculum's shuffle within
an epoch, the random baseline, the controls' fixed permutations) is a sort by per-row keys, and
each key comes from Philox4x32-10 (Salmon et al., SC 2011; the counter-based generator of
Random123, cuRAND and JAX) evaluated at the counter (row, stream) under the key seed. No state
passes from one row to the next, so a row's key is the same whichever machine, process, block or
partition computes it, and an order computed one block at a time (``bss schedule --engine ray``)
is the same order, byte for byte, as one computed on one machine.

Ties (two equal keys) are broken by the manifest row, so every sort here is ``(key, row)``.
"""

from __future__ import annotations

import numpy as np

_M0, _M1 = np.uint64(0xD2511F53), np.uint64(0xCD9E8D57)
_W0, _W1 = np.uint64(0x9E3779B9), np.uint64(0xBB67AE85)
_LOW = np.uint64(0xFFFFFFFF)
_32 = np.uint64(32)

# stream numbers: an epoch's draws use stream = epoch (0 .. 2**62); the controls' fixed orders use
# CONTROL_STREAM, which no epoch reaches, so a control's order is independent of every epoch's.
CONTROL_STREAM = 2**63
DRAW = "philox4x32-10(key=seed, counter=(row, stream))"  # recorded in every schedule (bss.draw)


def philox4x32(counter: tuple, key: tuple, rounds: int = 10) -> tuple[np.ndarray, ...]:
    """Philox4x32 over arrays: ``counter`` four uint32 words (arrays or ints), ``key`` two; returns
    the four output words as uint64 arrays holding 32-bit values."""
    c0, c1, c2, c3 = (np.asarray(c, dtype=np.uint64) & _LOW for c in counter)
    k0, k1 = (np.uint64(int(k) & 0xFFFFFFFF) for k in key)
    with np.errstate(over="ignore"):  # the products fit in 64 bits; the key bumps wrap on purpose
        for r in range(rounds):
            if r:
                k0, k1 = (k0 + _W0) & _LOW, (k1 + _W1) & _LOW
            p0, p1 = _M0 * c0, _M1 * c2
            c0, c1, c2, c3 = ((p1 >> _32) ^ c1 ^ k0, p1 & _LOW, (p0 >> _32) ^ c3 ^ k1, p0 & _LOW)
    return c0, c1, c2, c3


def _words(seed: int, stream: int, rows) -> tuple[np.ndarray, np.ndarray]:
    if not 0 <= int(seed) < 2**64:
        raise ValueError(f"seed {seed}: expected an integer in [0, 2**64)")
    if not 0 <= int(stream) < 2**64:
        raise ValueError(f"stream {stream}: expected an integer in [0, 2**64)")
    r = np.asarray(rows, dtype=np.int64)
    if r.size and r.min() < 0:
        raise ValueError("rows must be >= 0")
    r = r.astype(np.uint64)
    out = philox4x32((r & _LOW, r >> _32, int(stream) & 0xFFFFFFFF, int(stream) >> 32),
                     (int(seed) & 0xFFFFFFFF, int(seed) >> 32))
    return out[0], out[1]


def keys64(seed: int, stream: int, rows) -> np.ndarray:
    """A uniform 64-bit integer per row (uint64): the key of a uniform random permutation."""
    hi, lo = _words(seed, stream, rows)
    return (hi << _32) | lo


def uniform(seed: int, stream: int, rows) -> np.ndarray:
    """A uniform float64 in (0, 1) per row: 53 random bits, centred in their interval (never 0 or 1)."""
    return ((keys64(seed, stream, rows) >> np.uint64(11)).astype(np.float64) + 0.5) * 2.0**-53


def exponential(seed: int, stream: int, rows) -> np.ndarray:
    """A standard exponential E = -log U per row (finite: U lies in (0, 1))."""
    return -np.log(uniform(seed, stream, rows))


def order_by(key: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Positions that sort ``key`` ascending, ties by ``rows`` ascending (any input order)."""
    return np.lexsort((np.asarray(rows), np.asarray(key)))


def permutation(seed: int, stream: int, rows) -> np.ndarray:
    """Positions of ``rows`` in a uniform random order keyed by (seed, stream, row)."""
    rows = np.asarray(rows, dtype=np.int64)
    return order_by(keys64(seed, stream, rows), rows)


def weighted_order(p: np.ndarray, seed: int, stream: int, rows) -> np.ndarray:
    """Positions of ``rows`` in a draw without replacement with probabilities proportional to
    ``p`` (Efraimidis-Spirakis: ascending E_i / p_i with E_i ~ Exp(1)): the law of
    ``torch.multinomial(p, len(p), replacement=False)``."""
    rows = np.asarray(rows, dtype=np.int64)
    return order_by(exponential(seed, stream, rows) / np.asarray(p, np.float64), rows)

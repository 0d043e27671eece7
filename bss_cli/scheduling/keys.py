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
_LOW = np.uint64(0xFFFFFFFF)
_32 = np.uint64(32)

# stream numbers: an epoch's draws use stream = epoch (0 .. 2**62); the controls' fixed orders use
# CONTROL_STREAM, which no epoch reaches, so a control's order is independent of every epoch's.
CONTROL_STREAM = 2**63
DRAW = "philox4x32-10(key=seed, counter=(row, stream))"  # recorded in every schedule (bss.draw)


def philox4x32(counter: tuple, key: tuple, rounds: int = 10) -> tuple[np.ndarray, ...]:
    """Philox4x32 over arrays: ``counter`` four uint32 words (arrays or ints, broadcast together),
    ``key`` two ints; returns the four output words as uint64 arrays holding 32-bit values.
    In place, a few buffers for the whole pass (numpy temporaries would triple its time)."""
    shape = np.broadcast_shapes(*(np.shape(c) for c in counter))
    c0, c1, c2, c3 = (np.broadcast_to(np.asarray(c, dtype=np.uint64) & _LOW, shape).copy() for c in counter)
    k0, k1 = int(key[0]) & 0xFFFFFFFF, int(key[1]) & 0xFFFFFFFF
    p0, p1 = np.empty_like(c0), np.empty_like(c0)
    for r in range(rounds):
        if r:
            k0, k1 = (k0 + 0x9E3779B9) & 0xFFFFFFFF, (k1 + 0xBB67AE85) & 0xFFFFFFFF
        np.multiply(c0, _M0, out=p0)  # both factors < 2**32: the product fits in 64 bits
        np.multiply(c2, _M1, out=p1)
        np.right_shift(p1, _32, out=c0)  # c0' = hi(M1 c2) ^ c1 ^ k0
        np.bitwise_xor(c0, c1, out=c0)
        np.bitwise_xor(c0, np.uint64(k0), out=c0)
        np.right_shift(p0, _32, out=c2)  # c2' = hi(M0 c0) ^ c3 ^ k1
        np.bitwise_xor(c2, c3, out=c2)
        np.bitwise_xor(c2, np.uint64(k1), out=c2)
        np.bitwise_and(p1, _LOW, out=c1)  # c1' = lo(M1 c2)
        np.bitwise_and(p0, _LOW, out=c3)  # c3' = lo(M0 c0)
    return c0, c1, c2, c3


_CHUNK = 1 << 16  # rows per pass: the round's temporaries stay in cache


def _words(seed: int, stream, rows) -> tuple[np.ndarray, np.ndarray]:
    """Two 32-bit output words per (row, stream); ``stream`` an int, or an array broadcast with
    ``rows`` (e.g. epochs as a column against rows as a row)."""
    if not 0 <= int(seed) < 2**64:
        raise ValueError(f"seed {seed}: expected an integer in [0, 2**64)")
    st = np.asarray(stream)
    if st.size and (int(st.min()) < 0 or int(st.max()) >= 2**64):
        raise ValueError(f"stream {stream}: expected integers in [0, 2**64)")
    r = np.asarray(rows, dtype=np.int64)
    if r.size and r.min() < 0:
        raise ValueError("rows must be >= 0")
    shape = np.broadcast_shapes(r.shape, st.shape)
    r = np.broadcast_to(r.view(np.uint64), shape).reshape(-1)
    st = np.broadcast_to(st.astype(np.uint64), shape).reshape(-1)
    hi, lo = np.empty(len(r), np.uint64), np.empty(len(r), np.uint64)
    key = (int(seed) & 0xFFFFFFFF, int(seed) >> 32)
    for a in range(0, len(r), _CHUNK):
        part, sp = r[a:a + _CHUNK], st[a:a + _CHUNK]
        out = philox4x32((part & _LOW, part >> _32, sp & _LOW, sp >> _32), key)
        hi[a:a + _CHUNK], lo[a:a + _CHUNK] = out[0], out[1]
    return hi.reshape(shape), lo.reshape(shape)


def keys64(seed: int, stream: int, rows) -> np.ndarray:
    """A uniform 64-bit integer per row (uint64): the key of a uniform random permutation."""
    hi, lo = _words(seed, stream, rows)
    np.left_shift(hi, _32, out=hi)
    return np.bitwise_or(hi, lo, out=hi)


def uniform(seed: int, stream: int, rows) -> np.ndarray:
    """A uniform float64 in (0, 1) per row: 53 random bits, centred in their interval (never 0 or 1)."""
    hi, lo = _words(seed, stream, rows)
    np.left_shift(hi, np.uint64(21), out=hi)  # the first word's 32 bits, then 21 of the second's
    np.right_shift(lo, np.uint64(11), out=lo)
    u = np.bitwise_or(hi, lo, out=hi).astype(np.float64)
    u += 0.5
    u *= 2.0**-53
    return u


def exponential(seed: int, stream: int, rows) -> np.ndarray:
    """A standard exponential E = -log U per row (finite: U lies in (0, 1))."""
    e = uniform(seed, stream, rows)
    np.log(e, out=e)
    return np.negative(e, out=e)


def order_by(key: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Positions that sort ``key`` ascending, ties by ``rows`` ascending (any input order).

    Random keys almost never tie, so the fast unstable sort is tried first: with no two equal keys
    its result is the only ascending order; where keys tie, the (key, row) sort decides."""
    key, rows = np.asarray(key), np.asarray(rows)
    idx = np.argsort(key)
    ordered = key[idx]
    if not (ordered[1:] == ordered[:-1]).any():
        return idx
    return np.lexsort((rows, key))


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

"""numba twins of the integer rounding rules of :mod:`quant.ops` (the only copy in the project).

Scalar int64 functions, jitted with ``inline="always"`` so a caller's kernel compiles them into its
own loop (the deterministic requantiser is branch free and vectorises). Every simulator kernel
(:mod:`hwsim.fixed_point`, :mod:`hwsim.onchip`) rounds through these; the torch paths use
:mod:`quant.ops` on tensors, an independent implementation of the same rules, and the tests compare
both bit for bit.

* :func:`requant_det` / :func:`requant_stoch`: ``quant.ops.requantize(a, m, sh, rounding)`` for one
  value; ``nearest_even`` / ``floor`` resp. ``stochastic`` (up with probability remainder / 2**sh,
  decided by ``uniform_u24(seed, step, tid, idx)`` exactly as :func:`quant.ops.shift_round`).
* :func:`requant`: the same, dispatched on the rounding code at run time.
* :func:`overflow_scalar`: ``quant.ops.overflow(v, acc_bits, signed=True, mode)`` and the flag.
* :func:`hash_u32`: :func:`quant.rng.hash_u32_scalar` jitted.
* :func:`normal_f64`: :func:`quant.rng.normal_f64_scalar` on the jitted hash (the analog and device
  kernels' one normal draw).

Rounding codes (:data:`ROUNDING_CODES`): 0 nearest_even, 1 floor, 2 stochastic.

>>> from quant import ops
>>> [int(requant(a, 3, 2, 0, 0, 0, 0, 0)) for a in (-3, -2, 1, 2, 6)] == ops.requantize(np.array([-3, -2, 1, 2, 6]), 3, 2, "nearest_even").tolist()
True
>>> int(requant(5, 1, 1, ROUNDING_CODES["floor"], 0, 0, 0, 0)), overflow_scalar(130, 8, True)
(2, (-126, True))
"""
from __future__ import annotations

import math

import numba
import numpy as np

from . import rng

ROUNDING_CODES = {"nearest_even": 0, "floor": 1, "stochastic": 2}
"""Integer code of each rounding mode inside numba kernels."""

hash_u32 = numba.njit(cache=True)(rng.hash_u32_scalar)


@numba.njit(cache=True)
def normal_f64(seed, step, tid, index):
    """numba twin of :func:`quant.rng.normal_f64_scalar` (Box-Muller on hashes ``2 index``, ``2 index + 1``).

    >>> abs(normal_f64(3, 1, 7, 11) - rng.normal_f64_scalar(3, 1, 7, 11)) < 1e-15
    True
    """
    h0 = hash_u32(seed, step, tid, 2 * index)
    h1 = hash_u32(seed, step, tid, 2 * index + 1)
    u1 = (h0 + 0.5) / 4294967296.0
    u2 = h1 / 4294967296.0
    return math.sqrt(-2.0 * math.log(u1)) * math.cos(2.0 * math.pi * u2)


@numba.njit(cache=True, inline="always")
def requant_det(a, m, sh, rmode, seed, step, tid, idx):
    """``round(a * m / 2**sh)`` for one int64, ``nearest_even`` (rmode 0) or ``floor`` (1):
    branch-free; ``sh <= 0`` is an exact left shift, as in :func:`quant.ops.requantize`. The
    counters are unused (same signature as :func:`requant_stoch`)."""
    lsh = max(-sh, 0)
    rsh = max(sh, 0)
    p = (a * m) << lsh
    q = p >> rsh
    r = p - (q << rsh)  # remainder in [0, 2**rsh)
    half = (np.int64(1) << rsh) >> 1
    up = (rmode == 0) & (rsh > 0) & ((r > half) | ((r == half) & ((q & 1) == 1)))
    return q + up


@numba.njit(cache=True, inline="always")
def requant_stoch(a, m, sh, rmode, seed, step, tid, idx):
    """Stochastic ``round(a * m / 2**sh)``: up with probability remainder / 2**sh, decided by
    ``uniform_u24(seed, step, tid, idx)`` exactly as :func:`quant.ops.shift_round`."""
    lsh = max(-sh, 0)
    rsh = max(sh, 0)
    p = (a * m) << lsh
    q = p >> rsh
    r = p - (q << rsh)
    if rsh == 0:
        return q
    u = hash_u32(seed, step, tid, idx) >> 8  # uniform_u24
    if rsh <= 24:
        up = (u >> (24 - rsh)) < r
    else:
        up = u < (r >> (rsh - 24))
    return q + up


@numba.njit(cache=True, inline="always")
def requant(a, m, sh, rmode, seed, step, tid, idx):
    """:func:`requant_det` or :func:`requant_stoch` by the rounding code ``rmode``."""
    if rmode == 2:
        return requant_stoch(a, m, sh, rmode, seed, step, tid, idx)
    return requant_det(a, m, sh, rmode, seed, step, tid, idx)


@numba.njit(cache=True, inline="always")
def overflow_scalar(v, acc_bits, wrap):
    """``quant.ops.overflow(v, acc_bits, signed=True, mode)``; returns ``(value, overflowed)``."""
    hi = (np.int64(1) << (acc_bits - 1)) - 1
    lo = -hi - 1
    o = (v < lo) | (v > hi)
    if wrap:
        u = v & ((np.int64(1) << acc_bits) - 1)
        return u - ((u > hi) * (np.int64(1) << acc_bits)), o
    return min(max(v, lo), hi), o

"""Counter-based random numbers that numpy, torch and numba compute bit for bit alike.

A draw is a pure function of four counters, never of hidden generator state::

    h = hash_u32(seed, step, tensor_id, index)        # int in [0, 2**32)

so the fake-quant torch path and the numba integer simulator get the *same* stochastic
rounding decisions and noise realisations when they use the same counters ("paired seeds").

Counter convention (the one every path follows):

* ``seed``: the run's seed;
* ``step``: a monotone counter the caller advances (relaxation step, training step, ...);
* ``tensor_id``: a small integer naming the tensor being rounded (e.g. layer ``l`` state,
  layer ``l`` weight update); fix the ids in one place of your model;
* ``index``: the element's flat C-order index in that tensor.

All four are reduced modulo ``2**32`` (use non-negative values below ``2**32``).

The hash
--------
Each counter is folded in with murmur3's 32-bit finaliser ``fmix32`` (Appleby, MurmurHash3):
``h = fmix32(mul32(h ^ k, C_i))`` with a distinct odd constant per counter. Every operation
is on values ``< 2**48``: 32x32-bit products are split into 16-bit halves, so nothing
overflows int64 and the same source code is exact for Python ints, numpy int64, torch
int64 (which has no uint64 arithmetic) and numba int64.

:func:`hash_u32_scalar` uses only ``&``, ``^``, ``>>``, ``<<``, ``*``, ``+`` and a loop over a
tuple, so it runs unchanged on Python ints, numpy arrays, torch tensors and under
``numba.njit``::

    import numba
    hash_u32_nb = numba.njit(quant.rng.hash_u32_scalar)   # (int64 x4) -> int64

Exactness: every integer output here (:func:`hash_u32`, :func:`uniform_u24`) is bit-exact
across paths. :func:`normal_f64` is computed in float64 everywhere from bit-exact integer
uniforms; numpy/numba (libm) and torch ``log``/``cos`` may differ in the last ulp, so compare
it with :data:`quant.tolerances.RNG_NORMAL_F64`.
"""
from __future__ import annotations

import math

import numpy as np

try:  # torch is a dependency of quant, but keep the integer core importable without it
    import torch
except ImportError:  # pragma: no cover
    torch = None

MASK32 = 0xFFFFFFFF
U24_BITS = 24



def hash_u32_scalar(seed, step, tensor_id, index):
    """Hash four counters to a uniform integer in ``[0, 2**32)``.

    Written with integer operators only so that Python ints, numpy int64 arrays, torch int64
    tensors (broadcasting) and ``numba.njit`` all run this exact source and agree bit for bit.

    Args:
        seed, step, tensor_id, index: non-negative integers (or int64 arrays/tensors); taken
            modulo ``2**32``.

    Returns:
        Same kind as the inputs, values in ``[0, 2**32)``.

    >>> hash_u32_scalar(0, 0, 0, 0) == hash_u32_scalar(0, 0, 0, 0)
    True
    >>> hash_u32_scalar(1, 2, 3, 4) != hash_u32_scalar(1, 2, 3, 5)
    True
    >>> 0 <= hash_u32_scalar(7, 0, 1, 123456) < 2**32
    True
    """
    h = 0x6A09E667  # arbitrary non-zero start (sqrt(2) fraction bits)
    # one odd 32-bit multiplier per counter (golden ratio, murmur3 and xxhash primes)
    for k, c in ((seed, 0x9E3779B9), (step, 0x85EBCA6B), (tensor_id, 0xC2B2AE35), (index, 0x27D4EB2F)):
        h = (h ^ (k & 0xFFFFFFFF)) & 0xFFFFFFFF
        # h = h * c mod 2**32, split into 16-bit halves so products stay below 2**48
        h = ((h * (c & 0xFFFF)) + (((h * (c >> 16)) & 0xFFFF) << 16)) & 0xFFFFFFFF
        # murmur3 fmix32
        h = h ^ (h >> 16)
        h = ((h * 0xCA6B) + (((h * 0x85EB) & 0xFFFF) << 16)) & 0xFFFFFFFF  # * 0x85EBCA6B
        h = h ^ (h >> 13)
        h = ((h * 0xAE35) + (((h * 0xC2B2) & 0xFFFF) << 16)) & 0xFFFFFFFF  # * 0xC2B2AE35
        h = h ^ (h >> 16)
    return h


def _is_torch(*xs) -> bool:
    return torch is not None and any(isinstance(x, torch.Tensor) for x in xs)


def _as_int64(x, like_torch: bool, device=None):
    if like_torch:
        return torch.as_tensor(x, dtype=torch.int64, device=device)
    return np.asarray(x, dtype=np.int64)


def hash_u32(seed, step, tensor_id, index):
    """Vectorised :func:`hash_u32_scalar`: numpy int64 in, numpy int64 out; any torch tensor
    argument makes the whole computation torch int64 (on that tensor's device).

    >>> hash_u32(3, 0, 1, np.arange(3)).tolist() == [hash_u32_scalar(3, 0, 1, i) for i in range(3)]
    True
    """
    if _is_torch(seed, step, tensor_id, index):
        dev = next(x.device for x in (seed, step, tensor_id, index) if isinstance(x, torch.Tensor))
        args = [_as_int64(x, True, dev) for x in (seed, step, tensor_id, index)]
    else:
        args = [_as_int64(x, False) for x in (seed, step, tensor_id, index)]
    return hash_u32_scalar(*args)


def uniform_u24(seed, step, tensor_id, index):
    """Uniform integers in ``[0, 2**24)``: the top 24 bits of :func:`hash_u32`.

    The primitive for stochastic rounding: round up iff ``u24 < frac * 2**24`` (an exact
    integer/float comparison), see :func:`quant.ops.shift_round`.

    >>> u = uniform_u24(0, 0, 0, np.arange(1000)); bool(u.min() >= 0 and u.max() < 2**24)
    True
    """
    return hash_u32(seed, step, tensor_id, index) >> 8


def uniform_u24_scalar(seed, step, tensor_id, index):
    """Pure-Python scalar twin of :func:`uniform_u24`. In numba, jit :func:`hash_u32_scalar`
    and shift its result right by 8 (a jitted function cannot call this un-jitted one).

    >>> uniform_u24_scalar(1, 2, 3, 4) == int(uniform_u24(1, 2, 3, 4))
    True
    """
    return hash_u32_scalar(seed, step, tensor_id, index) >> 8


def normal_f64_scalar(seed, step, tensor_id, index):
    """One standard normal draw by Box-Muller in float64 (numba-compatible with ``math``).

    Uses the hashes at ``index2 = 2*index`` and ``2*index + 1`` (so ``index < 2**31``):
    ``u1 = (h0 + 0.5) / 2**32`` in ``(0, 1)``, ``u2 = h1 / 2**32``,
    ``z = sqrt(-2 ln u1) cos(2 pi u2)``. numba cannot call this Python function from jitted
    code: jit it too, together with :func:`hash_u32_scalar` (see module docstring), or
    re-implement the 4 lines on top of a jitted hash.

    >>> abs(normal_f64_scalar(0, 0, 0, 0) - float(normal_f64(0, 0, 0, 0))) < 1e-12
    True
    """
    h0 = hash_u32_scalar(seed, step, tensor_id, 2 * index)
    h1 = hash_u32_scalar(seed, step, tensor_id, 2 * index + 1)
    u1 = (h0 + 0.5) / 4294967296.0
    u2 = h1 / 4294967296.0
    return math.sqrt(-2.0 * math.log(u1)) * math.cos(2.0 * math.pi * u2)


def normal_f64(seed, step, tensor_id, index):
    """Vectorised standard normals (float64), numpy or torch like :func:`hash_u32`.

    >>> z = normal_f64(0, 0, 0, np.arange(20000)); bool(abs(z.mean()) < 0.05 and abs(z.std() - 1) < 0.05)
    True
    """
    t = _is_torch(seed, step, tensor_id, index)
    idx = index
    h0 = hash_u32(seed, step, tensor_id, 2 * idx)
    h1 = hash_u32(seed, step, tensor_id, 2 * idx + 1)
    if t:
        u1 = (h0.to(torch.float64) + 0.5) / 4294967296.0
        u2 = h1.to(torch.float64) / 4294967296.0
        return torch.sqrt(-2.0 * torch.log(u1)) * torch.cos(2.0 * math.pi * u2)
    u1 = (h0.astype(np.float64) + 0.5) / 4294967296.0
    u2 = h1.astype(np.float64) / 4294967296.0
    return np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * math.pi * u2)


def element_index(shape, offset: int = 0):
    """Flat C-order element indices ``offset + arange(prod(shape))`` reshaped to ``shape``.

    >>> element_index((2, 3), offset=10).tolist()
    [[10, 11, 12], [13, 14, 15]]
    """
    n = int(np.prod(shape)) if len(shape) else 1
    return (np.arange(n, dtype=np.int64) + offset).reshape(shape)


# ---------------------------------------------------------------------------- tensor ids
# The one scheme naming every tensor a simulator draws random numbers for. ``tensor_id(kind, layer,
# side) = base + stride * layer + side``; the bases and strides encode the formulas each simulator
# used before the scheme was shared, so every existing id (and every integer metric derived from
# stochastic draws) is unchanged:
#   state roundings of the fixed-point simulator  4 * layer + {0 forward, 1 feedback, 2 nudge}
#   input quantisation                            2**20
#   extra interaction terms (skip couplings, ...)  2**21 + 64 * node + term index at that node
#   on-chip update of layer i                     2**24 + 2 * i (+1 for the bias register)
#   analog crossbar                               kind * 1000 + 2 * layer + side (g+/g-, fwd/transpose)
KIND_STATE_FWD = "state_fwd"
KIND_STATE_FB = "state_fb"
KIND_NUDGE = "nudge"
KIND_STATE_TERM = "state_term"
KIND_INPUT = "input"
KIND_UPDATE_W = "update_w"
KIND_UPDATE_B = "update_b"
KIND_STUCK = "stuck"
KIND_PROG = "prog"
KIND_DRIFT = "drift"
KIND_READ = "read"
KIND_ANALOG_UPDATE = "analog_update"

TENSOR_ID_LAYOUT: dict[str, tuple[int, int, int, int]] = {
    # kind: (base, stride per layer, sides, layers) -- ids of one family never collide
    KIND_STATE_FWD: (0, 4, 1, 1 << 18),
    KIND_STATE_FB: (1, 4, 1, 1 << 18),
    KIND_NUDGE: (2, 4, 1, 1 << 18),
    KIND_INPUT: (1 << 20, 0, 1, 1),
    KIND_STATE_TERM: (1 << 21, 64, 64, 1 << 16),
    KIND_UPDATE_W: (1 << 24, 2, 1, 1 << 22),
    KIND_UPDATE_B: ((1 << 24) + 1, 2, 1, 1 << 22),
    KIND_STUCK: (1000, 2, 2, 500),
    KIND_PROG: (2000, 2, 2, 500),
    KIND_DRIFT: (3000, 2, 2, 500),
    KIND_READ: (4000, 2, 2, 500),
    KIND_ANALOG_UPDATE: (5000, 2, 2, 500),
}
"""``kind -> (base, stride, n_sides, n_layers)`` of :func:`tensor_id`. Families (the ids one simulator
uses together): fixed point + on-chip learning (state, nudge, input, term, update kinds), analog
crossbar (stuck, prog, drift, read, analog_update)."""


def tensor_id(kind: str, layer: int = 0, side: int = 0) -> int:
    """Counter ``tensor_id`` of the tensor ``(kind, layer, side)``: ``base + stride * layer + side``.

    ``side``: which of a layer's twin tensors (analog: 0 ``g+`` / forward read, 1 ``g-`` / transpose
    read; :data:`KIND_STATE_TERM`: the index of the extra term at that node). See
    :data:`TENSOR_ID_LAYOUT`.

    >>> tensor_id(KIND_NUDGE, 1), tensor_id(KIND_INPUT), tensor_id(KIND_UPDATE_B, 1), tensor_id(KIND_READ, 1, 1)
    (6, 1048576, 16777219, 4003)
    >>> tensor_id("spin", 0)
    Traceback (most recent call last):
    ...
    ValueError: tensor kind 'spin' is invalid; allowed: one of ('state_fwd', 'state_fb', 'nudge', 'input', 'state_term', 'update_w', 'update_b', 'stuck', 'prog', 'drift', 'read', 'analog_update')
    """
    try:
        base, stride, n_sides, n_layers = TENSOR_ID_LAYOUT[kind]
    except (KeyError, TypeError):
        raise ValueError(f"tensor kind {kind!r} is invalid; allowed: one of {tuple(TENSOR_ID_LAYOUT)}") from None
    layer, side = int(layer), int(side)
    if not (0 <= layer < n_layers and 0 <= side < n_sides):
        raise ValueError(f"tensor_id({kind!r}, layer={layer}, side={side}) is out of range; allowed: "
                         f"0 <= layer < {n_layers}, 0 <= side < {n_sides}")
    return base + stride * layer + side

"""On-chip EqProp learning in fixed point: the weight update computed from integer state codes.

The chip holds, per synapse, a signed ``hidden_bits`` hidden weight ``H`` (spec.update) whose weight
code is ``W = hidden_to_code(H)`` (:func:`quant.hidden_to_code`), and per neuron a bias register
``H_b`` of ``acc_bits`` (the bias is the weight of a constant input ``1.0``, i.e. of the state code
``2**frac_bits``, kept in the wide accumulator register). The weight scale of every row is fixed at
programming time, so a weight is ``W * scale`` and a bias ``H_b * scale / 2**(hidden_bits - bits)``.

After a phase pair with state codes ``c^1`` (free or ``-beta``) and ``c^2`` (``+beta``), layer ``i``
(``c_{-1} = x`` codes, the same in both phases) gets the integer products, summed over the batch::

    P_W[i] = sum_b  c^2_i[b] c^2_{i-1}[b]^T - c^1_i[b] c^1_{i-1}[b]^T        (n_i, n_{i-1})
    P_b[i] = 2**frac_bits * sum_b (c^2_i[b] - c^1_i[b])                         (n_i,)

and the update of :func:`quant.apply_update` (one integer multiply, one rounding shift, saturation)::

    H   <- sat_hidden_bits(H   + round(P_W * lr_multiplier / 2**lr_shift))
    H_b <- sat_acc_bits   (H_b + round(P_b * lr_multiplier / 2**lr_shift))

with stochastic rounding (counters ``(seed, step, tensor_id, flat index)``, ``tensor_id`` from
:func:`update_tensor_id`) when ``spec.update.stochastic`` and nearest-even otherwise. This is
``+lr (dPhi/dtheta(s^2) - dPhi/dtheta(s^1))``, i.e. a step against the EqProp gradient estimate
``-(dPhi/dtheta(s^2) - dPhi/dtheta(s^1)) / (b2 - b1)`` with ``1 / (B (b2 - b1))`` absorbed in the rate.

Two independent implementations agree bit for bit: :func:`update_numba` (integer loops in numba,
its own rounding and rng calls) and :func:`update_torch` (float64 BLAS products, exact because
``|P| < 2**53``, then :func:`quant.apply_update`).

>>> import numpy as np
>>> from quant import get_preset
>>> spec = get_preset("int8")
>>> H = [np.zeros((2, 3), np.int64)]; Hb = [np.zeros(2, np.int64)]
>>> x = np.array([[128, 0, 64]]); c1 = [np.array([[10, 20]])]; c2 = [np.array([[12, 20]])]
>>> Hn, Hbn = update_numba(H, Hb, x, c1, c2, [spec], seed=0, step=0)
>>> Hn[0].tolist()          # 2*128*1 / 2**8 = 1, 2*64 / 2**8 = 0.5 -> stochastic 0 or 1
[[1, 0, 1], [0, 0, 0]]
>>> Ht, Hbt = update_torch(H, Hb, x, c1, c2, [spec], seed=0, step=0)
>>> all(np.array_equal(a, b) for a, b in zip(Hn + Hbn, Ht + Hbt))
True
"""
from __future__ import annotations

import dataclasses
import logging
import math
from typing import Sequence

import numba
import numpy as np
import torch

from quant import HardwareSpec, apply_update, hidden_to_code, ops, rng

log = logging.getLogger("eqprop_hwsim.hwsim.onchip")

UPDATE_TENSOR_ID_BASE = 1 << 20
"""``tensor_id`` of layer ``i``'s weight update is ``BASE + 2 i``, of its bias ``BASE + 2 i + 1``
(far above the ids a relaxation uses for stochastic state rounding)."""


def update_tensor_id(layer: int, bias: bool = False) -> int:
    """Counter ``tensor_id`` of a layer's weight (or bias) update.

    >>> update_tensor_id(0), update_tensor_id(1, bias=True)
    (1048576, 1048579)
    """
    return UPDATE_TENSOR_ID_BASE + 2 * int(layer) + int(bool(bias))


def check_update_spec(spec) -> HardwareSpec:
    """``spec`` if it can learn on chip (integer weights and states, an ``update``), else ``ValueError``."""
    if not isinstance(spec, HardwareSpec):
        raise ValueError(f"spec={spec!r} is invalid; allowed: a HardwareSpec (e.g. quant.get_preset('int8'))")
    if spec.update is None or not spec.is_integer:
        raise ValueError(f"spec {spec.name!r} cannot learn on chip: need integer weights, integer states, "
                         "acc_bits and an update section (presets int8, int4, ternary)")
    return spec


def bias_bits(spec: HardwareSpec) -> int:
    """Width of the bias register: the accumulator width ``spec.acc_bits`` (at least hidden_bits)."""
    return max(int(spec.acc_bits), spec.update.hidden_bits)


def bias_update_spec(spec: HardwareSpec) -> HardwareSpec:
    """``spec`` with ``update.hidden_bits`` set to :func:`bias_bits` (the bias register's update)."""
    return spec.replace(update=dataclasses.replace(spec.update, hidden_bits=bias_bits(spec)))


def update_spec_for_lr(spec: HardwareSpec, lr: float, *, weight_scale: float, batch_size: int,
                       beta_span: float, multiplier_bits: int = 8) -> HardwareSpec:
    """``spec`` whose ``(lr_multiplier, lr_shift)`` realise a float SGD rate ``lr`` on weights of scale ``weight_scale``.

    Float EqProp SGD moves a weight by ``lr * P 2**(-2 f) / (B (b2 - b1))`` (``f`` = state frac bits);
    on chip that is ``lr P 2**(hidden_bits - bits - 2 f) / (B (b2 - b1) weight_scale)`` hidden LSBs,
    turned into an integer pair by :func:`quant.ops.quantize_multiplier`.

    >>> from quant import get_preset
    >>> u = update_spec_for_lr(get_preset("int8"), 0.05, weight_scale=2**-10, batch_size=100, beta_span=1.0).update
    >>> (u.lr_multiplier, u.lr_shift)     # 0.05 * 2**8 * 2**-14 * 2**10 / 100 = 0.008
    (131, 14)
    """
    check_update_spec(spec)
    if not (lr > 0 and weight_scale > 0 and batch_size >= 1 and beta_span > 0):
        raise ValueError(f"lr={lr}, weight_scale={weight_scale}, batch_size={batch_size}, beta_span={beta_span}; "
                         "allowed: all > 0")
    f = spec.state.frac_bits
    real = lr * math.ldexp(1.0, spec.update.hidden_bits - spec.weights.bits - 2 * f) / (
        batch_size * beta_span * weight_scale)
    mult, shift = ops.quantize_multiplier(real, multiplier_bits)
    if shift < 0:
        raise ValueError(f"lr={lr} is too large for the update (needs a left shift); lower it")
    shift = min(shift, 62)
    return spec.replace(update=dataclasses.replace(spec.update, lr_multiplier=int(mult), lr_shift=int(shift)))


# --------------------------------------------------------------------------------------------- checks
def _as_i64(a, name: str) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        a = a.detach().cpu().numpy()
    a = np.asarray(a)
    if a.dtype.kind not in "iu":
        raise ValueError(f"{name} has dtype {a.dtype}; allowed: integer codes (int64)")
    return a.astype(np.int64, copy=False)


def _check_args(H, Hb, x, c1, c2, specs):
    n = len(H)
    if not (len(Hb) == len(c1) == len(c2) == len(specs) == n) or n == 0:
        raise ValueError(f"got {len(H)} hidden weights, {len(Hb)} biases, {len(c1)}/{len(c2)} states, "
                         f"{len(specs)} specs; allowed: one of each per layer")
    x = _as_i64(x, "x")
    H = [_as_i64(h, f"hidden[{i}]") for i, h in enumerate(H)]
    Hb = [_as_i64(h, f"bias_hidden[{i}]") for i, h in enumerate(Hb)]
    c1 = [_as_i64(c, f"s1[{i}]") for i, c in enumerate(c1)]
    c2 = [_as_i64(c, f"s2[{i}]") for i, c in enumerate(c2)]
    for i in range(n):
        check_update_spec(specs[i])
        pre = x if i == 0 else c1[i - 1]
        if H[i].shape != (c1[i].shape[1], pre.shape[1]) or c1[i].shape != c2[i].shape or Hb[i].shape != (H[i].shape[0],):
            raise ValueError(f"layer {i}: hidden {H[i].shape}, bias {Hb[i].shape}, states {c1[i].shape}/"
                             f"{c2[i].shape}, input {pre.shape}; allowed: H (n_i, n_prev), bias (n_i,), "
                             "states (B, n_i) with matching B")
        st = specs[i].state
        for name, c in (("s1", c1[i]), ("s2", c2[i])):
            if c.size and (c.min() < st.qmin or c.max() > st.qmax):
                raise ValueError(f"{name}[{i}] has codes outside [{st.qmin}, {st.qmax}] of the state format")
        bound = 2 * c1[i].shape[0] * st.qmax * max(st.qmax, 2**st.frac_bits) * specs[i].update.lr_multiplier
        if bound >= 2**62:
            raise ValueError(f"layer {i}: batch {c1[i].shape[0]} x lr_multiplier {specs[i].update.lr_multiplier} "
                             "may overflow int64; allowed: a smaller batch or multiplier")
    return H, Hb, x, c1, c2


# --------------------------------------------------------------------------------------------- numba
_hash_nb = numba.njit(cache=True)(rng.hash_u32_scalar)


@numba.njit(cache=True)
def _round_shift_nb(prod, shift, stochastic, seed, step, tid, idx):
    """round(prod / 2**shift): stochastic (u24 counters) or nearest-even; mirrors quant.ops.shift_round."""
    if shift == 0:
        return prod
    q = prod >> shift
    r = prod - (q << shift)
    if stochastic:
        u = _hash_nb(seed, step, tid, idx) >> 8
        if shift <= 24:
            up = (u >> (24 - shift)) < r
        else:
            up = u < (r >> (shift - 24))
    else:
        half = np.int64(1) << (shift - 1)
        up = (r > half) or (r == half and (q & 1) == 1)
    return q + (1 if up else 0)


@numba.njit(cache=True)
def _update_weight_nb(H, post2T, pre2T, post1T, pre1T, mult, shift, stochastic, seed, step, tid, hmin, hmax):
    """In place: H[i, j] <- sat(H + round(mult * sum_b (post2[b,i] pre2[b,j] - post1[b,i] pre1[b,j]) / 2**shift))."""
    n, m = H.shape
    nb = post2T.shape[1]
    for i in range(n):
        for j in range(m):
            p = np.int64(0)
            for b in range(nb):
                p += post2T[i, b] * pre2T[j, b] - post1T[i, b] * pre1T[j, b]
            h = H[i, j] + _round_shift_nb(p * mult, shift, stochastic, seed, step, tid, np.int64(i * m + j))
            H[i, j] = min(max(h, hmin), hmax)


@numba.njit(cache=True)
def _update_bias_nb(Hb, post2T, post1T, one, mult, shift, stochastic, seed, step, tid, hmin, hmax):
    n, nb = post2T.shape
    for i in range(n):
        p = np.int64(0)
        for b in range(nb):
            p += post2T[i, b] - post1T[i, b]
        h = Hb[i] + _round_shift_nb(p * one * mult, shift, stochastic, seed, step, tid, np.int64(i))
        Hb[i] = min(max(h, hmin), hmax)


@numba.njit(cache=True)
def hidden_to_code_nb(H, extra_bits, qmin, qmax):
    """numba twin of :func:`quant.hidden_to_code`: clamp(round_half_even(H / 2**extra_bits))."""
    out = np.empty_like(H)
    flat_in = H.ravel()
    flat = out.ravel()
    for k in range(flat_in.size):
        c = _round_shift_nb(flat_in[k], extra_bits, False, 0, 0, 0, 0)
        flat[k] = min(max(c, qmin), qmax)
    return out


def update_numba(hidden: Sequence, bias_hidden: Sequence, x, s1: Sequence, s2: Sequence,
                 specs: Sequence[HardwareSpec], *, seed: int, step: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """One on-chip EqProp update in numba (see module docstring); returns new arrays (inputs untouched).

    Args:
        hidden: per layer, int64 hidden weights ``(n_i, n_{i-1})``.
        bias_hidden: per layer, int64 bias registers ``(n_i,)``.
        x: input codes ``(B, n_in)``.
        s1, s2: per layer, state codes ``(B, n_i)`` of the two phases (``s2`` the ``+beta`` one).
        specs: per layer, the spec whose ``update`` applies (usually the same spec repeated).
        seed, step: counters of the stochastic rounding.

    Returns:
        ``(hidden', bias_hidden')`` as lists of int64 numpy arrays.
    """
    H, Hb, x, c1, c2 = _check_args(hidden, bias_hidden, x, s1, s2, specs)
    outH, outB = [], []
    for i, spec in enumerate(specs):
        up = spec.update
        pre1 = x if i == 0 else c1[i - 1]
        pre2 = x if i == 0 else c2[i - 1]
        h = H[i].copy()
        hb = Hb[i].copy()
        post1T, post2T = np.ascontiguousarray(c1[i].T), np.ascontiguousarray(c2[i].T)
        _update_weight_nb(h, post2T, np.ascontiguousarray(pre2.T), post1T, np.ascontiguousarray(pre1.T),
                          up.lr_multiplier, up.lr_shift, up.stochastic, seed, step, update_tensor_id(i),
                          ops.min_int(True, False, up.hidden_bits), ops.max_int(True, False, up.hidden_bits))
        bb = bias_bits(spec)
        _update_bias_nb(hb, post2T, post1T, 2**spec.state.frac_bits, up.lr_multiplier, up.lr_shift,
                        up.stochastic, seed, step, update_tensor_id(i, True),
                        ops.min_int(True, False, bb), ops.max_int(True, False, bb))
        outH.append(h)
        outB.append(hb)
    return outH, outB


def update_torch(hidden: Sequence, bias_hidden: Sequence, x, s1: Sequence, s2: Sequence,
                 specs: Sequence[HardwareSpec], *, seed: int, step: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The same update as :func:`update_numba`, independently: float64 BLAS outer products (exact,
    ``|P| < 2**53``) and :func:`quant.apply_update` in torch int64. Same arguments and returns."""
    H, Hb, x, c1, c2 = _check_args(hidden, bias_hidden, x, s1, s2, specs)
    outH, outB = [], []
    for i, spec in enumerate(specs):
        t = lambda a: torch.from_numpy(np.ascontiguousarray(a))
        pre1 = t(x if i == 0 else c1[i - 1]).double()
        pre2 = t(x if i == 0 else c2[i - 1]).double()
        a1, a2 = t(c1[i]).double(), t(c2[i]).double()
        p = (a2.t() @ pre2 - a1.t() @ pre1).round().to(torch.int64)
        pb = ((a2 - a1).sum(dim=0) * 2**spec.state.frac_bits).round().to(torch.int64)
        h = apply_update(t(H[i]), p, spec, seed=seed, step=step, tensor_id=update_tensor_id(i))
        hb = apply_update(t(Hb[i]), pb, bias_update_spec(spec), seed=seed, step=step,
                          tensor_id=update_tensor_id(i, True))
        outH.append(h.numpy())
        outB.append(hb.numpy())
    return outH, outB


def codes_numba(hidden: Sequence, spec: HardwareSpec) -> list[np.ndarray]:
    """Weight codes of every layer's hidden weights (numba twin of :func:`quant.hidden_to_code`)."""
    check_update_spec(spec)
    extra = spec.update.hidden_bits - spec.weights.bits
    return [hidden_to_code_nb(_as_i64(h, "hidden"), extra, spec.weights.qmin, spec.weights.qmax) for h in hidden]


def codes_torch(hidden: Sequence, spec: HardwareSpec) -> list[np.ndarray]:
    """Weight codes via :func:`quant.hidden_to_code` in torch."""
    check_update_spec(spec)
    return [hidden_to_code(torch.from_numpy(_as_i64(h, "hidden")), spec).numpy() for h in hidden]

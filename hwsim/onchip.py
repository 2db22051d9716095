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

A conv kernel (a ConvPool chain coupling, ``conv[i]`` set) gets the integer conv weight gradient:
``P_W[co, ci, dy, dx] = sum_b sum_{units u of co} c^2_i[b, u] c^2_{i-1}[b, ci, r(u) + (dy, dx) - p] - (phase 1)``
with ``r(u)`` the routed position of unit ``u`` (first maximum of the exact forward accumulator of the
chip's current codes, per phase), and its node one bias register per channel (``P_b[co]`` sums the
channel's units). numba (a scatter of the routed units) and torch (int64 unfold + bmm) agree bit for bit.

Two independent implementations agree bit for bit: :func:`update_numba` (integer loops in numba,
its own rounding and rng calls) and :func:`update_torch` (float64 BLAS products, exact because
``|P| < 2**53``, then :func:`quant.apply_update`).

>>> import numpy as np
>>> from quant import get_preset
>>> spec = get_preset("int8")
>>> H = [np.zeros((2, 3), np.int64)]; Hb = [np.zeros(2, np.int64)]
>>> x = np.array([[128, 0, 64]]); c1 = [np.array([[10, 20]])]; c2 = [np.array([[12, 20]])]
>>> Hn, Hbn = update_numba(H, Hb, x, c1, c2, [spec], seed=0, step=0)
>>> Hn[0][:, :2].tolist(), int(Hn[0][0, 2]) in (0, 1)   # 2*128 / 2**8 = 1; 2*64 / 2**8 = 0.5: SR to 0 or 1
([[1, 0], [0, 0]], True)
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

from models.energy import INPUT
from models.progress import progress as progress_bar
from models.engine import NUDGINGS, UnsupportedError, beta_span, check_nudging, run_phases, steps_per_update
from quant import HardwareSpec, apply_update, hidden_to_code, ops, rng
from quant.numba_ops import requant

log = logging.getLogger("eqprop_hwsim.hwsim.onchip")

BACKEND = "on-chip learning"
ONCHIP_NUDGINGS = tuple(m for m in NUDGINGS if m != "random_sign")
"""Nudging modes learned on chip (``random_sign`` draws its sign from a torch generator; the chip's
randomness is counter based only)."""
RMODE_NEAREST_EVEN, RMODE_STOCHASTIC = 0, 2  # quant.numba_ops.ROUNDING_CODES of the update roundings


def update_tensor_id(array: int, bias: bool = False) -> int:
    """Counter ``tensor_id`` of the update of synapse array ``array`` (chain layers first, then extra
    input couplings) or of node ``array``'s bias register: :func:`quant.rng.tensor_id`.

    >>> update_tensor_id(0), update_tensor_id(1, bias=True)
    (16777216, 16777219)
    """
    return rng.tensor_id(rng.KIND_UPDATE_B if bias else rng.KIND_UPDATE_W, array)


def check_update_spec(spec) -> HardwareSpec:
    """``spec`` if it can learn on chip (integer weights and states, an ``update``), else ``ValueError``
    (:class:`quant.UnsupportedError` naming this backend, the field and what it supports)."""
    return HardwareSpec.check(spec, BACKEND, integer=True, update=True)


def bias_bits(spec: HardwareSpec) -> int:
    """Width of the bias register: the accumulator width plus the hidden fraction bits below an
    accumulator LSB, ``acc_bits + hidden_bits - bits - frac_bits``, within [hidden_bits, 32].

    >>> from quant import get_preset
    >>> bias_bits(get_preset("int8")), bias_bits(get_preset("int4")), bias_bits(get_preset("ternary"))
    (32, 29, 31)
    """
    extra = spec.update.hidden_bits - spec.weights.bits - spec.state.frac_bits
    return min(32, max(int(spec.acc_bits) + max(extra, 0), spec.update.hidden_bits))


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


def chain_couplings(n_arrays: int) -> list[tuple[int, int]]:
    """``(post, pre)`` of the layered chain's synapse arrays: ``(i, i-1)``, ``(0, INPUT)`` for the first."""
    return [(i, i - 1 if i else INPUT) for i in range(n_arrays)]


def _check_args(H, Hb, x, c1, c2, specs, couplings=None, conv=None):
    n = len(c1)
    conv = list(conv) if conv is not None else [None] * n
    if len(conv) != n:
        raise ValueError(f"conv has {len(conv)} entries; allowed: one per node ({n})")
    couplings = chain_couplings(len(H)) if couplings is None else [tuple(c) for c in couplings]
    if not (len(Hb) == len(c2) == n and len(H) == len(specs) == len(couplings) >= n) or n == 0:
        raise ValueError(f"got {len(H)} hidden weights, {len(Hb)} biases, {len(c1)}/{len(c2)} states, "
                         f"{len(specs)} specs; allowed: one of each per layer (plus one weight and spec per "
                         "extra coupling)")
    x = _as_i64(x, "x")
    H = [_as_i64(h, f"hidden[{i}]") for i, h in enumerate(H)]
    Hb = [_as_i64(h, f"bias_hidden[{i}]") for i, h in enumerate(Hb)]
    c1 = [_as_i64(c, f"s1[{i}]") for i, c in enumerate(c1)]
    c2 = [_as_i64(c, f"s2[{i}]") for i, c in enumerate(c2)]
    for k, (post, pre) in enumerate(couplings):
        check_update_spec(specs[k])
        if not (0 <= post < n and INPUT <= pre < n):
            raise ValueError(f"coupling {k} = (post={post}, pre={pre}) names no node of the {n} layers")
        src = x if pre == INPUT else c1[pre]
        g = conv[post] if k < n else None
        want = (c1[post].shape[1], src.shape[1]) if g is None else (g.c_out, g.in_shape[0], g.kernel, g.kernel)
        if H[k].shape != want or src.shape[0] != c1[post].shape[0] or (g is not None and (
                g.n_in != src.shape[1] or g.n_out != c1[post].shape[1])):
            raise ValueError(f"layer {k}: hidden {H[k].shape}, states {c1[post].shape}, input {src.shape}; "
                             f"allowed: H {want}, states (B, n) with matching B")
    for i in range(n):
        nb = c1[i].shape[1] if conv[i] is None else conv[i].c_out  # a conv node: one bias register per channel
        if c1[i].shape != c2[i].shape or Hb[i].shape != (nb,):
            raise ValueError(f"layer {i}: bias {Hb[i].shape}, states {c1[i].shape}/{c2[i].shape}; allowed: "
                             "bias (n_i,), states (B, n_i) in both phases")
        st = specs[i].state
        for name, c in (("s1", c1[i]), ("s2", c2[i])):
            if c.size and (c.min() < st.qmin or c.max() > st.qmax):
                raise ValueError(f"{name}[{i}] has codes outside [{st.qmin}, {st.qmax}] of the state format")
    for k, sp in enumerate(specs):
        st = sp.state
        bound = 2 * c1[0].shape[0] * st.qmax * max(st.qmax, 2**st.frac_bits) * sp.update.lr_multiplier
        if bound >= 2**62:
            raise ValueError(f"layer {k}: batch {c1[0].shape[0]} x lr_multiplier {sp.update.lr_multiplier} "
                             "may overflow int64; allowed: a smaller batch or multiplier")
    return H, Hb, x, c1, c2, couplings, conv


# --------------------------------------------------------------------------------------------- numba
@numba.njit(cache=True)
def _update_weight_nb(H, post2T, pre2T, post1T, pre1T, mult, shift, rmode, seed, step, tid, hmin, hmax):
    """In place: H[i, j] <- sat(H + round(mult * sum_b (post2[b,i] pre2[b,j] - post1[b,i] pre1[b,j]) / 2**shift))
    (``rmode``: :data:`quant.numba_ops.ROUNDING_CODES`, nearest-even or stochastic)."""
    n, m = H.shape
    nb = post2T.shape[1]
    for i in range(n):
        for j in range(m):
            p = np.int64(0)
            for b in range(nb):
                p += post2T[i, b] * pre2T[j, b] - post1T[i, b] * pre1T[j, b]
            h = H[i, j] + requant(p, mult, shift, rmode, seed, step, tid, np.int64(i * m + j))
            H[i, j] = min(max(h, hmin), hmax)


@numba.njit(cache=True)
def _update_bias_nb(Hb, post2T, post1T, one, mult, shift, rmode, seed, step, tid, hmin, hmax):
    n, nb = post2T.shape
    for i in range(n):
        p = np.int64(0)
        for b in range(nb):
            p += post2T[i, b] - post1T[i, b]
        h = Hb[i] + requant(p * one, mult, shift, rmode, seed, step, tid, np.int64(i))
        Hb[i] = min(max(h, hmin), hmax)


@numba.njit(cache=True)
def _conv_product_nb(P, post, route, pre, sign, Cin, H, W, Wc, k, p):
    """In place ``P[co, ci, dy, dx] += sign * sum_b sum_{units j of co} post[b, j] pre[b, ci, oy+dy-p, ox+dx-p]``
    with ``(oy, ox)`` the routed position ``route[b, j]`` (the integer conv weight gradient of ``U(post)``)."""
    B, n = post.shape
    Co = P.shape[0]
    per_c = n // Co
    for b in range(B):
        for j in range(n):
            v = post[b, j] * sign
            if v == 0:
                continue
            co = j // per_c
            r = route[b, j]
            oy = r // Wc
            ox = r - oy * Wc
            for ci in range(Cin):
                for dy in range(k):
                    y = oy + dy - p
                    if 0 <= y < H:
                        for dx in range(k):
                            x = ox + dx - p
                            if 0 <= x < W:
                                P[co, ci, dy, dx] += v * pre[b, ci * H * W + y * W + x]


@numba.njit(cache=True)
def _apply_update_nb(Hf, Pf, mult, shift, rmode, seed, step, tid, hmin, hmax):
    """In place on flat arrays: ``H <- sat(H + round(P * mult / 2**shift))`` (index = flat position)."""
    for i in range(Hf.size):
        h = Hf[i] + requant(Pf[i], mult, shift, rmode, seed, step, tid, np.int64(i))
        Hf[i] = min(max(h, hmin), hmax)


@numba.njit(cache=True)
def _channel_sum_diff_nb(post2, post1, Co):
    B, n = post2.shape
    per_c = n // Co
    out = np.zeros(Co, dtype=np.int64)
    for b in range(B):
        for j in range(n):
            out[j // per_c] += post2[b, j] - post1[b, j]
    return out


def _conv_routes_numba(h, spec, geo, c_pre):
    """Routing of ``U`` from the exact forward accumulator of the codes the chip runs (numba path)."""
    from .fixed_point import conv_operands, conv_pool_int, exact_dtype

    up = spec.update
    w = hidden_to_code_nb(h, up.hidden_bits - spec.weights.bits, spec.weights.qmin, spec.weights.qmax)
    bound = int(np.abs(w).reshape(w.shape[0], -1).sum(axis=1).max(initial=0)) * int(np.abs(c_pre).max(initial=0))
    dt = exact_dtype(bound)
    return conv_pool_int(c_pre.astype(dt), conv_operands(w), geo, dt)[1]


@numba.njit(cache=True)
def hidden_to_code_nb(H, extra_bits, qmin, qmax):
    """numba twin of :func:`quant.hidden_to_code`: clamp(round_half_even(H / 2**extra_bits))."""
    out = np.empty_like(H)
    flat_in = H.ravel()
    flat = out.ravel()
    for k in range(flat_in.size):
        c = requant(flat_in[k], 1, extra_bits, RMODE_NEAREST_EVEN, 0, 0, 0, 0)
        flat[k] = min(max(c, qmin), qmax)
    return out


_UPDATE_DOC = """
    Generic over the synapse arrays: array ``k`` is the weight of the Dense coupling
    ``couplings[k] = (post, pre)`` (``pre = INPUT``: the input ``x``), its product
    ``P_k = sum_b c^2_post[b] c^2_pre[b]^T - c^1_post[b] c^1_pre[b]^T``; node ``i``'s bias register
    gets ``P_b[i]``. Default couplings: the layered chain (:func:`chain_couplings`).

    Args:
        hidden: per synapse array, int64 hidden weights ``(n_post, n_pre)`` (chain layers first).
        bias_hidden: per node, int64 bias registers ``(n_i,)``.
        x: input codes ``(B, n_in)``.
        s1, s2: per node, state codes ``(B, n_i)`` of the two phases (``s2`` the ``b2`` one).
        specs: per synapse array, the spec whose ``update`` applies (node ``i``'s bias uses ``specs[i]``).
        seed, step: counters of the stochastic rounding (tensor ids :func:`update_tensor_id`).
        couplings: ``(post, pre)`` per synapse array (default: the chain).
        conv: per node, the :class:`~hwsim.fixed_point.ConvGeometry` of its chain coupling (a conv kernel
            array ``(C_out, C_in, k, k)``, product = routed post codes correlated with the pre codes;
            bias register per channel) or None (dense).

    Returns:
        ``(hidden', bias_hidden')`` as lists of int64 numpy arrays.
"""


def update_numba(hidden: Sequence, bias_hidden: Sequence, x, s1: Sequence, s2: Sequence,
                 specs: Sequence[HardwareSpec], *, seed: int, step: int,
                 couplings: Sequence[tuple[int, int]] | None = None,
                 conv: Sequence | None = None) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """One on-chip EqProp update in numba (see module docstring); returns new arrays (inputs untouched)."""
    H, Hb, x, c1, c2, couplings, conv = _check_args(hidden, bias_hidden, x, s1, s2, specs, couplings, conv)
    T = lambda a: np.ascontiguousarray(a.T)  # noqa: E731
    outH = []
    for k, ((post, pre), spec) in enumerate(zip(couplings, specs)):
        up = spec.update
        h = H[k].copy()
        g = conv[post] if k < len(c1) else None
        if g is not None:  # conv kernel: P = sum_b U2 (*) pre2 - U1 (*) pre1, routes from each phase
            P = np.zeros(h.shape, dtype=np.int64)
            C, Hh, Ww = g.in_shape
            for sign, cs in ((1, c2), (-1, c1)):
                src = x if pre == INPUT else cs[pre]
                route = _conv_routes_numba(H[k], spec, g, src)
                _conv_product_nb(P, cs[post], route, src, sign, C, Hh, Ww, g.conv_shape[1], g.kernel, g.padding)
            _apply_update_nb(h.reshape(-1), P.reshape(-1), up.lr_multiplier, up.lr_shift,
                             RMODE_STOCHASTIC if up.stochastic else RMODE_NEAREST_EVEN, seed, step, update_tensor_id(k),
                             ops.min_int(True, False, up.hidden_bits), ops.max_int(True, False, up.hidden_bits))
            outH.append(h)
            continue
        _update_weight_nb(h, T(c2[post]), T(x if pre == INPUT else c2[pre]), T(c1[post]), T(x if pre == INPUT else c1[pre]),
                          up.lr_multiplier, up.lr_shift, RMODE_STOCHASTIC if up.stochastic else RMODE_NEAREST_EVEN,
                          seed, step, update_tensor_id(k),
                          ops.min_int(True, False, up.hidden_bits), ops.max_int(True, False, up.hidden_bits))
        outH.append(h)
    outB = []
    for i in range(len(c1)):
        up = specs[i].update
        hb = Hb[i].copy()
        bb = bias_bits(specs[i])
        if conv[i] is not None:  # one register per channel: the channel's summed code difference
            d = _channel_sum_diff_nb(c2[i], c1[i], conv[i].c_out)
            p2, p1 = np.ascontiguousarray(d.reshape(-1, 1)), np.zeros((len(d), 1), dtype=np.int64)
        else:
            p2, p1 = T(c2[i]), T(c1[i])
        _update_bias_nb(hb, p2, p1, 2**specs[i].state.frac_bits, up.lr_multiplier, up.lr_shift,
                        RMODE_STOCHASTIC if up.stochastic else RMODE_NEAREST_EVEN, seed, step, update_tensor_id(i, True),
                        ops.min_int(True, False, bb), ops.max_int(True, False, bb))
        outB.append(hb)
    return outH, outB


def update_torch(hidden: Sequence, bias_hidden: Sequence, x, s1: Sequence, s2: Sequence,
                 specs: Sequence[HardwareSpec], *, seed: int, step: int,
                 couplings: Sequence[tuple[int, int]] | None = None,
                 conv: Sequence | None = None) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The same update as :func:`update_numba`, independently: float64 BLAS outer products (exact,
    ``|P| < 2**53``) and :func:`quant.apply_update` in torch int64. Same arguments and returns."""
    H, Hb, x, c1, c2, couplings, conv = _check_args(hidden, bias_hidden, x, s1, s2, specs, couplings, conv)
    t = lambda a: torch.from_numpy(np.ascontiguousarray(a))  # noqa: E731
    outH, outB = [], []
    for k, ((post, pre), spec) in enumerate(zip(couplings, specs)):
        g = conv[post] if k < len(c1) else None
        if g is not None:
            p = conv_product_torch(t(H[k]), spec, g, t(x if pre == INPUT else c1[pre]), t(c1[post]),
                                   t(x if pre == INPUT else c2[pre]), t(c2[post]))
        else:
            pre1 = t(x if pre == INPUT else c1[pre]).double()
            pre2 = t(x if pre == INPUT else c2[pre]).double()
            a1, a2 = t(c1[post]).double(), t(c2[post]).double()
            p = (a2.t() @ pre2 - a1.t() @ pre1).round().to(torch.int64)
        outH.append(apply_update(t(H[k]), p, spec, seed=seed, step=step, tensor_id=update_tensor_id(k)).numpy())
    for i in range(len(c1)):
        spec = specs[i]
        d = t(c2[i]) - t(c1[i])
        if conv[i] is not None:
            d = d.reshape(d.shape[0], conv[i].c_out, -1).sum(dim=2)
        pb = d.sum(dim=0) * 2**spec.state.frac_bits
        outB.append(apply_update(t(Hb[i]), pb, bias_update_spec(spec), seed=seed, step=step,
                                 tensor_id=update_tensor_id(i, True)).numpy())
    return outH, outB


def conv_product_torch(h: torch.Tensor, spec: HardwareSpec, geo, pre1, post1, pre2, post2) -> torch.Tensor:
    """Integer conv weight product ``sum_b U2 (*) pre2 - U1 (*) pre1`` ``(C_out, C_in, k, k)`` in torch
    int64 (routes from the exact forward accumulator of ``hidden_to_code(h)``, :mod:`hwsim.torch_mirror`)."""
    from .torch_mirror import conv_int_t, pool_first_max_t

    w = hidden_to_code(h, spec)
    C, H, W = geo.in_shape
    k, pd = geo.kernel, geo.padding
    Hc, Wc = geo.conv_shape
    out = torch.zeros(w.shape, dtype=torch.int64)
    for sign, pre, post in ((1, pre2, post2), (-1, pre1, post1)):
        B = pre.shape[0]
        route = pool_first_max_t(conv_int_t(pre, w, geo), geo.pool)[1]
        u = torch.zeros(B, geo.c_out, Hc * Wc, dtype=torch.int64)
        u.scatter_(2, route.reshape(B, geo.c_out, -1), post.reshape(B, geo.c_out, -1))
        xp = torch.nn.functional.pad(pre.reshape(B, C, H, W), (pd, pd, pd, pd))
        cols = xp.unfold(2, k, 1).unfold(3, k, 1).permute(0, 2, 3, 1, 4, 5).reshape(B, Hc * Wc, C * k * k)
        out += sign * torch.bmm(u, cols).sum(dim=0).reshape(w.shape)
    return out


update_numba.__doc__ += _UPDATE_DOC
update_torch.__doc__ += _UPDATE_DOC


def codes_numba(hidden: Sequence, spec: HardwareSpec) -> list[np.ndarray]:
    """Weight codes of every layer's hidden weights (numba twin of :func:`quant.hidden_to_code`)."""
    check_update_spec(spec)
    extra = spec.update.hidden_bits - spec.weights.bits
    return [hidden_to_code_nb(_as_i64(h, "hidden"), extra, spec.weights.qmin, spec.weights.qmax) for h in hidden]


def codes_torch(hidden: Sequence, spec: HardwareSpec) -> list[np.ndarray]:
    """Weight codes via :func:`quant.hidden_to_code` in torch."""
    check_update_spec(spec)
    return [hidden_to_code(torch.from_numpy(_as_i64(h, "hidden")), spec).numpy() for h in hidden]


# ------------------------------------------------------------------------------ on-chip learner
def onchip_spec(spec: HardwareSpec) -> HardwareSpec:
    """The spec a learning chip runs: ``spec`` with per-tensor weight scales.

    A chip that learns keeps one synapse array, read forward (``W_l``) and backward (``W_l^T``) in
    the relaxation; with a per-tensor scale the feedback codes of :class:`~hwsim.fixed_point.FixedPointMLP`
    are exactly the transposed forward codes (per-channel scales would quantise ``W^T`` per column
    and need a second array that the update would have to keep consistent).

    >>> from quant import get_preset
    >>> onchip_spec(get_preset("int4")).weights.granularity
    'per_tensor'
    """
    check_update_spec(spec)
    return spec.replace(weights=dataclasses.replace(spec.weights, granularity="per_tensor"))


@dataclasses.dataclass
class OnChipState:
    """Integer parameters of a learning chip (the hidden registers are the truth; codes derive from them).

    Attributes:
        spec: chip spec (per-tensor weights, see :func:`onchip_spec`).
        layer_specs: per layer, the spec whose ``update`` (rate as multiplier/shift) applies.
        hidden: per layer int64 hidden weights ``(n_l, n_{l-1})``.
        bias_hidden: per layer int64 bias registers ``(n_l,)``; bias in accumulator LSBs is
            ``round_half_even(H_b / 2**(hidden_bits - bits - frac_bits))``.
        fwd_requant, fb_requant: the chip's fixed requantisation pairs (scales never change).
        update, cost: dynamics of the network (as in :class:`~hwsim.fixed_point.FixedPointMLP`).
        extra_hidden: hidden weights of the extra *input* couplings (e.g. the skip term of
            ``SkipEqPropMLP``), learned like layer 0 (outer product with the input); their
            update rate is ``spec.update``.
        extra: the fixed point model's :class:`~hwsim.fixed_point.TermContribution` s they came from
            (node, source, requantisation); groups: the update groups of the dynamics.
        conv: per node, the :class:`~hwsim.fixed_point.ConvGeometry` of a conv chain coupling (its
            hidden weights are the kernel ``(C_out, C_in, k, k)``, its bias registers one per channel)
            or None; None for a dense chain.
    """

    spec: HardwareSpec
    layer_specs: tuple
    hidden: list
    bias_hidden: list
    fwd_requant: list
    fb_requant: list
    update: str = "async"
    cost: str = "mse"
    extra_hidden: list = dataclasses.field(default_factory=list)
    extra: list = dataclasses.field(default_factory=list)
    groups: list | None = None
    conv: list | None = None

    @property
    def couplings(self) -> list[tuple[int, int]]:
        """``(post, pre)`` of every synapse array: the chain layers, then the extra input couplings."""
        return chain_couplings(len(self.hidden)) + [(c.node, c.src) for c in self.extra]

    def update_specs(self) -> tuple:
        """Per synapse array, the spec whose update applies (chain: ``layer_specs``; extras: ``spec``)."""
        return tuple(self.layer_specs) + (self.spec,) * len(self.extra)

    @property
    def extra_bits(self) -> int:
        """Hidden fraction bits below a weight code, ``hidden_bits - bits``."""
        return self.spec.update.hidden_bits - self.spec.weights.bits

    @classmethod
    def from_fixed_point(cls, fp, layer_specs: Sequence[HardwareSpec] | None = None) -> "OnChipState":
        """Hidden registers holding exactly ``fp``'s codes (``H = W * 2**extra_bits``).

        ``fp`` must use per-tensor weights (feedback codes = transposed forward codes).
        """
        from .fixed_point import FixedPointMLP  # noqa: F401  (type only)

        spec = check_update_spec(fp.spec)
        conv = list(fp.conv)
        for i, f in enumerate(fp.fb_codes):
            if not np.array_equal(f, _transposed(fp.w_codes[i + 1], conv[i + 1])):
                raise ValueError("fp's feedback codes are not the transposed forward codes; on-chip learning needs "
                                 "per-tensor weight scales: build it with FixedPointMLP.from_model(net, onchip_spec(spec))")
        layer_specs = tuple(layer_specs) if layer_specs is not None else (spec,) * fp.n_layers
        if len(layer_specs) != fp.n_layers:
            raise ValueError(f"got {len(layer_specs)} layer specs for {fp.n_layers} layers; allowed: one per layer")
        for ls in layer_specs:
            check_update_spec(ls)
            if ls.update.hidden_bits != spec.update.hidden_bits:
                raise ValueError("layer_specs must keep spec.update.hidden_bits; change only the rate")
        extra = spec.update.hidden_bits - spec.weights.bits
        bextra = extra - spec.state.frac_bits
        if bextra < 0:
            raise ValueError(f"hidden_bits - bits = {extra} < frac_bits = {spec.state.frac_bits}; allowed: "
                             "hidden weights at least as fine as an accumulator LSB")
        bb = bias_bits(spec)
        hidden = [np.asarray(w, dtype=np.int64) << extra for w in fp.w_codes]
        bias_hidden = [ops.saturate(np.asarray(b if g is None else b[::g.units_per_channel], dtype=np.int64) << bextra,
                                    bb, True) for b, g in zip(fp.bias_codes, conv)]
        dynamic = [c.term for c in fp.extra if not c.static]
        if dynamic:
            raise UnsupportedError(f"backend {BACKEND!r} has no update for the state-to-state term(s) {dynamic}; "
                                   "it supports: the layered chain Dense couplings, Bias, and Dense couplings "
                                   "from the input")
        extra_hidden = [np.asarray(c.codes, dtype=np.int64) << extra for c in fp.extra]
        return cls(spec, layer_specs, hidden, bias_hidden, list(fp.fwd_requant), list(fp.fb_requant),
                   fp.update, fp.cost, extra_hidden, list(fp.extra), [list(g) for g in fp.groups],
                   conv if any(g is not None for g in conv) else None)

    @property
    def geometries(self) -> list:
        """Per node, its conv geometry or None."""
        return list(self.conv) if self.conv is not None else [None] * len(self.hidden)

    def w_codes(self, backend: str = "numba", *, extra: bool = False) -> list[np.ndarray]:
        """Weight codes of the hidden registers (numba or torch path, bit-identical); ``extra``: of the
        extra input couplings instead of the chain."""
        h = self.extra_hidden if extra else self.hidden
        return codes_numba(h, self.spec) if backend == "numba" else codes_torch(h, self.spec)

    def bias_codes(self) -> list[np.ndarray]:
        """Biases in forward-accumulator LSBs (nearest-even, saturated to ``acc_bits``)."""
        bextra = self.extra_bits - self.spec.state.frac_bits
        out = [ops.saturate(ops.shift_round(h, bextra, "nearest_even"), self.spec.acc_bits, True)
               for h in self.bias_hidden]
        return [b if g is None else np.repeat(b, g.units_per_channel) for b, g in zip(out, self.geometries)]

    def to_fixed_point(self, backend: str = "numba"):
        """The :class:`~hwsim.fixed_point.FixedPointMLP` the chip currently runs."""
        from .fixed_point import FixedPointMLP

        w = self.w_codes(backend)
        extra = [dataclasses.replace(c, codes=e) for c, e in zip(self.extra, self.w_codes(backend, extra=True))]
        geo = self.geometries
        return FixedPointMLP(self.spec, w, self.bias_codes(), self.fwd_requant,
                             [_transposed(a, g) for a, g in zip(w[1:], geo[1:])], self.fb_requant, update=self.update,
                             cost=self.cost, extra=extra, groups=self.groups, conv=self.conv)

    def scales(self) -> list[float]:
        """Per-layer real weight scale the chip applies, ``multiplier * 2**-shift`` of its requantisation
        (state formats in = out, so the pair is the weight scale itself)."""
        return [math.ldexp(float(m[0]), -int(s[0])) for m, s in self.fwd_requant]

    def to_float_model(self, dtype=torch.float64):
        """Float :class:`~models.eqprop_mlp.EqPropMLP` with the dequantised weights ``code * scale`` and
        biases ``bias_acc * scale * 2**-frac_bits`` (for comparing against float EqProp)."""
        from models.eqprop_mlp import EqPropConfig, EqPropMLP

        if self.extra:
            raise UnsupportedError(f"to_float_model rebuilds an EqPropMLP; this chip has the extra terms "
                                   f"{[c.term for c in self.extra]}")
        if self.conv is not None:
            return self._to_conv_model(dtype)
        w = self.w_codes()
        sizes = (w[0].shape[1],) + tuple(a.shape[0] for a in w)
        net = EqPropMLP(EqPropConfig(sizes=sizes, cost=self.cost, update=self.update), seed=0).to(dtype)
        lsb = self.spec.state.lsb
        with torch.no_grad():
            for lin, c, b, sc in zip(net.layers, w, self.bias_codes(), self.scales()):
                lin.weight.copy_(torch.from_numpy(c.astype(np.float64) * sc))
                lin.bias.copy_(torch.from_numpy(b.astype(np.float64) * sc * lsb))
        return net


def _transposed(w: np.ndarray, geo) -> np.ndarray:
    """The feedback codes of a single synapse array: ``W^T`` (dense) or the kernel with its channel
    axes swapped (conv, ``(C_in, C_out, k, k)``)."""
    return w.T if geo is None else np.ascontiguousarray(w.transpose(1, 0, 2, 3))


def param_names(state: "OnChipState", net) -> list[tuple[str, str]]:
    """``(weight, bias)`` parameter names of ``net`` (from :meth:`OnChipState.to_float_model`) per chain array."""
    if state.conv is None:
        return [(f"layers.{i}.weight", f"layers.{i}.bias") for i in range(len(state.hidden))]
    n_conv = sum(g is not None for g in state.conv)
    return [(f"convs.{i}.weight", f"convs.{i}.bias") for i in range(n_conv)] + [("fc.weight", "fc.bias")]


def _to_conv_model(self, dtype=torch.float64):
    """Float :class:`~models.conv.ConvEqProp` of a conv chip (conv layers, then one dense output)."""
    from models.conv import ConvConfig, ConvEqProp

    geo = self.geometries
    convs = [g for g in geo if g is not None]
    if geo[: len(convs)] != convs or len(geo) != len(convs) + 1 or len({(g.kernel, g.padding, g.pool) for g in convs}) != 1:
        raise UnsupportedError("to_float_model rebuilds a ConvEqProp: conv layers with one kernel/padding/pool, then "
                               f"one dense output; got {geo}")
    w = self.w_codes()
    g0 = convs[0]
    cfg = ConvConfig(in_shape=g0.in_shape, channels=tuple(g.c_out for g in convs), kernel=g0.kernel,
                     padding=g0.padding, pool=g0.pool, n_out=w[-1].shape[0], cost=self.cost, update=self.update)
    net = ConvEqProp(cfg, seed=0).to(dtype)
    lsb = self.spec.state.lsb
    bextra = self.extra_bits - self.spec.state.frac_bits
    with torch.no_grad():
        for (wn, bn), c, h, g, sc in zip(param_names(self, net), w, self.bias_hidden, geo, self.scales()):
            b = ops.saturate(ops.shift_round(h, bextra, "nearest_even"), self.spec.acc_bits, True)
            net.get_parameter(wn).copy_(torch.from_numpy(c.astype(np.float64) * sc))
            net.get_parameter(bn).copy_(torch.from_numpy(b.astype(np.float64) * sc * lsb))
    return net


OnChipState._to_conv_model = _to_conv_model


def layer_specs_for_lr(fp, lr, *, batch_size: int, beta_span: float, spec: HardwareSpec | None = None):
    """Per-layer update specs realising float SGD rates ``lr`` (scalar or per layer) on ``fp``'s scales."""
    spec = check_update_spec(spec or fp.spec)
    lrs = tuple(lr) if isinstance(lr, (tuple, list)) else (lr,) * fp.n_layers
    if len(lrs) != fp.n_layers:
        raise ValueError(f"lr has {len(lrs)} entries for {fp.n_layers} layers; allowed: one per layer or a float")
    sc = [math.ldexp(float(m[0]), -int(s[0])) for m, s in fp.fwd_requant]
    return tuple(update_spec_for_lr(spec, a, weight_scale=s, batch_size=batch_size, beta_span=beta_span)
                 for a, s in zip(lrs, sc))


def _relax_fn(fp, xc, yb, *, seed, backend):
    """The backend's relaxation bound to inputs and targets, in the engine's signature; codes as numpy."""
    if backend == "numba":
        def relax(s0, *, beta, n_steps, step_offset):
            return fp.relax(xc, s0, beta=beta, y=yb, n_steps=n_steps, seed=seed, step_offset=step_offset)
    else:
        from .torch_mirror import torch_relax

        def relax(s0, *, beta, n_steps, step_offset):
            s, info = torch_relax(fp, xc, s0, beta=beta, y=yb, n_steps=n_steps, seed=seed, step_offset=step_offset)
            return [t.numpy() for t in s], info
    return relax


def onchip_step(state: OnChipState, x_codes, y, *, beta: float, nudging: str = "symmetric",
                n_free_steps: int = 30, n_nudge_steps: int = 10, seed: int = 0, step: int = 0,
                backend: str = "numba", fp=None) -> tuple[OnChipState, dict]:
    """One on-chip EqProp step on a batch: relax (free, nudged), integer update; returns the new state.

    Args:
        state: current registers.
        x_codes: (B, n_in) input codes; y: (B,) labels.
        beta: nudging strength (> 0); nudging: ``"symmetric"`` (-beta vs +beta) or ``"one_sided"``.
        seed, step: counters (relaxation sweeps start at ``step * models.engine.steps_per_update(...)``,
            phases laid out by :func:`models.engine.phase_offsets`).
        backend: ``"numba"`` (FixedPointMLP.relax + :func:`update_numba`) or ``"torch"``
            (:func:`hwsim.torch_mirror.torch_relax` + :func:`update_torch`).
        fp: the state's FixedPointMLP if already built.

    Returns:
        ``(new_state, {"free": codes, "s1": codes, "s2": codes})``.
    """
    if backend not in ("numba", "torch"):
        raise ValueError(f"backend={backend!r} is invalid; allowed: 'numba' or 'torch'")
    check_nudging(nudging, ONCHIP_NUDGINGS, "nudging")
    if not beta > 0:
        raise ValueError(f"beta={beta!r} is invalid; allowed: a float > 0")
    fp = fp if fp is not None else state.to_fixed_point(backend)
    ph = run_phases(_relax_fn(fp, x_codes, y, seed=seed, backend=backend), beta=beta, mode=nudging,
                    n_free_steps=n_free_steps, n_nudge_steps=n_nudge_steps,
                    offset=step * steps_per_update(n_free_steps, n_nudge_steps), allowed=ONCHIP_NUDGINGS)
    fn = update_numba if backend == "numba" else update_torch
    H, Hb = fn(state.hidden + state.extra_hidden, state.bias_hidden, x_codes, ph.s1, ph.s2, state.update_specs(),
               seed=seed, step=step, couplings=state.couplings, conv=state.conv)
    L = len(state.hidden)
    new = dataclasses.replace(state, hidden=H[:L], extra_hidden=H[L:], bias_hidden=Hb)
    return new, {"free": ph.free, "s1": ph.s1, "s2": ph.s2}


def train_onchip(fp_model, x, y, *, epochs: int, batch_size: int, beta: float, spec=None, lr=None,
                 seed: int = 0, progress: bool = True, nudging: str = "symmetric", n_free_steps: int = 30,
                 n_nudge_steps: int = 10, backend: str = "numba", x_val=None, y_val=None,
                 eval_steps: int | None = None) -> dict:
    """Train a fixed-point network on chip by EqProp (integer states, integer updates).

    Starting point: ``fp_model``'s codes (a PTQ model to fine-tune, or the quantisation of a fresh
    initialisation to train from scratch); it must use per-tensor weights (:func:`onchip_spec`).

    Args:
        fp_model: :class:`~hwsim.fixed_point.FixedPointMLP`.
        x: (N, n_in) float inputs in [0, 1] (quantised on chip with the state format).
        y: (N,) int labels.
        epochs, batch_size: passes over the data, examples per update.
        beta: nudging strength.
        spec: the update precision: a spec (its ``update``) for all layers or one per layer;
            default ``fp_model.spec``. Ignored when ``lr`` is given.
        lr: float SGD rate(s) to realise as per-layer multiplier/shift pairs
            (:func:`update_spec_for_lr` on each layer's scale).
        seed: batch order and stochastic-rounding counters.
        backend: ``"numba"`` or ``"torch"`` (bit-identical).
        x_val, y_val: optional validation set, accuracy after every epoch.
        eval_steps: free-phase sweeps for validation (default ``n_free_steps``).

    Returns:
        ``{"model": final FixedPointMLP, "state": OnChipState, "train_acc": [per epoch, free phase
        before each update], "val_acc": [per epoch], "layer_specs": [...], "n_updates": int}``.
    """

    check_update_spec(fp_model.spec)
    x = np.asarray(x)
    y = np.asarray(y)
    if x.ndim != 2 or y.ndim != 1 or len(x) != len(y) or len(x) == 0:
        raise ValueError(f"x {x.shape} and y {y.shape}: need x (N, n_in) and y (N,) with the same N >= 1")
    if not (isinstance(epochs, int) and epochs >= 1 and isinstance(batch_size, int) and batch_size >= 1):
        raise ValueError(f"epochs={epochs!r}, batch_size={batch_size!r}; allowed: ints >= 1")
    span = beta_span(check_nudging(nudging, ONCHIP_NUDGINGS, "nudging"), beta)
    if lr is not None:
        layer_specs = layer_specs_for_lr(fp_model, lr, batch_size=batch_size, beta_span=span)
    elif spec is None:
        layer_specs = None
    elif isinstance(spec, HardwareSpec):
        layer_specs = (spec,) * fp_model.n_layers
    else:
        layer_specs = tuple(spec)
    state = OnChipState.from_fixed_point(fp_model, layer_specs)
    rs = np.random.default_rng(seed)
    n = len(x)
    n_batches = (n + batch_size - 1) // batch_size
    hist = {"train_acc": [], "val_acc": [], "layer_specs": [s.update.to_dict() for s in state.layer_specs]}
    step = 0
    fp = fp_model
    bar = progress_bar(total=epochs * n_batches, enabled=progress, desc=f"on-chip {fp_model.spec.name}")
    for epoch in range(epochs):
        perm = rs.permutation(n)
        correct = 0
        for b in range(n_batches):
            idx = perm[b * batch_size:(b + 1) * batch_size]
            xc = fp.quantize_input(x[idx].astype(np.float64))
            state, st = onchip_step(state, xc, y[idx].astype(np.int64), beta=beta, nudging=nudging,
                                    n_free_steps=n_free_steps, n_nudge_steps=n_nudge_steps, seed=seed,
                                    step=step, backend=backend, fp=fp)
            correct += int((st["free"][-1].argmax(axis=1) == y[idx]).sum())
            fp = state.to_fixed_point(backend)
            step += 1
            bar.update(1)
        hist["train_acc"].append(correct / n)
        if x_val is not None:
            pred = fp.predict(np.asarray(x_val, dtype=np.float64), n_steps=eval_steps or n_free_steps, batch_size=1000)
            hist["val_acc"].append(float(np.mean(pred == np.asarray(y_val))))
        log.info("on-chip %s epoch %d: train acc %.4f", fp_model.spec.name, epoch + 1, correct / n)
    bar.close()
    hist.update(model=fp, state=state, n_updates=step)
    return hist


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    return float(a.ravel() @ b.ravel() / (na * nb)) if na > 0 and nb > 0 else float("nan")


def update_cosine(state: OnChipState, x, y, *, beta: float, nudging: str = "symmetric", n_free_steps: int = 30,
                  n_nudge_steps: int = 10, seed: int = 0, step: int = 0) -> dict:
    """Per layer, cosine between the integer EqProp update (dequantised) and the float EqProp step.

    The integer update is that of :func:`onchip_step` on the batch, ``dW = (H' - H) * scale /
    2**extra_bits``; the float step is ``-g`` with ``g`` = :meth:`EqPropMLP.eqprop_grads` of the same
    dequantised weights (float64, same nudging, input = the quantised input values).

    Args:
        x: (B, n_in) float inputs; y: (B,) labels.

    Returns:
        ``{"weight": [cos per layer], "bias": [cos per layer], "expected_weight": [cos of the
        pre-rounding product P * lr_multiplier / 2**lr_shift]}``.
    """
    fp = state.to_fixed_point()
    xc = fp.quantize_input(np.asarray(x, dtype=np.float64))
    y = np.asarray(y).astype(np.int64)
    new, st = onchip_step(state, xc, y, beta=beta, nudging=nudging, n_free_steps=n_free_steps,
                          n_nudge_steps=n_nudge_steps, seed=seed, step=step, fp=fp)
    net = state.to_float_model()
    xf = torch.from_numpy(fp.dequantize_states([xc])[0])
    g = net.eqprop_grads(xf, torch.from_numpy(y), beta=beta, mode=nudging, n_free_steps=n_free_steps,
                         n_nudge_steps=n_nudge_steps)
    out = {"weight": [], "bias": [], "expected_weight": []}
    geo = state.geometries
    for i, (sc, (wn, bn)) in enumerate(zip(state.scales(), param_names(state, net))):
        dw = (new.hidden[i] - state.hidden[i]).astype(np.float64) * sc
        db = (new.bias_hidden[i] - state.bias_hidden[i]).astype(np.float64) * sc
        out["weight"].append(_cos(dw, -g[wn].numpy()))
        out["bias"].append(_cos(db, -g[bn].numpy()))
        pre1 = xc if i == 0 else st["s1"][i - 1]
        pre2 = xc if i == 0 else st["s2"][i - 1]
        if geo[i] is not None:
            t = torch.from_numpy
            p = conv_product_torch(t(state.hidden[i]), state.layer_specs[i], geo[i], t(pre1), t(st["s1"][i]),
                                   t(pre2), t(st["s2"][i])).numpy().astype(np.float64)
        else:
            p = st["s2"][i].T.astype(np.float64) @ pre2 - st["s1"][i].T.astype(np.float64) @ pre1
        out["expected_weight"].append(_cos(p, -g[wn].numpy()))
    return out

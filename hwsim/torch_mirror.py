"""The fixed-point EqProp dynamics of :mod:`hwsim.fixed_point`, written again with torch int64 tensors.

This is the "torch fake-quant path" of DESIGN §4 in integer form: an independent implementation of
the equations in ``docs/hwsim_semantics.md`` (it never calls the numba kernels). Integer products
are torch int64 matmuls; rounding is :func:`quant.ops.shift_round` / :func:`quant.ops.requantize`
on torch tensors; stochastic uniforms are :func:`quant.rng.uniform_u24` on torch tensors. Only the
*parameters* (codes, bias codes, multipliers and shifts derived by :mod:`quant`) are read from the
:class:`~hwsim.fixed_point.FixedPointMLP`, so both paths agree bit for bit on states, diagnostics,
overflow counts and predictions (``tests/hwsim/test_fixed_point.py``).

Per layer ``l`` and sweep ``t`` (see the docs for the counters)::

    A_f = ovf(c_{l-1} @ Wq_l^T + bq_l);  A_b = ovf(c_{l+1} @ Fq_l^T)
    c_l = clamp(rq(A_f) + rq(A_b) [+ rq(beta * (t - c_out))], 0, code(1.0))

A ConvPool layer (``fp.conv[i]`` set) forms ``A_f = ovf(P(Y) + bq)`` with ``Y`` the exact int64 conv
(:func:`conv_int_t`, unfold + int64 matmul) pooled by :func:`pool_first_max_t` (first maximum in
row-major order), and its feedback ``A_b = ovf(convT(U(c_post), Fq))`` by :func:`conv_feedback_t`
(the routed map fully convolved with the flipped ``Fq``), independently of the numba kernels.

For QAT (``models/qat.py``): :func:`torch_relax` is the reference its fake-quant forward must match
in codes.

>>> import torch, quant
>>> from models.eqprop_mlp import EqPropMLP, EqPropConfig
>>> from hwsim.fixed_point import FixedPointMLP
>>> fp = FixedPointMLP.from_model(EqPropMLP(EqPropConfig(sizes=(6, 5, 3)), seed=0), quant.get_preset("int4"))
>>> x = torch.tensor(fp.quantize_input(np.linspace(0, 1, 12).reshape(2, 6)))
>>> s_t, _ = torch_relax(fp, x, n_steps=10)
>>> s_n, _ = fp.relax(x.numpy(), n_steps=10)
>>> all(torch.equal(a, torch.from_numpy(b)) for a, b in zip(s_t, s_n))
True
"""
from __future__ import annotations

import numpy as np
import torch

from models.solvers import iterate
from quant import ops, rng

from .fixed_point import INPUT_TENSOR_ID, FixedPointMLP


def _t(a) -> torch.Tensor:
    return torch.as_tensor(np.asarray(a), dtype=torch.int64)


def overflow_t(v: torch.Tensor, acc_bits: int, mode: str) -> tuple[torch.Tensor, int]:
    """Torch twin of ``quant.ops.overflow(v, acc_bits, signed=True, mode)``; also returns the count.

    >>> overflow_t(torch.tensor([130, -5, -200]), 8, "wrap")[0].tolist(), overflow_t(torch.tensor([130]), 8, "saturate")
    ([-126, -5, 56], (tensor([127]), 1))
    """
    hi = 2 ** (acc_bits - 1) - 1
    lo = -hi - 1
    n = int(((v > hi) | (v < lo)).sum())
    if mode == "saturate":
        return v.clamp(lo, hi), n
    u = v & (2**acc_bits - 1)
    return torch.where(u > hi, u - 2**acc_bits, u), n


def requant_rows(acc: torch.Tensor, mult: torch.Tensor, shift: torch.Tensor, rounding: str,
                 u24: torch.Tensor | None) -> torch.Tensor:
    """Per-column ``round(acc[:, j] * mult[j] / 2**shift[j])`` (``quant.ops`` rounding, exact int64).

    The multiply is elementwise; :func:`quant.ops.shift_round` runs once per distinct shift.
    """
    prod = acc * mult
    out = torch.empty_like(prod)
    for sh in torch.unique(shift).tolist():
        cols = (shift == sh).nonzero().flatten()
        p = prod[:, cols]
        if sh < 0:
            out[:, cols] = p << (-sh)
        else:
            out[:, cols] = ops.shift_round(p, int(sh), rounding, None if u24 is None else u24[:, cols])
    return out


def conv_int_t(src: torch.Tensor, wq: torch.Tensor, geo) -> torch.Tensor:
    """Exact int64 ``conv(src, Wq)`` at every position, ``(B, C_out, Hc, Wc)``: zero padding, unfold, int64 matmul."""
    C, H, W = geo.in_shape
    k, p = geo.kernel, geo.padding
    B = src.shape[0]
    x = torch.nn.functional.pad(src.reshape(B, C, H, W), (p, p, p, p))
    patches = x.unfold(2, k, 1).unfold(3, k, 1)  # (B, C, Hc, Wc, k, k)
    Hc, Wc = patches.shape[2], patches.shape[3]
    cols = patches.permute(0, 2, 3, 1, 4, 5).reshape(B * Hc * Wc, C * k * k)
    y = cols @ wq.reshape(wq.shape[0], -1).T
    return y.reshape(B, Hc, Wc, -1).permute(0, 3, 1, 2)


def pool_first_max_t(y: torch.Tensor, q: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Max pooling ``(B, C, Hc, Wc) -> (B, C*Hp*Wp)`` (floor mode) and the flat position ``oy * Wc + ox``
    of each window's first maximum in row-major order (the smallest window index holding the max)."""
    B, C, Hc, Wc = y.shape
    Hp, Wp = Hc // q, Wc // q
    win = y[:, :, : Hp * q, : Wp * q].reshape(B, C, Hp, q, Wp, q).permute(0, 1, 2, 4, 3, 5).reshape(B, C, Hp, Wp, q * q)
    best = win.amax(dim=-1)
    pos = torch.arange(q * q, dtype=torch.int64)
    first = torch.where(win == best.unsqueeze(-1), pos, q * q).amin(dim=-1)
    oy = torch.arange(Hp, dtype=torch.int64).reshape(1, 1, Hp, 1) * q + first // q
    ox = torch.arange(Wp, dtype=torch.int64).reshape(1, 1, 1, Wp) * q + first % q
    return best.reshape(B, -1), (oy * Wc + ox).reshape(B, -1)


def conv_feedback_t(post: torch.Tensor, route: torch.Tensor, fq: torch.Tensor, geo) -> torch.Tensor:
    """Exact int64 ``convT(U(post), Fq)`` ``(B, C_in*H*W)``: the routed map ``U`` (zeros elsewhere),
    fully padded and convolved with the spatially flipped ``Fq`` ``(C_in, C_out, k, k)``, cropped by ``padding``."""
    C, H, W = geo.in_shape
    Hc, Wc = geo.conv_shape
    k, p = geo.kernel, geo.padding
    B = post.shape[0]
    u = torch.zeros(B, geo.c_out, Hc * Wc, dtype=torch.int64)
    u.scatter_(2, route.reshape(B, geo.c_out, -1), post.reshape(B, geo.c_out, -1).to(torch.int64))
    full_geo = type(geo)((geo.c_out, Hc, Wc), C, k, k - 1, 1)
    g = conv_int_t(u.reshape(B, -1), fq.flip(2, 3), full_geo)  # (B, C_in, H + 2p, W + 2p)
    return g[:, :, p: p + H, p: p + W].reshape(B, -1)


def _u24(seed: int, step: int, tid: int, shape) -> torch.Tensor:
    idx = torch.arange(shape[0] * shape[1], dtype=torch.int64).reshape(shape)
    return rng.uniform_u24(torch.tensor(seed), torch.tensor(step), torch.tensor(tid), idx)


def torch_relax(fp: FixedPointMLP, x_codes, s0=None, *, beta: float = 0.0, y=None, n_steps: int,
                seed: int = 0, step_offset: int = 0, early_exit: bool = True, record_trace: bool = False):
    """Torch int64 relaxation with the semantics of :meth:`FixedPointMLP.relax` (same arguments).

    Generic over the lowered terms: the chain accumulators plus every
    :class:`~hwsim.fixed_point.TermContribution` (its own product, overflow and rounding); update
    groups ``fp.groups``; settling loop :func:`models.solvers.iterate`.

    Returns:
        ``(states, info)``: list of (B, n_l) torch int64 codes and a
        :class:`~models.solvers.IntRelaxInfo` (numpy arrays).
    """
    x_np = x_codes.numpy() if isinstance(x_codes, torch.Tensor) else x_codes
    s0_np = None if s0 is None else [t.numpy() if isinstance(t, torch.Tensor) else t for t in s0]
    y_np = y.numpy() if isinstance(y, torch.Tensor) else y
    x, s, yy, bm, bsh = fp.check_relax_args(x_np, s0_np, beta, y_np, n_steps, seed, step_offset)
    sp = fp.spec
    L, B = fp.n_layers, x.shape[0]
    rounding, mode, one = sp.rounding, sp.overflow, fp.one_code
    stoch = rounding == "stochastic"
    W = [_t(w) for w in fp.w_codes]
    F = [_t(w) for w in fp.fb_codes]
    E = [_t(c.codes) for c in fp.extra]
    bias = [_t(b) for b in fp.bias_codes]
    rq_f = [(_t(m), _t(sh)) for m, sh in fp.fwd_requant]
    rq_b = [(_t(m), _t(sh)) for m, sh in fp.fb_requant]
    rq_e = [(_t(m), _t(sh)) for m, sh in (c.requant for c in fp.extra)]
    xt = _t(x)
    target = torch.nn.functional.one_hot(_t(yy), fp.sizes[-1]) * one if B else torch.zeros(0, fp.sizes[-1], dtype=torch.int64)
    n_over = np.zeros(L, dtype=np.int64)
    geos = fp.conv

    def fwd_acc(i: int, src: torch.Tensor) -> torch.Tensor:
        if geos[i] is None:
            return src @ W[i].T
        return pool_first_max_t(conv_int_t(src, W[i], geos[i]), geos[i].pool)[0]

    drive, n0 = overflow_t(fwd_acc(0, xt) + bias[0], sp.acc_bits, mode)  # once per phase
    n_over[0] += n0
    static = {}  # static extra accumulators (input only): formed once per phase, overflows counted once
    for k, c in enumerate(fp.extra):
        if c.static:
            static[k], o = overflow_t(xt @ E[k].T, sp.acc_bits, mode)
            n_over[c.node] += o

    def rq(acc, pair, tid, step, n):
        u = _u24(seed, step, tid, (B, n)) if stoch else None
        return requant_rows(acc, *pair, rounding, u)

    def new_layer(i: int, src: list, step: int) -> torch.Tensor:
        n = fp.sizes[i + 1]
        if i == 0:
            a_f = drive
        else:
            a_f, k = overflow_t(fwd_acc(i, src[i - 1]) + bias[i], sp.acc_bits, mode)
            n_over[i] += k
        p = rq(a_f, rq_f[i], rng.tensor_id(rng.KIND_STATE_FWD, i), step, n)
        for k, tid in fp.extra_at[i]:
            c = fp.extra[k]
            if c.static:
                a_e = static[k]
            else:
                a_e, o = overflow_t(src[c.src] @ E[k].T, sp.acc_bits, mode)
                n_over[i] += o
            p = p + rq(a_e, rq_e[k], tid, step, n)
        if i + 1 < L:
            g = geos[i + 1]
            if g is None:
                fb = src[i + 1] @ F[i].T
            else:  # routing from the exact forward accumulator of the current pre state
                route = pool_first_max_t(conv_int_t(src[i], W[i + 1], g), g.pool)[1]
                fb = conv_feedback_t(src[i + 1], route, F[i], g)
            a_b, k = overflow_t(fb, sp.acc_bits, mode)
            n_over[i] += k
            p = p + rq(a_b, rq_b[i], rng.tensor_id(rng.KIND_STATE_FB, i), step, n)
        if i == L - 1 and bm != 0:
            u = _u24(seed, step, rng.tensor_id(rng.KIND_NUDGE, i), (B, n)) if stoch else None
            p = p + ops.requantize(target - src[i], bm, bsh, rounding, u)
        return p.clamp(0, one)

    def sweep(s: list, t: int):
        step = step_offset + t
        s = list(s)
        for group in fp.groups:  # a group's nodes read the state before the group (sync: one group)
            upd = {i: new_layer(i, s, step) for i in group}
            for i, v in upd.items():
                s[i] = v
        return s, None

    s, info = iterate(sweep, [_t(t) for t in s], max_steps=n_steps, early_exit=early_exit and not stoch,
                      record_trace=record_trace)
    info.n_overflow = n_over
    return s, info


def torch_quantize_input(fp: FixedPointMLP, x: torch.Tensor, *, seed: int = 0) -> torch.Tensor:
    """Torch twin of :meth:`FixedPointMLP.quantize_input` (``quant.quantize_state`` on a tensor)."""
    import quant

    if x.ndim != 2 or x.shape[1] != fp.sizes[0]:
        raise ValueError(f"input shape {tuple(x.shape)} does not match the network: expected (B, {fp.sizes[0]})")
    return quant.quantize_state(x, fp.spec, seed=seed, step=0, tensor_id=INPUT_TENSOR_ID)


def torch_predict(fp: FixedPointMLP, x: torch.Tensor, n_steps: int, *, seed: int = 0, **kw) -> torch.Tensor:
    """``argmax`` of the output codes after a free phase (float ``x`` is quantised first)."""
    codes = torch_quantize_input(fp, x, seed=seed) if x.is_floating_point() else x
    s, _ = torch_relax(fp, codes, n_steps=n_steps, seed=seed, **kw)
    return s[-1].argmax(dim=1)

"""Mutation-robust checks of the integer path shared by Tracks 4 / 16 / 19 (issue 14), for the dense
MLP and the conv net alike (any :class:`~hwsim.fixed_point.FixedPointMLP` built from a float model).

* :func:`weight_code_violations`: the weight codes the integer path really uses against the float
  weights they came from. Integer kinds (``int8``, ``int4``): ``|w / scale - code| <= 0.5`` for every
  code strictly inside ``[qmin, qmax]`` (round to nearest; a clipped code needs ``w / scale`` beyond
  ``qmax - 0.5`` resp. ``qmin + 0.5``), with ``scale`` the per-row multiplier the accumulator is
  requantised with (``m * 2**-s``, the weight scale to 2**-31). Ternary: a code is
  ``sign(w) * (|w| > delta)`` for one threshold per row (every zero code has a smaller ``|w|`` than
  every non-zero code of its row, and non-zero codes carry the sign of ``w``). Rounding by floor
  (instead of nearest-even) breaks both.
* :func:`narrow_acc_check`: the model re-lowered with a narrow accumulator (e.g. 12 bits, saturating)
  so that it overflows on real images; then (1) the numba simulator and the torch int64 mirror run the
  free phase and both nudged phases and must agree on every state code and overflow count, (2) the
  first sweep of node 0 (from zero states, so its feedback accumulator is 0) must equal an independent
  reference: the exact accumulator from a float64 ``torch`` matmul / conv (+ max pool) of the integer
  codes, clipped to the accumulator range (``numpy.clip``: saturation), requantised with
  :func:`quant.ops.requantize` and clamped to ``[0, code(1.0)]``. The check also reports how many
  accumulators of that sweep left the range (``ref_saturated``: saturation really happened) and how
  many state codes a wrapping accumulator would have changed (``wrap_would_differ``: the check can see
  a wrap). A wrap in either path breaks (1); a wrap in both breaks (2).
"""
from __future__ import annotations

import numpy as np
import torch

from hwsim import onchip
from hwsim.fixed_point import FixedPointMLP
from hwsim.torch_mirror import torch_relax
from models.conv import ConvPool, ConvPoolFloat
from models.energy import INPUT, Dense
from quant import ops


def _chain_terms(net) -> dict[int, object]:
    """Node -> its chain coupling term (Dense or ConvPool with ``pre = post - 1``, or from the input)."""
    out = {}
    for t in net.terms:
        if isinstance(t, (Dense, ConvPool)) and (t.pre == t.post - 1 or (t.post == 0 and t.pre == INPUT)):
            out.setdefault(t.post, t)
    return out


def _row_scales(fp: FixedPointMLP, i: int, n_rows: int) -> np.ndarray:
    """Per output row (channel) of layer ``i``: the requantisation scale ``m * 2**-s`` (= weight scale)."""
    m, s = fp.fwd_requant[i]
    sc = np.ldexp(np.asarray(m, dtype=np.float64), -np.asarray(s, dtype=np.int64))
    return sc.reshape(n_rows, -1)[:, 0]


def weight_code_violations(net, fp: FixedPointMLP, tol: float = 1e-6) -> int:
    """Weight codes of ``fp`` (the lowering of ``net``) that are not the nearest code of their float weight
    (integer kinds) or not a per-row sign threshold of ``|w|`` (ternary); see the module docstring."""
    fmt = fp.spec.weights
    bad = 0
    for i, t in sorted(_chain_terms(net).items()):
        w = net.get_parameter(t.weight).detach().cpu().double().numpy()
        codes = np.asarray(fp.w_codes[i])
        if codes.shape != w.shape:
            raise ValueError(f"layer {i}: codes {codes.shape} vs weights {w.shape}: fp is not the lowering of net")
        w2, c2 = w.reshape(w.shape[0], -1), codes.reshape(codes.shape[0], -1)
        if fmt.kind == "ternary":
            bad += int(np.sum((c2 != 0) & (np.sign(w2) != c2)))
            a = np.abs(w2)
            for r in range(w2.shape[0]):
                z, nz = a[r][c2[r] == 0], a[r][c2[r] != 0]
                if z.size and nz.size:
                    bad += int(np.sum(z >= nz.min()))
            continue
        r = w2 / _row_scales(fp, i, w2.shape[0])[:, None]
        inner = (c2 > fmt.qmin) & (c2 < fmt.qmax)
        bad += int(np.sum(inner & (np.abs(r - c2) > 0.5 + tol)))
        bad += int(np.sum((c2 == fmt.qmax) & (r < fmt.qmax - 0.5 - tol)))
        bad += int(np.sum((c2 == fmt.qmin) & (r > fmt.qmin + 0.5 + tol)))
        bad += int(np.sum((c2 < fmt.qmin) | (c2 > fmt.qmax)))
    return bad


def _exact_drive0(net, fp: FixedPointMLP, xc: np.ndarray) -> np.ndarray:
    """Exact forward accumulator of node 0 before overflow, ``(B, n_0)`` int64, computed in float64 torch."""
    t = _chain_terms(net)[0]
    w = torch.from_numpy(np.asarray(fp.w_codes[0], dtype=np.float64))
    x = torch.from_numpy(xc.astype(np.float64))
    with torch.no_grad():
        a = ConvPoolFloat.drive_of(t, w, None, x) if isinstance(t, ConvPool) else x @ w.T
    a = a.numpy()
    if np.abs(a).max(initial=0) >= 2**52:
        raise ValueError("accumulator beyond the exact float64 range")
    return np.rint(a).astype(np.int64) + np.asarray(fp.bias_codes[0], dtype=np.int64)[None, :]


def _reference_sweep0(fp: FixedPointMLP, acc: np.ndarray, mode: str) -> np.ndarray:
    bits = fp.spec.acc_bits
    hi, lo = 2 ** (bits - 1) - 1, -(2 ** (bits - 1))
    if mode == "saturate":
        a = np.clip(acc, lo, hi)
    else:
        a = ((acc - lo) % (2**bits)) + lo
    m, s = (np.asarray(v, dtype=np.int64) for v in fp.fwd_requant[0])
    p = np.zeros_like(a)
    for mm, ss in sorted(set(zip(m.tolist(), s.tolist()))):
        cols = (m == mm) & (s == ss)
        p[:, cols] = ops.requantize(a[:, cols], int(mm), int(ss), fp.spec.rounding)
    return np.clip(p, 0, fp.one_code)


def narrow_acc_check(net, spec, acc_bits: int, x: np.ndarray, y: np.ndarray, *, n_steps: int, beta: float,
                     seed: int = 0) -> dict:
    """The narrow-accumulator replay of the module docstring on float inputs ``x`` (B, n_in), labels ``y``.

    Returns ``{"mismatches", "overflows", "ref_mismatches", "ref_saturated", "wrap_would_differ"}`` (ints).
    """
    if spec.rounding == "stochastic":
        raise ValueError("narrow_acc_check needs a deterministic rounding (the reference has no random draws)")
    nspec = spec.replace(acc_bits=int(acc_bits), overflow="saturate")
    fp = FixedPointMLP.from_model(net, nspec)
    xc = fp.quantize_input(np.asarray(x, dtype=np.float64))
    yy = np.asarray(y).astype(np.int64)
    mism = over = 0
    s_free = None
    for b in (0.0, beta, -beta):
        s0 = None if b == 0.0 else s_free
        kw = dict(beta=b, y=yy, n_steps=n_steps, seed=seed)
        s_n, i_n = fp.relax(xc, s0, **kw)
        s_t, i_t = torch_relax(fp, torch.from_numpy(xc), None if s0 is None else [torch.from_numpy(a) for a in s0], **kw)
        mism += sum(int(np.sum(a != bb.numpy())) for a, bb in zip(s_n, s_t))
        mism += int(np.sum(np.asarray(i_n.n_overflow) != np.asarray(i_t.n_overflow)))
        over += int(np.sum(i_n.n_overflow))
        if b == 0.0:
            s_free = s_n
    if 0 not in fp.groups[0]:
        raise ValueError(f"update groups {fp.groups}: node 0 must be in the first group for the reference sweep")
    s1, _ = fp.relax(xc, None, n_steps=1, early_exit=False, seed=seed)
    acc = _exact_drive0(net, fp, xc)
    ref = _reference_sweep0(fp, acc, "saturate")
    hi = 2 ** (fp.spec.acc_bits - 1) - 1
    return {"mismatches": int(mism), "overflows": int(over),
            "ref_mismatches": int(np.sum(np.asarray(s1[0]) != ref)),
            "ref_saturated": int(np.sum((acc > hi) | (acc < -hi - 1))),
            "wrap_would_differ": int(np.sum(_reference_sweep0(fp, acc, "wrap") != ref))}


def onchip_steps_mismatches(state, xc, y, *, beta, n_free_steps, n_nudge_steps, seed, n_steps: int = 2) -> int:
    """Two chained on-chip steps from ``state``, numba vs torch mirror: differing phase codes, hidden
    registers and weight codes (the replay of the MLP and the conv part of Tracks 4/16/19)."""
    st_n = st_t = state
    diff = 0
    for step in range(n_steps):
        kw = dict(beta=beta, n_free_steps=n_free_steps, n_nudge_steps=n_nudge_steps, seed=seed, step=step)
        new_n, ph_n = onchip.onchip_step(st_n, xc, y, backend="numba", **kw)
        new_t, ph_t = onchip.onchip_step(st_t, xc, y, backend="torch", **kw)
        pairs = [(a, b) for k in ("free", "s1", "s2") for a, b in zip(ph_n[k], ph_t[k])]
        pairs += list(zip(new_n.hidden + new_n.bias_hidden, new_t.hidden + new_t.bias_hidden))
        pairs += list(zip(new_n.w_codes("numba"), new_t.w_codes("torch")))
        diff += sum(int(np.sum(np.asarray(a) != np.asarray(b))) for a, b in pairs)
        st_n, st_t = new_n, new_t
    return diff

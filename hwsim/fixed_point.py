"""Integer (fixed-point) mirror of an EqProp energy model (:class:`models.eqprop_mlp.EqPropMLP`,
:class:`models.skip_mlp.SkipEqPropMLP`, ...) under a :class:`quant.HardwareSpec`.

The exact semantics are written down in ``docs/hwsim_semantics.md``; in short, for layer ``l``
(0-based, ``L`` layers, state codes ``c_l`` of shape ``(B, n_l)``, input codes ``c_{-1}``)::

    A_f = ovf(Wq_l @ c_{l-1} + bq_l)          forward accumulator, acc_bits, saturate/wrap
    A_b = ovf(Fq_l @ c_{l+1})                 feedback accumulator (l < L-1), Fq_l = codes of W_{l+1}^T
    p   = rq(A_f, mf_l, sf_l) + rq(A_b, mb_l, sb_l)          rq = quant.ops.requantize per row
    p  += rq(t - c_L-1, beta_m, beta_s)        output layer only, when beta != 0 (t = code(1) one-hot)
    c_l = clamp(p, 0, code(1.0))

``Wq_l`` and ``Fq_l`` come from :func:`quant.quantize_weights` (``Fq_l`` quantises ``W_{l+1}.T``
as its own tensor, so a per-channel scale is per row of *that* matrix; per-tensor gives
``Fq_l == Wq_{l+1}.T`` exactly), the ``(m, s)`` pairs from :func:`quant.requant_params`, ``bq``
is the bias in forward-accumulator LSBs (:func:`quant.bias_codes`). Stochastic rounding draws
``quant.rng.uniform_u24(seed, step_offset + t, tid, b * n_l + j)`` with
``tid = quant.rng.tensor_id(kind, l)``, kind ``state_fwd``, ``state_fb`` or ``nudge``.

The model's interaction terms are lowered by a kernel per term type (:data:`INT_KERNELS`; a term
type without one raises :class:`models.engine.UnsupportedError`): the layered chain of Dense
couplings and the biases become the fused accumulators above; any other Dense term (e.g. the skip
coupling ``Dense(post=L-1, pre=INPUT)`` of ``SkipEqPropMLP``) becomes a :class:`TermContribution`,
its own accumulator requantised with its own multiplier and added to ``p`` (static when it reads the
input only: formed once per phase, like the drive). The update groups are ``net.schedule()``.
A :class:`~models.conv.ConvPool` chain coupling (``ConvEqProp``) is lowered by :class:`ConvPoolInt`:
``A_f = ovf(P(conv_int(c_pre, Wq)) + bq)`` pooled on the exact accumulator, feedback
``A_b = ovf(convT_int(U(c_post), Fq))`` with ``U`` routed to each window's first maximum
(``docs/hwsim_semantics.md``, "Convolutional couplings").

Products are computed in float32 / float64 (BLAS, or numba loops for thin shapes) when a per-row
bound proves every partial sum is an exact integer (``sum_i |Wq[j, i]| * max code <= 2**24`` resp.
``2**53``), else in int64 numba loops; rounding, overflow, clamp and the settling diagnostics run in
numba kernels (pure functions, specialised per layer role; threaded for large layers).

>>> import torch, quant
>>> from models.eqprop_mlp import EqPropMLP, EqPropConfig
>>> net = EqPropMLP(EqPropConfig(sizes=(6, 5, 3)), seed=0)
>>> fp = FixedPointMLP.from_model(net, quant.get_preset("int8"))
>>> x = fp.quantize_input(np.linspace(0, 1, 12).reshape(2, 6))
>>> s, info = fp.relax(x, n_steps=20)
>>> [t.shape for t in s], bool(info.converged.all()), int(s[0].max()) <= 128
([(2, 5), (2, 3)], True, True)
"""
from __future__ import annotations

import dataclasses
import functools
import logging
import math
from pathlib import Path
from typing import Sequence

import numba
import numpy as np

import quant
from models.conv import ConvPool
from models.energy import INPUT, Bias, Dense
from models.progress import progress as progress_bar
from models.engine import UPDATES, UnsupportedError, require_kernels, schedule_groups
from models.solvers import IntRelaxInfo, iterate
from quant import ops, rng
from quant.numba_ops import ROUNDING_CODES, overflow_scalar, requant_det, requant_stoch
from quant.spec import HardwareSpec

log = logging.getLogger(__name__)

BACKEND = "numba fixed point"
"""Backend name in capability errors (:meth:`quant.HardwareSpec.require`, :data:`INT_KERNELS`)."""
INPUT_TENSOR_ID = rng.tensor_id(rng.KIND_INPUT)  # tensor id of the input quantisation (stochastic rounding)
EXACT_F32 = 2**24  # every integer of magnitude <= 2**24 is a float32
EXACT_F64 = 2**53
FixedPointRelaxInfo = IntRelaxInfo  # the integer relaxation diagnostics (models.solvers)


def tensor_id(layer: int, kind: str = rng.KIND_STATE_FWD) -> int:
    """Counter ``tensor_id`` of a state rounding of ``layer`` (:func:`quant.rng.tensor_id`).

    >>> tensor_id(1, rng.KIND_NUDGE)
    6
    """
    return rng.tensor_id(kind, layer)


# ----------------------------------------------------------------------------------- kernels
_requant_det, _requant_stoch, _overflow_scalar = requant_det, requant_stoch, overflow_scalar


def _make_update_kernel(requant, has_fb: bool, nudge: bool):
    """Layer-update kernel specialised on the requantiser and on two flags (closure constants, so the
    unused branches are compiled out and the inner loop vectorises)."""

    def update_layer_kernel(fwd, acc_b, mul_b, sh_b, s_old, y, beta_m, beta_sh, one_code, acc_bits, wrap, rmode,
                            seed, step, tid_fb, tid_nudge, s_new, changed, n_over):
        """New codes of one layer (pure: writes only ``s_new``, ``changed``, ``n_over``)::

            s_new = clamp(fwd + rq(ovf(acc_b), mul_b, sh_b) + rq(beta * (T - s_old)), 0, one_code)

        Args:
            fwd: (B, n) int64 requantised forward term (:func:`requant_kernel`).
            acc_b: (B, n) exact integer feedback products ``Fq @ c_next`` (any real/int dtype); used
                when the kernel was built with ``has_fb``; ``mul_b``, ``sh_b``: (n,) int64 per row.
            s_old: (B, n) current codes of the layer (nudge input and change detection).
            y: (B,) int64 class indices; ``beta_m``, ``beta_sh``: signed nudge multiplier and shift
                (used when built with ``nudge``; ``T = one_code`` at ``y``, else 0).
            one_code: code of 1.0; acc_bits, wrap: accumulator width and mode.
            rmode: 0 nearest_even, 1 floor, 2 stochastic; seed, step: rng counters, tid_fb, tid_nudge:
                tensor ids of the feedback and nudge roundings (:func:`quant.rng.tensor_id`; index ``b * n + j``).
            s_new: (B, n) output codes (dtype of ``s_old``); changed: (B,) bool, set where a code changed;
            n_over: (1,) int64, incremented by the feedback-accumulator overflows.
        """
        B, n = s_new.shape
        nov = 0
        for b in numba.prange(B):  # samples are independent: the parallel variant splits them over threads
            ch = False
            for j in range(n):
                idx = b * n + j
                p = fwd[b, j]
                if has_fb:
                    a, o = _overflow_scalar(np.int64(acc_b[b, j]), acc_bits, wrap)
                    nov += o
                    p += requant(a, mul_b[j], sh_b[j], rmode, seed, step, tid_fb, idx)
                old = np.int64(s_old[b, j])
                if nudge:
                    t = one_code if y[b] == j else 0
                    p += requant(t - old, beta_m, beta_sh, rmode, seed, step, tid_nudge, idx)
                p = min(max(p, 0), one_code)
                s_new[b, j] = p
                ch |= p != old
            if ch:
                changed[b] = True
        n_over[0] += nov

    return update_layer_kernel


def _make_requant_kernel(requant):
    def requant_kernel(acc, bias, mul, sh, acc_bits, wrap, rmode, seed, step, tid):
        """Forward term ``rq(ovf(acc + bias), mul, sh)`` per element: (B, n) int64 and the overflow count.

        ``acc``: (B, n) exact integer products (any real/int dtype); ``bias``, ``mul``, ``sh``: (n,)
        int64; counters as in :func:`update_layer_kernel` (tensor id ``tid``).
        """
        B, n = acc.shape
        out = np.empty((B, n), dtype=np.int64)
        nov = 0
        for b in numba.prange(B):
            for j in range(n):
                a, o = _overflow_scalar(np.int64(acc[b, j]) + bias[j], acc_bits, wrap)
                nov += o
                out[b, j] = requant(a, mul[j], sh[j], rmode, seed, step, tid, b * n + j)
        return out, nov

    return requant_kernel


# pure-Python sources of the kernels (documentation, debugging); the jitted variants are built on demand
update_layer_kernel = _make_update_kernel(_requant_det, True, True)
requant_kernel = _make_requant_kernel(_requant_det)
ENGINES = ("auto", "generic", "event", "dense")
PARALLEL_MIN_ELEMENTS = 1 << 16  # parallel=None picks the threaded kernels from B * n_l >= this


@functools.lru_cache(maxsize=None)
def get_update_kernel(deterministic: bool, has_fb: bool, nudge: bool, parallel: bool):
    """Jitted :func:`update_layer_kernel` variant (nearest_even/floor use the branch-free requantiser)."""
    rq = _requant_det if deterministic else _requant_stoch
    return numba.njit(cache=True, parallel=parallel)(_make_update_kernel(rq, has_fb, nudge))


@functools.lru_cache(maxsize=None)
def get_requant_kernel(deterministic: bool, parallel: bool):
    """Jitted :func:`requant_kernel` variant."""
    rq = _requant_det if deterministic else _requant_stoch
    return numba.njit(cache=True, parallel=parallel)(_make_requant_kernel(rq))


@numba.njit(cache=True)
def matmul_int64(a, bt):
    """Exact int64 ``a @ bt`` for (B, k) x (k, n) (fallback when no float type is provably exact)."""
    B, k = a.shape
    n = bt.shape[1]
    out = np.zeros((B, n), dtype=np.int64)
    for b in range(B):
        for i in range(k):
            v = np.int64(a[b, i])
            if v != 0:
                for j in range(n):
                    out[b, j] += v * bt[i, j]
    return out


def exact_dtype(bound: int):
    """Narrowest dtype whose matmul of integer codes is exact for ``max|partial sum| <= bound``.

    >>> exact_dtype(784 * 127 * 128), exact_dtype(2**30), exact_dtype(2**60)
    (<class 'numpy.float32'>, <class 'numpy.float64'>, <class 'numpy.int64'>)
    """
    if bound <= EXACT_F32:
        return np.float32
    if bound <= EXACT_F64:
        return np.float64
    return np.int64


# Thin products (few outputs or few inputs per output) run in numba: BLAS is slow on such shapes.
# fastmath reassociation is safe here: every partial sum, in any order, is an integer below the
# exactness bound of the dtype (2**24 / 2**53), so any summation order gives the same exact result.
THIN_MAX = 64  # a product is thin when n_out <= THIN_MAX or n_in <= THIN_MAX
_EXACT_FLAGS = {"reassoc", "contract"}


def _matmul_rowdot(a, w):
    """``a @ w.T`` for (B, K) x (n, K) with small ``n``: one contiguous dot product per output."""
    B, K = a.shape
    n = w.shape[0]
    out = np.empty((B, n), dtype=a.dtype)
    for b in numba.prange(B):
        for j in range(n):
            acc = a[b, 0] * 0  # zero of a's dtype
            for i in range(K):
                acc += a[b, i] * w[j, i]
            out[b, j] = acc
    return out


def _matmul_axpy(a, wt):
    """``a @ wt`` for (B, K) x (K, n) with small ``K``: rows accumulated as axpy over the outputs."""
    B, K = a.shape
    n = wt.shape[1]
    out = np.zeros((B, n), dtype=a.dtype)
    for b in numba.prange(B):
        for k in range(K):
            v = a[b, k]
            if v != 0:
                for j in range(n):
                    out[b, j] += v * wt[k, j]
    return out


@functools.lru_cache(maxsize=None)
def _thin_kernel(kind: str, parallel: bool):
    fn = _matmul_rowdot if kind == "rowdot" else _matmul_axpy
    return numba.njit(cache=True, parallel=parallel, fastmath=_EXACT_FLAGS)(fn)


def exact_matmul(a: np.ndarray, w_by_dtype: dict, dtype, parallel: bool = False) -> np.ndarray:
    """``a @ W.T`` of integer-valued arrays, exact when ``dtype`` passes :func:`exact_dtype` for the bound.

    Args:
        a: (B, K) integer-valued states/inputs (any numeric dtype).
        w_by_dtype: ``{dtype: (W (n, K), W.T (K, n))}`` contiguous copies (see ``FixedPointMLP``).
        dtype: ``np.float32``, ``np.float64`` (float arithmetic, exact by the bound) or ``np.int64``.
        parallel: threaded numba kernels for thin shapes.
    """
    w, wt = w_by_dtype[dtype]
    if dtype is np.int64:
        return matmul_int64(a.astype(np.int64, copy=False), wt)
    a = np.ascontiguousarray(a, dtype=dtype)
    n, k = w.shape
    if n <= THIN_MAX and a.shape[0] and k:
        return _thin_kernel("rowdot", parallel)(a, w)
    if k <= THIN_MAX and a.shape[0] and n:
        return _thin_kernel("axpy", parallel)(a, wt)
    return a @ wt


def _compact_rows(x, xi, xv, nnz):
    """Per row of ``x``: the column indices ``xi`` and float32 values ``xv`` of its nonzeros, ``nnz``
    (branch-free: every entry is written, the cursor advances on nonzeros)."""
    B, K = x.shape
    for b in numba.prange(B):
        c = 0
        for i in range(K):
            v = x[b, i]
            xi[b, c] = i
            xv[b, c] = v
            c += v != 0
        nnz[b] = c


def _sparse_rows_matmul(xi, xv, nnz, wt, out, block):
    """``out = x @ wt`` from the compacted rows (:func:`_compact_rows`): per panel of ``block`` output
    columns (the weight panel stays in cache), one contiguous axpy per nonzero input of each row."""
    B, n = out.shape
    for j0 in range(0, n, block):
        j1 = min(j0 + block, n)
        for b in numba.prange(B):
            o = out[b, j0:j1]
            o[:] = 0.0
            for c in range(nnz[b]):
                w = wt[xi[b, c], j0:j1]
                v = xv[b, c]
                for j in range(j1 - j0):
                    o[j] += v * w[j]


_compact_rows_k = numba.njit(cache=True, parallel=True)(_compact_rows)
_sparse_rows_matmul_k = numba.njit(cache=True, parallel=True, fastmath=_EXACT_FLAGS)(_sparse_rows_matmul)
SPARSE_BLOCK = 128  # output columns per panel: 128 float32 columns of a 784-input layer = 400 kB (L2)
SPARSE_MAX_DENSITY = 0.4  # drive_f32 uses the sparse kernel below this fraction of nonzero inputs


def drive_f32(x_codes: np.ndarray, wt: np.ndarray, *, sparse: bool | None = None) -> np.ndarray:
    """``x_codes @ W.T`` in float32 for integer codes whose every partial sum is an integer of
    magnitude <= 2**24 (the caller proves it from the row bound ``max_j sum_i |W[j, i]| * max|x|
    <= 2**24``: :func:`exact_dtype` returned float32). Each product and each partial sum is then an
    exactly representable float32, so any summation order gives the exact integer.

    Args:
        x_codes: (B, K) integer codes.
        wt: (K, n) float32 contiguous weight codes ``W.T``.
        sparse: skip zero inputs (MNIST digits are ~80 % zeros) with the panel kernel
            :func:`_sparse_rows_matmul`; ``None``: when the fraction of nonzeros is below
            :data:`SPARSE_MAX_DENSITY`, else the float32 BLAS product (torch, whose threads follow
            ``torch.set_num_threads``).
    """
    B, K = x_codes.shape
    n = wt.shape[1]
    if sparse is None:
        sparse = SPARSE_MAX_DENSITY > 0 and np.count_nonzero(x_codes) < SPARSE_MAX_DENSITY * x_codes.size
    if not sparse:
        import torch

        return (torch.from_numpy(x_codes.astype(np.float32)) @ torch.from_numpy(wt)).numpy()
    xi, xv, nnz = np.empty((B, K), np.int32), np.empty((B, K), np.float32), np.empty(B, np.int64)
    _compact_rows_k(x_codes, xi, xv, nnz)
    out = np.empty((B, n), np.float32)
    _sparse_rows_matmul_k(xi, xv, nnz, wt, out, SPARSE_BLOCK)
    return out


# ------------------------------------------------------------ fused two-layer sweep kernel


FUSED_CHUNK = 8  # samples per prange iteration of fused2_kernel (its scratch arrays are allocated per chunk)


@numba.njit(cache=True, parallel=True, fastmath=_EXACT_FLAGS)
def fused2_kernel(pre, fbt, fb, w2t, w2, bias2, mf2, sf2, hq, sat, h0, o0, y, beta_m, beta_sh, nudge, one_code,
                  acc_bits, rmode, sync, n_steps, dense, stop, h, o, changed, ov_run, ov_last, n_run, resid, cyc):
    """All sweeps of a dense one-hidden-layer chain (hidden ``h``, output ``o``), deterministic rounding,
    saturating accumulators, one sample per iteration of a ``prange`` loop (samples are independent)::

        h <- clamp(pre + rq(sat(Fb @ o), mb, sb), 0, one)          (pre: requantised drive, constant)
        o <- clamp(rq(sat(W2 @ h + bias2), mf2, sf2) [+ rq(beta * (t - o))], 0, one)

    async: ``h`` first, then ``o`` from the new ``h``; sync (``sync``): both from the old state.

    Exact float64 arithmetic (``fastmath`` reassociation and contraction are safe: every intermediate
    value is an integer, or an integer times a power of two, of magnitude < 2**53): states, weights and the accumulators ``Fb @ o``, ``W2 @ h`` are float64
    integers; the caller proves (:meth:`FixedPointMLP.fused_unsupported`) that every partial sum and
    every hidden product ``a * mb`` is an integer of magnitude < 2**53, so each float64 add and
    multiply below is exact; ``a * (mb * 2**-sh)`` (``hq[0]``, a power-of-two scaling of ``mb``) is
    then the exact rational ``a * mb / 2**sh``, and ``np.rint`` (round half to even, the default FP
    rounding mode) / ``np.floor`` of it equal :func:`quant.numba_ops.requant_det` (nearest_even /
    floor) bit for bit. ``hq[1]``, ``hq[2]``: the saturation bounds of the accumulator, applied when
    ``sat`` (else the caller proved that no accumulator reaches them). The output layer uses the
    int64 requantiser itself.

    * ``dense``: every sweep recomputes both products in full and every unit.
    * not ``dense`` (event-driven): every sweep runs, but a product is recomputed only when its input
      changed (``W2 @ h`` in full after a hidden change; ``Fb @ o`` by the exact updates
      ``acc += Fb[:, k] * (new_k - old_k)`` over the output units that changed: an exact integer sum
      does not depend on how it is accumulated), and the hidden units are re-evaluated only when
      their accumulator changed, the output units only when their accumulator or codes changed (a
      unit update is a deterministic function of those: unchanged inputs give the unchanged code and
      the same overflow count). Bit-identical to ``dense``.
    * ``stop``: a sample stops after its first sweep that changed no code: that state maps to itself,
      so every later (deterministic) sweep is the identity and the result equals all ``n_steps``
      sweeps bit for bit.

    Outputs (per sample ``b``): ``h``, ``o`` final codes; ``changed[b, t]`` sweep ``t`` changed a code;
    ``ov_run[b, l]`` overflows summed over the sweeps run, ``ov_last[b, l]`` those of the last sweep
    run (l = 0 hidden feedback accumulator, 1 output forward accumulator); ``n_run[b]`` sweeps run;
    ``resid[b]`` max |last state - the one before|, ``cyc[b]`` last sweep changed it and the state
    equals the one two sweeps earlier.
    """
    B, n0 = h.shape
    n1 = o.shape[1]
    onef = float(one_code)
    for cb in numba.prange((B + FUSED_CHUNK - 1) // FUSED_CHUNK):  # scratch arrays once per chunk of samples
        hb = np.empty(n0, dtype=np.float64)
        hn = np.empty(n0, dtype=np.float64)
        prb = np.empty(n0, dtype=np.float64)
        accb_s = np.empty(n0, dtype=np.float64)
        accb = np.empty(n0, dtype=np.float64)
        hm1 = np.empty(n0, dtype=np.float64)
        hm2 = np.empty(n0, dtype=np.float64)
        ob = np.empty(n1, dtype=np.float64)
        on = np.zeros(n1, dtype=np.float64)
        acc2 = np.empty(n1, dtype=np.float64)
        old2 = np.zeros(n1, dtype=np.float64)
        om1 = np.empty(n1, dtype=np.float64)
        om2 = np.empty(n1, dtype=np.float64)
        for b in range(cb * FUSED_CHUNK, min(cb * FUSED_CHUNK + FUSED_CHUNK, B)):
            for j in range(n0):
                hb[j] = h0[b, j]
                prb[j] = pre[b, j]
                accb[j] = 0.0
            for k in range(n1):
                ob[k] = o0[b, k]
                acc2[k] = 0.0
            for k in range(n1):
                v = ob[k]
                if v != 0:
                    for j in range(n0):
                        accb[j] += fbt[k, j] * v
            for j in range(n0):
                v = hb[j]
                if v != 0:
                    for k in range(n1):
                        acc2[k] += w2t[j, k] * v
            hm1[:] = hb
            om1[:] = ob
            hm2[:] = hb
            om2[:] = ob
            need_h = True  # the hidden accumulator changed since the hidden units were last evaluated
            need_o = True  # likewise the output units' inputs
            cur_ov_h = np.int64(0)
            ovr0 = np.int64(0)
            ovr1 = np.int64(0)
            ovl1 = np.int64(0)
            t_run = 0
            for t in range(n_steps):
                if t == n_steps - 2:
                    hm2[:] = hb
                    om2[:] = ob
                if t == n_steps - 1:
                    hm1[:] = hb
                    om1[:] = ob
                if dense:
                    for j in range(n0):
                        a = 0.0
                        for k in range(n1):
                            a += fb[j, k] * ob[k]
                        accb[j] = a
                    for k in range(n1):
                        a = 0.0
                        for j in range(n0):
                            a += w2[k, j] * hb[j]
                        acc2[k] = a
                    need_h = True
                ch = False
                hid_changed = False
                if sync:
                    old2[:] = acc2
                if need_h:  # hidden units, from the output state before this sweep
                    nov = np.int64(0)
                    if sat:
                        for j in range(n0):
                            a0 = accb[j]
                            nov += (a0 < hq[1, j]) | (a0 > hq[2, j])
                            accb_s[j] = min(max(a0, hq[1, j]), hq[2, j])
                        src = accb_s
                    else:
                        src = accb
                    diff = 0.0
                    if rmode == 0:  # rint: round half to even (the default FP rounding mode), exact operand
                        for j in range(n0):
                            v = min(max(prb[j] + np.rint(src[j] * hq[0, j]), 0.0), onef)
                            diff += abs(v - hb[j])
                            hn[j] = v
                    else:
                        for j in range(n0):
                            v = min(max(prb[j] + np.floor(src[j] * hq[0, j]), 0.0), onef)
                            diff += abs(v - hb[j])
                            hn[j] = v
                    cur_ov_h = nov
                    need_h = dense
                    if diff != 0.0:  # a sum of |differences| >= 0 is 0 only when no code changed
                        ch = True
                        hid_changed = True
                        hb, hn = hn, hb
                        for k in range(n1):  # W2 @ h: 10 x 512 exact products, vectorised
                            a = 0.0
                            for j in range(n0):
                                a += w2[k, j] * hb[j]
                            acc2[k] = a
                ovr0 += cur_ov_h
                if not sync:
                    need_o |= hid_changed
                if need_o:  # the output update is a deterministic function of its accumulator and codes
                    need_o = dense
                    nov = np.int64(0)
                    for k in range(n1):  # output units: async reads the new hidden codes, sync the old ones
                        v = np.int64(old2[k] if sync else acc2[k]) + bias2[k]
                        a, ov = _overflow_scalar(v, acc_bits, False)
                        nov += ov
                        p = _requant_det(a, mf2[k], sf2[k], rmode, 0, 0, 0, 0)
                        if nudge:
                            tk = one_code if y[b] == k else 0
                            p += _requant_det(tk - np.int64(ob[k]), beta_m, beta_sh, rmode, 0, 0, 0, 0)
                        on[k] = min(max(p, 0), one_code)
                    ovl1 = nov
                    for k in range(n1):
                        d = on[k] - ob[k]
                        if d != 0:
                            ch = True
                            need_h = True
                            need_o = True
                            if not dense:
                                for j in range(n0):
                                    accb[j] += fbt[k, j] * d
                            ob[k] = on[k]
                ovr1 += ovl1
                if sync:
                    need_o |= hid_changed
                changed[b, t] = ch
                t_run = t + 1
                if stop and not ch:
                    break
            for j in range(n0):
                h[b, j] = np.int64(hb[j])
            for k in range(n1):
                o[b, k] = np.int64(ob[k])
            ov_run[b, 0] = ovr0
            ov_run[b, 1] = ovr1
            ov_last[b, 0] = cur_ov_h
            ov_last[b, 1] = ovl1
            n_run[b] = t_run
            r = 0.0
            same2 = True
            if t_run == n_steps:
                for j in range(n0):
                    r = max(r, abs(hb[j] - hm1[j]))
                    same2 &= hb[j] == hm2[j]
                for k in range(n1):
                    r = max(r, abs(ob[k] - om1[k]))
                    same2 &= ob[k] == om2[k]
            resid[b] = np.int64(r)
            cyc[b] = changed[b, n_steps - 1] and t_run == n_steps and n_steps >= 2 and same2


# ------------------------------------------------------------------------ conv (ConvPool) kernels
@dataclasses.dataclass(frozen=True)
class ConvGeometry:
    """Geometry of a lowered :class:`~models.conv.ConvPool` chain coupling (states flat, C order).

    >>> g = ConvGeometry((1, 12, 12), 4, 3, 0, 2)
    >>> g.conv_shape, g.out_shape, g.n_in, g.n_out
    ((10, 10), (4, 5, 5), 144, 100)
    """

    in_shape: tuple
    c_out: int
    kernel: int
    padding: int = 0
    pool: int = 2

    @property
    def conv_shape(self) -> tuple[int, int]:
        _, h, w = self.in_shape
        return h + 2 * self.padding - self.kernel + 1, w + 2 * self.padding - self.kernel + 1

    @property
    def out_shape(self) -> tuple[int, int, int]:
        hc, wc = self.conv_shape
        return self.c_out, hc // self.pool, wc // self.pool

    @property
    def n_in(self) -> int:
        return int(np.prod(self.in_shape))

    @property
    def n_out(self) -> int:
        return int(np.prod(self.out_shape))

    @property
    def units_per_channel(self) -> int:
        return self.out_shape[1] * self.out_shape[2]


def _im2col(src, C, H, W, k, p, Hc, Wc, out):
    """``out[b*Hc*Wc + oy*Wc + ox, ci*k*k + dy*k + dx] = src[b, ci, oy+dy-p, ox+dx-p]`` (0 outside):
    one zero-padded copy of the sample, then branch-free contiguous row copies."""
    B = src.shape[0]
    Hq, Wq = H + 2 * p, W + 2 * p
    for b in numba.prange(B):
        xp = np.zeros((C, Hq, Wq), dtype=out.dtype)
        for ci in range(C):
            for y in range(H):
                for x in range(W):
                    xp[ci, y + p, x + p] = src[b, ci * H * W + y * W + x]
        for oy in range(Hc):
            for ox in range(Wc):
                r = b * Hc * Wc + oy * Wc + ox
                for ci in range(C):
                    for dy in range(k):
                        c0 = ci * k * k + dy * k
                        for dx in range(k):
                            out[r, c0 + dx] = xp[ci, oy + dy, ox + dx]


def _conv_int64(src, Wq, C, H, W, k, p, Hc, Wc):
    """Exact int64 ``Y[b*Hc*Wc + oy*Wc + ox, co]`` (the im2col-GEMM layout), direct loops."""
    B = src.shape[0]
    Co = Wq.shape[0]
    out = np.zeros((B * Hc * Wc, Co), dtype=np.int64)
    for b in numba.prange(B):
        for oy in range(Hc):
            for ox in range(Wc):
                r = b * Hc * Wc + oy * Wc + ox
                for co in range(Co):
                    acc = np.int64(0)
                    for ci in range(C):
                        for dy in range(k):
                            y = oy + dy - p
                            if 0 <= y < H:
                                for dx in range(k):
                                    x = ox + dx - p
                                    if 0 <= x < W:
                                        acc += np.int64(src[b, ci * H * W + y * W + x]) * Wq[co, ci, dy, dx]
                    out[r, co] = acc
    return out


def _pool_route(Y, B, Co, Hc, Wc, q):
    """Max pooling of ``Y`` (im2col layout, exact integers in any dtype) with the first-max rule.

    Returns ``(pooled (B, Co*Hp*Wp) int64, route (B, Co*Hp*Wp) int64 = oy*Wc + ox of the maximum)``."""
    Hp, Wp = Hc // q, Wc // q
    n = Co * Hp * Wp
    pooled = np.empty((B, n), dtype=np.int64)
    route = np.empty((B, n), dtype=np.int64)
    for b in numba.prange(B):
        best = np.empty(Co, dtype=np.int64)
        arg = np.empty(Co, dtype=np.int64)
        for py in range(Hp):
            for px in range(Wp):
                for dy in range(q):
                    for dx in range(q):
                        oy = py * q + dy
                        ox = px * q + dx
                        r = b * Hc * Wc + oy * Wc + ox
                        first = dy == 0 and dx == 0
                        for co in range(Co):  # contiguous row of Y
                            v = np.int64(Y[r, co])
                            if first or v > best[co]:  # strict: the first maximum in row-major order wins
                                best[co] = v
                                arg[co] = oy * Wc + ox
                for co in range(Co):
                    j = co * Hp * Wp + py * Wp + px
                    pooled[b, j] = best[co]
                    route[b, j] = arg[co]
    return pooled, route


def _conv_feedback(post, route, Fr, Cin, H, W, Wc, k, p):
    """Exact ``convT(U(post), Fq)``, flat ``(B, Cin*H*W)`` int64: a scatter of every routed, non-zero
    pooled unit into a channels-last buffer (``Fr = Fq`` as ``(Co, k, k, Cin)``; ``post`` and ``Fr`` of
    one integer dtype, wide enough for every partial sum: the inner loop over input channels is
    contiguous and vectorises)."""
    B, n = post.shape
    Co = Fr.shape[0]
    out = np.empty((B, Cin * H * W), dtype=np.int64)
    per_c = n // Co
    for b in numba.prange(B):
        buf = np.zeros((H, W, Cin), dtype=Fr.dtype)
        for j in range(n):
            v = post[b, j]
            if v == 0:
                continue
            co = j // per_c
            r = route[b, j]
            oy = r // Wc
            ox = r - oy * Wc
            for dy in range(k):
                y = oy + dy - p
                if 0 <= y < H:
                    for dx in range(k):
                        x = ox + dx - p
                        if 0 <= x < W:
                            for ci in range(Cin):
                                buf[y, x, ci] += v * Fr[co, dy, dx, ci]  # exact in Fr's dtype (see operand)
        for ci in range(Cin):
            for y in range(H):
                for x in range(W):
                    out[b, ci * H * W + y * W + x] = np.int64(buf[y, x, ci])
    return out


def _conv_pool_direct(src, Wr, C, H, W, k, p, Hc, Wc, q):
    """Fused exact conv + max pool + routing, channels last: per pooled window, the ``q*q`` conv
    positions in row-major order, each ``acc[co] = sum_{dy,dx,ci} x[oy+dy-p, ox+dx-p, ci] Wr[dy,dx,ci,co]``
    (zero inputs skipped; the inner loop over output channels is contiguous and vectorises; ``Wr`` of a
    dtype in which every partial sum is exact). Returns ``(pooled (B, Co*Hp*Wp), route)`` int64."""
    B = src.shape[0]
    Co = Wr.shape[3]
    Hp, Wp = Hc // q, Wc // q
    Hq, Wq = H + 2 * p, W + 2 * p
    n = Co * Hp * Wp
    pooled = np.empty((B, n), dtype=np.int64)
    route = np.empty((B, n), dtype=np.int64)
    for b in numba.prange(B):
        xp = np.zeros((Hq, Wq, C), dtype=Wr.dtype)
        for ci in range(C):
            for y in range(H):
                for x in range(W):
                    xp[y + p, x + p, ci] = src[b, ci * H * W + y * W + x]
        acc = np.empty(Co, dtype=Wr.dtype)
        best = np.empty(Co, dtype=np.int64)
        arg = np.empty(Co, dtype=np.int64)
        for py in range(Hp):
            for px in range(Wp):
                for wy in range(q):
                    for wx in range(q):
                        oy = py * q + wy
                        ox = px * q + wx
                        acc[:] = 0
                        for dy in range(k):
                            for dx in range(k):
                                for ci in range(C):
                                    v = xp[oy + dy, ox + dx, ci]
                                    if v != 0:
                                        for co in range(Co):
                                            acc[co] += v * Wr[dy, dx, ci, co]
                        first = wy == 0 and wx == 0
                        for co in range(Co):
                            a = np.int64(acc[co])
                            if first or a > best[co]:  # strict: the first maximum in row-major order wins
                                best[co] = a
                                arg[co] = oy * Wc + ox
                for co in range(Co):
                    j = co * Hp * Wp + py * Wp + px
                    pooled[b, j] = best[co]
                    route[b, j] = arg[co]
    return pooled, route


@functools.lru_cache(maxsize=None)
def _conv_kernel(name: str, parallel: bool):
    if name in ("direct", "feedback"):  # reassociation is exact: every partial sum is an integer the dtype holds
        fn = _conv_pool_direct if name == "direct" else _conv_feedback
        return numba.njit(cache=True, parallel=parallel, fastmath=_EXACT_FLAGS)(fn)
    fn = {"im2col": _im2col, "int64": _conv_int64, "pool": _pool_route, "feedback": _conv_feedback}[name]
    return numba.njit(cache=True, parallel=parallel)(fn)


def conv_pool_int(src: np.ndarray, wq_by_dtype: dict, geo: ConvGeometry, dtype, parallel: bool = False,
                  method: str = "direct"):
    """Exact pooled accumulator and routing of ``P(conv_int(src, Wq))`` (``docs/hwsim_semantics.md``).

    Args:
        src: (B, C_in*H*W) integer-valued codes (any numeric dtype).
        wq_by_dtype: ``{dtype: (Wq (C_out, C_in, k, k), Wq as (C_in*k*k, C_out))}``.
        geo: the term's geometry; dtype: from :func:`exact_dtype` of the per-channel bound.
        method: ``"direct"`` (fused channels-last conv + pool in numba, the default) or ``"im2col"``
            (im2col, BLAS / int64 GEMM, then the pooling kernel); identical results.

    Returns:
        ``(pooled (B, n_out) int64, route (B, n_out) int64)``.
    """
    C, H, W = geo.in_shape
    Hc, Wc = geo.conv_shape
    k, p, B = geo.kernel, geo.padding, src.shape[0]
    w4, wcol = wq_by_dtype[dtype]
    if method == "direct":
        wr = wq_by_dtype[("direct", dtype)]
        return _conv_kernel("direct", parallel)(np.ascontiguousarray(src), wr, C, H, W, k, p, Hc, Wc, geo.pool)
    if dtype is np.int64:
        Y = _conv_kernel("int64", parallel)(np.ascontiguousarray(src), w4, C, H, W, k, p, Hc, Wc)
    else:
        cols = np.empty((B * Hc * Wc, C * k * k), dtype=dtype)
        _conv_kernel("im2col", parallel)(np.ascontiguousarray(src), C, H, W, k, p, Hc, Wc, cols)
        Y = cols @ wcol
    return _conv_kernel("pool", parallel)(Y, B, geo.c_out, Hc, Wc, geo.pool)


class _RowMemo:
    """Per-sample reuse of a row-wise pure function of integer operands: ``get(keys, fn)`` returns
    ``fn(*keys)`` (a tuple of arrays with one row per sample), recomputing only the rows where some key
    differs from the previous call's (the previous arrays are kept by reference; states are never
    modified in place). Exact: the values are integers determined by the operand rows."""

    def __init__(self):
        self.keys, self.vals = None, None

    def get(self, keys: tuple, fn):
        old = self.keys
        if old is not None and all(a is b for a, b in zip(keys, old)):
            return self.vals
        if old is not None and all(a.shape == b.shape for a, b in zip(keys, old)):
            changed = np.zeros(len(keys[0]), dtype=bool)
            for a, b in zip(keys, old):
                changed |= (a != b).any(axis=1)
            rows = np.flatnonzero(changed)
            if len(rows) < len(changed):
                vals = tuple(v.copy() for v in self.vals)
                if len(rows):
                    for v, nv in zip(vals, fn(*(a[rows] for a in keys))):
                        v[rows] = nv
                self.keys, self.vals = keys, vals
                return vals
        self.keys, self.vals = keys, fn(*keys)
        return self.vals


def conv_operands(w: np.ndarray) -> dict:
    """Forward kernel codes laid out for :func:`conv_pool_int`, per product dtype: ``{dtype: (Wq, Wq as
    (C_in*k*k, C_out))}`` (im2col) and ``{("direct", dtype): Wq as (k, k, C_in, C_out)}``."""
    out = {}
    for dt in (np.float32, np.float64, np.int64):
        out[dt] = (np.ascontiguousarray(w, dtype=dt), np.ascontiguousarray(w.reshape(w.shape[0], -1).T, dtype=dt))
        out[("direct", dt)] = np.ascontiguousarray(w.transpose(2, 3, 1, 0), dtype=dt)
    return out


def conv_feedback_operand(fq: np.ndarray, max_post: int, pool: int = 1) -> np.ndarray:
    """``Fq`` laid out for :func:`conv_feedback_int`: ``(Co, k, k, Cin)`` in the narrowest exact type.

    An input unit receives, per output channel, at most one routed unit from each pooling window its
    ``k x k`` reach touches: ``nw = min(k, (k + pool - 2) // pool + 1)`` windows per dimension. So every
    partial sum is bounded by ``Co * nw**2 * max|Fq| * max_post``: float32 when that is ``<= 2**24``
    (int8 1-32-64 5x5 pool 2: ``64 * 9 * 127 * 128 < 2**24``), int32 below ``2**31``, else int64."""
    co, k = fq.shape[1], fq.shape[2]
    nw = min(k, (k + pool - 2) // pool + 1)
    bound = co * nw * nw * int(np.abs(fq).max(initial=0)) * int(max_post)
    dt = np.float32 if bound <= EXACT_F32 else np.int32 if bound < 2**31 else np.int64
    return np.ascontiguousarray(fq.transpose(1, 2, 3, 0), dtype=dt)


def conv_feedback_int(post: np.ndarray, route: np.ndarray, fr: np.ndarray, geo: ConvGeometry,
                      parallel: bool = False) -> np.ndarray:
    """Exact int64 feedback accumulator ``convT_int(U(post), Fq)`` of shape (B, C_in*H*W);
    ``fr = conv_feedback_operand(Fq, max|post|)``."""
    C, H, W = geo.in_shape
    return _conv_kernel("feedback", parallel)(np.ascontiguousarray(post, dtype=fr.dtype), route, fr, C, H, W,
                                              geo.conv_shape[1], geo.kernel, geo.padding)


def _as_int_codes(a, name: str, shape: tuple, lo: int, hi: int, fix: str) -> np.ndarray:
    arr = np.asarray(a)
    if arr.dtype.kind not in "iu":
        raise ValueError(f"{name} has dtype {arr.dtype}; allowed: integer codes ({fix})")
    if arr.shape != shape:
        raise ValueError(f"{name} has shape {arr.shape}; expected {shape}")
    if arr.size:
        mn, mx = _min_max(arr.reshape(-1))
        if mn < lo or mx > hi:
            raise ValueError(f"{name} has codes in [{mn}, {mx}]; allowed: [{lo}, {hi}] ({fix})")
    return arr.astype(np.int64, copy=False)


@numba.njit(cache=True)
def _min_max(a):
    """``(min, max)`` of a non-empty 1-D array in one pass."""
    mn = a[0]
    mx = a[0]
    for v in a:
        mn = min(mn, v)
        mx = max(mx, v)
    return mn, mx


def beta_multiplier(beta: float) -> tuple[int, int]:
    """Signed fixed-point ``(multiplier, shift)`` of ``beta`` (:func:`quant.ops.quantize_multiplier`).

    >>> beta_multiplier(0.5), beta_multiplier(-0.5), beta_multiplier(0.0)
    ((1073741824, 31), (-1073741824, 31), (0, 0))
    """
    if not (isinstance(beta, (int, float, np.floating)) and math.isfinite(beta)):
        raise ValueError(f"beta={beta!r} is invalid; allowed: a finite float")
    if beta == 0:
        return 0, 0
    m, s = ops.quantize_multiplier(abs(float(beta)))
    return (m if beta > 0 else -m), s


def _requant_arrays(q, spec, n: int) -> tuple[np.ndarray, np.ndarray]:
    pairs = quant.requant_params(q, spec)
    if len(pairs) == 1:
        pairs = pairs * n
    return (np.array([p[0] for p in pairs], dtype=np.int64), np.array([p[1] for p in pairs], dtype=np.int64))


# ------------------------------------------------------------------------------ term kernels
@dataclasses.dataclass(frozen=True)
class TermContribution:
    """One integer accumulator of an interaction term beyond the layered chain (e.g. a skip coupling):
    ``A = ovf(codes @ c_src)``, added to node ``node`` as ``rq(A, mult, shift)`` with its own rounding
    (tensor id ``rng.tensor_id(KIND_STATE_TERM, node, index)``, ``index`` = its place among the node's
    extra contributions). ``src == INPUT`` makes it *static*: formed once per phase, like the drive.

    Attributes:
        node: target state node; src: source node (:data:`~models.energy.INPUT` for the input).
        codes: ``(n_node, n_src)`` int64 weight codes; requant: ``(multiplier (n_node,), shift (n_node,))``.
        term: the term it comes from (its ``str``, for messages).
    """

    node: int
    src: int
    codes: np.ndarray
    requant: tuple
    term: str = ""

    @property
    def static(self) -> bool:
        return self.src == INPUT


class _Lowering:
    """What the term kernels fill in: the layered chain (forward/feedback codes, biases) and extras."""

    def __init__(self, spec: HardwareSpec, sizes: tuple):
        L = len(sizes) - 1
        self.spec, self.sizes = spec, sizes
        self.w_codes, self.fwd_rq, self.fwd_scale = [None] * L, [None] * L, [None] * L
        self.fb_codes, self.fb_rq = [None] * (L - 1), [None] * (L - 1)
        self.bias = [np.zeros(n, dtype=np.int64) for n in sizes[1:]]
        self.extra: list[TermContribution] = []
        self.conv: list[ConvGeometry | None] = [None] * L

    def quantize(self, w: np.ndarray):
        q = quant.quantize_weights(w, self.spec)
        return q, _requant_arrays(q, self.spec, w.shape[0])


class DenseInt:
    """Integer lowering of :class:`~models.energy.Dense` ``s_post . (W s_pre)``.

    A chain coupling ``Dense(post=i, pre=i-1)`` (``pre=INPUT`` for node 0) becomes the fused forward
    accumulator of node ``i`` (``Wq_i``) and, between states, the feedback accumulator of node
    ``i-1`` (``Fq_{i-1}``, ``W^T`` quantised as its own tensor). Any other Dense becomes
    :class:`TermContribution` s: the forward one to ``post`` and, unless ``pre`` is the input, the
    feedback one (``W^T``) to ``pre``, each requantised with its own multiplier.
    """

    @staticmethod
    def lower(t: Dense, w: np.ndarray, low: _Lowering) -> None:
        n_post = low.sizes[t.post + 1]
        n_pre = low.sizes[t.pre + 1] if t.pre != INPUT else low.sizes[0]
        if w.shape != (n_post, n_pre):
            raise ValueError(f"{t}: weight has shape {w.shape}; expected {(n_post, n_pre)}")
        chain = t.pre == t.post - 1 or (t.post == 0 and t.pre == INPUT)
        if chain and low.w_codes[t.post] is None:
            q, rq = low.quantize(w)
            low.w_codes[t.post], low.fwd_rq[t.post], low.fwd_scale[t.post] = q.codes, rq, q.scale
            if t.pre != INPUT:
                qf, rqf = low.quantize(np.ascontiguousarray(w.T))
                low.fb_codes[t.pre], low.fb_rq[t.pre] = qf.codes, rqf
            return
        q, rq = low.quantize(w)
        low.extra.append(TermContribution(t.post, t.pre, q.codes, rq, str(t)))
        if t.pre != INPUT:
            qf, rqf = low.quantize(np.ascontiguousarray(w.T))
            low.extra.append(TermContribution(t.pre, t.post, qf.codes, rqf, str(t)))


class BiasInt:
    """Integer lowering of :class:`~models.energy.Bias`: :func:`quant.bias_codes` on the grid of the
    node's chain forward accumulator (the bias is one more term of that sum, before overflow)."""

    @staticmethod
    def lower(t: Bias, b: np.ndarray, low: _Lowering) -> None:
        if low.fwd_scale[t.node] is None:
            raise UnsupportedError(f"backend {BACKEND!r}: {t} needs the chain coupling Dense(post={t.node}, "
                                   f"pre={t.node - 1 if t.node else INPUT}) (a bias lives on its accumulator grid)")
        scale = np.asarray(low.fwd_scale[t.node], dtype=np.float64).reshape(-1)
        geo = low.conv[t.node]
        if geo is not None and scale.size > 1:  # per output channel -> per pooled unit
            scale = np.repeat(scale, geo.units_per_channel)
        low.bias[t.node] = low.bias[t.node] + quant.bias_codes(b, scale, low.spec)


class ConvPoolInt:
    """Integer lowering of :class:`~models.conv.ConvPool` ``s_post . (P(conv(s_pre, W)) + b)`` (a chain
    coupling ``post = pre + 1``, or ``post = 0`` from the input): forward codes ``Wq`` of the kernel
    (per output channel scales), feedback codes ``Fq`` of ``W.transpose(0, 1)`` quantised as its own
    tensor (per input channel), per-channel bias codes and requantisation pairs expanded to every
    unit of the channel, geometry in ``FixedPointMLP.conv`` (``docs/hwsim_semantics.md``)."""

    @staticmethod
    def lower(t: ConvPool, w: np.ndarray, low: _Lowering, b: np.ndarray | None = None) -> None:
        if not (t.pre == t.post - 1 or (t.post == 0 and t.pre == INPUT)):
            raise UnsupportedError(f"backend {BACKEND!r} lowers ConvPool as a chain coupling only (post = pre + 1, "
                                   f"or post = 0 from the input); got {t}")
        geo = ConvGeometry(tuple(int(d) for d in t.in_shape), int(w.shape[0]), int(t.kernel), int(t.padding),
                           int(t.pool))
        n_pre = low.sizes[t.pre + 1] if t.pre != INPUT else low.sizes[0]
        if w.shape != (geo.c_out, geo.in_shape[0], geo.kernel, geo.kernel) or geo.n_out != low.sizes[t.post + 1] \
                or geo.n_in != n_pre:
            raise ValueError(f"{t}: kernel {w.shape}, {geo.n_in} -> {geo.n_out} units do not fit the node sizes "
                             f"{n_pre} -> {low.sizes[t.post + 1]}")
        if low.w_codes[t.post] is not None:
            raise UnsupportedError(f"backend {BACKEND!r}: node {t.post} has two chain couplings (one allowed)")
        q = quant.quantize_weights(w, low.spec)
        m, sh = _requant_arrays(q, low.spec, geo.c_out)
        upc = geo.units_per_channel
        low.w_codes[t.post], low.fwd_rq[t.post] = q.codes, (np.repeat(m, upc), np.repeat(sh, upc))
        low.fwd_scale[t.post], low.conv[t.post] = np.asarray(q.scale, dtype=np.float64).reshape(-1), geo
        if b is not None:
            sc = np.broadcast_to(low.fwd_scale[t.post], (geo.c_out,))
            low.bias[t.post] = low.bias[t.post] + np.repeat(quant.bias_codes(b, sc, low.spec), upc)
        if t.pre != INPUT:
            qf = quant.quantize_weights(np.ascontiguousarray(w.transpose(1, 0, 2, 3)), low.spec)
            mf, sf = _requant_arrays(qf, low.spec, geo.in_shape[0])
            hw = geo.in_shape[1] * geo.in_shape[2]
            low.fb_codes[t.pre], low.fb_rq[t.pre] = qf.codes, (np.repeat(mf, hw), np.repeat(sf, hw))


INT_KERNELS: dict[type, type] = {Dense: DenseInt, Bias: BiasInt, ConvPool: ConvPoolInt}
"""Integer kernels by term type (found through :func:`models.engine.require_kernels`); the arithmetic
of the lowered accumulators is in :meth:`FixedPointMLP.relax` and :func:`hwsim.torch_mirror.torch_relax`."""


def chain_edges(n_layers: int, extra: Sequence[TermContribution] = ()) -> list[tuple[int, int]]:
    """Interaction graph of the state nodes (chain couplings plus extra state-state contributions)."""
    return [(i - 1, i) for i in range(1, n_layers)] + [(c.src, c.node) for c in extra if not c.static]


# ------------------------------------------------------------------------------------- model
class FixedPointMLP:
    """Integer EqProp network: parameters as integer codes, dynamics in numba (see module docstring).

    Build it with :meth:`from_model` (or :meth:`from_checkpoint`); the constructor takes the integer
    parameters directly and validates them.

    Args:
        spec: an integer :class:`~quant.HardwareSpec` (``spec.is_integer``).
        w_codes: per layer ``(n_l, n_{l-1})`` int64 forward weight codes.
        bias_codes: per layer ``(n_l,)`` int64 bias in forward-accumulator LSBs.
        fwd_requant: per layer ``(multiplier (n_l,), shift (n_l,))`` int64.
        fb_codes: per layer ``l < L-1``: ``(n_l, n_{l+1})`` int64 feedback codes (of ``W_{l+1}^T``).
        fb_requant: per layer ``l < L-1``: ``(multiplier (n_l,), shift (n_l,))``.
        update: ``"async"`` (colour groups of the node graph: even layers then odd) or ``"sync"``.
        cost: ``"mse"`` (nudging supported) or ``"ce"`` (free phase only).
        extra: :class:`TermContribution` s of terms beyond the chain (e.g. a skip coupling).
        groups: update groups (default :func:`models.engine.schedule_groups` of the node graph).
        conv: per layer, a :class:`ConvGeometry` for a ConvPool chain coupling (then ``w_codes[i]`` is the
            kernel ``(C_out, C_in, k, k)``, ``fb_codes[i-1]`` is ``(C_in, C_out, k, k)``; biases and
            requantisation pairs are per unit) or None (dense).
    """

    def __init__(self, spec: HardwareSpec, w_codes, bias_codes, fwd_requant, fb_codes, fb_requant,
                 update: str = "async", cost: str = "mse", extra: Sequence[TermContribution] = (),
                 groups: Sequence[Sequence[int]] | None = None, conv: Sequence[ConvGeometry | None] | None = None):
        check_spec(spec)
        if update not in UPDATES:
            raise ValueError(f"update={update!r} is invalid; allowed: {UPDATES}")
        if cost not in ("mse", "ce"):
            raise ValueError(f"cost={cost!r} is invalid; allowed: 'mse' or 'ce'")
        L = len(w_codes)
        if L < 1 or len(bias_codes) != L or len(fwd_requant) != L or len(fb_codes) != L - 1 or len(fb_requant) != L - 1:
            raise ValueError(f"got {len(w_codes)} weight, {len(bias_codes)} bias, {len(fwd_requant)} requant, "
                             f"{len(fb_codes)} feedback tensors; expected L >= 1, L, L, L-1, L-1")
        self.spec, self.update, self.cost = spec, update, cost
        self.one_code = spec.state.code_of(1.0)  # representable: checked by check_spec
        wf = spec.weights
        self.w_codes = [np.asarray(w, dtype=np.int64) for w in w_codes]
        self.conv: list[ConvGeometry | None] = list(conv) if conv is not None else [None] * L
        if len(self.conv) != L:
            raise ValueError(f"conv has {len(self.conv)} entries; expected one per layer ({L})")
        g0 = self.conv[0]
        self.sizes = (g0.n_in if g0 is not None else self.w_codes[0].shape[1],) + tuple(
            g.n_out if g is not None else w.shape[0] for w, g in zip(self.w_codes, self.conv))
        for i, (w, g) in enumerate(zip(self.w_codes, self.conv)):
            want = (self.sizes[i + 1], self.sizes[i]) if g is None else (g.c_out, g.in_shape[0], g.kernel, g.kernel)
            if w.shape != want or (g is not None and g.n_in != self.sizes[i]):
                raise ValueError(f"w_codes[{i}] has shape {w.shape}; expected {want} (sizes {self.sizes})")
        self.fb_codes = [np.asarray(w, dtype=np.int64) for w in fb_codes]
        for i, w in enumerate(self.fb_codes):
            g = self.conv[i + 1]
            want = (self.sizes[i + 1], self.sizes[i + 2]) if g is None else (g.in_shape[0], g.c_out, g.kernel, g.kernel)
            if w.shape != want:
                raise ValueError(f"fb_codes[{i}] has shape {w.shape}; expected {want}")
        self.extra = [dataclasses.replace(c, codes=np.asarray(c.codes, dtype=np.int64),
                                          requant=tuple(np.asarray(a, dtype=np.int64).reshape(-1) for a in c.requant))
                      for c in extra]
        for k, c in enumerate(self.extra):
            n_src = self.sizes[c.src + 1] if c.src != INPUT else self.sizes[0]
            if not (0 <= c.node < L and INPUT <= c.src < L) or c.codes.shape != (self.sizes[c.node + 1], n_src):
                raise ValueError(f"extra[{k}] ({c.term}): node {c.node}, src {c.src}, codes {c.codes.shape} do not "
                                 f"fit the sizes {self.sizes}")
            if any(a.shape != (self.sizes[c.node + 1],) for a in c.requant):
                raise ValueError(f"extra[{k}] ({c.term}): requant shapes do not match node {c.node}")
        for name, ws in (("w_codes", self.w_codes), ("fb_codes", self.fb_codes),
                         ("extra codes", [c.codes for c in self.extra])):
            for i, w in enumerate(ws):
                if w.size and (w.min() < wf.qmin or w.max() > wf.qmax):
                    raise ValueError(f"{name}[{i}] has codes outside [{wf.qmin}, {wf.qmax}] of {wf.kind}")
        acc_hi = 2 ** (spec.acc_bits - 1) - 1
        self.bias_codes = [np.asarray(b, dtype=np.int64).reshape(-1) for b in bias_codes]
        for i, b in enumerate(self.bias_codes):
            if b.shape != (self.sizes[i + 1],) or (b.size and np.abs(b).max() > acc_hi + 1):
                raise ValueError(f"bias_codes[{i}]: shape {b.shape} / range; expected ({self.sizes[i + 1]},) "
                                 f"within the {spec.acc_bits}-bit accumulator")
        self.fwd_requant = [tuple(np.asarray(a, dtype=np.int64).reshape(-1) for a in p) for p in fwd_requant]
        self.fb_requant = [tuple(np.asarray(a, dtype=np.int64).reshape(-1) for a in p) for p in fb_requant]
        for name, rq, off in (("fwd_requant", self.fwd_requant, 1), ("fb_requant", self.fb_requant, 1)):
            for i, (m, s) in enumerate(rq):
                if m.shape != (self.sizes[i + off],) or s.shape != m.shape:
                    raise ValueError(f"{name}[{i}] has shapes {m.shape}, {s.shape}; expected ({self.sizes[i + off]},)")
        self.groups = ([list(g) for g in groups] if groups is not None
                       else schedule_groups(update, chain_edges(L, self.extra), L))
        if sorted(i for g in self.groups for i in g) != list(range(L)):
            raise ValueError(f"groups={self.groups} must partition the nodes 0..{L - 1}")
        # per node, its extra contributions (index into self.extra) with their rounding tensor ids
        self.extra_at: list[list[tuple[int, int]]] = [[] for _ in range(L)]
        self.extra_tid: list[int] = []
        for k, c in enumerate(self.extra):
            self.extra_tid.append(rng.tensor_id(rng.KIND_STATE_TERM, c.node, len(self.extra_at[c.node])))
            self.extra_at[c.node].append((k, self.extra_tid[-1]))
        # exact-product bookkeeping: transposed codes per dtype, row bounds sum_i |W[j, i]|
        self._fwd_t = [self._by_dtype(w) if g is None else self._conv_by_dtype(w) for w, g in zip(self.w_codes, self.conv)]
        self._fb_t = [self._by_dtype(w) if self.conv[i + 1] is None else None for i, w in enumerate(self.fb_codes)]
        self._extra_t = [self._by_dtype(c.codes) for c in self.extra]
        self._fwd_rowsum = [_rowsum(w.reshape(w.shape[0], -1)) for w in self.w_codes]
        self._fb_conv = [conv_feedback_operand(w, self.one_code, self.conv[i + 1].pool) if self.conv[i + 1] is not None
                         else None
                         for i, w in enumerate(self.fb_codes)]
        # conv feedback is an integer scatter (no float bound needed)
        self._fused_ops = self._drive_cache = None  # fused2_kernel's operands, the drive GEMM's (lazy)
        self._fb_rowsum = [_rowsum(w) if self.conv[i + 1] is None else 0 for i, w in enumerate(self.fb_codes)]

    @staticmethod
    def _conv_by_dtype(w: np.ndarray) -> dict:
        return conv_operands(w)

    @staticmethod
    def _by_dtype(w: np.ndarray) -> dict:
        return {dt: (np.ascontiguousarray(w, dtype=dt), np.ascontiguousarray(w.T, dtype=dt))
                for dt in (np.float32, np.float64, np.int64)}

    # ------------------------------------------------------------------------ construction
    @classmethod
    def from_model(cls, net, spec: HardwareSpec, *, update: str | None = None) -> "FixedPointMLP":
        """Quantise a (trained) float energy model (:class:`~models.eqprop_mlp.EqPropMLP`,
        :class:`~models.skip_mlp.SkipEqPropMLP`, ...) under ``spec``, term by term (:data:`INT_KERNELS`).

        Weights: ``quantize_weights(W, spec)``; feedback: ``quantize_weights(W.T, spec)``; biases:
        :func:`quant.bias_codes`; requantisation: ``quant.requant_params``. The update groups are
        ``net.schedule(update)``.

        Args:
            net: an energy model whose state nodes form a layered chain (every node ``i`` has the
                coupling ``Dense(post=i, pre=i-1)``), plus any further Dense / Bias terms.
            spec: integer spec (``fp32`` and analog specs raise :class:`quant.UnsupportedError`).
            update: override the model's update schedule.

        Raises:
            UnsupportedError: a term type without an integer kernel, or a spec this backend cannot run.
        """
        check_spec(spec)
        terms = getattr(net, "terms", None)
        if terms is None or not hasattr(net, "nodes"):
            raise ValueError(f"net={type(net).__name__} is invalid; allowed: an energy model such as "
                             "models.eqprop_mlp.EqPropMLP (nodes and interaction terms)")
        kernels = require_kernels(BACKEND, INT_KERNELS, terms)
        boxed = [i for i, n in enumerate(net.nodes) if n.activation != "hard_sigmoid"]
        if boxed:
            raise UnsupportedError(f"backend {BACKEND!r} has no integer activation for nodes {boxed} "
                                   f"({net.nodes[boxed[0]].activation}); it supports: hard_sigmoid (the clamp "
                                   "[0, code(1.0)])")
        sizes = (int(net.n_in),) + tuple(int(n.size) for n in net.nodes)
        low = _Lowering(spec, sizes)
        param = lambda name: net.get_parameter(name).detach().to("cpu").double().numpy()  # noqa: E731
        for dense_pass in (True, False):  # couplings first: a bias needs its node's accumulator grid
            for t, k in zip(terms, kernels):
                if isinstance(t, Bias) != dense_pass:
                    k.lower(t, param(t.params[0]), low, *[param(n) for n in t.params[1:]])
        missing = [i for i, w in enumerate(low.w_codes) if w is None]
        if missing:
            raise UnsupportedError(f"backend {BACKEND!r} needs the chain coupling Dense(post=i, pre=i-1) of every "
                                   f"state node; nodes {missing} have none")
        update = update or net.config.update
        return cls(spec, low.w_codes, low.bias, low.fwd_rq, low.fb_codes, low.fb_rq,
                   update=update, cost=net.config.cost, extra=low.extra, groups=net.schedule(update),
                   conv=low.conv if any(g is not None for g in low.conv) else None)

    @classmethod
    def from_checkpoint(cls, path: str | Path, spec: HardwareSpec, *, update: str | None = None) -> "FixedPointMLP":
        """:meth:`from_model` on the network of a checkpoint written by ``models.checkpoint.save_checkpoint``."""
        from models.checkpoint import load_checkpoint

        net, _meta = load_checkpoint(path)
        return cls.from_model(net, spec, update=update)

    # ------------------------------------------------------------------------------ helpers
    @property
    def n_layers(self) -> int:
        return len(self.w_codes)

    def quantize_input(self, x, *, seed: int = 0) -> np.ndarray:
        """Float inputs ``(B, n_in)`` -> int64 state codes (``quant.quantize_state`` with the spec).

        Stochastic rounding uses counters ``(seed, 0, INPUT_TENSOR_ID, flat index)``.
        """
        x = np.asarray(x)
        if x.ndim != 2 or x.shape[1] != self.sizes[0]:
            raise ValueError(f"input shape {x.shape} does not match the network: expected (B, {self.sizes[0]})")
        if x.dtype.kind != "f":
            raise ValueError(f"input dtype {x.dtype}: quantize_input takes float values; integer codes go to relax()")
        if not np.all(np.isfinite(x)):
            raise ValueError("input has non-finite values; allowed: finite floats")
        return quant.quantize_state(x, self.spec, seed=seed, step=0, tensor_id=INPUT_TENSOR_ID)

    def dequantize_states(self, states: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Codes -> float64 values ``code * 2**-frac_bits`` per layer."""
        return [quant.dequantize_state(np.asarray(s), self.spec) for s in states]

    def check_relax_args(self, x_codes, s0, beta, y, n_steps, seed, step_offset):
        """Validate :meth:`relax` arguments (shared with the torch mirror); returns numpy int64 copies."""
        st = self.spec.state
        x = np.asarray(x_codes)
        if x.ndim != 2 or x.shape[1] != self.sizes[0]:
            raise ValueError(f"x_codes shape {x.shape} does not match the network: expected (B, {self.sizes[0]})")
        B = x.shape[0]
        x = _as_int_codes(x, "x_codes", (B, self.sizes[0]), st.qmin, st.qmax, "quantize with quantize_input()")
        if s0 is None:
            s = [np.zeros((B, n), dtype=np.int64) for n in self.sizes[1:]]
        else:
            if len(s0) != self.n_layers:
                raise ValueError(f"s0 has {len(s0)} layers; expected {self.n_layers}")
            s = [_as_int_codes(t, f"s0[{i}]", (B, n), 0, self.one_code, "states are codes in [0, code(1.0)]")
                 for i, (t, n) in enumerate(zip(s0, self.sizes[1:]))]
        bm, bs = beta_multiplier(beta)
        yy = np.zeros(B, dtype=np.int64)
        if bm != 0:
            if self.cost != "mse":
                raise ValueError(f"cost={self.cost!r}: the fixed-point nudge implements cost='mse' only; "
                                 "use beta=0 (free phase) or a model trained with cost='mse'")
            if y is None:
                raise ValueError("a nudged phase (beta != 0) needs the targets y")
            yy = np.asarray(y)
            if yy.shape != (B,) or yy.dtype.kind not in "iu" or (B and (yy.min() < 0 or yy.max() >= self.sizes[-1])):
                raise ValueError(f"y must be {B} integer labels in [0, {self.sizes[-1]}); got shape {yy.shape}")
            yy = yy.astype(np.int64)
        for name, v in (("n_steps", n_steps), ("seed", seed), ("step_offset", step_offset)):
            if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < (1 if name == "n_steps" else 0):
                raise ValueError(f"{name}={v!r} is invalid; allowed: an int >= {1 if name == 'n_steps' else 0}")
        return x, s, yy, bm, bs

    # ----------------------------------------------------------------------------- dynamics
    def relax(self, x_codes, s0=None, *, beta: float = 0.0, y=None, n_steps: int, seed: int = 0,
              step_offset: int = 0, early_exit: bool = True, record_trace: bool = False,
              parallel: bool | None = None, engine: str = "auto") -> tuple[list[np.ndarray], IntRelaxInfo]:
        """Run ``n_steps`` sweeps of the integer dynamics from ``s0`` (zeros if None).

        Args:
            x_codes: (B, n_in) integer input codes (:meth:`quantize_input`).
            s0: optional list of (B, n_l) integer codes in ``[0, code(1.0)]``.
            beta: nudging strength (0: free phase); its sign is kept (symmetric nudging).
            y: (B,) int labels, needed when ``beta != 0``.
            n_steps: number of sweeps (``self.groups`` in turn; sync: all from the old state).
            seed, step_offset: stochastic-rounding counters (sweep ``t`` uses step ``step_offset + t``).
            early_exit: with deterministic rounding, stop once a sweep changed no code (the state is
                then an exact fixed point, so further sweeps are the identity).
            record_trace: ``info.trace`` = samples changed per sweep.
            engine: ``"auto"`` (the fused kernel :func:`fused2_kernel` when it applies: one dense hidden
                layer, no extra terms, deterministic rounding; else the generic per-layer kernels),
                ``"generic"`` (always the per-layer kernels), ``"event"`` / ``"dense"`` (the fused
                kernel with event-driven / full products; ``ValueError`` where it does not apply).
                With the fused kernel, ``early_exit`` stops each sample at its own exact fixed point
                (bit-identical to all sweeps, diagnostics included); without it every sample runs
                all ``n_steps`` sweeps. All engines give identical codes and diagnostics.

        Returns:
            ``(states, info)``: list of (B, n_l) int64 codes and :class:`~models.solvers.IntRelaxInfo`
            (settling loop :func:`models.solvers.iterate`; ``n_overflow`` per node).
        """
        x, s, y, bm, bsh = self.check_relax_args(x_codes, s0, beta, y, n_steps, seed, step_offset)
        B, L = x.shape[0], self.n_layers
        sp = self.spec
        rmode = ROUNDING_CODES[sp.rounding]
        if engine not in ENGINES:
            raise ValueError(f"engine={engine!r} is invalid; allowed: {ENGINES}")
        why_not = self.fused_unsupported(B)
        if engine in ("event", "dense") and why_not:
            raise ValueError(f"engine={engine!r}: the fused kernel does not apply ({why_not}); use engine='auto'")
        use_fused = engine != "generic" and not why_not
        wrap = sp.overflow == "wrap"
        # hidden-product dtype: the widest needed by any W @ c with c in [0, one_code]
        hid_bounds = [self._fwd_rowsum[i] * self.one_code for i in range(1, L)]
        hid_bounds += [r * self.one_code for r in self._fb_rowsum]
        sdt = exact_dtype(max(hid_bounds, default=0))
        xmax = max(abs(int(v)) for v in _min_max(x.reshape(-1))) if x.size else 0
        ddt = exact_dtype(self._fwd_rowsum[0] * xmax)
        log.debug("exact products: drive in %s, hidden products in %s", ddt.__name__, sdt.__name__)
        # conv products are exact integers of their operands: a sample whose operands did not change
        # keeps its pooled accumulator, routing and feedback accumulator (_RowMemo), bit for bit
        conv_memo: dict = {}

        def fwd_pooled(i: int, src_arr, dt, parallel: bool):
            memo = conv_memo.setdefault(("fwd", i), _RowMemo())
            return memo.get((src_arr,), lambda a: conv_pool_int(a, self._fwd_t[i], self.conv[i], dt, parallel))

        def fwd_acc(i: int, src_arr, dt, parallel: bool):
            if self.conv[i] is None:
                return exact_matmul(src_arr, self._fwd_t[i], dt, parallel)
            return fwd_pooled(i, src_arr, dt, parallel)[0]

        def conv_route(i: int, src_arr, parallel: bool):
            return fwd_pooled(i, src_arr, sdt, parallel)[1]

        def conv_fb(i: int, post, route, parallel: bool):
            memo = conv_memo.setdefault(("fb", i), _RowMemo())
            return memo.get((post, route), lambda p_, r_: (
                conv_feedback_int(p_, r_, self._fb_conv[i], self.conv[i + 1], parallel),))[0]

        if self.conv[0] is None and ddt is np.float32 and B:
            drive = drive_f32(x, self._drive_t())  # exact: every partial sum is an integer <= 2**24
        else:
            drive = fwd_acc(0, x, ddt, False)  # (B, n_0), computed once per phase
        det = rmode != 2

        def par(n: int) -> bool:
            return bool(parallel) if parallel is not None else B * n >= PARALLEL_MIN_ELEMENTS

        def fwd_term(i: int, acc, step: int):
            m, sh = self.fwd_requant[i]
            return get_requant_kernel(det, par(self.sizes[i + 1]))(
                acc, self.bias_codes[i], m, sh, sp.acc_bits, wrap, rmode, seed, step, tensor_id(i))

        def extra_term(c: TermContribution, tid: int, acc, step: int):
            m, sh = c.requant
            zero = np.zeros(len(m), dtype=np.int64)
            return get_requant_kernel(det, par(len(m)))(acc, zero, m, sh, sp.acc_bits, wrap, rmode, seed, step, tid)

        n_over = np.zeros(L, dtype=np.int64)
        ovbuf = np.zeros(1, dtype=np.int64)
        # the drive accumulator is formed once per phase: its overflows are counted once; with
        # deterministic rounding its requantised value is constant too. Static extra terms likewise.
        pre, n_over[0] = fwd_term(0, drive, step_offset)
        static_acc, static_val = {}, {}
        for k, c in enumerate(self.extra):
            if c.static:
                static_acc[k] = exact_matmul(x, self._extra_t[k], exact_dtype(_rowsum(c.codes) * xmax))
                static_val[k], o = extra_term(c, self.extra_tid[k], static_acc[k], step_offset)
                n_over[c.node] += o
        if use_fused:
            return self._relax_fused(pre, s, y, bm, bsh, n_steps, early_exit, record_trace, n_over, wrap, rmode,
                                     engine)
        dummy = np.zeros((1, 1), dtype=sdt)
        tid_fb = [tensor_id(i, rng.KIND_STATE_FB) for i in range(L)]
        tid_nudge = tensor_id(L - 1, rng.KIND_NUDGE)

        def node_update(i: int, src: list, step: int, changed: np.ndarray) -> np.ndarray:
            if i == 0:
                fwd = pre if det else fwd_term(0, drive, step)[0]
            else:
                acc = fwd_acc(i, src[i - 1], sdt, par(self.sizes[i + 1]))
                fwd, k = fwd_term(i, acc, step)
                n_over[i] += k
            for k, tid in self.extra_at[i]:  # extra terms: each its own accumulator and rounding
                c = self.extra[k]
                if c.static:
                    v = static_val[k] if det else extra_term(c, tid, static_acc[k], step)[0]
                else:
                    acc = exact_matmul(src[c.src], self._extra_t[k], sdt, par(self.sizes[i + 1]))
                    v, o = extra_term(c, tid, acc, step)
                    n_over[i] += o
                fwd = fwd + v
            has_fb = i + 1 < L
            if not has_fb:
                acc_b = dummy
            elif self.conv[i + 1] is not None:
                p_ = par(self.sizes[i + 1])
                acc_b = conv_fb(i, src[i + 1], conv_route(i + 1, src[i], p_), p_)
            else:
                acc_b = exact_matmul(src[i + 1], self._fb_t[i], sdt, par(self.sizes[i + 1]))
            mb, sb = self.fb_requant[i] if has_fb else self.fwd_requant[i]
            nudge = i == L - 1 and bm != 0
            out = np.empty((B, self.sizes[i + 1]), dtype=sdt)
            ovbuf[0] = 0
            get_update_kernel(det, has_fb, nudge, par(self.sizes[i + 1]))(
                fwd, acc_b, mb, sb, src[i], y, bm, bsh, self.one_code, sp.acc_bits, wrap, rmode, seed,
                step, tid_fb[i], tid_nudge, out, changed, ovbuf)
            n_over[i] += ovbuf[0]
            return out

        def sweep(s: list, t: int):
            step = step_offset + t
            changed = np.zeros(B, dtype=bool)
            cur = list(s)
            for group in self.groups:  # nodes of a group read the state before the group (sync: one group)
                new_vals = {i: node_update(i, cur, step, changed) for i in group}
                for i, v in new_vals.items():
                    cur[i] = v
            return cur, changed

        s, info = iterate(sweep, [t.astype(sdt) for t in s], max_steps=n_steps, early_exit=early_exit and det,
                          record_trace=record_trace)
        info.n_overflow = n_over
        return [t.astype(np.int64) for t in s], info

    def fused_unsupported(self, B: int = 1) -> str:
        """Why :func:`fused2_kernel` cannot run this network (``""`` when it can).

        Besides the structure (one dense hidden layer, no extra terms, deterministic rounding,
        saturating accumulators, async or sync groups) it proves float64 exactness: every partial
        sum of ``Fb @ o`` and ``W2 @ h`` (at most ``rowsum(|W|) * code(1)``) and every hidden-layer
        product ``a * mb`` (``|a| <= min(rowsum(|Fb|) * code(1), 2**(acc_bits-1))``) is an integer
        below 2**53 (:data:`EXACT_F64`), and ``mb * 2**-sh`` is a normal float64.
        """
        if self.n_layers != 2 or any(g is not None for g in self.conv) or self.extra:
            return "it needs a dense chain with one hidden layer and no extra terms"
        if self.spec.rounding == "stochastic":
            return "it needs deterministic rounding"
        if self.spec.overflow == "wrap":
            return "it needs saturating accumulators"
        if [list(g) for g in self.groups] not in ([[0], [1]], [[0, 1]]):
            return f"update groups {self.groups} are neither async [[0], [1]] nor sync [[0, 1]]"
        if max(self._fwd_rowsum[1], self._fb_rowsum[0]) * self.one_code >= EXACT_F64:
            return "its accumulators may exceed 2**53 (not exact in float64)"
        m, sh = self.fb_requant[0]
        a_max = min(self._fb_rowsum[0] * self.one_code, 2 ** (self.spec.acc_bits - 1))
        if int(np.abs(m).max(initial=0)) * a_max >= EXACT_F64 or int(np.abs(sh).max(initial=0)) > 900:
            return "its hidden requantisation products may exceed 2**53 (not exact in float64)"
        if B < 1:
            return "an empty batch"
        return ""

    def _hidden_rq_table(self) -> tuple[np.ndarray, bool]:
        """(3, n_0) float64 rows for :func:`fused2_kernel`'s exact hidden requantiser: ``m * 2**-sh``
        (exact: a power-of-two scaling of an integer < 2**53), the accumulator's saturation bounds
        ``lo``, ``hi``; and whether saturation can occur (``rowsum(|Fb|) * code(1) > hi``)."""
        m, sh = self.fb_requant[0]
        hi = 2 ** (self.spec.acc_bits - 1) - 1
        lo, hif = float(max(-hi - 1, -EXACT_F64)), float(min(hi, EXACT_F64))
        n = len(m)
        tab = np.stack([m.astype(np.float64) * np.ldexp(1.0, (-sh).astype(np.int32)), np.full(n, lo), np.full(n, hif)])
        return tab, bool(self._fb_rowsum[0] * self.one_code > hi)

    def _drive_t(self) -> np.ndarray:
        """First-layer weight codes ``W.T`` (K, n) as contiguous float32, cached (the drive GEMM)."""
        if getattr(self, "_drive_cache", None) is None:
            self._drive_cache = np.ascontiguousarray(self.w_codes[0].T, dtype=np.float32)
        return self._drive_cache

    def _relax_fused(self, pre, s, y, bm, bsh, n_steps, early_exit, record_trace, n_over, wrap, rmode, engine):
        """The sweeps of :meth:`relax` by :func:`fused2_kernel`; diagnostics as :func:`models.solvers.iterate`."""
        B = pre.shape[0]
        n0, n1 = self.sizes[1], self.sizes[2]
        if getattr(self, "_fused_ops", None) is None:
            f64 = lambda a: np.ascontiguousarray(a, dtype=np.float64)  # noqa: E731
            self._fused_ops = (f64(self.fb_codes[0].T), f64(self.fb_codes[0]), f64(self.w_codes[1].T),
                               f64(self.w_codes[1]), self._hidden_rq_table())
        fbt, fb, w2t, w2, (hq, sat) = self._fused_ops
        mf, sf = self.fwd_requant[1]
        h, o = np.empty((B, n0), np.int64), np.empty((B, n1), np.int64)
        changed = np.zeros((B, n_steps), dtype=np.bool_)
        ov_run, ov_last = np.zeros((B, 2), np.int64), np.zeros((B, 2), np.int64)
        n_run, resid, cyc = np.zeros(B, np.int64), np.zeros(B, np.int64), np.zeros(B, np.bool_)
        fused2_kernel(pre, fbt, fb, w2t, w2, self.bias_codes[1], mf, sf, hq, sat, s[0], s[1], y, bm, bsh, bm != 0,
                      self.one_code, self.spec.acc_bits, rmode, self.update == "sync" or len(self.groups) == 1,
                      n_steps, engine == "dense", bool(early_exit), h, o, changed, ov_run, ov_last, n_run, resid, cyc)
        n = int(n_run.max())
        ch = changed[:, :n]
        settled = ~ch
        steps = np.where(settled.any(axis=1), settled.argmax(axis=1) + 1, -1).astype(np.int64)
        extra = (n - n_run)[:, None] * ov_last  # a stopped sample repeats its last sweep: same overflows
        n_over += (ov_run + extra).sum(axis=0)
        last = ch[:, -1]
        info = IntRelaxInfo(steps, ~last, resid, cyc & last,
                            [float(v) for v in ch.sum(axis=0)] if record_trace else [], n)
        info.n_overflow = n_over
        return [h, o], info

    def free_phase(self, x_codes, n_steps: int, **kw) -> tuple[list[np.ndarray], FixedPointRelaxInfo]:
        """:meth:`relax` from zeros with ``beta = 0``."""
        return self.relax(x_codes, None, beta=0.0, n_steps=n_steps, **kw)

    def predict(self, x, n_steps: int, *, seed: int = 0, batch_size: int | None = None,
                progress: bool = False, **kw) -> np.ndarray:
        """Class predictions ``argmax`` of the output codes after a free phase (first index on ties).

        Args:
            x: float inputs (quantised with :meth:`quantize_input`) or integer codes.
            n_steps: free-phase sweeps.
            batch_size: optional chunking (deterministic rounding gives the same result either way;
                stochastic counters use the flat index within each chunk).
        """
        xa = np.asarray(x)
        codes = self.quantize_input(xa, seed=seed) if xa.dtype.kind == "f" else xa
        bs = len(codes) if batch_size is None else int(batch_size)
        if bs < 1 and len(codes):
            raise ValueError(f"batch_size={batch_size!r} is invalid; allowed: an int >= 1")
        out = []
        starts = range(0, len(codes), max(bs, 1))
        for a in progress_bar(starts, desc="fixed-point predict", enabled=progress):
            s, _ = self.relax(codes[a:a + bs], n_steps=n_steps, seed=seed, **kw)
            out.append(s[-1].argmax(axis=1))
        return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)



def _rowsum(w: np.ndarray) -> int:
    return int(np.abs(w).sum(axis=1).max(initial=0))


def check_spec(spec) -> HardwareSpec:
    """``spec`` if this simulator can run it (:meth:`quant.HardwareSpec.require`), else ``ValueError``
    (:class:`quant.UnsupportedError` naming the backend, the field and what it supports).

    >>> check_spec(quant.get_preset("fp32"))
    Traceback (most recent call last):
    ...
    quant.spec.UnsupportedError: backend 'numba fixed point' does not support spec 'fp32': it is not integer (weights.kind='float32', state=float, acc_bits=None); it supports: integer weights, a FixedPoint state and acc_bits (e.g. quant.get_preset('int8'))
    """
    return HardwareSpec.check(spec, BACKEND, integer=True, exact_one=True)

"""Integer (fixed-point) mirror of :class:`models.eqprop_mlp.EqPropMLP` under a :class:`quant.HardwareSpec`.

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
is the bias in forward-accumulator LSBs. Stochastic rounding draws
``quant.rng.uniform_u24(seed, step_offset + t, 4 * l + kind, b * n_l + j)`` with ``kind`` 0
(forward), 1 (feedback), 2 (nudge).

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
from models.eqprop_mlp import EqPropMLP
from quant import ops, rng
from quant.spec import HardwareSpec

log = logging.getLogger(__name__)

ROUNDING_CODES = {"nearest_even": 0, "floor": 1, "stochastic": 2}
KIND_FORWARD, KIND_FEEDBACK, KIND_NUDGE = 0, 1, 2
INPUT_TENSOR_ID = 1 << 20  # tensor id of the input quantisation (stochastic rounding only)
EXACT_F32 = 2**24  # every integer of magnitude <= 2**24 is a float32
EXACT_F64 = 2**53


def tensor_id(layer: int, kind: int) -> int:
    """Counter ``tensor_id`` of a rounding: ``4 * layer + kind`` (kind 0 forward, 1 feedback, 2 nudge).

    >>> tensor_id(1, KIND_NUDGE)
    6
    """
    return 4 * layer + kind


_hash_u32 = numba.njit(cache=True)(rng.hash_u32_scalar)


# ----------------------------------------------------------------------------------- kernels
@numba.njit(cache=True, inline="always")
def _requant_det(a, m, sh, rmode, seed, step, tid, idx):
    """``quant.ops.requantize(a, m, sh, rounding)`` for one int64, ``nearest_even`` (rmode 0) or
    ``floor`` (1): branch-free (vectorisable); ``sh <= 0`` is an exact left shift, as in quant.ops.
    The counters are unused (same signature as :func:`_requant_stoch`)."""
    lsh = max(-sh, 0)
    rsh = max(sh, 0)
    p = (a * m) << lsh
    q = p >> rsh
    r = p - (q << rsh)  # remainder in [0, 2**rsh)
    half = (np.int64(1) << rsh) >> 1
    up = (rmode == 0) & (rsh > 0) & ((r > half) | ((r == half) & ((q & 1) == 1)))
    return q + up


@numba.njit(cache=True, inline="always")
def _requant_stoch(a, m, sh, rmode, seed, step, tid, idx):
    """Stochastic ``quant.ops.requantize``: up with probability remainder / 2**sh, decided by
    ``uniform_u24(seed, step, tid, idx)`` exactly as :func:`quant.ops.shift_round`."""
    lsh = max(-sh, 0)
    rsh = max(sh, 0)
    p = (a * m) << lsh
    q = p >> rsh
    r = p - (q << rsh)
    if rsh == 0:
        return q
    u = _hash_u32(seed, step, tid, idx) >> 8  # uniform_u24
    if rsh <= 24:
        up = (u >> (24 - rsh)) < r
    else:
        up = u < (r >> (rsh - 24))
    return q + up


@numba.njit(cache=True, inline="always")
def _overflow_scalar(v, acc_bits, wrap):
    """``quant.ops.overflow(v, acc_bits, signed=True, mode)``; returns ``(value, overflowed)``."""
    hi = (np.int64(1) << (acc_bits - 1)) - 1
    lo = -hi - 1
    o = (v < lo) | (v > hi)
    if wrap:
        u = v & ((np.int64(1) << acc_bits) - 1)
        return u - ((u > hi) * (np.int64(1) << acc_bits)), o
    return min(max(v, lo), hi), o


def _make_update_kernel(requant, has_fb: bool, nudge: bool):
    """Layer-update kernel specialised on the requantiser and on two flags (closure constants, so the
    unused branches are compiled out and the inner loop vectorises)."""

    def update_layer_kernel(fwd, acc_b, mul_b, sh_b, s_old, y, beta_m, beta_sh, one_code, acc_bits, wrap, rmode,
                            seed, step, tid_base, s_new, changed, n_over):
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
            rmode: 0 nearest_even, 1 floor, 2 stochastic; seed, step, tid_base: rng counters (feedback
                uses ``tid_base + 1``, nudge ``tid_base + 2``; index ``b * n + j``).
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
                    p += requant(a, mul_b[j], sh_b[j], rmode, seed, step, tid_base + 1, idx)
                old = np.int64(s_old[b, j])
                if nudge:
                    t = one_code if y[b] == j else 0
                    p += requant(t - old, beta_m, beta_sh, rmode, seed, step, tid_base + 2, idx)
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


# ------------------------------------------------------------------------------- diagnostics
@dataclasses.dataclass
class FixedPointRelaxInfo:
    """Settling diagnostics of an integer relaxation (per-sample arrays of shape ``(B,)``).

    Attributes:
        steps: first sweep (1-based) after which no code of the sample changed; ``-1``: never.
        converged: no code of the sample changed in the last sweep run (an exact fixed point
            for deterministic rounding).
        cycling: the last sweep changed the sample, but its codes equal those two sweeps before
            (period-2 limit cycle).
        n_steps: sweeps run (``< n_steps`` asked only with ``early_exit`` once every sample settled).
        n_overflow: (L,) accumulator overflows per layer over the phase (drive counted once).
    """

    steps: np.ndarray
    converged: np.ndarray
    cycling: np.ndarray
    n_steps: int
    n_overflow: np.ndarray

    def summary(self) -> dict:
        """Scalar summary (fractions over the batch)."""
        return {"n_steps": int(self.n_steps), "frac_converged": float(np.mean(self.converged)),
                "frac_cycling": float(np.mean(self.cycling)), "n_overflow": int(self.n_overflow.sum())}


def _as_int_codes(a, name: str, shape: tuple, lo: int, hi: int, fix: str) -> np.ndarray:
    arr = np.asarray(a)
    if arr.dtype.kind not in "iu":
        raise ValueError(f"{name} has dtype {arr.dtype}; allowed: integer codes ({fix})")
    if arr.shape != shape:
        raise ValueError(f"{name} has shape {arr.shape}; expected {shape}")
    if arr.size and (arr.min() < lo or arr.max() > hi):
        raise ValueError(f"{name} has codes in [{arr.min()}, {arr.max()}]; allowed: [{lo}, {hi}] ({fix})")
    return arr.astype(np.int64)


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


# ------------------------------------------------------------------------------------- model
class FixedPointMLP:
    """Integer EqProp MLP: parameters as integer codes, dynamics in numba (see module docstring).

    Build it with :meth:`from_model` (or :meth:`from_checkpoint`); the constructor takes the integer
    parameters directly and validates them.

    Args:
        spec: an integer :class:`~quant.HardwareSpec` (``spec.is_integer``).
        w_codes: per layer ``(n_l, n_{l-1})`` int64 forward weight codes.
        bias_codes: per layer ``(n_l,)`` int64 bias in forward-accumulator LSBs.
        fwd_requant: per layer ``(multiplier (n_l,), shift (n_l,))`` int64.
        fb_codes: per layer ``l < L-1``: ``(n_l, n_{l+1})`` int64 feedback codes (of ``W_{l+1}^T``).
        fb_requant: per layer ``l < L-1``: ``(multiplier (n_l,), shift (n_l,))``.
        update: ``"async"`` (even layers then odd) or ``"sync"``.
        cost: ``"mse"`` (nudging supported) or ``"ce"`` (free phase only).
    """

    def __init__(self, spec: HardwareSpec, w_codes, bias_codes, fwd_requant, fb_codes, fb_requant,
                 update: str = "async", cost: str = "mse"):
        check_spec(spec)
        if update not in ("async", "sync"):
            raise ValueError(f"update={update!r} is invalid; allowed: 'async' or 'sync'")
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
        self.sizes = (self.w_codes[0].shape[1],) + tuple(w.shape[0] for w in self.w_codes)
        for i, w in enumerate(self.w_codes):
            if w.ndim != 2 or w.shape != (self.sizes[i + 1], self.sizes[i]):
                raise ValueError(f"w_codes[{i}] has shape {w.shape}; expected {(self.sizes[i + 1], self.sizes[i])}")
        self.fb_codes = [np.asarray(w, dtype=np.int64) for w in fb_codes]
        for i, w in enumerate(self.fb_codes):
            if w.shape != (self.sizes[i + 1], self.sizes[i + 2]):
                raise ValueError(f"fb_codes[{i}] has shape {w.shape}; expected {(self.sizes[i + 1], self.sizes[i + 2])}")
        for name, ws in (("w_codes", self.w_codes), ("fb_codes", self.fb_codes)):
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
        # exact-product bookkeeping: transposed codes per dtype, row bounds sum_i |W[j, i]|
        self._fwd_t = [self._by_dtype(w) for w in self.w_codes]
        self._fb_t = [self._by_dtype(w) for w in self.fb_codes]
        self._fwd_rowsum = [int(np.abs(w).sum(axis=1).max(initial=0)) for w in self.w_codes]
        self._fb_rowsum = [int(np.abs(w).sum(axis=1).max(initial=0)) for w in self.fb_codes]

    @staticmethod
    def _by_dtype(w: np.ndarray) -> dict:
        return {dt: (np.ascontiguousarray(w, dtype=dt), np.ascontiguousarray(w.T, dtype=dt))
                for dt in (np.float32, np.float64, np.int64)}

    # ------------------------------------------------------------------------ construction
    @classmethod
    def from_model(cls, net, spec: HardwareSpec, *, update: str | None = None) -> "FixedPointMLP":
        """Quantise a (trained) float :class:`~models.eqprop_mlp.EqPropMLP` under ``spec``.

        Weights: ``quantize_weights(W_l, spec)``; feedback: ``quantize_weights(W_{l+1}.T, spec)``;
        biases: ``round_half_even(b_j / (scale_j * 2**-frac_bits))`` saturated to the accumulator;
        requantisation: ``quant.requant_params``.

        Args:
            net: an ``EqPropMLP`` (any float dtype).
            spec: integer spec (``fp32`` and ``analog_pcm`` are rejected with a ``ValueError``).
            update: override ``net.config.update``.
        """
        check_spec(spec)
        if not isinstance(net, EqPropMLP):
            raise ValueError(f"net={type(net).__name__} is invalid; allowed: a models.eqprop_mlp.EqPropMLP "
                             "(other model families have no fixed-point mirror here)")
        ws = [lin.weight.detach().to("cpu").double().numpy() for lin in net.layers]
        bs = [lin.bias.detach().to("cpu").double().numpy() for lin in net.layers]
        for i, w in enumerate(ws):
            if w.shape != (net.config.sizes[i + 1], net.config.sizes[i]):
                raise ValueError(f"net.layers[{i}].weight has shape {w.shape}; config.sizes={net.config.sizes}")
        acc_hi = 2 ** (spec.acc_bits - 1) - 1
        w_codes, b_codes, fwd_rq, fb_codes, fb_rq = [], [], [], [], []
        for i, (w, b) in enumerate(zip(ws, bs)):
            q = quant.quantize_weights(w, spec)
            w_codes.append(q.codes)
            # bias in forward-accumulator LSBs: acc LSB = scale_row * 2**-frac_bits(input state)
            per_row_scale = np.broadcast_to(np.asarray(q.scale, dtype=np.float64).reshape(-1), (w.shape[0],))
            bq = np.rint(np.ldexp(b / per_row_scale, spec.state.frac_bits))
            b_codes.append(np.clip(bq, -acc_hi - 1, acc_hi).astype(np.int64))
            fwd_rq.append(_requant_arrays(q, spec, w.shape[0]))
            if i + 1 < len(ws):
                qf = quant.quantize_weights(np.ascontiguousarray(ws[i + 1].T), spec)
                fb_codes.append(qf.codes)
                fb_rq.append(_requant_arrays(qf, spec, w.shape[0]))
        return cls(spec, w_codes, b_codes, fwd_rq, fb_codes, fb_rq,
                   update=update or net.config.update, cost=net.config.cost)

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
              step_offset: int = 0, early_exit: bool = True,
              parallel: bool | None = None) -> tuple[list[np.ndarray], FixedPointRelaxInfo]:
        """Run ``n_steps`` sweeps of the integer dynamics from ``s0`` (zeros if None).

        Args:
            x_codes: (B, n_in) integer input codes (:meth:`quantize_input`).
            s0: optional list of (B, n_l) integer codes in ``[0, code(1.0)]``.
            beta: nudging strength (0: free phase); its sign is kept (symmetric nudging).
            y: (B,) int labels, needed when ``beta != 0``.
            n_steps: number of sweeps (async: even layers then odd; sync: all from the old state).
            seed, step_offset: stochastic-rounding counters (sweep ``t`` uses step ``step_offset + t``).
            early_exit: with deterministic rounding, stop once a sweep changed no code (the state is
                then an exact fixed point, so further sweeps are the identity).

        Returns:
            ``(states, info)``: list of (B, n_l) int64 codes and :class:`FixedPointRelaxInfo`.
        """
        x, s, y, bm, bsh = self.check_relax_args(x_codes, s0, beta, y, n_steps, seed, step_offset)
        B, L = x.shape[0], self.n_layers
        sp = self.spec
        rmode = ROUNDING_CODES[sp.rounding]
        wrap = sp.overflow == "wrap"
        # hidden-product dtype: the widest needed by any W @ c with c in [0, one_code]
        hid_bounds = [self._fwd_rowsum[i] * self.one_code for i in range(1, L)]
        hid_bounds += [r * self.one_code for r in self._fb_rowsum]
        sdt = exact_dtype(max(hid_bounds, default=0))
        ddt = exact_dtype(self._fwd_rowsum[0] * int(np.abs(x).max(initial=0)))
        log.debug("exact products: drive in %s, hidden products in %s", ddt.__name__, sdt.__name__)
        drive = exact_matmul(x, self._fwd_t[0], ddt)  # (B, n_0), computed once per phase
        det = rmode != 2

        def par(n: int) -> bool:
            return bool(parallel) if parallel is not None else B * n >= PARALLEL_MIN_ELEMENTS

        def fwd_term(i: int, acc, step: int):
            m, sh = self.fwd_requant[i]
            return get_requant_kernel(det, par(self.sizes[i + 1]))(
                acc, self.bias_codes[i], m, sh, sp.acc_bits, wrap, rmode, seed, step, tensor_id(i, 0))

        n_over = np.zeros(L, dtype=np.int64)
        ovbuf = np.zeros(1, dtype=np.int64)
        # the drive accumulator is formed once per phase: its overflows are counted once; with
        # deterministic rounding its requantised value is constant too
        pre, n_over[0] = fwd_term(0, drive, step_offset)
        s = [t.astype(sdt) for t in s]
        steps = np.full(B, -1, dtype=np.int64)
        changed = np.zeros(B, dtype=bool)
        hist = [s]  # the last three states, for period-2 detection
        dummy = np.zeros((1, 1), dtype=sdt)
        order = [list(range(0, L, 2)), list(range(1, L, 2))] if self.update == "async" else [list(range(L))]
        n_run = 0
        for t in range(n_steps):
            step = step_offset + t
            changed = np.zeros(B, dtype=bool)
            old = s
            cur = list(s)
            for group in order:
                src = cur if self.update == "async" else old
                new_vals = {}
                for i in group:
                    if i == 0:
                        fwd = pre if det else fwd_term(0, drive, step)[0]
                    else:
                        acc = exact_matmul(src[i - 1], self._fwd_t[i], sdt, par(self.sizes[i + 1]))
                        fwd, k = fwd_term(i, acc, step)
                        n_over[i] += k
                    has_fb = i + 1 < L
                    acc_b = exact_matmul(src[i + 1], self._fb_t[i], sdt, par(self.sizes[i + 1])) if has_fb else dummy
                    mb, sb = self.fb_requant[i] if has_fb else self.fwd_requant[i]
                    nudge = i == L - 1 and bm != 0
                    out = np.empty((B, self.sizes[i + 1]), dtype=sdt)
                    ovbuf[0] = 0
                    get_update_kernel(det, has_fb, nudge, par(self.sizes[i + 1]))(
                        fwd, acc_b, mb, sb, src[i], y, bm, bsh, self.one_code, sp.acc_bits, wrap, rmode, seed,
                        step, tensor_id(i, 0), out, changed, ovbuf)
                    n_over[i] += ovbuf[0]
                    new_vals[i] = out
                for i, v in new_vals.items():
                    cur[i] = v
            s = cur
            n_run = t + 1
            steps[(steps < 0) & ~changed] = n_run
            hist = (hist + [s])[-3:]
            if early_exit and det and not changed.any():
                break
        cycling = np.zeros(B, dtype=bool)
        if len(hist) == 3:
            same2 = np.ones(B, dtype=bool)
            for a, c in zip(hist[2], hist[0]):
                same2 &= (a == c).all(axis=1)
            cycling = changed & same2
        info = FixedPointRelaxInfo(steps, ~changed, cycling, n_run, n_over)
        return [t.astype(np.int64) for t in s], info

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
        if progress:
            from tqdm import tqdm

            starts = tqdm(starts, desc="fixed-point predict")
        for a in starts:
            s, _ = self.relax(codes[a:a + bs], n_steps=n_steps, seed=seed, **kw)
            out.append(s[-1].argmax(axis=1))
        return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)


def _representable(spec: HardwareSpec) -> bool:
    try:
        spec.state.code_of(1.0)
    except ValueError:
        return False
    return True


def check_spec(spec) -> None:
    """``ValueError`` unless ``spec`` is an integer spec this simulator can run.

    >>> check_spec(quant.get_preset("fp32"))
    Traceback (most recent call last):
    ...
    ValueError: spec 'fp32' is not integer (weights.kind='float32', state=float, acc_bits=None); allowed: integer weights, a FixedPoint state and acc_bits (e.g. quant.get_preset('int8')); float specs run on models.EqPropMLP
    """
    if not isinstance(spec, HardwareSpec):
        raise ValueError(f"spec={spec!r} is invalid; allowed: a quant.HardwareSpec")
    if not spec.is_integer:
        st = "float" if spec.state is None else "fixed"
        raise ValueError(f"spec {spec.name!r} is not integer (weights.kind={spec.weights.kind!r}, state={st}, "
                         f"acc_bits={spec.acc_bits}); allowed: integer weights, a FixedPoint state and acc_bits "
                         "(e.g. quant.get_preset('int8')); float specs run on models.EqPropMLP")
    if spec.analog is not None:
        raise ValueError(f"spec {spec.name!r} has analog non-idealities; allowed: analog=None "
                         "(analog crossbars are simulated elsewhere in hwsim)")
    if not _representable(spec):
        raise ValueError(f"spec.state={spec.state} cannot represent 1.0 exactly; allowed: e.g. unsigned "
                         "FixedPoint(bits, bits - 1) so the hard sigmoid is the integer clamp [0, code(1.0)]")

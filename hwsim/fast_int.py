"""Exact int8 x int8 -> int32 products (``torch._int_mm``) for the integer simulator's dense layers.

This is the "physical anchor" of issue 14: an integer GEMM in place of the float BLAS products that
:func:`hwsim.fixed_point.exact_matmul` uses. It does not change :mod:`hwsim.fixed_point`; it offers
the product ``a @ W.T`` of integer codes, exactly, and :func:`drive_accumulator` the forward
accumulator of the first layer of a :class:`~hwsim.fixed_point.FixedPointMLP` (the ``drive`` of
``relax``), checked bit for bit against the simulator in ``tests/hwsim/test_fast_int.py``.

``torch._int_mm`` takes signed int8 operands; state codes of an unsigned 8-bit format lie in
``[0, 255]``. They are shifted by an offset ``o`` into ``[-128, 127]`` and the shift is undone
exactly in integers::

    a @ W.T = (a - o) @ W.T + o * rowsum(W)        (rowsum(W)[j] = sum_i W[j, i])

The int32 result is exact when every partial sum fits in int32 (checked from the row bounds; a
:class:`ValueError` says what to do otherwise).

Speed: on CPUs without AVX-512 VNNI (e.g. the AMD EPYC of the team machine, whose
``/proc/cpuinfo`` lists no ``avx512_vnni``) ``torch._int_mm`` is far *slower* than float32 BLAS;
``benchmarks/bench_hwsim.py`` measures both side by side and prints the ratio.

>>> import numpy as np
>>> w = np.array([[1, -2, 3], [-127, 127, 0]])
>>> a = np.array([[0, 255, 7]] * 17)
>>> op = Int8Operand(w)
>>> bool((int_mm_exact(a, op, 0, 255) == a @ w.T).all())
True
"""
from __future__ import annotations

import numpy as np
import torch

INT8_MIN, INT8_MAX = -128, 127
INT32_MAX = 2**31 - 1
MIN_ROWS = 17  # torch._int_mm needs more than 16 rows; smaller batches are padded with zeros


class Int8Operand:
    """Weight codes ``W`` (n, K) in int8 for :func:`int_mm_exact`: ``W.T`` as a (K, n) view of a
    contiguous (n, K) int8 tensor (the faster layout for ``torch._int_mm`` on CPU), and the row sums."""

    def __init__(self, w_codes):
        w = np.asarray(w_codes)
        if w.ndim != 2 or w.dtype.kind not in "iu":
            raise ValueError(f"w_codes must be a 2-D integer array (n, K); got shape {w.shape}, dtype {w.dtype}")
        if w.size and (w.min() < INT8_MIN or w.max() > INT8_MAX):
            raise ValueError(f"w_codes lie in [{w.min()}, {w.max()}], outside int8 [-128, 127]; "
                             "the int8 GEMM needs an 8-bit weight format (e.g. quant.get_preset('int8'))")
        self.shape = w.shape
        self.wt = torch.from_numpy(np.ascontiguousarray(w, dtype=np.int8)).t()  # (K, n) view
        self.rowsum = torch.from_numpy(w.astype(np.int64).sum(axis=1))
        self.rowabs = int(np.abs(w.astype(np.int64)).sum(axis=1).max(initial=0))


def int_mm_exact(a, op: Int8Operand, lo: int, hi: int, *, offset: int | None = None) -> np.ndarray:
    """Exact ``a @ W.T`` (int64 numpy, (B, n)) for integer codes ``a`` in ``[lo, hi]`` via ``torch._int_mm``.

    Args:
        a: (B, K) integer codes within ``[lo, hi]`` (``hi - lo <= 255``).
        op: the weights (:class:`Int8Operand`).
        lo, hi: the code range of ``a`` (e.g. ``spec.state.qmin, spec.state.qmax``).
        offset: the shift ``o`` (default ``lo + 128``, clipped so ``a - o`` fits int8).

    Raises:
        ValueError: codes outside ``[lo, hi]``, a range wider than 256 codes, a shape mismatch, or
            a bound that int32 cannot hold.
    """
    a = np.asarray(a)
    if a.ndim != 2 or a.shape[1] != op.shape[1] or a.dtype.kind not in "iu":
        raise ValueError(f"a must be integer codes of shape (B, {op.shape[1]}); got {a.shape}, dtype {a.dtype}")
    if hi - lo > INT8_MAX - INT8_MIN:
        raise ValueError(f"code range [{lo}, {hi}] spans more than 256 codes: it does not fit int8 after an offset")
    if a.size and (a.min() < lo or a.max() > hi):
        raise ValueError(f"codes lie in [{a.min()}, {a.max()}], outside the stated range [{lo}, {hi}]")
    o = lo - INT8_MIN if offset is None else int(offset)
    if lo - o < INT8_MIN or hi - o > INT8_MAX:
        raise ValueError(f"offset {o} maps [{lo}, {hi}] outside int8; use the default offset")
    bound = op.rowabs * max(abs(lo - o), abs(hi - o))
    if bound > INT32_MAX or op.rowabs * max(abs(lo), abs(hi)) > INT32_MAX:
        raise ValueError(f"partial sums up to {bound} overflow int32; use hwsim.fixed_point.exact_matmul")
    B = a.shape[0]
    at = torch.from_numpy((a.astype(np.int64) - o).astype(np.int8))
    if B < MIN_ROWS:
        at = torch.cat([at, torch.zeros(MIN_ROWS - B, at.shape[1], dtype=torch.int8)])
    prod = torch._int_mm(at, op.wt)[:B].to(torch.int64)
    return (prod + o * op.rowsum).numpy()


def drive_accumulator(fp, x_codes, op: Int8Operand | None = None) -> np.ndarray:
    """First-layer forward products ``x_codes @ Wq_0.T`` of a dense :class:`~hwsim.fixed_point.FixedPointMLP`
    (the ``drive`` its ``relax`` forms once per phase, before bias and requantisation), by the int8 GEMM."""
    if fp.conv[0] is not None:
        raise ValueError("drive_accumulator supports a dense first layer only (fp.conv[0] is a ConvPool)")
    st = fp.spec.state
    return int_mm_exact(x_codes, op if op is not None else Int8Operand(fp.w_codes[0]), st.qmin, st.qmax)

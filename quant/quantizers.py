"""Quantizers that read only the spec: numpy and torch, bit-exact with each other.

Weights (real -> code)::

    scale = weight_scale(w, fmt)                       # float64, shape () or (out, 1, ...)
    code  = clamp(round_half_even(w / scale), qmin, qmax)   # int64
    w_hat = code * scale

``w / scale`` is one IEEE float64 division and ``round_half_even`` is exact, so numpy and
torch give identical codes. Scales are computed by one numpy function (:func:`weight_scale`),
which the torch path also calls (on a detached CPU copy): no layer re-derives a scale.
``per_channel`` for ``W`` of shape ``(out, in)`` means one scale per output row (reduce over
all axes but 0); 1-D tensors (biases) always get one per-tensor scale.

Ternary (TWN, Li & Liu 2016): ``Delta = t * mean|w|``, ``code = sign(w) * (|w| > Delta)``.

States (real -> fixed point ``code * 2**-frac_bits``)::

    code = clamp(round_mode(x * 2**frac_bits), qmin, qmax)

with ``round_mode`` the spec's rounding; stochastic rounding takes its uniforms from
:func:`quant.rng.uniform_u24` at counters ``(seed, step, tensor_id, offset + flat_index)``.
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch

from . import ops, rng
from .formats import FixedPoint, UpdateSpec, WeightFormat
from .spec import HardwareSpec

_TINY = float(np.finfo(np.float64).tiny)  # smallest normal float64; scales never go below it
MSE_RATIOS = np.linspace(0.3, 1.0, 71)  # clipping ratios (of max|w|) searched by scale_rule="mse"


def _weight_format(spec_or_fmt) -> WeightFormat:
    if isinstance(spec_or_fmt, HardwareSpec):
        return spec_or_fmt.weights
    if isinstance(spec_or_fmt, WeightFormat):
        return spec_or_fmt
    raise ValueError(f"spec={spec_or_fmt!r} is invalid; allowed: a HardwareSpec or WeightFormat")


def _state_format(spec_or_fmt) -> FixedPoint:
    fmt = spec_or_fmt.state if isinstance(spec_or_fmt, HardwareSpec) else spec_or_fmt
    if not isinstance(fmt, FixedPoint):
        raise ValueError(f"state format={fmt!r} is invalid; allowed: a FixedPoint (spec.state is None means float states)")
    return fmt


def _reduce_axes(w: np.ndarray, fmt: WeightFormat):
    if fmt.granularity == "per_channel" and w.ndim >= 2:
        return tuple(range(1, w.ndim)), True
    return None, False


def _to_numpy64(w) -> np.ndarray:
    if isinstance(w, torch.Tensor):
        return w.detach().to("cpu", torch.float64).numpy()
    return np.asarray(w, dtype=np.float64)


def _ternary_params(w: np.ndarray, fmt: WeightFormat) -> tuple[np.ndarray, np.ndarray]:
    axes, keep = _reduce_axes(w, fmt)
    a = np.abs(w)
    delta = fmt.ternary_threshold * a.mean(axis=axes, keepdims=keep)
    mask = a > delta
    n = mask.sum(axis=axes, keepdims=keep)
    alpha = np.where(n > 0, (a * mask).sum(axis=axes, keepdims=keep) / np.maximum(n, 1), 1.0)
    if fmt.scale_rule == "max_abs":
        m = a.max(axis=axes, keepdims=keep)
        alpha = np.where(m > 0, m, 1.0)
    elif fmt.scale_rule == "power_of_two":
        alpha = np.exp2(np.round(np.log2(alpha)))
    return np.asarray(delta, dtype=np.float64), np.asarray(alpha, dtype=np.float64)


def weight_scale(w, spec) -> np.ndarray:
    """Per-tensor or per-channel weight scale (float64) following ``fmt.scale_rule``.

    * ``max_abs``: ``max|w| / qmax``;
    * ``power_of_two``: ``2**ceil(log2(max|w| / qmax))`` (exact via ``frexp``), so no code clips;
    * ``mse``: ``r * max|w| / qmax`` with ``r`` in :data:`MSE_RATIOS` minimising
      ``sum((w_hat - w)**2)`` per channel (errors measured in units of ``max|w|``; on exact
      ties the largest ``r``). Not idempotent in general (a finite grid);
    * ternary: see module docstring.

    An all-zero tensor/channel gets scale 1.0 (its codes are 0 whatever the scale); so does one
    whose ``max|w| / qmax`` would be below the smallest normal float64 (its codes become 0).

    Args:
        w: numpy array or torch tensor, shape ``(out, ...)``.
        spec: :class:`HardwareSpec` or :class:`WeightFormat` (not ``float32``).

    Returns:
        float64 array of shape ``()`` (per tensor) or ``(out, 1, ..., 1)`` (per channel).

    >>> weight_scale(np.array([[0.5, -1.0], [0.25, 0.1]]), WeightFormat("int8")).ravel().tolist() == [1/127, 0.25/127]
    True
    >>> weight_scale(np.array([0.3, -1.0]), WeightFormat("int8", scale_rule="power_of_two")).tolist()   # 1/127 > 2**-7
    0.015625
    """
    fmt = _weight_format(spec)
    if fmt.is_float:
        raise ValueError("weights.kind='float32' has no scale; allowed: an integer or ternary kind")
    w = _to_numpy64(w)
    if fmt.kind == "ternary":
        return _ternary_params(w, fmt)[1]
    axes, keep = _reduce_axes(w, fmt)
    qmax = fmt.qmax
    m = np.abs(w).max(axis=axes, keepdims=keep) if w.size else np.zeros(())
    m = np.where(m >= qmax * _TINY, m, 0.0)  # scale would be subnormal: treat as an all-zero channel
    if fmt.scale_rule == "max_abs":
        scale = m / qmax
    elif fmt.scale_rule == "power_of_two":
        mant, exp = np.frexp(m / qmax)  # s = mant * 2**exp, mant in [0.5, 1)
        scale = np.ldexp(1.0, np.where(mant == 0.5, exp - 1, exp))
    else:
        # search in units of max|w| (scale invariant, no underflow of squared errors);
        # ratios from 1.0 down, so exact ties keep the least clipping
        m_safe = np.where(m > 0, m, 1.0)
        wn = w / m_safe
        best_err, best_r = None, None
        for r in MSE_RATIOS[::-1]:
            sn = r / qmax
            err = ((np.clip(np.rint(wn / sn), fmt.qmin, qmax) * sn - wn) ** 2).sum(axis=axes, keepdims=keep)
            if best_err is None:
                best_err, best_r = err, np.full_like(err, r)
            else:
                better = err < best_err
                best_err, best_r = np.where(better, err, best_err), np.where(better, r, best_r)
        scale = best_r * m / qmax
    return np.where(m > 0, scale, 1.0).astype(np.float64)


@dataclasses.dataclass(frozen=True, eq=False)
class QuantizedTensor:
    """Integer weight codes with their scale: ``w_hat = codes * scale``.

    Attributes:
        codes: int64 array/tensor, same shape as the weight.
        scale: float64, shape ``()`` or ``(out, 1, ...)``; same library as ``codes``.
        fmt: the :class:`WeightFormat` that produced it.
    """

    codes: np.ndarray | torch.Tensor
    scale: np.ndarray | torch.Tensor
    fmt: WeightFormat

    def dequantize(self):
        """float64 ``codes * scale``."""
        if isinstance(self.codes, torch.Tensor):
            return self.codes.to(torch.float64) * self.scale
        return self.codes.astype(np.float64) * self.scale

    @property
    def scale_log2(self) -> np.ndarray:
        """``log2(scale)`` as int64 when every scale is a power of two (else ``ValueError``):
        the integer simulator multiplies by ``2**scale_log2`` with shifts.

        >>> quantize_weights(np.array([0.3, -1.0]), WeightFormat("int8", scale_rule="power_of_two")).scale_log2.tolist()
        -6
        """
        s = _to_numpy64(self.scale)
        mant, exp = np.frexp(s)
        if not np.all(mant == 0.5):
            raise ValueError(f"scale_rule={self.fmt.scale_rule!r} gives non power-of-two scales; allowed: 'power_of_two'")
        return (exp - 1).astype(np.int64)


def quantize_weights(w, spec) -> QuantizedTensor:
    """Quantize weights to integer codes and a scale (numpy or torch in, same kind out).

    Args:
        w: numpy array or torch tensor (any float dtype), shape ``(out, ...)``.
        spec: :class:`HardwareSpec` or :class:`WeightFormat` (not ``float32``).

    Returns:
        :class:`QuantizedTensor`; torch codes/scale live on ``w``'s device.

    >>> q = quantize_weights(np.array([[0.5, -1.0, 0.0]]), WeightFormat("int8"))
    >>> q.codes.tolist(), q.scale.ravel().tolist() == [1 / 127]
    ([[64, -127, 0]], True)
    >>> quantize_weights(np.array([[0.9, -0.05, -0.8, 0.1]]), WeightFormat("ternary")).codes.tolist()
    [[1, 0, -1, 0]]
    """
    fmt = _weight_format(spec)
    if fmt.is_float:
        raise ValueError("weights.kind='float32' has no integer codes; allowed: an integer or ternary kind")
    w64 = _to_numpy64(w)
    if not np.all(np.isfinite(w64)):
        raise ValueError("w has non-finite values (nan/inf); allowed: finite weights")
    if fmt.kind == "ternary":
        delta, scale = _ternary_params(w64, fmt)
    else:
        scale = weight_scale(w64, fmt)
    if isinstance(w, torch.Tensor):
        wt = w.detach().to(torch.float64)
        scale_t = torch.as_tensor(scale, dtype=torch.float64, device=w.device)
        if fmt.kind == "ternary":
            delta_t = torch.as_tensor(delta, dtype=torch.float64, device=w.device)
            codes = torch.sign(wt) * (wt.abs() > delta_t)
        else:
            codes = torch.clamp(torch.round(wt / scale_t), fmt.qmin, fmt.qmax)
        return QuantizedTensor(codes.to(torch.int64), scale_t, fmt)
    if fmt.kind == "ternary":
        codes = np.sign(w64) * (np.abs(w64) > delta)
    else:
        codes = np.clip(np.rint(w64 / scale), fmt.qmin, fmt.qmax)
    return QuantizedTensor(codes.astype(np.int64), scale, fmt)


class _StraightThrough(torch.autograd.Function):
    """Forward returns ``x_hat``; backward passes ``grad`` where ``lo <= x <= hi`` (clipped STE,
    Bengio et al. 2013; ``lo=-inf, hi=inf`` gives the plain STE)."""

    @staticmethod
    def forward(ctx, x, x_hat, lo: float, hi: float):
        ctx.save_for_backward((x >= lo) & (x <= hi))
        return x_hat

    @staticmethod
    def backward(ctx, grad):
        (mask,) = ctx.saved_tensors
        return grad * mask, None, None, None


def fake_quant_weights(w: torch.Tensor, spec) -> torch.Tensor:
    """Torch fake quantisation ``codes * scale`` in ``w.dtype`` with a straight-through gradient.

    ``float32`` weights pass through unchanged. Scales come from :func:`weight_scale` (numpy,
    on a detached CPU copy: one device sync per call).

    >>> w = torch.tensor([[0.5, -1.0]], requires_grad=True)
    >>> y = fake_quant_weights(w, WeightFormat("int4")); y.sum().backward(); w.grad.tolist()
    [[1.0, 1.0]]
    """
    fmt = _weight_format(spec)
    if fmt.is_float:
        return w
    w_hat = quantize_weights(w, fmt).dequantize().to(w.dtype)
    return _StraightThrough.apply(w, w_hat, -math.inf, math.inf)


def _u24_for(shape, seed, step, tensor_id, offset, device=None):
    if seed is None or step is None or tensor_id is None:
        raise ValueError(
            f"seed={seed!r}, step={step!r}, tensor_id={tensor_id!r}; allowed: three ints for rounding='stochastic'"
        )
    idx = rng.element_index(tuple(shape), offset)
    if device is not None:
        return rng.uniform_u24(seed, step, tensor_id, torch.as_tensor(idx, device=device))
    return rng.uniform_u24(seed, step, tensor_id, idx)


def quantize_state(x, spec, rounding: str | None = None, *, seed=None, step=None, tensor_id=None, offset: int = 0):
    """Real states -> saturated int64 fixed-point codes (numpy or torch, bit-exact alike).

    ``code = clamp(round_mode(x * 2**frac_bits), qmin, qmax)``, computed in float64.

    Args:
        x: numpy array or torch tensor of real values.
        spec: :class:`HardwareSpec` (uses ``spec.state`` and ``spec.rounding``) or
            :class:`FixedPoint` (then ``rounding`` defaults to ``nearest_even``).
        rounding: overrides the spec's rounding mode.
        seed, step, tensor_id, offset: counters for ``stochastic`` (element ``i`` of the
            flattened ``x`` uses index ``offset + i``); ignored otherwise.

    >>> quantize_state(np.array([0.3, 1.0, 1.5, -0.2]), FixedPoint(8, 7)).tolist()
    [38, 128, 192, 0]
    >>> quantize_state(torch.tensor([0.3]), FixedPoint(8, 7), "floor").tolist()
    [38]
    """
    fmt = _state_format(spec)
    if rounding is None:
        rounding = spec.rounding if isinstance(spec, HardwareSpec) else "nearest_even"
    if rounding not in ops.ROUNDING_MODES:
        raise ValueError(f"rounding={rounding!r} is invalid; allowed: {ops.ROUNDING_MODES}")
    if not isinstance(x, torch.Tensor):
        u24 = _u24_for(np.shape(x), seed, step, tensor_id, offset) if rounding == "stochastic" else None
        return fmt.to_code(x, rounding, u24)
    t = x.detach().to(torch.float64) * math.ldexp(1.0, fmt.frac_bits)  # exact: power of two
    if rounding == "nearest_even":
        r = torch.round(t)
    elif rounding == "floor":
        r = torch.floor(t)
    else:
        u24 = _u24_for(tuple(x.shape), seed, step, tensor_id, offset, device=x.device)
        fl = torch.floor(t)
        r = fl + (u24.to(torch.float64) < (t - fl) * float(2**ops.U24_BITS))
    return torch.clamp(r, fmt.qmin, fmt.qmax).to(torch.int64)


def dequantize_state(codes, spec):
    """Codes -> float64 values ``code * 2**-frac_bits`` (numpy or torch; exact).

    >>> dequantize_state(np.array([128, 64]), FixedPoint(8, 7)).tolist()
    [1.0, 0.5]
    """
    fmt = _state_format(spec)
    if isinstance(codes, torch.Tensor):
        return codes.to(torch.float64) * fmt.lsb
    return fmt.from_code(codes)


def fake_quant_state(x: torch.Tensor, spec, rounding: str | None = None, *, seed=None, step=None,
                     tensor_id=None, offset: int = 0) -> torch.Tensor:
    """Torch fake quantisation of states in ``x.dtype`` with a clipped straight-through gradient
    (zero outside ``[min_value, max_value]``). ``spec.state is None`` passes ``x`` through.

    >>> x = torch.tensor([0.3, 2.5], requires_grad=True)
    >>> y = fake_quant_state(x, FixedPoint(8, 7)); y.sum().backward()
    >>> y.tolist(), x.grad.tolist()
    ([0.296875, 1.9921875], [1.0, 0.0])
    """
    if isinstance(spec, HardwareSpec) and spec.state is None:
        return x
    fmt = _state_format(spec)
    codes = quantize_state(x, spec, rounding, seed=seed, step=step, tensor_id=tensor_id, offset=offset)
    x_hat = dequantize_state(codes, fmt).to(x.dtype)
    return _StraightThrough.apply(x, x_hat, fmt.min_value, fmt.max_value)


def hidden_to_code(hidden, spec):
    """Weight codes from hidden-weight integers (numpy or torch int64).

    ``code = clamp(round_half_even(H / 2**(hidden_bits - weight_bits)), qmin, qmax)``.

    >>> spec = HardwareSpec(weights=WeightFormat("int4"), update=UpdateSpec(hidden_bits=8))
    >>> hidden_to_code(np.array([127, 8, 24, -128]), spec).tolist()   # /16: 7.9 .5 1.5 -8
    [7, 0, 2, -7]
    """
    if not isinstance(spec, HardwareSpec) or spec.update is None or spec.weights.is_float:
        raise ValueError("spec is invalid; allowed: a HardwareSpec with integer weights and an update")
    shift = spec.update.hidden_bits - spec.weights.bits
    q = ops.shift_round(hidden, shift, "nearest_even")
    lo, hi = spec.weights.qmin, spec.weights.qmax
    return torch.clamp(q, lo, hi) if isinstance(q, torch.Tensor) else np.clip(q, lo, hi)


def apply_update(hidden, product, spec, *, seed=None, step=None, tensor_id=None, offset: int = 0):
    """One on-chip weight update of the hidden weights (numpy or torch int64, exact).

    ``H <- saturate(H + round(P * lr_multiplier / 2**lr_shift), hidden_bits)`` with stochastic
    rounding (counters as in :func:`quantize_state`) when ``spec.update.stochastic``, else
    nearest-even. See :class:`~quant.formats.UpdateSpec`.

    >>> spec = HardwareSpec(update=UpdateSpec(hidden_bits=8, lr_shift=2, stochastic=False))
    >>> apply_update(np.array([0, 120, -120]), np.array([6, 100, -100]), spec).tolist()
    [2, 127, -128]
    """
    if not isinstance(spec, HardwareSpec) or spec.update is None:
        raise ValueError("spec.update is None; allowed: a HardwareSpec with an UpdateSpec")
    up: UpdateSpec = spec.update
    is_t = isinstance(product, torch.Tensor)
    u24, rounding = None, "nearest_even"
    if up.stochastic:
        rounding = "stochastic"
        u24 = _u24_for(tuple(product.shape) if is_t else np.shape(product), seed, step, tensor_id, offset,
                       device=product.device if is_t else None)
    delta = ops.requantize(product, up.lr_multiplier, up.lr_shift, rounding, u24)
    lo, hi = ops.min_int(True, False, up.hidden_bits), ops.max_int(True, False, up.hidden_bits)
    h = hidden + delta
    return torch.clamp(h, lo, hi) if is_t else np.clip(h, lo, hi)


def scale_to_shift(scale: float) -> int:
    """``k`` with ``scale == 2**k`` exactly (``ValueError`` otherwise).

    >>> scale_to_shift(0.0078125)
    -7
    """
    mant, exp = math.frexp(float(scale))
    if mant != 0.5:
        raise ValueError(f"scale={scale!r} is not a power of two; allowed: 2**k")
    return exp - 1


def requant_params(q: QuantizedTensor, spec, multiplier_bits: int = 31) -> list[tuple[int, int]]:
    """Integer ``(multiplier, shift)`` per output channel for ``acc -> next state code``.

    With weights ``w = code_w * scale`` and input states ``s = code_s * 2**-f_in``, the
    pre-activation in output-state LSBs (``2**-f_out``) is
    ``acc * scale * 2**(f_out - f_in)`` with ``acc = code_w @ code_s``. This returns, per row
    (one entry for a per-tensor scale), the pair of :func:`quant.ops.quantize_multiplier` for
    that real factor, or ``(1, shift)`` exactly when it is a power of two. Apply with
    :func:`quant.ops.requantize` (numpy or torch int64); this is the one place the factor is
    derived, so the torch and numba paths agree bit for bit when both use it.

    Args:
        q: quantised weights (:func:`quantize_weights`).
        spec: :class:`HardwareSpec` (input and output are ``spec.state``) or a
            ``(FixedPoint_in, FixedPoint_out)`` tuple.
        multiplier_bits: width of non power-of-two multipliers.

    >>> w = quantize_weights(np.array([[1.0, -0.5]]), WeightFormat("int8", scale_rule="power_of_two"))
    >>> requant_params(w, HardwareSpec())   # scale 2**-6 (1/127 rounded up): a pure shift
    [(1, 6)]
    >>> m, s = requant_params(quantize_weights(np.array([[1.0]]), WeightFormat('int8')), HardwareSpec())[0]
    >>> (m, s) == ops.quantize_multiplier(1 / 127)
    True
    """
    if isinstance(spec, HardwareSpec):
        f_in = f_out = _state_format(spec)
    else:
        f_in, f_out = spec
    scales = np.atleast_1d(_to_numpy64(q.scale)).reshape(-1)
    out = []
    for sc in scales.tolist():
        real = math.ldexp(sc, f_out.frac_bits - f_in.frac_bits)
        mant, exp = math.frexp(real)
        if mant == 0.5:
            out.append((1, 1 - exp))
        else:
            out.append(ops.quantize_multiplier(real, multiplier_bits))
    return out


def bias_lsb(weight_scale, spec) -> np.ndarray:
    """Float value of one forward-accumulator LSB per output row: ``scale_row * 2**-frac_bits``.

    A bias adds to the accumulator ``Wq @ c`` of its row, whose LSB is the row's weight scale times
    the input state LSB; the bias lives on that grid (see :func:`bias_codes`). The fake-quant path
    (``models/qat.py``) builds its straight-through ``b_hat = round_half_even(b / lsb) * lsb`` from it.

    Args:
        weight_scale: the ``scale`` of :func:`quantize_weights` of the row's weight (shape ``()`` or
            ``(out, 1)``; numpy or torch).
        spec: a :class:`HardwareSpec` with a fixed-point state.

    Returns:
        float64 array of shape ``(out,)`` (``(1,)`` for a per-tensor scale: it broadcasts).

    >>> bias_lsb(np.array([[0.5], [0.25]]), HardwareSpec()).tolist()   # state LSB 2**-7
    [0.00390625, 0.001953125]
    """
    st = _state_format(spec)
    return np.ldexp(np.atleast_1d(_to_numpy64(weight_scale)).reshape(-1), -st.frac_bits)


def bias_codes(bias, weight_scale, spec) -> np.ndarray:
    """Integer bias codes in forward-accumulator LSBs, the one rule every integer path uses::

        bq[j] = saturate_acc_bits(round_half_even(b[j] / scale_row[j] * 2**frac_bits))

    Decision (issue 10): biases **are** quantised, to the forward-accumulator grid, because that is
    what the chip adds (the bias is one more term of ``Wq @ c``, saturated to ``acc_bits``). The one
    fake-quant reference (``models/qat.py``) rounds the float bias to the same grid with
    :func:`bias_lsb`, so the fake-quant forward and the integer simulators see the same bias.

    Args:
        bias: ``(out,)`` float bias (numpy or torch; computed in float64).
        weight_scale: the row's weight scale (:func:`bias_lsb`).
        spec: an integer :class:`HardwareSpec` (needs ``state`` and ``acc_bits``).

    Returns:
        ``(out,)`` int64 numpy codes.

    >>> bias_codes(np.array([0.1, -1e9]), np.array([[0.5], [0.25]]), HardwareSpec(acc_bits=16)).tolist()
    [26, -32768]
    """
    if not isinstance(spec, HardwareSpec) or spec.state is None or spec.acc_bits is None:
        raise ValueError(f"spec={getattr(spec, 'name', spec)!r} is invalid for bias codes; allowed: a HardwareSpec "
                         "with a fixed-point state and acc_bits (an integer accumulator)")
    b = _to_numpy64(bias).reshape(-1)
    scale = np.broadcast_to(np.atleast_1d(_to_numpy64(weight_scale)).reshape(-1), b.shape)
    acc_hi = 2 ** (spec.acc_bits - 1) - 1
    bq = np.rint(np.ldexp(b / scale, spec.state.frac_bits))
    return np.clip(bq, -acc_hi - 1, acc_hi).astype(np.int64)

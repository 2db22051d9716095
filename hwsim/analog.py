"""Analog crossbar simulator of an energy model (:class:`~models.energy.EnergyModel`; torch and numba paths).

The network's interaction terms are mapped to crossbar arrays through :data:`ANALOG_KERNELS`, a
table keyed by term type: every :class:`~models.energy.Dense` term ``s_post . (W s_pre)`` is one
array (read forward for ``W s_pre`` and transposed for the feedback ``W^T s_post``), and a
:class:`~models.energy.Bias` of node ``i`` is a column of the first array driving node ``i``
(a bias-only array when there is none). The EqPropMLP's arrays are its layers, in order; the
skip model's input-to-output weight is one more array. A :class:`~models.conv.ConvPool` term
(``ConvEqProp``) is one im2col array ``[W.reshape(C_out, C_in k k) | b]`` read once per conv
position (forward, routing and transpose reads; :class:`ConvPoolAnalog`). A term without a kernel raises
:class:`models.engine.UnsupportedError`. The update order is ``net.schedule()`` and the EqProp
phase sequence is :func:`models.engine.run_phases`; this module holds only the device arithmetic.

Device model (data in :class:`quant.AnalogSpec`, simulation options in :class:`AnalogSimConfig`).
Conductances are kept in units of ``g_max`` (``g = G / g_max``, ``g_lo = g_min / g_max``):

* **Mapping.** Array ``k`` holds the augmented matrix ``A_k = [W_k | b_k]`` of shape
  ``(n_post, n_pre + 1)`` (the bias is a column driven by a constant input 1; ``A_k = W_k`` for an
  array without a bias). Weights are first
  quantised with the weight format (``int8``/``int4``/``ternary`` via
  :func:`quant.quantize_weights`; biases stay float), then mapped per layer to differential pairs
  ``g+ = g_lo + (1 - g_lo) max(A, 0) / w_max``, ``g- = g_lo + (1 - g_lo) max(-A, 0) / w_max``
  with ``w_max = max |A_k|``. The normalised weight is ``omega = (g+ - g-) / (1 - g_lo)`` in
  ``[-1, 1]`` and the real weight ``A = w_max * omega``.
* **Stuck-at faults** (fixed per chip, ``seed``): a device with ``u24 < f_min 2**24`` is stuck at
  ``g_lo``, with ``u24 < (f_min + f_max) 2**24`` at 1; stuck devices ignore programming, drift and
  updates.
* **Programming noise** (drawn once per programming): ``g = clip(g_target + sigma_p(g_target) z,
  g_lo, 1)`` with ``sigma_p = prog_noise_std`` (``"constant"``) or the PCM polynomial of Nandakumar
  et al. 2019 scaled to ``prog_noise_std`` at ``g = 1`` (``"pcm_poly"``:
  ``sigma_p(x) = prog_noise_std * p(x) / p(1)``, ``p(x) = 0.26348 + 1.9650 x - 1.1731 x**2``).
* **Drift**: read at ``t = t_inference_s`` after programming, ``g(t) = g (t / t0)**-nu`` with
  ``nu = max(drift_nu + drift_nu_std z, 0)`` per device (no drift for ``t <= t0``); optional
  global drift compensation multiplies every read by ``(t / t0)**drift_nu``.
* **Read** (every read, i.e. every relaxation step): DAC ``u_q = rint(clip(u, 0, 1) L) / L``
  (``L = 2**dac_bits - 1``), ideal dot product ``y = omega @ [u_q, 1]`` (forward) or
  ``y = u_q @ omega[:, :-1]`` (transpose, the feedback ``W^T s`` of the same array), read noise,
  ADC ``y_q = clip(rint(y / D), -Q, Q) D`` with ``Q = 2**(adc_bits-1) - 1``, ``D = adc_range / Q``;
  the real pre-activation is ``w_max * gain * y_q``.
* **Read noise** is fresh per device and per read, std ``read_noise_std`` on each of ``g+``, ``g-``.
  A sum of independent Gaussians is Gaussian, so it is drawn output-referred, exactly in
  distribution: ``y_k += sigma_r sqrt(2) / (1 - g_lo) * ||u_aug||_2 * z_k`` (one draw per output
  instead of one per device; ``u_aug`` the DAC'd inputs the output sums over).
* **In-situ update** (EqProp on the chip): ``dA = -lr * grad`` becomes a pair change
  ``dg = (1 - g_lo) dA / w_max``: the device on the opposite side is lowered first (down to
  ``g_lo``), the rest raises the other one; with ideal devices each change is scaled by
  ``(1 + eta z)`` (``eta = update_noise_std``) and clipped to ``[g_lo, 1]``; with a pulsed
  ``AnalogSpec.device_model`` each device's change is a stochastically rounded number of pulses
  of the device model (:mod:`hwsim.devices`, after IBM aihwkit); stuck devices stay
  (:meth:`AnalogCrossbarMLP.apply_update`).

Paired seeds: every random draw is :mod:`quant.rng` with counters ``(seed, step, tensor_id,
index)``: stuck map ``step=0``, programming ``step=`` programming count, reads ``step=`` read
sweep count, updates ``step=`` update count; ``tensor_id`` from :func:`quant.rng.tensor_id` (kinds ``stuck``, ``prog``,
``drift``, ``read``, ``analog_update``) with the array index as ``layer`` (pulsed device draws: layer
offsets of :mod:`hwsim.devices`). The read counter is the chip's own state (one step per sweep, phases in the
engine's order free, b1, b2), not the engine's counter layout. The torch path
(``backend="torch"``) and the numba path (``backend="numba"``) draw the same numbers.

>>> import torch
>>> from models.eqprop_mlp import EqPropMLP, EqPropConfig
>>> from quant import AnalogSpec
>>> net = EqPropMLP(EqPropConfig(sizes=(6, 5, 3)), seed=0).double()
>>> xbar = AnalogCrossbarMLP(net, AnalogSpec(), seed=0)   # noiseless, ideal converters
>>> x = torch.rand(4, 6, dtype=torch.float64)
>>> s, info = xbar.relax(x, n_steps=40)
>>> s_ref, _ = net.free_phase(x, n_steps=40)
>>> bool(torch.allclose(s[-1], s_ref[-1], rtol=1e-12, atol=1e-12))
True
"""
from __future__ import annotations

import dataclasses
import logging
import math
from typing import Any, Sequence

import numba
import numpy as np
import torch

from models.energy import INPUT, Bias, Dense
from models.engine import NUDGINGS, Phases, require_kernels, run_phases
from models.solvers import RelaxInfo, fixed_point
from hwsim import devices
from quant import rng
from quant.numba_ops import hash_u32 as _hash_nb  # the one numba twin of quant.rng's hash
from quant.numba_ops import normal_f64 as _normal_nb  # and of its normal draw
from quant.rng import tensor_id
from quant.formats import AnalogSpec, WeightFormat
from quant.quantizers import quantize_weights
from quant.spec import HardwareSpec

log = logging.getLogger("eqprop_hwsim.hwsim.analog")

PROG_NOISE_MODELS = ("constant", "pcm_poly")
BACKENDS = ("torch", "numba")
BACKEND_NAME = "analog crossbar"
_PCM_POLY = (0.26348, 1.9650, -1.1731)  # sigma_prog(x) in uS, x = g / g_max (Nandakumar 2019)

@dataclasses.dataclass(frozen=True)
class AnalogSimConfig:
    """How the chip is operated; what :class:`quant.AnalogSpec` does not hold.

    Attributes:
        prog_noise_model: ``"constant"`` (std ``prog_noise_std`` at every conductance) or
            ``"pcm_poly"`` (Nandakumar 2019 polynomial, scaled to ``prog_noise_std`` at g_max).
        t_inference_s: seconds between programming and the reads (drift); ``None`` = ``drift_t0_s``
            (no drift).
        drift_nu_std: device-to-device std of the drift exponent (aihwkit PCM: 0.008..0.045).
        drift_compensation: multiply reads by ``(t / t0)**drift_nu`` (ideal global compensation).
        update_noise_std: relative std of each in-situ conductance change (0 = exact updates).
    """

    prog_noise_model: str = "constant"
    t_inference_s: float | None = None
    drift_nu_std: float = 0.0
    drift_compensation: bool = False
    update_noise_std: float = 0.0

    def __post_init__(self):
        if self.prog_noise_model not in PROG_NOISE_MODELS:
            raise ValueError(f"AnalogSimConfig.prog_noise_model={self.prog_noise_model!r} is invalid; "
                             f"allowed: one of {PROG_NOISE_MODELS}")
        if self.t_inference_s is not None and not (math.isfinite(self.t_inference_s) and self.t_inference_s > 0):
            raise ValueError(f"AnalogSimConfig.t_inference_s={self.t_inference_s!r} is invalid; allowed: > 0 or None")
        for name in ("drift_nu_std", "update_noise_std"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and 0 <= v <= 10):
                raise ValueError(f"AnalogSimConfig.{name}={v!r} is invalid; allowed: a float in [0, 10]")
        if not isinstance(self.drift_compensation, bool):
            raise ValueError(f"AnalogSimConfig.drift_compensation={self.drift_compensation!r}; allowed: True/False")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "AnalogSimConfig":
        unknown = set(d) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"AnalogSimConfig: unknown keys {sorted(unknown)}; "
                             f"valid: {[f.name for f in dataclasses.fields(cls)]}")
        return cls(**d)


# --------------------------------------------------------------------------- numba kernels


@numba.njit(cache=True)
def _rint_nb(v):
    """Round half to even (matches ``torch.round`` / ``np.rint``)."""
    r = math.floor(v + 0.5)
    if r - v == 0.5 and (r % 2.0) != 0.0:
        r -= 1.0
    return r


@numba.njit(cache=True)
def _program_nb(target, seed, step, tid_s, tid_p, tid_d, g_lo, prog_std, poly, use_poly,
                f_min, f_max, drift_nu, drift_nu_std, t_ratio):
    """Stuck map + programming noise + drift, elementwise. Returns (g, stuck codes)."""
    n_out, n_in = target.shape
    g = np.empty_like(target)
    stuck = np.zeros(target.shape, dtype=np.int8)
    thr_min = f_min * 16777216.0
    thr_max = (f_min + f_max) * 16777216.0
    p1 = poly[0] + poly[1] + poly[2]
    for r in range(n_out):
        for c in range(n_in):
            idx = r * n_in + c
            u = _hash_nb(seed, 0, tid_s, idx) >> 8
            if u < thr_min:
                g[r, c] = g_lo
                stuck[r, c] = 1
                continue
            if u < thr_max:
                g[r, c] = 1.0
                stuck[r, c] = 2
                continue
            x = target[r, c]
            v = x
            if prog_std > 0.0:
                sd = prog_std
                if use_poly:
                    sd = prog_std * (poly[0] + poly[1] * x + poly[2] * x * x) / p1
                v = x + sd * _normal_nb(seed, step, tid_p, idx)
            v = min(max(v, g_lo), 1.0)
            if t_ratio > 1.0:
                nu = drift_nu
                if drift_nu_std > 0.0:
                    nu = max(drift_nu + drift_nu_std * _normal_nb(seed, 0, tid_d, idx), 0.0)
                v = v * t_ratio ** (-nu)
            g[r, c] = v
    return g, stuck


@numba.njit(cache=True)
def _read_nb(omega, u, transpose, seed, step, tid, sigma_out, dac_levels, adc_q, adc_delta, gain, has_bias=True):
    """One crossbar read of a batch ``u``; see module docstring. Returns real pre-activations.

    ``omega`` is ``(n_out, n_in + 1)`` with the bias column last (``has_bias``) or ``(n_out, n_in)``.
    """
    bsz = u.shape[0]
    n_out, n_aug = omega.shape
    n_in = n_aug - 1 if has_bias else n_aug
    n_o = n_in if transpose else n_out
    k_in = n_out if transpose else n_in
    out = np.empty((bsz, n_o))
    uq = np.empty(k_in)
    for b in range(bsz):
        sq = 1.0 if (has_bias and not transpose) else 0.0  # bias input 1 in the forward read
        for j in range(k_in):
            v = u[b, j]
            if dac_levels > 0:
                v = _rint_nb(min(max(v, 0.0), 1.0) * dac_levels) / dac_levels
            uq[j] = v
            sq += v * v
        noise_sd = sigma_out * math.sqrt(sq)
        for k in range(n_o):
            acc = 0.0
            if transpose:
                for j in range(k_in):
                    acc += uq[j] * omega[j, k]
            else:
                for j in range(k_in):
                    acc += omega[k, j] * uq[j]
                if has_bias:
                    acc += omega[k, n_in]
            if noise_sd > 0.0:
                acc += noise_sd * _normal_nb(seed, step, tid, b * n_o + k)
            if adc_q > 0:
                acc = min(max(_rint_nb(acc / adc_delta), -adc_q), adc_q) * adc_delta
            out[b, k] = acc * gain
    return out


# --------------------------------------------------------------------------- torch kernels
def _index(shape: Sequence[int], device) -> torch.Tensor:
    return torch.as_tensor(rng.element_index(tuple(shape)), device=device)


@numba.njit(cache=True)
def _normal_fill_nb(out, seed, step, tid):
    """``out[j] = normal_f64(seed, step, tid, j)`` for the flat index ``j`` (one pass, no temporaries;
    serial: a numba thread pool spinning beside torch's slowed torch's own kernels ~10x, measured)."""
    for j in range(out.shape[0]):
        out[j] = _normal_nb(seed, step, tid, j)


def _normal_torch(seed: int, step: int, tid: int, shape, device) -> torch.Tensor:
    """``quant.rng.normal_f64(seed, step, tid, element_index(shape))`` bit for bit (tested), drawn by one
    numba pass on the CPU. Measured (Track 17 conv section, 100 images, read noise): the vectorised
    torch int64 hash (~40 elementwise passes with temporaries per normal) was ~75 % of a noisy run;
    the fused numba loop removes it. Other devices keep the torch draw."""
    if torch.device(device).type != "cpu":
        return rng.normal_f64(seed, step, tid, _index(shape, device))
    out = np.empty(math.prod(int(d) for d in shape), dtype=np.float64)
    _normal_fill_nb(out, np.int64(seed), np.int64(step), np.int64(tid))
    return torch.from_numpy(out).reshape(tuple(shape))


def _program_torch(target, seed, step, layer, side, g_lo, prog_std, use_poly, f_min, f_max,
                   drift_nu, drift_nu_std, t_ratio):
    idx = _index(target.shape, target.device)
    u = rng.uniform_u24(seed, 0, tensor_id(rng.KIND_STUCK, layer, side), idx).to(torch.float64)
    stuck = torch.zeros(target.shape, dtype=torch.int8, device=target.device)
    stuck[u < f_min * 16777216.0] = 1
    stuck[(u >= f_min * 16777216.0) & (u < (f_min + f_max) * 16777216.0)] = 2
    v = target.clone()
    if prog_std > 0.0:
        sd = prog_std
        if use_poly:
            p = _PCM_POLY
            sd = prog_std * (p[0] + p[1] * target + p[2] * target * target) / (p[0] + p[1] + p[2])
        v = target + sd * rng.normal_f64(seed, step, tensor_id(rng.KIND_PROG, layer, side), idx)
    v = v.clamp(g_lo, 1.0)
    if t_ratio > 1.0:
        if drift_nu_std > 0.0:
            nu = (drift_nu + drift_nu_std * rng.normal_f64(seed, 0, tensor_id(rng.KIND_DRIFT, layer, side), idx)).clamp_min(0.0)
            v = v * torch.pow(torch.as_tensor(t_ratio, dtype=torch.float64), -nu)
        else:
            v = v * t_ratio ** (-drift_nu)
    v = torch.where(stuck == 1, torch.full_like(v, g_lo), v)
    v = torch.where(stuck == 2, torch.ones_like(v), v)
    return v, stuck


def _read_torch(omega, u, transpose, seed, step, tid, sigma_out, dac_levels, adc_q, adc_delta, gain, has_bias=True):
    if dac_levels > 0:
        u = torch.round(u.clamp(0.0, 1.0) * dac_levels) / dac_levels
    w = omega[:, :-1] if has_bias else omega
    if transpose:
        y = u @ w
        sq = (u * u).sum(dim=1, keepdim=True)
    elif has_bias:
        y = torch.addmm(omega[:, -1], u, w.t())
        sq = (u * u).sum(dim=1, keepdim=True) + 1.0
    else:
        y = u @ w.t()
        sq = (u * u).sum(dim=1, keepdim=True)
    if sigma_out > 0.0:
        z = _normal_torch(seed, step, tid, y.shape, y.device)
        y = y + (sigma_out * torch.sqrt(sq)) * z
    if adc_q > 0:
        y = torch.clamp(torch.round(y / adc_delta), -adc_q, adc_q) * adc_delta
    return y * gain


# --------------------------------------------------------------------------- term -> array mapping
@dataclasses.dataclass(frozen=True)
class Array:
    """One differential crossbar array: ``A = [W | b]`` of shape ``(n_post, n_pre + has_bias)``.

    Attributes:
        post: the node its forward read drives (``W s_pre + b``).
        pre: the node it reads forward (:data:`~models.energy.INPUT` for the input, ``None`` for a
            bias-only array); a state node is also driven by the transpose read ``W^T s_post``.
        weight, bias: the model's parameter names (``None`` when absent).
        conv: the :class:`~models.conv.ConvPool` term of a conv array (``None``: a dense array). A
            conv array holds the im2col matrix ``[W.reshape(C_out, C_in k k) | b]``: one row per
            output channel; every read is one crossbar read per conv position (:class:`ConvPoolAnalog`).
    """

    post: int
    pre: int | None
    weight: str | None
    bias: str | None = None
    conv: Any = None

    @property
    def has_bias(self) -> bool:
        return self.bias is not None

    def reads(self) -> list[tuple[int, int | None, bool]]:
        """``(target node, source node, transpose)`` of the reads of one sweep."""
        out = [(self.post, self.pre, False)]
        if self.pre is not None and self.pre != INPUT:
            out.append((self.pre, self.post, True))
        return out


class DenseAnalog:
    """:class:`~models.energy.Dense`: one array per term (read forward and transposed)."""

    order = 0  # placed before the biases, which fold into these arrays

    @staticmethod
    def place(t: Dense, arrays: list[Array]) -> None:
        arrays.append(Array(post=t.post, pre=t.pre, weight=t.weight))


class BiasAnalog:
    """:class:`~models.energy.Bias`: a column (constant input 1) of the first array driving the
    node, else a bias-only array."""

    order = 1

    @staticmethod
    def place(t: Bias, arrays: list[Array]) -> None:
        for k, a in enumerate(arrays):
            if a.post == t.node and a.bias is None and a.weight is not None and a.conv is None:
                arrays[k] = dataclasses.replace(a, bias=t.bias)
                return
        arrays.append(Array(post=t.node, pre=None, weight=None, bias=t.bias))


ROUTE_LAYER_BASE = 250
"""Read-noise ``tensor_id`` of the routing read of conv array ``k``: ``(read, ROUTE_LAYER_BASE + k, 0)``
(the read kind has 500 layer slots; arrays ``k < 250`` never collide with it)."""


class ConvPoolAnalog:
    """:class:`~models.conv.ConvPool` ``s_post . (P(conv(s_pre, W)) + b)`` on one array (im2col).

    The array is ``A = [W.reshape(C_out, C_in k k) | b]`` (one row per output channel, one column
    per kernel tap, the bias column last), programmed, drifted and updated like a dense array.

    * **forward** (into ``post``): the ``C_in k k`` patch of every conv position ``l`` (zero
      padding; ``F.unfold`` order) is one forward read ``A [patch_l, 1]`` with its own DAC, read
      noise (index ``l C_out + c`` within the sample's block: rows ``b L + l``) and ADC; the
      periphery max-pools the converted outputs (floor mode, first maximum in row-major order, the
      tie rule of ``torch.max_pool2d``); ``P(conv + b) = P(conv) + b`` as ``b`` is per channel.
    * **routing** (what the feedback needs): ``U(s_post)`` puts each pooled unit at its window's
      maximum of a *routing read*, a forward read of the array on the current ``s_pre`` with the
      bias line undriven (its read noise ``tensor_id(read, ROUTE_LAYER_BASE + k, 0)``), as the
      float kernel routes by ``conv(s_pre, W)`` (adding ``b`` first could merge near-ties by rounding).
    * **feedback** (into ``pre``): ``U`` at every conv position (a ``C_out`` vector) is one
      transpose read ``u^T A[:, :-1]`` (DAC, read noise, ADC per column); the periphery sums the
      overlapping columns back to the image (``F.fold``, col2im), i.e. ``conv_transpose(U, W)``.
    * **in-situ update**: the EqProp contrast of ``ConvPoolFloat.dphi`` (``conv2d_weight(s_pre, U)``
      and ``sum s_post``) on chip-relaxed states as ``U^T [patches, 1]``, ``U`` from routing reads
      of the chip (one read step after the phases).

    im2col/col2im, pooling and routing are digital data movement done in torch on both backends;
    every read (DAC, dot product, noise, ADC) goes through the backend's read kernel.
    """

    order = 0

    @staticmethod
    def place(t, arrays: list[Array]) -> None:
        arrays.append(Array(post=t.post, pre=t.pre, weight=t.weight, bias=t.bias, conv=t))


def _conv_kernels() -> dict[type, type]:
    try:
        from models.conv import ConvPool
    except ImportError:  # pragma: no cover - the conv model is part of the package
        return {}
    return {ConvPool: ConvPoolAnalog}


ANALOG_KERNELS: dict[type, type] = {Dense: DenseAnalog, Bias: BiasAnalog, **_conv_kernels()}
"""Crossbar mapping of each interaction term type (:func:`models.engine.require_kernels`)."""


def map_arrays(net) -> list[Array]:
    """The crossbar arrays of ``net``'s terms (Dense terms in term order, biases folded in).

    >>> from models.skip_mlp import SkipEqPropMLP
    >>> from models.eqprop_mlp import EqPropConfig
    >>> [(a.post, a.pre, a.weight, a.bias) for a in map_arrays(SkipEqPropMLP(EqPropConfig(sizes=(4, 3, 2)), seed=0))]
    [(0, -1, 'layers.0.weight', 'layers.0.bias'), (1, 0, 'layers.1.weight', 'layers.1.bias'), (1, -1, 'skip.weight', None)]
    """
    kernels = require_kernels(BACKEND_NAME, ANALOG_KERNELS, net.terms)
    arrays: list[Array] = []
    for order in sorted({k.order for k in kernels}):
        for t, k in zip(net.terms, kernels):
            if k.order == order:
                k.place(t, arrays)
    return arrays


def _float_targets(net, arrays: Sequence[Array], fmt: WeightFormat | None = None) -> list[torch.Tensor]:
    """Augmented ``[W | b]`` float64 of every array (weights quantised with ``fmt`` unless float)."""
    out = []
    for a in arrays:
        cols = []
        if a.weight is not None:
            w = net.get_parameter(a.weight).detach().to(torch.float64).cpu()
            w = w.reshape(w.shape[0], -1)   # a conv kernel as its im2col rows (C_out, C_in k k)
            if fmt is not None and not fmt.is_float:
                w = quantize_weights(w, fmt).dequantize()
            cols.append(w)
        if a.bias is not None:
            cols.append(net.get_parameter(a.bias).detach().to(torch.float64).cpu()[:, None])
        out.append(torch.cat(cols, dim=1))
    return out


# --------------------------------------------------------------------------- the simulator
def _weight_format(weights) -> WeightFormat:
    if isinstance(weights, str):
        from quant.presets import get_preset
        return get_preset(weights).weights
    if isinstance(weights, HardwareSpec):
        return weights.weights
    if isinstance(weights, WeightFormat):
        return weights
    raise ValueError(f"weights={weights!r} is invalid; allowed: a preset name, HardwareSpec or WeightFormat")


class AnalogCrossbarMLP:
    """An energy model programmed on noisy differential crossbars (one per array, :func:`map_arrays`).

    The dynamics are those of the model (its schedule ``net.schedule()``; async: even layers, then
    odd for the MLP) with every matrix product replaced by a crossbar read (module docstring);
    ``W^T s_post`` is a transpose read of the same array. States are float64 ``(B, n_i)`` lists;
    the chip is fixed after :meth:`program` except for in-situ updates (:meth:`eqprop_update`).

    Args:
        net: trained :class:`~models.energy.EnergyModel` (its weights are copied; not modified),
            e.g. an ``EqPropMLP`` or a ``SkipEqPropMLP``.
        analog: device data (``quant.AnalogSpec``); e.g. ``get_preset("analog_pcm").analog``.
        weights: weight precision before programming: preset name, ``HardwareSpec`` or
            ``WeightFormat`` (``"fp32"`` = no quantisation).
        sim: :class:`AnalogSimConfig` (defaults: constant programming noise, no drift time).
        seed: chip seed (stuck map, programming, reads, updates).
        backend: ``"torch"`` or ``"numba"`` (same draws, same results within float64 rounding).
        program: program the weights at construction.

    Raises:
        models.engine.UnsupportedError: ``net`` has a term type without a crossbar mapping.
    """

    def __init__(self, net, analog: AnalogSpec, *, weights="fp32", sim: AnalogSimConfig | None = None,
                 seed: int = 0, backend: str = "torch", program: bool = True):
        if not isinstance(analog, AnalogSpec):
            raise ValueError(f"analog={analog!r} is invalid; allowed: a quant.AnalogSpec "
                             "(e.g. quant.get_preset('analog_pcm').analog)")
        if backend not in BACKENDS:
            raise ValueError(f"backend={backend!r} is invalid; allowed: one of {BACKENDS}")
        if analog.adc_bits is not None and analog.adc_bits < 2:
            raise ValueError(f"AnalogSpec.adc_bits={analog.adc_bits} is not simulable; allowed: >= 2 "
                             "(a symmetric mid-tread ADC needs a sign bit and one magnitude bit)")
        if not isinstance(seed, int) or not 0 <= seed < 2 ** 32:
            raise ValueError(f"seed={seed!r} is invalid; allowed: an int in [0, 2**32)")
        self.net = net
        self.arrays = map_arrays(net)
        self.analog = analog
        self.fmt = _weight_format(weights)
        self.sim = sim or AnalogSimConfig()
        self.seed = seed
        self.backend = backend
        self.n_layers = len(net.nodes)     # state nodes
        self.n_arrays = len(self.arrays)
        self.n_in = int(net.n_in)
        self.node_sizes = tuple(n.size for n in net.nodes)
        self.sizes = (self.n_in,) + self.node_sizes
        self.g_lo = analog.g_min_uS / analog.g_max_uS
        self.read_step = 0       # read-sweep counter (rng step of read noise)
        self.program_count = 0   # programming counter (rng step of programming noise)
        self.update_count = 0    # in-situ update counter (rng step of update noise)
        self._dev_params: dict[tuple[int, int], tuple[torch.Tensor, ...]] = {}
        if analog.pulsed and self.sim.update_noise_std > 0:
            raise ValueError(f"AnalogSimConfig.update_noise_std={self.sim.update_noise_std} applies to ideal devices "
                             f"only; AnalogSpec.device_model={analog.device_model!r} has its own cycle-to-cycle "
                             "noise: set AnalogSpec.dw_min_std instead")
        if analog.pulsed and len(self.arrays) > devices.MAX_ARRAYS:
            raise ValueError(f"{len(self.arrays)} crossbar arrays; pulsed device updates support at most "
                             f"{devices.MAX_ARRAYS} (use device_model='ideal')")
        self.gp: list[torch.Tensor] = []
        self.gm: list[torch.Tensor] = []
        self.stuck_p: list[torch.Tensor] = []
        self.stuck_m: list[torch.Tensor] = []
        self.w_max: list[float] = []
        self.gain = 1.0
        # per node, its reads in array order: (array index, source node, transpose)
        self._reads: list[list[tuple[int, int | None, bool]]] = [[] for _ in self.node_sizes]
        for k, a in enumerate(self.arrays):
            for node, src, tr in a.reads():
                self._reads[node].append((k, src, tr))
        if program:
            self.program()

    # ---------------------------------------------------------------- programming
    def _size(self, node: int | None) -> int:
        return 0 if node is None else (self.n_in if node == INPUT else self.node_sizes[node])

    def array_shape(self, k: int) -> tuple[int, int]:
        """``(n_post, n_pre + has_bias)`` of array ``k``."""
        a = self.arrays[k]
        if a.conv is not None:
            c_out = self.net.get_parameter(a.weight).shape[0]
            return c_out, a.conv.in_shape[0] * a.conv.kernel ** 2 + int(a.has_bias)
        return self.node_sizes[a.post], self._size(a.pre) + int(a.has_bias)

    def target_weights(self) -> list[torch.Tensor]:
        """Augmented ``[W_k | b_k]`` (float64) per array after weight quantisation: what is programmed."""
        return _float_targets(self.net, self.arrays, self.fmt)

    def program(self, weights: Sequence[torch.Tensor] | None = None, *, headroom: float = 1.0) -> None:
        """Program ``weights`` (augmented ``[W|b]`` per array; default :meth:`target_weights`).

        Draws programming noise once (rng ``step = program_count``), applies the fixed stuck map
        and the drift to ``t_inference_s``. ``headroom`` >= 1 maps ``w_max = headroom * max|A_k|`` to
        ``g_max`` (room for in-situ learning to grow weights, e.g. 2 when training from scratch).
        """
        a = self.analog
        if not (isinstance(headroom, (int, float)) and math.isfinite(headroom) and headroom >= 1.0):
            raise ValueError(f"headroom={headroom!r} is invalid; allowed: a float >= 1")
        weights = self.target_weights() if weights is None else [torch.as_tensor(w, dtype=torch.float64) for w in weights]
        if len(weights) != self.n_arrays:
            raise ValueError(f"weights has {len(weights)} arrays; expected {self.n_arrays} (one per crossbar array)")
        t = self.sim.t_inference_s
        t_ratio = (t / a.drift_t0_s) if t is not None else 1.0
        self.gain = t_ratio ** a.drift_nu if (self.sim.drift_compensation and t_ratio > 1.0) else 1.0
        use_poly = self.sim.prog_noise_model == "pcm_poly"
        self.gp, self.gm, self.stuck_p, self.stuck_m, self.w_max = [], [], [], [], []
        for i, A in enumerate(weights):
            exp = self.array_shape(i)
            if tuple(A.shape) != exp:
                raise ValueError(f"weights[{i}] has shape {tuple(A.shape)}; expected {exp} ([W | b])")
            w_max = float(A.abs().max()) * headroom if A.numel() else 0.0
            w_max = w_max if w_max > 0 else 1.0
            self.w_max.append(w_max)
            for side, tgt in ((0, A.clamp_min(0.0)), (1, (-A).clamp_min(0.0))):
                g_t = self.g_lo + (1.0 - self.g_lo) * tgt / w_max
                rest = (a.stuck_at_gmin_frac, a.stuck_at_gmax_frac, a.drift_nu, self.sim.drift_nu_std, t_ratio)
                if self.backend == "numba":
                    tids = tuple(tensor_id(kind, i, side) for kind in (rng.KIND_STUCK, rng.KIND_PROG, rng.KIND_DRIFT))
                    g, st = _program_nb(g_t.numpy(), self.seed, self.program_count, *tids, self.g_lo,
                                        a.prog_noise_std, np.array(_PCM_POLY), use_poly, *rest)
                    g, st = torch.from_numpy(g), torch.from_numpy(st)
                else:
                    g, st = _program_torch(g_t, self.seed, self.program_count, i, side, self.g_lo,
                                           a.prog_noise_std, use_poly, *rest)
                (self.gp if side == 0 else self.gm).append(g)
                (self.stuck_p if side == 0 else self.stuck_m).append(st)
        self.program_count += 1

    def omega(self, i: int) -> torch.Tensor:
        """Normalised weights ``(g+ - g-) / (1 - g_lo)`` of array ``i``, ``(n_post, n_pre + has_bias)``."""
        return (self.gp[i] - self.gm[i]) / (1.0 - self.g_lo)

    def effective_weights(self) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
        """``(W_k, b_k)`` per array the chip holds now (noise-free read, drift compensation included);
        ``b_k`` is None for an array without a bias column (``W_k`` is ``(n, 0)`` for a bias-only one)."""
        out = []
        for i, arr in enumerate(self.arrays):
            A = self.omega(i) * (self.w_max[i] * self.gain)
            out.append((A[:, :-1], A[:, -1]) if arr.has_bias else (A, None))
        return out

    # ---------------------------------------------------------------- reads and dynamics
    def _read(self, i: int, u: torch.Tensor, transpose: bool, route: bool = False) -> torch.Tensor:
        a = self.analog
        sigma_out = a.read_noise_std * math.sqrt(2.0) / (1.0 - self.g_lo)
        dac = (2 ** a.dac_bits - 1) if a.dac_bits is not None else 0
        adc_q = (2 ** (a.adc_bits - 1) - 1) if a.adc_bits is not None else 0
        adc_delta = a.adc_range / adc_q if adc_q else 1.0
        tid = tensor_id(rng.KIND_READ, ROUTE_LAYER_BASE + i, 0) if route else tensor_id(rng.KIND_READ, i, int(transpose))
        gain = self.w_max[i] * self.gain
        om = self.omega(i)
        has_bias = self.arrays[i].has_bias
        if route and has_bias:   # the routing read leaves the bias line undriven: argmax of conv(s_pre, W)
            om, has_bias = om[:, :-1].contiguous(), False
        if self.backend == "numba":
            y = _read_nb(om.numpy(), np.ascontiguousarray(u.numpy()), transpose, self.seed, self.read_step, tid,
                         sigma_out, dac, adc_q, adc_delta, gain, has_bias)
            return torch.from_numpy(y)
        return _read_torch(om, u, transpose, self.seed, self.read_step, tid, sigma_out, dac, adc_q, adc_delta, gain,
                           has_bias)

    def preact(self, i: int, s: list[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        """``dPhi/ds_i`` as crossbar reads (noisy, converted), summed in array order; for the MLP
        ``W_i s_{i-1} + b_i + W_{i+1}^T s_{i+1}``."""
        a = None
        for k, src, tr in self._reads[i]:
            u = x if src == INPUT else (x[:, :0] if src is None else s[src])
            t = self.arrays[k].conv
            if t is None:
                r = self._read(k, u, tr)
            elif not tr:
                r = self._conv_forward(k, u)
            else:
                r = self._conv_feedback(k, s[t.pre], u)
            a = r if a is None else a + r
        return torch.zeros_like(s[i]) if a is None else a

    # ---------------------------------------------------------------- conv arrays (ConvPoolAnalog)
    @staticmethod
    def _patches(t, u: torch.Tensor) -> torch.Tensor:
        """im2col: ``(B, C_in H W)`` -> ``(B L, C_in k k)``, one row per conv position (row-major)."""
        cols = torch.nn.functional.unfold(u.reshape(u.shape[0], *t.in_shape), t.kernel, padding=t.padding)
        return cols.transpose(1, 2).reshape(-1, cols.shape[1])

    def _conv_map(self, k: int, u: torch.Tensor, route: bool = False) -> torch.Tensor:
        """Converted forward reads of every conv position: ``conv(u, W) + b``, ``(B, C_out, Hc, Wc)``."""
        t = self.arrays[k].conv
        hc, wc = t.conv_shape
        y = self._read(k, self._patches(t, u), False, route)
        return y.reshape(u.shape[0], hc, wc, -1).permute(0, 3, 1, 2)

    def _conv_forward(self, k: int, u: torch.Tensor) -> torch.Tensor:
        from models.conv import ConvPoolFloat
        return ConvPoolFloat._pool(self.arrays[k].conv, self._conv_map(k, u))[0].flatten(1)

    def _unpool(self, k: int, s_pre: torch.Tensor, s_post: torch.Tensor) -> torch.Tensor:
        """``U(s_post)``, ``(B, C_out, Hc, Wc)``, routed by the maxima of a routing read of ``s_pre``."""
        from models.conv import ConvPoolFloat
        t = self.arrays[k].conv
        y = self._conv_map(k, s_pre, route=True)
        _, idx = ConvPoolFloat._pool(t, y)
        hc, wc = y.shape[-2:]
        post = s_post.reshape(s_post.shape[0], *t.out_shape(y.shape[1]))
        if idx is None:
            u = post
        else:
            u = torch.nn.functional.max_unpool2d(post, idx, t.pool, output_size=(hc - hc % t.pool, wc - wc % t.pool))
        if u.shape[-2:] != y.shape[-2:]:
            u = torch.nn.functional.pad(u, (0, wc - u.shape[-1], 0, hc - u.shape[-2]))
        return u

    def _conv_feedback(self, k: int, s_pre: torch.Tensor, s_post: torch.Tensor) -> torch.Tensor:
        """``conv_transpose(U(s_post), W)`` as transpose reads per conv position, then col2im."""
        t = self.arrays[k].conv
        u = self._unpool(k, s_pre, s_post)
        rows = u.permute(0, 2, 3, 1).reshape(-1, u.shape[1])           # (B L, C_out)
        cols = self._read(k, rows, True)                                  # (B L, C_in k k)
        cols = cols.reshape(u.shape[0], -1, cols.shape[1]).transpose(1, 2)
        img = torch.nn.functional.fold(cols, t.in_shape[1:], t.kernel, padding=t.padding)
        return img.flatten(1)

    def sweeper(self, x: torch.Tensor, beta: float = 0.0, y: torch.Tensor | None = None):
        """``s -> one sweep`` (groups of ``net.schedule()``, each node from the state at the start of
        its group), advancing the read counter once per sweep."""
        groups = self.net.schedule()
        last = self.n_layers - 1
        nudge = self.net.nudger(beta, y, torch.float64) if beta != 0.0 else None

        def sweep(s: list[torch.Tensor]) -> list[torch.Tensor]:
            s = list(s)
            for group in groups:
                src = list(s)   # async: nodes of one colour do not interact; sync: one group
                for i in group:
                    pre = self.preact(i, src, x)
                    if i == last and nudge is not None:
                        pre = pre - beta * nudge(s[i])
                    s[i] = pre.clamp(0.0, 1.0)
            self.read_step += 1
            return s

        return sweep

    def step(self, s: list[torch.Tensor], x: torch.Tensor, beta: float = 0.0, y: torch.Tensor | None = None):
        """One sweep (model's update order), then advance the read counter."""
        return self.sweeper(self._check_x(x), beta, y)(s)

    def _check_x(self, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(x, torch.Tensor) or x.ndim != 2 or x.shape[1] != self.n_in:
            shape = tuple(x.shape) if hasattr(x, "shape") else type(x).__name__
            raise ValueError(f"input shape {shape} does not match the network: expected (B, {self.n_in})")
        return x.detach().to(torch.float64).cpu()

    def relax(self, x: torch.Tensor, s0: list[torch.Tensor] | None = None, *, beta: float = 0.0,
              y: torch.Tensor | None = None, n_steps: int = 30, tol: float = 0.0,
              record_trace: bool = False) -> tuple[list[torch.Tensor], RelaxInfo]:
        """Relax up to ``n_steps`` sweeps from ``s0`` (zeros if None) through noisy reads.

        The shared settling loop (:func:`models.solvers.fixed_point`): with ``tol = 0`` (default)
        exactly ``n_steps`` sweeps and read-counter steps; ``tol > 0`` stops once every sample's
        residual is ``<= tol`` (rare with read noise).

        Args:
            x: inputs ``(B, n_in)`` in [0, 1].
            beta: nudging (output ``- beta dL/ds_out``); needs ``y`` when non-zero.
        Returns:
            ``(states, info)``: states ``[s_0 .. s_{L-1}]``, float64 ``(B, n_i)``, and the
            :class:`~models.solvers.RelaxInfo` diagnostics.
        """
        x = self._check_x(x)
        if beta != 0.0 and y is None:
            raise ValueError("a nudged relaxation (beta != 0) needs the targets y")
        if not isinstance(n_steps, int) or n_steps < 1:
            raise ValueError(f"n_steps={n_steps!r} is invalid; allowed: an int >= 1")
        s = ([torch.zeros(x.shape[0], n, dtype=torch.float64) for n in self.node_sizes] if s0 is None
             else [t.detach().to(torch.float64).cpu() for t in s0])
        with torch.no_grad():
            return fixed_point(self.sweeper(x, beta, y), s, max_steps=n_steps, tol=tol, record_trace=record_trace)

    def predict(self, x: torch.Tensor, n_steps: int = 30, batch_size: int = 1000) -> torch.Tensor:
        """Argmax of the output after a free relaxation, in batches of ``batch_size``."""
        out = []
        for a in range(0, x.shape[0], batch_size):
            out.append(self.relax(x[a:a + batch_size], n_steps=n_steps)[0][-1].argmax(dim=1))
        return torch.cat(out)

    def accuracy(self, x: torch.Tensor, y: torch.Tensor, n_steps: int = 30, batch_size: int = 1000) -> float:
        """Fraction of ``argmax == y`` on the chip."""
        return float((self.predict(x, n_steps, batch_size) == y.cpu()).double().mean())

    # ---------------------------------------------------------------- in-situ learning
    def phases(self, x: torch.Tensor, y: torch.Tensor, *, beta: float, n_free_steps: int = 30,
               n_nudge_steps: int = 10, mode: str = "symmetric",
               generator: torch.Generator | None = None) -> Phases:
        """The EqProp phases on the chip (:func:`models.engine.run_phases`: free, b1, b2 in that order,
        each advancing the read counter by its sweeps)."""
        x = self._check_x(x)

        def relax_(s0, *, beta, n_steps, step_offset):  # read counter is the chip's: step_offset unused
            return self.relax(x, s0, beta=beta, y=y, n_steps=n_steps)

        return run_phases(relax_, beta=beta, mode=mode, n_free_steps=n_free_steps, n_nudge_steps=n_nudge_steps,
                          generator=generator, allowed=NUDGINGS)

    def eqprop_grads(self, x: torch.Tensor, y: torch.Tensor, *, beta: float, n_free_steps: int = 30,
                     n_nudge_steps: int = 10, mode: str = "symmetric",
                     generator: torch.Generator | None = None) -> list[torch.Tensor]:
        """EqProp estimate of ``d mean L / d A_k`` per array from states relaxed on the chip.

        ``g_k = -(s_post^{b2 T} [s_pre^{b2}, 1] - s_post^{b1 T} [s_pre^{b1}, 1]) / ((b2 - b1) B)``
        (the ``1`` column only for an array with a bias), ``(b1, b2)`` from the nudging ``mode``
        (:data:`models.engine.NUDGINGS`; ``random_sign`` draws from ``generator``). A conv array's
        ``s_post^T [s_pre, 1]`` is ``U(s_post)^T [patches(s_pre), 1]`` (:class:`ConvPoolAnalog`),
        ``U`` routed by routing reads of both phases' states at one read step (the same noise
        realisation: for an input array the two are one read of ``x``, so ``U2 - U1`` routes only
        the state difference; separate draws flip routings and ruin the first layer's contrast),
        after which the read counter has advanced by 1.
        """
        ph = self.phases(x, y, beta=beta, n_free_steps=n_free_steps, n_nudge_steps=n_nudge_steps, mode=mode,
                         generator=generator)
        x = self._check_x(x)
        s1, s2 = ph.s1, ph.s2
        bsz, scale = x.shape[0], -1.0 / (ph.b2 - ph.b1)
        ones = torch.ones(bsz, 1, dtype=torch.float64)

        def inputs(arr: Array, s: list[torch.Tensor]) -> torch.Tensor:
            cols = [] if arr.pre is None else [x if arr.pre == INPUT else s[arr.pre]]
            return torch.cat(cols + ([ones] if arr.has_bias else []), dim=1)

        def conv_dphi(k: int, arr: Array, s: list[torch.Tensor]) -> torch.Tensor:
            pre = x if arr.pre == INPUT else s[arr.pre]
            u = self._unpool(k, pre, s[arr.post])
            rows = u.permute(0, 2, 3, 1).reshape(-1, u.shape[1])                  # (B L, C_out)
            p = self._patches(arr.conv, pre)
            if arr.has_bias:
                p = torch.cat([p, torch.ones(p.shape[0], 1, dtype=p.dtype)], dim=1)
            return rows.t() @ p

        out = []
        for k, a in enumerate(self.arrays):
            if a.conv is None:
                out.append((s2[a.post].t() @ inputs(a, s2) - s1[a.post].t() @ inputs(a, s1)) * (scale / bsz))
            else:
                out.append((conv_dphi(k, a, s2) - conv_dphi(k, a, s1)) * (scale / bsz))
        if any(a.conv is not None for a in self.arrays):
            self.read_step += 1   # the routing reads of the contrast: one read step
        return out

    def apply_update(self, delta: Sequence[torch.Tensor]) -> None:
        """Add ``delta[k]`` (real units, augmented ``[dW | db]`` per array) as conductance changes.

        ``dg = (1 - g_lo) dA / (w_max gain)``. For ``dg > 0`` the ``g-`` device first gives back
        up to ``g- - g_lo`` (decrease), the rest raises ``g+``; ``dg < 0`` mirrors this. So the
        pair moves by exactly ``dg`` unless a device is stuck or saturates at 1, and one device
        of a pair tends to sit at ``g_lo``. Ideal devices (``AnalogSpec.device_model == "ideal"``):
        each device's change is scaled by ``(1 + eta z)`` (``eta = update_noise_std``, rng
        ``step = update_count``) and applied. Pulsed devices: each device's requested change is sent
        as pulses of the spec's device model (:mod:`hwsim.devices`: pulse counting with ``dw_min``,
        device-to-device and cycle-to-cycle variation, up/down asymmetry, state-dependent steps).
        Stuck devices keep their conductance (:func:`hwsim.devices.keep_stuck`).
        """
        if len(delta) != self.n_arrays:
            raise ValueError(f"delta has {len(delta)} arrays; expected {self.n_arrays} (one per crossbar array)")
        eta = self.sim.update_noise_std
        for i, d in enumerate(delta):
            dg = (1.0 - self.g_lo) * torch.as_tensor(d, dtype=torch.float64) / (self.w_max[i] * self.gain)
            gp, gm, sp, sm = self.gp[i], self.gm[i], self.stuck_p[i], self.stuck_m[i]
            pos = dg > 0
            mag = dg.abs()
            # the device to lower: g- for dg > 0, g+ for dg < 0
            lower_g, lower_free = torch.where(pos, gm, gp), torch.where(pos, sm == 0, sp == 0)
            room = torch.where(lower_free, lower_g - self.g_lo, torch.zeros_like(lower_g)).clamp_min(0.0)
            dec = torch.minimum(mag, room)
            inc = mag - dec
            d_p = torch.where(pos, inc, -dec)   # change of g+
            d_m = torch.where(pos, -dec, inc)   # change of g-
            if self.analog.pulsed:
                # on the CPU both backends run the numba kernel (same draws and results as the torch
                # kernel, tested; ~8x faster on a 512x785 array with c2c noise, measured)
                pulse = devices.PULSE_UPDATES["numba" if gp.device.type == "cpu" else self.backend]
                for side, (g, st, dd) in enumerate(((gp, sp, d_p), (gm, sm, d_m))):
                    params = self._device_params(i, side)
                    g.copy_(devices.keep_stuck(pulse(g, dd, params, self.analog, self.g_lo, self.seed,
                                                     self.update_count, i, side), g, st))
                continue
            if eta > 0:
                for side, dd in ((0, d_p), (1, d_m)):
                    z = rng.normal_f64(self.seed, self.update_count, tensor_id(rng.KIND_ANALOG_UPDATE, i, side),
                                       _index(dd.shape, dd.device))
                    dd.mul_(1.0 + eta * z)
            gp.copy_(devices.keep_stuck((gp + d_p).clamp(self.g_lo, 1.0), gp, sp))
            gm.copy_(devices.keep_stuck((gm + d_m).clamp(self.g_lo, 1.0), gm, sm))
        self.update_count += 1

    def _device_params(self, i: int, side: int) -> tuple[torch.Tensor, ...]:
        """Per-device step parameters of array ``i``, side ``side`` (:func:`hwsim.devices.device_params`;
        drawn once per chip, cached)."""
        key = (i, side)
        if key not in self._dev_params:
            self._dev_params[key] = devices.device_params(self.analog, self.seed, i, side, self.array_shape(i))
        return self._dev_params[key]

    def eqprop_update(self, x: torch.Tensor, y: torch.Tensor, *, lr: float, beta: float, n_free_steps: int = 30,
                      n_nudge_steps: int = 10, mode: str = "symmetric") -> None:
        """One in-situ EqProp SGD step: ``A_k <- A_k - lr * g_k`` applied to the conductances."""
        if not lr > 0:
            raise ValueError(f"lr={lr} must be > 0")
        g = self.eqprop_grads(x, y, beta=beta, n_free_steps=n_free_steps, n_nudge_steps=n_nudge_steps, mode=mode)
        self.apply_update([-lr * gi for gi in g])

    def stuck_fraction(self) -> float:
        """Measured fraction of stuck devices over all arrays."""
        n = sum(int(s.numel()) for s in self.stuck_p + self.stuck_m)
        k = sum(int((s != 0).sum()) for s in self.stuck_p + self.stuck_m)
        return k / n if n else 0.0


def adc_range_for(net, preact_range: float = 2.0) -> float:
    """ADC full scale (units of the normalised dot product) covering ``[-preact_range, preact_range]``
    of real pre-activation in every array: ``max_k preact_range / w_max_k`` (``w_max_k = max |[W_k | b_k]|``
    of the float weights).

    The EqProp state clamps pre-activations to [0, 1], so a range of 2 clips nothing that matters
    per read (a hidden pre-activation is the sum of two reads).
    """
    w_max = [float(A.abs().max()) for A in _float_targets(net, map_arrays(net)) if A.numel()]
    return max(preact_range / w for w in w_max if w > 0)

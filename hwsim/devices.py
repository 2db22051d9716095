"""Pulsed resistive-device update models for in-situ learning on the analog crossbar (torch and numba).

:meth:`hwsim.analog.AnalogCrossbarMLP.apply_update` splits a requested weight change into a
requested conductance change ``d`` per device of each differential pair (the device on the
opposite side is lowered first, the rest raises the other one). With ``AnalogSpec.device_model ==
"ideal"`` that change is applied exactly (today's model). With a pulsed model the chip cannot set a
conductance: it sends a number of identical programming pulses, and each pulse moves the device by
a step that depends on the device, on its current conductance, on the direction and on the cycle.
The models, their parameters and their default values are those of IBM's aihwkit (Rasch et al.,
"A flexible and fast PyTorch toolkit for simulating training and inference on analog crossbar
arrays", AICAS 2021, arXiv:2104.02184): ``src/aihwkit/simulator/configs/devices.py`` (parameters)
and ``src/rpucuda/rpu_pulsed_device.cpp`` (device-to-device draws), ``rpu_constantstep_device.cpp``,
``rpu_linearstep_device.cpp``, ``rpu_expstep_device.cpp``, ``rpu_powstep_device.cpp`` (the update
of one pulse). The code here is our own; the formulas follow those files.

Units. A device's conductance ``g`` lives in ``[g_lo, 1]`` (units of ``g_max``), its position is
``x = (g - g_lo) / (1 - g_lo)`` in ``[0, 1]`` and ``w = 2 x - 1`` in ``[-1, 1]`` is aihwkit's weight
coordinate with bounds ``w_min = -1``, ``w_max = 1``. Steps are fractions of the range, i.e. in
``x`` units (a pulse moves ``g`` by ``(1 - g_lo) * step``).

* **Pulse counting** (aihwkit's stochastic pulse trains reduced to their count; Gokmen & Vlasov
  2016, "Acceleration of deep neural network training with resistive cross-point devices",
  Front. Neurosci. 10:333): a requested change ``d`` (``x`` units) becomes ``n = floor(|d| / dw_min)``
  pulses plus one more iff ``u24 < frac(|d| / dw_min) 2**24`` (stochastic rounding, unbiased:
  ``E[n dw_min] = |d|`` below the cap), capped at ``max_pulses`` (aihwkit ``desired_bl = 31``), in
  the direction of ``sign(d)``.
* **Device-to-device variation** (``PulsedDevice.populate``, fixed per chip): per device
  ``gain = 1 + dw_min_dtod xi1``, ``r = up_down_dtod xi2``, ``s_up = |up_bias + gain + r| dw_min``,
  ``s_down = |down_bias + gain - r| dw_min`` with ``up_bias = min(up_down, 0)``,
  ``down_bias = -max(up_down, 0)`` (aihwkit's ``enforce_consistency`` takes the absolute values).
* **Up/down asymmetry**: ``up_down`` (above): ``> 0`` makes down steps smaller than up steps.
* **Cycle-to-cycle variation**: every pulse's step is scaled by ``1 + dw_min_std xi`` (fresh ``xi``
  per pulse), then the device is clipped to its bounds (hard bounds ``[g_lo, 1]``).
* **Step of one pulse** at position ``x`` (``w = 2x - 1``), per model:

  ``constant_step`` (aihwkit ``ConstantStepDevice``): ``s_up`` / ``s_down``.
  ``linear_step`` (``LinearStepDevice``, ``mean_bound_reference``): ``s_up (1 - gamma_up w)`` /
  ``s_down (1 + gamma_down w)``.
  ``soft_bounds`` (``SoftBoundsDevice``: linear step with ``gamma = 1``, steps vanish at the
  bounds; cf. Fusi & Abbott 2007, Nat. Neurosci. 10:485): ``s_up (1 - w)`` / ``s_down (1 + w)``.
  ``exp_step`` (``ExpStepDevice``): ``z = es_a w + es_b``, ``s_up max(1 - es_A_up e^{es_gamma_up z}, 0)``
  / ``s_down max(1 - es_A_down e^{-es_gamma_down z}, 0)`` (aihwkit's fit defaults).
  ``pow_step`` (``PowStepDevice``, Fusi & Abbott 2007; Frascaroli et al. 2018, Sci. Rep. 8:7178):
  ``s_up (1 - x)^{gamma_up}`` / ``s_down x^{gamma_down}``, per device ``gamma_up = (up_bias' +
  gain' + r') pow_gamma``, ``gamma_down = (down_bias' + gain' - r') pow_gamma`` with
  ``gain' = 1 + pow_gamma_dtod xi3``, ``r' = 0`` (no separate dtod of ``pow_up_down`` here) and
  the biases from ``pow_up_down`` as for ``up_down``; absolute values.

Random draws (paired seeds, :mod:`quant.rng`; one family with the crossbar's, kind
``analog_update`` with layer offsets so no id collides with the ideal update's ``(analog_update,
k, side)``): device-to-device ``step = 0``, layers ``D2D_GAIN + k`` (``xi1``), ``D2D_UPDOWN + k``
(``xi2``), ``D2D_POW + k`` (``xi3``); pulse-count rounding ``step = update count``, layer ``PULSE + k``,
index = element; cycle-to-cycle ``step = update count``, layer ``C2C + k``, index = ``p * numel +
element`` for pulse ``p``. ``side`` is 0 for ``g+``, 1 for ``g-``. The torch path
(:func:`pulse_update_torch`) and the numba path (:func:`pulse_update_numba`) draw the same numbers
and agree to float64 rounding (tested).
"""
from __future__ import annotations

import math

import numba
import numpy as np
import torch

from quant import rng
from quant.formats import DEVICE_MODELS, AnalogSpec
from quant.numba_ops import hash_u32 as _hash_nb
from quant.numba_ops import normal_f64 as _normal_nb
from quant.rng import tensor_id

MODEL_CODES = {m: i for i, m in enumerate(DEVICE_MODELS)}   # ideal 0, constant 1, linear 2, soft 3, exp 4, pow 5
MAX_ARRAYS = 50
D2D_GAIN, D2D_UPDOWN, D2D_POW, PULSE, C2C = 100, 150, 200, 300, 400
"""Layer offsets of the device draws within kind ``analog_update`` (arrays ``k < MAX_ARRAYS``)."""


def keep_stuck(new: torch.Tensor, old: torch.Tensor, stuck: torch.Tensor) -> torch.Tensor:
    """Stuck devices (code != 0) keep their conductance ``old``; the others take ``new``. The one
    place the simulator enforces that stuck devices ignore updates (Track 3 checks the invariant)."""
    return torch.where(stuck == 0, new, old)


def _tid(base: int, k: int, side: int) -> int:
    if not 0 <= k < MAX_ARRAYS:
        raise ValueError(f"array index {k} is out of range for pulsed device updates; allowed: < {MAX_ARRAYS} arrays")
    return tensor_id(rng.KIND_ANALOG_UPDATE, base + k, side)


def device_params(spec: AnalogSpec, seed: int, k: int, side: int, shape) -> tuple[torch.Tensor, ...]:
    """Per-device ``(s_up, s_down, p_up, p_down)`` (float64, ``shape``) of array ``k``, side ``side``.

    ``s_*``: step of one pulse (``x`` units) with device-to-device and up/down variation; ``p_*``:
    the model's per-direction shape parameter (``linear_step``: ``gamma_*``; ``soft_bounds``: 1;
    ``pow_step``: per-device exponents; otherwise unused zeros). Drawn at ``step = 0``: fixed per chip.
    """
    idx = torch.as_tensor(rng.element_index(tuple(shape)))
    ones = torch.ones(tuple(shape), dtype=torch.float64)

    def bias_pair(up_down: float) -> tuple[float, float]:
        return (min(up_down, 0.0), -max(up_down, 0.0))

    gain = ones.clone()
    if spec.dw_min_dtod > 0:
        gain = gain + spec.dw_min_dtod * rng.normal_f64(seed, 0, _tid(D2D_GAIN, k, side), idx)
    r = torch.zeros_like(ones)
    if spec.up_down_dtod > 0:
        r = spec.up_down_dtod * rng.normal_f64(seed, 0, _tid(D2D_UPDOWN, k, side), idx)
    ub, db = bias_pair(spec.up_down)
    s_up = (ub + gain + r).abs() * spec.dw_min
    s_down = (db + gain - r).abs() * spec.dw_min
    m = spec.device_model
    if m == "linear_step":
        p_up, p_down = ones * spec.gamma_up, ones * spec.gamma_down
    elif m == "soft_bounds":
        p_up, p_down = ones.clone(), ones.clone()
    elif m == "pow_step":
        pg = ones.clone()
        if spec.pow_gamma_dtod > 0:
            pg = pg + spec.pow_gamma_dtod * rng.normal_f64(seed, 0, _tid(D2D_POW, k, side), idx)
        ub, db = bias_pair(spec.pow_up_down)
        p_up, p_down = (ub + pg).abs() * spec.pow_gamma, (db + pg).abs() * spec.pow_gamma
    else:
        p_up, p_down = torch.zeros_like(ones), torch.zeros_like(ones)
    return s_up, s_down, p_up, p_down


def _step_torch(code: int, x, up: bool, s, p, spec: AnalogSpec):
    """Step of one pulse at position ``x`` (module docstring), torch; mirrors :func:`_step_nb`."""
    if code == 1:
        return s
    if code in (2, 3):
        w = 2.0 * x - 1.0
        return s * (1.0 - p * w) if up else s * (1.0 + p * w)
    if code == 4:
        z = spec.es_a * (2.0 * x - 1.0) + spec.es_b
        if up:
            return s * torch.clamp_min(1.0 - spec.es_A_up * torch.exp(spec.es_gamma_up * z), 0.0)
        return s * torch.clamp_min(1.0 - spec.es_A_down * torch.exp(-spec.es_gamma_down * z), 0.0)
    if code == 5:
        return s * torch.pow(1.0 - x, p) if up else s * torch.pow(x, p)
    raise ValueError(f"device model code {code} has no pulse step")


def pulse_counts_torch(d: torch.Tensor, spec: AnalogSpec, seed: int, step: int, tid: int) -> torch.Tensor:
    """Pulses per device for requested changes ``d`` (``x`` units): stochastically rounded
    ``|d| / dw_min``, capped at ``max_pulses`` (int64)."""
    q = d.abs() / spec.dw_min
    n = torch.floor(q)
    frac = q - n
    u = rng.uniform_u24(seed, step, tid, torch.as_tensor(rng.element_index(tuple(d.shape)))).to(torch.float64)
    n = n + (u < frac * 16777216.0).to(torch.float64)
    return n.clamp_max(float(spec.max_pulses)).to(torch.int64)


def _check_index_range(spec: AnalogSpec, numel: int) -> None:
    if spec.dw_min_std > 0 and spec.max_pulses * numel >= 2 ** 31:
        raise ValueError(f"max_pulses={spec.max_pulses} x {numel} devices >= 2**31 cycle-to-cycle draws per update; "
                         "allowed: max_pulses * array size < 2**31 (lower AnalogSpec.max_pulses)")


def pulse_update_torch(g: torch.Tensor, d: torch.Tensor, params, spec: AnalogSpec, g_lo: float, seed: int,
                       step: int, k: int, side: int) -> torch.Tensor:
    """New conductances after pulsing devices ``g`` (``[g_lo, 1]``) toward requested changes ``d``
    (``g`` units) with the pulsed model of ``spec``; array ``k``, side ``side``, rng ``step``.
    Stuck devices are not handled here (:func:`keep_stuck`)."""
    code = MODEL_CODES[spec.device_model]
    rr = 1.0 - g_lo
    _check_index_range(spec, g.numel())
    n = pulse_counts_torch(d / rr, spec, seed, step, _tid(PULSE, k, side))
    s_up, s_down, p_up, p_down = params
    up = d > 0
    out = g.clone().reshape(-1)
    n, up = n.reshape(-1), up.reshape(-1)
    s_up, s_down, p_up, p_down = (t.reshape(-1) for t in (s_up, s_down, p_up, p_down))
    numel = out.numel()
    elem = torch.arange(numel, dtype=torch.int64)
    tid_c = _tid(C2C, k, side)
    for pulse in range(int(n.max()) if numel else 0):
        for direction in (True, False):
            act = (n > pulse) & (up if direction else ~up)
            if not bool(act.any()):
                continue
            gi = out[act]
            x = (gi - g_lo) / rr
            st = _step_torch(code, x, direction, (s_up if direction else s_down)[act],
                             (p_up if direction else p_down)[act], spec)
            if spec.dw_min_std > 0:
                z = rng.normal_f64(seed, step, tid_c, pulse * numel + elem[act])
                st = st * (1.0 + spec.dw_min_std * z)
            gi = gi + rr * st if direction else gi - rr * st
            out[act] = gi.clamp(g_lo, 1.0)
    return out.reshape(g.shape)


@numba.njit(cache=True)
def _step_nb(code, x, up, s, p, es_a, es_b, a_up, a_down, eg_up, eg_down):
    """numba twin of :func:`_step_torch`."""
    if code == 1:
        return s
    if code == 2 or code == 3:
        w = 2.0 * x - 1.0
        return s * (1.0 - p * w) if up else s * (1.0 + p * w)
    if code == 4:
        z = es_a * (2.0 * x - 1.0) + es_b
        if up:
            return s * max(1.0 - a_up * math.exp(eg_up * z), 0.0)
        return s * max(1.0 - a_down * math.exp(-eg_down * z), 0.0)
    return s * (1.0 - x) ** p if up else s * x ** p


@numba.njit(cache=True)
def _pulse_nb(g, d, s_up, s_down, p_up, p_down, code, g_lo, dw_min, max_pulses, std, es_a, es_b, a_up, a_down,
              eg_up, eg_down, seed, step, tid_sr, tid_c2c):
    """Elementwise pulse update of flat ``g`` (see :func:`pulse_update_torch`)."""
    rr = 1.0 - g_lo
    numel = g.shape[0]
    out = g.copy()
    for e in range(numel):
        q = abs(d[e] / rr) / dw_min
        n = math.floor(q)
        frac = q - n
        if (_hash_nb(seed, step, tid_sr, e) >> 8) < frac * 16777216.0:
            n += 1.0
        n = min(n, float(max_pulses))
        up = d[e] > 0
        v = out[e]
        for pulse in range(int(n)):
            x = (v - g_lo) / rr
            if up:
                st = _step_nb(code, x, True, s_up[e], p_up[e], es_a, es_b, a_up, a_down, eg_up, eg_down)
            else:
                st = _step_nb(code, x, False, s_down[e], p_down[e], es_a, es_b, a_up, a_down, eg_up, eg_down)
            if std > 0.0:
                st = st * (1.0 + std * _normal_nb(seed, step, tid_c2c, pulse * numel + e))
            v = v + rr * st if up else v - rr * st
            v = min(max(v, g_lo), 1.0)
        out[e] = v
    return out


def pulse_update_numba(g: torch.Tensor, d: torch.Tensor, params, spec: AnalogSpec, g_lo: float, seed: int,
                       step: int, k: int, side: int) -> torch.Tensor:
    """numba path of :func:`pulse_update_torch` (same draws, same result within float64 rounding)."""
    _check_index_range(spec, g.numel())
    flat = [np.ascontiguousarray(t.detach().reshape(-1).numpy()) for t in (g, d, *params)]
    out = _pulse_nb(*flat, MODEL_CODES[spec.device_model], g_lo, spec.dw_min, spec.max_pulses, spec.dw_min_std,
                    spec.es_a, spec.es_b, spec.es_A_up, spec.es_A_down, spec.es_gamma_up, spec.es_gamma_down,
                    np.int64(seed), np.int64(step), np.int64(_tid(PULSE, k, side)), np.int64(_tid(C2C, k, side)))
    return torch.from_numpy(out).reshape(g.shape)


PULSE_UPDATES = {"torch": pulse_update_torch, "numba": pulse_update_numba}


def response_curve(spec: AnalogSpec, n_pulses: int, *, g_lo: float = 0.0, seed: int = 0, n_devices: int = 1,
                   backend: str = "torch") -> np.ndarray:
    """Conductance of ``n_devices`` devices (array 0, side 0) from ``g_lo`` under ``n_pulses`` single up
    pulses, then ``n_pulses`` single down pulses: ``(2 n_pulses + 1, n_devices)`` (a device's
    pulse response, the plot aihwkit users look at; one update of one pulse each)."""
    if spec.device_model == "ideal":
        raise ValueError("response_curve needs a pulsed device_model; 'ideal' has no pulses")
    shape = (1, n_devices)
    params = device_params(spec, seed, 0, 0, shape)
    g = torch.full(shape, g_lo, dtype=torch.float64)
    one = spec.dw_min * (1.0 - g_lo)   # exactly one pulse requested
    out = [g.clone()]
    for t in range(2 * n_pulses):
        d = torch.full(shape, one if t < n_pulses else -one, dtype=torch.float64)
        g = PULSE_UPDATES[backend](g, d, params, spec, g_lo, seed, t, 0, 0)
        out.append(g.clone())
    return torch.cat(out).numpy()

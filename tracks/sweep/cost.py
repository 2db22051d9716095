"""Estimated energy, latency and weight memory of one inference (a free phase of ``n_steps`` sweeps, batch 1)
of a model on the chip a :class:`quant.spec.HardwareSpec` describes.

**Digital specs** (fp32, or integer: ``spec.is_integer``): the operation counts of
:func:`hwsim.opcount.count_inference` priced with :mod:`quant.energy` (Horowitz, ISSCC 2014, 45 nm;
memory at ``memory_level``). Latency: the MACs run on ``mac_units`` parallel multiply-accumulate units
at ``clock_hz``: ``ceil(MACs / mac_units) / clock_hz``. Weight memory:
:func:`hwsim.opcount.weight_memory` ``inference_bytes``.

**Analog specs** (``spec.analog`` set; :mod:`hwsim.analog`): per sweep every crossbar array does its reads
(:meth:`hwsim.analog.Array.reads`: forward, and transposed for a coupling between state nodes), as the
simulator does. One read of an ``(n_post, n_pre)`` array driven from ``n_in`` lines and sensed on ``n_out``
lines costs

* ``n_in`` DAC conversions at ``dac_fom_fj * 2**dac_bits`` fJ and ``n_out`` ADC conversions at
  ``adc_fom_fj * 2**adc_bits`` fJ (the Walden figure of merit, energy per conversion step: R. H. Walden,
  "Analog-to-digital converter survey and analysis", IEEE JSAC 17(4), 1999; an ideal converter
  (``None`` bits) costs nothing);
* the array's devices: ``V_read**2 * G * t_read`` per device and read, with ``G`` the programmed
  conductances of the chip (``g+`` and ``g-`` of every weight and bias; from the simulated chip, so
  noise and drift are included);
* the digital periphery: per state unit and sweep, the adds of its reads and the clamp (two compares)
  at the state width (:func:`quant.energy.op_energy_pj`).

Latency: the update groups of a sweep (``net.schedule()``) run one after the other, the reads of one
group in parallel; one read takes ``t_read_ns`` plus a SAR conversion of ``adc_bits`` cycles at
``adc_clock_hz`` (one ADC per column). Weight memory: the weights at the weight format's
``storage_bits`` (what the conductance pairs must resolve), plus the device count.

The device and converter constants (:class:`CostModel` defaults) are **assumed design parameters, not
measurements**: ``adc_fom_fj = dac_fom_fj = 10`` fJ/step is of the order of the moderate-speed
converters in B. Murmann's ADC performance survey (not checked against it here); ``v_read = 0.2`` V and
``t_read_ns = 10`` are typical of PCM/RRAM read schemes; ``mac_units = 256``, ``clock_hz = 1e9`` and
``adc_clock_hz = 1e9`` are round numbers. Set them (``[cost]`` in a sweep config) for your technology;
they are part of every record's inputs.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any

from quant import energy as qenergy
from quant.spec import HardwareSpec


@dataclasses.dataclass(frozen=True)
class CostModel:
    """Constants of the energy and latency estimate (see the module docstring; all assumed)."""

    memory_level: str = "sram_8kb"
    mac_units: int = 256
    clock_hz: float = 1e9
    adc_fom_fj: float = 10.0
    dac_fom_fj: float = 10.0
    v_read: float = 0.2
    t_read_ns: float = 10.0
    adc_clock_hz: float = 1e9

    def __post_init__(self):
        if self.memory_level not in qenergy.MEMORY_LEVELS:
            raise ValueError(f"cost.memory_level={self.memory_level!r} is invalid; allowed: {qenergy.MEMORY_LEVELS}")
        if not isinstance(self.mac_units, int) or isinstance(self.mac_units, bool) or self.mac_units < 1:
            raise ValueError(f"cost.mac_units={self.mac_units!r} is invalid; allowed: an int >= 1")
        for name in ("clock_hz", "adc_fom_fj", "dac_fom_fj", "v_read", "t_read_ns", "adc_clock_hz"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
                raise ValueError(f"cost.{name}={v!r} is invalid; allowed: a finite number > 0")

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> "CostModel":
        d = dict(d or {})
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(d) - set(names))
        if unknown:
            raise ValueError(f"cost: unknown keys {unknown}; allowed: {names}")
        return cls(**d)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def digital_cost(net, spec: HardwareSpec, n_steps: int, cm: CostModel) -> dict[str, Any]:
    """``{energy_pj, latency_ns, weight_bytes, macs}`` of one inference on a digital chip."""
    from hwsim.opcount import count_inference, weight_memory

    rep = count_inference(net, spec, n_steps=n_steps, batch_size=1)
    macs = int(rep.macs)
    return {"energy_pj": float(rep.energy_pj(cm.memory_level)),
            "latency_ns": math.ceil(macs / cm.mac_units) / cm.clock_hz * 1e9,
            "weight_bytes": int(weight_memory(net, spec)["inference_bytes"]), "macs": macs}


def analog_cost(chip, spec: HardwareSpec, n_steps: int, cm: CostModel) -> dict[str, Any]:
    """``{energy_pj, latency_ns, weight_bytes, devices, macs}`` of one inference on the programmed
    :class:`hwsim.analog.AnalogCrossbarMLP` ``chip`` (see the module docstring)."""
    a = spec.analog
    e_adc = 0.0 if a.adc_bits is None else cm.adc_fom_fj * 2.0 ** a.adc_bits * 1e-3  # pJ
    e_dac = 0.0 if a.dac_bits is None else cm.dac_fom_fj * 2.0 ** a.dac_bits * 1e-3
    g_max_s = a.g_max_uS * 1e-6
    state_bits = spec.state.bits if spec.state is not None else 32
    e_add = qenergy.op_energy_pj("add", "int" if spec.state is not None else "fp", state_bits)
    sweep_pj, macs, devices, reads_into = 0.0, 0, 0, {}
    for k, arr in enumerate(chip.arrays):
        n_post, n_aug = chip.array_shape(k)
        n_pre = n_aug - (1 if arr.has_bias else 0)
        g_sum = float(chip.gp[k].sum() + chip.gm[k].sum())          # units of g_max
        cell_pj = cm.v_read ** 2 * g_sum * g_max_s * cm.t_read_ns * 1e-9 * 1e12
        devices += 2 * int(chip.gp[k].numel())
        for post, src, transpose in arr.reads():
            n_in, n_out = (n_post, n_pre) if transpose else (n_pre, n_post)
            sweep_pj += n_in * e_dac + n_out * e_adc + cell_pj
            macs += n_in * n_out
            reads_into[post] = reads_into.get(post, 0) + 1
    sizes = chip.node_sizes
    for node, n in reads_into.items():
        if node >= 0:
            sweep_pj += sizes[node] * ((n - 1) + 2) * e_add   # sum of the reads, clamp to [0, 1]
    groups = len(chip.net.schedule())
    t_read_ns = cm.t_read_ns + (0.0 if a.adc_bits is None else a.adc_bits / cm.adc_clock_hz * 1e9)
    n_params = sum(int(g.numel()) for g in chip.gp)
    return {"energy_pj": n_steps * sweep_pj, "latency_ns": n_steps * groups * t_read_ns,
            "weight_bytes": math.ceil(n_params * spec.weights.storage_bits / 8), "devices": devices,
            "macs": n_steps * macs}

"""Synaptic operations of the spiking port, counted from the actual spikes, vs the float network's MACs.

Spiking network (per inference, from a :class:`~hwsim.spiking.config.SpikeRecord`)::

    synops = sum_i count_i . fanout_i  (+ input spikes x n_0 for Poisson input)
    fanout_i = n_{i+1} (feedforward, if i < L-1) + n_{i-1} (feedback, if i > 0)

Each spike triggers one accumulate ``v_post += w`` per outgoing synapse. With constant-current input
the drive ``W_0 x`` is computed once (``n_in * n_0`` MACs, as in the float network) and counted as
``input_macs``, not as synops.

Float network (``n_sweeps`` relaxation sweeps of :class:`models.eqprop_mlp.EqPropMLP`)::

    macs = n_in n_0                                 (drive, once per phase)
         + n_sweeps * sum_{i>=1} 2 n_i n_{i-1}      (W_i s_{i-1} and W_i^T s_i every sweep)

Energy: one synop = one add (:func:`quant.energy.op_energy_pj` ``("add", dtype, bits)``), one MAC
= one multiply plus one add, from the Horowitz ISSCC 2014 table in :mod:`quant.energy`; memory
traffic is not included (same weights are read by both).

>>> import numpy as np
>>> from hwsim.spiking.config import SpikeRecord
>>> rec = SpikeRecord(counts=[np.array([[2, 0, 1]]), np.array([[3, 1]])], v_final=None,
...                   input_spikes=np.array([0]), n_steps=4)
>>> synops_per_sample(rec, (5, 3, 2)).tolist()     # (2+0+1)*2 + (3+1)*3
[18]
>>> float_macs((5, 3, 2), n_sweeps=10)             # 5*3 + 10*2*3*2
135
"""
from __future__ import annotations

import numpy as np

from quant.energy import SOURCE, op_energy_pj

from .config import SpikeRecord

__all__ = ["fanouts", "synops_per_sample", "float_macs", "energy_estimate"]


def fanouts(sizes) -> list[int]:
    """Outgoing synapses per neuron of layer ``i`` (``sizes`` = (n_in, n_0, ..., n_out))."""
    n = [int(s) for s in sizes[1:]]
    return [(n[i + 1] if i + 1 < len(n) else 0) + (n[i - 1] if i > 0 else 0) for i in range(len(n))]


def synops_per_sample(rec: SpikeRecord, sizes) -> np.ndarray:
    """Synaptic operations of each sample ``(B,)`` (int64), input spikes included."""
    if len(rec.counts) != len(sizes) - 1:
        raise ValueError(f"record has {len(rec.counts)} layers but sizes={tuple(sizes)} has {len(sizes) - 1}")
    fo = fanouts(sizes)
    total = np.asarray(rec.input_spikes, dtype=np.int64) * int(sizes[1])
    for c, f in zip(rec.counts, fo):
        total = total + np.asarray(c, dtype=np.int64).sum(axis=1) * f
    return total


def float_macs(sizes, n_sweeps: int) -> int:
    """Multiply-accumulates of one float free phase of ``n_sweeps`` sweeps (drive computed once)."""
    if n_sweeps < 0:
        raise ValueError(f"n_sweeps={n_sweeps} must be >= 0")
    n = [int(s) for s in sizes]
    return n[0] * n[1] + n_sweeps * sum(2 * n[i] * n[i - 1] for i in range(2, len(n)))


def energy_estimate(synops: float, macs: float, input_macs: float = 0.0, dtype: str = "fp",
                    bits: int = 32) -> dict[str, float]:
    """Energy (pJ) of ``synops`` accumulates (+ ``input_macs``) vs ``macs`` MACs, same number format.

    Returns ``{"snn_pj", "float_pj", "ratio", "pj_per_synop", "pj_per_mac", "source"}``; ratio =
    snn / float.

    >>> e = energy_estimate(1000, 100, dtype="fp", bits=32)
    >>> e["pj_per_synop"], e["pj_per_mac"], round(e["ratio"], 4)
    (0.9, 4.6, 1.9565)
    """
    add = op_energy_pj("add", dtype, bits)
    mac = op_energy_pj("mult", dtype, bits) + add
    snn = synops * add + input_macs * mac
    flt = macs * mac
    return {"snn_pj": float(snn), "float_pj": float(flt), "ratio": float(snn / flt) if flt else float("nan"),
            "pj_per_synop": add, "pj_per_mac": round(mac, 12), "source": SOURCE}

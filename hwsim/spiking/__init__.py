"""Rate-coded spiking ports of a trained EqPropMLP (snntorch and Brian2) and synaptic-op counts.

* :mod:`.config`: :class:`SpikingConfig` (time step, steps, tau, threshold, input coding, seed),
  :class:`SpikingParams` (threshold-scaled weights), :class:`SpikeRecord` (counts, read-out).
* :mod:`.snntorch_port`: :func:`run_snntorch` (the discrete-time definition, snntorch ``Leaky``).
* :mod:`.brian2_port`: :func:`run_brian2` (same equations, order and weights in Brian2).
* :mod:`.synops`: synaptic operations from spikes vs float MACs, energy estimate.
* :mod:`.conv`: the same for a ``ConvEqProp`` (conv synapses, gated max pooling, routed conv feedback),
  snntorch and Brian2; NIR export in :func:`exports.nir_export.to_nir_conv`.

Brian2 is imported lazily (only by :func:`run_brian2`).
"""
from .config import SpikeRecord, SpikingConfig, SpikingParams, poisson_spikes
from .synops import energy_estimate, float_macs, synops_per_sample

__all__ = ["SpikingConfig", "SpikingParams", "SpikeRecord", "poisson_spikes", "synops_per_sample",
           "float_macs", "energy_estimate"]

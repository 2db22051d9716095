"""Rate-coded spiking port of an :class:`EqPropMLP` built from snntorch neurons.

The discrete-time network (the definition both ports follow; layers ``i = 0 .. L-1``, input
``x``, spikes ``z_i(t) in {0, 1}``, membrane ``m_i(t)``, threshold ``theta``, ``beta = 1`` for
integrate-and-fire or ``1 - dt/tau_mem`` for LIF; all weights already multiplied by ``theta``)::

    I_0(t) = W_0 u(t) + b_0 + W_1^T z_1(t-1)                    u(t) = x (current) or p(t) (Poisson)
    I_i(t) = W_i z_{i-1}(t-1) + b_i + W_{i+1}^T z_{i+1}(t-1)    (no feedback term for the output)
    m_i(t) = beta m_i(t-1) + I_i(t) - theta z_i(t-1)            (reset by subtraction)
    z_i(t) = H(m_i(t) - theta)                                  (strict >, at most one spike/step)

with ``z(-1) = 0``, ``m(-1) = 0`` and ``t = 0 .. T-1``. This is exactly snntorch's ``Leaky``
neuron with ``reset_mechanism="subtract"`` and its default ``reset_delay=True`` (its reset term
``theta H(m(t-1) - theta)`` is the previous step's spike). snntorch has no recurrent/feedback layer
type, so the feedback ``W_{i+1}^T z_{i+1}(t-1)`` is wired by this module's own time loop around the
``Leaky`` neurons and ``nn.Linear`` synapses (a loop every snntorch user writes for recurrence).

Why the rate approximates the float state: for IF, summing the membrane equation over the window
gives ``theta * count_i + m_i(T-1) = sum_t I_i(t)``; a neuron fires at most once per step, and the
surplus charge is kept (not discarded) by the subtractive reset, so
``count_i / T ~= clamp(mean_t I_i(t) / theta, 0, 1) = rho(W_i r_{i-1} + b_i + W_{i+1}^T r_{i+1})``,
the fixed-point equation of the float network with rates ``r = count / T`` in place of states.

Feedback: ``"spike"`` (default) feeds the raw spikes of the layer above back, which is all Brian2's
``on_pre: v += w`` synapses can do, and the IF neuron integrates (averages) them anyway;
``"rate"`` feeds ``W_{i+1}^T count_{i+1}(t-1)/t`` (a running mean), kept as an option for the
measurement in Track 42 (it lags because early rates are transients).

>>> import torch
>>> from models.eqprop_mlp import EqPropConfig, EqPropMLP
>>> net = EqPropMLP(EqPropConfig(sizes=(6, 5, 3)), seed=0)
>>> x = torch.rand(4, 6, generator=torch.Generator().manual_seed(0))
>>> rec = run_snntorch(SpikingParams.from_model(net, SpikingConfig(n_steps=16)), x)
>>> [c.shape for c in rec.counts], bool((rec.counts[0] <= 16).all())
([(4, 5), (4, 3)], True)
"""
from __future__ import annotations

import logging

import numpy as np
import snntorch as snn
import torch
from torch import nn
from models.progress import progress as progress_bar

from .config import SpikeRecord, SpikingConfig, SpikingParams, check_input, poisson_spikes

log = logging.getLogger("eqprop_hwsim.hwsim.spiking")

__all__ = ["SnnTorchEqProp", "run_snntorch"]


def _forget_instance(neuron) -> None:
    """snntorch appends every neuron to the class-level ``SpikingNeuron.instances`` (used only with
    ``init_hidden=True``, which this port does not use); drop ours so repeated runs do not leak."""
    inst = snn.SpikingNeuron.instances
    for k in range(len(inst) - 1, -1, -1):
        if inst[k] is neuron:
            del inst[k]
            break


class SnnTorchEqProp(nn.Module):
    """The spiking network as snntorch ``Leaky`` neurons plus ``nn.Linear`` synapses (float64).

    ``ff[i]`` is ``W_i`` with bias ``b_i``, ``fb[i]`` (for ``i < L-1``) is ``W_{i+1}^T`` without
    bias, ``neurons[i]`` a ``snn.Leaky(beta, threshold, reset_mechanism="subtract")``.
    """

    def __init__(self, params: SpikingParams):
        super().__init__()
        cfg = params.config
        self.params = params
        self.config = cfg
        self.ff = nn.ModuleList()
        self.fb = nn.ModuleList()
        self.neurons = nn.ModuleList()
        with torch.no_grad():
            for i, (w, b) in enumerate(zip(params.weights, params.biases)):
                lin = nn.Linear(w.shape[1], w.shape[0], dtype=torch.float64)
                lin.weight.copy_(torch.from_numpy(w))
                lin.bias.copy_(torch.from_numpy(b))
                self.ff.append(lin)
                # reset_delay=True (default): m(t) = beta m(t-1) + I(t) - theta H(m(t-1) - theta)
                neuron = snn.Leaky(beta=cfg.beta, threshold=cfg.v_threshold, reset_mechanism="subtract",
                                   init_hidden=False).to(torch.float64)
                neuron.beta.fill_(cfg.beta)  # snntorch stores float32 buffers: restore the float64 values
                neuron.threshold.fill_(cfg.v_threshold)
                _forget_instance(neuron)
                self.neurons.append(neuron)
            for i in range(len(params.weights) - 1):
                w_up = params.weights[i + 1]  # (n_{i+1}, n_i)
                lin = nn.Linear(w_up.shape[0], w_up.shape[1], bias=False, dtype=torch.float64)
                lin.weight.copy_(torch.from_numpy(np.ascontiguousarray(w_up.T)))
                self.fb.append(lin)
        self.requires_grad_(False)

    @torch.no_grad()
    def forward(self, x, sample_ids=None, progress: bool = False) -> SpikeRecord:
        """Run ``T = config.n_steps`` steps on a batch ``x`` (B, n_in) in [0, 1].

        Args:
            x: images (numpy or torch), intensities in [0, 1].
            sample_ids: global index of each sample (Poisson train counters); default ``arange(B)``.
            progress: progress over time steps (:func:`models.progress.progress`).
        """
        cfg = self.config
        xn = check_input(x, self.params.sizes[0])
        bsz, n_layers = xn.shape[0], len(self.ff)
        ids = np.arange(bsz) if sample_ids is None else np.asarray(sample_ids, dtype=np.int64)
        if ids.shape != (bsz,):
            raise ValueError(f"sample_ids has shape {ids.shape}; expected ({bsz},)")
        xt = torch.from_numpy(xn)
        zeros = [torch.zeros(bsz, lin.out_features, dtype=torch.float64) for lin in self.ff]
        z = [t.clone() for t in zeros]  # z_i(t-1)
        mem = [t.clone() for t in zeros]  # m_i(t-1)
        counts = [t.clone() for t in zeros]
        n_in_spikes = np.zeros(bsz, dtype=np.int64)
        drive = self.ff[0](xt) if cfg.input == "current" else None
        for t in progress_bar(range(cfg.n_steps), enabled=progress, desc="snntorch"):
            if cfg.input == "poisson":
                p = poisson_spikes(xn, t, cfg.seed, ids)
                n_in_spikes += p.sum(axis=1)
                drive = self.ff[0](torch.from_numpy(p.astype(np.float64)))
            if cfg.feedback == "rate":
                up = [c / t for c in counts] if t > 0 else zeros
            else:
                up = z
            currents = []
            for i in range(n_layers):
                cur = drive if i == 0 else self.ff[i](z[i - 1])
                if i + 1 < n_layers and cfg.feedback != "none":
                    cur = cur + self.fb[i](up[i + 1])
                currents.append(cur)
            for i in range(n_layers):
                spk, mem[i] = self.neurons[i](currents[i], mem[i])
                z[i] = spk.to(torch.float64)  # snntorch's Heaviside returns float32 spikes
                counts[i] += z[i]
        return SpikeRecord(counts=[c.round().to(torch.int64).numpy() for c in counts],
                           v_final=[m.numpy().copy() for m in mem], input_spikes=n_in_spikes,
                           n_steps=cfg.n_steps)


def run_snntorch(params: SpikingParams, x, *, sample_ids=None, batch_size: int = 1000,
                 progress: bool = False) -> SpikeRecord:
    """Run the snntorch port on ``x`` (B, n_in) in batches; returns the concatenated record."""
    if not isinstance(params, SpikingParams):
        raise ValueError(f"params must be SpikingParams (use SpikingParams.from_model(net, cfg)), got {type(params).__name__}")
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size} must be >= 1")
    xn = check_input(x, params.sizes[0])
    ids = np.arange(xn.shape[0]) if sample_ids is None else np.asarray(sample_ids, dtype=np.int64)
    model = SnnTorchEqProp(params)
    recs = []
    for s in progress_bar(range(0, xn.shape[0], batch_size), enabled=progress, desc="snntorch batches"):
        recs.append(model(xn[s:s + batch_size], sample_ids=ids[s:s + batch_size]))
    return concat_records(recs)


def concat_records(recs: list[SpikeRecord]) -> SpikeRecord:
    """Concatenate records of consecutive batches along the batch axis."""
    if not recs:
        raise ValueError("no records to concatenate (empty input?)")
    n_layers = len(recs[0].counts)
    return SpikeRecord(counts=[np.concatenate([r.counts[i] for r in recs]) for i in range(n_layers)],
                       v_final=[np.concatenate([r.v_final[i] for r in recs]) for i in range(n_layers)],
                       input_spikes=np.concatenate([r.input_spikes for r in recs]),
                       n_steps=recs[0].n_steps)

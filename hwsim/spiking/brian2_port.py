"""The same spiking network in Brian2: ``NeuronGroup`` per layer, ``Synapses`` for W and W^T.

Equations (dimensionless membrane ``v``, forward Euler, ``dt = config.dt_s``)::

    IF : dv/dt = (b + I_in) / dt_step                  -> v <- v + b + I_in
    LIF: dv/dt = -v / tau_mem + (b + I_in) / dt_step   -> v <- (1 - dt/tau_mem) v + b + I_in
    threshold: v > v_th        reset: v -= v_th
    synapses (feedforward W_i, feedback W_{i+1}^T, Poisson input W_0): on_pre: v_post += w
    current input: I_in_post = w * x_pre (summed) over the W_0 synapses from a group holding x

Scheduling. Brian2's default order per step is groups (state update) -> thresholds -> synapses
-> resets, which delivers a spike's charge *after* the leak of the next step. To follow the
discrete-time definition of :mod:`hwsim.spiking.snntorch_port`
(``m(t) = beta m(t-1) + I(t) - theta z(t-1)``, ``z(t) = H(m(t) - theta)``) the network runs with
``schedule = ["start", "thresholds", "groups", "synapses", "resets", "end"]``: at Brian step ``k``
the threshold test on ``v(k-1)`` emits the spikes snntorch emitted at step ``k-1``, the group update
applies leak and constant currents, the synapses deliver those spikes (and the Poisson input spikes
of step ``k``, generated at time ``k dt``), and the reset subtracts ``v_th``. Hence
``v_brian(k) = m_snntorch(k)`` and a snntorch spike at ``t`` is a Brian2 spike at ``t + 1``: the
network runs ``T + 1`` steps and counts the spikes of steps ``1 .. T`` (step 0 cannot spike since
``v(-1) = 0 < v_th``). The final membrane reported is ``v(T-1)`` read from a state monitor.

Samples are simulated in independent networks (batching block-diagonal copies would need
``B x n_0 x n_in`` synapses). Use ``codegen_target="numpy"`` (default) for small runs; ``"cython"``
compiles for 30-45 s once, then runs faster.
"""
from __future__ import annotations

import logging

import numpy as np
from models.progress import progress as progress_bar

from .config import SpikeRecord, SpikingParams, check_input, poisson_spikes

log = logging.getLogger("eqprop_hwsim.hwsim.spiking")

__all__ = ["BRIAN2_SCHEDULE", "run_brian2", "build_brian2_network"]

BRIAN2_SCHEDULE = ["start", "thresholds", "groups", "synapses", "resets", "end"]
"""Brian2 slot order making its update sequence identical to the snntorch port's (see module doc)."""


def _connect_dense(b2, src, tgt, w: np.ndarray, model: str, on_pre: str | None, name: str):
    """All-to-all ``Synapses`` with per-synapse ``w = W[post, pre]`` for ``W`` of shape (n_post, n_pre)."""
    n_post, n_pre = w.shape
    kw = {"on_pre": on_pre} if on_pre else {}
    syn = b2.Synapses(src, tgt, model=model, name=name, dt=src.clock.dt, **kw)
    syn.connect(i=np.repeat(np.arange(n_pre), n_post), j=np.tile(np.arange(n_post), n_pre))
    syn.w[:] = w[np.asarray(syn.j[:]), np.asarray(syn.i[:])]
    return syn


def build_brian2_network(params: SpikingParams, x: np.ndarray, sample_id: int = 0):
    """One Brian2 ``Network`` for a single sample ``x`` (n_in,); returns ``(net, groups, monitors, n_in_spikes)``."""
    import brian2 as b2

    cfg = params.config
    dt = cfg.dt_s * b2.second
    ns = {"v_th": cfg.v_threshold, "dt_step": dt}
    if cfg.tau_mem_s is None:
        eqs = "dv/dt = (b + I_in) / dt_step : 1\nb : 1\nI_in : 1"
    else:
        ns["tau_mem"] = cfg.tau_mem_s * b2.second
        eqs = "dv/dt = -v / tau_mem + (b + I_in) / dt_step : 1\nb : 1\nI_in : 1"
    n_layers = len(params.weights)
    groups = []
    for i, b in enumerate(params.biases):
        g = b2.NeuronGroup(len(b), eqs, threshold="v > v_th", reset="v -= v_th", method="euler",
                           dt=dt, namespace=ns, name=f"layer{i}")
        g.b[:] = b
        groups.append(g)
    objs: list = list(groups)
    n_in = params.sizes[0]
    n_in_spikes = 0
    if cfg.input == "current":
        # I_in_post is a "summed" variable: the summed-variable updater runs in the "groups" slot
        # just before the layer-0 state update, so W_0 x enters from step 0 on.
        inp = b2.NeuronGroup(n_in, "x : 1", dt=dt, name="input")
        inp.x[:] = x
        objs += [inp, _connect_dense(b2, inp, groups[0], params.weights[0],
                                     "w : 1\nI_in_post = w * x_pre : 1 (summed)", None, "syn_in")]
    else:
        idx, times = [], []
        for t in range(cfg.n_steps):  # snntorch step t <-> Brian step t (delivered in the same step)
            p = np.flatnonzero(poisson_spikes(x[None, :], t, cfg.seed, [sample_id])[0])
            idx.append(p)
            times.append(np.full(p.size, t))
        idx_a, t_a = np.concatenate(idx), np.concatenate(times)
        n_in_spikes = int(idx_a.size)
        inp = b2.SpikeGeneratorGroup(n_in, idx_a, t_a * dt, dt=dt, name="input")
        objs += [inp, _connect_dense(b2, inp, groups[0], params.weights[0], "w : 1", "v_post += w", "syn_in")]
    for i in range(1, n_layers):
        objs.append(_connect_dense(b2, groups[i - 1], groups[i], params.weights[i], "w : 1", "v_post += w", f"ff{i}"))
        if cfg.feedback == "none":
            continue
        objs.append(_connect_dense(b2, groups[i], groups[i - 1], np.ascontiguousarray(params.weights[i].T),
                                   "w : 1", "v_post += w", f"fb{i - 1}"))
    monitors = [b2.SpikeMonitor(g, record=True, name=f"spikes{i}") for i, g in enumerate(groups)]
    vmon = [b2.StateMonitor(g, "v", record=True, when="end", name=f"v{i}") for i, g in enumerate(groups)]
    net = b2.Network(*objs, *monitors, *vmon)
    net.schedule = list(BRIAN2_SCHEDULE)
    return net, groups, (monitors, vmon), n_in_spikes


def run_brian2(params: SpikingParams, x, *, sample_ids=None, codegen_target: str = "numpy",
               progress: bool = False) -> SpikeRecord:
    """Simulate each sample of ``x`` (B, n_in) in Brian2; returns counts as the snntorch port does.

    Args:
        params: converted weights and config (same object as given to the snntorch port).
        x: images in [0, 1].
        sample_ids: global sample indices (Poisson counters); default ``arange(B)``.
        codegen_target: Brian2 ``prefs.codegen.target`` (``"numpy"`` or ``"cython"``).
        progress: progress over samples (:func:`models.progress.progress`).
    """
    import brian2 as b2

    if not isinstance(params, SpikingParams):
        raise ValueError(f"params must be SpikingParams (use SpikingParams.from_model(net, cfg)), got {type(params).__name__}")
    if codegen_target not in ("numpy", "cython"):
        raise ValueError(f"codegen_target={codegen_target!r}; allowed: ('numpy', 'cython')")
    if params.config.feedback == "rate":
        raise ValueError("feedback='rate' (running-rate feedback) is implemented in the snntorch port only; "
                         "Brian2 synapses deliver spikes: use feedback='spike' (or 'none')")
    xn = check_input(x, params.sizes[0])
    ids = np.arange(xn.shape[0]) if sample_ids is None else np.asarray(sample_ids, dtype=np.int64)
    if ids.shape != (xn.shape[0],):
        raise ValueError(f"sample_ids has shape {ids.shape}; expected ({xn.shape[0]},)")
    b2.prefs.codegen.target = codegen_target
    cfg = params.config
    T = cfg.n_steps
    counts = [np.zeros((xn.shape[0], len(b)), dtype=np.int64) for b in params.biases]
    v_final = [np.zeros((xn.shape[0], len(b)), dtype=np.float64) for b in params.biases]
    n_in_spikes = np.zeros(xn.shape[0], dtype=np.int64)
    for s in progress_bar(range(xn.shape[0]), enabled=progress, desc="brian2"):
        net, groups, (monitors, vmon), n_in_spikes[s] = build_brian2_network(params, xn[s], int(ids[s]))
        net.run((T + 1) * cfg.dt_s * b2.second, namespace={})
        for i, (m, vm) in enumerate(zip(monitors, vmon)):
            steps = np.round(np.asarray(m.t / (cfg.dt_s * b2.second))).astype(np.int64)
            keep = (steps >= 1) & (steps <= T)
            counts[i][s] = np.bincount(np.asarray(m.i)[keep], minlength=len(params.biases[i]))
            v = np.asarray(vm.v)  # (n_i, T + 1), v(k) after step k
            if v.shape[1] != T + 1:
                raise RuntimeError(f"Brian2 ran {v.shape[1]} steps, expected {T + 1} (dt/duration rounding)")
            v_final[i][s] = v[:, T - 1]
    return SpikeRecord(counts=counts, v_final=v_final, input_spikes=n_in_spikes, n_steps=T)

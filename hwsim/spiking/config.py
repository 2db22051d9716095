"""Configuration of the rate-coded spiking ports (snntorch, Brian2) of an :class:`EqPropMLP`.

Every conversion constant (time step, number of steps, membrane time constant, threshold, input
coding, seed) lives here, in one frozen dataclass; the converters read it and hard-code nothing.

>>> cfg = SpikingConfig(n_steps=32)
>>> cfg.beta
1.0
>>> SpikingConfig.from_dict(cfg.to_dict()) == cfg
True
>>> SpikingConfig(tau_mem_s=10e-3, dt_s=1e-3).beta
0.9
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

RESETS = ("subtract",)
INPUTS = ("current", "poisson")
FEEDBACKS = ("spike", "rate", "none")


@dataclass(frozen=True)
class SpikingConfig:
    """How an EqProp network is run as a spiking network.

    Attributes:
        dt_s: simulation time step in seconds. A state value of 1.0 in the float network is a firing
            rate of one spike per step, i.e. ``1 / dt_s`` Hz.
        n_steps: number of time steps ``T`` per inference (rates are ``count / T``).
        tau_mem_s: membrane time constant in seconds; ``None`` (default) is a pure integrate-and-fire
            neuron (``beta = 1``). Otherwise a leaky neuron with the forward-Euler factor
            ``beta = 1 - dt_s / tau_mem_s`` (requires ``tau_mem_s >= dt_s``).
        v_threshold: firing threshold (dimensionless membrane units). Weights and biases are scaled
            by it, so the rate approximates ``clamp(I, 0, 1)`` whatever its value.
        reset: ``"subtract"`` (reset by subtraction of the threshold, the only mode implemented:
            it keeps the surplus charge, which is what makes the rate a faithful ``clamp``).
        input: ``"current"`` (pixel intensities injected as a constant current through ``W_0``,
            deterministic) or ``"poisson"`` (pixel ``x`` spikes with probability ``x`` per step,
            drawn from the counter-based generator :mod:`quant.rng` so that every simulator sees the
            same spike trains).
        feedback: ``"spike"`` (layer ``i`` receives ``W_{i+1}^T z_{i+1}(t-1)``, the raw spikes,
            implemented in both simulators) or ``"rate"`` (``W_{i+1}^T`` times the running rate
            ``count_{i+1}(t-1) / t``; snntorch port only, kept for the measurement in Track 42) or
            ``"none"`` (feedback synapses dropped: a feedforward network, the ablation showing that
            the spiking network needs ``W_{i+1}^T`` to reach the EqProp fixed point).
        seed: seed of the Poisson input spike trains.
    """

    dt_s: float = 1e-3  # 1 ms steps: state 1.0 <-> 1 kHz
    n_steps: int = 64  # T; Track 42 sweeps 8..128
    tau_mem_s: float | None = None  # None = integrate-and-fire (no leak)
    v_threshold: float = 1.0  # threshold; weights are scaled by it
    reset: str = "subtract"  # only reset by subtraction keeps rate = clamp(I)
    input: str = "current"  # deterministic constant current, or "poisson"
    feedback: str = "spike"  # feedback through spikes (both simulators) or running rates
    seed: int = 0  # Poisson input seed (quant.rng counter-based)

    def __post_init__(self) -> None:
        if not (isinstance(self.dt_s, (int, float)) and math.isfinite(self.dt_s) and self.dt_s > 0):
            raise ValueError(f"SpikingConfig.dt_s={self.dt_s!r} must be a finite number of seconds > 0")
        if isinstance(self.n_steps, bool) or not isinstance(self.n_steps, int) or self.n_steps < 1:
            raise ValueError(f"SpikingConfig.n_steps={self.n_steps!r} must be an int >= 1")
        if self.tau_mem_s is not None:
            if not (isinstance(self.tau_mem_s, (int, float)) and math.isfinite(self.tau_mem_s)
                    and self.tau_mem_s >= self.dt_s):
                raise ValueError(f"SpikingConfig.tau_mem_s={self.tau_mem_s!r} must be None (IF) or a number "
                                 f">= dt_s={self.dt_s} (forward Euler needs beta = 1 - dt/tau in [0, 1))")
        if not (isinstance(self.v_threshold, (int, float)) and math.isfinite(self.v_threshold)
                and self.v_threshold > 0):
            raise ValueError(f"SpikingConfig.v_threshold={self.v_threshold!r} must be a finite number > 0")
        if self.reset not in RESETS:
            raise ValueError(f"SpikingConfig.reset={self.reset!r}; allowed: {RESETS}")
        if self.input not in INPUTS:
            raise ValueError(f"SpikingConfig.input={self.input!r}; allowed: {INPUTS}")
        if self.feedback not in FEEDBACKS:
            raise ValueError(f"SpikingConfig.feedback={self.feedback!r}; allowed: {FEEDBACKS}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"SpikingConfig.seed={self.seed!r} must be an int >= 0")

    @property
    def beta(self) -> float:
        """Membrane decay per step: 1 for IF, ``1 - dt_s / tau_mem_s`` (forward Euler) for LIF."""
        return 1.0 if self.tau_mem_s is None else 1.0 - self.dt_s / self.tau_mem_s

    def replace(self, **changes: Any) -> "SpikingConfig":
        """A copy with ``changes`` applied (validated again)."""
        return SpikingConfig.from_dict({**self.to_dict(), **changes})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "SpikingConfig":
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"SpikingConfig: unknown keys {sorted(unknown)}; valid: {sorted(cls.__dataclass_fields__)}")
        return cls(**d)


# ---------------------------------------------------------------------------------------------
# Simulator-independent pieces shared by the snntorch and Brian2 ports: the converted parameters,
# the Poisson input trains and the spike record with its read-out.

POISSON_TENSOR_ID = 42
"""``tensor_id`` counter of :mod:`quant.rng` for the Poisson input trains (see :func:`poisson_spikes`)."""


@dataclass(frozen=True)
class SpikingParams:
    """Weights of the spiking network, already scaled by the threshold, float64.

    ``weights[i]`` has shape ``(n_i, n_{i-1})`` (feedforward ``W_i``; the feedback into layer
    ``i`` uses ``weights[i + 1].T``), ``biases[i]`` shape ``(n_i,)``. Both are the trained
    ``layers[i].weight`` / ``.bias`` times ``config.v_threshold``, so one unit of the float
    network's pre-activation brings exactly one threshold's worth of charge per step.
    """

    weights: tuple
    biases: tuple
    config: SpikingConfig

    def __post_init__(self) -> None:
        import numpy as np

        ws = tuple(np.ascontiguousarray(w, dtype=np.float64) for w in self.weights)
        bs = tuple(np.ascontiguousarray(b, dtype=np.float64) for b in self.biases)
        if len(ws) == 0 or len(ws) != len(bs):
            raise ValueError(f"SpikingParams: need one bias per weight, got {len(ws)} weights and {len(bs)} biases")
        for i, (w, b) in enumerate(zip(ws, bs)):
            if w.ndim != 2 or b.shape != (w.shape[0],):
                raise ValueError(f"SpikingParams: layer {i} weight {w.shape} / bias {b.shape} must be (n_i, n_prev) / (n_i,)")
            if i > 0 and w.shape[1] != ws[i - 1].shape[0]:
                raise ValueError(f"SpikingParams: layer {i} expects {w.shape[1]} inputs but layer {i - 1} has "
                                 f"{ws[i - 1].shape[0]} neurons")
            if not (np.isfinite(w).all() and np.isfinite(b).all()):
                raise ValueError(f"SpikingParams: layer {i} has non-finite weights or biases")
        if not isinstance(self.config, SpikingConfig):
            raise ValueError(f"SpikingParams.config must be a SpikingConfig, got {type(self.config).__name__}")
        object.__setattr__(self, "weights", ws)
        object.__setattr__(self, "biases", bs)

    @property
    def sizes(self) -> tuple[int, ...]:
        """``(n_input, n_0, ..., n_out)``."""
        return (self.weights[0].shape[1],) + tuple(w.shape[0] for w in self.weights)

    @classmethod
    def from_model(cls, net, config: SpikingConfig) -> "SpikingParams":
        """Convert a trained :class:`models.eqprop_mlp.EqPropMLP` (weights times ``v_threshold``).

        Raises:
            models.engine.UnsupportedError: the model has a term beyond the layered chain (e.g. the
                skip coupling of ``SkipEqPropMLP``): the ports would silently drop it.
        """
        import numpy as np

        check_terms(net)
        g = config.v_threshold
        ws = [lin.weight.detach().cpu().double().numpy() * g for lin in net.layers]
        bs = [lin.bias.detach().cpu().double().numpy() * g for lin in net.layers]
        return cls(tuple(np.asarray(w) for w in ws), tuple(np.asarray(b) for b in bs), config)

    def with_config(self, config: SpikingConfig) -> "SpikingParams":
        """Same trained weights under another config (rescaled if the threshold changed)."""
        r = config.v_threshold / self.config.v_threshold
        return SpikingParams(tuple(w * r for w in self.weights), tuple(b * r for b in self.biases), config)


SPIKING_BACKEND = "spiking ports (snntorch, Brian2)"
SPIKING_TERMS = ("Dense", "Bias")


def check_terms(net) -> None:
    """The ports run the layered chain ``Dense(i, i-1)`` + ``Bias(i)`` of :class:`EqPropMLP` (synapses
    into layer ``i`` and their feedback, a bias current); any other term raises
    :class:`models.engine.UnsupportedError` naming the backend, the term and what is supported."""
    from models.energy import INPUT, Bias, Dense
    from models.engine import UnsupportedError, require_kernels

    terms = getattr(net, "terms", None)
    if terms is None:
        return
    require_kernels(SPIKING_BACKEND, {Dense: "synapses", Bias: "bias current"}, terms)
    chain = [Dense(post=i, pre=i - 1 if i else INPUT, weight=f"layers.{i}.weight") for i in range(len(net.layers))]
    for t in terms:
        if isinstance(t, Dense) and t not in chain:
            raise UnsupportedError(f"backend {SPIKING_BACKEND!r} has no kernel for interaction term {t}; it supports: "
                                   "the layered chain Dense(post=i, pre=i-1) and Bias")


def check_input(x, n_in: int):
    """``x`` as a float64 ``(B, n_in)`` numpy array in [0, 1]; a clear ValueError otherwise."""
    import numpy as np

    try:
        import torch

        if isinstance(x, torch.Tensor):
            x = x.detach().cpu().numpy()
    except ImportError:  # pragma: no cover
        pass
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != n_in:
        raise ValueError(f"input shape {x.shape} does not match the network: expected (B, {n_in})")
    if not np.isfinite(x).all() or x.min(initial=0.0) < 0.0 or x.max(initial=0.0) > 1.0:
        raise ValueError("inputs must be finite intensities in [0, 1] (rates / currents); rescale the data")
    return x


def poisson_spikes(x, t: int, seed: int, sample_ids):
    """Input spikes of step ``t``: pixel ``k`` of sample ``b`` fires iff ``u24 < x[b, k] * 2**24``.

    ``u24 = quant.rng.uniform_u24(seed, t, POISSON_TENSOR_ID, sample_ids[b] * n_in + k)``, so the
    train of a test image depends only on (seed, image index, step), not on batching, and the
    snntorch and Brian2 ports see identical spikes. Returns a bool array ``(B, n_in)``.
    """
    import numpy as np

    from quant.rng import uniform_u24

    x = np.asarray(x, dtype=np.float64)
    n_in = x.shape[1]
    idx = np.asarray(sample_ids, dtype=np.int64)[:, None] * n_in + np.arange(n_in, dtype=np.int64)[None, :]
    u = uniform_u24(seed, t, POISSON_TENSOR_ID, idx)
    return u.astype(np.float64) < x * float(1 << 24)


@dataclass
class SpikeRecord:
    """What a spiking run returns (numpy, one entry per layer ``0 .. L-1``).

    Attributes:
        counts: spike counts over the ``T`` steps, int64 ``(B, n_i)``.
        v_final: membrane potential after the last step, float64 ``(B, n_i)``.
        input_spikes: number of input spikes per sample ``(B,)`` (zeros for current input).
        n_steps: ``T``.
    """

    counts: list
    v_final: list
    input_spikes: Any
    n_steps: int

    def rates(self) -> list:
        """Firing rates ``count / T`` per layer, the spiking estimate of the float states."""
        return [c / float(self.n_steps) for c in self.counts]

    def predict(self):
        """Class = most output spikes; ties broken by the final membrane potential, shape ``(B,)``."""
        import numpy as np

        c, v = self.counts[-1], self.v_final[-1]
        top = c == c.max(axis=1, keepdims=True)
        return np.where(top, v, -np.inf).argmax(axis=1)

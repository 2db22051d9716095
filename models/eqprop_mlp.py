"""Layered prototypical EqProp network (Ernoult et al. 2019; Laborieux et al. 2021).

Notation (0-based): input ``x = s_{-1}``, states ``s_0 .. s_{L-1}`` (hidden..., output), weights
``W_i`` of shape ``(n_i, n_{i-1})`` mapping layer ``i-1`` into layer ``i``, biases ``b_i``.

Primitive function (what the dynamics ascend, what EqProp differentiates)::

    Phi(x, s; theta) = sum_i s_i . (W_i s_{i-1} + b_i)

Energy, for users who think in Hopfield terms: ``E = 0.5 sum_i ||s_i||^2 - Phi`` and the total
energy of the nudged phase is ``F = E + beta * L(s_out, y)``. Fixed points minimise ``F`` over the box
``[0, 1]^n``; equivalently ``s_i = rho(dPhi/ds_i)``, with ``rho(a) = clamp(a, 0, 1)`` (hard sigmoid)
and, for the output, ``s_out = rho(dPhi/ds_out - beta dL/ds_out)``.

Updates are asynchronous by default: even-indexed layers (0, 2, ...) first, then odd ones. For a
hidden layer, ``rho(dPhi/ds_i)`` is the exact minimiser of ``E`` in ``s_i`` given its neighbours, so
each sweep is block coordinate descent on ``E`` and settles; synchronous updates (all layers from the
old state) can oscillate with period 2 (DESIGN.md §3).

The EqProp estimate of ``dL/dtheta`` (loss = batch mean of ``L``) from two nudged equilibria::

    g = -(dPhi/dtheta(s^{b2}) - dPhi/dtheta(s^{b1})) / (b2 - b1)
    dPhi/dW_i = mean_batch s_i s_{i-1}^T,   dPhi/db_i = mean_batch s_i

one-sided (b1 = 0, the free state), symmetric (b1 = -beta, b2 = +beta), or random sign (b1 = 0,
b2 = +-beta with a random sign per batch). No autograd goes through the dynamics.

>>> import torch
>>> net = EqPropMLP(EqPropConfig(sizes=(4, 3, 2)), seed=0)
>>> x = torch.rand(5, 4); y = torch.tensor([0, 1, 0, 1, 1])
>>> s, info = net.free_phase(x, n_steps=50, tol=1e-9)
>>> [tuple(t.shape) for t in s], bool(info.converged.all())
([(5, 3), (5, 2)], True)
>>> g = net.eqprop_grads(x, y, beta=0.01, mode="symmetric", n_free_steps=50, n_nudge_steps=50)
>>> sorted(g)[:2]
['layers.0.bias', 'layers.0.weight']
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from .energy import INPUT, Bias, Dense, EnergyModel, Node
from .engine import NUDGINGS, UPDATES, check_update, run_phases
from .solvers import RelaxInfo, State, relax

COSTS = ("mse", "ce")


@dataclass(frozen=True)
class EqPropConfig:
    """Architecture and dynamics of an :class:`EqPropMLP`.

    Attributes:
        sizes: layer widths, input first, output last, e.g. ``(784, 512, 10)``.
        cost: ``"mse"``: ``L = 0.5 ||s_out - onehot(y)||^2``; ``"ce"``: cross-entropy of
            ``softmax(ce_scale * s_out)`` (output states live in [0, 1], so a scale sharpens it).
        ce_scale: logit scale of the ``"ce"`` cost.
        update: ``"async"`` (even layers then odd; settles) or ``"sync"`` (all at once).
        init_gain: weights ~ U(-g/sqrt(fan_in), g/sqrt(fan_in)); biases likewise.
    """

    sizes: tuple[int, ...] = (784, 512, 10)
    cost: str = "mse"
    ce_scale: float = 4.0
    update: str = "async"
    init_gain: float = 1.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "sizes", tuple(int(n) for n in self.sizes))
        if len(self.sizes) < 2 or any(n < 1 for n in self.sizes):
            raise ValueError(f"EqPropConfig.sizes={self.sizes}: need >= 2 positive widths (input, ..., output)")
        if self.cost not in COSTS:
            raise ValueError(f"EqPropConfig.cost={self.cost!r}; allowed: {COSTS}")
        check_update(self.update, "EqPropConfig.update")
        if not (self.ce_scale > 0 and self.init_gain > 0):
            raise ValueError("EqPropConfig.ce_scale and init_gain must be > 0")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["sizes"] = list(self.sizes)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "EqPropConfig":
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"EqPropConfig: unknown keys {sorted(unknown)}; valid: {sorted(cls.__dataclass_fields__)}")
        return cls(**d)


def rho(a: torch.Tensor) -> torch.Tensor:
    """Hard sigmoid ``clamp(a, 0, 1)``."""
    return a.clamp(0.0, 1.0)


def one_hot(y: torch.Tensor, n: int, dtype: torch.dtype) -> torch.Tensor:
    return torch.nn.functional.one_hot(y.long(), n).to(dtype)


class EqPropMLP(EnergyModel, nn.Module):
    """Layered EqProp network; parameters are ``layers[i].weight (n_i, n_{i-1})`` and ``.bias``.

    An :class:`~models.energy.EnergyModel`: node ``i`` is layer ``i``'s state, and its terms are
    ``Dense(i, i-1, "layers.i.weight")`` and ``Bias(i, "layers.i.bias")`` (node ``-1`` is the input).
    The state dict is that of a ``nn.ModuleList`` of ``nn.Linear``, loadable in plain torch.
    """

    def __init__(self, config: EqPropConfig | None = None, seed: int | None = None):
        super().__init__()
        self.config = config or EqPropConfig()
        sizes = self.config.sizes
        gen = torch.Generator().manual_seed(seed) if seed is not None else None
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        with torch.no_grad():
            for lin in self.layers:
                bound = self.config.init_gain / math.sqrt(lin.in_features)
                lin.weight.uniform_(-bound, bound, generator=gen)
                lin.bias.uniform_(-bound, bound, generator=gen)
        self.nodes = [Node(n) for n in sizes[1:]]
        self.terms = []
        for i in range(len(self.nodes)):
            self.terms += [Dense(post=i, pre=i - 1 if i else INPUT, weight=f"layers.{i}.weight"),
                           Bias(node=i, bias=f"layers.{i}.bias")]

    # ----------------------------------------------------------------- basic pieces
    @property
    def n_layers(self) -> int:
        return len(self.layers)

    @property
    def sizes(self) -> tuple[int, ...]:
        return self.config.sizes

    @property
    def n_in(self) -> int:
        return self.config.sizes[0]

    @property
    def update(self) -> str:
        return self.config.update

    def zero_state(self, batch: int, like: torch.Tensor) -> State:
        return [torch.zeros(batch, n, dtype=like.dtype, device=like.device) for n in self.sizes[1:]]

    def cost(self, s_out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Per-sample cost ``L(s_out, y)`` of shape ``(B,)``."""
        if self.config.cost == "mse":
            return 0.5 * ((s_out - one_hot(y, s_out.shape[1], s_out.dtype)) ** 2).sum(dim=1)
        return torch.nn.functional.cross_entropy(self.config.ce_scale * s_out, y.long(), reduction="none")

    def cost_grad(self, s_out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``dL/ds_out`` per sample (closed form, no autograd)."""
        return self.nudger(1.0, y, s_out.dtype)(s_out)

    def nudger(self, beta: float, y: torch.Tensor, dtype: torch.dtype):
        """``s_out -> dL/ds_out`` with the one-hot target built once."""
        t = one_hot(y, self.sizes[-1], dtype)
        if self.config.cost == "mse":
            return lambda s: s - t
        k = self.config.ce_scale
        return lambda s: k * (torch.softmax(k * s, dim=1) - t)

    def update_layer(self, i: int, s: State, drive: list, beta: float,
                     y: torch.Tensor | None) -> torch.Tensor:
        """The new state of layer ``i``: ``rho(dPhi/ds_i [- beta dL/ds_out])``."""
        a = self.preact(i, s, drive)
        if i == self.n_layers - 1 and beta != 0.0:
            a = a - beta * self.cost_grad(s[i], y)
        return rho(a)

    def relax(self, x: torch.Tensor, s0: State | None = None, *, beta: float = 0.0,
              y: torch.Tensor | None = None, n_steps: int = 30, tol: float = 0.0,
              method: str = "fixed_point", damping: float = 0.0, record_trace: bool = False,
              drive: list | None = None) -> tuple[State, RelaxInfo]:
        """Relax from ``s0`` (zeros if None) for up to ``n_steps`` sweeps; returns ``(s, info)``.

        ``drive``: a precomputed ``self.drive(x)`` (the phases of one EqProp step share it).
        """
        self._check_input(x)
        with torch.no_grad():
            drive = self.drive(x) if drive is None else drive
            s0 = self.zero_state(x.shape[0], x) if s0 is None else [t.detach() for t in s0]
            return relax(self.sweeper(drive, beta, y), s0, max_steps=n_steps, tol=tol,
                         method=method, damping=damping, record_trace=record_trace)

    def free_phase(self, x: torch.Tensor, n_steps: int = 30, **kw) -> tuple[State, RelaxInfo]:
        return self.relax(x, None, beta=0.0, n_steps=n_steps, **kw)

    def predict(self, x: torch.Tensor, n_steps: int = 30) -> torch.Tensor:
        s, _ = self.free_phase(x, n_steps=n_steps)
        return s[-1].argmax(dim=1)

    def _check_input(self, x: torch.Tensor) -> None:
        if x.ndim != 2 or x.shape[1] != self.sizes[0]:
            raise ValueError(f"input shape {tuple(x.shape)} does not match the network: expected (B, {self.sizes[0]})")
        if x.dtype != self.layers[0].weight.dtype:
            raise ValueError(f"input dtype {x.dtype} != model dtype {self.layers[0].weight.dtype}; "
                             "convert one of them (e.g. model.double() and x.double())")
        if x.is_floating_point() and not bool(torch.isfinite(x).all()):
            raise ValueError("input contains NaN or infinite values; clean the data (e.g. torch.nan_to_num) first")

    def dphi_dtheta(self, x: torch.Tensor, s: State) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """``(dPhi/dW_i, dPhi/db_i)`` averaged over the batch, closed form."""
        d = self.dphi_dparams(x, s)
        return [(d[f"layers.{i}.weight"], d[f"layers.{i}.bias"]) for i in range(self.n_layers)]

    # ------------------------------------------------------------------ EqProp estimate
    def eqprop_grads(self, x: torch.Tensor, y: torch.Tensor, *, beta: float, mode: str = "symmetric",
                     n_free_steps: int = 30, n_nudge_steps: int = 10, tol: float = 0.0,
                     free_state: State | None = None, generator: torch.Generator | None = None,
                     return_states: bool = False):
        """EqProp estimate of ``d mean(L) / d theta`` as ``{param_name: tensor}``
        (the phase sequence of :func:`models.engine.run_phases`, float arithmetic).

        Args:
            beta: nudging strength (> 0).
            mode: ``"one_sided"``, ``"symmetric"`` or ``"random_sign"``.
            free_state: reuse a free equilibrium instead of relaxing again.
        """
        if x.shape[0] == 0:
            raise ValueError("eqprop_grads: empty batch")
        self._check_input(x)
        with torch.no_grad():
            drive = self.drive(x)  # shared by all phases

        def relax_(s0, *, beta, n_steps, step_offset):
            return self.relax(x, s0, beta=beta, y=y, n_steps=n_steps, tol=tol, drive=drive)

        ph = run_phases(relax_, beta=beta, mode=mode, n_free_steps=n_free_steps, n_nudge_steps=n_nudge_steps,
                        free_state=free_state, generator=generator)
        grads = self.contrast(x, ph.s1, ph.s2, ph.b1, ph.b2)
        if return_states:
            return grads, ph.as_dict()
        return grads

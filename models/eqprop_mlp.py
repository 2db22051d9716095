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
from dataclasses import dataclass

import torch
from torch import nn

from .config import DictConfig
from .energy import INPUT, Bias, Dense, EnergyModel, Node, one_hot  # noqa: F401  (one_hot re-exported)
from .engine import NUDGINGS, UPDATES, check_update  # noqa: F401  (re-exported names)
from .solvers import RelaxInfo, State  # noqa: F401

COSTS = ("mse", "ce")


@dataclass(frozen=True)
class EqPropConfig(DictConfig):
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


def rho(a: torch.Tensor) -> torch.Tensor:
    """Hard sigmoid ``clamp(a, 0, 1)``."""
    return a.clamp(0.0, 1.0)


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

    def update_layer(self, i: int, s: State, drive: list, beta: float,
                     y: torch.Tensor | None) -> torch.Tensor:
        """The new state of layer ``i``: ``rho(dPhi/ds_i [- beta dL/ds_out])``."""
        a = self.preact(i, s, drive)
        if i == self.n_layers - 1 and beta != 0.0:
            a = a - beta * self.cost_grad(s[i], y)
        return rho(a)

    def dphi_dtheta(self, x: torch.Tensor, s: State) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """``(dPhi/dW_i, dPhi/db_i)`` averaged over the batch, closed form."""
        d = self.dphi_dparams(x, s)
        return [(d[f"layers.{i}.weight"], d[f"layers.{i}.bias"]) for i in range(self.n_layers)]

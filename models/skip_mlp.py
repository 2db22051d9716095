"""A second energy model: the layered MLP plus a dense skip coupling from the input to the output.

``Phi = sum_i s_i . (W_i s_{i-1} + b_i) + s_out . (S x)`` with ``S`` (``skip.weight``) of shape
``(n_out, n_in)``. It is the worked example of ``docs/ARCHITECTURE.md``: the only new code is this
file, because :class:`~models.energy.Dense` already has a kernel in every backend; the skip term is
static (input only), so it joins the output node's once-per-phase drive.

>>> import torch
>>> net = SkipEqPropMLP(EqPropConfig(sizes=(4, 3, 2)), seed=0)
>>> net.terms[-1]
Dense(post=1, pre=-1, weight='skip.weight')
>>> s, _ = net.free_phase(torch.rand(5, 4), n_steps=40, tol=1e-9)
>>> [tuple(t.shape) for t in s]
[(5, 3), (5, 2)]
"""
from __future__ import annotations

import math

import torch
from torch import nn

from .energy import INPUT, Dense
from .eqprop_mlp import EqPropConfig, EqPropMLP


class SkipEqPropMLP(EqPropMLP):
    """:class:`EqPropMLP` with the extra term ``Dense(post=L-1, pre=INPUT, weight="skip.weight")``.

    Initialisation: the layers as in :class:`EqPropMLP` (same seed, same values), then
    ``S ~ U(-g/sqrt(n_in), g/sqrt(n_in))`` scaled by ``skip_gain``.
    """

    def __init__(self, config: EqPropConfig | None = None, seed: int | None = None, skip_gain: float = 0.5):
        super().__init__(config, seed)
        n_in, n_out = self.sizes[0], self.sizes[-1]
        gen = torch.Generator().manual_seed(seed + 1) if seed is not None else None
        self.skip = nn.Linear(n_in, n_out, bias=False)
        with torch.no_grad():
            bound = skip_gain * self.config.init_gain / math.sqrt(n_in)
            self.skip.weight.uniform_(-bound, bound, generator=gen)
        self.terms = self.terms + [Dense(post=len(self.nodes) - 1, pre=INPUT, weight="skip.weight")]

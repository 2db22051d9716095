"""Spectrally normalised looped block, trainable by BPTT and by EqProp.

Dynamics (gate ``g`` in (0, 1])::

    h <- (1 - g) h + g tanh(W_eff h + U x + b),     logits = V h
    W_eff = c * W_s,  W_s = (W + W^T) / 2 if symmetric else W,
    c = min(1, gamma / sigma(W_s))  (spectral normalisation, ``gamma < 1``; c = 1 without SN)

``sigma`` is the exact spectral norm (SVD) by default, or (``sn_method="power"``) tracked by power
iteration (converged at construction, then one step per training forward, like torch's
``spectral_norm``). The map is a contraction when
``(1 - g) + g ||W_eff||_2 < 1``, i.e. when ``||W_eff||_2 < 1``: :meth:`LoopedMLP.lipschitz` returns
that bound with the exact 2-norm (SVD) of the operator the layer actually uses, an independent check
of the power-iteration estimate inside it.

With symmetric weights the fixed point ``h = tanh(W_eff h + U x + b - beta V^T dL/dlogits)`` is a
stationary point of ``Phi - beta L`` with ``Phi = 0.5 h^T W_eff h + h^T (U x + b)`` (plus the tanh
entropy term that has no parameters), so the EqProp estimate
``-(dPhi/dtheta(h^{b2}) - dPhi/dtheta(h^{b1})) / (b2 - b1)`` is exact as beta -> 0; the readout ``V``
gets its gradient ``dL/dV`` at the free state directly. ``dPhi/dtheta`` is evaluated by autograd
at the fixed states (nothing goes through the dynamics).

>>> import torch
>>> net = LoopedMLP(LoopedConfig(n_in=6, n_hidden=5, n_out=3, symmetric=True), seed=0).double()
>>> x = torch.rand(4, 6, dtype=torch.float64); y = torch.tensor([0, 1, 2, 0])
>>> net.lipschitz() < 1
True
>>> ge = net.eqprop_grads(x, y, beta=1e-4, n_free_steps=300, n_nudge_steps=300)
>>> gb = net.bptt_grads(x, y, n_steps=300)
>>> from models.gradients import compare_grads
>>> min(r["cosine"] for r in compare_grads(ge, gb)) > 0.999
True
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from .config import DictConfig
from .engine import run_phases
from .solvers import RelaxInfo, relax


@dataclass(frozen=True)
class LoopedConfig(DictConfig):
    """Attributes:
        n_in, n_hidden, n_out: widths of input, looped state and readout.
        gate: ``g`` of the damped update.
        spectral_norm: rescale ``W`` so that ``||W_eff||_2 <= sn_gamma``.
        sn_gamma: target bound (< 1 for a contraction).
        sn_method: ``"exact"`` (sigma by SVD every forward: the bound holds by construction) or
            ``"power"`` (torch-style power iteration, one step per training forward: cheaper, but
            it underestimates sigma while the weights move, so the bound can be exceeded; Track 1
            measures by how much).
        symmetric: use ``(W + W^T)/2`` (EqProp exact).
        init_gain: ``W`` entries ~ N(0, (init_gain / sqrt(n_hidden))^2).
    """

    n_in: int = 784
    n_hidden: int = 256
    n_out: int = 10
    gate: float = 0.5
    spectral_norm: bool = True
    sn_gamma: float = 0.95
    sn_method: str = "exact"
    symmetric: bool = False
    init_gain: float = 1.0

    def __post_init__(self) -> None:
        for f in ("n_in", "n_hidden", "n_out"):
            if int(getattr(self, f)) < 1:
                raise ValueError(f"LoopedConfig.{f}={getattr(self, f)} must be >= 1")
        if not 0 < self.gate <= 1:
            raise ValueError(f"LoopedConfig.gate={self.gate} must be in (0, 1]")
        if not 0 < self.sn_gamma:
            raise ValueError(f"LoopedConfig.sn_gamma={self.sn_gamma} must be > 0")
        if self.sn_method not in ("exact", "power"):
            raise ValueError(f"LoopedConfig.sn_method={self.sn_method!r}; allowed: ('exact', 'power')")


class LoopedMLP(nn.Module):
    N_POWER_INIT = 100
    """Power iterations at construction (torch's spectral_norm uses 15; random square matrices have
    close top singular values, so more are needed for the estimate to bound the norm)."""

    def __init__(self, config: LoopedConfig | None = None, seed: int | None = None):
        super().__init__()
        self.config = c = config or LoopedConfig()
        gen = torch.Generator().manual_seed(seed) if seed is not None else None
        self.U = nn.Linear(c.n_in, c.n_hidden)
        self.V = nn.Linear(c.n_hidden, c.n_out)
        self.W = nn.Parameter(torch.empty(c.n_hidden, c.n_hidden))
        with torch.no_grad():
            for lin in (self.U, self.V):
                bound = 1 / math.sqrt(lin.in_features)
                lin.weight.uniform_(-bound, bound, generator=gen)
                lin.bias.uniform_(-bound, bound, generator=gen)
            self.W.normal_(0.0, c.init_gain / math.sqrt(c.n_hidden), generator=gen)
        u = torch.randn(c.n_hidden, generator=gen)
        self.register_buffer("_u", u / u.norm())
        # like torch's spectral_norm, converge the power iteration at construction; afterwards one
        # step per training forward tracks the slowly changing weights
        self.sigma_power(n_iter=self.N_POWER_INIT, update=True)

    # --------------------------------------------------------------- weights
    def _w_sym(self) -> torch.Tensor:
        return 0.5 * (self.W + self.W.t()) if self.config.symmetric else self.W

    def sigma_power(self, n_iter: int = 1, update: bool = False) -> torch.Tensor:
        """Power-iteration estimate of ``||W_s||_2`` (differentiable in W, u and v detached)."""
        w = self._w_sym()
        with torch.no_grad():
            u = self._u.to(w.dtype)
            for _ in range(n_iter):
                v = torch.nn.functional.normalize(w.t() @ u, dim=0)
                u = torch.nn.functional.normalize(w @ v, dim=0)
            if update:
                self._u.copy_(u.to(self._u.dtype))
        return u @ w @ v

    def w_eff(self) -> torch.Tensor:
        w = self._w_sym()
        if not self.config.spectral_norm:
            return w
        if self.config.sn_method == "exact":
            sigma = torch.linalg.matrix_norm(w, ord=2)
        else:
            sigma = self.sigma_power(n_iter=1, update=self.training)
        return w * torch.clamp(self.config.sn_gamma / sigma, max=1.0)

    @torch.no_grad()
    def lipschitz(self) -> float:
        """``(1-g) + g ||W_eff||_2`` of the operator the layer uses now (its power-iteration
        estimate inside ``W_eff``), with the exact spectral norm (SVD); < 1 means contraction."""
        was = self.training
        self.eval()
        try:
            w = self.w_eff()
        finally:
            self.train(was)
        g = self.config.gate
        return (1 - g) + g * float(torch.linalg.matrix_norm(w.double(), ord=2))

    # --------------------------------------------------------------- dynamics
    def drive(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 2 or x.shape[1] != self.config.n_in:
            raise ValueError(f"input shape {tuple(x.shape)}: expected (B, {self.config.n_in})")
        return self.U(x)

    def step(self, h: torch.Tensor, drive: torch.Tensor, w_eff: torch.Tensor, beta: float = 0.0,
             y: torch.Tensor | None = None) -> torch.Tensor:
        a = h @ w_eff.t() + drive
        if beta != 0.0:
            a = a - beta * self.cost_grad_h(h, y)
        g = self.config.gate
        return (1 - g) * h + g * torch.tanh(a)

    def cost(self, h: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.cross_entropy(self.V(h), y.long(), reduction="none")

    def cost_grad_h(self, h: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``dL/dh = V^T (softmax(V h) - onehot(y))`` per sample."""
        p = torch.softmax(self.V(h), dim=1)
        p = p - torch.nn.functional.one_hot(y.long(), p.shape[1]).to(p.dtype)
        return p @ self.V.weight

    def relax(self, x: torch.Tensor, h0: torch.Tensor | None = None, *, beta: float = 0.0,
              y: torch.Tensor | None = None, n_steps: int = 30, tol: float = 0.0,
              method: str = "fixed_point", record_trace: bool = False) -> tuple[torch.Tensor, RelaxInfo]:
        with torch.no_grad():
            d, w = self.drive(x), self.w_eff()
            h0 = torch.zeros_like(d) if h0 is None else h0.detach()
            (h,), info = relax(lambda s: [self.step(s[0], d, w, beta, y)], [h0], max_steps=n_steps,
                               tol=tol, method=method, record_trace=record_trace)
        return h, info

    def forward(self, x: torch.Tensor, n_steps: int = 30) -> torch.Tensor:
        """Logits after ``n_steps`` free steps, differentiable (BPTT)."""
        d, w = self.drive(x), self.w_eff()
        h = torch.zeros_like(d)
        for _ in range(n_steps):
            h = self.step(h, d, w)
        return self.V(h)

    def predict(self, x: torch.Tensor, n_steps: int = 30) -> torch.Tensor:
        h, _ = self.relax(x, n_steps=n_steps)
        return self.V(h).argmax(dim=1)

    # --------------------------------------------------------------- gradients
    def bptt_grads(self, x: torch.Tensor, y: torch.Tensor, *, n_steps: int) -> dict[str, torch.Tensor]:
        params = dict(self.named_parameters())
        with torch.enable_grad():
            loss = torch.nn.functional.cross_entropy(self.forward(x, n_steps), y.long())
            grads = torch.autograd.grad(loss, list(params.values()))
        return dict(zip(params, grads))

    def phi(self, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """``0.5 h^T W_eff h + h^T (U x + b)`` per sample."""
        return 0.5 * ((h @ self.w_eff().t()) * h).sum(dim=1) + (h * self.U(x)).sum(dim=1)

    def eqprop_grads(self, x: torch.Tensor, y: torch.Tensor, *, beta: float, mode: str = "symmetric",
                     n_free_steps: int = 30, n_nudge_steps: int = 10, tol: float = 0.0,
                     generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """EqProp estimate (phases of :func:`models.engine.run_phases`); exact as beta -> 0 only with
        ``symmetric=True`` weights (the only energy-based variant), see the module docstring."""
        was_training = self.training
        self.eval()  # freeze the power-iteration vector between phases
        try:
            def relax_(h0, *, beta, n_steps, step_offset):
                return self.relax(x, h0, beta=beta, y=y, n_steps=n_steps, tol=tol)

            ph = run_phases(relax_, beta=beta, mode=mode, n_free_steps=n_free_steps, n_nudge_steps=n_nudge_steps,
                            generator=generator)
            h0, h1, h2, b1, b2 = ph.free, ph.s1, ph.s2, ph.b1, ph.b2
            inner = [self.W, self.U.weight, self.U.bias]
            with torch.enable_grad():
                diff = -(self.phi(x, h2).mean() - self.phi(x, h1).mean()) / (b2 - b1)
                g_inner = torch.autograd.grad(diff, inner)
                g_out = torch.autograd.grad(self.cost(h0, y).mean(), [self.V.weight, self.V.bias])
        finally:
            self.train(was_training)
        return {"W": g_inner[0], "U.weight": g_inner[1], "U.bias": g_inner[2],
                "V.weight": g_out[0], "V.bias": g_out[1]}

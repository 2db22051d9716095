"""The energy-model protocol: state nodes plus interaction terms whose sum is the primitive ``Phi``.

A network is a list of state **nodes** (node ``i`` holds ``s_i`` of shape ``(B, n_i)``, activation
``rho`` = the projection on a box: hard sigmoid ``clamp(., 0, 1)`` or hard tanh ``clamp(., -1, 1)``;
the last node is the output) and a list of
**interaction terms** ``T_k`` with ``Phi(x, s; theta) = sum_k T_k(x, s; theta)``. The input ``x`` is
node :data:`INPUT` (clamped, never updated). From the terms alone the protocol gives

* the pre-activation ``dPhi/ds_i`` (the sum of each term's contribution to node ``i``),
* ``dPhi/dtheta`` and the EqProp contrast, per parameter,
* the update schedule (a colouring of the graph of state nodes joined by a term,
  :func:`models.engine.schedule_groups`),
* the multiply-accumulates per sweep (:meth:`EnergyModel.sweep_macs`),

and the phase engine (:mod:`models.engine`) drives any backend's relaxation. Terms are plain frozen
dataclasses that *name* their nodes and parameters; the arithmetic lives in per-backend kernels found
through a table keyed by the term's type (:data:`FLOAT_KERNELS` here; the integer simulator, the ONNX
builders and the op counter have their own tables). A backend without a kernel for a term refuses the
model naming the backend, the term and what it supports (:func:`models.engine.require_kernels`).

Terms today:

* :class:`Dense` ``s_post . (W s_pre)``, ``W`` of shape ``(n_post, n_pre)``; ``pre`` may be
  :data:`INPUT` (then the term is *static*: computed once per relaxation). Its contribution to
  ``dPhi/ds_post`` is ``W s_pre`` (the forward product) and to ``dPhi/ds_pre`` ``W^T s_post``
  (the feedback product).
* :class:`Bias` ``s_i . b`` (static).

Layered chains (``Dense(0, INPUT), Bias(0), Dense(1, 0), Bias(1), ...`` with ``async`` updates: the
:class:`~models.eqprop_mlp.EqPropMLP`) relax through a fused loop, :func:`relax_chain` (preallocated
buffers, exact fixed-point exit) and, for symmetric nudging, both nudged phases as one stacked batch
(:func:`relax_chain_pair`): the same ops in the same order, bit-identical states, diagnostics and
EqProp estimates (``tests/models/test_fast_relax.py``); ``model.fast_relax = False`` selects the
generic path.

Energy ``E = 0.5 sum_i ||s_i||^2 - Phi``; fixed points of ``s_i = rho(dPhi/ds_i)`` minimise ``E`` over
the box (and ``E + beta L`` with the output nudge). Adding a term type (a conv coupling, attention,
a skip coupling between state nodes) means: a dataclass here, and a kernel in each backend's table.

>>> import torch
>>> from models.eqprop_mlp import EqPropMLP, EqPropConfig
>>> net = EqPropMLP(EqPropConfig(sizes=(4, 3, 2)), seed=0)
>>> [str(t) for t in net.terms]
["Dense(post=0, pre=-1, weight='layers.0.weight')", "Bias(node=0, bias='layers.0.bias')", "Dense(post=1, pre=0, weight='layers.1.weight')", "Bias(node=1, bias='layers.1.bias')"]
>>> net.schedule()
[[0], [1]]
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Callable, ClassVar

import torch

from .engine import (UPDATES, Phases, check_update, nudge_betas, require_kernels, run_phases,  # noqa: F401
                     schedule_groups)
from .solvers import RelaxInfo, relax

INPUT = -1
"""Node index of the clamped input ``x``."""
ACTIVATIONS = {"hard_sigmoid": (0.0, 1.0), "hard_tanh": (-1.0, 1.0)}
"""Activation name -> the box its projection clamps to (backends without a kernel for a box refuse it)."""
State = list[torch.Tensor]


@dataclass(frozen=True)
class Node:
    """A state node: ``size`` units per sample, activation ``rho`` = projection on the box
    :data:`ACTIVATIONS` ``[activation]`` (``"hard_sigmoid"``: [0, 1], ``"hard_tanh"``: [-1, 1]).

    States are always stored flat, ``(B, size)``, so solvers and backends treat every node alike;
    ``shape`` is how kernels view one sample (e.g. ``(C, H, W)`` for a conv feature map; default
    ``(size,)``).
    """

    size: int
    activation: str = "hard_sigmoid"
    shape: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if not (isinstance(self.size, int) and self.size >= 1):
            raise ValueError(f"Node.size={self.size!r} is invalid; allowed: an int >= 1")
        shape = tuple(int(d) for d in self.shape) or (self.size,)
        if math.prod(shape) != self.size:
            raise ValueError(f"Node.shape={shape} has {math.prod(shape)} units; expected size={self.size}")
        object.__setattr__(self, "shape", shape)
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"Node.activation={self.activation!r} is invalid; allowed: {tuple(ACTIVATIONS)}")

    @property
    def bounds(self) -> tuple[float, float]:
        """The box ``(lo, hi)`` of the node's states."""
        return ACTIVATIONS[self.activation]


class Term:
    """Base of the interaction terms (frozen dataclasses): a subclass names the fields that hold its
    nodes (``node_fields``; a literal :data:`INPUT` in ``fixed_nodes``) and its parameter names
    (``param_fields``; a field set to None is an absent parameter)."""

    node_fields: ClassVar[tuple[str, ...]] = ()
    fixed_nodes: ClassVar[tuple[int, ...]] = ()
    param_fields: ClassVar[tuple[str, ...]] = ()

    @property
    def nodes(self) -> tuple[int, ...]:
        return tuple(getattr(self, f) for f in self.node_fields) + self.fixed_nodes

    @property
    def params(self) -> tuple[str, ...]:
        return tuple(p for p in (getattr(self, f) for f in self.param_fields) if p is not None)


@dataclass(frozen=True)
class Dense(Term):
    """``Phi`` term ``s_post . (W s_pre)``; ``weight`` names a parameter of shape ``(n_post, n_pre)``."""

    post: int
    pre: int
    weight: str
    node_fields: ClassVar[tuple[str, ...]] = ("post", "pre")
    param_fields: ClassVar[tuple[str, ...]] = ("weight",)


@dataclass(frozen=True)
class Bias(Term):
    """``Phi`` term ``s_node . b``; ``bias`` names a parameter of shape ``(n_node,)``."""

    node: int
    bias: str
    node_fields: ClassVar[tuple[str, ...]] = ("node",)
    param_fields: ClassVar[tuple[str, ...]] = ("bias",)


def is_static(term) -> bool:
    """A term whose contributions depend on no state node (input-only): computed once per phase."""
    return all(n == INPUT for n in term.nodes if n != getattr(term, "post", getattr(term, "node", None)))


# ------------------------------------------------------------------------------ float kernels
def _node(x: torch.Tensor, s: State, i: int) -> torch.Tensor:
    return x if i == INPUT else s[i]


class DenseFloat:
    """Float torch arithmetic of :class:`Dense`."""

    @staticmethod
    def phi(t: Dense, p, x, s) -> torch.Tensor:
        return (_node(x, s, t.post) * (_node(x, s, t.pre) @ p(t.weight).t())).sum(dim=1)

    @staticmethod
    def contributions(t: Dense, p) -> list[tuple[int, Callable]]:
        """``(target node, accumulate)``: ``accumulate(a, x, s)`` returns ``a`` plus the term's
        ``dPhi/ds_target`` (``a`` may be None, a 1-D static vector, or ``(B, n)``)."""
        W = p(t.weight)
        pre, post = t.pre, t.post

        def forward(a, x, s):  # W s_pre (narrow-output products run ~2.5x faster as (W s^T + a^T)^T)
            src = x if pre == INPUT else s[pre]
            if a is None:
                return src @ W.t()
            if pre == INPUT:
                return torch.addmm(a, src, W.t())
            return torch.addmm(a[:, None] if a.ndim == 1 else a.t(), W, src.t()).t()

        def feedback(a, x, s):  # W^T s_post
            return s[post] @ W if a is None else torch.addmm(a, s[post], W)

        return [(post, forward), (pre, feedback)] if pre != INPUT else [(post, forward)]

    @staticmethod
    def dphi(t: Dense, p, x, s) -> dict[str, torch.Tensor]:
        return {t.weight: _node(x, s, t.post).t() @ _node(x, s, t.pre)}

    @staticmethod
    def contrast(t: Dense, p, x, s1, s2) -> dict[str, torch.Tensor]:
        """``dPhi/dW(s2) - dPhi/dW(s1)`` summed over the batch (one matmul for an input coupling)."""
        if t.pre == INPUT:
            return {t.weight: (s2[t.post] - s1[t.post]).t() @ x}
        return {t.weight: s2[t.post].t() @ _node(x, s2, t.pre) - s1[t.post].t() @ _node(x, s1, t.pre)}

    @staticmethod
    def macs(t: Dense, sizes: dict[int, int]) -> int:
        """MACs per sample of one sweep (forward product, plus the feedback one between states)."""
        return sizes[t.post] * sizes[t.pre] * (1 if t.pre == INPUT else 2)


class BiasFloat:
    """Float torch arithmetic of :class:`Bias`."""

    @staticmethod
    def phi(t: Bias, p, x, s) -> torch.Tensor:
        return s[t.node] @ p(t.bias)

    @staticmethod
    def contributions(t: Bias, p) -> list[tuple[int, Callable]]:
        b = p(t.bias)
        return [(t.node, lambda a, x, s: b if a is None else a + b)]

    @staticmethod
    def dphi(t: Bias, p, x, s) -> dict[str, torch.Tensor]:
        return {t.bias: s[t.node].sum(dim=0)}

    @staticmethod
    def contrast(t: Bias, p, x, s1, s2) -> dict[str, torch.Tensor]:
        return {t.bias: (s2[t.node] - s1[t.node]).sum(dim=0)}

    @staticmethod
    def macs(t: Bias, sizes: dict[int, int]) -> int:
        return 0


FLOAT_KERNELS: dict[type, type] = {Dense: DenseFloat, Bias: BiasFloat}
"""Float torch kernels by term type (what :class:`EnergyModel` computes with)."""


def register_float_kernel(term_type: type, kernel: type) -> None:
    FLOAT_KERNELS[term_type] = kernel


class EnergyModel:
    """Mixin for an ``nn.Module`` that declares ``nodes`` and ``terms``; gives the float dynamics.

    A subclass provides ``self.nodes`` (list of :class:`Node`, output last), ``self.terms``, the
    input width ``self.n_in`` and ``self.update`` (:data:`~models.engine.UPDATES`). The cost at the
    output node is the MSE or cross-entropy of ``self.config.cost`` / ``self.config.ce_scale``
    (override :meth:`cost` and :meth:`nudger` for another). Parameters are looked up by name
    (``self.get_parameter(name)``).
    """

    nodes: list[Node]
    terms: list

    # ------------------------------------------------------------------ structure
    def interaction_edges(self) -> list[tuple[int, int]]:
        """Pairs of state nodes that share a term (the graph the schedule colours)."""
        edges = []
        for t in self.terms:
            ns = [n for n in t.nodes if n != INPUT]
            edges += [(a, b) for a in ns for b in ns if a < b]
        return edges

    def schedule(self, update: str | None = None) -> list[list[int]]:
        """Update groups (:func:`models.engine.schedule_groups`) for ``update`` (default the model's)."""
        return schedule_groups(update or self.update, self.interaction_edges(), len(self.nodes))

    def sweep_macs(self) -> int:
        """Multiply-accumulates per sample of one sweep of the state nodes (static terms excluded)."""
        sizes = {INPUT: self.n_in, **{i: n.size for i, n in enumerate(self.nodes)}}
        return sum(FLOAT_KERNELS[type(t)].macs(t, sizes) for t in self.terms if not is_static(t))

    def _kernels(self) -> list[type]:
        return require_kernels("float torch", FLOAT_KERNELS, self.terms)

    def _param(self, name: str) -> torch.Tensor:
        return self.get_parameter(name)

    # ------------------------------------------------------------------ cost at the output node
    def cost(self, s_out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Per-sample cost ``L(s_out, y)`` of shape ``(B,)``: ``0.5 ||s_out - onehot(y)||^2`` (``mse``)
        or the cross-entropy of ``softmax(ce_scale * s_out)`` (``ce``; states live in [0, 1])."""
        if self.config.cost == "mse":
            return 0.5 * ((s_out - one_hot(y, s_out.shape[1], s_out.dtype)) ** 2).sum(dim=1)
        return torch.nn.functional.cross_entropy(self.config.ce_scale * s_out, y.long(), reduction="none")

    def cost_grad(self, s_out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``dL/ds_out`` per sample (closed form, no autograd)."""
        return self.nudger(1.0, y, s_out.dtype)(s_out)

    def nudger(self, beta: float, y: torch.Tensor, dtype: torch.dtype) -> Callable[[torch.Tensor], torch.Tensor]:
        """``s_out -> dL/ds_out`` with the one-hot target built once."""
        t = one_hot(y, self.nodes[-1].size, dtype)
        if self.config.cost == "mse":
            return lambda s: s - t
        k = self.config.ce_scale
        return lambda s: k * (torch.softmax(k * s, dim=1) - t)

    # ------------------------------------------------------------------ dynamics
    def zero_state(self, batch: int, like: torch.Tensor) -> State:
        return [torch.zeros(batch, n.size, dtype=like.dtype, device=like.device) for n in self.nodes]

    def _check_input(self, x: torch.Tensor) -> None:
        if x.ndim != 2 or x.shape[1] != self.n_in:
            raise ValueError(f"input shape {tuple(x.shape)} does not match the network: expected (B, {self.n_in})")
        dt = next(self.parameters()).dtype
        if x.dtype != dt:
            raise ValueError(f"input dtype {x.dtype} != model dtype {dt}; "
                             "convert one of them (e.g. model.double() and x.double())")
        if x.is_floating_point() and x.numel() and not all(map(math.isfinite, map(float, torch.aminmax(x)))):
            # (min and max propagate NaN and show +-inf: one pass instead of an elementwise mask)
            raise ValueError("input contains NaN or infinite values; clean the data (e.g. torch.nan_to_num) first")

    def relax(self, x: torch.Tensor, s0: State | None = None, *, beta: float = 0.0,
              y: torch.Tensor | None = None, n_steps: int = 30, tol: float = 0.0,
              method: str = "fixed_point", damping: float = 0.0, record_trace: bool = False,
              drive: list | None = None) -> tuple[State, RelaxInfo]:
        """Relax from ``s0`` (zeros if None) for up to ``n_steps`` sweeps with the shared solvers
        (:func:`models.solvers.relax`); returns ``(s, info)``.

        ``drive``: a precomputed ``self.drive(x)`` (the phases of one EqProp step share it).
        """
        self._check_input(x)
        return self._relax_checked(x, s0, beta=beta, y=y, n_steps=n_steps, tol=tol, method=method,
                                   damping=damping, record_trace=record_trace, drive=drive)

    stack_phases: bool = True
    """With :attr:`fast_relax`, symmetric nudging relaxes its two nudged phases as one stacked batch
    (:func:`relax_chain_pair`)."""

    fast_relax: bool = True
    """Relax layered Dense/Bias chains with the fused loop :func:`relax_chain` (bit-identical states
    and diagnostics; set False on an instance to run the generic sweeper and solver instead)."""

    def _relax_checked(self, x, s0, *, beta, y, n_steps, tol, method="fixed_point", damping=0.0,
                       record_trace=False, drive=None) -> tuple[State, RelaxInfo]:
        with torch.no_grad():
            drive = self.drive(x) if drive is None else drive
            s0 = self.zero_state(x.shape[0], x) if s0 is None else [t.detach() for t in s0]
            if (self.fast_relax and method == "fixed_point" and tol == 0.0 and damping == 0.0
                    and not record_trace and n_steps >= 1 and chain_plan(self, drive) is not None):
                if beta != 0.0 and y is None:
                    raise ValueError("a nudged step (beta != 0) needs the targets y")
                return relax_chain(self, drive, s0, beta=beta, y=y, n_steps=n_steps)
            return relax(self.sweeper(drive, beta, y), s0, max_steps=n_steps, tol=tol,
                         method=method, damping=damping, record_trace=record_trace)

    def free_phase(self, x: torch.Tensor, n_steps: int = 30, **kw) -> tuple[State, RelaxInfo]:
        return self.relax(x, None, beta=0.0, n_steps=n_steps, **kw)

    def predict(self, x: torch.Tensor, n_steps: int = 30) -> torch.Tensor:
        s, _ = self.free_phase(x, n_steps=n_steps)
        return s[-1].argmax(dim=1)

    def eqprop_grads(self, x: torch.Tensor, y: torch.Tensor, *, beta: float, mode: str = "symmetric",
                     n_free_steps: int = 30, n_nudge_steps: int = 10, tol: float = 0.0,
                     free_state: State | None = None, generator: torch.Generator | None = None,
                     return_states: bool = False):
        """EqProp estimate of ``d mean(L) / d theta`` as ``{param_name: tensor}``: the phases of
        :func:`models.engine.run_phases` relaxed in float, then :meth:`contrast`.

        Args:
            beta: nudging strength (> 0).
            mode: ``"one_sided"``, ``"symmetric"`` or ``"random_sign"``.
            free_state: reuse a free equilibrium instead of relaxing again.
            return_states: also return ``{"free", "s1", "s2", "b1", "b2"}``.
        """
        if x.shape[0] == 0:
            raise ValueError("eqprop_grads: empty batch")
        self._check_input(x)
        with torch.no_grad():
            drive = self.drive(x)  # shared by all phases

        def relax_(s0, *, beta, n_steps, step_offset):  # input checked once above
            return self._relax_checked(x, s0, beta=beta, y=y, n_steps=n_steps, tol=tol, drive=drive)

        if (mode == "symmetric" and self.fast_relax and self.stack_phases and y is not None and tol == 0.0
                and n_free_steps >= 1
                and n_nudge_steps >= 1 and chain_plan(self, drive) is not None):
            # the two nudged phases start from the same free state: relax them as one stacked batch
            # (no diagnostics: eqprop_grads returns none)
            b1, b2 = nudge_betas(mode, beta, generator)
            with torch.no_grad():
                if free_state is None:
                    free_state, _ = relax_chain(self, drive, self.zero_state(x.shape[0], x), beta=0.0, y=y,
                                                n_steps=n_free_steps, diagnostics=False)
                (s1, s2), _ = relax_chain_pair(self, drive, [t.detach() for t in free_state], b1, b2, y,
                                               n_nudge_steps, diagnostics=False)
            ph = Phases(free_state, s1, s2, b1, b2, {})
        else:
            ph = run_phases(relax_, beta=beta, mode=mode, n_free_steps=n_free_steps, n_nudge_steps=n_nudge_steps,
                            free_state=free_state, generator=generator)
        grads = self.contrast(x, ph.s1, ph.s2, ph.b1, ph.b2)
        return (grads, ph.as_dict()) if return_states else grads

    def drive(self, x: torch.Tensor) -> list:
        """Static (input-only) part of every node's pre-activation, computed once per phase: per
        node a tensor ``(B, n_i)``, a bias vector ``(n_i,)`` or None. Biases are summed first, then
        input couplings (``addmm``), so the MLP's ``W_0 x + b_0`` is one fused product."""
        static: list = [None] * len(self.nodes)
        ks = self._kernels()
        for pass_bias in (True, False):
            for t, k in zip(self.terms, ks):
                if not is_static(t) or isinstance(t, Bias) != pass_bias:
                    continue
                for node, acc in k.contributions(t, self._param):
                    static[node] = acc(static[node], x, None)
        return static

    def _node_contributions(self) -> list[list[Callable]]:
        """Per node, its dynamic (state-dependent) contributions in term order."""
        out: list[list[Callable]] = [[] for _ in self.nodes]
        for t, k in zip(self.terms, self._kernels()):
            if is_static(t):
                continue
            for node, acc in k.contributions(t, self._param):
                out[node].append(acc)
        return out

    def preact(self, i: int, s: State, drive: list, x: torch.Tensor | None = None) -> torch.Tensor:
        """``dPhi/ds_i`` (without nudging); ``x`` is needed only by terms that read the input
        dynamically (none of the built-in ones: input couplings are in the drive)."""
        a = drive[i]
        for acc in self._node_contributions()[i]:
            a = acc(a, x, s)
        if a is None:
            return torch.zeros_like(s[i])
        return a.expand_as(s[i]) if a.ndim == 1 else a

    def sweeper(self, drive: list, beta: float = 0.0, y: torch.Tensor | None = None):
        """``s -> one sweep`` with weights, schedule and target bound once (what solvers iterate).

        Each node: ``s_i <- rho(dPhi/ds_i [- beta dL/ds_out])``; groups of :meth:`schedule` in
        turn (``async``) or all nodes from the old state (``sync``).
        """
        if beta != 0.0 and y is None:
            raise ValueError("a nudged step (beta != 0) needs the targets y")
        contrib = self._node_contributions()
        bounds = [n.bounds for n in self.nodes]
        last = len(self.nodes) - 1
        nudge = self.nudger(beta, y, drive_dtype(drive)) if beta != 0.0 else None

        def node(i: int, s: State) -> torch.Tensor:
            a = drive[i]
            for acc in contrib[i]:
                a = acc(a, None, s)
            if i == last and nudge is not None:
                a = a - beta * nudge(s[i])
            lo, hi = bounds[i]
            if a is None or a.ndim == 1:
                a = torch.zeros_like(s[i]) + (0 if a is None else a)
                return a.clamp_(lo, hi)
            # in place on a fresh tensor (saves an allocation per node per sweep); never on the drive
            return a.clamp(lo, hi) if a is drive[i] else a.clamp_(lo, hi)

        groups = self.schedule()
        if self.update == "sync":
            return lambda s: [node(i, s) for i in range(len(self.nodes))]

        def sweep(s: State) -> State:
            s = list(s)
            for g in groups:
                if len(g) == 1:
                    s[g[0]] = node(g[0], s)
                else:
                    for i in g:  # nodes of one colour do not interact: in-place order is immaterial
                        s[i] = node(i, s)
            return s

        return sweep

    def step(self, s: State, drive: list, beta: float = 0.0, y: torch.Tensor | None = None) -> State:
        """One sweep of the dynamics."""
        return self.sweeper(drive, beta, y)(s)

    # ------------------------------------------------------------------ energy terms
    def phi(self, x: torch.Tensor, s: State) -> torch.Tensor:
        """Primitive ``Phi`` per sample, shape ``(B,)``."""
        return sum(k.phi(t, self._param, x, s) for t, k in zip(self.terms, self._kernels()))

    def energy(self, x: torch.Tensor, s: State, beta: float = 0.0, y: torch.Tensor | None = None) -> torch.Tensor:
        """``E + beta L = 0.5 sum ||s_i||^2 - Phi + beta L`` per sample."""
        e = 0.5 * sum((si ** 2).sum(dim=1) for si in s) - self.phi(x, s)
        return e + beta * self.cost(s[-1], y) if beta != 0.0 else e

    def dphi_dparams(self, x: torch.Tensor, s: State) -> dict[str, torch.Tensor]:
        """``dPhi/dtheta`` averaged over the batch, closed form, ``{param_name: tensor}``."""
        out: dict[str, torch.Tensor] = {}
        for t, k in zip(self.terms, self._kernels()):
            for name, g in k.dphi(t, self._param, x, s).items():
                out[name] = out[name] + g / x.shape[0] if name in out else g / x.shape[0]
        return out

    def contrast(self, x: torch.Tensor, s1: State, s2: State, b1: float, b2: float) -> dict[str, torch.Tensor]:
        """``-(dPhi/dtheta(s2) - dPhi/dtheta(s1)) / (b2 - b1)`` batch mean, ``{param_name: tensor}``."""
        out: dict[str, torch.Tensor] = {}
        bsz, scale = x.shape[0], -1.0 / (b2 - b1)
        with torch.no_grad():
            for t, k in zip(self.terms, self._kernels()):
                diff = k.contrast if hasattr(k, "contrast") else functools.partial(dphi_difference, k)
                fresh = k is DenseFloat or k is BiasFloat  # their contrasts are new tensors: scale in place
                for name, g in diff(t, self._param, x, s1, s2).items():
                    g = g.mul_(scale / bsz) if fresh else g * (scale / bsz)
                    out[name] = out[name] + g if name in out else g
        return out


def dphi_difference(kernel, t, p, x, s1, s2) -> dict[str, torch.Tensor]:
    """``dPhi/dtheta(s2) - dPhi/dtheta(s1)`` (batch sums) from a kernel's ``dphi``: the contrast of
    every kernel that defines no cheaper ``contrast`` of its own."""
    d2, d1 = kernel.dphi(t, p, x, s2), kernel.dphi(t, p, x, s1)
    return {k: d2[k] - d1[k] for k in d2}


def one_hot(y: torch.Tensor, n: int, dtype: torch.dtype) -> torch.Tensor:
    return torch.nn.functional.one_hot(y.long(), n).to(dtype)


def drive_dtype(drive: list) -> torch.dtype | None:
    return next((d.dtype for d in drive if d is not None), None)


# ------------------------------------------------------------------------------ fused chain relaxation
_BASE_METHODS = ("sweeper", "drive", "_node_contributions", "schedule", "preact", "nudger")


def chain_plan(model, drive: list | None = None) -> list | None:
    """The weights of a layered chain, or None when :func:`relax_chain` does not apply.

    Applies to a model with the base float dynamics (none of :data:`_BASE_METHODS` overridden, the
    float kernels of :class:`Dense` / :class:`Bias` unchanged), ``async`` updates, and terms exactly
    ``Dense(0, INPUT), Bias(0), Dense(1, 0), Bias(1), ...`` (the :class:`~models.eqprop_mlp.EqPropMLP`
    layout); ``drive`` (if given) must hold a tensor for node 0 and a bias vector for the others.
    Returns ``[W_0, ..., W_{L-1}]`` (``W_i`` of shape ``(n_i, n_{i-1})``).
    """
    cls = type(model)
    if any(getattr(cls, m, None) is not getattr(EnergyModel, m) for m in _BASE_METHODS):
        return None
    if FLOAT_KERNELS.get(Dense) is not DenseFloat or FLOAT_KERNELS.get(Bias) is not BiasFloat:
        return None
    if getattr(model, "update", None) != "async":
        return None
    terms, n = model.terms, len(model.nodes)
    if len(terms) != 2 * n:
        return None
    for i in range(n):
        d, b = terms[2 * i], terms[2 * i + 1]
        if type(d) is not Dense or type(b) is not Bias or d.post != i or d.pre != (i - 1 if i else INPUT) \
                or b.node != i:
            return None
    if drive is not None:
        if len(drive) != n or drive[0] is None or drive[0].ndim != 2:
            return None
        if any(d is None or d.ndim != 1 for d in drive[1:]):
            return None
    return [model._param(terms[2 * i].weight) for i in range(n)]


def relax_chain(model, drive: list, s0: State, *, beta: float | torch.Tensor, y: torch.Tensor | None,
                n_steps: int, diagnostics: bool = True) -> tuple[State, RelaxInfo | None]:
    """The fixed-point relaxation of a layered chain (:func:`chain_plan`), fused: the same torch ops
    in the same order as :meth:`EnergyModel.sweeper` under :func:`models.solvers.fixed_point`
    (``tol=0``, no damping, no trace), written into preallocated buffers, and an **exact
    fixed-point exit**: once a sweep (the second or later) leaves the nodes the first update group
    reads unchanged, bit for bit and in memory layout, every later sweep is the identity (the
    sweep is deterministic), so the loop stops with the state and :class:`RelaxInfo` the full
    ``n_steps`` sweeps would give. Call under ``torch.no_grad()``. ``beta`` may be a ``(B, 1)``
    tensor (one strength per sample: :func:`relax_chain_pair` stacks two nudged phases).
    ``diagnostics=False`` returns ``(s, None)`` (skips the last residual).

    The result is bit-identical to the generic path (``tests/models/test_fast_relax.py`` checks
    states, diagnostics, EqProp gradients and training steps for every nudging mode).
    """
    W = chain_plan(model, drive)
    if W is None:
        raise ValueError("relax_chain: the model is not a layered Dense/Bias chain with async updates "
                         "(see models.energy.chain_plan); use EnergyModel.relax")
    n = len(model.nodes)
    last = n - 1
    bounds = [nd.bounds for nd in model.nodes]
    per_row = isinstance(beta, torch.Tensor)  # (B, 1) nudging strengths (phases stacked in one batch)
    nudge = model.nudger(1.0 if per_row else beta, y, drive_dtype(drive)) if per_row or beta != 0.0 else None
    groups = model.schedule()
    B = s0[0].shape[0]
    like = drive[0]
    # two buffer sets (ping-pong): node i's forward product (n_i, B) and feedback product (B, n_i)
    fwd = [[torch.empty(nd.size, B, dtype=like.dtype, device=like.device) if i else None
            for i, nd in enumerate(model.nodes)] for _ in range(2)]
    fbk = [[torch.empty(B, nd.size, dtype=like.dtype, device=like.device) if i < last else None
            for i, nd in enumerate(model.nodes)] for _ in range(2)]
    bias_col = [d[:, None] if i else None for i, d in enumerate(drive)]
    # nodes whose values determine the next sweep: all but the first group (which reads only
    # others); the output as well if it is in the first group and reads itself through the nudge
    watch = [i for i in range(n) if i not in groups[0] or (i == last and nudge is not None)]

    def node(i: int, s: State, buf: int) -> torch.Tensor:
        if i:
            a = torch.addmm(bias_col[i], W[i], s[i - 1].t(), out=fwd[buf][i]).t()
        else:
            a = drive[0]
        if i < last:
            a = torch.addmm(a, s[i + 1], W[i + 1], out=fbk[buf][i])
        if i == last and nudge is not None:
            a = a - beta * nudge(s[i])
        lo, hi = bounds[i]
        return a.clamp(lo, hi) if a is drive[0] else a.clamp_(lo, hi)

    s = list(s0)
    prev = s
    fixed = False
    for k in range(1, n_steps + 1):
        prev, s = s, list(s)
        for g in groups:
            for i in g:
                s[i] = node(i, s, k % 2)
        if k >= 2 and k < n_steps and all(s[i].stride() == prev[i].stride() and torch.equal(s[i], prev[i])
                                          for i in watch):
            fixed = True  # the remaining sweeps would map s to itself: residual 0 (states are finite)
            break
    if not diagnostics:
        return s, None
    if fixed:
        res = torch.zeros(B, dtype=s[0].dtype, device=s[0].device)
    else:
        res = torch.stack([(a - b).abs().amax(dim=1) for a, b in zip(s, prev)], dim=0).amax(dim=0)
    conv = res <= 0.0
    steps = torch.full((B,), -1, dtype=torch.long)
    steps[conv] = n_steps
    return s, RelaxInfo(steps, conv, res, torch.zeros(B, dtype=torch.bool), [], n_steps)


def _stack_like(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``cat([a, b])`` along the batch, stored like ``a`` (a transposed view stays a transposed view:
    the products then see the same operand layout as the unstacked phases)."""
    if a.dim() == 2 and a.stride(0) == 1 and a.shape[1] > 1:
        return torch.cat([a.t(), b.t()], dim=1).t()
    return torch.cat([a, b], dim=0)


def _rows(t: torch.Tensor, sl: slice) -> torch.Tensor:
    """Rows ``sl`` of a stacked state, laid out as an unstacked phase's state."""
    part = t[sl]
    return part.t().contiguous().t() if t.dim() == 2 and t.stride(0) == 1 and t.shape[1] > 1 else part.contiguous()


def relax_chain_pair(model, drive: list, s0: State, b1: float, b2: float, y: torch.Tensor,
                     n_steps: int, diagnostics: bool = True) -> tuple[tuple[State, State], tuple]:
    """Two nudged phases (``b1`` and ``b2``) from the same ``s0`` as **one** relaxation of the
    stacked batch ``2B`` (half the ops, twice the rows per product), split back into the two
    phases' states and diagnostics. Row-independent arithmetic (every product row, the nudge and
    the clamp depend on their own sample only): bit-identical to two :func:`relax_chain` calls
    where the BLAS computes a row of a product the same whatever the number of rows (checked by
    ``tests/models/test_fast_relax.py``)."""
    B = s0[0].shape[0]
    drive2 = [_stack_like(drive[0], drive[0])] + list(drive[1:])
    st0 = [_stack_like(t, t) for t in s0]
    y2 = torch.cat([y, y])
    dt = drive_dtype(drive)
    beta = torch.cat([torch.full((B, 1), b1, dtype=dt), torch.full((B, 1), b2, dtype=dt)])
    s, info = relax_chain(model, drive2, st0, beta=beta, y=y2, n_steps=n_steps, diagnostics=diagnostics)
    out, infos = [], []
    for sl in (slice(0, B), slice(B, 2 * B)):
        out.append([_rows(t, sl) for t in s])
        infos.append(None if info is None else RelaxInfo(info.steps[sl], info.converged[sl], info.residual[sl],
                                                         info.cycling[sl], [], info.n_steps))
    return (out[0], out[1]), (infos[0], infos[1])

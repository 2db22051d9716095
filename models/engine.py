"""The phase engine: nudging modes, update schedules, and the EqProp phase sequence, written once.

Every backend (float torch, fake-quant QAT, numba fixed point, torch integer mirror, analog
crossbar, on-chip learning, the sweep, the op counter, the ONNX builders) takes its nudging table,
its layer schedule and its phase sequence from here and supplies only its own arithmetic: a
*relaxation* ``relax(s0, beta, n_steps, step_offset) -> (state, info)`` and a *contrast*.

EqProp estimate of ``d mean(L) / d theta`` from two nudged equilibria (Scellier & Bengio 2017;
symmetric nudging: Laborieux et al. 2021)::

    g = -(dPhi/dtheta(s^{b2}) - dPhi/dtheta(s^{b1})) / (b2 - b1)

Nudging modes (``(b1, b2)``): ``one_sided`` ``(0, beta)`` (``s^{b1}`` is the free state),
``symmetric`` ``(-beta, beta)``, ``random_sign`` ``(0, +-beta)`` with a random sign per batch.

Phase sequence: the free phase from ``s0`` (zeros), then the ``b1`` phase (unless ``b1 == 0``) and
the ``b2`` phase, both started from the free equilibrium. Backends whose randomness is counter based
(stochastic rounding, read noise with explicit counters) get each phase's first counter step from
:data:`COUNTER_LAYOUT`: the free phase uses steps ``[o, o + n_free)``, the ``b2`` phase
``[o + n_free, o + n_free + n_nudge)`` and the ``b1`` phase the next ``n_nudge`` steps, so results
do not depend on the order in which the phases are computed.

>>> nudge_betas("symmetric", 0.1), nudge_betas("one_sided", 0.1)
((-0.1, 0.1), (0.0, 0.1))
>>> schedule_groups("async", [(0, 1), (1, 2)], 3)     # a chain: even nodes, then odd ones
[[0, 2], [1]]
>>> schedule_groups("sync", [(0, 1), (1, 2)], 3)
[[0, 1, 2]]
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping, Sequence

import torch

from quant.spec import UnsupportedError as _QuantUnsupportedError

NUDGINGS = ("one_sided", "symmetric", "random_sign")
"""Nudging modes: how ``(b1, b2)`` follow from ``beta``."""
UPDATES = ("async", "sync")
"""Update schedules: ``async`` colours the node graph and updates one colour at a time (block
coordinate descent on the energy: it settles); ``sync`` updates every node from the old state (can
cycle with period 2)."""
PHASES = ("free", "b1", "b2")
COUNTER_LAYOUT = {"free": 0, "b2": 1, "b1": 2}
"""Order of the phases in a backend's counter space (in units of phase lengths, see module doc)."""


def check_nudging(mode: str, allowed: Sequence[str] = NUDGINGS, who: str = "nudging mode") -> str:
    """Validate a nudging mode name against ``allowed`` (a backend may support a subset)."""
    if mode not in allowed:
        raise ValueError(f"{who}={mode!r} is invalid; allowed: {tuple(allowed)}")
    return mode


def check_update(update: str, who: str = "update") -> str:
    if update not in UPDATES:
        raise ValueError(f"{who}={update!r} is invalid; allowed: {UPDATES}")
    return update


def check_beta(beta: float) -> float:
    if not (isinstance(beta, (int, float)) and beta > 0 and beta != float("inf")):
        raise ValueError(f"beta={beta!r} is invalid; allowed: a finite float > 0 (the sign is set by the nudging mode)")
    return float(beta)


def nudge_betas(mode: str, beta: float, generator: torch.Generator | None = None) -> tuple[float, float]:
    """``(b1, b2)`` of a nudging mode (``random_sign`` draws its sign from ``generator``)."""
    check_nudging(mode)
    beta = check_beta(beta)
    if mode == "symmetric":
        return -beta, beta
    if mode == "one_sided":
        return 0.0, beta
    sign = 1.0 if torch.rand((), generator=generator) < 0.5 else -1.0
    return 0.0, sign * beta


def beta_span(mode: str, beta: float) -> float:
    """``|b2 - b1|`` of a mode (what the contrast divides by)."""
    return 2.0 * beta if mode == "symmetric" else beta


def n_nudged_phases(mode: str) -> int:
    """How many nudged relaxations a mode runs (2 for symmetric, else 1)."""
    return 2 if check_nudging(mode) == "symmetric" else 1


def phase_offsets(n_free_steps: int, n_nudge_steps: int, offset: int = 0) -> dict[str, int]:
    """First counter step of each phase (see :data:`COUNTER_LAYOUT`).

    >>> phase_offsets(30, 10, offset=100)
    {'free': 100, 'b2': 130, 'b1': 140}
    """
    return {"free": offset, "b2": offset + n_free_steps, "b1": offset + n_free_steps + n_nudge_steps}


def steps_per_update(n_free_steps: int, n_nudge_steps: int) -> int:
    """Counter steps one EqProp update reserves (free + two nudged phases, whatever the mode)."""
    return n_free_steps + 2 * n_nudge_steps


def schedule_groups(update: str, edges: Iterable[tuple[int, int]], n_nodes: int) -> list[list[int]]:
    """Update groups of the state nodes ``0 .. n_nodes-1``.

    ``async``: a greedy colouring of the interaction graph (``edges`` between state nodes that
    share a term), nodes in index order; nodes of one colour do not interact, so updating them
    together is exact block coordinate descent. For a chain it gives even nodes, then odd ones.
    ``sync``: one group of all nodes, every node computed from the old state.
    """
    check_update(update)
    if update == "sync":
        return [list(range(n_nodes))]
    nbrs: dict[int, set[int]] = {i: set() for i in range(n_nodes)}
    for a, b in edges:
        if a != b:
            nbrs[a].add(b)
            nbrs[b].add(a)
    colour: dict[int, int] = {}
    for i in range(n_nodes):
        used = {colour[j] for j in nbrs[i] if j in colour}
        colour[i] = next(c for c in range(n_nodes + 1) if c not in used)
    return [[i for i in range(n_nodes) if colour[i] == c] for c in sorted(set(colour.values()))]


@dataclass
class Phases:
    """The equilibria of one EqProp step: ``free``, ``s1`` (at ``b1``), ``s2`` (at ``b2``), and the
    relaxation diagnostics of each phase (``infos[name]``; ``b1`` absent when ``b1 == 0``)."""

    free: Any
    s1: Any
    s2: Any
    b1: float
    b2: float
    infos: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return {"free": self.free, "s1": self.s1, "s2": self.s2, "b1": self.b1, "b2": self.b2}


Relax = Callable[..., tuple[Any, Any]]
"""``relax(s0, *, beta, n_steps, step_offset) -> (state, info)``; ``s0=None`` means zeros."""


def run_phases(relax: Relax, *, beta: float, mode: str = "symmetric", n_free_steps: int = 30,
               n_nudge_steps: int = 10, free_state: Any = None, generator: torch.Generator | None = None,
               offset: int = 0, allowed: Sequence[str] = NUDGINGS) -> Phases:
    """Run the EqProp phase sequence through a backend's relaxation.

    Args:
        relax: the backend's relaxation (bound to its inputs and targets).
        beta, mode: nudging strength (> 0) and mode (:data:`NUDGINGS`, or the backend's ``allowed``).
        free_state: reuse a free equilibrium instead of relaxing again.
        offset: first counter step (counter-based backends; see :func:`phase_offsets`).
    """
    check_nudging(mode, allowed)
    b1, b2 = nudge_betas(mode, beta, generator)
    off = phase_offsets(n_free_steps, n_nudge_steps, offset)
    infos: dict[str, Any] = {}
    if free_state is None:
        free_state, infos["free"] = relax(None, beta=0.0, n_steps=n_free_steps, step_offset=off["free"])
    s1 = free_state
    if b1 != 0.0:
        s1, infos["b1"] = relax(free_state, beta=b1, n_steps=n_nudge_steps, step_offset=off["b1"])
    s2, infos["b2"] = relax(free_state, beta=b2, n_steps=n_nudge_steps, step_offset=off["b2"])
    return Phases(free_state, s1, s2, b1, b2, infos)


# ------------------------------------------------------------------------- backend capabilities
UnsupportedError = _QuantUnsupportedError
"""A backend was asked for an interaction term, spec or mode it does not implement (one class for
term, spec and mode refusals: :class:`quant.spec.UnsupportedError`)."""


def require_kernels(backend: str, kernels: Mapping[type, Any], terms: Iterable[Any]) -> list[Any]:
    """The kernel of every term, from a table keyed by term type; raise naming what is missing.

    >>> from models.energy import Dense
    >>> require_kernels("demo", {}, [Dense(post=0, pre=-1, weight="w")])
    Traceback (most recent call last):
    ...
    quant.spec.UnsupportedError: backend 'demo' has no kernel for interaction term Dense(post=0, pre=-1, weight='w'); it supports: (none)
    """
    out = []
    for t in terms:
        k = kernels.get(type(t))
        if k is None:
            names = ", ".join(sorted(c.__name__ for c in kernels)) or "(none)"
            raise UnsupportedError(f"backend {backend!r} has no kernel for interaction term {t}; it supports: {names}")
        out.append(k)
    return out

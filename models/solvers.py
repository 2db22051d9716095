"""Fixed-point solvers with one signature: ``relax(step, s0, *, max_steps, tol, damping, method)``.

A state is a list of tensors, each ``(B, n_i)`` (batch first); ``step`` maps a state to the next one.
Every solver reports, per sample, the steps it took to converge, the final residual
``max_i |step(s)_i - s_i|`` and whether the sample is caught in a period-2 limit cycle (synchronous
updates of layered nets and quantized dynamics do that), plus the batch-max residual after each step.

>>> import torch
>>> step = lambda s: [0.5 * s[0] + 1.0]          # fixed point 2
>>> s, info = relax(step, [torch.zeros(3, 1)], max_steps=100, tol=1e-6)
>>> round(float(s[0][0, 0]), 4), bool(info.converged.all())
(2.0, True)
>>> s, info = relax(step, [torch.zeros(3, 1)], max_steps=100, tol=1e-10, method="anderson")
>>> int(info.steps.max()) < 10
True
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch

State = list[torch.Tensor]
Step = Callable[[State], State]


@dataclass
class RelaxInfo:
    """Diagnostics of one relaxation (per-sample tensors have shape ``(B,)``).

    Attributes:
        steps: steps taken until the residual first fell to ``tol`` (``-1``: never).
        converged: ``residual <= tol`` at the end (with ``tol=0`` only exact fixed points count).
        residual: final per-sample residual ``max |step(s) - s|``.
        cycling: residual stayed above ``tol`` while the state repeated with period 2.
        trace: batch-max residual after every step (length = steps run).
        n_steps: steps run.
    """

    steps: torch.Tensor
    converged: torch.Tensor
    residual: torch.Tensor
    cycling: torch.Tensor
    trace: list[float] = field(default_factory=list)
    n_steps: int = 0

    def summary(self) -> dict[str, float]:
        return {
            "n_steps": self.n_steps,
            "max_residual": float(self.residual.max()),
            "frac_converged": float(self.converged.float().mean()),
            "frac_cycling": float(self.cycling.float().mean()),
        }


def _residual(a: State, b: State) -> torch.Tensor:
    return torch.stack([(x - y).abs().amax(dim=1) for x, y in zip(a, b)], dim=0).amax(dim=0)


def fixed_point(step: Step, s0: State, *, max_steps: int, tol: float = 0.0, damping: float = 0.0,
                record_trace: bool = True) -> tuple[State, RelaxInfo]:
    """Plain (optionally damped) iteration ``s <- (1 - damping) step(s) + damping s``."""
    s = [t for t in s0]
    b = s[0].shape[0]
    steps = torch.full((b,), -1, dtype=torch.long)
    prev2: State | None = None
    cyc = torch.zeros(b, dtype=torch.bool)
    trace: list[float] = []
    res = torch.full((b,), float("inf"), dtype=s[0].dtype)
    n = 0
    diagnose = tol > 0 or record_trace
    for n in range(1, max_steps + 1):
        new = step(s)
        if damping:
            new = [(1.0 - damping) * a + damping * c for a, c in zip(new, s)]
        if not diagnose and n < max_steps:  # fixed step count, no trace: residual of the last step only
            s = new
            continue
        res = _residual(new, s)
        if record_trace:
            trace.append(float(res.max()))
        done = (res <= tol) & (steps < 0)
        steps[done] = n
        # period-2: back to where we were two steps ago, but not at a fixed point
        cyc = (res > tol) & (_residual(new, prev2) <= max(tol, 1e-12)) if prev2 is not None else cyc
        prev2, s = s, new
        if tol > 0 and bool((steps >= 0).all()):
            break
    return s, RelaxInfo(steps, res <= tol, res, cyc, trace, n)


def anderson(step: Step, s0: State, *, max_steps: int, tol: float = 0.0, damping: float = 0.0,
             m: int = 5, lam: float = 1e-4, record_trace: bool = True) -> tuple[State, RelaxInfo]:
    """Anderson acceleration (type II, memory ``m``) on the flattened per-sample state.

    Mixing weights solve ``min ||sum_j alpha_j (f_j - x_j)||^2 + lam ||alpha||^2, sum alpha = 1``
    (Walker & Ni 2011; as in torchdeq, but with ``lam`` relative to the mean ``||f_j - x_j||^2`` so
    that it does not dominate near convergence). ``damping`` mixes ``(1 - damping)`` of the extrapolated
    ``f`` with ``damping`` of the extrapolated ``x``. The returned state is the last ``step`` output,
    so it lies in the step's range (e.g. the box [0, 1] of a hard sigmoid).
    """
    sizes = [t.shape[1] for t in s0]
    bsz = s0[0].shape[0]
    dtype, dev = s0[0].dtype, s0[0].device

    def flat(s: State) -> torch.Tensor:
        return torch.cat(s, dim=1)

    def unflat(v: torch.Tensor) -> State:
        return list(torch.split(v, sizes, dim=1))

    d = sum(sizes)
    X = torch.zeros(bsz, m, d, dtype=dtype, device=dev)
    F = torch.zeros(bsz, m, d, dtype=dtype, device=dev)
    X[:, 0] = flat(s0)
    F[:, 0] = flat(step(unflat(X[:, 0])))
    H = torch.zeros(bsz, m + 1, m + 1, dtype=dtype, device=dev)
    H[:, 0, 1:] = H[:, 1:, 0] = 1
    y = torch.zeros(bsz, m + 1, 1, dtype=dtype, device=dev)
    y[:, 0] = 1
    steps = torch.full((bsz,), -1, dtype=torch.long)
    trace: list[float] = []
    res = (F[:, 0] - X[:, 0]).abs().amax(dim=1)
    if record_trace:
        trace.append(float(res.max()))
    steps[res <= tol] = 1
    k_last, n = 0, 1
    for k in range(1, max_steps):
        n = min(k, m)
        G = F[:, :n] - X[:, :n]
        GG = G @ G.transpose(1, 2)
        # regularisation relative to the residual scale, so it does not dominate near convergence
        reg = lam * GG.diagonal(dim1=1, dim2=2).mean(dim=1).clamp_min(torch.finfo(dtype).tiny)
        H[:, 1:n + 1, 1:n + 1] = GG + reg[:, None, None] * torch.eye(n, dtype=dtype, device=dev)
        alpha = torch.linalg.solve(H[:, :n + 1, :n + 1], y[:, :n + 1])[:, 1:n + 1, 0]
        xk = (1 - damping) * (alpha[:, None] @ F[:, :n])[:, 0] + damping * (alpha[:, None] @ X[:, :n])[:, 0]
        X[:, k % m] = xk
        F[:, k % m] = flat(step(unflat(xk)))
        res = (F[:, k % m] - X[:, k % m]).abs().amax(dim=1)
        k_last = k % m
        if record_trace:
            trace.append(float(res.max()))
        done = (res <= tol) & (steps < 0)
        steps[done] = k + 1
        n = k + 1
        if tol > 0 and bool((steps >= 0).all()):
            break
    out = unflat(F[:, k_last].clone())
    # residual of the returned state itself
    res = _residual(step(out), out)
    return out, RelaxInfo(steps, res <= tol, res, torch.zeros(bsz, dtype=torch.bool), trace, n)


SOLVERS: dict[str, Callable[..., tuple[State, RelaxInfo]]] = {"fixed_point": fixed_point, "anderson": anderson}


def register_solver(name: str, fn: Callable[..., tuple[State, RelaxInfo]]) -> None:
    SOLVERS[name] = fn


def get_solver(name: str) -> Callable[..., tuple[State, RelaxInfo]]:
    if name not in SOLVERS:
        raise ValueError(f"unknown solver method={name!r}; valid: {sorted(SOLVERS)}")
    return SOLVERS[name]


def relax(step: Step, s0: Sequence[torch.Tensor], *, max_steps: int, tol: float = 0.0,
          damping: float = 0.0, method: str = "fixed_point", **kwargs) -> tuple[State, RelaxInfo]:
    """Run solver ``method`` on ``step`` from ``s0``; see the module docstring."""
    if max_steps < 1:
        raise ValueError(f"max_steps={max_steps} must be >= 1")
    if not 0.0 <= damping < 1.0:
        raise ValueError(f"damping={damping} must be in [0, 1)")
    if tol < 0:
        raise ValueError(f"tol={tol} must be >= 0")
    return get_solver(method)(step, list(s0), max_steps=max_steps, tol=tol, damping=damping, **kwargs)

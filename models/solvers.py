"""Fixed-point solvers with one signature: ``relax(step, s0, *, max_steps, tol, damping, method)``,
and :func:`iterate`, the one settling loop of the integer backends (codes: "converged" = settled).

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
from typing import Any, Callable, Sequence

import numpy as np
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


# ------------------------------------------------------------------------------ integer dynamics
@dataclass
class IntRelaxInfo(RelaxInfo):
    """:class:`RelaxInfo` of an integer (code) relaxation; per-sample numpy arrays of shape ``(B,)``.

    With integer codes "converged" means *settled*: the last sweep changed no code of the sample (an
    exact fixed point for deterministic rounding; ``tol`` is 0). ``residual`` is the largest code
    change of the sample in the last sweep, ``trace`` (``record_trace``) the number of samples whose
    codes changed in each sweep, ``n_overflow`` (per node) the backend's accumulator overflows.
    """

    n_overflow: Any = None

    def summary(self) -> dict:
        """Scalar summary (fractions over the batch)."""
        return {"n_steps": int(self.n_steps), "frac_converged": float(np.mean(self.converged)),
                "frac_cycling": float(np.mean(self.cycling)),
                "n_overflow": int(np.sum(self.n_overflow)) if self.n_overflow is not None else 0}


def _np(a) -> np.ndarray:
    return a.numpy() if isinstance(a, torch.Tensor) else np.asarray(a)


def _sample_residual(a: State, b: State) -> np.ndarray:
    """Per-sample ``max_i |a_i - b_i|`` (int64 for integer states, float64 otherwise)."""
    ds = [_np(abs(x - y)).max(axis=1) for x, y in zip(a, b) if x.shape[1]]
    if not ds:
        return np.zeros(len(a[0]) if a else 0, dtype=np.int64)
    r = np.max(np.stack(ds), axis=0)
    return r.astype(np.int64) if r.dtype.kind in "iub" else r.astype(np.float64)


def iterate(sweep: Callable, s0: State, *, max_steps: int, tol: float = 0.0, early_exit: bool = True,
            record_trace: bool = False) -> tuple[State, IntRelaxInfo]:
    """The settling loop of every integer backend (numpy int arrays or torch int tensors alike).

    ``sweep(s, t) -> (s_new, changed)`` runs sweep ``t`` (0-based; the backend adds its counter
    offset) and returns the new state and the per-sample flag "some code changed" (``None``: computed
    here as ``max |s_new - s| > tol``; ``tol = 0`` for codes, a float tolerance for analog states). Diagnostics as in :class:`IntRelaxInfo`: ``steps`` = first sweep
    (1-based) after which the sample's codes did not change (``-1``: never), ``cycling`` = the last
    sweep changed the sample but its codes equal those two sweeps earlier (period 2).

    Args:
        early_exit: stop after a sweep that changed no code of any sample (pass it only when the
            sweep is deterministic: further sweeps are then the identity).

    >>> import numpy as np
    >>> s, info = iterate(lambda s, t: ([np.minimum(s[0] + 1, 3)], None), [np.zeros((2, 1), np.int64)], max_steps=10)
    >>> s[0].ravel().tolist(), info.steps.tolist(), info.n_steps, bool(info.converged.all())
    ([3, 3], [4, 4], 4, True)
    >>> s, info = iterate(lambda s, t: ([1 - s[0]], None), [np.zeros((1, 1), np.int64)], max_steps=5)
    >>> bool(info.cycling[0]), int(info.residual[0]), info.steps.tolist()
    (True, 1, [-1])
    """
    if max_steps < 1:
        raise ValueError(f"max_steps={max_steps} must be >= 1")
    s = list(s0)
    B = len(s[0]) if s else 0
    steps = np.full(B, -1, dtype=np.int64)
    changed = np.zeros(B, dtype=bool)
    hist = [s]  # the last three states, for period-2 detection and the last residual
    trace: list[float] = []
    n_run = 0
    for t in range(max_steps):
        new, ch = sweep(s, t)
        changed = _sample_residual(new, s) > tol if ch is None else _np(ch)
        s = new
        n_run = t + 1
        steps[(steps < 0) & ~changed] = n_run
        hist = (hist + [s])[-3:]
        if record_trace:
            trace.append(float(changed.sum()))
        if early_exit and not changed.any():
            break
    cycling = np.zeros(B, dtype=bool)
    if len(hist) == 3:
        cycling = changed & ~(_sample_residual(hist[2], hist[0]) > tol)
    residual = _sample_residual(hist[-1], hist[-2]) if len(hist) >= 2 else np.zeros(B, dtype=np.int64)
    return s, IntRelaxInfo(steps, ~changed, residual, cycling, trace, n_run)


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

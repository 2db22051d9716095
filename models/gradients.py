"""Exact-gradient baselines for EqProp, on the same weights and inputs, and how to compare them.

- :func:`bptt_grads`: autograd through ``n_steps`` sweeps of the free phase (the dynamics as run).
- :func:`implicit_grads`: the adjoint gradient at the free fixed point ``s* = G(s*)`` of the
  synchronous map ``G(s) = rho(M s + c)``: solve ``(I - J^T) lam = dL/ds`` per sample with
  ``J = D M`` (``D`` = 1 where the hard sigmoid is in its linear range), then
  ``dL/dtheta = lam^T dG/dtheta`` by one vector-Jacobian product at the fixed state (async and sync
  sweeps share their fixed points, so this is the gradient of the equilibrium either way).
- :func:`compare_grads`: per-layer cosine, relative error, sign agreement.

>>> import torch
>>> from models.eqprop_mlp import EqPropMLP, EqPropConfig
>>> net = EqPropMLP(EqPropConfig(sizes=(6, 5, 3)), seed=1).double()
>>> x = torch.rand(4, 6, dtype=torch.float64); y = torch.tensor([0, 1, 2, 0])
>>> gb = bptt_grads(net, x, y, n_steps=200)
>>> gi = implicit_grads(net, x, y, n_steps=200)
>>> ge = net.eqprop_grads(x, y, beta=1e-4, mode="symmetric", n_free_steps=200, n_nudge_steps=200)
>>> min(r["cosine"] for r in compare_grads(ge, gb)) > 0.999
True
>>> min(r["cosine"] for r in compare_grads(gi, gb)) > 0.999999
True
"""
from __future__ import annotations

from typing import Any

import torch

from .energy import INPUT, Bias, Dense, is_static
from .eqprop_mlp import EqPropMLP


def bptt_grads(net: EqPropMLP, x: torch.Tensor, y: torch.Tensor, *, n_steps: int) -> dict[str, torch.Tensor]:
    """``d mean L(s_T) / d theta`` by autograd through ``n_steps`` free sweeps from zero."""
    params = dict(net.named_parameters())
    with torch.enable_grad():
        s = net.zero_state(x.shape[0], x)
        drive = net.drive(x)
        for _ in range(n_steps):
            s = net.step(s, drive)
        loss = net.cost(s[-1], y).mean()
        grads = torch.autograd.grad(loss, list(params.values()), allow_unused=True)
    return {k: (g if g is not None else torch.zeros_like(p)) for (k, p), g in zip(params.items(), grads)}


def coupling_matrix(net) -> torch.Tensor | None:
    """Dense symmetric ``M`` with ``dPhi/ds = M s + c(x)`` over the concatenated state, or None when
    the model has a term that is not linear in the states (e.g. a pooled convolution).

    Built from the model's terms: each :class:`~models.energy.Dense` between two state nodes puts
    ``W`` and ``W^T`` in its blocks; static terms (input couplings, biases) only enter ``c(x)``.
    """
    sizes = [n.size for n in net.nodes]
    offs = [0]
    for n in sizes:
        offs.append(offs[-1] + n)
    dtype = next(net.parameters()).dtype
    M = torch.zeros(offs[-1], offs[-1], dtype=dtype)
    for t in net.terms:
        if not isinstance(t, (Dense, Bias)):
            if is_static(t):
                continue
            return None
        if isinstance(t, Bias) or t.pre == INPUT:
            continue
        W = net.get_parameter(t.weight).detach()  # (n_post, n_pre)
        M[offs[t.post]:offs[t.post + 1], offs[t.pre]:offs[t.pre + 1]] += W
        M[offs[t.pre]:offs[t.pre + 1], offs[t.post]:offs[t.post + 1]] += W.t()
    return M


def _adjoint_dense(M: torch.Tensor, D: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """``(I - J^T) lam = g`` with ``J = diag(D) M``, one dense solve per sample."""
    eye = torch.eye(M.shape[0], dtype=M.dtype, device=M.device)
    lam = torch.empty_like(g)
    Mt = M.t()
    for b in range(g.shape[0]):  # one dense solve per sample (batched LU hit an MKL DLASWP error under load)
        A = eye - Mt * D[b][None, :]  # I - J^T, J = diag(D) M
        lam[b] = torch.linalg.solve(A, g[b])
    return lam


def _adjoint_matrix_free(net, s: list[torch.Tensor], drive: list, D: torch.Tensor, g: torch.Tensor,
                         tol: float) -> torch.Tensor:
    """``(I - J^T) lam = g`` with ``J = diag(D) d(dPhi/ds)/ds`` by GMRES (scipy) on vector-Jacobian
    products of the pre-activation map (autograd at the fixed state; the whole batch as one
    block-diagonal system). For models with terms that are not linear in the states."""
    import numpy as np
    from scipy.sparse.linalg import LinearOperator, gmres

    sizes = [t.shape[1] for t in s]
    leaves = [t.detach().clone().requires_grad_() for t in s]
    with torch.enable_grad():
        pre = torch.cat([net.preact(i, leaves, drive) for i in range(len(sizes))], dim=1)

    def matvec(v: np.ndarray) -> np.ndarray:
        lam = torch.as_tensor(v.reshape(g.shape), dtype=g.dtype)
        jt = torch.autograd.grad(pre, leaves, grad_outputs=D * lam, retain_graph=True)  # J^T lam
        return (lam - torch.cat(jt, dim=1)).reshape(-1).numpy()

    n = g.numel()
    op = LinearOperator((n, n), matvec=matvec, dtype=np.float64)
    sol, info = gmres(op, g.reshape(-1).double().numpy(), rtol=tol, atol=0.0, restart=min(n, 200), maxiter=50)
    if info != 0:
        raise RuntimeError(f"implicit gradient: GMRES did not converge (info={info}); relax the free phase "
                           "further or raise tol")
    return torch.as_tensor(sol.reshape(g.shape), dtype=g.dtype)


def implicit_grads(net, x: torch.Tensor, y: torch.Tensor, *, n_steps: int = 1000,
                   tol: float = 1e-12, free_state: list[torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """Adjoint gradient at the free fixed point (see module docstring).

    Models whose terms are all :class:`~models.energy.Dense`/:class:`~models.energy.Bias` use the
    dense coupling matrix (one exact solve per sample); others (pooled convolutions, ...) a
    matrix-free GMRES solve on autograd vector-Jacobian products (relative residual ``tol``).
    """
    if free_state is None:
        free_state, _ = net.free_phase(x, n_steps=n_steps, tol=tol)
    s = [t.detach() for t in free_state]
    bsz = x.shape[0]
    M = coupling_matrix(net)
    with torch.no_grad():
        drive = net.drive(x)
        pre = torch.cat([net.preact(i, s, drive) for i in range(len(net.nodes))], dim=1)
        lo = torch.cat([torch.full((n.size,), n.bounds[0], dtype=pre.dtype) for n in net.nodes])
        hi = torch.cat([torch.full((n.size,), n.bounds[1], dtype=pre.dtype) for n in net.nodes])
        D = ((pre > lo) & (pre < hi)).to(pre.dtype)  # (B, N): inside the box, where rho' = 1
        g_out = net.cost_grad(s[-1], y) / bsz  # d mean(L) / d s_out
        g = torch.zeros_like(pre)
        g[:, -s[-1].shape[1]:] = g_out
    lam = _adjoint_dense(M, D, g) if M is not None else _adjoint_matrix_free(net, s, drive, D, g, max(tol, 1e-12))
    params = dict(net.named_parameters())
    with torch.enable_grad():
        d = net.drive(x)
        out = torch.cat([torch.clamp(net.preact(i, s, d), *n.bounds) for i, n in enumerate(net.nodes)], dim=1)
        grads = torch.autograd.grad(out, list(params.values()), grad_outputs=lam, allow_unused=True)
    return {k: (gr if gr is not None else torch.zeros_like(p)) for (k, p), gr in zip(params.items(), grads)}


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.flatten().double(), b.flatten().double()
    den = float(a.norm() * b.norm())
    return float((a @ b) / den) if den > 0 else float("nan")


def compare_grads(est: dict[str, torch.Tensor], ref: dict[str, torch.Tensor],
                  sign_eps: float = 1e-12) -> list[dict[str, Any]]:
    """Per parameter: ``cosine``, ``rel_error = ||est - ref|| / ||ref||``, ``sign_agreement``.

    Sign agreement counts entries where ``|ref| > sign_eps * max|ref|`` (zeros have no sign).
    """
    rows = []
    for k in ref:
        a, b = est[k].double(), ref[k].double()
        nb = float(b.norm())
        mask = b.abs() > sign_eps * float(b.abs().max()) if nb > 0 else torch.zeros_like(b, dtype=torch.bool)
        sa = float((torch.sign(a[mask]) == torch.sign(b[mask])).double().mean()) if bool(mask.any()) else float("nan")
        rows.append({
            "param": k,
            "cosine": cosine(a, b),
            "rel_error": float((a - b).norm()) / nb if nb > 0 else float("nan"),
            "sign_agreement": sa,
        })
    return rows

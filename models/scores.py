"""Per-input confidence scores read off a free relaxation (out-of-distribution detection, Track 36).

An energy model settles to a minimum of ``E = 0.5 sum_i ||s_i||^2 - Phi`` over the box; the plan
claims the value of that minimum, and the time it takes to reach it, tell in-distribution inputs
from out-of-distribution ones. From one free phase (``beta = 0``) per input:

========================  ==============================================================  =========
score                     definition (per sample)                                          higher =
========================  ==============================================================  =========
``energy``                ``E(x, s*) = 0.5 sum_i ||s*_i||^2 - Phi(x, s*)`` at the fixed point  out
``phi``                   ``Phi(x, s*)``, the primitive the dynamics ascend                   in
``settling_steps``        sweeps until the residual ``max |step(s) - s|`` first fell to ``tol``  out
                          (``n_steps + 1`` when it never did: a censored count)
``max_softmax``           ``max_k p_k`` of the output (see :func:`output_probs`)              in
``margin``                ``s*_out[top1] - s*_out[top2]``, the two largest output states       in
========================  ==============================================================  =========

The last column is the orientation, fixed *a priori* from the physics and the usual reading of the
baselines, never chosen on test data: a settled network sits at low energy (high ``Phi``) on inputs
like those it was trained on and settles quickly; a confident output has a peaked distribution and a
wide margin. :func:`confidence` applies it (``HIGHER_IS_IN``), so that for every score higher means
"more in-distribution" and an AUROC of 0.5 means no information.

``output_probs`` for a cross-entropy model is ``softmax(ce_scale * s_out)`` (the distribution its
cost trains); for an MSE model, whose output states are trained towards a one-hot target in
``[0, 1]``, it is the states normalised to sum 1 (uniform when they are all 0). Both are the
"max-softmax" baseline of Hendrycks & Gimpel (2017) for this model family.

The scores are computed here for the float model; the hardware paths (integer simulator, analog
crossbar) relax on their own arithmetic and hand their states to :func:`scores_from_states` with the
energy of the model they hold (``tracks/t36_ood_energy.py``).

>>> import torch
>>> from models.eqprop_mlp import EqPropMLP, EqPropConfig
>>> net = EqPropMLP(EqPropConfig(sizes=(6, 5, 3)), seed=0).double()
>>> raw = free_phase_scores(net, torch.rand(4, 6, dtype=torch.float64), n_steps=50, tol=1e-8)
>>> sorted(raw), raw["energy"].shape
(['energy', 'margin', 'max_softmax', 'phi', 'settling_steps'], (4,))
>>> conf = confidence(raw)
>>> bool((conf["energy"] == -raw["energy"]).all()), bool((conf["phi"] == raw["phi"]).all())
(True, True)
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch

SCORES = ("energy", "phi", "settling_steps", "max_softmax", "margin")
"""Score names, in report order."""

HIGHER_IS_IN: dict[str, bool] = {
    "energy": False,          # low energy at the fixed point = in-distribution (the physics)
    "phi": True,              # high Phi = low energy
    "settling_steps": False,  # settles fast = in-distribution
    "max_softmax": True,      # peaked output distribution = confident
    "margin": True,           # wide top1 - top2 gap = confident
}
"""Orientation of each score, fixed a priori: ``True`` when a larger raw value means in-distribution."""


def output_probs(s_out: torch.Tensor, *, cost: str, ce_scale: float) -> torch.Tensor:
    """Output distribution ``(B, K)``: ``softmax(ce_scale * s_out)`` for ``cost="ce"``, the states
    normalised to sum 1 for ``cost="mse"`` (uniform ``1/K`` where every state is 0).

    >>> output_probs(torch.tensor([[0.0, 1.0], [0.0, 0.0]]), cost="mse", ce_scale=4.0).tolist()
    [[0.0, 1.0], [0.5, 0.5]]
    """
    if cost == "ce":
        return torch.softmax(ce_scale * s_out, dim=1)
    if cost != "mse":
        raise ValueError(f"cost={cost!r} is invalid; allowed: 'mse' or 'ce'")
    s = s_out.clamp_min(0.0)
    tot = s.sum(dim=1, keepdim=True)
    k = s.shape[1]
    return torch.where(tot > 0, s / tot.clamp_min(torch.finfo(s.dtype).tiny), torch.full_like(s, 1.0 / k))


def steps_to_settle(steps, n_steps: int) -> np.ndarray:
    """Per-sample settling steps as float64, ``-1`` (never settled within ``n_steps``) -> ``n_steps + 1``.

    >>> steps_to_settle(np.array([3, -1]), 10).tolist()
    [3.0, 11.0]
    """
    a = np.asarray(steps.cpu() if isinstance(steps, torch.Tensor) else steps, dtype=np.float64).copy()
    a[a < 0] = n_steps + 1
    return a


def scores_from_states(energy_fn: Callable, phi_fn: Callable, x: torch.Tensor, s: Sequence[torch.Tensor],
                       steps, n_steps: int, *, cost: str, ce_scale: float) -> dict[str, np.ndarray]:
    """Raw scores (the table of the module docstring) of settled states ``s`` of inputs ``x``.

    Args:
        energy_fn, phi_fn: ``(x, s) -> (B,)`` energy ``E`` and ``Phi`` of the model the states
            belong to (e.g. ``net.energy`` / ``net.phi``, or those of a quantised copy).
        s: the settled states, float, ``[(B, n_i), ...]``, output last.
        steps: per-sample steps to settle (``-1``: never), from the relaxation's ``info.steps``.
        n_steps: the relaxation's step budget (the censoring value is ``n_steps + 1``).

    Returns:
        ``{score: float64 array (B,)}``.
    """
    with torch.no_grad():
        e = energy_fn(x, list(s))
        phi = phi_fn(x, list(s))
        out = s[-1]
        p = output_probs(out, cost=cost, ce_scale=ce_scale)
        top2 = out.topk(2, dim=1).values if out.shape[1] >= 2 else torch.cat([out, out * 0], dim=1)
    np64 = lambda t: t.detach().to("cpu", torch.float64).numpy()  # noqa: E731
    return {"energy": np64(e), "phi": np64(phi), "settling_steps": steps_to_settle(steps, n_steps),
            "max_softmax": np64(p.max(dim=1).values), "margin": np64(top2[:, 0] - top2[:, 1])}


def free_phase_scores(net, x: torch.Tensor, *, n_steps: int = 100, tol: float = 1e-4,
                      batch_size: int = 1000) -> dict[str, np.ndarray]:
    """Raw scores of the float model from its free phase (``net.free_phase(x, n_steps, tol=tol)``),
    in batches of ``batch_size``; ``x`` is cast to the model's dtype.

    ``tol`` is the settling threshold ``eps`` on the per-sample residual ``max |step(s) - s|``; with
    ``tol > 0`` the relaxation stops once every sample of the batch settled (those already settled
    stay at their fixed point).
    """
    if n_steps < 1 or tol <= 0:
        raise ValueError(f"n_steps={n_steps}, tol={tol} are invalid; allowed: n_steps >= 1 and tol > 0")
    dtype = next(net.parameters()).dtype
    cost, ce_scale = net.config.cost, float(net.config.ce_scale)
    parts = []
    for a in range(0, x.shape[0], batch_size):
        xb = x[a:a + batch_size].to(dtype)
        s, info = net.free_phase(xb, n_steps=n_steps, tol=tol)
        parts.append(scores_from_states(net.energy, net.phi, xb, s, info.steps, n_steps, cost=cost, ce_scale=ce_scale))
    return {k: np.concatenate([p[k] for p in parts]) for k in SCORES}


def confidence(raw: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Oriented scores: ``raw`` times ``+1`` / ``-1`` per :data:`HIGHER_IS_IN` (higher = in-distribution).

    Raises:
        ValueError: a score name without an orientation.
    """
    unknown = sorted(set(raw) - set(HIGHER_IS_IN))
    if unknown:
        raise ValueError(f"scores {unknown} have no orientation; allowed: {list(HIGHER_IS_IN)}")
    return {k: (np.asarray(v, dtype=np.float64) if HIGHER_IS_IN[k] else -np.asarray(v, dtype=np.float64))
            for k, v in raw.items()}

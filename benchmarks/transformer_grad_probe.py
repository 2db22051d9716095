"""Why is the worst EqProp-vs-gradient cosine of the energy transformer below 0.999 at beta = 0.001?

Re-runs Track 14's gradient protocol (d=64, 4 heads, 1 block, float64, initial weights of ``--seed``,
batches of ``--batch-size`` MNIST training images drawn exactly as the track draws them) on a range of
batches and, per batch, reports for the symmetric estimate at each ``--betas``:

* the worst parameter tensor's cosine and L2 relative error against the implicit gradient (adjoint at
  the free fixed point by GMRES, rtol 1e-12; Track 14 measured implicit == BPTT to 1e-13);
* the free and nudged residuals (is any phase not converged?);
* ``relu``: Hopfield memories (``relu(Xi s_t + c)``) whose pre-activation changes sign between the
  free state and either nudged state (the other kink of the energy);
* ``flips``: units whose box status (strictly inside [-1, 1] or clamped at a bound) differs between
  the free state and either nudged state. The dynamics are piecewise linear in the clamp: a nudged
  equilibrium on the other side of a kink makes the finite-beta contrast differ from the derivative at
  beta = 0 (which BPTT and the implicit gradient compute) by O(1) on those units, however tightly the
  phases converge, and the number of such units shrinks with beta.

``--solver anderson`` and ``--tol`` (down to 1e-14) test whether the free phase's convergence matters.

Usage (what the Track 14 docstring quotes)::

    OMP_NUM_THREADS=1 EQPROP_DATA=/work/shared/data .venv/bin/python benchmarks/transformer_grad_probe.py \\
        --batches 0-19 --betas 0.001
    ... --batches 7 --betas 0.001 0.0001 0.00001 --tol 1e-14 --solver anderson
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from models.gradients import compare_grads, implicit_grads  # noqa: E402
from models.transformer import EnergyTransformer, TokenHopfield, TransformerConfig  # noqa: E402
from tracks.data import load_dataset  # noqa: E402


def _batches(spec: str) -> list[int]:
    out: list[int] = []
    for part in spec.split(","):
        a, _, b = part.partition("-")
        out += list(range(int(a), int(b) + 1)) if b else [int(a)]
    if not out or min(out) < 0:
        raise argparse.ArgumentTypeError(f"--batches {spec!r}: use e.g. '0-19' or '3,7,12' (indices >= 0)")
    return out


def _status(s: torch.Tensor) -> torch.Tensor:
    return torch.where(s >= 1.0, 1, torch.where(s <= -1.0, -1, 0))


def _relu_status(net, s: list[torch.Tensor]) -> list[torch.Tensor]:
    """Sign of every Hopfield memory's pre-activation ``Xi s_t + c`` (the kink of its relu)."""
    out = []
    for t in net.terms:
        if isinstance(t, TokenHopfield):
            S = s[t.tokens].reshape(s[t.tokens].shape[0], t.n_tokens, t.d_model)
            out.append(S @ net.get_parameter(t.weight).t() + net.get_parameter(t.bias) > 0)
    return out


def probe_batch(net, x, y, *, betas, tol: float, max_steps: int, solver: str) -> list[dict]:
    t0 = time.perf_counter()
    s, info = net.free_phase(x, n_steps=max_steps, tol=tol, method=solver)
    g_ref = implicit_grads(net, x, y, free_state=s, tol=1e-12)
    st0 = [_status(t) for t in s]
    rl0 = _relu_status(net, s)
    rows = []
    for beta in betas:
        drive = net.drive(x)
        (sm, im), (sp, ip) = (net.relax(x, s, beta=b, y=y, n_steps=max_steps, tol=tol, method=solver, drive=drive)
                              for b in (-beta, beta))
        ge = net.contrast(x, sm, sp, -beta, beta)
        cmp = compare_grads(ge, g_ref)
        worst = min(cmp, key=lambda r: r["cosine"])
        flips = sum(int(((_status(a) != b0) | (_status(c) != b0)).sum()) for a, c, b0 in zip(sm, sp, st0))
        relu_flips = sum(int(((a != b0) | (c != b0)).sum())
                         for a, c, b0 in zip(_relu_status(net, sm), _relu_status(net, sp), rl0))
        rows.append({"beta": beta, "cos_worst": worst["cosine"], "worst_param": worst["param"],
                     "relerr_worst": max(r["rel_error"] for r in cmp), "flips": flips, "relu_flips": relu_flips,
                     "clamped_free": int(sum(int((b0 != 0).sum()) for b0 in st0)),
                     "free_residual": float(info.residual.max()), "free_steps": int(info.steps.max()),
                     "nudged_residual": float(torch.maximum(im.residual.max(), ip.residual.max())),
                     "seconds": time.perf_counter() - t0})
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batches", type=_batches, default=_batches("0-9"), help="batch indices of Track 14's draw")
    ap.add_argument("--betas", type=float, nargs="+", default=[0.001])
    ap.add_argument("--batch-size", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tol", type=float, default=1e-12)
    ap.add_argument("--max-steps", type=int, default=3000)
    ap.add_argument("--solver", choices=("fixed_point", "anderson"), default="fixed_point")
    a = ap.parse_args(argv)
    if a.tol <= 0 or a.max_steps < 1 or a.batch_size < 1 or min(a.betas) <= 0:
        ap.error("--tol, --betas must be > 0; --max-steps, --batch-size >= 1")
    torch.set_num_threads(1)
    x_all, y_all = load_dataset("mnist", "train")
    rng = np.random.default_rng(a.seed)  # the draw of tracks/t14_transformer_eqprop._gradients
    idx = [rng.choice(x_all.shape[0], size=a.batch_size, replace=False) for _ in range(max(a.batches) + 1)]
    net = EnergyTransformer(TransformerConfig(d_model=64, n_heads=4, damping=0.0), seed=a.seed).double()
    print(f"{'batch':>5s} {'beta':>8s} {'cos_worst':>11s} {'relerr':>8s} {'flips':>5s} {'relu':>4s} {'clamped':>7s} "
          f"{'free_res':>9s} {'nudge_res':>9s} {'steps':>5s} worst tensor")
    out = []
    for b in a.batches:
        x = torch.as_tensor(x_all[idx[b]], dtype=torch.float64)
        y = torch.as_tensor(y_all[idx[b]])
        for r in probe_batch(net, x, y, betas=a.betas, tol=a.tol, max_steps=a.max_steps, solver=a.solver):
            out.append({"batch": b, **r})
            print(f"{b:5d} {r['beta']:8.0e} {r['cos_worst']:11.7f} {r['relerr_worst']:8.4f} {r['flips']:5d} {r['relu_flips']:4d} "
                  f"{r['clamped_free']:7d} {r['free_residual']:9.1e} {r['nudged_residual']:9.1e} {r['free_steps']:5d} "
                  f"{r['worst_param']}", flush=True)
    print(json.dumps({"bench": "transformer_grad_probe", "solver": a.solver, "tol": a.tol, "rows": out}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

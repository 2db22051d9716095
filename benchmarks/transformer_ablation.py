"""Depth and ablation study of the energy transformer (issue 13, plan Exp. 2 / 2.5): one table + plots.

A study, not a pass/fail claim, hence a documented command here rather than a track (a track needs
criteria that can fail). One factor at a time around a base configuration, each run trained by
EqProp from the same seed on the same images and measured the same way:

* tokens: 16 patches of 7x7 (base) vs 28 rows of 28 pixels;
* ``beta`` in {0.01, 0.05, 0.1, 0.2}; step ``alpha = 1 - damping`` in {0.5, 0.7, 0.9, 1.0};
  solver fixed point vs Anderson; depth ``L`` in {1, 2, 3, 4} (independent blocks); ``L = 4`` with 2
  unique parameter sets (tied pairs); the input injected into every block (``inject="all"``) at
  ``L`` = 2, 4 and 4 tied; ``L = 1`` with twice the free sweeps (iterations vs blocks);
* the plan's shapes 1x256, 2x128, 4x64, 4 (2 unique) x128, scaled by ``--width-scale`` (default 1/4:
  1x64, 2x32, 4x16, 4 (2 unique) x32) to fit a 2-core machine.

Columns: test accuracy, mean iterations to residual 1e-3 at test (cap 100), seconds, and the worst
per-tensor cosine of EqProp (symmetric, beta 0.01) vs BPTT on one float64 batch of 8 images at the
initial weights, free phase relaxed to 1e-10 (gradient cosine vs L).

Run (measured figure in the README)::

    EQPROP_DATA=/work/shared/data OMP_NUM_THREADS=1 .venv/bin/python benchmarks/transformer_ablation.py \\
        --out runs/ablation --n-train 2000 --n-test 1000 --epochs 1 --d-model 32

Writes ``ablation.json``, ``ablation.md`` and ``ablation.png`` under ``--out``.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models.gradients import compare_grads  # noqa: E402
from models.transformer import (EnergyTransformer, TrainSettings, TransformerConfig, bptt_grads_damped,  # noqa: E402
                                evaluate, fit)
from tracks.data import load_dataset  # noqa: E402
from tracks.harness.plots import figure  # noqa: E402


def grid(d: int, width_scale: float) -> list[tuple[str, str, dict, dict]]:
    """``(factor, label, model overrides, training overrides)`` of every run."""
    runs = [("base", "base", {}, {}), ("tokens", "28 row tokens", {"tokens": "rows"}, {})]
    runs += [("beta", f"beta={b}", {}, {"beta": b}) for b in (0.01, 0.05, 0.2)]
    runs += [("alpha", f"alpha={a}", {"damping": round(1 - a, 3)}, {}) for a in (0.5, 0.7, 0.9)]
    runs += [("solver", "anderson", {"method": "anderson"}, {})]
    runs += [("depth", f"L={L}", {"n_blocks": L}, {}) for L in (2, 3, 4)]
    runs += [("tied", "L=4 tied pairs", {"n_blocks": 4, "n_unique": 2}, {})]
    runs += [("inject", f"L={L} inject all", {"n_blocks": L, "inject": "all"}, {}) for L in (2, 4)]
    runs += [("inject", "L=4 tied pairs inject all", {"n_blocks": 4, "n_unique": 2, "inject": "all"}, {})]
    runs += [("iterations", "L=1 2x sweeps", {}, {"n_free_steps": 40, "n_nudge_steps": 20})]

    def w(x):
        return max(4, int(round(x * width_scale / 4)) * 4)
    runs += [("plan", f"1x{w(256)}", {"d_model": w(256)}, {}), ("plan", f"2x{w(128)}", {"d_model": w(128), "n_blocks": 2}, {}),
             ("plan", f"4x{w(64)}", {"d_model": w(64), "n_blocks": 4}, {}),
             ("plan", f"4(2 unique)x{w(128)}", {"d_model": w(128), "n_blocks": 4, "n_unique": 2}, {})]
    return runs


def grad_cosine(cfg: TransformerConfig, x: torch.Tensor, y: torch.Tensor, seed: int) -> float:
    net = EnergyTransformer(dataclasses.replace(cfg, damping=0.0, method="fixed_point"), seed=seed).double()
    x = x.double()
    _, info = net.free_phase(x, n_steps=2000, tol=1e-10)
    ge = net.eqprop_grads(x, y, beta=0.01, n_free_steps=2000, n_nudge_steps=2000, tol=1e-10)
    gb = bptt_grads_damped(net, x, y, n_steps=int(info.steps.max()) + 50)
    return min(r["cosine"] for r in compare_grads(ge, gb))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="runs/ablation")
    ap.add_argument("--n-train", type=int, default=2000)
    ap.add_argument("--n-test", type=int, default=1000)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--d-model", type=int, default=32)
    ap.add_argument("--width-scale", type=float, default=0.25)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--only", nargs="*", help="factors to run (default all)")
    ap.add_argument("--inject", choices=("first", "all"), default="first", help="base input injection")
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    x, y = load_dataset("mnist", "train")
    xt, yt = load_dataset("mnist", "test")
    x, y = torch.as_tensor(x[: a.n_train]), torch.as_tensor(y[: a.n_train])
    xt, yt = torch.as_tensor(xt[: a.n_test]), torch.as_tensor(yt[: a.n_test])
    xg, yg = torch.as_tensor(load_dataset("mnist", "train")[0][-8:]), torch.as_tensor(load_dataset("mnist", "train")[1][-8:])
    base_m = TransformerConfig(d_model=a.d_model, n_heads=4, damping=0.0, inject=a.inject)
    base_t = TrainSettings(grad="eqprop", beta=0.1, n_free_steps=20, n_nudge_steps=10, lr=2e-3, batch_size=64,
                           epochs=a.epochs)
    rows = []
    for factor, label, mo, to in grid(a.d_model, a.width_scale):
        if a.only and factor not in a.only:
            continue
        cfg = dataclasses.replace(base_m, **mo)
        ts = dataclasses.replace(base_t, **to)
        torch.manual_seed(a.seed)
        net = EnergyTransformer(cfg, seed=a.seed)
        t0 = time.perf_counter()
        costs = fit(net, x, y, ts, seed=a.seed)
        secs = time.perf_counter() - t0
        ev = evaluate(net, xt, yt, n_steps=100, tol=1e-3)
        cos = grad_cosine(cfg, xg, yg, a.seed)
        row = {"factor": factor, "run": label, "inject": cfg.inject, "tokens": cfg.tokens, "d_model": cfg.d_model, "L": cfg.n_blocks,
               "unique": cfg.n_unique or cfg.n_blocks, "alpha": 1 - cfg.damping, "solver": cfg.method,
               "beta": ts.beta, "T_free": ts.n_free_steps, "train_cost": costs[-1], "test_acc": ev["accuracy"],
               "iters": ev["mean_steps"], "seconds": secs, "grad_cos_min": cos,
               "params": sum(p.numel() for p in net.parameters())}
        rows.append(row)
        print(json.dumps(row), flush=True)
        (out / "ablation.json").write_text(json.dumps({"args": vars(a), "rows": rows}, indent=1))
    cols = ["factor", "run", "inject", "tokens", "d_model", "L", "unique", "alpha", "solver", "beta", "T_free", "params", "test_acc",
            "iters", "grad_cos_min", "seconds"]
    md = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        md.append("| " + " | ".join(f"{r[c]:.4g}" if isinstance(r[c], float) else str(r[c]) for c in cols) + " |")
    (out / "ablation.md").write_text("\n".join(md) + "\n")
    with figure(out / "ablation.png", ncols=3, figsize=(15, 4)) as (fig, axes):
        lab = [r["run"] for r in rows]
        for ax, key in zip(axes[0], ("test_acc", "iters", "grad_cos_min")):
            ax.barh(range(len(rows)), [r[key] if key != "grad_cos_min" else -np.log10(max(1 - r[key], 1e-16))
                                       for r in rows])
            ax.set_yticks(range(len(rows)), lab, fontsize=7)
            ax.set_xlabel({"test_acc": "test accuracy", "iters": "iterations to 1e-3 (test)",
                           "grad_cos_min": "-log10(1 - cosine) EqProp vs BPTT"}[key])
        if rows and min(r["test_acc"] for r in rows) > 0.5:
            axes[0][0].set_xlim(0.5, 1.0)
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())

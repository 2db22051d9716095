"""EqProp training epoch vs backprop epochs for 784-512-10 on real MNIST, measured in one run.

Three ways to train the same ``EqPropMLP`` (784-512-10, hard sigmoid ``clamp(a, 0, 1)``, MSE,
batch 100, SGD), each timed over the same training batches with the same loop (shuffle, gradient,
``optimizer.step``):

* ``eqprop``: ``models.train.compute_grads(method="eqprop")``: free phase ``T1 = 30`` sweeps, two
  nudged phases of ``T2 = 10`` (symmetric, ``+-beta``), contrast.
* ``bp_ff``: plain feed-forward backprop through the same layers, one forward pass
  ``h = rho(W0 x + b0)``, ``o = rho(W1 h + b1)``, ``L = 0.5 ||o - onehot(y)||^2``, autograd.
* ``bptt``: ``models.train.compute_grads(method="bptt")``: autograd through the 30 free sweeps.

By default each method trains on a stated fraction of the 60k training set (``--n-train``), the
epoch time is scaled up linearly to 60k samples, each measurement is repeated ``--repeats`` times
(methods interleaved, so load drift hits all of them alike) and the median is reported. Prints the
machine, a table, both ratios (EqProp / BP-FF and EqProp / BPTT; target EqProp <= 2x BP) and one
JSON line. ``--profile`` adds a cProfile of one EqProp batch (where the time goes).

Usage::

    .venv/bin/python benchmarks/bench_epoch.py [--n-train 6000] [--repeats 3] [--threads 1]
"""
from __future__ import annotations

import argparse
import cProfile
import io
import json
import pstats
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models.eqprop_mlp import EqPropConfig, EqPropMLP, rho  # noqa: E402
from models.train import TrainConfig, compute_grads  # noqa: E402
from tracks.data import load_dataset  # noqa: E402
from tracks.harness.machine import describe_machine_short  # noqa: E402

N_FULL = 60000
SIZES = (784, 512, 10)


def ff_grads(net: EqPropMLP, x: torch.Tensor, y: torch.Tensor, cfg: TrainConfig):
    """Feed-forward backprop through the same layers: one forward pass, same cost, autograd."""
    params = dict(net.named_parameters())
    with torch.enable_grad():
        h = x
        for lin in net.layers:
            h = rho(lin(h))
        loss = net.cost(h, y).mean()
        g = torch.autograd.grad(loss, list(params.values()))
    return dict(zip(params, g)), float(loss.detach())


def eqprop_or_bptt(net, x, y, cfg):
    return compute_grads(net, x, y, cfg)


def time_epoch(grad_fn, cfg: TrainConfig, x: torch.Tensor, y: torch.Tensor, seed: int) -> float:
    """Seconds for one pass over ``(x, y)`` in batches of ``cfg.batch_size`` (fresh net each time)."""
    net = EqPropMLP(EqPropConfig(sizes=SIZES), seed=seed)
    opt = torch.optim.SGD(net.parameters(), lr=0.01)
    params = dict(net.named_parameters())
    perm = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(seed))
    t0 = time.perf_counter()
    for a in range(0, x.shape[0], cfg.batch_size):
        idx = perm[a:a + cfg.batch_size]
        grads, _ = grad_fn(net, x[idx], y[idx], cfg)
        for k, p in params.items():
            p.grad = grads[k]
        opt.step()
    return time.perf_counter() - t0


def profile_eqprop(x: torch.Tensor, y: torch.Tensor, cfg: TrainConfig, n_batches: int = 20) -> str:
    net = EqPropMLP(EqPropConfig(sizes=SIZES), seed=0)
    pr = cProfile.Profile()
    pr.enable()
    for b in range(max(1, min(n_batches, x.shape[0] // cfg.batch_size))):
        sl = slice(b * cfg.batch_size, (b + 1) * cfg.batch_size)
        compute_grads(net, x[sl], y[sl], cfg)
    pr.disable()
    s = io.StringIO()
    pstats.Stats(pr, stream=s).sort_stats("tottime").print_stats(12)
    return s.getvalue()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n-train", type=int, default=6000, help="training samples timed per epoch (scaled to 60k)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1, help="torch.set_num_threads for every method")
    ap.add_argument("--batch-size", type=int, default=100)
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--profile", action="store_true")
    args = ap.parse_args(argv)
    if not 0 < args.n_train <= N_FULL or args.repeats < 1 or args.threads < 1:
        ap.error("need 0 < --n-train <= 60000, --repeats >= 1, --threads >= 1")
    torch.set_num_threads(args.threads)
    x, y = load_dataset("mnist", "train", args.data_dir)
    x, y = torch.from_numpy(x[:args.n_train]), torch.from_numpy(y[:args.n_train])
    base = dict(batch_size=args.batch_size, n_free_steps=30, n_nudge_steps=10, nudging="symmetric", beta=0.5,
                momentum=0.0)
    methods = {
        "eqprop": (eqprop_or_bptt, TrainConfig(method="eqprop", **base)),
        "bp_ff": (ff_grads, TrainConfig(method="bptt", **base)),
        "bptt": (eqprop_or_bptt, TrainConfig(method="bptt", **base)),
    }
    times: dict[str, list[float]] = {m: [] for m in methods}
    for r in range(args.repeats):
        for m, (fn, cfg) in methods.items():
            times[m].append(time_epoch(fn, cfg, x, y, seed=r))
    scale = N_FULL / args.n_train
    med = {m: statistics.median(t) for m, t in times.items()}
    epoch_s = {m: med[m] * scale for m in methods}
    sps = {m: args.n_train / med[m] for m in methods}
    ratio_ff = epoch_s["eqprop"] / epoch_s["bp_ff"]
    ratio_bptt = epoch_s["eqprop"] / epoch_s["bptt"]
    print(f"machine: {describe_machine_short()}")
    print(f"784-512-10, batch {args.batch_size}, T1=30 T2=10 symmetric, torch threads {args.threads}; "
          f"timed {args.n_train} MNIST samples x {args.repeats} repeats (median), epoch scaled to {N_FULL}")
    print(f"{'method':8s} {'epoch_s(60k)':>13s} {'samples/s':>10s}  runs_s")
    for m in methods:
        print(f"{m:8s} {epoch_s[m]:13.2f} {sps[m]:10.0f}  {[round(t, 2) for t in times[m]]}")
    print(f"ratio eqprop/bp_ff = {ratio_ff:.2f}  (target <= 2)")
    print(f"ratio eqprop/bptt  = {ratio_bptt:.2f}")
    if args.profile:
        print(profile_eqprop(x, y, methods["eqprop"][1]))
    print(json.dumps({"bench": "epoch", "machine": describe_machine_short(), "n_train_timed": args.n_train,
                      "scaled_to": N_FULL, "batch_size": args.batch_size, "threads": args.threads,
                      "repeats": args.repeats, "epoch_s": epoch_s, "samples_per_s": sps,
                      "ratio_eqprop_vs_bp_ff": ratio_ff, "ratio_eqprop_vs_bptt": ratio_bptt}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""EqProp training epoch vs backprop epochs for 784-512-10 on real MNIST, measured in one run.

Three ways to train the same ``EqPropMLP`` (784-512-10, hard sigmoid ``clamp(a, 0, 1)``, MSE,
batch 100, Adam as in the tuned recipes; ``--optimizer sgd`` for plain SGD), each timed over the same
training batches with the same loop (shuffle, gradient, ``optimizer.step``):

* ``eqprop``: ``models.train.compute_grads(method="eqprop")``: free phase ``T1 = 30`` sweeps, two
  nudged phases of ``T2 = 10`` (symmetric, ``+-beta``), contrast. It runs the fused chain relaxation
  (``models.energy.relax_chain``: preallocated buffers, exact fixed-point exit, the two nudged phases
  stacked in one batch), bit-identical to the generic path (``tests/models/test_fast_relax.py``).
* ``eqprop_ref`` (only with ``--reference``): the same on the generic sweeper + solver
  (``fast_relax = False``), to show the fused loop's speed-up.
* ``bp_ff``: plain feed-forward backprop through the same layers, one forward pass
  ``h = rho(W0 x + b0)``, ``o = rho(W1 h + b1)``, ``L = 0.5 ||o - onehot(y)||^2``, autograd.
* ``bptt`` (only with ``--bptt``): ``models.train.compute_grads(method="bptt")``: autograd through
  the 30 free sweeps.

Protocol: each method trains on the first ``--n-train`` (default 30000) training images per run (the
epoch time is scaled linearly to 60k), for each thread count in ``--threads`` (default 1 and 2)
``--repeats`` (default 5) runs with the methods interleaved (load drift hits all alike), after one
untimed warm-up batch per method. Reported: median, IQR and min-max of the epoch time per method, the
ratio of the medians and the median / range of the per-repeat paired ratios (EqProp / BP-FF, target
<= 1.5x), the same for process CPU time (all threads; less sensitive to other processes' load),
the passes per timed run (``--min-seconds`` rule: a method whose pass over the samples is shorter than
``--min-seconds`` in an untimed calibration pass is timed over several consecutive passes per run), the load average before and after (the machine may be shared: figures are noisy). A median
run still shorter than half of ``--min-seconds`` is flagged as too short to trust. ``--profile`` adds the top
``torch.profiler`` ops (self CPU time) of a few EqProp steps: where the time goes. Last line: JSON.

Usage::

    .venv/bin/python benchmarks/bench_epoch.py [--n-train 30000] [--repeats 5] [--threads 1 2] [--profile]
        [--reference] [--optimizer adam|sgd]
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
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


def loadavg() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


def time_epoch(grad_fn, cfg: TrainConfig, x: torch.Tensor, y: torch.Tensor, seed: int,
               passes: int = 1, optimizer: str = "adam", ref: bool = False) -> tuple[float, float]:
    """Wall and process-CPU seconds per pass over ``(x, y)`` in batches of ``cfg.batch_size`` (fresh net),
    averaged over ``passes`` consecutive passes timed as one run (enough work per timed run)."""
    net = EqPropMLP(EqPropConfig(sizes=SIZES), seed=seed)
    if ref:
        net.fast_relax = False  # the generic sweeper + solver (what EqProp ran before the fused loop)
    opt = (torch.optim.Adam(net.parameters(), lr=1e-3) if optimizer == "adam"
           else torch.optim.SGD(net.parameters(), lr=0.01))
    params = dict(net.named_parameters())
    perm = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(seed))
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(passes):
        for a in range(0, x.shape[0], cfg.batch_size):
            idx = perm[a:a + cfg.batch_size]
            grads, _ = grad_fn(net, x[idx], y[idx], cfg)
            for k, p in params.items():
                p.grad = grads[k]
            opt.step()
    return (time.perf_counter() - t0) / passes, (time.process_time() - c0) / passes


def profile_eqprop(x: torch.Tensor, y: torch.Tensor, cfg: TrainConfig, n_batches: int = 5, rows: int = 15) -> str:
    """``torch.profiler`` table (top ops by self CPU time) of ``n_batches`` EqProp gradient steps."""
    from torch.profiler import ProfilerActivity, profile

    net = EqPropMLP(EqPropConfig(sizes=SIZES), seed=0)
    compute_grads(net, x[:cfg.batch_size], y[:cfg.batch_size], cfg)  # warm-up
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for b in range(max(1, min(n_batches, x.shape[0] // cfg.batch_size))):
            sl = slice(b * cfg.batch_size, (b + 1) * cfg.batch_size)
            compute_grads(net, x[sl], y[sl], cfg)
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows)


def spread(t: list[float], scale: float) -> dict:
    a = np.asarray(t) * scale
    q1, med, q3 = np.percentile(a, [25, 50, 75])
    return {"median": round(float(med), 3), "iqr": [round(float(q1), 3), round(float(q3), 3)],
            "min": round(float(a.min()), 3), "max": round(float(a.max()), 3)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n-train", type=int, default=30000, help="training samples timed per epoch (scaled to 60k)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="torch.set_num_threads values")
    ap.add_argument("--batch-size", type=int, default=100)
    ap.add_argument("--min-seconds", type=float, default=3.0,
                    help="each timed run lasts at least about this long: a shorter pass is repeated (calibrated once)")
    ap.add_argument("--bptt", action="store_true", help="also time BPTT through the 30 free sweeps (slow)")
    ap.add_argument("--optimizer", choices=("adam", "sgd"), default="adam",
                    help="optimizer of every method (the tuned recipes use Adam)")
    ap.add_argument("--reference", action="store_true",
                    help="also time EqProp on the generic sweeper + solver (fast_relax=False): "
                         "the fused loop's speed-up")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--profile", action="store_true")
    args = ap.parse_args(argv)
    if not 0 < args.n_train <= N_FULL or args.repeats < 1 or min(args.threads) < 1:
        ap.error("need 0 < --n-train <= 60000, --repeats >= 1, --threads >= 1")
    x, y = load_dataset("mnist", "train", args.data_dir)
    x, y = torch.from_numpy(x[:args.n_train]), torch.from_numpy(y[:args.n_train])
    base = dict(batch_size=args.batch_size, n_free_steps=30, n_nudge_steps=10, nudging="symmetric", beta=0.5,
                momentum=0.0)
    methods = {
        "eqprop": (eqprop_or_bptt, TrainConfig(method="eqprop", **base)),
        "bp_ff": (ff_grads, TrainConfig(method="bptt", **base)),
    }
    if args.reference:
        methods["eqprop_ref"] = (eqprop_or_bptt, TrainConfig(method="eqprop", **base))
    tkw = {m: dict(optimizer=args.optimizer, ref=m == "eqprop_ref") for m in methods}
    if args.bptt:
        methods["bptt"] = (eqprop_or_bptt, TrainConfig(method="bptt", **base))
    scale = N_FULL / args.n_train
    results = {}
    print(f"machine: {describe_machine_short()}  (shared machine: figures are noisy)")
    print(f"784-512-10, batch {args.batch_size}, T1=30 T2=10 symmetric, {args.optimizer}; "
          f"timed {args.n_train} MNIST samples x "
          f"{args.repeats} interleaved repeats per thread count, epoch scaled to {N_FULL}", flush=True)
    for k in args.threads:
        torch.set_num_threads(k)
        for fn, cfg in methods.values():  # warm-up outside the timings
            net = EqPropMLP(EqPropConfig(sizes=SIZES), seed=0)
            fn(net, x[:args.batch_size], y[:args.batch_size], cfg)
        # --min-seconds rule: a method whose pass is shorter is timed over several passes per run
        passes = {m: max(1, math.ceil(args.min_seconds / max(time_epoch(fn, cfg, x, y, seed=99, **tkw[m])[0], 1e-6)))
                  for m, (fn, cfg) in methods.items()}
        print(f"[{k} thread(s)] passes over the {args.n_train} samples per timed run: {passes}", flush=True)
        load0 = loadavg()
        times: dict[str, list[float]] = {m: [] for m in methods}
        cpu: dict[str, list[float]] = {m: [] for m in methods}
        for r in range(args.repeats):
            for m, (fn, cfg) in methods.items():
                w, c = time_epoch(fn, cfg, x, y, seed=r, passes=passes[m], **tkw[m])
                times[m].append(w)
                cpu[m].append(c)
            print(f"[{k} thread(s)] repeat {r}: " + "  ".join(f"{m} {times[m][-1]:.2f}s (cpu {cpu[m][-1]:.2f}s)"
                                                            for m in methods)
                  + f"  load {loadavg()}", flush=True)
        load1 = loadavg()
        epoch = {m: spread(t, scale) for m, t in times.items()}
        paired = np.asarray(times["eqprop"]) / np.asarray(times["bp_ff"])
        cpu_epoch = {m: spread(t, scale) for m, t in cpu.items()}
        cpu_paired = np.asarray(cpu["eqprop"]) / np.asarray(cpu["bp_ff"])
        too_short = [m for m, t in times.items() if float(np.median(t)) * passes[m] < 0.5 * args.min_seconds]
        res = {"epoch_s_60k": epoch, "runs_s": {m: [round(v, 3) for v in t] for m, t in times.items()},
               "ratio_eqprop_vs_bp_ff": round(epoch["eqprop"]["median"] / epoch["bp_ff"]["median"], 3),
               "paired_ratio_median": round(float(np.median(paired)), 3),
               "paired_ratio_min_max": [round(float(paired.min()), 3), round(float(paired.max()), 3)],
               "cpu_epoch_s_60k": cpu_epoch,
               "cpu_ratio_eqprop_vs_bp_ff": round(cpu_epoch["eqprop"]["median"] / cpu_epoch["bp_ff"]["median"], 3),
               "cpu_paired_ratio_median": round(float(np.median(cpu_paired)), 3),
               "cpu_paired_ratio_min_max": [round(float(cpu_paired.min()), 3), round(float(cpu_paired.max()), 3)],
               "passes_per_run": passes, "loadavg_before": load0, "loadavg_after": load1, "too_short": too_short}
        if "eqprop_ref" in methods:
            res["speedup_fused_vs_generic"] = round(epoch["eqprop_ref"]["median"] / epoch["eqprop"]["median"], 3)
        if "bptt" in methods:
            res["ratio_eqprop_vs_bptt"] = round(epoch["eqprop"]["median"] / epoch["bptt"]["median"], 3)
        results[str(k)] = res
        print(f"--- torch threads {k}: load avg before {load0} after {load1}")
        print(f"  {'method':8s} {'epoch_s(60k) median':>20s} {'IQR':>18s} {'min-max':>18s}")
        for m, e in epoch.items():
            print(f"  {m:8s} {e['median']:20.2f} {str(e['iqr']):>18s} {str([e['min'], e['max']]):>18s}")
        print(f"  ratio eqprop/bp_ff = {res['ratio_eqprop_vs_bp_ff']:.2f} (ratio of medians), paired per repeat "
              f"median {res['paired_ratio_median']:.2f} range {res['paired_ratio_min_max']}  (target <= 1.5)"
              f"  [load {load1}]")
        print(f"  process-CPU-time ratio eqprop/bp_ff = {res['cpu_ratio_eqprop_vs_bp_ff']:.2f} (ratio of medians; "
              f"eqprop {cpu_epoch['eqprop']['median']:.2f}s, bp_ff {cpu_epoch['bp_ff']['median']:.2f}s per 60k), paired "
              f"median {res['cpu_paired_ratio_median']:.2f} range {res['cpu_paired_ratio_min_max']} (less sensitive to "
              f"other processes' load)  [load {load1}]")
        if "eqprop_ref" in methods:
            print(f"  fused relaxation speed-up (eqprop_ref / eqprop) = {res['speedup_fused_vs_generic']:.2f}")
        if "bptt" in methods:
            print(f"  ratio eqprop/bptt  = {res['ratio_eqprop_vs_bptt']:.2f}")
        if too_short:
            print(f"  WARNING: median run of {too_short} shorter than half --min-seconds {args.min_seconds} "
                  "(calibration ran under a load burst?): rerun to trust these figures")
    if args.profile:
        torch.set_num_threads(args.threads[0])
        print(f"torch.profiler, 5 EqProp steps (batch {args.batch_size}), {args.threads[0]} thread(s):")
        print(profile_eqprop(x, y, methods["eqprop"][1]))
    print(json.dumps({"bench": "epoch", "machine": describe_machine_short(), "n_train_timed": args.n_train,
                      "scaled_to": N_FULL, "batch_size": args.batch_size, "repeats": args.repeats,
                      "optimizer": args.optimizer,
                      "results": results}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

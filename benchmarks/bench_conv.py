"""Conv EqProp training throughput vs the same-architecture backprop epoch, at 1 and 2 threads, in one run.

The MNIST ``ConvEqProp`` 1-32-64 (5x5 kernels, 2x2 max pools, dense to 10, hard sigmoid, MSE, batch
100, Adam) trained two ways over the same real MNIST batches, with the same loop (gradient, Adam step):

* ``eqprop``: :func:`models.train.compute_grads` (method ``eqprop``): free phase of ``T1`` sweeps, two
  symmetric nudged phases of ``T2`` sweeps, contrast (defaults T1 = 15, T2 = 5: track 13's recipe).
* ``bp``: :class:`tracks.t13_conv_eqprop.FeedForwardConv` (the same layers, ReLU, one forward pass,
  softmax cross-entropy, autograd): the baseline of track 13.

For each thread count in ``--threads`` (default 1 and 2) and each repeat, both methods time
``--n-train`` images (methods and thread counts interleaved, so load drift hits all of them alike);
the median images/s, the epoch time scaled to 60k images and the ratio EqProp / BP epoch are
printed, then one JSON line. ``--profile`` (default on) adds the torch.profiler top ops of one EqProp
step (1 thread): where the time goes. On a shared machine the figures move with the load; the
machine line and ``os.getloadavg()`` are printed with them.

Usage::

    .venv/bin/python benchmarks/bench_conv.py [--n-train 500] [--repeats 3] [--threads 1 2] [--no-profile]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models.conv import ConvConfig, ConvEqProp  # noqa: E402
from models.train import TrainConfig, compute_grads  # noqa: E402
from tracks.data import load_dataset  # noqa: E402
from tracks.harness.machine import describe_machine_short  # noqa: E402
from tracks.t13_conv_eqprop import FeedForwardConv  # noqa: E402

N_FULL = 60000


def time_epoch(method: str, x: torch.Tensor, y: torch.Tensor, cfg: TrainConfig, channels, seed: int = 0) -> float:
    """Seconds to train one pass over ``x`` (batch ``cfg.batch_size``) by ``method``."""
    net = ConvEqProp(ConvConfig(channels=channels, kernel=5, cost="mse"), seed=seed)
    if method == "bp":
        net = FeedForwardConv.like(net, "relu")
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    params = dict(net.named_parameters())
    t0 = time.perf_counter()
    for a in range(0, x.shape[0], cfg.batch_size):
        xb, yb = x[a:a + cfg.batch_size], y[a:a + cfg.batch_size]
        if method == "eqprop":
            grads, _ = compute_grads(net, xb, yb, cfg)
            for k, p in params.items():
                p.grad = grads[k]
        else:
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(net(xb), yb).backward()
        opt.step()
    return time.perf_counter() - t0


def profile_step(x, y, cfg, channels, top: int = 12) -> str:
    from torch.profiler import ProfilerActivity, profile

    net = ConvEqProp(ConvConfig(channels=channels, kernel=5), seed=0)
    xb, yb = x[:cfg.batch_size], y[:cfg.batch_size]
    compute_grads(net, xb, yb, cfg)  # warm-up
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        compute_grads(net, xb, yb, cfg)
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=top)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n-train", type=int, default=500, help="images timed per epoch (scaled to 60k)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--batch-size", type=int, default=100)
    ap.add_argument("--t1", type=int, default=15)
    ap.add_argument("--t2", type=int, default=5)
    ap.add_argument("--channels", type=int, nargs="+", default=[32, 64])
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--no-profile", dest="profile", action="store_false")
    args = ap.parse_args(argv)
    if args.n_train < args.batch_size or args.repeats < 1 or min(args.threads) < 1:
        ap.error("need --n-train >= --batch-size, --repeats >= 1, --threads >= 1")
    x, y = load_dataset("mnist", "train", args.data_dir)
    x, y = torch.from_numpy(x[:args.n_train]).contiguous(), torch.from_numpy(y[:args.n_train])
    cfg = TrainConfig(method="eqprop", batch_size=args.batch_size, optimizer="adam", lr=1e-3, beta=0.5,
                      n_free_steps=args.t1, n_nudge_steps=args.t2)
    ch = tuple(args.channels)
    old = torch.get_num_threads()
    times: dict[tuple[int, str], list[float]] = {}
    for _ in range(args.repeats):
        for th in args.threads:
            torch.set_num_threads(th)
            for m in ("eqprop", "bp"):
                times.setdefault((th, m), []).append(time_epoch(m, x, y, cfg, ch))
    torch.set_num_threads(old)
    print(f"machine: {describe_machine_short()}; load average {os.getloadavg()[0]:.1f}")
    print(f"ConvEqProp 1-{'-'.join(map(str, ch))} 5x5, batch {args.batch_size}, T1={args.t1} T2={args.t2}, "
          f"{args.n_train} images timed x {args.repeats} repeats (median)")
    print(f"{'threads':>7} {'method':>7} {'images/s':>10} {'epoch 60k (s)':>14}")
    rows = []
    for th in args.threads:
        med = {m: statistics.median(times[(th, m)]) for m in ("eqprop", "bp")}
        for m in ("eqprop", "bp"):
            ips = args.n_train / med[m]
            rows.append({"threads": th, "method": m, "images_per_s": ips, "epoch_s_60k": med[m] * N_FULL / args.n_train,
                         "runs_s": times[(th, m)]})
            print(f"{th:>7} {m:>7} {ips:>10.1f} {med[m] * N_FULL / args.n_train:>14.1f}")
        print(f"threads {th}: EqProp / BP epoch ratio = {med['eqprop'] / med['bp']:.1f}x")
    out = {"bench": "conv", "machine": describe_machine_short(), "load": os.getloadavg()[0], "n_train_timed": args.n_train,
           "t1": args.t1, "t2": args.t2, "channels": list(ch), "rows": rows,
           "ratio": {th: statistics.median(times[(th, "eqprop")]) / statistics.median(times[(th, "bp")])
                     for th in args.threads}}
    if args.profile:
        torch.set_num_threads(1)
        print("\ntorch.profiler: one EqProp step (1 thread), top ops by self CPU time")
        print(profile_step(x, y, cfg, ch))
        torch.set_num_threads(old)
    print(json.dumps(out, default=float))
    return out


if __name__ == "__main__":
    main()

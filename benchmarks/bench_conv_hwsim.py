"""Inference throughput of a conv net: numba integer simulator (FixedPointMLP, int8) vs float32 torch
ConvEqProp, same network, same MNIST test images, T free sweeps, same batch (issue 12).

Architecture 1-32-64 channels, 5x5 kernels, 2x2 max pools, dense to 10 (``ConvConfig`` default).
Timings are interleaved over ``--repeats`` rounds and the best round of each path is kept (the machine
may be shared). The integer path is timed with all T sweeps (``early_exit=False``: the like-for-like
ratio) and with ``early_exit=True``. In the same run, the numba states are checked bit for bit against
the torch int64 mirror on a slice. ``--profile`` prints where the integer path's time goes (cProfile,
own time per function). Threads: torch and numba use ``--threads``. The last line is JSON.

    .venv/bin/python benchmarks/bench_conv_hwsim.py                    # 1000 images, batch 250, T=30
    .venv/bin/python benchmarks/bench_conv_hwsim.py --threads 1 --profile

``--onchip-gap`` measures instead the on-chip gap of a small conv net (1-8-16, 5x5, pool 2) on a
Fashion-MNIST subset: float EqProp for ``--gap-epochs`` (fp32 spec of ``models.qat.train_qat``), then
(a) ``--gap-ft`` more float epochs and (b) INT8 per-tensor quantisation and ``--gap-ft`` epochs of
on-chip integer EqProp (``hwsim.onchip.train_onchip``); gap = acc(a) - acc(b) on the test subset:

    .venv/bin/python benchmarks/bench_conv_hwsim.py --onchip-gap --gap-train 2000 --gap-test 1000
"""
from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numba  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

import quant  # noqa: E402
from hwsim.fixed_point import FixedPointMLP  # noqa: E402
from hwsim.torch_mirror import torch_relax  # noqa: E402
from models.conv import ConvConfig, ConvEqProp  # noqa: E402
from tracks.data import load_dataset  # noqa: E402
from tracks.harness.machine import describe_machine  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1000, help="number of MNIST test images")
    ap.add_argument("--batch", type=int, default=250)
    ap.add_argument("--steps", type=int, default=30, help="free-phase sweeps T")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="torch and numba threads (default: as configured)")
    ap.add_argument("--preset", default="int8")
    ap.add_argument("--channels", default="32,64")
    ap.add_argument("--check-n", type=int, default=50, help="images for the torch-mirror bit-exact check")
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--onchip-gap", action="store_true", help="measure the on-chip gap instead (see docstring)")
    ap.add_argument("--gap-train", type=int, default=2000)
    ap.add_argument("--gap-test", type=int, default=1000)
    ap.add_argument("--gap-epochs", type=int, default=3)
    ap.add_argument("--gap-ft", type=int, default=1)
    a = ap.parse_args()
    if a.onchip_gap:
        return onchip_gap(a)
    if a.threads:
        torch.set_num_threads(a.threads)
        numba.set_num_threads(a.threads)

    data_dir = a.data_dir
    shared = Path(__file__).resolve().parents[2] / "shared" / "data"
    if data_dir is None and "EQPROP_DATA" not in os.environ and (shared / "mnist").is_dir():
        data_dir = shared
    x, y = load_dataset("mnist", "test", data_dir)
    x, y = x[:a.n], y[:a.n]
    cfg = ConvConfig(channels=tuple(int(c) for c in a.channels.split(",")))
    net = ConvEqProp(cfg, seed=0).float()
    fp = FixedPointMLP.from_model(net, quant.get_preset(a.preset))
    xt = torch.from_numpy(x).float()
    codes = fp.quantize_input(x)
    fp.relax(codes[:8], n_steps=2)  # numba compilation outside the timings
    fp.relax(codes[:a.batch], n_steps=2)
    net.predict(xt[:8], n_steps=2)

    def run_float():
        return np.concatenate([net.predict(xt[i:i + a.batch], n_steps=a.steps).numpy()
                               for i in range(0, a.n, a.batch)])

    def run_fixed(early: bool):
        return fp.predict(codes, n_steps=a.steps, batch_size=a.batch, early_exit=early)

    best = {"float32_torch": np.inf, "fixed_full_T": np.inf, "fixed_early_exit": np.inf}
    best_cpu = dict(best)
    outs = {}
    for r in range(a.repeats):
        for name, fn in (("float32_torch", run_float), ("fixed_full_T", lambda: run_fixed(False)),
                         ("fixed_early_exit", lambda: run_fixed(True))):
            t0, c0 = time.perf_counter(), time.process_time()
            outs[name] = fn()
            dt, dc = time.perf_counter() - t0, time.process_time() - c0
            best[name], best_cpu[name] = min(best[name], dt), min(best_cpu[name], dc)
            print(f"round {r}: {name:17s} {a.n / dt:8.1f} samples/s wall, {a.n / dc:8.1f} samples/CPU-s", flush=True)
    sps = {k: a.n / v for k, v in best.items()}
    ratio_full = sps["fixed_full_T"] / sps["float32_torch"]
    ratio_early = sps["fixed_early_exit"] / sps["float32_torch"]
    cpu_ratio_full = best_cpu["float32_torch"] / best_cpu["fixed_full_T"]
    if a.profile:
        pr = cProfile.Profile()
        pr.enable()
        run_fixed(False)
        pr.disable()
        pstats.Stats(pr).sort_stats("tottime").print_stats(8)

    c = codes[:a.check_n]
    s_n, _ = fp.relax(c, n_steps=a.steps, early_exit=False)
    s_t, _ = torch_relax(fp, torch.from_numpy(c), n_steps=a.steps, early_exit=False)
    states_equal = all(np.array_equal(p, q.numpy()) for p, q in zip(s_n, s_t))
    agree = float((outs["fixed_full_T"] == outs["float32_torch"]).mean())
    m = describe_machine()
    threads = {"torch": torch.get_num_threads(), "numba": numba.get_num_threads()}
    print(f"machine: {m['cpu']}, {m['logical_cores']} logical cores, threads {threads}")
    print(f"ConvEqProp 1-{'-'.join(map(str, cfg.channels))} 5x5 pool 2 -> 10, T={a.steps}, batch {a.batch}, "
          f"{a.n} MNIST test images (random-init weights), preset {a.preset}")
    for k, v in sps.items():
        print(f"  {k:17s} {v:8.1f} samples/s")
    print(f"ratio fixed/float32 (all T sweeps): {ratio_full:.2f}x   (early exit): {ratio_early:.2f}x   target >= 0.8x")
    print(f"CPU-time ratio float32/fixed (all T sweeps): {cpu_ratio_full:.2f}x")
    print(f"bit-exact numba vs torch mirror on {len(c)} images: {states_equal}; argmax agreement fixed vs float32: "
          f"{agree:.4f}")
    print(json.dumps({"bench": "conv_hwsim_fixed_point", "preset": a.preset, "n": a.n, "batch": a.batch,
                      "steps": a.steps, "channels": list(cfg.channels),
                      "samples_per_s": {k: round(v, 1) for k, v in sps.items()},
                      "ratio_full_T": round(ratio_full, 3), "cpu_time_ratio_full_T": round(cpu_ratio_full, 3),
                      "ratio_early_exit": round(ratio_early, 3), "bit_exact_vs_torch_mirror": states_equal,
                      "argmax_agreement_vs_float32": agree, "threads": threads,
                      "machine": {"cpu": m["cpu"], "logical_cores": m["logical_cores"]}}))
    return 0 if states_equal else 1


def onchip_gap(a) -> int:
    """Float EqProp vs on-chip INT8 fine-tuning of a small conv net on a Fashion-MNIST subset."""
    import copy

    from hwsim import onchip
    from models.qat import QATConfig, train_qat

    torch.set_num_threads(a.threads or 1)
    t0 = time.time()
    x, y = load_dataset("fashion_mnist", "train", a.data_dir)
    xt, yt = load_dataset("fashion_mnist", "test", a.data_dir)
    x, y, xt, yt = x[:a.gap_train], y[:a.gap_train], xt[:a.gap_test], yt[:a.gap_test]
    net = ConvEqProp(ConvConfig(channels=(8, 16), kernel=5, n_out=10), seed=0).float()
    kw = dict(batch_size=50, lr=(0.1, 0.05, 0.02), beta=0.5, n_free_steps=20, n_nudge_steps=8)
    fp32 = quant.get_preset("fp32")
    train_qat(net, torch.tensor(x), torch.tensor(y), fp32, QATConfig(epochs=a.gap_epochs, seed=0, **kw), progress=False)
    net_f = copy.deepcopy(net)  # the float path gets the same extra epochs as the on-chip fine-tuning
    train_qat(net_f, torch.tensor(x), torch.tensor(y), fp32, QATConfig(epochs=a.gap_ft, seed=1, **kw), progress=False)
    acc = lambda m: float((m.predict(torch.tensor(xt), n_steps=20) == torch.tensor(yt)).float().mean())  # noqa: E731
    acc_float0, acc_float = acc(net), acc(net_f)
    spec = onchip.onchip_spec(quant.get_preset("int8"))
    fp0 = FixedPointMLP.from_model(net.double(), spec)
    acc_ptq = float(np.mean(fp0.predict(xt.astype(np.float64), n_steps=20, batch_size=500) == yt))
    hist = onchip.train_onchip(fp0, x, y, epochs=a.gap_ft, batch_size=50, beta=0.5, lr=0.02, seed=1,
                               progress=False, n_free_steps=20, n_nudge_steps=8)
    acc_on = float(np.mean(hist["model"].predict(xt.astype(np.float64), n_steps=20, batch_size=500) == yt))
    out = {"bench": "conv_onchip_gap", "dataset": "fashion_mnist", "n_train": len(x), "n_test": len(xt),
           "channels": [8, 16], "epochs_float": a.gap_epochs, "ft_epochs": a.gap_ft,
           "acc_float_before_ft": acc_float0, "acc_float": acc_float, "acc_ptq_int8": acc_ptq,
           "acc_onchip_int8": acc_on, "onchip_gap_pt": round(100 * (acc_float - acc_on), 2),
           "seconds": round(time.time() - t0)}
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

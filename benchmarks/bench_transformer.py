"""Energy transformer training step: EqProp vs BPTT vs implicit, step time and peak memory, one run.

For each ``d_model`` (64, 128) and free-phase length ``T`` (30, 50): one training-step gradient of a
batch of MNIST images (16 patch tokens, 4 heads, 1 block, float32, 1 thread) by

* ``eqprop``: symmetric EqProp, ``T`` free sweeps + two nudged phases of ``T // 2`` sweeps;
* ``bptt``: autograd through the ``T`` free sweeps (the BP baseline);
* ``implicit``: ``T`` free sweeps, then the adjoint solve at the fixed point (GMRES, tol 1e-6).

Each (method, d, T) runs in a fresh subprocess with the glibc settings of Track 35
(:data:`tracks.t35_memory_scaling.MALLOC_ENV`: buffers >= 64 KiB are mmapped, so the resident set
follows live bytes); memory = peak RSS during one step minus the RSS before it (after a warm-up
step), time = median of ``--repeats`` steps. Prints a table and the ratios (to EqProp) from this run,
with the 1-minute load average at the end of each probe (step times on a shared machine are only
comparable between rows of similar load).

Measured 2026-11-30 (``--repeats 3``, batch 32, load 6.2-6.9 on 2 cores through the whole run, so
the times are comparable with each other but not with an idle machine): time / EqProp BPTT 1.09-1.31,
implicit 0.87-1.11; memory / EqProp BPTT 31-50x (42.5 / 69.9 MiB at d=64 T=30/50, 81.3 / 133.3 at
d=128), implicit 6.1-7.8x (8.7 / 16.6 MiB, flat in T), EqProp 1.1-1.4 / 2.6 MiB (flat in T).

Usage::

    OMP_NUM_THREADS=1 EQPROP_DATA=/work/shared/data .venv/bin/python benchmarks/bench_transformer.py [--batch 32]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

METHODS = ("eqprop", "bptt", "implicit")


def _kib(field: str) -> int:
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def probe(spec: dict) -> dict:
    """Run in the subprocess: time and peak-RSS delta of one gradient step."""
    import gc

    import torch

    from models.transformer import EnergyTransformer, TrainSettings, TransformerConfig, grads_of
    from tracks.data import load_dataset

    torch.set_num_threads(1)
    x, y = load_dataset("mnist", "train")
    x, y = torch.as_tensor(x[: spec["batch"]]), torch.as_tensor(y[: spec["batch"]])
    net = EnergyTransformer(TransformerConfig(d_model=spec["d"], n_heads=4, damping=0.0), seed=0)
    ts = TrainSettings(grad=spec["method"], n_free_steps=spec["T"], n_nudge_steps=max(1, spec["T"] // 2))
    grads_of(net, x, y, ts)  # warm-up
    times = []
    for _ in range(spec["repeats"]):
        t0 = time.perf_counter()
        grads_of(net, x, y, ts)
        times.append(time.perf_counter() - t0)
    gc.collect()
    with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
        f.write("5")
    base = _kib("VmHWM")
    g = grads_of(net, x, y, ts)
    peak = _kib("VmHWM")
    del g
    return {**spec, "seconds": statistics.median(times), "step_mib": (peak - base) / 1024,
            "load1": os.getloadavg()[0]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--d", type=int, nargs="+", default=[64, 128])
    ap.add_argument("--t", type=int, nargs="+", default=[30, 50])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--probe", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.probe:
        print(json.dumps(probe(json.loads(a.probe))))
        return 0
    from tracks.harness.machine import describe_machine_short
    from tracks.t35_memory_scaling import MALLOC_ENV

    env = {**os.environ, **MALLOC_ENV, "OMP_NUM_THREADS": "1"}
    rows = []
    for d in a.d:
        for T in a.t:
            for m in METHODS:
                spec = {"method": m, "d": d, "T": T, "batch": a.batch, "repeats": a.repeats}
                out = subprocess.run([sys.executable, __file__, "--probe", json.dumps(spec)], env=env,
                                     capture_output=True, text=True, check=True)
                rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
                print(json.dumps(rows[-1]), flush=True)
    print(f"machine: {describe_machine_short()}; batch {a.batch}, 1 thread, float32")
    print(f"{'d':>4s} {'T':>4s} {'method':9s} {'s/step':>8s} {'MiB':>8s} {'time/EqProp':>12s} {'mem/EqProp':>11s} "
          f"{'load1':>6s}")
    for r in rows:
        eq = next(e for e in rows if e["method"] == "eqprop" and e["d"] == r["d"] and e["T"] == r["T"])
        mem = f"{r['step_mib'] / eq['step_mib']:11.2f}" if eq["step_mib"] >= 0.05 else f"{'n/a':>11s}"  # below page noise
        print(f"{r['d']:4d} {r['T']:4d} {r['method']:9s} {r['seconds']:8.3f} {r['step_mib']:8.2f} "
              f"{r['seconds'] / eq['seconds']:12.2f} {mem} {r['load1']:6.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Measured peak memory of one training step, EqProp vs BPTT, over the relaxation length T.

A thin CLI over :func:`tracks.t35_memory_scaling.measure` (fresh subprocess per repeat, glibc
``MALLOC_MMAP_THRESHOLD_`` fixed so RSS follows live buffers, peak RSS reset through
``/proc/self/clear_refs``; see that module's docstring). Prints the machine, a table of step bytes
(median over repeats) and one JSON line.

Usage::

    .venv/bin/python benchmarks/memory_probe.py [--t 10 30 100 300] [--batch 100] [--repeats 3]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tracks.data import load_dataset  # noqa: E402
from tracks.harness.machine import describe_machine_short  # noqa: E402
from tracks.t35_memory_scaling import EQPROP_VARIANTS, measure  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--t", type=int, nargs="+", default=[10, 30, 100, 300], help="free-phase sweeps T")
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--variant", choices=EQPROP_VARIANTS, default="standard")
    ap.add_argument("--data-dir", default=None)
    args = ap.parse_args(argv)
    if args.batch < 1 or args.repeats < 1 or min(args.t) < 1:
        ap.error("--batch, --repeats and every --t must be >= 1")
    x, y = load_dataset("mnist", "train", args.data_dir)
    rows = measure(tuple(args.t), x[:args.batch], y[:args.batch], repeats=args.repeats, variant=args.variant)
    print(f"machine: {describe_machine_short()}")
    print(f"784-512-10, batch {args.batch}, T2=10 symmetric, median of {args.repeats} fresh subprocesses")
    print(f"{'method':8s} {'T':>5s} {'step MiB':>9s}  samples MiB")
    for r in rows:
        print(f"{r['method']:8s} {r['T']:5d} {r['step_bytes'] / 2**20:9.2f}  "
              f"{[round(s / 2**20, 2) for s in r['samples']]}")
    eq = {r["T"]: r["step_bytes"] for r in rows if r["method"] == "eqprop"}
    bp = {r["T"]: r["step_bytes"] for r in rows if r["method"] == "bptt"}
    summary = {"eqprop_mem_growth": max(eq.values()) / min(eq.values()),
               "bptt_mem_growth": max(bp.values()) / min(bp.values())}
    if 30 in eq:
        summary["mem_ratio_t30"] = eq[30] / bp[30]
    print(json.dumps({"bench": "memory_probe", "machine": describe_machine_short(), "batch": args.batch,
                      "repeats": args.repeats, "variant": args.variant, **summary, "rows": rows}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Track 35: memory of one training step, EqProp vs BPTT, as the number of relaxation steps grows.

Claim: EqProp's training step needs memory independent of the number of relaxation steps ``T``
(it keeps only the current state), while backprop through time stores every sweep, so its memory
grows linearly in ``T``.

Measurement (measured, not a formula). A fresh Python subprocess (``torch.set_num_threads(1)``) is
started with ``MALLOC_MMAP_THRESHOLD_=65536`` (and heap trimming at once, one arena) so that glibc
serves every buffer of 64 KiB or more (all batch-sized activations and weight-sized gradients) by
``mmap`` and returns it to the kernel on free: the resident set size then follows the live bytes.
For each (method, T), after one warm-up step (autograd engine, thread pool and lazy initialisation),
building the network and optimizer, and ``gc.collect()``, the process resets its peak RSS
(``echo 5 > /proc/self/clear_refs``), reads it (baseline: imports, data, model, optimizer),
runs **one** training step (``models.train.compute_grads`` + ``SGD.step`` on a real MNIST batch)
and reads ``VmHWM``; the step memory is ``VmHWM - baseline``. Every (method, T) is measured in
``repeats`` fresh subprocesses (one measurement per process) and the median is kept. torch's CPU allocator has no
caching and no statistics API (``torch.cuda.max_memory_allocated`` is CUDA only) and tracemalloc
does not see torch's buffers, hence RSS.

Setting: EqPropMLP 784-512-10, symmetric EqProp (free phase ``T`` sweeps, two nudged phases of
``T2 = 10``) vs BPTT through the ``T`` free sweeps; ``T`` in {10, 30, 100, 300}; batch 100 (quick:
T in {10, 30, 100}, one repeat). At batch 100 BPTT keeps roughly 0.4 MB per sweep (the 100x512
pre-activation and state), 12 MB at T=30, far above the page-granular noise of a few hundred KB.

Metrics: ``mem_ratio_t30`` (EqProp / BPTT step bytes at T=30), ``eqprop_mem_growth`` (max / min over
T of EqProp's step bytes), ``bptt_mem_growth``, ``bptt_bytes_per_sweep`` (least-squares slope), a
table ``rows`` and a plot.

Settings: :class:`Config` (``QUICK`` / ``FULL``): ``t_values``, ``batch_size``, ``repeats``,
``eqprop_variant`` (``"standard"`` or ``"keep_trajectory"``: an EqProp step that also keeps every
state of its relaxations alive until the step ends, as BPTT must: a broken EqProp memory path).
The probes run on the CPU (peak RSS of a subprocess); ``--device`` does not apply.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from .harness.plots import figure
from .harness.base import Criterion, TrackContext, TrackResult, TrackSpec
from .data import load_dataset

log = logging.getLogger("eqprop_hwsim.tracks.t35")

SPEC = TrackSpec(
    id=35,
    slug="memory_scaling",
    name="Memory scaling of a training step: EqProp vs BPTT",
    claim=("EqProp's training-step memory does not grow with the number of relaxation steps T, while BPTT's "
           "grows linearly; at T=30 EqProp needs at most half of BPTT's step memory."),
    criteria=(Criterion("mem_ratio_t30", "<=", 0.5), Criterion("eqprop_mem_growth", "<=", 1.2)),
    est_seconds_full=90.0,
    est_seconds_quick=30.0,
)

SIZES = (784, 512, 10)
T_FULL = (10, 30, 100, 300)
T_QUICK = (10, 30, 100)
BATCH_SIZE = 100
N_NUDGE_STEPS = 10
BETA = 0.5
REPEATS_FULL = 3
REPEATS_QUICK = 1
MMAP_THRESHOLD = 65536
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": str(MMAP_THRESHOLD), "MALLOC_TRIM_THRESHOLD_": "0", "MALLOC_TOP_PAD_": "0",
              "MALLOC_ARENA_MAX": "1"}
"""glibc tunables of the probe process: big buffers mmapped, freed heap memory trimmed at once."""
EQPROP_VARIANTS = ("standard", "keep_trajectory")


@dataclasses.dataclass(frozen=True)
class Config:
    """Settings of Track 35."""

    t_values: tuple[int, ...] = T_FULL   # relaxation steps T measured (must include 30)
    batch_size: int = BATCH_SIZE         # images per training step
    repeats: int = REPEATS_FULL          # probe subprocesses per point (median)
    eqprop_variant: str = "standard"     # "keep_trajectory": the broken EqProp memory path

    def __post_init__(self) -> None:
        if len(self.t_values) < 2 or 30 not in self.t_values or min(self.t_values) < 1:
            raise ValueError(f"t_values={list(self.t_values)} is invalid; allowed: at least two ints >= 1 "
                             "including 30 (for mem_ratio_t30)")
        if not 1 <= self.batch_size <= 60000:
            raise ValueError(f"batch_size={self.batch_size} is invalid; allowed: an int in [1, 60000]")
        if self.repeats < 1:
            raise ValueError(f"repeats={self.repeats} is invalid; allowed: an int >= 1")
        if self.eqprop_variant not in EQPROP_VARIANTS:
            raise ValueError(f"eqprop_variant={self.eqprop_variant!r} is invalid; allowed: {list(EQPROP_VARIANTS)}")


QUICK = Config(t_values=T_QUICK, repeats=REPEATS_QUICK)
FULL = Config()


def _status_kib(field: str) -> int:
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field} line")


def _make_step(method: str, n_steps: int, x, y, seed: int, variant: str):
    """Build the network, optimizer and config; return a closure doing one training step."""
    import torch

    from models.eqprop_mlp import EqPropConfig, EqPropMLP
    from models.train import TrainConfig, compute_grads

    net = EqPropMLP(EqPropConfig(sizes=SIZES), seed=seed)
    opt = torch.optim.SGD(net.parameters(), lr=0.01)
    cfg = TrainConfig(method=method, batch_size=x.shape[0], beta=BETA, nudging="symmetric", momentum=0.0,
                      n_free_steps=n_steps, n_nudge_steps=N_NUDGE_STEPS)
    if variant == "keep_trajectory":
        kept: list = []
        base_sweeper = net.sweeper

        def sweeper(drive, beta=0.0, y=None):
            sweep = base_sweeper(drive, beta, y)

            def keep(s):
                out = sweep(s)
                kept.append(out)
                return out
            return keep

        net.sweeper = sweeper  # instance attribute: relax() iterates self.sweeper(...)

    def one_step() -> None:
        if variant == "keep_trajectory":
            kept.clear()
        grads, _ = compute_grads(net, x, y, cfg)
        for k, p in net.named_parameters():
            p.grad = grads[k]
        opt.step()
        for p in net.parameters():
            p.grad = None
        if variant == "keep_trajectory":
            kept.clear()

    return one_step


def probe(spec: dict[str, Any]) -> list[dict[str, Any]]:
    """Child-process entry: measure every (method, T) in ``spec["jobs"]``; returns rows of bytes.

    ``spec``: ``{"data": path of an .npz with x (B, 784) float32 and y (B,) int64, "jobs": [[method, T],
    ...], "seed": int, "variant": str}``. Must run in a fresh process started with
    ``MALLOC_MMAP_THRESHOLD_`` set (see the module docstring); Linux only.
    """
    import gc

    import torch

    torch.set_num_threads(1)
    if not os.path.exists("/proc/self/clear_refs"):
        raise RuntimeError("memory probe needs Linux /proc/self/clear_refs (peak RSS reset)")
    d = np.load(spec["data"])
    x, y = torch.from_numpy(d["x"]), torch.from_numpy(d["y"])
    for method in ("eqprop", "bptt"):  # warm-up at the real batch shape: lazy initialisation of both paths
        _make_step(method, 2, x, y, spec["seed"], "standard")()
    rows = []
    for method, n_steps in spec["jobs"]:
        one_step = _make_step(method, n_steps, x, y, spec["seed"], spec["variant"] if method == "eqprop" else "standard")
        gc.collect()
        with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
            f.write("5")
        base = max(_status_kib("VmRSS"), _status_kib("VmHWM"))  # HWM right after the reset
        one_step()
        peak = _status_kib("VmHWM")
        del one_step
        rows.append({"method": method, "T": n_steps, "step_bytes": (peak - base) * 1024,
                     "baseline_bytes": base * 1024})
    return rows


def run_probe(jobs: list[tuple[str, int]], x: np.ndarray, y: np.ndarray, *, seed: int = 0,
              variant: str = "standard", timeout_s: float = 600.0) -> list[dict[str, Any]]:
    """Run :func:`probe` in a fresh subprocess on the batch ``(x, y)``; returns its rows."""
    if variant not in EQPROP_VARIANTS:
        raise ValueError(f"eqprop_variant={variant!r}; allowed: {EQPROP_VARIANTS}")
    for m, t in jobs:
        if m not in ("eqprop", "bptt") or int(t) < 1:
            raise ValueError(f"job ({m!r}, {t!r}): method must be 'eqprop' or 'bptt' and T >= 1")
    root = Path(__file__).resolve().parents[1]
    with tempfile.TemporaryDirectory() as tmp:
        data = os.path.join(tmp, "batch.npz")
        np.savez(data, x=x.astype(np.float32), y=y.astype(np.int64))
        spec = {"data": data, "jobs": [[m, int(t)] for m, t in jobs], "seed": seed, "variant": variant}
        code = ("import json, sys; from tracks.t35_memory_scaling import probe; "
                f"print('PROBE' + json.dumps(probe(json.loads({json.dumps(json.dumps(spec))}))))")
        env = {**os.environ, **MALLOC_ENV, "OMP_NUM_THREADS": "1",
               "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                             timeout=timeout_s, cwd=str(root))
    if out.returncode != 0:
        raise RuntimeError(f"memory probe subprocess failed (rc {out.returncode}):\n{out.stderr[-2000:]}")
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("PROBE")), None)
    if line is None:
        raise RuntimeError(f"memory probe printed no result; stdout: {out.stdout[-500:]!r}")
    return json.loads(line[len("PROBE"):])


def measure(t_values: tuple[int, ...], x: np.ndarray, y: np.ndarray, *, repeats: int, variant: str = "standard",
            progress: bool = False) -> list[dict[str, Any]]:
    """Median step bytes per (method, T) over ``repeats`` measurements, each in its own fresh subprocess.

    One process per measurement: several measurements in one process drifted by up to ~1 MB with
    their order (heap state left by the previous step), which a fresh process avoids.
    """
    jobs = [(m, t) for t in t_values for m in ("eqprop", "bptt")]
    samples: dict[tuple[str, int], list[int]] = {j: [] for j in jobs}
    todo = [(r, j) for r in range(repeats) for j in jobs]
    if progress:
        from models.progress import progress as progress_bar
        todo = progress_bar(todo, desc="t35 probes")
    for r, job in todo:
        row = run_probe([job], x, y, seed=r, variant=variant)[0]
        samples[(row["method"], row["T"])].append(row["step_bytes"])
    return [{"method": m, "T": t, "step_bytes": float(statistics.median(samples[(m, t)])),
             "samples": samples[(m, t)]} for m, t in jobs]


def _plot(rows: list[dict[str, Any]], path: Path, batch: int) -> None:
    with figure(path, figsize=(5.5, 3.8), dpi=120) as (fig, _axes):
        ax = _axes[0][0]
        for m, style in (("eqprop", "o-"), ("bptt", "s--")):
            r = [row for row in rows if row["method"] == m]
            ax.plot([row["T"] for row in r], [row["step_bytes"] / 2**20 for row in r], style, label=m)
        ax.set_xscale("log")
        ax.set_xlabel("relaxation steps T (free phase)")
        ax.set_ylabel("peak step memory above baseline (MiB)")
        ax.set_title(f"784-512-10, batch {batch}: measured peak RSS of one step")
        ax.legend()
        ax.grid(alpha=0.3)


def run(ctx: TrackContext) -> TrackResult:
    c = ctx.settings(QUICK, FULL)
    t_values, batch, repeats, variant = c.t_values, c.batch_size, c.repeats, c.eqprop_variant
    x, y = load_dataset("mnist", "train", ctx.data_dir)
    x, y = x[:batch], y[:batch]
    rows = measure(t_values, x, y, repeats=repeats, variant=variant, progress=ctx.progress)
    eq = {r["T"]: r["step_bytes"] for r in rows if r["method"] == "eqprop"}
    bp = {r["T"]: r["step_bytes"] for r in rows if r["method"] == "bptt"}
    ts = np.array(sorted(bp), dtype=float)
    slope = float(np.polyfit(ts, [bp[t] for t in sorted(bp)], 1)[0])
    metrics: dict[str, Any] = {
        "mem_ratio_t30": eq[30] / bp[30] if bp[30] > 0 else float("nan"),
        "eqprop_mem_growth": max(eq.values()) / min(eq.values()) if min(eq.values()) > 0 else float("nan"),
        "bptt_mem_growth": max(bp.values()) / min(bp.values()) if min(bp.values()) > 0 else float("nan"),
        "bptt_bytes_per_sweep": slope,
        "bptt_bytes_per_sweep_per_sample": slope / batch,
        "eqprop_step_bytes_t30": eq[30],
        "bptt_step_bytes_t30": bp[30],
        "batch_size": batch,
        "t_values": list(t_values),
        "repeats": repeats,
        "eqprop_variant": variant,
        "rows": rows,
    }
    plot = ctx.plots_dir / "t35_memory_vs_T.png"
    _plot(rows, plot, batch)
    notes = [f"peak RSS above a post-warm-up baseline, fresh subprocess, MALLOC_MMAP_THRESHOLD_={MMAP_THRESHOLD}, "
             f"median of {repeats} subprocess(es); batch {batch} of real MNIST; T2={N_NUDGE_STEPS} symmetric"]
    return TrackResult(metrics=metrics, artifacts=[str(plot.relative_to(ctx.out_dir))], notes=notes)

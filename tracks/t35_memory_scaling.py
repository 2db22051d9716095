"""Track 35: memory of one training step, EqProp vs BPTT (vs implicit), as the number of relaxation steps grows.

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

Energy transformer (issue 13): the same probe for :class:`models.transformer.EnergyTransformer`
(d=64, 4 heads, 1 block, 16 patch tokens, batch 32, float32), ``T`` in {10, 30, 100}, three methods:
symmetric EqProp (``T`` free + 2 x 10 nudged sweeps), BPTT through the ``T`` free sweeps, and the
implicit (DEQ) gradient (``T`` free sweeps, then the adjoint at the reached state by GMRES); one
subprocess per method and repeat (see :func:`measure`). Criteria: ``tf_mem_ratio_t30 <= 0.5`` and
flatness ``tf_{eqprop,implicit}_slope_ratio <= 0.02`` (least-squares bytes per sweep over BPTT's; a
max/min growth ratio was too noisy here: EqProp's ~1.2 MiB step read 1.07-1.28 MiB across T).
Measured 2026-11-30 (``run_suite.py --track 35 --quick --set 'tf_t_values=[10,30,100]'``, one repeat,
load ~20 on 2 cores, 513 s): EqProp 1.36 / 1.32 / 1.26 MiB, implicit 9.38 / 9.38 / 9.37 MiB, BPTT
15.3 / 44.2 / 146.9 MiB at T = 10 / 30 / 100 (1.53 MB per sweep); EqProp / BPTT at T=30 0.030,
slope ratios EqProp -0.0007, implicit -0.0001; an EqProp step that keeps its trajectory
(``eqprop_variant="keep_trajectory"``) 4.8 / 7.4 / 16.4 MiB (slope 8.8 % of BPTT's: fails).
Quick variant: transformer T in {10, 30, 60}.

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

TF_SLOPE_MAX = 0.02
"""Flatness of the transformer's EqProp / implicit step memory in T: their least-squares bytes per
sweep at most 2 % of BPTT's (measured: EqProp |slope| < 0.5 % of BPTT's; an EqProp step that keeps
its trajectory, 8.8 %)."""

SPEC = TrackSpec(
    id=35,
    slug="memory_scaling",
    name="Memory scaling of a training step: EqProp vs BPTT",
    claim=("EqProp's training-step memory does not grow with the number of relaxation steps T, while BPTT's "
           "grows linearly; at T=30 EqProp needs at most half of BPTT's step memory. Likewise for the energy "
           "transformer, where the implicit (DEQ) gradient's memory is flat in T too."),
    criteria=(Criterion("mem_ratio_t30", "<=", 0.5), Criterion("eqprop_mem_growth", "<=", 1.2),
              Criterion("tf_mem_ratio_t30", "<=", 0.5), Criterion("tf_eqprop_slope_ratio", "<=", TF_SLOPE_MAX),
              Criterion("tf_implicit_slope_ratio", "<=", TF_SLOPE_MAX)),
    est_seconds_full=180.0,
    est_seconds_quick=55.0,
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
METHODS = {"mlp": ("eqprop", "bptt"), "transformer": ("eqprop", "bptt", "implicit")}
"""Training-step methods measured per model."""
TF_D_MODEL = 64
TF_BATCH = 32
TF_T_FULL = (10, 30, 100)


@dataclasses.dataclass(frozen=True)
class Config:
    """Settings of Track 35."""

    t_values: tuple[int, ...] = T_FULL   # relaxation steps T measured (must include 30)
    batch_size: int = BATCH_SIZE         # images per training step
    repeats: int = REPEATS_FULL          # probe subprocesses per point (median)
    eqprop_variant: str = "standard"     # "keep_trajectory": the broken EqProp memory path (both models)
    tf_t_values: tuple[int, ...] = TF_T_FULL  # transformer: free-phase sweeps T (must include 30)
    tf_batch_size: int = TF_BATCH        # transformer: images per training step
    tf_d_model: int = TF_D_MODEL         # transformer: token width (4 heads, 1 block, 16 patch tokens)

    def __post_init__(self) -> None:
        if len(self.t_values) < 2 or 30 not in self.t_values or min(self.t_values) < 1:
            raise ValueError(f"t_values={list(self.t_values)} is invalid; allowed: at least two ints >= 1 "
                             "including 30 (for mem_ratio_t30)")
        if not 1 <= self.batch_size <= 60000:
            raise ValueError(f"batch_size={self.batch_size} is invalid; allowed: an int in [1, 60000]")
        if self.repeats < 1:
            raise ValueError(f"repeats={self.repeats} is invalid; allowed: an int >= 1")
        if len(self.tf_t_values) < 2 or 30 not in self.tf_t_values or min(self.tf_t_values) < 1:
            raise ValueError(f"tf_t_values={list(self.tf_t_values)} is invalid; allowed: at least two ints >= 1 "
                             "including 30 (for tf_mem_ratio_t30)")
        if not 1 <= self.tf_batch_size <= 60000 or self.tf_d_model < 4 or self.tf_d_model % 4:
            raise ValueError(f"tf_batch_size={self.tf_batch_size} / tf_d_model={self.tf_d_model} is invalid; allowed: "
                             "a batch in [1, 60000] and a multiple of 4 heads")
        if self.eqprop_variant not in EQPROP_VARIANTS:
            raise ValueError(f"eqprop_variant={self.eqprop_variant!r} is invalid; allowed: {list(EQPROP_VARIANTS)}")


QUICK = Config(t_values=T_QUICK, repeats=REPEATS_QUICK, tf_t_values=(10, 30, 60))
FULL = Config()


def _status_kib(field: str) -> int:
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field} line")


def _make_step(method: str, n_steps: int, x, y, seed: int, variant: str, model: str = "mlp", d_model: int = TF_D_MODEL):
    """Build the network, optimizer and config; return a closure doing one training step.

    ``model``: ``"mlp"`` (784-512-10, :func:`models.train.compute_grads`) or ``"transformer"``
    (:class:`models.transformer.EnergyTransformer`, ``d_model``, 4 heads, 1 block, 16 patch tokens,
    :func:`models.transformer.grads_of`: ``eqprop`` symmetric, ``bptt`` through the ``T`` free
    sweeps, ``implicit`` = ``T`` free sweeps then the adjoint (GMRES) at the reached state)."""
    import torch

    if model == "transformer":
        from models.transformer import EnergyTransformer, TrainSettings, TransformerConfig, grads_of

        net = EnergyTransformer(TransformerConfig(d_model=d_model, n_heads=4, damping=0.0), seed=seed)
        ts = TrainSettings(grad=method, beta=BETA, n_free_steps=n_steps, n_nudge_steps=N_NUDGE_STEPS)

        def compute(net_, x_, y_):
            return grads_of(net_, x_, y_, ts)
    else:
        from models.eqprop_mlp import EqPropConfig, EqPropMLP
        from models.train import TrainConfig, compute_grads

        net = EqPropMLP(EqPropConfig(sizes=SIZES), seed=seed)
        cfg = TrainConfig(method=method, batch_size=x.shape[0], beta=BETA, nudging="symmetric", momentum=0.0,
                          n_free_steps=n_steps, n_nudge_steps=N_NUDGE_STEPS)

        def compute(net_, x_, y_):
            return compute_grads(net_, x_, y_, cfg)
    opt = torch.optim.SGD(net.parameters(), lr=0.01)
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
        net.fast_relax = False  # the fused chain relaxation does not call the sweeper: use the generic path

    def one_step() -> None:
        if variant == "keep_trajectory":
            kept.clear()
        grads, _ = compute(net, x, y)
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
    model, d_model = spec.get("model", "mlp"), int(spec.get("d_model", TF_D_MODEL))
    for method in dict.fromkeys(m for m, _ in spec["jobs"]):  # warm-up at the real batch shape: lazy init of each path
        _make_step(method, 2, x, y, spec["seed"], "standard", model, d_model)()
    rows = []
    for method, n_steps in spec["jobs"]:
        one_step = _make_step(method, n_steps, x, y, spec["seed"], spec["variant"] if method == "eqprop" else "standard",
                              model, d_model)
        gc.collect()
        with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
            f.write("5")
        base = max(_status_kib("VmRSS"), _status_kib("VmHWM"))  # HWM right after the reset
        one_step()
        peak = _status_kib("VmHWM")
        del one_step
        rows.append({"model": model, "method": method, "T": n_steps, "step_bytes": (peak - base) * 1024,
                     "baseline_bytes": base * 1024})
    return rows


def run_probe(jobs: list[tuple[str, int]], x: np.ndarray, y: np.ndarray, *, seed: int = 0,
              variant: str = "standard", timeout_s: float = 600.0, model: str = "mlp",
              d_model: int = TF_D_MODEL) -> list[dict[str, Any]]:
    """Run :func:`probe` in a fresh subprocess on the batch ``(x, y)``; returns its rows."""
    if variant not in EQPROP_VARIANTS:
        raise ValueError(f"eqprop_variant={variant!r}; allowed: {EQPROP_VARIANTS}")
    if model not in METHODS:
        raise ValueError(f"model={model!r}; allowed: {sorted(METHODS)}")
    for m, t in jobs:
        if m not in METHODS[model] or int(t) < 1:
            raise ValueError(f"job ({m!r}, {t!r}): method must be one of {METHODS[model]} and T >= 1")
    root = Path(__file__).resolve().parents[1]
    with tempfile.TemporaryDirectory() as tmp:
        data = os.path.join(tmp, "batch.npz")
        np.savez(data, x=x.astype(np.float32), y=y.astype(np.int64))
        spec = {"data": data, "jobs": [[m, int(t)] for m, t in jobs], "seed": seed, "variant": variant,
                "model": model, "d_model": int(d_model)}
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
            progress: bool = False, model: str = "mlp", d_model: int = TF_D_MODEL,
            methods: tuple[str, ...] | None = None) -> list[dict[str, Any]]:
    """Median step bytes per (method, T) over ``repeats`` measurements, each in its own fresh subprocess.

    ``model="mlp"``: one process per measurement: several measurements in one process drifted by up
    to ~1 MB with their order (heap state left by the previous step), which a fresh process avoids.
    ``model="transformer"``: one process per method and repeat, its ``T`` values in ascending order
    (a process per job costs 10-30 s under load here; measured: after a BPTT step in the same
    process, EqProp's step memory read 0.0-0.7 MiB instead of 1.2, so methods never share a process).
    """
    methods = METHODS[model] if methods is None else tuple(methods)
    if set(methods) - set(METHODS[model]):
        raise ValueError(f"methods={methods}; allowed for {model!r}: {METHODS[model]}")
    jobs = [(m, t) for t in t_values for m in methods]
    samples: dict[tuple[str, int], list[int]] = {j: [] for j in jobs}
    if model == "mlp":
        groups = [[j] for j in jobs]
    else:
        groups = [[(m, t) for t in sorted(t_values)] for m in methods]
    todo = [(r, g) for r in range(repeats) for g in groups]
    if progress:
        from models.progress import progress as progress_bar
        todo = progress_bar(todo, desc=f"t35 probes ({model})")
    for r, group in todo:
        for row in run_probe(group, x, y, seed=r, variant=variant, model=model, d_model=d_model):
            samples[(row["method"], row["T"])].append(row["step_bytes"])
    return [{"model": model, "method": m, "T": t, "step_bytes": float(statistics.median(samples[(m, t)])),
             "samples": samples[(m, t)]} for m, t in jobs]


def _slope(d: dict[int, float]) -> float:
    ts = sorted(d)
    return float(np.polyfit(np.array(ts, dtype=float), [d[t] for t in ts], 1)[0])


def _plot(rows: list[dict[str, Any]], tf_rows: list[dict[str, Any]], path: Path, batch: int, tf_title: str) -> None:
    with figure(path, ncols=2, figsize=(11, 3.8), dpi=120) as (fig, _axes):
        for ax, rs, title in ((_axes[0][0], rows, f"784-512-10, batch {batch}"), (_axes[0][1], tf_rows, tf_title)):
            for m, style in (("eqprop", "o-"), ("bptt", "s--"), ("implicit", "^:")):
                r = [row for row in rs if row["method"] == m]
                if r:
                    ax.plot([row["T"] for row in r], [row["step_bytes"] / 2**20 for row in r], style, label=m)
            ax.set_xscale("log")
            ax.set_xlabel("relaxation steps T (free phase)")
            ax.set_ylabel("peak step memory above baseline (MiB)")
            ax.set_title(f"{title}: measured peak RSS of one step", fontsize=9)
            ax.legend()
            ax.grid(alpha=0.3)


def transformer_metrics(tf_rows: list[dict[str, Any]]) -> dict[str, float]:
    """The transformer's criteria metrics from :func:`measure` rows of its three methods: step-memory
    ratio EqProp / BPTT at T=30, least-squares bytes per sweep of each method and their ratio to
    BPTT's (the flatness criteria), growth max / min over T."""
    tf = {m: {r["T"]: r["step_bytes"] for r in tf_rows if r["method"] == m} for m in METHODS["transformer"]}
    bp_slope = _slope(tf["bptt"])
    out = {
        "tf_mem_ratio_t30": tf["eqprop"][30] / tf["bptt"][30] if tf["bptt"][30] > 0 else float("nan"),
        "tf_implicit_over_bptt_t30": tf["implicit"][30] / tf["bptt"][30] if tf["bptt"][30] > 0 else float("nan"),
        "tf_bptt_bytes_per_sweep": bp_slope,
    }
    for m in ("eqprop", "implicit"):
        out[f"tf_{m}_bytes_per_sweep"] = _slope(tf[m])
        out[f"tf_{m}_slope_ratio"] = _slope(tf[m]) / bp_slope if bp_slope > 0 else float("nan")
    for m in METHODS["transformer"]:
        lo = min(tf[m].values())
        out[f"tf_{m}_mem_growth"] = max(tf[m].values()) / lo if lo > 0 else float("nan")
        out[f"tf_{m}_step_bytes_t30"] = tf[m][30]
    return out


def run(ctx: TrackContext) -> TrackResult:
    c = ctx.settings(QUICK, FULL)
    t_values, batch, repeats, variant = c.t_values, c.batch_size, c.repeats, c.eqprop_variant
    x_all, y_all = load_dataset("mnist", "train", ctx.data_dir)
    x, y = x_all[:batch], y_all[:batch]
    rows = measure(t_values, x, y, repeats=repeats, variant=variant, progress=ctx.progress)
    eq = {r["T"]: r["step_bytes"] for r in rows if r["method"] == "eqprop"}
    bp = {r["T"]: r["step_bytes"] for r in rows if r["method"] == "bptt"}
    slope = _slope(bp)
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
    # the energy transformer (EqProp vs BPTT vs implicit), its own batch, width and T values
    xt, yt = x_all[:c.tf_batch_size], y_all[:c.tf_batch_size]
    tf_rows = measure(c.tf_t_values, xt, yt, repeats=repeats, variant=variant, progress=ctx.progress,
                      model="transformer", d_model=c.tf_d_model)
    metrics.update(transformer_metrics(tf_rows))
    metrics.update({
        "tf_batch_size": c.tf_batch_size, "tf_d_model": c.tf_d_model, "tf_t_values": list(c.tf_t_values),
        "tf_rows": tf_rows,
    })
    plot = ctx.plots_dir / "t35_memory_vs_T.png"
    tf_title = f"energy transformer d={c.tf_d_model}, batch {c.tf_batch_size}"
    _plot(rows, tf_rows, plot, batch, tf_title)
    notes = [f"peak RSS above a post-warm-up baseline, fresh subprocess, MALLOC_MMAP_THRESHOLD_={MMAP_THRESHOLD}, "
             f"median of {repeats} subprocess(es); batch {batch} of real MNIST; T2={N_NUDGE_STEPS} symmetric",
             f"transformer: {tf_title}, 4 heads, 1 block, 16 patch tokens, float32; one subprocess per method and "
             f"repeat (T ascending); implicit = T free sweeps + adjoint GMRES (tol 1e-6); flatness = least-squares "
             f"bytes per sweep / BPTT's <= {TF_SLOPE_MAX}"]
    return TrackResult(metrics=metrics, artifacts=[str(plot.relative_to(ctx.out_dir))], notes=notes)

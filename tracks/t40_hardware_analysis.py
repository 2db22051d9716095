"""Track 40: hardware analysis -- operation counts, weight memory and energy per representation.

For each network (784-512-10, 784-256-256-10; quick: the first) and each representation (fp32,
int8, int4, ternary) the analytic counter :mod:`hwsim.opcount` gives MACs and primitive ops by bit
width per inference (free phase, ``T1`` sweeps) and per EqProp training step (free ``T1``,
symmetric nudging: two nudged phases of ``T2``, contrast and weight update), the weight memory,
and an energy estimate from the cited per-op table :mod:`quant.energy` (Horowitz, ISSCC 2014).
Counts are per sample (batch 1: every weight is read from SRAM per sample, no batch reuse).

Cross-check: ``torch.utils.flop_counter.FlopCounterMode`` around the real ``EqPropMLP.free_phase``,
``EqPropMLP.eqprop_grads`` (symmetric) and ``models.gradients.bptt_grads`` on a slice of real MNIST,
and, per integer representation, around the fixed-point simulator's torch mirror
(``hwsim.torch_mirror.torch_relax``, free phase) and the on-chip update
(``hwsim.onchip.update_torch``; quick: the first integer representation only); the analytic dense
MACs must equal the counter's FLOPs / 2 for every run (``flop_counter_match``).

Measured datapath events (``int_event_count_match``, issue 14: the energy figure is the product of a
fixed per-op table and these counts, so the counts are what can be checked): per integer
representation (quick: the first), the fixed-point simulator's torch mirror is run instrumented
(:mod:`hwsim.op_probe`: every accumulator overflow, requantisation, window maximum, state clamp and
product it executes, values held by a chip counted once per phase) for a free phase, both nudged
phases of a symmetric EqProp step (``run_phases``) and the on-chip update (``hwsim.onchip.update_torch``:
products and pooling); each phase's events must equal :meth:`hwsim.opcount.Counts.event_counts` of the
analytic count (``event_cross_check`` lists them). ``energy_ratio_int8_vs_fp32`` and the energies are
reported figures, not criteria: they follow from the checked counts and the cited table.

Table rows (``metrics["rows"]``) are dicts with the keys of :data:`ROW_FIELDS` (``None`` where a
representation has no such number). Other representations (analog, spiking) add a row by
registering a builder with :func:`register_row_builder`; its row must carry the same keys.

Conv (issue 12): ``conv_flop_counter_match`` -- the small conv EqProp net of :mod:`tracks.shared.conv_small`
(seeded weights, MNIST 14x14): analytic MACs of a free phase and a symmetric EqProp step
(:class:`hwsim.opcount.ConvPoolOps`) and a BPTT gradient (``hwsim.opcount.bptt_macs``) vs
FlopCounterMode FLOPs / 2 of the real ``ConvEqProp`` runs;
``conv_int_event_count_match``: the integer conv counts (:class:`hwsim.opcount.ConvPoolOps`, integer
specs) vs the instrumented integer conv simulator (torch mirror: ``conv_int_t``, ``pool_first_max_t``,
``conv_feedback_t``; on-chip conv kernel update), phase by phase as for the MLP;
``conv_macs_per_inference`` / ``conv_macs_per_train_step`` / ``conv_weight_bytes_fp32``, and per integer
representation ``conv_energy_pj_inference_<rep>`` / ``conv_ops_inference_<rep>`` (reported).

Settings: :class:`Config` (``QUICK`` / ``FULL``): ``analytic_n_free_steps`` (the T1 the analytic count
assumes; another value than the real T1 is the broken path of the tests), ``models`` (sizes tuples),
``representations`` (names), ``n_cross_check`` (MNIST samples for the FLOP cross-check).
"""
from __future__ import annotations

import dataclasses
import logging
from typing import Any, Callable

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from hwsim import op_probe, opcount
from hwsim.fixed_point import FixedPointMLP
from hwsim.onchip import update_torch
from hwsim.torch_mirror import torch_relax
from models.eqprop_mlp import EqPropConfig, EqPropMLP
from models.engine import run_phases
from models.gradients import bptt_grads
from quant import get_preset
from quant.energy import SOURCE

from .harness.plots import figure
from .harness.base import Criterion, TrackContext, TrackResult, TrackSpec
from .data import load_dataset

log = logging.getLogger("eqprop_hwsim.tracks.t40")

SPEC = TrackSpec(
    id=40,
    slug="hardware_analysis",
    name="Hardware analysis: operations, memory, energy",
    claim=("Analytic operation counts of EqProp inference and training equal torch's FLOP counter and the "
           "events measured in an instrumented run of the integer simulator (MLP and conv); the energy "
           "estimates built on them are reported."),
    criteria=(Criterion("flop_counter_match", "==", 1.0), Criterion("int_event_count_match", "==", 1.0),
              Criterion("conv_flop_counter_match", "==", 1.0), Criterion("conv_int_event_count_match", "==", 1.0)),
    est_seconds_full=40.0,
    est_seconds_quick=15.0,
)

MODELS_FULL = ((784, 512, 10), (784, 256, 256, 10))
MODELS_QUICK = ((784, 512, 10),)
REPRESENTATIONS = ("fp32", "int8", "int4", "ternary")
N_FREE_STEPS = 30   # T1
N_NUDGE_STEPS = 10  # T2
NUDGING = "symmetric"
BETA = 0.1          # nudging strength of the cross-check run (does not change any count)
MEMORY_LEVEL = "sram_8kb"

ROW_FIELDS = (
    "model", "representation", "weight_bits", "state_bits", "acc_bits",
    "macs_inference", "mults_inference", "adds_inference", "ops_inference",
    "macs_inference_no_drive_reuse", "energy_pj_inference", "compute_energy_pj_inference",
    "memory_energy_pj_inference", "energy_pj_inference_zero_skip",
    "macs_train_step", "mults_train_step", "adds_train_step", "ops_train_step",
    "energy_pj_train_step", "energy_pj_train_by_phase",
    "weight_bytes", "inference_bytes", "training_bytes",
)
"""Keys of a table row; a builder for a new representation fills what applies and ``None`` else."""

RowBuilder = Callable[[EqPropMLP, str], dict[str, Any]]
_ROW_BUILDERS: dict[str, RowBuilder] = {}


def register_row_builder(name: str, builder: RowBuilder, *, overwrite: bool = False) -> None:
    """Register ``builder(net, name) -> row`` for representation ``name``."""
    if name in _ROW_BUILDERS and not overwrite:
        raise ValueError(f"representation {name!r} already has a row builder; pass overwrite=True to replace it")
    _ROW_BUILDERS[name] = builder


def get_row_builder(name: str) -> RowBuilder:
    if name not in _ROW_BUILDERS:
        raise ValueError(f"representation {name!r} has no row builder; allowed: {sorted(_ROW_BUILDERS)}")
    return _ROW_BUILDERS[name]


def model_name(sizes) -> str:
    return "-".join(str(n) for n in sizes)


def digital_row(net: EqPropMLP, name: str) -> dict[str, Any]:
    """Row of a digital preset (fp32 or integer) from :mod:`hwsim.opcount`."""
    spec = get_preset(name)
    inf = opcount.count_inference(net, spec, n_steps=N_FREE_STEPS)
    inf_nr = opcount.count_inference(net, spec, n_steps=N_FREE_STEPS, drive_mode="every_step")
    tr = opcount.count_training_step(net, spec, n_free_steps=N_FREE_STEPS, n_nudge_steps=N_NUDGE_STEPS,
                                     nudging=NUDGING)
    mem = opcount.weight_memory(net, spec)
    zero_skip = None
    if spec.is_integer:
        zero_skip = opcount.count_inference(net, spec, n_steps=N_FREE_STEPS, sparsity="codes").energy_pj(MEMORY_LEVEL)
    t_inf, t_tr = inf.total, tr.total
    return {
        "model": model_name(net.sizes), "representation": name,
        "weight_bits": spec.weights.bits, "state_bits": spec.state.bits if spec.state else 32,
        "acc_bits": spec.acc_bits or 32,
        "macs_inference": inf.macs, "mults_inference": t_inf.mults, "adds_inference": t_inf.adds,
        "ops_inference": t_inf.by_label(), "macs_inference_no_drive_reuse": inf_nr.macs,
        "energy_pj_inference": inf.energy_pj(MEMORY_LEVEL),
        "compute_energy_pj_inference": t_inf.compute_energy_pj(),
        "memory_energy_pj_inference": t_inf.memory_energy_pj(MEMORY_LEVEL),
        "energy_pj_inference_zero_skip": zero_skip,
        "macs_train_step": tr.macs, "mults_train_step": t_tr.mults, "adds_train_step": t_tr.adds,
        "ops_train_step": t_tr.by_label(), "energy_pj_train_step": tr.energy_pj(MEMORY_LEVEL),
        "energy_pj_train_by_phase": tr.energy_by_phase(MEMORY_LEVEL),
        "weight_bytes": mem["weight_bytes"], "inference_bytes": mem["inference_bytes"],
        "training_bytes": mem["training_bytes"],
    }


for _name in REPRESENTATIONS:
    register_row_builder(_name, digital_row)


def _flops(fn) -> int:
    with FlopCounterMode(display=False) as fc:
        fn()
    return int(fc.get_total_flops())


def _phase_runs(net, x: torch.Tensor, y: torch.Tensor, analytic_n_free_steps: int, prefix: str = "") -> list:
    """``(name, analytic fp32 MACs, run)`` of a free phase, a symmetric EqProp step and a BPTT gradient."""
    fp, B = get_preset("fp32"), x.shape[0]
    return [
        (prefix + "free_phase", opcount.count_inference(net, fp, n_steps=analytic_n_free_steps, batch_size=B).macs,
         lambda: net.free_phase(x, n_steps=N_FREE_STEPS), net),
        (prefix + "eqprop_step", opcount.count_training_step(net, fp, n_free_steps=analytic_n_free_steps,
                                                             n_nudge_steps=N_NUDGE_STEPS, nudging=NUDGING,
                                                             batch_size=B).macs,
         lambda: net.eqprop_grads(x, y, beta=BETA, mode=NUDGING, n_free_steps=N_FREE_STEPS,
                                  n_nudge_steps=N_NUDGE_STEPS), net),
        (prefix + "bptt_step", opcount.bptt_macs(net, n_steps=analytic_n_free_steps, batch_size=B,
                                                 update=net.config.update)["total"],
         lambda: bptt_grads(net, x, y, n_steps=N_FREE_STEPS), None),
    ]


def cross_check(net: EqPropMLP, x: torch.Tensor, y: torch.Tensor, analytic_n_free_steps: int) -> list[dict]:
    """Analytic dense MACs (assuming ``analytic_n_free_steps``) vs FlopCounterMode FLOPs / 2 of the
    real runs with ``N_FREE_STEPS``; one row per run."""
    return _compare(model_name(net.sizes), x.shape[0], _phase_runs(net, x, y, analytic_n_free_steps))


def _compare(model: str, B: int, runs) -> list[dict]:
    """One row per run. The analytic counts are those of a datapath that runs every sweep; the float
    MLP's fused relaxation (``models.energy.relax_chain``) stops at an exact fixed point (same result,
    fewer sweeps), so the match is checked on the generic path (``fast_relax = False``, every sweep) and
    the fused path's MACs are reported beside it (``fast_counter_macs``)."""
    rows = []
    for name, analytic, fn, net in runs:
        fast = None
        if net is not None and getattr(net, "fast_relax", False):
            fast = _flops(fn) / 2
            net.fast_relax = False
            try:
                flops = _flops(fn)
            finally:
                net.fast_relax = True
        else:
            flops = _flops(fn)
        row = {"model": model, "run": name, "batch": B, "analytic_macs": int(analytic),
               "counter_flops": flops, "counter_macs": flops / 2, "match": 2 * int(analytic) == flops}
        if fast is not None:
            row["fast_counter_macs"] = fast
        rows.append(row)
    return rows


def cross_check_fixed_point(net: EqPropMLP, spec_name: str, x: torch.Tensor, y: torch.Tensor,
                            analytic_n_free_steps: int) -> list[dict]:
    """Integer datapath: analytic dense MACs vs FlopCounterMode FLOPs / 2 of hwsim's torch mirror
    (``torch_relax``, int64 matmuls incl. feedback arrays, all ``N_FREE_STEPS`` sweeps) for a free
    phase, and of :func:`hwsim.onchip.update_torch` for the on-chip update after symmetric nudging."""
    spec = get_preset(spec_name)
    fp = FixedPointMLP.from_model(net, spec)
    B = x.shape[0]
    xc = fp.quantize_input(x.double().numpy())
    yy = y.numpy()
    inf = opcount.count_inference(net, spec, n_steps=analytic_n_free_steps, batch_size=B)
    upd = opcount.count_training_step(net, spec, n_free_steps=analytic_n_free_steps, n_nudge_steps=N_NUDGE_STEPS,
                                      batch_size=B).phases["update"].macs
    out: dict = {}
    rows = _compare(model_name(net.sizes), B, [(f"fixed_point_free_phase_{spec_name}", inf.macs,
                              lambda: out.setdefault("free", torch_relax(fp, xc, n_steps=N_FREE_STEPS,
                                                                          early_exit=False)[0]), None)])
    def relax(s0, *, beta, n_steps, step_offset):
        return torch_relax(fp, xc, s0, beta=beta, y=yy, n_steps=n_steps, step_offset=step_offset, early_exit=False)

    ph = run_phases(relax, beta=BETA, mode=NUDGING, n_free_steps=N_FREE_STEPS, n_nudge_steps=N_NUDGE_STEPS,
                    free_state=out["free"])
    s1, s2 = ph.s1, ph.s2
    H = [torch.zeros(n, m, dtype=torch.int64).numpy() for n, m in zip(net.sizes[1:], net.sizes[:-1])]
    Hb = [torch.zeros(n, dtype=torch.int64).numpy() for n in net.sizes[1:]]
    c1, c2 = [t.numpy() for t in s1], [t.numpy() for t in s2]
    return rows + _compare(model_name(net.sizes), B, [(f"onchip_update_{spec_name}", upd,
                                     lambda: update_torch(H, Hb, xc, c1, c2, [spec] * len(H), seed=0, step=0),
                                     None)])


def event_cross_check(net, spec_name: str, x: torch.Tensor, y: torch.Tensor, analytic_n_free_steps: int,
                      label: str) -> list[dict]:
    """Analytic events (:meth:`hwsim.opcount.Counts.event_counts`, assuming ``analytic_n_free_steps``)
    vs the events of the instrumented integer simulator (:mod:`hwsim.op_probe`) with ``N_FREE_STEPS``:
    the free phase, the ``b1`` and ``b2`` phases of a symmetric step (each with its drive) and the
    on-chip update (``macs`` and ``pool`` only: the update's other operations are not events)."""
    spec = get_preset(spec_name)
    fp = FixedPointMLP.from_model(net, spec)
    B = x.shape[0]
    xc = fp.quantize_input(x.double().numpy())
    yy = y.numpy()
    tr = opcount.count_training_step(net, spec, n_free_steps=analytic_n_free_steps, n_nudge_steps=N_NUDGE_STEPS,
                                     nudging=NUDGING, batch_size=B)
    drive = opcount.count_inference(net, spec, n_steps=1, batch_size=B).phases["drive"]
    measured: dict[str, dict] = {}

    def relax(s0, *, beta, n_steps, step_offset):
        s, ev = op_probe.relax_events(fp, xc, s0=s0, beta=beta, y=yy, n_steps=n_steps, step_offset=step_offset)
        measured["free" if beta == 0 else ("b2" if beta > 0 else "b1")] = ev
        return s, None

    ph = run_phases(relax, beta=BETA, mode=NUDGING, n_free_steps=N_FREE_STEPS, n_nudge_steps=N_NUDGE_STEPS)
    shapes = [tuple(w.shape) for w in fp.w_codes]
    H = [np.zeros(sh, np.int64) for sh in shapes]
    Hb = [np.zeros(c.c_out if c is not None else n, np.int64) for c, n in zip(fp.conv, fp.sizes[1:])]
    c1, c2 = [t.numpy() for t in ph.s1], [t.numpy() for t in ph.s2]
    with op_probe.probe() as p:
        update_torch(H, Hb, xc, c1, c2, [spec] * len(H), seed=0, step=0, conv=fp.conv)
    measured["update"] = {k: v for k, v in p.snapshot().items() if k in ("macs", "pool")}
    rows = []
    for phase in ("free", "b1", "b2", "update"):
        an = (tr.phases[phase] + (drive if phase != "update" else opcount.Counts())).event_counts()
        an = {k: an[k] for k in measured[phase]}
        rows.append({"model": label, "representation": spec_name, "phase": phase, "batch": B, "analytic": an,
                     "measured": measured[phase], "match": an == measured[phase]})
    return rows


def conv_cross_check(net, x: torch.Tensor, y: torch.Tensor, analytic_n_free_steps: int) -> list[dict]:
    """ConvEqProp (``hwsim.opcount.ConvPoolOps``): analytic MACs of a free phase, of a symmetric EqProp
    step (conv forward, routing convolutions as the float kernel recomputes them, transposed conv,
    ``conv2d_weight`` contrast) and of a BPTT gradient (``hwsim.opcount.bptt_macs``) vs FlopCounterMode
    FLOPs / 2 of the real runs with ``N_FREE_STEPS``."""
    return _compare("conv 1-" + "-".join(map(str, net.config.channels)), x.shape[0],
                    _phase_runs(net, x, y, analytic_n_free_steps, prefix="conv_"))


def _conv_metrics(c: "Config", ctx: TrackContext, seed: int, analytic_t1: int, n_check: int,
                  int_reps: list[str]) -> dict[str, Any]:
    """``conv_flop_counter_match`` and the fp32 counts of the small conv net (seeded weights) on MNIST 14x14."""
    from models.conv import ConvEqProp

    from .shared.conv_small import DATA_VARIANT, small_conv_config, test_images

    net = ConvEqProp(small_conv_config(c.conv_channels), seed=seed)
    xs, ys = test_images(ctx.data_dir, n_check)
    t1 = c.conv_analytic_n_free_steps or analytic_t1
    checks = conv_cross_check(net, torch.from_numpy(xs), torch.from_numpy(ys).long(), t1)
    fp = get_preset("fp32")
    inf = opcount.count_inference(net, fp, n_steps=N_FREE_STEPS)
    step = opcount.count_training_step(net, fp, n_free_steps=N_FREE_STEPS, n_nudge_steps=N_NUDGE_STEPS, nudging=NUDGING)
    mem = opcount.weight_memory(net, fp)
    label = "conv 1-" + "-".join(map(str, c.conv_channels))
    ev = []
    out: dict[str, Any] = {}
    for name in int_reps:
        ev += event_cross_check(net, name, torch.from_numpy(xs), torch.from_numpy(ys).long(), t1, label)
        inf_i = opcount.count_inference(net, get_preset(name), n_steps=N_FREE_STEPS)
        out[f"conv_energy_pj_inference_{name}"] = inf_i.energy_pj(MEMORY_LEVEL)
        out[f"conv_ops_inference_{name}"] = inf_i.total.by_label()
        out[f"conv_weight_bytes_{name}"] = int(opcount.weight_memory(net, get_preset(name))["inference_bytes"])
    return {**out, "conv_flop_counter_match": 1.0 if all(r["match"] for r in checks) else 0.0,
            "conv_flop_cross_check": checks,
            "conv_int_event_count_match": 1.0 if ev and all(r["match"] for r in ev) else 0.0,
            "conv_event_cross_check": ev,
            "conv_macs_per_inference": int(inf.macs), "conv_macs_per_train_step": int(step.macs),
            "conv_weight_bytes_fp32": int(mem["code_bytes"] + mem["bias_bytes"]),
            "conv_model": f"ConvEqProp 1-{'-'.join(map(str, c.conv_channels))} 3x3 on {DATA_VARIANT}"}


def _plot(rows: list[dict], path) -> None:
    models = list(dict.fromkeys(r["model"] for r in rows))
    with figure(path, nrows=1, ncols=len(models), figsize=(6 * len(models), 4.2), dpi=110) as (fig, _axes):
        axes = _axes
        for ax, m in zip(axes[0], models):
            mr = [r for r in rows if r["model"] == m and r.get("energy_pj_train_by_phase")]
            names = [r["representation"] for r in mr]
            bottom = [0.0] * len(mr)
            for phase in opcount.PHASES:
                vals = [r["energy_pj_train_by_phase"].get(phase, 0.0) / 1e6 for r in mr]
                ax.bar(names, vals, bottom=bottom, label=phase)
                bottom = [b + v for b, v in zip(bottom, vals)]
            ax.set_title(f"{m}: one EqProp training step (T1={N_FREE_STEPS}, T2={N_NUDGE_STEPS}, {NUDGING})", fontsize=9)
            ax.set_ylabel("energy estimate (uJ per sample)")
            ax.legend(fontsize=8)


@dataclasses.dataclass(frozen=True)
class Config:
    """Settings of Track 40."""

    models: tuple[tuple[int, ...], ...] = MODELS_FULL  # layer sizes of the analysed models
    representations: tuple[str, ...] = REPRESENTATIONS  # presets in the table (must include fp32 and int8)
    analytic_n_free_steps: int = N_FREE_STEPS  # T1 assumed by the analytic count (the broken path if not T1)
    n_cross_check: int = 8                     # MNIST images of the FLOP cross-check
    n_event_check: int = 4                     # images of the instrumented event cross-check (<= n_cross_check used)
    fixed_point_all: bool = True               # cross-check the integer simulator for every representation
    conv: bool = True                          # conv EqProp net (tracks.shared.conv_small): conv_ metrics
    conv_channels: tuple[int, ...] = (8, 16)
    conv_analytic_n_free_steps: int | None = None  # T1 of the conv analytic count (None: analytic_n_free_steps)

    def __post_init__(self) -> None:
        if not self.models or any(len(m) < 2 or min(m) < 1 for m in self.models):
            raise ValueError(f"models={[list(m) for m in self.models]} is invalid; allowed: lists of >= 2 sizes >= 1")
        if "fp32" not in self.representations or "int8" not in self.representations:
            raise ValueError(f"representations={list(self.representations)} is invalid; allowed: names of "
                             f"{list(REPRESENTATIONS)} including 'fp32' and 'int8' (the energy ratio metric)")
        if self.n_event_check < 1:
            raise ValueError(f"n_event_check={self.n_event_check} is invalid; allowed: an int >= 1 (at most "
                             "n_cross_check images are used)")
        if self.analytic_n_free_steps < 1 or not 1 <= self.n_cross_check <= 10000:
            raise ValueError(f"analytic_n_free_steps={self.analytic_n_free_steps}, n_cross_check="
                             f"{self.n_cross_check} are invalid; allowed: ints >= 1 (n_cross_check <= 10000)")


QUICK = Config(models=MODELS_QUICK, fixed_point_all=False)
FULL = Config()


def run(ctx: TrackContext) -> TrackResult:
    c = ctx.settings(QUICK, FULL)
    models, reps, analytic_t1, n_check = c.models, c.representations, c.analytic_n_free_steps, c.n_cross_check
    fixed_point_reps = [n for n in reps if n in REPRESENTATIONS and get_preset(n).is_integer]
    if not c.fixed_point_all:  # quick: the integer simulator is cross-checked for its first representation only
        fixed_point_reps = fixed_point_reps[:1]
    x_all, y_all = load_dataset("mnist", "test", ctx.data_dir)
    x = torch.from_numpy(x_all[:n_check]).float()
    y = torch.from_numpy(y_all[:n_check]).long()
    seed = ctx.seeds[0] if ctx.seeds else 0

    rows: list[dict] = []
    checks: list[dict] = []
    events: list[dict] = []
    for sizes in models:
        net = EqPropMLP(EqPropConfig(sizes=sizes), seed=seed)
        checks += cross_check(net, x, y, analytic_t1)
        for name in fixed_point_reps:
            checks += cross_check_fixed_point(net, name, x, y, analytic_t1)
            events += event_cross_check(net, name, x[:c.n_event_check], y[:c.n_event_check], analytic_t1,
                                        model_name(sizes))
        for name in reps:
            row = get_row_builder(name)(net, name)
            missing = set(ROW_FIELDS) - set(row)
            if missing:
                raise ValueError(f"row builder of {name!r} left out {sorted(missing)}; fill them (None if n/a)")
            rows.append(row)
        log.info("t40 %s: %d representations counted", model_name(sizes), len(reps))

    first = model_name(models[0])
    by_rep = {r["representation"]: r for r in rows if r["model"] == first}
    fp32 = by_rep["fp32"]
    for r in rows:
        ref = next(q for q in rows if q["model"] == r["model"] and q["representation"] == "fp32")
        r["energy_ratio_vs_fp32_inference"] = r["energy_pj_inference"] / ref["energy_pj_inference"]
        r["energy_ratio_vs_fp32_train_step"] = r["energy_pj_train_step"] / ref["energy_pj_train_step"]

    metrics: dict[str, Any] = {
        "flop_counter_match": 1.0 if all(c["match"] for c in checks) else 0.0,
        "int_event_count_match": 1.0 if events and all(e["match"] for e in events) else 0.0,
        "energy_ratio_int8_vs_fp32": by_rep["int8"]["energy_pj_inference"] / fp32["energy_pj_inference"],
        "macs_per_inference": fp32["macs_inference"],
        "macs_per_train_step": fp32["macs_train_step"],
    }
    for name in reps:
        if name in by_rep:
            metrics[f"weight_bytes_{name}"] = by_rep[name]["weight_bytes"]
            metrics[f"energy_pj_inference_{name}"] = by_rep[name]["energy_pj_inference"]
            metrics[f"energy_pj_train_step_{name}"] = by_rep[name]["energy_pj_train_step"]
    metrics["rows"] = rows
    metrics["flop_cross_check"] = checks
    metrics["event_cross_check"] = events
    if c.conv:
        metrics.update(_conv_metrics(c, ctx, seed, analytic_t1, n_check, fixed_point_reps))

    plot = ctx.plots_dir / "t40_energy_per_phase.png"
    _plot(rows, plot)
    notes = [
        "Energies and energy_ratio_int8_vs_fp32 are reported, not criteria: they are the checked counts "
        "(flop_counter_match, int_event_count_match) times a fixed per-op table.",
        f"Energy table: {SOURCE}; other widths scaled (adders ~ bits, multipliers ~ bits_a * bits_b), "
        f"compare/shift/xor costed as adds; weights read from {MEMORY_LEVEL} per use (batch 1).",
        f"Inference = one free phase of T1={N_FREE_STEPS} sweeps with the input drive W_1 x computed once "
        "(macs_inference_no_drive_reuse: recomputed every sweep); training step = free + 2 nudged phases "
        f"(T2={N_NUDGE_STEPS}) each recomputing the drive as EqPropMLP.relax does, + contrast + update.",
        "Weights are the seeded initialisation (not trained): energy_pj_inference_zero_skip depends on the "
        "zero codes (ternary sparsity) of these weights.",
        "Integer layer updates are counted as the fixed-point simulator computes them "
        "(docs/hwsim_semantics.md: separate forward/feedback accumulators, per-row requantisation, "
        "drive once per phase); inference_bytes include the feedback arrays. The on-chip update is "
        "counted for one copy of each weight (hwsim.onchip needs per-tensor scales, where the feedback "
        "array equals W^T); refreshing per-channel feedback copies is not counted.",
    ]
    if analytic_t1 != N_FREE_STEPS:
        notes.append(f"override: analytic count assumes T1={analytic_t1} while the runs use T1={N_FREE_STEPS}")
    return TrackResult(metrics=metrics, artifacts=[str(plot.relative_to(ctx.out_dir))], notes=notes)

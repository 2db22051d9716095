"""Track 14: the energy transformer trained by true EqProp: gradient equivalence and MNIST accuracy.

Model: :class:`models.transformer.EnergyTransformer` (log-sum-exp attention energy + Hopfield energy
over token states in [-1, 1], MNIST as 16 tokens of 7x7 patches, readout coupled to the MSE cost).

**Gradients** (float64, initial weights of seed ``ctx.seeds[0]``, d=64, 4 heads, 1 block): for each
of ``n_batches`` random batches of ``batch_size`` MNIST training images, the free phase is relaxed to
a residual of ``tol`` (reported), then per parameter tensor the cosine and the L2 relative error of
the EqProp estimate against BPTT (through the free phase, enough sweeps to reach the fixed point) and
against the implicit (adjoint, GMRES) gradient, for beta in {0.5, 0.1, 0.01, 0.001} and the three
nudging modes, all from one pair of nudged equilibria ``s^{-beta}``, ``s^{+beta}`` per batch and beta
(each relaxed to ``tol``; ``nudged_residual_max`` reported): symmetric ``(s^-, s^+)``, one-sided
``(s, s^+)``, random sign ``(s, s^{+-beta})`` with the sign drawn per batch. Reported per mode and beta
(``gradient_table``): median and worst over batches of the worst parameter's cosine, L2 relative
error; the criteria read the symmetric rows.

**Accuracy**: the same block at ``acc_d_model`` (128 in the issue), trained by EqProp (symmetric,
beta ``beta_train``), by BP through the same free phase (BPTT) and by implicit differentiation (the
DEQ baseline: adjoint gradient by GMRES at the state after the same free sweeps), same sweeps, data and
optimiser, per seed (``acc_methods``); test accuracy, train cost and mean iterations per test sample (to residual
1e-3) per epoch; mean and 95 % CI over seeds (:func:`tracks.harness.stats.mean_ci95`).

Variants (one machine with 2 shared cores; measured 2026-11-29, 1 torch thread: one EqProp step of
64 images with 20 + 2x10 sweeps takes 0.29 s at d=64 and 0.62 s at d=128, BPTT about 2x that):

* ``FULL`` (the issue's protocol): 100 batches; d=128, all 60k training images, 10 epochs, 3 seeds,
  both methods: about 3 x 10 x (590 + 1200) s = 15 h here; not run on this machine.
* ``REDUCED`` (what the README figure is measured with, ``--set`` the fields below on the full
  variant, see README "Measured figures"): d=64, 10k training images, 1 epoch, 3 seeds, full test set:
  EqProp 85.88 % +- 1.64, BPTT 85.54 % +- 1.32 (target 97 % missed; within 1 pt of BP); about 20 min
  per seed under the load of 2026-11-29 (about 3 min per seed on an idle core).
* ``QUICK`` (< 60 s): 2 batches of 8 images, betas 0.1 and 0.001 only; d=32, 2000 training images,
  1 epoch, 1000 test images, one seed.

DEQ baseline (2026-11-30, ``run_suite.py --track 14 --set 'parts=["accuracy"]' --set acc_d_model=64
--set n_train=4000 --set n_test=2000 --set epochs=1``, 3 seeds, 1149 s at load ~20-25 on 2 cores):
test accuracy EqProp 78.17 % +- 1.52 (77.5 / 78.3 / 78.7), BP 78.13 % +- 1.37, DEQ 78.08 % +- 1.27
(77.5 / 78.3 / 78.45); train cost 0.3647 / 0.3673 / 0.3672 (seed 0); test iterations to 1e-3: 7.85 /
8.12 / 8.11. BP and DEQ train nearly the same model: 20 free sweeps reach the fixed point (~8 sweeps
to 1e-3), where BPTT through the free phase equals the implicit gradient.

Measured (2026-11-29, FULL gradient part, ``--set 'parts=["gradients"]'``, 100 batches, 804 s): free
phase to residual <= 9.9e-13 in a median of 39 sweeps; worst-tensor cosine median / worst over batches
vs BPTT: beta 0.5: 0.897 / 0.792, 0.1: 0.984 / 0.969, 0.01: 0.99845 / 0.9951, 0.001: 0.9999953 /
0.99843 (L2 relative error median 0.0032, worst 0.057); implicit identical to 1e-13. The worst batch
misses the 0.999 target (the plan's 0.99 holds): states within beta of the [-1, 1] box edges make the
finite-beta estimate biased at O(beta) even with symmetric nudging.

All three nudging modes (2026-11-30, ``run_suite.py --track 14 --set 'parts=["gradients"]'``, 100
batches, 1356 s at load ~20; symmetric rows reproduce the figures above; free residual <= 9.9e-13,
nudged <= 1.0e-12; implicit = BPTT to every printed digit), worst-tensor cosine vs BPTT, median /
worst over batches (L2 relative error median / worst):

======  ==================================  ==================================  ==================================
beta    symmetric                           one-sided                           random sign
======  ==================================  ==================================  ==================================
0.5     0.8967 / 0.7922 (0.548 / 0.635)     0.8869 / 0.8124 (0.472 / 0.593)     0.7449 / 0.2519 (0.706 / 1.027)
0.1     0.9842 / 0.9688 (0.186 / 0.260)     0.9657 / 0.9190 (0.268 / 0.489)     0.9544 / 0.8746 (0.308 / 0.492)
0.01    0.99845 / 0.99510 (0.058 / 0.103)   0.99767 / 0.98679 (0.069 / 0.171)   0.99708 / 0.98388 (0.077 / 0.181)
0.001   0.9999953 / 0.99843 (0.0032 / 0.057)  0.9999962 / 0.99664 (0.0032 / 0.083)  0.9999937 / 0.99592 (0.0040 / 0.091)
======  ==================================  ==================================  ==================================

Why the worst batch misses 0.999 (``benchmarks/transformer_grad_probe.py``, measured 2026-11-30 on
the first 40 batches of the same draw and on batch 50, the worst of the 100): not the free phase's
convergence. Batch 50 (0.9984265 at beta 0.001), 37 (0.9989225) and 9 (0.9990433) give the same
cosine to 7 digits with free and nudged phases relaxed to 1e-14 instead of 1e-12 (``--batches 50
--tol 1e-14 --max-steps 10000``) and to 10 digits with Anderson in float64 (residual <= 3.4e-15,
``--solver anderson``). Batch 50: 2 units cross the box edge and 1 memory its relu kink at beta 0.001,
none at 1e-4 (cosine 1 - 4e-16, L2 error 2.6e-8) or 1e-5 (L2 1.2e-9). The energy is piecewise smooth (the [-1, 1] box and
the Hopfield relu): on those batches 1 unit crosses the box edge and 2 memories cross their relu kink
between the free and the nudged equilibria; the finite-beta contrast then differs from the derivative
at beta = 0 (what BPTT and the implicit gradient compute) by O(1) on those units. Every batch below
0.9999 of the 40 had >= 1 box flip; all 0-flip batches were >= 0.99998. Shrinking beta removes the
crossings: batch 37 at beta 1e-4 / 1e-5: cosine 1 - 1e-15, L2 error 2.7e-8 / 1.6e-9 (O(beta^2), as
symmetric nudging promises on a smooth stretch); batch 9: 0.99994 (1 flip) / 1 - 4e-16 (L2 5e-10).
So at beta = 0.001 the target is missed by construction of the non-smooth energy; smaller beta (or a
smooth box Lagrangian) would meet it. The criterion stays at the issue's beta = 0.001.

Criteria (``*_margin`` = value minus the variant's threshold, thresholds in the metrics as
``required_*``): worst cosine vs BPTT and vs implicit at beta = 0.001 >= 0.999; free residual <= 1e-9;
EqProp test accuracy >= ``required_acc`` (0.97 full); BP minus EqProp <= ``required_gap`` (0.01 full).
Broken paths (tests): ``skip_nudge`` contrasts the free state with itself; ``key_side=False`` uses
ordinary (query-side) attention, not the gradient of an energy.
"""
from __future__ import annotations

import dataclasses
import logging
import time

import numpy as np
import torch

from models.gradients import compare_grads, implicit_grads
from models.transformer import EnergyTransformer, TrainSettings, TransformerConfig, bptt_grads_damped, evaluate, \
    train_epoch

from .data import load_dataset
from .harness.base import Criterion, TrackContext, TrackResult, TrackSpec
from .harness.plots import figure
from .harness.stats import mean_ci95
from .harness.threads import torch_threads

log = logging.getLogger("eqprop_hwsim.tracks.t14")

SPEC = TrackSpec(
    id=14, slug="transformer_eqprop", name="Energy transformer: EqProp gradients and accuracy",
    claim=("A looped transformer block whose attention and MLP are energy terms, trained by true EqProp: "
           "its symmetric EqProp estimate matches BPTT and the implicit gradient per parameter tensor "
           "(cosine >= 0.999 at beta = 0.001, free phase converged), and it reaches the test accuracy of the "
           "same block trained by BP through its free phase and by implicit differentiation (DEQ) on MNIST."),
    criteria=(Criterion("cos_bptt_worst_margin", ">=", 0.0), Criterion("cos_implicit_worst_margin", ">=", 0.0),
              Criterion("free_residual_max", "<=", 1e-9), Criterion("eqprop_acc_margin", ">=", 0.0),
              Criterion("bp_gap_margin", ">=", 0.0), Criterion("deq_gap_margin", ">=", 0.0)),
    est_seconds_full=60000.0, est_seconds_quick=60.0, est_seconds_cpu_full=50.0,
)

BETA_GRID = (0.5, 0.1, 0.01, 0.001)
MODES = ("symmetric", "one_sided", "random_sign")
"""Nudging modes of the gradient table (the criteria read the symmetric rows)."""
ACC_METHODS = ("eqprop", "bptt", "implicit")
"""Training methods of the accuracy part (``implicit`` = the DEQ baseline)."""
ACC_TAGS = {"eqprop": "eqprop", "bptt": "bp", "implicit": "deq"}
"""Metric prefix per training method."""
REQUIRED_COS = 0.999


@dataclasses.dataclass(frozen=True)
class Config:
    """Settings of Track 14."""

    n_batches: int = 100                    # random MNIST batches of the gradient comparison
    batch_size: int = 10                    # images per gradient batch
    betas: tuple[float, ...] = BETA_GRID    # nudging strengths compared (the criterion reads 0.001)
    d_model: int = 64                       # token width of the gradient comparison
    n_heads: int = 4                        # attention heads (both parts)
    tol: float = 1e-12                      # free/nudged phase residual (float64)
    max_steps: int = 3000                   # sweep cap of every phase
    acc_d_model: int = 128                  # token width of the accuracy runs
    n_train: int | None = None              # training images (None: all 60k)
    n_test: int | None = None               # test images (None: all 10k)
    epochs: int = 10                        # training epochs
    n_seeds: int = 3                        # seeds (the first n of ctx.seeds)
    beta_train: float = 0.1                 # nudging of EqProp training (symmetric)
    n_free_steps: int = 20                  # free sweeps per training step (also the BPTT depth)
    n_nudge_steps: int = 10                 # sweeps of each nudged phase
    lr: float = 2e-3                        # Adam step size (both methods)
    batch_train: int = 64                   # training minibatch
    required_acc: float = 0.97              # EqProp test accuracy threshold
    required_gap: float = 0.01              # BP minus EqProp accuracy threshold
    skip_nudge: bool = False                # broken path: contrast the free state with itself
    key_side: bool = True                   # False: non-energy (query-side) attention, broken path
    parts: tuple[str, ...] = ("gradients", "accuracy")  # what to run (a missing part fails its criteria)
    acc_methods: tuple[str, ...] = ACC_METHODS  # trained in the accuracy part (a missing one fails its criterion)

    def __post_init__(self) -> None:
        for name in ("n_batches", "batch_size", "d_model", "n_heads", "acc_d_model", "epochs", "n_seeds",
                     "max_steps", "n_free_steps", "n_nudge_steps", "batch_train"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name}={getattr(self, name)} is invalid; allowed: an int >= 1")
        if 0.001 not in self.betas:
            raise ValueError(f"betas={self.betas} must contain 0.001 (the criterion's beta)")
        if not self.parts or set(self.parts) - {"gradients", "accuracy"}:
            raise ValueError(f"parts={self.parts} is invalid; allowed: a non-empty subset of ('gradients', 'accuracy')")
        if "eqprop" not in self.acc_methods or set(self.acc_methods) - set(ACC_METHODS):
            raise ValueError(f"acc_methods={self.acc_methods} is invalid; allowed: a subset of {ACC_METHODS} "
                             "containing 'eqprop'")
        if self.tol <= 0:
            raise ValueError(f"tol={self.tol} must be > 0")


QUICK = Config(n_batches=2, batch_size=8, betas=(0.1, 0.001), max_steps=1500, acc_d_model=32, n_train=2000,
               n_test=1000, epochs=1, n_seeds=1, required_acc=0.5, required_gap=0.15)
FULL = Config()
REDUCED = dataclasses.replace(FULL, acc_d_model=64, n_train=10000, epochs=1)
"""The reduced full variant of the README figure (``--set acc_d_model=64 --set n_train=10000 --set epochs=1``)."""
CPU_FULL = dataclasses.replace(FULL, n_batches=5, batch_size=8, acc_d_model=32, n_train=2000, n_test=2000, epochs=1,
                               n_seeds=3, required_acc=QUICK.required_acc, required_gap=QUICK.required_gap)
"""The CPU-reduced full variant ("full (CPU-reduced)"), what ``run_suite.py --all`` runs on ``--device cpu``
(FULL is the GPU recipe: ``--device cuda``, or ``--full-recipe`` on the CPU): gradients on 5 batches of 8 at
every beta and mode (the 0.999 bar unchanged); accuracy at d=32, 2000 training images, 1 epoch, 2000 test
images, 3 seeds, EqProp / BPTT / DEQ, judged by the quick bars (EqProp >= 0.5, gaps <= 15 pt): the 97 % and
1 pt bars belong to the GPU recipe. Measured 2026-11-30 (seeds 0 1 2, ``/usr/bin/time -v``: 46 s CPU time,
910 s wall under load ~17): FAIL on the gradient criterion: worst-tensor cosine at beta 0.001 over the 5
batches 0.99825 < 0.999 (the GPU recipe's 100 batches miss it too, 0.99843: see the module doc); accuracy
EqProp 0.660 +- 0.024, BPTT 0.654, DEQ 0.654 (quick bars met)."""


def _gradients(c: Config, seed: int, data_dir, device) -> tuple[dict, list[dict]]:
    x_all, y_all = load_dataset("mnist", "train", data_dir)
    rng = np.random.default_rng(seed)
    net = EnergyTransformer(TransformerConfig(d_model=c.d_model, n_heads=c.n_heads, damping=0.0,
                                              key_side=c.key_side), seed=seed).double().to(device)
    rows, residuals, steps, nudge_res = [], [], [], []
    gen = torch.Generator().manual_seed(seed)  # the random-sign draws
    for b in range(c.n_batches):
        idx = rng.choice(x_all.shape[0], size=c.batch_size, replace=False)
        x = torch.as_tensor(x_all[idx], dtype=torch.float64, device=device)
        y = torch.as_tensor(y_all[idx], device=device)
        s, info = net.free_phase(x, n_steps=c.max_steps, tol=c.tol)
        residuals.append(float(info.residual.max()))
        n_conv = int(info.steps.max()) if bool(info.converged.all()) else c.max_steps
        steps.append(n_conv)
        g_bptt = bptt_grads_damped(net, x, y, n_steps=n_conv + 50, damping=0.0)
        g_impl = implicit_grads(net, x, y, free_state=s, tol=1e-12)
        for beta in c.betas:
            est, res = _estimates(net, x, y, s, beta, c, gen)
            nudge_res.append(res)
            for mode, ge in est.items():
                for rb, ri in zip(compare_grads(ge, g_bptt), compare_grads(ge, g_impl)):
                    rows.append({"batch": b, "beta": beta, "mode": mode, "param": rb["param"],
                                 "cos_bptt": rb["cosine"], "relerr_bptt": rb["rel_error"],
                                 "cos_implicit": ri["cosine"], "relerr_implicit": ri["rel_error"]})
        log.info("t14 gradients batch %d/%d: free steps %d, residual %.1e", b + 1, c.n_batches, n_conv, residuals[-1])
    m: dict = {"free_residual_max": max(residuals), "free_steps_median": float(np.median(steps)),
               "nudged_residual_max": max(nudge_res)}
    table = []
    for mode in MODES:
        for beta in c.betas:
            for ref in ("bptt", "implicit"):
                sel = [r for r in rows if r["beta"] == beta and r["mode"] == mode]
                per_batch = [min(_nan0(r[f"cos_{ref}"]) for r in sel if r["batch"] == b) for b in range(c.n_batches)]
                rel = [max(_nan_inf(r[f"relerr_{ref}"]) for r in sel if r["batch"] == b) for b in range(c.n_batches)]
                table.append({"mode": mode, "beta": beta, "ref": ref, "cos_median": float(np.median(per_batch)),
                              "cos_worst": float(min(per_batch)), "worst_batch": int(np.argmin(per_batch)),
                              "relerr_median": float(np.median(rel)), "relerr_worst": float(max(rel))})
    for r in table:
        if r["beta"] == 0.001:
            tag = "" if r["mode"] == "symmetric" else f"_{r['mode']}"
            m[f"cos_{r['ref']}_worst{tag}"] = r["cos_worst"]
            m[f"cos_{r['ref']}_median{tag}"] = r["cos_median"]
            m[f"relerr_{r['ref']}_median{tag}"] = r["relerr_median"]
    m["cos_bptt_worst_margin"] = m["cos_bptt_worst"] - REQUIRED_COS
    m["cos_implicit_worst_margin"] = m["cos_implicit_worst"] - REQUIRED_COS
    m["gradient_table"] = table
    return m, rows


def _estimates(net, x, y, s, beta: float, c: Config, gen: torch.Generator) -> tuple[dict[str, dict], float]:
    """The three nudging modes' estimates from one pair of nudged equilibria ``s^{-beta}``, ``s^{+beta}``
    (each relaxed from the free state ``s`` to residual ``c.tol``, as :func:`models.engine.run_phases`
    does): symmetric ``(s^-, s^+)``, one-sided ``(s, s^+)``, random sign ``(s, s^{+-beta})`` with the
    sign drawn per batch and beta (as :func:`models.engine.nudge_betas`); and the largest nudged
    residual. ``skip_nudge``: every contrast uses the free state twice (broken path)."""
    if c.skip_nudge:
        return {"symmetric": net.contrast(x, s, s, -beta, beta), "one_sided": net.contrast(x, s, s, 0.0, beta),
                "random_sign": net.contrast(x, s, s, 0.0, beta)}, 0.0
    drive = net.drive(x)
    (sm, im), (sp, ip) = (net.relax(x, s, beta=b, y=y, n_steps=c.max_steps, tol=c.tol, drive=drive)
                          for b in (-beta, beta))
    sign = 1.0 if torch.rand((), generator=gen) < 0.5 else -1.0
    return ({"symmetric": net.contrast(x, sm, sp, -beta, beta), "one_sided": net.contrast(x, s, sp, 0.0, beta),
             "random_sign": net.contrast(x, s, sp if sign > 0 else sm, 0.0, sign * beta)},
            float(torch.maximum(im.residual.max(), ip.residual.max())))


def _nan0(v: float) -> float:
    return -1.0 if np.isnan(v) else v


def _nan_inf(v: float) -> float:
    return float("inf") if np.isnan(v) else v


def _accuracy(c: Config, seeds, data_dir, device) -> tuple[dict, list[dict]]:
    x_tr, y_tr = load_dataset("mnist", "train", data_dir)
    x_te, y_te = load_dataset("mnist", "test", data_dir)
    n_tr = c.n_train or x_tr.shape[0]
    n_te = c.n_test or x_te.shape[0]
    x_tr, y_tr = torch.as_tensor(x_tr[:n_tr], device=device), torch.as_tensor(y_tr[:n_tr], device=device)
    x_te, y_te = torch.as_tensor(x_te[:n_te], device=device), torch.as_tensor(y_te[:n_te], device=device)
    curves, final = [], {m: [] for m in c.acc_methods}
    for seed in seeds:
        for grad in c.acc_methods:
            torch.manual_seed(seed)
            net = EnergyTransformer(TransformerConfig(d_model=c.acc_d_model, n_heads=c.n_heads, damping=0.0,
                                                      key_side=c.key_side), seed=seed).to(device)
            ts = TrainSettings(grad=grad, beta=c.beta_train, n_free_steps=c.n_free_steps,
                               n_nudge_steps=c.n_nudge_steps, lr=c.lr, batch_size=c.batch_train)
            opt = torch.optim.Adam(net.parameters(), lr=c.lr)
            gen = torch.Generator().manual_seed(seed)
            for ep in range(c.epochs):
                t0 = time.perf_counter()
                loss = train_epoch(net, opt, x_tr, y_tr, ts, gen)
                ev = evaluate(net, x_te, y_te, n_steps=3 * c.n_free_steps, tol=1e-3)
                curves.append({"seed": seed, "method": grad, "epoch": ep + 1, "train_cost": loss,
                               "test_acc": ev["accuracy"], "mean_iters": ev["mean_steps"],
                               "seconds": time.perf_counter() - t0})
                log.info("t14 %s seed %d epoch %d: cost %.4f test acc %.4f iters %.1f", grad, seed, ep + 1, loss,
                         ev["accuracy"], ev["mean_steps"])
            final[grad].append(curves[-1]["test_acc"])
    m = {}
    for grad in c.acc_methods:
        tag = ACC_TAGS[grad]
        m[f"{tag}_acc_mean"], m[f"{tag}_acc_ci95"] = mean_ci95(final[grad])
        m[f"{tag}_acc_per_seed"] = final[grad]
        m[f"{tag}_iters_last_epoch"] = float(np.mean([r["mean_iters"] for r in curves
                                                      if r["method"] == grad and r["epoch"] == c.epochs]))
    m["required_acc"], m["required_gap"] = c.required_acc, c.required_gap
    m["eqprop_acc_margin"] = m["eqprop_acc_mean"] - c.required_acc
    for grad in ("bptt", "implicit"):
        if grad in c.acc_methods:
            tag = ACC_TAGS[grad]
            m[f"{tag}_minus_eqprop"] = m[f"{tag}_acc_mean"] - m["eqprop_acc_mean"]
            m[f"{tag}_gap_margin"] = c.required_gap - m[f"{tag}_minus_eqprop"]
    return m, curves


def run(ctx: TrackContext) -> TrackResult:
    c = ctx.settings(QUICK, FULL, cpu=CPU_FULL)
    device = ctx.torch_device
    seeds = tuple(ctx.seeds[: c.n_seeds])
    gm, rows, am, curves = {"gradient_table": []}, [], {}, []
    with torch_threads(1):
        if "gradients" in c.parts:
            gm, rows = _gradients(c, ctx.seeds[0], ctx.data_dir, device)
        if "accuracy" in c.parts:
            am, curves = _accuracy(c, seeds, ctx.data_dir, device)
    metrics = {**gm, **am, "curves": curves, "grad_rows_n": len(rows)}
    notes = [f"gradients: {c.n_batches} batches of {c.batch_size} MNIST training images, d={c.d_model}, "
             f"{c.n_heads} heads, 1 block, float64, initial weights (seed {ctx.seeds[0]}), tol {c.tol:g}",
             f"accuracy: d={c.acc_d_model}, {c.n_train or 60000} training images, {c.epochs} epochs, "
             f"{c.n_test or 10000} test images, seeds {list(seeds)}; BP = BPTT through the same "
             f"{c.n_free_steps}-sweep free phase, same optimiser; DEQ = implicit gradient (adjoint by GMRES, tol 1e-6) "
             f"at the state after the same {c.n_free_steps} free sweeps, same optimiser"]
    if ctx.variant(has_cpu_full=True) == "full (CPU-reduced)":
        notes.append(f"full (CPU-reduced): {c.n_batches} gradient batches, small accuracy run, thresholds "
                     f"{c.required_acc:g} / {c.required_gap:g} (the quick bars; the GPU recipe's are "
                     f"{FULL.required_acc:g} / {FULL.required_gap:g})")
    if ctx.quick:
        notes.append("quick: 2 gradient batches, betas 0.1 / 0.001, small accuracy run (thresholds lowered)")
    artifacts = [_plot(gm["gradient_table"], curves, ctx)]
    return TrackResult(metrics=metrics, artifacts=artifacts, notes=notes)


def _plot(table, curves, ctx: TrackContext) -> str:
    path = ctx.plots_dir / "t14_transformer_eqprop.png"
    with figure(path, ncols=2, figsize=(10, 3.8)) as (fig, axes):
        ax = axes[0][0]
        for mode, mk in (("symmetric", "o"), ("one_sided", "s"), ("random_sign", "^")):
            sel = sorted((r for r in table if r["ref"] == "bptt" and r.get("mode", "symmetric") == mode),
                         key=lambda r: r["beta"])
            for stat, ls in (("cos_median", "-"), ("cos_worst", ":")):
                ax.plot([r["beta"] for r in sel], [np.log10(max(1 - r[stat], 1e-16)) for r in sel], ls, marker=mk,
                        label=f"{mode} vs BPTT ({stat[4:]})")
        ax.axhline(-3, color="k", lw=0.8, ls="--", label="cosine 0.999")
        if table:  # a run without the gradient part has nothing to put on the log axis
            ax.set_xscale("log")
        ax.set_xlabel("beta"); ax.set_ylabel("log10(1 - cosine), worst tensor")
        ax.legend(fontsize=7)
        ax = axes[0][1]
        for (seed, meth) in sorted({(r["seed"], r["method"]) for r in curves}):
            sel = [r for r in curves if r["seed"] == seed and r["method"] == meth]
            ax.plot([r["epoch"] for r in sel], [r["test_acc"] for r in sel], {"eqprop": "-o", "bptt": "--s"}.get(meth, ":^"),
                    label=f"{meth} seed {seed}")
        ax.set_xlabel("epoch"); ax.set_ylabel("test accuracy")
        if curves:
            ax.legend(fontsize=7)
    return str(path.relative_to(ctx.out_dir))

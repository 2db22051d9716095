"""Track 39: algorithmic reasoning with the looped energy transformer (plan Exp. 3.5).

Tasks (:mod:`tracks.data.algorithmic`, seeded generators, encoder formulation with aligned
answers): parity, addition (aligned digit pairs, LSD first), copying (aligned), sorting. For each
task and seed, two models are trained on problems of one size ``n_train`` and tested on that size
and on larger ones (length generalisation; fixed sinusoidal positions so any length can be fed):

* **EqProp**: :class:`~models.causal_transformer.CausalEnergyTransformer` with ``attention="full"``
  (bidirectional joint energy: EqProp estimates the full gradient), one weight-tied block looped to
  equilibrium (``n_free_steps`` sweeps; more at test time: ``test_steps``);
* **baseline**: a fixed-depth pre-LN transformer (:class:`~models.causal_transformer.CausalTransformerLM`,
  ``causal=False``, ``n_layers`` layers) whose width matches the EqProp model's parameter count,
  trained by backprop on the *same* batches (same steps, batch, learning rate).

Accuracy: parity the label; the other tasks the exact-match rate of the whole answer (every
position right; the token accuracy is reported too). Mean and 95 % CI over seeds per length.

Adaptive compute: per test instance of the training size, sweeps until the free phase's residual
``max |s_new - s|`` is ``<= eps`` (cap ``max_settle``) vs its difficulty (number of 1s / longest
carry chain / inversions): Spearman r and p per seed (``scipy.stats.spearmanr``). The plan's success
criterion (iterations correlate with difficulty, r > 0, p < 0.01, AND EqProp beats the baseline on
that task) is reported as ``plan_success``; the plan's accuracy targets (parity 100 % up to N=20,
addition 95 % up to N=10, copying 100 %, sorting 90 % up to N=8) as ``target_<task>_met`` at the
lengths tested (a target whose lengths were not tested is reported missed). A plot shows the
answer probability along the free phase for a few addition instances.

Criteria (able to fail): the generators are sound (``generator_check_failures == 0``:
inputs and answers recomputed by independent reference code; a generator that leaks the answer into
the input fails it); EqProp learns (``eqprop_copying_acc_train_len >= 0.9``, exact match at the
training size). Everything else is a reported figure.

Measured (``run_suite.py --track 39 --quick --set n_seeds=3 --set steps=300``: d=32, 300 steps x 32,
seeds 0-2, exact match mean +- 95 % CI; 1370 s wall on the shared 2-core machine at load ~25):
parity N=8 EqProp 0.435 +- 0.088 / BP 0.445 +- 0.154, N=16 0.474 / 0.438 (both at chance); addition
N=4 0.104 +- 0.059 / 0.120 +- 0.078 (token accuracy 0.63 / 0.68), N=8 0.003 / 0.013; copying N=8
1.000 / 1.000, N=16 0.607 +- 0.818 / 1.000 (token 0.966); sorting N=5 0.125 +- 0.019 / 0.906 +- 0.051,
N=8 0.000 / 0.003. Every plan target missed; iterations vs difficulty per seed: parity r = 0.585,
0.096, undefined (all instances took the same sweeps); addition -0.084 / 0.056 / 0.125; sorting
mean 0.012 (84 % of sorting instances hit the 100-sweep cap); plan success criterion missed.

Variants (CPU): ``QUICK`` 1 seed, d=32, 150 steps per task, sizes parity 8 -> 8/16, addition 4 ->
4/8, copying 8 -> 8/16, sorting 5 -> 5/8 (< 60 s). ``FULL`` 3 seeds, d=64, 800 steps, parity 10 ->
10/20, addition 5 -> 5/10, copying 10 -> 10/20, sorting 6 -> 6/8 (the reduced CPU variant: the
plan's models and budgets are far larger); honours ``--device``.
"""
from __future__ import annotations

import dataclasses
import logging
import time

import numpy as np
import torch
import torch.nn.functional as F

from models.causal_transformer import (CausalConfig, CausalEnergyTransformer, CausalTransformerLM, eqprop_grads,
                                       match_baseline_width)
from models.progress import progress

from .data.algorithmic import INFO, TASKS, check_batch, generate, seq_len
from .harness.base import Criterion, TrackContext, TrackResult, TrackSpec
from .harness.plots import figure
from .harness.stats import mean_ci95
from .harness.threads import torch_threads

log = logging.getLogger("eqprop_hwsim.tracks.t39")

SPEC = TrackSpec(
    id=39, slug="reasoning", name="Looped energy transformer: algorithmic reasoning",
    claim=("An EqProp-trained looped energy transformer learns seeded algorithmic tasks (copying exact match >= 90 % "
           "at the training length) from sound generators; accuracy vs length against a matched fixed-depth "
           "backprop transformer, iterations-to-eps vs difficulty and the plan's targets are reported (met/missed)."),
    criteria=(Criterion("generator_check_failures", "==", 0), Criterion("eqprop_copying_acc_train_len", ">=", 0.9)),
    est_seconds_full=3000.0, est_seconds_quick=55.0, est_seconds_cpu_full=95.0,
)

PLAN_TARGETS = {"parity": (1.0, 20), "addition": (0.95, 10), "copying": (1.0, None), "sorting": (0.9, 8)}
"""task -> (accuracy, up to size) of the research plan."""


@dataclasses.dataclass(frozen=True)
class Config:
    """Settings of Track 39."""

    tasks: tuple[str, ...] = TASKS
    n_train: tuple[int, ...] = (10, 5, 10, 6)          # training size per task (order of ``tasks``)
    n_test: tuple[tuple[int, ...], ...] = ((10, 20), (5, 10), (10, 20), (6, 8))  # test sizes per task
    d_model: int = 64
    n_heads: int = 4
    n_mem_ratio: int = 4
    n_layers: int = 2              # baseline depth
    steps: int = 800               # optimiser steps per task and model
    batch: int = 32
    lr: float = 3e-3
    beta: float = 0.2
    n_free_steps: int = 20
    n_nudge_steps: int = 10
    test_steps: int = 40           # free sweeps at test time
    damping: float = 0.5
    n_eval: int = 256              # test instances per size
    n_seeds: int = 3
    eps: float = 1e-3              # residual of "settled"
    max_settle: int = 150
    leak: bool = False             # broken path: the generators write the answer into the input
    baseline: bool = True

    def __post_init__(self) -> None:
        if not self.tasks or set(self.tasks) - set(TASKS):
            raise ValueError(f"tasks={self.tasks}; allowed: a non-empty subset of {TASKS}")
        if len(self.n_train) != len(self.tasks) or len(self.n_test) != len(self.tasks):
            raise ValueError(f"n_train ({len(self.n_train)}) and n_test ({len(self.n_test)}) need one entry per task "
                             f"({len(self.tasks)})")
        for k in ("d_model", "n_heads", "n_mem_ratio", "n_layers", "steps", "batch", "n_free_steps", "n_nudge_steps",
                  "test_steps", "n_eval", "n_seeds", "max_settle"):
            if int(getattr(self, k)) < 1:
                raise ValueError(f"{k}={getattr(self, k)} is invalid; allowed: an int >= 1")
        for n, ts in zip(self.n_train, self.n_test):
            if n < 2 or not ts or min(ts) < 1:
                raise ValueError(f"n_train={n} (>= 2) / n_test={ts} (non-empty, sizes >= 1) invalid")


QUICK = Config(n_train=(8, 4, 8, 5), n_test=((8, 16), (4, 8), (8, 16), (5, 8)), d_model=32, steps=150, n_eval=128,
               n_seeds=1, test_steps=30, max_settle=100)
FULL = Config()
CPU_FULL = dataclasses.replace(QUICK, n_seeds=3)
"""The CPU-reduced full variant ("full (CPU-reduced)"), what ``run_suite.py --all`` runs on ``--device cpu``
(FULL runs with ``--device cuda`` or ``--full-recipe``): the quick sizes and budget (d=32, 150 steps per
task) with 3 seeds; the criteria and bars are the track's own (unchanged). Measured 2026-11-30 (seeds 0 1 2,
``/usr/bin/time -v``: 94 s CPU time, 1576 s wall under load ~17): pass; generator checks 0 failures, EqProp
copying at the training length 1.000 (3 seeds), at length 16 0.674 +- 0.617 (baseline 1.000)."""


def _max_len(task, c: Config, i: int) -> int:
    return max(seq_len(task, n) for n in (c.n_train[i], *c.n_test[i]))


def make_models(task: str, c: Config, i: int, seed: int):
    info = INFO[task]
    n_ctx = _max_len(task, c, i)
    net = CausalEnergyTransformer(CausalConfig(vocab=info.vocab, n_ctx=n_ctx, d_model=c.d_model, n_heads=c.n_heads,
                                               n_mem_ratio=c.n_mem_ratio, attention="full", readout=info.readout,
                                               n_out=info.n_out, pos="sinusoidal", damping=c.damping), seed=seed)
    base = None
    if c.baseline:
        def mk(d, s=None):
            return CausalTransformerLM(info.vocab, n_ctx, d, c.n_heads, c.n_layers, causal=False, n_out=info.n_out,
                                       readout=info.readout, pos="sinusoidal", seed=s)
        base = mk(match_baseline_width(net.n_params(), c.n_heads, mk), seed)
    return net, base


def _tensors(b, dev):
    return torch.as_tensor(b.x, device=dev), torch.as_tensor(b.y, device=dev)


def train(task: str, net, base, c: Config, i: int, seed: int, dev, show: bool) -> None:
    rng = np.random.default_rng(10_000 + seed)
    opt_e = torch.optim.Adam(net.parameters(), lr=c.lr)
    opt_b = torch.optim.Adam(base.parameters(), lr=c.lr) if base is not None else None
    params = dict(net.named_parameters())
    for _ in progress(range(c.steps), desc=f"t39 {task} seed {seed}", enabled=show):
        x, y = _tensors(generate(task, c.batch, c.n_train[i], rng, leak=c.leak), dev)
        g = eqprop_grads(net, x, y, beta=c.beta, n_free_steps=c.n_free_steps, n_nudge_steps=c.n_nudge_steps)
        opt_e.zero_grad(set_to_none=True)
        for k, p in params.items():
            if k in g:
                p.grad = g[k]
        opt_e.step()
        if base is not None:
            z = base(x)
            loss = F.cross_entropy(z.reshape(-1, z.shape[-1]), y.reshape(-1))
            opt_b.zero_grad(set_to_none=True)
            loss.backward()
            opt_b.step()


def accuracy(z: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """(exact-match rate, token accuracy)."""
    ok = z.argmax(-1) == y
    if ok.ndim == 1:
        return float(ok.double().mean()), float(ok.double().mean())
    return float(ok.all(1).double().mean()), float(ok.double().mean())


def settle_steps(net, x: torch.Tensor, eps: float, max_steps: int) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Per-instance sweeps until the residual is first ``<= eps`` (``max_steps`` if never), and the
    states along the way."""
    with torch.no_grad():
        drive = net.drive(x)
        s = torch.zeros_like(drive)
        steps = torch.full((x.shape[0],), max_steps, dtype=torch.long, device=x.device)
        active = torch.ones(x.shape[0], dtype=torch.bool, device=x.device)
        traj = []
        for k in range(1, max_steps + 1):
            new = net.sweep(s, drive)
            res = (new - s).abs().flatten(1).amax(1)
            s = new
            traj.append(s)
            done = active & (res <= eps)
            steps[done] = k
            active &= ~done
            if not bool(active.any()):
                break
    return steps, traj


def evaluate_task(task, net, base, c: Config, i: int, seed: int, dev) -> dict:
    from scipy.stats import spearmanr

    rng = np.random.default_rng(20_000 + seed)
    out: dict = {"eqprop": {}, "baseline": {}}
    for n in c.n_test[i]:
        b = generate(task, c.n_eval, n, rng, leak=c.leak)
        x, y = _tensors(b, dev)
        with torch.no_grad():
            s, _ = net.free_phase(x, c.test_steps)
            out["eqprop"][n] = accuracy(net.logits(s), y)
            if base is not None:
                out["baseline"][n] = accuracy(base(x), y)
    b = generate(task, c.n_eval, c.n_train[i], rng, leak=c.leak)
    x, y = _tensors(b, dev)
    steps, traj = settle_steps(net, x, c.eps, c.max_settle)
    st = steps.double().cpu().numpy()
    if np.all(np.isnan(b.difficulty)) or np.ptp(b.difficulty) == 0 or np.ptp(st) == 0:
        r, p = float("nan"), float("nan")
    else:
        r, p = spearmanr(st, b.difficulty)
    with torch.no_grad():
        probs = [torch.softmax(net.logits(t[:4]), -1) for t in traj]
    y4 = y[:4]
    p_true = torch.stack([pr.gather(-1, y4[..., None])[..., 0] if y4.ndim == 1 else
                          pr.gather(-1, y4[..., None])[..., 0].min(-1).values for pr in probs], 1).cpu().numpy()
    out["settle"] = {"spearman_r": float(r), "spearman_p": float(p), "mean_steps": float(st.mean()),
                     "frac_capped": float((st >= c.max_settle).mean()), "_steps": st, "_difficulty": b.difficulty,
                     "_p_true": p_true, "_difficulty4": b.difficulty[:4]}
    return out


def run(ctx: TrackContext) -> TrackResult:
    c = ctx.settings(QUICK, FULL, cpu=CPU_FULL)
    dev = ctx.torch_device
    seeds = tuple(ctx.seeds[: c.n_seeds])
    t0 = time.monotonic()
    # generator soundness on fresh draws of every task and size used
    gen_rng = np.random.default_rng(999)
    gen_fail = sum(check_batch(t, generate(t, 64, n, gen_rng, leak=c.leak))
                   for i, t in enumerate(c.tasks) for n in (c.n_train[i], *c.n_test[i]))
    per: dict = {t: [] for t in c.tasks}
    n_params: dict = {}
    with torch_threads(1):
        for i, task in enumerate(c.tasks):
            for seed in seeds:
                torch.manual_seed(seed)
                net, base = make_models(task, c, i, seed)
                net, base = net.to(dev), (base.to(dev) if base is not None else None)
                n_params[task] = (net.n_params(), base.n_params() if base is not None else None)
                train(task, net, base, c, i, seed, dev, ctx.progress)
                r = evaluate_task(task, net, base, c, i, seed, dev)
                per[task].append(r)
                log.info("t39 %s seed %d: eqprop %s baseline %s r=%.3f", task, seed,
                         {n: round(a[0], 3) for n, a in r["eqprop"].items()},
                         {n: round(a[0], 3) for n, a in r["baseline"].items()}, r["settle"]["spearman_r"])
    metrics: dict = {"generator_check_failures": int(gen_fail), "wall_s": 0.0}
    table = []
    for i, task in enumerate(c.tasks):
        rs = per[task]
        for m in ("eqprop", "baseline"):
            if not rs[0][m]:
                continue
            for n in c.n_test[i]:
                acc_m, acc_h = mean_ci95([r[m][n][0] for r in rs])
                tok_m, _ = mean_ci95([r[m][n][1] for r in rs])
                metrics[f"{m}_{task}_acc_n{n}_mean"], metrics[f"{m}_{task}_acc_n{n}_ci95"] = acc_m, acc_h
                table.append({"task": task, "model": m, "n": n, "train_n": c.n_train[i], "acc_mean": acc_m,
                              "acc_ci95": acc_h, "token_acc_mean": tok_m})
            metrics[f"{m}_{task}_acc_train_len"] = metrics[f"{m}_{task}_acc_n{c.n_train[i]}_mean"] \
                if c.n_train[i] in c.n_test[i] else float("nan")
        # r is undefined (NaN) for a seed whose iteration counts (or difficulties) are all equal
        ok = [r["settle"] for r in rs if np.isfinite(r["settle"]["spearman_r"])]
        metrics[f"settle_{task}_spearman_r_mean"], metrics[f"settle_{task}_spearman_r_ci95"] = \
            mean_ci95([r["spearman_r"] for r in ok])
        metrics[f"settle_{task}_spearman_p_max"] = max((r["spearman_p"] for r in ok), default=float("nan"))
        metrics[f"settle_{task}_n_seeds_defined"] = len(ok)
        metrics[f"settle_{task}_per_seed"] = [{"spearman_r": r["settle"]["spearman_r"], "spearman_p": r["settle"]["spearman_p"],
                                               "mean_steps": r["settle"]["mean_steps"]} for r in rs]
        metrics[f"settle_{task}_mean_steps"] = float(np.mean([r["settle"]["mean_steps"] for r in rs]))
        metrics[f"settle_{task}_frac_capped"] = float(np.mean([r["settle"]["frac_capped"] for r in rs]))
        metrics[f"n_params_{task}"] = {"eqprop": n_params[task][0], "baseline": n_params[task][1]}
        goal, upto = PLAN_TARGETS[task]
        lens = [n for n in c.n_test[i] if upto is None or n <= upto]
        covered = upto is None or max(c.n_test[i]) >= upto
        metrics[f"target_{task}_met"] = float(covered and bool(lens) and all(
            metrics[f"eqprop_{task}_acc_n{n}_mean"] >= goal for n in lens))
        beats = c.baseline and all(metrics[f"eqprop_{task}_acc_n{n}_mean"] > metrics[f"baseline_{task}_acc_n{n}_mean"]
                                   for n in c.n_test[i])
        r_m = metrics[f"settle_{task}_spearman_r_mean"]
        metrics[f"plan_success_{task}"] = float(bool(r_m > 0) and len(ok) == len(rs)
                                                and metrics[f"settle_{task}_spearman_p_max"] < 0.01 and beats)
    metrics["plan_success"] = float(any(metrics[f"plan_success_{t}"] for t in c.tasks))
    metrics["accuracy_table"] = table
    metrics["wall_s"] = time.monotonic() - t0
    artifacts = [_plot(per, c, ctx)]
    notes = [f"variant: d={c.d_model}, {c.n_heads} heads, baseline {c.n_layers} layers (matched parameters), "
             f"{c.steps} steps x {c.batch}, lr {c.lr}, beta {c.beta}, sweeps {c.n_free_steps}/{c.n_nudge_steps} "
             f"(test {c.test_steps}), seeds {list(seeds)}, device {dev}" + ("; GENERATORS LEAK (broken path)" if c.leak else "")]
    for i, task in enumerate(c.tasks):
        goal, upto = PLAN_TARGETS[task]
        accs = ", ".join(f"N={n}: EqProp {metrics[f'eqprop_{task}_acc_n{n}_mean']:.3f}"
                         + (f" / BP {metrics[f'baseline_{task}_acc_n{n}_mean']:.3f}" if c.baseline else "")
                         for n in c.n_test[i])
        notes.append(f"{task} (train N={c.n_train[i]}): {accs}; plan target {goal:.0%}"
                     f"{'' if upto is None else f' up to N={upto}'}: "
                     f"{'met' if metrics[f'target_{task}_met'] else 'MISSED'}; iterations vs difficulty Spearman r="
                     f"{metrics[f'settle_{task}_spearman_r_mean']:.3f} (max p {metrics[f'settle_{task}_spearman_p_max']:.1e})")
    notes.append(f"plan success criterion (iterations correlate with difficulty AND EqProp beats the baseline on a task): "
                 f"{'met' if metrics['plan_success'] else 'MISSED'}")
    return TrackResult(metrics=metrics, artifacts=artifacts, notes=notes)


def _plot(per, c: Config, ctx: TrackContext) -> str:
    path = ctx.plots_dir / "t39_reasoning.png"
    k = len(c.tasks)
    with figure(path, nrows=2, ncols=k, figsize=(3.6 * k, 6.5)) as (fig, axes):
        for i, task in enumerate(c.tasks):
            ax = axes[0][i]
            for m, mk in (("eqprop", "o-"), ("baseline", "s--")):
                if not per[task][0][m]:
                    continue
                ns = list(c.n_test[i])
                mean = [np.mean([r[m][n][0] for r in per[task]]) for n in ns]
                ax.plot(ns, mean, mk, label=m)
            ax.axvline(c.n_train[i], color="grey", lw=0.8)
            ax.set_title(task, fontsize=9); ax.set_xlabel("problem size N"); ax.set_ylim(-0.02, 1.02)
            ax.set_ylabel("exact-match accuracy"); ax.legend(fontsize=7)
            st = per[task][0]["settle"]
            ax2 = axes[1][i]
            if np.all(np.isnan(st["_difficulty"])):
                for j in range(st["_p_true"].shape[0]):
                    ax2.plot(st["_p_true"][j], lw=1)
                ax2.set_xlabel("sweep"); ax2.set_ylabel("p(answer) along the free phase")
            else:
                ax2.scatter(st["_difficulty"], st["_steps"], s=6, alpha=0.4)
                ax2.set_xlabel("difficulty"); ax2.set_ylabel(f"sweeps to eps={c.eps:g}")
                ax2.set_title(f"r={st['spearman_r']:.2f}", fontsize=8)
                ins = ax2.inset_axes([0.55, 0.55, 0.42, 0.4])
                for j in range(st["_p_true"].shape[0]):
                    ins.plot(st["_p_true"][j], lw=0.8, label=f"d={st['_difficulty4'][j]:.0f}")
                ins.tick_params(labelsize=5); ins.legend(fontsize=4)
    return str(path.relative_to(ctx.out_dir))

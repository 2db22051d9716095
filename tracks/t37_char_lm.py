"""Track 37: a causal energy-based looped transformer trained by EqProp as a character-level LM.

Data: Tiny Shakespeare (:mod:`tracks.data.text`), 90/10 train/validation split by position, 65
characters. Model: :class:`~models.causal_transformer.CausalEnergyTransformer` with
``attention="causal"`` (one weight-tied block; every position relaxes its own energy with the past
held, so causality holds in the dynamics), trained by symmetric-nudging EqProp on random windows of
``ctx`` characters (next-character cross-entropy at every position). Baseline: a standard pre-LN
causal transformer (:class:`~models.causal_transformer.CausalTransformerLM`, 1 layer, width chosen
to match the parameter count) trained by backprop with Adam on the *same* windows, same steps,
batch and learning rate. Both are evaluated on the same ``n_val`` validation windows (every position,
so early positions see a short context for both).

Measured per seed: validation cross-entropy -> perplexity per character ``exp(CE)`` and bits per
character ``CE / ln 2``; mean and 95 % CI over seeds (:func:`tracks.harness.stats.mean_ci95`).

Also measured (seed 0's trained model, float64 copy):

* **causality**: ``n_causal`` validation windows whose characters from position ``ctx/2`` on are
  replaced by random ones; ``causal_max_logit_diff`` = the largest change of any logit at the
  positions before (0 when causal; the ``attention="leaky"`` variant -- causal mask, joint energy --
  changes them).
* **gradient**: EqProp estimates the *truncated* gradient (past states held fixed, see
  :mod:`models.causal_transformer`); on ``n_grad`` validation windows of ``grad_len`` characters,
  cosine of the EqProp estimate (``beta=1e-3``, long phases) with the truncated gradient by autograd
  (``grad_cos_truncated``: does the estimator compute what it claims) and with the full gradient by
  BP through the free phase (``grad_cos_full``).
* **Track 38 extension**: per validation position, sweeps to residual ``eps`` when that position
  relaxes from zero with its past held at the free equilibrium, vs the character's surprisal
  ``-log2 p`` under the model: Spearman and Pearson r with p-values (plan target r > 0.4, p < 0.01).
* generated text (temperature ``temperature``) of both models, in the notes.

Criteria (honest floors, all able to fail): EqProp learns (``unigram_bits - eqprop_val_bpc_mean >=
0.5``: the unigram entropy of the training text is ~4.8 bits); causality holds
(``causal_max_logit_diff <= 1e-6``); the estimator computes the truncated gradient
(``grad_cos_truncated >= 0.99``) and that is close to the full gradient (``grad_cos_full >= 0.9``).
Reported, not criteria: the plan's targets ``target_ppl_30_met`` (EqProp perplexity within 30 % of the
baseline's), ``target_ppl_20_met`` (stretch), ``target_settle_met`` (r > 0.4, p < 0.01).

Measured (``run_suite.py --track 37 --set steps=300``: d=64, ctx 64, 300 steps x 32 windows, 3 seeds,
2807 s wall on the shared 2-core machine at load ~20): EqProp (37,313 parameters) validation bpc
3.759 +- 0.167, perplexity 13.54 +- 1.58; backprop baseline (1 layer, d=48, 37,745 parameters) bpc
3.508 +- 0.013, perplexity 11.37 +- 0.10; ratio 1.19 (the 30 % target and the 20 % stretch are met *at
this budget*, where the baseline sits on its bigram plateau, ~3.5 bits, from step ~150 and EqProp is
still descending: not evidence of parity at convergence -- the same baseline trained 1500 steps reaches
bpc 2.863, perplexity 7.28, while the EqProp model (same recipe, seed 0) plateaus near the bigram level:
bpc 3.746 / 3.541 / 3.488 / 3.446 at 300 / 600 / 1000 / 1500 steps, perplexity 10.90 at 1500: ratio 1.50,
the 30 % target is MISSED at the FULL budget; both by a side script that calls this module's
``train_baseline`` / :func:`eqprop_grads` with ``FULL`` and ``steps=1500``); unigram entropy 4.774 bits; causal max logit
change 0.0; cosine of the EqProp estimate with the truncated gradient 1.0000, with the full BPTT
gradient 0.9942; settling vs surprisal Spearman r = -0.026 (p 0.24), Pearson 0.027 (p 0.22): the plan's
r > 0.4 target is missed (settling time does not track surprisal). Quick variant (1 seed, d=32, 150
steps): bpc 4.13 vs 3.74, ratio 1.31 (30 % target missed).

Variants: ``QUICK`` (CPU, < 60 s): 1 seed, d=32, ctx 32, 150 steps of 32 windows. ``FULL``: 3 seeds,
d=64, ctx 64, 1500 steps of 32 windows (the reduced CPU variant of the plan's model; honours
``--device``; scale with ``--set d_model=... --set steps=...``).
"""
from __future__ import annotations

import copy
import dataclasses
import logging
import math
import time

import numpy as np
import torch
import torch.nn.functional as F

from models.causal_transformer import (CausalConfig, CausalEnergyTransformer, CausalTransformerLM, bptt_grads,
                                       eqprop_grads, grad_cosine, match_baseline_width, truncated_bptt_grads)
from models.progress import progress

from .data.text import char_split, load_tiny_shakespeare, sample_windows, unigram_bits
from .harness.base import Criterion, TrackContext, TrackResult, TrackSpec
from .harness.plots import figure
from .harness.stats import mean_ci95
from .harness.threads import torch_threads

log = logging.getLogger("eqprop_hwsim.tracks.t37")

SPEC = TrackSpec(
    id=37, slug="char_lm", name="Causal energy transformer: char-level LM (EqProp vs backprop)",
    claim=("A causal energy-based looped transformer trained by EqProp learns Tiny Shakespeare (validation bpc >= 0.5 "
           "bit below the unigram entropy), its dynamics are causal (earlier logits unchanged by later tokens), and "
           "its EqProp estimate matches the truncated gradient it targets (cos >= 0.99) and the full BPTT gradient "
           "(cos >= 0.9); perplexity vs a matched backprop transformer and settling-time vs surprisal are reported "
           "against the plan's targets."),
    criteria=(Criterion("eqprop_bpc_below_unigram", ">=", 0.5), Criterion("causal_max_logit_diff", "<=", 1e-6),
              Criterion("grad_cos_truncated", ">=", 0.99), Criterion("grad_cos_full", ">=", 0.9)),
    est_seconds_full=2400.0, est_seconds_quick=55.0, est_seconds_cpu_full=135.0,
)


@dataclasses.dataclass(frozen=True)
class Config:
    """Settings of Track 37."""

    d_model: int = 64              # token width of the energy transformer
    n_heads: int = 4               # attention heads (both models)
    n_mem_ratio: int = 4           # Hopfield memories per width
    ctx: int = 64                  # training / validation window (characters)
    steps: int = 1500              # optimiser steps (both models)
    batch: int = 32                # windows per step
    lr: float = 3e-3               # Adam step size (both models)
    beta: float = 0.2              # EqProp nudging strength (symmetric)
    n_free_steps: int = 20         # free sweeps per step (and at evaluation)
    n_nudge_steps: int = 10        # sweeps of each nudged phase
    damping: float = 0.5           # damping of the sweeps
    n_val: int = 256               # validation windows
    n_seeds: int = 3               # seeds (first n of ctx.seeds)
    n_causal: int = 8              # windows of the causality check
    n_grad: int = 4                # windows of the gradient check
    grad_len: int = 16             # their length
    grad_steps: int = 150          # sweeps of the gradient check's phases
    eps: float = 1e-3              # settling residual (Track 38 extension)
    max_settle: int = 100          # sweep cap of the settling measurement
    n_settle: int = 32             # validation windows of the settling measurement
    n_sample: int = 200            # generated characters per model
    temperature: float = 0.8       # sampling temperature
    attention: str = "causal"      # "leaky": broken path (causal mask, joint energy: not causal)
    shuffle_targets: bool = False  # broken path: training targets permuted (nothing to learn but the unigram)
    baseline: bool = True          # train the backprop baseline

    def __post_init__(self) -> None:
        for k in ("d_model", "n_heads", "n_mem_ratio", "ctx", "steps", "batch", "n_free_steps", "n_nudge_steps",
                  "n_val", "n_seeds", "n_causal", "n_grad", "grad_len", "grad_steps", "max_settle", "n_settle"):
            if int(getattr(self, k)) < 1:
                raise ValueError(f"{k}={getattr(self, k)} is invalid; allowed: an int >= 1")
        if self.ctx < 2 or self.grad_len > self.ctx:
            raise ValueError(f"ctx={self.ctx} must be >= 2 and grad_len={self.grad_len} <= ctx")
        if not (self.beta > 0 and self.lr > 0 and self.eps > 0 and self.temperature > 0):
            raise ValueError("beta, lr, eps and temperature must be > 0")
        if self.attention not in ("causal", "leaky"):
            raise ValueError(f"attention={self.attention!r}; allowed: 'causal', 'leaky' (broken path)")


QUICK = Config(d_model=32, ctx=32, steps=150, n_val=64, n_seeds=1, n_settle=16, n_sample=120, grad_steps=100)
FULL = Config()
CPU_FULL = dataclasses.replace(QUICK, n_seeds=3, steps=300)
"""The CPU-reduced full variant ("full (CPU-reduced)"), what ``run_suite.py --all`` runs on ``--device cpu``
(FULL, d=64 / ctx 64 / 1500 steps, runs with ``--device cuda`` or ``--full-recipe``): the quick model (d=32,
ctx 32) trained 300 steps, 3 seeds; the criteria and bars are the track's own (unchanged). Measured 2026-11-30
(seeds 0 1 2, ``/usr/bin/time -v``: 134 s CPU time, 1027 s wall under load ~17): pass; EqProp 4.080 bits/char
vs backprop 3.598, 0.694 bits below the unigram entropy (bar 0.5), causal diff 0, gradient cosines 1.0000 /
0.9990. At 150 steps (1 seed's quick budget, 3 seeds) it failed that bar: 0.473 bits below (71 s CPU)."""


def make_model(c: Config, vocab: int, seed: int) -> CausalEnergyTransformer:
    return CausalEnergyTransformer(CausalConfig(vocab=vocab, n_ctx=c.ctx, d_model=c.d_model, n_heads=c.n_heads,
                                                n_mem_ratio=c.n_mem_ratio, attention=c.attention,
                                                damping=c.damping), seed=seed)


def make_baseline(c: Config, vocab: int, n_params: int, seed: int) -> CausalTransformerLM:
    d = match_baseline_width(n_params, c.n_heads, lambda d: CausalTransformerLM(vocab, c.ctx, d, c.n_heads))
    return CausalTransformerLM(vocab, c.ctx, d, c.n_heads, seed=seed)


def _batches(train_ids, c: Config, seed: int):
    rng = np.random.default_rng(seed)
    for _ in range(c.steps):
        x, y = sample_windows(train_ids, c.batch, c.ctx, rng)
        if c.shuffle_targets:
            y = rng.permutation(y.reshape(-1)).reshape(y.shape)
        yield torch.as_tensor(x), torch.as_tensor(y)


def train_eqprop(net, train_ids, c: Config, seed: int, dev, show: bool) -> list[float]:
    opt = torch.optim.Adam(net.parameters(), lr=c.lr)
    params = dict(net.named_parameters())
    losses = []
    for x, y in progress(_batches(train_ids, c, seed), total=c.steps, desc=f"t37 eqprop seed {seed}", enabled=show):
        x, y = x.to(dev), y.to(dev)
        g, s = eqprop_grads(net, x, y, beta=c.beta, n_free_steps=c.n_free_steps, n_nudge_steps=c.n_nudge_steps,
                            return_state=True)
        opt.zero_grad(set_to_none=True)
        for k, p in params.items():
            if k in g:
                p.grad = g[k]
        opt.step()
        with torch.no_grad():
            losses.append(float(net.cost(s, y).mean()) / c.ctx)
    return losses


def train_baseline(net, train_ids, c: Config, seed: int, dev, show: bool) -> list[float]:
    opt = torch.optim.Adam(net.parameters(), lr=c.lr)
    losses = []
    for x, y in progress(_batches(train_ids, c, seed), total=c.steps, desc=f"t37 backprop seed {seed}", enabled=show):
        x, y = x.to(dev), y.to(dev)
        z = net(x)
        loss = F.cross_entropy(z.reshape(-1, z.shape[-1]), y.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    return losses


def val_windows(val_ids, c: Config, n: int, seed: int = 12345):
    x, y = sample_windows(val_ids, n, c.ctx, np.random.default_rng(seed))
    return torch.as_tensor(x), torch.as_tensor(y)


@torch.no_grad()
def energy_logits(net, x, c: Config, chunk: int = 64) -> torch.Tensor:
    out = []
    for i in range(0, x.shape[0], chunk):
        s, _ = net.free_phase(x[i:i + chunk], c.n_free_steps)
        out.append(net.logits(s))
    return torch.cat(out)


def ce_of(z: torch.Tensor, y: torch.Tensor) -> float:
    return float(F.cross_entropy(z.reshape(-1, z.shape[-1]).double(), y.reshape(-1)))


def causality_check(net, x_val, c: Config, seed: int = 0) -> float:
    """Largest change of a logit before position ``k = ctx // 2`` when the characters from ``k`` on are
    replaced (float64 copy, ``n_free_steps`` sweeps as in evaluation)."""
    net = copy.deepcopy(net).double().cpu()
    x = x_val[: c.n_causal].cpu()
    k = c.ctx // 2
    g = torch.Generator().manual_seed(seed)
    x2 = x.clone()
    x2[:, k:] = (x2[:, k:] + torch.randint(1, net.config.vocab, x2[:, k:].shape, generator=g)) % net.config.vocab
    with torch.no_grad():
        z1 = net.logits(net.free_phase(x, c.n_free_steps)[0])[:, :k]
        z2 = net.logits(net.free_phase(x2, c.n_free_steps)[0])[:, :k]
    return float((z1 - z2).abs().max())


def gradient_check(net, val_ids, c: Config) -> dict:
    """Cosines of the EqProp estimate with the truncated and the full gradient (float64, small windows)."""
    net = copy.deepcopy(net).double().cpu()
    x, y = sample_windows(val_ids, c.n_grad, c.grad_len, np.random.default_rng(777))
    x, y = torch.as_tensor(x), torch.as_tensor(y)
    ge = eqprop_grads(net, x, y, beta=1e-3, n_free_steps=c.grad_steps, n_nudge_steps=c.grad_steps)
    gt = truncated_bptt_grads(net, x, y, n_steps=c.grad_steps)
    gf = bptt_grads(net, x, y, n_steps=c.grad_steps)
    _, res = net.free_phase(x, c.grad_steps)
    return {"grad_cos_truncated": grad_cosine(ge, gt), "grad_cos_full": grad_cosine(ge, gf),
            "grad_cos_truncated_vs_full": grad_cosine(gt, gf), "grad_free_residual": res}


def settling_vs_surprisal(net, x_val, y_val, c: Config) -> dict:
    from scipy.stats import pearsonr, spearmanr

    if net.config.attention != "causal":  # no per-token relaxation with the past held: not measured
        nan = float("nan")
        return {"settle_spearman_r": nan, "settle_spearman_p": nan, "settle_pearson_r": nan, "settle_pearson_p": nan,
                "settle_mean_steps": nan, "settle_frac_capped": nan, "_steps": np.zeros(0), "_surprisal": np.zeros(0)}
    x, y = x_val[: c.n_settle], y_val[: c.n_settle]
    with torch.no_grad():
        s_free, _ = net.free_phase(x, c.max_settle)
        steps = net.settling_steps(x, s_free, eps=c.eps, max_steps=c.max_settle)
        logp = torch.log_softmax(net.logits(s_free), dim=-1).gather(-1, y[..., None])[..., 0]
    st = steps.flatten().double().cpu().numpy()
    sur = (-logp / math.log(2)).flatten().double().cpu().numpy()
    rs, ps = spearmanr(st, sur)
    rp, pp = pearsonr(st, sur)
    return {"settle_spearman_r": float(rs), "settle_spearman_p": float(ps), "settle_pearson_r": float(rp),
            "settle_pearson_p": float(pp), "settle_mean_steps": float(st.mean()),
            "settle_frac_capped": float((st >= c.max_settle).mean()), "_steps": st, "_surprisal": sur}


@torch.no_grad()
def generate(step_logits, prompt_ids, n: int, ctx: int, temperature: float, seed: int) -> list[int]:
    """Sample ``n`` characters after ``prompt_ids``; ``step_logits(x (1, L)) -> (1, L, V)`` on the last
    ``ctx`` characters."""
    g = torch.Generator().manual_seed(seed)
    ids = list(prompt_ids)
    for _ in range(n):
        x = torch.as_tensor(ids[-ctx:])[None]
        z = step_logits(x)[0, -1].double().cpu() / temperature
        ids.append(int(torch.multinomial(torch.softmax(z, -1), 1, generator=g)))
    return ids[len(prompt_ids):]


def run(ctx: TrackContext) -> TrackResult:
    c = ctx.settings(QUICK, FULL, cpu=CPU_FULL)
    dev = ctx.torch_device
    seeds = tuple(ctx.seeds[: c.n_seeds])
    text = load_tiny_shakespeare(ctx.data_dir)
    train_ids, val_ids, vocab = char_split(text, 0.1)
    h_uni = unigram_bits(train_ids, vocab.size)
    x_val, y_val = val_windows(val_ids, c, c.n_val)
    per: dict[str, list[dict]] = {"eqprop": [], "baseline": []}
    first = None
    t0 = time.monotonic()
    with torch_threads(1):
        for seed in seeds:
            torch.manual_seed(seed)
            net = make_model(c, vocab.size, seed).to(dev)
            tl = train_eqprop(net, train_ids, c, seed, dev, ctx.progress)
            ce = ce_of(energy_logits(net, x_val.to(dev), c), y_val.to(dev))
            per["eqprop"].append({"seed": seed, "val_ce": ce, "val_bpc": ce / math.log(2), "val_ppl": math.exp(ce),
                                  "train_ce_last": float(np.mean(tl[-20:])), "n_params": net.n_params(),
                                  "_curve": tl})
            log.info("t37 eqprop seed %d: val bpc %.3f ppl %.2f", seed, ce / math.log(2), math.exp(ce))
            base = None
            if c.baseline:
                base = make_baseline(c, vocab.size, net.n_params(), seed).to(dev)
                bl = train_baseline(base, train_ids, c, seed, dev, ctx.progress)
                with torch.no_grad():
                    ceb = ce_of(base(x_val.to(dev)), y_val.to(dev))
                per["baseline"].append({"seed": seed, "val_ce": ceb, "val_bpc": ceb / math.log(2),
                                        "val_ppl": math.exp(ceb), "train_ce_last": float(np.mean(bl[-20:])),
                                        "n_params": base.n_params(), "d_model": base.d_model, "_curve": bl})
                log.info("t37 backprop seed %d: val bpc %.3f ppl %.2f", seed, ceb / math.log(2), math.exp(ceb))
            if first is None:
                first = (net, base)
    net, base = first
    net_cpu = copy.deepcopy(net).cpu()
    metrics: dict = {"unigram_bits": h_uni, "vocab": vocab.size, "n_train_chars": int(len(train_ids)),
                     "n_val_chars": int(len(val_ids)), "eqprop_n_params": per["eqprop"][0]["n_params"]}
    for m, rs in per.items():
        if not rs:
            continue
        for k in ("val_bpc", "val_ppl", "train_ce_last"):
            metrics[f"{m}_{k}_mean"], metrics[f"{m}_{k}_ci95"] = mean_ci95([r[k] for r in rs])
        metrics[f"{m}_per_seed"] = [{k: v for k, v in r.items() if not k.startswith("_")} for r in rs]
    metrics["eqprop_bpc_below_unigram"] = h_uni - metrics["eqprop_val_bpc_mean"]
    if per["baseline"]:
        metrics["baseline_n_params"] = per["baseline"][0]["n_params"]
        ratio = metrics["eqprop_val_ppl_mean"] / metrics["baseline_val_ppl_mean"]
        metrics["ppl_ratio_eqprop_over_baseline"] = ratio
        metrics["target_ppl_30_met"] = float(ratio <= 1.3)
        metrics["target_ppl_20_met"] = float(ratio <= 1.2)
    metrics["causal_max_logit_diff"] = causality_check(net_cpu, x_val, c)
    metrics.update(gradient_check(net_cpu, val_ids, c))
    st = settling_vs_surprisal(net_cpu, x_val, y_val, c)
    metrics.update({k: v for k, v in st.items() if not k.startswith("_")})
    metrics["target_settle_met"] = float(bool(st["settle_pearson_r"] > 0.4) and st["settle_pearson_p"] < 0.01
                                         and st["settle_spearman_r"] > 0.4 and st["settle_spearman_p"] < 0.01)
    prompt = vocab.encode("ROMEO:\n")
    samples = {"eqprop": vocab.decode(generate(lambda x: net_cpu.logits(net_cpu.free_phase(x, c.n_free_steps)[0]),
                                               prompt, c.n_sample, c.ctx, c.temperature, 0))}
    if base is not None:
        base_cpu = copy.deepcopy(base).cpu()
        samples["baseline"] = vocab.decode(generate(base_cpu, prompt, c.n_sample, c.ctx, c.temperature, 0))
    metrics["samples"] = samples
    metrics["wall_s"] = time.monotonic() - t0
    artifacts = [_plot(per, st, c, ctx)]
    notes = [f"variant: d={c.d_model}, {c.n_heads} heads, ctx {c.ctx}, {c.steps} steps x {c.batch} windows, lr {c.lr}, "
             f"beta {c.beta}, {c.n_free_steps}/{c.n_nudge_steps} free/nudge sweeps, damping {c.damping}; "
             f"seeds {list(seeds)}; device {dev}; attention={c.attention}"
             + ("; TRAINING TARGETS SHUFFLED (broken path)" if c.shuffle_targets else ""),
             f"EqProp estimates the truncated gradient (past states held fixed); cos with it "
             f"{metrics['grad_cos_truncated']:.4f}, with the full BPTT gradient {metrics['grad_cos_full']:.4f}"]
    if per["baseline"]:
        notes.append(f"plan target ppl within 30 % of the baseline: {'met' if metrics['target_ppl_30_met'] else 'MISSED'}"
                     f" (ratio {metrics['ppl_ratio_eqprop_over_baseline']:.3f}); 20 % stretch: "
                     f"{'met' if metrics['target_ppl_20_met'] else 'MISSED'}")
    notes.append(f"plan target settling vs surprisal r > 0.4, p < 0.01: {'met' if metrics['target_settle_met'] else 'MISSED'}"
                 f" (Spearman {st['settle_spearman_r']:.3f}, p {st['settle_spearman_p']:.1e}; Pearson "
                 f"{st['settle_pearson_r']:.3f}, p {st['settle_pearson_p']:.1e})")
    for m, txt in samples.items():
        notes.append(f"sample ({m}, prompt 'ROMEO:\\n', T={c.temperature}): {txt!r}")
    return TrackResult(metrics=metrics, artifacts=artifacts, notes=notes)


def _plot(per, st, c: Config, ctx: TrackContext) -> str:
    path = ctx.plots_dir / "t37_char_lm.png"
    with figure(path, ncols=2, figsize=(11, 3.8)) as (fig, axes):
        for m, ls in (("eqprop", "-"), ("baseline", "--")):
            for r in per[m]:
                cur = np.asarray(r["_curve"]) / math.log(2)
                k = max(1, len(cur) // 50)
                sm = np.convolve(cur, np.ones(k) / k, mode="valid")
                axes[0][0].plot(sm, ls, label=f"{m} seed {r['seed']} (val {r['val_bpc']:.2f})")
        axes[0][0].set_xlabel("step"); axes[0][0].set_ylabel("train bits/char"); axes[0][0].legend(fontsize=7)
        axes[0][1].scatter(st["_surprisal"], st["_steps"], s=4, alpha=0.4)
        axes[0][1].set_xlabel("surprisal (bits)"); axes[0][1].set_ylabel(f"sweeps to eps={c.eps:g}")
        axes[0][1].set_title(f"settling vs surprisal: Spearman r={st['settle_spearman_r']:.2f}", fontsize=9)
    return str(path.relative_to(ctx.out_dir))

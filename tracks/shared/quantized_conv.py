"""The conv part (``conv_`` metrics, issue 12) of the quantised-EqProp tracks 4 / 16 / 19.

Network: :func:`tracks.shared.conv_small.small_conv_config` (3x3 kernels, 2x2 max pools, channels
``conv_channels``; quick ``1-4-8``, full ``1-8-16``) on **Fashion-MNIST 14x14 (2x2 average pool)**,
the training subset drawn per seed from the 60k training images, tested on the first ``conv_n_test``
of the 10k test images. Per seed (the first ``conv_seeds`` seeds of the run):

1. **float**: float EqProp (``conv_optimizer`` at ``conv_lr``, plain SGD by default: Adam at 3e-3, the
   recipe of :mod:`tracks.shared.conv_small`, left this net at chance on Fashion-MNIST 14x14 for 1500
   images x 3 epochs; beta 0.2, symmetric nudging, T1 15, T2 5, batch 50) for ``conv_epochs`` epochs (model ``E``), then
   ``conv_ft_epochs`` epochs of float EqProp with plain SGD at ``conv_ft_lr`` (model ``F``):
   ``conv_acc_float``.
2. **PTQ**: ``F`` quantised under the preset (per-channel) in the integer simulator: ``conv_acc_ptq``.
3. **on chip**: ``E`` quantised per tensor (:func:`hwsim.onchip.onchip_spec`) and fine-tuned
   ``conv_ft_epochs`` epochs by integer EqProp in the simulator (:func:`hwsim.onchip.train_onchip`,
   the same SGD rate realised as multiplier/shift, same beta / nudging / T1 / T2 / batch):
   ``conv_acc_onchip``; ``conv_onchip_gap_pt = 100 (conv_acc_float - conv_acc_onchip)`` (float and
   on chip had the same ``conv_epochs + conv_ft_epochs`` epochs of the same data, in the same order of
   recipes). The issue targets (INT8 0.3, INT4 1, ternary 1.5 pt) are reported as
   ``conv_target_met`` (1/0), not a pass criterion (see the track notes for the measured figures).
   ``conv_update_cosine_min``: per layer, cosine of the integer conv/dense update (dequantised) and the
   float EqProp step on the same weights and batch (:func:`hwsim.onchip.update_cosine`), minimum over
   layers, at the start and the end of the on-chip fine-tuning.

Integer-path checks (pass criteria):

* ``conv_bitexact_mismatches``: numba integer conv, transposed conv and max-pool routing against the
  torch int64 mirror (:mod:`hwsim.torch_mirror`, unfold + int64 matmul, its own first-max pooling) on
  ``conv_n_bitexact`` test images: free phase and both nudged phases of the PTQ and the on-chip model
  (every state code and overflow count), test predictions of the on-chip model, and two on-chip
  training steps (states, hidden registers, weight codes) replayed with both backends.
  **Tie rule** of the max-pool routing: the first maximum of a window in row-major order (as
  ``torch.max_pool2d``); an all-zero window routes to its top-left position.
* ``conv_narrow_acc_*``: :func:`tracks.shared.quantized_checks.narrow_acc_check` on ``F`` with a
  ``narrow_acc_bits`` saturating accumulator (numba == torch, overflow happened, the first sweep equals
  the saturating reference).
* ``conv_weight_code_violations``: :func:`tracks.shared.quantized_checks.weight_code_violations` of the
  PTQ and the on-chip starting codes; ``conv_code_range_violations``: final on-chip codes outside
  ``[qmin, qmax]`` or hidden registers outside ``hidden_bits``.

Measured (full-variant conv settings, seeds 0 and 1, each seed run alone on the 2-core CPU shared with
other jobs at load 10-25: ``python -m tracks.shared.quantized_conv --seeds 0`` and ``--seeds 1``; the same
code path as the tracks): 1-8-16 on 6000 Fashion-MNIST 14x14 training images, float EqProp SGD 0.2 x 3
epochs then SGD 0.05 x 1 epoch (float and on chip alike), 2000 test images. Per seed (0 / 1):

========  ==============  ==============  ===============  ==============  =========================
preset    float %         PTQ %           on chip %        gap pt          issue target
========  ==============  ==============  ===============  ==============  =========================
int8      75.55 / 75.90   75.65 / 76.00   75.15 / 75.20    0.40 / 0.70     0.3: missed (mean 0.55)
int4      75.55 / 75.90   74.95 / 75.60   74.30 / 74.75    1.25 / 1.15     1.0: missed (mean 1.20)
ternary   75.55 / 75.90   53.05 / 55.05   70.45 / 69.50    5.10 / 6.40     1.5: missed (mean 5.75)
========  ==============  ==============  ===============  ==============  =========================

One test image is 0.05 pt; two seeds give no useful CI. The float baseline is weak (a 1-8-16 net at 14x14
after 4 epochs on 6000 images), where quantisation usually costs least. Bit-exact mismatches 0, weight-code
violations 0, update cosines 0.79-0.99, the narrow accumulators saturated (779-10275 accumulators of the
first sweep) in all six runs.
"""
from __future__ import annotations

import copy
import time

import numpy as np
import torch

from hwsim import onchip
from hwsim.fixed_point import FixedPointMLP
from hwsim.torch_mirror import torch_predict, torch_relax
from models.conv import ConvEqProp
from models.train import TrainConfig, train
from quant import get_preset

from ..data import load_dataset
from .conv_small import downsample, small_conv_config
from .quantized_checks import narrow_acc_check, onchip_steps_mismatches, weight_code_violations

DATA_VARIANT = "Fashion-MNIST 14x14 (2x2 average pool)"
BETA, T1, T2, BATCH = 0.2, 15, 5, 50


def _acc_fp(fp: FixedPointMLP, x, y) -> float:
    return float(np.mean(fp.predict(x.astype(np.float64), n_steps=T1, batch_size=500) == y))


def _acc_float(net, x, y) -> float:
    with torch.no_grad():
        return float((net.predict(torch.from_numpy(x), n_steps=T1) == torch.from_numpy(y)).float().mean())


def relax_mismatches(fp: FixedPointMLP, x: np.ndarray, y: np.ndarray, *, seed: int = 0) -> int:
    """Free phase, then +beta and -beta from the free codes: numba vs torch mirror, differing state
    codes plus differing overflow counts."""
    xc = fp.quantize_input(x.astype(np.float64))
    diff, s_free = 0, None
    for b in (0.0, BETA, -BETA):
        s0 = None if b == 0.0 else s_free
        kw = dict(beta=b, y=y.astype(np.int64), n_steps=T1 if b == 0.0 else T2, seed=seed)
        s_n, i_n = fp.relax(xc, s0, **kw)
        s_t, i_t = torch_relax(fp, torch.from_numpy(xc), None if s0 is None else [torch.from_numpy(a) for a in s0], **kw)
        diff += sum(int(np.sum(a != bb.numpy())) for a, bb in zip(s_n, s_t))
        diff += int(np.sum(np.asarray(i_n.n_overflow) != np.asarray(i_t.n_overflow)))
        s_free = s_n if b == 0.0 else s_free
    return diff


def step_replay_mismatches(fp0: FixedPointMLP, x: np.ndarray, y: np.ndarray, *, lr: float, seed: int) -> int:
    """Two chained on-chip steps, numba vs torch: differing phase codes, hidden registers, weight codes."""
    specs = onchip.layer_specs_for_lr(fp0, lr, batch_size=len(x), beta_span=2 * BETA)
    return onchip_steps_mismatches(onchip.OnChipState.from_fixed_point(fp0, specs),
                                   fp0.quantize_input(x.astype(np.float64)), y.astype(np.int64),
                                   beta=BETA, n_free_steps=T1, n_nudge_steps=T2, seed=seed)


def train_float(net: ConvEqProp, x, y, *, epochs: int, optimizer: str, lr: float, seed: int, progress: bool) -> None:
    tcfg = TrainConfig(method="eqprop", epochs=epochs, batch_size=BATCH, optimizer=optimizer, lr=lr, momentum=0.0,
                       beta=BETA, nudging="symmetric", n_free_steps=T1, n_nudge_steps=T2, seed=seed)
    train(net, torch.from_numpy(x), torch.from_numpy(y), tcfg, progress=progress)


_FLOAT_CACHE: dict = {}
"""(recipe fields, seed) -> trained float nets (E, F): Tracks 4, 16 and 19 run in one process share them."""


def float_nets(cfg, seed: int, x_tr, y_tr, progress: bool) -> tuple[ConvEqProp, ConvEqProp]:
    """Models ``E`` (float EqProp, ``conv_optimizer`` at ``conv_lr``, ``conv_epochs``) and ``F`` (``E`` plus
    ``conv_ft_epochs`` of float EqProp with plain SGD at ``conv_ft_lr``); copies from an in-process cache."""
    key = (tuple(cfg.conv_channels), cfg.conv_n_train, cfg.conv_epochs, cfg.conv_ft_epochs, cfg.conv_optimizer,
           cfg.conv_lr, cfg.conv_ft_lr, int(seed), hash(x_tr.tobytes()), hash(y_tr.tobytes()))
    if key not in _FLOAT_CACHE:
        net_e = ConvEqProp(small_conv_config(cfg.conv_channels), seed=seed)
        train_float(net_e, x_tr, y_tr, epochs=cfg.conv_epochs, optimizer=cfg.conv_optimizer, lr=cfg.conv_lr,
                    seed=seed, progress=progress)
        net_f = copy.deepcopy(net_e)
        train_float(net_f, x_tr, y_tr, epochs=cfg.conv_ft_epochs, optimizer="sgd", lr=cfg.conv_ft_lr,
                    seed=seed + 1, progress=progress)
        _FLOAT_CACHE.clear()  # one recipe at a time: bounded memory
        _FLOAT_CACHE[key] = (net_e, net_f)
    return tuple(copy.deepcopy(n) for n in _FLOAT_CACHE[key])


def conv_seed(preset: str, cfg, seed: int, data, progress: bool, narrow_bits: int) -> dict:
    """One seed of the conv part (module docstring); ``data = (x_tr, y_tr, x_te, y_te)`` at 14x14."""
    x_tr, y_tr, x_te, y_te = data
    spec = get_preset(preset)
    out: dict = {"seed": seed}
    t0 = time.time()
    net_e, net_f = float_nets(cfg, seed, x_tr, y_tr, progress)
    out["acc_float_pretrain"] = _acc_float(net_e, x_te, y_te)
    out["acc_float"] = _acc_float(net_f, x_te, y_te)
    if cfg.bypass_quantizer:  # the failure test: no integer path at all
        out.update(acc_ptq=out["acc_float"], acc_onchip=out["acc_float"], bitexact_mismatches=float("nan"),
                   weight_code_violations=float("nan"), code_range_violations=float("nan"),
                   update_cosine=[1.0], update_cosine_start=[1.0], seconds=time.time() - t0,
                   **{f"narrow_acc_{k}": float("nan") for k in ("mismatches", "overflows", "ref_mismatches",
                                                                  "ref_saturated", "wrap_would_differ")})
        return out
    fp_ptq = FixedPointMLP.from_model(net_f, spec)
    out["acc_ptq"] = _acc_fp(fp_ptq, x_te, y_te)
    fp0 = FixedPointMLP.from_model(net_e, onchip.onchip_spec(spec))
    out["acc_ptq_per_tensor_start"] = _acc_fp(fp0, x_te, y_te)
    out["weight_code_violations"] = weight_code_violations(net_f, fp_ptq) + weight_code_violations(net_e, fp0)

    xb, yb = x_tr[:BATCH].astype(np.float64), y_tr[:BATCH]
    specs = onchip.layer_specs_for_lr(fp0, cfg.conv_ft_lr, batch_size=BATCH, beta_span=2 * BETA)
    kw = dict(beta=BETA, n_free_steps=T1, n_nudge_steps=T2, seed=seed)
    cos0 = onchip.update_cosine(onchip.OnChipState.from_fixed_point(fp0, specs), xb, yb, **kw)
    hist = onchip.train_onchip(fp0, x_tr, y_tr, epochs=cfg.conv_ft_epochs, batch_size=BATCH, beta=BETA,
                               lr=cfg.conv_ft_lr, n_free_steps=T1, n_nudge_steps=T2, seed=seed + 2, progress=progress)
    fp_on = hist["model"]
    out["acc_onchip"] = _acc_fp(fp_on, x_te, y_te)
    cos1 = onchip.update_cosine(hist["state"], xb, yb, step=hist["n_updates"], **kw)
    out["update_cosine_start"], out["update_cosine"] = cos0["weight"], cos1["weight"]

    wf, hb = spec.weights, spec.update.hidden_bits
    viol = sum(int(np.sum((w < wf.qmin) | (w > wf.qmax))) for w in fp_on.w_codes + fp_on.fb_codes)
    viol += sum(int(np.sum((h < -(2 ** (hb - 1))) | (h > 2 ** (hb - 1) - 1))) for h in hist["state"].hidden)
    out["code_range_violations"] = viol

    n = cfg.conv_n_bitexact
    xe, ye = x_te[:n], y_te[:n]
    mism = relax_mismatches(fp_ptq, xe, ye, seed=seed) + relax_mismatches(fp_on, xe, ye, seed=seed)
    pred_t = torch_predict(fp_on, torch.from_numpy(xe.astype(np.float64)), n_steps=T1).numpy()
    mism += int(np.sum(pred_t != fp_on.predict(xe.astype(np.float64), n_steps=T1)))
    mism += step_replay_mismatches(fp0, x_tr[:20], y_tr[:20], lr=cfg.conv_ft_lr, seed=seed)
    out["bitexact_mismatches"] = mism
    nar = narrow_acc_check(net_f, spec, narrow_bits, xe, ye, n_steps=T1, beta=BETA, seed=seed)
    out.update({f"narrow_acc_{k}": v for k, v in nar.items()})
    out["seconds"] = time.time() - t0
    return out


def load_conv_data(data_dir, n_train: int, n_test: int, seed: int):
    """Fashion-MNIST 14x14: a seeded training subset and the first ``n_test`` test images."""
    x, y = load_dataset("fashion_mnist", "train", data_dir)
    xt, yt = load_dataset("fashion_mnist", "test", data_dir)
    idx = np.random.default_rng(seed).choice(len(x), size=n_train, replace=False)
    return downsample(x[idx]), y[idx], downsample(xt[:n_test]), yt[:n_test]


def plot_conv(rows, preset: str, track_id: int, ctx) -> str:
    """Bar chart of the conv paths' test accuracy (mean over seeds, seeds as dots); path relative to out_dir."""
    from ..harness.plots import figure

    keys = [k for k in ("acc_float", "acc_ptq", "acc_ptq_per_tensor_start", "acc_onchip") if k in rows[0]]
    path = ctx.plots_dir / f"t{track_id:02d}_{preset}_conv_accuracy.png"
    with figure(path, figsize=(7, 4), dpi=110) as (fig, _axes):
        ax = _axes[0][0]
        ax.bar(range(len(keys)), [100 * np.mean([r[k] for r in rows]) for k in keys], color="tab:green")
        for i, k in enumerate(keys):
            ax.plot([i] * len(rows), [100 * r[k] for r in rows], "k.", ms=4)
        ax.set_xticks(range(len(keys)), [k.replace("acc_", "").replace("_per_tensor_start", " (on-chip start)")
                                         for k in keys])
        ax.set_ylabel("test accuracy (%)")
        ax.set_title(f"Track {track_id} ({preset}): conv net, {DATA_VARIANT}")
    return str(path.relative_to(ctx.out_dir))


def conv_section(ctx, preset: str, cfg, seeds, narrow_bits: int, target_gap_pt: float) -> tuple[dict, list[str], list]:
    """Run :func:`conv_seed` for ``seeds``; returns ``(conv_ metrics, notes, per-seed rows)``."""
    from ..harness.stats import mean_ci95

    rows = []
    for seed in seeds:
        data = load_conv_data(ctx.data_dir, cfg.conv_n_train, cfg.conv_n_test, seed)
        rows.append(conv_seed(preset, cfg, int(seed), data, ctx.progress, narrow_bits))
    for r in rows:
        r["onchip_gap_pt"] = 100.0 * (r["acc_float"] - r["acc_onchip"])
        r["update_cosine_min"] = float(min(r["update_cosine"] + r["update_cosine_start"]))
    m: dict = {}
    for k in ("acc_float_pretrain", "acc_float", "acc_ptq", "acc_ptq_per_tensor_start", "acc_onchip",
              "onchip_gap_pt", "update_cosine_min"):
        vals = [r[k] for r in rows if k in r]
        if vals:
            mean, h = mean_ci95(vals)
            m[f"conv_{k}"] = mean
            if len(vals) >= 2:
                m[f"conv_{k}_ci95"] = h
    m["conv_ptq_gap_pt"] = 100.0 * (m["conv_acc_float"] - m["conv_acc_ptq"])
    for k in ("bitexact_mismatches", "weight_code_violations", "code_range_violations", "narrow_acc_mismatches",
              "narrow_acc_ref_mismatches"):
        m[f"conv_{k}"] = float(sum(r[k] for r in rows))
    for k in ("narrow_acc_overflows", "narrow_acc_ref_saturated", "narrow_acc_wrap_would_differ"):
        m[f"conv_{k}"] = float(min(r[k] for r in rows))  # every seed must overflow / saturate
    m["conv_narrow_acc_bits"] = int(narrow_bits)
    m["conv_target_gap_pt"] = target_gap_pt
    m["conv_target_met"] = int(m["conv_onchip_gap_pt"] <= target_gap_pt)
    m["conv_n_seeds"], m["conv_n_train"], m["conv_n_test"] = len(rows), cfg.conv_n_train, int(cfg.conv_n_test)
    m["conv_seconds"] = float(sum(r["seconds"] for r in rows))
    m["conv_per_seed"] = [{k: (v.item() if isinstance(v, np.generic) else v) for k, v in r.items()} for r in rows]
    ch = "-".join(map(str, cfg.conv_channels))
    notes = [f"conv: 1-{ch} (3x3, 2x2 max pools) on {DATA_VARIANT}, {cfg.conv_n_train} training images, "
             f"{cfg.conv_n_test} test images, seeds {list(seeds)}; float EqProp {cfg.conv_optimizer} {cfg.conv_lr} x {cfg.conv_epochs} "
             f"epoch(s), then float SGD vs on-chip integer EqProp at lr {cfg.conv_ft_lr} x {cfg.conv_ft_epochs} "
             f"epoch(s) (beta {BETA}, symmetric, T1 {T1}, T2 {T2}, batch {BATCH}).",
             f"conv on-chip gap {m['conv_onchip_gap_pt']:.2f} pt (float {100 * m['conv_acc_float']:.2f} %, on chip "
             f"{100 * m['conv_acc_onchip']:.2f} %); issue target <= {target_gap_pt} pt: "
             f"{'met' if m['conv_target_met'] else 'NOT met'} (reported, not a pass criterion).",
             "conv max-pool routing tie rule: first maximum of the window in row-major order (torch.max_pool2d); an "
             "all-zero window routes to its top-left position; numba and the torch mirror must agree bit for bit.",
             f"conv narrow accumulator: {narrow_bits} bits, saturating (numba == torch mirror == saturating reference)."]
    return m, notes, rows


def main(argv=None) -> int:
    """``python -m tracks.shared.quantized_conv [--quick] [--seeds 0 1] [--set k=v ...]``: the conv part of
    Tracks 4 / 16 / 19 alone, for the three presets in one process (the float nets are trained once per
    seed and shared), metrics printed as JSON lines. The full-variant conv figures come from this path."""
    import argparse
    import ast
    import json

    import torch

    from ..harness.base import TrackContext
    from ..harness.config import apply_overrides
    from .quantized import FULL, NARROW_ACC_BITS, QUICK, TARGET_GAP_PT

    ap = argparse.ArgumentParser(prog="python -m tracks.shared.quantized_conv", description=main.__doc__)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--presets", nargs="+", default=["int8", "int4", "ternary"], choices=list(TARGET_GAP_PT))
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--out", default="runs/quantized_conv")
    a = ap.parse_args(argv)
    over = {}
    for kv in a.set:
        k, _, v = kv.partition("=")
        try:
            over[k] = ast.literal_eval(v)
        except (ValueError, SyntaxError):
            over[k] = v
    cfg = apply_overrides(QUICK if a.quick else FULL, {**over, "conv_seeds": len(a.seeds)}, label="conv config")
    ctx = TrackContext(out_dir=a.out, quick=a.quick, seeds=tuple(a.seeds), progress=True)
    torch.set_num_threads(1)
    for p in a.presets:
        m, notes, _rows = conv_section(ctx, p, cfg, tuple(a.seeds), cfg.narrow_acc_bits or NARROW_ACC_BITS[p],
                                       TARGET_GAP_PT[p])
        print(json.dumps({"preset": p, **m}, default=float), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Track 41: ONNX export fidelity -- every exported graph runs in onnxruntime and matches its mirror.

A trained ``EqPropMLP`` (full: the headline model of :func:`tracks.shared.headline.headline_eqprop`,
784-512-10 trained by the Track 25 recipe ``mnist_784_512_10_eqprop`` on 55k images for 10 epochs; quick:
a small hidden layer trained by the recipe on a slice; both trained once per run through the run's model
cache ``ctx.model_cache``, a user ``checkpoint`` is never cached) is exported with :func:`exports.export_onnx` as

* ``float``  (fp32 spec) -- compared with torch float32 (``exports.verify.FLOAT_GRAPH_TOL``);
* ``qdq``    (int8, int4, ternary) -- compared with the torch fake-quant path, in output-state LSBs
  and argmax agreement (``exports.verify.QDQ_MAX_LSB``, ``QDQ_MIN_ARGMAX``);
* ``int``    (int8, int4, ternary) -- compared with ``hwsim.fixed_point.FixedPointMLP`` bit for bit,

each both unrolled (``T`` sweeps) and as an ONNX ``Loop``, on real MNIST test images (all 10 000
in full mode, a slice in quick mode). Every file is written under ``<out>/onnx/``.

Metrics (stable names):

* ``int_graph_mismatches``: state codes + predictions differing between onnxruntime and the
  simulator, summed over presets and both graph forms (NaN if an integer graph failed to run);
* ``qdq_argmax_agreement`` (min over presets/forms), ``qdq_max_out_lsb`` (max), both with
  onnxruntime's default session; ``qdq_argmax_agreement_no_qdq_rewrites``: the same with its QDQ
  rewrites off (``session.disable_quant_qdq``, see :mod:`exports.verify`), for information;
* ``float_max_abs_state_err``, ``float_graph_passed`` (1.0 when states are allclose and argmax equal);
* ``bytes_per_format``: ``{"float", "qdq_int8", ..., "int_ternary"}`` -> bytes of the ``Loop`` file;
  flat ``bytes_fp32`` (float), ``bytes_int8``/``bytes_int4``/``bytes_ternary`` (QDQ files, the
  standard ONNX form of each weight format) and ``bytes_int_graph_<preset>``;
* ``load_s_<key>_<form>`` / ``run_s_<key>_<form>``: onnxruntime session creation and total run time
  (``key`` as in ``bytes_per_format``, ``form`` ``unrolled`` or ``loop``); ``rows``: the full table;
* ``accuracy_<key>``: test accuracy of the ``Loop`` graph's predictions; ``acc_gap_pt_<key>``: the float
  graph's accuracy minus it, in points (full: gaps of the headline model on all 10k test images).

Stress specs (issue 14: the presets' accumulators never overflow on MNIST and their 31-bit
multipliers never meet a rounding tie, so neither the saturating ``Clip`` nor the tie rule of the
integer graph was exercised): the same MLP is exported under two derived int8 specs,

* ``int8_acc<narrow_acc_bits>`` -- a narrow accumulator (default 12 bits: it saturates on MNIST);
* ``int8_<tie_scale_rule>``     -- power-of-two weight scales (default): shift-only requantisation,
  where ``acc mod 2**shift == 2**(shift-1)`` (a tie) happens often,

both forms compared bit for bit with the simulator on ``stress_n_test`` test images
(``int_stress_mismatches``, criterion 0), and the unrolled graph instrumented
(:func:`exports.verify.int_arithmetic_check`): every accumulator overflow and requantisation it
computes is checked against :mod:`quant.ops` with the simulator's multipliers
(``int_stress_arith_mismatches``, criterion 0: an accumulator clipped one code off is usually
requantised to the same state, so the states alone cannot see it), and the events are counted:
``int_narrow_acc_saturations`` (criterion >= 1) and ``int_pow2_ties`` (criterion >= 1), so the
comparisons are known to have met the paths they guard.

Conv (issue 12): the small conv EqProp net of :mod:`tracks.shared.conv_small` (MNIST 14x14, 1-8-16 3x3,
trained by EqProp in seconds) through the same formats and forms -- ``conv_int_graph_mismatches``
(``ConvInteger`` / integer window pooling with the first-max ``ArgMax`` vs FixedPointMLP's integer
ConvPool, criterion 0), ``conv_qdq_argmax_agreement`` (>= 99.9 %) and ``conv_qdq_max_out_lsb`` (<= 1)
vs ``models.qat``'s fake-quant conv, ``conv_float_graph_passed``, ``conv_accuracy_<key>``;
``conv_export_seed`` exports the graphs of another (untrained) conv net (the broken path of the tests).

Settings: :class:`T41Config` (``QUICK`` / ``FULL``): ``checkpoint`` (path of a trained EqPropMLP to use
instead of training), ``hidden``, ``n_train``, ``epochs``, ``n_test``, ``n_steps`` (T),
``presets`` (integer presets), ``int_rounding`` (build the integer graphs with this rounding
instead of the spec's -- a deliberately broken export; the comparison must catch it).
ONNX graphs run in onnxruntime on the CPU; training follows ``--device``.
"""
from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path

import numpy as np
import onnx
import torch

from exports import verify as V
from exports.onnx_export import build_int_model, export_onnx
from hwsim.fixed_point import FixedPointMLP
from models.checkpoint import check_eqprop_checkpoint, load_checkpoint
from models.eqprop_mlp import EqPropConfig, EqPropMLP
from models.train import train
from quant import get_preset
from quant.formats import SCALE_RULES

from .harness.plots import figure
from .harness.base import Criterion, TrackContext, TrackResult, TrackSpec
from .data import load_dataset
from .shared.recipes import get_recipe

log = logging.getLogger("eqprop_hwsim.tracks.t41")

SPEC = TrackSpec(
    id=41,
    slug="onnx_fidelity",
    name="ONNX export fidelity (float, QDQ, integer-only) in onnxruntime",
    claim=("The integer-only ONNX graph reproduces the fixed-point simulator bit for bit on MNIST, the QDQ "
           "graphs agree with the torch fake-quant path on >= 99.9 % of predictions, and the float graph "
           "matches torch float32."),
    criteria=(
        Criterion("int_graph_mismatches", "==", 0),
        Criterion("qdq_argmax_agreement", ">=", V.QDQ_MIN_ARGMAX),
        Criterion("qdq_max_out_lsb", "<=", V.QDQ_MAX_LSB),
        Criterion("float_graph_passed", "==", 1.0),
        Criterion("int_stress_mismatches", "==", 0),
        Criterion("int_stress_arith_mismatches", "==", 0),
        Criterion("int_narrow_acc_saturations", ">=", 1),
        Criterion("int_pow2_ties", ">=", 1),
        Criterion("conv_int_graph_mismatches", "==", 0),
        Criterion("conv_qdq_argmax_agreement", ">=", V.QDQ_MIN_ARGMAX),
        Criterion("conv_qdq_max_out_lsb", "<=", 1.0),
        Criterion("conv_float_graph_passed", "==", 1.0),
    ),
    est_seconds_full=400.0,   # measured 808 s wall at load average 20 on 2 cores (user CPU ~4 min)
    est_seconds_quick=60.0,   # measured 173 s wall at load average 16 (55 s user CPU)
)

RECIPE = "mnist_784_512_10_eqprop"
PRESETS = ("int8", "int4", "ternary")
FORMS = ("unrolled", "loop")


@dataclasses.dataclass(frozen=True)
class T41Config:
    hidden: int = 512        # hidden width of the 784-hidden-10 net
    n_train: int = 10_000    # training images (recipe evidence: ~90 % after 2 epochs of 10k)
    epochs: int = 2
    n_test: int = 10_000     # test images compared (10 000 = the full MNIST test set)
    n_steps: int = 30        # T free sweeps (the recipe's n_free_steps)
    presets: tuple[str, ...] = PRESETS
    checkpoint: str | None = None     # trained EqPropMLP checkpoint to use instead of training
    int_rounding: str | None = None   # integer graphs built with this rounding (the broken path)
    conv: bool = True                 # also export the small conv EqProp net (conv_ metrics)
    conv_channels: tuple[int, ...] = (8, 16)
    conv_n_train: int = 3000          # training images of the conv net (MNIST 14x14)
    conv_epochs: int = 2
    conv_n_test: int = 10_000
    conv_export_seed: int | None = None   # export graphs of another (untrained) conv net: the broken path
    stress: bool = True               # narrow-accumulator and power-of-two-scale int8 specs (int_stress_ metrics)
    stress_n_test: int = 2000         # test images of the stress comparisons
    narrow_acc_bits: int = 12         # accumulator width of the narrow spec
    tie_scale_rule: str = "power_of_two"   # weight scale rule of the tie spec (max_abs: ties vanish)
    headline: bool = False            # issue 14: export the headline model of the seed (full; hidden/n_train/epochs unused)

    def __post_init__(self) -> None:
        for f in ("hidden", "n_train", "epochs", "n_steps"):
            if getattr(self, f) < 1:
                raise ValueError(f"{f}={getattr(self, f)} is invalid; allowed: an int >= 1")
        if not 1 <= self.n_test <= 10000 or self.n_train > 60000:
            raise ValueError(f"n_test={self.n_test}, n_train={self.n_train} are invalid; allowed: "
                             "n_test in [1, 10000], n_train in [1, 60000]")
        if self.checkpoint is not None:
            check_eqprop_checkpoint(self.checkpoint)
        if self.conv and (self.conv_n_train < 0 or self.conv_epochs < 0 or not 1 <= self.conv_n_test <= 10000
                          or not self.conv_channels or min(self.conv_channels) < 1):
            raise ValueError(f"conv_n_train={self.conv_n_train}, conv_epochs={self.conv_epochs}, conv_n_test="
                             f"{self.conv_n_test}, conv_channels={self.conv_channels}: need counts >= 0, n_test in "
                             "[1, 10000] and positive channels")
        if self.stress and (not 2 <= self.narrow_acc_bits <= 32 or not 1 <= self.stress_n_test <= 10000
                            or self.tie_scale_rule not in SCALE_RULES):
            raise ValueError(f"narrow_acc_bits={self.narrow_acc_bits}, stress_n_test={self.stress_n_test}, "
                             f"tie_scale_rule={self.tie_scale_rule!r}: allowed acc bits in [2, 32], n_test in "
                             f"[1, 10000], a scale rule in {list(SCALE_RULES)}")
        if not self.presets or any(p not in PRESETS for p in self.presets):
            raise ValueError(f"presets={list(self.presets)} is invalid; allowed: a non-empty subset of {list(PRESETS)}")


FULL = T41Config(headline=True)
QUICK = T41Config(hidden=64, n_train=6000, epochs=1, n_test=1000, n_steps=30, conv_n_train=1000, conv_epochs=1,
                  conv_n_test=300, stress_n_test=300)


def _config(ctx: TrackContext) -> T41Config:
    return ctx.settings(QUICK, FULL)


def _trained_net(ctx: TrackContext, cfg: T41Config, seed: int) -> tuple[EqPropMLP, str]:
    if cfg.checkpoint is not None:
        net, _ = load_checkpoint(cfg.checkpoint)
        if not isinstance(net, EqPropMLP):
            raise ValueError(f"checkpoint {cfg.checkpoint} holds a {type(net).__name__}; allowed: an EqPropMLP")
        return net, f"checkpoint {cfg.checkpoint}"
    if cfg.headline:
        from .shared.headline import headline_eqprop
        net, _data, info = headline_eqprop(ctx, "mnist", seed)
        return net.cpu(), info["description"]
    from .harness.model_cache import train_mlp_cached
    x, y = load_dataset("mnist", "train", ctx.data_dir)
    x, y = x[:cfg.n_train], y[:cfg.n_train]
    net = EqPropMLP(EqPropConfig(sizes=(784, cfg.hidden, 10)), seed=seed).to(ctx.torch_device)
    tcfg = get_recipe(RECIPE, epochs=cfg.epochs, seed=seed, n_free_steps=cfg.n_steps)
    # trained once per run: another track or a resumed run with the same key loads it (a user
    # checkpoint, above, is never cached)
    net = train_mlp_cached(ctx.model_cache, net, x, y, tcfg, dataset="mnist", seed=seed,
                           label=f"t41_mlp_h{cfg.hidden}_s{seed}", progress=ctx.progress, train=train)
    net = net.cpu()  # exports and onnxruntime comparisons run on the CPU
    return net, f"recipe {RECIPE}, {cfg.epochs} epoch(s) on {cfg.n_train} images, seed {seed}"


def _export(net, spec, fmt: str, form: str, T: int, path: Path, int_rounding: str | None):
    if fmt == "int" and int_rounding is not None:
        model = build_int_model(net, spec, T, form == "loop", rounding=int_rounding)
        path.parent.mkdir(parents=True, exist_ok=True)
        onnx.save(model, str(path))
        return path
    export_onnx(net, spec, path, fmt=fmt, n_steps=T, loop=form == "loop", overwrite=True)
    return path


def run(ctx: TrackContext) -> TrackResult:
    cfg = _config(ctx)
    seed = int(ctx.seeds[0]) if ctx.seeds else 0
    torch.manual_seed(seed)
    net, origin = _trained_net(ctx, cfg, seed)
    net = net.to(torch.float32).eval()
    xt, yt = load_dataset("mnist", "test", ctx.data_dir)
    xt, yt = xt[:cfg.n_test], yt[:cfg.n_test]
    out = Path(ctx.out_dir) / "onnx"
    int_rounding = cfg.int_rounding
    notes = [f"model {'-'.join(map(str, net.sizes))} from {origin}; T = {cfg.n_steps}; "
             f"{len(xt)} MNIST test images; onnxruntime CPU, default graph optimisations"]

    jobs = [("float", "fp32", "float")] + [(f"qdq_{p}", p, "qdq") for p in cfg.presets] + \
           [(f"int_{p}", p, "int") for p in cfg.presets]
    rows, metrics = [], {}
    int_mismatch, int_failed, qdq_agree, qdq_lsb, qdq_agree_plain = 0, False, [], [], []
    float_ok, float_err = True, 0.0
    for key, preset, fmt in jobs:
        spec = get_preset(preset)
        ref = _reference(net, spec, fmt, xt, cfg.n_steps)  # once per preset, shared by both forms
        for form in FORMS:
            path = out / f"{key}_{form}_T{cfg.n_steps}.onnx"
            row = {"format": key, "preset": preset, "form": form, "file": str(path.relative_to(ctx.out_dir))}
            try:
                _export(net, spec, fmt, form, cfg.n_steps, path, int_rounding)
                row["bytes"] = V.file_bytes(path)
                if fmt == "float":
                    r = V.verify_float(net, path, xt, reference=ref)
                    float_ok &= r["passed"]
                    float_err = max(float_err, r["max_abs_state_err"])
                elif fmt == "qdq":
                    r = V.verify_qdq(net, path, xt, reference=ref)
                    qdq_agree.append(r["argmax_agreement"])
                    qdq_lsb.append(r["max_out_lsb"])
                    r2 = V.verify_qdq(net, path, xt, reference=ref, optimization="all_no_qdq")
                    row["argmax_agreement_no_qdq_rewrites"] = r2["argmax_agreement"]
                    row["frac_out_codes_differing_no_qdq_rewrites"] = r2["frac_out_codes_differing"]
                    qdq_agree_plain.append(r2["argmax_agreement"])
                else:
                    r = V.verify_int(ref[3], path, ref[4], reference=ref[:3])
                    int_mismatch += r["int_graph_mismatches"]
                row.update({k: v for k, v in r.items() if k not in ("format",)})
                row["ort_ran"] = True
            except Exception as e:  # a graph onnxruntime cannot load or run is a finding, not a crash
                log.exception("%s (%s) failed", key, form)
                row.update({"ort_ran": False, "error": f"{type(e).__name__}: {e}"})
                notes.append(f"{key} {form}: {type(e).__name__}: {e}")
                if fmt == "int":
                    int_failed = True
                elif fmt == "qdq":
                    qdq_agree.append(float("nan"))
                else:
                    float_ok = False
            rows.append(row)
            if row["ort_ran"]:
                metrics[f"load_s_{key}_{form}"] = row["load_s"]
                metrics[f"run_s_{key}_{form}"] = row["run_s"]
                if form == "loop":
                    metrics[f"accuracy_{key}"] = _accuracy(path, fmt, net, xt, yt)
    bytes_per_format = {r["format"]: r["bytes"] for r in rows if r["form"] == "loop" and "bytes" in r}
    metrics.update({
        "int_graph_mismatches": float("nan") if int_failed else int(int_mismatch),
        "qdq_argmax_agreement": float(min(qdq_agree)) if qdq_agree else float("nan"),
        "qdq_max_out_lsb": float(max(qdq_lsb)) if qdq_lsb else float("nan"),
        "qdq_argmax_agreement_no_qdq_rewrites": float(min(qdq_agree_plain)) if qdq_agree_plain else float("nan"),
        "float_max_abs_state_err": float(float_err),
        "float_graph_passed": 1.0 if float_ok else 0.0,
        "bytes_per_format": bytes_per_format,
        "n_test": int(len(xt)),
        "n_steps": int(cfg.n_steps),
        "rows": rows,
    })
    if "accuracy_float" in metrics:  # issue 14: accuracy gap of each exported graph below the float graph
        for k in [k for k in metrics if k.startswith("accuracy_") and k != "accuracy_float"]:
            metrics[f"acc_gap_pt_{k[len('accuracy_'):]}"] = 100.0 * (metrics["accuracy_float"] - metrics[k])
    if "float" in bytes_per_format:
        metrics["bytes_fp32"] = bytes_per_format["float"]
    for p in cfg.presets:
        if f"qdq_{p}" in bytes_per_format:
            metrics[f"bytes_{p}"] = bytes_per_format[f"qdq_{p}"]
        if f"int_{p}" in bytes_per_format:
            metrics[f"bytes_int_graph_{p}"] = bytes_per_format[f"int_{p}"]
    if int_rounding is not None:
        notes.append(f"integer graphs built with rounding={int_rounding!r} instead of the spec's (override)")
    if cfg.stress:
        stress_metrics, stress_rows, stress_notes = _stress_section(ctx, cfg, net, xt, out)
        metrics.update(stress_metrics)
        metrics["stress_rows"] = stress_rows
        notes += stress_notes
    if cfg.conv:
        conv_metrics, conv_rows, conv_notes = _conv_section(ctx, cfg, seed, out)
        metrics.update(conv_metrics)
        metrics["conv_rows"] = conv_rows
        notes += conv_notes
    artifacts = [_plot(rows, ctx)]
    return TrackResult(metrics=metrics, artifacts=artifacts, notes=notes)


def stress_specs(cfg: T41Config) -> dict:
    """The two derived int8 specs of the stress comparisons: ``narrow_acc`` and ``pow2``."""
    base = get_preset("int8")
    return {"narrow_acc": base.replace(name=f"int8_acc{cfg.narrow_acc_bits}", acc_bits=cfg.narrow_acc_bits),
            "pow2": base.replace(name=f"int8_{cfg.tie_scale_rule}",
                                 weights=dataclasses.replace(base.weights, scale_rule=cfg.tie_scale_rule))}


def _stress_section(ctx: TrackContext, cfg: T41Config, net, xt: np.ndarray, out: Path) -> tuple[dict, list, list]:
    """Narrow-accumulator and power-of-two-scale specs: bit-exact graph vs simulator (both forms) and
    the instrumented arithmetic check of the unrolled graph (:func:`exports.verify.int_arithmetic_check`)."""
    t0 = time.time()
    x = xt[:cfg.stress_n_test]
    rows, mism, arith, failed, counts = [], 0, 0, False, {}
    for key, spec in stress_specs(cfg).items():
        ref = _reference(net, spec, "int", x, cfg.n_steps)
        fp, codes = ref[3], ref[4]
        for form in FORMS:
            path = out / f"stress_{spec.name}_{form}_T{cfg.n_steps}.onnx"
            row = {"format": f"stress_{key}", "preset": spec.name, "form": form}
            try:
                _export(net, spec, "int", form, cfg.n_steps, path, cfg.int_rounding)
                r = V.verify_int(fp, path, codes, reference=ref[:3])
                mism += r["int_graph_mismatches"]
                row.update({k: v for k, v in r.items() if k != "format"})
                if form == "unrolled":
                    a = V.int_arithmetic_check(fp, onnx.load(str(path)), codes, progress=ctx.progress)
                    arith += a["overflow_mismatches"] + a["requant_mismatches"]
                    counts[key] = a
                    row.update(a)
                row["ort_ran"] = True
            except Exception as e:  # a graph onnxruntime cannot build or run is a finding
                log.exception("stress %s (%s) failed", key, form)
                row.update({"ort_ran": False, "error": f"{type(e).__name__}: {e}"})
                failed = True
            rows.append(row)
    nan = float("nan")
    m = {
        "int_stress_mismatches": nan if failed else int(mism),
        "int_stress_arith_mismatches": nan if failed else int(arith),
        "int_narrow_acc_saturations": counts["narrow_acc"]["saturations"] if "narrow_acc" in counts else nan,
        "int_narrow_acc_values": counts["narrow_acc"]["n_acc"] if "narrow_acc" in counts else nan,
        "int_pow2_ties": counts["pow2"]["ties"] if "pow2" in counts else nan,
        "int_pow2_requant_values": counts["pow2"]["n_requant"] if "pow2" in counts else nan,
        "stress_n_test": int(len(x)),
        "stress_seconds": time.time() - t0,
    }
    specs = stress_specs(cfg)
    notes = [f"stress specs on {len(x)} test images: {specs['narrow_acc'].name} ({m['int_narrow_acc_saturations']} of "
             f"{m['int_narrow_acc_values']} accumulator values saturated), {specs['pow2'].name} "
             f"({m['int_pow2_ties']} ties in {m['int_pow2_requant_values']} requantised values)"]
    return m, rows, notes


def _conv_section(ctx: TrackContext, cfg: T41Config, seed: int, out: Path) -> tuple[dict, list, list]:
    """The small conv EqProp net (``tracks.shared.conv_small``) through the same formats and forms:
    ``conv_int_graph_mismatches`` (ConvInteger / integer window pooling vs FixedPointMLP's integer
    ConvPool), ``conv_qdq_argmax_agreement`` / ``conv_qdq_max_out_lsb`` (vs ``models.qat``'s fake-quant
    conv), ``conv_float_graph_passed``; ``conv_accuracy_<key>`` of the Loop graphs."""
    from models.conv import ConvEqProp

    from .shared.conv_small import DATA_VARIANT, test_images, train_small_conv

    t0 = time.time()
    net, origin = train_small_conv(ctx.data_dir, n_train=cfg.conv_n_train, epochs=cfg.conv_epochs, seed=seed,
                                   channels=cfg.conv_channels)
    xt, yt = test_images(ctx.data_dir, cfg.conv_n_test)
    exported = net if cfg.conv_export_seed is None else ConvEqProp(net.config, seed=cfg.conv_export_seed).eval()
    notes = [f"conv: {origin}; T = {cfg.n_steps}; {len(xt)} test images ({DATA_VARIANT})"]
    if cfg.conv_export_seed is not None:
        notes.append(f"conv graphs exported from an untrained net (seed {cfg.conv_export_seed}): a broken export")
    jobs = [("float", "fp32", "float")] + [(f"qdq_{p}", p, "qdq") for p in cfg.presets] + \
           [(f"int_{p}", p, "int") for p in cfg.presets]
    rows, m = [], {}
    mism, failed, agree, lsb, float_ok = 0, False, [], [], True
    for key, preset, fmt in jobs:
        spec = get_preset(preset)
        ref = _reference(net, spec, fmt, xt, cfg.n_steps)
        for form in FORMS:
            path = out / f"conv_{key}_{form}_T{cfg.n_steps}.onnx"
            row = {"format": f"conv_{key}", "preset": preset, "form": form, "file": str(path.relative_to(ctx.out_dir))}
            try:
                _export(exported, spec, fmt, form, cfg.n_steps, path, cfg.int_rounding)
                row["bytes"] = V.file_bytes(path)
                if fmt == "float":
                    r = V.verify_float(net, path, xt, reference=ref)
                    float_ok &= r["passed"]
                elif fmt == "qdq":
                    r = V.verify_qdq(net, path, xt, reference=ref)
                    agree.append(r["argmax_agreement"])
                    lsb.append(r["max_out_lsb"])
                else:
                    r = V.verify_int(ref[3], path, ref[4], reference=ref[:3])
                    mism += r["int_graph_mismatches"]
                row.update({k: v for k, v in r.items() if k != "format"})
                row["ort_ran"] = True
                if form == "loop":
                    m[f"conv_accuracy_{key}"] = _accuracy(path, fmt, ref[3] if fmt == "int" else net, xt, yt)
            except Exception as e:  # a graph onnxruntime cannot build or run is a finding
                log.exception("conv %s (%s) failed", key, form)
                row.update({"ort_ran": False, "error": f"{type(e).__name__}: {e}"})
                notes.append(f"conv {key} {form}: {type(e).__name__}: {e}")
                failed |= fmt == "int"
                float_ok &= fmt != "float"
                if fmt == "qdq":
                    agree.append(float("nan"))
            rows.append(row)
    m.update({
        "conv_int_graph_mismatches": float("nan") if failed else int(mism),
        "conv_qdq_argmax_agreement": float(min(agree)) if agree else float("nan"),
        "conv_qdq_max_out_lsb": float(max(lsb)) if lsb else float("nan"),
        "conv_float_graph_passed": 1.0 if float_ok else 0.0,
        "conv_n_test": int(len(xt)),
        "conv_seconds": time.time() - t0,
    })
    return m, rows, notes


def _reference(net, spec, fmt: str, xt: np.ndarray, n_steps: int):
    """The mirror's result for ``fmt``: torch float32, torch fake-quant, or the fixed-point simulator
    (``(states, prediction, seconds, FixedPointMLP, input codes)``)."""
    if fmt == "float":
        return V.torch_free_phase(net, xt, n_steps)
    if fmt == "qdq":
        return V.fake_quant_free_phase(net, spec, xt, n_steps)
    fp = FixedPointMLP.from_model(net, spec)
    codes = fp.quantize_input(xt)
    return (*V.simulate_int(fp, codes, n_steps), fp, codes)


def _accuracy(path: Path, fmt: str, net, xt, yt) -> float:
    """Test accuracy of an exported graph's predictions (onnxruntime)."""
    sess, _ = V.make_session(path)
    if fmt == "int":
        fp = net if isinstance(net, FixedPointMLP) else FixedPointMLP.from_model(net, V._meta(path, "int")["spec"])
        x = fp.quantize_input(xt)
    else:
        x = xt
    _, pred, _ = V.run_session(sess, np.asarray(x), 1000)
    return float((pred == yt).mean())


def _plot(rows, ctx: TrackContext) -> str:
    ok = [r for r in rows if r.get("ort_ran")]
    keys = list(dict.fromkeys(r["format"] for r in ok))
    path = ctx.plots_dir / "t41_onnx_formats.png"
    with figure(path, nrows=1, ncols=3, figsize=(13, 3.8), dpi=110) as (fig, _axes):
        axes = _axes[0]
        width = 0.38
        xs = np.arange(len(keys))
        for j, form in enumerate(FORMS):
            sel = {r["format"]: r for r in ok if r["form"] == form}
            for ax, field, label in ((axes[0], "bytes", "file size (kB)"), (axes[1], "load_s", "session load (s)"),
                                     (axes[2], "run_s", "run, all test images (s)")):
                vals = [sel[k][field] / (1e3 if field == "bytes" else 1.0) if k in sel else 0.0 for k in keys]
                ax.bar(xs + (j - 0.5) * width, vals, width, label=form)
                ax.set_title(label)
        for ax in axes:
            ax.set_xticks(xs, keys, rotation=40, ha="right", fontsize=8)
        axes[0].legend()
        fig.suptitle("Track 41: ONNX exports in onnxruntime")
    return str(path.relative_to(ctx.out_dir))

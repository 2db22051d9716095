"""Track 42: a trained EqPropMLP as a rate-coded spiking network (snntorch and Brian2).

Procedure (seed ``ctx.seeds[0]``):

1. Full (issue 14): the headline model of the seed (:func:`tracks.shared.headline.headline_eqprop`:
   EqPropMLP 784-512-10 trained by the Track 25 recipe on 55k images, from the run's model cache);
   quick: train an :class:`EqPropMLP` 784-64-10 on 5000 real MNIST images with :func:`models.train.train`
   (EqProp, symmetric nudging); or load ``--set checkpoint=PATH``. Full: float and snntorch on all 10k
   test images, Brian2 (slow) on the first ``n_brian`` (10). Training goes through the run's model cache (``ctx.model_cache``:
   trained once per run, loaded by a resumed run); the trained model is saved as an artifact
   (``t42_model.pt``) either way.
2. ``float_acc``: float64 free phase (``FLOAT_STEPS`` sweeps) on the test slice.
3. snntorch port (:mod:`hwsim.spiking.snntorch_port`, IF, reset by subtraction, feedback by spikes,
   constant-current input) for ``T`` in 8..128: accuracy, rate vs float state (mean abs error,
   Pearson correlation over all hidden and output neurons), synaptic operations from the spikes.
4. ``snntorch_brian2_agreement`` at ``T = 64`` on the first ``n_brian`` test images, defined as the
   fraction of (image, neuron) spike counts that are identical in the two simulators (all layers);
   ``snntorch_brian2_max_count_diff`` is the largest count difference.
5. Feedback through spikes vs through running rates vs none (``SpikingConfig.feedback``) at
   ``T = 64``: rate-vs-state error and accuracy of each, to justify the default (spikes) and to show
   what the feedback synapses buy (the rates reach the EqProp fixed point, not a feedforward pass).
6. Synaptic operations per inference at ``T = 64`` vs the float network's MACs
   (``FLOAT_STEPS`` sweeps), energy from :mod:`quant.energy` (Horowitz ISSCC 2014, fp32).

7. Non-unit threshold (issue 14: at ``v_threshold = 1`` the port's scaling of the weights by the
   threshold is invisible): the snntorch comparisons of step 3 and the Brian2 agreement of step 4
   are rerun at ``T = 64`` with ``v_threshold = alt_threshold`` (default 0.6) --
   ``vth_acc_gap_t64``, ``vth_rate_state_mae_t64`` and ``vth_snntorch_brian2_agreement`` are
   criteria with the thresholds of their unit-threshold twins; ``vth_counts_equal_unit`` (fraction
   of spike counts identical to the unit-threshold run) is reported.

Conv (issue 12, :func:`_conv_section`): the small conv EqProp net of :mod:`tracks.shared.conv_small`
(MNIST 14x14, 1-8-16 3x3) as a spiking network (:mod:`hwsim.spiking.conv`: conv synapses, pooling gate
from the accumulated conv charge, routed conv feedback): ``conv_acc_gap_t64 <= 1`` point,
``conv_snntorch_brian2_agreement >= 0.99`` (Brian2 with accumulator groups and gated synapses, one
network per image), ``conv_nir_round_trip_exact == 1`` (Conv2d nodes, written, read back, same spike
counts); at ``v_threshold = alt_threshold`` too: ``conv_vth_acc_gap_t64 <= 1`` point and
``conv_vth_snntorch_brian2_agreement >= 0.99``; accuracy per T, rates vs states, the no-feedback ablation and synops for information.

Settings: :class:`T42Config` (``QUICK`` / ``FULL``): from the API only ``model`` (a trained EqPropMLP,
skips training) and the transforms; from the CLI too:
``checkpoint`` (path for :func:`models.checkpoint.load_checkpoint`), ``n_train``, ``n_test``,
``n_brian``, ``hidden``, ``epochs``, ``steps`` (tuple of T), ``snn_transform`` /
``brian2_transform`` (callables ``SpikingParams -> SpikingParams`` applied to the parameters given
to the snntorch accuracy path / to Brian2: how a test breaks a path), ``poisson`` (bool: also run
Poisson input at T=64, accuracy and Brian2 agreement on up to 5 images; default off).
"""
from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch

from hwsim.spiking.brian2_port import run_brian2
from hwsim.spiking.config import SpikingConfig, SpikingParams
from hwsim.spiking.snntorch_port import run_snntorch
from hwsim.spiking.synops import energy_estimate, float_macs, synops_per_sample
from models.checkpoint import check_eqprop_checkpoint, load_checkpoint, save_checkpoint
from models.eqprop_mlp import EqPropConfig, EqPropMLP
from models.train import TrainConfig, train

from .harness.plots import figure
from .harness.base import Criterion, TrackContext, TrackResult, TrackSpec
from .data import load_dataset

log = logging.getLogger("eqprop_hwsim.tracks.t42")

SPEC = TrackSpec(
    id=42,
    slug="spiking_fidelity",
    name="Spiking EqProp: snntorch vs Brian2 vs float",
    claim=("A trained EqPropMLP run as a rate-coded integrate-and-fire network with its feedback "
           "connections keeps its float accuracy within 1 point at T=64 steps, and Brian2 reproduces "
           "the snntorch port's spike counts exactly."),
    criteria=(
        Criterion("snntorch_brian2_agreement", ">=", 0.99),
        Criterion("acc_gap_t64", "<=", 0.01),
        Criterion("rate_state_corr_t64", ">=", 0.99),
        Criterion("rate_state_mae_t64", "<=", 0.015),
        Criterion("float_acc", ">=", 0.8),
        Criterion("vth_snntorch_brian2_agreement", ">=", 0.99),
        Criterion("vth_acc_gap_t64", "<=", 0.01),
        Criterion("vth_rate_state_mae_t64", "<=", 0.015),
        Criterion("conv_snntorch_brian2_agreement", ">=", 0.99),
        Criterion("conv_acc_gap_t64", "<=", 0.01),
        Criterion("conv_nir_round_trip_exact", "==", 1.0),
        Criterion("conv_vth_snntorch_brian2_agreement", ">=", 0.99),
        Criterion("conv_vth_acc_gap_t64", "<=", 0.01),
    ),
    est_seconds_full=400.0,
    est_seconds_quick=40.0,
)

FLOAT_STEPS = 60
"""Free-phase sweeps of the float reference (settled: more sweeps change no prediction here)."""
STEPS = (8, 16, 32, 64, 128)


@dataclass(frozen=True)
class T42Config:
    """Settings of Track 42."""

    n_train: int                  # training images of the float model
    n_test: int                   # test images of the snntorch accuracy paths
    n_brian: int                  # test images simulated in Brian2 (slow)
    hidden: int                   # hidden units of 784-hidden-10
    epochs: int                   # EqProp training epochs
    steps: tuple[int, ...] = STEPS  # time steps T (must include 64)
    poisson: bool = False         # also run Poisson input at T=64
    alt_threshold: float = 0.6    # the non-unit firing threshold of the vth_ comparisons
    checkpoint: str | None = None  # EqPropMLP checkpoint to use instead of training
    headline: bool = False        # issue 14: use the headline model of the seed (tracks.shared.headline; full)
    model: Any = None             # API only: a trained EqPropMLP (skips training)
    snn_transform: Callable | None = None     # API only: SpikingParams -> SpikingParams (snntorch path)
    brian2_transform: Callable | None = None  # API only: SpikingParams -> SpikingParams (Brian2)
    conv: bool = True             # also run the small conv EqProp net as a spiking network (conv_ metrics)
    conv_channels: tuple[int, ...] = (8, 16)
    conv_n_train: int = 3000      # training images of the conv net (MNIST 14x14)
    conv_epochs: int = 2
    conv_n_test: int = 10000
    conv_n_brian: int = 3         # test images of the conv net simulated in Brian2
    conv_steps: tuple[int, ...] = (16, 32, 64)
    conv_model: Any = None        # API only: a trained ConvEqProp (skips training)
    conv_snn_transform: Callable | None = None     # API only: ConvSpikingParams -> ConvSpikingParams (snntorch)
    conv_brian2_transform: Callable | None = None  # API only: the same for the Brian2 path
    conv_nir_transform: Callable | None = None     # API only: nir.NIRGraph -> nir.NIRGraph before the read-back

    def __post_init__(self) -> None:
        for f in ("n_train", "n_test", "n_brian", "hidden", "epochs"):
            if getattr(self, f) < 1:
                raise ValueError(f"{f}={getattr(self, f)} is invalid; allowed: an int >= 1")
        if self.n_test > 10000 or self.n_train > 60000:
            raise ValueError(f"n_test={self.n_test}, n_train={self.n_train}: MNIST has 10000 / 60000 images")
        if self.checkpoint is not None:
            check_eqprop_checkpoint(self.checkpoint)
        if not (0 < self.alt_threshold < float("inf")) or self.alt_threshold == 1.0:
            raise ValueError(f"alt_threshold={self.alt_threshold!r} is invalid; allowed: a finite number > 0 other "
                             "than 1 (the point is a threshold whose scaling is visible)")
        if 64 not in self.steps or min(self.steps) < 1:
            raise ValueError(f"steps={list(self.steps)} is invalid; allowed: ints >= 1 including 64 "
                             "(the criterion is measured at T=64)")


# quick conv net: 3000 images x 2 epochs (the recipe of the tests' fixture; measured float 79.8 %, spiking
# T=64 82.6 % on 500 test images). 1500 x 1 gave a 54 % net (spiking 51 %, gap 0.03: fails the 1-point bound).
QUICK = T42Config(n_train=5000, n_test=500, n_brian=2, hidden=64, epochs=2, conv_n_train=3000, conv_epochs=2,
                  conv_n_test=500, conv_n_brian=1)
# full (issue 14): the headline model (784-512-10, Track 25 recipe, 55k images; n_train / hidden / epochs unused)
FULL = T42Config(n_train=10000, n_test=10000, n_brian=10, hidden=512, epochs=3, headline=True)


def _config(ctx: TrackContext) -> T42Config:
    return ctx.settings(QUICK, FULL)


def _model(ctx: TrackContext, cfg: T42Config, seed: int) -> tuple[EqPropMLP, list[str]]:
    notes = []
    if cfg.model is not None:
        if not isinstance(cfg.model, EqPropMLP):
            raise ValueError(f"model is a {type(cfg.model).__name__}; allowed: an EqPropMLP")
        return cfg.model, ["model given through the config (not trained here)"]
    if cfg.checkpoint is not None:
        net, _ = load_checkpoint(cfg.checkpoint)
        if not isinstance(net, EqPropMLP):
            raise ValueError(f"checkpoint {cfg.checkpoint} holds a {type(net).__name__}; the spiking ports run "
                             "an EqPropMLP (layered, hard-sigmoid): give an EqPropMLP checkpoint")
        return net, [f"model loaded from {cfg.checkpoint}"]
    if cfg.headline:
        from .shared.headline import headline_eqprop
        net, _data, info = headline_eqprop(ctx, "mnist", seed)
        net = net.cpu()
        path = save_checkpoint(ctx.out_dir / "t42_model.pt", net, overwrite=True)
        return net, [info["description"], f"model saved to {path.name}"]
    from .harness.model_cache import train_mlp_cached
    x, y = load_dataset("mnist", "train", ctx.data_dir)
    x, y = x[:cfg.n_train], y[:cfg.n_train]
    net = EqPropMLP(EqPropConfig(sizes=(784, cfg.hidden, 10)), seed=seed).to(ctx.torch_device)
    tcfg = TrainConfig(method="eqprop", epochs=cfg.epochs, batch_size=50, optimizer="sgd", lr=(0.1, 0.05),
                       momentum=0.0, beta=0.5, nudging="symmetric", n_free_steps=20, n_nudge_steps=8, seed=seed)
    # trained once per run: another track or a resumed run with the same key loads it (a user
    # checkpoint or model, above, is never cached)
    t0 = time.time()
    n_before = ctx.model_cache.stats()["loaded"]
    net = train_mlp_cached(ctx.model_cache, net, x, y, tcfg, dataset="mnist", seed=seed,
                           label=f"t42_mlp_h{cfg.hidden}_s{seed}", progress=ctx.progress, train=train)
    net = net.cpu()  # the spiking ports (snntorch, Brian2) and the float reference run on the CPU
    how = "loaded from the run's model cache" if ctx.model_cache.stats()["loaded"] > n_before else \
        f"{time.time() - t0:.0f} s"
    notes.append(f"trained 784-{cfg.hidden}-10 by EqProp on {cfg.n_train} MNIST images, {cfg.epochs} epochs "
                 f"({how})")
    path = save_checkpoint(ctx.out_dir / "t42_model.pt", net, train_config=tcfg.to_dict(), overwrite=True)
    notes.append(f"model saved to {path.name}")
    return net, notes


def _rate_stats(rec, states) -> tuple[float, float]:
    r = np.concatenate([ri.ravel() for ri in rec.rates()])
    s = np.concatenate([si.ravel() for si in states])
    return float(np.abs(r - s).mean()), float(np.corrcoef(r, s)[0, 1])


def run(ctx: TrackContext) -> TrackResult:
    cfg = _config(ctx)
    seed = int(ctx.seeds[0])
    torch.manual_seed(seed)
    snn_tf = cfg.snn_transform or (lambda p: p)
    b2_tf = cfg.brian2_transform or (lambda p: p)
    net, notes = _model(ctx, cfg, seed)
    net = copy.deepcopy(net).double()  # never change the caller's model
    x_te, y_te = load_dataset("mnist", "test", ctx.data_dir)
    x_te, y_te = x_te[:cfg.n_test].astype(np.float64), y_te[:cfg.n_test]
    sizes = net.sizes

    with torch.no_grad():
        states, _ = net.free_phase(torch.from_numpy(x_te), n_steps=FLOAT_STEPS)
    states = [s.numpy() for s in states]
    float_acc = float((states[-1].argmax(1) == y_te).mean())

    table: list[dict[str, Any]] = []
    rec64 = None
    for T in cfg.steps:
        params = snn_tf(SpikingParams.from_model(net, SpikingConfig(n_steps=T)))
        rec = run_snntorch(params, x_te, progress=ctx.progress)
        mae, corr = _rate_stats(rec, states)
        syn = synops_per_sample(rec, sizes)
        table.append({"T": T, "snn_acc": float((rec.predict() == y_te).mean()), "rate_mae": mae, "rate_corr": corr,
                      "synops_per_inference": float(syn.mean())})
        log.info("T=%d acc=%.4f mae=%.4f corr=%.5f", T, table[-1]["snn_acc"], mae, corr)
        if T == 64:
            rec64 = rec
    row64 = next(r for r in table if r["T"] == 64)

    # Brian2 vs snntorch, same parameters object unless a test breaks one path.
    cfg64 = SpikingConfig(n_steps=64)
    p64 = snn_tf(SpikingParams.from_model(net, cfg64))
    xb = x_te[:cfg.n_brian]
    t0 = time.time()
    rec_b = run_brian2(b2_tf(p64), xb, progress=ctx.progress)
    brian_s = time.time() - t0
    rec_s = run_snntorch(p64, xb)
    same = np.concatenate([(a == b).ravel() for a, b in zip(rec_s.counts, rec_b.counts)])
    max_diff = max(int(np.abs(a - b).max()) for a, b in zip(rec_s.counts, rec_b.counts))

    # Feedback through running rates instead of spikes (the design choice, measured), and no feedback.
    rec_rate = run_snntorch(snn_tf(SpikingParams.from_model(net, cfg64.replace(feedback="rate"))), x_te)
    mae_rate, corr_rate = _rate_stats(rec_rate, states)
    rec_ff = run_snntorch(snn_tf(SpikingParams.from_model(net, cfg64.replace(feedback="none"))), x_te)
    mae_ff, corr_ff = _rate_stats(rec_ff, states)

    # The same comparisons at a non-unit threshold (weights scaled by it in SpikingParams.from_model).
    p_thr = snn_tf(SpikingParams.from_model(net, SpikingConfig(n_steps=64, v_threshold=cfg.alt_threshold)))
    rec_thr = run_snntorch(p_thr, x_te)
    mae_thr, corr_thr = _rate_stats(rec_thr, states)
    acc_thr = float((rec_thr.predict() == y_te).mean())
    same_unit = np.concatenate([(a == b).ravel() for a, b in zip(rec_thr.counts, rec64.counts)])
    rec_b_thr = run_brian2(b2_tf(p_thr), xb, progress=ctx.progress)
    same_thr = np.concatenate([(a[:len(xb)] == b).ravel() for a, b in zip(rec_thr.counts, rec_b_thr.counts)])

    synops = float(synops_per_sample(rec64, sizes).mean())
    macs = float(float_macs(sizes, FLOAT_STEPS))
    energy = energy_estimate(synops, macs, input_macs=sizes[0] * sizes[1], dtype="fp", bits=32)

    metrics: dict[str, Any] = {
        "float_acc": float_acc,
        "snn_acc_t64": row64["snn_acc"],
        "acc_gap_t64": float_acc - row64["snn_acc"],
        "snntorch_brian2_agreement": float(same.mean()),
        "snntorch_brian2_max_count_diff": max_diff,
        "n_brian_images": int(cfg.n_brian),
        "brian2_seconds_per_image": brian_s / max(1, cfg.n_brian),
        "rate_state_corr_t64": row64["rate_corr"],
        "rate_state_mae_t64": row64["rate_mae"],
        "rate_feedback_rate_state_mae_t64": mae_rate,
        "rate_feedback_rate_state_corr_t64": corr_rate,
        "rate_feedback_acc_t64": float((rec_rate.predict() == y_te).mean()),
        "no_feedback_rate_state_mae_t64": mae_ff,
        "no_feedback_rate_state_corr_t64": corr_ff,
        "no_feedback_acc_t64": float((rec_ff.predict() == y_te).mean()),
        "vth": float(cfg.alt_threshold),
        "vth_snn_acc_t64": acc_thr,
        "vth_acc_gap_t64": float_acc - acc_thr,
        "vth_rate_state_mae_t64": mae_thr,
        "vth_rate_state_corr_t64": corr_thr,
        "vth_snntorch_brian2_agreement": float(same_thr.mean()),
        "vth_counts_equal_unit": float(same_unit.mean()),
        "synops_per_inference": synops,
        "float_macs_per_inference": macs,
        "snn_energy_pj_per_inference": energy["snn_pj"],
        "float_energy_pj_per_inference": energy["float_pj"],
        "energy_ratio_snn_over_float": energy["ratio"],
        "acc_vs_T": table,
        "n_test": int(cfg.n_test),
    }
    if cfg.poisson:
        rec_p = run_snntorch(snn_tf(SpikingParams.from_model(net, cfg64.replace(input="poisson", seed=seed))),
                             x_te, progress=ctx.progress)
        metrics["snn_acc_t64_poisson"] = float((rec_p.predict() == y_te).mean())
        metrics["synops_per_inference_poisson"] = float(synops_per_sample(rec_p, sizes).mean())
        n_pb = min(5, cfg.n_brian)  # Poisson trains from quant.rng counters: same spikes in both
        p_pois = snn_tf(SpikingParams.from_model(net, cfg64.replace(input="poisson", seed=seed)))
        rec_pb = run_brian2(b2_tf(p_pois), x_te[:n_pb], progress=ctx.progress)
        metrics["snntorch_brian2_agreement_poisson"] = float(np.concatenate(
            [(a[:n_pb] == b).ravel() for a, b in zip(rec_p.counts, rec_pb.counts)]).mean())
    notes += [
        f"float reference: {FLOAT_STEPS} free-phase sweeps, float64; test slice {cfg.n_test} images",
        "agreement = fraction of (image, neuron) spike counts identical in snntorch and Brian2 at T=64 "
        f"({cfg.n_brian} images, all layers)",
        f"vth_ metrics: the T=64 comparisons at v_threshold={cfg.alt_threshold} (weights and biases scaled by it)",
        "read-out: most output spikes, ties broken by the final membrane potential",
        f"energy: {energy['pj_per_synop']} pJ per synop (fp32 add) vs {energy['pj_per_mac']} pJ per MAC "
        f"(fp32 mult + add), {energy['source']}; weight fetches not included",
    ]
    if cfg.conv:
        conv_metrics, conv_notes = _conv_section(ctx, cfg, seed)
        metrics.update(conv_metrics)
        notes += conv_notes
    artifacts = [_plot(ctx, table, float_acc, mae_ff)]
    return TrackResult(metrics=metrics, artifacts=artifacts, notes=notes)


def _conv_section(ctx: TrackContext, cfg: T42Config, seed: int) -> tuple[dict[str, Any], list[str]]:
    """The small conv EqProp net (:mod:`tracks.shared.conv_small`) as a spiking network
    (:mod:`hwsim.spiking.conv`: pooling gate from the accumulated conv charge, routed conv feedback):
    accuracy vs float for each ``T`` in ``conv_steps``, ``conv_acc_gap_t64 = float - spiking`` (and
    its absolute value), Brian2 agreement on ``conv_n_brian`` images, NIR round trip (write, read
    back, identical parameters and identical snntorch spike counts), rates vs the float states."""
    import tempfile

    from exports.nir_export import params_from_nir_conv, read_nir_conv, to_nir_conv
    from hwsim.spiking.conv import ConvSpikingParams, conv_synops_per_sample, run_brian2_conv, run_snntorch_conv
    from models.conv import ConvEqProp

    from .shared.conv_small import DATA_VARIANT, test_images, train_small_conv

    t0 = time.time()
    if cfg.conv_model is not None:
        if not isinstance(cfg.conv_model, ConvEqProp):
            raise ValueError(f"conv_model is a {type(cfg.conv_model).__name__}; allowed: a ConvEqProp")
        net, origin = cfg.conv_model, "conv model given through the config"
    else:
        net, origin = train_small_conv(ctx.data_dir, n_train=cfg.conv_n_train, epochs=cfg.conv_epochs, seed=seed,
                                       channels=cfg.conv_channels)
    net = copy.deepcopy(net).double().eval()
    snn_tf = cfg.conv_snn_transform or (lambda p: p)
    b2_tf = cfg.conv_brian2_transform or (lambda p: p)
    x, y = test_images(ctx.data_dir, cfg.conv_n_test)
    x = x.astype(np.float64)
    with torch.no_grad():
        states, _ = net.free_phase(torch.from_numpy(x), n_steps=FLOAT_STEPS)
    states = [s_.numpy() for s_ in states]
    float_acc = float((states[-1].argmax(1) == y).mean())
    m: dict[str, Any] = {"conv_float_acc": float_acc}
    rec64 = None
    for T in sorted(set(cfg.conv_steps) | {64}):
        rec = run_snntorch_conv(snn_tf(ConvSpikingParams.from_model(net, SpikingConfig(n_steps=T))), x)
        m[f"conv_snn_acc_t{T}"] = float((rec.predict() == y).mean())
        if T == 64:
            rec64 = rec
    m["conv_acc_gap_t64"] = float_acc - m["conv_snn_acc_t64"]
    m["conv_abs_acc_gap_t64"] = abs(m["conv_acc_gap_t64"])
    m["conv_best_acc_gap_t_le_64"] = min(float_acc - m[f"conv_snn_acc_t{T}"] for T in cfg.conv_steps if T <= 64)
    m["conv_rate_state_mae_t64"] = float(np.mean([np.abs(r - s_).mean() for r, s_ in zip(rec64.rates(), states)]))
    p64 = ConvSpikingParams.from_model(net, SpikingConfig(n_steps=64))
    rec_ff = run_snntorch_conv(ConvSpikingParams.from_model(net, SpikingConfig(n_steps=64, feedback="none")), x)
    m["conv_no_feedback_acc_t64"] = float((rec_ff.predict() == y).mean())
    m["conv_no_feedback_rate_state_mae_t64"] = float(np.mean([np.abs(r - s_).mean()
                                                              for r, s_ in zip(rec_ff.rates(), states)]))
    # non-unit threshold (weights scaled by it in ConvSpikingParams.from_model): accuracy, rates, Brian2
    p_thr = ConvSpikingParams.from_model(net, SpikingConfig(n_steps=64, v_threshold=cfg.alt_threshold))
    rec_thr = run_snntorch_conv(snn_tf(p_thr), x)
    m["conv_vth_snn_acc_t64"] = float((rec_thr.predict() == y).mean())
    m["conv_vth_acc_gap_t64"] = float_acc - m["conv_vth_snn_acc_t64"]
    m["conv_vth_rate_state_mae_t64"] = float(np.mean([np.abs(r - s_).mean() for r, s_ in zip(rec_thr.rates(), states)]))
    m["conv_vth_counts_equal_unit"] = float(np.concatenate(
        [(a == b).ravel() for a, b in zip(rec_thr.counts, rec64.counts)]).mean())
    m["conv_synops_per_inference_t64"] = float(conv_synops_per_sample(rec64, p64).mean())
    xb = x[:cfg.conv_n_brian]
    tb = time.time()
    rec_b = run_brian2_conv(b2_tf(p64), xb)
    m["conv_brian2_seconds_per_image"] = (time.time() - tb) / max(1, len(xb))
    rec_s = run_snntorch_conv(p64, xb)
    same = np.concatenate([(a == b).ravel() for a, b in zip(rec_s.counts, rec_b.counts)])
    m["conv_snntorch_brian2_agreement"] = float(same.mean())
    m["conv_snntorch_brian2_max_count_diff"] = max(int(np.abs(a - b).max()) for a, b in zip(rec_s.counts, rec_b.counts))
    rec_bt = run_brian2_conv(b2_tf(p_thr), xb)
    rec_st = run_snntorch_conv(p_thr, xb)
    m["conv_vth_snntorch_brian2_agreement"] = float(np.concatenate(
        [(a == b).ravel() for a, b in zip(rec_st.counts, rec_bt.counts)]).mean())
    with tempfile.TemporaryDirectory() as tmp:   # NIR: write the file, read it back, rebuild, rerun
        import nir

        path = f"{tmp}/conv.nir"
        nir.write(path, (cfg.conv_nir_transform or (lambda g: g))(to_nir_conv(p64)))
        try:
            q = params_from_nir_conv(read_nir_conv(path))
            same_p = (q.config == p64.config and np.array_equal(q.out_weight, p64.out_weight)
                      and np.array_equal(q.out_bias, p64.out_bias)
                      and all(np.array_equal(a.weight, b.weight) and np.array_equal(a.bias, b.bias)
                              and (a.in_shape, a.padding, a.pool) == (b.in_shape, b.padding, b.pool)
                              for a, b in zip(p64.convs, q.convs)))
            rec_q = run_snntorch_conv(q, xb)
            same_c = all(np.array_equal(a, b) for a, b in zip(rec_s.counts, rec_q.counts))
            m["conv_nir_round_trip_exact"] = 1.0 if same_p and same_c else 0.0
        except ValueError as e:
            log.warning("conv NIR read-back refused: %s", e)
            m["conv_nir_round_trip_exact"] = 0.0
    m["conv_n_test"] = int(len(x))
    m["conv_n_brian_images"] = int(len(xb))
    m["conv_seconds"] = time.time() - t0
    notes = [f"conv: {origin}; {len(x)} test images ({DATA_VARIANT}); float reference {FLOAT_STEPS} async sweeps "
             "(float64); spiking: IF, reset by subtraction, constant-current input, pooling gate = first argmax of "
             "the accumulated conv charge, routed conv feedback (hwsim.spiking.conv)",
             "conv_acc_gap_t64 = float - spiking accuracy (one-sided, as acc_gap_t64); conv_abs_acc_gap_t64 its size"]
    return m, notes


def _plot(ctx: TrackContext, table: list[dict[str, Any]], float_acc: float, no_fb_mae: float) -> str:
    ts = [r["T"] for r in table]
    path = ctx.plots_dir / "t42_acc_vs_T.png"
    with figure(path, nrows=1, ncols=2, figsize=(9, 3.5), dpi=110) as (fig, _axes):
        a1, a2 = _axes[0]
        a1.semilogx(ts, [100 * r["snn_acc"] for r in table], "o-", base=2, label="spiking (snntorch)")
        a1.axhline(100 * float_acc, color="k", ls="--", label="float EqProp")
        a1.set_xlabel("time steps T")
        a1.set_ylabel("MNIST test accuracy (%)")
        a1.legend()
        a2.plot(ts, [r["rate_mae"] for r in table], "o-", label="mean |rate - state|")
        a2.plot(ts, [1 - r["rate_corr"] for r in table], "s-", label="1 - corr(rate, state)")
        a2.axhline(no_fb_mae, color="C0", ls=":", label="mean |rate - state|, no feedback, T=64")
        a2.set_xscale("log", base=2)
        a2.set_yscale("log")
        a2.set_xlabel("time steps T")
        a2.legend(fontsize=8)
        fig.suptitle("Track 42: spiking EqProp vs float")
    return str(path.relative_to(ctx.out_dir))

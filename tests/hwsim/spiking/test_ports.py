"""snntorch port vs Brian2 port vs float EqPropMLP, on real MNIST test images (small slices)."""
from __future__ import annotations

import functools

import numpy as np
import pytest
import torch

from hwsim.spiking.brian2_port import run_brian2
from hwsim.spiking.config import SpikingConfig, SpikingParams, poisson_spikes
from hwsim.spiking.snntorch_port import run_snntorch
from hwsim.spiking.synops import fanouts, float_macs, synops_per_sample
from models.eqprop_mlp import EqPropConfig, EqPropMLP
from quant.tolerances import F64_VS_F64
from tracks.data import load_dataset

SIZES = (784, 32, 10)
# Rate vs float state at T=64: the rate is a count / 64, so the quantisation alone is up to 1/64 per
# neuron; measured mean abs error 0.005 on a 784-128-10 net (Track 42). Bounds with 4x margin:
RATE_MAE_T64_MAX = 0.02
RATE_CORR_T64_MIN = 0.99


@functools.lru_cache(maxsize=1)
def _trained_state() -> dict:
    """A tiny EqPropMLP trained for 3 epochs on 2000 real MNIST images (~83% test accuracy), cached read-only."""
    x, y = load_dataset("mnist", "train")
    x, y = torch.from_numpy(x[:2000]), torch.from_numpy(y[:2000])
    net = EqPropMLP(EqPropConfig(sizes=SIZES), seed=0)
    for _ in range(3):
        for s in range(0, 2000, 25):
            g = net.eqprop_grads(x[s:s + 25], y[s:s + 25], beta=0.5, mode="symmetric", n_free_steps=20,
                                 n_nudge_steps=8)
            with torch.no_grad():
                for name, p in net.named_parameters():
                    p -= (0.2 if name.startswith("layers.0") else 0.1) * g[name]
    return {k: v.clone() for k, v in net.state_dict().items()}


def trained_net() -> EqPropMLP:
    net = EqPropMLP(EqPropConfig(sizes=SIZES), seed=0)
    net.load_state_dict(_trained_state())
    return net.double()


def mnist_test(n: int, start: int = 0):
    x, y = load_dataset("mnist", "test")
    return x[start:start + n].astype(np.float64), y[start:start + n]


@pytest.mark.parametrize("cfg", [
    SpikingConfig(n_steps=24),
    SpikingConfig(n_steps=12, tau_mem_s=8e-3),
    SpikingConfig(n_steps=12, input="poisson", seed=3),
], ids=["if_current", "lif_current", "if_poisson"])
def test_snntorch_and_brian2_spike_counts_identical(cfg):
    net = trained_net()
    x, _ = mnist_test(2)
    params = SpikingParams.from_model(net, cfg)
    a = run_snntorch(params, x, sample_ids=[10, 11])
    b = run_brian2(params, x, sample_ids=[10, 11])
    assert sum(int(c.sum()) for c in a.counts[1:]) > 0, "no output spikes: the comparison would be vacuous"
    for ca, cb in zip(a.counts, b.counts):
        np.testing.assert_array_equal(ca, cb)
    for va, vb in zip(a.v_final, b.v_final):  # two float64 implementations of the same update
        np.testing.assert_allclose(va, vb, rtol=1e-9, atol=1e-9)
    np.testing.assert_array_equal(a.input_spikes, b.input_spikes)
    if cfg.input == "poisson":
        assert a.input_spikes.min() > 0


def test_brian2_detects_different_weights():
    """The cross-check can fail: one perturbed feedback-carrying weight changes Brian2's counts."""
    net = trained_net()
    x, _ = mnist_test(1)
    cfg = SpikingConfig(n_steps=24)
    params = SpikingParams.from_model(net, cfg)
    w1 = params.weights[1].copy()
    w1 *= -1.0
    other = SpikingParams((params.weights[0], w1), params.biases, cfg)
    a, b = run_snntorch(params, x), run_brian2(other, x)
    assert not all(np.array_equal(ca, cb) for ca, cb in zip(a.counts, b.counts))


def test_rates_track_float_states_at_t64():
    net = trained_net()
    x, _ = mnist_test(50, start=200)
    s, _ = net.free_phase(torch.from_numpy(x), n_steps=100)
    rec = run_snntorch(SpikingParams.from_model(net, SpikingConfig(n_steps=64)), x)
    for r, si in zip(rec.rates(), s):
        si = si.numpy()
        assert np.abs(r - si).mean() < RATE_MAE_T64_MAX
        assert np.corrcoef(r.ravel(), si.ravel())[0, 1] > RATE_CORR_T64_MIN


def test_single_layer_if_rate_is_clamped_current():
    """No feedback, constant current I: charge balance theta*count + m(T-1) - theta*z(T-1) = T*theta*I, and
    (at most one spike per step) |count - T*clamp(I, 0, 1)| <= 1."""
    rng = np.random.default_rng(0)
    w, b = rng.normal(0, 0.1, (7, 20)), rng.normal(0.3, 0.5, 7)
    x = rng.random((5, 20))
    cfg = SpikingConfig(n_steps=40, v_threshold=0.75)
    rec = run_snntorch(SpikingParams((w * 0.75,), (b * 0.75,), cfg), x)
    current = x @ w.T + b
    expect = cfg.n_steps * np.clip(current, 0, 1)
    assert np.all(np.abs(rec.counts[0] - expect) <= 1.0)
    m = rec.v_final[0]  # m(T-1): the spike z(T-1) = (m > theta) is counted but not yet subtracted
    charge = 0.75 * rec.counts[0] + m - 0.75 * (m > 0.75)
    np.testing.assert_allclose(charge, 0.75 * cfg.n_steps * current, **F64_VS_F64)


def test_threshold_scaling_leaves_counts_unchanged():
    net = trained_net()
    x, _ = mnist_test(3)
    a = run_snntorch(SpikingParams.from_model(net, SpikingConfig(n_steps=16)), x)
    b = run_snntorch(SpikingParams.from_model(net, SpikingConfig(n_steps=16, v_threshold=0.25)), x)
    for ca, cb in zip(a.counts, b.counts):
        np.testing.assert_array_equal(ca, cb)


def test_poisson_trains_depend_on_sample_id_not_batch():
    x, _ = mnist_test(4)
    full = poisson_spikes(x, 5, 0, np.arange(4))
    np.testing.assert_array_equal(full[2:], poisson_spikes(x[2:], 5, 0, [2, 3]))
    assert not np.array_equal(full[0], poisson_spikes(x[:1], 5, 0, [1])[0])
    assert not full[x == 0].any() and full[x == 1].all()


def test_synops_count_spikes_times_fanout():
    net = trained_net()
    x, _ = mnist_test(2)
    rec = run_snntorch(SpikingParams.from_model(net, SpikingConfig(n_steps=8, input="poisson")), x)
    by_hand = rec.input_spikes * 32 + rec.counts[0].sum(1) * 10 + rec.counts[1].sum(1) * 32
    np.testing.assert_array_equal(synops_per_sample(rec, SIZES), by_hand)
    assert fanouts((784, 20, 40, 10)) == [40, 30, 40]
    assert float_macs(SIZES, 30) == 784 * 32 + 30 * 2 * 32 * 10


@pytest.mark.parametrize("bad, match", [
    ({"dt_s": 0.0}, "dt_s"), ({"n_steps": 0}, "n_steps"), ({"tau_mem_s": 1e-4}, "tau_mem_s"),
    ({"v_threshold": -1.0}, "v_threshold"), ({"reset": "zero"}, "reset"), ({"input": "rate"}, "input"),
    ({"feedback": "bogus"}, "feedback"), ({"seed": -1}, "seed"), ({"n_stepz": 3}, "unknown keys"),
])
def test_config_rejects_bad_values(bad, match):
    with pytest.raises(ValueError, match=match):
        SpikingConfig.from_dict({**SpikingConfig().to_dict(), **bad})


def test_ports_reject_bad_input():
    net = trained_net()
    params = SpikingParams.from_model(net, SpikingConfig(n_steps=4))
    with pytest.raises(ValueError, match="expected \\(B, 784\\)"):
        run_snntorch(params, np.zeros((2, 10)))
    with pytest.raises(ValueError, match="\\[0, 1\\]"):
        run_brian2(params, np.full((1, 784), 2.0))
    with pytest.raises(ValueError, match="SpikingParams"):
        run_snntorch(net, np.zeros((1, 784)))
    with pytest.raises(ValueError, match="layer 1 expects"):
        SpikingParams((np.zeros((3, 4)), np.zeros((2, 5))), (np.zeros(3), np.zeros(2)), SpikingConfig())


# ------------------------------------------------------------------ Track 42 can pass and can fail
def _track42(tmp_path, **overrides):
    from tracks import TrackContext, evaluate
    from tracks.t42_spiking_fidelity import SPEC, run

    ctx = TrackContext(out_dir=tmp_path, quick=True, seeds=(0,), progress=False,
                       overrides={"model": trained_net(), "n_test": 200, "n_brian": 1, "steps": (16, 64),
                                  "conv": False, **overrides})
    result = run(ctx)
    _, rows = evaluate(SPEC, result)
    rows = [r for r in rows if not r["metric"].startswith("conv_")]   # conv=False: the MLP criteria only
    return all(r["passed"] for r in rows), {r["metric"]: r["passed"] for r in rows}, result


def test_track42_passes_and_fails_when_feedback_dropped_or_brian2_weights_differ(tmp_path):
    passed, rows, result = _track42(tmp_path / "ok")
    assert passed, (rows, {k: v for k, v in result.metrics.items() if k != "acc_vs_T"})
    assert (tmp_path / "ok" / result.artifacts[0]).is_file()

    def drop_feedback(p):
        return p.with_config(p.config.replace(feedback="none"))

    passed, rows, _ = _track42(tmp_path / "no_fb", snn_transform=drop_feedback)
    assert not passed and not rows["rate_state_mae_t64"] and not rows["vth_rate_state_mae_t64"]

    def other_weights(p):
        return SpikingParams((p.weights[0], -p.weights[1]), p.biases, p.config)

    passed, rows, _ = _track42(tmp_path / "b2", brian2_transform=other_weights)
    assert not passed and not rows["snntorch_brian2_agreement"] and rows["acc_gap_t64"]
    assert not rows["vth_snntorch_brian2_agreement"]


def test_track42_fails_when_the_threshold_scaling_is_dropped(tmp_path, monkeypatch):
    """SpikingParams.from_model without the scaling of weights and biases by v_threshold: invisible at
    threshold 1 (every unit-threshold criterion still passes), caught by the vth_ comparisons."""
    orig = SpikingParams.from_model.__func__

    def unscaled(cls, net, config):
        p = orig(cls, net, config.replace(v_threshold=1.0))
        return cls(p.weights, p.biases, config)

    monkeypatch.setattr(SpikingParams, "from_model", classmethod(unscaled))
    passed, rows, result = _track42(tmp_path, alt_threshold=2.0)
    failed = {k for k, ok in rows.items() if not ok}
    assert failed == {"vth_acc_gap_t64", "vth_rate_state_mae_t64"}, result.metrics
    assert result.metrics["vth_counts_equal_unit"] < 0.9


def test_track42_conv_fails_when_the_conv_threshold_scaling_is_dropped(tmp_path, monkeypatch):
    """ConvSpikingParams.from_model without the threshold scaling: only conv_vth_acc_gap_t64 fails."""
    import dataclasses

    from hwsim.spiking.conv import ConvSpikingParams
    from tracks import TrackContext, evaluate
    from tracks.harness.base import TrackResult
    from tracks.t42_spiking_fidelity import QUICK, SPEC, _conv_section

    orig = ConvSpikingParams.from_model.__func__

    def unscaled(cls, net, config):
        return dataclasses.replace(orig(cls, net, config.replace(v_threshold=1.0)), config=config)

    monkeypatch.setattr(ConvSpikingParams, "from_model", classmethod(unscaled))
    cfg = dataclasses.replace(QUICK, conv_model=small_trained_conv_net(), conv_n_test=200, conv_n_brian=1,
                              conv_steps=(64,))
    m, _ = _conv_section(TrackContext(out_dir=tmp_path, quick=True, progress=False), cfg, 0)
    _, rows = evaluate(SPEC, TrackResult(metrics=m))
    failed = {r["metric"] for r in rows if r["metric"].startswith("conv_") and not r["passed"]}
    assert failed == {"conv_vth_acc_gap_t64"}, m


def small_trained_conv_net():
    """A 1-8-16 conv EqProp net trained by ``tracks.shared.conv_small``'s recipe (Adam 3e-3, beta 0.2,
    T1 15, T2 5, seed 0) on 3000 MNIST 14x14 images for 2 epochs (79 % on 1000 test images), stored
    as a fixture so that tests do not train."""
    from pathlib import Path

    from models.conv import ConvEqProp
    from tracks.shared.conv_small import small_conv_config

    net = ConvEqProp(small_conv_config((8, 16)), seed=0)
    net.load_state_dict(torch.load(Path(__file__).parent / "data" / "small_conv_8_16.pt"))
    return net.eval()


def test_track42_conv_metrics_pass_and_each_fails_when_its_path_is_broken(tmp_path):
    """Conv part of Track 42: the three conv criteria pass; then Brian2 gets other weights, the snntorch
    accuracy path permuted output weights and the NIR file a changed kernel: each breaks its criterion."""
    import dataclasses

    from tracks import TrackContext, evaluate
    from tracks.harness.base import TrackResult
    from tracks.t42_spiking_fidelity import QUICK, SPEC, _conv_section

    def conv_rows(**kw):
        cfg = dataclasses.replace(QUICK, conv_model=small_trained_conv_net(), conv_n_test=200, conv_n_brian=1,
                                  conv_steps=(64,), **kw)
        m, _ = _conv_section(TrackContext(out_dir=tmp_path, quick=True, progress=False), cfg, 0)
        _, rows = evaluate(SPEC, TrackResult(metrics=m))
        return {r["metric"]: r["passed"] for r in rows if r["metric"].startswith("conv_")}, m

    rows, m = conv_rows()
    assert len(rows) == 5 and all(rows.values()), m
    assert m["conv_snntorch_brian2_agreement"] == 1.0 and m["conv_float_acc"] > 0.7
    assert m["conv_vth_snntorch_brian2_agreement"] == 1.0 and m["conv_vth_counts_equal_unit"] > 0.99

    def scale_conv(p):
        return dataclasses.replace(p, convs=tuple(dataclasses.replace(c, weight=c.weight * 1.5) for c in p.convs))

    def permute_out(p):
        return dataclasses.replace(p, out_weight=np.roll(p.out_weight, 1, axis=0), out_bias=np.roll(p.out_bias, 1))

    def other_nir_kernel(g):
        g.nodes["conv1"].weight = g.nodes["conv1"].weight * 1.5
        return g

    rows, m = conv_rows(conv_brian2_transform=scale_conv, conv_snn_transform=permute_out,
                        conv_nir_transform=other_nir_kernel)
    assert not any(rows.values()), m


def test_snntorch_port_does_not_leak_global_neuron_instances():
    import snntorch as snn

    before = len(snn.SpikingNeuron.instances)
    params = SpikingParams((np.ones((3, 4)),), (np.zeros(3),), SpikingConfig(n_steps=3))
    for _ in range(3):
        run_snntorch(params, np.ones((1, 4)))
    assert len(snn.SpikingNeuron.instances) == before

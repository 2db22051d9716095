"""hwsim.analog: crossbar mapping, noise statistics, torch vs numba paired draws, in-situ EqProp."""
import dataclasses
import math

import numpy as np
import pytest
import torch

from hwsim.analog import AnalogCrossbarMLP, AnalogSimConfig, _normal_nb, _read_nb, _read_torch, adc_range_for
from models.eqprop_mlp import EqPropConfig, EqPropMLP
from quant import AnalogSpec, get_preset, quantize_weights, rng
from quant.tolerances import BIT_EXACT, F64_VS_F64, RNG_NORMAL_F64, state_lsb_atol

NOISY = AnalogSpec(g_min_uS=1.0, prog_noise_std=0.05, read_noise_std=0.02, drift_nu=0.05, drift_t0_s=1.0,
                   stuck_at_gmin_frac=0.05, stuck_at_gmax_frac=0.05, dac_bits=None, adc_bits=None)
NOISY_SIM = AnalogSimConfig(prog_noise_model="pcm_poly", t_inference_s=100.0, drift_nu_std=0.01,
                            drift_compensation=True, update_noise_std=0.1)


def _net(sizes=(12, 9, 7, 4), seed=0, update="async"):
    return EqPropMLP(EqPropConfig(sizes=sizes, update=update), seed=seed).double()


def _data(b=6, n=12, k=4, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, n, generator=g, dtype=torch.float64), torch.randint(0, k, (b,), generator=g)


@pytest.mark.parametrize("update", ["async", "sync"])
def test_noiseless_chip_matches_model_free_and_nudged(update):
    net = _net(update=update)
    x, y = _data()
    chip = AnalogCrossbarMLP(net, AnalogSpec(), seed=0)
    s, _ = chip.relax(x, n_steps=25)
    ref, _ = net.free_phase(x, n_steps=25)
    for a, b in zip(s, ref):
        np.testing.assert_allclose(a.numpy(), b.numpy(), **F64_VS_F64)
    sn, _ = chip.relax(x, s, beta=0.3, y=y, n_steps=10)
    refn, _ = net.relax(x, ref, beta=0.3, y=y, n_steps=10)
    for a, b in zip(sn, refn):
        np.testing.assert_allclose(a.numpy(), b.numpy(), **F64_VS_F64)


def test_quantized_weights_are_what_is_programmed():
    net = _net()
    chip = AnalogCrossbarMLP(net, AnalogSpec(), weights="int4", seed=0)
    for (w, b), lin in zip(chip.effective_weights(), net.layers):
        q = quantize_weights(lin.weight.detach(), get_preset("int4")).dequantize()
        np.testing.assert_allclose(w.numpy(), q.numpy(), **F64_VS_F64)
        np.testing.assert_allclose(b.numpy(), lin.bias.detach().numpy(), **F64_VS_F64)
    # int4 per-channel: at most 15 distinct levels per row
    w0 = chip.effective_weights()[0][0]
    assert max(len(torch.unique(torch.round(r * 1e9))) for r in w0) <= 15


@pytest.mark.parametrize("converters", [False, True])
def test_torch_and_numba_paths_draw_the_same_noise(converters):
    spec = dataclasses.replace(NOISY, dac_bits=6, adc_bits=7, adc_range=4.0) if converters else NOISY
    net = _net()
    x, y = _data()
    chips = [AnalogCrossbarMLP(net, spec, weights="int8", sim=NOISY_SIM, seed=5, backend=b) for b in ("torch", "numba")]
    t, n = chips
    for i in range(net.n_layers):
        np.testing.assert_array_equal(t.stuck_p[i].numpy(), n.stuck_p[i].numpy())  # integer draws: BIT_EXACT
        np.testing.assert_array_equal(t.stuck_m[i].numpy(), n.stuck_m[i].numpy())
        np.testing.assert_allclose(t.gp[i].numpy(), n.gp[i].numpy(), **RNG_NORMAL_F64)
        np.testing.assert_allclose(t.gm[i].numpy(), n.gm[i].numpy(), **RNG_NORMAL_F64)
    st, sn = (c.relax(x, n_steps=15)[0] for c in chips)
    tol = state_lsb_atol(1.0 / (2 ** 6 - 1)) if converters else F64_VS_F64
    for a, b in zip(st, sn):
        np.testing.assert_allclose(a.numpy(), b.numpy(), **tol)
    for c in chips:
        c.eqprop_update(x, y, lr=0.05, beta=0.5, n_free_steps=10, n_nudge_steps=5)
    for i in range(net.n_layers):
        np.testing.assert_allclose(t.gp[i].numpy(), n.gp[i].numpy(), **(tol if converters else RNG_NORMAL_F64))


def test_read_noise_draws_equal_quant_rng_in_both_paths():
    # zero weights: the read returns the noise alone, sigma * ||[u, 1]|| * z
    om = np.zeros((5, 8))
    u = np.random.default_rng(0).random((3, 7))
    sigma, seed, step, tid = 0.1, 11, 4, rng.tensor_id(rng.KIND_READ, 2, 0)
    yn = _read_nb(om, u, False, seed, step, tid, sigma, 0, 0, 1.0, 1.0)
    yt = _read_torch(torch.from_numpy(om), torch.from_numpy(u), False, seed, step, tid, sigma, 0, 0, 1.0, 1.0).numpy()
    z = rng.normal_f64(seed, step, tid, rng.element_index((3, 5)))
    expect = sigma * np.sqrt((u ** 2).sum(1, keepdims=True) + 1.0) * z
    np.testing.assert_allclose(yn, expect, **RNG_NORMAL_F64)
    np.testing.assert_allclose(yt, expect, **RNG_NORMAL_F64)
    assert all(_normal_nb(seed, step, tid, k) == rng.normal_f64_scalar(seed, step, tid, k) or
               math.isclose(_normal_nb(seed, step, tid, k), rng.normal_f64_scalar(seed, step, tid, k), rel_tol=1e-12)
               for k in range(50))


def test_read_noise_is_fresh_per_read_and_has_the_stated_std():
    net = _net((30, 20, 5))
    spec = AnalogSpec(read_noise_std=0.03)
    chip = AnalogCrossbarMLP(net, spec, seed=0)
    u = torch.full((400, 30), 0.5, dtype=torch.float64)
    clean = AnalogCrossbarMLP(net, AnalogSpec(), seed=0)._read(0, u, False)
    r1, r2 = chip._read(0, u, False), None
    chip.read_step += 1
    r2 = chip._read(0, u, False)
    assert not torch.equal(r1, r2)
    expected_sd = 0.03 * math.sqrt(2) * math.sqrt(30 * 0.25 + 1) * chip.w_max[0]
    sd = float((torch.cat([r1, r2]) - clean.repeat(2, 1)).std())
    assert abs(sd / expected_sd - 1) < 0.05


def test_programming_noise_std_and_pcm_polynomial():
    net = _net((200, 100, 3))
    for model, g_expect in (("constant", 0.05), ("pcm_poly", 0.05 * 0.26348 / 1.05488)):
        chip = AnalogCrossbarMLP(net, AnalogSpec(prog_noise_std=0.05, g_min_uS=0.0), seed=1,
                                 sim=AnalogSimConfig(prog_noise_model=model))
        clean = AnalogCrossbarMLP(net, AnalogSpec(), seed=1)
        d = (chip.gp[0] - clean.gp[0]).flatten()
        target = clean.gp[0].flatten()
        # devices programmed to mid range (far from the [0, 1] clip): std at that conductance
        mid = (target > 0.4) & (target < 0.6)
        x = 0.5
        sd_mid = 0.05 if model == "constant" else 0.05 * (0.26348 + 1.9650 * x - 1.1731 * x * x) / 1.05488
        assert abs(float(d[mid].std()) / sd_mid - 1) < 0.1
        assert g_expect > 0
    # programming noise is drawn once: re-reading does not change the conductances
    g_before = chip.gp[0].clone()
    chip.relax(torch.rand(2, 200, dtype=torch.float64), n_steps=3)
    assert torch.equal(g_before, chip.gp[0])


def test_drift_law_and_compensation():
    net = _net()
    spec = AnalogSpec(drift_nu=0.06, drift_t0_s=2.0)
    c0 = AnalogCrossbarMLP(net, spec, seed=0)
    ct = AnalogCrossbarMLP(net, spec, seed=0, sim=AnalogSimConfig(t_inference_s=200.0))
    for i in range(net.n_layers):
        np.testing.assert_allclose(ct.gp[i].numpy(), (c0.gp[i] * 100.0 ** -0.06).numpy(), **F64_VS_F64)
    cc = AnalogCrossbarMLP(net, spec, seed=0, sim=AnalogSimConfig(t_inference_s=200.0, drift_compensation=True))
    for (w, b), (w0, b0) in zip(cc.effective_weights(), c0.effective_weights()):
        np.testing.assert_allclose(w.numpy(), w0.numpy(), **F64_VS_F64)


def test_stuck_devices_fraction_values_and_ignore_updates():
    net = _net((100, 60, 10))
    chip = AnalogCrossbarMLP(net, AnalogSpec(stuck_at_gmin_frac=0.04, stuck_at_gmax_frac=0.06), seed=2)
    assert abs(chip.stuck_fraction() - 0.10) < 0.01
    st = torch.cat([s.flatten() for s in chip.stuck_p])
    g = torch.cat([s.flatten() for s in chip.gp])
    assert torch.all(g[st == 1] == 0.0) and torch.all(g[st == 2] == 1.0)
    assert abs(float((st == 2).double().mean()) - 0.06) < 0.01
    before = [t.clone() for t in chip.gp]
    chip.apply_update([torch.full_like(t, 0.01) for t in chip.gp])
    for b, a, s in zip(before, chip.gp, chip.stuck_p):
        assert torch.equal(b[s != 0], a[s != 0])
        assert bool((a[s == 0] != b[s == 0]).any())


def test_dac_and_adc_quantise_and_clip():
    om = torch.tensor([[1.0, 0.5, 0.0]], dtype=torch.float64)  # weights 1, 0.5; bias 0
    u = torch.tensor([[0.3, 0.9]], dtype=torch.float64)
    y = _read_torch(om, u, False, 0, 0, 0, 0.0, 3, 0, 1.0, 1.0)  # DAC 2 bits: levels k/3
    np.testing.assert_allclose(y.numpy(), [[1 / 3 + 0.5]], **F64_VS_F64)
    y = _read_torch(om, u, False, 0, 0, 0, 0.0, 0, 3, 0.6 / 3, 1.0)  # ADC 3 bits, range 0.6: clips
    np.testing.assert_allclose(y.numpy(), [[0.6]], **F64_VS_F64)


def test_insitu_eqprop_on_a_clean_chip_equals_float_eqprop():
    net = _net()
    x, y = _data()
    chip = AnalogCrossbarMLP(net, AnalogSpec(), seed=0)
    g = chip.eqprop_grads(x, y, beta=0.2, n_free_steps=30, n_nudge_steps=10)
    ref = net.eqprop_grads(x, y, beta=0.2, mode="symmetric", n_free_steps=30, n_nudge_steps=10)
    for i, gi in enumerate(g):
        np.testing.assert_allclose(gi[:, :-1].numpy(), ref[f"layers.{i}.weight"].numpy(), **F64_VS_F64)
        np.testing.assert_allclose(gi[:, -1].numpy(), ref[f"layers.{i}.bias"].numpy(), **F64_VS_F64)
    w_before = [w.clone() for w, _ in chip.effective_weights()]
    chip.eqprop_update(x, y, lr=0.01, beta=0.2, n_free_steps=30, n_nudge_steps=10)
    for (w, _), wb, gi in zip(chip.effective_weights(), w_before, g):
        np.testing.assert_allclose((w - wb).numpy(), (-0.01 * gi[:, :-1]).numpy(), rtol=1e-9, atol=1e-12)


def test_adc_range_for_covers_preactivations():
    net = _net()
    r = adc_range_for(net, 2.0)
    w_max = [float(torch.cat([l.weight.detach().abs().flatten(), l.bias.detach().abs()]).max()) for l in net.layers]
    assert all(r * w >= 2.0 - 1e-12 for w in w_max)


@pytest.mark.parametrize("kwargs,match", [
    ({"analog": None}, "quant.AnalogSpec"),
    ({"backend": "cuda"}, "backend"),
    ({"analog": AnalogSpec(adc_bits=1)}, "adc_bits"),
    ({"seed": -1}, "seed"),
    ({"weights": "int9"}, "int9"),
])
def test_bad_construction_raises_value_error(kwargs, match):
    args = {"analog": AnalogSpec(), **kwargs}
    with pytest.raises(ValueError, match=match):
        AnalogCrossbarMLP(_net(), args.pop("analog"), **args)


def test_bad_inputs_raise_value_error():
    chip = AnalogCrossbarMLP(_net(), AnalogSpec(), seed=0)
    with pytest.raises(ValueError, match="expected"):
        chip.relax(torch.rand(3, 5, dtype=torch.float64))
    with pytest.raises(ValueError, match="targets y"):
        chip.relax(torch.rand(3, 12, dtype=torch.float64), beta=0.1)
    with pytest.raises(ValueError, match="prog_noise_model"):
        AnalogSimConfig(prog_noise_model="gauss")
    with pytest.raises(ValueError, match="unknown keys"):
        AnalogSimConfig.from_dict({"t_inference": 3})


# ------------------------------------------------------------------ generic terms (energy-model protocol)
def _skip_net(sizes=(12, 9, 7, 4), seed=0):
    from models.skip_mlp import SkipEqPropMLP
    return SkipEqPropMLP(EqPropConfig(sizes=sizes), seed=seed).double()


def test_skip_model_maps_one_more_array_and_matches_float_dynamics_and_grads():
    net = _skip_net()
    x, y = _data()
    chip = AnalogCrossbarMLP(net, AnalogSpec(), seed=0)
    assert chip.n_arrays == net.n_layers + 1 and chip.arrays[-1].weight == "skip.weight"
    assert not chip.arrays[-1].has_bias and chip.omega(net.n_layers).shape == (4, 12)
    s, _ = chip.relax(x, n_steps=25)
    ref, _ = net.free_phase(x, n_steps=25)
    for a, b in zip(s, ref):
        np.testing.assert_allclose(a.numpy(), b.numpy(), **F64_VS_F64)
    g = chip.eqprop_grads(x, y, beta=0.2, n_free_steps=30, n_nudge_steps=10)
    gref = net.eqprop_grads(x, y, beta=0.2, mode="symmetric", n_free_steps=30, n_nudge_steps=10)
    np.testing.assert_allclose(g[-1].numpy(), gref["skip.weight"].numpy(), **F64_VS_F64)
    for i in range(net.n_layers):
        np.testing.assert_allclose(g[i][:, -1].numpy(), gref[f"layers.{i}.bias"].numpy(), **F64_VS_F64)
    # the skip array matters: zeroing it changes the output
    w = chip.target_weights()
    w[-1] = torch.zeros_like(w[-1])
    chip.program(w)
    assert not torch.allclose(chip.relax(x, n_steps=25)[0][-1], s[-1])


def test_skip_model_torch_and_numba_paths_agree():
    net = _skip_net()
    x, y = _data()
    chips = [AnalogCrossbarMLP(net, NOISY, weights="int8", sim=NOISY_SIM, seed=3, backend=b) for b in ("torch", "numba")]
    st, sn = (c.relax(x, n_steps=12)[0] for c in chips)
    for a, b in zip(st, sn):
        np.testing.assert_allclose(a.numpy(), b.numpy(), **F64_VS_F64)
    for c in chips:
        c.eqprop_update(x, y, lr=0.05, beta=0.5, n_free_steps=8, n_nudge_steps=4)
    for a, b in zip(chips[0].gp, chips[1].gp):
        np.testing.assert_allclose(a.numpy(), b.numpy(), **RNG_NORMAL_F64)


def test_unsupported_term_raises_naming_backend_term_and_supported():
    from dataclasses import dataclass

    from models.engine import UnsupportedError

    @dataclass(frozen=True)
    class Attention:
        node: int

        @property
        def nodes(self):
            return (self.node,)

    net = _net()
    net.terms = net.terms + [Attention(node=1)]
    with pytest.raises(UnsupportedError, match=r"'analog crossbar'.*Attention\(node=1\).*Bias, ConvPool, Dense"):
        AnalogCrossbarMLP(net, AnalogSpec(), seed=0)


@pytest.mark.parametrize("mode", ["one_sided", "random_sign"])
def test_nudging_modes_follow_the_engine(mode):
    net = _net()
    x, y = _data()
    chip = AnalogCrossbarMLP(net, AnalogSpec(), seed=0)
    g = chip.eqprop_grads(x, y, beta=0.2, mode=mode, n_free_steps=20, n_nudge_steps=8,
                          generator=torch.Generator().manual_seed(4))
    ref = net.eqprop_grads(x, y, beta=0.2, mode=mode, n_free_steps=20, n_nudge_steps=8,
                           generator=torch.Generator().manual_seed(4))
    np.testing.assert_allclose(g[0][:, :-1].numpy(), ref["layers.0.weight"].numpy(), **F64_VS_F64)
    with pytest.raises(ValueError, match="allowed"):
        chip.eqprop_grads(x, y, beta=0.2, mode="two_sided")


def test_fused_read_noise_draws_equal_quant_rng():
    """hwsim.analog's numba-fused read-noise normals (the hot path of a noisy run) == quant.rng.normal_f64
    up to libm rounding (<= a few ulp, as the numba twin of every other draw)."""
    from hwsim.analog import _index, _normal_torch
    from quant import rng

    for seed, step, tid in ((0, 0, 0), (7, 123, 2**20 + 5), (2**31 + 3, 99, 12345)):
        a = _normal_torch(seed, step, tid, (37, 53), "cpu")
        b = rng.normal_f64(seed, step, tid, _index((37, 53), "cpu"))
        assert a.shape == b.shape and a.dtype == torch.float64
        np.testing.assert_allclose(a.numpy(), b.numpy(), **RNG_NORMAL_F64)

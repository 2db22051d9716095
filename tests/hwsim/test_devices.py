"""Pulsed device update models (hwsim.devices): limits, symmetry, pulse counting, variations, paired
seeds numba vs torch, and their use by the crossbar's in-situ update."""
import dataclasses

import numpy as np
import pytest
import torch

from hwsim import devices
from hwsim.analog import AnalogCrossbarMLP, AnalogSimConfig
from hwsim.devices import device_params, pulse_update_numba, pulse_update_torch, response_curve
from models.eqprop_mlp import EqPropConfig, EqPropMLP
from quant import AnalogSpec
from quant.formats import DEVICE_MODELS
from quant.presets import DEVICE_PRESETS, with_device

PULSED = [m for m in DEVICE_MODELS if m != "ideal"]
VARIED = dict(dw_min=0.02, up_down=0.2, dw_min_dtod=0.3, dw_min_std=0.3, up_down_dtod=0.05, gamma_up=0.5,
              gamma_down=0.7, pow_gamma=1.5, pow_gamma_dtod=0.1, pow_up_down=0.1, max_pulses=40)


def _update(backend, spec, g, d, g_lo=0.1, step=3, k=1, side=1, seed=7):
    p = device_params(spec, seed, k, side, g.shape)
    fn = pulse_update_torch if backend == "torch" else pulse_update_numba
    return fn(g, d, p, spec, g_lo, seed, step, k, side)


@pytest.mark.parametrize("model", PULSED)
def test_paired_seeds_numba_equals_torch(model):
    spec = AnalogSpec(device_model=model, **VARIED)
    gen = torch.Generator().manual_seed(0)
    g = 0.1 + 0.9 * torch.rand(13, 17, generator=gen, dtype=torch.float64)
    d = 0.3 * torch.randn(13, 17, generator=gen, dtype=torch.float64)   # up to ~40 pulses, both signs
    a, b = _update("torch", spec, g, d), _update("numba", spec, g, d)
    assert torch.allclose(a, b, rtol=0, atol=1e-13), (a - b).abs().max()
    assert not torch.equal(a, g) and bool(((a >= 0.1) & (a <= 1.0)).all())
    ra, rb = response_curve(spec, 25, n_devices=4), response_curve(spec, 25, n_devices=4, backend="numba")
    assert np.allclose(ra, rb, rtol=0, atol=1e-13)
    # another seed draws other devices and pulses
    assert not torch.allclose(a, _update("torch", spec, g, d, seed=8))


def test_constant_step_exact_pulses_and_hard_bounds():
    spec = AnalogSpec(device_model="constant_step", dw_min=0.1)
    r = response_curve(spec, 12, n_devices=1)[:, 0]
    assert np.allclose(r[:11], np.arange(11) * 0.1) and np.allclose(r[11:13], 1.0)   # clipped at g_max
    assert np.allclose(r[-1], 0.0) and np.allclose(r[13:24], 1.0 - 0.1 * np.arange(1, 12).clip(0, 10))


def test_symmetry_and_asymmetry_of_up_down():
    g = torch.full((1, 1000), 0.5, dtype=torch.float64)
    sym = AnalogSpec(device_model="constant_step", dw_min=0.01)
    asym = dataclasses.replace(sym, up_down=0.2)
    for spec, net in ((sym, 0.0), (asym, 5 * 0.2 * 0.01)):
        up = _update("torch", spec, g, torch.full_like(g, 0.05), g_lo=0.0)
        back = _update("torch", spec, up, torch.full_like(g, -0.05), g_lo=0.0, step=4)
        assert torch.allclose(up, torch.full_like(g, 0.55))   # 5 full-size up pulses
        assert torch.allclose(back - g, torch.full_like(g, net), atol=1e-12)   # down steps 1 - up_down smaller


def test_pulse_count_stochastic_rounding_is_unbiased_and_capped():
    spec = AnalogSpec(device_model="constant_step", dw_min=0.01, max_pulses=31)
    g = torch.zeros(1, 20000, dtype=torch.float64)
    out = _update("torch", spec, g, torch.full_like(g, 0.025), g_lo=0.0)
    n = torch.round(out / 0.01)
    assert set(n.unique().tolist()) == {2.0, 3.0} and abs(float(n.mean()) - 2.5) < 0.02
    big = _update("numba", spec, g, torch.full_like(g, 0.9), g_lo=0.0)
    assert torch.allclose(big, torch.full_like(g, 0.31))   # capped at 31 pulses
    tiny = _update("torch", spec, g, torch.full_like(g, 0.001), g_lo=0.0)
    assert abs(float((tiny > 0).double().mean()) - 0.1) < 0.01   # a tenth of a step: one pulse in ten


def test_small_dw_min_converges_to_ideal_update():
    gen = torch.Generator().manual_seed(1)
    g = 0.2 + 0.6 * torch.rand(30, 30, generator=gen, dtype=torch.float64)
    d = 0.05 * torch.randn(30, 30, generator=gen, dtype=torch.float64)
    for dw, tol in ((0.01, 0.0101), (1e-4, 1.01e-4)):
        spec = AnalogSpec(device_model="constant_step", dw_min=dw, max_pulses=65535)
        assert float((_update("numba", spec, g, d, g_lo=0.0) - (g + d)).abs().max()) <= tol


def test_state_dependent_steps_match_the_formulas():
    x = torch.tensor([[0.0, 0.25, 0.5, 0.75, 1.0]], dtype=torch.float64)
    one = torch.full_like(x, 0.01)
    s = 0.01
    cases = {
        "soft_bounds": (s * 2 * (1 - x), s * 2 * x),
        "linear_step": (s * (1 - 0.5 * (2 * x - 1)), s * (1 + 0.5 * (2 * x - 1))),
        "pow_step": (s * (1 - x) ** 2, s * x ** 2),
        "exp_step": (s * (1 - 0.00081 * torch.exp(12.44625 * (0.244 * (2 * x - 1) + 0.2425))).clamp_min(0),
                     s * (1 - 0.36833 * torch.exp(-12.78785 * (0.244 * (2 * x - 1) + 0.2425))).clamp_min(0)),
    }
    for model, (up, down) in cases.items():
        spec = AnalogSpec(device_model=model, dw_min=s, gamma_up=0.5, gamma_down=0.5, pow_gamma=2.0)
        got_up = _update("torch", spec, x, one, g_lo=0.0) - x
        got_down = x - _update("torch", spec, x, -one, g_lo=0.0)
        assert torch.allclose(got_up, torch.minimum(up, 1 - x), atol=1e-12), model
        assert torch.allclose(got_down, torch.minimum(down, x), atol=1e-12), model
    # soft bounds: the step vanishes at the bound it moves toward
    r = response_curve(AnalogSpec(device_model="soft_bounds", dw_min=0.02), 400)[:, 0]
    assert r[400] < 1.0 and r[400] > 0.99 and np.all(np.diff(r[:401]) > 0)


def test_device_to_device_and_cycle_to_cycle_spread():
    spec = AnalogSpec(device_model="constant_step", dw_min=0.01, dw_min_dtod=0.3, up_down_dtod=0.05)
    s_up, s_down, _, _ = device_params(spec, 0, 0, 0, (100, 100))
    assert abs(float(s_up.std()) / 0.01 - (0.3 ** 2 + 0.05 ** 2) ** 0.5) < 0.01
    assert abs(float((s_up - s_down).std()) / 0.01 - 2 * 0.05) < 0.005
    assert torch.equal(s_up, device_params(spec, 0, 0, 0, (100, 100))[0])   # fixed per chip
    c2c = AnalogSpec(device_model="constant_step", dw_min=0.01, dw_min_std=0.3)
    g = torch.full((1, 20000), 0.5, dtype=torch.float64)
    one = _update("torch", c2c, g, torch.full_like(g, 0.01), g_lo=0.0) - g
    assert abs(float(one.std()) / 0.01 - 0.3) < 0.01 and abs(float(one.mean()) / 0.01 - 1) < 0.01
    two = _update("torch", c2c, g, torch.full_like(g, 0.01), g_lo=0.0, step=4) - g
    assert not torch.equal(one, two)   # fresh draws every update


def _chip(model, backend, **kw):
    net = EqPropMLP(EqPropConfig(sizes=(12, 8, 3)), seed=0).double()
    spec = with_device(AnalogSpec(g_min_uS=1.0, stuck_at_gmin_frac=0.1, stuck_at_gmax_frac=0.1, read_noise_std=0.01),
                       model, **kw)
    return AnalogCrossbarMLP(net, spec, seed=3, backend=backend)


@pytest.mark.parametrize("model", sorted(DEVICE_PRESETS))
def test_chip_update_paired_backends_and_stuck_devices(model):
    x = torch.rand(5, 12, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 0, 1])
    chips = [_chip(model, b, dw_min=0.01) if model != "ideal" else _chip(model, b) for b in ("torch", "numba")]
    before = [[g.clone() for g in c.gp + c.gm] for c in chips]
    for c in chips:
        for _ in range(3):
            c.eqprop_update(x, y, lr=0.5, beta=0.5, n_free_steps=10, n_nudge_steps=4)
    for c, b in zip(chips, before):
        moved = False
        for g0, g1, st in zip(b, c.gp + c.gm, c.stuck_p + c.stuck_m):
            assert torch.equal(g0[st != 0], g1[st != 0])   # stuck conductances never move
            moved |= not torch.equal(g0[st == 0], g1[st == 0])
        assert moved
    for a, b in zip(chips[0].gp + chips[0].gm, chips[1].gp + chips[1].gm):
        assert torch.allclose(a, b, rtol=0, atol=1e-12)


def test_chip_torch_kernel_matches_numba_kernel(monkeypatch):
    """The crossbar on the CPU runs the numba kernel for both backends; forcing the torch kernel gives
    the same chip."""
    x = torch.rand(5, 12, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 0, 1])
    ref = _chip("soft_bounds", "torch", dw_min=0.01)
    ref.eqprop_update(x, y, lr=0.5, beta=0.5, n_free_steps=10, n_nudge_steps=4)
    monkeypatch.setitem(devices.PULSE_UPDATES, "numba", devices.pulse_update_torch)
    alt = _chip("soft_bounds", "torch", dw_min=0.01)
    alt.eqprop_update(x, y, lr=0.5, beta=0.5, n_free_steps=10, n_nudge_steps=4)
    for a, b in zip(ref.gp + ref.gm, alt.gp + alt.gm):
        assert torch.allclose(a, b, rtol=0, atol=1e-12)


def test_bad_device_settings_are_refused():
    with pytest.raises(ValueError, match="device_model='rram' is invalid"):
        AnalogSpec(device_model="rram")
    with pytest.raises(ValueError, match="dw_min=0.0 is invalid"):
        AnalogSpec(dw_min=0.0)
    with pytest.raises(ValueError, match="up_down=1.5 is invalid"):
        AnalogSpec(up_down=1.5)
    with pytest.raises(ValueError, match="gamma_up=2.0 is invalid"):
        AnalogSpec(gamma_up=2.0)
    with pytest.raises(ValueError, match="max_pulses=0 is invalid"):
        AnalogSpec(max_pulses=0)
    with pytest.raises(ValueError, match="set AnalogSpec.dw_min_std instead"):
        AnalogCrossbarMLP(EqPropMLP(EqPropConfig(sizes=(4, 3, 2)), seed=0), AnalogSpec(device_model="soft_bounds"),
                          sim=AnalogSimConfig(update_noise_std=0.1))
    with pytest.raises(ValueError, match="needs a pulsed device_model"):
        response_curve(AnalogSpec(), 3)


def test_spec_json_round_trip_and_old_records_load():
    spec = with_device(AnalogSpec(), "pow_step", up_down=0.3)
    assert AnalogSpec.from_dict(spec.to_dict()) == spec
    old = {k: v for k, v in AnalogSpec(read_noise_std=0.01).to_dict().items()
           if k in ("g_max_uS", "g_min_uS", "read_noise_std", "adc_range")}
    assert AnalogSpec.from_dict(old).device_model == "ideal"

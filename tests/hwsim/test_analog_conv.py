"""hwsim.analog: conv EqProp (models.conv.ConvPool) on crossbars via im2col: noiseless chip == float
model, torch == numba on paired seeds with noise, in-situ EqProp follows the float gradient."""
import copy
import dataclasses

import numpy as np
import pytest
import torch

from hwsim.analog import AnalogCrossbarMLP, AnalogSimConfig
from models.conv import ConvConfig, ConvEqProp
from quant import AnalogSpec, get_preset, quantize_weights
from quant.tolerances import F64_VS_F64, RNG_NORMAL_F64, state_lsb_atol

NOISY = AnalogSpec(g_min_uS=1.0, prog_noise_std=0.05, read_noise_std=0.02, drift_nu=0.05, drift_t0_s=1.0,
                   stuck_at_gmin_frac=0.05, stuck_at_gmax_frac=0.05, dac_bits=None, adc_bits=None)
NOISY_SIM = AnalogSimConfig(prog_noise_model="pcm_poly", t_inference_s=100.0, drift_nu_std=0.01,
                            drift_compensation=True, update_noise_std=0.1)
NAMES = ("convs.0", "convs.1", "fc")


def _net(update="async", padding=1):
    # padding 1: 9x9 -> 4x4 (ragged conv edge dropped) -> 2x2; padding 0: 12x12 -> 5x5 -> 1x1 (ragged)
    hw = 9 if padding else 12
    cfg = ConvConfig(in_shape=(1, hw, hw), channels=(3, 4), kernel=3, padding=padding, pool=2, n_out=3, update=update)
    return ConvEqProp(cfg, seed=0).double()


def _data(b=4, seed=1, n=81):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, n, generator=g, dtype=torch.float64), torch.randint(0, 3, (b,), generator=g)


def _aug(net, ref, k, rows):
    n = NAMES[k]
    return torch.cat([ref[n + ".weight"].reshape(rows, -1), ref[n + ".bias"][:, None]], dim=1)


def test_conv_arrays_are_im2col_rows_with_a_bias_column():
    net = _net()
    chip = AnalogCrossbarMLP(net, AnalogSpec(), weights="int4", seed=0)
    assert [chip.array_shape(k) for k in range(chip.n_arrays)] == [(3, 1 * 9 + 1), (4, 3 * 9 + 1), (3, 16 + 1)]
    (w0, b0) = chip.effective_weights()[0]
    q = quantize_weights(net.convs[0].weight.detach().reshape(3, -1), get_preset("int4")).dequantize()
    np.testing.assert_allclose(w0.numpy(), q.numpy(), **F64_VS_F64)      # per output channel = per row
    np.testing.assert_allclose(b0.numpy(), net.convs[0].bias.detach().numpy(), **F64_VS_F64)


@pytest.mark.parametrize("update,padding", [("async", 1), ("sync", 0)])
def test_noiseless_conv_chip_matches_float_model_free_nudged_and_grads(update, padding):
    net = _net(update, padding)
    x, y = _data(n=net.n_in)
    chip = AnalogCrossbarMLP(net, AnalogSpec(), seed=0)
    s, _ = chip.relax(x, n_steps=20)
    ref, _ = net.free_phase(x, n_steps=20)
    for a, b in zip(s, ref):
        np.testing.assert_allclose(a.numpy(), b.numpy(), **F64_VS_F64)
    sn, _ = chip.relax(x, s, beta=0.3, y=y, n_steps=8)
    refn, _ = net.relax(x, ref, beta=0.3, y=y, n_steps=8)
    for a, b in zip(sn, refn):
        np.testing.assert_allclose(a.numpy(), b.numpy(), **F64_VS_F64)
    if update == "sync":
        return
    g = chip.eqprop_grads(x, y, beta=0.2, n_free_steps=20, n_nudge_steps=8)
    rg = net.eqprop_grads(x, y, beta=0.2, n_free_steps=20, n_nudge_steps=8)
    for k, gk in enumerate(g):
        np.testing.assert_allclose(gk.numpy(), _aug(net, rg, k, gk.shape[0]).numpy(), rtol=1e-9, atol=1e-12)
    w_before = [w.clone() for w, _ in chip.effective_weights()]
    chip.apply_update([-0.01 * gk for gk in g])
    for k, ((w, _), wb, gk) in enumerate(zip(chip.effective_weights(), w_before, g)):
        free = ((chip.gp[k] < 1.0) & (chip.gm[k] < 1.0))[:, :-1]   # a device at g_max saturates
        assert float(free.double().mean()) > 0.9
        np.testing.assert_allclose((w - wb)[free].numpy(), (-0.01 * gk[:, :-1])[free].numpy(), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("converters", [False, True])
def test_conv_torch_and_numba_paths_draw_the_same_noise(converters):
    spec = dataclasses.replace(NOISY, dac_bits=6, adc_bits=7, adc_range=4.0) if converters else NOISY
    net = _net()
    x, y = _data(b=3)
    chips = [AnalogCrossbarMLP(net, spec, weights="int8", sim=NOISY_SIM, seed=5, backend=b) for b in ("torch", "numba")]
    t, n = chips
    for i in range(t.n_arrays):
        np.testing.assert_array_equal(t.stuck_p[i].numpy(), n.stuck_p[i].numpy())
        np.testing.assert_allclose(t.gp[i].numpy(), n.gp[i].numpy(), **RNG_NORMAL_F64)
        np.testing.assert_allclose(t.gm[i].numpy(), n.gm[i].numpy(), **RNG_NORMAL_F64)
    st, sn = (c.relax(x, n_steps=8)[0] for c in chips)
    tol = state_lsb_atol(1.0 / (2 ** 6 - 1)) if converters else F64_VS_F64
    for a, b in zip(st, sn):
        np.testing.assert_allclose(a.numpy(), b.numpy(), **tol)
    assert float(st[0].std()) > 0   # the chip did something
    for c in chips:
        c.eqprop_update(x, y, lr=0.05, beta=0.5, n_free_steps=6, n_nudge_steps=3)
    for i in range(t.n_arrays):
        np.testing.assert_allclose(t.gp[i].numpy(), n.gp[i].numpy(), **(tol if converters else RNG_NORMAL_F64))
        np.testing.assert_allclose(t.gm[i].numpy(), n.gm[i].numpy(), **(tol if converters else RNG_NORMAL_F64))


def _onchip_float(net, chip):
    """The float model holding the chip's effective weights (what its in-situ gradient estimates)."""
    m = copy.deepcopy(net)
    with torch.no_grad():
        for (w, b), n in zip(chip.effective_weights(), NAMES):
            m.get_parameter(n + ".weight").copy_(w.reshape(m.get_parameter(n + ".weight").shape))
            m.get_parameter(n + ".bias").copy_(b)
    return m


def test_insitu_conv_update_follows_float_eqprop_gradient():
    """5 % programming noise, INT8, read noise 0.2 %: the chip's EqProp gradient (states relaxed on
    the chip, routing reads) against float EqProp on the weights the chip holds (cosine per array)."""
    net = _net()
    x, y = _data(b=8)
    spec = AnalogSpec(prog_noise_std=0.05, read_noise_std=0.002)
    chip = AnalogCrossbarMLP(net, spec, weights="int8", seed=3)
    ref = _onchip_float(net, chip).eqprop_grads(x, y, beta=0.3, n_free_steps=20, n_nudge_steps=8)
    g = chip.eqprop_grads(x, y, beta=0.3, n_free_steps=20, n_nudge_steps=8)
    cos = [float(torch.nn.functional.cosine_similarity(gk.flatten(), _aug(net, ref, k, gk.shape[0]).flatten(), dim=0))
           for k, gk in enumerate(g)]
    assert min(cos) > 0.9, cos   # measured (0.953, 0.988, 0.99997)
    # a step along it lowers the float loss of the chip's weights
    before = _onchip_float(net, chip)
    chip.apply_update([-0.5 * gk for gk in g])
    after = _onchip_float(net, chip)

    def loss(m):
        s, _ = m.free_phase(x, n_steps=20)
        return float(m.cost(s[-1], y).mean())

    assert loss(after) < loss(before)

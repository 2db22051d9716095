"""Integer ConvPool (hwsim.fixed_point.ConvPoolInt): numba kernels == torch int64 mirror == float conv
on integer values, tie rule of the max-pool routing, overflow, presets, roundings, schedules, MNIST."""
import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import quant
from hwsim.fixed_point import (ConvGeometry, FixedPointMLP, conv_feedback_int, conv_feedback_operand, conv_operands,
                               conv_pool_int)
from hwsim.torch_mirror import conv_feedback_t, conv_int_t, pool_first_max_t, torch_relax
from models.conv import ConvConfig, ConvEqProp, ConvPool, ConvPoolFloat
from models.energy import INPUT
from models.engine import UnsupportedError
from tracks.data import load_dataset


@pytest.fixture(autouse=True)
def _one_torch_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.mark.parametrize("in_shape,c_out,k,p,q", [((2, 9, 9), 3, 3, 0, 2), ((3, 8, 7), 4, 3, 1, 2),
                                                  ((1, 11, 11), 2, 5, 2, 3), ((2, 6, 6), 3, 2, 0, 1)])
def test_conv_primitives_equal_float_conv_pool_and_transpose_with_ties(in_shape, c_out, k, p, q):
    """Pooled accumulator, routing (first maximum in row-major order) and transposed conv: numba (float32,
    float64 and int64 products) == torch int64 mirror == models.conv.ConvPoolFloat on integer-valued float64
    tensors (exact, so torch.max_pool2d's own tie rule decides). Inputs with zero blocks and a few distinct
    values make integer ties frequent."""
    rs = np.random.default_rng(k * 10 + p)
    B = 6
    src = rs.choice([0, 0, 0, 1, 3, 128], size=(B, int(np.prod(in_shape))))
    src[:2, : src.shape[1] // 2] = 0  # all-zero windows: every position ties
    wq = rs.integers(-3, 4, size=(c_out, in_shape[0], k, k))
    geo = ConvGeometry(in_shape, c_out, k, p, q)
    t = ConvPool(post=0, pre=INPUT, weight="w", bias=None, in_shape=in_shape, kernel=k, padding=p, pool=q)
    W = torch.tensor(wq, dtype=torch.float64)
    xf = torch.tensor(src, dtype=torch.float64)
    y = ConvPoolFloat._conv(t, W, xf)
    pooled_f, idx_f = ConvPoolFloat._pool(t, y)
    Hc, Wc = geo.conv_shape
    if idx_f is None:
        idx_f = torch.arange(Hc * Wc).reshape(1, 1, Hc, Wc).expand(B, c_out, Hc, Wc)
    wcrop = (Wc // q) * q
    route_f = ((idx_f // wcrop) * Wc + idx_f % wcrop).reshape(B, -1).numpy()
    post = rs.integers(0, 129, size=(B, geo.n_out))
    post[:, ::3] = 0
    u = ConvPoolFloat._route(t, W, xf, torch.tensor(post, dtype=torch.float64))
    fb_f = F.conv_transpose2d(u, W, padding=p).reshape(B, -1).numpy()
    fq = np.ascontiguousarray(wq.transpose(1, 0, 2, 3))
    pooled_t, route_t = pool_first_max_t(conv_int_t(torch.tensor(src), torch.tensor(wq), geo), q)
    fb_t = conv_feedback_t(torch.tensor(post), route_t, torch.tensor(fq), geo)
    assert np.array_equal(pooled_t.numpy(), pooled_f.reshape(B, -1).numpy())
    assert np.array_equal(route_t.numpy(), route_f) and np.array_equal(fb_t.numpy(), fb_f)
    # product dtypes (float32 / float64 exact by the bound, int64), threaded and im2col variants
    for dt, par, method in ((np.float32, False, "direct"), (np.float64, False, "direct"), (np.int64, False, "direct"),
                            (np.float32, True, "direct"), (np.float32, False, "im2col")):
        pooled_n, route_n = conv_pool_int(src.astype(dt), conv_operands(wq), geo, dt, par, method)
        assert np.array_equal(pooled_n, pooled_t.numpy()) and np.array_equal(route_n, route_t.numpy())
    for max_post, fdt, par in ((128, np.float32, False), (2**20, np.int32, False), (2**40, np.int64, False),
                               (128, np.float32, True)):  # scatter operand types
        fr = conv_feedback_operand(fq, max_post, q)
        assert fr.dtype == fdt
        assert np.array_equal(conv_feedback_int(post.astype(np.float32), route_n, fr, geo, par), fb_t.numpy())
    assert (route_n[:2] % Wc == 0).any()  # zero windows route to their top-left corner


def _mnist(n=8):
    x, y = load_dataset("mnist", "test")
    return x[:n].astype(np.float64), y[:n].astype(np.int64)


def _net(update="async", channels=(4, 6), padding=0, seed=0, gain=2.0):
    return ConvEqProp(ConvConfig(in_shape=(1, 28, 28), channels=channels, kernel=5, padding=padding, n_out=10,
                                 update=update, init_gain=gain), seed=seed).double()


def _assert_same(fp, x, y, *, n_steps=10, seed=3, step_offset=0):
    """numba relax == torch mirror: free phase, then +beta and -beta from the free codes."""
    s0 = None
    out = []
    for beta in (0.0, 0.5, -0.25):
        kw = dict(beta=beta, y=y, n_steps=n_steps, seed=seed, step_offset=step_offset, record_trace=True)
        s_n, i_n = fp.relax(x, s0, **kw)
        s_t, i_t = torch_relax(fp, torch.tensor(x), s0 and [torch.tensor(a) for a in s0], **kw)
        for a, b in zip(s_n, s_t):
            assert np.array_equal(a, b.numpy())
        for f in ("steps", "converged", "cycling", "residual", "n_overflow"):
            assert np.array_equal(np.asarray(getattr(i_n, f)), np.asarray(getattr(i_t, f))), f
        assert i_n.trace == i_t.trace and i_n.n_steps == i_t.n_steps
        s0 = s_n if beta == 0.0 else s0
        out.append((s_n, i_n))
    return out


@pytest.mark.parametrize("preset", ["int8", "int4", "ternary"])
@pytest.mark.parametrize("rounding", ["nearest_even", "floor", "stochastic"])
def test_numba_equals_torch_mirror_on_mnist(preset, rounding):
    x, y = _mnist()
    for update, gran, padding in (("async", "per_channel", 0), ("sync", "per_tensor", 1)):
        spec = quant.get_preset(preset).replace(rounding=rounding)
        spec = spec.replace(weights=dataclasses.replace(spec.weights, granularity=gran))
        fp = FixedPointMLP.from_model(_net(update, padding=padding), spec)
        out = _assert_same(fp, fp.quantize_input(x), y)
        assert out[0][0][0].max() > 0 and out[0][0][1].max() > 0  # the conv layers are active
        if gran == "per_tensor":
            assert np.array_equal(fp.fb_codes[0], fp.w_codes[1].transpose(1, 0, 2, 3))


@pytest.mark.parametrize("mode", ["saturate", "wrap"])
def test_narrow_accumulator_really_overflows_and_both_paths_count_alike(mode):
    x, y = _mnist(8)
    spec = quant.get_preset("int8").replace(acc_bits=14, overflow=mode)
    fp = FixedPointMLP.from_model(_net(channels=(6, 8)), spec)
    (s, info), *_ = _assert_same(fp, fp.quantize_input(x), y)
    assert info.n_overflow[0] > 0 and info.n_overflow[1] > 0, info.n_overflow


def test_int8_conv_close_to_float_model():
    """Dequantised int8 codes vs the float64 ConvEqProp with the unquantised weights: one sweep from the
    float equilibrium (the semantics, within a few LSB) and the settled states (max-pool routing can
    switch on a one-LSB difference, so the elementwise bound is loose; measured mean 0.19-0.36 LSB)."""
    x, _ = _mnist(32)
    net = _net(channels=(6, 8), gain=1.0)
    fp = FixedPointMLP.from_model(net, quant.get_preset("int8"))
    xc = fp.quantize_input(x)
    xd = torch.tensor(fp.dequantize_states([xc])[0])
    s_i, info = fp.relax(xc, n_steps=60)
    s_f, _ = net.free_phase(xd, n_steps=60)
    assert info.converged.all()
    for a, b in zip(fp.dequantize_states(s_i), s_f):
        err = np.abs(a - b.numpy()) * 128
        assert err.mean() < 0.5 and err.max() <= 12, (err.mean(), err.max())
    assert np.mean(s_i[-1].argmax(1) == s_f[-1].numpy().argmax(1)) >= 0.9
    sq = [np.round(t.numpy() * 128).astype(np.int64) for t in s_f]
    s1, _ = fp.relax(xc, sq, n_steps=1, early_exit=False)
    with torch.no_grad():
        sf1 = net.step([torch.tensor(a / 128.0) for a in sq], net.drive(xd))
    for a, b in zip(s1, sf1):
        err = np.abs(a - b.numpy() * 128)
        assert err.mean() < 0.3 and err.max() <= 3, (err.mean(), err.max())


def test_non_chain_conv_coupling_is_refused():
    net = _net()
    net.terms = [dataclasses.replace(net.terms[1], post=1, pre=INPUT)] + net.terms[1:]
    with pytest.raises(UnsupportedError, match="chain coupling"):
        FixedPointMLP.from_model(net, quant.get_preset("int8"))

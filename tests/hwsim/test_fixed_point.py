"""numba fixed-point simulator vs the torch int64 mirror (BIT_EXACT), vs the float model, diagnostics, errors."""
from __future__ import annotations

import functools

import numpy as np
import pytest
import torch

import quant
from hwsim.fixed_point import FixedPointMLP, exact_dtype, exact_matmul, matmul_int64
from hwsim.torch_mirror import torch_predict, torch_quantize_input, torch_relax
from models.eqprop_mlp import EqPropConfig, EqPropMLP
from quant.tolerances import BIT_EXACT, state_lsb_atol
from tracks.data import load_dataset

SIZES = (784, 32, 16, 10)  # two hidden layers: async order 0, 2 then 1
N_IMAGES = 64
PRESETS = ("int8", "int4", "ternary")
ROUNDINGS = ("nearest_even", "floor", "stochastic")

# Closeness of the int8 dynamics to float64 (measured on the trained-like SIZES net below, 64 test
# images, 30 sweeps: max 1.95 LSB, mean 0.12 LSB per layer; argmax agreement 0.875): the bound we
# promise, in state LSBs.
INT8_MAX_LSB = 4.0
INT8_MEAN_LSB = 0.5
INT8_MIN_AGREEMENT = 0.8


def _mnist(n: int = N_IMAGES):
    x, y = load_dataset("mnist", "test")
    return x[:n], y[:n]


@functools.lru_cache(maxsize=None)
def _trained_state(sizes: tuple) -> tuple:
    """A few EqProp SGD steps on 300 real training images (weights with learned structure)."""
    x, y = load_dataset("mnist", "train")
    gen = torch.Generator().manual_seed(0)
    net = EqPropMLP(EqPropConfig(sizes=sizes), seed=0)
    xt, yt = torch.from_numpy(x[:300]), torch.from_numpy(y[:300])
    for a in range(0, 300, 50):
        g = net.eqprop_grads(xt[a:a + 50], yt[a:a + 50], beta=0.5, mode="symmetric", n_free_steps=15,
                             n_nudge_steps=6, generator=gen)
        with torch.no_grad():
            for name, p in net.named_parameters():
                p -= 0.2 * g[name]
    return tuple((k, v.clone()) for k, v in net.state_dict().items())


def _net(weights: str, sizes=SIZES, update: str = "async") -> EqPropMLP:
    net = EqPropMLP(EqPropConfig(sizes=sizes, update=update), seed=1)
    if weights == "trained":
        net.load_state_dict(dict(_trained_state(tuple(sizes))))
    return net


def _assert_same(s_numba, s_torch, info_n, info_t):
    assert len(s_numba) == len(s_torch)
    for a, b in zip(s_numba, s_torch):
        assert a.dtype == np.int64 and b.dtype == torch.int64
        np.testing.assert_allclose(a, b.numpy(), **BIT_EXACT)
        assert np.array_equal(a, b.numpy())
    for f in ("steps", "converged", "cycling", "n_overflow"):
        assert np.array_equal(getattr(info_n, f), getattr(info_t, f)), f
    assert info_n.n_steps == info_t.n_steps


def _phases(fp: FixedPointMLP, x_codes: np.ndarray, y: np.ndarray, seed: int):
    """Free phase, then +beta and -beta nudged phases from the free state, in both paths."""
    xt, yt = torch.from_numpy(x_codes), torch.from_numpy(y)
    s_f, i_f = fp.free_phase(x_codes, 12, seed=seed)
    t_f, j_f = torch_relax(fp, xt, n_steps=12, seed=seed)
    _assert_same(s_f, t_f, i_f, j_f)
    out = {"free": s_f}
    for beta in (0.5, -0.5):
        s_n, i_n = fp.relax(x_codes, s_f, beta=beta, y=y, n_steps=6, seed=seed, step_offset=12)
        t_n, j_n = torch_relax(fp, xt, t_f, beta=beta, y=yt, n_steps=6, seed=seed, step_offset=12)
        _assert_same(s_n, t_n, i_n, j_n)
        out[beta] = s_n
    return out


@pytest.mark.parametrize("update", ["async", "sync"])
@pytest.mark.parametrize("rounding", ROUNDINGS)
@pytest.mark.parametrize("preset", PRESETS)
def test_numba_matches_torch_mirror_trained(preset, rounding, update):
    spec = quant.get_preset(preset).replace(rounding=rounding)
    fp = FixedPointMLP.from_model(_net("trained", update=update), spec)
    x, y = _mnist()
    codes = fp.quantize_input(x, seed=5)
    assert np.array_equal(codes, torch_quantize_input(fp, torch.from_numpy(x), seed=5).numpy())
    out = _phases(fp, codes, y, seed=5)
    # the dynamics are not trivial: hidden states strictly inside (0, 1) and the nudge moves the output
    assert ((out["free"][0] > 0) & (out["free"][0] < fp.one_code)).any()
    assert not np.array_equal(out[0.5][-1], out["free"][-1])
    assert not np.array_equal(out[0.5][-1], out[-0.5][-1])
    # the nudge pulls the output towards the target (on average over the batch)
    tgt = (np.arange(10)[None] == y[:, None]) * fp.one_code
    assert np.abs(out[0.5][-1] - tgt).mean() < np.abs(out["free"][-1] - tgt).mean()
    p_n = fp.predict(x, n_steps=12, seed=5)
    p_t = torch_predict(fp, torch.from_numpy(x), n_steps=12, seed=5)
    assert np.array_equal(p_n, p_t.numpy())


@pytest.mark.parametrize("preset", PRESETS)
def test_numba_matches_torch_mirror_random_weights(preset):
    fp = FixedPointMLP.from_model(_net("random"), quant.get_preset(preset))
    x, y = _mnist()
    _phases(fp, fp.quantize_input(x), y, seed=0)


@pytest.mark.parametrize("rounding", ["nearest_even", "stochastic"])
def test_threaded_kernels_match_torch_mirror(rounding):
    fp = FixedPointMLP.from_model(_net("trained"), quant.get_preset("int8").replace(rounding=rounding))
    x, y = _mnist(32)
    codes = fp.quantize_input(x)
    for parallel in (True, False):
        s, info = fp.relax(codes, beta=0.5, y=y, n_steps=8, seed=1, parallel=parallel)
        t, tinfo = torch_relax(fp, torch.from_numpy(codes), beta=0.5, y=torch.from_numpy(y), n_steps=8, seed=1)
        _assert_same(s, t, info, tinfo)


@pytest.mark.parametrize("rounding", ["nearest_even", "stochastic"])
@pytest.mark.parametrize("overflow", ["saturate", "wrap"])
def test_accumulator_overflow_bit_exact(overflow, rounding):
    # 12-bit accumulators: the 784-input drive (up to 784 * 127 * 128) overflows for sure
    spec = quant.get_preset("int8").replace(acc_bits=12, overflow=overflow, rounding=rounding)
    net = _net("trained")
    fp = FixedPointMLP.from_model(net, spec)
    x, y = _mnist(16)
    out = _phases(fp, fp.quantize_input(x), y, seed=2)
    _, info = fp.free_phase(fp.quantize_input(x), 12, seed=2)
    assert info.n_overflow[0] > 0
    other = "wrap" if overflow == "saturate" else "saturate"
    s_other, _ = FixedPointMLP.from_model(net, spec.replace(overflow=other)).free_phase(fp.quantize_input(x), 12, seed=2)
    assert not np.array_equal(out["free"][0], s_other[0])


def test_broken_rounding_is_detected():
    """The equality check can fail: a mirror built with another rounding mode disagrees."""
    net = _net("trained")
    x, _ = _mnist(32)
    fp = FixedPointMLP.from_model(net, quant.get_preset("int8"))
    broken = FixedPointMLP.from_model(net, quant.get_preset("int8").replace(rounding="floor"))
    codes = fp.quantize_input(x)
    s, _ = fp.free_phase(codes, 12)
    t, _ = torch_relax(broken, torch.from_numpy(codes), n_steps=12)
    assert not all(np.array_equal(a, b.numpy()) for a, b in zip(s, t))


def test_int8_close_to_float_model():
    """Dequantised int8 states vs the float64 EqPropMLP with the same (unquantised) weights."""
    net = _net("trained").double()
    spec = quant.get_preset("int8")
    fp = FixedPointMLP.from_model(net, spec)
    x, _ = _mnist()
    s_int, info = fp.free_phase(fp.quantize_input(x), 30)
    s_flt, _ = net.free_phase(torch.from_numpy(x).double(), n_steps=30)
    assert info.converged.all()
    lsb = spec.state.lsb
    for a, b in zip(fp.dequantize_states(s_int), s_flt):
        np.testing.assert_allclose(a, b.numpy(), **state_lsb_atol(lsb, INT8_MAX_LSB))
        assert np.abs(a - b.numpy()).mean() <= INT8_MEAN_LSB * lsb
    # predictions (output margins of this briefly trained net are only a few LSB)
    agree = s_int[-1].argmax(1) == s_flt[-1].numpy().argmax(1)
    assert agree.mean() >= INT8_MIN_AGREEMENT


def _cycle_net(update: str) -> EqPropMLP:
    """s0 = rho(1 - s1), s1 = rho(1 - s0): sync sweeps from 0 flip between (0,0) and (1,1)."""
    net = EqPropMLP(EqPropConfig(sizes=(1, 1, 1), update=update), seed=0)
    with torch.no_grad():
        net.layers[0].weight.zero_()
        net.layers[0].bias.fill_(1.0)
        net.layers[1].weight.fill_(-1.0)
        net.layers[1].bias.fill_(1.0)
    return net


def test_limit_cycle_sync_detected_async_settles():
    spec = quant.get_preset("int8")
    x = np.zeros((3, 1), dtype=np.int64)
    fp = FixedPointMLP.from_model(_cycle_net("sync"), spec)
    s, info = fp.relax(x, n_steps=9)
    _, info_t = torch_relax(fp, torch.from_numpy(x), n_steps=9)
    assert info.cycling.all() and not info.converged.any() and (info.steps == -1).all()
    assert np.array_equal(info.cycling, info_t.cycling)
    assert [int(t[0, 0]) for t in s] == [128, 128]  # odd number of sweeps: (1, 1)
    _, finfo = _cycle_net("sync").relax(torch.zeros(3, 1), n_steps=9, tol=1e-9)
    assert finfo.cycling.all()  # the float model cycles too
    fa = FixedPointMLP.from_model(_cycle_net("async"), spec)
    s, info = fa.relax(x, n_steps=9)
    assert info.converged.all() and not info.cycling.any() and (info.steps == 2).all()
    assert [int(t[0, 0]) for t in s] == [128, 0]


def test_feedback_codes_per_tensor_symmetric_per_channel_close():
    net = _net("trained")
    fp_t = FixedPointMLP.from_model(net, quant.get_preset("int8").replace(
        weights=quant.WeightFormat("int8", granularity="per_tensor")))
    for i, fb in enumerate(fp_t.fb_codes):
        assert np.array_equal(fb, fp_t.w_codes[i + 1].T)
    fp_c = FixedPointMLP.from_model(net, quant.get_preset("int8"))
    for i, fb in enumerate(fp_c.fb_codes):
        w_t = net.layers[i + 1].weight.detach().double().numpy().T
        q = quant.quantize_weights(w_t, quant.get_preset("int8"))
        assert np.array_equal(fb, q.codes)
        assert np.all(np.abs(q.dequantize() - w_t) <= q.scale / 2 * (1 + 1e-12))


@pytest.mark.parametrize("n_out,n_in", [(10, 784), (200, 10), (100, 100)])  # rowdot, axpy, BLAS
def test_exact_matmul_all_paths_agree(n_out, n_in):
    rs = np.random.RandomState(0)
    a = rs.randint(0, 129, size=(7, n_in))
    w = rs.randint(-127, 128, size=(n_out, n_in))
    ref = a @ w.T  # numpy int64: exact
    by = FixedPointMLP._by_dtype(w)
    assert exact_dtype(int(np.abs(w).sum(1).max()) * 128) is np.float32
    for dt in (np.float32, np.float64, np.int64):
        for parallel in (False, True):
            got = exact_matmul(a.astype(np.float32), by, dt, parallel)
            assert np.array_equal(got.astype(np.int64), ref), (dt, parallel)
    np.testing.assert_array_equal(matmul_int64(a, np.ascontiguousarray(w.T)), ref)


def test_predict_accepts_codes_and_chunks():
    fp = FixedPointMLP.from_model(_net("trained"), quant.get_preset("int4"))
    x, _ = _mnist(40)
    p = fp.predict(x, n_steps=10)
    assert np.array_equal(p, fp.predict(fp.quantize_input(x), n_steps=10))
    assert np.array_equal(p, fp.predict(x, n_steps=10, batch_size=16))


def test_from_checkpoint_equals_from_model(tmp_path):
    from models.checkpoint import save_checkpoint

    net = _net("trained")
    path = save_checkpoint(tmp_path / "net.pt", net)
    spec = quant.get_preset("int4")
    a, b = FixedPointMLP.from_model(net, spec), FixedPointMLP.from_checkpoint(path, spec)
    for u, v in zip(a.w_codes + a.fb_codes + a.bias_codes, b.w_codes + b.fb_codes + b.bias_codes):
        assert np.array_equal(u, v)
    x, _ = _mnist(16)
    assert np.array_equal(a.predict(x, n_steps=10), b.predict(x, n_steps=10))


@pytest.mark.parametrize("name", ["fp32", "analog_pcm"])
def test_float_and_analog_specs_rejected(name):
    with pytest.raises(ValueError, match="not integer|analog"):
        FixedPointMLP.from_model(_net("random"), quant.get_preset(name))


def test_error_messages():
    spec = quant.get_preset("int8")
    with pytest.raises(ValueError, match="cannot represent 1.0"):
        FixedPointMLP.from_model(_net("random"), spec.replace(state=quant.FixedPoint(4, 4)))
    with pytest.raises(ValueError, match="EqPropMLP"):
        FixedPointMLP.from_model(torch.nn.Linear(3, 2), spec)
    fp = FixedPointMLP.from_model(_net("random"), spec)
    x, y = _mnist(4)
    codes = fp.quantize_input(x)
    with pytest.raises(ValueError, match="integer codes"):
        fp.relax(x, n_steps=3)
    with pytest.raises(ValueError, match=r"expected \(B, 784\)"):
        fp.relax(codes[:, :10], n_steps=3)
    with pytest.raises(ValueError, match="quantize_input"):
        fp.relax(codes + 300, n_steps=3)
    with pytest.raises(ValueError, match="needs the targets y"):
        fp.relax(codes, beta=0.1, n_steps=3)
    with pytest.raises(ValueError, match="labels"):
        fp.relax(codes, beta=0.1, y=y + 10, n_steps=3)
    with pytest.raises(ValueError, match="n_steps"):
        fp.relax(codes, n_steps=0)
    with pytest.raises(ValueError, match="s0"):
        fp.relax(codes, [np.zeros((4, 5), dtype=np.int64)] * 3, n_steps=3)
    with pytest.raises(ValueError, match=r"s0\[0\] has codes"):
        fp.relax(codes, [np.full((4, n), 200) for n in SIZES[1:]], n_steps=3)
    with pytest.raises(ValueError, match="beta"):
        fp.relax(codes, beta=float("nan"), y=y, n_steps=3)
    with pytest.raises(ValueError, match="float values"):
        fp.quantize_input(codes)
    ce = FixedPointMLP.from_model(EqPropMLP(EqPropConfig(sizes=SIZES, cost="ce"), seed=0), spec)
    with pytest.raises(ValueError, match="cost='mse' only"):
        ce.relax(codes, beta=0.1, y=y, n_steps=3)
    with pytest.raises(ValueError, match="update"):
        FixedPointMLP.from_model(_net("random"), spec, update="random")


# ------------------------------------------------------------------ other energy models (term kernels)
from dataclasses import dataclass  # noqa: E402

from torch import nn  # noqa: E402

from hwsim import onchip  # noqa: E402
from hwsim.fixed_point import INT_KERNELS  # noqa: E402
from models.conv import ConvPool  # noqa: E402
from models.energy import Dense  # noqa: E402
from models.engine import UnsupportedError  # noqa: E402
from models.skip_mlp import SkipEqPropMLP  # noqa: E402

SKIP_SIZES = (20, 12, 9, 5)


class _StateSkipMLP(EqPropMLP):
    """Test model: the MLP plus a state-to-state coupling Dense(post=2, pre=0) (dynamic, both directions)."""

    def __init__(self, config, seed):
        super().__init__(config, seed)
        gen = torch.Generator().manual_seed(seed + 7)
        self.skip2 = nn.Linear(config.sizes[1], config.sizes[3], bias=False)
        with torch.no_grad():
            self.skip2.weight.uniform_(-0.3, 0.3, generator=gen)
        self.terms = self.terms + [Dense(post=2, pre=0, weight="skip2.weight")]


def _random_inputs(n_in: int, B: int = 24, seed: int = 0):
    r = np.random.default_rng(seed)
    return r.random((B, n_in)), r.integers(0, SKIP_SIZES[-1], B)


@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("rounding", ROUNDINGS)
@pytest.mark.parametrize("update", ["async", "sync"])
@pytest.mark.parametrize("model", ["skip", "state_skip"])
def test_extra_terms_numba_equals_torch_mirror(preset, rounding, update, model):
    cfg = EqPropConfig(sizes=SKIP_SIZES, update=update)
    net = SkipEqPropMLP(cfg, seed=2, skip_gain=2.0) if model == "skip" else _StateSkipMLP(cfg, seed=2)
    spec = quant.get_preset(preset).replace(rounding=rounding)
    fp = FixedPointMLP.from_model(net, spec)
    want_extra = 1 if model == "skip" else 2  # a state-state coupling has a forward and a feedback part
    assert len(fp.extra) == want_extra and all(c.static == (model == "skip") for c in fp.extra)
    assert fp.groups == net.schedule(update)
    if model == "state_skip" and update == "async":
        assert fp.groups == [[0], [1], [2]]  # nodes 0 and 2 now interact: three colours
    x, y = _random_inputs(SKIP_SIZES[0])
    xc = fp.quantize_input(x, seed=3)
    s_n, i_n = fp.relax(xc, n_steps=15, seed=3, record_trace=True)
    s_t, i_t = torch_relax(fp, torch.from_numpy(xc), n_steps=15, seed=3, record_trace=True)
    _assert_same(s_n, s_t, i_n, i_t)
    assert np.array_equal(i_n.residual, i_t.residual) and i_n.trace == i_t.trace
    for beta in (0.4, -0.4):
        a, ia = fp.relax(xc, s_n, beta=beta, y=y, n_steps=6, seed=3, step_offset=15)
        b, ib = torch_relax(fp, torch.from_numpy(xc), s_t, beta=beta, y=torch.from_numpy(y), n_steps=6, seed=3,
                            step_offset=15)
        _assert_same(a, b, ia, ib)


def _wide_spec():
    """An fp32-like integer spec: 12-bit weights and states (small net: exact in a 32-bit accumulator)."""
    return quant.HardwareSpec("wide", quant.WeightFormat("int", bits=12), quant.FixedPoint(12, 11), acc_bits=32)


def test_skip_model_fixed_point_tracks_the_float_model():
    net = SkipEqPropMLP(EqPropConfig(sizes=SKIP_SIZES), seed=4, skip_gain=3.0).double()
    x, _ = _random_inputs(SKIP_SIZES[0], B=200, seed=1)
    s_float, _ = net.free_phase(torch.from_numpy(x), n_steps=60)
    fp = FixedPointMLP.from_model(net, _wide_spec())
    s_int, _ = fp.relax(fp.quantize_input(x), n_steps=60)
    out = fp.dequantize_states(s_int)[-1]
    err = np.abs(out - s_float[-1].numpy())
    assert err.max() < 0.01
    assert np.mean(out.argmax(1) == s_float[-1].numpy().argmax(1)) >= 0.95
    # the skip term is really in the integer dynamics: without it the outputs move far more
    no_skip = FixedPointMLP(fp.spec, fp.w_codes, fp.bias_codes, fp.fwd_requant, fp.fb_codes, fp.fb_requant)
    out0 = fp.dequantize_states(no_skip.relax(fp.quantize_input(x), n_steps=60)[0])[-1]
    assert np.abs(out0 - s_float[-1].numpy()).max() > 10 * err.max()


def test_term_without_integer_kernel_is_refused_by_name():
    @dataclass(frozen=True)
    class Quadratic:
        node: int

        @property
        def nodes(self):
            return (self.node,)

        @property
        def params(self):
            return ()

    net = EqPropMLP(EqPropConfig(sizes=(6, 5, 3)), seed=0)
    net.terms = net.terms + [Quadratic(1)]
    with pytest.raises(UnsupportedError, match=r"backend 'numba fixed point' has no kernel for interaction term "
                                               r".*Quadratic\(node=1\); it supports: Bias, ConvPool, Dense"):
        FixedPointMLP.from_model(net, quant.get_preset("int8"))
    assert set(INT_KERNELS) == {Dense, type(net.terms[1]), ConvPool}
    from models.energy import Node

    tanh = EqPropMLP(EqPropConfig(sizes=(6, 5, 3)), seed=0)
    tanh.nodes = [Node(5, "hard_tanh"), tanh.nodes[1]]
    with pytest.raises(UnsupportedError, match=r"'numba fixed point' has no integer activation for nodes \[0\]"):
        FixedPointMLP.from_model(tanh, quant.get_preset("int8"))


def test_onchip_learns_the_skip_term_bit_exactly_and_refuses_state_couplings():
    spec = onchip.onchip_spec(quant.get_preset("int8"))
    net = SkipEqPropMLP(EqPropConfig(sizes=SKIP_SIZES), seed=5, skip_gain=2.0)
    fp = FixedPointMLP.from_model(net, spec)
    st = onchip.OnChipState.from_fixed_point(fp)
    assert len(st.extra_hidden) == 1 and st.couplings[-1] == (len(SKIP_SIZES) - 2, -1)
    x, y = _random_inputs(SKIP_SIZES[0], B=16)
    xc = fp.quantize_input(x)
    new = {be: onchip.onchip_step(st, xc, y, beta=0.5, n_free_steps=12, n_nudge_steps=5, seed=1, step=2, backend=be)[0]
           for be in ("numba", "torch")}
    for a, b in zip(new["numba"].hidden + new["numba"].extra_hidden + new["numba"].bias_hidden,
                    new["torch"].hidden + new["torch"].extra_hidden + new["torch"].bias_hidden):
        assert np.array_equal(a, b)
    assert not np.array_equal(new["numba"].extra_hidden[0], st.extra_hidden[0])  # the skip weights learned
    fp2 = new["numba"].to_fixed_point()
    assert len(fp2.extra) == 1 and np.array_equal(fp2.extra[0].codes, new["numba"].w_codes(extra=True)[0])
    with pytest.raises(UnsupportedError, match="on-chip learning.*state-to-state"):
        onchip.OnChipState.from_fixed_point(FixedPointMLP.from_model(_StateSkipMLP(EqPropConfig(sizes=SKIP_SIZES), 0), spec))

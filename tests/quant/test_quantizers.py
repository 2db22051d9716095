"""Quantizers: numpy vs torch bit-exact, invariants, stochastic rounding unbiasedness."""
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from quant import (FixedPoint, HardwareSpec, UpdateSpec, WeightFormat, apply_update, dequantize_state,
                   fake_quant_state, fake_quant_weights, get_preset, hidden_to_code, quantize_state,
                   quantize_weights, requant_params, weight_scale)
from quant.quantizers import scale_to_shift

INT_PRESETS = ["int8", "int4", "ternary"]
FORMATS = [WeightFormat(k, bits=b, granularity=g, scale_rule=r)
           for k, b in (("int8", None), ("int4", None), ("int", 3), ("int", 12), ("ternary", None))
           for g in ("per_tensor", "per_channel") for r in ("max_abs", "power_of_two", "mse")]


def _w(shape=(16, 24), seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


@pytest.mark.parametrize("fmt", FORMATS, ids=lambda f: f"{f.kind}{f.bits}-{f.granularity}-{f.scale_rule}")
def test_weight_codes_numpy_equal_torch(fmt):
    w = _w()
    w[3] = 0.0  # an all-zero channel
    q_np = quantize_weights(w, fmt)
    q_t = quantize_weights(torch.from_numpy(w), fmt)
    assert np.array_equal(q_np.codes, q_t.codes.numpy())
    assert np.array_equal(q_np.scale, q_t.scale.numpy())
    assert q_np.codes.min() >= fmt.qmin and q_np.codes.max() <= fmt.qmax
    assert np.all(q_np.codes[3] == 0)
    expect_shape = (16, 1) if fmt.granularity == "per_channel" else ()
    assert q_np.scale.shape == expect_shape
    if fmt.scale_rule == "power_of_two":
        assert np.array_equal(np.exp2(q_np.scale_log2.astype(float)), q_np.scale)
    # requantising the dequantised weights reproduces the codes (idempotence), scale fixed
    if fmt.kind != "ternary":
        again = np.clip(np.rint(q_np.dequantize() / q_np.scale), fmt.qmin, fmt.qmax)
        assert np.array_equal(again, q_np.codes)


@pytest.mark.parametrize("rule", ["max_abs", "power_of_two"])
def test_max_abs_and_power_of_two_never_clip(rule):
    w = _w((8, 50), seed=1).astype(np.float64)
    fmt = WeightFormat("int4", scale_rule=rule)
    q = quantize_weights(w, fmt)
    # error bounded by half a step everywhere (nothing clips)
    assert np.all(np.abs(q.dequantize() - w) <= q.scale / 2 + 1e-15)
    if rule == "max_abs":
        assert np.all(np.abs(q.codes).max(axis=1) == fmt.qmax)


def test_mse_scale_no_worse_than_max_abs():
    w = np.random.default_rng(2).standard_t(3, size=(8, 400))  # heavy tails: clipping helps
    for bits in (3, 4):
        errs = {}
        for rule in ("max_abs", "mse"):
            q = quantize_weights(w, WeightFormat("int", bits=bits, scale_rule=rule))
            errs[rule] = ((q.dequantize() - w) ** 2).sum(axis=1)
        assert np.all(errs["mse"] <= errs["max_abs"] + 1e-12)
        assert errs["mse"].sum() < errs["max_abs"].sum()


def test_ternary_follows_twn_rule():
    w = np.random.default_rng(4).standard_normal((5, 40))
    q = quantize_weights(w, WeightFormat("ternary", scale_rule="mse"))
    q_max = quantize_weights(w, WeightFormat("ternary", scale_rule="max_abs"))
    assert np.array_equal(q_max.scale.ravel(), np.abs(w).max(axis=1))
    assert np.array_equal(q_max.codes, q.codes)
    for row, codes, alpha in zip(w, q.codes, q.scale.ravel()):
        delta = 0.7 * np.mean(np.abs(row))
        want = [int(np.sign(x)) if abs(x) > delta else 0 for x in row]
        assert codes.tolist() == want
        assert alpha == pytest.approx(np.abs(row[np.abs(row) > delta]).mean(), rel=1e-12)


def test_float32_weights_have_no_codes_and_fake_quant_is_identity():
    w = torch.randn(3, 4)
    with pytest.raises(ValueError, match="float32"):
        quantize_weights(w, get_preset("fp32"))
    assert fake_quant_weights(w, get_preset("fp32")) is w


@pytest.mark.parametrize("name", INT_PRESETS)
def test_fake_quant_weights_value_and_ste(name):
    spec = get_preset(name)
    w = torch.from_numpy(_w()).requires_grad_(True)
    y = fake_quant_weights(w, spec)
    q = quantize_weights(w.detach().numpy(), spec)
    assert np.array_equal(y.detach().numpy(), q.dequantize().astype(np.float32))
    (y * 3.0).sum().backward()
    assert torch.equal(w.grad, torch.full_like(w, 3.0))


@settings(max_examples=150, deadline=None)
@given(arrays(np.float64, (4, 6), elements=st.floats(-10, 10, allow_nan=False)),
       st.sampled_from([f for f in FORMATS if f.kind != "ternary" and f.scale_rule != "mse"]))
def test_weight_quantize_dequantize_invariants(w, fmt):
    """max_abs / power_of_two are idempotent; mse (finite grid) and ternary (threshold) are not."""
    q = quantize_weights(w, fmt)
    w_hat = q.dequantize()
    q2 = quantize_weights(w_hat, fmt)  # rescaling from w_hat keeps the same codes*scale
    np.testing.assert_allclose(q2.dequantize(), w_hat, rtol=1e-12, atol=1e-300)
    # monotone within a channel: a larger weight never gets a smaller code
    order = np.argsort(w, axis=1, kind="stable")
    assert np.all(np.diff(np.take_along_axis(q.codes, order, axis=1), axis=1) >= 0)


@settings(max_examples=60, deadline=None)
@given(arrays(np.float64, (3, 8), elements=st.floats(-10, 10, allow_nan=False)),
       st.sampled_from([f for f in FORMATS if f.kind == "ternary" or f.scale_rule == "mse"]))
def test_weight_quantizer_monotone_bounded_all_rules(w, fmt):
    q = quantize_weights(w, fmt)
    assert q.codes.min() >= fmt.qmin and q.codes.max() <= fmt.qmax
    order = np.argsort(w, axis=1, kind="stable")
    assert np.all(np.diff(np.take_along_axis(q.codes, order, axis=1), axis=1) >= 0)
    assert np.all(q.scale > 0)


STATE_FORMATS = [FixedPoint(8, 7, False), FixedPoint(8, 8, False), FixedPoint(4, 3, False),
                 FixedPoint(8, 4, True), FixedPoint(16, 10, True), FixedPoint(2, 0, True)]


@pytest.mark.parametrize("fmt", STATE_FORMATS, ids=str)
@pytest.mark.parametrize("rounding", ["nearest_even", "floor", "stochastic"])
def test_state_codes_numpy_equal_torch(fmt, rounding):
    x = np.random.default_rng(5).uniform(-0.5, 1.5, size=(32, 20)) * max(1.0, fmt.max_value)
    x[0, :4] = [0.0, 1.0, fmt.lsb / 2, 3 * fmt.lsb / 2]  # ties
    kw = dict(seed=7, step=3, tensor_id=2, offset=100)
    c_np = quantize_state(x, fmt, rounding, **kw)
    c_t = quantize_state(torch.from_numpy(x), fmt, rounding, **kw)
    c_t32 = quantize_state(torch.from_numpy(x.astype(np.float32)), fmt, rounding, **kw)
    c_np32 = quantize_state(x.astype(np.float32), fmt, rounding, **kw)
    assert np.array_equal(c_np, c_t.numpy())
    assert np.array_equal(c_np32, c_t32.numpy())
    assert c_np.min() >= fmt.qmin and c_np.max() <= fmt.qmax
    # every code dequantises exactly and requantises to itself (idempotence), every mode
    codes = np.arange(fmt.qmin, fmt.qmax + 1)
    assert np.array_equal(quantize_state(dequantize_state(codes, fmt), fmt, rounding, **kw), codes)


def test_state_rounding_reference():
    fmt = FixedPoint(8, 2, True)  # lsb 0.25
    x = np.array([0.125, 0.375, -0.125, 0.2, 100.0, -100.0])
    assert quantize_state(x, fmt, "nearest_even").tolist() == [0, 2, 0, 1, 127, -128]
    assert quantize_state(x, fmt, "floor").tolist() == [0, 1, -1, 0, 127, -128]


def test_state_stochastic_rounding_unbiased():
    fmt = FixedPoint(8, 7, False)
    x = np.full(200_000, 0.3)  # 38.4 LSB
    c = quantize_state(x, fmt, "stochastic", seed=1, step=0, tensor_id=0)
    assert set(np.unique(c).tolist()) == {38, 39}
    # mean frac 0.4, binomial std of the mean 1.1e-3: 5 sigma
    assert abs(c.mean() - 38.4) < 5.5e-3
    # deterministic given counters, different for another step
    assert np.array_equal(c, quantize_state(x, fmt, "stochastic", seed=1, step=0, tensor_id=0))
    assert not np.array_equal(c, quantize_state(x, fmt, "stochastic", seed=1, step=1, tensor_id=0))
    with pytest.raises(ValueError, match="seed"):
        quantize_state(x, fmt, "stochastic")


def test_spec_rounding_is_used_and_float_state_passes_through():
    spec = get_preset("int8").replace(rounding="floor")
    assert quantize_state(np.array([0.999]), spec).tolist() == [127]
    x = torch.rand(3)
    assert fake_quant_state(x, get_preset("fp32")) is x
    with pytest.raises(ValueError, match="FixedPoint"):
        quantize_state(np.array([0.5]), get_preset("fp32"))


def test_fake_quant_state_clipped_ste():
    x = torch.tensor([-0.5, 0.0, 0.5, 1.0, 1.99, 2.5], requires_grad=True)
    y = fake_quant_state(x, get_preset("int8"))
    y.sum().backward()
    assert y.tolist() == [0.0, 0.0, 0.5, 1.0, 1.9921875, 1.9921875]
    assert x.grad.tolist() == [0.0, 1.0, 1.0, 1.0, 1.0, 0.0]


@settings(max_examples=100, deadline=None)
@given(arrays(np.float64, 30, elements=st.floats(-4, 4, allow_nan=False)), st.sampled_from(STATE_FORMATS),
       st.sampled_from(["nearest_even", "floor"]))
def test_state_quantizer_monotone_and_bounded(x, fmt, rounding):
    xs = np.sort(x)
    c = quantize_state(xs, fmt, rounding)
    assert np.all(np.diff(c) >= 0)
    assert c.min() >= fmt.qmin and c.max() <= fmt.qmax
    err = np.abs(dequantize_state(c, fmt) - np.clip(xs, fmt.min_value, fmt.max_value))
    assert np.all(err <= (fmt.lsb / 2 if rounding == "nearest_even" else fmt.lsb))


@pytest.mark.parametrize("stochastic", [False, True])
def test_apply_update_and_hidden_to_code_numpy_equal_torch(stochastic):
    spec = get_preset("int4").replace(update=UpdateSpec(hidden_bits=12, lr_shift=6, lr_multiplier=3,
                                                        stochastic=stochastic))
    rs = np.random.default_rng(8)
    h = rs.integers(-2048, 2048, size=(10, 12))
    p = rs.integers(-(2**14), 2**14, size=(10, 12))
    kw = dict(seed=2, step=5, tensor_id=1)
    h_np = apply_update(h, p, spec, **kw)
    h_t = apply_update(torch.from_numpy(h), torch.from_numpy(p), spec, **kw)
    assert np.array_equal(h_np, h_t.numpy())
    assert h_np.min() >= -2048 and h_np.max() <= 2047
    w_np = hidden_to_code(h_np, spec)
    assert np.array_equal(w_np, hidden_to_code(h_t, spec).numpy())
    assert w_np.min() >= -7 and w_np.max() <= 7


def test_apply_update_stochastic_unbiased():
    spec = HardwareSpec(update=UpdateSpec(hidden_bits=16, lr_shift=4, stochastic=True))
    p = np.full(100_000, 5)  # 5/16 LSB per update
    d = apply_update(np.zeros_like(p), p, spec, seed=0, step=0, tensor_id=0)
    assert set(np.unique(d).tolist()) == {0, 1}
    assert abs(d.mean() - 5 / 16) < 8e-3  # 5 sigma of a Bernoulli(0.31) mean over 1e5


def test_scale_helpers():
    assert scale_to_shift(0.25) == -2
    with pytest.raises(ValueError, match="power of two"):
        scale_to_shift(0.3)
    with pytest.raises(ValueError, match="float32"):
        weight_scale(np.ones((2, 2)), WeightFormat("float32"))
    with pytest.raises(ValueError, match="non-finite"):
        quantize_weights(np.array([[1.0, np.nan]]), WeightFormat("int8"))
    tiny = quantize_weights(np.array([[5e-324, 0.0]]), WeightFormat("int8"))  # scale would underflow
    assert tiny.codes.tolist() == [[0, 0]] and tiny.scale.tolist() == [[1.0]]


@settings(max_examples=80, deadline=None)
@given(arrays(np.float32, (3, 7), elements=st.floats(-100, 100, allow_nan=False, width=32)), st.sampled_from(FORMATS))
def test_weight_codes_numpy_equal_torch_property(w, fmt):
    q_np, q_t = quantize_weights(w, fmt), quantize_weights(torch.from_numpy(w), fmt)
    assert np.array_equal(q_np.codes, q_t.codes.numpy())


@pytest.mark.parametrize("rule", ["max_abs", "power_of_two", "mse"])
@pytest.mark.parametrize("rounding", ["nearest_even", "floor"])
def test_requant_params_integer_path_matches_exact_rational(rule, rounding):
    """acc -> state code through (multiplier, shift) equals rounding the exact rational
    acc * scale * 2**frac, up to the multiplier's 2**-31 relative error (power of two: exact)."""
    from fractions import Fraction

    from quant import ops

    spec = get_preset("int8")
    q = quantize_weights(_w((6, 30), seed=9), WeightFormat("int8", scale_rule=rule))
    s_codes = np.random.default_rng(9).integers(0, 129, size=(30, 5))
    acc = q.codes @ s_codes  # (6, 5) exact int64
    params = requant_params(q, spec)
    assert len(params) == 6
    for row, (m, sh) in enumerate(params):
        got = ops.requantize(acc[row], m, sh, rounding)
        got_t = ops.requantize(torch.from_numpy(acc[row]), m, sh, rounding)
        assert np.array_equal(got, got_t.numpy())
        real = Fraction(float(q.scale.ravel()[row]))  # * 2**(f_out - f_in) = 1: same state format
        exact = [Fraction(a) * real for a in acc[row].tolist()]
        ref = [int(np.floor(e)) if rounding == "floor" else round(e) for e in exact]
        diff = np.abs(np.array(got) - np.array(ref))
        if rule == "power_of_two":
            assert diff.max() == 0
        else:
            assert diff.max() <= 1  # only where the exact value sits within 2**-31 of a boundary
            near = [abs(e - round(e)) if rounding == "floor" else abs(abs(e - int(np.floor(e))) - Fraction(1, 2))
                    for e in exact]
            for d, e, nb in zip(diff.tolist(), exact, near):
                assert d == 0 or nb <= abs(e) * Fraction(1, 2**30)

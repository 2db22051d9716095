"""quant as the single source of the integer rules: tensor ids, bias codes, storage widths, spec checks."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import quant
from quant import HardwareSpec, UnsupportedError, WeightFormat, get_preset, numba_ops, ops, rng


# ------------------------------------------------------------------------------------ tensor ids
# The schemes the simulators used before the shared one, written out as they were (literals of the old
# code): the shared scheme must reproduce every id, or the stochastic integer metrics of the tracks change.
def _old_fixed_point(layer, kind):  # hwsim/fixed_point.py: 4 * layer + kind (0 fwd, 1 fb, 2 nudge)
    return 4 * layer + kind


OLD_INPUT_TENSOR_ID = 1 << 20  # hwsim/fixed_point.py INPUT_TENSOR_ID


def _old_onchip(layer, bias=False):  # hwsim/onchip.py: UPDATE_TENSOR_ID_BASE + 2 * layer + bias
    return (1 << 24) + 2 * layer + int(bias)


def _old_analog(kind, layer, side):  # hwsim/analog.py: kind * 1000 + 2 * layer + side (kinds 1..5)
    return kind * 1000 + 2 * layer + side


@pytest.mark.parametrize("layer", [0, 1, 2, 7, 100])
def test_tensor_ids_equal_the_old_schemes(layer):
    tid = rng.tensor_id
    assert tid(rng.KIND_STATE_FWD, layer) == _old_fixed_point(layer, 0)
    assert tid(rng.KIND_STATE_FB, layer) == _old_fixed_point(layer, 1)
    assert tid(rng.KIND_NUDGE, layer) == _old_fixed_point(layer, 2)
    assert tid(rng.KIND_INPUT) == OLD_INPUT_TENSOR_ID
    assert tid(rng.KIND_UPDATE_W, layer) == _old_onchip(layer)
    assert tid(rng.KIND_UPDATE_B, layer) == _old_onchip(layer, True)
    for old_kind, kind in enumerate((rng.KIND_STUCK, rng.KIND_PROG, rng.KIND_DRIFT, rng.KIND_READ,
                                     rng.KIND_ANALOG_UPDATE), start=1):
        for side in (0, 1):
            assert tid(kind, layer, side) == _old_analog(old_kind, layer, side)


def test_tensor_ids_unique_within_a_family():
    digital = [rng.KIND_STATE_FWD, rng.KIND_STATE_FB, rng.KIND_NUDGE, rng.KIND_INPUT, rng.KIND_STATE_TERM,
               rng.KIND_UPDATE_W, rng.KIND_UPDATE_B]
    analog = [rng.KIND_STUCK, rng.KIND_PROG, rng.KIND_DRIFT, rng.KIND_READ, rng.KIND_ANALOG_UPDATE]
    for family in (digital, analog):
        ids = [rng.tensor_id(k, layer, side) for k in family for layer in range(rng.TENSOR_ID_LAYOUT[k][3])[:64]
               for side in range(rng.TENSOR_ID_LAYOUT[k][2])]
        assert len(ids) == len(set(ids))


def test_tensor_id_errors():
    with pytest.raises(ValueError, match="kind 'x' is invalid"):
        rng.tensor_id("x", 0)
    with pytest.raises(ValueError, match="out of range"):
        rng.tensor_id(rng.KIND_READ, 0, 2)
    with pytest.raises(ValueError, match="out of range"):
        rng.tensor_id(rng.KIND_INPUT, 1)
    with pytest.raises(ValueError, match="out of range"):
        rng.tensor_id(rng.KIND_STATE_FWD, -1)


# ------------------------------------------------------------------------------------ bias codes
@pytest.mark.parametrize("preset", ["int8", "int4", "ternary"])
@pytest.mark.parametrize("granularity", ["per_channel", "per_tensor"])
def test_bias_codes_rule(preset, granularity):
    spec = get_preset(preset)
    spec = spec.replace(weights=spec.weights.__class__(**{**spec.weights.to_dict(), "granularity": granularity}))
    r = np.random.default_rng(0)
    w, b = r.normal(size=(9, 5)), r.normal(size=9) * 0.3
    b[0] = 1e9  # saturates
    q = quant.quantize_weights(w, spec)
    got = quant.bias_codes(b, q.scale, spec)
    # the rule, written independently: b / (scale * 2**-f), ties to even, saturated to acc_bits
    lsb = np.broadcast_to(np.asarray(q.scale, dtype=np.float64).reshape(-1), (9,)) * 2.0 ** -spec.state.frac_bits
    hi = 2 ** (spec.acc_bits - 1) - 1
    want = np.clip(ops.round_half_even(b / lsb), -hi - 1, hi).astype(np.int64)
    assert got.dtype == np.int64 and np.array_equal(got, want)
    assert got[0] == hi
    assert np.array_equal(quant.bias_lsb(q.scale, spec) * np.ones(9), lsb)
    # torch input, same codes
    assert np.array_equal(quant.bias_codes(torch.from_numpy(b), torch.as_tensor(q.scale), spec), got)


def test_bias_codes_ties_to_even():
    spec = HardwareSpec(state=quant.FixedPoint(8, 0))  # LSB = scale
    assert quant.bias_codes(np.array([0.5, 1.5, 2.5, -0.5]), np.array(1.0), spec).tolist() == [0, 2, 2, 0]


def test_bias_codes_needs_an_integer_spec():
    with pytest.raises(ValueError, match="acc_bits"):
        quant.bias_codes(np.zeros(2), 1.0, get_preset("fp32"))


# ------------------------------------------------------------------------------- storage widths
@pytest.mark.parametrize("kind,bits,chip,onnx", [("int8", None, 8, 8), ("int4", None, 4, 4), ("ternary", None, 2, 4),
                                                 ("int", 3, 3, 4), ("int", 6, 6, 8), ("int", 12, 12, 16),
                                                 ("float32", None, 32, 32)])
def test_storage_bits(kind, bits, chip, onnx):
    f = WeightFormat(kind, bits=bits)
    assert f.storage_bits == chip
    assert f.onnx_storage_bits == onnx


# ------------------------------------------------------------------------------ capability checks
def test_require_names_backend_field_and_support():
    with pytest.raises(UnsupportedError, match=r"backend 'b' does not support spec 'fp32': it is not integer.*supports"):
        get_preset("fp32").require("b", integer=True)
    assert get_preset("fp32").require("b") is not None  # nothing asked
    int8 = get_preset("int8")
    with pytest.raises(UnsupportedError, match="per_channel.*per-tensor"):
        int8.require("chip", per_tensor=True)
    with pytest.raises(UnsupportedError, match="rounding='nearest_even'.*'floor'"):
        int8.require("b", roundings=("floor",))
    with pytest.raises(UnsupportedError, match="cannot learn on chip"):
        int8.replace(update=None).require("b", update=True)
    with pytest.raises(UnsupportedError, match="cannot represent 1.0"):
        int8.replace(state=quant.FixedPoint(8, 8)).require("b", exact_one=True)
    with pytest.raises(UnsupportedError, match="analog"):
        int8.replace(analog=quant.AnalogSpec()).require("b")
    assert int8.replace(analog=quant.AnalogSpec()).require("b", analog=True).analog is not None
    with pytest.raises(ValueError, match="allowed: a quant.HardwareSpec"):
        HardwareSpec.check("int8", "b")
    assert issubclass(UnsupportedError, ValueError)


# ------------------------------------------------------------------------------- numba twins
@pytest.mark.parametrize("rounding", ["nearest_even", "floor", "stochastic"])
@pytest.mark.parametrize("mult,shift", [(1, 0), (1, 3), (3, 2), (1_234_567_890, 31), (5, -2), (1, 30)])
def test_numba_requant_equals_quant_ops(rounding, mult, shift):
    acc = np.arange(-300, 301, dtype=np.int64) * 977
    rcode = numba_ops.ROUNDING_CODES[rounding]
    u24 = rng.uniform_u24(3, 4, 5, np.arange(acc.size)) if rounding == "stochastic" else None
    want = ops.requantize(acc, mult, shift, rounding, u24)
    got = np.array([numba_ops.requant(a, mult, shift, rcode, 3, 4, 5, i) for i, a in enumerate(acc)])
    assert np.array_equal(got, want)


@pytest.mark.parametrize("mode", ["saturate", "wrap"])
def test_numba_overflow_equals_quant_ops(mode):
    v = np.arange(-600, 600, dtype=np.int64)
    got = np.array([numba_ops.overflow_scalar(a, 9, mode == "wrap")[0] for a in v])
    assert np.array_equal(got, ops.overflow(v, 9, True, mode))

"""exports.verify.int_arithmetic_check: the instrumented integer graph sees the accumulators and
requantisations that the end-to-end state comparison cannot (real MNIST slice, small seeded net)."""
import dataclasses

import pytest

import exports.onnx_export as E
from exports import verify as V
from hwsim.fixed_point import FixedPointMLP
from models.eqprop_mlp import EqPropConfig, EqPropMLP
from quant import get_preset
from tracks.data import load_dataset

T = 6
I8 = get_preset("int8")
ACC12 = I8.replace(name="int8_acc12", acc_bits=12)
POW2 = I8.replace(name="int8_pow2", weights=dataclasses.replace(I8.weights, scale_rule="power_of_two"))


def _setup(spec):
    net = EqPropMLP(EqPropConfig(sizes=(784, 16, 10)), seed=0).float().eval()
    x, _ = load_dataset("mnist", "test")
    fp = FixedPointMLP.from_model(net, spec)
    return fp, fp.quantize_input(x[:60])


@pytest.mark.parametrize("spec", [ACC12, ACC12.replace(overflow="wrap")], ids=["saturate", "wrap"])
def test_narrow_accumulator_overflows_and_matches_quant_ops(spec):
    fp, codes = _setup(spec)
    r = V.int_arithmetic_check(fp, E.build_int_model(fp, spec, T, False), codes)
    assert r["saturations"] > 0 and r["overflow_mismatches"] == 0 and r["requant_mismatches"] == 0
    assert r["n_acc"] == r["n_requant"] == 60 * (16 + T * (16 + 10))   # drive once, then feedback + output


def test_clip_bound_off_by_one_is_seen_in_the_accumulators_not_the_states(monkeypatch):
    fp, codes = _setup(ACC12)
    orig = E.acc_bounds
    monkeypatch.setattr(E, "acc_bounds", lambda bits: (orig(bits)[0], orig(bits)[1] - 1))
    model = E.build_int_model(fp, ACC12, T, False)
    assert V.int_arithmetic_check(fp, model, codes)["overflow_mismatches"] > 0


def test_power_of_two_scales_make_ties_and_a_wrong_tie_threshold_is_caught(monkeypatch):
    fp, codes = _setup(POW2)
    r = V.int_arithmetic_check(fp, E.build_int_model(fp, POW2, T, False), codes)
    assert r["ties"] > 0 and r["requant_mismatches"] == 0
    orig = E._tie_threshold
    monkeypatch.setattr(E, "_tie_threshold", lambda shift: orig(shift) + 1)
    bad = V.int_arithmetic_check(fp, E.build_int_model(fp, POW2, T, False), codes)
    assert bad["requant_mismatches"] > 0


def test_refuses_loop_graphs():
    fp, codes = _setup(I8)
    with pytest.raises(ValueError, match="unrolled"):
        V.int_arithmetic_check(fp, E.build_int_model(fp, I8, T, True), codes)

"""Tracks 4 / 16 / 19, issue 12 (conv part) and issue 14 (mutation-robust criteria): the real path passes
the conv and narrow-accumulator criteria; floor-rounded weight codes, a wrapping accumulator in the numba
simulator, in the torch mirror, or in both, each make a criterion of the track fail."""
import dataclasses
import importlib

import numpy as np
import pytest
import torch

import quant
import hwsim.torch_mirror as torch_mirror
from hwsim.fixed_point import FixedPointMLP
from tracks import base
from tracks.shared.quantized import NARROW_ACC_BITS, QUICK

# MLP and conv parts as small as still meaningful (the integer checks do not need a trained net)
TINY = {"n_train": 300, "n_test": 100, "hidden": 32, "epochs": 1, "ft_epochs": 1, "n_narrow": 20,
        "conv_channels": (2, 4), "conv_n_train": 100, "conv_n_test": 50, "conv_epochs": 1, "conv_n_bitexact": 10}
TRACKS = {"int8": "tracks.t16_int8", "int4": "tracks.t19_int4", "ternary": "tracks.t04_ternary"}
NARROW = ("narrow_acc_mismatches", "narrow_acc_ref_mismatches", "conv_narrow_acc_mismatches",
          "conv_narrow_acc_ref_mismatches")


@pytest.fixture(autouse=True)
def _one_torch_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _run(preset, tmp_path, **overrides):
    mod = importlib.import_module(TRACKS[preset])
    ctx = base.TrackContext(out_dir=tmp_path, quick=True, seeds=(0,), progress=False, overrides={**TINY, **overrides})
    res = mod.run(ctx)
    passed, rows = base.evaluate(mod.SPEC, res)
    return res.metrics, passed, {r["metric"]: r["passed"] for r in rows}


def _floor_codes(monkeypatch):
    """Mutation: weight codes rounded by floor instead of nearest-even (ternary: floor(w / scale) in [-1, 1])."""
    orig = quant.quantize_weights

    def floor_quantize(w, spec):
        q = orig(w, spec)
        lo, hi = (-1, 1) if q.fmt.kind == "ternary" else (q.fmt.qmin, q.fmt.qmax)
        if isinstance(q.codes, torch.Tensor):
            codes = torch.clamp(torch.floor(w.detach().double() / q.scale), lo, hi).long()
        else:
            codes = np.clip(np.floor(np.asarray(w, dtype=np.float64) / q.scale), lo, hi).astype(np.int64)
        return dataclasses.replace(q, codes=codes)

    monkeypatch.setattr(quant, "quantize_weights", floor_quantize)


def _wrap_numba(monkeypatch):
    """Mutation: the numba simulator's accumulators wrap (the spec it is given says saturate)."""
    orig = FixedPointMLP.relax

    def relax(self, *a, **k):
        spec = self.spec
        self.spec = spec.replace(overflow="wrap")
        try:
            return orig(self, *a, **k)
        finally:
            self.spec = spec

    monkeypatch.setattr(FixedPointMLP, "relax", relax)


def _wrap_torch(monkeypatch):
    """Mutation: the torch mirror's accumulators wrap."""
    orig = torch_mirror.overflow_t
    monkeypatch.setattr(torch_mirror, "overflow_t", lambda v, bits, mode: orig(v, bits, "wrap"))


def test_real_path_passes_the_conv_and_narrow_accumulator_criteria(tmp_path):
    m, _, crit = _run("int4", tmp_path)
    for k in ("conv_bitexact_mismatches", "conv_weight_code_violations", "conv_code_range_violations",
              "weight_code_violations", "conv_update_cosine_min", "narrow_acc_ref_saturated",
              "conv_narrow_acc_ref_saturated", "narrow_acc_wrap_would_differ",
              "conv_narrow_acc_wrap_would_differ") + NARROW:
        assert crit[k], (k, m[k])
    assert m["conv_narrow_acc_bits"] == NARROW_ACC_BITS["int4"] and m["conv_narrow_acc_overflows"] > 0
    assert m["conv_onchip_gap_pt"] == pytest.approx(100 * (m["conv_acc_float"] - m["conv_acc_onchip"]))
    assert m["conv_target_met"] == int(m["conv_onchip_gap_pt"] <= 1.0)
    assert "conv_target_met" not in crit and "conv_onchip_gap_pt" not in crit  # reported, not a criterion
    assert (tmp_path / "plots" / "t19_int4_conv_accuracy.png").stat().st_size > 1000


def test_floor_rounded_weight_codes_fail_the_track(tmp_path, monkeypatch):
    _floor_codes(monkeypatch)
    m, passed, crit = _run("int4", tmp_path)
    assert not passed
    assert not crit["weight_code_violations"] and not crit["conv_weight_code_violations"], m["weight_code_violations"]


@pytest.mark.parametrize("preset", ["int8", "int4", "ternary"])
def test_weight_code_check_on_real_weights_and_its_floor_mutation(preset, monkeypatch):
    """The check the tracks use, per preset, on both nets (per-channel and per-tensor codes): 0 on the real
    quantizer, > 0 with floor codes (ternary: a floor is no sign threshold of |w|)."""
    from hwsim.onchip import onchip_spec
    from models.eqprop_mlp import EqPropConfig, EqPropMLP
    from models.conv import ConvEqProp
    from tracks.shared.conv_small import small_conv_config
    from tracks.shared.quantized_checks import weight_code_violations

    nets = [EqPropMLP(EqPropConfig(sizes=(784, 32, 10)), seed=0), ConvEqProp(small_conv_config((4, 8)), seed=0)]
    specs = [quant.get_preset(preset), onchip_spec(quant.get_preset(preset))]
    assert all(weight_code_violations(n, FixedPointMLP.from_model(n, s)) == 0 for n in nets for s in specs)
    _floor_codes(monkeypatch)
    assert all(weight_code_violations(n, FixedPointMLP.from_model(n, s)) > 0 for n in nets for s in specs)


@pytest.mark.parametrize("mutation,broken", [
    ("numba", {"narrow_acc_mismatches", "narrow_acc_ref_mismatches", "conv_narrow_acc_mismatches",
               "conv_narrow_acc_ref_mismatches"}),
    ("torch", {"narrow_acc_mismatches", "conv_narrow_acc_mismatches"}),
    ("both", {"narrow_acc_ref_mismatches", "conv_narrow_acc_ref_mismatches"}),
])
def test_wrapping_accumulator_fails_the_track(mutation, broken, tmp_path, monkeypatch):
    if mutation in ("numba", "both"):
        _wrap_numba(monkeypatch)
    if mutation in ("torch", "both"):
        _wrap_torch(monkeypatch)
    m, passed, crit = _run("int4", tmp_path)
    assert not passed
    assert {k for k in NARROW if not crit[k]} == broken, {k: m[k] for k in NARROW}
    assert crit["bitexact_mismatches"] and crit["conv_bitexact_mismatches"]  # 32-bit presets never overflow


def test_conv_settings_are_checked():
    with pytest.raises(ValueError, match="conv_n_bitexact"):
        dataclasses.replace(QUICK, conv_n_bitexact=QUICK.conv_n_test + 1)
    with pytest.raises(ValueError, match="narrow_acc_bits"):
        dataclasses.replace(QUICK, narrow_acc_bits=40)
    with pytest.raises(ValueError, match="conv_optimizer"):
        dataclasses.replace(QUICK, conv_optimizer="rmsprop")


def test_sign_flipped_conv_update_fails_the_track(tmp_path, monkeypatch):
    """Mutation: the on-chip (numba) conv kernel update goes against the EqProp contrast (signs swapped):
    the update cosine criterion and the numba-vs-torch replay of the on-chip steps both fail."""
    import hwsim.onchip as onchip

    orig = onchip._conv_product_nb
    monkeypatch.setattr(onchip, "_conv_product_nb", lambda P, post, route, pre, sign, *rest:
                        orig(P, post, route, pre, -sign, *rest))
    m, passed, crit = _run("int4", tmp_path)
    assert not passed
    assert not crit["conv_update_cosine_min"] and m["conv_update_cosine_min"] < 0, m["conv_update_cosine_min"]
    assert not crit["conv_bitexact_mismatches"]
    assert crit["update_cosine_min"]  # the dense MLP path is untouched

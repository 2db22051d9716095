"""Tracks 4 / 16 / 19 (tracks/shared/quantized.py): real path passes its integer checks; bypassing the
quantizer makes the track fail."""
import math

import pytest

from tracks import base
from tracks.shared.quantized import QUICK
from tracks.harness.stats import mean_ci95

TINY = {"n_train": 300, "n_test": 200, "hidden": 32, "epochs": 1, "ft_epochs": 1, "conv": False}  # conv: test_quantized_conv.py
TRACKS = {"int8": "tracks.t16_int8", "int4": "tracks.t19_int4", "ternary": "tracks.t04_ternary"}
REQUIRED = ("acc_float", "acc_ptq", "acc_qat", "acc_onchip", "onchip_gap_pt", "update_cosine_min")


def _module(preset):
    import importlib

    return importlib.import_module(TRACKS[preset])


def _run(preset, tmp_path, **overrides):
    mod = _module(preset)
    ctx = base.TrackContext(out_dir=tmp_path, quick=True, seeds=(0,), progress=False,
                            overrides={**TINY, **overrides})
    res = mod.run(ctx)
    passed, rows = base.evaluate(mod.SPEC, res)
    return res, passed, {r["metric"]: r["passed"] for r in rows}


def test_real_path_integer_checks_pass_and_metrics_are_complete(tmp_path):
    res, _, crit = _run("int4", tmp_path)
    m = res.metrics
    for k in REQUIRED:
        assert k in m and math.isfinite(m[k]), k
    assert crit["bitexact_mismatches"] and crit["code_range_violations"] and crit["update_cosine_min"]
    assert m["onchip_gap_pt"] == pytest.approx(100 * (m["acc_float"] - m["acc_onchip"]))
    assert 0.15 < m["acc_onchip"] <= 1.0 and 0.15 < m["acc_ptq"] <= 1.0  # above chance (0.1) after 6+6 updates
    for a in res.artifacts:
        assert (tmp_path / a).stat().st_size > 1000


@pytest.mark.parametrize("preset", list(TRACKS))
def test_bypassed_quantizer_fails_the_track(preset, tmp_path):
    res, passed, crit = _run(preset, tmp_path, bypass_quantizer=True)
    assert not passed
    assert not crit["code_range_violations"] and res.metrics["code_range_violations"] > 0
    assert not crit["bitexact_mismatches"]  # nothing integer to replay: NaN fails


def test_specs_and_overrides():
    for preset in TRACKS:
        spec = _module(preset).SPEC
        names = {c.metric for c in spec.criteria}
        assert {"onchip_gap_pt", "update_cosine_min", "bitexact_mismatches", "code_range_violations"} <= names
    assert [_module(p).SPEC.id for p in ("ternary", "int8", "int4")] == [4, 16, 19]
    with pytest.raises(ValueError, match="unknown setting"):
        _module("int8").run(base.TrackContext(out_dir=".", quick=True, overrides={"bypass": True}))
    assert QUICK.bypass_quantizer is False  # a typed setting (--set bypass_quantizer=true)
    m, h = mean_ci95([0.9, 0.92])
    assert m == pytest.approx(0.91) and h > 0

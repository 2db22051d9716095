"""Track 40 (hardware analysis): passes on the real path, fails when the analytic count is wrong."""
import pytest

import tracks
import tracks.t40_hardware_analysis as t40
from tracks.harness.base import TrackContext, evaluate

SMALL = {"models": ((784, 24, 10),), "n_cross_check": 3}


def _ctx(tmp_path, quick=True, **overrides):
    return TrackContext(out_dir=tmp_path, quick=quick, progress=False, overrides={**SMALL, **overrides})


def test_t40_passes_and_reports(tmp_path):
    res = t40.run(_ctx(tmp_path, quick=False))   # full: every integer representation cross-checked
    passed, crit = evaluate(t40.SPEC, res)
    assert passed, crit
    m = res.metrics
    assert m["flop_counter_match"] == 1.0
    runs = {c["run"] for c in m["flop_cross_check"]}
    assert {"free_phase", "eqprop_step", "bptt_step", "fixed_point_free_phase_int8", "onchip_update_ternary"} <= runs
    assert len(runs) == 3 + 2 * 3
    assert all(c["analytic_macs"] * 2 == c["counter_flops"] for c in m["flop_cross_check"])
    assert m["macs_per_inference"] == 784 * 24 + t40.N_FREE_STEPS * 2 * 24 * 10
    assert 0 < m["energy_ratio_int8_vs_fp32"] < 1
    assert m["weight_bytes_ternary"] < m["weight_bytes_int4"] < m["weight_bytes_int8"] < m["weight_bytes_fp32"]
    assert m["weight_bytes_fp32"] == (784 * 24 + 24 * 10) * 4
    assert len(m["rows"]) == len(t40.REPRESENTATIONS)
    for row in m["rows"]:
        assert set(t40.ROW_FIELDS) <= set(row)
        assert set(row["energy_pj_train_by_phase"]) == {"drive", "free", "b1", "b2", "update"}  # phase names of models.engine
        assert row["macs_inference_no_drive_reuse"] - row["macs_inference"] == (t40.N_FREE_STEPS - 1) * 784 * 24
    tern = next(r for r in m["rows"] if r["representation"] == "ternary")
    int8 = next(r for r in m["rows"] if r["representation"] == "int8")
    assert "mult_int8x8" in int8["ops_inference"]                                    # weight x state
    assert not any(k.startswith("mult_") and k.endswith("x8") for k in tern["ops_inference"])  # none
    assert tern["energy_pj_inference_zero_skip"] < tern["energy_pj_inference"]
    assert m["conv_flop_counter_match"] == 1.0 and {r["run"] for r in m["conv_flop_cross_check"]} == {
        "conv_free_phase", "conv_eqprop_step"}
    assert m["conv_macs_per_inference"] > 0 and m["conv_weight_bytes_fp32"] == 4 * (8 * 9 + 8 + 16 * 72 + 16 + 10 * 64 + 10)
    assert res.artifacts == ["plots/t40_energy_per_phase.png"]
    assert (tmp_path / res.artifacts[0]).stat().st_size > 0


def test_t40_fails_when_analytic_count_is_broken(tmp_path):
    """A wrong T1 in the analytic count (the runs keep the real T1) must fail the track."""
    res = t40.run(_ctx(tmp_path, analytic_n_free_steps=t40.N_FREE_STEPS - 1, representations=("fp32", "int8")))
    passed, crit = evaluate(t40.SPEC, res)
    assert not passed
    assert res.metrics["flop_counter_match"] == 0.0
    # every run with relaxation sweeps is caught; the update alone does not depend on T1
    assert {c["run"] for c in res.metrics["flop_cross_check"] if c["match"]} == {"onchip_update_int8"}


def test_t40_fails_when_the_conv_analytic_count_is_broken(tmp_path):
    """Only the conv count assumes a wrong T1: conv_flop_counter_match fails, the MLP criteria pass."""
    res = t40.run(_ctx(tmp_path, conv_analytic_n_free_steps=t40.N_FREE_STEPS + 1, representations=("fp32", "int8")))
    passed, crit = evaluate(t40.SPEC, res)
    assert not passed and {c["metric"] for c in crit if not c["passed"]} == {"conv_flop_counter_match"}
    assert not any(r["match"] for r in res.metrics["conv_flop_cross_check"])


def test_t40_rejects_unknown_override(tmp_path):
    with pytest.raises(ValueError, match="unknown setting"):
        t40.run(_ctx(tmp_path, n_steps=3))


def test_t40_is_discovered():
    tr = tracks.get_track(40)
    assert not tr.broken and tr.spec.slug == "hardware_analysis"

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
    assert m["flop_counter_match"] == 1.0 and m["int_event_count_match"] == 1.0
    ev = m["event_cross_check"]
    assert {(r["representation"], r["phase"]) for r in ev} == {
        (rep, ph) for rep in ("int8", "int4", "ternary") for ph in ("free", "b1", "b2", "update")}
    assert all(r["match"] and r["measured"]["macs"] > 0 for r in ev)
    free8 = next(r for r in ev if r["representation"] == "int8" and r["phase"] == "free")["measured"]
    B, T = 3, t40.N_FREE_STEPS   # drive (24) once per phase; each sweep: hidden feedback (24), output forward (10)
    assert free8["acc"] == B * (24 + T * 34) and free8["requant"] == free8["acc"] and free8["clamp"] == B * T * 34
    assert m["conv_int_event_count_match"] == 1.0 and len(m["conv_event_cross_check"]) == 12
    assert all(r["measured"]["pool"] > 0 for r in m["conv_event_cross_check"] if r["phase"] != "update")
    assert "energy_ratio_int8_vs_fp32" not in {c.metric for c in t40.SPEC.criteria}
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
        "conv_free_phase", "conv_eqprop_step", "conv_bptt_step"}
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
    assert not passed and {c["metric"] for c in crit if not c["passed"]} == {"conv_flop_counter_match",
                                                                             "conv_int_event_count_match"}
    assert not any(r["match"] for r in res.metrics["conv_flop_cross_check"])
    # only the free phase has T1 sweeps: it is caught, the nudged phases and the update still match
    assert {r["phase"] for r in res.metrics["conv_event_cross_check"] if not r["match"]} == {"free"}


def test_t40_fails_when_the_integer_count_requantises_the_drive_every_sweep(tmp_path, monkeypatch):
    """A wrong integer count with the right MACs: the static drive re-requantised every sweep (as with
    stochastic rounding) while the simulator holds it per phase. The FLOP criteria cannot see it (the
    energy figure would); the measured events fail, for the MLP and the conv net."""
    import dataclasses

    from hwsim import opcount

    orig = opcount._Datapath.of.__func__

    def wrong(cls, spec):
        dp = orig(cls, spec)
        return dp if dp.is_float else dataclasses.replace(dp, rounding="stochastic")

    monkeypatch.setattr(opcount._Datapath, "of", classmethod(wrong))
    res = t40.run(_ctx(tmp_path, representations=("fp32", "int8")))
    passed, crit = evaluate(t40.SPEC, res)
    assert {c["metric"] for c in crit if not c["passed"]} == {"int_event_count_match", "conv_int_event_count_match"}
    bad = [r for r in res.metrics["event_cross_check"] if not r["match"]]
    assert bad and all(r["analytic"]["requant"] > r["measured"]["requant"] for r in bad)
    assert all(r["analytic"]["macs"] == r["measured"]["macs"] for r in res.metrics["event_cross_check"])


def test_t40_fails_when_the_conv_routing_is_never_counted(tmp_path, monkeypatch):
    """The conv count assumes the pooling routes are always reused (never recomputed): the conv FLOP and
    event criteria fail, the MLP ones pass."""
    from hwsim import opcount

    monkeypatch.setattr(opcount, "_routing_reuse", lambda g, post, pre, integer=False: "never")
    res = t40.run(_ctx(tmp_path, representations=("fp32", "int8")))
    passed, crit = evaluate(t40.SPEC, res)
    assert {c["metric"] for c in crit if not c["passed"]} == {"conv_flop_counter_match", "conv_int_event_count_match"}


def test_t40_rejects_unknown_override(tmp_path):
    with pytest.raises(ValueError, match="unknown setting"):
        t40.run(_ctx(tmp_path, n_steps=3))


def test_t40_is_discovered():
    tr = tracks.get_track(40)
    assert not tr.broken and tr.spec.slug == "hardware_analysis"

"""Track 3's conv section (issue 12) on a small conv net and real MNIST slices: faults hurt the conv chip,
stuck devices never move, and each conv criterion FAILS when its path is broken (faults bypassed,
stuck devices allowed to move, in-situ updates dropped). The ex-situ net is trained once (t03's in-process
cache, same settings in every test)."""
import math

from tracks import t03_self_healing as t03
from tracks.harness.base import TrackContext, TrackResult, evaluate

SMALL = {"conv_n_train": 1500, "conv_epochs": 2, "conv_n_val": 100, "conv_n_test": 200, "conv_stuck_frac": 0.05,
         "conv_insitu_steps": 3, "conv_lrs": (0.1,)}


def _conv(tmp_path, **ov):
    ctx = TrackContext(out_dir=tmp_path, quick=True, seeds=(0,), progress=False, overrides={**SMALL, **ov})
    m, notes = t03.conv_section(ctx, ctx.settings(t03.QUICK, t03.FULL), (0,))
    rows = {r["metric"]: r for r in evaluate(t03.SPEC, TrackResult(metrics=m))[1] if r["metric"].startswith("conv_")}
    return m, rows, notes


def test_conv_faults_hurt_stuck_hold_and_bypass_fails(tmp_path):
    m, rows, notes = _conv(tmp_path)
    assert set(rows) == {"conv_fault_gap_points", "conv_stuck_max_change", "conv_recovered_fraction"}
    assert m["conv_acc_clean"] > 0.5 and rows["conv_fault_gap_points"]["passed"], m
    assert rows["conv_stuck_max_change"]["passed"] and m["conv_stuck_max_change"] == 0.0
    assert abs(m["conv_stuck_fraction_measured"] - 0.05) < 0.01
    assert m["conv_per_seed"][0]["lr_chosen"] == 0.1 and "conv: 1-8-16" in notes[0]
    assert (tmp_path / "plots" / "t03_conv_self_healing.png").stat().st_size > 1000
    m_b, rows_b, _ = _conv(tmp_path, disable_noise=True, conv_insitu_steps=1)
    assert not rows_b["conv_fault_gap_points"]["passed"] and abs(m_b["conv_fault_gap_points"]) < 2.0, m_b
    assert m_b["conv_stuck_fraction_measured"] == 0.0
    assert not rows_b["conv_recovered_fraction"]["passed"]  # nan or ~0 gap: no recovery to claim


def test_conv_fails_when_stuck_devices_move(tmp_path, monkeypatch):
    from hwsim import devices
    monkeypatch.setattr(devices, "keep_stuck", lambda new, old, stuck: new)
    m, rows, _ = _conv(tmp_path, conv_n_test=100)
    assert not rows["conv_stuck_max_change"]["passed"] and m["conv_stuck_max_change"] > 0, m


def test_conv_recovery_fails_without_updates(tmp_path, monkeypatch):
    """In-situ updates dropped: the faulty chip stays faulty and conv_recovered_fraction fails."""
    monkeypatch.setattr(t03.AnalogCrossbarMLP, "apply_update", lambda self, delta: None)
    m, rows, _ = _conv(tmp_path)
    assert rows["conv_fault_gap_points"]["passed"], m
    assert not math.isnan(m["conv_recovered_fraction"]) and not rows["conv_recovered_fraction"]["passed"], m

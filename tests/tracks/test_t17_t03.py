"""Tracks 17 and 3 on a tiny model and real MNIST slices: metrics and plots are produced, and each
track FAILS when its noise / fault injection is bypassed through ctx.overrides."""
import math

import pytest

from tracks import t03_self_healing as t03
from tracks import t17_analog_noise as t17
from tracks.harness.base import TrackContext, evaluate

TINY = {"model": {"sizes": (784, 32, 10), "n_train": 2000, "epochs": 1}, "n_test": 300}


def _ctx(tmp_path, **ov):
    return TrackContext(out_dir=tmp_path, quick=True, seeds=(0,), progress=False, overrides={**TINY, **ov})


def _crit(rows, metric):
    return next(r for r in rows if r["metric"] == metric)


T17_SMALL = {"precisions": ("int8",), "betas": (0.05, 0.5), "grad_noise": (0.0, 0.02)}


def test_t17_injects_noise_and_fails_when_bypassed(tmp_path):
    from tests.hwsim.spiking.test_ports import small_trained_conv_net   # the stored 1-8-16 conv net

    small = {**T17_SMALL, "conv_model": small_trained_conv_net(), "conv_n_test": 200}
    res = t17.run(_ctx(tmp_path, **small))
    _, rows = evaluate(t17.SPEC, res)
    m = res.metrics
    assert _crit(rows, "acc_drop_prog20")["passed"], m["prog_curve"]   # 20 % noise measurably hurts
    assert m["acc_chip_int8_clean"] > 0.5
    assert [r["level"] for r in m["prog_curve"]] == list(t17.PROG_LEVELS)
    assert m["grad_cosine_best_noise0"] > 0.9
    assert all((tmp_path / "plots" / f).stat().st_size > 1000
               for f in ("t17_prog_noise.png", "t17_read_noise.png", "t17_grad_cosine.png"))
    assert _crit(rows, "conv_acc_drop_prog20")["passed"] and m["conv_acc_chip_int8_clean"] > 0.6, m
    assert _crit(rows, "conv_acc_chip_int8_clean_vs_float")["passed"], m
    assert m["conv_target_met_prog5"] == int(m["conv_acc_drop_prog5"] <= t17.CONV_TARGET_DROP_PROG5)
    assert {p["kind"] for p in m["conv_acc_by_point"]} == {"prog", "read"}
    broken = t17.run(_ctx(tmp_path, disable_noise=True, **small))
    passed, rows_b = evaluate(t17.SPEC, broken)
    assert not passed and not _crit(rows_b, "acc_drop_prog20")["passed"]
    assert not _crit(rows_b, "conv_acc_drop_prog20")["passed"] and broken.metrics["conv_acc_drop_prog20"] == 0.0
    assert broken.metrics["acc_drop_prog20"] == 0.0


def test_t03_faults_hurt_and_track_fails_when_bypassed(tmp_path):
    res = t03.run(_ctx(tmp_path, conv=False, insitu_steps=10, eval_every=5, device_models=("ideal", "soft_bounds")))
    _, rows = evaluate(t03.SPEC, res)
    m = res.metrics
    assert _crit(rows, "fault_gap_points")["passed"], m
    assert _crit(rows, "stuck_max_change")["passed"] and m["stuck_max_change"] == 0.0, m
    assert m["device_models"] == ["ideal", "soft_bounds"] and 0.0 <= m["acc_after_insitu_soft_bounds"] <= 1.0
    assert {c["device"] for c in m["curve_by_model"]} == {"ideal", "soft_bounds"}
    assert abs(m["stuck_fraction_measured"] - 0.10) < 0.01
    assert [c["step"] for c in m["curve"]][0] == 0 and m["curve"][-1]["step"] == 10
    assert (tmp_path / "plots" / "t03_self_healing.png").stat().st_size > 1000
    assert "conv_recovered_fraction" not in m and not _crit(rows, "conv_stuck_max_change")["passed"]  # conv=False
    broken = t03.run(_ctx(tmp_path, conv=False, disable_noise=True, insitu_steps=2, eval_every=2))
    passed, rows_b = evaluate(t03.SPEC, broken)
    assert not passed and not _crit(rows_b, "fault_gap_points")["passed"]
    assert broken.metrics["stuck_fraction_measured"] == 0.0


def test_t03_rejects_bad_override(tmp_path):
    with pytest.raises(ValueError, match="stuck_frac"):
        t03.run(_ctx(tmp_path, stuck_frac=1.5))
    with pytest.raises(ValueError, match="device_models"):
        t03.run(_ctx(tmp_path, device_models=("rram",)))
    with pytest.raises(ValueError, match="conv_stuck_frac"):
        t03.run(_ctx(tmp_path, conv_stuck_frac=-0.1))
    with pytest.raises(ValueError, match="conv_lrs"):
        t03.run(_ctx(tmp_path, conv_lrs=(0.1, 0.0)))


def test_t03_fails_when_stuck_devices_move(tmp_path, monkeypatch):
    """Issue 14 mutation: stuck devices that change during in-situ updates must fail the track."""
    from hwsim import devices
    monkeypatch.setattr(devices, "keep_stuck", lambda new, old, stuck: new)
    res = t03.run(_ctx(tmp_path, conv=False, insitu_steps=3, eval_every=3, device_models=("ideal", "constant_step")))
    passed, rows = evaluate(t03.SPEC, res)
    assert not passed and not _crit(rows, "stuck_max_change")["passed"], res.metrics["by_device_model"]
    assert all(v["stuck_max_change"] > 0 for v in res.metrics["by_device_model"].values())

"""Track 44 on a tiny MLP and real MNIST slices: metrics and plots are produced, and each criterion
fails when the simulator path it names is broken (asymmetry dropped, pulse step ignored, updates lost)."""
import dataclasses

import pytest

from hwsim import devices
from hwsim.analog import AnalogCrossbarMLP
from tracks import t44_device_updates as t44
from tracks.harness.base import TrackContext, evaluate

TINY = {"sizes": (784, 16, 10), "n_train": 2000, "n_test": 300, "steps": 100, "asymmetries": (0.0, 0.9),
        "dw_mins": (t44.AIHWKIT_DW_MIN, 0.2), "models": ("ideal",), "nudgings": ("symmetric",)}


def _run(tmp_path, **ov):
    ctx = TrackContext(out_dir=tmp_path, quick=True, seeds=(0,), progress=False, overrides={**TINY, **ov})
    res = t44.run(ctx)
    passed, rows = evaluate(t44.SPEC, res)
    return res.metrics, {r["metric"]: r["passed"] for r in rows}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return _run(tmp_path_factory.mktemp("t44"))


def test_t44_tiny_learns_and_device_effects_show(tiny, tmp_path_factory):
    m, ok = tiny
    assert m["acc_ideal_symmetric"] > 0.5, m                      # learned from scratch on the chip
    assert ok["asym_drop_points"] and ok["dw_min_drop_points"], m   # asymmetry and coarse steps cost accuracy
    assert [p["up_down"] for p in m["asymmetry_curve"]] == [0.0, 0.9] and len(m["points"]) == 4
    plots = list(tmp_path_factory.getbasetemp().glob("t44*/plots/t44_*.png"))
    assert {p.name for p in plots} == {"t44_asymmetry.png", "t44_dw_min.png", "t44_nudging.png"}
    assert all(p.stat().st_size > 1000 for p in plots)


@pytest.mark.slow
def test_t44_fails_when_asymmetry_is_dropped(tmp_path, monkeypatch):
    real = devices.device_params
    monkeypatch.setattr(devices, "device_params", lambda spec, *a: real(dataclasses.replace(spec, up_down=0.0), *a))
    m, ok = _run(tmp_path)
    assert not ok["asym_drop_points"] and m["asym_drop_points"] == 0.0, m


@pytest.mark.slow
def test_t44_fails_when_pulse_step_is_ignored(tmp_path, monkeypatch):
    real_params, real_pulse = devices.device_params, devices.PULSE_UPDATES["numba"]

    def fixed(spec):
        return dataclasses.replace(spec, dw_min=t44.AIHWKIT_DW_MIN)

    monkeypatch.setattr(devices, "device_params", lambda spec, *a: real_params(fixed(spec), *a))
    monkeypatch.setitem(devices.PULSE_UPDATES, "numba",
                        lambda g, d, p, spec, *a: real_pulse(g, d, p, fixed(spec), *a))
    m, ok = _run(tmp_path)
    assert not ok["dw_min_drop_points"] and m["dw_min_drop_points"] == 0.0, m


@pytest.mark.slow
def test_t44_fails_when_updates_are_lost(tmp_path, monkeypatch):
    monkeypatch.setattr(AnalogCrossbarMLP, "apply_update", lambda self, delta: None)
    m, ok = _run(tmp_path, steps=20)
    assert not ok["acc_ideal_symmetric"] and m["acc_ideal_symmetric"] < 0.3, m


def test_t44_rejects_bad_settings(tmp_path):
    with pytest.raises(ValueError, match="asymmetries"):
        _run(tmp_path, asymmetries=(0.2, 0.4))
    with pytest.raises(ValueError, match="dw_min"):
        _run(tmp_path, dw_mins=(0.0, 0.1))
    with pytest.raises(ValueError, match="models"):
        _run(tmp_path, models=("constant_step",))

"""Spec validation, serialisation and presets."""
import dataclasses
import json

import pytest

from quant import AnalogSpec, FixedPoint, HardwareSpec, UpdateSpec, WeightFormat, get_preset, list_presets, register_preset
from quant import presets as presets_mod


@pytest.mark.parametrize("name", list_presets())
def test_every_preset_round_trips_json(name):
    spec = get_preset(name)
    assert spec.name == name
    again = HardwareSpec.from_json(spec.to_json())
    assert again == spec
    assert json.loads(spec.to_json()) == spec.to_dict()


def test_presets_contents():
    assert set(list_presets()) >= {"fp32", "int8", "int4", "ternary"}
    assert not get_preset("fp32").is_integer
    for name in ("int8", "int4", "ternary"):
        s = get_preset(name)
        assert s.is_integer
        assert s.state.code_of(1.0) == 2 ** (s.state.bits - 1)  # 1.0 exactly representable
    assert get_preset("ternary").weights.qmin == -1 and get_preset("ternary").weights.qmax == 1
    pcm = get_preset("analog_pcm").analog
    sigma_prog_at_gmax_uS = 0.26348 + 1.9650 - 1.1731  # Nandakumar 2019 polynomial at g = g_max
    assert abs(pcm.prog_noise_std - sigma_prog_at_gmax_uS / pcm.g_max_uS) < 5e-4


def test_analog_spec_round_trip_inside_hardware_spec():
    spec = get_preset("int8").replace(name="a", analog=AnalogSpec(prog_noise_std=0.03, adc_bits=8))
    assert HardwareSpec.from_json(spec.to_json()) == spec


@pytest.mark.parametrize(
    "cls,kwargs,field",
    [
        (WeightFormat, {"kind": "int5"}, "kind"),
        (WeightFormat, {"kind": "int", "bits": 1}, "bits"),
        (WeightFormat, {"kind": "int", "bits": 17}, "bits"),
        (WeightFormat, {"kind": "int", "bits": None}, "bits"),
        (WeightFormat, {"kind": "int8", "bits": 4}, "bits"),
        (WeightFormat, {"kind": "ternary", "narrow_range": False}, "narrow_range"),
        (WeightFormat, {"granularity": "per_row"}, "granularity"),
        (WeightFormat, {"scale_rule": "percentile"}, "scale_rule"),
        (WeightFormat, {"ternary_threshold": 0.0}, "ternary_threshold"),
        (WeightFormat, {"narrow_range": 1}, "narrow_range"),
        (FixedPoint, {"bits": 0}, "bits"),
        (FixedPoint, {"bits": 33}, "bits"),
        (FixedPoint, {"frac_bits": 7.0}, "frac_bits"),
        (FixedPoint, {"signed": "yes"}, "signed"),
        (UpdateSpec, {"hidden_bits": 40}, "hidden_bits"),
        (UpdateSpec, {"lr_shift": -1}, "lr_shift"),
        (UpdateSpec, {"lr_multiplier": 0}, "lr_multiplier"),
        (AnalogSpec, {"g_max_uS": -1.0}, "g_max_uS"),
        (AnalogSpec, {"read_noise_std": float("nan")}, "read_noise_std"),
        (AnalogSpec, {"adc_bits": 0}, "adc_bits"),
        (AnalogSpec, {"drift_nu": 2.0}, "drift_nu"),
        (HardwareSpec, {"acc_bits": 33}, "acc_bits"),
        (HardwareSpec, {"overflow": "clip"}, "overflow"),
        (HardwareSpec, {"rounding": "ceil"}, "rounding"),
        (HardwareSpec, {"name": ""}, "name"),
        (HardwareSpec, {"state": {"bits": 8}}, "state"),
        (HardwareSpec, {"weights": WeightFormat("int8"), "update": UpdateSpec(hidden_bits=4)}, "update"),
    ],
)
def test_validation_error_names_field_value_and_allowed(cls, kwargs, field):
    with pytest.raises(ValueError) as err:
        cls(**kwargs)
    msg = str(err.value)
    assert f"{cls.__name__}.{field}=" in msg
    assert "allowed" in msg


@pytest.mark.parametrize("cls", [WeightFormat, FixedPoint, UpdateSpec, AnalogSpec, HardwareSpec])
def test_unknown_keys_rejected_and_defaults_round_trip(cls):
    obj = cls()
    assert cls.from_dict(obj.to_dict()) == obj
    d = obj.to_dict() | {"bogus": 1}
    with pytest.raises(ValueError, match="unknown keys \\['bogus'\\]"):
        cls.from_dict(d)


def test_nested_unknown_key_rejected():
    d = get_preset("int8").to_dict()
    d["state"]["fraction_bits"] = 3
    with pytest.raises(ValueError, match="FixedPoint: unknown keys"):
        HardwareSpec.from_dict(d)


def test_specs_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        get_preset("int8").acc_bits = 16


def test_registry_errors_and_registration(monkeypatch):
    monkeypatch.setattr(presets_mod, "_PRESETS", dict(presets_mod._PRESETS))
    with pytest.raises(ValueError, match="allowed: \\['fp32', 'int8', 'int4', 'ternary'"):
        get_preset("int16")
    with pytest.raises(ValueError, match="already registered"):
        register_preset(HardwareSpec("int8"))
    mine = HardwareSpec("w6", WeightFormat("int", bits=6))
    register_preset(mine)
    assert get_preset("w6") is mine
    assert get_preset("int8").weights.bits == 8

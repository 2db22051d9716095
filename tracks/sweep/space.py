"""The design space of a sweep: every field of the hardware spec, found generically, and a grid over them.

A field is named by its dotted path from :class:`quant.spec.HardwareSpec`: ``acc_bits``, ``rounding``,
``weights.bits``, ``state.frac_bits``, ``update.lr_shift``, ``analog.adc_bits``,
``analog.prog_noise_std``, ...; the simulation options of the analog chip
(:class:`hwsim.analog.AnalogSimConfig`: drift time, update noise, ...) are under ``sim.``. The paths are
discovered with :func:`dataclasses.fields` (nested specs through their ``_NESTED`` table or a dataclass
default), so a field added to a spec class is sweepable without a change here.

A value is applied by editing the spec's ``to_dict()`` and rebuilding it with ``from_dict``: the spec's
own validation decides what is allowed, and its message is passed on with the field's path.

>>> "analog.adc_bits" in spec_fields() and "weights.bits" in spec_fields() and "sim.t_inference_s" in spec_fields()
True
>>> from quant import get_preset
>>> spec, sim = apply_fields(get_preset("analog_pcm"), None, {"analog.adc_bits": 4})
>>> spec.analog.adc_bits, spec.analog.prog_noise_std
(4, 0.042)
>>> apply_fields(get_preset("analog_pcm"), None, {"analog.adc_bits": 40})
Traceback (most recent call last):
...
ValueError: analog.adc_bits=40: AnalogSpec.adc_bits=40 is invalid; allowed: an int in [1, 16]
"""
from __future__ import annotations

import dataclasses
import itertools
import json
from typing import Any, Iterable, Mapping, Sequence

from quant.spec import HardwareSpec

SIM_PREFIX = "sim"
"""Path prefix of the analog simulation options (:class:`hwsim.analog.AnalogSimConfig`)."""
_EXCLUDED = ("name",)  # the spec's label is not a hardware property


def _sim_class():
    from hwsim.analog import AnalogSimConfig
    return AnalogSimConfig


def _nested_class(cls: type, f: dataclasses.Field) -> type | None:
    """The dataclass a field holds: from the class's ``_NESTED`` table, else from its default."""
    sub = getattr(cls, "_NESTED", {}).get(f.name)
    if sub is not None:
        return sub
    default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
    if dataclasses.is_dataclass(default) and not isinstance(default, type):
        return type(default)
    return None


def _walk(cls: type, prefix: str, out: dict[str, str]) -> None:
    for f in dataclasses.fields(cls):
        if not prefix and f.name in _EXCLUDED:
            continue
        path = f"{prefix}{f.name}"
        sub = _nested_class(cls, f)
        if sub is not None:
            _walk(sub, path + ".", out)
        else:
            out[path] = f"{cls.__name__}.{f.name}: {f.type}"


def spec_fields() -> dict[str, str]:
    """Every sweepable field: ``{dotted path: "Class.field: type"}`` (HardwareSpec and its nested specs,
    and ``sim.*`` of :class:`hwsim.analog.AnalogSimConfig`)."""
    out: dict[str, str] = {}
    _walk(HardwareSpec, "", out)
    _walk(_sim_class(), SIM_PREFIX + ".", out)
    return out


def check_field(path: str) -> None:
    """``ValueError`` naming an unknown field path and listing the known ones."""
    fields = spec_fields()
    if path not in fields:
        near = [p for p in fields if p.split(".")[-1] == path.split(".")[-1]]
        hint = f" (did you mean {near}?)" if near else ""
        raise ValueError(f"unknown spec field {path!r}{hint}; allowed: {sorted(fields)}")


def apply_fields(base: HardwareSpec, sim, fields: Mapping[str, Any]):
    """``(spec, sim)``: ``base`` and ``sim`` (an :class:`~hwsim.analog.AnalogSimConfig` or None for the
    defaults) with ``fields`` (dotted path -> value) set, each validated by the spec class itself.

    Raises:
        ValueError: an unknown path, a path into a section the base spec lacks (e.g. ``analog.*`` on a
            digital base), or a value the spec refuses; the message starts with ``path=value``.
    """
    sim_cls = _sim_class()
    spec_d = base.to_dict()
    sim_d = (sim or sim_cls()).to_dict()
    for path, value in fields.items():
        check_field(path)
        parts = path.split(".")
        if parts[0] == SIM_PREFIX:
            d, parts = sim_d, parts[1:]
        else:
            d = spec_d
        for i, p in enumerate(parts[:-1]):
            if d.get(p) is None:
                raise ValueError(f"{path}={value!r}: the base spec {base.name!r} has no {'.'.join(parts[:i + 1])!r} "
                                 f"section (it is None); use a base spec that has one (e.g. --base analog_pcm for "
                                 "analog.*, --base int8 for state.* and update.*) or set the whole section in a "
                                 "HardwareSpec JSON base")
            d = d[p]
        d[parts[-1]] = value
    try:
        spec = HardwareSpec.from_dict(spec_d)
    except (ValueError, TypeError) as e:
        raise ValueError(f"{_names(fields)}: {e}") from None
    try:
        sim = sim_cls.from_dict(sim_d)
    except (ValueError, TypeError) as e:
        raise ValueError(f"{_names({k: v for k, v in fields.items() if k.startswith(SIM_PREFIX + '.')})}: {e}") from None
    return spec, sim


def _names(fields: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in fields.items())


def parse_value(text: str) -> Any:
    """A command-line value: JSON (``4``, ``0.05``, ``true``, ``null``, ``"floor"``), else the string."""
    t = text.strip()
    if t.lower() in ("none", "null"):
        return None
    try:
        return json.loads(t)
    except json.JSONDecodeError:
        return t


def parse_assignment(text: str, *, many: bool) -> tuple[str, Any]:
    """``"field=v1,v2"`` -> ``(field, [v1, v2])`` (``many``) or ``"field=v"`` -> ``(field, v)``."""
    if "=" not in text:
        raise ValueError(f"{text!r}: expected FIELD=VALUE{',VALUE...' if many else ''} (e.g. analog.adc_bits=4,6,8)")
    key, _, val = text.partition("=")
    key = key.strip()
    if many:
        vals = [parse_value(v) for v in val.split(",") if v.strip()]
        if not vals:
            raise ValueError(f"{text!r}: no values after '='; expected FIELD=V1,V2,...")
        return key, vals
    return key, parse_value(val)


def canonical(value: Any) -> Any:
    """A JSON-stable form of a field value (ints stay ints, 0.1 stays 0.1)."""
    return json.loads(json.dumps(value))


def expand(grid: Mapping[str, Sequence[Any]], points: Iterable[Mapping[str, Any]] | None = None) -> list[dict[str, Any]]:
    """Field settings of a sweep: each of ``points`` (a list of ``{field: value}``; default one empty
    point) crossed with the Cartesian product of ``grid`` (``{field: [values]}``, fields in order).

    Raises:
        ValueError: an empty or repeated value list, or two settings of one field.
    """
    for k, vals in grid.items():
        if not isinstance(vals, (list, tuple)) or not vals:
            raise ValueError(f"grid field {k!r}: {vals!r}; allowed: a non-empty list of values")
        c = [json.dumps(canonical(v), sort_keys=True) for v in vals]
        dup = sorted({v for v in c if c.count(v) > 1})
        if dup:
            raise ValueError(f"grid field {k!r} repeats {dup}; give distinct values")
    pts = [dict(p) for p in (points or [{}])]
    out = []
    keys = list(grid)
    for p in pts:
        both = sorted(set(p) & set(keys))
        if both:
            raise ValueError(f"fields {both} are set both in a listed point and in the grid; set each in one place")
        for combo in itertools.product(*(grid[k] for k in keys)):
            out.append({**p, **dict(zip(keys, combo))})
    return out

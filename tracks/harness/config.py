"""Typed track configs and the validation of ``--set KEY=VALUE`` against them.

Every track module defines a frozen dataclass of its settings with a comment on each field and two
instances, ``QUICK`` and ``FULL``. One rule says which setting wins: the mode's instance
(``--quick`` or not), replaced field by field by the overrides. Overrides are checked *before any
work* (:func:`resolve_overrides`, called by the CLI and the runner): an unknown key, or a value of
the wrong type, is a :class:`ConfigError` naming the track, the key, the expected type and the
allowed keys. A config's own ``__post_init__`` checks ranges (e.g. ``n_test >= 1``).

Scoping on the command line: ``--set n_test=100`` applies to every selected track and must be a
setting of each of them; ``--set 17.n_test=100`` (or ``analog_noise.n_test=100``) applies to one
track.

>>> import dataclasses
>>> @dataclasses.dataclass(frozen=True)
... class Demo:
...     n_test: int = 10          # test images
...     nets: tuple = ("1h",)     # networks to run
>>> apply_overrides(Demo(), {"n_test": 5, "nets": ["2h"]}, label="demo")
Demo(n_test=5, nets=('2h',))
>>> apply_overrides(Demo(), {"n_test": "abc"}, label="demo")
Traceback (most recent call last):
...
tracks.harness.config.ConfigError: demo: --set n_test='abc': expected int; allowed keys: n_test (int), nets (tuple)
"""
from __future__ import annotations

import dataclasses
import json
import sys
import types
import typing
from typing import Any, Iterable, Mapping


class ConfigError(ValueError):
    """A setting is unknown, of the wrong type or out of range; the message names the key and the fix."""


def parse_set_options(items: Iterable[str]) -> dict[str, Any]:
    """``["n_test=100", "nets=[\\"1h\\"]"]`` -> ``{"n_test": 100, "nets": ["1h"]}`` (VALUE parsed as JSON,
    else kept as a string).

    >>> parse_set_options(["n_test=100", "17.name=abc"])
    {'n_test': 100, '17.name': 'abc'}
    """
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = str(item).partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE (e.g. --set n_test=1000)")
        if key in out:
            raise ConfigError(f"--set {key} given twice; give each key once")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def _hints(cls: type) -> dict[str, Any]:
    mod = sys.modules.get(cls.__module__)
    return typing.get_type_hints(cls, globalns=vars(mod) if mod else None)


def _type_name(hint: Any) -> str:
    if hint is Any:
        return "any"
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type_name(a) for a in typing.get_args(hint))
    if origin is tuple:
        args = typing.get_args(hint)
        return f"tuple of {_type_name(args[0])}" if len(args) == 2 and args[1] is Ellipsis else "tuple"
    if origin is dict:
        return "dict"
    if origin is not None and getattr(origin, "__name__", None) == "Callable" or hint is typing.Callable:
        return "callable"
    if hint is type(None):
        return "null"
    return getattr(hint, "__name__", str(hint))


class _Mismatch(Exception):
    pass


def coerce(value: Any, hint: Any) -> Any:
    """``value`` as type ``hint`` (JSON lists become tuples, ints become floats); raises on mismatch.

    Supported hints: ``bool``, ``int``, ``float``, ``str``, ``tuple`` / ``tuple[T, ...]``, ``dict``,
    ``X | None``, ``Any`` / ``object`` (anything), a callable type (callables, from the API only).
    """
    if hint is Any or hint is object:
        return value
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(hint):
            try:
                return coerce(value, arg)
            except _Mismatch:
                continue
        raise _Mismatch
    if hint is type(None):
        if value is None:
            return None
        raise _Mismatch
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise _Mismatch
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise _Mismatch
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise _Mismatch
    if hint is str:
        if isinstance(value, str):
            return value
        raise _Mismatch
    if hint is tuple or origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise _Mismatch
        args = typing.get_args(hint)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(coerce(v, args[0]) for v in value)
        return tuple(value)
    if hint is dict or origin is dict:
        if isinstance(value, dict):
            return dict(value)
        raise _Mismatch
    if origin is not None and getattr(origin, "__name__", "") == "Callable" or hint is typing.Callable:
        if callable(value):
            return value
        raise _Mismatch
    if isinstance(hint, type):
        if isinstance(value, hint):
            return value
        raise _Mismatch
    return value


def describe_keys(cfg: Any) -> str:
    """``"key (type), ..."`` of a config dataclass (for error messages)."""
    hints = _hints(type(cfg))
    return ", ".join(f"{f.name} ({_type_name(hints[f.name])})" for f in dataclasses.fields(cfg))


def apply_overrides(cfg: Any, overrides: Mapping[str, Any], *, label: str) -> Any:
    """``dataclasses.replace(cfg, **overrides)`` with every key and type checked.

    Raises:
        ConfigError: unknown key, wrong type, or a value the config's ``__post_init__`` refuses;
            the message starts with ``label`` (e.g. ``"track 17 (analog_noise)"``).
    """
    if not overrides:
        return cfg
    hints = _hints(type(cfg))
    names = [f.name for f in dataclasses.fields(cfg)]
    kw = {}
    for key, value in overrides.items():
        if key not in names:
            raise ConfigError(f"{label}: unknown setting --set {key}; allowed keys: {describe_keys(cfg)}")
        try:
            kw[key] = coerce(value, hints[key])
        except _Mismatch:
            raise ConfigError(f"{label}: --set {key}={value!r}: expected {_type_name(hints[key])}; "
                              f"allowed keys: {describe_keys(cfg)}") from None
    try:
        return dataclasses.replace(cfg, **kw)
    except (ValueError, TypeError) as e:
        raise ConfigError(f"{label}: {e}") from None


def track_label(track: Any) -> str:
    return f"track {track.id} ({track.slug})"


def split_scoped(overrides: Mapping[str, Any], selected: Iterable[Any]) -> dict[str, dict[str, Any]]:
    """Overrides per track module: ``KEY`` goes to every selected track, ``ID.KEY`` / ``SLUG.KEY`` to one.

    Raises:
        ConfigError: a scope names no selected track.
    """
    selected = list(selected)
    per: dict[str, dict[str, Any]] = {t.module: {} for t in selected}
    for key, value in overrides.items():
        scope, dot, name = key.partition(".")
        if dot:
            match = [t for t in selected if scope.lower() in (str(t.id), f"{t.id:02d}", t.slug.lower(), t.key.lower())]
            if not match:
                raise ConfigError(f"--set {key}: {scope!r} is not a selected track; selected: "
                                  + ", ".join(f"{t.id} ({t.slug})" for t in selected))
            for t in match:
                per[t.module][name] = value
        else:
            for t in selected:
                per[t.module][key] = value
    return per


def resolve_overrides(selected: Iterable[Any], overrides: Mapping[str, Any], *, quick: bool, device: str = "cpu",
                      full_recipe: bool = False) -> dict[str, Any]:
    """Validate ``overrides`` against every selected track's config of the variant that runs (``QUICK``;
    ``CPU_FULL`` on a CPU device unless ``full_recipe``; ``FULL``); returns ``{module: config}``
    (``None`` for a track without a typed config, which then accepts no overrides).

    Raises:
        ConfigError: naming the track, the key, the expected type and the allowed keys.
    """
    selected = list(selected)
    per = split_scoped(overrides, selected)
    out: dict[str, Any] = {}
    for t in selected:
        base = t.config(quick, device, full_recipe) if hasattr(t, "config") else None
        ov = per[t.module]
        if base is None:
            if ov:
                raise ConfigError(f"{track_label(t)} has no settings; --set {', '.join(sorted(ov))} does not apply "
                                  "(scope a setting to a track with --set ID.KEY=VALUE)")
            out[t.module] = None
            continue
        try:
            out[t.module] = apply_overrides(base, ov, label=track_label(t))
        except ConfigError as e:
            if len(selected) > 1 and any("." not in k for k in overrides):
                raise ConfigError(f"{e}\n(a --set KEY applies to every selected track; scope it to one with "
                                  f"--set {t.id}.KEY=VALUE)") from None
            raise
    return out

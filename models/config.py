"""One ``to_dict`` / ``from_dict`` for the frozen dataclass configs of ``models`` (and their users).

>>> from dataclasses import dataclass
>>> @dataclass(frozen=True)
... class Demo(DictConfig):
...     sizes: tuple = (4, 2)
...     lr: float = 0.1
>>> Demo().to_dict()
{'sizes': [4, 2], 'lr': 0.1}
>>> Demo.from_dict({"sizes": [3, 1]})
Demo(sizes=[3, 1], lr=0.1)
>>> Demo.from_dict({"size": 3})
Traceback (most recent call last):
...
ValueError: Demo: unknown keys ['size']; valid: ['lr', 'sizes']
>>> Demo.from_dict("hello")
Traceback (most recent call last):
...
ValueError: Demo: expected a dict of settings, got str
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, fields
from typing import Any, TypeVar

T = TypeVar("T", bound="DictConfig")


def _plain(v: Any) -> Any:
    if isinstance(v, (tuple, list)):
        return [_plain(a) for a in v]
    if isinstance(v, dict):
        return {k: _plain(a) for k, a in v.items()}
    return v


class DictConfig:
    """Mixin for frozen dataclass configs: JSON-ready ``to_dict`` (tuples as lists) and a strict
    ``from_dict`` (a non-dict or an unknown key is a ``ValueError`` naming the class and the valid
    keys; values are validated by the dataclass's own ``__post_init__``)."""

    def to_dict(self) -> dict[str, Any]:
        return {k: _plain(v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls: type[T], d: Mapping[str, Any]) -> T:
        if not isinstance(d, Mapping):
            raise ValueError(f"{cls.__name__}: expected a dict of settings, got {type(d).__name__}")
        valid = sorted(f.name for f in fields(cls))
        unknown = sorted(set(d) - set(valid))
        if unknown:
            raise ValueError(f"{cls.__name__}: unknown keys {unknown}; valid: {valid}")
        return cls(**d)

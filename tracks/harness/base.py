"""Track contract: a numbered claim, a pass criterion as data, and a ``run(ctx)``.

A track module defines ``SPEC = TrackSpec(...)`` and ``run(ctx: TrackContext) -> TrackResult`` and is
registered in ``tracks/__init__.py``. Criteria are data (``Criterion``), evaluated against the metrics
the run measured, so a report can show the threshold next to the measured value and a test can check
that a broken path fails.

>>> c = Criterion("min_layer_cosine", ">=", 0.999)
>>> c.check({"min_layer_cosine": 0.9995})
True
>>> c.check({"min_layer_cosine": 0.5})
False
"""
from __future__ import annotations

import logging
import math
import operator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

log = logging.getLogger("eqprop_hwsim.tracks")

_OPS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt, "==": operator.eq,
}


@dataclass(frozen=True)
class Criterion:
    """``metrics[metric] <op> threshold``; a missing or NaN metric fails."""

    metric: str
    op: str
    threshold: float

    def __post_init__(self) -> None:
        if self.op not in _OPS:
            raise ValueError(f"Criterion.op={self.op!r}; allowed: {sorted(_OPS)}")

    def check(self, metrics: dict[str, Any]) -> bool:
        value = metrics.get(self.metric)
        if value is None or isinstance(value, (dict, list, str)):
            return False
        value = float(value)
        if math.isnan(value):
            return False
        return bool(_OPS[self.op](value, float(self.threshold)))

    def to_dict(self) -> dict[str, Any]:
        return {"metric": self.metric, "op": self.op, "threshold": self.threshold}

    def describe(self) -> str:
        return f"{self.metric} {self.op} {self.threshold:g}"


@dataclass(frozen=True)
class TrackSpec:
    """What a track claims and how it is judged."""

    id: int
    slug: str
    name: str
    claim: str
    criteria: tuple[Criterion, ...]
    est_seconds_full: float
    est_seconds_quick: float

    def __post_init__(self) -> None:
        if not self.slug.replace("_", "").replace("-", "").isalnum():
            raise ValueError(f"TrackSpec.slug={self.slug!r} must be alphanumeric with - or _")
        if not self.criteria:
            raise ValueError(f"track {self.id}: at least one pass criterion is required")


@dataclass
class TrackContext:
    """What the runner hands a track: where to write, how hard to try, where data lives."""

    out_dir: Path
    quick: bool = False
    seeds: tuple[int, ...] = (0, 1, 2)
    data_dir: str | None = None
    device: str = "cpu"
    progress: bool = True
    overrides: dict[str, Any] = field(default_factory=dict)

    def check_overrides(self, allowed) -> None:
        """Raise ``ValueError`` naming any override key the track does not accept."""
        unknown = sorted(set(self.overrides) - set(allowed))
        if unknown:
            raise ValueError(f"unknown overrides {unknown}; allowed: {sorted(allowed)}")

    @property
    def plots_dir(self) -> Path:
        p = Path(self.out_dir) / "plots"
        p.mkdir(parents=True, exist_ok=True)
        return p


@dataclass
class TrackResult:
    """``metrics`` holds numbers (stable API names) and may hold tables (lists/dicts) for the report.

    ``passed`` is computed by the runner from the spec's criteria; a track may force ``passed=False``
    (e.g. a precondition failed) by setting ``failure``.
    """

    metrics: dict[str, Any]
    artifacts: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    failure: str | None = None


def evaluate(spec: TrackSpec, result: TrackResult) -> tuple[bool, list[dict[str, Any]]]:
    """Judge ``result`` against ``spec.criteria``; returns (passed, per-criterion rows)."""
    rows = []
    for c in spec.criteria:
        rows.append({**c.to_dict(), "value": result.metrics.get(c.metric), "passed": c.check(result.metrics)})
    passed = result.failure is None and all(r["passed"] for r in rows)
    return passed, rows

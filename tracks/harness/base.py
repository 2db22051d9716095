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
    #: estimate of the CPU-reduced full variant (module ``CPU_FULL``, see :func:`variant_name`); None: no such variant
    est_seconds_cpu_full: float | None = None

    def __post_init__(self) -> None:
        if not self.slug.replace("_", "").replace("-", "").isalnum():
            raise ValueError(f"TrackSpec.slug={self.slug!r} must be alphanumeric with - or _")
        if not self.criteria:
            raise ValueError(f"track {self.id}: at least one pass criterion is required")


def check_device(device: str):
    """``torch.device(device)`` if that device exists here, else ``ValueError`` naming what is available."""
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise ValueError(f"device {device!r} is not a torch device ({e}); allowed: cpu, cuda, cuda:N, mps") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {device!r}: CUDA is not available on this machine; use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"device {device!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    elif dev.type == "mps":
        if not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
            raise ValueError(f"device {device!r}: MPS is not available on this machine; use --device cpu")
    elif dev.type != "cpu":
        raise ValueError(f"device {device!r}: allowed: cpu, cuda, cuda:N, mps")
    return dev


#: the three settings levels of a track (``variant`` in results.json and report.md)
QUICK_VARIANT, FULL_VARIANT, CPU_FULL_VARIANT = "quick", "full", "full (CPU-reduced)"


def uses_cpu_full(device: str, full_recipe: bool = False) -> bool:
    """Whether a non-quick run uses a track's CPU-reduced full config (module ``CPU_FULL``): on a CPU
    device, unless ``full_recipe`` (``run_suite.py --full-recipe``) asks for the GPU recipe (``FULL``).
    Any CUDA or MPS device runs ``FULL``.

    >>> uses_cpu_full("cpu"), uses_cpu_full("cpu", full_recipe=True), uses_cpu_full("cuda:0")
    (True, False, False)
    """
    return str(device).split(":")[0] == "cpu" and not full_recipe


def variant_name(quick: bool, device: str, full_recipe: bool = False, has_cpu_full: bool = False) -> str:
    """``"quick"``, ``"full"`` (the track's ``FULL``, the GPU recipe where it has a CPU-reduced one) or
    ``"full (CPU-reduced)"`` (its ``CPU_FULL``).

    >>> variant_name(False, "cpu", has_cpu_full=True), variant_name(False, "cuda", has_cpu_full=True)
    ('full (CPU-reduced)', 'full')
    >>> variant_name(True, "cpu", has_cpu_full=True), variant_name(False, "cpu")
    ('quick', 'full')
    """
    if quick:
        return QUICK_VARIANT
    return CPU_FULL_VARIANT if has_cpu_full and uses_cpu_full(device, full_recipe) else FULL_VARIANT


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
    config: Any = None  # the validated typed config (set by the runner); None: built from overrides
    #: the run's shared :class:`tracks.harness.model_cache.ModelCache` (``<out>/model_cache``); the runner
    #: hands every track the same one, so a model one track trained is loaded by the next
    model_cache: Any = None
    #: run the GPU recipe (``FULL``) even on the CPU (``run_suite.py --full-recipe``); default: a track's
    #: ``CPU_FULL`` config on a CPU device
    full_recipe: bool = False

    def __post_init__(self) -> None:
        if self.model_cache is None:
            from .model_cache import CACHE_DIR_NAME, ModelCache
            self.model_cache = ModelCache(Path(self.out_dir) / CACHE_DIR_NAME)

    def settings(self, quick_cfg: Any, full_cfg: Any, cpu: Any = None) -> Any:
        """The track's typed config: ``self.config`` when the runner resolved it, else the variant's
        instance with ``self.overrides`` applied and validated. The variant: ``quick_cfg`` with
        ``quick``; else ``cpu`` (the CPU-reduced full config, if the track has one) on a CPU device
        unless ``full_recipe``; else ``full_cfg`` (the GPU recipe).

        Raises:
            tracks.harness.config.ConfigError: an unknown key or a value of the wrong type.
        """
        base = quick_cfg if self.quick else (
            cpu if cpu is not None and uses_cpu_full(self.device, self.full_recipe) else full_cfg)
        if self.config is not None and type(self.config) is type(base):
            return self.config
        from .config import apply_overrides
        return apply_overrides(base, self.overrides, label=f"track config {type(base).__name__}")

    def variant(self, has_cpu_full: bool = False) -> str:
        """The settings level this context selects (:func:`variant_name`)."""
        return variant_name(self.quick, self.device, self.full_recipe, has_cpu_full)

    @property
    def torch_device(self):
        """``torch.device(self.device)``, checked to exist (:func:`check_device`)."""
        return check_device(self.device)

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

"""Track registry: discovers ``tracks/tNN_slug.py`` modules (plain dict, ``get_track`` lists valid names).

A track is a module ``tracks/tNN_slug.py`` (e.g. ``t02_eqprop_vs_bptt.py``) defining
``SPEC: TrackSpec`` and ``run(ctx: TrackContext) -> TrackResult`` (see :mod:`tracks.harness.base`),
and optionally a typed config (``QUICK`` and ``FULL`` instances of a frozen dataclass, see
:mod:`tracks.harness.config`), and optionally ``CPU_FULL``, a CPU-reduced full config of the same class
that a non-quick run on a CPU device uses instead of ``FULL`` (the GPU recipe; see
:func:`tracks.harness.base.variant_name`). Modules are discovered with :mod:`pkgutil` on first use; nothing needs
to be registered by hand. A module whose import fails (or whose ``SPEC`` is invalid) is listed as
*broken* with the error instead of breaking the listing of the others, and fails when run.

>>> parse_track_filename("t02_eqprop_vs_bptt")
(2, 'eqprop_vs_bptt')
>>> parse_track_filename("base") is None
True
"""
from __future__ import annotations

import dataclasses
import importlib
import logging
import pkgutil
import re
import traceback
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Callable

from .base import (CPU_FULL_VARIANT, QUICK_VARIANT, TrackContext, TrackResult, TrackSpec, uses_cpu_full,
                   variant_name)

log = logging.getLogger("eqprop_hwsim.tracks")

TRACKS_PACKAGE = "tracks"  # the package whose tNN_slug.py modules are the tracks
_TRACK_MODULE = re.compile(r"^t(\d{1,3})_([A-Za-z0-9_]+)$")


class UnknownTrackError(LookupError):
    """No track has the requested id or slug; the message lists the valid ones."""

    def __str__(self) -> str:  # LookupError would repr() the message
        return str(self.args[0]) if self.args else ""


@dataclass(frozen=True)
class Track:
    """A discovered track: its spec and ``run``, or the error that kept it from loading."""

    id: int
    slug: str
    module: str  # dotted module name
    spec: TrackSpec | None
    run: Callable[[TrackContext], TrackResult] | None
    error: str | None = None  # import / validation failure with traceback; None when usable
    quick_config: Any = None  # the module's QUICK config instance (a frozen dataclass), if it has one
    full_config: Any = None  # the module's FULL config instance
    cpu_full_config: Any = None  # the module's CPU_FULL config instance (CPU-reduced full), if it has one

    def config(self, quick: bool, device: str = "cpu", full_recipe: bool = False) -> Any:
        """The typed config of the variant (``QUICK``, ``CPU_FULL`` or ``FULL``; see :meth:`variant`),
        ``None`` for a track without one."""
        if quick:
            return self.quick_config
        if self.cpu_full_config is not None and uses_cpu_full(device, full_recipe):
            return self.cpu_full_config
        return self.full_config

    def variant(self, quick: bool, device: str = "cpu", full_recipe: bool = False) -> str:
        """``"quick"``, ``"full"`` or ``"full (CPU-reduced)"``."""
        return variant_name(quick, device, full_recipe, self.cpu_full_config is not None)

    def est_seconds(self, variant: str) -> float | None:
        """The spec's estimate of ``variant`` (``None`` for a broken track)."""
        if self.spec is None:
            return None
        if variant == QUICK_VARIANT:
            return self.spec.est_seconds_quick
        if variant == CPU_FULL_VARIANT and self.spec.est_seconds_cpu_full is not None:
            return self.spec.est_seconds_cpu_full
        return self.spec.est_seconds_full

    @property
    def broken(self) -> bool:
        return self.error is not None

    @property
    def name(self) -> str:
        return self.spec.name if self.spec is not None else f"(broken: {self.module})"

    @property
    def key(self) -> str:
        """``tNN_slug``, the module's file stem."""
        return f"t{self.id:02d}_{self.slug}"


def parse_track_filename(stem: str) -> tuple[int, str] | None:
    """``"t02_eqprop_vs_bptt"`` -> ``(2, "eqprop_vs_bptt")``; ``None`` if not a track module name."""
    m = _TRACK_MODULE.match(stem)
    return (int(m.group(1)), m.group(2)) if m else None


_discovered: dict[str, Track] | None = None  # module name -> Track
_registered: dict[str, Track] = {}  # module name -> Track


def _track_from_module(module: ModuleType, module_name: str, id_hint: int | None = None,
                       slug_hint: str | None = None) -> Track:
    spec = getattr(module, "SPEC", None)
    run = getattr(module, "run", None)
    problems = []
    if not isinstance(spec, TrackSpec):
        problems.append(f"SPEC is {type(spec).__name__}, expected tracks.base.TrackSpec")
    if not callable(run):
        problems.append("no callable run(ctx)")
    if isinstance(spec, TrackSpec) and id_hint is not None and spec.id != id_hint:
        problems.append(f"SPEC.id={spec.id} but the file name says {id_hint}")
    if problems:
        return Track(id_hint if id_hint is not None else getattr(spec, "id", -1),
                     slug_hint or getattr(spec, "slug", module_name), module_name,
                     None, None, f"{module_name}: " + "; ".join(problems))
    if slug_hint is not None and spec.slug != slug_hint:
        log.warning("%s: SPEC.slug=%r differs from the file name slug %r; using SPEC.slug",
                    module_name, spec.slug, slug_hint)
    quick_cfg, full_cfg = getattr(module, "QUICK", None), getattr(module, "FULL", None)
    if (quick_cfg is None) != (full_cfg is None) or any(
            c is not None and not dataclasses.is_dataclass(c) for c in (quick_cfg, full_cfg)):
        return Track(spec.id, spec.slug, module_name, None, None,
                     f"{module_name}: QUICK and FULL must both be config dataclass instances (or both absent)")
    cpu_cfg = getattr(module, "CPU_FULL", None)
    if cpu_cfg is not None and (full_cfg is None or type(cpu_cfg) is not type(full_cfg)):
        return Track(spec.id, spec.slug, module_name, None, None,
                     f"{module_name}: CPU_FULL must be an instance of FULL's config class "
                     f"({type(full_cfg).__name__}), got {type(cpu_cfg).__name__}")
    return Track(spec.id, spec.slug, module_name, spec, run, quick_config=quick_cfg, full_config=full_cfg,
                 cpu_full_config=cpu_cfg)


def _discover() -> dict[str, Track]:
    global _discovered
    if _discovered is not None:
        return _discovered
    found: dict[str, Track] = {}
    by_id: dict[int, str] = {}
    package = importlib.import_module(TRACKS_PACKAGE)
    for info in pkgutil.iter_modules(package.__path__):
        parsed = parse_track_filename(info.name)
        if parsed is None:
            continue
        tid, slug = parsed
        module_name = f"{TRACKS_PACKAGE}.{info.name}"
        try:
            module = importlib.import_module(module_name)
            track = _track_from_module(module, module_name, tid, slug)
        except BaseException as e:  # noqa: BLE001 - a broken track must not break --list
            if isinstance(e, KeyboardInterrupt):
                raise
            err = f"{module_name}: import failed: {type(e).__name__}: {e}\n{traceback.format_exc()}"
            log.warning("track %s is broken: %s: %s", info.name, type(e).__name__, e)
            track = Track(tid, slug, module_name, None, None, err)
        if track.id in by_id:
            other = by_id[track.id]
            log.warning("track id %d used by %s and %s", track.id, other, module_name)
            track = Track(track.id, track.slug, module_name, None, None,
                          f"{module_name}: duplicate track id {track.id} (also {other})")
        by_id.setdefault(track.id, module_name)
        found[module_name] = track
    _discovered = found
    return found


def refresh() -> None:
    """Forget discovered tracks so the next call re-scans ``tracks/`` (registered ones are kept)."""
    global _discovered
    _discovered = None


def register_track(module: Any, *, replace: bool = False) -> Track:
    """Register a track object (a module or any object with ``SPEC`` and ``run``), e.g. in tests.

    Raises:
        ValueError: the object is not a valid track, or its id is taken (unless ``replace``).
    """
    name = getattr(module, "__name__", type(module).__name__)
    track = _track_from_module(module, name)
    if track.broken:
        raise ValueError(track.error)
    taken = [t for t in all_tracks() if t.id == track.id]
    if taken and not replace:
        raise ValueError(f"track id {track.id} already used by {taken[0].module}; pass replace=True")
    for t in taken:
        _registered.pop(t.module, None)
    _registered[name] = track
    return track


def unregister_track(track_id: int) -> None:
    """Remove a track added with :func:`register_track` (no-op if absent)."""
    for name in [n for n, t in _registered.items() if t.id == int(track_id)]:
        del _registered[name]


def all_tracks(include_broken: bool = True) -> list[Track]:
    """Every track sorted by id; broken ones (import failed) included unless asked otherwise."""
    reg_ids = {t.id for t in _registered.values()}
    merged = [t for t in _discover().values() if t.id not in reg_ids] + list(_registered.values())
    tracks = sorted(merged, key=lambda t: (t.id, t.broken, t.module))
    return [t for t in tracks if include_broken or not t.broken]


def get_track(id_or_slug: int | str) -> Track:
    """Find a track by id (``2``, ``"2"``, ``"02"``, ``"t02"``), slug, or module stem ``"t02_slug"``.

    Raises:
        UnknownTrackError: nothing matches; the message lists the valid ids and slugs.
    """
    tracks = all_tracks()
    key = str(id_or_slug).strip()
    low = key.lower()
    num = low[1:] if low.startswith("t") and low[1:].isdigit() else low
    for t in tracks:
        if (num.isdigit() and int(num) == t.id) or low in (t.slug.lower(), t.key.lower()):
            return t
    valid = ", ".join(f"{t.id} ({t.slug})" for t in tracks) or "none (no tracks/tNN_*.py modules found)"
    raise UnknownTrackError(f"unknown track {id_or_slug!r}; valid: {valid}")



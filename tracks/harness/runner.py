"""Run tracks, judge them against their criteria, and write ``results.json`` and ``report.md``.

The runner never prints: it logs to ``eqprop_hwsim.tracks`` (and to ``<out>/suite.log`` while it
runs) and calls ``on_done(TrackRun)`` as each track finishes so a CLI can print a table row. A track
that raises fails on its own (message and traceback recorded); the others still run. Results are
rewritten after every track, so an interrupted suite leaves valid, partial files: every selected track
is listed from the start with ``"not_run": true`` and ``"passed": false`` until it ran, and
``suite.state`` is ``running`` (or a killed run), ``interrupted`` (Ctrl-C) or ``complete``; only a
complete suite can pass.

``results.json`` (DESIGN section 7)::

    {"suite": {"version", "started", "finished", "state", "argv", "machine", "commit", "out_dir",
               "quick", "full_recipe", "seeds", "device", "data_dir", "data_root", "overrides", "resumes",
               "passed"},
     "tracks": [{"id", "slug", "name", "claim", "variant", "passed", "criteria", "metrics", "artifacts",
                 "seconds", "notes", "failure", "traceback", "not_run", "resumed", "model_cache"}]}

``variant`` is the settings level the track ran: ``"quick"``, ``"full"`` or ``"full (CPU-reduced)"``
(the track's ``CPU_FULL`` config, used instead of its GPU recipe ``FULL`` on a CPU device unless
``full_recipe``; see :func:`tracks.harness.base.variant_name`); a CPU-reduced row also starts its notes
with that, so report.md says it next to the figures.

Resume (``run_tracks(..., resume=True)``, ``run_suite.py --all --resume DIR``): an interrupted or
killed run continues in its own folder. Tracks whose row in ``DIR/results.json`` is finished (passed or
failed, ``not_run`` false) are kept as they are, marked ``"resumed": true``, and not rerun; the others
run. The run's inputs (quick, seeds, ``--set`` overrides, data folder, device) must equal the recorded
ones, else :class:`ResumeMismatchError` names the differing input and nothing is touched. Each resume
appends ``{"at", "argv", "commit", "previous_state", "kept", "rerun"}`` to ``suite["resumes"]``.
Models trained before the interruption are in ``DIR/model_cache`` and are loaded, not retrained; a
training killed mid-way continues from its last epoch when its ``train_fn`` takes ``resumable``
(:class:`tracks.harness.model_cache.Resumable`), else it restarts from scratch.

Every track gets the same ``ctx.model_cache`` (:class:`tracks.harness.model_cache.ModelCache` in
``<out>/model_cache``); each row records its cache use as ``"model_cache": {"trained", "loaded",
"corrupt"}``.

Every track gets the same ``ctx.out_dir`` (the suite folder) and ``ctx.plots_dir`` (``<out>/plots``);
tracks prefix their file names with ``tNN_`` so they do not collide, and return the paths in
``TrackResult.artifacts`` (recorded relative to the suite folder).

Metrics are made JSON-safe by :func:`json_safe`: numpy scalars and arrays become Python numbers and
lists, NaN and +-inf become ``null``.

>>> json_safe({"a": float("nan"), "b": [1, 2.5], "c": (True, None)})
{'a': None, 'b': [1, 2.5], 'c': [True, None]}
>>> import numpy as np
>>> json_safe({"x": np.float32(0.5), "v": np.arange(3), 7: np.array([np.inf])})
{'x': 0.5, 'v': [0, 1, 2], '7': [None]}
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import importlib.metadata
import json
import logging
import math
import os
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from .registry import Track, get_track
from .base import CPU_FULL_VARIANT, TrackContext, TrackResult, evaluate
from .machine import describe_machine
from .model_cache import CACHE_DIR_NAME, ModelCache

log = logging.getLogger("eqprop_hwsim.tracks")

RESULTS_FILE = "results.json"
REPORT_FILE = "report.md"
LOG_FILE = "suite.log"
DEFAULT_RUNS_ROOT = Path("runs")


class OutDirError(ValueError):
    """The output folder exists and is not empty (results are never overwritten)."""


class ResumeMismatchError(ValueError):
    """A resume's inputs differ from the run it continues (the message names the input), or the folder
    holds no run to resume."""


def json_safe(obj: Any) -> Any:
    """Recursively convert ``obj`` to JSON-serialisable Python (non-finite floats -> ``None``)."""
    if obj is None or isinstance(obj, (bool, str, int)):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, np.generic):
        return json_safe(obj.item())
    if isinstance(obj, np.ndarray):
        return json_safe(obj.tolist())
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return json_safe(obj.to_dict() if hasattr(obj, "to_dict") else dataclasses.asdict(obj))
    if hasattr(obj, "to_dict"):
        return json_safe(obj.to_dict())
    if hasattr(obj, "detach") and hasattr(obj, "tolist"):  # torch tensor
        return json_safe(obj.detach().cpu().tolist())
    if hasattr(obj, "tolist"):
        return json_safe(obj.tolist())
    return str(obj)


@dataclass
class TrackRun:
    """The outcome of one track, as written to ``results.json``."""

    id: int
    slug: str
    name: str
    claim: str
    passed: bool
    criteria: list[dict[str, Any]]
    metrics: dict[str, Any]
    artifacts: list[str]
    seconds: float
    notes: list[str] = field(default_factory=list)
    failure: str | None = None
    traceback: str | None = None
    est_seconds: float | None = None  # the spec's estimate for this mode, for the report
    not_run: bool = False  # the suite stopped (interrupted or killed) before this track ran
    resumed: bool = False  # kept from an earlier session of this run folder (--resume), not rerun
    model_cache: dict[str, int] | None = None  # {"trained", "loaded", "corrupt"} entries of the shared cache
    variant: str | None = None  # "quick", "full" or "full (CPU-reduced)" (None: a row written before variants)

    def to_dict(self) -> dict[str, Any]:
        return json_safe(dataclasses.asdict(self))

    def key_criterion(self) -> dict[str, Any] | None:
        """The first criterion row (the headline number of the track), if any."""
        return self.criteria[0] if self.criteria else None


@dataclass
class SuiteResult:
    """All track outcomes of one run plus where they were written."""

    out_dir: Path
    suite: dict[str, Any]
    tracks: list[TrackRun]

    @property
    def passed(self) -> bool:
        """Every selected track ran and passed (an interrupted or unfinished suite never passes)."""
        return (bool(self.tracks) and all(t.passed for t in self.tracks)
                and self.suite.get("state", "complete") == "complete")

    @property
    def interrupted(self) -> bool:
        return self.suite.get("state") == "interrupted"

    @property
    def failed(self) -> list[TrackRun]:
        return [t for t in self.tracks if not t.passed]

    @property
    def results_path(self) -> Path:
        return self.out_dir / RESULTS_FILE

    @property
    def report_path(self) -> Path:
        return self.out_dir / REPORT_FILE

    def to_dict(self) -> dict[str, Any]:
        return json_safe({"suite": {**self.suite, "passed": self.passed},
                          "tracks": [t.to_dict() for t in self.tracks]})


def default_out_dir(root: str | os.PathLike = DEFAULT_RUNS_ROOT, now: _dt.datetime | None = None) -> Path:
    """A new ``root/YYYYmmdd-HHMMSS`` folder name (suffixed ``-2``, ``-3``... if taken)."""
    stamp = (now or _dt.datetime.now()).strftime("%Y%m%d-%H%M%S")
    base = Path(root) / stamp
    cand, n = base, 1
    while cand.exists():
        n += 1
        cand = Path(f"{base}-{n}")
    return cand


def prepare_out_dir(out_dir: str | os.PathLike | None) -> Path:
    """Create the output folder; refuse an existing non-empty one.

    Raises:
        OutDirError: ``out_dir`` exists and holds files, is a file, or cannot be created or written
            (read-only parent, a file in the path).
    """
    path = default_out_dir() if out_dir is None else Path(out_dir)
    if path.exists() and not path.is_dir():
        raise OutDirError(f"--out {path} is a file; choose a folder, e.g. {default_out_dir()}")
    if path.is_dir() and any(path.iterdir()):
        raise OutDirError(f"output folder {path} exists and is not empty; results are never "
                          f"overwritten. Choose another, e.g. --out {default_out_dir(path.parent or '.')}, "
                          f"or omit --out for a new folder under {DEFAULT_RUNS_ROOT}/")
    try:
        make_writable_dir(path)
    except OSError as e:
        raise OutDirError(f"cannot write to output folder {path}: {e.strerror or e} "
                          f"({type(e).__name__}); choose a writable folder with --out") from None
    return path


def make_writable_dir(path: Path) -> None:
    """Create ``path`` (and parents) and prove it writable by writing and removing a probe file;
    raises the ``OSError`` (read-only parent, a file in the way, ...) for the caller to word."""
    path.mkdir(parents=True, exist_ok=True)
    probe = path / ".write-test"
    probe.write_bytes(b"")
    probe.unlink()


def _version() -> str:
    try:
        return importlib.metadata.version("eqprop-hwsim")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True,
                             timeout=5, cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def _now() -> str:
    return _dt.datetime.now().astimezone().isoformat(timespec="seconds")


def _relative_artifacts(paths: Iterable[Any], out_dir: Path) -> tuple[list[str], list[str]]:
    """Artifact paths relative to ``out_dir`` when inside it; notes for missing files."""
    rel, notes = [], []
    out_abs = out_dir.resolve()
    for p in paths:
        p = Path(p)
        absolute = p if p.is_absolute() else out_dir / p
        if not absolute.exists():
            notes.append(f"artifact {p} was reported but does not exist")
        try:
            rel.append(absolute.resolve().relative_to(out_abs).as_posix())
        except ValueError:
            rel.append(str(p))
    return rel, notes


def run_one(track: Track, ctx: TrackContext) -> TrackRun:
    """Run a single track in ``ctx``, catching its exceptions; never raises (except KeyboardInterrupt)."""
    spec = track.spec
    variant = track.variant(ctx.quick, ctx.device, ctx.full_recipe)
    base = dict(id=track.id, slug=track.slug, name=track.name, claim=spec.claim if spec else "",
                est_seconds=track.est_seconds(variant), variant=variant)
    if track.broken:
        log.error("track %s is broken: %s", track.key, track.error.splitlines()[0])
        crit = [{**c.to_dict(), "value": None, "passed": False} for c in (spec.criteria if spec else ())]
        return TrackRun(**base, passed=False, criteria=crit, metrics={}, artifacts=[], seconds=0.0,
                        failure=track.error.splitlines()[0], traceback=track.error)
    log.info("track %s: start (%s, seeds=%s, device=%s)", track.key, variant, ctx.seeds, ctx.device)
    t0 = time.perf_counter()
    tb = None
    try:
        result = track.run(ctx)
        if not isinstance(result, TrackResult):
            raise TypeError(f"run() returned {type(result).__name__}, expected TrackResult")
    except Exception as e:  # noqa: BLE001 - one failing track must not stop the suite
        tb = traceback.format_exc()
        log.error("track %s raised %s: %s\n%s", track.key, type(e).__name__, e, tb)
        result = TrackResult(metrics={}, failure=f"{type(e).__name__}: {e}")
    seconds = time.perf_counter() - t0
    metrics = json_safe(result.metrics)
    passed, criteria = evaluate(spec, result)
    artifacts, art_notes = _relative_artifacts(result.artifacts, Path(ctx.out_dir))
    run = TrackRun(**base, passed=passed, criteria=json_safe(criteria), metrics=metrics, artifacts=artifacts,
                   seconds=round(seconds, 3),
                   notes=_variant_notes(variant) + [str(n) for n in result.notes] + art_notes,
                   failure=result.failure, traceback=tb)
    log.info("track %s: %s in %.1f s", track.key, "PASS" if passed else "FAIL", seconds)
    return run


def _variant_notes(variant: str) -> list[str]:
    if variant != CPU_FULL_VARIANT:
        return []
    return [f"variant: {CPU_FULL_VARIANT}: the track's CPU_FULL settings, sized for a 2-core CPU, not its GPU "
            "recipe FULL (that one runs with --device cuda, or --full-recipe on the CPU); its figures are not "
            "the GPU recipe's"]


def run_tracks(
    tracks: Sequence[Track | int | str],
    out_dir: str | os.PathLike | None = None,
    *,
    quick: bool = False,
    seeds: Sequence[int] = (0, 1, 2),
    data_dir: str | None = None,
    device: str = "cpu",
    progress: bool = True,
    overrides: dict[str, Any] | None = None,
    argv: Sequence[str] | None = None,
    on_start: Callable[[Track], None] | None = None,
    on_done: Callable[[TrackRun], None] | None = None,
    resume: bool = False,
    full_recipe: bool = False,
) -> SuiteResult:
    """Run ``tracks`` in order and write ``results.json`` and ``report.md`` into ``out_dir``.

    Args:
        tracks: :class:`tracks.Track` objects, ids or slugs (resolved with :func:`tracks.get_track`).
        out_dir: output folder; ``None`` makes a new timestamped folder under ``runs/``. An existing
            non-empty folder is refused (:class:`OutDirError`) unless ``resume``.
        quick: the tracks' quick mode (smaller data, fewer steps).
        seeds: seeds handed to every track.
        data_dir: dataset root handed to tracks (see :func:`tracks.data.load_dataset`).
        device: torch device string for tracks that use torch.
        progress: whether tracks may show progress bars.
        overrides: ``--set`` settings, validated against every track's typed config before anything
            is written (:func:`tracks.harness.config.resolve_overrides`; ``ID.KEY`` scopes to one track).
        argv: recorded in ``results.json`` (defaults to ``sys.argv``).
        on_start: called with each track before it runs.
        on_done: called with each :class:`TrackRun` as it finishes (a CLI prints a row here); kept
            (resumed) tracks are reported here too, before the first track runs.
        resume: continue the run in ``out_dir`` (see the module docstring): finished tracks are kept,
            the others run; the inputs must equal the recorded ones.
        full_recipe: run every track's ``FULL`` config (the GPU recipe) even on a CPU device; default:
            a track's ``CPU_FULL`` (CPU-reduced) config when ``device`` is the CPU and it has one.

    Returns:
        The :class:`SuiteResult`; its ``passed`` is True when every track ran and passed.

    Raises:
        tracks.harness.config.ConfigError: an override is unknown or of the wrong type (nothing written).
        ValueError: repeated or negative seeds, an unavailable device (nothing written).
        ResumeMismatchError: ``resume`` and the folder holds no run, or its inputs differ (nothing written).
        OutDirError: the output folder exists and is not empty, or cannot be created.
        KeyboardInterrupt: after ``results.json`` / ``report.md`` were marked ``"state": "interrupted"``.
    """
    from .report import write_report  # report imports runner types; import here avoids a cycle

    from .base import check_device
    from .config import resolve_overrides

    resolved = [t if isinstance(t, Track) else get_track(t) for t in tracks]
    seeds = check_seeds(seeds)
    check_device(device)
    configs = resolve_overrides(resolved, dict(overrides or {}), quick=quick, device=device,
                                full_recipe=full_recipe)  # before any work
    inputs = run_inputs(quick=quick, seeds=seeds, data_dir=data_dir, device=device, overrides=overrides,
                        full_recipe=full_recipe)
    if resume:
        if out_dir is None:
            raise ResumeMismatchError("resume needs the folder of the run to continue (--resume DIR)")
        previous = check_resume(out_dir, **inputs)
        out = Path(out_dir)
    else:
        previous = None
        out = prepare_out_dir(out_dir)
    handler = logging.FileHandler(out / LOG_FILE, encoding="utf-8")  # appends on resume
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root_logger = logging.getLogger("eqprop_hwsim")
    root_logger.addHandler(handler)  # records what the logger's level lets through (the CLI sets INFO)
    argv = list(sys.argv if argv is None else argv)
    try:
        rows = [_not_run(t, quick, device, full_recipe) for t in resolved]
        if previous is None:
            suite = {
                "version": _version(), "started": _now(), "finished": None, "state": "running",
                "argv": argv, "machine": describe_machine(),
                "commit": _git_commit(), "out_dir": str(out), "quick": quick, "full_recipe": bool(full_recipe),
                "seeds": list(seeds),
                "device": device, "data_dir": data_dir, "data_root": inputs["data_root"],
                "overrides": json_safe(dict(overrides or {})), "resumes": [],
            }
        else:
            suite, rows = _resume_rows(previous, resolved, rows, argv)
            log.info("resuming %s: kept %s, running %s", out, suite["resumes"][-1]["kept"],
                     suite["resumes"][-1]["rerun"])
        result = SuiteResult(out_dir=out, suite=suite, tracks=rows)
        _write(result, write_report)
        cache = ModelCache(out / CACHE_DIR_NAME)
        if on_done is not None:
            for run in result.tracks:
                if run.resumed:
                    on_done(run)
        try:
            for i, track in enumerate(resolved):
                if result.tracks[i].resumed:
                    continue
                if on_start is not None:
                    on_start(track)
                ctx = TrackContext(out_dir=out, quick=quick, seeds=seeds, data_dir=data_dir, device=device,
                                   progress=progress, overrides=dict(overrides or {}), full_recipe=full_recipe,
                                   config=configs.get(track.module), model_cache=cache)
                n_events = len(cache.events)
                run = run_one(track, ctx)
                run.model_cache = {e: sum(ev["event"] == e for ev in cache.events[n_events:])
                                   for e in ("trained", "loaded", "corrupt")}
                result.tracks[i] = run
                _write(result, write_report)
                if on_done is not None:
                    on_done(run)
        except KeyboardInterrupt:
            log.error("suite interrupted; tracks not run: %s",
                      [f"{t.id} {t.slug}" for t in result.tracks if t.not_run])
            result.suite["state"] = "interrupted"
            result.suite["finished"] = _now()
            _write(result, write_report)
            raise
        result.suite["state"] = "complete"
        result.suite["finished"] = _now()
        result.suite["machine"] = describe_machine()  # now knows the GPU if a track imported torch
        _write(result, write_report)
        return result
    finally:
        root_logger.removeHandler(handler)
        handler.close()


def run_inputs(*, quick: bool, seeds: Sequence[int], data_dir: str | None, device: str,
               overrides: dict[str, Any] | None, full_recipe: bool = False) -> dict[str, Any]:
    """The inputs a resume must repeat, as recorded in ``results.json``; ``data_root`` is the data
    folder the tracks read (``data_dir``, else ``$EQPROP_DATA``, else None)."""
    root = data_dir or os.environ.get("EQPROP_DATA") or None
    return {"quick": bool(quick), "full_recipe": bool(full_recipe), "seeds": [int(s) for s in seeds],
            "device": str(device),
            "overrides": json.loads(json.dumps(json_safe(dict(overrides or {})))),
            "data_root": None if root is None else os.path.abspath(root)}


def check_resume(out_dir: str | os.PathLike, **inputs: Any) -> dict[str, Any]:
    """The ``results.json`` of the run in ``out_dir`` if it can be resumed with ``inputs``
    (:func:`run_inputs`'s keys); else :class:`ResumeMismatchError` naming the problem and the fix.

    A recorded run without ``data_root`` (written before resume existed) is compared on the other
    inputs only.
    """
    path = Path(out_dir) / RESULTS_FILE
    if not Path(out_dir).is_dir():
        raise ResumeMismatchError(f"--resume {out_dir}: no such folder; give the folder of an earlier run "
                                  "(it holds results.json)")
    if not path.is_file():
        raise ResumeMismatchError(f"--resume {out_dir}: no {RESULTS_FILE} there, so no run to continue; "
                                  "start a new run with --out instead")
    try:
        previous = load_results(path)
        suite = previous["suite"]
        previous["tracks"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ResumeMismatchError(f"--resume {out_dir}: {RESULTS_FILE} is unreadable ({type(e).__name__}: {e}); "
                                  "start a new run with --out") from None
    names = {"quick": "--quick", "full_recipe": "--full-recipe", "seeds": "--seeds", "device": "--device",
             "overrides": "--set", "data_root": "--data-dir / EQPROP_DATA"}
    for k, flag in names.items():
        if k == "data_root" and k not in suite:
            continue
        if k == "overrides":
            old = suite.get(k) or {}
        elif k == "full_recipe":
            old = bool(suite.get(k, False))  # a run recorded before --full-recipe existed ran without it
        else:
            old = suite.get(k)
        if old != inputs[k]:
            raise ResumeMismatchError(
                f"--resume {out_dir}: {k} differs ({flag}): the run used {old!r}, this resume gives "
                f"{inputs[k]!r}; resume with the same {flag}, or start a new run with --out")
    return previous


_TRACKRUN_FIELDS = {f.name for f in dataclasses.fields(TrackRun)}


def _resume_rows(previous: dict[str, Any], resolved: list[Track], rows: list[TrackRun],
                 argv: list[str]) -> tuple[dict[str, Any], list[TrackRun]]:
    """The suite dict and rows of a resumed run: finished rows of the selected tracks kept, rows of
    tracks this resume did not select kept as recorded (after the selected ones)."""
    suite = dict(previous["suite"])
    by_key = {(r.get("id"), r.get("slug")): r for r in previous["tracks"]}
    kept, rerun = [], []
    for i, t in enumerate(resolved):
        old = by_key.pop((t.id, t.slug), None)
        if old is not None and not old.get("not_run", False):
            rows[i] = TrackRun(**{k: v for k, v in old.items() if k in _TRACKRUN_FIELDS})
            rows[i].resumed = True
            kept.append(t.id)
        else:
            rerun.append(t.id)
    for old in by_key.values():  # tracks of the earlier session that this resume did not select
        rows.append(TrackRun(**{k: v for k, v in old.items() if k in _TRACKRUN_FIELDS}))
    suite.setdefault("resumes", [])
    suite["resumes"] = [*suite["resumes"], {"at": _now(), "argv": argv, "commit": _git_commit(),
                                            "previous_state": suite.get("state"), "kept": kept, "rerun": rerun}]
    if suite["resumes"][-1]["commit"] != suite.get("commit"):
        log.warning("resume on commit %s; the run started on %s (kept tracks ran on the older code)",
                    suite["resumes"][-1]["commit"], suite.get("commit"))
    suite.update(state="running", finished=None)
    return suite, rows


def check_seeds(seeds: Sequence[int]) -> tuple[int, ...]:
    """``seeds`` as a tuple of distinct ints >= 0 (``ValueError`` naming the problem otherwise).

    >>> check_seeds([0, 1])
    (0, 1)
    """
    seeds = tuple(seeds)
    bad = [s for s in seeds if not isinstance(s, (int, np.integer)) or isinstance(s, bool) or s < 0]
    if not seeds or bad:
        raise ValueError(f"seeds {list(seeds)}: allowed: one or more distinct ints >= 0 (bad: {bad})")
    dup = sorted({s for s in seeds if seeds.count(s) > 1})
    if dup:
        raise ValueError(f"seeds {list(seeds)} repeat {dup}; a repeated seed repeats a run and fakes a narrow "
                         "confidence interval: give distinct seeds")
    return tuple(int(s) for s in seeds)


def _not_run(track: Track, quick: bool, device: str = "cpu", full_recipe: bool = False) -> TrackRun:
    spec = track.spec
    variant = track.variant(quick, device, full_recipe)
    crit = [{**c.to_dict(), "value": None, "passed": False} for c in (spec.criteria if spec else ())]
    return TrackRun(id=track.id, slug=track.slug, name=track.name, claim=spec.claim if spec else "", passed=False,
                    criteria=crit, metrics={}, artifacts=[], seconds=0.0,
                    failure="not run: the suite stopped before this track", not_run=True,
                    est_seconds=track.est_seconds(variant), variant=variant)


def _write(result: SuiteResult, write_report: Callable[[dict[str, Any], Path], Path]) -> None:
    data = result.to_dict()
    tmp = result.results_path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    os.replace(tmp, result.results_path)
    write_report(data, result.out_dir)


def load_results(path: str | os.PathLike) -> dict[str, Any]:
    """Read a ``results.json`` (or the folder holding one)."""
    p = Path(path)
    if p.is_dir():
        p = p / RESULTS_FILE
    return json.loads(p.read_text(encoding="utf-8"))

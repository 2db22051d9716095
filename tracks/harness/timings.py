"""Measured track durations: recorded from a run folder, shown by ``run_suite.py --list``.

``run_suite.py timings RUN_DIR`` reads ``RUN_DIR/results.json`` and writes, for every track that ran
there (not ``not_run``, no exception), its wall seconds under the variant it ran (``quick``, ``full``
or ``full (CPU-reduced)``) into :data:`TIMINGS_PATH` (``tracks/shared/tuning/timings.json``, package
data), merged with the entries already there (a newer run replaces a track's entry of the same
variant). Each entry records where the figure comes from::

    {"version": 1,
     "tracks": {"t13_conv_eqprop": {"full (CPU-reduced)": {
         "seconds", "passed", "run", "date", "commit", "machine", "load_note", "seeds", "device"}}}}

``--list`` shows a measured figure where one exists and marks the others as estimates (``~``, the
spec's ``est_seconds_*``). Wall seconds depend on the machine and its load: the entry names both.

>>> entry_seconds({"tracks": {"t02_x": {"quick": {"seconds": 12.5}}}}, "t02_x", "quick")
12.5
>>> entry_seconds({"tracks": {}}, "t02_x", "quick") is None
True
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from .base import CPU_FULL_VARIANT, FULL_VARIANT, QUICK_VARIANT

#: where ``run_suite.py timings`` writes and ``--list`` reads (inside the package data glob tuning/*.json)
TIMINGS_PATH = Path(__file__).resolve().parents[1] / "shared" / "tuning" / "timings.json"
VARIANTS = (QUICK_VARIANT, FULL_VARIANT, CPU_FULL_VARIANT)
VERSION = 1


class TimingsError(ValueError):
    """A run folder or timings file cannot be used; the message names the problem and the fix."""


def load_timings(path: str | os.PathLike | None = None) -> dict[str, Any]:
    """The timings file (``{"version", "tracks": {}}`` when it does not exist).

    Raises:
        TimingsError: the file is not valid JSON or not in the format above.
    """
    p = Path(path) if path is not None else TIMINGS_PATH
    if not p.is_file():
        return {"version": VERSION, "tracks": {}}
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise TimingsError(f"timings file {p} is unreadable ({type(e).__name__}: {e}); delete it and record "
                           "again with: run_suite.py timings RUN_DIR") from None
    if not isinstance(data, dict) or not isinstance(data.get("tracks"), dict) or any(
            not isinstance(v, dict) or any(k not in VARIANTS or not isinstance(e, dict) or
                                           not isinstance(e.get("seconds"), (int, float)) for k, e in v.items())
            for v in data["tracks"].values()):
        raise TimingsError(f"timings file {p} is not in the expected format ({{'tracks': {{TRACK: {{VARIANT: "
                           f"{{'seconds': ...}}}}}}}}, VARIANT one of {list(VARIANTS)}); delete it and record again "
                           "with: run_suite.py timings RUN_DIR")
    return data


def entry_seconds(timings: dict[str, Any], key: str, variant: str) -> float | None:
    """The measured seconds of track ``key`` (``tNN_slug``) in ``variant``, or ``None``."""
    e = timings.get("tracks", {}).get(key, {}).get(variant)
    return None if e is None else float(e["seconds"])


def _row_variant(row: dict[str, Any], suite: dict[str, Any]) -> str:
    v = row.get("variant")
    if v is not None:
        if v not in VARIANTS:
            raise TimingsError(f"track {row.get('id')}: unknown variant {v!r} in results.json; allowed: "
                               f"{list(VARIANTS)}")
        return v
    return QUICK_VARIANT if suite.get("quick") else FULL_VARIANT  # a run written before variants existed


def record_timings(run_dir: str | os.PathLike, path: str | os.PathLike | None = None, *,
                   load_note: str | None = None) -> dict[str, Any]:
    """Merge the durations of the tracks that ran in ``run_dir`` into the timings file; returns
    ``{"path", "recorded": [(key, variant, seconds)], "skipped": [(key, why)]}``.

    Raises:
        TimingsError: ``run_dir`` holds no readable ``results.json``, or no track ran there.
    """
    from .runner import RESULTS_FILE, load_results

    run = Path(run_dir)
    if not run.is_dir():
        raise TimingsError(f"{run_dir}: no such folder; give the folder of a finished run (it holds {RESULTS_FILE})")
    if not (run / RESULTS_FILE).is_file():
        raise TimingsError(f"{run_dir}: no {RESULTS_FILE} there; give the folder of a run of run_suite.py "
                           "(e.g. runs/20261130-062500)")
    try:
        res = load_results(run)
        suite, rows = res["suite"], res["tracks"]
        if not isinstance(rows, list) or not isinstance(suite, dict):
            raise TypeError("'suite' must be an object and 'tracks' a list")
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise TimingsError(f"{run_dir}/{RESULTS_FILE} is unreadable ({type(e).__name__}: {e}); give the folder "
                           "of a run of run_suite.py") from None
    out = Path(path) if path is not None else TIMINGS_PATH
    data = load_timings(out)
    machine = suite.get("machine") or {}
    recorded, skipped = [], []
    for row in rows:
        key = f"t{int(row['id']):02d}_{row['slug']}"
        if row.get("not_run"):
            skipped.append((key, "not run"))
            continue
        if row.get("traceback"):
            skipped.append((key, "raised an exception (its time is not the track's)"))
            continue
        if not isinstance(row.get("seconds"), (int, float)):
            skipped.append((key, "no seconds recorded"))
            continue
        variant = _row_variant(row, suite)
        entry = {
            "seconds": round(float(row["seconds"]), 1), "passed": bool(row.get("passed")),
            "run": str(run), "date": suite.get("finished") or suite.get("started"), "commit": suite.get("commit"),
            "machine": {k: machine.get(k) for k in ("cpu", "logical_cores", "memory_gib", "gpu") if k in machine},
            "seeds": suite.get("seeds"), "device": suite.get("device"),
        }
        if load_note:
            entry["load_note"] = load_note
        data["tracks"].setdefault(key, {})[variant] = entry
        recorded.append((key, variant, entry["seconds"]))
    if not recorded:
        raise TimingsError(f"{run_dir}: no track ran to the end there ({len(rows)} rows: "
                           f"{', '.join(f'{k} {w}' for k, w in skipped) or 'none'}); nothing recorded")
    data["version"] = VERSION
    data["tracks"] = dict(sorted(data["tracks"].items()))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, out)
    return {"path": str(out), "recorded": recorded, "skipped": skipped}

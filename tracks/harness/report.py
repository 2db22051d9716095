"""Markdown reports rendered from the ``results.json`` dict, and the README track table.

A report can be regenerated from a results file alone: ``write_report(load_results(dir), dir)``.
Metrics render by shape: numbers, booleans and strings go to the scalar table; a list of dicts becomes
its own table (columns = union of keys); a dict of scalars becomes a two-column table.

>>> print(markdown_table([{"bits": 8, "acc": 0.9812}, {"bits": 4, "acc": 0.97}]))
| bits | acc |
| --- | --- |
| 8 | 0.9812 |
| 4 | 0.97 |
>>> fmt_value(None), fmt_value(True), fmt_value(1234567.0), fmt_value(0.000123456)
('n/a', 'yes', '1.235e+06', '0.0001235')
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Iterable, Sequence

REPORT_FILE = "report.md"
_IMAGE_EXT = (".png", ".jpg", ".jpeg", ".svg", ".gif")


def fmt_value(v: Any) -> str:
    """Short human form of a metric value (4 significant digits for floats)."""
    if v is None:
        return "n/a"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        return f"{v:.4g}"
    return _cell(str(v))


def _cell(s: str) -> str:
    return s.replace("|", "\\|").replace("\n", " ")


def fmt_seconds(s: float | None) -> str:
    """``42.0 -> '42 s'``, ``600 -> '10.0 min'``."""
    if s is None:
        return "n/a"
    if s < 60:
        return f"{s:.1f} s" if s < 10 else f"{s:.0f} s"
    if s < 3600:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.1f} h"


def markdown_table(rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None) -> str:
    """Rows of dicts as a markdown table; columns default to the union of keys in first-seen order."""
    if columns is None:
        columns = []
        for r in rows:
            columns += [k for k in r if k not in columns]
    lines = ["| " + " | ".join(_cell(str(c)) for c in columns) + " |",
             "| " + " | ".join("---" for _ in columns) + " |"]
    for r in rows:
        lines.append("| " + " | ".join(fmt_value(r.get(c)) if c in r else "" for c in columns) + " |")
    return "\n".join(lines)


def _is_scalar(v: Any) -> bool:
    return v is None or isinstance(v, (bool, int, float, str))


def _criterion_text(c: dict[str, Any]) -> str:
    return f"{c['metric']} = {fmt_value(c.get('value'))} (need {c['op']} {c['threshold']:g})"


def _status(passed: bool, t: dict[str, Any] | None = None) -> str:
    if t is not None and t.get("not_run"):
        return "NOT RUN"
    return "PASS" if passed else "FAIL"


def _anchor(t: dict[str, Any]) -> str:
    return f"track-{t['id']}"


def _machine_lines(machine: dict[str, Any]) -> list[str]:
    v = machine.get("versions", {}) or {}
    versions = ", ".join(f"{k} {val}" for k, val in v.items() if val) or "n/a"
    return [
        f"- CPU: {machine.get('cpu') or 'unknown'} ({machine.get('logical_cores')} logical cores), "
        f"memory {fmt_value(machine.get('memory_gib'))} GiB",
        f"- GPU: {machine.get('gpu') or 'none used'}",
        f"- OS: {machine.get('os')}, Python {machine.get('python')}",
        f"- Versions: {versions}",
    ]


def render_report(results: dict[str, Any]) -> str:
    """The full ``report.md`` text for a ``results.json`` dict."""
    suite, tracks = results.get("suite", {}), results.get("tracks", [])
    n_pass = sum(bool(t.get("passed")) for t in tracks)
    out = ["# eqprop-hwsim verification report", ""]
    state = suite.get("state")
    if state == "interrupted":
        out.append("**INTERRUPTED: the suite was stopped before every selected track ran; tracks not run count "
                   "as not passed.**")
        out.append("")
    elif state == "running":
        out.append("**INCOMPLETE: the suite is running, or was killed before it finished; tracks not run count "
                   "as not passed.**")
        out.append("")
    out.append(f"**{n_pass}/{len(tracks)} tracks passed.** "
               f"Started {suite.get('started')}, finished {suite.get('finished') or '(running)'}; "
               f"mode {'quick' if suite.get('quick') else 'full'}, seeds {suite.get('seeds')}, "
               f"device {suite.get('device')}; version {suite.get('version')}"
               + (f", commit {suite['commit']}" if suite.get("commit") else "") + ".")
    out += ["", f"Command: `{' '.join(str(a) for a in suite.get('argv', []))}`"]
    for r in suite.get("resumes") or []:
        out += ["", f"Resumed {r.get('at')} (`{' '.join(str(a) for a in r.get('argv', []))}`, commit "
                f"{r.get('commit')}; the run was {r.get('previous_state')}): kept tracks {r.get('kept')} "
                f"(not rerun), ran {r.get('rerun')}."]
    out += ["", "## Machine", ""]
    out += _machine_lines(suite.get("machine", {}) or {})
    out += ["", "## Summary", "", "| id | name | result | seconds | key criterion |",
            "| --- | --- | --- | --- | --- |"]
    for t in tracks:
        crit = t.get("criteria") or []
        key = _criterion_text(crit[0]) if crit else ""
        if t.get("failure"):
            key = t["failure"].splitlines()[0][:200]
        out.append(f"| [{t['id']}](#{_anchor(t)}) | {_cell(t['name'])} | {_status(t['passed'], t)}"
                   f"{' (resumed)' if t.get('resumed') else ''} | "
                   f"{t.get('seconds', 0):.1f} | {_cell(key)} |")
    for t in tracks:
        out += [""] + _track_section(t)
    return "\n".join(out) + "\n"


def _track_section(t: dict[str, Any]) -> list[str]:
    out = [f'<a id="{_anchor(t)}"></a>', f"## Track {t['id']}: {t['name']} ({t['slug']}) - "
           f"{_status(t['passed'], t)}", ""]
    if t.get("claim"):
        out += [f"**Claim.** {t['claim']}", ""]
    est = t.get("est_seconds")
    out += [f"Ran in {fmt_seconds(t.get('seconds'))}" + (f" (estimate {fmt_seconds(est)})." if est else ".")
            + (" Kept from an earlier session of this run (resumed, not rerun)." if t.get("resumed") else "")
            + (" Model cache: {trained} trained, {loaded} loaded, {corrupt} corrupt (retrained).".format(
               **t["model_cache"]) if t.get("model_cache") and any(t["model_cache"].values()) else ""), ""]
    if t.get("failure"):
        out += [f"**Failure.** {t['failure']}", ""]
    crit = t.get("criteria") or []
    if crit:
        out += ["### Criteria", "", "| metric | value | op | threshold | result |", "| --- | --- | --- | --- | --- |"]
        for c in crit:
            out.append(f"| {_cell(c['metric'])} | {fmt_value(c.get('value'))} | {_cell(c['op'])} | "
                       f"{c['threshold']:g} | {_status(c['passed'])} |")
        out.append("")
    metrics = t.get("metrics") or {}
    scalars = {k: v for k, v in metrics.items() if _is_scalar(v)}
    if scalars:
        out += ["### Metrics", "", "| metric | value |", "| --- | --- |"]
        out += [f"| {_cell(k)} | {fmt_value(v)} |" for k, v in scalars.items()]
        out.append("")
    for k, v in metrics.items():
        if _is_scalar(v):
            continue
        table = _as_table(v)
        if table is not None:
            out += [f"### {k}", "", table, ""]
        else:
            out += [f"### {k}", "", "```", _short(v), "```", ""]
    if t.get("notes"):
        out += ["### Notes", ""] + [f"- {n}" for n in t["notes"]] + [""]
    arts = t.get("artifacts") or []
    if arts:
        out += ["### Artifacts", ""]
        for a in arts:
            label = os.path.basename(a)
            out.append(f"![{label}]({a})" if a.lower().endswith(_IMAGE_EXT) else f"- [{label}]({a})")
        out.append("")
    if t.get("traceback"):
        out += ["<details><summary>Traceback</summary>", "", "```", t["traceback"].rstrip(), "```", "",
                "</details>", ""]
    return out


def _as_table(v: Any) -> str | None:
    if isinstance(v, list) and v and all(isinstance(r, dict) for r in v):
        return markdown_table(v)
    if isinstance(v, dict) and v and all(_is_scalar(x) for x in v.values()):
        return markdown_table([{"key": k, "value": x} for k, x in v.items()])
    if isinstance(v, dict) and v and all(isinstance(x, dict) for x in v.values()):
        return markdown_table([{"key": k, **x} for k, x in v.items()])
    return None


def _short(v: Any, limit: int = 2000) -> str:
    s = repr(v)
    return s if len(s) <= limit else s[:limit] + " ..."


def write_report(results: dict[str, Any], out_dir: str | os.PathLike) -> Path:
    """Write ``report.md`` for ``results`` into ``out_dir``; returns its path."""
    path = Path(out_dir) / REPORT_FILE
    tmp = path.with_suffix(".md.tmp")
    tmp.write_text(render_report(results), encoding="utf-8")
    os.replace(tmp, path)
    return path


def track_table_markdown(tracks: Iterable[Any] | None = None) -> str:
    """The README table of tracks: id, slug, name, claim, estimated time quick / full.

    Args:
        tracks: :class:`tracks.Track` objects; defaults to every discovered track.
    """
    if tracks is None:
        from .registry import all_tracks
        tracks = all_tracks()
    lines = ["| id | slug | name | claim | quick | full |", "| --- | --- | --- | --- | --- | --- |"]
    for t in tracks:
        if t.spec is None:
            lines.append(f"| {t.id} | {t.slug} | (broken: {t.module}) | {_cell(t.error.splitlines()[0])} | | |")
            continue
        s = t.spec
        lines.append(f"| {s.id} | `{s.slug}` | {_cell(s.name)} | {_cell(s.claim)} | "
                     f"{fmt_seconds(s.est_seconds_quick)} | {fmt_seconds(s.est_seconds_full)} |")
    return "\n".join(lines)

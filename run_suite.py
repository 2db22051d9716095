#!/usr/bin/env python
"""Run the eqprop-hwsim verification tracks (thin CLI over :mod:`tracks`).

    python run_suite.py --list                 # id, slug, name, estimated time
    python run_suite.py --list --markdown      # the README track table
    python run_suite.py --all --quick          # every track, quick mode
    python run_suite.py --track 2 int8 --seeds 0 1 --out runs/mine

Exit status: 0 when every selected track passed, 1 when one failed, 2 on bad usage.
Subcommands (``run_suite.py NAME ...``) dispatch through ``SUBCOMMANDS``.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
import time
from typing import Callable

import tracks

#: ``run_suite.py NAME args...`` -> ``SUBCOMMANDS[NAME](args) -> exit status``. Others add e.g.
#: ``"export"`` and ``"sweep"`` here; the default (no subcommand) is :func:`run_main`.
SUBCOMMANDS: dict[str, Callable[[list[str]], int]] = {}

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
_DEVICE = re.compile(r"^(cpu|cuda(:\d+)?|mps)$")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="run_suite.py", description="Run eqprop-hwsim verification tracks and write a report.",
        epilog=("exit status: 0 all selected tracks passed, 1 a track failed, 2 bad usage. "
                + (f"subcommands: {', '.join(sorted(SUBCOMMANDS))} (run_suite.py NAME --help)"
                   if SUBCOMMANDS else "")))
    sel = p.add_argument_group("selection")
    sel.add_argument("--list", action="store_true", help="list tracks (id, slug, name, estimated time)")
    sel.add_argument("--markdown", action="store_true", help="with --list: print the README markdown table")
    sel.add_argument("--all", action="store_true", help="run every track")
    sel.add_argument("--track", nargs="+", metavar="ID", default=[], help="track ids or slugs to run")
    run = p.add_argument_group("run")
    run.add_argument("--quick", action="store_true", help="quick mode (smaller data, fewer steps)")
    run.add_argument("--out", metavar="DIR", help="output folder (default: new runs/YYYYmmdd-HHMMSS); "
                     "an existing non-empty folder is refused")
    run.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], metavar="S", help="seeds (default 0 1 2)")
    run.add_argument("--data-dir", metavar="DIR", help="dataset root (also exported as EQPROP_DATA)")
    run.add_argument("--device", default="cpu", help="torch device: cpu, cuda, cuda:N, mps (default cpu)")
    run.add_argument("--no-progress", action="store_true", help="no progress bars")
    run.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                     help="track override (repeatable; VALUE parsed as JSON, else a string), e.g. "
                          "--set n_test=1000; each track documents the keys it accepts")
    run.add_argument("-v", "--verbose", action="store_true", help="debug logging on stderr")
    return p


_handler: logging.Handler | None = None


def _setup_logging(verbose: bool) -> None:
    global _handler
    lib = logging.getLogger("eqprop_hwsim")
    if _handler is not None:  # main() may run more than once in a process (tests)
        lib.removeHandler(_handler)
    _handler = handler = logging.StreamHandler(sys.stderr)
    handler.setLevel(logging.DEBUG if verbose else logging.WARNING)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    lib.addHandler(handler)
    lib.setLevel(logging.DEBUG if verbose else logging.INFO)  # INFO reaches suite.log, not the console


def _usage_error(msg: str) -> int:
    print(f"run_suite.py: error: {msg}", file=sys.stderr)
    print("try: python run_suite.py --list, or --help", file=sys.stderr)
    return EXIT_USAGE


def _est(s: float) -> str:
    return tracks.report.fmt_seconds(s)


def print_list(markdown: bool) -> int:
    all_t = tracks.all_tracks()
    if markdown:
        print(tracks.track_table_markdown(all_t))
        return EXIT_OK
    if not all_t:
        print("no tracks found (tracks/tNN_slug.py modules)")
        return EXIT_OK
    w_slug = max(len("slug"), *(len(t.slug) for t in all_t))
    w_name = max(len("name"), *(len(t.name) for t in all_t))
    print(f"{'id':>3}  {'slug':<{w_slug}}  {'name':<{w_name}}  {'quick':>8}  {'full':>8}")
    for t in all_t:
        if t.broken:
            print(f"{t.id:>3}  {t.slug:<{w_slug}}  BROKEN: {t.error.splitlines()[0]}")
            continue
        print(f"{t.id:>3}  {t.slug:<{w_slug}}  {t.name:<{w_name}}  "
              f"{_est(t.spec.est_seconds_quick):>8}  {_est(t.spec.est_seconds_full):>8}")
    return EXIT_OK


class _Table:
    """Prints one row per finished track, aligned to the selected tracks."""

    def __init__(self, selected: list[tracks.Track]):
        self.w = max([len("track")] + [len(f"{t.id} {t.slug}") for t in selected])

    def header(self) -> None:
        print(f"{'track':<{self.w}}  {'result':<6}  {'seconds':>8}  key criterion", flush=True)

    def row(self, r) -> None:
        crit = r.key_criterion()
        key = (f"{crit['metric']} = {tracks.report.fmt_value(crit['value'])} "
               f"(need {crit['op']} {crit['threshold']:g})") if crit else ""
        if r.failure:
            key = f"{key}  [{r.failure.splitlines()[0][:120]}]".strip()
        print(f"{f'{r.id} {r.slug}':<{self.w}}  {'PASS' if r.passed else 'FAIL':<6}  {r.seconds:>8.1f}  {key}",
              flush=True)


def run_main(argv: list[str]) -> int:
    """The default command: list or run tracks."""
    parser = build_parser()
    args = parser.parse_args(argv)  # exits 2 on bad arguments
    _setup_logging(args.verbose)
    if args.markdown and not args.list:
        return _usage_error("--markdown only goes with --list")
    if args.list:
        if args.all or args.track:
            return _usage_error("--list does not take --all or --track")
        return print_list(args.markdown)
    if args.all and args.track:
        return _usage_error("give either --all or --track, not both")
    if not args.all and not args.track:
        return _usage_error("nothing selected: use --all, --track ID [ID ...] or --list")
    if not _DEVICE.match(args.device):
        return _usage_error(f"--device {args.device!r}; allowed: cpu, cuda, cuda:N, mps")
    try:
        selected = tracks.all_tracks() if args.all else [tracks.get_track(t) for t in args.track]
    except tracks.UnknownTrackError as e:
        return _usage_error(str(e))
    if not selected:
        return _usage_error("no tracks found (tracks/tNN_slug.py modules)")
    seen, unique = set(), []
    for t in selected:
        if t.module not in seen:
            seen.add(t.module)
            unique.append(t)
    data_dir = None
    if args.data_dir:
        data_dir = os.path.abspath(args.data_dir)
        if not os.path.isdir(data_dir):
            return _usage_error(f"--data-dir {args.data_dir} is not a folder")
        os.environ["EQPROP_DATA"] = data_dir  # child processes and data loaders see it too
    overrides = {}
    for item in args.overrides:
        key, sep, value = item.partition("=")
        if not sep or not key:
            return _usage_error(f"--set {item!r}: expected KEY=VALUE")
        try:
            overrides[key] = json.loads(value)
        except json.JSONDecodeError:
            overrides[key] = value
    try:
        out = tracks.runner.prepare_out_dir(args.out)
    except tracks.OutDirError as e:
        return _usage_error(str(e))
    table = _Table(unique)
    table.header()
    t0 = time.perf_counter()
    try:
        suite = tracks.run_tracks(
            unique, out, quick=args.quick, seeds=args.seeds, data_dir=data_dir, device=args.device,
            overrides=overrides,
            progress=not args.no_progress, argv=["run_suite.py", *argv], on_done=table.row)
    except KeyboardInterrupt:
        print(f"\ninterrupted; results of the finished tracks are in {out}", file=sys.stderr)
        return 130
    n_pass = sum(r.passed for r in suite.tracks)
    print(f"\n{n_pass}/{len(suite.tracks)} tracks passed in {time.perf_counter() - t0:.1f} s")
    for r in suite.failed:
        print(f"  FAILED {r.id} {r.slug}: {r.failure or 'criteria not met'}")
    print(f"results: {suite.results_path}\nreport:  {suite.report_path}")
    return EXIT_OK if suite.passed else EXIT_FAILED


def _export_main(argv: list[str]) -> int:
    """``run_suite.py export --checkpoint PATH --spec int8 --out model.onnx [--format int|qdq|float]``."""
    p = argparse.ArgumentParser(prog="run_suite.py export",
                                description="Export a trained EqPropMLP checkpoint to ONNX under a hardware spec.")
    p.add_argument("--checkpoint", required=True, help="checkpoint written by training (models.checkpoint)")
    p.add_argument("--spec", required=True, help="preset name (fp32, int8, int4, ternary) or a HardwareSpec .json")
    p.add_argument("--out", required=True, help="output .onnx path (never overwritten unless --overwrite)")
    p.add_argument("--format", dest="fmt", choices=("float", "qdq", "int"), default="int",
                   help="float graph, QDQ graph, or integer-only graph (default: int)")
    p.add_argument("--steps", type=int, default=30, help="relaxation steps T (default 30)")
    p.add_argument("--loop", action="store_true", help="export the relaxation as an ONNX Loop (default: unrolled)")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--verify", type=int, default=0, metavar="N",
                   help="verify the file in onnxruntime on the first N MNIST test images")
    p.add_argument("--data-dir", help="data root for --verify")
    try:
        args = p.parse_args(argv)
    except SystemExit as e:
        return EXIT_USAGE if e.code else EXIT_OK
    from tracks.harness.commands import export_model
    try:
        info = export_model(args.checkpoint, args.spec, args.out, fmt=args.fmt, n_steps=args.steps, loop=args.loop,
                            overwrite=args.overwrite, verify_n=args.verify, data_dir=args.data_dir)
    except (ValueError, FileExistsError, FileNotFoundError) as e:
        return _usage_error(str(e))
    print(f"wrote {info['path']} ({info['bytes']} bytes, spec {info['spec']})")
    if "verify" in info:
        print("verification:", {k: v for k, v in info["verify"].items() if not isinstance(v, (list, dict))})
        if not info["verify"].get("passed", False):
            print("verification FAILED", file=sys.stderr)
            return EXIT_FAILED
    return EXIT_OK


def _floats(s: str) -> list[float]:
    return [float(v) for v in s.split(",") if v]


def _sweep_main(argv: list[str]) -> int:
    """``run_suite.py sweep --kinds prog,read --levels 0,0.02,0.05 --precisions int8,int4 --jobs 2``."""
    p = argparse.ArgumentParser(prog="run_suite.py sweep",
                                description="Analog noise sweep: accuracy vs noise kind x level x precision x seed "
                                            "(resumable; appends to OUT/sweep.jsonl).")
    p.add_argument("--kinds", default="prog", help="comma list of noise kinds (default prog)")
    p.add_argument("--levels", default="0,0.01,0.02,0.05,0.1,0.2", help="comma list of noise levels")
    p.add_argument("--precisions", default="fp32,int8,int4", help="comma list of weight precisions")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--out", default="runs/sweep", help="sweep folder (resumed if it exists)")
    p.add_argument("--jobs", type=int, default=1, help="parallel processes")
    p.add_argument("--no-resume", action="store_true", help="refuse to reuse an existing sweep.jsonl")
    p.add_argument("--model", help="model file (default: train one and cache it under OUT/cache)")
    p.add_argument("--n-test", type=int, default=None, help="test images per point (default all 10k)")
    p.add_argument("--data-dir")
    p.add_argument("--no-progress", action="store_true")
    try:
        args = p.parse_args(argv)
    except SystemExit as e:
        return EXIT_USAGE if e.code else EXIT_OK
    from tracks.harness.commands import sweep
    try:
        res = sweep(kinds=args.kinds.split(","), levels=_floats(args.levels), precisions=args.precisions.split(","),
                    seeds=args.seeds, out=args.out, jobs=args.jobs, resume=not args.no_resume, model=args.model,
                    n_test=args.n_test, data_dir=args.data_dir, progress=not args.no_progress)
    except (ValueError, FileExistsError) as e:
        return _usage_error(str(e))
    print(f"{len(res['records'])} points; plots: {', '.join(map(str, res['plots']))}")
    return EXIT_OK


SUBCOMMANDS["export"] = _export_main
SUBCOMMANDS["sweep"] = _sweep_main


def main(argv: list[str] | None = None) -> int:
    """Dispatch ``argv[0]`` to a subcommand in ``SUBCOMMANDS``, else run :func:`run_main`."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in SUBCOMMANDS:
        return SUBCOMMANDS[argv[0]](argv[1:])
    return run_main(argv)


if __name__ == "__main__":
    sys.exit(main())

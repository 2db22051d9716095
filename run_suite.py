#!/usr/bin/env python
"""Run the eqprop-hwsim verification tracks (thin CLI over :mod:`tracks`; argparse subcommands).

    python run_suite.py --list                 # id, slug, name, measured or estimated time (= run_suite.py run --list)
    python run_suite.py --list --markdown      # the README track table
    python run_suite.py --all --quick          # every track, quick mode
    python run_suite.py --track 2 int8 --seeds 0 1 --out runs/mine --set 2.n_images=20
    python run_suite.py export --checkpoint net.pt --spec int8 --out net.onnx --verify 1000
    python run_suite.py sweep --kinds prog --levels 0,0.05 --precisions int8 --jobs 2
    python run_suite.py tune --family eqprop --dataset mnist --trials 16 --out tracks/shared/tuning
    python run_suite.py timings runs/20261130-062500   # record that run's track durations for --list

Subcommands: ``run`` (the default when the first argument is an option), ``export``, ``sweep``, ``tune``,
``timings``.

Settings levels: ``--quick``; the full variant, which on ``--device cpu`` is a track's CPU-reduced full
config (``CPU_FULL``, "full (CPU-reduced)" in results.json and report.md) where the track has one, and
its ``FULL`` config (the GPU recipe) with ``--device cuda`` or with ``--full-recipe``.
Exit status: 0 success (every selected track passed), 1 a track or a verification failed, 2 bad
usage or bad input (nothing run, nothing overwritten), 130 interrupted (Ctrl-C; results so far are
kept and marked interrupted).
"""
from __future__ import annotations

import argparse
import logging
import os
import re
import signal
import sys
import time
from typing import Callable

import tracks
import tracks.harness.timings

#: subcommand name -> ``handler(parsed args, argv of the subcommand) -> exit status`` (filled below).
SUBCOMMANDS: dict[str, Callable[[argparse.Namespace, list[str]], int]] = {}

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
_DEVICE = re.compile(r"^(cpu|cuda(:\d+)?|mps)$")
_EPILOG = ("exit status: 0 success, 1 a track (or a verification) failed, 2 bad usage or bad input "
           "(nothing run, nothing overwritten), 130 interrupted")


class _Parser(argparse.ArgumentParser):
    """argparse whose errors return exit status 2 through :class:`_UsageExit` instead of exiting."""

    def error(self, message: str):  # noqa: D401 - argparse API
        raise _UsageExit(f"{self.prog}: error: {message}\ntry: {self.prog} --help")


class _UsageExit(Exception):
    pass


def _add_run_arguments(p: argparse.ArgumentParser) -> None:
    sel = p.add_argument_group("selection")
    sel.add_argument("--list", action="store_true", help="list tracks (id, slug, name, time: measured where a run "
                     "was recorded with `run_suite.py timings RUN_DIR`, else the track's estimate, marked ~)")
    sel.add_argument("--markdown", action="store_true", help="with --list: print the README markdown table")
    sel.add_argument("--all", action="store_true", help="run every track")
    sel.add_argument("--track", nargs="+", metavar="ID", default=[], help="track ids or slugs to run")
    run = p.add_argument_group("run")
    run.add_argument("--quick", action="store_true", help="quick mode (smaller data, fewer steps)")
    run.add_argument("--full-recipe", action="store_true",
                     help="without --quick on --device cpu: run each track's FULL config (the GPU recipe, hours "
                          "to days on a CPU for Tracks 13, 14, 34, ...) instead of its CPU-reduced full config "
                          "(CPU_FULL, recorded as 'full (CPU-reduced)'); --device cuda always runs FULL")
    run.add_argument("--out", metavar="DIR", help="output folder (default: new runs/YYYYmmdd-HHMMSS); "
                     "an existing non-empty folder is refused")
    run.add_argument("--resume", metavar="DIR", help="continue the interrupted run in DIR: its finished tracks "
                     "(passed or failed) are kept, the others run, its trained models are loaded from "
                     "DIR/model_cache; the seeds, --quick, --set, --device and data folder must be the run's own "
                     "(else exit 2 naming the difference)")
    run.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], metavar="S",
                     help="distinct seeds >= 0 (default 0 1 2)")
    run.add_argument("--data-dir", metavar="DIR", help="dataset root (also exported as EQPROP_DATA)")
    run.add_argument("--device", default="cpu", help="torch device: cpu, cuda, cuda:N, mps (default cpu); "
                     "an unavailable device is refused")
    run.add_argument("--no-progress", action="store_true", help="no progress output")
    run.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                     help="track setting (repeatable; VALUE parsed as JSON, else a string), e.g. --set n_test=1000 "
                          "(every selected track) or --set 17.n_test=1000 (one track); checked against the "
                          "track's typed config before anything runs")
    run.add_argument("-v", "--verbose", action="store_true", help="debug logging on stderr")


def build_main_parser() -> argparse.ArgumentParser:
    """``run_suite.py {run,export,sweep} ...`` with argparse subparsers."""
    p = _Parser(prog="run_suite.py", description="eqprop-hwsim: verification tracks, ONNX export, noise sweeps. "
                "Without a subcommand the arguments go to `run`.", epilog=_EPILOG)
    sub = p.add_subparsers(dest="command", metavar="{run,export,sweep,tune,timings}")
    _add_run_arguments(sub.add_parser("run", help="list or run tracks (default)", epilog=_EPILOG))
    _add_export_arguments(sub.add_parser("export", help="export a checkpoint to ONNX", epilog=_EPILOG))
    _add_sweep_arguments(sub.add_parser("sweep", help="analog noise sweep (resumable)", epilog=_EPILOG))
    _add_tune_arguments(sub.add_parser("tune", help="recipe search on validation data (Optuna, resumable)",
                                       epilog=_EPILOG))
    _add_timings_arguments(sub.add_parser("timings", help="record a run's measured track durations for --list",
                                          epilog=_EPILOG))
    for sp in sub.choices.values():
        sp.__class__ = _Parser
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


def _usage_error(msg: str, prog: str = "run_suite.py") -> int:
    print(f"{prog}: error: {msg}", file=sys.stderr)
    print(f"try: python {prog} --help" + ("" if " " in prog else ", or --list"), file=sys.stderr)
    return EXIT_USAGE


def _est(s: float) -> str:
    return tracks.report.fmt_seconds(s)


def _time_cell(t: tracks.Track, variant: str, timings: dict) -> str:
    measured = tracks.harness.timings.entry_seconds(timings, t.key, variant)
    if measured is not None:
        return _est(measured)
    est = t.est_seconds(variant)
    return "" if est is None else "~" + _est(est)


def print_list(markdown: bool, timings_path: str | None = None) -> int:
    all_t = tracks.all_tracks()
    if markdown:
        print(tracks.track_table_markdown(all_t))
        return EXIT_OK
    if not all_t:
        print("no tracks found (tracks/tNN_slug.py modules)")
        return EXIT_OK
    try:
        timings = tracks.harness.timings.load_timings(timings_path)
    except tracks.harness.timings.TimingsError as e:
        return _usage_error(str(e))
    w_slug = max(len("slug"), *(len(t.slug) for t in all_t))
    w_name = max(len("name"), *(len(t.name) for t in all_t))
    print(f"{'id':>3}  {'slug':<{w_slug}}  {'name':<{w_name}}  {'quick':>9}  {'full':>9}  {'GPU recipe':>10}")
    totals = {"quick": [0.0, 0], "full": [0.0, 0]}
    for t in all_t:
        if t.broken:
            print(f"{t.id:>3}  {t.slug:<{w_slug}}  BROKEN: {t.error.splitlines()[0]}")
            continue
        full_variant = t.variant(False, "cpu")
        cells = {"quick": _time_cell(t, "quick", timings), "full": _time_cell(t, full_variant, timings)}
        for k, v in (("quick", "quick"), ("full", full_variant)):
            m = tracks.harness.timings.entry_seconds(timings, t.key, v)
            totals[k][0] += m if m is not None else (t.est_seconds(v) or 0.0)
            totals[k][1] += m is None
        gpu = _time_cell(t, "full", timings) if t.cpu_full_config is not None else ""
        mark = "R" if full_variant == tracks.base.CPU_FULL_VARIANT else " "
        print(f"{t.id:>3}  {t.slug:<{w_slug}}  {t.name:<{w_name}}  {cells['quick']:>9}  {cells['full']:>8}{mark}  "
              f"{gpu:>10}")
    print(f"{'':>3}  {'total':<{w_slug}}  {'':<{w_name}}  {_est(totals['quick'][0]):>9}  {_est(totals['full'][0]):>9}")
    print(f"times: measured (wall, `run_suite.py timings RUN_DIR`, {tracks.harness.timings.TIMINGS_PATH.name}) "
          f"unless marked ~ (the track's estimate; {totals['quick'][1]} quick and {totals['full'][1]} full figures "
          "are estimates); R: full on the CPU runs the track's CPU-reduced config (CPU_FULL); its GPU recipe (FULL) "
          "runs with --device cuda or --full-recipe")
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


def _seeds_error(seeds: list[int]) -> str | None:
    try:
        tracks.runner.check_seeds(seeds)
    except ValueError as e:
        return f"--seeds: {e}"
    return None


def _run(args: argparse.Namespace, argv: list[str]) -> int:
    """``run``: list or run tracks."""
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
        tracks.base.check_device(args.device)
    except ValueError as e:
        return _usage_error(f"--device: {e}")
    if (msg := _seeds_error(args.seeds)) is not None:
        return _usage_error(msg)
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
    try:
        overrides = tracks.parse_set_options(args.overrides)
        tracks.resolve_overrides(unique, overrides, quick=args.quick, device=args.device,
                                 full_recipe=args.full_recipe)  # before any folder is made
    except tracks.ConfigError as e:
        return _usage_error(str(e))
    if args.resume:
        if args.out and os.path.abspath(args.out) != os.path.abspath(args.resume):
            return _usage_error(f"--out {args.out} and --resume {args.resume} name different folders; a resume "
                                "writes into the run it continues: drop --out")
        try:
            tracks.runner.check_resume(args.resume, **tracks.runner.run_inputs(
                quick=args.quick, seeds=args.seeds, data_dir=data_dir, device=args.device, overrides=overrides,
                full_recipe=args.full_recipe))
        except tracks.runner.ResumeMismatchError as e:
            return _usage_error(str(e))
        out = args.resume
    else:
        try:
            out = tracks.prepare_out_dir(args.out)
        except tracks.OutDirError as e:
            return _usage_error(str(e))
    table = _Table(unique)
    table.header()
    t0 = time.perf_counter()
    try:
        suite = tracks.run_tracks(
            unique, out, quick=args.quick, seeds=args.seeds, data_dir=data_dir, device=args.device,
            overrides=overrides, progress=not args.no_progress, argv=["run_suite.py", *argv], on_done=table.row,
            resume=bool(args.resume), full_recipe=args.full_recipe)
    except KeyboardInterrupt:
        print(f"\ninterrupted: results of the finished tracks are in {out} (marked interrupted; tracks not run "
              f"count as not passed); continue it with the same command plus --resume {out}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (tracks.ConfigError, tracks.OutDirError, ValueError) as e:  # validated above; kept for races
        return _usage_error(str(e))
    n_pass = sum(r.passed for r in suite.tracks)
    print(f"\n{n_pass}/{len(suite.tracks)} tracks passed in {time.perf_counter() - t0:.1f} s")
    if args.resume:
        kept = [r.id for r in suite.tracks if r.resumed]
        print(f"resumed {out}: kept {kept or 'none'} from the earlier session (not rerun)")
    for r in suite.failed:
        print(f"  FAILED {r.id} {r.slug}: {r.failure or 'criteria not met'}")
    print(f"results: {suite.results_path}\nreport:  {suite.report_path}")
    return EXIT_OK if suite.passed else EXIT_FAILED


def _add_export_arguments(p: argparse.ArgumentParser) -> None:
    p.description = "Export a trained EqPropMLP checkpoint to ONNX under a hardware spec."
    p.add_argument("--checkpoint", required=True, help="checkpoint written by training (models.checkpoint)")
    p.add_argument("--spec", required=True, help="preset name (fp32, int8, int4, ternary) or a HardwareSpec .json")
    p.add_argument("--out", required=True, help="output .onnx path (never overwritten unless --overwrite)")
    p.add_argument("--format", dest="fmt", choices=("float", "qdq", "int"), default="int",
                   help="float graph, QDQ graph, or integer-only graph (default: int)")
    p.add_argument("--steps", type=int, default=30, help="relaxation steps T >= 1 (default 30)")
    p.add_argument("--loop", action="store_true", help="export the relaxation as an ONNX Loop (default: unrolled)")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--verify", type=int, default=0, metavar="N",
                   help="verify the graph in onnxruntime on the first N (1..10000) MNIST test images before "
                        "it is written")
    p.add_argument("--data-dir", help="data root for --verify")


def _export(args: argparse.Namespace, argv: list[str] | None = None) -> int:
    prog = "run_suite.py export"
    try:
        info = tracks.commands.export_model(
            args.checkpoint, args.spec, args.out, fmt=args.fmt, n_steps=args.steps, loop=args.loop,
            overwrite=args.overwrite, verify_n=args.verify, data_dir=args.data_dir)
    except (ValueError, FileExistsError, FileNotFoundError) as e:
        return _usage_error(str(e), prog)
    except KeyboardInterrupt:
        print(f"\n{prog}: interrupted; nothing written", file=sys.stderr)
        return EXIT_INTERRUPTED
    if "verify" in info:
        print("verification:", {k: v for k, v in info["verify"].items() if not isinstance(v, (list, dict))})
        if not info["verify"].get("passed", False):
            print(f"{prog}: verification FAILED; {args.out} was not written", file=sys.stderr)
            return EXIT_FAILED
    print(f"wrote {info['path']} ({info['bytes']} bytes, spec {info['spec']})")
    return EXIT_OK


def _floats(s: str) -> list[float]:
    return [float(v) for v in s.split(",") if v.strip()]


def _add_sweep_arguments(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Design-space sweep (resumable: appends to OUT/sweep.jsonl; a resume must have the same inputs, else it is "
        "refused). Either a grid over any hardware-spec fields (--config FILE.toml, --grid FIELD=V1,V2 ..., "
        "--set FIELD=V; see --list-fields) x models x seeds, run on Dask (--jobs N: a LocalCluster of N worker "
        "processes; --scheduler ADDRESS: an existing cluster), writing results.csv, summary.csv, "
        "acc_vs_<field>.png and pareto.png; or the analog noise sweep kind x level x precision x seed "
        "(--kinds/--levels/--precisions).")
    new = p.add_argument_group("design-space sweep")
    new.add_argument("--config", metavar="FILE", help="sweep file (.toml or .json; e.g. examples/adc_vs_noise.toml)")
    new.add_argument("--grid", action="append", default=[], metavar="FIELD=V1,V2",
                     help="swept spec field and its values (repeatable; values as JSON, null = None), e.g. "
                          "--grid analog.adc_bits=4,6,8 --grid analog.prog_noise_std=0,0.05")
    new.add_argument("--set", dest="fixed", action="append", default=[], metavar="FIELD=V",
                     help="a spec field fixed for every point (repeatable), e.g. --set analog.read_noise_std=0")
    new.add_argument("--base", help="base spec: preset name or HardwareSpec .json (default analog_pcm)")
    new.add_argument("--scheduler", metavar="ADDRESS", help="run the points on an existing Dask scheduler "
                     "(e.g. tcp://host:8786, one started by dask-jobqueue); default: a LocalCluster of --jobs workers")
    new.add_argument("--insitu-steps", type=int, default=None, metavar="N",
                     help="analog specs: also measure accuracy after N in-situ EqProp updates on the chip")
    new.add_argument("--steps", type=int, default=None, help="relaxation sweeps per inference (default 30)")
    new.add_argument("--list-fields", action="store_true", help="list the sweepable spec fields and exit")
    old = p.add_argument_group("analog noise sweep")
    old.add_argument("--kinds", default=None, help="comma list of noise kinds (default prog)")
    old.add_argument("--levels", default=None, help="comma list of noise levels (default 0,0.01,0.02,0.05,0.1,0.2)")
    old.add_argument("--precisions", default=None, help="comma list of weight precisions (default fp32,int8,int4)")
    com = p.add_argument_group("both")
    com.add_argument("--seeds", nargs="+", type=int, default=None, help="distinct seeds >= 0 (default 0 1 2)")
    com.add_argument("--out", default="runs/sweep", help="sweep folder (resumed if it exists)")
    com.add_argument("--jobs", type=int, default=1, help="parallel worker processes (>= 1)")
    com.add_argument("--no-resume", action="store_true", help="refuse to reuse an existing sweep.jsonl")
    com.add_argument("--model", action="append", default=None,
                     help="EqPropMLP checkpoint (models.checkpoint, as export takes; repeatable in a design sweep; "
                          "default: train one and cache it under OUT/cache)")
    com.add_argument("--n-test", type=int, default=None, help="test images per point, 1..10000 (default all)")
    com.add_argument("--data-dir")
    com.add_argument("--no-progress", action="store_true")


_DESIGN_ONLY = ("config", "grid", "fixed", "base", "scheduler", "insitu_steps", "steps")


def _sweep(args: argparse.Namespace, argv: list[str] | None = None) -> int:
    prog = "run_suite.py sweep"
    if args.list_fields:
        for path, desc in tracks.commands.sweep(list_fields=True)["fields"].items():
            print(f"{path:<32} {desc}")
        return EXIT_OK
    design = any(getattr(args, k) not in (None, []) for k in _DESIGN_ONLY)
    legacy = [f"--{k}" for k in ("kinds", "levels", "precisions") if getattr(args, k) is not None]
    if design and legacy:
        return _usage_error(f"{', '.join(legacy)} belong to the analog noise sweep; a design sweep names its "
                            "fields with --grid FIELD=V1,V2 (e.g. --grid analog.prog_noise_std=0,0.05)", prog)
    if design:
        return _design_sweep(args, prog)
    if args.model is not None and len(args.model) > 1:
        return _usage_error("the analog noise sweep takes one --model; several models need a design sweep (--grid)",
                            prog)
    try:
        levels = _floats(args.levels or "0,0.01,0.02,0.05,0.1,0.2")
    except ValueError:
        return _usage_error(f"--levels {args.levels!r}: expected a comma list of numbers, e.g. 0,0.05,0.1", prog)
    try:
        res = tracks.commands.sweep(
            kinds=[k.strip() for k in (args.kinds or "prog").split(",") if k.strip()], levels=levels,
            precisions=[k.strip() for k in (args.precisions or "fp32,int8,int4").split(",") if k.strip()],
            seeds=args.seeds if args.seeds is not None else [0, 1, 2], out=args.out, jobs=args.jobs,
            resume=not args.no_resume, model=args.model[0] if args.model else None, n_test=args.n_test,
            data_dir=args.data_dir, progress=not args.no_progress)
    except (ValueError, FileExistsError, tracks.DataError) as e:
        return _usage_error(str(e), prog)
    except KeyboardInterrupt:
        print(f"\n{prog}: interrupted; finished points are kept in {args.out}/sweep.jsonl (rerun the same "
              "command to resume)", file=sys.stderr)
        return EXIT_INTERRUPTED
    print(f"{len(res['records'])} points; summary: {res['summary_path']}; plots: {', '.join(map(str, res['plots']))}")
    return EXIT_OK


def _design_sweep(args: argparse.Namespace, prog: str) -> int:
    try:
        res = tracks.commands.sweep(
            design=True, config=args.config, grid=args.grid, fixed=args.fixed, base=args.base, seeds=args.seeds,
            models=args.model, n_test=args.n_test, n_steps=args.steps, insitu_steps=args.insitu_steps, out=args.out,
            jobs=args.jobs, scheduler=args.scheduler, resume=not args.no_resume, data_dir=args.data_dir,
            progress=not args.no_progress)
    except (ValueError, FileExistsError, tracks.DataError) as e:
        return _usage_error(str(e), prog)
    except KeyboardInterrupt:
        print(f"\n{prog}: interrupted; finished points are kept in {args.out}/sweep.jsonl (rerun the same "
              "command to resume)", file=sys.stderr)
        return EXIT_INTERRUPTED
    front = [r for r in res["summary"] if r.get("pareto")]
    print(f"{len(res['records'])} points, {len(res['summary'])} configurations ({len(front)} on the accuracy-energy "
          f"Pareto front); table: {res['csv']}; summary: {res['summary_path']}; plots: {', '.join(res['plots'])}")
    return EXIT_OK


def _add_tune_arguments(p: argparse.ArgumentParser) -> None:
    p.description = ("Optuna search (TPE, median pruning) of a Track 25 training recipe, scored on a validation "
                     "split of the training set (the test set is never read); resumable: the study lives in "
                     "OUT/tune.db, the summary in OUT/<study>.json (see tracks/tune.py).")
    p.add_argument("--family", required=True, help="eqprop, bptt or ffbp (feed-forward MLP, backprop)")
    p.add_argument("--dataset", default="mnist", help="mnist or fashion_mnist (default mnist)")
    p.add_argument("--trials", type=int, default=12, help="finished trials in all, resumed ones included (default 12)")
    p.add_argument("--n-train", type=int, default=10000, help="training images per trial (default 10000)")
    p.add_argument("--n-val", type=int, default=5000, help="validation images carved from train (default 5000)")
    p.add_argument("--epochs", type=int, default=3, help="epochs per trial (default 3)")
    p.add_argument("--sizes", type=int, nargs="+", default=[784, 512, 10], help="layer widths (default 784 512 10)")
    p.add_argument("--seed", type=int, default=0, help="sampler and initialisation seed (default 0)")
    p.add_argument("--out", default="tracks/shared/tuning", help="study folder (resumed if it holds the study)")
    p.add_argument("--data-dir")
    p.add_argument("--no-progress", action="store_true")


def _tune(args: argparse.Namespace, argv: list[str] | None = None) -> int:
    prog = "run_suite.py tune"
    from tracks import tune as tune_mod
    try:
        s = tune_mod.tune(args.family, args.dataset, args.out, n_trials=args.trials, n_train=args.n_train,
                          n_val=args.n_val, epochs=args.epochs, sizes=tuple(args.sizes), seed=args.seed,
                          data_dir=args.data_dir, progress=not args.no_progress)
    except (ValueError, tracks.DataError) as e:
        return _usage_error(str(e), prog)
    except KeyboardInterrupt:
        print(f"\n{prog}: interrupted; finished trials are kept in {args.out}/tune.db (rerun the same command "
              "to resume)", file=sys.stderr)
        return EXIT_INTERRUPTED
    b = s["best_trial"]
    print(f"{s['study']}: best trial {b['number']} val acc {b['value']:.4f} {b['params']} "
          f"({s['budget']['trials_finished']} trials, {s['budget']['seconds_all_runs']:.0f} s); "
          f"summary: {args.out}/{s['study']}.json")
    return EXIT_OK


def _add_timings_arguments(p: argparse.ArgumentParser) -> None:
    p.description = ("Record the wall seconds of every track that ran in RUN_DIR (from its results.json: variant "
                     "quick, full or full (CPU-reduced), run folder, date, commit, machine) into the timings file "
                     "that --list reads; entries of the same track and variant are replaced.")
    p.add_argument("run_dir", metavar="RUN_DIR", help="folder of a run of run_suite.py (holds results.json)")
    p.add_argument("--out", default=None, help="timings file (default: tracks/shared/tuning/timings.json)")
    p.add_argument("--load-note", default=None, help="what the machine's load was during the run (recorded)")


def _timings(args: argparse.Namespace, argv: list[str] | None = None) -> int:
    prog = "run_suite.py timings"
    try:
        info = tracks.harness.timings.record_timings(args.run_dir, args.out, load_note=args.load_note)
    except tracks.harness.timings.TimingsError as e:
        return _usage_error(str(e), prog)
    for key, variant, sec in info["recorded"]:
        print(f"{key:<28} {variant:<20} {_est(sec):>9}")
    for key, why in info["skipped"]:
        print(f"{key:<28} skipped: {why}")
    print(f"wrote {info['path']}")
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` with the subcommand parser and run the command; arguments that start with an option
    (or none) go to ``run``, so ``run_suite.py --all --quick`` is ``run_suite.py run --all --quick``.

    ``run_suite.py -h`` shows the subcommands; ``run_suite.py run -h`` the options of ``run``.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or (argv[0].startswith("-") and argv[0] not in ("-h", "--help")):
        argv = ["run", *argv]
    try:
        args = build_main_parser().parse_args(argv)
    except _UsageExit as e:
        print(e, file=sys.stderr)
        return EXIT_USAGE
    except SystemExit as e:  # --help
        return EXIT_OK if not e.code else EXIT_USAGE
    if args.command is None:
        build_main_parser().print_help()
        return EXIT_USAGE
    return SUBCOMMANDS[args.command](args, argv[1:])


SUBCOMMANDS.update(run=_run, export=_export, sweep=_sweep)
SUBCOMMANDS.update(tune=_tune, timings=_timings)


def _sigterm_as_interrupt(signum, frame):  # a batch scheduler's SIGTERM ends the run like Ctrl-C
    raise KeyboardInterrupt


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _sigterm_as_interrupt)
    sys.exit(main())

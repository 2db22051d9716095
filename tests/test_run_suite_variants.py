"""Settings levels (quick / full / full (CPU-reduced)), --full-recipe, and measured --list timings."""
import dataclasses
import importlib
import json
import types

import pytest

import run_suite
import tracks
from tracks import Criterion, TrackResult, TrackSpec
from tracks.harness import timings as tm
from tracks.harness.base import CPU_FULL_VARIANT, TrackContext
from tracks.harness.runner import ResumeMismatchError, check_resume, run_inputs, run_tracks

CPU_REDUCED = {13: "t13_conv_eqprop", 14: "t14_transformer_eqprop", 34: "t34_cifar10", 37: "t37_char_lm",
               38: "t38_adaptive_compute", 39: "t39_reasoning", 44: "t44_device_updates"}


@dataclasses.dataclass(frozen=True)
class _Cfg:
    n: int = 100  # work size


def _track(tid=951, cpu_full=True):
    """A tiny real track: sums range(n) for the n of the config it was handed."""
    m = types.ModuleType(f"test_variant_track_{tid}")
    m.SPEC = TrackSpec(id=tid, slug=f"variants_{tid}", name="Variants", claim="sum(range(n)) = n(n-1)/2.",
                       criteria=(Criterion("exact", "==", 1),), est_seconds_full=1000.0, est_seconds_quick=1.0,
                       est_seconds_cpu_full=10.0 if cpu_full else None)
    m.QUICK, m.FULL = _Cfg(n=10), _Cfg(n=1000)
    if cpu_full:
        m.CPU_FULL = _Cfg(n=100)

    def run(ctx):
        c = ctx.settings(m.QUICK, m.FULL, cpu=getattr(m, "CPU_FULL", None))
        return TrackResult(metrics={"n": c.n, "exact": int(sum(range(c.n)) == c.n * (c.n - 1) // 2)})
    m.run = run
    return m



@pytest.mark.parametrize("tid", sorted(CPU_REDUCED))
def test_conv_and_transformer_tracks_select_their_cpu_reduced_config(tid):
    mod = importlib.import_module(f"tracks.{CPU_REDUCED[tid]}")
    t = tracks.get_track(tid)
    assert not t.broken and t.cpu_full_config is mod.CPU_FULL
    assert mod.CPU_FULL != mod.FULL and mod.CPU_FULL != mod.QUICK
    assert t.config(False, "cpu") is mod.CPU_FULL and t.variant(False, "cpu") == CPU_FULL_VARIANT
    assert t.config(False, "cuda") is mod.FULL and t.variant(False, "cuda:0") == "full"
    assert t.config(False, "cpu", full_recipe=True) is mod.FULL
    assert t.config(True, "cpu") is mod.QUICK and t.variant(True, "cuda") == "quick"
    ctx = TrackContext(out_dir="unused", quick=False, device="cpu")
    assert ctx.settings(mod.QUICK, mod.FULL, cpu=mod.CPU_FULL) is mod.CPU_FULL
    ctx.full_recipe = True
    assert ctx.settings(mod.QUICK, mod.FULL, cpu=mod.CPU_FULL) is mod.FULL
    assert t.est_seconds(CPU_FULL_VARIANT) <= 300 < t.est_seconds("full")


def test_a_track_without_cpu_full_runs_full_on_the_cpu(registered):
    t = registered(_track(952, cpu_full=False))
    assert t.variant(False, "cpu") == "full" and t.config(False, "cpu").n == 1000
    assert t.est_seconds(CPU_FULL_VARIANT) == 1000.0


def test_runner_records_the_variant_and_runs_its_config(tmp_path, registered):
    t = registered(_track())
    cases = [(dict(), CPU_FULL_VARIANT, 100), (dict(full_recipe=True), "full", 1000), (dict(quick=True), "quick", 10)]
    for i, (kw, variant, n) in enumerate(cases):
        res = run_tracks([t], tmp_path / f"r{i}", seeds=(0,), progress=False, **kw)
        row = json.loads(res.results_path.read_text())["tracks"][0]
        assert (row["variant"], row["metrics"]["n"], row["passed"]) == (variant, n, True)
        assert json.loads(res.results_path.read_text())["suite"]["full_recipe"] is bool(kw.get("full_recipe"))
        report = res.report_path.read_text()
        assert (CPU_FULL_VARIANT in report) is (variant == CPU_FULL_VARIANT)
    # --set is validated against the variant that runs, and reaches it
    res = run_tracks([t], tmp_path / "set", seeds=(0,), progress=False, overrides={"n": 7})
    assert res.tracks[0].metrics["n"] == 7 and res.tracks[0].variant == CPU_FULL_VARIANT
    # a resume must repeat --full-recipe
    inputs = run_inputs(quick=False, seeds=(0,), data_dir=None, device="cpu", overrides=None, full_recipe=True)
    with pytest.raises(ResumeMismatchError, match="full_recipe differs \\(--full-recipe\\)"):
        check_resume(tmp_path / "r0", **inputs)


def test_cpu_full_of_another_class_is_a_broken_track():
    m = _track(953)
    m.CPU_FULL = {"n": 3}
    with pytest.raises(ValueError, match="CPU_FULL must be an instance of FULL's config class"):
        tracks.register_track(m)


def test_full_recipe_flag_is_documented_and_passed(monkeypatch, capsys):
    assert run_suite.main(["run", "--help"]) == 0
    assert "--full-recipe" in capsys.readouterr().out
    seen = {}

    def fake_run_tracks(selected, out, **kw):
        seen.update(kw)
        raise KeyboardInterrupt
    monkeypatch.setattr(tracks, "run_tracks", fake_run_tracks)
    monkeypatch.setattr(tracks, "prepare_out_dir", lambda out: out)
    assert run_suite.main(["--track", "13", "--full-recipe", "--out", "unused"]) == 130
    assert seen["full_recipe"] is True and seen["device"] == "cpu"


def _finished_run(tmp_path, registered, name="run"):
    t = registered(_track())
    return run_tracks([t], tmp_path / name, seeds=(0, 1), progress=False).out_dir


def test_timings_are_recorded_and_listed(tmp_path, registered, monkeypatch, capsys):
    run_dir = _finished_run(tmp_path, registered)
    out = tmp_path / "timings.json"
    monkeypatch.setattr(tm, "TIMINGS_PATH", out)
    assert run_suite.main(["timings", str(run_dir), "--load-note", "test"]) == 0
    data = json.loads(out.read_text())
    e = data["tracks"]["t951_variants_951"][CPU_FULL_VARIANT]
    row = json.loads((run_dir / "results.json").read_text())["tracks"][0]
    assert e["seconds"] == round(row["seconds"], 1) and e["run"] == str(run_dir) and e["seeds"] == [0, 1]
    assert e["load_note"] == "test" and "machine" in e and "commit" in e and e["date"]
    capsys.readouterr()
    # --list: the measured figure (no ~) for the recorded variant, estimates (~) elsewhere
    data["tracks"]["t951_variants_951"][CPU_FULL_VARIANT]["seconds"] = 123.0  # a figure no estimate has
    out.write_text(json.dumps(data))
    assert run_suite.main(["--list"]) == 0
    line = next(ln for ln in capsys.readouterr().out.splitlines() if "variants_951" in ln)
    cells = line.split("Variants", 1)[1].split()
    assert cells == ["~1.0", "s", "2.0", "minR", "~16.7", "min"], line


@pytest.mark.parametrize("setup, message", [
    (lambda p: p / "missing", "no such folder"),
    (lambda p: p, "no results.json there"),
    (lambda p: (p / "results.json").write_text("{not json") and p, "results.json is unreadable"),
])
def test_timings_bad_run_folder_is_exit_2(tmp_path, setup, message, monkeypatch, capsys):
    monkeypatch.setattr(tm, "TIMINGS_PATH", tmp_path / "never.json")
    assert run_suite.main(["timings", str(setup(tmp_path))]) == 2
    assert message in capsys.readouterr().err and not (tmp_path / "never.json").exists()


def test_timings_of_a_run_where_nothing_ran_is_refused(tmp_path, registered):
    run_dir = _finished_run(tmp_path, registered)
    res = json.loads((run_dir / "results.json").read_text())
    res["tracks"][0]["not_run"] = True
    (run_dir / "results.json").write_text(json.dumps(res))
    with pytest.raises(tm.TimingsError, match="no track ran to the end"):
        tm.record_timings(run_dir, tmp_path / "t.json")


def test_list_with_a_broken_timings_file_is_exit_2(tmp_path, monkeypatch, capsys):
    bad = tmp_path / "timings.json"
    monkeypatch.setattr(tm, "TIMINGS_PATH", bad)
    bad.write_text('{"tracks": {"t13_conv_eqprop": {"fast": {"seconds": 1}}}}')
    assert run_suite.main(["--list"]) == 2
    assert "not in the expected format" in capsys.readouterr().err
    bad.write_text("[")
    assert run_suite.main(["--list"]) == 2
    assert "unreadable" in capsys.readouterr().err


def test_t13_judges_only_the_gpu_recipe_by_its_bars():
    t13 = importlib.import_module("tracks.t13_conv_eqprop")
    ctx = TrackContext(out_dir="unused", quick=False, device="cpu")
    assert t13.required(ctx.variant(has_cpu_full=True)) is t13.REQUIRED_QUICK
    ctx.full_recipe = True
    assert t13.required(ctx.variant(has_cpu_full=True)) is t13.REQUIRED_FULL
    with pytest.raises(ValueError, match="allowed: 'quick'"):
        t13.required("fast")

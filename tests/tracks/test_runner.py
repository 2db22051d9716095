"""Registry, runner, results.json schema and report.md, with tiny real tracks defined here."""
import json
import math
import sys
import types
from pathlib import Path

import numpy as np
import pytest

import tracks
from tracks import Criterion, TrackResult, TrackSpec
from tracks.harness.runner import OutDirError, run_tracks

SUITE_KEYS = {"version", "started", "argv", "machine"}
TRACK_KEYS = {"id", "slug", "name", "claim", "passed", "criteria", "metrics", "artifacts", "seconds",
              "notes", "failure"}


def _sum_of_squares_track(tid=901, threshold=285.0):
    """A real (tiny) computation: sum_{i<10} i^2 = 285, plus a written artifact and a table."""
    def run(ctx):
        v = np.arange(10)
        total = np.int64((v ** 2).sum())
        art = ctx.plots_dir / f"t{tid}_values.csv"
        art.write_text("\n".join(map(str, v ** 2)))
        return TrackResult(
            metrics={"sum_of_squares": total, "mean": np.float32(v.mean()), "undefined": float("nan"),
                     "squares": v ** 2, "table": [{"n": int(n), "square": int(n * n)} for n in v[:3]],
                     "seeds_seen": list(ctx.seeds), "quick": ctx.quick},
            artifacts=[str(art)], notes=["computed exactly"])

    m = types.ModuleType(f"test_track_{tid}")
    m.SPEC = TrackSpec(id=tid, slug=f"sum_squares_{tid}", name="Sum of squares",
                       claim="sum of i^2 for i < 10 is 285.",
                       criteria=(Criterion("sum_of_squares", ">=", threshold), Criterion("mean", "==", 4.5)),
                       est_seconds_full=1.0, est_seconds_quick=0.1)
    m.run = run
    return m


def _raising_track(tid=902):
    m = types.ModuleType(f"test_track_{tid}")
    m.SPEC = TrackSpec(id=tid, slug="raises", name="Raises", claim="never holds.",
                       criteria=(Criterion("x", ">=", 0),), est_seconds_full=1, est_seconds_quick=1)

    def run(ctx):
        raise RuntimeError("boom inside track")
    m.run = run
    return m



def test_registry_lookup(registered):
    t = registered(_sum_of_squares_track())
    assert tracks.get_track(901) is t
    assert tracks.get_track("901").slug == "sum_squares_901"
    assert tracks.get_track("sum_squares_901").id == 901
    assert tracks.get_track("t901_sum_squares_901").id == 901
    assert t in tracks.all_tracks()
    with pytest.raises(tracks.UnknownTrackError, match="901 \\(sum_squares_901\\)"):
        tracks.get_track("nope")
    with pytest.raises(ValueError, match="already used"):
        tracks.register_track(_sum_of_squares_track())


def test_register_rejects_non_track():
    with pytest.raises(ValueError, match="SPEC"):
        tracks.register_track(types.ModuleType("not_a_track"))


def test_run_writes_results_and_report(registered, tmp_path):
    t = registered(_sum_of_squares_track())
    done = []
    suite = run_tracks([t], tmp_path / "out", quick=True, seeds=(3, 4), argv=["x"], on_done=done.append)
    assert suite.passed and [r.id for r in done] == [901]
    data = json.loads((tmp_path / "out" / "results.json").read_text())
    assert SUITE_KEYS <= set(data["suite"]) and data["suite"]["argv"] == ["x"]
    assert {"cpu", "logical_cores", "versions"} <= set(data["suite"]["machine"])
    (row,) = data["tracks"]
    assert TRACK_KEYS <= set(row)
    assert row["passed"] is True and row["id"] == 901 and row["seconds"] >= 0
    m = row["metrics"]
    assert m["sum_of_squares"] == 285 and m["mean"] == 4.5 and m["undefined"] is None
    assert m["squares"][-1] == 81 and m["seeds_seen"] == [3, 4] and m["quick"] is True
    assert row["criteria"][0] == {"metric": "sum_of_squares", "op": ">=", "threshold": 285.0,
                                  "value": 285, "passed": True}
    assert row["artifacts"] == ["plots/t901_values.csv"]
    assert (tmp_path / "out" / row["artifacts"][0]).is_file()
    report = (tmp_path / "out" / "report.md").read_text()
    assert "1/1 tracks passed" in report and "Sum of squares" in report
    assert "sum of i^2 for i < 10 is 285." in report
    assert "| sum_of_squares | 285 | >= | 285 | PASS |" in report
    assert "| n | square |" in report and "computed exactly" in report
    assert "[t901_values.csv](plots/t901_values.csv)" in report
    assert (tmp_path / "out" / "suite.log").is_file()


def test_failing_criterion_fails(registered, tmp_path):
    t = registered(_sum_of_squares_track(threshold=286.0))
    suite = run_tracks([t], tmp_path / "out")
    assert not suite.passed
    (row,) = json.loads(suite.results_path.read_text())["tracks"]
    assert row["passed"] is False and row["criteria"][0]["passed"] is False
    assert row["criteria"][1]["passed"] is True
    assert "FAIL" in suite.report_path.read_text()


def test_exception_fails_only_that_track(registered, tmp_path):
    bad, good = registered(_raising_track()), registered(_sum_of_squares_track())
    suite = run_tracks([bad, good.id], tmp_path / "out")
    by_id = {r.id: r for r in suite.tracks}
    assert by_id[901].passed and not by_id[902].passed
    assert by_id[902].failure == "RuntimeError: boom inside track"
    assert "Traceback" in by_id[902].traceback
    data = json.loads(suite.results_path.read_text())
    assert [r["passed"] for r in data["tracks"]] == [False, True]
    report = suite.report_path.read_text()
    assert "boom inside track" in report and "<summary>Traceback</summary>" in report


def test_non_empty_out_dir_refused(registered, tmp_path):
    t = registered(_sum_of_squares_track())
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    with pytest.raises(OutDirError, match=str(tmp_path / "out")):
        run_tracks([t], tmp_path / "out")
    assert (tmp_path / "out" / "keep.txt").read_text() == "mine"


def test_default_out_dir_is_new_timestamped(registered, tmp_path, monkeypatch):
    t = registered(_sum_of_squares_track())
    monkeypatch.chdir(tmp_path)
    a = run_tracks([t], None).out_dir
    b = run_tracks([t], None).out_dir
    assert a != b and a.parent == b.parent == Path("runs")
    assert (tmp_path / a / "results.json").is_file() and (tmp_path / b / "results.json").is_file()


def test_json_safe_non_finite():
    from tracks.harness.runner import json_safe
    out = json_safe({"a": np.array([1.0, np.nan, -np.inf]), "b": np.bool_(True), "c": (np.int8(3),)})
    assert out == {"a": [1.0, None, None], "b": True, "c": [3]}
    json.dumps(out, allow_nan=False)


def test_discovery_picks_up_files_and_isolates_broken(tmp_path, monkeypatch):
    (tmp_path / "t951_good_one.py").write_text(
        "from tracks.harness.base import Criterion, TrackResult, TrackSpec\n"
        "SPEC = TrackSpec(951, 'good_one', 'Good', 'holds.', (Criterion('x', '==', 1),), 2.0, 1.0)\n"
        "def run(ctx):\n    return TrackResult(metrics={'x': 1})\n")
    (tmp_path / "t952_broken_one.py").write_text("import module_that_does_not_exist_xyz\n")
    (tmp_path / "t953_wrong_id.py").write_text(
        "from tracks.harness.base import Criterion, TrackSpec\n"
        "SPEC = TrackSpec(7, 'wrong_id', 'W', 'c.', (Criterion('x', '==', 1),), 1, 1)\n"
        "def run(ctx):\n    pass\n")
    (tmp_path / "helper_not_a_track.py").write_text("raise RuntimeError('must not be imported')\n")
    monkeypatch.setattr(tracks, "__path__", [*tracks.__path__, str(tmp_path)])
    tracks.refresh()
    try:
        by_id = {t.id: t for t in tracks.all_tracks()}
        assert not by_id[951].broken and by_id[951].name == "Good"
        assert by_id[952].broken and "module_that_does_not_exist_xyz" in by_id[952].error
        assert by_id[953].broken and "SPEC.id=7" in by_id[953].error
        assert 952 not in {t.id for t in tracks.all_tracks(include_broken=False)}
        table = tracks.track_table_markdown()
        assert "| 951 | `good_one` | Good | holds. | 1.0 s | 2.0 s |" in table and "broken" in table
        suite = run_tracks([951, "broken_one"], tmp_path / "out")
        assert [r.passed for r in suite.tracks] == [True, False]
        assert "import failed" in suite.tracks[1].failure
    finally:
        tracks.refresh()
        for name in [n for n in sys.modules if n.startswith("tracks.t95")]:
            del sys.modules[name]


def test_report_regenerates_from_results(registered, tmp_path):
    from tracks.harness.report import render_report
    from tracks.harness.runner import load_results
    suite = run_tracks([registered(_sum_of_squares_track())], tmp_path / "out")
    assert render_report(load_results(suite.out_dir)) == suite.report_path.read_text()
    assert math.isfinite(suite.tracks[0].seconds)


# ---------------------------------------------------------------- resume and the shared model cache
def _counting_track(tid, log, *, fail=False, interrupt_first=False, cache_key=None):
    """Appends its id to ``log`` each run; optionally fails its criterion, raises KeyboardInterrupt on its
    first run (a Ctrl-C mid-track), or trains a tiny net through ``ctx.model_cache`` first."""
    def run(ctx):
        log.append(tid)
        if cache_key is not None:
            from models.eqprop_mlp import EqPropConfig, EqPropMLP

            def train():
                log.append(f"train{tid}")
                return EqPropMLP(EqPropConfig(sizes=(5, 4, 2)), seed=0)
            ctx.model_cache.get_or_train(cache_key, train, label="tiny")
        if interrupt_first and log.count(tid) == 1:
            raise KeyboardInterrupt
        return TrackResult(metrics={"x": 0 if fail else 1})

    m = types.ModuleType(f"test_track_{tid}")
    m.SPEC = TrackSpec(id=tid, slug=f"count_{tid}", name=f"Count {tid}", claim="x is 1.",
                       criteria=(Criterion("x", "==", 1),), est_seconds_full=1, est_seconds_quick=1)
    m.run = run
    return m


def test_resume_keeps_finished_tracks_and_runs_the_rest(registered, tmp_path):
    calls = []
    a, c = registered(_counting_track(911, calls)), registered(_counting_track(912, calls, fail=True))
    b, d = registered(_counting_track(913, calls, interrupt_first=True)), registered(_counting_track(914, calls))
    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        run_tracks([a, c, b, d], out, seeds=(0,))
    first = json.loads((out / "results.json").read_text())
    assert first["suite"]["state"] == "interrupted" and [r["not_run"] for r in first["tracks"]] == [False, False,
                                                                                                     True, True]
    with pytest.raises(OutDirError):  # without resume the folder is refused, as before
        run_tracks([a, c, b, d], out, seeds=(0,))
    suite = run_tracks([a, c, b, d], out, seeds=(0,), resume=True, argv=["resume"])
    assert calls == [911, 912, 913, 913, 914]  # 911 and 912 (passed, failed) were not rerun
    assert [r.resumed for r in suite.tracks] == [True, True, False, False]
    assert [r.passed for r in suite.tracks] == [True, False, True, True] and not suite.passed  # 912 failed
    data = json.loads((out / "results.json").read_text())
    assert data["suite"]["state"] == "complete" and data["suite"]["argv"] != ["resume"]
    (res,) = data["suite"]["resumes"]
    assert res["kept"] == [911, 912] and res["rerun"] == [913, 914] and res["previous_state"] == "interrupted"
    assert res["argv"] == ["resume"]
    report = (out / "report.md").read_text()
    assert "FAIL (resumed)" in report and "kept tracks [911, 912]" in report
    # a finished run resumed again reruns nothing
    suite = run_tracks([a, c, b, d], out, seeds=(0,), resume=True)
    assert len(calls) == 5 and all(r.resumed for r in suite.tracks)


@pytest.mark.parametrize("change, word", [({"seeds": (1,)}, "seeds"), ({"quick": True}, "quick"),
                                          ({"data_dir": "OTHER"}, "data_root"), ({}, "device")])
def test_resume_with_other_inputs_refused(registered, tmp_path, change, word):
    from tracks.harness.runner import ResumeMismatchError, check_resume, run_inputs
    calls = []
    t = registered(_counting_track(915, calls, interrupt_first=True))
    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        run_tracks([t], out, seeds=(0,), data_dir=str(tmp_path))
    before = (out / "results.json").read_bytes()
    kw = dict(seeds=(0,), data_dir=str(tmp_path), quick=False, device="cpu")
    if change.get("data_dir") == "OTHER":
        change = {"data_dir": str(tmp_path / "other")}
    if word == "device":  # no second device here (run_tracks checks it exists): test the comparison directly
        with pytest.raises(ResumeMismatchError, match="device differs"):
            check_resume(out, **run_inputs(**{**kw, "device": "cuda"}, overrides=None))
    else:
        with pytest.raises(ResumeMismatchError, match=f"{word} differs"):
            run_tracks([t], out, resume=True, **{**kw, **change})
    with pytest.raises(ResumeMismatchError, match="overrides differs"):
        check_resume(out, **run_inputs(**kw, overrides={"n_test": 5}))
    assert (out / "results.json").read_bytes() == before and calls == [915]
    (tmp_path / "empty").mkdir()
    with pytest.raises(ResumeMismatchError, match="no results.json"):
        run_tracks([t], tmp_path / "empty", resume=True, **kw)


def test_model_cache_shared_between_tracks_and_kept_across_resume(registered, tmp_path):
    calls, key = [], {"dataset": "none", "sizes": [5, 4, 2], "seed": 0}
    p = registered(_counting_track(916, calls, cache_key=key))
    q = registered(_counting_track(917, calls, cache_key=key, interrupt_first=True))
    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        run_tracks([p, q], out, seeds=(0,))
    assert calls == [916, "train916", 917]  # 917 loaded 916's model, then was interrupted
    suite = run_tracks([p, q], out, seeds=(0,), resume=True)
    assert calls == [916, "train916", 917, 917]  # resumed 917 loaded the model again: trained once per run
    assert suite.passed and suite.tracks[0].resumed
    assert suite.tracks[0].model_cache == {"trained": 1, "loaded": 0, "corrupt": 0}
    assert suite.tracks[1].model_cache == {"trained": 0, "loaded": 1, "corrupt": 0}
    assert "1 trained, 0 loaded" in suite.report_path.read_text()


def test_cli_resume(registered, tmp_path, capsys):
    import run_suite
    calls = []
    registered(_counting_track(918, calls))
    registered(_counting_track(919, calls, interrupt_first=True))
    out = str(tmp_path / "run")
    assert run_suite.main(["--track", "918", "919", "--seeds", "0", "--out", out, "--no-progress"]) == 130
    assert "--resume" in capsys.readouterr().err
    assert run_suite.main(["--track", "918", "919", "--seeds", "0", "1", "--resume", out]) == 2
    assert "seeds differs" in capsys.readouterr().err
    assert run_suite.main(["--track", "918", "919", "--seeds", "0", "--resume", out, "--out", str(tmp_path)]) == 2
    assert "drop --out" in capsys.readouterr().err
    assert run_suite.main(["--track", "918", "919", "--seeds", "0", "--resume", str(tmp_path / "nope")]) == 2
    assert "no such folder" in capsys.readouterr().err
    assert calls == [918, 919]
    assert run_suite.main(["--track", "918", "919", "--seeds", "0", "--resume", out, "--no-progress"]) == 0
    assert calls == [918, 919, 919] and "kept [918]" in capsys.readouterr().out


def test_resume_of_a_run_recorded_before_resume_existed(registered, tmp_path):
    calls = []
    a, b = registered(_counting_track(920, calls)), registered(_counting_track(921, calls, interrupt_first=True))
    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        run_tracks([a, b], out, seeds=(0,))
    data = json.loads((out / "results.json").read_text())
    for k in ("resumes", "data_root"):
        del data["suite"][k]
    for r in data["tracks"]:
        del r["resumed"], r["model_cache"]
    (out / "results.json").write_text(json.dumps(data))
    suite = run_tracks([a, b], out, seeds=(0,), resume=True)
    assert suite.passed and calls == [920, 921, 921] and [r.resumed for r in suite.tracks] == [True, False]

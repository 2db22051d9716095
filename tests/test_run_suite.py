"""run_suite.py: listing, exit codes (0 pass, 1 fail, 2 usage), output folder."""
import json
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest

import run_suite
import tracks
from tracks import Criterion, TrackResult, TrackSpec

ROOT = Path(__file__).resolve().parents[1]


def _cli(*args, cwd=ROOT):
    env = {**os.environ, "EQPROP_NO_DOWNLOAD": "1"}
    return subprocess.run([sys.executable, str(ROOT / "run_suite.py"), *args], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=120)


def test_list_subprocess():
    r = _cli("--list")
    assert r.returncode == 0, r.stderr
    r = _cli("--list", "--markdown")
    assert r.returncode == 0 and r.stdout.startswith("| id | slug | name |")


@pytest.mark.parametrize("args, message", [
    ((), "nothing selected"),
    (("--track", "no_such_track_xyz"), "unknown track 'no_such_track_xyz'"),
    (("--all", "--track", "1"), "either --all or --track"),
    (("--seeds", "a"), "invalid int value"),
])
def test_bad_usage_exit_2(args, message):
    r = _cli(*args)
    assert r.returncode == 2 and message in r.stderr


def _track(tid, value):
    m = types.ModuleType(f"cli_track_{tid}")
    m.SPEC = TrackSpec(tid, f"cli_{tid}", f"CLI {tid}", "x is one.", (Criterion("x", "==", 1),), 1, 1)
    m.run = lambda ctx: TrackResult(metrics={"x": value})
    return m


@pytest.fixture
def two_tracks():
    tracks.register_track(_track(961, 1))
    tracks.register_track(_track(962, 0))
    yield
    tracks.unregister_track(961)
    tracks.unregister_track(962)


def test_main_exit_codes_and_out_dir(two_tracks, tmp_path, capsys):
    assert run_suite.main(["--track", "961", "--out", str(tmp_path / "a"), "--quick", "--seeds", "5"]) == 0
    out = capsys.readouterr().out
    assert "961 cli_961" in out and "PASS" in out and str(tmp_path / "a") in out
    data = json.loads((tmp_path / "a" / "results.json").read_text())
    assert data["suite"]["seeds"] == [5] and data["suite"]["quick"] is True
    assert run_suite.main(["--track", "cli_961", "962", "--out", str(tmp_path / "b")]) == 1
    assert "FAILED 962 cli_962" in capsys.readouterr().out
    assert run_suite.main(["--track", "961", "--out", str(tmp_path / "a")]) == 2  # never overwritten
    assert "not empty" in capsys.readouterr().err


def test_subcommand_dispatch(monkeypatch):
    seen = []
    monkeypatch.setitem(run_suite.SUBCOMMANDS, "export", lambda args, argv: seen.append((args.out, argv)) or 0)
    assert run_suite.main(["export", "--checkpoint", "c", "--spec", "int8", "--out", "o"]) == 0
    assert seen == [("o", ["--checkpoint", "c", "--spec", "int8", "--out", "o"])]
    ran = []
    monkeypatch.setitem(run_suite.SUBCOMMANDS, "run", lambda args, argv: ran.append((args.list, argv)) or 0)
    assert run_suite.main(["--list"]) == 0 and run_suite.main(["run", "--list"]) == 0  # run is the default
    assert ran == [(True, ["--list"]), (True, ["--list"])]
    assert run_suite.main(["bogus"]) == 2

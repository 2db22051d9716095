"""Every bad input gets a clear error (issue 11): through the real CLI (``run_suite.main`` in process, and
subprocesses where a signal or a fresh interpreter matters) and through the public API.

Each case asserts the exit status, that the message names the problem, and that nothing the user had
was overwritten or left half-written. Tiny models and few points keep the module fast.
"""
from __future__ import annotations

import json
import math
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import run_suite
import tracks
from models.checkpoint import save_checkpoint
from models.eqprop_mlp import EqPropConfig, EqPropMLP
from models.looped import LoopedConfig, LoopedMLP
from tracks import sweep
from tracks.harness.config import ConfigError, apply_overrides

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable


def _env(**extra):
    return {**os.environ, "EQPROP_NO_DOWNLOAD": "1", "EQPROP_PROGRESS": "off", **extra}


def _cli(*args, timeout=300, env=None):
    return subprocess.run([PY, str(ROOT / "run_suite.py"), *args], capture_output=True, text=True, cwd=ROOT,
                          env=env or _env(), timeout=timeout)


def _main(capsys, *args):
    rc = run_suite.main(list(args))
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def _tree(path: Path) -> dict[str, bytes]:
    """Every file under ``path`` with its bytes (to prove nothing changed)."""
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


@pytest.fixture
def ckpt(tmp_path) -> Path:
    """A small EqPropMLP checkpoint (random weights: deterministic, fast)."""
    return save_checkpoint(tmp_path / "net.pt", EqPropMLP(EqPropConfig(sizes=(784, 16, 10)), seed=0))


@pytest.fixture
def empty_data(tmp_path, monkeypatch) -> Path:
    """A data root with nothing in it, no download, no cache: every data look-up fails."""
    d = tmp_path / "nodata"
    d.mkdir()
    monkeypatch.setenv("EQPROP_DATA", str(d))
    monkeypatch.setenv("EQPROP_NO_DOWNLOAD", "1")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    return d


# ------------------------------------------------------------------ run: settings, seeds, device, --out
@pytest.mark.parametrize("args, words", [
    (("--track", "2", "--set", "n_test=100"), ["unknown setting", "n_test", "allowed keys", "n_images (int)"]),
    (("--track", "2", "--set", "n_images=abc"), ["n_images='abc'", "expected int"]),
    (("--track", "2", "--set", 'nets=["bogus"]'), ["nets", "bogus", "allowed"]),
    (("--track", "1", "--set", "sn_gamma=abc"), ["sn_gamma='abc'", "expected float"]),
    (("--track", "3", "--set", "n_tset=5"), ["track 3", "unknown setting", "n_tset"]),
    (("--track", "17", "--set", "precison=int8"), ["track 17", "unknown setting", "precison"]),
    (("--track", "16", "--set", "n_test=0"), ["n_test=0", ">= 1"]),
    (("--track", "35", "--set", "batch_size=0"), ["batch_size=0", "allowed"]),
    (("--track", "2", "16", "--set", "n_images=5"), ["track 16", "n_images", "--set 16.KEY=VALUE"]),
    (("--track", "2", "--set", "9.n_images=5"), ["'9' is not a selected track"]),
    (("--track", "2", "--seeds", "0", "0"), ["repeat [0]", "distinct"]),
    (("--track", "2", "--seeds", "-1"), ["-1", ">= 0"]),
    (("--track", "2", "--device", "mps"), ["--device", "mps", "not available"]),
    (("--track", "2", "--device", "tpu"), ["--device", "tpu"]),
])
def test_bad_run_usage_exits_2_before_any_work(capsys, tmp_path, args, words):
    out = tmp_path / "run"
    rc, _, err = _main(capsys, *args, "--out", str(out))
    assert rc == 2, err
    for w in words:
        assert w in err, (w, err)
    assert not out.exists()  # refused before a run folder was made
    assert "Traceback" not in err


def test_bad_inputs_through_a_real_process(tmp_path):
    """The same refusals from a fresh interpreter (``python run_suite.py ...``: exit status of the process)."""
    out = tmp_path / "run"
    cmd = ("import sys, run_suite; codes = [run_suite.main(a) for a in ("
           f"['--track', '16', '--set', 'n_test=abc', '--out', {str(out)!r}], "
           "['export', '--checkpoint', 'x.pt', '--spec', 'int8', '--out', 'y.onnx', '--verify', '-5'], "
           "['sweep', '--jobs', '0'])]; print(codes); sys.exit(max(codes))")
    r = subprocess.run([PY, "-c", cmd], capture_output=True, text=True, cwd=ROOT, env=_env(), timeout=300)
    assert r.returncode == 2 and r.stdout.strip() == "[2, 2, 2]", (r.stdout, r.stderr)
    assert "n_test='abc': expected int" in r.stderr and "--verify -5" in r.stderr and "--jobs 0" in r.stderr
    assert "Traceback" not in r.stderr and not out.exists()
    r = _cli("--track", "16", "--set", "n_test=abc", "--out", str(out))  # the script itself
    assert r.returncode == 2 and "expected int" in r.stderr and not out.exists()


def test_typed_configs_quick_and_full_and_validation():
    for t in tracks.all_tracks():
        assert not t.broken, t.error
        assert t.config(True) is not None and t.config(False) is not None, f"track {t.id} has no typed config"
        assert type(t.config(True)) is type(t.config(False))
        with pytest.raises(Exception):  # frozen
            setattr(t.config(True), next(iter(vars(t.config(True)))), 0)
    cfg = tracks.get_track(2).config(True)
    assert apply_overrides(cfg, {"nets": ["1h"]}, label="t").nets == ("1h",)  # JSON list -> typed tuple
    with pytest.raises(ConfigError, match="expected bool"):
        apply_overrides(cfg, {"skip_nudge": "yes"}, label="t")


def test_wrong_model_class_checkpoint_setting(capsys, tmp_path):
    looped = save_checkpoint(tmp_path / "looped.pt", LoopedMLP(LoopedConfig(n_in=784, n_hidden=8, n_out=10)))
    for tid in ("42", "41"):
        rc, _, err = _main(capsys, "--track", tid, "--set", f"checkpoint={looped}", "--out", str(tmp_path / "r"))
        assert rc == 2 and "LoopedMLP" in err and "EqPropMLP" in err and "Traceback" not in err, err
        assert not (tmp_path / "r").exists()


def test_unwritable_out_is_a_usage_error(capsys, tmp_path):
    blocker = tmp_path / "file.txt"
    blocker.write_text("mine")
    rc, _, err = _main(capsys, "--track", "2", "--out", str(blocker / "sub"))
    assert rc == 2 and "cannot write" in err and "Traceback" not in err
    rc, _, err = _main(capsys, "--track", "2", "--out", str(blocker))
    assert rc == 2 and "is a file" in err
    assert blocker.read_text() == "mine"


_SUITE = textwrap.dedent("""
    import sys, time, types
    sys.path.insert(0, {root!r})
    import run_suite, tracks
    from tracks import Criterion, TrackResult, TrackSpec
    def make(tid, seconds):
        m = types.ModuleType(f"sig_{{tid}}")
        m.SPEC = TrackSpec(tid, f"sig_{{tid}}", f"sig {{tid}}", "x is one.", (Criterion("x", "==", 1),), 1, 1)
        def run(ctx):
            time.sleep(seconds)
            return TrackResult(metrics={{"x": 1}})
        m.run = run
        return m
    tracks.register_track(make(981, 0.0))
    tracks.register_track(make(982, 60.0))
    tracks.register_track(make(983, 0.0))
    sys.exit(run_suite.main(["--track", "981", "982", "983", "--out", sys.argv[1]]))
""")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL])
def test_interrupted_suite_is_marked_and_never_passes(tmp_path, sig):
    out = tmp_path / "run"
    proc = subprocess.Popen([PY, "-c", _SUITE.format(root=str(ROOT)), str(out)], cwd=ROOT, env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    results = out / "results.json"
    deadline = time.time() + 120
    while time.time() < deadline:  # wait until track 981 is recorded and 982 sleeps
        if results.exists() and any(t["id"] == 981 and not t.get("not_run")
                                    for t in json.loads(results.read_text())["tracks"]):
            break
        time.sleep(0.1)
    else:
        proc.kill()
        pytest.fail("the suite did not start")
    time.sleep(0.3)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    data = json.loads(results.read_text())
    by_id = {t["id"]: t for t in data["tracks"]}
    assert set(by_id) == {981, 982, 983}  # every selected track is listed
    assert by_id[981]["passed"] is True
    assert by_id[982]["passed"] is False and by_id[982]["not_run"] is True
    assert by_id[983]["passed"] is False and by_id[983]["not_run"] is True
    assert data["suite"]["passed"] is False
    report = (out / "report.md").read_text()
    assert "1/3 tracks passed" in report and "NOT RUN" in report
    if sig == signal.SIGINT:
        assert proc.returncode == 130
        assert data["suite"]["state"] == "interrupted" and "INTERRUPTED" in report
        assert "interrupted" in err and "Traceback" not in err
    else:
        assert proc.returncode == -signal.SIGKILL
        assert data["suite"]["state"] == "running" and "INCOMPLETE" in report


# ------------------------------------------------------------------ divergence, NaN
def test_divergence_is_detected_and_nan_never_passes(tmp_path):
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(200, 784, generator=g), torch.randint(0, 10, (200,), generator=g)
    with pytest.raises(FloatingPointError, match="diverged"):
        sweep.train_mlp((784, 8, 10), x, y, epochs=1, lr=(float("inf"), 1.0), n_free_steps=3, n_nudge_steps=2)
    from tracks import t17_analog_noise as t17
    ctx = tracks.TrackContext(out_dir=tmp_path, quick=True, seeds=(0,), progress=False, overrides={
        "model": {"sizes": [784, 16, 10], "n_train": 500, "epochs": 1, "lr": [1e6, 1e6]}, "n_test": 100,
        "precisions": ["int8"], "betas": [0.5], "grad_noise": [0.0], "read_levels": [0.0, 0.01], "grad_batch": 16})
    res = t17.run(ctx)
    passed, _ = tracks.evaluate(t17.SPEC, res)
    assert not passed and "diverged" in res.failure
    c = tracks.Criterion("acc", ">=", 0.0)
    assert not c.check({"acc": float("nan")}) and not c.check({"acc": None})
    t17 = tracks.get_track(17)
    assert any(c.metric == "acc_chip_int8_clean" for c in t17.spec.criteria)  # a chance-level chip fails
    net = EqPropMLP(EqPropConfig(sizes=(4, 3, 2)), seed=0)
    with pytest.raises(ValueError, match="NaN"):
        net.predict(torch.full((2, 4), float("nan")))


# ------------------------------------------------------------------ export
def _export(capsys, *args):
    return _main(capsys, "export", *args)


def test_export_bad_arguments(capsys, tmp_path, ckpt, empty_data):
    out = tmp_path / "net.onnx"
    base = ("--checkpoint", str(ckpt), "--spec", "int8", "--out", str(out))
    cases = [
        (("--verify", "-5"), ["--verify -5", "0"]),
        (("--verify", "5", "--data-dir", str(tmp_path / "nonexistent")), ["--data-dir", "nonexistent", "not a folder"]),
        (("--verify", "5"), ["--verify needs the MNIST test set", "mnist"]),  # data error: nothing left behind
        (("--steps", "0"), ["--steps 0", ">= 1"]),
    ]
    for extra, words in cases:
        rc, _, err = _export(capsys, *base, *extra)
        assert rc == 2, (extra, err)
        for w in words:
            assert w in err, (extra, w, err)
        assert "Traceback" not in err
        assert not out.exists() and not list(tmp_path.glob(".net.partial*")), extra


def test_export_bad_checkpoints_and_specs(capsys, tmp_path, ckpt):
    out = tmp_path / "net.onnx"
    nan_net = EqPropMLP(EqPropConfig(sizes=(784, 8, 10)), seed=0)
    with torch.no_grad():
        nan_net.layers[0].weight[0, 0] = float("nan")
    nan_ckpt = save_checkpoint(tmp_path / "nan.pt", nan_net)
    payload = torch.load(ckpt, weights_only=True)
    torch.save({**payload, "model_config": "hello"}, tmp_path / "strcfg.pt")
    looped = save_checkpoint(tmp_path / "looped.pt", LoopedMLP(LoopedConfig(n_in=784, n_hidden=8, n_out=10)))
    (tmp_path / "empty.json").write_text("{}")
    (tmp_path / "noweights.json").write_text(json.dumps({"name": "x", "state": {"bits": 8, "frac_bits": 7}}))
    (tmp_path / "bad.json").write_text("{not json")
    cases = [
        ((str(nan_ckpt), "float"), ["non-finite weights", "nan.pt"]),
        ((str(tmp_path / "strcfg.pt"), "int8"), ["model_config is a str"]),
        ((str(looped), "int8"), ["LoopedMLP", "EqPropMLP"]),
        ((str(tmp_path / "missing.pt"), "int8"), ["missing.pt", "does not exist"]),
        ((str(ckpt), str(tmp_path / "empty.json")), ["empty.json", "weights", "state"]),
        ((str(ckpt), str(tmp_path / "noweights.json")), ["noweights.json", "'weights'"]),
        ((str(ckpt), str(tmp_path / "bad.json")), ["bad.json", "not valid JSON"]),
        ((str(ckpt), "int9"), ["int9"]),
    ]
    for (c, spec), words in cases:
        fmt = "float" if spec == "float" else "int"
        spec = "fp32" if spec == "float" else spec
        rc, _, err = _export(capsys, "--checkpoint", c, "--spec", spec, "--out", str(out), "--format", fmt)
        assert rc == 2, (c, spec, err)
        for w in words:
            assert w in err, (w, err)
        assert "Traceback" not in err and "['e', 'h', 'l', 'o']" not in err
        assert not out.exists()


def test_export_unwritable_out_and_existing_file_untouched(capsys, tmp_path, ckpt):
    blocker = tmp_path / "file.txt"
    blocker.write_text("mine")
    rc, _, err = _export(capsys, "--checkpoint", str(ckpt), "--spec", "int8", "--out", str(blocker / "net.onnx"))
    assert rc == 2 and "cannot write" in err and blocker.read_text() == "mine"
    rc, _, err = _export(capsys, "--checkpoint", str(ckpt), "--spec", "int8", "--out", str(blocker))
    assert rc == 2 and "exists" in err and blocker.read_text() == "mine"


# ------------------------------------------------------------------ sweep
def _sweep(capsys, *args):
    return _main(capsys, "sweep", *args)


def test_sweep_bad_arguments_fail_before_training(capsys, tmp_path, ckpt):
    (tmp_path / "afile").write_text("mine")
    cases = [
        (("--jobs", "0"), ["--jobs 0", ">= 1"]),
        (("--out", str(tmp_path / "afile")), ["afile", "is a file"]),
        (("--n-test", "0"), ["--n-test 0", "[1, 10000]"]),
        (("--n-test", "-5"), ["--n-test -5", "[1, 10000]"]),
        (("--seeds", "0", "0"), ["seeds", "repeat [0]"]),
        (("--seeds", "-1"), ["--seeds", "-1", ">= 0"]),
        (("--levels", "0,abc"), ["--levels", "abc"]),
        (("--kinds", "heat"), ["heat", "allowed"]),
    ]
    for extra, words in cases:
        t0 = time.perf_counter()
        args = {"--out": str(tmp_path / "sw"), "--model": str(ckpt), "--n-test": "20", "--levels": "0",
                "--precisions": "int8", "--seeds": ["0"], "--no-progress": None}
        flat = []
        for k, v in args.items():
            if k in extra:
                continue
            flat += [k] + ([] if v is None else (v if isinstance(v, list) else [v]))
        rc, _, err = _sweep(capsys, *flat, *extra)
        assert rc == 2, (extra, err)
        for w in words:
            assert w in err, (extra, w, err)
        assert "Traceback" not in err
        assert time.perf_counter() - t0 < 30  # refused at once, nothing trained
    assert (tmp_path / "afile").read_text() == "mine"
    assert not (tmp_path / "sw" / "sweep.jsonl").exists()


def test_sweep_bad_models(capsys, tmp_path, ckpt):
    zero = EqPropMLP(EqPropConfig(sizes=(784, 8, 10)), seed=0)
    with torch.no_grad():
        for p in zero.parameters():
            p.zero_()
    zero_ckpt = save_checkpoint(tmp_path / "zero.pt", zero)
    old_fmt = tmp_path / "oldcache.pt"
    torch.save({"config": {"sizes": [784, 8, 10]}, "state_dict": zero.state_dict()}, old_fmt)

    class Evil:  # a pickle that would run code on load
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'pwned'}",))
    evil = tmp_path / "evil.pt"
    torch.save(Evil(), evil)
    looped = save_checkpoint(tmp_path / "looped.pt", LoopedMLP(LoopedConfig(n_in=784, n_hidden=8, n_out=10)))
    cases = [(tmp_path / "missing.pt", ["missing.pt", "does not exist"]),
             (old_fmt, ["oldcache.pt", "not an eqprop-hwsim checkpoint"]),
             (evil, ["evil.pt", "corrupt or not a torch file"]),
             (zero_ckpt, ["zero.pt", "all-zero weights"]),
             (looped, ["looped.pt", "LoopedMLP", "EqPropMLP"])]
    for model, words in cases:
        rc, _, err = _sweep(capsys, "--model", str(model), "--out", str(tmp_path / "sw"), "--n-test", "20",
                            "--levels", "0", "--precisions", "int8", "--seeds", "0", "--no-progress")
        assert rc == 2, (model, err)
        for w in words:
            assert w in err, (w, err)
        assert "Traceback" not in err
    assert not (tmp_path / "pwned").exists()
    # the checkpoint format export takes is the one sweep takes
    rc, out, err = _sweep(capsys, "--model", str(ckpt), "--out", str(tmp_path / "ok"), "--n-test", "20",
                          "--levels", "0", "--precisions", "int8", "--seeds", "0", "--no-progress")
    assert rc == 0, err


def test_sweep_data_error_is_clear(capsys, tmp_path, ckpt, empty_data):
    rc, _, err = _sweep(capsys, "--model", str(ckpt), "--out", str(tmp_path / "sw"), "--n-test", "20",
                        "--levels", "0", "--precisions", "int8", "--seeds", "0", "--no-progress")
    assert rc == 2 and "mnist" in err.lower() and "Traceback" not in err
    assert not (tmp_path / "sw" / "summary.json").exists()


def test_sweep_resume_refuses_other_inputs(capsys, tmp_path, ckpt):
    common = ("--out", str(tmp_path / "sw"), "--levels", "0", "--precisions", "int8", "--seeds", "0",
              "--no-progress")
    assert _sweep(capsys, "--model", str(ckpt), "--n-test", "20", *common)[0] == 0
    before = _tree(tmp_path / "sw")
    rc, _, err = _sweep(capsys, "--model", str(ckpt), "--n-test", "30", *common)
    assert rc == 2 and "n_test: 20 -> 30" in err and "new --out" in err
    other = save_checkpoint(tmp_path / "other.pt", EqPropMLP(EqPropConfig(sizes=(784, 16, 10)), seed=1))
    rc, _, err = _sweep(capsys, "--model", str(other), "--n-test", "20", *common)
    assert rc == 2 and "model_sha256" in err
    assert _tree(tmp_path / "sw") == before  # refused runs change nothing
    # the same inputs from another path resume (the key is the content, not the file name)
    copy = tmp_path / "copy.pt"
    copy.write_bytes(ckpt.read_bytes())
    assert _sweep(capsys, "--model", str(copy), "--n-test", "20", *common)[0] == 0
    assert len(sweep.read_jsonl(tmp_path / "sw" / "sweep.jsonl")) == 1


# ------------------------------------------------------------------ sweep killed and resumed
_SWEEP_ARGS = ("--kinds", "prog,read", "--levels", "0,0.1", "--precisions", "int8", "--seeds", "0", "1", "2",
               "--n-test", "200", "--no-progress")
N_POINTS = 12


def _children(pid: int) -> list[int]:
    kids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                stat = (d / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                kids.append(int(d.name))
    return kids


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


@pytest.fixture(scope="module")
def reference_summary(tmp_path_factory):
    """The uninterrupted run (in process: the same CLI code, without a second interpreter start)."""
    d = tmp_path_factory.mktemp("ref")
    ck = save_checkpoint(d / "net.pt", EqPropMLP(EqPropConfig(sizes=(784, 16, 10)), seed=0))
    assert run_suite.main(["sweep", "--model", str(ck), "--out", str(d / "sw"), "--jobs", "1", *_SWEEP_ARGS]) == 0
    return ck, (d / "sw" / "summary.json").read_text()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc to find worker processes")
@pytest.mark.parametrize("sig, jobs", [(signal.SIGINT, 1), (signal.SIGKILL, 1), (signal.SIGINT, 2),
                                       (signal.SIGKILL, 2)])
def test_sweep_killed_and_resumed_equals_uninterrupted(tmp_path, reference_summary, sig, jobs):
    ck, ref = reference_summary
    out = tmp_path / "sw"
    args = ["sweep", "--model", str(ck), "--out", str(out), "--jobs", str(jobs), *_SWEEP_ARGS]
    proc = subprocess.Popen([PY, str(ROOT / "run_suite.py"), *args], cwd=ROOT, env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    jsonl = out / "sweep.jsonl"
    stop_after = random.Random(int(sig) * 10 + jobs).randint(1, 4)  # a random early point of the 12
    deadline = time.time() + 180
    workers: set[int] = set()
    while time.time() < deadline and proc.poll() is None:
        workers |= set(_children(proc.pid))
        if jsonl.exists() and len(jsonl.read_text().splitlines()) >= stop_after:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the sweep finished before it could be interrupted"
    workers |= set(_children(proc.pid))
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    if sig == signal.SIGINT:
        assert proc.returncode == 130 and "interrupted" in err and "Traceback" not in err, err
    deadline = time.time() + 10
    while time.time() < deadline and any(_alive(w) for w in workers):
        time.sleep(0.1)
    assert not [w for w in workers if _alive(w)], "orphaned worker processes"
    assert 0 < len(sweep.read_jsonl(jsonl)) < N_POINTS
    # resume, in process (the number of jobs does not change results)
    assert run_suite.main([*args[:-len(_SWEEP_ARGS) - 2], "--jobs", "1", *_SWEEP_ARGS]) == 0
    assert (out / "summary.json").read_text() == ref
    assert len(sweep.read_jsonl(jsonl)) == N_POINTS

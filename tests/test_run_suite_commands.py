"""The ``export`` and ``sweep`` subcommands of run_suite.py, run as a user would (subprocess)."""
import subprocess
import sys
from pathlib import Path

from models.checkpoint import save_checkpoint
from models.eqprop_mlp import EqPropConfig, EqPropMLP

ROOT = Path(__file__).resolve().parents[1]


def _cli(*args):
    return subprocess.run([sys.executable, str(ROOT / "run_suite.py"), *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=600)


def test_export_writes_verified_int_graph_and_never_overwrites(tmp_path):
    ckpt = save_checkpoint(tmp_path / "net.pt", EqPropMLP(EqPropConfig(sizes=(784, 16, 10)), seed=0))
    out = tmp_path / "net.onnx"
    r = _cli("export", "--checkpoint", str(ckpt), "--spec", "int8", "--out", str(out), "--steps", "5",
             "--verify", "20")
    assert r.returncode == 0, r.stderr
    assert out.is_file() and "wrote" in r.stdout
    assert "'int_graph_mismatches': 0" in r.stdout and "'passed': True" in r.stdout, r.stdout
    before = out.read_bytes()
    r = _cli("export", "--checkpoint", str(ckpt), "--spec", "int8", "--out", str(out))
    assert r.returncode == 2 and "exists" in r.stderr
    assert out.read_bytes() == before


def test_export_bad_inputs_are_usage_errors(tmp_path):
    r = _cli("export", "--checkpoint", str(tmp_path / "missing.pt"), "--spec", "int8", "--out", str(tmp_path / "a.onnx"))
    assert r.returncode == 2 and "does not exist" in r.stderr
    ckpt = save_checkpoint(tmp_path / "net.pt", EqPropMLP(EqPropConfig(sizes=(784, 8, 10)), seed=0))
    r = _cli("export", "--checkpoint", str(ckpt), "--spec", "int9", "--out", str(tmp_path / "b.onnx"))
    assert r.returncode == 2 and "int9" in r.stderr


def test_sweep_rejects_unknown_arguments():
    r = _cli("sweep", "--bogus")
    assert r.returncode == 2

"""tracks.sweep design-space sweeps: generic spec fields, validation naming the field, the Dask executor
(2-worker LocalCluster == serial, a point lost with its worker re-run), resume, tables, plots, on a tiny
EqProp model and a real MNIST slice."""
import csv
import dataclasses
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

import run_suite
from quant import get_preset
from quant.formats import AnalogSpec
from tracks.data import load_dataset
from tracks.sweep import design, space
from tracks.sweep.engine import SweepMismatchError, cached_mlp, read_jsonl


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    d = tmp_path_factory.mktemp("tiny")
    x, y = load_dataset("mnist", "train")
    xs, ys = torch.as_tensor(np.asarray(x[:1500])), torch.as_tensor(np.asarray(y[:1500]))
    _, path = cached_mlp(d, (784, 24, 10), xs, ys, epochs=1, lr=(0.2, 0.1))
    return path


def _cfg(path, **kw):
    base = dict(base="analog_pcm", grid={"analog.adc_bits": [3, 8], "analog.prog_noise_std": [0.0, 0.3]},
                seeds=[0, 1], models=[str(path)], n_test=120, n_steps=10)
    return design.SweepConfig(**{**base, **kw})


def test_fields_are_discovered_from_the_spec_classes(monkeypatch):
    f = space.spec_fields()
    for p in ("acc_bits", "rounding", "overflow", "weights.bits", "state.frac_bits", "update.lr_shift",
              "analog.adc_bits", "analog.prog_noise_std", "analog.drift_nu", "sim.t_inference_s"):
        assert p in f, p
    assert "name" not in f
    # a field added to a spec class becomes sweepable without a change in tracks/sweep
    NewAnalog = dataclasses.make_dataclass("NewAnalog", [("brand_new_knob", float, dataclasses.field(default=0.5))],
                                           bases=(AnalogSpec,), frozen=True)
    from quant.spec import HardwareSpec
    monkeypatch.setitem(HardwareSpec._NESTED, "analog", NewAnalog)
    assert "analog.brand_new_knob" in space.spec_fields()


def test_bad_fields_and_values_are_refused_naming_the_field(tiny):
    cases = [({"analog.adc_bitz": [4]}, "unknown spec field 'analog.adc_bitz'"),
             ({"analog.adc_bits": [4, 40]}, "analog.adc_bits=40: AnalogSpec.adc_bits=40 is invalid"),
             ({"analog.prog_noise_std": [-0.1]}, "analog.prog_noise_std=-0.1"),
             ({"sim.prog_noise_model": ["linear"]}, "prog_noise_model"),
             ({"analog.adc_bits": [4, 4]}, "repeats"),
             ({"analog.adc_bits": []}, "non-empty list")]
    for grid, words in cases:
        with pytest.raises(ValueError, match=None) as e:
            design.plan(_cfg(tiny, grid=grid))
        assert words in str(e.value), (grid, str(e.value))
    with pytest.raises(ValueError, match="has no 'analog' section"):
        design.plan(_cfg(tiny, base="int8"))
    with pytest.raises(ValueError, match="state.frac_bits=9.*cannot represent 1.0"):   # the simulator's own check
        design.plan(_cfg(tiny, base="int8", grid={"state.frac_bits": [7, 9]}))
    with pytest.raises(ValueError, match="analog specs only"):
        design.plan(_cfg(tiny, base="int8", grid={"weights.bits": [8]}, insitu={"steps": 2}))
    with pytest.raises(ValueError, match="both fixed"):
        design.plan(_cfg(tiny, set={"analog.adc_bits": 8}))
    with pytest.raises(ValueError, match="seeds"):
        design.plan(_cfg(tiny, seeds=[0, 0]))
    with pytest.raises(ValueError, match="cost: unknown keys"):
        design.plan(_cfg(tiny, cost={"adc_fom": 1}))


def test_cli_refuses_before_any_work(tmp_path, capsys, tiny):
    out = tmp_path / "sw"
    for args, words in ((["--grid", "analog.adc_bits=4,40"], "AnalogSpec.adc_bits=40 is invalid"),
                        (["--grid", "weights.bitz=4"], "unknown spec field"),
                        (["--grid", "analog.adc_bits=4", "--kinds", "prog"], "--kinds belong"),
                        (["--config", str(tmp_path / "nope.toml")], "does not exist"),
                        (["--grid", "analog.adc_bits"], "expected FIELD=VALUE")):
        rc = run_suite.main(["sweep", *args, "--model", str(tiny), "--out", str(out), "--no-progress"])
        err = capsys.readouterr().err
        assert rc == 2 and words in err and "Traceback" not in err, (args, err)
    assert not (out / "sweep.jsonl").exists()
    bad = tmp_path / "bad.toml"
    bad.write_text('seeds = [0]\nbogus = 1\n[grid]\n"analog.adc_bits" = [4]\n')
    assert run_suite.main(["sweep", "--config", str(bad), "--out", str(out)]) == 2
    assert "unknown keys ['bogus']" in capsys.readouterr().err


def test_design_sweep_serial_tables_plots_and_resume(tmp_path, tiny):
    cfg = _cfg(tiny)
    res = design.design_sweep(cfg, out=tmp_path / "a", jobs=1, progress=False)
    recs = res["records"]
    assert len(recs) == 8 and all(r["n_test"] == 120 for r in recs)
    by = {(r["fields"]["analog.adc_bits"], r["fields"]["analog.prog_noise_std"], r["seed"]): r for r in recs}
    assert by[(8, 0.0, 0)]["accuracy"] > 0.4                                     # the model works on the chip
    assert by[(8, 0.3, 0)]["accuracy"] < by[(8, 0.0, 0)]["accuracy"] - 0.05      # 30 % programming noise hurts
    assert by[(3, 0.0, 0)]["accuracy"] < by[(8, 0.0, 0)]["accuracy"]             # a 3-bit ADC hurts
    assert by[(8, 0.0, 0)]["energy_pj"] > by[(3, 0.0, 0)]["energy_pj"] > 0        # a wider ADC costs energy
    assert by[(8, 0.0, 0)]["latency_ns"] > by[(3, 0.0, 0)]["latency_ns"]
    with open(tmp_path / "a" / "results.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 8 and {"analog.adc_bits", "accuracy", "energy_pj", "latency_ns", "weight_bytes"} <= set(rows[0])
    summ = res["summary"]
    assert len(summ) == 4 and all(r["n"] == 2 for r in summ) and any(r["pareto"] for r in summ)
    for name in ("acc_vs_analog_adc_bits.png", "acc_vs_analog_prog_noise_std.png", "pareto.png", "summary.csv"):
        assert (tmp_path / "a" / name).stat().st_size > 500, name
    # resume: nothing recomputed (a sentinel in a finished record survives); other inputs refused
    lines = (tmp_path / "a" / "sweep.jsonl").read_text().splitlines()
    first = json.loads(lines[0])
    first["accuracy"] = -1.0
    (tmp_path / "a" / "sweep.jsonl").write_text("\n".join([json.dumps(first)] + lines[1:]) + "\n")
    again = design.design_sweep(cfg, out=tmp_path / "a", jobs=1, progress=False)
    assert sum(r["accuracy"] == -1.0 for r in again["records"]) == 1
    with pytest.raises(SweepMismatchError, match="n_steps: 10 -> 11"):
        design.design_sweep(dataclasses.replace(cfg, n_steps=11), out=tmp_path / "a", progress=False)
    with pytest.raises(SweepMismatchError, match=r"set.analog.read_noise_std: '\(absent\)' -> 0"):
        design.design_sweep(dataclasses.replace(cfg, set={"analog.read_noise_std": 0}), out=tmp_path / "a",
                            progress=False)


def die_once_then_evaluate(point, context, shared):
    """The real point function, except that the first worker to run seed 1 dies mid-point (a lost worker)."""
    marker = Path(os.environ["SWEEP_TEST_DIE_MARKER"])
    if point["seed"] == 1 and not marker.exists():
        marker.write_text(str(os.getpid()))
        os._exit(1)
    return design.evaluate_design_point(point, context, shared)


def test_two_worker_local_cluster_equals_serial_even_when_a_worker_dies(tmp_path, tiny, monkeypatch):
    monkeypatch.setenv("SWEEP_TEST_DIE_MARKER", str(tmp_path / "died"))   # inherited by the spawned workers
    cfg = _cfg(tiny, grid={"analog.prog_noise_std": [0.0, 0.3]}, set={"analog.adc_bits": 6})
    a = design.design_sweep(cfg, out=tmp_path / "serial", jobs=1, progress=False)["records"]
    b = design.design_sweep(cfg, out=tmp_path / "dask", jobs=2, progress=False, evaluate=die_once_then_evaluate)
    assert (tmp_path / "died").exists()            # a worker really died while it ran a point
    assert b["records"] == a and len(a) == 4       # its point was re-run; the records equal the serial run's
    assert sorted(read_jsonl(tmp_path / "serial" / "sweep.jsonl"), key=lambda r: r["key"]) == \
        sorted(read_jsonl(tmp_path / "dask" / "sweep.jsonl"), key=lambda r: r["key"])


def test_digital_specs_and_cli_config(tmp_path, tiny, capsys):
    cfg = tmp_path / "digital.toml"
    cfg.write_text(f'base = "int8"\nseeds = [0]\nn_test = 100\nn_steps = 10\nmodels = ["{tiny}"]\n'
                   '[grid]\n"weights.kind" = ["int"]\n"weights.bits" = [2, 8]\n[set]\nrounding = "floor"\n')
    rc = run_suite.main(["sweep", "--config", str(cfg), "--out", str(tmp_path / "d"), "--no-progress"])
    out = capsys.readouterr()
    assert rc == 0, out.err
    recs = read_jsonl(tmp_path / "d" / "sweep.jsonl")
    w = {r["fields"]["weights.bits"]: r for r in recs}
    assert w[8]["accuracy"] > w[2]["accuracy"]                       # 2-bit weights lose accuracy
    assert w[8]["weight_bytes"] > w[2]["weight_bytes"]               # and memory
    assert w[8]["energy_pj"] > w[2]["energy_pj"] > 0
    assert "Pareto front" in out.out


def test_existing_scheduler_and_insitu_learning(tmp_path, tiny, monkeypatch):
    """--scheduler: an existing cluster (here an in-process one) gives the serial records; in-situ EqProp on
    the analog chip reaches the conductances (a huge learning rate wrecks the accuracy, a small one does not)."""
    from distributed import LocalCluster

    ins = {"steps": 3, "batch_size": 20, "n_train": 200, "n_free_steps": 8, "n_nudge_steps": 4}
    cfg = _cfg(tiny, grid={"analog.prog_noise_std": [0.0]}, seeds=[0], insitu={**ins, "lr": 1e-4})
    serial = design.design_sweep(cfg, out=tmp_path / "s", progress=False)["records"]
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None) as cluster:
        remote = design.design_sweep(cfg, out=tmp_path / "r", scheduler=cluster.scheduler_address,
                                     progress=False)["records"]
    assert remote == serial
    r = serial[0]
    assert abs(r["accuracy_insitu"] - r["accuracy"]) < 0.05          # tiny steps: about the transferred chip
    big = design.design_sweep(dataclasses.replace(cfg, insitu={**ins, "lr": 200.0}), out=tmp_path / "b",
                              progress=False)["records"][0]
    assert big["accuracy"] == r["accuracy"]                          # same ex-situ chip
    assert big["accuracy_insitu"] < r["accuracy"] - 0.2               # the updates reached the devices
    assert (tmp_path / "b" / "pareto_insitu.png").exists()
    monkeypatch.setattr(design, "CONNECT_TIMEOUT_S", 2)
    with pytest.raises(ValueError, match="--scheduler tcp://127.0.0.1:1: cannot connect"):
        design.design_sweep(cfg, out=tmp_path / "x", scheduler="tcp://127.0.0.1:1", progress=False)

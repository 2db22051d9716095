"""tracks.sweep: grid validation, resumable JSONL runner (in process and in worker processes), CI,
plots, and an end-to-end sweep on a tiny EqProp model and real MNIST."""
import json
import math

import numpy as np
import pytest
import torch

from tracks import sweep
from tracks.harness.stats import mean_ci95
from tracks.data import load_dataset


def square_level(point, context):
    """A real (deterministic) point function for runner tests; module level so workers can pickle it."""
    return {**point, "key": sweep.SweepPoint(**point).key, "accuracy": 1.0 - point["level"] ** 2 * context["k"]}


def test_grid_and_point_validation():
    pts = sweep.grid(("prog", "read"), (0, 0.1), ("int8", "int4"), (0, 1, 2))
    assert len(pts) == 24 and len({p.key for p in pts}) == 24
    with pytest.raises(ValueError, match="kind"):
        sweep.SweepPoint("heat", 0.1, "int8", 0)
    with pytest.raises(ValueError, match="precision"):
        sweep.SweepPoint("prog", 0.1, "int9", 0)
    with pytest.raises(ValueError, match="level"):
        sweep.SweepPoint("prog", -0.1, "int8", 0)
    with pytest.raises(ValueError, match="jobs"):
        sweep.run_sweep(pts, square_level, {"k": 1}, "/tmp/never.jsonl", jobs=0)


def test_run_sweep_appends_and_resumes(tmp_path):
    pts = sweep.grid(("prog",), (0.0, 0.5, 1.0), ("int8",), (0, 1))
    path = tmp_path / "s.jsonl"
    # a previous, interrupted run: one finished point and a truncated line
    done = {**pts[1].to_dict(), "key": pts[1].key, "accuracy": -7.0, "inputs": {"k": 1.0}}
    path.write_text(json.dumps(done) + "\n" + '{"kind": "pro')
    recs = sweep.run_sweep(pts, square_level, {"k": 1.0}, path, jobs=1, resume=True)
    assert [r["key"] for r in recs] == [p.key for p in pts]
    assert recs[1]["accuracy"] == -7.0          # kept, not recomputed
    assert recs[4]["accuracy"] == 0.0           # level 1.0 computed
    assert len(sweep.read_jsonl(path)) == 6     # 1 old + 5 new, truncated line ignored
    with pytest.raises(sweep.SweepMismatchError, match=r"k: 1.0 -> 2.0"):  # other inputs: refused
        sweep.run_sweep(pts, square_level, {"k": 2.0}, path, jobs=1, resume=True)
    assert len(sweep.read_jsonl(path)) == 6     # untouched
    recs2 = sweep.run_sweep(pts, square_level, {"k": 1.0}, path, jobs=1, resume=False)
    assert recs2[1]["accuracy"] == 1.0 and len(sweep.read_jsonl(path)) == 6
    with pytest.raises(ValueError, match="repeat"):
        sweep.grid(("prog",), (0.0,), ("int8",), (0, 0))


def test_run_sweep_in_worker_processes_matches_in_process(tmp_path):
    pts = sweep.grid(("read",), (0.0, 0.3), ("fp32",), (0, 1))
    a = sweep.run_sweep(pts, square_level, {"k": 2.0}, tmp_path / "a.jsonl", jobs=1)
    b = sweep.run_sweep(pts, square_level, {"k": 2.0}, tmp_path / "b.jsonl", jobs=2)
    assert a == b


def test_ci95_and_summary():
    m, h = mean_ci95([0.0, 1.0, 2.0])
    assert m == 1.0 and math.isclose(h, 4.302652729911275 / math.sqrt(3), rel_tol=1e-9)  # t_{0.975, 2}
    recs = [{"kind": "prog", "precision": "int8", "level": 0.1, "accuracy": a} for a in (0.8, 0.9)]
    rows = sweep.summarize(recs)
    assert rows[0]["n"] == 2 and math.isclose(rows[0]["mean"], 0.85)
    one = sweep.summarize(recs[:1])
    assert one[0]["n"] == 1 and math.isnan(one[0]["ci95"])  # one seed: no interval, never a 0 width
    assert all(math.isnan(v) for v in mean_ci95([]))


def test_end_to_end_sweep_on_tiny_model(tmp_path):
    x, y = load_dataset("mnist", "train")
    xs, ys = torch.as_tensor(np.asarray(x[:2000])), torch.as_tensor(np.asarray(y[:2000]))
    net, path = sweep.cached_mlp(tmp_path / "cache", (784, 32, 10), xs, ys, epochs=1, lr=(0.2, 0.1))
    net2, path2 = sweep.cached_mlp(tmp_path / "cache", (784, 32, 10), xs, ys, epochs=1, lr=(0.2, 0.1))
    assert path == path2 and torch.equal(net.layers[0].weight, net2.layers[0].weight)  # cache hit
    res = sweep.sweep_command(kinds=("prog",), levels=(0.0, 0.5), precisions=("int8",), seeds=(0,),
                              out=tmp_path / "sw", jobs=1, model=path, n_test=200, n_steps=15, progress=False)
    acc = {r["level"]: r["mean"] for r in res["summary"]}
    assert acc[0.0] > 0.4                       # the tiny model learned something on the chip
    assert acc[0.5] < acc[0.0] - 0.05           # 50 % programming noise hurts
    assert (tmp_path / "sw" / "sweep_prog.png").stat().st_size > 1000
    assert len(sweep.read_jsonl(tmp_path / "sw" / "sweep.jsonl")) == 2
    from models.checkpoint import load_checkpoint
    assert torch.equal(load_checkpoint(path)[0].layers[0].weight, net.layers[0].weight)  # one checkpoint format
    with pytest.raises(FileExistsError, match="resume"):
        sweep.sweep_command(kinds=("prog",), levels=(0.0,), precisions=("int8",), seeds=(0,), out=tmp_path / "sw",
                            resume=False, model=path, n_test=10, progress=False)

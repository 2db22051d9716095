"""Tracks 25 (MNIST / Fashion-MNIST accuracy) and 35 (memory scaling): real path passes, broken path fails."""
import math
import pytest

import tracks
import tracks.t25_mnist_accuracy as t25
import tracks.t35_memory_scaling as t35
from tracks.harness.base import TrackContext, evaluate

evaluate_track = evaluate

T35_SMALL = {"t_values": (10, 30), "batch_size": 100, "repeats": 1}


def _ctx(tmp_path, **overrides):
    return TrackContext(out_dir=tmp_path, quick=True, progress=False, overrides=overrides)


# ------------------------------------------------------------------------------------------ track 35
def test_t35_eqprop_memory_flat_bptt_linear(tmp_path):
    res = t35.run(_ctx(tmp_path, **T35_SMALL))
    passed, crit = evaluate(t35.SPEC, res)
    assert passed, crit
    m = res.metrics
    # BPTT stores every sweep: at batch 100 at least the 100x512 float32 state per sweep (204.8 kB)
    assert m["bptt_bytes_per_sweep"] > 100 * 512 * 4
    assert m["bptt_step_bytes_t30"] > 1.8 * next(r["step_bytes"] for r in m["rows"]
                                                  if r["method"] == "bptt" and r["T"] == 10)
    # EqProp's step holds at least the 512x784 float32 weight gradient, and not much more
    assert 512 * 784 * 4 < m["eqprop_step_bytes_t30"] < 0.5 * m["bptt_step_bytes_t30"]
    assert res.artifacts == ["plots/t35_memory_vs_T.png"]
    assert (tmp_path / res.artifacts[0]).stat().st_size > 0


def test_t35_fails_when_eqprop_keeps_its_trajectory(tmp_path):
    # T up to 100: a kept trajectory (100 x 100 x 522 float32 = 21 MB) dwarfs RSS noise
    res = t35.run(_ctx(tmp_path, **{**T35_SMALL, "t_values": (10, 30, 100)}, eqprop_variant="keep_trajectory"))
    passed, crit = evaluate(t35.SPEC, res)
    assert not passed
    assert res.metrics["eqprop_mem_growth"] > 1.2


def test_t35_rejects_bad_overrides(tmp_path):
    with pytest.raises(ValueError, match="unknown setting"):
        t35.run(_ctx(tmp_path, n_steps=3))
    with pytest.raises(ValueError, match="including 30"):
        t35.run(_ctx(tmp_path, t_values=(10, 100)))
    with pytest.raises(ValueError, match="eqprop_variant"):
        t35.run_probe([("eqprop", 10)], None, None, variant="nope")


def test_t35_is_discovered():
    tr = tracks.get_track(35)
    assert not tr.broken and tr.spec.slug == "memory_scaling"


# ------------------------------------------------------------------------------------------ track 25
def _skip_nudged_phase(net, method):
    """Broken EqProp: the nudged phases are skipped (both contrast states are the free equilibrium)."""
    if method != "eqprop":
        return

    def eqprop_grads(x, y, *, beta, mode="symmetric", n_free_steps=30, n_nudge_steps=10, tol=0.0,
                     free_state=None, generator=None, return_states=False):
        s, _ = net.free_phase(x, n_steps=n_free_steps)
        g = net.contrast(x, s, s, -beta, beta)
        return (g, {"free": s, "s1": s, "s2": s, "b1": -beta, "b2": beta}) if return_states else g

    net.eqprop_grads = eqprop_grads


def test_t25_quick_passes_and_reports(tmp_path):
    from models.checkpoint import load_checkpoint
    from models.train import evaluate
    from tracks.data import load_dataset
    import torch

    res = t25.run(_ctx(tmp_path))
    passed, crit = evaluate_track(t25.SPEC, res)
    assert passed, crit
    m = res.metrics
    for k in ("mnist_test_acc_eqprop", "mnist_test_acc_bp", "fmnist_test_acc_eqprop", "fmnist_test_acc_bp"):
        assert 0.0 <= m[k] <= 1.0
    assert m["mnist_test_acc_eqprop"] > 0.8 and math.isnan(m["mnist_test_acc_eqprop_ci95"])  # one seed: no CI
    assert len(m["per_seed"]) == 4 and {r["method"] for r in m["per_seed"]} == {"eqprop", "bptt"}
    assert all(len(c["val_acc"]) == t25.QUICK.epochs for c in m["curves"])
    # the saved checkpoint is the model that was scored
    row = next(r for r in m["per_seed"] if r["dataset"] == "mnist" and r["method"] == "eqprop")
    net, meta = load_checkpoint(tmp_path / row["checkpoint"])
    x, y = load_dataset("mnist", "test")
    acc = evaluate(net, torch.from_numpy(x[:t25.QUICK.n_test]), torch.from_numpy(y[:t25.QUICK.n_test]))
    assert acc == row["test_acc"] == meta["metrics"]["test_acc"]
    assert (tmp_path / res.artifacts[0]).stat().st_size > 0


def test_t25_fails_when_nudged_phase_is_skipped(tmp_path):
    res = t25.run(_ctx(tmp_path, datasets=("mnist",), methods=("eqprop",), n_train=500, epochs=1,
                       n_test=500, n_val=100, net_hook=_skip_nudged_phase))
    passed, crit = evaluate_track(t25.SPEC, res)
    assert not passed
    assert res.metrics["mnist_eqprop_acc_margin"] < 0
    assert res.metrics["mnist_test_acc_eqprop"] < 0.5  # zero gradient: the untrained network


def test_t25_mean_ci95_and_bad_overrides(tmp_path):
    m, h = t25.mean_ci95([0.5, 0.7])  # the shared helper (tracks.harness.stats)
    assert m == pytest.approx(0.6) and h == pytest.approx(12.7062 * 0.1414214 / 1.4142136, rel=1e-4)
    with pytest.raises(ValueError, match="unknown setting"):
        t25.run(_ctx(tmp_path, lr=0.1))
    with pytest.raises(ValueError, match="datasets"):
        t25.run(_ctx(tmp_path, datasets=("cifar",)))


def test_t25_is_discovered():
    tr = tracks.get_track(25)
    assert not tr.broken and tr.spec.slug == "mnist_accuracy"

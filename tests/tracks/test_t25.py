"""Track 25 (MNIST / Fashion-MNIST accuracy, EqProp vs the FF-BP and BPTT baselines): real path passes,
broken paths fail, statistics over seeds."""
import math

import pytest
import torch

import tracks
import tracks.t25_mnist_accuracy as t25
from models.checkpoint import load_checkpoint
from models.ff_mlp import load_ff
from models.train import evaluate
from tracks.data import load_dataset
from tracks.harness.base import TrackContext, evaluate as evaluate_track


def _ctx(tmp_path, quick=True, seeds=(0, 1, 2), **overrides):
    return TrackContext(out_dir=tmp_path, quick=quick, progress=False, seeds=seeds, overrides=overrides)


def _crit(spec, res, metric):
    return next(r for r in evaluate_track(spec, res)[1] if r["metric"] == metric)


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
    res = t25.run(_ctx(tmp_path))
    passed, crit = evaluate_track(t25.SPEC, res)
    assert passed, crit
    m = res.metrics
    for p in ("mnist", "fmnist"):
        for k in ("eqprop", "bptt", "ffbp", "bp"):
            assert 0.0 <= m[f"{p}_test_acc_{k}"] <= 1.0
        strongest = max(("ffbp", "bptt"), key=lambda b: m[f"{p}_test_acc_{b}"])
        assert m[f"{p}_bp_baseline"] == strongest and m[f"{p}_test_acc_bp"] == m[f"{p}_test_acc_{strongest}"]
        assert m[f"{p}_bp_minus_eqprop"] == pytest.approx(m[f"{p}_test_acc_bp"] - m[f"{p}_test_acc_eqprop"])
        assert m[f"{p}_eqprop_vs_ffbp"]["n"] == 1 and math.isnan(m[f"{p}_eqprop_vs_ffbp"]["p_value"])
    assert m["mnist_test_acc_eqprop"] > 0.8 and math.isnan(m["mnist_test_acc_eqprop_ci95"])  # one seed: no CI
    assert m["mnist_test_acc_ffbp"] > 0.85
    assert len(m["per_seed"]) == 6 and {r["method"] for r in m["per_seed"]} == {"eqprop", "bptt", "ffbp"}
    assert all(len(c["val_acc"]) == t25.QUICK.epochs for c in m["curves"])
    x, y = load_dataset("mnist", "test")
    x, y = torch.from_numpy(x[:t25.QUICK.n_test]), torch.from_numpy(y[:t25.QUICK.n_test])
    # the saved checkpoints are the models that were scored
    for method, loader in (("eqprop", load_checkpoint), ("ffbp", load_ff)):
        row = next(r for r in m["per_seed"] if r["dataset"] == "mnist" and r["method"] == method)
        net, meta = loader(tmp_path / row["checkpoint"])
        assert evaluate(net, x, y) == row["test_acc"] == meta["metrics"]["test_acc"]
    assert (tmp_path / res.artifacts[0]).stat().st_size > 0


def test_t25_fails_when_nudged_phase_is_skipped(tmp_path):
    res = t25.run(_ctx(tmp_path, datasets=("mnist",), methods=("eqprop",), n_train=500, epochs=1,
                       n_test=500, n_val=100, net_hook=_skip_nudged_phase))
    passed, crit = evaluate_track(t25.SPEC, res)
    assert not passed
    assert res.metrics["mnist_eqprop_acc_margin"] < 0
    assert res.metrics["mnist_test_acc_eqprop"] < 0.5  # zero gradient: the untrained network


def test_t25_fails_when_the_ffbp_baseline_is_not_trained(tmp_path, monkeypatch):
    # workers=1: trained in this process, where the patched trainer applies (spawned workers import their own)
    small = dict(datasets=("mnist",), methods=("eqprop", "ffbp"), n_train=2000, epochs=2, n_test=1000, n_val=200,
                 workers=1)
    ok = t25.run(_ctx(tmp_path / "ok", **small))
    assert _crit(t25.SPEC, ok, "mnist_ffbp_acc_margin")["passed"]
    from tracks.shared import headline
    real_train = headline.train

    def train_all_but_backprop(net, x, y, cfg, **kw):
        if cfg.method != "backprop":
            return real_train(net, x, y, cfg, **kw)
        return {"train_loss": [float("nan")] * cfg.epochs, "val_acc": [0.0] * cfg.epochs, "lr": [0.0] * cfg.epochs}

    monkeypatch.setattr(headline, "train", train_all_but_backprop)
    res = t25.run(_ctx(tmp_path / "broken", **small))
    m = res.metrics
    assert m["mnist_test_acc_ffbp"] < 0.3  # the untrained net
    assert not _crit(t25.SPEC, res, "mnist_ffbp_acc_margin")["passed"]
    assert not evaluate_track(t25.SPEC, res)[0]
    # the untrained baseline alone makes the gap look small: that is why the baseline has its criterion
    assert m["mnist_bp_minus_eqprop"] < 0 and _crit(t25.SPEC, res, "mnist_bp_gap_margin")["passed"]
    assert m["mnist_test_acc_eqprop"] == ok.metrics["mnist_test_acc_eqprop"]  # EqProp path unchanged


def test_t25_gap_uses_the_stronger_baseline_and_seeds_are_paired():
    rows = [{"dataset": "mnist", "method": m, "seed": s, "test_acc": a}
            for m, accs in (("eqprop", (0.970, 0.972, 0.974)), ("bptt", (0.960, 0.950, 0.955)),
                            ("ffbp", (0.980, 0.981, 0.979))) for s, a in enumerate(accs)]
    out = t25.summarize(rows, "mnist", "mnist")
    assert out["mnist_bp_baseline"] == "ffbp" and out["mnist_test_acc_bp"] == pytest.approx(0.98)
    assert out["mnist_bp_minus_eqprop"] == pytest.approx(0.008)
    st = out["mnist_eqprop_vs_ffbp"]
    assert st["n"] == 3 and st["mean_diff"] == pytest.approx(-0.008) and st["p_value"] < 0.05 and st["cohens_d"] < 0
    assert out["mnist_eqprop_vs_bptt"]["mean_diff"] == pytest.approx(0.017)
    no_ff = t25.summarize([r for r in rows if r["method"] != "ffbp"], "mnist", "mnist")
    assert no_ff["mnist_bp_baseline"] == "bptt" and no_ff["mnist_bp_minus_eqprop"] == pytest.approx(-0.017)


def test_t25_full_mode_statistics_over_two_seeds(tmp_path):
    res = t25.run(_ctx(tmp_path, quick=False, seeds=(0, 1), datasets=("mnist",), methods=("eqprop", "ffbp"),
                       n_train=300, n_val=100, n_test=300, epochs=1))
    m = res.metrics
    assert m["seeds"] == [0, 1] and len(m["per_seed"]) == 4
    accs = [r["test_acc"] for r in m["per_seed"] if r["method"] == "eqprop"]
    assert m["mnist_test_acc_eqprop"] == pytest.approx(sum(accs) / 2) and m["mnist_test_acc_eqprop_ci95"] >= 0
    st = m["mnist_eqprop_vs_ffbp"]
    assert st["n"] == 2 and math.isfinite(st["p_value"])
    assert m["required_mnist_acc"] == t25.REQUIRED_FULL["mnist"] == 0.985
    assert m["required_mnist_max_gap"] == 0.003
    assert not evaluate_track(t25.SPEC, res)[0]  # 300 images, 1 epoch: far from the full targets


def test_t25_bad_overrides(tmp_path):
    with pytest.raises(ValueError, match="unknown setting"):
        t25.run(_ctx(tmp_path, lr=0.1))
    with pytest.raises(ValueError, match="datasets"):
        t25.run(_ctx(tmp_path, datasets=("cifar",)))
    with pytest.raises(ValueError, match="methods"):
        t25.run(_ctx(tmp_path, methods=("sgd",)))


def test_t25_is_discovered():
    tr = tracks.get_track(25)
    assert not tr.broken and tr.spec.slug == "mnist_accuracy"

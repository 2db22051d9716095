"""Tracks 13 (ConvEqProp gradients / accuracy) and 34 (CIFAR-10): the real path passes its criterion,
a broken path (nudged phase skipped; learning rate 0) fails it. Small overrides keep this file fast."""
import math

import pytest

import tracks
import tracks.t13_conv_eqprop as t13
import tracks.t34_cifar10 as t34
from tracks.harness.base import TrackContext, evaluate


def _ctx(tmp_path, **overrides):
    return TrackContext(out_dir=tmp_path, quick=True, progress=False, overrides=overrides)


def _crit(res, spec, metric):
    return next(r for r in evaluate(spec, res)[1] if r["metric"] == metric)


GRAD_SMALL = {"accuracy": False, "grad_channels": (2, 4), "grad_images": 2}
T13_ACC_SMALL = {"grad_channels": (2, 4), "grad_images": 2, "datasets": ("mnist",), "channels": (4, 8),
                 "n_train": 600, "n_val": 200, "n_val_eval": 100, "n_test": 300, "epochs": 1, "batch_size": 50}


def test_t13_gradients_match_bptt_and_implicit(tmp_path):
    res = t13.run(_ctx(tmp_path, **GRAD_SMALL))
    m = res.metrics
    for metric in ("min_layer_cosine_bptt", "min_layer_cosine_implicit"):
        assert _crit(res, t13.SPEC, metric)["passed"], m[metric]
    assert m["free_residual"] < 1e-9
    assert m["implicit_vs_bptt_min_cosine"] > 0.999999
    assert set(m["layer_cosine_bptt_at_best"]) == {"convs.0.weight", "convs.0.bias", "convs.1.weight",
                                                   "convs.1.bias", "fc.weight", "fc.bias"}
    assert not evaluate(t13.SPEC, res)[0]  # the accuracy criteria have no metrics without the accuracy part
    assert (tmp_path / res.artifacts[0]).stat().st_size > 0


def test_t13_skipped_nudged_phase_fails_the_gradient_criterion(tmp_path):
    res = t13.run(_ctx(tmp_path, **GRAD_SMALL, skip_nudge=True))
    for metric in ("min_layer_cosine_bptt", "min_layer_cosine_implicit"):
        assert not _crit(res, t13.SPEC, metric)["passed"]


def test_t13_lr_zero_fails_the_accuracy_criterion(tmp_path):
    """With the EqProp learning rate at 0 the net stays at chance; trained, it is far above."""
    broken = t13.run(_ctx(tmp_path / "broken", **T13_ACC_SMALL, lr=0.0, bp_lr=3e-3))
    assert not _crit(broken, t13.SPEC, "mnist_eqprop_acc_margin")["passed"]
    assert not _crit(broken, t13.SPEC, "mnist_bp_gap_margin")["passed"]  # BP learns, EqProp does not
    assert broken.metrics["mnist_test_acc_eqprop"] < 0.3
    ok = t13.run(_ctx(tmp_path / "ok", **T13_ACC_SMALL, lr=3e-3, bp_lr=3e-3))
    assert ok.metrics["mnist_test_acc_eqprop"] > broken.metrics["mnist_test_acc_eqprop"] + 0.25
    assert math.isnan(ok.metrics["mnist_test_acc_eqprop_ci95"])  # one seed: no interval, never 0


def test_t34_lr_zero_fails_and_names_the_variant(tmp_path):
    small = {"channels": (2, 4, 4), "n_train": 300, "n_val": 200, "n_val_eval": 100, "n_test": 200, "epochs": 1,
             "batch_size": 50, "t1": 8, "t2": 3, "required_acc": 0.2}
    res = t34.run(_ctx(tmp_path, **small, lr=0.0))
    assert not evaluate(t34.SPEC, res)[0]
    assert res.metrics["variant"].startswith("CIFAR-10")
    assert res.metrics["variant"] in res.notes[0]
    assert res.metrics["n_train"] == 300 and res.metrics["n_test"] == 200


def test_configs_refuse_bad_values(tmp_path):
    with pytest.raises(ValueError, match="datasets"):
        t13.Config(datasets=("cifar",))
    with pytest.raises(ValueError, match="bp_activations"):
        t13.Config(bp_activations=("tanh",))
    with pytest.raises(ValueError, match="lr_schedule"):
        t34.Config(lr_schedule="step")
    with pytest.raises(ValueError, match="required_acc"):
        t34.Config(required_acc=1.5)


def test_feedforward_baseline_shares_the_initial_weights():
    import torch
    from models.conv import ConvConfig, ConvEqProp

    net = ConvEqProp(ConvConfig(channels=(3, 4)), seed=1)
    ff = t13.FeedForwardConv.like(net, "hard_sigmoid")
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), ff.state_dict().values()))
    x = torch.rand(5, 784)
    s = net.zero_state(5, x)
    s = net.step(s, net.drive(x))  # async schedule [[0, 2], [1]]: node 0 first sees s_1 = 0
    first = (torch.nn.functional.max_pool2d(torch.nn.functional.conv2d(x.reshape(5, 1, 28, 28), ff.convs[0].weight), 2)
             + ff.convs[0].bias[:, None, None]).clamp(0, 1)
    assert torch.allclose(s[0], first.flatten(1), atol=1e-6)
    assert ff(x).shape == (5, 10)


def test_tracks_are_discovered():
    for i, slug in ((13, "conv_eqprop"), (34, "cifar10")):
        tr = tracks.get_track(i)
        assert not tr.broken and tr.spec.slug == slug

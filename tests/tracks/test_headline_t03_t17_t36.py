"""The full variants of Tracks 3, 17 and 36 start from the headline model (issue 14): the wiring is
checked with ``tracks.shared.headline.headline_eqprop`` replaced by a tiny EqProp net trained on a
real MNIST / Fashion-MNIST slice (the real headline model trains for minutes). Each track must ask for
the headline model of every seed (and data set), score all of the split's test images, say so in its
notes, and still fail when its noise / fault path is bypassed. The quick variants never ask for it."""
import numpy as np
import pytest
import torch

import tracks.shared.headline as headline
from tracks import t03_self_healing as t03
from tracks import t17_analog_noise as t17
from tracks import t36_ood_energy as t36
from tracks.data import load_dataset
from tracks.harness.base import TrackContext, evaluate

_NETS: dict = {}


def _fake_headline(calls):
    """A stand-in for ``headline_eqprop``: 784-32-10 trained 1 epoch on 1500 real images of ``ds``."""
    from tracks.sweep import train_mlp

    def fake(ctx, ds="mnist", seed=0, *, data=None):
        calls.append((ds, seed))
        x, y = load_dataset(ds, "train", ctx.data_dir)
        xt, yt = load_dataset(ds, "test", ctx.data_dir)
        if data is None:
            data = {"x_tr": torch.from_numpy(x[:1500]), "y_tr": torch.from_numpy(y[:1500]),
                    "x_val": torch.from_numpy(x[-200:]), "y_val": torch.from_numpy(y[-200:]),
                    "x_te": torch.from_numpy(xt[:240]), "y_te": torch.from_numpy(yt[:240])}
        if (ds, seed) not in _NETS:
            _NETS[(ds, seed)] = train_mlp((784, 32, 10), data["x_tr"], data["y_tr"], epochs=1, lr=(0.2, 0.1),
                                          seed=seed)
        net = _NETS[(ds, seed)]
        acc = float((net.predict(data["x_te"], n_steps=30) == data["y_te"]).double().mean())
        return net, data, {"description": f"FAKE headline {ds} s{seed}", "test_acc": acc}
    return fake


@pytest.fixture
def calls(monkeypatch):
    got = []
    monkeypatch.setattr(headline, "headline_eqprop", _fake_headline(got))
    return got


def _ctx(tmp_path, seeds=(0,), **ov):
    # quick=True keeps the tiny sizes of the other settings; headline=True selects the full variant's path
    return TrackContext(out_dir=tmp_path, quick=True, seeds=seeds, progress=False, overrides={"headline": True, **ov})


def _crit(rows, metric):
    return next(r for r in rows if r["metric"] == metric)


def test_full_variants_use_the_headline_model_and_quick_ones_do_not():
    assert t03.FULL.headline and t17.FULL.headline and t36.FULL.headline
    assert not (t03.QUICK.headline or t17.QUICK.headline or t36.QUICK.headline)
    assert t03.FULL.n_test == 10000 and t17.FULL.n_test is None and t36.FULL.n_test is None  # all 10k test images


def test_t03_headline_path(tmp_path, calls):
    res = t03.run(_ctx(tmp_path, conv=False, insitu_steps=4, eval_every=2, curve_n_val=100,
                       device_models=("ideal", "soft_bounds"), lr=(0.2, 0.1)))
    m = res.metrics
    assert calls == [("mnist", 0)] and m["headline"] and m["n_test"] == 240
    assert "FAKE headline mnist s0" in res.notes[0] and m["insitu_lr"] == [0.2, 0.1]
    _, rows = evaluate(t03.SPEC, res)
    assert _crit(rows, "fault_gap_points")["passed"] and _crit(rows, "stuck_max_change")["passed"], m
    assert [c["step"] for c in m["curve"]] == [0, 2, 4]   # curve on the validation slice, test read at the end
    broken = t03.run(_ctx(tmp_path, conv=False, insitu_steps=2, eval_every=2, curve_n_val=100, disable_noise=True,
                          device_models=("ideal",), lr=(0.2, 0.1)))
    assert not _crit(evaluate(t03.SPEC, broken)[1], "fault_gap_points")["passed"]


def test_t03_headline_needs_rates(tmp_path, calls):
    with pytest.raises(ValueError, match="in-situ rates lr"):
        t03.run(_ctx(tmp_path, conv=False, insitu_steps=2, lr=None))


def test_t17_headline_path(tmp_path, calls):
    from tests.hwsim.spiking.test_ports import small_trained_conv_net
    ov = dict(precisions=("int8",), prog_levels=(0.0, 0.05, 0.2), read_levels=(), betas=(0.05, 0.5),
              grad_noise=(0.0,), grad_batch=32, grad_seeds=1, conv_model=small_trained_conv_net(), conv_n_test=100)
    res = t17.run(_ctx(tmp_path, seeds=(0, 1), n_test=300, **ov))
    m = res.metrics
    # quick runs one seed: the headline model of that seed (the full variant: n_test None, all 10k)
    assert calls == [("mnist", 0)] and m["headline"] and m["n_test"] == 300
    assert "FAKE headline mnist s0" in res.notes[0] and m["acc_drop_read1"] is None
    assert [r["level"] for r in m["prog_curve"]] == [0.0, 0.05, 0.2]
    assert list((tmp_path / "t17").glob("headline_mnist_s0_*.pt"))
    _, rows = evaluate(t17.SPEC, res)
    assert _crit(rows, "acc_drop_prog20")["passed"] and _crit(rows, "acc_chip_int8_clean")["passed"], m
    broken = t17.run(_ctx(tmp_path, disable_noise=True, n_test=300, **ov))
    assert not _crit(evaluate(t17.SPEC, broken)[1], "acc_drop_prog20")["passed"]


def test_t17_rejects_prog_levels_without_the_criteria_levels(tmp_path):
    with pytest.raises(ValueError, match="prog_levels"):
        t17.run(TrackContext(out_dir=tmp_path, quick=True, seeds=(0,), progress=False,
                             overrides={"prog_levels": (0.0, 0.05)}))


def test_t36_headline_path(tmp_path, calls):
    res = t36.run(_ctx(tmp_path, seeds=(0,), n_test=200, hw_n_test=40, n_boot=20, n_steps=30))
    m = res.metrics
    assert sorted(calls) == [("fashion_mnist", 0), ("mnist", 0)] and m["headline"] and m["n_test"] == 200
    assert "FAKE headline mnist s0" in res.notes[0] and "FAKE headline fashion_mnist s0" in res.notes[0]
    assert np.isfinite(m["fmnist_energy_auroc_mnist"]) and 0.5 < m["acc_mnist"] <= 1.0
    broken = t36.run(_ctx(tmp_path, seeds=(0,), n_test=200, hw_n_test=40, n_boot=20, n_steps=30, score_noise=True,
                          hardware=False))
    assert not _crit(evaluate(t36.SPEC, broken)[1], "energy_informative_sets")["passed"]

"""Issue 14: the full variants of Tracks 4/16/19, 41 and 42 start from the headline model
(``tracks.shared.headline.headline_eqprop``); the quick variants never train it. The headline model is
replaced here by a small stand-in (784-24-10 on a slice of the real split) to check the wiring fast."""
from __future__ import annotations

import pytest

from models.eqprop_mlp import EqPropConfig, EqPropMLP
from tracks import base
from tracks.shared import headline
from tracks.shared import quantized as q

SMALL = dict(n_train=300, n_val=100, n_test=200)


@pytest.fixture
def fake_headline(monkeypatch):
    calls = []

    def fake(ctx, ds="mnist", seed=0, *, data=None):
        calls.append((ds, seed))
        data = headline.load_split(ds, ctx, **SMALL)
        net = EqPropMLP(EqPropConfig(sizes=(784, 24, 10)), seed=seed)
        return net, data, {"test_acc": 0.5, "description": f"stand-in headline seed {seed}"}
    monkeypatch.setattr(headline, "headline_eqprop", fake)
    return calls


def _refuse(*a, **k):
    raise AssertionError("a quick variant asked for the headline model")


def test_full_configs_use_the_headline_model_and_quick_ones_do_not():
    from tracks import t41_onnx_fidelity as t41, t42_spiking_fidelity as t42
    assert q.FULL.headline and t41.FULL.headline and t42.FULL.headline
    assert not (q.QUICK.headline or t41.QUICK.headline or t42.QUICK.headline)
    assert q.FULL.n_test == 10000 and t41.FULL.n_test == 10000 and t42.FULL.n_test == 10000


def test_quantized_headline_path_starts_from_the_headline_model(tmp_path, fake_headline):
    from tracks import t16_int8
    ov = {"headline": True, "ft_n_train": 100, "n_train": 100, "hidden": 16, "n_test": 150, "ft_epochs": 1,
          "epochs": 1, "scratch": 1, "conv": False}
    ctx = base.TrackContext(out_dir=tmp_path, quick=True, seeds=(3,), progress=False, overrides=ov)
    res = t16_int8.run(ctx)
    m = res.metrics
    assert fake_headline == [("mnist", 3)]
    assert m["model"] == "headline 784-512-10" and m["ft_n_train"] == 100 and m["n_test"] == 150
    row = m["per_seed"][0]
    assert row["acc_headline"] == 0.5 and 0.0 <= row["acc_start"] <= 1.0 and "acc_onchip_scratch" in row
    assert m["onchip_gap_headline_pt"] == pytest.approx(100 * (row["acc_start"] - row["acc_onchip"]))
    assert any("stand-in headline seed 3" in n for n in res.notes)
    passed, rows = base.evaluate(t16_int8.SPEC, res)
    crit = {r["metric"]: r["passed"] for r in rows}
    # the integer-path checks run on the headline model's lowering
    assert crit["bitexact_mismatches"] and crit["code_range_violations"] and crit["weight_code_violations"]


def test_quantized_quick_never_asks_for_the_headline_model(tmp_path, monkeypatch):
    from tracks import t04_ternary
    monkeypatch.setattr(headline, "headline_eqprop", _refuse)
    ov = {"n_train": 200, "n_test": 100, "hidden": 16, "epochs": 1, "ft_epochs": 1, "conv": False}
    res = t04_ternary.run(base.TrackContext(out_dir=tmp_path, quick=True, seeds=(0,), progress=False, overrides=ov))
    assert res.metrics["model"] == "784-16-10 trained here" and "acc_start" not in res.metrics


def test_onnx_and_spiking_tracks_take_the_headline_model(tmp_path, fake_headline):
    from tracks import t41_onnx_fidelity as t41, t42_spiking_fidelity as t42
    ctx = base.TrackContext(out_dir=tmp_path, quick=True, seeds=(2,), progress=False)
    net, origin = t41._trained_net(ctx, t41.T41Config(headline=True), 2)
    assert net.sizes == [784, 24, 10] or tuple(net.sizes) == (784, 24, 10)
    assert origin == "stand-in headline seed 2"
    net2, notes = t42._model(ctx, t42.T42Config(n_train=10, n_test=10, n_brian=1, hidden=8, epochs=1, headline=True), 2)
    assert tuple(net2.sizes) == (784, 24, 10) and notes[0] == "stand-in headline seed 2"
    assert (tmp_path / "t42_model.pt").exists()
    assert fake_headline == [("mnist", 2), ("mnist", 2)]


def test_bad_headline_settings_name_the_problem():
    with pytest.raises(ValueError, match="ft_n_train"):
        q.QuantTrackConfig(ft_n_train=60000)
    with pytest.raises(ValueError, match="ft_lr"):
        q.QuantTrackConfig(ft_lr=(0.1, -1.0))

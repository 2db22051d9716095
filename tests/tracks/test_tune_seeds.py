"""tracks.tune: several initialisation seeds per trial, extra search dimensions (EqProp warmup), enqueued
trials, resuming with a widened search space; models.train: the rate warmup."""
import json

import pytest
import torch

import tracks.tune as tune_mod
from models.ff_mlp import FeedForwardMLP, FFConfig
from models.train import TrainConfig, train
from tracks.data import load_dataset

TINY = dict(n_train=300, n_val=200, epochs=1, sizes=(784, 16, 10), progress=False)


def test_init_seeds_score_the_mean_and_enqueued_trials_run_first(tmp_path):
    p0 = {"lr_in": 1e-3, "lr_out_ratio": 0.5, "beta": 0.5, "warmup_steps": 0}
    p1 = {**p0, "warmup_steps": 2}
    s = tune_mod.tune("eqprop", "mnist", tmp_path, n_trials=2, init_seeds=(1, 2),
                      extra_space={"warmup_steps": ("categorical", (0, 2))}, enqueue=[p0, p1], **TINY)
    assert [t["params"] for t in s["trials"]] == [p0, p1]
    for t in s["trials"]:
        per = t["val_acc_per_seed"]
        assert set(per) == {"1", "2"} and t["value"] == pytest.approx(sum(per.values()) / 2)
        assert [c[-1] for c in t["val_acc_curve"]] == [per["1"], per["2"]]
    assert s["inputs"]["init_seeds"] == [1, 2] and s["inputs"]["search_space"]["warmup_steps"] == ["categorical", [0, 2]]
    assert "init seeds [1, 2]" in s["objective"]
    best = s["trials"][s["best_trial"]["number"]]
    assert TrainConfig.from_dict({**s["recipe"], "epochs": 1}).warmup_steps == best["params"]["warmup_steps"]


def test_a_widened_search_space_resumes_a_narrower_one_is_refused(tmp_path, monkeypatch):
    narrow = {"lr": ("log", 1e-3, 2e-3), "weight_decay": ("log", 1e-6, 1e-5)}
    monkeypatch.setitem(tune_mod.SEARCH_SPACE, "ffbp", narrow)
    first = tune_mod.tune("ffbp", "mnist", tmp_path, n_trials=1, **TINY)
    monkeypatch.setitem(tune_mod.SEARCH_SPACE, "ffbp", {**narrow, "lr": ("log", 1e-3, 3e-2)})
    wide = tune_mod.tune("ffbp", "mnist", tmp_path, n_trials=2, **TINY)
    assert wide["trials"][0] == first["trials"][0] and len(wide["trials"]) == 2
    assert wide["search_space_history"] == [json.loads(json.dumps(first["inputs"]["search_space"]))]
    assert wide["inputs"]["search_space"]["lr"] == ["log", 1e-3, 3e-2]
    monkeypatch.setitem(tune_mod.SEARCH_SPACE, "ffbp", {**narrow, "lr": ("log", 1e-3, 1e-2)})  # narrower again
    with pytest.raises(ValueError, match="other inputs.*search_space"):
        tune_mod.tune("ffbp", "mnist", tmp_path, n_trials=3, **TINY)


def test_bad_init_seeds_and_extra_dimensions_are_refused(tmp_path):
    with pytest.raises(ValueError, match="--init-seeds"):
        tune_mod.tune("ffbp", "mnist", tmp_path, n_trials=1, init_seeds=(1, 1), **TINY)
    with pytest.raises(ValueError, match="extra search dimension 'lr'"):
        tune_mod.tune("ffbp", "mnist", tmp_path, n_trials=1, extra_space={"lr": ("log", 1e-4, 1e-2)}, **TINY)


def test_warmup_scales_the_first_updates_linearly():
    x, y = load_dataset("mnist", "train")
    x, y = torch.from_numpy(x[:200]), torch.from_numpy(y[:200])

    def first_updates(warmup: int) -> list[float]:
        net = FeedForwardMLP(FFConfig(sizes=(784, 8, 10)), seed=0)
        prev = [net.layers[0].bias.detach().clone()]
        deltas = []

        def cb(epoch, bi, n):
            w = n.layers[0].bias.detach().clone()
            deltas.append(w - prev[0])
            prev[0] = w
        cfg = TrainConfig(method="backprop", optimizer="sgd", momentum=0.0, lr=0.1, epochs=1, batch_size=50,
                          warmup_steps=warmup)
        train(net, x, y, cfg, progress=False, callback=cb)
        return deltas

    plain, warm = first_updates(0), first_updates(4)
    # same weights before step 0, so the first update is exactly a quarter (SGD, no momentum)
    assert torch.allclose(warm[0], plain[0] / 4, atol=1e-7)
    assert not torch.allclose(warm[0], plain[0], atol=1e-7)
    with pytest.raises(ValueError, match="warmup_steps"):
        TrainConfig(warmup_steps=-1)


def test_the_fashion_mnist_eqprop_recipe_comes_from_its_own_study_on_stalling_seeds():
    from tracks.shared import recipes
    name = "fmnist_784_512_10_eqprop"
    src = recipes.RECIPE_SOURCES[name]
    assert src["study"] == name and "no study of its own" not in recipes.RECIPE_NOTES[name]
    study = recipes.load_study(name)
    assert study["inputs"]["dataset"] == "fashion_mnist" and study["inputs"]["init_seeds"] == [1, 2]
    assert "warmup_steps" in study["inputs"]["search_space"]
    # trial 0: the MNIST recipe unchanged (no warmup), the one that stalled; it is not the best
    mnist = recipes.load_study("mnist_784_512_10_eqprop")["best_trial"]["params"]
    t0 = study["trials"][0]
    assert t0["params"] == {**mnist, "warmup_steps": 0}
    assert t0["value"] < study["best_trial"]["value"] == src["val_acc"]
    assert recipes.RECIPES[name] == tune_mod.recipe_from_params("eqprop", study["best_trial"]["params"],
                                                                epochs=recipes.DEFAULT_EPOCHS)


def test_a_resumed_study_does_not_draw_its_first_trials_again(tmp_path):
    first = tune_mod.tune("ffbp", "mnist", tmp_path, n_trials=1, **TINY)
    again = tune_mod.tune("ffbp", "mnist", tmp_path, n_trials=2, **TINY)  # TPE's random start-up phase
    assert again["trials"][0]["params"] == first["trials"][0]["params"]
    assert again["trials"][1]["params"] != again["trials"][0]["params"]

"""`run_suite.py tune` / tracks.tune: validation-only search, resume, bad arguments; the recipes of record
come from the saved studies."""
import json

import pytest
import torch

import run_suite
import tracks.data
import tracks.tune as tune_mod
from models.train import TrainConfig
from tracks.harness.stats import paired_test
from tracks.shared import recipes

TINY = dict(n_train=300, n_val=200, epochs=1, sizes=(784, 16, 10), progress=False)


@pytest.fixture
def no_test_split(monkeypatch):
    """Every loader refuses the test split; records the splits asked for."""
    real = tracks.data.load_dataset
    asked = []

    def guarded(name, split, data_dir=None):
        asked.append((name, split))
        if split != "train":
            raise AssertionError(f"the search read the {split} split of {name}")
        return real(name, split, data_dir)

    monkeypatch.setattr(tracks.data, "load_dataset", guarded)
    monkeypatch.setattr(tune_mod, "load_dataset", guarded)
    return asked


def test_search_reads_only_the_training_split_and_saves_the_study(tmp_path, no_test_split):
    s = tune_mod.tune("ffbp", "mnist", tmp_path, n_trials=2, **TINY)
    assert no_test_split == [("mnist", "train")]
    saved = json.loads((tmp_path / "mnist_784_16_10_ffbp.json").read_text())
    assert saved == json.loads(json.dumps(s))
    assert (tmp_path / "tune.db").stat().st_size > 0
    assert saved["inputs"]["search_space"] == {k: list(v) for k, v in tune_mod.SEARCH_SPACE["ffbp"].items()}
    assert saved["budget"]["trials_finished"] == 2 and saved["budget"]["train_images_per_trial"] == 300
    assert len(saved["trials"]) == 2
    best = max((t for t in saved["trials"] if t["state"] == "COMPLETE"), key=lambda t: t["value"])
    assert saved["best_trial"]["number"] == best["number"] and saved["best_trial"]["value"] == best["value"]
    assert 0.1 < best["value"] <= 1.0 and best["val_acc_curve"][-1] == best["value"]
    cfg = TrainConfig.from_dict({**saved["recipe"], "epochs": 1})
    assert cfg.method == "backprop" and cfg.lr == pytest.approx(best["params"]["lr"])


def test_search_resumes_and_refuses_other_inputs(tmp_path, no_test_split):
    first = tune_mod.tune("eqprop", "mnist", tmp_path, n_trials=1, **TINY)
    again = tune_mod.tune("eqprop", "mnist", tmp_path, n_trials=2, **TINY)
    assert [t["number"] for t in again["trials"]] == [0, 1]
    assert again["trials"][0]["params"] == first["trials"][0]["params"]  # kept, not rerun
    assert again["trials"][0]["value"] == first["trials"][0]["value"]
    same = tune_mod.tune("eqprop", "mnist", tmp_path, n_trials=2, **TINY)  # budget reached: no new trial
    assert len(same["trials"]) == 2
    with pytest.raises(ValueError, match="other inputs.*n_train"):
        tune_mod.tune("eqprop", "mnist", tmp_path, n_trials=3, **{**TINY, "n_train": 400})


@pytest.mark.parametrize("args, msg", [
    (["--family", "sgd"], "--family 'sgd' is invalid"),
    (["--family", "eqprop", "--dataset", "cifar10"], "--dataset 'cifar10' is invalid"),
    (["--family", "eqprop", "--trials", "0"], "--trials 0 is invalid"),
    (["--family", "eqprop", "--n-train", "55000", "--n-val", "10000"], "exceed the 60000 training images"),
    (["--family", "eqprop", "--sizes", "784", "10", "3"], "--sizes"),
    (["--family", "eqprop", "--seed", "-1"], "--seed -1 is invalid"),
])
def test_bad_arguments_are_refused_before_any_work(tmp_path, capsys, args, msg):
    out = tmp_path / "study"
    assert run_suite.main(["tune", *args, "--out", str(out), "--no-progress"]) == 2
    assert msg in capsys.readouterr().err
    assert not out.exists()


def test_cli_runs_a_tiny_search(tmp_path, capsys, no_test_split):
    rc = run_suite.main(["tune", "--family", "ffbp", "--trials", "1", "--n-train", "200", "--n-val", "100",
                         "--epochs", "1", "--sizes", "784", "8", "10", "--out", str(tmp_path), "--no-progress"])
    assert rc == 0
    assert "mnist_784_8_10_ffbp: best trial 0" in capsys.readouterr().out


def test_recipes_of_record_are_the_best_trials_of_the_saved_studies():
    assert {"mnist_784_512_10_eqprop", "mnist_784_512_10_ffbp"} <= set(recipes.RECIPES)
    for name, cfg in recipes.RECIPES.items():
        src = recipes.RECIPE_SOURCES[name]
        study = recipes.load_study(src["study"])
        assert study["format"] == tune_mod.FORMAT
        assert study["inputs"]["n_train"] + study["inputs"]["n_val"] <= 60000
        assert "test split is never read" in study["data"]
        family = name.rsplit("_", 1)[1]
        assert study["inputs"]["family"] == family
        expect = tune_mod.recipe_from_params(family, study["best_trial"]["params"], epochs=cfg.epochs)
        assert cfg == expect, name
        best = max(t["value"] for t in study["trials"] if t["state"] == "COMPLETE")
        assert study["best_trial"]["value"] == best == src["val_acc"]
        assert src["study_file"] in recipes.RECIPE_NOTES[name] and f"trial {src['trial']}" in recipes.RECIPE_NOTES[name]


def test_paired_test_matches_scipy_and_refuses_unpaired():
    from scipy import stats
    a, b = [0.981, 0.979, 0.984, 0.980, 0.983], [0.980, 0.981, 0.982, 0.978, 0.981]
    r = paired_test(a, b)
    ref = stats.ttest_rel(a, b)
    d = torch.tensor(a, dtype=torch.float64) - torch.tensor(b, dtype=torch.float64)
    assert r["t_stat"] == pytest.approx(ref.statistic) and r["p_value"] == pytest.approx(ref.pvalue)
    assert r["cohens_d"] == pytest.approx(float(d.mean() / d.std()))
    assert r["mean_diff"] == pytest.approx(float(d.mean())) and r["n"] == 5
    assert r["mean_diff_ci95"] == pytest.approx(stats.t.ppf(0.975, 4) * float(d.std()) / 5 ** 0.5)
    with pytest.raises(ValueError, match="pair them by seed"):
        paired_test([0.9, 0.8], [0.9])
    one = paired_test([0.9], [0.8])
    assert one["mean_diff"] == pytest.approx(0.1) and one["p_value"] != one["p_value"]  # NaN for one pair

"""Track 36 (energy as an OOD score): the sklearn metrics on constructed cases, the paired bootstrap,
and the track on a tiny model and real data slices: it runs the hardware paths for real and FAILS
when the energy is replaced by noise."""
import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

import tracks
from tracks import t36_ood_energy as t36
from tracks.harness.base import TrackContext, evaluate
from tracks.harness.config import ConfigError
from tracks.shared.ood import auroc, auroc_rows, fpr_at_tpr, noise_images, paired_bootstrap

TINY = {"sizes": (784, 32, 10), "n_train": 1500, "epochs": 1, "n_test": 150, "hw_n_test": 60, "n_boot": 30,
        "n_steps": 60}


def _ctx(tmp_path, **ov):
    return TrackContext(out_dir=tmp_path, quick=True, seeds=(0,), progress=False, overrides={**TINY, **ov})


def _crit(rows, metric):
    return next(r for r in rows if r["metric"] == metric)


def test_auroc_and_fpr_on_constructed_cases():
    assert auroc(np.array([3.0, 4.0]), np.array([1.0, 2.0])) == 1.0
    assert auroc(np.array([1.0, 2.0]), np.array([3.0, 4.0])) == 0.0  # wrong orientation: reported, not flipped
    # pairs (in, out): (1,1) tie 0.5, (1,0) 1, (2,1) 1, (2,0) 1 -> 3.5 / 4
    assert auroc(np.array([1.0, 2.0]), np.array([1.0, 0.0])) == 0.875
    # 95 of 100 ID inputs kept from threshold 5 up; OOD values 5..49 pass it: 45 of 100
    assert fpr_at_tpr(np.arange(100.0), np.arange(100.0) - 50.0) == pytest.approx(0.45)
    rng = np.random.default_rng(0)
    a, b = np.round(rng.normal(1, 1, (3, 40)), 1), np.round(rng.normal(0, 1, (3, 30)), 1)  # with ties
    ref = [roc_auc_score(np.r_[np.ones(40), np.zeros(30)], np.r_[a[k], b[k]]) for k in range(3)]
    np.testing.assert_allclose(auroc_rows(a, b), ref, rtol=0, atol=1e-12)


def test_paired_bootstrap_resamples_both_scores_on_the_same_inputs():
    rng = np.random.default_rng(1)
    good_in, good_out = rng.normal(2, 1, 200), rng.normal(0, 1, 200)
    noise_in, noise_out = rng.normal(0, 1, 200), rng.normal(0, 1, 200)
    r = paired_bootstrap(good_in, good_out, noise_in, noise_out, n_boot=200, seed=0)
    assert r["p_one_sided"] == 1 / 201 and r["diff"] > 0.3 and r["ci_lo"] > 0
    same = paired_bootstrap(good_in, good_out, good_in, good_out, n_boot=50, seed=0)
    assert same["diff"] == 0 and same["p_one_sided"] == 1.0  # identical scores: every resample ties
    with pytest.raises(ValueError, match="same inputs"):
        paired_bootstrap(good_in, good_out, good_in[:10], good_out, n_boot=5, seed=0)


def test_noise_images_in_range_and_reproducible():
    ref = np.random.default_rng(0).uniform(0, 0.5, (20, 784)).astype(np.float32)
    g = noise_images("gaussian", 10, ref, seed=3)
    assert g.shape == (10, 784) and g.min() >= 0 and g.max() <= 1
    np.testing.assert_array_equal(g, noise_images("gaussian", 10, ref, seed=3))
    with pytest.raises(ValueError, match="noise kind"):
        noise_images("salt", 10, ref, seed=0)


def test_t36_measures_and_fails_when_the_energy_is_noise(tmp_path):
    res = t36.run(_ctx(tmp_path))
    _, rows = evaluate(t36.SPEC, res)
    m = res.metrics
    assert _crit(rows, "energy_informative_sets")["passed"], {k: m[f"energy_auroc_{k}"] for k in t36.HEADLINE}
    for path in ("int8", "analog"):
        assert _crit(rows, f"{path}_energy_spearman_min")["passed"], m["hardware"]
        hw = [r for r in m["hardware"] if r["path"] == path]
        # the hardware path relaxes on its own arithmetic: its energies differ from the float ones
        assert all(r["energy_mean_abs_diff"] > 1e-6 for r in hw), hw
        assert all(r["n"] == TINY["hw_n_test"] for r in hw)
    assert 0.0 <= m["energy_auroc_gaussian"] <= 1.0 and m["target_met"] in (0.0, 1.0)
    assert {r["path"] for r in m["auroc_table"]} >= {"float", "int8", "analog"}
    assert all((tmp_path / a).stat().st_size > 1000 for a in res.artifacts)

    broken = t36.run(_ctx(tmp_path, score_noise=True, hardware=False))
    passed, rows_b = evaluate(t36.SPEC, broken)
    assert not passed and not _crit(rows_b, "energy_informative_sets")["passed"]
    assert all(abs(broken.metrics[f"energy_auroc_{k}"] - 0.5) < 0.2 for k in t36.HEADLINE)
    # the other scores are untouched by the override
    assert broken.metrics["margin_auroc_gaussian"] == m["margin_auroc_gaussian"]


def test_t36_config_is_validated(tmp_path):
    with pytest.raises(ConfigError, match="unknown setting"):
        t36.run(_ctx(tmp_path, n_tests=3))
    with pytest.raises(ConfigError, match="sizes"):
        t36.run(_ctx(tmp_path, sizes=(784, 10, 3)))


def test_t36_is_discovered():
    tr = tracks.get_track(36)
    assert not tr.broken and tr.spec.slug == "ood_energy" and tr.config(True) is t36.QUICK


def test_t36_trains_each_seed_once_per_run_through_the_model_cache(tmp_path, monkeypatch):
    import tracks.sweep as sweep
    real, calls = sweep.train_mlp, []

    def counting(*a, **kw):
        calls.append(kw["seed"])
        return real(*a, **kw)
    monkeypatch.setattr(sweep, "train_mlp", counting)
    c = t36.QUICK.__class__(**{**TINY, "n_train": 300})
    ctx = _ctx(tmp_path)
    a = t36._train("mnist", 0, c, ctx)
    b = t36._train("mnist", 0, c, TrackContext(out_dir=tmp_path, quick=True))  # another track, same run folder
    assert calls == [0] and all(np.array_equal(p.detach(), q.detach()) for p, q in zip(a.parameters(), b.parameters()))
    t36._train("mnist", 1, c, ctx)
    t36._train("mnist", 0, t36.QUICK.__class__(**{**TINY, "n_train": 301}), ctx)  # another training slice
    assert calls == [0, 1, 0]
    assert sorted(p.name.split("_")[0] + "_" + p.name.split("_")[1] for p in (tmp_path / "model_cache").glob("*.pt")) \
        == ["mlp_mnist"] * 3

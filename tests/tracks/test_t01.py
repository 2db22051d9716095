"""Track 1 passes with spectral normalisation and fails when SN does not bound the norm below 1;
its conv section fails when the conv projection is disabled."""

from models.conv import ConvEqProp
from tracks import get_track
from tracks.harness.base import TrackContext, evaluate

CONV_SMALL = {"conv_n_train": 400, "conv_n_test": 200, "conv_channels": (4, 8), "conv_log_every": 4}


def _run(tmp_path, **overrides):
    t = get_track(1)
    ctx = TrackContext(out_dir=tmp_path, quick=True, seeds=(0,), progress=False,
                       overrides={"n_train": 1000, **overrides})
    res = t.run(ctx)
    return evaluate(t.spec, res), res


def _row(rows, metric):
    return next(r for r in rows if r["metric"] == metric)


def test_track1_quick_passes_and_no_sn_is_not_a_contraction(tmp_path):
    (passed, rows), res = _run(tmp_path, conv=False)
    assert all(r["passed"] for r in rows if not r["metric"].startswith("conv_")), rows
    assert not passed  # the conv criteria have no metrics without the conv section
    assert res.metrics["lipschitz_max_no_sn"] > 1.0  # random init without SN: sigma(W) ~ 2
    assert (tmp_path / res.artifacts[0]).is_file()


def test_track1_fails_when_sn_target_is_not_contracting(tmp_path):
    (passed, rows), res = _run(tmp_path, sn_gamma=2.5, conv=False)
    assert not passed
    assert not _row(rows, "lipschitz_max_sn")["passed"]


def test_track1_conv_section_bounds_the_couplings(tmp_path):
    (passed, rows), res = _run(tmp_path, epochs=1, n_train=200, **CONV_SMALL)
    m = res.metrics
    for metric in ("conv_sigma_ratio_max_sn", "conv_est_rel_err_max"):
        assert _row(rows, metric)["passed"], m[metric]
    assert m["conv_sigma_ratio_max_no_sn"] > 1.0  # the same init without SN leaves the bound
    assert all(f >= s for f, s in zip(m["conv_fft_bound_final_sn"], m["conv_sigma_final_sn"]))
    assert m["conv_lipschitz_ff_sn"] <= m["conv_sn_bound"] ** 3 * (1 + 1e-6)  # product of three couplings
    assert (tmp_path / res.artifacts[1]).is_file()


def test_track1_conv_criterion_fails_without_the_projection(tmp_path, monkeypatch):
    monkeypatch.setattr(ConvEqProp, "constrain_", lambda self, n_iter=None: {})
    (passed, rows), res = _run(tmp_path, epochs=1, n_train=200, **CONV_SMALL)
    assert not passed
    assert not _row(rows, "conv_sigma_ratio_max_sn")["passed"], res.metrics["conv_sigma_ratio_max_sn"]

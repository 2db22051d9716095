"""Track 1 passes with spectral normalisation and fails when SN does not bound the norm below 1."""
from tracks import get_track
from tracks.harness.base import TrackContext, evaluate


def _run(tmp_path, **overrides):
    t = get_track(1)
    ctx = TrackContext(out_dir=tmp_path, quick=True, seeds=(0,), progress=False,
                       overrides={"n_train": 1000, **overrides})
    res = t.run(ctx)
    return evaluate(t.spec, res), res


def test_track1_quick_passes_and_no_sn_is_not_a_contraction(tmp_path):
    (passed, rows), res = _run(tmp_path)
    assert passed, rows
    assert res.metrics["lipschitz_max_no_sn"] > 1.0  # random init without SN: sigma(W) ~ 2
    assert (tmp_path / res.artifacts[0]).is_file()


def test_track1_fails_when_sn_target_is_not_contracting(tmp_path):
    (passed, rows), res = _run(tmp_path, sn_gamma=2.5)
    assert not passed
    assert not next(r for r in rows if r["metric"] == "lipschitz_max_sn")["passed"]

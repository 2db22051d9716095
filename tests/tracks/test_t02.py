"""Track 2 passes on the real path and fails when the nudged phase is skipped."""
from tracks import get_track
from tracks.harness.base import TrackContext, evaluate


def _run(tmp_path, **overrides):
    t = get_track(2)
    ctx = TrackContext(out_dir=tmp_path, quick=True, seeds=(0,), progress=False, overrides=overrides)
    res = t.run(ctx)
    return evaluate(t.spec, res), res


def test_track2_quick_one_hidden_layer_passes(tmp_path):
    (passed, rows), res = _run(tmp_path, nets=["1h"])
    assert all(r["passed"] for r in rows if not r["metric"].endswith("_2h")), rows
    assert res.metrics["min_layer_cosine"] >= 0.999
    assert (tmp_path / res.artifacts[0]).is_file()


def test_track2_fails_without_nudged_phase(tmp_path):
    (passed, rows), res = _run(tmp_path, nets=["1h"], skip_nudge=True)
    assert not passed
    assert not any(r["passed"] for r in rows if r["metric"].startswith("min_layer_cosine"))

"""Track 35 (memory scaling): real path passes, broken path fails (Track 25's tests are in test_t25.py)."""
import math
import pytest

import tracks
import tracks.t35_memory_scaling as t35
from tracks.harness.base import TrackContext, evaluate

T35_SMALL = {"t_values": (10, 30), "batch_size": 100, "repeats": 1}


def _ctx(tmp_path, **overrides):
    return TrackContext(out_dir=tmp_path, quick=True, progress=False, overrides=overrides)


# ------------------------------------------------------------------------------------------ track 35
def test_t35_eqprop_memory_flat_bptt_linear(tmp_path):
    res = t35.run(_ctx(tmp_path, **T35_SMALL))
    passed, crit = evaluate(t35.SPEC, res)
    assert passed, crit
    m = res.metrics
    # BPTT stores every sweep: at batch 100 at least the 100x512 float32 state per sweep (204.8 kB)
    assert m["bptt_bytes_per_sweep"] > 100 * 512 * 4
    assert m["bptt_step_bytes_t30"] > 1.8 * next(r["step_bytes"] for r in m["rows"]
                                                  if r["method"] == "bptt" and r["T"] == 10)
    # EqProp's step holds at least the 512x784 float32 weight gradient, and not much more
    assert 512 * 784 * 4 < m["eqprop_step_bytes_t30"] < 0.5 * m["bptt_step_bytes_t30"]
    assert res.artifacts == ["plots/t35_memory_vs_T.png"]
    assert (tmp_path / res.artifacts[0]).stat().st_size > 0


def test_t35_fails_when_eqprop_keeps_its_trajectory(tmp_path):
    # T up to 100: a kept trajectory (100 x 100 x 522 float32 = 21 MB) dwarfs RSS noise
    # the transformer part is not under test here (tests/tracks/test_t35_transformer.py): smallest sizes
    res = t35.run(_ctx(tmp_path, **{**T35_SMALL, "t_values": (10, 30, 100)}, eqprop_variant="keep_trajectory",
                       tf_t_values=(10, 30), tf_batch_size=2, tf_d_model=8))
    passed, crit = evaluate(t35.SPEC, res)
    assert not passed
    assert res.metrics["eqprop_mem_growth"] > 1.2


def test_t35_rejects_bad_overrides(tmp_path):
    with pytest.raises(ValueError, match="unknown setting"):
        t35.run(_ctx(tmp_path, n_steps=3))
    with pytest.raises(ValueError, match="including 30"):
        t35.run(_ctx(tmp_path, t_values=(10, 100)))
    with pytest.raises(ValueError, match="eqprop_variant"):
        t35.run_probe([("eqprop", 10)], None, None, variant="nope")


def test_t35_is_discovered():
    tr = tracks.get_track(35)
    assert not tr.broken and tr.spec.slug == "memory_scaling"

"""Track 35, energy-transformer part: EqProp's and the implicit gradient's training-step memory is flat in T
(measured peak RSS), and the flatness criterion fails for an EqProp step that keeps its trajectory."""
import pytest

import tracks.t35_memory_scaling as t35
from tracks.data import load_dataset

T_VALUES = (10, 30, 60)
CRIT = {c.metric: c for c in t35.SPEC.criteria}


@pytest.fixture(scope="module")
def batch():
    x, y = load_dataset("mnist", "train")
    return x[:t35.TF_BATCH], y[:t35.TF_BATCH]


@pytest.fixture(scope="module")
def bptt_rows(batch):
    return t35.measure(T_VALUES, *batch, repeats=1, model="transformer", methods=("bptt",))


def test_transformer_eqprop_and_implicit_memory_flat_bptt_linear(batch, bptt_rows):
    rows = bptt_rows + t35.measure(T_VALUES, *batch, repeats=1, model="transformer", methods=("eqprop", "implicit"))
    m = t35.transformer_metrics(rows)
    for name in ("tf_mem_ratio_t30", "tf_eqprop_slope_ratio", "tf_implicit_slope_ratio"):
        assert CRIT[name].check(m), (name, m)
    # BPTT stores at least the 32 x 16 x 64 float32 token state of every sweep
    assert m["tf_bptt_bytes_per_sweep"] > 32 * 16 * 64 * 4, m
    # EqProp's step holds at least its 64x64 W_Q gradient
    assert m["tf_eqprop_step_bytes_t30"] > 64 * 64 * 4, m


def test_transformer_flatness_fails_when_eqprop_keeps_its_trajectory(batch, bptt_rows):
    rows = bptt_rows + t35.measure(T_VALUES, *batch, repeats=1, model="transformer", methods=("eqprop",),
                                   variant="keep_trajectory")
    rows += [{**r, "method": "implicit"} for r in rows if r["method"] == "eqprop"]  # only eqprop is judged here
    m = t35.transformer_metrics(rows)
    assert not CRIT["tf_eqprop_slope_ratio"].check(m), m
    # the kept states alone: 32 x (16 x 64 + 10) float32 per sweep
    assert m["tf_eqprop_bytes_per_sweep"] > 0.8 * 32 * (16 * 64 + 10) * 4, m


def test_t35_transformer_bad_settings(tmp_path):
    from tracks.harness.base import TrackContext
    with pytest.raises(ValueError, match="tf_t_values"):
        t35.run(TrackContext(out_dir=tmp_path, quick=True, progress=False, overrides={"tf_t_values": (10, 100)}))
    with pytest.raises(ValueError, match="methods"):
        t35.measure((10, 30), None, None, repeats=1, model="transformer", methods=("nope",))
    with pytest.raises(ValueError, match="model"):
        t35.run_probe([("eqprop", 10)], None, None, model="cnn")

"""Track 14 (energy transformer): passes on the real path; fails when the nudged phase is skipped or
attention is not the gradient of an energy."""
import tracks.t14_transformer_eqprop as t14
from tracks.harness.base import TrackContext, evaluate

TINY = {"n_batches": 1, "batch_size": 4, "d_model": 16, "acc_d_model": 16, "n_train": 256, "n_test": 200,
        "batch_train": 32, "epochs": 1, "required_acc": 0.2, "required_gap": 0.3}


def _run(tmp_path, **over):
    res = t14.run(TrackContext(out_dir=tmp_path, quick=True, progress=False, overrides={**TINY, **over}))
    return res, dict((r["metric"], r) for r in evaluate(t14.SPEC, res)[1])


def test_t14_passes_on_the_energy_path(tmp_path):
    res, crit = _run(tmp_path)
    assert evaluate(t14.SPEC, res)[0], crit
    assert res.metrics["cos_bptt_worst"] > 0.999 and len(res.metrics["curves"]) == 2
    assert (tmp_path / res.artifacts[0]).stat().st_size > 0


def test_t14_accuracy_part_alone_reports(tmp_path):
    res, crit = _run(tmp_path, parts=["accuracy"])
    assert crit["eqprop_acc_margin"]["value"] is not None and not crit["cos_bptt_worst_margin"]["passed"]
    assert (tmp_path / res.artifacts[0]).stat().st_size > 0


def test_t14_fails_without_nudged_phase(tmp_path):
    _, crit = _run(tmp_path, skip_nudge=True, parts=["gradients"])
    assert not crit["cos_bptt_worst_margin"]["passed"] and not crit["cos_implicit_worst_margin"]["passed"]


def test_t14_fails_with_non_energy_attention(tmp_path):
    _, crit = _run(tmp_path, key_side=False, parts=["gradients"])
    assert not crit["cos_bptt_worst_margin"]["passed"], crit["cos_bptt_worst_margin"]

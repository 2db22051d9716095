"""Track 14 (energy transformer): passes on the real path; fails when the nudged phase is skipped or
attention is not the gradient of an energy; the DEQ (implicit-gradient) baseline is trained beside EqProp and BP."""
import models.transformer as mt
import tracks.t14_transformer_eqprop as t14
from tracks.harness.base import TrackContext, evaluate

TINY = {"n_batches": 1, "batch_size": 4, "d_model": 16, "acc_d_model": 16, "n_train": 256, "n_test": 200,
        "batch_train": 32, "epochs": 1, "required_acc": 0.2, "required_gap": 0.3}


def _run(tmp_path, **over):
    res = t14.run(TrackContext(out_dir=tmp_path, quick=True, progress=False, overrides={**TINY, **over}))
    return res, dict((r["metric"], r) for r in evaluate(t14.SPEC, res)[1])


def test_t14_passes_on_the_energy_path(tmp_path):
    res, crit = _run(tmp_path)
    m = res.metrics
    assert evaluate(t14.SPEC, res)[0], crit
    assert m["cos_bptt_worst"] > 0.999 and len(m["curves"]) == 3
    assert {r["method"] for r in m["curves"]} == {"eqprop", "bptt", "implicit"}
    assert m["nudged_residual_max"] <= TINY.get("tol", t14.QUICK.tol) * 10
    # one row per (mode, beta, reference); the one-sided and random-sign estimates are reported, not judged
    table = m["gradient_table"]
    assert {(r["mode"], r["beta"], r["ref"]) for r in table} == {
        (mo, b, ref) for mo in t14.MODES for b in t14.QUICK.betas for ref in ("bptt", "implicit")}
    assert m["cos_bptt_worst_one_sided"] > 0.99 and m["cos_bptt_worst_random_sign"] > 0.99
    assert (tmp_path / res.artifacts[0]).stat().st_size > 0


def test_t14_accuracy_part_alone_reports(tmp_path):
    res, crit = _run(tmp_path, parts=["accuracy"], acc_methods=["eqprop", "implicit"])
    assert crit["eqprop_acc_margin"]["value"] is not None and not crit["cos_bptt_worst_margin"]["passed"]
    assert crit["deq_gap_margin"]["value"] is not None and not crit["bp_gap_margin"]["passed"]  # bptt not run
    assert (tmp_path / res.artifacts[0]).stat().st_size > 0


def test_t14_fails_when_eqprop_training_gets_no_gradient(tmp_path, monkeypatch):
    """EqProp training without its nudged phase (zero contrast): the DEQ baseline trains, EqProp does not."""
    real = mt.grads_of

    def broken(net, x, y, ts):
        g, s = real(net, x, y, ts)
        if ts.grad == "eqprop":
            g = net.contrast(x, s, s, -ts.beta, ts.beta)
        return g, s

    monkeypatch.setattr(mt, "grads_of", broken)
    res, crit = _run(tmp_path, parts=["accuracy"], acc_methods=["eqprop", "implicit"], n_train=1500,
                     required_gap=0.05)
    assert not crit["deq_gap_margin"]["passed"], crit["deq_gap_margin"]
    assert not crit["eqprop_acc_margin"]["passed"] or res.metrics["eqprop_acc_mean"] < 0.25


def test_t14_fails_without_nudged_phase(tmp_path):
    res, crit = _run(tmp_path, skip_nudge=True, parts=["gradients"])
    assert not crit["cos_bptt_worst_margin"]["passed"] and not crit["cos_implicit_worst_margin"]["passed"]
    assert not res.metrics["cos_bptt_worst_one_sided"] > 0.5


def test_t14_fails_with_non_energy_attention(tmp_path):
    _, crit = _run(tmp_path, key_side=False, parts=["gradients"])
    assert not crit["cos_bptt_worst_margin"]["passed"], crit["cos_bptt_worst_margin"]

"""Track 37 (char-level LM): the real path is causal, its EqProp estimate is the gradient it claims,
and it learns more than a model trained on shuffled targets; each criterion fails on its broken path
(leaky attention, dynamics that are not the gradient of the energy, shuffled targets, mis-signed estimates)."""
import numpy as np
import torch

import tracks.t37_char_lm as t37
from models.causal_transformer import CausalEnergyTransformer
from tracks.data.text import char_split, load_tiny_shakespeare
from tracks.harness.base import TrackContext, TrackResult, evaluate

TINY = {"d_model": 16, "ctx": 16, "steps": 50, "batch": 16, "n_val": 32, "n_settle": 4, "n_sample": 16,
        "grad_steps": 60, "grad_len": 8, "n_grad": 2, "max_settle": 40, "n_seeds": 1}


def _run(tmp_path, **over):
    res = t37.run(TrackContext(out_dir=tmp_path, quick=True, progress=False, overrides={**TINY, **over}))
    return res, {r["metric"]: r for r in evaluate(t37.SPEC, res)[1]}


def _crit(metrics, name):
    return {r["metric"]: r for r in evaluate(t37.SPEC, TrackResult(metrics=metrics))[1]}[name]["passed"]


def test_t37_real_path_is_causal_estimates_its_gradient_and_beats_shuffled_targets(tmp_path):
    res, crit = _run(tmp_path / "real")
    m = res.metrics
    assert crit["causal_max_logit_diff"]["passed"] and m["causal_max_logit_diff"] == 0.0
    assert crit["grad_cos_truncated"]["passed"] and crit["grad_cos_full"]["passed"], m
    assert m["baseline_n_params"] > 0 and abs(m["baseline_n_params"] / m["eqprop_n_params"] - 1) < 0.15
    assert m["ppl_ratio_eqprop_over_baseline"] > 0 and m["target_ppl_30_met"] in (0.0, 1.0)
    assert len(m["samples"]["eqprop"]) == TINY["n_sample"] and "settle_spearman_r" in m
    assert (tmp_path / "real" / res.artifacts[0]).stat().st_size > 0
    res_s, crit_s = _run(tmp_path / "shuffled", shuffle_targets=True, baseline=False)
    assert not crit_s["eqprop_bpc_below_unigram"]["passed"]
    assert m["eqprop_bpc_below_unigram"] > res_s.metrics["eqprop_bpc_below_unigram"] + 0.05, (m, res_s.metrics)


def _tiny_net(attention):
    text = load_tiny_shakespeare()
    _, val_ids, vocab = char_split(text)
    c = t37.Config(**{**TINY, "attention": attention})
    x_val, _ = t37.val_windows(val_ids, c, 8)
    return t37.make_model(c, vocab.size, 0), x_val, val_ids, c


def test_t37_leaky_attention_fails_the_causality_criterion():
    net, x_val, _, c = _tiny_net("causal")
    assert _crit({"causal_max_logit_diff": t37.causality_check(net, x_val, c)}, "causal_max_logit_diff")
    net, x_val, _, c = _tiny_net("leaky")  # causal mask, joint energy: later queries pull earlier keys
    d = t37.causality_check(net, x_val, c)
    assert d > 1e-4 and not _crit({"causal_max_logit_diff": d}, "causal_max_logit_diff")


def test_t37_dynamics_that_are_not_the_energy_gradient_fail_the_gradient_criterion(monkeypatch):
    net, _, val_ids, c = _tiny_net("causal")
    ok = t37.gradient_check(net, val_ids, c)
    assert _crit(ok, "grad_cos_truncated") and _crit(ok, "grad_cos_full")
    real = CausalEnergyTransformer.grad_phi

    def no_hopfield(self, s, drive, past=None):  # dynamics drop the Hopfield force; the energy keeps it
        h = torch.relu(s @ self.xi.t() + self.xi_bias)
        return real(self, s, drive, past) - h @ self.xi

    monkeypatch.setattr(CausalEnergyTransformer, "grad_phi", no_hopfield)
    bad = t37.gradient_check(net, val_ids, c)
    assert not _crit(bad, "grad_cos_truncated"), bad
    assert np.isfinite(bad["grad_cos_full"])


def test_tiny_shakespeare_split_by_position_and_missing_file_error(tmp_path, monkeypatch):
    import pytest

    from tracks.data import DataError
    from tracks.data.text import CharVocab, unigram_bits

    text = load_tiny_shakespeare()
    tr, va, vocab = char_split(text)
    assert vocab.size == 65 and len(tr) + len(va) == len(text) and abs(len(va) / len(text) - 0.1) < 1e-5
    assert vocab.decode(tr[:14]) == "First Citizen:" and vocab.decode(va) == text[len(tr):][:len(va)]
    assert 4.0 < unigram_bits(tr, vocab.size) < 5.0
    monkeypatch.delenv("EQPROP_DATA", raising=False)
    with pytest.raises(DataError, match="EQPROP_DATA"):
        load_tiny_shakespeare(tmp_path)
    (tmp_path / "tinyshakespeare").mkdir()
    (tmp_path / "tinyshakespeare" / "input.txt").write_text("not shakespeare")
    with pytest.raises(DataError, match="md5"):
        load_tiny_shakespeare(tmp_path)
    with pytest.raises(ValueError, match="not in the vocabulary"):
        CharVocab.from_text("ab").encode("abc")


def test_t37_an_estimate_with_wrong_signs_fails_the_full_gradient_criterion(monkeypatch):
    # the skipped/mis-signed half of a learning rule: every other parameter tensor's estimate negated
    net, _, val_ids, c = _tiny_net("causal")
    real = t37.eqprop_grads

    def half_flipped(*a, **k):
        return {n: (-v if i % 2 else v) for i, (n, v) in enumerate(real(*a, **k).items())}

    monkeypatch.setattr(t37, "eqprop_grads", half_flipped)
    bad = t37.gradient_check(net, val_ids, c)
    assert not _crit(bad, "grad_cos_full"), bad
    assert not _crit(bad, "grad_cos_truncated"), bad

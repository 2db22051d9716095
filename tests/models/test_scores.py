"""models.scores: the free-phase confidence scores, their a-priori orientation, the output distribution."""
import numpy as np
import pytest
import torch

from models.eqprop_mlp import EqPropConfig, EqPropMLP
from models.scores import HIGHER_IS_IN, SCORES, confidence, free_phase_scores, output_probs, steps_to_settle


def _net(cost="mse"):
    return EqPropMLP(EqPropConfig(sizes=(12, 8, 4), cost=cost), seed=0).double()


def test_every_score_has_a_fixed_orientation():
    assert set(HIGHER_IS_IN) == set(SCORES)
    # physics: low energy / high Phi / fast settling mean in-distribution
    assert HIGHER_IS_IN == {"energy": False, "phi": True, "settling_steps": False, "max_softmax": True, "margin": True}
    raw = {k: np.array([1.0, -2.0]) for k in SCORES}
    conf = confidence(raw)
    for k in SCORES:
        np.testing.assert_array_equal(conf[k], raw[k] if HIGHER_IS_IN[k] else -raw[k])
    with pytest.raises(ValueError, match="no orientation"):
        confidence({"entropy": np.zeros(2)})


def test_scores_are_those_of_the_free_fixed_point():
    net = _net()
    x = torch.rand(16, 12, dtype=torch.float64)
    raw = free_phase_scores(net, x, n_steps=200, tol=1e-10, batch_size=5)
    s, info = net.free_phase(x, n_steps=200, tol=1e-10)
    assert bool(info.converged.all())
    e = net.energy(x, s).detach().numpy()
    np.testing.assert_allclose(raw["energy"], e, rtol=0, atol=1e-12)
    np.testing.assert_allclose(raw["energy"], 0.5 * sum((t ** 2).sum(1) for t in s).numpy() - raw["phi"], atol=1e-12)
    np.testing.assert_array_equal(raw["settling_steps"], info.steps.numpy().astype(float))
    top = s[-1].sort(dim=1, descending=True).values
    np.testing.assert_allclose(raw["margin"], (top[:, 0] - top[:, 1]).numpy(), atol=1e-15)
    assert np.all((raw["max_softmax"] >= 0.25 - 1e-12) & (raw["max_softmax"] <= 1.0))


def test_settling_steps_censored_when_not_settled():
    net = _net()
    raw = free_phase_scores(net, torch.rand(4, 12, dtype=torch.float64), n_steps=1, tol=1e-12)
    assert np.all(raw["settling_steps"] == 2.0)  # one sweep from zeros never settles: n_steps + 1
    assert steps_to_settle(torch.tensor([5, -1]), 30).tolist() == [5.0, 31.0]


def test_output_probs_ce_is_the_trained_softmax_and_mse_the_normalised_states():
    s = torch.tensor([[0.2, 0.6, 0.2, 0.0], [0.0, 0.0, 0.0, 0.0]], dtype=torch.float64)
    p = output_probs(s, cost="ce", ce_scale=4.0)
    torch.testing.assert_close(p, torch.softmax(4.0 * s, dim=1))
    q = output_probs(s, cost="mse", ce_scale=4.0)
    torch.testing.assert_close(q[0], s[0] / s[0].sum())
    torch.testing.assert_close(q[1], torch.full((4,), 0.25, dtype=torch.float64))
    with pytest.raises(ValueError, match="cost"):
        output_probs(s, cost="hinge", ce_scale=1.0)
    raw = free_phase_scores(_net("ce"), torch.rand(3, 12, dtype=torch.float64), n_steps=50)
    assert np.all(raw["max_softmax"] > 0.25)


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="tol"):
        free_phase_scores(_net(), torch.rand(2, 12, dtype=torch.float64), tol=0.0)


def test_scores_work_for_any_energy_model_conv():
    from models.conv import ConvConfig, ConvEqProp

    net = ConvEqProp(ConvConfig(in_shape=(1, 12, 12), channels=(4, 6), kernel=3, n_out=3), seed=0).double()
    x = torch.rand(5, 144, dtype=torch.float64)
    raw = free_phase_scores(net, x, n_steps=80, tol=1e-9)
    s, _ = net.free_phase(x, n_steps=80, tol=1e-9)
    np.testing.assert_allclose(raw["energy"], net.energy(x, s).detach().numpy(), atol=1e-12)
    assert np.all(raw["settling_steps"] <= 80)

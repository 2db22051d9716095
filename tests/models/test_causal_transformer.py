"""The causal energy transformer: closed-form dynamics = gradient of the energy, causality in the
dynamics (and its absence in the leaky variant), EqProp = the truncated gradient, bad inputs."""
import pytest
import torch

from models.causal_transformer import (ATTENTIONS, CausalConfig, CausalEnergyTransformer, CausalTransformerLM,
                                       bptt_grads, eqprop_grads, grad_cosine, match_baseline_width,
                                       truncated_bptt_grads)


def _net(attention="causal", **kw):
    return CausalEnergyTransformer(CausalConfig(vocab=7, n_ctx=10, d_model=8, n_heads=2, attention=attention, **kw),
                                   seed=0).double()


def _xy(b=3, n=10, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 7, (b, n), generator=g), torch.randint(0, 7, (b, n), generator=g)


@pytest.mark.parametrize("attention", ATTENTIONS)
def test_closed_form_dynamics_is_the_gradient_of_phi(attention):
    net = _net(attention)
    x, _ = _xy()
    s = (torch.rand(3, 10, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(1)) * 2 - 1).requires_grad_()
    past = s.detach() if attention == "causal" else None  # causal: each E_c with the past held
    g_auto = torch.autograd.grad(net.phi(s, x, past).sum(), s)[0]
    assert torch.allclose(net.grad_phi(s.detach(), net.drive(x)), g_auto, atol=1e-12)


def test_changing_future_tokens_leaves_earlier_logits_identical_only_when_causal():
    x, _ = _xy()
    x2 = x.clone()
    x2[:, 6:] = (x2[:, 6:] + 3) % 7
    for att, leaks in (("causal", False), ("leaky", True), ("full", True)):
        net = _net(att)
        z1 = net.logits(net.free_phase(x, 60)[0])[:, :6]
        z2 = net.logits(net.free_phase(x2, 60)[0])[:, :6]
        diff = float((z1 - z2).detach().abs().max())
        assert (diff > 1e-4) if leaks else (diff == 0.0), (att, diff)


def test_eqprop_estimates_the_truncated_gradient_and_per_position_energy_descends():
    net = _net("causal")
    x, y = _xy()
    ge = eqprop_grads(net, x, y, beta=1e-3, n_free_steps=200, n_nudge_steps=200)
    gt = truncated_bptt_grads(net, x, y, n_steps=200)
    gf = bptt_grads(net, x, y, n_steps=200)
    assert grad_cosine(ge, gt) > 0.9999
    assert 0.9 < grad_cosine(ge, gf) < 1.0  # past states move with theta: not exactly the full gradient
    # with the past held at the free equilibrium, every nudge-free sweep lowers sum_c E_c
    s_free, res = net.free_phase(x, 200)
    assert res < 1e-10
    s, d = torch.zeros_like(s_free), net.drive(x)
    e = [float(net.energy(s, x, s_free).detach().sum())]
    for _ in range(15):
        s = net.sweep(s, d, past=s_free)
        e.append(float(net.energy(s, x, s_free).detach().sum()))
    assert all(b <= a + 1e-12 for a, b in zip(e, e[1:])), e


def test_mean_readout_and_sinusoidal_positions_run_on_longer_sequences():
    net = _net("full", readout="mean", n_out=2, pos="sinusoidal")
    x = torch.randint(0, 7, (2, 25))
    s, _ = net.free_phase(x, 30)
    assert net.logits(s).shape == (2, 2)
    g = eqprop_grads(net, x, torch.tensor([0, 1]), beta=0.05, n_free_steps=30, n_nudge_steps=10)
    assert "pos" not in g and g["wq"].shape == (8, 8)


def test_baseline_width_matches_the_parameter_count():
    net = CausalEnergyTransformer(CausalConfig(vocab=65, n_ctx=32, d_model=32, n_heads=4), seed=0)
    d = match_baseline_width(net.n_params(), 4, lambda d: CausalTransformerLM(65, 32, d, 4))
    base = CausalTransformerLM(65, 32, d, 4, seed=0)
    assert abs(base.n_params() / net.n_params() - 1) < 0.1
    x = torch.randint(0, 65, (2, 12))
    x2 = x.clone()
    x2[:, 8:] = 0
    assert torch.allclose(base(x)[:, :8], base(x2)[:, :8], atol=1e-5)  # the baseline is causal too


def test_bad_inputs_are_refused_with_the_fix():
    with pytest.raises(ValueError, match="attention"):
        CausalConfig(vocab=5, n_ctx=4, attention="bidirectional")
    with pytest.raises(ValueError, match="multiple of n_heads"):
        CausalConfig(vocab=5, n_ctx=4, d_model=10, n_heads=4)
    net = _net()
    with pytest.raises(ValueError, match="token ids must be in"):
        net.free_phase(torch.full((1, 4), 9))
    with pytest.raises(ValueError, match="n_ctx"):
        net.free_phase(torch.zeros(1, 11, dtype=torch.long))
    with pytest.raises(ValueError, match="integer tensor"):
        net.free_phase(torch.zeros(1, 4))
    with pytest.raises(ValueError, match="needs the targets"):
        net.relax(torch.zeros(1, 4, dtype=torch.long), n_steps=2, beta=0.1)

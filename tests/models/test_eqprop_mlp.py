"""EqPropMLP: dynamics, energy, EqProp estimate vs exact gradients (float64 reference)."""
import pytest
import torch

from models.eqprop_mlp import EqPropConfig, EqPropMLP
from models.gradients import bptt_grads, compare_grads, implicit_grads
from quant.tolerances import COSINE_GRAD_MIN


def _net(sizes, seed=0, **kw):
    return EqPropMLP(EqPropConfig(sizes=sizes, **kw), seed=seed).double()


def _batch(n_in, n_out, b=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, n_in, generator=g, dtype=torch.float64), torch.randint(0, n_out, (b,), generator=g)


@pytest.mark.parametrize("sizes", [(20, 15, 5), (20, 12, 10, 5), (20, 8, 8, 8, 5)])
def test_async_sweeps_descend_energy(sizes):
    net = _net(sizes)
    x, y = _batch(sizes[0], sizes[-1])
    drive = net.drive(x)
    s = net.zero_state(x.shape[0], x)
    e_prev = net.energy(x, s)
    with torch.no_grad():
        for _ in range(30):
            s = net.step(s, drive)
            e = net.energy(x, s)
            assert bool((e <= e_prev + 1e-12).all())
            e_prev = e


def test_fixed_point_is_consistent_with_dynamics():
    net = _net((20, 15, 5))
    x, _ = _batch(20, 5)
    s, info = net.free_phase(x, n_steps=500, tol=1e-13)
    assert bool(info.converged.all())
    d = net.drive(x)
    for i in range(net.n_layers):
        torch.testing.assert_close(s[i], net.preact(i, s, d).clamp(0, 1), rtol=0, atol=1e-12)


def test_contrast_matches_autograd_of_phi():
    """The closed-form dPhi/dtheta equals autograd of Phi at a fixed state (no dynamics involved)."""
    net = _net((20, 12, 10, 5))
    x, y = _batch(20, 5)
    s1 = [torch.rand(16, n, dtype=torch.float64) for n in (12, 10, 5)]
    s2 = [torch.rand(16, n, dtype=torch.float64) for n in (12, 10, 5)]
    got = net.contrast(x, s1, s2, -0.1, 0.1)
    params = dict(net.named_parameters())
    diff = -(net.phi(x, s2).mean() - net.phi(x, s1).mean()) / 0.2
    ref = torch.autograd.grad(diff, list(params.values()))
    for (k, _), r in zip(params.items(), ref):
        torch.testing.assert_close(got[k], r, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("sizes", [(30, 20, 5), (30, 16, 12, 5)])
@pytest.mark.parametrize("cost", ["mse", "ce"])
def test_eqprop_matches_bptt_and_implicit(sizes, cost):
    net = _net(sizes, seed=3, cost=cost)
    x, y = _batch(sizes[0], sizes[-1], b=32, seed=1)
    gb = bptt_grads(net, x, y, n_steps=300)
    gi = implicit_grads(net, x, y, n_steps=2000)
    for r in compare_grads(gi, gb):
        assert r["cosine"] > 1 - 1e-9, r
    ge = net.eqprop_grads(x, y, beta=1e-4, mode="symmetric", n_free_steps=2000, n_nudge_steps=2000, tol=1e-14)
    for r in compare_grads(ge, gb):
        assert r["cosine"] >= COSINE_GRAD_MIN, r
        assert r["sign_agreement"] > 0.95, r


@pytest.mark.parametrize("mode", ["one_sided", "symmetric"])
def test_estimate_error_shrinks_with_beta(mode):
    """Finite beta biases the estimate; the bias vanishes as beta -> 0. (With the hard sigmoid's kinks,
    symmetric nudging is not always better than one-sided at finite beta: units cross 0 or 1.)"""
    net = _net((30, 20, 5), seed=2)
    x, y = _batch(30, 5, b=64)
    gb = bptt_grads(net, x, y, n_steps=300)
    err = []
    for beta in (0.2, 0.01, 1e-4):
        ge = net.eqprop_grads(x, y, beta=beta, mode=mode, n_free_steps=500, n_nudge_steps=500, tol=1e-14)
        err.append(max(r["rel_error"] for r in compare_grads(ge, gb)))
    assert err[0] > err[1] > err[2] and err[2] < 1e-3, err


def test_without_nudged_phase_the_estimate_is_useless():
    """Contrasting the free state with itself gives zero, which a cosine check rejects."""
    net = _net((30, 20, 5))
    x, y = _batch(30, 5)
    s, _ = net.free_phase(x, n_steps=200, tol=1e-13)
    g = net.contrast(x, s, s, 0.0, 0.1)
    gb = bptt_grads(net, x, y, n_steps=200)
    assert all(not (r["cosine"] >= COSINE_GRAD_MIN) for r in compare_grads(g, gb))


def test_float32_close_to_float64():
    net64 = _net((30, 20, 5))
    net32 = EqPropMLP(EqPropConfig(sizes=(30, 20, 5)))
    net32.load_state_dict({k: v.float() for k, v in net64.state_dict().items()})
    x, y = _batch(30, 5)
    g64 = net64.eqprop_grads(x, y, beta=0.05, n_free_steps=100, n_nudge_steps=100)
    g32 = net32.eqprop_grads(x.float(), y, beta=0.05, n_free_steps=100, n_nudge_steps=100)
    for r in compare_grads(g32, g64):
        assert r["cosine"] > 0.9999, r


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="sizes"):
        EqPropConfig(sizes=(784,))
    with pytest.raises(ValueError, match="cost"):
        EqPropConfig(cost="hinge")
    with pytest.raises(ValueError, match="unknown keys"):
        EqPropConfig.from_dict({"sizes": [4, 2], "colour": 1})
    net = EqPropMLP(EqPropConfig(sizes=(4, 3, 2)))
    with pytest.raises(ValueError, match="expected"):
        net.free_phase(torch.zeros(2, 5))
    with pytest.raises(ValueError, match="dtype"):
        net.free_phase(torch.zeros(2, 4, dtype=torch.float64))
    with pytest.raises(ValueError, match="mode"):
        net.eqprop_grads(torch.zeros(2, 4), torch.zeros(2), beta=0.1, mode="both")

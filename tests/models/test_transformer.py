"""The energy transformer (models/transformer.py): kernels == autograd of Phi, energy descent,
EqProp == BPTT == implicit == finite differences, and the broken paths that must fail."""
import pytest
import torch

from models.energy import is_static
from models.gradients import bptt_grads, compare_grads, implicit_grads
from models.transformer import (EnergyTransformer, LSEAttention, TokenEmbed, TokenHopfield, TransformerConfig,
                                bptt_grads_damped, tokenize)
from quant.tolerances import COSINE_GRAD_CONVERGED_MIN, F64_VS_F64

SMALL = dict(d_model=8, n_heads=2, n_mem_ratio=2)


def _net(seed=0, **kw):
    return EnergyTransformer(TransformerConfig(**{**SMALL, **kw}), seed=seed).double()


def _batch(b=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, 784, generator=g, dtype=torch.float64), torch.randint(0, 10, (b,), generator=g)


@pytest.mark.parametrize("kw", [dict(), dict(tokens="rows"), dict(n_blocks=3), dict(n_blocks=4, n_unique=2),
                                dict(n_blocks=3, inject="all")],
                         ids=["patch7", "rows", "3blocks", "tied_pairs", "inject_all"])
def test_float_kernels_equal_autograd_of_phi(kw):
    """Every node's pre-activation from the kernels == autograd dPhi/ds_i; dPhi/dtheta likewise."""
    net = _net(**kw)
    g = torch.Generator().manual_seed(5)
    x = torch.rand(3, net.n_in, generator=g, dtype=torch.float64)
    s = [(2 * torch.rand(3, n.size, generator=g, dtype=torch.float64) - 1).requires_grad_() for n in net.nodes]
    drive = net.drive(x)
    auto = torch.autograd.grad(net.phi(x, s).sum(), s)
    for i in range(len(s)):
        torch.testing.assert_close(net.preact(i, [t.detach() for t in s], drive), auto[i], **F64_VS_F64)
    params = dict(net.named_parameters())
    auto_p = torch.autograd.grad(net.phi(x, [t.detach() for t in s]).mean(), list(params.values()))
    closed = net.dphi_dparams(x, [t.detach() for t in s])
    assert sorted(closed) == sorted(params)
    for (k, _), a in zip(params.items(), auto_p):
        torch.testing.assert_close(closed[k], a, **F64_VS_F64)


def test_terms_structure_and_schedule():
    net = _net(n_blocks=4, n_unique=2)
    attn = [t for t in net.terms if isinstance(t, LSEAttention)]
    assert [t.wq for t in attn] == ["blocks.0.wq", "blocks.1.wq"] * 2  # ABAB
    assert not is_static(attn[0]) and not any(is_static(t) for t in net.terms if isinstance(t, TokenHopfield))
    assert is_static(next(t for t in net.terms if isinstance(t, TokenEmbed)))
    assert net.schedule() == [[0, 2, 4], [1, 3]]
    assert tokenize(torch.arange(784.).reshape(1, 784), (7, 7)).shape == (1, 16, 49)


@pytest.mark.parametrize("damping", [0.0, 0.5])
@torch.no_grad()
def test_damped_dynamics_descend_the_energy(damping):
    net = _net(seed=1, n_blocks=2, init_gain=1.0)
    x, _ = _batch()
    s = net.zero_state(x.shape[0], x)
    sweep = net.sweeper(net.drive(x))
    e_prev = net.energy(x, s)
    for _ in range(60):
        s = [(1 - damping) * a + damping * b for a, b in zip(sweep(s), s)]
        e = net.energy(x, s)
        assert bool((e <= e_prev + 1e-12).all()), (e - e_prev).max()
        e_prev = e
    assert all(float(t.abs().max()) <= 1.0 for t in s[:-1])


def _fd_loss_grad(net, x, y, name, idx, h=1e-5, n=400):
    p = net.get_parameter(name)
    vals = []
    for sgn in (1, -1):
        with torch.no_grad():
            p.view(-1)[idx] += sgn * h
        s, _ = net.free_phase(x, n_steps=n, tol=1e-14)
        vals.append(float(net.cost(s[-1], y).mean()))
        with torch.no_grad():
            p.view(-1)[idx] -= sgn * h
    return (vals[0] - vals[1]) / (2 * h)


def test_eqprop_matches_bptt_implicit_and_finite_differences():
    net = _net(seed=2, n_blocks=2)
    x, y = _batch(b=5)
    _, info = net.free_phase(x, n_steps=600, tol=1e-13)
    assert bool(info.converged.all())
    ge = net.eqprop_grads(x, y, beta=1e-3, mode="symmetric", n_free_steps=600, n_nudge_steps=600, tol=1e-13)
    gb = bptt_grads_damped(net, x, y, n_steps=int(info.steps.max()) + 100)
    gi = implicit_grads(net, x, y, tol=1e-12)
    for ref in (gb, gi):
        for r in compare_grads(ge, ref):
            assert r["cosine"] > COSINE_GRAD_CONVERGED_MIN, r
    # the undamped BPTT of the shared baseline reaches the same fixed point
    for r in compare_grads(bptt_grads(net, x, y, n_steps=300), gb):
        assert r["cosine"] > COSINE_GRAD_CONVERGED_MIN, r
    for name in ("blocks.0.wq", "blocks.1.xi", "links.0"):  # central finite differences of the loss
        g = ge[name].reshape(-1)
        idx = int(g.abs().argmax())
        fd = _fd_loss_grad(net, x, y, name, idx)
        assert abs(float(g[idx]) - fd) <= 1e-2 * abs(fd), (name, float(g[idx]), fd)


def test_broken_paths_fail():
    """Non-energy attention (query side only) and a skipped nudged phase both break the agreement."""
    x, y = _batch(b=5)
    net = _net(seed=2, key_side=False, init_gain=1.5)
    ge = net.eqprop_grads(x, y, beta=1e-3, mode="symmetric", n_free_steps=400, n_nudge_steps=400, tol=1e-13)
    gb = bptt_grads_damped(net, x, y, n_steps=400)
    worst = min(r["cosine"] for r in compare_grads(ge, gb))
    assert worst < 0.99, worst
    ok = _net(seed=2)
    s, _ = ok.free_phase(x, n_steps=400, tol=1e-13)
    g0 = ok.contrast(x, s, s, -1e-3, 1e-3)
    assert all(float(v.abs().max()) == 0.0 for v in g0.values())


def test_anderson_and_damped_solvers_reach_the_same_fixed_point():
    x, _ = _batch()
    ref, info = _net(seed=3).free_phase(x, n_steps=500, tol=1e-12)
    assert bool(info.converged.all())
    for kw in (dict(method="anderson"), dict(damping=0.5)):
        s, inf = _net(seed=3, **kw).free_phase(x, n_steps=500, tol=1e-12)
        assert bool(inf.converged.all()), kw
        torch.testing.assert_close(s[-1], ref[-1], rtol=0, atol=1e-9)
    s, steps = _net(seed=3).relax_early_exit(x, eps=1e-6, max_steps=500)
    assert int(steps.max()) < 500 and bool((steps >= 1).all())
    torch.testing.assert_close(s[-1], ref[-1], rtol=0, atol=1e-5)


def test_config_validation_and_round_trip():
    cfg = TransformerConfig(d_model=12, n_heads=3, n_blocks=4, n_unique=2)
    assert TransformerConfig.from_dict(cfg.to_dict()) == cfg
    for bad in (dict(d_model=10, n_heads=3), dict(n_blocks=2, n_unique=3), dict(damping=1.0), dict(tokens="pixels"),
                dict(method="newton"), dict(max_norm=0.0)):
        with pytest.raises(ValueError):
            TransformerConfig(**bad)
    with pytest.raises(ValueError, match="unknown keys"):
        TransformerConfig.from_dict({"d_modle": 8})

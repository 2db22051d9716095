"""The energy-model protocol and the phase engine (models/energy.py, models/engine.py)."""
from dataclasses import dataclass

import pytest
import torch

from models.energy import INPUT, Bias, Dense, EnergyModel
from models.engine import (COUNTER_LAYOUT, NUDGINGS, UnsupportedError, nudge_betas, phase_offsets, run_phases,
                           schedule_groups)
from models.eqprop_mlp import EqPropConfig, EqPropMLP
from models.gradients import bptt_grads, compare_grads, implicit_grads
from models.skip_mlp import SkipEqPropMLP
from quant.tolerances import COSINE_GRAD_CONVERGED_MIN


def test_chain_schedule_is_even_then_odd():
    for n in range(1, 7):
        edges = [(i, i + 1) for i in range(n - 1)]
        assert schedule_groups("async", edges, n) == [list(range(0, n, 2)), list(range(1, n, 2))][: 1 + (n > 1)]
    assert EqPropMLP(EqPropConfig(sizes=(5, 4, 4, 4, 3))).schedule() == [[0, 2], [1, 3]]


def test_schedule_colours_a_state_skip_coupling():
    # a skip 0 -> 2 joins two even nodes: they may no longer be updated together
    groups = schedule_groups("async", [(0, 1), (1, 2), (0, 2)], 3)
    assert groups == [[0], [1], [2]]
    for g in groups:
        assert not any((a, b) in {(0, 1), (1, 2), (0, 2)} for a in g for b in g)


def test_nudging_table():
    assert nudge_betas("symmetric", 0.2) == (-0.2, 0.2)
    assert nudge_betas("one_sided", 0.2) == (0.0, 0.2)
    signs = {nudge_betas("random_sign", 0.2, torch.Generator().manual_seed(s))[1] for s in range(20)}
    assert signs == {0.2, -0.2}
    with pytest.raises(ValueError, match="nudging mode='both'"):
        nudge_betas("both", 0.1)
    with pytest.raises(ValueError, match="beta"):
        nudge_betas("symmetric", 0.0)


@pytest.mark.parametrize("mode", NUDGINGS)
def test_run_phases_sequence_and_counters(mode):
    calls = []

    def relax(s0, *, beta, n_steps, step_offset):
        calls.append((s0, beta, n_steps, step_offset))
        return f"s@{beta}", {"beta": beta}

    ph = run_phases(relax, beta=0.5, mode=mode, n_free_steps=30, n_nudge_steps=10, offset=100,
                    generator=torch.Generator().manual_seed(0))
    off = phase_offsets(30, 10, 100)
    assert calls[0] == (None, 0.0, 30, off["free"])
    nudged = calls[1:]
    assert len(nudged) == (2 if mode == "symmetric" else 1)
    assert all(c[0] == "s@0.0" and c[2] == 10 for c in nudged)  # nudged phases start at the free state
    assert nudged[-1] == ("s@0.0", ph.b2, 10, off["b2"])
    if mode == "symmetric":
        assert nudged[0] == ("s@0.0", -0.5, 10, off["b1"])
    else:
        assert ph.s1 == ph.free
    assert sorted(COUNTER_LAYOUT.values()) == [0, 1, 2]


@dataclass(frozen=True)
class Mystery:
    node: int

    @property
    def nodes(self):
        return (self.node,)


def test_backend_refuses_unknown_term_by_name():
    net = EqPropMLP(EqPropConfig(sizes=(4, 3, 2)), seed=0)
    net.terms = net.terms + [Mystery(0)]
    with pytest.raises(UnsupportedError, match=r"backend 'float torch' has no kernel for interaction term Mystery.*supports: .*Bias.*Dense"):
        net.free_phase(torch.rand(2, 4))


def _batch(n_in, n_out, b=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, n_in, generator=g, dtype=torch.float64), torch.randint(0, n_out, (b,), generator=g)


def test_skip_model_eqprop_matches_bptt_and_implicit():
    net = SkipEqPropMLP(EqPropConfig(sizes=(7, 6, 5, 3)), seed=3, skip_gain=1.0).double()
    x, y = _batch(7, 3)
    ge = net.eqprop_grads(x, y, beta=1e-4, mode="symmetric", n_free_steps=400, n_nudge_steps=400, tol=1e-13)
    gb = bptt_grads(net, x, y, n_steps=400)
    gi = implicit_grads(net, x, y)
    assert "skip.weight" in ge and ge["skip.weight"].abs().sum() > 0
    for ref in (gb, gi):
        for r in compare_grads(ge, ref):
            assert r["cosine"] > COSINE_GRAD_CONVERGED_MIN, r


def test_skip_term_really_enters_dynamics_and_gradient():
    net = SkipEqPropMLP(EqPropConfig(sizes=(7, 6, 3)), seed=1, skip_gain=2.0).double()
    x, y = _batch(7, 3)
    plain = EqPropMLP(net.config, seed=1).double()
    plain.load_state_dict({k: v for k, v in net.state_dict().items() if not k.startswith("skip")})
    s_skip, _ = net.free_phase(x, n_steps=100)
    s_plain, _ = plain.free_phase(x, n_steps=100)
    assert (s_skip[-1] - s_plain[-1]).abs().max() > 1e-3
    # the fixed point satisfies s_out = rho(W_1 s_0 + b_1 + S x)
    pre = net.layers[1](s_skip[0]) + x @ net.skip.weight.t()
    torch.testing.assert_close(s_skip[-1], pre.clamp(0, 1), rtol=0, atol=1e-10)


def test_async_sweeps_descend_the_energy():
    net = SkipEqPropMLP(EqPropConfig(sizes=(7, 6, 5, 3)), seed=2).double()
    x, y = _batch(7, 3)
    s = net.zero_state(x.shape[0], x)
    drive = net.drive(x)
    e_prev = net.energy(x, s)
    for _ in range(30):
        s = net.step(s, drive)
        e = net.energy(x, s)
        assert bool((e <= e_prev + 1e-12).all())
        e_prev = e


def test_energy_model_protocol_on_a_minimal_model():
    """A model written only against the protocol (no MLP code) relaxes and trains through the engine."""

    class Tiny(EnergyModel, torch.nn.Module):
        def __init__(self):
            super().__init__()
            g = torch.Generator().manual_seed(0)
            self.a = torch.nn.Parameter(torch.rand(3, 4, generator=g, dtype=torch.float64) - 0.5)
            self.c = torch.nn.Parameter(torch.rand(2, 3, generator=g, dtype=torch.float64) - 0.5)
            self.b = torch.nn.Parameter(torch.zeros(2, dtype=torch.float64))
            from models.energy import Node
            self.nodes, self.n_in, self.update = [Node(3), Node(2)], 4, "async"
            self.terms = [Dense(0, INPUT, "a"), Dense(1, 0, "c"), Bias(1, "b")]

        def cost(self, s, y):
            return 0.5 * ((s - torch.nn.functional.one_hot(y, 2).double()) ** 2).sum(1)

        def cost_grad(self, s, y):
            return s - torch.nn.functional.one_hot(y, 2).double()

    net = Tiny()
    assert net.schedule() == [[0], [1]] and net.sweep_macs() == 2 * 3 * 2
    x, y = _batch(4, 2, b=5)
    d = net.drive(x)
    s = [torch.zeros(5, 3, dtype=torch.float64), torch.zeros(5, 2, dtype=torch.float64)]
    for _ in range(100):
        s = net.step(s, d)
    torch.testing.assert_close(s[0], (x @ net.a.t() + s[1] @ net.c).clamp(0, 1), rtol=0, atol=1e-12)
    torch.testing.assert_close(s[1], (s[0] @ net.c.t() + net.b).clamp(0, 1), rtol=0, atol=1e-12)


def _models():
    from models.conv import ConvConfig, ConvEqProp
    yield "mlp", EqPropMLP(EqPropConfig(sizes=(9, 7, 5, 3)), seed=0).double()
    yield "skip", SkipEqPropMLP(EqPropConfig(sizes=(9, 7, 3)), seed=0).double()
    yield "conv", ConvEqProp(ConvConfig(in_shape=(1, 10, 10), channels=(3, 4), kernel=3, n_out=3), seed=0).double()
    yield "conv_pad", ConvEqProp(ConvConfig(in_shape=(2, 9, 9), channels=(3,), kernel=3, padding=1, n_out=2),
                                 seed=1).double()


@pytest.mark.parametrize("name,net", list(_models()), ids=lambda v: v if isinstance(v, str) else "")
def test_float_kernels_equal_autograd_of_phi(name, net):
    """Every node's pre-activation from the kernels == autograd dPhi/ds_i; dPhi/dtheta likewise."""
    g = torch.Generator().manual_seed(5)
    x = torch.rand(4, net.n_in, generator=g, dtype=torch.float64)
    s = [torch.rand(4, n.size, generator=g, dtype=torch.float64).requires_grad_() for n in net.nodes]
    drive = net.drive(x)
    auto = torch.autograd.grad(net.phi(x, s).sum(), s)
    for i in range(len(s)):
        torch.testing.assert_close(net.preact(i, [t.detach() for t in s], drive), auto[i], rtol=1e-12, atol=1e-12)
    params = dict(net.named_parameters())
    auto_p = torch.autograd.grad(net.phi(x, [t.detach() for t in s]).mean(), list(params.values()))
    closed = net.dphi_dparams(x, [t.detach() for t in s])
    assert sorted(closed) == sorted(params)
    for (k, _), a in zip(params.items(), auto_p):
        torch.testing.assert_close(closed[k], a, rtol=1e-12, atol=1e-12)


def test_conv_model_eqprop_matches_bptt():
    from models.conv import ConvConfig, ConvEqProp
    net = ConvEqProp(ConvConfig(in_shape=(1, 12, 12), channels=(4, 6), kernel=3, n_out=3), seed=0).double()
    x, y = _batch(144, 3, b=6)
    _, info = net.free_phase(x, n_steps=500, tol=1e-13)
    assert bool(info.converged.all())
    ge = net.eqprop_grads(x, y, beta=1e-3, mode="symmetric", n_free_steps=500, n_nudge_steps=500, tol=1e-13)
    gb = bptt_grads(net, x, y, n_steps=int(info.steps.max()) + 50)
    gi = implicit_grads(net, x, y, tol=1e-13)  # matrix-free adjoint (pooling is not linear in s)
    for ref in (gb, gi):
        for r in compare_grads(ge, ref):
            assert r["cosine"] > COSINE_GRAD_CONVERGED_MIN, r


@pytest.mark.parametrize("update", ["async", "sync"])
def test_conv_routing_cache_changes_nothing(update):
    """The sweeper reuses conv(s_pre)'s pooling indices from the forward; fresh steps recompute them."""
    from models.conv import ConvConfig, ConvEqProp
    net = ConvEqProp(ConvConfig(in_shape=(1, 12, 12), channels=(4, 6), kernel=3, n_out=3, update=update), seed=4)
    x = torch.rand(5, 144, generator=torch.Generator().manual_seed(0))
    d = net.drive(x)
    sweep = net.sweeper(d)
    a = b = net.zero_state(5, x)
    with torch.no_grad():
        for _ in range(12):
            a = sweep(a)          # one sweeper: cached routing after the first sweep
            b = net.step(b, d)    # a new sweeper per step: routing recomputed
    for u, v in zip(a, b):
        torch.testing.assert_close(u, v, rtol=0, atol=0)

"""The fused chain relaxation (models.energy.relax_chain) is bit-identical to the generic sweeper +
fixed-point solver: states, diagnostics, EqProp gradients of every nudging mode and cost, and the
weights after a few Adam steps, on real MNIST batches (float32, the training dtype)."""
import pytest
import torch

from models import energy
from models.energy import chain_plan, relax_chain
from models.engine import NUDGINGS
from models.eqprop_mlp import EqPropConfig, EqPropMLP
from tracks.data import load_dataset


@pytest.fixture(scope="module")
def mnist():
    x, y = load_dataset("mnist", "train")
    return torch.from_numpy(x[:400]), torch.from_numpy(y[:400])


def _pair(sizes, seed=0, **kw):
    fast = EqPropMLP(EqPropConfig(sizes=sizes, **kw), seed=seed)
    ref = EqPropMLP(EqPropConfig(sizes=sizes, **kw), seed=seed)
    ref.fast_relax = False
    return fast, ref


def _same_info(a, b):
    assert torch.equal(a.steps, b.steps) and torch.equal(a.converged, b.converged)
    assert torch.equal(a.residual, b.residual) and torch.equal(a.cycling, b.cycling)
    assert a.n_steps == b.n_steps and a.trace == b.trace


@pytest.mark.parametrize("sizes", [(784, 64, 10), (784, 48, 32, 10), (784, 10)])
@pytest.mark.parametrize("beta", [0.0, 0.5, -0.3])
def test_relax_bit_identical(mnist, sizes, beta):
    x, y = mnist[0][:100], mnist[1][:100]
    fast, ref = _pair(sizes)
    assert chain_plan(fast) is not None
    for n_steps in (1, 2, 7, 30, 80):
        s_f, i_f = fast.relax(x, None, beta=beta, y=y, n_steps=n_steps)
        s_r, i_r = ref.relax(x, None, beta=beta, y=y, n_steps=n_steps)
        assert all(torch.equal(a, b) for a, b in zip(s_f, s_r)), (sizes, beta, n_steps)
        _same_info(i_f, i_r)
        # warm start from a given state (the nudged phases start from the free equilibrium)
        s2_f, i2_f = fast.relax(x, s_r, beta=beta, y=y, n_steps=n_steps)
        s2_r, i2_r = ref.relax(x, s_r, beta=beta, y=y, n_steps=n_steps)
        assert all(torch.equal(a, b) for a, b in zip(s2_f, s2_r))
        _same_info(i2_f, i2_r)


def test_exact_exit_is_taken(mnist, monkeypatch):
    """The free phase of the benchmark net reaches an exact fixed point before 30 sweeps, so the
    fused loop stops early: count its sweeps (the forward product of the output is one per sweep)."""
    x = mnist[0][:100]
    net = EqPropMLP(EqPropConfig(sizes=(784, 128, 10)), seed=0)
    calls = []
    real = torch.addmm

    def counting(*a, **k):
        calls.append(1)
        return real(*a, **k)

    monkeypatch.setattr(energy.torch, "addmm", counting)
    net.relax(x, None, n_steps=200)
    monkeypatch.undo()
    assert 2 * 2 <= len(calls) < 2 * 200  # two products per sweep; stopped well before 200 sweeps


@pytest.mark.parametrize("mode", NUDGINGS)
@pytest.mark.parametrize("cost", ["mse", "ce"])
def test_eqprop_grads_and_training_bit_identical(mnist, mode, cost):
    x, y = mnist
    fast, ref = _pair((784, 64, 32, 10), cost=cost)
    opts = [torch.optim.Adam(n.parameters(), lr=1e-3) for n in (fast, ref)]
    for b in range(4):
        xb, yb = x[b * 100:(b + 1) * 100], y[b * 100:(b + 1) * 100]
        gs = [n.eqprop_grads(xb, yb, beta=0.5, mode=mode, generator=torch.Generator().manual_seed(b),
                             return_states=True) for n in (fast, ref)]
        (g_f, st_f), (g_r, st_r) = gs
        assert g_f.keys() == g_r.keys()
        for k in g_f:
            assert torch.equal(g_f[k], g_r[k]), (mode, cost, b, k)
        for k in ("free", "s1", "s2"):
            assert all(torch.equal(a, c) for a, c in zip(st_f[k], st_r[k]))
        for n, g, opt in zip((fast, ref), (g_f, g_r), opts):
            for name, p in n.named_parameters():
                p.grad = g[name]
            opt.step()
    for (k, p_f), p_r in zip(fast.named_parameters(), ref.parameters()):
        assert torch.equal(p_f, p_r), k


def test_a_wrong_exit_is_caught(mnist, monkeypatch):
    """Break the exit (stop after the second sweep whatever the state): the comparison must fail."""
    x = mnist[0][:100]
    fast, ref = _pair((784, 64, 10))
    monkeypatch.setattr(energy.torch, "equal", lambda a, b: True)
    s_f, _ = fast.relax(x, None, n_steps=30)
    monkeypatch.undo()
    s_r, _ = ref.relax(x, None, n_steps=30)
    assert not all(torch.equal(a, b) for a, b in zip(s_f, s_r))


def test_other_models_take_the_generic_path(mnist):
    from models.skip_mlp import SkipEqPropMLP

    sync = EqPropMLP(EqPropConfig(sizes=(784, 16, 10), update="sync"), seed=0)
    assert chain_plan(sync) is None
    net = EqPropMLP(EqPropConfig(sizes=(784, 16, 10)), seed=0)
    assert chain_plan(net) is not None
    assert chain_plan(net, [None, None]) is None  # a drive without the input product
    with pytest.raises(ValueError, match="not a layered Dense/Bias chain"):
        relax_chain(sync, sync.drive(mnist[0][:4]), sync.zero_state(4, mnist[0]), beta=0.0, y=None, n_steps=3)
    skip = SkipEqPropMLP(EqPropConfig(sizes=(784, 16, 10)), seed=0)
    assert chain_plan(skip) is None  # an extra term: generic path
    x = mnist[0][:20]
    s_skip, _ = skip.relax(x, None, n_steps=5)  # still runs (generic path)
    assert s_skip[-1].shape == (20, 10)


@pytest.mark.parametrize("cost", ["mse", "ce"])
def test_stacked_pair_equals_two_generic_phases(mnist, cost):
    """relax_chain_pair (both nudged phases in one 2B batch) = two generic relaxations, diagnostics too."""
    from models.energy import relax_chain_pair

    x, y = mnist[0][:100], mnist[1][:100]
    fast, ref = _pair((784, 64, 10), cost=cost)
    free, _ = ref.relax(x, None, n_steps=30)
    with torch.no_grad():
        (s1, s2), (i1, i2) = relax_chain_pair(fast, fast.drive(x), free, -0.4, 0.4, y, 10)
    for s_f, i_f, b in ((s1, i1, -0.4), (s2, i2, 0.4)):
        s_r, i_r = ref.relax(x, free, beta=b, y=y, n_steps=10)
        assert all(torch.equal(a, c) and a.stride() == c.stride() for a, c in zip(s_f, s_r))
        _same_info(i_f, i_r)
    fast.stack_phases = False  # the unstacked fused path gives the same gradients as well
    g_u = fast.eqprop_grads(x, y, beta=0.4)
    fast.stack_phases = True
    g_s = fast.eqprop_grads(x, y, beta=0.4)
    assert all(torch.equal(g_u[k], g_s[k]) for k in g_u)


def test_contrast_in_place_scaling_is_exact(mnist):
    """EnergyModel.contrast scales the kernels' fresh contrasts in place: same bits as ``g * c``."""
    from models.energy import FLOAT_KERNELS

    x, y = mnist[0][:100], mnist[1][:100]
    net = EqPropMLP(EqPropConfig(sizes=(784, 64, 10)), seed=0)
    _, st = net.eqprop_grads(x, y, beta=0.5, return_states=True)
    got = net.contrast(x, st["s1"], st["s2"], st["b1"], st["b2"])
    c = -1.0 / (st["b2"] - st["b1"]) / x.shape[0]
    with torch.no_grad():
        for t in net.terms:
            for name, g in FLOAT_KERNELS[type(t)].contrast(t, net._param, x, st["s1"], st["s2"]).items():
                assert torch.equal(got[name], g * c), name


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_input_refused(mnist, bad):
    x = mnist[0][:8].clone()
    x[3, 100] = bad
    net = EqPropMLP(EqPropConfig(sizes=(784, 16, 10)), seed=0)
    with pytest.raises(ValueError, match="NaN or infinite"):
        net.eqprop_grads(x, mnist[1][:8], beta=0.5)

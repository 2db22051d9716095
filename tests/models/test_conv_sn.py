"""ConvEqProp spectral normalisation (``ConvConfig.sn_bound``) and the output initialisation.

The power-iteration norm of each convolution is checked against the dense matrix of the operator
(``torch.linalg.matrix_norm(ord=2)``) and the FFT upper bound; the projection keeps every coupling
at ``<= sn_bound`` after optimiser-like in-place updates, and only because of the projection; EqProp
still equals BPTT / the implicit gradient with the constraint binding.
"""

import pytest
import torch
import torch.nn.functional as F

from models.conv import ConvConfig, ConvEqProp, conv_dense_matrix, conv_norm_upper_bound
from models.gradients import bptt_grads, compare_grads, implicit_grads
from quant.tolerances import COSINE_GRAD_CONVERGED_MIN


def _exact(net, i):
    t = net.conv_terms[i]
    return float(torch.linalg.matrix_norm(conv_dense_matrix(net.convs[i].weight.detach().double(), t.in_shape,
                                                            t.padding), ord=2))


@pytest.mark.parametrize("in_shape,channels,kernel,padding", [((1, 10, 10), (3, 4), 3, 0), ((2, 9, 9), (3, 2), 3, 1),
                                                               ((1, 14, 14), (4, 8), 3, 0)])
def test_power_iteration_equals_dense_norm_and_fft_bounds_it(in_shape, channels, kernel, padding):
    net = ConvEqProp(ConvConfig(in_shape=in_shape, channels=channels, kernel=kernel, padding=padding, n_out=3,
                                init_gain=2.0), seed=0).double()
    for i in range(len(channels)):
        exact = _exact(net, i)
        power, _ = net.conv_operator_norm(i, n_iter=3000, tol=0.0, lanczos=False)
        assert power == pytest.approx(exact, rel=1e-4)  # clustered top singular values: slow convergence
        sigma, _ = net.conv_operator_norm(i, n_iter=10)  # what the projection uses: 10 steps + Lanczos
        assert sigma == pytest.approx(exact, rel=1e-8)
        assert max(power, sigma) <= exact * (1 + 1e-9)  # Rayleigh quotients never exceed the norm
        t = net.conv_terms[i]
        assert conv_norm_upper_bound(net.convs[i].weight, t.in_shape, t.padding) >= exact * (1 - 1e-9)


def test_sn_keeps_every_coupling_below_the_bound_after_updates(monkeypatch):
    cfg = dict(in_shape=(1, 12, 12), channels=(4, 6), kernel=3, n_out=3, init_gain=3.0)
    free = ConvEqProp(ConvConfig(**cfg), seed=2).double()
    bound = 0.5
    assert max(_exact(free, 0), _exact(free, 1)) > bound  # the constraint binds
    net = ConvEqProp(ConvConfig(**cfg, sn_bound=bound), seed=2).double()
    x = torch.rand(3, 144, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    for step in range(3):
        for i in range(2):
            assert _exact(net, i) <= bound * (1 + 1e-5), (step, i)
        # step 0: projected in float32 at construction (rounding ~1e-8), later steps in float64
        assert float(torch.linalg.matrix_norm(net.fc.weight.detach(), ord=2)) <= bound * (1 + 1e-6)
        with torch.no_grad():  # an optimiser-like in-place update that leaves the bound
            for p in (net.convs[0].weight, net.convs[1].weight, net.fc.weight):
                p.add_(0.5 * torch.randn(p.shape, generator=torch.Generator().manual_seed(step), dtype=p.dtype))
        net.free_phase(x, n_steps=2)  # drive() projects the changed weights
    lip = net.lipschitz()
    assert all(lip[k] <= bound * (1 + 1e-5) for k in ("convs.0.weight", "convs.1.weight", "fc.weight"))
    assert lip["feedforward"] <= bound ** 3 * (1 + 1e-4)
    # broken path: without the projection in drive() the same update leaves the bound
    monkeypatch.setattr(ConvEqProp, "constrain_", lambda self, n_iter=None: {})
    with torch.no_grad():
        net.convs[1].weight.mul_(3.0)
    net.free_phase(x, n_steps=2)
    assert _exact(net, 1) > bound * 1.5


def test_pooled_coupling_and_feedforward_sweep_respect_the_reported_bounds():
    """||P(conv(a)) - P(conv(b))|| <= sigma ||a - b|| (pooling 1-Lipschitz) and the first feed-forward sweep
    (conv, pool, hard sigmoid per layer, dense) moves by at most lipschitz()["feedforward"] ||a - b||."""
    net = ConvEqProp(ConvConfig(in_shape=(1, 11, 11), channels=(3, 4), kernel=3, n_out=3, init_gain=2.0,
                                sn_bound=0.9), seed=1).double()
    lip = net.lipschitz()
    g = torch.Generator().manual_seed(3)
    a = torch.rand(200, 121, dtype=torch.float64, generator=g)
    b = a + 1e-2 * torch.randn(200, 121, dtype=torch.float64, generator=g)
    t, W = net.conv_terms[0], net.convs[0].weight.detach()

    def pooled(v):
        return F.max_pool2d(F.conv2d(v.reshape(-1, *t.in_shape), W), 2).flatten(1)

    ratio = ((pooled(a) - pooled(b)).norm(dim=1) / (a - b).norm(dim=1)).max()
    assert float(ratio) <= lip["convs.0.weight"] * (1 + 1e-9)

    def ff(v):
        h = v
        for i, tt in enumerate(net.conv_terms):
            z = F.max_pool2d(F.conv2d(h.reshape(-1, *tt.in_shape), net.convs[i].weight), 2)
            z = z + net.convs[i].bias[:, None, None]
            h = z.clamp(0, 1).flatten(1)
        return h @ net.fc.weight.T

    with torch.no_grad():
        r = ((ff(a) - ff(b)).norm(dim=1) / (a - b).norm(dim=1)).max()
    assert 0 < float(r) <= lip["feedforward"] * (1 + 1e-9)


@pytest.mark.parametrize("out_activation", ["hard_sigmoid", "hard_tanh"])
def test_eqprop_matches_bptt_and_implicit_with_sn_binding(out_activation):
    net = ConvEqProp(ConvConfig(in_shape=(1, 12, 12), channels=(4, 6), kernel=3, n_out=3, init_gain=3.0,
                                sn_bound=0.8, out_activation=out_activation), seed=0).double()
    assert net.nodes[-1].bounds == {"hard_sigmoid": (0.0, 1.0), "hard_tanh": (-1.0, 1.0)}[out_activation]
    pre = ConvEqProp(ConvConfig(in_shape=(1, 12, 12), channels=(4, 6), kernel=3, n_out=3, init_gain=3.0), seed=0)
    assert not torch.allclose(pre.convs[0].weight.double(), net.convs[0].weight)  # the projection changed it
    g = torch.Generator().manual_seed(1)
    x, y = torch.rand(6, 144, dtype=torch.float64, generator=g), torch.randint(0, 3, (6,), generator=g)
    _, info = net.free_phase(x, n_steps=500, tol=1e-13)
    assert bool(info.converged.all())
    ge = net.eqprop_grads(x, y, beta=1e-3, mode="symmetric", n_free_steps=500, n_nudge_steps=500, tol=1e-13)
    gb = bptt_grads(net, x, y, n_steps=int(info.steps.max()) + 50)
    gi = implicit_grads(net, x, y, tol=1e-13)
    for ref in (gb, gi):
        for r in compare_grads(ge, ref):
            assert r["cosine"] > COSINE_GRAD_CONVERGED_MIN, r


def test_bad_sn_settings_are_refused():
    with pytest.raises(ValueError, match="sn_bound"):
        ConvConfig(sn_bound=0.0)
    with pytest.raises(ValueError, match="sn_iters"):
        ConvConfig(sn_bound=1.0, sn_iters=0)
    with pytest.raises(ValueError, match="out_activation"):
        ConvConfig(out_activation="relu")

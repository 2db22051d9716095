"""Spiking ConvEqProp (hwsim.spiking.conv): snntorch == Brian2 spike counts, rates track the float
fixed point (feedback kept), NIR round trip (Conv2d nodes) exact."""
import dataclasses

import numpy as np
import pytest
import torch

from exports.nir_export import params_from_nir_conv, read_nir_conv, to_nir_conv, write_nir_conv
from hwsim.spiking.config import SpikingConfig
from hwsim.spiking.conv import ConvSpikingParams, run_brian2_conv, run_snntorch_conv
from models.conv import ConvConfig, ConvEqProp
from models.engine import UnsupportedError
from models.eqprop_mlp import EqPropConfig, EqPropMLP


def _net(seed=1, gain=1.5, hw=8):
    cfg = ConvConfig(in_shape=(1, hw, hw), channels=(2, 3), kernel=3, padding=1, n_out=4, init_gain=gain)
    return ConvEqProp(cfg, seed=seed).double()


def _x(n, d=64, seed=0):
    return np.random.default_rng(seed).random((n, d))


def test_snntorch_and_brian2_conv_spike_counts_identical():
    p = ConvSpikingParams.from_model(_net(), SpikingConfig(n_steps=24))
    x = _x(2)
    a, b = run_snntorch_conv(p, x), run_brian2_conv(p, x)
    assert min(int(c.sum()) for c in a.counts) > 0, "every layer must spike for the comparison to mean anything"
    for ca, cb in zip(a.counts, b.counts):
        np.testing.assert_array_equal(ca, cb)
    for va, vb in zip(a.v_final, b.v_final):
        np.testing.assert_allclose(va, vb, rtol=1e-9, atol=1e-9)
    other = dataclasses.replace(p, convs=(p.convs[0], dataclasses.replace(p.convs[1], weight=p.convs[1].weight * 1.3)))
    c = run_brian2_conv(other, x)
    assert not all(np.array_equal(ca, cc) for ca, cc in zip(a.counts, c.counts))


def test_rates_track_the_float_fixed_point_and_need_the_feedback():
    net = _net(seed=0, gain=1.0)
    net.config = dataclasses.replace(net.config, update="sync")
    x = _x(16)
    s, info = net.free_phase(torch.from_numpy(x), n_steps=200)
    assert bool(info.converged.all())
    err = {}
    for fb in ("spike", "none"):
        rec = run_snntorch_conv(ConvSpikingParams.from_model(net, SpikingConfig(n_steps=128, feedback=fb)), x)
        err[fb] = [float(np.abs(r - si.numpy()).mean()) for r, si in zip(rec.rates()[:2], s[:2])]
    assert max(err["spike"]) < 0.01, err          # measured 0.001 / 0.005
    assert all(a < b for a, b in zip(err["spike"], err["none"])), err


def test_nir_conv_round_trip_is_exact(tmp_path):
    p = ConvSpikingParams.from_model(_net(hw=10), SpikingConfig(n_steps=16))
    g = to_nir_conv(p)
    assert {type(g.nodes[f"conv{i}"]).__name__ for i in range(2)} == {"Conv2d"}
    assert type(g.nodes["fbconv0"]).__name__ == "Conv2d" and ("if1", "unpool1") in g.edges
    path = write_nir_conv(tmp_path / "conv.nir", p)
    for q in (params_from_nir_conv(g), params_from_nir_conv(read_nir_conv(path))):
        assert q.config == p.config and q.sizes == p.sizes
        for c1, c2 in zip(p.convs, q.convs):
            assert np.array_equal(c1.weight, c2.weight) and np.array_equal(c1.bias, c2.bias)
            assert (c1.in_shape, c1.padding, c1.pool) == (c2.in_shape, c2.padding, c2.pool)
        assert np.array_equal(p.out_weight, q.out_weight) and np.array_equal(p.out_bias, q.out_bias)
    x = _x(3, 100)
    a, b = run_snntorch_conv(p, x), run_snntorch_conv(params_from_nir_conv(read_nir_conv(path)), x)
    assert all(np.array_equal(u, v) for u, v in zip(a.counts, b.counts))
    g.nodes["fbconv0"].weight = g.nodes["fbconv0"].weight * 2
    with pytest.raises(ValueError, match="fbconv0"):
        params_from_nir_conv(g)
    g = to_nir_conv(p)
    g.nodes["pool1"].metadata = {}
    with pytest.raises(ValueError, match="pool1"):
        params_from_nir_conv(g)


def test_conv_port_refuses_what_it_does_not_implement():
    with pytest.raises(UnsupportedError, match="ConvEqProp"):
        ConvSpikingParams.from_model(EqPropMLP(EqPropConfig(sizes=(6, 5, 3)), seed=0), SpikingConfig())
    with pytest.raises(ValueError, match="input='current'"):
        ConvSpikingParams.from_model(_net(), SpikingConfig(input="poisson"))

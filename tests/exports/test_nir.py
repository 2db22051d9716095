"""NIR export of the spiking port: write, read back, compare every node and edge, rebuild, same spikes."""
from __future__ import annotations

import nir
import numpy as np
import pytest
import torch

from exports.nir_export import params_from_nir, read_nir, to_nir, write_nir
from hwsim.spiking.config import SpikingConfig, SpikingParams
from hwsim.spiking.snntorch_port import run_snntorch
from models.eqprop_mlp import EqPropConfig, EqPropMLP
from tracks.data import load_dataset

NODE_FIELDS = {nir.Affine: ("weight", "bias"), nir.Linear: ("weight",), nir.IF: ("r", "v_threshold", "v_reset"),
               nir.LIF: ("tau", "r", "v_leak", "v_threshold", "v_reset"), nir.Input: (), nir.Output: ()}


def _params(cfg: SpikingConfig, sizes=(784, 24, 16, 10)) -> SpikingParams:
    """Random (untrained) 2-hidden-layer net: exercises two feedback edges; gain 3 so layers spike."""
    net = EqPropMLP(EqPropConfig(sizes=sizes, init_gain=3.0), seed=1)
    return SpikingParams.from_model(net, cfg)


@pytest.mark.parametrize("cfg", [SpikingConfig(n_steps=20),
                                 SpikingConfig(n_steps=20, tau_mem_s=4e-3, dt_s=5e-4, v_threshold=0.5,
                                               input="poisson", seed=7)], ids=["if", "lif_poisson"])
def test_nir_round_trip_nodes_edges_and_spikes(tmp_path, cfg):
    params = _params(cfg)
    graph = to_nir(params)
    path = write_nir(tmp_path / "net.nir", params)
    back = read_nir(path)
    assert set(back.nodes) == set(graph.nodes)
    assert sorted(map(tuple, back.edges)) == sorted(map(tuple, graph.edges))
    assert ("if1", "fb0") in back.edges and ("if2", "fb1") in back.edges and ("fb1", "if1") in back.edges
    for name, node in graph.nodes.items():
        assert type(back.nodes[name]) is type(node)
        for field in NODE_FIELDS[type(node)]:
            np.testing.assert_array_equal(np.asarray(getattr(back.nodes[name], field)), np.asarray(getattr(node, field)))
    rebuilt = params_from_nir(back)
    assert rebuilt.config == cfg
    x = load_dataset("mnist", "test")[0][:4]
    a, b = run_snntorch(params, x), run_snntorch(rebuilt, x)
    assert sum(int(c.sum()) for c in a.counts) > 0
    for ca, cb in zip(a.counts, b.counts):
        np.testing.assert_array_equal(ca, cb)


def test_write_refuses_to_overwrite(tmp_path):
    params = _params(SpikingConfig(n_steps=4), sizes=(6, 4, 3))
    path = write_nir(tmp_path / "a.nir", params)
    before = path.read_bytes()
    with pytest.raises(ValueError, match="overwrite=True"):
        write_nir(path, _params(SpikingConfig(n_steps=5), sizes=(6, 4, 3)))
    assert path.read_bytes() == before
    write_nir(path, _params(SpikingConfig(n_steps=5), sizes=(6, 4, 3)), overwrite=True)
    assert params_from_nir(read_nir(path)).config.n_steps == 5


def test_reader_rejects_broken_graphs(tmp_path):
    params = _params(SpikingConfig(n_steps=4), sizes=(6, 4, 3, 2))
    g = to_nir(params)  # NIRGraph(...) may add nodes to the dict it is given: fresh graphs each time
    no_fb = nir.NIRGraph(nodes=dict(g.nodes), edges=[e for e in g.edges if e != ("fb0", "if0")],
                         metadata=dict(g.metadata), type_check=False)
    with pytest.raises(ValueError, match="missing \\[\\('fb0', 'if0'\\)\\]"):
        params_from_nir(no_fb)
    g = to_nir(params)
    nodes = dict(g.nodes)
    nodes["fb1"] = nir.Linear(weight=np.asarray(g.nodes["fb1"].weight) * 2.0)
    with pytest.raises(ValueError, match="not the transpose"):
        params_from_nir(nir.NIRGraph(nodes=nodes, edges=list(g.edges), metadata=dict(g.metadata)))
    with pytest.raises(ValueError, match="does not exist"):
        read_nir(tmp_path / "missing.nir")
    g = to_nir(params)
    with pytest.raises(ValueError, match="not written by"):
        params_from_nir(nir.NIRGraph(nodes=dict(g.nodes), edges=list(g.edges), metadata={}))

"""Export the spiking port of an EqPropMLP to NIR (``nir`` 1.0.8), feedback edges included.

Graph (``L`` layers; weights already multiplied by ``v_threshold``, see
:class:`hwsim.spiking.config.SpikingParams`)::

    input -> fc0 -> if0 -> fc1 -> if1 -> ... -> if{L-1} -> output        (feedforward, nir.Affine W_i, b_i)
    if{i+1} -> fb{i} -> if{i}                                            (feedback, nir.Linear W_{i+1}^T)

Several edges entering a neuron node are summed (NIR semantics), so ``if0`` receives
``W_0 u + b_0 + W_1^T z_1``. Neurons are ``nir.IF`` (``tau_mem_s=None``) or ``nir.LIF`` with
``r`` chosen so that NIR's continuous equations, integrated by forward Euler with the graph's
``dt_s``, give this project's per-step update ``v <- beta v + I``:

* IF: ``dv/dt = R I`` -> ``v += dt R I``, so ``R = 1 / dt``;
* LIF: ``tau dv/dt = (v_leak - v) + R I`` -> ``v += dt/tau (-v) + dt/tau R I``, so ``R = tau / dt``,
  ``v_leak = 0``.

NIR's neuron docstrings reset to ``v_reset``; this network resets by *subtraction* of the
threshold, which the graph states in ``metadata["reset"] = "subtract"`` (with ``dt_s``,
``n_steps``, ``input``, ``feedback``, ``seed``: the whole :class:`SpikingConfig`). ``v_reset`` is
written as 0. :func:`params_from_nir` reads a graph back into :class:`SpikingParams` so the
snntorch port can be rebuilt from a file.

>>> import numpy as np
>>> from hwsim.spiking.config import SpikingConfig, SpikingParams
>>> p = SpikingParams((np.ones((3, 4)), np.ones((2, 3))), (np.zeros(3), np.zeros(2)), SpikingConfig())
>>> g = to_nir(p)
>>> sorted(g.nodes)
['fb0', 'fc0', 'fc1', 'if0', 'if1', 'input', 'output']
>>> ("if1", "fb0") in g.edges and ("fb0", "if0") in g.edges
True
>>> q = params_from_nir(g)
>>> all(np.array_equal(a, b) for a, b in zip(p.weights, q.weights)) and q.config == p.config
True
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

import nir
import numpy as np

from hwsim.spiking.config import SpikingConfig, SpikingParams

log = logging.getLogger("eqprop_hwsim.exports.nir")

__all__ = ["to_nir", "write_nir", "read_nir", "params_from_nir"]

_INT_KEYS = ("n_steps", "seed")


def _neuron(n: int, cfg: SpikingConfig):
    thr = np.full(n, cfg.v_threshold, dtype=np.float64)
    zero = np.zeros(n, dtype=np.float64)
    if cfg.tau_mem_s is None:
        return nir.IF(r=np.full(n, 1.0 / cfg.dt_s), v_threshold=thr, v_reset=zero)
    return nir.LIF(tau=np.full(n, cfg.tau_mem_s), r=np.full(n, cfg.tau_mem_s / cfg.dt_s), v_leak=zero,
                   v_threshold=thr, v_reset=zero)


def to_nir(params: SpikingParams) -> nir.NIRGraph:
    """The spiking network as a ``nir.NIRGraph`` (nodes and edges as in the module docstring)."""
    if not isinstance(params, SpikingParams):
        raise ValueError(f"params must be SpikingParams (SpikingParams.from_model(net, cfg)), got {type(params).__name__}")
    cfg = params.config
    n_layers = len(params.weights)
    nodes = {"input": nir.Input(input_type=np.array([params.sizes[0]])),
             "output": nir.Output(output_type=np.array([params.sizes[-1]]))}
    edges = [("input", "fc0")]
    for i, (w, b) in enumerate(zip(params.weights, params.biases)):
        nodes[f"fc{i}"] = nir.Affine(weight=w.copy(), bias=b.copy())
        nodes[f"if{i}"] = _neuron(w.shape[0], cfg)
        edges.append((f"fc{i}", f"if{i}"))
        edges.append((f"if{i}", f"fc{i + 1}") if i + 1 < n_layers else (f"if{i}", "output"))
        if i + 1 < n_layers:
            nodes[f"fb{i}"] = nir.Linear(weight=np.ascontiguousarray(params.weights[i + 1].T))
            edges += [(f"if{i + 1}", f"fb{i}"), (f"fb{i}", f"if{i}")]
    meta = {k: ("none" if v is None else v) for k, v in cfg.to_dict().items()}
    meta.update({"format": "eqprop_hwsim.spiking", "n_layers": n_layers})
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata=meta)


def write_nir(path: str | os.PathLike, params: SpikingParams, *, overwrite: bool = False) -> Path:
    """Write :func:`to_nir` of ``params`` to ``path`` (HDF5). Refuses to replace a file unless ``overwrite``."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise ValueError(f"{path} exists; pass overwrite=True to replace it or choose another path")
    if not path.parent.is_dir():
        raise ValueError(f"directory {path.parent} does not exist; create it first")
    nir.write(str(path), to_nir(params))
    log.info("wrote NIR graph to %s", path)
    return path


def read_nir(path: str | os.PathLike) -> nir.NIRGraph:
    """Read a ``.nir`` file (``nir.read``), with a clear error if it is missing."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"NIR file {path} does not exist")
    return nir.read(str(path))


def _scalar(v):
    v = v.item() if isinstance(v, np.ndarray) else v
    return v.decode() if isinstance(v, bytes) else v


def _uniform(arr, name: str, node: str) -> float:
    a = np.asarray(arr, dtype=np.float64)
    if a.size == 0 or not np.all(a == a.flat[0]):
        raise ValueError(f"NIR node {node!r}: {name} must be the same for every neuron (this network has one value)")
    return float(a.flat[0])


def params_from_nir(graph: nir.NIRGraph) -> SpikingParams:
    """Rebuild :class:`SpikingParams` from a graph written by :func:`to_nir` (file or in memory).

    Checks the structure (every feedforward and feedback edge, ``fb{i}.weight == fc{i+1}.weight.T``,
    neuron thresholds and ``r`` consistent with the metadata) and raises ``ValueError`` naming the
    node otherwise.
    """
    meta = {k: _scalar(v) for k, v in dict(graph.metadata).items()}
    if meta.get("format") != "eqprop_hwsim.spiking":
        raise ValueError("NIR graph was not written by exports.nir_export.to_nir (metadata 'format' missing)")
    n_layers = int(meta.pop("n_layers"))
    meta.pop("format")
    cfg_d = {k: (None if v == "none" else v) for k, v in meta.items()}
    for k in _INT_KEYS:
        cfg_d[k] = int(cfg_d[k])
    for k in ("dt_s", "v_threshold") + (("tau_mem_s",) if cfg_d.get("tau_mem_s") is not None else ()):
        cfg_d[k] = float(cfg_d[k])
    cfg = SpikingConfig.from_dict(cfg_d)
    expected = {("input", "fc0")}
    ws, bs = [], []
    for i in range(n_layers):
        for name in (f"fc{i}", f"if{i}"):
            if name not in graph.nodes:
                raise ValueError(f"NIR graph lacks node {name!r}")
        fc, neuron = graph.nodes[f"fc{i}"], graph.nodes[f"if{i}"]
        if not isinstance(fc, nir.Affine):
            raise ValueError(f"NIR node 'fc{i}' is {type(fc).__name__}, expected Affine")
        want = nir.IF if cfg.tau_mem_s is None else nir.LIF
        if not isinstance(neuron, want):
            raise ValueError(f"NIR node 'if{i}' is {type(neuron).__name__}, expected {want.__name__} for "
                             f"tau_mem_s={cfg.tau_mem_s}")
        if _uniform(neuron.v_threshold, "v_threshold", f"if{i}") != cfg.v_threshold:
            raise ValueError(f"NIR node 'if{i}': v_threshold differs from the graph metadata")
        r_want = 1.0 / cfg.dt_s if cfg.tau_mem_s is None else cfg.tau_mem_s / cfg.dt_s
        if not np.isclose(_uniform(neuron.r, "r", f"if{i}"), r_want, rtol=1e-12, atol=0.0):
            raise ValueError(f"NIR node 'if{i}': r={neuron.r.flat[0]} but the per-step update needs r={r_want}")
        ws.append(np.asarray(fc.weight, dtype=np.float64))
        bs.append(np.asarray(fc.bias, dtype=np.float64))
        expected |= {(f"fc{i}", f"if{i}"), (f"if{i}", f"fc{i + 1}") if i + 1 < n_layers else (f"if{i}", "output")}
    for i in range(n_layers - 1):
        fb = graph.nodes.get(f"fb{i}")
        if not isinstance(fb, nir.Linear):
            raise ValueError(f"NIR node 'fb{i}' (feedback W_{i + 1}^T) is missing or not Linear")
        if not np.array_equal(np.asarray(fb.weight), ws[i + 1].T):
            raise ValueError(f"NIR node 'fb{i}': feedback weight is not the transpose of fc{i + 1}.weight "
                             "(EqProp needs symmetric feedback)")
        expected |= {(f"if{i + 1}", f"fb{i}"), (f"fb{i}", f"if{i}")}
    got = {tuple(e) for e in graph.edges}
    if got != expected:
        raise ValueError(f"NIR edges differ from the EqProp graph: missing {sorted(expected - got)}, "
                         f"unexpected {sorted(got - expected)}")
    return SpikingParams(tuple(ws), tuple(bs), cfg)

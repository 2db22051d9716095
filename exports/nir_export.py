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


def _config_from_meta(meta: dict) -> SpikingConfig:
    """The :class:`SpikingConfig` written into a graph's metadata (strings back to ints, floats, None)."""
    cfg_d = {k: (None if v == "none" else v) for k, v in meta.items()}
    for k in _INT_KEYS:
        cfg_d[k] = int(cfg_d[k])
    for k in ("dt_s", "v_threshold") + (("tau_mem_s",) if cfg_d.get("tau_mem_s") is not None else ()):
        cfg_d[k] = float(cfg_d[k])
    return SpikingConfig.from_dict(cfg_d)


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
    cfg = _config_from_meta(meta)
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


# ------------------------------------------------------------------------------------ conv nets
CONV_FORMAT = "eqprop_hwsim.spiking_conv"
POOL_OP = "max_pool_gated"
UNPOOL_OP = "max_unpool_routed"


def _conv_neuron(shape, cfg: SpikingConfig):
    shape = tuple(int(s) for s in shape)
    thr, zero = np.full(shape, cfg.v_threshold), np.zeros(shape)
    if cfg.tau_mem_s is None:
        return nir.IF(r=np.full(shape, 1.0 / cfg.dt_s), v_threshold=thr, v_reset=zero)
    return nir.LIF(tau=np.full(shape, cfg.tau_mem_s), r=np.full(shape, cfg.tau_mem_s / cfg.dt_s), v_leak=zero,
                   v_threshold=thr, v_reset=zero)


def to_nir_conv(params) -> nir.NIRGraph:
    """The spiking conv net (:class:`hwsim.spiking.conv.ConvSpikingParams`) as a NIR graph.

    Feedforward: ``input -> conv0 (Conv2d W_0, b_0, padding p) -> pool0 -> if0 -> conv1 -> ... ->
    if{L-1} -> flat -> fc (Affine) -> if_out -> output``. Feedback: ``if{i+1} -> unpool{i+1} ->
    fbconv{i} -> if{i}`` (the transposed conv as a ``Conv2d`` of the flipped ``W_{i+1}^T`` with
    padding ``k-1-p``) and ``if_out -> fb_out (Linear W_out^T) -> if{L-1}``.

    NIR 1.0.8 has no max pooling with routing: ``pool{i}`` is a ``SumPool2d`` node (its window and
    stride) whose ``metadata["eqprop_hwsim_op"] = "max_pool_gated"`` states the semantics (the pooled
    neuron takes the conv current at the first argmax of each window's accumulated charge, see
    :mod:`hwsim.spiking.conv`), and ``unpool{i}`` an opaque sub-graph with
    ``metadata["eqprop_hwsim_op"] = "max_unpool_routed"`` and ``indices_from = "pool{i}"``. A generic
    NIR consumer cannot run these two ops faithfully; the graph is therefore written without NIR's
    type check (``type_check=False``) and :func:`params_from_nir_conv` checks the structure itself.
    """
    from hwsim.spiking.conv import ConvSpikingParams

    if not isinstance(params, ConvSpikingParams):
        raise ValueError(f"params must be ConvSpikingParams, got {type(params).__name__}")
    cfg = params.config
    L = len(params.convs)
    nodes = {"input": nir.Input(input_type=np.array(params.convs[0].in_shape)),
             "output": nir.Output(output_type=np.array([params.out_bias.shape[0]]))}
    edges = []
    src = "input"
    for i, c in enumerate(params.convs):
        k, q = c.weight.shape[-1], c.pool
        nodes[f"conv{i}"] = nir.Conv2d(input_shape=tuple(c.in_shape[1:]), weight=c.weight.copy(), stride=1,
                                       padding=int(c.padding), dilation=1, groups=1, bias=c.bias.copy())
        nodes[f"pool{i}"] = nir.SumPool2d(kernel_size=np.array([q, q]), stride=np.array([q, q]), padding=np.array([0, 0]),
                                          metadata={"eqprop_hwsim_op": POOL_OP,
                                                    "select": "first argmax (row-major) of each window's accumulated charge"})
        nodes[f"if{i}"] = _conv_neuron(c.out_shape, cfg)
        edges += [(src, f"conv{i}"), (f"conv{i}", f"pool{i}"), (f"pool{i}", f"if{i}")]
        src = f"if{i}"
        if i > 0 and cfg.feedback != "none":
            nodes[f"unpool{i}"] = nir.NIRGraph(
                nodes={"input": nir.Input(np.array(c.out_shape)), "output": nir.Output(np.array([c.weight.shape[0], *c.conv_shape]))},
                edges=[], type_check=False,
                metadata={"eqprop_hwsim_op": UNPOOL_OP, "indices_from": f"pool{i}", "kernel_size": int(q)})
            flipped = np.ascontiguousarray(c.weight.transpose(1, 0, 2, 3)[:, :, ::-1, ::-1])
            nodes[f"fbconv{i - 1}"] = nir.Conv2d(input_shape=tuple(c.conv_shape), weight=flipped, stride=1,
                                                 padding=int(k - 1 - c.padding), dilation=1, groups=1,
                                                 bias=np.zeros(flipped.shape[0]))
            edges += [(f"if{i}", f"unpool{i}"), (f"unpool{i}", f"fbconv{i - 1}"), (f"fbconv{i - 1}", f"if{i - 1}")]
    last = params.convs[-1].out_shape
    nodes["flat"] = nir.Flatten(input_type={"input": np.array(last)}, start_dim=0)
    nodes["fc"] = nir.Affine(weight=params.out_weight.copy(), bias=params.out_bias.copy())
    nodes["if_out"] = _conv_neuron((params.out_bias.shape[0],), cfg)
    edges += [(src, "flat"), ("flat", "fc"), ("fc", "if_out"), ("if_out", "output")]
    if cfg.feedback != "none":
        nodes["fb_out"] = nir.Linear(weight=np.ascontiguousarray(params.out_weight.T),
                                     metadata={"reshape_to": np.array(last)})
        edges += [("if_out", "fb_out"), ("fb_out", f"if{L - 1}")]
    meta = {k: ("none" if v is None else v) for k, v in cfg.to_dict().items()}
    meta.update({"format": CONV_FORMAT, "n_conv": L})
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata=meta, type_check=False)


def write_nir_conv(path: str | os.PathLike, params, *, overwrite: bool = False) -> Path:
    """Write :func:`to_nir_conv` of ``params`` to ``path`` (HDF5); never replaces a file unless ``overwrite``."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise ValueError(f"{path} exists; pass overwrite=True to replace it or choose another path")
    nir.write(str(path), to_nir_conv(params))
    return path


def read_nir_conv(path: str | os.PathLike) -> nir.NIRGraph:
    """Read a graph written by :func:`write_nir_conv` (NIR's type check off: custom pooling ops)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"NIR file {path} does not exist")
    return nir.read(str(path), type_check=False)


def params_from_nir_conv(graph: nir.NIRGraph):
    """Rebuild :class:`hwsim.spiking.conv.ConvSpikingParams` from :func:`to_nir_conv`'s graph, checking
    every node type, the pooling ops' metadata, the feedback kernels (flipped ``W^T``, padding
    ``k-1-p``; ``fb_out == fc.weight.T``) and the edge set; ``ValueError`` naming the node otherwise."""
    from hwsim.spiking.conv import ConvLayer, ConvSpikingParams

    meta = {k: _scalar(v) for k, v in dict(graph.metadata).items()}
    if meta.pop("format", None) != CONV_FORMAT:
        raise ValueError(f"NIR graph was not written by exports.nir_export.to_nir_conv (metadata format != {CONV_FORMAT!r})")
    L = int(meta.pop("n_conv"))
    cfg = _config_from_meta(meta)

    def node(name, kind):
        n = graph.nodes.get(name)
        if not isinstance(n, kind):
            raise ValueError(f"NIR node {name!r} is {type(n).__name__ if n is not None else 'missing'}, "
                             f"expected {kind.__name__}")
        return n

    convs, shape = [], tuple(int(d) for d in np.asarray(node("input", nir.Input).input_type["input"]).ravel())
    expected, src = set(), "input"
    for i in range(L):
        cv = node(f"conv{i}", nir.Conv2d)
        pool = node(f"pool{i}", nir.SumPool2d)
        if _scalar(pool.metadata.get("eqprop_hwsim_op")) != POOL_OP:
            raise ValueError(f"NIR node 'pool{i}': metadata eqprop_hwsim_op != {POOL_OP!r} (a plain sum pool is not "
                             "this network's gated max pooling)")
        q = int(np.asarray(pool.kernel_size).ravel()[0])
        pad = int(np.asarray(cv.padding).ravel()[0])
        layer = ConvLayer(np.asarray(cv.weight, np.float64), np.asarray(cv.bias, np.float64), shape, pad, q)
        want = nir.IF if cfg.tau_mem_s is None else nir.LIF
        nrn = node(f"if{i}", want)
        if _uniform(nrn.v_threshold, "v_threshold", f"if{i}") != cfg.v_threshold:
            raise ValueError(f"NIR node 'if{i}': v_threshold differs from the graph metadata")
        convs.append(layer)
        expected |= {(src, f"conv{i}"), (f"conv{i}", f"pool{i}"), (f"pool{i}", f"if{i}")}
        if i > 0 and cfg.feedback != "none":
            un = node(f"unpool{i}", nir.NIRGraph)
            if _scalar(un.metadata.get("eqprop_hwsim_op")) != UNPOOL_OP or _scalar(un.metadata.get("indices_from")) != f"pool{i}":
                raise ValueError(f"NIR node 'unpool{i}': not the routed un-pooling of pool{i}")
            fb = node(f"fbconv{i - 1}", nir.Conv2d)
            k = layer.weight.shape[-1]
            flipped = layer.weight.transpose(1, 0, 2, 3)[:, :, ::-1, ::-1]
            if not np.array_equal(np.asarray(fb.weight), flipped) or int(np.asarray(fb.padding).ravel()[0]) != k - 1 - pad:
                raise ValueError(f"NIR node 'fbconv{i - 1}': not the transposed conv of conv{i} (flipped W^T, padding "
                                 f"k-1-p = {k - 1 - pad}): EqProp needs symmetric feedback")
            expected |= {(f"if{i}", f"unpool{i}"), (f"unpool{i}", f"fbconv{i - 1}"), (f"fbconv{i - 1}", f"if{i - 1}")}
        shape, src = layer.out_shape, f"if{i}"
    fc = node("fc", nir.Affine)
    node("flat", nir.Flatten)
    expected |= {(src, "flat"), ("flat", "fc"), ("fc", "if_out"), ("if_out", "output")}
    if cfg.feedback != "none":
        if not np.array_equal(np.asarray(node("fb_out", nir.Linear).weight), np.asarray(fc.weight).T):
            raise ValueError("NIR node 'fb_out': feedback weight is not fc.weight.T")
        expected |= {("if_out", "fb_out"), ("fb_out", f"if{L - 1}")}
    got = {tuple(e) for e in graph.edges}
    if got != expected:
        raise ValueError(f"NIR edges differ from the conv EqProp graph: missing {sorted(expected - got)}, "
                         f"unexpected {sorted(got - expected)}")
    return ConvSpikingParams(tuple(convs), np.asarray(fc.weight, np.float64), np.asarray(fc.bias, np.float64), cfg)

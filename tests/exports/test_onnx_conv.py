"""ONNX float graph of the conv EqProp model (models.conv.ConvPool) in onnxruntime against torch float32."""
import numpy as np
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper

from exports import export_onnx, read_metadata
from exports import verify as V
from models.conv import ConvConfig, ConvEqProp
from models.engine import UnsupportedError
from quant import get_preset
from quant.tolerances import BIT_EXACT

T = 6


def _net(update="async", padding=1, seed=0):
    hw = 9 if padding else 12   # 9x9 pad 1: ragged conv edge dropped by the pool; 12x12 pad 0 -> 5x5 -> 1x1
    cfg = ConvConfig(in_shape=(2, hw, hw), channels=(3, 4), kernel=3, padding=padding, pool=2, n_out=3,
                     update=update, init_gain=2.0)
    return ConvEqProp(cfg, seed=seed)


def _x(net, n=64, seed=1):
    return np.random.default_rng(seed).random((n, net.n_in)).astype(np.float32)


@pytest.mark.parametrize("update,padding", [("async", 1), ("sync", 1), ("async", 0)])
@pytest.mark.parametrize("loop", [False, True])
def test_conv_float_graph_matches_torch_float32(update, padding, loop):
    net = _net(update, padding)
    m = export_onnx(net, get_preset("fp32"), fmt="float", n_steps=T, loop=loop)
    ops = {n.op_type for n in m.graph.node} | {n.op_type for a in m.graph.node for at in a.attribute
                                               if at.g is not None for n in at.g.node}
    assert {"Conv", "MaxPool", "MaxUnpool", "ConvTranspose", "Reshape"} <= ops
    x = _x(net)
    r = V.verify_float(net, m, x)
    assert r["states_allclose"] and r["argmax_agreement"] == 1.0 and r["passed"], r   # max err ~2e-6
    states, _ = V.torch_free_phase(net, x, T)
    assert min(float(s.std()) for s in states) > 0.05   # the states really moved
    assert "ConvPool" in " ".join(read_metadata(m)["model"]["terms"])


def test_conv_float_graph_detects_a_wrong_weight():
    net = _net()
    m = export_onnx(net, get_preset("fp32"), fmt="float", n_steps=T)
    assert not V.verify_float(_net(seed=5), m, _x(net))["passed"]


def test_onnxruntime_maxpool_indices_and_maxunpool_route_like_torch_on_ties():
    """Exact ties (integer values, all-equal windows): ORT MaxPool Indices (flat over N C H W) +
    MaxUnpool route each pooled unit to the first maximum in row-major order, as torch does."""
    g = np.random.default_rng(0)
    y = g.integers(0, 3, (2, 3, 6, 7)).astype(np.float32)   # many ties; width 7: ragged column
    y[0, 0, :2, :2] = 1.0                                     # an all-equal window
    post = g.random((2, 3, 3, 3)).astype(np.float32)
    kw = {"kernel_shape": [2, 2], "strides": [2, 2]}
    nodes = [helper.make_node("MaxPool", ["y"], ["p", "idx"], **kw), helper.make_node("Shape", ["y"], ["shp"]),
             helper.make_node("MaxUnpool", ["post", "idx", "shp"], ["u"], **kw)]
    vi = lambda n, s: helper.make_tensor_value_info(n, TensorProto.FLOAT, s)  # noqa: E731
    graph = helper.make_graph(nodes, "route", [vi("y", y.shape), vi("post", post.shape)],
                              [vi("p", post.shape), vi("u", y.shape)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    p, u = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(
        None, {"y": y, "post": post})
    tp, ti = torch.nn.functional.max_pool2d(torch.from_numpy(y), 2, return_indices=True)
    tu = torch.nn.functional.max_unpool2d(torch.from_numpy(post), ti, 2, output_size=y.shape[-2:])
    np.testing.assert_allclose(p, tp.numpy(), **BIT_EXACT)
    np.testing.assert_allclose(u, tu.numpy(), **BIT_EXACT)
    assert u[0, 0, 0, 0] == post[0, 0, 0, 0] and not u[0, 0, :2, :2].ravel()[1:].any()


@pytest.mark.parametrize("fmt", ["qdq", "int"])
def test_conv_integer_formats_refuse_until_the_integer_conv_semantics(fmt):
    with pytest.raises(UnsupportedError, match=rf"'onnx {fmt}'.*ConvPool"):
        export_onnx(_net(), get_preset("int8"), fmt=fmt, n_steps=2)

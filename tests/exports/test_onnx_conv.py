"""ONNX float graph of the conv EqProp model (models.conv.ConvPool) in onnxruntime against torch float32."""
import numpy as np
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper

from exports import export_onnx, read_metadata
from exports import verify as V
from models.conv import ConvConfig, ConvEqProp
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


# ------------------------------------------------------------------------------ QDQ conv graph
@pytest.mark.parametrize("preset", ["int8", "int4", "ternary"])
@pytest.mark.parametrize("update,padding", [("async", 1), ("sync", 0)])
def test_conv_qdq_graph_matches_the_fake_quant_path(preset, update, padding):
    """QDQ conv graph (unrolled and Loop) == models.qat.qat_relax on ConvEqProp: measured 0 LSB on every
    state (the conv runs on the integer grid, exact in float32), argmax 100 %."""
    net = _net(update, padding)
    x = _int_x(net, 96)
    ref = V.fake_quant_free_phase(net, get_preset(preset), x, T)
    for loop in (False, True):
        m = export_onnx(net, get_preset(preset), fmt="qdq", n_steps=T, loop=loop)
        assert {"Conv", "MaxPool", "MaxUnpool", "ConvTranspose", "DequantizeLinear", "QuantizeLinear"} <= _ops(m)
        r = V.verify_qdq(net, m, x, reference=ref)
        assert r["max_out_lsb"] <= 1 and r["argmax_agreement"] >= 0.999 and r["passed"], r
    assert min(float(s_.std()) for s_ in ref[0]) > 0.02


def test_conv_qdq_graph_is_quantised_and_a_wrong_weight_is_caught():
    net = _net()
    x = _int_x(net, 96)
    m = export_onnx(net, get_preset("int4"), fmt="qdq", n_steps=T)
    states, _, _ = V.run_session(V.make_session(m)[0], x)
    ref, _ = V.torch_free_phase(net, x, T)
    assert max(float(np.abs(a - r).max()) for a, r in zip(states, ref)) > 1.5 * get_preset("int4").state.lsb
    assert all(np.array_equal(a * 128, np.round(a * 128)) for a in states)   # on the state grid
    r = V.verify_qdq(_net(seed=5), m, x, spec=get_preset("int4"))
    assert not r["passed"] and r["argmax_agreement"] < 0.999


# ------------------------------------------------------------------------------ integer conv graph
def _int_net(update="async", padding=1, pool=2, kernel=3, hw=9, gain=2.0, seed=0):
    cfg = ConvConfig(in_shape=(2, hw, hw), channels=(3, 4), kernel=kernel, padding=padding, pool=pool, n_out=3,
                     update=update, init_gain=gain)
    return ConvEqProp(cfg, seed=seed)


def _int_x(net, n=48, seed=1):
    x = _x(net, n, seed)
    x[: n // 4, : net.n_in // 2] = 0.0   # all-zero windows: integer ties everywhere (first-max rule)
    x[n // 4: n // 2] = np.round(x[n // 4: n // 2])   # binary images: many equal window values
    return x


def _ops(m):
    return {n.op_type for n in m.graph.node} | {n.op_type for a in m.graph.node for at in a.attribute
                                               if at.g is not None for n in at.g.node}


@pytest.mark.parametrize("preset", ["int8", "int4", "ternary"])
@pytest.mark.parametrize("rounding,overflow,update", [("nearest_even", "saturate", "async"),
                                                      ("floor", "wrap", "sync"), ("floor", "saturate", "async")])
def test_conv_int_graph_bit_exact_vs_fixed_point(preset, rounding, overflow, update):
    """ConvInteger (unrolled) and the Gather-im2col int64 MatMul (Loop) == FixedPointMLP's integer ConvPool,
    every state code and prediction; a narrow accumulator so that saturate / wrap really happen."""
    from hwsim.fixed_point import FixedPointMLP

    net = _int_net(update)
    spec = get_preset(preset).replace(rounding=rounding, overflow=overflow, acc_bits=11 if preset == "int8" else 8)
    fp = FixedPointMLP.from_model(net, spec)
    codes = fp.quantize_input(_int_x(net))
    ref, info = fp.relax(codes, n_steps=T, early_exit=False)
    assert info.n_overflow.sum() > 0, "the test must exercise the overflow path"
    assert min(int(r.max()) for r in ref) > 0   # every layer active
    for loop, matmul, op in ((False, "auto", "ConvInteger"), (True, "int64", "Gather")):
        m = export_onnx(net, spec, fmt="int", n_steps=T, loop=loop, matmul=matmul)
        assert op in _ops(m)
        r = V.verify_int(net, m, codes, reference=(ref, ref[-1].argmax(axis=1), 0.0))
        assert r["state_mismatches"] == 0 and r["prediction_mismatches"] == 0 and r["passed"], r


@pytest.mark.parametrize("padding,pool,kernel,hw", [(0, 2, 3, 12), (2, 3, 5, 11), (0, 1, 2, 6), (1, 2, 3, 14)])
def test_conv_int_graph_geometries_and_ties(padding, pool, kernel, hw):
    """Ragged edges (floor-mode pooling), pool 3, pool 1 (no routing), wide padding; preset accumulator."""
    from hwsim.fixed_point import FixedPointMLP

    net = _int_net(padding=padding, pool=pool, kernel=kernel, hw=hw)
    spec = get_preset("int8")
    fp = FixedPointMLP.from_model(net, spec)
    codes = fp.quantize_input(_int_x(net))
    for loop, matmul in ((False, "integer"), (True, "int64")):
        r = V.verify_int(fp, export_onnx(net, spec, fmt="int", n_steps=T, loop=loop, matmul=matmul), codes)
        assert r["int_graph_mismatches"] == 0 and r["passed"], r


def test_conv_int_graph_is_integer_only_and_first_max_routing_matters():
    """No float op or initializer; routing with the LAST maximum instead (a broken tie rule) is caught."""
    from hwsim.fixed_point import FixedPointMLP

    net = _int_net(seed=3)   # a net whose hidden routing meets ties with non-zero post codes (measured)
    spec = get_preset("int8")
    m = export_onnx(net, spec, fmt="int", n_steps=T)
    assert "ConvInteger" in _ops(m) and not _ops(m) & {"Conv", "MaxPool", "MatMul", "Gemm", "DequantizeLinear"}
    float_types = {TensorProto.FLOAT, TensorProto.DOUBLE, TensorProto.FLOAT16}
    assert not [t.name for t in m.graph.initializer if t.data_type in float_types]
    codes = FixedPointMLP.from_model(net, spec).quantize_input(_int_x(net))
    assert V.verify_int(net, m, codes)["passed"]
    for n in m.graph.node:
        if n.op_type == "ArgMax":
            for a in n.attribute:
                if a.name == "select_last_index":
                    a.i = 1
    r = V.verify_int(net, m, codes)
    assert r["state_mismatches"] > 0 and not r["passed"]


def test_conv_int_graph_on_mnist_digits():
    from hwsim.fixed_point import FixedPointMLP
    from tracks.data import load_dataset

    x, _ = load_dataset("mnist", "test")
    net = ConvEqProp(ConvConfig(channels=(4, 6), kernel=5, init_gain=2.0), seed=0)
    fp = FixedPointMLP.from_model(net, get_preset("int8"))
    r = V.verify_int(fp, export_onnx(net, get_preset("int8"), fmt="int", n_steps=8, loop=True), x[:64])
    assert r["int_graph_mismatches"] == 0 and r["passed"], r


@pytest.mark.parametrize("in_shape,c_out,k,p,q", [((4, 12, 12), 6, 5, 0, 2), ((3, 9, 7), 2, 3, 1, 3),
                                                  ((2, 6, 6), 3, 2, 0, 1)])
@pytest.mark.parametrize("use_int", [False, True])
def test_int_conv_blocks_equal_the_numba_primitives(in_shape, c_out, k, p, q, use_int):
    """The graph's pooled accumulator and transposed-conv feedback == the float64 torch conv / max-pool
    (first-max ties) / unpool / transposed conv on integer values (exact), random codes with many ties
    (pooled maps wider than the window: Hp, Wp != q)."""
    import exports.onnx_export as ox
    from hwsim.fixed_point import ConvGeometry
    from models.conv import ConvPool, ConvPoolFloat

    rs = np.random.default_rng(k + q)
    geo = ConvGeometry(in_shape, c_out, k, p, q)
    wq = rs.integers(-127, 128, (c_out, in_shape[0], k, k))
    fq = rs.integers(-127, 128, (in_shape[0], c_out, k, k))
    pre = rs.choice([0, 0, 1, 128], size=(5, geo.n_in))
    pre[:2, : geo.n_in // 2] = 0
    post = rs.integers(0, 129, (5, geo.n_out))
    g = ox._Builder()
    wt = TensorProto.INT8 if use_int else TensorProto.INT64

    def weight(name, mat):
        return g.op("Cast", [g.const(name, np.asarray(mat, np.int8 if use_int else np.int64))], to=wt)

    c = ox._IntConv(g, "cv", geo, wq, fq, use_int, weight)
    f, b = c.forward(g, "pre", "f"), c.feedback(g, "post", "pre", "b")
    vi = lambda n: helper.make_tensor_value_info(n, TensorProto.INT64, None)  # noqa: E731
    graph = helper.make_graph(g.nodes + [helper.make_node("Identity", [f], ["F"]),
                                         helper.make_node("Identity", [b], ["Bk"])],
                              "blk", [vi("pre"), vi("post")], [vi("F"), vi("Bk")], g.inits)
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", ox.OPSET)])
    m.ir_version = ox.IR_VERSION
    got_f, got_b = V.make_session(m)[0].run(None, {"pre": pre, "post": post})
    t = ConvPool(post=1, pre=0, weight="w", bias=None, in_shape=in_shape, kernel=k, padding=p, pool=q)
    W = torch.tensor(wq, dtype=torch.float64)
    pre_t, post_t = torch.tensor(pre, dtype=torch.float64), torch.tensor(post, dtype=torch.float64)
    np.testing.assert_array_equal(got_f, ConvPoolFloat.drive_of(t, W, None, pre_t).numpy())
    u = ConvPoolFloat._route(t, W, pre_t, post_t)
    fb = torch.nn.functional.conv_transpose2d(u, torch.tensor(fq.transpose(1, 0, 2, 3).copy(), dtype=torch.float64),
                                              padding=p)
    np.testing.assert_array_equal(got_b, fb.flatten(1).numpy())

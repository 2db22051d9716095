"""ONNX exports run in real onnxruntime sessions against torch and the numba fixed-point simulator."""
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from exports import export_command, export_onnx, read_metadata, read_spec
from exports import onnx_export as ox
from exports import verify as V
from hwsim.fixed_point import FixedPointMLP
from models.checkpoint import save_checkpoint
from models.eqprop_mlp import EqPropConfig, EqPropMLP
from quant import ops
from quant import get_preset, list_presets
from quant.tolerances import BIT_EXACT

SIZES = (20, 12, 8, 5)  # three layers: the middle one has both a forward and a feedback product
T = 6


def _net(update="async", gain=1.0, seed=0):
    return EqPropMLP(EqPropConfig(sizes=SIZES, update=update, init_gain=gain), seed=seed)


def _x(n=64, seed=1):
    return np.random.default_rng(seed).random((n, SIZES[0]), dtype=np.float64).astype(np.float32)


def _session(model):
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


# ------------------------------------------------------------------------------------ float
@pytest.mark.parametrize("update", ["async", "sync"])
@pytest.mark.parametrize("loop", [False, True])
def test_float_graph_matches_torch_float32(update, loop):
    net = _net(update)
    r = V.verify_float(net, export_onnx(net, get_preset("fp32"), fmt="float", n_steps=T, loop=loop), _x())
    assert r["states_allclose"] and r["argmax_agreement"] == 1.0 and r["passed"], r
    # the states really moved away from the zero start (a graph that returns zeros would fail above)
    states, _ = V.torch_free_phase(net, _x(), T)
    assert states[-1].std() > 0.05


def test_float_graph_detects_a_wrong_weight():
    net = _net()
    m = export_onnx(net, get_preset("fp32"), fmt="float", n_steps=T)
    other = _net(seed=5)
    assert not V.verify_float(other, m, _x())["passed"]


# -------------------------------------------------------------------------------------- qdq
@pytest.mark.parametrize("preset, container", [("int8", TensorProto.INT8), ("int4", TensorProto.INT4),
                                               ("ternary", TensorProto.INT4)])
@pytest.mark.parametrize("loop", [False, True])
def test_qdq_graph_matches_fake_quant_torch(preset, container, loop):
    net = _net()
    m = export_onnx(net, get_preset(preset), fmt="qdq", n_steps=T, loop=loop)
    codes = [t for t in m.graph.initializer if t.name.startswith("Wq_")]
    assert [t.data_type for t in codes] == [container] * (3 + 2)  # 3 forward arrays, 2 feedback arrays (W^T)
    if container == TensorProto.INT4:  # packed: two codes a byte
        assert all(len(t.raw_data) == (int(np.prod(t.dims)) + 1) // 2 for t in codes)
    r = V.verify_qdq(net, m, _x(256))
    assert r["max_out_lsb"] <= V.QDQ_MAX_LSB and r["argmax_agreement"] >= V.QDQ_MIN_ARGMAX and r["passed"], r
    # states are on the fixed-point grid: QuantizeLinear/DequantizeLinear really ran
    states = _session(m).run(None, {"x": _x(256)})[:-1]
    lsb = get_preset(preset).state.lsb
    assert all(np.array_equal(s / lsb, np.rint(s / lsb)) for s in states)


def test_qdq_differs_from_float_model():
    """The QDQ graph is not the float graph in disguise: int4 quantisation changes the states."""
    net = _net()
    m = export_onnx(net, get_preset("int4"), fmt="qdq", n_steps=T)
    s_q = _session(m).run(None, {"x": _x()})[-2]
    s_f, _ = V.torch_free_phase(net, _x(), T)
    assert np.abs(s_q - s_f[-1]).max() > 2 * get_preset("int4").state.lsb


# ------------------------------------------------------------------------------ integer graph
def _small_acc(preset, acc_bits, rounding, overflow):
    return get_preset(preset).replace(acc_bits=acc_bits, rounding=rounding, overflow=overflow)


@pytest.mark.parametrize("preset", ["int8", "int4", "ternary"])
@pytest.mark.parametrize("rounding", ["nearest_even", "floor"])
@pytest.mark.parametrize("overflow", ["saturate", "wrap"])
def test_int_graph_bit_exact_vs_fixed_point(preset, rounding, overflow):
    # a narrow accumulator so that saturate/wrap really happen
    spec = _small_acc(preset, 12 if preset == "int8" else 10, rounding, overflow)
    net = _net(gain=3.0)
    fp = FixedPointMLP.from_model(net, spec)
    codes = fp.quantize_input(_x(128))
    _, info = fp.relax(codes, n_steps=T, early_exit=False)
    assert info.n_overflow.sum() > 0, "test must exercise the overflow path"
    for loop, matmul in ((False, "auto"), (True, "int64")):
        m = export_onnx(net, spec, fmt="int", n_steps=T, loop=loop, matmul=matmul)
        r = V.verify_int(net, m, codes)
        assert r["state_mismatches"] == 0 and r["prediction_mismatches"] == 0 and r["passed"], r


@pytest.mark.parametrize("update", ["async", "sync"])
def test_int_graph_preset_states_equal_simulator(update):
    spec = get_preset("int8")
    net = _net(update)
    fp = FixedPointMLP.from_model(net, spec)
    codes = fp.quantize_input(_x())
    ref, _ = fp.relax(codes, n_steps=T)
    outs = _session(export_onnx(net, spec, fmt="int", n_steps=T, loop=True)).run(None, {"x_codes": codes})
    for a, r in zip(outs[:-1], ref):
        np.testing.assert_allclose(a, r, **BIT_EXACT)
    assert outs[0].dtype == np.int64 and 0 < outs[0].max() <= 128
    np.testing.assert_array_equal(outs[-1], ref[-1].argmax(axis=1))


def test_int_graph_uses_integer_ops_only():
    m = export_onnx(_net(), get_preset("int8"), fmt="int", n_steps=2, matmul="integer")
    ops_used = {n.op_type for n in m.graph.node}
    assert "MatMulInteger" in ops_used and not ops_used & {"MatMul", "Gemm", "QuantizeLinear", "DequantizeLinear"}
    float_types = {TensorProto.FLOAT, TensorProto.DOUBLE, TensorProto.FLOAT16}
    assert not [t.name for t in m.graph.initializer if t.data_type in float_types]


@pytest.mark.parametrize("broken", ["floor", "nearest_even"])
def test_int_graph_with_other_rounding_is_caught(broken):
    """A graph whose requantisation rounds differently from the spec must show mismatches."""
    spec = get_preset("int4").replace(rounding="floor" if broken == "nearest_even" else "nearest_even")
    net = _net()
    m = ox.build_int_model(net, spec, T, False, rounding=broken)
    r = V.verify_int(net, m, _x())
    assert r["int_graph_mismatches"] > 0 and not r["passed"]


# ------------------------------------------------------ integer building blocks, exhaustively
def _run_block(build, x):
    g = ox._Builder()
    for name, v in (("i64_one", 1), ("i64_two", 2)):
        g.const(name, np.array(v, np.int64))
    out = build(g, "v")
    graph = helper.make_graph(g.nodes + [helper.make_node("Identity", [out], ["y"])], "blk",
                              [helper.make_tensor_value_info("v", TensorProto.INT64, [None, None])],
                              [helper.make_tensor_value_info("y", TensorProto.INT64, [None, None])], g.inits)
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", ox.OPSET)])
    m.ir_version = ox.IR_VERSION
    return _session(m).run(None, {"v": x})[0]


@pytest.mark.parametrize("rounding", ["nearest_even", "floor"])
def test_requantize_block_equals_quant_ops(rounding):
    acc = np.arange(-4096, 4097, dtype=np.int64)
    pairs = [(1, 0), (1, 1), (1, 3), (3, 2), (-5, 4), (1_518_500_250, 31), (7, -2), (2**30, 40)]
    mult = np.array([p[0] for p in pairs], np.int64)
    shift = np.array([p[1] for p in pairs], np.int64)
    x = np.repeat(acc[:, None], len(pairs), axis=1)
    got = _run_block(lambda g, v: ox._requantize(g, v, ox._requant_consts(g, "rq", mult, shift), rounding, "t"), x)
    for j, (m, s) in enumerate(pairs):
        np.testing.assert_array_equal(got[:, j], ops.requantize(acc, m, s, rounding), err_msg=f"pair {(m, s)}")


@pytest.mark.parametrize("mode", ["saturate", "wrap"])
def test_overflow_block_equals_quant_ops(mode):
    bits = 8
    x = np.arange(-700, 700, dtype=np.int64)[:, None]

    def build(g, v):
        hi = 2 ** (bits - 1) - 1
        for name, val in (("acc_lo", -hi - 1), ("acc_hi", hi), ("acc_half", hi + 1), ("acc_mod", 2 * (hi + 1))):
            g.const(name, np.array(val, np.int64))
        return ox._overflow(g, v, bits, mode, "t")

    np.testing.assert_array_equal(_run_block(build, x)[:, 0], ops.overflow(x[:, 0], bits, True, mode))


@pytest.mark.parametrize("signed", [True, False])
def test_packed_4bit_round_trip_every_code(signed):
    codes = np.arange(-8, 8) if signed else np.arange(16)
    for arr in (codes.reshape(4, 4), codes[:15].reshape(3, 5)):  # even and odd element counts
        t = ox._packed_4bit("w", arr, signed)
        onnx.checker.check_tensor(t)
        np.testing.assert_array_equal(numpy_helper.to_array(t).astype(np.int64), arr)
    with pytest.raises(ValueError, match="cannot be stored"):
        ox._packed_4bit("w", np.array([8 if signed else 16]), signed)


# ---------------------------------------------------------------------- metadata, files, errors
@pytest.mark.parametrize("preset", list_presets())
def test_spec_round_trips_through_the_file(tmp_path, preset):
    spec = get_preset(preset)
    fmt = "float" if spec.weights.is_float or spec.analog is not None else "int"
    path = tmp_path / f"{preset}.onnx"
    export_onnx(_net(), spec, path, fmt=fmt, n_steps=3, loop=True)
    assert read_spec(path) == spec
    meta = read_metadata(path)
    assert (meta["format"], meta["n_steps"], meta["loop"], meta["model"]["sizes"]) == (fmt, 3, True, list(SIZES))


def test_existing_file_is_never_overwritten(tmp_path):
    path = tmp_path / "m.onnx"
    path.write_bytes(b"precious")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        export_onnx(_net(), get_preset("int8"), path, fmt="int", n_steps=2)
    assert path.read_bytes() == b"precious"
    export_onnx(_net(), get_preset("int8"), path, fmt="int", n_steps=2, overwrite=True)
    assert read_spec(path) == get_preset("int8")


@pytest.mark.parametrize("spec, fmt, n_steps, match", [
    (get_preset("int8").replace(rounding="stochastic"), "int", 3, "stochastic"),
    (get_preset("int8").replace(rounding="stochastic"), "qdq", 3, "stochastic"),
    (get_preset("fp32"), "int", 3, "float weights"),
    (get_preset("analog_pcm"), "qdq", 3, "analog"),
    (get_preset("int8").replace(rounding="floor"), "qdq", 3, "QuantizeLinear"),
    (get_preset("int8"), "int", 0, "n_steps"),
    (get_preset("int8"), "int", 2.5, "n_steps"),
    (get_preset("int8"), "onnx", 3, "fmt"),
])
def test_unsupported_combinations_raise_clear_errors(spec, fmt, n_steps, match):
    with pytest.raises(ValueError, match=match):
        export_onnx(_net(), spec, fmt=fmt, n_steps=n_steps)


def test_matmul_integer_refused_when_int32_could_overflow():
    spec = get_preset("int8").replace(weights=get_preset("int8").weights.__class__("int", bits=12))
    with pytest.raises(ValueError, match="matmul='int64'"):
        export_onnx(_net(), spec, fmt="int", n_steps=2, matmul="integer")
    r = V.verify_int(_net(), export_onnx(_net(), spec, fmt="int", n_steps=T), _x())
    assert r["passed"], r


def test_read_spec_rejects_foreign_files(tmp_path):
    m = export_onnx(_net(), get_preset("int8"), fmt="float", n_steps=1)
    del m.metadata_props[:]
    path = tmp_path / "foreign.onnx"
    onnx.save(m, str(path))
    with pytest.raises(ValueError, match="metadata"):
        read_spec(path)
    with pytest.raises(ValueError, match="does not exist"):
        read_spec(tmp_path / "missing.onnx")


def test_export_command_from_checkpoint(tmp_path):
    net = _net()
    ckpt = save_checkpoint(tmp_path / "net.pt", net)
    out = export_command(ckpt, "int8", tmp_path / "model.onnx", "int", T, False)
    assert read_spec(out) == get_preset("int8")
    r = V.verify_int(net, out, _x())
    assert r["passed"], r
    with pytest.raises(FileExistsError):
        export_command(ckpt, "int8", out, "int", T, False)
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(get_preset("int4").to_json())
    export_command(ckpt, spec_file, out, "qdq", T, True)
    assert read_spec(out) == get_preset("int4")
    with pytest.raises(ValueError, match="unknown"):
        export_command(ckpt, "int9", tmp_path / "x.onnx", "int", T, False)


# ------------------------------------------------------------- a second energy model (terms -> handlers)
def _skip_net(seed=0):
    from models.skip_mlp import SkipEqPropMLP
    return SkipEqPropMLP(EqPropConfig(sizes=SIZES), seed=seed)


@pytest.mark.parametrize("loop", [False, True])
def test_skip_model_exports_and_verifies_in_every_format(loop):
    net, x = _skip_net(), _x(128)
    mf = export_onnx(net, get_preset("fp32"), fmt="float", n_steps=T, loop=loop)
    r = V.verify_float(net, mf, x)
    assert r["passed"], r
    assert "skip.weight" in str(read_metadata(mf)["model"]["terms"])
    # the skip term is in the graph: the plain MLP with the same layers gives other states
    mlp_states, _ = V.torch_free_phase(_net(), x, T)
    assert np.abs(_session(mf).run(None, {"x": x})[-2] - mlp_states[-1]).max() > 1e-3
    for preset in ("int8", "ternary"):
        spec = get_preset(preset)
        mi = export_onnx(net, spec, fmt="int", n_steps=T, loop=loop)
        ri = V.verify_int(net, mi, x)
        assert ri["int_graph_mismatches"] == 0 and ri["passed"], ri
        assert any(t.name.startswith("Eq_") for t in mi.graph.initializer)  # the skip array
        # QDQ graph: the simulator's semantics in float ops (qat_relax has no extra-term kernel yet,
        # so the simulator is the reference here): states on the grid, within the QDQ tolerance
        fp = FixedPointMLP.from_model(net, spec)
        ref, ref_p, _ = V.simulate_int(fp, fp.quantize_input(x.astype(np.float64)), T)
        mq = export_onnx(net, spec, fmt="qdq", n_steps=T, loop=loop)
        states, pred, _ = V.run_session(_session(mq), x)
        d = max(np.abs(s / spec.state.lsb - r).max() for s, r in zip(states, ref))
        assert d <= V.QDQ_MAX_LSB and (pred == ref_p).mean() >= V.QDQ_MIN_ARGMAX, (preset, d)


def test_qdq_graph_follows_the_simulator_rules():
    """QDQ = qat_relax = simulator: quantised biases, per-term rounding, own feedback arrays; on this
    net the states equal the simulator's codes (a graph with float biases would drift)."""
    net, x = _net(), _x(128)
    spec = get_preset("int4")
    fp = FixedPointMLP.from_model(net, spec)
    ref, _, _ = V.simulate_int(fp, fp.quantize_input(x.astype(np.float64)), T)
    states, _, _ = V.run_session(_session(export_onnx(net, spec, fmt="qdq", n_steps=T)), x)
    diff = sum(int((np.rint(s / spec.state.lsb) != r).sum()) for s, r in zip(states, ref))
    assert diff <= 0.001 * sum(r.size for r in ref), diff
    assert any(t.name.startswith("bq_") and t.data_type == TensorProto.INT32 for t in
               export_onnx(net, spec, fmt="qdq", n_steps=T).graph.initializer)


@pytest.mark.parametrize("fmt, preset", [("float", "fp32"), ("qdq", "int8"), ("int", "int8")])
def test_unsupported_term_raises_naming_backend_term_and_supported(fmt, preset):
    from dataclasses import dataclass

    from models.engine import UnsupportedError

    @dataclass(frozen=True)
    class Attention:
        node: int

        @property
        def nodes(self):
            return (self.node,)

    net = _net()
    net.terms = net.terms + [Attention(node=1)]
    with pytest.raises(UnsupportedError, match=r"Attention\(node=1\).*Bias, (ConvPool, )?Dense"):
        export_onnx(net, get_preset(preset), fmt=fmt, n_steps=2)

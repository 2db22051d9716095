"""ONNX graphs of an energy model's inference (:class:`~models.eqprop_mlp.EqPropMLP`,
:class:`~models.skip_mlp.SkipEqPropMLP`, ...) under a :class:`~quant.HardwareSpec`.

Inference is the free phase: ``T`` sweeps of the dynamics from the zero state, then
``prediction = argmax(s_out)`` (first index on ties, like ``torch.argmax`` and ``np.argmax``).
One sweep runs the model's update groups (``net.schedule()``: for the MLP, async = even layers
``0, 2, ...`` then odd ones; sync = all from the old state); node ``i`` becomes
``clamp(dPhi/ds_i, 0, 1)``, for the MLP::

    s_i <- clamp(W_i s_{i-1} + b_i + W_{i+1}^T s_{i+1}, 0, 1)      # s_{-1} = x, no W_{L} term for the output

Each interaction term is built by a handler found through a table keyed by its type (like
Brevitas' export handler per op): :data:`FLOAT_HANDLERS` for the ``float`` and ``qdq`` graphs
(``Dense``: ``Gemm`` forward into ``post`` and transposed into ``pre``; ``Bias``; ``ConvPool``:
``Conv``/``MaxPool`` forward, ``MaxPool`` indices + ``MaxUnpool`` + ``ConvTranspose`` feedback,
:class:`ConvPoolOnnx`), the integer lowering of :data:`hwsim.fixed_point.INT_KERNELS` for ``int``
(``ConvPool``: ``ConvInteger`` or Gather-im2col int64 ``MatMul``, integer window pooling with the
first-max ``ArgMax``, :class:`_IntConv`). A term type without a handler
raises :class:`models.engine.UnsupportedError` naming the format, the term and what is supported.
Static (input-only) contributions are computed once, outside the sweeps.

Formats (``fmt``):

* ``"float"`` -- float32 weights and states; any spec (the spec only travels in the metadata).
* ``"qdq"``   -- the graph form of the one fake-quant path :func:`models.qat.qat_relax` (the
  simulator's rules in float ops): weights as integer codes + scale through ``DequantizeLinear``
  (opset 21; containers ``spec.weights.onnx_storage_bits``: INT8, INT4 packed two codes a byte,
  ternary codes ``{-1, 0, 1}`` as INT4), feedback arrays ``W^T`` quantised as their own tensors,
  biases as int32 codes on the accumulator grid (:func:`quant.bias_codes`), every term rounded to
  the state LSB (``Round``, half to even), ``Clip``; the input and every state pass through
  ``QuantizeLinear -> DequantizeLinear`` in the spec's state format (scale ``2**-frac_bits``, zero
  point 0). Needs ``spec.rounding == "nearest_even"``.
* ``"int"``   -- integer only (int64 tensors, ``MatMul``/``MatMulInteger``/``ConvInteger``, ``Mod``, ``Clip``):
  the integer semantics of :class:`hwsim.fixed_point.FixedPointMLP`, bit for bit, extra terms
  (a skip coupling) included (see :func:`build_int_model`).

The sweeps are unrolled ``T`` times (``loop=False``) or run by an ONNX ``Loop`` whose body is one
sweep (``loop=True``); weights live in the outer graph either way.

>>> import onnxruntime as ort, numpy as np, torch
>>> from models.eqprop_mlp import EqPropMLP, EqPropConfig
>>> from quant import get_preset
>>> net = EqPropMLP(EqPropConfig(sizes=(6, 5, 3)), seed=0)
>>> m = export_onnx(net, get_preset("int8"), fmt="qdq", n_steps=4, loop=True)
>>> sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
>>> s0, s1, pred = sess.run(None, {"x": np.full((2, 6), 0.5, np.float32)})
>>> s1.shape, pred.dtype.name, bool((s1 * 128 == np.round(s1 * 128)).all())   # states on the 2**-7 grid
((2, 3), 'int64', True)
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Callable

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper

from models.energy import INPUT, Bias, Dense, EnergyModel
from models.engine import UnsupportedError, require_kernels
from models.eqprop_mlp import EqPropMLP
from quant import HardwareSpec, bias_codes, bias_lsb, get_preset, quantize_weights

from .metadata import write_metadata

log = logging.getLogger("eqprop_hwsim.exports")

FORMATS = ("float", "qdq", "int")
OPSET = 21
IR_VERSION = 10
INPUT_FLOAT = "x"
INPUT_CODES = "x_codes"
PREDICTION = "prediction"


def state_name(i: int) -> str:
    """Name of the graph output holding state ``i`` (0-based; the last is the output layer)."""
    return f"state_{i}"


# --------------------------------------------------------------------------- graph builder
class _Builder:
    """Collects nodes and initializers of one (sub)graph; every helper returns the output name."""

    def __init__(self, prefix: str = ""):
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.prefix = prefix
        self._n = 0

    def fresh(self, stem: str) -> str:
        self._n += 1
        return f"{self.prefix}{stem}_{self._n}"

    def op(self, op_type: str, inputs: list[str], stem: str | None = None, n_out: int = 1, **attrs):
        outs = [self.fresh(stem or op_type.lower()) for _ in range(n_out)]
        self.nodes.append(helper.make_node(op_type, inputs, outs, name=self.fresh("n_" + op_type), **attrs))
        return outs[0] if n_out == 1 else outs

    def const(self, name: str, array: np.ndarray) -> str:
        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def add_init(self, tensor: onnx.TensorProto) -> str:
        self.inits.append(tensor)
        return tensor.name


def _packed_4bit(name: str, codes: np.ndarray, signed: bool) -> onnx.TensorProto:
    """INT4/UINT4 initializer, two codes a byte (low nibble first, as ONNX stores 4-bit types)."""
    flat = np.asarray(codes, dtype=np.int64).ravel()
    lo, hi = (-8, 7) if signed else (0, 15)
    if flat.size and (flat.min() < lo or flat.max() > hi):
        raise ValueError(f"{name}: codes outside [{lo}, {hi}] cannot be stored as {'INT4' if signed else 'UINT4'}")
    nib = (flat & 0xF).astype(np.uint8)
    if nib.size % 2:
        nib = np.concatenate([nib, np.zeros(1, np.uint8)])
    raw = (nib[0::2] | (nib[1::2] << 4)).astype(np.uint8).tobytes()
    return helper.make_tensor(name, TensorProto.INT4 if signed else TensorProto.UINT4, list(codes.shape), raw,
                              raw=True)


def _code_initializer(name: str, codes: np.ndarray, bits: int, signed: bool) -> onnx.TensorProto:
    """Integer codes in the smallest ONNX container of at least ``bits`` bits (4, 8, 16, 32)."""
    if bits <= 4:
        return _packed_4bit(name, codes, signed)
    for width, (st, ut) in ((8, (np.int8, np.uint8)), (16, (np.int16, np.uint16)), (32, (np.int32, np.uint32))):
        if bits <= width:
            return numpy_helper.from_array(np.asarray(codes).astype(st if signed else ut), name)
    raise ValueError(f"{name}: {bits}-bit codes have no ONNX QDQ container; allowed: bits <= 32")


def _zero_point(bits: int, signed: bool) -> tuple[int, np.dtype | None]:
    """ONNX element type of the container used for ``bits``-bit codes."""
    if bits <= 4:
        return (TensorProto.INT4 if signed else TensorProto.UINT4), None
    if bits <= 8:
        return (TensorProto.INT8 if signed else TensorProto.UINT8), (np.int8 if signed else np.uint8)
    if bits <= 16:
        return (TensorProto.INT16 if signed else TensorProto.UINT16), (np.int16 if signed else np.uint16)
    raise ValueError(f"{bits}-bit states have no ONNX QDQ container; allowed: bits <= 16 for fmt='qdq'")


# --------------------------------------------------------------------------- validation
def check_export_args(net, spec, fmt: str, n_steps: int) -> None:
    """Raise ``ValueError`` (with the fix) for every unsupported combination."""
    from hwsim.fixed_point import FixedPointMLP

    if not (isinstance(net, EnergyModel) or (fmt == "int" and isinstance(net, FixedPointMLP))):
        raise ValueError(f"net is a {type(net).__name__}; allowed: an energy model (models.eqprop_mlp.EqPropMLP, "
                         "models.skip_mlp.SkipEqPropMLP, ...) or a hwsim.fixed_point.FixedPointMLP for fmt='int'")
    if not isinstance(spec, HardwareSpec):
        raise ValueError(f"spec={spec!r} is invalid; allowed: a quant.HardwareSpec (e.g. quant.get_preset('int8'))")
    if fmt not in FORMATS:
        raise ValueError(f"fmt={fmt!r} is invalid; allowed: one of {FORMATS}")
    if isinstance(n_steps, bool) or not isinstance(n_steps, (int, np.integer)) or n_steps < 1:
        raise ValueError(f"n_steps={n_steps!r} is invalid; allowed: an int >= 1 (number of relaxation sweeps T)")
    if fmt == "float":
        return
    if spec.analog is not None:
        raise ValueError(f"spec {spec.name!r} is analog; allowed for fmt={fmt!r}: a digital spec "
                         "(export analog specs with fmt='float')")
    if spec.weights.is_float or spec.state is None:
        raise ValueError(f"spec {spec.name!r} has float weights or states; fmt={fmt!r} needs integer weights "
                         "and a fixed-point state format (use fmt='float', or a spec such as 'int8')")
    if spec.rounding == "stochastic":
        raise ValueError(f"spec.rounding='stochastic' is not expressible in ONNX (fmt={fmt!r}); allowed: "
                         "'nearest_even' or 'floor' (spec.replace(rounding='nearest_even'))")
    if fmt == "qdq" and spec.rounding != "nearest_even":
        raise ValueError(f"fmt='qdq' rounds states with QuantizeLinear (half to even); spec.rounding="
                         f"{spec.rounding!r} needs fmt='int', or spec.replace(rounding='nearest_even')")
    if fmt == "int" and spec.acc_bits is None:
        raise ValueError("fmt='int' needs spec.acc_bits (an integer accumulator); allowed: an int in [2, 32]")


# --------------------------------------------------------------------------- the relaxation
NodeFn = Callable[[_Builder, int, list[str]], str]
"""``node_fn(g, i, states) -> name``: the new state of node ``i`` from ``states``."""


def _sweep(g: _Builder, groups: list[list[int]], states: list[str], node_fn: NodeFn) -> list[str]:
    """One sweep: the model's update groups (``net.schedule()``) in turn, each node computed from the
    states at the start of its group (async: nodes of a group do not interact; sync: one group)."""
    s = list(states)
    for group in groups:
        src = list(s)
        for i in group:
            s[i] = node_fn(g, i, src)
    return s


def _relax(g: _Builder, node_sizes: tuple[int, ...], groups: list[list[int]], zeros: list[str], node_fn: NodeFn,
           n_steps: int, loop: bool, state_type: int) -> list[str]:
    """``n_steps`` sweeps from the states ``zeros``: unrolled into ``g`` or as one ONNX ``Loop`` node."""
    n = len(node_sizes)
    if not loop:
        s = zeros
        for _ in range(n_steps):
            s = _sweep(g, groups, s, node_fn)
        return s
    body = _Builder(prefix="body_")
    it, cond_in = "body_iter", "body_cond_in"
    s_in = [f"body_state_in_{i}" for i in range(n)]
    s_out = _sweep(body, groups, s_in, node_fn)
    s_out = [body.op("Identity", [t], stem=f"body_state_out_{i}") for i, t in enumerate(s_out)]
    cond_out = body.op("Identity", [cond_in], stem="body_cond_out")
    vi = lambda name, dims: helper.make_tensor_value_info(name, state_type, dims)  # noqa: E731
    graph = helper.make_graph(
        body.nodes, "sweep",
        [helper.make_tensor_value_info(it, TensorProto.INT64, []),
         helper.make_tensor_value_info(cond_in, TensorProto.BOOL, [])] + [vi(s_in[i], ["B", node_sizes[i]]) for i in range(n)],
        [helper.make_tensor_value_info(cond_out, TensorProto.BOOL, [])] + [vi(s_out[i], ["B", node_sizes[i]]) for i in range(n)],
        body.inits)
    trip = g.const("loop_trip_count", np.array(n_steps, dtype=np.int64))
    return g.op("Loop", [trip, ""] + zeros, stem="loop_state", n_out=n, body=graph) if n > 1 else \
        [g.op("Loop", [trip, ""] + zeros, stem="loop_state", body=graph)]


def _zero_states(g: _Builder, x: str, node_sizes: tuple[int, ...], dtype: np.dtype) -> list[str]:
    """``(B, n_i)`` zeros for every state, ``B`` read from the input's shape."""
    batch = g.op("Shape", [x], stem="batch", start=0, end=1)
    value = numpy_helper.from_array(np.zeros(1, dtype=dtype))
    out = []
    for i, n in enumerate(node_sizes):
        shape = g.op("Concat", [batch, g.const(f"width_{i}", np.array([n], np.int64))], stem=f"zshape_{i}", axis=0)
        out.append(g.op("ConstantOfShape", [shape], stem=f"zeros_{i}", value=value))
    return out


def _finish(g: _Builder, sizes: tuple[int, ...], model_config: dict, spec: HardwareSpec, fmt: str, n_steps: int,
            loop: bool, x_name: str, x_type: int, states: list[str], state_type: int) -> onnx.ModelProto:
    outs = []
    for i, s in enumerate(states):
        g.nodes.append(helper.make_node("Identity", [s], [state_name(i)], name=f"out_{i}"))
        outs.append(helper.make_tensor_value_info(state_name(i), state_type, ["B", sizes[i + 1]]))
    g.nodes.append(helper.make_node("ArgMax", [states[-1]], [PREDICTION], name="argmax", axis=1, keepdims=0))
    outs.append(helper.make_tensor_value_info(PREDICTION, TensorProto.INT64, ["B"]))
    graph = helper.make_graph(g.nodes, f"eqprop_{fmt}_{'loop' if loop else 'unrolled'}_T{n_steps}",
                              [helper.make_tensor_value_info(x_name, x_type, ["B", sizes[0]])], outs, g.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="eqprop-hwsim.exports")
    model.ir_version = IR_VERSION
    write_metadata(model, spec, fmt=fmt, n_steps=n_steps, loop=loop, model_config=model_config)
    onnx.checker.check_model(model, full_check=True)
    return model


# --------------------------------------------------------------------------- float and QDQ term handlers
Build = Callable[[_Builder, str, "str | None"], str]
"""``build(g, u, acc) -> acc'``: add a term's contribution (read from the source tensor ``u``) to the
node's accumulator ``acc`` (``None``: the first contribution)."""


class _Ctx:
    """What the float and QDQ handlers build with: the outer graph, the weight tensors by parameter
    name (float32 constants, or ``DequantizeLinear`` of integer codes) and the term rounding.

    Float: ``W`` as a float32 constant; the feedback product uses the same ``W``.
    QDQ (the graph form of :func:`models.qat.qat_relax`): ``W_hat = DequantizeLinear(codes, scale)``,
    the feedback array ``F_hat`` = ``W^T`` quantised as its own tensor, the bias ``b_hat =
    DequantizeLinear(quant.bias_codes, quant.bias_lsb)`` (int32 codes on the grid of its host
    accumulator: the node's first forward Dense term), and every term rounded to the state LSB
    (``R(v) = Round(v / lsb) * lsb``, half to even, no saturation) before the terms are summed.
    """

    def __init__(self, g: _Builder, net, spec: HardwareSpec, fmt: str):
        self.g, self.net, self.spec, self.fmt = g, net, spec, fmt
        self.qdq = fmt == "qdq"
        self._w: dict[tuple[str, bool], str] = {}
        self._scale: dict[str, np.ndarray] = {}
        self.hosts: dict[int, Dense] = {}   # node -> the Dense term whose forward accumulator holds its bias
        self.bias_of: dict[int, Bias] = {}
        for t in net.terms:
            if isinstance(t, Dense) and t.post not in self.hosts:
                self.hosts[t.post] = t
            if isinstance(t, Bias):
                self.bias_of[t.node] = t
        if self.qdq:
            g.const("t_inv_lsb", np.array(2.0 ** spec.state.frac_bits, np.float32))
            g.const("t_lsb", np.array(spec.state.lsb, np.float32))

    def param(self, name: str) -> np.ndarray:
        return self.net.get_parameter(name).detach().cpu().double().numpy()

    def weight(self, name: str, transposed: bool = False) -> str:
        """``W`` (float: the constant; QDQ: ``W_hat``), or (QDQ, ``transposed``) ``F_hat`` of ``W^T``."""
        key = (name, transposed and self.qdq)
        if key in self._w:
            return self._w[key]
        w = self.param(name)
        stem = name.replace(".", "_") + ("_T" if key[1] else "")
        if not self.qdq:
            out = self.g.const(stem, w.astype(np.float32))
        else:
            q = quantize_weights(w.T.copy() if key[1] else w, self.spec)
            codes = self.g.add_init(_code_initializer(f"Wq_{stem}", q.codes, self.spec.weights.onnx_storage_bits, True))
            scale = np.asarray(q.scale, np.float64).reshape(-1)
            if not key[1]:
                self._scale[name] = scale
            scale32 = scale.astype(np.float32)
            attrs = {"axis": 0} if scale32.size > 1 else {}
            sc = self.g.const(f"W_scale_{stem}", scale32 if scale32.size > 1 else scale32.reshape(()))
            out = self.g.op("DequantizeLinear", [codes, sc], stem=f"W_{stem}", **attrs)
        self._w[key] = out
        return out

    def bias(self, t: Bias) -> str:
        """``b`` (float) or ``b_hat`` on the grid of its host's accumulator (QDQ)."""
        b = self.param(t.bias)
        stem = t.bias.replace(".", "_")
        if not self.qdq:
            return self.g.const(stem, b.astype(np.float32))
        host = self.hosts[t.node]
        self.weight(host.weight)
        scale = self._scale[host.weight]
        codes = np.asarray(bias_codes(b, scale, self.spec), np.int64)
        lsb = np.asarray(bias_lsb(scale, self.spec), np.float64).reshape(-1)
        if codes.size and (codes.min() < -2**31 or codes.max() >= 2**31):
            raise ValueError(f"{t}: bias codes do not fit int32; allowed: spec.acc_bits <= 32")
        c = self.g.const(f"bq_{stem}", codes.astype(np.int32))
        lsb32 = lsb.astype(np.float32)
        attrs = {"axis": 0} if lsb32.size > 1 else {}
        sc = self.g.const(f"b_lsb_{stem}", lsb32 if lsb32.size > 1 else lsb32.reshape(()))
        return self.g.op("DequantizeLinear", [c, sc], stem=f"b_{stem}", **attrs)

    def term(self, g: _Builder, v: str, stem: str) -> str:
        """QDQ: ``R(v)``, the simulator's per-term requantisation; float: ``v``."""
        if not self.qdq:
            return v
        r = g.op("Round", [g.op("Mul", [v, "t_inv_lsb"], stem=f"{stem}_sc")], stem=f"{stem}_rnd")
        return g.op("Mul", [r, "t_lsb"], stem=f"{stem}_R")


def _add(g: _Builder, acc: str | None, v: str, stem: str) -> str:
    return v if acc is None else g.op("Add", [acc, v], stem=f"{stem}_sum")


class DenseOnnx:
    """:class:`~models.energy.Dense` ``s_post . (W s_pre)``: ``Gemm(s_pre, W, transB=1)`` into ``post``
    and, between states, ``Gemm(s_post, W)`` (float) / ``Gemm(s_post, F_hat, transB=1)`` (QDQ) into
    ``pre``. Float accumulates in the Gemm's ``C`` input; QDQ rounds each term, then adds."""

    static_rank = 1  # float static part: biases first, then input couplings (as EnergyModel.drive)

    @staticmethod
    def contributions(t: Dense, ctx: _Ctx) -> list[tuple[int, int, Build]]:
        W = ctx.weight(t.weight)
        stem = t.weight.replace(".", "_")
        hosts_bias = ctx.qdq and ctx.hosts.get(t.post) is t and t.post in ctx.bias_of
        b = [ctx.bias(ctx.bias_of[t.post])] if hosts_bias else []  # built once, in the outer graph

        def forward(g: _Builder, u: str, acc: str | None) -> str:
            if not ctx.qdq:
                return g.op("Gemm", [u, W] + ([acc] if acc is not None else []), stem=f"ff_{stem}", transB=1)
            v = ctx.term(g, g.op("Gemm", [u, W] + b, stem=f"ff_{stem}", transB=1), f"ff_{stem}")
            return _add(g, acc, v, f"ff_{stem}")

        out = [(t.post, t.pre, forward)]
        if t.pre != INPUT:
            F = ctx.weight(t.weight, transposed=True)

            def feedback(g: _Builder, u: str, acc: str | None) -> str:
                if not ctx.qdq:
                    return g.op("Gemm", [u, F] + ([acc] if acc is not None else []), stem=f"fb_{stem}")
                v = ctx.term(g, g.op("Gemm", [u, F], stem=f"fb_{stem}", transB=1), f"fb_{stem}")
                return _add(g, acc, v, f"fb_{stem}")

            out.append((t.pre, t.post, feedback))
        return out


class BiasOnnx:
    """:class:`~models.energy.Bias`: float: the constant starts the node's static accumulator; QDQ: the
    ``C`` input of its host's forward ``Gemm`` (see :class:`_Ctx`)."""

    static_rank = 0

    @staticmethod
    def contributions(t: Bias, ctx: _Ctx) -> list[tuple[int, int, Build]]:
        if ctx.qdq:
            if t.node not in ctx.hosts:
                raise UnsupportedError(f"backend 'onnx qdq': {t} needs a Dense term into node {t.node} "
                                       "(a bias lives on its accumulator grid)")
            return []
        b = ctx.bias(t)
        return [(t.node, INPUT, lambda g, u, acc: b if acc is None else g.op("Add", [acc, b], stem="bias_sum"))]


class ConvPoolOnnx:
    """:class:`~models.conv.ConvPool` ``s_post . (P(conv(s_pre, W)) + b)`` (float graph).

    States stay flat ``(B, n)`` between sweeps; the handler reshapes to ``(B, C, H, W)`` around the
    image ops. Forward into ``post``: ``Reshape -> Conv(W, b, pads) -> MaxPool(pool, stride pool;
    floor mode drops a ragged edge) -> Reshape``; ``P(conv + b) = P(conv) + b`` (``b`` per
    channel). Feedback into ``pre`` (reads both ``s_post`` and ``s_pre``): the routing recomputes
    ``Conv(s_pre, W)`` (no bias) and ``MaxPool`` with its ``Indices`` output, ``MaxUnpool`` puts
    each pooled unit of ``s_post`` at its window's maximum (``output_shape`` = the full conv map,
    so a ragged edge stays 0), then ``ConvTranspose(W, pads)``. onnxruntime's ``MaxPool`` indices
    are flat over ``N C H W`` (torch's over ``H W``), but ``MaxUnpool`` reads them in the same
    convention, and its tie rule is torch's (first maximum in row-major order; tested on exact
    ties), so no equality-mask workaround is needed.
    """

    static_rank = 1

    @staticmethod
    def _qdq_params(t, ctx: _Ctx, stem: str) -> dict:
        """QDQ (the graph form of ``models.qat``'s fake-quant conv, ``_conv_forward`` / ``_conv_feedback``):
        the kernel codes ``DequantizeLinear(codes, 1)`` (float32 copies of the integers), the conv taken
        on the state codes ``s * 2**f`` -- every product and partial sum an integer, exact in float32 while
        ``sum|Wq[co]| * max code <= 2**24`` (int8 1-32-64 5x5 MNIST: 32*25*127*128 < 2**24; a warning
        otherwise), so max pooling and its routing compare and tie exactly as the integer accumulator
        does -- then one multiplier per channel ``scale * 2**-f`` (= ``W_hat = codes * scale``), and
        ``b_hat = DequantizeLinear(quant.bias_codes, bias_lsb, axis=0)``. The feedback kernel is
        ``W.transpose(0, 1)`` quantised as its own tensor (one scale per input channel), laid out
        ``(C_out, C_in, k, k)`` for ``ConvTranspose``, applied to the routed post codes."""
        g0, spec = ctx.g, ctx.spec
        bits, f = spec.weights.onnx_storage_bits, spec.state.frac_bits
        one = "w_unit_scale"
        if not any(i.name == one for i in g0.inits):
            g0.const(one, np.array(1.0, np.float32))
        bound_max = max(spec.state.qmax, spec.state.code_of(1.0))

        def dq(name: str, w: np.ndarray, layout_perm=None) -> tuple[str, str]:
            q = quantize_weights(w, spec)
            codes = g0.add_init(_code_initializer(f"Wq_{name}", q.codes, bits, True))
            bound = int(np.abs(np.asarray(q.codes, np.int64)).reshape(q.codes.shape[0], -1).sum(axis=1).max()) * bound_max
            if bound > 2**24:
                log.warning("%s: conv partial sums up to %d exceed 2**24: the float32 QDQ conv is not exact "
                            "(pooling ties may differ from the integer semantics)", name, bound)
            out = g0.op("DequantizeLinear", [codes, one], stem=f"Wc_{name}")
            if layout_perm is not None:
                out = g0.op("Transpose", [out], stem=f"Wc_{name}_t", perm=layout_perm)
            scale = np.broadcast_to(np.asarray(q.scale, np.float64).reshape(-1), (w.shape[0],))
            mult = g0.const(f"W_mult_{name}", (scale * 2.0 ** -f).astype(np.float32).reshape(-1, 1, 1))
            return out, mult, scale

        w = ctx.param(t.weight)
        out = {}
        out["W"], out["mult"], scale = dq(stem, w)
        out["b"] = None
        if t.bias is not None:
            codes = np.asarray(bias_codes(ctx.param(t.bias), scale, spec), np.int64)
            lsb = np.broadcast_to(np.asarray(bias_lsb(scale, spec), np.float64).reshape(-1), (w.shape[0],))
            if codes.size and (codes.min() < -2**31 or codes.max() >= 2**31):
                raise ValueError(f"{t}: bias codes do not fit int32; allowed: spec.acc_bits <= 32")
            c = g0.const(f"bq_{stem}", codes.astype(np.int32))
            lsb32 = g0.const(f"b_lsb_{stem}", lsb.astype(np.float32))
            b = g0.op("DequantizeLinear", [c, lsb32], stem=f"b_{stem}", axis=0)
            out["b"] = g0.op("Reshape", [b, g0.const(f"b_shape_{stem}", np.array([-1, 1, 1], np.int64))],
                             stem=f"b3_{stem}")
        if t.pre != INPUT:
            out["F"], out["fmult"], _ = dq(f"{stem}_T", np.ascontiguousarray(w.transpose(1, 0, 2, 3)),
                                           layout_perm=[1, 0, 2, 3])
        return out

    @staticmethod
    def contributions(t, ctx: _Ctx) -> list[tuple[object, int, Build]]:
        g0 = ctx.g
        c_out = int(ctx.net.get_parameter(t.weight).shape[0])
        stem = t.weight.replace(".", "_")
        qdq = ConvPoolOnnx._qdq_params(t, ctx, stem) if ctx.qdq else None
        if qdq is None:
            W = F = ctx.weight(t.weight)
            b = [ctx.g.const(t.bias.replace(".", "_"), ctx.param(t.bias).astype(np.float32))] if t.bias else []
        else:
            W, F, b = qdq["W"], qdq.get("F"), []
        img_in = g0.const(f"{stem}_in_shape", np.array([-1, *t.in_shape], np.int64))
        out_shape = t.out_shape(c_out)
        img_out = g0.const(f"{stem}_out_shape", np.array([-1, *out_shape], np.int64))
        flat_in = g0.const(f"{stem}_flat_in", np.array([-1, int(np.prod(t.in_shape))], np.int64))
        flat_out = g0.const(f"{stem}_flat_out", np.array([-1, int(np.prod(out_shape))], np.int64))
        pads = [t.padding] * 4
        pool = {"kernel_shape": [t.pool, t.pool], "strides": [t.pool, t.pool]}

        def image(g: _Builder, u: str, shape: str, stem_: str) -> str:
            """``(B, C, H, W)`` view; QDQ: the state codes ``u * 2**f`` (exact integers in float32)."""
            img = g.op("Reshape", [u, shape], stem=stem_)
            return img if qdq is None else g.op("Mul", [img, "t_inv_lsb"], stem=f"{stem_}_codes")

        def forward(g: _Builder, u: str, acc: str | None) -> str:
            y = g.op("Conv", [image(g, u, img_in, f"img_{stem}"), W] + b, stem=f"conv_{stem}", pads=pads)
            if t.pool > 1:
                y = g.op("MaxPool", [y], stem=f"pool_{stem}", **pool)
            if qdq is not None:
                y = g.op("Mul", [y, qdq["mult"]], stem=f"scale_{stem}")
                if qdq["b"] is not None:
                    y = g.op("Add", [y, qdq["b"]], stem=f"bias_{stem}")
            v = ctx.term(g, g.op("Reshape", [y, flat_out], stem=f"ff_{stem}"), f"ff_{stem}")
            return _add(g, acc, v, f"ff_{stem}")

        out: list[tuple[object, int, Build]] = [(t.post, t.pre, forward)]
        if t.pre != INPUT:
            def feedback(g: _Builder, u, acc: str | None) -> str:
                s_post, s_pre = u
                post = image(g, s_post, img_out, f"post_{stem}")
                if t.pool > 1:
                    y = g.op("Conv", [image(g, s_pre, img_in, f"rimg_{stem}"), W], stem=f"route_{stem}", pads=pads)
                    _, idx = g.op("MaxPool", [y], stem=f"rpool_{stem}", n_out=2, **pool)
                    post = g.op("MaxUnpool", [post, idx, g.op("Shape", [y], stem=f"rshape_{stem}")],
                                stem=f"unpool_{stem}", **pool)
                v = g.op("ConvTranspose", [post, F], stem=f"convT_{stem}", pads=pads)
                if qdq is not None:
                    v = g.op("Mul", [v, qdq["fmult"]], stem=f"fscale_{stem}")
                v = ctx.term(g, g.op("Reshape", [v, flat_in], stem=f"fb_{stem}"), f"fb_{stem}")
                return _add(g, acc, v, f"fb_{stem}")

            out.append((t.pre, (t.post, t.pre), feedback))
        return out


def _conv_handlers() -> dict[type, type]:
    try:
        from models.conv import ConvPool
    except ImportError:  # pragma: no cover
        return {}
    return {ConvPool: ConvPoolOnnx}


FLOAT_HANDLERS: dict[type, type] = {Dense: DenseOnnx, Bias: BiasOnnx, **_conv_handlers()}
"""Term handlers of the ``float`` and ``qdq`` graphs, by term type (:func:`models.engine.require_kernels`)."""


def register_onnx_handler(term_type: type, handler: type) -> None:
    """Add (or replace) the ``float``/``qdq`` graph handler of a term type."""
    FLOAT_HANDLERS[term_type] = handler


def _float_like_graph(net, spec: HardwareSpec, fmt: str, n_steps: int, loop: bool) -> onnx.ModelProto:
    """The float and QDQ graphs: static contributions once (outside the sweeps), then per node the
    dynamic ones in term order, ``Clip(., 0, 1)`` and (QDQ) the state's ``QuantizeLinear ->
    DequantizeLinear``."""
    g = _Builder()
    handlers = require_kernels(f"onnx {fmt}", FLOAT_HANDLERS, net.terms)
    ctx = _Ctx(g, net, spec, fmt)
    g.const("zero_f", np.array(0.0, np.float32))
    g.const("one_f", np.array(1.0, np.float32))
    post: Callable[[_Builder, str, object], str] = lambda g_, v, i: v  # noqa: E731
    x = INPUT_FLOAT
    if fmt == "qdq":
        post = _state_qdq(g, spec)
        x = post(g, INPUT_FLOAT, "x")
    n = len(net.nodes)
    static: list[str | None] = [None] * n
    dynamic: list[list[tuple[int, Build]]] = [[] for _ in range(n)]
    contribs = [(h, c) for t, h in zip(net.terms, handlers) for c in h.contributions(t, ctx)]
    for rank in sorted({h.static_rank for h, _ in contribs}):
        for h, (node, src, build) in contribs:
            if src == INPUT and h.static_rank == rank:
                static[node] = build(g, x, static[node])
    for h, (node, src, build) in contribs:
        if src != INPUT:
            dynamic[node].append((src, build))

    def node_fn(g_: _Builder, i: int, s: list[str]) -> str:
        a = static[i]
        for src, build in dynamic[i]:   # src: a node, or a tuple of nodes (a term that reads several)
            a = build(g_, tuple(s[j] for j in src) if isinstance(src, tuple) else s[src], a)
        if a is None:
            raise UnsupportedError(f"backend 'onnx {fmt}': node {i} has no interaction term")
        return post(g_, g_.op("Clip", [a, "zero_f", "one_f"], stem=f"rho_{i}"), i)

    node_sizes = tuple(nd.size for nd in net.nodes)
    sizes = (int(net.n_in),) + node_sizes
    zeros = _zero_states(g, INPUT_FLOAT, node_sizes, np.float32)
    s = _relax(g, node_sizes, net.schedule(), zeros, node_fn, n_steps, loop, TensorProto.FLOAT)
    return _finish(g, sizes, _model_config(net), spec, fmt, n_steps, loop, INPUT_FLOAT, TensorProto.FLOAT, s,
                   TensorProto.FLOAT)


def _model_config(net) -> dict:
    """The model's config plus its class and terms (the metadata's ``model`` entry)."""
    cfg = net.config.to_dict() if hasattr(net, "config") else {}
    return {**cfg, "model": type(net).__name__, "terms": [str(t) for t in net.terms]}


def _state_qdq(g: _Builder, spec: HardwareSpec) -> Callable[[_Builder, str, object], str]:
    """``v -> DequantizeLinear(QuantizeLinear(clip(v, min_value, max_value), 2**-frac_bits, 0))``."""
    fmt_s = spec.state
    s_type, s_np = _zero_point(fmt_s.bits, fmt_s.signed)
    g.const("s_scale", np.array(fmt_s.lsb, np.float32))
    if s_np is None:
        g.add_init(helper.make_tensor("s_zp", s_type, [], [0]))
    else:
        g.const("s_zp", np.array(0, s_np))
    container = {TensorProto.INT4: (-8, 7), TensorProto.UINT4: (0, 15), TensorProto.INT8: (-128, 127),
                 TensorProto.UINT8: (0, 255), TensorProto.INT16: (-2**15, 2**15 - 1),
                 TensorProto.UINT16: (0, 2**16 - 1)}[s_type]
    needs_clip = (fmt_s.qmin, fmt_s.qmax) != container  # QuantizeLinear saturates to the container only
    if needs_clip:
        g.const("s_lo", np.array(fmt_s.min_value, np.float32))
        g.const("s_hi", np.array(fmt_s.max_value, np.float32))

    def fq(g_: _Builder, v: str, i) -> str:
        if needs_clip:
            v = g_.op("Clip", [v, "s_lo", "s_hi"], stem=f"sat_{i}")
        q = g_.op("QuantizeLinear", [v, "s_scale", "s_zp"], stem=f"q_{i}")
        return g_.op("DequantizeLinear", [q, "s_scale", "s_zp"], stem=f"s_{i}")

    return fq


def build_float_model(net, spec: HardwareSpec, n_steps: int, loop: bool) -> onnx.ModelProto:
    """float32 graph: input ``x`` (B, n_in) float32; outputs ``state_i`` float32 and ``prediction`` int64.
    Terms through :data:`FLOAT_HANDLERS` (any energy model whose term types have a handler)."""
    return _float_like_graph(net, spec, "float", n_steps, loop)


def build_qdq_model(net, spec: HardwareSpec, n_steps: int, loop: bool) -> onnx.ModelProto:
    """QDQ graph (opset 21), the graph form of :func:`models.qat.qat_relax` (the one fake-quant path):
    weights ``DequantizeLinear(codes, scale, axis=0)`` (codes in ``spec.weights.onnx_storage_bits``),
    feedback arrays quantised as their own tensors, biases ``DequantizeLinear(int32 codes, bias_lsb)``
    (:func:`quant.bias_codes`), each term rounded to the state LSB, ``Clip(sum, 0, 1)``; the input and
    every state pass through ``QuantizeLinear -> DequantizeLinear`` in the spec's state format (scale
    ``2**-frac_bits``, zero point 0; an identity on states already on the grid).
    """
    return _float_like_graph(net, spec, "qdq", n_steps, loop)


MATMUL_MODES = ("auto", "integer", "int64")


def _requant_consts(g: _Builder, name: str, mult: np.ndarray, shift: np.ndarray) -> tuple[str, str, str]:
    """Per-row int64 constants of ``quant.ops.requantize``: multiplier, divisor ``2**shift`` and
    ``half = 2**(shift-1)``; a left shift (``shift < 0``) is folded into the multiplier (exact)."""
    mult = np.asarray(mult, np.int64).copy()
    shift = np.asarray(shift, np.int64).copy()
    left = shift < 0
    if left.any():
        k = -shift[left]
        if np.any(np.abs(mult[left]).astype(object) * (2 ** k.astype(object)) >= 2**62):
            raise ValueError(f"{name}: multiplier * 2**-shift overflows int64; allowed: a smaller left shift")
        mult[left] = mult[left] * (np.int64(1) << k)
        shift[left] = 0
    if shift.max(initial=0) > 62:
        raise ValueError(f"{name}: shift {int(shift.max())} > 62 cannot be an int64 divisor; allowed: shift <= 62")
    div = np.int64(1) << shift
    half = _tie_threshold(shift)
    return (g.const(f"{name}_mult", mult), g.const(f"{name}_div", div), g.const(f"{name}_half", half))


def _tie_threshold(shift: np.ndarray) -> np.ndarray:
    """Remainder ``r`` (of ``p mod 2**shift``) that is exactly half an output LSB: ``2**(shift-1)``;
    for ``shift == 0`` the divisor itself (``r`` is 0 then, never ``>`` or ``==`` it). One place, so a
    test can break it (Track 41's power-of-two spec makes such ties frequent)."""
    shift = np.asarray(shift, np.int64)
    return np.where(shift > 0, np.int64(1) << np.maximum(shift - 1, 0), np.int64(1) << shift)


def acc_bounds(acc_bits: int) -> tuple[int, int]:
    """Signed ``acc_bits`` accumulator range ``(lo, hi)`` of the graph's saturating ``Clip`` and wrap
    (``quant.ops.overflow``'s range). One place, so a test can break it (Track 41's narrow-accumulator
    spec saturates on MNIST)."""
    hi = 2 ** (int(acc_bits) - 1) - 1
    return -hi - 1, hi


def _requantize(g: _Builder, acc: str, consts: tuple[str, str, str], rounding: str, stem: str) -> str:
    """``quant.ops.requantize(acc, m, shift, rounding)`` per row in int64 ONNX ops.

    ``p = acc * m``; ``r = p mod 2**shift`` (``Mod`` with ``fmod=0`` takes the divisor's sign, so
    ``r in [0, 2**shift)``), ``q = (p - r) / 2**shift`` (an exact division, = ``p >> shift``);
    ``floor``: ``q``; ``nearest_even``: ``q + (r > half or (r == half and q odd))``.
    """
    mult, div, half = consts
    p = g.op("Mul", [acc, mult], stem=f"{stem}_prod")
    r = g.op("Mod", [p, div], stem=f"{stem}_rem", fmod=0)
    q = g.op("Div", [g.op("Sub", [p, r], stem=f"{stem}_pr"), div], stem=f"{stem}_q")
    if rounding == "floor":
        return q
    if rounding != "nearest_even":
        raise ValueError(f"rounding={rounding!r} is not expressible in the integer ONNX graph; "
                         "allowed: 'nearest_even' or 'floor'")
    gt = g.op("Greater", [r, half], stem=f"{stem}_gt")
    tie = g.op("Equal", [r, half], stem=f"{stem}_tie")
    odd = g.op("Equal", [g.op("Mod", [q, "i64_two"], stem=f"{stem}_par", fmod=0), "i64_one"], stem=f"{stem}_odd")
    up = g.op("Or", [gt, g.op("And", [tie, odd], stem=f"{stem}_tieodd")], stem=f"{stem}_up")
    return g.op("Add", [q, g.op("Cast", [up], stem=f"{stem}_upi", to=TensorProto.INT64)], stem=f"{stem}_rq")


def _overflow(g: _Builder, v: str, acc_bits: int, mode: str, stem: str) -> str:
    """``quant.ops.overflow(v, acc_bits, signed=True, mode)``: ``Clip`` (saturate) or ``Mod`` (wrap)."""
    if mode == "saturate":
        return g.op("Clip", [v, "acc_lo", "acc_hi"], stem=f"{stem}_sat")
    if mode == "wrap":
        shifted = g.op("Add", [v, "acc_half"], stem=f"{stem}_wa")
        return g.op("Sub", [g.op("Mod", [shifted, "acc_mod"], stem=f"{stem}_wm", fmod=0), "acc_half"], stem=f"{stem}_wrap")
    raise ValueError(f"overflow={mode!r} is invalid; allowed: 'saturate' or 'wrap'")


def build_int_model(net, spec: HardwareSpec, n_steps: int, loop: bool, matmul: str = "auto",
                    rounding: str | None = None) -> onnx.ModelProto:
    """Integer-only graph reproducing :class:`hwsim.fixed_point.FixedPointMLP` bit for bit.

    Input ``x_codes`` (B, n_0) int64 state codes (``FixedPointMLP.quantize_input``); outputs
    ``state_i`` (B, n_i) int64 codes and ``prediction``. Per layer ``l`` and sweep (the semantics of
    ``docs/hwsim_semantics.md``)::

        A_f = ovf(Wq_l @ c_{l-1} + bq_l)      # drive (l = 0) computed once, outside the sweeps
        A_b = ovf(Fq_l @ c_{l+1})             # l < L-1; Fq_l = codes of W_{l+1}^T
        c_l = Clip(rq(A_f, mf_l, sf_l) + rq(A_b, mb_l, sb_l), 0, code(1.0))

    ``ovf`` is ``Clip`` to the signed ``acc_bits`` range or a two's complement wrap by ``Mod``;
    ``rq`` is :func:`_requantize`. Products: ``MatMulInteger`` (uint8 states x int8 codes -> int32,
    cast to int64) when every partial sum provably fits in int32, else int64 ``MatMul``
    (``matmul="auto"``; force one with ``"integer"`` / ``"int64"``). Weight codes are stored in the
    smallest container (INT4 packed, INT8, INT16) and ``Cast`` once (constant-folded at load).

    Args:
        net: an ``EqPropMLP`` (quantised with ``FixedPointMLP.from_model(net, spec)``) or a
            ``FixedPointMLP`` whose integer parameters are exported as they are.
        rounding: overrides ``spec.rounding`` in the graph only (to build deliberately broken graphs
            in tests; the metadata keeps ``spec``).
    """
    from hwsim.fixed_point import FixedPointMLP

    if matmul not in MATMUL_MODES:
        raise ValueError(f"matmul={matmul!r} is invalid; allowed: one of {MATMUL_MODES}")
    fp = net if isinstance(net, FixedPointMLP) else FixedPointMLP.from_model(net, spec)
    spec = fp.spec
    rounding = rounding or spec.rounding
    L, sizes, one = fp.n_layers, fp.sizes, fp.one_code
    g = _Builder()
    g.const("i64_one", np.array(1, np.int64))
    g.const("i64_two", np.array(2, np.int64))
    g.const("i64_zero", np.array(0, np.int64))
    g.const("one_code", np.array(one, np.int64))
    acc_lo, acc_hi = acc_bounds(spec.acc_bits)
    g.const("acc_lo", np.array(acc_lo, np.int64))
    g.const("acc_hi", np.array(acc_hi, np.int64))
    g.const("acc_half", np.array(-acc_lo, np.int64))
    g.const("acc_mod", np.array(acc_hi - acc_lo + 1, np.int64))
    st = spec.state
    extra_codes = [c.codes for c in fp.extra]
    all_codes = fp.w_codes + fp.fb_codes + extra_codes
    # MatMulInteger needs uint8 activations and int8 weights, and int32 partial sums must be exact
    s_max = max(one, st.qmax)  # input codes reach qmax, states one_code
    w_max = max(int(np.abs(w).max(initial=0)) for w in all_codes)
    # per output bound: a Dense row (n_out, n_in), a conv output channel (C_out, C_in, k, k) of Wq, or
    # an input channel of the transposed conv (Fq is (C_in, C_out, k, k)): sum over all but axis 0
    rowsum = max(int(np.abs(w).reshape(w.shape[0], -1).sum(axis=1).max(initial=0)) for w in all_codes)
    int_ok = (not st.signed and st.qmax <= 255 and w_max <= 127 and rowsum * s_max < 2**31)
    if matmul == "integer" and not int_ok:
        raise ValueError("matmul='integer' needs unsigned <= 8-bit states, |codes| <= 127 and int32-exact sums; "
                         "allowed here: matmul='int64' or 'auto'")
    use_int = int_ok if matmul == "auto" else matmul == "integer"
    w_bits = spec.weights.onnx_storage_bits
    op_type = TensorProto.INT8 if use_int else TensorProto.INT64

    stored: dict[bytes, str] = {}

    def weight(name: str, mat: np.ndarray) -> str:
        """``mat`` (K, N) codes as an initializer (shared when identical) cast to the matmul type."""
        mat = np.ascontiguousarray(mat, np.int64)
        key = mat.tobytes() + str(mat.shape).encode()
        if key not in stored:
            codes = g.add_init(_code_initializer(name, mat, w_bits, True))
            stored[key] = g.op("Cast", [codes], stem=f"{name}_cast", to=op_type)
        return stored[key]

    def product(g_: _Builder, s: str, w: str, stem: str) -> str:
        if use_int:
            s8 = g_.op("Cast", [s], stem=f"{stem}_u8", to=TensorProto.UINT8)
            acc = g_.op("MatMulInteger", [s8, w], stem=f"{stem}_mmi")
            return g_.op("Cast", [acc], stem=f"{stem}_acc", to=TensorProto.INT64)
        return g_.op("MatMul", [s, w], stem=f"{stem}_acc")

    convs = [None if geo is None else _IntConv(g, f"cv{i}", geo, fp.w_codes[i],
                                                fp.fb_codes[i - 1] if i > 0 else None, use_int, weight)
             for i, geo in enumerate(fp.conv)]
    w_fwd = [weight(f"Wq_{i}", fp.w_codes[i].T) if convs[i] is None else None for i in range(L)]  # (n_{i-1}, n_i)
    w_fb = [weight(f"Fq_{i}", fp.fb_codes[i].T) if convs[i + 1] is None else None
            for i in range(L - 1)]  # (n_{i+1}, n_i)
    bias = [g.op("Cast", [g.const(f"bq_{i}", fp.bias_codes[i].astype(np.int32 if spec.acc_bits <= 32 else np.int64))],
                 stem=f"bq_{i}_cast", to=TensorProto.INT64) for i in range(L)]
    rq_f = [_requant_consts(g, f"rqf_{i}", *fp.fwd_requant[i]) for i in range(L)]
    rq_b = [_requant_consts(g, f"rqb_{i}", *fp.fb_requant[i]) for i in range(L - 1)]

    def fwd_product(g_: _Builder, i: int, src: str, stem: str) -> str:
        if convs[i] is None:
            return product(g_, src, w_fwd[i], stem)
        return convs[i].forward(g_, src, stem)

    acc0 = g.op("Add", [fwd_product(g, 0, INPUT_CODES, "drive"), bias[0]], stem="drive_b")
    drive = _requantize(g, _overflow(g, acc0, spec.acc_bits, spec.overflow, "drive"), rq_f[0], rounding, "drive")

    # extra terms (hwsim.fixed_point.TermContribution, e.g. a skip coupling): each its own accumulator
    # rq(ovf(codes @ c_src)); static ones (input only) formed once, outside the sweeps
    extra: list[tuple[int, object]] = []   # (node, static value name or (weight, consts) for a dynamic one)
    for k, c in enumerate(fp.extra):
        w_e = weight(f"Eq_{k}", c.codes.T)  # (n_src, n_node)
        rq_e = _requant_consts(g, f"rqe_{k}", *c.requant)
        if c.static:
            a = _overflow(g, product(g, INPUT_CODES, w_e, f"ex{k}"), spec.acc_bits, spec.overflow, f"ex{k}")
            extra.append((c.node, _requantize(g, a, rq_e, rounding, f"ex{k}")))
        else:
            extra.append((c.node, (k, c.src, w_e, rq_e)))

    def layer(g_: _Builder, i: int, s: list[str]) -> str:
        if i == 0:
            p = drive
        else:
            a = g_.op("Add", [fwd_product(g_, i, s[i - 1], f"ff{i}"), bias[i]], stem=f"ff{i}_b")
            p = _requantize(g_, _overflow(g_, a, spec.acc_bits, spec.overflow, f"ff{i}"), rq_f[i], rounding, f"ff{i}")
        for node, v in extra:
            if node != i:
                continue
            if not isinstance(v, str):
                k, src, w_e, rq_e = v
                a = _overflow(g_, product(g_, s[src], w_e, f"ex{k}"), spec.acc_bits, spec.overflow, f"ex{k}")
                v = _requantize(g_, a, rq_e, rounding, f"ex{k}")
            p = g_.op("Add", [p, v], stem=f"pre{i}_ex")
        if i + 1 < L:
            fb = (product(g_, s[i + 1], w_fb[i], f"fb{i}") if convs[i + 1] is None
                  else convs[i + 1].feedback(g_, s[i + 1], s[i], f"fb{i}"))
            a = _overflow(g_, fb, spec.acc_bits, spec.overflow, f"fb{i}")
            p = g_.op("Add", [p, _requantize(g_, a, rq_b[i], rounding, f"fb{i}")], stem=f"pre{i}")
        return g_.op("Clip", [p, "i64_zero", "one_code"], stem=f"c{i}")

    node_sizes = tuple(sizes[1:])
    zeros = _zero_states(g, INPUT_CODES, node_sizes, np.int64)
    s = _relax(g, node_sizes, fp.groups, zeros, layer, n_steps, loop, TensorProto.INT64)
    cfg = _model_config(net) if hasattr(net, "terms") else {"sizes": list(sizes), "update": fp.update,
                                                              "cost": fp.cost}
    return _finish(g, tuple(sizes), cfg, spec, "int", n_steps, loop, INPUT_CODES, TensorProto.INT64, s,
                   TensorProto.INT64)


def _im2col_index(in_shape: tuple, k: int, p: int) -> np.ndarray:
    """``idx[oy*Wc + ox, ci*k*k + dy*k + dx]`` = flat C-order index of ``src[ci, oy+dy-p, ox+dx-p]``, or
    ``C*H*W`` (the appended zero) outside the image: ``Gather`` of a zero-padded flat state = im2col."""
    C, H, W = in_shape
    Hc, Wc = H + 2 * p - k + 1, W + 2 * p - k + 1
    oy, ox, ci, dy, dx = np.ix_(range(Hc), range(Wc), range(C), range(k), range(k))
    y, x = oy + dy - p, ox + dx - p
    inside = (y >= 0) & (y < H) & (x >= 0) & (x < W)
    idx = np.where(inside, ci * H * W + np.clip(y, 0, H - 1) * W + np.clip(x, 0, W - 1), C * H * W)
    return np.ascontiguousarray(idx.reshape(Hc * Wc, C * k * k).astype(np.int64))


class _IntConv:
    """Integer ``ConvPool`` of the ``int`` graph (``docs/hwsim_semantics.md``, ``hwsim.fixed_point.ConvPoolInt``).

    Exact products ``Y = conv_int(c, Wq)`` (stride 1, pads ``p``): ``ConvInteger`` (uint8 codes x int8
    kernel, int32 sums, exact when the per-channel bound ``sum|Wq[co]| * max c < 2**31``: checked by
    the caller's ``use_int``), else im2col by ``Gather`` of the zero-padded flat state and an int64
    ``MatMul``. Pooling on the exact accumulator: ``Y`` cropped to ``q * floor(Hc / q)``, every window
    laid out along a last axis of ``q*q`` in row-major ``(dy, dx)`` order, ``ArgMax(select_last_index=0)``
    (the ONNX rule: the FIRST maximum = the simulator's tie rule, integer ties included) and the pooled
    value ``GatherElements(Y, argmax)``. onnxruntime's ``MaxPool`` has no int32/int64 kernel, so the
    windows are pooled in integer ops instead. Feedback ``A_b = convT_int(U, Fq)``: ``U`` = the post
    codes placed at ``Equal(arange(q*q), argmax)`` of the routing ``Y`` of the current pre codes, back
    to ``(Hc, Wc)`` (the ragged edge zero-padded), then the transposed conv as a conv of ``U`` with the
    flipped ``Fq`` and pads ``k-1-p``.
    """

    def __init__(self, g: _Builder, stem: str, geo, wq: np.ndarray, fq: np.ndarray | None, use_int: bool,
                 weight: Callable[[str, np.ndarray], str]):
        self.geo, self.use_int, self.stem, self._weight = geo, use_int, stem, weight
        C, H, W = geo.in_shape
        k, p, q, Co = geo.kernel, geo.padding, geo.pool, geo.c_out
        Hc, Wc = geo.conv_shape
        _, Hp, Wp = geo.out_shape
        self.q = q
        c = lambda name, v: g.const(f"{stem}_{name}", np.asarray(v, np.int64))  # noqa: E731
        self.img_in = c("img_in", [-1, C, H, W])
        self.img_y = c("img_y", [-1, Co, Hc, Wc])
        self.flat_out = c("flat_out", [-1, Co * Hp * Wp])
        self.flat_in = c("flat_in", [-1, C * H * W])
        self.flat_y = c("flat_y", [-1, Co * Hc * Wc])
        self.crop = (Hp * q, Wp * q) != (Hc, Wc)
        if self.crop:
            self.crop_s, self.crop_e, self.crop_ax = c("crop_s", [0, 0]), c("crop_e", [Hp * q, Wp * q]), c("crop_ax", [2, 3])
            self.unpad = c("unpad", [0, 0, 0, 0, 0, 0, Hc - Hp * q, Wc - Wp * q])
        self.win6 = c("win6", [-1, Co, Hp, q, Wp, q])
        self.win5 = c("win5", [-1, Co, Hp, Wp, q * q])
        self.win6t = c("win6t", [-1, Co, Hp, Wp, q, q])
        self.upost = c("upost", [-1, Co, Hp, Wp, 1])
        self.uimg = c("uimg", [-1, Co, Hp * q, Wp * q])
        self.arange = c("arange", np.arange(q * q))
        self.flat_pad = c("flat_pad", [0, 0, 0, 1])
        self.w = self._kernel(g, f"Wq_{stem}", wq, (C, H, W), p)
        self.f = None
        if fq is not None:
            if p > k - 1:
                raise UnsupportedError(f"backend 'onnx int': ConvPool with padding {p} > kernel - 1 = {k - 1} "
                                       "(the transposed conv as a conv needs pads k-1-p >= 0)")
            flipped = np.ascontiguousarray(np.asarray(fq)[:, :, ::-1, ::-1])   # (C_in, C_out, k, k)
            self.f = self._kernel(g, f"Fq_{stem}", flipped, (Co, Hc, Wc), k - 1 - p)

    def _kernel(self, g: _Builder, name: str, w4: np.ndarray, in_shape: tuple, pad: int):
        w4 = np.asarray(w4, np.int64)
        if self.use_int:
            return self._weight(name, w4), in_shape, pad, g.const(f"{name}_src_shape", np.array([-1, *in_shape], np.int64))
        idx = g.const(f"{name}_im2col", _im2col_index(in_shape, w4.shape[2], pad))
        return self._weight(name, w4.reshape(w4.shape[0], -1).T), in_shape, pad, idx

    def _conv(self, g: _Builder, flat: str, kern, stem: str) -> str:
        """Exact int64 ``conv(src, kernel, pads)`` of a flat ``(B, C*H*W)`` int64 source: ``(B, C_out, Hc, Wc)``."""
        w, _, pad, aux = kern
        if self.use_int:
            img = g.op("Reshape", [flat, aux], stem=f"{stem}_img")
            u8 = g.op("Cast", [img], stem=f"{stem}_u8", to=TensorProto.UINT8)
            y = g.op("ConvInteger", [u8, w], stem=f"{stem}_convi", pads=[pad] * 4)
            return g.op("Cast", [y], stem=f"{stem}_y", to=TensorProto.INT64)
        padded = g.op("Pad", [flat, self.flat_pad], stem=f"{stem}_z", mode="constant")
        cols = g.op("Gather", [padded, aux], stem=f"{stem}_cols", axis=1)          # (B, Hc*Wc, C*k*k)
        y = g.op("MatMul", [cols, w], stem=f"{stem}_mm")                             # (B, Hc*Wc, C_out)
        return g.op("Transpose", [y], stem=f"{stem}_yt", perm=[0, 2, 1])             # (B, C_out, Hc*Wc)

    def _windows(self, g: _Builder, src: str, stem: str) -> tuple[str, str]:
        """``(Y as (B, C_out, Hp, Wp, q*q), first argmax (B, C_out, Hp, Wp, 1))`` of ``conv_int(src, Wq)``."""
        y = g.op("Reshape", [self._conv(g, src, self.w, stem), self.img_y], stem=f"{stem}_Y")
        if self.crop:
            y = g.op("Slice", [y, self.crop_s, self.crop_e, self.crop_ax], stem=f"{stem}_crop")
        y6 = g.op("Reshape", [y, self.win6], stem=f"{stem}_w6")
        y5 = g.op("Reshape", [g.op("Transpose", [y6], stem=f"{stem}_wt", perm=[0, 1, 2, 4, 3, 5]), self.win5],
                  stem=f"{stem}_w5")
        arg = g.op("ArgMax", [y5], stem=f"{stem}_arg", axis=4, keepdims=1, select_last_index=0)
        return y5, arg

    def forward(self, g: _Builder, src: str, stem: str) -> str:
        """Exact pooled accumulator ``P(conv_int(src, Wq))``, flat ``(B, C_out*Hp*Wp)`` int64."""
        if self.q == 1:
            return g.op("Reshape", [self._conv(g, src, self.w, stem), self.flat_out], stem=f"{stem}_pooled")
        y5, arg = self._windows(g, src, stem)
        pooled = g.op("GatherElements", [y5, arg], stem=f"{stem}_max", axis=4)
        return g.op("Reshape", [pooled, self.flat_out], stem=f"{stem}_pooled")

    def feedback(self, g: _Builder, post: str, pre: str, stem: str) -> str:
        """Exact ``convT_int(U(post), Fq)``, flat ``(B, C_in*H*W)`` int64; the routing from ``conv_int(pre, Wq)``."""
        if self.q == 1:
            u = post
        else:
            _, arg = self._windows(g, pre, f"{stem}_r")
            hot = g.op("Cast", [g.op("Equal", [self.arange, arg], stem=f"{stem}_hot")], stem=f"{stem}_hoti",
                       to=TensorProto.INT64)                                          # (B, C_out, Hp, Wp, q*q)
            u5 = g.op("Mul", [hot, g.op("Reshape", [post, self.upost], stem=f"{stem}_p5")], stem=f"{stem}_u5")
            u6 = g.op("Transpose", [g.op("Reshape", [u5, self.win6t], stem=f"{stem}_u6")], stem=f"{stem}_u6t",
                      perm=[0, 1, 2, 4, 3, 5])
            u = g.op("Reshape", [u6, self.uimg], stem=f"{stem}_uimg")
            if self.crop:
                u = g.op("Pad", [u, self.unpad], stem=f"{stem}_upad", mode="constant")
            u = g.op("Reshape", [u, self.flat_y], stem=f"{stem}_uflat")
        return g.op("Reshape", [self._conv(g, u, self.f, f"{stem}_T"), self.flat_in], stem=f"{stem}_fb")


_BUILDERS = {"float": build_float_model, "qdq": build_qdq_model, "int": build_int_model}


def export_onnx(net: EqPropMLP, spec: HardwareSpec | str, path: str | os.PathLike | None = None, *,
                fmt: str = "float", n_steps: int = 30, loop: bool = False, overwrite: bool = False,
                matmul: str = "auto") -> onnx.ModelProto:
    """Build (and optionally save) the ONNX graph of ``net``'s free phase under ``spec``.

    Args:
        net: the model (its float32 copy of the weights is used; eval only, no grads).
        spec: a :class:`quant.HardwareSpec` or a preset name.
        path: where to write the ``.onnx`` file; ``None`` returns the model only.
        fmt: ``"float"``, ``"qdq"`` or ``"int"`` (module docstring).
        n_steps: relaxation sweeps ``T >= 1``.
        loop: ``True`` for an ONNX ``Loop``, ``False`` to unroll ``T`` sweeps.
        overwrite: replace an existing ``path`` (otherwise ``FileExistsError``).
        matmul: ``fmt="int"`` only: ``"auto"``, ``"integer"`` (MatMulInteger) or ``"int64"`` (MatMul).

    Returns:
        the checked ``onnx.ModelProto`` (spec in ``metadata_props``, see :mod:`exports.metadata`).
    """
    if isinstance(spec, str):
        spec = get_preset(spec)
    check_export_args(net, spec, fmt, n_steps)
    if path is not None and Path(path).exists() and not overwrite:
        raise FileExistsError(f"{path} already exists; choose another path or pass overwrite=True")
    kw = {"matmul": matmul} if fmt == "int" else {}
    model = _BUILDERS[fmt](net, spec, int(n_steps), bool(loop), **kw)
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(str(path) + ".tmp")
        onnx.save(model, str(tmp))
        os.replace(tmp, path)
        log.info("exported %s (%s, T=%d, %s) to %s: %d bytes", spec.name, fmt, n_steps,
                 "loop" if loop else "unrolled", path, Path(path).stat().st_size)
    return model


def export_command(checkpoint: str | os.PathLike, spec: str | HardwareSpec, out: str | os.PathLike,
                   fmt: str = "int", n_steps: int = 30, overwrite: bool = False, loop: bool = False) -> Path:
    """``run_suite.py export``: load a checkpoint, export it, return the written path.

    Args:
        checkpoint: a file written by :func:`models.checkpoint.save_checkpoint` (an EqPropMLP).
        spec: a preset name (``"int8"``) or a path to a ``HardwareSpec`` JSON file, or a spec.
        out: the ``.onnx`` path; never overwritten unless ``overwrite``.
        fmt, n_steps, loop: see :func:`export_onnx`.
    """
    from models.checkpoint import load_checkpoint

    if isinstance(spec, (str, os.PathLike)) and Path(spec).suffix == ".json":
        if not Path(spec).is_file():
            raise ValueError(f"spec file {spec} does not exist; allowed: a preset name or a HardwareSpec JSON file")
        spec = HardwareSpec.from_json(Path(spec).read_text())
    elif isinstance(spec, str):
        spec = get_preset(spec)
    if Path(out).exists() and not overwrite:
        raise FileExistsError(f"{out} already exists; choose another --out or pass overwrite=True")
    net, _ = load_checkpoint(checkpoint)
    if not isinstance(net, EqPropMLP):
        raise ValueError(f"checkpoint holds a {type(net).__name__}; allowed: an EqPropMLP")
    export_onnx(net, spec, out, fmt=fmt, n_steps=n_steps, loop=loop, overwrite=overwrite)
    return Path(out)



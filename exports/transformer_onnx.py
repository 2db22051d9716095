"""ONNX float graph of the energy transformer's free phase (:class:`models.transformer.EnergyTransformer`).

One handler per term type (a table keyed by the term's type, as :data:`exports.onnx_export.FLOAT_HANDLERS`),
written independently of the torch kernels (the cross-check compares two arithmetics): the graph takes
``x`` ``(B, 784)`` float32 and runs ``n_steps`` unrolled sweeps of the model's schedule from zero states,
each node ``Clip(dPhi/ds_i, lo_i, hi_i)`` with the node's own box (token nodes [-1, 1]; the shared
builder of :mod:`exports.onnx_export` clips every node to [0, 1], hence this module), damped as the
model's config says. Outputs: ``state_i`` and ``prediction`` (argmax of the readout).

Not in the integer simulator (``hwsim``) nor in the QDQ / integer ONNX graphs: the log-sum-exp
attention (softmax of scores, the key-side back-projection), the Hopfield ReLU energy and the per-token
couplings have no integer kernels; their fake-quant (weights only) and analog-noise (weights only) paths
are in :mod:`models.transformer` (:func:`~models.transformer.fake_quant_copy`,
:func:`~models.transformer.analog_free_phase`).

>>> import torch, onnxruntime as ort
>>> from models.transformer import EnergyTransformer, TransformerConfig
>>> net = EnergyTransformer(TransformerConfig(d_model=8, n_heads=2), seed=0)
>>> m = build_float_model(net, n_steps=5)
>>> sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
>>> x = torch.rand(3, 784)
>>> out = sess.run(["state_1"], {"x": x.numpy()})[0]
>>> s, _ = net.free_phase(x, n_steps=5)
>>> bool(abs(out - s[-1].numpy()).max() < 1e-5)
True
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from models.energy import INPUT, Bias, Dense
from models.engine import UnsupportedError, require_kernels
from models.transformer import IMAGE, LSEAttention, TokenEmbed, TokenHopfield, TokenLinear

OPSET = 21
IR_VERSION = 10


class _G:
    def __init__(self, net):
        self.nodes, self.inits, self._n, self.net = [], [], 0, net
        self._w: dict[str, str] = {}

    def op(self, t: str, ins: list[str], **attrs) -> str:
        self._n += 1
        out = f"{t.lower()}_{self._n}"
        self.nodes.append(helper.make_node(t, ins, [out], name=f"n{self._n}", **attrs))
        return out

    def const(self, name: str, a) -> str:
        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(np.asarray(a)), name))
        return name

    def w(self, pname: str, transpose: bool = False) -> str:
        key = pname + (".T" if transpose else "")
        if key not in self._w:
            a = self.net.get_parameter(pname).detach().cpu().numpy().astype(np.float32)
            self._w[key] = self.const(key, a.T if transpose else a)
        return self._w[key]

    def shape(self, dims) -> str:
        return self.const(f"shape_{'_'.join(str(d).replace('-', 'm') for d in dims)}_{self._n}", np.array(dims, np.int64))


def _acc(g: _G, a: str | None, v: str) -> str:
    return v if a is None else g.op("Add", [a, v])


class TokenEmbedOnnx:
    @staticmethod
    def contributions(t: TokenEmbed, g: _G):
        (h, w), (ph, pw) = IMAGE, t.patch

        def build(x, s, a):
            p = g.op("Reshape", [x, g.shape([-1, h // ph, ph, w // pw, pw])])
            p = g.op("Transpose", [p], perm=[0, 1, 3, 2, 4])
            p = g.op("Reshape", [p, g.shape([-1, (h // ph) * (w // pw), ph * pw])])
            z = g.op("Add", [g.op("Add", [g.op("MatMul", [p, g.w(t.weight, True)]), g.w(t.bias)]), g.w(t.pos)])
            return _acc(g, a, g.op("Flatten", [z], axis=1))

        return [(t.post, True, build)]


class LSEAttentionOnnx:
    """``P = Softmax(beta Q K^T)`` per head; ``dPhi/dS = (P K) W_Q + (P^T Q) W_K`` (heads concatenated)."""

    @staticmethod
    def contributions(t: LSEAttention, g: _G):
        n, d, h = t.n_tokens, t.d_model, t.n_heads
        dh = g.net.get_parameter(t.wq).shape[0] // h

        def heads(v):  # (B, N, H*dh) -> (B, H, N, dh)
            return g.op("Transpose", [g.op("Reshape", [v, g.shape([-1, n, h, dh])])], perm=[0, 2, 1, 3])

        def merge(v):  # (B, H, N, dh) -> (B, N, H*dh)
            return g.op("Reshape", [g.op("Transpose", [v], perm=[0, 2, 1, 3]), g.shape([-1, n, h * dh])])

        def build(x, s, a):
            S = g.op("Reshape", [s[t.tokens], g.shape([-1, n, d])])
            Q, K = heads(g.op("MatMul", [S, g.w(t.wq, True)])), heads(g.op("MatMul", [S, g.w(t.wk, True)]))
            A = g.op("Mul", [g.op("MatMul", [Q, g.op("Transpose", [K], perm=[0, 1, 3, 2])]),
                             g.const(f"beta_{g._n}", np.array(t.beta, np.float32))])
            P = g.op("Softmax", [A], axis=-1)
            out = g.op("MatMul", [merge(g.op("MatMul", [P, K])), g.w(t.wq)])
            if t.key_side:
                PT = g.op("Transpose", [P], perm=[0, 1, 3, 2])
                out = g.op("Add", [out, g.op("MatMul", [merge(g.op("MatMul", [PT, Q])), g.w(t.wk)])])
            return _acc(g, a, g.op("Flatten", [out], axis=1))

        return [(t.tokens, False, build)]


class TokenHopfieldOnnx:
    @staticmethod
    def contributions(t: TokenHopfield, g: _G):
        def build(x, s, a):
            S = g.op("Reshape", [s[t.tokens], g.shape([-1, t.n_tokens, t.d_model])])
            hid = g.op("Relu", [g.op("Add", [g.op("MatMul", [S, g.w(t.weight, True)]), g.w(t.bias)])])
            return _acc(g, a, g.op("Flatten", [g.op("MatMul", [hid, g.w(t.weight)])], axis=1))

        return [(t.tokens, False, build)]


class TokenLinearOnnx:
    @staticmethod
    def contributions(t: TokenLinear, g: _G):
        def prod(src, transpose):
            def build(x, s, a):
                S = g.op("Reshape", [s[src], g.shape([-1, t.n_tokens, t.d_model])])
                return _acc(g, a, g.op("Flatten", [g.op("MatMul", [S, g.w(t.weight, transpose)])], axis=1))
            return build

        return [(t.post, False, prod(t.pre, True)), (t.pre, False, prod(t.post, False))]


class DenseOnnx:
    @staticmethod
    def contributions(t: Dense, g: _G):
        if t.pre == INPUT:
            raise UnsupportedError(f"backend 'onnx transformer': {t} reads the raw input; use TokenEmbed")
        return [(t.post, False, lambda x, s, a: _acc(g, a, g.op("MatMul", [s[t.pre], g.w(t.weight, True)]))),
                (t.pre, False, lambda x, s, a: _acc(g, a, g.op("MatMul", [s[t.post], g.w(t.weight)])))]


class BiasOnnx:
    @staticmethod
    def contributions(t: Bias, g: _G):
        return [(t.node, True, lambda x, s, a: _acc(g, a, g.w(t.bias)))]


HANDLERS: dict[type, type] = {TokenEmbed: TokenEmbedOnnx, LSEAttention: LSEAttentionOnnx,
                              TokenHopfield: TokenHopfieldOnnx, TokenLinear: TokenLinearOnnx,
                              Dense: DenseOnnx, Bias: BiasOnnx}


def build_float_model(net, n_steps: int) -> onnx.ModelProto:
    """float32 graph of ``n_steps`` unrolled sweeps (see module doc)."""
    if n_steps < 1:
        raise ValueError(f"n_steps={n_steps} must be >= 1")
    handlers = require_kernels("onnx transformer", HANDLERS, net.terms)
    g = _G(net)
    x = "x"
    n = len(net.nodes)
    static: list[str | None] = [None] * n
    dynamic: list[list] = [[] for _ in range(n)]
    for t, h in zip(net.terms, handlers):
        for node, is_static, build in h.contributions(t, g):
            if is_static:
                static[node] = build(x, None, static[node])
            else:
                dynamic[node].append(build)
    batch = g.op("Shape", [x], start=0, end=1)
    s = [g.op("ConstantOfShape", [g.op("Concat", [batch, g.const(f"w{i}", np.array([nd.size], np.int64))], axis=0)],
              value=numpy_helper.from_array(np.zeros(1, np.float32))) for i, nd in enumerate(net.nodes)]
    bounds = [(g.const(f"lo{i}", np.array(nd.bounds[0], np.float32)), g.const(f"hi{i}", np.array(nd.bounds[1], np.float32)))
              for i, nd in enumerate(net.nodes)]
    dmp = float(net.config.damping)
    groups = net.schedule()
    for _ in range(n_steps):
        old = list(s)
        for grp in groups:
            src = list(s)
            for i in grp:
                a = static[i]
                for build in dynamic[i]:
                    a = build(x, src, a)
                if a is None:
                    raise UnsupportedError(f"backend 'onnx transformer': node {i} has no interaction term")
                s[i] = g.op("Clip", [a, *bounds[i]])
        if dmp:
            c1, c0 = g.const(f"a{g._n}", np.array(1 - dmp, np.float32)), g.const(f"d{g._n}", np.array(dmp, np.float32))
            s = [g.op("Add", [g.op("Mul", [a, c1]), g.op("Mul", [b, c0])]) for a, b in zip(s, old)]
    outs = []
    for i, v in enumerate(s):
        g.nodes.append(helper.make_node("Identity", [v], [f"state_{i}"], name=f"out_{i}"))
        outs.append(helper.make_tensor_value_info(f"state_{i}", TensorProto.FLOAT, ["B", net.nodes[i].size]))
    g.nodes.append(helper.make_node("ArgMax", [s[-1]], ["prediction"], name="argmax", axis=1, keepdims=0))
    outs.append(helper.make_tensor_value_info("prediction", TensorProto.INT64, ["B"]))
    graph = helper.make_graph(g.nodes, f"energy_transformer_T{n_steps}",
                              [helper.make_tensor_value_info(x, TensorProto.FLOAT, ["B", net.n_in])], outs, g.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="eqprop-hwsim.exports")
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model, full_check=True)
    return model


def verify(net, x, n_steps: int) -> dict[str, float]:
    """Max |onnxruntime - torch float32| of the readout state and the prediction agreement."""
    import onnxruntime as ort
    import torch

    sess = ort.InferenceSession(build_float_model(net, n_steps).SerializeToString(), providers=["CPUExecutionProvider"])
    out, pred = sess.run([f"state_{len(net.nodes) - 1}", "prediction"], {"x": x.float().numpy()})
    with torch.no_grad():
        s, _ = net.float().free_phase(x.float(), n_steps=n_steps)
    return {"max_abs_diff": float(np.abs(out - s[-1].numpy()).max()),
            "prediction_agreement": float((pred == s[-1].argmax(dim=1).numpy()).mean())}

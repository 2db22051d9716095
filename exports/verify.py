"""Run exported graphs in real onnxruntime sessions and compare them with the path they mirror.

=========  ==========================================  ============================================
format     reference                                   tolerance
=========  ==========================================  ============================================
``float``  torch float32 ``EqPropMLP.free_phase``      :data:`FLOAT_GRAPH_TOL` on states, argmax
``qdq``    torch fake-quant path                       :data:`QDQ_MAX_LSB` output-state LSBs and
           (:func:`models.qat.qat_relax` via           argmax agreement >= :data:`QDQ_MIN_ARGMAX`
           :func:`fake_quant_free_phase`)
``int``    :class:`hwsim.fixed_point.FixedPointMLP`    ``BIT_EXACT``: 0 differing codes, 0 predictions
=========  ==========================================  ============================================

Why QDQ is not bit-exact: both paths compute pre-activations in float32, and any change of summation
order or fusion moves a pre-activation sitting within a float32 ulp of a rounding boundary (half an
LSB) to the neighbouring code; the relaxation then carries that one-LSB difference onward. Measured
(onnxruntime 1.32, CPU): with its default optimisations 0.01-1.5 % of the output codes of an
*unrolled* QDQ graph differ by one LSB (more in nets whose dynamics amplify differences: untrained,
large gain, up to 9 LSB on 3 % of codes). The cause is onnxruntime's QDQ-specific rewrites: with
``session.disable_quant_qdq = 1`` (``optimization="all_no_qdq"``) the differences drop to rare
float-ulp ties; the ``Loop`` graph (whose body those rewrites do not reach) differs in < 0.01 %.
The tolerances are stated, not tuned to pass: :data:`QDQ_MAX_LSB` allows a few LSBs of drift on
rare samples, :data:`QDQ_MIN_ARGMAX` is the issue's 99.9 %.
"""
from __future__ import annotations

import copy
import re
import logging
import os
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch

from models.progress import progress as progress_bar
from models.eqprop_mlp import EqPropMLP
from quant import HardwareSpec
from quant.tolerances import F32_VS_F64

log = logging.getLogger("eqprop_hwsim.exports")

FLOAT_GRAPH_TOL = F32_VS_F64
"""onnxruntime float32 graph vs torch float32: two float32 implementations, different sum order."""

QDQ_MAX_LSB = 4
"""QDQ graph vs torch fake-quant: largest state difference allowed, in output-state LSBs."""

QDQ_MIN_ARGMAX = 0.999
"""QDQ graph vs torch fake-quant: minimum fraction of equal predictions."""


GRAPH_OPTIMIZATION = {"all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
                      "all_no_qdq": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
                      "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
                      "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL}


def make_session(model_or_path, n_threads: int | None = None,
                 optimization: str = "all") -> tuple[ort.InferenceSession, float]:
    """A CPU ``InferenceSession`` and its load time in seconds (parse + graph optimisation).

    ``optimization``: onnxruntime graph optimisation level, ``"all"`` (its default), ``"basic"`` or
    ``"disable"``; ``"all_no_qdq"`` is ``"all"`` without onnxruntime's QDQ-specific rewrites
    (session config ``session.disable_quant_qdq = 1``).
    """
    if optimization not in GRAPH_OPTIMIZATION:
        raise ValueError(f"optimization={optimization!r} is invalid; allowed: {sorted(GRAPH_OPTIMIZATION)}")
    opts = ort.SessionOptions()
    opts.log_severity_level = 3  # errors only: the integer graphs' shared constants trigger harmless warnings
    opts.graph_optimization_level = GRAPH_OPTIMIZATION[optimization]
    if optimization == "all_no_qdq":
        opts.add_session_config_entry("session.disable_quant_qdq", "1")
    if n_threads is not None:
        opts.intra_op_num_threads = int(n_threads)
        opts.inter_op_num_threads = 1
    data = model_or_path.SerializeToString() if isinstance(model_or_path, onnx.ModelProto) else str(model_or_path)
    t0 = time.perf_counter()
    sess = ort.InferenceSession(data, sess_options=opts, providers=["CPUExecutionProvider"])
    return sess, time.perf_counter() - t0


def run_session(sess: ort.InferenceSession, x: np.ndarray, batch_size: int = 1000,
                progress: bool = False) -> tuple[list[np.ndarray], np.ndarray, float]:
    """Run ``sess`` over ``x`` in batches; returns ``(states, prediction, run_seconds)``."""
    name = sess.get_inputs()[0].name
    if x.ndim != 2:
        raise ValueError(f"x has shape {x.shape}; allowed: (B, n_inputs)")
    parts, secs = [], 0.0
    for i in progress_bar(range(0, x.shape[0], batch_size), enabled=progress, desc="onnxruntime"):
        t0 = time.perf_counter()
        parts.append(sess.run(None, {name: x[i:i + batch_size]}))
        secs += time.perf_counter() - t0
    outs = [np.concatenate([p[k] for p in parts]) for k in range(len(parts[0]))]
    return outs[:-1], outs[-1], secs


def _as_torch(x, dtype) -> torch.Tensor:
    return torch.as_tensor(np.asarray(x)).to(dtype)


def torch_free_phase(net: EqPropMLP, x, n_steps: int) -> tuple[list[np.ndarray], np.ndarray]:
    """torch float32 free phase from zeros: ``(states, argmax)`` as numpy (the float graph's reference)."""
    net32 = copy.deepcopy(net).to(torch.float32)
    s, _ = net32.free_phase(_as_torch(x, torch.float32), n_steps=n_steps)
    return [t.numpy() for t in s], s[-1].argmax(dim=1).numpy()


def fake_quant_free_phase(net, spec: HardwareSpec, x, n_steps: int,
                          dtype: torch.dtype = torch.float32) -> tuple[list[np.ndarray], np.ndarray]:
    """The one torch fake-quant path, :func:`models.qat.qat_relax` (the QDQ graph's reference).

    Weights ``W_hat`` (and feedback arrays ``F_hat``, ``W^T`` quantised as their own tensor),
    biases on the forward-accumulator grid (:func:`quant.bias_codes`: the simulator's rule), input
    ``x_hat = fake_quant_state(x, spec)``, every term rounded to the state LSB, then the hard
    sigmoid; update order ``net.schedule()``. Computed in ``dtype`` (float32: the graph's precision).

    Returns:
        ``(states, prediction)``: float numpy states ``(B, n_i)`` and int64 ``(B,)``.
    """
    from models.qat import qat_relax

    if spec.rounding == "stochastic":
        raise ValueError("fake_quant_free_phase: rounding='stochastic' needs counters; allowed: 'nearest_even' or 'floor'")
    fq = copy.deepcopy(net).to(dtype)
    s, _ = qat_relax(fq, _as_torch(x, dtype), spec, n_steps=n_steps)
    return [t.numpy() for t in s], s[-1].argmax(dim=1).numpy()


def file_bytes(path) -> int:
    """Size of a file on disk in bytes."""
    return os.path.getsize(path)


def verify_float(net: EqPropMLP, model_or_path, x: np.ndarray, *, batch_size: int = 1000,
                 reference: tuple | None = None) -> dict:
    """float graph vs torch float32: max state error, allclose under :data:`FLOAT_GRAPH_TOL`, argmax.

    ``reference``: a precomputed ``torch_free_phase(net, x, T)`` (to compare several graphs once).
    """
    meta = _meta(model_or_path, "float")
    sess, load_s = make_session(model_or_path)
    states, pred, run_s = run_session(sess, np.asarray(x, np.float32), batch_size)
    ref_s, ref_p = reference or torch_free_phase(net, x, meta["n_steps"])
    close = all(np.allclose(a, r, **FLOAT_GRAPH_TOL) for a, r in zip(states, ref_s))
    return {
        "format": "float", "n": int(len(pred)), "load_s": load_s, "run_s": run_s,
        "max_abs_state_err": float(max(np.abs(a - r).max() for a, r in zip(states, ref_s))),
        "states_allclose": bool(close),
        "argmax_agreement": float((pred == ref_p).mean()),
        "passed": bool(close and (pred == ref_p).all()),
    }


def verify_qdq(net: EqPropMLP, model_or_path, x: np.ndarray, *, spec: HardwareSpec | None = None,
               batch_size: int = 1000, optimization: str = "all", reference: tuple | None = None) -> dict:
    """QDQ graph vs the torch fake-quant path (:func:`fake_quant_free_phase`), in state LSBs.

    ``optimization`` is the onnxruntime graph optimisation level (:func:`make_session`);
    ``reference`` a precomputed ``fake_quant_free_phase(net, spec, x, T)``.
    """
    meta = _meta(model_or_path, "qdq")
    spec = spec or meta["spec"]
    sess, load_s = make_session(model_or_path, optimization=optimization)
    states, pred, run_s = run_session(sess, np.asarray(x, np.float32), batch_size)
    ref_s, ref_p = reference or fake_quant_free_phase(net, spec, x, meta["n_steps"])
    lsb = spec.state.lsb
    d_out = np.rint(np.abs(states[-1].astype(np.float64) - ref_s[-1]) / lsb)
    d_all = max(float(np.rint(np.abs(a.astype(np.float64) - r) / lsb).max()) for a, r in zip(states, ref_s))
    agree = float((pred == ref_p).mean())
    return {
        "format": "qdq", "n": int(len(pred)), "load_s": load_s, "run_s": run_s,
        "max_out_lsb": float(d_out.max()), "max_state_lsb": d_all,
        "frac_out_codes_differing": float((d_out > 0).mean()),
        "argmax_agreement": agree,
        "passed": bool(d_out.max() <= QDQ_MAX_LSB and agree >= QDQ_MIN_ARGMAX),
    }


def simulate_int(fp, codes: np.ndarray, n_steps: int, batch_size: int = 1000) -> tuple[list[np.ndarray], np.ndarray, float]:
    """``FixedPointMLP`` free phase in batches: ``(states, prediction, seconds)`` (the int graph's reference)."""
    t0 = time.perf_counter()
    ref_states = []
    for i in range(0, len(codes), batch_size):
        s, _ = fp.relax(codes[i:i + batch_size], n_steps=n_steps)
        ref_states.append(s)
    ref = [np.concatenate([r[k] for r in ref_states]) for k in range(fp.n_layers)]
    return ref, ref[-1].argmax(axis=1), time.perf_counter() - t0


def verify_int(net, model_or_path, x, *, spec: HardwareSpec | None = None, batch_size: int = 1000,
               progress: bool = False, reference: tuple | None = None) -> dict:
    """Integer graph vs :class:`hwsim.fixed_point.FixedPointMLP`: differing state codes and predictions.

    Args:
        net: the ``EqPropMLP`` (quantised with ``FixedPointMLP.from_model``) or a ``FixedPointMLP``.
        x: float inputs (quantised with ``FixedPointMLP.quantize_input``) or integer codes.
        reference: a precomputed :func:`simulate_int` result for the same inputs and ``T``.

    Returns:
        dict with ``state_mismatches`` (codes differing, all layers), ``prediction_mismatches``,
        ``int_graph_mismatches`` (their sum; ``BIT_EXACT`` means 0), times and ``passed``.
    """
    from hwsim.fixed_point import FixedPointMLP

    meta = _meta(model_or_path, "int")
    spec = spec or meta["spec"]
    fp = net if isinstance(net, FixedPointMLP) else FixedPointMLP.from_model(net, spec)
    xa = np.asarray(x)
    codes = fp.quantize_input(xa) if xa.dtype.kind == "f" else xa.astype(np.int64)
    sess, load_s = make_session(model_or_path)
    states, pred, run_s = run_session(sess, codes, batch_size, progress)
    ref, ref_p, sim_s = reference or simulate_int(fp, codes, meta["n_steps"], batch_size)
    n_state = int(sum((a != r).sum() for a, r in zip(states, ref)))
    n_pred = int((pred != ref_p).sum())
    return {
        "format": "int", "n": int(len(pred)), "load_s": load_s, "run_s": run_s, "sim_s": sim_s,
        "state_mismatches": n_state, "prediction_mismatches": n_pred, "int_graph_mismatches": n_state + n_pred,
        "n_state_codes": int(sum(a.size for a in ref)),
        "passed": n_state == 0 and n_pred == 0,
    }


def _meta(model_or_path, fmt: str) -> dict:
    from .metadata import read_metadata

    meta = read_metadata(model_or_path)
    if meta["format"] != fmt:
        raise ValueError(f"model was exported with fmt={meta['format']!r}; this check needs fmt={fmt!r}")
    return meta


def model_bytes(model: onnx.ModelProto) -> int:
    """Serialized size of an in-memory model (equals the file size of ``onnx.save``)."""
    return len(model.SerializeToString())


def write_and_size(model: onnx.ModelProto, path) -> int:
    """Save ``model`` to ``path`` (replacing it) and return the file size in bytes."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return file_bytes(path)


_RQ_PARAMS = re.compile(r"^rq([fbe])_(\d+)_mult$")


def _int_probe_pairs(model: onnx.ModelProto) -> tuple[list[tuple[str, str]], list[tuple[str, str, str]]]:
    """Tensors of an unrolled integer graph (:func:`exports.onnx_export.build_int_model`) to probe:
    ``(pre, post)`` of every accumulator overflow (saturating ``Clip`` ``*_sat``; wrap ``*_wa`` ..
    ``*_wrap``) and ``(acc, requantised, multiplier const)`` of every requantisation (``Mul *_prod``
    .. ``Add *_rq``, or ``Div *_q`` with floor rounding). The builder emits each of these node runs contiguously."""
    ovf, rq = [], []
    wrap_in, prod, q = None, None, None
    for n in model.graph.node:
        out = n.output[0]
        if n.op_type == "Clip" and re.search(r"_sat_\d+$", out):
            ovf.append((n.input[0], out))
        elif n.op_type == "Add" and re.search(r"_wa_\d+$", out):
            wrap_in = n.input[0]
        elif n.op_type == "Sub" and re.search(r"_wrap_\d+$", out) and wrap_in is not None:
            ovf.append((wrap_in, out))
            wrap_in = None
        elif n.op_type == "Mul" and re.search(r"_prod_\d+$", out):
            if prod is not None and q is not None:   # floor rounding: the quotient is the result
                rq.append((prod[0], q, prod[1]))
            prod, q = (n.input[0], n.input[1]), None
        elif n.op_type == "Div" and re.search(r"_q_\d+$", out) and prod is not None:
            q = out
        elif n.op_type == "Add" and re.search(r"_rq_\d+$", out) and prod is not None:
            rq.append((prod[0], out, prod[1]))
            prod = q = None
    if prod is not None and q is not None:
        rq.append((prod[0], q, prod[1]))
    return ovf, rq


def int_arithmetic_check(fp, model: onnx.ModelProto, codes: np.ndarray, *, batch_size: int = 500,
                         progress: bool = False) -> dict:
    """Instrumented run of an unrolled dense integer graph: every accumulator overflow and every
    requantisation the graph computes on ``codes`` is checked against :mod:`quant.ops` (the rules the
    simulator follows) on the values met, and the events that make those rules matter are counted.

    The end-to-end comparison (:func:`verify_int`) sees only states, where an accumulator clipped at
    ``hi - 1`` instead of ``hi`` is usually requantised to the same code; this check sees the
    accumulators themselves. The requantisation pairs ``(multiplier, shift)`` come from ``fp``
    (:class:`hwsim.fixed_point.FixedPointMLP`), not from the graph's constants.

    Returns:
        ``n_acc`` accumulator values, ``saturations`` (values the overflow changed),
        ``overflow_mismatches`` (graph != ``quant.ops.overflow(pre, acc_bits, signed, spec.overflow)``),
        ``n_requant`` requantised values, ``ties`` (``acc * m mod 2**shift == 2**(shift - 1)``:
        exactly half an output LSB, where nearest-even differs from round-half-up),
        ``requant_mismatches`` (graph != ``quant.ops.requantize(acc, m, shift, spec.rounding)``).
    """
    from quant import ops

    if any(g is not None for g in getattr(fp, "conv", [])):
        raise ValueError("int_arithmetic_check probes dense integer graphs; allowed: a FixedPointMLP without conv layers")
    if any(n.op_type == "Loop" for n in model.graph.node):
        raise ValueError("int_arithmetic_check needs an unrolled graph (its tensors are graph values); "
                         "allowed: build_int_model(..., loop=False)")
    spec = fp.spec
    ovf, rq = _int_probe_pairs(model)
    params = {"f": fp.fwd_requant, "b": fp.fb_requant, "e": [c.requant for c in fp.extra]}
    rq_params = []
    for acc, out, mult in rq:
        m = _RQ_PARAMS.match(mult)
        if m is None:
            raise ValueError(f"requantisation {out} multiplies by {mult!r}; expected an rq[fbe]_<k>_mult constant")
        rq_params.append(params[m.group(1)][int(m.group(2))])
    names = sorted({t for p in ovf for t in p} | {t for a, o, _ in rq for t in (a, o)})
    probe = copy.deepcopy(model)
    known = {o.name for o in probe.graph.output}
    probe.graph.output.extend(onnx.helper.make_empty_tensor_value_info(t) for t in names if t not in known)
    sess, _ = make_session(probe)
    outs = [o.name for o in sess.get_outputs()]
    res = dict.fromkeys(("n_acc", "saturations", "overflow_mismatches", "n_requant", "ties", "requant_mismatches"), 0)
    codes = np.asarray(codes, np.int64)
    for i in progress_bar(range(0, len(codes), batch_size), enabled=progress, desc="probe int graph"):
        v = dict(zip(outs, sess.run(outs, {sess.get_inputs()[0].name: codes[i:i + batch_size]})))
        for pre, post in ovf:
            ref = ops.overflow(v[pre], spec.acc_bits, True, spec.overflow)
            res["n_acc"] += v[pre].size
            res["saturations"] += int((v[pre] != ref).sum())
            res["overflow_mismatches"] += int((v[post] != ref).sum())
        for (acc, out, _), (mult, shift) in zip(rq, rq_params):
            a, got = v[acc], v[out]
            res["n_requant"] += a.size
            for mk, sk in set(zip(mult.tolist(), shift.tolist())):
                cols = (mult == mk) & (shift == sk)
                ac = a[:, cols]
                res["requant_mismatches"] += int((got[:, cols] != ops.requantize(ac, int(mk), int(sk), spec.rounding)).sum())
                if sk > 0:
                    res["ties"] += int((((ac * mk) & ((1 << sk) - 1)) == (1 << (sk - 1))).sum())
    return res

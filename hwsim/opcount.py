"""Analytic operation counts, weight memory and energy of an energy model (:class:`~models.eqprop_mlp.EqPropMLP`,
:class:`~models.skip_mlp.SkipEqPropMLP`, ... or a sizes tuple for the MLP) under a
:class:`~quant.spec.HardwareSpec`.

Everything is computed from the model's interaction terms, the spec and (optionally) the actual
weights; the energy of a count is ``sum_op count(op) * E(op)`` with ``E`` from :mod:`quant.energy`.
Each term type has an op-count kernel (:data:`OPCOUNT_KERNELS`, keyed by type; a term without one
raises :class:`models.engine.UnsupportedError`): a ``Dense`` term is a forward accumulator into
``post`` and, between state nodes, a feedback accumulator into ``pre``; a ``Bias`` is added in its
node's first forward accumulator. Terms that read only the input are *static* (the drive: once per
phase). The dense MACs per sweep and per drive come from the float kernels
(:meth:`models.energy.EnergyModel.sweep_macs`), the phases from :mod:`models.engine`
(:data:`PHASES`). Below, the MLP's closed forms; the conv coupling (fp32 and integer) in
:class:`ConvPoolOps`.

**Datapath events** (:data:`EVENTS`, :meth:`Counts.event_counts`): products, accumulator values,
requantised values, window maxima and state clamps. Their primitive ops below are this module's
datapath model (like the energy table, stated, not measured); the events themselves are measured in
an instrumented run of the integer simulator (:mod:`hwsim.op_probe`) and must equal these counts
(Track 40 ``int_event_count_match`` / ``conv_int_event_count_match``; ``tests/hwsim/test_opcount_conv.py``).

Notation: widths ``n_0 .. n_L`` (``n_0`` the input), weight ``W_i`` of shape ``(n_i, n_{i-1})``
for ``i = 1..L`` (``EqPropMLP.layers[i-1]``), batch ``B``.

**Dense MACs** (what torch computes, checked against ``torch.utils.flop_counter``: ``addmm``
and ``mm`` both count ``2 M N K`` FLOPs, so MACs = FLOPs / 2 exactly; in ``addmm`` the ``K``
adds of an output are ``K - 1`` accumulations plus the add of the bias / previous term):

* input drive ``W_1 x + b_1``: ``n_0 n_1`` per sample;
* one relaxation sweep (async and sync alike: every layer is updated once per sweep from the
  same terms): ``sum_{i>=2} 2 n_i n_{i-1}`` per sample -- every non-input matrix is used once
  forward (``W_i s_{i-1}``) and once transposed (``W_i^T s_i``, feedback into layer ``i-1``);
* a phase of ``T`` sweeps: ``T * sweep + drive`` when the drive is computed once per phase (what
  ``EqPropMLP.relax`` does), ``T * (sweep + drive)`` without reuse (``drive_mode``);
* the EqProp contrast (``EqPropMLP.contrast``): ``B n_1 n_0`` for the first layer
  (``(s2 - s1)^T x``: the input is the same in both phases) and ``2 B n_i n_{i-1}`` for the others
  (``s2_i^T s2_{i-1} - s1_i^T s1_{i-1}``).

Counts are for exactly ``T`` sweeps per phase: an upper bound when a simulator stops early at an
exact fixed point (``hwsim.fixed_point``'s ``early_exit``).

**Hardware primitive ops** (:class:`OpKey`; the datapath model, per sample unless stated):

* MAC of a ``w``-bit weight and an ``s``-bit state: one ``w x s`` integer multiply and one add at
  the accumulator width ``acc_bits``; ternary weights need no multiply (one add/sub);
  ``sparsity="codes"`` skips products with a zero weight code (from the actual quantised weights).
  fp32: one fp32 multiply and one fp32 add.
* the integer layer update follows the fixed-point simulator (docs/hwsim_semantics.md):
  ``A_f = ovf(Wq s + bq)`` (bias add at ``acc_bits``), ``A_b = ovf(Fq s')`` with ``Fq`` the
  feedback array (``W^T`` quantised as its own tensor, so each accumulator has one scale per
  output), ``p = rq(A_f) + rq(A_b) (+ rq(beta (T - c_out)))``, ``c = clamp(p, 0, ONE)``.
  ``ovf`` with ``overflow="saturate"``: two compares per accumulator (``wrap``: free);
  ``rq``: one ``acc_bits x m`` multiply when the row multiplier of :func:`quant.requant_params`
  is not 1 (``m`` its bit length), one shift, and the rounding of ``spec.rounding`` (nearest-even:
  compare + add; floor: nothing; stochastic: one random number + compare + add); the nudge is
  ``T - c_out`` (add) and a 31-bit multiplier requantisation; the terms are summed (adds at
  ``acc_bits``) and clamped (two compares). The drive ``A_f`` of the first layer (and, with
  deterministic rounding, its requantisation) is computed once per phase.
* update (integer spec with ``spec.update``, as :mod:`hwsim.onchip`): products of state codes
  ``c2_i c2_{i-1}^T - c1_i c1_{i-1}^T`` for every layer (two products, also for the input layer,
  where the fp32 contrast uses ``(s2 - s1) x^T``), accumulated over the batch into ``P``
  (:data:`UPDATE_ACC_BITS`), then per weight: requantise
  ``P`` (``lr_multiplier`` multiply if not 1, shift, rounding -- a random number when
  stochastic), add into the ``hidden_bits`` hidden weight, saturate (two compares),
  ``hidden_to_code`` (shift, nearest-even rounding, clamp); per bias: the same requantisation,
  add into the ``acc_bits`` bias register, saturate. fp32: scale the gradient (multiply), SGD step
  (multiply + add).
* one random number (counter-based hash of :mod:`quant.rng`): the seed/step/tensor counters are
  fixed per tensor, so per element one round of the hash: 3 32-bit multiplies, 4 xors,
  4 shifts (3 in ``fmix32``, 1 for the top 24 bits) -- :data:`HASH_ROUND_OPS`.
* memory: each use of a weight array reads its packed codes, its scales and (forward) its
  biases once per batch (``B`` samples share the read); hidden weights and bias registers are read
  and written per update, and the new codes written.

Weight memory (:func:`weight_memory`): codes packed at ``weights.bits`` per weight, scales as
float32 (one per row for per-channel, one per tensor otherwise), biases at ``acc_bits`` (fp32: 32),
the separate feedback arrays of the integer simulator (hidden-to-hidden weights stored twice), and
hidden weights at ``update.hidden_bits`` per weight for training.

>>> from quant import get_preset
>>> c = count_inference((4, 3, 2), get_preset("fp32"), n_steps=5)
>>> c.macs == 4 * 3 + 5 * 2 * 3 * 2       # drive once + 5 sweeps (W_2 used twice)
True
>>> c8 = count_inference((4, 3, 2), get_preset("int8"), n_steps=5)
>>> c8.energy_pj() < c.energy_pj()
True
"""
from __future__ import annotations

import dataclasses
import math
from collections import Counter

import numpy as np
from dataclasses import dataclass, field
from typing import Sequence

from models.energy import FLOAT_KERNELS, INPUT, Bias, Dense, EnergyModel, Node, is_static
from models.engine import PHASES as ENGINE_PHASES
from models.engine import UnsupportedError, check_nudging, check_update, n_nudged_phases, require_kernels, schedule_groups
from quant import energy as qenergy
from quant.quantizers import quantize_weights, requant_params
from quant.spec import HardwareSpec

DRIVE_MODES = ("every_step", "per_phase", "once")
SPARSITIES = ("dense", "codes")
PHASES = ("drive",) + ENGINE_PHASES + ("update",)
"""Phases of a :class:`Report`: the static drive, the engine's phases (:data:`models.engine.PHASES`:
``free``, ``b1``, ``b2``) and the weight update."""

FP32_SCALE_BITS = 32
"""Storage width of one weight scale (float32)."""
MULTIPLIER_BITS = 31
"""Width of a non power-of-two requantisation multiplier (:func:`quant.requant_params` default)."""

UPDATE_ACC_BITS = 32
"""Width of the update product accumulator ``P`` (outer products summed over the batch): our
modelling choice (8x8-bit products of 100 samples need < 2**21)."""

EVENTS = ("macs", "acc", "requant", "pool", "clamp")
"""Datapath events of the integer simulator, per value: ``macs`` (weight x state products, dense:
a conv at every pre-pool position, a transposed conv over the un-pooled routed map), ``acc``
(accumulator values through the overflow rule), ``requant`` (values requantised, the nudge
included; a deterministic requantisation of a per-phase accumulator counts once per phase),
``pool`` (window maxima: pooled outputs, forward and routing), ``clamp`` (state updates). Each
event costs the primitive ops of the datapath model (module docstring); the events are what
:mod:`hwsim.op_probe` counts in an instrumented run of :func:`hwsim.torch_mirror.torch_relax`."""

HASH_ROUND_OPS = (("mult", 32, 32, 3), ("xor", 32, 0, 4), ("shift", 32, 0, 4))
"""(op, bits, bits_b, count) of one per-element round of :func:`quant.rng.hash_u32_scalar`."""


@dataclass(frozen=True, order=True)
class OpKey:
    """A primitive operation: ``op`` (add, mult, cmp, shift, xor) on ``dtype`` (int, fp) operands
    of ``bits`` (and ``bits_b`` for a multiply; 0 otherwise)."""

    op: str
    dtype: str
    bits: int
    bits_b: int = 0

    @property
    def label(self) -> str:
        """``mult_int8x8``, ``add_int32``, ``mult_fp32`` ...

        >>> OpKey("mult", "int", 8, 4).label, OpKey("add", "fp", 32).label
        ('mult_int8x4', 'add_fp32')
        """
        w = f"{self.bits}x{self.bits_b}" if self.op == "mult" and self.dtype == "int" else f"{self.bits}"
        return f"{self.op}_{self.dtype}{w}"

    def energy_pj(self) -> float:
        return qenergy.op_energy_pj(self.op, self.dtype, self.bits, self.bits_b or None)


@dataclass
class Counts:
    """Operation counts of some work.

    Attributes:
        macs: dense weight x state (or state x state) products as torch computes them.
        ops: primitive hardware ops (:class:`OpKey` -> count).
        read_bits: memory bits read; ``write_bits``: bits written.
    """

    macs: int = 0
    ops: Counter = field(default_factory=Counter)
    read_bits: int = 0
    write_bits: int = 0
    events: Counter = field(default_factory=Counter)
    """Datapath events (:data:`EVENTS`): what an instrumented simulator run can count
    (:mod:`hwsim.op_probe`), independently of the per-event op table above."""

    def add(self, op: str, dtype: str, bits: int, n: int, bits_b: int = 0) -> None:
        if n:
            self.ops[OpKey(op, dtype, int(bits), int(bits_b))] += int(n)

    def __add__(self, other: "Counts") -> "Counts":
        return Counts(self.macs + other.macs, self.ops + other.ops, self.read_bits + other.read_bits,
                      self.write_bits + other.write_bits, self.events + other.events)

    def scaled(self, k: int) -> "Counts":
        """These counts repeated ``k`` times."""
        return Counts(self.macs * k, Counter({o: n * k for o, n in self.ops.items()}),
                      self.read_bits * k, self.write_bits * k, Counter({e: n * k for e, n in self.events.items()}))

    def event_counts(self) -> dict[str, int]:
        """``{"macs": ..., "acc": ..., "requant": ..., "pool": ..., "clamp": ...}`` (:data:`EVENTS`)."""
        return {"macs": int(self.macs), **{e: int(self.events.get(e, 0)) for e in EVENTS[1:]}}

    @property
    def mults(self) -> int:
        return sum(n for o, n in self.ops.items() if o.op == "mult")

    @property
    def adds(self) -> int:
        """Adds and subtracts (compares, shifts and xors are not included)."""
        return sum(n for o, n in self.ops.items() if o.op == "add")

    def by_label(self) -> dict[str, int]:
        """Counts by :attr:`OpKey.label` (sorted)."""
        out: Counter = Counter()
        for o, n in self.ops.items():
            out[o.label] += n
        return dict(sorted(out.items()))

    def compute_energy_pj(self) -> float:
        return float(sum(n * o.energy_pj() for o, n in self.ops.items()))

    def memory_energy_pj(self, memory_level: str = "sram_8kb") -> float:
        return qenergy.memory_read_energy_pj(self.read_bits + self.write_bits, memory_level)

    def energy_pj(self, memory_level: str = "sram_8kb") -> float:
        """Compute + memory energy (pJ) from :mod:`quant.energy`."""
        return self.compute_energy_pj() + self.memory_energy_pj(memory_level)


@dataclass
class Report:
    """Counts per phase (:data:`PHASES`: ``drive``, ``free``, ``b1``, ``b2``, ``update``)."""

    phases: dict[str, Counts]
    batch_size: int

    @property
    def total(self) -> Counts:
        out = Counts()
        for c in self.phases.values():
            out = out + c
        return out

    @property
    def macs(self) -> int:
        return self.total.macs

    def energy_pj(self, memory_level: str = "sram_8kb") -> float:
        return self.total.energy_pj(memory_level)

    def energy_by_phase(self, memory_level: str = "sram_8kb") -> dict[str, float]:
        return {k: c.energy_pj(memory_level) for k, c in self.phases.items()}


# --------------------------------------------------------------------------- model description
class _Graph(EnergyModel):
    """The terms of a sizes tuple ``(n_in, n_0, ..., n_out)``: the layered MLP's ``Dense`` and ``Bias``
    terms (the structure of :class:`~models.eqprop_mlp.EqPropMLP`, no weights)."""

    def __init__(self, sizes: tuple[int, ...], update: str = "async"):
        self.n_in = sizes[0]
        self.nodes = [Node(n) for n in sizes[1:]]
        self.update = update
        self.terms = []
        for i in range(len(self.nodes)):
            self.terms += [Dense(post=i, pre=i - 1 if i else INPUT, weight=f"layers.{i}.weight"),
                           Bias(node=i, bias=f"layers.{i}.bias")]


def _graph(model) -> EnergyModel:
    """``model`` itself when it declares terms (an :class:`~models.energy.EnergyModel`), else the
    layered MLP of a sizes tuple."""
    if hasattr(model, "terms") and hasattr(model, "nodes"):
        return model
    sizes = getattr(model, "sizes", model)
    try:
        sizes = tuple(int(n) for n in sizes)
    except TypeError:
        raise ValueError(f"model={model!r} is invalid; allowed: an energy model (EqPropMLP, SkipEqPropMLP) "
                         "or a sizes tuple like (784, 512, 10)")
    if len(sizes) < 2 or any(n < 1 for n in sizes):
        raise ValueError(f"sizes={sizes} is invalid; allowed: >= 2 positive widths (input, ..., output)")
    return _Graph(sizes)


def _sizes(model) -> tuple[int, ...]:
    g = _graph(model)
    return (int(g.n_in),) + tuple(n.size for n in g.nodes)


def _node_sizes(g) -> dict[int, int]:
    return {INPUT: int(g.n_in), **{i: n.size for i, n in enumerate(g.nodes)}}


def _check_int(name, v, lo=0):
    if not isinstance(v, int) or isinstance(v, bool) or v < lo:
        raise ValueError(f"{name}={v!r} is invalid; allowed: an int >= {lo}")


@dataclass(frozen=True)
class _Datapath:
    """What the spec says about widths (float or integer)."""

    is_float: bool
    w_bits: int = 32
    s_bits: int = 32
    acc_bits: int = 32
    ternary: bool = False
    rounding: str = "nearest_even"
    saturate: bool = False

    @classmethod
    def of(cls, spec: HardwareSpec) -> "_Datapath":
        if not isinstance(spec, HardwareSpec):
            raise ValueError(f"spec={spec!r} is invalid; allowed: a HardwareSpec (quant.get_preset(name))")
        if spec.analog is not None:
            raise ValueError(f"spec {spec.name!r} is analog; allowed: a digital spec (fp32 or integer); "
                             "analog counts are not modelled here")
        if spec.weights.is_float and spec.state is None and spec.acc_bits is None:
            return cls(is_float=True)
        if not spec.is_integer:
            raise ValueError(f"spec {spec.name!r} mixes float and integer parts; allowed: fully float "
                             "(weights float32, state None, acc_bits None) or spec.is_integer")
        return cls(False, spec.weights.storage_bits, spec.state.bits, spec.acc_bits, spec.weights.kind == "ternary",
                   spec.rounding, spec.overflow == "saturate")

    @property
    def dtype(self) -> str:
        return "fp" if self.is_float else "int"


@dataclass(frozen=True)
class _Matrix:
    """One stored weight array: ``(n_out, n_in)``, nonzero codes, requant multiplier width per row
    (0 = pure shift), number of stored scales."""

    n_out: int
    n_in: int
    nnz: int
    mbits: tuple[int, ...]
    n_scales: int
    n_weights: int = 0
    """Stored weights read per use when not ``n_out * n_in`` (a conv kernel reused at every position)."""
    n_acc: int = 0
    """Accumulator values formed (bias add, overflow, requantisation) when not ``n_out``: a conv's
    pooled outputs (forward) or the pre node's units (transposed conv)."""
    pool: int = 0
    """Max-pooling window side ``q`` of a conv forward / routing convolution (0: none)."""
    n_bias: int = 0
    """Stored biases read per use when not ``n_acc`` (a conv: one per channel)."""

    @property
    def outputs(self) -> int:
        return self.n_acc or self.n_out


def _quantized_matrix(w, spec, sparsity: str) -> _Matrix:
    n_out, n_in = w.shape
    q = quantize_weights(w, spec)
    nnz = int((q.codes != 0).sum()) if sparsity == "codes" else n_out * n_in
    mbits = [0 if m == 1 else int(m).bit_length() for m, _ in requant_params(q, spec)]
    if len(mbits) == 1:
        mbits = mbits * n_out
    n_scales = n_out if spec.weights.granularity == "per_channel" else 1
    return _Matrix(n_out, n_in, nnz, tuple(mbits), n_scales)


@dataclass(frozen=True)
class _Acc:
    """One accumulator of a node update: a :class:`~models.energy.Dense` term read forward
    (``W s_pre`` into ``post``) or through its feedback array (``W^T s_post`` into ``pre``), with the
    node's bias added when ``bias``. ``static``: its source is the input (computed per phase)."""

    node: int
    src: int
    matrix: _Matrix
    bias: bool = False
    route: str | None = None
    """A conv routing convolution: ``"every"`` sweep, ``"first"`` sweep of a phase or ``"never"``
    (the float kernel reuses the pooling indices of the post node's forward when ``s_pre`` is the
    same tensor; :func:`_routing_reuse`)."""

    @property
    def static(self) -> bool:
        return self.src == INPUT


class DenseOps:
    """Op-count kernel of :class:`~models.energy.Dense`: a forward accumulator into ``post`` and, between
    state nodes, a feedback accumulator into ``pre`` (the integer simulator's separate ``W^T`` array)."""

    @staticmethod
    def accumulators(t: Dense, matrix) -> list[_Acc]:
        out = [_Acc(t.post, t.pre, matrix(t.weight, False))]
        if t.pre != INPUT:
            out.append(_Acc(t.pre, t.post, matrix(t.weight, True)))
        return out

    @staticmethod
    def update_products(t: Dense, sizes: dict[int, int], is_float: bool) -> int:
        """Products per sample of the contrast: fp32 (``EqPropMLP.contrast``) forms ``(s2 - s1)^T x`` for
        an input coupling (one product), the integer update (``hwsim.onchip``) ``c2 c2'^T - c1 c1'^T``."""
        n = sizes[t.post] * sizes[t.pre]
        return n if (is_float and t.pre == INPUT) else 2 * n

    @staticmethod
    def weights(t: Dense, sizes: dict[int, int]) -> int:
        return sizes[t.post] * sizes[t.pre]


class BiasOps:
    """Op-count kernel of :class:`~models.energy.Bias`: added in the node's first forward accumulator."""

    @staticmethod
    def accumulators(t: Bias, matrix) -> list[_Acc]:
        return []

    @staticmethod
    def update_products(t: Bias, sizes: dict[int, int], is_float: bool) -> int:
        return 0

    @staticmethod
    def weights(t: Bias, sizes: dict[int, int]) -> int:
        return 0


def _conv_size(t, sizes: dict[int, int]) -> tuple[int, int, int]:
    """``(C_out Hc Wc, C_in k k, C_out)`` of a :class:`~models.conv.ConvPool`: pre-pool outputs, taps per output."""
    hc, wc = t.conv_shape
    c_out = sizes[t.post] // math.prod(t.out_shape(1)[1:])
    return c_out * hc * wc, t.in_shape[0] * t.kernel ** 2, c_out


class ConvPoolOps:
    """Op-count kernel of :class:`~models.conv.ConvPool` (float specs; what ``ConvPoolFloat`` computes).

    Per sample, with ``conv = C_out Hc Wc C_in k k`` (every pre-pool position of the convolution):

    * forward accumulator into ``post``: ``conv`` MACs (static for an input coupling: the drive);
    * between states, into ``pre``: the transposed convolution (``conv`` MACs per sweep) and the
      **routing** convolution ``conv(s_pre, W)`` when the float kernel cannot reuse the pooling
      indices of the post node's forward (:func:`_routing_reuse`: async chain: once per phase when
      ``pre`` is updated before ``post``, else never; sync: every sweep when ``post > pre``); max
      pooling, un-pooling and the bias add are free in torch's FLOP counter and here;
    * contrast (per EqProp step): ``dphi`` at both equilibria, each a routing convolution and the
      weight-gradient convolution (``conv2d_weight``): ``4 conv`` products, also for an input coupling.

    The ``C_out C_in k k`` kernel is read once per use (not per position); bias reads are not counted.
    Integer specs (the integer ConvPool of ``hwsim.fixed_point`` / ``hwsim.torch_mirror``): the same
    MACs (dense: the transposed conv multiplies the zeros of the un-pooled routed map too; a chip
    that skips them needs ``1 / q**2`` of it); each conv evaluation (forward, routing) is followed by
    ``q**2 - 1`` compares per pooled output at ``acc_bits`` (the first maximum); the forward
    accumulator adds the channel bias, overflows and is requantised per pooled output (per-channel
    multipliers of the kernel codes), the feedback accumulator per unit of ``pre`` (multipliers of
    ``Fq``, the kernel transposed and quantised per input channel). The on-chip update
    (``hwsim.onchip``): per phase a routing conv of the pre codes with the current kernel codes and
    the product of the routed post map with the pre patches (dense, ``conv`` products each:
    ``4 conv`` MACs as in fp32); one bias register per channel (the channel's summed differences).
    """

    @staticmethod
    def accumulators(t, matrix) -> list[_Acc]:
        m = matrix(t, False)
        out = [_Acc(t.post, t.pre, m, bias=t.bias is not None and m.n_acc > 0)]
        if t.pre != INPUT:
            out += [_Acc(t.pre, t.post, m, route="tbd"), _Acc(t.pre, t.post, matrix(t, True))]   # routing, transposed conv
        return out

    @staticmethod
    def update_products(t, sizes: dict[int, int], is_float: bool) -> int:
        n_out, k, _ = _conv_size(t, sizes)
        return 4 * n_out * k

    @staticmethod
    def weights(t, sizes: dict[int, int]) -> int:
        _, k, c_out = _conv_size(t, sizes)
        return c_out * k + (c_out if t.bias is not None else 0)


def _conv_kernels() -> dict[type, type]:
    try:
        from models.conv import ConvPool
    except ImportError:  # pragma: no cover
        return {}
    return {ConvPool: ConvPoolOps}


OPCOUNT_KERNELS: dict[type, type] = {Dense: DenseOps, Bias: BiasOps, **_conv_kernels()}
"""Op-count kernel of each interaction term type (:func:`models.engine.require_kernels`)."""
BACKEND = "op counter"


def _matrix_info(model, spec: HardwareSpec, sparsity: str):
    """The accumulators of every node, in term order (forward before feedback at a node as the terms
    come), biases folded into the node's first forward accumulator. Matrices from the weights when
    ``model`` has them, else dense with ``MULTIPLIER_BITS`` multipliers (none for
    ``scale_rule="power_of_two"``); the feedback array holds ``W^T`` quantised as its own tensor
    (docs/hwsim_semantics.md)."""
    dp = _Datapath.of(spec)
    g = _graph(model)
    has_weights = hasattr(model, "get_parameter")
    if sparsity not in SPARSITIES:
        raise ValueError(f"sparsity={sparsity!r} is invalid; allowed: {SPARSITIES}")
    if sparsity == "codes" and (not has_weights or dp.is_float):
        raise ValueError("sparsity='codes' needs a network (not sizes) and an integer spec; "
                         "pass the network or use sparsity='dense'")
    kernels = require_kernels(BACKEND, OPCOUNT_KERNELS, g.terms)

    def matrix(name, transposed: bool) -> _Matrix:
        if not isinstance(name, str):   # a conv term: pre-pool outputs x taps, the kernel read once
            n_out, k, c_out = _conv_size(name, _node_sizes(g))
            if dp.is_float:
                return _Matrix(n_out, k, n_out * k, (0,) * n_out, 0, n_weights=c_out * k)
            return _conv_int_matrix(model, name, spec, sparsity, transposed, _node_sizes(g))
        if has_weights:
            w = model.get_parameter(name).detach()
            w = w.t() if transposed else w
            n_out, n_in = w.shape
        else:
            t = next(t for t in g.terms if getattr(t, "weight", None) == name)
            sz = _node_sizes(g)
            n_out, n_in = (sz[t.pre], sz[t.post]) if transposed else (sz[t.post], sz[t.pre])
        if dp.is_float:
            return _Matrix(n_out, n_in, n_out * n_in, (0,) * n_out, 0)
        if has_weights:
            return _quantized_matrix(w, spec, sparsity)
        mb = 0 if spec.weights.scale_rule == "power_of_two" else MULTIPLIER_BITS
        n_scales = n_out if spec.weights.granularity == "per_channel" else 1
        return _Matrix(n_out, n_in, n_out * n_in, (mb,) * n_out, n_scales)

    accs: list[list[_Acc]] = [[] for _ in g.nodes]
    for t, k in zip(g.terms, kernels):
        for a in k.accumulators(t, matrix):
            if a.route == "tbd":
                a = dataclasses.replace(a, route=_routing_reuse(g, post=a.src, pre=a.node, integer=not dp.is_float))
            accs[a.node].append(a)
    for t in g.terms:
        if isinstance(t, Bias):
            host = next((j for j, a in enumerate(accs[t.node]) if a.src != t.node and not a.bias
                         and a.matrix.outputs == g.nodes[t.node].size and _is_forward(g, t.node, a)), None)
            if host is None:
                raise UnsupportedError(f"backend {BACKEND!r}: {t} has no Dense term into node {t.node} to fold into")
            accs[t.node][host] = dataclasses.replace(accs[t.node][host], bias=True)
    return dp, g, accs


def _routing_reuse(g, post: int, pre: int, integer: bool = False) -> str:
    """When ``ConvPoolFloat``'s feedback into ``pre`` recomputes ``conv(s_pre)``: it reuses the indices
    of the post node's forward if that ran on the same ``s_pre`` tensor earlier in the relaxation.
    async: post's group before pre's -> never; after -> only the first sweep of a phase (the cache
    is per relaxation). sync (all from the old state, nodes in index order): post < pre -> never,
    else every sweep. Integer datapath: the routes are the window maxima of the post node's forward
    conv of the same pre codes whenever it exists in the phase; sync: the same sweep's (never apart)."""
    groups = g.schedule()
    if len(groups) == 1:
        return "never" if post < pre or integer else "every"
    gi = {i: k for k, grp in enumerate(groups) for i in grp}
    return "never" if gi[post] < gi[pre] else "first"


def _routing_first(dp, g, accs, B) -> Counts:
    """Routing convolutions run once per phase (first sweep)."""
    c = Counts()
    for node_accs in accs:
        for a in node_accs:
            if a.route == "first":
                _route(c, dp, a.matrix, B)
    return c


def _route(c: Counts, dp: _Datapath, m: _Matrix, B: int) -> None:
    """A routing convolution: the conv of ``s_pre`` and (integer) its window maxima; no accumulator."""
    _accumulate(c, dp, m, B, bias=False, overflow=False)


def _conv_int_matrix(model, t, spec, sparsity: str, transposed: bool, sizes) -> _Matrix:
    """Integer ConvPool accumulator (the lowering of ``hwsim.fixed_point.ConvPoolInt``): forward (or
    routing) conv with per-channel multipliers of the kernel codes expanded to the pooled units, or
    (``transposed``) the feedback conv with those of ``Fq`` expanded to the pre node's units."""
    n_out, k, c_out = _conv_size(t, sizes)
    w = model.get_parameter(t.weight).detach().double().numpy()
    per_ch = spec.weights.granularity == "per_channel"
    if transposed:
        w = np.ascontiguousarray(w.transpose(1, 0, 2, 3))
    q = quantize_weights(w, spec)
    nnz_taps = int((np.asarray(q.codes) != 0).sum()) if sparsity == "codes" else w.size
    hc, wc = t.conv_shape
    pairs = requant_params(q, spec)
    chans = w.shape[0]
    if len(pairs) == 1:
        pairs = pairs * chans
    mb = [0 if m == 1 else int(m).bit_length() for m, _ in pairs]
    units = (sizes[t.pre] if transposed else sizes[t.post]) // chans
    mbits = tuple(b for b in mb for _ in range(units))
    return _Matrix(n_out, k, hc * wc * nnz_taps, mbits, chans if per_ch else 1, n_weights=c_out * k,
                   n_acc=len(mbits), pool=0 if transposed else int(t.pool), n_bias=0 if transposed else c_out)


def _is_forward(g, node: int, a: _Acc) -> bool:
    """``a`` is the forward read of a Dense term into ``node`` (not a feedback read)."""
    return any(isinstance(t, Dense) and t.post == node and t.pre == a.src for t in g.terms)


# ------------------------------------------------------------------------------- pieces
def _rng(c: Counts, n: int) -> None:
    for op, bits, bits_b, k in HASH_ROUND_OPS:
        c.add(op, "int", bits, k * n, bits_b)


def _round(c: Counts, dp: _Datapath, width: int, n: int, rounding: str) -> None:
    if rounding == "floor":
        return
    if rounding == "stochastic":
        _rng(c, n)
    c.add("cmp", "int", width, n)
    c.add("add", "int", width, n)


def _requant(c: Counts, dp: _Datapath, mbits: Sequence[int], in_bits: int, times: int = 1) -> None:
    """Requantise ``times`` values per entry of ``mbits`` (row multiplier widths; 0 = pure shift)
    from ``in_bits`` wide."""
    c.events["requant"] += len(mbits) * times
    for mb, k in Counter(mbits).items():
        n = k * times
        if mb:
            c.add("mult", "int", in_bits, n, mb)
        width = in_bits + mb
        c.add("shift", "int", width, n)
        _round(c, dp, width, n, dp.rounding)


def _accumulate(c: Counts, dp: _Datapath, m: _Matrix, B: int, bias: bool, overflow: bool = True) -> None:
    """``A = ovf(W s (+ b))`` for ``B`` samples: MACs, (conv) window maxima, bias add, overflow,
    weight/scale/bias reads; ``overflow=False``: the products (and pooling) only (a routing conv)."""
    dense = m.n_out * m.n_in
    n_acc, n_bias = m.outputs, (m.n_bias or m.outputs)
    c.macs += B * dense
    if dp.is_float:  # addmm: K mults and K adds per output (the bias / previous term is one of them)
        c.add("mult", "fp", 32, B * dense)
        c.add("add", "fp", 32, B * dense)
        c.read_bits += (m.n_weights or dense) * 32 + (n_bias * 32 if bias else 0)
        return
    if not dp.ternary:
        c.add("mult", "int", dp.w_bits, B * m.nnz, dp.s_bits)
    c.add("add", "int", dp.acc_bits, B * m.nnz + (B * n_acc if bias else 0))
    if m.pool:                                              # first maximum of each q x q window
        c.add("cmp", "int", dp.acc_bits, B * n_acc * (m.pool ** 2 - 1))
        c.events["pool"] += B * n_acc
    c.read_bits += (m.n_weights or dense) * dp.w_bits + m.n_scales * FP32_SCALE_BITS
    if not overflow:
        return
    c.events["acc"] += B * n_acc
    if dp.saturate:
        c.add("cmp", "int", dp.acc_bits, 2 * B * n_acc)
    c.read_bits += n_bias * dp.acc_bits if bias else 0




def _drive(dp, g, accs, B) -> Counts:
    """The static accumulators (input couplings, e.g. ``W_1 x + b_1``; a skip coupling ``S x``) and,
    with deterministic rounding, their requantisation: computed once per phase."""
    c = Counts()
    for node_accs in accs:
        for a in node_accs:
            if a.static:
                _accumulate(c, dp, a.matrix, B, bias=a.bias)
                if not dp.is_float and dp.rounding != "stochastic":
                    _requant(c, dp, a.matrix.mbits, dp.acc_bits, B)
    return c


def _node_update(dp, g, accs, B, i: int, nudged: bool) -> Counts:
    """Update of state node ``i`` for ``B`` samples:
    ``p = sum_k rq(A_k) (+ rq(beta (T - c)))``, ``c = clamp(p, 0, ONE)``."""
    c = Counts()
    n = g.nodes[i].size
    n_rq = 0
    for a in accs[i]:
        if a.route is not None:
            if a.route == "every":
                _route(c, dp, a.matrix, B)
            continue
        if not a.static:
            _accumulate(c, dp, a.matrix, B, bias=a.bias)
        if not dp.is_float and (not a.static or dp.rounding == "stochastic"):
            _requant(c, dp, a.matrix.mbits, dp.acc_bits, B)  # stochastic: static terms re-rounded every sweep
        n_rq += 1
    w = 32 if dp.is_float else dp.acc_bits
    if nudged and i == len(g.nodes) - 1:
        if dp.is_float:
            c.add("add", "fp", 32, B * n)                       # s - onehot(y)
            c.add("mult", "fp", 32, B * n)                      # * beta
            c.add("add", "fp", 32, B * n)                       # into the pre-activation
        else:
            c.add("add", "int", dp.s_bits + 1, B * n)           # T - c_out
            _requant(c, dp, [MULTIPLIER_BITS] * n, dp.s_bits + 1, B)  # * beta (31-bit multiplier)
            n_rq += 1
    if not dp.is_float:
        c.add("add", "int", w, B * n * (n_rq - 1))              # sum of the requantised terms
    c.add("cmp", dp.dtype, w, 2 * B * n)                        # hard sigmoid clamp
    c.events["clamp"] += B * n
    return c


def _sweep(dp, g, accs, B, nudged: bool) -> Counts:
    """One sweep: every node once (whatever the schedule's grouping)."""
    c = Counts()
    for group in g.schedule():
        for i in group:
            c = c + _node_update(dp, g, accs, B, i, nudged)
    return c


def _phase(dp, g, accs, B, n_steps: int, nudged: bool, drive_mode: str) -> Counts:
    """``n_steps`` sweeps; the drive is included only when recomputed every sweep (else it is
    counted in the ``drive`` phase)."""
    c = _sweep(dp, g, accs, B, nudged).scaled(n_steps) + _routing_first(dp, g, accs, B)
    if drive_mode == "every_step":
        c = c + _drive(dp, g, accs, B).scaled(n_steps)
    return c


def _check_common(n_steps_name, n_steps, batch_size, drive_mode):
    _check_int(n_steps_name, n_steps, 1)
    _check_int("batch_size", batch_size, 1)
    if drive_mode not in DRIVE_MODES:
        raise ValueError(f"drive_mode={drive_mode!r} is invalid; allowed: {DRIVE_MODES}")


# ---------------------------------------------------------------------------------- API
def sweep_macs(model) -> int:
    """Dense MACs of one relaxation sweep per sample (:meth:`models.energy.EnergyModel.sweep_macs`:
    every state-to-state coupling forward and transposed); for the MLP ``sum_{i>=2} 2 n_i n_{i-1}``.

    >>> sweep_macs((784, 512, 10))
    10240
    """
    return _graph(model).sweep_macs()


def drive_macs(model) -> int:
    """Dense MACs of the static (input-only) terms per sample, computed once per phase: ``n_0 n_1``
    for the MLP (``W_1 x``), plus ``n_0 n_out`` for a skip coupling.

    >>> drive_macs((784, 512, 10))
    401408
    """
    g = _graph(model)
    sizes = _node_sizes(g)
    return sum(FLOAT_KERNELS[type(t)].macs(t, sizes) for t in g.terms if is_static(t))


def count_inference(model, spec: HardwareSpec, *, n_steps: int, batch_size: int = 1,
                    drive_mode: str = "per_phase", sparsity: str = "dense") -> Report:
    """Counts of one free phase (inference) of ``batch_size`` samples.

    Args:
        model: an energy model (:class:`~models.eqprop_mlp.EqPropMLP`,
            :class:`~models.skip_mlp.SkipEqPropMLP`; its weights give ternary sparsity and the
            requantisation multipliers) or a sizes tuple (the MLP, dense; multipliers assumed
            ``MULTIPLIER_BITS`` wide unless ``scale_rule="power_of_two"``).
        spec: fp32 or an integer :class:`HardwareSpec`.
        n_steps: relaxation sweeps ``T``.
        drive_mode: ``"per_phase"`` (drive once, as ``EqPropMLP.relax``) or ``"every_step"``
            (recomputed each sweep); ``"once"`` equals ``"per_phase"`` here.
        sparsity: ``"dense"`` or ``"codes"`` (skip zero weight codes; needs a network).

    Returns:
        :class:`Report` with phases ``drive`` and ``free`` (``drive`` empty for ``every_step``,
        whose drives are inside ``free``).
    """
    _check_common("n_steps", n_steps, batch_size, drive_mode)
    dp, g, accs = _matrix_info(model, spec, sparsity)
    B = batch_size
    if drive_mode == "every_step":
        phases = {"drive": Counts(), "free": _phase(dp, g, accs, B, n_steps, False, drive_mode)}
    else:
        phases = {"drive": _drive(dp, g, accs, B),
                  "free": _sweep(dp, g, accs, B, False).scaled(n_steps) + _routing_first(dp, g, accs, B)}
    return Report(phases, B)


def _update(dp, g, spec, B: int) -> Counts:
    """The contrast (per-term products of :data:`OPCOUNT_KERNELS`, summed over the batch) and one
    update of every parameter."""
    c = Counts()
    sizes = _node_sizes(g)
    kernels = require_kernels(BACKEND, OPCOUNT_KERNELS, g.terms)
    dt = dp.dtype
    pw = UPDATE_ACC_BITS if not dp.is_float else 32
    sb = 32 if dp.is_float else dp.s_bits
    n_w = sum(k.weights(t, sizes) for t, k in zip(g.terms, kernels))
    n_b = sum(sizes[t.node] for t in g.terms if isinstance(t, Bias))
    for t, k in zip(g.terms, kernels):
        if not dp.is_float and k is ConvPoolOps:
            n_w, n_b = _conv_int_update(c, dp, t, sizes, B, n_w, n_b)
            continue
        if isinstance(t, Bias):
            n_out = sizes[t.node]
            c.add("add", dt, sb + (0 if dp.is_float else 1), B * n_out)  # d = s2 - s1 (bias product)
            c.add("add", dt, pw, B * n_out)                               # bias sums over the batch
            continue
        n_prod = k.update_products(t, sizes, dp.is_float)
        c.macs += B * n_prod
        if dp.is_float:
            c.add("mult", "fp", 32, B * n_prod)
        else:
            c.add("mult", "int", sb, B * n_prod, sb)
        c.add("add", dt, pw, B * n_prod)  # accumulate P over the batch
    n_params = n_w + n_b
    if dp.is_float:
        c.add("mult", "fp", 32, n_params)        # * -1 / ((b2 - b1) B)
        c.add("mult", "fp", 32, n_params)        # * lr
        c.add("add", "fp", 32, n_params)         # w -= ...
        c.read_bits += 32 * n_params
        c.write_bits += 32 * n_params
        return c
    up = spec.update
    if up is None:
        raise ValueError(f"spec {spec.name!r} has update=None; allowed: an integer spec with an UpdateSpec "
                         "(quant.get_preset('int8')) for training counts")
    mult_bits = int(up.lr_multiplier).bit_length() if up.lr_multiplier != 1 else 0
    rounding = "stochastic" if up.stochastic else "nearest_even"
    for n, reg_bits in ((n_w, up.hidden_bits), (n_b, dp.acc_bits)):
        if mult_bits:
            c.add("mult", "int", pw, n, mult_bits)
        c.add("shift", "int", pw + mult_bits, n)
        _round(c, dp, pw + mult_bits, n, rounding)
        c.add("add", "int", reg_bits, n)                    # H += delta
        c.add("cmp", "int", reg_bits, 2 * n)                # saturate
        c.read_bits += reg_bits * n
        c.write_bits += reg_bits * n
    c.add("shift", "int", up.hidden_bits, n_w)              # hidden_to_code
    _round(c, dp, up.hidden_bits, n_w, "nearest_even")
    c.add("cmp", "int", dp.w_bits, 2 * n_w)                 # clamp the code
    c.write_bits += dp.w_bits * n_w
    return c


def _conv_int_update(c: Counts, dp: _Datapath, t, sizes, B: int, n_w: int, n_b: int) -> tuple[int, int]:
    """The on-chip conv kernel update (``hwsim.onchip``): per phase a routing conv (with pooling) of the
    pre codes and the routed-map x patch product; the channel bias product. Returns ``(n_w, n_b)``
    with the conv biases moved from the weights (``ConvPoolOps.weights``) to the bias registers."""
    n_out, k, c_out = _conv_size(t, sizes)
    conv = n_out * k                       # MACs of one conv evaluation per sample
    n_post = sizes[t.post]
    q2 = int(t.pool) ** 2
    c.macs += B * 4 * conv
    if not dp.ternary:
        c.add("mult", "int", dp.w_bits, 2 * B * conv, dp.s_bits)                              # routing convs
    c.add("add", "int", dp.acc_bits, 2 * B * conv)
    c.add("cmp", "int", dp.acc_bits, 2 * B * n_post * (q2 - 1))
    c.events["pool"] += 2 * B * n_post
    c.add("mult", "int", dp.s_bits, 2 * B * conv, dp.s_bits)                                  # U (x) patches
    c.add("add", "int", UPDATE_ACC_BITS, 2 * B * conv)
    c.read_bits += 2 * c_out * k * dp.w_bits
    if t.bias is not None:
        c.add("add", "int", dp.s_bits + 1, B * n_post)          # d = c2 - c1 per unit
        c.add("add", "int", UPDATE_ACC_BITS, B * n_post)        # summed per channel and over the batch
        return n_w - c_out, n_b + c_out
    return n_w, n_b


def count_training_step(model, spec: HardwareSpec, *, n_free_steps: int, n_nudge_steps: int,
                        nudging: str = "symmetric", batch_size: int = 1, drive_mode: str | None = None,
                        sparsity: str = "dense") -> Report:
    """Counts of one EqProp training step (the phases of :func:`models.engine.run_phases` + the update).

    Phases (:data:`PHASES`): ``free`` (``n_free_steps`` sweeps), ``b1`` (only when the nudging has two
    nudged phases, :func:`models.engine.n_nudged_phases`) and ``b2`` (``n_nudge_steps`` each),
    ``update`` (contrast outer products for ``batch_size`` samples, then one update per parameter),
    ``drive`` (the static terms, e.g. ``W_1 x``: once per phase for ``"per_phase"``, as the
    fixed-point simulator runs it; once per step for ``"once"``, as ``EqPropMLP.eqprop_grads`` runs
    it; folded into each sweep for ``"every_step"``). Default (None): ``"once"`` for a float spec,
    ``"per_phase"`` for an integer one, i.e. what the code of that representation does.

    >>> from quant import get_preset
    >>> r = count_training_step((4, 3, 2), get_preset("fp32"), n_free_steps=3, n_nudge_steps=2)
    >>> r.macs == 1 * 12 + (3 + 2 + 2) * 12 + (12 + 2 * 6)   # 1 drive, 7 sweeps, contrast
    True
    """
    if drive_mode is None:
        drive_mode = "per_phase" if spec.is_integer else "once"
    _check_common("n_free_steps", n_free_steps, batch_size, drive_mode)
    _check_int("n_nudge_steps", n_nudge_steps, 1)
    check_nudging(nudging, who="nudging")
    dp, g, accs = _matrix_info(model, spec, sparsity)
    B = batch_size
    n_nudged = n_nudged_phases(nudging)
    drives = {"every_step": 0, "per_phase": 1 + n_nudged, "once": 1}[drive_mode]
    phases = {"drive": _drive(dp, g, accs, B).scaled(drives),
              "free": _phase(dp, g, accs, B, n_free_steps, False, drive_mode)}
    for name in ENGINE_PHASES[1:]:  # b1, b2
        if name == "b2" or n_nudged == 2:
            phases[name] = _phase(dp, g, accs, B, n_nudge_steps, True, drive_mode)
    phases["update"] = _update(dp, g, spec, B)
    return Report(phases, B)


def bptt_macs(model, *, n_steps: int, batch_size: int = 1, update: str = "async") -> dict[str, int]:
    """Dense MACs of one BPTT gradient (:func:`models.gradients.bptt_grads`): the static terms once,
    forward through ``n_steps`` sweeps from the zero state (schedule of the model's terms for
    ``update``), then backward by autograd.

    Backward is derived from the schedule: walk back from the loss (on the last output state)
    through the node updates it depends on; each reached matmul costs its weight gradient (one
    product of the same size) and, when its input state needs a gradient (not the initial zero
    state, not ``x``), its input gradient (another). A reached static term costs its weight gradient.
    A ConvPool coupling is a product of ``conv`` MACs each way (the pooled conv forward, the
    transposed conv of the routed map), plus the routing conv (forward only: its output gives the
    pooling indices, no gradient) where the float kernel recomputes it (:func:`_bptt_route_recomputed`);
    pooling and un-pooling cost nothing, as in torch's FLOP counter.

    >>> bptt_macs((20, 7, 5, 3), n_steps=3, batch_size=4)["backward"]
    2080
    """
    g = _graph(model)
    _check_int("n_steps", n_steps, 1)
    _check_int("batch_size", batch_size, 1)
    check_update(update)
    sizes = _node_sizes(g)
    B = batch_size
    n = len(g.nodes)
    # per node: its dynamic inputs (source node, macs) and its static terms' macs
    dyn: list[list[tuple[int, int]]] = [[] for _ in range(n)]
    static: list[int] = [0] * n
    conv_kernels = _conv_kernels()
    routing: list[int] = [0] * n   # per node: routing convs recomputed at its update (forward only)
    for t in g.terms:
        if isinstance(t, Bias):
            continue
        if isinstance(t, Dense):
            m = sizes[t.post] * sizes[t.pre]
        elif type(t) in conv_kernels:
            n_out, k, _ = _conv_size(t, sizes)
            m = n_out * k
            if t.pre != INPUT and _bptt_route_recomputed(g, t.post, t.pre, update):
                routing[t.pre] += m
        else:
            raise UnsupportedError(f"backend 'bptt op counter' has no kernel for interaction term {t}; "
                                   "it supports: Bias, Dense, ConvPool")
        if t.pre == INPUT:
            static[t.post] += m
        else:
            dyn[t.post].append((t.pre, m))
            dyn[t.pre].append((t.post, m))
    # graph nodes: each node update creates one, (node, [(input graph node or None, macs)])
    nodes: list[tuple[int, list]] = []
    cur: list = [None] * n
    forward = sum(static)
    for _ in range(n_steps):
        for group in schedule_groups(update, g.interaction_edges(), n):
            snap = list(cur)  # nodes of a group read the state at its start (async: no edges inside)
            for i in group:
                ins = [(snap[src], m) for src, m in dyn[i]]
                nodes.append((i, ins))
                forward += sum(m for _, m in ins) + routing[i]
                cur[i] = len(nodes) - 1
    needed = set()
    stack = [cur[n - 1]]
    static_needed: set[int] = set()
    backward = 0
    while stack:
        k = stack.pop()
        if k is None or k in needed:
            continue
        needed.add(k)
        i, ins = nodes[k]
        static_needed.add(i)
        for src, m in ins:
            backward += m                     # weight gradient
            if src is not None:
                backward += m                 # input-state gradient
                stack.append(src)
    backward += sum(static[i] for i in static_needed)   # static weight gradients (x needs none)
    return {"forward": B * forward, "backward": B * backward, "total": B * (forward + backward)}


def _bptt_route_recomputed(g, post: int, pre: int, update: str) -> bool:
    """BPTT steps with ``net.step`` (a new sweeper, so a new routing cache, every sweep): the feedback
    into ``pre`` reuses the post node's pooling indices only when the post node's forward ran earlier
    in the same sweep on the same ``s_pre``: async, post's group before pre's; sync, ``post < pre``."""
    groups = schedule_groups(update, g.interaction_edges(), len(g.nodes))
    if len(groups) == 1:
        return not post < pre
    gi = {i: k for k, grp in enumerate(groups) for i in grp}
    return not gi[post] < gi[pre]


def weight_memory(model, spec: HardwareSpec) -> dict[str, int]:
    """Bytes to store the network under ``spec`` (each tensor packed, rounded up to whole bytes).

    Returns:
        ``weight_bytes`` (codes at ``weights.storage_bits`` + scales as float32), ``code_bytes``,
        ``scale_bytes``, ``bias_bytes`` (at ``acc_bits``; fp32: 32 bits), ``feedback_bytes``
        (integer specs: codes + scales of the feedback arrays ``W^T`` of the couplings between state
        nodes, see docs/hwsim_semantics.md; 0 for fp32), ``hidden_bytes`` (``update.hidden_bits``
        per weight; 0 without an update spec), ``inference_bytes`` = weights + biases + feedback,
        ``training_bytes`` = inference + hidden.

    >>> from quant import get_preset
    >>> weight_memory((784, 512, 10), get_preset("int4"))["code_bytes"]   # 4 bits per weight
    203264
    """
    g = _graph(model)
    dp = _Datapath.of(spec)
    require_kernels(BACKEND, OPCOUNT_KERNELS, g.terms)
    sizes = _node_sizes(g)
    code = scale = bias = hidden = feedback = 0
    for t in g.terms:
        if isinstance(t, Bias):
            bias += math.ceil(sizes[t.node] * dp.acc_bits / 8)
            continue
        if not isinstance(t, Dense):   # a ConvPool: the C_out x C_in k k kernel and C_out biases
            _, k, c_out = _conv_size(t, sizes)
            code += math.ceil(c_out * k * dp.w_bits / 8)
            bias += math.ceil(c_out * dp.acc_bits / 8) if t.bias is not None else 0
            if not dp.is_float:   # per-channel scales; the feedback kernel Fq (C_in x C_out k k), per input channel
                per_ch = spec.weights.granularity == "per_channel"
                scale += math.ceil((c_out if per_ch else 1) * FP32_SCALE_BITS / 8)
                if t.pre != INPUT:
                    feedback += math.ceil(c_out * k * dp.w_bits / 8)
                    feedback += math.ceil((t.in_shape[0] if per_ch else 1) * FP32_SCALE_BITS / 8)
            if spec.update is not None:
                hidden += math.ceil(c_out * k * spec.update.hidden_bits / 8)
            continue
        n_out, n_in = sizes[t.post], sizes[t.pre]
        code += math.ceil(n_out * n_in * dp.w_bits / 8)
        if not dp.is_float:
            per_ch = spec.weights.granularity == "per_channel"
            scale += math.ceil((n_out if per_ch else 1) * FP32_SCALE_BITS / 8)
            if t.pre != INPUT:  # feedback array W^T: (n_in, n_out), one scale per row of W^T
                feedback += math.ceil(n_out * n_in * dp.w_bits / 8)
                feedback += math.ceil((n_in if per_ch else 1) * FP32_SCALE_BITS / 8)
        if spec.update is not None:
            hidden += math.ceil(n_out * n_in * spec.update.hidden_bits / 8)
    inference = code + scale + bias + feedback
    return {"weight_bytes": code + scale, "code_bytes": code, "scale_bytes": scale, "bias_bytes": bias,
            "feedback_bytes": feedback, "hidden_bytes": hidden, "inference_bytes": inference,
            "training_bytes": inference + hidden}

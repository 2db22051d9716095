"""Number formats of the hardware spec: frozen, validated, JSON-serialisable dataclasses.

* :class:`WeightFormat` -- how a real weight becomes an integer code and a scale;
* :class:`FixedPoint`   -- a state / activation format ``code * 2**-frac_bits``;
* :class:`UpdateSpec`   -- precision of the on-chip learning rule ("hidden weights");
* :class:`AnalogSpec`   -- data of an analog crossbar (behaviour lives in hwsim).

Every class validates in ``__post_init__`` (``ValueError`` naming the field, the bad value and
what is allowed) and has ``to_dict`` / ``from_dict`` (unknown keys are errors).
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, ClassVar

import numpy as np

from . import ops

WEIGHT_KINDS = ("float32", "int", "int8", "int4", "ternary")
_IMPLIED_BITS = {"float32": 32, "int8": 8, "int4": 4, "ternary": 2}
GRANULARITIES = ("per_tensor", "per_channel")
SCALE_RULES = ("max_abs", "power_of_two", "mse")
ONNX_CONTAINER_BITS = (4, 8, 16, 32)  # ONNX integer tensor types that hold weight codes
DEVICE_MODELS = ("ideal", "constant_step", "linear_step", "soft_bounds", "exp_step", "pow_step")
"""In-situ update models of :class:`AnalogSpec` (``device_model``); behaviour in :mod:`hwsim.devices`."""


def _bad(cls: type, field: str, value: Any, allowed: str) -> ValueError:
    return ValueError(f"{cls.__name__}.{field}={value!r} is invalid; allowed: {allowed}")


def _is_int(x: Any) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, bool)


def _check_int(cls, field, value, lo, hi):
    if not _is_int(value) or not lo <= value <= hi:
        raise _bad(cls, field, value, f"an int in [{lo}, {hi}]")


def _check_float(cls, field, value, lo, hi, lo_open=False, hi_open=False):
    ok = isinstance(value, (int, float, np.floating)) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (value > lo if lo_open else value >= lo) and (value < hi if hi_open else value <= hi)
    if not ok:
        lb, rb = ("(" if lo_open else "["), (")" if hi_open else "]")
        raise _bad(cls, field, value, f"a finite float in {lb}{lo}, {hi}{rb}")


def _check_choice(cls, field, value, choices):
    if value not in choices:
        raise _bad(cls, field, value, f"one of {choices}")


def _check_bool(cls, field, value):
    if not isinstance(value, bool):
        raise _bad(cls, field, value, "True or False")


class SpecBase:
    """Mixin: ``to_dict`` / ``from_dict`` for flat or nested spec dataclasses.

    ``_NESTED`` maps a field name to the dataclass its dict value is parsed into (``None``
    values stay ``None``).
    """

    _NESTED: ClassVar[dict[str, type]] = {}

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of JSON types (nested specs become dicts)."""
        out = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            out[f.name] = v.to_dict() if isinstance(v, SpecBase) else v
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]):
        """Build from a dict made by :meth:`to_dict`; unknown keys raise ``ValueError``."""
        if not isinstance(d, dict):
            raise ValueError(f"{cls.__name__}.from_dict got {type(d).__name__}; allowed: a dict")
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(d) - set(names))
        if unknown:
            raise ValueError(f"{cls.__name__}: unknown keys {unknown}; allowed: {names}")
        kw = dict(d)
        for name, sub in cls._NESTED.items():
            if name in kw and isinstance(kw[name], dict):
                kw[name] = sub.from_dict(kw[name])
        return cls(**kw)


@dataclasses.dataclass(frozen=True)
class WeightFormat(SpecBase):
    """Weight representation: ``w ~= code * scale`` with integer ``code``.

    A real weight maps to a code by ``code = clamp(round_half_even(w / scale), qmin, qmax)``
    (weights are quantised offline, so always round-to-nearest-even; the spec's ``rounding``
    applies to states and the learning rule). Ternary uses a threshold instead, see below.

    Attributes:
        kind: ``float32`` (no quantisation), ``int`` (any ``bits`` in 2..16), ``int8``,
            ``int4``, ``ternary`` (codes in {-1, 0, +1}). Bits are implied except for ``int``.
        bits: code width; filled in from ``kind`` when ``None``.
        narrow_range: drop code ``-2**(bits-1)`` so the range is symmetric (int8: [-127, 127]).
            Must be True for ternary.
        granularity: ``per_tensor`` (one scale) or ``per_channel``: for ``W`` of shape
            ``(out, in)`` one scale per output row, ``scale`` of shape ``(out, 1)`` (for more
            dims, per index of axis 0).
        scale_rule: ``max_abs`` (``scale = max|w| / qmax``, nothing clips), ``power_of_two``
            (the smallest ``2**-k >= max|w| / qmax``, so a chip uses shifts), ``mse`` (grid
            search of the clipping ratio minimising squared error, see
            :func:`quant.quantizers.weight_scale`). Ternary: see ``ternary_threshold``.
        ternary_threshold: ``t`` in the TWN rule (Li & Liu 2016, "Ternary Weight Networks",
            arXiv:1605.04711): ``Delta = t * mean|w|`` (default 0.7, their approximation of the
            L2-optimal threshold), ``code = sign(w) * (|w| > Delta)``; scale ``alpha`` =
            ``mean{|w| : |w| > Delta}`` (``mse``, TWN's optimum), ``max|w|`` (``max_abs``),
            or ``alpha`` rounded to the nearest power of two in log2 (``power_of_two``).
            Ignored for other kinds.

    >>> WeightFormat("int8").bits, WeightFormat("int8").qmin, WeightFormat("int8").qmax
    (8, -127, 127)
    >>> WeightFormat("int", bits=3, narrow_range=False).qmin
    -4
    >>> WeightFormat("int4", granularity="per_row")
    Traceback (most recent call last):
    ...
    ValueError: WeightFormat.granularity='per_row' is invalid; allowed: one of ('per_tensor', 'per_channel')
    """

    kind: str = "int8"
    bits: int | None = None
    narrow_range: bool = True
    granularity: str = "per_channel"
    scale_rule: str = "max_abs"
    ternary_threshold: float = 0.7

    def __post_init__(self):
        cls = type(self)
        _check_choice(cls, "kind", self.kind, WEIGHT_KINDS)
        if self.kind == "int":
            _check_int(cls, "bits", self.bits, 2, 16)
        elif self.bits is None:
            object.__setattr__(self, "bits", _IMPLIED_BITS[self.kind])
        elif self.bits != _IMPLIED_BITS[self.kind]:
            raise _bad(cls, "bits", self.bits, f"None or {_IMPLIED_BITS[self.kind]} for kind={self.kind!r}")
        _check_bool(cls, "narrow_range", self.narrow_range)
        if self.kind == "ternary" and not self.narrow_range:
            raise _bad(cls, "narrow_range", False, "True for kind='ternary' (codes {-1, 0, 1})")
        _check_choice(cls, "granularity", self.granularity, GRANULARITIES)
        _check_choice(cls, "scale_rule", self.scale_rule, SCALE_RULES)
        _check_float(cls, "ternary_threshold", self.ternary_threshold, 0.0, 3.0, lo_open=True)

    @property
    def is_float(self) -> bool:
        """True for ``float32`` (no integer codes)."""
        return self.kind == "float32"

    @property
    def qmin(self) -> int:
        """Smallest code (signed, two's complement)."""
        return ops.min_int(True, self.narrow_range, self.bits)

    @property
    def qmax(self) -> int:
        """Largest code."""
        return ops.max_int(True, self.narrow_range, self.bits)

    @property
    def storage_bits(self) -> int:
        """Bits one stored weight code takes on the chip: ``bits`` (ternary: 2, codes packed densely;
        what :mod:`hwsim.opcount` charges for weight memory and traffic).

        >>> [WeightFormat(k).storage_bits for k in ("int8", "int4", "ternary")]
        [8, 4, 2]
        """
        return int(self.bits)

    @property
    def onnx_storage_bits(self) -> int:
        """Width of the ONNX integer container that stores one code: the smallest of INT4, INT8, INT16,
        INT32 holding ``bits`` (ternary codes {-1, 0, 1} are stored as INT4: ONNX has no 2-bit type).

        >>> [WeightFormat(k).onnx_storage_bits for k in ("int8", "int4", "ternary")], WeightFormat("int", bits=6).onnx_storage_bits
        ([8, 4, 4], 8)
        """
        return next(w for w in ONNX_CONTAINER_BITS if self.bits <= w)


@dataclasses.dataclass(frozen=True)
class FixedPoint(SpecBase):
    """Fixed-point number ``value = code * 2**-frac_bits`` with a ``bits``-wide integer code.

    Attributes:
        bits: code width, 1..32.
        frac_bits: fraction bits (LSB = ``2**-frac_bits``), -32..64 (may exceed ``bits``).
        signed: two's complement signed or unsigned codes.

    For hard-sigmoid EqProp states in ``[0, 1]`` use unsigned with ``frac_bits = bits - 1``:
    ``1.0`` is the code ``2**(bits-1)`` exactly and the clamp ``[0, 1]`` is the integer clamp
    ``[0, 2**(bits-1)]`` (costs the top half of the code space, but ``rho(1) = 1`` holds).

    >>> s = FixedPoint(8, 7, signed=False)
    >>> s.lsb, s.qmin, s.qmax, s.max_value
    (0.0078125, 0, 255, 1.9921875)
    >>> s.to_code(np.array([0.0, 0.5, 1.0, 0.00390625, 3.0])).tolist()   # 2**-8 ties to even
    [0, 64, 128, 0, 255]
    >>> s.from_code(np.array([128])).tolist()
    [1.0]
    """

    bits: int = 8
    frac_bits: int = 7
    signed: bool = False

    def __post_init__(self):
        cls = type(self)
        _check_int(cls, "bits", self.bits, 1, 32)
        _check_int(cls, "frac_bits", self.frac_bits, -32, 64)
        _check_bool(cls, "signed", self.signed)
        if self.signed and self.bits < 2:
            raise _bad(cls, "bits", self.bits, "an int in [2, 32] when signed")

    @property
    def lsb(self) -> float:
        """Value of one code step, ``2**-frac_bits``."""
        return math.ldexp(1.0, -self.frac_bits)

    @property
    def qmin(self) -> int:
        """Smallest code."""
        return ops.min_int(self.signed, False, self.bits)

    @property
    def qmax(self) -> int:
        """Largest code."""
        return ops.max_int(self.signed, False, self.bits)

    @property
    def min_value(self) -> float:
        """Smallest representable value."""
        return math.ldexp(self.qmin, -self.frac_bits)

    @property
    def max_value(self) -> float:
        """Largest representable value."""
        return math.ldexp(self.qmax, -self.frac_bits)

    def code_of(self, value: float) -> int:
        """Code of a value that must be exactly representable (e.g. ``1.0``).

        >>> FixedPoint(8, 7).code_of(1.0)
        128
        """
        c = math.ldexp(float(value), self.frac_bits)
        if c != int(c) or not self.qmin <= int(c) <= self.qmax:
            raise ValueError(f"value={value!r} is not representable in {self}")
        return int(c)

    def to_code(self, x, rounding: str = "nearest_even", u24=None) -> np.ndarray:
        """numpy: real values -> saturated int64 codes (see :func:`quant.quantizers.quantize_state`).

        ``x * 2**frac_bits`` is exact in float64; then ``rounding``, then saturation to
        ``[qmin, qmax]``. ``u24``: uniforms for ``"stochastic"`` (:func:`quant.rng.uniform_u24`).
        """
        t = np.ldexp(np.asarray(x, dtype=np.float64), self.frac_bits)
        r = ops.round_to_int(t, rounding, u24)
        return np.clip(r, self.qmin, self.qmax).astype(np.int64)

    def from_code(self, codes) -> np.ndarray:
        """numpy: codes -> float64 values ``code * 2**-frac_bits`` (exact)."""
        return np.ldexp(np.asarray(codes, dtype=np.float64), -self.frac_bits)


@dataclasses.dataclass(frozen=True)
class UpdateSpec(SpecBase):
    """Precision of the on-chip EqProp weight update.

    The chip keeps a signed ``hidden_bits`` "hidden weight" ``H`` per synapse (saturating).
    Its weight code is ``W = clamp(round_half_even(H / 2**(hidden_bits - weight_bits)), qmin,
    qmax)`` (:func:`quant.quantizers.hidden_to_code`): ``H`` is ``W`` with
    ``hidden_bits - weight_bits`` extra fraction bits. An update with integer product ``P``
    (e.g. an outer product of state codes, summed over the batch) is

        ``H <- saturate(H + round(P * lr_multiplier / 2**lr_shift), hidden_bits)``

    with ``round`` = :func:`quant.ops.requantize` (stochastic when ``stochastic`` else
    nearest-even). The real learning rate is therefore
    ``lr_multiplier * 2**-lr_shift`` hidden-LSBs per unit of ``P``.

    Attributes:
        hidden_bits: width of ``H``, 2..32 (>= the weight bits; checked by HardwareSpec).
        lr_shift: right shift of the update, 0..62.
        lr_multiplier: integer multiplier of the update, 1..2**31-1 (1 = pure shift).
        stochastic: stochastic rounding of the update (unbiased; keeps small updates alive).

    >>> UpdateSpec(hidden_bits=16, lr_shift=10).lr
    0.0009765625
    """

    hidden_bits: int = 16
    lr_shift: int = 8
    lr_multiplier: int = 1
    stochastic: bool = True

    def __post_init__(self):
        cls = type(self)
        _check_int(cls, "hidden_bits", self.hidden_bits, 2, 32)
        _check_int(cls, "lr_shift", self.lr_shift, 0, 62)
        _check_int(cls, "lr_multiplier", self.lr_multiplier, 1, 2**31 - 1)
        _check_bool(cls, "stochastic", self.stochastic)

    @property
    def lr(self) -> float:
        """Real update scale ``lr_multiplier * 2**-lr_shift`` (hidden LSBs per unit of P)."""
        return math.ldexp(float(self.lr_multiplier), -self.lr_shift)


@dataclasses.dataclass(frozen=True)
class AnalogSpec(SpecBase):
    """Analog crossbar non-idealities (data only; behaviour is implemented in ``hwsim``).

    Weights map to differential conductance pairs ``w ∝ G+ - G-`` with ``G in [g_min_uS,
    g_max_uS]``. Noise stds are relative to ``g_max_uS``. Drift: ``G(t) = G(t0) (t/t0)**-nu``.

    Attributes:
        g_max_uS: maximum conductance, microsiemens (> 0).
        g_min_uS: minimum conductance, microsiemens, in ``[0, g_max_uS)``.
        prog_noise_std: programming noise std / g_max, drawn once per programming (>= 0).
        read_noise_std: read noise std / g_max, drawn fresh per read, i.e. per relaxation step.
        drift_nu: drift exponent ``nu`` (>= 0; 0 = no drift).
        drift_t0_s: reference time ``t0`` of the drift law, seconds (> 0).
        stuck_at_gmin_frac: fraction of devices stuck at ``g_min`` in [0, 1].
        stuck_at_gmax_frac: fraction stuck at ``g_max`` in [0, 1]; the two sum to <= 1.
        dac_bits: input DAC bits 1..16, or None for ideal inputs.
        adc_bits: output ADC bits 1..16, or None for an ideal readout.
        adc_range: ADC full scale in units of the ideal normalised dot product (weights
            mapped to [-1, 1], inputs in [0, 1]); outputs clip to ``[-adc_range, adc_range]``.

    Device update model of in-situ learning (behaviour in :mod:`hwsim.devices`; the pulsed models and
    their parameter names follow IBM aihwkit's ``PulsedDevice`` family,
    ``src/aihwkit/simulator/configs/devices.py`` and ``src/rpucuda/rpu_*_device.cpp``). Every step
    size is a fraction of one device's conductance range ``g_max - g_min``:

        device_model: ``"ideal"`` (the requested conductance change is applied exactly, with the
            multiplicative ``AnalogSimConfig.update_noise_std``; the default, today's behaviour) or
            a pulsed model: ``"constant_step"``, ``"linear_step"``, ``"soft_bounds"``,
            ``"exp_step"``, ``"pow_step"`` (:data:`DEVICE_MODELS`).
        dw_min: nominal step of one pulse, in (0, 1] (aihwkit default 0.001 on a range of 1.2,
            i.e. ~1/1200). A requested change ``d`` becomes ``n = floor(|d| / dw_min)`` pulses
            plus one with probability ``frac(|d| / dw_min)`` (stochastic rounding), at most
            ``max_pulses``.
        max_pulses: most pulses per device per update, 1..65535 (aihwkit's bit length
            ``desired_bl = 31``).
        dw_min_dtod: device-to-device spread of the step size (relative, >= 0; aihwkit default 0.3).
        dw_min_std: cycle-to-cycle spread: each pulse is scaled by ``1 + dw_min_std * xi``
            (aihwkit default 0.3).
        up_down: up/down asymmetry in [-1, 1]: ``up_down > 0`` shrinks the down step to
            ``(1 - up_down) dw_min``, ``< 0`` the up step to ``(1 + up_down) dw_min`` (aihwkit).
        up_down_dtod: device-to-device spread of the asymmetry (>= 0; aihwkit default 0.01).
        gamma_up, gamma_down: ``linear_step`` slopes in [0, 1] (step ``s_up (1 - gamma_up w)``,
            ``s_down (1 + gamma_down w)``, ``w = 2 x - 1`` the device position in [-1, 1];
            ``soft_bounds`` is ``gamma = 1``).
        es_A_up, es_A_down, es_gamma_up, es_gamma_down, es_a, es_b: ``exp_step`` fit parameters
            (aihwkit ``ExpStepDevice`` defaults).
        pow_gamma, pow_gamma_dtod, pow_up_down: ``pow_step`` exponent (> 0), its
            device-to-device spread and up/down difference (aihwkit ``PowStepDevice``).

    >>> AnalogSpec(stuck_at_gmin_frac=0.6, stuck_at_gmax_frac=0.6)
    Traceback (most recent call last):
    ...
    ValueError: AnalogSpec.stuck_at_gmax_frac=0.6 is invalid; allowed: stuck_at_gmin_frac + stuck_at_gmax_frac <= 1
    """

    g_max_uS: float = 25.0
    g_min_uS: float = 0.0
    prog_noise_std: float = 0.0
    read_noise_std: float = 0.0
    drift_nu: float = 0.0
    drift_t0_s: float = 1.0
    stuck_at_gmin_frac: float = 0.0
    stuck_at_gmax_frac: float = 0.0
    dac_bits: int | None = None
    adc_bits: int | None = None
    adc_range: float = 1.0
    device_model: str = "ideal"
    dw_min: float = 0.001
    max_pulses: int = 31
    dw_min_dtod: float = 0.0
    dw_min_std: float = 0.0
    up_down: float = 0.0
    up_down_dtod: float = 0.0
    gamma_up: float = 0.0
    gamma_down: float = 0.0
    es_A_up: float = 0.00081
    es_A_down: float = 0.36833
    es_gamma_up: float = 12.44625
    es_gamma_down: float = 12.78785
    es_a: float = 0.244
    es_b: float = 0.2425
    pow_gamma: float = 1.0
    pow_gamma_dtod: float = 0.0
    pow_up_down: float = 0.0

    def __post_init__(self):
        cls = type(self)
        _check_float(cls, "g_max_uS", self.g_max_uS, 0.0, 1e9, lo_open=True)
        _check_float(cls, "g_min_uS", self.g_min_uS, 0.0, self.g_max_uS, hi_open=True)
        _check_float(cls, "prog_noise_std", self.prog_noise_std, 0.0, 10.0)
        _check_float(cls, "read_noise_std", self.read_noise_std, 0.0, 10.0)
        _check_float(cls, "drift_nu", self.drift_nu, 0.0, 1.0)
        _check_float(cls, "drift_t0_s", self.drift_t0_s, 0.0, 1e12, lo_open=True)
        _check_float(cls, "stuck_at_gmin_frac", self.stuck_at_gmin_frac, 0.0, 1.0)
        _check_float(cls, "stuck_at_gmax_frac", self.stuck_at_gmax_frac, 0.0, 1.0)
        if self.stuck_at_gmin_frac + self.stuck_at_gmax_frac > 1.0:
            raise _bad(cls, "stuck_at_gmax_frac", self.stuck_at_gmax_frac,
                       "stuck_at_gmin_frac + stuck_at_gmax_frac <= 1")
        for name in ("dac_bits", "adc_bits"):
            v = getattr(self, name)
            if v is not None:
                _check_int(cls, name, v, 1, 16)
        _check_float(cls, "adc_range", self.adc_range, 0.0, 1e9, lo_open=True)
        _check_choice(cls, "device_model", self.device_model, DEVICE_MODELS)
        _check_float(cls, "dw_min", self.dw_min, 0.0, 1.0, lo_open=True)
        _check_int(cls, "max_pulses", self.max_pulses, 1, 65535)
        for name in ("dw_min_dtod", "dw_min_std", "up_down_dtod", "pow_gamma_dtod"):
            _check_float(cls, name, getattr(self, name), 0.0, 10.0)
        for name in ("up_down", "pow_up_down"):
            _check_float(cls, name, getattr(self, name), -1.0, 1.0)
        for name in ("gamma_up", "gamma_down"):
            _check_float(cls, name, getattr(self, name), 0.0, 1.0)
        for name in ("es_A_up", "es_A_down", "es_gamma_up", "es_gamma_down"):
            _check_float(cls, name, getattr(self, name), 0.0, 1e3)
        for name in ("es_a", "es_b"):
            _check_float(cls, name, getattr(self, name), -1e3, 1e3)
        _check_float(cls, "pow_gamma", self.pow_gamma, 0.0, 10.0, lo_open=True)

    @property
    def pulsed(self) -> bool:
        """Whether in-situ updates are device pulses (``device_model != "ideal"``)."""
        return self.device_model != "ideal"

"""`HardwareSpec`: the one description of a chip that every layer reads.

The torch fake-quant path, the numba integer simulator, the analog simulator and the ONNX
exporter all take a :class:`HardwareSpec`; none re-derives a scale or a rounding rule
(scales come from :mod:`quant.quantizers`, integer rescaling from :mod:`quant.ops`).
"""
from __future__ import annotations

import dataclasses
import json

from . import ops
from .formats import AnalogSpec, FixedPoint, SpecBase, UpdateSpec, WeightFormat, _bad, _check_choice, _check_int

ROUNDING_MODES = ops.ROUNDING_MODES
OVERFLOW_MODES = ops.OVERFLOW_MODES


class UnsupportedError(ValueError):
    """A backend was asked for a spec (or an interaction term) it does not implement; the message names
    the backend, the field and what the backend supports. ``models.engine.UnsupportedError`` should
    be this class (one exception for every capability check)."""


@dataclasses.dataclass(frozen=True)
class HardwareSpec(SpecBase):
    """How a model is represented on a chip. Frozen, validated, JSON round-trippable.

    Attributes:
        name: a label (presets use their registry name).
        weights: weight format (:class:`~quant.formats.WeightFormat`).
        state: state / activation fixed-point format; ``None`` means float states. Network
            inputs are quantised with the same format.
        acc_bits: signed accumulator width 2..32 for ``W @ s`` (``None``: float accumulation).
            32 keeps ``acc * multiplier`` (multiplier < 2**31) inside int64 in
            :func:`quant.ops.requantize`.
        overflow: ``saturate`` (hls4ml SAT) or ``wrap`` (hls4ml WRAP), applied to the exact
            final sum of an accumulation (``wrap`` of the final sum equals wrapping every
            partial sum; ``saturate`` is applied once, so the result is order independent).
        rounding: ``nearest_even`` (ONNX/QONNX), ``floor`` (hls4ml TRN) or ``stochastic``
            (counter-based, :mod:`quant.rng`): how accumulators are requantised to states.
        update: learning-rule precision (:class:`~quant.formats.UpdateSpec`); ``None`` = float.
        analog: optional analog crossbar data (:class:`~quant.formats.AnalogSpec`).

    >>> spec = HardwareSpec("demo", WeightFormat("int4"), FixedPoint(8, 7), acc_bits=24)
    >>> HardwareSpec.from_json(spec.to_json()) == spec
    True
    >>> HardwareSpec("x", overflow="clip")
    Traceback (most recent call last):
    ...
    ValueError: HardwareSpec.overflow='clip' is invalid; allowed: one of ('saturate', 'wrap')
    """

    _NESTED = {"weights": WeightFormat, "state": FixedPoint, "update": UpdateSpec, "analog": AnalogSpec}

    name: str = "custom"
    weights: WeightFormat = dataclasses.field(default_factory=WeightFormat)
    state: FixedPoint | None = dataclasses.field(default_factory=FixedPoint)
    acc_bits: int | None = 32
    overflow: str = "saturate"
    rounding: str = "nearest_even"
    update: UpdateSpec | None = None
    analog: AnalogSpec | None = None

    def __post_init__(self):
        cls = type(self)
        if not isinstance(self.name, str) or not self.name:
            raise _bad(cls, "name", self.name, "a non-empty str")
        for field, typ, optional in (("weights", WeightFormat, False), ("state", FixedPoint, True),
                                     ("update", UpdateSpec, True), ("analog", AnalogSpec, True)):
            v = getattr(self, field)
            if not (isinstance(v, typ) or (optional and v is None)):
                raise _bad(cls, field, v, f"a {typ.__name__}" + (" or None" if optional else ""))
        if self.acc_bits is not None:
            _check_int(cls, "acc_bits", self.acc_bits, 2, 32)
        _check_choice(cls, "overflow", self.overflow, OVERFLOW_MODES)
        _check_choice(cls, "rounding", self.rounding, ROUNDING_MODES)
        if self.update is not None and not self.weights.is_float and self.update.hidden_bits < self.weights.bits:
            raise _bad(cls, "update", self.update,
                       f"update.hidden_bits >= weights.bits ({self.weights.bits})")

    @property
    def is_integer(self) -> bool:
        """True when weights, states and accumulator are all integer (simulable in hwsim)."""
        return not self.weights.is_float and self.state is not None and self.acc_bits is not None

    # ------------------------------------------------------------------ capability checks
    def require(self, backend: str, *, integer: bool = False, exact_one: bool = False, analog: bool = False,
                update: bool = False, per_tensor: bool = False, roundings: tuple | None = None) -> "HardwareSpec":
        """``self`` if backend ``backend`` can run it, else :class:`UnsupportedError` naming the backend,
        the field and what the backend supports. The one place the backends' spec rules live.

        Args:
            integer: integer weights, a fixed-point state and ``acc_bits`` are needed.
            exact_one: the state format must hold 1.0 exactly (the hard sigmoid is the integer clamp).
            analog: whether the backend models analog non-idealities (``False``: ``analog`` must be None).
            update: an ``update`` section (on-chip learning precision) is needed.
            per_tensor: per-tensor weight scales are needed.
            roundings: the rounding modes the backend implements (None: all).

        >>> from quant import get_preset
        >>> get_preset("fp32").require("numba fixed point", integer=True)
        Traceback (most recent call last):
        ...
        quant.spec.UnsupportedError: backend 'numba fixed point' does not support spec 'fp32': it is not integer (weights.kind='float32', state=float, acc_bits=None); it supports: integer weights, a FixedPoint state and acc_bits (e.g. quant.get_preset('int8'))
        """
        def refuse(what: str, supports: str) -> UnsupportedError:
            return UnsupportedError(f"backend {backend!r} does not support spec {self.name!r}: {what}; "
                                    f"it supports: {supports}")

        if integer and not self.is_integer:
            st = "float" if self.state is None else "fixed"
            raise refuse(f"it is not integer (weights.kind={self.weights.kind!r}, state={st}, "
                         f"acc_bits={self.acc_bits})",
                         "integer weights, a FixedPoint state and acc_bits (e.g. quant.get_preset('int8'))")
        if not analog and self.analog is not None:
            raise refuse("analog non-idealities (analog is set)", "analog=None (digital specs; analog crossbars "
                         "run on hwsim.analog)")
        if exact_one and self.state is not None:
            try:
                self.state.code_of(1.0)
            except ValueError:
                raise refuse(f"state={self.state} cannot represent 1.0 exactly",
                             "a state format holding 1.0, e.g. unsigned FixedPoint(bits, bits - 1), so the hard "
                             "sigmoid is the integer clamp [0, code(1.0)]") from None
        if update and self.update is None:
            raise refuse("it cannot learn on chip (update=None)",
                         "an update section (UpdateSpec: hidden weights, rate; presets int8, int4, ternary)")
        if per_tensor and self.weights.granularity != "per_tensor":
            raise refuse(f"weights.granularity={self.weights.granularity!r}",
                         "per-tensor weight scales (one synapse array read forward and transposed)")
        if roundings is not None and self.rounding not in roundings:
            raise refuse(f"rounding={self.rounding!r}", f"rounding in {tuple(roundings)}")
        return self

    @classmethod
    def check(cls, spec, backend: str, **needs) -> "HardwareSpec":
        """:meth:`require` on ``spec`` after checking that it is a :class:`HardwareSpec` (``ValueError``)."""
        if not isinstance(spec, cls):
            raise ValueError(f"spec={spec!r} is invalid for backend {backend!r}; allowed: a quant.HardwareSpec "
                             "(e.g. quant.get_preset('int8'))")
        return spec.require(backend, **needs)

    def to_json(self, indent: int | None = 2) -> str:
        """JSON text of :meth:`to_dict` (keys in field order)."""
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_json(cls, text: str) -> "HardwareSpec":
        """Parse :meth:`to_json` output; unknown keys and invalid values raise ``ValueError``."""
        return cls.from_dict(json.loads(text))

    def replace(self, **changes) -> "HardwareSpec":
        """A validated copy with some fields changed (``dataclasses.replace``).

        >>> HardwareSpec().replace(rounding="floor").rounding
        'floor'
        """
        return dataclasses.replace(self, **changes)

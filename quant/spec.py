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

"""Hardware spec: number formats, quantizers, integer ops, counter-based rng (numpy + torch only).

>>> from quant import get_preset
>>> get_preset("int8").state.code_of(1.0)
128
"""
from .formats import AnalogSpec, FixedPoint, UpdateSpec, WeightFormat
from .presets import get_preset, list_presets, register_preset
from .quantizers import (
    QuantizedTensor,
    apply_update,
    dequantize_state,
    fake_quant_state,
    fake_quant_weights,
    hidden_to_code,
    quantize_state,
    quantize_weights,
    requant_params,
    weight_scale,
)
from .spec import HardwareSpec

__all__ = [
    "AnalogSpec", "FixedPoint", "HardwareSpec", "QuantizedTensor", "UpdateSpec", "WeightFormat",
    "apply_update", "dequantize_state", "fake_quant_state", "fake_quant_weights", "get_preset",
    "hidden_to_code", "list_presets", "quantize_state", "quantize_weights", "register_preset",
    "requant_params", "weight_scale",
]

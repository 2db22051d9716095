"""Hardware spec: number formats, quantizers, integer ops, counter-based rng: every integer rule, once.

Where each rule lives: weight codes and scales, state codes, requantisation pairs, **bias codes**
(:func:`bias_codes`, :func:`bias_lsb`) and on-chip updates in :mod:`quant.quantizers`; rounding and
overflow on numpy/torch in :mod:`quant.ops` and their numba twins in :mod:`quant.numba_ops`; the
counter-based generator and the one tensor-id scheme (:func:`quant.rng.tensor_id`) in
:mod:`quant.rng`; storage widths (:attr:`WeightFormat.storage_bits`, ``onnx_storage_bits``) in
:mod:`quant.formats`; which spec a backend runs (:meth:`HardwareSpec.require`) in :mod:`quant.spec`.

Biases are quantised: to the forward-accumulator grid (``scale_row * 2**-frac_bits``), as the chip
adds them. There is one fake-quant reference path, ``models/qat.py``, and it uses the same grid.

>>> from quant import get_preset
>>> get_preset("int8").state.code_of(1.0)
128
"""
from .formats import AnalogSpec, FixedPoint, UpdateSpec, WeightFormat
from .presets import get_preset, list_presets, register_preset
from .quantizers import (
    QuantizedTensor,
    apply_update,
    bias_codes,
    bias_lsb,
    dequantize_state,
    fake_quant_state,
    fake_quant_weights,
    hidden_to_code,
    quantize_state,
    quantize_weights,
    requant_params,
    weight_scale,
)
from .spec import HardwareSpec, UnsupportedError

__all__ = [
    "AnalogSpec", "FixedPoint", "HardwareSpec", "QuantizedTensor", "UnsupportedError", "UpdateSpec", "WeightFormat",
    "apply_update", "bias_codes", "bias_lsb", "dequantize_state", "fake_quant_state", "fake_quant_weights", "get_preset",
    "hidden_to_code", "list_presets", "quantize_state", "quantize_weights", "register_preset",
    "requant_params", "weight_scale",
]

"""Track 16: on-chip EqProp learning on a simulated INT8 chip (shared code: :mod:`tracks.quantized`).

Float EqProp vs post-training quantisation, QAT, and on-chip integer EqProp fine-tuning in the
fixed-point simulator under the ``int8`` preset, on real MNIST; see :mod:`tracks.quantized` for the
procedure, the metrics and the overrides.
"""
from __future__ import annotations

from .harness.base import TrackContext, TrackResult
from .shared.quantized import make_spec, run_quantized

PRESET = "int8"
SPEC = make_spec(16, "int8", "INT8 EqProp: PTQ, QAT and on-chip learning", PRESET)


def run(ctx: TrackContext) -> TrackResult:
    return run_quantized(ctx, PRESET, SPEC.id)

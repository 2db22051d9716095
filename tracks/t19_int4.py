"""Track 19: on-chip EqProp learning on a simulated INT4 chip (shared code: :mod:`tracks.quantized`).

Float EqProp vs post-training quantisation, QAT, and on-chip integer EqProp fine-tuning in the
fixed-point simulator under the ``int4`` preset, on real MNIST; see :mod:`tracks.quantized` for the
procedure, the metrics and the overrides.
"""
from __future__ import annotations

from .harness.base import TrackContext, TrackResult
from .shared.quantized import make_spec, run_quantized

PRESET = "int4"
SPEC = make_spec(19, "int4", "INT4 EqProp: PTQ, QAT and on-chip learning", PRESET)


def run(ctx: TrackContext) -> TrackResult:
    return run_quantized(ctx, PRESET, SPEC.id)

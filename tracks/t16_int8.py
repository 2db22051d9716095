"""Track 16: on-chip EqProp learning on a simulated INT8 chip (shared code: :mod:`tracks.shared.quantized`).

Float EqProp vs post-training quantisation, QAT, and on-chip integer EqProp fine-tuning in the
fixed-point simulator under the ``int8`` preset, on real MNIST; see :mod:`tracks.shared.quantized` for the
procedure, the metrics and the settings. Conv (issue 12, ``conv_`` metrics,
:mod:`tracks.shared.quantized_conv`): a small conv EqProp net on Fashion-MNIST 14x14 through the integer
path (numba conv, transposed conv and max-pool routing bit-exact against the torch int64 mirror; tie
rule: first maximum of the window in row-major order) and fine-tuned on chip; its gap to float EqProp
is reported against the issue target (``conv_target_met``). Issue 14: weight codes checked against
their float weights (round to nearest), overflow replays with a narrow saturating accumulator.
"""
from __future__ import annotations

from .harness.base import TrackContext, TrackResult
from .shared.quantized import FULL, QUICK, make_spec, run_quantized  # noqa: F401 (typed config)

PRESET = "int8"
SPEC = make_spec(16, "int8", "INT8 EqProp: PTQ, QAT and on-chip learning", PRESET)


def run(ctx: TrackContext) -> TrackResult:
    return run_quantized(ctx, PRESET, SPEC.id)

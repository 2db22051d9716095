"""Analog noise sweeps: grid, resumable parallel runner, CI summaries, plots (:mod:`.engine`).

Used by tracks 3 and 17 and by ``run_suite.py sweep``; see :mod:`tracks.sweep.engine` for the
record format and the resume rule.
"""
from .engine import *  # noqa: F401,F403
from .engine import (FULL_MODEL, NOISE_KINDS, QUICK_MODEL, SweepMismatchError, SweepPoint, analog_for_point, cached_mlp,  # noqa: F401
                     evaluate_point, grid, load_mlp, plot_sweep, read_jsonl, run_sweep, summarize, sweep_command,
                     track_model, train_mlp)

"""Sweeps of the simulated chip.

* :mod:`.engine`: the analog noise sweep (kind x level x precision x seed), used by tracks 3 and 17 and
  by ``run_suite.py sweep --kinds ...``; the record format and the resume rule.
* :mod:`.design`: design-space sweeps over any hardware-spec field (:mod:`.space`) x models x seeds on
  Dask, with energy / latency / weight-memory estimates (:mod:`.cost`), CSV tables, CI-band and Pareto
  plots (``run_suite.py sweep --config examples/adc_vs_noise.toml``).
"""
from .engine import *  # noqa: F401,F403
from .engine import (FULL_MODEL, NOISE_KINDS, QUICK_MODEL, SweepMismatchError, SweepPoint, analog_for_point, cached_mlp,  # noqa: F401
                     evaluate_point, grid, load_mlp, plot_sweep, read_jsonl, run_sweep, summarize, sweep_command,
                     track_model, train_mlp)

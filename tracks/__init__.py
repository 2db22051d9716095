"""Numbered verification tracks (``tNN_slug.py``, one claim each) and the names to run them.

This folder shows the tracks; the machinery lives in named subpackages:

- :mod:`tracks.harness`: track contract, typed configs, registry, runner, reports, machine info,
  the library side of the CLI subcommands, and the shared statistics / plot / thread helpers;
- :mod:`tracks.sweep`: the resumable analog noise-sweep engine (tracks 3 and 17, ``run_suite.py sweep``);
- :mod:`tracks.data`: MNIST / Fashion-MNIST loaders;
- :mod:`tracks.shared`: code shared by several tracks (the quantised tracks 4/16/19, training recipes).

Tracks are discovered (:mod:`tracks.harness.registry`); nothing is registered by hand.

>>> parse_track_filename("t02_eqprop_vs_bptt")
(2, 'eqprop_vs_bptt')
"""
from __future__ import annotations

import importlib

from .harness.base import Criterion, TrackContext, TrackResult, TrackSpec, evaluate
from .harness.registry import (Track, UnknownTrackError, all_tracks, get_track, parse_track_filename, refresh,
                               register_track, unregister_track)

_LAZY = {  # name -> module: lazy re-exports keep `import tracks` light and free of cycles
    "run_tracks": "harness.runner", "SuiteResult": "harness.runner", "TrackRun": "harness.runner",
    "OutDirError": "harness.runner", "json_safe": "harness.runner", "prepare_out_dir": "harness.runner",
    "render_report": "harness.report", "write_report": "harness.report",
    "track_table_markdown": "harness.report", "describe_machine": "harness.machine",
    "describe_machine_short": "harness.machine", "load_dataset": "data", "train_val_split": "data",
    "DataError": "data", "ConfigError": "harness.config", "resolve_overrides": "harness.config",
    "parse_set_options": "harness.config",
}
_MODULES = {"base": "harness.base", "runner": "harness.runner", "report": "harness.report",
            "machine": "harness.machine", "config": "harness.config", "data": "data",
            "commands": "harness.commands", "harness": "harness", "sweep": "sweep"}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    if name in _MODULES:
        return importlib.import_module(f"{__name__}.{_MODULES[name]}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "ConfigError", "Criterion", "DataError", "OutDirError", "SuiteResult", "Track", "TrackContext", "TrackResult",
    "TrackRun", "TrackSpec", "UnknownTrackError", "all_tracks", "describe_machine",
    "describe_machine_short", "evaluate", "get_track", "json_safe", "load_dataset", "parse_set_options",
    "parse_track_filename", "prepare_out_dir", "refresh", "register_track", "render_report",
    "resolve_overrides", "run_tracks", "track_table_markdown", "train_val_split", "unregister_track",
    "write_report",
]

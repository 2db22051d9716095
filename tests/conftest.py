"""One place seeds everything; fixtures are function-scoped.

Tests run torch single-threaded: CI has 2 cores and several tests start
subprocesses; idle OpenMP workers busy-wait and oversubscription made the suite many times slower.
"""
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import random  # noqa: E402
from pathlib import Path

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
if "EQPROP_DATA" not in os.environ and (SHARED_DATA / "mnist").is_dir():
    os.environ["EQPROP_DATA"] = str(SHARED_DATA)


@pytest.fixture(autouse=True)
def _seed_everything():
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    yield


@pytest.fixture
def registered():
    """``add(module)`` registers a throwaway track module for the test and unregisters it afterwards."""
    import tracks

    added = []

    def add(module):
        added.append(tracks.register_track(module).id)
        return tracks.get_track(added[-1])
    yield add
    for tid in added:
        tracks.unregister_track(tid)

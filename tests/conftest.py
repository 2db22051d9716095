"""One place seeds everything; fixtures are function-scoped."""
import os
import random
from pathlib import Path

import numpy as np
import pytest
import torch

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
if "EQPROP_DATA" not in os.environ and (SHARED_DATA / "mnist").is_dir():
    os.environ["EQPROP_DATA"] = str(SHARED_DATA)


@pytest.fixture(autouse=True)
def _seed_everything():
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    yield

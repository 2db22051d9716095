"""Hardware simulators: integer (numba) and torch-integer mirrors of the reference models."""
from .fixed_point import FixedPointMLP, FixedPointRelaxInfo
from .torch_mirror import torch_predict, torch_relax

__all__ = ["FixedPointMLP", "FixedPointRelaxInfo", "torch_predict", "torch_relax"]

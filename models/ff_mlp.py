"""The feed-forward backprop baseline: a same-width MLP trained by ordinary backprop (Track 25).

``FeedForwardMLP(FFConfig(sizes=(784, 512, 10)))`` is the network a user would pick to compare with
an ``EqPropMLP`` of the same widths: ``Linear -> activation`` per hidden layer, a linear readout,
logits out, cross-entropy loss (``TrainConfig(method="backprop")`` in :mod:`models.train`). It has
``predict(x, n_steps=None)`` so :func:`models.train.evaluate` scores it like the EqProp models
(``n_steps`` is ignored: there is no relaxation).

It is not in the checkpoint registry of :mod:`models.checkpoint` (not a model of the hardware
path); :func:`save_ff` / :func:`load_ff` write and read the same plain-torch layout.

>>> import torch
>>> net = FeedForwardMLP(FFConfig(sizes=(8, 16, 3)), seed=0)
>>> net(torch.zeros(5, 8)).shape
torch.Size([5, 3])
>>> net.predict(torch.zeros(2, 8), n_steps=30).shape
torch.Size([2])
>>> FFConfig(sizes=(8,))
Traceback (most recent call last):
...
ValueError: FFConfig.sizes=(8,): need >= 2 positive widths (input, ..., output)
"""
from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .config import DictConfig

ACTIVATIONS = ("relu", "hard_sigmoid", "tanh")
FORMAT = "eqprop-hwsim.ff-checkpoint"


@dataclass(frozen=True)
class FFConfig(DictConfig):
    """Attributes:
        sizes: layer widths, input first, output last (the EqPropMLP's ``sizes``).
        activation: hidden non-linearity, one of :data:`ACTIVATIONS` (``hard_sigmoid`` is the
            EqPropMLP's ``clamp(a, 0, 1)``).
    """

    sizes: tuple[int, ...] = (784, 512, 10)
    activation: str = "relu"

    def __post_init__(self) -> None:
        object.__setattr__(self, "sizes", tuple(int(n) for n in self.sizes))
        if len(self.sizes) < 2 or any(n < 1 for n in self.sizes):
            raise ValueError(f"FFConfig.sizes={self.sizes}: need >= 2 positive widths (input, ..., output)")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"FFConfig.activation={self.activation!r}; allowed: {ACTIVATIONS}")


class FeedForwardMLP(nn.Module):
    """``x -> act(W1 x + b1) -> ... -> W_L h + b_L`` (logits); PyTorch's default ``nn.Linear`` init
    drawn from ``torch.Generator`` seeded by ``seed``."""

    def __init__(self, config: FFConfig | None = None, seed: int = 0):
        super().__init__()
        self.config = config or FFConfig()
        s = self.config.sizes
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(s[:-1], s[1:]))

    @property
    def n_layers(self) -> int:
        return len(self.layers)

    def _act(self, a: torch.Tensor) -> torch.Tensor:
        if self.config.activation == "relu":
            return torch.relu(a)
        if self.config.activation == "tanh":
            return torch.tanh(a)
        return a.clamp(0.0, 1.0)

    def forward(self, x: torch.Tensor, n_steps: int | None = None) -> torch.Tensor:
        h = x.reshape(x.shape[0], -1)
        for i, lin in enumerate(self.layers):
            h = lin(h)
            if i < len(self.layers) - 1:
                h = self._act(h)
        return h

    @torch.no_grad()
    def predict(self, x: torch.Tensor, n_steps: int | None = None) -> torch.Tensor:
        return self.forward(x).argmax(dim=1)


def save_ff(path: str | os.PathLike, net: FeedForwardMLP, *, train_config: dict[str, Any] | None = None,
            metrics: dict[str, Any] | None = None, epoch: int = 0) -> Path:
    """Atomically write ``net`` (never over an existing file)."""
    path = Path(path)
    if path.exists():
        raise FileExistsError(f"checkpoint {path} already exists; choose another path")
    payload = {"format": FORMAT, "model_class": "FeedForwardMLP", "model_config": net.config.to_dict(),
               "state_dict": {k: v.detach().cpu().clone() for k, v in net.state_dict().items()},
               "train_config": train_config, "metrics": metrics or {}, "epoch": int(epoch)}
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        torch.save(payload, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def load_ff(path: str | os.PathLike) -> tuple[FeedForwardMLP, dict[str, Any]]:
    """``(net, meta)`` from a file written by :func:`save_ff`."""
    payload = torch.load(path, map_location="cpu", weights_only=False)
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError(f"{path} is not a FeedForwardMLP checkpoint (written by models.ff_mlp.save_ff)")
    net = FeedForwardMLP(FFConfig.from_dict(payload["model_config"]))
    net.load_state_dict(payload["state_dict"])
    return net, {k: v for k, v in payload.items() if k != "state_dict"}


__all__ = ["FFConfig", "FeedForwardMLP", "save_ff", "load_ff", "ACTIVATIONS"]

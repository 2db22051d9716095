"""The feed-forward backprop baseline: a same-width MLP trained by ordinary backprop (Track 25).

``FeedForwardMLP(FFConfig(sizes=(784, 512, 10)))`` is the network a user would pick to compare with
an ``EqPropMLP`` of the same widths: ``Linear -> activation`` per hidden layer, a linear readout,
logits out, cross-entropy loss (``TrainConfig(method="backprop")`` in :mod:`models.train`). It has
``predict(x, n_steps=None)`` so :func:`models.train.evaluate` scores it like the EqProp models
(``n_steps`` is ignored: there is no relaxation).

It is in the checkpoint registry of :mod:`models.checkpoint` (``save_checkpoint`` /
``load_checkpoint``, so the run's model cache can hold it); it is not a model of the hardware path
(export and the simulators need an EqProp model). :func:`save_ff` / :func:`load_ff` are thin wrappers
kept for callers of the earlier API; ``load_ff`` also reads files of the earlier FF-only layout
(``format="eqprop-hwsim.ff-checkpoint"``).

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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .config import DictConfig

ACTIVATIONS = ("relu", "hard_sigmoid", "tanh")
LEGACY_FORMAT = "eqprop-hwsim.ff-checkpoint"  # the earlier FF-only file layout (read by load_ff)


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
    """Atomically write ``net`` as a :mod:`models.checkpoint` checkpoint (never over an existing file)."""
    from .checkpoint import save_checkpoint
    if not isinstance(net, FeedForwardMLP):
        raise TypeError(f"save_ff saves a FeedForwardMLP, got a {type(net).__name__}; use "
                        "models.checkpoint.save_checkpoint for other models")
    return save_checkpoint(path, net, train_config=train_config, metrics=metrics, epoch=epoch)


def load_ff(path: str | os.PathLike) -> tuple[FeedForwardMLP, dict[str, Any]]:
    """``(net, meta)`` from a checkpoint of a ``FeedForwardMLP`` (:func:`save_ff`,
    ``save_checkpoint``, or the earlier FF-only layout)."""
    from .checkpoint import CheckpointError, load_checkpoint
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # not readable as a plain dict: let load_checkpoint give its error
        payload = None
    if isinstance(payload, dict) and payload.get("format") == LEGACY_FORMAT:
        net = FeedForwardMLP(FFConfig.from_dict(payload["model_config"]))
        net.load_state_dict(payload["state_dict"])
        return net, {k: v for k, v in payload.items() if k != "state_dict"}
    net, meta = load_checkpoint(path)
    if not isinstance(net, FeedForwardMLP):
        raise CheckpointError(f"{path} holds a {meta['model_class']}, not a FeedForwardMLP; read it with "
                              "models.checkpoint.load_checkpoint")
    return net, meta


__all__ = ["FFConfig", "FeedForwardMLP", "save_ff", "load_ff", "ACTIVATIONS"]

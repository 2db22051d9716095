"""Checkpoints: weights + model config + training config + metrics, loadable in plain torch.

A checkpoint is a ``torch.save`` of a dict of plain types and tensors, so
``torch.load(path, weights_only=True)`` reads it without this package::

    {"format": "eqprop-hwsim.checkpoint", "version": 1, "model_class": "EqPropMLP",
     "model_config": {...}, "state_dict": {...}, "train_config": {...} | None,
     "metrics": {...}, "epoch": int, "optimizer_state": {...} | None}

Writes are atomic (temporary file, then rename); an existing file is never overwritten unless the
caller says so (``overwrite=True``, which training uses for its own running checkpoint).

>>> import tempfile, os, torch
>>> from models.eqprop_mlp import EqPropMLP, EqPropConfig
>>> net = EqPropMLP(EqPropConfig(sizes=(4, 3, 2)), seed=0)
>>> path = os.path.join(tempfile.mkdtemp(), "net.pt")
>>> _ = save_checkpoint(path, net, metrics={"val_acc": 0.5})
>>> net2, meta = load_checkpoint(path)
>>> torch.equal(net2.layers[0].weight, net.layers[0].weight), meta["metrics"]["val_acc"]
(True, 0.5)
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

FORMAT = "eqprop-hwsim.checkpoint"
VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint is missing, corrupt, or does not fit the model asked for."""


def _model_registry() -> dict[str, tuple[type, type]]:
    from .conv import ConvConfig, ConvEqProp
    from .eqprop_mlp import EqPropConfig, EqPropMLP
    from .ff_mlp import FeedForwardMLP, FFConfig
    from .looped import LoopedConfig, LoopedMLP
    from .skip_mlp import SkipEqPropMLP
    return {"EqPropMLP": (EqPropMLP, EqPropConfig), "LoopedMLP": (LoopedMLP, LoopedConfig),
            "SkipEqPropMLP": (SkipEqPropMLP, EqPropConfig), "ConvEqProp": (ConvEqProp, ConvConfig),
            "FeedForwardMLP": (FeedForwardMLP, FFConfig)}  # the feed-forward backprop baseline (Track 25)


def save_checkpoint(path: str | os.PathLike, model: nn.Module, *, train_config: dict[str, Any] | None = None,
                    metrics: dict[str, Any] | None = None, epoch: int = 0,
                    optimizer_state: dict[str, Any] | None = None, overwrite: bool = False) -> Path:
    """Atomically write a checkpoint of ``model`` (a model class of the registry) to ``path``."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"checkpoint {path} already exists; choose another path or pass overwrite=True")
    name = type(model).__name__
    if name not in _model_registry():
        raise CheckpointError(f"cannot checkpoint a {name}; supported: {sorted(_model_registry())}")
    payload = {
        "format": FORMAT, "version": VERSION, "model_class": name,
        "model_config": model.config.to_dict(),
        "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        "train_config": train_config, "metrics": metrics or {}, "epoch": int(epoch),
        "optimizer_state": optimizer_state,
    }
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


def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """The raw checkpoint dict, validated; raises :class:`CheckpointError` with the fix."""
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"checkpoint {path} is a folder; give the checkpoint file (.pt)")
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist (train one with models.train.train(..., checkpoint=PATH))")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for a corrupt file
        raise CheckpointError(f"checkpoint {path} is corrupt or not a torch file ({type(e).__name__}: {e}); "
                              "re-save it with models.checkpoint.save_checkpoint") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not an eqprop-hwsim checkpoint (no format={FORMAT!r} key)")
    if payload.get("version") != VERSION:
        raise CheckpointError(f"{path}: checkpoint version {payload.get('version')} unsupported (this is v{VERSION})")
    missing = {"model_class", "model_config", "state_dict"} - set(payload)
    if missing:
        raise CheckpointError(f"{path}: checkpoint lacks {sorted(missing)}")
    if not isinstance(payload["model_config"], dict):
        raise CheckpointError(f"{path}: model_config is a {type(payload['model_config']).__name__}, expected a dict "
                              "of the model's config fields; re-save it with models.checkpoint.save_checkpoint")
    if not isinstance(payload["state_dict"], dict) or not all(
            isinstance(v, torch.Tensor) for v in payload["state_dict"].values()):
        raise CheckpointError(f"{path}: state_dict is not a dict of tensors; re-save it with "
                              "models.checkpoint.save_checkpoint")
    return payload


def check_eqprop_checkpoint(path: str | os.PathLike) -> None:
    """Raise :class:`CheckpointError` unless ``path`` is a readable checkpoint of an ``EqPropMLP``
    (cheap: reads the file, builds no model)."""
    payload = read_checkpoint(path)
    if payload["model_class"] != "EqPropMLP":
        raise CheckpointError(f"checkpoint {path} holds a {payload['model_class']}; this needs an EqPropMLP "
                              "(layered, hard sigmoid) checkpoint")


def load_checkpoint(path: str | os.PathLike, dtype: torch.dtype = torch.float32) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model from a checkpoint; returns ``(model, meta)`` (meta = everything else)."""
    payload = read_checkpoint(path)
    reg = _model_registry()
    cls_name = payload["model_class"]
    if cls_name not in reg:
        raise CheckpointError(f"{path}: unknown model_class {cls_name!r}; supported: {sorted(reg)}")
    cls, cfg_cls = reg[cls_name]
    try:
        config = cfg_cls.from_dict(payload["model_config"])
    except (ValueError, TypeError) as e:
        raise CheckpointError(f"{path}: model_config does not describe a {cls_name}: {e}") from None
    model = cls(config).to(dtype)
    try:
        model.load_state_dict(payload["state_dict"])
    except RuntimeError as e:
        raise CheckpointError(f"{path}: weights do not fit {cls_name}{payload['model_config']}: {e}") from None
    meta = {k: v for k, v in payload.items() if k != "state_dict"}
    return model, meta

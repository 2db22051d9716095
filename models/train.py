"""Training loop for EqPropMLP and LoopedMLP by EqProp or BPTT, and for the feed-forward baseline
(:class:`models.ff_mlp.FeedForwardMLP`) by ordinary backprop, with checkpoints and resume.

>>> import torch
>>> from models.eqprop_mlp import EqPropMLP, EqPropConfig
>>> g = torch.Generator().manual_seed(0)
>>> x = torch.rand(200, 8, generator=g); y = (x[:, 0] > 0.5).long()
>>> net = EqPropMLP(EqPropConfig(sizes=(8, 16, 2)), seed=0)
>>> hist = train(net, x, y, TrainConfig(epochs=10, batch_size=10, lr=0.1, momentum=0.0, beta=0.5), progress=False)
>>> evaluate(net, x, y) > 0.8
True
"""
from __future__ import annotations

import logging
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from .checkpoint import read_checkpoint, save_checkpoint
from .energy import EnergyModel
from .eqprop_mlp import NUDGINGS, EqPropMLP
from .looped import LoopedMLP
from .progress import progress as progress_bar

log = logging.getLogger("eqprop_hwsim.models.train")

METHODS = ("eqprop", "bptt", "backprop")
OPTIMIZERS = ("sgd", "adam")


@dataclass(frozen=True)
class TrainConfig:
    """How to train.

    Attributes:
        method: ``"eqprop"`` (contrast of nudged equilibria) or ``"bptt"`` (autograd through the
            ``n_free_steps`` free sweeps: the same architecture trained by backprop), or
            ``"backprop"`` (a feed-forward net, e.g. :class:`models.ff_mlp.FeedForwardMLP`: cross-entropy
            of its logits ``net(x)``, ordinary autograd; ``beta``, ``nudging`` and the step counts are unused).
        epochs, batch_size: passes over the training set; samples per update.
        optimizer: ``"sgd"`` (with ``momentum``) or ``"adam"``.
        lr: learning rate, or one per layer (EqPropMLP: ``len(sizes) - 1`` values).
        lr_schedule: ``"constant"`` or ``"cosine"`` (per epoch, to 0).
        warmup_steps: the first ``warmup_steps`` updates scale the rates linearly up from
            ``1 / warmup_steps`` to 1 (times the schedule); 0 = none. Adam's first updates move every
            weight by about ``lr`` in the sign of its gradient, so a hard-sigmoid output unit that is
            on for most images can be pushed below ``-beta`` on every image within a few updates and
            never gets a nudge again (a dead class); a warmup lets Adam's moment estimates settle first.
        weight_decay: L2 coefficient.
        beta, nudging: EqProp nudging strength and mode (``one_sided``, ``symmetric``,
            ``random_sign``).
        n_free_steps, n_nudge_steps: sweeps of the free and each nudged phase.
        eval_steps: free sweeps at evaluation (default ``n_free_steps``).
        seed: shuffling (and random-sign) seed.
    """

    method: str = "eqprop"
    epochs: int = 10
    batch_size: int = 100
    optimizer: str = "sgd"
    lr: float | tuple[float, ...] = 0.05
    lr_schedule: str = "constant"
    warmup_steps: int = 0
    momentum: float = 0.9
    weight_decay: float = 0.0
    beta: float = 0.5
    nudging: str = "symmetric"
    n_free_steps: int = 30
    n_nudge_steps: int = 10
    eval_steps: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"TrainConfig.method={self.method!r}; allowed: {METHODS}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"TrainConfig.optimizer={self.optimizer!r}; allowed: {OPTIMIZERS}")
        if self.nudging not in NUDGINGS:
            raise ValueError(f"TrainConfig.nudging={self.nudging!r}; allowed: {NUDGINGS}")
        if self.lr_schedule not in ("constant", "cosine"):
            raise ValueError(f"TrainConfig.lr_schedule={self.lr_schedule!r}; allowed: ('constant', 'cosine')")
        for f in ("epochs", "batch_size", "n_free_steps", "n_nudge_steps"):
            if int(getattr(self, f)) < 1:
                raise ValueError(f"TrainConfig.{f}={getattr(self, f)} must be >= 1")
        if int(self.warmup_steps) < 0:
            raise ValueError(f"TrainConfig.warmup_steps={self.warmup_steps} must be >= 0 (0 = no warmup)")
        if not self.beta > 0:
            raise ValueError(f"TrainConfig.beta={self.beta} must be > 0")
        if isinstance(self.lr, (list, tuple)):
            object.__setattr__(self, "lr", tuple(float(v) for v in self.lr))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if isinstance(self.lr, tuple):
            d["lr"] = list(self.lr)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"TrainConfig: unknown keys {sorted(unknown)}; valid: {sorted(cls.__dataclass_fields__)}")
        return cls(**d)


def _param_groups(net: nn.Module, cfg: TrainConfig) -> list[dict[str, Any]]:
    if not isinstance(cfg.lr, tuple):
        return [{"params": list(net.parameters()), "lr": float(cfg.lr)}]
    from .ff_mlp import FeedForwardMLP
    if not isinstance(net, (EqPropMLP, FeedForwardMLP)) or len(cfg.lr) != net.n_layers:
        raise ValueError(f"TrainConfig.lr has {len(cfg.lr)} values; per-layer rates need an EqPropMLP "
                         f"or FeedForwardMLP with that many layers")
    return [{"params": list(lin.parameters()), "lr": lr} for lin, lr in zip(net.layers, cfg.lr)]


def make_optimizer(net: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    groups = _param_groups(net, cfg)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=groups[0]["lr"], momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    return torch.optim.Adam(groups, lr=groups[0]["lr"], weight_decay=cfg.weight_decay)


def compute_grads(net: nn.Module, x: torch.Tensor, y: torch.Tensor, cfg: TrainConfig,
                  generator: torch.Generator | None = None) -> tuple[dict[str, torch.Tensor], float]:
    """Gradient estimate of one batch by ``cfg.method``; returns (grads by param name, batch loss)."""
    if cfg.method == "backprop":
        if isinstance(net, EnergyModel) or isinstance(net, LoopedMLP):
            raise ValueError(f"TrainConfig.method='backprop' trains a feed-forward net (models.ff_mlp."
                             f"FeedForwardMLP); a {type(net).__name__} trains by 'eqprop' or 'bptt'")
        params = dict(net.named_parameters())
        with torch.enable_grad():
            loss = torch.nn.functional.cross_entropy(net(x), y.long())
            g = torch.autograd.grad(loss, list(params.values()))
        return dict(zip(params, g)), float(loss.detach())
    if cfg.method == "eqprop":
        kw = dict(beta=cfg.beta, mode=cfg.nudging, n_free_steps=cfg.n_free_steps, n_nudge_steps=cfg.n_nudge_steps,
                  generator=generator)
        if not isinstance(net, EnergyModel):  # LoopedMLP: gradients only, no free-phase loss
            return net.eqprop_grads(x, y, **kw), float("nan")
        grads, st = net.eqprop_grads(x, y, return_states=True, **kw)
        return grads, float(net.cost(st["free"][-1], y).mean())
    params = dict(net.named_parameters())
    with torch.enable_grad():
        if isinstance(net, EnergyModel):
            s = net.zero_state(x.shape[0], x)
            d = net.drive(x)
            for _ in range(cfg.n_free_steps):
                s = net.step(s, d)
            loss = net.cost(s[-1], y).mean()
        else:
            loss = torch.nn.functional.cross_entropy(net(x, cfg.n_free_steps), y.long())
        g = torch.autograd.grad(loss, list(params.values()))
    return dict(zip(params, g)), float(loss.detach())


@torch.no_grad()
def evaluate(net: nn.Module, x: torch.Tensor, y: torch.Tensor, n_steps: int | None = None,
             batch_size: int = 2000) -> float:
    """Accuracy of the free-phase prediction (argmax of the output) on ``(x, y)``."""
    n_steps = n_steps or 30
    correct = 0
    for a in range(0, x.shape[0], batch_size):
        correct += int((net.predict(x[a:a + batch_size], n_steps=n_steps) == y[a:a + batch_size]).sum())
    return correct / max(1, x.shape[0])


def train(net: nn.Module, x_train: torch.Tensor, y_train: torch.Tensor, cfg: TrainConfig, *,
          x_val: torch.Tensor | None = None, y_val: torch.Tensor | None = None,
          checkpoint: str | os.PathLike | None = None, resume: bool = False, progress: bool = True,
          callback: Callable[[int, int, nn.Module], None] | None = None,
          epoch_callback: Callable[[int, dict[str, list[float]]], None] | None = None) -> dict[str, list[float]]:
    """Train ``net`` in place; returns the history ``{"train_loss", "val_acc", "lr"}`` per epoch.

    Args:
        checkpoint: path of a running checkpoint written after every epoch (atomically). If it
            exists, ``resume=True`` continues from it; otherwise an error (nothing is overwritten).
        callback: ``callback(epoch, batch_index, net)`` after every update (e.g. to log a
            Lipschitz estimate).
        epoch_callback: ``epoch_callback(epoch, history)`` after every epoch (after the validation
            score is appended), e.g. to report to a hyperparameter search that may stop the run by
            raising (``optuna.TrialPruned``).
    """
    if x_train.shape[0] != y_train.shape[0]:
        raise ValueError(f"x_train has {x_train.shape[0]} rows but y_train {y_train.shape[0]}")
    opt = make_optimizer(net, cfg)
    base_lrs = [g["lr"] for g in opt.param_groups]  # the recipe's rates (a resumed optimizer holds scheduled ones)
    history: dict[str, list[float]] = {"train_loss": [], "val_acc": [], "lr": []}
    start_epoch = 0
    if checkpoint is not None and Path(checkpoint).exists():
        if not resume:
            raise FileExistsError(f"checkpoint {checkpoint} exists; pass resume=True to continue it or choose "
                                  "another path (it is never overwritten)")
        payload = read_checkpoint(checkpoint)
        if TrainConfig.from_dict(payload["train_config"]).to_dict() != cfg.to_dict():
            raise ValueError(f"checkpoint {checkpoint} was trained with another TrainConfig; "
                             f"saved {payload['train_config']} vs now {cfg.to_dict()}")
        net.load_state_dict(payload["state_dict"])
        if payload.get("optimizer_state"):
            opt.load_state_dict(payload["optimizer_state"])
        start_epoch = int(payload["epoch"])
        history = payload["metrics"].get("history", history)
        log.info("resumed %s at epoch %d", checkpoint, start_epoch)
    n = x_train.shape[0]
    n_batches = math.ceil(n / cfg.batch_size)
    bar = progress_bar(total=(cfg.epochs - start_epoch) * n_batches, enabled=progress, desc=f"train[{cfg.method}]")
    params = dict(net.named_parameters())
    for epoch in range(start_epoch, cfg.epochs):
        f = 0.5 * (1 + math.cos(math.pi * epoch / cfg.epochs)) if cfg.lr_schedule == "cosine" else 1.0
        if cfg.lr_schedule == "cosine":
            for g, lr0 in zip(opt.param_groups, base_lrs):
                g["lr"] = lr0 * f
        gen = torch.Generator().manual_seed(cfg.seed * 100003 + epoch)
        perm = torch.randperm(n, generator=gen)
        tot, cnt = 0.0, 0
        for bi, a in enumerate(range(0, n, cfg.batch_size)):
            idx = perm[a:a + cfg.batch_size]
            grads, loss = compute_grads(net, x_train[idx], y_train[idx], cfg, generator=gen)
            for k, p in params.items():
                p.grad = grads[k]
            step = epoch * n_batches + bi
            if step < cfg.warmup_steps:
                for g, lr0 in zip(opt.param_groups, base_lrs):
                    g["lr"] = lr0 * f * (step + 1) / cfg.warmup_steps
            elif cfg.warmup_steps and step == cfg.warmup_steps:
                for g, lr0 in zip(opt.param_groups, base_lrs):
                    g["lr"] = lr0 * f
            opt.step()
            if not math.isfinite(sum(float(p.detach().abs().max()) for p in params.values())):
                raise FloatingPointError(f"weights became non-finite at epoch {epoch}, batch {bi}: lower lr "
                                         f"({cfg.lr}) or beta ({cfg.beta})")
            tot += loss * len(idx)
            cnt += len(idx)
            if callback is not None:
                callback(epoch, bi, net)
            bar.update(1)
        history["train_loss"].append(tot / cnt)
        history["lr"].append(opt.param_groups[0]["lr"])
        if x_val is not None:
            history["val_acc"].append(evaluate(net, x_val, y_val, cfg.eval_steps or cfg.n_free_steps))
            log.info("epoch %d loss %.4f val_acc %.4f", epoch + 1, tot / cnt, history["val_acc"][-1])
        if checkpoint is not None:
            save_checkpoint(checkpoint, net, train_config=cfg.to_dict(), metrics={"history": history},
                            epoch=epoch + 1, optimizer_state=opt.state_dict(), overwrite=True)
        if epoch_callback is not None:
            try:
                epoch_callback(epoch, history)
            except BaseException:
                bar.close()
                raise
    bar.close()
    return history


__all__ = ["TrainConfig", "train", "evaluate", "compute_grads", "make_optimizer", "LoopedMLP"]

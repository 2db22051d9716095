"""Quantisation-aware EqProp training (QAT) of :class:`~models.eqprop_mlp.EqPropMLP` in torch.

The fake-quant dynamics are those of the EqProp network with every quantity a chip holds put
through the spec's quantizers (:mod:`quant.quantizers`; no scale or rounding is derived here):

* weights ``W_hat_i = fake_quant_weights(W_i, spec)`` (codes times scale; straight-through),
  biases kept in float (a chip keeps them in the wide accumulator);
* input ``x_hat = fake_quant_state(x, spec)`` (inputs use the state format);
* states ``s_i <- fake_quant_state(rho(a_i), spec)`` with ``rho = clamp(., 0, 1)`` and
  ``a_i = W_hat_i s_{i-1} + b_i + W_hat_{i+1}^T s_{i+1}`` (output:
  ``a_L - beta dL/ds_L``), asynchronous (even layers, then odd) or synchronous like the float
  model. ``0`` and ``1`` are state codes, so quantising after the clamp equals quantising
  before it for round-to-nearest.

Training is EqProp on these dynamics: the contrast of two nudged equilibria of the fake-quant
network gives ``g = -(dPhi/dW_hat(s^{b2}) - dPhi/dW_hat(s^{b1})) / (b2 - b1)``, and the float
"latent" weights ``W`` take the step ``W <- W - lr g`` (the straight-through estimator:
``dW_hat/dW = 1``), so the trained model is meant for the integer simulator that rounds the
latent weights once at the end. With ``spec = get_preset("fp32")`` every quantizer is the
identity and this is plain float EqProp training with SGD.

>>> import torch
>>> from quant import get_preset
>>> net = EqPropMLP(EqPropConfig(sizes=(6, 5, 3)), seed=0)
>>> x = torch.rand(8, 6); y = torch.randint(0, 3, (8,))
>>> s, _ = qat_relax(net, x, get_preset("int8"), n_steps=10)
>>> bool(((s[0] * 128) == (s[0] * 128).round()).all())     # states on the 2**-7 grid
True
>>> hist = train_qat(net, x, y, get_preset("int4"), QATConfig(epochs=1, batch_size=4), progress=False)
>>> len(hist["loss"])
2
"""
from __future__ import annotations

import dataclasses
import logging
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from quant import HardwareSpec, fake_quant_state, fake_quant_weights

from .eqprop_mlp import NUDGINGS, EqPropMLP, EqPropConfig, rho  # noqa: F401  (EqPropConfig for doctest)
from .solvers import RelaxInfo, State, relax

log = logging.getLogger("eqprop_hwsim.models.qat")


@dataclasses.dataclass(frozen=True)
class QATConfig:
    """Hyper-parameters of :func:`train_qat` (also plain float EqProp with the ``fp32`` spec).

    Attributes:
        epochs: passes over the training set (>= 1).
        batch_size: examples per update (>= 1).
        lr: SGD learning rate, one float for all layers or one per layer (input layer first).
        momentum: SGD momentum in [0, 1).
        beta: nudging strength (> 0).
        nudging: ``"one_sided"`` (free vs ``+beta``) or ``"symmetric"`` (``-beta`` vs ``+beta``).
        n_free_steps: sweeps of the free phase (from zero states).
        n_nudge_steps: sweeps of each nudged phase (from the free equilibrium).
        seed: seed of the batch order.
    """

    epochs: int = 1            # passes over the data
    batch_size: int = 100      # examples per update
    lr: float | tuple[float, ...] = 0.05  # SGD step, scalar or per layer
    momentum: float = 0.0      # SGD momentum
    beta: float = 0.5          # nudging strength
    nudging: str = "symmetric"  # one_sided | symmetric
    n_free_steps: int = 30     # free-phase sweeps
    n_nudge_steps: int = 10    # sweeps per nudged phase
    seed: int = 0              # batch order

    def __post_init__(self):
        for name in ("epochs", "batch_size", "n_free_steps", "n_nudge_steps"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"QATConfig.{name}={v!r} is invalid; allowed: an int >= 1")
        lrs = self.lr if isinstance(self.lr, tuple) else (self.lr,)
        if not lrs or not all(isinstance(a, (int, float)) and a > 0 for a in lrs):
            raise ValueError(f"QATConfig.lr={self.lr!r} is invalid; allowed: a float > 0 or a tuple of them")
        if not 0.0 <= self.momentum < 1.0:
            raise ValueError(f"QATConfig.momentum={self.momentum!r} is invalid; allowed: a float in [0, 1)")
        if not self.beta > 0:
            raise ValueError(f"QATConfig.beta={self.beta!r} is invalid; allowed: a float > 0")
        if self.nudging not in ("one_sided", "symmetric"):
            raise ValueError(f"QATConfig.nudging={self.nudging!r} is invalid; allowed: 'one_sided' or 'symmetric'")

    def layer_lrs(self, n_layers: int) -> tuple[float, ...]:
        """The learning rate of every layer (a scalar is repeated)."""
        if isinstance(self.lr, tuple):
            if len(self.lr) != n_layers:
                raise ValueError(f"QATConfig.lr has {len(self.lr)} entries for {n_layers} layers; "
                                 "give one per layer or a single float")
            return tuple(float(a) for a in self.lr)
        return (float(self.lr),) * n_layers


def _check_spec(spec) -> HardwareSpec:
    if not isinstance(spec, HardwareSpec):
        raise ValueError(f"spec={spec!r} is invalid; allowed: a HardwareSpec (e.g. quant.get_preset('int8'))")
    if spec.analog is not None:
        raise ValueError(f"spec {spec.name!r} is analog; QAT covers digital specs (no analog section)")
    return spec


def qat_weights(net: EqPropMLP, spec: HardwareSpec) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``[(W_hat_i, b_i)]``: fake-quantised weights (straight-through) and float biases.

    Shapes: ``W_hat_i`` is ``(n_i, n_{i-1})`` like ``net.layers[i].weight``.
    """
    _check_spec(spec)
    return [(fake_quant_weights(lin.weight, spec), lin.bias) for lin in net.layers]


def _fq_state(x: torch.Tensor, spec: HardwareSpec) -> torch.Tensor:
    return fake_quant_state(x, spec) if spec.state is not None else x


def qat_step(net: EqPropMLP, spec: HardwareSpec, wb, s: State, drive: torch.Tensor,
             beta: float = 0.0, y: torch.Tensor | None = None) -> State:
    """One sweep of the fake-quant dynamics ``s_i <- Q(rho(a_i))`` (see module docstring).

    Args:
        wb: :func:`qat_weights` output.
        s: states, list of ``(B, n_i)``.
        drive: ``W_hat_0 x_hat + b_0``, ``(B, n_0)``.
    """
    n = net.n_layers

    def update(i, s):
        a = drive if i == 0 else torch.addmm(wb[i][1], s[i - 1], wb[i][0].t())
        if i + 1 < n:
            a = torch.addmm(a, s[i + 1], wb[i + 1][0])
        if i == n - 1 and beta != 0.0:
            a = a - beta * net.cost_grad(s[i], y)
        return _fq_state(rho(a), spec)

    if net.config.update == "sync":
        return [update(i, s) for i in range(n)]
    s = list(s)
    for parity in (0, 1):
        for i in range(parity, n, 2):
            s[i] = update(i, s)
    return s


def qat_relax(net: EqPropMLP, x: torch.Tensor, spec: HardwareSpec, s0: State | None = None, *,
              beta: float = 0.0, y: torch.Tensor | None = None, n_steps: int = 30,
              wb=None) -> tuple[State, RelaxInfo]:
    """Relax the fake-quant network for ``n_steps`` sweeps from ``s0`` (zeros if None).

    Args:
        x: inputs ``(B, n_in)`` in the model dtype (quantised here with the state format).
        spec: the hardware spec.
        beta, y: nudging strength and integer targets ``(B,)`` (needed when ``beta != 0``).
        wb: pre-computed :func:`qat_weights` (recomputed when None).

    Returns:
        ``(states, RelaxInfo)``; states are lists of ``(B, n_i)`` on the state grid.
    """
    _check_spec(spec)
    net._check_input(x)
    if beta != 0.0 and y is None:
        raise ValueError("a nudged relaxation (beta != 0) needs the targets y")
    with torch.no_grad():
        wb = qat_weights(net, spec) if wb is None else wb
        xq = _fq_state(x, spec)
        drive = torch.addmm(wb[0][1], xq, wb[0][0].t())
        s0 = net.zero_state(x.shape[0], x) if s0 is None else list(s0)
        return relax(lambda s: qat_step(net, spec, wb, s, drive, beta, y), s0, max_steps=n_steps,
                     tol=0.0, record_trace=False)


def qat_predict(net: EqPropMLP, x: torch.Tensor, spec: HardwareSpec, n_steps: int = 30) -> torch.Tensor:
    """Class predictions ``(B,)`` of the fake-quant free equilibrium."""
    s, _ = qat_relax(net, x, spec, n_steps=n_steps)
    return s[-1].argmax(dim=1)


def qat_eqprop_grads(net: EqPropMLP, x: torch.Tensor, y: torch.Tensor, spec: HardwareSpec, *,
                     beta: float, mode: str = "symmetric", n_free_steps: int = 30,
                     n_nudge_steps: int = 10) -> dict[str, torch.Tensor]:
    """EqProp estimate on the fake-quant dynamics, ``{param_name: grad}`` like
    :meth:`EqPropMLP.eqprop_grads`: ``-(dPhi/dtheta(s^{b2}) - dPhi/dtheta(s^{b1})) / (b2 - b1)``
    with ``dPhi/dW_0 = mean s_0 x_hat^T`` on the quantised input."""
    if mode not in ("one_sided", "symmetric"):
        raise ValueError(f"mode={mode!r} is invalid; allowed: 'one_sided' or 'symmetric'")
    if not beta > 0:
        raise ValueError(f"beta={beta!r} is invalid; allowed: a float > 0 (the sign is set by mode)")
    with torch.no_grad():
        wb = qat_weights(net, spec)
        free, _ = qat_relax(net, x, spec, n_steps=n_free_steps, wb=wb)
        b1, b2 = (0.0, beta) if mode == "one_sided" else (-beta, beta)
        s1 = free if b1 == 0.0 else qat_relax(net, x, spec, free, beta=b1, y=y, n_steps=n_nudge_steps, wb=wb)[0]
        s2 = qat_relax(net, x, spec, free, beta=b2, y=y, n_steps=n_nudge_steps, wb=wb)[0]
        return net.contrast(_fq_state(x, spec), s1, s2, b1, b2)


def _as_tensor(a, dtype) -> torch.Tensor:
    return a.to(dtype) if isinstance(a, torch.Tensor) else torch.as_tensor(np.asarray(a), dtype=dtype)


def train_qat(net: EqPropMLP, x, y, spec: HardwareSpec, cfg: QATConfig | None = None, *,
              progress: bool = True) -> dict[str, Any]:
    """Train ``net`` in place by EqProp on its fake-quant dynamics (SGD with momentum).

    Args:
        net: the model (its float weights are the latent weights).
        x: training inputs ``(N, n_in)`` (numpy or torch) in ``[0, 1]``.
        y: integer labels ``(N,)``.
        spec: hardware spec (``fp32``: plain float EqProp).
        cfg: hyper-parameters (:class:`QATConfig`).
        progress: show a tqdm bar over batches.

    Returns:
        ``{"loss": [mean cost of the free phase per batch], "train_acc": [per epoch]}``.
    """
    _check_spec(spec)
    cfg = cfg or QATConfig()
    dtype = net.layers[0].weight.dtype
    x = _as_tensor(x, dtype)
    y = _as_tensor(y, torch.int64)
    if x.ndim != 2 or y.ndim != 1 or x.shape[0] != y.shape[0]:
        raise ValueError(f"x {tuple(x.shape)} and y {tuple(y.shape)}: need x (N, n_in) and y (N,) with the same N")
    lrs = cfg.layer_lrs(net.n_layers)
    params = dict(net.named_parameters())
    velocity = {k: torch.zeros_like(p) for k, p in params.items()}
    gen = torch.Generator().manual_seed(cfg.seed)
    n = x.shape[0]
    n_batches = (n + cfg.batch_size - 1) // cfg.batch_size
    hist: dict[str, Any] = {"loss": [], "train_acc": []}
    bar = tqdm(total=cfg.epochs * n_batches, disable=not progress, desc=f"QAT {spec.name}")
    for epoch in range(cfg.epochs):
        perm = torch.randperm(n, generator=gen)
        correct = 0
        for b in range(n_batches):
            idx = perm[b * cfg.batch_size:(b + 1) * cfg.batch_size]
            xb, yb = x[idx], y[idx]
            with torch.no_grad():
                wb = qat_weights(net, spec)
                free, _ = qat_relax(net, xb, spec, n_steps=cfg.n_free_steps, wb=wb)
                correct += int((free[-1].argmax(1) == yb).sum())
                hist["loss"].append(float(net.cost(free[-1], yb).mean()))
                b1, b2 = (0.0, cfg.beta) if cfg.nudging == "one_sided" else (-cfg.beta, cfg.beta)
                s1 = free if b1 == 0.0 else qat_relax(net, xb, spec, free, beta=b1, y=yb,
                                                      n_steps=cfg.n_nudge_steps, wb=wb)[0]
                s2 = qat_relax(net, xb, spec, free, beta=b2, y=yb, n_steps=cfg.n_nudge_steps, wb=wb)[0]
                grads = net.contrast(_fq_state(xb, spec), s1, s2, b1, b2)
                for name, g in grads.items():
                    layer = int(name.split(".")[1])
                    v = velocity[name].mul_(cfg.momentum).add_(g)
                    params[name].sub_(lrs[layer] * v)
            bar.update(1)
        hist["train_acc"].append(correct / n)
        log.info("QAT %s epoch %d: train acc %.4f", spec.name, epoch + 1, correct / n)
    bar.close()
    return hist

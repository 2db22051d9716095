"""Quantisation-aware EqProp training (QAT) of :class:`~models.eqprop_mlp.EqPropMLP` in torch.

The fake-quant dynamics mirror the integer simulator (``docs/hwsim_semantics.md``, :mod:`hwsim.fixed_point`)
term by term, in float, with every scale and rounding taken from :mod:`quant.quantizers`:

* forward weights ``W_hat_i = fake_quant_weights(W_i, spec)`` (codes times scale, straight-through);
* feedback weights ``F_hat_i = fake_quant_weights(W_{i+1}^T, spec)``, quantised as their own tensor
  like the simulator's feedback array (equal to ``W_hat_{i+1}^T`` for per-tensor scales);
* biases on the forward-accumulator grid, ``b_hat = quant.bias_codes(b, scale, spec) * lsb`` with
  ``lsb = quant.bias_lsb(scale, spec) = scale_row * 2**-frac_bits`` (straight-through): the simulator's
  own rule, so this is the one fake-quant reference path (``exports/verify.py`` uses it too);
* input ``x_hat = fake_quant_state(x, spec)`` (inputs use the state format);
* every term rounded to the state LSB as the simulator requantises it (``R`` = the spec's
  rounding on a wide signed grid of ``frac_bits``, no saturation), then the hard sigmoid::

      s_i <- clamp(R(W_hat_i s_{i-1} + b_hat_i) + R(F_hat_i s_{i+1}) [+ R(-beta dL/ds_L)], 0, 1)

  asynchronous (even layers, then odd) or synchronous like the float model. ``stochastic``
  rounding is replaced by ``nearest_even`` here (the fake-quant forward is deterministic).

ConvEqProp (``models.conv.ConvPool`` chain couplings): ``R(P(conv(s_{i-1}, W_hat_i)) + b_hat_i)`` and the
feedback ``R(convT(U(s_{i+1}), F_hat_i))`` with ``F_hat_i = fake_quant_weights(W_{i+1}.transpose(0, 1))``
(per input channel, as the simulator) and ``U`` routed by the first maximum of ``conv(s_i, W_hat_{i+1})``.
On the integer grids both products are computed as exact integer-valued float64 convolutions of
``s * 2**f`` with the codes, then scaled (``P(conv(...)) * scale * 2**-f``), so the max-pool
comparisons and ties are exactly the integer accumulator's. The EqProp contrast of a conv kernel
(:func:`qat_contrast`) routes with ``W_hat``.

In float64 the codes equal those of :func:`hwsim.torch_mirror.torch_relax` except where a float
product lands within rounding error of a rounding tie (measured in ``tests/models/test_qat.py``).

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

from quant import (FixedPoint, HardwareSpec, bias_codes, bias_lsb, fake_quant_state, fake_quant_weights,
                   quantize_weights)

from .conv import ConvEqProp, ConvPool
from .energy import INPUT, Bias, Dense
from .progress import progress as progress_bar
from .engine import Phases, UnsupportedError, check_nudging, require_kernels, run_phases
from .eqprop_mlp import EqPropConfig, EqPropMLP, rho  # noqa: F401  (EqPropConfig for doctest)
from .solvers import RelaxInfo, State, relax

QAT_KERNELS = {Dense: "R(W_hat s) (and R(F_hat s) for the feedback)", Bias: "b_hat on the accumulator grid",
               ConvPool: "R(P(conv(s, W_hat)) + b_hat) (and R(convT(U(s), F_hat)) for the feedback)"}
"""Terms the fake-quant path implements (on :class:`EqPropMLP`, its subclasses and :class:`ConvEqProp`,
see _check_model)."""

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
        nudging: a mode of :data:`models.engine.NUDGINGS` (``random_sign`` draws from the batch-order generator).
        n_free_steps: sweeps of the free phase (from zero states).
        n_nudge_steps: sweeps of each nudged phase (from the free equilibrium).
        seed: seed of the batch order.
    """

    epochs: int = 1            # passes over the data
    batch_size: int = 100      # examples per update
    lr: float | tuple[float, ...] = 0.05  # SGD step, scalar or per layer
    momentum: float = 0.0      # SGD momentum
    beta: float = 0.5          # nudging strength
    nudging: str = "symmetric"  # models.engine.NUDGINGS
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
        check_nudging(self.nudging, who="QATConfig.nudging")

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


def _check_model(net) -> None:
    """The fake-quant path implements EqPropMLP's layered chain plus any extra Dense terms (each its
    own rounded term, as the simulator's extra accumulators), and ConvEqProp's chain."""
    if not isinstance(net, (EqPropMLP, ConvEqProp)):
        raise UnsupportedError(f"backend 'QAT fake-quant' supports EqPropMLP and its subclasses (layers.i chain) "
                               f"and ConvEqProp; got {type(net).__name__}")
    require_kernels("QAT fake-quant", QAT_KERNELS, net.terms)


def _n_nodes(net) -> int:
    return len(net.nodes)


def _chain_terms(net) -> list:
    """The chain coupling ``post = i, pre = i - 1`` (INPUT for node 0) of every node, in node order."""
    chain = [None] * _n_nodes(net)
    for t in net.terms:
        if isinstance(t, (Dense, ConvPool)) and (t.pre == t.post - 1 or (t.post == 0 and t.pre == INPUT)) \
                and chain[t.post] is None:
            chain[t.post] = t
    if any(t is None for t in chain):
        raise UnsupportedError("backend 'QAT fake-quant' needs the chain coupling of every node")
    return chain


def _extra_terms(net) -> list[Dense]:
    chain = _chain_terms(net)
    return [t for t in net.terms if isinstance(t, Dense) and t not in chain]


def _node_biases(net) -> dict[int, str]:
    """Bias parameter of every node: a ``Bias`` term or the bias of its ConvPool."""
    out = {t.node: t.bias for t in net.terms if isinstance(t, Bias)}
    out.update({t.post: t.bias for t in net.terms if isinstance(t, ConvPool) and t.bias is not None})
    return out


def _fq(w: torch.Tensor, spec: HardwareSpec) -> torch.Tensor:
    return w if spec.weights.is_float else fake_quant_weights(w.contiguous(), spec)


def qat_weights(net: EqPropMLP, spec: HardwareSpec) -> list[dict[str, torch.Tensor]]:
    """Per layer ``{"w": W_hat_i, "b": b_hat_i, "fb": F_hat_i, "extra": [(src, E_hat), ...]}``
    (``"fb"`` for ``i < L-1``), all straight-through; float passthrough for float weights.

    Shapes: ``w`` ``(n_i, n_{i-1})``, ``b`` ``(n_i,)``, ``fb`` ``(n_i, n_{i+1})``. ``extra`` holds the
    contributions of Dense terms beyond the chain (e.g. the skip coupling of
    :class:`~models.skip_mlp.SkipEqPropMLP`) into node ``i``: ``E_hat`` quantised as its own tensor
    (``W`` for the forward contribution, ``W^T`` for the feedback one), ``src`` the source node
    (``INPUT``: static, rounded once per phase).
    """
    _check_spec(spec)
    _check_model(net)
    out = []
    chain = _chain_terms(net)
    biases = _node_biases(net)
    n = len(chain)
    grid = _on_grid(spec)
    for i, t in enumerate(chain):
        w = net.get_parameter(t.weight)
        bias = net.get_parameter(biases[i]) if i in biases else torch.zeros(w.shape[0], dtype=w.dtype)
        conv = isinstance(t, ConvPool)
        d = {"w": _fq(w, spec), "b": bias, "conv": t if conv else None}
        if grid:
            # the one bias rule of every integer path (quant.bias_codes), as a float on its grid
            q = quantize_weights(w, spec)
            scale = q.scale
            b_hat = bias_codes(bias, scale, spec) * bias_lsb(scale, spec)
            b_hat = torch.as_tensor(b_hat, dtype=bias.dtype, device=bias.device)
            d["b"] = bias + (b_hat - bias).detach()
            if conv:  # exact integer-valued products (ties of the max pool decided exactly, as on chip)
                d["codes"] = q.codes.to(torch.float64)
                d["scale"] = torch.as_tensor(q.scale, dtype=torch.float64).reshape(1, -1, 1, 1)
        if i + 1 < n:
            t_next = chain[i + 1]
            w_next = net.get_parameter(t_next.weight)
            if isinstance(t_next, ConvPool):
                wt = w_next.transpose(0, 1).contiguous()
                d["fb"] = _fq(wt, spec)
                d["fb_conv"] = t_next
                if grid:
                    qf = quantize_weights(wt, spec)
                    d["fb_codes"] = qf.codes.to(torch.float64)
                    d["fb_scale"] = torch.as_tensor(qf.scale, dtype=torch.float64).reshape(1, -1, 1, 1)
            else:
                d["fb"] = fake_quant_weights(w_next.t().contiguous(), spec) if not spec.weights.is_float else w_next.t()
        d["extra"] = []
        out.append(d)
    for i, d in enumerate(out[:-1]):  # routing of the conv feedback: the forward codes of the next node
        if "fb_conv" in d:
            nxt = out[i + 1]
            d["route_w"] = nxt.get("codes", nxt["w"])
    for t in _extra_terms(net):
        w = net.get_parameter(t.weight)
        out[t.post]["extra"].append((t.pre, _fq(w, spec)))
        if t.pre != INPUT:
            out[t.pre]["extra"].append((t.post, _fq(w.t(), spec)))
    return out


def _on_grid(spec: HardwareSpec) -> bool:
    """Integer weights and a fixed-point state: the fake-quant values live on the simulator's grids."""
    return not spec.weights.is_float and spec.state is not None


def _conv_forward(d: dict, src: torch.Tensor, spec: HardwareSpec) -> torch.Tensor:
    """``P(conv(src, W_hat)) + b_hat`` (flat). On the integer grids computed as
    ``P(conv(src * 2**f, codes)) * scale * 2**-f``: every product and partial sum is an exact integer in
    float64, so the pooling compares (and ties) exactly as the integer accumulator does."""
    from .conv import ConvPoolFloat

    t = d["conv"]
    if "codes" not in d:
        return ConvPoolFloat.drive_of(t, d["w"], d["b"], src)
    f = spec.state.frac_bits
    y = ConvPoolFloat._conv(t, d["codes"], torch.ldexp(src.double(), torch.tensor(f)))
    z, _ = ConvPoolFloat._pool(t, y)
    z = torch.ldexp(z * d["scale"], torch.tensor(-f)).to(src.dtype)
    return (z + d["b"].reshape(1, -1, 1, 1)).flatten(1)


def _conv_feedback(d: dict, s_pre: torch.Tensor, s_post: torch.Tensor, spec: HardwareSpec) -> torch.Tensor:
    """``convT(U(s_post), F_hat)`` (flat), ``U`` routed by the first maximum of ``conv(s_pre, W_hat_next)``;
    on the integer grids from exact integer-valued float64 products, as :func:`_conv_forward`."""
    from .conv import ConvPoolFloat

    t = d["fb_conv"]
    if "fb_codes" not in d:
        u = ConvPoolFloat._route(t, d["route_w"], s_pre, s_post)
        return torch.nn.functional.conv_transpose2d(u, d["fb"].transpose(0, 1), padding=t.padding).flatten(1)
    f = torch.tensor(spec.state.frac_bits)
    u = ConvPoolFloat._route(t, d["route_w"], torch.ldexp(s_pre.double(), f), torch.ldexp(s_post.double(), f))
    g = torch.nn.functional.conv_transpose2d(u, d["fb_codes"].transpose(0, 1), padding=t.padding)
    return torch.ldexp(g * d["fb_scale"], -f).flatten(1).to(s_pre.dtype)


def _forward_term(d: dict, src: torch.Tensor, spec: HardwareSpec) -> torch.Tensor:
    if d.get("conv") is not None:
        return _round_term(_conv_forward(d, src, spec), spec)
    return _round_term(torch.addmm(d["b"], src, d["w"].t()), spec)


def _fq_state(x: torch.Tensor, spec: HardwareSpec) -> torch.Tensor:
    return fake_quant_state(x, spec) if spec.state is not None else x


def _round_term(t: torch.Tensor, spec: HardwareSpec) -> torch.Tensor:
    """Round a pre-activation term to the state LSB without saturation (simulator's ``rq``)."""
    if spec.state is None:
        return t
    wide = FixedPoint(bits=32, frac_bits=spec.state.frac_bits, signed=True)
    rounding = "nearest_even" if spec.rounding == "stochastic" else spec.rounding
    return fake_quant_state(t, wide, rounding)


def qat_step(net: EqPropMLP, spec: HardwareSpec, wb, s: State, drive: torch.Tensor,
             beta: float = 0.0, y: torch.Tensor | None = None, static: dict | None = None) -> State:
    """One sweep of the fake-quant dynamics (see module docstring).

    Args:
        wb: :func:`qat_weights` output.
        s: states, list of ``(B, n_i)``.
        drive: ``R(W_hat_0 x_hat + b_hat_0)``, ``(B, n_0)``.
        static: per node, the sum of its rounded static extra terms ``R(E_hat x_hat)`` (once per phase).
    """
    n = _n_nodes(net)
    static = static or {}

    def update(i, s):
        a = drive if i == 0 else _forward_term(wb[i], s[i - 1], spec)
        if i + 1 < n:
            if "fb_conv" in wb[i]:
                a = a + _round_term(_conv_feedback(wb[i], s[i], s[i + 1], spec), spec)
            else:
                a = a + _round_term(s[i + 1] @ wb[i]["fb"].t(), spec)
        if i in static:
            a = a + static[i]
        for src, e in wb[i]["extra"]:
            if src != INPUT:
                a = a + _round_term(s[src] @ e.t(), spec)
        if i == n - 1 and beta != 0.0:
            a = a + _round_term(-beta * net.cost_grad(s[i], y), spec)
        return rho(a)

    if net.config.update == "sync":
        return [update(i, s) for i in range(n)]
    s = list(s)
    for group in net.schedule():
        for i in group:
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
        drive = _forward_term(wb[0], xq, spec)
        static: dict = {}
        for i, d in enumerate(wb):
            for src, e in d["extra"]:
                if src == INPUT:
                    r = _round_term(xq @ e.t(), spec)
                    static[i] = static[i] + r if i in static else r
        s0 = net.zero_state(x.shape[0], x) if s0 is None else list(s0)
        return relax(lambda s: qat_step(net, spec, wb, s, drive, beta, y, static), s0, max_steps=n_steps,
                     tol=0.0, record_trace=False)


def qat_predict(net: EqPropMLP, x: torch.Tensor, spec: HardwareSpec, n_steps: int = 30) -> torch.Tensor:
    """Class predictions ``(B,)`` of the fake-quant free equilibrium."""
    s, _ = qat_relax(net, x, spec, n_steps=n_steps)
    return s[-1].argmax(dim=1)


def qat_phases(net: EqPropMLP, x: torch.Tensor, y: torch.Tensor, spec: HardwareSpec, *, beta: float,
               mode: str = "symmetric", n_free_steps: int = 30, n_nudge_steps: int = 10, wb=None,
               generator: torch.Generator | None = None) -> Phases:
    """The EqProp phases (:func:`models.engine.run_phases`) of the fake-quant dynamics."""
    with torch.no_grad():
        wb = qat_weights(net, spec) if wb is None else wb

        def relax_(s0, *, beta, n_steps, step_offset):
            return qat_relax(net, x, spec, s0, beta=beta, y=y, n_steps=n_steps, wb=wb)

        return run_phases(relax_, beta=beta, mode=mode, n_free_steps=n_free_steps, n_nudge_steps=n_nudge_steps,
                          generator=generator)


def qat_eqprop_grads(net: EqPropMLP, x: torch.Tensor, y: torch.Tensor, spec: HardwareSpec, *,
                     beta: float, mode: str = "symmetric", n_free_steps: int = 30,
                     n_nudge_steps: int = 10) -> dict[str, torch.Tensor]:
    """EqProp estimate on the fake-quant dynamics, ``{param_name: grad}`` like
    :meth:`EqPropMLP.eqprop_grads`: ``-(dPhi/dtheta(s^{b2}) - dPhi/dtheta(s^{b1})) / (b2 - b1)``
    with ``dPhi/dW_0 = mean s_0 x_hat^T`` on the quantised input."""
    wb = qat_weights(net, spec)
    ph = qat_phases(net, x, y, spec, beta=beta, mode=mode, n_free_steps=n_free_steps, n_nudge_steps=n_nudge_steps,
                    wb=wb)
    return qat_contrast(net, spec, wb, _fq_state(x, spec), ph)


def qat_contrast(net, spec: HardwareSpec, wb, x_hat: torch.Tensor, ph: Phases) -> dict[str, torch.Tensor]:
    """``net.contrast`` of the phases, evaluated at the fake-quant conv kernels ``W_hat`` (the max-pool
    routing of ``dPhi/dW`` is that of the dynamics; Dense and Bias contrasts do not depend on ``W``)."""
    convs = [(t.weight, d["w"]) for t, d in zip(_chain_terms(net), wb) if isinstance(t, ConvPool)]
    if not convs or spec.weights.is_float:
        return net.contrast(x_hat, ph.s1, ph.s2, ph.b1, ph.b2)
    with torch.no_grad():
        saved = [(net.get_parameter(n), net.get_parameter(n).detach().clone()) for n, _ in convs]
        try:
            for (p, _), (_, w_hat) in zip(saved, convs):
                p.copy_(w_hat)
            return net.contrast(x_hat, ph.s1, ph.s2, ph.b1, ph.b2)
        finally:
            for p, v in saved:
                p.copy_(v)


def _layer_of(net) -> dict[str, int]:
    """Node index of every parameter (the post node of its coupling, the node of its bias)."""
    out = {}
    for t in net.terms:
        if isinstance(t, Bias):
            out[t.bias] = t.node
        else:
            for name in t.params:
                out[name] = t.post
    return out


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
        progress: show progress over batches (:func:`models.progress.progress`: a bar on a terminal,
            periodic lines in a log).

    Returns:
        ``{"loss": [mean cost of the free phase per batch], "train_acc": [per epoch]}``.
    """
    _check_spec(spec)
    cfg = cfg or QATConfig()
    _check_model(net)
    dtype = next(net.parameters()).dtype
    x = _as_tensor(x, dtype)
    y = _as_tensor(y, torch.int64)
    if x.ndim != 2 or y.ndim != 1 or x.shape[0] != y.shape[0]:
        raise ValueError(f"x {tuple(x.shape)} and y {tuple(y.shape)}: need x (N, n_in) and y (N,) with the same N")
    lrs = cfg.layer_lrs(_n_nodes(net))
    layer_of = _layer_of(net)
    params = dict(net.named_parameters())
    velocity = {k: torch.zeros_like(p) for k, p in params.items()}
    gen = torch.Generator().manual_seed(cfg.seed)
    n = x.shape[0]
    n_batches = (n + cfg.batch_size - 1) // cfg.batch_size
    hist: dict[str, Any] = {"loss": [], "train_acc": []}
    bar = progress_bar(total=cfg.epochs * n_batches, enabled=progress, desc=f"QAT {spec.name}")
    for epoch in range(cfg.epochs):
        perm = torch.randperm(n, generator=gen)
        correct = 0
        for b in range(n_batches):
            idx = perm[b * cfg.batch_size:(b + 1) * cfg.batch_size]
            xb, yb = x[idx], y[idx]
            with torch.no_grad():
                wb = qat_weights(net, spec)
                ph = qat_phases(net, xb, yb, spec, beta=cfg.beta, mode=cfg.nudging, wb=wb,
                                n_free_steps=cfg.n_free_steps, n_nudge_steps=cfg.n_nudge_steps, generator=gen)
                correct += int((ph.free[-1].argmax(1) == yb).sum())
                hist["loss"].append(float(net.cost(ph.free[-1], yb).mean()))
                grads = qat_contrast(net, spec, wb, _fq_state(xb, spec), ph)
                for name, g in grads.items():
                    layer = layer_of[name]
                    v = velocity[name].mul_(cfg.momentum).add_(g)
                    params[name].sub_(lrs[layer] * v)
            bar.update(1)
        hist["train_acc"].append(correct / n)
        log.info("QAT %s epoch %d: train acc %.4f", spec.name, epoch + 1, correct / n)
    bar.close()
    return hist

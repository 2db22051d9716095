"""Causal energy-based looped transformer over discrete tokens, trained by EqProp (Tracks 37 and 39).

One weight-tied block (log-sum-exp attention + Hopfield layer, the energy of
:mod:`models.transformer`) is run to equilibrium over a sequence of ``N`` discrete tokens. Each
position ``c`` has a state ``s_c`` in the box ``[-1, 1]^d``, and its own energy given the states of
the positions before it::

    E_c(s_c; s_<c) = 0.5 ||s_c||^2 - Phi_c
    Phi_c = s_c . (emb[x_c] + pos_c)
            + (1/beta_a) sum_h logsumexp_{b <= c}(beta_a q_c^h . k_b^h)      q = W_Q s, k = W_K s
            + 0.5 ||relu(Xi s_c + xi_bias)||^2

with ``k_b`` for ``b < c`` computed from the *other* positions' states (held fixed in ``E_c``) and
``k_c`` from ``s_c`` itself. ``attention`` selects the dynamics:

* ``"causal"`` (the model of Track 37): every position descends its own ``E_c`` (all positions in
  parallel, a projected gradient step ``s_c <- rho(dPhi_c/ds_c)``, damped). The dependency is
  triangular: ``s_c``'s update reads only ``s_<=c`` and ``x_c``, so no information from a later
  token reaches position ``c`` at any sweep -- causality holds in the dynamics, not only in the
  attention mask. The fixed point is the sequential one (position 0 relaxed alone, then position 1
  given it, ...). The dynamics are a triangular game, not the gradient of one joint energy.
* ``"leaky"`` (broken path, not causal): the same causal mask, but the states descend the *joint*
  energy ``sum_c E_c`` with every key live, so ``s_b`` also receives the key-side gradient
  ``sum_{c > b} P_cb W_K^T q_c`` from later queries: information flows backward in time through the
  dynamics although the mask is causal. A real energy model (EqProp exact as ``beta -> 0``), but
  the prediction at position ``t`` depends on tokens after ``t``.
* ``"full"``: the joint energy with no mask (bidirectional encoder; Track 39's reasoning tasks).

Readout: logits ``R s_c + r`` per position (``readout="token"``) or of the mean state
(``readout="mean"``, one label per sequence). Cost: cross-entropy.

**What EqProp estimates.** Nudged phases add ``beta L_c`` (``L_c`` the cross-entropy at position
``c``) to each position's energy. For ``"causal"`` the nudged phases hold the past states at their
*free* equilibrium (every position relaxes with ``s_<c`` fixed), so the symmetric contrast
``-(dPhi/dtheta(s^+) - dPhi/dtheta(s^-)) / 2 beta`` estimates, as ``beta -> 0`` and at exact
equilibria, the **truncated gradient** ``sum_c dL_c(s_c*(theta; s_<c)) / dtheta`` with ``s_<c``
treated as constants (stop-gradient on the past *states*; the past keys ``W_K s_b`` still depend on
``W_K``). It omits the terms ``sum_{b<c} dL_c/ds_b . ds_b/dtheta`` (how a parameter change moves
earlier equilibria). :func:`truncated_bptt_grads` computes that truncated gradient by autograd and
:func:`bptt_grads` the full one (BP through the damped free phase); Track 37 reports the cosine of
the EqProp estimate with both. For ``"leaky"`` / ``"full"`` (one joint energy) the estimate is the
full gradient. The readout's gradient is ``dL/dR`` at the free state (the cost depends on ``R``
directly).

:class:`CausalTransformerLM` is the backprop baseline: a standard pre-LN transformer
(:class:`torch.nn.TransformerEncoderLayer`, causal mask or none) with learned positions and
:func:`match_baseline_width` picks its width so the parameter counts match.

>>> import torch
>>> net = CausalEnergyTransformer(CausalConfig(vocab=5, n_ctx=6, d_model=8, n_heads=2), seed=0).double()
>>> x = torch.tensor([[0, 1, 2, 3, 4, 0]])
>>> s, res = net.free_phase(x, n_steps=200)
>>> res < 1e-8, net.logits(s).shape
(True, torch.Size([1, 6, 5]))
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

ATTENTIONS = ("causal", "leaky", "full")
READOUTS = ("token", "mean")
POSITIONS = ("learned", "sinusoidal", "none")


@dataclass(frozen=True)
class CausalConfig:
    """Architecture and dynamics of a :class:`CausalEnergyTransformer`.

    Attributes:
        vocab: input (and, unless ``n_out`` is set, output) vocabulary size.
        n_ctx: longest sequence (rows of the learned position table).
        d_model, n_heads: token width and attention heads (``d_head = d_model // n_heads``).
        n_mem_ratio: Hopfield memories per token width.
        attention: ``"causal"``, ``"leaky"`` (broken path) or ``"full"`` (see module doc).
        readout: ``"token"`` (logits per position) or ``"mean"`` (one label per sequence).
        n_out: output classes (``None``: ``vocab``).
        pos: ``"learned"``, ``"sinusoidal"`` (fixed, any length: length generalisation) or ``"none"``.
        attn_beta: inverse temperature of the log-sum-exp (``None``: ``1/sqrt(d_head)``).
        damping: ``s <- (1 - damping) rho(dPhi/ds) + damping s``.
        init_gain: scale of ``W_Q``, ``W_K``, ``Xi`` at initialisation.
    """

    vocab: int
    n_ctx: int
    d_model: int = 64
    n_heads: int = 4
    n_mem_ratio: int = 4
    attention: str = "causal"
    readout: str = "token"
    n_out: int | None = None
    pos: str = "learned"
    attn_beta: float | None = None
    damping: float = 0.5
    init_gain: float = 0.5

    def __post_init__(self) -> None:
        for k in ("vocab", "n_ctx", "d_model", "n_heads", "n_mem_ratio"):
            if not (isinstance(getattr(self, k), int) and getattr(self, k) >= 1):
                raise ValueError(f"CausalConfig.{k}={getattr(self, k)!r} must be an int >= 1")
        if self.d_model % self.n_heads:
            raise ValueError(f"CausalConfig.d_model={self.d_model} must be a multiple of n_heads={self.n_heads}")
        if self.attention not in ATTENTIONS:
            raise ValueError(f"CausalConfig.attention={self.attention!r}; allowed: {ATTENTIONS}")
        if self.readout not in READOUTS:
            raise ValueError(f"CausalConfig.readout={self.readout!r}; allowed: {READOUTS}")
        if self.pos not in POSITIONS:
            raise ValueError(f"CausalConfig.pos={self.pos!r}; allowed: {POSITIONS}")
        if not 0.0 <= self.damping < 1.0:
            raise ValueError(f"CausalConfig.damping={self.damping} must be in [0, 1)")
        if self.attn_beta is not None and not self.attn_beta > 0:
            raise ValueError(f"CausalConfig.attn_beta={self.attn_beta} must be > 0")

    def to_dict(self) -> dict:
        return asdict(self)


def sinusoidal(n: int, d: int, dtype=torch.float32) -> torch.Tensor:
    """Fixed sinusoidal position code ``(n, d)`` (Vaswani et al. 2017), amplitude 0.5."""
    pos = torch.arange(n, dtype=torch.float64)[:, None]
    i = torch.arange(0, d, 2, dtype=torch.float64)
    ang = pos / (10000.0 ** (i / d))
    out = torch.zeros(n, d, dtype=torch.float64)
    out[:, 0::2] = torch.sin(ang)
    out[:, 1::2] = torch.cos(ang[:, : d // 2])
    return (0.5 * out).to(dtype)


class CausalEnergyTransformer(nn.Module):
    """Looped energy transformer over tokens (see the module docstring)."""

    PHI_PARAMS = ("emb", "pos", "wq", "wk", "xi", "xi_bias")

    def __init__(self, config: CausalConfig, seed: int | None = None):
        super().__init__()
        self.config = c = config
        gen = torch.Generator().manual_seed(seed) if seed is not None else None
        d, m = c.d_model, c.n_mem_ratio * c.d_model
        n_out = c.n_out or c.vocab
        self.emb = nn.Parameter(torch.empty(c.vocab, d))
        self.pos = nn.Parameter(torch.zeros(c.n_ctx, d), requires_grad=c.pos == "learned")
        self.wq = nn.Parameter(torch.empty(d, d))
        self.wk = nn.Parameter(torch.empty(d, d))
        self.xi = nn.Parameter(torch.empty(m, d))
        self.xi_bias = nn.Parameter(torch.empty(m))
        self.readout_w = nn.Parameter(torch.empty(n_out, d))
        self.readout_b = nn.Parameter(torch.zeros(n_out))
        self.beta_a = c.attn_beta or 1.0 / math.sqrt(d // c.n_heads)
        with torch.no_grad():
            def u(t, bound):
                t.uniform_(-bound, bound, generator=gen)
            u(self.emb, 0.5)
            if c.pos == "learned":
                u(self.pos, 0.1)
            elif c.pos == "sinusoidal":
                self.pos.copy_(sinusoidal(c.n_ctx, d))
            for w in (self.wq, self.wk, self.xi):
                u(w, c.init_gain / math.sqrt(d))
            u(self.xi_bias, c.init_gain / math.sqrt(d))
            u(self.readout_w, 1.0 / math.sqrt(d))

    # ------------------------------------------------------------------ helpers
    def n_params(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def _check(self, x: torch.Tensor) -> None:
        if x.ndim != 2 or x.dtype not in (torch.int64, torch.int32):
            raise ValueError(f"tokens must be an integer tensor (B, N); got {tuple(x.shape)} {x.dtype}")
        if x.shape[1] > self.config.n_ctx and self.config.pos == "learned":
            raise ValueError(f"sequence length {x.shape[1]} > n_ctx={self.config.n_ctx} (learned positions); "
                             "use a shorter window or pos='sinusoidal'")
        if x.numel() and (int(x.min()) < 0 or int(x.max()) >= self.config.vocab):
            raise ValueError(f"token ids must be in [0, {self.config.vocab}); got [{int(x.min())}, {int(x.max())}]")

    def _pos(self, n: int) -> torch.Tensor:
        if self.config.pos == "sinusoidal" and n > self.pos.shape[0]:
            return sinusoidal(n, self.config.d_model, self.pos.dtype).to(self.pos.device)
        return self.pos[:n]

    def drive(self, x: torch.Tensor) -> torch.Tensor:
        """Input injection ``emb[x_c] + pos_c``, ``(B, N, d)``."""
        return self.emb[x] + self._pos(x.shape[1])

    def _heads(self, t: torch.Tensor) -> torch.Tensor:  # (B, N, d) -> (B, H, N, dh)
        b, n, d = t.shape
        h = self.config.n_heads
        return t.reshape(b, n, h, d // h).transpose(1, 2)

    @staticmethod
    def _merge(t: torch.Tensor) -> torch.Tensor:  # (B, H, N, dh) -> (B, N, d)
        return t.transpose(1, 2).reshape(t.shape[0], t.shape[2], -1)

    def _scores(self, Q, K, Kp):
        """Attention logits ``(B, H, N, N)`` (queries x keys) of the configured attention."""
        att = self.config.attention
        A = self.beta_a * (Q @ Kp.transpose(-1, -2))
        n = Q.shape[2]
        if att == "causal":
            idx = torch.arange(n, device=Q.device)
            A[..., idx, idx] = self.beta_a * (Q * K).sum(-1)  # own key from the own (live) state
        if att in ("causal", "leaky"):
            A = A.masked_fill(torch.ones(n, n, dtype=torch.bool, device=Q.device).triu(1), float("-inf"))
        return A

    # ------------------------------------------------------------------ energy and dynamics
    def phi(self, s: torch.Tensor, x: torch.Tensor, past: torch.Tensor | None = None) -> torch.Tensor:
        """``sum_c Phi_c`` per sample ``(B,)`` (differentiable in the parameters and ``s``).

        ``"causal"``: the keys of positions ``b < c`` come from ``past`` (the held states; ``None``:
        ``s`` itself), the own key from ``s``; ``dPhi/ds`` with ``past = s.detach()`` is the causal
        dynamics. ``"leaky"`` / ``"full"``: the joint energy (``past`` ignored)."""
        Q, K = self._heads(s @ self.wq.t()), self._heads(s @ self.wk.t())
        Kp = self._heads(past @ self.wk.t()) if (past is not None and self.config.attention == "causal") else K
        lse = torch.logsumexp(self._scores(Q, K, Kp), dim=-1).sum(dim=(1, 2)) / self.beta_a
        h = F.relu(s @ self.xi.t() + self.xi_bias)
        return (s * self.drive(x)).sum(dim=(1, 2)) + lse + 0.5 * (h ** 2).sum(dim=(1, 2))

    def energy(self, s: torch.Tensor, x: torch.Tensor, past: torch.Tensor | None = None) -> torch.Tensor:
        """``0.5 ||s||^2 - Phi`` per sample (for ``"causal"``, the sum of the position energies ``E_c``
        with the past held at ``past``)."""
        return 0.5 * (s ** 2).sum(dim=(1, 2)) - self.phi(s, x, past)

    def grad_phi(self, s: torch.Tensor, drive: torch.Tensor, past: torch.Tensor | None = None) -> torch.Tensor:
        """Closed-form pre-activation: ``dPhi_c/ds_c`` per position (``"causal"``; the past's keys from
        ``past``, or from ``s`` when ``None``) or ``dPhi/ds`` of the joint energy."""
        att = self.config.attention
        Q, K = self._heads(s @ self.wq.t()), self._heads(s @ self.wk.t())
        Kp = self._heads(past @ self.wk.t()) if (past is not None and att == "causal") else K
        P = torch.softmax(self._scores(Q, K, Kp), dim=-1)
        if att == "causal":
            diag = torch.diagonal(P, dim1=-2, dim2=-1)[..., None]  # (B, H, N, 1)
            dq = P @ Kp + diag * (K - Kp)
            dk = diag * Q  # only the own key is live in E_c
        else:
            dq, dk = P @ K, P.transpose(-1, -2) @ Q  # joint energy: every key receives its queries' gradient
        g = drive + self._merge(dq) @ self.wq + self._merge(dk) @ self.wk
        h = F.relu(s @ self.xi.t() + self.xi_bias)
        return g + h @ self.xi

    def logits(self, s: torch.Tensor) -> torch.Tensor:
        """``(B, N, n_out)`` (``readout="token"``) or ``(B, n_out)`` (``"mean"``)."""
        z = s.mean(dim=1) if self.config.readout == "mean" else s
        return z @ self.readout_w.t() + self.readout_b

    def cost(self, s: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Summed cross-entropy per sample ``(B,)`` (over positions for ``readout="token"``)."""
        z = self.logits(s)
        if self.config.readout == "mean":
            return F.cross_entropy(z, y, reduction="none")
        return F.cross_entropy(z.reshape(-1, z.shape[-1]), y.reshape(-1), reduction="none").reshape(y.shape).sum(1)

    def cost_grad(self, s: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``dL/ds`` of :meth:`cost` (closed form)."""
        z = self.logits(s)
        e = torch.softmax(z, dim=-1) - F.one_hot(y, z.shape[-1]).to(z.dtype)
        g = e @ self.readout_w
        if self.config.readout == "mean":
            return (g / s.shape[1])[:, None, :].expand_as(s)
        return g

    def sweep(self, s: torch.Tensor, drive: torch.Tensor, *, past=None, beta: float = 0.0, y=None,
              damping: float | None = None) -> torch.Tensor:
        """One damped sweep ``s <- (1-damping) clamp(dPhi/ds - beta dL/ds) + damping s``."""
        dmp = self.config.damping if damping is None else damping
        a = self.grad_phi(s, drive, past)
        if beta != 0.0:
            a = a - beta * self.cost_grad(s, y)
        new = a.clamp(-1.0, 1.0)
        return (1 - dmp) * new + dmp * s if dmp else new

    def relax(self, x: torch.Tensor, s0: torch.Tensor | None = None, *, n_steps: int, past=None,
              beta: float = 0.0, y=None, tol: float = 0.0) -> tuple[torch.Tensor, float]:
        """``n_steps`` sweeps from ``s0`` (zeros) without autograd; stops early when the max residual is
        ``<= tol``; returns ``(s, last residual)``."""
        self._check(x)
        if beta != 0.0 and y is None:
            raise ValueError("a nudged relaxation (beta != 0) needs the targets y")
        with torch.no_grad():
            drive = self.drive(x)
            s = torch.zeros_like(drive) if s0 is None else s0.detach().clone()
            res = float("inf")
            for _ in range(n_steps):
                new = self.sweep(s, drive, past=past, beta=beta, y=y)
                res = float((new - s).abs().max())
                s = new
                if res <= tol:
                    break
        return s, res

    def free_phase(self, x: torch.Tensor, n_steps: int = 30, tol: float = 0.0) -> tuple[torch.Tensor, float]:
        return self.relax(x, None, n_steps=n_steps, tol=tol)

    def settling_steps(self, x: torch.Tensor, s_free: torch.Tensor, *, eps: float, max_steps: int) -> torch.Tensor:
        """Sweeps each position needs, relaxing from zero with its past held at ``s_free`` (the causal
        per-token relaxation), until its residual ``max_d |s_new - s|`` is first ``<= eps``;
        ``(B, N)`` long, ``max_steps`` where never reached. ``"causal"`` only."""
        if self.config.attention != "causal":
            raise ValueError("settling_steps needs attention='causal' (per-token relaxation with the past held)")
        with torch.no_grad():
            drive = self.drive(x)
            s = torch.zeros_like(drive)
            steps = torch.full(x.shape, max_steps, dtype=torch.long, device=x.device)
            active = torch.ones(x.shape, dtype=torch.bool, device=x.device)
            for k in range(1, max_steps + 1):
                new = self.sweep(s, drive, past=s_free)
                res = (new - s).abs().amax(dim=-1)
                s = new
                done = active & (res <= eps)
                steps[done] = k
                active &= ~done
                if not bool(active.any()):
                    break
        return steps


# ------------------------------------------------------------------------------ gradients
def _phi_params(net: CausalEnergyTransformer) -> dict[str, nn.Parameter]:
    return {k: p for k, p in net.named_parameters() if k in net.PHI_PARAMS and p.requires_grad}


def _readout_grads(net, s, y, n_norm) -> dict[str, torch.Tensor]:
    with torch.enable_grad():
        loss = net.cost(s.detach(), y).sum() / n_norm
        gw, gb = torch.autograd.grad(loss, [net.readout_w, net.readout_b])
    return {"readout_w": gw, "readout_b": gb}


def n_targets(net: CausalEnergyTransformer, y: torch.Tensor) -> int:
    """Targets in a batch (positions for ``readout="token"``, sequences for ``"mean"``): the loss is
    the mean cross-entropy over them."""
    return y.numel()


def eqprop_grads(net: CausalEnergyTransformer, x: torch.Tensor, y: torch.Tensor, *, beta: float = 0.1,
                 n_free_steps: int = 30, n_nudge_steps: int = 15, free_state: torch.Tensor | None = None,
                 return_state: bool = False):
    """Symmetric-nudging EqProp estimate of ``d mean CE / d theta`` (``{name: tensor}``); for
    ``"causal"`` the nudged phases hold the past at the free equilibrium (the truncated gradient,
    see the module docstring)."""
    if not beta > 0:
        raise ValueError(f"beta={beta} must be > 0")
    s0 = net.free_phase(x, n_free_steps)[0] if free_state is None else free_state
    past = s0 if net.config.attention == "causal" else None
    sp, _ = net.relax(x, s0, n_steps=n_nudge_steps, past=past, beta=beta, y=y)
    sm, _ = net.relax(x, s0, n_steps=n_nudge_steps, past=past, beta=-beta, y=y)
    params = _phi_params(net)
    norm = n_targets(net, y)
    with torch.enable_grad():
        gp = torch.autograd.grad(net.phi(sp, x, past).sum(), list(params.values()))
        gm = torch.autograd.grad(net.phi(sm, x, past).sum(), list(params.values()))
    out = {k: -(a - b) / (2 * beta * norm) for k, a, b in zip(params, gp, gm)}
    out.update(_readout_grads(net, s0, y, norm))
    return (out, s0) if return_state else out


def _unrolled_loss(net, x, y, n_steps, past=None):
    drive = net.drive(x)
    s = torch.zeros_like(drive)
    for _ in range(n_steps):
        s = net.sweep(s, drive, past=past)
    return net.cost(s, y).sum() / n_targets(net, y), s


def bptt_grads(net: CausalEnergyTransformer, x, y, *, n_steps: int, return_state: bool = False):
    """Full gradient: autograd through ``n_steps`` damped free sweeps from zero (past states live)."""
    params = {k: p for k, p in net.named_parameters() if p.requires_grad}
    with torch.enable_grad():
        loss, s = _unrolled_loss(net, x, y, n_steps)
        g = torch.autograd.grad(loss, list(params.values()), allow_unused=True)
    out = {k: (gi if gi is not None else torch.zeros_like(p)) for (k, p), gi in zip(params.items(), g)}
    return (out, s.detach()) if return_state else out


def truncated_bptt_grads(net: CausalEnergyTransformer, x, y, *, n_steps: int):
    """The truncated gradient EqProp estimates (``"causal"``): the free equilibrium ``s*`` (no grad),
    then autograd through ``n_steps`` sweeps from zero in which every position relaxes with its past
    held at ``s*`` (a constant; ``W_K s*_b`` keeps its ``W_K`` dependence)."""
    params = {k: p for k, p in net.named_parameters() if p.requires_grad}
    s_star, _ = net.free_phase(x, n_steps)
    past = s_star if net.config.attention == "causal" else None
    with torch.enable_grad():
        loss, _ = _unrolled_loss(net, x, y, n_steps, past=past)
        g = torch.autograd.grad(loss, list(params.values()), allow_unused=True)
    return {k: (gi if gi is not None else torch.zeros_like(p)) for (k, p), gi in zip(params.items(), g)}


def grad_cosine(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    """Cosine of two gradients flattened over their common parameters."""
    keys = sorted(set(a) & set(b))
    va = torch.cat([a[k].flatten().double() for k in keys])
    vb = torch.cat([b[k].flatten().double() for k in keys])
    return float(va @ vb / (va.norm() * vb.norm()).clamp_min(1e-300))


# ------------------------------------------------------------------------------ baseline
class CausalTransformerLM(nn.Module):
    """Standard pre-LN transformer trained by backprop (the baseline): token + learned position
    embeddings, ``n_layers`` :class:`torch.nn.TransformerEncoderLayer` (ReLU MLP ``ff_mult * d``, no
    dropout), causal mask (``causal=True``) or none, final LayerNorm, linear head; ``readout`` as in
    :class:`CausalConfig`."""

    def __init__(self, vocab: int, n_ctx: int, d_model: int, n_heads: int, n_layers: int = 1, *,
                 ff_mult: int = 4, causal: bool = True, n_out: int | None = None, readout: str = "token",
                 pos: str = "learned", seed: int | None = None):
        super().__init__()
        if readout not in READOUTS or pos not in ("learned", "sinusoidal"):
            raise ValueError(f"readout={readout!r} / pos={pos!r}; allowed {READOUTS} / ('learned', 'sinusoidal')")
        if seed is not None:
            torch.manual_seed(seed)
        self.causal, self.readout, self.pos_kind, self.d_model = causal, readout, pos, d_model
        self.emb = nn.Embedding(vocab, d_model)
        self.pos = nn.Parameter(0.02 * torch.randn(n_ctx, d_model)) if pos == "learned" else None
        self.layers = nn.ModuleList(nn.TransformerEncoderLayer(d_model, n_heads, ff_mult * d_model, dropout=0.0,
                                                               batch_first=True, norm_first=True)
                                    for _ in range(n_layers))
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, n_out or vocab)

    def n_params(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[1]
        pos = self.pos[:n] if self.pos is not None else sinusoidal(n, self.d_model, self.emb.weight.dtype)
        h = self.emb(x) + pos
        mask = torch.ones(n, n, dtype=torch.bool, device=x.device).triu(1) if self.causal else None
        for layer in self.layers:
            h = layer(h, src_mask=mask, is_causal=self.causal) if mask is not None else layer(h)
        h = self.norm(h)
        return self.head(h.mean(dim=1) if self.readout == "mean" else h)


def match_baseline_width(target: int, n_heads: int, make) -> int:
    """The width (a multiple of ``n_heads``) whose ``make(d).n_params()`` is closest to ``target``."""
    best, best_err = n_heads, float("inf")
    for d in range(n_heads, 257, n_heads):
        err = abs(make(d).n_params() - target)
        if err < best_err:
            best, best_err = d, err
    return best

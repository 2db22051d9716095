"""Energy transformer: a looped (weight-tied) transformer block run to equilibrium, trained by EqProp.

The block is an instance of the energy-model protocol (:mod:`models.energy`): the token states are
state nodes, and attention, the Hopfield (MLP) layer, the input injection and the inter-block links
are interaction terms whose sum is ``Phi``. Four new term types plug in with their float kernels
registered in :data:`models.energy.FLOAT_KERNELS` (the engine, the solvers and the gradient
baselines are unchanged, as for :mod:`models.conv`); the readout is the existing
:class:`~models.energy.Dense` + :class:`~models.energy.Bias`.

State: per block ``l`` a token node ``S_l`` of ``N`` tokens of width ``d`` (stored flat
``(B, N*d)``; :class:`~models.energy.Node` ``shape = (N, d)``) in the box ``[-1, 1]`` (hard tanh:
bounding the states keeps the log-sum-exp energy bounded below, so the free phase cannot diverge),
then the readout node ``o`` (``n_out`` units, hard tanh [-1, 1] by default).

Terms (``P_t`` the pixels of token ``t``: a 7x7 patch, 16 tokens, or an image row, 28 tokens)::

    TokenEmbed     S_0 . (E P + b + pos)                                     (static, input injection)
    LSEAttention   (1/beta_a) sum_h sum_C logsumexp_B(beta_a q_C^h . k_B^h),  q = W_Q s, k = W_K s
                   (Ramsauer et al. 2020; Hoover et al. 2023: attention = -gradient of this energy)
    TokenHopfield  0.5 sum_t ||relu(Xi s_t + c)||^2                          (Hopfield / MLP energy)
    TokenLinear    sum_t S_l[t] . (W S_{l-1}[t])                             (link of block l-1 to l)
    Dense, Bias    o . (R vec(S_{L-1}) + r)                                  (readout)

Energy ``E = 0.5 sum_i ||s_i||^2 - Phi`` (and ``E + beta L`` nudged). A sweep sets each node to
``rho(dPhi/ds_i)`` (the colouring gives the even blocks, then the odd ones and the readout); for a
token node, whose ``Phi`` is not linear in itself, this is a projected gradient step of size 1 on
``E``, and the damped update ``s <- (1 - damping) rho(dPhi/ds) + damping s`` a step of size
``1 - damping``: it descends ``E`` while the step is below ``2 / Lip(dE/ds)``
(``tests/models/test_transformer.py`` checks monotone descent). Fixed points are stationary points
of ``E`` over the box, so the EqProp estimate equals the gradient of the loss at the equilibrium as
``beta -> 0``. ``damping`` is the solver's (``alpha = 1 - damping`` is the step of the issue's
ablation); fixed point or Anderson through :func:`models.solvers.relax`.

Depth: ``n_blocks`` token nodes in a chain; ``n_unique`` parameter sets shared cyclically (block
``l`` uses set ``l % n_unique``: 4 blocks with 2 unique = tied pairs ABAB). Shared parameters are
summed over their terms by name (the protocol's contrast does that).

Not energy based (baseline only, never EqProp): ``key_side=False`` drops the key-side half of the
attention gradient, which is ordinary (query-side) softmax attention; the EqProp contrast then no
longer estimates the gradient (the broken-path test).

>>> import torch
>>> net = EnergyTransformer(TransformerConfig(d_model=16, n_heads=2, tokens="patch7"), seed=0).double()
>>> [n.shape for n in net.nodes]
[(16, 16), (10,)]
>>> x = torch.rand(3, 784, dtype=torch.float64)
>>> s, info = net.free_phase(x, n_steps=200, tol=1e-10)
>>> bool(info.converged.all()), float(s[0].abs().max()) <= 1.0
(True, True)
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Callable, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from .energy import INPUT, Bias, Dense, EnergyModel, Node, Term, register_float_kernel
from .engine import check_update
from .eqprop_mlp import COSTS
from .solvers import SOLVERS, RelaxInfo

TOKENIZATIONS = {"patch7": (7, 7), "rows": (1, 28)}
"""MNIST as a sequence: 16 tokens of 7x7 patches, or 28 tokens of one image row (28 pixels)."""
IMAGE = (28, 28)
EXIT_CRITERIA = ("abs", "rel")
"""Per-sample early-exit tests of :meth:`EnergyTransformer.relax_early_exit`."""


def tokenize(x: torch.Tensor, patch: tuple[int, int], image: tuple[int, int] = IMAGE) -> torch.Tensor:
    """``(B, H*W)`` images -> ``(B, N, ph*pw)`` tokens, patches in row-major order.

    >>> tokenize(torch.arange(16.).reshape(1, 16), (2, 2), (4, 4))[0, 1].tolist()
    [2.0, 3.0, 6.0, 7.0]
    """
    (h, w), (ph, pw) = image, patch
    b = x.shape[0]
    return x.reshape(b, h // ph, ph, w // pw, pw).permute(0, 1, 3, 2, 4).reshape(b, (h // ph) * (w // pw), ph * pw)


# ------------------------------------------------------------------------------------- the terms
@dataclass(frozen=True)
class TokenEmbed(Term):
    """``Phi`` term ``S_post . (E P + b + pos)`` (static): ``weight`` ``(d, ph*pw)``, ``bias`` ``(d,)``,
    ``pos`` ``(N, d)``; ``patch`` the token's pixel window."""

    post: int
    weight: str
    bias: str
    pos: str
    patch: tuple[int, int]
    node_fields: ClassVar[tuple[str, ...]] = ("post",)
    fixed_nodes: ClassVar[tuple[int, ...]] = (INPUT,)
    param_fields: ClassVar[tuple[str, ...]] = ("weight", "bias", "pos")


@dataclass(frozen=True)
class LSEAttention(Term):
    """``Phi`` term ``(1/beta_a) sum_h sum_C logsumexp_B(beta_a q_C . k_B)`` over the token node
    ``tokens`` (``n_tokens x d_model``); ``wq``, ``wk`` name ``(n_heads*d_head, d_model)`` parameters.

    ``key_side=False``: the contribution keeps only the query-side half of ``dPhi/ds`` (ordinary
    softmax attention), which is *not* the gradient of ``Phi`` -- a non-energy baseline."""

    tokens: int
    wq: str
    wk: str
    n_tokens: int
    d_model: int
    n_heads: int
    beta: float
    key_side: bool = True
    node_fields: ClassVar[tuple[str, ...]] = ("tokens",)
    param_fields: ClassVar[tuple[str, ...]] = ("wq", "wk")


@dataclass(frozen=True)
class TokenHopfield(Term):
    """``Phi`` term ``0.5 sum_t ||relu(Xi s_t + c)||^2``: ``weight`` ``(n_mem, d)``, ``bias`` ``(n_mem,)``."""

    tokens: int
    weight: str
    bias: str
    n_tokens: int
    d_model: int
    n_mem: int
    node_fields: ClassVar[tuple[str, ...]] = ("tokens",)
    param_fields: ClassVar[tuple[str, ...]] = ("weight", "bias")


@dataclass(frozen=True)
class TokenLinear(Term):
    """``Phi`` term ``sum_t S_post[t] . (W S_pre[t])`` (per-token link between two token nodes),
    ``weight`` ``(d, d)``."""

    post: int
    pre: int
    weight: str
    n_tokens: int
    d_model: int
    node_fields: ClassVar[tuple[str, ...]] = ("post", "pre")
    param_fields: ClassVar[tuple[str, ...]] = ("weight",)


# ----------------------------------------------------------------------------- float kernels
def _tok(s: torch.Tensor, n: int, d: int) -> torch.Tensor:
    return s.reshape(s.shape[0], n, d)


def _add(a, g):
    return g if a is None else a + g


class TokenEmbedFloat:
    @staticmethod
    def _z(t: TokenEmbed, p, x) -> torch.Tensor:
        return (tokenize(x, t.patch) @ p(t.weight).t() + p(t.bias) + p(t.pos)).flatten(1)

    @classmethod
    def contributions(cls, t: TokenEmbed, p) -> list[tuple[int, Callable]]:
        return [(t.post, lambda a, x, s: _add(a, cls._z(t, p, x)))]

    @classmethod
    def phi(cls, t: TokenEmbed, p, x, s) -> torch.Tensor:
        return (s[t.post] * cls._z(t, p, x)).sum(dim=1)

    @staticmethod
    def dphi(t: TokenEmbed, p, x, s) -> dict[str, torch.Tensor]:
        n, d = p(t.pos).shape
        S = _tok(s[t.post], n, d)
        P = tokenize(x, t.patch)
        return {t.weight: S.reshape(-1, d).t() @ P.reshape(-1, P.shape[-1]), t.bias: S.sum(dim=(0, 1)),
                t.pos: S.sum(dim=0)}


    @staticmethod
    def macs(t: TokenEmbed, sizes: dict[int, int]) -> int:
        return sizes[t.post] * t.patch[0] * t.patch[1]


class LSEAttentionFloat:
    """Closed-form kernel: ``P = softmax_B(beta_a Q K^T)``, ``dPhi/dQ = P K``, ``dPhi/dK = P^T Q``,
    ``dPhi/dS = dQ W_Q + dK W_K``, ``dPhi/dW_Q = dQ^T S``, ``dPhi/dW_K = dK^T S``."""

    @staticmethod
    def _qkp(t: LSEAttention, p, s):
        S = _tok(s[t.tokens], t.n_tokens, t.d_model)
        b, h = S.shape[0], t.n_heads
        Wq, Wk = p(t.wq), p(t.wk)
        dh = Wq.shape[0] // h
        Q = (S @ Wq.t()).reshape(b, t.n_tokens, h, dh).transpose(1, 2)  # (B, H, N, dh)
        K = (S @ Wk.t()).reshape(b, t.n_tokens, h, dh).transpose(1, 2)
        A = t.beta * (Q @ K.transpose(-1, -2))  # (B, H, N_query, N_key)
        return S, Q, K, A

    @staticmethod
    def _heads(g: torch.Tensor) -> torch.Tensor:  # (B, H, N, dh) -> (B, N, H*dh)
        return g.transpose(1, 2).reshape(g.shape[0], g.shape[2], -1)

    @classmethod
    def _grads_qk(cls, t, p, s):
        S, Q, K, A = cls._qkp(t, p, s)
        P = torch.softmax(A, dim=-1)
        return S, cls._heads(P @ K), cls._heads(P.transpose(-1, -2) @ Q)  # dPhi/dQ, dPhi/dK

    @classmethod
    def contributions(cls, t: LSEAttention, p) -> list[tuple[int, Callable]]:
        def acc(a, x, s):
            _, dq, dk = cls._grads_qk(t, p, s)
            g = dq @ p(t.wq)
            if t.key_side:
                g = g + dk @ p(t.wk)
            return _add(a, g.flatten(1))

        return [(t.tokens, acc)]

    @classmethod
    def phi(cls, t: LSEAttention, p, x, s) -> torch.Tensor:
        _, _, _, A = cls._qkp(t, p, s)
        return torch.logsumexp(A, dim=-1).sum(dim=(1, 2)) / t.beta

    @classmethod
    def dphi(cls, t: LSEAttention, p, x, s) -> dict[str, torch.Tensor]:
        S, dq, dk = cls._grads_qk(t, p, s)
        S2 = S.reshape(-1, t.d_model)
        return {t.wq: dq.reshape(S2.shape[0], -1).t() @ S2, t.wk: dk.reshape(S2.shape[0], -1).t() @ S2}


    @staticmethod
    def macs(t: LSEAttention, sizes: dict[int, int]) -> int:
        """Per sample and sweep: Q, K projections, scores, ``P K`` and ``P^T Q``, back-projections
        (the head width ``d_head`` is taken as ``d_model / n_heads``)."""
        n, d = t.n_tokens, t.d_model
        return 2 * n * d * d + 3 * n * n * d + 2 * n * d * d


class TokenHopfieldFloat:
    @staticmethod
    def _h(t: TokenHopfield, p, s):
        S = _tok(s[t.tokens], t.n_tokens, t.d_model)
        return S, F.relu(S @ p(t.weight).t() + p(t.bias))  # (B, N, M)

    @classmethod
    def contributions(cls, t: TokenHopfield, p) -> list[tuple[int, Callable]]:
        def acc(a, x, s):
            _, h = cls._h(t, p, s)
            return _add(a, (h @ p(t.weight)).flatten(1))

        return [(t.tokens, acc)]

    @classmethod
    def phi(cls, t, p, x, s) -> torch.Tensor:
        _, h = cls._h(t, p, s)
        return 0.5 * (h ** 2).sum(dim=(1, 2))

    @classmethod
    def dphi(cls, t, p, x, s) -> dict[str, torch.Tensor]:
        S, h = cls._h(t, p, s)
        return {t.weight: h.reshape(-1, h.shape[-1]).t() @ S.reshape(-1, t.d_model), t.bias: h.sum(dim=(0, 1))}


    @staticmethod
    def macs(t: TokenHopfield, sizes: dict[int, int]) -> int:
        """Per sample and sweep: ``Xi s_t`` and ``Xi^T h_t`` for every token."""
        return 2 * sizes[t.tokens] * t.n_mem


class TokenLinearFloat:
    @classmethod
    def contributions(cls, t: TokenLinear, p) -> list[tuple[int, Callable]]:
        n, d = t.n_tokens, t.d_model

        def fwd(a, x, s):
            return _add(a, (_tok(s[t.pre], n, d) @ p(t.weight).t()).flatten(1))

        def fb(a, x, s):
            return _add(a, (_tok(s[t.post], n, d) @ p(t.weight)).flatten(1))

        return [(t.post, fwd), (t.pre, fb)]

    @staticmethod
    def phi(t: TokenLinear, p, x, s) -> torch.Tensor:
        n, d = t.n_tokens, t.d_model
        return (_tok(s[t.post], n, d) * (_tok(s[t.pre], n, d) @ p(t.weight).t())).sum(dim=(1, 2))

    @staticmethod
    def dphi(t: TokenLinear, p, x, s) -> dict[str, torch.Tensor]:
        d = t.d_model
        return {t.weight: s[t.post].reshape(-1, d).t() @ s[t.pre].reshape(-1, d)}


    @staticmethod
    def macs(t: TokenLinear, sizes: dict[int, int]) -> int:
        return 2 * sizes[t.post] * t.d_model


for _term, _kernel in ((TokenEmbed, TokenEmbedFloat), (LSEAttention, LSEAttentionFloat),
                       (TokenHopfield, TokenHopfieldFloat), (TokenLinear, TokenLinearFloat)):
    register_float_kernel(_term, _kernel)


# ----------------------------------------------------------------------------------- the model
@dataclass(frozen=True)
class TransformerConfig:
    """Architecture and dynamics of an :class:`EnergyTransformer`.

    Attributes:
        tokens: ``"patch7"`` (16 tokens of 7x7 pixels) or ``"rows"`` (28 tokens of 28 pixels).
        d_model: token width ``d``.
        n_heads: attention heads (``d_head = d_model // n_heads``).
        n_mem_ratio: Hopfield memories per token width (``n_mem = n_mem_ratio * d_model``).
        n_blocks: token nodes (blocks) in the loop, ``L``.
        n_unique: distinct parameter sets (``None``: ``n_blocks``, independent blocks); block ``l``
            uses set ``l % n_unique`` (``n_blocks=4, n_unique=2``: tied pairs ABAB).
        attn_beta: inverse temperature of the log-sum-exp (``None``: ``1/sqrt(d_head)``).
        n_out: classes.
        cost, ce_scale: output cost (as :class:`~models.eqprop_mlp.EqPropConfig`).
        damping: the solver's damping (``s <- (1-damping) step(s) + damping s``, step ``1-damping``).
        method: ``"fixed_point"`` or ``"anderson"`` (:data:`models.solvers.SOLVERS`).
        init_gain: scale of the attention, Hopfield and link weights (small: a contracting block).
        key_side: ``False`` = non-energy attention baseline (see module doc); never EqProp.
        max_norm: after each optimiser step the attention, Hopfield and link matrices are rescaled to
            spectral norm ``<= max_norm`` (:meth:`EnergyTransformer.constrain_`; ``None``: off). Keeps
            the token update contracting while training (without it Adam at lr 3e-3 drove the free
            phase into non-converging oscillation within one epoch, measured).
        out_activation: box of the readout node. ``"hard_tanh"`` [-1, 1]: the MSE targets 0 and 1 lie
            inside the box, so no output unit is stuck at a clamp; with ``"hard_sigmoid"`` [0, 1] the
            units below 0 get no gradient and training stalled (measured: 61-66 % after one epoch of
            4000 images; all outputs collapsed to 0 with the readout bias started at 0.5).
        inject: input injection (the shared :class:`TokenEmbed`) into the ``"first"`` block only or
            into ``"all"`` blocks (DEQ style; deep chains with injection into the first block only did
            not train within the ablation's budget).
        update: ``"async"`` (colouring) or ``"sync"``.
    """

    tokens: str = "patch7"
    d_model: int = 64
    n_heads: int = 4
    n_mem_ratio: int = 2
    n_blocks: int = 1
    n_unique: int | None = None
    attn_beta: float | None = None
    n_out: int = 10
    cost: str = "mse"
    ce_scale: float = 4.0
    damping: float = 0.5
    method: str = "fixed_point"
    init_gain: float = 0.5
    key_side: bool = True
    max_norm: float | None = 1.0
    out_activation: str = "hard_tanh"
    inject: str = "first"
    update: str = "async"

    def __post_init__(self) -> None:
        if self.tokens not in TOKENIZATIONS:
            raise ValueError(f"TransformerConfig.tokens={self.tokens!r}; allowed: {tuple(TOKENIZATIONS)}")
        for name in ("d_model", "n_heads", "n_mem_ratio", "n_blocks", "n_out"):
            if not (isinstance(getattr(self, name), int) and getattr(self, name) >= 1):
                raise ValueError(f"TransformerConfig.{name}={getattr(self, name)!r} must be an int >= 1")
        if self.d_model % self.n_heads:
            raise ValueError(f"TransformerConfig: d_model={self.d_model} is not a multiple of n_heads={self.n_heads}")
        if self.n_unique is not None and not 1 <= self.n_unique <= self.n_blocks:
            raise ValueError(f"TransformerConfig.n_unique={self.n_unique} must be in [1, n_blocks={self.n_blocks}]")
        if not 0.0 <= self.damping < 1.0:
            raise ValueError(f"TransformerConfig.damping={self.damping} must be in [0, 1)")
        if self.method not in SOLVERS:
            raise ValueError(f"TransformerConfig.method={self.method!r}; allowed: {sorted(SOLVERS)}")
        if self.cost not in COSTS:
            raise ValueError(f"TransformerConfig.cost={self.cost!r}; allowed: {COSTS}")
        if self.inject not in ("first", "all"):
            raise ValueError(f"TransformerConfig.inject={self.inject!r}; allowed: ('first', 'all')")
        if self.max_norm is not None and not self.max_norm > 0:
            raise ValueError(f"TransformerConfig.max_norm={self.max_norm} must be > 0 or None")
        if self.attn_beta is not None and not self.attn_beta > 0:
            raise ValueError(f"TransformerConfig.attn_beta={self.attn_beta} must be > 0")
        check_update(self.update, "TransformerConfig.update")

    @property
    def n_tokens(self) -> int:
        ph, pw = TOKENIZATIONS[self.tokens]
        return (IMAGE[0] // ph) * (IMAGE[1] // pw)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TransformerConfig":
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"TransformerConfig: unknown keys {sorted(unknown)}; valid: {sorted(cls.__dataclass_fields__)}")
        return cls(**d)


class _Block(nn.Module):
    def __init__(self, d: int, n_mem: int):
        super().__init__()
        self.wq = nn.Parameter(torch.empty(d, d))
        self.wk = nn.Parameter(torch.empty(d, d))
        self.xi = nn.Parameter(torch.empty(n_mem, d))
        self.xi_bias = nn.Parameter(torch.empty(n_mem))


class EnergyTransformer(EnergyModel, nn.Module):
    """Looped energy transformer (see the module docstring for the energy and its terms)."""

    def __init__(self, config: TransformerConfig | None = None, seed: int | None = None):
        super().__init__()
        self.config = cfg = config or TransformerConfig()
        gen = torch.Generator().manual_seed(seed) if seed is not None else None
        n, d = cfg.n_tokens, cfg.d_model
        ph, pw = TOKENIZATIONS[cfg.tokens]
        n_unique = cfg.n_unique or cfg.n_blocks
        self.embed = nn.Linear(ph * pw, d)
        self.pos = nn.Parameter(torch.empty(n, d))
        self.blocks = nn.ModuleList(_Block(d, cfg.n_mem_ratio * d) for _ in range(n_unique))
        n_links = min(n_unique, cfg.n_blocks - 1)  # link l-1 -> l uses set (l-1) % n_links
        self.links = nn.ParameterList(nn.Parameter(torch.empty(d, d)) for _ in range(n_links))
        self.readout = nn.Linear(n * d, cfg.n_out)
        beta_a = cfg.attn_beta or 1.0 / math.sqrt(d // cfg.n_heads)
        self.nodes = [Node(n * d, "hard_tanh", (n, d)) for _ in range(cfg.n_blocks)] + [Node(cfg.n_out, cfg.out_activation)]
        self.terms = []
        for l in range(cfg.n_blocks):
            k = f"blocks.{l % n_unique}"
            if l == 0 or cfg.inject == "all":
                self.terms.append(TokenEmbed(l, "embed.weight", "embed.bias", "pos", (ph, pw)))
            if l > 0:
                self.terms.append(TokenLinear(l, l - 1, f"links.{(l - 1) % n_links}", n, d))
            self.terms += [LSEAttention(l, f"{k}.wq", f"{k}.wk", n, d, cfg.n_heads, beta_a, cfg.key_side),
                           TokenHopfield(l, f"{k}.xi", f"{k}.xi_bias", n, d, cfg.n_mem_ratio * d)]
        last = cfg.n_blocks
        self.terms += [Dense(last, last - 1, "readout.weight"), Bias(last, "readout.bias")]
        g = cfg.init_gain
        with torch.no_grad():
            def u(t, bound):
                t.uniform_(-bound, bound, generator=gen)
            u(self.embed.weight, 1 / math.sqrt(ph * pw)); u(self.embed.bias, 1 / math.sqrt(ph * pw))
            u(self.pos, 0.1)
            for b in self.blocks:
                for w in (b.wq, b.wk, b.xi):
                    u(w, g / math.sqrt(d))
                u(b.xi_bias, g / math.sqrt(d))
            for w in self.links:
                u(w, g / math.sqrt(d))
            u(self.readout.weight, 1 / math.sqrt(n * d))
            self.readout.bias.fill_(0.5)  # mid-box: every output unit starts in the linear range of its clamp

    @property
    def n_in(self) -> int:
        return IMAGE[0] * IMAGE[1]

    @property
    def update(self) -> str:
        return self.config.update

    def relax(self, x: torch.Tensor, s0=None, *, method: str | None = None, damping: float | None = None,
              **kw) -> tuple[list[torch.Tensor], RelaxInfo]:
        """:meth:`EnergyModel.relax` with the config's solver and damping as defaults."""
        return super().relax(x, s0, method=method or self.config.method,
                             damping=self.config.damping if damping is None else damping, **kw)

    @torch.no_grad()
    def constrain_(self) -> None:
        """Rescale ``W_Q``, ``W_K``, ``Xi`` and the links to spectral norm ``<= config.max_norm``."""
        if self.config.max_norm is None:
            return
        mats = [w for b in self.blocks for w in (b.wq, b.wk, b.xi)] + list(self.links)
        for w in mats:
            n = float(torch.linalg.matrix_norm(w.detach().double(), 2))
            if n > self.config.max_norm:
                w.mul_(self.config.max_norm / n)

    def relax_early_exit(self, x: torch.Tensor, *, eps: float, max_steps: int, damping: float | None = None,
                         criterion: str = "abs") -> tuple[list[torch.Tensor], torch.Tensor]:
        """Free phase with per-sample early exit: a sample stops being updated after the first step
        whose residual ``r_k = max |s_new - s|`` is ``<= eps`` (``criterion="abs"``) or ``<= eps * r_1``
        (``"rel"``: relative to the sample's first-sweep residual, i.e. to how far it moved from the
        zero start); returns ``(state, steps)`` (``steps`` = sweeps each sample ran, ``max_steps`` for
        those that never reached ``eps``)."""
        if criterion not in EXIT_CRITERIA:
            raise ValueError(f"criterion={criterion!r}; allowed: {EXIT_CRITERIA}")
        dmp = self.config.damping if damping is None else damping
        with torch.no_grad():
            sweep = self.sweeper(self.drive(x))
            s = self.zero_state(x.shape[0], x)
            steps = torch.full((x.shape[0],), max_steps, dtype=torch.long)
            active = torch.ones(x.shape[0], dtype=torch.bool)
            for k in range(1, max_steps + 1):
                new = [(1 - dmp) * a + dmp * b for a, b in zip(sweep(s), s)]
                res = torch.stack([(a - b).abs().amax(dim=1) for a, b in zip(new, s)]).amax(dim=0)
                if k == 1:
                    scale = res.clamp_min(torch.finfo(res.dtype).tiny) if criterion == "rel" else torch.ones_like(res)
                s = [torch.where(active[:, None], a, b) for a, b in zip(new, s)]
                done = active & (res <= eps * scale)
                steps[done] = k
                active &= ~done
                if not bool(active.any()):
                    break
        return s, steps


# ------------------------------------------------------------------------- gradients & training
def bptt_grads_damped(net: EnergyTransformer, x: torch.Tensor, y: torch.Tensor, *, n_steps: int,
                      damping: float | None = None, return_state: bool = False):
    """``d mean L(s_T) / d theta`` by autograd through ``n_steps`` *damped* free sweeps from zero (the
    dynamics as run; :func:`models.gradients.bptt_grads` differentiates undamped sweeps)."""
    dmp = net.config.damping if damping is None else damping
    params = dict(net.named_parameters())
    with torch.enable_grad():
        s = net.zero_state(x.shape[0], x)
        sweep = net.sweeper(net.drive(x))
        for _ in range(n_steps):
            s = [(1 - dmp) * a + dmp * b for a, b in zip(sweep(s), s)] if dmp else sweep(s)
        loss = net.cost(s[-1], y).mean()
        grads = torch.autograd.grad(loss, list(params.values()), allow_unused=True)
    out = {k: (g if g is not None else torch.zeros_like(p)) for (k, p), g in zip(params.items(), grads)}
    return (out, [t.detach() for t in s]) if return_state else out


GRAD_METHODS = ("eqprop", "bptt", "implicit")


@dataclass(frozen=True)
class TrainSettings:
    """One training run of the transformer (EqProp or a baseline on the same block).

    Attributes:
        grad: ``"eqprop"`` (symmetric nudging), ``"bptt"`` (BP through the damped free phase: the
            baseline) or ``"implicit"`` (adjoint at the fixed point, GMRES: the DEQ baseline).
        beta: nudging strength.
        n_free_steps, n_nudge_steps: sweeps of the free and of each nudged phase (also the BPTT depth).
        lr, batch_size, epochs: Adam step size, minibatch, passes over the training set.
    """

    grad: str = "eqprop"
    beta: float = 0.1
    n_free_steps: int = 30
    n_nudge_steps: int = 15
    lr: float = 1e-3
    batch_size: int = 64
    epochs: int = 1

    def __post_init__(self) -> None:
        if self.grad not in GRAD_METHODS:
            raise ValueError(f"TrainSettings.grad={self.grad!r}; allowed: {GRAD_METHODS}")


def grads_of(net: EnergyTransformer, x, y, ts: TrainSettings) -> tuple[dict[str, torch.Tensor], list[torch.Tensor]]:
    """Gradient estimate of one minibatch and the free state (after ``n_free_steps`` sweeps)."""
    if ts.grad == "eqprop":
        g, st = net.eqprop_grads(x, y, beta=ts.beta, mode="symmetric", n_free_steps=ts.n_free_steps,
                                 n_nudge_steps=ts.n_nudge_steps, return_states=True)
        return g, st["free"]
    if ts.grad == "bptt":
        g, s = bptt_grads_damped(net, x, y, n_steps=ts.n_free_steps, return_state=True)
        return g, s
    from .gradients import implicit_grads
    s, _ = net.free_phase(x, n_steps=ts.n_free_steps)
    return implicit_grads(net, x, y, free_state=s, tol=1e-6), s


def train_epoch(net: EnergyTransformer, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
                ts: TrainSettings, generator: torch.Generator | None = None) -> float:
    """One pass over ``(x, y)`` in shuffled minibatches; returns the mean free-phase training cost."""
    perm = torch.randperm(x.shape[0], generator=generator)
    params = dict(net.named_parameters())
    total, n = 0.0, 0
    for i in range(0, x.shape[0], ts.batch_size):
        idx = perm[i:i + ts.batch_size]
        xb, yb = x[idx], y[idx]
        g, s = grads_of(net, xb, yb, ts)
        opt.zero_grad(set_to_none=True)
        for k, p in params.items():
            p.grad = g[k].to(p.dtype)
        opt.step()
        net.constrain_()
        with torch.no_grad():
            total += float(net.cost(s[-1], yb).sum())  # cost before the update
        n += len(idx)
    return total / max(n, 1)


def fit(net: EnergyTransformer, x: torch.Tensor, y: torch.Tensor, ts: TrainSettings, *, seed: int = 0,
        on_epoch: Callable[[int, float], None] | None = None) -> list[float]:
    """Train ``ts.epochs`` epochs with Adam (``ts.lr``); returns the training cost per epoch and calls
    ``on_epoch(epoch, cost)`` after each (e.g. to evaluate)."""
    opt = torch.optim.Adam(net.parameters(), lr=ts.lr)
    gen = torch.Generator().manual_seed(seed)
    costs = []
    for ep in range(ts.epochs):
        costs.append(train_epoch(net, opt, x, y, ts, gen))
        if on_epoch is not None:
            on_epoch(ep + 1, costs[-1])
    return costs


def evaluate(net: EnergyTransformer, x: torch.Tensor, y: torch.Tensor, *, n_steps: int, batch: int = 1000,
             tol: float = 0.0) -> dict[str, float]:
    """Accuracy, mean cost and mean per-sample steps to ``tol`` (when ``tol > 0``) of the free phase."""
    correct, cost, steps = 0, 0.0, []
    with torch.no_grad():
        for i in range(0, x.shape[0], batch):
            s, info = net.free_phase(x[i:i + batch], n_steps=n_steps, tol=tol)
            correct += int((s[-1].argmax(dim=1) == y[i:i + batch]).sum())
            cost += float(net.cost(s[-1], y[i:i + batch]).sum())
            if tol > 0:
                st = info.steps.clone()
                st[st < 0] = n_steps
                steps.append(st.double())
    out = {"accuracy": correct / x.shape[0], "cost": cost / x.shape[0]}
    if steps:
        out["mean_steps"] = float(torch.cat(steps).mean())
    return out


# ------------------------------------------------------------------------------ hardware paths
def linear_map_names(net: EnergyTransformer) -> list[str]:
    """Every weight matrix of the model (biases and the positional table stay float)."""
    return [k for k, p in net.named_parameters() if p.ndim == 2 and k != "pos"]


def fake_quant_copy(net: EnergyTransformer, spec) -> EnergyTransformer:
    """A copy of ``net`` whose weight matrices are fake-quantised (:func:`quant.fake_quant_weights`,
    the spec's weight format, e.g. per-channel INT8 / INT4 of :func:`quant.presets.get_preset`).
    States, biases, the positional table and the attention softmax stay float."""
    import copy

    from quant.presets import get_preset
    from quant.quantizers import fake_quant_weights

    spec = get_preset(spec) if isinstance(spec, str) else spec
    out = copy.deepcopy(net)
    with torch.no_grad():
        for k in linear_map_names(out):
            p = out.get_parameter(k)
            p.copy_(fake_quant_weights(p.detach(), spec.weights))
    return out


@torch.no_grad()
def analog_free_phase(net: EnergyTransformer, x: torch.Tensor, analog, *, n_steps: int, seed: int = 0,
                      damping: float | None = None) -> list[torch.Tensor]:
    """Free phase with the weight projections on noisy crossbars (weights only; the attention scores
    and softmax are computed noise-free in the digital periphery): programming noise
    ``N(0, (prog_noise_std * max|W|)^2)`` drawn once per matrix (``max|W|`` mapped to ``g_max``), read
    noise ``N(0, (read_noise_std * max|W|)^2)`` drawn afresh for every sweep. DAC/ADC quantisation,
    drift and stuck devices of ``analog`` (:class:`quant.formats.AnalogSpec`) are not modelled here."""
    import copy

    gen = torch.Generator().manual_seed(seed)
    noisy = copy.deepcopy(net)
    dmp = net.config.damping if damping is None else damping
    names = linear_map_names(noisy)
    with torch.no_grad():
        prog = {}
        for k in names:
            w = noisy.get_parameter(k)
            scale = float(w.abs().max())
            prog[k] = (w + analog.prog_noise_std * scale * torch.randn(w.shape, generator=gen, dtype=w.dtype), scale)
        sweep = None
        s = noisy.zero_state(x.shape[0], x)
        for _ in range(n_steps):
            for k in names:  # kernels hold the parameter tensors: fresh read noise in place
                w0, scale = prog[k]
                noisy.get_parameter(k).copy_(w0 + analog.read_noise_std * scale
                                             * torch.randn(w0.shape, generator=gen, dtype=w0.dtype))
            drive = noisy.drive(x)
            sweep = noisy.sweeper(drive)
            new = sweep(s)
            s = [(1 - dmp) * a + dmp * b for a, b in zip(new, s)] if dmp else new
    return s

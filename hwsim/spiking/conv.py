"""Rate-coded spiking port of a :class:`models.conv.ConvEqProp` (snntorch and Brian2), feedback kept.

The discrete-time network (the definition both ports follow; conv layers ``i = 0 .. L-2`` with
kernels ``W_i``, pooled feature maps as neurons, then the dense output ``L-1``; all weights and
biases already multiplied by ``theta``; spikes ``z_i(t)``, membranes ``m_i(t)``, ``t = 0 .. T-1``,
``z(-1) = m(-1) = 0``; ``u_{-1} = x`` (constant current), ``u_i(t) = z_i(t-1)`` otherwise)::

    Y_i(t)   = conv(u_{i-1}(t), W_i)                       every pre-pool position, no bias
    A_i(t)   = A_i(t-1) + Y_i(t)                            running input charge of each position
    sel_i(t) = first argmax of each pooling window of A_i(t)   (row-major; layer 0: of Y_0, constant)
    I_i(t)   = Y_i(t)[sel_i(t)] + b_i                       the pooled unit takes its selected position
             + convT(U(z_{i+1}(t-1); sel_{i+1}(t)), W_{i+1})  conv feedback, routed like the float model
             (+ W_out^T z_out(t-1) for the last conv layer)
    I_out(t) = W_out z_{L-2}(t-1) + b_out
    m(t) = beta m(t-1) + I(t) - theta z(t-1) ;  z(t) = H(m(t) - theta)

Why: the float model pools ``P(conv(s))`` and routes the feedback to each window's maximum of
``conv(s_pre)``; spikes carry the rates only on average, so the pooling selection is taken from
the accumulated charge ``A`` (the running rate estimate: the max-pooling gate of Rueckauer et al.
2017 on the conv currents) and the same selection routes the feedback spikes, as ``U`` does in
the float model. Over ``T`` steps the charge a pooled neuron receives is ``T * P(conv(r))`` once
the selection settles, so ``count / T ~= clamp(float state)`` as for the MLP port
(:mod:`hwsim.spiking.snntorch_port`). Input: constant current only (``SpikingConfig.input="current"``);
feedback ``"spike"`` or ``"none"``.

Brian2 (:func:`run_brian2_conv`): one ``NeuronGroup`` per layer, an accumulator group per conv
layer (``a += w`` synapses from the pre layer: ``A``), a ``network_operation`` that writes the
window argmax of ``a`` into the pooled neurons' ``sel``, and gated synapses ``v_post += w *
int(sel_post == pos)`` (forward) / ``v_post += w * int(sel_pre == pos)`` (feedback), the layer-0
current ``I_in_post = w * x_pre * int(sel_post == pos)`` (summed). Slots as the MLP port
(:data:`hwsim.spiking.brian2_port.BRIAN2_SCHEDULE`), orders accumulator -> selection -> delivery.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .config import SpikeRecord, SpikingConfig, check_input

__all__ = ["ConvSpikingParams", "run_snntorch_conv", "run_brian2_conv", "conv_synops_per_sample"]

BACKEND = "spiking conv ports (snntorch, Brian2)"


@dataclass(frozen=True)
class ConvLayer:
    """One conv layer: ``weight`` ``(C_out, C_in, k, k)`` and ``bias`` ``(C_out,)`` (times ``theta``)."""

    weight: np.ndarray
    bias: np.ndarray
    in_shape: tuple
    padding: int
    pool: int

    @property
    def conv_shape(self) -> tuple[int, int]:
        _, h, w = self.in_shape
        k = self.weight.shape[-1]
        return h + 2 * self.padding - k + 1, w + 2 * self.padding - k + 1

    @property
    def out_shape(self) -> tuple[int, int, int]:
        hc, wc = self.conv_shape
        return self.weight.shape[0], hc // self.pool, wc // self.pool

    @property
    def n_out(self) -> int:
        return math.prod(self.out_shape)


@dataclass(frozen=True)
class ConvSpikingParams:
    """Threshold-scaled parameters of the spiking conv net: ``convs`` then the dense output."""

    convs: tuple
    out_weight: np.ndarray
    out_bias: np.ndarray
    config: SpikingConfig

    def __post_init__(self) -> None:
        if not isinstance(self.config, SpikingConfig):
            raise ValueError(f"config must be a SpikingConfig, got {type(self.config).__name__}")
        if self.config.input != "current" or self.config.feedback == "rate":
            raise ValueError(f"{BACKEND}: input={self.config.input!r}, feedback={self.config.feedback!r}; allowed: "
                             "input='current' and feedback 'spike' or 'none'")
        if not self.convs:
            raise ValueError("ConvSpikingParams needs >= 1 conv layer")
        for i, c in enumerate(self.convs[1:], 1):
            if tuple(c.in_shape) != tuple(self.convs[i - 1].out_shape):
                raise ValueError(f"conv layer {i} reads {c.in_shape}, layer {i - 1} gives {self.convs[i - 1].out_shape}")
        if self.out_weight.shape != (self.out_bias.shape[0], self.convs[-1].n_out):
            raise ValueError(f"output weight {self.out_weight.shape} does not read {self.convs[-1].n_out} units")

    @property
    def sizes(self) -> tuple[int, ...]:
        """``(n_in, n_0, ..., n_out)`` (neurons per layer)."""
        return (math.prod(self.convs[0].in_shape),) + tuple(c.n_out for c in self.convs) + (self.out_bias.shape[0],)

    @classmethod
    def from_model(cls, net, config: SpikingConfig) -> "ConvSpikingParams":
        """Convert a :class:`models.conv.ConvEqProp` (weights and biases times ``v_threshold``)."""
        from models.conv import ConvEqProp
        from models.engine import UnsupportedError

        if not isinstance(net, ConvEqProp):
            raise UnsupportedError(f"backend {BACKEND!r} converts a ConvEqProp; got {type(net).__name__}")
        g = config.v_threshold
        cfg = net.config
        convs, shape = [], tuple(cfg.in_shape)
        for conv in net.convs:
            layer = ConvLayer(conv.weight.detach().cpu().double().numpy() * g, conv.bias.detach().cpu().double().numpy() * g,
                              shape, int(cfg.padding), int(cfg.pool))
            convs.append(layer)
            shape = layer.out_shape
        return cls(tuple(convs), net.fc.weight.detach().cpu().double().numpy() * g,
                   net.fc.bias.detach().cpu().double().numpy() * g, config)


def _windows(y: torch.Tensor, q: int) -> torch.Tensor:
    """``(B, C, Hc, Wc)`` -> ``(B, C, Hp, Wp, q*q)`` (cropped, row-major window positions)."""
    b, c, h, w = y.shape
    hp, wp = h // q, w // q
    y = y[:, :, : hp * q, : wp * q].reshape(b, c, hp, q, wp, q)
    return y.permute(0, 1, 2, 4, 3, 5).reshape(b, c, hp, wp, q * q)


def first_argmax_windows(a: torch.Tensor, q: int) -> torch.Tensor:
    """Window position (``dy*q + dx``) of the first maximum of each pooling window, ``(B, C, Hp, Wp)``."""
    v = _windows(a, q)
    top = v == v.max(dim=-1, keepdim=True).values
    return top.to(torch.int64).argmax(dim=-1)   # argmax of a 0/1 tensor: the first 1 (torch returns the first)


def _unpool(z: torch.Tensor, sel: torch.Tensor, q: int, conv_shape) -> torch.Tensor:
    """Pooled values ``z`` ``(B, C, Hp, Wp)`` placed at their selected positions, ``(B, C, Hc, Wc)``."""
    b, c, hp, wp = z.shape
    u = torch.zeros(b, c, hp, wp, q * q, dtype=z.dtype)
    u.scatter_(-1, sel.unsqueeze(-1), z.unsqueeze(-1))
    u = u.reshape(b, c, hp, wp, q, q).permute(0, 1, 2, 4, 3, 5).reshape(b, c, hp * q, wp * q)
    hc, wc = conv_shape
    return F.pad(u, (0, wc - wp * q, 0, hc - hp * q))


class SnnTorchConvEqProp(torch.nn.Module):
    """The spiking conv net as snntorch ``Leaky`` neurons (reset by subtraction) with conv synapses;
    the time loop, the pooling gate and the routed feedback are this module's (float64)."""

    def __init__(self, params: ConvSpikingParams):
        import snntorch as snn

        from .snntorch_port import _forget_instance

        super().__init__()
        self.params, cfg = params, params.config
        self.neurons = torch.nn.ModuleList()
        for _ in range(len(params.convs) + 1):
            n = snn.Leaky(beta=cfg.beta, threshold=cfg.v_threshold, reset_mechanism="subtract",
                          init_hidden=False).to(torch.float64)
            n.beta.fill_(cfg.beta)
            n.threshold.fill_(cfg.v_threshold)
            _forget_instance(n)
            self.neurons.append(n)
        self.W = [torch.from_numpy(c.weight) for c in params.convs]
        self.b = [torch.from_numpy(c.bias) for c in params.convs]
        self.Wo, self.bo = torch.from_numpy(params.out_weight), torch.from_numpy(params.out_bias)
        self.requires_grad_(False)

    @torch.no_grad()
    def forward(self, x) -> SpikeRecord:
        p, cfg = self.params, self.params.config
        xn = check_input(x, p.sizes[0])
        B, L = xn.shape[0], len(p.convs)
        z = [torch.zeros(B, n, dtype=torch.float64) for n in p.sizes[1:]]
        mem = [t.clone() for t in z]
        counts = [t.clone() for t in z]
        acc = [None] * L
        y0 = F.conv2d(torch.from_numpy(xn).reshape(B, *p.convs[0].in_shape), self.W[0], padding=p.convs[0].padding)
        sel0 = first_argmax_windows(y0, p.convs[0].pool)
        for t in range(cfg.n_steps):
            ys, sels = [], []
            for i, c in enumerate(p.convs):
                if i == 0:
                    y, sel = y0, sel0
                else:
                    y = F.conv2d(z[i - 1].reshape(B, *c.in_shape), self.W[i], padding=c.padding)
                    acc[i] = y.clone() if acc[i] is None else acc[i] + y
                    sel = first_argmax_windows(acc[i], c.pool)
                ys.append(y)
                sels.append(sel)
            cur = []
            for i, c in enumerate(p.convs):
                fwd = _windows(ys[i], c.pool).gather(-1, sels[i].unsqueeze(-1)).squeeze(-1) + self.b[i][:, None, None]
                a = fwd.flatten(1)
                if cfg.feedback != "none":
                    if i + 1 < L:
                        nc = p.convs[i + 1]
                        u = _unpool(z[i + 1].reshape(B, *nc.out_shape), sels[i + 1], nc.pool, nc.conv_shape)
                        a = a + F.conv_transpose2d(u, self.W[i + 1], padding=nc.padding).flatten(1)
                    else:
                        a = a + z[L] @ self.Wo
                cur.append(a)
            cur.append(z[L - 1] @ self.Wo.T + self.bo)
            for i in range(L + 1):
                spk, mem[i] = self.neurons[i](cur[i], mem[i])
                z[i] = spk.to(torch.float64)
                counts[i] += z[i]
        return SpikeRecord(counts=[c.round().to(torch.int64).numpy() for c in counts],
                           v_final=[m.numpy().copy() for m in mem], input_spikes=np.zeros(B, dtype=np.int64),
                           n_steps=cfg.n_steps)


def run_snntorch_conv(params: ConvSpikingParams, x, *, batch_size: int = 500) -> SpikeRecord:
    """Run the snntorch conv port on ``x`` (B, n_in) in [0, 1], in batches."""
    from .snntorch_port import concat_records

    if not isinstance(params, ConvSpikingParams):
        raise ValueError(f"params must be ConvSpikingParams, got {type(params).__name__}")
    xn = check_input(x, params.sizes[0])
    model = SnnTorchConvEqProp(params)
    return concat_records([model(xn[s:s + batch_size]) for s in range(0, xn.shape[0], batch_size)])


# ----------------------------------------------------------------------------------------- Brian2
def _conv_pairs(c: ConvLayer):
    """Every (pre unit, conv position, kernel weight, pooled unit, window position) of a conv layer
    inside the pooled region: flat C-order indices, ``W[co, ci, dy, dx]``."""
    C, H, W = c.in_shape
    Co, k = c.weight.shape[0], c.weight.shape[-1]
    hc, wc = c.conv_shape
    _, hp, wp = c.out_shape
    q, pd = c.pool, c.padding
    co, oy, ox, ci, dy, dx = np.meshgrid(np.arange(Co), np.arange(hp * q), np.arange(wp * q), np.arange(C),
                                         np.arange(k), np.arange(k), indexing="ij")
    y, x = oy + dy - pd, ox + dx - pd
    ok = (y >= 0) & (y < H) & (x >= 0) & (x < W)
    co, oy, ox, ci, dy, dx, y, x = (a[ok] for a in (co, oy, ox, ci, dy, dx, y, x))
    pre = ci * H * W + y * W + x
    pos_flat = co * hc * wc + oy * wc + ox
    pooled = co * hp * wp + (oy // q) * wp + (ox // q)
    win = (oy % q) * q + (ox % q)
    return pre, pos_flat, c.weight[co, ci, dy, dx], pooled, win


def build_brian2_conv_network(params: ConvSpikingParams, x: np.ndarray):
    """One Brian2 ``Network`` for one image ``x`` (n_in,): ``(net, monitors, vmon)``."""
    import brian2 as b2

    from .brian2_port import BRIAN2_SCHEDULE, _connect_dense

    cfg = params.config
    dt = cfg.dt_s * b2.second
    ns = {"v_th": cfg.v_threshold, "dt_step": dt}
    if cfg.tau_mem_s is None:
        eqs = "dv/dt = (b + I_in) / dt_step : 1\nb : 1\nI_in : 1\nsel : integer"
    else:
        ns["tau_mem"] = cfg.tau_mem_s * b2.second
        eqs = "dv/dt = -v / tau_mem + (b + I_in) / dt_step : 1\nb : 1\nI_in : 1\nsel : integer"
    L = len(params.convs)
    groups = []
    for i, n in enumerate(params.sizes[1:]):
        g = b2.NeuronGroup(n, eqs, threshold="v > v_th", reset="v -= v_th", method="euler", dt=dt, namespace=ns,
                           name=f"layer{i}")
        g.b[:] = np.repeat(params.convs[i].bias, n // len(params.convs[i].bias)) if i < L else params.out_bias
        groups.append(g)
    objs: list = list(groups)
    # layer 0: constant current through the gate (selection of the constant conv input, set once)
    c0 = params.convs[0]
    xt = torch.from_numpy(np.asarray(x, np.float64)[None])
    y0 = F.conv2d(xt.reshape(1, *c0.in_shape), torch.from_numpy(c0.weight), padding=c0.padding)
    groups[0].sel[:] = first_argmax_windows(y0, c0.pool).reshape(-1).numpy()
    inp = b2.NeuronGroup(params.sizes[0], "x : 1", dt=dt, name="input")
    inp.x[:] = x
    pre, _, w, pooled, win = _conv_pairs(c0)
    s_in = b2.Synapses(inp, groups[0], model="w : 1\npos : integer (constant)\n"
                       "I_in_post = w * x_pre * int(sel_post == pos) : 1 (summed)", dt=dt, name="syn_in")
    s_in.connect(i=pre, j=pooled)
    s_in.w[:], s_in.pos[:] = w, win
    objs += [inp, s_in]
    accs = []
    for i in range(1, L):
        c = params.convs[i]
        pre, pos_flat, w, pooled, win = _conv_pairs(c)
        hc, wc = c.conv_shape
        acc = b2.NeuronGroup(c.weight.shape[0] * hc * wc, "a : 1", dt=dt, name=f"acc{i}")
        s_a = b2.Synapses(groups[i - 1], acc, model="w : 1", on_pre="a_post += w", dt=dt, name=f"acc_syn{i}")
        s_a.connect(i=pre, j=pos_flat)
        s_a.w[:] = w
        s_f = b2.Synapses(groups[i - 1], groups[i], model="w : 1\npos : integer (constant)",
                          on_pre="v_post += w * int(sel_post == pos)", dt=dt, name=f"ff{i}")
        s_f.connect(i=pre, j=pooled)
        s_f.w[:], s_f.pos[:] = w, win
        s_a.pre.order, s_f.pre.order = -1, 1   # pathways: accumulate, then select (order 0), then deliver
        objs += [acc, s_a, s_f]
        accs.append((i, acc, c))
        if cfg.feedback != "none":
            s_b = b2.Synapses(groups[i], groups[i - 1], model="w : 1\npos : integer (constant)",
                              on_pre="v_post += w * int(sel_pre == pos)", dt=dt, name=f"fb{i - 1}")
            s_b.connect(i=pooled, j=pre)
            s_b.w[:], s_b.pos[:] = w, win
            s_b.pre.order = 1
            objs.append(s_b)

    if accs:
        @b2.network_operation(dt=dt, when="synapses", order=0)
        def select():  # sel = first argmax of the accumulated charge in each window
            for i, acc, c in accs:
                hc, wc = c.conv_shape
                a = torch.from_numpy(np.asarray(acc.a_[:], dtype=np.float64).reshape(1, c.weight.shape[0], hc, wc))
                groups[i].sel_[:] = first_argmax_windows(a, c.pool).reshape(-1).numpy()

        objs.append(select)
    objs.append(_connect_dense(b2, groups[L - 1], groups[L], params.out_weight, "w : 1", "v_post += w", "out"))
    if cfg.feedback != "none":
        objs.append(_connect_dense(b2, groups[L], groups[L - 1], np.ascontiguousarray(params.out_weight.T), "w : 1",
                                   "v_post += w", "fb_out"))
    monitors = [b2.SpikeMonitor(g, record=True, name=f"spikes{i}") for i, g in enumerate(groups)]
    vmon = [b2.StateMonitor(g, "v", record=True, when="end", name=f"v{i}") for i, g in enumerate(groups)]
    net = b2.Network(*objs, *monitors, *vmon)
    net.schedule = list(BRIAN2_SCHEDULE)
    return net, monitors, vmon


def run_brian2_conv(params: ConvSpikingParams, x) -> SpikeRecord:
    """Simulate each image of ``x`` (B, n_in) in its own Brian2 network (numpy code generation);
    counts of steps ``1 .. T`` (a snntorch spike at ``t`` is a Brian2 spike at ``t + 1``, as the MLP port)."""
    import brian2 as b2

    if not isinstance(params, ConvSpikingParams):
        raise ValueError(f"params must be ConvSpikingParams, got {type(params).__name__}")
    xn = check_input(x, params.sizes[0])
    b2.prefs.codegen.target = "numpy"
    T, cfg = params.config.n_steps, params.config
    counts = [np.zeros((xn.shape[0], n), dtype=np.int64) for n in params.sizes[1:]]
    v_final = [np.zeros((xn.shape[0], n), dtype=np.float64) for n in params.sizes[1:]]
    for s in range(xn.shape[0]):
        net, monitors, vmon = build_brian2_conv_network(params, xn[s])
        net.run((T + 1) * cfg.dt_s * b2.second, namespace={})
        for i, (m, vm) in enumerate(zip(monitors, vmon)):
            steps = np.round(np.asarray(m.t / (cfg.dt_s * b2.second))).astype(np.int64)
            keep = (steps >= 1) & (steps <= T)
            counts[i][s] = np.bincount(np.asarray(m.i)[keep], minlength=counts[i].shape[1])
            v_final[i][s] = np.asarray(vm.v)[:, T - 1]
    return SpikeRecord(counts=counts, v_final=v_final, input_spikes=np.zeros(xn.shape[0], dtype=np.int64), n_steps=T)


def conv_synops_per_sample(rec: SpikeRecord, params: ConvSpikingParams) -> np.ndarray:
    """Synaptic operations per image: each spike of a conv layer's neuron drives its forward conv
    synapses into the next layer's accumulator (``C_out k^2`` adds per pre unit, on average; the gated
    delivery reuses them) and, when routed, its feedback synapses (``C_in k^2``); dense layers as the
    MLP (:func:`hwsim.spiking.synops.synops_per_sample`)."""
    L = len(params.convs)
    fan = []
    for i in range(L + 1):
        f = 0
        if i + 1 < L:
            nc = params.convs[i + 1]
            f += nc.weight.shape[0] * nc.weight.shape[-1] ** 2
        elif i + 1 == L:
            f += params.out_weight.shape[0]
        if 0 < i < L:
            c = params.convs[i]
            f += c.weight.shape[1] * c.weight.shape[-1] ** 2
        elif i == L:
            f += params.out_weight.shape[1]
        fan.append(f)
    return sum(np.asarray(c, np.int64).sum(axis=1) * f for c, f in zip(rec.counts, fan))

"""Measured datapath events of the integer simulator: an instrumented run of the torch mirror.

:func:`probe` wraps the building blocks of :mod:`hwsim.torch_mirror` (``overflow_t``,
``requant_rows``, ``conv_int_t``, ``pool_first_max_t``, ``conv_feedback_t``, the nudge's
``ops.requantize``) and watches the rest of its torch calls (``@`` / ``matmul`` / ``bmm`` products and
the state ``clamp``) with a :class:`torch.overrides.TorchFunctionMode`, while the real
:func:`~hwsim.torch_mirror.torch_relax` (and :func:`hwsim.onchip.update_torch`) run. It counts, per
value, the events of :data:`hwsim.opcount.EVENTS`:

* ``macs``: dense products ``a @ b`` (``m k n``), ``bmm``, a conv at every pre-pool position
  (``B Hc Wc C_out C_in k k``, from the shapes of the call), a transposed conv of the routed map over
  the un-pooled map (``B C_out Hc Wc C_in k k``; the mirror computes it as a larger full convolution,
  which is an implementation detail, not the datapath);
* ``acc``: values through ``overflow_t``; ``requant``: values through ``requant_rows`` or the
  nudge's ``ops.requantize``; ``pool``: pooled outputs of ``pool_first_max_t``; ``clamp``: values
  of the state clamp.

**Reuse** (what a chip holds instead of recomputing): a call on the very same operand tensors as an
earlier call of the same phase returns the earlier result and counts nothing -- the mirror
requantises the per-phase drive every sweep and recomputes the routing conv of a pre state that the
post node's forward already convolved; the hardware keeps both. :meth:`Probe.new_phase` starts a
phase (the mirror's relaxation is one phase). Deterministic rounding only (with stochastic rounding
the requantisation of the drive is redrawn every sweep).

These counts come from the simulator's execution, not from :mod:`hwsim.opcount`'s formulas: Track
40 compares the two (``int_event_count_match``, ``conv_int_event_count_match``).
"""
from __future__ import annotations

import contextlib
from collections import Counter

import torch
from torch.overrides import TorchFunctionMode

from hwsim import torch_mirror as tm

EVENTS = ("macs", "acc", "requant", "pool", "clamp")


class _OpsProxy:
    """``quant.ops`` with ``requantize`` counted (the nudge term of the mirror)."""

    def __init__(self, ops, probe: "Probe"):
        self._ops, self._probe = ops, probe

    def requantize(self, acc, *a, **kw):
        with self._probe._inside():
            out = self._ops.requantize(acc, *a, **kw)
        self._probe.counts["requant"] += int(acc.numel())
        return out

    def __getattr__(self, name):
        return getattr(self._ops, name)


class _Watch(TorchFunctionMode):
    """Counts products and state clamps issued by the mirror outside the wrapped building blocks."""

    def __init__(self, probe: "Probe"):
        super().__init__()
        self.probe = probe

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        p = self.probe
        if not p._depth:
            if func in (torch.Tensor.__matmul__, torch.matmul, torch.mm, torch.Tensor.matmul):
                a, b = args[0], args[1]
                p.counts["macs"] += int(a.shape[0] * a.shape[1] * b.shape[-1])
            elif func is torch.bmm:
                a, b = args[0], args[1]
                p.counts["macs"] += int(a.shape[0] * a.shape[1] * a.shape[2] * b.shape[2])
            elif func in (torch.Tensor.clamp, torch.clamp):
                p.counts["clamp"] += int(args[0].numel())
        return func(*args, **kwargs)


class Probe:
    """Event counts of the mirror's calls inside :func:`probe` (``counts``: a Counter of :data:`EVENTS`)."""

    def __init__(self):
        self.counts: Counter = Counter()
        self._depth = 0
        self._memo: list[tuple[str, tuple, object]] = []

    def new_phase(self) -> None:
        """Forget held results: the next phase recomputes everything once."""
        self._memo.clear()

    def snapshot(self) -> dict[str, int]:
        return {e: int(self.counts.get(e, 0)) for e in EVENTS}

    @contextlib.contextmanager
    def _inside(self):
        self._depth += 1
        try:
            yield
        finally:
            self._depth -= 1

    def _reuse(self, kind: str, operands: tuple):
        for k, ops_, out in self._memo:
            if k == kind and len(ops_) == len(operands) and all(a is b for a, b in zip(ops_, operands)):
                return True, out
        return False, None

    def _wrap(self, kind: str, fn, count, key=None):
        def wrapped(*args, **kwargs):
            if self._depth:   # called from another wrapped block: its parent counts
                return fn(*args, **kwargs)
            operands = key(*args) if key else None
            if operands is not None:
                hit, out = self._reuse(kind, operands)
                if hit:
                    return out
            with self._inside():
                out = fn(*args, **kwargs)
            count(self.counts, args, out)
            if operands is not None:
                self._memo.append((kind, operands, out))
            return out
        return wrapped


def _conv_macs(c, args, out):
    src, wq, geo = args[:3]
    B, co, hc, wc = out.shape
    c["macs"] += int(B * hc * wc * co * wq[0].numel())


def _feedback_macs(c, args, out):
    post, route, fq, geo = args[:4]
    hc, wc = geo.conv_shape
    c["macs"] += int(post.shape[0] * geo.c_out * hc * wc * fq.shape[0] * fq.shape[2] * fq.shape[3])


@contextlib.contextmanager
def probe():
    """Instrument :mod:`hwsim.torch_mirror` (and through it ``hwsim.onchip.update_torch``'s conv
    routes) for the duration of the block; yields the :class:`Probe`. Not thread safe."""
    p = Probe()
    patched = {
        "overflow_t": p._wrap("ovf", tm.overflow_t, lambda c, a, o: c.__setitem__("acc", c["acc"] + int(a[0].numel()))),
        "requant_rows": p._wrap("rq", tm.requant_rows,
                                lambda c, a, o: c.__setitem__("requant", c["requant"] + int(a[0].numel())),
                                key=lambda acc, mult, shift, rounding, u24: None if u24 is not None else (acc, mult, shift)),
        "conv_int_t": p._wrap("conv", tm.conv_int_t, _conv_macs, key=lambda src, wq, geo: (src, wq)),
        "pool_first_max_t": p._wrap("pool", tm.pool_first_max_t,
                                    lambda c, a, o: c.__setitem__("pool", c["pool"] + int(o[0].numel())),
                                    key=lambda y, q: (y,)),
        "conv_feedback_t": p._wrap("fb", tm.conv_feedback_t, _feedback_macs),
        "ops": _OpsProxy(tm.ops, p),
    }
    saved = {k: getattr(tm, k) for k in patched}
    for k, v in patched.items():
        setattr(tm, k, v)
    try:
        with _Watch(p):
            yield p
    finally:
        for k, v in saved.items():
            setattr(tm, k, v)


def relax_events(fp, x_codes, *, n_steps: int, s0=None, beta: float = 0.0, y=None, step_offset: int = 0):
    """Events of one phase of ``torch_relax`` (all ``n_steps`` sweeps, no early exit): ``(states, counts)``."""
    if fp.spec.rounding == "stochastic":
        raise ValueError("op_probe counts deterministic rounding only; allowed: spec.rounding 'nearest_even' or 'floor'")
    with probe() as p:
        s, _ = tm.torch_relax(fp, x_codes, s0, beta=beta, y=y, n_steps=n_steps, step_offset=step_offset,
                              early_exit=False)
    return s, p.snapshot()

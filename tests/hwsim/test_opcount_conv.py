"""hwsim.opcount on the conv EqProp model (models.conv.ConvPool): analytic MACs == torch's FLOP counter / 2
(fp32); integer counts == the events of the instrumented integer simulator (hwsim.op_probe)."""
import numpy as np
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from hwsim import op_probe
from hwsim import opcount as oc
from hwsim.fixed_point import FixedPointMLP
from hwsim.onchip import update_torch
from models.gradients import bptt_grads
from models.conv import ConvConfig, ConvEqProp
from models.engine import UnsupportedError
from quant import get_preset


def _flops(fn) -> int:
    with FlopCounterMode(display=False) as fc:
        fn()
    return fc.get_total_flops()


def _net(update="async", padding=1):
    hw = 9 if padding else 12   # pad 1: ragged conv edge dropped by the pool; pad 0: 12 -> 10 -> 5 -> 3 -> 1
    return ConvEqProp(ConvConfig(in_shape=(2, hw, hw), channels=(3, 4), kernel=3, padding=padding, n_out=3,
                                 update=update), seed=0)


@pytest.mark.parametrize("update,padding", [("async", 1), ("sync", 1), ("async", 0)])
def test_conv_macs_match_flop_counter(update, padding):
    """Free phase, EqProp step (symmetric, one-sided) and update: analytic == FLOPs / 2 around the real
    ConvEqProp.free_phase / eqprop_grads (routing convolutions included: the float kernel recomputes
    conv(s_pre) for the window maxima of the feedback and of each dphi)."""
    net = _net(update, padding)
    B, T1, T2 = 5, 4, 3
    x, y = torch.rand(B, net.n_in), torch.randint(0, 3, (B,))
    fp = get_preset("fp32")
    assert 2 * oc.count_inference(net, fp, n_steps=T1, batch_size=B).macs == _flops(lambda: net.free_phase(x, n_steps=T1))
    for mode in ("symmetric", "one_sided"):
        r = oc.count_training_step(net, fp, n_free_steps=T1, n_nudge_steps=T2, nudging=mode, batch_size=B)
        assert 2 * r.macs == _flops(lambda: net.eqprop_grads(x, y, beta=0.1, mode=mode, n_free_steps=T1,
                                                             n_nudge_steps=T2)), mode
    s, _ = net.free_phase(x, n_steps=T1)
    s2, _ = net.relax(x, s, beta=0.1, y=y, n_steps=T2)
    assert 2 * r.phases["update"].macs == _flops(lambda: net.contrast(x, s, s2, 0.0, 0.1))


def test_conv_closed_forms():
    net = _net()   # conv0 = 3*2*9 taps at 9x9 positions, conv1 = 4*3*9 taps at 4x4, fc 3 x 16
    conv0, conv1, fc = 3 * 18 * 81, 4 * 27 * 16, 3 * 16
    assert oc.drive_macs(net) == conv0
    assert oc.count_inference(net, get_preset("fp32"), n_steps=5).macs == conv0 + 5 * (2 * conv1 + 2 * fc) + conv1
    r = oc.count_training_step(net, get_preset("fp32"), n_free_steps=2, n_nudge_steps=1, batch_size=1)
    assert r.phases["update"].macs == 4 * conv0 + 4 * conv1 + 2 * fc
    mem = oc.weight_memory(net, get_preset("fp32"))
    assert mem["code_bytes"] == 4 * (3 * 18 + 4 * 27 + 3 * 16) and mem["bias_bytes"] == 4 * (3 + 4 + 3)


@pytest.mark.parametrize("update,padding", [("async", 1), ("sync", 1), ("async", 0)])
@pytest.mark.parametrize("preset", ["int8", "ternary"])
def test_conv_integer_counts_equal_the_instrumented_simulator(update, padding, preset):
    """Integer ConvPool counts (free phase, a nudged phase, the on-chip update) == the events of the
    instrumented torch mirror of the integer simulator (hwsim.op_probe), phase by phase."""
    net = _net(update, padding)
    spec = get_preset(preset)
    fp = FixedPointMLP.from_model(net, spec)
    B, T1, T2 = 3, 4, 3
    xc = fp.quantize_input(torch.rand(B, net.n_in, generator=torch.Generator().manual_seed(0)).double().numpy())
    y = np.array([0, 2, 1])
    s, ev = op_probe.relax_events(fp, xc, n_steps=T1)
    assert ev == oc.count_inference(net, spec, n_steps=T1, batch_size=B).total.event_counts()
    s2, ev2 = op_probe.relax_events(fp, xc, s0=s, beta=0.25, y=y, n_steps=T2)
    r = oc.count_training_step(net, spec, n_free_steps=T1, n_nudge_steps=T2, nudging="one_sided", batch_size=B)
    drive = oc.count_inference(net, spec, n_steps=1, batch_size=B).phases["drive"]
    assert ev2 == (r.phases["b2"] + drive).event_counts()
    H = [np.zeros(w.shape, np.int64) for w in fp.w_codes]
    Hb = [np.zeros(g.c_out if g is not None else n, np.int64) for g, n in zip(fp.conv, fp.sizes[1:])]
    with op_probe.probe() as p:
        update_torch(H, Hb, xc, [t.numpy() for t in s], [t.numpy() for t in s2], [spec] * 3, seed=0, step=0,
                     conv=fp.conv)
    got = p.snapshot()
    want = r.phases["update"].event_counts()
    assert (got["macs"], got["pool"]) == (want["macs"], want["pool"])


def test_conv_integer_closed_forms():
    """int8, async, padding 1: node 0 = 3 x 4 x 4 pooled units (conv0 3 x 9 x 9 x 18 taps, the input
    coupling: the drive), node 1 = 4 x 2 x 2 (conv1 4 x 4 x 4 x 27 taps), output 3 (fc 3 x 16)."""
    net, T = _net(), 5
    conv0, conv1, fc = 3 * 18 * 81, 4 * 27 * 16, 3 * 16
    r = oc.count_inference(net, get_preset("int8"), n_steps=T)
    ev = r.total.event_counts()
    # routing conv of node 0's state for node 0's feedback: node 0 is updated before node 1, so once per phase
    assert ev["macs"] == conv0 + T * (2 * conv1 + 2 * fc) + conv1 == oc.count_inference(
        net, get_preset("fp32"), n_steps=T).macs
    assert ev["acc"] == ev["requant"] == 48 + T * (48 + 16 + 16 + 3)   # drive once; node 0 fb, node 1 fwd + fb, output
    assert ev["pool"] == 48 + 16 + T * 16 and ev["clamp"] == T * (48 + 16 + 3)
    ops = r.total.by_label()
    assert ops["mult_int8x8"] == ev["macs"]
    # pooling compares (3 per window) + saturation (2 per accumulator) + clamps (2 per state) at 32 bits
    assert ops["cmp_int32"] == 3 * ev["pool"] + 2 * ev["acc"] + 2 * ev["clamp"]
    mem = oc.weight_memory(net, get_preset("int8"))
    assert mem["code_bytes"] == 3 * 18 + 4 * 27 + 3 * 16 and mem["bias_bytes"] == 4 * (3 + 4 + 3)
    assert mem["feedback_bytes"] == 4 * 27 + 4 * 3 + 3 * 16 + 4 * 16   # Fq codes + C_in scales, fc^T + its scales
    step = oc.count_training_step(net, get_preset("int8"), n_free_steps=2, n_nudge_steps=1)
    assert step.phases["update"].macs == 4 * conv0 + 4 * conv1 + 2 * fc


@pytest.mark.parametrize("update,padding", [("async", 1), ("sync", 1), ("async", 0)])
def test_conv_bptt_macs_match_flop_counter(update, padding):
    """BPTT through T sweeps (models.gradients.bptt_grads): analytic forward + backward == FLOPs / 2."""
    net = _net(update, padding)
    B = 4
    x, y = torch.rand(B, net.n_in), torch.randint(0, 3, (B,))
    for T in (1, 3):
        r = oc.bptt_macs(net, n_steps=T, batch_size=B, update=update)
        assert 2 * r["total"] == _flops(lambda: bptt_grads(net, x, y, n_steps=T)), T
    # T = 1 from the zero state, forward: the drive conv0; node 0: transposed conv1 + its routing conv1 (node 0
    # is updated before node 1, so recomputed); output: fc; node 1: conv1 + fc^T
    if (update, padding) == ("async", 1):
        conv0, conv1, fc = 3 * 18 * 81, 4 * 27 * 16, 3 * 16
        r1 = oc.bptt_macs(net, n_steps=1, batch_size=1, update="async")
        assert r1["forward"] == conv0 + (conv1 + conv1) + (conv1 + fc) + fc

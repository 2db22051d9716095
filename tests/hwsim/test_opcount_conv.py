"""hwsim.opcount on the conv EqProp model (models.conv.ConvPool): analytic MACs == torch's FLOP counter / 2."""
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from hwsim import opcount as oc
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


def test_conv_integer_counts_and_bptt_refuse():
    net = _net()
    with pytest.raises(UnsupportedError, match="op counter.*ConvPool"):
        oc.count_inference(net, get_preset("int8"), n_steps=2)
    with pytest.raises(UnsupportedError, match="bptt op counter.*ConvPool"):
        oc.bptt_macs(net, n_steps=2)

"""Analytic operation counts (hwsim.opcount) against torch's FLOP counter, hand counts, energy table."""
import math

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from hwsim import opcount as oc
from hwsim.fixed_point import FixedPointMLP
from hwsim.onchip import update_torch
from hwsim.torch_mirror import torch_relax
from models.eqprop_mlp import EqPropConfig, EqPropMLP
from models.gradients import bptt_grads
from quant import energy, get_preset, quantize_weights

SIZES = [(9, 4), (20, 7, 3), (20, 7, 5, 3)]  # 0, 1 and 2 hidden layers


def _flops(fn) -> int:
    with FlopCounterMode(display=False) as fc:
        fn()
    return fc.get_total_flops()


@pytest.mark.parametrize("update", ["async", "sync"])
@pytest.mark.parametrize("sizes", SIZES)
def test_macs_match_flop_counter(sizes, update):
    """Analytic dense MACs == FlopCounterMode FLOPs / 2 for free phase, EqProp step, BPTT."""
    net = EqPropMLP(EqPropConfig(sizes=sizes, update=update), seed=0)
    B, T1, T2 = 5, 4, 3
    x = torch.rand(B, sizes[0])
    y = torch.randint(0, sizes[-1], (B,))
    fp = get_preset("fp32")
    assert 2 * oc.count_inference(net, fp, n_steps=T1, batch_size=B).macs == \
        _flops(lambda: net.free_phase(x, n_steps=T1))
    for mode in ("symmetric", "one_sided"):
        ana = oc.count_training_step(net, fp, n_free_steps=T1, n_nudge_steps=T2, nudging=mode, batch_size=B)
        run = _flops(lambda: net.eqprop_grads(x, y, beta=0.1, mode=mode, n_free_steps=T1, n_nudge_steps=T2))
        assert 2 * ana.macs == run, mode
    assert 2 * oc.bptt_macs(net, n_steps=T1, batch_size=B, update=update)["total"] == \
        _flops(lambda: bptt_grads(net, x, y, n_steps=T1))


@pytest.mark.parametrize("update", ["async", "sync"])
@pytest.mark.parametrize("sizes", SIZES)
def test_skip_model_macs_match_flop_counter(sizes, update):
    """The op counter reads the terms: the skip coupling ``S x`` is one more static product per
    phase and one more contrast product; analytic MACs == FLOPs / 2 as for the MLP."""
    from models.skip_mlp import SkipEqPropMLP

    net = SkipEqPropMLP(EqPropConfig(sizes=sizes, update=update), seed=0)
    mlp = EqPropMLP(EqPropConfig(sizes=sizes, update=update), seed=0)
    B, T1, T2 = 5, 4, 3
    x = torch.rand(B, sizes[0])
    y = torch.randint(0, sizes[-1], (B,))
    fp = get_preset("fp32")
    skip = sizes[0] * sizes[-1]
    assert oc.drive_macs(net) == oc.drive_macs(mlp) + skip and oc.sweep_macs(net) == oc.sweep_macs(mlp)
    inf = oc.count_inference(net, fp, n_steps=T1, batch_size=B)
    assert inf.macs == oc.count_inference(mlp, fp, n_steps=T1, batch_size=B).macs + B * skip
    assert 2 * inf.macs == _flops(lambda: net.free_phase(x, n_steps=T1))
    for mode in ("symmetric", "one_sided"):
        ana = oc.count_training_step(net, fp, n_free_steps=T1, n_nudge_steps=T2, nudging=mode, batch_size=B)
        run = _flops(lambda: net.eqprop_grads(x, y, beta=0.1, mode=mode, n_free_steps=T1, n_nudge_steps=T2))
        assert 2 * ana.macs == run, mode
    assert 2 * oc.bptt_macs(net, n_steps=T1, batch_size=B, update=update)["total"] == \
        _flops(lambda: bptt_grads(net, x, y, n_steps=T1))
    for preset in ("int8", "ternary"):  # integer: one more stored array, its own accumulator and requantiser
        spec = get_preset(preset)
        assert oc.weight_memory(net, spec)["code_bytes"] > oc.weight_memory(mlp, spec)["code_bytes"]
        assert oc.count_inference(net, spec, n_steps=T1).macs == oc.count_inference(mlp, spec, n_steps=T1).macs + skip


def test_unsupported_term_raises_naming_the_counter():
    from dataclasses import dataclass

    from models.engine import UnsupportedError

    @dataclass(frozen=True)
    class Attention:
        node: int

        @property
        def nodes(self):
            return (self.node,)

    net = EqPropMLP(EqPropConfig(sizes=(6, 4, 3)), seed=0)
    net.terms = net.terms + [Attention(node=1)]
    with pytest.raises(UnsupportedError, match=r"'op counter'.*Attention.*Bias, ConvPool, Dense"):
        oc.count_inference(net, get_preset("int8"), n_steps=2)


@pytest.mark.parametrize("preset", ["int8", "int4", "ternary"])
@pytest.mark.parametrize("sizes", SIZES[1:])
def test_integer_macs_match_fixed_point_simulator(sizes, preset):
    """Dense MACs of the integer datapath == FLOPs / 2 of hwsim's torch mirror (int64 matmuls,
    feedback arrays) for a free and a nudged phase, and of hwsim.onchip.update_torch."""
    net = EqPropMLP(EqPropConfig(sizes=sizes), seed=0)
    spec = get_preset(preset)
    fp = FixedPointMLP.from_model(net, spec)
    B, T = 4, 3
    xc = fp.quantize_input(torch.rand(B, sizes[0], dtype=torch.float64).numpy())
    y = torch.randint(0, sizes[-1], (B,)).numpy()
    ana = oc.count_training_step(net, spec, n_free_steps=T, n_nudge_steps=T, batch_size=B)
    phase = ana.phases["free"].macs + ana.phases["drive"].macs // 3   # one drive per phase
    free = []
    assert _flops(lambda: free.append(torch_relax(fp, xc, n_steps=T, early_exit=False)[0])) == 2 * phase
    s2 = []
    assert _flops(lambda: s2.append(torch_relax(fp, xc, free[0], beta=0.1, y=y, n_steps=T,
                                                early_exit=False)[0])) == 2 * phase
    c1 = [t.numpy() for t in free[0]]
    c2 = [t.numpy() for t in s2[0]]
    H = [torch.zeros(n, m, dtype=torch.int64).numpy() for n, m in zip(sizes[1:], sizes[:-1])]
    Hb = [torch.zeros(n, dtype=torch.int64).numpy() for n in sizes[1:]]
    upd = _flops(lambda: update_torch(H, Hb, xc, c1, c2, [spec] * len(H), seed=0, step=0))
    assert upd == 2 * ana.phases["update"].macs


def test_wrong_step_count_does_not_match():
    """The cross-check can fail: one sweep too many is seen."""
    net = EqPropMLP(EqPropConfig(sizes=(20, 7, 3)), seed=0)
    x = torch.rand(3, 20)
    run = _flops(lambda: net.free_phase(x, n_steps=4))
    assert 2 * oc.count_inference(net, get_preset("fp32"), n_steps=5, batch_size=3).macs != run


def test_closed_forms_and_drive_reuse():
    s = (784, 512, 10)
    assert oc.sweep_macs(s) == 2 * 512 * 10 and oc.drive_macs(s) == 784 * 512
    fp = get_preset("fp32")
    per_phase = oc.count_inference(s, fp, n_steps=30)
    every = oc.count_inference(s, fp, n_steps=30, drive_mode="every_step")
    assert per_phase.macs == 784 * 512 + 30 * 10240
    assert every.macs - per_phase.macs == 29 * 784 * 512
    kw = dict(n_free_steps=30, n_nudge_steps=10)
    t_phase = oc.count_training_step(s, fp, drive_mode="per_phase", **kw)
    t_once = oc.count_training_step(s, fp, **kw)  # float default: one drive per step, as EqPropMLP
    assert t_phase.macs - t_once.macs == 2 * 784 * 512          # 3 drives vs 1
    assert t_phase.phases["update"].macs == 784 * 512 + 2 * 512 * 10


def test_int8_sweep_hand_count():
    """One free sweep of (3, 2, 2) under int8 (sizes only: 31-bit multipliers), counted by hand
    from the integer update of docs/hwsim_semantics.md."""
    r = oc.count_inference((3, 2, 2), get_preset("int8"), n_steps=1)
    got = r.phases["free"].by_label()
    want = {
        "mult_int8x8": 4 + 4,            # Fq_1 c_2 into layer 1, Wq_2 c_1 into layer 2
        "add_int32": 4 + 2 + (4 + 2),    # MAC adds; sum rq(drive) + rq(A_b); MAC adds + bias
        "cmp_int32": 4 + 4 + 4 + 4,      # saturate A_b, clamp layer 1, saturate A_f, clamp layer 2
        "mult_int32x31": 2 + 2,          # requantise A_b (layer 1) and A_f (layer 2)
        "shift_int63": 4, "add_int63": 4, "cmp_int63": 4,   # their nearest-even rounding shifts
    }
    assert got == want
    assert r.phases["free"].macs == 8
    d = r.phases["drive"].by_label()   # A_f of layer 1 (bias add) and its requantisation, once
    assert d["mult_int8x8"] == 6 and d["add_int32"] == 6 + 2 and d["mult_int32x31"] == 2


def test_ternary_no_weight_multiplies_and_zero_skipping():
    net = EqPropMLP(EqPropConfig(sizes=(30, 8, 4)), seed=3)
    spec = get_preset("ternary")
    dense = oc.count_inference(net, spec, n_steps=2)
    sparse = oc.count_inference(net, spec, n_steps=2, sparsity="codes")
    mac_mults = [k for k in dense.total.ops if k.op == "mult" and k.bits_b == spec.state.bits]
    assert mac_mults == []  # only requantisation multiplies remain
    def zeros(w):
        return int((quantize_weights(w.detach(), spec).codes == 0).sum())
    w1, w2 = net.layers[0].weight, net.layers[1].weight
    z1, z2, z2t = zeros(w1), zeros(w2), zeros(w2.t())   # feedback array: W2^T quantised on its own
    assert z1 > 0 and z2 > 0 and z2t > 0
    # per sample: W1 once (drive); W2 and its feedback copy once per sweep each, 2 sweeps
    key = oc.OpKey("add", "int", spec.acc_bits)
    assert dense.total.ops[key] - sparse.total.ops[key] == z1 + 2 * (z2 + z2t)
    assert dense.macs == sparse.macs  # torch-style dense MACs unchanged


def test_energy_ordering_and_linearity():
    s = (784, 512, 10)
    e = {p: oc.count_inference(s, get_preset(p), n_steps=30).energy_pj() for p in ("fp32", "int8", "int4", "ternary")}
    assert e["ternary"] < e["int4"] < e["int8"] < e["fp32"]
    a = oc.count_inference(s, get_preset("int8"), n_steps=10).phases["free"]
    b = oc.count_inference(s, get_preset("int8"), n_steps=20).phases["free"]
    assert math.isclose(b.energy_pj(), 2 * a.energy_pj(), rel_tol=1e-12)
    c = oc.count_inference(s, get_preset("fp32"), n_steps=1).phases["free"]
    reads = (2 * 512 * 10 + 10) * 32   # W_2 forward and transposed, output bias (fp32 bits)
    want = 10240 * (3.7 + 0.9) + 2 * 522 * 0.9 + reads / 64 * 10.0   # MACs, clamps, SRAM reads
    assert math.isclose(c.energy_pj(), want, rel_tol=1e-12)


def test_weight_memory_by_hand():
    m4 = oc.weight_memory((4, 3, 2), get_preset("int4"))
    assert m4["code_bytes"] == math.ceil(12 * 4 / 8) + math.ceil(6 * 4 / 8)
    assert m4["scale_bytes"] == (3 + 2) * 4 and m4["bias_bytes"] == math.ceil(3 * 3) + math.ceil(2 * 3)
    assert m4["hidden_bytes"] == 12 * 2 + 6 * 2   # 16-bit hidden weights; biases live in acc registers
    assert m4["feedback_bytes"] == math.ceil(6 * 4 / 8) + 3 * 4   # W_2^T codes + its 3 row scales
    assert m4["inference_bytes"] == m4["weight_bytes"] + m4["bias_bytes"] + m4["feedback_bytes"]
    mt = oc.weight_memory((784, 512, 10), get_preset("ternary"))
    assert mt["code_bytes"] == (784 * 512 + 512 * 10) * 2 // 8
    mf = oc.weight_memory((784, 512, 10), get_preset("fp32"))
    assert mf["weight_bytes"] == (784 * 512 + 512 * 10) * 4 and mf["hidden_bytes"] == 0


def test_training_update_int8_uses_stochastic_rounding():
    s = (6, 4, 3)
    spec = get_preset("int8")
    r = oc.count_training_step(s, spec, n_free_steps=2, n_nudge_steps=2)
    n_params = 6 * 4 + 4 + 4 * 3 + 3
    up = r.phases["update"].ops
    assert up[oc.OpKey("mult", "int", 32, 32)] == 3 * n_params   # one hash round per parameter
    n_w = 6 * 4 + 4 * 3
    assert up[oc.OpKey("add", "int", spec.update.hidden_bits)] == 2 * n_w   # H += delta; code rounding
    assert up[oc.OpKey("add", "int", spec.acc_bits)] >= 4 + 3                     # bias registers
    assert set(r.phases) == {"drive", "free", "b1", "b2", "update"} == set(oc.PHASES)
    one = oc.count_training_step(s, spec, n_free_steps=2, n_nudge_steps=2, nudging="one_sided")
    assert "b1" not in one.phases and "b2" in one.phases


@pytest.mark.parametrize("call, match", [
    (lambda: oc.count_inference((4, 3), get_preset("analog_pcm"), n_steps=2), "analog"),
    (lambda: oc.count_inference((4,), get_preset("fp32"), n_steps=2), "sizes"),
    (lambda: oc.count_inference((4, 3), get_preset("int8"), n_steps=0), "n_steps"),
    (lambda: oc.count_inference((4, 3), get_preset("int8"), n_steps=2, sparsity="codes"), "sparsity"),
    (lambda: oc.count_inference((4, 3), get_preset("int8"), n_steps=2, drive_mode="never"), "drive_mode"),
    (lambda: oc.count_training_step((4, 3), get_preset("int8"), n_free_steps=2, n_nudge_steps=1,
                                    nudging="both"), "nudging"),
    (lambda: energy.op_energy_pj("div", "int", 8), "op"),
    (lambda: energy.op_energy_pj("add", "fp", 8), "float op"),
    (lambda: energy.memory_read_energy_pj(64, "hbm"), "level"),
])
def test_bad_input_raises_value_error(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_energy_table_values_and_scaling():
    assert energy.op_energy_pj("mult", "int", 32) == 3.1
    assert energy.op_energy_pj("add", "int", 8) == 0.03
    assert math.isclose(energy.op_energy_pj("mult", "int", 4), 0.2 / 4)          # bits^2 rule
    assert math.isclose(energy.op_energy_pj("add", "int", 24), 0.1 * 24 / 32)    # linear rule
    assert energy.op_energy_pj("cmp", "int", 32) == energy.op_energy_pj("add", "int", 32)
    assert energy.synop_energy_pj(8) == energy.op_energy_pj("add", "int", 8)
    assert energy.memory_read_energy_pj(64, "dram", "low") == 1300.0


@pytest.mark.parametrize("kind,update", [("mlp", "async"), ("mlp", "sync"), ("deep", "async"), ("skip", "async")])
def test_integer_events_equal_the_instrumented_simulator(kind, update):
    """Integer events (accumulators, requantisations, clamps, products) of a free phase and of a nudged
    phase == those of the instrumented torch mirror (hwsim.op_probe), incl. a static skip coupling
    (its own accumulator once per phase, its requantisation held) and the deterministic drive."""
    import numpy as np

    from hwsim import op_probe
    from models.skip_mlp import SkipEqPropMLP
    from tracks.data import load_dataset

    sizes = {"mlp": (784, 12, 10), "deep": (784, 12, 8, 10), "skip": (784, 12, 10)}[kind]
    cls = SkipEqPropMLP if kind == "skip" else EqPropMLP
    net = cls(EqPropConfig(sizes=sizes, update=update), seed=0)
    spec = get_preset("int8")
    fp = FixedPointMLP.from_model(net, spec)
    x, y = load_dataset("mnist", "test")
    B, T1, T2 = 4, 5, 3
    xc = fp.quantize_input(x[:B].astype(np.float64))
    s, ev = op_probe.relax_events(fp, xc, n_steps=T1)
    assert ev == oc.count_inference(net, spec, n_steps=T1, batch_size=B).total.event_counts()
    _, ev2 = op_probe.relax_events(fp, xc, s0=s, beta=0.3, y=y[:B], n_steps=T2)
    r = oc.count_training_step(net, spec, n_free_steps=T1, n_nudge_steps=T2, nudging="one_sided", batch_size=B)
    assert ev2 == (r.phases["b2"] + oc.count_inference(net, spec, n_steps=1, batch_size=B).phases["drive"]).event_counts()
    with pytest.raises(ValueError, match="deterministic"):
        op_probe.relax_events(FixedPointMLP.from_model(net, spec.replace(rounding="stochastic")), xc, n_steps=1)

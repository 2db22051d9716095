"""Energy transformer hardware paths: ONNX float graph == torch float (onnxruntime), fake-quant and
analog-noise copies perturb the model by their format's size."""
import torch

from exports.transformer_onnx import verify
from models.transformer import (EnergyTransformer, TransformerConfig, analog_free_phase, fake_quant_copy,
                                linear_map_names)
from quant.presets import get_preset
from quant.tolerances import F32_VS_F64


def test_onnx_float_graph_matches_torch():
    for kw in (dict(), dict(n_blocks=3, n_unique=2, damping=0.3)):
        net = EnergyTransformer(TransformerConfig(d_model=8, n_heads=2, **kw), seed=0)
        r = verify(net, torch.rand(4, 784, generator=torch.Generator().manual_seed(0)), n_steps=12)
        assert r["max_abs_diff"] <= F32_VS_F64["atol"] and r["prediction_agreement"] == 1.0, r


def test_fake_quant_and_analog_paths():
    net = EnergyTransformer(TransformerConfig(d_model=8, n_heads=2, n_blocks=2), seed=0)
    assert set(linear_map_names(net)) == {"embed.weight", "readout.weight", "links.0"} | {
        f"blocks.{b}.{k}" for b in (0, 1) for k in ("wq", "wk", "xi")}
    x = torch.rand(4, 784, generator=torch.Generator().manual_seed(1))
    s, _ = net.free_phase(x, n_steps=30)
    err = {}
    for name in ("int8", "int4"):
        q = fake_quant_copy(net, name)
        for k in linear_map_names(net):  # weights on the per-channel grid: |error| <= half a step
            w, wq = net.get_parameter(k).detach(), q.get_parameter(k).detach()
            step = w.abs().amax(dim=1, keepdim=True) / (127 if name == "int8" else 7)
            assert bool(((w - wq).abs() <= 0.5 * step + 1e-7).all()), (name, k)
        torch.testing.assert_close(q.pos, net.pos)  # not a linear map: stays float
        err[name] = float((q.free_phase(x, n_steps=30)[0][-1] - s[-1]).abs().max())
    assert 0 < err["int8"] < err["int4"]
    sa = analog_free_phase(net, x, get_preset("analog_pcm").analog, n_steps=30, seed=0)
    assert float((sa[-1] - s[-1]).abs().max()) > 0
    clean = analog_free_phase(net, x, get_preset("analog_pcm").analog.__class__(), n_steps=30)
    torch.testing.assert_close(clean[-1], s[-1], **F32_VS_F64)  # zero noise == the float path

"""Energy transformer on the hardware paths: accuracy cost of INT8 / INT4 fake-quant weights and of
analog crossbar noise on the weight projections, and the ONNX float graph checked in onnxruntime.

Trains one model by EqProp (d, training images and epochs from the arguments), then evaluates on the
first ``--n-test`` MNIST test images: float32; :func:`models.transformer.fake_quant_copy` with the
``int8`` and ``int4`` presets (per-channel weights; states, biases and softmax float); and
:func:`models.transformer.analog_free_phase` with the ``analog_pcm`` preset's programming / read noise
(3 noise seeds; DAC/ADC, drift and stuck devices not modelled). ONNX: :func:`exports.transformer_onnx.verify`.

Run (README figure)::

    EQPROP_DATA=/work/shared/data OMP_NUM_THREADS=1 .venv/bin/python benchmarks/transformer_hardware.py \\
        --d-model 64 --n-train 4000 --epochs 1 --n-test 2000
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from exports.transformer_onnx import verify  # noqa: E402
from models.transformer import (EnergyTransformer, TrainSettings, TransformerConfig, analog_free_phase,  # noqa: E402
                                evaluate, fake_quant_copy, fit)
from quant.presets import get_preset  # noqa: E402
from tracks.data import load_dataset  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--d-model", type=int, default=64)
    ap.add_argument("--n-train", type=int, default=4000)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--n-test", type=int, default=2000)
    ap.add_argument("--n-steps", type=int, default=40)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    x, y = load_dataset("mnist", "train")
    xt, yt = load_dataset("mnist", "test")
    x, y = torch.as_tensor(x[: a.n_train]), torch.as_tensor(y[: a.n_train])
    xt, yt = torch.as_tensor(xt[: a.n_test]), torch.as_tensor(yt[: a.n_test])
    torch.manual_seed(a.seed)
    net = EnergyTransformer(TransformerConfig(d_model=a.d_model, n_heads=4, damping=0.0), seed=a.seed)
    fit(net, x, y, TrainSettings(grad="eqprop", lr=2e-3, epochs=a.epochs), seed=a.seed)
    rows = {"float32": evaluate(net, xt, yt, n_steps=a.n_steps)["accuracy"]}
    for p in ("int8", "int4"):
        rows[p] = evaluate(fake_quant_copy(net, p), xt, yt, n_steps=a.n_steps)["accuracy"]
    spec = get_preset("analog_pcm").analog
    acc = []
    for s in range(3):
        out = [analog_free_phase(net, xt[i:i + 500], spec, n_steps=a.n_steps, seed=s)[-1] for i in range(0, len(xt), 500)]
        acc.append(float((torch.cat(out).argmax(1) == yt).double().mean()))
    rows["analog_pcm"] = float(np.mean(acc))
    rows["analog_pcm_per_seed"] = acc
    onnx_check = verify(net, xt[:256], n_steps=a.n_steps)
    for k in ("int8", "int4", "analog_pcm"):
        print(f"{k:10s} accuracy {rows[k]:.4f}  cost vs float32 {rows['float32'] - rows[k]:+.4f}")
    print(f"float32    accuracy {rows['float32']:.4f}; ONNX float graph vs torch: {onnx_check}")
    print(json.dumps({"bench": "transformer_hardware", "args": vars(a), "accuracy": rows, "onnx": onnx_check,
                      "analog": {"prog_noise_std": spec.prog_noise_std, "read_noise_std": spec.read_noise_std}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

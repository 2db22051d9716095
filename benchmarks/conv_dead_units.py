"""Dead output units of ConvEqProp: before/after measurement of an output-box choice (Track 13 doc).

For each seed: ConvEqProp 1-32-64 (5x5, MNIST) with output box ``--out-activation``, trained by EqProp
(Adam 1e-3, beta 0.5, symmetric, T1 15, T2 5, batch 100, constant lr) on the first ``--n-train`` images
of the training split (``tracks.data.train_val_split``, seed 0) for one epoch; prints one JSON line per
seed: output units whose state never leaves the lower clamp on 500 validation images before / after
training ("dead"), and the accuracy on 1000 validation images (15 sweeps).

Usage (the 2026-11-30 measurement, ~5 min per seed under load ~20 on the 2-core machine)::

    EQPROP_DATA=/work/shared/data .venv/bin/python benchmarks/conv_dead_units.py --out-activation hard_sigmoid
    EQPROP_DATA=/work/shared/data .venv/bin/python benchmarks/conv_dead_units.py --out-activation hard_tanh
"""
from __future__ import annotations

import argparse
import json
import os
import time

import torch

from models.conv import ConvConfig, ConvEqProp
from models.train import TrainConfig, evaluate
from tracks.data import load_dataset, train_val_split
from tracks.t13_conv_eqprop import fit


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out-activation", default="hard_sigmoid", choices=("hard_sigmoid", "hard_tanh"))
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 0, 2])
    ap.add_argument("--n-train", type=int, default=3000)
    ap.add_argument("--data-dir", default=os.environ.get("EQPROP_DATA"))
    a = ap.parse_args()
    torch.set_num_threads(1)
    x, y = load_dataset("mnist", "train", a.data_dir)
    x_tr, y_tr, x_val, y_val = train_val_split(x, y, n_val=5000, seed=0)
    x_tr, y_tr = torch.from_numpy(x_tr[:a.n_train]), torch.from_numpy(y_tr[:a.n_train])
    x_val, y_val = torch.from_numpy(x_val[:1000]), torch.from_numpy(y_val[:1000])

    def dead(net):
        s, _ = net.free_phase(x_val[:500], n_steps=15)
        return int((s[-1].max(0).values <= net.nodes[-1].bounds[0]).sum())

    for seed in a.seeds:
        net = ConvEqProp(ConvConfig(channels=(32, 64), kernel=5, out_activation=a.out_activation), seed=seed)
        d0 = dead(net)
        tc = TrainConfig(method="eqprop", epochs=1, batch_size=100, optimizer="adam", lr=1e-3, beta=0.5,
                         nudging="symmetric", n_free_steps=15, n_nudge_steps=5, seed=seed)
        t0 = time.time()
        fit(net, "eqprop", x_tr, y_tr, epochs=1, batch_size=100, lr=1e-3, lr_schedule="constant", seed=seed, tcfg=tc)
        acc = evaluate(net, x_val, y_val, 15, batch_size=500)
        print(json.dumps({"out_activation": a.out_activation, "seed": seed, "dead_init": d0, "dead_after": dead(net),
                          "val_acc": acc, "s": round(time.time() - t0)}), flush=True)


if __name__ == "__main__":
    main()

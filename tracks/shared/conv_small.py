"""The small conv EqProp net the hardware tracks (17, 40, 41, 42) run their ``conv_`` metrics on.

A :class:`models.conv.ConvEqProp` on MNIST average-pooled 2x2 to 14x14 (``downsample``: the quick
variants must train it in seconds on a 2-core CPU), 3x3 kernels, 2x2 pools, channels ``(4, 8)`` by
default (14 -> 12 -> 6 -> 4 -> 2: 8*2*2 = 32 units into the 10 outputs), trained by EqProp with the
recipe Track 13 measured for its small quick net (Adam, beta 0.2, symmetric nudging, T1 15, T2 5,
batch 50). Every report names the variant: "MNIST 14x14 (2x2 average pool)".
"""
from __future__ import annotations

import time

import numpy as np
import torch
import torch.nn.functional as F

from models.conv import ConvConfig, ConvEqProp
from models.train import TrainConfig, train

from ..data import load_dataset

DATA_VARIANT = "MNIST 14x14 (2x2 average pool)"
CHANNELS = (4, 8)


def downsample(x: np.ndarray) -> np.ndarray:
    """``(N, 784)`` MNIST images -> ``(N, 196)`` float32, 2x2 average pooling (values stay in [0, 1])."""
    t = torch.from_numpy(np.asarray(x, np.float32)).reshape(-1, 1, 28, 28)
    return F.avg_pool2d(t, 2).reshape(-1, 196).numpy()


def small_conv_config(channels=CHANNELS, update: str = "async", sn_bound: float | None = None) -> ConvConfig:
    return ConvConfig(in_shape=(1, 14, 14), channels=tuple(channels), kernel=3, padding=0, pool=2, n_out=10,
                      update=update, sn_bound=sn_bound)


def train_small_conv(data_dir, *, n_train: int, epochs: int, seed: int, channels=CHANNELS, lr: float = 3e-3,
                     update: str = "async", sn_bound: float | None = None,
                     callback=None) -> tuple[ConvEqProp, str]:
    """Train the small conv net on the first ``n_train`` MNIST training images (downsampled); returns
    ``(net (float32, CPU), a sentence naming what was trained)``. ``sn_bound``: spectral
    normalisation of every coupling (:class:`models.conv.ConvConfig`); ``callback(epoch, batch,
    net)`` after every update (:func:`models.train.train`)."""
    x, y = load_dataset("mnist", "train", data_dir)
    net = ConvEqProp(small_conv_config(channels, update, sn_bound), seed=seed)
    tcfg = TrainConfig(method="eqprop", epochs=epochs, batch_size=50, optimizer="adam", lr=lr, beta=0.2,
                       nudging="symmetric", n_free_steps=15, n_nudge_steps=5, seed=seed)
    t0 = time.time()
    if n_train > 0 and epochs > 0:
        train(net, torch.from_numpy(downsample(x[:n_train])), torch.from_numpy(y[:n_train]), tcfg,
              callback=callback)
    net.sn_sync_()  # the last update's weights, projected (no-op without spectral normalisation)
    sn = "" if sn_bound is None else f", spectral norm <= {sn_bound:g} per coupling"
    note = (f"conv net 1-{'-'.join(map(str, channels))} (3x3, 2x2 pools{sn}) on {DATA_VARIANT}, EqProp (Adam lr {lr}, "
            f"beta 0.2) {epochs} epoch(s) on {n_train} images, seed {seed} ({time.time() - t0:.0f} s)")
    return net.eval(), note


def test_images(data_dir, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The first ``n`` MNIST test images, downsampled, and their labels."""
    x, y = load_dataset("mnist", "test", data_dir)
    return downsample(x[:n]), y[:n]

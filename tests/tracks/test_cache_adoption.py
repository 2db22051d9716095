"""Tracks 3/17 (sweep engine), 25, 41 and 42 train through the run's model cache (issue 14): the same key
trains once per run (a second track, or a resumed run, loads it with identical metrics), and another
seed or recipe trains anew. Train calls are counted by wrapping each module's training function."""
import pytest
import torch

import tracks.t25_mnist_accuracy as t25
from models.checkpoint import load_checkpoint
from models.ff_mlp import FeedForwardMLP, FFConfig, load_ff, save_ff
from tracks.harness.base import TrackContext
from tracks.harness.model_cache import ModelCache


def _counting(monkeypatch, module, name="train"):
    """Wrap ``module.name`` so each call is recorded; returns the list of calls."""
    real = getattr(module, name)
    calls = []

    def counted(*a, **kw):
        calls.append(1)
        return real(*a, **kw)

    monkeypatch.setattr(module, name, counted)
    return calls


def _ctx(out, cache=None, seeds=(0,), **overrides):
    return TrackContext(out_dir=out, quick=True, progress=False, seeds=seeds, overrides=overrides,
                        model_cache=cache)


# ---------------------------------------------------------------- Track 25 and the FF-BP checkpoint
T25_SMALL = dict(datasets=("mnist",), methods=("eqprop", "ffbp"), n_train=300, n_val=100, n_test=300, epochs=1)


def test_ff_mlp_is_a_registry_checkpoint(tmp_path):
    net = FeedForwardMLP(FFConfig(sizes=(6, 5, 3), activation="tanh"), seed=3)
    save_ff(tmp_path / "ff.pt", net, metrics={"a": 1})
    for loader in (load_checkpoint, load_ff):
        net2, meta = loader(tmp_path / "ff.pt")
        assert isinstance(net2, FeedForwardMLP) and net2.config == net.config and meta["metrics"] == {"a": 1}
        assert all(torch.equal(p, q) for p, q in zip(net.parameters(), net2.parameters()))
    with pytest.raises(FileExistsError):
        save_ff(tmp_path / "ff.pt", net)


def test_t25_same_key_trains_once_and_metrics_match(tmp_path, monkeypatch):
    calls = _counting(monkeypatch, t25)
    cache = ModelCache(tmp_path / "run" / "model_cache")
    first = t25.run(_ctx(tmp_path / "run", cache, **T25_SMALL))
    assert len(calls) == 2 and cache.stats() == {"trained": 2, "loaded": 0, "corrupt": 0}
    # a second track run in the same run folder (a resumed run: a fresh cache object on the same folder)
    again = t25.run(_ctx(tmp_path / "run", ModelCache(tmp_path / "run" / "model_cache"), **T25_SMALL))
    assert len(calls) == 2  # nothing trained again
    for k in ("mnist_test_acc_eqprop", "mnist_test_acc_ffbp", "curves"):
        assert again.metrics[k] == first.metrics[k]
    # another seed, another recipe (epochs): trained anew
    t25.run(_ctx(tmp_path / "run", cache, seeds=(1,), **T25_SMALL))
    assert len(calls) == 4
    t25.run(_ctx(tmp_path / "run", cache, **{**T25_SMALL, "epochs": 2, "methods": ("ffbp",)}))
    assert len(calls) == 5


def test_t25_net_hook_bypasses_the_cache(tmp_path, monkeypatch):
    calls = _counting(monkeypatch, t25)
    cache = ModelCache(tmp_path / "model_cache")
    small = {**T25_SMALL, "methods": ("ffbp",)}
    for _ in range(2):
        t25.run(_ctx(tmp_path, cache, **small, net_hook=lambda net, method: None))
    assert len(calls) == 2 and cache.stats()["trained"] == 0 and not (tmp_path / "model_cache").exists()

"""Tracks 3/17 (sweep engine), 25, 41 and 42 train through the run's model cache (issue 14): the same key
trains once per run (a second track, or a resumed run, loads it with identical metrics), and another
seed or recipe trains anew. Train calls are counted by wrapping each module's training function."""
import pytest
import torch

import tracks.t25_mnist_accuracy as t25
from tracks.shared import headline
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
# workers=1: trained in this process, where the counting wrapper applies (tests/tracks/test_headline.py
# checks that the parallel trainings equal these)
T25_SMALL = dict(datasets=("mnist",), methods=("eqprop", "ffbp"), n_train=300, n_val=100, n_test=300, epochs=1,
                 workers=1)


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
    calls = _counting(monkeypatch, headline)
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
    calls = _counting(monkeypatch, headline)
    cache = ModelCache(tmp_path / "model_cache")
    small = {**T25_SMALL, "methods": ("ffbp",)}
    for _ in range(2):
        t25.run(_ctx(tmp_path, cache, **small, net_hook=lambda net, method: None))
    assert len(calls) == 2 and cache.stats()["trained"] == 0 and not (tmp_path / "model_cache").exists()


# ---------------------------------------------------------------- Tracks 41 and 42
def _same_weights(a, b):
    return all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))


@pytest.mark.parametrize("track", ["t41", "t42"])
def test_t41_t42_same_key_trains_once_user_checkpoint_skips_the_cache(tmp_path, monkeypatch, track):
    import tracks.t41_onnx_fidelity as t41
    import tracks.t42_spiking_fidelity as t42
    mod = {"t41": t41, "t42": t42}[track]
    small = {"hidden": 16, "n_train": 300, "epochs": 1}

    def model(cache, seed=0, **over):
        ctx = _ctx(tmp_path / "run", cache, seeds=(seed,), **{**small, **over})
        cfg = mod._config(ctx)
        net = mod._trained_net(ctx, cfg, seed)[0] if track == "t41" else mod._model(ctx, cfg, seed)[0]
        return net, ctx

    calls = _counting(monkeypatch, mod)
    cache = ModelCache(tmp_path / "run" / "model_cache")
    a, ctx = model(cache)
    b, _ = model(ModelCache(tmp_path / "run" / "model_cache"))  # a resumed run: loaded, not trained
    assert len(calls) == 1 and _same_weights(a, b)
    if track == "t42":
        assert (ctx.out_dir / "t42_model.pt").is_file()  # the artifact is written from a loaded model too
        net42, _ = load_checkpoint(ctx.out_dir / "t42_model.pt")
        assert _same_weights(net42, a)
    model(cache, seed=1)
    assert len(calls) == 2  # another seed
    model(cache, epochs=2)
    assert len(calls) == 3  # another recipe
    n_entries = len(list((tmp_path / "run" / "model_cache").glob("*.pt")))
    user = tmp_path / "user.pt"
    from models.checkpoint import save_checkpoint
    save_checkpoint(user, a)
    c, _ = model(cache, checkpoint=str(user))
    assert len(calls) == 3 and _same_weights(c, a)
    assert len(list((tmp_path / "run" / "model_cache").glob("*.pt"))) == n_entries
    assert cache.stats()["trained"] == 3


# ---------------------------------------------------------------- Tracks 3 and 17 (tracks.sweep.track_model)
SWEEP_MODEL = {"sizes": (784, 16, 10), "n_train": 300, "epochs": 1}


def _count_train_mlp(monkeypatch):
    import tracks.sweep as sweep
    import tracks.sweep.engine as engine
    calls = _counting(monkeypatch, engine, "train_mlp")
    monkeypatch.setattr(sweep, "train_mlp", engine.train_mlp)  # Track 36 imports it from tracks.sweep
    return calls


def test_track_model_shares_one_training_between_tracks_3_17_and_36(tmp_path, monkeypatch):
    import dataclasses

    import tracks.t36_ood_energy as t36
    from tracks.sweep.engine import track_model
    calls = _count_train_mlp(monkeypatch)
    cache = ModelCache(tmp_path / "model_cache")
    net3, path3, _ = track_model(_ctx(tmp_path, cache), SWEEP_MODEL)        # Track 3's call
    net17, path17, _ = track_model(_ctx(tmp_path, cache), SWEEP_MODEL)      # Track 17's call, same run
    assert len(calls) == 1 and path3 == path17 and path3.parent == tmp_path / "model_cache"
    assert _same_weights(net3, net17) and not (tmp_path / "cache").exists()
    loaded, _ = load_checkpoint(path3)
    assert _same_weights(loaded, net3)
    # Track 36's seed-0 MNIST model with the same sizes, slice, epochs and lr is the same entry
    c36 = dataclasses.replace(t36.QUICK, sizes=SWEEP_MODEL["sizes"], n_train=300, epochs=1)
    net36 = t36._train("mnist", 0, c36, _ctx(tmp_path, cache))
    assert len(calls) == 1 and _same_weights(net36.float(), net3)
    # another recipe (epochs) or training slice: trained anew; Track 36's seed 1: anew
    track_model(_ctx(tmp_path, cache), {**SWEEP_MODEL, "epochs": 2})
    track_model(_ctx(tmp_path, cache), {**SWEEP_MODEL, "n_train": 200})
    t36._train("mnist", 1, c36, _ctx(tmp_path, cache))
    assert len(calls) == 4 and cache.stats() == {"trained": 4, "loaded": 2, "corrupt": 0}


def test_track_model_without_a_run_cache_uses_the_sweep_cache(tmp_path, monkeypatch):
    """A context without ``model_cache`` (the sweep command's own callers) keeps ``<out>/cache``."""
    from types import SimpleNamespace

    from tracks.sweep.engine import track_model
    calls = _count_train_mlp(monkeypatch)
    ctx = SimpleNamespace(out_dir=tmp_path, quick=True, data_dir=None, progress=False, torch_device="cpu",
                          model_cache=None)
    _, path, _ = track_model(ctx, SWEEP_MODEL)
    _, path2, _ = track_model(ctx, SWEEP_MODEL)
    assert path == path2 and path.parent == tmp_path / "cache" and len(calls) == 1

"""The run folder's model cache: train once per key, corrupt entries detected and retrained, never used."""
import json

import numpy as np
import pytest
import torch

from models.eqprop_mlp import EqPropConfig, EqPropMLP
from tracks.harness import model_cache as mc
from tracks.harness.base import TrackContext
from tracks.harness.model_cache import CacheKeyError, CorruptCacheWarning, ModelCache, array_digest


class Trainer:
    """Counts calls; builds a tiny net whose weights depend on the seed."""

    def __init__(self):
        self.calls = 0

    def __call__(self, seed=0):
        self.calls += 1
        return EqPropMLP(EqPropConfig(sizes=(6, 4, 3)), seed=seed)


KEY = {"dataset": "mnist", "data_sha256": "ab" * 32, "sizes": [6, 4, 3], "epochs": 1, "lr": [0.1, 0.05], "seed": 0}


def _w(net):
    return net.layers[0].weight.detach().clone()


def test_same_key_trains_once_other_key_trains_again(tmp_path):
    cache, train = ModelCache(tmp_path / "c"), Trainer()
    a = cache.get_or_train(KEY, train, label="mlp")
    b = cache.get_or_train(dict(reversed(list(KEY.items()))), train, label="mlp")  # key order is irrelevant
    assert train.calls == 1 and torch.equal(_w(a), _w(b))
    c = cache.get_or_train({**KEY, "seed": 1}, lambda: train(seed=1), label="mlp")
    d = cache.get_or_train({**KEY, "data_sha256": "cd" * 32}, train, label="mlp")
    assert train.calls == 3 and not torch.equal(_w(a), _w(c)) and torch.equal(_w(a), _w(d))
    assert cache.stats() == {"trained": 3, "loaded": 1, "corrupt": 0}
    # a second cache object on the same folder (a resumed run) loads, it does not train
    again = ModelCache(tmp_path / "c").get_or_train(KEY, train, label="mlp")
    assert train.calls == 3 and torch.equal(_w(again), _w(a))


def test_code_versions_are_part_of_the_key(tmp_path, monkeypatch):
    cache, train = ModelCache(tmp_path), Trainer()
    cache.get_or_train(KEY, train)
    real = mc.code_versions()
    monkeypatch.setattr(mc, "code_versions", lambda: {**real, "torch": "0.0.0-other"})
    cache.get_or_train(KEY, train)
    assert train.calls == 2


@pytest.mark.parametrize("damage", ["flip_byte", "truncate", "drop_sidecar", "edit_key"])
def test_corrupt_entry_is_retrained_with_warning_never_used(tmp_path, damage):
    cache, train = ModelCache(tmp_path), Trainer()
    good = cache.get_or_train(KEY, train, label="mlp")
    ckpt, side = cache.paths(KEY, "mlp")
    if damage == "flip_byte":  # a flipped bit in the weights still unpickles: only the checksum sees it
        raw = bytearray(ckpt.read_bytes())
        raw[len(raw) // 2] ^= 0x01
        ckpt.write_bytes(bytes(raw))
    elif damage == "truncate":
        ckpt.write_bytes(ckpt.read_bytes()[:100])
    elif damage == "drop_sidecar":  # a training killed between checkpoint and sidecar
        side.unlink()
    else:
        meta = json.loads(side.read_text())
        meta["key"]["model"]["seed"] = 7
        side.write_text(json.dumps(meta))
    with pytest.warns(CorruptCacheWarning, match="corrupt"):
        net = cache.get_or_train(KEY, train, label="mlp")
    assert train.calls == 2 and torch.equal(_w(net), _w(good))
    assert cache.stats()["corrupt"] == 1 and ckpt.with_name(ckpt.name + ".corrupt").exists()
    # the fresh entry is sound: the next call loads it without a warning
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cache.get_or_train(KEY, train, label="mlp")
    assert train.calls == 2


def test_corrupt_entry_detection_can_fail(tmp_path, monkeypatch):
    """With the checksum check bypassed, a flipped byte goes unnoticed: the check is what catches it."""
    cache, train = ModelCache(tmp_path), Trainer()
    cache.get_or_train(KEY, train)
    ckpt, _ = cache.paths(KEY)
    raw = bytearray(ckpt.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    ckpt.write_bytes(bytes(raw))
    monkeypatch.setattr(mc, "_sha256_file", lambda p: json.loads(cache.paths(KEY)[1].read_text())["sha256"])
    cache.get_or_train(KEY, train)
    assert train.calls == 1 and cache.stats()["loaded"] == 1


def test_bad_keys_and_labels_refused(tmp_path):
    cache = ModelCache(tmp_path)
    with pytest.raises(CacheKeyError, match="key.x is a ndarray"):
        cache.get_or_train({"x": np.zeros(3)}, Trainer())
    with pytest.raises(CacheKeyError, match="not finite"):
        cache.get_or_train({"lr": float("nan")}, Trainer())
    with pytest.raises(CacheKeyError, match="non-empty dict"):
        cache.get_or_train({}, Trainer())
    with pytest.raises(ValueError, match="label"):
        cache.get_or_train(KEY, Trainer(), label="../escape")
    assert not any(tmp_path.iterdir())


def test_array_digest_sees_every_byte_and_the_shape():
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    y = x.copy()
    y[2, 3] += 1e-6
    assert array_digest(x) != array_digest(y)
    assert array_digest(x) != array_digest(x.reshape(4, 3))
    assert array_digest(x) == array_digest(torch.as_tensor(x))


def test_context_has_a_cache_in_the_run_folder(tmp_path):
    ctx = TrackContext(out_dir=tmp_path)
    assert ctx.model_cache.root == tmp_path / "model_cache"


def test_training_metrics_stored_and_returned_on_load(tmp_path):
    cache, train = ModelCache(tmp_path), Trainer()

    def train_with_history():
        return train(), {"history": [{"epoch": 1, "val_acc": 0.5}], "val_acc": 0.5}
    net, m = cache.get_or_train(KEY, train_with_history, metrics={"n_train": 10}, with_metrics=True)
    net2, m2 = cache.get_or_train(KEY, train_with_history, with_metrics=True)
    assert train.calls == 1 and m == m2 == {"n_train": 10, "history": [{"epoch": 1, "val_acc": 0.5}], "val_acc": 0.5}
    with pytest.raises(TypeError, match="model or \\(model, metrics dict\\)"):
        cache.get_or_train({**KEY, "seed": 3}, lambda: (train(), 1, 2))


def _mnist_slice(n=120):
    from tracks.data import load_dataset
    x, y = load_dataset("mnist", "train")
    return torch.from_numpy(x[:n]), torch.from_numpy(y[:n])


def _resumable_trainer(x, y, epochs_run, stop_after=None):
    from models.train import TrainConfig, train

    def train_fn(resumable):
        net = EqPropMLP(EqPropConfig(sizes=(784, 12, 10)), seed=0)
        cfg = TrainConfig(method="eqprop", epochs=3, batch_size=40, optimizer="sgd", lr=(0.1, 0.05), beta=0.5,
                          nudging="symmetric", n_free_steps=6, n_nudge_steps=3, seed=0)

        def cb(epoch, history):
            epochs_run.append(epoch)
            if stop_after is not None and epoch + 1 == stop_after:
                raise KeyboardInterrupt  # the run is killed after this epoch's checkpoint
        train(net, x, y, cfg, checkpoint=resumable.path, resume=True,
              epoch_callback=resumable.chain(cb).epoch_callback, progress=False)
        return net
    return train_fn


def test_interrupted_training_continues_from_its_last_epoch(tmp_path):
    x, y = _mnist_slice()
    key = {"dataset": "mnist", "data_sha256": array_digest(x, y), "sizes": [784, 12, 10], "seed": 0}
    ref_epochs: list = []
    ref = ModelCache(tmp_path / "ref").get_or_train(key, _resumable_trainer(x, y, ref_epochs))
    assert ref_epochs == [0, 1, 2]
    cache, epochs = ModelCache(tmp_path / "run"), []
    with pytest.raises(KeyboardInterrupt):
        cache.get_or_train(key, _resumable_trainer(x, y, epochs, stop_after=2))
    assert epochs == [0, 1] and not cache.paths(key)[0].exists() and list((tmp_path / "run").glob("*.partial.pt"))
    net = ModelCache(tmp_path / "run").get_or_train(key, _resumable_trainer(x, y, epochs))  # the resumed run
    assert epochs == [0, 1, 2]  # only the last epoch was trained again
    assert all(torch.equal(a, b) for a, b in zip(net.parameters(), ref.parameters()))  # = uninterrupted training
    assert not list((tmp_path / "run").glob("*.partial*"))


def test_corrupt_partial_checkpoint_discarded_not_used(tmp_path):
    x, y = _mnist_slice()
    key = {"dataset": "mnist", "data_sha256": array_digest(x, y), "seed": 0}
    cache, epochs = ModelCache(tmp_path), []
    with pytest.raises(KeyboardInterrupt):
        cache.get_or_train(key, _resumable_trainer(x, y, epochs, stop_after=2))
    (partial,) = tmp_path.glob("*.partial.pt")
    raw = bytearray(partial.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    partial.write_bytes(bytes(raw))
    with pytest.warns(CorruptCacheWarning, match="partial checkpoint SHA-256"):
        cache.get_or_train(key, _resumable_trainer(x, y, epochs))
    assert epochs == [0, 1, 0, 1, 2]  # trained from the start

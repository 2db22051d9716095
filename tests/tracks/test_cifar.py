"""CIFAR-10 loader: both variants, look-up order, verification, cache, augmentation."""
import pickle

import numpy as np
import pytest

from tracks.data import DataError
from tracks.data import cifar
from tracks.data.cifar import JPEG, CANONICAL, augment, load_cifar10


@pytest.fixture
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("EQPROP_NO_DOWNLOAD", "1")
    return tmp_path


def test_jpeg_variant_from_shared_data_is_named_and_complete():
    x, y, variant = load_cifar10("test")
    assert variant == JPEG
    assert x.shape == (10000, 3072) and x.dtype == np.float32
    assert 0.0 <= x.min() and x.max() <= 1.0
    np.testing.assert_array_equal(np.bincount(y, minlength=10), np.full(10, 1000))
    x2, y2, _ = load_cifar10("test")  # from the decoded cache: same arrays
    np.testing.assert_array_equal(x, x2)
    np.testing.assert_array_equal(y, y2)


def test_canonical_batches_win_and_are_read(private_cache, monkeypatch):
    root = private_cache / "data"
    d = root / "cifar10" / cifar.CANONICAL_DIR
    d.mkdir(parents=True)
    rng = np.random.default_rng(0)
    data = rng.integers(0, 256, size=(10000, 3072), dtype=np.uint8)
    labels = rng.integers(0, 10, size=10000).tolist()
    (d / "test_batch").write_bytes(pickle.dumps({b"data": data, b"labels": labels}))
    (root / cifar.JPEG_ARCHIVE).write_bytes(b"not even a zip")  # same root: the canonical set wins
    monkeypatch.setenv("EQPROP_DATA", str(root))
    x, y, variant = load_cifar10("test")
    assert variant == CANONICAL
    np.testing.assert_array_equal((x * 255).round().astype(np.uint8), data)
    np.testing.assert_array_equal(y, labels)


def test_corrupt_archive_is_named(private_cache, monkeypatch):
    (private_cache / cifar.JPEG_ARCHIVE).write_bytes(b"truncated download")
    monkeypatch.setenv("EQPROP_DATA", str(private_cache / "nowhere"))
    with pytest.raises(DataError, match=r"cifar10-jpeg.zip: MD5 .* expected 776f52f9"):
        load_cifar10("test", data_dir=private_cache)


def test_missing_data_says_where_it_looked(private_cache, monkeypatch):
    monkeypatch.setenv("EQPROP_DATA", str(private_cache / "empty"))
    with pytest.raises(DataError, match=r"CIFAR-10 not found .*EQPROP_DATA.*--data-dir"):
        load_cifar10("train")
    with pytest.raises(ValueError, match="split='val'"):
        load_cifar10("val")


def test_augment_crops_and_flips():
    rng = np.random.default_rng(1)
    x = rng.random((64, 3072), dtype=np.float32)
    np.testing.assert_array_equal(augment(x, rng, pad=0, flip=False), x)
    a = augment(x, np.random.default_rng(2), pad=4)
    assert a.shape == x.shape and not np.array_equal(a, x)
    img, out = x.reshape(64, 3, 32, 32), a.reshape(64, 3, 32, 32)
    # every output is a (possibly flipped) shifted window of its own padded input
    padded = np.pad(img, ((0, 0), (0, 0), (4, 4), (4, 4)))
    for i in range(64):
        found = any(np.array_equal(o, padded[i, :, dy:dy + 32, dx:dx + 32])
                    for dy in range(9) for dx in range(9) for o in (out[i], out[i][:, :, ::-1]))
        assert found, i

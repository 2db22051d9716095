"""Real MNIST / Fashion-MNIST loading, verification errors and the look-up order (never downloads)."""
import dataclasses
import gzip
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest

from tracks import data
from tracks.data import DataError, load_dataset, train_val_split

TEST_IMAGES, TEST_LABELS = "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"
# Canonical label histogram of the MNIST test set (LeCun et al.).
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
FASHION_TEST_FIRST = [9, 2, 1, 1, 6]
# Tests about Debian's package run only where it is installed (CI installs it when root).
needs_debian_fashion = pytest.mark.skipif(
    not data.DEBIAN_FASHION_DIR.is_dir(),
    reason=f"{data.DEBIAN_FASHION_DIR} absent (Debian package dataset-fashion-mnist not installed)")


@pytest.fixture(autouse=True)
def _no_download(monkeypatch, tmp_path):
    monkeypatch.setenv("EQPROP_NO_DOWNLOAD", "1")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))


def _located_dir(name: str) -> Path:
    """The folder holding the real test split, found through the documented look-up order
    ($EQPROP_DATA, which tests/conftest.py points at ../shared/data when it exists, ...)."""
    try:
        return data.locate(name, "test")[1].parent
    except DataError as e:
        pytest.fail(f"real {name} data needed (set EQPROP_DATA or provide ../shared/data):\n{e}")


@pytest.fixture
def mnist_dir():
    return _located_dir("mnist")


def _copy_split(src: Path, dst: Path) -> Path:
    dst.mkdir(parents=True, exist_ok=True)
    for f in (TEST_IMAGES, TEST_LABELS):
        shutil.copyfile(src / f, dst / f)
    return dst


def _labels_bytes(src: Path) -> bytes:
    return gzip.decompress((src / TEST_LABELS).read_bytes())


def test_mnist_test_split(mnist_dir):
    x, y = load_dataset("mnist", "test", data_dir=mnist_dir.parent)
    assert x.shape == (10000, 784) and x.dtype == np.float32
    assert y.shape == (10000,) and y.dtype == np.int64
    assert x.min() == 0.0 and x.max() == 1.0
    assert y[:5].tolist() == [7, 2, 1, 0, 4]
    assert np.bincount(y, minlength=10).tolist() == MNIST_TEST_COUNTS


def test_mnist_train_split(mnist_dir):
    x, y = load_dataset("mnist", "train", data_dir=mnist_dir)  # the folder itself is accepted too
    assert x.shape == (60000, 784) and y.shape == (60000,)
    assert y[:5].tolist() == [5, 0, 4, 1, 9]
    assert set(np.unique(y).tolist()) == set(range(10))


def test_returns_fresh_arrays(mnist_dir):
    x1, y1 = load_dataset("mnist", "test", data_dir=mnist_dir)
    x1[:] = -1.0
    y1[:] = -1
    x2, y2 = load_dataset("mnist", "test", data_dir=mnist_dir)
    assert x2.min() == 0.0 and y2[0] == 7


def _check_fashion_test(x, y):
    assert x.shape == (10000, 784) and x.dtype == np.float32 and y.dtype == np.int64
    assert np.bincount(y, minlength=10).tolist() == [1000] * 10
    assert 0.0 <= x.min() and x.max() <= 1.0
    assert y[:5].tolist() == FASHION_TEST_FIRST


def test_fashion_mnist_found_through_lookup_order():
    _check_fashion_test(*load_dataset("fashion_mnist", "test"))


def test_fashion_mnist_falls_through_to_system_dir(monkeypatch, tmp_path):
    """An empty $EQPROP_DATA and cache fall through to the distribution package's folder (here a copy)."""
    system = _copy_split(_located_dir("fashion_mnist"), tmp_path / "system")
    info = data.DATASETS["fashion_mnist"]
    monkeypatch.setitem(data.DATASETS, "fashion_mnist", dataclasses.replace(info, system_dirs=(system,)))
    monkeypatch.setenv("EQPROP_DATA", str(tmp_path / "empty"))
    assert data.locate("fashion_mnist", "test")[1].parent == system
    _check_fashion_test(*load_dataset("fashion_mnist", "test"))


@needs_debian_fashion
def test_fashion_mnist_from_debian_package():
    _check_fashion_test(*load_dataset("fashion_mnist", "test", data_dir=data.DEBIAN_FASHION_DIR))


@needs_debian_fashion
def test_fashion_mnist_found_without_arguments(monkeypatch, tmp_path):
    monkeypatch.setenv("EQPROP_DATA", str(tmp_path))  # nothing there: falls through to the package
    x, y = load_dataset("fashion_mnist", "test")
    assert x.shape == (10000, 784)


def test_missing_lists_every_place(tmp_path, monkeypatch):
    monkeypatch.setenv("EQPROP_DATA", str(tmp_path / "envroot"))
    with pytest.raises(DataError) as e:
        load_dataset("mnist", "test", data_dir=tmp_path / "argroot")
    msg = str(e.value)
    for place in (tmp_path / "argroot" / "mnist", tmp_path / "argroot", tmp_path / "envroot",
                  tmp_path / "xdg-cache" / "eqprop-hwsim"):
        assert str(place) in msg
    assert "EQPROP_DATA" in msg and "--data-dir" in msg and "Download disabled" in msg


def test_missing_fashion_mentions_apt_package(tmp_path):
    msg = data._missing_message(data.DATASETS["fashion_mnist"], "test", tmp_path)
    assert "apt-get install dataset-fashion-mnist" in msg and str(tmp_path) in msg


def test_truncated_gzip(mnist_dir, tmp_path):
    d = _copy_split(mnist_dir, tmp_path / "mnist")
    blob = (mnist_dir / TEST_LABELS).read_bytes()
    (d / TEST_LABELS).write_bytes(blob[: len(blob) // 2])
    with pytest.raises(DataError, match="truncated") as e:
        load_dataset("mnist", "test", data_dir=tmp_path)
    assert TEST_LABELS in str(e.value)


def test_not_gzip(mnist_dir, tmp_path):
    d = _copy_split(mnist_dir, tmp_path / "mnist")
    (d / TEST_LABELS).write_bytes(b"<html>404 not found</html>")
    with pytest.raises(DataError, match="not a valid gzip"):
        load_dataset("mnist", "test", data_dir=tmp_path)


def test_bad_magic(mnist_dir, tmp_path):
    d = _copy_split(mnist_dir, tmp_path / "mnist")
    raw = bytearray(_labels_bytes(mnist_dir))
    raw[:4] = struct.pack(">I", 0x00000803)
    (d / TEST_LABELS).write_bytes(gzip.compress(bytes(raw)))
    with pytest.raises(DataError, match="magic") as e:
        load_dataset("mnist", "test", data_dir=tmp_path)
    assert TEST_LABELS in str(e.value)


def test_wrong_count(mnist_dir, tmp_path):
    d = _copy_split(mnist_dir, tmp_path / "mnist")
    raw = _labels_bytes(mnist_dir)
    raw = raw[:4] + struct.pack(">I", 9999) + raw[8:-1]
    (d / TEST_LABELS).write_bytes(gzip.compress(raw))
    with pytest.raises(DataError, match="9999 examples"):
        load_dataset("mnist", "test", data_dir=tmp_path)


def test_md5_mismatch(mnist_dir, tmp_path):
    d = _copy_split(mnist_dir, tmp_path / "mnist")
    raw = bytearray(_labels_bytes(mnist_dir))
    raw[8] = 3  # first label 7 -> 3: structurally valid, wrong content
    (d / TEST_LABELS).write_bytes(gzip.compress(bytes(raw)))
    with pytest.raises(DataError, match="MD5") as e:
        load_dataset("mnist", "test", data_dir=tmp_path)
    assert TEST_LABELS in str(e.value)


def test_regzipped_and_uncompressed_copies_accepted(mnist_dir, tmp_path):
    d = tmp_path / "mnist"
    d.mkdir()
    shutil.copyfile(mnist_dir / TEST_IMAGES, d / TEST_IMAGES)
    (d / TEST_LABELS[:-3]).write_bytes(_labels_bytes(mnist_dir))  # decompressed twin
    x, y = load_dataset("mnist", "test", data_dir=tmp_path)
    assert y[:5].tolist() == [7, 2, 1, 0, 4]


def test_mnist_files_offered_as_fashion(mnist_dir, tmp_path):
    _copy_split(mnist_dir, tmp_path / "fashion_mnist")
    with pytest.raises(DataError, match="It is the MNIST file"):
        load_dataset("fashion_mnist", "test", data_dir=tmp_path)


def test_argument_beats_env(mnist_dir, tmp_path, monkeypatch):
    bad = _copy_split(mnist_dir, tmp_path / "bad" / "mnist")
    (bad / TEST_LABELS).write_bytes(b"junk")
    good = _copy_split(mnist_dir, tmp_path / "good" / "mnist")
    monkeypatch.setenv("EQPROP_DATA", str(tmp_path / "bad"))
    x, y = load_dataset("mnist", "test", data_dir=tmp_path / "good")
    assert y[0] == 7
    monkeypatch.setenv("EQPROP_DATA", str(tmp_path / "good"))
    with pytest.raises(DataError) as e:
        load_dataset("mnist", "test", data_dir=tmp_path / "bad")
    assert str(bad) in str(e.value)
    assert good.is_dir()


def test_env_beats_cache(mnist_dir, tmp_path, monkeypatch):
    cache = tmp_path / "xdg-cache" / "eqprop-hwsim" / "mnist"
    _copy_split(mnist_dir, cache)
    (cache / TEST_LABELS).write_bytes(b"junk")
    _copy_split(mnist_dir, tmp_path / "env" / "mnist")
    monkeypatch.setenv("EQPROP_DATA", str(tmp_path / "env"))
    assert load_dataset("mnist", "test")[1][0] == 7


def test_unknown_name_and_split():
    with pytest.raises(DataError, match="fashion_mnist"):
        load_dataset("cifar10", "test")
    with pytest.raises(DataError, match="train_val_split"):
        load_dataset("mnist", "val")


def test_train_val_split_disjoint_and_seeded():
    x = np.arange(100, dtype=np.float32)[:, None]
    y = np.arange(100)
    xt, yt, xv, yv = train_val_split(x, y, n_val=20, seed=1)
    assert len(yv) == 20 and len(yt) == 80
    assert not set(yt.tolist()) & set(yv.tolist())
    assert np.array_equal(xv[:, 0], yv.astype(np.float32))
    assert np.array_equal(train_val_split(x, y, 20, seed=1)[3], yv)
    assert not np.array_equal(train_val_split(x, y, 20, seed=2)[3], yv)
    with pytest.raises(ValueError, match="n_val"):
        train_val_split(x, y, n_val=100, seed=0)


def _local_mirror_info(mirror: Path):
    info = data.DATASETS["mnist"]
    return data.DatasetInfo(name=info.name, title=info.title, subdirs=info.subdirs,
                            mirrors=(mirror.as_uri() + "/",), files=info.files, n_examples=info.n_examples)


def test_download_verifies_then_renames(mnist_dir, tmp_path):
    mirror = _copy_split(mnist_dir, tmp_path / "mirror")
    dest = tmp_path / "cache" / "mnist"
    got = data._download(_local_mirror_info(mirror), dest, TEST_LABELS)
    assert got == dest / TEST_LABELS and got.read_bytes() == (mnist_dir / TEST_LABELS).read_bytes()
    assert sorted(p.name for p in dest.iterdir()) == [TEST_LABELS]


def test_download_rejects_corrupt_and_leaves_nothing(mnist_dir, tmp_path):
    mirror = _copy_split(mnist_dir, tmp_path / "mirror")
    (mirror / TEST_LABELS).write_bytes(b"corrupt")
    dest = tmp_path / "cache" / "mnist"
    with pytest.raises(DataError, match="MD5"):
        data._download(_local_mirror_info(mirror), dest, TEST_LABELS)
    assert list(dest.iterdir()) == []

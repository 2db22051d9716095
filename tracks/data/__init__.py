"""Real MNIST and Fashion-MNIST from the standard IDX files, verified by MD5.

``load_dataset(name, split)`` returns ``x`` float32 ``(N, 784)`` in ``[0, 1]`` and ``y`` int64 ``(N,)``.
Files are looked up, in this order (the first folder holding both files of the split wins):

1. the ``data_dir`` argument (``run_suite.py --data-dir``),
2. the environment variable ``EQPROP_DATA``,
3. the user cache ``$XDG_CACHE_HOME/eqprop-hwsim`` (default ``~/.cache/eqprop-hwsim``),
4. for Fashion-MNIST, ``/usr/share/datasets/fashion-mnist`` (Debian package ``dataset-fashion-mnist``),
5. a download from the canonical mirrors into the user cache (disable with ``EQPROP_NO_DOWNLOAD=1``).

Under each root ``R`` the folders ``R/mnist/`` (or ``R/fashion_mnist/``, ``R/fashion-mnist/``) and
``R`` itself are accepted, holding ``train-images-idx3-ubyte.gz`` etc. (gzipped or not).

Every file is checked: the IDX magic number, dimensions and length, the example count of the split,
and the MD5 of the *decompressed* bytes against the canonical value (re-gzipped copies such as
Debian's have a different ``.gz`` MD5 but the same content). Any problem raises :class:`DataError`
naming the file and the fix.

>>> sorted(DATASETS)
['fashion_mnist', 'mnist']
>>> x, y = np.zeros((10, 784), np.float32), np.arange(10)
>>> x_tr, y_tr, x_val, y_val = train_val_split(x, y, n_val=3, seed=0)
>>> x_tr.shape, x_val.shape, sorted(np.concatenate([y_tr, y_val]).tolist()) == list(range(10))
((7, 784), (3, 784), True)
"""
from __future__ import annotations

import functools
import gzip
import hashlib
import logging
import os
import struct
import tempfile
import urllib.request
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger("eqprop_hwsim.tracks.data")

ENV_DATA = "EQPROP_DATA"
ENV_NO_DOWNLOAD = "EQPROP_NO_DOWNLOAD"
DEBIAN_FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
SPLITS = ("train", "test")
N_PIXELS = 784
N_CLASSES = 10


@dataclass(frozen=True)
class _FileInfo:
    """One canonical IDX file: its MD5 as distributed (gzipped) and of its decompressed bytes."""

    md5_gz: str
    md5_raw: str


@dataclass(frozen=True)
class DatasetInfo:
    """Where a dataset lives and what its files must hash to."""

    name: str
    title: str
    subdirs: tuple[str, ...]  # folder names accepted under a root
    mirrors: tuple[str, ...]  # base URLs, tried in order
    files: dict[str, _FileInfo]  # canonical file name (with .gz) -> checksums
    n_examples: dict[str, int]  # split -> count
    system_dirs: tuple[Path, ...] = ()  # distribution packages


_SPLIT_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}

# MNIST: .gz MD5s from /work/shared/data/mnist/MD5SUMS (the canonical LeCun files); raw MD5s are the
# widely published decompressed values (see that folder's SOURCES.md), re-checked on those files.
_MNIST_FILES = {
    "train-images-idx3-ubyte.gz": _FileInfo("f68b3c2dcbeaaa9fbdd348bbdeb94873", "6bbc9ace898e44ae57da46a324031adb"),
    "train-labels-idx1-ubyte.gz": _FileInfo("d53e105ee54ea40749a09fcbcd1e9432", "a25bea736e30d166cdddb491f175f624"),
    "t10k-images-idx3-ubyte.gz": _FileInfo("9fb629c4189551a2d022fa330f9573f3", "2646ac647ad5339dbf082846283269ea"),
    "t10k-labels-idx1-ubyte.gz": _FileInfo("ec29112dd5afa0611ce80d1b7f02629c", "27ae3e4e09519cfbb04c329615203637"),
}
# Fashion-MNIST: .gz MD5s from the README of zalandoresearch/fashion-mnist; raw MD5s as published in
# torchvision-style loaders, and equal to the decompressed Debian dataset-fashion-mnist files.
_FASHION_FILES = {
    "train-images-idx3-ubyte.gz": _FileInfo("8d4fb7e6c68d591d4c3dfef9ec88bf0d", "f4a8712d7a061bf5bd6d2ca38dc4d50a"),
    "train-labels-idx1-ubyte.gz": _FileInfo("25c81989df183df01b3e8a0aad5dffbe", "9018921c3c673c538a1fc5bad174d6f9"),
    "t10k-images-idx3-ubyte.gz": _FileInfo("bef4ecab320f06d8554ea6380940ec79", "8181f5470baa50b63fa0f6fddb340f0a"),
    "t10k-labels-idx1-ubyte.gz": _FileInfo("bb300cfdad3c16e7a12a480ee83cd310", "15d484375f8d13e6eb1aabb0c3f46965"),
}

DATASETS: dict[str, DatasetInfo] = {
    "mnist": DatasetInfo(
        name="mnist", title="MNIST", subdirs=("mnist", "MNIST"),
        mirrors=("https://ossci-datasets.s3.amazonaws.com/mnist/",
                 "https://storage.googleapis.com/cvdf-datasets/mnist/"),
        files=_MNIST_FILES, n_examples={"train": 60000, "test": 10000},
    ),
    "fashion_mnist": DatasetInfo(
        name="fashion_mnist", title="Fashion-MNIST",
        subdirs=("fashion_mnist", "fashion-mnist", "FashionMNIST"),
        mirrors=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
        files=_FASHION_FILES, n_examples={"train": 60000, "test": 10000},
        system_dirs=(DEBIAN_FASHION_DIR,),
    ),
}

_IDX_MAGIC = {1: 0x00000801, 3: 0x00000803}  # unsigned byte data, 1 dim (labels) / 3 dims (images)


class DataError(Exception):
    """A dataset is missing, corrupt or not the canonical one; the message says how to fix it."""


# ----------------------------------------------------------------------------- look-up


def cache_dir() -> Path:
    """The per-user cache folder (``$XDG_CACHE_HOME/eqprop-hwsim`` or ``~/.cache/eqprop-hwsim``)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "eqprop-hwsim"


def search_roots(name: str, data_dir: str | os.PathLike | None = None) -> list[tuple[str, Path]]:
    """Roots in look-up order as ``(origin, path)``; ``origin`` says why the root is searched."""
    info = _info(name)
    roots: list[tuple[str, Path]] = []
    if data_dir is not None:
        roots.append(("data_dir argument / --data-dir", Path(data_dir)))
    env = os.environ.get(ENV_DATA)
    if env:
        roots.append((f"${ENV_DATA}", Path(env)))
    roots.append(("user cache", cache_dir()))
    for d in info.system_dirs:
        roots.append(("system package", d))
    return roots


def candidate_dirs(name: str, data_dir: str | os.PathLike | None = None) -> list[tuple[str, Path]]:
    """Every folder that is searched, in order: for each root its dataset subfolders, then itself."""
    info = _info(name)
    out: list[tuple[str, Path]] = []
    for origin, root in search_roots(name, data_dir):
        for sub in info.subdirs:
            out.append((origin, root / sub))
        out.append((origin, root))
    seen: set[Path] = set()
    unique = []
    for origin, d in out:
        if d not in seen:
            seen.add(d)
            unique.append((origin, d))
    return unique


def _find_file(folder: Path, fname: str) -> Path | None:
    """``fname`` (``*.gz``) or its decompressed twin in ``folder``."""
    for p in (folder / fname, folder / fname[: -len(".gz")]):
        if p.is_file():
            return p
    return None


def locate(name: str, split: str, data_dir: str | os.PathLike | None = None,
           download: bool | None = None) -> tuple[Path, Path]:
    """Paths of ``(images, labels)`` for a split, downloading into the cache if allowed and needed.

    Raises:
        DataError: nothing found (the message lists every folder searched and how to get the files).
    """
    info = _info(name)
    _check_split(split)
    img_name, lbl_name = _SPLIT_FILES[split]
    for origin, folder in candidate_dirs(name, data_dir):
        img, lbl = _find_file(folder, img_name), _find_file(folder, lbl_name)
        if img is not None and lbl is not None:
            log.debug("%s %s: using %s (%s)", info.title, split, folder, origin)
            return img, lbl
    if download is None:
        download = os.environ.get(ENV_NO_DOWNLOAD, "").strip().lower() in ("", "0", "false", "no")
    tried_download = ""
    if download:
        try:
            dest = cache_dir() / info.subdirs[0]
            return _download(info, dest, img_name), _download(info, dest, lbl_name)
        except DataError as e:
            tried_download = f"\nDownload failed: {e}"
    else:
        tried_download = f"\nDownload disabled ({ENV_NO_DOWNLOAD} is set)."
    raise DataError(_missing_message(info, split, data_dir) + tried_download)


def _missing_message(info: DatasetInfo, split: str, data_dir) -> str:
    img_name, lbl_name = _SPLIT_FILES[split]
    lines = [f"{info.title} {split} split not found: need {img_name} and {lbl_name}. Looked in:"]
    for origin, folder in candidate_dirs(info.name, data_dir):
        lines.append(f"  - {folder}  ({origin})")
    lines.append("How to get the files:")
    lines.append(f"  - point {ENV_DATA}=/path/to/data or pass --data-dir /path/to/data, with the files in "
                 f"/path/to/data/{info.subdirs[0]}/ (or directly in /path/to/data/);")
    if info.name == "fashion_mnist":
        lines.append("  - Debian/Ubuntu: sudo apt-get install dataset-fashion-mnist "
                     f"(installs {DEBIAN_FASHION_DIR});")
    lines.append(f"  - download from {info.mirrors[0]} into {cache_dir() / info.subdirs[0]} "
                 f"(done automatically unless {ENV_NO_DOWNLOAD}=1).")
    return "\n".join(lines)


def _download(info: DatasetInfo, dest: Path, fname: str) -> Path:
    """Fetch ``fname`` into ``dest`` via a temp file, verify its MD5, then rename into place."""
    final = dest / fname
    if final.is_file():
        return final
    dest.mkdir(parents=True, exist_ok=True)
    expected = info.files[fname]
    errors = []
    for base in info.mirrors:
        url = base + fname
        fd, tmp_name = tempfile.mkstemp(prefix=f".{fname}.", suffix=".part", dir=dest)
        tmp = Path(tmp_name)
        try:
            log.info("downloading %s", url)
            h = hashlib.md5()
            with os.fdopen(fd, "wb") as f, urllib.request.urlopen(url, timeout=60) as r:
                while chunk := r.read(1 << 20):
                    h.update(chunk)
                    f.write(chunk)
            got = h.hexdigest()
            if got != expected.md5_gz:
                try:
                    raw_md5 = hashlib.md5(gzip.decompress(tmp.read_bytes())).hexdigest()
                except (OSError, EOFError, zlib.error):
                    raw_md5 = None
                if raw_md5 != expected.md5_raw:
                    raise DataError(f"{url}: MD5 {got}, expected {expected.md5_gz}")
            os.replace(tmp, final)
            return final
        except DataError as e:
            errors.append(str(e))
        except Exception as e:  # network errors of every kind: try the next mirror
            errors.append(f"{url}: {type(e).__name__}: {e}")
        finally:
            if tmp.exists():
                tmp.unlink()
    raise DataError("; ".join(errors))


# ----------------------------------------------------------------------------- parsing


_verdicts: dict[tuple[str, int, int], str] = {}  # (path, mtime_ns, size) -> verified raw md5


def _read_idx(path: Path, fname: str, info: DatasetInfo, split: str) -> np.ndarray:
    """Decompress, parse and verify one IDX file; returns a read-only uint8 array."""
    fix = (f"Replace it with the canonical file (delete it and re-run to download, or reinstall "
           f"from {info.mirrors[0]}{fname}).")
    try:
        blob = path.read_bytes()
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e}). {fix}") from None
    if path.suffix == ".gz":
        try:
            data = gzip.decompress(blob)
        except EOFError:
            raise DataError(f"{path}: truncated gzip stream ({len(blob)} bytes). {fix}") from None
        except (OSError, zlib.error) as e:
            raise DataError(f"{path}: not a valid gzip file ({e}). {fix}") from None
    else:
        data = blob
    ndim = 3 if "images" in fname else 1
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{path}: truncated IDX file ({len(data)} bytes, header needs {header}). {fix}")
    magic = struct.unpack(">I", data[:4])[0]
    if magic != _IDX_MAGIC[ndim]:
        raise DataError(f"{path}: bad IDX magic number 0x{magic:08x}, expected 0x{_IDX_MAGIC[ndim]:08x} "
                        f"({'images' if ndim == 3 else 'labels'}, unsigned bytes). Is this the right file? {fix}")
    dims = struct.unpack(f">{ndim}I", data[4:header])
    want = (info.n_examples[split], 28, 28) if ndim == 3 else (info.n_examples[split],)
    if dims[0] != want[0]:
        raise DataError(f"{path}: header says {dims[0]} examples, the {info.title} {split} split has "
                        f"{want[0]}. {fix}")
    if dims != want:
        raise DataError(f"{path}: IDX dimensions {dims}, expected {want}. {fix}")
    n_bytes = int(np.prod(dims))
    if len(data) != header + n_bytes:
        raise DataError(f"{path}: truncated or padded IDX body ({len(data) - header} bytes, expected "
                        f"{n_bytes}). {fix}")
    st = path.stat()
    key = (str(path.resolve()), st.st_mtime_ns, st.st_size)
    expected = info.files[fname].md5_raw
    if _verdicts.get(key) != expected:
        got = hashlib.md5(data).hexdigest()
        if got != expected:
            other = [d.title for d in DATASETS.values() if d.name != info.name and d.files[fname].md5_raw == got]
            hint = f" It is the {other[0]} file, not {info.title}." if other else ""
            raise DataError(f"{path}: MD5 of the decompressed content is {got}, expected {expected} "
                            f"(canonical {info.title}).{hint} {fix}")
        _verdicts[key] = expected
    arr = np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)
    return arr


@functools.lru_cache(maxsize=16)
def _load_cached(name: str, split: str, img: str, img_key: tuple, lbl: str, lbl_key: tuple):
    """Parsed uint8 images and int64 labels; cached per (path, mtime, size) so edits invalidate it."""
    info = DATASETS[name]
    img_name, lbl_name = _SPLIT_FILES[split]
    images = _read_idx(Path(img), img_name, info, split)
    labels = _read_idx(Path(lbl), lbl_name, info, split).astype(np.int64)
    if labels.max(initial=0) >= N_CLASSES:
        raise DataError(f"{lbl}: label {int(labels.max())} out of range 0..{N_CLASSES - 1}.")
    images.flags.writeable = False
    labels.flags.writeable = False
    return images, labels


def _stat_key(p: Path) -> tuple:
    st = p.stat()
    return (st.st_mtime_ns, st.st_size)


def load_dataset(name: str, split: str, data_dir: str | os.PathLike | None = None
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Load a split of MNIST or Fashion-MNIST.

    Args:
        name: ``"mnist"`` or ``"fashion_mnist"``.
        split: ``"train"`` (60000) or ``"test"`` (10000). Carve validation data from train with
            :func:`train_val_split`; the test split is only for reported accuracy.
        data_dir: searched first (see the module docstring for the full look-up order).

    Returns:
        ``(x, y)``: ``x`` float32 ``(N, 784)`` with values ``pixel / 255`` in ``[0, 1]``, ``y`` int64
        ``(N,)`` in ``0..9``. Fresh arrays each call (the parsed bytes are cached in-process).

    Raises:
        DataError: missing, corrupt or non-canonical files; the message names the file and the fix.
    """
    info = _info(name)
    _check_split(split)
    img, lbl = locate(name, split, data_dir)
    try:
        images, labels = _load_cached(name, split, str(img), _stat_key(img), str(lbl), _stat_key(lbl))
    except OSError as e:
        raise DataError(f"{info.title} {split}: cannot read {e.filename}: {e.strerror}") from None
    x = images.reshape(len(images), N_PIXELS).astype(np.float32) / np.float32(255.0)
    return x, labels.copy()


def train_val_split(x: np.ndarray, y: np.ndarray, n_val: int, seed: int
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Random disjoint split of a training set: returns ``(x_train, y_train, x_val, y_val)``.

    The permutation comes from ``np.random.default_rng(seed)``, so the same seed gives the same split.
    """
    n = len(x)
    if len(y) != n:
        raise ValueError(f"x has {n} rows but y has {len(y)}")
    if not 0 < n_val < n:
        raise ValueError(f"n_val={n_val} must be in 1..{n - 1} for {n} examples")
    perm = np.random.default_rng(seed).permutation(n)
    val, tr = perm[:n_val], perm[n_val:]
    return x[tr], y[tr], x[val], y[val]


def _info(name: str) -> DatasetInfo:
    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r}; valid: {sorted(DATASETS)}")
    return DATASETS[name]


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}; valid: {list(SPLITS)} (carve validation data from "
                        f"'train' with train_val_split)")

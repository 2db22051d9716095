"""A model cache inside the run folder: each trained model is trained once per run and shared by tracks.

A model is named by a *key*: a JSON-able dict of everything that defines it (data set and the hash of
the training slice, architecture/config, recipe, seed, trainer). The cache adds the versions that can
change the trained weights (this package, torch, numpy, the checkpoint format) and hashes the canonical
JSON; the same key in two tracks of one run loads the first track's model instead of training again.

Files (``<run>/model_cache/``): ``<label>_<hash16>.pt`` is a :mod:`models.checkpoint` checkpoint (the
one checkpoint format: ``export`` and ``sweep --model`` read it) and ``<label>_<hash16>.json`` its
sidecar ``{"key": {...}, "sha256": <of the .pt bytes>, "seconds": <training time>}``. Both are written
atomically (temporary file, then rename) and the sidecar last, so a killed training leaves no entry.
An entry whose checkpoint is missing, whose bytes do not match the sidecar's SHA-256, whose sidecar
key differs from the key asked for, or which does not load, is *corrupt*: it is logged and warned
about (``CorruptCacheWarning``), moved aside to ``*.corrupt``, and the model is trained again; a
corrupt entry is never used. A ``train_fn`` taking ``resumable`` gets a per-epoch running checkpoint
(:class:`Resumable`): a training killed mid-way continues from its last finished epoch.

>>> import tempfile, warnings
>>> from models.eqprop_mlp import EqPropConfig, EqPropMLP
>>> cache = ModelCache(tempfile.mkdtemp())
>>> key = {"dataset": "demo", "sizes": [4, 3, 2], "seed": 0}
>>> net = cache.get_or_train(key, lambda: EqPropMLP(EqPropConfig(sizes=(4, 3, 2)), seed=0), label="demo")
>>> again = cache.get_or_train(key, lambda: 1 / 0, label="demo")  # loaded: train_fn is not called
>>> bool((again.layers[0].weight == net.layers[0].weight).all()), cache.stats()
(True, {'trained': 1, 'loaded': 1, 'corrupt': 0})
"""
from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
import os
import re
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np

log = logging.getLogger("eqprop_hwsim.tracks")

CACHE_DIR_NAME = "model_cache"
_LABEL = re.compile(r"^[A-Za-z0-9_-]{1,60}$")


class CorruptCacheWarning(UserWarning):
    """A cache entry failed its checks and was retrained (never used)."""


class CacheKeyError(ValueError):
    """A cache key is not a dict of JSON values (the message names the bad field)."""


def array_digest(*arrays: Any) -> str:
    """SHA-256 (hex) of the arrays' dtypes, shapes and bytes: the identity of a training slice.

    >>> a = np.arange(6, dtype=np.uint8)
    >>> array_digest(a) == array_digest(a.copy()) != array_digest(a.reshape(2, 3))
    True
    """
    h = hashlib.sha256()
    for a in arrays:
        if hasattr(a, "detach"):  # torch tensor
            a = a.detach().cpu().numpy()
        a = np.ascontiguousarray(np.asarray(a))
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def training_key(*, dataset: str, x: Any, y: Any, model: dict[str, Any], trainer: str, recipe: dict[str, Any],
                 seed: int, device: str = "cpu", split: str = "train") -> dict[str, Any]:
    """The shared key layout, so two tracks training the same model get the same entry.

    ``dataset``/``split`` name the data, ``x``/``y`` the exact training slice (hashed with
    :func:`array_digest`, with its length), ``model`` the model class and config (e.g. ``{"class":
    "EqPropMLP", "sizes": [784, 512, 10]}``), ``trainer`` the dotted name of the training function,
    ``recipe`` its settings (epochs, lr, beta, batch size, ...), ``seed`` the training seed, ``device``
    where it trains (float results differ between devices).

    >>> k = training_key(dataset="d", x=np.zeros((2, 3)), y=np.zeros(2), model={"sizes": [3, 2]},
    ...                  trainer="t.train", recipe={"epochs": 1}, seed=0)
    >>> k["n"], len(k["data_sha256"])
    (2, 64)
    """
    return {"dataset": str(dataset), "split": str(split), "n": int(len(x)), "data_sha256": array_digest(x, y),
            "model": model, "trainer": str(trainer), "recipe": recipe, "seed": int(seed), "device": str(device)}


def code_versions() -> dict[str, str]:
    """Versions that can change trained weights: this package, torch, numpy, the checkpoint format."""
    import torch

    from models.checkpoint import VERSION

    try:
        pkg = importlib.metadata.version("eqprop-hwsim")
    except importlib.metadata.PackageNotFoundError:
        pkg = "unknown"
    return {"eqprop_hwsim": pkg, "torch": str(torch.__version__), "numpy": str(np.__version__),
            "checkpoint_format": str(VERSION)}


def _canonical(key: dict[str, Any]) -> str:
    if not isinstance(key, dict) or not key:
        raise CacheKeyError(f"model cache key {key!r}: expected a non-empty dict of what defines the model "
                            "(dataset, data hash, sizes, recipe, seed)")

    def check(v: Any, where: str) -> Any:
        if isinstance(v, (list, tuple)):
            return [check(x, f"{where}[{i}]") for i, x in enumerate(v)]
        if isinstance(v, dict):
            return {str(k): check(x, f"{where}.{k}") for k, x in v.items()}
        if isinstance(v, np.generic):
            v = v.item()
        if isinstance(v, float) and not np.isfinite(v):
            raise CacheKeyError(f"model cache key field {where}={v!r} is not finite; give a finite number")
        if isinstance(v, str):
            return str(v)  # plain str (torch.__version__ is a subclass torch.load refuses)
        if v is None or isinstance(v, (bool, int, float)):
            return v
        raise CacheKeyError(f"model cache key field {where} is a {type(v).__name__}; allowed: str, int, float, "
                            "bool, None, lists and dicts of them (hash arrays with array_digest)")

    return json.dumps(check(key, "key"), sort_keys=True, separators=(",", ":"))


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _write_text_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


class Resumable:
    """Handed to a ``train_fn(resumable)`` that can train in epochs: pass ``checkpoint=r.path,
    resume=True, epoch_callback=r.epoch_callback`` to :func:`models.train.train`. Training writes a
    running checkpoint ``<entry>.partial.pt`` after every epoch and the callback records its SHA-256 in
    ``<entry>.partial.json``; a training killed mid-way continues from its last epoch on the next call
    (a resumed run), and a partial checkpoint whose bytes do not match is discarded with a warning."""

    def __init__(self, path: Path, user_callback: Callable[..., Any] | None = None):
        self.path = path
        self.sidecar = path.with_suffix(".json")
        self._user = user_callback

    def epoch_callback(self, epoch: int, history: Any) -> None:
        if self.path.is_file():
            _write_text_atomic(self.sidecar, json.dumps({"sha256": _sha256_file(self.path), "epoch": epoch + 1}))
        if self._user is not None:
            self._user(epoch, history)

    def chain(self, callback: Callable[..., Any] | None) -> "Resumable":
        """Also call ``callback(epoch, history)`` after each epoch (after the checksum is recorded)."""
        self._user = callback
        return self

    def check(self) -> str | None:
        """None if there is no partial checkpoint or it is sound, else what is wrong."""
        if not self.path.exists():
            return None
        try:
            meta = json.loads(self.sidecar.read_text(encoding="utf-8"))
            ok = _sha256_file(self.path) == meta["sha256"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            return f"partial checkpoint without a readable checksum ({type(e).__name__})"
        return None if ok else "partial checkpoint SHA-256 differs from the one recorded after its epoch"

    def discard(self) -> None:
        for p in (self.path, self.sidecar):
            if p.exists():
                p.unlink()


class ModelCache:
    """Train-once cache of :mod:`models.checkpoint` models in ``root`` (created on first write)."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.events: list[dict[str, Any]] = []  # one per get_or_train call: {"label", "hash", "event"}

    def full_key(self, key: dict[str, Any]) -> dict[str, Any]:
        """``key`` plus the code versions (what the hash covers)."""
        return {"model": json.loads(_canonical(key)), "code": code_versions()}

    def key_hash(self, key: dict[str, Any]) -> str:
        return hashlib.sha256(_canonical(self.full_key(key)).encode()).hexdigest()

    def paths(self, key: dict[str, Any], label: str = "model") -> tuple[Path, Path]:
        """``(checkpoint, sidecar)`` paths of ``key``."""
        if not _LABEL.match(label):
            raise ValueError(f"model cache label {label!r}: allowed: 1-60 letters, digits, - or _")
        stem = f"{label}_{self.key_hash(key)[:16]}"
        return self.root / f"{stem}.pt", self.root / f"{stem}.json"

    def stats(self) -> dict[str, int]:
        """Counts of ``trained`` (incl. retrained), ``loaded`` and ``corrupt`` entries so far."""
        return {e: sum(ev["event"] == e for ev in self.events) for e in ("trained", "loaded", "corrupt")}

    def get_or_train(self, key: dict[str, Any], train_fn: Callable[[], Any], *, label: str = "model",
                     train_config: dict[str, Any] | None = None, metrics: dict[str, Any] | None = None,
                     with_metrics: bool = False):
        """The model of ``key``: loaded from the cache if a sound entry exists, else ``train_fn()``,
        saved, and returned (``(model, metrics)`` when ``with_metrics``).

        Args:
            key: JSON-able dict of everything that defines the model (data set, ``array_digest`` of the
                training slice, sizes/config, recipe, seed, trainer name).
            train_fn: ``train_fn()`` or, if it has a parameter named ``resumable``,
                ``train_fn(resumable=Resumable)`` (per-epoch running checkpoint, see :class:`Resumable`);
                returns the trained model (a class :mod:`models.checkpoint` can save), or
                ``(model, metrics)`` with a dict of what training measured (history, validation
                accuracy: tensors, numbers, lists, dicts), stored in the checkpoint and returned again
                when the model is loaded.
            with_metrics: return ``(model, metrics)`` (the stored ``metrics`` merged with what
                ``train_fn`` returned) instead of the model.
            label: file-name prefix (``[A-Za-z0-9_-]``), e.g. ``"mlp_mnist"``.
            train_config, metrics: stored in the checkpoint beside the key (the key is stored as the
                checkpoint's ``train_config["cache_key"]``).

        Raises:
            CacheKeyError: ``key`` is not a dict of JSON values.
            models.checkpoint.CheckpointError: ``train_fn`` returned a model the checkpoint cannot save.
        """
        from models.checkpoint import CheckpointError, load_checkpoint, save_checkpoint

        full = self.full_key(key)
        ckpt, side = self.paths(key, label)
        h = ckpt.stem.rsplit("_", 1)[-1]
        if ckpt.exists() or side.exists():
            problem = self._check(ckpt, side, full)
            if problem is None:
                try:
                    model, meta = load_checkpoint(ckpt)
                except CheckpointError as e:
                    problem = str(e)
                else:
                    log.info("model cache: loaded %s", ckpt)
                    self.events.append({"label": label, "hash": h, "event": "loaded"})
                    return (model, dict(meta.get("metrics") or {})) if with_metrics else model
            msg = (f"model cache entry {ckpt} is corrupt ({problem}); moved aside to *.corrupt and retraining "
                   "(a corrupt entry is never used)")
            log.warning(msg)
            warnings.warn(msg, CorruptCacheWarning, stacklevel=2)
            self.events.append({"label": label, "hash": h, "event": "corrupt"})
            for p in (ckpt, side):
                if p.exists():
                    os.replace(p, p.with_name(p.name + ".corrupt"))
        t0 = time.perf_counter()
        import inspect
        try:
            takes_resumable = "resumable" in inspect.signature(train_fn).parameters
        except (TypeError, ValueError):
            takes_resumable = False
        resumable = None
        if takes_resumable:
            self.root.mkdir(parents=True, exist_ok=True)
            resumable = Resumable(ckpt.with_name(ckpt.stem + ".partial.pt"))
            problem = resumable.check()
            if problem is not None:
                msg = f"model cache: {resumable.path}: {problem}; discarded, training from the start"
                log.warning(msg)
                warnings.warn(msg, CorruptCacheWarning, stacklevel=2)
                self.events.append({"label": label, "hash": h, "event": "corrupt"})
                resumable.discard()
            elif resumable.path.exists():
                log.info("model cache: continuing the interrupted training %s", resumable.path)
            model = train_fn(resumable=resumable)
        else:
            model = train_fn()
        trained_metrics: dict[str, Any] = {}
        if isinstance(model, tuple):
            if len(model) != 2 or not isinstance(model[1], dict):
                raise TypeError("train_fn returned a tuple; expected a model or (model, metrics dict)")
            model, trained_metrics = model
        seconds = time.perf_counter() - t0
        all_metrics = {**(metrics or {}), **trained_metrics}
        self.root.mkdir(parents=True, exist_ok=True)
        save_checkpoint(ckpt, model, train_config={**(train_config or {}), "cache_key": full},
                        metrics=all_metrics, overwrite=True)
        _write_text_atomic(side, json.dumps({"key": full, "sha256": _sha256_file(ckpt),
                                             "seconds": round(seconds, 3)}, indent=1, sort_keys=True) + "\n")
        if resumable is not None:
            resumable.discard()  # the finished entry replaces the running checkpoint
        log.info("model cache: trained %s in %.1f s", ckpt, seconds)
        self.events.append({"label": label, "hash": h, "event": "trained"})
        return (model, all_metrics) if with_metrics else model

    @staticmethod
    def _check(ckpt: Path, side: Path, full: dict[str, Any]) -> str | None:
        """None if the entry is sound, else what is wrong with it."""
        if not ckpt.is_file():
            return "checkpoint file missing"
        if not side.is_file():
            return "sidecar missing (training was killed before the entry was complete)"
        try:
            meta = json.loads(side.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            return f"sidecar unreadable: {e}"
        if not isinstance(meta, dict) or "sha256" not in meta or "key" not in meta:
            return "sidecar lacks sha256/key"
        if meta["key"] != json.loads(_canonical(full)):
            return "sidecar key differs from the key asked for (hash collision or edited file)"
        digest = _sha256_file(ckpt)
        if digest != meta["sha256"]:
            return f"checkpoint SHA-256 {digest[:12]} != recorded {str(meta['sha256'])[:12]}"
        return None


def train_mlp_cached(cache: "ModelCache", net, x: np.ndarray, y: np.ndarray, tcfg, *, dataset: str, seed: int,
                     label: str, progress: bool = False, train: Callable | None = None):
    """``net`` trained on ``(x, y)`` by ``train`` (default :func:`models.train.train`; a caller passes its own
    reference so that wrapping it, e.g. counting calls, takes effect) with ``tcfg`` through ``cache``
    (resumable per epoch), keyed by :func:`training_key` with the net's class and config: another track
    or a resumed run with the same data, recipe, seed and device loads it instead. Returns the net."""
    import torch

    if train is None:
        from models.train import train

    dev = next(net.parameters()).device

    def train_fn(resumable):
        train(net, torch.from_numpy(x).to(dev), torch.from_numpy(y).to(dev), tcfg, progress=progress,
              checkpoint=resumable.path, resume=True, epoch_callback=resumable.epoch_callback)
        return net

    key = training_key(dataset=dataset, x=x, y=y, model={"class": type(net).__name__, **net.config.to_dict()},
                       trainer="models.train.train", recipe=tcfg.to_dict(), seed=seed, device=str(dev))
    return cache.get_or_train(key, train_fn, label=label, train_config=tcfg.to_dict())

"""The headline model: the Track 25 networks, trained once per run and shared by every track.

The headline EqProp model is ``EqPropMLP`` 784-512-10 (one hidden layer, hard sigmoid, MSE, async
updates) trained by the Track 25 recipe (``tracks/shared/recipes.py``: tuned on validation data) on
all 55k training images left after carving the 5000-image validation split
(``train_val_split(train, n_val=5000, seed=0)``), for :data:`HEADLINE_EPOCHS` epochs, one model per
(data set, seed). Track 25 trains it (beside its baselines); the *full* variants of the hardware
tracks (3, 4, 16, 17, 19, 36, 41, 42) start from it and evaluate on the full 10k test set, so their
gaps are gaps below the model users care about. Every training goes through the run's model cache
(``ctx.model_cache``) under one key (:func:`train_key`: data set, hashes of the training and
validation slices, model class and config, the recipe's full ``TrainConfig`` incl. method and seed,
device), so a (data set, method, recipe, seed) is trained once per run whichever track asks first;
a resumed run loads it.

>>> split = headline_split_sizes()
>>> split
{'n_train': 55000, 'n_val': 5000, 'n_test': 10000}
"""
from __future__ import annotations

import logging
from typing import Any, Callable

import torch

from models.eqprop_mlp import EqPropConfig, EqPropMLP
from models.ff_mlp import FeedForwardMLP, FFConfig
from models.train import evaluate, train

from ..data import load_dataset, train_val_split
from ..harness.threads import torch_threads
from .recipes import SIZES, get_recipe, recipe_name

log = logging.getLogger("eqprop_hwsim.tracks.headline")

DATASETS = {"mnist": "mnist", "fashion_mnist": "fmnist"}  # dataset name -> recipe / metric prefix
METHODS = ("eqprop", "bptt", "ffbp")                      # recipes <prefix>_784_512_10_<method>
HEADLINE_EPOCHS = 10
N_VAL = 5000
TRAIN_THREADS = 1  # batch-100 sweeps are too small for intra-op threads; on a shared machine OpenMP
#                    worker spin-waiting multiplied CPU time several-fold (measured under load)


def headline_split_sizes() -> dict[str, int]:
    """Image counts of the headline split (MNIST and Fashion-MNIST alike)."""
    return {"n_train": 60000 - N_VAL, "n_val": N_VAL, "n_test": 10000}


def load_split(ds: str, ctx, n_train: int | None = None, n_val: int = N_VAL,
               n_test: int | None = None) -> dict[str, torch.Tensor]:
    """Training / validation / test tensors of ``ds`` on ``ctx.torch_device`` (``None``: all)."""
    if ds not in DATASETS:
        raise ValueError(f"dataset {ds!r} is invalid; allowed: {list(DATASETS)}")
    x, y = load_dataset(ds, "train", ctx.data_dir)
    x_tr, y_tr, x_val, y_val = train_val_split(x, y, n_val=n_val, seed=0)
    if n_train is not None:
        x_tr, y_tr = x_tr[:n_train], y_tr[:n_train]
    x_te, y_te = load_dataset(ds, "test", ctx.data_dir)
    if n_test is not None:
        x_te, y_te = x_te[:n_test], y_te[:n_test]
    dev = ctx.torch_device

    def t(a):
        return torch.from_numpy(a).to(dev)
    return {"x_tr": t(x_tr), "y_tr": t(y_tr), "x_val": t(x_val), "y_val": t(y_val), "x_te": t(x_te), "y_te": t(y_te)}


def make_net(method: str, seed: int) -> torch.nn.Module:
    """The untrained network of a method: FF-BP's ReLU MLP or the EqPropMLP (EqProp and BPTT)."""
    if method not in METHODS:
        raise ValueError(f"method {method!r} is invalid; allowed: {list(METHODS)}")
    if method == "ffbp":
        return FeedForwardMLP(FFConfig(sizes=SIZES), seed=seed)
    return EqPropMLP(EqPropConfig(sizes=SIZES), seed=seed)


def train_key(ds: str, method: str, seed: int, data: dict[str, torch.Tensor], cfg, net: torch.nn.Module,
              ctx) -> dict[str, Any]:
    """The model-cache key of one training: data set and the hashes of its training and validation
    slices, the model class and config, the recipe's full ``TrainConfig`` (incl. method and seed)."""
    from ..harness.model_cache import array_digest, training_key
    return training_key(dataset=ds, x=data["x_tr"], y=data["y_tr"],
                        model={"class": type(net).__name__, **net.config.to_dict()}, trainer="models.train.train",
                        recipe={**cfg.to_dict(), "method": cfg.method, "t25_method": method,
                                "val_sha256": array_digest(data["x_val"], data["y_val"])},
                        seed=seed, device=str(ctx.torch_device))


def train_method(ds: str, method: str, seed: int, data: dict[str, torch.Tensor], epochs: int, ctx,
                 hook: Callable | None = None) -> tuple[torch.nn.Module, dict[str, Any], Any]:
    """Train (or load from ``ctx.model_cache``) one (data set, method, seed) by its recipe.

    Returns ``(net, history, recipe)``. The training goes through the cache unless ``hook`` is set
    (``hook(net, method)`` before training: a broken component must never be stored or reused)."""
    cfg = get_recipe(recipe_name(DATASETS[ds], method), epochs=epochs, seed=seed)
    net = make_net(method, seed).to(ctx.torch_device)
    if hook is not None:
        hook(net, method)
        with torch_threads(TRAIN_THREADS):
            hist = train(net, data["x_tr"], data["y_tr"], cfg, x_val=data["x_val"], y_val=data["y_val"],
                         progress=ctx.progress)
        return net, hist, cfg

    def train_fn(resumable):
        with torch_threads(TRAIN_THREADS):
            h = train(net, data["x_tr"], data["y_tr"], cfg, x_val=data["x_val"], y_val=data["y_val"],
                      progress=ctx.progress, checkpoint=resumable.path, resume=True,
                      epoch_callback=resumable.epoch_callback)
        return net, {"history": h}
    net, cached = ctx.model_cache.get_or_train(train_key(ds, method, seed, data, cfg, net, ctx), train_fn,
                                               label=f"t25_{DATASETS[ds]}_{method}_s{seed}",
                                               train_config=cfg.to_dict(), with_metrics=True)
    return net.to(ctx.torch_device), cached["history"], cfg


def headline_eqprop(ctx, ds: str = "mnist", seed: int = 0, *, data: dict[str, torch.Tensor] | None = None
                    ) -> tuple[EqPropMLP, dict[str, torch.Tensor], dict[str, Any]]:
    """The headline EqProp model of (``ds``, ``seed``), its data split and a description.

    ``info``: ``description`` (one line for reports), ``recipe`` (name), ``epochs``, ``n_train``,
    ``test_acc`` (free phase, all 10k test images, the recipe's evaluation sweeps) and ``history``.
    The first call of a run trains the headline models of all of ``ctx.seeds`` (in parallel
    processes where cores allow, :func:`prefetch`); later calls load them from the cache.
    """
    data = load_split(ds, ctx) if data is None else data
    if seed in ctx.seeds:  # the run's other seeds will be asked for next: train them side by side now
        prefetch(ctx, [(ds, "eqprop", s) for s in ctx.seeds], HEADLINE_EPOCHS, splits={ds: data})
    net, hist, cfg = train_method(ds, "eqprop", seed, data, HEADLINE_EPOCHS, ctx)
    with torch_threads(TRAIN_THREADS):
        acc = evaluate(net, data["x_te"], data["y_te"], cfg.eval_steps or cfg.n_free_steps)
    name = recipe_name(DATASETS[ds], "eqprop")
    info = {"recipe": name, "epochs": HEADLINE_EPOCHS, "n_train": len(data["y_tr"]), "n_test": len(data["y_te"]),
            "test_acc": acc, "history": hist, "sizes": list(SIZES), "seed": seed, "dataset": ds,
            "description": (f"headline model: EqPropMLP {'-'.join(map(str, SIZES))} trained by recipe {name} "
                            f"({HEADLINE_EPOCHS} epochs, {len(data['y_tr'])} training images, seed {seed}; "
                            f"shared through the run's model cache), float test accuracy {acc:.4f} on "
                            f"{len(data['y_te'])} test images")}
    log.info("%s", info["description"])
    return net, data, info


# ------------------------------------------------------------------ parallel training of independent seeds
def _train_in_worker(args: dict[str, Any]) -> dict[str, Any]:
    """One training in a worker process (spawned: a fresh interpreter, one torch thread); the model
    lands in the shared cache folder, where the parent then loads it."""
    import time

    from ..harness.base import TrackContext
    from ..harness.model_cache import ModelCache

    torch.set_num_threads(TRAIN_THREADS)
    ctx = TrackContext(out_dir=args["out_dir"], data_dir=args["data_dir"], device=args["device"], progress=False,
                       model_cache=ModelCache(args["cache_root"]))
    data = load_split(args["ds"], ctx, args["n_train"], args["n_val"], args["n_test"])
    t0 = time.perf_counter()
    train_method(args["ds"], args["method"], args["seed"], data, args["epochs"], ctx)
    return {k: args[k] for k in ("ds", "method", "seed")} | {"seconds": time.perf_counter() - t0,
                                                             "events": ctx.model_cache.stats()}


def _uncached(ctx, jobs, epochs, n_train, n_val, n_test, splits=None) -> list[tuple[str, str, int]]:
    """The jobs whose model is not in ``ctx.model_cache`` yet (by its checkpoint file); ``splits``:
    data splits already loaded, by data set (the others are loaded here)."""
    out, splits = [], dict(splits or {})
    for ds, method, seed in jobs:
        if ds not in splits:
            splits[ds] = load_split(ds, ctx, n_train, n_val, n_test)
        cfg = get_recipe(recipe_name(DATASETS[ds], method), epochs=epochs, seed=seed)
        key = train_key(ds, method, seed, splits[ds], cfg, make_net(method, seed), ctx)
        if not ctx.model_cache.paths(key, f"t25_{DATASETS[ds]}_{method}_s{seed}")[0].exists():
            out.append((ds, method, seed))
    return out


def default_workers() -> int:
    """Processes for :func:`prefetch`: the cores this process may use (one torch thread each)."""
    import os
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def prefetch(ctx, jobs: list[tuple[str, str, int]], epochs: int, *, n_train: int | None = None,
             n_val: int = N_VAL, n_test: int | None = None, workers: int | None = None,
             splits: dict[str, dict[str, torch.Tensor]] | None = None) -> list[dict[str, Any]]:
    """Train the (data set, method, seed) ``jobs`` into ``ctx.model_cache`` in parallel processes.

    Independent seeds are independent trainings, so on a CPU with ``workers`` > 1 cores they run
    side by side (one torch thread each, as every training here runs); each worker trains exactly
    what :func:`train_method` would train in this process (same data, recipe, seed, single thread:
    the same weights, tested bit for bit) and writes it to the cache, from which the caller then loads
    it; jobs already cached are left out. Nothing happens with one worker, one job, or a non-CPU device
    (the caller trains in order). ``splits``: data splits the caller already loaded (by data set, for
    these split sizes), so they are not read again. A worker's failure is raised here naming its job.
    Returns one record per job trained in a worker (``seconds``, cache ``events``).
    """
    workers = default_workers() if workers is None else int(workers)
    if workers < 1:
        raise ValueError(f"workers={workers} is invalid; allowed: an int >= 1")
    if workers == 1 or len(jobs) < 2 or str(ctx.torch_device).split(":")[0] != "cpu":
        return []
    jobs = _uncached(ctx, jobs, epochs, n_train, n_val, n_test, splits)
    if len(jobs) < 2:
        return []
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor, as_completed

    from models.progress import progress

    # longest first (BPTT backpropagates through the free phase, FF-BP is cheapest), so the pool drains evenly
    order = {"bptt": 0, "eqprop": 1, "ffbp": 2}
    jobs = sorted(jobs, key=lambda j: order.get(j[1], 9))
    common = {"out_dir": str(ctx.out_dir), "data_dir": ctx.data_dir, "device": str(ctx.torch_device),
              "cache_root": str(ctx.model_cache.root), "epochs": epochs, "n_train": n_train, "n_val": n_val,
              "n_test": n_test}
    records = []
    with ProcessPoolExecutor(max_workers=min(workers, len(jobs)), mp_context=mp.get_context("spawn")) as pool, \
            progress(total=len(jobs), desc=f"training {len(jobs)} models in {min(workers, len(jobs))} processes",
                     enabled=ctx.progress) as bar:
        futs = {pool.submit(_train_in_worker, {**common, "ds": ds, "method": m, "seed": s}): (ds, m, s)
                for ds, m, s in jobs}
        for f in as_completed(futs):
            try:
                rec = f.result()
            except Exception as e:  # noqa: BLE001  (re-raised with the job named)
                raise RuntimeError(f"training {futs[f]} in a worker process failed: {e}") from e
            records.append(rec)
            log.info("prefetch: %s %s seed %d in %.1f s", rec["ds"], rec["method"], rec["seed"], rec["seconds"])
            bar.update(1)
    return records

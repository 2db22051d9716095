"""Hyperparameter search of the Track 25 training recipes, scored on validation data only.

``run_suite.py tune --family eqprop --dataset mnist --trials 12 --out tracks/shared/tuning`` runs an
Optuna study (:class:`optuna.samplers.TPESampler` seeded by ``--seed``, :class:`optuna.pruners.
MedianPruner` on the per-epoch validation accuracy) of one recipe family:

* ``eqprop``: EqPropMLP trained by EqProp (Adam, per-layer learning rates, ``beta``; T1 = 30,
  T2 = 10 sweeps, symmetric nudging, cosine schedule, batch 100 fixed);
* ``bptt``: the same EqPropMLP trained by backprop through its 30 free sweeps (optimizer, rates);
* ``ffbp``: the same-width feed-forward MLP (:class:`models.ff_mlp.FeedForwardMLP`, ReLU) trained by
  ordinary backprop with cross-entropy and Adam (rate, weight decay).

Data: only the *training* split is ever loaded. :func:`tracks.data.train_val_split` (seed
``VAL_SEED`` = 0, ``n_val`` images, the split Track 25 uses for its curves) carves the validation
images; each trial trains on the first ``n_train`` of the rest and is scored on the validation
images. The test split is never read (the tests patch the loader to raise on it).

Several initialisations per trial (``init_seeds``, ``python -m tracks.tune --init-seeds``): the score
is the mean final validation accuracy, so a recipe that stalls on some initialisations scores low.
The Fashion-MNIST EqProp study of record (:func:`main`) scores initialisation seeds 1 and 2, on which
the MNIST recipe loses a whole class on Fashion-MNIST (one hard-sigmoid output unit pushed below
``-beta`` on every image by Adam's first updates gets no nudge, hence no update, again), and adds
``warmup_steps`` (a linear rate warmup, :class:`models.train.TrainConfig`) to the search space.

Resume: the study lives in ``<out>/tune.db`` (Optuna's SQLite storage), name
``<dataset>_<sizes>_<family>``. Running the same command again continues it up to ``--trials``
finished trials in all; a study made with other inputs (data sizes, epochs, seed, search space) is
refused, naming the difference. Each run writes ``<out>/<study name>.json``: inputs, search space,
budget (trials, images, epochs, seconds), every trial, the best trial and the recipe
(``TrainConfig``) it gives; :mod:`tracks.shared.recipes` cites that file.
"""
from __future__ import annotations

import json
import logging
import math
import os
import time
from pathlib import Path
from typing import Any

import torch

from models.train import TrainConfig, train

from .data import load_dataset, train_val_split
from .harness.threads import torch_threads

log = logging.getLogger("eqprop_hwsim.tracks.tune")

FAMILIES = ("eqprop", "bptt", "ffbp")
DATASETS = {"mnist": "mnist", "fashion_mnist": "fmnist"}  # dataset -> recipe prefix
VAL_SEED = 0
FORMAT = "eqprop-hwsim.tune"

#: family -> {param: (kind, low, high) | ("categorical", choices)}; the search space of record.
SEARCH_SPACE: dict[str, dict[str, tuple]] = {
    "eqprop": {"lr_in": ("log", 1e-4, 3e-3), "lr_out_ratio": ("float", 0.25, 1.0), "beta": ("float", 0.1, 1.0)},
    "bptt": {"optimizer": ("categorical", ("sgd", "adam")), "lr_in": ("log", 1e-4, 1e-1),
             "lr_out_ratio": ("float", 0.25, 1.0)},
    "ffbp": {"lr": ("log", 1e-4, 3e-2), "weight_decay": ("log", 1e-7, 1e-3)},
}
#: optional extra dimensions (``tune(extra_space=...)``, ``--warmup-choices``): e.g. the EqProp rate warmup
EXTRA_SPACE: dict[str, dict[str, tuple]] = {
    "eqprop": {"warmup_steps": ("categorical", (0, 550))},
}
_FIXED = dict(batch_size=100, n_free_steps=30, n_nudge_steps=10, nudging="symmetric", lr_schedule="cosine")


def study_name(dataset: str, family: str, sizes: tuple[int, ...]) -> str:
    return f"{DATASETS[dataset]}_{'_'.join(map(str, sizes))}_{family}"


def recipe_from_params(family: str, params: dict[str, Any], *, epochs: int, seed: int = 0,
                       n_layers: int = 2) -> TrainConfig:
    """The :class:`TrainConfig` a trial's ``params`` stand for (per-layer rates: the first layer
    ``lr_in``, the others ``lr_in * lr_out_ratio``; ``warmup_steps`` 0 where the study did not search it)."""
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; allowed: {FAMILIES}")
    if family == "ffbp":
        return TrainConfig(method="backprop", optimizer="adam", lr=float(params["lr"]), momentum=0.0,
                           weight_decay=float(params["weight_decay"]), epochs=epochs, seed=seed, **_FIXED)
    lr = (float(params["lr_in"]),) + (float(params["lr_in"]) * float(params["lr_out_ratio"]),) * (n_layers - 1)
    if family == "eqprop":
        return TrainConfig(method="eqprop", optimizer="adam", lr=lr, momentum=0.0, beta=float(params["beta"]),
                           warmup_steps=int(params.get("warmup_steps", 0)), epochs=epochs, seed=seed, **_FIXED)
    opt = params["optimizer"]
    return TrainConfig(method="bptt", optimizer=opt, lr=lr, momentum=0.9 if opt == "sgd" else 0.0,
                       epochs=epochs, seed=seed, **_FIXED)


def make_net(family: str, sizes: tuple[int, ...], seed: int) -> torch.nn.Module:
    """The network a family trains (``EqPropMLP`` or ``FeedForwardMLP`` of widths ``sizes``)."""
    if family == "ffbp":
        from models.ff_mlp import FeedForwardMLP, FFConfig
        return FeedForwardMLP(FFConfig(sizes=sizes), seed=seed)
    from models.eqprop_mlp import EqPropConfig, EqPropMLP
    return EqPropMLP(EqPropConfig(sizes=sizes), seed=seed)


def _suggest(trial, space: dict[str, tuple]) -> dict[str, Any]:
    out = {}
    for name, spec in space.items():
        if spec[0] == "log":
            out[name] = trial.suggest_float(name, spec[1], spec[2], log=True)
        elif spec[0] == "float":
            out[name] = trial.suggest_float(name, spec[1], spec[2])
        else:
            out[name] = trial.suggest_categorical(name, list(spec[1]))
    return out


def _check(family: str, dataset: str, n_trials: int, n_train: int, n_val: int, epochs: int,
           sizes: tuple[int, ...], seed: int) -> None:
    if family not in FAMILIES:
        raise ValueError(f"--family {family!r} is invalid; allowed: {', '.join(FAMILIES)}")
    if dataset not in DATASETS:
        raise ValueError(f"--dataset {dataset!r} is invalid; allowed: {', '.join(DATASETS)}")
    for name, v, lo, hi in (("--trials", n_trials, 1, 10000), ("--epochs", epochs, 1, 1000),
                            ("--n-val", n_val, 100, 30000), ("--n-train", n_train, 100, 59900)):
        if not isinstance(v, int) or not lo <= v <= hi:
            raise ValueError(f"{name} {v!r} is invalid; allowed: an integer in {lo}..{hi}")
    if n_train + n_val > 60000:
        raise ValueError(f"--n-train {n_train} + --n-val {n_val} exceed the 60000 training images; lower one")
    if seed < 0:
        raise ValueError(f"--seed {seed} is invalid; allowed: an integer >= 0")
    if len(sizes) < 2 or sizes[0] != 784 or sizes[-1] != 10 or any(n < 1 for n in sizes):
        raise ValueError(f"--sizes {list(sizes)} is invalid; allowed: 784 H [H ...] 10 with positive widths")


def _space_json(space: dict[str, tuple]) -> dict[str, list]:
    return {k: [v[0], list(v[1])] if v[0] == "categorical" else list(v) for k, v in space.items()}


def _widens(old: dict[str, list], new: dict[str, list]) -> bool:
    """Whether search space ``new`` holds ``old`` (same parameters and kinds, ranges/choices at least as wide):
    a study may resume with a widened space (its earlier trials stay valid samples)."""
    if set(old) != set(new):
        return False
    for k, o in old.items():
        n = new[k]
        if o[0] != n[0]:
            return False
        if o[0] == "categorical":
            if not set(map(str, o[1])) <= set(map(str, n[1])):
                return False
        elif not (n[1] <= o[1] and n[2] >= o[2]):
            return False
    return True


def _jsonable(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def tune(family: str, dataset: str, out: str | os.PathLike, *, n_trials: int = 12, n_train: int = 10000,
         n_val: int = 5000, epochs: int = 3, sizes: tuple[int, ...] = (784, 512, 10), seed: int = 0,
         data_dir: str | os.PathLike | None = None, progress: bool = True, threads: int = 1,
         init_seeds: tuple[int, ...] | None = None, extra_space: dict[str, tuple] | None = None,
         enqueue: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Run (or resume) the study; returns the summary written to ``<out>/<study name>.json``.

    ``init_seeds``: each trial trains one network per seed (initialisation and shuffling seed) and
    scores the mean of their final validation accuracies (default: ``(seed,)``, one network); a
    recipe that stalls on some initialisations (a dead output unit) then scores low. The pruner sees
    seed ``k``'s epoch ``e`` as step ``k * epochs + e``. ``extra_space``: dimensions added to
    :data:`SEARCH_SPACE` (e.g. :data:`EXTRA_SPACE`). ``enqueue``: parameter sets tried first (e.g.
    the recipe in use), evaluated like any other trial. A study resumes with a *widened* search space
    (same parameters, ranges at least as wide: :func:`_widens`); the earlier spaces are kept in the
    summary's ``search_space_history``.
    """
    import optuna

    sizes = tuple(int(n) for n in sizes)
    _check(family, dataset, n_trials, n_train, n_val, epochs, sizes, seed)
    init_seeds = (seed,) if init_seeds is None else tuple(int(v) for v in init_seeds)
    if not init_seeds or any(v < 0 for v in init_seeds) or len(set(init_seeds)) != len(init_seeds):
        raise ValueError(f"--init-seeds {list(init_seeds)} is invalid; allowed: distinct integers >= 0")
    space = {**SEARCH_SPACE[family], **(extra_space or {})}
    for k, spec in (extra_space or {}).items():
        if k in SEARCH_SPACE[family] or spec[0] not in ("log", "float", "categorical"):
            raise ValueError(f"extra search dimension {k!r}: {spec} is invalid; give a new name and a kind in "
                             "log, float, categorical")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file; give a folder")
    out.mkdir(parents=True, exist_ok=True)
    name = study_name(dataset, family, sizes)
    inputs = {"family": family, "dataset": dataset, "sizes": list(sizes), "n_train": n_train, "n_val": n_val,
              "val_seed": VAL_SEED, "epochs": epochs, "sampler_seed": seed,
              "search_space": _space_json(space)}
    if init_seeds != (seed,):
        inputs["init_seeds"] = list(init_seeds)
    # an explicit storage whose engine is disposed on return: no SQLite connection is left for the garbage
    # collector to finalise later, inside whatever runs next
    storage = optuna.storages.RDBStorage(f"sqlite:///{(out / 'tune.db').resolve()}")
    try:
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        # the sampler's seed moves on with the trials already in the study (all states): a resumed study
        # seeded like the first run would draw the same random start-up trials again
        n_before = len(optuna.load_study(study_name=name, storage=storage).trials) \
            if name in [s.study_name for s in optuna.get_all_study_summaries(storage)] else 0
        study = optuna.create_study(study_name=name, storage=storage, direction="maximize", load_if_exists=True,
                                    sampler=optuna.samplers.TPESampler(seed=seed + n_before),
                                    pruner=optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=0))
        saved = study.user_attrs.get("inputs")
        history = study.user_attrs.get("search_space_history", [])
        now = json.loads(json.dumps(inputs))
        if saved is not None and saved != now and {k for k in set(saved) | set(now) if saved.get(k) != now.get(k)} \
                == {"search_space"} and _widens(saved["search_space"], now["search_space"]):
            history = history + [saved["search_space"]]
            study.set_user_attr("search_space_history", history)
            study.set_user_attr("inputs", now)
            log.info("tune %s: search space widened from %s to %s", name, saved["search_space"], now["search_space"])
            saved = now
        if saved is None:
            study.set_user_attr("inputs", inputs)
            for params in enqueue or []:
                study.enqueue_trial(params)
        elif saved != now:
            diff = {k: (saved.get(k), v) for k, v in json.loads(json.dumps(inputs)).items() if saved.get(k) != v}
            raise ValueError(f"study {name} in {out / 'tune.db'} was made with other inputs {diff} (saved, now); "
                             "rerun with the saved inputs to resume, or give another --out")
        # a trial left RUNNING by an interrupted run is not counted (it stays RUNNING in the storage)
        done_states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
        n_done = len(study.get_trials(deepcopy=False, states=done_states))
        x, y = load_dataset(dataset, "train", data_dir)  # the training split only; never "test"
        x_tr, y_tr, x_val, y_val = train_val_split(x, y, n_val=n_val, seed=VAL_SEED)
        x_tr, y_tr = torch.from_numpy(x_tr[:n_train]), torch.from_numpy(y_tr[:n_train])
        x_val, y_val = torch.from_numpy(x_val), torch.from_numpy(y_val)

        def objective(trial) -> float:
            params = _suggest(trial, space)
            finals, curves = [], []
            for k, s in enumerate(init_seeds):
                cfg = recipe_from_params(family, params, epochs=epochs, seed=s, n_layers=len(sizes) - 1)
                net = make_net(family, sizes, s)

                def report(epoch: int, hist: dict, k=k) -> None:
                    trial.report(hist["val_acc"][-1], k * epochs + epoch)
                    if trial.should_prune():
                        raise optuna.TrialPruned()
                try:
                    hist = train(net, x_tr, y_tr, cfg, x_val=x_val, y_val=y_val, progress=progress,
                                 epoch_callback=report)
                except FloatingPointError:
                    return 0.0  # diverged: the worst score, the search moves on
                finals.append(hist["val_acc"][-1])
                curves.append(hist["val_acc"])
            trial.set_user_attr("val_acc_curve", curves[0] if len(curves) == 1 else curves)
            if len(finals) > 1:
                trial.set_user_attr("val_acc_per_seed", dict(zip(map(str, init_seeds), finals)))
            return sum(finals) / len(finals)

        t0 = time.perf_counter()
        n_new = max(0, n_trials - n_done)
        with torch_threads(threads):
            if n_new:
                study.optimize(objective, n_trials=n_new)
        seconds = time.perf_counter() - t0
        trials = [{"number": t.number, "state": t.state.name, "value": _jsonable(t.value), "params": t.params,
                   **({"val_acc_per_seed": t.user_attrs["val_acc_per_seed"]} if "val_acc_per_seed" in t.user_attrs
                      else {}),
                   "val_acc_curve": t.user_attrs.get("val_acc_curve", list(t.intermediate_values.values())),
                   "seconds": (t.datetime_complete - t.datetime_start).total_seconds()
                   if t.datetime_complete and t.datetime_start else None} for t in study.trials]
        best = study.best_trial
        recipe = recipe_from_params(family, best.params, epochs=epochs, seed=0, n_layers=len(sizes) - 1)
        prev = {}
        path = out / f"{name}.json"
        if path.exists():
            prev = json.loads(path.read_text())
        budget = {"trials_requested": n_trials, "trials_finished": sum(t["state"] in ("COMPLETE", "PRUNED") for t in trials),
                  "trials_pruned": sum(t["state"] == "PRUNED" for t in trials),
                  "train_images_per_trial": n_train, "val_images": n_val, "epochs_per_trial": epochs,
                  "seconds_this_run": round(seconds, 1),
                  "seconds_all_runs": round(prev.get("budget", {}).get("seconds_all_runs", 0.0) + seconds, 1),
                  "threads": threads}
        summary = {"format": FORMAT, "study": name, "storage": str(out / "tune.db"), "inputs": inputs,
                   "data": ("training split only: tracks.data.train_val_split(train, n_val, seed=0); trials train on "
                            "the first n_train of the rest and are scored on the n_val validation images; the test "
                            "split is never read"),
                   "sampler": f"TPESampler(seed={seed} + trials already in the study when a run starts)", "pruner": "MedianPruner(n_startup_trials=3, n_warmup_steps=0)",
                   **({"search_space_history": history} if history else {}),
                   **({"objective": f"mean final validation accuracy over init seeds {list(init_seeds)}"}
                      if len(init_seeds) > 1 else {}),
                   "budget": budget, "best_trial": {"number": best.number, "value": best.value, "params": best.params},
                   "recipe": {**recipe.to_dict(), "epochs": None}, "trials": trials}
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(summary, indent=1))
        os.replace(tmp, path)
        log.info("tune %s: best trial %d val acc %.4f %s", name, best.number, best.value, best.params)
        return summary
    finally:
        storage.engine.dispose()


__all__ = ["tune", "recipe_from_params", "make_net", "SEARCH_SPACE", "FAMILIES", "study_name"]


def main(argv: list[str] | None = None) -> int:
    """``python -m tracks.tune``: ``run_suite.py tune``'s options plus ``--init-seeds``, ``--warmup-choices``
    (adds ``warmup_steps`` to the EqProp search space) and ``--enqueue JSON`` (parameter sets tried first).
    The Fashion-MNIST EqProp study of record::

        python -m tracks.tune --family eqprop --dataset fashion_mnist --trials 8 --n-train 55000 --epochs 1 \\
            --init-seeds 1 2 --warmup-choices 0 550 --out tracks/shared/tuning \\
            --enqueue '{"lr_in": 0.0006903521707993515, "lr_out_ratio": 0.9441974787194958, "beta": 0.16393245237809825, "warmup_steps": 0}' \\
                      '{"lr_in": 0.0006903521707993515, "lr_out_ratio": 0.9441974787194958, "beta": 0.16393245237809825, "warmup_steps": 550}'
    """
    import argparse
    import sys
    p = argparse.ArgumentParser(prog="python -m tracks.tune", description=__doc__.split("\n\n")[0])
    p.add_argument("--family", required=True)
    p.add_argument("--dataset", default="mnist")
    p.add_argument("--trials", type=int, default=12)
    p.add_argument("--n-train", type=int, default=10000)
    p.add_argument("--n-val", type=int, default=5000)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--sizes", type=int, nargs="+", default=[784, 512, 10])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--init-seeds", type=int, nargs="+", help="networks per trial (mean score); default: --seed")
    p.add_argument("--warmup-choices", type=int, nargs="+", help="EqProp only: search warmup_steps over these")
    p.add_argument("--enqueue", nargs="+", default=[], help="JSON parameter sets tried first (a new study only)")
    p.add_argument("--out", default="tracks/shared/tuning")
    p.add_argument("--data-dir")
    p.add_argument("--no-progress", action="store_true")
    a = p.parse_args(argv)
    extra = None
    if a.warmup_choices:
        if a.family != "eqprop":
            print("--warmup-choices is for --family eqprop only", file=sys.stderr)
            return 2
        extra = {"warmup_steps": ("categorical", tuple(a.warmup_choices))}
    try:
        enqueue = [json.loads(e) for e in a.enqueue]
        s = tune(a.family, a.dataset, a.out, n_trials=a.trials, n_train=a.n_train, n_val=a.n_val, epochs=a.epochs,
                 sizes=tuple(a.sizes), seed=a.seed, data_dir=a.data_dir, progress=not a.no_progress,
                 init_seeds=tuple(a.init_seeds) if a.init_seeds else None, extra_space=extra, enqueue=enqueue)
    except (ValueError, json.JSONDecodeError) as e:
        print(f"python -m tracks.tune: {e}", file=sys.stderr)
        return 2
    b = s["best_trial"]
    print(f"{s['study']}: best trial {b['number']} val acc {b['value']:.4f} {b['params']} "
          f"({s['budget']['trials_finished']} trials, {s['budget']['seconds_all_runs']:.0f} s); "
          f"summary: {a.out}/{s['study']}.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

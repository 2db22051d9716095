"""Named, documented training recipes (hyperparameters) that tracks share.

A recipe is a :class:`models.train.TrainConfig` under a stable name ``<dataset>_<sizes>_<method>``
(:func:`recipe_name`); take one with :func:`get_recipe` (optionally changing fields, e.g. ``epochs``
or ``seed``) and train with :func:`models.train.train`. The recipes of Track 25 are for widths
784-512-10 (one hidden layer):

* ``*_eqprop``: ``EqPropMLP`` (hard sigmoid ``clamp(a, 0, 1)``, MSE cost, async updates, default
  init) trained by EqProp, T1 = 30 free sweeps, T2 = 10 nudged sweeps, symmetric nudging, Adam,
  per-layer rates, cosine schedule, batch 100; the Fashion-MNIST study also searched a linear rate
  warmup (``TrainConfig.warmup_steps``) and scored each trial on initialisation seeds 1 and 2, on
  which the MNIST recipe stalls on Fashion-MNIST (one output unit pushed below ``-beta`` on every
  image by Adam's first updates gets no nudge again: a whole class at 0 %); its best trial takes a
  large ``beta`` (0.90) without warmup;
* ``*_bptt``: the same ``EqPropMLP`` trained by backprop through its 30 free sweeps;
* ``*_ffbp``: the same-width feed-forward ``models.ff_mlp.FeedForwardMLP`` (ReLU) trained by ordinary
  backprop, cross-entropy, Adam, cosine schedule, batch 100.

Where the numbers come from: every recipe is the best trial of an Optuna study run by
``run_suite.py tune`` (:mod:`tracks.tune`) and saved in ``tracks/shared/tuning/<study>.json``
(search space, budget, every trial, best trial) beside its SQLite storage ``tune.db`` (the study
resumes from it). The studies score each trial on a validation split carved from the *training* set
(``train_val_split(train, n_val=5000, seed=0)``, the split Track 25 plots its curves on); the test
set was never read. The recipes are read from those files at import, so the values of record and
the study cannot drift apart; :data:`RECIPE_NOTES` names file, trial, score and budget. (The earlier
recipes, chosen by scoring on the first 2000 test images, are gone.)

A dataset without a study of its own for a method reuses the MNIST study's recipe (its note says so).

>>> cfg = get_recipe("mnist_784_512_10_eqprop", epochs=2, seed=1)
>>> cfg.method, cfg.epochs, cfg.seed, cfg.n_free_steps, cfg.n_nudge_steps, cfg.nudging, cfg.optimizer
('eqprop', 2, 1, 30, 10, 'symmetric', 'adam')
>>> get_recipe("mnist_784_512_10_ffbp").method
'backprop'
>>> sorted(RECIPES) == sorted(RECIPE_NOTES) == sorted(RECIPE_SOURCES)
True
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from models.train import TrainConfig

SIZES = (784, 512, 10)
TUNING_DIR = Path(__file__).resolve().parent / "tuning"
DEFAULT_EPOCHS = 10  # the studies score a few epochs; tracks set their own with get_recipe(..., epochs=)


def recipe_name(prefix: str, method: str, sizes: tuple[int, ...] = SIZES) -> str:
    """``<prefix>_<sizes>_<method>``, e.g. ``recipe_name("mnist", "ffbp") == "mnist_784_512_10_ffbp"``."""
    return f"{prefix}_{'_'.join(map(str, sizes))}_{method}"


def load_study(name: str, tuning_dir: Path = TUNING_DIR) -> dict[str, Any]:
    """The summary JSON of study ``name`` written by :func:`tracks.tune.tune`."""
    path = tuning_dir / f"{name}.json"
    if not path.exists():
        raise FileNotFoundError(f"no study {path}; run `run_suite.py tune` (see tracks/tune.py) to make it")
    return json.loads(path.read_text())


def _from_study(name: str, study: str) -> tuple[TrainConfig, str, dict[str, Any]]:
    s = load_study(study)
    cfg = TrainConfig.from_dict({**s["recipe"], "epochs": DEFAULT_EPOCHS, "seed": 0})
    b, bt = s["budget"], s["best_trial"]
    rel = f"tracks/shared/tuning/{study}.json"
    objective = f" ({s['objective']})" if s.get("objective") else ""
    note = (f"{rel}: best of {b['trials_finished']} trials ({b['trials_pruned']} pruned), trial {bt['number']}, "
            f"validation accuracy {bt['value']:.4f} after {b['epochs_per_trial']} epochs of "
            f"{b['train_images_per_trial']} training images, scored on {b['val_images']} validation images "
            f"carved from train{objective}; {b['seconds_all_runs']:.0f} s of search; params {bt['params']}")
    if study != name:
        note = f"no study of its own: reuses {study}. " + note
    source = {"study_file": rel, "trial": bt["number"], "val_acc": bt["value"], "budget": b, "study": study}
    return cfg, note, source


#: recipe name -> study it comes from (itself, or the MNIST study where a dataset has none)
_STUDIES = {recipe_name(p, m): recipe_name(p, m) for p in ("mnist", "fmnist") for m in ("eqprop", "bptt", "ffbp")}
for _n, _s in list(_STUDIES.items()):
    if not (TUNING_DIR / f"{_s}.json").exists():
        _STUDIES[_n] = recipe_name("mnist", _n.rsplit("_", 1)[1])

RECIPES: dict[str, TrainConfig] = {}
"""name -> TrainConfig (the hyperparameters of record)."""
RECIPE_NOTES: dict[str, str] = {}
"""name -> where the numbers come from (study file, trial, score, budget)."""
RECIPE_SOURCES: dict[str, dict[str, Any]] = {}
"""name -> the same as data: ``study_file``, ``trial``, ``val_acc``, ``budget``, ``study``."""
for _n, _s in _STUDIES.items():
    if (TUNING_DIR / f"{_s}.json").exists():
        RECIPES[_n], RECIPE_NOTES[_n], RECIPE_SOURCES[_n] = _from_study(_n, _s)


def get_recipe(name: str, **changes) -> TrainConfig:
    """The recipe ``name`` with ``changes`` applied (validated by ``TrainConfig``)."""
    if name not in RECIPES:
        raise ValueError(f"unknown recipe {name!r}; valid: {sorted(RECIPES)} (a missing tuned recipe: run "
                         "`run_suite.py tune`, see tracks/tune.py)")
    unknown = set(changes) - set(TrainConfig.__dataclass_fields__)
    if unknown:
        raise ValueError(f"get_recipe: unknown TrainConfig fields {sorted(unknown)}; "
                         f"valid: {sorted(TrainConfig.__dataclass_fields__)}")
    return dataclasses.replace(RECIPES[name], **changes)


def register_recipe(name: str, cfg: TrainConfig, note: str, *, overwrite: bool = False) -> None:
    """Add a recipe (with a note saying where its numbers come from)."""
    if not isinstance(cfg, TrainConfig):
        raise ValueError(f"register_recipe: cfg must be a TrainConfig, got {type(cfg).__name__}")
    if name in RECIPES and not overwrite:
        raise ValueError(f"recipe {name!r} exists; pass overwrite=True to replace it")
    if not note:
        raise ValueError("register_recipe: give a note saying where the hyperparameters come from")
    RECIPES[name] = cfg
    RECIPE_NOTES[name] = note
    RECIPE_SOURCES[name] = {"study_file": None, "note": note}

"""Design-space sweeps: a grid over any hardware-spec fields x models x seeds, run on Dask.

A sweep (:class:`SweepConfig`, from a TOML/JSON file or the command line) names a base spec (a preset or a
``HardwareSpec`` JSON file), a grid ``{field: [values]}`` and/or a list of points over the spec's fields
(:mod:`tracks.sweep.space`: ``analog.adc_bits``, ``weights.bits``, ``state.frac_bits``, ``sim.t_inference_s``,
...), fixed settings, models (trained here and cached, or checkpoints) and seeds. Every point is checked
before any work: the spec's own validation and the simulator's capability check, naming the field.

**A point** programs the model on the chip its spec describes and measures test accuracy:

* ``spec.analog`` set: :class:`hwsim.analog.AnalogCrossbarMLP` (ex-situ transfer: the float weights,
  quantised with ``spec.weights``, programmed with the device's noise; ``seed`` is the chip seed).
  With ``insitu.steps > 0`` the chip then learns in situ (``insitu.steps`` EqProp SGD steps of
  :meth:`~hwsim.analog.AnalogCrossbarMLP.eqprop_update` on training batches, the device's update
  model included) and ``accuracy_insitu`` is measured too.
* an integer spec: :class:`hwsim.fixed_point.FixedPointMLP` (bit-exact integer simulator; ``seed`` drives
  stochastic rounding);
* fp32: the float model.

plus the estimated energy and latency per inference and the weight memory (:mod:`tracks.sweep.cost`).

**Records** (``sweep.jsonl``, one JSON line per point, appended as points finish) hold ``key`` (the
point: model, seed and field values), the measurements and ``inputs`` (everything else a result depends
on: model SHA-256s, data SHA-256, ``n_test``, ``n_steps``, base spec, fixed settings, in-situ and cost
settings). Resume is :func:`tracks.sweep.engine.run_sweep`'s rule: finished points of the same inputs are
reused, other inputs are refused naming what differs. ``results.csv`` (one row per point),
``summary.csv`` / ``summary.json`` (mean and Student-t 95 % CI over seeds per configuration, Pareto
flag), ``acc_vs_<field>.png`` (95 % CI bands) and ``pareto.png`` (accuracy vs energy) are rewritten
from all records at the end.

**Executors** (:func:`run_points`): ``jobs = 1`` without a scheduler runs the points in this process;
otherwise on Dask distributed: an embedded ``LocalCluster`` of ``jobs`` worker processes (one thread
each) or, with ``scheduler``, an existing cluster (``tcp://host:8786``; e.g. started by dask-jobqueue).
The models and data are scattered to the workers once (``broadcast``); each point is a task with
``retries``; a point whose worker dies is re-run by the scheduler (``distributed.scheduler.allowed-failures``).
Records do not depend on the executor (every draw is counter-based, seeded by the point).
"""
from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import logging
import math
import os
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch

from models.progress import progress as progress_bar
from quant.spec import HardwareSpec

from ..harness.plots import figure
from ..harness.runner import json_safe
from ..harness.stats import mean_ci95
from .cost import CostModel, analog_cost, digital_cost
from .engine import (QUICK_MODEL, _sha256_arrays, cached_mlp, check_sweep_dirs, load_mlp, model_fingerprint,
                     open_records)
from .space import apply_fields, canonical, check_field, expand

log = logging.getLogger("eqprop_hwsim.tracks.sweep.design")

METRICS = ("accuracy", "accuracy_insitu", "energy_pj", "latency_ns", "weight_bytes")
CONFIG_KEYS = ("base", "grid", "points", "set", "seeds", "models", "n_test", "n_steps", "batch_size",
               "adc_preact_range", "insitu", "cost", "dataset")
INSITU_KEYS = {"steps": 0, "batch_size": 100, "lr": 0.01, "beta": 0.5, "mode": "symmetric", "n_train": 10000,
               "n_free_steps": 20, "n_nudge_steps": 8}
CONNECT_TIMEOUT_S = 30
"""Seconds to wait for a ``--scheduler`` to answer."""
DEFAULT_MODEL = {"sizes": [784, 256, 10], "n_train": 20000, "epochs": 2, "lr": [0.2, 0.1]}


# ------------------------------------------------------------------------ configuration
@dataclasses.dataclass
class SweepConfig:
    """A design-space sweep (see the module docstring). Build with :meth:`from_mapping` / :func:`load_config`.

    Attributes:
        base: preset name or a ``HardwareSpec`` JSON file (the chip every point starts from).
        grid: ``{field path: [values]}`` (Cartesian product, in order).
        points: a list of ``{field path: value}`` (crossed with the grid; default one empty point).
        set: fixed ``{field path: value}`` applied to every point (part of the inputs, not the key).
        seeds: chip seeds (distinct ints >= 0).
        models: each a checkpoint path (str) or training settings (keys of ``DEFAULT_MODEL`` and
            an optional ``name``).
        n_test: test images per point (1..10000; None = all).
        n_steps: relaxation sweeps of an inference.
        adc_preact_range: an ADC full scale covering this real pre-activation range, from each model's
            weights (:func:`hwsim.analog.adc_range_for`), unless ``analog.adc_range`` is set or swept;
            None keeps the spec's ``adc_range``.
        insitu: in-situ learning on the analog chip (keys of ``INSITU_KEYS``; ``steps = 0``: off).
        cost: :class:`~tracks.sweep.cost.CostModel` constants.
    """

    base: str = "analog_pcm"
    grid: dict[str, list] = dataclasses.field(default_factory=dict)
    points: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    set: dict[str, Any] = dataclasses.field(default_factory=dict)
    seeds: list[int] = dataclasses.field(default_factory=lambda: [0, 1, 2])
    models: list[Any] = dataclasses.field(default_factory=lambda: [dict(DEFAULT_MODEL)])
    n_test: int | None = None
    n_steps: int = 30
    batch_size: int = 1000
    adc_preact_range: float | None = 2.0
    insitu: dict[str, Any] = dataclasses.field(default_factory=dict)
    cost: dict[str, Any] = dataclasses.field(default_factory=dict)
    dataset: str = "mnist"

    @classmethod
    def from_mapping(cls, d: Mapping[str, Any], where: str = "config") -> "SweepConfig":
        unknown = sorted(set(d) - set(CONFIG_KEYS))
        if unknown:
            raise ValueError(f"{where}: unknown keys {unknown}; allowed: {list(CONFIG_KEYS)}")
        return cls(**dict(d))


def load_config(path: str | os.PathLike) -> SweepConfig:
    """A :class:`SweepConfig` from a ``.toml`` (:mod:`tomllib`) or ``.json`` file; errors name the file."""
    import tomllib

    p = Path(path)
    if not p.is_file():
        raise ValueError(f"--config {p} does not exist; give a .toml or .json sweep file (see examples/)")
    try:
        if p.suffix.lower() == ".toml":
            data = tomllib.loads(p.read_text(encoding="utf-8"))
        elif p.suffix.lower() == ".json":
            data = json.loads(p.read_text(encoding="utf-8"))
        else:
            raise ValueError(f"--config {p}: unknown file type {p.suffix!r}; allowed: .toml or .json")
    except tomllib.TOMLDecodeError as e:
        raise ValueError(f"--config {p} is not valid TOML: {e}") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"--config {p} is not valid JSON (line {e.lineno}: {e.msg})") from None
    if not isinstance(data, dict):
        raise ValueError(f"--config {p}: expected a table/object at the top level")
    return SweepConfig.from_mapping(data, where=f"--config {p}")


def _check_int(name: str, v: Any, lo: int, hi: int | None = None) -> None:
    if not isinstance(v, int) or isinstance(v, bool) or v < lo or (hi is not None and v > hi):
        rng = f"[{lo}, {hi}]" if hi is not None else f">= {lo}"
        raise ValueError(f"{name}={v!r} is invalid; allowed: an int {rng}")


def _base_spec(base: str) -> HardwareSpec:
    from ..harness.commands import load_spec_arg
    return load_spec_arg(base)


def _model_name(m: Any) -> str:
    if isinstance(m, (str, os.PathLike)):
        return Path(m).stem
    return str(m.get("name") or "mlp-" + "-".join(str(s) for s in m.get("sizes", DEFAULT_MODEL["sizes"])))


def _check_model_entry(m: Any) -> None:
    if isinstance(m, (str, os.PathLike)):
        return
    if not isinstance(m, dict):
        raise ValueError(f"models: {m!r} is invalid; allowed: a checkpoint path or a table with keys "
                         f"{sorted(DEFAULT_MODEL) + ['name']}")
    unknown = sorted(set(m) - set(DEFAULT_MODEL) - {"name"})
    if unknown:
        raise ValueError(f"models: unknown keys {unknown}; allowed: {sorted(DEFAULT_MODEL) + ['name']}")
    for k in ("n_train", "epochs"):
        if k in m:
            _check_int(f"models.{k}", m[k], 1)


@dataclasses.dataclass(frozen=True)
class Plan:
    """A validated sweep: the points (``{"model", "seed", "fields"}``) and the per-configuration specs."""

    points: list[dict[str, Any]]
    swept: list[str]
    base: HardwareSpec
    fixed: dict[str, Any]
    insitu: dict[str, Any]
    cost: CostModel


def plan(cfg: SweepConfig) -> Plan:
    """Validate every setting and every point (spec validation and the simulator's capability check) before
    any work. Raises ``ValueError`` naming the field, the value and what is allowed."""
    from hwsim.fixed_point import check_spec as fixed_point_check

    base = _base_spec(cfg.base)
    if not isinstance(cfg.grid, dict) or not isinstance(cfg.set, dict) or not isinstance(cfg.points, list):
        raise ValueError("grid and set must be tables {field: values}, points a list of tables")
    for f in list(cfg.grid) + list(cfg.set) + [k for p in cfg.points for k in (p if isinstance(p, dict) else {})]:
        check_field(f)
    for p in cfg.points:
        if not isinstance(p, dict):
            raise ValueError(f"points: {p!r} is invalid; allowed: a table {{field: value}}")
    both = sorted(set(cfg.set) & (set(cfg.grid) | {k for p in cfg.points for k in p}))
    if both:
        raise ValueError(f"fields {both} are both fixed (set) and swept; set each in one place")
    seeds = list(cfg.seeds)
    if not seeds:
        raise ValueError("seeds is empty; allowed: distinct ints >= 0")
    for s in seeds:
        _check_int("seeds", s, 0, 2 ** 32 - 1)
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds {seeds} repeat {sorted({s for s in seeds if seeds.count(s) > 1})}; give distinct values")
    if cfg.n_test is not None:
        _check_int("n_test", cfg.n_test, 1, 10000)
    _check_int("n_steps", cfg.n_steps, 1)
    _check_int("batch_size", cfg.batch_size, 1)
    if cfg.dataset not in ("mnist", "fashion_mnist"):
        raise ValueError(f"dataset={cfg.dataset!r} is invalid; allowed: 'mnist' or 'fashion_mnist'")
    if cfg.adc_preact_range is not None and not (isinstance(cfg.adc_preact_range, (int, float))
                                                 and math.isfinite(cfg.adc_preact_range) and cfg.adc_preact_range > 0):
        raise ValueError(f"adc_preact_range={cfg.adc_preact_range!r} is invalid; allowed: a number > 0 or null")
    if not cfg.models:
        raise ValueError("models is empty; allowed: checkpoint paths or training tables")
    for m in cfg.models:
        _check_model_entry(m)
    names = [_model_name(m) for m in cfg.models]
    if len(set(names)) != len(names):
        raise ValueError(f"models have repeated names {names}; give each a distinct 'name'")
    unknown = sorted(set(cfg.insitu) - set(INSITU_KEYS))
    if unknown:
        raise ValueError(f"insitu: unknown keys {unknown}; allowed: {sorted(INSITU_KEYS)}")
    insitu = {**INSITU_KEYS, **cfg.insitu}
    _check_int("insitu.steps", insitu["steps"], 0)
    _check_int("insitu.batch_size", insitu["batch_size"], 1)
    _check_int("insitu.n_train", insitu["n_train"], 1, 60000)
    for k in ("lr", "beta"):
        if not (isinstance(insitu[k], (int, float)) and math.isfinite(insitu[k]) and insitu[k] > 0):
            raise ValueError(f"insitu.{k}={insitu[k]!r} is invalid; allowed: a number > 0")
    cost = CostModel.from_dict(cfg.cost)
    settings = expand(cfg.grid, cfg.points)
    swept = list(dict.fromkeys([k for p in cfg.points for k in p] + list(cfg.grid)))
    for fields in settings:
        spec, _ = apply_fields(base, None, {**cfg.set, **fields})
        where = _names(fields) or "the base spec"
        if spec.analog is None:
            if insitu["steps"]:
                raise ValueError(f"{where}: in-situ learning (insitu.steps={insitu['steps']}) is simulated on analog "
                                 "specs only (hwsim.analog eqprop_update); use an analog base or insitu.steps = 0")
            if spec.is_integer:
                try:
                    fixed_point_check(spec)
                except ValueError as e:
                    raise ValueError(f"{where}: {e}") from None
            elif not (spec.weights.is_float and spec.state is None and spec.acc_bits is None):
                raise ValueError(f"{where}: spec {spec.name!r} mixes float and integer parts and has no analog "
                                 "section; allowed: fp32, a fully integer spec, or an analog spec")
        elif spec.analog.adc_bits is not None and spec.analog.adc_bits < 2:
            raise ValueError(f"{where}: analog.adc_bits={spec.analog.adc_bits} is not simulable; allowed: >= 2")
    points = [{"model": m, "seed": int(s), "fields": {k: canonical(v) for k, v in f.items()}}
              for m in names for f in settings for s in seeds]
    return Plan(points, swept, base, {k: canonical(v) for k, v in cfg.set.items()}, insitu, cost)


def _names(fields: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in fields.items())


def point_key(p: Mapping[str, Any]) -> str:
    """The identity of a point for resuming: model, seed and field values (sorted JSON)."""
    return json.dumps({"model": p["model"], "seed": p["seed"], "fields": p["fields"]}, sort_keys=True)


# ------------------------------------------------------------------------ evaluation of a point (workers)
_CACHE: dict[str, Any] = {}


def evaluate_design_point(point: dict[str, Any], context: dict[str, Any], shared: dict[str, Any]) -> dict[str, Any]:
    """Accuracy, in-situ accuracy (when asked), energy, latency and weight memory of one point.

    Top level and picklable (runs on Dask workers). ``shared`` holds the models (float64 nets by name)
    and the data (``x_test``, ``y_test``; ``x_train``, ``y_train`` for in-situ learning): scattered once.
    """
    from ..harness.threads import torch_threads

    with torch_threads(1):
        return _evaluate(point, context, shared)


def _evaluate(point, context, shared):
    from hwsim.analog import AnalogCrossbarMLP, adc_range_for

    net = shared["models"][point["model"]]
    x, y = shared["x_test"], shared["y_test"]
    fields = point["fields"]
    spec, sim = apply_fields(HardwareSpec.from_dict(context["base"]), None, {**context["set"], **fields})
    cm = CostModel.from_dict(context["cost"])
    n_steps, bs, seed = int(context["n_steps"]), int(context["batch_size"]), int(point["seed"])
    rec: dict[str, Any] = {"key": point_key(point), "model": point["model"], "seed": seed, "fields": fields}
    if spec.analog is not None:
        analog = spec.analog
        rng_set = "analog.adc_range" in fields or "analog.adc_range" in context["set"]
        if analog.adc_bits is not None and context.get("adc_preact_range") and not rng_set:
            analog = dataclasses.replace(analog, adc_range=adc_range_for(net, context["adc_preact_range"]))
            spec = spec.replace(analog=analog)
        chip = AnalogCrossbarMLP(net, analog, weights=spec.weights, sim=sim, seed=seed)
        rec["accuracy"] = chip.accuracy(x, y, n_steps=n_steps, batch_size=bs)
        rec.update(analog_cost(chip, spec, n_steps, cm))
        ins = context["insitu"]
        if ins["steps"]:
            xt, yt = shared["x_train"], shared["y_train"]
            gen = torch.Generator().manual_seed(seed)
            n = xt.shape[0]
            for _ in range(ins["steps"]):
                idx = torch.randint(0, n, (ins["batch_size"],), generator=gen)
                chip.eqprop_update(xt[idx], yt[idx], lr=float(ins["lr"]), beta=float(ins["beta"]),
                                   n_free_steps=int(ins["n_free_steps"]), n_nudge_steps=int(ins["n_nudge_steps"]),
                                   mode=ins["mode"])
            rec["accuracy_insitu"] = chip.accuracy(x, y, n_steps=n_steps, batch_size=bs)
    elif spec.is_integer:
        from hwsim.fixed_point import FixedPointMLP
        key = f"fixed|{point['model']}|{json.dumps(spec.to_dict(), sort_keys=True)}"
        if key not in _CACHE:
            _CACHE.clear()   # one integer model at a time (they are rebuilt cheaply)
            _CACHE[key] = FixedPointMLP.from_model(net, spec)
        pred = _CACHE[key].predict(x.numpy(), n_steps, seed=seed, batch_size=bs)
        rec["accuracy"] = float((torch.as_tensor(pred) == y).double().mean())
        rec.update(digital_cost(net, spec, n_steps, cm))
    else:
        with torch.no_grad():
            s, _ = net.free_phase(x, n_steps=n_steps)
        rec["accuracy"] = float((s[-1].argmax(dim=1) == y).double().mean())
        rec.update(digital_cost(net, spec, n_steps, cm))
    rec["n_test"] = int(x.shape[0])
    return rec


# ------------------------------------------------------------------------ executors
def run_points(points: Sequence[dict[str, Any]], evaluate: Callable[[dict, dict, dict], dict], context: dict[str, Any],
               shared: dict[str, Any], out_path: str | os.PathLike, *, jobs: int = 1, scheduler: str | None = None,
               resume: bool = True, progress: bool = False, inputs: dict[str, Any] | None = None,
               retries: int = 2) -> list[dict[str, Any]]:
    """Evaluate ``points`` (skipping finished ones of the same inputs), appending one JSON line per point as
    it finishes; returns the records of ``points`` in order.

    Args:
        evaluate: top-level ``(point, context, shared) -> record`` (record holds ``key`` = :func:`point_key`).
        shared: large read-only data (models, data sets): scattered to every worker once.
        jobs: ``1`` (and no ``scheduler``): in this process; ``> 1``: an embedded Dask ``LocalCluster`` of
            ``jobs`` worker processes, one thread each.
        scheduler: address of an existing Dask scheduler (``tcp://host:8786``); ``jobs`` is then unused.
        retries: re-runs of a point whose task raised (a point lost with its worker is re-run by the
            scheduler regardless).
    """
    _check_int("jobs", jobs, 1)
    inputs = json.loads(json.dumps(context if inputs is None else inputs, sort_keys=True, default=str))
    out_path = Path(out_path)
    done = open_records(out_path, inputs, resume)
    todo = [p for p in points if point_key(p) not in done]
    log.info("design sweep %s: %d points, %d done, %d to run (%s)", out_path, len(points), len(points) - len(todo),
             len(todo), f"scheduler {scheduler}" if scheduler else f"jobs={jobs}")
    with open(out_path, "a") as fh, progress_bar(total=len(todo), enabled=progress, desc="sweep") as bar:
        def write(rec):
            rec = {**rec, "inputs": inputs}
            fh.write(json.dumps(json_safe(rec)) + "\n")
            fh.flush()
            done[rec["key"]] = json.loads(json.dumps(json_safe(rec)))
            bar.update(1)

        if todo and jobs == 1 and scheduler is None:
            for p in todo:
                write(evaluate(p, context, shared))
        elif todo:
            _run_dask(todo, evaluate, context, shared, write, jobs=jobs, scheduler=scheduler, retries=retries)
    return [done[point_key(p)] for p in points]


def _run_dask(todo, evaluate, context, shared, write, *, jobs, scheduler, retries) -> None:
    import dask
    from distributed import Client, LocalCluster, as_completed

    cluster = None
    # dask's default pre-spawn environment sets MALLOC_TRIM_THRESHOLD_=65536: measured here, a point took ~4x
    # longer in such a worker than in-process (2 s vs 8 s, analog chip, 500 test images, loaded 2-core
    # machine) and ~1.5x without it; the thread limits are kept.
    env = {"OMP_NUM_THREADS": 1, "MKL_NUM_THREADS": 1, "OPENBLAS_NUM_THREADS": 1}
    with dask.config.set({"distributed.worker.daemon": False, "distributed.nanny.pre-spawn-environ": env}):
        if scheduler is None:
            cluster = LocalCluster(n_workers=jobs, threads_per_worker=1, processes=True, dashboard_address=None,
                                   silence_logs=logging.ERROR)
            client = Client(cluster)
        else:
            try:
                client = Client(scheduler, timeout=CONNECT_TIMEOUT_S)
            except (OSError, TimeoutError) as e:
                raise ValueError(f"--scheduler {scheduler}: cannot connect ({e}); give the address of a running Dask "
                                 "scheduler, e.g. tcp://host:8786") from None
        try:
            client.wait_for_workers(jobs if cluster is not None else 1, timeout=600)
            shared_f = None
            left = {point_key(p): p for p in todo}
            for attempt in range(retries + 1):
                if not left:
                    break
                if shared_f is None or shared_f.status != "finished":
                    shared_f = client.scatter([shared], broadcast=True)[0]   # once to every worker (again only
                                                                            # if every copy was lost)
                futs = {client.submit(evaluate, p, context, shared_f, key=f"sweep-point-{_short(k)}-{attempt}",
                                      retries=retries, pure=False): k for k, p in left.items()}
                lost = []
                for f in as_completed(futs):
                    if f.status == "finished":
                        write(f.result())
                        del left[futs[f]]
                    elif f.status == "error":
                        f.result()   # the point's own exception (after its retries): raise it
                    else:   # cancelled: its inputs (the scattered data) were lost with a worker
                        lost.append(futs[f])
                if lost:
                    log.warning("%d point(s) lost their scattered inputs with a worker; re-scattering and re-running",
                                len(lost))
                    shared_f = None
            if left:
                raise RuntimeError(f"{len(left)} point(s) could not be evaluated: their workers kept dying "
                                   f"({retries + 1} attempts); see the Dask worker logs")
        finally:
            client.close()
            if cluster is not None:
                cluster.close()


def _short(s: str) -> str:
    return hashlib.sha256(s.encode()).hexdigest()[:16]


# ------------------------------------------------------------------------ tables and plots
def _field_cols(records) -> list[str]:
    return list(dict.fromkeys(k for r in records for k in r["fields"]))


def write_results_csv(records: Sequence[dict[str, Any]], path: Path) -> Path:
    """One row per point: model, seed, the field values, the metrics."""
    fields = _field_cols(records)
    cols = ["model", "seed", *fields, *METRICS, "macs", "devices", "n_test"]
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(cols)
        for r in records:
            w.writerow([r["model"], r["seed"], *[_cell(r["fields"].get(f)) for f in fields],
                        *[_cell(r.get(m)) for m in (*METRICS, "macs", "devices", "n_test")]])
    os.replace(tmp, path)
    return path


def _cell(v):
    return "" if v is None else (json.dumps(v) if isinstance(v, (list, dict, bool)) else v)


def summarize_design(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per configuration (model + field values): ``n`` seeds, mean and 95 % CI half-width of each
    metric, and ``pareto`` (on the accuracy-vs-energy front of its model)."""
    groups: dict[str, list[dict]] = {}
    for r in records:
        groups.setdefault(json.dumps({"model": r["model"], "fields": r["fields"]}, sort_keys=True), []).append(r)
    rows = []
    for g in groups.values():
        row = {"model": g[0]["model"], "fields": g[0]["fields"], "n": len(g)}
        for m in METRICS:
            vals = [float(r[m]) for r in g if r.get(m) is not None]
            if vals:
                row[f"{m}_mean"], row[f"{m}_ci95"] = mean_ci95(vals)
        rows.append(row)
    for model in {r["model"] for r in rows}:
        front = pareto_front([r for r in rows if r["model"] == model])
        for r in rows:
            if r["model"] == model:
                r["pareto"] = any(r is f for f in front)
    return rows


def pareto_front(rows: Sequence[dict[str, Any]], x: str = "energy_pj_mean", y: str = "accuracy_mean") -> list[dict]:
    """Rows not dominated in (lower ``x``, higher ``y``), sorted by ``x``.

    >>> [r["id"] for r in pareto_front([{"id": 0, "energy_pj_mean": 1, "accuracy_mean": .5},
    ...   {"id": 1, "energy_pj_mean": 2, "accuracy_mean": .4}, {"id": 2, "energy_pj_mean": 3, "accuracy_mean": .9}])]
    [0, 2]
    """
    ok = sorted((r for r in rows if r.get(x) is not None and r.get(y) is not None
                 and math.isfinite(r[x]) and math.isfinite(r[y])), key=lambda r: (r[x], -r[y]))
    front, best = [], -math.inf
    for r in ok:
        if r[y] > best:
            front.append(r)
            best = r[y]
    return front


def write_summary_csv(rows: Sequence[dict[str, Any]], path: Path) -> Path:
    fields = _field_cols(rows)
    stats = [f"{m}_{s}" for m in METRICS for s in ("mean", "ci95") if any(f"{m}_mean" in r for r in rows)]
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["model", *fields, "n", *stats, "pareto"])
        for r in rows:
            w.writerow([r["model"], *[_cell(r["fields"].get(f)) for f in fields], r["n"],
                        *[_cell(json_safe(r.get(s))) for s in stats], r["pareto"]])
    os.replace(tmp, path)
    return path


def _label(v) -> str:
    return "None" if v is None else (f"{v:g}" if isinstance(v, float) else str(v))


def plot_vs_field(rows: Sequence[dict[str, Any]], field: str, path: Path, metric: str = "accuracy") -> Path:
    """``metric`` (%) vs ``field``: one line per model and combination of the other swept fields, with its
    95 % CI band over seeds. Numeric fields on a numeric axis (``None`` last, as a category), others as
    categories in sweep order."""
    others = [f for f in _field_cols(rows) if f != field]
    lines: dict[str, list[dict]] = {}
    for r in rows:
        name = ", ".join([r["model"]] * (len({q["model"] for q in rows}) > 1) +
                         [f"{o}={_label(r['fields'].get(o))}" for o in others])
        lines.setdefault(name or "all", []).append(r)
    values = list(dict.fromkeys(r["fields"].get(field) for r in rows))
    numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
    order = sorted(values) if numeric else values
    pos = {json.dumps(v): (v if numeric else i) for i, v in enumerate(order)}
    with figure(path, figsize=(6.4, 4.2)) as (fig, axes):
        ax = axes[0][0]
        for name, rr in lines.items():
            rr = sorted(rr, key=lambda r: order.index(r["fields"].get(field)))
            xs = np.array([pos[json.dumps(r["fields"].get(field))] for r in rr], dtype=float)
            m = np.array([r.get(f"{metric}_mean", np.nan) for r in rr], dtype=float) * 100
            h = np.array([np.nan if r.get(f"{metric}_ci95") is None else r[f"{metric}_ci95"] for r in rr],
                         dtype=float) * 100
            ax.plot(xs, m, marker="o", label=name)
            ax.fill_between(xs, m - h, m + h, alpha=0.2)
        if numeric and all(isinstance(v, int) for v in order) and len(order) <= 16:
            ax.set_xticks(order)
        if not numeric:
            ax.set_xticks(range(len(order)))
            ax.set_xticklabels([_label(v) for v in order])
        ax.set_xlabel(field)
        ax.set_ylabel(f"{metric.replace('_', ' ')} (%)")
        n = max(r["n"] for r in rows)
        ax.set_title(f"{metric} vs {field} (mean, 95% CI over {n} seeds)", fontsize=9)
        ax.grid(alpha=0.3)
        if len(lines) <= 12:
            ax.legend(fontsize=7)
    return path


def plot_pareto(rows: Sequence[dict[str, Any]], path: Path, metric: str = "accuracy") -> Path:
    """Accuracy (%) vs estimated energy per inference (log x): every configuration, the front per model."""
    with figure(path, figsize=(6.4, 4.2)) as (fig, axes):
        ax = axes[0][0]
        for model in sorted({r["model"] for r in rows}):
            rr = [r for r in rows if r["model"] == model and r.get("energy_pj_mean") is not None]
            ax.errorbar([r["energy_pj_mean"] for r in rr], [100 * r[f"{metric}_mean"] for r in rr],
                        yerr=[0 if r.get(f"{metric}_ci95") is None or not math.isfinite(r[f"{metric}_ci95"])
                              else 100 * r[f"{metric}_ci95"] for r in rr], fmt="o", alpha=0.45, ms=4,
                        label=f"{model}: configurations")
            front = pareto_front(rr, y=f"{metric}_mean")
            ax.plot([r["energy_pj_mean"] for r in front], [100 * r[f"{metric}_mean"] for r in front], "-s",
                    label=f"{model}: Pareto front")
            for r in front:
                ax.annotate(", ".join(f"{k.split('.')[-1]}={_label(v)}" for k, v in r["fields"].items()),
                            (r["energy_pj_mean"], 100 * r[f"{metric}_mean"]), fontsize=6, xytext=(3, -8),
                            textcoords="offset points")
        es = [r["energy_pj_mean"] for r in rows if r.get("energy_pj_mean")]
        if es and max(es) / min(es) > 20:   # log axis only where the energies span decades
            ax.set_xscale("log")
        else:
            ax.ticklabel_format(axis="x", style="sci", scilimits=(-3, 4))
        ax.margins(x=0.25, y=0.08)
        ax.set_xlabel("estimated energy per inference (pJ)")
        ax.set_ylabel(f"{metric.replace('_', ' ')} (%)")
        ax.set_title("accuracy vs energy (mean over seeds, 95% CI)", fontsize=9)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
    return path


# ------------------------------------------------------------------------ the command
def design_sweep(cfg: SweepConfig, *, out: str | os.PathLike = "runs/sweep", jobs: int = 1,
                 scheduler: str | None = None, resume: bool = True, data_dir: str | None = None,
                 progress: bool = True, retries: int = 2, evaluate: Callable = None) -> dict[str, Any]:
    """Run a design-space sweep into ``out`` (``sweep.jsonl``, ``results.csv``, ``summary.csv``,
    ``summary.json``, ``acc_vs_<field>.png``, ``pareto.png``); returns ``{"records", "summary", "plots",
    "summary_path", "csv"}``. Everything is validated before any training or evaluation.

    ``evaluate`` replaces :func:`evaluate_design_point` (a wrapper of it, for tests of the executors).

    Raises:
        ValueError: a bad setting or point (naming the field), model, data or resume
            (:class:`SweepMismatchError`); FileExistsError: ``resume`` off and results exist.
    """
    from ..data import load_dataset

    _check_int("--jobs", jobs, 1)
    if scheduler is not None and not isinstance(scheduler, str):
        raise ValueError(f"--scheduler {scheduler!r}: allowed: an address such as tcp://host:8786")
    pl = plan(cfg)
    out = check_sweep_dirs(out, data_dir, resume)
    jsonl = out / "sweep.jsonl"
    x_test, y_test = load_dataset(cfg.dataset, "test", data_dir=data_dir)
    sl = slice(None) if cfg.n_test is None else slice(0, cfg.n_test)
    x_test, y_test = np.asarray(x_test[sl]), np.asarray(y_test[sl])
    models, fingerprints = {}, {}
    x_train = y_train = None
    for m in cfg.models:
        name = _model_name(m)
        if isinstance(m, (str, os.PathLike)):
            net = load_mlp(m)
        else:
            if x_train is None:
                x_train, y_train = load_dataset(cfg.dataset, "train", data_dir=data_dir)
            s = {**DEFAULT_MODEL, **{k: v for k, v in m.items() if k != "name"}}
            n = int(s["n_train"])
            xs, ys = torch.as_tensor(np.asarray(x_train[:n])), torch.as_tensor(np.asarray(y_train[:n]))
            net, _ = cached_mlp(out / "cache", s["sizes"], xs, ys, progress=progress, epochs=int(s["epochs"]),
                                lr=tuple(s["lr"]))
        models[name] = net.double()
        fingerprints[name] = model_fingerprint(net)
    shared = {"models": models, "x_test": torch.as_tensor(x_test, dtype=torch.float64),
              "y_test": torch.as_tensor(y_test)}
    if pl.insitu["steps"]:
        if x_train is None:
            x_train, y_train = load_dataset(cfg.dataset, "train", data_dir=data_dir)
        # the in-situ learning data: the END of the training split (the models train on its start)
        n = int(pl.insitu["n_train"])
        shared["x_train"] = torch.as_tensor(np.asarray(x_train[-n:]), dtype=torch.float64)
        shared["y_train"] = torch.as_tensor(np.asarray(y_train[-n:]))
    context = {"base": pl.base.to_dict(), "set": pl.fixed, "n_steps": cfg.n_steps, "batch_size": cfg.batch_size,
               "adc_preact_range": cfg.adc_preact_range, "insitu": pl.insitu, "cost": pl.cost.to_dict()}
    inputs = {**context, "models": fingerprints, "dataset": cfg.dataset,
              "data_sha256": _sha256_arrays(x_test, y_test), "n_test": int(y_test.shape[0])}
    if pl.insitu["steps"]:
        inputs["insitu_data_sha256"] = _sha256_arrays(shared["x_train"].numpy(), shared["y_train"].numpy())
    records = run_points(pl.points, evaluate or evaluate_design_point, context, shared, jsonl, jobs=jobs, scheduler=scheduler,
                         resume=resume, progress=progress, inputs=inputs, retries=retries)
    rows = summarize_design(records)
    csv_path = write_results_csv(records, out / "results.csv")
    write_summary_csv(rows, out / "summary.csv")
    plots = []
    metrics = ["accuracy"] + (["accuracy_insitu"] if pl.insitu["steps"] else [])
    for f in pl.swept:
        if len({json.dumps(r["fields"].get(f)) for r in rows}) < 2:
            continue   # one value: no curve
        for m in metrics:
            suffix = "" if m == "accuracy" else "_insitu"
            plots.append(str(plot_vs_field(rows, f, out / f"acc{suffix}_vs_{f.replace('.', '_')}.png", metric=m)))
    for m in metrics:
        plots.append(str(plot_pareto(rows, out / ("pareto.png" if m == "accuracy" else "pareto_insitu.png"), metric=m)))
    summary_path = out / "summary.json"
    tmp = out / ".summary.json.tmp"
    tmp.write_text(json.dumps(json_safe({"inputs": inputs, "swept": pl.swept, "summary": rows}), indent=2,
                              allow_nan=False) + "\n")
    os.replace(tmp, summary_path)
    return {"records": records, "summary": rows, "plots": plots, "summary_path": str(summary_path),
            "csv": str(csv_path)}


def config_from_args(config: str | os.PathLike | None = None, *, grid: Sequence[tuple[str, list]] = (),
                     fixed: Sequence[tuple[str, Any]] = (), **overrides: Any) -> SweepConfig:
    """A :class:`SweepConfig` from a file (optional) with command-line grid fields, fixed fields and settings
    (``None`` values are ignored) on top."""
    cfg = load_config(config) if config is not None else SweepConfig()
    g = dict(cfg.grid)
    for k, v in grid:
        if k in g and config is None:
            raise ValueError(f"--grid {k} given twice; give its values in one --grid {k}=V1,V2")
        g[k] = v
    s = dict(cfg.set)
    for k, v in fixed:
        s[k] = v
    cfg = dataclasses.replace(cfg, grid=g, set=s, **{k: v for k, v in overrides.items() if v is not None})
    if not cfg.grid and not cfg.points:
        raise ValueError("the sweep has no grid: give --grid FIELD=V1,V2 (e.g. analog.adc_bits=4,6,8) or a "
                         "[grid] table in --config")
    return cfg


__all__ = ["SweepConfig", "load_config", "plan", "design_sweep", "run_points", "evaluate_design_point",
           "summarize_design", "pareto_front", "point_key", "config_from_args", "QUICK_MODEL"]

"""Noise sweeps on the analog crossbar: grid, parallel resumable runner, CI summaries, plots.

A sweep is a grid ``kind x level x precision x seed`` of points; each point programs a trained
:class:`~models.eqprop_mlp.EqPropMLP` on a simulated chip (:class:`hwsim.analog.AnalogCrossbarMLP`)
with one non-ideality set to ``level`` and measures test accuracy. Results are appended to a JSONL
file as points finish (one JSON object per line), so an interrupted sweep resumes where it stopped.

**Resume rule.** Every record carries ``inputs``: everything a point's result depends on besides
the point itself (for ``run_suite.py sweep``: the SHA-256 of the model checkpoint's weights and
config, the dataset, the SHA-256 of the test images and labels used, ``n_test``, the device spec
(``base_analog``), the ADC range, the relaxation steps, the batch size). ``resume=True`` reuses a
record only when its point *and* its ``inputs`` equal the current ones; if the file holds records
of other inputs the run is refused (:class:`SweepMismatchError`, naming each differing input and
its old and new value): use a new ``out`` folder. Repeated values on any axis of the grid (e.g.
seeds ``0 0``) are refused too.

Points run in ``jobs`` worker processes (spawned; one torch thread each). Workers ignore SIGINT
(the parent handles Ctrl-C and stops them) and die with their parent: on Linux through
``prctl(PR_SET_PDEATHSIG, SIGKILL)``, elsewhere (and as a fallback) a watchdog thread exits the
worker when its parent process is gone.

Noise kinds (``level`` units):

* ``prog``: programming noise std / g_max (0.05 = 5 %);
* ``read``: read noise std / g_max, fresh per read;
* ``drift``: seconds after programming (``t_inference_s``), PCM drift exponent of the base spec;
* ``stuck``: fraction of devices stuck (half at g_min, half at g_max).

The 95 % confidence band of a mean over ``n`` seeds comes from :func:`tracks.harness.stats.mean_ci95`
(Student t; a single seed has no band: ``ci95`` is ``null``).

Shared, non-track helpers also live here (tracks import this module, never each other):
:func:`train_mlp` (a short EqProp SGD loop) and :func:`cached_mlp` (train once per out dir).

>>> pts = grid(kinds=("prog",), levels=(0.0, 0.05), precisions=("int8",), seeds=(0, 1))
>>> len(pts), pts[0].key
(4, 'prog|0|int8|0')
"""
from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import hashlib
import json
import logging
import math
import multiprocessing as mp
import os
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import torch

from hwsim.analog import AnalogCrossbarMLP, AnalogSimConfig, adc_range_for
from models.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from models.eqprop_mlp import EqPropConfig, EqPropMLP
from models.progress import progress as progress_bar
from quant.formats import AnalogSpec
from quant.presets import list_presets

from ..harness.plots import figure
from ..harness.runner import json_safe, make_writable_dir
from ..harness.stats import mean_ci95
from ..harness.threads import torch_threads  # noqa: F401  (re-exported for tracks 3 and 17)

log = logging.getLogger("eqprop_hwsim.tracks.sweep")

NOISE_KINDS = ("prog", "read", "drift", "stuck")


# ------------------------------------------------------------------------ trained model
def train_mlp(sizes: Sequence[int], x: torch.Tensor, y: torch.Tensor, *, epochs: int = 1, lr: Sequence[float] = (0.1, 0.05),
              beta: float = 0.5, batch_size: int = 100, n_free_steps: int = 20, n_nudge_steps: int = 8,
              seed: int = 0, progress: bool = False, device: str = "cpu") -> EqPropMLP:
    """Train an :class:`EqPropMLP` (MSE cost, async) with symmetric-nudging EqProp and plain SGD.

    ``theta_i <- theta_i - lr_i * g_i`` with ``g`` the symmetric EqProp estimate
    (:meth:`EqPropMLP.contrast` of the ``-beta`` / ``+beta`` states after ``n_free_steps`` free and
    ``n_nudge_steps`` nudged sweeps, as :meth:`EqPropMLP.eqprop_grads` computes it); ``lr`` is
    per layer (the last value repeats). float32 on ``device``; the returned net is on the CPU.
    """
    if x.ndim != 2 or x.shape[1] != sizes[0] or x.shape[0] != y.shape[0]:
        raise ValueError(f"x {tuple(x.shape)} / y {tuple(y.shape)} do not fit sizes={tuple(sizes)}; "
                         "expected x (N, sizes[0]) and y (N,)")
    net = EqPropMLP(EqPropConfig(sizes=tuple(sizes)), seed=seed).to(device)
    x, y = x.to(device), y.to(device)
    gen = torch.Generator().manual_seed(seed)
    lrs = list(lr) + [lr[-1]] * (net.n_layers - len(lr))
    n = x.shape[0]
    total = epochs * ((n + batch_size - 1) // batch_size)
    with progress_bar(total=total, enabled=progress, desc="train EqProp") as bar:
        for _ in range(epochs):
            perm = torch.randperm(n, generator=gen)
            for a in range(0, n, batch_size):
                idx = perm[a:a + batch_size]
                with torch.no_grad():
                    g = net.eqprop_grads(x[idx], y[idx], beta=beta, mode="symmetric", n_free_steps=n_free_steps,
                                     n_nudge_steps=n_nudge_steps)
                    for i, lin in enumerate(net.layers):
                        lin.weight -= lrs[i] * g[f"layers.{i}.weight"]
                        lin.bias -= lrs[i] * g[f"layers.{i}.bias"]
                bar.update(1)
    net = net.cpu()  # the analog chip (hwsim) and the checkpoint live on the CPU
    bad = [name for name, t in net.state_dict().items() if not torch.isfinite(t).all()]
    if bad:
        raise FloatingPointError(f"EqProp training diverged: non-finite weights in {bad} after {epochs} epoch(s) "
                                 f"with lr={tuple(lr)}, beta={beta}; lower lr or beta")
    return net


def cached_mlp(cache_dir: str | os.PathLike, sizes: Sequence[int], x: torch.Tensor, y: torch.Tensor,
               progress: bool = False, **train_kw) -> tuple[EqPropMLP, Path]:
    """:func:`train_mlp` once per ``(sizes, data, settings)``; cached in ``cache_dir`` as a
    :mod:`models.checkpoint` checkpoint (the format ``export`` and ``sweep --model`` take).

    Returns ``(net, path)``. The cache key hashes sizes, settings and the training data bytes.
    """
    settings = {"sizes": list(sizes), **{k: list(v) if isinstance(v, tuple) else v for k, v in sorted(train_kw.items())
                                         if not (k == "device" and str(v) == "cpu")}}  # cpu keys as before
    h = hashlib.sha256(json.dumps(settings).encode())
    h.update(x.numpy().tobytes())
    h.update(y.numpy().tobytes())
    path = Path(cache_dir) / f"mlp_{h.hexdigest()[:16]}.pt"
    if path.exists():
        net = load_mlp(path)
        log.info("loaded cached model %s", path)
        return net, path
    net = train_mlp(sizes, x, y, progress=progress, **train_kw)
    save_checkpoint(path, net, train_config={"trainer": "tracks.sweep.train_mlp", **settings},
                    metrics={"n_train": int(x.shape[0])}, overwrite=True)
    return net, path


def load_mlp(path: str | os.PathLike) -> EqPropMLP:
    """Load an :class:`EqPropMLP` checkpoint (:mod:`models.checkpoint`, read with ``weights_only=True``).

    Raises:
        models.checkpoint.CheckpointError: missing file, another format, a hostile or corrupt pickle,
            or a checkpoint of another model class (the message names the file and the fix).
    """
    net, _ = load_checkpoint(path)
    if not isinstance(net, EqPropMLP):
        raise CheckpointError(f"{path} holds a {type(net).__name__}; the analog sweep programs an EqPropMLP "
                              "(train one with models.train or omit --model to train one)")
    if not all(torch.isfinite(p).all() for p in net.parameters()):
        raise CheckpointError(f"{path} has non-finite weights (a diverged training run); retrain it")
    if all(float(p.detach().abs().max()) == 0.0 for p in net.parameters()):
        raise CheckpointError(f"{path} has all-zero weights (an untrained model); the analog scale is "
                              "undefined. Train the model first")
    return net


# ------------------------------------------------------------------------ grid
@dataclasses.dataclass(frozen=True)
class SweepPoint:
    """One point of a sweep: a noise ``kind`` at ``level``, a weight ``precision``, a chip ``seed``."""

    kind: str
    level: float
    precision: str
    seed: int

    def __post_init__(self):
        if self.kind not in NOISE_KINDS:
            raise ValueError(f"SweepPoint.kind={self.kind!r} is invalid; allowed: one of {NOISE_KINDS}")
        if not (isinstance(self.level, (int, float)) and math.isfinite(self.level) and self.level >= 0):
            raise ValueError(f"SweepPoint.level={self.level!r} is invalid; allowed: a finite float >= 0")
        if self.precision not in list_presets():
            raise ValueError(f"SweepPoint.precision={self.precision!r} is invalid; allowed: one of {list_presets()}")
        if not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"SweepPoint.seed={self.seed!r} is invalid; allowed: an int >= 0")

    @property
    def key(self) -> str:
        """Stable identity used for resuming: ``kind|level|precision|seed`` (level as ``%g``)."""
        return f"{self.kind}|{self.level:g}|{self.precision}|{self.seed}"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def grid(kinds: Iterable[str], levels: Iterable[float], precisions: Iterable[str], seeds: Iterable[int]) -> list[SweepPoint]:
    """Cartesian product ``kinds x levels x precisions x seeds`` (in that nesting order).

    Raises:
        ValueError: an empty axis or a repeated value on one (a repeated seed would repeat a point and
            fake a narrow confidence interval), or an invalid point.
    """
    kinds, precisions, seeds = list(kinds), list(precisions), list(seeds)
    levels = [float(v) for v in levels]
    for name, vals in (("kinds", kinds), ("levels", levels), ("precisions", precisions), ("seeds", seeds)):
        if not vals:
            raise ValueError(f"{name} is empty; allowed: at least one value")
        dup = sorted({v for v in vals if vals.count(v) > 1}, key=str)
        if dup:
            raise ValueError(f"{name} {vals} repeat {dup}; give distinct values")
    return [SweepPoint(k, v, p, int(s)) for k in kinds for v in levels for p in precisions for s in seeds]


def analog_for_point(kind: str, level: float, base: AnalogSpec) -> tuple[AnalogSpec, AnalogSimConfig]:
    """The base device with all random non-idealities off except ``kind`` at ``level``.

    DAC/ADC settings and the drift law of ``base`` are kept.
    """
    clean = dataclasses.replace(base, prog_noise_std=0.0, read_noise_std=0.0, stuck_at_gmin_frac=0.0,
                                stuck_at_gmax_frac=0.0)
    if kind == "prog":
        return dataclasses.replace(clean, prog_noise_std=level), AnalogSimConfig()
    if kind == "read":
        return dataclasses.replace(clean, read_noise_std=level), AnalogSimConfig()
    if kind == "stuck":
        if level > 1:
            raise ValueError(f"stuck level={level} is invalid; allowed: a fraction in [0, 1]")
        return dataclasses.replace(clean, stuck_at_gmin_frac=level / 2, stuck_at_gmax_frac=level / 2), AnalogSimConfig()
    if kind == "drift":
        return clean, AnalogSimConfig(t_inference_s=max(level, clean.drift_t0_s))
    raise ValueError(f"kind={kind!r} is invalid; allowed: one of {NOISE_KINDS}")


# ------------------------------------------------------------------------ evaluation of a point
_WORKER_CACHE: dict[str, Any] = {}


def _test_data(data_dir: str | None, dataset: str, n_test: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    key = f"data|{data_dir}|{dataset}|{n_test}"
    if key not in _WORKER_CACHE:
        from ..data import load_dataset
        x, y = load_dataset(dataset, "test", data_dir=data_dir)
        if n_test is not None:
            x, y = x[:n_test], y[:n_test]
        _WORKER_CACHE[key] = (torch.as_tensor(np.asarray(x), dtype=torch.float64), torch.as_tensor(np.asarray(y)))
    return _WORKER_CACHE[key]


def evaluate_point(point: dict[str, Any], context: dict[str, Any]) -> dict[str, Any]:
    """Accuracy of the chip at one sweep point (top-level, picklable: runs in worker processes).

    ``context``: ``model_path``, ``data_dir``, ``dataset``, ``n_test``, ``n_steps``, ``base_analog``
    (``AnalogSpec.to_dict()``), optional ``adc_preact_range`` (ADC full scale from the model),
    optional ``disable_noise`` (bypass: every point evaluated on a clean chip; for tests of the
    track's failure path).
    """
    p = SweepPoint(**point)
    st = os.stat(context["model_path"])
    mkey = f"model|{context['model_path']}|{st.st_mtime_ns}|{st.st_size}"
    if mkey not in _WORKER_CACHE:
        _WORKER_CACHE[mkey] = load_mlp(context["model_path"]).double()
    net = _WORKER_CACHE[mkey]
    x, y = _test_data(context.get("data_dir"), context.get("dataset", "mnist"), context.get("n_test"))
    base = AnalogSpec.from_dict(context["base_analog"])
    if base.adc_bits is not None and context.get("adc_preact_range"):
        base = dataclasses.replace(base, adc_range=adc_range_for(net, context["adc_preact_range"]))
    level = 0.0 if context.get("disable_noise") else p.level
    analog, sim = analog_for_point(p.kind, level, base)
    chip = AnalogCrossbarMLP(net, analog, weights=p.precision, sim=sim, seed=p.seed)
    acc = chip.accuracy(x, y, n_steps=int(context.get("n_steps", 30)), batch_size=int(context.get("batch_size", 1000)))
    return {**p.to_dict(), "key": p.key, "accuracy": acc, "n_test": int(x.shape[0])}


# ------------------------------------------------------------------------ runner
def read_jsonl(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Records of a sweep file; a truncated last line (interrupted write) is ignored."""
    path = Path(path)
    out = []
    if not path.exists():
        return out
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            log.warning("ignoring a truncated line in %s", path)
    return out


class SweepMismatchError(ValueError):
    """The sweep file holds records of other inputs than this run's (resume refused; see the module doc)."""


def _die_with_parent(parent_pid: int) -> None:
    """Make this process end when ``parent_pid`` ends (Linux: PR_SET_PDEATHSIG; else a watchdog)."""
    import signal
    import sys
    import threading
    import time

    if sys.platform.startswith("linux"):
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            PR_SET_PDEATHSIG = 1
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):
            pass

    def watch():
        while True:
            if os.getppid() != parent_pid:
                os._exit(1)
            time.sleep(0.5)

    threading.Thread(target=watch, name="parent-watchdog", daemon=True).start()
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(1)


def _worker_init(parent_pid: int | None = None):
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group: the parent handles it
    if parent_pid is not None:
        _die_with_parent(parent_pid)
    torch.set_num_threads(1)


def fingerprint_diff(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """``["key: old -> new", ...]`` for the inputs that differ (nested dicts flattened with dots)."""
    def flat(d, prefix=""):
        out = {}
        for k, v in d.items():
            if isinstance(v, dict):
                out.update(flat(v, f"{prefix}{k}."))
            else:
                out[f"{prefix}{k}"] = v
        return out
    a, b = flat(old or {}), flat(new or {})
    return [f"{k}: {a.get(k, '(absent)')!r} -> {b.get(k, '(absent)')!r}" for k in sorted(set(a) | set(b))
            if a.get(k, "(absent)") != b.get(k, "(absent)")]


def open_records(out_path: Path, inputs: dict[str, Any], resume: bool) -> dict[str, dict[str, Any]]:
    """The reusable records of the JSONL file ``out_path`` by key (all of the same ``inputs``), after
    dropping a truncated last line; ``resume=False`` deletes the file first.

    Raises:
        SweepMismatchError: the file holds records of other ``inputs`` (each difference named).
    """
    out_path.parent.mkdir(parents=True, exist_ok=True)
    if not resume and out_path.exists():
        out_path.unlink()
    old = read_jsonl(out_path)
    other = next((r for r in old if r.get("inputs") != inputs), None)
    if other is not None:
        diff = fingerprint_diff(other.get("inputs") or {}, inputs) or ["(records without inputs: an older format)"]
        raise SweepMismatchError(
            f"{out_path} holds results of other inputs; a resume must have the same inputs. Differences: "
            + "; ".join(diff) + ". Use a new --out folder (or delete the old one) to run these inputs")
    done = {r["key"]: r for r in old if "key" in r}
    if out_path.exists():  # rewrite the valid records: drops a truncated last line before appending
        tmp = out_path.with_suffix(".tmp")
        tmp.write_text("".join(json.dumps(r) + "\n" for r in done.values()))
        os.replace(tmp, out_path)
    return done


def run_sweep(points: Sequence[SweepPoint], evaluate: Callable[[dict, dict], dict], context: dict[str, Any],
              out_path: str | os.PathLike, *, jobs: int = 1, resume: bool = True, progress: bool = False,
              inputs: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Evaluate ``points`` (skipping those already in ``out_path`` when ``resume``), appending a JSON
    line per finished point; returns the records of every requested point (old and new), in order.

    Args:
        evaluate: top-level function ``(point_dict, context) -> record`` (record must hold ``key``).
        inputs: JSON-able description of everything a result depends on besides the point (default:
            ``context``); stored in every record and compared on resume.
        jobs: worker processes (1 = in this process).
        resume: keep and reuse existing records; ``False`` truncates the file first.

    Raises:
        SweepMismatchError: ``resume`` and the file holds records of other ``inputs`` (what differs
            is named); nothing is changed.
    """
    if not isinstance(jobs, int) or isinstance(jobs, bool) or jobs < 1:
        raise ValueError(f"jobs={jobs!r} is invalid; allowed: an int >= 1")
    inputs = json.loads(json.dumps(context if inputs is None else inputs, sort_keys=True, default=str))
    out_path = Path(out_path)
    done = open_records(out_path, inputs, resume)
    todo = [p for p in points if p.key not in done]
    log.info("sweep %s: %d points, %d already done, %d to run (jobs=%d)", out_path, len(points), len(points) - len(todo), len(todo), jobs)
    with open(out_path, "a") as fh, progress_bar(total=len(todo), enabled=progress, desc="sweep") as bar:
        def _write(rec):
            rec = {**rec, "inputs": inputs}
            fh.write(json.dumps(rec) + "\n")
            fh.flush()
            done[rec["key"]] = rec
            bar.update(1)
        if jobs == 1:
            for p in todo:
                _write(evaluate(p.to_dict(), context))
        else:
            ex = cf.ProcessPoolExecutor(max_workers=jobs, mp_context=mp.get_context("spawn"),
                                        initializer=_worker_init, initargs=(os.getpid(),))
            try:
                futs = [ex.submit(evaluate, p.to_dict(), context) for p in todo]
                for f in cf.as_completed(futs):
                    _write(f.result())
            except BaseException:
                _stop_workers(ex)
                raise
            ex.shutdown(wait=True)
    return [done[p.key] for p in points]


def _stop_workers(ex: cf.ProcessPoolExecutor) -> None:
    """Cancel pending points and end the worker processes now (Ctrl-C, an error in a point)."""
    procs = list((getattr(ex, "_processes", None) or {}).values())
    ex.shutdown(wait=False, cancel_futures=True)
    for p in procs:
        if p.is_alive():
            p.kill()
    for p in procs:
        p.join(timeout=5)


# ------------------------------------------------------------------------ summaries and plots
def summarize(records: Sequence[dict[str, Any]], value: str = "accuracy") -> list[dict[str, Any]]:
    """Table rows ``{kind, precision, level, n, mean, ci95}`` grouped over seeds, sorted."""
    groups: dict[tuple, list[float]] = {}
    for r in records:
        groups.setdefault((r["kind"], r["precision"], float(r["level"])), []).append(float(r[value]))
    rows = []
    for (kind, prec, level), vals in sorted(groups.items()):
        m, h = mean_ci95(vals)
        rows.append({"kind": kind, "precision": prec, "level": level, "n": len(vals), "mean": m, "ci95": h})
    return rows


def plot_sweep(rows: Sequence[dict[str, Any]], kind: str, path: str | os.PathLike, *, xlabel: str | None = None,
               title: str | None = None, scale: float = 100.0) -> Path:
    """Accuracy (%) vs level for one noise ``kind``, a line and a 95 % CI band per precision."""
    path = Path(path)
    with figure(path) as (fig, axes):
        ax = axes[0][0]
        precs = sorted({r["precision"] for r in rows if r["kind"] == kind})
        for prec in precs:
            rr = sorted((r for r in rows if r["kind"] == kind and r["precision"] == prec), key=lambda r: r["level"])
            lv = np.array([r["level"] for r in rr]) * (100.0 if kind in ("prog", "read", "stuck") else 1.0)
            m = np.array([r["mean"] for r in rr]) * scale
            h = np.array([np.nan if r["ci95"] is None else r["ci95"] for r in rr], dtype=float) * scale
            ax.plot(lv, m, marker="o", label=prec)
            ax.fill_between(lv, m - h, m + h, alpha=0.2)
        ax.set_xlabel(xlabel or {"prog": "programming noise (% of g_max)", "read": "read noise (% of g_max)",
                                 "stuck": "stuck devices (%)", "drift": "time after programming (s)"}[kind])
        if kind == "drift":
            ax.set_xscale("log")
        ax.set_ylabel("test accuracy (%)")
        ax.set_title(title or f"accuracy vs {kind} noise (95% CI over seeds)")
        ax.grid(alpha=0.3)
        ax.legend()
    return path


# ------------------------------------------------------------------------ CLI entry for run_suite
def check_sweep_dirs(out: str | os.PathLike, data_dir: str | None, resume: bool) -> Path:
    """The sweep folder ``out`` (created, writable), after checking ``data_dir`` is a folder and that a
    run with ``resume`` off would not overwrite results; a ValueError / FileExistsError names the fix."""
    if data_dir is not None and not Path(data_dir).is_dir():
        raise ValueError(f"--data-dir {data_dir} is not a folder")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file; the sweep needs a folder (it writes sweep.jsonl, summary.json "
                         "and plots there)")
    try:
        make_writable_dir(out)
    except OSError as e:
        raise ValueError(f"cannot write to --out {out}: {e.strerror or e} ({type(e).__name__})") from None
    jsonl = out / "sweep.jsonl"
    if not resume and read_jsonl(jsonl):
        raise FileExistsError(f"{jsonl} already holds results and resume is off; use a new --out folder or resume")
    return out


def sweep_command(*, kinds: Sequence[str] = ("prog",), levels: Sequence[float] = (0.0, 0.01, 0.02, 0.05, 0.1, 0.2),
                  precisions: Sequence[str] = ("fp32", "int8", "int4"), seeds: Sequence[int] = (0, 1, 2),
                  out: str | os.PathLike = "runs/sweep", jobs: int = 1, resume: bool = True,
                  model: str | os.PathLike | None = None, sizes: Sequence[int] = (784, 256, 10),
                  n_train: int = 20000, epochs: int = 2, n_test: int | None = None, n_steps: int = 30,
                  base: str = "analog_pcm", adc_preact_range: float = 2.0, data_dir: str | None = None,
                  progress: bool = True) -> dict[str, Any]:
    """``run_suite.py sweep``: run a noise sweep into ``out`` (``sweep.jsonl``, ``summary.json``,
    ``sweep_<kind>.png``) and return ``{"records", "summary", "plots", "model", "summary_path"}``.

    Every argument is checked before any work. ``summary.json`` and the plots are written under a
    temporary name and renamed when complete; ``sweep.jsonl`` only ever gains complete lines.

    Args:
        model: an :class:`EqPropMLP` checkpoint (:mod:`models.checkpoint`, the format ``export``
            takes); None trains one (MNIST, ``sizes``, ``n_train`` samples, ``epochs``) and caches
            it under ``out/cache``.
        base: preset whose ``AnalogSpec`` gives the device (DAC/ADC bits, drift law).
        n_test: test-set slice, 1..10000 (None = all 10k).
        resume: reuse finished points of ``out/sweep.jsonl`` (only with identical inputs, see the
            module doc); ``False`` refuses (``FileExistsError``) when that file already holds results.

    Raises:
        ValueError: a bad argument, model (:class:`models.checkpoint.CheckpointError`) or resume
            (:class:`SweepMismatchError`); tracks.data.DataError: missing or corrupt data.
    """
    from quant.presets import get_preset

    from ..data import load_dataset

    if not isinstance(jobs, int) or isinstance(jobs, bool) or jobs < 1:
        raise ValueError(f"--jobs {jobs!r}: allowed: an int >= 1")
    if n_test is not None and (not isinstance(n_test, int) or not 1 <= n_test <= 10000):
        raise ValueError(f"--n-test {n_test!r}: allowed: an int in [1, 10000] (MNIST has 10000 test images), "
                         "or omit it for all")
    if not isinstance(n_steps, int) or n_steps < 1:
        raise ValueError(f"n_steps={n_steps!r}: allowed: an int >= 1")
    bad_seeds = [sd for sd in seeds if not isinstance(sd, int) or sd < 0]
    if bad_seeds:
        raise ValueError(f"--seeds {list(seeds)}: allowed: ints >= 0 (bad: {bad_seeds})")
    points = grid(kinds, levels, precisions, seeds)  # validates every axis, refuses repeated values
    for k in dict.fromkeys(kinds):
        for lv in dict.fromkeys(float(v) for v in levels):
            analog_for_point(k, lv, AnalogSpec())  # e.g. a stuck fraction > 1
    base_analog = get_preset(base).analog
    if base_analog is None:
        raise ValueError(f"base={base!r} has no AnalogSpec; allowed: an analog preset such as 'analog_pcm'")
    out = check_sweep_dirs(out, data_dir, resume)
    jsonl = out / "sweep.jsonl"
    x_test, y_test = load_dataset("mnist", "test", data_dir=data_dir)  # data errors before any training
    if model is None:
        x, y = load_dataset("mnist", "train", data_dir=data_dir)
        x, y = torch.as_tensor(np.asarray(x[:n_train])), torch.as_tensor(np.asarray(y[:n_train]))
        _, model = cached_mlp(out / "cache", sizes, x, y, progress=progress, epochs=epochs)
    net = load_mlp(model)  # CheckpointError (a ValueError) naming the file and the problem
    sl = slice(None) if n_test is None else slice(0, n_test)
    context = {"model_path": str(Path(model).resolve()), "data_dir": data_dir, "dataset": "mnist", "n_test": n_test,
               "n_steps": n_steps, "base_analog": base_analog.to_dict(), "adc_preact_range": adc_preact_range}
    inputs = {"model_sha256": model_fingerprint(net), "dataset": "mnist",
              "data_sha256": _sha256_arrays(np.asarray(x_test[sl]), np.asarray(y_test[sl])),
              "n_test": int(np.asarray(y_test[sl]).shape[0]), "n_steps": n_steps, "base_analog": base_analog.to_dict(),
              "adc_preact_range": adc_preact_range, "batch_size": 1000}
    records = run_sweep(points, evaluate_point, context, jsonl, jobs=jobs, resume=resume, progress=progress,
                        inputs=inputs)
    rows = summarize(records)
    plots = [str(plot_sweep(rows, k, out / f"sweep_{k}.png")) for k in dict.fromkeys(kinds)]
    summary_path = out / "summary.json"
    tmp = out / ".summary.json.tmp"
    tmp.write_text(json.dumps(json_safe({"inputs": inputs, "summary": rows}), indent=2, allow_nan=False) + "\n")
    os.replace(tmp, summary_path)
    return {"records": records, "summary": rows, "plots": plots, "model": str(model), "summary_path": str(summary_path)}


def _sha256_arrays(*arrays: np.ndarray) -> str:
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def model_fingerprint(net: EqPropMLP) -> str:
    """SHA-256 of a model's config and weights (what a sweep result depends on, not the file's path)."""
    h = hashlib.sha256(json.dumps(net.config.to_dict(), sort_keys=True).encode())
    for k, v in sorted(net.state_dict().items()):
        h.update(k.encode())
        h.update(_sha256_arrays(v.detach().cpu().numpy()).encode())
    return h.hexdigest()


# ------------------------------------------------------------------------ shared by tracks 17 and 3
# 128 hidden units in quick mode: the 784-64-10 quick model lost 1.5 pt at 5 % programming noise
# (1000 test images, seed 0; measured 2026-11-23), the 784-128-10 one -0.1 pt: small nets have less
# redundancy against device noise, which the full run (784-256-10) is about.
QUICK_MODEL = {"sizes": (784, 128, 10), "n_train": 5000, "epochs": 2, "lr": (0.2, 0.1)}
FULL_MODEL = {"sizes": (784, 256, 10), "n_train": 20000, "epochs": 3, "lr": (0.2, 0.1)}


def check_model_settings(model: dict[str, Any]) -> None:
    """``ValueError`` naming any key of a track's ``model`` setting that :data:`QUICK_MODEL` lacks."""
    if not isinstance(model, dict):
        raise ValueError(f"model={model!r} is invalid; allowed: a dict with keys {sorted(QUICK_MODEL)}")
    unknown = sorted(set(model) - set(QUICK_MODEL))
    if unknown:
        raise ValueError(f"model: unknown keys {unknown}; allowed: {sorted(QUICK_MODEL)}")
    for k in ("n_train", "epochs"):
        if k in model and (not isinstance(model[k], int) or isinstance(model[k], bool) or model[k] < 1):
            raise ValueError(f"model.{k}={model[k]!r} is invalid; allowed: an int >= 1")


def track_model(ctx, model: dict[str, Any] | None = None, *, quick: bool | None = None
                ) -> tuple[EqPropMLP, Path, dict[str, Any]]:
    """The float model the analog tracks program: trained once per run.

    With the run's model cache (``ctx.model_cache``, :mod:`tracks.harness.model_cache`, which every
    :class:`~tracks.harness.base.TrackContext` has) the model is an entry of ``<out>/model_cache``
    under the shared key layout (:func:`~tracks.harness.model_cache.training_key`: MNIST slice hash,
    sizes, ``tracks.sweep.train_mlp`` with epochs and lr, seed 0, device), so Tracks 3, 17 and any
    other track asking for the same model (e.g. Track 36's seed-0 MNIST model) train it once per run
    and a resumed run loads it. Without one (a plain object with ``out_dir``) it falls back to
    :func:`cached_mlp` in ``ctx.out_dir/cache`` (the ``sweep`` command keeps that cache).

    ``model`` (a track's ``model`` setting) may change any key of :data:`QUICK_MODEL` / :data:`FULL_MODEL`.
    Returns ``(net float32, path of its checkpoint, settings)``.
    """
    from ..data import load_dataset
    quick = ctx.quick if quick is None else quick
    check_model_settings(model or {})
    settings = {**(QUICK_MODEL if quick else FULL_MODEL), **(model or {})}
    x, y = load_dataset("mnist", "train", data_dir=ctx.data_dir)
    n = int(settings["n_train"])
    x, y = torch.as_tensor(np.asarray(x[:n])), torch.as_tensor(np.asarray(y[:n]))
    sizes, epochs, lr = tuple(settings["sizes"]), int(settings["epochs"]), tuple(settings["lr"])
    dev = str(ctx.torch_device)
    cache = getattr(ctx, "model_cache", None)
    if cache is None:
        net, path = cached_mlp(Path(ctx.out_dir) / "cache", sizes, x, y, progress=ctx.progress, epochs=epochs, lr=lr,
                               device=dev)
        return net, path, settings
    from ..harness.model_cache import training_key
    seed = 0  # train_mlp's default: the analog tracks vary the chip, not the float model
    key = training_key(dataset="mnist", x=x, y=y, model={"class": "EqPropMLP", "sizes": list(sizes)},
                       trainer="tracks.sweep.train_mlp", recipe={"epochs": epochs, "lr": list(lr)}, seed=seed,
                       device=dev)
    # label "mlp_mnist" as Track 36's, so the same key is the same file
    net = cache.get_or_train(key, lambda: train_mlp(sizes, x, y, progress=ctx.progress, epochs=epochs, lr=lr,
                                                    seed=seed, device=dev),
                             label="mlp_mnist", train_config={"trainer": "tracks.sweep.train_mlp"},
                             metrics={"n_train": n})
    if not isinstance(net, EqPropMLP):
        raise CheckpointError(f"model cache entry for {key['model']} holds a {type(net).__name__}, not an EqPropMLP")
    return net.to(torch.float32), cache.paths(key, "mlp_mnist")[0], settings

"""Track 44: in-situ EqProp training from scratch on pulsed resistive devices (issue 16).

An EqProp MLP with random initial weights is programmed on a crossbar (:mod:`hwsim.analog`; read
noise of the ``analog_pcm`` preset, ideal converters, no faults) and trained *on the chip* from
scratch: every relaxation runs through noisy crossbar reads and every weight update is sent to the
devices as pulses of a device update model (:mod:`hwsim.devices`, after IBM aihwkit: pulse counting
with ``dw_min`` and stochastic rounding, device-to-device and cycle-to-cycle variation, up/down
asymmetry, state-dependent steps). Test accuracy after a fixed budget, per point:

* **asymmetry**: ``constant_step`` devices (aihwkit defaults), ``up_down`` swept (down steps
  ``1 - up_down`` the size of up steps), symmetric nudging;
* **dw_min**: ``constant_step``, step size swept from aihwkit's 1/1200 of the range to coarse
  (few-state) devices, symmetric nudging;
* **nudging x model**: every device model of ``Config.models`` (``DEVICE_PRESETS``) with the
  symmetric-nudging estimate (``beta``, ``-beta``) and the one-sided one (0, ``beta``).

Criteria (each can fail; tests break the path each names):

* ``acc_ideal_symmetric >= min_acc_ideal``: in-situ learning from scratch works on the chip with
  ideal (exact) updates (an update path that does nothing stays at chance and fails);
* ``asym_drop_points >= 2``: the strongest asymmetry of the sweep costs at least 2 points against
  symmetric devices (the asymmetry really reaches the devices: a simulator ignoring ``up_down``
  gives ~0 and fails);
* ``dw_min_drop_points >= 2``: the coarsest step of the sweep costs at least 2 points against the
  finest (the pulse quantisation is really applied).

Reported: every point's accuracy (mean and 95 % CI over seeds), ``sym_minus_one_sided_<model>``
(points), plots ``t44_asymmetry.png``, ``t44_dw_min.png``, ``t44_nudging.png`` and
``t44_device_response.png`` (the pulse response of each pulsed model).

Settings: :class:`Config` (``QUICK`` / ``FULL``).
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
from pathlib import Path

import numpy as np
import torch

from hwsim.analog import AnalogCrossbarMLP
from models.eqprop_mlp import EqPropConfig, EqPropMLP
from models.progress import progress as progress_bar
from quant.formats import AnalogSpec
from quant.presets import DEVICE_PRESETS, get_preset, with_device
from tracks.data import load_dataset
from tracks.harness.base import Criterion, TrackContext, TrackResult, TrackSpec
from tracks.harness.plots import figure
from tracks.harness.stats import mean_ci95
from tracks.harness.threads import torch_threads

log = logging.getLogger("eqprop_hwsim.tracks.t44")

SPEC = TrackSpec(
    id=44,
    slug="device_updates",
    name="In-situ EqProp on pulsed devices: asymmetry, dw_min, nudging",
    claim="EqProp trained from scratch on a crossbar learns with ideal updates; up/down asymmetry and "
          "coarse pulse steps of resistive devices cost accuracy, measured per device model with "
          "symmetric and one-sided nudging.",
    criteria=(
        Criterion("acc_ideal_symmetric", ">=", 0.70),
        Criterion("asym_drop_points", ">=", 2.0),
        Criterion("dw_min_drop_points", ">=", 2.0),
    ),
    est_seconds_full=1500.0,
    est_seconds_quick=60.0,
    est_seconds_cpu_full=190.0,
)

AIHWKIT_DW_MIN = 0.001 / 1.2   # aihwkit PulsedDevice default dw_min on its range of 1.2
SWEEP_MODEL = "constant_step"


@dataclasses.dataclass(frozen=True)
class Config:
    """Settings of Track 44."""

    sizes: tuple[int, ...] = (784, 64, 10)   # the MLP trained on the chip
    n_train: int = 20000                      # training images (the first n_train; batches drawn at random)
    n_test: int = 10000                       # test images (the first n_test)
    steps: int = 400                          # in-situ updates (batches)
    batch_size: int = 50
    lr: tuple[float, ...] = (0.2, 0.1)        # per layer (the analog tracks' ex-situ recipe)
    beta: float = 0.5
    headroom: float = 3.0                     # w_max = headroom * max|initial weight| maps to g_max
    asymmetries: tuple[float, ...] = (0.0, 0.2, 0.4, 0.6, 0.8, 0.9)
    dw_mins: tuple[float, ...] = (AIHWKIT_DW_MIN, 0.003, 0.01, 0.03, 0.1, 0.2)
    models: tuple[str, ...] = ("ideal", "constant_step", "linear_step", "soft_bounds", "exp_step", "pow_step")
    nudgings: tuple[str, ...] = ("symmetric", "one_sided")   # estimates compared under each model
    torch_threads: int = 1

    def __post_init__(self) -> None:
        for f in ("n_train", "n_test", "steps", "batch_size", "torch_threads"):
            if not isinstance(getattr(self, f), int) or getattr(self, f) < 1:
                raise ValueError(f"{f}={getattr(self, f)!r} is invalid; allowed: an int >= 1")
        if len(self.sizes) < 2 or self.sizes[0] != 784 or self.sizes[-1] != 10:
            raise ValueError(f"sizes={self.sizes!r} is invalid; allowed: (784, ..., 10) for MNIST")
        if not self.beta > 0 or not self.headroom >= 1:
            raise ValueError(f"beta={self.beta} / headroom={self.headroom} invalid; allowed: beta > 0, headroom >= 1")
        if len(self.asymmetries) < 2 or 0.0 not in self.asymmetries:
            raise ValueError(f"asymmetries={self.asymmetries!r} is invalid; allowed: >= 2 values including 0.0")
        if len(self.dw_mins) < 2:
            raise ValueError(f"dw_mins={self.dw_mins!r} is invalid; allowed: >= 2 step sizes")
        for v in self.asymmetries:
            AnalogSpec(up_down=v)       # the spec's own validation names the bad value
        for v in self.dw_mins:
            AnalogSpec(dw_min=v)
        if not self.nudgings or "symmetric" not in self.nudgings or any(
                m not in ("symmetric", "one_sided", "random_sign") for m in self.nudgings):
            raise ValueError(f"nudgings={self.nudgings!r} is invalid; allowed: 'symmetric' plus any of "
                             "'one_sided', 'random_sign'")
        if "ideal" not in self.models or any(m not in DEVICE_PRESETS for m in self.models):
            raise ValueError(f"models={self.models!r} is invalid; allowed: names of {list(DEVICE_PRESETS)} "
                             "including 'ideal'")


QUICK = Config(n_train=5000, n_test=1000, steps=150, asymmetries=(0.0, 0.9), dw_mins=(AIHWKIT_DW_MIN, 0.2),
               models=("ideal", "constant_step"))
FULL = Config()
CPU_FULL = dataclasses.replace(QUICK, n_test=2000, asymmetries=(0.0, 0.6, 0.9), dw_mins=(AIHWKIT_DW_MIN, 0.03, 0.2))
"""The CPU-reduced full variant ("full (CPU-reduced)"), what ``run_suite.py --all`` runs on ``--device cpu``
(FULL runs with ``--device cuda`` or ``--full-recipe``): 5000 training images, 150 updates, 2000 test
images, asymmetry {0, 0.6, 0.9}, dw_min {1/1200, 0.03, 0.2}, ideal and constant-step devices, every seed;
the criteria and bars are the track's own (unchanged). Measured 2026-11-30 (seeds 0 1 2, ``/usr/bin/time -v``:
188 s CPU time, 2602 s wall under load ~17): pass; ideal symmetric 85.45 %, accuracy drop at asymmetry 0.9
5.6 pt, at dw_min 0.2 4.7 pt (bars 70 %, 2 pt, 2 pt)."""


def chip_spec(model: str, **fields) -> AnalogSpec:
    """The chip of a point: ``analog_pcm`` read noise, ideal converters, no faults, the device model
    ``model`` of :data:`DEVICE_PRESETS` with ``fields`` changed (e.g. ``up_down``, ``dw_min``)."""
    base = dataclasses.replace(get_preset("analog_pcm").analog, dac_bits=None, adc_bits=None, prog_noise_std=0.0,
                               drift_nu=0.0)
    return with_device(base, model, **fields)


def train_on_chip(spec: AnalogSpec, c: Config, data, *, seed: int, mode: str, progress: bool = False,
                  desc: str = "") -> float:
    """Train a fresh ``c.sizes`` MLP (init seed ``seed``) on a chip of ``spec`` for ``c.steps`` in-situ
    EqProp updates with nudging ``mode``; returns the chip's test accuracy."""
    xtr, ytr, xte, yte = data
    net = EqPropMLP(EqPropConfig(sizes=tuple(c.sizes)), seed=seed).double()
    chip = AnalogCrossbarMLP(net, spec, seed=seed, program=False)
    chip.program(headroom=c.headroom)
    lrs = list(c.lr) + [c.lr[-1]] * (chip.n_layers - len(c.lr))
    gen = torch.Generator().manual_seed(5000 + seed)
    for _ in progress_bar(range(c.steps), enabled=progress, desc=desc):
        idx = torch.randint(0, xtr.shape[0], (c.batch_size,), generator=gen)
        g = chip.eqprop_grads(xtr[idx], ytr[idx], beta=c.beta, n_free_steps=20, n_nudge_steps=8, mode=mode)
        chip.apply_update([-lrs[i] * gi for i, gi in enumerate(g)])
    return chip.accuracy(xte, yte)


def _points(c: Config) -> list[dict]:
    """Unique points ``{model, mode, up_down, dw_min}`` of the three sweeps."""
    default_dw = DEVICE_PRESETS[SWEEP_MODEL]["dw_min"]
    pts = [{"model": SWEEP_MODEL, "mode": "symmetric", "up_down": a, "dw_min": default_dw} for a in c.asymmetries]
    pts += [{"model": SWEEP_MODEL, "mode": "symmetric", "up_down": 0.0, "dw_min": d} for d in c.dw_mins]
    pts += [{"model": m, "mode": mode, "up_down": 0.0, "dw_min": DEVICE_PRESETS[m].get("dw_min", default_dw)}
            for m in c.models for mode in c.nudgings]
    out = []
    for p in pts:
        if p not in out:
            out.append(p)
    return out


def _plot_line(path: Path, xs, ys, hs, *, xlabel: str, title: str, ref: float | None, logx: bool = False) -> Path:
    with figure(path, figsize=(5.5, 3.8), dpi=120) as (fig, axes):
        ax = axes[0][0]
        ys, hs = np.asarray(ys) * 100, np.nan_to_num(np.asarray(hs) * 100)
        ax.plot(xs, ys, marker="o", color="C0", label=f"{SWEEP_MODEL} devices, symmetric nudging")
        ax.fill_between(xs, ys - hs, ys + hs, color="C0", alpha=0.2, label="95 % CI over seeds")
        if ref is not None:
            ax.axhline(100 * ref, color="k", ls=":", label="ideal (exact) updates")
        if logx:
            ax.set_xscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("test accuracy (%)")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return path


def _plot_nudging(path: Path, models, acc) -> Path:
    with figure(path, figsize=(6.5, 3.8), dpi=120) as (fig, axes):
        ax = axes[0][0]
        xs = np.arange(len(models))
        modes = sorted({mode for _, mode in acc}, key=("symmetric", "one_sided", "random_sign").index)
        w = 0.8 / len(modes)
        for j, mode in enumerate(modes):
            ys = [100 * acc[(m, mode)][0] for m in models]
            hs = [100 * np.nan_to_num(acc[(m, mode)][1]) for m in models]
            ax.bar(xs + (j - (len(modes) - 1) / 2) * w, ys, w, yerr=hs, label=f"{mode} nudging", color=f"C{j}")
        ax.set_xticks(xs, models, rotation=20, fontsize=8)
        ax.set_ylabel("test accuracy (%)")
        ax.set_title("in-situ EqProp from scratch per device model")
        ax.grid(alpha=0.3, axis="y")
        ax.legend(fontsize=8, loc="lower right", framealpha=0.9)
    return path


def _plot_response(path: Path, models) -> Path:
    """Pulse response of 3 devices of each pulsed model (aihwkit-style: up pulses, then down pulses)."""
    from hwsim.devices import response_curve
    pulsed = [m for m in models if m != "ideal"]
    with figure(path, figsize=(6.5, 3.8), dpi=120) as (fig, axes):
        ax = axes[0][0]
        for j, m in enumerate(pulsed):
            spec = chip_spec(m)
            n = int(round(1.5 / spec.dw_min))
            r = response_curve(spec, n, n_devices=3, backend="numba")
            for d in range(r.shape[1]):
                ax.plot(np.arange(r.shape[0]), r[:, d], color=f"C{j}", lw=0.8, label=m if d == 0 else None)
        ax.set_xlabel("pulse number (up, then down)")
        ax.set_ylabel("conductance / g_max")
        ax.set_title("device pulse response (3 devices per model, hwsim.devices)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return path


def run(ctx: TrackContext) -> TrackResult:
    c = ctx.settings(QUICK, FULL, cpu=CPU_FULL)
    with torch_threads(c.torch_threads):
        return _run(ctx, c)


def _run(ctx: TrackContext, c: Config) -> TrackResult:
    seeds = tuple(ctx.seeds[:1]) if ctx.quick else tuple(ctx.seeds)
    xtr, ytr = load_dataset("mnist", "train", data_dir=ctx.data_dir)
    xte, yte = load_dataset("mnist", "test", data_dir=ctx.data_dir)
    data = (torch.as_tensor(np.asarray(xtr[:c.n_train]), dtype=torch.float64), torch.as_tensor(np.asarray(ytr[:c.n_train])),
            torch.as_tensor(np.asarray(xte[:c.n_test]), dtype=torch.float64), torch.as_tensor(np.asarray(yte[:c.n_test])))
    rows = []
    points = _points(c)
    for k, p in enumerate(points):
        spec = chip_spec(p["model"], **({} if p["model"] == "ideal" else {"up_down": p["up_down"], "dw_min": p["dw_min"]}))
        accs = [train_on_chip(spec, c, data, seed=s, mode=p["mode"], progress=ctx.progress,
                              desc=f"point {k + 1}/{len(points)} {p['model']} {p['mode']} up_down {p['up_down']:g} "
                                   f"dw_min {p['dw_min']:.3g} seed {s}") for s in seeds]
        m, h = mean_ci95(accs)
        rows.append({**p, "acc": m, "acc_ci95": h, "acc_per_seed": accs})
        log.info("t44 %s -> %.4f", p, m)

    def acc_of(**q):
        r = next(r for r in rows if all(r[k] == v for k, v in q.items()))
        return r["acc"], r["acc_ci95"]

    default_dw = DEVICE_PRESETS[SWEEP_MODEL]["dw_min"]
    asym = [acc_of(model=SWEEP_MODEL, mode="symmetric", up_down=a, dw_min=default_dw) for a in c.asymmetries]
    dws = sorted(c.dw_mins)
    dwr = [acc_of(model=SWEEP_MODEL, mode="symmetric", up_down=0.0, dw_min=d) for d in dws]
    nud = {(m, mode): acc_of(model=m, mode=mode, up_down=0.0) for m in c.models for mode in c.nudgings}
    ideal = nud[("ideal", "symmetric")][0]
    a0 = asym[list(c.asymmetries).index(0.0)][0]
    i_max = int(np.argmax(np.abs(c.asymmetries)))
    plots = [
        _plot_line(ctx.plots_dir / "t44_asymmetry.png", list(c.asymmetries), [a for a, _ in asym], [h for _, h in asym],
                   xlabel="up/down asymmetry up_down (down step = 1 - up_down)", ref=ideal,
                   title="in-situ EqProp from scratch vs device asymmetry"),
        _plot_line(ctx.plots_dir / "t44_dw_min.png", dws, [a for a, _ in dwr], [h for _, h in dwr], logx=True,
                   xlabel="dw_min (pulse step, fraction of the conductance range)", ref=ideal,
                   title="in-situ EqProp from scratch vs pulse step"),
        _plot_nudging(ctx.plots_dir / "t44_nudging.png", list(c.models), nud),
    ]
    if any(m != "ideal" for m in c.models):
        plots.append(_plot_response(ctx.plots_dir / "t44_device_response.png", c.models))
    metrics = {
        "acc_ideal_symmetric": ideal,
        "asym_drop_points": 100.0 * (a0 - asym[i_max][0]),
        "dw_min_drop_points": 100.0 * (dwr[0][0] - dwr[-1][0]),
        "asym_max": float(c.asymmetries[i_max]), "dw_min_finest": dws[0], "dw_min_coarsest": dws[-1],
        **{f"sym_minus_one_sided_{m}": 100.0 * (nud[(m, 'symmetric')][0] - nud[(m, 'one_sided')][0])
           for m in c.models if "one_sided" in c.nudgings},
        **{f"acc_{m}_{mode}": v[0] for (m, mode), v in nud.items()},
        "asymmetry_curve": [{"up_down": a, "acc": v, "acc_ci95": h} for a, (v, h) in zip(c.asymmetries, asym)],
        "dw_min_curve": [{"dw_min": d, "acc": v, "acc_ci95": h} for d, (v, h) in zip(dws, dwr)],
        "points": rows,
        "n_seeds": len(seeds), "steps": c.steps, "batch_size": c.batch_size, "n_train": c.n_train, "n_test": c.n_test,
        "device_specs": {m: DEVICE_PRESETS[m] for m in c.models},
    }
    out = Path(ctx.out_dir) / "t44"
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1, default=float))
    notes = [f"MLP {'-'.join(map(str, c.sizes))} trained from scratch on the chip: {c.steps} in-situ EqProp updates "
             f"(batches of {c.batch_size} from the first {c.n_train} MNIST training images), lr {c.lr}, beta {c.beta}, "
             f"T1 20, T2 8; chip = analog_pcm read noise (0.0088 g_max per read), ideal DAC/ADC, no programming noise, "
             f"drift or faults, initial weights at 1/{c.headroom:g} of the conductance range; test on the first "
             f"{c.n_test} images; {len(seeds)} seed(s)",
             f"device models: aihwkit defaults (dw_min {AIHWKIT_DW_MIN:.3g} of the range, dtod 0.3, c2c 0.3, <= 31 "
             f"pulses per update); asymmetry and dw_min sweeps on {SWEEP_MODEL}"]
    if any(math.isnan(v) for v in (metrics["asym_drop_points"], metrics["dw_min_drop_points"])):
        notes.append("a sweep point is NaN")
    return TrackResult(metrics=metrics, artifacts=[str(p) for p in plots], notes=notes)

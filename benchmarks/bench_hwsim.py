"""Inference throughput on TRAINED weights: numba FixedPointMLP (int8) vs float32 torch EqPropMLP.

The network is a 784-512-10 ``EqPropMLP`` trained by EqProp on real MNIST (``--train-n`` training
images, ``--epochs``; cached as a checkpoint in ``--out`` and reused when its key matches) or loaded
with ``--model CKPT``. The fixed-point copy is quantised from it (``--preset``). Both paths run the
same MNIST test images (``--n``, batch ``--batch``, T = ``--steps`` free sweeps).

Protocol, per thread count (``--threads``, default 1 and 2; torch and numba set alike):
``--rounds`` (default 7) interleaved rounds, each timing

* ``float32_torch``: ``EqPropMLP.free_phase``, all T sweeps (drive GEMM once, then T float32 sweeps);
* ``float32_torch_exit``: the same with ``tol`` = the smallest normal float32 (torch's own exit: the
  batch stops once every sample's state is a fixed point of the float sweep);
* ``fixed_full_T``: ``FixedPointMLP.relax(early_exit=False)``, every sample runs all T sweeps - with
  the fused kernel (``hwsim.fixed_point.fused2_kernel``) these are event-driven: a product or a
  unit update is recomputed only when its inputs changed (exact: the update is a deterministic
  function of them); the target ratio is this path over ``float32_torch``;
* ``fixed_dense_T``: ``engine="dense"``: every unit and every product recomputed in every sweep;
* ``fixed_early_exit``: ``early_exit=True``: each sample stops at its own exact fixed point (bit-identical
  to all T sweeps with deterministic rounding), compared with ``float32_torch_exit`` (exit on both
  sides) and with ``float32_torch``.

Both sides use the same thread count (``torch.set_num_threads`` and ``numba.set_num_threads``; the
fixed point's drive GEMM runs in torch float32 BLAS, exact by the 2**24 bound). Reported: median
samples/s, IQR and min-max of the wall time per path, the ratio of the medians and the median (and
range) of the per-round paired ratios, the ratio of the median process-CPU times (all threads; robust
to other processes' load, but at 2 threads it measures work, not latency), the load average. All ratios come from this
one run. The machine may be shared: the load average is printed beside every ratio.

Exactness, on the measured outputs (the process exits 1 when one fails):
* the output-layer codes of every timed fixed-point run equal the torch int64 mirror
  (``hwsim.torch_mirror.torch_relax``, an independent implementation) on the same images;
* early-exit output codes equal the all-T output codes (exact for deterministic rounding);
* every round gives the same codes;
* the int8 GEMM anchor (below) equals the numpy int64 product.

Physical anchor (``--anchor-rounds``, default 7 per thread count): the first-layer GEMM of one batch,
``(batch x 784) @ (784 x 512)``, as exact int8 x int8 -> int32 ``torch._int_mm``
(:func:`hwsim.fast_int.drive_accumulator`) vs float32 ``@``, interleaved; median, IQR, min-max, ratio.

    .venv/bin/python benchmarks/bench_hwsim.py                      # train (cached), 10k images, 1 and 2 threads
    .venv/bin/python benchmarks/bench_hwsim.py --model ckpt.pt --threads 1
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numba  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

import quant  # noqa: E402
from hwsim.fast_int import Int8Operand, drive_accumulator  # noqa: E402
from hwsim.fixed_point import FixedPointMLP  # noqa: E402
from hwsim.torch_mirror import torch_relax  # noqa: E402
from models.checkpoint import load_checkpoint, save_checkpoint  # noqa: E402
from models.eqprop_mlp import EqPropConfig, EqPropMLP  # noqa: E402
from models.train import TrainConfig, evaluate, train  # noqa: E402
from tracks.data import load_dataset  # noqa: E402
from tracks.harness.machine import describe_machine  # noqa: E402

SIZES = (784, 512, 10)


def loadavg() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


def trained_model(a, data_dir) -> tuple[EqPropMLP, str]:
    """The trained float network: ``--model``, else the cached checkpoint in ``--out``, else train it."""
    if a.model:
        p = Path(a.model)
        if not p.is_file():
            raise SystemExit(f"--model {p}: no such file; pass a checkpoint written by models.checkpoint.save_checkpoint")
        net, _ = load_checkpoint(p)
        if not isinstance(net, EqPropMLP) or tuple(net.config.sizes)[0] != 784:
            raise SystemExit(f"--model {p}: a {type(net).__name__} {getattr(net.config, 'sizes', '?')}; "
                             "expected an EqPropMLP with 784 inputs (MNIST)")
        return net.float(), str(p)
    cfg = TrainConfig(method="eqprop", epochs=a.epochs, batch_size=100, lr=0.05, momentum=0.9, seed=0)
    ckpt = Path(a.out) / f"eqprop_mlp_784-512-10_mnist{a.train_n}_e{a.epochs}_seed0.pt"
    if ckpt.is_file():
        net, _ = load_checkpoint(ckpt)
        return net.float(), str(ckpt)
    x, y = load_dataset("mnist", "train", data_dir)
    xt, yt = torch.from_numpy(x[:a.train_n]), torch.from_numpy(y[:a.train_n])
    net = EqPropMLP(EqPropConfig(sizes=SIZES), seed=0).float()
    print(f"training {SIZES} by EqProp on {a.train_n} MNIST images, {a.epochs} epoch(s) (cached in {ckpt}) ...",
          flush=True)
    t0 = time.perf_counter()
    train(net, xt, yt, cfg, progress=False)
    print(f"  trained in {time.perf_counter() - t0:.1f} s", flush=True)
    ckpt.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(ckpt, net, train_config=cfg.to_dict(), epoch=a.epochs)
    return net, str(ckpt)


def stats(times: list[float], n: int) -> dict:
    t = np.asarray(times)
    q1, med, q3 = np.percentile(t, [25, 50, 75])
    return {"median_s": round(float(med), 4), "iqr_s": [round(float(q1), 4), round(float(q3), 4)],
            "min_s": round(float(t.min()), 4), "max_s": round(float(t.max()), 4),
            "samples_per_s": round(n / float(med), 1), "runs_s": [round(float(v), 4) for v in t]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10000, help="MNIST test images per timed run (default: the full test set)")
    ap.add_argument("--min-seconds", type=float, default=0.2,
                    help="warn when a path's median timed run is shorter than this (too little work to trust)")
    ap.add_argument("--batch", type=int, default=1000)
    ap.add_argument("--steps", type=int, default=30, help="free-phase sweeps T")
    ap.add_argument("--rounds", type=int, default=7, help="interleaved rounds per thread count")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--preset", default="int8")
    ap.add_argument("--model", default=None, help="checkpoint of a trained EqPropMLP (else train one, cached)")
    ap.add_argument("--train-n", type=int, default=20000, help="MNIST training images when training here")
    ap.add_argument("--epochs", type=int, default=2, help="epochs when training here")
    ap.add_argument("--out", default="runs/bench_hwsim", help="output folder (model cache, result JSON)")
    ap.add_argument("--anchor-rounds", type=int, default=7,
                    help="rounds of the int8 GEMM anchor (torch._int_mm vs float32 @, one batch; 0 skips)")
    ap.add_argument("--no-dense", action="store_true",
                    help="skip the fixed_dense_T path (every unit and product recomputed every sweep)")
    ap.add_argument("--data-dir", default=None)
    a = ap.parse_args()
    if a.batch < 1 or a.n < a.batch or a.rounds < 1 or a.steps < 1 or min(a.threads) < 1:
        ap.error("need --batch >= 1, --n >= --batch, --rounds >= 1, --steps >= 1, --threads >= 1")
    if max(a.threads) > numba.config.NUMBA_NUM_THREADS:
        ap.error(f"--threads {max(a.threads)} exceeds NUMBA_NUM_THREADS={numba.config.NUMBA_NUM_THREADS}")

    data_dir = a.data_dir
    shared = Path(__file__).resolve().parents[2] / "shared" / "data"
    if data_dir is None and "EQPROP_DATA" not in os.environ and (shared / "mnist").is_dir():
        data_dir = shared  # the team's shared copy, as tests/conftest.py does
    Path(a.out).mkdir(parents=True, exist_ok=True)
    net, model_src = trained_model(a, data_dir)
    x, y = load_dataset("mnist", "test", data_dir)
    x, y = x[:a.n], y[:a.n]
    fp = FixedPointMLP.from_model(net, quant.get_preset(a.preset))
    if fp.spec.rounding == "stochastic":
        ap.error(f"--preset {a.preset} rounds stochastically: early exit and the exactness checks need deterministic rounding")
    xt = torch.from_numpy(x)
    codes = fp.quantize_input(x)

    def run_float(tol: float = 0.0):
        with torch.no_grad():
            return torch.cat([net.free_phase(xt[i:i + a.batch], n_steps=a.steps, tol=tol)[0][-1]
                              for i in range(0, a.n, a.batch)]).numpy()

    def run_fixed(early: bool, engine: str = "auto"):
        return np.concatenate([fp.relax(codes[i:i + a.batch], n_steps=a.steps, early_exit=early, engine=engine)[0][-1]
                               for i in range(0, a.n, a.batch)])

    # float32 torch: all T sweeps; and its exact-exit path (stop once every sample's residual is <= the
    # smallest normal float32, i.e. the batch sits at a fixed point of the float sweep)
    tiny = float(torch.finfo(torch.float32).tiny)
    paths = {"float32_torch": run_float, "float32_torch_exit": lambda: run_float(tiny),
             "fixed_full_T": lambda: run_fixed(False), "fixed_dense_T": lambda: run_fixed(False, "dense"),
             "fixed_early_exit": lambda: run_fixed(True)}
    if a.no_dense:
        del paths["fixed_dense_T"]
    log_engine = "fused two-layer kernel" if not fp.fused_unsupported() else "generic per-layer kernels"
    print(f"fixed-point engine: {log_engine}", flush=True)
    # reference output codes: the torch int64 mirror (independent implementation), outside the timings
    t0 = time.perf_counter()
    ref = np.concatenate([torch_relax(fp, torch.from_numpy(codes[i:i + a.batch]), n_steps=a.steps,
                                      early_exit=False)[0][-1].numpy() for i in range(0, a.n, a.batch)])
    print(f"torch int64 mirror reference on {a.n} images: {time.perf_counter() - t0:.1f} s", flush=True)

    results, exact = {}, {"fixed_vs_torch_mirror": True, "early_exit_vs_full_T": True, "rounds_identical": True}
    for k in a.threads:
        torch.set_num_threads(k)
        numba.set_num_threads(k)
        for fn in paths.values():  # warm-up (numba compilation, allocator) outside the timings
            fn()
        load0 = loadavg()
        times = {p: [] for p in paths}
        cpu = {p: [] for p in paths}  # process CPU seconds (all threads): robust to other processes' load
        first = {}
        for r in range(a.rounds):
            for p, fn in paths.items():
                t0, c0 = time.perf_counter(), time.process_time()
                out = fn()
                times[p].append(time.perf_counter() - t0)
                cpu[p].append(time.process_time() - c0)
                if p == "fixed_full_T":
                    exact["fixed_vs_torch_mirror"] &= bool(np.array_equal(out, ref))
                    full_out = out
                elif p == "fixed_dense_T":
                    exact["dense_vs_torch_mirror"] = exact.get("dense_vs_torch_mirror", True) & bool(np.array_equal(out, ref))
                elif p == "fixed_early_exit":
                    exact["early_exit_vs_full_T"] &= bool(np.array_equal(out, full_out))
                if p in first:
                    exact["rounds_identical"] &= bool(np.array_equal(out, first[p]))
                else:
                    first[p] = out
            print(f"[{k} thread(s)] round {r}: " + "  ".join(f"{p} {times[p][-1]:.3f}s" for p in paths)
                  + f"  load {loadavg()}", flush=True)
        load1 = loadavg()
        anchor = None
        if a.anchor_rounds > 0:  # the physical anchor: the drive GEMM (batch x 784) @ (784 x 512), int8 vs float32
            op, cb = Int8Operand(fp.w_codes[0]), codes[:a.batch]
            w32t, cb32 = torch.from_numpy(fp.w_codes[0].astype(np.float32)).t(), torch.from_numpy(cb.astype(np.float32))
            exact["int_mm_drive_vs_numpy"] = bool(np.array_equal(drive_accumulator(fp, cb, op), cb @ fp.w_codes[0].T))
            ta = {"int8_int_mm": [], "float32_matmul": []}
            for _ in range(a.anchor_rounds):
                for name, fn in (("int8_int_mm", lambda: drive_accumulator(fp, cb, op)),
                                 ("float32_matmul", lambda: cb32 @ w32t)):
                    t0 = time.perf_counter()
                    fn()
                    ta[name].append(time.perf_counter() - t0)
            anchor = {name: stats(t, a.batch) for name, t in ta.items()}
            anchor["ratio_int8_over_float32"] = round(anchor["float32_matmul"]["median_s"]
                                                      / anchor["int8_int_mm"]["median_s"], 3)
            anchor["loadavg_after"] = loadavg()
        st = {p: stats(t, a.n) for p, t in times.items()}
        ratios = {}
        # (fixed path, float path it is compared with): all sweeps on both sides; exact exit on both sides
        pairs = [("fixed_full_T", "float32_torch"), ("fixed_dense_T", "float32_torch"),
                 ("fixed_early_exit", "float32_torch_exit"), ("fixed_early_exit", "float32_torch")]
        for p, fl in pairs:
            if p not in times:
                continue
            paired = np.asarray(times[fl]) / np.asarray(times[p])
            ratios[f"{p} / {fl}"] = {
                "ratio_of_medians": round(st[fl]["median_s"] / st[p]["median_s"], 3),
                "paired_median": round(float(np.median(paired)), 3),
                "paired_min_max": [round(float(paired.min()), 3), round(float(paired.max()), 3)],
                "cpu_time_ratio_of_medians": round(float(np.median(cpu[fl]) / np.median(cpu[p])), 3)}
        acc = {"float32_torch": float((first["float32_torch"].argmax(1) == y).mean()),
               "float32_torch_exit": float((first["float32_torch_exit"].argmax(1) == y).mean()),
               "fixed": float((first["fixed_full_T"].argmax(1) == y).mean())}
        results[str(k)] = {"stats": st, "cpu_stats": {p: stats(t, a.n) for p, t in cpu.items()}, "ratios_fixed_over_float32": ratios, "accuracy": acc,
                           "loadavg_before": load0, "loadavg_after": load1, "int_gemm_anchor": anchor}

    m = describe_machine()
    print(f"\nmachine: {m['cpu']}, {m['logical_cores']} logical cores; SHARED machine: figures are noisy")
    print(f"784-512-10 trained ({model_src}), T={a.steps}, batch {a.batch}, {a.n} MNIST test images, "
          f"preset {a.preset}, {a.rounds} interleaved rounds")
    for k, res in results.items():
        acc = res["accuracy"]
        print(f"--- {k} thread(s): load avg before {res['loadavg_before']} after {res['loadavg_after']}; "
              f"test acc float32 {acc['float32_torch']:.4f} (exit {acc['float32_torch_exit']:.4f}), "
              f"fixed {acc['fixed']:.4f}")
        for p, s in res["stats"].items():
            print(f"  {p:18s} {s['samples_per_s']:9.0f} samples/s  median {s['median_s']:.3f}s  "
                  f"IQR {s['iqr_s']}  min-max [{s['min_s']}, {s['max_s']}]")
        for p, r in res["ratios_fixed_over_float32"].items():
            target = "   target >= 2x" if p == "fixed_full_T / float32_torch" else ""
            print(f"  speed {p:38s}: {r['ratio_of_medians']:.2f}x (ratio of medians), paired per round "
                  f"median {r['paired_median']:.2f}x range {r['paired_min_max']}; CPU-time (all threads) "
                  f"{r['cpu_time_ratio_of_medians']:.2f}x{target}   [load {res['loadavg_after']}]")
        an = res["int_gemm_anchor"]
        if an:
            print(f"  anchor GEMM ({a.batch}x784 @ 784x512): int8 torch._int_mm median {an['int8_int_mm']['median_s']:.4f}s"
                  f" min-max [{an['int8_int_mm']['min_s']}, {an['int8_int_mm']['max_s']}], float32 @ median "
                  f"{an['float32_matmul']['median_s']:.4f}s min-max [{an['float32_matmul']['min_s']}, "
                  f"{an['float32_matmul']['max_s']}]: int8/float32 speed {an['ratio_int8_over_float32']:.3f}x"
                  f"   [load {an['loadavg_after']}]")
        short = [p for p, s in res["stats"].items() if s["median_s"] < a.min_seconds]
        if short:
            print(f"  WARNING: median run of {short} shorter than --min-seconds {a.min_seconds}: raise --n to trust "
                  "these figures")
    ok = all(exact.values())
    print(f"exactness on the measured outputs ({a.n} images, output-layer codes): {exact}")
    out = {"bench": "hwsim_fixed_point", "preset": a.preset, "n": a.n, "batch": a.batch, "steps": a.steps,
           "rounds": a.rounds, "model": model_src, "results": results, "exact": exact,
           "machine": {"cpu": m["cpu"], "logical_cores": m["logical_cores"]}}
    (Path(a.out) / "bench_hwsim.json").write_text(json.dumps(out, indent=1))
    print(json.dumps(out))
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())

"""README figures from one run: the table of every track's criteria and key metrics, generated.

The README's "Measured figures" come from one ``run_suite.py --all`` run whose ``results.json`` and
``report.md`` are kept in the repository (``docs/results/<run>/``). This module renders that run as
a markdown block (when, where, which commit, the command, the total time, then one row per track:
variant, result, time, how many criteria were met, the key (first) criterion and every failed one with
value and bar, and the track's key metrics; every criterion is in the run's ``report.md``) and
writes it between the markers :data:`START` and :data:`END` of a markdown file, so the figures and
the run cannot drift apart (``tests/test_readme.py`` regenerates the block and compares)::

    python -m tracks.harness.figures docs/results/full_run            # print the block
    python -m tracks.harness.figures docs/results/full_run --write README.md

Which metrics are *key* is curated per track in :data:`KEY_METRICS` (exact metric names); a name
the run lacks is reported on stderr (a renamed metric must not vanish from the README unnoticed).
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

from .report import fmt_seconds, fmt_value

START, END = "<!-- run-figures:start -->", "<!-- run-figures:end -->"

#: key metrics per track id, shown after the criteria (exact names in the track's metrics dict)
_QUANT = ("acc_headline", "acc_float", "acc_ptq", "acc_qat", "acc_onchip", "onchip_gap_pt_ci95",
          "target_gap_pt", "update_cosine_min", "acc_onchip_scratch", "conv_acc_float", "conv_onchip_gap_pt",
          "conv_target_gap_pt")
KEY_METRICS: dict[int, tuple[str, ...]] = {
    1: ("test_acc_sn", "lipschitz_max_no_sn", "test_acc_no_sn", "conv_sigma_ratio_max_sn", "conv_test_acc_sn"),
    2: ("best_beta_1h", "min_layer_cosine_2h", "best_beta_2h", "implicit_vs_bptt_min_cosine", "free_residual_max"),
    3: ("acc_float", "acc_clean", "acc_faulty", "acc_after_insitu", "fault_gap_points", "insitu_steps",
        "conv_acc_clean", "conv_acc_faulty", "conv_acc_after_insitu", "conv_recovered_fraction"),
    4: _QUANT, 16: _QUANT, 19: _QUANT,
    13: ("min_layer_cosine_implicit", "mnist_test_acc_eqprop", "mnist_test_acc_bp_relu", "fmnist_test_acc_eqprop",
         "fmnist_test_acc_bp_relu"),
    14: ("cos_bptt_median", "cos_bptt_worst_one_sided", "cos_bptt_worst_random_sign", "eqprop_acc_mean",
         "bp_acc_mean", "deq_acc_mean"),
    17: ("acc_float_digital", "acc_chip_int8_clean", "acc_drop_prog20", "grad_cosine_best_noise0", "best_beta_noise0",
         "best_beta_noise_max", "conv_acc_drop_prog5"),
    25: ("mnist_test_acc_eqprop", "mnist_test_acc_eqprop_ci95", "mnist_test_acc_ffbp", "mnist_test_acc_ffbp_ci95",
         "mnist_test_acc_bptt", "fmnist_test_acc_eqprop", "fmnist_test_acc_eqprop_ci95", "fmnist_test_acc_ffbp",
         "fmnist_test_acc_ffbp_ci95", "fmnist_test_acc_bptt"),
    34: ("cifar_test_acc_eqprop", "cifar_test_acc_bp_relu", "n_train", "epochs"),
    35: ("eqprop_mem_growth", "bptt_mem_growth", "tf_mem_ratio_t30", "tf_implicit_over_bptt_t30"),
    36: ("acc_mnist", "acc_fashion_mnist", "energy_auroc_fashion_mnist", "energy_auroc_gaussian", "energy_auroc_uniform",
         "msp_auroc_fashion_mnist", "margin_auroc_fashion_mnist"),
    37: ("eqprop_val_bpc_mean", "baseline_val_bpc_mean", "ppl_ratio_eqprop_over_baseline", "grad_cos_full",
         "settle_spearman_r"),
    38: ("eqprop_spearman_r_margin_mean", "eqprop_compute_saved_mean", "eqprop_acc_full_mean"),
    39: ("eqprop_copying_acc_n16_mean", "baseline_copying_acc_n16_mean", "eqprop_parity_acc_n8_mean",
         "eqprop_addition_acc_n4_mean", "eqprop_sorting_acc_n5_mean"),
    40: ("energy_ratio_int8_vs_fp32", "macs_per_inference", "macs_per_train_step"),
    41: ("accuracy_float", "accuracy_int_int8", "accuracy_int_int4", "accuracy_int_ternary", "float_max_abs_state_err",
         "int_narrow_acc_saturations", "int_pow2_ties"),
    42: ("float_acc", "snn_acc_t64", "rate_state_mae_t64", "brian2_seconds_per_image", "energy_ratio_snn_over_float",
         "conv_acc_gap_t64"),
    44: ("asym_drop_points", "dw_min_drop_points", "sym_minus_one_sided_ideal", "acc_constant_step_symmetric"),
}


def _fmt(v: Any) -> str:
    if isinstance(v, float) and 0 < abs(v) < 1 and not (0.999 < abs(v)):
        return f"{v:.4g}"
    if isinstance(v, float) and 0.999 < abs(v) < 1:
        return f"{v:.7g}"
    return fmt_value(v)


def _cell(s: str) -> str:
    return s.replace("|", "\\|").replace("\n", " ")


def _track_row(t: dict[str, Any], report_link: str | None, missing: list[str]) -> str:
    cs = t.get("criteria") or []
    shown = [c for i, c in enumerate(cs) if i == 0 or not c.get("passed")]  # the key criterion and every failure
    crits = (f"{sum(bool(c.get('passed')) for c in cs)}/{len(cs)} criteria met: " if cs else "") + "; ".join(
        f"{c['metric']} = {_fmt(c.get('value'))} (need {c['op']} {c['threshold']:g}"
        f"{'' if c.get('passed') else ', **failed**'})" for c in shown)
    m = t.get("metrics") or {}
    keys = []
    for k in KEY_METRICS.get(int(t["id"]), ()):
        if k in m:
            keys.append(f"{k} = {_fmt(m[k])}")
        else:
            missing.append(f"track {t['id']}: {k}")
    figures = crits + ("; " if crits and keys else "") + "; ".join(keys)
    if t.get("failure"):
        figures += f"; error: {t['failure']}"
    name = f"[{t['id']}]({report_link}#track-{t['id']})" if report_link else str(t["id"])
    status = "NOT RUN" if t.get("not_run") else ("PASS" if t.get("passed") else "**FAIL**")
    variant = t.get("variant") or "n/a"
    return f"| {name} {_cell(t['name'])} | {_cell(str(variant))} | {status} | {fmt_seconds(t.get('seconds'))} | " \
           f"{_cell(figures)} |"


def render(results: dict[str, Any], report_link: str | None = None, missing: list[str] | None = None) -> str:
    """The README block (without the markers) of a ``results.json`` dict."""
    missing = [] if missing is None else missing
    s = results["suite"]
    tracks = results["tracks"]
    mach = s.get("machine") or {}
    total = sum(float(t.get("seconds") or 0) for t in tracks)
    n_pass = sum(bool(t.get("passed")) for t in tracks)
    lines = [
        f"One run: `{' '.join(s.get('argv') or [])}`, commit {s.get('commit')}, started {s.get('started')}, "
        f"finished {s.get('finished')}; {n_pass}/{len(tracks)} tracks passed; track time {fmt_seconds(total)}. "
        f"Machine: {mach.get('cpu')} ({mach.get('logical_cores')} logical cores), {fmt_value(mach.get('memory_gib'))} "
        f"GiB, {mach.get('os')}, Python {mach.get('python')}, torch {(mach.get('versions') or {}).get('torch')}; "
        f"GPU: {mach.get('gpu') or 'none'}. Seeds {s.get('seeds')}; mode {'quick' if s.get('quick') else 'full'}.",
        "",
        "| track | variant | result | time | criteria (key and failed: value, bar) and key metrics |",
        "| --- | --- | --- | --- | --- |",
    ]
    lines += [_track_row(t, report_link, missing) for t in tracks]
    return "\n".join(lines)


def replace_block(text: str, block: str, where: str = "markdown file") -> str:
    """``text`` with the part between :data:`START` and :data:`END` replaced by ``block``."""
    pat = re.compile(re.escape(START) + r".*?" + re.escape(END), re.S)
    if not pat.search(text):
        raise ValueError(f"{where} has no {START} ... {END} block; add the two markers where the figures go")
    return pat.sub(lambda _m: f"{START}\n{block}\n{END}", text, count=1)


def load_results(run_dir: str | Path) -> dict[str, Any]:
    p = Path(run_dir) / "results.json"
    if not p.is_file():
        raise FileNotFoundError(f"{p} not found: give the folder of a finished run_suite.py run (it holds results.json)")
    try:
        return json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{p} is not valid JSON ({e}); the run folder is corrupt, rerun the suite") from e


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tracks.harness.figures", description=__doc__.split("\n")[0])
    ap.add_argument("run_dir", help="folder of a finished run (results.json, report.md)")
    ap.add_argument("--write", metavar="FILE", help="replace the block between the markers in FILE")
    ap.add_argument("--link", default=None, help="relative link to the run's report.md (default: run_dir/report.md)")
    a = ap.parse_args(argv)
    try:
        res = load_results(a.run_dir)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    missing: list[str] = []
    block = render(res, a.link or f"{Path(a.run_dir).as_posix()}/report.md", missing)
    for m in missing:
        print(f"warning: key metric missing in the run: {m}", file=sys.stderr)
    if a.write:
        p = Path(a.write)
        try:
            p.write_text(replace_block(p.read_text(), block, str(p)))
        except (OSError, ValueError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    else:
        print(block)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

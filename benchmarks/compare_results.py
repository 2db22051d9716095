"""Compare the metrics of two suite runs (``results.json``): identical, float-close, or different.

Used to show that a refactor kept every figure: integer metrics must be identical, float metrics
equal within ``rel_tol=1e-5`` (timings, file sizes of temporary runs and memory readings are skipped).

Usage::

    python benchmarks/compare_results.py runs/before/results.json runs/after/results.json
"""
import json, math, sys
a = {t["id"]: t for t in json.load(open(sys.argv[1]))["tracks"]}
b = {t["id"]: t for t in json.load(open(sys.argv[2]))["tracks"]}
SKIP = ("seconds", "load_s", "run_s", "_s_", "per_image", "mem", "rss", "bytes_peak", "time")
for tid in sorted(set(a) & set(b)):
    ma, mb = a[tid]["metrics"], b[tid]["metrics"]
    same = close = diff = 0; rows = []
    for k in sorted(set(ma) & set(mb)):
        if any(s in k for s in SKIP): continue
        va, vb = ma[k], mb[k]
        if va == vb: same += 1; continue
        if isinstance(va, (int, float)) and isinstance(vb, (int, float)) and not isinstance(va, bool):
            if math.isclose(va, vb, rel_tol=1e-5, abs_tol=1e-9): close += 1; continue
        diff += 1; rows.append((k, va, vb))
    only = sorted(set(ma) ^ set(mb))
    print(f"track {tid} {a[tid]['slug']}: passed {a[tid]['passed']}->{b[tid]['passed']}  identical {same}, float-close {close}, different {diff}; keys only in one: {len(only)}")
    for k, va, vb in rows[:12]: print(f"    {k}: {str(va)[:60]} -> {str(vb)[:60]}")
    if only: print("    only-in-one:", only[:10])

"""What machine a suite or benchmark ran on: CPU, cores, memory, OS, Python and library versions.

Versions come from package metadata (no heavy imports); a package that is not installed is ``None``.

>>> d = describe_machine()
>>> sorted(d) == sorted(["cpu", "logical_cores", "memory_gib", "os", "python", "gpu", "versions"])
True
>>> "python" in describe_machine_short()
True
"""
from __future__ import annotations

import functools
import importlib.metadata
import os
import platform
import sys
from typing import Any

#: distribution name -> key in ``versions``
PACKAGES = {
    "torch": "torch", "numpy": "numpy", "numba": "numba", "onnxruntime": "onnxruntime",
    "brian2": "brian2", "snntorch": "snntorch", "onnx": "onnx", "scipy": "scipy",
}


def _cpu_model() -> str | None:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.lower().startswith(("model name", "hardware", "processor\t: ")) and ":" in line:
                    value = line.split(":", 1)[1].strip()
                    if value and not value.isdigit():
                        return value
    except OSError:
        pass
    return platform.processor() or None


def _memory_gib() -> float | None:
    try:
        with open("/proc/meminfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return round(int(line.split()[1]) / 2**20, 1)  # kB -> GiB
    except (OSError, ValueError, IndexError):
        pass
    try:
        return round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        return None


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _gpu() -> str | None:
    """Name of the first CUDA device, only when torch is already imported (never imports it)."""
    torch = sys.modules.get("torch")
    try:
        if torch is not None and torch.cuda.is_available():
            return f"{torch.cuda.get_device_name(0)} x{torch.cuda.device_count()}"
    except Exception:  # a broken driver must not break a report
        return None
    return None


@functools.lru_cache(maxsize=1)
def _static() -> dict[str, Any]:
    return {
        "cpu": _cpu_model(),
        "logical_cores": os.cpu_count(),
        "memory_gib": _memory_gib(),
        "os": f"{platform.system()} {platform.release()} ({platform.machine()})",
        "python": platform.python_version(),
        "versions": {key: _version(dist) for dist, key in PACKAGES.items()},
    }


def describe_machine() -> dict[str, Any]:
    """JSON-safe description: cpu, logical_cores, memory_gib, os, python, gpu, versions."""
    d = dict(_static())
    d["versions"] = dict(d["versions"])
    d["gpu"] = _gpu()
    return d


def describe_machine_short() -> str:
    """One line for report headers and benchmark output, e.g. ``'Xeon ..., 16 cores, 125.7 GiB, ...'``."""
    d = describe_machine()
    v = d["versions"]
    parts = [d["cpu"] or "unknown CPU", f"{d['logical_cores']} cores"]
    if d["memory_gib"] is not None:
        parts.append(f"{d['memory_gib']:g} GiB")
    if d["gpu"]:
        parts.append(d["gpu"])
    parts.append(d["os"])
    parts.append(f"python {d['python']}")
    parts += [f"{k} {v[k]}" for k in ("torch", "numpy", "numba") if v.get(k)]
    return ", ".join(parts)

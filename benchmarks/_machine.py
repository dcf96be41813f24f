"""Shared benchmark helpers: describe the machine and write results JSON atomically."""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import sys
from pathlib import Path

from rankloop.io import atomic_write

RESULTS = Path(__file__).resolve().parent / "results"
_PACKAGES = ("rankloop", "numpy", "torch", "faiss-cpu", "sentence-transformers", "pyserini",
             "pytrec-eval-terrier", "ranx", "implicit", "scikit-learn")


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_info() -> dict:
    """Platform, CPU, core count, memory, GPU presence and library versions."""
    versions = {}
    for p in _PACKAGES:
        try:
            versions[p] = importlib.metadata.version(p)
        except importlib.metadata.PackageNotFoundError:
            versions[p] = None
    try:
        mem_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError):
        mem_gb = None
    try:
        import torch

        gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except ImportError:
        gpu = None
    return {
        "platform": platform.platform(),
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "affinity_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "memory_gb": None if mem_gb is None else round(mem_gb, 1),
        "gpu": gpu,
        "python": sys.version.split()[0],
        "versions": versions,
    }


def write_result(name: str, payload: dict) -> Path:
    """Write benchmarks/results/<name>.json (with machine info added) atomically."""
    path = RESULTS / f"{name}.json"
    with atomic_write(path) as fh:
        json.dump({"benchmark": name, "machine": machine_info(), **payload}, fh, indent=2, default=str)
    return path

"""Config-driven experiment runners behind `rankloop experiment <kind> CONFIG.yaml`.

Several subsystems (recsys, prf, ultr, ...) each add one kind under the one shared
`experiment` command; `experiment_subparsers` creates that command once per parser.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import sys
from pathlib import Path
from typing import Any

import yaml

from rankloop.errors import ConfigError

_ATTR = "_rankloop_experiment_subparsers"


def experiment_subparsers(sub: argparse._SubParsersAction) -> argparse._SubParsersAction:
    """The sub-parsers of the shared `experiment` command, creating the command on first use.

    The result is cached on `sub`, so every module's `register(sub)` adds its kind to the same
    `experiment` group regardless of import order.
    """
    existing = getattr(sub, _ATTR, None)
    if existing is not None:
        return existing
    parser = sub.add_parser(
        "experiment",
        help="run a config-driven experiment",
        description="Run a config-driven experiment; each kind reads its own YAML config.",
    )
    kinds = parser.add_subparsers(dest="experiment_kind", required=True, metavar="KIND")
    setattr(sub, _ATTR, kinds)
    return kinds


_ENV_PACKAGES = (
    "rankloop",
    "numpy",
    "scipy",
    "torch",
    "faiss-cpu",
    "faiss-gpu",
    "scikit-learn",
    "sentence-transformers",
    "pyserini",
    "implicit",
)


def read_yaml_config(path: str | Path, *, allow_empty: bool = False) -> dict[str, Any]:
    """The top-level mapping of a YAML config file; any problem is a ConfigError naming the file.

    `allow_empty`: an empty file means "all defaults" ({}) instead of an error."""
    p = Path(path)
    try:
        raw = yaml.safe_load(p.read_text(encoding="utf-8"))
    except OSError as e:
        raise ConfigError(f"cannot read config {p}: {e.strerror or e}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{p}: not valid YAML ({e})") from None
    if raw is None and allow_empty:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{p}: expected a mapping at the top level, got {type(raw).__name__}")
    return raw


def environment_info(device: str | None = None) -> dict[str, Any]:
    """What an experiment's output folder records about where it ran: platform, Python, CPU
    count, compute device and the versions of the libraries that shape the numbers."""
    versions: dict[str, str | None] = {}
    for pkg in _ENV_PACKAGES:
        try:
            versions[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            versions[pkg] = None
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "cpu_count": os.cpu_count(),
        "versions": versions,
    }
    if device is not None:
        info["torch_device"] = device
    return info


def write_run_record(out: Path, config: dict[str, Any], environment: dict[str, Any]) -> None:
    """Write `config.yaml` (the resolved config) and `environment.json` into `out`: what every
    experiment's output folder starts with, so a result can be traced to how it was made."""
    from rankloop.io import atomic_write

    out.mkdir(parents=True, exist_ok=True)
    with atomic_write(out / "config.yaml") as fh:
        yaml.safe_dump(config, fh, sort_keys=False, allow_unicode=True)
    with atomic_write(out / "environment.json") as fh:
        json.dump(environment, fh, indent=2)


def write_seeded_results(
    out: Path,
    *,
    markdown: str,
    csv: str,
    per_seed: Any,
    metrics: dict[str, Any],
    json_default: Any = None,
) -> None:
    """Write results.md, results.csv, per_seed.json and metrics.json into `out` (each
    atomically): the table files every multi-seed experiment (recsys, ultr) writes."""
    from rankloop.io import atomic_write

    with atomic_write(out / "results.md") as fh:
        fh.write(markdown)
    with atomic_write(out / "results.csv") as fh:
        fh.write(csv)
    with atomic_write(out / "per_seed.json") as fh:
        json.dump(per_seed, fh, indent=1)
    with atomic_write(out / "metrics.json") as fh:
        json.dump(metrics, fh, indent=2, default=json_default)

"""Config-driven experiment runners behind `rankloop experiment <kind> CONFIG.yaml`.

Each kind (recsys, ultr, prf, bandits) has a runner module here; `rankloop.experiments.cli`
registers them all under the one `experiment` command. The shared runtime pieces (YAML configs,
run records) live in `rankloop._runtime`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


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

"""Config-driven experiment runners behind `rankloop experiment <kind> CONFIG.yaml`.

Several subsystems (recsys, prf, ultr, ...) each add one kind under the one shared
`experiment` command; `experiment_subparsers` creates that command once per parser.
"""

from __future__ import annotations

import argparse

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

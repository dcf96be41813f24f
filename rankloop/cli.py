"""`rankloop` command line. Each subsystem registers its own sub-commands via `register(sub)`."""

from __future__ import annotations

import argparse
import importlib
import sys

from rankloop.errors import RankloopError

# Modules that expose `register(subparsers)`; each adds its own top-level commands.
_COMMAND_MODULES = (
    "rankloop.data.cli",  # data list|info|fetch
    "rankloop.eval.cli",  # eval, compare
    "rankloop.retrieval.cli",  # index build, search, run
    "rankloop.clicks.cli",  # clicks fit|simulate
    "rankloop.recsys.cli",  # experiment recsys
    "rankloop.bandits.cli",  # simulate bandits
    "rankloop.rerank.cli",  # experiment ultr
    "rankloop.prf.cli",  # experiment prf
)


def build_parser() -> argparse.ArgumentParser:
    """The full parser, with every registered sub-command."""
    parser = argparse.ArgumentParser(prog="rankloop", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for mod in _COMMAND_MODULES:
        importlib.import_module(mod).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point: parse, dispatch to the handler set by `set_defaults(func=...)`."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except RankloopError as e:
        print(f"rankloop: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

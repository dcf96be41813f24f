"""rankloop: retrieval, evaluation, click models, recommenders and bandits from the command line.

Run `rankloop COMMAND --help` for the options of a command."""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import signal
import sys
import threading

from rankloop.errors import RankloopError

# Modules that expose `register(subparsers)`; each adds its own top-level commands.
_COMMAND_MODULES = (
    "rankloop.data.cli",  # data list|info|fetch
    "rankloop.eval.cli",  # eval, compare
    "rankloop.retrieval.cli",  # index build, search, run
    "rankloop.clicks.cli",  # clicks fit|simulate|export
    "rankloop.pipeline_cli",  # stages, pipeline
    "rankloop.experiments.cli",  # experiment recsys|ultr|prf|bandits, simulate bandits
    "rankloop.loop.cli",  # loop
    "rankloop.serve.cli",  # serve
)


def _version() -> str:
    try:
        return importlib.metadata.version("rankloop")
    except importlib.metadata.PackageNotFoundError:
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    """The full parser, with every registered sub-command."""
    parser = argparse.ArgumentParser(
        prog="rankloop",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for mod in _COMMAND_MODULES:
        importlib.import_module(mod).register(sub)
    return parser


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread so that every `finally` and atomic write unwinds."""


def _on_sigterm(signum: int, frame: object) -> None:
    raise Terminated


def main(argv: list[str] | None = None) -> int:
    """Entry point: parse, dispatch to the handler set by `set_defaults(func=...)`.

    SIGTERM and Ctrl-C stop the command within moments (the JVM is started with -Xrs so that
    it leaves these signals to Python); artefacts are written atomically, so an interrupted
    command leaves the previous version or none, never a half-written one."""
    args = build_parser().parse_args(argv)
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _on_sigterm) if main_thread else None
    try:
        if getattr(args, "ray", None) is None:
            return int(args.func(args) or 0)
        from rankloop.scale import using_ray

        with using_ray(args.ray):
            return int(args.func(args) or 0)
    except RankloopError as e:
        print(f"rankloop: error: {e}", file=sys.stderr)
        return 2
    except Terminated:
        print("rankloop: terminated", file=sys.stderr)
        return 128 + signal.SIGTERM
    except KeyboardInterrupt:
        print("rankloop: interrupted", file=sys.stderr)
        return 128 + signal.SIGINT
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())

"""`rankloop data list|info|fetch`: browse the dataset registry and materialise datasets locally."""

from __future__ import annotations

import argparse
import json
from typing import Any

from rankloop.data import registry
from rankloop.errors import RankloopError


def register(sub: Any) -> None:
    """Add the `data` command and its sub-commands to the top-level parser."""
    data = sub.add_parser("data", help="list, describe and fetch registered datasets")
    actions = data.add_subparsers(dest="data_command", required=True)

    p = actions.add_parser("list", help="every registered dataset and where its local copy is")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_list)

    p = actions.add_parser("info", help="URLs, checksums, licence and layout of one dataset")
    p.add_argument("name")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_info)

    p = actions.add_parser(
        "fetch", help="make a dataset available locally (mirror, cache or download)"
    )
    p.add_argument("name")
    p.add_argument(
        "--timeout", type=float, default=registry.DEFAULT_TIMEOUT, help="HTTP timeout in seconds"
    )
    p.add_argument("--verify", action="store_true", help="checksum the local copy afterwards")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_fetch)


def _where(name: str) -> tuple[str, str]:
    found = registry.locate(name)
    return ("-", "") if found is None else (found[1], str(found[0]))


def _list(args: argparse.Namespace) -> int:
    rows = [(d, *_where(d.name)) for d in registry.list_datasets()]
    if args.json:
        print(
            json.dumps(
                [{"name": d.name, "kind": d.kind, "status": s, "path": p} for d, s, p in rows],
                indent=2,
            )
        )
        return 0
    width = max(len(d.name) for d, _, _ in rows)
    print(f"{'name':<{width}}  {'kind':<8} {'local':<6} description")
    for d, status, _ in rows:
        print(f"{d.name:<{width}}  {d.kind:<8} {status:<6} {d.description}")
    return 0


def _info(args: argparse.Namespace) -> int:
    d = registry.info(args.name)
    status, path = _where(d.name)
    if args.json:
        print(json.dumps({**d.to_dict(), "status": status, "path": path}, indent=2))
        return 0
    print(f"{d.name} ({d.kind}): {d.description}")
    print(f"  homepage: {d.homepage}")
    print(f"  licence:  {d.licence}")
    print(f"  layout:   <RANKLOOP_DATA or cache>/{d.local}/ with {', '.join(d.expect)}")
    if d.splits:
        print(f"  splits:   {', '.join(d.splits)}")
    if d.corpus:
        print(f"  corpus:   {d.corpus}")
    if d.local_only:
        print(f"  download: none ({d.local_only})")
    for f in d.files:
        what = f"unpack {f.unpack}, folder holding {f.marker}" if f.unpack else f"-> {f.path}"
        print(f"  file:     {' | '.join(f.urls)}")
        print(f"            {f.known_hash or 'no checksum (unverified)'}; {what}")
    print(f"  local:    {path or 'not present'}" + (f" ({status})" if path else ""))
    return 0


def _fetch(args: argparse.Namespace) -> int:
    path = registry.fetch(args.name, timeout=args.timeout, progressbar=not args.quiet)
    if args.verify:
        checks = registry.verify(args.name)
        for c in checks:
            print(f"{'OK ' if c.ok else 'BAD'} {c.algorithm} {c.path}")
        bad = [c for c in checks if not c.ok]
        if bad:
            raise RankloopError(
                f"{args.name}: {len(bad)} of {len(checks)} files fail their checksum"
            )
        if not checks:
            print(
                f"{args.name}: no per-file checksums to check (archives are verified when downloaded)"
            )
    print(path)
    return 0

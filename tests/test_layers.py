"""The package's layering: library code never imports the experiment runners, no import cycles,
`_runtime` depends on nothing above it, and the top-level command line works."""

from __future__ import annotations

import ast
import functools
from pathlib import Path

import pytest

from rankloop.cli import build_parser, main

_ROOT = Path(__file__).resolve().parents[1] / "rankloop"


@functools.cache
def _modules() -> dict[str, Path]:
    """Dotted name -> file of every module of the package."""
    out = {}
    for path in _ROOT.rglob("*.py"):
        parts = path.relative_to(_ROOT.parent).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def _imports(path: Path, top_level_only: bool) -> set[str]:
    """The rankloop modules `path` imports (`from pkg import submodule` counts as submodule)."""
    modules = _modules()
    tree = ast.parse(path.read_text(encoding="utf-8"))
    # top level: module statements and those under a top-level `if` (e.g. TYPE_CHECKING)
    nodes = (
        [n for stmt in tree.body for n in (stmt.body if isinstance(stmt, ast.If) else [stmt])]
        if top_level_only
        else list(ast.walk(tree))
    )
    found: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            subs = {f"{node.module}.{a.name}" for a in node.names} & modules.keys()
            found.update(subs)
            if len(subs) < len(node.names):
                found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    return {name for name in found if name.startswith("rankloop")}


def test_library_packages_never_import_the_experiment_runners():
    offenders = {
        name: sorted(i for i in _imports(path, False) if i.startswith("rankloop.experiments"))
        for name, path in _modules().items()
        if not name.startswith("rankloop.experiments") and name != "rankloop.cli"
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_no_import_cycles_at_module_level():
    """Cycles through a `TYPE_CHECKING` import count too: they hide a tangled dependency."""
    modules = _modules()
    graph = {
        m: {i for i in _imports(p, True) if i in modules and i != m} for m, p in modules.items()
    }
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                pytest.fail("import cycle: " + " -> ".join([*path[path.index(n) :], n]))
            if n not in state:
                visit(n, [*path, n])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])


def test_runtime_depends_only_on_errors_and_io():
    assert _imports(_ROOT / "_runtime.py", False) <= {"rankloop.errors", "rankloop.io"}


def test_version_and_experiment_commands(capsys: pytest.CaptureFixture[str]):
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0 and capsys.readouterr().out.startswith("rankloop ")
    parser = build_parser()
    for kind in ("recsys", "ultr", "prf", "bandits"):
        assert parser.parse_args(["experiment", kind, "c.yaml"]).experiment_kind == kind
    args = parser.parse_args(["simulate", "bandits", "c.yaml", "--rounds", "5"])
    alias = parser.parse_args(["experiment", "bandits", "c.yaml", "--rounds", "5"])
    assert args.func is alias.func and args.rounds == 5
    assert "register(" not in parser.format_help()

"""Fuzzing of every runner's config loader: a malformed YAML config is a `ConfigError` before
any work, never another exception and never a config with a value of the wrong type.

Each case starts from a shipped config in `configs/` and mutates it: keys dropped, unknown keys
added, values replaced by values of other types (None, bools, strings, nested lists and
mappings, NaN, ±inf, 0, negatives, 10**12, 2.5, ...), invalid UTF-8 bytes, broken YAML, a
byte-order mark, truncation. The loader (`<Config>.from_yaml`, nothing is run) must either
raise `rankloop.errors.ConfigError` or return a config whose every field (nested configs too)
validates against its declared type and bounds. Cases are tallied per runner in `COUNTS` and
printed as a table when the module ends (tried / config_error / accepted).
"""

from __future__ import annotations

import copy
import dataclasses
import math
import tempfile
import typing
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ConfigDict, PydanticUserError, TypeAdapter

from rankloop._runtime import _dataclass_in
from rankloop.errors import ConfigError
from rankloop.experiments.bandits import BanditConfig
from rankloop.experiments.prf import PRFConfig
from rankloop.experiments.recsys import RecsysConfig
from rankloop.experiments.ultr import UltrConfig

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
RUNNERS: dict[str, type] = {
    "prf": PRFConfig,
    "recsys": RecsysConfig,
    "ultr": UltrConfig,
    "bandits": BanditConfig,
}
COUNTS: dict[str, Counter[str]] = {name: Counter() for name in RUNNERS}
_COLUMNS = ["tried", "config_error", "accepted"]
FUZZ = settings(
    max_examples=1000,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
_Dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)  # the C emitter only makes cases faster


def _shipped(runner: str) -> list[tuple[bytes, Any]]:
    """(raw bytes, parsed data) of every shipped config of `runner`."""
    paths = sorted(CONFIGS.glob(f"{runner}_*.yaml"))
    assert paths, f"no shipped {runner} config"
    return [(p.read_bytes(), yaml.safe_load(p.read_bytes())) for p in paths]


SHIPPED = {name: _shipped(name) for name in RUNNERS}

# ---- strategies --------------------------------------------------------------------------------
_TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=6)
_ODD = st.sampled_from(
    [
        None, True, False, 0, -1, 1, 2, 2.5, -2.5, 10**12, -(10**12), 2**64, 1e308, 1e-320,
        math.nan, math.inf, -math.inf, "", "x", "1", "nan", "none", "true", "é☃",
        [], {}, [None], [0], [-1], [2.5], [10**12], [[1, 2]], ["a", "a"], [math.nan],
        {"a": {"b": [1]}}, {"x": None}, {1: 2}, {"estimator": "popularity"},
    ]
)  # fmt: skip
_SCALAR = st.none() | st.booleans() | st.integers() | st.floats() | _TEXT
_ANY = st.recursive(
    _SCALAR,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_TEXT, inner, max_size=3),
    max_leaves=6,
)
_VALUES = (_ODD | _ANY).map(copy.deepcopy)  # a fresh object each draw, never shared
# Unknown keys: random text, and the names other configs use (typos and cross-runner mix-ups).
_KEYS = (
    _TEXT.filter(bool)
    | st.sampled_from(["seeds", "sedes", "k", "params", "grid", "env", "type", "name", "model"])
    | st.integers(-3, 3)
    | st.none()
)
_INVALID_UTF8 = [b"\xff", b"\xfe\xff", b"\x80", b"\xc3\x28", b"\xed\xa0\x80", b"\xf8\x88\x80\x80"]
_BROKEN_YAML = [
    "{", "[", "]", "}", ":", ": :", "\t", "- ", "&a ", "*a", "*nope", "!!python/object:os.system ",
    "!!binary ", "? ", "|", ">", "'", '"', "%YAML 1.1\n", "---\n", "...\n", "\n  - x\n", "@", "`",
    "\x00", "\x07", "\n\t\tkey: 1\n", "\nmodels: 1\nmodels: 2\n", "[1, 2]\n", "!!set {a}",
]  # fmt: skip


def _paths(node: Any, prefix: tuple = ()) -> Iterator[tuple]:
    """Every path (tuple of keys / indices) to a node of a YAML tree, the root first."""
    yield prefix
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _paths(v, (*prefix, i))


def _parent(doc: Any, path: tuple) -> Any:
    for key in path[:-1]:
        doc = doc[key]
    return doc


@st.composite
def _mutated_tree(draw: st.DrawFn, data: Any) -> Any:
    """The shipped `data` (a deep copy) with 1 to 3 drops, additions or replacements."""
    doc = copy.deepcopy(data)
    for _ in range(draw(st.integers(1, 3))):
        paths = list(_paths(doc))
        path = draw(st.sampled_from(paths))
        node = _parent(doc, path)[path[-1]] if path else doc
        action = draw(st.sampled_from(["drop", "add", "replace", "replace", "replace", "empty"]))
        if action == "drop" and path:
            del _parent(doc, path)[path[-1]]
        elif action == "add" and isinstance(node, dict):
            node[draw(_KEYS)] = draw(_VALUES)
        elif action == "add" and isinstance(node, list):
            node.insert(draw(st.integers(0, len(node))), draw(_VALUES))
        elif action == "empty" and isinstance(node, (dict, list)):
            node.clear()
        elif path:
            _parent(doc, path)[path[-1]] = draw(_VALUES)
        else:
            doc = draw(_VALUES)
    return doc


def _insert(draw: st.DrawFn, raw: bytes, piece: bytes) -> bytes:
    at = draw(st.integers(0, len(raw)))
    return raw[:at] + piece + raw[at:]


@st.composite
def documents(draw: st.DrawFn, runner: str) -> bytes:
    """The bytes of one mutated config of `runner`."""
    raw, data = draw(st.sampled_from(SHIPPED[runner]))
    kind = draw(
        st.sampled_from(["tree"] * 6 + ["utf8", "yaml", "truncate", "bom", "bom_tree", "empty"])
    )
    if kind in ("tree", "bom_tree"):
        text = yaml.dump(draw(_mutated_tree(data)), Dumper=_Dumper, allow_unicode=True)
        out = text.encode("utf-8")
        return b"\xef\xbb\xbf" + out if kind == "bom_tree" else out
    if kind == "utf8":
        return _insert(draw, raw, draw(st.sampled_from(_INVALID_UTF8)))
    if kind == "yaml":
        return _insert(draw, raw, draw(st.sampled_from(_BROKEN_YAML)).encode("utf-8"))
    if kind == "truncate":
        return raw[: draw(st.integers(0, len(raw)))]
    if kind == "bom":
        return b"\xef\xbb\xbf" + raw
    return draw(st.sampled_from([b"", b"\n", b"---\n", b"# only a comment\n", b"~\n", b"[]\n"]))


# ---- what an accepted config must satisfy ------------------------------------------------------
_STRICT = ConfigDict(strict=True, allow_inf_nan=False, arbitrary_types_allowed=True)
_ADAPTERS: dict[tuple[type, str], TypeAdapter] = {}


def _adapter(cls: type, name: str, hint: Any) -> TypeAdapter:
    if (cls, name) not in _ADAPTERS:
        try:
            _ADAPTERS[cls, name] = TypeAdapter(hint, config=_STRICT)
        except PydanticUserError:  # a TypedDict carries its own config
            _ADAPTERS[cls, name] = TypeAdapter(hint)
    return _ADAPTERS[cls, name]


def check_typed(config: Any) -> None:
    """Every field of the dataclass `config` (nested configs too) has its declared type and lies
    within its declared bounds."""
    cls = type(config)
    hints = typing.get_type_hints(cls, include_extras=True)
    for f in dataclasses.fields(config):
        value, hint = getattr(config, f.name), hints[f.name]
        if _dataclass_in(hint) is not None:
            items = value.values() if isinstance(value, dict) else value
            for item in items if isinstance(value, (list, dict)) else [value]:
                assert item is None or dataclasses.is_dataclass(item), (f.name, item)
                if item is not None:
                    check_typed(item)
            continue
        _adapter(cls, f.name, hint).validate_python(value)


# ---- the fuzz tests ------------------------------------------------------------------------
@pytest.fixture(scope="module", autouse=True)
def _print_counts(request: pytest.FixtureRequest) -> Iterator[None]:
    """Print the per-runner tally when the module's tests are done."""
    yield
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is None or capture is None or not any(COUNTS.values()):
        return
    with capture.global_and_fixture_disabled():  # shown without -s too
        reporter.write_line("")
        reporter.write_line(f"{'config fuzz':<12}" + "".join(f"{c:>14}" for c in _COLUMNS))
        for name in RUNNERS:
            row = COUNTS[name]
            reporter.write_line(f"{name:<12}" + "".join(f"{row[c]:>14}" for c in _COLUMNS))


@pytest.mark.parametrize("runner", list(RUNNERS))
def test_shipped_configs_load(runner: str) -> None:
    for path in sorted(CONFIGS.glob(f"{runner}_*.yaml")):
        check_typed(RUNNERS[runner].from_yaml(path))


@pytest.mark.parametrize("runner", list(RUNNERS))
def test_malformed_configs_raise_config_error(runner: str) -> None:
    cls, counts = RUNNERS[runner], COUNTS[runner]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"{runner}.yaml"

        @FUZZ
        @given(documents(runner))
        def case(data: bytes) -> None:
            path.write_bytes(data)
            counts["tried"] += 1
            try:
                config = cls.from_yaml(path)
            except ConfigError as e:
                assert str(e).startswith(str(path)), f"no file position in {e}"
                counts["config_error"] += 1
                return
            check_typed(config)
            counts["accepted"] += 1

        case()
    assert counts["tried"] >= 1000
    assert counts["config_error"] > 0 and counts["accepted"] > 0

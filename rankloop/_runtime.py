"""Shared runtime concerns, one home each: the cache directory, YAML configs read with
file:line positions, the environment record of an experiment, seeding, and name registries.

Every package imports these instead of keeping its own copy; this module imports nothing of
rankloop but `errors` and `io`, so any layer may use it.
"""

from __future__ import annotations

import functools
import importlib.metadata
import inspect
import json
import os
import platform
import sys
import types
import typing
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Generic, TypeVar

import numpy as np
import yaml
from pydantic import Field

from rankloop.errors import ConfigError

__all__ = [
    "Count",
    "Located",
    "LocatedList",
    "Probability",
    "Registry",
    "Seed",
    "Seeds",
    "Threads",
    "YamlConfig",
    "cache_dir",
    "check_output_dir",
    "check_params",
    "check_random_state",
    "check_registry_params",
    "environment_info",
    "parse_config",
    "read_yaml",
    "where",
    "write_run_record",
]


# ---- cache directory -------------------------------------------------------------------------
def cache_dir(*parts: str) -> Path:
    """`$RANKLOOP_CACHE` (default `~/.cache/rankloop`), joined with `parts` (e.g. "indexes").

    The one place that resolves the cache root: embeddings, indexes, models and downloads all
    live under it, so one variable moves them all."""
    root = os.environ.get("RANKLOOP_CACHE", "").strip()
    base = Path(root).expanduser() if root else Path.home() / ".cache" / "rankloop"
    return base.joinpath(*parts)


# ---- YAML with positions -----------------------------------------------------------------------
class Located(dict):
    """A YAML mapping that remembers where it came from: `source`, its own `line`, and
    `lines[key]`, the 1-based line of each key, so errors can name file:line."""

    source: str = "<config>"
    line: int | None = None
    lines: dict[Any, int]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lines = {}


class LocatedList(list):
    """A YAML sequence with `source`, its own `line` and `lines[i]` for each item."""

    source: str = "<config>"
    line: int | None = None
    lines: list[int]

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.lines = []


def where(node: Any, key: Any = None, *, default: str = "<config>") -> str:
    """"file:line" of `node[key]` (or of `node` itself) when the node came from `read_yaml`."""
    source = getattr(node, "source", default)
    line = None
    if key is not None:
        lines = getattr(node, "lines", None)
        if isinstance(lines, dict):
            line = lines.get(key)
        elif isinstance(lines, list) and isinstance(key, int) and 0 <= key < len(lines):
            line = lines[key]
    if line is None:
        line = getattr(node, "line", None)
    return source if line is None else f"{source}:{line}"


_SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when built with it: ~15x


def _located_loader(source: str) -> type[yaml.SafeLoader]:
    class Loader(_SAFE_LOADER):  # type: ignore[misc, valid-type]
        pass

    def mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> Located:
        out = Located()
        out.source, out.line = source, node.start_mark.line + 1
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node, deep=True)
            try:
                hash(key)
            except TypeError:
                raise ConfigError(
                    f"{source}:{key_node.start_mark.line + 1}: a mapping key must be a plain "
                    f"value, got {type(key).__name__}"
                ) from None
            if key in out:
                raise ConfigError(f"{source}:{key_node.start_mark.line + 1}: key {key!r} is repeated")
            out[key] = loader.construct_object(value_node, deep=True)
            out.lines[key] = key_node.start_mark.line + 1
        return out

    def sequence(loader: yaml.SafeLoader, node: yaml.SequenceNode) -> LocatedList:
        out = LocatedList(loader.construct_object(child, deep=True) for child in node.value)
        out.source, out.line = source, node.start_mark.line + 1
        out.lines = [child.start_mark.line + 1 for child in node.value]
        return out

    Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, mapping)
    Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, sequence)
    return Loader


def read_yaml(path: str | os.PathLike[str], *, allow_empty: bool = False) -> Located:
    """The top-level mapping of a YAML config, with positions (see `Located`).

    Any problem (unreadable file, invalid UTF-8, invalid YAML, a top level that is not a
    mapping, a repeated key, an alias) is a `ConfigError` that names the file and, where
    known, the line.
    `allow_empty`: an empty file means "all defaults" instead of an error."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as e:
        raise ConfigError(f"cannot read config {p}: {e.strerror or e}") from None
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise ConfigError(f"{p}:{line}: expected UTF-8 text, got byte {data[e.start]:#04x}") from None
    try:
        for event in yaml.parse(text, Loader=_SAFE_LOADER):
            if isinstance(event, yaml.AliasEvent):  # `*name` can expand to gigabytes
                raise ConfigError(
                    f"{p}:{event.start_mark.line + 1}: YAML aliases (*{event.anchor}) are not "
                    "allowed in configs; write the value out"
                )
        raw = yaml.load(text, Loader=_located_loader(str(p)))
    except yaml.MarkedYAMLError as e:
        line = f":{e.problem_mark.line + 1}" if e.problem_mark is not None else ""
        raise ConfigError(f"{p}{line}: not valid YAML ({e.problem or e})") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{p}: not valid YAML ({e})") from None
    except RecursionError:
        raise ConfigError(f"{p}: YAML nested too deeply") from None
    if raw is None and allow_empty:
        out = Located()
        out.source = str(p)
        return out
    if not isinstance(raw, Located):
        raise ConfigError(f"{p}: expected a mapping at the top level, got {type(raw).__name__}")
    return raw


# ---- environment record ------------------------------------------------------------------------
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


def _plain(value: Any) -> Any:
    """Located/LocatedList/tuples/numpy scalars as plain YAML-safe values."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def write_run_record(out: Path, config: dict[str, Any], environment: dict[str, Any]) -> None:
    """Write `config.yaml` (the resolved config) and `environment.json` into `out`: what every
    experiment's output folder starts with, so a result can be traced to how it was made."""
    from rankloop.io import atomic_write

    out.mkdir(parents=True, exist_ok=True)
    with atomic_write(out / "config.yaml") as fh:
        yaml.safe_dump(_plain(config), fh, sort_keys=False, allow_unicode=True)
    with atomic_write(out / "environment.json") as fh:
        json.dump(environment, fh, indent=2)


def check_output_dir(path: str | os.PathLike[str]) -> Path:
    """Create `path` if needed and prove it writable now, before hours of work, not after."""
    import tempfile

    out = Path(path)
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out, prefix=".rankloop-write-check-"):
            pass
    except OSError as e:
        raise ConfigError(f"output folder {out} is not writable: {e.strerror or e}") from None
    return out


# ---- seeding -----------------------------------------------------------------------------------
def check_random_state(random_state: int | np.random.Generator | None) -> np.random.Generator:
    """A numpy Generator from `random_state` (an int seed, a Generator passed through, or None
    for seed 0: results are reproducible unless the caller asks otherwise)."""
    if isinstance(random_state, np.random.Generator):
        return random_state
    if random_state is None:
        return np.random.default_rng(0)
    if isinstance(random_state, (bool, float)) or not isinstance(random_state, (int, np.integer)):
        raise ConfigError(f"random_state must be an int or a numpy Generator, got {random_state!r}")
    if random_state < 0:
        raise ConfigError(f"random_state must be >= 0, got {random_state}")
    return np.random.default_rng(int(random_state))


# ---- name registries ---------------------------------------------------------------------------
T = TypeVar("T")


class Registry(Generic[T]):
    """One family's name -> factory table (stages, click models, estimators, policies, ...).

    `create(name, params, where=...)` checks the name and every parameter against the
    factory's signature before building, so a typo fails with the valid names, never silently.
    """

    def __init__(self, family: str) -> None:
        self.family = family
        self._items: dict[str, Callable[..., T]] = {}

    def register(self, name: str) -> Callable[[Callable[..., T]], Callable[..., T]]:
        """Decorator: `@REGISTRY.register("bm25")` over a class or factory function."""

        def deco(factory: Callable[..., T]) -> Callable[..., T]:
            if name in self._items and self._items[name] is not factory:
                raise ValueError(f"{self.family} {name!r} is registered twice")
            self._items[name] = factory
            return factory

        return deco

    def add(self, name: str, factory: Callable[..., T]) -> None:
        """Register `factory` under `name` (for tables built from a dict)."""
        self.register(name)(factory)

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._items))

    def __len__(self) -> int:
        return len(self._items)

    def get(self, name: str, *, where: str = "") -> Callable[..., T]:
        """The factory registered as `name`; an unknown name names the valid ones."""
        if not isinstance(name, str) or name not in self._items:
            at = f"{where}: " if where else ""
            raise ConfigError(
                f"{at}unknown {self.family} {name!r}; valid names: {', '.join(self.names())}"
            )
        return self._items[name]

    def parameters(self, name: str) -> list[str]:
        """The keyword parameters the factory of `name` accepts (from its signature)."""
        return accepted_parameters(self.get(name))

    def create(self, name: str, params: dict[str, Any] | None = None, *, where: str = "") -> T:
        """Build `name` with `params`, refusing unknown parameter names before any work (values
    from a config are checked by `check_params` when the config loads)."""
        factory = self.get(name, where=where)
        params = dict(params or {})
        check_names(factory, params, f"{self.family} {name!r}", where_=where)
        try:
            return factory(**params)
        except ConfigError as e:
            if where and not str(e).startswith(where):
                raise ConfigError(f"{where}: {e}") from None
            raise
        except TypeError as e:
            at = f"{where}: " if where else ""
            raise ConfigError(f"{at}{self.family} {name!r}: {e}") from None


def accepted_parameters(factory: Callable[..., Any]) -> list[str]:
    """Keyword parameter names of a class or function (without self, the shared context `ctx`
    of pipeline stages, *args and **kwargs)."""
    target = factory.__init__ if inspect.isclass(factory) else factory  # type: ignore[misc]
    sig = inspect.signature(target)
    return [
        p.name
        for p in sig.parameters.values()
        if p.name not in ("self", "ctx") and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    ]


# ---- typed configs -----------------------------------------------------------------------------
# Bounded field types for configs: a count is a positive int up to 10^8 (absurd sizes are typos
# or attacks, not experiments); a seed is what numpy accepts; `seeds` is a list of at most 10^4
# seeds or a number N of them (0..N-1).
Count = Annotated[int, Field(ge=1, le=100_000_000)]
Seed = Annotated[int, Field(ge=0, le=2**32 - 1)]
Seeds = Annotated[list[Seed], Field(min_length=1, max_length=10_000)] | Annotated[
    int, Field(ge=1, le=10_000)
]
Probability = Annotated[float, Field(ge=0.0, le=1.0)]
Threads = Annotated[int, Field(ge=1, le=1024)]


@functools.cache
def _config_hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls, include_extras=True)


@functools.cache
def _adapter(hint: Any) -> Any:
    """A strict pydantic validator for `hint` (types with a config of their own keep it)."""
    from pydantic import ConfigDict, PydanticUserError, TypeAdapter

    strict = ConfigDict(strict=True, allow_inf_nan=False, arbitrary_types_allowed=True)
    try:
        return TypeAdapter(hint, config=strict)
    except PydanticUserError:  # a TypedDict or model that carries its own (strict) config
        return TypeAdapter(hint)


def _validate(hint: Any, value: Any, label: str, loc: str) -> Any:
    """`value` checked against `hint`; a `ConfigError` names `loc`, `label` and the sub-path."""
    from pydantic import ValidationError

    plain = _plain(value)
    try:
        return _adapter(hint).validate_python(plain)
    except ValidationError as e:
        err = e.errors()[0]
        path, sub = _loc_path(plain, err["loc"])
        prefix = f"{loc}: " if loc else ""
        base = hint
        while typing.get_origin(base) is typing.Annotated:
            base = typing.get_args(base)[0]
        # pydantic's message for a union names its internal branches: say what is expected
        why = "" if typing.get_origin(base) in (typing.Union, types.UnionType) else (
            f"{err['msg'].lower()} ("
        )
        end = ")" if why else ""
        raise ConfigError(
            f"{prefix}{label}{path}: {why}expected {_describe_hint(hint)}{end}, "
            f"got {_short(sub)}"
        ) from None


def _loc_path(value: Any, loc: tuple) -> tuple[str, Any]:
    """The part of pydantic's error location that indexes `value` (its union and validator
    tags dropped), and the value found there."""
    path, cur = "", value
    for part in loc:
        if isinstance(cur, dict) and part in cur:
            path, cur = path + f"[{part!r}]", cur[part]
        elif isinstance(cur, list) and isinstance(part, int) and 0 <= part < len(cur):
            path, cur = path + f"[{part}]", cur[part]
    return path, cur


def parse_config(cls: type[T], raw: Any, *, where_: str | None = None, what: str = "") -> T:
    """Build dataclass `cls` from a YAML mapping with strict types, before any work.

    Unknown or missing keys, values of the wrong type (no bool for int, no str for numbers),
    NaN or infinite numbers and values outside the `Annotated` bounds of a field (e.g. `Count`,
    a positive int up to 10^8) raise `ConfigError` naming file:line, the key and what was
    expected. Fields whose type is another dataclass (or a list / dict of them) are parsed
    recursively. The dataclass's own `__post_init__` then checks what spans several fields;
    its `ConfigError` gets the mapping's position too.
    """
    import dataclasses

    at = where_ or where(raw)
    label = f"{what}: " if what else ""
    if not isinstance(raw, dict):
        raise ConfigError(f"{at}: {label}expected a mapping of settings, got {_short(raw)}")
    fields = [f for f in dataclasses.fields(cls) if f.init]  # type: ignore[arg-type]
    names = [f.name for f in fields]
    unknown = [k for k in raw if k not in names]
    if unknown:
        raise ConfigError(
            f"{where(raw, unknown[0])}: {label}unknown key {unknown[0]!r}; "
            f"valid keys: {', '.join(names)}"
        )
    missing = [
        f.name for f in fields
        if f.name not in raw and f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING  # type: ignore[misc]
    ]  # fmt: skip
    if missing:
        raise ConfigError(f"{at}: {label}missing key {missing[0]!r}")
    hints = _config_hints(cls)
    values: dict[str, Any] = {}
    for key, value in raw.items():
        hint = hints[key]
        inner = _dataclass_in(hint)
        loc = where(raw, key)
        if inner is not None:
            values[key] = _parse_nested(hint, inner, value, loc, key)
        else:
            values[key] = _validate(hint, value, key, loc)
    try:
        return cls(**values)
    except ConfigError as e:
        msg = str(e)
        source = str(getattr(raw, "source", "<"))
        raise ConfigError(msg if msg.startswith(source) else f"{at}: {label}{msg}") from None


class YamlConfig:
    """Base of the runners' config dataclasses: typed loading from a YAML file or mapping
    (`parse_config`) and the resolved config as plain data (what `config.yaml` records)."""

    ALLOW_EMPTY: typing.ClassVar[bool] = False  # an empty file means "all defaults"

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Any:
        """A config from a mapping; a `read_yaml` result keeps file:line for errors (and the
        config keeps the mapping as `_source`, for later errors about its contents)."""
        config = parse_config(cls, raw)
        config._source = raw
        return config

    @classmethod
    def from_yaml(cls, path: str | os.PathLike[str]) -> Any:
        """The config of a YAML file."""
        return cls.from_dict(read_yaml(path, allow_empty=cls.ALLOW_EMPTY))

    def to_dict(self) -> dict[str, Any]:
        """The resolved config as plain data."""
        import dataclasses

        return dataclasses.asdict(self)  # type: ignore[call-overload]


def _dataclass_in(hint: Any) -> type | None:
    """The dataclass a field holds (itself, or as list/dict values), else None."""
    import dataclasses

    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return hint
    for arg in typing.get_args(hint):
        found = _dataclass_in(arg)
        if found is not None:
            return found
    return None


def _parse_nested(hint: Any, inner: type, value: Any, loc: str, key: str) -> Any:
    origin = typing.get_origin(hint)
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{loc}: {key}: expected a list of {inner.__name__} settings, "
                              f"got {_short(value)}")  # fmt: skip
        return [parse_config(inner, v, where_=where(value, i, default=loc), what=f"{key}[{i}]")
                for i, v in enumerate(value)]  # fmt: skip
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{loc}: {key}: expected a mapping of {inner.__name__} settings, "
                              f"got {_short(value)}")  # fmt: skip
        return {k: parse_config(inner, v, where_=where(value, k, default=loc), what=f"{key}[{k!r}]")
                for k, v in value.items()}  # fmt: skip
    if value is None and type(None) in typing.get_args(hint):
        return None
    return parse_config(inner, value, where_=loc, what=key)


def _describe_hint(hint: Any) -> str:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin is typing.Annotated:
        text = _describe_hint(args[0])
        for meta in args[1:]:
            for c in getattr(meta, "metadata", [meta]):
                for attr, op in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
                    if getattr(c, attr, None) is not None:
                        text += f" {op} {getattr(c, attr)}"
                for attr, op in (("min_length", "at least"), ("max_length", "at most")):
                    if getattr(c, attr, None) is not None:
                        text += f", {op} {getattr(c, attr)} items"
        return text
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe_hint(a) for a in args)
    if origin is typing.Literal:
        return "one of " + ", ".join(map(repr, args))
    if origin is list:
        return f"a list of {_describe_hint(args[0])}" if args else "a list"
    if origin is dict or typing.is_typeddict(hint):
        return "a mapping"
    if hint is type(None):
        return "null"
    if hint is float:
        return "a finite number"
    return getattr(hint, "__name__", str(hint))


def _short(value: Any) -> str:
    text = repr(_plain(value))
    return text if len(text) <= 80 else text[:77] + "..."


# ---- free-form parameters checked against the factory they go to ----------------------------
# A hyper-parameter typed `int` in a factory's signature is a size or a count here (factors,
# iterations, batch sizes, threads): 0 to 10^8, like `Count`; `random_state` is a `Seed`.
_PARAM_INT = Annotated[int, Field(ge=0, le=100_000_000)]


def _yaml_hint(hint: Any) -> Any:
    """`hint` as the YAML value it must be: bounded ints, lists for arrays, tuples, sequences."""
    if hint is int:
        return _PARAM_INT
    if hint is np.ndarray:
        return list[float] | list[list[float]]
    if hint is inspect.Parameter.empty or isinstance(hint, (str, typing.ForwardRef)):
        return Any
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is None or origin in (typing.Annotated, typing.Literal) or not args:
        return hint
    if origin in (typing.Union, types.UnionType):
        return typing.Union[tuple(_yaml_hint(a) for a in args)]  # noqa: UP007
    if origin in (list, Sequence, typing.Sequence, Iterable, set, frozenset):
        return list[_yaml_hint(args[0])]  # type: ignore[misc]
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return list[_yaml_hint(args[0])]  # type: ignore[misc]
        item = typing.Union[tuple(_yaml_hint(a) for a in args)]  # noqa: UP007
        return Annotated[list[item], Field(min_length=len(args), max_length=len(args))]  # type: ignore[valid-type]
    if origin in (dict, Mapping):
        return dict[_yaml_hint(args[0]), _yaml_hint(args[1])]  # type: ignore[misc]
    return hint


@functools.cache
def _factory_params(factory: Callable[..., Any]) -> tuple[dict[str, Any], bool]:
    """(keyword parameter -> annotation, whether more keywords are accepted) of a factory; a
    class's `**params` that go up to a base class's `__init__` are followed."""
    if inspect.isclass(factory):
        targets = []
        for klass in factory.__mro__:
            init = klass.__dict__.get("__init__")
            if init is None:
                continue
            if init is object.__init__:
                break
            targets.append(init)
            if not any(
                p.kind == p.VAR_KEYWORD for p in inspect.signature(init).parameters.values()
            ):
                break
    else:
        targets = [factory]
    params: dict[str, Any] = {}
    open_ = False
    for target in targets:
        try:
            hints = typing.get_type_hints(target, include_extras=True)
        except Exception:  # an annotation that does not resolve: check the name only
            hints = {}
        open_ = False
        for p in inspect.signature(target).parameters.values():
            if p.kind == p.VAR_KEYWORD:
                open_ = True
            elif p.name not in ("self", "ctx") and p.kind in (
                p.POSITIONAL_OR_KEYWORD,
                p.KEYWORD_ONLY,
            ):
                params.setdefault(p.name, hints.get(p.name, Any))
    return params, open_


@functools.cache
def _param_hint(factory: Callable[..., Any], name: str) -> Any:
    """The YAML type of parameter `name` of `factory` (Any where pydantic cannot check it)."""
    hint = Seed if name == "random_state" else _yaml_hint(_factory_params(factory)[0][name])
    try:
        _adapter(hint)
    except Exception:  # a type pydantic cannot check: accept any value
        return Any
    return hint


def check_params(
    factory: Callable[..., Any],
    params: Mapping[str, Any],
    what: str,
    *,
    where_: str = "",
    skip: Iterable[str] = (),
    reserved: Iterable[str] = (),
) -> None:
    """Check a config's free-form `params` for `factory` before any work: every name must be
    one of its keyword parameters (not in `skip`, which the caller passes itself; not in
    `reserved`, which the experiment sets), and every value of the type its signature declares
    (strictly: no bool for a number, finite floats, ints 0..10^8, seeds 0..2^32-1). Raises
    `ConfigError` "<where_>: <what> ..." naming the parameter, what was expected and what came.
    """
    at = f"{where_}: " if where_ else ""
    if not isinstance(params, Mapping):
        raise ConfigError(f"{at}{what}: parameters must be a mapping, got {_short(params)}")
    accepted, open_ = _factory_params(factory)
    skip, reserved = set(skip), set(reserved)
    valid = [n for n in accepted if n not in skip and n not in reserved]
    for name, value in params.items():
        pos = where(params, name, default="")
        pos = f"{pos}: " if pos else ""
        if name in reserved or name in skip:
            raise ConfigError(f"{at}{pos}{what}: {name!r} is set by the experiment, not the config")
        if name not in accepted:
            if open_ and isinstance(name, str):
                continue
            raise ConfigError(
                f"{at}{pos}{what} has no parameter {name!r}; "
                f"valid parameters: {', '.join(valid) or '(none)'}"
            )
        _validate(_param_hint(factory, name), value, f"{what}: {name}", f"{at}{pos}".rstrip(": "))


def check_names(
    factory: Callable[..., Any], params: Mapping[str, Any], what: str, *, where_: str = ""
) -> None:
    """Raise `ConfigError` naming the valid parameters when `params` holds a name `factory`
    does not take (values are not checked: they may be arrays built in code)."""
    accepted, open_ = _factory_params(factory)
    unknown = [k for k in params if k not in accepted]
    if unknown and not open_:
        at = f"{where_}: " if where_ else ""
        raise ConfigError(
            f"{at}{what} has no parameter {', '.join(map(repr, unknown))}; "
            f"valid parameters: {', '.join(accepted) or '(none)'}"
        )


def check_registry_params(
    registry: Any,
    name: str,
    params: Mapping[str, Any],
    *,
    where_: str = "",
    skip: Iterable[str] = (),
    reserved: Iterable[str] = (),
) -> None:
    """`check_params` for the factory registered as `name` in a `rankloop._runtime.Registry`."""
    factory = registry.get(name, where=where_)
    check_params(
        factory,
        params,
        f"{registry.family} {name!r}",
        where_=where_,
        skip=skip,
        reserved=reserved,
    )

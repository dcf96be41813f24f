"""The stage contract: every retriever, feedback method and reranker is a `Stage`.

A stage maps queries, and optionally the run of the stage before it, to a run:
``stage.transform(queries, run=None) -> Run``. Stages compose like PyTerrier transformers:

- ``a >> b``  then: `b` receives `a`'s run (feedback source, candidates to re-rank);
- ``a + b``   fusion: CombSUM of the raw scores (``fuse([a, b], method=..., norm=...)`` for RRF,
  CombMNZ, normalisation and weights);
- ``a % k``   cut-off: the top `k` of `a`'s run per query.

Every stage has a `name`, scikit-learn style `get_params()` / `set_params()`, and a textual form
(`str(stage)`) that `parse` reads back into an equal stage. Expensive state (encoders, indexes,
the JVM) lives in a shared context object that stages hold by reference and never copy.
`Experiment(pipelines, queries, qrels, measures, ...)` runs a list of pipelines and returns the
trec_eval-exact `ComparisonTable`, with the seconds each pipeline took.

This module knows no concrete stage: stage modules register their classes in `STAGES`;
importing `rankloop.stages` registers them all.
"""

from __future__ import annotations

import ast
import inspect
import math
import time
import typing
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from rankloop._runtime import Registry
from rankloop.data.types import Qrels, Queries, Run
from rankloop.errors import ConfigError, RankloopError

__all__ = [
    "STAGES",
    "Compose",
    "Cutoff",
    "Experiment",
    "Fuse",
    "Stage",
    "fuse",
    "parse",
]

STAGES: Registry[Stage] = Registry("stage")


class Stage:
    """Base class of every stage: `transform(queries, run=None) -> Run`.

    Subclasses take their shared context (if any) as the first constructor argument `ctx` and
    every hyper-parameter as a keyword with a default, stored under the same attribute name;
    that is all `get_params`, `set_params` and the textual form need. `ALIAS` is the name the
    stage has in pipeline expressions.
    """

    ALIAS: ClassVar[str] = ""
    NEEDS_INPUT: ClassVar[bool] = False  # True: the stage re-ranks or reads an incoming run

    # -- the contract ---------------------------------------------------------------------------
    def transform(self, queries: Queries, run: Run | None = None) -> Run:
        """The run of this stage for `queries`, given the run of the stage before it (or None)."""
        raise NotImplementedError(f"{type(self).__name__} does not implement transform")

    def __call__(self, queries: Queries, run: Run | None = None) -> Run:
        """`transform`, memoised in the stage's context when it has one (shared prefixes and
        named pipelines referenced twice are computed once)."""
        if run is None and self.NEEDS_INPUT:
            raise RankloopError(
                f"stage {self} re-ranks the run of the stage before it; write `first >> {self}`"
            )
        ctx = getattr(self, "ctx", None)
        memo = getattr(ctx, "memo", None)
        key = self.memo_key()
        if memo is None or run is not None or key is None:
            return self.transform(queries, run)
        return memo((key, queries_key(queries)), lambda: self.transform(queries, None))

    def memo_key(self) -> str | None:
        """What identifies this stage's output for a query set: its text form, plus the
        identity of learned state for stages that `fit` (None: never memoise)."""
        return str(self)

    def check(self) -> None:
        """Fail fast: raise a clear error now if this stage cannot run (missing training data, a
        model that is not available), before any expensive work. Default: nothing to check."""

    def fit(self, queries: Queries, qrels: Qrels, run: Run | None = None) -> Stage:
        """Train on (queries, qrels) when the stage learns, given the incoming `run` of the
        stages before it on those queries (as PyTerrier's `fit`); a stage that does not learn
        is returned unchanged. Returns self."""
        return self

    # -- parameters -----------------------------------------------------------------------------
    @classmethod
    def param_names(cls) -> list[str]:
        """The hyper-parameters: keyword arguments of `__init__` except the context."""
        sig = inspect.signature(cls.__init__)
        return [
            p.name
            for p in sig.parameters.values()
            if p.name not in ("self", "ctx") and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
        ]

    @classmethod
    def param_defaults(cls) -> dict[str, Any]:
        sig = inspect.signature(cls.__init__)
        return {
            n: sig.parameters[n].default
            for n in cls.param_names()
            if sig.parameters[n].default is not inspect.Parameter.empty
        }

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """Hyper-parameters by name (scikit-learn's convention)."""
        return {n: getattr(self, n) for n in self.param_names()}

    def set_params(self, **params: Any) -> Stage:
        """Set hyper-parameters by name; unknown names raise `ConfigError` with the valid ones.
        The constructor runs again: every value is re-validated, and learned state set up there
        is dropped, since it no longer matches the parameters."""
        valid = self.param_names()
        unknown = [p for p in params if p not in valid]
        if unknown:
            raise ConfigError(
                f"stage {self.name!r} has no parameter {', '.join(map(repr, unknown))}; "
                f"valid parameters: {', '.join(valid) or '(none)'}"
            )
        new = {**self.get_params(deep=False), **params}
        ctx = getattr(self, "ctx", None)
        args = (ctx,) if "ctx" in inspect.signature(type(self).__init__).parameters else ()
        type(self).__init__(self, *args, **new)
        return self

    # -- names and text -------------------------------------------------------------------------
    @property
    def name(self) -> str:
        """A short name for tables and run names: the textual form."""
        return str(self)

    def __str__(self) -> str:
        alias = self.ALIAS or type(self).__name__.lower()
        defaults = self.param_defaults()
        shown = [
            f"{n}={_literal(v)}"
            for n, v in self.get_params(deep=False).items()
            if n not in defaults or not _same(v, defaults[n])
        ]
        return f"{alias}({', '.join(shown)})" if shown else alias

    def __repr__(self) -> str:
        return f"<Stage {self}>"

    # -- composition ----------------------------------------------------------------------------
    def __rshift__(self, other: Stage) -> Compose:
        return Compose([self, _stage(other, ">>")])

    def __add__(self, other: Stage) -> Fuse:
        return Fuse([self, _stage(other, "+")])

    def __mod__(self, k: int) -> Cutoff:
        return Cutoff(self, k)


def _stage(obj: Any, op: str) -> Stage:
    if not isinstance(obj, Stage):
        raise RankloopError(f"`{op}` composes stages, got {type(obj).__name__}")
    return obj


def _same(a: Any, b: Any) -> bool:
    """Equal parameter values (1 and 1.0 are the same number; True is not 1)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    return a == b


def _literal(v: Any) -> str:
    """A parameter value as the parser reads it back."""
    if isinstance(v, Stage):
        return str(v)
    if isinstance(v, float) and not math.isfinite(v):
        raise ConfigError(f"parameter values must be finite, got {v!r}")
    if isinstance(v, tuple):
        v = list(v)
    return repr(v)


def queries_key(queries: Queries) -> tuple[str, int, int]:
    """A cheap identity of a query set for memoisation: name, size and a hash of ids+texts."""
    return (queries.name, len(queries), hash((tuple(queries.ids), tuple(queries.texts))))


# ---- composites -------------------------------------------------------------------------------
class Compose(Stage):
    """`a >> b >> c`: each stage receives the run of the one before it."""

    ALIAS = "then"

    def __init__(self, stages: Sequence[Stage]) -> None:
        flat: list[Stage] = []
        for s in stages:
            flat.extend(s.stages if isinstance(s, Compose) else [_stage(s, ">>")])
        if len(flat) < 2:
            raise RankloopError("a composition needs at least two stages")
        self.stages = flat
        self.ctx = _shared_ctx(flat)

    def transform(self, queries: Queries, run: Run | None = None) -> Run:
        if run is None:
            # The longest prefix is memoised by its own __call__ through the recursion below.
            if len(self.stages) > 2:
                run = Compose(self.stages[:-1])(queries)
            else:
                run = self.stages[0](queries)
            return self.stages[-1](queries, run)
        for stage in self.stages:
            run = stage(queries, run)
        return run

    @property
    def NEEDS_INPUT(self) -> bool:  # type: ignore[override]
        return self.stages[0].NEEDS_INPUT

    def memo_key(self) -> str | None:
        return _members_key(self.stages, " >> ")

    def check(self) -> None:
        for s in self.stages:
            s.check()

    def fit(self, queries: Queries, qrels: Qrels, run: Run | None = None) -> Stage:
        """Fit each stage in turn on the run of the (already fitted) stages before it."""
        for i, s in enumerate(self.stages):
            s.fit(queries, qrels, run)
            if i + 1 < len(self.stages):
                run = s.transform(queries, run) if run is not None else s(queries)
        return self

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        return _composite_params(self.stages, deep)

    def set_params(self, **params: Any) -> Stage:
        _set_composite(self.stages, params, self)
        return self

    def __str__(self) -> str:
        return " >> ".join(_wrap(s, Compose) for s in self.stages)


class Fuse(Stage):
    """Fusion of the runs of several stages (`rankloop.eval.fusion.fuse`), cut to `k`.

    `method` is "combsum" (the meaning of `a + b`), "combmnz" or "rrf"; `norm` normalises each
    run per query first (CombSUM/CombMNZ); `rrf_k` is RRF's constant; `weights` one per stage.
    Given an incoming run, every branch receives it.
    """

    ALIAS = "fuse"

    def __init__(
        self,
        stages: Sequence[Stage],
        method: str = "combsum",
        norm: str | None = None,
        rrf_k: float = 60.0,
        weights: Sequence[float] | None = None,
        k: int = 1000,
    ) -> None:
        from rankloop.eval.fusion import check_fusion

        flat: list[Stage] = []
        plain = method == "combsum" and norm is None and weights is None
        for s in stages:
            if plain and isinstance(s, Fuse) and s._plain():
                flat.extend(s.stages)
            else:
                flat.append(_stage(s, "+"))
        if len(flat) < 2:
            raise ConfigError("fuse needs at least two stages")
        check_fusion(len(flat), method, norm=norm, rrf_k=rrf_k, weights=weights)
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ConfigError(f"fuse: k must be a positive int, got {k!r}")
        self.stages = flat
        self.method = method
        self.norm = norm
        self.rrf_k = float(rrf_k)
        self.weights = None if weights is None else [float(w) for w in weights]
        self.k = k
        self.ctx = _shared_ctx(flat)

    def _plain(self) -> bool:
        return (self.method == "combsum" and self.norm is None and self.weights is None
                and self.k == 1000)  # fmt: skip

    def transform(self, queries: Queries, run: Run | None = None) -> Run:
        from rankloop.eval.fusion import fuse as fuse_runs

        runs = [s(queries, run) for s in self.stages]
        fused = fuse_runs(runs, self.method, norm=self.norm, rrf_k=self.rrf_k, weights=self.weights)
        return fused.top_k(self.k).with_name(self.name)

    @property
    def NEEDS_INPUT(self) -> bool:  # type: ignore[override]
        return any(s.NEEDS_INPUT for s in self.stages)

    def memo_key(self) -> str | None:
        inner = _members_key(self.stages, ", ")
        return None if inner is None else f"{self}[{inner}]"

    def check(self) -> None:
        for s in self.stages:
            s.check()

    def fit(self, queries: Queries, qrels: Qrels, run: Run | None = None) -> Stage:
        for s in self.stages:
            s.fit(queries, qrels, run)
        return self

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        own = {"method": self.method, "norm": self.norm, "rrf_k": self.rrf_k,
               "weights": self.weights, "k": self.k}  # fmt: skip
        return {**own, **_composite_params(self.stages, deep)}

    def set_params(self, **params: Any) -> Stage:
        own = {p: params.pop(p) for p in ("method", "norm", "rrf_k", "weights", "k") if p in params}
        _set_composite(self.stages, params, self)
        if own:
            current = {"method": self.method, "norm": self.norm, "rrf_k": self.rrf_k,
                       "weights": self.weights, "k": self.k}  # fmt: skip
            Fuse.__init__(self, self.stages, **{**current, **own})
        return self

    def __str__(self) -> str:
        if self._plain():
            return " + ".join(_wrap(s, Fuse) for s in self.stages)
        args = [str(s) for s in self.stages] + [f"method={self.method!r}"]
        if self.norm is not None:
            args.append(f"norm={self.norm!r}")
        if self.rrf_k != 60.0:
            args.append(f"rrf_k={self.rrf_k!r}")
        if self.weights is not None:
            args.append(f"weights={self.weights!r}")
        if self.k != 1000:
            args.append(f"k={self.k}")
        return f"fuse({', '.join(args)})"


class Cutoff(Stage):
    """`stage % k`: the top `k` documents per query of `stage`'s run."""

    ALIAS = "cutoff"

    def __init__(self, stage: Stage, k: int) -> None:
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ConfigError(f"cut-off k must be a positive int, got {k!r}")
        self.stage = _stage(stage, "%")
        self.k = k
        self.ctx = getattr(stage, "ctx", None)

    def transform(self, queries: Queries, run: Run | None = None) -> Run:
        return self.stage(queries, run).top_k(self.k)

    @property
    def NEEDS_INPUT(self) -> bool:  # type: ignore[override]
        return self.stage.NEEDS_INPUT

    def memo_key(self) -> str | None:
        inner = self.stage.memo_key()
        return None if inner is None else f"({inner}) % {self.k}"

    def check(self) -> None:
        self.stage.check()

    def fit(self, queries: Queries, qrels: Qrels, run: Run | None = None) -> Stage:
        self.stage.fit(queries, qrels, run)
        return self

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        out: dict[str, Any] = {"k": self.k, "stage": self.stage}
        if deep:
            out.update({f"stage__{n}": v for n, v in self.stage.get_params(True).items()})
        return out

    def set_params(self, **params: Any) -> Stage:
        if "k" in params:
            Cutoff.__init__(self, self.stage, params.pop("k"))
        inner = {}
        for p, v in params.items():
            if not p.startswith("stage__"):
                raise ConfigError(f"cut-off has no parameter {p!r}; valid: k, stage__<name>")
            inner[p[len("stage__"):]] = v
        if inner:
            self.stage.set_params(**inner)
        return self

    def __str__(self) -> str:
        return f"{_wrap(self.stage, Cutoff)} % {self.k}"


fuse = Fuse  # `fuse([a, b], method="rrf")`, the function-style spelling of `Fuse`


def _wrap(stage: Stage, parent: type) -> str:
    """Parenthesise `stage` where the parent's operator binds tighter (Python's precedence:
    `%` over `+` over `>>`)."""
    text = str(stage)
    if isinstance(stage, Compose) and parent in (Fuse, Cutoff, Compose):
        return f"({text})" if parent is not Compose else text
    if isinstance(stage, Fuse) and stage._plain() and parent in (Cutoff, Fuse):
        return f"({text})"
    return text


def _members_key(stages: Sequence[Stage], sep: str) -> str | None:
    keys = [s.memo_key() for s in stages]
    return None if any(k is None for k in keys) else sep.join(f"({k})" for k in keys)


def _shared_ctx(stages: Sequence[Stage]) -> Any:
    for s in stages:
        ctx = getattr(s, "ctx", None)
        if ctx is not None:
            return ctx
    return None


def _composite_params(stages: Sequence[Stage], deep: bool) -> dict[str, Any]:
    out: dict[str, Any] = {"stages": list(stages)}
    if deep:
        for i, s in enumerate(stages):
            out.update({f"{i}__{n}": v for n, v in s.get_params(True).items()})
    return out


def _set_composite(stages: Sequence[Stage], params: dict[str, Any], owner: Stage) -> None:
    per: dict[int, dict[str, Any]] = {}
    for p, v in params.items():
        head, sep, rest = p.partition("__")
        if not sep or not head.isdigit() or int(head) >= len(stages):
            raise ConfigError(
                f"{owner.name}: no parameter {p!r}; address a member stage as "
                f"'<position>__<parameter>' with position 0..{len(stages) - 1}"
            )
        per.setdefault(int(head), {})[rest] = v
    for i, ps in per.items():
        stages[i].set_params(**ps)


# ---- parsing ----------------------------------------------------------------------------------
def parse(
    text: str,
    ctx: Any = None,
    refs: Mapping[str, Stage] | None = None,
    *,
    where: str = "<pipeline>",
) -> Stage:
    """Parse a pipeline expression with Python's precedence (`%` over `+` over `>>`) into
    stages over the shared context `ctx`.

    Stage names come from `STAGES` (`import rankloop.stages` registers them all); `refs` maps
    names of pipelines defined earlier, used as `ref('name')` or as a bare name when it is an
    identifier that is not a stage. Literal values only: numbers, strings, booleans
    (`true`/`false` too), None/null and lists. Parameter names and types are checked before
    anything is built; errors name `where` and the column of the offending part.
    """
    refs = dict(refs or {})
    if not isinstance(text, str) or not text.strip():
        raise ConfigError(f"{where}: expected a pipeline expression, got {text!r}")
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as e:
        raise ConfigError(
            f"{where}: not a pipeline expression ({e.msg} at column {e.offset}): {text.strip()!r}"
        ) from None

    def fail(node: ast.AST, msg: str) -> typing.NoReturn:
        col = getattr(node, "col_offset", None)
        at = f" (column {col + 1})" if col is not None else ""
        raise ConfigError(f"{where}{at}: {msg}")

    def value(node: ast.AST) -> Any:
        if isinstance(node, ast.Constant) and (
            node.value is None or isinstance(node.value, (int, float, str, bool))
        ):
            if isinstance(node.value, float) and not math.isfinite(node.value):
                fail(node, f"expected a finite number, got {node.value!r}")
            return node.value
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            v = value(node.operand)
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                fail(node, "a sign applies to numbers only")
            return -v if isinstance(node.op, ast.USub) else v
        if isinstance(node, (ast.List, ast.Tuple)):
            return [value(e) for e in node.elts]
        if isinstance(node, ast.Name) and node.id in ("true", "false", "null", "none"):
            return {"true": True, "false": False, "null": None, "none": None}[node.id]
        return stage(node)

    def stage(node: ast.AST) -> Stage:
        if isinstance(node, ast.BinOp):
            if isinstance(node.op, ast.RShift):
                return stage(node.left) >> stage(node.right)
            if isinstance(node.op, ast.Add):
                return stage(node.left) + stage(node.right)
            if isinstance(node.op, ast.Mod):
                k = value(node.right)
                if isinstance(k, bool) or not isinstance(k, int) or k < 1:
                    fail(node.right, f"`%` takes a positive int cut-off, got {k!r}")
                return stage(node.left) % k
            fail(node, "only `>>`, `+` and `%` combine stages")
        if isinstance(node, ast.Name):
            if node.id in refs and node.id not in STAGES:
                return refs[node.id]
            return make(node, node.id, [], {})
        if isinstance(node, ast.Call):
            if not isinstance(node.func, ast.Name):
                fail(node, "expected a stage name before '('")
            name = node.func.id
            if name == "ref":
                if len(node.args) != 1 or node.keywords or not isinstance(node.args[0], ast.Constant):
                    fail(node, "ref takes one quoted pipeline name: ref('bm25+rm3')")
                key = node.args[0].value
                if key not in refs:
                    known = ", ".join(map(repr, refs)) or "(none defined before this one)"
                    fail(node, f"ref({key!r}) names no earlier pipeline; defined: {known}")
                return refs[key]
            if any(kw.arg is None for kw in node.keywords):
                fail(node, "** arguments are not allowed in pipeline expressions")
            args = [value(a) for a in node.args]
            kwargs = {kw.arg: value(kw.value) for kw in node.keywords}
            return make(node, name, args, kwargs)
        if isinstance(node, ast.Constant):
            fail(node, f"expected a stage, got the value {node.value!r}")
        fail(node, f"expected a stage, got {ast.unparse(node)!r}")

    def make(node: ast.AST, name: str, args: list[Any], kwargs: dict[str, Any]) -> Stage:
        if name not in STAGES and name != "fuse":
            hint = f"; pipelines defined so far: {', '.join(refs)}" if refs else ""
            fail(node, f"unknown stage {name!r}; valid stages: {', '.join(stage_names())}{hint}")
        try:
            return build_stage(name, args, kwargs, ctx)
        except ConfigError as e:
            fail(node, str(e))

    return stage(tree.body)


def build_stage(name: str, args: list[Any], kwargs: dict[str, Any], ctx: Any = None) -> Stage:
    """One stage by its registered name over `ctx`, its parameters checked (names and types)
    first; `fuse` takes stages positionally and its settings by name."""
    from rankloop._runtime import check_params

    if name == "fuse":
        stages = [a for a in args if isinstance(a, Stage)]
        if len(stages) != len(args):
            raise ConfigError("fuse takes stages as positional arguments and settings by name")
        check_params(Fuse, kwargs, "fuse", skip=["stages"])
        return Fuse(stages, **kwargs)
    factory = STAGES.get(name)
    if args:
        raise ConfigError(f"stage {name!r} takes its parameters by name, e.g. {name}(k=100)")
    check_params(factory, kwargs, f"stage {name!r}")
    return factory(ctx, **kwargs)


def stage_names() -> list[str]:
    """Every name a pipeline expression can use (registered stages plus `fuse` and `ref`)."""
    return sorted({*STAGES.names(), "fuse", "ref"})


# ---- experiments ------------------------------------------------------------------------------
def Experiment(
    pipelines: Sequence[Stage] | Mapping[str, Stage],
    queries: Queries,
    qrels: Qrels,
    measures: str | Sequence[str],
    *,
    baseline: str | int = 0,
    test: str = "t",
    correction: str | None = None,
    alpha: float = 0.05,
    level: int = 1,
    runs: dict[str, Run] | None = None,
    failed: dict[str, str] | None = None,
    progress: bool = False,
):  # -> rankloop.eval.compare.ComparisonTable
    """Like PyTerrier's `pt.Experiment`: run every pipeline on `queries`, evaluate against `qrels` and test each against
    `baseline` (a name or a position): one `ComparisonTable`, whose `seconds` holds the wall
    time of each pipeline (shared prefixes are computed once, by the first pipeline that needs
    them). Pass a dict as `runs` to receive the runs by pipeline name. With a dict as `failed`,
    a pipeline other than the baseline that raises a `RankloopError` is recorded there (name ->
    message) and left out of the table instead of losing every other result."""
    from tqdm.auto import tqdm

    from rankloop.eval.compare import compare

    named = _named_pipelines(pipelines)
    for p in named.values():
        p.check()
    out: dict[str, Run] = {}
    seconds: dict[str, float] = {}
    base = baseline if isinstance(baseline, str) else list(named)[baseline]
    for name, pipe in tqdm(named.items(), desc="pipelines", unit="pipeline", disable=not progress):
        t0 = time.perf_counter()
        try:
            out[name] = pipe(queries).with_name(name)
        except RankloopError as e:
            if failed is None or name == base:
                raise
            failed[name] = f"{type(e).__name__}: {e}"
            continue
        seconds[name] = time.perf_counter() - t0
    if runs is not None:
        runs.update(out)
    table = compare(out, qrels, measures, baseline=base, test=test, correction=correction,
                    alpha=alpha, level=level)  # fmt: skip
    return table.with_seconds(seconds)


def _named_pipelines(pipelines: Sequence[Stage] | Mapping[str, Stage]) -> dict[str, Stage]:
    if isinstance(pipelines, Mapping):
        named = {str(k): _stage(v, "Experiment") for k, v in pipelines.items()}
    else:
        named = {}
        for p in pipelines:
            name = _stage(p, "Experiment").name
            if name in named:
                raise RankloopError(f"two pipelines are named {name!r}; pass a dict of name -> stage")
            named[name] = p
    if not named:
        raise RankloopError("Experiment needs at least one pipeline")
    return named

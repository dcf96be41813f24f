"""The policy contract shared by every bandit: `select(context) -> action(s)`, `update(...)`.

Conventions (obp's contract, vectorised over rows):
- `context` is an (n, d) float array of user features, or None for context-free policies (then
  `n` comes from `candidates`, or is 1).
- `candidates` is an (n, N) int array of arm ids the policy may pick from per row (-1 marks an
  empty candidate slot), or None for "every arm".
- A single-action policy returns (n,) arm ids; a slate policy returns (n, k) arm ids.
- `update(context, action, reward)` queues feedback; it is applied once `batch_size` rows are
  queued (batched, delayed updates as in a production system that refreshes its model
  periodically), or on `flush()`. `batch_size=1` applies every update at once.
- Randomness comes from `random_state` only; `save`/`load` keep the generator's state and the
  queued feedback, so a loaded policy continues exactly where the saved one stopped.
"""

from __future__ import annotations

import inspect
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from rankloop._runtime import Registry, check_random_state
from rankloop.errors import ConfigError, FormatError, RankloopError
from rankloop.io import atomic_write

FORMAT = "rankloop.bandits.Policy/1"
_TIE_BREAKS = ("random", "first")
_CHUNK_FLOATS = 1 << 22  # bound on temporary floats per vectorised chunk (~32 MB)

# Short names (as configs spell them) -> policy classes, filled by `register_policy`; the one
# table of the family: configs build policies from it and `Policy.load` finds classes in it.
POLICIES: Registry[Policy] = Registry("bandit policy")


def register_policy(name: str) -> Callable[[type[Policy]], type[Policy]]:
    """Class decorator: register a policy class under the short `name` configs use."""

    def deco(cls: type[Policy]) -> type[Policy]:
        POLICIES.add(name, cls)
        return cls

    return deco


def _policy_class(class_name: str) -> type[Policy] | None:
    """The registered policy class called `class_name` (what saved policies record), or None."""
    for name in POLICIES:
        cls = POLICIES.get(name)
        if cls.__name__ == class_name:
            return cls  # type: ignore[return-value]
    return None


def row_chunks(n: int, floats_per_row: int) -> Iterator[slice]:
    """Row slices whose temporaries stay under `_CHUNK_FLOATS` floats."""
    step = max(1, _CHUNK_FLOATS // max(1, floats_per_row))
    for start in range(0, n, step):
        yield slice(start, min(n, start + step))


def argmax_rows(
    scores: np.ndarray, random_state: int | np.random.Generator, tie_break: str
) -> np.ndarray:
    """Column of the best score per row; ties broken uniformly at random or by first column."""
    if tie_break == "first" or scores.shape[1] == 1:
        return scores.argmax(axis=1)
    best = scores.max(axis=1, keepdims=True)
    noise = check_random_state(random_state).random(scores.shape)
    return np.argmax(np.where(scores == best, noise, -1.0), axis=1)


def topk_rows(
    scores: np.ndarray, k: int, random_state: int | np.random.Generator, tie_break: str
) -> np.ndarray:
    """(n, k) columns of the `k` best scores per row, best first (ties: random or first column)."""
    if tie_break == "first":
        return np.argsort(-scores, axis=1, kind="stable")[:, :k]
    noise = check_random_state(random_state).random(scores.shape)
    return np.lexsort((noise, -scores), axis=1)[:, :k]


def as_context(context: np.ndarray | None, n: int | None, dim: int | None) -> np.ndarray:
    """A float64 (n, dim) context; None becomes (n, 0) for context-free policies."""
    if context is None:
        if dim:
            raise RankloopError(f"this policy needs an (n, {dim}) context, got None")
        return np.zeros((1 if n is None else n, 0))
    x = np.asarray(context, dtype=np.float64)
    if x.ndim == 1:
        x = x[None, :]
    if x.ndim != 2:
        raise RankloopError(f"context must be (n, d), got shape {x.shape}")
    if dim is not None and dim and x.shape[1] != dim:
        raise RankloopError(f"context has {x.shape[1]} features, the policy was built for {dim}")
    if n is not None and x.shape[0] != n:
        raise RankloopError(f"context has {x.shape[0]} rows, candidates have {n}")
    if not np.isfinite(x).all():
        raise RankloopError("context contains NaN or infinity")
    return x


class Policy:
    """Base of every policy: validation, update queue, tie-breaking, parameters and save/load.

    Subclasses implement `_scores(x, cands)` (n, N) and `_apply(x, action, reward)`, list their
    learned arrays in `_state` and allocate them in `_init_state`.
    """

    slate: ClassVar[bool] = False
    context_dim_attr: ClassVar[str | None] = None  # attribute holding d for linear policies
    _state: ClassVar[tuple[str, ...]] = ()

    def __init__(
        self,
        n_arms: int,
        *,
        batch_size: int = 1,
        random_state: int = 0,
        tie_break: str = "random",
    ) -> None:
        if not isinstance(n_arms, int | np.integer) or n_arms < 1:
            raise ConfigError(f"n_arms must be a positive int, got {n_arms!r}")
        if not isinstance(batch_size, int | np.integer) or batch_size < 1:
            raise ConfigError(f"batch_size must be a positive int, got {batch_size!r}")
        if tie_break not in _TIE_BREAKS:
            raise ConfigError(f"tie_break must be one of {_TIE_BREAKS}, got {tie_break!r}")
        self.n_arms = int(n_arms)
        self.batch_size = int(batch_size)
        self.random_state = random_state
        self.tie_break = tie_break
        self._rng = np.random.default_rng(random_state)
        self._pending: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self.n_updates_ = 0

    # -- what subclasses provide ---------------------------------------------------------------
    def _init_state(self) -> None:
        """Allocate the learned arrays (called at the end of the subclass __init__)."""

    def _scores(self, x: np.ndarray, cands: np.ndarray | None) -> np.ndarray:
        raise NotImplementedError

    def _apply(self, x: np.ndarray, action: np.ndarray, reward: np.ndarray) -> None:
        raise NotImplementedError

    # -- helpers -------------------------------------------------------------------------------
    @property
    def dim(self) -> int:
        """Context dimension (0 for context-free policies)."""
        return int(getattr(self, self.context_dim_attr)) if self.context_dim_attr else 0

    def _inputs(
        self, context: np.ndarray | None, candidates: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray | None]:
        cands = None
        n = None
        if candidates is not None:
            cands = np.asarray(candidates)
            if cands.ndim == 1:
                cands = cands[None, :]
            if cands.ndim != 2 or not np.issubdtype(cands.dtype, np.integer):
                raise RankloopError(
                    f"candidates must be an (n, N) int array, got {cands.dtype} {cands.shape}"
                )
            if cands.size and (cands.max() >= self.n_arms or cands.min() < -1):
                raise RankloopError(
                    f"candidate arm ids must be in [0, {self.n_arms}) (or -1 for none), got "
                    f"{cands.min()}..{cands.max()}"
                )
            cands = cands.astype(np.int64)
            n = cands.shape[0]
        return as_context(context, n, self.dim), cands

    def scores(
        self, context: np.ndarray | None = None, candidates: np.ndarray | None = None
    ) -> np.ndarray:
        """(n, N) selection scores of each candidate (UCB, sampled value, ...); -inf for -1 slots."""
        return self._masked_scores(*self._inputs(context, candidates))

    def _masked_scores(self, x: np.ndarray, cands: np.ndarray | None) -> np.ndarray:
        if cands is None:
            return self._scores(x, None)
        s = self._scores(x, np.maximum(cands, 0))
        return np.where(cands >= 0, s, -np.inf)

    def select(
        self, context: np.ndarray | None = None, candidates: np.ndarray | None = None
    ) -> np.ndarray:
        """(n,) chosen arm ids: the best-scoring candidate per row (-1 if a row has none)."""
        x, cands = self._inputs(context, candidates)
        s = self._masked_scores(x, cands)
        col = argmax_rows(s, self._rng, self.tie_break)
        if cands is None:
            return col.astype(np.int64)
        return cands[np.arange(len(col)), col]

    def update(self, context: np.ndarray | None, action: np.ndarray, reward: np.ndarray) -> None:
        """Queue feedback for (context, action) rows; applied every `batch_size` rows."""
        action = np.asarray(action)
        reward = np.asarray(reward, dtype=np.float64)
        if action.ndim == 0:
            action = action[None]
            reward = reward.reshape(1)
        self._check_feedback(action, reward)
        x = as_context(context, action.shape[0], self.dim)
        if not self.dim:
            x = np.zeros((action.shape[0], 0))
        self._pending.append((x, action.astype(np.int64), reward))
        if self.n_pending >= self.batch_size:
            self.flush()

    def _check_feedback(self, action: np.ndarray, reward: np.ndarray) -> None:
        want = 2 if self.slate else 1
        if action.ndim != want or not np.issubdtype(action.dtype, np.integer):
            raise RankloopError(
                f"action must be an int array with {want} dimension(s), got {action.dtype} "
                f"{action.shape}"
            )
        if reward.shape != action.shape:
            raise RankloopError(f"reward shape {reward.shape} differs from action {action.shape}")
        if action.size and (action.max() >= self.n_arms or action.min() < -1):
            raise RankloopError(f"actions must be arm ids in [0, {self.n_arms}) (or -1)")
        if not np.isfinite(reward).all():
            raise RankloopError("rewards contain NaN or infinity")

    @property
    def n_pending(self) -> int:
        """Feedback rows queued but not applied yet."""
        return sum(len(a) for _, a, _ in self._pending)

    def flush(self) -> None:
        """Apply every queued update now."""
        if not self._pending:
            return
        if len(self._pending) == 1:
            x, a, r = self._pending[0]
        else:
            x, a, r = (np.concatenate(part) for part in zip(*self._pending))
        self._pending = []
        keep = a >= 0 if not self.slate else np.ones(len(a), bool)
        if keep.any():
            self._apply(x[keep], a[keep], r[keep])
        self.n_updates_ += int(keep.sum())

    # -- parameters ----------------------------------------------------------------------------
    @classmethod
    def _param_names(cls) -> list[str]:
        sig = inspect.signature(cls.__init__)
        return [p for p in sig.parameters if p != "self"]

    def get_params(self) -> dict[str, Any]:
        """Constructor arguments, as scikit-learn's `get_params` (shallow)."""
        return {name: getattr(self, name) for name in self._param_names()}

    def __repr__(self) -> str:
        shown = {
            k: v for k, v in self.get_params().items() if not isinstance(v, np.ndarray | Policy)
        }
        inner = ", ".join(f"{k}={v!r}" for k, v in shown.items())
        return f"{type(self).__name__}({inner})"

    # -- persistence ---------------------------------------------------------------------------
    def _dump(self, prefix: str = "") -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """(JSON-able meta, arrays keyed with `prefix`) describing this policy completely."""
        params: dict[str, Any] = {}
        arrays: dict[str, np.ndarray] = {}
        for name, value in self.get_params().items():
            if isinstance(value, Policy):
                sub_meta, sub_arrays = value._dump(f"{prefix}{name}/")
                params[name] = {"__policy__": sub_meta}
                arrays.update(sub_arrays)
            elif isinstance(value, np.ndarray):
                arrays[f"{prefix}param/{name}"] = value
                params[name] = {"__array__": True}
            else:
                params[name] = value.item() if isinstance(value, np.generic) else value
        for name in self._state:
            arrays[f"{prefix}state/{name}"] = np.asarray(getattr(self, name))
        if self._pending:
            for i, field in enumerate(("context", "action", "reward")):
                arrays[f"{prefix}pending/{field}"] = np.concatenate([p[i] for p in self._pending])
        meta = {
            "class": type(self).__name__,
            "params": params,
            "rng": self._rng.bit_generator.state,
            "n_updates": self.n_updates_,
        }
        return meta, arrays

    @classmethod
    def _restore(cls, meta: dict[str, Any], arrays: dict[str, np.ndarray], prefix: str) -> Policy:
        klass = _policy_class(meta.get("class", ""))
        if klass is None:
            raise RankloopError(f"unknown policy class {meta.get('class')!r} in saved policy")
        params = {}
        for name, value in meta["params"].items():
            if isinstance(value, dict) and "__policy__" in value:
                params[name] = cls._restore(value["__policy__"], arrays, f"{prefix}{name}/")
            elif isinstance(value, dict) and value.get("__array__"):
                params[name] = arrays[f"{prefix}param/{name}"]
            elif isinstance(value, list):
                params[name] = tuple(value)
            else:
                params[name] = value
        policy = klass(**params)
        for name in klass._state:
            key = f"{prefix}state/{name}"
            if key not in arrays:
                raise RankloopError(f"saved policy lacks state array {key!r}")
            current = getattr(policy, name)
            value = arrays[key]
            if np.shape(current) != value.shape:
                raise RankloopError(
                    f"saved {key} has shape {value.shape}, expected {np.shape(current)}"
                )
            setattr(policy, name, np.array(value, dtype=np.asarray(current).dtype))
        if f"{prefix}pending/action" in arrays:
            policy._pending = [
                tuple(arrays[f"{prefix}pending/{f}"] for f in ("context", "action", "reward"))
            ]  # type: ignore[list-item]
        policy._rng.bit_generator.state = meta["rng"]
        policy.n_updates_ = int(meta.get("n_updates", 0))
        policy._after_load()
        return policy

    def _after_load(self) -> None:
        """Rebuild caches derived from the state arrays (subclasses override when they cache)."""

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write parameters, learned state, queued feedback and RNG state to one `.npz` (atomic)."""
        path = Path(path)
        meta, arrays = self._dump()
        meta = {"format": FORMAT, **meta}
        with atomic_write(path, "wb") as fh:
            np.savez(fh, __meta__=np.array(json.dumps(meta)), **arrays)
        return path

    @staticmethod
    def load(path: str | os.PathLike[str]) -> Policy:
        """A policy saved by `save`, in exactly the saved state."""
        path = Path(path)
        if not path.is_file():
            raise RankloopError(f"no saved policy at {path}")
        try:
            with np.load(path, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
        except (OSError, ValueError) as e:
            raise FormatError(path, None, "a policy .npz written by Policy.save", str(e)) from None
        try:
            meta = json.loads(str(arrays.pop("__meta__")))
        except (KeyError, ValueError):
            raise FormatError(path, None, "a __meta__ JSON entry", None) from None
        if meta.get("format") != FORMAT:
            raise FormatError(path, None, f"format {FORMAT!r}", str(meta.get("format")))
        return Policy._restore(meta, arrays, "")


class SlatePolicy(Policy):
    """A policy that fills `slate_size` positions per row; actions and rewards are (n, k)."""

    slate: ClassVar[bool] = True

    def select(
        self, context: np.ndarray | None = None, candidates: np.ndarray | None = None
    ) -> np.ndarray:
        """(n, slate_size) arm ids, position 0 first; -1 where a row has too few candidates."""
        x, cands = self._inputs(context, candidates)
        return self._select_slate(x, cands)

    def _select_slate(self, x: np.ndarray, cands: np.ndarray | None) -> np.ndarray:
        raise NotImplementedError


def examined_mask(clicks: np.ndarray, slate: np.ndarray, feedback: str) -> np.ndarray:
    """Positions whose feedback counts: all shown ones, or (cascade) those down to the first click."""
    shown = slate >= 0
    if feedback == "all":
        return shown
    k = clicks.shape[1]
    c = clicks > 0
    first = np.where(c.any(axis=1), c.argmax(axis=1), k - 1)
    return shown & (np.arange(k)[None, :] <= first[:, None])


FEEDBACK = ("all", "cascade")

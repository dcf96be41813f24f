"""The loop's contract: worlds, learners, explorers and the click log they share.

A round serves `sessions` lists: the world draws the traffic (queries or users) and their
candidates, the learner's policy ranks the candidates (or, for an online learner, serves and
learns one session at a time), an explorer may perturb the shown top `k`, the world's click model
turns each shown list into clicks from the true relevance, and the round is appended to a
`LoopLog` with the examination propensities of the shown positions. After the round a learner
updates its policy from the log so far.

Everything a world, learner or explorer does with randomness uses the Generator the runner hands
it for that round and purpose, derived from `(random_state, round, purpose)` alone, so a run
resumed from the checkpoint of round r repeats exactly what an uninterrupted run does.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rankloop._runtime import Registry
from rankloop.clicks.models import ClickModel
from rankloop.data.clicklogs import ClickLog
from rankloop.errors import RankloopError
from rankloop.io import atomic_write

__all__ = [
    "EXPLORERS",
    "LEARNERS",
    "WORLDS",
    "Explorer",
    "Learner",
    "LoopLog",
    "LoopWorld",
    "Shown",
    "rank_candidates",
    "round_rng",
]

# What each Generator of a round is for (the third entry of its seed).
STREAMS = {"traffic": 0, "explore": 1, "clicks": 2, "learn": 3, "serve": 4}


def rank_candidates(scores: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """(n, N) candidate item rows in score order, best first (-1 for absent candidates, last)."""
    s = np.where(candidates >= 0, scores, -np.inf)
    order = np.argsort(-s, axis=1, kind="stable")
    ranked = np.take_along_axis(candidates, order, axis=1)
    return np.where(np.take_along_axis(s, order, axis=1) > -np.inf, ranked, -1)


def round_rng(random_state: int, round_: int, purpose: str) -> np.random.Generator:
    """The Generator of one purpose in one round, from the seed alone (resumable, and the same
    traffic for every learner of a seed: common random numbers)."""
    return np.random.default_rng([int(random_state), int(round_), STREAMS[purpose]])


@dataclass
class Shown:
    """What one round showed: (n,) user rows, (n, k) item rows (-1 = empty slot), (n, k) clicks,
    (n, k) examination propensities, and optional explorer records: (n, 2) swapped positions of
    a randomisation (-1 = none) and (n, k) interleaving teams (-1 = none)."""

    users: np.ndarray
    items: np.ndarray
    clicks: np.ndarray
    propensities: np.ndarray
    swaps: np.ndarray | None = None
    teams: np.ndarray | None = None

    def __post_init__(self) -> None:
        n = len(self.users)
        if self.items.ndim != 2 or self.items.shape[0] != n:
            raise RankloopError(f"Shown: items {self.items.shape} for {n} users")
        for name in ("clicks", "propensities", "teams"):
            v = getattr(self, name)
            if v is not None and v.shape != self.items.shape:
                raise RankloopError(f"Shown: {name} {v.shape}, want {self.items.shape}")
        if self.swaps is not None and self.swaps.shape != (n, 2):
            raise RankloopError(f"Shown: swaps {self.swaps.shape}, want ({n}, 2)")


@dataclass
class LoopLog:
    """Every session served so far, as growing arrays (one row per session)."""

    k: int
    rounds: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))
    users: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    items: np.ndarray | None = None
    clicks: np.ndarray | None = None
    propensities: np.ndarray | None = None
    swaps: np.ndarray | None = None

    def __post_init__(self) -> None:
        k = self.k
        if self.items is None:
            self.items = np.zeros((0, k), np.int64)
            self.clicks = np.zeros((0, k), bool)
            self.propensities = np.zeros((0, k), np.float64)
            self.swaps = np.zeros((0, 2), np.int64)

    def __len__(self) -> int:
        return len(self.users)

    def append(self, round_: int, shown: Shown) -> None:
        """Add one round's sessions."""
        if shown.items.shape[1] != self.k:
            raise RankloopError(f"LoopLog: lists of {shown.items.shape[1]} slots, log has {self.k}")
        n = len(shown.users)
        swaps = shown.swaps if shown.swaps is not None else np.full((n, 2), -1, np.int64)
        self.rounds = np.concatenate([self.rounds, np.full(n, round_, np.int32)])
        self.users = np.concatenate([self.users, shown.users.astype(np.int64)])
        self.items = np.concatenate([self.items, shown.items.astype(np.int64)])
        self.clicks = np.concatenate([self.clicks, shown.clicks.astype(bool)])
        self.propensities = np.concatenate([self.propensities, shown.propensities])
        self.swaps = np.concatenate([self.swaps, swaps.astype(np.int64)])

    def until(self, round_: int) -> LoopLog:
        """The sessions of rounds < `round_` (what a resumed run had logged)."""
        keep = self.rounds < round_
        return LoopLog(
            self.k, self.rounds[keep], self.users[keep], self.items[keep], self.clicks[keep],
            self.propensities[keep], self.swaps[keep],
        )  # fmt: skip

    def click_log(self, world: LoopWorld, name: str = "loop") -> ClickLog:
        """The sessions as a `ClickLog` over the world's user (query) and item (doc) ids."""
        items, clicks = self.items, self.clicks
        # a ClickLog holds lists without gaps: move empty slots (-1) to the end of each row
        order = np.argsort(items < 0, axis=1, kind="stable")
        items = np.take_along_axis(items, order, axis=1)
        clicks = np.take_along_axis(clicks, order, axis=1)
        return ClickLog(
            self.users.astype(np.int64),
            items,
            clicks & (items >= 0),
            np.asarray(world.user_ids),
            np.asarray(world.item_ids),
            name=name,
        )

    def write_jsonl(self, world: LoopWorld, path: str | Path) -> Path:
        """The toolkit's JSONL click-log format (`rankloop clicks fit` reads it), plus the round
        and each shown position's examination propensity (keys the reader ignores)."""
        path = Path(path)
        uid, iid = world.user_ids, world.item_ids
        with atomic_write(path) as fh:
            for i in range(len(self)):
                row = self.items[i]
                keep = np.flatnonzero(row >= 0)
                obj = {
                    "query": str(uid[self.users[i]]),
                    "docs": [str(iid[j]) for j in row[keep]],
                    "clicks": [int(p) + 1 for p, c in enumerate(self.clicks[i, keep]) if c],
                    "round": int(self.rounds[i]),
                    "propensities": [round(float(x), 6) for x in self.propensities[i, keep]],
                }
                fh.write(json.dumps(obj) + "\n")
        return path

    @classmethod
    def from_click_log(
        cls, log: ClickLog, world: LoopWorld, k: int, propensities: np.ndarray
    ) -> LoopLog:
        """A log of earlier sessions (round -1) in the world's ids; every query and document
        must be one of the world's, and lists longer than `k` are cut."""
        users = _codes(log.query_vocab, world.user_ids, "query", log.name)
        docs = _codes(log.doc_vocab, world.item_ids, "document", log.name)
        width = min(k, log.max_rank)
        items = np.full((len(log), k), -1, np.int64)
        d = log.doc_ids[:, :width]
        items[:, :width] = np.where(d >= 0, docs[np.maximum(d, 0)], -1)
        clicks = np.zeros((len(log), k), bool)
        clicks[:, :width] = log.clicks[:, :width]
        out = cls(k)
        out.append(-1, Shown(users[log.query_ids], items, clicks,
                             np.where(items >= 0, propensities[None, :k], 0.0)))  # fmt: skip
        return out


def _codes(vocab: np.ndarray, ids: np.ndarray, what: str, name: str) -> np.ndarray:
    """Row in `ids` of every entry of `vocab`; an id the world does not know is an error."""
    pos = {str(x): i for i, x in enumerate(ids)}
    missing = [str(v) for v in vocab if str(v) not in pos]
    if missing:
        raise RankloopError(
            f"click log {name!r}: {len(missing)} {what} id(s) are not in the world "
            f"(first: {missing[:3]}); a log must come from the same data set"
        )
    return np.fromiter((pos[str(v)] for v in vocab), np.int64, len(vocab))


class LoopWorld(ABC):
    """The environment: traffic, candidates, the truth behind the clicks, held-out measures.

    `user_ids` name the traffic units (query ids for search, user ids for recommendation) and
    `item_ids` the items (documents); everything else speaks in rows of these two arrays.
    """

    name: str
    user_ids: np.ndarray
    item_ids: np.ndarray
    click_model: ClickModel
    popularity: np.ndarray  # (n_items,) a-priori popularity (exposure and popularity lift)
    info: dict[str, Any]

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    def draw_users(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """(n,) traffic rows, uniform over the users (queries)."""
        return rng.integers(0, self.n_users, n)

    @abstractmethod
    def candidates(self, users: np.ndarray) -> np.ndarray:
        """(n, N) item rows a policy may show each user, in the first stage's order (-1 pads)."""

    @abstractmethod
    def attractiveness(self, users: np.ndarray, items: np.ndarray, round_: int) -> np.ndarray:
        """(n, L) P(click | examined) of each (user, item) in round `round_`; 0 where item is -1."""

    @abstractmethod
    def evaluate(self, learner: Learner, round_: int = 0) -> dict[str, float]:
        """Held-out measures of the learner's current policy in round `round_` (test nDCG@10,
        MAR-test DCG@5; under drift the truth of that round). The first key is the main one."""

    def examination(self, k: int) -> np.ndarray:
        """(k,) the click model's examination probability per position (relative to rank 1)."""
        theta = self.click_model.click_probs(np.ones((1, k)))[0]
        return theta / theta[0]

    def reference_rankings(
        self, users: np.ndarray, candidates: np.ndarray
    ) -> dict[str, np.ndarray]:
        """Fixed rankers an interleaving explorer may compare against: name -> (n, N) item rows."""
        return {"first_stage": candidates}


class Learner(ABC):
    """A policy and how it learns. State must pickle without the world (the runner checkpoints
    `pickle.dumps(learner)` after every round); the world is passed to every call instead.

    Batch learners rank with `scores` and learn after each round (`learn`); online learners
    (`online = True`) serve and learn one session at a time with `serve_one` / `update_one`.
    """

    online: bool = False

    def start(self, world: LoopWorld, random_state: int) -> None:  # noqa: B027 (optional hook)
        """Set up the round-0 policy (e.g. train on the logged data a world starts from)."""

    @abstractmethod
    def scores(self, world: LoopWorld, users: np.ndarray, candidates: np.ndarray) -> np.ndarray:
        """(n, N) policy scores of each user's candidates (higher first)."""

    def learn(self, world: LoopWorld, log: LoopLog, round_: int, rng: np.random.Generator) -> None:  # noqa: B027
        """Update the policy after round `round_` from the whole log so far."""

    def serve_one(self, world: LoopWorld, user: int, candidates: np.ndarray, k: int,
                  rng: np.random.Generator) -> np.ndarray:  # fmt: skip
        """(k,) item rows shown to one user (online learners)."""
        raise RankloopError(f"{type(self).__name__} is not an online learner")

    def update_one(self, world: LoopWorld, user: int, candidates: np.ndarray, shown: np.ndarray,
                   clicks: np.ndarray) -> None:  # fmt: skip
        """Learn from one session's clicks (online learners)."""
        raise RankloopError(f"{type(self).__name__} is not an online learner")


class Explorer(ABC):
    """Turns each user's ranked candidates into the shown top `k` (and records what it did)."""

    @abstractmethod
    def show(self, world: LoopWorld, users: np.ndarray, ranked: np.ndarray, k: int,
             rng: np.random.Generator) -> tuple[np.ndarray, dict[str, np.ndarray]]:  # fmt: skip
        """(n, k) shown item rows from `ranked` (n, N) item rows (policy order), and records
        (`swaps` (n, 2), `teams` (n, k)) for the log."""


WORLDS: Registry[LoopWorld] = Registry("loop world")
LEARNERS: Registry[Learner] = Registry("loop learner")
EXPLORERS: Registry[Explorer] = Registry("loop explorer")

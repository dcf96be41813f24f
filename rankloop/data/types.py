"""Core data types shared by every module: Corpus, Queries, Qrels, Run.

They are small and validated at construction, so the core can trust them. Readers and
writers live in `rankloop.data.beir` and `rankloop.data.trec`.
"""

from __future__ import annotations

import hashlib
import itertools
import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field

import numpy as np

from rankloop.errors import RankloopError


def _check_unique(ids: list[str], what: str) -> None:
    if len(set(ids)) != len(ids):
        seen: set[str] = set()
        dup = next(i for i in ids if i in seen or seen.add(i))  # type: ignore[func-returns-value]
        raise RankloopError(f"{what}: duplicate id {dup!r}")


@dataclass(frozen=True)
class Corpus:
    """Documents: parallel lists of ids, titles and texts (titles may be empty strings)."""

    ids: list[str]
    titles: list[str]
    texts: list[str]
    name: str = ""

    def __post_init__(self) -> None:
        if not (len(self.ids) == len(self.titles) == len(self.texts)):
            raise RankloopError(
                f"Corpus {self.name!r}: ids/titles/texts lengths differ "
                f"({len(self.ids)}, {len(self.titles)}, {len(self.texts)})"
            )
        _check_unique(self.ids, f"Corpus {self.name!r}")

    def __len__(self) -> int:
        return len(self.ids)

    def doc_texts(self) -> list[str]:
        """Text to encode or index per doc: `(title + " " + text).strip()`, as MTEB/BEIR do."""
        return [(t + " " + x).strip() for t, x in zip(self.titles, self.texts)]

    def checksum(self) -> str:
        """SHA-256 over ids, titles and texts; keys embedding caches."""
        h = hashlib.sha256()
        for i, t, x in zip(self.ids, self.titles, self.texts):
            for part in (i, t, x):
                h.update(part.encode("utf-8"))
                h.update(b"\x00")
            h.update(b"\x01")
        return h.hexdigest()

    def subset(self, ids: Iterable[str]) -> Corpus:
        """The documents with these ids, in the given order."""
        pos = {d: n for n, d in enumerate(self.ids)}
        try:
            rows = [pos[d] for d in ids]
        except KeyError as e:
            raise RankloopError(f"Corpus {self.name!r}: unknown doc id {e.args[0]!r}") from None
        return Corpus(
            [self.ids[r] for r in rows],
            [self.titles[r] for r in rows],
            [self.texts[r] for r in rows],
            self.name,
        )

    def head(self, n: int) -> Corpus:
        """The first `n` documents (small slices for tests)."""
        return Corpus(self.ids[:n], self.titles[:n], self.texts[:n], self.name)


@dataclass(frozen=True)
class Queries:
    """Queries: parallel lists of ids and texts."""

    ids: list[str]
    texts: list[str]
    name: str = ""

    def __post_init__(self) -> None:
        if len(self.ids) != len(self.texts):
            raise RankloopError(
                f"Queries {self.name!r}: {len(self.ids)} ids but {len(self.texts)} texts"
            )
        _check_unique(self.ids, f"Queries {self.name!r}")

    def __len__(self) -> int:
        return len(self.ids)

    def items(self) -> Iterator[tuple[str, str]]:
        return iter(zip(self.ids, self.texts))

    def subset(self, ids: Iterable[str]) -> Queries:
        """The queries with these ids, in the given order; unknown ids raise."""
        pos = {q: n for n, q in enumerate(self.ids)}
        try:
            rows = [pos[q] for q in ids]
        except KeyError as e:
            raise RankloopError(f"Queries {self.name!r}: unknown query id {e.args[0]!r}") from None
        return Queries([self.ids[r] for r in rows], [self.texts[r] for r in rows], self.name)


@dataclass(frozen=True)
class Qrels:
    """Relevance judgements: query id -> doc id -> integer grade (may be 0 or negative)."""

    data: dict[str, dict[str, int]]
    name: str = ""

    def __post_init__(self) -> None:
        for q, docs in self.data.items():
            for d, g in docs.items():
                if not isinstance(g, int) or isinstance(g, bool):
                    raise RankloopError(
                        f"Qrels {self.name!r}: grade for ({q}, {d}) is not an int: {g!r}"
                    )

    @classmethod
    def from_dict(cls, data: Mapping[str, Mapping[str, int]], name: str = "") -> Qrels:
        return cls(
            {str(q): {str(d): int(g) for d, g in docs.items()} for q, docs in data.items()}, name
        )

    def __getitem__(self, qid: str) -> dict[str, int]:
        return self.data[qid]

    def __contains__(self, qid: object) -> bool:
        return qid in self.data

    def __iter__(self) -> Iterator[str]:
        return iter(self.data)

    def __len__(self) -> int:
        return len(self.data)

    @property
    def query_ids(self) -> list[str]:
        return list(self.data)

    def n_judgements(self) -> int:
        return sum(len(d) for d in self.data.values())

    def relevant(self, qid: str, level: int = 1) -> set[str]:
        """Docs judged at grade >= `level` for `qid` (trec_eval's `-l`)."""
        return {d for d, g in self.data.get(qid, {}).items() if g >= level}

    def subset(self, qids: Iterable[str]) -> Qrels:
        return Qrels({q: dict(self.data[q]) for q in qids if q in self.data}, self.name)


@dataclass(frozen=True)
class Run:
    """A ranking per query: query id -> doc id -> score. Rank columns are never trusted.

    Order is trec_eval's: score descending, then doc id descending (see `ranked`).
    """

    data: dict[str, dict[str, float]]
    name: str = ""
    meta: dict[str, object] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        scores = np.fromiter(
            itertools.chain.from_iterable(d.values() for d in self.data.values()), dtype=float
        )
        if np.isnan(scores).any():  # vectorised check; locate the offender only on failure
            q, d = next(
                (q, d) for q, docs in self.data.items() for d, s in docs.items() if math.isnan(s)
            )
            raise RankloopError(f"Run {self.name!r}: NaN score for ({q}, {d})")

    @classmethod
    def from_dict(cls, data: Mapping[str, Mapping[str, float]], name: str = "") -> Run:
        return cls(
            {str(q): {str(d): float(s) for d, s in docs.items()} for q, docs in data.items()}, name
        )

    @classmethod
    def from_ranked(cls, data: Mapping[str, Iterable[tuple[str, float]]], name: str = "") -> Run:
        """Build from query id -> iterable of (doc id, score); duplicates raise."""
        out: dict[str, dict[str, float]] = {}
        for q, pairs in data.items():
            docs: dict[str, float] = {}
            for d, s in pairs:
                if d in docs:
                    raise RankloopError(f"Run {name!r}: doc {d!r} appears twice for query {q!r}")
                docs[d] = float(s)
            out[q] = docs
        return cls(out, name)

    def __getitem__(self, qid: str) -> dict[str, float]:
        return self.data[qid]

    def __contains__(self, qid: object) -> bool:
        return qid in self.data

    def __iter__(self) -> Iterator[str]:
        return iter(self.data)

    def __len__(self) -> int:
        return len(self.data)

    @property
    def query_ids(self) -> list[str]:
        return list(self.data)

    def ranked(self, qid: str, k: int | None = None) -> list[tuple[str, float]]:
        """(doc id, score) pairs in trec_eval order: score desc, then doc id desc."""
        docs = self.data.get(qid, {})
        if len(docs) < 2:
            return list(docs.items())[:k]
        ids = np.array(list(docs))
        scores = np.fromiter(docs.values(), np.float64, len(docs))
        # trec_eval stores scores as C floats: scores equal in float32 tie and fall back to doc id
        with np.errstate(over="ignore"):
            order = np.lexsort((ids, scores.astype(np.float32)))[::-1]
        order = order if k is None else order[:k]
        return list(zip(ids[order].tolist(), scores[order].tolist()))

    def top_k(self, k: int) -> Run:
        """A new run cut to the top `k` docs per query, in trec_eval order."""
        return Run({q: dict(self.ranked(q, k)) for q in self.data}, self.name, dict(self.meta))

    def with_name(self, name: str) -> Run:
        return Run(self.data, name, dict(self.meta))

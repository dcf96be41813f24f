"""What every retriever shares: the `Retriever` protocol, empty-query handling, identical-id
removal, and the small JSON file that says what kind of index a directory holds."""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from rankloop._runtime import cache_dir
from rankloop.data.types import Queries, Run
from rankloop.errors import IndexCorruptError, RankloopError
from rankloop.io import atomic_write, recover

META_FILE = "retriever.json"
META_FORMAT = 1
KINDS = ("dense", "bm25", "multivector")


def index_cache_dir() -> Path:
    """Where built indexes are cached: `_runtime.cache_dir("indexes")` ($RANKLOOP_CACHE/indexes)."""
    return cache_dir("indexes")


@runtime_checkable
class Retriever(Protocol):
    """Anything that turns queries into a ranked `Run`."""

    def search(self, queries: Queries, k: int = 1000) -> Run: ...


def check_k(k: int) -> int:
    """Validate a cut-off: a positive int."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise RankloopError(f"k must be a positive integer, got {k!r}")
    return k


def split_empty(queries: Queries, who: str) -> tuple[list[int], list[str]]:
    """Positions of queries with text, and ids of blank ones (which get no results, with a warning).

    Deliberate: a blank query carries no signal, and an embedding of "" (or an empty Lucene
    query) would return arbitrary documents that look like real results.
    """
    keep = [i for i, t in enumerate(queries.texts) if t.strip()]
    blank = [] if len(keep) == len(queries) else sorted(set(range(len(queries))) - set(keep))
    blank_ids = [queries.ids[i] for i in blank]
    if blank_ids:
        shown = ", ".join(repr(q) for q in blank_ids[:5])
        more = f" and {len(blank_ids) - 5} more" if len(blank_ids) > 5 else ""
        warnings.warn(
            f"{who}: {len(blank_ids)} blank queries get no results ({shown}{more})",
            stacklevel=3,
        )
    return keep, blank_ids


def write_meta(index_dir: str | os.PathLike[str], kind: str, **fields: Any) -> None:
    """Write `retriever.json` (kind plus build settings) into an index directory."""
    if kind not in KINDS:
        raise RankloopError(f"unknown index kind {kind!r}; expected one of {KINDS}")
    with atomic_write(Path(index_dir) / META_FILE) as fh:
        json.dump({"format": META_FORMAT, "kind": kind, **fields}, fh, indent=2, sort_keys=True)


def read_meta(index_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """Read `retriever.json` from an index directory built by rankloop."""
    recover(index_dir)  # a save killed between its renames: restore the old or new copy first
    path = Path(index_dir) / META_FILE
    if not Path(index_dir).is_dir():
        raise RankloopError(f"{index_dir}: no such index directory")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise IndexCorruptError(
            f"{index_dir}: no {META_FILE}; build the index with `rankloop index build`"
        ) from None
    except (OSError, ValueError) as e:
        raise IndexCorruptError(f"{path}: unreadable index metadata ({e})") from None
    if not isinstance(meta, dict) or meta.get("kind") not in KINDS:
        raise IndexCorruptError(f"{path}: expected a JSON object with kind in {KINDS}")
    return meta


def ranked_to_dict(
    qid: str, doc_ids: list[str], scores: list[float], k: int, remove_query_id: bool
) -> dict[str, float]:
    """One query's ranked hits as doc id -> score, cut to `k`.

    With `remove_query_id` the caller fetched k + 1 hits: a doc whose id equals the query id is
    dropped (ArguAna-style collections), otherwise the extra last hit is.
    """
    hits = dict(zip(doc_ids, scores))
    if remove_query_id:
        hits.pop(qid, None)
    while len(hits) > k:
        hits.popitem()  # dicts pop their last-inserted item: the lowest-ranked hit
    return hits


def drop_query_ids(run: Run, k: int) -> Run:
    """`run` without each query's own id among its documents, cut to `k` (for collections
    whose queries are corpus documents; fetch k + 1 so that k remain)."""
    data = {}
    for q in run.data:
        ranked = run.ranked(q)
        data[q] = ranked_to_dict(q, [d for d, _ in ranked], [s for _, s in ranked], k, True)
    return Run(data, run.name, dict(run.meta))

"""The search side of `rankloop serve`: named pipelines over one `Context`, run in micro-batches.

Requests arriving within `wait_ms` of each other (up to `max_batch`) are answered by one call of
each pipeline they need, on one query set: the encoder embeds the batch at once, FAISS searches
it at once, and the one Lucene searcher is only ever used from the batching thread. Pipelines can
be replaced while serving (`set_pipeline`): a batch uses the pipelines it found when it started.
"""

from __future__ import annotations

import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass

from rankloop.data.types import Queries
from rankloop.errors import RankloopError
from rankloop.serve.store import query_id

__all__ = ["Engine", "query_id"]


@dataclass
class _Request:
    names: tuple[str, ...]
    text: str
    k: int
    future: Future


class Engine:
    """Micro-batched pipeline execution: `submit(names, text, k)` returns a future of, per
    pipeline name, the ranked `(doc_id, score)` list (at most `k`)."""

    def __init__(self, pipelines: dict, *, max_batch: int = 64, wait_ms: float = 3.0) -> None:
        if not pipelines:
            raise RankloopError("serve: no pipeline to serve")
        self._pipelines = dict(pipelines)
        self.max_batch, self.wait_ms = max_batch, wait_ms
        self._queue: queue.Queue[_Request | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="rankloop-engine", daemon=True)
        self._thread.start()

    @property
    def names(self) -> list[str]:
        return list(self._pipelines)

    def pipeline(self, name: str) -> object:
        return self._pipelines[name]

    def set_pipeline(self, name: str, stage: object) -> None:
        """Add or replace a pipeline atomically (one reference swap; running batches keep theirs)."""
        self._pipelines = {**self._pipelines, name: stage}

    def submit(self, names: tuple[str, ...], text: str, k: int) -> Future:
        """Queue a search; the future gives pipeline name -> ranked (doc_id, score) list. An
        unknown pipeline name raises KeyError at once."""
        unknown = [n for n in names if n not in self._pipelines]
        if unknown:
            raise KeyError(unknown[0])
        req = _Request(tuple(names), text, k, Future())
        self._queue.put(req)
        return req.future

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=10)

    # -- the batching thread ---------------------------------------------------------------------
    def _take(self) -> list[_Request] | None:
        first = self._queue.get()
        if first is None:
            return None
        batch = [first]
        deadline = time.perf_counter() + self.wait_ms / 1000.0
        while len(batch) < self.max_batch:
            left = deadline - time.perf_counter()
            try:
                item = (
                    self._queue.get(timeout=max(left, 0.0))
                    if left > 0
                    else self._queue.get_nowait()
                )
            except queue.Empty:
                break
            if item is None:
                self._queue.put(None)
                break
            batch.append(item)
        return batch

    def _run(self) -> None:
        while True:
            batch = self._take()
            if batch is None:
                return
            pipelines = self._pipelines
            try:
                texts = {query_id(r.text): r.text for r in batch}
                queries = Queries(list(texts), list(texts.values()), "serve")
                runs = {}
                for name in dict.fromkeys(n for r in batch for n in r.names):
                    runs[name] = pipelines[name](queries)
                for r in batch:
                    qid = query_id(r.text)
                    r.future.set_result({n: runs[n].ranked(qid, r.k) if qid in runs[n] else []
                                         for n in r.names})  # fmt: skip
            except Exception as e:
                for r in batch:
                    if not r.future.done():
                        r.future.set_exception(e)

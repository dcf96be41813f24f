"""`rankloop serve`: a search (and recommend) service with a web page and a durable click log.

FastAPI on uvicorn. Every result list gets an impression id and is queued for the SQLite click
log (`rankloop.serve.store.ClickStore`) with its documents, positions, propensities, pipeline(s)
and time before the response is sent; the log's one ordered writer commits it before any click
on it, and a click is acknowledged only once it is on disk. A search
names one pipeline, or two to interleave (team-draft, blind to the user). An optional online
learner (`knn_memory`: kNN feedback from each repeated query's clicked documents) re-reads the
new clicks every `learn_every` seconds and swaps the `learned` pipeline in atomically.

JSON endpoints (under /api): health, search, click, doc, recommend, stats. `GET /` is the page.
Bad input (empty or overlong queries, unknown pipelines or impressions, a click on a document
that was not shown, malformed JSON, a wrong content type) gets a 4xx with a clear `detail` and
writes nothing. No endpoint takes a file path.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from concurrent.futures import Future
from importlib import resources
from typing import Annotated, Any

import numpy as np
from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator

from rankloop.data.types import Corpus
from rankloop.loop.interleave import team_draft
from rankloop.serve.engine import Engine, query_id
from rankloop.serve.store import ClickStore, DocNotShown, UnknownImpression

_log = logging.getLogger("rankloop.serve")

__all__ = ["ClickMemory", "create_app"]

MAX_QUERY = 1000
MAX_K = 100  # the most results a search returns
SNIPPET = 240
_STATIC = {"app.js": "application/javascript", "app.css": "text/css"}


class SearchBody(BaseModel):
    """A search: one pipeline, or two to interleave."""

    model_config = ConfigDict(extra="forbid")
    query: str = Field(max_length=MAX_QUERY)
    k: int = Field(default=10, ge=1, le=MAX_K)
    pipeline: str | None = None
    interleave: list[str] | None = Field(default=None, min_length=2, max_length=2)

    @field_validator("query")
    @classmethod
    def _not_blank(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("the query is empty")
        return v


class ClickBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    impression_id: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
    doc_id: str = Field(min_length=1, max_length=512)


class ClickMemory:
    """The online learner: every `learn_every` seconds, the clicks logged since the last look
    become the known documents of a `knn_feedback` stage over the `base` pipeline, which is
    swapped in as the `learned` pipeline."""

    def __init__(self, engine: Engine, store: ClickStore, base: str, ctx: Any, *,
                 learn_every: float = 5.0, weight: float = 0.5) -> None:  # fmt: skip
        self.engine, self.store, self.base, self.ctx = engine, store, base, ctx
        self.learn_every, self.weight = learn_every, weight
        self.known: dict[str, dict[str, int]] = {}
        self.last_click = 0
        self.updates = 0
        self.updated_at: float | None = None
        self._stop = threading.Event()
        self.update()
        self._thread = threading.Thread(target=self._loop, name="rankloop-learner", daemon=True)
        self._thread.start()

    def update(self) -> None:
        """Fold in the new clicks and swap in the re-built `learned` pipeline."""
        from rankloop.pipeline import Compose
        from rankloop.rerank.knn_feedback import KNNFeedback

        for c in self.store.clicks_since(self.last_click):
            docs = self.known.setdefault(query_id(c["query"]), {})
            docs[c["doc_id"]] = docs.get(c["doc_id"], 0) + 1
            self.last_click = max(self.last_click, int(c["click_id"]))
        stage = KNNFeedback(self.ctx, weight=self.weight)
        stage.set_feedback({q: sorted(d, key=lambda x: (-d[x], x)) for q, d in self.known.items()})
        self.engine.set_pipeline("learned", Compose([self.engine.pipeline(self.base), stage]))
        self.updates += 1
        self.updated_at = time.time()

    def _loop(self) -> None:
        while not self._stop.wait(self.learn_every):
            self.update()

    def info(self) -> dict[str, Any]:
        return {"learner": "knn_memory", "base": self.base, "updates": self.updates,
                "queries_with_clicks": len(self.known), "updated_at": self.updated_at}  # fmt: skip

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


class _JsonOnly:
    """ASGI middleware: a POST must send JSON (415 otherwise), checked before the body is read."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            raw = dict(scope["headers"]).get(b"content-type", b"")
            ctype = raw.split(b";")[0].strip().lower().decode("latin-1")
            if ctype != "application/json":
                detail = f"send JSON (Content-Type: application/json), got {ctype or 'none'!r}"
                await JSONResponse({"detail": detail}, status_code=415)(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _report_failure(future: Future) -> None:
    """Log an impression the writer could not store (its search was already answered)."""
    if not future.cancelled() and future.exception() is not None:
        _log.error("impression not stored: %s", future.exception())


def _snippet(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= SNIPPET else text[:SNIPPET].rsplit(" ", 1)[0] + " …"


def create_app(engine: Engine, store: ClickStore, corpus: Corpus, *, dataset: str = "",
               interleave: tuple[str, str] | None = None, learner: ClickMemory | None = None,
               recommender: Any = None) -> FastAPI:  # fmt: skip
    """The FastAPI application over a running `Engine` and an open `ClickStore`."""
    app = FastAPI(title="rankloop serve", docs_url="/api/docs", openapi_url="/api/openapi.json")
    row = {d: i for i, d in enumerate(corpus.ids)}
    rng = np.random.default_rng()
    lock = threading.Lock()

    def doc(d: str) -> tuple[str, str]:
        i = row[d]
        return corpus.titles[i], corpus.texts[i]

    app.add_middleware(_JsonOnly)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        parts = []
        for e in exc.errors():
            where_ = ".".join(str(x) for x in e.get("loc", ()) if x != "body")
            parts.append(f"{where_ + ': ' if where_ else ''}{e.get('msg', 'invalid')}")
        return JSONResponse({"detail": "; ".join(parts) or "invalid request"}, status_code=422)

    @app.get("/api/health")
    def health() -> dict[str, Any]:
        return {"status": "ok", "dataset": dataset, "docs": len(corpus), "pipelines": engine.names,
                "default": engine.names[0], "interleave": list(interleave) if interleave else None,
                "learner": "knn_memory" if learner else None, "recommender": recommender is not None,
                **store.counts()}  # fmt: skip

    # Search and click are coroutines awaiting the engine's and the store's futures: no request
    # holds a thread while its batch runs or its write is committed.
    @app.post("/api/search")
    async def search(body: SearchBody) -> dict[str, Any]:
        t0 = time.perf_counter()
        names = tuple(body.interleave) if body.interleave else (body.pipeline or engine.names[0],)
        if len(set(names)) != len(names):
            raise HTTPException(422, "interleave needs two different pipelines")
        try:
            runs = await asyncio.wrap_future(engine.submit(names, body.query, body.k))
        except KeyError as e:
            raise HTTPException(422, f"unknown pipeline {e.args[0]!r}; serving: "
                                     f"{', '.join(engine.names)}") from None  # fmt: skip
        if len(names) == 1:
            docs = [d for d, _ in runs[names[0]]]
            teams: list[str | None] | None = None
            props = [1.0] * len(docs)
            label = names[0]
        else:
            width = max(len(runs[n]) for n in names)
            codes = {
                d: i for i, d in enumerate(dict.fromkeys(d for n in names for d, _ in runs[n]))
            }
            ids = list(codes)
            stack = np.full((2, 1, max(width, 1)), -1, np.int64)
            for t, n in enumerate(names):
                stack[t, 0, : len(runs[n])] = [codes[d] for d, _ in runs[n]]
            with lock:
                lists, team = team_draft(stack, body.k, rng)
            keep = lists[0] >= 0
            docs = [ids[c] for c in lists[0][keep]]
            teams = [names[t] for t in team[0][keep]]
            props = [0.5] * len(docs)  # each round's pick order is a fair coin
            label = " vs ".join(names)
        impression = uuid.uuid4().hex
        # Queued, not awaited: the writer commits it before any click on it (one ordered queue),
        # so no acknowledged click can lose its impression, and a search does not wait for an
        # fsync. A crash can lose the impressions of the last few milliseconds; a click on one
        # of those is then refused (404), never acknowledged.
        store.submit_impression(
            impression_id=impression, query=body.query, docs=docs, propensities=props,
            pipeline=label, teams=teams).add_done_callback(_report_failure)  # fmt: skip
        results = []
        for pos, d in enumerate(docs, start=1):
            title, text = doc(d)
            results.append({"doc_id": d, "position": pos, "title": title or d,
                            "snippet": _snippet(text), "team": teams[pos - 1] if teams else None})  # fmt: skip
        return {"impression_id": impression, "query": body.query, "pipeline": label,
                "results": results, "took_ms": round((time.perf_counter() - t0) * 1000, 2)}  # fmt: skip

    @app.post("/api/click")
    async def click(body: ClickBody) -> dict[str, Any]:
        try:
            done = await asyncio.wrap_future(store.submit_click(body.impression_id, body.doc_id))
        except UnknownImpression as e:
            raise HTTPException(404, str(e)) from None
        except DocNotShown as e:
            raise HTTPException(422, str(e)) from None
        return {"click_id": done["click_id"], "position": done["position"]}

    @app.get("/api/doc")
    def get_doc(id: Annotated[str, Query(min_length=1, max_length=512)]) -> dict[str, str]:
        if id not in row:
            raise HTTPException(404, f"no document {id!r} in {dataset or 'the corpus'}")
        title, text = doc(id)
        return {"doc_id": id, "title": title, "text": text}

    @app.get("/api/recommend")
    def recommend(user: Annotated[str, Query(min_length=1, max_length=256)],
                  k: Annotated[int, Query(ge=1, le=MAX_K)] = 10) -> dict[str, Any]:  # fmt: skip
        if recommender is None:
            raise HTTPException(404, "this server has no recommender (start it with --recommender)")
        users = {u: i for i, u in enumerate(recommender.seen_.user_ids)}
        if user not in users:
            raise HTTPException(404, f"unknown user {user!r}")
        items, _scores = recommender.recommend([users[user]], k=k, exclude_seen=True)
        names = [recommender.seen_.item_ids[i] for i in items[0] if i >= 0]
        impression = uuid.uuid4().hex
        store.add_impression(impression_id=impression, query=f"user:{user}", docs=names,
                             propensities=[1.0] * len(names), pipeline="recommender",
                             kind="recommend", user=user)  # fmt: skip
        return {"impression_id": impression, "user": user,
                "results": [{"doc_id": n, "position": p} for p, n in enumerate(names, 1)]}  # fmt: skip

    @app.get("/api/stats")
    def stats() -> dict[str, Any]:
        return {**store.counts(), "ctr_by_pipeline": store.ctr_by_pipeline(),
                "interleaving": store.interleaving_outcomes(),
                "learner": learner.info() if learner else None}  # fmt: skip

    @app.get("/")
    def page() -> FileResponse:
        return FileResponse(_static("index.html"), media_type="text/html")

    @app.get("/static/{name}")
    def static(name: str) -> FileResponse:
        if name not in _STATIC:  # a fixed set of files: the client never names a path
            raise HTTPException(404, "not found")
        return FileResponse(_static(name), media_type=_STATIC[name])

    return app


def _static(name: str) -> str:
    return str(resources.files("rankloop.serve") / "static" / name)

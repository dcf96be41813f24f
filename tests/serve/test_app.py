"""The service's JSON API through FastAPI's TestClient: search, interleaving, clicks, stats, the
online learner, recommendations, and bad input (4xx, nothing written)."""

from __future__ import annotations

import argparse
import sqlite3
import time
from pathlib import Path

import pytest

pytest.importorskip("httpx")
from fastapi.testclient import TestClient

from rankloop.serve.cli import build


def _args(beir: Path, log: Path, **kw) -> argparse.Namespace:
    base = dict(dataset=str(beir), index=None, pipeline=["bm25", "rm3=bm25_rm3"], interleave=None,
                learner=None, learn_every=0.2, recommender=None, backend="torch", host="127.0.0.1", port=0,
                log=str(log), quiet=True)  # fmt: skip
    return argparse.Namespace(**{**base, **kw})


@pytest.fixture(scope="module")
def served(tiny_beir: Path, tmp_path_factory: pytest.TempPathFactory):
    log = tmp_path_factory.mktemp("serve") / "clicks.db"
    app, engine, store, _learner, ctx = build(_args(tiny_beir, log))
    with TestClient(app) as client:
        yield client, log
    engine.close()
    store.close()
    ctx.close()


def _rows(log: Path, sql: str) -> list[tuple]:
    with sqlite3.connect(f"file:{log}?mode=ro", uri=True) as db:
        return db.execute(sql).fetchall()


def _impression(log: Path, columns: str, impression: str, seconds: float = 5.0) -> list[tuple]:
    """The impression's row, once the writer has committed it: a search answers as soon as its
    impression is queued, and the commit follows within a group-commit interval."""
    deadline = time.monotonic() + seconds
    while True:
        rows = _rows(log, f"select {columns} from impressions where id = '{impression}'")
        if rows or time.monotonic() > deadline:
            return rows
        time.sleep(0.01)


def test_health_and_page(served) -> None:
    client, _ = served
    h = client.get("/api/health").json()
    assert (
        h["status"] == "ok"
        and h["pipelines"] == ["bm25", "rm3"]
        and h["interleave"] == ["bm25", "rm3"]
    )
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert client.get("/static/app.js").status_code == 200
    assert client.get("/static/..%2Fapp.py").status_code == 404
    assert client.get("/static/secret.txt").status_code == 404


def test_search_logs_the_impression_and_click(served) -> None:
    client, log = served
    r = client.post("/api/search", json={"query": "vitamin D deficiency", "k": 5})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["pipeline"] == "bm25" and 1 <= len(body["results"]) <= 5
    assert [x["position"] for x in body["results"]] == list(range(1, len(body["results"]) + 1))
    imp = body["impression_id"]
    second = body["results"][1]["doc_id"]
    row = _impression(log, "query, pipeline, docs", imp)
    assert row and row[0][0] == "vitamin D deficiency" and row[0][1] == "bm25"
    c = client.post("/api/click", json={"impression_id": imp, "doc_id": second})
    assert c.status_code == 200 and c.json()["position"] == 2
    assert _rows(log, f"select doc_id, position from clicks where impression_id = '{imp}'") == [
        (second, 2)
    ]


def test_interleaving_is_blind_and_logged(served) -> None:
    client, log = served
    body = client.post(
        "/api/search", json={"query": "cancer cells", "interleave": ["bm25", "rm3"]}
    ).json()
    assert body["pipeline"] == "bm25 vs rm3"
    assert {x["team"] for x in body["results"]} <= {"bm25", "rm3"}
    teams = _impression(log, "teams", body["impression_id"])[0][0]
    assert "bm25" in teams or "rm3" in teams
    client.post(
        "/api/click",
        json={"impression_id": body["impression_id"], "doc_id": body["results"][0]["doc_id"]},
    )
    stats = client.get("/api/stats").json()
    assert "bm25 vs rm3" in stats["interleaving"] or "rm3 vs bm25" in stats["interleaving"]
    assert stats["ctr_by_pipeline"]["bm25 vs rm3"]["clicked_impressions"] >= 1


def test_bad_input_is_4xx_and_writes_nothing(served) -> None:
    client, log = served
    before = (
        _rows(log, "select count(*) from impressions")[0][0],
        _rows(log, "select count(*) from clicks")[0][0],
    )
    cases = [
        (client.post("/api/search", json={"query": "   "}), 422, "empty"),
        (client.post("/api/search", json={"query": "x" * 10_000}), 422, "1000"),
        (
            client.post("/api/search", json={"query": "a", "pipeline": "nope"}),
            422,
            "unknown pipeline",
        ),
        (
            client.post("/api/search", json={"query": "a", "interleave": ["bm25", "bm25"]}),
            422,
            "different",
        ),
        (client.post("/api/search", json={"query": "a", "k": 0}), 422, "k"),
        (client.post("/api/search", json={"query": "a", "extra": 1}), 422, "extra"),
        (
            client.post(
                "/api/search", content=b"{not json", headers={"content-type": "application/json"}
            ),
            422,
            "JSON",
        ),
        (
            client.post(
                "/api/search",
                content=b"query=a",
                headers={"content-type": "application/x-www-form-urlencoded"},
            ),
            415,
            "JSON",
        ),
        (
            client.post("/api/click", json={"impression_id": "deadbeef", "doc_id": "x"}),
            404,
            "impression",
        ),
        (
            client.post("/api/click", json={"impression_id": "../../etc", "doc_id": "x"}),
            422,
            "impression_id",
        ),
        (client.get("/api/doc", params={"id": "no-such-doc"}), 404, "no document"),
        (client.get("/api/recommend", params={"user": "u1"}), 404, "recommender"),
    ]
    for response, status, word in cases:
        assert response.status_code == status, (response.status_code, response.text)
        assert word.lower() in response.json()["detail"].lower(), response.json()
    good = client.post("/api/search", json={"query": "protein folding"}).json()
    r = client.post(
        "/api/click", json={"impression_id": good["impression_id"], "doc_id": "not-in-the-list"}
    )
    assert r.status_code == 422 and "not shown" in r.json()["detail"].lower()
    after = (
        _rows(log, "select count(*) from impressions")[0][0],
        _rows(log, "select count(*) from clicks")[0][0],
    )
    assert after == (before[0] + 1, before[1])  # only the good search was written


def test_online_learner_swaps_in_a_learned_pipeline(tiny_beir: Path, tmp_path: Path) -> None:
    import time

    app, engine, store, learner, ctx = build(_args(tiny_beir, tmp_path / "c.db", pipeline=["dense"],
                                                   learner="knn_memory"))  # fmt: skip
    try:
        with TestClient(app) as client:
            assert "learned" in client.get("/api/health").json()["pipelines"]
            body = client.post(
                "/api/search", json={"query": "gene expression in tumours", "k": 10}
            ).json()
            last = body["results"][-1]["doc_id"]
            client.post("/api/click", json={"impression_id": body["impression_id"], "doc_id": last})
            deadline = time.monotonic() + 10
            while learner.info()["queries_with_clicks"] < 1 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert learner.info()["queries_with_clicks"] == 1
            again = client.post("/api/search", json={"query": "gene expression in tumours", "k": 10,
                                                     "pipeline": "learned"}).json()  # fmt: skip
            ranks = [x["doc_id"] for x in again["results"]]
            assert last in ranks and ranks.index(last) < 9  # the clicked document moved up
            assert client.get("/api/stats").json()["learner"]["updates"] >= 2
    finally:
        learner.close()
        engine.close()
        store.close()
        ctx.close()


def test_recommend_from_a_saved_recommender(tiny_beir: Path, tmp_path: Path) -> None:
    import numpy as np
    import scipy.sparse as sp

    from rankloop.data.interactions import Interactions
    from rankloop.recsys.baselines import WMF

    m = sp.random(30, 20, density=0.2, random_state=0, format="csr")
    m.data[:] = 1
    clicks = Interactions(user_items=m, kind="implicit", user_ids=[f"u{i}" for i in range(30)],
                          item_ids=[f"i{j}" for j in range(20)])  # fmt: skip
    model = WMF(factors=4, iterations=3).fit(clicks)
    path = model.save(tmp_path / "wmf.npz")
    app, engine, store, _learner, ctx = build(_args(tiny_beir, tmp_path / "r.db", pipeline=["bm25"],
                                                   recommender=str(path)))  # fmt: skip
    try:
        with TestClient(app) as client:
            r = client.get("/api/recommend", params={"user": "u3", "k": 5}).json()
            items, _ = model.recommend([3], k=5)
            assert [x["doc_id"] for x in r["results"]] == [f"i{j}" for j in items[0] if j >= 0]
            assert client.get("/api/recommend", params={"user": "nobody"}).status_code == 404
            assert np.isfinite(client.get("/api/stats").json()["clicks"])
    finally:
        engine.close()
        store.close()
        ctx.close()
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    from rankloop.errors import RankloopError
    from rankloop.recsys.base import load_recommender

    with pytest.raises(RankloopError, match=r"junk\.npz"):
        load_recommender(tmp_path / "junk.npz")


def test_pipelines_are_capped_and_share_query_vectors() -> None:
    """Every cut-off of a served pipeline is at most 100, and a service context keeps only its
    latest query sets' vectors (the stages of one batch share them)."""
    import numpy as np

    import rankloop.stages  # noqa: F401
    from rankloop.data.types import Corpus, Queries
    from rankloop.pipeline import parse
    from rankloop.retrieval.context import Context
    from rankloop.serve.cli import _cap_k

    class Counting:
        dim, calls = 3, 0

        def encode_queries(self, texts):
            Counting.calls += 1
            return np.ones((len(texts), 3), np.float32)

    ctx = Context(Corpus(["a"], [""], ["x"], "toy"), encoder=Counting(), cache_runs=False)
    capped = _cap_k(parse("dense >> rocchio(fb_docs=5)", ctx))
    assert str(capped) == "dense(k=100) >> rocchio(fb_docs=5, k=100)"
    assert str(_cap_k(parse("bm25(k=20)", ctx))) == "bm25(k=20)"
    sets = [Queries([f"q{i}"], [f"text {i}"], "s") for i in range(6)]
    ctx.query_vectors(sets[0])
    ctx.query_vectors(sets[0])
    assert Counting.calls == 1  # the same batch: encoded once
    for q in sets[1:]:
        ctx.query_vectors(q)
    assert len(ctx._qvecs) <= 4  # bounded

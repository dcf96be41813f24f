"""The click store of `rankloop serve`: schema checks, round trips, per-item errors in a batch,
concurrency, CTR and interleaving summaries, JSONL export (and its CLI), and kill -9 safety."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from rankloop.cli import main
from rankloop.data.clicklogs import read_jsonl
from rankloop.errors import RankloopError
from rankloop.loop.interleave import win_rate
from rankloop.serve.store import (
    ClickStore,
    DocNotShown,
    DuplicateImpression,
    UnknownImpression,
    query_id,
)

DOCS = ["d1", "d2", "d3", "d4"]


def _impression(store: ClickStore, imp: str, **kw: object) -> None:
    """Log `imp` showing DOCS (or kw["docs"]) with default fields the test does not care about."""
    docs = kw.pop("docs", DOCS)
    args = {"query": "some query", "pipeline": "bm25", "propensities": [1.0] * len(docs)}  # type: ignore[arg-type]
    store.add_impression(impression_id=imp, docs=docs, **{**args, **kw})  # type: ignore[arg-type]


@pytest.fixture
def store(tmp_path: Path):
    with ClickStore(tmp_path / "clicks.db") as s:
        yield s


# -- schema and versions ----------------------------------------------------------------------
def test_fresh_database_is_versioned_wal_and_reopens(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "clicks.db"
    with ClickStore(path) as store:
        _impression(store, "a1")
        store.add_click("a1", "d2")
    conn = sqlite3.connect(path)
    meta = dict(conn.execute("SELECT key, value FROM meta"))
    assert meta["schema_version"] == "1" and meta["format"] == "rankloop-clicks"
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()
    assert not list(path.parent.glob(".clicks.db.*"))  # no creation leftovers
    with ClickStore(path) as store:
        assert store.counts() == {"impressions": 1, "clicks": 1}
        assert store.impression("a1")["docs"] == DOCS  # type: ignore[index]


def _refused(path: Path, match: str) -> None:
    """Opening `path` raises a RankloopError naming the file and leaves it byte for byte."""
    before = path.read_bytes()
    with pytest.raises(RankloopError, match=match) as err:
        ClickStore(path)
    assert str(path) in str(err.value) and "expected" in str(err.value)
    assert path.read_bytes() == before
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]


def test_foreign_files_are_refused_and_left_unchanged(tmp_path: Path) -> None:
    other = tmp_path / "other" / "app.db"
    other.parent.mkdir()
    conn = sqlite3.connect(other)
    conn.execute("CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT)")
    conn.execute("INSERT INTO meta VALUES ('schema_version', '1')")
    conn.commit()
    conn.close()
    _refused(other, "SQLite database of something else")
    noise = tmp_path / "noise" / "clicks.db"
    noise.parent.mkdir()
    noise.write_bytes(np.random.default_rng(0).bytes(8192))
    _refused(noise, "not an SQLite database")
    empty = tmp_path / "empty" / "clicks.db"
    empty.parent.mkdir()
    empty.touch()
    _refused(empty, "an empty file")
    with pytest.raises(RankloopError, match="not a file"):
        ClickStore(tmp_path)


def test_newer_schema_version_is_refused_unchanged(tmp_path: Path) -> None:
    path = tmp_path / "db" / "clicks.db"
    ClickStore(path).close()
    conn = sqlite3.connect(path)
    conn.execute("UPDATE meta SET value = '2' WHERE key = 'schema_version'")
    conn.commit()
    conn.close()
    _refused(path, "schema version 2 is newer than this rankloop reads")
    conn = sqlite3.connect(path)
    conn.execute("UPDATE meta SET value = 'x' WHERE key = 'schema_version'")
    conn.commit()
    conn.close()
    _refused(path, "unknown schema_version 'x'")


def test_missing_file_with_create_false(tmp_path: Path) -> None:
    with pytest.raises(RankloopError, match="no such click database"):
        ClickStore(tmp_path / "none.db", create=False)
    assert not (tmp_path / "none.db").exists()


# -- writing and reading ----------------------------------------------------------------------
def test_impressions_and_clicks_round_trip(store: ClickStore) -> None:
    store.add_impression(
        impression_id="imp-1",
        query="Café  au lait",
        docs=DOCS,
        propensities=[1.0, 0.5, 0.25, 0.125],
        pipeline="A vs B",
        teams=["A", "B", None, "A"],
        user="u7",
        timestamp=100.5,
    )
    got = store.impression("imp-1")
    assert got == {
        "impression_id": "imp-1",
        "query": "Café  au lait",
        "docs": DOCS,
        "propensities": [1.0, 0.5, 0.25, 0.125],
        "pipeline": "A vs B",
        "teams": ["A", "B", None, "A"],
        "kind": "search",
        "user": "u7",
        "time": 100.5,
    }
    assert store.impression("nope") is None
    before = time.time()
    first = store.add_click("imp-1", "d3")
    assert first == {"click_id": first["click_id"], "position": 3, "impression_id": "imp-1",
                     "doc_id": "d3"}  # fmt: skip
    again = store.add_click("imp-1", "d3", timestamp=200.0)  # a re-opened result counts again
    assert again["click_id"] > first["click_id"]
    assert store.counts() == {"impressions": 1, "clicks": 2}
    since = store.clicks_since(0)
    assert [c["click_id"] for c in since] == [first["click_id"], again["click_id"]]
    assert since[0]["time"] >= before and since[1]["time"] == 200.0
    assert {k: since[1][k] for k in ("impression_id", "query", "doc_id", "position")} == {
        "impression_id": "imp-1", "query": "Café  au lait", "doc_id": "d3", "position": 3}  # fmt: skip
    assert since[1]["propensity"] == 0.25 and since[1]["pipeline"] == "A vs B"
    assert store.clicks_since(again["click_id"]) == []


def test_bad_clicks_raise_and_write_nothing(store: ClickStore) -> None:
    _impression(store, "imp")
    with pytest.raises(UnknownImpression, match="no impression other") as unknown:
        store.add_click("other", "d1")
    assert isinstance(unknown.value, KeyError) and isinstance(unknown.value, RankloopError)
    with pytest.raises(DocNotShown, match="'d9' was not shown in impression imp"):
        store.add_click("imp", "d9")
    with pytest.raises(DuplicateImpression, match="already logged"):
        _impression(store, "imp", docs=["x"])
    for bad in ("", "a b", "x" * 65, "1'; DROP TABLE clicks; --", "é"):
        with pytest.raises(RankloopError, match="impression id must be"):
            store.add_click(bad, "d1")
    with pytest.raises(RankloopError, match="propensities must be in"):
        _impression(store, "p", propensities=[1.0, 0.0, 1.0, 1.0])
    with pytest.raises(RankloopError, match="listed twice"):
        _impression(store, "p", docs=["a", "a"])
    with pytest.raises(RankloopError, match="one team per document"):
        _impression(store, "p", teams=["A"])
    assert store.counts() == {"impressions": 1, "clicks": 0}
    assert store.impression("imp")["docs"] == DOCS  # type: ignore[index]
    store.close()
    store.close()
    with pytest.raises(RankloopError, match="closed"):
        store.add_click("imp", "d1")
    with pytest.raises(RankloopError, match="closed"):
        store.counts()


def test_concurrent_writers_group_commit_with_failures_isolated(store: ClickStore) -> None:
    for i in range(8):
        _impression(store, f"imp{i}")
    acked: list[list[int]] = [[] for _ in range(16)]
    refused = [0] * 16

    def work(t: int) -> None:
        for j in range(200):
            acked[t].append(store.add_click(f"imp{(t + j) % 8}", DOCS[j % 4])["click_id"])
            if j % 50 == 0:  # bad items share batches with good ones and fail alone
                try:
                    store.add_click(f"imp{t % 8}", "not-shown")
                except DocNotShown:
                    refused[t] += 1

    threads = [threading.Thread(target=work, args=(t,)) for t in range(16)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    ids = [i for part in acked for i in part]
    assert len(ids) == len(set(ids)) == 3200 and sum(refused) == 64
    stored = {c["click_id"] for c in store.clicks_since(0)}
    assert stored == set(ids)
    assert store.counts() == {"impressions": 8, "clicks": 3200}


# -- summaries ----------------------------------------------------------------------------------
def test_ctr_by_pipeline(store: ClickStore) -> None:
    for imp, pipeline, stamp in [("a0", "A", 0.0), ("a1", "A", 30.0), ("a2", "A", 70.0),
                                 ("b0", "B", 10.0)]:  # fmt: skip
        _impression(store, imp, pipeline=pipeline, timestamp=stamp)
    for imp, doc in [("a0", "d1"), ("a0", "d1"), ("a2", "d4")]:
        store.add_click(imp, doc)
    assert store.ctr_by_pipeline() == {
        "A": {"impressions": 3, "clicked_impressions": 2, "clicks": 3, "ctr": 2 / 3,
              "series": [[0.0, 2, 1], [60.0, 1, 1]]},
        "B": {"impressions": 1, "clicked_impressions": 0, "clicks": 0, "ctr": 0.0,
              "series": [[0.0, 1, 0]]},
    }  # fmt: skip
    series = store.ctr_by_pipeline(bucket_s=20.0)["A"]["series"]
    assert series == [[0.0, 1, 1], [20.0, 1, 0], [60.0, 1, 1]]
    with pytest.raises(RankloopError, match="bucket_s"):
        store.ctr_by_pipeline(0.0)


def test_interleaving_outcomes(store: ClickStore) -> None:
    teams = ["y", "x", "y", "x"]  # d1, d3 from y; d2, d4 from x
    clicks = {
        "i1": ["d2"],  # x wins
        "i2": ["d1", "d3", "d2"],  # y wins 2:1
        "i3": [],  # no click: tie
        "i4": ["d1", "d2"],  # 1:1 tie
        "i5": ["d1", "d1", "d4"],  # a re-opened result counts once: 1:1 tie
        "i6": ["d3"],  # y wins
    }
    for imp, docs in clicks.items():
        _impression(store, imp, teams=teams, pipeline="x vs y")
        for d in docs:
            store.add_click(imp, d)
    _impression(store, "plain")  # no teams: not interleaved
    store.add_click("plain", "d1")
    _impression(store, "three", teams=["p", "q", "r", None])  # multileaved: not a pair
    _impression(store, "pq", teams=["q", "p", "q", "p"])
    store.add_click("pq", "d1")
    store.add_click("pq", "d2")
    rate, low, high = win_rate(np.array([-1, 1, 1]))
    assert store.interleaving_outcomes() == {
        "p vs q": {"a": "p", "b": "q", "wins_a": 0, "wins_b": 0, "ties": 1,
                   "win_rate_b": None, "ci": None},
        "x vs y": {"a": "x", "b": "y", "wins_a": 1, "wins_b": 2, "ties": 3,
                   "win_rate_b": rate, "ci": [low, high]},
    }  # fmt: skip
    assert rate == pytest.approx(2 / 3) and 0 < low < rate < high < 1


# -- export ---------------------------------------------------------------------------------------
def _export_fixture(store: ClickStore) -> None:
    _impression(store, "s2", query="Foo  bar", timestamp=20.0, pipeline="A")
    _impression(store, "s1", query="foo bar", timestamp=10.0, propensities=[1, 0.5, 0.5, 0.25])
    _impression(store, "r1", query="user:u1", kind="recommend", timestamp=5.0)
    _impression(store, "s3", query="nothing found", docs=[], timestamp=30.0)
    for imp, doc in [("s2", "d3"), ("s2", "d1"), ("s2", "d3"), ("r1", "d2")]:
        store.add_click(imp, doc)


def test_export_is_readable_by_read_jsonl(store: ClickStore, tmp_path: Path) -> None:
    _export_fixture(store)
    out = tmp_path / "log.jsonl"
    with pytest.warns(UserWarning, match="left 1 impression"):
        assert store.export_click_log(out) == 2
    log = read_jsonl(out)
    assert len(log) == 2 and len(log.query_vocab) == 1  # the same normalised query
    assert log.session(0) == (query_id("foo bar"), DOCS, [])
    assert log.session(1) == (query_id("foo bar"), DOCS, [2, 0])  # 0-based, first-click order
    assert log.timestamps.tolist() == [10.0, 20.0]  # type: ignore[union-attr]
    first, second = (json.loads(line) for line in out.read_text().splitlines())
    assert second["clicks"] == [3, 1] and second["text"] == "Foo  bar"
    assert first["propensities"] == [1.0, 0.5, 0.5, 0.25] and first["impression_id"] == "s1"
    assert first["query"] == query_id("FOO\tBAR ") and first["query"].startswith("q")
    assert first["pipeline"] == "bm25" and len(first["query"]) == 17
    with pytest.warns(UserWarning):
        assert store.export_click_log(out, kind=None) == 3
    assert read_jsonl(out).session(0)[2] == [1]


def test_cli_export(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "clicks.db"
    with ClickStore(db) as store:
        _export_fixture(store)
    out = tmp_path / "out" / "log.jsonl"
    with pytest.warns(UserWarning):
        assert main(["clicks", "export", str(db), "--format", "jsonl", "--out", str(out)]) == 0
    assert "2 sessions" in capsys.readouterr().out and len(read_jsonl(out)) == 2
    assert main(["clicks", "export", str(db), "--out", str(out), "--kind", "recommend"]) == 0
    assert "1 sessions" in capsys.readouterr().out and read_jsonl(out).session(0)[2] == [1]
    missing = tmp_path / "missing.db"
    assert main(["clicks", "export", str(missing), "--out", str(out)]) == 2
    assert f"{missing}: no such click database" in capsys.readouterr().err
    assert not missing.exists()
    foreign = tmp_path / "notes.txt"
    foreign.write_text("hello\n")
    assert main(["clicks", "export", str(foreign), "--out", str(out)]) == 2
    assert f"{foreign}: not an SQLite database" in capsys.readouterr().err


# -- kill -9 ----------------------------------------------------------------------------------
_CHILD = textwrap.dedent(
    """
    import sys, threading
    from rankloop.serve.store import ClickStore

    store = ClickStore(sys.argv[1])
    imp, docs = sys.argv[2], ["d1", "d2", "d3"]
    store.add_impression(impression_id=imp, query="q", docs=docs, propensities=[1.0] * 3,
                         pipeline="p")
    lock = threading.Lock()
    print("ready", flush=True)

    def work(t):
        j = t
        while True:
            click = store.add_click(imp, docs[j % 3])
            j += 1
            with lock:
                sys.stdout.write(f"{click['click_id']}\\n")
                sys.stdout.flush()

    for t in range(8):
        threading.Thread(target=work, args=(t,), daemon=True).start()
    threading.Event().wait()
    """
)


def test_acknowledged_clicks_survive_sigkill(tmp_path: Path) -> None:
    db = tmp_path / "clicks.db"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    for round_ in range(3):
        out = tmp_path / f"acked-{round_}.txt"
        with open(out, "w") as fh:
            child = subprocess.Popen(
                [sys.executable, "-c", _CHILD, str(db), f"imp{round_}"], stdout=fh, env=env
            )
        try:
            deadline = time.monotonic() + 15
            while not out.read_text().startswith("ready") and time.monotonic() < deadline:
                assert child.poll() is None, "the writer process died"
                time.sleep(0.02)
            time.sleep(1.0)
        finally:
            child.send_signal(signal.SIGKILL)
            child.wait()
        lines = out.read_text().split("\n")[1:-1]  # drop "ready" and a last line cut short
        acked = {int(line) for line in lines}
        with ClickStore(db) as store:
            stored = {c["click_id"] for c in store.clicks_since(0)}
            n_round = sum(c["impression_id"] == f"imp{round_}" for c in store.clicks_since(0))
        print(f"kill -9 round {round_}: {len(acked)} acknowledged, {n_round} stored")
        assert len(acked) > 50 and acked <= stored

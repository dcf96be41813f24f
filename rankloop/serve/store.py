"""The durable click log of `rankloop serve`: impressions and the clicks on them, in SQLite.

A `ClickStore` is one SQLite file in WAL mode with `synchronous=FULL`, so a write is on disk
(and survives a kill or a power cut) when the call that made it returns. One writer thread owns
the write connection and commits in groups: `add_impression` and `add_click`, called from many
server threads at once, queue their work and block until the transaction holding it has
committed; one fsync then acknowledges a whole batch. Reads use a connection per thread (WAL
lets them run beside the writer). The schema is versioned in the `meta` table; a file that is
not a rankloop click database, or one of a newer schema, is refused and left untouched.

`export_click_log` writes the toolkit's JSONL click-log format (`rankloop.data.clicklogs`), so
`rankloop clicks fit` learns from what people clicked.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import queue
import re
import sqlite3
import tempfile
import threading
import time
import unicodedata
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import numpy as np

from rankloop.errors import RankloopError
from rankloop.io import atomic_write
from rankloop.loop.interleave import win_rate

__all__ = ["ClickStore", "DocNotShown", "DuplicateImpression", "UnknownImpression", "query_id"]

SCHEMA_VERSION = 1
_FORMAT = "rankloop-clicks"
_SQLITE_HEADER = b"SQLite format 3\x00"
_IMPRESSION_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_SCHEMA = """
CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE impressions(
    id TEXT PRIMARY KEY, time REAL NOT NULL, kind TEXT NOT NULL, query TEXT NOT NULL,
    user TEXT, pipeline TEXT NOT NULL, docs TEXT NOT NULL, propensities TEXT NOT NULL, teams TEXT
);
CREATE TABLE clicks(
    id INTEGER PRIMARY KEY AUTOINCREMENT, impression_id TEXT NOT NULL REFERENCES impressions(id),
    doc_id TEXT NOT NULL, position INTEGER NOT NULL, time REAL NOT NULL
);
CREATE INDEX clicks_impression ON clicks(impression_id);
"""


class UnknownImpression(RankloopError, KeyError):
    """A click names an impression id the store has never logged."""

    def __str__(self) -> str:  # KeyError would show the message in quotes
        return str(self.args[0])


class DocNotShown(RankloopError, KeyError):
    """A click names a document that was not in the impression's result list."""

    def __str__(self) -> str:
        return str(self.args[0])


class DuplicateImpression(RankloopError, ValueError):
    """An impression id is logged a second time; ids must be unique."""


# -- validation of what callers hand in (impression ids come from clients) ----------------------
def _impression_id(value: object) -> str:
    if not isinstance(value, str) or not _IMPRESSION_ID.fullmatch(value):
        raise RankloopError(
            f"impression id must be 1 to 64 characters of A-Z a-z 0-9 _ -, got {value!r:.80}"
        )
    return value


def _text(value: object, what: str, *, empty: bool = False) -> str:
    """A string SQLite and JSON store faithfully: valid UTF-8 (no lone surrogates), no NUL."""
    ok = isinstance(value, str) and (empty or value) and "\x00" not in value
    if ok:
        try:
            value.encode("utf-8")  # type: ignore[union-attr]
        except UnicodeEncodeError:
            ok = False
    if not ok:
        need = "a" if empty else "a non-empty"
        raise RankloopError(f"{what} must be {need} UTF-8 string without NUL, got {value!r:.80}")
    return value  # type: ignore[return-value]


def _timestamp(value: float | None) -> float:
    if value is None:
        return time.time()
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise RankloopError(f"timestamp must be finite seconds, got {value!r}")
    return float(value)


def query_id(text: str) -> str:
    """A stable id without blanks for a query text: "q" + 16 hex digits of the SHA-1 of the text
    NFKC-normalised, case-folded, with blanks collapsed (so "Foo  bar" and "foo bar" agree)."""
    norm = " ".join(unicodedata.normalize("NFKC", text).casefold().split())
    return "q" + hashlib.sha1(norm.encode("utf-8")).hexdigest()[:16]


# -- opening: create atomically, or check that the file is ours -------------------------------
def _create(path: Path) -> None:
    """Build an empty click database beside `path` and link it into place, so that `path` is
    either absent or complete, even if this process dies half-way (or another creates it too)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        conn = sqlite3.connect(tmp, isolation_level=None)
        try:
            conn.execute("PRAGMA journal_mode=WAL")  # persistent: stored in the file header
            conn.execute("PRAGMA synchronous=FULL")
            conn.executescript(_SCHEMA)
            conn.executemany(
                "INSERT INTO meta(key, value) VALUES (?, ?)",
                [("format", _FORMAT), ("schema_version", str(SCHEMA_VERSION))],
            )
        finally:
            conn.close()
        with contextlib.suppress(FileExistsError):  # someone else created it first: use theirs
            os.link(tmp, path)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    finally:
        for leftover in (tmp, f"{tmp}-wal", f"{tmp}-shm"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(leftover)


def _check(path: Path) -> None:
    """Raise RankloopError unless `path` is a rankloop click database of a schema this code
    reads. Only reads: a file that fails is left exactly as it was."""
    expected = f"a rankloop click database (SQLite, schema version {SCHEMA_VERSION})"
    if not path.is_file():
        raise RankloopError(f"{path}: not a file; expected {expected}")
    with open(path, "rb") as fh:
        header = fh.read(len(_SQLITE_HEADER))
    if header != _SQLITE_HEADER:
        what = "an empty file" if not header else "not an SQLite database"
        raise RankloopError(f"{path}: {what}; expected {expected}")
    try:
        conn = sqlite3.connect(path, isolation_level=None)
        try:
            conn.execute("PRAGMA query_only=ON")
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
            meta = dict(conn.execute("SELECT key, value FROM meta")) if "meta" in tables else {}
        finally:
            conn.close()
    except sqlite3.DatabaseError as e:
        raise RankloopError(f"{path}: unreadable SQLite file ({e}); expected {expected}") from None
    if meta.get("format") != _FORMAT:
        raise RankloopError(
            f"{path}: an SQLite database of something else (no meta.format = {_FORMAT!r}); "
            f"expected {expected}. Refusing to use it"
        )
    version = meta.get("schema_version", "")
    if not version.isdigit() or int(version) < 1:
        raise RankloopError(f"{path}: unknown schema_version {version!r}; expected {expected}")
    if int(version) > SCHEMA_VERSION:
        raise RankloopError(
            f"{path}: click database schema version {version} is newer than this rankloop reads "
            f"(expected {SCHEMA_VERSION} or older); upgrade rankloop"
        )


class _Job:
    """One queued write: the function the writer runs on its connection, and the caller's future."""

    __slots__ = ("apply", "future")

    def __init__(self, apply: Callable[[sqlite3.Connection], Any]) -> None:
        self.apply = apply
        self.future: Future[Any] = Future()


_STOP = object()


class ClickStore:
    """Impressions and clicks in one SQLite file; writes are durable when the call returns.

    Thread-safe: any thread may write or read. `close()` (or leaving a `with` block) waits for
    queued writes and stops the writer thread.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        batch_ms: float = 2.0,
        max_batch: int = 512,
        create: bool = True,
    ) -> None:
        """Open `path`, creating an empty click database there if it is missing and `create`."""
        if not batch_ms >= 0 or not math.isfinite(batch_ms):
            raise RankloopError(f"batch_ms must be finite and >= 0, got {batch_ms!r}")
        if isinstance(max_batch, bool) or not isinstance(max_batch, int) or max_batch < 1:
            raise RankloopError(f"max_batch must be an int >= 1, got {max_batch!r}")
        self.path = Path(path)
        if not os.path.lexists(self.path):
            if not create:
                raise RankloopError(f"{self.path}: no such click database")
            self.path.parent.mkdir(parents=True, exist_ok=True)
            _create(self.path)
        _check(self.path)
        self._batch_s = batch_ms / 1000.0
        self._max_batch = max_batch
        self._writer_conn = self._connect()
        self._writer_conn.execute("PRAGMA foreign_keys=ON")
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._lock = threading.Lock()  # orders submissions against close()
        self._closed = False
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []
        self._writer = threading.Thread(target=self._run, name=f"ClickStore({self.path.name})")
        self._writer.daemon = True  # a kill loses only unacknowledged writes, as it would anyway
        self._writer.start()

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
        mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if mode != "wal":
            conn.close()
            raise RankloopError(f"{self.path}: could not switch to WAL mode (got {mode!r})")
        conn.execute("PRAGMA synchronous=FULL")
        return conn

    def __enter__(self) -> ClickStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- writing ------------------------------------------------------------------------------
    def _enqueue(self, apply: Callable[[sqlite3.Connection], Any]) -> Future[Any]:
        """Queue a write; the future resolves once the batch that holds it is committed (or
        it failed). `asyncio.wrap_future` lets a coroutine await it without a thread."""
        job = _Job(apply)
        with self._lock:
            if self._closed:
                raise RankloopError(f"{self.path}: the click store is closed")
            self._queue.put(job)
        return job.future

    def _run(self) -> None:
        """The writer thread: take a job, gather more for up to batch_ms or max_batch jobs,
        run them in one transaction, commit, then release their callers."""
        stop = False
        while not stop:
            first = self._queue.get()
            if first is _STOP:
                break
            batch = [first]
            deadline = time.monotonic() + self._batch_s
            while len(batch) < self._max_batch:
                try:
                    job = self._queue.get(timeout=max(deadline - time.monotonic(), 0.0))
                except queue.Empty:
                    break
                if job is _STOP:
                    stop = True
                    break
                batch.append(job)
            self._write(batch)
        self._writer_conn.close()

    def _write(self, batch: list[_Job]) -> None:
        """One transaction for the batch. A job that raises (a click on an unknown impression)
        wrote nothing and fails alone; a failed commit fails every job of the batch."""
        conn = self._writer_conn
        results: list[tuple[_Job, Any, BaseException | None]] = []
        try:
            conn.execute("BEGIN IMMEDIATE")
            for job in batch:
                try:
                    results.append((job, job.apply(conn), None))
                except RankloopError as e:
                    results.append((job, None, e))
            conn.execute("COMMIT")
        except Exception as e:  # disk full, I/O error: nothing of this batch is durable
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            for job in batch:
                job.future.set_exception(
                    RankloopError(f"{self.path}: writing to the click database failed: {e}")
                )
            return
        for job, result, error in results:
            if error is None:
                job.future.set_result(result)
            else:
                job.future.set_exception(error)

    def add_impression(self, **impression: Any) -> None:
        """Log a shown result list (see `submit_impression`); returns once it is on disk."""
        self.submit_impression(**impression).result()

    def submit_impression(
        self,
        *,
        impression_id: str,
        query: str,
        docs: list[str],
        propensities: list[float],
        pipeline: str,
        teams: list[str | None] | None = None,
        kind: str = "search",
        user: str | None = None,
        timestamp: float | None = None,
    ) -> Future[None]:
        """Queue a shown result list: `docs` best first, each position's examination propensity
        in (0, 1], and for interleaving the team (ranker name) that contributed each position.
        The future resolves when it is on disk."""
        impression_id = _impression_id(impression_id)
        query = _text(query, "query", empty=True)
        pipeline = _text(pipeline, "pipeline")
        kind = _text(kind, "kind")
        if user is not None:
            user = _text(user, "user")
        if not isinstance(docs, list | tuple):
            raise RankloopError(f"docs must be a list of document ids, got {type(docs).__name__}")
        docs = [_text(d, "a document id") for d in docs]
        if len(set(docs)) != len(docs):
            raise RankloopError(f"impression {impression_id}: a document is listed twice")
        if not isinstance(propensities, list | tuple) or len(propensities) != len(docs):
            raise RankloopError(f"impression {impression_id}: want one propensity per document")
        props = [p for p in propensities if isinstance(p, int | float) and not isinstance(p, bool)]
        if len(props) != len(docs) or not all(0.0 < p <= 1.0 for p in props):
            raise RankloopError(f"impression {impression_id}: propensities must be in (0, 1]")
        if teams is not None:
            if not isinstance(teams, list | tuple) or len(teams) != len(docs):
                raise RankloopError(f"impression {impression_id}: want one team per document")
            teams = [None if t is None else _text(t, "a team name") for t in teams]
        row = (
            impression_id,
            _timestamp(timestamp),
            kind,
            query,
            user,
            pipeline,
            json.dumps(docs),
            json.dumps([float(p) for p in props]),
            None if teams is None else json.dumps(teams),
        )

        def apply(conn: sqlite3.Connection) -> None:
            try:
                conn.execute("INSERT INTO impressions VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", row)
            except sqlite3.IntegrityError:
                raise DuplicateImpression(
                    f"impression {impression_id} is already logged; impression ids must be unique"
                ) from None

        return self._enqueue(apply)

    def add_click(
        self, impression_id: str, doc_id: str, *, timestamp: float | None = None
    ) -> dict[str, Any]:
        """Log a click on `doc_id` of impression `impression_id`; returns {"click_id",
        "position" (1-based), "impression_id", "doc_id"} once it is on disk."""
        return self.submit_click(impression_id, doc_id, timestamp=timestamp).result()

    def submit_click(
        self, impression_id: str, doc_id: str, *, timestamp: float | None = None
    ) -> Future[dict[str, Any]]:
        """Queue a click (see `add_click`); the future resolves when it is on disk."""
        impression_id = _impression_id(impression_id)
        doc_id = _text(doc_id, "doc_id")
        stamp = _timestamp(timestamp)

        def apply(conn: sqlite3.Connection) -> dict[str, Any]:
            row = conn.execute(
                "SELECT docs FROM impressions WHERE id = ?", (impression_id,)
            ).fetchone()
            if row is None:
                raise UnknownImpression(f"no impression {impression_id} in the click log")
            docs = json.loads(row[0])
            if doc_id not in docs:
                raise DocNotShown(
                    f"document {doc_id!r:.80} was not shown in impression {impression_id}"
                )
            position = docs.index(doc_id) + 1
            cur = conn.execute(
                "INSERT INTO clicks(impression_id, doc_id, position, time) VALUES (?, ?, ?, ?)",
                (impression_id, doc_id, position, stamp),
            )
            return {
                "click_id": cur.lastrowid,
                "position": position,
                "impression_id": impression_id,
                "doc_id": doc_id,
            }

        return self._enqueue(apply)

    def close(self) -> None:
        """Commit what is queued, stop the writer thread, close every connection. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._queue.put(_STOP)
        self._writer.join()
        for conn in self._readers:
            conn.close()
        self._readers.clear()

    # -- reading ------------------------------------------------------------------------------
    def _reader(self) -> sqlite3.Connection:
        """This thread's read connection (WAL: readers never wait for the writer)."""
        if self._closed:
            raise RankloopError(f"{self.path}: the click store is closed")
        conn = getattr(self._local, "conn", None)
        if conn is None:
            with self._lock:
                if self._closed:
                    raise RankloopError(f"{self.path}: the click store is closed")
                conn = self._connect()
                conn.execute("PRAGMA query_only=ON")
                self._readers.append(conn)
            self._local.conn = conn
        return conn

    @contextlib.contextmanager
    def _snapshot(self) -> Iterator[sqlite3.Connection]:
        """A read transaction: every query inside it sees the same committed state."""
        conn = self._reader()
        conn.execute("BEGIN")
        try:
            yield conn
        finally:
            conn.execute("COMMIT")

    def impression(self, impression_id: str) -> dict[str, Any] | None:
        """The logged impression, or None if there is none with that id."""
        row = (
            self._reader()
            .execute(
                "SELECT id, query, docs, propensities, pipeline, teams, kind, user, time "
                "FROM impressions WHERE id = ?",
                (_impression_id(impression_id),),
            )
            .fetchone()
        )
        if row is None:
            return None
        imp, query, docs, props, pipeline, teams, kind, user, stamp = row
        return {
            "impression_id": imp,
            "query": query,
            "docs": json.loads(docs),
            "propensities": json.loads(props),
            "pipeline": pipeline,
            "teams": None if teams is None else json.loads(teams),
            "kind": kind,
            "user": user,
            "time": stamp,
        }

    def counts(self) -> dict[str, int]:
        """{"impressions": n, "clicks": n}."""
        with self._snapshot() as conn:
            (n_imp,) = conn.execute("SELECT count(*) FROM impressions").fetchone()
            (n_clicks,) = conn.execute("SELECT count(*) FROM clicks").fetchone()
        return {"impressions": n_imp, "clicks": n_clicks}

    def ctr_by_pipeline(self, bucket_s: float = 60.0) -> dict[str, dict[str, Any]]:
        """Per pipeline: impressions, clicked impressions, clicks (every logged click), ctr (the
        share of impressions with a click) and a time series [[bucket start, impressions,
        clicked impressions], ...] over buckets of `bucket_s` seconds of impression time."""
        if not bucket_s > 0 or not math.isfinite(bucket_s):
            raise RankloopError(f"bucket_s must be finite and > 0, got {bucket_s!r}")
        with self._snapshot() as conn:
            buckets = conn.execute(
                "WITH s AS (SELECT pipeline, time / ? AS x, "
                "EXISTS (SELECT 1 FROM clicks c WHERE c.impression_id = i.id) AS hit "
                "FROM impressions i) "
                "SELECT pipeline, CAST(x AS INTEGER) - (x < CAST(x AS INTEGER)) AS b, "
                "count(*), sum(hit) FROM s GROUP BY pipeline, b ORDER BY pipeline, b",
                (bucket_s,),
            ).fetchall()
            clicks = dict(
                conn.execute(
                    "SELECT i.pipeline, count(*) FROM clicks c "
                    "JOIN impressions i ON i.id = c.impression_id GROUP BY i.pipeline"
                )
            )
        out: dict[str, dict[str, Any]] = {}
        for pipeline, bucket, n, hit in buckets:
            entry = out.setdefault(
                pipeline,
                {"impressions": 0, "clicked_impressions": 0, "clicks": clicks.get(pipeline, 0)},
            )
            entry["impressions"] += n
            entry["clicked_impressions"] += hit
            entry.setdefault("series", []).append([bucket * bucket_s, n, hit])
        for entry in out.values():
            entry["ctr"] = entry["clicked_impressions"] / entry["impressions"]
        return out

    def interleaving_outcomes(self) -> dict[str, dict[str, Any]]:
        """Team-draft outcomes per pair of rankers, keyed "A vs B" (names sorted).

        Per impression with exactly two teams, the team whose documents got more clicked
        positions wins, else (no click, or as many) it is a tie. win_rate_b = wins_b /
        (wins_a + wins_b) with its Wilson 95% interval; None for both when nobody won."""
        with self._snapshot() as conn:
            rows = conn.execute(
                "SELECT id, teams FROM impressions WHERE teams IS NOT NULL"
            ).fetchall()
            clicked: dict[str, set[int]] = {}
            for imp, position in conn.execute(
                "SELECT DISTINCT c.impression_id, c.position FROM clicks c "
                "JOIN impressions i ON i.id = c.impression_id WHERE i.teams IS NOT NULL"
            ):
                clicked.setdefault(imp, set()).add(position)
        outcomes: dict[tuple[str, str], list[int]] = {}
        for imp, teams_json in rows:
            teams = json.loads(teams_json)
            names = sorted({t for t in teams if t is not None})
            if len(names) != 2:
                continue
            a, b = names
            hits = [teams[p - 1] for p in clicked.get(imp, ())]
            outcomes.setdefault((a, b), []).append(int(np.sign(hits.count(b) - hits.count(a))))
        out = {}
        for (a, b), values in sorted(outcomes.items()):
            won = np.asarray(values)
            rate, low, high = win_rate(won)
            decided = not math.isnan(rate)
            out[f"{a} vs {b}"] = {
                "a": a,
                "b": b,
                "wins_a": int((won == -1).sum()),
                "wins_b": int((won == 1).sum()),
                "ties": int((won == 0).sum()),
                "win_rate_b": rate if decided else None,
                "ci": [low, high] if decided else None,
            }
        return out

    def clicks_since(self, click_id: int) -> list[dict[str, Any]]:
        """Every click with an id above `click_id`, oldest first, with its impression's query,
        the clicked position's propensity and the pipeline: what an online learner folds in."""
        rows = (
            self._reader()
            .execute(
                "SELECT c.id, c.impression_id, i.query, c.doc_id, c.position, "
                "json_extract(i.propensities, '$[' || (c.position - 1) || ']'), i.pipeline, "
                "c.time FROM clicks c JOIN impressions i ON i.id = c.impression_id "
                "WHERE c.id > ? ORDER BY c.id",
                (int(click_id),),
            )
            .fetchall()
        )
        keys = ("click_id", "impression_id", "query", "doc_id", "position", "propensity")
        return [dict(zip((*keys, "pipeline", "time"), row)) for row in rows]

    def export_click_log(self, path: str | os.PathLike[str], *, kind: str | None = "search") -> int:
        """Write the impressions of `kind` (None: all) as the toolkit's JSONL click log, oldest
        first; returns the number of sessions written.

        Each line: {"query": query_id(text), "docs", "clicks": distinct 1-based positions in
        first-click order, "timestamp", "text", "propensities", "pipeline", "impression_id"}.
        Impressions that showed nothing, or with a document id the format cannot hold (blanks
        or commas), are left out with a warning."""
        where, params = ("", ()) if kind is None else (" WHERE i.kind = ?", (kind,))
        written = skipped = 0
        with self._snapshot() as conn, atomic_write(path) as fh:
            positions: dict[str, list[int]] = {}
            for imp, position in conn.execute(
                "SELECT c.impression_id, c.position FROM clicks c JOIN impressions i "
                f"ON i.id = c.impression_id{where} ORDER BY c.id",
                params,
            ):
                seen = positions.setdefault(imp, [])
                if position not in seen:
                    seen.append(position)
            for imp, stamp, query, docs_json, props_json, pipeline in conn.execute(
                "SELECT i.id, i.time, i.query, i.docs, i.propensities, i.pipeline "
                f"FROM impressions i{where} ORDER BY i.time, i.rowid",
                params,
            ):
                docs = json.loads(docs_json)
                if not docs or any(len(d.split()) != 1 or "," in d for d in docs):
                    skipped += 1
                    continue
                record = {
                    "query": query_id(query),
                    "docs": docs,
                    "clicks": positions.get(imp, []),
                    "timestamp": stamp,
                    "text": query,
                    "propensities": json.loads(props_json),
                    "pipeline": pipeline,
                    "impression_id": imp,
                }
                fh.write(json.dumps(record, ensure_ascii=False) + "\n")
                written += 1
        if skipped:
            warnings.warn(
                f"{self.path}: left {skipped} impression(s) out of {path}: an empty result list, "
                "or a document id with blanks or commas",
                stacklevel=2,
            )
        return written

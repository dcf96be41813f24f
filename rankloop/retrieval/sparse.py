"""BM25 over a Lucene index through pyserini (Anserini), built from any `Corpus`.

The index stores positions, document vectors and raw text (Anserini's
``-storePositions -storeDocvectors -storeRaw``), the BEIR 2CR "flat" setting, so RM3 and
Rocchio feedback work on it. Documents are indexed as ``(title + " " + text).strip()`` with
Lucene's default English analyzer (Porter stemming, stopwords removed).

Search without feedback runs the query the way Anserini's ``SimpleSearcher.search`` does (the
same query builder, similarity and sort, then its score-ties adjustment, replicated exactly in
`_adjust_ties`), but without loading every hit's stored document, which is what made pyserini's
``batch_search`` slow at k=1000: each hit comes back as its sort key (the doc id) in one JSON
string per query. RM3 and Rocchio go through pyserini's ``batch_search``, converted in bulk.
"""

from __future__ import annotations

import json
import os
import re
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from rankloop.data.types import Corpus, Queries, Run
from rankloop.errors import IndexCorruptError, RankloopError
from rankloop.io import atomic_dir, json_field
from rankloop.retrieval import _java
from rankloop.retrieval.base import (
    META_FILE,
    check_k,
    index_cache_dir,
    ranked_to_dict,
    read_meta,
    split_empty,
    write_meta,
)

LUCENE_SUBDIR = "lucene"
_SEARCH_BATCH_HITS = 128_000  # hits alive at once (queries x k): per batch_search call, and
# in the fast path the searched-but-unconverted queries
_CONTENTS = "contents"  # Anserini's indexed text field (IndexArgs.CONTENTS)
_ID_HEX = re.compile(r'"\[([0-9a-f ]*)\]"')  # a hit's doc id: Lucene BytesRef.toString(), hex bytes
_SCORE = re.compile(r'"score":([^,}]+)')  # a hit's float score (ScoreDoc.score)
_TIE_GAP = np.float32(1e-4)  # ScoreTiesAdjusterReranker's constants, as Java floats
_TIE_STEP = np.float32(1e-6)
_NO_HITS: tuple[list[str], np.ndarray] = ([], np.zeros(0, np.float32))


def bm25_index_dir(corpus: Corpus, cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Where the cached Lucene index of `corpus` lives."""
    base = index_cache_dir() if cache_dir is None else Path(cache_dir)
    return base / f"bm25-{corpus.checksum()[:20]}"


def _default_threads() -> int:
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1)


def _write_json_collection(corpus: Corpus, folder: Path) -> None:
    """Anserini JsonCollection input: one `{"id", "contents"}` object per line."""
    with open(folder / "docs.jsonl", "w", encoding="utf-8") as fh:
        fh.writelines(
            json.dumps({"id": i, "contents": c}, ensure_ascii=False) + "\n"
            for i, c in zip(corpus.ids, corpus.doc_texts())
        )


def _adjust_ties(scores: np.ndarray) -> np.ndarray:
    """Anserini's ScoreTiesAdjusterReranker on one query's float32 scores, bit for bit.

    Why: SimpleSearcher rounds scores to 4 decimals and lowers each score that is within 1e-4
    of the (already adjusted) previous one by 1e-6 x its place in the tie run, so a run ranked
    here must carry those exact scores. Java: ``s[i] = (float) (Math.round(s[i] * 10000d) /
    10000d)``; ``dup = i == 0 || s[i-1] - s[i] > 1e-4f ? 0 : dup + 1``; ``s[i] -= 1e-6f * dup``.
    """
    rounded = (np.floor(scores.astype(np.float64) * 10000.0 + 0.5) / 10000.0).astype(np.float32)
    # Where the previous score was not lowered, the tie test reads the rounded scores; only the
    # positions after a tie need the sequential rule (float32 arithmetic, as in Java).
    maybe_tie = (np.flatnonzero(~((rounded[:-1] - rounded[1:]) > _TIE_GAP)) + 1).tolist()
    if not maybe_tie:
        return rounded
    out = rounded.copy()
    n, c = len(out), 0
    while c < len(maybe_tie):
        i, dup = maybe_tie[c], 0
        while i < n and (dup == 0 or not (out[i - 1] - rounded[i]) > _TIE_GAP):
            dup += 1
            out[i] = rounded[i] - _TIE_STEP * np.float32(dup)
            i += 1
        while c < len(maybe_tie) and maybe_tie[c] <= i:  # i broke the run (or is past the end)
            c += 1
    return out


def _parse_top_docs(js: str) -> tuple[list[str], np.ndarray] | None:
    """(doc ids, float32 scores) from one query's TopFieldDocs as JSON; None if it does not parse.

    None where a hit has no doc-id sort value (an index without `id` doc values); the caller then
    falls back to pyserini's search for that query.
    """
    ids_hex, scores = _ID_HEX.findall(js), _SCORE.findall(js)
    if not len(ids_hex) == len(scores) == js.count('"doc":'):
        return None
    ids = [bytes.fromhex(h).decode("utf-8") for h in ids_hex]
    # Jackson writes each float so that it reads back to the same float32.
    return ids, np.array(scores, dtype=np.float64).astype(np.float32)


def _ordered_parallel(
    work: Callable[[int], Any], n: int, threads: int, window: int
) -> Iterator[tuple[bool, Any]]:
    """(ok, work(i) or its exception) for i in 0..n-1, in order, computed by `threads` threads.

    Why: pyjnius releases the GIL inside Java calls, so Lucene searches run in parallel while
    this thread converts finished ones. At most `window` results exist at once, the one the
    consumer holds included (bounded memory). Each worker detaches from the JVM when it ends
    (pyjnius attaches a thread on its first Java call).
    """
    import jnius

    room = threading.Semaphore(window)
    ready = threading.Condition()
    results: dict[int, tuple[bool, Any]] = {}
    taken = [0]
    stop = threading.Event()

    def worker() -> None:
        try:
            while room.acquire() and not stop.is_set():
                with ready:
                    i = taken[0]
                    taken[0] += 1
                if i >= n:
                    return
                try:
                    result: tuple[bool, Any] = (True, work(i))
                except Exception as e:  # JavaException and friends: re-raised by the consumer
                    result = (False, e)
                with ready:
                    results[i] = result
                    ready.notify_all()
        finally:
            jnius.detach()

    pool = [threading.Thread(target=worker, daemon=True) for _ in range(max(1, min(threads, n)))]
    for t in pool:
        t.start()
    try:
        for i in range(n):
            if i:
                room.release()  # the consumer is done with result i - 1
            with ready:
                while i not in results:
                    ready.wait()
                result = results.pop(i)
            yield result
    finally:
        stop.set()
        for _ in pool:
            room.release()
        for t in pool:
            t.join()


def _java_list(items: list[str]) -> Any:
    """A java.util.ArrayList of the strings (what SimpleSearcher.batch_search takes)."""
    out = _java.autoclass("java.util.ArrayList")()
    for item in items:
        out.add(item)
    return out


def _bulk_mapper() -> Any:
    """A Jackson ObjectMapper for pyserini's hits: ASCII-only JSON, stored documents as null."""
    jackson = "com.fasterxml.jackson"
    mapper = _java.autoclass(f"{jackson}.databind.ObjectMapper")()
    module = _java.autoclass(f"{jackson}.databind.module.SimpleModule")()
    module.addSerializer(
        _java.autoclass("java.lang.Class").forName("org.apache.lucene.document.Document"),
        _java.autoclass(f"{jackson}.databind.ser.std.NullSerializer").instance,
    )
    mapper.registerModule(module)
    # pyjnius reads Java strings as modified UTF-8; \\u escapes keep any doc id intact.
    escape = _java.autoclass(f"{jackson}.core.JsonGenerator$Feature").ESCAPE_NON_ASCII
    mapper.getFactory().enable(escape)
    return mapper


class _FastSearch:
    """BM25 as Anserini's SimpleSearcher.search(q, k) runs it, minus the stored-document loads.

    Same analyzer, query builder (BagOfWords on `contents`), BM25Similarity(k1, b) and sort
    (score, then doc id); the doc id comes from the sort key, and `_adjust_ties` does what the
    SimpleSearcher's reranker cascade (only the score-ties adjuster without feedback) does.
    """

    def __init__(self, reader: Any, searcher: Any, analyzer: Any, mapper: Any) -> None:
        self._reader = reader
        self._searcher = searcher
        self._analyzer = analyzer
        self._mapper = mapper
        # One stateless instance, made here: pyjnius constructors called from worker threads
        # failed with IncompatibleClassChangeError (its class reference is not theirs to use).
        self._query_builder = _java.autoclass("io.anserini.search.query.BagOfWordsQueryGenerator")()
        self._sort = _java.autoclass(
            "io.anserini.search.SearchCollection"
        ).BREAK_SCORE_TIES_BY_DOCID

    @classmethod
    def open(cls, lucene_dir: Path, k1: float, b: float, analyzer: Any) -> _FastSearch | None:
        """A fast searcher on `lucene_dir`; None where SimpleSearcher would not sort by doc id, or
        where this Anserini jar lacks a class used here (pyserini's search is used then)."""
        try:
            return cls._open(lucene_dir, k1, b, analyzer)
        except Exception:  # JavaException (e.g. no Jackson in another Anserini): slower, same hits
            return None

    @classmethod
    def _open(cls, lucene_dir: Path, k1: float, b: float, analyzer: Any) -> _FastSearch | None:
        """`open`, raising what pyjnius raises."""
        from jnius import cast

        lucene = "org.apache.lucene"
        jackson = "com.fasterxml.jackson.databind"
        mapper = _java.autoclass(f"{jackson}.ObjectMapper")()
        module = _java.autoclass(f"{jackson}.module.SimpleModule")()
        module.addSerializer(  # a doc id as "[hex bytes]": ASCII, no offsets, no base64
            _java.autoclass("java.lang.Class").forName(f"{lucene}.util.BytesRef"),
            _java.autoclass(f"{jackson}.ser.std.ToStringSerializer").instance,
        )
        mapper.registerModule(module)
        directory = _java.autoclass(f"{lucene}.store.FSDirectory").open(
            _java.autoclass("java.io.File")(str(lucene_dir)).toPath()
        )
        reader = _java.autoclass(f"{lucene}.index.DirectoryReader").open(directory)
        # SimpleSearcher's backwardsCompatibilityLucene8: no doc-id sort, no ties adjustment.
        if "lucene.version=9" not in reader.toString():
            reader.close()
            return None
        searcher = _java.autoclass(f"{lucene}.search.IndexSearcher")(
            cast(f"{lucene}.index.IndexReader", reader)
        )
        searcher.setSimilarity(
            _java.autoclass(f"{lucene}.search.similarities.BM25Similarity")(k1, b)
        )
        return cls(reader, searcher, analyzer, mapper)

    def top_docs_json(self, text: str, k: int) -> str:
        """The top-`k` hits of one query as JSON (runs in worker threads; GIL released in Java)."""
        query = self._query_builder.buildQuery(_CONTENTS, self._analyzer, text)
        return self._mapper.writeValueAsString(self._searcher.search(query, k, self._sort, True))

    def close(self) -> None:
        """Close the index reader and its directory."""
        directory = self._reader.directory()
        self._reader.close()
        directory.close()


class BM25Retriever:
    """BM25 (k1, b) over a Lucene index, with optional RM3 or Rocchio feedback from pyserini.

    `index_dir` is a directory made by `BM25Retriever.build` (it holds `retriever.json` and a
    `lucene/` folder) or any plain Lucene index built by Anserini/pyserini. `rm3` / `rocchio`
    are keyword dicts for pyserini's `LuceneSearcher.set_rm3` / `set_rocchio`, e.g.
    ``rm3={"fb_terms": 10, "fb_docs": 10, "original_query_weight": 0.5}``.
    """

    def __init__(
        self,
        index_dir: str | os.PathLike[str],
        k1: float = 0.9,
        b: float = 0.4,
        *,
        rm3: dict[str, Any] | None = None,
        rocchio: dict[str, Any] | None = None,
    ) -> None:
        index_dir = Path(index_dir)
        if (index_dir / META_FILE).exists():
            meta = read_meta(index_dir)
            if meta["kind"] != "bm25":
                raise RankloopError(f"{index_dir} holds a {meta['kind']} index, not bm25")
            lucene_dir = index_dir / LUCENE_SUBDIR
        else:
            lucene_dir = index_dir
        if not lucene_dir.is_dir() or not any(lucene_dir.glob("segments_*")):
            raise IndexCorruptError(f"{lucene_dir}: not a Lucene index (no segments_* file)")
        if rm3 is not None and rocchio is not None:
            raise RankloopError("choose RM3 or Rocchio feedback, not both")
        self.index_dir = index_dir
        self.k1 = float(k1)
        self.b = float(b)
        self.rm3 = dict(rm3) if rm3 is not None else None
        self.rocchio = dict(rocchio) if rocchio is not None else None
        lucene = _java.lucene()
        try:
            self._searcher = lucene.LuceneSearcher(str(lucene_dir))
        except Exception as e:  # a pyjnius JavaException for unreadable/truncated indexes
            raise IndexCorruptError(f"{lucene_dir}: cannot open Lucene index ({e})") from e
        self._searcher.set_bm25(self.k1, self.b)
        try:
            if self.rm3 is not None:
                self._searcher.set_rm3(**self.rm3)
            if self.rocchio is not None:
                self._searcher.set_rocchio(**self.rocchio)
        except TypeError as e:  # pyserini raises TypeError for bad kwargs or no doc vectors
            raise RankloopError(f"feedback settings rejected by pyserini: {e}") from e
        self._fast: _FastSearch | None = None
        if self.rm3 is None and self.rocchio is None:
            self._fast = _FastSearch.open(
                lucene_dir, self.k1, self.b, self._searcher.object.get_analyzer()
            )

    @property
    def num_docs(self) -> int:
        """Documents in the Lucene index."""
        return int(self._searcher.num_docs)

    @classmethod
    def build(
        cls,
        corpus: Corpus,
        index_dir: str | os.PathLike[str],
        k1: float = 0.9,
        b: float = 0.4,
        *,
        threads: int | None = None,
        show_progress: bool = True,
    ) -> BM25Retriever:
        """Index `corpus` into `index_dir` (replaced atomically) and open a retriever on it."""
        if len(corpus) == 0:
            raise RankloopError(f"cannot build a BM25 index from an empty corpus {corpus.name!r}")
        threads = threads or _default_threads()
        index_collection = _java.autoclass("io.anserini.index.IndexCollection")
        start = time.perf_counter()
        if show_progress:
            print(f"BM25: indexing {len(corpus):,} docs with Lucene ...", file=sys.stderr)
        with (
            tempfile.TemporaryDirectory(prefix="rankloop-jsoncoll-") as coll,
            atomic_dir(  # replaces only a bm25 index (also one saved before manifests)
                index_dir,
                "bm25 index",
                legacy=lambda d: json_field(d / META_FILE, "kind") == "bm25",
            ) as tmp,
        ):
            _write_json_collection(corpus, Path(coll))
            lucene_dir = tmp / LUCENE_SUBDIR
            args = [
                "-collection",
                "JsonCollection",
                "-generator",
                "DefaultLuceneDocumentGenerator",
                "-input",
                coll,
                "-index",
                str(lucene_dir),
                "-threads",
                str(threads),
                "-storePositions",
                "-storeDocvectors",
                "-storeRaw",
                "-quiet",  # Anserini otherwise logs dozens of INFO lines to stdout
            ]
            try:
                index_collection.main(args)
            except Exception as e:  # JavaException: disk full, bad input, ...
                raise RankloopError(f"Anserini indexing failed: {e}") from e
            if not any(lucene_dir.glob("segments_*")):
                raise RankloopError(f"Anserini wrote no index into {lucene_dir}")
            (lucene_dir / "write.lock").unlink(missing_ok=True)
            write_meta(
                tmp,
                "bm25",
                analyzer="lucene-default-en",
                contents="title + ' ' + text",
                corpus=corpus.name,
                corpus_checksum=corpus.checksum(),
                n_docs=len(corpus),
                k1=float(k1),
                b=float(b),
            )
        if show_progress:
            print(
                f"BM25: indexed in {time.perf_counter() - start:.1f}s -> {index_dir}",
                file=sys.stderr,
            )
        return cls(index_dir, k1=k1, b=b)

    @classmethod
    def cached(
        cls,
        corpus: Corpus,
        k1: float = 0.9,
        b: float = 0.4,
        *,
        cache_dir: str | os.PathLike[str] | None = None,
        threads: int | None = None,
        rm3: dict[str, Any] | None = None,
        rocchio: dict[str, Any] | None = None,
        verbose: bool = False,
    ) -> BM25Retriever:
        """A retriever on the cached index of `corpus` (`bm25_index_dir`), built first when
        there is none or it was built from a different corpus (checksum in retriever.json)."""
        index_dir = bm25_index_dir(corpus, cache_dir)
        try:
            fresh = read_meta(index_dir).get("corpus_checksum") == corpus.checksum()
        except RankloopError:
            fresh = False
        if fresh:
            if verbose:
                print(f"BM25: using cached index {index_dir}", file=sys.stderr)
        else:
            cls.build(corpus, index_dir, k1=k1, b=b, threads=threads).close()
        return cls(index_dir, k1=k1, b=b, rm3=rm3, rocchio=rocchio)

    def search(
        self,
        queries: Queries,
        k: int = 1000,
        *,
        threads: int | None = None,
        remove_query_id: bool = False,
    ) -> Run:
        """Top-`k` BM25 hits per query. Blank queries get no results (with a warning).

        `remove_query_id` drops a document whose id equals the query id (fetching k + 1 so that
        k remain), as ArguAna-style collections need.
        """
        check_k(k)
        keep, _ = split_empty(queries, "BM25Retriever.search")
        qids = [queries.ids[i] for i in keep]
        texts = [queries.texts[i] for i in keep]
        fetch = k + 1 if remove_query_id else k
        threads = threads or _default_threads()
        data: dict[str, dict[str, float]] = {q: {} for q in queries.ids}
        # Batches bound the hits alive at once: long queries at k=1000 otherwise filled an 8 GB
        # heap. Lucene's threads work within a batch (or a window of queries, in the fast path).
        step = max(1, _SEARCH_BATCH_HITS // fetch)
        bar = tqdm(total=len(qids), desc="BM25 search", unit="query", disable=len(qids) <= step)
        if self._fast is not None and qids:
            found = _ordered_parallel(
                lambda i: self._fast.top_docs_json(texts[i], fetch), len(qids), threads, step
            )
            for qid, text, (ok, js) in zip(qids, texts, found):
                if not ok:
                    raise RankloopError(f"Lucene search failed: {js}") from js
                hits = _parse_top_docs(js)
                if hits is None:  # no doc-id sort values: pyserini reads the stored ids
                    hits = self._batch_hits([qid], [text], fetch, 1).get(qid, _NO_HITS)
                    scores = hits[1]
                else:
                    scores = _adjust_ties(hits[1])
                data[qid] = ranked_to_dict(qid, hits[0], scores.tolist(), k, remove_query_id)
                bar.update(1)
        else:
            for start in range(0, len(qids), step):
                batch_ids = qids[start : start + step]
                found = self._batch_hits(batch_ids, texts[start : start + step], fetch, threads)
                for qid in batch_ids:
                    ids, scores = found.get(qid, _NO_HITS)
                    data[qid] = ranked_to_dict(qid, ids, scores.tolist(), k, remove_query_id)
                del found
                bar.update(len(batch_ids))
        bar.close()
        meta = {"k1": self.k1, "b": self.b, "k": k, "rm3": self.rm3, "rocchio": self.rocchio}
        return Run(data, self.name, meta)

    def _batch_hits(
        self, qids: list[str], texts: list[str], k: int, threads: int
    ) -> dict[str, tuple[list[str], np.ndarray]]:
        """Query id -> (doc ids, float32 scores) from pyserini's Java ``batch_search``.

        The hits cross into Python as one JSON string per call (Jackson, stored documents
        written as null), not as a Java proxy and two JNI reads per hit.
        """
        jqueries, jqids = _java_list(texts), _java_list(qids)
        try:
            found = self._searcher.object.batch_search(jqueries, jqids, int(k), int(threads))
            js = _bulk_mapper().writeValueAsString(found)
        except Exception as e:  # JavaException from Lucene
            raise RankloopError(f"Lucene search failed: {e}") from e
        del found
        return {
            q: ([h["docid"] for h in hits], np.array([h["score"] for h in hits], np.float32))
            for q, hits in json.loads(js).items()
        }

    @property
    def name(self) -> str:
        """Run name: bm25, bm25+rm3 or bm25+rocchio."""
        if self.rm3 is not None:
            return "bm25+rm3"
        return "bm25" if self.rocchio is None else "bm25+rocchio"

    def close(self) -> None:
        """Release the Lucene searcher (its files stay on disk)."""
        if self._fast is not None:
            self._fast.close()
            self._fast = None
        self._searcher.close()

    def __repr__(self) -> str:
        return f"BM25Retriever({str(self.index_dir)!r}, k1={self.k1}, b={self.b})"

"""BM25 over a Lucene index through pyserini (Anserini), built from any `Corpus`.

The index stores positions, document vectors and raw text (Anserini's
``-storePositions -storeDocvectors -storeRaw``), the BEIR 2CR "flat" setting, so RM3 and
Rocchio feedback work on it. Documents are indexed as ``(title + " " + text).strip()`` with
Lucene's default English analyzer (Porter stemming, stopwords removed).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

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
_SEARCH_BATCH_HITS = 128_000  # hits per batch_search call (queries x k)


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
        data: dict[str, dict[str, float]] = {q: {} for q in queries.ids}
        # Batches bound the hits alive at once (Java objects and their Python proxies): long
        # queries at k=1000 otherwise filled an 8 GB heap. Lucene's threads work within a batch.
        step = max(1, _SEARCH_BATCH_HITS // fetch)
        starts = range(0, len(qids), step)
        bar = tqdm(total=len(qids), desc="BM25 search", unit="query", disable=len(starts) < 2)
        for start in starts:
            batch_ids, batch_texts = qids[start : start + step], texts[start : start + step]
            try:
                hits = self._searcher.batch_search(
                    batch_texts, batch_ids, k=fetch, threads=threads or _default_threads()
                )
            except Exception as e:  # JavaException from Lucene
                raise RankloopError(f"Lucene search failed: {e}") from e
            for qid in batch_ids:
                found = hits.get(qid, [])
                data[qid] = ranked_to_dict(
                    qid, [h.docid for h in found], [h.score for h in found], k, remove_query_id
                )
            del hits
            bar.update(len(batch_ids))
        bar.close()
        meta = {"k1": self.k1, "b": self.b, "k": k, "rm3": self.rm3, "rocchio": self.rocchio}
        return Run(data, self.name, meta)

    @property
    def name(self) -> str:
        """Run name: bm25, bm25+rm3 or bm25+rocchio."""
        if self.rm3 is not None:
            return "bm25+rm3"
        return "bm25" if self.rocchio is None else "bm25+rocchio"

    def close(self) -> None:
        """Release the Lucene searcher (its files stay on disk)."""
        self._searcher.close()

    def __repr__(self) -> str:
        return f"BM25Retriever({str(self.index_dir)!r}, k1={self.k1}, b={self.b})"

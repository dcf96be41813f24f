"""BM25 at k=1000: queries/s and memory of three ways to get a `Run` out of the same Lucene index.

Rows, on the same index and queries, one process, Lucene threads = the cores this process may use:

* before: the code `BM25Retriever.search` had until now, reproduced here: pyserini's
  `LuceneSearcher.batch_search` in bounded batches (`_SEARCH_BATCH_HITS` hits), then
  `h.docid` / `h.score` of every hit through pyjnius and `ranked_to_dict`.
* pyserini: `LuceneSearcher.batch_search(..., threads=T)` followed by the minimal conversion any
  pyserini user needs, {docid: score} per query. Called in the same bounded batches as "before"
  (128 queries at k=1000): the whole set in one call is what filled the JVM heap on long queries.
* new: `BM25Retriever.search` (rankloop/retrieval/sparse.py).

Query sets: SciFact test (300), NFCorpus test (323), and "nfcorpus-long": each NFCorpus test
query followed by the first 100 words of its most relevant judged document (title + text), to
exercise memory. Each row runs in a fresh child process of this script (its own JVM, so one
row's heap growth does not show in the next row's RSS), warmed up (JIT) on a few queries first.
The new run must equal the pyserini one (same ids, same float scores, same order) and the
"before" one; the script exits 1 otherwise. Memory per row: the child's peak RSS during the timed
search (VmHWM, reset after the warm-up through /proc/self/clear_refs; the JVM lives in the
process), its RSS before the search, and the JVM heap's peak use and committed size (memory
pools; the heap is capped by $RANKLOOP_JVM_HEAP, default 2g, and G1 lets garbage fill it before
collecting, so the peak use is an upper bound on live data). The CPUs may be shared with other
jobs: the speeds depend on that load (recorded).

    RANKLOOP_DATA=../shared/data .venv/bin/python benchmarks/bm25_speed.py [--k 1000]
        [--threads N] [--sets scifact nfcorpus nfcorpus-long] [--long-words 100]
"""

from __future__ import annotations

import argparse
import os
import pickle
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import write_result

from rankloop.data import load
from rankloop.data.beir import BeirDataset
from rankloop.data.types import Queries
from rankloop.retrieval import _java, sparse
from rankloop.retrieval.base import ranked_to_dict
from rankloop.retrieval.sparse import BM25Retriever

NAME = "bm25_speed"
SETS = ("scifact", "nfcorpus", "nfcorpus-long")
WARMUP = 20
GOAL_VS_BEFORE = 4.0
GOAL_VS_PYSERINI = 1.0
Hits = dict[str, dict[str, float]]


def long_queries(ds: BeirDataset, words: int) -> Queries:
    """Each query + the first `words` words of its most relevant judged doc (title + text)."""
    texts = dict(zip(ds.corpus.ids, ds.corpus.doc_texts()))
    out = []
    for qid, text in ds.queries.items():
        judged = ds.qrels[qid] if qid in ds.qrels else {}
        best = sorted((-rel, d) for d, rel in judged.items() if d in texts)
        extra = " ".join(texts[best[0][1]].split()[:words]) if best else ""
        out.append(f"{text} {extra}".strip())
    return Queries(list(ds.queries.ids), out)


def before(bm25: BM25Retriever, q: Queries, k: int, threads: int) -> Hits:
    """The previous `BM25Retriever.search`: bounded batch_search, then two JNI reads per hit."""
    step = max(1, sparse._SEARCH_BATCH_HITS // k)
    data: Hits = {}
    qids, texts = list(q.ids), list(q.texts)
    for start in tqdm(range(0, len(qids), step), desc="before", unit="batch", leave=False):
        batch_ids, batch_texts = qids[start : start + step], texts[start : start + step]
        hits = bm25._searcher.batch_search(batch_texts, batch_ids, k=k, threads=threads)
        for qid in batch_ids:
            found = hits.get(qid, [])
            data[qid] = ranked_to_dict(
                qid, [h.docid for h in found], [h.score for h in found], k, False
            )
        del hits
    return data


def pyserini(bm25: BM25Retriever, q: Queries, k: int, threads: int) -> Hits:
    """pyserini's LuceneSearcher.batch_search + {docid: score} per query (same batches)."""
    searcher = bm25._searcher  # the pyserini LuceneSearcher itself
    step = max(1, sparse._SEARCH_BATCH_HITS // k)
    data: Hits = {}
    qids, texts = list(q.ids), list(q.texts)
    for start in tqdm(range(0, len(qids), step), desc="pyserini", unit="batch", leave=False):
        hits = searcher.batch_search(
            texts[start : start + step], qids[start : start + step], k=k, threads=threads
        )
        data.update({qid: {h.docid: h.score for h in found} for qid, found in hits.items()})
        del hits
    return data


def new(bm25: BM25Retriever, q: Queries, k: int, threads: int) -> Hits:
    """rankloop's BM25Retriever.search."""
    return bm25.search(q, k=k, threads=threads).data


PATHS: dict[str, Callable[[BM25Retriever, Queries, int, int], Hits]] = {
    "before": before,
    "pyserini": pyserini,
    "new": new,
}


class Memory:
    """Peak RSS of this process and peak JVM heap, both reset before each measured row."""

    def __init__(self) -> None:
        factory = _java.autoclass("java.lang.management.ManagementFactory")
        pools = factory.getMemoryPoolMXBeans()
        self.heap = [pools.get(i) for i in range(pools.size())]
        self.heap = [p for p in self.heap if p.getType().toString() == "Heap memory"]
        self.heap_max_mb = _java.autoclass("java.lang.Runtime").getRuntime().maxMemory() / 2**20

    def reset(self) -> bool:
        """Reset both peaks; False where the kernel refuses to reset the RSS peak."""
        for p in self.heap:
            p.resetPeakUsage()
        try:
            Path("/proc/self/clear_refs").write_text("5")
            return True
        except OSError:
            return False

    @staticmethod
    def status(field: str) -> int | None:
        """A /proc/self/status field in MB (VmRSS, VmHWM), None where unreadable."""
        try:
            for line in Path("/proc/self/status").read_text().splitlines():
                if line.startswith(f"{field}:"):
                    return round(int(line.split()[1]) / 1024)
        except OSError:
            pass
        return None

    def peaks(self) -> dict[str, float | None]:
        """Peak RSS since reset (VmHWM) and the JVM heap's peak use and committed size, in MB."""
        peak = sum(p.getPeakUsage().getUsed() for p in self.heap) / 2**20
        committed = sum(p.getPeakUsage().getCommitted() for p in self.heap) / 2**20
        return {
            "peak_rss_mb": self.status("VmHWM"),
            "jvm_heap_peak_mb": round(peak),
            "jvm_heap_committed_mb": round(committed),
        }


def same(a: Hits, b: Hits) -> bool:
    """Same queries, same doc ids in the same order, same float scores."""
    return a.keys() == b.keys() and all(list(a[q].items()) == list(b[q].items()) for q in a)


def queries_for(name: str, ds: BeirDataset, long_words: int) -> Queries:
    """The query set `name` of dataset `ds`."""
    return long_queries(ds, long_words) if name.endswith("-long") else ds.queries


def child(name: str, path: str, args: argparse.Namespace, threads: int, out: Path) -> None:
    """One row in this (fresh) process: warm up, time one path, pickle its row and run."""
    ds = load(name.removesuffix("-long"), split="test")
    q = queries_for(name, ds, args.long_words)
    bm25 = BM25Retriever.cached(ds.corpus)
    mem = Memory()
    fn = PATHS[path]
    fn(bm25, Queries(list(q.ids[:WARMUP]), list(q.texts[:WARMUP])), args.k, threads)
    rss_before = Memory.status("VmRSS")
    reset = mem.reset()
    cpu0, start = os.times(), time.perf_counter()
    run = fn(bm25, q, args.k, threads)
    seconds, cpu1 = time.perf_counter() - start, os.times()
    cpu = (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)  # all threads, the JVM's too
    row = {
        "seconds": round(seconds, 2),
        "queries_per_s": round(len(q) / seconds, 1),
        "cpu_s": round(cpu, 2),
        "cpu_ms_per_query": round(1000 * cpu / len(q), 2),
        "hits": sum(len(h) for h in run.values()),
        "rss_before_mb": rss_before,
        **mem.peaks(),
        "rss_peak_reset": reset,
        "process_max_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "jvm_heap_max_mb": round(mem.heap_max_mb),
    }
    bm25.close()
    with open(out, "wb") as fh:
        pickle.dump({"row": row, "run": run}, fh)


def measure(name: str, args: argparse.Namespace, threads: int, q: Queries) -> dict[str, Any]:
    """Every path on one query set, each in a child process: queries/s, memory, equality."""
    rows: dict[str, Any] = {}
    runs: dict[str, Hits] = {}
    with tempfile.TemporaryDirectory(prefix="bm25-speed-") as tmp:
        for path in PATHS:
            out = Path(tmp) / f"{path}.pkl"
            cmd = [sys.executable, __file__, "--child", name, path, str(out), "--k", str(args.k)]
            cmd += ["--threads", str(threads), "--long-words", str(args.long_words)]
            subprocess.run(cmd, check=True)
            with open(out, "rb") as fh:
                got = pickle.load(fh)
            rows[path], runs[path] = got["row"], got["run"]
            print(f"  {path:9s} {rows[path]['queries_per_s']:8.1f} queries/s", flush=True)
    new_qps = rows["new"]["queries_per_s"]
    return {
        "queries": len(q),
        "mean_query_words": round(sum(len(t.split()) for t in q.texts) / len(q), 1),
        "rows": rows,
        "new_over_before": round(new_qps / rows["before"]["queries_per_s"], 2),
        "new_over_pyserini": round(new_qps / rows["pyserini"]["queries_per_s"], 2),
        # CPU time per query depends less on other jobs' load than wall-clock speed does.
        "cpu_before_over_new": round(
            rows["before"]["cpu_ms_per_query"] / rows["new"]["cpu_ms_per_query"], 2
        ),
        "cpu_pyserini_over_new": round(
            rows["pyserini"]["cpu_ms_per_query"] / rows["new"]["cpu_ms_per_query"], 2
        ),
        "new_equals_pyserini": same(runs["new"], runs["pyserini"]),
        "new_equals_before": same(runs["new"], runs["before"]),
    }


def table(results: dict[str, dict[str, Any]]) -> str:
    """Markdown table: one line per query set and path."""
    head = (
        "| queries | path | queries/s | new / this | CPU ms/query | RSS before MB | peak RSS MB "
        "| JVM heap peak / committed MB | equal |\n"
        "|---|---|---:|---:|---:|---:|---:|---:|---|"
    )
    lines = [head]
    for name, r in results.items():
        for path, row in r["rows"].items():
            ratio = {"before": r["new_over_before"], "pyserini": r["new_over_pyserini"]}
            equal = {
                "before": r["new_equals_before"],
                "pyserini": r["new_equals_pyserini"],
            }.get(path)
            lines.append(
                f"| {name} ({r['queries']}, {r['mean_query_words']} words) | {path} "
                f"| {row['queries_per_s']:.1f} | {ratio.get(path, 1.0):.2f} "
                f"| {row['cpu_ms_per_query']:.1f} "
                f"| {row['rss_before_mb']} | {row['peak_rss_mb']} "
                f"| {row['jvm_heap_peak_mb']} / {row['jvm_heap_committed_mb']} "
                f"| {'' if equal is None else ('yes' if equal else 'NO')} |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--k", type=int, default=1000)
    ap.add_argument("--threads", type=int, help="Lucene threads (default: all usable cores)")
    ap.add_argument("--sets", nargs="+", default=list(SETS), choices=SETS)
    ap.add_argument("--long-words", type=int, default=100)
    ap.add_argument("--child", nargs=3, metavar=("SET", "PATH", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    threads = args.threads or sparse._default_threads()

    if args.child:
        name, path, out = args.child
        child(name, path, args, threads, Path(out))
        return 0

    load_before = os.getloadavg()
    results: dict[str, dict[str, Any]] = {}
    for name in args.sets:
        ds = load(name.removesuffix("-long"), split="test")
        BM25Retriever.cached(ds.corpus).close()  # build the index once, here, if not cached
        q = queries_for(name, ds, args.long_words)
        print(f"{name}: {len(q)} queries, {len(ds.corpus):,} docs, k={args.k}", flush=True)
        results[name] = measure(name, args, threads, q)

    ok = all(r["new_equals_pyserini"] and r["new_equals_before"] for r in results.values())
    goals = {
        "new_over_before_min": min(r["new_over_before"] for r in results.values()),
        "new_over_pyserini_min": min(r["new_over_pyserini"] for r in results.values()),
        "cpu_before_over_new_min": min(r["cpu_before_over_new"] for r in results.values()),
        "cpu_pyserini_over_new_min": min(r["cpu_pyserini_over_new"] for r in results.values()),
    }
    print()
    print(table(results))
    print(
        f"\nthreads={threads}; min new/before {goals['new_over_before_min']:.2f} "
        f"(goal >= {GOAL_VS_BEFORE}), min new/pyserini {goals['new_over_pyserini_min']:.2f} "
        f"(goal >= {GOAL_VS_PYSERINI}); CPU per query, min before/new "
        f"{goals['cpu_before_over_new_min']:.2f}, min pyserini/new "
        f"{goals['cpu_pyserini_over_new_min']:.2f}; all runs equal: {ok}"
    )
    path = write_result(
        NAME,
        {
            "k": args.k,
            "threads": threads,
            "jvm_heap": _java.jvm_heap(),
            "search_batch_hits": sparse._SEARCH_BATCH_HITS,
            "long_query_words": args.long_words,
            "goals": {"new_over_before": GOAL_VS_BEFORE, "new_over_pyserini": GOAL_VS_PYSERINI},
            **goals,
            "all_equal": ok,
            # The CPUs are shared with other jobs: the speeds above depend on this load.
            "load_average_1m": {"start": load_before[0], "end": os.getloadavg()[0]},
            "results": results,
        },
    )
    print(f"wrote {path}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

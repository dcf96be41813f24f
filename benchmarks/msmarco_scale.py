"""MS MARCO passage scale in bounded memory: a generated 1M-passage collection indexed through
resumable shards into IVF-PQ plus the stored vectors, its peak RSS, a kill -9 half-way and the
resume, and the plan for the real 8.8M passages computed from measured encoding rates.

1. Generate `--n` passages (`rankloop.data.msmarco.write_synthetic_collection`: sentences of
   MS MARCO dl19-mini passages recombined, so lengths and words are real).
2. `rankloop index build --collection ... --factory IVF1024,PQ48` in a child process with the
   static word-piece encoder of MiniLM (`rankloop.embed.static`, thousands of passages a
   second; MiniLM itself would take hours here). Peak RSS of the child (`ru_maxrss`).
3. The same build again into another folder, killed with SIGKILL once half the shards exist,
   then rerun: it must resume (not re-encode the done shards) and give the same index (ids,
   stored vectors and FAISS file byte for byte).
4. Recall@10 of IVF-PQ (nprobe 32, with and without exact refine from the stored vectors)
   against exact search, on 1,000 passages used as queries.
5. MiniLM docs/s on `--rate-sample` passages with the torch and torch-bf16 backends and
   torch-bf16 compiled (`Encoder(compile=True)`), and the hours the 8.8M collection takes at
   the best of these rates on N such nodes (`--ray`: one actor per core).

    RANKLOOP_DATA=../shared/data .venv/bin/python benchmarks/msmarco_scale.py [--n 1000000]
        [--no-kill] [--workdir DIR]

Writes benchmarks/results/msmarco_scale.json.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import write_result

from rankloop.data import load
from rankloop.data.msmarco import write_synthetic_collection
from rankloop.embed.encoders import Encoder
from rankloop.embed.shards import TsvCollection
from rankloop.embed.static import static_encoder_from
from rankloop.retrieval.dense import DenseRetriever

MSMARCO_PASSAGES = 8_841_823
GOAL_RSS_GB = 4.0
_CHILD = (
    "import resource, sys; from rankloop.cli import main; rc = main(sys.argv[1:]); "
    "print('maxrss_kb', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr); "
    "sys.exit(rc)"
)


def build_cmd(args: argparse.Namespace, tsv: Path, model: Path, out: Path) -> list[str]:
    return [sys.executable, "-c", _CHILD, "index", "build", "--collection", str(tsv),
            "--kind", "dense", "--model", str(model), "--batch-size", "256",
            "--shard-size", str(args.shard_size), "--factory", args.factory,
            "--out", str(out)]  # fmt: skip


def run_build(cmd: list[str], log: Path) -> tuple[float, float]:
    """(seconds, peak RSS GB) of one build in a child process; its output goes to `log`."""
    start = time.perf_counter()
    with open(log, "w", encoding="utf-8") as fh:
        rc = subprocess.run(cmd, stdout=fh, stderr=fh).returncode
    text = log.read_text(encoding="utf-8")
    if rc != 0:
        raise SystemExit(f"build failed (rc {rc}):\n{text[-3000:]}")
    rss_kb = int(text.rsplit("maxrss_kb", 1)[1].split()[0])
    return time.perf_counter() - start, rss_kb / 2**20


def sha(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 24):
            h.update(chunk)
    return h.hexdigest()


def kill_and_resume(
    args: argparse.Namespace, cmd: list[str], out: Path, log: Path
) -> dict[str, Any]:
    """Kill the build once half its shards exist, rerun it, and report what the rerun did."""
    shards = out.with_name(out.name + ".shards")
    total = -(-args.n // args.shard_size)
    with open(log, "w", encoding="utf-8") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=fh)
        while len(list(shards.glob("shard-*.npy"))) < total // 2 and proc.poll() is None:
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    done = len(list(shards.glob("shard-*.npy")))
    seconds, rss = run_build(cmd, log)
    resumed = f"{done} of {total} shards already encoded" in log.read_text(encoding="utf-8")
    return {"killed_after_shards": done, "shards": total, "resumed": resumed,
            "resume_seconds": round(seconds, 1), "resume_peak_rss_gb": round(rss, 2)}  # fmt: skip


def recall(index_dir: Path, n_queries: int = 1000) -> dict[str, Any]:
    """Recall@10 of the IVF-PQ index against exact search over its stored vectors."""
    r = DenseRetriever.load(index_dir, verify=False)
    vi = r.index
    rng = np.random.default_rng(0)
    rows = np.sort(rng.choice(len(vi), n_queries, replace=False))
    q = np.asarray(vi.vectors_at(rows)) + rng.normal(0, 0.02, (n_queries, vi.dim)).astype(
        np.float32
    )
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    stored = vi.vectors_at(np.arange(len(vi)))
    exact = np.empty((n_queries, 10), dtype=np.int64)
    for a in range(0, len(vi), 200_000):  # blocks: the full score matrix would be 4 GB
        block = np.asarray(stored[a : a + 200_000]) @ q.T
        top = np.argpartition(-block, 10, axis=0)[:10].T + a
        if a == 0:
            exact[:], best = top, np.take_along_axis(block.T, top - a, axis=1)
        else:
            cand = np.concatenate([exact, top], axis=1)
            scores = np.concatenate([best, np.take_along_axis(block.T, top - a, axis=1)], axis=1)
            keep = np.argsort(-scores, axis=1)[:, :10]
            exact, best = (
                np.take_along_axis(cand, keep, axis=1),
                np.take_along_axis(scores, keep, axis=1),
            )
    ids = np.array(vi.ids)
    truth = [set(ids[row]) for row in exact]
    out: dict[str, Any] = {}
    for name, kw in (
        ("ivfpq_nprobe32", {"nprobe": 32}),
        ("ivfpq_nprobe32_refine100", {"nprobe": 32, "refine": 100}),
    ):
        start = time.perf_counter()
        _, found = vi.search(q, 10, **kw)
        qps = n_queries / (time.perf_counter() - start)
        out[name] = {"recall@10": float(np.mean([len(truth[i] & set(f)) / 10 for i, f in enumerate(found)])),
                     "qps": round(qps, 1)}  # fmt: skip
    return out


def encode_rates(tsv: Path, n: int) -> dict[str, float]:
    """MiniLM documents/s of each torch backend, and of torch-bf16 compiled, on the first `n`
    passages (after a warm-up; the compilation is not timed: it is paid once per process)."""
    _, texts = TsvCollection(tsv).read(0, n)
    rates = {}
    for backend, compiled in (("torch", False), ("torch-bf16", False), ("torch-bf16", True)):
        enc = Encoder(backend=backend, show_progress=False, compile=compiled)
        enc.encode_docs(texts[:64])
        backend += "+compile" if compiled else ""
        start = time.perf_counter()
        enc.encode_docs(texts)
        rates[backend] = n / (time.perf_counter() - start)
    return rates


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=1_000_000, help="passages to generate")
    ap.add_argument("--shard-size", type=int, default=50_000)
    ap.add_argument("--factory", default="IVF1024,PQ48")
    ap.add_argument("--rate-sample", type=int, default=1000, help="passages for the MiniLM rates")
    ap.add_argument("--no-kill", action="store_true", help="skip the kill -9 and resume run")
    ap.add_argument("--workdir", type=Path, help="keep the files here (default: a temp folder)")
    args = ap.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="rankloop-msmarco-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    try:
        tsv = work / "collection.tsv"
        start = time.perf_counter()
        write_synthetic_collection(load("msmarco-dl19-mini", split=None).corpus, tsv, args.n)
        timings["generate_s"] = time.perf_counter() - start
        model = static_encoder_from(None, work / "static-minilm", overwrite=True)
        seconds, rss = run_build(build_cmd(args, tsv, model, work / "index"), work / "build.log")
        timings["build_s"] = seconds
        print(f"build: {seconds:.0f} s, peak RSS {rss:.2f} GB", file=sys.stderr)
        result: dict[str, Any] = {
            "n_passages": args.n, "collection_bytes": tsv.stat().st_size,
            "factory": args.factory, "shard_size": args.shard_size,
            "encoder": "static word-piece MiniLM (rankloop.embed.static)",
            "peak_rss_gb": round(rss, 2), "goal_rss_gb": GOAL_RSS_GB, "rss_ok": rss <= GOAL_RSS_GB,
            "index_bytes": sum(f.stat().st_size for f in (work / "index").rglob("*") if f.is_file()),
        }  # fmt: skip
        if not args.no_kill:
            kr = kill_and_resume(args, build_cmd(args, tsv, model, work / "index2"), work / "index2",
                                 work / "build2.log")  # fmt: skip
            a, b = work / "index" / "vectors", work / "index2" / "vectors"
            kr["same_index"] = {
                f: sha(a / f) == sha(b / f) for f in ("index.faiss", "vectors.npy", "ids.json")
            }
            result["kill_resume"] = kr
            shutil.rmtree(work / "index2", ignore_errors=True)
        result["search"] = recall(work / "index")
        rates = encode_rates(tsv, args.rate_sample)
        result["minilm_docs_per_s"] = {k: round(v, 1) for k, v in rates.items()}
        result["plan_rate"] = max(rates, key=rates.__getitem__)
        best = rates[result["plan_rate"]]
        result["plan_8.8M_hours"] = {
            f"{nodes} node(s) like this one": round(MSMARCO_PASSAGES / (best * nodes) / 3600, 1)
            for nodes in (1, 4, 16, 64)
        }
        result["timings_s"] = {k: round(v, 1) for k, v in timings.items()}
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    print(f"\n| {args.n:,} passages | value |\n|---|---|")
    rows = [("peak RSS (build)", f"{result['peak_rss_gb']} GB (goal <= {GOAL_RSS_GB})"),
            ("build (encode + train + add)", f"{timings['build_s']:.0f} s")]  # fmt: skip
    if "kill_resume" in result:
        kr = result["kill_resume"]
        rows += [("kill -9 half-way, rerun", f"resumed after {kr['killed_after_shards']}/{kr['shards']} "
                  f"shards in {kr['resume_seconds']} s; same index: {kr['same_index']}")]  # fmt: skip
    for name, v in result["search"].items():
        rows.append((f"{name}", f"recall@10 {v['recall@10']:.3f}, {v['qps']} q/s"))
    for k, v in result["minilm_docs_per_s"].items():
        rows.append((f"MiniLM {k}", f"{v} docs/s"))
    for k, v in result["plan_8.8M_hours"].items():
        rows.append((f"8.8M passages ({result['plan_rate']}), {k}", f"{v} h"))
    for name, value in rows:
        print(f"| {name} | {value} |")
    path = write_result("msmarco_scale", result)
    print(f"\nwrote {path}")
    return 0 if result["rss_ok"] else 1


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(main())

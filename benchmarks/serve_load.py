"""Load test of `rankloop serve` with locust (headless, 127.0.0.1 only), and kill -9 durability.

    RANKLOOP_DATA=../shared/data .venv/bin/python benchmarks/serve_load.py [--dataset scifact] [--seconds 20]

The script starts the server itself (`rankloop serve --dataset D` with three pipelines: dense
MiniLM + Flat FAISS, BM25, and dense Rocchio PRF) on a free loopback port, then runs locust in
headless mode, bounded by `--run-time`, once per scenario:

- `target`: 20 users, each sending at the times of a Poisson process of 5/s, i.e. an offered
  load of 100 searches/s with Poisson arrivals, per pipeline: achieved searches/s, median and
  p99 latency;
- `bursts`: the same 100/s offered by locust's `constant_throughput(5)`, whose 20 users stay in
  phase and fire together every 200 ms (a worst case kept for comparison);
- `saturation`: 16 users searching with no wait: the most searches/s the server gives;
- `clicks`: 16 users each searching once, then clicking results of that impression with no
  wait: acknowledged (durable) clicks/s.

The queries are the data set's test queries. Then the durability check: with clicks flowing from
8 threads, the server is killed with SIGKILL 10 times at random moments and restarted; every click
acknowledged before a kill must be in the SQLite log afterwards (counted and reported).
Writes benchmarks/results/serve_load.json.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import write_result

PIPELINES = {"dense": "dense", "bm25": "bm25", "prf": "dense >> rocchio(fb_docs=3, alpha=1.0, beta=0.5)"}

LOCUSTFILE = '''
import json, os, random
from locust import FastHttpUser, task, constant_throughput, constant

QUERIES = json.loads(os.environ["RL_QUERIES"])
PIPELINE = os.environ.get("RL_PIPELINE", "dense")
MODE = os.environ["RL_MODE"]


def poisson(rate):
    """Each user sends at the times of a Poisson process of `rate`/s (exponential gaps from
    its own schedule, not from its last answer), so 20 users offer a Poisson 100/s. With
    constant_throughput the users stay in phase and fire in bursts of 20 every 200 ms."""
    import time

    def wait(user):
        now = time.monotonic()
        user.next_send = max(getattr(user, "next_send", now), now - 1.0) + random.expovariate(rate)
        return max(0.0, user.next_send - now)

    return wait


class Searcher(FastHttpUser):
    wait_time = {"target": poisson(5), "bursts": constant_throughput(5)}.get(MODE, constant(0))

    @task
    def search(self):
        if MODE == "clicks":
            return self.click()
        self.client.post("/api/search", json={"query": random.choice(QUERIES), "k": 10,
                                               "pipeline": PIPELINE}, name="search")

    def on_start(self):
        self.impression = None

    def click(self):
        if self.impression is None:
            r = self.client.post("/api/search", json={"query": random.choice(QUERIES), "k": 10,
                                                       "pipeline": PIPELINE}, name="search")
            body = r.json()
            self.impression = (body["impression_id"], [x["doc_id"] for x in body["results"]])
        imp, docs = self.impression
        self.client.post("/api/click", json={"impression_id": imp, "doc_id": random.choice(docs)},
                         name="click")
'''


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(dataset: str, port: int, log: Path, backend: str = "torch") -> subprocess.Popen:
    cmd = [sys.executable, "-m", "rankloop.cli", "serve", "--dataset", dataset, "--port", str(port),
           "--log", str(log), "--quiet", "--backend", backend]  # fmt: skip
    for name, expr in PIPELINES.items():
        cmd += ["--pipeline", f"{name}={expr}"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    import httpx

    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited: {proc.stderr.read()[-2000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.3)
    proc.kill()
    raise RuntimeError("the server did not come up in 600 s")


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _locust(port: int, mode: str, pipeline: str, users: int, seconds: int, queries: list[str],
            work: Path) -> dict[str, Any]:  # fmt: skip
    locustfile = work / "locustfile.py"
    locustfile.write_text(LOCUSTFILE, encoding="utf-8")
    prefix = work / f"{mode}-{pipeline}"
    env = {**os.environ, "RL_QUERIES": json.dumps(queries), "RL_PIPELINE": pipeline, "RL_MODE": mode}
    cmd = [str(Path(sys.executable).parent / "locust"), "-f", str(locustfile), "--headless",
           "-u", str(users), "-r", str(users), "--run-time", f"{seconds}s", "--stop-timeout", "5",
           "--host", f"http://127.0.0.1:{port}", "--csv", str(prefix), "--only-summary"]  # fmt: skip
    subprocess.run(cmd, env=env, check=False, capture_output=True, timeout=seconds + 120)
    out = {}
    with open(f"{prefix}_stats.csv", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            if row["Name"] in ("search", "click"):
                out[row["Name"]] = {
                    "requests": int(row["Request Count"]),
                    "failures": int(row["Failure Count"]),
                    "per_s": round(float(row["Requests/s"]), 1),
                    "median_ms": float(row["50%"]),
                    "p99_ms": float(row["99%"]),
                }
    return out


def _durability(dataset: str, log: Path, queries: list[str], kills: int, rng: random.Random) -> dict[str, Any]:
    """Clicks from 8 threads while the server is SIGKILLed `kills` times and restarted."""
    import httpx

    acked: list[int] = []
    lock = threading.Lock()
    state = {"port": _free_port(), "stop": False}
    proc = _start(dataset, state["port"], log)

    def clicker() -> None:
        with httpx.Client(timeout=5) as client:
            impression = None
            while not state["stop"]:
                base = f"http://127.0.0.1:{state['port']}"
                try:
                    if impression is None:
                        body = client.post(f"{base}/api/search", json={"query": rng.choice(queries),
                                                                       "pipeline": "bm25"}).json()  # fmt: skip
                        impression = (body["impression_id"], [x["doc_id"] for x in body["results"]])
                    r = client.post(f"{base}/api/click", json={"impression_id": impression[0],
                                                               "doc_id": rng.choice(impression[1])})  # fmt: skip
                    if r.status_code == 200:
                        with lock:
                            acked.append(r.json()["click_id"])
                except (httpx.HTTPError, ValueError, KeyError):
                    time.sleep(0.05)  # the server is down: retry after the restart

    threads = [threading.Thread(target=clicker, daemon=True) for _ in range(8)]
    for t in threads:
        t.start()
    done = []
    for _ in range(kills):
        time.sleep(rng.uniform(1.0, 3.0))
        with lock:
            before = len(acked)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        done.append(before)
        state["port"] = _free_port()
        proc = _start(dataset, state["port"], log)
    time.sleep(1.0)
    state["stop"] = True
    for t in threads:
        t.join(timeout=10)
    _stop(proc)
    with sqlite3.connect(f"file:{log}?mode=ro", uri=True) as db:
        stored = {r[0] for r in db.execute("select id from clicks")}
    missing = sorted(set(acked) - stored)
    return {"kills": kills, "acknowledged": len(acked), "stored": len(stored),
            "acknowledged_missing": len(missing), "acked_before_each_kill": done}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dataset", default="scifact")
    ap.add_argument("--seconds", type=int, default=20, help="run time of each locust scenario")
    ap.add_argument("--kills", type=int, default=10)
    ap.add_argument("--backend", default="torch", help="the server's encoder backend")
    args = ap.parse_args(argv)
    from rankloop.data import load

    queries = load(args.dataset, split="test").queries.texts
    rng = random.Random(0)
    results: dict[str, Any] = {"dataset": args.dataset, "backend": args.backend,
                               "pipelines": PIPELINES, "scenarios": {}}  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="rankloop-load-") as tmp:
        work = Path(tmp)
        port = _free_port()
        proc = _start(args.dataset, port, work / "clicks.db", args.backend)
        try:
            for name in PIPELINES:
                for mode, users in (("target", 20), ("bursts", 20), ("saturation", 16)):
                    res = _locust(port, mode, name, users, args.seconds, queries, work)
                    results["scenarios"][f"{mode}/{name}"] = res
                    s = res.get("search", {})
                    print(f"{mode:10s} {name:6s}: {s.get('per_s')} searches/s, median "
                          f"{s.get('median_ms')} ms, p99 {s.get('p99_ms')} ms, "
                          f"{s.get('failures')} failures", flush=True)  # fmt: skip
            res = _locust(port, "clicks", "bm25", 16, args.seconds, queries, work)
            results["scenarios"]["clicks"] = res
            print(f"clicks: {res.get('click', {}).get('per_s')} acknowledged clicks/s, p99 "
                  f"{res.get('click', {}).get('p99_ms')} ms", flush=True)  # fmt: skip
        finally:
            _stop(proc)
        name = "serve_load" if args.backend == "torch" else f"serve_load_{args.backend}"
        if not args.kills:
            print(f"wrote {write_result(name, results)} (no kill test)")
            return 0
        results["durability"] = _durability(args.dataset, work / "kill.db", queries, args.kills, rng)
        d = results["durability"]
        print(f"kill -9 x{d['kills']}: {d['acknowledged']} clicks acknowledged, "
              f"{d['acknowledged_missing']} of them missing afterwards ({d['stored']} stored)")
    print(f"wrote {write_result(name, results)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

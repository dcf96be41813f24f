"""The main job as a user meets it: `make demo` (`rankloop experiment prf CONFIG`), timed cold and
warm, with the peak memory of the whole process tree.

Cold: a fresh, empty `RANKLOOP_CACHE` (corpus embeddings, the BM25 Lucene index and the LoL model
are all rebuilt; the installed venv and the data under `RANKLOOP_DATA` are reused). Warm: the same
command again on that cache (`--runs-warm` times). Each run writes into its own temporary output
folder. For every run: wall seconds, peak RSS of the process tree (the JVM lives inside the
Python process through pyjnius, so the child's own `ru_maxrss` from `os.wait4` covers it; a
psutil poll of the tree every 0.1 s is recorded beside it), the runner's own phase timings
(`metrics.json` `timing_s`) and the time and RSS at each `[...]` progress line on stderr, so
the table says where time and memory went. Goals (issue): cold under 360 s, warm under 120 s,
peak RSS under 3 GB on 2 cores. Writes benchmarks/results/main_job.json (`--name`).

    RANKLOOP_DATA=/work/shared/data .venv/bin/python benchmarks/main_job.py \
        [--config configs/prf_scifact.yaml] [--runs-warm 1] [--cache DIR] [--keep]

`--cache DIR` reuses (and does not delete) a cache folder: with a populated one, the "cold" run
is not cold, so it is labelled by what the folder held (`--no-cold` runs warm runs only).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import write_result

ROOT = Path(__file__).resolve().parent.parent
GOALS = {"cold_s": 360.0, "warm_s": 120.0, "peak_rss_gb": 3.0}
_MARK = re.compile(r"^\[(pipeline|lol|bm25|encoder|sparse|dense|index)\]|^LoL epoch|^skipping|failed")


def _tree_rss(pid: int) -> int | None:
    """RSS bytes of `pid` and all its descendants (None without psutil or once it is gone)."""
    try:
        import psutil
    except ImportError:
        return None
    try:
        proc = psutil.Process(pid)
        procs = [proc, *proc.children(recursive=True)]
    except psutil.Error:
        return None
    total = 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total


def run_once(cmd: list[str], env: dict[str, str], label: str, log_dir: Path) -> dict[str, Any]:
    """Run `cmd` once; wall time, peak RSS (wait4 and polled), stderr markers with times."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)  # fmt: skip
    marks: list[dict[str, Any]] = []
    samples: list[tuple[float, int]] = []
    rss_now = [0]
    done = threading.Event()

    def poll() -> None:
        while not done.is_set():
            rss = _tree_rss(proc.pid)
            if rss is not None:
                rss_now[0] = rss
                samples.append((time.perf_counter() - t0, rss))
            done.wait(0.1)

    err_log = (log_dir / f"{label}.stderr").open("w", encoding="utf-8")

    def read_err() -> None:
        buf = b""
        assert proc.stderr is not None
        while chunk := proc.stderr.read1(4096):
            buf += chunk
            *lines, buf = re.split(rb"[\r\n]", buf)
            for raw in lines:
                line = raw.decode("utf-8", "replace").strip()
                if not line:
                    continue
                t = time.perf_counter() - t0
                err_log.write(f"{t:8.1f} {line}\n")
                if _MARK.search(line) or ("100%" in line and "|" in line):
                    marks.append({"t": round(t, 1), "rss_gb": round(rss_now[0] / 2**30, 2),
                                  "line": line[:160]})  # fmt: skip

    out_chunks: list[bytes] = []
    threads = [threading.Thread(target=poll, daemon=True), threading.Thread(target=read_err, daemon=True),
               threading.Thread(target=lambda: out_chunks.append(proc.stdout.read()), daemon=True)]  # fmt: skip
    for th in threads:
        th.start()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    done.set()
    for th in threads:
        th.join(5)
    err_log.close()
    (log_dir / f"{label}.stdout").write_bytes(b"".join(out_chunks))
    polled = max((r for _, r in samples), default=0)
    return {
        "label": label,
        "returncode": proc.returncode,
        "wall_s": round(wall, 1),
        "peak_rss_gb": round(usage.ru_maxrss * 1024 / 2**30, 3),  # KiB on Linux
        "peak_tree_rss_polled_gb": round(polled / 2**30, 3) if samples else None,
        "user_s": round(usage.ru_utime, 1),
        "sys_s": round(usage.ru_stime, 1),
        "marks": marks,
        "rss_timeline_gb": [(round(t, 1), round(r / 2**30, 2)) for t, r in samples[::20]],
    }


def _phases(out: Path) -> dict[str, Any]:
    """The runner's own timings from metrics.json (seconds per pipeline, sweep, total)."""
    try:
        doc = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return doc.get("timing_s", {})


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", default="configs/prf_scifact.yaml")
    ap.add_argument("--runs-warm", type=int, default=1, help="warm runs after the cold one")
    ap.add_argument("--no-cold", action="store_true", help="warm runs only (needs --cache)")
    ap.add_argument("--cache", help="use this RANKLOOP_CACHE (kept) instead of a fresh temp one")
    ap.add_argument("--keep", action="store_true", help="keep the temp cache and outputs")
    ap.add_argument("--name", default="main_job", help="results file name (benchmarks/results/NAME.json)")
    ap.add_argument("--note", default="", help="free text recorded with the result")
    args = ap.parse_args(argv)
    if args.no_cold and not args.cache:
        ap.error("--no-cold needs --cache (a populated cache)")
    if not os.environ.get("RANKLOOP_DATA"):
        print("warning: RANKLOOP_DATA is not set; data sets may be downloaded", file=sys.stderr)

    work = Path(tempfile.mkdtemp(prefix="rankloop-main-job-"))
    cache = Path(args.cache).resolve() if args.cache else work / "cache"
    was_populated = cache.is_dir() and any(cache.iterdir())
    rankloop = Path(sys.executable).parent / "rankloop"
    cmd_head = [str(rankloop)] if rankloop.is_file() else [sys.executable, "-m", "rankloop.cli"]
    env = {**os.environ, "RANKLOOP_CACHE": str(cache)}
    env.setdefault("PYTHONUNBUFFERED", "1")
    runs: list[dict[str, Any]] = []
    plan = ([] if args.no_cold else ["cold"]) + [f"warm{i + 1}" for i in range(args.runs_warm)]
    print(f"cache {cache} ({'populated' if was_populated else 'empty'}), logs in {work}", flush=True)
    try:
        for label in plan:
            out = work / f"out-{label}"
            cmd = [*cmd_head, "experiment", "prf", args.config, "--out", str(out)]
            print(f"{label}: {' '.join(cmd)}", flush=True)
            r = run_once(cmd, env, label, work)
            r["cold"] = label == "cold" and not was_populated
            r["timing_s"] = _phases(out)
            if r["returncode"] != 0:
                tail = (work / f"{label}.stderr").read_text(encoding="utf-8").splitlines()[-15:]
                print("\n".join(tail), file=sys.stderr)
                print(f"{label} failed (exit {r['returncode']})", file=sys.stderr)
            metrics = out / "metrics.json"
            if metrics.is_file():
                doc = json.loads(metrics.read_text(encoding="utf-8"))
                r["ndcg_cut_10"] = {row["system"]: round(row["mean"], 4) for row in doc.get("rows", [])
                                    if row["measure"] == "ndcg_cut_10"}  # fmt: skip
                r["encoder"] = doc.get("encoder")
            runs.append(r)
            print(f"  {r['wall_s']:.1f} s (CPU {r['user_s'] + r['sys_s']:.0f} s), peak RSS {r['peak_rss_gb']:.2f} GB "
                  f"(polled tree {r['peak_tree_rss_polled_gb']} GB), exit {r['returncode']}", flush=True)  # fmt: skip
            for m in r["marks"]:
                print(f"    {m['t']:7.1f}s {m['rss_gb']:5.2f} GB  {m['line']}")
            if r["timing_s"]:
                print(f"    timing_s {r['timing_s']}")
            if r["returncode"] != 0:
                break
    finally:
        if not args.keep:
            shutil.rmtree(work / "cache", ignore_errors=True)
            for p in work.glob("out-*"):
                shutil.rmtree(p, ignore_errors=True)
    ok = [r for r in runs if r["returncode"] == 0]  # a failed run's time measures nothing
    cold = next((r for r in ok if r["label"] == "cold"), None)
    warm = [r for r in ok if r["label"].startswith("warm")]
    warm_best = min((r["wall_s"] for r in warm), default=None)
    peak = max((r["peak_rss_gb"] for r in ok), default=None)
    checks = {
        "cold_s": None if cold is None or not cold["cold"] else cold["wall_s"],
        "warm_s": warm_best,
        "peak_rss_gb": peak,
    }
    print(f"\nload average now {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs (wall times "
          "stretch on a shared machine; CPU seconds are in the JSON)")
    print("\n| measure | value | goal | pass |\n|---|---|---|---|")
    for key, goal in GOALS.items():
        v = checks[key]
        verdict = "n/a" if v is None else ("pass" if v < goal else "FAIL")
        print(f"| {key} | {'-' if v is None else v} | < {goal:g} | {verdict} |")
    load = os.getloadavg()
    payload = {
        "config": args.config,
        "command": "rankloop experiment prf CONFIG --out TMP (what `make demo` runs)",
        "note": args.note,
        "cache_was_populated": was_populated,
        "goals": GOALS,
        "result": checks,
        "pass": {k: (checks[k] is not None and checks[k] < g) for k, g in GOALS.items()},
        "loadavg_after": [round(x, 2) for x in load],
        "rusage_children_maxrss_gb": round(
            resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024 / 2**30, 3),
        "runs": runs,
    }  # fmt: skip
    print(f"wrote {write_result(args.name, payload)}; logs in {work}")
    return 0 if runs and all(r["returncode"] == 0 for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())

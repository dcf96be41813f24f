"""The main job on a BEIR-layout set like most of BEIR: test qrels only, long queries that are
corpus documents. It must skip what cannot run (LoL), drop each query's own id, finish in
bounded memory and write its table."""

from __future__ import annotations

import itertools
import json
import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(not os.environ.get("RANKLOOP_DATA"), reason="needs RANKLOOP_DATA")


def _long_query_set(root: Path, n_docs: int = 150, n_queries: int = 8) -> Path:
    """A slice of SciFact in BEIR layout: no train split; the longest documents are the queries,
    each judged relevant to the next-longest document (so a query's own id is in the corpus)."""
    from rankloop.data import load

    corpus = load("scifact").corpus.head(n_docs)
    folder = root / "longq"
    (folder / "qrels").mkdir(parents=True)
    with open(folder / "corpus.jsonl", "w", encoding="utf-8") as fh:
        for i, t, x in zip(corpus.ids, corpus.titles, corpus.texts):
            fh.write(json.dumps({"_id": i, "title": t, "text": x}) + "\n")
    order = sorted(range(len(corpus)), key=lambda i: -len(corpus.texts[i]))[: n_queries + 1]
    with open(folder / "queries.jsonl", "w", encoding="utf-8") as fh:
        for i in order[:-1]:
            fh.write(json.dumps({"_id": corpus.ids[i], "text": corpus.texts[i]}) + "\n")
    lines = ["query-id\tcorpus-id\tscore"]
    lines += [f"{corpus.ids[a]}\t{corpus.ids[b]}\t1" for a, b in itertools.pairwise(order)]
    (folder / "qrels" / "test.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


def test_long_queries_test_qrels_only(tmp_path: Path) -> None:
    folder = _long_query_set(tmp_path)
    config = tmp_path / "prf.yaml"
    config.write_text(
        f"dataset: {folder}\nout: {tmp_path / 'out'}\nremove_query_id: true\ndepths: [3]\n",
        encoding="utf-8",
    )
    env = {**os.environ, "RANKLOOP_CACHE": str(tmp_path / "cache")}
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    proc = subprocess.run(
        [sys.executable, "-m", "rankloop.cli", "experiment", "prf", str(config), "--quiet"],
        capture_output=True, text=True, env=env, timeout=600,
    )  # fmt: skip
    peak_mb = max(before, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss) / 1024
    assert proc.returncode == 0, proc.stderr[-2000:]
    table = (tmp_path / "out" / "table.md").read_text(encoding="utf-8")
    assert "| lol |" not in table and "- lol: lol: data set" in table  # skipped, with the reason
    assert "own id is removed" in table
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text(encoding="utf-8"))
    assert "bm25+rm3" in metrics["systems"] and metrics["remove_query_id"] is True
    runs = tmp_path / "out" / "runs"
    for trec in runs.glob("*.trec"):
        for line in trec.read_text(encoding="utf-8").splitlines():
            q, _, d, *_ = line.split()
            assert q != d, f"{trec.name}: query {q} retrieved itself"
    assert peak_mb < 3000, f"peak RSS {peak_mb:.0f} MB"

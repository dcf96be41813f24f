"""Data layer: core types, readers/writers (BEIR, TREC, MS MARCO) and the dataset registry."""

from rankloop.data.beir import (
    BeirDataset,
    load_beir,
    read_corpus_jsonl,
    read_queries_jsonl,
    save_beir,
    write_corpus_jsonl,
    write_queries_jsonl,
)
from rankloop.data.registry import DatasetInfo, fetch, fetch_file, info, list_datasets, load
from rankloop.data.trec import (
    read_qrels,
    read_run,
    read_topics,
    write_qrels,
    write_run,
    write_topics,
)
from rankloop.data.types import Corpus, Qrels, Queries, Run

__all__ = [
    "BeirDataset",
    "Corpus",
    "DatasetInfo",
    "Qrels",
    "Queries",
    "Run",
    "fetch",
    "fetch_file",
    "info",
    "list_datasets",
    "load",
    "load_beir",
    "read_corpus_jsonl",
    "read_qrels",
    "read_queries_jsonl",
    "read_run",
    "read_topics",
    "save_beir",
    "write_corpus_jsonl",
    "write_qrels",
    "write_queries_jsonl",
    "write_run",
    "write_topics",
]

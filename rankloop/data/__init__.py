"""Data layer: core types, readers/writers (BEIR, TREC, MS MARCO) and the dataset registry."""

from rankloop.data.types import Corpus, Qrels, Queries, Run

__all__ = ["Corpus", "Qrels", "Queries", "Run"]

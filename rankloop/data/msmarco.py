"""MS MARCO TSV files: the passage collection (`pid<TAB>text`) and query files (`qid<TAB>text`).

Same rules as every reader in `rankloop.data` (see `rankloop.data.trec`): UTF-8, gzip
transparent, blank lines skipped, exactly two tab-separated columns, unique ids, empty file
is an error, every problem a `FormatError` naming file and line.
"""

from __future__ import annotations

from rankloop.data._parse import PathLike, iter_lines
from rankloop.data.trec import _check_tsv_record, _read_tsv_pairs, _stem, write_topics
from rankloop.data.types import Corpus, Queries
from rankloop.errors import RankloopError
from rankloop.io import atomic_write


def read_collection(path: PathLike, name: str | None = None) -> Corpus:
    """Read an MS MARCO passage collection (`pid<TAB>passage`); titles are empty strings."""
    ids, texts = _read_tsv_pairs(path, iter_lines(path), "pid<TAB>passage")
    return Corpus(ids, [""] * len(ids), texts, name if name is not None else _stem(path))


def read_queries(path: PathLike, name: str | None = None) -> Queries:
    """Read an MS MARCO query file (`qid<TAB>query`), e.g. `queries.dev.small.tsv`."""
    ids, texts = _read_tsv_pairs(path, iter_lines(path), "qid<TAB>query")
    return Queries(ids, texts, name if name is not None else _stem(path))


def write_collection(corpus: Corpus, path: PathLike) -> None:
    """Write `pid<TAB>passage` lines atomically; a corpus with titles cannot be stored (raises)."""
    with atomic_write(path) as fh:
        for pid, title, text in zip(corpus.ids, corpus.titles, corpus.texts):
            if title:
                raise RankloopError(
                    f"{path}: doc {pid!r} has a title; the MS MARCO passage TSV has no title "
                    "column (write BEIR JSONL instead)"
                )
            _check_tsv_record(pid, text, path)
            fh.write(f"{pid}\t{text}\n")


def write_queries(queries: Queries, path: PathLike) -> None:
    """Write `qid<TAB>query` lines atomically."""
    write_topics(queries, path)

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


def write_synthetic_collection(
    source: Corpus, path: PathLike, n: int, *, random_state: int = 0, progress: bool = True
) -> None:
    """Write `n` passages (`pid<TAB>passage`, pids "0".."n-1") recombined from the sentences of
    `source`: a collection of any size with real text and a realistic length spread, for
    scale tests where the real MS MARCO (8.8M passages) is not at hand. Each passage takes the
    sentence count of a random source document and draws that many sentences at random."""
    import re

    import numpy as np
    from tqdm.auto import tqdm

    docs = [re.split(r"(?<=[.!?])\s+", " ".join(t.split())) for t in source.texts if t.strip()]
    sentences = [s for d in docs for s in d if s]
    if not sentences:
        raise RankloopError(f"corpus {source.name!r} has no text to recombine")
    counts = np.array([len(d) for d in docs])
    rng = np.random.default_rng(random_state)
    block = 10_000
    with (
        atomic_write(path) as fh,
        tqdm(total=n, unit="doc", desc="generate", disable=not progress) as bar,
    ):
        for start in range(0, n, block):
            m = min(block, n - start)
            sizes = counts[rng.integers(0, len(counts), m)]
            picks = rng.integers(0, len(sentences), int(sizes.sum()))
            at = 0
            lines = []
            for j, size in enumerate(sizes.tolist()):
                lines.append(
                    f"{start + j}\t{' '.join(sentences[k] for k in picks[at : at + size])}\n"
                )
                at += size
            fh.write("".join(lines))
            bar.update(m)

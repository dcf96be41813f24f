"""BEIR folders: `corpus.jsonl`, `queries.jsonl` and `qrels/<split>.tsv` (each may be `*.gz`).

Same rules as every reader in `rankloop.data` (see `rankloop.data.trec`). JSONL specifics: each
non-blank line is one JSON object with a non-empty string (or integer) `_id`; corpus lines
need a string `text` and may carry a string `title` (missing or null means ""); other keys
such as `metadata` are ignored. Ids are unique within a file. Strings may not hold NUL or an
unpaired surrogate (JSON escapes such as `"\\u0000"` or `"\\ud800"` are errors).

`load_beir` checks that qrels only name known queries (always an error) and known documents (a
warning with a count, or an error with `strict=True`).
"""

from __future__ import annotations

import json
import os
import re
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from rankloop.data._parse import iter_lines
from rankloop.data.trec import PathLike, _stem, read_qrels, write_qrels
from rankloop.data.types import Corpus, Qrels, Queries
from rankloop.errors import FormatError, RankloopError
from rankloop.io import atomic_dir, atomic_write

_BAD_ESCAPE = re.compile(r"\\u(?:[dD][89a-fA-F]|0000)")  # may decode to a lone surrogate or NUL
_BAD_CHAR = re.compile("[\x00\ud800-\udfff]")


@dataclass(frozen=True)
class BeirDataset:
    """A BEIR dataset for one split: the full corpus, that split's queries and its qrels."""

    corpus: Corpus
    queries: Queries
    qrels: Qrels
    name: str
    split: str | None = None


def iter_json_objects(
    path: PathLike, record: str = "JSON record"
) -> Iterator[tuple[int, dict, str]]:
    """(line number, decoded object, raw line) for every non-blank line of a JSONL file.

    A line that is not a JSON object, or a file without any (`record` names what is missing),
    raises FormatError; shared by every JSONL reader (BEIR corpora and queries, click logs)."""
    count = 0
    for lineno, line in iter_lines(path):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except (ValueError, RecursionError) as e:
            raise FormatError(path, lineno, f"one JSON object per line ({e})", line) from None
        if not isinstance(obj, dict):
            raise FormatError(path, lineno, "a JSON object", line)
        if _BAD_ESCAPE.search(line) and not _valid_strings(obj):
            raise FormatError(
                path, lineno, "strings without NUL or unpaired surrogates (\\u0000, \\ud800)", line
            )
        count += 1
        yield lineno, obj, line
    if not count:
        raise FormatError(
            path, None, f"at least one {record} (an empty file is an error)", "no records"
        )


def _valid_strings(value: object) -> bool:
    """No NUL and no unpaired surrogate in any string (or key) of a decoded JSON value."""
    if isinstance(value, str):
        return _BAD_CHAR.search(value) is None
    try:
        if isinstance(value, list):
            return all(_valid_strings(v) for v in value)
        if isinstance(value, dict):
            return all(_valid_strings(k) and _valid_strings(v) for k, v in value.items())
    except RecursionError:  # nesting deeper than this check can follow
        return False
    return True


def _get_id(obj: dict, path: PathLike, lineno: int, line: str, seen: dict[str, int]) -> str:
    if "_id" not in obj:
        raise FormatError(path, lineno, "an '_id' key", line)
    rid = obj["_id"]
    if isinstance(rid, int) and not isinstance(rid, bool):
        rid = str(rid)
    if not isinstance(rid, str) or not rid.strip():
        raise FormatError(
            path,
            lineno,
            "'_id' to be a non-empty string (not only blanks) or an integer",
            repr(obj["_id"]),
        )
    if rid in seen:
        raise FormatError(
            path, lineno, f"unique '_id's; {rid!r} already appears on line {seen[rid]}", line
        )
    seen[rid] = lineno
    return rid


def _get_str(obj: dict, key: str, path: PathLike, lineno: int, line: str, required: bool) -> str:
    if key not in obj or (obj[key] is None and not required):
        if required:
            raise FormatError(path, lineno, f"a {key!r} key", line)
        return ""
    value = obj[key]
    if not isinstance(value, str):
        raise FormatError(path, lineno, f"{key!r} to be a string", repr(value))
    return value


def read_corpus_jsonl(path: PathLike, name: str | None = None) -> Corpus:
    """Read a BEIR `corpus.jsonl` (`_id`, `title`, `text`)."""
    ids: list[str] = []
    titles: list[str] = []
    texts: list[str] = []
    seen: dict[str, int] = {}
    for lineno, obj, line in iter_json_objects(path):
        ids.append(_get_id(obj, path, lineno, line, seen))
        titles.append(_get_str(obj, "title", path, lineno, line, required=False))
        texts.append(_get_str(obj, "text", path, lineno, line, required=True))
    return Corpus(ids, titles, texts, name if name is not None else _stem(path))


def read_queries_jsonl(path: PathLike, name: str | None = None) -> Queries:
    """Read a BEIR `queries.jsonl` (`_id`, `text`)."""
    ids: list[str] = []
    texts: list[str] = []
    seen: dict[str, int] = {}
    for lineno, obj, line in iter_json_objects(path):
        ids.append(_get_id(obj, path, lineno, line, seen))
        texts.append(_get_str(obj, "text", path, lineno, line, required=True))
    return Queries(ids, texts, name if name is not None else _stem(path))


def _id_out(rid: str, path: PathLike) -> str:
    """Writers: an id the readers accept back (non-empty, not only blanks)."""
    if not rid.strip():
        raise RankloopError(f"{path}: cannot write the blank id {rid!r}")
    return rid


def write_corpus_jsonl(corpus: Corpus, path: PathLike) -> None:
    """Write `{"_id", "title", "text"}` lines atomically (UTF-8, not ASCII-escaped)."""
    with atomic_write(path) as fh:
        for i, t, x in zip(corpus.ids, corpus.titles, corpus.texts):
            fh.write(
                json.dumps({"_id": _id_out(i, path), "title": t, "text": x}, ensure_ascii=False)
            )
            fh.write("\n")


def write_queries_jsonl(queries: Queries, path: PathLike) -> None:
    """Write `{"_id", "text"}` lines atomically."""
    with atomic_write(path) as fh:
        for i, x in queries.items():
            fh.write(json.dumps({"_id": _id_out(i, path), "text": x}, ensure_ascii=False) + "\n")


def _find(folder: Path, stem: str) -> Path:
    """`folder/stem`, or its gzipped twin; raises naming both when neither exists."""
    for candidate in (folder / stem, folder / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    raise RankloopError(f"{folder}: not a BEIR folder (no {stem} or {stem}.gz)")


def beir_splits(path: PathLike) -> list[str]:
    """The qrels splits a BEIR folder holds (`qrels/<split>.tsv[.gz]`), sorted."""
    qdir = Path(path) / "qrels"
    if not qdir.is_dir():
        return []
    names = {p.name.removesuffix(".gz").removesuffix(".tsv") for p in qdir.iterdir() if p.is_file()}
    return sorted(
        n for n in names if (qdir / f"{n}.tsv").is_file() or (qdir / f"{n}.tsv.gz").is_file()
    )


def load_beir(
    path: PathLike,
    split: str | None = "test",
    name: str | None = None,
    strict: bool = False,
) -> BeirDataset:
    """Load a BEIR folder; queries are those judged in `split` (BEIR's convention).

    `split=None` keeps every query in `queries.jsonl` and merges the qrels of all splits (a
    (query, doc) pair judged differently in two splits raises). Qrels naming a query missing
    from `queries.jsonl` raise `FormatError`; qrels naming documents missing from the corpus
    give a warning with their count and first ids, or raise `FormatError` when `strict`.
    """
    root = Path(path)
    if not root.is_dir():
        raise RankloopError(f"{root}: not a BEIR folder (no such directory)")
    name = name if name is not None else root.name
    corpus_path = _find(root, "corpus.jsonl")
    queries_path = _find(root, "queries.jsonl")
    splits = beir_splits(root)
    if split is not None and split not in splits:
        raise RankloopError(
            f"{root}: no qrels for split {split!r} (qrels/{split}.tsv); available: {', '.join(splits) or 'none'}"
        )
    corpus = read_corpus_jsonl(corpus_path, name)
    all_queries = read_queries_jsonl(queries_path, name)
    if split is not None:
        qrels_path = _find(root / "qrels", f"{split}.tsv")
        qrels = read_qrels(qrels_path, f"{name}/{split}")
    else:
        qrels_path = root / "qrels"
        qrels = _merge_splits(root, splits, name)
    missing = _unknown(qrels.data, all_queries.ids)
    if missing:
        raise FormatError(
            qrels_path,
            None,
            f"query ids present in {queries_path.name}",
            f"{len(missing)} unknown, e.g. {missing[0]!r}",
        )
    judged_docs = (d for docs in qrels.data.values() for d in docs)
    missing = _unknown(judged_docs, corpus.ids)
    if missing:
        shown = ", ".join(map(repr, missing[:5]))
        if strict:
            raise FormatError(
                qrels_path,
                None,
                f"document ids present in {corpus_path.name} (strict=True)",
                f"{len(missing)} unknown, e.g. {shown}",
            )
        warnings.warn(
            f"{qrels_path}: {len(missing)} judged document id(s) are not in "
            f"{corpus_path.name}, e.g. {shown}; pass strict=True to make this an error",
            stacklevel=2,
        )
    if split is not None:
        judged = set(qrels.data)
        queries = all_queries.subset(q for q in all_queries.ids if q in judged)
    else:
        queries = all_queries
    return BeirDataset(corpus=corpus, queries=queries, qrels=qrels, name=name, split=split)


def _unknown(ids: Iterable[str], known: Iterable[str]) -> list[str]:
    """The distinct `ids` not in `known`, in first-seen order."""
    known_set = set(known)
    return [i for i in dict.fromkeys(ids) if i not in known_set]


def _merge_splits(root: Path, splits: list[str], name: str) -> Qrels:
    merged: dict[str, dict[str, int]] = {}
    for s in splits:
        for q, docs in read_qrels(_find(root / "qrels", f"{s}.tsv")).data.items():
            target = merged.setdefault(q, {})
            for d, g in docs.items():
                if target.get(d, g) != g:
                    raise RankloopError(
                        f"{root}: ({q}, {d}) is judged {target[d]} in one split and {g} in {s!r}; "
                        "pass a split to load_beir"
                    )
                target[d] = g
    return Qrels(merged, name)


def save_beir(
    dataset: BeirDataset, path: PathLike, split: str | None = None, *, overwrite: bool = False
) -> Path:
    """Write a BEIR folder atomically (the whole folder appears at once); returns its path.

    Qrels go to `qrels/<split>.tsv`, `split` defaulting to the dataset's own split or `test`.
    A non-empty folder at `path` is replaced only with `overwrite=True`.
    """
    split = split or dataset.split or "test"
    if not split or os.sep in split or "/" in split:
        raise RankloopError(f"save_beir: invalid split name {split!r}")
    target = Path(path)
    with atomic_dir(target, overwrite=overwrite) as tmp:
        write_corpus_jsonl(dataset.corpus, tmp / "corpus.jsonl")
        write_queries_jsonl(dataset.queries, tmp / "queries.jsonl")
        write_qrels(dataset.qrels, tmp / "qrels" / f"{split}.tsv", fmt="beir")
    return target

"""TREC formats: qrels, runs and topics (TSV and the `<top>` SGML-ish format), gzip-transparent.

Rules shared by every reader in `rankloop.data` (BEIR and MS MARCO readers use the same helpers):

- Input is UTF-8 (a leading byte-order mark is dropped); `*.gz` is gunzipped. Only LF ends a
  line, as for `wc -l`: a trailing CR is dropped (CRLF files read fine) and a lone CR is data.
  Bytes that do not decode, a NUL character, a corrupt gzip stream and an unreadable file all
  raise `FormatError`, never a bare `UnicodeDecodeError` / `OSError` (`rankloop.data._parse`).
- Blank (whitespace-only) lines are skipped; line numbers in errors still count them. In TREC
  qrels and runs, a line whose first non-blank character is `#` is a comment (trec_eval skips
  these in qrels too).
- A file with no records is an error: an empty qrels, run or topics file almost always means a
  failed upstream step, and trec_eval refuses empty files as well.
- A (query, doc) pair may appear once. trec_eval stops on duplicates in both files
  (`form_res_qrels: duplicate docs` for runs, `form_res_rels: duplicate docs` for qrels), so
  both are errors here even when the repeated grade or score is identical.
- Grades are ASCII integers with |grade| < 2**31; scores are ASCII decimal floats and must be
  finite (see `rankloop.data._parse`: no `1_000`, no non-ASCII digits, no NaN or infinities).
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterator
from typing import Literal

from rankloop.data._parse import PathLike, parse_float, parse_int
from rankloop.data._parse import iter_lines as _iter_lines
from rankloop.data.types import Qrels, Queries, Run
from rankloop.errors import FormatError, RankloopError
from rankloop.io import atomic_write

_BEIR_QRELS_HEADER = ["query-id", "corpus-id", "score"]


def _check_token(value: str, what: str, path: PathLike) -> str:
    """Writers: an id must survive whitespace splitting unchanged and not look like a comment."""
    if not value or value.split() != [value] or value.startswith("#"):
        raise RankloopError(
            f"{path}: cannot write {what} {value!r} in a whitespace-separated TREC file "
            "(must be non-empty, contain no whitespace and not start with '#')"
        )
    return value


def read_qrels(path: PathLike, name: str | None = None) -> Qrels:
    """Read TREC qrels (`qid iter docid grade`) or a BEIR qrels TSV (header `query-id corpus-id score`).

    The BEIR form is recognised by its header line and is split on tabs; the TREC form is split
    on any whitespace. Grades must be integers; every (query, doc) pair may appear once.
    """
    data: dict[str, dict[str, int]] = {}
    beir: bool | None = None
    for lineno, line in _iter_lines(path):
        if beir is None:
            if not line.strip():
                continue
            beir = [h.strip().lower() for h in line.strip().split("\t")] == _BEIR_QRELS_HEADER
            if beir:
                continue
        if beir:
            if not line.strip():
                continue
            fields = [f.strip() for f in line.strip().split("\t")]
            if len(fields) != 3 or not all(fields):
                raise FormatError(
                    path, lineno, "3 tab-separated columns: query-id corpus-id score", line
                )
            qid, docid, grade_s = fields
        else:
            fields = line.split()
            if not fields or fields[0][0] == "#":
                continue
            if len(fields) != 4:
                raise FormatError(
                    path,
                    lineno,
                    f"4 whitespace-separated columns: qid iter docid grade (found {len(fields)})",
                    line,
                )
            qid, _, docid, grade_s = fields
        grade = parse_int(grade_s, path, lineno, "relevance grade")
        docs = data.get(qid)
        if docs is None:
            docs = data[qid] = {}
        elif docid in docs:
            first = _first_line_with(path, qid, docid, (0, 1) if beir else (0, 2))
            raise FormatError(
                path,
                lineno,
                f"each (query, doc) judged once; ({qid}, {docid}) was already judged on line "
                f"{first} (trec_eval stops with 'form_res_rels: duplicate docs')",
                line,
            )
        docs[docid] = grade
    if not data:
        raise FormatError(
            path, None, "at least one judgement (an empty qrels file is an error)", "no records"
        )
    return Qrels(data, name if name is not None else _stem(path))


def _first_line_with(path: PathLike, qid: str, docid: str, columns: tuple[int, int]) -> int | None:
    """Error path only: the first line whose (query, doc) columns are (qid, docid)."""
    for lineno, line in _iter_lines(path):
        fields = line.split()
        if len(fields) > max(columns) and (fields[columns[0]], fields[columns[1]]) == (qid, docid):
            return lineno
    return None


def write_qrels(qrels: Qrels, path: PathLike, fmt: Literal["trec", "beir"] = "trec") -> None:
    """Write qrels atomically, queries and docs in their stored order.

    `fmt="trec"` writes `qid 0 docid grade`; `fmt="beir"` writes the BEIR TSV with its header.
    """
    if fmt not in ("trec", "beir"):
        raise RankloopError(f"write_qrels: unknown format {fmt!r}; use 'trec' or 'beir'")
    with atomic_write(path) as fh:
        if fmt == "beir":
            fh.write("\t".join(_BEIR_QRELS_HEADER) + "\n")
        for qid, docs in qrels.data.items():
            _check_token(qid, "query id", path)
            for docid, grade in docs.items():
                _check_token(docid, "doc id", path)
                if fmt == "trec":
                    fh.write(f"{qid} 0 {docid} {int(grade)}\n")
                else:
                    fh.write(f"{qid}\t{docid}\t{int(grade)}\n")


def read_run(path: PathLike, name: str | None = None) -> Run:
    """Read a TREC run (`qid Q0 docid rank score tag`); the rank column is ignored, as trec_eval does.

    Ordering is always recomputed from scores (score descending, then doc id descending).
    `name` defaults to the tag on the first line. A doc may appear once per query.
    """
    data: dict[str, dict[str, float]] = {}
    tag: str | None = None
    for lineno, line in _iter_lines(path):
        fields = line.split()
        if not fields or fields[0][0] == "#":
            continue
        if len(fields) != 6:
            raise FormatError(
                path,
                lineno,
                f"6 whitespace-separated columns: qid Q0 docid rank score tag (found {len(fields)})",
                line,
            )
        qid, _, docid, _, score_s, run_tag = fields
        score = parse_float(score_s, path, lineno, "score")
        docs = data.get(qid)
        if docs is None:
            docs = data[qid] = {}
            if tag is None:
                tag = run_tag
        elif docid in docs:
            first = _first_line_with(path, qid, docid, (0, 2))
            raise FormatError(
                path,
                lineno,
                f"each doc once per query; ({qid}, {docid}) already appears on line {first} "
                "(trec_eval stops with 'form_res_qrels: duplicate docs')",
                line,
            )
        docs[docid] = score
    if not data:
        raise FormatError(
            path, None, "at least one ranked document (an empty run file is an error)", "no records"
        )
    return Run(data, name if name is not None else (tag or _stem(path)))


def write_run(run: Run, path: PathLike, tag: str | None = None) -> None:
    """Write a TREC run atomically: per query in stored order, docs in trec_eval order, ranks 1..n.

    Scores are written with `repr`, so reading the file back gives the same floats. `tag`
    defaults to the run's name (or `rankloop`). Queries with no docs produce no lines.
    """
    tag = _check_token(tag or run.name or "rankloop", "run tag", path)
    with atomic_write(path) as fh:
        for qid in run.data:
            _check_token(qid, "query id", path)
            ranked = run.ranked(qid)
            for docid, score in ranked:
                _check_token(docid, "doc id", path)
                if not math.isfinite(score):
                    raise RankloopError(
                        f"{path}: cannot write non-finite score {score!r} for ({qid}, {docid})"
                    )
            fh.write(
                "".join(
                    f"{qid} Q0 {docid} {rank} {float(score)!r} {tag}\n"
                    for rank, (docid, score) in enumerate(ranked, 1)
                )
            )


def read_topics(
    path: PathLike, field: Literal["title", "desc", "narr"] = "title", name: str | None = None
) -> Queries:
    """Read TREC topics: `qid<TAB>text` lines, or the `<top> <num> <title> <desc> <narr>` format.

    The format is detected from the first non-blank line (`<top>` means SGML-ish). For the
    SGML-ish form, `field` picks which section becomes the query text (whitespace collapsed,
    `Number:`, `Topic:`, `Description:`, `Narrative:` prefixes removed).
    """
    lines = _iter_lines(path)
    for lineno, line in lines:
        if not line.strip():
            continue
        if line.strip().lower().startswith("<top>"):
            return _read_sgml_topics(path, _chain((lineno, line), lines), field, name)
        ids, texts = _read_tsv_pairs(path, _chain((lineno, line), lines), "qid<TAB>text")
        return Queries(ids, texts, name if name is not None else _stem(path))
    raise FormatError(
        path, None, "at least one topic (an empty topics file is an error)", "no records"
    )


def write_topics(queries: Queries, path: PathLike) -> None:
    """Write queries as `qid<TAB>text` lines, atomically (reads back with `read_topics`)."""
    with atomic_write(path) as fh:
        for qid, text in queries.items():
            _check_tsv_record(qid, text, path)
            fh.write(f"{qid}\t{text}\n")


def _check_tsv_record(rid: str, text: str, path: PathLike) -> None:
    """Writers: a TSV record needs a non-empty unpadded id and no tab/newline anywhere."""
    if not rid.strip() or rid != rid.strip() or any(c in rid + text for c in "\t\r\n"):
        raise RankloopError(
            f"{path}: record {rid!r} cannot be stored as TSV (empty or padded id, or a tab or "
            "newline in the id or text)"
        )


def _chain(first: tuple[int, str], rest: Iterator[tuple[int, str]]) -> Iterator[tuple[int, str]]:
    yield first
    yield from rest


def _stem(path: PathLike) -> str:
    base = os.path.basename(os.fspath(path))
    for suffix in (".gz", ".txt", ".tsv", ".jsonl", ".trec", ".run", ".qrels"):
        if base.endswith(suffix):
            base = base[: -len(suffix)]
    return base


def _read_tsv_pairs(
    path: PathLike, lines: Iterator[tuple[int, str]], expected: str
) -> tuple[list[str], list[str]]:
    """Two tab-separated columns `id<TAB>text` per line (MS MARCO tsv files, TREC TSV topics)."""
    ids: list[str] = []
    texts: list[str] = []
    seen: dict[str, int] = {}
    for lineno, line in lines:
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) != 2:
            raise FormatError(
                path, lineno, f"2 tab-separated columns: {expected} (found {len(fields)})", line
            )
        rid, text = fields[0].strip(), fields[1]
        if not rid:
            raise FormatError(path, lineno, "a non-empty id in column 1", line)
        if rid in seen:
            raise FormatError(
                path, lineno, f"unique ids; {rid!r} already appears on line {seen[rid]}", line
            )
        seen[rid] = lineno
        ids.append(rid)
        texts.append(text)
    if not ids:
        raise FormatError(path, None, f"at least one record ({expected})", "no records")
    return ids, texts


_TAG_RE = re.compile(r"<(/?)([A-Za-z][A-Za-z0-9_-]*)>")
_PREFIX_RE = {
    "num": re.compile(r"^\s*number\s*:", re.IGNORECASE),
    "title": re.compile(r"^\s*topic\s*:", re.IGNORECASE),
    "desc": re.compile(r"^\s*description\s*:", re.IGNORECASE),
    "narr": re.compile(r"^\s*narrative\s*:", re.IGNORECASE),
}


class _Topic:
    """One `<top>` block being parsed: its opening line and the text of each section."""

    def __init__(self, line: int) -> None:
        self.line = line
        self.sections: dict[str, list[str]] = {}
        self.current: str | None = None

    def text(self, tag: str) -> str:
        return " ".join(_PREFIX_RE[tag].sub("", " ".join(self.sections.get(tag, []))).split())


def _read_sgml_topics(
    path: PathLike, lines: Iterator[tuple[int, str]], field: str, name: str | None
) -> Queries:
    """Parse `<top>` blocks line by line, so every error names the line it happened on.

    Any `<tag>` opens a section (TREC-1/2 topics also carry `<dom>`, `<con>`, `<smry>`, ...);
    closing tags such as `</title>` are optional. Only `<num>` and the requested field are required.
    """
    if field not in ("title", "desc", "narr"):
        raise RankloopError(f"read_topics: unknown field {field!r}; use 'title', 'desc' or 'narr'")
    ids: list[str] = []
    texts: list[str] = []
    seen: dict[str, int] = {}
    topic: _Topic | None = None
    lineno = 0
    for lineno, line in lines:
        pos = 0
        for m in _TAG_RE.finditer(line):
            _sgml_text(line[pos : m.start()], topic, path, lineno)
            pos = m.end()
            closing, tag = m.group(1) == "/", m.group(2).lower()
            if tag == "top" and not closing:
                if topic is not None:
                    raise FormatError(
                        path,
                        lineno,
                        f"</top> before a new <top> (block opened on line {topic.line})",
                        line,
                    )
                topic = _Topic(lineno)
            elif tag == "top":
                if topic is None:
                    raise FormatError(path, lineno, "<top> before </top>", line)
                qid, text = _close_topic(topic, field, path, lineno)
                if qid in seen:
                    raise FormatError(
                        path,
                        lineno,
                        f"unique topic numbers; {qid!r} already appears on line {seen[qid]}",
                        qid,
                    )
                seen[qid] = topic.line
                ids.append(qid)
                texts.append(text)
                topic = None
            elif topic is None:
                raise FormatError(path, lineno, f"<{tag}> inside a <top> block", line)
            elif closing:
                topic.current = None
            else:
                if tag in topic.sections:
                    raise FormatError(path, lineno, f"one <{tag}> per topic", line)
                topic.sections[tag] = []
                topic.current = tag
        _sgml_text(line[pos:], topic, path, lineno)
    if topic is not None:
        raise FormatError(
            path, lineno, f"</top> closing the block opened on line {topic.line}", "end of file"
        )
    if not ids:
        raise FormatError(path, None, "at least one <top> topic", "no records")
    return Queries(ids, texts, name if name is not None else _stem(path))


def _close_topic(topic: _Topic, field: str, path: PathLike, lineno: int) -> tuple[str, str]:
    qid = topic.text("num")
    if not qid:
        raise FormatError(
            path, lineno, f"a <num> in the <top> block opened on line {topic.line}", None
        )
    if len(qid.split()) != 1:
        raise FormatError(path, lineno, "a single-token topic number in <num>", qid)
    text = topic.text(field)
    if not text:
        raise FormatError(path, lineno, f"a non-empty <{field}> in topic {qid}", None)
    return qid, text


def _sgml_text(text: str, topic: _Topic | None, path: PathLike, lineno: int) -> None:
    if not text.strip():
        return
    if topic is None:
        raise FormatError(path, lineno, "text only inside <top> ... </top>", text.strip())
    if topic.current is None:
        raise FormatError(
            path, lineno, "text only after a section tag such as <num> or <title>", text.strip()
        )
    topic.sections[topic.current].append(text)

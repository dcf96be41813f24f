"""Property tests over every reader: malformed input raises FormatError (never another type and
never a silent accept), the writers' output reads back exactly, and an interrupted write leaves
the old file intact.

Each reader has a small valid file, written as a template in which `⟨kind:value⟩` marks a number
and `kind` names the malformed numbers that must be rejected there (`BAD`). Every case is
tallied per reader in `COUNTS`, printed as a table when the module ends: cases tried, clean
FormatErrors, accepted inputs (their data checked against the reader's invariants), tracebacks
and accepted broken inputs. The last two must stay 0: either one fails its test.
"""

from __future__ import annotations

import gzip
import json
import math
import os
import re
import tempfile
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import rankloop.data.beir as beir_mod
from rankloop.data.banditlogs import BanditLog, load_obd
from rankloop.data.beir import (
    BeirDataset,
    load_beir,
    read_corpus_jsonl,
    read_queries_jsonl,
    write_corpus_jsonl,
)
from rankloop.data.clicklogs import ClickLog, read_jsonl, read_tsv, read_yandex
from rankloop.data.msmarco import read_collection, read_queries
from rankloop.data.ratings import (
    MNARDataset,
    RatingLog,
    load_coat,
    load_movielens,
    load_yahoo_r3,
    read_ratings,
)
from rankloop.data.registry import _read_sha256sums
from rankloop.data.trec import (
    read_qrels,
    read_run,
    read_topics,
    write_qrels,
    write_run,
    write_topics,
)
from rankloop.data.types import Corpus, Qrels, Queries, Run
from rankloop.errors import FormatError, RankloopError
from rankloop.rerank.ltr import LtrData, read_svmlight

FUZZ = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FEW = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# --- malformed numbers, by the kind of number a slot holds ---------------------------------------

_NOT_A_NUMBER = ["nan", "NaN", "-inf", "Infinity", "1e999", "1_000", "١٢", "１", "0x10", "--1"]
_NOT_A_NUMBER += ["1.2.3", "e5", "1e", "+"]
_NOT_AN_INT = [*_NOT_A_NUMBER, "", "1.5", "1e3", "-99999999999999999999999"]
_JSON_BAD = ["NaN", "Infinity", "-Infinity", "1e999", "1" + "0" * 400, "1_000", "١٢", '"1"']
_JSON_BAD += ["true", "[1]", "{}", "nan", ""]
BAD: dict[str, list[str]] = {
    "f64": [*_NOT_A_NUMBER, ""],
    "f64-optional": _NOT_A_NUMBER,  # an empty field means "unknown" there
    "f32": [*_NOT_A_NUMBER, "", "1e39", "-1e39"],
    "grade": [*_NOT_AN_INT, "2147483648", "99999999999999999999999"],
    "coat-rating": [*_NOT_AN_INT, "-1", "6", "2.5", "2147483648"],
    "propensity": [*_NOT_A_NUMBER, "", "0", "-0.5", "1.5", "1e39"],
    "yahoo-rating": [*_NOT_A_NUMBER, "", "0", "6", "1e39"],
    "ml-rating": [*_NOT_A_NUMBER, "", "0", "5.5", "1e39"],
    "timestamp": [*_NOT_AN_INT, "-1", "99999999999999999999"],
    "item": [*_NOT_AN_INT, "-1", "99", "2147483648"],
    "position": [*_NOT_AN_INT, "0", "-1", "9"],
    "click": [*_NOT_AN_INT, "2", "-1"],
    "iso-time": ["not a date", "", "2019-13-45 00:00:00+00:00", "nan", "now", "today", "12"],
    "click-position": [*_NOT_A_NUMBER, "1.5", "1e3", "0", "-1", "4", "2147483648"],
    "dwell": [*_NOT_A_NUMBER, "-1", "-0.5"],
    "json-position": [*_JSON_BAD, "1.5", "0", "-1", "4", "null", "1e0"],
    "json-time": _JSON_BAD,
    "json-dwell": [*_JSON_BAD, "-1", "-0.5"],
}
_SLOT = re.compile(r"⟨([a-z0-9-]+):([^⟩]*)⟩")
_BAD_BYTES = [
    b"\xff",
    b"\x80",
    b"\xc3(",
    b"\xed\xa0\x80",
    b"\xc0\xaf",
    b"\xf8\x88\x80\x80",
    b"\x00",
]


# --- invariants of accepted data ----------------------------------------------------------------
def _ids_ok(ids: Iterable[object], unique: bool = False) -> None:
    seen = list(ids)
    for i in seen:
        assert isinstance(i, str) and i.strip() and "\x00" not in i, repr(i)
        i.encode("utf-8")  # no lone surrogates
    if unique:
        assert len(set(seen)) == len(seen)


def _finite(values: Iterable[float], lo: float = -math.inf, hi: float = math.inf) -> None:
    arr = np.asarray(values if isinstance(values, np.ndarray) else list(values), float)
    assert np.isfinite(arr).all() and (arr >= lo).all() and (arr <= hi).all(), arr


def _check_qrels(q: Qrels) -> None:
    assert q.data
    _ids_ok(q.data)
    for docs in q.data.values():
        _ids_ok(docs)
        assert docs and all(type(g) is int and abs(g) < 2**31 for g in docs.values())


def _check_run(r: Run) -> None:
    assert r.data
    _ids_ok(r.data)
    for docs in r.data.values():
        _ids_ok(docs)
        _finite(docs.values())


def _check_texts(x: Corpus | Queries) -> None:
    assert x.ids
    _ids_ok(x.ids, unique=True)
    texts = [*x.texts, *getattr(x, "titles", [])]
    assert all(isinstance(t, str) and "\x00" not in t for t in texts)
    "".join(texts).encode("utf-8")


def _check_beir(ds: BeirDataset) -> None:
    _check_texts(ds.corpus)
    _check_qrels(ds.qrels)
    assert set(ds.qrels.data) <= set(ds.queries.ids)
    assert {d for docs in ds.qrels.data.values() for d in docs} <= set(ds.corpus.ids)


def _check_coat(d: MNARDataset) -> None:
    assert d.test is not None and d.train.shape == d.test.shape
    for x in (d.train, d.test):
        assert np.isin(x.user_items.data, [1, 2, 3, 4, 5]).all()
    if d.shipped_propensities is not None:
        assert d.shipped_propensities.shape == d.train.shape
        _finite(d.shipped_propensities.ravel(), hi=1)
        assert (d.shipped_propensities > 0).all()


def _check_log(log: RatingLog, lo: float, hi: float) -> None:
    assert len(log)
    _ids_ok(log.user_ids, unique=True)
    _ids_ok(log.item_ids, unique=True)
    _finite(log.values, lo, hi)
    assert (log.users >= 0).all() and (log.users < len(log.user_ids)).all()
    assert (log.items >= 0).all() and (log.items < len(log.item_ids)).all()
    if log.timestamps is not None:
        assert (log.timestamps >= 0).all()


def _check_yahoo(d: MNARDataset) -> None:
    assert d.test is not None
    for x in (d.train, d.test):
        _ids_ok(x.user_ids)
        _finite(x.user_items.data, 1, 5)


def _check_obd(log: BanditLog) -> None:
    assert len(log)
    assert ((log.action >= 0) & (log.action < log.n_actions)).all()
    assert ((log.position >= 0) & (log.position < log.len_list)).all()
    assert log.len_list <= log.n_actions
    assert np.isin(log.reward, [0, 1]).all()
    _finite(log.pscore, hi=1)
    assert (log.pscore > 0).all()
    _finite(log.context.ravel())
    _finite(log.action_context.ravel())
    assert log.timestamp is None or not any(t is None or t != t for t in log.timestamp)


def _check_ltr(d: LtrData) -> None:
    _finite(d.features.ravel())
    _finite(d.labels)
    _ids_ok(d.qids.tolist())


def _check_clicks(log: ClickLog) -> None:
    assert len(log)
    for i in range(len(log)):
        query, docs, clicked = log.session(i)
        _ids_ok([query])
        _ids_ok(docs, unique=True)
        assert len(set(clicked)) == len(clicked) and all(0 <= c < len(docs) for c in clicked)
    if log.timestamps is not None:
        assert not np.isinf(log.timestamps).any()
    if log.dwell is not None:
        known = log.dwell[~np.isnan(log.dwell)]
        _finite(known, lo=0)


def _check_sums(sums: dict[str, str]) -> None:
    assert all(re.fullmatch(r"[0-9a-f]{64}", v) for v in sums.values())


# --- the readers ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Spec:
    """One reader: a valid file (template) at `target`, beside valid `companions`."""

    template: list[str]
    read: Callable[[Path], object]
    check: Callable[[object], None]
    target: str = "input"
    companions: dict[str, str] = field(default_factory=dict)
    header: int = 0  # leading lines that are a header
    dup_is_error: bool = False  # repeating any data line must be rejected
    gzip: bool = False  # the reader takes `*.gz` files

    def lines(self) -> list[str]:
        return [_SLOT.sub(lambda m: m.group(2), t) for t in self.template]


_OBD_ITEMS = ",item_id,item_feature_0,item_feature_1\n0,0,-0.5,aa\n1,1,0.25,bb\n2,2,0.1,cc\n"
_OBD_LOG = [
    ",timestamp,item_id,position,click,propensity_score,user_feature_0,user-item_affinity_0",
    "0,2019-11-24 00:03:13.44+00:00,⟨item:1⟩,⟨position:1⟩,⟨click:0⟩,⟨propensity:0.5⟩,u,⟨f64:0.0⟩",
    "1,⟨iso-time:2019-11-24 00:04:00+00:00⟩,2,⟨position:3⟩,⟨click:1⟩,⟨propensity:0.25⟩,v,1.5",
]
_COAT_TEST = "0 1 0 0\n2 0 0 5\n0 0 3 0\n"
_COAT_TRAIN = "0 1 5 0\n3 0 2 0\n0 4 0 1\n"
_BEIR_FILES = {
    "corpus.jsonl": '{"_id": "d1", "text": "x"}\n{"_id": "d2", "title": "t", "text": "y"}\n',
    "queries.jsonl": '{"_id": "q1", "text": "a"}\n{"_id": "q2", "text": "b"}\n',
}


def _up(path: Path, n: int) -> Path:
    return path.parents[n - 1]


SPECS: dict[str, Spec] = {
    "trec-qrels": Spec(
        ["1 0 d1 ⟨grade:1⟩", "1 0 d2 ⟨grade:0⟩", "2 0 d1 ⟨grade:-1⟩"],
        read_qrels,
        _check_qrels,
        dup_is_error=True,
        gzip=True,
    ),
    "beir-qrels": Spec(
        ["query-id\tcorpus-id\tscore", "q1\td1\t⟨grade:1⟩", "q2\td2\t⟨grade:2⟩"],
        read_qrels,
        _check_qrels,
        header=1,
        dup_is_error=True,
        gzip=True,
    ),
    "trec-run": Spec(
        ["1 Q0 d1 1 ⟨f64:12.5⟩ sys", "1 Q0 d2 2 ⟨f64:-0.25⟩ sys", "2 Q0 d1 1 ⟨f64:3e-2⟩ sys"],
        read_run,
        _check_run,
        dup_is_error=True,
        gzip=True,
    ),
    "trec-topics": Spec(
        ["<top>", "<num> Number: 7", "<title> a title", "<desc> Description:", "words", "</top>"],
        read_topics,
        _check_texts,
        gzip=True,
    ),
    "trec-topics-desc": Spec(
        ["<top>", "<num> 7", "<title> t", "<desc> d", "</top>"],
        lambda p: read_topics(p, field="desc"),
        _check_texts,
        gzip=True,
    ),
    "tsv-topics": Spec(
        ["7\ta title", "8\tanother one"], read_topics, _check_texts, dup_is_error=True, gzip=True
    ),
    "beir-corpus": Spec(
        [
            '{"_id": "d1", "title": "t", "text": "x"}',
            '{"_id": "d2", "text": "y"}',
            '{"_id": 3, "text": "z"}',
        ],
        read_corpus_jsonl,
        _check_texts,
        dup_is_error=True,
        gzip=True,
    ),
    "beir-queries": Spec(
        ['{"_id": "q1", "text": "x"}', '{"_id": "q2", "text": "y"}'],
        read_queries_jsonl,
        _check_texts,
        dup_is_error=True,
        gzip=True,
    ),
    "beir-folder": Spec(
        ["query-id\tcorpus-id\tscore", "q1\td1\t⟨grade:1⟩", "q2\td2\t⟨grade:0⟩"],
        lambda p: load_beir(_up(p, 2), strict=True),
        _check_beir,
        target="qrels/test.tsv",
        companions=_BEIR_FILES,
        header=1,
        dup_is_error=True,
    ),
    "msmarco-collection": Spec(
        ["0\tfirst passage", "1\tsecond passage"],
        read_collection,
        _check_texts,
        dup_is_error=True,
        gzip=True,
    ),
    "msmarco-queries": Spec(
        ["5\twhat is x", "6\twhy y"], read_queries, _check_texts, dup_is_error=True, gzip=True
    ),
    "sha256sums": Spec(["a" * 64 + "  ./x/y.txt", "B" * 64 + " *z"], _read_sha256sums, _check_sums),
    "coat-ratings": Spec(
        # no slot on line 1: it sets the width, so a short line 1 is reported on line 2
        ["0 1 5 0", "⟨coat-rating:3⟩ 0 ⟨coat-rating:2⟩ 0", "0 4 0 ⟨coat-rating:1⟩"],
        lambda p: load_coat(p.parent),
        _check_coat,
        target="train.ascii",
        companions={"test.ascii": _COAT_TEST},
        dup_is_error=True,
    ),
    "coat-propensities": Spec(
        [
            "⟨propensity:0.5⟩ 0.25 1 ⟨propensity:1e-3⟩",
            "0.1 ⟨propensity:0.2⟩ 0.3 0.4",
            "1.0 0.9 0.8 ⟨propensity:7.5E-01⟩",
        ],
        lambda p: load_coat(p.parent),
        _check_coat,
        target="propensities.ascii",
        companions={"train.ascii": _COAT_TRAIN, "test.ascii": _COAT_TEST},
        dup_is_error=True,
    ),
    "yahoo-r3": Spec(
        ["1\t1\t⟨yahoo-rating:5⟩", "1\t3\t⟨yahoo-rating:2⟩", "2\t2\t4"],
        lambda p: load_yahoo_r3(p.parent),
        _check_yahoo,
        target="train.txt",
        companions={"test.txt": "1\t2\t1\n3\t3\t5\n"},
        dup_is_error=True,
    ),
    "movielens-100k": Spec(
        [
            "196\t242\t⟨ml-rating:3⟩\t⟨timestamp:881250949⟩",
            "186\t302\t⟨ml-rating:3.5⟩\t891717742",
            "22\t377\t1\t⟨timestamp:878887116⟩",
        ],
        lambda p: load_movielens("movielens-100k", p.parent),
        lambda log: _check_log(log, 0.5, 5),  # type: ignore[arg-type]
        target="u.data",
        dup_is_error=True,
    ),
    "movielens-1m": Spec(
        ["1::1193::⟨ml-rating:5⟩::978300760", "1::661::3::⟨timestamp:978302109⟩"],
        lambda p: load_movielens("movielens-1m", p.parent),
        lambda log: _check_log(log, 0.5, 5),  # type: ignore[arg-type]
        target="ratings.dat",
        dup_is_error=True,
    ),
    "ratings-csv": Spec(
        ["user,item,rating,timestamp", "u1,a,⟨f32:4⟩,⟨timestamp:1⟩", "u2,b,⟨f32:-1.5⟩,2"],
        lambda p: read_ratings(p, timestamp_col="timestamp"),
        lambda log: _check_log(log, -3.5e38, 3.5e38),  # type: ignore[arg-type]
        target="log.csv",
        header=1,
        dup_is_error=True,
    ),
    "obd-log": Spec(
        _OBD_LOG,
        lambda p: load_obd("random", "men", _up(p, 3)),
        _check_obd,
        target="random/men/men.csv",
        companions={"random/men/item_context.csv": _OBD_ITEMS},
        header=1,
    ),
    "obd-items": Spec(
        [
            ",item_id,item_feature_0,item_feature_1",
            "0,⟨item:0⟩,⟨f64:-0.5⟩,a",
            "1,1,0.25,b",
            "2,2,0,c",
        ],
        lambda p: load_obd("random", "men", _up(p, 3)),
        _check_obd,
        target="random/men/item_context.csv",
        companions={"random/men/men.csv": "\n".join(_SLOT.sub(r"\2", t) for t in _OBD_LOG)},
        header=1,
        dup_is_error=True,
    ),
    "svmlight": Spec(
        [
            "# LETOR-style",
            "⟨f64:2⟩ qid:10 1:⟨f32:0.5⟩ 3:1.25 # docid = GX01",
            "0 qid:10 2:⟨f32:-3⟩",
            "1 qid:7 1:1 2:2 3:3",
        ],
        read_svmlight,
        _check_ltr,
        gzip=True,
    ),
    "clicks-yandex": Spec(
        ["q1\ta,b,c : b , a , b ; q1\ta,c,b :; ", "q2\tx,y : z , y ;  q2\ty,x : "],
        read_yandex,
        _check_clicks,
        gzip=True,
    ),
    "clicks-tsv": Spec(
        [
            "# query\tdocs\tclicked_positions\ttimestamp\tdwell",
            "q1\ta,b,c\t⟨click-position:2⟩,1\t⟨f64-optional:1.5⟩\t⟨dwell:12.0⟩,0.25",
            "q2\td\t\t\t",
            "q1\tc,a\t⟨click-position:1⟩\t3\t",
        ],
        read_tsv,
        _check_clicks,
        gzip=True,
    ),
    "clicks-jsonl": Spec(
        [
            '{"query": "q1", "docs": ["a", "b", "c"], "clicks": [⟨json-position:3⟩, 1], '
            '"timestamp": ⟨json-time:1.5⟩, "dwell": [⟨json-dwell:12⟩, null]}',
            '{"query": 7, "docs": ["d"], "clicks": [], "timestamp": null}',
        ],
        read_jsonl,
        _check_clicks,
        gzip=True,
    ),
}
KINDS = sorted(SPECS)
GZIP_KINDS = [k for k in KINDS if SPECS[k].gzip]
COUNTS: dict[str, Counter[str]] = {k: Counter() for k in KINDS}
_COLUMNS = ["tried", "format_error", "accepted", "traceback", "broken_accepted"]


@pytest.fixture(scope="module", autouse=True)
def _print_counts(request: pytest.FixtureRequest) -> Iterator[None]:
    """Print the per-reader tally (past output capturing) when the module's tests are done."""
    yield
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is None or capture is None or not any(COUNTS.values()):
        return
    total = sum(COUNTS.values(), Counter())
    rows = [(kind, COUNTS[kind]) for kind in KINDS] + [("total", total)]
    with capture.global_and_fixture_disabled():
        reporter.write_line("")
        reporter.write_line(f"{'fuzz cases':<20}" + "".join(f"{c:>16}" for c in _COLUMNS))
        for name, row in rows:
            reporter.write_line(f"{name:<20}" + "".join(f"{row[c]:>16}" for c in _COLUMNS))


def _read_case(
    kind: str,
    data: bytes,
    suffix: str = "",
    expect: Literal["any", "error", "valid"] = "any",
    line: int | None = None,
) -> None:
    """Run one case: a FormatError, or data that passes the reader's checks.

    `expect="error"`: the input is broken and must raise (at `line` when given);
    `expect="valid"`: it must read.
    """
    spec, counts = SPECS[kind], COUNTS[kind]
    counts["tried"] += 1
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for rel, text in spec.companions.items():
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / rel).write_text(text, encoding="utf-8")
        path = root / (spec.target + suffix)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        try:
            result = spec.read(path)
        except FormatError as e:
            counts["format_error"] += 1
            assert expect != "valid", str(e)
            assert e.path is not None and Path(e.path).relative_to(root)
            if e.path == str(path) and not suffix:  # gzip: lines of the decompressed text
                assert e.line is None or 1 <= e.line <= data.count(b"\n") + 1
            if line is not None:
                assert (e.path, e.line) == (str(path), line), str(e)
            return
        except Exception:
            counts["traceback"] += 1
            raise
        if expect == "error":
            counts["broken_accepted"] += 1
            pytest.fail(f"{kind}: accepted broken input {data!r}")
        try:
            spec.check(result)
        except AssertionError:
            counts["broken_accepted"] += 1
            raise
        counts["accepted"] += 1


def _encode(lines: list[str], bom: bool = False, crlf: bool = False) -> bytes:
    text = ("\r\n" if crlf else "\n").join(lines) + "\n"
    return (b"\xef\xbb\xbf" if bom else b"") + text.encode("utf-8", "surrogatepass")


# --- every valid file reads, whatever its line endings, BOM and blank lines ----------------------
@pytest.mark.parametrize("kind", KINDS)
def test_valid_files_read(kind: str) -> None:
    spec = SPECS[kind]
    lines = spec.lines()
    padded = [*lines[: spec.header], "", *lines[spec.header :], "  "]
    for data in (_encode(lines), _encode(padded, bom=True, crlf=True)):
        _read_case(kind, data, expect="valid")
    if spec.gzip:
        _read_case(kind, gzip.compress(_encode(lines)), ".gz", expect="valid")


# --- inputs that must be rejected, at the right physical line ------------------------------------
def _variants(spec: Spec, lines: list[str], bad_line: int) -> Iterator[tuple[bytes, int]]:
    """(file bytes, physical line of `bad_line`) plain, and with BOM, CRLF and blank lines."""
    yield _encode(lines), bad_line + 1
    padded = [*lines[: spec.header], "", " \t", *lines[spec.header :]]
    shift = 2 if bad_line >= spec.header else 0
    yield _encode(padded, bom=True, crlf=True), bad_line + 1 + shift


@pytest.mark.parametrize("kind", [k for k in KINDS if _SLOT.search("".join(SPECS[k].template))])
def test_bad_numbers_always_raise(kind: str) -> None:
    """Every malformed number in every numeric slot: FormatError naming the slot's line."""
    spec = SPECS[kind]
    for i, template in enumerate(spec.template):
        for slot in _SLOT.finditer(template):
            for bad in BAD[slot.group(1)]:
                row = template[: slot.start()] + bad + template[slot.end() :]
                lines = spec.lines()
                lines[i] = _SLOT.sub(lambda m: m.group(2), row)
                for data, line in _variants(spec, lines, i):
                    _read_case(kind, data, expect="error", line=line)


@pytest.mark.parametrize("kind", KINDS)
def test_invalid_utf8_and_nul_always_raise(kind: str) -> None:
    """Undecodable bytes (or NUL) anywhere: FormatError naming that line."""
    lines = SPECS[kind].lines()
    for i, _text in enumerate(lines):
        raw = [t.encode("utf-8") for t in lines]
        for bad in _BAD_BYTES:
            cut = len(raw[i]) // 2
            broken = [*raw[:i], raw[i][:cut] + bad + raw[i][cut:], *raw[i + 1 :]]
            _read_case(kind, b"\n".join(broken) + b"\n", expect="error", line=i + 1)
            _read_case(
                kind, b"\xef\xbb\xbf" + b"\r\n".join(broken) + b"\r\n", expect="error", line=i + 1
            )


@pytest.mark.parametrize("kind", [k for k in KINDS if SPECS[k].dup_is_error])
def test_repeated_records_always_raise(kind: str) -> None:
    """Formats with unique ids (or one row per pair, or a fixed shape): a repeated line raises."""
    spec = SPECS[kind]
    lines = spec.lines()
    for i in range(spec.header, len(lines)):
        _read_case(kind, _encode([*lines[: i + 1], lines[i], *lines[i + 1 :]]), expect="error")


@pytest.mark.parametrize("kind", KINDS)
def test_empty_and_header_only_files_raise(kind: str) -> None:
    """No records: a clear FormatError (svmlight and sha256sums read as empty, as documented)."""
    spec = SPECS[kind]
    header = spec.lines()[: spec.header]
    for data in (b"", b"\n \n", _encode(header) if header else b"\xef\xbb\xbf"):
        _read_case(kind, data, expect="valid" if kind in ("svmlight", "sha256sums") else "error")


# --- random damage: FormatError or valid data, never anything else -----------------------------
JUNK = st.one_of(
    st.text(max_size=12),
    st.sampled_from(
        [
            *sorted({b for bads in BAD.values() for b in bads}),
            "\t",
            "\x00",
            "\r",
            "\ufeff",
            "\ud800",
            "{",
            "}",
            '"',
            "#",
            ",",
            ":",
            ";",
            "::",
            "<top>",
            "</top>",
            "<num>",
            "qid:",
        ]
    ),
)


@st.composite
def mutated(draw: st.DrawFn, kind: str) -> bytes:
    """A valid file for `kind` with one to three random edits to its lines."""
    lines = SPECS[kind].lines()
    for _ in range(draw(st.integers(1, 3))):
        i = draw(st.integers(0, len(lines) - 1))
        op = draw(
            st.sampled_from(
                ["insert", "replace-token", "drop-token", "add-token", "dup", "truncate", "blank"]
            )
        )
        sep = draw(st.sampled_from([" ", "\t", ",", ":"]))
        tokens = lines[i].split(sep)
        if op == "insert":
            pos = draw(st.integers(0, len(lines[i])))
            lines[i] = lines[i][:pos] + draw(JUNK) + lines[i][pos:]
        elif op == "replace-token":
            tokens[draw(st.integers(0, len(tokens) - 1))] = draw(JUNK)
            lines[i] = sep.join(tokens)
        elif op == "drop-token" and len(tokens) > 1:
            del tokens[draw(st.integers(0, len(tokens) - 1))]
            lines[i] = sep.join(tokens)
        elif op == "add-token":
            lines[i] = lines[i] + sep + draw(JUNK)
        elif op == "dup":
            lines.insert(i, lines[i])
        elif op == "truncate":
            lines[i] = lines[i][: draw(st.integers(0, len(lines[i])))]
        elif op == "blank":
            lines.insert(i, draw(st.sampled_from(["", " ", "\t", "\r"])))
    data = _encode(lines, bom=draw(st.booleans()), crlf=draw(st.booleans()))
    if draw(st.booleans()):
        pos = draw(st.integers(0, len(data)))
        data = data[:pos] + draw(st.binary(min_size=1, max_size=4)) + data[pos:]
    return data


@pytest.mark.parametrize("kind", KINDS)
@FUZZ
@given(st.data())
def test_mutated_valid_files(kind: str, data: st.DataObject) -> None:
    _read_case(kind, data.draw(mutated(kind)))


@pytest.mark.parametrize("kind", KINDS)
@FEW
@given(st.binary(max_size=300))
def test_random_bytes(kind: str, data: bytes) -> None:
    _read_case(kind, data)


@pytest.mark.parametrize("kind", GZIP_KINDS)
@FEW
@given(st.binary(max_size=200), st.booleans())
def test_random_bytes_gzip(kind: str, data: bytes, compress: bool) -> None:
    _read_case(kind, gzip.compress(data) if compress else data, ".gz")


@pytest.mark.parametrize("kind", GZIP_KINDS)
@FEW
@given(st.data())
def test_truncated_gzip(kind: str, draw: st.DataObject) -> None:
    blob = gzip.compress(_encode(SPECS[kind].lines()))
    cut = draw.draw(st.integers(1, len(blob) - 1))
    _read_case(kind, blob[:cut], ".gz", expect="error")


@settings(max_examples=60, deadline=None)
@given(
    st.sampled_from(["trec-qrels", "trec-run", "msmarco-collection", "msmarco-queries"]),
    st.integers(0, 2),
    st.integers(1, 3),
)
def test_wrong_column_count_always_raises(kind: str, row: int, delta: int) -> None:
    lines = SPECS[kind].lines()
    sep = " " if kind.startswith("trec") else "\t"
    row = min(row, len(lines) - 1)
    fields = lines[row].split(sep)
    bad = fields[:-1] if delta == 1 and len(fields) > 1 else fields + ["x"] * delta
    lines[row] = sep.join(bad)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "f"
        path.write_text("\n".join(lines) + "\n")
        with pytest.raises(FormatError, match="columns"):
            SPECS[kind].read(path)


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(["trec-qrels", "trec-run"]), st.text(min_size=1, max_size=8))
def test_non_numeric_value_always_raises(kind: str, token: str) -> None:
    token = token.replace(" ", "_").replace("\n", "_").replace("\r", "_")
    assume(token.split() == [token])
    pattern = (
        r"[+-]?[0-9]+"
        if kind == "trec-qrels"
        else r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?"
    )
    assume(not re.fullmatch(pattern, token, re.ASCII))
    line = f"1 0 d {token}" if kind == "trec-qrels" else f"1 Q0 d 1 {token} sys"
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "f"
        path.write_text(line + "\n", encoding="utf-8", errors="surrogatepass")
        with pytest.raises(FormatError):
            SPECS[kind].read(path)


# --- round trips over generated data ---------------------------------------------------------

trec_ids = st.text(
    alphabet=st.characters(blacklist_categories=("Cs", "Cc", "Zs", "Zl", "Zp")),
    min_size=1,
    max_size=8,
).filter(lambda s: s.split() == [s] and not s.startswith(("#", "\ufeff")))
finite = st.floats(allow_nan=False, allow_infinity=False)


@settings(max_examples=60, deadline=None)
@given(
    st.dictionaries(
        trec_ids,
        st.dictionaries(trec_ids, st.integers(-(2**31) + 1, 2**31 - 1), min_size=1),
        min_size=1,
    ),
    st.sampled_from(["trec", "beir"]),
)
def test_qrels_round_trip(data: dict, fmt: str) -> None:
    qrels = Qrels(data, "q")
    with tempfile.TemporaryDirectory() as tmp:
        write_qrels(qrels, Path(tmp) / "q.txt", fmt=fmt)  # type: ignore[arg-type]
        assert read_qrels(Path(tmp) / "q.txt", name="q") == qrels


@settings(max_examples=60, deadline=None)
@given(st.dictionaries(trec_ids, st.dictionaries(trec_ids, finite, min_size=1), min_size=1))
def test_run_round_trip(data: dict) -> None:
    run = Run(data, "sys")
    with tempfile.TemporaryDirectory() as tmp:
        write_run(run, Path(tmp) / "r.txt.gz")
        back = read_run(Path(tmp) / "r.txt.gz")
        assert back == run
        assert all(back.ranked(q) == run.ranked(q) for q in run)


any_text = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=30
)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(any_text.filter(lambda s: s.strip() != ""), any_text, any_text),
        max_size=8,
        unique_by=lambda t: t[0],
    )
)
def test_corpus_jsonl_round_trip(rows: list) -> None:
    assume(rows)
    corpus = Corpus([r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows], "c")
    with tempfile.TemporaryDirectory() as tmp:
        write_corpus_jsonl(corpus, Path(tmp) / "c.jsonl")
        assert read_corpus_jsonl(Path(tmp) / "c.jsonl", name="c") == corpus


tsv_text = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\t\r\n\x00"),
    max_size=20,
)
tsv_ids = tsv_text.filter(lambda s: s.strip() == s and s != "" and not s.startswith("\ufeff"))


@settings(max_examples=60, deadline=None)
@given(st.dictionaries(tsv_ids, tsv_text, min_size=1, max_size=6))
def test_tsv_topics_round_trip(data: dict) -> None:
    queries = Queries(list(data), list(data.values()), "t")
    assume(not queries.ids[0].lower().startswith("<top>"))
    with tempfile.TemporaryDirectory() as tmp:
        write_topics(queries, Path(tmp) / "t.tsv")
        assert read_topics(Path(tmp) / "t.tsv", name="t") == queries


# --- atomic writes -------------------------------------------------------------------------------


def test_failed_writes_leave_old_file_intact(tmp_path: Path) -> None:
    qrels_path = tmp_path / "qrels.txt"
    write_qrels(Qrels({"q1": {"d1": 1}}), qrels_path)
    before = qrels_path.read_bytes()
    with pytest.raises(
        RankloopError
    ):  # the second query's doc id cannot be written: fails mid-file
        write_qrels(Qrels({"q1": {"d1": 2}, "q2": {"bad id": 1}}), qrels_path)
    assert qrels_path.read_bytes() == before

    run_path = tmp_path / "run.txt.gz"
    write_run(Run({"q": {"a": 1.0}}, "old"), run_path)
    before = run_path.read_bytes()
    with pytest.raises(RankloopError):
        write_run(Run({"q": {"a": 2.0}, "r": {"b": float("inf")}}, "new"), run_path)
    assert run_path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["qrels.txt", "run.txt.gz"]  # no temp files left behind


def test_interrupted_corpus_write(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "corpus.jsonl"
    corpus = Corpus([str(i) for i in range(100)], [""] * 100, ["x"] * 100)
    write_corpus_jsonl(corpus, path)
    before = path.read_bytes()
    calls = {"n": 0}
    real_dumps = json.dumps

    def dying_dumps(obj: object, **kw: object) -> str:
        calls["n"] += 1
        if calls["n"] == 50:
            raise KeyboardInterrupt  # a kill half-way through the file
        return real_dumps(obj, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(beir_mod.json, "dumps", dying_dumps)
    with pytest.raises(KeyboardInterrupt):
        write_corpus_jsonl(
            Corpus(["new"] * 1 + [f"n{i}" for i in range(99)], [""] * 100, ["y"] * 100), path
        )
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["corpus.jsonl"]

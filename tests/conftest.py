"""Shared fixtures: a small BEIR folder with a judged train and test split (SciFact slices)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

_REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def scifact_dir() -> Path:
    """`$RANKLOOP_DATA/beir/scifact` (default ../shared/data); skip the test when it is absent."""
    return _scifact_root()


def _scifact_root() -> Path:
    value = os.environ.get("RANKLOOP_DATA", "").strip()
    root = (Path(value) if value else _REPO.parent / "shared" / "data") / "beir" / "scifact"
    if not (root / "corpus.jsonl").is_file():
        pytest.skip(f"SciFact not found under {root} (set RANKLOOP_DATA)")
    return root


@pytest.fixture(scope="session")
def coat_dir() -> Path:
    """The Coat folder of the data mirror (RANKLOOP_DATA, default ../shared/data); skip when absent."""
    value = os.environ.get("RANKLOOP_DATA", "").strip()
    root = Path(value) if value else _REPO.parent / "shared" / "data"
    if not (root / "recsys" / "coat" / "train.ascii").is_file():
        pytest.skip(f"Coat not found under {root} (set RANKLOOP_DATA)")
    return root / "recsys" / "coat"


@pytest.fixture(scope="session")
def tiny_beir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """25 train and 12 test SciFact queries over 150 documents (every judged one, then filler),
    written as a BEIR folder with qrels/train.tsv and qrels/test.tsv."""
    from rankloop.data.beir import load_beir

    root = _scifact_root()
    splits = {s: load_beir(root, split=s) for s in ("train", "test")}
    keep = {"train": splits["train"].queries.ids[:25], "test": splits["test"].queries.ids[:12]}
    judged = list(dict.fromkeys(
        d for s, ids in keep.items() for q in ids for d in splits[s].qrels[q]))  # fmt: skip
    corpus = splits["test"].corpus
    filler = [d for d in corpus.ids if d not in set(judged)][: 150 - len(judged)]
    docs = corpus.subset(judged + filler)
    out = tmp_path_factory.mktemp("beir") / "scifact-tiny"
    (out / "qrels").mkdir(parents=True)
    with open(out / "corpus.jsonl", "w", encoding="utf-8") as fh:
        for i, t, x in zip(docs.ids, docs.titles, docs.texts):
            fh.write(json.dumps({"_id": i, "title": t, "text": x}) + "\n")
    with open(out / "queries.jsonl", "w", encoding="utf-8") as fh:
        for s, ids in keep.items():
            text = dict(splits[s].queries.items())
            for q in ids:
                fh.write(json.dumps({"_id": q, "text": text[q]}) + "\n")
    for s, ids in keep.items():
        with open(out / "qrels" / f"{s}.tsv", "w", encoding="utf-8") as fh:
            fh.write("query-id\tcorpus-id\tscore\n")
            for q in ids:
                for d, g in splits[s].qrels[q].items():
                    fh.write(f"{q}\t{d}\t{g}\n")
    return out

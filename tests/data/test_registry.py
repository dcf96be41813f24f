"""Dataset registry: manifest validity, mirror/cache resolution, downloads (local HTTP), errors, CLI."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import time
import warnings
import zipfile
from pathlib import Path

import pytest

import rankloop.cli
import rankloop.data as rd
from rankloop.data import registry
from rankloop.data.registry import Registry, UnverifiedDownloadWarning
from rankloop.errors import ConfigError, DataNotAvailableError, RankloopError


def cli_main(argv: list[str]) -> int:
    """`rankloop ARGV` with only the data commands registered (other packages land separately)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(rankloop.cli, "_COMMAND_MODULES", ("rankloop.data.cli",))
        return rankloop.cli.main(argv)


# --- the packaged manifest ------------------------------------------------------------------


def test_manifest_covers_required_names() -> None:
    names = {d.name for d in registry.list_datasets()}
    required = {
        "scifact",
        "nfcorpus",
        "arguana",
        "fiqa",
        "scidocs",
        "trec-covid",
        "quora",
        "nq",
        "hotpotqa",
    }
    required |= {"msmarco-passage", "dl19-passage", "dl20-passage", "msmarco-dl19-mini"}
    assert required <= names


def test_beir_entries_are_checksummed_zips() -> None:
    for d in registry.list_datasets():
        if d.kind == "beir" and not d.local_only:
            (f,) = d.files
            assert f.unpack == "zip" and f.md5 is not None and len(f.md5) == 32
            assert (
                f.urls[0]
                == f"https://public.ukp.informatik.tu-darmstadt.de/thakur/BEIR/datasets/{d.name}.zip"
            )
    assert registry.info("nfcorpus").files[0].md5 == "a89dba18a62ef92f7d323ec890a0d38d"
    assert (
        registry.info("msmarco-dl19-mini").local_only
        and not registry.info("msmarco-dl19-mini").files
    )


def test_unknown_name_suggests() -> None:
    with pytest.raises(RankloopError, match="did you mean scifact"):
        registry.info("scifakt")


@pytest.mark.parametrize(
    ("entry", "needle"),
    [
        ({"kind": "beir"}, "'description' must be"),
        (
            {"kind": "nope", "description": "d", "homepage": "h", "licence": "l", "local": "x"},
            "kind must be",
        ),
        (
            {
                "kind": "trec",
                "description": "d",
                "homepage": "h",
                "licence": "l",
                "local": "../x",
                "local_only": "r",
                "expect": ["a"],
            },
            "inside the dataset folder",
        ),
        (
            {"kind": "trec", "description": "d", "homepage": "h", "licence": "l", "local": "x"},
            "either 'files'",
        ),
        (
            {
                "kind": "trec",
                "description": "d",
                "homepage": "h",
                "licence": "l",
                "local": "x",
                "files": [{"urls": ["http://h/a"], "md5": "XYZ", "path": "a"}],
            },
            "md5 must be",
        ),
        (
            {
                "kind": "trec",
                "description": "d",
                "homepage": "h",
                "licence": "l",
                "local": "x",
                "files": [{"urls": ["http://h/a.zip"], "unpack": "zip"}],
            },
            "needs a 'marker'",
        ),
    ],
)
def test_manifest_validation(entry: dict, needle: str) -> None:
    text = json.dumps({"schema": 1, "datasets": {"bad": entry}})
    with pytest.raises(ConfigError, match=needle):
        Registry.from_yaml(text)


# --- the real mirror -------------------------------------------------------------------------


def test_load_real_sets_through_registry(mirror: Path) -> None:
    scifact = rd.load("scifact")
    assert (len(scifact.corpus), len(scifact.queries), scifact.qrels.n_judgements()) == (
        5183,
        300,
        339,
    )
    assert scifact.name == "scifact"
    nfcorpus = rd.load("nfcorpus")
    assert (len(nfcorpus.corpus), len(nfcorpus.queries)) == (3633, 323)
    mini = rd.load("msmarco-dl19-mini", split=None)
    assert (len(mini.corpus), len(mini.queries)) == (5000, 50)
    assert registry.locate("scifact") == (mirror / "beir" / "scifact", "mirror")


def test_fetch_file_and_load_kind_check(mirror: Path) -> None:
    assert rd.fetch_file("dl19-passage", "qrels") == mirror / "trec" / "qrels.dl19-passage.txt"
    assert rd.fetch_file("trec:topics.dl20") == mirror / "trec" / "topics.dl20.txt"
    with pytest.raises(RankloopError, match="pass one of: qrels, topics"):
        rd.fetch_file("dl19-passage")
    with pytest.raises(RankloopError, match="BEIR-layout"):
        rd.load("dl19-passage")


def test_verify_mirror_against_manifest_and_sha256sums(mirror: Path) -> None:
    checks = registry.verify("scifact")
    assert {c.path.name for c in checks} >= {"corpus.jsonl", "queries.jsonl", "test.tsv"}
    assert all(c.ok and c.source.endswith("SHA256SUMS") for c in checks)
    dl19 = registry.verify("dl19-passage")
    assert [c.path.name for c in dl19] == ["qrels.dl19-passage.txt", "topics.dl19-passage.txt"]
    assert all(c.ok and c.source == "manifest" for c in dl19)


def test_verify_detects_a_changed_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    trec = tmp_path / "mirror" / "trec"
    trec.mkdir(parents=True)
    (trec / "qrels.dl19-passage.txt").write_text("1 0 d 1\n")
    (trec / "topics.dl19-passage.txt").write_text("1\tq\n")
    monkeypatch.setenv("RANKLOOP_DATA", str(tmp_path / "mirror"))
    checks = registry.verify("dl19-passage")
    assert checks and not any(c.ok for c in checks)
    assert cli_main(["data", "fetch", "dl19-passage", "--verify"]) == 2


def test_cli(mirror: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["data", "list"]) == 0
    out = capsys.readouterr().out
    assert "scifact" in out and "mirror" in out and "msmarco-passage" in out
    assert cli_main(["data", "info", "nfcorpus", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert (
        info["files"][0]["md5"] == "a89dba18a62ef92f7d323ec890a0d38d" and info["status"] == "mirror"
    )
    assert cli_main(["data", "info", "coat"]) == 0
    assert "no checksum (unverified)" in capsys.readouterr().out
    assert cli_main(["data", "fetch", "scifact", "--verify"]) == 0
    assert capsys.readouterr().out.strip().endswith(str(mirror / "beir" / "scifact"))
    assert cli_main(["data", "info", "no-such-set"]) == 2


# --- downloads (offline: a local HTTP server, a hung server, an unroutable host) -------------


def _zip_bytes(files: dict[str, str]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, text in files.items():
            zf.writestr(name, text)
    return buf.getvalue()


def _tar_bytes(files: dict[str, str]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name, text in files.items():
            data = text.encode()
            member = tarfile.TarInfo(name)
            member.size = len(data)
            tf.addfile(member, io.BytesIO(data))
    return buf.getvalue()


TINY = {
    "tiny/corpus.jsonl": '{"_id": "d1", "title": "", "text": "hello"}\n',
    "tiny/queries.jsonl": '{"_id": "q1", "text": "hi"}\n',
    "tiny/qrels/test.tsv": "query-id\tcorpus-id\tscore\nq1\td1\t1\n",
}


def _registry(entries: dict) -> Registry:
    base = {"kind": "beir", "description": "d", "homepage": "h", "licence": "l"}
    return Registry.from_yaml(
        json.dumps({"schema": 1, "datasets": {n: {**base, **e} for n, e in entries.items()}})
    )


def _beir_entry(url: str, md5: str | None, unpack: str = "zip") -> dict:
    return {
        "local": "beir/tiny",
        "expect": ["corpus.jsonl", "queries.jsonl", "qrels/test.tsv"],
        "files": [{"urls": [url], "md5": md5, "unpack": unpack, "marker": "corpus.jsonl"}],
    }


@pytest.mark.parametrize("unpack", ["zip", "tar"])
def test_download_verify_unpack_and_load(
    offline_env: Path, http_root: tuple[str, Path], unpack: str
) -> None:
    base, www = http_root
    payload = _zip_bytes(TINY) if unpack == "zip" else _tar_bytes(TINY)
    name = "tiny.zip" if unpack == "zip" else "tiny.tar.gz"
    (www / name).write_bytes(payload)
    reg = _registry(
        {"tiny": _beir_entry(f"{base}/{name}", hashlib.md5(payload).hexdigest(), unpack)}
    )
    path = reg.fetch("tiny", timeout=5, progressbar=False)
    assert path == offline_env / "beir" / "tiny"
    assert sorted(p.name for p in path.iterdir()) == ["corpus.jsonl", "qrels", "queries.jsonl"]
    assert not any((offline_env / "_downloads").iterdir())  # archive and scratch folder removed
    ds = reg.load("tiny")
    assert ds.queries.ids == ["q1"] and ds.name == "tiny"
    (www / name).unlink()  # a second fetch is served from the cache
    assert reg.fetch("tiny", timeout=5, progressbar=False) == path


def test_checksum_mismatch_is_reported(offline_env: Path, http_root: tuple[str, Path]) -> None:
    base, www = http_root
    (www / "tiny.zip").write_bytes(_zip_bytes(TINY))
    reg = _registry({"tiny": _beir_entry(f"{base}/tiny.zip", "0" * 32)})
    with pytest.raises(
        DataNotAvailableError, match=r"(?s)does not match the known hash.*RANKLOOP_DATA"
    ):
        reg.fetch("tiny", timeout=5, progressbar=False)
    assert not (offline_env / "beir" / "tiny").exists()


def test_plain_files_mirrors_and_unverified_warning(
    offline_env: Path, http_root: tuple[str, Path]
) -> None:
    base, www = http_root
    (www / "qrels.txt").write_text("1 0 d1 1\n")
    (www / "topics.txt").write_text("1\tquery\n")
    qrels_md5 = hashlib.md5(b"1 0 d1 1\n").hexdigest()
    entry = {
        "kind": "trec",
        "local": "trec",
        "files": [
            # the first mirror is dead; the second serves the file
            {
                "role": "qrels",
                "path": "q.txt",
                "urls": ["http://127.0.0.1:9/x", f"{base}/qrels.txt"],
                "md5": qrels_md5,
            },
            {
                "role": "topics",
                "path": "sub/t.txt",
                "urls": [f"{base}/topics.txt"],
                "md5": None,
                "sha256": None,
            },
        ],
    }
    reg = _registry({"pair": entry})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        qrels_path = reg.fetch_file("pair", "qrels", timeout=5)
    assert any(
        issubclass(w.category, UnverifiedDownloadWarning) and "topics.txt" in str(w.message)
        for w in caught
    )
    assert qrels_path.read_text() == "1 0 d1 1\n"
    assert (offline_env / "trec" / "sub" / "t.txt").read_text() == "1\tquery\n"


def test_no_network_error_names_dataset_url_and_variable(offline_env: Path) -> None:
    url = "http://rankloop-registry-test.invalid/tiny.zip"
    reg = _registry({"tiny": _beir_entry(url, "0" * 32)})
    start = time.monotonic()
    with pytest.raises(DataNotAvailableError) as e:
        reg.fetch("tiny", timeout=2, progressbar=False)
    assert time.monotonic() - start < 10
    msg = str(e.value)
    assert "'tiny'" in msg and url in msg and "RANKLOOP_DATA" in msg and "beir/tiny/" in msg


def test_hung_server_times_out(offline_env: Path, silent_server: str) -> None:
    reg = _registry({"tiny": _beir_entry(silent_server, "0" * 32)})
    start = time.monotonic()
    with pytest.raises(DataNotAvailableError, match=r"(?i)timed? ?out"):
        reg.fetch("tiny", timeout=0.5, progressbar=False)
    assert time.monotonic() - start < 10


def test_local_only_dataset_without_mirror(offline_env: Path) -> None:
    with pytest.raises(
        DataNotAvailableError,
        match=r"(?s)msmarco-dl19-mini.*no download.*RANKLOOP_DATA.*msmarco/dl19-mini/",
    ):
        registry.fetch("msmarco-dl19-mini")
    assert cli_main(["data", "fetch", "msmarco-dl19-mini"]) == 2


def test_mirror_wins_over_cache(mirror: Path, tmp_path: Path) -> None:
    cached = tmp_path / "cache" / "beir" / "scifact"
    for rel in ("corpus.jsonl", "queries.jsonl", "qrels/test.tsv"):
        (cached / rel).parent.mkdir(parents=True, exist_ok=True)
        (cached / rel).write_text("")
    assert registry.fetch("scifact") == mirror / "beir" / "scifact"

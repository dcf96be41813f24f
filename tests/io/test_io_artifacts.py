"""Artefact directories: saves never delete what is not theirs, loads verify every byte, and a
save interrupted between its two renames is recovered (on-disk states built by hand)."""

from __future__ import annotations

import functools
import json
import os
import shutil
import warnings
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from rankloop.embed import MultiVectorIndex, TokenEmbeddings, VectorIndex
from rankloop.errors import IndexCorruptError, RankloopError
from rankloop.io import MANIFEST, atomic_dir, file_sha256
from rankloop.retrieval.dense import DenseRetriever

DIM = 8


def _dead_pid() -> int:
    """A pid no process can have (above the kernel's pid_max)."""
    try:
        return int(Path("/proc/sys/kernel/pid_max").read_text()) + 1
    except OSError:
        return 4_194_305  # above the largest pid_max Linux allows


DEAD = _dead_pid()


def _index(seed: int, n: int = 40) -> VectorIndex:
    index = VectorIndex(DIM, "Flat")
    x = np.random.default_rng(seed).normal(size=(n, DIM)).astype(np.float32)
    index.add([f"s{seed}-{i}" for i in range(n)], x)
    return index


def _multivector(seed: int) -> MultiVectorIndex:
    rng = np.random.default_rng(seed)
    lengths = [3, 0, 5, 2]
    v = rng.normal(size=(sum(lengths), DIM)).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    tokens = TokenEmbeddings(
        v,
        rng.integers(0, 20, len(v)).astype(np.int32),
        np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
    )
    index = MultiVectorIndex(DIM)
    index.add([f"s{seed}-{i}" for i in range(len(lengths))], tokens)
    return index


ENCODER: Any = SimpleNamespace(
    dim=DIM, name="stub/model", fingerprint="stub@0", max_length=16, backend="torch"
)


def _dense(seed: int) -> DenseRetriever:
    return DenseRetriever(ENCODER, _index(seed))


def _seed_of(path: Path, **kwargs: Any) -> int:
    """Which seed's VectorIndex is saved at `path` (loading it, with its checks)."""
    return int(VectorIndex.load(path, **kwargs).ids[0].split("-")[0][1:])


def _lol_save(path: Path, overwrite: bool) -> None:
    pytest.importorskip("torch")
    from rankloop.prf.lol import LoL, LoLConfig

    LoL(LoLConfig(dim=DIM, heads=2, hidden=8)).save(path, overwrite=overwrite)


SAVES = {
    "VectorIndex": lambda p, o: _index(1).save(p, overwrite=o),
    "MultiVectorIndex": lambda p, o: _multivector(1).save(p, overwrite=o),
    # what `rankloop index build --kind dense --out PATH` calls
    "dense index": lambda p, o: _dense(1).save(p, overwrite=o, corpus="c", n_docs=40),
    "LoL model": _lol_save,
}


def _hidden(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


# -- (a) a save never deletes what is not a rankloop artefact -----------------------------------
@pytest.mark.parametrize("kind", list(SAVES))
def test_save_refuses_a_folder_of_user_files(tmp_path: Path, kind: str) -> None:
    notes = tmp_path / "notes"
    (notes / "sub").mkdir(parents=True)
    (notes / "todo.txt").write_text("mine")
    (notes / "sub" / "a.md").write_text("also mine")
    for overwrite in (False, True):
        with pytest.raises(
            RankloopError, match=r"notes is not a rankloop artefact.*sub, todo\.txt"
        ):
            SAVES[kind](notes, overwrite)
    assert (notes / "todo.txt").read_text() == "mine"
    assert (notes / "sub" / "a.md").read_text() == "also mine"
    assert _hidden(tmp_path) == []  # refused before any work: no temporary directory either


def test_save_refuses_a_file_or_a_symlink(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("data")
    with pytest.raises(RankloopError, match="f is a file"):
        _index(1).save(tmp_path / "f", overwrite=True)
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    with pytest.raises(RankloopError, match="link is a symbolic link"):
        _index(1).save(tmp_path / "link")
    assert (tmp_path / "f").read_text() == "data" and (tmp_path / "link").is_symlink()


def test_what_a_save_may_replace(tmp_path: Path) -> None:
    path = tmp_path / "idx"
    path.mkdir()
    _index(1).save(path)  # an empty folder
    assert _seed_of(path) == 1
    _index(2).save(path)  # the same kind
    assert _seed_of(path) == 2
    manifest = json.loads((path / MANIFEST).read_text())
    assert manifest["kind"] == "VectorIndex" and manifest["version"] == 1
    assert set(manifest["files"]) == {"index.faiss", "vectors.npy", "ids.json", "meta.json"}
    assert manifest["files"]["vectors.npy"]["sha256"] == file_sha256(path / "vectors.npy")
    # another kind of rankloop artefact only with overwrite=True
    with pytest.raises(RankloopError, match="holds a rankloop VectorIndex, not a dense index"):
        _dense(3).save(path)
    assert _seed_of(path) == 2
    _dense(3).save(path, overwrite=True)
    assert DenseRetriever.load(path, encoder=ENCODER).index.ids[0] == "s3-0"
    with pytest.raises(RankloopError, match="holds a rankloop dense index, not a VectorIndex"):
        VectorIndex.load(path)
    assert _hidden(tmp_path) == []


# -- indexes saved before manifests ---------------------------------------------------------------
def _make_legacy(directory: Path) -> None:
    """Turn a saved index into what rankloop wrote before manifests: no rankloop.json, and a
    SHA-256 per file in every meta.json."""
    for manifest in directory.rglob(MANIFEST):
        manifest.unlink()
    for meta_path in directory.rglob("meta.json"):
        meta = json.loads(meta_path.read_text())
        for name, rec in meta["files"].items():
            rec["sha256"] = file_sha256(meta_path.parent / name)
        meta_path.write_text(json.dumps(meta))


def test_legacy_indexes_load_verify_and_can_be_replaced(tmp_path: Path) -> None:
    path = tmp_path / "idx"
    _index(1).save(path)
    _make_legacy(path)
    assert _seed_of(path) == 1
    vectors = path / "vectors.npy"
    raw = bytearray(vectors.read_bytes())
    raw[-3] ^= 1
    vectors.write_bytes(bytes(raw))
    with pytest.raises(IndexCorruptError, match=r"vectors\.npy: SHA-256 does not match"):
        VectorIndex.load(path)
    _index(2).save(path)  # a pre-manifest VectorIndex is a rankloop artefact: replaced
    assert _seed_of(path) == 2 and (path / MANIFEST).is_file()

    dense = tmp_path / "dense"
    _dense(3).save(dense)
    _make_legacy(dense)
    assert DenseRetriever.load(dense, encoder=ENCODER).index.ids[0] == "s3-0"
    _dense(4).save(dense)
    assert DenseRetriever.load(dense, encoder=ENCODER).index.ids[0] == "s4-0"
    # a pre-manifest index of another kind is not recognised: never replaced
    _multivector(1).save(tmp_path / "mv")
    _make_legacy(tmp_path / "mv")
    with pytest.raises(RankloopError, match="not a rankloop artefact"):
        _index(5).save(tmp_path / "mv", overwrite=True)
    assert MultiVectorIndex.load(tmp_path / "mv").doc_ids[0] == "s1-0"


def test_a_removed_manifest_is_not_a_silent_downgrade(tmp_path: Path) -> None:
    _index(1).save(tmp_path / "idx")
    (tmp_path / "idx" / MANIFEST).unlink()
    with pytest.raises(IndexCorruptError, match=r"rankloop\.json is missing"):
        VectorIndex.load(tmp_path / "idx")
    assert _seed_of(tmp_path / "idx", verify=False) == 1


# -- (c) a flipped byte anywhere is caught on load ------------------------------------------------
def _flip(path: Path, pos: int) -> bytes:
    raw = path.read_bytes()
    damaged = bytearray(raw)
    damaged[pos] ^= 0x01  # a single bit: the smallest possible damage
    path.write_bytes(bytes(damaged))
    return raw


def _positions(size: int, rng: np.random.Generator, every: bool) -> list[int]:
    if every:
        return list(range(size))
    return sorted({0, size // 2, size - 1, *rng.integers(0, size, 5).tolist()})


@pytest.mark.parametrize("kind", ["dense index", "MultiVectorIndex"])
def test_a_flipped_bit_anywhere_is_caught(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "art"
    if kind == "dense index":
        _dense(1).save(path)
        load: Any = functools.partial(DenseRetriever.load, path, encoder=ENCODER)
    else:
        _multivector(1).save(path)
        load = functools.partial(MultiVectorIndex.load, path)
    rng = np.random.default_rng(0)
    files = sorted(p for p in path.rglob("*") if p.is_file())
    assert {p.name for p in files} >= {MANIFEST, "index.faiss", "vectors.npy", "meta.json"}
    checked = 0
    for file in files:
        for pos in _positions(file.stat().st_size, rng, every=file.name == MANIFEST):
            raw = _flip(file, pos)
            with pytest.raises(IndexCorruptError) as err:
                load()
            assert str(file) in str(err.value), (file, pos, str(err.value))
            file.write_bytes(raw)
            checked += 1
    load()  # every byte restored: loads again
    assert checked > 500


def test_verify_false_skips_hashes_but_not_sizes(tmp_path: Path) -> None:
    path = tmp_path / "idx"
    _index(1).save(path)
    ids = path / "ids.json"
    ids.write_text(ids.read_text().replace('"s1-7"', '"s1-8"', 1))
    with pytest.raises(IndexCorruptError, match=r"ids\.json: SHA-256 does not match"):
        VectorIndex.load(path)
    with pytest.raises(IndexCorruptError, match="unique strings"):  # the opt-out: no hashes
        VectorIndex.load(path, verify=False)
    ids.write_text(ids.read_text()[:-4])
    with pytest.raises(IndexCorruptError, match=r"ids\.json: \d+ bytes, expected"):
        VectorIndex.load(path, verify=False)


# -- (d) recovering from a save killed between its renames ----------------------------------------
def _copy(tmp_path: Path, seed: int, name: str, save: Any = None) -> Path:
    """A complete saved index of `seed`, moved to the hidden name `name` beside "idx"."""
    staging = tmp_path / "staging"
    (save or (lambda p: _index(seed).save(p)))(staging)
    return staging.rename(tmp_path / name)


def _load_warns(load: Any, match: str) -> Any:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = load()
    assert any(match in str(w.message) for w in caught), [str(w.message) for w in caught]
    return out


def test_killed_between_renames_restores_the_new_copy(tmp_path: Path) -> None:
    # save(2) over idx(1): idx moved to .old, killed before .tmp took its place
    _copy(tmp_path, 1, f".idx.old-{DEAD}-abc123")
    _copy(tmp_path, 2, f".idx.tmp-{DEAD}-abc123")
    index = _load_warns(
        lambda: VectorIndex.load(tmp_path / "idx"), "restored the new copy its save had finished"
    )
    assert index.ids[0] == "s2-0"
    assert sorted(os.listdir(tmp_path)) == ["idx"]


@pytest.mark.parametrize("damage", ["no manifest", "truncated file"])
def test_an_incomplete_new_copy_falls_back_to_the_old_one(tmp_path: Path, damage: str) -> None:
    _copy(tmp_path, 1, f".idx.old-{DEAD}-abc123")
    new = _copy(tmp_path, 2, f".idx.tmp-{DEAD}-abc123")
    if damage == "no manifest":
        (new / MANIFEST).unlink()
    else:
        (new / "vectors.npy").write_bytes(b"\x93NUMPY")
    _load_warns(lambda: VectorIndex.load(tmp_path / "idx"), "restored the previous copy")
    assert _seed_of(tmp_path / "idx") == 1
    assert sorted(os.listdir(tmp_path)) == ["idx"]


def test_a_save_recovers_then_replaces(tmp_path: Path) -> None:
    _copy(tmp_path, 1, f".idx.old-{DEAD}-abc123")
    _copy(tmp_path, 2, f".idx.tmp-{DEAD}-abc123")
    _load_warns(lambda: _index(3).save(tmp_path / "idx"), "interrupted save")
    assert _seed_of(tmp_path / "idx") == 3
    assert sorted(os.listdir(tmp_path)) == ["idx"]


def test_a_retriever_directory_is_recovered_too(tmp_path: Path) -> None:
    _copy(tmp_path, 1, f".dense.old-{DEAD}-x1", lambda p: _dense(1).save(p))
    _copy(tmp_path, 2, f".dense.tmp-{DEAD}-x1", lambda p: _dense(2).save(p))
    got = _load_warns(lambda: DenseRetriever.load(tmp_path / "dense", encoder=ENCODER), "new copy")
    assert got.index.ids[0] == "s2-0" and sorted(os.listdir(tmp_path)) == ["dense"]


def test_leftovers_of_dead_saves_are_removed_and_live_ones_kept(tmp_path: Path) -> None:
    _index(1).save(tmp_path / "idx")
    partial = tmp_path / f".idx.tmp-{DEAD}-p1"
    partial.mkdir()
    (partial / "index.faiss").write_bytes(b"half")
    _copy(tmp_path, 0, f".idx.old-{DEAD}-p2")  # a previous copy whose removal was cut short
    live = _copy(tmp_path, 5, f".idx.tmp-{os.getpid()}-p3")  # a save still running
    other = tmp_path / f".idxx.tmp-{DEAD}-p4"  # another target's: not ours to touch
    other.mkdir()
    assert _seed_of(tmp_path / "idx") == 1
    assert sorted(os.listdir(tmp_path)) == sorted(["idx", live.name, other.name])
    shutil.rmtree(live)
    (tmp_path / f".idx.old-{DEAD}-p5").mkdir()
    _index(2).save(tmp_path / "idx")  # the next save cleans up too
    assert sorted(os.listdir(tmp_path)) == sorted(["idx", other.name])


def test_nothing_is_restored_from_a_live_save(tmp_path: Path) -> None:
    live = _copy(tmp_path, 2, f".idx.tmp-{os.getpid()}-p1")
    with pytest.raises(RankloopError, match="no index"):
        VectorIndex.load(tmp_path / "idx")
    assert live.is_dir()


def test_leftover_of_the_previous_rankloop_is_recovered(tmp_path: Path) -> None:
    """Before manifests, a kill between the renames left `.NAME.old.PID` and lost NAME."""
    old = _copy(tmp_path, 1, "staged")
    _make_legacy(old)
    old.rename(tmp_path / f".idx.old.{DEAD}")
    _load_warns(lambda: VectorIndex.load(tmp_path / "idx"), "restored the previous copy")
    assert _seed_of(tmp_path / "idx") == 1 and sorted(os.listdir(tmp_path)) == ["idx"]


def test_plain_directories_swap_safely_without_a_manifest(tmp_path: Path) -> None:
    """`atomic_dir(path)` without a kind (datasets, models of other libraries): no manifest, a
    non-empty target is replaced only with overwrite=True, and a kill between the renames is
    repaired by the next save."""
    target = tmp_path / "plain"
    with atomic_dir(target) as tmp:
        (tmp / "a.txt").write_text("one")
    assert sorted(os.listdir(target)) == ["a.txt"]
    target.rename(tmp_path / f".plain.old-{DEAD}-k1")  # killed between the renames
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(RankloopError, match="not empty; refusing"), atomic_dir(target):
            pass
        with atomic_dir(target, overwrite=True) as tmp:
            assert (target / "a.txt").read_text() == "one"  # restored before the new save
            (tmp / "b.txt").write_text("two")
    assert any("restored the previous copy" in str(w.message) for w in caught)
    assert sorted(os.listdir(target)) == ["b.txt"] and sorted(os.listdir(tmp_path)) == ["plain"]

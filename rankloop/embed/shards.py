"""Corpus embeddings written as resumable shards, for collections that do not fit in memory.

`encode_shards(source, encoder, folder)` encodes a document source in fixed row ranges of
`shard_size` documents and writes each range as one shard (``shard-00000.ids.json`` and
``shard-00000.npy``, each replaced atomically, the vectors last). A killed run leaves only
whole shards, and the next call with the same source, model and shard size encodes just the
missing ones; a folder made by another source, model or shard size is refused, never mixed.
With Ray active (`rankloop.scale.using_ray`) the missing shards are encoded by Ray Data
``map_batches`` over an actor pool, one model per actor; the driver writes the shards, so
only the driver needs the folder.

Sources: `CorpusSource` (a `Corpus` in memory) and `TsvCollection` (an MS MARCO-style
``id<TAB>text`` file, read by byte offsets so it is never held in memory).
`rankloop.retrieval.dense.DenseRetriever.build_from_shards` builds an index from the shards.
"""

from __future__ import annotations

import array
import hashlib
import json
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from tqdm.auto import tqdm

from rankloop.data.types import Corpus
from rankloop.embed.encoders import Encoder
from rankloop.errors import FormatError, RankloopError
from rankloop.io import atomic_write

FORMAT = "rankloop.EmbeddingShards/1"
MANIFEST = "shards.json"
DEFAULT_SHARD_SIZE = 10_000
_OFFSET_EVERY = 1_000  # TsvCollection keeps the byte offset of every 1,000th line


class DocSource(Protocol):
    """Documents addressable by row range: what `encode_shards` reads."""

    name: str

    def __len__(self) -> int: ...

    def read(self, start: int, stop: int) -> tuple[list[str], list[str]]:
        """(ids, texts to encode) of rows [start, stop)."""
        ...

    def describe(self) -> dict[str, Any]:
        """What identifies the source's content (a shards folder is tied to it)."""
        ...


@dataclass
class CorpusSource:
    """A `Corpus` in memory; the text of a document is `Corpus.doc_texts`' (title + text)."""

    corpus: Corpus
    name: str = ""

    def __post_init__(self) -> None:
        self.name = self.name or self.corpus.name

    def __len__(self) -> int:
        return len(self.corpus)

    def read(self, start: int, stop: int) -> tuple[list[str], list[str]]:
        """(ids, title + " " + text) of rows [start, stop)."""
        c = self.corpus
        texts = [(t + " " + x).strip() for t, x in zip(c.titles[start:stop], c.texts[start:stop])]
        return list(c.ids[start:stop]), texts

    def describe(self) -> dict[str, Any]:
        """The corpus checksum (ids, titles, texts) and size."""
        return {"kind": "corpus", "checksum": self.corpus.checksum(), "n_docs": len(self.corpus)}


@dataclass
class TsvCollection:
    """An ``id<TAB>text`` file, one document per line (MS MARCO's collection.tsv), read by row
    range without loading it; the constructor scans it once (SHA-256, line count, offsets)
    and fails on the first malformed line with the file name and line number."""

    path: Path
    name: str = ""
    _offsets: np.ndarray = field(init=False, repr=False)
    _n: int = field(init=False, repr=False)
    _sha256: str = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.path = Path(self.path)
        self.name = self.name or self.path.stem
        if self.path.suffix == ".gz":
            raise RankloopError(
                f"{self.path}: a gzipped collection cannot be read by row range; "
                f"decompress it first (gunzip -k {self.path.name})"
            )
        if not self.path.is_file():
            raise RankloopError(f"collection file not found: {self.path}")
        self._scan()

    def _scan(self) -> None:
        """One pass: hash, count lines, keep every `_OFFSET_EVERY`-th line's byte offset."""
        h = hashlib.sha256()
        offsets: list[int] = []
        keys = array.array("q")  # a hash per id: duplicates found in 8 bytes a document
        n = pos = 0
        size = self.path.stat().st_size
        with (
            open(self.path, "rb") as fh,
            tqdm(total=size, unit="B", unit_scale=True, desc=f"scan {self.path.name}",
                 disable=size < 1 << 26) as bar,
        ):  # fmt: skip
            for number, line in enumerate(fh, start=1):
                h.update(line)
                if line.strip():  # blank lines are skipped, as every rankloop reader does
                    if n % _OFFSET_EVERY == 0:
                        offsets.append(pos)
                    n += 1
                    tab = line.find(b"\t")
                    if line.count(b"\t") != 1 or not line[:tab].strip():
                        got = line.decode("utf-8", "replace").rstrip("\r\n")
                        raise FormatError(self.path, number, "'id<TAB>text': exactly two "
                                          "tab-separated columns, a non-empty id", got)  # fmt: skip
                    try:
                        line.decode("utf-8")
                    except UnicodeDecodeError:
                        raise FormatError(
                            self.path, number, "UTF-8 text", repr(line[:80])
                        ) from None
                    keys.append(hash(line[:tab].strip()))
                pos += len(line)
                if number % 100_000 == 0:
                    bar.update(pos - bar.n)
            bar.update(pos - bar.n)
        if n == 0:
            raise RankloopError(f"{self.path}: the collection is empty")
        self._check_unique(np.frombuffer(keys, dtype=np.int64))
        self._offsets = np.asarray(offsets, dtype=np.int64)
        self._n = n
        self._sha256 = h.hexdigest()

    def _check_unique(self, keys: np.ndarray) -> None:
        """Duplicate ids fail here, before any encoding: equal id hashes are checked exactly
        in a second pass over just those lines."""
        order = np.sort(keys)
        clash = set(order[1:][order[1:] == order[:-1]].tolist())
        if not clash:
            return
        seen: dict[bytes, int] = {}
        with open(self.path, "rb") as fh:
            for number, line in enumerate(fh, start=1):
                pid = line[: line.find(b"\t")].strip()
                if line.strip() and hash(pid) in clash:
                    if pid in seen:
                        raise FormatError(self.path, number, f"a unique id (line {seen[pid]} has "
                                          f"{pid.decode('utf-8', 'replace')!r} too)")  # fmt: skip
                    seen[pid] = number

    def __len__(self) -> int:
        return self._n

    def read(self, start: int, stop: int) -> tuple[list[str], list[str]]:
        """(ids, texts) of rows [start, stop), from the nearest recorded offset."""
        ids: list[str] = []
        texts: list[str] = []
        with open(self.path, "rb") as fh:
            fh.seek(int(self._offsets[start // _OFFSET_EVERY]))
            row = start - start % _OFFSET_EVERY
            for raw in fh:
                if row >= stop:
                    break
                if not raw.strip():
                    continue
                if row >= start:
                    try:
                        line = raw.decode("utf-8").rstrip("\r\n")
                    except UnicodeDecodeError as e:
                        raise FormatError(self.path, None, f"UTF-8 text (document {row + 1})",
                                          repr(raw[:80])) from e  # fmt: skip
                    pid, _, text = line.partition("\t")
                    ids.append(pid.strip())
                    texts.append(text)
                row += 1
        if len(ids) != stop - start:
            raise RankloopError(f"{self.path} changed while it was read (row {start + len(ids)})")
        return ids, texts

    def describe(self) -> dict[str, Any]:
        """The file's SHA-256 and line count."""
        return {"kind": "tsv", "sha256": self._sha256, "n_docs": self._n}


def _shard_name(i: int) -> str:
    return f"shard-{i:05d}"


@dataclass(frozen=True)
class EmbeddingShards:
    """A shards folder written by `encode_shards` (read-only view)."""

    folder: Path
    manifest: dict[str, Any]

    @classmethod
    def open(cls, folder: str | os.PathLike[str]) -> EmbeddingShards:
        """Read the manifest of `folder`; a folder that is not a shards folder raises."""
        folder = Path(folder)
        path = folder / MANIFEST
        try:
            manifest = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise RankloopError(
                f"{folder}: no {MANIFEST} (not an embedding shards folder)"
            ) from None
        except (OSError, ValueError) as e:
            raise RankloopError(f"{path}: unreadable ({e})") from None
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
            raise RankloopError(f"{path}: expected format {FORMAT!r}")
        return cls(folder, manifest)

    @property
    def n_docs(self) -> int:
        return int(self.manifest["n_docs"])

    @property
    def n_shards(self) -> int:
        return int(self.manifest["n_shards"])

    @property
    def dim(self) -> int:
        return int(self.manifest["dim"])

    def bounds(self, i: int) -> tuple[int, int]:
        """Row range [start, stop) of shard `i`."""
        size = int(self.manifest["shard_size"])
        return i * size, min((i + 1) * size, self.n_docs)

    def _paths(self, i: int) -> tuple[Path, Path]:
        name = _shard_name(i)
        return self.folder / f"{name}.ids.json", self.folder / f"{name}.npy"

    def _read(self, i: int) -> tuple[list[str], np.ndarray] | None:
        """(ids, memory-mapped vectors) of shard `i` if it is on disk, whole, with the expected
        number of rows; else None. One read serves both the check and the use."""
        ids_path, vec_path = self._paths(i)
        if not (ids_path.is_file() and vec_path.is_file()):
            return None
        start, stop = self.bounds(i)
        try:
            vecs = np.load(vec_path, mmap_mode="r")
            ids = json.loads(ids_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        whole = (
            vecs.shape == (stop - start, self.dim)
            and vecs.dtype == np.float32
            and (isinstance(ids, list) and len(ids) == stop - start)
        )
        return (ids, vecs) if whole else None

    def is_complete(self, i: int) -> bool:
        """Shard `i` is on disk, whole, with the expected number of rows."""
        return self._read(i) is not None

    def missing(self) -> list[int]:
        """Shards not (wholly) written yet."""
        return [i for i in range(self.n_shards) if not self.is_complete(i)]

    def write(self, i: int, ids: list[str], vectors: np.ndarray) -> None:
        """Write shard `i` atomically: the ids, then the vectors (whose presence marks it done)."""
        start, stop = self.bounds(i)
        if len(ids) != stop - start or vectors.shape != (stop - start, self.dim):
            raise RankloopError(
                f"shard {i}: {len(ids)} ids and {vectors.shape} vectors for rows {start}-{stop}"
            )
        ids_path, vec_path = self._paths(i)
        with atomic_write(ids_path) as fh:
            json.dump(ids, fh)
        with atomic_write(vec_path, "wb") as fh:
            np.save(fh, np.ascontiguousarray(vectors, dtype=np.float32))

    def shard(self, i: int) -> tuple[list[str], np.ndarray]:
        """(ids, memory-mapped vectors) of shard `i`."""
        found = self._read(i)
        if found is None:
            raise RankloopError(f"{self.folder}: shard {i} is missing or incomplete")
        return found

    def __iter__(self) -> Iterator[tuple[list[str], np.ndarray]]:
        """(ids, vectors) of every shard in row order; a missing shard raises first."""
        missing = self.missing()
        if missing:
            raise RankloopError(
                f"{self.folder}: {len(missing)} of {self.n_shards} shards are missing (first: "
                f"{missing[0]}); run the encoding again to finish them"
            )
        for i in range(self.n_shards):
            yield self.shard(i)

    def sample(self, n: int, random_state: int = 0) -> np.ndarray:
        """A seeded sample of `n` rows (all rows when there are fewer), read shard by shard."""
        if n >= self.n_docs:
            rows = np.arange(self.n_docs)
        else:
            rows = np.sort(
                np.random.default_rng(random_state).choice(self.n_docs, n, replace=False)
            )
        out = np.empty((len(rows), self.dim), dtype=np.float32)
        at = 0
        for i in range(self.n_shards):
            start, stop = self.bounds(i)
            take = rows[(rows >= start) & (rows < stop)] - start
            if len(take):
                out[at : at + len(take)] = self.shard(i)[1][take]
                at += len(take)
        return out


def _manifest(source: DocSource, encoder: Encoder, shard_size: int) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "source": {"name": source.name, **source.describe()},
        "model": encoder.name,
        "model_fingerprint": encoder.fingerprint,
        "backend": encoder.backend,
        "max_length": encoder.max_length,
        "dim": encoder.dim,
        "shard_size": shard_size,
        "n_docs": len(source),
        "n_shards": -(-len(source) // shard_size),
    }


def encode_shards(
    source: DocSource,
    encoder: Encoder,
    folder: str | os.PathLike[str],
    *,
    shard_size: int = DEFAULT_SHARD_SIZE,
    progress: bool = True,
) -> EmbeddingShards:
    """Encode the shards of `source` that `folder` lacks (all of them the first time).

    The folder's manifest ties it to the source's content, the model fingerprint (backend
    included), the token limit and `shard_size`; any difference raises before any work.
    """
    if shard_size < 1:
        raise RankloopError(f"shard_size must be >= 1, got {shard_size}")
    folder = Path(folder)
    manifest = _manifest(source, encoder, shard_size)
    path = folder / MANIFEST
    if path.is_file():
        old = EmbeddingShards.open(folder).manifest
        differ = sorted(k for k in manifest if old.get(k) != manifest[k])
        if differ:
            raise RankloopError(
                f"{folder} holds shards of another encoding ({', '.join(differ)} differ: "
                + "; ".join(f"{k}: {old.get(k)!r} there, {manifest[k]!r} now" for k in differ[:3])
                + "); use another folder or delete this one"
            )
    else:
        folder.mkdir(parents=True, exist_ok=True)
        with atomic_write(path) as fh:
            json.dump(manifest, fh, indent=2)
    shards = EmbeddingShards(folder, manifest)
    todo = shards.missing()
    done = shards.n_shards - len(todo)
    if done and todo:
        print(f"shards: resuming {folder}: {done} of {shards.n_shards} shards already encoded",
              file=sys.stderr)  # fmt: skip
    if not todo:
        return shards
    from rankloop import scale

    if scale.ray_active():
        _encode_ray(source, encoder, shards, todo, progress)
    else:
        rows = sum(b - a for a, b in map(shards.bounds, todo))
        with tqdm(
            total=rows, unit="doc", desc=f"encode {source.name}", disable=not progress
        ) as bar:
            quiet = encoder.show_progress
            encoder.show_progress = False  # one bar over all shards, not one per shard
            try:
                for i in todo:
                    ids, texts = source.read(*shards.bounds(i))
                    shards.write(i, ids, encoder.encode_docs(texts))
                    bar.update(len(ids))
            finally:
                encoder.show_progress = quiet
    return shards


class _ShardEncoder:
    """A Ray Data actor: one model, encodes whole shards (one row = one shard number)."""

    def __init__(self, source: DocSource, encoder: Encoder, bounds: dict[int, tuple[int, int]],
                 fingerprint: str) -> None:  # fmt: skip
        import torch

        torch.set_num_threads(max(1, int(os.environ.get("OMP_NUM_THREADS", "1"))))
        self.source, self.encoder, self.bounds = source, encoder, bounds
        self.encoder.show_progress = False
        if self.encoder.fingerprint != fingerprint:
            raise RankloopError(
                f"the model on this Ray node ({self.encoder.fingerprint}) differs from the "
                f"driver's ({fingerprint}); install the same model files on every node"
            )

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, Any]:
        out: dict[str, list[Any]] = {"shard": [], "ids": [], "vectors": [], "n": []}
        for i in batch["shard"].tolist():
            ids, texts = self.source.read(*self.bounds[i])
            vecs = self.encoder.encode_docs(texts)
            out["shard"].append(i)
            out["ids"].append(json.dumps(ids))
            out["vectors"].append(vecs.astype(np.float32).tobytes())
            out["n"].append(len(ids))
        return out


def _encode_ray(source: DocSource, encoder: Encoder, shards: EmbeddingShards, todo: list[int],
                progress: bool) -> None:  # fmt: skip
    """Encode shards `todo` with Ray Data map_batches over an actor pool; write them here."""
    import ray

    from rankloop import scale

    _ = encoder.backend  # resolve "auto" here, so that every actor uses the same backend
    gpu = encoder.device.startswith("cuda")  # then one actor per GPU of the cluster
    slots = int(ray.cluster_resources().get("GPU", 0)) if gpu else scale.cluster_cpus()
    if slots < 1:
        raise RankloopError(f"device {encoder.device!r} asked for, but the Ray cluster has no GPU")
    actors = max(1, min(slots, len(todo)))
    bounds = {i: shards.bounds(i) for i in todo}
    ds = ray.data.from_items([{"shard": i} for i in todo], override_num_blocks=len(todo))
    kwargs = {"source": source, "encoder": encoder, "bounds": bounds,
              "fingerprint": encoder.fingerprint}  # fmt: skip
    out = ds.map_batches(
        _ShardEncoder,
        fn_constructor_kwargs=kwargs,
        batch_size=1,
        compute=ray.data.ActorPoolStrategy(size=actors),
        num_cpus=1,
        num_gpus=1 if gpu else 0,
        max_restarts=0,
    )
    ctx = ray.data.DataContext.get_current()
    shown, ctx.enable_progress_bars = ctx.enable_progress_bars, False  # ours counts documents
    rows = sum(b - a for a, b in bounds.values())
    try:
        with tqdm(total=rows, unit="doc", desc=f"encode {source.name} (ray, {actors} actors)",
                  disable=not progress) as bar:  # fmt: skip
            for row in out.iter_rows():
                n = int(row["n"])
                vecs = np.frombuffer(row["vectors"], dtype=np.float32).reshape(n, shards.dim)
                shards.write(int(row["shard"]), json.loads(row["ids"]), vecs)
                bar.update(n)
    finally:
        ctx.enable_progress_bars = shown

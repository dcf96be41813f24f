"""`VectorIndex`: any FAISS factory string, string ids, stored full-precision vectors, atomic I/O.

The FAISS index answers nearest-neighbour queries. Beside it the index keeps every added vector
in full float32 precision (a `.npy` file, memory-mapped after `load`), so `vectors(ids)` works
for compressed indexes (IVF-PQ, HNSW-SQ, ...) too, without `reconstruct`: PRF needs the exact
vectors, and `search(..., refine=n)` re-scores ANN candidates with them.

Scores are "higher is better" for every metric: inner product for "ip", cosine similarity for
"cosine" (vectors and queries are L2-normalised on the way in, and the stored vectors are the
normalised ones), and the negated squared L2 distance for "l2".
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import faiss
import numpy as np
from tqdm.auto import tqdm

from rankloop.embed.gpu import gpu_available, num_gpus
from rankloop.errors import ConfigError, IndexCorruptError, RankloopError
from rankloop.io import MANIFEST, atomic_dir, file_sha256, json_field, open_artifact

FORMAT = "rankloop.VectorIndex/1"
ARTIFACT = "VectorIndex"  # the kind recorded in the rankloop.json manifest
METRICS = {
    "ip": faiss.METRIC_INNER_PRODUCT,
    "cosine": faiss.METRIC_INNER_PRODUCT,
    "l2": faiss.METRIC_L2,
}
_INDEX_FILE = "index.faiss"
_VECTORS_FILE = "vectors.npy"
_IDS_FILE = "ids.json"
META_FILE = "meta.json"
# Query-time parameters `search` understands, and the index types they apply to.
SEARCH_PARAMS = {
    "nprobe": "IVF",
    "max_codes": "IVF",
    "efSearch": "HNSW",
    "quantizer_efSearch": "IVF with an HNSW coarse quantizer (IVFn_HNSWm)",
    "k_factor": "Refine",
}
_REFINE_ROWS = 1 << 14  # candidate vectors gathered per block by exact re-ranking (~25 MB at d=384)
# FAISS >= 1.9 computes exhaustive (Flat, IVF-Flat coarse) scores with BLAS only when
# n_queries * dim >= `distance_compute_blas_threshold` (128,000: 333 queries at d=384). On the
# 2-core CPU here BLAS is already faster from ~20 queries on (300 x 5,183 docs, d=384, k=1000:
# 24.6 ms with BLAS vs 41.1 ms without; 50,000 docs: 90 vs 426 ms), so batches of at least this
# many queries search with BLAS. Single queries keep FAISS's SIMD loop, which wins there.
BLAS_MIN_QUERIES = 20


# -- on-disk helpers shared with MultiVectorIndex ----------------------------------------------
def file_records(directory: Path, names: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Size of each file, recorded in meta.json: a cheap consistency check of each part (the
    artefact's rankloop.json manifest holds the hashes)."""
    return {n: {"bytes": (directory / n).stat().st_size} for n in names}


def is_saved_format(expected_format: str) -> Callable[[Path], bool]:
    """Recognises a directory whose meta.json has `expected_format`: how saves and loads know
    an index written before rankloop.json manifests existed."""
    return lambda directory: json_field(directory / META_FILE, "format") == expected_format


def read_meta(directory: Path, expected_format: str) -> dict[str, Any]:
    """Parse meta.json of a saved index; a missing directory or unreadable meta raises."""
    if not directory.is_dir():
        raise RankloopError(f"no index at {directory}")
    path = directory / META_FILE
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise IndexCorruptError(
            f"{directory}: {META_FILE} is missing (not a saved index?)"
        ) from None
    except (OSError, ValueError) as e:
        raise IndexCorruptError(f"{path}: unreadable ({e})") from None
    if not isinstance(meta, dict) or meta.get("format") != expected_format:
        got = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise IndexCorruptError(f"{path}: expected format {expected_format!r}, got {got!r}")
    return meta


def check_files(directory: Path, meta: dict[str, Any], verify: bool) -> None:
    """Every file listed in meta exists with its recorded size; with `verify`, also the SHA-256
    that indexes saved before rankloop.json manifests recorded there (a newer index whose
    manifest was removed has no hashes here, and cannot be verified)."""
    files = meta.get("files")
    if not isinstance(files, dict) or not files:
        raise IndexCorruptError(f"{directory / META_FILE}: no file records")
    for name, rec in files.items():
        path = directory / name
        if not path.is_file():
            raise IndexCorruptError(f"{path}: missing")
        size = path.stat().st_size
        if size != rec.get("bytes"):
            raise IndexCorruptError(
                f"{path}: {size} bytes, expected {rec.get('bytes')} (truncated or overwritten)"
            )
        if not verify:
            continue
        if "sha256" not in rec:
            raise IndexCorruptError(
                f"{directory}: {MANIFEST} is missing, so the files cannot be verified "
                "(load with verify=False to skip the check)"
            )
        if file_sha256(path) != rec["sha256"]:
            raise IndexCorruptError(f"{path}: SHA-256 does not match meta.json (file is damaged)")


def write_meta(directory: Path, meta: dict[str, Any]) -> None:
    (directory / META_FILE).write_text(json.dumps(meta, indent=2), encoding="utf-8")


def as_matrix(x: np.ndarray, dim: int, what: str) -> np.ndarray:
    """A C-contiguous float32 (n, dim) copy of `x`; wrong shapes and non-finite values raise."""
    arr = np.asarray(x)
    if arr.ndim != 2:
        raise RankloopError(f"{what} must be a 2-D array (n, {dim}), got shape {arr.shape}")
    if arr.shape[1] != dim:
        raise RankloopError(
            f"{what} have dimension {arr.shape[1]} but the index has dimension {dim} "
            "(was it built with a different encoder?)"
        )
    if not np.issubdtype(arr.dtype, np.number):
        raise RankloopError(f"{what} must be numeric, got dtype {arr.dtype}")
    out = np.array(arr, dtype=np.float32, order="C", copy=True)
    finite = np.isfinite(out).all(axis=1)
    if not finite.all():
        row = int(np.flatnonzero(~finite)[0])
        raise RankloopError(f"{what}: row {row} contains NaN or infinity")
    return out


def _normalize(x: np.ndarray) -> np.ndarray:
    faiss.normalize_L2(x)
    return x


class VectorIndex:
    """A FAISS index built from a factory string, with string ids and stored float32 vectors.

    `VectorIndex(384, "HNSW32", metric="cosine")`; `add(ids, vectors)`; `search(queries, k)`
    returns `(scores (n, k) float32, ids: list[list[str]])`. Passing `ids=None` to `add`
    builds a row-addressed index with no string ids (used for token rows by
    `MultiVectorIndex`); use `search_rows` / `vectors_at` on it.
    """

    def __init__(self, dim: int, factory: str = "Flat", metric: str = "ip") -> None:
        if not isinstance(dim, (int, np.integer)) or dim < 1:
            raise ConfigError(f"dim must be a positive int, got {dim!r}")
        if metric not in METRICS:
            raise ConfigError(f"metric must be one of {sorted(METRICS)}, got {metric!r}")
        try:
            index = faiss.index_factory(int(dim), factory, METRICS[metric])
        except RuntimeError as e:
            raise ConfigError(
                f"FAISS cannot build index {factory!r}: {_faiss_message(e)}"
            ) from None
        self._init(index, int(dim), factory, metric)

    def _init(self, index: faiss.Index, dim: int, factory: str, metric: str) -> None:
        self._index = index
        self._dim = dim
        self._factory = factory
        self._metric = metric
        self._ids: list[str] = []
        self._row: dict[str, int] = {}
        self._id_array: np.ndarray | None = None
        self._anonymous: bool | None = None  # decided by the first non-empty add
        self._stored = np.zeros((0, dim), dtype=np.float32)
        self._pending: list[np.ndarray] = []
        self._gpu_resources: list[Any] = []

    def __repr__(self) -> str:
        where = ", gpu" if self.on_gpu else ""
        return f"VectorIndex(dim={self._dim}, factory={self._factory!r}, metric={self._metric!r}, n={len(self)}{where})"

    # -- properties --------------------------------------------------------------------------
    def __len__(self) -> int:
        return int(self._index.ntotal)

    @property
    def ntotal(self) -> int:
        return int(self._index.ntotal)

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def metric(self) -> str:
        return self._metric

    @property
    def factory(self) -> str:
        return self._factory

    @property
    def is_trained(self) -> bool:
        return bool(self._index.is_trained)

    @property
    def has_ids(self) -> bool:
        return not self._anonymous

    @property
    def ids(self) -> list[str]:
        """The string ids in row order (the internal list: do not mutate it)."""
        self._require_ids()
        return self._ids

    @property
    def faiss_index(self) -> faiss.Index:
        """The underlying FAISS index, for expert use."""
        return self._index

    @property
    def on_gpu(self) -> bool:
        return bool(self._gpu_resources)

    def _require_ids(self) -> None:
        if self._anonymous:
            raise RankloopError("this index is row-addressed (built with ids=None): use rows")

    def _store(self) -> np.ndarray:
        if self._pending:
            self._stored = np.concatenate([self._stored, *self._pending])
            self._pending = []
        return self._stored

    # -- building ----------------------------------------------------------------------------
    def default_train_size(self) -> int:
        """Training points `train` keeps by default: 256 per coarse centroid (at least 65,536),
        FAISS's own k-means cap."""
        ivf = faiss.try_extract_index_ivf(self._index)
        return 256 * max(ivf.nlist if ivf else 0, 256)

    def train(self, vectors: np.ndarray, *, max_points: int | None = None, seed: int = 0) -> None:
        """Train IVF/PQ/OPQ parts on (a seeded sample of at most `max_points` of) `vectors`.

        `add` calls this on its own vectors when the index is untrained; the default sample
        size is `default_train_size`.
        """
        cap = max_points if max_points is not None else self.default_train_size()
        arr = np.asarray(vectors)
        if arr.ndim == 2 and arr.shape[0] > cap:  # sample before copying: inputs may be huge
            arr = arr[np.sort(np.random.default_rng(seed).choice(arr.shape[0], cap, replace=False))]
        x = as_matrix(arr, self._dim, "training vectors")
        if self._metric == "cosine":
            _normalize(x)
        try:
            self._index.train(x)
        except RuntimeError as e:
            raise RankloopError(
                f"cannot train {self._factory!r} on {x.shape[0]} vectors: {_faiss_message(e)}. "
                "IVF and PQ need at least as many training vectors as centroids (IVFn: n, "
                "PQ with b bits: 2^b) and ideally 39x more; use more vectors or a smaller index."
            ) from None

    def add(
        self,
        ids: Sequence[str] | None,
        vectors: np.ndarray,
        *,
        batch_size: int = 65536,
        train_size: int | None = None,
        seed: int = 0,
    ) -> None:
        """Append `vectors` (n, dim) under string `ids`; trains the index first if it needs it.

        Duplicate ids (within the call or with ids already in the index), a dimension
        mismatch and NaN/infinite values raise before anything is added.
        """
        x = as_matrix(vectors, self._dim, "vectors")
        n = x.shape[0]
        if ids is None:
            if self._anonymous is False:
                raise RankloopError("this index has string ids: pass ids to add")
            new_ids: list[str] = []
        else:
            if self._anonymous:
                raise RankloopError(
                    "this index is row-addressed (built with ids=None): pass ids=None"
                )
            if isinstance(ids, str):
                raise RankloopError("ids must be a sequence of strings, got a single str")
            new_ids = list(ids)
            if len(new_ids) != n:
                raise RankloopError(f"{len(new_ids)} ids for {n} vectors")
            self._check_new_ids(new_ids)
        if n == 0:
            return
        if self._metric == "cosine":
            _normalize(x)
        if not self._index.is_trained:
            self.train(x, max_points=train_size, seed=seed)
        for start in range(0, n, max(1, batch_size)):
            self._index.add(x[start : start + batch_size])
        self._anonymous = ids is None
        base = len(self._ids)
        self._ids.extend(new_ids)
        self._row.update(zip(new_ids, range(base, base + len(new_ids))))
        self._id_array = None
        self._pending.append(x)

    def _check_new_ids(self, new_ids: list[str]) -> None:
        bad = next((i for i in new_ids if not isinstance(i, str)), None)
        if bad is not None:
            raise RankloopError(f"ids must be strings, got {type(bad).__name__} {bad!r}")
        if len(set(new_ids)) != len(new_ids):
            seen: set[str] = set()
            dup = next(i for i in new_ids if i in seen or seen.add(i))  # type: ignore[func-returns-value]
            raise RankloopError(f"duplicate id {dup!r} in the ids to add")
        clash = next((i for i in new_ids if i in self._row), None)
        if clash is not None:
            raise RankloopError(f"id {clash!r} is already in the index")

    # -- searching ---------------------------------------------------------------------------
    def search(
        self, queries: np.ndarray, k: int, *, refine: int | None = None, **params: Any
    ) -> tuple[np.ndarray, list[list[str]]]:
        """Top-`k` (scores (n, k) float32, ids) per query row.

        `params` are FAISS query-time knobs (`nprobe`, `efSearch`, `quantizer_efSearch`,
        `max_codes`, `k_factor`); on the CPU they apply to this call only, on the GPU they are
        set on the index and persist. `refine=r` fetches `r >= k` ANN candidates and re-ranks
        them exactly with the stored vectors. Missing results (fewer than `k` reachable
        vectors) are dropped from the id lists, and their scores are -inf.
        """
        self._require_ids()
        scores, rows = self.search_rows(queries, k, refine=refine, **params)
        if self._id_array is None:
            self._id_array = np.array(self._ids, dtype=object)
        id_array = self._id_array
        return scores, [id_array[r[r >= 0]].tolist() for r in rows]

    def search_rows(
        self, queries: np.ndarray, k: int, *, refine: int | None = None, **params: Any
    ) -> tuple[np.ndarray, np.ndarray]:
        """Like `search`, but returns row positions (n, k) int64, -1 where there is no result."""
        if not isinstance(k, (int, np.integer)) or k < 1:
            raise RankloopError(f"k must be a positive int, got {k!r}")
        if refine is not None and refine < k:
            raise RankloopError(f"refine ({refine}) must be >= k ({k})")
        q = as_matrix(queries, self._dim, "queries")
        if self._metric == "cosine":
            _normalize(q)
        n = q.shape[0]
        if n == 0 or self.ntotal == 0:
            return np.full((n, k), -np.inf, dtype=np.float32), np.full((n, k), -1, dtype=np.int64)
        fetch = max(k, refine or 0)
        if self.on_gpu:
            self._set_gpu_parameters(params)
            params = {}
        search_params, keep_alive = _search_parameters(self._index, params)
        try:
            with _blas_for_batch(n, self._dim, enabled=not self.on_gpu):
                if search_params is None:
                    dist, rows = self._index.search(q, fetch)
                else:
                    dist, rows = self._index.search(q, fetch, params=search_params)
        except RuntimeError as e:
            raise RankloopError(
                f"FAISS search on {self._factory!r} failed: {_faiss_message(e)}"
            ) from None
        del keep_alive
        if refine is not None:
            return self._exact_rerank(q, rows, k)
        scores = -dist if self._metric == "l2" else dist
        scores = np.where(rows >= 0, scores, -np.inf).astype(np.float32)
        return scores[:, :k], rows[:, :k].astype(np.int64)

    def _exact_rerank(
        self, q: np.ndarray, rows: np.ndarray, k: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Re-score candidate rows with the stored vectors and keep the best `k` per query."""
        store = self._store()
        n, fetch = rows.shape
        out_scores = np.empty((n, k), dtype=np.float32)
        out_rows = np.empty((n, k), dtype=np.int64)
        step = max(1, _REFINE_ROWS // fetch)
        for s in range(0, n, step):
            r = rows[s : s + step]
            valid = r >= 0
            cand = store[np.where(valid, r, 0)]  # (b, fetch, d)
            qb = q[s : s + step, :, None]
            if self._metric == "l2":
                sc = -np.square(cand - qb[:, None, :, 0]).sum(axis=2)
            else:
                sc = np.matmul(cand, qb)[:, :, 0]
            sc = np.where(valid, sc, -np.inf)
            top = np.argsort(-sc, axis=1, kind="stable")[:, :k]
            out_scores[s : s + step] = np.take_along_axis(sc, top, axis=1)
            out_rows[s : s + step] = np.where(
                np.take_along_axis(valid, top, axis=1), np.take_along_axis(r, top, axis=1), -1
            )
        return out_scores, out_rows

    # -- stored vectors ----------------------------------------------------------------------
    def rows(self, ids: Sequence[str]) -> np.ndarray:
        """Row positions (int64) of `ids`; an unknown id raises."""
        self._require_ids()
        if isinstance(ids, str):
            raise RankloopError("ids must be a sequence of strings, got a single str")
        try:
            return np.fromiter((self._row[i] for i in ids), dtype=np.int64)
        except KeyError as e:
            raise RankloopError(f"id {e.args[0]!r} is not in the index") from None

    def vectors(self, ids: Sequence[str]) -> np.ndarray:
        """(len(ids), dim) float32 copies of the stored full-precision vectors of `ids`."""
        return self.vectors_at(self.rows(ids))

    def vectors_at(self, rows: np.ndarray | Sequence[int]) -> np.ndarray:
        """(len(rows), dim) float32 copies of the stored vectors at row positions `rows`."""
        r = np.asarray(rows, dtype=np.int64).reshape(-1)
        n = self.ntotal
        if r.size and (r.min() < 0 or r.max() >= n):
            raise RankloopError(f"row positions must be in [0, {n}), got {r.min()}..{r.max()}")
        return np.array(self._store()[r], dtype=np.float32)

    # -- GPU ---------------------------------------------------------------------------------
    def to_gpu(self, devices: Sequence[int] | None = None) -> VectorIndex:
        """Move the FAISS index to the GPU(s) (sharded over several); stored vectors stay in RAM."""
        if not gpu_available():
            raise RankloopError(
                "to_gpu needs FAISS built with GPU support (e.g. pip install faiss-gpu-cu12) and a "
                "visible CUDA GPU; FAISS sees none, so the index stays on the CPU"
            )
        if self.on_gpu:
            return self
        devs = list(range(num_gpus())) if devices is None else [int(d) for d in devices]
        if not devs:
            raise RankloopError("to_gpu: empty device list")
        try:
            if len(devs) == 1:
                res = faiss.StandardGpuResources()
                gpu_index = faiss.index_cpu_to_gpu(res, devs[0], self._index)
                resources: list[Any] = [res]
            else:
                options = faiss.GpuMultipleClonerOptions()
                options.shard = True
                gpu_index = faiss.index_cpu_to_gpus_list(self._index, co=options, gpus=devs)
                resources = devs
        except RuntimeError as e:
            raise RankloopError(
                f"FAISS cannot move {self._factory!r} to the GPU: {_faiss_message(e)}"
            ) from None
        self._index = gpu_index
        self._gpu_resources = resources
        return self

    def to_cpu(self) -> VectorIndex:
        """Bring a GPU index back to the CPU (a no-op on the CPU)."""
        if self.on_gpu:
            self._index = faiss.index_gpu_to_cpu(self._index)
            self._gpu_resources = []
        return self

    def _set_gpu_parameters(self, params: dict[str, Any]) -> None:
        """GPU indexes take query-time knobs through GpuParameterSpace (they persist)."""
        unknown = set(params) - set(SEARCH_PARAMS)
        if unknown:
            raise RankloopError(f"unknown search parameter(s) {sorted(unknown)}")
        space = faiss.GpuParameterSpace()
        space.initialize(self._index)
        for name, value in params.items():
            try:
                space.set_index_parameter(self._index, name, float(value))
            except RuntimeError as e:
                raise RankloopError(f"GPU index {self._factory!r}: {_faiss_message(e)}") from None

    def _cpu_index(self) -> faiss.Index:
        return faiss.index_gpu_to_cpu(self._index) if self.on_gpu else self._index

    # -- persistence -------------------------------------------------------------------------
    def save(self, path: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
        """Write the index to directory `path` atomically, with a checksummed manifest.

        `path` may be new, an empty folder or a saved VectorIndex; a rankloop artefact of
        another kind needs `overwrite=True`, and any other folder is never replaced
        (`RankloopError`). A save killed at any point leaves the old or the new index.
        """
        with atomic_dir(path, ARTIFACT, overwrite=overwrite, legacy=is_saved_format(FORMAT)) as tmp:
            self.write_into(tmp)
        return Path(path)

    def write_into(self, directory: Path) -> None:
        """Write the index files into an existing (temporary) directory; meta.json goes last."""
        np.save(directory / _VECTORS_FILE, self._store())
        self._write_rest(directory, None if self._anonymous else self._ids)

    def _write_rest(self, directory: Path, ids: list[str] | None) -> None:
        """Everything but vectors.npy (already written): the FAISS index, ids, meta.json."""
        faiss.write_index(self._cpu_index(), str(directory / _INDEX_FILE))
        names = [_INDEX_FILE, _VECTORS_FILE]
        if ids is not None:
            (directory / _IDS_FILE).write_text(json.dumps(ids), encoding="utf-8")
            names.append(_IDS_FILE)
        write_meta(
            directory,
            {
                "format": FORMAT,
                "factory": self._factory,
                "dim": self._dim,
                "metric": self._metric,
                "count": self.ntotal,
                "has_ids": ids is not None,
                "faiss_version": faiss.__version__,
                "files": file_records(directory, names),
            },
        )

    @classmethod
    def write_streamed(
        cls,
        directory: Path,
        batches: Iterable[tuple[Sequence[str], np.ndarray]],
        *,
        total: int,
        dim: int,
        factory: str = "Flat",
        metric: str = "ip",
        sample: Callable[[int], np.ndarray] | None = None,
        train_size: int | None = None,
        progress: bool = True,
    ) -> None:
        """Write a saved index into the (temporary) `directory` from (ids, vectors) batches
        without holding the vectors in memory: each batch is added to FAISS and appended to
        vectors.npy. An index that needs training is first trained on
        `sample(n)`, n = `train_size` or `train`'s default. Memory: the FAISS index, one batch,
        the training sample and the ids."""
        index = cls(dim, factory=factory, metric=metric)
        if not index.is_trained:
            if sample is None:
                raise RankloopError(f"{factory!r} needs training: pass sample")
            index.train(sample(train_size or index.default_train_size()))
        ids: list[str] = []
        seen: set[str] = set()
        # Plain appends after the .npy header, not a memory map: written pages of a map count
        # in the process's RSS until the kernel writes them back; the page cache does not.
        with (
            open(directory / _VECTORS_FILE, "wb") as store,
            tqdm(total=total, unit="vec", desc="index", disable=not progress) as bar,
        ):
            header = {"descr": "<f4", "fortran_order": False, "shape": (total, dim)}
            np.lib.format.write_array_header_1_0(store, header)
            for batch_ids, vectors in batches:
                x = as_matrix(vectors, dim, "vectors")
                at = len(ids)
                if len(batch_ids) != x.shape[0] or at + x.shape[0] > total:
                    raise RankloopError(
                        f"{len(batch_ids)} ids for {x.shape[0]} vectors at row {at} of {total}"
                    )
                for row, i in enumerate(batch_ids, start=at):
                    if i in seen:
                        raise RankloopError(f"duplicate id {i!r} (row {row})")
                    seen.add(i)
                if metric == "cosine":
                    _normalize(x)
                index._index.add(x)
                store.write(np.ascontiguousarray(x, dtype="<f4").tobytes())
                ids.extend(batch_ids)
                bar.update(x.shape[0])
        if len(ids) != total:
            raise RankloopError(f"{len(ids)} vectors written, {total} expected")
        del seen
        index._write_rest(directory, ids)

    @classmethod
    def load(
        cls, path: str | os.PathLike[str], mmap: bool = True, verify: bool = True
    ) -> VectorIndex:
        """Read an index saved by `save`; the stored vectors are memory-mapped when `mmap`.

        Every file's size and SHA-256 is checked against the manifest (a damaged file raises
        `IndexCorruptError` naming it); `verify=False` skips the hashes (sizes and counts are
        still checked). A missing `path` left by a killed save is restored first.
        """
        directory = Path(path)
        manifest = open_artifact(directory, ARTIFACT, verify=verify, legacy=is_saved_format(FORMAT))
        return cls.read_from(directory, mmap, verify=verify and manifest is None)

    @classmethod
    def read_from(cls, directory: Path, mmap: bool, verify: bool) -> VectorIndex:
        """Parse the index files in `directory` (the counterpart of `write_into`); `verify`
        checks the hashes that pre-manifest indexes kept in meta.json."""
        meta = read_meta(directory, FORMAT)
        check_files(directory, meta, verify)
        try:
            dim, count, metric = int(meta["dim"]), int(meta["count"]), str(meta["metric"])
            factory, has_ids = str(meta["factory"]), bool(meta["has_ids"])
        except (KeyError, TypeError, ValueError) as e:
            raise IndexCorruptError(f"{directory / META_FILE}: bad or missing field {e}") from None
        if metric not in METRICS:
            raise IndexCorruptError(f"{directory / META_FILE}: unknown metric {metric!r}")
        try:
            index = faiss.read_index(str(directory / _INDEX_FILE))
        except RuntimeError as e:
            raise IndexCorruptError(
                f"{directory / _INDEX_FILE}: unreadable ({_faiss_message(e)})"
            ) from None
        try:
            stored = np.load(directory / _VECTORS_FILE, mmap_mode="r" if mmap else None)
        except (ValueError, OSError) as e:
            raise IndexCorruptError(f"{directory / _VECTORS_FILE}: unreadable ({e})") from None
        ids: list[str] = []
        if has_ids:
            try:
                ids = json.loads((directory / _IDS_FILE).read_text(encoding="utf-8"))
            except (OSError, ValueError) as e:
                raise IndexCorruptError(f"{directory / _IDS_FILE}: unreadable ({e})") from None
            if (
                not isinstance(ids, list)
                or not all(isinstance(i, str) for i in ids)
                or len(set(ids)) != len(ids)
            ):
                raise IndexCorruptError(f"{directory / _IDS_FILE}: not a list of unique strings")
        if (
            index.ntotal != count
            or index.d != dim
            or stored.shape != (count, dim)
            or stored.dtype != np.float32
            or (has_ids and len(ids) != count)
        ):
            raise IndexCorruptError(
                f"{directory}: inconsistent files (meta count={count} dim={dim}; faiss "
                f"ntotal={index.ntotal} d={index.d}; vectors {stored.dtype} {stored.shape}; "
                f"{len(ids)} ids)"
            )
        out = cls.__new__(cls)
        out._init(index, dim, factory, metric)
        out._stored = stored
        out._ids = ids
        out._row = {i: r for r, i in enumerate(ids)}
        out._anonymous = None if count == 0 else not has_ids
        return out


def _faiss_message(e: Exception) -> str:
    """The useful last part of a FAISS C++ exception message."""
    msg = str(e).strip()
    return msg.rsplit(": ", 1)[-1] if " at /" in msg else msg


@contextmanager
def _blas_for_batch(n: int, dim: int, *, enabled: bool) -> Iterator[None]:
    """Let FAISS use BLAS for a batch of `n >= BLAS_MIN_QUERIES` queries (see the constant).

    The threshold is FAISS process state; it is lowered for this call only and restored after,
    so code that sets it itself keeps its value between rankloop searches.
    """
    old = faiss.cvar.distance_compute_blas_threshold
    if not enabled or n < BLAS_MIN_QUERIES or n * dim >= old:
        yield
        return
    faiss.cvar.distance_compute_blas_threshold = n * dim
    try:
        yield
    finally:
        faiss.cvar.distance_compute_blas_threshold = old


def _search_parameters(index: faiss.Index, params: dict[str, Any]) -> tuple[Any, list[Any]]:
    """FAISS `SearchParameters` for `params`, nested to match the index's structure.

    Returns (parameters or None, objects to keep alive during the search). A parameter that
    does not apply to this index raises, so a typo never silently does nothing.
    """
    if not params:
        return None, []
    unknown = set(params) - set(SEARCH_PARAMS)
    if unknown:
        raise RankloopError(
            f"unknown search parameter(s) {sorted(unknown)}; known: {sorted(SEARCH_PARAMS)}"
        )
    used: set[str] = set()
    keep: list[Any] = []
    sp = _build_params(index, params, used, keep)
    unused = set(params) - used
    if unused:
        name = sorted(unused)[0]
        raise RankloopError(
            f"search parameter {name!r} applies to {SEARCH_PARAMS[name]} indexes, not this one"
        )
    return sp, keep


def _build_params(
    index: faiss.Index, params: dict[str, Any], used: set[str], keep: list[Any]
) -> Any:
    idx = faiss.downcast_index(index)
    sp: Any = None
    if isinstance(idx, faiss.IndexPreTransform):
        inner = _build_params(idx.index, params, used, keep)
        if inner is not None:
            sp = faiss.SearchParametersPreTransform()
            sp.index_params = inner
    elif isinstance(idx, faiss.IndexRefine):
        inner = _build_params(idx.base_index, params, used, keep)
        if inner is not None or "k_factor" in params:
            sp = faiss.IndexRefineSearchParameters()
            sp.k_factor = float(params.get("k_factor", idx.k_factor))
            used.add("k_factor")
            if inner is not None:
                sp.base_index_params = inner
    elif isinstance(idx, faiss.IndexIVF):
        sp = faiss.SearchParametersIVF()
        sp.nprobe = int(params.get("nprobe", idx.nprobe))
        sp.max_codes = int(params.get("max_codes", idx.max_codes))
        used.update({"nprobe", "max_codes"} & set(params))
        if "quantizer_efSearch" in params:
            quantizer = faiss.downcast_index(idx.quantizer)
            if isinstance(quantizer, faiss.IndexHNSW):
                qp = faiss.SearchParametersHNSW()
                qp.efSearch = int(params["quantizer_efSearch"])
                sp.quantizer_params = qp
                keep.append(qp)
                used.add("quantizer_efSearch")
    elif isinstance(idx, faiss.IndexHNSW) and "efSearch" in params:
        sp = faiss.SearchParametersHNSW()
        sp.efSearch = int(params["efSearch"])
        used.add("efSearch")
    if sp is not None:
        keep.append(sp)
    return sp

"""VectorIndex semantics on tiny hand-made vectors: exactness, every factory, I/O and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import faiss
import numpy as np
import pytest

import rankloop.embed.index as index_mod
from rankloop.embed import VectorIndex, gpu_available
from rankloop.errors import ConfigError, IndexCorruptError, RankloopError

DIM = 16
N = 1000


@pytest.fixture(autouse=True, scope="module")
def one_faiss_thread():
    """Tiny indexes train faster on one thread, and OpenMP spinning on a busy shared CPU hurts."""
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(before)


@pytest.fixture(scope="module")
def data() -> tuple[list[str], np.ndarray, np.ndarray]:
    rng = np.random.default_rng(7)
    centers = rng.normal(size=(20, DIM))
    x = centers[rng.integers(0, 20, N)] + 0.3 * rng.normal(size=(N, DIM))
    q = centers[rng.integers(0, 20, 25)] + 0.3 * rng.normal(size=(25, DIM))
    return [f"d{i}" for i in range(N)], x.astype(np.float32), q.astype(np.float32)


def brute_force(x: np.ndarray, q: np.ndarray, k: int, metric: str) -> tuple[np.ndarray, np.ndarray]:
    if metric == "cosine":
        x = x / np.linalg.norm(x, axis=1, keepdims=True)
        q = q / np.linalg.norm(q, axis=1, keepdims=True)
    if metric == "l2":
        s = -((q[:, None, :] - x[None, :, :]) ** 2).sum(-1)
    else:
        s = q @ x.T
    top = np.argsort(-s, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(s, top, axis=1), top


@pytest.mark.parametrize("metric", ["ip", "cosine", "l2"])
def test_flat_search_equals_numpy_brute_force(data, metric):
    ids, x, q = data
    index = VectorIndex(DIM, "Flat", metric=metric)
    index.add(ids, x, batch_size=128)
    scores, got = index.search(q, 10)
    ref_scores, ref_rows = brute_force(x, q, 10, metric)
    assert scores.dtype == np.float32 and scores.shape == (25, 10)
    np.testing.assert_allclose(scores, ref_scores, rtol=1e-4, atol=1e-3)
    assert got == [[ids[r] for r in row] for row in ref_rows]
    assert len(index) == index.ntotal == N and index.dim == DIM and index.metric == metric


@pytest.mark.parametrize("metric", ["ip", "l2"])
def test_batched_blas_search_matches_single_queries_and_restores_faiss_state(data, metric):
    """A batch of >= BLAS_MIN_QUERIES queries goes through FAISS's BLAS path; single queries
    through its SIMD loop. Both give the same ranking, and FAISS's threshold is left as it was."""
    ids, x, q = data
    assert len(q) >= index_mod.BLAS_MIN_QUERIES
    index = VectorIndex(DIM, "Flat", metric=metric)
    index.add(ids, x)
    before = faiss.cvar.distance_compute_blas_threshold
    calls: list[int] = []
    real = index._index.search

    def spy(qq, k, **kw):
        calls.append(faiss.cvar.distance_compute_blas_threshold)
        return real(qq, k, **kw)

    index._index.search = spy
    batch_scores, batch_rows = index.search_rows(q, 10)
    single = [index.search_rows(q[i : i + 1], 10) for i in range(len(q))]
    assert calls[0] == len(q) * DIM and set(calls[1:]) == {before}
    assert faiss.cvar.distance_compute_blas_threshold == before
    np.testing.assert_array_equal(batch_rows, np.vstack([r for _, r in single]))
    np.testing.assert_allclose(batch_scores, np.vstack([s for s, _ in single]), atol=1e-4)


FACTORIES = [
    "Flat",
    "HNSW32",
    "IVF8,Flat",
    "IVF8,PQ4np",
    "OPQ4,IVF8,PQ4x4",
    "HNSW16,SQ8",
    "IVF8_HNSW8,PQ4x4",
]


@pytest.mark.parametrize("factory", FACTORIES)
def test_every_factory_returns_ids_and_exact_vectors(data, factory):
    ids, x, q = data
    index = VectorIndex(DIM, factory, metric="ip")
    index.add(ids, x)
    assert index.is_trained
    scores, got = index.search(q, 5)
    assert [len(g) for g in got] == [5] * len(q)
    assert all(d in set(ids) for g in got for d in g)
    assert np.all(np.diff(scores, axis=1) <= 1e-5)  # best first
    # full-precision vectors come back exactly, even for lossy codes
    some = ["d3", "d999", "d0"]
    np.testing.assert_array_equal(index.vectors(some), x[[3, 999, 0]])
    np.testing.assert_array_equal(index.vectors_at([5, 6]), x[[5, 6]])


def test_query_time_parameters(data):
    ids, x, q = data
    exact = VectorIndex(DIM, "Flat")
    exact.add(ids, x)
    _, ref = exact.search(q, 10)
    ivf = VectorIndex(DIM, "IVF8,Flat")
    ivf.add(ids, x)
    _, all_lists = ivf.search(q, 10, nprobe=8)
    assert all_lists == ref  # probing every list is exhaustive
    assert faiss.extract_index_ivf(ivf.faiss_index).nprobe == 1  # not changed by the call
    hnsw = VectorIndex(DIM, "HNSW32")
    hnsw.add(ids, x)
    _, wide = hnsw.search(q, 10, efSearch=512)
    assert np.mean([len(set(a) & set(b)) / 10 for a, b in zip(wide, ref)]) > 0.95
    with pytest.raises(RankloopError, match="applies to IVF"):
        exact.search(q, 10, nprobe=4)
    with pytest.raises(RankloopError, match="unknown search parameter"):
        ivf.search(q, 10, nprob=4)
    opq = VectorIndex(DIM, "OPQ4,IVF8_HNSW8,PQ4x4")
    opq.add(ids, x)
    s1, _ = opq.search(q, 10, nprobe=8, quantizer_efSearch=16)
    assert np.isfinite(s1).all()


def test_refine_with_stored_vectors_recovers_exact_ranking(data):
    ids, x, q = data
    exact = VectorIndex(DIM, "Flat")
    exact.add(ids, x)
    ref_scores, ref = exact.search(q, 10)
    pq = VectorIndex(DIM, "IVF8,PQ4x4")
    pq.add(ids, x)
    scores, got = pq.search(q, 10, refine=N, nprobe=8)
    assert got == ref
    np.testing.assert_allclose(scores, ref_scores, rtol=1e-5, atol=1e-5)
    with pytest.raises(RankloopError, match="refine"):
        pq.search(q, 10, refine=5)


def test_missing_results_are_dropped_and_padded():
    index = VectorIndex(4, "Flat")
    assert index.search(np.ones((2, 4), np.float32), 3)[1] == [[], []]
    index.add(["a", "b"], np.eye(4, dtype=np.float32)[:2])
    scores, got = index.search(np.eye(4, dtype=np.float32)[:1], 5)
    assert got == [["a", "b"]]
    assert scores.shape == (1, 5) and np.isneginf(scores[0, 2:]).all()
    _, rows = index.search_rows(np.eye(4, dtype=np.float32)[:1], 5)
    assert rows.tolist() == [[0, 1, -1, -1, -1]]


def test_l2_scores_are_negated_squared_distances():
    index = VectorIndex(2, "Flat", metric="l2")
    index.add(["o", "far"], np.array([[0, 0], [3, 4]], np.float32))
    scores, got = index.search(np.array([[0, 0]], np.float32), 2)
    assert got == [["o", "far"]] and scores.tolist() == [[0.0, -25.0]]


def test_bad_input_gives_clear_errors(data):
    _, x, _ = data
    index = VectorIndex(DIM, "Flat")
    with pytest.raises(RankloopError, match="dimension 8 but the index has dimension 16"):
        index.add(["a"], np.zeros((1, 8), np.float32))
    bad = x[:3].copy()
    bad[1, 2] = np.nan
    with pytest.raises(RankloopError, match="row 1 contains NaN"):
        index.add(["a", "b", "c"], bad)
    with pytest.raises(RankloopError, match="duplicate id 'a'"):
        index.add(["a", "a"], x[:2])
    with pytest.raises(RankloopError, match="3 ids for 2 vectors"):
        index.add(["a", "b", "c"], x[:2])
    assert len(index) == 0  # nothing was added by the failed calls
    index.add(["a", "b"], x[:2])
    with pytest.raises(RankloopError, match="already in the index"):
        index.add(["c", "b"], x[2:4])
    with pytest.raises(RankloopError, match="dimension"):
        index.search(np.zeros((1, 3), np.float32), 1)
    with pytest.raises(RankloopError, match="NaN"):
        index.search(np.full((1, DIM), np.nan, np.float32), 1)
    with pytest.raises(RankloopError, match="not in the index"):
        index.vectors(["zzz"])
    with pytest.raises(RankloopError, match="k must be"):
        index.search(x[:1], 0)
    with pytest.raises(ConfigError, match="FAISS cannot build"):
        VectorIndex(DIM, "NotAnIndex12")
    with pytest.raises(ConfigError, match="metric"):
        VectorIndex(DIM, "Flat", metric="dot")


def test_too_few_training_points():
    index = VectorIndex(DIM, "IVF64,Flat")
    with pytest.raises(RankloopError, match=r"cannot train 'IVF64,Flat' on 10 vectors"):
        index.add([str(i) for i in range(10)], np.ones((10, DIM), np.float32))
    assert len(index) == 0


def test_explicit_training_on_a_seeded_sample(data):
    ids, x, q = data
    a, b = VectorIndex(DIM, "IVF8,Flat"), VectorIndex(DIM, "IVF8,Flat")
    for index in (a, b):
        index.train(x.astype(np.float64), max_points=200, seed=3)  # any float dtype is accepted
        assert index.is_trained and len(index) == 0
        index.add(ids, x)
    assert a.search(q, 5, nprobe=2)[1] == b.search(q, 5, nprobe=2)[1]  # same sample, same index


def test_row_addressed_index():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 8)).astype(np.float32)
    index = VectorIndex(8, "Flat", metric="l2")
    index.add(None, x)
    index.add(None, x[:5] + 0.01)
    _, rows = index.search_rows(x[:2], 1)
    assert rows[:, 0].tolist() == [0, 1]
    with pytest.raises(RankloopError, match="row-addressed"):
        index.search(x[:2], 1)
    with pytest.raises(RankloopError, match="row-addressed"):
        index.add(["a"], x[:1])
    np.testing.assert_array_equal(index.vectors_at([50, 51]), x[:2] + 0.01)


def _build(ids, x, factory="Flat"):
    index = VectorIndex(DIM, factory, metric="cosine")
    index.add(ids, x)
    return index


@pytest.mark.parametrize("factory", ["Flat", "HNSW32", "IVF8,PQ4x4"])
def test_save_load_round_trip(tmp_path, data, factory):
    ids, x, q = data
    index = _build(ids, x, factory)
    index.save(tmp_path / "idx")
    loaded = VectorIndex.load(tmp_path / "idx", verify=True)
    assert (loaded.factory, loaded.metric, loaded.dim, len(loaded)) == (factory, "cosine", DIM, N)
    assert loaded.ids == ids
    assert isinstance(loaded._store(), np.memmap)
    s0, i0 = index.search(q, 7)
    s1, i1 = loaded.search(q, 7)
    assert i0 == i1
    np.testing.assert_array_equal(s0, s1)
    np.testing.assert_array_equal(loaded.vectors(["d9"]), index.vectors(["d9"]))
    meta = json.loads((tmp_path / "idx" / "meta.json").read_text())
    assert (
        meta["factory"] == factory
        and meta["count"] == N
        and set(meta["files"])
        == {
            "index.faiss",
            "vectors.npy",
            "ids.json",
        }
    )
    # a loaded (memory-mapped) index accepts more vectors
    loaded.add(["new"], x[:1])
    assert loaded.vectors(["new"]).shape == (1, DIM) and len(loaded) == N + 1


@pytest.mark.parametrize("victim", ["vectors.npy", "index.faiss", "ids.json"])
def test_truncated_file_raises_index_corrupt(tmp_path, data, victim):
    ids, x, _ = data
    _build(ids, x).save(tmp_path / "idx")
    path = tmp_path / "idx" / victim
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(IndexCorruptError, match="truncated"):
        VectorIndex.load(tmp_path / "idx")


@pytest.mark.parametrize("victim", ["vectors.npy", "index.faiss"])
def test_same_size_damage_caught_by_default(tmp_path, data, victim):
    """Bytes flipped in the middle of a file: a plain load (verify is the default) refuses,
    naming the file; `verify=False` is the opt-out that loads it unchecked."""
    ids, x, q = data
    index = _build(ids, x)
    index.save(tmp_path / "idx")
    path = tmp_path / "idx" / victim
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2 : len(raw) // 2 + 4] = bytes(b ^ 0xFF for b in raw[len(raw) // 2 :][:4])
    path.write_bytes(bytes(raw))
    with pytest.raises(IndexCorruptError, match=f"{victim}: SHA-256 does not match"):
        VectorIndex.load(tmp_path / "idx")
    unchecked = VectorIndex.load(tmp_path / "idx", verify=False)  # what verify protects against
    rows = np.arange(N)
    assert not (
        np.array_equal(unchecked.search(q, N)[0], index.search(q, N)[0])
        and np.array_equal(unchecked.vectors_at(rows), index.vectors_at(rows))
    )


def test_missing_or_foreign_directory(tmp_path):
    with pytest.raises(RankloopError, match="no index"):
        VectorIndex.load(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(IndexCorruptError, match=r"meta\.json is missing"):
        VectorIndex.load(tmp_path / "empty")
    (tmp_path / "empty" / "meta.json").write_text("{not json")
    with pytest.raises(IndexCorruptError, match="unreadable"):
        VectorIndex.load(tmp_path / "empty")


@pytest.mark.parametrize("where", ["np.save", "faiss.write_index"])
def test_interrupted_save_keeps_previous_index(tmp_path, data, monkeypatch, where):
    ids, x, q = data
    old = _build(ids[:100], x[:100])
    old.save(tmp_path / "idx")
    new = _build(ids, x)

    def crash(*args, **kwargs):
        target = Path(str(args[1] if where == "faiss.write_index" else args[0]))
        target.write_bytes(b"partial")  # a half-written file, then the "kill"
        raise KeyboardInterrupt

    if where == "np.save":
        monkeypatch.setattr(index_mod.np, "save", crash)
    else:
        monkeypatch.setattr(index_mod.faiss, "write_index", crash)
    with pytest.raises(KeyboardInterrupt):
        new.save(tmp_path / "idx")
    monkeypatch.undo()
    loaded = VectorIndex.load(tmp_path / "idx", verify=True)
    assert len(loaded) == 100 and loaded.ids == ids[:100]
    assert loaded.search(q, 3)[1] == old.search(q, 3)[1]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["idx"]  # no temp dirs left


def test_to_gpu_without_gpu_is_a_clear_error(data):
    if gpu_available():
        pytest.skip("a GPU is present")
    ids, x, _ = data
    with pytest.raises(RankloopError, match="faiss-gpu"):
        _build(ids, x).to_gpu()


@pytest.mark.gpu
@pytest.mark.skipif(not gpu_available(), reason="FAISS sees no GPU")
@pytest.mark.parametrize("factory", ["Flat", "IVF8,Flat"])
def test_gpu_search_matches_cpu(tmp_path, data, factory):
    ids, x, q = data
    cpu = _build(ids, x, factory)
    s_cpu, i_cpu = cpu.search(q, 5, **({"nprobe": 8} if "IVF" in factory else {}))
    gpu = _build(ids, x, factory).to_gpu()
    assert gpu.on_gpu
    s_gpu, i_gpu = gpu.search(q, 5, **({"nprobe": 8} if "IVF" in factory else {}))
    np.testing.assert_allclose(s_gpu, s_cpu, rtol=1e-3, atol=1e-3)
    assert np.mean([len(set(a) & set(b)) / 5 for a, b in zip(i_gpu, i_cpu)]) > 0.95
    gpu.save(tmp_path / "g")
    assert VectorIndex.load(tmp_path / "g").search(q, 5)[1] == i_cpu

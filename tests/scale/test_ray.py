"""`--ray` on a real two-node Ray cluster on the loopback interface: encoding shards through Ray
Data's actor pool, the CLI's sharded index build, and experiment seeds and grids as Ray tasks,
each equal to the local result.

The cluster is Ray's own multi-node test cluster (`ray.cluster_utils.Cluster`: a head node and
a second node, each its own raylet with one CPU), started on 127.0.0.1 and torn down at the end.
`ray start --address` cannot be used for the second node: Ray 2.x resolves a 127.0.0.1 address
to the machine's routable one for any node that joins a cluster, and then listens on all
interfaces.
"""

from __future__ import annotations

import ipaddress
import os
import subprocess
import sys

import numpy as np
import pytest

_RAY_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0"}
os.environ.update(_RAY_ENV)  # read by Ray when it is imported: keep every server on the loopback
pytest.importorskip("ray", reason="the scale extra (Ray) is not installed")

from rankloop import scale  # noqa: E402
from rankloop.data.types import Corpus  # noqa: E402
from rankloop.embed.encoders import Encoder  # noqa: E402
from rankloop.embed.shards import CorpusSource, EmbeddingShards, encode_shards  # noqa: E402
from rankloop.retrieval.dense import DenseRetriever  # noqa: E402


@pytest.fixture(scope="module")
def cluster():
    """Two Ray nodes, one CPU each, on 127.0.0.1; stopped after the module's tests."""
    import ray
    from ray.cluster_utils import Cluster

    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    try:
        c.add_node(num_cpus=1)
        c.wait_for_nodes()
        yield c
    finally:
        if ray.is_initialized():
            ray.shutdown()
        c.shutdown()


@pytest.fixture(scope="module")
def corpus() -> Corpus:
    rng = np.random.default_rng(0)
    words = "retrieval feedback click rank dense sparse index query document model".split()
    texts = [" ".join(rng.choice(words, size=int(rng.integers(3, 12)))) for _ in range(48)]
    return Corpus([f"d{i}" for i in range(48)], [""] * 48, texts, name="tiny")


def test_two_loopback_nodes_and_nothing_else_listening(cluster) -> None:
    import psutil
    import ray

    with scale.using_ray(cluster.address):
        nodes = [n for n in ray.nodes() if n["Alive"]]
        assert len(nodes) == 2
        assert {n["NodeManagerAddress"] for n in nodes} == {"127.0.0.1"}
        assert [n["Resources"]["CPU"] for n in nodes] == [1.0, 1.0]
    pids = {p.pid for node in cluster.list_all_nodes() for p in _node_processes(node)}
    exposed = [
        c
        for c in psutil.net_connections(kind="inet")
        if c.status == psutil.CONN_LISTEN and c.pid in pids and not _loopback(c.laddr.ip)
    ]
    assert pids and not exposed, exposed


def _loopback(ip: str) -> bool:
    addr = ipaddress.ip_address(ip.split("%")[0])
    mapped = getattr(addr, "ipv4_mapped", None)
    return (mapped or addr).is_loopback


def _node_processes(node) -> list:
    import psutil

    out = []
    for infos in node.all_processes.values():
        for info in infos:
            try:
                proc = psutil.Process(info.process.pid)
                out += [proc, *proc.children(recursive=True)]
            except psutil.NoSuchProcess:
                pass
    return out


def test_map_tasks_keeps_order_and_raises(cluster) -> None:
    def _fail_on_3(x: int) -> int:  # a closure: shipped by value (this module is not on workers)
        if x == 3:
            raise ValueError(f"bad item {x}")
        return x

    with scale.using_ray(cluster.address):
        assert scale.ray_active()
        assert list(scale.map_tasks(lambda x: x * x, list(range(6)))) == [0, 1, 4, 9, 16, 25]
        with pytest.raises(ValueError, match="bad item 3"):
            list(scale.map_tasks(_fail_on_3, [1, 2, 3]))
    assert not scale.ray_active()


def test_shards_over_the_actor_pool_equal_local_and_cli_build(cluster, corpus, tmp_path) -> None:
    enc = Encoder(show_progress=False, max_length=32)
    local = encode_shards(CorpusSource(corpus), enc, tmp_path / "local", shard_size=10)
    with scale.using_ray(cluster.address):
        remote = encode_shards(CorpusSource(corpus), enc, tmp_path / "ray", shard_size=10)
    (ids_a, vec_a), (ids_b, vec_b) = _all(local), _all(remote)
    assert ids_a == ids_b == corpus.ids
    np.testing.assert_allclose(vec_a, vec_b, atol=1e-6)
    np.testing.assert_allclose(vec_a, enc.encode_docs(corpus.doc_texts()), atol=1e-6)
    cached = Encoder(show_progress=False, max_length=32, cache_dir=tmp_path / "cache")
    with scale.using_ray(cluster.address):  # encode_corpus goes through the shards too
        np.testing.assert_allclose(cached.encode_corpus(corpus), vec_a, atol=1e-6)
    assert [p.suffix for p in (tmp_path / "cache").iterdir()] == [".npy"]  # shards removed

    # the CLI on the same cluster: a TSV collection -> shards -> IVF index, equal to a local build
    tsv = tmp_path / "collection.tsv"
    tsv.write_text("".join(f"{i}\t{t}\n" for i, t in zip(corpus.ids, corpus.texts)), "utf-8")
    outs = {}
    for name, extra in (("local", []), ("ray", ["--ray", cluster.address])):
        out = tmp_path / f"index-{name}"
        cmd = [sys.executable, "-m", "rankloop.cli", "index", "build", "--collection", str(tsv),
               "--kind", "dense", "--factory", "IVF4,Flat", "--max-length", "32",
               "--shard-size", "10", "--out", str(out), *extra]  # fmt: skip
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                             env={**os.environ, **_RAY_ENV})  # fmt: skip
        assert res.returncode == 0, res.stderr[-3000:]
        outs[name] = DenseRetriever.load(out)
    a, b = outs["local"].index, outs["ray"].index
    assert a.ids == b.ids == corpus.ids
    np.testing.assert_allclose(a.vectors(a.ids), b.vectors(b.ids), atol=1e-6)
    q = vec_a[:5]
    assert a.search(q, 5, nprobe=4)[1] == b.search(q, 5, nprobe=4)[1]


def _all(shards: EmbeddingShards) -> tuple[list[str], np.ndarray]:
    parts = list(shards)
    return [i for ids, _ in parts for i in ids], np.concatenate([v for _, v in parts])


def test_recsys_seeds_and_grids_as_ray_tasks_equal_local(cluster, coat_dir) -> None:
    from rankloop.experiments.recsys import RecsysConfig, run_recsys

    raw = {
        "name": "tiny", "dataset": "coat", "path": str(coat_dir), "head_users": 50, "seeds": 2,
        "popularity_buckets": 2, "val_repeats": 2,
        "models": [
            {"name": "WMF", "type": "wmf", "params": {"factors": 4, "iterations": 2},
             "grid": {"regularization": [0.01, 1.0]}},
            {"name": "Rel-MF", "type": "relmf",
             "params": {"factors": 4, "iterations": 20, "batch_size": 128}},
            {"name": "Popularity", "type": "popularity"},
        ],
    }  # fmt: skip
    local = run_recsys(RecsysConfig.from_dict(raw), verbose=False)
    with scale.using_ray(cluster.address):
        remote = run_recsys(RecsysConfig.from_dict(raw), verbose=False)
    assert _metrics(remote.per_seed) == _metrics(local.per_seed)
    assert remote.tuning == local.tuning


def _metrics(per_seed: dict) -> dict:
    return {
        seed: {m: {k: v for k, v in r.items() if k != "fit_seconds"} for m, r in row.items()}
        for seed, row in per_seed.items()
    }


def test_loop_and_bandit_seeds_as_ray_tasks_equal_local(cluster, tmp_path) -> None:
    from rankloop.experiments.bandits import BanditConfig, run_bandits
    from rankloop.loop.run import LoopConfig, run_loop

    path = tmp_path / "rec.yaml"
    path.write_text(
        "name: rec\nworld: {type: recommend, dataset: synthetic, n_users: 40, n_items: 30}\n"
        "rounds: 2\nsessions: 60\nk: 5\nseeds: 2\nlearners:\n"
        "  - {name: wmf, type: recommender, params: {model: wmf}}\n"
        "  - {name: linucb, type: bandit, params: {policy: linucb}}\n",
        encoding="utf-8",
    )
    local = run_loop(LoopConfig.from_yaml(path), tmp_path / "local", verbose=False)
    bandits = {
        "name": "tiny", "rounds": 400, "users_per_step": 40, "seeds": 2, "checkpoints": 4,
        "exposure_windows": 2, "env": {"n_candidates": 10, "slate_size": 3, "delay": 40},
        "world": {"type": "synthetic", "n_users": 30, "n_items": 25, "dim": 4, "random_state": 3},
        "policies": [{"name": "Random", "type": "random"},
                     {"name": "LinUCB", "type": "linucb", "params": {"alpha": 0.3}}],
    }  # fmt: skip
    b_local = run_bandits(BanditConfig.from_dict(bandits), verbose=False)
    with scale.using_ray(cluster.address):
        remote = run_loop(LoopConfig.from_yaml(path), tmp_path / "ray", verbose=False)
        b_remote = run_bandits(BanditConfig.from_dict(bandits), verbose=False)
    strip = ("loop_seconds", "learner_seconds", "learn_seconds", "serve_ms")
    for a, b in zip(local.runs, remote.runs, strict=True):
        assert (a["learner"], a["seed"], a["final"]) == (b["learner"], b["seed"], b["final"])
        assert [{k: v for k, v in r.items() if not k.startswith(strip)} for r in a["rows"]] == [
            {k: v for k, v in r.items() if not k.startswith(strip)} for r in b["rows"]
        ]
    for a, b in zip(b_local.runs, b_remote.runs, strict=True):
        assert (a["policy"], a["seed"]) == (b["policy"], b["seed"])
        assert (a["clicks"], a["expected_clicks"]) == (b["clicks"], b["expected_clicks"])
    clicks = sorted(p.name for p in (tmp_path / "ray" / "clicks").iterdir())
    assert clicks == sorted(p.name for p in (tmp_path / "local" / "clicks").iterdir())


def test_without_ray_installed_the_flag_fails_clearly(monkeypatch) -> None:
    from rankloop.errors import ConfigError

    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(ConfigError, match=r"rankloop\[scale\]"), scale.using_ray(None):
        pass


@pytest.mark.gpu
def test_shards_on_a_gpu_actor_pool(corpus, tmp_path) -> None:
    """With --device cuda, each actor takes one GPU of the cluster (skips without a GPU)."""
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("torch sees no CUDA GPU")
    cpu = encode_shards(CorpusSource(corpus), Encoder(show_progress=False, device="cpu"),
                        tmp_path / "cpu", shard_size=16)  # fmt: skip
    gpu_enc = Encoder(show_progress=False, device="cuda")
    with scale.using_ray(None):
        gpu = encode_shards(CorpusSource(corpus), gpu_enc, tmp_path / "gpu", shard_size=16)
    np.testing.assert_allclose(_all(cpu)[1], _all(gpu)[1], atol=1e-3)

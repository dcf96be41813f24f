"""The stage contract: composition, parameters, the textual form, parsing errors, Experiment."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import rankloop.stages  # noqa: F401 - registers every stage
from rankloop._runtime import read_yaml
from rankloop.data.types import Corpus, Qrels, Queries, Run
from rankloop.errors import ConfigError, RankloopError
from rankloop.pipeline import STAGES, Compose, Cutoff, Experiment, Fuse, Stage, parse
from rankloop.retrieval.context import Context
from rankloop.stages import parse_pipelines

CORPUS = Corpus(["d1", "d2", "d3", "d4"], ["", "", "", ""], ["a", "b", "c", "d"], "toy")
QUERIES = Queries(["q1", "q2"], ["x", "y"], "toy")
QRELS = Qrels({"q1": {"d1": 1}, "q2": {"d3": 1}})


@pytest.fixture(scope="module")
def ctx() -> Context:
    return Context(CORPUS, verbose=False)


class Fixed(Stage):
    """A stage returning a fixed run (tests only)."""

    ALIAS = "fixed"

    def __init__(self, ctx: Context | None = None, scores: list[float] | None = None) -> None:
        self.ctx, self.scores = ctx, scores

    def transform(self, queries: Queries, run: Run | None = None) -> Run:
        s = self.scores or [4.0, 3.0, 2.0, 1.0]
        return Run({q: dict(zip(CORPUS.ids, s)) for q in queries.ids}, self.name)


class Reverse(Stage):
    """Re-ranks its input in reverse (tests only)."""

    ALIAS = "reverse"
    NEEDS_INPUT = True

    def __init__(self, ctx: Context | None = None) -> None:
        self.ctx = ctx

    def transform(self, queries: Queries, run: Run | None = None) -> Run:
        assert run is not None
        return Run({q: {d: -s for d, s in docs.items()} for q, docs in run.data.items()}, "rev")


def test_composition_operators() -> None:
    a, b = Fixed(), Fixed(scores=[1.0, 2.0, 3.0, 4.0])
    then = a >> Reverse()
    assert isinstance(then, Compose)
    assert then(QUERIES)["q1"] == {"d1": -4.0, "d2": -3.0, "d3": -2.0, "d4": -1.0}
    total = a + b
    assert isinstance(total, Fuse) and total(QUERIES)["q1"] == {d: 5.0 for d in CORPUS.ids}
    cut = a % 2
    assert isinstance(cut, Cutoff) and list(cut(QUERIES)["q1"]) == ["d1", "d2"]
    assert str(a >> Reverse() % 2) == "fixed >> reverse % 2"
    assert str((a + b) % 2) == "(fixed + fixed(scores=[1.0, 2.0, 3.0, 4.0])) % 2"
    with pytest.raises(RankloopError, match="re-ranks"):
        Reverse()(QUERIES)


def test_round_trip_and_params(ctx: Context) -> None:
    texts = [
        "bm25 >> rocchio(fb_docs=5, beta=0.5)",
        "fuse(dense, bm25_rm3(fb_docs=5, fb_terms=20), method='rrf', rrf_k=10.0)",
        "(dense + bm25) % 100 >> lol(lambda_cr=0.0, max_train_queries=100)",
        "maxsim >> colbert_prf(mode='reranker', fb_embs=5)",
        "dense >> corocchio(ips=False)",
        "hybrid(method='combsum', norm='zscore')",
    ]
    for text in texts:
        stage = parse(text, ctx)
        again = parse(str(stage), ctx)
        assert str(again) == str(stage)
        assert again.get_params(deep=False).keys() == stage.get_params(deep=False).keys()
    p = parse("bm25 >> rocchio(fb_docs=5, beta=0.5)", ctx)
    assert p.get_params()["1__fb_docs"] == 5
    p.set_params(**{"1__beta": 0.25, "0__k1": 1.2})
    assert str(p) == "bm25(k1=1.2) >> rocchio(fb_docs=5, beta=0.25)"
    with pytest.raises(ConfigError, match="valid parameters"):
        p.stages[1].set_params(bta=0.5)
    # expensive state is shared by reference, never copied
    assert parse("dense", ctx).ctx is parse("rocchio", ctx).ctx is ctx


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("bm25 >> rochio(fb_docs=3)", "unknown stage 'rochio'; valid stages: .*rocchio"),
        ("rocchio(bta=0.5)", "has no parameter 'bta'; valid parameters: fb_docs, alpha, beta"),
        ("rocchio(fb_docs='three')", "fb_docs: input should be a valid integer"),
        ("rocchio(alpha=nan)", "unknown stage 'nan'"),
        ("bm25 % 0", "positive int cut-off"),
        ("bm25 >>", "not a pipeline expression"),
        ("bm25 - dense", r"only `>>`, `\+` and `%`"),
        ("ref('nope')", "names no earlier pipeline"),
        ("colbert_prf(mode='both')", "expected one of 'ranker', 'reranker'"),
        ("lol(fb_limit=9)", "fb_limit must lie in 1..fb_docs"),
    ],
)
def test_parse_errors(ctx: Context, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse(text, ctx, where="cfg.yaml:3")


def test_config_typo_names_file_line_and_valid_names(ctx: Context, tmp_path: Path) -> None:
    cfg = tmp_path / "prf.yaml"
    cfg.write_text(
        "dataset: scifact\npipelines:\n  dense: dense\n"
        "  rb: \"bm25 >> rocchio(fb_docs=3, alpha=1.0, bta=0.5)\"\n",
        encoding="utf-8",
    )
    raw = read_yaml(cfg)
    with pytest.raises(ConfigError) as err:
        parse_pipelines(raw["pipelines"], ctx)
    msg = str(err.value)
    assert f"{cfg}:4" in msg and "'bta'" in msg and "valid parameters: fb_docs, alpha, beta" in msg


def test_config_references_and_the_prf_runner_checks(tmp_path: Path) -> None:
    from rankloop.experiments.prf import PRFConfig

    cfg = tmp_path / "prf.yaml"
    cfg.write_text("dataset: scifact\nbaseline: dense\nsweep: [nope]\npipelines:\n  dense: dense\n",
                   encoding="utf-8")  # fmt: skip
    with pytest.raises(ConfigError, match=rf"{cfg}:1: sweep names unknown pipelines \['nope'\]"):
        PRFConfig.from_yaml(cfg)
    cfg.write_text("dataset: scifact\nmethodz: []\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=rf"{cfg}:2: unknown key 'methodz'"):
        PRFConfig.from_yaml(cfg)


def test_refs_reuse_the_same_stage(ctx: Context) -> None:
    raw = {"a": "bm25", "b": "fuse(a, dense, method='rrf')", "c": "fuse(ref('a'), ref('b'))"}
    pipes = parse_pipelines(raw, ctx)
    assert pipes["b"].stages[0] is pipes["a"]
    assert str(pipes["c"]) == "bm25 + fuse(bm25, dense, method='rrf')"


def test_experiment_table_with_seconds() -> None:
    pipes = {"fixed": Fixed(), "reversed": Fixed() >> Reverse()}
    runs: dict[str, Run] = {}
    table = Experiment(pipes, QUERIES, QRELS, ["ndcg_cut_10"], baseline="fixed", runs=runs)
    assert table.systems == ["fixed", "reversed"]
    assert table.mean["fixed"]["ndcg_cut_10"] > table.mean["reversed"]["ndcg_cut_10"]
    assert set(table.seconds) == {"fixed", "reversed"} and "seconds" in table.to_markdown()
    assert runs["reversed"].name == "reversed"


def test_every_registered_stage_has_a_text_form(ctx: Context) -> None:
    for name in STAGES.names():
        if name in ("cross_encoder",):  # needs a model path
            continue
        stage = parse(name, ctx)
        assert str(parse(str(stage), ctx)) == str(stage)


def test_ltr_stage_fits_on_the_incoming_run(ctx: Context) -> None:
    from rankloop.rerank.stages import LtrReranker

    ltr = LtrReranker(ctx, epochs=20, depth=3, k=4)
    pipe = Fixed() >> ltr
    with pytest.raises(RankloopError, match="not trained"):
        pipe(QUERIES)
    pipe.fit(QUERIES, QRELS)
    run = pipe(QUERIES)
    for q in QUERIES.ids:
        assert set(run[q]) == set(CORPUS.ids)
        assert [d for d, _ in run.ranked(q)][3] == "d4"  # below the re-ranked top 3, old order
    ltr.set_params(epochs=5)
    assert ltr.model_ is None  # learned state dropped with a parameter change


def test_pipeline_cli_lists_and_rejects(capsys: pytest.CaptureFixture[str]) -> None:
    from rankloop.cli import main

    assert main(["stages"]) == 0
    assert "rocchio(fb_docs=3" in capsys.readouterr().out
    if os.environ.get("RANKLOOP_DATA"):
        assert main(["pipeline", "dense >> rochio", "--quiet"]) == 2
        assert "unknown stage 'rochio'" in capsys.readouterr().err


def test_memo_follows_learned_state(ctx: Context) -> None:
    from rankloop.rerank.stages import LtrReranker

    ctx.forget()
    pipe = Fixed(ctx) >> LtrReranker(ctx, epochs=5, depth=3, k=4)
    pipe.fit(QUERIES, QRELS)
    first = pipe(QUERIES)
    assert pipe(QUERIES) is first  # memoised in the shared context
    pipe.fit(QUERIES, QRELS)  # a new model: the memo must not serve the old run
    assert pipe(QUERIES) is not first

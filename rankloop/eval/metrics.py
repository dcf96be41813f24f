"""trec_eval-exact ranking measures, vectorised over queries with numpy (no JIT, fast on call one).

Semantics are trec_eval's (checked against pytrec_eval to 1e-9):

- a run is ordered by score descending, then doc id descending; its rank column is ignored;
  scores are compared as 32-bit floats, because trec_eval stores them as C `float` (scores
  that differ only beyond float32 precision tie, and are ordered by doc id);
- binary measures count a doc as relevant when its grade is >= `level` (trec_eval `-l`);
- nDCG gains are the grades (grades <= 0 give no gain), discounted by log2(rank + 1), and the
  ideal ranking is built from every judged doc of the query;
- unjudged docs are non-relevant; qrels grades < 0 mean "in the pool but unjudged" (they give
  no gain, are not relevant, and bpref skips them);
- queries in the run but not in the qrels are ignored; so are qrels queries with no judgement;
  a qrels query present in the run with no retrieved doc scores 0 on every measure;
- `complete=True` (trec_eval `-c`) reports every qrels query, missing ones scoring 0, so the
  means run over all qrels queries; otherwise over the queries found in both.

Measure names follow pytrec_eval: `ndcg`, `ndcg_cut_10`, `map`, `map_cut_100`, `P_5`,
`recall_1000`, `recip_rank`, `recip_rank_cut_10` (MRR@10), `Rprec`, `bpref`, `success_1`, and
`judged_10`. trec_eval's `family.k1,k2` syntax (`ndcg_cut.10,100`, `P.5,10`) is accepted, and a
bare cutoff family (`P`, `recall`, `ndcg_cut`, `map_cut`, `success`) expands to trec_eval's
default cutoffs. `recip_rank_cut_k` is the reciprocal rank of the first relevant doc if it
ranks within k, else 0. `judged_k` is the fraction of the top min(k, retrieved) docs that appear
in the qrels at any grade (ir_measures' / PyTerrier's Judged@k, with trec_eval tie-breaking).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import chain, repeat

import numpy as np

from rankloop.data.types import Qrels, Run
from rankloop.errors import RankloopError

__all__ = ["EvalResult", "Evaluator", "Measure", "evaluate", "parse_measures"]

_PLAIN = ("ndcg", "map", "recip_rank", "Rprec", "bpref")
_CUT = ("ndcg_cut", "map_cut", "P", "recall", "success", "judged", "recip_rank_cut")
_TREC_CUTOFFS = (5, 10, 15, 20, 30, 100, 200, 500, 1000)
_DEFAULT_CUTOFFS: dict[str, tuple[int, ...]] = {
    "P": _TREC_CUTOFFS,
    "recall": _TREC_CUTOFFS,
    "map_cut": _TREC_CUTOFFS,
    "ndcg_cut": _TREC_CUTOFFS,
    "success": (1, 5, 10),
}
_CUT_RE = re.compile(r"^(" + "|".join(sorted(_CUT, key=len, reverse=True)) + r")_(\d+)$")


@dataclass(frozen=True)
class Measure:
    """One measure: a family (e.g. `ndcg_cut`) and an optional rank cutoff."""

    family: str
    cutoff: int | None = None

    @property
    def name(self) -> str:
        """The pytrec_eval-style name, e.g. `ndcg_cut_10` or `map`."""
        return self.family if self.cutoff is None else f"{self.family}_{self.cutoff}"


def _cutoff(text: str, spec: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise RankloopError(f"measure {spec!r}: cutoff {text!r} is not a positive integer")
    return int(text)


def parse_measures(measures: str | Iterable[str]) -> list[Measure]:
    """Parse measure names (`ndcg_cut_10`, `P.5,10`, `map`, ...) into unique `Measure`s, in order."""
    if isinstance(measures, str):
        measures = [measures]
    out: list[Measure] = []
    for spec in measures:
        spec = spec.strip()
        if spec in _PLAIN:
            found = [Measure(spec)]
        elif "." in spec:
            family, params = spec.split(".", 1)
            if family not in _CUT:
                raise RankloopError(f"measure {spec!r}: {family!r} takes no cutoffs")
            found = [Measure(family, _cutoff(p.strip(), spec)) for p in params.split(",")]
        elif spec in _CUT:
            if spec not in _DEFAULT_CUTOFFS:
                raise RankloopError(f"measure {spec!r} needs a cutoff, e.g. {spec}_10")
            found = [Measure(spec, k) for k in _DEFAULT_CUTOFFS[spec]]
        elif m := _CUT_RE.match(spec):
            found = [Measure(m.group(1), _cutoff(m.group(2), spec))]
        else:
            known = ", ".join([*_PLAIN, *(f"{c}_k" for c in _CUT)])
            raise RankloopError(f"unknown measure {spec!r}; known: {known}")
        out.extend(m for m in found if m not in out)
    if not out:
        raise RankloopError("no measure given")
    return out


@dataclass(frozen=True)
class EvalResult:
    """Per-query values (`values[measure]`, aligned with `query_ids`) and their means."""

    measures: tuple[str, ...]
    query_ids: list[str]
    values: dict[str, np.ndarray]
    level: int = 1
    complete: bool = False

    @property
    def mean(self) -> dict[str, float]:
        """Mean of each measure over `query_ids` (trec_eval's `all` line)."""
        return {
            m: float(np.mean(self.values[m])) if len(self.query_ids) else 0.0 for m in self.measures
        }

    @property
    def per_query(self) -> dict[str, dict[str, float]]:
        """pytrec_eval's shape: query id -> measure -> value."""
        cols = [self.values[m].tolist() for m in self.measures]
        return {q: dict(zip(self.measures, row)) for q, row in zip(self.query_ids, zip(*cols))}

    def to_dataframe(self):  # -> pandas.DataFrame (pandas imported lazily)
        """Per-query values as a DataFrame indexed by query id, one column per measure."""
        import pandas as pd

        return pd.DataFrame(
            {m: self.values[m] for m in self.measures},
            index=pd.Index(self.query_ids, name="query_id"),
        )


class Evaluator:
    """Evaluates runs against fixed qrels; qrels-side work is done once in `__init__`.

    `level` is the minimum grade counted relevant by binary measures; `complete=True` reports
    every judged qrels query, scoring 0 the ones missing from the run (trec_eval `-c`).
    """

    def __init__(
        self,
        qrels: Qrels,
        measures: str | Iterable[str],
        *,
        level: int = 1,
        complete: bool = False,
    ) -> None:
        if isinstance(level, bool) or not isinstance(level, (int, np.integer)) or level < 1:
            raise RankloopError(f"relevance level must be an integer >= 1, got {level!r}")
        self.measures = parse_measures(measures)
        self.level = int(level)
        self.complete = bool(complete)
        data = qrels.data
        self._qids = [q for q, docs in data.items() if docs]
        self._docs = [list(data[q]) for q in self._qids]
        nq = len(self._qids)
        self._cnt = np.fromiter(map(len, self._docs), np.int64, nq)
        self._off = np.concatenate([[0], np.cumsum(self._cnt)])
        self._grade = np.fromiter(
            chain.from_iterable(data[q].values() for q in self._qids), np.int64, int(self._off[-1])
        )
        jq = np.repeat(np.arange(nq), self._cnt)
        g = self._grade
        self._num_rel = np.bincount(jq, g >= self.level, nq)
        self._num_nonrel = np.bincount(jq, (g >= 0) & (g < self.level), nq)
        self._idcg = self._ideal_dcg(jq, nq)

    def _ideal_dcg(self, jq: np.ndarray, nq: int) -> dict[int | None, np.ndarray]:
        """Ideal DCG per qrels query (key None: uncut), for each nDCG cutoff requested."""
        cuts = {m.cutoff for m in self.measures if m.family in ("ndcg", "ndcg_cut")}
        if not cuts:
            return {}
        pos = self._grade > 0
        gq, gg = jq[pos], self._grade[pos]
        order = np.lexsort((-gg, gq))
        gq, gg = gq[order], gg[order]
        place = np.arange(len(gq)) - np.searchsorted(gq, gq) + 1
        disc = gg / np.log2(place + 1.0)
        return {
            k: np.bincount(gq, disc, nq)
            if k is None
            else np.bincount(gq[place <= k], disc[place <= k], nq)
            for k in cuts
        }

    @property
    def query_ids(self) -> list[str]:
        """The judged qrels queries, in qrels order."""
        return list(self._qids)

    def evaluate(self, run: Run) -> EvalResult:
        """Per-query values and means of every measure for `run`."""
        rd = run.data
        inrun = np.fromiter((q in rd for q in self._qids), bool, len(self._qids))
        sel = np.flatnonzero(inrun)
        if not len(sel) and not (self.complete and len(self._qids)):
            raise RankloopError(
                f"run {run.name!r} and the qrels share no query id "
                f"(run: {len(rd)} queries, qrels: {len(self._qids)} judged queries)"
            )
        vals = self._compute(rd, sel)
        names = tuple(m.name for m in self.measures)
        if self.complete:
            full = {}
            for m in names:
                full[m] = np.zeros(len(self._qids))
                full[m][sel] = vals[m]
            return EvalResult(names, list(self._qids), full, self.level, True)
        return EvalResult(names, [self._qids[i] for i in sel], vals, self.level, False)

    # -- the run -> arrays conversion ---------------------------------------------------------
    def _compute(self, rd: dict[str, dict[str, float]], sel: np.ndarray) -> dict[str, np.ndarray]:
        nq = len(sel)
        runs_q = [rd[self._qids[i]] for i in sel]
        cnt = self._cnt[sel]
        joff = np.concatenate([[0], np.cumsum(cnt)])
        nj = int(joff[-1])
        take = np.repeat(self._off[sel] - joff[:-1], cnt) + np.arange(nj)
        grade = self._grade[take]
        jq = np.repeat(np.arange(nq), cnt)
        # Score of each judged doc in the run (NaN: not retrieved; runs never hold NaN).
        with np.errstate(over="ignore"):  # trec_eval's float cast: huge scores become inf
            js = np.fromiter(
                chain.from_iterable(
                    map(rq.get, self._docs[i], repeat(np.nan))
                    for rq, i in zip(runs_q, sel.tolist())
                ),
                np.float32,
                nj,
            )
        nret = np.fromiter(map(len, runs_q), np.int64, nq)
        rank = self._ranks(runs_q, sel, nret, js, joff, jq)
        return self._measures(nq, nret, jq, grade, rank, sel)

    def _ranks(
        self,
        runs_q: list[dict[str, float]],
        sel: np.ndarray,
        nret: np.ndarray,
        js: np.ndarray,
        joff: np.ndarray,
        jq: np.ndarray,
    ) -> np.ndarray:
        """1-based trec_eval rank of each judged doc in its query's run (0: not retrieved).

        rank = 1 + #docs scored higher + #docs tied on score with a larger doc id. Each score
        becomes a uint64 key (query index, order-preserving bits of the float32 score), so one
        sort of all keys and one binary search per judged doc count the first two terms.
        """
        roff = np.concatenate([[0], np.cumsum(nret)])
        with np.errstate(over="ignore"):
            scores = np.fromiter(
                chain.from_iterable(rq.values() for rq in runs_q), np.float32, int(roff[-1])
            )
        if len(nret) and nret[0] > 0 and (nret == nret[0]).all():
            scores.reshape(len(nret), -1).sort(axis=1)  # equal depths: sort rows, keys follow
            keys = _score_keys(np.repeat(np.arange(len(nret)), nret), scores)
        else:
            keys = _score_keys(np.repeat(np.arange(len(nret)), nret), scores)
            keys.sort()
        ret = np.flatnonzero(~np.isnan(js))
        jkeys = _score_keys(jq[ret], js[ret])
        order = np.argsort(jkeys)  # sorted needles keep the binary search cache-friendly
        lo = np.empty_like(order)
        lo[order] = keys.searchsorted(jkeys[order], "left")  # keys[lo] is the doc's own key
        hi = lo + 1
        nxt = np.minimum(hi, len(keys) - 1)
        tie = np.flatnonzero((hi < len(keys)) & (keys[nxt] == jkeys))
        hi[tie] = keys.searchsorted(jkeys[tie], "right")
        rank = np.zeros(len(js), np.int64)
        rank[ret] = roff[jq[ret] + 1] - hi + 1
        tied = ret[tie]
        if len(tied):
            rank[tied] += self._tie_breaks(runs_q, sel, js, joff, jq, tied)
        return rank

    def _tie_breaks(
        self,
        runs_q: list[dict[str, float]],
        sel: np.ndarray,
        js: np.ndarray,
        joff: np.ndarray,
        jq: np.ndarray,
        tied: np.ndarray,
    ) -> np.ndarray:
        """For judged docs tied on score: how many tied docs have a larger id (rank before them).

        The run docs sharing a tied score and the tied judged docs are sorted together by
        (query, score, doc id, judged-last); a judged entry's answer is the count of run entries
        after it in its (query, score) group.
        """
        tq = jq[tied]
        run_q, run_s, run_id = [], [], []
        for k in np.unique(tq).tolist():
            rq = runs_q[k]
            with np.errstate(over="ignore"):
                scores = np.fromiter(rq.values(), np.float32, len(rq))
            pos = np.flatnonzero(np.isin(scores, js[tied[tq == k]])).tolist()
            keys = list(rq)
            run_id.extend(keys[p] for p in pos)
            run_s.append(scores[pos])
            run_q.append(np.full(len(pos), k))
        judged_id = [self._docs[sel[k]][j - joff[k]] for k, j in zip(tq.tolist(), tied.tolist())]
        n_run = len(run_id)
        q = np.concatenate([*run_q, tq])
        s = np.concatenate([*run_s, js[tied]])
        ids = np.array(run_id + judged_id, dtype=str)
        flag = np.r_[np.zeros(n_run, np.int8), np.ones(len(tied), np.int8)]
        order = np.lexsort((flag, ids, s, q))
        q, s, flag = q[order], s[order], flag[order]
        run_seen = np.cumsum(flag == 0)
        start = np.r_[True, (q[1:] != q[:-1]) | (s[1:] != s[:-1])]
        last = np.r_[np.flatnonzero(start)[1:] - 1, len(q) - 1]
        group_last = last[np.cumsum(start) - 1]
        out = np.empty(len(tied), np.int64)
        at = np.flatnonzero(flag == 1)
        out[order[at] - n_run] = run_seen[group_last[at]] - run_seen[at]
        return out

    # -- the measures, from (query, grade, rank) of judged docs --------------------------------
    def _measures(
        self,
        nq: int,
        nret: np.ndarray,
        jq: np.ndarray,
        grade: np.ndarray,
        rank: np.ndarray,
        sel: np.ndarray,
    ) -> dict[str, np.ndarray]:
        level = self.level
        num_rel = self._num_rel[sel].astype(np.float64)
        safe_rel = np.where(num_rel > 0, num_rel, 1.0)
        # Retrieved judged docs in (query, rank) order: trec_eval's summation order.
        ret = np.flatnonzero(rank > 0)
        order = ret[np.lexsort((rank[ret], jq[ret]))]
        rq, rg, rr = jq[order], grade[order], rank[order]
        is_rel = rg >= level
        # Relevant retrieved docs, with how many relevant docs rank at or above each one.
        lq, lr = rq[is_rel], rr[is_rel]
        lstart = np.searchsorted(lq, np.arange(nq))
        lcount = np.arange(len(lq)) - lstart[lq] + 1
        prec = lcount / lr
        found = np.searchsorted(lq, np.arange(nq), "right") > lstart
        first = np.zeros(nq, np.int64)  # rank of the first relevant doc, 0 if none retrieved
        first[found] = lr[lstart[found]]
        out: dict[str, np.ndarray] = {}
        for m in self.measures:
            k, fam = m.cutoff, m.family
            if fam == "map":
                v = np.bincount(lq, prec, nq) / safe_rel
            elif fam == "map_cut":
                v = np.bincount(lq[lr <= k], prec[lr <= k], nq) / safe_rel
            elif fam == "P":
                v = np.bincount(lq[lr <= k], minlength=nq) / k
            elif fam == "recall":
                v = np.bincount(lq[lr <= k], minlength=nq) / safe_rel
            elif fam == "success":
                v = ((first > 0) & (first <= k)).astype(np.float64)
            elif fam == "recip_rank":
                v = np.where(first > 0, 1.0 / np.maximum(first, 1), 0.0)
            elif fam == "recip_rank_cut":
                v = np.where((first > 0) & (first <= k), 1.0 / np.maximum(first, 1), 0.0)
            elif fam == "Rprec":
                v = np.bincount(lq[lr <= num_rel[lq]], minlength=nq) / safe_rel
            elif fam in ("ndcg", "ndcg_cut"):
                gain = rg > 0
                gq, gr = rq[gain], rr[gain]
                disc = rg[gain] / np.log2(gr + 1.0)
                cut = slice(None) if k is None else gr <= k
                dcg = np.bincount(gq[cut], disc[cut], nq)
                ideal = self._idcg[k][sel]
                v = np.where(ideal > 0, dcg / np.where(ideal > 0, ideal, 1.0), 0.0)
            elif fam == "bpref":
                v = self._bpref(nq, rq, rg, num_rel, safe_rel, sel)
            elif fam == "judged":
                n = np.bincount(jq[(rank > 0) & (rank <= k)], minlength=nq)
                v = np.where(nret > 0, n / np.maximum(np.minimum(nret, k), 1), 0.0)
            else:  # parse_measures admits only the families above
                raise RankloopError(f"measure family {fam!r} is not implemented")
            out[m.name] = v
        return out

    def _bpref(
        self,
        nq: int,
        rq: np.ndarray,
        rg: np.ndarray,
        num_rel: np.ndarray,
        safe_rel: np.ndarray,
        sel: np.ndarray,
    ) -> np.ndarray:
        """trec_eval bpref: each retrieved relevant doc scores 1 - min(n, R) / min(N, R), n the
        judged non-relevant docs ranked above it, N all judged non-relevant docs, R = #relevant."""
        keep = rg >= 0  # negative grades: in the pool but unjudged, skipped
        q, nonrel = rq[keep], rg[keep] < self.level
        seen = np.r_[0, np.cumsum(nonrel)]  # judged non-relevant docs before each position
        above = seen[:-1] - seen[np.searchsorted(q, q)]
        rel = ~nonrel
        qr, ab = q[rel], above[rel]
        n_nonrel = self._num_nonrel[sel][qr]
        r = num_rel[qr]
        denom = np.maximum(np.minimum(n_nonrel, r), 1)
        contrib = np.where(ab > 0, 1.0 - np.minimum(ab, r) / denom, 1.0)
        return np.bincount(qr, contrib, nq) / safe_rel


def _score_keys(query: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """uint64 keys ordered like (query, float32 score): the query index in the high 32 bits,
    the score's IEEE bits made order-preserving (sign flips) in the low 32; -0.0 == 0.0."""
    bits = (scores.astype(np.float32) + np.float32(0.0)).view(np.uint32)
    flip = (bits.view(np.int32) >> 31).view(np.uint32)  # all ones for negative scores
    flip |= np.uint32(0x80000000)
    bits ^= flip
    keys = query.astype(np.uint64)
    keys <<= np.uint64(32)
    keys |= bits
    return keys


def evaluate(
    qrels: Qrels,
    run: Run,
    measures: str | Sequence[str],
    *,
    level: int = 1,
    complete: bool = False,
    per_query: bool = False,
) -> dict[str, float] | dict[str, dict[str, float]]:
    """Mean of each measure (or, with `per_query`, query id -> measure -> value).

    One-shot form of `Evaluator(qrels, measures, level=..., complete=...).evaluate(run)`.
    """
    res = Evaluator(qrels, measures, level=level, complete=complete).evaluate(run)
    return res.per_query if per_query else res.mean

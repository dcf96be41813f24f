"""rankloop.eval: trec_eval-exact measures, significance tests, experiment tables and fusion.

from rankloop.eval import evaluate, compare, fuse
evaluate(qrels, run, ["ndcg_cut_10", "map"])             # {"ndcg_cut_10": ..., "map": ...}
compare({"bm25": r1, "dense": r2}, qrels, ["map"], baseline="bm25", correction="holm")
fuse([bm25, dense], "rrf")                               # a new Run
"""

from rankloop.eval.compare import ComparisonTable, compare, compare_values
from rankloop.eval.fusion import fuse
from rankloop.eval.metrics import EvalResult, Evaluator, Measure, evaluate, parse_measures
from rankloop.eval.significance import (
    bonferroni,
    correct_pvalues,
    fisher_randomization_test,
    holm,
    paired_bootstrap_test,
    paired_t_test,
    paired_test,
)

__all__ = [
    "ComparisonTable",
    "EvalResult",
    "Evaluator",
    "Measure",
    "bonferroni",
    "compare",
    "compare_values",
    "correct_pvalues",
    "evaluate",
    "fisher_randomization_test",
    "fuse",
    "holm",
    "paired_bootstrap_test",
    "paired_t_test",
    "paired_test",
    "parse_measures",
]

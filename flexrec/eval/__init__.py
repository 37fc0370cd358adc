"""Evaluation: ranking metrics on the true labels, bootstrap intervals, and one ``evaluate`` for every ranker.

    python -m flexrec.eval --baseline bpr --data synthetic
    python -m flexrec.eval --checkpoint runs/flexrec --json results/eval.json

- ``metrics``: NDCG@k, Recall@k, MRR@k of ranked lists;
- ``stats``: bootstrap intervals of per-user values;
- ``evaluate``: the ``Ranker`` protocol, ``rank_all``, ``per_user_values`` and ``evaluate``, used by the
  trainer, this CLI and the experiments.
"""

from flexrec.eval.evaluate import (
    METRICS,
    DataSpec,
    ItemPopularityRanker,
    PolicyRanker,
    Ranker,
    evaluate,
    format_table,
    list_metrics,
    load_data,
    load_examples,
    mean_metrics,
    per_user_values,
    rank_all,
    results_to_json,
    run_spec,
    summarize,
)
from flexrec.eval.metrics import mrr_at_k, ndcg_at_k, recall_at_k
from flexrec.eval.stats import Interval, bootstrap_ci

__all__ = [
    "METRICS", "DataSpec", "Interval", "ItemPopularityRanker", "PolicyRanker", "Ranker", "bootstrap_ci", "evaluate",
    "format_table", "list_metrics", "load_data", "load_examples", "mean_metrics", "mrr_at_k", "ndcg_at_k",
    "per_user_values", "rank_all", "recall_at_k", "results_to_json", "run_spec", "summarize",
]

"""Baselines that rank the same candidate pools as the policy: see `traditional.py`.

    from flexrec.baselines import make_baseline, BASELINES
    model = make_baseline("item-knn", data, train_users, seed=0)
    perm = model.rank(examples)  # (B, K) int64, best first

The LLM baselines (zero-shot, SFT, sequence-level GRPO, rank-level GRPO) are training configurations
of `flexrec.train`, run by `flexrec.experiments` and evaluated from their checkpoints.
"""

from .traditional import BASELINES, Interactions, Recommender, make_baseline, training_interactions

__all__ = ["BASELINES", "Interactions", "Recommender", "make_baseline", "training_interactions"]

"""Evaluation: NDCG@k and Recall@k per need, for the policy (greedy ranking) and the popularity baseline."""

from __future__ import annotations

from collections import defaultdict
from typing import Callable

import torch

from flexrec.data import RankingBatch, RankingExample, collate
from flexrec.data.world import InteractionData
from flexrec.metrics import ndcg_at_k, recall_at_k
from flexrec.models import RankingPolicy

Ranker = Callable[[RankingBatch], torch.Tensor]  # batch -> perm (B, K)


def policy_ranker(policy: RankingPolicy, device: torch.device) -> Ranker:
    """Greedy constrained decoding, the deterministic ranking used for evaluation."""

    def rank(batch: RankingBatch) -> torch.Tensor:
        was_training = policy.training
        policy.eval()
        out = policy.rank(batch.input_ids.to(device), batch.attention_mask.to(device), batch.item_ids.shape[1], greedy=True)
        policy.train(was_training)
        return out.perm[:, 0].cpu()

    return rank


def popularity_ranker(data: InteractionData) -> Ranker:
    """Most popular first (total plays / interactions), the same list for every user and need."""
    popularity = torch.as_tensor(data.item_popularity, dtype=torch.float64)

    def rank(batch: RankingBatch) -> torch.Tensor:
        return torch.argsort(-popularity[batch.item_ids], dim=-1, stable=True)

    return rank


@torch.no_grad()
def evaluate(
    rank: Ranker,
    examples: list[RankingExample],
    tokenizer,
    data: InteractionData,
    k: int = 5,
    collate_fn: Callable = collate,
    batch_size: int = 32,
) -> dict[str, dict[str, float]]:
    """Mean NDCG@k and Recall@k over ``examples``, per need: {need: {"ndcg@5": .., "recall@5": .., "n": ..}}."""
    sums: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for start in range(0, len(examples), batch_size):
        batch = collate_fn(examples[start : start + batch_size], tokenizer, data)
        perm = rank(batch)
        ndcg = ndcg_at_k(perm, batch.true_labels, k)
        for b, need in enumerate(batch.needs):
            recall = recall_at_k(perm[b : b + 1], batch.true_labels[b : b + 1], k, float(batch.thresholds[b]))
            sums[need][f"ndcg@{k}"] += float(ndcg[b])
            sums[need][f"recall@{k}"] += float(recall[0])
            sums[need]["n"] += 1
    return {
        need: {name: (v / s["n"] if name != "n" else int(v)) for name, v in s.items()} for need, s in sums.items()
    }

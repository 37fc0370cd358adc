"""Ranking metrics of ranked candidate lists: NDCG@k, Recall@k, MRR@k (FLEXREC.md section 7).

All functions are batched and plain torch. ``perm`` (B, K) lists candidate indices in ranked order
(position 0 first), ``rel`` (B, K) holds the graded relevance label of each candidate, indexed by
candidate (not by position). Each returns a (B,) float tensor: one value per list.
"""

from __future__ import annotations

import torch
from torch import Tensor

GAINS = ("linear", "exp")


def _check(perm: Tensor, rel: Tensor, k: int) -> None:
    if perm.dim() != 2 or rel.shape != perm.shape:
        raise ValueError(
            f"perm and rel must both be (B, K), got {tuple(perm.shape)} and {tuple(rel.shape)}"
        )
    if perm.dtype != torch.int64:
        raise TypeError(f"perm must be int64 candidate indices, got {perm.dtype}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")


def _ranked(perm: Tensor, rel: Tensor) -> Tensor:
    """Labels in ranked order. Shapes: (B, K), (B, K) -> (B, K) float."""
    return rel.to(torch.float64 if rel.dtype == torch.float64 else torch.float32).gather(-1, perm)


def ndcg_at_k(perm: Tensor, rel: Tensor, k: int, gain: str = "linear") -> Tensor:
    """NDCG@k with gain ``rel`` (linear) or ``2^rel - 1`` (exp); 0 for a list with IDCG = 0.

    Shapes: perm (B, K) int64, rel (B, K) -> (B,) float.
    """
    _check(perm, rel, k)
    if gain not in GAINS:
        raise ValueError(f"gain must be one of {GAINS}, got {gain!r}")
    labels = _ranked(perm, rel)
    g = labels if gain == "linear" else torch.pow(2.0, labels) - 1.0
    n = min(k, perm.shape[1])
    d = 1.0 / torch.log2(torch.arange(n, dtype=g.dtype, device=g.device) + 2.0)
    dcg = (g[:, :n] * d).sum(-1)
    ideal = torch.sort(g, dim=-1, descending=True).values[:, :n]
    idcg = (ideal * d).sum(-1)
    return torch.where(idcg > 0, dcg / torch.where(idcg > 0, idcg, torch.ones_like(idcg)), 0.0)


def recall_at_k(perm: Tensor, rel: Tensor, k: int, threshold: float) -> Tensor:
    """Relevant items (label >= threshold) in the top k / relevant items in the pool; 0 when none.

    Shapes: perm (B, K) int64, rel (B, K) -> (B,) float.
    """
    _check(perm, rel, k)
    relevant = _ranked(perm, rel) >= threshold
    hits = relevant[:, :k].sum(-1).float()
    total = relevant.sum(-1).float()
    return torch.where(total > 0, hits / total.clamp(min=1.0), 0.0)


def mrr_at_k(perm: Tensor, rel: Tensor, k: int, threshold: float) -> Tensor:
    """1 / (1-based rank of the first relevant item, label >= threshold) within the top k, else 0.

    Shapes: perm (B, K) int64, rel (B, K) -> (B,) float.
    """
    _check(perm, rel, k)
    relevant = (_ranked(perm, rel) >= threshold)[:, :k]
    n = relevant.shape[1]
    pos = torch.arange(1, n + 1, dtype=torch.float32, device=perm.device)
    recip = torch.where(relevant, 1.0 / pos, torch.zeros((), device=perm.device))
    return recip.max(dim=-1).values if n > 0 else torch.zeros(perm.shape[0])

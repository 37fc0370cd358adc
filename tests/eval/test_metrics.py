"""flexrec.eval.metrics against a plain-Python implementation on random inputs."""

import math

import pytest
import torch

from flexrec.eval import metrics


def py_ndcg(perm, rel, k, gain):
    g = [(2.0**r - 1.0) if gain == "exp" else float(r) for r in rel]
    n = min(k, len(perm))
    dcg = sum(g[perm[p]] / math.log2(p + 2) for p in range(n))
    idcg = sum(x / math.log2(p + 2) for p, x in enumerate(sorted(g, reverse=True)[:n]))
    return dcg / idcg if idcg > 0 else 0.0


def py_recall(perm, rel, k, thr):
    relevant = {c for c, r in enumerate(rel) if r >= thr}
    if not relevant:
        return 0.0
    return len([c for c in perm[:k] if c in relevant]) / len(relevant)


def py_mrr(perm, rel, k, thr):
    for p, c in enumerate(perm[:k]):
        if rel[c] >= thr:
            return 1.0 / (p + 1)
    return 0.0


@pytest.mark.parametrize("K", [1, 2, 5, 30])
@pytest.mark.parametrize("k", [1, 3, 5, 40])
def test_metrics_match_python(K, k):
    gen = torch.Generator().manual_seed(K * 100 + k)
    B = 17
    perm = torch.argsort(torch.rand(B, K, generator=gen), -1)
    rel = torch.randint(0, 4, (B, K), generator=gen).float()
    rel[0] = 0.0  # a list with nothing relevant: every metric is 0, not NaN
    for gain in ("linear", "exp"):
        got = metrics.ndcg_at_k(perm, rel, k, gain=gain)
        want = [py_ndcg(perm[b].tolist(), rel[b].tolist(), k, gain) for b in range(B)]
        torch.testing.assert_close(got, torch.tensor(want), atol=1e-6, rtol=1e-5)
    for thr in (1.0, 3.0):
        got = metrics.recall_at_k(perm, rel, k, thr)
        want = [py_recall(perm[b].tolist(), rel[b].tolist(), k, thr) for b in range(B)]
        torch.testing.assert_close(got, torch.tensor(want), atol=1e-6, rtol=1e-5)
        got = metrics.mrr_at_k(perm, rel, k, thr)
        want = [py_mrr(perm[b].tolist(), rel[b].tolist(), k, thr) for b in range(B)]
        torch.testing.assert_close(got, torch.tensor(want), atol=1e-6, rtol=1e-5)
    assert metrics.ndcg_at_k(perm, rel, k)[0] == 0.0


def test_ideal_order_has_ndcg_one():
    rel = torch.tensor([[0.0, 3.0, 1.0, 2.0]])
    perm = torch.tensor([[1, 3, 2, 0]])
    assert metrics.ndcg_at_k(perm, rel, 4).item() == pytest.approx(1.0)
    # rank of the first relevant (>= 2) item is 1; recall@1 = 1 of 2 relevant items
    assert metrics.mrr_at_k(perm, rel, 2, 2.0).item() == pytest.approx(1.0)
    assert metrics.recall_at_k(perm, rel, 1, 2.0).item() == pytest.approx(0.5)


def test_bad_inputs():
    with pytest.raises(ValueError, match="must both be"):
        metrics.ndcg_at_k(torch.zeros(2, 3, dtype=torch.long), torch.zeros(2, 4), 3)
    with pytest.raises(ValueError, match="gain must be"):
        metrics.ndcg_at_k(torch.zeros(1, 3, dtype=torch.long), torch.zeros(1, 3), 3, gain="log")
    with pytest.raises(ValueError, match="k must be"):
        metrics.recall_at_k(torch.zeros(1, 3, dtype=torch.long), torch.zeros(1, 3), 0, 1.0)

"""flexrec.eval: per-list metrics with mixed needs, the bootstrap, the per-need table, the CLI."""

import json
import math

import numpy as np
import pytest
import torch

from flexrec import eval as ev
from flexrec.eval.__main__ import main as eval_cli


def py_recall(perm, rel, k, thr):
    relevant = {c for c, r in enumerate(rel) if r >= thr}
    return len([c for c in perm[:k] if c in relevant]) / len(relevant) if relevant else 0.0


def py_mrr(perm, rel, k, thr):
    return next((1.0 / (p + 1) for p, c in enumerate(perm[:k]) if rel[c] >= thr), 0.0)


def py_ndcg(perm, rel, k):
    n = min(k, len(perm))
    dcg = sum(rel[perm[p]] / math.log2(p + 2) for p in range(n))
    idcg = sum(x / math.log2(p + 2) for p, x in enumerate(sorted(rel, reverse=True)[:n]))
    return dcg / idcg if idcg > 0 else 0.0


def test_list_metrics_apply_each_lists_own_threshold():
    gen = torch.Generator().manual_seed(0)
    B, K = 13, 7  # K < 30: NDCG@30 is NDCG over the whole list
    perm = torch.argsort(torch.rand(B, K, generator=gen), -1)
    rel = torch.rand(B, K, generator=gen)
    thresholds = torch.tensor([0.75, 0.7, 0.5] * 4 + [0.9])
    got = ev.list_metrics(perm, rel, thresholds)
    for b in range(B):
        p, r, t = perm[b].tolist(), rel[b].tolist(), float(thresholds[b])
        assert got["recall@5"][b] == pytest.approx(py_recall(p, r, 5, t), abs=1e-6)
        assert got["mrr@5"][b] == pytest.approx(py_mrr(p, r, 5, t), abs=1e-6)
        for k in (5, 10, 30):
            assert got[f"ndcg@{k}"][b] == pytest.approx(py_ndcg(p, r, k), abs=1e-6)


def test_bootstrap_constant_and_ordering():
    iv = ev.bootstrap_ci(np.full(20, 0.3))
    assert (iv.mean, iv.lo, iv.hi, iv.n) == pytest.approx((0.3, 0.3, 0.3, 20))
    iv = ev.bootstrap_ci(np.random.default_rng(1).random(50))
    assert iv.lo < iv.mean < iv.hi
    with pytest.raises(ValueError, match="non-empty"):
        ev.bootstrap_ci([])


def test_bootstrap_width_shrinks_like_one_over_sqrt_n():
    rng = np.random.default_rng(2)
    small, big = ev.bootstrap_ci(rng.normal(size=100)), ev.bootstrap_ci(rng.normal(size=1600))
    # width ~ 2 * 1.96 / sqrt(n): 0.39 vs 0.098, a ratio of sqrt(16) = 4
    assert (small.hi - small.lo) / (big.hi - big.lo) == pytest.approx(4.0, rel=0.25)
    assert small.hi - small.lo == pytest.approx(2 * 1.96 / 10, rel=0.2)


def test_bootstrap_covers_the_true_mean_about_95_percent_of_the_time():
    rng = np.random.default_rng(3)
    hits = 0
    for s in range(300):
        iv = ev.bootstrap_ci(rng.normal(size=60), n_boot=400, seed=s)
        hits += iv.lo <= 0.0 <= iv.hi
    assert 0.89 <= hits / 300 <= 0.99  # percentile bootstrap at n = 60 under-covers slightly


def test_stratified_bootstrap_keeps_group_sizes():
    # Two seeds' worlds: 10 users all 0, 30 users all 1. Resampling within each keeps the mean 0.75.
    values = np.r_[np.zeros(10), np.ones(30)]
    strata = np.r_[np.zeros(10), np.ones(30)]
    iv = ev.bootstrap_ci(values, strata=strata)
    assert (iv.lo, iv.mean, iv.hi) == pytest.approx((0.75, 0.75, 0.75))
    assert ev.bootstrap_ci(values).hi - ev.bootstrap_ci(values).lo > 0.1


class _Fixed:
    def __init__(self, perm):
        self.perm = perm

    def rank(self, examples):
        return self.perm[: len(examples)]


def test_rank_all_rejects_a_non_permutation(world):
    from flexrec.data import build_examples

    examples = build_examples(world, needs=["maximize_interest"], split="test", K=10, max_users=2)
    bad = torch.zeros(len(examples), 10, dtype=torch.long)
    with pytest.raises(ValueError, match="not a permutation"):
        ev.rank_all(_Fixed(bad), examples)


def test_evaluate_ideal_ranking_scores_one_and_mean_row(world):
    from flexrec.data import build_examples

    examples = build_examples(world, split="test", K=10, max_users=4)

    class Oracle:
        def rank(self, exs):
            return torch.from_numpy(np.stack([np.argsort(-e.true_labels, kind="stable") for e in exs]))

    results = ev.evaluate(Oracle(), examples, n_boot=50)
    assert set(results) == {"maximize_interest", "explore_new_topics", "trend_promotion", "mean"}
    for need, row in results.items():
        for m in ("ndcg@5", "ndcg@10", "ndcg@30"):
            has_relevant = any(e.true_labels.max() > 0 for e in examples if need in (e.need, "mean"))
            assert row[m].mean == pytest.approx(1.0 if has_relevant else 0.0, abs=1e-6), (need, m)
        if need != "mean":  # recall@5 is 1 when at most 5 items pass the threshold
            rel = [e.relevant.sum() for e in examples if e.need == need]
            want = np.mean([min(r, 5) / r if r else 0.0 for r in rel])
            assert row["recall@5"].mean == pytest.approx(want)
    table = ev.format_table(results)
    assert "maximize_interest" in table and "[" in table


def test_eval_cli_end_to_end_on_a_baseline(tmp_path, capsys):
    out = tmp_path / "eval.json"
    report = eval_cli(["--baseline", "popularity", "--world-users", "60", "--world-items", "80",
                      "--n-boot", "50", "--json", str(out)])
    printed = capsys.readouterr().out
    assert "popularity on synthetic" in printed and "trend_promotion" in printed
    saved = json.loads(out.read_text())
    assert saved["method"] == "popularity" and saved["spec"]["world_users"] == 60
    row = saved["results"]["maximize_interest"]
    assert set(row) == set(ev.METRICS)
    assert row["ndcg@5"]["lo"] <= row["ndcg@5"]["mean"] <= row["ndcg@5"]["hi"]
    assert report["results"] == saved["results"]


def test_eval_cli_on_movielens_100k(capsys):
    pytest.importorskip("recbole", reason="ML-100K is read from the recbole==1.2.1 wheel")
    report = eval_cli(["--baseline", "item-knn", "--data", "ml-100k", "--max-users", "12", "--n-boot", "20"])
    assert "item-knn on ml-100k" in capsys.readouterr().out
    row = report["results"]["maximize_interest"]["ndcg@5"]
    assert row["n"] > 0 and 0.0 <= row["lo"] <= row["mean"] <= row["hi"] <= 1.0

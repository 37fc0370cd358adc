"""Traditional baselines on a tiny synthetic world: valid permutations, and each beats random where it should."""

import numpy as np
import pytest
import torch

from flexrec.baselines import BASELINES, make_baseline, training_interactions
from flexrec.data import SyntheticWorld, build_examples, split_users
from flexrec.eval.metrics import ndcg_at_k

FAST = {"bpr": {"epochs": 30}, "sasrec": {"epochs": 20}}


@pytest.fixture(scope="module")
def setup():
    torch.set_num_threads(1)
    data = SyntheticWorld(seed=0, n_users=120, n_items=100, n_topics=6)
    train = split_users(data, seed=0)["train"]
    # Every user's pools (not only the 12 test users) so the comparison has power; the baselines
    # never see the true labels of any pool, only histories and the training users' observed feedback.
    examples = build_examples(data, split="all", K=10, seed=0)
    models = {name: make_baseline(name, data, train, seed=0, **FAST.get(name, {})) for name in BASELINES}
    return data, train, examples, models


def ndcg5(model, examples, need):
    exs = [e for e in examples if e.need == need]
    rel = torch.from_numpy(np.stack([e.true_labels for e in exs]))
    return ndcg_at_k(model.rank(exs), rel, 5).mean().item()


def test_training_interactions_exclude_test_users_observed_feedback(setup):
    data, train, _, _ = setup
    inter = training_interactions(data, train)
    observed_users = set(inter.users[~inter.from_history].tolist())
    assert observed_users <= set(train.tolist())
    assert inter.from_history.sum() == len(data.history_items)
    assert inter.feedback.min() >= 0.0 and inter.feedback.max() <= 1.0


@pytest.mark.parametrize("name", list(BASELINES))
def test_rank_is_a_deterministic_permutation(setup, name):
    _, _, examples, models = setup
    perm = models[name].rank(examples[:9])
    assert perm.dtype == torch.int64 and perm.shape == (9, 10)
    assert torch.equal(perm.sort(-1).values, torch.arange(10).expand(9, 10))
    assert torch.equal(perm, models[name].rank(examples[:9]))
    assert models[name].score(examples[:9]).shape == (9, 10)


def test_ties_are_not_broken_by_slot_number(setup):
    _, _, examples, _ = setup
    from flexrec.baselines.traditional import Recommender

    class Flat(Recommender):
        def score_pool(self, example):
            return np.zeros(example.K)

    firsts = Flat(seed=0).rank(examples[:60])[:, 0]
    assert len(set(firsts.tolist())) > 3  # all-tied scores: a seeded shuffle, not always slot 0


@pytest.mark.parametrize("name", ["item-knn", "bpr", "sasrec"])
def test_personalised_baselines_beat_random_on_interest(setup, name):
    _, _, examples, models = setup
    rnd = ndcg5(models["random"], examples, "maximize_interest")
    got = ndcg5(models[name], examples, "maximize_interest")
    # Measured on this world: random 0.674, item-knn 0.807, bpr 0.844, sasrec 0.807 (120 users).
    assert got > rnd + 0.08, (name, got, rnd)


def test_popularity_beats_random_on_trend(setup):
    _, _, examples, models = setup
    # Measured: random 0.705, popularity 0.754. Trend labels are half recent plays, which overall
    # popularity tracks; on maximize_interest popularity is no better than random here (0.62).
    pop, rnd = (ndcg5(models[n], examples, "trend_promotion") for n in ("popularity", "random"))
    assert pop > rnd + 0.02, (pop, rnd)


def test_unknown_baseline_lists_the_known_ones(setup):
    data, train, _, _ = setup
    with pytest.raises(ValueError, match="known baselines: random"):
        make_baseline("lightgcn", data, train)

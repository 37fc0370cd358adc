"""The synthetic world: shape, determinism, and that the needs genuinely differ."""

import numpy as np
import pytest

from flexrec.data import NEEDS, SparseLabels, SyntheticWorld, load, pool_labels


def test_shapes_and_titles(world):
    assert (world.n_users, world.n_items, world.n_topics) == (60, 120, 6)
    assert world.item_topics.shape == (120, 6) and world.item_topics.sum(1).tolist() == [1] * 120
    assert world.daily_popularity.shape[1] == 120
    assert all(t.endswith(")") and "(" in t for t in world.item_titles)
    assert len(set(world.item_titles)) == world.n_items
    assert len(world.true_interest) == 60 * 120  # dense truth, like KuaiRec's small matrix
    lo, hi = world.interest_range
    assert lo <= world.true_interest.values.min() and world.true_interest.values.max() <= hi


def test_same_seed_same_world_other_seed_differs():
    a, b, c = SyntheticWorld(seed=3, n_users=20, n_items=50), SyntheticWorld(seed=3, n_users=20, n_items=50), \
        SyntheticWorld(seed=4, n_users=20, n_items=50)
    assert a.item_titles == b.item_titles
    for field in ["history_items", "history_feedback", "daily_popularity", "item_popularity"]:
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
    np.testing.assert_array_equal(a.observed.keys, b.observed.keys)
    np.testing.assert_array_equal(a.true_interest.values, b.true_interest.values)
    assert not np.array_equal(a.true_interest.values, c.true_interest.values)


def test_histories_are_time_ordered_and_observed_is_sparse(world):
    for u in range(world.n_users):
        items, feedback, days = world.history(u)
        assert len(items) == len(set(items.tolist())) > 0
        assert np.all(np.diff(days) >= 0) and days.max() < world.cutoff_day[u]
    assert abs(len(world.observed) / (len(world.true_interest) - len(world.history_items)) - 0.1) < 0.02
    for u in range(5):  # observed feedback is never on a history item (those are in the history)
        assert not np.isin(world.observed.user_items(u), world.history(u)[0]).any()


def test_observe_fraction_option():
    dense = SyntheticWorld(seed=0, n_users=20, n_items=50, observe_fraction=0.5)
    assert abs(len(dense.observed) / (20 * 50 - len(dense.history_items)) - 0.5) < 0.05
    with pytest.raises(ValueError, match="observe_fraction"):
        SyntheticWorld(seed=0, n_users=5, n_items=20, observe_fraction=1.5)


def test_histories_cover_few_topics_so_exploring_means_something(world):
    covered = np.array([world.history_topics(u).sum() for u in range(world.n_users)])
    assert covered.mean() < 0.6 * world.n_topics


def test_trend_signal_is_not_global_popularity():
    w = SyntheticWorld(seed=0)
    recent = w.daily_popularity[-w.trend_window:].sum(0)
    rank = lambda x: np.argsort(np.argsort(x))
    assert np.corrcoef(rank(recent), rank(w.item_popularity))[0, 1] < 0.9


def test_needs_rank_the_same_items_differently(world):
    items = world.eligible_items(0)[:30]
    labels = {n: pool_labels(world, 0, items, n)[0] for n in NEEDS}
    assert not np.allclose(labels["maximize_interest"], labels["explore_new_topics"])
    assert not np.allclose(labels["maximize_interest"], labels["trend_promotion"])


def test_load_synthetic_and_unknown_dataset():
    assert load("synthetic", n_users=10, n_items=40).n_users == 10
    with pytest.raises(ValueError, match="known datasets: synthetic, ml-100k"):
        load("netflix")


def test_sparse_labels_lookup():
    s = SparseLabels.from_triples([0, 0, 1, 0], [2, 5, 2, 2], [1.0, 2.0, 3.0, 4.0], n_items=10)
    values, known = s.lookup(0, np.array([2, 5, 7]))
    np.testing.assert_array_equal(values, [4.0, 2.0, 0.0])  # the repeated (0, 2) keeps its last value
    np.testing.assert_array_equal(known, [True, True, False])
    np.testing.assert_array_equal(s.user_items(1), [2])
    assert SparseLabels.from_triples([], [], [], 5).lookup(0, np.array([1]))[1].tolist() == [False]


def test_seed_zero_is_the_same_world_on_every_machine():
    # Pinned values: numpy's Generator(PCG64) streams are platform independent, so these must hold
    # everywhere; if a numpy upgrade ever changes them, the world (and every result on it) changed too.
    w = SyntheticWorld(seed=0)
    assert w.item_titles[:3] == ["Quiet Castle (travel)", "Secret Island (sports)", "Broken Kingdom (comedy)"]
    assert w.history(0)[0][:5].tolist() == [172, 220, 344, 70, 131]
    assert round(float(w.true_interest.values[:3].sum()), 4) == 8.8241

"""Pools, splits and examples: determinism, no leakage, relevant items, and awkward users."""

import logging

import numpy as np
import pytest

from flexrec.data import (NEEDS, PoolTooSmallError, SyntheticWorld, build_examples, build_pool, get_need,
                          pool_labels, split_users)
from flexrec.data.pools import _quotas, cooccurrence_scores


def test_pool_is_k_distinct_items_outside_the_history(world):
    for need in NEEDS:
        for user in range(0, world.n_users, 7):
            pool = build_pool(world, user, need, K=30)
            assert pool.shape == (30,) and len(set(pool.tolist())) == 30
            assert not np.isin(pool, world.history(user)[0]).any()


def test_pools_are_deterministic_and_seeded(world):
    a = build_pool(world, 5, "trend_promotion", seed=1)
    np.testing.assert_array_equal(a, build_pool(world, 5, "trend_promotion", seed=1))
    assert not np.array_equal(a, build_pool(world, 5, "trend_promotion", seed=2))


def test_examples_are_deterministic_across_worlds():
    def make():
        return build_examples(SyntheticWorld(seed=5, n_users=30, n_items=80), split="train", K=20, seed=3)
    a, b = make(), make()
    assert len(a) == len(b) == 21 * 3  # the 70% training share of 30 users (flexrec.config.USER_SPLITS), 3 needs
    for x, y in zip(a, b):
        assert (x.user, x.need, x.instruction) == (y.user, y.need, y.instruction)
        np.testing.assert_array_equal(x.items, y.items)
        np.testing.assert_array_equal(x.observed_mask, y.observed_mask)


def test_pools_hold_a_few_relevant_items_where_they_exist(world):
    for need in NEEDS.values():
        for user in range(world.n_users):
            pool = build_pool(world, user, need.name, min_relevant=3)
            everywhere, _ = pool_labels(world, user, world.eligible_items(user), need.name)
            n_relevant = (everywhere >= need.threshold).sum()
            in_pool, _ = pool_labels(world, user, pool, need.name)
            if need.name != "trend_promotion":  # trend is min-maxed within the pool, so it can shift
                assert (in_pool >= need.threshold).sum() >= min(3, n_relevant)


def test_retriever_mix(world):
    thirds = {"popularity": 1, "cooccurrence": 1, "random": 1}
    assert _quotas(30, thirds) == {"popularity": 10, "cooccurrence": 10, "random": 10}
    assert sum(_quotas(7, {"popularity": 1, "cooccurrence": 1, "random": 1}).values()) == 7
    popular_only = build_pool(world, 0, "maximize_interest", K=10, min_relevant=0, mix={"popularity": 1.0})
    eligible = world.eligible_items(0)
    top = eligible[np.argsort(-world.item_popularity[eligible], kind="stable")][:30]
    assert np.isin(popular_only, top).all()
    co = cooccurrence_scores(world, 0)
    co_only = build_pool(world, 0, "maximize_interest", K=10, min_relevant=0, mix={"cooccurrence": 1.0})
    assert co[co_only].min() >= np.sort(co[eligible])[-10]  # the 10 best co-occurring items
    with pytest.raises(ValueError, match="mix must weight retrievers"):
        build_pool(world, 0, "maximize_interest", mix={"bm25": 1.0})


def test_pool_smaller_than_k_is_an_error_and_a_logged_skip(caplog):
    tiny = SyntheticWorld(seed=0, n_users=10, n_items=40, history_len=(5, 15))
    short = [u for u in range(10) if len(tiny.eligible_items(u)) < 30]
    assert short, "the fixture needs users with fewer than 30 eligible items"
    with pytest.raises(PoolTooSmallError, match=f"user {short[0]} has .* eligible items, fewer than K=30"):
        build_pool(tiny, short[0], "maximize_interest", K=30)
    with caplog.at_level(logging.WARNING):
        ex = build_examples(tiny, split="all", K=30)
    assert f"skipped {len(short)} users with fewer than K=30 eligible items" in caplog.text
    assert len(ex) == 3 * (10 - len(short)) and not {e.user for e in ex} & set(short)


def test_empty_history_is_skipped_with_a_count(caplog):
    w = SyntheticWorld(seed=0, n_users=12, n_items=60)
    lo, hi = w.history_ptr[3], w.history_ptr[4]  # empty user 3's history
    for field in ["history_items", "history_feedback", "history_days"]:
        setattr(w, field, np.delete(getattr(w, field), np.s_[lo:hi]))
    w.history_ptr[4:] -= hi - lo
    assert len(w.history(3)[0]) == 0 and len(w.history(4)[0]) > 0
    with caplog.at_level(logging.WARNING):
        ex = build_examples(w, needs=["maximize_interest"], split="all", K=20)
    assert "skipped 1 users with an empty history" in caplog.text and 3 not in {e.user for e in ex}
    kept = build_examples(w, needs=["maximize_interest"], split="all", K=20, keep_empty_history=True)
    assert 3 in {e.user for e in kept}


def test_pools_without_relevant_items_are_kept_and_counted(world, caplog):
    with caplog.at_level(logging.INFO):
        ex = build_examples(world, needs=["explore_new_topics"], split="all", min_relevant=0,
                            mix={"popularity": 1.0})
    none = sum(not e.relevant.any() for e in ex)
    assert len(ex) == world.n_users and none > 0
    assert f"{none} explore_new_topics pools have no relevant item" in caplog.text


def test_splits_are_disjoint_complete_and_deterministic(world):
    s = split_users(world, seed=0)
    assert [len(s[k]) for k in ("train", "val", "test")] == [42, 6, 12]  # USER_SPLITS (0.7, 0.1, 0.2) of 60
    assert sorted(np.concatenate(list(s.values())).tolist()) == list(range(world.n_users))
    np.testing.assert_array_equal(s["test"], split_users(world, seed=0)["test"])
    assert not np.array_equal(s["test"], split_users(world, seed=1)["test"])
    with pytest.raises(ValueError, match="summing to 1"):
        split_users(world, (0.5, 0.5, 0.5))
    with pytest.raises(ValueError, match="unknown split 'dev'"):
        build_examples(world, split="dev")


def test_example_fields(world):
    ex = build_examples(world, split="test", K=12)
    assert len(ex) == 12 * 3 and [e.need for e in ex[:3]] == list(NEEDS)
    test_users = set(split_users(world)["test"].tolist())
    for e in ex:
        assert e.user in test_users and e.K == 12 and e.items.dtype == np.int64
        assert e.true_labels.shape == e.observed_labels.shape == e.observed_mask.shape == (12,)
        assert e.observed_mask.dtype == bool and e.threshold == get_need(e.need).threshold
        assert e.instruction in get_need(e.need).instructions and not e.heldout_instruction
        np.testing.assert_array_equal(e.history_items, world.history(e.user)[0])
        assert not np.isin(e.items, e.history_items).any()
    held = build_examples(world, split="test", K=12, heldout_instructions=True)
    assert all(e.instruction in get_need(e.need).heldout and e.heldout_instruction for e in held)
    np.testing.assert_array_equal(held[0].items, ex[0].items)  # same pools, other wording

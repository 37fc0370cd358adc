"""Every need's labels, hand-checked on one pool; the registry; true vs observed labels."""

import numpy as np
import pytest

from flexrec.data import NEEDS, build_examples, get_need, label_context, pool_labels, register_need
from flexrec.data.needs import minmax


@pytest.fixture
def pool(world):
    """30 of user 3's eligible items: up to 10 from topics in the history, the rest from others."""
    items = world.eligible_items(3)
    seen = (world.item_topics[items] & world.history_topics(3)).any(1)
    return np.concatenate([items[seen][:10], items[~seen]])[:30]


def test_registry_has_the_paper_needs_with_paraphrases():
    for name in ["maximize_interest", "explore_new_topics", "trend_promotion"]:
        need = NEEDS[name]
        assert len(need.instructions) + len(need.heldout) >= 6 and need.heldout and need.instructions
        assert not set(need.instructions) & set(need.heldout)
        assert 0 < need.threshold <= 1


def test_maximize_interest_is_normalized_interest(world, pool):
    labels, known = pool_labels(world, 3, pool, "maximize_interest")
    raw, _ = world.true_interest.lookup(3, pool)
    np.testing.assert_allclose(labels, (raw - 1) / 4, rtol=1e-6)  # interest_range (1, 5) -> [0, 1]
    assert known.all()


def test_explore_counts_only_topics_absent_from_history(world, pool):
    labels, _ = pool_labels(world, 3, pool, "explore_new_topics")
    interest, _ = pool_labels(world, 3, pool, "maximize_interest")
    seen = world.history_topics(3)
    novel = ~(world.item_topics[pool] & seen).any(1)
    assert novel.any() and (~novel).any()
    np.testing.assert_allclose(labels[novel], interest[novel])
    assert (labels[~novel] == 0).all()


def test_trend_mixes_minmaxed_interest_and_recent_plays(world, pool):
    labels, _ = pool_labels(world, 3, pool, "trend_promotion")
    interest, _ = pool_labels(world, 3, pool, "maximize_interest")
    recent = world.daily_popularity[-world.trend_window:, pool].sum(0)  # cutoff is the last day
    expected = 0.5 * (interest - interest.min()) / (interest.max() - interest.min()) \
        + 0.5 * minmax(np.log1p(recent))
    np.testing.assert_allclose(labels, expected, rtol=1e-5)
    assert labels.min() >= 0 and labels.max() <= 1


def test_minmax_constant_and_masked():
    np.testing.assert_array_equal(minmax(np.array([2.0, 2.0])), [0.0, 0.0])
    # 0.5 = (2 - 1) / (3 - 1): the 10 is outside `where`, so clipped to 1
    np.testing.assert_allclose(minmax(np.array([1.0, 2.0, 3.0, 10.0]), np.array([1, 1, 1, 0], bool)), [0, 0.5, 1, 1])


def test_observed_labels_only_where_feedback_was_observed(world):
    ex = build_examples(world, needs=["maximize_interest"], split="all", max_users=30)
    mask = np.stack([e.observed_mask for e in ex])
    assert 0.03 < mask.mean() < 0.25  # observe_fraction = 0.1
    for e in ex:
        raw, known = world.observed.lookup(e.user, e.items)
        np.testing.assert_array_equal(e.observed_mask, known)
        np.testing.assert_allclose(e.observed_labels, np.where(known, (raw - 1) / 4, 0.0), rtol=1e-6)
        assert (e.observed_labels[~e.observed_mask] == 0).all()


def test_unknown_need_lists_the_known_ones(world, pool):
    known = "explore_new_topics, maximize_interest, trend_promotion"
    with pytest.raises(ValueError, match=f"unknown need 'cheapest'; known needs: {known}"):
        pool_labels(world, 0, pool, "cheapest")
    with pytest.raises(ValueError, match="unknown need"):
        build_examples(world, needs=["cheapest"])


def test_register_a_user_defined_need(world):
    # A need in a few lines: high interest among the less popular half of the pool.
    def hidden_gems(ctx):
        return np.where(ctx.popularity <= np.median(ctx.popularity), ctx.interest, 0.0)

    try:
        need = register_need("hidden_gems", hidden_gems, threshold=0.6,
                             instructions=["Find me great things few people know.", "Dig up hidden gems for me."],
                             heldout=["Surprise me with an under-the-radar pick."])
        assert get_need("hidden_gems") is need
        ex = build_examples(world, needs=["hidden_gems"], split="val")
        assert ex and all(e.need == "hidden_gems" for e in ex)
        e = ex[0]
        ctx = label_context(world, e.user, e.items)
        np.testing.assert_allclose(e.true_labels, hidden_gems(ctx))
        assert e.instruction in need.instructions
        held = build_examples(world, needs=["hidden_gems"], split="val", heldout_instructions=True)
        assert {h.instruction for h in held} == {"Surprise me with an under-the-radar pick."}
        with pytest.raises(ValueError, match="already registered"):
            register_need("hidden_gems", hidden_gems, 0.6, ["x"])
        register_need("hidden_gems", hidden_gems, 0.5, ["x"], overwrite=True)
        assert get_need("hidden_gems").threshold == 0.5
    finally:
        NEEDS.pop("hidden_gems", None)


def test_register_need_rejects_bad_definitions():
    with pytest.raises(TypeError, match="callable"):
        register_need("bad", "not a function", 0.5, ["x"])
    with pytest.raises(ValueError, match="non-empty training instruction"):
        register_need("bad", lambda c: c.interest, 0.5, [])
    with pytest.raises(ValueError, match="also a training instruction"):
        register_need("bad", lambda c: c.interest, 0.5, ["a"], heldout=["a"])
    assert "bad" not in NEEDS


def test_label_fn_with_wrong_shape_is_an_error(world, pool):
    try:
        register_need("broken", lambda c: c.interest[:3], 0.5, ["x"])
        with pytest.raises(ValueError, match=r"returned shape \(3,\), expected \(30,\)"):
            pool_labels(world, 0, pool, "broken")
    finally:
        NEEDS.pop("broken", None)

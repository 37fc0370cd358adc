"""The real-data protocol (docs/real-data-protocol.md): every candidate's label means the same to the truth,
the observed feedback and the critic; novelty on multi-genre items; trend tiers without index ties;
popularity that is not below random where the popular items are the liked ones."""

from __future__ import annotations

import dataclasses
import re

import numpy as np
import pytest
import torch

from flexrec.baselines.traditional import PopularityRanker, RandomRanker
from flexrec.critic import Critic, ObservedOnly, fill_pools, known_interest
from flexrec.data import build_examples, compact_prompt, load
from flexrec.data.prompts import SIGNAL_LINE_TOKENS, signal_tokens, user_message
from flexrec.data.protocol import explore_coverage, trend_tie_share
from flexrec.eval.metrics import ndcg_at_k

DAY = 86400
T0 = 880_000_000
ITEMS = [  # item_id, title, genres
    (1, "Film 1 (1991)", "Drama"), (2, "Film 2 (1992)", "Drama|Comedy"), (3, "Film 3 (1993)", "Comedy"),
    (4, "Film 4 (1994)", "War|Drama"), (5, "Film 5 (1995)", "Western"), (6, "Film 6 (1996)", "Comedy|War"),
    (7, "Film 7 (1997)", "Drama"), (8, "Film 8 (1998)", "Western|War"),
]
# user, item, rating, day: two history ratings, then three future ones (the pool, K = 3).
RATINGS = [
    (1, 1, 4, 0), (1, 2, 2, 1), (1, 3, 5, 5), (1, 4, 3, 6), (1, 5, 1, 7),
    (2, 3, 3, 0), (2, 4, 4, 2), (2, 1, 4, 8), (2, 6, 2, 9), (2, 7, 5, 10),
]
# By hand: label = (rating - 1) / 4 for each future item (user key -> {item key: label}).
EXPECTED = {"1": {"3": 1.0, "4": 0.5, "5": 0.0}, "2": {"1": 0.75, "6": 0.25, "7": 1.0}}


@pytest.fixture
def hand_files(tmp_path):
    (tmp_path / "items.csv").write_text("item_id,title,categories\n" + "".join(
        f"{i},{t},{g}\n" for i, t, g in ITEMS))
    (tmp_path / "ratings.csv").write_text("user_id,item_id,rating,timestamp\n" + "".join(
        f"{u},{i},{r},{T0 + d * DAY}\n" for u, i, r, d in RATINGS))
    return tmp_path / "ratings.csv", tmp_path / "items.csv"


def hand_data(hand_files, **options):
    ratings, items = hand_files
    options = {"protocol": "known", "n_heldout": 3, "min_history": 2, "observe_fraction": 1.0,
               "interest_range": (1.0, 5.0), **options}
    return load(f"csv:{ratings}", items=str(items), **options)


def by_key(data, example, labels):
    return {data.item_keys[i]: round(float(v), 6) for i, v in zip(example.items, labels)}


def test_known_protocol_truth_observed_and_critic_target_agree_by_hand(hand_files):
    data = hand_data(hand_files)
    examples = build_examples(data, needs=["maximize_interest"], split="all", K=3)
    assert len(examples) == 2
    for ex in examples:
        user = data.user_keys[ex.user]
        assert by_key(data, ex, ex.true_labels) == EXPECTED[user]  # the pool is exactly the rated future
        assert ex.observed_mask.all() and by_key(data, ex, ex.observed_labels) == EXPECTED[user]
        # The critic's training target for these items is the same number.
        _, items, values = known_interest(data, np.array([ex.user]))
        target = {data.item_keys[i]: round(float(v), 6) for i, v in zip(items, values)}
        assert {k: target[k] for k in EXPECTED[user]} == EXPECTED[user]
    filled, var = fill_pools(data, ObservedOnly(data), examples)
    np.testing.assert_allclose(filled, np.stack([ex.true_labels for ex in examples]))
    assert not var.any()


def test_known_protocol_with_sparse_observations_agrees_where_observed(hand_files):
    data = hand_data(hand_files, observe_fraction=0.5, seed=3)
    for ex in build_examples(data, needs=["maximize_interest"], split="all", K=3):
        m = ex.observed_mask
        np.testing.assert_allclose(ex.observed_labels[m], ex.true_labels[m])
        assert not ex.observed_labels[~m].any()


def test_implicit_protocol_labels_not_watched_as_zero_everywhere(hand_files):
    data = hand_data(hand_files, protocol="implicit", negatives=2)
    examples = build_examples(data, needs=["maximize_interest"], split="all", K=5)
    assert len(examples) == 2
    for ex in examples:
        user = data.user_keys[ex.user]
        labels = by_key(data, ex, ex.true_labels)
        negatives = set(labels) - set(EXPECTED[user])
        assert len(negatives) == 2 and all(labels[k] == 0.0 for k in negatives)  # never rated: "not watched"
        assert {k: labels[k] for k in EXPECTED[user]} == EXPECTED[user]
        assert by_key(data, ex, ex.observed_labels) == labels
        rated = {data.item_keys[i] for i in data.history(ex.user)[0]} | set(EXPECTED[user])
        hist_neg = {data.item_keys[i] for i in data.history_negatives.user_items(ex.user)}
        assert hist_neg and not hist_neg & rated and not hist_neg & negatives
        # the critic learns "not watched" = 0 from the history period too
        _, items, values = known_interest(data, np.array([ex.user]))
        target = {data.item_keys[i]: float(v) for i, v in zip(items, values)}
        assert all(target[k] == 0.0 for k in hist_neg)
    Critic.fit(data, np.arange(data.n_users), ensemble=1, epochs=2, hidden=8)  # trains on them


def test_novelty_from_the_genre_profile_on_multi_genre_items(world):
    data = dataclasses.replace(world)
    data.topic_names = ["Drama", "Comedy", "War", "Western"]
    topics = np.zeros((data.n_items, 4), bool)
    user = 0
    h_items = data.history(user)[0]
    topics[h_items, 0] = True  # every history film is a drama ...
    topics[h_items[0], 1] = True  # ... and one of them also a comedy
    free = np.setdiff1d(np.arange(data.n_items), h_items)[:3]
    topics[free[0], [1, 2]] = True  # comedy + war: comedy is 1/len(history) of the history
    topics[free[1], [0, 2]] = True  # drama + war: drama is all of it
    topics[free[2], [2, 3]] = True  # war + western: never seen
    data.item_topics = topics
    share = 1 / len(h_items)
    assert data.novel_items(user, free).tolist() == [False, False, True]  # share 0: no genre seen at all
    data.novelty_share = share
    assert data.novel_items(user, free).tolist() == [True, False, True]  # every genre at most the share
    data.novelty_share = share * 0.99
    assert data.novel_items(user, free).tolist() == [False, False, True]


def test_trend_tiers_break_ties_at_random_per_user_not_by_index(world):
    flat = dataclasses.replace(world, daily_popularity=np.zeros_like(world.daily_popularity))
    by_index = np.arange(flat.n_items) * 5 // flat.n_items
    np.testing.assert_array_equal(flat.trend_tiers(0), by_index)  # the synthetic world's rule (unchanged)
    shuffled = dataclasses.replace(flat, trend_random_ties=True)
    t0, t1 = shuffled.trend_tiers(0), shuffled.trend_tiers(1)
    assert not np.array_equal(t0, by_index) and not np.array_equal(t0, t1)
    assert np.array_equal(np.bincount(t0), np.bincount(by_index))  # still quintiles
    np.testing.assert_array_equal(shuffled.trend_tiers(0), t0)  # deterministic


def test_decayed_trend_leaves_few_ties(world):
    daily = np.zeros_like(world.daily_popularity)
    end = int(world.cutoff_day[0])
    daily[end - 1, 0] = daily[end - 3, 1] = daily[end - 10, 2] = 1.0
    window = dataclasses.replace(world, daily_popularity=daily, trend_window=1)
    assert window.recent_popularity(0, np.array([0, 1, 2, 3])).tolist() == [1.0, 0.0, 0.0, 0.0]
    decayed = dataclasses.replace(window, trend_half_life=7.0)
    recent = decayed.recent_popularity(0, np.array([0, 1, 2, 3]))
    np.testing.assert_allclose(recent, [1.0, 0.5 ** (2 / 7), 0.5 ** (9 / 7), 0.0], rtol=1e-6)
    assert (decayed.trend_tiers(0)[:3] == 4).all()  # the three played films top the catalogue


def test_synthetic_trend_tiers_are_the_plain_window_quintiles(world):
    end = int(world.cutoff_day[0])
    recent = np.log1p(world.daily_popularity[max(0, end - world.trend_window):end].sum(0))
    rank = np.argsort(np.argsort(recent, kind="stable"), kind="stable")
    np.testing.assert_array_equal(world.trend_tiers(0), rank * 5 // len(recent))


def popular_is_liked(tmp_path):
    """40 users, 30 films: film i is watched with weight 1/(1+i) and rated 5 (i < 10), 3 or 1 (i >= 20)."""
    rng = np.random.default_rng(0)
    weight = 1.0 / (1.0 + np.arange(30))
    rows = []
    for u in range(40):
        for n, i in enumerate(rng.choice(30, 16, replace=False, p=weight / weight.sum())):
            rows.append(f"{u},{i},{5 if i < 10 else 3 if i < 20 else 1},{T0 + n * DAY}\n")
    (tmp_path / "r.csv").write_text("user_id,item_id,rating,timestamp\n" + "".join(rows))
    (tmp_path / "i.csv").write_text("item_id,title,categories\n" + "".join(f"{i},Film {i},G{i % 3}\n" for i in range(30)))
    return load(f"csv:{tmp_path / 'r.csv'}", items=str(tmp_path / "i.csv"), protocol="known", n_heldout=6,
                min_history=10, interest_range=(1.0, 5.0))


def test_popularity_is_not_below_random_where_popular_films_are_liked(tmp_path):
    data = popular_is_liked(tmp_path)
    examples = build_examples(data, needs=["maximize_interest"], split="all", K=6)
    assert len(examples) == 40
    rel = torch.from_numpy(np.stack([ex.true_labels for ex in examples]))
    users = np.arange(data.n_users)
    popularity = ndcg_at_k(PopularityRanker().fit(data, users).rank(examples), rel, 5).mean()
    random = ndcg_at_k(RandomRanker().fit(data, users).rank(examples), rel, 5).mean()
    assert popularity > random


def test_prompts_on_real_data(hand_files, tokenizer, world):
    data = hand_data(hand_files)
    ex = build_examples(data, needs=["maximize_interest"], split="all", K=3)[0]
    text = user_message(ex, data, n_history=5)
    # titles with years, the history in order (oldest first), and the user's ratings
    assert "- Film 1 (1991) [Drama]: rated 4/5\n- Film 2 (1992) [Comedy, Drama]: rated 2/5" in text
    compact = compact_prompt(ex, data).splitlines()
    # one token per signal tier, the novelty flag and the genre rating, then the slot: SIGNAL_LINE_TOKENS words
    line = re.compile(r"<pop\d><tr\d><co\d><aff\d><q\d><(new|seen)><r[-1-5]><c\d+>")
    assert len(compact) == 4 and all(line.fullmatch(text) for text in compact[:3])
    assert all(len(re.findall(r"<[^<>]+>", text)) == SIGNAL_LINE_TOKENS for text in compact[:3])
    assert set(re.findall(r"<[^<>]+>", "".join(compact[:3]))) - {f"<c{k}>" for k in range(3)} <= set(signal_tokens())
    synthetic = build_examples(world, split="all", K=5, max_users=1)[0]
    assert "<pop" not in compact_prompt(synthetic, world)  # the synthetic compact prompt is unchanged


def test_the_tiny_tokenizer_reads_each_signal_as_one_token(hand_files):
    from flexrec.config import TrainConfig
    from flexrec.train.build import make_tokenizer_factory

    data = hand_data(hand_files)
    examples = build_examples(data, needs=["maximize_interest"], split="all", K=3)
    tok = make_tokenizer_factory(data, examples, TrainConfig(data="csv"))()
    for text in compact_prompt(examples[0], data).splitlines()[:3]:
        words = re.findall(r"<[^<>]+>", text)[:-1]  # the slot token is added with the model (add_slot_tokens)
        assert tok.convert_ids_to_tokens(tok(text.rsplit("<c", 1)[0], add_special_tokens=False)["input_ids"]) == words


def test_signal_tiers_as_many_as_candidates_show_each_candidates_rank(hand_files):
    from flexrec.config import TrainConfig
    from flexrec.data.prompts import history_signals
    from flexrec.train.build import make_tokenizer_factory

    data = hand_data(hand_files)
    examples = build_examples(data, needs=["maximize_interest"], split="all", K=3)
    ex = examples[0]
    ten, own = history_signals(data, ex.user, ex.items), history_signals(data, ex.user, ex.items, tiers=3)
    # 3 candidates at 10 tiers sit at 0, 3 or 6 by rank (ties share the lowest); at 3 tiers the tier is the rank
    assert set(np.unique(ten)) <= {0, 3, 6}
    assert (own == np.stack([np.searchsorted(np.sort(row), row) for row in ten])).all() and own.max() <= 2
    assert len(signal_tokens(20)) == len(signal_tokens()) + 5 * 10
    lines = compact_prompt(ex, data, signal_tiers=3).splitlines()[:3]
    assert {w for text in lines for w in re.findall(r"<[^<>]+>", text)[:-1]} <= set(signal_tokens(3))
    tok = make_tokenizer_factory(data, examples, TrainConfig(data="csv", signal_tiers=20))()
    assert tok.convert_ids_to_tokens(tok("<pop19><q17>", add_special_tokens=False)["input_ids"]) == ["<pop19>", "<q17>"]


def test_value_scaled_signals_keep_the_gaps_between_values(hand_files):
    from flexrec.config import TrainConfig, validate
    from flexrec.data import NEEDS
    from flexrec.data.prompts import history_signals

    data = hand_data(hand_files)
    for ex in build_examples(data, needs=["maximize_interest"], split="all", K=3):
        rank, value = (history_signals(data, ex.user, ex.items, scale=s) for s in ("rank", "value"))
        # pop, recounted here: every history play of a candidate before the user's cutoff day, as log1p, min-max
        # scaled within the pool and rounded to 10 levels
        before = data.history_days < data.cutoff_day[ex.user]
        plays = np.array([np.sum(before & (data.history_items == i)) for i in ex.items], np.float64)
        x = np.log1p(plays)
        want = np.floor((x - x.min()) / (x.max() - x.min()) * 9 + 0.5) if x.max() > x.min() else np.zeros(3)
        assert value[0].tolist() == want.astype(int).tolist()
        for r, v in zip(rank, value):  # the same order as the rank tiers; the extremes at 0 and 9
            assert all((v[a] <= v[b]) == (r[a] <= r[b]) for a in range(3) for b in range(3))
            assert v.min() == 0 and (v.max() == 9 or (v == 0).all())
    with pytest.raises(ValueError, match="signal scale"):
        history_signals(data, ex.user, ex.items, scale="log")
    with pytest.raises(ValueError, match="--signal-scale"):
        validate(TrainConfig(data="csv", signal_scale="log"), NEEDS)
    lines = compact_prompt(ex, data, signal_scale="value").splitlines()[:3]
    assert [re.findall(r"<pop(\d+)>", line) for line in lines] == [[str(t)] for t in value[0]]


def test_need_in_lines_puts_the_need_tag_in_every_lines_window(hand_files, tmp_path):
    from flexrec.config import TrainConfig
    from flexrec.train.build import build_policy, make_tokenizer_factory

    data = hand_data(hand_files)
    examples = build_examples(data, needs=["trend_promotion"], split="all", K=3)
    plain, tagged = compact_prompt(examples[0], data), compact_prompt(examples[0], data, need_in_lines=True)
    assert tagged.splitlines()[:3] == ["<need:trend_promotion>" + line for line in plain.splitlines()[:3]]
    assert tagged.splitlines()[3] == plain.splitlines()[3]  # the instruction line as before
    cfg = TrainConfig(data="csv", num_candidates=3, cache_dir=str(tmp_path), need_in_lines=True)
    tok = make_tokenizer_factory(data, examples, cfg)()
    text = tagged.splitlines()[0]
    ids = tok(text.rsplit("<c", 1)[0], add_special_tokens=False)["input_ids"]
    assert len(ids) + 1 == SIGNAL_LINE_TOKENS + 1  # the tag is one token, and with the slot the line fits the window
    policy, _ = build_policy(cfg, data, examples)
    assert policy.model.config.sliding_window == SIGNAL_LINE_TOKENS + 1


def test_compact_prompt_on_real_data_reads_no_future(hand_files, tmp_path):
    """Changing what happens on or after user 1's cutoff day (its own future ratings; user 2's ratings after
    it) leaves user 1's compact prompt unchanged, character for character."""
    ratings, items = hand_files
    before = hand_data(hand_files)
    assert int(before.cutoff_day[before.user_keys.index("1")]) == 5
    later = [(u, i, 6 - r if u == 1 and d >= 5 else r, d) for u, i, r, d in RATINGS]  # user 1's future, re-rated
    later += [(2, 5, 1, 11), (2, 8, 5, 12), (2, 2, 5, 13)]  # user 2: three later films; days 8-10 become history
    (tmp_path / "later.csv").write_text("user_id,item_id,rating,timestamp\n" + "".join(
        f"{u},{i},{r},{T0 + d * DAY}\n" for u, i, r, d in later))
    after = hand_data((tmp_path / "later.csv", items))
    assert after.history(after.user_keys.index("2"))[0].size > before.history(before.user_keys.index("2"))[0].size
    prompts = []
    for data in (before, after):
        user = data.user_keys.index("1")
        ex = next(e for e in build_examples(data, needs=["maximize_interest"], split="all", K=3) if e.user == user)
        assert by_key(data, ex, ex.true_labels) == ({"3": 1.0, "4": 0.5, "5": 0.0} if data is before else
                                                    {"3": 0.0, "4": 0.5, "5": 1.0})  # really re-rated
        ex = dataclasses.replace(ex, items=np.array(sorted(ex.items)))  # the same candidates in the same order
        prompts.append(compact_prompt(ex, data))
    assert prompts[0] == prompts[1]


@pytest.mark.slow
def test_ml100k_protocol_choices_on_training_users():
    """The MovieLens settings do what docs/real-data-protocol.md says, on training users."""
    from flexrec.data import split_users

    data = load("ml-100k")
    train = split_users(data, seed=0)["train"][:150]
    assert explore_coverage(data, train, K=20) >= 1 / 3
    assert trend_tie_share(data, train, K=20) < 0.1


@pytest.mark.parametrize("line_copy", [True, False])
def test_the_tiny_model_on_real_data_sees_a_whole_line_in_layer_0(hand_files, tmp_path, line_copy):
    from flexrec.config import TrainConfig
    from flexrec.models.presets import TINY_CONFIG
    from flexrec.train.build import build_policy

    data = hand_data(hand_files)
    examples = build_examples(data, needs=["maximize_interest"], split="all", K=3)
    cfg = TrainConfig(data="csv", num_candidates=3, cache_dir=str(tmp_path), tiny_line_copy=line_copy)
    policy, _ = build_policy(cfg, data, examples)
    assert policy.model.config.sliding_window == SIGNAL_LINE_TOKENS != TINY_CONFIG["sliding_window"]
    v_proj = policy.model.model.layers[0].self_attn.v_proj.weight
    assert torch.equal(v_proj, torch.eye(*v_proj.shape)) == line_copy  # the line-copy prior, and only with it


def test_popularity_counts_only_plays_before_the_users_cutoff_by_hand(hand_files):
    data = hand_data(hand_files)
    plays = {data.user_keys[u]: {data.item_keys[i]: float(c) for i, c in enumerate(data.popularity_before(u)) if c}
             for u in range(data.n_users)}
    # User 1's future starts on day 5: days 0-4 hold items 1, 2 (user 1) and 3, 4 (user 2). User 2's starts on
    # day 8: by then item 3 was also rated by user 1 (day 5), item 4 (day 6) and item 5 (day 7).
    assert plays == {"1": {"1": 1.0, "2": 1.0, "3": 1.0, "4": 1.0},
                     "2": {"1": 1.0, "2": 1.0, "3": 2.0, "4": 2.0, "5": 1.0}}
    examples = build_examples(data, needs=["maximize_interest"], split="all", K=3)
    ranker = PopularityRanker().fit(data, np.arange(data.n_users))
    for ex in examples:  # the baseline's scores are those counts, never the later plays
        expect = [plays[data.user_keys[ex.user]].get(data.item_keys[i], 0.0) for i in ex.items]
        np.testing.assert_array_equal(ranker.score_pool(ex), expect)

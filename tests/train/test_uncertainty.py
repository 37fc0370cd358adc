"""The two forms of the uncertainty weights (flexrec.rl, --unc-form) on hand-computed examples, and the
critic's recalibration on a case with a known answer."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from flexrec import rl


@pytest.fixture(scope="module")
def world():
    from flexrec.data import load

    return load("synthetic", seed=1, n_users=200, n_items=60, n_topics=4, observe_fraction=0.2)


def test_item_form_by_hand():
    # One prompt, G = 2 lists, K = 3, cutoff 0: ranks 0 and 1 are scored, rank 2 is the forced last slot.
    reward_var = torch.tensor([[[0.02, 0.01, 0.0], [0.06, 0.03, 0.0]]])
    # Relative to each rank's mean: rank 0 mean 0.04 -> 0.5, 1.5; rank 1 mean 0.02 -> 0.5, 1.5. Their mean is 1,
    # so eps 1 adds 1: 1 / 1.5 = 0.6667 and 1 / 2.5 = 0.4, mean 0.5333 -> normalised 1.25 and 0.75.
    w = rl.item_uncertainty_weights(reward_var, cutoff=0, eps=1.0, max_weight=5.0)
    torch.testing.assert_close(w, torch.tensor([[[1.25, 1.25, 1.0], [0.75, 0.75, 1.0]]]))


def test_rollout_variance_by_hand():
    # K = 3, discounts d = 1, 1/log2(3) = 0.6309, 1/2; the pool's gains (1, 0, 0) give IDCG = 1.
    gains = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])  # two rollouts of the same pool, in rank order
    var = torch.tensor([[0.04, 0.0, 0.0], [0.0, 0.0, 0.04]])
    # u_0 = (1 / 1)^2 * 0.04 = 0.04; u_1 = (0.5 / 1)^2 * 0.04 = 0.01
    torch.testing.assert_close(rl.rollout_reward_variance(gains, var, cutoff=0), torch.tensor([0.04, 0.01]))
    # cutoff 2: the rank-2 discount is 0, so u_1 = 0; rank 1 counts with (1/log2 3)^2
    u = rl.rollout_reward_variance(gains, torch.tensor([[0.0, 0.04, 0.0], [0.0, 0.0, 0.04]]), cutoff=2)
    torch.testing.assert_close(u, torch.tensor([0.04 / math.log2(3) ** 2, 0.0]))
    # no relevant item: IDCG 0 -> variance 0
    assert rl.rollout_reward_variance(torch.zeros(1, 3), torch.ones(1, 3), 0).item() == 0.0


def test_rollout_form_by_hand():
    u = torch.tensor([[0.04, 0.01]])  # the rollouts above, as one prompt's group (P = 1, G = 2)
    # mean u = 0.025, eps 1: 1 / 0.065 = 15.385, 1 / 0.035 = 28.571, mean 21.978 -> 0.700 and 1.300,
    # the same for every scored rank of the rollout; rank 2 (forced) keeps 1.
    w = rl.rollout_uncertainty_weights(u, K=3, cutoff=0, eps=1.0, max_weight=5.0)
    torch.testing.assert_close(w, torch.tensor([[[0.7, 0.7, 1.0], [1.3, 1.3, 1.0]]]), atol=1e-4, rtol=0)
    # certain rollouts (u = 0 everywhere): weights of exactly 1
    assert torch.equal(rl.rollout_uncertainty_weights(torch.zeros(2, 4), 3, 0, 1.0, 5.0), torch.ones(2, 4, 3))


def _draws(pred_var: np.ndarray, true_var: np.ndarray, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(0.0, np.sqrt(true_var))


def test_recalibration_recovers_a_global_scale():
    from flexrec.critic import VarianceRecalibration, coverage

    # Predicted variances log-uniform over two decades, every one half the true sd: the known answer is a
    # factor of 4 on every variance, after which 50% / 90% intervals cover 50% / 90%.
    pred = np.exp(np.random.default_rng(0).uniform(np.log(1e-3), np.log(1e-1), 20000))
    mu = np.zeros_like(pred)
    recal = VarianceRecalibration.fit(mu, pred, _draws(pred, 4 * pred, 1))
    np.testing.assert_allclose(recal.scales, 4.0, rtol=0.1)
    fresh = _draws(pred, 4 * pred, 2)
    assert coverage(mu, pred, fresh)[0] < 0.3  # before: far too narrow
    c50, c90 = coverage(mu, recal.apply(pred), fresh)
    assert c50 == pytest.approx(0.5, abs=0.02) and c90 == pytest.approx(0.9, abs=0.02)


def test_recalibration_fixes_each_bucket():
    from flexrec.critic import VarianceRecalibration, coverage

    # Two kinds of label: predicted 0.01 but truly 0.04 (overconfident, factor 4), predicted 0.04 but truly
    # 0.01 (underconfident, factor 1/4). One global scale cannot fix both; per bucket, each gets its own.
    pred = np.repeat([0.01, 0.04], 10000)
    true = np.repeat([0.04, 0.01], 10000)
    mu = np.zeros_like(pred)
    recal = VarianceRecalibration.fit(mu, pred, _draws(pred, true, 3))
    np.testing.assert_allclose(recal.apply(np.array([0.01, 0.04])), [0.04, 0.01], rtol=0.1)
    fresh = _draws(pred, true, 4)
    for part in (slice(0, 10000), slice(10000, None)):
        c50, c90 = coverage(mu[part], recal.apply(pred)[part], fresh[part])
        assert c50 == pytest.approx(0.5, abs=0.02) and c90 == pytest.approx(0.9, abs=0.02)


def test_critic_with_evidence_and_recalibration(world):
    from flexrec.critic import build_imputer, coverage, observed_interest
    from flexrec.data.pools import split_users

    splits = split_users(world, seed=0)
    critic = build_imputer("critic", world, splits["train"], ensemble=2, epochs=10, hidden=16, seed=0,
                           evidence=True, recalibrate="val", val_users=splits["val"])
    assert critic.evidence and critic.recalibration is not None
    users, items, values = observed_interest(world, splits["val"])
    c50, c90 = coverage(*critic.predict(users, items), values)  # in sample: the labels it was fitted on
    recalibration, critic.recalibration = critic.recalibration, None
    b50, b90 = coverage(*critic.predict(users, items), values)
    critic.recalibration = recalibration
    assert abs(c50 - 0.5) + abs(c90 - 0.9) < abs(b50 - 0.5) + abs(b90 - 0.9)
    mu, var = critic.interest(int(splits["train"][0]), np.arange(5))
    assert mu.shape == var.shape == (5,) and np.all(var >= 0)


def test_a_run_with_every_new_setting(tmp_path, small_config):
    import json

    from flexrec.train.loop import train

    cfg = small_config(tmp_path, sft_steps=1, rl_steps=2, world_users=100, world_evidence="sparse",
                       critic_evidence=True, critic_recalibrate="heldout", unc_form="rollout")
    results = train(cfg)
    assert "rl" in results
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert sum("rl/loss" in r and math.isfinite(r["rl/loss"]) for r in rows) == 2


def test_fidelity_compares_forms_and_refitted_critics(tmp_path, small_config):
    from flexrec.experiments.fidelity import NO_SCALING, advantage_fidelity
    from flexrec.train.loop import train

    cfg = small_config(tmp_path, sft_steps=2, rl_steps=0, world_users=100, world_evidence="sparse", critic_ensemble=2)
    train(cfg)
    plain = advantage_fidelity(tmp_path / "run", eps=(1.0,), prompts=16, forms=("item", "rollout"))
    # the run's critic is an ensemble, so the members' spread is weighed too (--unc-variance members)
    assert set(plain["cosine"]) == {NO_SCALING, "eps 1", "rollout eps 1", "members eps 1", "members rollout eps 1"}
    assert plain["members"] == 2 and -1 <= plain["member_reward_variance_error_rank_corr"] <= 1
    assert 0 <= plain["filled_label_pool_offset_ms"] <= plain["filled_label_mse"]  # a mean's square <= mean square
    assert 0 < plain["effective_share"]["rollout eps 1"] <= 1.0
    assert "val_coverage_50" not in plain  # the run's own fill: no refit
    refit = advantage_fidelity(tmp_path / "run", eps=(1.0,), prompts=16, critic={"base": True})
    # the refit of the run's own critic fills the pools as the trainer did: the same numbers
    assert refit["cosine"] == pytest.approx({k: plain["cosine"][k] for k in refit["cosine"]})
    assert refit["pool_coverage_50"] == pytest.approx(plain["pool_coverage_50"])
    new = advantage_fidelity(tmp_path / "run", eps=(1.0,), prompts=16, critic={"evidence": True, "recalibrate": "val"})
    assert 0 <= new["val_coverage_50"] <= new["val_coverage_90"] <= 1
    est = advantage_fidelity(tmp_path / "run", eps=(1.0,), prompts=16, critic={"observed": "estimate", "cold": True})
    assert 0 <= est["observed_coverage_50"] <= est["observed_coverage_90"] <= 1 and est["observed_labels"] > 0
    assert -1 <= est["all_label_variance_error_rank_corr"] <= 1 and -1 <= est["label_rank_corr_ceiling"] <= 1


def test_heldout_recalibration_keeps_its_labels_from_the_critic(world):
    from flexrec.critic import HELDOUT_SHARE, build_imputer, known_interest
    from flexrec.data.pools import split_users

    splits = split_users(world, seed=0)
    kw = dict(ensemble=1, epochs=2, hidden=8, seed=0)
    plain = build_imputer("critic", world, splits["train"], **kw)
    heldout = build_imputer("critic", world, splits["train"], recalibrate="heldout", **kw)
    assert plain.recalibration is None and heldout.recalibration is not None
    assert len(heldout.recalibration.scales) >= 1 and np.all(heldout.recalibration.scales > 0)
    with pytest.raises(ValueError, match="recalibrate must be"):
        build_imputer("critic", world, splits["train"], recalibrate="val", **kw)  # which validation users?
    assert 0 < HELDOUT_SHARE < 1 and len(known_interest(world, splits["train"])[0]) > 0


def test_feedback_noise_variance_by_hand():
    from flexrec.critic import feedback_noise_variance

    # Residuals 0.1, 0.3 (user 0), 0.2 (user 1), none for user 2; squares 0.01, 0.09, 0.04, pooled mean 0.14 / 3.
    # With 5 pseudo-observations of the pooled value: user 0 (0.10 + 5 * 0.046667) / 7 = 0.047619,
    # user 1 (0.04 + 0.233333) / 6 = 0.045556, user 2 (no feedback) the pooled 0.046667.
    est = feedback_noise_variance(np.array([0, 0, 1]), np.array([0.1, 0.3, 0.2]), n_users=3, prior_count=5.0)
    np.testing.assert_allclose(est, [0.047619, 0.045556, 0.046667], rtol=1e-4)


def test_feedback_noise_variance_tells_noisy_users_from_clean_ones():
    from flexrec.critic import feedback_noise_variance

    # 40 users with 30 readings each, the first 10 with noise sd 0.25, the rest 0.075 (the sparse world's noise
    # on the [0, 1] scale): each user's estimate is near their own variance, pulled a little toward the pooled one.
    rng = np.random.default_rng(0)
    users = np.repeat(np.arange(40), 30)
    sd = np.where(users < 10, 0.25, 0.075)
    est = feedback_noise_variance(users, rng.normal(0.0, sd), n_users=40)
    assert est[:10].min() > est[10:].max()
    np.testing.assert_allclose(est[:10].mean(), 0.25**2, rtol=0.2)
    assert est[10:].mean() < 3 * 0.075**2


def test_observed_labels_get_their_users_noise_variance(world):
    from flexrec.critic import OBSERVED_VAR, build_imputer, fill_pools
    from flexrec.config import _CHOICES
    from flexrec.data import build_examples
    from flexrec.data.pools import split_users

    assert _CHOICES["critic_observed_var"] == OBSERVED_VAR  # the CLI's choices are the critic's
    splits = split_users(world, seed=0)
    kw = dict(ensemble=1, epochs=3, hidden=8, seed=0)
    zero = build_imputer("critic", world, splits["train"], **kw)
    est = build_imputer("critic", world, splits["train"], observed_var="estimate", **kw)
    user = next(int(u) for u in splits["train"] if len(world.observed.user_items(int(u))) >= 2)
    items = np.concatenate([world.observed.user_items(user)[:2], world.eligible_items(user)[:6]])
    (mu0, var0), (mu1, var1) = zero.interest(user, items), est.interest(user, items)
    known = world.observed.lookup(user, items)[1]
    np.testing.assert_array_equal(mu0, mu1)  # the same critic: only the observed labels' variance differs
    assert np.all(var0[known] == 0) and np.allclose(var1[known], est.noise_var[user]) and est.noise_var[user] > 0
    np.testing.assert_array_equal(var0[~known], var1[~known])
    # through the need labels: an observed maximize_interest label now has a Monte-Carlo spread
    ex = build_examples(world, ["maximize_interest"], "train", K=8, seed=0, max_users=20)
    obs_mask = np.stack([world.observed.lookup(int(e.user), e.items)[1] for e in ex])
    assert obs_mask.any()
    # (all-equal Monte-Carlo draws leave a rounding variance of ~1e-14)
    assert np.all(fill_pools(world, zero, ex)[1][obs_mask] < 1e-10)
    assert np.all(fill_pools(world, est, ex)[1][obs_mask] > 1e-4)
    with pytest.raises(ValueError, match="observed_var must be"):
        build_imputer("critic", world, splits["train"], observed_var="guess", **kw)


def test_rank_correlation_ceiling():
    from flexrec.experiments.fidelity import rank_correlation_ceiling

    # One variance for all: the squared errors' order is pure chance, ceiling ~0. Variances over six decades:
    # the variance dominates the single error's size, the ceiling is high; over a factor of 2, low.
    assert abs(rank_correlation_ceiling(torch.full((20000,), 0.01))) < 0.03
    wide = torch.exp(torch.empty(20000).uniform_(math.log(1e-6), 1.0, generator=torch.Generator().manual_seed(0)))
    narrow = torch.empty(20000).uniform_(0.01, 0.02, generator=torch.Generator().manual_seed(0))
    assert rank_correlation_ceiling(wide) > 0.8 and rank_correlation_ceiling(narrow) < 0.2


def test_cold_views_pose_as_users_with_one_or_two_history_items(world):
    from flexrec.critic import Critic, _cold_views

    T = world.n_topics
    users = np.array([u for u in range(world.n_users) if len(world.history(u)[0]) >= 3][:50])
    profiles, counts = _cold_views(world, users, np.random.default_rng(0))
    assert set(counts.tolist()) == {1, 2}
    topic_counts = profiles[:, :T] * counts[:, None]  # history items per topic, whole numbers summing to the count
    np.testing.assert_allclose(topic_counts, np.round(topic_counts), atol=1e-5)
    np.testing.assert_allclose(topic_counts.sum(1), counts, atol=1e-5)
    for user, row, n in zip(users, profiles, counts):  # the mean feedback is that of one or two of the user's items
        fb = world.normalized_interest(world.history(int(user))[1])
        means = fb if n == 1 else (fb[:, None] + fb[None, :])[np.triu_indices(len(fb), 1)] / 2
        assert np.min(np.abs(means - row[2 * T])) < 1e-5
    plain = Critic.fit(world, np.arange(world.n_users), ensemble=1, epochs=2, hidden=8, evidence=True)
    cold = Critic.fit(world, np.arange(world.n_users), ensemble=1, epochs=2, hidden=8, evidence=True, cold_views=True)
    items = world.eligible_items(int(users[0]))[:5]
    (mu0, _), (mu1, var1) = plain.interest(int(users[0]), items), cold.interest(int(users[0]), items)
    assert not np.allclose(mu0, mu1) and np.all(var1 > 0)  # trained on more rows, it is another critic


def test_group_recalibration_fixes_each_group_and_the_critic_fits_one(world):
    from flexrec.critic import COLD_USER, NEW_TOPIC, SEEN_TOPIC, GroupRecalibration, VarianceRecalibration, build_imputer, coverage
    from flexrec.data.pools import split_users

    # The same predicted variance in two groups whose errors are 4x and 1/4x it (the wrong order across groups): one
    # recalibration per group brings each to nominal coverage; one for all cannot (the known answer: 4 and 1/4).
    pred = np.full(20000, 0.01)
    groups = np.repeat([NEW_TOPIC, SEEN_TOPIC], 10000)
    true = np.where(groups == NEW_TOPIC, 0.04, 0.0025)
    mu = np.zeros_like(pred)
    fit = {g: VarianceRecalibration.fit(mu[groups == g], pred[groups == g], _draws(pred, true, 5)[groups == g])
           for g in (NEW_TOPIC, SEEN_TOPIC)}
    recal = GroupRecalibration(fit)
    fresh = _draws(pred, true, 6)
    for g in (NEW_TOPIC, SEEN_TOPIC):
        c50, c90 = coverage(mu[groups == g], recal.apply(pred, groups)[groups == g], fresh[groups == g])
        assert c50 == pytest.approx(0.5, abs=0.02) and c90 == pytest.approx(0.9, abs=0.02)
    one = VarianceRecalibration.fit(mu, pred, _draws(pred, true, 5))
    assert coverage(mu[groups == NEW_TOPIC], one.apply(pred)[groups == NEW_TOPIC], fresh[groups == NEW_TOPIC])[0] < 0.4
    # the critic's own: three groups, every pair in one of them, positive variances
    splits = split_users(world, seed=0)
    critic = build_imputer("critic", world, splits["train"], ensemble=1, epochs=3, hidden=8, seed=0,
                           recalibrate="heldout-groups")
    assert set(critic.recalibration.parts) == {COLD_USER, NEW_TOPIC, SEEN_TOPIC}
    users = np.repeat(splits["train"][:10], 5)
    items = np.tile(np.arange(5), 10)
    g = critic.pair_groups(users, items)
    assert set(np.unique(g)) <= {COLD_USER, NEW_TOPIC, SEEN_TOPIC}
    assert np.all(g[critic._user_feedback[users] <= 2] == COLD_USER)
    assert np.all(critic.predict(users, items)[1] > 0)


def test_member_variance_by_hand():
    from flexrec.ops.reference import swap_reward

    # One pool (K = 3), two members; G = 2 rollouts: the identity order and (2, 0, 1).
    members = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]])  # (P=1, M=2, K=3) by candidate
    perm = torch.tensor([[[0, 1, 2], [2, 0, 1]]])
    item = rl.member_reward_variance(members, perm, cutoff=0, mode="causal")
    rollout = rl.member_reward_variance(members, perm, cutoff=0, mode="sequence")[..., 0]
    # By hand, d = (1, 1/log2 3, 1/2), IDCG = 1 for both members. Rollout 0 in rank order: member 0 (1, 0, 0),
    # member 1 (0, 1, 0). Causal swap: r_0 = [(g0-g1)(d0-d1) + (g0-g2)(d0-d2)] / 2, r_1 = (g1-g2)(d1-d2), r_2 = 0.
    d1 = 1 / math.log2(3)
    r_m0 = torch.tensor([((1 - d1) + 0.5) / 2, 0.0, 0.0])
    r_m1 = torch.tensor([-(1 - d1) / 2, d1 - 0.5, 0.0])
    expected0 = torch.stack([r_m0, r_m1]).var(0, unbiased=False)
    torch.testing.assert_close(item[0, 0], expected0)
    # NDCG: member 0 ranks its relevant item first (1), member 1 second (d1): variance (1 - d1)^2 / 4
    torch.testing.assert_close(rollout[0, 0], torch.tensor((1 - d1) ** 2 / 4))
    # rollout 1 against the reference op on each member's ranked gains
    ranked = members[0][:, perm[0, 1]]  # (M, K)
    torch.testing.assert_close(item[0, 1], swap_reward(ranked, 0, "causal").var(0, unbiased=False))
    # members that agree: no variance, whatever the ranking
    same = torch.tensor([[[0.3, 0.9, 0.1]] * 4])
    item = rl.member_reward_variance(same, perm, cutoff=2, mode="causal")
    rollout = rl.member_reward_variance(same, perm, cutoff=2, mode="sequence")[..., 0]
    assert torch.equal(item, torch.zeros(1, 2, 3)) and torch.equal(rollout, torch.zeros(1, 2))


def test_member_variance_matches_a_loop_on_random_pools():
    from flexrec.ops.reference import swap_reward

    gen = torch.Generator().manual_seed(0)
    P, M, G, K = 3, 4, 5, 6
    members = torch.rand(P, M, K, generator=gen)
    perm = torch.stack([torch.stack([torch.randperm(K, generator=gen) for _ in range(G)]) for _ in range(P)])
    item = rl.member_reward_variance(members, perm, cutoff=4, mode="causal")
    rollout = rl.member_reward_variance(members, perm, cutoff=4, mode="sequence")[..., 0]
    for p in range(P):
        for g in range(G):
            ranked = members[p][:, perm[p, g]]
            torch.testing.assert_close(item[p, g], swap_reward(ranked, 4, "causal").var(0, unbiased=False))
            torch.testing.assert_close(rollout[p, g], swap_reward(ranked, 4, "sequence")[:, 0].var(unbiased=False))


def test_member_labels_of_a_critic(world):
    from flexrec.critic import build_imputer, fill_member_pools, fill_pools
    from flexrec.data.examples import build_examples
    from flexrec.data.pools import split_users

    splits = split_users(world, seed=0)
    critic = build_imputer("critic", world, splits["train"], ensemble=3, epochs=2, seed=0)
    examples = build_examples(world, ["maximize_interest"], "train", K=8, seed=0, max_users=20)
    members = fill_member_pools(world, critic, examples)
    assert members.shape == (len(examples), 3, 8)
    gains, _ = fill_pools(world, critic, examples, seed=0)
    # maximize_interest's label is the interest itself: the members' labels average to the ensemble's fill
    np.testing.assert_allclose(members.mean(1), gains, atol=1e-5)
    known = np.stack([world.observed.lookup(int(ex.user), np.asarray(ex.items))[1] for ex in examples])
    assert known.any() and np.all(np.ptp(members, 1)[known] == 0)  # observed feedback: every member's label is the same
    assert np.all(np.ptp(members, 1)[~known] > 0)  # filled: the members disagree


def test_members_variance_needs_an_ensemble(tmp_path, small_config):
    from flexrec.config import ConfigError, validate
    from flexrec.data.needs import NEEDS

    validate(small_config(tmp_path, unc_variance="members", critic_ensemble=2), NEEDS)  # an ensemble: accepted
    with pytest.raises(ConfigError, match="--critic-ensemble 2 or more"):
        validate(small_config(tmp_path, unc_variance="members", critic_ensemble=1), NEEDS)
    validate(small_config(tmp_path, unc_variance="members", imputer="item-knn", critic_ensemble=1), NEEDS)  # unused


def test_a_run_with_the_members_variance_resumes(tmp_path, small_config):
    import dataclasses

    from flexrec.config import TrainConfig
    from flexrec.train.loop import train
    from flexrec.train.rundir import load_checkpoint

    cfg = small_config(tmp_path, sft_steps=1, rl_steps=3, world_users=100, world_evidence="sparse",
                       unc_variance="members", critic_ensemble=2, shuffle_slots=True)  # the members move with the slots
    whole = train(dataclasses.replace(cfg, out=str(tmp_path / "whole")))
    state = load_checkpoint(str(tmp_path / "whole"))
    assert state["member_gains"].shape[1:] == (2, cfg.num_candidates)
    assert state["member_gains"].shape[0] == state["gains"].shape[0]

    def interrupt(step):
        if step == 2:  # in the RL stage: the members' gains must come back from the checkpoint
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(dataclasses.replace(cfg, out=str(tmp_path / "part")), on_step=interrupt)
    assert train(TrainConfig(resume=str(tmp_path / "part"))) == whole


def test_members_variance_leaves_critic_mean_unweighted(tmp_path, small_config):
    from flexrec.train.loop import train
    from flexrec.train.rundir import load_checkpoint

    # the raw critic's ablation has no variance: no members' gains are kept, and its RL weights are all 1, so the
    # members setting trains exactly what the labels setting does
    runs = {}
    for variance in ("labels", "members"):
        cfg = small_config(tmp_path / variance, sft_steps=1, rl_steps=2, world_users=100, imputer="critic-mean",
                           critic_ensemble=2, unc_variance=variance)
        runs[variance] = train(cfg)
    assert load_checkpoint(str(tmp_path / "members" / "run"))["member_gains"] is None
    assert runs["labels"] == runs["members"]

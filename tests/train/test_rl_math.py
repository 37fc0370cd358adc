"""The RL math against hand-computed numbers (the arithmetic is in the comments)."""

import math

import pytest
import torch

from flexrec import rl


def test_group_item_advantages_pool_over_the_group():
    # One prompt, G=2 lists of K=2: rewards 1, 2, 3, 4. Mean 2.5; population variance
    # (1.5^2 + 0.5^2 + 0.5^2 + 1.5^2) / 4 = 5 / 4, std = sqrt(1.25) = 1.1180340.
    # A = (r - 2.5) / 1.1180340 = -1.3416408, -0.4472136, 0.4472136, 1.3416408.
    rewards = torch.tensor([[[1.0, 2.0], [3.0, 4.0]]])
    adv = rl.group_item_advantages(rewards, delta=0.0)
    expected = torch.tensor([[[-1.3416408, -0.4472136], [0.4472136, 1.3416408]]])
    torch.testing.assert_close(adv, expected)


def test_group_item_advantages_groups_are_independent_and_constant_group_is_zero():
    # Prompt 0: all rewards 7 -> mean 7, std 0 -> A = 0 / (0 + delta) = 0.
    # Prompt 1: rewards 0, 2 (G=2, K=1) -> mean 1, std 1 -> A = -1 / (1 + 0.5), 1 / 1.5 = -0.6667, 0.6667.
    rewards = torch.tensor([[[7.0], [7.0]], [[0.0], [2.0]]])
    adv = rl.group_item_advantages(rewards, delta=0.5)
    torch.testing.assert_close(adv, torch.tensor([[[0.0], [0.0]], [[-2 / 3], [2 / 3]]]))


def test_group_item_advantages_per_rank_baseline():
    # One prompt, G=2 lists of K=2: rewards [1, 2] and [3, 6]. Rank means: (1 + 3) / 2 = 2, (2 + 6) / 2 = 4.
    # Residuals -1, -2, 1, 2: mean 0, population variance (1 + 4 + 1 + 4) / 4 = 2.5, std 1.5811388.
    # A = residual / 1.5811388 = -0.6324555, -1.2649111, 0.6324555, 1.2649111.
    rewards = torch.tensor([[[1.0, 2.0], [3.0, 6.0]]])
    adv = rl.group_item_advantages(rewards, delta=0.0, per_rank=True)
    torch.testing.assert_close(adv, torch.tensor([[[-0.6324555, -1.2649111], [0.6324555, 1.2649111]]]))


def test_group_item_advantages_per_rank_equals_pooled_for_sequence_rewards():
    # A sequence-level reward is the same at every rank, so the rank means are the group mean.
    rewards = torch.rand(3, 4, 1).expand(3, 4, 5)
    torch.testing.assert_close(rl.group_item_advantages(rewards, per_rank=True), rl.group_item_advantages(rewards))


def test_rank_relative_variance():
    # P=1, G=2, K=3; the last rank is masked. Rank means over the G lists: (1 + 3) / 2 = 2, (4 + 2) / 2 = 3;
    # the masked rank has no entries -> 0. Relative: 1/2, 4/3, 0 and 3/2, 2/3, 0.
    u = torch.tensor([[[1.0, 4.0, 0.0], [3.0, 2.0, 0.0]]])
    mask = torch.tensor([True, True, False]).expand(1, 2, 3)
    rel = rl.rank_relative_variance(u, mask)
    torch.testing.assert_close(rel, torch.tensor([[[0.5, 4 / 3, 0.0], [1.5, 2 / 3, 0.0]]]))


def test_uncertainty_weights_normalised_and_clipped():
    # u = 0, 1, 3; mean u = 4/3; eps = 0.5 relative -> 0.5 * 4/3 = 2/3.
    # w = 1 / (u + 2/3) = 1.5, 0.6, 0.2727273; their mean = 2.3727273 / 3 = 0.7909091;
    # normalised: 1.8965517, 0.7586207, 0.3448276; clipped at 1.5: 1.5, 0.7586207, 0.3448276.
    w = rl.uncertainty_weights(torch.tensor([0.0, 1.0, 3.0]), eps=0.5, max_weight=1.5)
    torch.testing.assert_close(w, torch.tensor([1.5, 0.7586207, 0.3448276]))


def test_uncertainty_weights_all_observed_is_one():
    w = rl.uncertainty_weights(torch.zeros(2, 3))
    torch.testing.assert_close(w, torch.ones(2, 3))


def test_item_uncertainty_weights_only_on_scored_decisions():
    # K=4, cutoff 2: ranks 0 and 1 are weighted, rank 2 (past the cutoff) and rank 3 (forced) keep 1.
    torch.manual_seed(0)
    u = torch.rand(3, 4, 4)
    w = rl.item_uncertainty_weights(u, cutoff=2, eps=0.1, max_weight=5.0)
    assert torch.equal(w[..., 2:], torch.ones(3, 4, 2))
    scored = torch.tensor([True, True, False, False]).expand(3, 4, 4)
    expected = rl.uncertainty_weights(rl.rank_relative_variance(u, scored), 0.1, 5.0, scored)
    torch.testing.assert_close(w[..., :2], expected[..., :2])
    assert w[..., :2].mean().item() == pytest.approx(1.0, abs=1e-5)  # normalised over the scored entries
    # At a rank, the more uncertain reward gets the smaller weight.
    by_u = w[..., 0].flatten()[u[..., 0].flatten().argsort()]
    assert (by_u[1:] <= by_u[:-1]).all() and by_u[0] > by_u[-1]
    # cutoff 0 = the whole list: every rank but the forced last one is weighted.
    w_all = rl.item_uncertainty_weights(u, cutoff=0, eps=0.1, max_weight=5.0)
    assert torch.equal(w_all[..., 3], torch.ones(3, 4)) and not torch.equal(w_all[..., 2], torch.ones(3, 4))


def test_k3_kl():
    # log p = -1, log q = -2: d = q - p = -1; exp(-1) - (-1) - 1 = 0.3678794. Equal log-probs -> 0.
    kl = rl.k3_kl(torch.tensor([-1.0, -0.5]), torch.tensor([-2.0, -0.5]))
    torch.testing.assert_close(kl, torch.tensor([math.exp(-1.0), 0.0]))


def test_ppo_clip_loss_hand_computed():
    # Token 1: ratio exp(log 1.5 - 0) = 1.5, A = 2: unclipped 3.0, clipped 1.2 * 2 = 2.4, min 2.4 -> -2.4.
    # Token 2: ratio 0.5, A = -1: unclipped -0.5, clipped 0.8 * -1 = -0.8, min -0.8 -> +0.8.
    # policy loss = (-2.4 + 0.8) / 2 = -0.8. Reference = current -> KL 0. Entropy mean (1 + 3) / 2 = 2.
    # loss = -0.8 + 0.01 * 0 - 0.005 * 2 = -0.81. Both ratios left [0.8, 1.2] -> clip_frac 1.
    logprob = torch.tensor([[math.log(1.5), math.log(0.5)]], requires_grad=True)
    out = rl.ppo_clip_loss(
        logprob, torch.zeros(1, 2), logprob.detach(), torch.tensor([[2.0, -1.0]]), torch.tensor([[1.0, 3.0]]),
        clip=0.2, kl_coef=0.01, entropy_coef=0.005,
    )
    assert out.loss.item() == pytest.approx(-0.81, abs=1e-6)
    assert out.policy_loss.item() == pytest.approx(-0.8, abs=1e-6)
    assert out.kl.item() == pytest.approx(0.0, abs=1e-7)
    assert out.clip_frac.item() == 1.0
    out.loss.backward()
    # Both tokens are clipped on the side that stops the gradient: d loss / d logprob = 0.
    torch.testing.assert_close(logprob.grad, torch.zeros(1, 2))


def test_ppo_clip_loss_unclipped_gradient_and_mask():
    # ratio 1 (logprob = old), A = 3 -> policy loss -3 * ratio; d/d logprob = -3 * ratio / N = -3 / 1
    # (the second token is masked out, so N = 1). KL 0 at equal log-probs, and d k3 / d logprob = 0 there.
    logprob = torch.tensor([[-0.7, -0.2]], requires_grad=True)
    mask = torch.tensor([[True, False]])
    out = rl.ppo_clip_loss(logprob, logprob.detach(), logprob.detach(), torch.tensor([[3.0, 100.0]]),
                           torch.zeros(1, 2), mask=mask)
    assert out.policy_loss.item() == pytest.approx(-3.0)
    out.loss.backward()
    torch.testing.assert_close(logprob.grad, torch.tensor([[-3.0, 0.0]]))


def test_sft_loss_is_mean_nll():
    # -(-1 - 3) / 2 = 2
    assert rl.sft_loss(torch.tensor([[-1.0, -3.0]])).item() == pytest.approx(2.0)


def test_tied_target_logprob_scores_the_tied_set_by_hand():
    # K = 3, gains (1, 0, 0), target (0, 1, 2), equal logits. Step 0: no tie, log 1/3. Step 1: candidates 1 and 2
    # remain and tie at 0, so the whole remaining mass: log 1 = 0 (slot order alone would score log 1/2). Step 2: 0.
    logits = torch.zeros(1, 3, 3)
    perm, gains = torch.tensor([[0, 1, 2]]), torch.tensor([[1.0, 0.0, 0.0]])
    out, _ = rl.tied_target_logprob(logits, perm, gains)
    torch.testing.assert_close(out, torch.tensor([[math.log(1 / 3), 0.0, 0.0]]))
    # Gains (0.5, 0.5, 0.2) with logits (0, log 2, 0) at step 0: the tied set {0, 1} holds 3/4 of the mass.
    logits = torch.tensor([[[0.0, math.log(2.0), 0.0]] * 3])
    out, _ = rl.tied_target_logprob(logits, perm, torch.tensor([[0.5, 0.5, 0.2]]))
    assert out[0, 0].item() == pytest.approx(math.log(3 / 4))
    assert out[0, 1].item() == pytest.approx(math.log(2 / 3))  # candidate 1 alone at step 1: 2 / (2 + 1)


def test_tied_target_logprob_without_ties_is_the_permutation_logprob():
    from flexrec.ops.reference import permutation_logprob

    g = torch.Generator().manual_seed(0)
    logits = torch.randn(4, 6, 6, generator=g, requires_grad=True)
    gains = torch.rand(4, 6, generator=g)  # continuous: no ties
    perm = torch.argsort(-gains, dim=-1, stable=True)
    for ours, reference in zip(rl.tied_target_logprob(logits, perm, gains, 0.7), permutation_logprob(logits, perm, 0.7)):
        torch.testing.assert_close(ours, reference)  # the log-probs and the entropies
    rl.tied_target_logprob(logits, perm, gains)[0].sum().backward()
    assert torch.isfinite(logits.grad).all()


def test_rank_grpo_advantages_normalise_each_rank_across_the_rollouts():
    from flexrec import rl

    # one prompt, G = 3 rollouts, K = 2 ranks. Rank 0: rewards 1, 2, 3 -> mean 2, std (Bessel) 1 -> -1, 0, +1.
    # Rank 1: rewards 0, 0, 6 -> mean 2, std sqrt((4 + 4 + 16) / 2) = sqrt(12) -> -2/sqrt(12), -2/sqrt(12), 4/sqrt(12).
    r = torch.tensor([[[1.0, 0.0], [2.0, 0.0], [3.0, 6.0]]])
    a = rl.rank_grpo_advantages(r, delta=0.0)
    s12 = 12 ** 0.5
    torch.testing.assert_close(a, torch.tensor([[[-1.0, -2 / s12], [0.0, -2 / s12], [1.0, 4 / s12]]]))
    # a rank where every rollout scores the same (past the cutoff) gets 0, not NaN
    flat = rl.rank_grpo_advantages(torch.tensor([[[1.0, 0.0], [3.0, 0.0]]]), delta=1e-4)
    assert torch.equal(flat[..., 1], torch.zeros(1, 2))
    # the trainer's choice: "rank" normalises per rank; every other mode pools over the group's (list, rank)
    torch.testing.assert_close(rl.advantages(r, "rank", 0.0), a)
    torch.testing.assert_close(rl.advantages(r, "flexrec", 0.0), rl.group_item_advantages(r, 0.0))
    assert not torch.allclose(rl.advantages(r, "seq", 0.0), a)

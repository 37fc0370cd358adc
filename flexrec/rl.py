"""The RL math as small pure functions (FLEXREC.md sections 5 and 6).

Nothing here touches a model: tensors in, tensors out, so that every formula can be checked against
hand-computed numbers (tests/train/test_rl_math.py).
"""

from __future__ import annotations

from typing import Callable, NamedTuple, Optional

import torch
from torch import Tensor

from flexrec.ops import swap_reward
from flexrec.ops.reference import discounts, idcg, masked_log_softmax, permutation_mask


def in_rank_order(values: Tensor, perm: Tensor) -> Tensor:
    """Per-candidate values of each prompt laid out in each sampled ranking's order.

    Shapes: values (P, K) by candidate, perm (P, G, K) -> (P * G, K), position 0 first.
    """
    P, G, K = perm.shape
    return values[:, None, :].expand(P, G, K).gather(-1, perm).reshape(P * G, K)


def scored_decisions(K: int, cutoff: int, device=None) -> Tensor:
    """The ranks whose reward counts: below ``cutoff`` (0 = all) and not the forced last slot. Shapes: -> (K,)."""
    ranks = torch.arange(K, device=device)
    return (ranks < K - 1) & (ranks < (cutoff or K))


def group_item_advantages(rewards: Tensor, delta: float = 1e-4, per_rank: bool = False) -> Tensor:
    """Item advantages normalised within each prompt's group of G rollouts.

    A[p, i, k] = (r[p, i, k] - mean_p) / (std_p + delta), where mean_p and std_p (population std)
    are pooled over the group's (i, k) pairs. A group whose rewards are all equal gets zeros.

    ``per_rank`` (ours): the baseline is the mean over the group's G lists at the same rank k,
    mean_pk, and std_p that of the residuals r - mean_pk, pooled over (i, k). An item reward's
    typical size depends on its rank (the top ranks decide NDCG, so their rewards are the largest),
    and a pooled mean leaves that rank effect in every advantage: every first pick gets a large
    positive advantage, whichever item it was, and ranks past the reward's cutoff get a constant.
    Per rank, the G picks at rank k are compared with each other, as GRPO compares whole lists.
    For a sequence-level reward (equal at every rank) both give the same advantages.

    Shapes: rewards (P, G, K) -> (P, G, K).
    """
    if per_rank:
        centred = rewards - rewards.mean(1, keepdim=True)
        std = centred.reshape(rewards.shape[0], -1).std(-1, unbiased=False)[:, None, None]
        return centred / (std + delta)
    flat = rewards.reshape(rewards.shape[0], -1)
    mean = flat.mean(-1)[:, None, None]
    std = flat.std(-1, unbiased=False)[:, None, None]
    return (rewards - mean) / (std + delta)


def rank_grpo_advantages(rewards: Tensor, delta: float = 1e-4) -> Tensor:
    """Rank-GRPO's advantages: each rank's reward normalised across the group's G rollouts at that rank.

    A[p, i, k] = (r[p, i, k] - mean_i r[p, :, k]) / (std_i r[p, :, k] + delta), std with Bessel's correction;
    a rank whose G rewards are equal (e.g. past the reward's cutoff) gets zeros. This is Rank-GRPO (Zhu et al.,
    "Rank-GRPO: Training LLM-based Conversational Recommender Systems with Reinforcement Learning", arXiv
    2510.20150), as its released code computes it: yaochenzhu/Rank-GRPO, libs/trl/rank_grpo_trainer.py,
    ``RankGRPOTrainer._generate_and_score_completions`` ("Compute group-wise mean/std over num_generations, per
    position": ``rewards_items.view(B, G, rec_num).mean(dim=1)`` and ``.std(dim=1)``, then
    ``(rewards - mean) / (std + 1e-4)``). Its reward, DCG of the list from rank k on (DCG@k:N), is our
    ``swap_reward(..., "suffix")``; its rank-level importance ratio (geometric mean of a rank's token
    probabilities) is our per-slot ratio, since a candidate is one slot token here.

    Shapes: rewards (P, G, K) -> (P, G, K). G = 1 gives zeros.
    """
    if rewards.shape[1] < 2:
        return torch.zeros_like(rewards)
    return (rewards - rewards.mean(1, keepdim=True)) / (rewards.std(1, keepdim=True, unbiased=True) + delta)


def advantages(rewards: Tensor, reward_mode: str, delta: float = 1e-4, per_rank: bool = False) -> Tensor:
    """The advantages a ``--reward-mode`` trains with: Rank-GRPO's per-rank normalisation for "rank"
    (``rank_grpo_advantages``), the group normalisation of FLEXREC.md section 6 for every other mode
    (``group_item_advantages``, ``per_rank``: its rank baseline). Shapes: rewards (P, G, K) -> (P, G, K)."""
    if reward_mode == "rank":
        return rank_grpo_advantages(rewards, delta)
    return group_item_advantages(rewards, delta, per_rank)


def uncertainty_weights(
    reward_var: Tensor,
    eps: float = 0.1,
    max_weight: float = 5.0,
    mask: Optional[Tensor] = None,
    over_ranks: Optional[Callable[[Tensor], Tensor]] = None,
) -> Tensor:
    """Down-weighting of rewards built on uncertain labels: w = 1 / (u + eps * mean(u)).

    ``eps`` is relative to the batch's mean variance (ours): reward variances scale with 1/IDCG^2,
    so an absolute epsilon would mean something different for every pool and cutoff. The weights are
    normalised to mean 1 over the batch (over ``mask`` where given), then clipped to
    [0, max_weight], so the learning rate keeps its meaning. All-zero variance (every label
    observed) gives weights of exactly 1. Under data parallelism ``over_ranks`` sums a tensor over
    the ranks (``flexrec.train.distributed.sum_over_ranks``), so that the batch means are those of the
    global batch and the weights equal one process's.

    Shapes: reward_var (...) -> (...), same shape; mask (...) bool or None.
    """
    u = reward_var.to(torch.float32)
    m = torch.ones_like(u, dtype=torch.bool) if mask is None else mask
    mean_u = _batch_mean(u[m], over_ranks)
    if mean_u <= 0:
        return torch.ones_like(u)
    w = 1.0 / (u + eps * mean_u)
    w = w / _batch_mean(w[m], over_ranks)
    return w.clamp(max=max_weight)


def _batch_mean(x: Tensor, over_ranks: Optional[Callable[[Tensor], Tensor]] = None) -> Tensor:
    """Mean of the elements of ``x`` (of every rank's, with ``over_ranks``); 0 when there are none."""
    if over_ranks is None:
        return x.mean() if x.numel() else x.new_zeros(())
    total = over_ranks(torch.stack([x.sum(), x.new_tensor(float(x.numel()))]))
    return total[0] / total[1] if total[1] > 0 else x.new_zeros(())


def rank_relative_variance(
    reward_var: Tensor, mask: Optional[Tensor] = None, over_ranks: Optional[Callable[[Tensor], Tensor]] = None
) -> Tensor:
    """Each reward's variance divided by the mean variance of the rewards at the same rank (ours).

    A swap reward's variance scales with (d_k - d_j)^2, which is largest at the top of the list: raw
    variances say mostly where an item sits, not how uncertain its labels are. Fed to
    `uncertainty_weights` as they are, they silenced the top ranks, where NDCG is decided (measured on
    random K=10 lists, critic-like label variances: mean normalised weight 0.06 at rank 1, 1.7 at
    rank 9). Relative to its rank's mean over the batch, a variance compares items at the same rank,
    so the weights down-weight uncertain labels instead of top positions. Ranks whose variances are
    all 0 (every label observed, or the forced last slot) stay 0. ``over_ranks``: as in
    ``uncertainty_weights`` (the means over the global batch under data parallelism).

    Shapes: reward_var (P, G, K) -> (P, G, K); mask (P, G, K) bool or None (which entries count).
    """
    u = reward_var.to(torch.float32)
    m = torch.ones_like(u) if mask is None else mask.to(u.dtype)
    sums, counts = (u * m).sum((0, 1), keepdim=True), m.sum((0, 1), keepdim=True)
    if over_ranks is not None:
        sums, counts = over_ranks(sums), over_ranks(counts)
    per_rank = sums / counts.clamp(min=1.0)
    return torch.where(per_rank > 0, u / per_rank.clamp(min=torch.finfo(u.dtype).tiny), torch.zeros_like(u))


def item_uncertainty_weights(
    reward_var: Tensor,
    cutoff: int,
    eps: float,
    max_weight: float,
    over_ranks: Optional[Callable[[Tensor], Tensor]] = None,
) -> Tensor:
    """The weight of each item advantage, as the trainer applies them (FLEXREC.md section 5).

    Weighted are the decisions the reward scores (`scored_decisions`). There the variances are compared within each rank (`rank_relative_variance`), then
    turned into `uncertainty_weights`. Past the cutoff a reward is 0 with variance 0; counted as
    "certain" it would take the largest weights (measured: median weight 0.24 at ranks 1-5 with cutoff
    5), so those advantages keep weight 1. ``over_ranks``: as in `uncertainty_weights`.

    Shapes: reward_var (P, G, K) -> (P, G, K).
    """
    scored = scored_decisions(reward_var.shape[-1], cutoff, reward_var.device).expand_as(reward_var)
    weights = uncertainty_weights(rank_relative_variance(reward_var, scored, over_ranks), eps, max_weight, scored,
                                  over_ranks)
    return torch.where(scored, weights, torch.ones_like(weights))


def rollout_reward_variance(ranked_gains: Tensor, ranked_var: Tensor, cutoff: int) -> Tensor:
    """u_i, the variance of each rollout's NDCG@cutoff under independent gain noise (FLEXREC.md section 5):
    u_i = sum_k (d_k / IDCG)^2 s_k, with d the DCG discounts (0 past the cutoff) and IDCG that of the pool's
    gains, held fixed as in `flexrec.ops.swap_reward_var`. A pool whose IDCG is 0 gets 0.

    Shapes: ranked_gains, ranked_var (N, K) in each rollout's rank order -> (N,).
    """
    g, s = ranked_gains.to(torch.float32), ranked_var.to(torch.float32)
    d = discounts(g.shape[-1], cutoff, g.dtype, g.device)
    ideal = idcg(g, cutoff)
    inv = torch.where(ideal > 0, 1.0 / torch.where(ideal > 0, ideal, torch.ones_like(ideal)), torch.zeros_like(ideal))
    return (d**2 * s).sum(-1) * inv**2


def member_reward_variance(member_gains: Tensor, perm: Tensor, cutoff: int, mode: str) -> Tensor:
    """The variance over the critic's ensemble members of each sampled ranking's rewards: every member's labels
    (`flexrec.critic.fill_member_pools`) scored as the trainer scores the filled ones, by ``swap_reward(..., mode)``:
    the trainer's item reward, or "sequence" for the whole list's NDCG@cutoff (``--unc-form rollout``; every
    position then holds the same value).

    Unlike the closed form (`flexrec.ops.swap_reward_var`, `rollout_reward_variance`), which treats each label's
    variance as independent noise and includes the feedback noise the critic predicts, this is the epistemic part
    only, with the members' errors as correlated across a pool as they are: a member that rates every item of a pool
    higher by the same amount changes a swap reward only through its IDCG (each member's own), where the closed form
    counts every label's variance in full.

    Shapes: member_gains (P, M, K) by candidate, perm (P, G, K) -> (P, G, K).
    """
    P, M, K = member_gains.shape
    G = perm.shape[1]
    ranked = member_gains[:, None].expand(P, G, M, K).gather(-1, perm[:, :, None].expand(P, G, M, K))
    return swap_reward(ranked.reshape(P * G * M, K).to(torch.float32), cutoff, mode).view(P, G, M, K).var(2, unbiased=False)


def rollout_uncertainty_weights(
    rollout_var: Tensor,
    K: int,
    cutoff: int,
    eps: float,
    max_weight: float,
    over_ranks: Optional[Callable[[Tensor], Tensor]] = None,
) -> Tensor:
    """The paper's form of the weights: every item advantage of rollout i scaled by 1 / (u_i + eps), u_i the
    variance of the whole rollout's reward (`rollout_reward_variance`), normalised and clipped by
    `uncertainty_weights` (so ``eps`` is relative to the batch's mean u_i, as in the item form). As in
    `item_uncertainty_weights`, the ranks the reward does not score keep weight 1. ``over_ranks``: as there.

    Shapes: rollout_var (P, G) -> (P, G, K).
    """
    w = uncertainty_weights(rollout_var, eps, max_weight, over_ranks=over_ranks)
    scored = scored_decisions(K, cutoff, rollout_var.device)
    return torch.where(scored, w[..., None], torch.ones_like(w[..., None]))


class PPOLoss(NamedTuple):
    """Scalars of one PPO-clip step (all 0-dim tensors; ``loss`` carries the gradient)."""

    loss: Tensor
    policy_loss: Tensor
    kl: Tensor  # mean k3 estimate of KL(pi || pi_ref) per slot token
    entropy: Tensor  # mean entropy of the masked step distributions
    clip_frac: Tensor  # fraction of tokens whose ratio left [1 - clip, 1 + clip]


def k3_kl(logprob: Tensor, ref_logprob: Tensor) -> Tensor:
    """Schulman's k3 estimator of KL(pi || pi_ref): exp(q - p) - (q - p) - 1 with p, q the log-probs.

    Non-negative, unbiased for samples from pi, and 0 where the two policies agree.
    Shapes: logprob (...), ref_logprob (...) -> (...).
    """
    diff = ref_logprob - logprob
    return torch.exp(diff) - diff - 1.0


def _masked_mean(x: Tensor, mask: Tensor) -> Tensor:
    mask = mask.to(x.dtype)
    return (x * mask).sum() / mask.sum().clamp(min=1.0)


def ppo_clip_loss(
    logprob: Tensor,
    old_logprob: Tensor,
    ref_logprob: Tensor,
    advantages: Tensor,
    entropy: Tensor,
    mask: Optional[Tensor] = None,
    clip: float = 0.2,
    kl_coef: float = 0.01,
    entropy_coef: float = 0.005,
) -> PPOLoss:
    """PPO-clip on each slot token, plus k3 KL to the reference, minus an entropy bonus.

    loss = mean[ -min(ratio * A, clip(ratio, 1-c, 1+c) * A) + kl_coef * k3 ] - entropy_coef * mean(H)
    with ratio = exp(logprob - old_logprob). Means run over ``mask`` (every token when None).

    Shapes: logprob, old_logprob, ref_logprob, advantages, entropy, mask: all (N, K) -> PPOLoss.
    """
    if mask is None:
        mask = torch.ones_like(logprob, dtype=torch.bool)
    ratio = torch.exp(logprob - old_logprob.detach())
    adv = advantages.detach()
    unclipped = ratio * adv
    clipped = ratio.clamp(1.0 - clip, 1.0 + clip) * adv
    policy_loss = _masked_mean(-torch.minimum(unclipped, clipped), mask)
    kl = _masked_mean(k3_kl(logprob, ref_logprob.detach()), mask)
    ent = _masked_mean(entropy, mask)
    loss = policy_loss + kl_coef * kl - entropy_coef * ent
    with torch.no_grad():
        clip_frac = _masked_mean(((ratio - 1.0).abs() > clip).to(logprob.dtype), mask)
    return PPOLoss(loss, policy_loss.detach(), kl.detach(), ent.detach(), clip_frac)


def tied_target_logprob(logits: Tensor, perm: Tensor, gains: Tensor, temperature: float = 1.0) -> tuple[Tensor, Tensor]:
    """Log-prob that step t picks *any* remaining candidate whose gain equals that of the target's step-t choice,
    and each step's entropy.

    ``perm`` is the target ranking by ``gains`` (best first, ties in any order). Where the target's choice ties
    with other remaining candidates the order among them is arbitrary (explore_new_topics' pools are mostly
    label 0), so the likelihood of the tied set is the probability mass on the set, not on one member: a step
    whose remaining candidates all tie costs nothing. Without ties both outputs equal ``permutation_logprob``'s.

    Shapes: logits (N, K, K) step t's logits over the K candidates, perm (N, K), gains (N, K) by candidate
    -> logprob (N, K), entropy (N, K), float32 (float64 for float64 logits).
    """
    used = permutation_mask(perm)  # (N, K, K): chosen before step t
    logp, entropy = masked_log_softmax(logits, used, temperature)
    target_gain = gains.gather(-1, perm)  # (N, K): the gain of step t's target
    tied = (gains[:, None, :] == target_gain[:, :, None]) & ~used  # (N, K, K), holds the target itself
    return torch.logsumexp(logp.masked_fill(~tied, float("-inf")), dim=-1), entropy


def sft_loss(logprob: Tensor, mask: Optional[Tensor] = None) -> Tensor:
    """Negative log-likelihood of a target permutation, mean over steps. Shapes: (N, K) -> ()."""
    if mask is None:
        mask = torch.ones_like(logprob, dtype=torch.bool)
    return -_masked_mean(logprob, mask)

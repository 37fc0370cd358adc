"""One training step of each stage: SFT (teacher-forced NLL of the filled-label ranking) and RL (uncertainty-
aware GRPO with item-level rewards), and how a step's batch is drawn. The math is in ``flexrec.rl``."""

from __future__ import annotations

import math
from typing import Optional

import numpy as np
import torch

from flexrec import rl
from flexrec.config import REWARD_MODES, TrainConfig, need_weight_items
from flexrec.ops import swap_reward, swap_reward_var
from flexrec.train import distributed


def sft_step(policy, optimizer, batch, gains: torch.Tensor, cfg: TrainConfig) -> dict:
    """Teacher-forced NLL of the ranking by the filled labels (ties broken by slot order; with ``cfg.sft_ties``
    "set" a tied step scores its whole tied set), in micro-batches of ``cfg.micro_batch`` examples whose
    gradients add up to the whole batch's (one optimiser step)."""
    B, K = gains.shape
    target = torch.argsort(-gains, dim=-1, stable=True)[:, None]  # (B, 1, K)
    n = min(cfg.sft_positions or K - 1, K - 1)  # the last step is forced (one candidate left)
    optimizer.zero_grad(set_to_none=True)
    loss_sum, entropy_sum = 0.0, 0.0
    for rows in micro_batches(B, cfg.micro_batch):
        ids, mask = chunk_of(batch, rows, B)
        if cfg.sft_ties == "set":
            logits = policy.step_logits(ids, mask, target[rows])[:, 0]  # (b, K, K)
            logprob, entropy = (x[:, None] for x in rl.tied_target_logprob(logits, target[rows, 0], gains[rows],
                                                                           cfg.temperature))
        else:
            logprob, entropy = policy.logprobs(ids, mask, target[rows], cfg.temperature)
        share = (rows.stop - rows.start) / B  # sft_loss is a mean over examples: each chunk's share of it
        loss = rl.sft_loss(logprob[:, 0, :n]) * share
        check_finite_loss(loss)
        loss.backward()
        loss_sum += float(loss.detach())
        entropy_sum += float(entropy[:, 0, :-1].detach().mean()) * share
    clip_and_step(policy, optimizer, cfg)
    return {"sft/loss": loss_sum, "sft/entropy": entropy_sum}


def micro_batches(n: int, size: int) -> list[slice]:
    """Consecutive row slices of at most ``size`` rows covering 0..n-1 (``size`` 0: one slice of all n)."""
    size = size or n
    return [slice(start, min(start + size, n)) for start in range(0, n, size)]


def chunk_of(batch, rows: slice, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The prompts of one micro-batch (``rows`` of the batch's ``n``), with the padding columns they all share
    dropped; the whole batch as it is (collate already pads it to its longest prompt)."""
    if rows.start == 0 and rows.stop == n:
        return batch.input_ids, batch.attention_mask
    return trim_padding(batch.input_ids[rows], batch.attention_mask[rows])


def trim_padding(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Drops the columns that are padding in every row (a micro-batch of short prompts from a long batch).

    Shapes: (B, T), (B, T) -> (B, T'), (B, T') with T' <= T."""
    used = attention_mask.bool().any(0)
    if bool(used.all()):
        return input_ids, attention_mask
    keep = used.nonzero()[:, 0]
    lo, hi = int(keep[0]), int(keep[-1]) + 1
    return input_ids[:, lo:hi], attention_mask[:, lo:hi]


def rl_step(policy, reference, optimizer, batch, gains, gain_var, cfg: TrainConfig, gen,
            member_gains=None) -> dict:
    """One GRPO step: G rollouts per prompt -> item rewards -> advantages -> PPO-clip update.

    Shapes inside: P prompts, G lists, K candidates; gains, gain_var (P, K) by candidate; member_gains (P, M, K),
    the critic ensemble members' gains, read with ``--unc-variance members``.
    """
    P, K, G = gains.shape[0], gains.shape[1], cfg.group_size
    mode, use_uncertainty = REWARD_MODES[cfg.reward_mode]
    policy.eval()
    rollout = policy.rank(batch.input_ids, batch.attention_mask, K, G, temperature=cfg.temperature, generator=gen,
                          noise_rows=distributed.noise_rows(P * G))  # under torchrun: this rank's rows of the noise
    policy.train()
    perm = rollout.perm  # (P, G, K)
    ranked_gains, ranked_var = rl.in_rank_order(gains, perm), rl.in_rank_order(gain_var, perm)
    rewards = swap_reward(ranked_gains, cfg.ndcg_cutoff, mode).view(P, G, K)
    advantages = rl.advantages(rewards, cfg.reward_mode, cfg.adv_delta, per_rank=cfg.adv_baseline == "rank")
    decisions = torch.arange(K, device=perm.device) < K - 1  # the last slot is forced
    mask = decisions.expand(P, G, K)
    if use_uncertainty:
        over_ranks = distributed.sum_over_ranks if distributed.world() > 1 else None  # the global batch's statistics
        per_rollout = cfg.unc_form == "rollout"  # the paper's A / (u_i + eps), one weight per rollout; else per item
        if cfg.unc_variance == "labels":  # the closed form from the labels' variances
            var = (rl.rollout_reward_variance(ranked_gains, ranked_var, cfg.ndcg_cutoff).view(P, G) if per_rollout
                   else swap_reward_var(ranked_gains, ranked_var, cfg.ndcg_cutoff, mode).view(P, G, K))
        elif member_gains is not None:  # the spread of the critic members' own rewards (the list's NDCG, or each item's)
            var = rl.member_reward_variance(member_gains, perm, cfg.ndcg_cutoff, "sequence" if per_rollout else mode)
            var = var[..., 0] if per_rollout else var
        else:  # an imputer without members (critic-mean, KNN): no variance, no weighting
            var = None
        if var is not None:
            weights = (rl.rollout_uncertainty_weights(var, K, cfg.ndcg_cutoff, cfg.unc_eps, cfg.unc_max_weight, over_ranks)
                       if per_rollout else
                       rl.item_uncertainty_weights(var, cfg.ndcg_cutoff, cfg.unc_eps, cfg.unc_max_weight, over_ranks))
            advantages = advantages * weights
    with torch.no_grad():
        ref_logprob, _ = reference.logprobs(batch.input_ids, batch.attention_mask, perm, cfg.temperature)
    chunks = micro_batches(P, cfg.micro_batch)  # every prompt has the same (G, K) decisions: means split evenly
    for _ in range(cfg.ppo_epochs):
        optimizer.zero_grad(set_to_none=True)
        sums = dict.fromkeys(("loss", "kl", "entropy", "clip_frac"), 0.0)
        for rows in chunks:
            ids, ids_mask = chunk_of(batch, rows, P)
            logprob, entropy = policy.logprobs(ids, ids_mask, perm[rows], cfg.temperature)
            out = rl.ppo_clip_loss(logprob, rollout.logprob[rows], ref_logprob[rows], advantages[rows], entropy,
                                   mask[rows], cfg.clip, cfg.kl_coef, cfg.entropy_coef)
            share = (rows.stop - rows.start) / P
            check_finite_loss(out.loss)
            (out.loss * share).backward()
            for key in sums:
                sums[key] += float(getattr(out, key).detach()) * share
        clip_and_step(policy, optimizer, cfg)
    sequence_ndcg = swap_reward(ranked_gains, 5, "sequence")[:, 0]
    return {"rl/loss": sums["loss"], "rl/reward": float(sequence_ndcg.mean()), "rl/kl": sums["kl"],
            "rl/entropy": sums["entropy"], "rl/clip_frac": sums["clip_frac"]}


def sample_batch(rng: np.random.Generator, by_need: list[np.ndarray], step: int, n: int, pure: bool,
            weights: Optional[list[float]] = None) -> np.ndarray:
    """Example indices of one batch: from one need per step in turn when ``pure``, else from all.

    ``weights`` (one per need of ``by_need``, or None for equal): how often each need is drawn
    relative to the others; within a need, examples are drawn uniformly. Ignored when ``pure``.
    """
    if pure:
        pool = by_need[step % len(by_need)]
        return pool[rng.choice(len(pool), min(n, len(pool)), replace=False)]
    pool = np.concatenate(by_need)
    p = None
    if weights is not None and len(set(weights)) > 1:
        p = np.concatenate([np.full(len(b), w / len(b)) for b, w in zip(by_need, weights)])
        p = p / p.sum()
    return pool[rng.choice(len(pool), min(n, len(pool)), replace=False, p=p)]


def need_weights(spec: str, needs: list[str]) -> list[float]:
    """The sampling weight of each of ``needs`` from ``spec`` (``cfg.need_weights`` for SFT,
    ``cfg.rl_need_weights`` for RL: "need=w,..."; unlisted: 1)."""
    given = {name: float(weight) for name, weight in need_weight_items(spec)}
    return [given.get(need, 1.0) for need in needs]


def check_finite_loss(loss: torch.Tensor) -> None:
    if not torch.isfinite(loss):
        raise FloatingPointError(f"non-finite loss {float(loss)}; lower the learning rate")


def clip_and_step(policy, optimizer, cfg: TrainConfig) -> None:
    """Clips the accumulated gradients' norm and takes the optimiser step."""
    torch.nn.utils.clip_grad_norm_(policy.trainable_parameters(), cfg.grad_clip)
    optimizer.step()


def sft_lr_at(step: int, cfg: TrainConfig) -> float:
    """SFT's learning rate at ``step`` (0-based, < sft_steps): ``sft_lr``, or with ``sft_lr_decay`` "cosine" a
    half cosine from ``sft_lr`` at step 0 to 10% of it at the last SFT step. A function of the step alone, so a
    resumed run continues the schedule."""
    if cfg.sft_lr_decay == "none" or cfg.sft_steps <= 1:
        return cfg.sft_lr
    floor = 0.1
    return cfg.sft_lr * (floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * step / (cfg.sft_steps - 1))))


def rl_optimizer(policy, cfg: TrainConfig) -> torch.optim.Optimizer:
    return torch.optim.AdamW(policy.trainable_parameters(), lr=cfg.lr, weight_decay=0.0)

"""``python -m flexrec.train``: SFT warm start, then uncertainty-aware GRPO with item-level rewards.

Reads top to bottom: settings -> data -> policy -> critic fill -> [SFT step | RL step: rollout ->
critic-filled gains -> swap rewards -> uncertainty-scaled advantages -> PPO-clip loss -> step] ->
log / eval / save -> report. The math lives in ``flexrec.rl``, the model in ``flexrec.models``,
the critic in ``flexrec.critic``; this file only wires them.
"""

from __future__ import annotations

import dataclasses
import json
import random
import sys
import time
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch
from torch.distributed.elastic.multiprocessing.errors import record

from flexrec import distributed, parallel, rl
from flexrec.config import TrainConfig, need_list, need_weight_items, parse_args, to_dict, validate
from flexrec.critic import build_imputer, calibrate, fill_pools
from flexrec.data import NEEDS, build_examples, load, split_users
from flexrec.evaluation import evaluate, policy_ranker, popularity_ranker
from flexrec.models import check_model_spec
from flexrec.ops import swap_reward, swap_reward_var
from flexrec.report import results_table, write_report
from flexrec.runlog import RunDir, load_checkpoint, rng_state, set_rng_state
from flexrec.train_setup import build_policy, make_collate, world_options

# What each --reward-mode means: (swap_reward mode, scale advantages by uncertainty).
REWARD_MODES = {
    "flexrec": ("causal", True),
    "flexrec-nounc": ("causal", False),
    "seq": ("sequence", False),
    "rank": ("suffix", False),
    "independent": ("independent", False),
    "noncausal": ("noncausal", False),
}
SPLITS = (0.7, 0.1, 0.2)  # train / val / test users; a large test split keeps the final table steady
EVAL_BATCH = 32  # examples per evaluation batch (under torchrun the batches are spread over ranks)


def train(cfg: TrainConfig, on_step: Optional[Callable[[int], None]] = None) -> dict:
    """Runs (or resumes) a whole training run; returns {stage: {need: {metric: value}}}."""
    # ---- 0. settings: everything that can be checked without data or a model fails here ----------
    resume = load_checkpoint(cfg.resume) if cfg.resume else None
    if resume is not None:  # an exact continuation: the run's own settings, in its own directory
        launch = {name: getattr(cfg, name) for name in parallel.LAUNCH_SETTINGS}  # but this launch's DDP/FSDP
        cfg = dataclasses.replace(TrainConfig(**resume["config"]), resume=cfg.resume, out=cfg.resume, **launch)
    validate(cfg, NEEDS)
    parallel.check(cfg, distributed.planned_world(), resuming=resume is not None)
    check_model_spec(cfg.model)
    device = distributed.device(cfg.device)  # under torchrun: cuda:LOCAL_RANK or the CPU
    train_needs, eval_needs = need_list(cfg.need, NEEDS), need_list(cfg.eval_needs or cfg.need, NEEDS)
    if device.type == "cpu" and cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    K = cfg.num_candidates

    # ---- 1. data ---------------------------------------------------------------------------------
    data = load(cfg.data, **world_options(cfg))
    longest_history = int(np.diff(data.history_ptr).max())
    if K > data.n_items - longest_history:
        raise ValueError(
            f"--num-candidates {K} is larger than the pool the data allows ({data.n_items} items, "
            f"histories up to {longest_history}); lower K or use more items"
        )
    splits = split_users(data, SPLITS, cfg.seed)
    examples = {
        split: build_examples(data, train_needs if split == "train" else eval_needs, split, K, cfg.seed,
                              split_fractions=SPLITS, max_users=(cfg.eval_users or None) if split != "train" else None)
        for split in ("train", "val", "test")
    }
    train_ex = examples["train"]
    if not train_ex:
        raise ValueError(f"no training examples: no training user has {K} eligible items")

    # ---- 2. policy -------------------------------------------------------------------------------
    # FSDP: built on the CPU, each rank moves only its shards to the GPU
    policy, tok = build_policy(cfg, data, train_ex, "cpu" if parallel.shards(cfg) else device)
    policy.train()
    distributed.join(device, cfg.dist_timeout)  # torchrun's process group (after the model, see there)
    if distributed.world() > 1:  # (the weight sum reads every parameter: only when there are ranks to compare)
        distributed.check_same("data, vocabularies or initial weights",
                               (len(train_ex), len(tok), float(sum(p.detach().double().sum() for p in policy.parameters()))))
    run = RunDir(cfg.out, to_dict(cfg), writer=distributed.is_main())  # only rank 0 writes, logs and prints
    if distributed.is_main():
        print("flexrec.train config:\n" + json.dumps(to_dict(cfg), indent=2), flush=True)

    # ---- 3. critic fill: every training pool's labels (observed as-is, the rest imputed) ---------
    extra_report: list[str] = []
    if resume is not None:
        gains_all, gain_var_all = resume["gains"], resume["gain_var"]
    elif distributed.is_main():  # under torchrun: fitted once, on rank 0, and sent to the others below
        t0 = time.time()
        imputer = build_imputer(cfg.imputer, data, splits["train"], cfg.critic_ensemble, cfg.critic_epochs,
                                cfg.critic_hidden, cfg.knn_neighbours, cfg.seed)
        if cfg.imputer.startswith("critic"):
            line = calibrate(imputer, data, splits["val"]).line()
            print(line, flush=True)
            extra_report.append(line)
        gains_np, gain_var_np = fill_pools(data, imputer, train_ex, seed=cfg.seed)
        gains_all, gain_var_all = torch.from_numpy(gains_np), torch.from_numpy(gain_var_np)
        if cfg.gain == "exp":  # g = 2^l - 1; delta method: Var g ~ (ln 2 * 2^l)^2 Var l
            gain_var_all = (np.log(2.0) * torch.pow(2.0, gains_all)) ** 2 * gain_var_all
            gains_all = torch.pow(2.0, gains_all) - 1.0
        print(f"critic fill ({cfg.imputer}) of {len(train_ex)} pools: {time.time() - t0:.1f}s", flush=True)
    if resume is None and distributed.world() > 1:
        gains_all, gain_var_all = distributed.broadcast((gains_all, gain_var_all) if distributed.is_main() else None)

    order = cfg.need_order.split(",")  # the SFT curriculum's order; needs it does not name come last
    need_order = sorted(train_needs, key=lambda n: order.index(n) if n in order else len(order))
    by_need = [np.flatnonzero([ex.need == n for ex in train_ex]) for n in need_order]
    sft_weights = _need_weights(cfg, need_order)  # parsed once, not per step

    # ---- 4. state: optimiser, reference policy, results; or all of it from the checkpoint --------
    sample_rng = np.random.default_rng([cfg.seed, 1])
    gumbel_gen = torch.Generator().manual_seed(cfg.seed + 2)
    total = cfg.sft_steps + cfg.rl_steps
    results: dict = {}
    reference = None
    policy = parallel.wrap(policy, cfg, device, with_reference=cfg.rl_steps > 0)  # one rank: the policy itself
    optimizer = torch.optim.AdamW(policy.trainable_parameters(), lr=cfg.sft_lr if cfg.sft_steps else cfg.lr,
                                  weight_decay=0.0)
    start = 0
    if resume is not None:
        start, results = resume["step"], resume["results"]
        if start > cfg.sft_steps:  # RL had started: its optimiser and reference
            optimizer = _rl_optimizer(policy, cfg)
            reference = parallel.frozen_copy(policy)
        parallel.load(resume, Path(cfg.resume), policy, optimizer, reference)  # saved under any number of ranks
        set_rng_state(resume["rng"], sample_rng, gumbel_gen)
        run.truncate_metrics(start)

    collate = make_collate(cfg)

    def evaluate_on(split: str, ranker=None) -> dict:  # under torchrun: each rank ranks its share of the batches
        ranker = ranker or policy_ranker(policy, device)
        return distributed.evaluate_sharded(
            lambda exs: evaluate(ranker, exs, tok, data, collate_fn=collate, batch_size=EVAL_BATCH), examples[split],
            EVAL_BATCH)

    def checkpoint(done: int, rng: dict) -> None:  # DDP: rank 0 writes; FSDP: every rank writes its shards
        parallel.save(run.path, run.save_checkpoint, {
            "config": to_dict(cfg), "step": done, "results": results, "rng": rng, "gains": gains_all,
            "gain_var": gain_var_all,
        }, policy, optimizer, reference)

    # ---- 5. the loop: SFT steps, then RL steps ---------------------------------------------------
    bar = _progress(cfg, start, total)
    done, done_rng = start, rng_state(sample_rng, gumbel_gen)
    try:
        for step in range(start, total):
            if step == 0:
                results["untrained"] = evaluate_on("test")
                results["popularity"] = evaluate_on("test", popularity_ranker(data))
            if step == cfg.sft_steps and cfg.rl_steps:  # the SFT model becomes the RL reference
                if cfg.sft_steps:
                    results["sft"] = evaluate_on("test")
                reference = parallel.frozen_copy(policy)
                optimizer = _rl_optimizer(policy, cfg)
            active = by_need[: 1 + step // cfg.need_stagger] if cfg.need_stagger and step < cfg.sft_steps else by_need
            idx = _sample(sample_rng, active, step, cfg.batch_size if step < cfg.sft_steps else cfg.prompts_per_step,
                          cfg.need_pure_batches, sft_weights[: len(active)] if step < cfg.sft_steps else None)
            idx = distributed.shard(idx)  # every rank drew the same global batch; each keeps its share
            batch = collate([train_ex[i] for i in idx], tok, data).to(device)
            gains, gain_var = gains_all[idx].to(device), gain_var_all[idx].to(device)
            if step < cfg.sft_steps:
                logs = sft_step(policy, optimizer, batch, gains, cfg)
            else:
                logs = rl_step(policy, reference, optimizer, batch, gains, gain_var, cfg, gumbel_gen)
            logs = distributed.mean_over_ranks(logs)
            done, done_rng = step + 1, rng_state(sample_rng, gumbel_gen)

            if done % cfg.eval_every == 0 or done == total:
                for need, r in evaluate_on("val").items():
                    logs[f"val_ndcg@5/{need}"] = r["ndcg@5"]
            run.log(done, logs)
            bar.set_postfix(_postfix(logs), refresh=False)
            bar.update(1)
            if done % cfg.save_every == 0:
                checkpoint(done, done_rng)
            if on_step is not None:
                on_step(done)
    except KeyboardInterrupt:
        if not parallel.is_sharded(policy):  # FSDP's save is collective, and another rank may be mid-step
            checkpoint(done, done_rng)
        bar.close()
        run.close()
        if distributed.is_main():
            print(f"\ninterrupted after step {done}; resume with: python -m flexrec.train --resume {run.path}"
                  + (" (from the last checkpoint: FSDP does not save on Ctrl-C)" if parallel.is_sharded(policy) else ""),
                  file=sys.stderr, flush=True)
        raise
    bar.close()
    if cfg.rl_steps:
        results["rl"] = evaluate_on("test")
    elif cfg.sft_steps:
        results["sft"] = evaluate_on("test")
    checkpoint(total, rng_state(sample_rng, gumbel_gen))

    # ---- 6. report -------------------------------------------------------------------------------
    if distributed.is_main():
        report = write_report(run.path, to_dict(cfg), results, run.metrics(), extra_report)
        (run.path / "results.json").write_text(json.dumps(results, indent=2) + "\n")
        print("\n" + results_table(results) + f"\n\nreport: {report}", flush=True)
    run.close()
    return results


def sft_step(policy, optimizer, batch, gains: torch.Tensor, cfg: TrainConfig) -> dict:
    """Teacher-forced NLL of the ranking by the filled labels (ties broken by slot order)."""
    K = gains.shape[1]
    target = torch.argsort(-gains, dim=-1, stable=True)[:, None]  # (B, 1, K)
    logprob, entropy = policy.logprobs(batch.input_ids, batch.attention_mask, target, cfg.temperature)
    n = min(cfg.sft_positions or K - 1, K - 1)  # the last step is forced (one candidate left)
    loss = rl.sft_loss(logprob[:, 0, :n])
    _step(policy, optimizer, loss, cfg)
    return {"sft/loss": float(loss.detach()), "sft/entropy": float(entropy[:, 0, :-1].detach().mean())}


def rl_step(policy, reference, optimizer, batch, gains, gain_var, cfg: TrainConfig, gen) -> dict:
    """One GRPO step: G rollouts per prompt -> item rewards -> advantages -> PPO-clip update.

    Shapes inside: P prompts, G lists, K candidates; gains, gain_var (P, K) by candidate.
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
    advantages = rl.group_item_advantages(rewards, cfg.adv_delta, per_rank=cfg.adv_baseline == "rank")
    decisions = torch.arange(K, device=perm.device) < K - 1  # the last slot is forced
    mask = decisions.expand(P, G, K)
    if use_uncertainty:
        reward_var = swap_reward_var(ranked_gains, ranked_var, cfg.ndcg_cutoff, mode).view(P, G, K)
        over_ranks = distributed.sum_over_ranks if distributed.world() > 1 else None  # the global batch's statistics
        advantages = advantages * rl.item_uncertainty_weights(reward_var, cfg.ndcg_cutoff, cfg.unc_eps,
                                                              cfg.unc_max_weight, over_ranks)
    with torch.no_grad():
        ref_logprob, _ = reference.logprobs(batch.input_ids, batch.attention_mask, perm, cfg.temperature)
    for _ in range(cfg.ppo_epochs):
        logprob, entropy = policy.logprobs(batch.input_ids, batch.attention_mask, perm, cfg.temperature)
        out = rl.ppo_clip_loss(logprob, rollout.logprob, ref_logprob, advantages, entropy, mask, cfg.clip,
                               cfg.kl_coef, cfg.entropy_coef)
        _step(policy, optimizer, out.loss, cfg)
    sequence_ndcg = swap_reward(ranked_gains, 5, "sequence")[:, 0]
    return {"rl/loss": float(out.loss.detach()), "rl/reward": float(sequence_ndcg.mean()), "rl/kl": float(out.kl),
            "rl/entropy": float(out.entropy), "rl/clip_frac": float(out.clip_frac)}


def _sample(rng: np.random.Generator, by_need: list[np.ndarray], step: int, n: int, pure: bool,
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


def _need_weights(cfg: TrainConfig, needs: list[str]) -> list[float]:
    """The SFT sampling weight of each of ``needs`` from ``cfg.need_weights`` ("need=w,..."; unlisted: 1)."""
    given = {name: float(weight) for name, weight in need_weight_items(cfg.need_weights)}
    return [given.get(need, 1.0) for need in needs]


def _step(policy, optimizer, loss: torch.Tensor, cfg: TrainConfig) -> None:
    if not torch.isfinite(loss):
        raise FloatingPointError(f"non-finite loss {float(loss)}; lower the learning rate")
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(policy.trainable_parameters(), cfg.grad_clip)
    optimizer.step()


def _rl_optimizer(policy, cfg: TrainConfig) -> torch.optim.Optimizer:
    return torch.optim.AdamW(policy.trainable_parameters(), lr=cfg.lr, weight_decay=0.0)


def _progress(cfg: TrainConfig, start: int, total: int):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=start, disable=not (cfg.progress and distributed.is_main()), desc="flexrec",
                dynamic_ncols=True)


def _postfix(logs: dict) -> dict:
    show = {"sft/loss": "loss", "rl/reward": "reward", "rl/kl": "kl"}
    out = {short: f"{logs[key]:.3f}" for key, short in show.items() if key in logs}
    ndcg = [v for k, v in logs.items() if k.startswith("val_ndcg@5/")]
    if ndcg:
        out["ndcg@5"] = f"{np.mean(ndcg):.3f}"
    return out


@record  # under torchrun: a rank's uncaught error, with its traceback, heads torchrun's failure summary
def main(argv: Optional[list[str]] = None) -> int:
    cfg = parse_args(argv)
    start = time.time()
    try:
        train(cfg)
    except KeyboardInterrupt:
        return 130
    except (ValueError, FileNotFoundError) as err:  # a failing rank exits; torchrun then stops the others
        print(f"flexrec.train: error{distributed.where()}: {err}", file=sys.stderr, flush=True)
        return 2
    if distributed.is_main():
        print(f"wall time {time.time() - start:.0f}s", flush=True)
    distributed.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())

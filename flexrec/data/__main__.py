"""`python -m flexrec.data --data synthetic|ml-100k|ml-1m|kuairec [--path DIR] [--tokenizer DIR]`.

Prints the dataset statistics, per-need label statistics over the pools of the first users, and one
fully rendered prompt (with the tiny offline tokenizer unless --tokenizer names a Hugging Face one).
`--protocol-report` prints the real-data protocol's measurements instead (docs/real-data-protocol.md).
"""

from __future__ import annotations

import argparse
import logging

import numpy as np
import torch

from flexrec.baselines.traditional import ItemKNN, PopularityRanker, RandomRanker
from flexrec.config import SIGNAL_SCALES
from flexrec.eval.metrics import ndcg_at_k

from . import DATASETS, NEEDS, SOURCES, build_examples, load
from .needs import minmax
from .pools import split_users
from .prompts import (SIGNAL_NAMES, SIGNAL_TIERS, count_tokens, history_signal_values, history_signals,
                      render_prompt)
from .protocol import default_pool_size, explore_coverage, trend_tie_share
from .slots import add_slot_tokens
from .tiny_tokenizer import default_corpus, train_tiny_tokenizer


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m flexrec.data", description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="synthetic",
                        help=f"{' | '.join(DATASETS)}, or your own data: {' | '.join(SOURCES)}")
    parser.add_argument("--items", default=None, help="the item file of --data csv:FILE")
    parser.add_argument("--path", default=None, help="dataset folder (ml-1m, kuairec; optional for ml-100k)")
    parser.add_argument("--tokenizer", default=None, help="a Hugging Face tokenizer folder (default: tiny BPE)")
    parser.add_argument("--K", type=int, default=None, help="pool size (default: 30, or the protocol's K on real data)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--users", type=int, default=None,
                        help="users whose pools feed the label statistics (default 100; with --protocol-report all)")
    parser.add_argument("--max-tokens", type=int, default=1024)
    parser.add_argument("--protocol-report", action="store_true",
                        help="print the real-data protocol's measurements (docs/real-data-protocol.md) and stop")
    parser.add_argument("--protocol", default="known", help="with --protocol-report: known | implicit | sparse")
    parser.add_argument("--signal-tiers", type=int, default=SIGNAL_TIERS,
                        help="with --protocol-report: the history signals' tiers within the pool (the trainer's "
                             "--signal-tiers; K gives each candidate its rank)")
    parser.add_argument("--signal-scale", default="rank", choices=SIGNAL_SCALES,
                        help="with --protocol-report: a signal's tier is its rank or its min-max scaled value within "
                             "the pool (the trainer's --signal-scale)")
    args = parser.parse_args(argv)
    if args.protocol_report:
        measure(args.data, args.protocol, args.K or 20, args.seed, args.users or 0, args.path, args.signal_tiers,
                args.signal_scale)
        return
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    try:
        data = load(args.data, args.path, **({"seed": args.seed} if args.data == "synthetic" else
                                             {"items": args.items} if args.items else {}))
    except (FileNotFoundError, ValueError) as error:  # a missing file or column: say which, no traceback
        parser.error(str(error))
    args.K = args.K or default_pool_size(data, 30)
    print(f"== dataset {data.name}")
    for key, value in data.summary().items():
        print(f"  {key:28s} {value}")
    examples = build_examples(data, split="train", K=args.K, seed=args.seed, max_users=args.users or 100)
    print(f"== labels per need ({len(examples) // len(NEEDS)} train pools each, K={args.K}; labels in [0, 1])")
    print(f"  {'need':20s} {'threshold':>9s} {'mean':>6s} {'relevant/pool':>13s} {'no-relevant':>11s} {'observed':>8s}")
    for name, need in NEEDS.items():
        ex = [e for e in examples if e.need == name]
        if not ex:
            continue
        labels = np.stack([e.true_labels for e in ex])
        relevant = labels >= need.threshold
        observed = np.stack([e.observed_mask for e in ex]).mean()
        print(f"  {name:20s} {need.threshold:9.2f} {labels.mean():6.3f} {relevant.sum(1).mean():13.2f} "
              f"{(~relevant.any(1)).mean():11.1%} {observed:8.1%}")

    if args.tokenizer:
        from transformers import AutoTokenizer
        tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
    else:
        # Trained on this dataset's titles and topics too, so a prompt is not mostly byte fallbacks.
        tokenizer = train_tiny_tokenizer(default_corpus() + data.item_titles + data.topic_names, vocab_size=4000)
    add_slot_tokens(tokenizer, K=args.K)
    example = examples[0]
    prompt = render_prompt(example, data, tokenizer, max_tokens=args.max_tokens)
    print(f"== prompt: user {example.user}, need {example.need}, {count_tokens(tokenizer, prompt)} tokens")
    print(prompt)
    print(f"== true labels by slot: {np.round(example.true_labels, 2).tolist()}")


def measure(data_name: str = "ml-100k", protocol: str = "known", K: int = 20, seed: int = 0, users: int = 0,
            path: str | None = None, tiers: int = SIGNAL_TIERS, scale: str = "rank") -> None:
    """Print the measurements of docs/real-data-protocol.md (``--protocol-report``):
    explore coverage per novelty share and trend ties on training users; each history signal and the
    baselines as rankers on validation users (never test users). ``users``: the first N of each split (0: all);
    ``tiers``, ``scale``: the signals' tiers within the pool and how they are drawn (``history_signals``)."""
    data = load(data_name, path, protocol=protocol, seed=seed)
    splits = split_users(data, seed=seed)
    train = splits["train"][: users or None]
    chosen = data.novelty_share
    for share in (0.0, 0.05, 0.1, 0.15, 0.2):
        data.novelty_share = share
        print(f"train: novelty_share {share}: explore pools with a relevant item {explore_coverage(data, train, K, seed):.3f}",
              flush=True)
    data.novelty_share = chosen
    print(f"train: trend candidates tied with another {trend_tie_share(data, train, K, seed):.3f}", flush=True)
    examples = build_examples(data, split="val", K=K, seed=seed, max_users=users or None)
    rng = np.random.default_rng(seed)
    for need in ("maximize_interest", "explore_new_topics", "trend_promotion"):
        ex = [e for e in examples if e.need == need]
        rel = torch.from_numpy(np.stack([e.true_labels for e in ex]))
        signals = np.stack([history_signals(data, e.user, e.items, tiers, scale) for e in ex]).astype(np.float64)
        for j, name in enumerate(SIGNAL_NAMES):
            score = torch.from_numpy(signals[:, j] + 0.5 * rng.random(signals[:, j].shape))  # ties at random
            ndcg = ndcg_at_k(torch.argsort(score, -1, descending=True), rel, 5).mean()
            print(f"val: {need} {name} {scale} tier (of {tiers}) as a ranker NDCG@5 {ndcg:.3f}", flush=True)
        # The signals' exact values, and trend_promotion's label with the films' mean rating q for the user's own:
        # how far a policy that reads only these signals could go (docs/real-data-protocol.md, "What the signals allow")
        values = np.stack([history_signal_values(data, e.user, e.items) for e in ex])
        exact = {f"{name} exact value": values[:, j] for j, name in enumerate(SIGNAL_NAMES)}
        q, tr = (np.stack([minmax(row) for row in values[:, SIGNAL_NAMES.index(name)]]) for name in ("q", "tr"))
        exact["0.5 q + 0.5 tr, each min-max in the pool"] = 0.5 * q + 0.5 * tr
        for name, x in exact.items():
            score = torch.from_numpy(x + 1e-9 * rng.random(x.shape))  # ties at random
            ndcg = ndcg_at_k(torch.argsort(score, -1, descending=True), rel, 5).mean()
            print(f"val: {need} {name} as a ranker NDCG@5 {ndcg:.3f}", flush=True)
        for ranker in (RandomRanker, PopularityRanker, ItemKNN):
            ndcg = ndcg_at_k(ranker(seed).fit(data, splits["train"]).rank(ex), rel, 5).mean()
            print(f"val: {need} {ranker.name} NDCG@5 {ndcg:.3f}", flush=True)


if __name__ == "__main__":
    main()

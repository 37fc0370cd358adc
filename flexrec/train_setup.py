"""The small decisions ``flexrec.train`` makes before training: device, dataset options, tokenizer."""

from __future__ import annotations

from typing import Any, Callable

import torch

from flexrec.config import TrainConfig
from flexrec.data import RankingExample, train_tiny_tokenizer
from flexrec.data.prompts import format_prompt
from flexrec.data.tokens import default_corpus
from flexrec.data.world import InteractionData


def resolve_device(spec: str) -> torch.device:
    """"auto" -> cuda when there, else cpu; anything else must exist."""
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(spec)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {spec}: this torch has no CUDA device; use --device cpu")
    return device


def world_options(cfg: TrainConfig) -> dict[str, Any]:
    """Keyword options of ``flexrec.data.load`` for this config (the synthetic world's size)."""
    if cfg.data == "synthetic":
        return dict(seed=cfg.seed, n_users=cfg.world_users, n_items=cfg.world_items, n_topics=cfg.world_topics,
                    observe_fraction=cfg.observe_fraction)
    return dict(path=cfg.data_path or None, observe_fraction=cfg.observe_fraction, seed=cfg.seed)


def make_tokenizer_factory(data: InteractionData, examples: list[RankingExample], cfg: TrainConfig,
                           n_prompts: int = 200) -> Callable[[], Any]:
    """For the tiny model: a BPE tokenizer trained on the default corpus plus real prompts of this
    data, so titles and feedback are few tokens each (short prompts are most of the CPU budget)."""

    def factory():
        bootstrap = train_tiny_tokenizer()
        step = max(1, len(examples) // n_prompts)
        prompts = [format_prompt(ex, data, bootstrap, cfg.history_max) for ex in examples[::step]]
        return train_tiny_tokenizer(default_corpus() + prompts)

    return factory

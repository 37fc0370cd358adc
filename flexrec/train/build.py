"""Everything built from a config: the device, the prompt renderer, the tokenizer and the policy.

The trainer, ``flexrec.load_run``, the peer benchmarks and the tests build through these functions, so a
reloaded run has exactly the trainer's model, vocabulary and prompts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import torch

from flexrec.config import TrainConfig
from flexrec.data import NEEDS, InteractionData, RankingBatch, RankingExample, collate, compact_prompt
from flexrec.data.prompts import SIGNAL_LINE_TOKENS, format_prompt, signal_tokens
from flexrec.data.tiny_tokenizer import default_corpus, train_tiny_tokenizer


def resolve_device(spec: str) -> torch.device:
    """"auto" -> cuda when there, else cpu; anything else must exist."""
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(spec)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {spec}: this torch has no CUDA device; use --device cpu")
    return device


def tiny_overrides(cfg: TrainConfig) -> dict[str, Any]:
    return dict(hidden_size=cfg.tiny_hidden, num_hidden_layers=cfg.tiny_layers, intermediate_size=3 * cfg.tiny_hidden)


def use_compact_prompts(cfg: TrainConfig) -> bool:
    return cfg.prompt == "compact" or (cfg.prompt == "auto" and cfg.model == "tiny")


def make_collate(cfg: TrainConfig) -> Callable[..., RankingBatch]:
    """collate(examples, tokenizer, data) -> RankingBatch, with the prompts this config asks for."""
    if use_compact_prompts(cfg):
        return lambda examples, tok, data: collate(examples, tok, data,
                                                   render=lambda e: compact_prompt(e, data, cfg.trend_tags,
                                                                                  cfg.need_in_lines, cfg.signal_tiers,
                                                                                  cfg.signal_scale))
    return lambda examples, tok, data: collate(examples, tok, data, max_history=cfg.history_max, trend=cfg.trend_tags)


def make_tokenizer_factory(data: InteractionData, examples: list[RankingExample], cfg: TrainConfig,
                           n_prompts: int = 300) -> Callable[[], Any]:
    """For the tiny model: a BPE tokenizer trained on the default corpus plus real prompts of this
    data, so titles and feedback are few tokens each (short prompts are most of the CPU budget)."""

    def factory():
        step = max(1, len(examples) // n_prompts)
        if use_compact_prompts(cfg):
            prompts = [compact_prompt(ex, data, cfg.trend_tags, cfg.need_in_lines, cfg.signal_tiers,
                                      cfg.signal_scale)
                       for ex in examples[::step]]
        else:
            bootstrap = train_tiny_tokenizer()
            prompts = [format_prompt(ex, data, bootstrap, cfg.history_max, cfg.trend_tags) for ex in examples[::step]]
        tok = train_tiny_tokenizer(default_corpus() + prompts)
        if use_compact_prompts(cfg):
            tok.add_tokens([f"<need:{name}>" for name in NEEDS], special_tokens=True)
            if data.compact_signals:
                tok.add_tokens(signal_tokens(cfg.signal_tiers), special_tokens=True)
        return tok

    return factory


def build_policy(cfg: TrainConfig, data: InteractionData, train_examples: list[RankingExample],
                 device: str | torch.device = "cpu") -> tuple[Any, Any]:
    """(policy, tokenizer) of ``cfg``, untrained, on ``device``: the one place every caller builds them
    (the trainer, reloading a run's checkpoint, tests), so a reloaded run has exactly the trainer's model
    and vocabulary. ``train_examples`` are the trainer's training pools (the tiny tokenizer learns from them)."""
    from flexrec.models import load_policy

    overrides = tiny_overrides(cfg)
    if use_compact_prompts(cfg) and data.compact_signals:  # the local layer sees a whole candidate line
        overrides.update(sliding_window=SIGNAL_LINE_TOKENS + int(cfg.need_in_lines), line_copy=cfg.tiny_line_copy)
    return load_policy(cfg.model, cfg.num_candidates, make_tokenizer_factory(data, train_examples, cfg), str(device),
                       cfg.lora_rank, cfg.gradient_checkpointing, cfg.seed,
                       Path(cfg.cache_dir) if cfg.cache_dir else None, tiny_overrides=overrides)



def ops_backends(device_type: str) -> dict[str, str]:
    """Whether the compiled extension loaded ("extension": "loaded" or "missing: <why>") and the implementation
    each op runs on ``device_type`` ("c", "cuda", "triton" or "ref"), as chosen at import. Printed with the
    run's config and saved in it, so that a fallback to the pure-torch reference is a choice the user sees."""
    from flexrec.ops import backend_summary

    summary = backend_summary()
    return {"extension": summary["extension"], **summary[device_type]}

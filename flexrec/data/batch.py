"""Collate ranking examples into tensors for the trainer."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np
import torch

from .examples import RankingExample
from .prompts import render_prompt
from .slots import slot_token_ids
from .world import InteractionData


@dataclass
class RankingBatch:
    """A batch of B prompts, each ranking K candidates.

    Shapes:
        input_ids, attention_mask: (B, L) long, LEFT-padded, so position -1 is every prompt's last token;
        slot_ids: (B, K) long, the token id that names candidate k (<ck>);
        item_ids: (B, K) long; true_labels, observed_labels: (B, K) float32 in [0, 1];
        observed_mask: (B, K) bool; thresholds: (B,) float32; users: (B,) long; needs: B strings.
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    slot_ids: torch.Tensor
    item_ids: torch.Tensor
    true_labels: torch.Tensor
    observed_labels: torch.Tensor
    observed_mask: torch.Tensor
    thresholds: torch.Tensor
    users: torch.Tensor
    needs: list[str]
    prompts: list[str]

    def to(self, device) -> "RankingBatch":
        moved = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in vars(self).items()}
        return RankingBatch(**moved)


def collate(examples: list[RankingExample], tokenizer, data: InteractionData, max_tokens: int = 1024,
            max_history: int = 20,
            render: Optional[Callable[[RankingExample], str]] = None, trend: bool = True) -> RankingBatch:
    """Render, tokenize and left-pad the prompts of `examples` (all with the same K).

    ``render`` turns an example into its prompt text; the default is :func:`render_prompt` with
    ``max_tokens``, ``max_history`` and ``trend`` (a custom renderer must fit its own budget)."""
    if not examples:
        raise ValueError("collate needs at least one example")
    K = examples[0].K
    if any(e.K != K for e in examples):
        raise ValueError(f"all examples of a batch need the same K, got {sorted({e.K for e in examples})}")
    if tokenizer.pad_token_id is None:
        raise ValueError("the tokenizer has no pad token; set tokenizer.pad_token (e.g. to its eos token)")
    if render is None:
        def render(e: RankingExample) -> str:
            return render_prompt(e, data, tokenizer, max_tokens, max_history, trend)
    prompts = [render(e) for e in examples]
    ids = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    L = max(len(x) for x in ids)
    input_ids = torch.full((len(ids), L), tokenizer.pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(ids), L), dtype=torch.long)
    for b, x in enumerate(ids):
        input_ids[b, L - len(x):] = torch.tensor(x, dtype=torch.long)
        attention_mask[b, L - len(x):] = 1
    slots = torch.tensor(slot_token_ids(tokenizer, K), dtype=torch.long)

    def stack(field: str, dtype) -> torch.Tensor:
        return torch.from_numpy(np.stack([getattr(e, field) for e in examples])).to(dtype)

    return RankingBatch(
        input_ids=input_ids, attention_mask=attention_mask, slot_ids=slots.expand(len(ids), K).clone(),
        item_ids=stack("items", torch.long), true_labels=stack("true_labels", torch.float32),
        observed_labels=stack("observed_labels", torch.float32), observed_mask=stack("observed_mask", torch.bool),
        thresholds=torch.tensor([e.threshold for e in examples], dtype=torch.float32),
        users=torch.tensor([e.user for e in examples], dtype=torch.long), needs=[e.need for e in examples],
        prompts=prompts)

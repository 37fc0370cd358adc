"""Slot tokens: ``<c0>`` .. ``<c{K-1}>``, one token per candidate, added to any tokenizer and model."""

from __future__ import annotations

import torch


def slot_tokens(K: int = 30) -> list[str]:
    """The K slot token strings: ["<c0>", ..., "<c{K-1}>"]."""
    if K < 1:
        raise ValueError(f"K must be >= 1, got {K}")
    return [f"<c{i}>" for i in range(K)]


def slot_token_ids(tokenizer, K: int = 30) -> list[int]:
    """Ids of <c0>..<c{K-1}>; raises if `add_slot_tokens` has not been called with at least K."""
    ids = tokenizer.convert_tokens_to_ids(slot_tokens(K))
    if any(i is None or i == tokenizer.unk_token_id for i in ids) or len(set(ids)) != K:
        raise ValueError(f"the tokenizer lacks slot tokens <c0>..<c{K - 1}>; "
                         f"call add_slot_tokens(tokenizer, model, K={K})")
    return ids


@torch.no_grad()
def add_slot_tokens(tokenizer, model=None, K: int = 30, noise_std: float = 0.02, seed: int = 0) -> list[int]:
    """Add <c0>..<c{K-1}> as special tokens (idempotent); resize and initialise the model's embeddings.

    The rows initialised are those of the tokens just added, and any slot beyond the model's old
    size; a model whose embedding is padded past the tokenizer (Qwen2.5: 151936 rows for 151665
    tokens) is not resized, but its padding rows that now name slots are initialised. New rows, in the
    input embedding and in an untied LM head, are the mean of the existing tokens' rows plus Gaussian
    noise of `noise_std` times their per-dimension std (seeded): near the embedding distribution, so
    the first logits are sensible, yet distinct, so the slots can be told apart.
    Returns the K slot token ids, in slot order.
    """
    before = len(tokenizer)
    tokenizer.add_tokens(slot_tokens(K), special_tokens=True)
    ids = slot_token_ids(tokenizer, K)
    if model is None:
        return ids
    old_rows = model.get_input_embeddings().weight.shape[0]
    if len(tokenizer) > old_rows:
        model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    fresh = [i for i in ids if i >= before or i >= old_rows]
    if fresh:
        n_real = min(before, old_rows)  # rows of real, pre-existing tokens
        generator = torch.Generator().manual_seed(seed)
        matrices = [model.get_input_embeddings().weight]
        head = model.get_output_embeddings()
        if head is not None and head.weight.data_ptr() != matrices[0].data_ptr():
            matrices.append(head.weight)
        for w in matrices:
            existing = w[:n_real].float()
            noise = torch.randn(len(fresh), w.shape[1], generator=generator) * existing.std(0) * noise_std
            w[fresh] = (existing.mean(0) + noise).to(w.dtype)
    return ids

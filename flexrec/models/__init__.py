"""The policy: a causal LM, its tokenizer with slot tokens, wrapped as a permutation policy.

``load_policy("tiny" | "smollm2-135m" | "/path/to/hf-model", ...)`` returns (RankingPolicy, tokenizer).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Callable, Optional

import torch

from flexrec.data.slots import add_slot_tokens
from flexrec.models.policy import RankingPolicy, Rollout, left_pad
from flexrec.models.presets import PRESETS, build_smollm2, build_tiny, check_model_spec, load_pretrained

__all__ = ["RankingPolicy", "Rollout", "left_pad", "PRESETS", "check_model_spec", "load_policy", "set_checkpointing",
           "train_rows_only"]


def attention_implementation() -> str:
    """flash-attn 2 when it is importable (and a GPU is there), else PyTorch sdpa."""
    if torch.cuda.is_available() and importlib.util.find_spec("flash_attn") is not None:
        return "flash_attention_2"
    return "sdpa"


def load_policy(
    spec: str,
    num_slots: int,
    tokenizer_factory: Optional[Callable[[], object]] = None,
    device: str = "cpu",
    lora_rank: int = 0,
    gradient_checkpointing: bool = False,
    seed: int = 0,
    cache_dir: Optional[Path] = None,
    tiny_overrides: Optional[dict] = None,
) -> tuple[RankingPolicy, object]:
    """Builds the policy and its tokenizer.

    Args:
        spec: ``tiny``, ``smollm2-135m`` or a local model directory.
        num_slots: how many slot tokens ``<c0> ..`` the tokenizer must hold (the pool size K).
        tokenizer_factory: for ``tiny``, returns the locally trained tokenizer (the world's text).
        lora_rank: > 0 trains LoRA adapters of that rank (peft) instead of every parameter.
        gradient_checkpointing: trade compute for activation memory.
        seed: the tiny model's initialisation.
    """
    check_model_spec(spec)
    if spec == "tiny":
        if tokenizer_factory is None:
            raise ValueError("the tiny preset needs a tokenizer trained on the data (tokenizer_factory)")
        tok = tokenizer_factory()
        add_slot_tokens(tok, None, num_slots)  # in the vocabulary before the model is sized
        model, tok = build_tiny(tok, seed=seed, cache_dir=cache_dir, **(tiny_overrides or {}))
    elif spec == "smollm2-135m":
        model, tok = build_smollm2(cache_dir)
    else:
        model, tok = load_pretrained(spec)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    slot_ids = add_slot_tokens(tok, model, num_slots, seed=seed)  # resizes and initialises new rows
    model.set_attn_implementation(attention_implementation())
    on_gpu = str(device).startswith("cuda")
    if on_gpu and torch.cuda.is_bf16_supported():
        model = model.to(torch.bfloat16)
    if gradient_checkpointing:
        set_checkpointing(model, True)
        model.config.use_cache = True  # decoding still uses the cache; training passes don't ask for it
    if lora_rank > 0:
        try:
            from peft import LoraConfig, get_peft_model
        except ImportError as err:
            raise ValueError("--lora-rank > 0 needs peft: pip install peft") from err
        lora = LoraConfig(r=lora_rank, lora_alpha=2 * lora_rank, target_modules="all-linear", lora_dropout=0.0)
        model = get_peft_model(model, lora)
        # The slot tokens' rows are new: they train too, and only they (train_rows_only); the rest of the
        # (tied) embedding stays the pretrained one.
        base = model.get_base_model()
        for embedding in dict.fromkeys([base.get_output_embeddings().weight, base.get_input_embeddings().weight]):
            train_rows_only(embedding, slot_ids)
    policy = RankingPolicy(model, slot_ids, tok.pad_token_id).to(device)
    return policy, tok


def train_rows_only(weight: torch.nn.Parameter, rows: list[int]) -> None:
    """Makes ``weight`` trainable in ``rows`` only: a gradient hook zeroes every other row's gradient.

    With AdamW at weight decay 0 (the trainer's optimisers) a row whose gradient is always zero never moves,
    so the pretrained rows stay bit-identical. Shapes: weight (V, H); rows: indices into V.
    """
    keep = torch.zeros(weight.shape[0], 1, dtype=torch.bool)
    keep[rows] = True
    weight.requires_grad_(True)
    weight.register_hook(lambda grad: torch.where(keep.to(grad.device), grad, 0.0))


def set_checkpointing(model, enabled: bool) -> None:
    """Turns activation (gradient) checkpointing of a Hugging Face model on or off, non-reentrant.

    transformers 5 renamed ``gradient_checkpointing_enable`` to ``activation_checkpointing_enable`` (the old
    name warns, and goes in v6); older releases have only the old name.
    """
    if hasattr(model, "activation_checkpointing_enable"):
        if enabled:
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            model.activation_checkpointing_disable()
    elif enabled:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    else:
        model.gradient_checkpointing_disable()


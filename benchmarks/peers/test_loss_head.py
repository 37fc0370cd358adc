"""Loss head: flexrec's candidate-restricted head against a full-vocabulary log-softmax, fwd + bwd.

    pytest benchmarks/peers/test_loss_head.py

At the shapes of Qwen2.5-0.5B (H 896) and Qwen2.5-3B (H 2048), both with the padded vocabulary
V = 151936 of their config.json; random weights, nothing downloaded. N = lists x K rows, each the
hidden state before one of a ranking's K slot tokens.

- flexrec: ``candidate_logits`` (hidden x the K slot rows of the head) -> (lists, K, K) ->
  ``permutation_logprob`` (Plackett-Luce over the remaining pool) -> PPO-style loss -> backward.
- full-vocab: hidden @ W^T -> (N, V) logits -> the chosen slot token's log-prob as TRL computes it
  (gather - logsumexp over V) -> the same loss -> backward.

Both train the head (weight.requires_grad), so both make the (V, H) weight gradient; that is a
parameter gradient, not an activation, and the rows give it apart (``weight_grad_mib``).
``peak_frozen_head_mib`` is the peak when only the hidden states need a gradient (the head
frozen), where no path needs a (V, H) buffer at all.
Rows (benchmarks/out/peers_loss_head.json): time, measured peak above the start, the analytic
bytes of the activations each path materialises (at the measured N and at an RL step's
PEERS_HEAD_LISTS_ANALYTIC lists), and on the flexrec row the saving. Never fails on speed.
"""

from __future__ import annotations

import pytest
import torch
from sizes import (PEERS_HEAD_LISTS_ANALYTIC, PEERS_HEAD_LISTS_CPU, PEERS_HEAD_LISTS_CPU_FULL,
                   PEERS_HEAD_LISTS_GPU, PEERS_HEAD_SHAPES, PEERS_K, peers_full, size_id)

from flexrec.ops import candidate_logits, permutation_logprob
from peers import common

FILE = "peers_loss_head"
PROVIDERS = ("full-vocab", "flexrec")
LISTS = PEERS_HEAD_LISTS_GPU if common.DEVICE == "cuda" else (
    PEERS_HEAD_LISTS_CPU_FULL if peers_full() else PEERS_HEAD_LISTS_CPU)
PARAMS = [
    pytest.param(shape, lists, provider, id=f"{shape['model']}-{size_id({'lists': lists, 'K': PEERS_K})}-{provider}")
    for shape in PEERS_HEAD_SHAPES
    for lists in LISTS
    for provider in PROVIDERS
]
DTYPE = torch.bfloat16 if common.DEVICE == "cuda" else torch.float32


def analytic_bytes(provider: str, N: int, H: int, V: int, K: int, itemsize: int) -> int:
    """Activations a path must hold at its peak, beyond its inputs and the weight gradient.

    full-vocab: the (N, V) logits kept for backward, and in backward the (N, V) gradient of the
    logits (softmax times the upstream gradient); 2 N V (a lower bound: eager PyTorch makes a
    third (N, V) temporary, the softmax, before scaling it). flexrec: the (N, K) candidate logits
    and their (N, K) gradient (permutation_logprob's (lists, K, K) is the same tensor); 2 N K.
    Both: the (N, H) gradient of the hidden states.
    """
    width = V if provider == "full-vocab" else K
    return 2 * N * width * 4 + N * H * itemsize  # logits are float32 in both (TRL upcasts)


def make_inputs(H: int, V: int, lists: int, K: int) -> dict:
    gen = torch.Generator().manual_seed(0)
    N = lists * K
    slot_ids = torch.randperm(V, generator=gen)[:K]
    return {
        "hidden": (torch.randn(N, H, generator=gen)).to(common.DEVICE, DTYPE),
        "weight": (torch.randn(V, H, generator=gen) * 0.02).to(common.DEVICE, DTYPE),
        "slot_ids": slot_ids.to(common.DEVICE),
        "perm": torch.stack([torch.randperm(K, generator=gen) for _ in range(lists)]).to(common.DEVICE),
        "adv": torch.randn(lists, K, generator=gen).to(common.DEVICE),
    }


def flexrec_head(x: dict, hidden: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    lists, K = x["perm"].shape
    ids = x["slot_ids"].expand(hidden.shape[0], K)
    logits = candidate_logits(hidden, weight, ids).float().view(lists, K, K)
    logprob, entropy = permutation_logprob(logits, x["perm"])
    return -(logprob * x["adv"]).mean() - 0.005 * entropy.mean()


def full_vocab_head(x: dict, hidden: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    lists, K = x["perm"].shape
    logits = (hidden @ weight.T).float()  # (N, V)
    chosen = x["slot_ids"][x["perm"]].reshape(-1, 1)  # the slot token emitted at each position
    logprob = (logits.gather(1, chosen).squeeze(1) - torch.logsumexp(logits, -1)).view(lists, K)
    return -(logprob * x["adv"]).mean()


HEADS = {"flexrec": flexrec_head, "full-vocab": full_vocab_head}
_INPUTS: dict = {}


@pytest.mark.parametrize("shape,lists,provider", PARAMS)
def test_loss_head(benchmark, shape, lists, provider):
    H, V, K = shape["H"], shape["V"], PEERS_K
    key = (H, V, lists)
    if key not in _INPUTS:
        _INPUTS.clear()  # one shape's tensors at a time (the 3B head is 1.2 GB in float32)
        _INPUTS[key] = make_inputs(H, V, lists, K)
    x = _INPUTS[key]
    hidden = x["hidden"].detach().requires_grad_(True)
    weight = x["weight"].detach().requires_grad_(True)

    def run(w: torch.Tensor) -> None:
        HEADS[provider](x, hidden, w).backward()

    def step():
        hidden.grad = weight.grad = None
        run(weight)

    step()  # warm-up: the first call in a process also maps one-time buffers
    hidden.grad = weight.grad = None  # freed before the start level is read, not inside the block
    peak, _ = common.peak_memory(lambda: run(weight))
    # The same with the head frozen (only the hidden states need a gradient, as when training
    # adapters but not the head): no path needs a (V, H) weight gradient then.
    hidden.grad = weight.grad = None
    peak_frozen, _ = common.peak_memory(lambda: run(weight.detach()))
    _, row = common.timed_peer(benchmark, FILE, "loss_head", provider, step, rounds=3, warmup=0,
                               model=shape["model"], H=H, V=V, lists=lists, K=K)
    N, itemsize = lists * K, x["hidden"].element_size()
    weight_grad = V * H * itemsize
    row.update(
        peak_mib=round(common.mib(peak), 1),
        peak_frozen_head_mib=round(common.mib(peak_frozen), 1),
        weight_grad_mib=round(common.mib(weight_grad), 1),
        activation_measured_mib=round(common.mib(max(0, peak - weight_grad)), 1),
        activation_analytic_mib=round(common.mib(analytic_bytes(provider, N, H, V, K, itemsize)), 3),
        activation_analytic_rl_step_mib=round(common.mib(analytic_bytes(
            provider, PEERS_HEAD_LISTS_ANALYTIC * K, H, V, K, itemsize)), 3),
    )
    if provider == "flexrec":
        full = common.peer_rows(FILE, model=shape["model"], lists=lists, K=K).get("full-vocab")
        if full:
            for name in ("activation_measured_mib", "peak_frozen_head_mib", "activation_analytic_mib",
                         "activation_analytic_rl_step_mib"):
                row[f"saving_{name[:-4]}"] = round(1 - row[name] / full[name], 4) if full[name] else None
            row["x_vs_full_vocab"] = common.ratio(full["median_ms"], row["median_ms"])

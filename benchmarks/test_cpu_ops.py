"""CPU: the pure-torch reference and the C++ kernel of every op, side by side, in one run.

    pytest benchmarks/test_cpu_ops.py

writes benchmarks/out/cpu_ops.json (op, provider, B, K, mean/median/min ms, ratios vs ref).
"""

from __future__ import annotations

import pytest
import torch
from bench_rows import timed
from sizes import CPU_HEAD, CPU_SIZES, size_id

import flexrec.ops  # noqa: F401  (loads flexrec._C)
from flexrec.ops import extension as _ext
from flexrec.ops import reference

C = torch.ops.flexrec_C
PROVIDERS = ["ref", "c"]


def inputs(B: int, K: int) -> dict:
    gen = torch.Generator().manual_seed(0)
    H, V = CPU_HEAD["H"], CPU_HEAD["V"]
    used = torch.rand(B, K, generator=gen) < 0.5
    used[:, 0] = False
    return {
        "gains": torch.randint(0, 4, (B, K), generator=gen).float(),
        "gain_var": torch.rand(B, K, generator=gen),
        "logits": torch.randn(B, K, generator=gen),
        "used": used,
        "gumbel": -torch.log(-torch.log(torch.rand(B, K, generator=gen).clamp(1e-9, 1 - 1e-9))),
        "step_logits": torch.randn(B, K, K, generator=gen),
        "perm": torch.argsort(torch.rand(B, K, generator=gen), -1),
        "grad_bk": torch.randn(B, K, generator=gen),
        "hidden": torch.randn(B, H, generator=gen),
        "weight": torch.randn(V, H, generator=gen),
        "cand_ids": torch.stack([torch.randperm(V, generator=gen)[:K] for _ in range(B)]),
    }


# op -> provider -> fn(inputs) ; both providers get the very same tensors.
CASES = {
    "swap_reward": {
        "ref": lambda x: reference.swap_reward(x["gains"], 0, "causal"),
        "c": lambda x: C.swap_reward(x["gains"], 0, "causal"),
    },
    "swap_reward_var": {
        "ref": lambda x: reference.swap_reward_var(x["gains"], x["gain_var"], 0, "causal"),
        "c": lambda x: C.swap_reward_var(x["gains"], x["gain_var"], 0, "causal"),
    },
    "pool_sample": {
        "ref": lambda x: reference.pool_sample(x["logits"], x["used"], x["gumbel"], 1.0),
        "c": lambda x: C.pool_sample(x["logits"], x["used"], x["gumbel"], 1.0),
    },
    "permutation_logprob": {
        "ref": lambda x: reference.permutation_logprob(x["step_logits"], x["perm"], 1.0),
        "c": lambda x: C.permutation_logprob(x["step_logits"], x["perm"], 1.0),
    },
    "permutation_logprob_backward": {
        "ref": lambda x: reference.permutation_logprob_backward(
            x["grad_bk"], x["grad_bk"], x["step_logits"], x["perm"], 1.0
        ),
        "c": lambda x: C.permutation_logprob_backward(
            x["grad_bk"], x["grad_bk"], x["step_logits"], x["perm"], 1.0
        ),
    },
    "candidate_logits": {
        "ref": lambda x: reference.candidate_logits(x["hidden"], x["weight"], x["cand_ids"]),
        "c": lambda x: C.candidate_logits(x["hidden"], x["weight"], x["cand_ids"], None),
    },
    "candidate_logits_backward": {
        "ref": lambda x: reference.candidate_logits_backward(
            x["grad_bk"], x["hidden"], x["weight"], x["cand_ids"], False
        ),
        "c": lambda x: C.candidate_logits_backward(
            x["grad_bk"], x["hidden"], x["weight"], x["cand_ids"], False
        ),
    },
}

_INPUTS: dict[tuple[int, int], dict] = {}


# ref and c run back to back for each (op, size), so that both see the same machine load.
PARAMS = [
    pytest.param(op, size, provider, id=f"{op}-{size_id(size)}-{provider}")
    for op in CASES
    for size in CPU_SIZES
    for provider in PROVIDERS
]


@pytest.mark.parametrize("op,size,provider", PARAMS)
def test_cpu_op(benchmark, op, size, provider):
    if provider == "c" and not _ext.has_cpu_kernels():
        pytest.skip(f"flexrec._C did not load: {_ext.LOAD_ERROR}")
    key = (size["B"], size["K"])
    if key not in _INPUTS:
        _INPUTS[key] = inputs(**size)
    x = _INPUTS[key]
    fn = CASES[op][provider]
    sizes = dict(size, **(CPU_HEAD if op.startswith("candidate_logits") else {}))
    timed(benchmark, "cpu_ops", op, provider, lambda: fn(x), **sizes)

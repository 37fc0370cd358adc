"""The one registry of benchmark sizes: every benchmark file takes its shapes from here.

CPU sizes fit the 2-core dev box; GPU sizes are for the CUDA/Triton benchmarks.
B: batch (lists or decode rows), K: pool size, H: hidden size, V: vocabulary size.
"""

from __future__ import annotations

# Ranked-list ops (swap_reward, swap_reward_var, pool_sample, permutation_logprob) on CPU.
CPU_SIZES = [{"B": 256, "K": 30}, {"B": 4096, "K": 30}]
# candidate_logits on CPU: the same B, K with a small head (the reference gathers an (N, K, H)
# tensor, which at LLM sizes would dominate a 2-core box's memory bandwidth).
CPU_HEAD = {"H": 64, "V": 4096}

# GPU sizes: ranked-list ops up to B = 8192, K in {30, 100}.
GPU_SIZES = [{"B": B, "K": K} for B in (1024, 8192) for K in (30, 100)]
# decode_step / candidate_logits on GPU: SmolLM2-135M (H 576, V 49152) and Qwen2.5 (H 2048,
# V 151936) heads.
GPU_DECODE_SIZES = [
    {"B": B, "K": K, "H": H, "V": V}
    for B in (1024, 8192)
    for K in (30, 100)
    for H, V in ((576, 49152), (2048, 151936))
]


def size_id(size: dict) -> str:
    """A readable pytest id: B4096-K30."""
    return "-".join(f"{k}{v}" for k, v in size.items())

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


# ==== PEERS: benchmarks/peers/ (flexrec against what users use today, issue 8) ====================
# Default sizes keep `pytest benchmarks/peers` within a few minutes on the shared 2-core box;
# FLEXREC_PEERS_SIZES=full adds the larger ones (and SmolLM2 in the training-step comparison).
import os as _os  # noqa: E402


def peers_full() -> bool:
    return _os.environ.get("FLEXREC_PEERS_SIZES", "default") == "full"


PEERS_K = 30  # candidates per pool (the paper's K)
PEERS_HISTORY = 2  # history items per prompt (prompt length is most of the CPU cost)
# Rollouts: rows decoded per call, per model.
PEERS_ROLLOUT_CPU = {"tiny": [8, 32], "smollm2-135m": [2]}
PEERS_ROLLOUT_CPU_FULL = {"tiny": [8, 32, 128], "smollm2-135m": [4, 8]}
PEERS_ROLLOUT_GPU = {"tiny": [8, 64, 256], "smollm2-135m": [8, 64, 256]}
# Grouped rollouts, the RL shape: P prompts x G sampled rankings each (flexrec runs each prompt
# once and repeats its KV cache; generate's num_return_sequences runs it G times).
PEERS_GROUPED_CPU = {"tiny": [{"P": 4, "G": 8}]}
PEERS_GROUPED_CPU_FULL = {"tiny": [{"P": 4, "G": 8}], "smollm2-135m": [{"P": 1, "G": 8}]}
PEERS_GROUPED_GPU = {"tiny": [{"P": 8, "G": 8}], "smollm2-135m": [{"P": 8, "G": 8}]}
# Training step: P prompts x G sampled rankings per prompt.
PEERS_TRAIN_CPU = {"tiny": [{"P": 8, "G": 8}]}
PEERS_TRAIN_CPU_FULL = {"tiny": [{"P": 8, "G": 8}], "smollm2-135m": [{"P": 1, "G": 4}]}
PEERS_TRAIN_GPU = {"tiny": [{"P": 8, "G": 8}], "smollm2-135m": [{"P": 8, "G": 8}]}
# Loss head at Qwen2.5 shapes (hidden size H, padded vocabulary V, from their config.json), and
# the rows N = lists x K decision positions that are measured (the analytic bytes are also given
# at an RL step's 64 lists).
PEERS_HEAD_SHAPES = [
    {"model": "qwen2.5-0.5b", "H": 896, "V": 151936},
    {"model": "qwen2.5-3b", "H": 2048, "V": 151936},
]
PEERS_HEAD_LISTS_CPU = [2]
PEERS_HEAD_LISTS_CPU_FULL = [2, 8]
PEERS_HEAD_LISTS_GPU = [8, 64]
PEERS_HEAD_LISTS_ANALYTIC = 64  # an RL step of 8 prompts x 8 rankings

"""Launch helpers shared by the Triton launchers (no kernels here).

Compute precision: every kernel accumulates in float32, except for float64 inputs, which are
computed in float64 end to end (Triton scalars are float32 on the GPU, so a float64 launch reads
the temperature from a one-element float64 tensor instead of a scalar argument).
"""

from __future__ import annotations

import functools

import torch
import triton
import triton.language as tl


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype a kernel accumulates in: float64 for float64 inputs, else float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def tl_compute(dtype: torch.dtype):
    return tl.float64 if dtype == torch.float64 else tl.float32


def block_k(K: int) -> int:
    """BLOCK_K = next_power_of_2(K), at least 2 (tl.arange needs a power of two >= 1)."""
    return max(2, triton.next_power_of_2(K))


@functools.lru_cache(maxsize=256)
def _discounts_cached(K: int, k: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    n = K if k <= 0 else min(k, K)
    pos = torch.arange(K, dtype=torch.float64)
    d = 1.0 / torch.log2(pos + 2.0)
    d[n:] = 0.0
    return d.to(dtype=dtype).to(device)


def discounts(K: int, k: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """DCG discounts (K,) in ``dtype``, computed in float64 exactly as the reference does and
    cached per (K, k, dtype, device), so a launch pays no extra kernel for them."""
    return _discounts_cached(int(K), int(k), dtype, torch.device(device))


def temperature_args(temperature: float, dtype: torch.dtype, like: torch.Tensor):
    """(scalar, pointer, TEMP_FROM_PTR) kernel arguments for the temperature."""
    if dtype == torch.float64:
        return 1.0, torch.full((1,), float(temperature), dtype=torch.float64, device=like.device), True
    return float(temperature), like, False


MODE_IDS = {"causal": 0, "noncausal": 1, "independent": 2, "sequence": 3, "suffix": 4}


def mode_id(mode: str) -> int:
    if mode not in MODE_IDS:
        raise ValueError(f"unknown reward mode {mode!r}; expected one of {', '.join(MODE_IDS)}")
    return MODE_IDS[mode]

"""Triton kernel of ``flexrec::swap_reward``: item-level counterfactual-swap rewards.

One program per row. Everything stays in registers: the row's gains (BLOCK_K), and (BLOCK_K,
BLOCK_J) tiles of pairwise terms, swept over j in chunks so K up to a few thousand fits.
- IDCG@n needs the top-n sorted gains; instead of sorting, each gain's rank in the descending
  order is counted pairwise (rank_p = #{j: g_j > g_p, or g_j == g_p and j < p}), and
  IDCG = sum_p g_p d[rank_p]. Equal gains are interchangeable, so ties cannot change IDCG.
- causal / noncausal sum the pairwise terms (g_p - g_j)(d_p - d_j) directly (no suffix-sum
  cancellation, unlike the O(K) identity the C++ kernel uses in float64).
- independent / sequence / suffix are O(K) with a cumulative sum.
Accumulates in float32 (float64 for float64 gains).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from . import _util


@triton.jit
def _rank_idcg_and_pairs(g_row_ptr, d_ptr, g, d, offs, K, MODE: tl.constexpr,
                         BLOCK_K: tl.constexpr, BLOCK_J: tl.constexpr, C: tl.constexpr):
    """Returns (IDCG, sum over kept j of (g_p - g_j)(d_p - d_j), count of kept j), per p."""
    rank = tl.zeros([BLOCK_K], dtype=tl.int32)
    pair = tl.zeros([BLOCK_K], dtype=C)
    for j0 in range(0, K, BLOCK_J):
        offs_j = j0 + tl.arange(0, BLOCK_J)
        mj = offs_j < K
        gj = tl.load(g_row_ptr + offs_j, mask=mj, other=0.0).to(C)
        dj = tl.load(d_ptr + offs_j, mask=mj, other=0.0).to(C)
        before = (gj[None, :] > g[:, None]) | ((gj[None, :] == g[:, None]) & (offs_j[None, :] < offs[:, None]))
        rank += tl.sum((before & mj[None, :]).to(tl.int32), axis=1)
        if MODE == 0:
            keep = (offs_j[None, :] > offs[:, None]) & mj[None, :]
        else:
            keep = (offs_j[None, :] != offs[:, None]) & mj[None, :]
        if MODE <= 1:
            term = (g[:, None] - gj[None, :]) * (d[:, None] - dj[None, :])
            pair += tl.sum(tl.where(keep, term, 0.0), axis=1)
    mk = offs < K
    d_rank = tl.load(d_ptr + rank, mask=mk, other=0.0).to(C)
    idcg = tl.sum(tl.where(mk, g * d_rank, 0.0), axis=0)
    return idcg, pair


@triton.jit
def swap_reward_kernel(gains_ptr, d_ptr, out_ptr, K, MODE: tl.constexpr,
                       BLOCK_K: tl.constexpr, BLOCK_J: tl.constexpr, C: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    offs = tl.arange(0, BLOCK_K)
    mk = offs < K
    g_row_ptr = gains_ptr + row * K
    g = tl.load(g_row_ptr + offs, mask=mk, other=0.0).to(C)
    d = tl.load(d_ptr + offs, mask=mk, other=0.0).to(C)
    idcg, pair = _rank_idcg_and_pairs(g_row_ptr, d_ptr, g, d, offs, K, MODE, BLOCK_K, BLOCK_J, C)
    inv = tl.where(idcg > 0, 1.0 / tl.where(idcg > 0, idcg, 1.0), 0.0)
    gd = g * d
    if MODE == 0:
        count = tl.maximum(K - 1 - offs, 1).to(C)
        r = pair / count
    elif MODE == 1:
        r = pair / tl.maximum(K - 1, 1).to(C)
    elif MODE == 2:
        r = gd
    elif MODE == 3:
        r = tl.zeros([BLOCK_K], dtype=C) + tl.sum(gd, axis=0)
    else:
        r = tl.sum(gd, axis=0) - tl.cumsum(gd, axis=0) + gd  # suffix sum over q >= p
    tl.store(out_ptr + row * K + offs, r * inv, mask=mk)


def launch_config(K: int) -> dict:
    """The block sizes and warps that swap_reward and swap_reward_var launch with for K
    candidates (also what ``flexrec.kernels.aot`` compiles). The (BLOCK_K, BLOCK_J) tile stays at
    <= 4096 elements (16 KB of float32 registers). From BLOCK_K = 128 on, 8 warps: at K = 100
    with 4, ptxas gave the causal/noncausal modes 167 to 245 registers per thread (12% to 19%
    occupancy on sm_90); with 8, 99 to 127 (25%) (``python -m flexrec.kernels.aot``)."""
    BLOCK_K = _util.block_k(K)
    BLOCK_J = max(2, min(BLOCK_K, 4096 // BLOCK_K))
    return {"BLOCK_K": BLOCK_K, "BLOCK_J": BLOCK_J, "num_warps": 8 if BLOCK_K >= 128 else 1}


def swap_reward(gains: torch.Tensor, k: int = 0, mode: str = "causal") -> torch.Tensor:
    """Same signature and result as ``flexrec.ops.reference.swap_reward``.

    Shapes: gains (B, K) -> (B, K), same dtype.
    """
    gains = gains.contiguous()
    B, K = gains.shape
    out = torch.empty_like(gains)
    if B == 0:
        return out
    C = _util.compute_dtype(gains.dtype)
    d = _util.discounts(K, k, C, gains.device)
    swap_reward_kernel[(B,)](gains, d, out, K, MODE=_util.mode_id(mode),
                             C=_util.tl_compute(gains.dtype), **launch_config(K))
    return out

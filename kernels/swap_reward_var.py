"""Triton kernel of ``flexrec::swap_reward_var``: the variance of each position's reward under
independent gain noise (FLEXREC.md section 5), with IDCG held fixed.

One program per row; IDCG by pairwise rank counting (see ``swap_reward.py``). Every mode's reward
is linear in the gains, r_p = sum_q c[p, q] g_q / IDCG, so Var(r_p) = sum_q c[p, q]^2 s_q / IDCG^2:
- causal / noncausal (kept j: j > p, or j != p; m = max(#kept, 1)):
  Var = [ (sum_j (d_p - d_j))^2 s_p + sum_j (d_p - d_j)^2 s_j ] / m^2 / IDCG^2
- independent: d_p^2 s_p;  sequence: sum_q d_q^2 s_q;  suffix: sum_{q >= p} d_q^2 s_q (all / IDCG^2).
Accumulates in float32 (float64 for float64 gains).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from . import _util
from .swap_reward import launch_config


@triton.jit
def swap_reward_var_kernel(gains_ptr, var_ptr, d_ptr, out_ptr, K, MODE: tl.constexpr,
                           BLOCK_K: tl.constexpr, BLOCK_J: tl.constexpr, C: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    offs = tl.arange(0, BLOCK_K)
    mk = offs < K
    g_row_ptr = gains_ptr + row * K
    s_row_ptr = var_ptr + row * K
    g = tl.load(g_row_ptr + offs, mask=mk, other=0.0).to(C)
    s = tl.load(s_row_ptr + offs, mask=mk, other=0.0).to(C)
    d = tl.load(d_ptr + offs, mask=mk, other=0.0).to(C)
    rank = tl.zeros([BLOCK_K], dtype=tl.int32)
    diff_sum = tl.zeros([BLOCK_K], dtype=C)  # sum over kept j of (d_p - d_j)
    diff_sq_s = tl.zeros([BLOCK_K], dtype=C)  # sum over kept j of (d_p - d_j)^2 s_j
    for j0 in range(0, K, BLOCK_J):
        offs_j = j0 + tl.arange(0, BLOCK_J)
        mj = offs_j < K
        gj = tl.load(g_row_ptr + offs_j, mask=mj, other=0.0).to(C)
        before = (gj[None, :] > g[:, None]) | ((gj[None, :] == g[:, None]) & (offs_j[None, :] < offs[:, None]))
        rank += tl.sum((before & mj[None, :]).to(tl.int32), axis=1)
        if MODE <= 1:
            dj = tl.load(d_ptr + offs_j, mask=mj, other=0.0).to(C)
            sj = tl.load(s_row_ptr + offs_j, mask=mj, other=0.0).to(C)
            if MODE == 0:
                keep = (offs_j[None, :] > offs[:, None]) & mj[None, :]
            else:
                keep = (offs_j[None, :] != offs[:, None]) & mj[None, :]
            diff = tl.where(keep, d[:, None] - dj[None, :], 0.0)
            diff_sum += tl.sum(diff, axis=1)
            diff_sq_s += tl.sum(diff * diff * sj[None, :], axis=1)
    d_rank = tl.load(d_ptr + rank, mask=mk, other=0.0).to(C)
    idcg = tl.sum(tl.where(mk, g * d_rank, 0.0), axis=0)
    inv = tl.where(idcg > 0, 1.0 / tl.where(idcg > 0, idcg, 1.0), 0.0)
    dds = d * d * s
    if MODE == 0:
        m = tl.maximum(K - 1 - offs, 1).to(C)
        v = (diff_sum * diff_sum * s + diff_sq_s) / (m * m)
    elif MODE == 1:
        m = tl.maximum(K - 1, 1).to(C)
        v = (diff_sum * diff_sum * s + diff_sq_s) / (m * m)
    elif MODE == 2:
        v = dds
    elif MODE == 3:
        v = tl.zeros([BLOCK_K], dtype=C) + tl.sum(dds, axis=0)
    else:
        v = tl.sum(dds, axis=0) - tl.cumsum(dds, axis=0) + dds
    tl.store(out_ptr + row * K + offs, v * inv * inv, mask=mk)


def swap_reward_var(gains: torch.Tensor, gain_var: torch.Tensor, k: int = 0,
                    mode: str = "causal") -> torch.Tensor:
    """Same signature and result as ``flexrec.ops.reference.swap_reward_var``.

    Shapes: gains (B, K), gain_var (B, K) -> (B, K), gains' dtype.
    """
    gains = gains.contiguous()
    gain_var = gain_var.contiguous()
    B, K = gains.shape
    out = torch.empty_like(gains)
    if B == 0:
        return out
    C = _util.compute_dtype(gains.dtype)
    d = _util.discounts(K, k, C, gains.device)
    swap_reward_var_kernel[(B,)](gains, gain_var, d, out, K, MODE=_util.mode_id(mode),
                                 C=_util.tl_compute(gains.dtype), **launch_config(K))
    return out

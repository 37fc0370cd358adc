"""Triton kernels of ``flexrec::permutation_logprob`` and its backward: Plackett-Luce step
log-probs and entropies of given permutations, under exactly the masked softmax that
``pool_sample`` draws from.

A program handles one row b and a block of BLOCK_T steps. It first finds each candidate's step,
rank[c] = t where perm[t] = c, by comparing perm with the candidate index in (BLOCK_K, BLOCK_J)
tiles; candidate c is masked at step t when rank[c] < t. Then each step's row of logits is one
masked softmax in registers. Computes in float32 (float64 for float64 logits).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from . import _util


@triton.jit
def _steps_tile(logits_ptr, perm_ptr, temperature, temp_ptr, K, TEMP_FROM_PTR: tl.constexpr,
                BLOCK_T: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_J: tl.constexpr,
                C: tl.constexpr):
    """The (BLOCK_T, BLOCK_K) tile of this program: offsets, masks, x, logp, p, entropy."""
    row = tl.program_id(0).to(tl.int64)
    t0 = tl.program_id(1) * BLOCK_T
    offs_c = tl.arange(0, BLOCK_K)
    mc = offs_c < K
    rank = tl.zeros([BLOCK_K], dtype=tl.int32)
    for j0 in range(0, K, BLOCK_J):
        offs_j = j0 + tl.arange(0, BLOCK_J)
        pj = tl.load(perm_ptr + row * K + offs_j, mask=offs_j < K, other=-1).to(tl.int32)
        rank += tl.sum(tl.where(pj[None, :] == offs_c[:, None], offs_j[None, :], 0), axis=1)
    offs_t = t0 + tl.arange(0, BLOCK_T)
    mt = offs_t < K
    chosen = tl.load(perm_ptr + row * K + offs_t, mask=mt, other=0).to(tl.int32)
    if TEMP_FROM_PTR:
        t = tl.load(temp_ptr).to(C)
    else:
        t = temperature
    m2 = mt[:, None] & mc[None, :]
    used = rank[None, :] < offs_t[:, None]
    live = m2 & (~used)
    ptrs = logits_ptr + row * K * K + offs_t[:, None] * K + offs_c[None, :]
    x = tl.load(ptrs, mask=m2, other=0.0).to(C) / t
    x = tl.where(live, x, float("-inf"))
    x_max = tl.max(x, axis=1)
    x_max = tl.where(mt, x_max, 0.0)  # padded steps: keep the math finite
    e = tl.where(live, tl.exp(x - x_max[:, None]), 0.0)
    lse = x_max + tl.log(tl.where(mt, tl.sum(e, axis=1), 1.0))
    logp = tl.where(live, x - lse[:, None], 0.0)
    p = tl.where(live, tl.exp(logp), 0.0)
    entropy = -tl.sum(p * logp, axis=1)
    onehot = offs_c[None, :] == chosen[:, None]
    return row, offs_t, mt, offs_c, m2, live, onehot, logp, p, entropy, t


@triton.jit
def permutation_logprob_kernel(logits_ptr, perm_ptr, logprob_ptr, entropy_ptr, temperature,
                               temp_ptr, K, TEMP_FROM_PTR: tl.constexpr, BLOCK_T: tl.constexpr,
                               BLOCK_K: tl.constexpr, BLOCK_J: tl.constexpr, C: tl.constexpr):
    row, offs_t, mt, offs_c, m2, live, onehot, logp, p, entropy, t = _steps_tile(
        logits_ptr, perm_ptr, temperature, temp_ptr, K, TEMP_FROM_PTR, BLOCK_T, BLOCK_K, BLOCK_J, C)
    chosen_logp = tl.sum(tl.where(onehot & m2, logp, 0.0), axis=1)
    tl.store(logprob_ptr + row * K + offs_t, chosen_logp, mask=mt)
    tl.store(entropy_ptr + row * K + offs_t, entropy, mask=mt)


@triton.jit
def permutation_logprob_backward_kernel(grad_logprob_ptr, grad_entropy_ptr, logits_ptr, perm_ptr,
                                        grad_logits_ptr, temperature, temp_ptr, K,
                                        TEMP_FROM_PTR: tl.constexpr, BLOCK_T: tl.constexpr,
                                        BLOCK_K: tl.constexpr, BLOCK_J: tl.constexpr,
                                        C: tl.constexpr):
    row, offs_t, mt, offs_c, m2, live, onehot, logp, p, entropy, t = _steps_tile(
        logits_ptr, perm_ptr, temperature, temp_ptr, K, TEMP_FROM_PTR, BLOCK_T, BLOCK_K, BLOCK_J, C)
    gl = tl.load(grad_logprob_ptr + row * K + offs_t, mask=mt, other=0.0).to(C)
    ge = tl.load(grad_entropy_ptr + row * K + offs_t, mask=mt, other=0.0).to(C)
    # d logp_c / dx_j = 1[j = c] - p_j;  d H / dx_j = -p_j (log p_j + H), on unmasked j.
    grad_x = gl[:, None] * (onehot.to(C) - p) - ge[:, None] * p * (logp + entropy[:, None])
    grad_x = tl.where(live, grad_x, 0.0) / t
    ptrs = grad_logits_ptr + row * K * K + offs_t[:, None] * K + offs_c[None, :]
    tl.store(ptrs, grad_x, mask=m2)


def launch_config(K: int) -> dict:
    """The block sizes and warps that the forward and backward launch with for K candidates
    (also what ``flexrec.kernels.aot`` compiles): (BLOCK_T, BLOCK_K) and (BLOCK_K, BLOCK_J)
    tiles of at most 4096 elements. 8 warps from 1024-element tiles on: at K = 100 (a 32 x 128
    tile) the backward with 4 warps used 255 registers and spilled on sm_90; with 8, 128 registers
    and no spill (``python -m flexrec.kernels.aot``)."""
    BLOCK_K = _util.block_k(K)
    BLOCK_T = max(1, min(BLOCK_K, 4096 // BLOCK_K))
    BLOCK_J = max(2, min(BLOCK_K, 4096 // BLOCK_K))
    return {"BLOCK_K": BLOCK_K, "BLOCK_T": BLOCK_T, "BLOCK_J": BLOCK_J,
            "num_warps": 8 if BLOCK_T * BLOCK_K >= 1024 else 4}


def permutation_logprob(logits: torch.Tensor, perm: torch.Tensor, temperature: float = 1.0):
    """Same signature and result as ``flexrec.ops.reference.permutation_logprob``.

    Shapes: logits (B, K, K), perm (B, K) int64 -> logprob (B, K), entropy (B, K).
    """
    logits = logits.contiguous()
    perm = perm.contiguous()
    B, K = perm.shape
    C = _util.compute_dtype(logits.dtype)
    logprob = torch.empty((B, K), dtype=C, device=logits.device)
    entropy = torch.empty((B, K), dtype=C, device=logits.device)
    if B == 0 or K == 0:
        return logprob, entropy
    cfg = launch_config(K)
    t, t_ptr, t_from_ptr = _util.temperature_args(temperature, logits.dtype, logits)
    permutation_logprob_kernel[(B, triton.cdiv(K, cfg["BLOCK_T"]))](
        logits, perm, logprob, entropy, t, t_ptr, K, TEMP_FROM_PTR=t_from_ptr,
        C=_util.tl_compute(logits.dtype), **cfg)
    return logprob, entropy


def permutation_logprob_backward(grad_logprob: torch.Tensor, grad_entropy: torch.Tensor,
                                 logits: torch.Tensor, perm: torch.Tensor, temperature: float):
    """Same signature and result as ``flexrec.ops.reference.permutation_logprob_backward``.

    Shapes: grad_logprob (B, K), grad_entropy (B, K), logits (B, K, K), perm (B, K) -> (B, K, K).
    """
    logits = logits.contiguous()
    perm = perm.contiguous()
    B, K = perm.shape
    grad_logits = torch.empty_like(logits)
    if B == 0 or K == 0:
        return grad_logits
    cfg = launch_config(K)
    t, t_ptr, t_from_ptr = _util.temperature_args(temperature, logits.dtype, logits)
    permutation_logprob_backward_kernel[(B, triton.cdiv(K, cfg["BLOCK_T"]))](
        grad_logprob.contiguous(), grad_entropy.contiguous(), logits, perm, grad_logits, t, t_ptr,
        K, TEMP_FROM_PTR=t_from_ptr, C=_util.tl_compute(logits.dtype), **cfg)
    return grad_logits

"""Triton kernel of ``flexrec::pool_sample``: one step of constrained permutation decoding.

One program per row: scale by 1/T, mask used candidates, argmax of (x + gumbel) with the lowest
index on ties, and the log-softmax over the unused candidates at the chosen one. Half-precision
logits are computed in float32 (float64 logits in float64), as the reference does.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from . import _util


@triton.jit
def pick_from_pool(logit, t, row, offs, mk, K, used_ptr, gumbel_ptr, index_ptr, logprob_ptr,
                   used_out_ptr, HAS_GUMBEL: tl.constexpr, C: tl.constexpr):
    """The pool step shared with the fused decode_step: scale by 1/T, mask used candidates,
    Gumbel-max argmax (lowest index on ties), log-softmax at the chosen one, mark it used."""
    used = tl.load(used_ptr + row * K + offs, mask=mk, other=1).to(tl.int1)
    x = tl.where(used | (offs >= K), float("-inf"), logit / t)
    if HAS_GUMBEL:
        score = x + tl.load(gumbel_ptr + row * K + offs, mask=mk, other=0.0).to(C)
    else:
        score = x
    index = tl.argmax(score, axis=0, tie_break_left=True)
    x_max = tl.max(x, axis=0)
    # Every unused candidate at -inf (argmax could return a used one, also at -inf): the rule of
    # flexrec.ops.pool_sample is the lowest-index unused candidate, with log-prob -inf.
    dead = x_max == float("-inf")
    first_free = tl.min(tl.where(used | (offs >= K), K, offs), axis=0)
    index = tl.where(dead, first_free, index)
    # (A dead row computes with shift 0 and sum 1, so no -inf - -inf or log(0) is ever evaluated.)
    shift = tl.where(dead, 0.0, x_max)
    total = tl.where(dead, 1.0, tl.sum(tl.exp(x - shift), axis=0))
    lse = shift + tl.log(total)
    chosen = tl.sum(tl.where(offs == index, x, 0.0), axis=0)
    logprob = tl.where(dead, float("-inf"), chosen - lse)
    tl.store(index_ptr + row, index.to(tl.int64))
    tl.store(logprob_ptr + row, logprob)
    tl.store(used_out_ptr + row * K + offs, (used | (offs == index)).to(tl.int8), mask=mk)


@triton.jit
def pool_sample_kernel(logits_ptr, used_ptr, gumbel_ptr, index_ptr, logprob_ptr, used_out_ptr,
                       temperature, temp_ptr, K, HAS_GUMBEL: tl.constexpr,
                       TEMP_FROM_PTR: tl.constexpr, BLOCK_K: tl.constexpr, C: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    offs = tl.arange(0, BLOCK_K)
    mk = offs < K
    if TEMP_FROM_PTR:
        t = tl.load(temp_ptr).to(C)
    else:
        t = temperature
    logit = tl.load(logits_ptr + row * K + offs, mask=mk, other=0.0).to(C)
    pick_from_pool(logit, t, row, offs, mk, K, used_ptr, gumbel_ptr, index_ptr, logprob_ptr,
                   used_out_ptr, HAS_GUMBEL, C)


def launch_config(K: int) -> dict:
    """The block size and warps pool_sample launches with for K candidates (also what
    ``flexrec.kernels.aot`` compiles): one warp per row up to BLOCK_K = 256."""
    BLOCK_K = _util.block_k(K)
    return {"BLOCK_K": BLOCK_K, "num_warps": 4 if BLOCK_K >= 512 else 1}


def pool_sample(logits: torch.Tensor, used: torch.Tensor, gumbel=None, temperature: float = 1.0):
    """Same signature and result as ``flexrec.ops.reference.pool_sample``.

    Shapes: logits (B, K), used (B, K) bool, gumbel (B, K) or None
            -> index (B,) int64, logprob (B,), used_out (B, K) bool.
    """
    logits = logits.contiguous()
    used = used.contiguous()
    B, K = logits.shape
    C = _util.compute_dtype(logits.dtype)
    index = torch.empty(B, dtype=torch.int64, device=logits.device)
    logprob = torch.empty(B, dtype=C, device=logits.device)
    used_out = torch.empty((B, K), dtype=torch.bool, device=logits.device)
    if B == 0:
        return index, logprob, used_out
    g = gumbel.contiguous() if gumbel is not None else logits
    t, t_ptr, t_from_ptr = _util.temperature_args(temperature, logits.dtype, logits)
    pool_sample_kernel[(B,)](logits, used.view(torch.int8), g, index, logprob,
                             used_out.view(torch.int8), t, t_ptr, K,
                             HAS_GUMBEL=gumbel is not None, TEMP_FROM_PTR=t_from_ptr,
                             C=_util.tl_compute(logits.dtype), **launch_config(K))
    return index, logprob, used_out

"""Triton kernels of ``flexrec::candidate_logits`` and its backward: the candidate-restricted LM
head out[n, k] = hidden[n] . weight[cand_ids[n, k]] (+ bias[cand_ids[n, k]]), never (N, V).

Forward: one program per row n gathers its K weight rows in (BLOCK_K, BLOCK_H) tiles, sweeping H.
Backward: one program per row n computes grad_hidden[n] = sum_k grad[n, k] weight[cand_ids[n, k]]
and scatters grad[n, k] hidden[n] into grad_weight (and grad[n, k] into grad_bias) with atomic
adds, so rows that share candidates accumulate correctly (in an unspecified order). The atomics
accumulate in float32 (float64 for float64), into a (V, H) buffer of that dtype: for bfloat16
weights that buffer is twice the size of the weight, then cast once.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from . import _util


@triton.jit
def row_candidates(ids_ptr, K, BLOCK_K: tl.constexpr):
    """This program's row, the lanes 0..BLOCK_K, their mask (lane < K) and the row's candidate
    ids (0 in masked lanes). Shared by every kernel here and the fused decode_step."""
    row = tl.program_id(0).to(tl.int64)
    offs_k = tl.arange(0, BLOCK_K)
    mk = offs_k < K
    ids = tl.load(ids_ptr + row * K + offs_k, mask=mk, other=0).to(tl.int64)
    return row, offs_k, mk, ids


@triton.jit
def candidate_dot(hidden_ptr, weight_ptr, ids, row, H, mk, BLOCK_K: tl.constexpr,
                  BLOCK_H: tl.constexpr, C: tl.constexpr):
    """hidden[row] . weight[ids[k]] for the row's K candidates, over H in BLOCK_H tiles, in C.
    Shared with the fused decode_step."""
    acc = tl.zeros([BLOCK_K], dtype=C)
    for h0 in range(0, H, BLOCK_H):
        offs_h = h0 + tl.arange(0, BLOCK_H)
        mh = offs_h < H
        h = tl.load(hidden_ptr + row * H + offs_h, mask=mh, other=0.0).to(C)
        w = tl.load(weight_ptr + ids[:, None] * H + offs_h[None, :],
                    mask=mk[:, None] & mh[None, :], other=0.0).to(C)
        acc += tl.sum(w * h[None, :], axis=1)
    return acc


@triton.jit
def candidate_logits_kernel(hidden_ptr, weight_ptr, ids_ptr, bias_ptr, out_ptr, K, H,
                            HAS_BIAS: tl.constexpr, BLOCK_K: tl.constexpr,
                            BLOCK_H: tl.constexpr, C: tl.constexpr):
    row, offs_k, mk, ids = row_candidates(ids_ptr, K, BLOCK_K)
    acc = candidate_dot(hidden_ptr, weight_ptr, ids, row, H, mk, BLOCK_K, BLOCK_H, C)
    if HAS_BIAS:
        # Round the product first, as the reference (einsum, then + bias) does in low precision.
        acc = acc.to(out_ptr.dtype.element_ty).to(C)
        acc += tl.load(bias_ptr + ids, mask=mk, other=0.0).to(C)
    tl.store(out_ptr + row * K + offs_k, acc, mask=mk)


@triton.jit
def candidate_logits_backward_kernel(grad_ptr, hidden_ptr, weight_ptr, ids_ptr, grad_hidden_ptr,
                                     grad_weight_ptr, grad_bias_ptr, K, H,
                                     HAS_BIAS: tl.constexpr, BLOCK_K: tl.constexpr,
                                     BLOCK_H: tl.constexpr, C: tl.constexpr):
    row, offs_k, mk, ids = row_candidates(ids_ptr, K, BLOCK_K)
    g = tl.load(grad_ptr + row * K + offs_k, mask=mk, other=0.0).to(C)
    for h0 in range(0, H, BLOCK_H):
        offs_h = h0 + tl.arange(0, BLOCK_H)
        mh = offs_h < H
        m2 = mk[:, None] & mh[None, :]
        h = tl.load(hidden_ptr + row * H + offs_h, mask=mh, other=0.0).to(C)
        w = tl.load(weight_ptr + ids[:, None] * H + offs_h[None, :], mask=m2, other=0.0).to(C)
        tl.store(grad_hidden_ptr + row * H + offs_h, tl.sum(g[:, None] * w, axis=0), mask=mh)
        tl.atomic_add(grad_weight_ptr + ids[:, None] * H + offs_h[None, :], g[:, None] * h[None, :],
                      mask=m2)
    if HAS_BIAS:
        tl.atomic_add(grad_bias_ptr + ids, g, mask=mk)


def launch_config(K: int, H: int) -> dict:
    """The block sizes and warps that candidate_logits, its backward and the fused decode_step
    launch with for K candidates of hidden size H (also what ``flexrec.kernels.aot`` compiles).

    A (BLOCK_K, BLOCK_H) tile of at most 4096 elements, BLOCK_H >= 16 for coalesced row loads,
    and 8 warps from 2048-element tiles on (8 to 16 elements per thread): with 4 warps ptxas gave
    the K = 30, H = 576 tile 94 registers per thread with a bias (31% occupancy on sm_90) and the
    backward 120 to 222 at K = 30 and 100 (12% to 25%); with 8, 58 and 62 to 64 (50%)
    (``python -m flexrec.kernels.aot``, benchmarks/RESULTS.md).
    """
    BLOCK_K = _util.block_k(K)
    BLOCK_H = max(16, min(triton.next_power_of_2(max(H, 1)), 4096 // BLOCK_K))
    return {"BLOCK_K": BLOCK_K, "BLOCK_H": BLOCK_H, "num_warps": 8 if BLOCK_K * BLOCK_H >= 2048 else 4}


def candidate_logits(hidden: torch.Tensor, weight: torch.Tensor, cand_ids: torch.Tensor,
                     bias=None) -> torch.Tensor:
    """Same signature and result as ``flexrec.ops.reference.candidate_logits``.

    Shapes: hidden (N, H), weight (V, H), cand_ids (N, K) int64, bias (V,) or None -> (N, K).
    """
    hidden = hidden.contiguous()
    weight = weight.contiguous()
    cand_ids = cand_ids.contiguous()
    N, H = hidden.shape
    K = cand_ids.shape[1]
    out_dtype = torch.promote_types(hidden.dtype, weight.dtype)
    if bias is not None:
        out_dtype = torch.promote_types(out_dtype, bias.dtype)
    out = torch.empty((N, K), dtype=out_dtype, device=hidden.device)
    if N == 0 or K == 0:
        return out
    candidate_logits_kernel[(N,)](
        hidden, weight, cand_ids, bias.contiguous() if bias is not None else hidden, out, K, H,
        HAS_BIAS=bias is not None, C=_util.tl_compute(out_dtype), **launch_config(K, H))
    return out


def candidate_logits_backward(grad: torch.Tensor, hidden: torch.Tensor, weight: torch.Tensor,
                              cand_ids: torch.Tensor, has_bias: bool):
    """Same signature and result as ``flexrec.ops.reference.candidate_logits_backward``.

    Shapes: grad (N, K) -> grad_hidden (N, H), grad_weight (V, H), grad_bias (V,).

    Without a bias, grad_bias is an empty (0,) tensor instead of the reference's None: this launcher
    is registered as the kernel of the ``flexrec::candidate_logits_backward`` op, whose schema (like
    ``flexrec_C::candidate_logits_backward``) returns a tensor for every output.
    """
    grad = grad.contiguous()
    hidden = hidden.contiguous()
    weight = weight.contiguous()
    cand_ids = cand_ids.contiguous()
    N, H = hidden.shape
    V = weight.shape[0]
    K = cand_ids.shape[1]
    C = _util.compute_dtype(grad.dtype)
    grad_hidden = torch.empty((N, H), dtype=C, device=grad.device)
    grad_weight = torch.zeros((V, H), dtype=C, device=grad.device)
    grad_bias = torch.zeros(V, dtype=C, device=grad.device) if has_bias else None
    if N > 0 and K > 0:
        candidate_logits_backward_kernel[(N,)](
            grad, hidden, weight, cand_ids, grad_hidden, grad_weight,
            grad_bias if has_bias else grad_weight, K, H, HAS_BIAS=has_bias,
            C=_util.tl_compute(grad.dtype), **launch_config(K, H))
    elif N > 0:
        grad_hidden.zero_()
    grad_bias = grad_bias.to(grad.dtype) if has_bias else grad.new_empty((0,))
    return grad_hidden.to(hidden.dtype), grad_weight.to(weight.dtype), grad_bias

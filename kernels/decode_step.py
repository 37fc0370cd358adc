"""Triton kernel of ``flexrec::decode_step``: candidate_logits followed by pool_sample in one
launch, without ever building the (B, V) logits.

One program per row: gather the K candidate rows of ``weight`` in (BLOCK_K, BLOCK_H) tiles and dot
them with ``hidden`` (float32 accumulation; float64 for float64), add the bias, round to the input
dtype (so the result is exactly what the two-op path sees), scale by 1/T, mask used candidates,
Gumbel-max argmax with the lowest index on ties, and the log-softmax at the chosen candidate.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from . import _util
from .candidate_logits import candidate_dot, launch_config, row_candidates
from .pool_sample import pick_from_pool


@triton.jit
def decode_step_kernel(hidden_ptr, weight_ptr, ids_ptr, bias_ptr, used_ptr, gumbel_ptr,
                       index_ptr, logprob_ptr, used_out_ptr, temperature, temp_ptr, K, H,
                       HAS_BIAS: tl.constexpr, HAS_GUMBEL: tl.constexpr,
                       TEMP_FROM_PTR: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_H: tl.constexpr,
                       C: tl.constexpr):
    row, offs, mk, ids = row_candidates(ids_ptr, K, BLOCK_K)
    acc = candidate_dot(hidden_ptr, weight_ptr, ids, row, H, mk, BLOCK_K, BLOCK_H, C)
    # Round to the logits' dtype as candidate_logits does, so both paths pick the same candidate.
    logit = acc.to(hidden_ptr.dtype.element_ty).to(C)
    if HAS_BIAS:
        b = tl.load(bias_ptr + ids, mask=mk, other=0.0).to(C)
        logit = (logit + b).to(hidden_ptr.dtype.element_ty).to(C)
    if TEMP_FROM_PTR:
        t = tl.load(temp_ptr).to(C)
    else:
        t = temperature
    pick_from_pool(logit, t, row, offs, mk, K, used_ptr, gumbel_ptr, index_ptr, logprob_ptr,
                   used_out_ptr, HAS_GUMBEL, C)


def decode_step(hidden: torch.Tensor, weight: torch.Tensor, cand_ids: torch.Tensor,
                used: torch.Tensor, gumbel=None, temperature: float = 1.0, bias=None):
    """Same signature and result as ``flexrec.ops.reference.decode_step``.

    Shapes: hidden (B, H), weight (V, H), cand_ids (B, K) int64, used (B, K) bool,
            gumbel (B, K) or None, bias (V,) or None
            -> index (B,) int64, logprob (B,), used_out (B, K) bool.
    """
    hidden = hidden.contiguous()
    weight = weight.contiguous()
    cand_ids = cand_ids.contiguous()
    used = used.contiguous()
    B, H = hidden.shape
    K = cand_ids.shape[1]
    if weight.dtype != hidden.dtype:
        raise TypeError(f"decode_step: weight is {weight.dtype} but hidden is {hidden.dtype}; "
                        "cast one of them")
    C = _util.compute_dtype(hidden.dtype)
    index = torch.empty(B, dtype=torch.int64, device=hidden.device)
    logprob = torch.empty(B, dtype=C, device=hidden.device)
    used_out = torch.empty((B, K), dtype=torch.bool, device=hidden.device)
    if B == 0:
        return index, logprob, used_out
    t, t_ptr, t_from_ptr = _util.temperature_args(temperature, hidden.dtype, hidden)
    decode_step_kernel[(B,)](
        hidden, weight, cand_ids, bias.contiguous() if bias is not None else hidden,
        used.view(torch.int8), gumbel.contiguous() if gumbel is not None else hidden,
        index, logprob, used_out.view(torch.int8), t, t_ptr, K, H,
        HAS_BIAS=bias is not None, HAS_GUMBEL=gumbel is not None, TEMP_FROM_PTR=t_from_ptr,
        C=_util.tl_compute(hidden.dtype), **launch_config(K, H))
    return index, logprob, used_out

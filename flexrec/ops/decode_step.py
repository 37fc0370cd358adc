"""``flexrec::decode_step``: one fused step of constrained permutation decoding.

The candidate-restricted head, the remaining-pool mask, the temperature, Gumbel-max sampling and
the log-prob in one kernel, without ever building the (B, V) logits: exactly what
``candidate_logits`` followed by ``pool_sample`` returns. Not differentiable (sampling); training
recomputes log-probs with ``candidate_logits`` and ``permutation_logprob``.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from flexrec.ops import backend, checks, reference

_HALF = (torch.float16, torch.bfloat16)


@torch.library.custom_op("flexrec::decode_step", mutates_args=())
def _decode_step(
    hidden: Tensor,
    weight: Tensor,
    cand_ids: Tensor,
    used: Tensor,
    gumbel: Optional[Tensor],
    temperature: float,
    bias: Optional[Tensor],
) -> tuple[Tensor, Tensor, Tensor]:
    return reference.decode_step(hidden, weight, cand_ids, used, gumbel, temperature, bias)


@_decode_step.register_fake
def _(hidden, weight, cand_ids, used, gumbel, temperature, bias):
    torch._check(hidden.dim() == 2 and weight.dim() == 2, lambda: "hidden (B, H), weight (V, H)")
    torch._check(cand_ids.dim() == 2, lambda: "cand_ids must be (B, K)")
    torch._check(used.shape == cand_ids.shape, lambda: "used must have the shape of cand_ids")
    B = hidden.shape[0]
    lp_dtype = torch.float32 if hidden.dtype in _HALF else hidden.dtype
    index = hidden.new_empty((B,), dtype=torch.int64)
    logprob = hidden.new_empty((B,), dtype=lp_dtype)
    return index, logprob, torch.empty_like(used)


backend.register(_decode_step, "decode_step")


def decode_step(
    hidden: Tensor,
    weight: Tensor,
    cand_ids: Tensor,
    used: Tensor,
    gumbel: Optional[Tensor] = None,
    temperature: float = 1.0,
    bias: Optional[Tensor] = None,
    *,
    check: bool = True,
) -> tuple[Tensor, Tensor, Tensor]:
    """One step of decoding a ranking: score the K candidates, mask the used ones, pick one.

    Equal to ``pool_sample(candidate_logits(hidden, weight, cand_ids, bias), used, gumbel,
    temperature)``, in one launch and without a (B, V) tensor: logits[b, k] = hidden[b] .
    weight[cand_ids[b, k]] (+ bias[cand_ids[b, k]]), then the argmax of logits / T (+ gumbel)
    over the unused candidates (lowest index on ties) and its log-softmax over them. Pass
    standard Gumbel noise (``-torch.log(-torch.log(torch.rand(B, K)))``) to sample, None for
    greedy decoding. A row whose unused candidates all score -inf takes the lowest-index one with
    log-prob -inf, as :func:`flexrec.ops.pool_sample` does.

    Returns ``(index, logprob, used_out)``: the chosen candidate (a position in 0..K-1, not a
    token id: the token is ``cand_ids[b, index[b]]``), its log-prob, and ``used`` with it marked
    (a new tensor).

    ``check=False`` skips the value checks (cand_ids in range and distinct, a candidate left in
    every row), which sync the device; shapes, dtypes and devices are still checked. A decoding
    loop calls :func:`flexrec.ops.check_decode_inputs` once, then this with ``check=False`` each
    step, so its K steps make no host sync.

    Shapes:
        hidden (B, H), weight (V, H), cand_ids (B, K) int64 (distinct within a row),
        used (B, K) bool (at least one False per row), gumbel (B, K) or None, bias (V,) or None
        -> index (B,) int64, logprob (B,) (float32 for half/bfloat16 inputs, else hidden's
        dtype), used_out (B, K) bool.
    """
    named = checks.check_head_inputs(hidden, weight, cand_ids, bias)
    named += checks.check_pool_inputs("decode_step", used, gumbel, temperature, "cand_ids", cand_ids, check)
    checks.check_same_device(*named)
    if check:
        checks.check_ids("cand_ids", cand_ids, weight.shape[0])
    if gumbel is not None:
        gumbel = gumbel.contiguous()
    if bias is not None:
        bias = bias.contiguous()
    return _decode_step(
        hidden.contiguous(),
        weight.contiguous(),
        cand_ids.contiguous(),
        used.contiguous(),
        gumbel,
        float(temperature),
        bias,
    )

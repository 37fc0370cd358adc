"""``flexrec::candidate_logits``: the candidate-restricted LM head (K slot tokens, never V)."""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from flexrec.ops import backend, checks, reference


@torch.library.custom_op("flexrec::candidate_logits", mutates_args=())
def _candidate_logits(
    hidden: Tensor, weight: Tensor, cand_ids: Tensor, bias: Optional[Tensor]
) -> Tensor:
    return reference.candidate_logits(hidden, weight, cand_ids, bias)


@_candidate_logits.register_fake
def _(hidden: Tensor, weight: Tensor, cand_ids: Tensor, bias: Optional[Tensor]) -> Tensor:
    torch._check(hidden.dim() == 2 and weight.dim() == 2, lambda: "hidden (N, H), weight (V, H)")
    torch._check(cand_ids.dim() == 2, lambda: "cand_ids must be (N, K)")
    return hidden.new_empty((hidden.shape[0], cand_ids.shape[1]))


@torch.library.custom_op("flexrec::candidate_logits_backward", mutates_args=())
def _candidate_logits_backward(
    grad: Tensor, hidden: Tensor, weight: Tensor, cand_ids: Tensor, has_bias: bool
) -> tuple[Tensor, Tensor, Tensor]:
    gh, gw, gb = reference.candidate_logits_backward(grad, hidden, weight, cand_ids, has_bias)
    # The schema returns a tensor for every output: an empty one when there is no bias.
    return gh, gw, gb if gb is not None else weight.new_empty((0,))


@_candidate_logits_backward.register_fake
def _(grad: Tensor, hidden: Tensor, weight: Tensor, cand_ids: Tensor, has_bias: bool):
    grad_bias = grad.new_empty((weight.shape[0],)) if has_bias else weight.new_empty((0,))
    return torch.empty_like(hidden), torch.empty_like(weight), grad_bias


backend.register(_candidate_logits, "candidate_logits")
backend.register(_candidate_logits_backward, "candidate_logits_backward")


def _setup_context(ctx, inputs, output) -> None:
    hidden, weight, cand_ids, bias = inputs
    ctx.save_for_backward(hidden, weight, cand_ids)
    ctx.has_bias = bias is not None


def _backward(ctx, grad):
    hidden, weight, cand_ids = ctx.saved_tensors
    if not ctx.needs_input_grad[1] and not (ctx.has_bias and ctx.needs_input_grad[3]):
        # A frozen head (LoRA, or a frozen output layer) needs only grad_hidden[n] =
        # sum_k grad[n, k] weight[cand_ids[n, k]]: an embedding bag, without the (V, H) zero-filled
        # weight gradient the full backward allocates (1.2 GiB at Qwen2.5-3B shapes in fp32).
        grad_hidden = torch.nn.functional.embedding_bag(
            cand_ids, weight, per_sample_weights=grad.to(weight.dtype), mode="sum"
        )
        return grad_hidden.to(hidden.dtype), None, None, None
    gh, gw, gb = _candidate_logits_backward(
        grad.contiguous(), hidden, weight, cand_ids, ctx.has_bias
    )
    return gh, gw, None, (gb if ctx.has_bias else None)


_candidate_logits.register_autograd(_backward, setup_context=_setup_context)


def candidate_logits(
    hidden: Tensor, weight: Tensor, cand_ids: Tensor, bias: Optional[Tensor] = None, *, check: bool = True
) -> Tensor:
    """Logits of the K candidate slot tokens only: out[n, k] = hidden[n] . weight[cand_ids[n, k]].

    The candidate-restricted LM head of FLEXREC.md section 1: it never builds an (N, V) tensor.
    Differentiable in ``hidden``, ``weight`` and ``bias``.

    Args:
        hidden: the last hidden states.
        weight: the LM head (or tied embedding) matrix.
        cand_ids: token id of each row's K candidate slots, distinct within a row.
        bias: optional LM-head bias.
        check: False skips the value check of ``cand_ids`` (in range, distinct within a row),
            which syncs the device; the caller promises valid ids.

    Shapes:
        hidden (N, H), weight (V, H), cand_ids (N, K) int64, bias (V,) or None -> (N, K),
        hidden's dtype.
    """
    named = checks.check_head_inputs(hidden, weight, cand_ids, bias)
    if bias is not None:
        bias = bias.contiguous()
    checks.check_same_device(*named)
    if check:
        checks.check_ids("cand_ids", cand_ids, weight.shape[0])
    return _candidate_logits(hidden.contiguous(), weight.contiguous(), cand_ids.contiguous(), bias)

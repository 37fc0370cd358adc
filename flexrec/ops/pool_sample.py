"""``flexrec::pool_sample``: one step of constrained permutation decoding."""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from flexrec.ops import backend, checks, reference

_HALF = (torch.float16, torch.bfloat16)


@torch.library.custom_op("flexrec::pool_sample", mutates_args=())
def _pool_sample(
    logits: Tensor, used: Tensor, gumbel: Optional[Tensor], temperature: float
) -> tuple[Tensor, Tensor, Tensor]:
    return reference.pool_sample(logits, used, gumbel, temperature)


@_pool_sample.register_fake
def _(logits: Tensor, used: Tensor, gumbel: Optional[Tensor], temperature: float):
    torch._check(logits.dim() == 2, lambda: "logits must be (B, K)")
    torch._check(used.shape == logits.shape, lambda: "used must have the shape of logits")
    B = logits.shape[0]
    lp_dtype = torch.float32 if logits.dtype in _HALF else logits.dtype
    index = logits.new_empty((B,), dtype=torch.int64)
    logprob = logits.new_empty((B,), dtype=lp_dtype)
    return index, logprob, torch.empty_like(used)


backend.register(_pool_sample, "pool_sample")


def pool_sample(
    logits: Tensor,
    used: Tensor,
    gumbel: Optional[Tensor] = None,
    temperature: float = 1.0,
    *,
    check: bool = True,
) -> tuple[Tensor, Tensor, Tensor]:
    """One step of constrained permutation decoding: pick a candidate not yet used.

    Greedy (argmax of ``logits`` over unused candidates) when ``gumbel`` is None, else
    Gumbel-max sampling: argmax(logits / T + gumbel), which draws from softmax(logits / T) over
    the unused candidates when ``gumbel`` is standard Gumbel noise
    (``-torch.log(-torch.log(torch.rand(B, K)))``). Ties go to the lowest index.

    A row whose every unused candidate has logit -inf (the model scores none of them) takes the
    lowest-index unused candidate, whatever the noise (every score is -inf: a tie), with log-prob
    -inf (the softmax over it is 0/0; -inf says the model gave the pick no probability, where a
    NaN would poison sums and a finite number would pretend it was drawn). Every backend agrees.

    Returns ``(index, logprob, used_out)``: the chosen candidate, its log-prob under
    log-softmax(logits / T) restricted to the unused candidates (exactly what
    :func:`flexrec.ops.permutation_logprob` recomputes for that step), and ``used`` with the chosen
    candidate marked (a new tensor; ``used`` is not modified).

    ``check=False`` skips the value checks (a NaN in ``logits``, a row of ``used`` with no
    candidate left), which sync the device: for loops whose inputs were checked once before.

    Shapes:
        logits (B, K) float, used (B, K) bool, gumbel (B, K) float or None
        -> index (B,) int64, logprob (B,) (float32 for half/bfloat16 logits, else logits' dtype),
        used_out (B, K) bool.
    """
    checks.check_2d("logits", logits, "(B, K)")
    checks.check_float("logits", logits)
    named = [("logits", logits)]
    named += checks.check_pool_inputs("pool_sample", used, gumbel, temperature, "logits", logits, check)
    checks.check_same_device(*named)
    if check:
        checks.check_no_nan("logits", logits)
    if gumbel is not None:
        gumbel = gumbel.contiguous()
    return _pool_sample(logits.contiguous(), used.contiguous(), gumbel, float(temperature))

"""``flexrec::permutation_logprob``: Plackett-Luce step log-probs and entropies of permutations."""

from __future__ import annotations

import torch
from torch import Tensor

from flexrec.ops import backend, checks, reference

_HALF = (torch.float16, torch.bfloat16)


@torch.library.custom_op("flexrec::permutation_logprob", mutates_args=())
def _permutation_logprob(logits: Tensor, perm: Tensor, temperature: float) -> tuple[Tensor, Tensor]:
    return reference.permutation_logprob(logits, perm, temperature)


@_permutation_logprob.register_fake
def _(logits: Tensor, perm: Tensor, temperature: float):
    torch._check(logits.dim() == 3, lambda: "logits must be (B, K, K)")
    torch._check(perm.dim() == 2, lambda: "perm must be (B, K)")
    dtype = torch.float32 if logits.dtype in _HALF else logits.dtype
    B, K = perm.shape
    return logits.new_empty((B, K), dtype=dtype), logits.new_empty((B, K), dtype=dtype)


@torch.library.custom_op("flexrec::permutation_logprob_backward", mutates_args=())
def _permutation_logprob_backward(
    grad_logprob: Tensor, grad_entropy: Tensor, logits: Tensor, perm: Tensor, temperature: float
) -> Tensor:
    return reference.permutation_logprob_backward(
        grad_logprob, grad_entropy, logits, perm, temperature
    )


@_permutation_logprob_backward.register_fake
def _(grad_logprob, grad_entropy, logits, perm, temperature):
    return torch.empty_like(logits)


backend.register(_permutation_logprob, "permutation_logprob")
backend.register(_permutation_logprob_backward, "permutation_logprob_backward")


def _setup_context(ctx, inputs, output) -> None:
    logits, perm, temperature = inputs
    ctx.save_for_backward(logits, perm)
    ctx.temperature = temperature


def _backward(ctx, grad_logprob, grad_entropy):
    logits, perm = ctx.saved_tensors
    # An output that did not reach the loss arrives as None (or zeros, depending on the tracer).
    if grad_logprob is None:
        grad_logprob = torch.zeros(perm.shape, dtype=logits.dtype, device=logits.device)
    if grad_entropy is None:
        grad_entropy = torch.zeros(perm.shape, dtype=logits.dtype, device=logits.device)
    grad = _permutation_logprob_backward(
        grad_logprob.contiguous(), grad_entropy.contiguous(), logits, perm, ctx.temperature
    )
    return grad, None, None


_permutation_logprob.register_autograd(_backward, setup_context=_setup_context)


def permutation_logprob(
    logits: Tensor, perm: Tensor, temperature: float = 1.0, *, check: bool = True
) -> tuple[Tensor, Tensor]:
    """Log-prob and entropy of every step of given permutations under the masked softmax.

    At step t the candidates ``perm[:, :t]`` are masked and the policy is
    softmax(logits[:, t] / T) over the rest (the Plackett-Luce factorisation of FLEXREC.md
    section 1). For the same logits this gives exactly the log-probs :func:`flexrec.ops.pool_sample`
    reported while sampling the permutation. Differentiable in ``logits`` (both outputs).
    ``logprob.sum(-1)`` is log pi(perm).

    Args:
        logits: step t's logits over the K candidates (e.g. from ``candidate_logits``).
        perm: candidate indices in the order chosen; each row a permutation of 0..K-1.
        temperature: softmax temperature T > 0 (the one used when sampling).
        check: False skips the value checks (a NaN in ``logits``, a row of ``perm`` that is not
            a permutation), which sync the device; the caller promises valid inputs.

    Shapes:
        logits (B, K, K) float, perm (B, K) int64 -> logprob (B, K), entropy (B, K)
        (float32 for half/bfloat16 logits, else logits' dtype).
    """
    if logits.dim() != 3 or logits.shape[1] != logits.shape[2]:
        raise ValueError(
            f"logits must be (B, K, K) (step t's logits over the K candidates), got {tuple(logits.shape)}"
        )
    if logits.shape[2] == 0:
        raise ValueError(f"logits has K = 0 candidates {tuple(logits.shape)}; a pool needs K >= 1")
    checks.check_float("logits", logits)
    if perm.dim() != 2 or perm.shape != logits.shape[:2]:
        raise ValueError(
            f"perm must be (B, K) = {tuple(logits.shape[:2])} to match logits, got {tuple(perm.shape)}"
        )
    checks.check_int64("perm", perm)
    checks.check_same_device(("logits", logits), ("perm", perm))
    checks.check_temperature(temperature)
    if check:
        checks.check_no_nan("logits", logits)
        checks.check_permutation("perm", perm)
    return _permutation_logprob(logits.contiguous(), perm.contiguous(), float(temperature))

"""Pure-torch reference implementations of every flexrec op.

This file is the oracle: plain math, written for clarity rather than speed, with no other flexrec
imports. It is the fallback on every device, what the tests compare every kernel with, and the
baseline of every benchmark. Functions here do no input validation; the public ops in
``flexrec.ops`` validate before they dispatch.

Conventions (see FLEXREC.md sections 1, 3, 5):
- ``gains`` (B, K) are the gains of the ranked items, position 0 first.
- The discount is d(p) = 1 / log2(p + 2) for 0-based position p < n, and 0 beyond the cutoff n,
  where n = K when ``k <= 0`` else min(k, K).
- IDCG@n is the DCG@n of the same K gains sorted in descending order. Rows with IDCG <= 0 get
  all-zero rewards (and variances), never NaN.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

REWARD_MODES = ("causal", "noncausal", "independent", "sequence", "suffix")


def discounts(K: int, k: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """DCG discounts d(p) = 1/log2(p+2) for p < cutoff, 0 beyond. Shapes: -> (K,)."""
    n = K if k <= 0 else min(k, K)
    pos = torch.arange(K, dtype=torch.float64, device=device)
    d = 1.0 / torch.log2(pos + 2.0)
    d[n:] = 0.0
    return d.to(dtype)


def idcg(gains: Tensor, k: int) -> Tensor:
    """Ideal DCG@k of each row's gains. Shapes: gains (B, K) -> (B,)."""
    d = discounts(gains.shape[-1], k, gains.dtype, gains.device)
    ideal = torch.sort(gains, dim=-1, descending=True).values
    return (ideal * d).sum(-1)


def _safe_inverse(x: Tensor) -> Tensor:
    """1/x where x > 0, else 0 (so that a pool with no relevant item gives zeros)."""
    return torch.where(x > 0, 1.0 / torch.where(x > 0, x, torch.ones_like(x)), torch.zeros_like(x))


def swap_reward(gains: Tensor, k: int = 0, mode: str = "causal") -> Tensor:
    """Item-level rewards of a ranked list. Shapes: gains (B, K) -> (B, K).

    causal:      r_p = mean_{j > p} [R(y) - R(y with p, j swapped)]   (last position 0)
    noncausal:   r_p = mean_{j != p} [R(y) - R(y with p, j swapped)]
    independent: r_p = g_p d_p / IDCG
    sequence:    r_p = R(y) = sum_q g_q d_q / IDCG
    suffix:      r_p = sum_{q >= p} g_q d_q / IDCG
    where a swap changes DCG by (g_p - g_j)(d_p - d_j).
    """
    B, K = gains.shape
    g = gains
    d = discounts(K, k, g.dtype, g.device)  # (K,)
    inv = _safe_inverse(idcg(g, k))[:, None]  # (B, 1)
    if mode in ("causal", "noncausal"):
        # pair[b, p, j] = (g_p - g_j)(d_p - d_j): DCG lost by swapping p and j.
        pair = (g[:, :, None] - g[:, None, :]) * (d[:, None] - d[None, :])[None]
        pos = torch.arange(K, device=g.device)
        if mode == "causal":
            keep = pos[None, :] > pos[:, None]  # j > p
        else:
            keep = pos[None, :] != pos[:, None]  # j != p
        count = keep.sum(-1).to(g.dtype)  # (K,)
        total = (pair * keep[None].to(g.dtype)).sum(-1)  # (B, K)
        mean = total / torch.clamp(count, min=1.0)[None]
        return mean * inv
    gd = g * d[None]
    if mode == "independent":
        return gd * inv
    if mode == "sequence":
        return (gd.sum(-1, keepdim=True) * inv).expand(B, K).contiguous()
    if mode == "suffix":
        return torch.flip(torch.cumsum(torch.flip(gd, [-1]), -1), [-1]) * inv
    raise ValueError(f"unknown reward mode {mode!r}; expected one of {REWARD_MODES}")


def swap_reward_var(gains: Tensor, gain_var: Tensor, k: int = 0, mode: str = "causal") -> Tensor:
    """Variance of each position's reward under independent gain noise, IDCG held fixed.

    Every mode's reward is linear in the gains, r_p = sum_q c[p, q] g_q / IDCG, so
    Var(r_p) = sum_q c[p, q]^2 s_q / IDCG^2 with s = gain_var. For causal,
    c[p, p] = sum_{j>p}(d_p - d_j) / (K-p-1) and c[p, j] = -(d_p - d_j) / (K-p-1) for j > p.

    Shapes: gains (B, K), gain_var (B, K) -> (B, K).
    """
    B, K = gains.shape
    g = gains
    s = gain_var.to(g.dtype)
    d = discounts(K, k, g.dtype, g.device)
    inv = _safe_inverse(idcg(g, k))[:, None]
    inv2 = inv * inv
    pos = torch.arange(K, device=g.device)
    eye = torch.eye(K, dtype=g.dtype, device=g.device)
    if mode in ("causal", "noncausal"):
        keep = (pos[None, :] > pos[:, None]) if mode == "causal" else (pos[None, :] != pos[:, None])
        keep = keep.to(g.dtype)
        diff = (d[:, None] - d[None, :]) * keep  # (K, K): d_p - d_j over kept j
        count = torch.clamp(keep.sum(-1), min=1.0)  # (K,)
        coef = (eye * diff.sum(-1)[:, None] - diff) / count[:, None]  # c[p, q]
    elif mode == "independent":
        coef = eye * d[:, None]
    elif mode == "sequence":
        coef = d[None, :].expand(K, K)
    elif mode == "suffix":
        coef = (pos[None, :] >= pos[:, None]).to(g.dtype) * d[None, :]
    else:
        raise ValueError(f"unknown reward mode {mode!r}; expected one of {REWARD_MODES}")
    return (s @ (coef * coef).T) * inv2


def _masked_scaled(logits: Tensor, used: Tensor, temperature: float) -> Tensor:
    """logits / T in float32 (or float64), with used candidates set to -inf."""
    compute = logits.float() if logits.dtype in (torch.float16, torch.bfloat16) else logits
    return (compute / temperature).masked_fill(used, float("-inf"))


def masked_log_softmax(logits: Tensor, used: Tensor, temperature: float) -> tuple[Tensor, Tensor]:
    """log-softmax(logits / T) over the unused candidates (used ones at -inf), and each row's entropy.

    Shapes: logits (..., K), used (..., K) bool -> logp (..., K), entropy (...); float32 for half-precision logits.
    """
    logp = torch.log_softmax(_masked_scaled(logits, used, temperature), dim=-1)
    return logp, -(logp.exp() * torch.where(used, torch.zeros_like(logp), logp)).sum(-1)


def pool_sample(
    logits: Tensor, used: Tensor, gumbel: Optional[Tensor] = None, temperature: float = 1.0
) -> tuple[Tensor, Tensor, Tensor]:
    """One step of constrained permutation decoding.

    Picks, per row, a candidate not yet used: argmax(logits / T) when ``gumbel`` is None, else
    argmax(logits / T + gumbel) (Gumbel-max sampling). Ties go to the lowest index. A row whose
    every unused candidate scores -inf ties at -inf: it takes the lowest-index unused candidate,
    with log-prob -inf (the softmax is 0/0 there).

    Shapes: logits (B, K), used (B, K) bool, gumbel (B, K) or None
            -> index (B,) int64, logprob (B,) float, used_out (B, K) bool.
    ``logprob`` is log-softmax(logits / T) over the unused candidates at the chosen one, float32
    for half-precision logits and the logits' dtype otherwise.
    """
    x = _masked_scaled(logits, used, temperature)
    score = x if gumbel is None else x + gumbel.to(x.dtype)
    # Every unused candidate at -inf: argmax over the scores could return a used candidate (also
    # at -inf), so such a row picks by 1 (unused) / 0 (used) instead.
    dead = torch.isneginf(x).all(dim=-1)
    score = torch.where(dead[:, None], (~used).to(score.dtype), score)
    index = torch.argmax(score, dim=-1)
    logprob = torch.log_softmax(x, dim=-1).gather(-1, index[:, None]).squeeze(-1)
    logprob = torch.where(dead, torch.full_like(logprob, float("-inf")), logprob)
    used_out = used.clone()
    used_out.scatter_(-1, index[:, None], True)
    return index, logprob, used_out


def candidate_logits(
    hidden: Tensor, weight: Tensor, cand_ids: Tensor, bias: Optional[Tensor] = None
) -> Tensor:
    """Candidate-restricted LM head: out[n, k] = hidden[n] . weight[cand_ids[n, k]] (+ bias).

    Shapes: hidden (N, H), weight (V, H), cand_ids (N, K) int64, bias (V,) or None -> (N, K).
    Never builds an (N, V) tensor.
    """
    out = torch.einsum("nh,nkh->nk", hidden, weight[cand_ids])
    if bias is not None:
        out = out + bias[cand_ids]
    return out


def candidate_logits_backward(
    grad: Tensor, hidden: Tensor, weight: Tensor, cand_ids: Tensor, has_bias: bool
) -> tuple[Tensor, Tensor, Optional[Tensor]]:
    """Gradients of candidate_logits. Shapes: grad (N, K) -> (N, H), (V, H), (V,) or None."""
    grad_hidden = torch.einsum("nk,nkh->nh", grad, weight[cand_ids].to(grad.dtype))
    flat_ids = cand_ids.reshape(-1)
    rows = (grad[:, :, None] * hidden[:, None, :].to(grad.dtype)).reshape(-1, hidden.shape[-1])
    grad_weight = torch.zeros(weight.shape, dtype=grad.dtype, device=grad.device)
    grad_weight.index_add_(0, flat_ids, rows)
    grad_bias = None
    if has_bias:
        grad_bias = torch.zeros(weight.shape[0], dtype=grad.dtype, device=grad.device)
        grad_bias.index_add_(0, flat_ids, grad.reshape(-1))
    return grad_hidden.to(hidden.dtype), grad_weight.to(weight.dtype), grad_bias


def permutation_mask(perm: Tensor) -> Tensor:
    """used[b, t, c] = True when candidate c was chosen before step t. Shapes: (B, K) -> (B, K, K)."""
    B, K = perm.shape
    rank = torch.empty_like(perm)
    rank.scatter_(-1, perm, torch.arange(K, device=perm.device).expand(B, K))  # step of each cand
    step = torch.arange(K, device=perm.device)
    return rank[:, None, :] < step[None, :, None]


def permutation_logprob(
    logits: Tensor, perm: Tensor, temperature: float = 1.0
) -> tuple[Tensor, Tensor]:
    """Plackett-Luce step log-probs and entropies of a given permutation.

    At step t the candidates perm[:t] are masked and the distribution is
    softmax(logits[:, t] / T) over the rest; this is exactly the distribution ``pool_sample`` drew
    from, so the two agree on every step's log-prob.

    Shapes: logits (B, K, K), perm (B, K) int64 -> logprob (B, K), entropy (B, K).
    """
    logp, entropy = masked_log_softmax(logits, permutation_mask(perm), temperature)
    return logp.gather(-1, perm[:, :, None]).squeeze(-1), entropy


def permutation_logprob_backward(
    grad_logprob: Tensor, grad_entropy: Tensor, logits: Tensor, perm: Tensor, temperature: float
) -> Tensor:
    """Gradient of permutation_logprob in ``logits``. Shapes: (B, K), (B, K) -> (B, K, K).

    With p the masked softmax at step t, c the chosen candidate and H the entropy:
    d logp_c / d x_j = 1[j = c] - p_j and d H / d x_j = -p_j (log p_j + H) on unmasked j,
    and x = logits / T.
    """
    used = permutation_mask(perm)
    x = _masked_scaled(logits, used, temperature)
    logp = torch.log_softmax(x, dim=-1)
    p = logp.exp()
    safe_logp = torch.where(used, torch.zeros_like(logp), logp)
    H = -(p * safe_logp).sum(-1, keepdim=True)
    onehot = torch.zeros_like(p).scatter_(-1, perm[:, :, None], 1.0)
    gl = grad_logprob.to(p.dtype)[:, :, None]
    ge = grad_entropy.to(p.dtype)[:, :, None]
    grad_x = gl * (onehot - p) - ge * p * (safe_logp + H)
    grad_x = torch.where(used, torch.zeros_like(grad_x), grad_x)
    return (grad_x / temperature).to(logits.dtype)


def decode_step(
    hidden: Tensor,
    weight: Tensor,
    cand_ids: Tensor,
    used: Tensor,
    gumbel: Optional[Tensor] = None,
    temperature: float = 1.0,
    bias: Optional[Tensor] = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """candidate_logits followed by pool_sample.

    Shapes: hidden (B, H), weight (V, H), cand_ids (B, K), used (B, K) bool, gumbel (B, K) or None
            -> index (B,), logprob (B,), used_out (B, K).
    """
    logits = candidate_logits(hidden, weight, cand_ids, bias)
    return pool_sample(logits, used, gumbel, temperature)

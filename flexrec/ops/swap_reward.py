"""``flexrec::swap_reward``: item-level counterfactual-swap rewards of ranked lists."""

from __future__ import annotations

import torch
from torch import Tensor

from flexrec.ops import backend, checks, reference
from flexrec.ops.checks import GAINS_ARE


@torch.library.custom_op("flexrec::swap_reward", mutates_args=())
def _swap_reward(gains: Tensor, k: int, mode: str) -> Tensor:
    return reference.swap_reward(gains, k, mode)


@_swap_reward.register_fake
def _(gains: Tensor, k: int, mode: str) -> Tensor:
    torch._check(gains.dim() == 2, lambda: "gains must be (B, K)")
    return torch.empty_like(gains)


backend.register(_swap_reward, "swap_reward")


def swap_reward(gains: Tensor, k: int = 0, mode: str = "causal", *, check: bool = True) -> Tensor:
    """Item-level rewards of ranked lists (FLEXREC.md section 3).

    Args:
        gains: gains of the ranked items, position 0 first (a graded label or 2^label - 1); a NaN or
            an infinity raises a ValueError. A negative gain is an item that lowers the list's DCG
            wherever it is placed (the formulas below are linear in the gains and hold as they
            are); a row whose IDCG@n is <= 0 (no positive gain within the cutoff) gets zeros.
        k: NDCG cutoff n; 0 means K. Positions past the cutoff have discount 0.
        mode: ``causal`` (the method: mean over later positions j of R(y) - R(y with the items
            at p and j swapped); the last position gets 0), ``noncausal`` (mean over all j != p),
            ``independent`` (g_p d_p / IDCG), ``sequence`` (every position gets R(y) = NDCG@n),
            ``suffix`` (rank-level: sum over q >= p of g_q d_q / IDCG).
        check: False skips the value check (finite gains), which reads the gains and so syncs
            the device; the caller promises finite gains. Shape, dtype and mode are always checked.

    Rewards are normalised by the IDCG@n of the same row's gains; a row with IDCG = 0 gets zeros.

    Shapes:
        gains (B, K) float -> (B, K), same dtype.
    """
    checks.check_2d("gains", gains, "(B, K)")
    checks.check_float("gains", gains)
    checks.check_mode(mode, reference.REWARD_MODES)
    if k < 0:
        raise ValueError(f"k must be >= 0 (0 means the whole list), got {k}")
    if check:
        checks.check_finite("gains", gains, GAINS_ARE)
    return _swap_reward(gains.contiguous(), int(k), mode)

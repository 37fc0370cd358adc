"""``flexrec::swap_reward_var``: variance of each position's reward under noisy gains."""

from __future__ import annotations

import torch
from torch import Tensor

from flexrec.ops import backend, checks, reference
from flexrec.ops.checks import GAINS_ARE, VARIANCES_ARE


@torch.library.custom_op("flexrec::swap_reward_var", mutates_args=())
def _swap_reward_var(gains: Tensor, gain_var: Tensor, k: int, mode: str) -> Tensor:
    return reference.swap_reward_var(gains, gain_var, k, mode)


@_swap_reward_var.register_fake
def _(gains: Tensor, gain_var: Tensor, k: int, mode: str) -> Tensor:
    torch._check(gains.dim() == 2, lambda: "gains must be (B, K)")
    torch._check(gain_var.shape == gains.shape, lambda: "gain_var must have the shape of gains")
    return torch.empty_like(gains)


backend.register(_swap_reward_var, "swap_reward_var")


def swap_reward_var(
    gains: Tensor, gain_var: Tensor, k: int = 0, mode: str = "causal", *, check: bool = True
) -> Tensor:
    """Variance of each position's reward when the gains are noisy (FLEXREC.md section 5).

    The gains are taken as independent with variances ``gain_var`` and the IDCG is held fixed, so
    for the causal reward
    Var(r_p) = [(sum_{j>p}(d_p - d_j))^2 s_p + sum_{j>p}(d_p - d_j)^2 s_j] / ((K-p-1) IDCG)^2.
    Every mode of :func:`flexrec.ops.swap_reward` is supported; for ``sequence`` every entry is
    Var(R(y)). A row with IDCG = 0 gets zeros.

    Args:
        gains: gains (or their means) of the ranked items, position 0 first; finite (negative
            gains mean what they mean in ``swap_reward``).
        gain_var: variance of each gain, in the same ranked order (0 for an observed label);
            finite and >= 0.
        k: NDCG cutoff n; 0 means K.
        mode: as in ``swap_reward``.
        check: False skips the value checks (finite gains, finite non-negative variances), which
            sync the device; the caller promises valid inputs.

    Shapes:
        gains (B, K) float, gain_var (B, K) float -> (B, K), gains' dtype.
    """
    checks.check_2d("gains", gains, "(B, K)")
    checks.check_float("gains", gains)
    checks.check_float("gain_var", gain_var)
    checks.check_same_shape("gain_var", gain_var, "gains", gains)
    checks.check_same_device(("gains", gains), ("gain_var", gain_var))
    checks.check_mode(mode, reference.REWARD_MODES)
    if k < 0:
        raise ValueError(f"k must be >= 0 (0 means the whole list), got {k}")
    if check:
        checks.check_finite("gains", gains, GAINS_ARE)
        checks.check_finite("gain_var", gain_var, VARIANCES_ARE)
        checks.check_nonnegative("gain_var", gain_var, VARIANCES_ARE)
    return _swap_reward_var(gains.contiguous(), gain_var.to(gains.dtype).contiguous(), int(k), mode)

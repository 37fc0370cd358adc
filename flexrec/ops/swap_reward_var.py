"""``flexrec::swap_reward_var``: variance of each position's reward under noisy gains."""

from __future__ import annotations

import torch
from torch import Tensor

from flexrec import backend
from flexrec.ops import _checks, reference


@torch.library.custom_op("flexrec::swap_reward_var", mutates_args=())
def _swap_reward_var(gains: Tensor, gain_var: Tensor, k: int, mode: str) -> Tensor:
    return reference.swap_reward_var(gains, gain_var, k, mode)


@_swap_reward_var.register_fake
def _(gains: Tensor, gain_var: Tensor, k: int, mode: str) -> Tensor:
    torch._check(gains.dim() == 2, lambda: "gains must be (B, K)")
    torch._check(gain_var.shape == gains.shape, lambda: "gain_var must have the shape of gains")
    return torch.empty_like(gains)


backend.register(
    _swap_reward_var,
    "swap_reward_var",
    {
        "c": {"cpu": lambda g, s, k, m: torch.ops.flexrec_C.swap_reward_var(g, s, k, m)},
        "cuda": {"cuda": lambda g, s, k, m: torch.ops.flexrec_C.swap_reward_var(g, s, k, m)},
        "triton": {
            "cuda": "flexrec.kernels.swap_reward_var:swap_reward_var",
            "cpu": "flexrec.kernels.swap_reward_var:swap_reward_var",
        },
    },
)


def swap_reward_var(gains: Tensor, gain_var: Tensor, k: int = 0, mode: str = "causal") -> Tensor:
    """Variance of each position's reward when the gains are noisy (FLEXREC.md section 5).

    The gains are taken as independent with variances ``gain_var`` and the IDCG is held fixed, so
    for the causal reward
    Var(r_p) = [(sum_{j>p}(d_p - d_j))^2 s_p + sum_{j>p}(d_p - d_j)^2 s_j] / ((K-p-1) IDCG)^2.
    Every mode of :func:`flexrec.ops.swap_reward` is supported; for ``sequence`` every entry is
    Var(R(y)). A row with IDCG = 0 gets zeros.

    Args:
        gains: gains (or their means) of the ranked items, position 0 first.
        gain_var: variance of each gain, in the same ranked order (0 for an observed label).
        k: NDCG cutoff n; 0 means K.
        mode: as in ``swap_reward``.

    Shapes:
        gains (B, K) float, gain_var (B, K) float -> (B, K), gains' dtype.
    """
    _checks.check_2d("gains", gains, "(B, K)")
    _checks.check_float("gains", gains)
    _checks.check_float("gain_var", gain_var)
    _checks.check_same_shape("gain_var", gain_var, "gains", gains)
    _checks.check_same_device(("gains", gains), ("gain_var", gain_var))
    _checks.check_mode(mode, reference.REWARD_MODES)
    if k < 0:
        raise ValueError(f"k must be >= 0 (0 means the whole list), got {k}")
    if not _checks._is_fake(gain_var) and bool((gain_var < 0).any()):
        raise ValueError("gain_var has negative entries; variances must be >= 0 (0 for an observed label)")
    return _swap_reward_var(gains.contiguous(), gain_var.to(gains.dtype).contiguous(), int(k), mode)

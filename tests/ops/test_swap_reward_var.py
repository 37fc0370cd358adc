"""flexrec::swap_reward_var: C++ kernel vs the reference, Monte-Carlo check, errors."""

import pytest
import torch
from _op_helpers import KS, assert_close_to_fp64

from flexrec.ops import reference, swap_reward, swap_reward_var

C = torch.ops.flexrec_C
MODES = reference.REWARD_MODES


@pytest.mark.parametrize("K", KS)
@pytest.mark.parametrize("B", [1, 7, 64])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_cpp_matches_reference(K, B, dtype, gen):
    gains = torch.randint(0, 4, (B, K), generator=gen).to(dtype)
    gain_var = torch.rand(B, K, generator=gen).to(dtype)
    gain_var[:, ::3] = 0.0  # observed labels have no variance
    for mode in MODES:
        for k in (0, 3, K + 5):
            want = reference.swap_reward_var(gains.double(), gain_var.double(), k, mode)
            low = reference.swap_reward_var(gains, gain_var, k, mode)
            assert_close_to_fp64(C.swap_reward_var(gains, gain_var, k, mode), want, low)
            assert_close_to_fp64(swap_reward_var(gains, gain_var, k, mode), want, low)


@pytest.mark.parametrize("mode", MODES)
def test_matches_monte_carlo(mode, gen):
    # Draw noisy gains around a mean with the given variances and measure each position's reward
    # variance, with the IDCG held at the mean gains' IDCG (the quantity the closed form is about).
    B, K, N, k = 3, 7, 20000, 5
    mean = torch.rand(B, K, generator=gen, dtype=torch.float64) * 3
    var = torch.rand(B, K, generator=gen, dtype=torch.float64)
    noisy = mean[None] + var.sqrt()[None] * torch.randn(N, B, K, generator=gen, dtype=torch.float64)
    flat = noisy.reshape(N * B, K)
    rewards = swap_reward(flat, k, mode) * (reference.idcg(flat, k) / reference.idcg(mean, k).repeat(N))[:, None]
    empirical = rewards.reshape(N, B, K).var(dim=0)
    closed = swap_reward_var(mean, var, k, mode)
    # relative standard error of a variance from N normal samples is sqrt(2/N) ~ 1%
    torch.testing.assert_close(empirical, closed, rtol=0.08, atol=1e-6)


def test_idcg_zero_gives_zeros():
    out = swap_reward_var(torch.zeros(2, 4), torch.ones(2, 4))
    assert torch.equal(out, torch.zeros(2, 4))


def test_opcheck():
    g, s = torch.rand(4, 6), torch.rand(4, 6)
    for mode in MODES:
        torch.library.opcheck(torch.ops.flexrec.swap_reward_var.default, (g, s, 0, mode))


def test_bad_inputs():
    with pytest.raises(ValueError, match="gain_var has shape"):
        swap_reward_var(torch.rand(2, 3), torch.rand(2, 4))
    with pytest.raises(TypeError, match="gain_var must be a floating"):
        swap_reward_var(torch.rand(2, 3), torch.ones(2, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="must be on one device"):
        swap_reward_var(torch.rand(2, 3), torch.rand(2, 3, device="meta"))
    with pytest.raises(ValueError, match="negative entries"):
        swap_reward_var(torch.rand(2, 3), -torch.ones(2, 3))
    with pytest.raises(ValueError, match="K = 0"):
        swap_reward_var(torch.rand(2, 0), torch.rand(2, 0))
    with pytest.raises(RuntimeError, match="gain_var has shape"):
        C.swap_reward_var(torch.rand(2, 3), torch.rand(3, 3), 0, "causal")

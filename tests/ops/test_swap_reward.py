"""flexrec::swap_reward: C++ kernel vs the reference, a hand-worked example, properties, errors."""

import math

import pytest
import torch
from _op_helpers import KS, assert_close_to_fp64
from hypothesis import given, settings
from hypothesis import strategies as st

from flexrec.ops import reference, swap_reward

C = torch.ops.flexrec_C
MODES = reference.REWARD_MODES


@pytest.mark.parametrize("K", KS)
@pytest.mark.parametrize("B", [1, 7, 64])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_cpp_matches_reference(K, B, dtype, gen):
    gains = torch.randint(0, 4, (B, K), generator=gen).to(dtype)  # graded labels: many ties
    gains[0] += torch.rand(K, generator=gen).to(dtype)  # and one row without ties
    for mode in MODES:
        for k in (0, 3, K + 5):
            want = reference.swap_reward(gains.double(), k, mode)
            got = C.swap_reward(gains, k, mode)
            assert got.dtype == dtype
            assert_close_to_fp64(got, want, reference.swap_reward(gains, k, mode))
            # the public op (C++ on CPU) and the reference in the same dtype agree too
            assert_close_to_fp64(swap_reward(gains, k, mode), want, reference.swap_reward(gains, k, mode))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_long_lists_take_the_sort_path(dtype, gen):
    # K > 128 computes the IDCG with a partial sort instead of the rank count (common.h).
    gains = torch.randint(0, 5, (6, 257), generator=gen).to(dtype)
    for k in (0, 10):
        want = reference.swap_reward(gains.double(), k, "causal")
        assert_close_to_fp64(C.swap_reward(gains, k, "causal"), want)
        want = reference.swap_reward_var(gains.double(), gains.double() / 4, k, "causal")
        assert_close_to_fp64(C.swap_reward_var(gains, gains / 4, k, "causal"), want)


def test_hand_worked_example():
    # gains [1, 3, 0], cutoff K = 3, discounts d = [1/log2(2), 1/log2(3), 1/log2(4)] = [1, 0.63093, 0.5]
    # IDCG = 3*1 + 1*0.63093 + 0*0.5 = 3.63093
    # causal r_0 = mean_{j=1,2} (g_0 - g_j)(d_0 - d_j) / IDCG
    #            = [(1-3)(1-0.63093) + (1-0)(1-0.5)] / 2 / 3.63093
    #            = (-0.73814 + 0.5) / 2 / 3.63093 = -0.032793
    # causal r_1 = (3-0)(0.63093-0.5) / 1 / 3.63093 = 0.39279 / 3.63093 = 0.108179
    # causal r_2 = 0 (nothing after the last position)
    # sequence: DCG = 1*1 + 3*0.63093 + 0 = 2.89279, NDCG = 2.89279 / 3.63093 = 0.796707
    gains = torch.tensor([[1.0, 3.0, 0.0]], dtype=torch.float64)
    d1 = 1 / math.log2(3)
    idcg = 3 + d1
    want = [((1 - 3) * (1 - d1) + (1 - 0) * (1 - 0.5)) / 2 / idcg, 3 * (d1 - 0.5) / idcg, 0.0]
    assert want[0] == pytest.approx(-0.032793, abs=1e-6)
    assert want[1] == pytest.approx(0.108179, abs=1e-6)
    for fn in (swap_reward, reference.swap_reward, lambda g, k, m: C.swap_reward(g, k, m)):
        torch.testing.assert_close(fn(gains, 0, "causal")[0], torch.tensor(want, dtype=torch.float64))
        assert fn(gains, 0, "sequence")[0, 0].item() == pytest.approx(0.796707, abs=1e-6)


def test_idcg_zero_gives_zeros_not_nan():
    gains = torch.zeros(3, 5)
    gains[1, 4] = 1.0  # relevant item beyond the cutoff k = 2: IDCG@2 is still 1 * d_0 > 0
    for mode in MODES:
        for fn in (swap_reward, reference.swap_reward):
            out = fn(gains, 0, mode)
            assert torch.isfinite(out).all()
            assert (out[0] == 0).all() and (out[2] == 0).all()


gain_rows = st.lists(st.floats(0.0, 10.0, allow_nan=False, width=32), min_size=1, max_size=40)


@settings(max_examples=60, deadline=None)
@given(gain_rows)
def test_ideal_order_nonneg_reverse_order_nonpos(row):
    ideal = torch.tensor(sorted(row, reverse=True), dtype=torch.float64)[None]
    reverse = torch.flip(ideal, [-1])
    for k in (0, 3):
        assert (swap_reward(ideal, k, "causal") >= -1e-12).all()
        assert (swap_reward(reverse, k, "causal") <= 1e-12).all()


@settings(max_examples=60, deadline=None)
@given(gain_rows, st.floats(0.01, 100.0))
def test_scale_invariance(row, scale):
    gains = torch.tensor(row, dtype=torch.float64)[None]
    for mode in MODES:
        torch.testing.assert_close(
            swap_reward(gains * scale, 0, mode), swap_reward(gains, 0, mode), atol=1e-10, rtol=1e-8
        )


def test_opcheck():
    gains = torch.rand(4, 6)
    for mode in MODES:
        torch.library.opcheck(torch.ops.flexrec.swap_reward.default, (gains, 2, mode))


def test_bad_inputs():
    with pytest.raises(ValueError, match="must be 2-D"):
        swap_reward(torch.rand(5))
    with pytest.raises(ValueError, match="K = 0"):
        swap_reward(torch.rand(3, 0))
    with pytest.raises(TypeError, match="floating"):
        swap_reward(torch.ones(2, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="unknown reward mode"):
        swap_reward(torch.rand(2, 3), mode="pairwise")
    with pytest.raises(ValueError, match="k must be >= 0"):
        swap_reward(torch.rand(2, 3), k=-1)
    with pytest.raises(RuntimeError, match="unknown reward mode"):
        C.swap_reward(torch.rand(2, 3), 0, "pairwise")

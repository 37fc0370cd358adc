"""Every Triton launcher against the pure-torch reference on fresh random CPU inputs at odd
shapes, forward and backward, under TRITON_INTERPRET=1 (set by conftest.py)."""

import os

import pytest
import torch

pytest.importorskip("triton")
if os.environ.get("TRITON_INTERPRET") != "1":
    pytest.skip("Triton runs on CPU tensors only with TRITON_INTERPRET=1 (set by conftest.py without a "
                "GPU); on a GPU, tests/kernels/test_cuda.py checks the kernels", allow_module_level=True)

from flexrec.kernels.candidate_logits import candidate_logits, candidate_logits_backward  # noqa: E402
from flexrec.kernels.permutation_logprob import (  # noqa: E402
    permutation_logprob,
    permutation_logprob_backward,
)
from flexrec.kernels.pool_sample import pool_sample  # noqa: E402
from flexrec.kernels.swap_reward import swap_reward  # noqa: E402
from flexrec.kernels.swap_reward_var import swap_reward_var  # noqa: E402
from flexrec.ops import reference as R  # noqa: E402

from _kernel_helpers import ODD_KS, TOL, assert_close_lowp, gumbel_noise, to64  # noqa: E402

DTYPES = (torch.float32, torch.float64)
B = 3


def random_gains(B: int, K: int, dtype) -> torch.Tensor:
    # Integer labels (many ties, as 2^label - 1 gains have) plus one all-zero row (IDCG = 0).
    g = (2.0 ** torch.randint(0, 4, (B, K)).double() - 1).to(dtype)
    g[0] = 0
    return g


# The interpreter is slow: each (K, dtype) case runs every mode, float32 at a cutoff of 3 (the
# positions past it get discount 0) and float64 at the whole list.
CUTOFF = {torch.float32: 3, torch.float64: 0}


@pytest.mark.parametrize("K", ODD_KS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_swap_reward(K, dtype):
    g = random_gains(B, K, dtype)
    k = CUTOFF[dtype]
    for mode in R.REWARD_MODES:
        out = swap_reward(g, k, mode)
        assert out.dtype == dtype and out.shape == (B, K)
        torch.testing.assert_close(out, R.swap_reward(g, k, mode), **TOL[dtype], msg=mode)
        assert torch.all(out[0] == 0), "a row with IDCG = 0 gets zeros"


def test_swap_reward_continuous_gains_and_bf16():
    g = torch.rand(4, 31) * 3
    torch.testing.assert_close(swap_reward(g, 10, "causal"), R.swap_reward(g, 10, "causal"))
    gb = g.bfloat16()
    out = swap_reward(gb, 10, "causal")
    assert out.dtype == torch.bfloat16
    assert_close_lowp(out, R.swap_reward(gb, 10, "causal"), R.swap_reward(gb.double(), 10, "causal"),
                      "swap_reward bf16")


def test_swap_reward_hand_computed():
    # gains (3, 0, 1), n = 3: d = (1, 1/log2 3, 1/2); IDCG = 3 + 1/log2 3 = 3.6309.
    # causal r_0 = [(3-0)(1-0.6309) + (3-1)(1-0.5)] / 2 / IDCG = (1.1073 + 1) / 2 / 3.6309 = 0.29018
    g = torch.tensor([[3.0, 0.0, 1.0]])
    out = swap_reward(g, 0, "causal")
    torch.testing.assert_close(out[0, 0], torch.tensor(0.29018), atol=1e-4, rtol=0)
    assert out[0, 2] == 0


@pytest.mark.parametrize("K", ODD_KS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_swap_reward_var(K, dtype):
    g = random_gains(B, K, dtype)
    s = torch.rand(B, K, dtype=dtype)
    k = CUTOFF[dtype]
    for mode in R.REWARD_MODES:
        out = swap_reward_var(g, s, k, mode)
        assert out.dtype == dtype
        torch.testing.assert_close(out, R.swap_reward_var(g, s, k, mode), **TOL[dtype], msg=mode)


@pytest.mark.parametrize("K", ODD_KS)
@pytest.mark.parametrize("dtype", (torch.float32, torch.float64, torch.bfloat16))
def test_pool_sample(K, dtype):
    logits = torch.randn(4, K).to(dtype)
    used = torch.rand(4, K) < 0.5
    used[:, torch.randint(0, K, (1,))] = False  # at least one allowed candidate per row
    for gumbel, temperature in ((None, 1.0), (gumbel_noise(4, K), 0.7)):
        out = pool_sample(logits, used, gumbel, temperature)
        ref = R.pool_sample(logits, used, gumbel, temperature)
        assert torch.equal(out[0], ref[0]), "same candidate"
        assert torch.equal(out[2], ref[2]), "same used_out"
        assert out[1].dtype == ref[1].dtype
        torch.testing.assert_close(out[1], ref[1], **TOL.get(dtype, TOL[torch.float32]))
        assert not used[torch.arange(4), out[0]].any(), "never picks a used candidate"


def test_pool_sample_ties_go_to_lowest_index():
    logits = torch.tensor([[1.0, 3.0, 3.0, 3.0]])
    used = torch.tensor([[False, True, False, False]])
    index, logprob, used_out = pool_sample(logits, used)
    assert index.item() == 2
    # log-softmax over {1, 3, 3} at a 3: 3 - log(e^1 + 2 e^3) = -0.7586
    torch.testing.assert_close(logprob, torch.tensor([-0.75859]), atol=1e-4, rtol=0)
    assert used_out.tolist() == [[False, True, True, False]]


@pytest.mark.parametrize("K", ODD_KS)
@pytest.mark.parametrize("dtype", (torch.float32, torch.float64, torch.bfloat16))
def test_candidate_logits_forward_backward(K, dtype):
    N, H = 3, 37
    V = max(K + 3, 20)  # small V: rows share candidates, so the backward's atomics collide
    hidden = torch.randn(N, H, dtype=torch.float64)
    weight = torch.randn(V, H, dtype=torch.float64)
    bias = torch.randn(V, dtype=torch.float64)
    ids = torch.stack([torch.randperm(V)[:K] for _ in range(N)])
    grad = torch.randn(N, K, dtype=torch.float64)
    lo = lambda t: t.to(dtype)  # noqa: E731
    for b in (None, bias):
        out = candidate_logits(lo(hidden), lo(weight), ids, None if b is None else lo(b))
        ref = R.candidate_logits(lo(hidden), lo(weight), ids, None if b is None else lo(b))
        assert out.dtype == ref.dtype and out.shape == (N, K)
        if dtype == torch.bfloat16:
            ref64 = R.candidate_logits(*map(to64, (lo(hidden), lo(weight), ids, None if b is None else lo(b))))
            assert_close_lowp(out, ref, ref64, "logits bf16")
        else:
            torch.testing.assert_close(out, ref, **TOL[dtype])
        has_bias = b is not None
        got = candidate_logits_backward(lo(grad), lo(hidden), lo(weight), ids, has_bias)
        want = R.candidate_logits_backward(lo(grad), lo(hidden), lo(weight), ids, has_bias)
        want64 = R.candidate_logits_backward(*map(to64, (lo(grad), lo(hidden), lo(weight), ids)), has_bias)
        for name, x, y, y64 in zip(("grad_hidden", "grad_weight", "grad_bias"), got, want, want64):
            if y is None:
                assert x.numel() == 0, "no bias: an empty grad_bias (the op schema's convention)"
                continue
            assert x.dtype == y.dtype and x.shape == y.shape, name
            if dtype == torch.bfloat16:
                assert_close_lowp(x, y, y64, f"{name} bf16", atol=1e-2)
            else:
                torch.testing.assert_close(x, y, **TOL[dtype])


def test_candidate_logits_wide_hidden():
    # H larger than one BLOCK_H tile: the kernel sweeps H in blocks.
    hidden, weight = torch.randn(2, 300), torch.randn(50, 300)
    ids = torch.stack([torch.randperm(50)[:30] for _ in range(2)])
    torch.testing.assert_close(candidate_logits(hidden, weight, ids),
                               R.candidate_logits(hidden, weight, ids), atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize("K", ODD_KS)
@pytest.mark.parametrize("dtype", (torch.float32, torch.float64, torch.bfloat16))
def test_permutation_logprob_forward_backward(K, dtype):
    logits64 = torch.randn(B, K, K, dtype=torch.float64) * 2
    logits = logits64.to(dtype)
    perm = torch.stack([torch.randperm(K) for _ in range(B)])
    temperature = 0.8
    out = permutation_logprob(logits, perm, temperature)
    ref = R.permutation_logprob(logits, perm, temperature)
    for name, x, y in zip(("logprob", "entropy"), out, ref):
        assert x.dtype == y.dtype and x.shape == (B, K), name
        torch.testing.assert_close(x, y, **TOL.get(dtype, TOL[torch.float32]))
    # The last step has one candidate left: logprob 0 and entropy 0.
    assert torch.all(out[0][:, -1].abs() < 1e-6) and torch.all(out[1][:, -1].abs() < 1e-6)
    gl, ge = torch.randn(B, K), torch.randn(B, K)
    got = permutation_logprob_backward(gl.to(out[0].dtype), ge.to(out[0].dtype), logits, perm, temperature)
    want = R.permutation_logprob_backward(gl.to(out[0].dtype), ge.to(out[0].dtype), logits, perm,
                                          temperature)
    assert got.dtype == want.dtype and got.shape == (B, K, K)
    if dtype == torch.bfloat16:
        want64 = R.permutation_logprob_backward(gl.double(), ge.double(), to64(logits), perm, temperature)
        assert_close_lowp(got, want, want64, "permutation_logprob backward bf16", atol=1e-2)
    else:
        torch.testing.assert_close(got, want, **TOL[dtype])


def test_permutation_logprob_backward_matches_autograd():
    # The analytic backward equals autograd through the reference.
    logits = torch.randn(2, 7, 7, dtype=torch.float64, requires_grad=True)
    perm = torch.stack([torch.randperm(7) for _ in range(2)])
    lp, ent = R.permutation_logprob(logits, perm, 1.3)
    gl, ge = torch.randn_like(lp), torch.randn_like(ent)
    (auto,) = torch.autograd.grad((lp * gl).sum() + (ent * ge).sum(), logits)
    got = permutation_logprob_backward(gl, ge, logits.detach(), perm, 1.3)
    torch.testing.assert_close(got, auto, atol=1e-10, rtol=1e-10)

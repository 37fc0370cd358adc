"""flexrec::permutation_logprob (+ backward): C++ kernels vs the reference, gradcheck, errors."""

import pytest
import torch
from _op_helpers import KS, assert_close_to_fp64

from flexrec.ops import permutation_logprob, reference

C = torch.ops.flexrec_C


def make(B, K, dtype, gen):
    logits = (3 * torch.randn(B, K, K, generator=gen)).to(dtype)
    perm = torch.argsort(torch.rand(B, K, generator=gen), -1)
    return logits, perm


@pytest.mark.parametrize("K", KS)
@pytest.mark.parametrize("B", [1, 7, 33])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_cpp_matches_reference(K, B, dtype, gen):
    logits, perm = make(B, K, dtype, gen)
    gl, ge = torch.randn(B, K, generator=gen), torch.randn(B, K, generator=gen)
    for T in (1.0, 0.6):
        want = reference.permutation_logprob(logits.double(), perm, T)
        low = reference.permutation_logprob(logits, perm, T)
        for fn in (C.permutation_logprob, permutation_logprob):
            got = fn(logits, perm, T)
            for g, w, lo in zip(got, want, low):
                assert g.dtype == (torch.float32 if dtype == torch.bfloat16 else dtype)
                if dtype == torch.bfloat16:  # the math runs in float32 on bf16 inputs
                    torch.testing.assert_close(g, w.float(), atol=5e-5, rtol=1e-5)
                else:
                    assert_close_to_fp64(g, w, lo)
        want_g = reference.permutation_logprob_backward(gl.double(), ge.double(), logits.double(), perm, T)
        low_g = reference.permutation_logprob_backward(gl, ge, logits, perm, T)
        got_g = C.permutation_logprob_backward(gl, ge, logits, perm, T)
        assert got_g.dtype == dtype
        assert_close_to_fp64(got_g, want_g, low_g)


def test_log_probs_of_a_whole_permutation_sum_to_one(gen):
    # Over all 3! permutations, pi(perm) = exp(sum_t logprob_t) sums to 1.
    import itertools

    logits = torch.randn(1, 3, 3, generator=gen, dtype=torch.float64)
    perms = torch.tensor(list(itertools.permutations(range(3))))
    lp, _ = permutation_logprob(logits.expand(6, 3, 3), perms)
    assert lp.sum(-1).exp().sum().item() == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("T", [1.0, 0.7])
def test_gradcheck_both_outputs(T, gen):
    logits, perm = make(3, 5, torch.float64, gen)
    logits.requires_grad_()
    assert torch.autograd.gradcheck(lambda x: permutation_logprob(x, perm, T), (logits,))
    # only one output used: the other's gradient arrives as None/zeros
    assert torch.autograd.gradcheck(lambda x: permutation_logprob(x, perm, T)[1], (logits,))


def test_opcheck(gen):
    logits, perm = make(4, 6, torch.float32, gen)
    torch.library.opcheck(
        torch.ops.flexrec.permutation_logprob.default, (logits.requires_grad_(), perm, 0.8)
    )
    gl, ge = torch.randn(4, 6, generator=gen), torch.randn(4, 6, generator=gen)
    torch.library.opcheck(
        torch.ops.flexrec.permutation_logprob_backward.default, (gl, ge, logits.detach(), perm, 0.8)
    )


def test_bad_inputs(gen):
    logits, perm = make(2, 4, torch.float32, gen)
    dup = perm.clone()
    dup[1, 0] = dup[1, 1]
    with pytest.raises(ValueError, match="perm row 1 is not a permutation"):
        permutation_logprob(logits, dup)
    with pytest.raises(RuntimeError, match="perm row 1 is not a permutation"):
        C.permutation_logprob(logits, dup, 1.0)
    out = perm.clone()
    out[0, 0] = 4
    with pytest.raises(ValueError, match="perm row 0 is not a permutation"):
        permutation_logprob(logits, out)
    with pytest.raises(RuntimeError, match="perm row 0 is not a permutation"):
        C.permutation_logprob_backward(torch.ones(2, 4), torch.ones(2, 4), logits, out, 1.0)
    nan = logits.clone()
    nan[0, 1, 2] = float("nan")
    with pytest.raises(ValueError, match="logits contains NaN"):
        permutation_logprob(nan, perm)
    with pytest.raises(ValueError, match=r"logits must be \(B, K, K\)"):
        permutation_logprob(logits[:, :3], perm)
    with pytest.raises(ValueError, match="perm must be"):
        permutation_logprob(logits, perm[:, :3])
    with pytest.raises(TypeError, match="perm must be int64"):
        permutation_logprob(logits, perm.int())
    with pytest.raises(ValueError, match="K = 0"):
        permutation_logprob(torch.zeros(2, 0, 0), torch.zeros(2, 0, dtype=torch.long))
    with pytest.raises(ValueError, match="temperature must be > 0"):
        permutation_logprob(logits, perm, temperature=-1.0)

"""flexrec::pool_sample: C++ kernel vs the reference, greedy/Gumbel semantics, errors."""

import pytest
import torch
from _op_helpers import KS, assert_close_to_fp64

from flexrec.ops import permutation_logprob, pool_sample, reference

C = torch.ops.flexrec_C


def random_used(B, K, gen):
    used = torch.rand(B, K, generator=gen) < 0.5
    used[torch.arange(B), torch.randint(0, K, (B,), generator=gen)] = False  # one allowed per row
    return used


def gumbel_noise(shape, gen, dtype=torch.float32):
    u = torch.rand(shape, generator=gen, dtype=torch.float64).clamp(1e-12, 1 - 1e-12)
    return (-torch.log(-torch.log(u))).to(dtype)


@pytest.mark.parametrize("K", KS)
@pytest.mark.parametrize("B", [1, 9, 64])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_cpp_matches_reference(K, B, dtype, gen):
    logits = torch.randn(B, K, generator=gen).to(dtype)
    used = random_used(B, K, gen)
    for gumbel in (None, gumbel_noise((B, K), gen)):
        for T in (1.0, 0.7):
            want_i, want_lp, want_u = reference.pool_sample(logits, used, gumbel, T)
            want64 = reference.pool_sample(logits.double(), used, None if gumbel is None else gumbel.double(), T)
            for fn in (C.pool_sample, pool_sample):
                i, lp, u = fn(logits, used, gumbel, T)
                assert torch.equal(i, want_i)
                assert torch.equal(u, want_u)
                assert lp.dtype == (torch.float32 if dtype == torch.bfloat16 else dtype)
                if dtype == torch.bfloat16:  # same index: compare against the float64 log-prob of it
                    want = torch.log_softmax(
                        (logits.double() / T).masked_fill(used, float("-inf")), -1
                    ).gather(-1, i[:, None])[:, 0]
                    torch.testing.assert_close(lp, want.float(), atol=1e-5, rtol=1e-5)
                elif torch.equal(want64[0], i):
                    assert_close_to_fp64(lp, want64[1], want_lp)
            assert not used[torch.arange(B), want_i].any()


def test_greedy_is_masked_argmax():
    logits = torch.tensor([[0.1, 5.0, 2.0, 2.0], [1.0, 1.0, 1.0, 1.0]])
    used = torch.tensor([[False, True, False, False], [True, False, False, False]])
    index, logprob, used_out = pool_sample(logits, used)
    assert index.tolist() == [2, 1]  # ties go to the lowest index
    # row 0: log softmax over {0.1, 2, 2} at 2 = 2 - log(e^0.1 + 2 e^2)
    assert logprob[0].item() == pytest.approx(2 - torch.tensor([0.1, 2.0, 2.0]).logsumexp(0).item(), abs=1e-6)
    assert logprob[1].item() == pytest.approx(-torch.log(torch.tensor(3.0)).item(), abs=1e-6)
    assert used_out.tolist() == [[False, True, True, False], [True, True, False, False]]
    assert used.sum().item() == 2  # the input is not modified


def test_gumbel_max_frequencies_match_softmax(gen):
    N, T = 40000, 0.8
    logits = torch.tensor([1.0, 0.0, -1.0, 2.0, 0.5])
    used = torch.tensor([False, False, True, False, False])
    probs = torch.softmax((logits / T).masked_fill(used, float("-inf")), -1)
    index, _, _ = pool_sample(logits.expand(N, 5), used.expand(N, 5), gumbel_noise((N, 5), gen), T)
    freq = torch.bincount(index, minlength=5).double() / N
    # standard error <= sqrt(0.25 / N) = 0.0025; 0.015 is 6 sigma
    torch.testing.assert_close(freq, probs.double(), atol=0.015, rtol=0)
    assert freq[2] == 0


@pytest.mark.parametrize("K", [1, 5, 30])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("impl", ["public", "reference"])
def test_sampled_logprobs_equal_permutation_logprob(K, dtype, impl, gen):
    sample = pool_sample if impl == "public" else reference.pool_sample
    plp = permutation_logprob if impl == "public" else reference.permutation_logprob
    B, T = 16, 0.9
    logits = torch.randn(B, K, K, generator=gen).to(dtype)
    used = torch.zeros(B, K, dtype=torch.bool)
    perm, step_lp = [], []
    for t in range(K):
        index, lp, used = sample(logits[:, t], used, gumbel_noise((B, K), gen), T)
        perm.append(index)
        step_lp.append(lp)
    perm = torch.stack(perm, 1)
    assert torch.equal(torch.sort(perm, -1).values, torch.arange(K).expand(B, K))
    lp, ent = plp(logits, perm, T)
    torch.testing.assert_close(lp, torch.stack(step_lp, 1), atol=1e-6, rtol=1e-6)
    assert (lp[:, -1] == 0).all() and (ent[:, -1].abs() < 1e-6).all()


def test_opcheck(gen):
    logits, used = torch.randn(4, 6, generator=gen), random_used(4, 6, gen)
    op = torch.ops.flexrec.pool_sample.default
    torch.library.opcheck(op, (logits, used, None, 1.0))
    torch.library.opcheck(op, (logits, used, gumbel_noise((4, 6), gen), 0.5))


def test_bad_inputs():
    logits, used = torch.randn(2, 3), torch.zeros(2, 3, dtype=torch.bool)
    full = used.clone()
    full[1] = True
    with pytest.raises(ValueError, match="row 1 has no allowed candidate"):
        pool_sample(logits, full)
    with pytest.raises(RuntimeError, match="row 1 has no allowed candidate"):
        C.pool_sample(logits, full, None, 1.0)
    with pytest.raises(ValueError, match="temperature must be > 0"):
        pool_sample(logits, used, temperature=0.0)
    with pytest.raises(ValueError, match="gumbel has shape"):
        pool_sample(logits, used, torch.zeros(2, 4))
    with pytest.raises(RuntimeError, match="gumbel has shape"):
        C.pool_sample(logits, used, torch.zeros(2, 4), 1.0)
    with pytest.raises(ValueError, match="contains NaN"):
        pool_sample(torch.tensor([[0.0, float("nan")]]), torch.zeros(1, 2, dtype=torch.bool))
    with pytest.raises(TypeError, match="used must be a bool"):
        pool_sample(logits, torch.zeros(2, 3))
    with pytest.raises(ValueError, match="used has shape"):
        pool_sample(logits, torch.zeros(2, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="must be on one device"):
        pool_sample(logits, used.to("meta"))
    with pytest.raises(ValueError, match="K = 0"):
        pool_sample(torch.randn(2, 0), torch.zeros(2, 0, dtype=torch.bool))

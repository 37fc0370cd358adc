"""Values the ops document as invalid or as a special case, on every CPU backend (ref, c, triton):
non-finite gains and variances are rejected; a pool step whose every unused candidate scores -inf
takes the lowest-index unused candidate with log-prob -inf; ``check=False`` reads no values."""

from contextlib import contextmanager

import pytest
import torch

from flexrec.ops import (
    backend,
    extension,
    candidate_logits,
    check_decode_inputs,
    decode_step,
    permutation_logprob,
    pool_sample,
    reference,
    swap_reward,
    swap_reward_var,
)

BACKENDS = ["ref", "c", "triton"]
NINF = float("-inf")
REFERENCE = {name: getattr(reference, name) for name in ("swap_reward", "swap_reward_var", "pool_sample", "decode_step")}


def kernel(op_name: str, name: str):
    """The CPU kernel of backend ``name`` (the reference function for ``ref``)."""
    return REFERENCE[op_name] if name == "ref" else backend.implementation(op_name, name, "cpu")


@contextmanager
def forced(op_name: str, name: str):
    """Run the public op on the CPU with backend ``name``, then restore the one chosen at import."""
    op, _ = backend.REGISTRY[op_name]
    op.register_kernel("cpu")(kernel(op_name, name))
    try:
        yield
    finally:
        op.register_kernel("cpu")(kernel(op_name, backend.CHOICES[(op_name, "cpu")]))


@pytest.mark.parametrize("name", BACKENDS)
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), NINF])
def test_non_finite_gains_are_rejected(name, bad):
    gains, var = torch.rand(3, 4), torch.rand(3, 4)
    gains[1, 2] = bad
    with forced("swap_reward", name), forced("swap_reward_var", name):
        with pytest.raises(ValueError, match=r"gains\[1, 2\] is .*; gains must be finite"):
            swap_reward(gains)
        with pytest.raises(ValueError, match=r"gains\[1, 2\] is .*; gains must be finite"):
            swap_reward_var(gains, var)
        with pytest.raises(ValueError, match=r"gain_var\[1, 2\] is .*; gain_var must be finite"):
            swap_reward_var(var, gains)


@pytest.mark.parametrize("name", BACKENDS)
def test_negative_variances_are_rejected(name):
    var = torch.rand(2, 5)
    var[1, 3] = -0.5
    with forced("swap_reward_var", name), pytest.raises(
        ValueError, match=r"gain_var has negative entries \(gain_var\[1, 3\] is -0.5\)"
    ):
        swap_reward_var(torch.rand(2, 5), var)


@pytest.mark.parametrize("name", BACKENDS)
def test_negative_gains_mean_the_same_on_every_backend(name, gen):
    # Documented, not rejected: the formulas are linear in the gains. Row 0 mixes signs; row 1 has
    # no positive gain, so IDCG <= 0 and every reward is 0.
    gains = torch.randn(2, 6, generator=gen, dtype=torch.float64)
    gains[0, 0], gains[1] = 2.0, -gains[1].abs()
    var = torch.rand(2, 6, generator=gen, dtype=torch.float64)
    for mode in reference.REWARD_MODES:
        with forced("swap_reward", name), forced("swap_reward_var", name):
            got, got_var = swap_reward(gains, 3, mode), swap_reward_var(gains, var, 3, mode)
        torch.testing.assert_close(got, reference.swap_reward(gains, 3, mode))
        torch.testing.assert_close(got_var, reference.swap_reward_var(gains, var, 3, mode))
        assert (got[1] == 0).all() and (got_var[1] == 0).all()


def dead_rows(dtype):
    """Rows 0, 2 and 3 have every unused candidate at -inf; row 1 is an ordinary row.
    Expected picks: the lowest-index unused candidate (1, 0, 4), and row 1's argmax (0)."""
    logits = torch.tensor(
        [[NINF] * 5, [3.0, NINF, 2.0, 0.5, 1.0], [NINF] * 5, [5.0, 4.0, 3.0, 2.0, NINF]], dtype=dtype
    )
    used = torch.tensor(
        [[True, False, True, False, False], [False, False, True, True, False], [False] * 5, [True] * 4 + [False]]
    )
    return logits, used


@pytest.mark.parametrize("name", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("noisy", [False, True])
def test_every_unused_candidate_at_minus_inf(name, dtype, noisy, gen):
    logits, used = dead_rows(dtype)
    gumbel = torch.randn(logits.shape, generator=gen, dtype=dtype).abs() * 5 if noisy else None
    for fn in (kernel("pool_sample", name), pool_sample):
        with forced("pool_sample", name):
            index, logprob, used_out = fn(logits, used, gumbel, 0.7)
        assert index[[0, 2, 3]].tolist() == [1, 0, 4]  # never a used candidate, whatever the noise
        assert not used[torch.arange(4), index].any()
        assert (logprob[[0, 2, 3]] == NINF).all()
        assert torch.isfinite(logprob[1])
        assert torch.equal(used_out, used.scatter(1, index[:, None], True))
    if not noisy:
        assert index[1] == 0


def dead_decode_inputs(gen):
    """decode_step inputs whose logits are dead_rows(float64): zero weights, the logits as bias
    (-inf on every candidate token of rows 0 and 2, and on row 3's only unused one)."""
    logits, used = dead_rows(torch.float64)
    B, K, H = logits.shape[0], logits.shape[1], 7
    hidden = torch.randn(B, H, generator=gen, dtype=torch.float64)
    weight = torch.zeros(B * K, H, dtype=torch.float64)
    cand_ids = torch.randperm(B * K, generator=gen).view(B, K)
    bias = torch.zeros(B * K, dtype=torch.float64)
    bias[cand_ids.flatten()] = logits.flatten()
    return hidden, weight, cand_ids, used, bias


@pytest.mark.parametrize("name", BACKENDS)
@pytest.mark.parametrize("noisy", [False, True])
def test_decode_step_follows_the_same_rule(name, noisy, gen):
    hidden, weight, cand_ids, used, bias = dead_decode_inputs(gen)
    gumbel = torch.randn(used.shape, generator=gen, dtype=torch.float64) if noisy else None
    with forced("decode_step", name):
        fused = decode_step(hidden, weight, cand_ids, used, gumbel, 0.7, bias)
    unfused = pool_sample(candidate_logits(hidden, weight, cand_ids, bias), used, gumbel, 0.7)
    direct = kernel("decode_step", name)(hidden, weight, cand_ids, used, gumbel, 0.7, bias)
    for got in (fused, direct):
        assert torch.equal(got[0], unfused[0]) and torch.equal(got[2], unfused[2])
        if name == "c":  # the fused C++ step is the unfused C++ ops to the bit
            assert torch.equal(got[1], unfused[1])
        torch.testing.assert_close(got[1], unfused[1])  # -inf where unfused has -inf
    assert fused[0][[0, 2, 3]].tolist() == [1, 0, 4]
    assert (fused[1][[0, 2, 3]] == NINF).all()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
@pytest.mark.parametrize("name", ["cuda", "triton"])
@pytest.mark.parametrize("noisy", [False, True])
def test_every_unused_candidate_at_minus_inf_on_gpu(name, noisy, gen):
    if name == "cuda" and not extension.has_cuda_kernels():
        pytest.skip("flexrec._C was built without CUDA kernels (FLEXREC_CUDA=1)")
    logits, used = dead_rows(torch.float32)
    gumbel = torch.randn(used.shape, generator=gen).abs() * 5 if noisy else None

    def cuda(x):
        return None if x is None else x.cuda()

    index, logprob, _ = backend.implementation("pool_sample", name, "cuda")(cuda(logits), cuda(used), cuda(gumbel), 0.7)
    assert index.cpu()[[0, 2, 3]].tolist() == [1, 0, 4]
    assert (logprob.cpu()[[0, 2, 3]] == NINF).all() and torch.isfinite(logprob.cpu()[1])
    hidden, weight, cand_ids, used, bias = (x.cuda() for x in dead_decode_inputs(gen))
    step = backend.implementation("decode_step", name, "cuda")
    index, logprob, _ = step(hidden, weight, cand_ids, used, cuda(None if gumbel is None else gumbel.double()), 0.7, bias)
    assert index.cpu()[[0, 2, 3]].tolist() == [1, 0, 4]
    assert (logprob.cpu()[[0, 2, 3]] == NINF).all()


def _no_value_reads(monkeypatch):
    """Make every read of a tensor's value on the host (bool(), int(), .item(), .tolist()) fail."""
    def boom(*args, **kwargs):
        raise AssertionError("a value check read a tensor's value (a host sync on a GPU)")

    for attr in ("__bool__", "__int__", "__float__", "item", "tolist"):
        monkeypatch.setattr(torch.Tensor, attr, boom)


def test_check_false_reads_no_values(monkeypatch, gen):
    B, K, H, V = 3, 4, 5, 9
    gains, var = torch.rand(B, K, generator=gen), torch.rand(B, K, generator=gen)
    logits, used = torch.randn(B, K, generator=gen), torch.zeros(B, K, dtype=torch.bool)
    step_logits, perm = torch.randn(B, K, K, generator=gen), torch.stack([torch.randperm(K) for _ in range(B)])
    hidden, weight = torch.randn(B, H, generator=gen), torch.randn(V, H, generator=gen)
    ids = torch.stack([torch.randperm(V)[:K] for _ in range(B)])
    calls = [
        lambda check: swap_reward(gains, 2, "causal", check=check),
        lambda check: swap_reward_var(gains, var, 0, "suffix", check=check),
        lambda check: pool_sample(logits, used, None, 0.5, check=check),
        lambda check: permutation_logprob(step_logits, perm, 0.8, check=check),
        lambda check: candidate_logits(hidden, weight, ids, check=check),
        lambda check: decode_step(hidden, weight, ids, used, None, 1.0, None, check=check),
    ]
    want = [call(True) for call in calls]
    _no_value_reads(monkeypatch)
    got = []
    for call in calls:
        with pytest.raises(AssertionError, match="a value check read"):
            call(True)  # the checks do read values: the trap works
        got.append(call(False))
    monkeypatch.undo()
    for g, w in zip(got, want):
        for x, y in zip(g if isinstance(g, tuple) else (g,), w if isinstance(w, tuple) else (w,)):
            assert torch.equal(x, y)


def test_check_false_skips_value_checks_only():
    gains = torch.tensor([[1.0, float("nan")]])
    swap_reward(gains, check=False)  # the caller promised valid gains: no error, no promise on the result
    with pytest.raises(ValueError, match="must be 2-D"):
        swap_reward(torch.rand(4), check=False)  # shapes, dtypes and modes are still checked
    with pytest.raises(ValueError, match="unknown reward mode"):
        swap_reward(torch.rand(2, 3), mode="pairwise", check=False)


def test_check_decode_inputs_checks_what_decode_step_checks():
    hidden, weight = torch.randn(2, 3), torch.randn(6, 3)
    ids = torch.tensor([[0, 1, 2], [3, 4, 5]])
    check_decode_inputs(hidden, weight, ids)  # valid; used=None is the first step's empty pool
    with pytest.raises(ValueError, match="names a candidate twice"):
        check_decode_inputs(hidden, weight, torch.tensor([[0, 1, 1], [3, 4, 5]]))
    with pytest.raises(ValueError, match=r"must lie in \[0, V = 6\)"):
        check_decode_inputs(hidden, weight, ids + 1)
    with pytest.raises(ValueError, match="temperature must be > 0"):
        check_decode_inputs(hidden, weight, ids, temperature=0.0)
    with pytest.raises(ValueError, match="row 1 has no allowed candidate"):
        check_decode_inputs(hidden, weight, ids, torch.tensor([[False] * 3, [True] * 3]))
    with pytest.raises(ValueError, match="gumbel has shape"):
        check_decode_inputs(hidden, weight, ids, gumbel=torch.zeros(2, 4))

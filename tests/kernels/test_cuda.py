"""The CUDA kernels (torch.ops.flexrec_C.* on cuda tensors) and the Triton launchers on cuda
tensors, against the reference, on a GPU. Every test skips cleanly without one."""

import pytest
import torch

from flexrec.ops import extension as _ext
from flexrec.ops import reference as R

from _kernel_helpers import ODD_KS, TOL, assert_close_lowp, gumbel_noise, to64

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs an NVIDIA GPU"),
]

DEV = "cuda"


def providers():
    """(name, module-like) pairs: the compiled CUDA ops when built, and the Triton launchers."""
    out = []
    if _ext.has_cuda_kernels():
        out.append(("cuda", None))
    try:
        import triton  # noqa: F401

        out.append(("triton", None))
    except ImportError:
        pass
    return [name for name, _ in out]


def impl(provider: str, op: str):
    if provider == "cuda":
        return getattr(torch.ops.flexrec_C, op)
    import importlib

    base = op.replace("_backward", "")
    return getattr(importlib.import_module(f"flexrec.kernels.{base}"), op)


PROVIDERS = providers() if torch.cuda.is_available() else ["cuda", "triton"]
DTYPES = (torch.float32, torch.float64, torch.bfloat16)


def check(out, ref_lowp, ref64, dtype, what):
    if dtype == torch.bfloat16:
        assert_close_lowp(out, ref_lowp, ref64, what, atol=1e-3)
    else:
        torch.testing.assert_close(out, ref_lowp, **TOL[dtype])


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("K", ODD_KS + (1000,))
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("mode", R.REWARD_MODES)
def test_swap_reward_and_var(provider, K, dtype, mode):
    g = (2.0 ** torch.randint(0, 4, (7, K), device=DEV).double() - 1).to(dtype)
    g[0] = 0
    s = torch.rand(7, K, device=DEV, dtype=dtype)
    for k in (0, 3):
        out = impl(provider, "swap_reward")(g, k, mode)
        check(out, R.swap_reward(g, k, mode), R.swap_reward(to64(g), k, mode), dtype, "swap_reward")
        var = impl(provider, "swap_reward_var")(g, s, k, mode)
        check(var, R.swap_reward_var(g, s, k, mode), R.swap_reward_var(to64(g), to64(s), k, mode),
              dtype, "swap_reward_var")


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("K", ODD_KS + (1000,))
@pytest.mark.parametrize("dtype", DTYPES)
def test_pool_sample(provider, K, dtype):
    logits = torch.randn(33, K, device=DEV).to(dtype)
    used = torch.rand(33, K, device=DEV) < 0.5
    used[:, 0] = False
    for gumbel in (None, gumbel_noise(33, K, DEV)):
        got = impl(provider, "pool_sample")(logits, used, gumbel, 0.7)
        want = R.pool_sample(logits, used, gumbel, 0.7)
        assert torch.equal(got[0], want[0]) and torch.equal(got[2], want[2])
        assert got[1].dtype == want[1].dtype
        torch.testing.assert_close(got[1], want[1], **TOL.get(dtype, TOL[torch.float32]))


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("K", ODD_KS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_candidate_logits_forward_backward(provider, K, dtype):
    N, H, V = 9, 300, max(K + 5, 64)
    hidden = torch.randn(N, H, device=DEV, dtype=torch.float64).to(dtype)
    weight = torch.randn(V, H, device=DEV, dtype=torch.float64).to(dtype)
    bias = torch.randn(V, device=DEV, dtype=torch.float64).to(dtype)
    ids = torch.stack([torch.randperm(V, device=DEV)[:K] for _ in range(N)])
    grad = torch.randn(N, K, device=DEV).to(dtype)
    for b in (None, bias):
        out = impl(provider, "candidate_logits")(hidden, weight, ids, b)
        check(out, R.candidate_logits(hidden, weight, ids, b),
              R.candidate_logits(to64(hidden), to64(weight), ids, to64(b)), dtype, "logits")
        got = impl(provider, "candidate_logits_backward")(grad, hidden, weight, ids, b is not None)
        want = R.candidate_logits_backward(grad, hidden, weight, ids, b is not None)
        want64 = R.candidate_logits_backward(*map(to64, (grad, hidden, weight, ids)), b is not None)
        for x, y, y64 in zip(got, want, want64):
            if y is None:
                assert x.numel() == 0
                continue
            assert x.dtype == y.dtype and x.shape == y.shape
            if dtype == torch.bfloat16:
                assert_close_lowp(x, y, y64, "candidate_logits backward", atol=1e-2)
            else:
                torch.testing.assert_close(x, y, atol=1e-4 if dtype == torch.float32 else 1e-10,
                                           rtol=1e-4 if dtype == torch.float32 else 1e-10)


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("K", ODD_KS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_permutation_logprob_forward_backward(provider, K, dtype):
    B = 17
    logits = (torch.randn(B, K, K, device=DEV, dtype=torch.float64) * 2).to(dtype)
    perm = torch.stack([torch.randperm(K, device=DEV) for _ in range(B)])
    got = impl(provider, "permutation_logprob")(logits, perm, 0.8)
    want = R.permutation_logprob(logits, perm, 0.8)
    for x, y in zip(got, want):
        assert x.dtype == y.dtype
        torch.testing.assert_close(x, y, **TOL.get(dtype, TOL[torch.float32]))
    gl = torch.randn(B, K, device=DEV).to(want[0].dtype)
    ge = torch.randn(B, K, device=DEV).to(want[0].dtype)
    g = impl(provider, "permutation_logprob_backward")(gl, ge, logits, perm, 0.8)
    w = R.permutation_logprob_backward(gl, ge, logits, perm, 0.8)
    w64 = R.permutation_logprob_backward(gl.double(), ge.double(), to64(logits), perm, 0.8)
    check(g, w, w64, dtype, "permutation_logprob backward")


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("K", ODD_KS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_decode_step(provider, K, dtype):
    B, H, V = 19, 576, 1000
    hidden = torch.randn(B, H, device=DEV).to(dtype)
    weight = torch.randn(V, H, device=DEV).to(dtype)
    bias = torch.randn(V, device=DEV).to(dtype)
    ids = torch.stack([torch.randperm(V, device=DEV)[:K] for _ in range(B)])
    used = torch.rand(B, K, device=DEV) < 0.4
    used[:, -1] = False
    for gumbel, b in ((None, None), (gumbel_noise(B, K, DEV), bias)):
        got = impl(provider, "decode_step")(hidden, weight, ids, used, gumbel, 0.8, b)
        # The same provider's two-op path: bit-equal logits, so the same candidate.
        logits = impl(provider, "candidate_logits")(hidden, weight, ids, b)
        want = impl(provider, "pool_sample")(logits, used, gumbel, 0.8)
        assert torch.equal(got[0], want[0]) and torch.equal(got[2], want[2])
        torch.testing.assert_close(got[1], want[1], atol=1e-5, rtol=1e-5)
        ref = R.decode_step(hidden, weight, ids, used, gumbel, 0.8, b)
        if dtype != torch.bfloat16:  # bf16 logits may round differently from cuBLAS's
            assert torch.equal(got[0], ref[0])
            torch.testing.assert_close(got[1], ref[1], **TOL[dtype])


def test_cuda_kernels_reject_cpu_tensors_and_large_k():
    if not _ext.has_cuda_kernels():
        pytest.skip("flexrec._C was built without CUDA kernels")
    g = torch.rand(2, 2000, device=DEV)
    with pytest.raises(RuntimeError, match="K <= 1024"):
        torch.ops.flexrec_C.swap_reward(g, 0, "causal")


def test_kernels_run_on_the_current_stream():
    if not _ext.has_cuda_kernels():
        pytest.skip("flexrec._C was built without CUDA kernels")
    s = torch.cuda.Stream()
    g = torch.rand(64, 30, device=DEV)
    with torch.cuda.stream(s):
        out = torch.ops.flexrec_C.swap_reward(g, 0, "causal")
    s.synchronize()
    torch.testing.assert_close(out, R.swap_reward(g, 0, "causal"))

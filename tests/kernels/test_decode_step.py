"""The fused decode step: Triton kernel (interpreted), the public op on its CPU backend, and every
public op with FLEXREC_BACKEND=triton in a subprocess."""

import os
import subprocess
import sys
import textwrap

import pytest
import torch

import flexrec.ops as ops
from flexrec.ops import backend
from flexrec.ops import reference as R

from _kernel_helpers import ODD_KS, TOL, gumbel_noise

triton = pytest.importorskip("triton")
if os.environ.get("TRITON_INTERPRET") != "1":
    pytest.skip("Triton runs on CPU tensors only with TRITON_INTERPRET=1 (set by conftest.py without a "
                "GPU); on a GPU, tests/kernels/test_cuda.py checks the kernels", allow_module_level=True)

from flexrec.kernels.candidate_logits import candidate_logits as tr_candidate_logits  # noqa: E402
from flexrec.kernels.decode_step import decode_step as tr_decode_step  # noqa: E402
from flexrec.kernels.pool_sample import pool_sample as tr_pool_sample  # noqa: E402


def inputs(B, K, H=37, V=None, dtype=torch.float32, device="cpu"):
    V = V or max(2 * K, 40)
    hidden = torch.randn(B, H, device=device).to(dtype)
    weight = torch.randn(V, H, device=device).to(dtype)
    bias = torch.randn(V, device=device).to(dtype)
    ids = torch.stack([torch.randperm(V, device=device)[:K] for _ in range(B)])
    used = torch.rand(B, K, device=device) < 0.4
    used[:, torch.randint(0, K, (1,)).item()] = False
    return hidden, weight, ids, used, bias


@pytest.mark.parametrize("K", ODD_KS)
@pytest.mark.parametrize("dtype", (torch.float32, torch.bfloat16))
def test_triton_decode_step_equals_candidate_logits_then_pool_sample(K, dtype):
    hidden, weight, ids, used, bias = inputs(4, K, dtype=dtype)
    for gumbel, b, temperature in ((None, None, 1.0), (gumbel_noise(4, K), bias, 0.7)):
        index, logprob, used_out = tr_decode_step(hidden, weight, ids, used, gumbel, temperature, b)
        logits = tr_candidate_logits(hidden, weight, ids, b)
        want = tr_pool_sample(logits, used, gumbel, temperature)
        assert torch.equal(index, want[0])
        assert torch.equal(used_out, want[2])
        assert logprob.dtype == want[1].dtype
        torch.testing.assert_close(logprob, want[1], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("K", (1, 5, 31))
@pytest.mark.parametrize("dtype", (torch.float32, torch.float64))
def test_triton_decode_step_equals_reference(K, dtype):
    hidden, weight, ids, used, bias = inputs(4, K, H=70, dtype=dtype)
    gumbel = gumbel_noise(4, K).to(dtype)
    got = tr_decode_step(hidden, weight, ids, used, gumbel, 0.9, bias)
    want = R.decode_step(hidden, weight, ids, used, gumbel, 0.9, bias)
    assert torch.equal(got[0], want[0]) and torch.equal(got[2], want[2])
    torch.testing.assert_close(got[1], want[1], **TOL[dtype])


@pytest.mark.parametrize("K", ODD_KS)
@pytest.mark.parametrize("dtype", (torch.float32, torch.float64, torch.bfloat16))
def test_public_decode_step_cpu(K, dtype):
    hidden, weight, ids, used, bias = inputs(6, K, dtype=dtype)
    for gumbel, b in ((None, None), (gumbel_noise(6, K), bias)):
        got = ops.decode_step(hidden, weight, ids, used, gumbel, 0.8, b)
        # Fused and unfused public ops agree to the bit (the policy's rollouts rely on it).
        unfused = ops.pool_sample(ops.candidate_logits(hidden, weight, ids, b), used, gumbel, 0.8)
        for x, y in zip(got, unfused):
            assert x.dtype == y.dtype and torch.equal(x, y)
        assert not torch.equal(got[2], used) and torch.equal(used, used.clone()), "used not modified"
        if dtype == torch.bfloat16 and b is not None:
            continue  # the reference rounds the dot and the bias separately; candidate_logits' tests cover it
        logits = R.candidate_logits(hidden, weight, ids, b)
        want = R.pool_sample(logits, used, gumbel, 0.8)
        assert torch.equal(got[0], want[0]) and torch.equal(got[2], want[2])
        assert got[1].dtype == want[1].dtype
        torch.testing.assert_close(got[1], want[1], atol=1e-5, rtol=1e-5)


def test_decode_step_decodes_a_whole_permutation():
    B, K = 3, 7
    hidden, weight, ids, _, bias = inputs(B, K)
    used = torch.zeros(B, K, dtype=torch.bool)
    picks = []
    for _ in range(K):
        index, _, used = ops.decode_step(hidden, weight, ids, used, gumbel_noise(B, K), 1.0, bias)
        picks.append(index)
    perm = torch.stack(picks, dim=1)
    assert torch.equal(perm.sort(dim=1).values, torch.arange(K).expand(B, K)), "a valid permutation"


def test_decode_step_backend_is_reported():
    assert ("decode_step", "cpu") in backend.CHOICES


def test_decode_step_opcheck():
    hidden, weight, ids, used, bias = inputs(3, 5)
    args = (hidden, weight, ids, used, gumbel_noise(3, 5), 0.9, bias)
    torch.library.opcheck(torch.ops.flexrec.decode_step.default, args)


def test_decode_step_compiles_fullgraph():
    hidden, weight, ids, used, bias = inputs(3, 5)
    fn = torch.compile(ops.decode_step, fullgraph=True, backend="eager")
    got = fn(hidden, weight, ids, used, None, 1.0, bias)
    want = ops.decode_step(hidden, weight, ids, used, None, 1.0, bias)
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])


@pytest.mark.parametrize(
    "change, error",
    [
        (lambda a: a.update(weight=a["weight"].double()), TypeError),
        (lambda a: a.update(hidden=a["hidden"][:, :-1]), ValueError),
        (lambda a: a.update(ids=a["ids"].int()), TypeError),
        (lambda a: a.update(used=a["used"].float()), TypeError),
        (lambda a: a.update(used=a["used"][:, :-1]), ValueError),
        (lambda a: a["ids"].__setitem__((0, 1), a["ids"][0, 0].item()), ValueError),  # duplicate
        (lambda a: a["ids"].__setitem__((0, 1), 10_000), ValueError),  # out of range
        (lambda a: a["used"].fill_(True), ValueError),  # no candidate left
        (lambda a: a.update(ids=a["ids"][:, :0], used=a["used"][:, :0]), ValueError),  # K = 0
        (lambda a: a.update(temperature=0.0), ValueError),
        (lambda a: a.update(bias=a["bias"][:-1]), ValueError),
    ],
)
def test_decode_step_rejects_bad_inputs(change, error):
    hidden, weight, ids, used, bias = inputs(3, 5)
    a = dict(hidden=hidden, weight=weight, ids=ids, used=used, bias=bias, temperature=1.0)
    change(a)
    with pytest.raises(error):
        ops.decode_step(a["hidden"], a["weight"], a["ids"], a["used"], None, a["temperature"], a["bias"])


TRITON_BACKEND_SCRIPT = textwrap.dedent(
    """
    import torch
    import flexrec.ops as ops
    from flexrec.ops import backend
    from flexrec.ops import reference as R

    ops_ = ["swap_reward", "swap_reward_var", "pool_sample", "candidate_logits",
            "candidate_logits_backward", "permutation_logprob", "permutation_logprob_backward",
            "decode_step"]
    for op in ops_:
        assert backend.CHOICES[(op, "cpu")] == "triton", (op, backend.CHOICES.get((op, "cpu")))
    torch.manual_seed(0)
    B, K, H, V = 3, 5, 19, 12
    g = torch.randint(0, 4, (B, K)).float()
    torch.testing.assert_close(ops.swap_reward(g, 3), R.swap_reward(g, 3))
    s = torch.rand(B, K)
    torch.testing.assert_close(ops.swap_reward_var(g, s, 0, "suffix"), R.swap_reward_var(g, s, 0, "suffix"))
    logits = torch.randn(B, K)
    used = torch.zeros(B, K, dtype=torch.bool); used[:, 0] = True
    got, want = ops.pool_sample(logits, used, None, 0.5), R.pool_sample(logits, used, None, 0.5)
    assert torch.equal(got[0], want[0]) and torch.equal(got[2], want[2])
    torch.testing.assert_close(got[1], want[1])
    for with_bias in (False, True):
        h = torch.randn(B, H, dtype=torch.float64, requires_grad=True)
        w = torch.randn(V, H, dtype=torch.float64, requires_grad=True)
        b = torch.randn(V, dtype=torch.float64, requires_grad=True) if with_bias else None
        ids = torch.stack([torch.randperm(V)[:K] for _ in range(B)])
        out = ops.candidate_logits(h, w, ids, b)
        ref = R.candidate_logits(h, w, ids, b)
        torch.testing.assert_close(out, ref)
        grad = torch.randn_like(out)
        leaves = [h, w] + ([b] if with_bias else [])
        got = torch.autograd.grad(out, leaves, grad)
        want = torch.autograd.grad(ref, leaves, grad)
        for x, y in zip(got, want):
            torch.testing.assert_close(x, y)
    L = torch.randn(B, K, K, dtype=torch.float64, requires_grad=True)
    perm = torch.stack([torch.randperm(K) for _ in range(B)])
    lp, ent = ops.permutation_logprob(L, perm, 0.8)
    rlp, rent = R.permutation_logprob(L, perm, 0.8)
    torch.testing.assert_close(lp, rlp); torch.testing.assert_close(ent, rent)
    (g1,) = torch.autograd.grad(lp.sum() + 0.1 * ent.sum(), L)
    (g2,) = torch.autograd.grad(rlp.sum() + 0.1 * rent.sum(), L)
    torch.testing.assert_close(g1, g2)
    h, w = torch.randn(B, H), torch.randn(V, H)
    got = ops.decode_step(h, w, ids, used, None, 1.0, None)
    want = R.decode_step(h, w, ids, used, None, 1.0, None)
    assert torch.equal(got[0], want[0]) and torch.equal(got[2], want[2])
    print("triton backend ok")
    """
)


def test_public_ops_with_triton_backend_subprocess(tmp_path):
    env = dict(os.environ, FLEXREC_BACKEND="triton", TRITON_INTERPRET="1")
    # cwd outside the checkout: `python -c` puts the cwd first on sys.path, and the checkout's
    # flexrec/ has no compiled extension when the package was installed non-editable (as in CI).
    proc = subprocess.run([sys.executable, "-c", TRITON_BACKEND_SCRIPT], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "triton backend ok" in proc.stdout

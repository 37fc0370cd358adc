"""flexrec::candidate_logits (+ backward): C++ kernels vs the reference, gradcheck, errors."""

import pytest
import torch
from _op_helpers import KS, assert_close_to_fp64

from flexrec.ops import candidate_logits, reference

C = torch.ops.flexrec_C


def make(N, K, H, V, dtype, gen, bias=True):
    hidden = torch.randn(N, H, generator=gen).to(dtype)
    weight = torch.randn(V, H, generator=gen).to(dtype)
    ids = torch.stack([torch.randperm(V, generator=gen)[:K] for _ in range(N)])
    b = torch.randn(V, generator=gen).to(dtype) if bias else None
    return hidden, weight, ids, b


@pytest.mark.parametrize("K", KS)
@pytest.mark.parametrize("N,H", [(1, 3), (9, 64)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("with_bias", [False, True])
def test_cpp_matches_reference(K, N, H, dtype, with_bias, gen):
    V = 131
    hidden, weight, ids, bias = make(N, K, H, V, dtype, gen, with_bias)
    d = lambda x: None if x is None else x.double()  # noqa: E731
    want = reference.candidate_logits(d(hidden), d(weight), ids, d(bias))
    low = reference.candidate_logits(hidden, weight, ids, bias)
    assert_close_to_fp64(C.candidate_logits(hidden, weight, ids, bias), want, low)
    assert_close_to_fp64(candidate_logits(hidden, weight, ids, bias), want, low)

    grad = torch.randn(N, K, generator=gen).to(dtype)
    want_b = reference.candidate_logits_backward(grad.double(), d(hidden), d(weight), ids, with_bias)
    low_b = reference.candidate_logits_backward(grad, hidden, weight, ids, with_bias)
    got_b = C.candidate_logits_backward(grad, hidden, weight, ids, with_bias)
    for got, w, lo in zip(got_b[:2], want_b[:2], low_b[:2]):
        assert_close_to_fp64(got, w, lo)
    if with_bias:
        assert_close_to_fp64(got_b[2], want_b[2], low_b[2])
    else:
        assert got_b[2].numel() == 0


def test_autograd_through_public_op(gen):
    hidden, weight, ids, bias = make(5, 4, 8, 20, torch.float32, gen)
    ids[1, 0] = ids[0, 0]  # the same token in two rows: its weight row gets both gradients
    hidden.requires_grad_(), weight.requires_grad_(), bias.requires_grad_()
    grad = torch.randn(5, 4, generator=gen)
    candidate_logits(hidden, weight, ids, bias).backward(grad)
    h2, w2, b2 = (x.detach().clone().requires_grad_() for x in (hidden, weight, bias))
    reference.candidate_logits(h2, w2, ids, b2).backward(grad)
    for a, b in ((hidden, h2), (weight, w2), (bias, b2)):
        torch.testing.assert_close(a.grad, b.grad, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("with_bias", [False, True])
def test_gradcheck(with_bias, gen):
    hidden, weight, ids, bias = make(3, 4, 5, 9, torch.float64, gen, with_bias)
    inputs = [hidden.requires_grad_(), weight.requires_grad_(), ids]
    inputs.append(bias.requires_grad_() if with_bias else None)
    assert torch.autograd.gradcheck(candidate_logits, inputs)


def test_opcheck(gen):
    op = torch.ops.flexrec.candidate_logits.default
    for with_bias in (False, True):
        hidden, weight, ids, bias = make(3, 4, 5, 9, torch.float32, gen, with_bias)
        torch.library.opcheck(op, (hidden.requires_grad_(), weight.requires_grad_(), ids, bias))
    grad = torch.randn(3, 4, generator=gen)
    # The backward op is not itself differentiable (no double backward), so no inputs need grad.
    torch.library.opcheck(
        torch.ops.flexrec.candidate_logits_backward.default,
        (grad, hidden.detach(), weight.detach(), ids, True),
    )


def test_bad_inputs(gen):
    hidden, weight, ids, _ = make(2, 3, 4, 10, torch.float32, gen, False)
    with pytest.raises(ValueError, match=r"cand_ids must lie in \[0, V = 10\)"):
        candidate_logits(hidden, weight, ids + 10)
    with pytest.raises(RuntimeError, match=r"cand_ids must lie in \[0, V = 10\)"):
        C.candidate_logits(hidden, weight, ids - 10, None)
    dup = ids.clone()
    dup[1, 2] = dup[1, 0]
    with pytest.raises(ValueError, match="row 1 names a candidate twice"):
        candidate_logits(hidden, weight, dup)
    with pytest.raises(TypeError, match="cand_ids must be int64"):
        candidate_logits(hidden, weight, ids.int())
    with pytest.raises(ValueError, match="weight must be"):
        candidate_logits(hidden, torch.randn(10, 5), ids)
    with pytest.raises(ValueError, match="K = 0"):
        candidate_logits(hidden, weight, ids[:, :0])
    with pytest.raises(ValueError, match="2 rows but hidden has 3"):
        candidate_logits(torch.randn(3, 4), weight, ids)
    with pytest.raises(ValueError, match="must be on one device"):
        candidate_logits(hidden, weight.to("meta"), ids)
    with pytest.raises(TypeError, match="cast one of them"):
        candidate_logits(hidden.double(), weight, ids)
    with pytest.raises(ValueError, match=r"bias must be \(V,\)"):
        candidate_logits(hidden, weight, ids, torch.zeros(3))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("K", [1, 5, 30])
def test_frozen_head_gradient_matches_reference_without_a_weight_gradient(dtype, K):
    # With weight.requires_grad False the backward takes the embedding-bag path, which never
    # allocates the (V, H) weight gradient; grad_hidden must equal the reference's.
    N, H, V = 9, 24, 97
    hidden = torch.randn(N, H, dtype=dtype, requires_grad=True)
    weight = torch.randn(V, H, dtype=dtype)
    cand_ids = torch.stack([torch.randperm(V)[:K] for _ in range(N)])
    grad = torch.randn(N, K, dtype=dtype)
    (got,) = torch.autograd.grad(candidate_logits(hidden, weight, cand_ids), hidden, grad)
    (want,) = torch.autograd.grad(reference.candidate_logits(hidden, weight, cand_ids), hidden, grad)
    torch.testing.assert_close(got, want)
    assert weight.grad is None

"""The ops trace into one graph under torch.compile(fullgraph=True), forward and backward."""

import torch

from flexrec.ops import candidate_logits, permutation_logprob, pool_sample, swap_reward, swap_reward_var


def rollout_loss(hidden, weight, cand_ids, perm, gains, gain_var, used):
    B, K = cand_ids.shape
    H = hidden.shape[-1]
    logits = candidate_logits(
        hidden.reshape(B * K, H), weight, cand_ids.repeat_interleave(K, 0)
    ).reshape(B, K, K)
    logprob, entropy = permutation_logprob(logits, perm, 0.9)
    advantage = swap_reward(gains, 0, "causal") / (swap_reward_var(gains, gain_var, 0, "causal") + 1.0)
    index, step_lp, _ = pool_sample(logits[:, 0].detach(), used, None, 0.9)
    return -(advantage * logprob).sum() - 0.01 * entropy.sum(), index, step_lp


def test_compile_fullgraph_forward_and_backward():
    gen = torch.Generator().manual_seed(0)
    B, K, H, V = 3, 5, 8, 20
    hidden = torch.randn(B, K, H, generator=gen, requires_grad=True)
    weight = torch.randn(V, H, generator=gen, requires_grad=True)
    cand_ids = torch.stack([torch.randperm(V, generator=gen)[:K] for _ in range(B)])
    perm = torch.argsort(torch.rand(B, K, generator=gen), -1)
    gains = torch.rand(B, K, generator=gen)
    gain_var = torch.rand(B, K, generator=gen)
    used = torch.zeros(B, K, dtype=torch.bool)
    args = (hidden, weight, cand_ids, perm, gains, gain_var, used)

    eager = rollout_loss(*args)
    g_eager = torch.autograd.grad(eager[0], (hidden, weight))
    # aot_eager traces exactly what inductor would (dynamo + AOTAutograd through the fake kernels
    # and register_autograd) without compiling C++ for the graph, which takes minutes on 2 cores.
    compiled = torch.compile(rollout_loss, fullgraph=True, backend="aot_eager")
    out = compiled(*args)
    g_comp = torch.autograd.grad(out[0], (hidden, weight))
    torch.testing.assert_close(out[0], eager[0])
    assert torch.equal(out[1], eager[1])
    for a, b in zip(g_comp, g_eager):
        torch.testing.assert_close(a, b)

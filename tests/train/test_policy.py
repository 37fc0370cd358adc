"""The ranking policy: valid permutations, and rollout log-probs equal to the training forward's."""

import pytest
import torch

from flexrec.models import left_pad, set_checkpointing


def _is_permutation(perm, K):
    return torch.equal(torch.sort(perm, -1).values, torch.arange(K).expand_as(perm))


@pytest.mark.parametrize("greedy", [False, True])
def test_rollouts_are_valid_permutations(world_and_policy, greedy):
    _, _, policy, _, batch = world_and_policy
    gen = torch.Generator().manual_seed(0)
    out = policy.rank(batch.input_ids, batch.attention_mask, 6, samples=4, greedy=greedy, generator=gen)
    B = batch.input_ids.shape[0]
    assert out.perm.shape == (B, 4, 6) and out.logprob.shape == (B, 4, 6)
    assert _is_permutation(out.perm.reshape(-1, 6), 6)
    assert torch.all(out.logprob <= 0) and torch.all(out.logprob[..., -1] == 0)  # the last pick is forced
    if greedy:  # greedy lists of one prompt are identical
        assert torch.equal(out.perm, out.perm[:, :1].expand_as(out.perm))


def test_sampling_is_reproducible_with_a_generator(world_and_policy):
    _, _, policy, _, batch = world_and_policy
    a = policy.rank(batch.input_ids, batch.attention_mask, 6, samples=3, generator=torch.Generator().manual_seed(5))
    b = policy.rank(batch.input_ids, batch.attention_mask, 6, samples=3, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a.perm, b.perm)


def test_rows_of_a_shared_noise_stream_sample_what_the_whole_batch_samples(world_and_policy):
    """Two ranks holding 2 and 4 of 6 prompts, each with its rows of the global noise (noise_rows),
    sample the lists that one process with all 6 prompts samples (flexrec.distributed)."""
    _, _, policy, _, batch = world_and_policy
    ids, mask = batch.input_ids, batch.attention_mask
    G = 3
    whole = policy.rank(ids, mask, 6, samples=G, generator=torch.Generator().manual_seed(7))
    parts = [
        policy.rank(ids[lo:hi], mask[lo:hi], 6, samples=G, generator=torch.Generator().manual_seed(7),
                    noise_rows=(lo * G, 6 * G))
        for lo, hi in ((0, 2), (2, 6))
    ]
    assert torch.equal(torch.cat([p.perm for p in parts]), whole.perm)
    torch.testing.assert_close(torch.cat([p.logprob for p in parts]), whole.logprob, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="noise_rows"):
        policy.rank(ids[:2], mask[:2], 6, samples=G, noise_rows=(5 * G, 6 * G))


def _reference_rank(policy, ids, mask, K, G, generator, temperature):
    """Constrained decoding the plain way: no KV cache (the whole sequence re-run every step), the
    public ops, and each step's Gumbel noise drawn as its own (B * G, K) block."""
    from flexrec.ops import candidate_logits, pool_sample

    ids, mask = left_pad(ids, mask, policy.pad_token_id)
    ids, mask = ids.repeat_interleave(G, 0), mask.repeat_interleave(G, 0)
    N = ids.shape[0]
    weight, _ = policy._head()
    cand = policy.slot_ids[:K].expand(N, K)
    used = torch.zeros(N, K, dtype=torch.bool)
    perm, logprob = torch.empty(N, K, dtype=torch.long), torch.empty(N, K)
    for t in range(K):
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        hidden = policy._backbone()(input_ids=ids, attention_mask=mask, position_ids=pos).last_hidden_state[:, -1]
        u = torch.rand(N, K, generator=generator)
        gumbel = -torch.log(-torch.log(u.clamp(1e-10, 1.0 - 1e-7)))
        index, lp, used = pool_sample(candidate_logits(hidden, weight, cand).float(), used, gumbel, temperature)
        perm[:, t], logprob[:, t] = index, lp
        ids = torch.cat([ids, policy.slot_ids[index][:, None]], 1)
        mask = torch.cat([mask, mask.new_ones(N, 1)], 1)
    return perm.view(-1, G, K), logprob.view(-1, G, K)


@torch.no_grad()
def test_rank_samples_what_a_cacheless_step_by_step_decoder_samples(world_and_policy):
    """rank (KV cache, one noise draw for all steps, ops called without per-step checks) picks the
    same lists as the plain decoder with per-step noise, with the same log-probs."""
    _, _, policy, _, batch = world_and_policy
    policy.eval()
    out = policy.rank(batch.input_ids, batch.attention_mask, 6, samples=3,
                      generator=torch.Generator().manual_seed(11), temperature=0.8)
    perm, logprob = _reference_rank(policy, batch.input_ids, batch.attention_mask, 6, 3,
                                    torch.Generator().manual_seed(11), 0.8)
    assert torch.equal(out.perm, perm)
    torch.testing.assert_close(out.logprob, logprob, atol=1e-5, rtol=1e-5)


def test_rollout_logprobs_equal_training_forward(world_and_policy):
    _, _, policy, _, batch = world_and_policy
    gen = torch.Generator().manual_seed(1)
    out = policy.rank(batch.input_ids, batch.attention_mask, 6, samples=3, generator=gen, temperature=0.7)
    logprob, entropy = policy.logprobs(batch.input_ids, batch.attention_mask, out.perm, temperature=0.7)
    torch.testing.assert_close(logprob, out.logprob, atol=1e-5, rtol=1e-5)
    assert torch.all(entropy >= -1e-6) and torch.all(entropy[..., -1].abs() < 1e-6)


def test_training_forward_without_cache_agrees(world_and_policy):
    """The gradient-checkpointing path (prompt repeated, no cache) gives the same log-probs."""
    _, _, policy, _, batch = world_and_policy
    out = policy.rank(batch.input_ids, batch.attention_mask, 6, samples=2, generator=torch.Generator().manual_seed(2))
    base = policy.model
    set_checkpointing(base, True)
    assert base.model.gradient_checkpointing  # the flag RankingPolicy reads to take the no-cache path
    try:
        policy.train()
        logprob, _ = policy.logprobs(batch.input_ids, batch.attention_mask, out.perm)
    finally:
        set_checkpointing(base, False)
        policy.eval()
    torch.testing.assert_close(logprob, out.logprob, atol=1e-5, rtol=1e-5)


def test_right_padded_prompts_rank_like_left_padded(world_and_policy):
    _, _, policy, tok, batch = world_and_policy
    ids, mask = batch.input_ids, batch.attention_mask
    # Move every row's padding to the right, then back: same tokens, same rankings.
    order = torch.sort(1 - mask, dim=1, stable=True).indices
    right_ids, right_mask = torch.gather(ids, 1, order), torch.gather(mask, 1, order)
    back_ids, back_mask = left_pad(right_ids, right_mask, tok.pad_token_id)
    assert torch.equal(back_ids, ids) and torch.equal(back_mask, mask)
    a = policy.rank(ids, mask, 6, greedy=True).perm
    b = policy.rank(right_ids, right_mask, 6, greedy=True).perm
    assert torch.equal(a, b)



def test_lora_policy_trains_adapters_and_slot_rows(tmp_path):
    from flexrec.data import build_examples, collate, load, train_tiny_tokenizer
    from flexrec.models import load_policy

    data = load("synthetic", seed=0, n_users=30, n_items=40, n_topics=3)
    examples = build_examples(data, ["maximize_interest"], "train", K=4, seed=0)[:2]
    policy, tok = load_policy("tiny", 4, train_tiny_tokenizer, lora_rank=2, cache_dir=tmp_path,
                              tiny_overrides=dict(hidden_size=32, intermediate_size=64))
    batch = collate(examples, tok, data, max_history=2)
    out = policy.rank(batch.input_ids, batch.attention_mask, 4, samples=2, generator=torch.Generator().manual_seed(0))
    logprob, _ = policy.logprobs(batch.input_ids, batch.attention_mask, out.perm)
    torch.testing.assert_close(logprob, out.logprob, atol=1e-5, rtol=1e-5)
    logprob.sum().backward()
    names = [n for n, p in policy.named_parameters() if p.requires_grad and p.grad is not None]
    assert any("lora" in n for n in names) and any("embed" in n for n in names)
    # of the (tied) embedding, only the slot tokens' rows get a gradient
    embed = next(p for n, p in policy.named_parameters() if "embed" in n)
    rows = embed.grad.abs().sum(1) > 0
    assert rows.nonzero()[:, 0].tolist() == sorted(policy.slot_ids[:4].tolist())

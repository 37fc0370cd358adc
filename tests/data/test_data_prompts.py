"""Slot tokens, the tiny tokenizer, prompts under a token budget, collate, and the CLI."""

import copy
import subprocess
import sys

import numpy as np
import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from flexrec.data import (TREND_TIERS, SyntheticWorld, add_slot_tokens, build_examples, collate, render_prompt,
                          slot_token_ids, slot_tokens, train_tiny_tokenizer)
from flexrec.data.prompts import count_tokens, format_prompt


@pytest.fixture
def slot_tokenizer(tokenizer):
    tok = copy.deepcopy(tokenizer)
    add_slot_tokens(tok, K=30)
    return tok


@pytest.fixture(scope="module")
def examples(world):
    return build_examples(world, split="train", K=30, max_users=4)


def tiny_model(vocab_size, tie):
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=vocab_size, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=2, tie_word_embeddings=tie)
    return LlamaForCausalLM(cfg)


def test_slot_tokens():
    assert slot_tokens(3) == ["<c0>", "<c1>", "<c2>"]
    with pytest.raises(ValueError, match="K must be >= 1"):
        slot_tokens(0)


def test_tiny_tokenizer_is_deterministic_with_chat_template(tokenizer):
    again = train_tiny_tokenizer()
    assert tokenizer.get_vocab() == again.get_vocab() and len(tokenizer) <= 1000
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.pad_token == "<|pad|>"
    assert tokenizer.padding_side == "left"
    messages = [{"role": "user", "content": "hi"}]
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert text == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    ids = tokenizer("Quiet Harbor (jazz)")["input_ids"]
    assert tokenizer.decode(ids) == "Quiet Harbor (jazz)"


@pytest.mark.parametrize("tie", [False, True])
def test_add_slot_tokens_resizes_and_initialises_embeddings(tokenizer, tie):
    tok = copy.deepcopy(tokenizer)
    model = tiny_model(len(tok), tie)
    old_in = model.get_input_embeddings().weight.detach().clone()
    old_out = model.get_output_embeddings().weight.detach().clone()
    ids = add_slot_tokens(tok, model, K=30)
    assert ids == list(range(len(tokenizer), len(tokenizer) + 30)) == slot_token_ids(tok, 30)
    emb, head = model.get_input_embeddings().weight, model.get_output_embeddings().weight
    assert emb.shape[0] == head.shape[0] == len(tok) == len(tokenizer) + 30
    torch.testing.assert_close(emb[: len(tokenizer)], old_in)  # existing rows untouched
    for new, old in [(emb[ids], old_in), (head[ids], old_out)]:
        # near the mean of the old rows (noise 0.02 std), and all distinct
        assert (new - old.mean(0)).abs().max() < 0.2 * old.std(0).max()
        assert torch.unique(new, dim=0).shape[0] == 30
    assert (head.data_ptr() == emb.data_ptr()) == tie
    # idempotent: adding again changes nothing
    assert add_slot_tokens(tok, model, K=30) == ids and model.get_input_embeddings().weight.shape[0] == len(tok)
    # every slot token is one token in running text
    assert tok("<c0> <c29>", add_special_tokens=False)["input_ids"][0] == ids[0]


def test_slot_ids_require_added_tokens(tokenizer):
    with pytest.raises(ValueError, match="call add_slot_tokens"):
        slot_token_ids(tokenizer, 30)


def test_prompt_has_instruction_history_and_every_candidate(world, examples, slot_tokenizer):
    e = examples[0]
    prompt = render_prompt(e, world, slot_tokenizer)
    assert e.instruction in prompt and prompt.endswith("<|im_start|>assistant\n")
    for k, item in enumerate(e.items):
        assert f"<c{k}> {world.item_titles[item]}" in prompt
    for item in e.history_items[-20:]:
        assert world.item_titles[item] in prompt
    assert "liked it" in prompt


def test_candidates_carry_their_trend_tier_and_trend_false_drops_it(world, examples, slot_tokenizer):
    e = examples[0]
    tiers = world.trend_tiers(e.user)
    prompt = render_prompt(e, world, slot_tokenizer)
    for k, item in enumerate(e.items):
        assert f"<c{k}> {world.item_titles[item]} - {TREND_TIERS[tiers[item]]} lately" in prompt
    plain = render_prompt(e, world, slot_tokenizer, trend=False)
    assert " lately" not in plain and all(f"<c{k}> " in plain for k in range(e.K))
    batch = collate(examples[:2], slot_tokenizer, world, max_tokens=2048, trend=False)
    assert all(" lately" not in p for p in batch.prompts)


def test_trend_tiers_are_quintiles_of_recent_plays_before_the_users_cutoff():
    """Each user's tiers come from the plays before their own cutoff: plays after it change nothing,
    plays in the window before it move the item up."""
    data = SyntheticWorld(seed=1, n_users=20, n_items=50, n_topics=4)
    cut = int(data.cutoff_day[3])
    data.cutoff_day[3] = cut - 2  # user 3 sees an earlier day than the others
    user3, other = data.trend_tiers(3).copy(), data.trend_tiers(0).copy()
    assert sorted(np.bincount(user3, minlength=5)) == [10] * 5  # 50 items in 5 equal tiers
    coldest = int(np.argmin(np.where(user3 == 0, np.arange(50), 99)))
    data.__dict__.pop("_trend_tier_cache", None)
    data.daily_popularity[cut - 2 :, coldest] += 10_000  # the future of user 3 (not of user 0)
    np.testing.assert_array_equal(data.trend_tiers(3), user3)
    assert data.trend_tiers(0)[coldest] == len(TREND_TIERS) - 1 and other[coldest] < len(TREND_TIERS) - 1
    data.__dict__.pop("_trend_tier_cache", None)
    data.daily_popularity[cut - 3, coldest] += 10_000  # inside user 3's window
    assert data.trend_tiers(3)[coldest] == len(TREND_TIERS) - 1


def test_budget_shortens_history_never_candidates(world, examples, slot_tokenizer):
    e = examples[0]
    full = render_prompt(e, world, slot_tokenizer, max_tokens=10_000)
    none = format_prompt(e, world, slot_tokenizer, 0)
    budget = (count_tokens(slot_tokenizer, full) + count_tokens(slot_tokenizer, none)) // 2
    cut = render_prompt(e, world, slot_tokenizer, max_tokens=budget)
    assert count_tokens(slot_tokenizer, cut) <= budget < count_tokens(slot_tokenizer, full)
    assert all(f"<c{k}> " in cut for k in range(e.K))
    kept = [world.item_titles[i] in cut for i in e.history_items[-20:]]
    assert 0 < sum(kept) < len(kept) and kept == sorted(kept)  # the oldest go first
    assert render_prompt(e, world, slot_tokenizer, max_tokens=count_tokens(slot_tokenizer, none)) == none
    with pytest.raises(ValueError, match="candidates are never cut"):
        render_prompt(e, world, slot_tokenizer, max_tokens=50)


def test_prompt_without_chat_template(world, examples, slot_tokenizer):
    tok = copy.deepcopy(slot_tokenizer)
    tok.chat_template = None
    prompt = render_prompt(examples[0], world, tok)
    assert prompt.endswith("Ranking:") and "<|im_start|>" not in prompt


def test_collate(world, examples, slot_tokenizer):
    batch = collate(examples[:4], slot_tokenizer, world, max_tokens=2048)
    B, L = batch.input_ids.shape
    assert B == 4 and batch.attention_mask.shape == (B, L) and batch.input_ids.dtype == torch.long
    assert (batch.attention_mask[:, -1] == 1).all()  # left padding: every prompt ends at -1
    lengths = batch.attention_mask.sum(1)
    assert (batch.input_ids[batch.attention_mask == 0] == slot_tokenizer.pad_token_id).all()
    assert lengths.max() == L and (batch.attention_mask.cumsum(1)[:, -1] == lengths).all()
    assert batch.slot_ids.shape == batch.item_ids.shape == batch.true_labels.shape == (4, 30)
    assert batch.slot_ids[0].tolist() == slot_token_ids(slot_tokenizer, 30)
    assert batch.observed_mask.dtype == torch.bool and batch.true_labels.dtype == torch.float32
    np.testing.assert_array_equal(batch.item_ids[1].numpy(), examples[1].items)
    np.testing.assert_array_equal(batch.observed_labels[2].numpy(), examples[2].observed_labels)
    assert batch.needs == [e.need for e in examples[:4]] and batch.users.tolist() == [e.user for e in examples[:4]]
    decoded = slot_tokenizer.decode(batch.input_ids[0][batch.attention_mask[0] == 1])
    assert decoded == batch.prompts[0]
    with pytest.raises(ValueError, match="same K"):
        collate([examples[0], build_examples(world, split="val", K=10, max_users=1)[0]], slot_tokenizer, world)


def test_cli_prints_stats_labels_and_a_prompt(tmp_path):
    # cwd outside the checkout, so that `-m` imports the installed package (as a user runs it).
    out = subprocess.run([sys.executable, "-m", "flexrec.data", "--data", "synthetic", "--users", "10"],
                         capture_output=True, text=True, timeout=60, check=True, cwd=tmp_path).stdout
    assert "== dataset synthetic" in out and "maximize_interest" in out and "trend_promotion" in out
    assert "<c29>" in out and "<|im_start|>assistant" in out


def test_add_slot_tokens_to_a_model_with_padded_vocab(tokenizer):
    tok = copy.deepcopy(tokenizer)
    model = tiny_model(len(tok) + 64, tie=False)  # like Qwen2.5: more rows than tokens
    with torch.no_grad():
        model.get_input_embeddings().weight[len(tok):] = 0.0
        model.get_output_embeddings().weight[len(tok):] = 0.0
    ids = add_slot_tokens(tok, model, K=30)
    assert model.get_input_embeddings().weight.shape[0] == len(tokenizer) + 64  # not resized
    for w in [model.get_input_embeddings().weight, model.get_output_embeddings().weight]:
        mean = w[: len(tokenizer)].mean(0)
        assert (w[ids] != 0).all() and (w[ids] - mean).abs().max() < 0.2 * w[: len(tokenizer)].std(0).max()
        assert (w[len(tokenizer) + 30:] == 0).all()  # padding rows that name nothing stay as they were


def test_slot_tokens_added_earlier_still_initialise_a_new_model(tokenizer):
    tok = copy.deepcopy(tokenizer)
    add_slot_tokens(tok, K=30)  # tokenizer first, e.g. by the CLI
    model = tiny_model(len(tokenizer), tie=True)
    ids = add_slot_tokens(tok, model, K=30)
    emb = model.get_input_embeddings().weight
    assert emb.shape[0] == len(tok) and (emb[ids] - emb[: len(tokenizer)].mean(0)).abs().max() < 0.1


def test_cli_on_kuairec_files(kuairec_dir, capsys):
    from flexrec.data.__main__ import main
    main(["--data", "kuairec", "--path", str(kuairec_dir), "--users", "3", "--K", "20"])
    out = capsys.readouterr().out
    assert "== dataset kuairec" in out and "watched" in out and "<c19>" in out
    with pytest.raises(SystemExit):
        main(["--data", "ml-1m"])
    assert "--data-path DIR" in capsys.readouterr().err

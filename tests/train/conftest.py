"""Shared fixtures of the trainer tests: a small synthetic world and a tiny policy, built once."""

import dataclasses

import pytest
import torch

from flexrec.config import TrainConfig

torch.set_num_threads(1)  # see TrainConfig.threads: tiny ops are far faster single-threaded here


def _small_config(tmp_path, **overrides) -> TrainConfig:
    """A run that takes seconds: small world, small pools, a couple of steps of each stage."""
    base = TrainConfig(
        world_users=60, world_items=60, world_topics=4, num_candidates=5, history_max=3,
        tiny_hidden=32, critic_ensemble=1, critic_epochs=3, sft_steps=2, rl_steps=2, batch_size=4,
        prompts_per_step=2, group_size=3, eval_every=2, eval_users=3, save_every=1,
        cache_dir=str(tmp_path / "cache"), out=str(tmp_path / "run"), progress=False,
    )
    return dataclasses.replace(base, **overrides)


@pytest.fixture(scope="module")
def world_and_policy(tmp_path_factory):
    from flexrec.data import build_examples, collate, load, train_tiny_tokenizer
    from flexrec.models import load_policy

    data = load("synthetic", seed=0, n_users=40, n_items=50, n_topics=4)
    examples = build_examples(data, None, "train", K=6, seed=0)[:6]
    policy, tok = load_policy("tiny", 6, train_tiny_tokenizer, seed=0,
                              cache_dir=tmp_path_factory.mktemp("cache"),
                              tiny_overrides=dict(hidden_size=32, intermediate_size=64))
    batch = collate(examples, tok, data, max_history=3)
    return data, examples, policy, tok, batch


@pytest.fixture
def small_config():
    """small_config(tmp_path, **overrides) -> TrainConfig"""
    return _small_config

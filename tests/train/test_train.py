"""End-to-end runs of the trainer on a tiny world: smoke, resume, early failures, learning."""

import dataclasses
import json
import math

import pytest
import torch

from flexrec.config import ConfigError, TrainConfig, data_options, parse_args
from flexrec.train import train
from flexrec.train.__main__ import main
from flexrec.train.rundir import load_checkpoint


def _fresh_policy_state(cfg: TrainConfig):
    """The untrained policy's weights, rebuilt exactly as the trainer builds them."""
    from flexrec.data import build_examples, load
    from flexrec.train.build import build_policy

    data = load(cfg.data, **data_options(cfg))
    train_ex = build_examples(data, None, "train", cfg.num_candidates, cfg.seed)
    policy, _ = build_policy(cfg, data, train_ex)
    return policy.state_dict()


def test_smoke_three_steps(tmp_path, small_config):
    cfg = small_config(tmp_path, sft_steps=1, rl_steps=2)
    results = train(cfg)
    run = tmp_path / "run"
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    losses = [r[k] for r in rows for k in ("sft/loss", "rl/loss") if k in r]
    assert len(losses) == 3 and all(math.isfinite(v) for v in losses)
    assert set(results) == {"untrained", "popularity", "sft", "rl"}
    before = _fresh_policy_state(cfg)
    after = load_checkpoint(str(run))["policy"]
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert changed, "no parameter changed in 3 optimiser steps"
    for name in ("config.json", "report.md", "reward.png", "results.json", "checkpoint.pt"):
        assert (run / name).exists(), name
    assert json.loads((run / "config.json").read_text())["rl_steps"] == 2
    assert "| maximize_interest | after RL |" in (run / "report.md").read_text()


def test_load_run_ranks_as_the_trainer_evaluated(tmp_path, small_config):
    import flexrec
    from flexrec.eval import per_user_values

    cfg = small_config(tmp_path, sft_steps=2, rl_steps=1)
    results = train(cfg)
    run = flexrec.load_run(tmp_path / "run")
    examples = run.examples("val")  # the trainer scores validation users only
    assert {ex.need for ex in examples} == set(results["rl"]) - {"mean"}
    values = per_user_values(examples, run.rank(examples, batch_size=5))
    for need, r in results["rl"].items():
        assert values[need]["ndcg@5"].mean() == pytest.approx(r["ndcg@5"], abs=1e-9), need
    assert run.checkpoint["step"] == 3 and {"gains", "gain_var"} <= set(run.checkpoint)
    assert not {"policy", "optimizer", "reference"} & set(run.checkpoint)  # the weights live in run.policy
    untrained = flexrec.load_run(tmp_path / "run", untrained=True)
    assert untrained.checkpoint == {}
    changed = [k for k, v in untrained.policy.state_dict().items() if not torch.equal(v, run.policy.state_dict()[k])]
    assert changed
    short = [dataclasses.replace(ex, items=ex.items[:-1]) for ex in examples[:1]]
    with pytest.raises(ValueError, match="has 4 candidates; this run ranks K=5"):
        run.rank(short)
    with pytest.raises(ValueError, match="no config.json"):
        flexrec.load_run(tmp_path)


@pytest.mark.slow
def test_resume_after_interruption_equals_uninterrupted(tmp_path, small_config):
    cfg = small_config(tmp_path, sft_steps=2, rl_steps=3)
    whole = train(dataclasses.replace(cfg, out=str(tmp_path / "whole")))

    def interrupt(step):
        if step == 3:  # in the RL stage: the reference policy and RL optimiser must come back too
            raise KeyboardInterrupt

    part_dir = str(tmp_path / "part")
    with pytest.raises(KeyboardInterrupt):
        train(dataclasses.replace(cfg, out=part_dir), on_step=interrupt)
    assert load_checkpoint(part_dir)["step"] == 3
    resumed = train(TrainConfig(resume=part_dir))
    assert resumed == whole
    a, b = load_checkpoint(str(tmp_path / "whole")), load_checkpoint(part_dir)
    for key in a["policy"]:
        torch.testing.assert_close(a["policy"][key], b["policy"][key], rtol=0, atol=0)
    rows = lambda d: (tmp_path / d / "metrics.jsonl").read_text().splitlines()  # noqa: E731
    assert len(rows("part")) == len(rows("whole")) == 5


def test_interrupted_run_saves_a_resumable_checkpoint_midway(tmp_path, small_config):
    cfg = small_config(tmp_path, sft_steps=3, rl_steps=0, save_every=100)

    def interrupt(step):
        if step == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(cfg, on_step=interrupt)
    assert load_checkpoint(cfg.out)["step"] == 2  # saved on Ctrl-C although save_every is 100


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(need="world_peace"), "unknown need 'world_peace'"),
        (dict(num_candidates=59), "larger than the pool"),
        (dict(reward_mode="vibes"), "--reward-mode"),
        (dict(need_weights="explore_new_topics=0"), "--need-weights"),
        (dict(need_weights="world_peace=2"), "--need-weights"),
        (dict(rl_need_weights="trend_promotion=-1"), "--rl-need-weights"),
        (dict(adv_baseline="median"), "--adv-baseline"),
    ],
)
def test_bad_settings_fail_before_any_work(tmp_path, small_config, overrides, message, monkeypatch):
    from flexrec.train import loop

    def no_work(*args, **kwargs):
        raise AssertionError("a model or critic was built for settings that cannot run")

    monkeypatch.setattr(loop, "build_policy", no_work)
    monkeypatch.setattr(loop, "build_imputer", no_work)
    cfg = small_config(tmp_path, **overrides)
    with pytest.raises(ValueError, match=message):
        train(cfg)
    assert not (tmp_path / "run").exists()  # nothing was written: no model, no critic, no run dir


def test_model_path_that_is_not_a_causal_lm_fails_early(tmp_path, small_config):
    from transformers import T5Config

    T5Config(d_model=32, d_ff=32, num_layers=1, num_heads=2).save_pretrained(tmp_path / "t5")  # encoder-decoder
    with pytest.raises(ValueError, match="not a causal LM"):
        train(small_config(tmp_path, model=str(tmp_path / "t5")))
    with pytest.raises(ValueError, match="not a preset"):
        train(small_config(tmp_path, model=str(tmp_path / "nowhere")))
    assert main(["--model", str(tmp_path / "t5"), "--out", str(tmp_path / "run")]) == 2


def test_cli_flags_and_config_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("rl_steps: 7\nreward-mode: seq\n")
    cfg = parse_args(["--config", str(path), "--rl-steps", "9", "--no-progress", "--need", "trend_promotion"])
    assert (cfg.rl_steps, cfg.reward_mode, cfg.progress, cfg.need) == (9, "seq", False, "trend_promotion")
    (tmp_path / "bad.json").write_text('{"learning_rate": 1}')
    with pytest.raises(ConfigError, match="unknown setting 'learning_rate'"):
        parse_args(["--config", str(tmp_path / "bad.json")])


@pytest.mark.slow
def test_short_run_raises_ndcg_on_the_training_need(tmp_path):
    cfg = dataclasses.replace(
        TrainConfig(), need="maximize_interest", world_users=400, sft_steps=200, rl_steps=20, eval_every=1000,
        critic_ensemble=1, critic_epochs=20, cache_dir=str(tmp_path / "cache"), out=str(tmp_path / "run"),
        progress=False,
    )
    results = train(cfg)
    before = results["untrained"]["maximize_interest"]["ndcg@5"]
    after = results["rl"]["maximize_interest"]["ndcg@5"]
    assert after > before + 0.1, results  # measured: 0.68 -> 0.89 at step 200 with 1000 users


def test_need_weights_set_how_often_each_need_is_drawn():
    import numpy as np

    from flexrec.train.steps import need_weights, sample_batch

    weights = need_weights("explore_new_topics=3", ["maximize_interest", "explore_new_topics"])
    assert weights == [1.0, 3.0]
    by_need = [np.arange(0, 500), np.arange(500, 1000)]  # two needs, 500 examples each
    rng = np.random.default_rng(0)
    drawn = np.concatenate([sample_batch(rng, by_need, step, 16, False, weights) for step in range(200)])
    # weight 3 against 1: 3/4 of the draws (without replacement within a batch of 16 from 1000, so ~0.75)
    assert abs((drawn >= 500).mean() - 0.75) < 0.03
    # equal weights keep the unweighted draw (the same random stream as with no weights)
    a, b = np.random.default_rng(1), np.random.default_rng(1)
    assert (sample_batch(a, by_need, 0, 16, False, [1.0, 1.0]) == sample_batch(b, by_need, 0, 16, False)).all()


def test_sft_and_rl_draw_needs_by_their_own_weights(tmp_path, small_config, monkeypatch):
    from flexrec.train import loop

    seen, original = [], loop.sample_batch

    def recording(rng, by_need, step, n, pure, weights=None):
        seen.append((step, weights))
        return original(rng, by_need, step, n, pure, weights)

    monkeypatch.setattr(loop, "sample_batch", recording)
    cfg = small_config(tmp_path, need="maximize_interest,explore_new_topics", need_stagger=0, sft_steps=2,
                       rl_steps=2, need_weights="explore_new_topics=2", rl_need_weights="maximize_interest=3")
    train(cfg)
    order = cfg.need_order.split(",")
    needs = sorted(["maximize_interest", "explore_new_topics"], key=order.index)
    sft = {n: w for n, w in zip(needs, seen[0][1])}
    rl = {n: w for n, w in zip(needs, seen[-1][1])}
    assert [step for step, _ in seen] == [0, 1, 2, 3]
    assert sft == {"maximize_interest": 1.0, "explore_new_topics": 2.0}
    assert rl == {"maximize_interest": 3.0, "explore_new_topics": 1.0}


def test_shuffled_slots_move_items_labels_and_gains_together():
    import numpy as np

    from flexrec.data import build_examples, load
    from flexrec.train.loop import permute_by_candidate, permute_pool, shuffled_slots

    data = load("synthetic", seed=0, n_users=40, n_items=60, n_topics=6)
    examples = build_examples(data, ["maximize_interest"], "train", 8, 0)[:5]
    gains = torch.rand(5, 8, dtype=torch.float64)
    orders = shuffled_slots(np.random.default_rng(3), 5, 8)
    assert (np.sort(orders, 1) == np.arange(8)).all() and (orders != np.arange(8)).any()
    members = gains[:, None] + torch.arange(3, dtype=gains.dtype)[None, :, None]  # (5, 3 members, 8)
    moved, moved_members, nothing = permute_by_candidate(torch.from_numpy(orders), gains, members, None)
    assert nothing is None
    torch.testing.assert_close(moved_members, moved[:, None] + torch.arange(3, dtype=gains.dtype)[None, :, None])
    for ex, g, m, order in zip(examples, gains, moved, orders):
        new = permute_pool(ex, order)
        before = {int(i): (float(t), float(x)) for i, t, x in zip(ex.items, ex.true_labels, g)}
        after = {int(i): (float(t), float(x)) for i, t, x in zip(new.items, new.true_labels, m)}
        assert after == before
        assert [int(i) for i in new.items] == [int(ex.items[k]) for k in order]


def test_shuffle_slots_trains_on_other_orders(tmp_path, small_config):
    losses = []
    for name, shuffle in (("plain", False), ("shuffled", True)):
        cfg = small_config(tmp_path / name, sft_steps=3, rl_steps=2, shuffle_slots=shuffle)
        train(cfg)
        rows = [json.loads(line) for line in (tmp_path / name / "run" / "metrics.jsonl").read_text().splitlines()]
        losses.append([r[k] for r in rows for k in ("sft/loss", "rl/loss") if k in r])
    assert len(losses[1]) == 5 and all(math.isfinite(v) for v in losses[1])
    # The same examples are drawn (the orders come after the draw), in other slot orders: other losses.
    assert losses[0] != losses[1]


def test_sft_lr_decay_runs_a_half_cosine_to_a_tenth_and_rl_keeps_its_rate(tmp_path, small_config, monkeypatch):
    from flexrec.train import loop
    from flexrec.train.steps import sft_lr_at

    cosine = TrainConfig(sft_lr=0.002, sft_steps=5, sft_lr_decay="cosine")
    rates = [sft_lr_at(step, cosine) for step in range(5)]
    # 0.1 + 0.9 * (1 + cos(pi * step / 4)) / 2 of the rate, by hand
    want = [0.002 * (0.1 + 0.45 * (1 + c)) for c in (1.0, math.sqrt(0.5), 0.0, -math.sqrt(0.5), -1.0)]
    assert rates == pytest.approx(want, rel=1e-12)
    assert [sft_lr_at(step, TrainConfig(sft_lr=0.002, sft_steps=5)) for step in range(5)] == [0.002] * 5
    from flexrec.config import validate
    from flexrec.data import NEEDS

    with pytest.raises(ValueError, match="--sft-lr-decay 'linear'"):
        validate(TrainConfig(sft_lr_decay="linear"), NEEDS)

    seen, original = [], loop.sft_step

    def recording(policy, optimizer, batch, gains, cfg):
        seen.append(optimizer.param_groups[0]["lr"])
        return original(policy, optimizer, batch, gains, cfg)

    monkeypatch.setattr(loop, "sft_step", recording)
    cfg = small_config(tmp_path, sft_steps=3, rl_steps=1, sft_lr_decay="cosine")
    train(cfg)
    assert seen == pytest.approx([sft_lr_at(step, cfg) for step in range(3)])
    assert seen[-1] == pytest.approx(0.1 * cfg.sft_lr)
    state = load_checkpoint(tmp_path / "run")
    assert state["optimizer"]["param_groups"][0]["lr"] == cfg.lr  # RL's optimiser, at its own constant rate

"""Micro-batches (--micro-batch) sum their gradients into the step the whole batch takes, for SFT and RL."""

import copy
import dataclasses

import pytest
import torch

from flexrec.config import TrainConfig
from flexrec.train.steps import micro_batches, rl_step, sft_step, trim_padding


def _sgd(policy):
    return torch.optim.SGD(policy.trainable_parameters(), lr=1.0)  # new weights = old - gradient: compares gradients


def _cfg(micro: int) -> TrainConfig:
    return TrainConfig(micro_batch=micro, grad_clip=1e9, group_size=3)


def test_micro_batches_cover_every_row_once():
    assert micro_batches(5, 2) == [slice(0, 2), slice(2, 4), slice(4, 5)]
    assert micro_batches(5, 0) == [slice(0, 5)] and micro_batches(3, 8) == [slice(0, 3)]


def test_trim_padding_drops_only_all_padding_columns():
    ids = torch.tensor([[0, 0, 5, 6], [0, 7, 8, 9]])
    mask = (ids != 0).long()
    out_ids, out_mask = trim_padding(ids[:1], mask[:1])
    assert out_ids.tolist() == [[5, 6]] and out_mask.tolist() == [[1, 1]]
    assert trim_padding(ids, mask)[0].tolist() == [[0, 5, 6], [7, 8, 9]]
    assert trim_padding(ids[:, 1:], mask[:, 1:])[0] is not None


@pytest.mark.parametrize("micro,ties", [(1, "order"), (4, "order"), (2, "set")])
def test_sft_micro_batches_take_the_whole_batch_step(world_and_policy, micro, ties):
    _, examples, policy, _, batch = world_and_policy
    gains = torch.stack([torch.from_numpy(e.true_labels).float() for e in examples])
    results = []
    for m in (0, micro):
        p = copy.deepcopy(policy)
        logs = sft_step(p, _sgd(p), batch, gains, dataclasses.replace(_cfg(m), sft_ties=ties))
        results.append((logs, [q.detach().clone() for q in p.trainable_parameters()]))
    (whole_logs, whole), (part_logs, part) = results
    assert part_logs["sft/loss"] == pytest.approx(whole_logs["sft/loss"], rel=1e-5)
    moved = [not torch.equal(a, b) for a, b in zip(whole, policy.trainable_parameters())]
    assert any(moved)
    for a, b in zip(whole, part):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-6)


def test_sft_ties_set_costs_less_than_the_slot_order_where_labels_tie(world_and_policy):
    # the tied set holds the slot-order target, so its NLL can only be lower, and lower where a step ties
    _, examples, policy, _, batch = world_and_policy
    gains = torch.stack([torch.from_numpy(e.true_labels).float() for e in examples])
    gains = torch.where(gains < gains.median(), torch.zeros_like(gains), gains)  # many ties at 0
    loss = {}
    for ties in ("order", "set"):
        p = copy.deepcopy(policy)
        loss[ties] = sft_step(p, _sgd(p), batch, gains, dataclasses.replace(_cfg(0), sft_ties=ties, sft_positions=0))["sft/loss"]
    assert loss["set"] < loss["order"] - 1e-3


def test_rl_micro_batches_take_the_whole_batch_step(world_and_policy):
    _, examples, policy, _, batch = world_and_policy
    gains = torch.stack([torch.from_numpy(e.true_labels).float() for e in examples])
    gain_var = torch.full_like(gains, 0.1)
    reference = copy.deepcopy(policy).requires_grad_(False)
    results = []
    for m in (0, 2):
        p = copy.deepcopy(policy)
        logs = rl_step(p, reference, _sgd(p), batch, gains, gain_var, dataclasses.replace(_cfg(m)),
                       torch.Generator().manual_seed(3))
        results.append((logs, [q.detach().clone() for q in p.trainable_parameters()]))
    (whole_logs, whole), (part_logs, part) = results
    for key in whole_logs:
        assert part_logs[key] == pytest.approx(whole_logs[key], rel=1e-5, abs=1e-7), key
    assert any(not torch.equal(a, b) for a, b in zip(whole, policy.trainable_parameters()))
    for a, b in zip(whole, part):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-6)

"""The two forms of the uncertainty weights (flexrec.rl, --unc-form) on hand-computed examples, and the
critic's recalibration on a case with a known answer."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from flexrec import rl


def test_item_form_by_hand():
    # One prompt, G = 2 lists, K = 3, cutoff 0: ranks 0 and 1 are scored, rank 2 is the forced last slot.
    reward_var = torch.tensor([[[0.02, 0.01, 0.0], [0.06, 0.03, 0.0]]])
    # Relative to each rank's mean: rank 0 mean 0.04 -> 0.5, 1.5; rank 1 mean 0.02 -> 0.5, 1.5. Their mean is 1,
    # so eps 1 adds 1: 1 / 1.5 = 0.6667 and 1 / 2.5 = 0.4, mean 0.5333 -> normalised 1.25 and 0.75.
    w = rl.item_uncertainty_weights(reward_var, cutoff=0, eps=1.0, max_weight=5.0)
    torch.testing.assert_close(w, torch.tensor([[[1.25, 1.25, 1.0], [0.75, 0.75, 1.0]]]))


def test_rollout_variance_by_hand():
    # K = 3, discounts d = 1, 1/log2(3) = 0.6309, 1/2; the pool's gains (1, 0, 0) give IDCG = 1.
    gains = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])  # two rollouts of the same pool, in rank order
    var = torch.tensor([[0.04, 0.0, 0.0], [0.0, 0.0, 0.04]])
    # u_0 = (1 / 1)^2 * 0.04 = 0.04; u_1 = (0.5 / 1)^2 * 0.04 = 0.01
    torch.testing.assert_close(rl.rollout_reward_variance(gains, var, cutoff=0), torch.tensor([0.04, 0.01]))
    # cutoff 2: the rank-2 discount is 0, so u_1 = 0; rank 1 counts with (1/log2 3)^2
    u = rl.rollout_reward_variance(gains, torch.tensor([[0.0, 0.04, 0.0], [0.0, 0.0, 0.04]]), cutoff=2)
    torch.testing.assert_close(u, torch.tensor([0.04 / math.log2(3) ** 2, 0.0]))
    # no relevant item: IDCG 0 -> variance 0
    assert rl.rollout_reward_variance(torch.zeros(1, 3), torch.ones(1, 3), 0).item() == 0.0


def test_rollout_form_by_hand():
    u = torch.tensor([[0.04, 0.01]])  # the rollouts above, as one prompt's group (P = 1, G = 2)
    # mean u = 0.025, eps 1: 1 / 0.065 = 15.385, 1 / 0.035 = 28.571, mean 21.978 -> 0.700 and 1.300,
    # the same for every scored rank of the rollout; rank 2 (forced) keeps 1.
    w = rl.rollout_uncertainty_weights(u, K=3, cutoff=0, eps=1.0, max_weight=5.0)
    torch.testing.assert_close(w, torch.tensor([[[0.7, 0.7, 1.0], [1.3, 1.3, 1.0]]]), atol=1e-4, rtol=0)
    # certain rollouts (u = 0 everywhere): weights of exactly 1
    assert torch.equal(rl.rollout_uncertainty_weights(torch.zeros(2, 4), 3, 0, 1.0, 5.0), torch.ones(2, 4, 3))

"""The critic and the imputers: observed labels pass through, the rest is filled with a variance."""

import numpy as np
import pytest

from flexrec.critic import KNNImputer, build_imputer, calibrate, fill_pools, filled_labels
from flexrec.data import build_examples, load, split_users


@pytest.fixture(scope="module")
def world():
    data = load("synthetic", seed=1, n_users=60, n_items=60, n_topics=4, observe_fraction=0.2)
    return data, split_users(data, (0.7, 0.1, 0.2), 0)


@pytest.fixture(scope="module")
def critic(world):
    data, splits = world
    return build_imputer("critic", data, splits["train"], ensemble=2, epochs=10, hidden=16, seed=0)


def test_observed_labels_pass_through_with_zero_variance(world, critic):
    data, splits = world
    user = int(splits["train"][0])
    observed_items = data.observed.user_items(user)
    items = np.concatenate([observed_items[:3], data.eligible_items(user)[:5]])
    mu, var = critic.interest(user, items)
    raw, known = data.observed.lookup(user, items)
    np.testing.assert_allclose(mu[known], data.normalized_interest(raw)[known])
    assert np.all(var[known] == 0) and np.all(var[~known] > 0)
    assert np.all((mu >= 0) & (mu <= 1))


def test_calibration_report_is_finite(world, critic):
    data, splits = world
    cal = calibrate(critic, data, splits["val"])
    assert cal.n > 0 and np.isfinite(cal.nll) and 0 <= cal.coverage_50 <= cal.coverage_90 <= 1
    assert "NLL" in cal.line()


def test_need_labels_from_filled_interest(world, critic):
    data, _ = world
    examples = build_examples(data, None, "train", K=8, seed=0)[:6]
    gains, gain_var = fill_pools(data, critic, examples, label_samples=8)
    assert gains.shape == gain_var.shape == (6, 8)
    assert np.all(gain_var >= 0) and np.all((gains >= 0) & (gains <= 1))
    for ex, g in zip(examples, gains):
        if ex.need == "explore_new_topics":  # items of a topic from the history get 0, whatever the interest
            from flexrec.data.needs import label_context

            novel = label_context(data, ex.user, ex.items).novel
            assert np.all(g[~novel] == 0)


def test_raw_critic_has_no_variance(world):
    data, splits = world
    raw = build_imputer("critic-mean", data, splits["train"], ensemble=1, epochs=2, hidden=8)
    ex = build_examples(data, ["maximize_interest"], "train", K=8, seed=0)[0]
    _, var = filled_labels(data, raw, ex.user, ex.items, ex.need)
    assert np.all(var == 0)


@pytest.mark.parametrize("kind", ["user", "item"])
def test_knn_imputers(world, kind):
    data, splits = world
    knn = KNNImputer(data, splits["train"], kind, k=5)
    user = int(splits["train"][1])
    items = data.eligible_items(user)[:10]
    mu, var = knn.interest(user, items)
    assert mu.shape == (10,) and np.all((mu >= 0) & (mu <= 1)) and np.all(var == 0)

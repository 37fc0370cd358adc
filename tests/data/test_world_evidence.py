"""The synthetic world's evidence settings produce the distributions they claim (flexrec.data.synthetic)."""

from __future__ import annotations

import numpy as np
import pytest

from flexrec.data import SyntheticWorld
from flexrec.data.synthetic import EVIDENCE, WorldEvidence

SIZE = dict(seed=0, n_users=1000, n_items=150, n_topics=6, taste_scale=1.6, observe_fraction=0.1)  # the default run's


@pytest.fixture(scope="module")
def worlds():
    return {name: SyntheticWorld(**SIZE, evidence=name) for name in ("uniform", "sparse", "dense")}


def _feedback_per_user(d):
    return np.diff(d.history_ptr) + np.bincount(d.observed.keys // d.n_items, minlength=d.n_users)


def _feedback_per_item(d):
    return np.bincount(d.history_items, minlength=d.n_items) + np.bincount(d.observed.keys % d.n_items,
                                                                          minlength=d.n_items)


def _top_share(counts, share=0.2):
    top = np.sort(counts)[::-1][: int(round(share * len(counts)))]
    return top.sum() / counts.sum()


def test_uniform_is_the_world_without_the_option(worlds):
    plain = SyntheticWorld(**SIZE)
    for a, b in [(plain.history_items, worlds["uniform"].history_items),
                 (plain.history_feedback, worlds["uniform"].history_feedback),
                 (plain.observed.keys, worlds["uniform"].observed.keys),
                 (plain.observed.values, worlds["uniform"].observed.values)]:
        np.testing.assert_array_equal(a, b)
    assert WorldEvidence().uniform and EVIDENCE["uniform"].uniform


def test_only_evidence_differs_between_settings(worlds):
    u, s = worlds["uniform"], worlds["sparse"]
    np.testing.assert_array_equal(u.true_interest.values, s.true_interest.values)
    np.testing.assert_array_equal(u.daily_popularity, s.daily_popularity)


def test_sparse_is_long_tailed(worlds):
    u, s = worlds["uniform"], worlds["sparse"]
    # uniform: the top 20% of users hold ~27% of the feedback (lengths 8-30); sparse: most of it
    assert _top_share(_feedback_per_user(u)) < 0.3
    assert _top_share(_feedback_per_user(s)) > 0.5
    assert _top_share(_feedback_per_item(s)) > 0.45
    lengths = np.diff(s.history_ptr)
    assert np.median(lengths) <= 6 and lengths.max() >= 40  # a long tail: a median of a few, some of dozens


def test_sparse_has_cold_users_and_items(worlds):
    s = worlds["sparse"]
    lengths = np.diff(s.history_ptr)
    observed = np.bincount(s.observed.keys // s.n_items, minlength=s.n_users)
    cold = (lengths <= 2) & (observed == 0)
    # the cold users (25%), and some of the long tail's light users (seed 0: 29.5% in all)
    assert EVIDENCE["sparse"].cold_users <= cold.mean() < EVIDENCE["sparse"].cold_users + 0.1
    never = _feedback_per_item(s) == 0
    assert never.sum() == round(EVIDENCE["sparse"].cold_items * s.n_items)
    assert len(s.observed) / (s.n_users * s.n_items - len(s.history_items)) == pytest.approx(0.05, abs=0.005)
    assert min(len(s.eligible_items(u)) for u in range(s.n_users)) >= 10  # pools of 10 still fit


def test_noisy_users_are_noisier(worlds):
    s = worlds["sparse"]
    users, items = np.divmod(s.observed.keys, s.n_items)
    true = s.true_interest.values[np.searchsorted(s.true_interest.keys, s.observed.keys)]
    err = s.observed.values - true
    mid = (true > 2.0) & (true < 4.0)  # away from the clip at 1 and 5
    sq = np.bincount(users[mid], err[mid] ** 2, s.n_users) / np.maximum(np.bincount(users[mid], None, s.n_users), 1)
    counts = np.bincount(users[mid], None, s.n_users)
    rms = np.sqrt(sq[counts >= 5])
    # two groups: std ~0.3 (most users) and ~1.0 (the noisy 20%)
    assert np.mean(rms > 0.65) == pytest.approx(EVIDENCE["sparse"].noisy_users, abs=0.08)
    assert np.median(rms[rms < 0.65]) == pytest.approx(0.3, abs=0.06)
    assert np.median(rms[rms > 0.65]) == pytest.approx(1.0, abs=0.15)


def test_dense_has_more_evidence_and_nobody_cold(worlds):
    u, d = worlds["uniform"], worlds["dense"]
    assert len(d.observed) > 3 * len(u.observed)
    assert _feedback_per_user(d).min() > 10 and _feedback_per_item(d).min() > 0


def test_unknown_setting_is_refused():
    with pytest.raises(ValueError, match="evidence must be one of"):
        SyntheticWorld(n_users=5, n_items=20, evidence="lumpy")


def test_the_setting_reaches_the_world_and_is_checked():
    from flexrec.config import ConfigError, TrainConfig, data_options, validate
    from flexrec.data.needs import NEEDS

    assert "evidence" not in data_options(TrainConfig())  # the default run builds the world as it did
    assert data_options(TrainConfig(world_evidence="sparse"))["evidence"] == "sparse"
    for name, value in (("world_evidence", "lumpy"), ("unc_form", "list"), ("critic_recalibrate", "test")):
        with pytest.raises(ConfigError, match=name.replace("_", "-")):
            validate(TrainConfig(**{name: value}), NEEDS)

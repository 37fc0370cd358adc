"""Evidence a reviewer would accept (issue 15): seed-aware intervals, reserved confirmation seeds, and reports
that state only what their runs computed."""

import re

import numpy as np
import pytest

from flexrec.eval.stats import bootstrap_ci, hierarchical_bootstrap_ci, per_seed_means
from flexrec.experiments import EXPERIMENTS
from flexrec.experiments.runner import CONFIRM_SEEDS, SIZES, Cell, DirtyTreeError, experiment_seeds


def test_hierarchical_bootstrap_with_one_seed_is_the_user_bootstrap():
    values = np.random.default_rng(3).normal(0.05, 0.2, 150)
    a = bootstrap_ci(values, 400, seed=7)
    b = hierarchical_bootstrap_ci(values, np.zeros(150, int), 400, seed=7)
    assert (b.mean, b.lo, b.hi, b.n) == pytest.approx((a.mean, a.lo, a.hi, a.n), abs=1e-12)


def test_seeds_with_opposite_means_give_an_interval_that_spans_zero():
    # two seeds, every user of seed 0 at +0.1 and of seed 1 at -0.1: the users agree within each seed, so
    # the user bootstrap (stratified by seed) has width 0 at mean 0, while a new seed could land on either side.
    values = np.r_[np.full(100, 0.1), np.full(100, -0.1)]
    seeds = np.r_[np.zeros(100, int), np.ones(100, int)]
    users = bootstrap_ci(values, 500, strata=seeds)
    assert users.lo == users.hi == pytest.approx(0.0, abs=1e-12)
    both = hierarchical_bootstrap_ci(values, seeds, 500)
    # the replicates are the means of two draws from {+0.1, -0.1}: -0.1, 0 or +0.1 (each seed drawn twice
    # has probability 1/4), so the 95% interval is [-0.1, +0.1]
    assert both.mean == pytest.approx(0.0) and both.lo == pytest.approx(-0.1) and both.hi == pytest.approx(0.1)
    assert per_seed_means(values, seeds) == pytest.approx({0: 0.1, 1: -0.1})


def test_seed_aware_interval_is_wider_when_seeds_disagree():
    rng = np.random.default_rng(0)
    seeds = np.repeat(np.arange(5), 200)
    offsets = np.array([0.06, -0.02, 0.09, -0.05, 0.01])  # per-seed means that disagree
    values = offsets[seeds] + rng.normal(0, 0.05, len(seeds))
    users, both = bootstrap_ci(values, 500, strata=seeds), hierarchical_bootstrap_ci(values, seeds, 500)
    assert both.hi - both.lo > 3 * (users.hi - users.lo)
    assert both.lo < 0 < both.hi


def test_confirmation_seeds_are_reserved():
    assert CONFIRM_SEEDS == (100, 101, 102, 103, 104)
    assert experiment_seeds(3) == [0, 1, 2] and experiment_seeds(5, confirm=True) == list(CONFIRM_SEEDS)
    for seeds in ([100], [0, 104], 101):
        with pytest.raises(ValueError, match="reserved"):
            experiment_seeds(seeds)
    with pytest.raises(ValueError, match="reserved seeds"):
        experiment_seeds([3], confirm=True)
    from flexrec.config import TrainConfig

    assert TrainConfig().seed == 0  # the trainer's default run
    for size in SIZES.values():  # no size, setting or method picks a seed of its own
        assert "seed" not in size
    for exp in EXPERIMENTS.values():
        assert all("seed" not in s.overrides for s in exp.settings)
        assert all("seed" not in m.overrides for m in exp.methods)


def test_experiments_cli_refuses_reserved_seeds_without_confirm(monkeypatch):
    from flexrec.experiments import __main__ as cli
    from flexrec.experiments import runner

    monkeypatch.setattr(runner, "prepare", lambda *a, **k: pytest.fail("a run started"))
    with pytest.raises(SystemExit, match="reserved for the confirmation runs"):
        cli.main(["rl-tuning", "--seeds", "101", "--size", "smoke"])
    with pytest.raises(SystemExit, match="--confirm runs 1 to 5 seeds"):
        cli.main(["rl-tuning", "--confirm", "--seeds", "6", "--size", "smoke"])
    with pytest.raises(SystemExit, match="--confirm: give --size"):  # never the exploring default, quick, by omission
        cli.main(["rl-tuning", "--confirm", "--seeds", "1"])


def test_rl_tuning_sweeps_lr_and_cutoff_on_validation_users():
    exp = EXPERIMENTS["rl-tuning"]
    grid = {(m.overrides["lr"], m.overrides["ndcg_cutoff"]) for m in exp.methods if m.kind == "rl"}
    assert grid == {(lr, n) for lr in (1e-4, 3e-4, 1e-3) for n in (5, 0)}


# ---- a report rendered from a fabricated run states only numbers that run produced ----------------------

_VALUE = {"random": 0.411, "popularity": 0.422, "item-KNN": 0.433, "BPR-MF": 0.444, "SASRec": 0.455,
          "untrained (random init)": 0.466, "SFT": 0.577, "GRPO seq-NDCG (Rec-R1-like)": 0.688,
          "GRPO rank-level (Rank-GRPO-like)": 0.699, "FlexRec": 0.711, "FlexRec w/o uncertainty": 0.722}


def _fabricated(exp, seeds=(100, 101), codes=None, confirm=True, allow_dirty=False) -> dict:
    """Every user of a method has the same value on every metric, need and seed: each mean, interval bound and
    paired difference is then one of the values above or a difference of two of them."""
    from flexrec.eval.evaluate import METRICS

    cells = {}
    for method in exp.methods:
        cell = Cell()
        for seed in seeds:
            cell.add(seed, {need: {m: np.full(4, _VALUE[method.label]) for m in METRICS}
                            for need in ("maximize_interest", "explore_new_topics", "trend_promotion", "mean")})
        cells[method.label] = cell
    return {"cells": {"all needs": {"training paraphrases": cells}}, "curves": {}, "seconds": 0.0,
            "base": dict(SIZES["default"], model="tiny", data="synthetic", device="cpu"), "split": "test",
            "seeds": list(seeds), "confirm": confirm, "allow_dirty": allow_dirty, "runs": 0, "train_seconds": 0.0,
            "run_codes": codes or {"commit abcdef1": 20}, "fidelity": {}}


def _decimals(text: str) -> list[float]:
    """Every decimal number of the report's prose and tables (not inside `code`, not part of a name like
    Qwen2.5, not a version like 2.13.0)."""
    text = re.sub(r"`[^`]*`", "", text)
    return [float(x) for x in re.findall(r"(?<![\w.])[+-]?\d+\.\d+(?![\w.])", text)]


def test_report_states_only_numbers_its_runs_produced(tmp_path):
    from flexrec.experiments.report import write_report

    exp = EXPERIMENTS["joint"]
    md = write_report(exp, _fabricated(exp), tmp_path, "pytest", 2, "default", n_boot=50)
    text = md.read_text()
    allowed = set(_VALUE.values()) | {a - b for a in _VALUE.values() for b in _VALUE.values()} | {0.0}
    strays = [x for x in _decimals(text) if not any(abs(x - a) < 6e-4 for a in allowed)]
    assert not strays, strays
    percents = set(re.findall(r"\d+%", re.sub(r"`[^`]*`", "", text)))
    assert percents <= {"95%"}, percents  # the intervals' level; no other percentage is computed
    assert "commit abcdef1 (20 runs)" in text and "uncommitted" not in text
    assert "seed-aware" in text and "Per-seed differences" in text and "100, 101" in text
    assert "untrained (random init)" in text and "zero-shot" not in text
    assert "K = 30" in text and "K = 10" in text  # the paper's setting beside this one's, no level compared
    # every trained method against the floors that need no training: FlexRec 0.711 - popularity 0.422
    assert "each trained method minus `random` and `popularity`" in text and "+0.289 [+0.289, +0.289]" in text
    assert "ahead of `popularity` on maximize_interest: 5/5 trained methods" in text  # SFT and the four RL rows


def test_final_report_refuses_runs_of_uncommitted_code(tmp_path):
    from flexrec.experiments.report import write_report

    exp = EXPERIMENTS["joint"]
    dirty = {"commit abcdef1 + uncommitted changes": 3, "commit 1234567": 2}
    with pytest.raises(DirtyTreeError, match="uncommitted"):
        write_report(exp, _fabricated(exp, codes=dirty), tmp_path, "pytest", 2, "default", n_boot=20)
    text = write_report(exp, _fabricated(exp, codes=dirty, allow_dirty=True), tmp_path, "pytest", 2, "default",
                        n_boot=20).read_text()
    first = text.split("\n")[2]
    assert first.startswith("**Not reproducible from a commit: 3 of the runs") and "--allow-dirty" in first
    assert "commit 1234567 (2 runs)" in text

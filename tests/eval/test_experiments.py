"""flexrec.experiments: registry checks, and a smoke run of the whole pipeline (train -> reload -> eval -> report)."""

import json

import numpy as np
import pytest

from flexrec.config import IMPUTERS, REWARD_MODES
from flexrec.eval import DataSpec
from flexrec.experiments import EXPERIMENTS, Experiment, Method, Setting
from flexrec.experiments.__main__ import parse_sets
from flexrec.train.rundir import read_run_config, train_config


def test_every_experiment_is_well_formed():
    assert set(EXPERIMENTS) == {"single-need", "joint", "generalization", "reward-form", "reward-source",
                                "uncertainty-strength", "rl-tuning"}
    for exp in EXPERIMENTS.values():
        labels = [m.label for m in exp.methods]
        assert len(labels) == len(set(labels)), exp.name
        for m in exp.methods:
            assert m.kind in ("baseline", "untrained", "sft", "rl")
            assert m.overrides.get("reward_mode", "flexrec") in REWARD_MODES
            assert m.overrides.get("imputer", "critic") in IMPUTERS
        ref, others = exp.compare
        assert ref in labels and set(others) <= set(labels), exp.name
        assert "zero-shot" not in " ".join(labels), exp.name  # the tiny model before training is random, not zero-shot


def test_uncertainty_strength_sweeps_eps_on_validation_users():
    exp = EXPERIMENTS["uncertainty-strength"]
    swept = [m.overrides["unc_eps"] for m in exp.methods if "unc_eps" in m.overrides]
    assert swept == list(exp.fidelity_eps) and len(swept) >= 3
    assert all(m.overrides["reward_mode"] == "flexrec" for m in exp.methods if "unc_eps" in m.overrides)
    assert any(m.overrides.get("reward_mode") == "flexrec-nounc" for m in exp.methods)  # the eps -> inf limit


def test_eval_uses_the_trainers_splits():
    from flexrec.config import USER_SPLITS

    assert tuple(DataSpec().split_fractions) == tuple(USER_SPLITS)


def test_unknown_setting_is_refused_with_the_known_ones():
    from flexrec.experiments.__main__ import main

    with pytest.raises(SystemExit, match="'nope'.*'maximize_interest'"):
        main(["single-need", "--setting", "nope"])


def test_parse_sets():
    assert parse_sets(["rl_steps=7", "trend-tags=false", "lr=0.5"]) == {"rl_steps": 7, "trend_tags": False, "lr": 0.5}
    with pytest.raises(SystemExit, match="unknown setting 'nope'"):
        parse_sets(["nope=1"])
    with pytest.raises(SystemExit, match="rl_steps = '1.5': expected an integer"):
        parse_sets(["rl_steps=1.5"])


@pytest.mark.slow
def test_smoke_experiment_end_to_end(tmp_path, capsys):
    """~30 s on a shared 2-core CPU: 1 seed, SFT + two RL forks + a from-scratch twin, on a 60-user world."""
    from flexrec.experiments import adapters
    from flexrec.experiments.report import write_report
    from flexrec.experiments.runner import SIZES, run_experiment, train_cfg
    from flexrec.eval.__main__ import main as eval_cli

    exp = Experiment(
        "smoke", "Smoke", "A tiny run of every kind of method.", [Setting("all needs", {"need": "all"})],
        [Method("popularity", "baseline", baseline="popularity"), Method("untrained", "untrained"),
         Method("SFT", "sft"), Method("seq", "rl", {"reward_mode": "seq"}), Method("FlexRec", "rl")],
        compare=("FlexRec", ["SFT", "seq"]), curves=True)
    out = run_experiment(exp, "smoke", seeds=1, runs_root=str(tmp_path / "runs"), device="cpu", log=lambda s: None)
    md = write_report(exp, out, tmp_path / "results", "pytest", 1, "smoke", n_boot=100)
    text = md.read_text()
    assert "### maximize_interest" in text and "| FlexRec |" in text and "Paired difference" in text
    assert "Training stability" in text
    pngs = sorted(p.name for p in (tmp_path / "results").glob("*.png"))
    assert pngs == ["smoke-all-needs.png", "smoke-curves-all-needs.png"]
    saved = json.loads((tmp_path / "results" / "smoke.json").read_text())
    cells = out["cells"]["all needs"]["training paraphrases"]

    # The reloaded checkpoint ranks exactly as the trainer's own final evaluation did (adapter drift check).
    run = tmp_path / "runs" / "smoke" / "all_needs" / "seed0" / "flexrec"
    trainer = json.loads((run / "results.json").read_text())
    for need, r in trainer["rl"].items():
        assert cells["FlexRec"].values[need]["ndcg@5"].mean() == pytest.approx(r["ndcg@5"], abs=1e-9)
        assert saved["results"]["all needs"]["training paraphrases"][need]["FlexRec"]["ndcg@5"]["n"] == r["n"]
    for need, r in trainer["untrained"].items():
        assert cells["untrained"].values[need]["ndcg@5"].mean() == pytest.approx(r["ndcg@5"], abs=1e-9)

    # Forking the SFT run reaches the same policy as training the same config from scratch.
    cfg = train_config(read_run_config(run))
    twin = adapters.train_run(train_cfg(vars(cfg), dict(out=str(tmp_path / "twin"), resume="")))
    assert json.loads((twin / "results.json").read_text())["rl"] == trainer["rl"]

    # python -m flexrec.eval --checkpoint on the same run prints the same numbers.
    report = eval_cli(["--checkpoint", str(run), "--n-boot", "50", "--split", "val"])  # the trainer scores val users
    for need, r in trainer["rl"].items():
        assert report["results"][need]["ndcg@5"]["mean"] == pytest.approx(r["ndcg@5"], abs=1e-9)
    assert "FlexRec" not in capsys.readouterr().out  # the CLI names the checkpoint, not a label

    steps, rewards = adapters.reward_curve(run)
    assert len(steps) == SIZES["smoke"]["rl_steps"] and np.isfinite(rewards).all()


@pytest.mark.slow
def test_validation_split_and_advantage_fidelity(tmp_path):
    """A setting is chosen on validation users: none of them is a test user, and the report says which."""
    import torch

    from flexrec.experiments.fidelity import NO_SCALING, advantage_fidelity
    from flexrec.experiments.report import write_report
    from flexrec.experiments.runner import run_experiment

    exp = Experiment("pick", "Pick", "Smoke.", [Setting("all needs", {"need": "all"})],
                     [Method("SFT", "sft"), Method("FlexRec, eps 1", "rl", {"unc_eps": 1.0})],
                     compare=("FlexRec, eps 1", ["SFT"]), fidelity_eps=(0.1, 1.0))
    kw = dict(runs_root=str(tmp_path / "runs"), device="cpu", log=lambda s: None)
    val = run_experiment(exp, "smoke", seeds=1, **kw)
    # test users only on a reserved confirmation seed (a development tree may be dirty: allowed here)
    test = run_experiment(exp, "smoke", seeds=[100], confirm=True, allow_dirty=True, **kw)
    assert val["split"] == "val" and test["split"] == "test" and test["seeds"] == [100] and test["runs"] == 2
    from flexrec.eval import load_examples, run_spec

    users = {}
    for split, out, seed in (("val", val, 0), ("test", test, 100)):
        cfg = train_config(read_run_config(tmp_path / f"runs/pick/all_needs/seed{seed}/sft-critic"))
        examples = load_examples(run_spec(cfg, split))[1]
        users[split] = {ex.user for ex in examples}
        cell = out["cells"]["all needs"]["training paraphrases"]["SFT"]
        for need in {ex.need for ex in examples}:
            assert len(cell.values[need]["ndcg@5"]) == sum(ex.need == need for ex in examples)
    assert users["val"] and users["test"]
    text = write_report(exp, val, tmp_path / "results", "pytest", 1, "smoke", n_boot=50).read_text()
    assert "validation users" in text and "Advantage fidelity" in text and "confirmation seeds" not in text

    sft = tmp_path / "runs/pick/all_needs/seed0/sft-critic"
    fid = advantage_fidelity(sft, eps=(0.1,), prompts=32)
    assert fid["effective_share"][NO_SCALING] == 1.0 and 0 < fid["effective_share"]["eps 0.1"] < 1
    assert all(-1.0 <= c <= 1.0 for c in fid["cosine"].values())
    assert fid["cosine"][NO_SCALING] < 1.0  # the critic's fill is not the truth
    assert fid["cosine_actual_error"][NO_SCALING] == fid["cosine"][NO_SCALING]
    # Filled labels equal to the true ones: the unscaled advantages are the true advantages.
    state = torch.load(sft / "checkpoint.pt", map_location="cpu", weights_only=False)
    exact = tmp_path / "exact"
    exact.mkdir()
    for name in ("config.json",):
        (exact / name).write_text((sft / name).read_text())
    cfg = train_config(read_run_config(sft))
    from flexrec.config import need_list
    from flexrec.config import data_options
    from flexrec.data import NEEDS, build_examples, load

    train_ex = build_examples(load(cfg.data, **data_options(cfg)), need_list(cfg.need, NEEDS), "train",
                              cfg.num_candidates, cfg.seed)
    state["gains"] = torch.from_numpy(np.stack([e.true_labels for e in train_ex])).to(state["gains"].dtype)
    torch.save(state, exact / "checkpoint.pt")
    assert advantage_fidelity(exact, eps=(), prompts=32)["cosine"][NO_SCALING] == pytest.approx(1.0, abs=1e-5)


def test_a_stale_finished_run_is_replaced_with_the_settings_that_differ_named(tmp_path, capsys):
    from flexrec.config import TrainConfig, to_dict
    from flexrec.experiments.adapters import _replacing

    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps(to_dict(TrainConfig(need_weights="explore_new_topics=2"))))
    (run / "results.json").write_text("{}")
    _replacing(run, TrainConfig(need_weights="explore_new_topics=3"))
    assert not run.exists()
    assert "need_weights: 'explore_new_topics=2' -> 'explore_new_topics=3'" in capsys.readouterr().out


def test_run_finished_ignores_only_the_settings_a_run_never_read(tmp_path):
    from flexrec.config import TrainConfig, to_dict
    from flexrec.experiments.adapters import run_finished

    def saved(**kw):
        cfg = TrainConfig(out=str(tmp_path / "elsewhere"), **kw)
        (tmp_path / "config.json").write_text(json.dumps(to_dict(cfg)))
        return cfg

    (tmp_path / "results.json").write_text("{}")
    (tmp_path / "checkpoint.pt").write_bytes(b"")
    sft = saved(rl_steps=0, unc_eps=0.1)
    assert run_finished(tmp_path, TrainConfig(rl_steps=0, unc_eps=10.0, lr=1.0, reward_mode="seq", out="x"))
    assert not run_finished(tmp_path, TrainConfig(rl_steps=0, sft_lr=sft.sft_lr * 2, out="x"))
    assert not run_finished(tmp_path, TrainConfig(rl_steps=1, out="x"))  # an RL run is not its SFT parent
    saved(reward_mode="seq", unc_eps=0.1)
    assert run_finished(tmp_path, TrainConfig(reward_mode="seq", unc_eps=10.0, out="x"))
    assert not run_finished(tmp_path, TrainConfig(reward_mode="seq", lr=1.0, out="x"))
    saved(reward_mode="flexrec", unc_eps=0.1)
    assert not run_finished(tmp_path, TrainConfig(reward_mode="flexrec", unc_eps=10.0, out="x"))
    # a run kept from before rl_need_weights existed ran the unweighted RL draw: reused at "" only
    config = json.loads((tmp_path / "config.json").read_text())
    del config["rl_need_weights"]
    (tmp_path / "config.json").write_text(json.dumps(config))
    assert run_finished(tmp_path, TrainConfig(reward_mode="flexrec", unc_eps=0.1, out="x"))
    weighted = TrainConfig(reward_mode="flexrec", unc_eps=0.1, rl_need_weights="trend_promotion=2", out="x")
    assert not run_finished(tmp_path, weighted)
    from flexrec.experiments.adapters import settings_differing

    assert settings_differing(tmp_path, weighted) == ["rl_need_weights: '' -> 'trend_promotion=2'"]
    (tmp_path / "results.json").unlink()  # an unfinished run is never reused
    assert not run_finished(tmp_path, TrainConfig(reward_mode="flexrec", unc_eps=0.1, out="x"))


def test_fork_run_refuses_a_warm_start_from_another_world_or_critic(tmp_path):
    from flexrec.config import TrainConfig, to_dict
    from flexrec.experiments.adapters import fork_run

    sft = tmp_path / "sft"
    sft.mkdir()
    for key, value in (("world_evidence", "sparse"), ("critic_evidence", True), ("critic_recalibrate", "val"),
                       ("critic_observed_var", "estimate"), ("critic_cold_views", True), ("signal_tiers", 20)):
        (sft / "config.json").write_text(json.dumps(to_dict(TrainConfig(rl_steps=0, **{key: value}))))
        with pytest.raises(ValueError, match=f"fork_run: {key} differs from the SFT run"):
            fork_run(sft, TrainConfig(out=str(tmp_path / "rl")))
    assert not (tmp_path / "rl").exists()


def test_the_reports_paper_check_names_the_k_the_runs_used():
    from flexrec.eval.evaluate import METRICS
    from flexrec.experiments.report import _against_paper
    from flexrec.experiments.runner import Cell

    exp, rng = EXPERIMENTS["joint"], np.random.default_rng(0)
    by_method = {}
    for method in exp.methods:
        by_method[method.label] = Cell()
        for seed in (0, 1):
            by_method[method.label].add(seed, {"maximize_interest": {m: rng.random(6) for m in METRICS}})
    for base, K in (({"data": "ml-100k"}, 20), ({"data": "synthetic"}, 10), ({"num_candidates": 30}, 30)):
        text = "\n".join(_against_paper(exp, by_method, ["maximize_interest"], 20, base))
        assert f"with K = {K}." in text, base  # ml-100k's K comes from its data defaults, not the settings

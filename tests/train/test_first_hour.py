"""What a new user meets first: config errors, a reused run directory, a damaged checkpoint, threads, the report."""

import dataclasses
import json

import pytest
import torch

from flexrec.config import ConfigError, TrainConfig, load_file, parse_args
from flexrec.train import train
from flexrec.train.__main__ import main
from flexrec.train.rundir import CHECKPOINT, PREVIOUS, RunDirError, load_checkpoint


def test_config_file_problems_are_listed_by_key_value_and_type(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("sft_stepz: 10\nlr: fast\nrl_steps: 2.5\nprogress: 'no'\n")
    with pytest.raises(ConfigError) as err:
        load_file(str(path))
    problems = err.value.problems
    assert len(problems) == 3  # one line per wrong setting; progress "no" is fine
    assert "unknown setting 'sft_stepz' (did you mean 'sft_steps'?)" in problems[0]
    assert "lr = 'fast': expected a number (float)" in problems[1]
    assert "rl_steps = 2.5: expected an integer (int)" in problems[2]


def test_config_file_values_are_typed(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("progress: 'no'\nlr: 1e-3\nrl_steps: 4\n")  # YAML reads 1e-3 as a string
    cfg = parse_args(["--config", str(path)])
    assert (cfg.progress, cfg.lr, cfg.rl_steps) == (False, 0.001, 4)


def test_cli_reports_config_errors_like_argparse_before_any_work(tmp_path, capsys, monkeypatch):
    from flexrec.train import loop

    monkeypatch.setattr(loop, "load", lambda *a, **k: pytest.fail("data was loaded for a config that cannot run"))
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"sft_steps": 1.5, "reward_mode": "vibes"}))
    assert main(["--config", str(path), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"python -m flexrec.train: error: --config {path}: sft_steps = 1.5: expected an integer (int)"]
    assert main(["--reward-mode", "vibes", "--need", "nope", "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "--reward-mode 'vibes'" in err[0] and "unknown need 'nope'" in err[1]
    assert not (tmp_path / "run").exists()  # no config.json left behind


def test_a_new_run_refuses_a_directory_that_holds_one(tmp_path, small_config):
    cfg = small_config(tmp_path, sft_steps=1, rl_steps=1)
    train(cfg)
    with pytest.raises(RunDirError, match=rf"--out {cfg.out} already holds a run.*--resume {cfg.out}.*--overwrite"):
        train(cfg)
    rows = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    train(dataclasses.replace(cfg, overwrite=True))
    assert (tmp_path / "run" / "metrics.jsonl").read_text().splitlines() == rows  # replaced, not appended
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("mine")
    with pytest.raises(RunDirError, match="not a flexrec run directory"):
        train(dataclasses.replace(cfg, out=str(tmp_path / "notes"), overwrite=True))
    assert (tmp_path / "notes" / "todo.txt").read_text() == "mine"


def test_damaged_checkpoint_names_the_file_and_the_whole_one(tmp_path, small_config):
    cfg = small_config(tmp_path, sft_steps=3, rl_steps=0, save_every=1)
    train(cfg)
    run = tmp_path / "run"
    assert load_checkpoint(run)["step"] == 3 and (run / PREVIOUS).is_file()  # the one before the last save
    data = (run / CHECKPOINT).read_bytes()
    (run / CHECKPOINT).write_bytes(data[: len(data) // 2])  # cut, as a full disk or a killed copy leaves it
    with pytest.raises(RunDirError, match=rf"{run / CHECKPOINT} is damaged.*{run / PREVIOUS} \(step 3\) is whole"):
        train(TrainConfig(resume=str(run)))
    from flexrec.eval.__main__ import main as eval_cli

    with pytest.raises(RunDirError, match=rf"--checkpoint {run}: .* is damaged.*run with --checkpoint {run} again"):
        eval_cli(["--checkpoint", str(run)])


def test_resumed_run_keeps_its_report_lines(tmp_path, small_config):
    cfg = small_config(tmp_path, sft_steps=2, rl_steps=1)

    def stop(step):
        if step == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(cfg, on_step=stop)
    train(TrainConfig(resume=cfg.out))
    report = (tmp_path / "run" / "report.md").read_text()
    assert "critic calibration on" in report and "Ops backends on cpu" in report
    # the instruction set of torch's CPU kernels, without which a run cannot be repeated bit for bit elsewhere
    capability = torch.backends.cpu.get_cpu_capability()
    assert f"torch CPU kernels: {capability}." in report
    assert json.loads((tmp_path / "run" / "config.json").read_text())["cpu_capability"] == capability


def test_load_run_uses_the_trainers_thread_policy(tmp_path, small_config):
    import flexrec

    train(small_config(tmp_path, sft_steps=1, rl_steps=0))
    torch.set_num_threads(2)
    try:
        flexrec.load_run(tmp_path / "run")
        assert torch.get_num_threads() == 1  # TrainConfig.threads
    finally:
        torch.set_num_threads(1)


def test_run_config_records_code_version_and_ops_backends(tmp_path, small_config):
    train(small_config(tmp_path, sft_steps=1, rl_steps=0))
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert set(saved["ops_backends"]) >= {"extension", "swap_reward", "decode_step", "pool_sample"}
    loaded = saved["ops_backends"]["extension"] == "loaded"
    assert saved["ops_backends"]["swap_reward"] == ("c" if loaded else "ref")  # the fallback is recorded, not hidden
    assert set(saved["code_version"]) == {"commit", "dirty"}


def test_loss_plot_names_each_stage_and_marks_where_rl_starts(tmp_path):
    from flexrec.train.report import plot_curves

    rows = [{"step": s, "sft/loss": 1.0 / s} for s in range(1, 5)] + [{"step": s, "rl/loss": 0.1} for s in range(5, 8)]
    labels = plot_curves(rows, [("sft/loss", "SFT loss"), ("rl/loss", "RL loss")], "loss", tmp_path / "l.png", 4)
    assert labels == ["SFT loss", "RL loss", "SFT | RL"] and (tmp_path / "l.png").is_file()


def test_progress_bar_names_the_stage(tmp_path, small_config, capsys):
    train(small_config(tmp_path, sft_steps=1, rl_steps=1, progress=True))
    err = capsys.readouterr().err
    assert "SFT" in err and "RL" in err and "evaluation" in err


@pytest.mark.parametrize("name", ["ml-1m", "kuairec"])
def test_missing_dataset_names_the_cli_flag(name):
    from flexrec.data import load

    with pytest.raises(FileNotFoundError, match="--data-path DIR"):
        load(name)


def test_report_to_wandb_logs_every_row_and_fails_early_when_missing(tmp_path, small_config, monkeypatch):
    import importlib.machinery
    import sys
    import types

    logged, finished = [], []
    fake = types.ModuleType("wandb")
    fake.__spec__ = importlib.machinery.ModuleSpec("wandb", None)  # other libraries probe it with find_spec
    fake.init = lambda **kw: types.SimpleNamespace(log=lambda values, step: logged.append((step, values)),
                                                   finish=lambda: finished.append(True))
    monkeypatch.setitem(sys.modules, "wandb", fake)
    train(small_config(tmp_path, sft_steps=2, rl_steps=1, report_to="wandb"))
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [step for step, _ in logged] == [r["step"] for r in rows] and finished == [True]
    assert "sft/loss" in logged[0][1] and "rl/loss" in logged[-1][1]
    monkeypatch.setitem(sys.modules, "wandb", None)  # not installed
    with pytest.raises(RunDirError, match="--report-to wandb needs wandb: pip install wandb"):
        train(small_config(tmp_path, out=str(tmp_path / "other"), report_to="wandb"))
    assert not (tmp_path / "other").exists()


def test_damaged_checkpoint_without_an_earlier_one_says_so(tmp_path):
    torch.save({"step": 1}, tmp_path / CHECKPOINT)
    data = (tmp_path / CHECKPOINT).read_bytes()
    (tmp_path / CHECKPOINT).write_bytes(data[: len(data) // 2])
    with pytest.raises(RunDirError, match="is damaged.*There is no earlier checkpoint to fall back on"):
        load_checkpoint(tmp_path)
    torch.save({"step": 1, "sharded_state": "state-00000001"}, tmp_path / PREVIOUS)  # FSDP: its shards are gone
    with pytest.raises(RunDirError, match=r"names shards \(state-00000001\) that are gone"):
        load_checkpoint(tmp_path)

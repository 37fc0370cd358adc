"""A training run scores validation users only: no test-user metric in its log, results.json, report.md or
printed table (issue 15: no setting may be chosen by looking at the test users)."""

import json
import re

import pytest

from flexrec.config import TrainConfig
from flexrec.train import train


def _numbers(text: str) -> set[str]:
    return set(re.findall(r"\d+\.\d+", text))


def test_training_run_never_builds_or_scores_test_users(tmp_path, small_config, monkeypatch, capsys):
    import flexrec
    from flexrec.eval import per_user_values
    from flexrec.train import loop

    splits = []
    real = loop.build_examples

    def recording(data, needs, split, *args, **kwargs):
        splits.append(split)
        return real(data, needs, split, *args, **kwargs)

    monkeypatch.setattr(loop, "build_examples", recording)
    cfg = small_config(tmp_path, sft_steps=2, rl_steps=2, eval_users=0)  # every validation / test user
    results = train(cfg)
    printed = capsys.readouterr().out
    assert "test" not in splits and loop.RESULTS_SPLIT == "val" and "val" in splits

    run_dir = tmp_path / "run"
    run = flexrec.load_run(run_dir)
    assert json.loads((run_dir / "config.json").read_text())["results_split"] == "val"
    val, test = ({need: {m: float(v[m].mean()) for m in ("ndcg@5", "recall@5")} for need, v in
                  per_user_values(ex, run.rank(ex)).items()} for ex in (run.examples("val"), run.examples("test")))
    for need, r in results["rl"].items():  # the trainer's numbers are the validation users'
        assert r["ndcg@5"] == pytest.approx(val[need]["ndcg@5"], abs=1e-9), need

    # No test-user value of the final policy appears anywhere the run wrote or printed (unless a validation
    # value has the same digits).
    texts = {name: (run_dir / name).read_text() for name in ("results.json", "metrics.jsonl", "report.md")}
    texts["printed"] = printed
    val_digits = {f"{r[m]:.3f}" for stage in results.values() for r in stage.values() for m in ("ndcg@5", "recall@5")}
    for need, r in test.items():
        for m, value in r.items():
            for name, text in texts.items():
                assert repr(value) not in text or repr(value) in {repr(x[m]) for x in val.values()}, (name, need, m)
                digits = f"{value:.3f}"
                if digits not in val_digits and digits not in {"0.000", "1.000"}:
                    assert digits not in _numbers(text), (name, need, m, digits)
    for text in (texts["report.md"], printed):
        assert "validation users" in text and "untrained (random init)" in text and "zero-shot" not in text
    assert "test users" not in texts["report.md"].split("## Results")[1].split("\n")[0].replace(
        "test users: python -m flexrec.eval", "")


def test_trainer_default_seed_is_not_a_confirmation_seed():
    from flexrec.experiments.runner import CONFIRM_SEEDS

    assert TrainConfig().seed == 0 and TrainConfig().seed < min(CONFIRM_SEEDS)

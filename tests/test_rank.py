"""flexrec.rank: a request file with good and bad requests ranks the good ones and reports each bad one;
rankings of requests are the rankings load_run gives the same pools."""

import dataclasses
import json

import numpy as np
import pytest
import torch

from flexrec.config import TrainConfig
from flexrec.data import NEEDS
from flexrec.rank.__main__ import main
from flexrec.runs import load_run

torch.set_num_threads(1)


def tiny_run(out, **overrides):
    """A run that trains in seconds: small synthetic world, K=5, a few SFT and RL steps."""
    from flexrec.train import train

    cfg = TrainConfig(world_users=60, world_items=60, world_topics=4, num_candidates=5, history_max=3,
                      tiny_hidden=32, critic_ensemble=1, critic_epochs=3, sft_steps=4, rl_steps=2, batch_size=4,
                      prompts_per_step=2, group_size=3, eval_every=100, eval_users=20, save_every=100,
                      cache_dir=str(out.parent / "cache"), out=str(out), progress=False)
    train(dataclasses.replace(cfg, **overrides))
    return out


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return load_run(tiny_run(tmp_path_factory.mktemp("rank") / "run"))


def requests_of(run, examples):
    keys = run.data.item_keys
    return [{"id": f"r{n}", "user": run.data.user_keys[e.user], "candidates": [keys[i] for i in e.items],
             "need": e.need} for n, e in enumerate(examples)]


def same_instruction(run):
    """Test pools whose instruction is the need's first (the one a request by need name gets)."""
    examples = [e for e in run.examples("test", "all") if e.instruction == NEEDS[e.need].instructions[0]]
    assert len({e.need for e in examples}) >= 2
    return examples


def test_requests_rank_as_load_run_ranks_the_same_pools(run):
    examples = same_instruction(run)
    expected = run.rank(examples)
    keys = run.data.item_keys
    by_user = run.rank_requests(requests_of(run, examples))
    # The same pools with the history spelled out (ids and ratings), as a caller without the run's users would.
    spelled = [{"id": f"h{n}", "history": [[keys[i], float(f)] for i, f in zip(e.history_items, e.history_feedback)],
                "candidates": [keys[i] for i in e.items], "need": e.need} for n, e in enumerate(examples)]
    by_history = run.rank_requests(spelled, batch_size=3)
    for e, perm, a, b in zip(examples, expected, by_user, by_history):
        want = [keys[i] for i in e.items[perm.numpy()]]
        assert a["error"] is None and a["ranking"] == want and b["ranking"] == want
        assert len(a["probs"]) == e.K and all(0 < p <= 1 for p in a["probs"]) and a["probs"][-1] == pytest.approx(1)
        assert a["probs"] == pytest.approx(b["probs"], abs=1e-5)


def test_probs_are_the_policys_step_probabilities(run):
    examples = same_instruction(run)[:4]
    batch = run.collate(examples, run.tokenizer, run.data)
    out = run.policy.rank(batch.input_ids, batch.attention_mask, examples[0].K, greedy=True)
    answers = run.rank_requests(requests_of(run, examples))
    np.testing.assert_allclose([a["probs"] for a in answers], out.logprob[:, 0].exp().numpy(), atol=1e-6)


def test_a_request_file_with_good_and_bad_requests(run, tmp_path, capsys):
    keys, titles = run.data.item_keys, run.data.item_titles
    unique_title = next(t for t in titles if titles.count(t) == 1)
    good = [
        {"id": "ids", "history": [keys[0], {"item": keys[1], "rating": 2}], "candidates": keys[10:15],
         "need": "maximize_interest"},
        {"id": "titles", "history": [unique_title], "candidates": [keys[20], unique_title, keys[22]],
         "need": "trend_promotion"},  # fewer candidates than K, and a title
    ]
    bad = [
        ({"id": "unknown", "history": [], "candidates": [keys[1], "no-such-item"], "need": "maximize_interest"},
         "candidates[1]: unknown item 'no-such-item'"),
        ({"id": "unknown-history", "history": ["nope"], "candidates": keys[:2], "need": "maximize_interest"},
         "history[0]: unknown item 'nope'"),
        ({"id": "empty", "candidates": [], "need": "maximize_interest"}, "candidates: expected a non-empty list"),
        ({"id": "too-many", "candidates": keys[:6], "need": "maximize_interest"},
         "candidates: 6 items, more than this model's K=5 slots"),
        ({"id": "twice", "candidates": [keys[3], keys[3]], "need": "maximize_interest"}, "appears more than once"),
        ({"id": "free-text", "candidates": keys[:3], "need": "something cosy for a rainy evening"},
         "cannot follow free text; give a registered need"),
        ({"id": "bad-rating", "history": [[keys[0], "great"]], "candidates": keys[:3], "need": "maximize_interest"},
         "history[0]: the rating \"great\" is not a number"),
        ({"id": "no-need", "candidates": keys[:3]}, "need: expected a registered need"),
        ({"id": "unknown-user", "user": "nobody", "candidates": keys[:3], "need": "maximize_interest"},
         "user: unknown user 'nobody'"),
    ]
    lines = [json.dumps(r) for r in good[:1] + [b for b, _ in bad] + good[1:]] + ["{not json"]
    (tmp_path / "requests.jsonl").write_text("\n".join(lines) + "\n")
    out = tmp_path / "answers.jsonl"
    rc = main(["--run", run.config.out, "--input", str(tmp_path / "requests.jsonl"), "--output", str(out),
               "--no-progress"])
    answers = [json.loads(line) for line in out.read_text().splitlines()]
    assert rc == 0 and [a["id"] for a in answers] == ["ids"] + [b["id"] for b, _ in bad] + ["titles", 12]
    first, last = answers[0], answers[-2]
    assert first["error"] is None and sorted(first["ranking"]) == sorted(keys[10:15]) and len(first["probs"]) == 5
    assert last["error"] is None and sorted(last["ranking"]) == sorted([keys[20], keys[titles.index(unique_title)],
                                                                        keys[22]])
    for answer, (_, message) in zip(answers[1:-2], bad):
        assert answer["ranking"] is None and message in answer["error"], answer
    assert "line 12: not JSON" in answers[-1]["error"]
    err = capsys.readouterr().err
    assert f"ranked 2 of 12 requests -> {out}; 10 with an error:" in err and "too-many: candidates: 6 items" in err


def test_prompts_only_gives_the_prompts_that_are_ranked(run):
    examples = same_instruction(run)[:3]
    answers = run.rank_requests(requests_of(run, examples), prompts_only=True)
    ranked = run.rank_requests(requests_of(run, examples), with_prompts=True)
    assert [a["prompt"] for a in answers] == run.collate(examples, run.tokenizer, run.data).prompts
    assert [a["prompt"] for a in answers] == [a["prompt"] for a in ranked]
    assert answers[0]["candidates"] == [run.data.item_keys[i] for i in examples[0].items]


def test_a_bad_run_or_input_writes_nothing(run, tmp_path, capsys):
    (tmp_path / "requests.jsonl").write_text("{}\n")
    out = tmp_path / "answers.jsonl"
    assert main(["--run", str(tmp_path), "--input", str(tmp_path / "requests.jsonl"), "--output", str(out)]) == 2
    assert "no config.json" in capsys.readouterr().err and not out.exists()
    assert main(["--run", run.config.out, "--input", str(tmp_path / "missing.jsonl"), "--output", str(out)]) == 2
    assert "missing.jsonl" in capsys.readouterr().err and not out.exists()

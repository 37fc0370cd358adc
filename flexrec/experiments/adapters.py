"""(Adapter, ours) The thin layer between the trainer (`flexrec.train`) and the experiments.

`train_run` trains a config unless an identical finished run is already there; a finished run is
ranked with through `flexrec.load_run`. `fork_run` continues a finished SFT-only run with different RL settings (reward form, steps) through
the trainer's own `--resume`, so that methods sharing a warm start do not each repeat it.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from pathlib import Path

import numpy as np
import torch

from flexrec.train.rundir import read_run_config


def run_finished(run_dir: Path, cfg) -> bool:
    """A run with this exact config already ran to the end (results.json is written last)."""
    if not (run_dir / "results.json").is_file() or not (run_dir / "checkpoint.pt").is_file():
        return False
    return not settings_differing(run_dir, cfg)


def settings_differing(run_dir: Path, cfg) -> list[str]:
    """The settings of ``cfg`` that the run saved in ``run_dir`` ran with other values, as "name: saved -> wanted".

    Strict: a setting the saved run lacks was added to the trainer later, and its default need not be what the old
    trainer did (e.g. `prompt`), so it differs. Settings the run never read (the RL settings of an SFT-only run,
    `flexrec.config.unused_settings`) do not; a setting in `ADDED_SETTINGS_AS_BEFORE` that the run lacks ran at the
    value listed there."""
    from flexrec.config import ADDED_SETTINGS_AS_BEFORE, to_dict, unused_settings

    saved = {**ADDED_SETTINGS_AS_BEFORE, **read_run_config(run_dir)}
    skip = {"out", "resume", "progress", "overwrite", "report_to"} | unused_settings(cfg)
    return [f"{k}: {saved.get(k, '(not in the run)')!r} -> {v!r}" for k, v in to_dict(cfg).items()
            if k not in skip and saved.get(k, "(not in the run)") != v]


def _replacing(out: Path, cfg) -> None:
    """Deletes ``out`` before a run is trained there, saying which settings made a finished run there stale."""
    if (out / "results.json").is_file() and (out / "config.json").is_file():
        print(f"{out}: a finished run with other settings is replaced ({'; '.join(settings_differing(out, cfg))})",
              flush=True)
    shutil.rmtree(out)


def train_run(cfg) -> Path:
    """Run `flexrec.train.train(cfg)` unless an identical finished run is already in `cfg.out`."""
    from flexrec.train.loop import train

    out = Path(cfg.out)
    if not run_finished(out, cfg):
        if out.exists():
            _replacing(out, cfg)
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
    from flexrec.train.loop import train

    out = Path(cfg.out)
    if run_finished(out, cfg):
        return out
    base = read_run_config(sft_run)
    for key in ("data", "need", "model", "imputer", "sft_steps", "seed", "num_candidates", "world_users",
                "world_items", "world_topics", "world_evidence", "observe_fraction", "tiny_hidden", "tiny_layers", "gain",
                "critic_evidence", "critic_recalibrate", "critic_observed_var",
                "critic_cold_views", "prompt", "signal_tiers", "signal_scale", "sft_lr_decay",
                "need_in_lines"):
        if key in base and base[key] != getattr(cfg, key):
            raise ValueError(f"fork_run: {key} differs from the SFT run ({base[key]!r} vs {getattr(cfg, key)!r})")
    if out.exists():
        _replacing(out, cfg)
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

"""The run directory: resolved config, metrics as JSON lines, TensorBoard events, atomic checkpoints.

Layout of ``--out DIR``::

    config.json        the resolved config (also printed at start)
    metrics.jsonl      one JSON object per logged step or evaluation
    checkpoint.pt      the latest resumable state (written to a temporary file, then os.replace)
    state-<step>/      FSDP runs: the sharded model and optimiser (torch.distributed.checkpoint) that
                       checkpoint.pt names; see flexrec.parallel
    tb/                TensorBoard events, when tensorboard is installed
    report.md, *.png   the final report (flexrec.report)
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch


class RunDir:
    """``writer=False`` (every rank but rank 0 under torchrun): the same object, writing nothing."""

    def __init__(self, path: str, config: dict[str, Any], writer: bool = True):
        self.path = Path(path)
        self.writer = writer
        self._tb = None
        if not writer:
            return
        self.path.mkdir(parents=True, exist_ok=True)
        (self.path / "config.json").write_text(json.dumps(config, indent=2) + "\n")
        try:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(self.path / "tb"))
        except ImportError:  # tensorboard is optional: metrics.jsonl has everything
            pass

    def log(self, step: int, values: dict[str, Any]) -> None:
        if not self.writer:
            return
        row = {"step": step, **values}
        with open(self.path / "metrics.jsonl", "a") as f:
            f.write(json.dumps(row) + "\n")
        if self._tb is not None:
            for key, v in values.items():
                if isinstance(v, (int, float)) and not isinstance(v, bool):
                    self._tb.add_scalar(key, v, step)

    def metrics(self) -> list[dict[str, Any]]:
        path = self.path / "metrics.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

    def truncate_metrics(self, step: int) -> None:
        """On resume: drop rows logged after the checkpoint, so the log matches an uninterrupted run."""
        if not self.writer:
            return
        rows = [r for r in self.metrics() if r["step"] <= step]
        path = self.path / "metrics.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))

    def save_checkpoint(self, state: dict[str, Any]) -> Path:
        final = self.path / "checkpoint.pt"
        if not self.writer:
            return final
        tmp = self.path / "checkpoint.pt.tmp"
        torch.save(state, tmp)
        os.replace(tmp, final)  # atomic: a crash leaves the old checkpoint or the new one, never half
        return final

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


def load_checkpoint(run_dir: str) -> dict[str, Any]:
    path = Path(run_dir) / "checkpoint.pt"
    if not path.is_file():
        raise ValueError(f"--resume {run_dir}: no checkpoint.pt there")
    return torch.load(path, map_location="cpu", weights_only=False)


def rng_state(np_rng: np.random.Generator, torch_gen: torch.Generator) -> dict[str, Any]:
    """Every random state a run draws from, so that a resumed run continues the same streams."""
    state = {
        "python": random.getstate(),
        "numpy_global": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "sampler": np_rng.bit_generator.state,
        "gumbel": torch_gen.get_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any], np_rng: np.random.Generator, torch_gen: torch.Generator) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy_global"])
    torch.set_rng_state(state["torch"])
    np_rng.bit_generator.state = state["sampler"]
    torch_gen.set_state(state["gumbel"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


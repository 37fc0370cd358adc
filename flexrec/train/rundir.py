"""The run directory: resolved config, metrics as JSON lines, atomic checkpoints, the code version.

Layout of ``--out DIR``::

    config.json          the resolved config (also printed at start), with the code version and ops backends
    metrics.jsonl        one JSON object per logged step or evaluation
    checkpoint.pt        the latest resumable state (written to a temporary file, then os.replace)
    checkpoint.prev.pt   the one before it, kept whole in case the latest is damaged
    state-<step>/        FSDP runs: the sharded model and optimiser (torch.distributed.checkpoint) that
                         checkpoint.pt names; see flexrec.train.data_parallel
    tb/                  TensorBoard events, with --report-to tensorboard
    report.md, *.png     the final report (flexrec.train.report)

A new run refuses a directory that already holds one (``--overwrite`` replaces it, ``--resume``
continues it), so two runs never mix their metrics or checkpoints.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import shutil
import subprocess
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

CHECKPOINT = "checkpoint.pt"
PREVIOUS = "checkpoint.prev.pt"


class RunDirError(ValueError):
    """A run directory that cannot be used as asked (it holds another run, or a damaged checkpoint)."""


def check_new_run(out: str | Path, overwrite: bool) -> None:
    """Refuse a non-empty ``out`` for a new run, unless ``overwrite`` (and it holds a run to replace)."""
    path = Path(out)
    if not path.exists() or (path.is_dir() and not any(path.iterdir())):
        return
    if not path.is_dir():
        raise RunDirError(f"--out {out} is a file, not a directory; choose another --out")
    held = sorted(p.name for p in path.iterdir())
    if not overwrite:
        raise RunDirError(
            f"--out {out} already holds a run ({', '.join(held[:5])}{', ...' if len(held) > 5 else ''}). "
            f"Continue it with --resume {out}, replace it with --overwrite, or choose another --out.")
    if not (path / "config.json").is_file():
        raise RunDirError(f"--overwrite: {out} is not a flexrec run directory (no config.json); "
                          "flexrec deletes only its own runs. Choose another --out.")


def code_version() -> dict[str, Any]:
    """The git commit of the flexrec source, and whether the tree had uncommitted changes.

    ``{"commit": None}`` when flexrec is not imported from a git checkout (an installed wheel).
    """
    root = Path(__file__).resolve().parents[2]
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return {"commit": None, "dirty": None}
    return {"commit": head, "dirty": bool(dirty)}


def describe_code(version: dict[str, Any]) -> str:
    """"commit abc1234", "commit abc1234 + uncommitted changes" or "not a git checkout"."""
    if not version or not version.get("commit"):
        return "not a git checkout"
    return f"commit {version['commit'][:7]}" + (" + uncommitted changes" if version.get("dirty") else "")


class RunDir:
    """``writer=False`` (every rank but rank 0 under torchrun): the same object, writing nothing.

    ``fresh``: a new run (not a resume): with ``overwrite`` the directory's old run is deleted first.
    ``report_to``: "none", "tensorboard" or "wandb": metrics also go there (metrics.jsonl always).
    """

    def __init__(self, path: str, config: dict[str, Any], writer: bool = True, fresh: bool = False,
                 overwrite: bool = False, report_to: str = "none", meta: Optional[dict[str, Any]] = None):
        self.path = Path(path)
        self.writer = writer
        self._tracker = None
        if not writer:
            return
        if fresh and overwrite and self.path.is_dir():
            check_new_run(self.path, overwrite=True)
            shutil.rmtree(self.path)
        self.path.mkdir(parents=True, exist_ok=True)
        (self.path / "config.json").write_text(json.dumps({**config, **(meta or {})}, indent=2) + "\n")
        self._tracker = _tracker(report_to, self.path, config)

    def log(self, step: int, values: dict[str, Any]) -> None:
        if not self.writer:
            return
        row = {"step": step, **values}
        with open(self.path / "metrics.jsonl", "a") as f:
            f.write(json.dumps(row) + "\n")
        if self._tracker is not None:
            self._tracker(step, {k: v for k, v in values.items() if isinstance(v, (int, float))
                                 and not isinstance(v, bool)})

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
        final = self.path / CHECKPOINT
        if not self.writer:
            return final
        tmp = self.path / (CHECKPOINT + ".tmp")
        torch.save(state, tmp)
        if final.exists():
            os.replace(final, self.path / PREVIOUS)
        os.replace(tmp, final)  # atomic: a crash leaves the old checkpoint or the new one, never half
        return final

    def close(self) -> None:
        if self._tracker is not None:
            self._tracker(None, None)


def check_report_to(report_to: str) -> None:
    """Fail before any work when the tracker that ``--report-to`` names is not installed."""
    module = {"tensorboard": "torch.utils.tensorboard", "wandb": "wandb"}.get(report_to)
    if module is None:
        return
    try:
        __import__(module)
    except ImportError as err:
        raise RunDirError(f"--report-to {report_to} needs {report_to}: pip install {report_to}"
                          + (" (WANDB_MODE=offline works without an account)" if report_to == "wandb" else "")) from err


def _tracker(report_to: str, path: Path, config: dict[str, Any]):
    """A ``log(step, scalars)`` function for TensorBoard or Weights & Biases; ``log(None, None)`` closes it."""
    if report_to == "none":
        return None
    if report_to == "tensorboard":
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as err:
            raise RunDirError("--report-to tensorboard needs tensorboard: pip install tensorboard") from err
        writer = SummaryWriter(str(path / "tb"))

        def log(step, scalars):
            if step is None:
                writer.close()
                return
            for key, v in scalars.items():
                writer.add_scalar(key, v, step)

        return log
    if report_to == "wandb":
        try:
            import wandb
        except ImportError as err:
            raise RunDirError("--report-to wandb needs wandb: pip install wandb (WANDB_MODE=offline works "
                              "without an account)") from err
        run = wandb.init(project=os.environ.get("WANDB_PROJECT", "flexrec"), dir=str(path), config=config,
                         name=path.name)

        def log(step, scalars):
            if step is None:
                run.finish()
                return
            run.log(scalars, step=step)

        return log
    raise RunDirError(f"--report-to {report_to!r}: expected none, tensorboard or wandb")


def _load(path: Path) -> dict[str, Any]:
    return torch.load(path, map_location="cpu", weights_only=False)


def load_checkpoint(run_dir: str | Path, flag: str = "--resume") -> dict[str, Any]:
    """The run's latest checkpoint; a damaged one is a RunDirError naming the file and any whole earlier one."""
    run_dir = Path(run_dir)
    path = run_dir / CHECKPOINT
    if not path.is_file():
        raise RunDirError(f"{flag} {run_dir}: no {CHECKPOINT} there (did the run save a checkpoint?)")
    try:
        return _load(path)
    except Exception as err:  # torch's zip reader, pickle or EOF errors: the file is cut or corrupted
        why = str(err).splitlines()[0] if str(err) else type(err).__name__
        earlier = run_dir / PREVIOUS
        hint = "There is no earlier checkpoint to fall back on."
        if earlier.is_file():
            try:
                state = _load(earlier)
                sharded = state.get("sharded_state")
                if sharded and not (run_dir / sharded).is_dir():  # FSDP keeps only the latest shards
                    hint = f"The earlier checkpoint {earlier} names shards ({sharded}) that are gone."
                else:
                    hint = (f"The earlier checkpoint {earlier} (step {state.get('step')}) is whole: to go on from "
                            f"there, move it to {path} and run with {flag} {run_dir} again.")
            except Exception:
                hint = f"The earlier checkpoint {earlier} is damaged too."
        raise RunDirError(f"{flag} {run_dir}: {path} is damaged and cannot be read ({why}). {hint}") from None


def read_run_config(run_dir: str | Path) -> dict:
    """The resolved TrainConfig of a run, as saved in its config.json (with its code version and backends)."""
    path = Path(run_dir) / "config.json"
    if not path.is_file():
        raise RunDirError(f"{run_dir}: no config.json; is it a run directory of python -m flexrec.train?")
    return json.loads(path.read_text())


def train_config(values: dict):
    """A TrainConfig from a saved dict, ignoring entries that are not settings (code version, backends)."""
    from flexrec.config import TrainConfig

    known = {f.name for f in dataclasses.fields(TrainConfig)}
    return TrainConfig(**{k: v for k, v in values.items() if k in known})


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

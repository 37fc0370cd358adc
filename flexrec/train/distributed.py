"""Data parallelism on torch.distributed: one process per device, launched by ``torchrun``.

    torchrun --standalone --nproc_per_node 8 -m flexrec.train ...

A process started without torchrun's environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``) is a world
of one: every helper here is then the identity, and ``python -m flexrec.train`` runs no collective.

Under torchrun the batch settings (``--prompts-per-step``, ``--batch-size``) stay *global*: every rank
draws the same global batch from the same seeded stream and keeps its contiguous share (``shard``),
so a group's G rollouts live on one rank, and N ranks with per-rank batch b take the same steps as one
process with batch N*b. What is batch-wide (uncertainty-weight normalisation, logged means,
evaluation) is reduced over ranks here. How the model is wrapped (DDP or FSDP2) is in
``flexrec.train.data_parallel``.
"""

from __future__ import annotations

import math
import os
from datetime import timedelta
from typing import Any, Callable, Optional

import numpy as np
import torch
import torch.distributed as dist

from flexrec.train.build import resolve_device

_TORCHRUN_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK")
_comm_device = torch.device("cpu")  # where collective tensors live: cpu for gloo, this rank's GPU for nccl


def launched() -> bool:
    """True in a process that torchrun started."""
    return all(name in os.environ for name in _TORCHRUN_ENV)


def planned_world() -> int:
    """The number of ranks torchrun asked for (1 without torchrun), readable before ``join``."""
    return int(os.environ["WORLD_SIZE"]) if launched() else 1


def device(device_spec: str) -> torch.device:
    """This rank's device: ``cuda:LOCAL_RANK`` (or the CPU) under torchrun, else ``resolve_device``."""
    if not launched():
        return resolve_device(device_spec)
    if device_spec not in ("auto", "cuda", "cpu"):
        raise ValueError(
            f"--device {device_spec} under torchrun: each rank takes the GPU cuda:LOCAL_RANK; "
            "give --device auto, cuda or cpu (choose GPUs with CUDA_VISIBLE_DEVICES)"
        )
    local_rank = int(os.environ["LOCAL_RANK"])
    if device_spec == "cpu" or (device_spec == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ValueError("--device cuda under torchrun, but this torch sees no CUDA device; use --device cpu")
    if local_rank >= torch.cuda.device_count():
        raise ValueError(
            f"LOCAL_RANK {local_rank} but only {torch.cuda.device_count()} GPUs are visible: "
            "--nproc-per-node must not exceed the GPUs of one machine"
        )
    torch.cuda.set_device(local_rank)
    return torch.device("cuda", local_rank)


def join(rank_device: torch.device, timeout_s: int) -> None:
    """Joins torchrun's process group (nccl on CUDA, gloo on CPU); nothing without torchrun.

    Called once the model is built: with a process group, transformers' ``save_pretrained`` writes
    on rank 0 only, and the other ranks would leave half a model in the shared model cache.
    """
    global _comm_device
    if not launched():
        return
    cuda = rank_device.type == "cuda"
    if not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo", timeout=timedelta(seconds=timeout_s),
                                device_id=rank_device if cuda else None)
    _comm_device = rank_device


def active() -> bool:
    return dist.is_available() and dist.is_initialized()


def world() -> int:
    return dist.get_world_size() if active() else 1


def rank() -> int:
    return dist.get_rank() if active() else 0


def is_main() -> bool:
    """Rank 0, the one that prints, logs and writes the run directory."""
    return rank() == 0


def where() -> str:
    """" (rank 1 of 2)" under torchrun (before ``init`` too), "" in one process: for error messages."""
    return f" (rank {os.environ['RANK']} of {os.environ['WORLD_SIZE']})" if launched() else ""


def barrier() -> None:
    if world() > 1:
        dist.barrier()


def shutdown() -> None:
    """Leaves the process group after a run that ended well (a failing rank just exits)."""
    if active():
        dist.destroy_process_group()


# ---- sharding ---------------------------------------------------------------------------------------

def shard(indices: np.ndarray) -> np.ndarray:
    """This rank's contiguous share of a global batch. Shapes: (n,) -> (n / world,)."""
    n, size = len(indices), world()
    if size == 1:
        return indices
    if n % size:
        raise ValueError(
            f"a batch of {n} examples does not split over {size} ranks; the batch settings "
            f"(--prompts-per-step, --batch-size) are global and must be multiples of the number of ranks, "
            f"and no need's training pool may be smaller than a batch"
        )
    per = n // size
    return indices[rank() * per : (rank() + 1) * per]


def noise_rows(local_rows: int) -> Optional[tuple[int, int]]:
    """(offset, total) of this rank's rows in a decode step's global Gumbel noise; None in one process.

    Every rank draws the noise of the whole global batch from the shared generator and uses its own
    rows, so the sampled permutations are the ones one process with the whole batch would sample.
    """
    size = world()
    return None if size == 1 else (rank() * local_rows, size * local_rows)


# ---- reductions -------------------------------------------------------------------------------------

def sum_over_ranks(x: torch.Tensor) -> torch.Tensor:
    """``x`` summed elementwise over the ranks (``x`` itself in one process). Shapes: (...) -> (...)."""
    if world() == 1:
        return x
    total = x.detach().to(_comm_device, copy=True)
    dist.all_reduce(total)
    return total.to(x.device)


def mean_over_ranks(values: dict[str, float]) -> dict[str, float]:
    """Each scalar averaged over ranks (every rank holds the same keys and equal-size batches)."""
    if world() == 1:
        return values
    keys = list(values)  # the same order on every rank: the same code filled it
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=_comm_device)
    dist.all_reduce(t)
    return {k: float(v) / world() for k, v in zip(keys, t.tolist())}


def gather(obj: Any) -> list[Any]:
    """Every rank's ``obj`` (picklable), in rank order, on every rank."""
    if world() == 1:
        return [obj]
    out: list[Any] = [None] * world()
    dist.all_gather_object(out, obj)
    return out


def broadcast(obj: Any, src: int = 0) -> Any:
    """Rank ``src``'s ``obj`` (picklable) on every rank."""
    if world() == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def check_same(what: str, value: Any) -> None:
    """Fails when the ranks disagree on ``value`` (each rank builds its data and model itself)."""
    values = gather(value)
    if any(v != values[0] for v in values):
        raise ValueError(
            f"the ranks built different {what} ({values}); every rank must see the same data, "
            "model files and settings"
        )


def evaluate_sharded(evaluate: Callable[[list], dict], examples: list, batch_size: int) -> dict:
    """``evaluate(examples)`` with the batches spread over ranks; the result on every rank.

    ``evaluate`` returns {need: {metric: mean, "n": count}} and cuts its input into batches of
    ``batch_size``. Every rank runs the same number of batches (a rank short of work repeats the
    first batch and drops its result) because under FSDP every forward is a collective.
    """
    if world() == 1:
        return evaluate(examples)
    batches = [examples[i : i + batch_size] for i in range(0, len(examples), batch_size)]
    per = math.ceil(len(batches) / world())
    mine = batches[rank() * per : (rank() + 1) * per]
    result = evaluate([ex for batch in mine for ex in batch]) if mine else {}
    for _ in range(per - len(mine)):
        evaluate(batches[0])
    sums: dict[str, dict[str, float]] = {}
    for part in gather(result):
        for need, r in part.items():
            s = sums.setdefault(need, {})
            for name, v in r.items():
                s[name] = s.get(name, 0.0) + (v if name == "n" else v * r["n"])
    return {need: {name: (int(v) if name == "n" else v / s["n"]) for name, v in s.items()} for need, s in sums.items()}

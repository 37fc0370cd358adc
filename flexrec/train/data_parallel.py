"""How a run holds its policy under torchrun, replicated (DDP) or sharded (FSDP2), and how it saves it.

- One rank (no torchrun, or ``--nproc-per-node 1``): the plain ``RankingPolicy``; nothing here runs.
- ``--dist-strategy ddp``: every rank holds the whole model and DistributedDataParallel averages the
  gradients. The frozen RL reference is a plain replica on every rank. The states are equal on every
  rank, so rank 0 writes the same ``checkpoint.pt`` as one process, and it resumes under any number
  of ranks.
- ``--dist-strategy fsdp``: ``fully_shard`` on every decoder block, then on the policy (the root holds
  the embeddings, the final norm and the tied head), with ``MixedPrecisionPolicy(param_dtype=bf16 or
  None, reduce_dtype=float32)``. The reference is sharded the same way, without gradients. A checkpoint
  is a ``torch.distributed.checkpoint`` directory ``state-<step>/`` (every rank writes its shards) that
  rank 0's ``checkpoint.pt`` names once it is complete; it loads under any number of ranks, and in one
  process without a process group.

A wrapped policy is called through ``forward`` (``RankingPolicy.forward``) so that the wrapper's hooks
run; ``Wrapped`` gives it the policy's own API, so the training steps and evaluation need not know.
"""

from __future__ import annotations

import copy
import shutil
import warnings
from pathlib import Path
from typing import Any, Callable, Optional

import torch
from torch import nn

from flexrec.train import distributed
from flexrec.config import TrainConfig
from flexrec.models import RankingPolicy

STRATEGIES = ("ddp", "fsdp")
# How a run is spread over devices is each launch's choice: a resumed run takes these from the command
# line, not from its checkpoint (which loads under any strategy and number of ranks).
LAUNCH_SETTINGS = ("dist_strategy", "mixed_precision", "dist_timeout")
MIXED_PRECISION = {"no": None, "bf16": torch.bfloat16}


def check(cfg: TrainConfig, world_size: int, resuming: bool) -> None:
    """The settings that depend on the number of ranks; fails before any work, saying what to do."""
    if cfg.dist_strategy not in STRATEGIES:
        raise ValueError(f"--dist-strategy {cfg.dist_strategy!r}: expected ddp or fsdp")
    if cfg.mixed_precision not in MIXED_PRECISION:
        raise ValueError(
            f"--mixed-precision {cfg.mixed_precision!r}: expected no or bf16 (fp16 would need loss scaling, "
            "which flexrec does not do; bf16 GPUs are A100, H100 and newer)"
        )
    if cfg.mixed_precision != "no" and cfg.dist_strategy != "fsdp":
        raise ValueError(
            f"--mixed-precision {cfg.mixed_precision} is FSDP's mixed precision (float32 master weights, bf16 "
            "compute); use it with --dist-strategy fsdp. DDP and one process train in the model's own dtype "
            "(bf16 on a bf16 GPU, float32 on CPU)"
        )
    if cfg.dist_timeout < 1:
        raise ValueError(f"--dist-timeout must be >= 1 second, got {cfg.dist_timeout}")
    if world_size == 1:
        if cfg.dist_strategy == "fsdp":
            raise ValueError(
                "--dist-strategy fsdp shards the model over torchrun's ranks and this is one process: launch "
                "with torchrun --nproc-per-node N (N >= 2), or leave the default ddp for one process"
            )
        return
    for name, used in (("prompts_per_step", cfg.rl_steps > 0), ("batch_size", cfg.sft_steps > 0)):
        value = getattr(cfg, name)
        if used and value % world_size:
            flag = "--" + name.replace("_", "-")
            again = " (it is the resumed run's setting: resume with a number of ranks that divides it)" if resuming else ""
            raise ValueError(
                f"{flag} {value} is the global batch and must split evenly over the {world_size} ranks{again}; "
                f"use a multiple of {world_size}, e.g. {flag} {world_size * max(1, value // world_size)}"
            )


def shards(cfg: TrainConfig) -> bool:
    """True when this run shards the model (FSDP over more than one rank); known before the group exists."""
    return cfg.dist_strategy == "fsdp" and distributed.planned_world() > 1


class Wrapped:
    """A RankingPolicy behind DDP or FSDP, with the policy's API (rank, logprobs, train, eval, ...).

    ``call`` is what runs the forward: the DDP wrapper, or the FSDP-sharded policy itself. ``spare``
    (FSDP) is a sharded copy made before training that becomes the RL reference.
    """

    def __init__(self, policy: RankingPolicy, call: nn.Module, spare: Optional[RankingPolicy] = None):
        self.policy, self.call, self.spare = policy, call, spare

    def rank(self, *args, **kwargs):
        with torch.no_grad():  # so DDP does not wait for a backward pass
            return self.call("rank", *args, **kwargs)

    def logprobs(self, *args, **kwargs):
        return self.call("logprobs", *args, **kwargs)

    def train(self, mode: bool = True) -> "Wrapped":
        self.policy.train(mode)
        return self

    def eval(self) -> "Wrapped":
        return self.train(False)

    @property
    def training(self) -> bool:
        return self.policy.training

    def trainable_parameters(self) -> list[nn.Parameter]:
        return self.policy.trainable_parameters()


def unwrap(policy) -> RankingPolicy:
    return policy.policy if isinstance(policy, Wrapped) else policy


def is_sharded(policy) -> bool:
    from torch.distributed.fsdp import FSDPModule

    return isinstance(unwrap(policy), FSDPModule)


def wrap(policy: RankingPolicy, cfg: TrainConfig, device: torch.device, with_reference: bool):
    """The policy as this run trains it: itself (one rank), DDP, or FSDP-sharded (in place).

    ``with_reference`` (FSDP): also shard a frozen copy that ``frozen_copy`` turns into the reference.
    """
    if distributed.world() == 1:
        return policy
    if not shards(cfg):
        from torch.nn.parallel import DistributedDataParallel

        ddp = DistributedDataParallel(policy, device_ids=[device.index] if device.type == "cuda" else None,
                                      forward_sync_buffers=False)  # the slot ids, the only buffer, never change
        return Wrapped(policy, ddp)
    spare = _frozen(copy.deepcopy(policy)) if with_reference else None
    _fully_shard(policy, cfg, device)
    if spare is not None:
        _fully_shard(spare, cfg, device)
    return Wrapped(policy, policy, spare)


def _frozen(policy: RankingPolicy) -> RankingPolicy:
    policy.eval()
    policy.requires_grad_(False)
    return policy


def _fully_shard(policy: RankingPolicy, cfg: TrainConfig, device: torch.device) -> None:
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    mesh = init_device_mesh(device.type, (distributed.world(),))
    mp = MixedPrecisionPolicy(param_dtype=MIXED_PRECISION[cfg.mixed_precision], reduce_dtype=torch.float32)
    for layer in policy.decoder_layers():
        fully_shard(layer, mesh=mesh, mp_policy=mp)
    fully_shard(policy, mesh=mesh, mp_policy=mp)  # moves what is still on the CPU to this rank's device


def frozen_copy(policy):
    """The frozen RL reference: a copy of the policy now (a resumed run then loads it with ``load``)."""
    if not is_sharded(policy):
        return _frozen(copy.deepcopy(unwrap(policy)))
    spare = policy.spare
    if spare is None:
        raise RuntimeError("an FSDP policy wrapped without with_reference has no sharded copy for the reference")
    policy.policy.reshard()  # the root keeps its parameters gathered after a forward; shards again
    with torch.no_grad():
        for dst, src in zip(spare.parameters(), policy.policy.parameters()):
            dst.copy_(src)  # the same shards of the same shapes on this rank
    return Wrapped(spare, spare)


# ---- checkpoints ------------------------------------------------------------------------------------

def save(run_path: Path, write: Callable[[dict], Any], meta: dict, policy, optimizer, reference) -> None:
    """Writes a resumable checkpoint: ``write`` (rank 0's atomic checkpoint.pt writer) gets ``meta`` plus
    the full states, or, when sharded, plus the name of the torch.distributed.checkpoint directory."""
    if not is_sharded(policy):
        if distributed.is_main():
            write({**meta, "policy": unwrap(policy).state_dict(), "optimizer": optimizer.state_dict(),
                   "reference": None if reference is None else unwrap(reference).state_dict()})
        return
    import torch.distributed.checkpoint as dcp

    name = f"state-{meta['step']:08d}"
    path = Path(run_path) / name
    if distributed.is_main():  # a leftover of a run that stopped before it was named
        shutil.rmtree(path, ignore_errors=True)
    distributed.barrier()
    dcp.save(_sharded_state(policy, optimizer, reference), checkpoint_id=path)  # returns once complete
    if distributed.is_main():
        write({**meta, "sharded_state": name, "reference": None})
        for old in Path(run_path).glob("state-*"):
            if old.name != name:
                shutil.rmtree(old, ignore_errors=True)


def load(resume: dict, run_path: Path, policy, optimizer, reference) -> None:
    """Loads a checkpoint's model, optimiser and reference states into this run's (any strategy)."""
    if "sharded_state" in resume:
        from torch.distributed.checkpoint.state_dict import set_model_state_dict, set_state_dict

        state = _sharded_state(policy, optimizer, reference)
        _dcp_load(state, Path(run_path) / resume["sharded_state"])
        set_state_dict(unwrap(policy), optimizer, model_state_dict=state["policy"],
                       optim_state_dict=state["optimizer"])
        if reference is not None:
            set_model_state_dict(unwrap(reference), state["reference"])
    elif not is_sharded(policy):
        unwrap(policy).load_state_dict(resume["policy"])
        optimizer.load_state_dict(resume["optimizer"])
        if reference is not None:
            unwrap(reference).load_state_dict(resume["reference"])
    else:  # a full checkpoint.pt into an FSDP run: every rank keeps its shards
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

        module = unwrap(policy)
        _load_full_model(module, resume["policy"])
        names = [n for n, p in module.named_parameters() if p.requires_grad]  # the optimiser's order
        saved = resume["optimizer"]
        by_name = {"state": {names[i]: s for i, s in saved["state"].items()},
                   "param_groups": [{**g, "params": [names[i] for i in g["params"]]} for g in saved["param_groups"]]}
        set_optimizer_state_dict(module, optimizer, by_name, options=StateDictOptions(full_state_dict=True))
        if reference is not None:
            _load_full_model(unwrap(reference), resume["reference"])


def load_weights(saved: dict, run_path: Path, module: nn.Module) -> None:
    """Loads only the policy weights of a checkpoint (a full ``checkpoint.pt`` or the FSDP directory it
    names) into ``module``, a plain model in one process: for ranking with a finished run."""
    if "sharded_state" in saved:
        from torch.distributed.checkpoint.state_dict import get_model_state_dict, set_model_state_dict

        state = {"policy": get_model_state_dict(module)}
        _dcp_load(state, Path(run_path) / saved["sharded_state"])
        set_model_state_dict(module, state["policy"])
    else:
        module.load_state_dict(saved["policy"])


def _dcp_load(state: dict, path: Path) -> None:
    """``torch.distributed.checkpoint.load`` in place; in one process without a process group (a resume or a
    reload under fewer ranks than saved it) that is what we mean, so its warning about it is silenced."""
    import torch.distributed.checkpoint as dcp

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        dcp.load(state, checkpoint_id=path)


def _sharded_state(policy, optimizer, reference) -> dict:
    from torch.distributed.checkpoint.state_dict import get_model_state_dict, get_state_dict

    model_state, optim_state = get_state_dict(unwrap(policy), optimizer)
    state = {"policy": model_state, "optimizer": optim_state}
    if reference is not None:
        state["reference"] = get_model_state_dict(unwrap(reference))
    return state


def _load_full_model(module: nn.Module, state: dict) -> None:
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

    set_model_state_dict(module, state, options=StateDictOptions(full_state_dict=True))

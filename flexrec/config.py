"""Every setting of ``python -m flexrec.train`` in one dataclass, and the CLI generated from it.

Each field becomes a ``--kebab-case`` flag (booleans take ``--flag``/``--no-flag``); ``--config
file.yaml|json`` sets fields from a file, and flags given on the command line override the file.
The defaults are the no-argument run: the synthetic world, the tiny model, all needs jointly,
SFT then RL, under 10 minutes on a 2-core CPU.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

REWARD_MODES = ("flexrec", "flexrec-nounc", "seq", "rank", "independent", "noncausal")
IMPUTERS = ("critic", "critic-mean", "user-knn", "item-knn", "observed")


@dataclass
class TrainConfig:
    # ---- data --------------------------------------------------------------------------------
    data: str = "synthetic"  # "synthetic" or a dataset flexrec.data.load understands (name or path)
    data_path: str = ""  # where a real dataset's files are (ml-1m, kuairec; ml-100k defaults to recbole's copy)
    need: str = "all"  # a registered need, a comma-separated list, or "all" (jointly, one model)
    eval_needs: str = ""  # needs to evaluate on ("" = the training needs)
    num_candidates: int = 10  # K, the pool size. The paper uses 30; 10 keeps the CPU default run
    # under 10 minutes (a K-step decode and a (K, K) softmax per list) while the needs still disagree
    world_users: int = 1000  # synthetic world: users (train/val/test split 70/10/20)
    world_items: int = 150  # synthetic world: items
    world_topics: int = 6  # synthetic world: topics
    world_taste_scale: float = 1.6  # synthetic world: how strongly topic taste drives interest
    history_max: int = 6  # most recent history items shown in a prompt (prompt length is the CPU cost)
    prompt: str = "auto"  # "full" (flexrec.data's chat prompts), "compact" (flexrec.prompt_adapter), "auto":
    # compact for the tiny preset, which cannot learn to read the full prompts in a CPU budget; full otherwise
    trend_tags: bool = True  # show each candidate's recent-plays tier (at the user's cutoff) in prompts
    observe_fraction: float = 0.1  # share of (user, item) feedback the trainer may see (the paper's 10%)
    # ---- model -------------------------------------------------------------------------------
    model: str = "tiny"  # "tiny", "smollm2-135m" or a local Hugging Face causal-LM directory
    tiny_hidden: int = 64  # tiny preset: hidden size
    tiny_layers: int = 2  # tiny preset: transformer layers (layer 0 local, see flexrec.models.presets)
    lora_rank: int = 0  # > 0: train LoRA adapters of this rank instead of every weight
    gradient_checkpointing: bool = False  # trade compute for activation memory (big models)
    cache_dir: str = ""  # where presets are converted/built ("" = $FLEXREC_CACHE or ~/.cache/flexrec)
    # ---- critic ------------------------------------------------------------------------------
    imputer: str = "critic"  # how unobserved labels are filled: critic | critic-mean | user-knn | item-knn | observed
    critic_ensemble: int = 3  # deep-ensemble members (epistemic variance from their spread)
    critic_epochs: int = 50  # full passes over the observed labels
    critic_hidden: int = 64  # MLP width
    knn_neighbours: int = 20  # neighbours of the KNN imputers
    # ---- SFT warm start ------------------------------------------------------------------------
    sft_steps: int = 1500  # teacher-forced steps on rankings by the filled labels (0 = skip)
    sft_lr: float = 3e-3
    sft_positions: int = 5  # SFT loss on the first n steps of the target ranking (0 = all K-1): the
    # order below the NDCG cutoff is mostly ties and noise
    # ---- RL ----------------------------------------------------------------------------------
    reward_mode: str = "flexrec"  # flexrec | flexrec-nounc | seq | rank | independent | noncausal
    rl_steps: int = 300  # optimiser steps of RL (0 = skip)
    lr: float = 3e-4  # RL learning rate (AdamW). With 1e-3 and the whole-list reward (ndcg_cutoff 0), 300 FlexRec
    # steps drifted to a k3 KL of 0.5-0.75 per slot and moved test NDCG@5 by -0.016..+0.006 against SFT (3 seeds x 3
    # needs); with 3e-4 and cutoff 5, KL ~0.3 and -0.002..+0.010
    prompts_per_step: int = 8  # P prompts per RL step, over all ranks under torchrun (each rank takes P / ranks)
    group_size: int = 8  # G sampled permutations per prompt
    ppo_epochs: int = 1  # passes over each batch of rollouts (ratio != 1 only from the second on)
    clip: float = 0.2  # PPO clip range
    kl_coef: float = 0.01  # k3 KL to the frozen reference (the paper's 0.01)
    entropy_coef: float = 0.005  # entropy bonus (the paper's 0.005)
    temperature: float = 1.0  # sampling temperature of rollouts (training uses the same)
    gain: str = "linear"  # gain of a label: "linear" (g = label) or "exp" (2^label - 1)
    ndcg_cutoff: int = 5  # reward cutoff n (0 = the whole list): 5, the NDCG@5 that is reported and the 5 positions
    # SFT is trained on; the order below it is mostly ties and label noise
    adv_delta: float = 1e-4  # delta in (r - mean) / (std + delta)
    adv_baseline: str = "pooled"  # "pooled": mean over the group's (list, rank) pairs (FLEXREC.md section 6);
    # "rank": mean over the group's lists at each rank (rl.group_item_advantages); same for sequence rewards
    unc_eps: float = 10.0  # epsilon of A / (u + eps), relative to the batch's mean variance. Chosen on validation
    # users (`python -m flexrec.experiments uncertainty-strength`, 3 seeds): of 0.1, 1 and 10, 10 had the best mean
    # NDCG@5 over the needs at both 1500 + 300 and 600 + 600 steps; 0.1 was 0.007-0.008 behind it
    unc_max_weight: float = 5.0  # clip of the normalised uncertainty weights
    batch_size: int = 16  # SFT batch size, over all ranks under torchrun (also the evaluation batch)
    need_stagger: int = 200  # SFT curriculum: need i joins at step i * need_stagger (0 = all at once).
    # The tiny model learned any one need, or two, within 200 steps, but all three at once not in 400:
    # the conflicting targets cancel while its pointer forms; added one by one, all three learn
    need_order: str = "maximize_interest,trend_promotion,explore_new_topics"  # the curriculum's order
    need_pure_batches: bool = False  # each batch from one need, the needs in turn (see flexrec.train._sample)
    need_weights: str = "explore_new_topics=2"  # SFT sampling weight of a need's examples ("need=w,..."; unlisted: 1).
    # explore_new_topics, the need that least resembles the others, was learned late: at step 1300-1500 of 1500
    # on seed 0 (the other two in 200). Drawn twice as often: by step 750 on seeds 1 and 2, 1000-1250 on seed 0
    grad_clip: float = 1.0  # max gradient norm
    # ---- run ---------------------------------------------------------------------------------
    seed: int = 0
    threads: int = 1  # torch CPU threads. 1 by default: on a shared 2-core box, 2 OpenMP threads made a
    # 10x64 GELU take 19 ms instead of 0.015 ms, and a tiny-model step 3.7 s instead of 0.18 s
    device: str = "auto"  # "auto" (cuda when there), "cpu", "cuda", "cuda:1", ...
    out: str = "runs/flexrec"  # run directory
    resume: str = ""  # a run directory to continue exactly where it stopped
    eval_every: int = 250  # steps between validation evaluations (NDCG@5 curves)
    eval_users: int = 0  # users per need in the val/test evaluations (0 = every user of the split)
    save_every: int = 50  # steps between checkpoints
    progress: bool = True  # tqdm progress bar
    # ---- several GPUs or machines (torchrun; see flexrec.distributed and README) ----------------
    dist_strategy: str = "ddp"  # under torchrun: "ddp" (each rank holds the model) or "fsdp" (FSDP2 shards it)
    mixed_precision: str = "no"  # "bf16": FSDP's float32 master weights with bf16 compute; "no": the model's dtype
    dist_timeout: int = 1800  # seconds a collective may wait before the job fails (a hung or lost rank)


# Settings that only the RL stage reads (``unused_settings``): a run with rl_steps 0 is the same run
# whatever they are. The uncertainty settings are read only by --reward-mode flexrec.
RL_SETTINGS = ("reward_mode", "rl_steps", "lr", "prompts_per_step", "group_size", "ppo_epochs", "clip", "kl_coef",
               "entropy_coef", "ndcg_cutoff", "adv_delta", "adv_baseline", "unc_eps", "unc_max_weight")
UNCERTAINTY_SETTINGS = ("unc_eps", "unc_max_weight")


def unused_settings(cfg: TrainConfig) -> set[str]:
    """The settings that cannot change what a run with ``cfg`` computes (besides where it writes)."""
    if cfg.rl_steps == 0:
        return set(RL_SETTINGS) - {"rl_steps"}
    return set(UNCERTAINTY_SETTINGS) if cfg.reward_mode != "flexrec" else set()


def _field_type(f: dataclasses.Field) -> type:
    hints = typing.get_type_hints(TrainConfig)
    t = hints[f.name]
    if typing.get_origin(t) is typing.Union:
        t = next(a for a in typing.get_args(t) if a is not type(None))
    return t


def _comments() -> dict[str, str]:
    """The trailing comment of each field, used as its --help text."""
    import inspect

    out = {}
    for line in inspect.getsource(TrainConfig).splitlines():
        if ":" in line and "#" in line and not line.strip().startswith("#"):
            name = line.split(":")[0].strip()
            out[name] = line.split("#", 1)[1].strip()
    return out


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m flexrec.train",
        description="Post-train an LLM recommender for flexible needs (SFT then RL). "
        "With no arguments: the synthetic world, the tiny model, all needs jointly.",
    )
    parser.add_argument("--config", help="a YAML or JSON file of settings (flags override it)")
    helps = _comments()
    for f in dataclasses.fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        t = _field_type(f)
        text = f"{helps.get(f.name, '')} (default: {f.default})"
        if t is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=text)
        else:
            parser.add_argument(flag, type=t, default=None, help=text)
    return parser


def load_file(path: str) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"--config {path}: no such file")
    text = p.read_text()
    if p.suffix in (".yaml", ".yml"):
        import yaml

        values = yaml.safe_load(text) or {}
    else:
        values = json.loads(text)
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    values = {k.replace("-", "_"): v for k, v in values.items()}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"--config {path}: unknown settings {unknown}; see --help for the names")
    return values


def parse_args(argv: Optional[list[str]] = None) -> TrainConfig:
    """Defaults, then ``--config`` file, then flags."""
    args = build_parser().parse_args(argv)
    values: dict[str, Any] = {}
    if args.config:
        values.update(load_file(args.config))
    for f in dataclasses.fields(TrainConfig):
        v = getattr(args, f.name)
        if v is not None:
            values[f.name] = v
    return TrainConfig(**values)


def to_dict(cfg: TrainConfig) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def validate(cfg: TrainConfig, needs: dict) -> None:
    """Checks that need no data or model: fails before any work, with what to do."""
    if cfg.reward_mode not in REWARD_MODES:
        raise ValueError(f"--reward-mode {cfg.reward_mode!r}: expected one of {', '.join(REWARD_MODES)}")
    if cfg.imputer not in IMPUTERS:
        raise ValueError(f"--imputer {cfg.imputer!r}: expected one of {', '.join(IMPUTERS)}")
    for name in need_list(cfg.need, needs) + need_list(cfg.eval_needs or cfg.need, needs):
        if name not in needs:
            raise ValueError(f"unknown need {name!r}; known needs: {', '.join(sorted(needs))}")
    for name, weight in need_weight_items(cfg.need_weights):
        if name not in needs or not weight.replace(".", "", 1).isdigit() or float(weight) <= 0:
            raise ValueError(f"--need-weights {cfg.need_weights!r}: expected need=weight pairs with known needs "
                             f"({', '.join(sorted(needs))}) and positive weights, e.g. explore_new_topics=2")
    if cfg.num_candidates < 2:
        raise ValueError(f"--num-candidates must be >= 2, got {cfg.num_candidates}")
    if cfg.prompt not in ("auto", "full", "compact"):
        raise ValueError(f"--prompt {cfg.prompt!r}: expected auto, full or compact")
    if cfg.adv_baseline not in ("pooled", "rank"):
        raise ValueError(f"--adv-baseline {cfg.adv_baseline!r}: expected pooled or rank")
    if cfg.gain not in ("linear", "exp"):
        raise ValueError(f"--gain {cfg.gain!r}: expected linear or exp")
    for name in ("group_size", "prompts_per_step", "batch_size", "ppo_epochs", "eval_every", "save_every"):
        if getattr(cfg, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(cfg, name)}")
    if cfg.rl_steps < 0 or cfg.sft_steps < 0:
        raise ValueError("--rl-steps and --sft-steps must be >= 0")


def need_weight_items(spec: str) -> list[tuple[str, str]]:
    """``--need-weights`` "need=w,..." as (need, w) pairs, in order; spaces ignored (``validate`` checks them)."""
    return [item.partition("=")[::2] for item in filter(None, spec.replace(" ", "").split(","))]


def need_list(spec: str, needs: dict) -> list[str]:
    """"all" -> every registered need; "a,b" -> ["a", "b"]."""
    if spec == "all":
        return list(needs)
    return [s.strip() for s in spec.split(",") if s.strip()]

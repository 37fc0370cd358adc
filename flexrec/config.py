"""Every setting of flexrec and its single default: ``TrainConfig``, the CLI generated from it, and the
few constants that more than one stage must agree on (the user splits, the reward modes).

Each field becomes a ``--kebab-case`` flag (booleans take ``--flag``/``--no-flag``); ``--config
file.yaml|json`` sets fields from a file, and flags given on the command line override the file.
Every value is checked by type and range before any work starts (``ConfigError``: one line per
problem). The defaults are the no-argument run: the synthetic world, the tiny model, all needs
jointly, SFT then RL, a few minutes on a 2-core CPU.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import json
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

# Users into train / validation / test, by a seeded permutation (flexrec.data.split_users). Every stage
# (training, evaluation, experiments, load_run) uses these; a large test split keeps the final table steady.
USER_SPLITS = (0.7, 0.1, 0.2)
# What each --reward-mode means: (flexrec.ops.swap_reward mode, scale advantages by uncertainty).
REWARD_MODES = {
    "flexrec": ("causal", True),
    "flexrec-nounc": ("causal", False),
    "seq": ("sequence", False),
    "rank": ("suffix", False),
    "independent": ("independent", False),
    "noncausal": ("noncausal", False),
}
IMPUTERS = ("critic", "critic-mean", "user-knn", "item-knn", "observed")
EVAL_BATCH = 32  # prompts per evaluation batch (the trainer, load_run and the experiments rank in these batches)


@dataclass
class TrainConfig:
    # ---- data --------------------------------------------------------------------------------
    data: str = "synthetic"  # "synthetic" or a dataset flexrec.data.load understands (name or path)
    data_path: str = ""  # where a real dataset's files are (ml-1m, kuairec; ml-100k defaults to recbole's copy)
    items: str = ""  # the item file of --data csv:INTERACTIONS.csv (see flexrec.data.frames)
    need: str = "all"  # a registered need, a comma-separated list, or "all" (jointly, one model)
    eval_needs: str = ""  # needs to evaluate on ("" = the training needs)
    num_candidates: int = 10  # K, the pool size. The paper uses 30; 10 keeps the CPU default run
    # under 10 minutes (a K-step decode and a (K, K) softmax per list) while the needs still disagree. Chosen by the
    # budget, checked on validation users: at K = 20 the joint tiny model's validation NDCG@5 stayed at the untrained
    # level after 1500 SFT steps (docs/TUNING.md, "Defaults and what chose them")
    world_users: int = 1000  # synthetic world: users (train/val/test split 70/10/20)
    world_items: int = 150  # synthetic world: items
    world_topics: int = 6  # synthetic world: topics
    world_taste_scale: float = 1.6  # synthetic world: how strongly topic taste drives interest. NOT chosen on
    # validation users: set (from 1.2) while test scores were being compared (commit 5e62b7f); docs/TUNING.md
    world_evidence: str = "uniform"  # synthetic world: how feedback is spread, flexrec.data.synthetic.EVIDENCE:
    # "uniform" (every user 8-30 history items, every pair observed alike), "sparse" (long-tailed, cold users and
    # items, noisy users; half the observations), "dense" (four times the observations, no one cold)
    history_max: int = 6  # most recent history items shown in a prompt (prompt length is the CPU cost)
    prompt: str = "auto"  # "full" (flexrec.data's chat prompts), "compact" (flexrec.data.prompts.compact_prompt), "auto":
    # compact for the tiny preset, which cannot learn to read the full prompts in a CPU budget; full otherwise
    trend_tags: bool = True  # show each candidate's recent-plays tier (at the user's cutoff) in prompts
    observe_fraction: float = 0.1  # share of (user, item) feedback the trainer may see (the paper's 10%)
    real_protocol: str = "known"  # MovieLens: "known" (pools of the user's future-rated films, labels from their
    # ratings), "implicit" (future films against retrieved unwatched ones) or "sparse"; docs/real-data-protocol.md.
    # Its pools hold 20 films per user (K = 20, LLMRank's setting): K's default there (DATA_DEFAULTS)
    # ---- model -------------------------------------------------------------------------------
    model: str = "tiny"  # "tiny", "smollm2-135m" or a local Hugging Face causal-LM directory
    size: str = "auto"  # the recipe of a pretrained model (not "tiny", whose recipe is these defaults): "cpu",
    # sized for a 2-core CPU in 90 minutes and 8 GB; "full", for a GPU; "auto", cpu without CUDA. It fills only
    # the settings not given by flag or --config (RECIPES below; docs/smollm2.md)
    tiny_hidden: int = 64  # tiny preset: hidden size
    tiny_layers: int = 2  # tiny preset: transformer layers (layer 0 local, see flexrec.models.presets)
    tiny_line_copy: bool = True  # tiny preset on real data's compact prompts: layer 0 starts copying each candidate
    # line's signal tokens onto its slot (flexrec.models.presets; docs/real-data-protocol.md). No effect elsewhere
    signal_tiers: int = 10  # real data's compact prompts: each history signal is shown as its rank tier 0..N-1 within
    # the pool (flexrec.data.prompts.history_signals); N = K shows each candidate's own rank. No effect elsewhere
    signal_scale: str = "rank"  # real data's compact prompts: a signal's tier is its rank or scaled value in the pool
    # ("rank" | "value": min-max within the pool, flexrec.data.prompts.history_signals). No effect elsewhere
    need_in_lines: bool = False  # real data's compact prompts: every candidate line starts with the need's tag, so the
    # tiny model's local layer can weigh the line's signals per need (docs/real-data-protocol.md). No effect elsewhere
    shuffle_slots: bool = False  # each training batch draws a new order of every pool's candidates (slot <ck> names
    # another film each time), so the policy cannot learn which slot number was good for a training user; the
    # order, the gains and their variances move together. Off: pools keep the order they were built in
    lora_rank: int = 0  # > 0: train LoRA adapters of this rank instead of every weight
    gradient_checkpointing: bool = False  # trade compute for activation memory (big models). The RL loss pass then
    # repeats each prompt for its G lists (no KV cache under checkpointing); docs/smollm2.md measures the cost
    micro_batch: int = 0  # examples (SFT) or prompts (RL loss) per forward/backward pass; their gradients are
    # summed into one optimiser step, equal to the whole batch's (0 = the whole batch in one pass)
    cache_dir: str = ""  # where presets are converted/built ("" = $FLEXREC_CACHE or ~/.cache/flexrec)
    # ---- critic ------------------------------------------------------------------------------
    imputer: str = "critic"  # how unobserved labels are filled: critic | critic-mean | user-knn | item-knn | observed
    critic_ensemble: int = 3  # deep-ensemble members (epistemic variance from their spread)
    critic_epochs: int = 50  # full passes over the observed labels
    critic_hidden: int = 64  # MLP width
    knn_neighbours: int = 20  # neighbours of the KNN imputers
    critic_evidence: bool = False  # give the critic the user's and the item's feedback counts as inputs, so that
    # its variance can tell cold users and items from well-observed ones (flexrec.critic; docs/uncertainty.md)
    critic_recalibrate: str = "none"  # rescale the critic's variances, per variance bucket, so that 50% / 90%
    # intervals cover 50% / 90% of held-out labels (critic.VarianceRecalibration): "val", the validation users'
    # observed labels; "heldout", 20% of the training users' observed labels, kept from the critic's training
    # ("heldout-groups": the same, one recalibration each for cold users, topics new to the user, and the rest)
    critic_observed_var: str = "zero"  # an observed label's variance: "zero" (taken as certain) or "estimate", its
    # user's feedback noise estimated from the critic's residuals (critic.feedback_noise_variance; docs/uncertainty.md)
    critic_cold_views: bool = False  # also train the critic on each non-history label as a cold user would show it
    # (the profile of 1-2 of the user's history items, no user embedding), so cold users' variances are learned
    # ---- SFT warm start ------------------------------------------------------------------------
    sft_steps: int = 1500  # teacher-forced steps on rankings by the filled labels (0 = skip). Chosen from the
    # validation NDCG@5 curves (val_ndcg@5 in metrics.jsonl; explore_new_topics learned by 750-1250 steps), docs/TUNING.md
    sft_lr: float = 3e-3  # not swept on validation users (docs/TUNING.md)
    sft_lr_decay: str = "none"  # SFT's learning rate over its steps: "none" (constant) | "cosine" (down to 10% of
    # sft_lr at the last SFT step; flexrec.train.steps.sft_lr_at). RL's rate is constant either way
    sft_positions: int = 5  # SFT loss on the first n steps of the target ranking (0 = all K-1): the
    # order below the NDCG cutoff is mostly ties and noise
    sft_ties: str = "order"  # how SFT scores a target step whose best remaining label ties: "order", the NLL of the
    # slot-order tie-break (one member); "set", the NLL of the whole tied set (rl.tied_target_logprob), so the
    # arbitrary order of equal labels (explore_new_topics' many 0s) is not taught (docs/real-data-protocol.md)
    # ---- RL ----------------------------------------------------------------------------------
    reward_mode: str = "flexrec"  # flexrec | flexrec-nounc | seq | rank | independent | noncausal
    rl_steps: int = 300  # optimiser steps of RL (0 = skip)
    lr: float = 1e-3  # RL learning rate (AdamW). Chosen on validation users (`python -m flexrec.experiments rl-tuning`,
    # seeds 0-2, the default budget; docs/TUNING.md): of 1e-4, 3e-4 and 1e-3 (x cutoff 5 or 0), 1e-3 with cutoff 5 had
    # the best mean validation NDCG@5 over the needs (0.8735; 3e-4 with cutoff 5: 0.8695; SFT alone: 0.8596)
    prompts_per_step: int = 8  # P prompts per RL step, over all ranks under torchrun (each rank takes P / ranks)
    group_size: int = 8  # G sampled permutations per prompt
    ppo_epochs: int = 1  # passes over each batch of rollouts (ratio != 1 only from the second on)
    clip: float = 0.2  # PPO clip range
    kl_coef: float = 0.01  # k3 KL to the frozen reference (the paper's 0.01)
    entropy_coef: float = 0.005  # entropy bonus (the paper's 0.005)
    temperature: float = 1.0  # sampling temperature of rollouts (training uses the same)
    gain: str = "linear"  # gain of a label: "linear" (g = label) or "exp" (2^label - 1)
    ndcg_cutoff: int = 5  # reward cutoff n (0 = the whole list). Chosen on validation users with `lr` (rl-tuning,
    # docs/TUNING.md): cutoff 5 beat the whole list at every learning rate tried (mean validation NDCG@5 over needs
    # and seeds 0-2: 0.8652 vs 0.8625 at 1e-4, 0.8695 vs 0.8679 at 3e-4, 0.8735 vs 0.8627 at 1e-3)
    adv_delta: float = 1e-4  # delta in (r - mean) / (std + delta)
    adv_baseline: str = "pooled"  # "pooled": mean over the group's (list, rank) pairs (FLEXREC.md section 6);
    # "rank": mean over the group's lists at each rank (rl.group_item_advantages); same for sequence rewards
    unc_eps: float = 10.0  # epsilon of A / (u + eps), relative to the batch's mean variance. Chosen on validation
    # users (`python -m flexrec.experiments uncertainty-strength`, 3 seeds): of 0.1, 1 and 10, 10 had the best mean
    # NDCG@5 over the needs at both 1500 + 300 and 600 + 600 steps; 0.1 was 0.007-0.008 behind it
    unc_max_weight: float = 5.0  # clip of the normalised uncertainty weights
    unc_form: str = "item"  # what is weighted: "item", each item reward by its own variance, compared within its
    # rank (rl.item_uncertainty_weights); "rollout", the paper's A / (u_i + eps) with u_i the variance of the
    # rollout's NDCG, one weight per rollout (rl.rollout_uncertainty_weights). docs/uncertainty.md compares them
    unc_variance: str = "labels"  # the reward variance the weights use: "labels", the closed form from each label's
    # variance (FLEXREC.md section 5: independent labels, the critic's feedback noise included); "members", the
    # spread over the critic's ensemble members of the rewards computed from each member's labels (epistemic only,
    # the members' errors as correlated across a pool as they are; rl.member_reward_variance; an imputer without
    # an ensemble's variance, critic-mean or KNN, then gives variance 0: no weighting). docs/uncertainty.md
    batch_size: int = 16  # SFT batch size, over all ranks under torchrun (also the evaluation batch)
    need_stagger: int = 200  # SFT curriculum: need i joins at step i * need_stagger (0 = all at once).
    # The tiny model learned any one need, or two, within 200 steps, but all three at once not in 400:
    # the conflicting targets cancel while its pointer forms; added one by one, all three learn
    need_order: str = "maximize_interest,trend_promotion,explore_new_topics"  # the curriculum's order
    need_pure_batches: bool = False  # each batch from one need, the needs in turn (see flexrec.train._sample)
    need_weights: str = "explore_new_topics=2"  # SFT sampling weight of a need's examples ("need=w,..."; unlisted: 1).
    # explore_new_topics, the need that least resembles the others, was learned late: at step 1300-1500 of 1500
    # on seed 0 (the other two in 200). Drawn twice as often: by step 750 on seeds 1 and 2, 1000-1250 on seed 0
    rl_need_weights: str = ""  # RL sampling weight of a need's prompts (the same form; "" or unlisted: 1)
    grad_clip: float = 1.0  # max gradient norm
    # ---- run ---------------------------------------------------------------------------------
    seed: int = 0
    threads: int = 1  # torch CPU threads. 1 by default: on a shared 2-core box, 2 OpenMP threads made a
    # 10x64 GELU take 19 ms instead of 0.015 ms, and a tiny-model step 3.7 s instead of 0.18 s
    device: str = "auto"  # "auto" (cuda when there), "cpu", "cuda", "cuda:1", ...
    out: str = "runs/flexrec"  # run directory; a new run refuses a non-empty one (see --overwrite, --resume)
    overwrite: bool = False  # start afresh in a non-empty --out, deleting the run that is there
    resume: str = ""  # a run directory to continue exactly where it stopped
    eval_every: int = 250  # steps between validation evaluations (NDCG@5 curves)
    eval_users: int = 0  # users per need in the val/test evaluations (0 = every user of the split): the results
    # table's rows (before training, after SFT, after training) are all scored on these users
    monitor_users: int = 0  # users per need of the validation curves every eval_every steps (the first of the
    # eval_users; 0 = the same users)
    save_every: int = 50  # steps between checkpoints
    progress: bool = True  # tqdm progress bar
    report_to: str = "none"  # also log metrics to "tensorboard" or "wandb" (offline with WANDB_MODE=offline)
    # ---- several GPUs or machines (torchrun; see flexrec.train.distributed and README) ----------------
    dist_strategy: str = "ddp"  # under torchrun: "ddp" (each rank holds the model) or "fsdp" (FSDP2 shards it)
    mixed_precision: str = "no"  # "bf16": FSDP's float32 master weights with bf16 compute; "no": the model's dtype
    dist_timeout: int = 1800  # seconds a collective may wait before the job fails (a hung or lost rank)


# The recipes of ``--size`` for a pretrained model (any --model but "tiny"): setting -> (value, why). Each fills
# a setting only where the user gave none (flag or --config file); the resolved values are saved with the run.
# The cpu numbers are measurements of SmolLM2-135M on ml-100k, K = 20, on the shared 2-core CPU under the load of
# five other training processes (docs/smollm2.md; benchmarks/RESULTS.md). The first whole cpu run took 52 minutes
# wall (47 CPU minutes) at 6.0 GiB peak, next to CI on the same two cores (README).
_PRETRAINED: dict[str, tuple[Any, str]] = {  # what both sizes share
    "lora_rank": (16, "LoRA adapters and the slot rows train; the pretrained weights stay frozen"),
    "sft_lr": (1e-3, "LoRA rate; not swept on validation users"),
    "need_stagger": (0, "a pretrained model reads the need from its instruction: no curriculum"),
    "lr": (2e-4, "RL rate for LoRA; not swept on validation users"),
    "sft_lr_decay": ("none", "a constant SFT rate: the decay was chosen on the tiny model (ml-100k), not for LoRA"),
}
RECIPES: dict[str, dict[str, tuple[Any, str]]] = {
    "cpu": {
        **_PRETRAINED,
        "micro_batch": (1, "one 650-token sequence per forward/backward: +2.2 GB peak (2: +3.8 GB, 4: +6.9 GB), "
                           "no slower per example"),
        "gradient_checkpointing": (False, "no lower peak measured at micro-batch 2, and the RL loss pass would "
                                          "repeat each prompt for its G lists"),
        "history_max": (5, "the 5 most recent history items: 646 prompt tokens at K = 20 (6: 669, 20: 1000)"),
        "batch_size": (8, "SFT examples per optimiser step (8 micro-batches): fewer but longer steps"),
        "sft_steps": (16, "SFT budget: 128 examples; 128 s a step under load, about 34 minutes"),
        "rl_steps": (8, "RL budget: 32 prompts x 4 lists; 120 s a step under load, about 16 minutes"),
        "prompts_per_step": (4, "RL prompts per step, each with its G lists"),
        "group_size": (4, "G lists per prompt: they share one prompt pass, in the rollout and in the loss"),
        "eval_users": (20, "the results table's users per need (on ml-100k 18 have pools: 54), 10 s a pool under "
                           "load, three evaluations (before training, after SFT, after RL) about 29 minutes"),
        "monitor_users": (5, "the validation curve's users per need during training: 15 pools"),
        "eval_every": (8, "a validation point every 8 steps (3 in all, about 5 minutes)"),
        "save_every": (4, "a checkpoint every 4 steps (8 minutes of work; about 1.4 GB each)"),
    },
    "full": {
        **_PRETRAINED,
        "batch_size": (16, "SFT batch in one pass (bf16 on a GPU)"),
        "sft_steps": (600, "SFT budget"),
        "rl_steps": (300, "RL budget"),
        "prompts_per_step": (16, "RL prompts per step"),
        "group_size": (8, "G lists per prompt"),
        "monitor_users": (30, "the validation curve's users per need during training"),
        "eval_every": (50, "a validation point every 50 steps"),
    },
}


def resolve_size(size: str, device: str = "auto") -> str:
    """"auto" -> "full" when the run will be on CUDA, else "cpu"; "cpu" and "full" as they are."""
    if size != "auto":
        return size
    if device.startswith("cuda"):
        return "full"
    if device == "cpu":
        return "cpu"
    import torch

    return "full" if torch.cuda.is_available() else "cpu"


def recipe(cfg: TrainConfig) -> dict[str, Any]:
    """The settings ``cfg.size`` asks for with ``cfg.model`` (none for the tiny preset): {setting: value}."""
    if cfg.model == "tiny":
        return {}
    return {name: value for name, (value, _) in RECIPES[resolve_size(cfg.size, cfg.device)].items()}


def apply_size(cfg: TrainConfig, given: Optional[set[str]] = None) -> TrainConfig:
    """``cfg`` with its size's recipe filled into every setting not in ``given`` (the settings the user set;
    None: those that differ from the defaults), and ``size`` resolved to "cpu" or "full"; the tiny preset's
    config is returned as it is."""
    if cfg.size not in _CHOICES["size"]:
        raise ConfigError([f"--size {cfg.size!r}: expected one of {', '.join(_CHOICES['size'])}"])
    if cfg.model == "tiny":  # the tiny preset's recipe is the plain defaults: its config stays as given
        return cfg
    defaults = TrainConfig()
    if given is None:
        given = {f.name for f in dataclasses.fields(TrainConfig) if getattr(cfg, f.name) != getattr(defaults, f.name)}
    fill = {name: value for name, value in recipe(cfg).items() if name not in given}
    return dataclasses.replace(cfg, size=resolve_size(cfg.size, cfg.device), **fill)


# Defaults that depend on --data: applied to every setting the user did not give (flag, --config file or an
# experiment's --set), and recorded, like every setting, in the run's config.json. The measurements behind
# them: docs/real-data-protocol.md.
DATA_DEFAULTS: dict[str, dict[str, Any]] = {
    # the known protocol's pools hold each user's 20 future films (LLMRank's K). Shuffled slots with the tied-set SFT
    # loss: better than the earlier default (neither) on every need, validation users of seeds 0 and 1. explore_new_topics
    # drawn 3 times as often in SFT: learned on seed 2 (0.431, against 0.075 at weight 2), by step 1000 on seed 1.
    # Signal tiers by scaled value, not rank: better on every need of validation seeds 0-2, explore_new_topics learned
    # on all three. SFT's rate decayed by a half cosine, then RL at 1e-4 (not 1e-3, which undid part of the decayed
    # SFT's trend_promotion): after RL trend_promotion +0.008 / +0.012 / +0.000 on seeds 0-2, the other needs
    # within 0.002 or better. 2500 SFT steps (the cosine over all of them), not 1500: after RL trend_promotion
    # +0.003 / +0.004 / +0.020 on seeds 0-2, and in the joint experiment's 3 seeds FlexRec 0.802 / 0.462 / 0.906
    # against 0.799 / 0.462 / 0.897 (docs/real-data-protocol.md)
    "ml-100k": dict(num_candidates=20, shuffle_slots=True, sft_ties="set", need_weights="explore_new_topics=3",
                    signal_scale="value", sft_lr_decay="cosine", lr=1e-4, sft_steps=2500),
    "ml-1m": dict(num_candidates=20),
}


def with_data_defaults(values: dict[str, Any]) -> dict[str, Any]:
    """``values`` (settings given by the user) completed with ``DATA_DEFAULTS`` of their ``data``."""
    return {**DATA_DEFAULTS.get(values.get("data", TrainConfig.data), {}), **values}


def resolve(values: dict[str, Any]) -> TrainConfig:
    """The config of the settings a user gave (``values``): the data's defaults and the ``--size`` recipe of a
    pretrained model, each only for what the user left unset, the recipe first where both set one (the data's
    defaults were chosen on the tiny model); everything else TrainConfig's defaults. The one place the CLI and the
    experiments turn given settings into a config."""
    return apply_size(TrainConfig(**with_data_defaults(values)), given=set(values))

# Settings that only the RL stage reads (``unused_settings``): a run with rl_steps 0 is the same run
# whatever they are. The uncertainty settings are read only by --reward-mode flexrec.
RL_SETTINGS = ("reward_mode", "rl_steps", "lr", "prompts_per_step", "group_size", "ppo_epochs", "clip", "kl_coef",
               "entropy_coef", "ndcg_cutoff", "adv_delta", "adv_baseline", "unc_eps", "unc_max_weight", "unc_form",
               "unc_variance", "rl_need_weights")
UNCERTAINTY_SETTINGS = ("unc_eps", "unc_max_weight", "unc_form", "unc_variance")
# Settings added after runs were kept whose value here computes exactly what the trainer computed before they
# existed: a saved run without one ran at this value (``flexrec.experiments.adapters.run_finished``). Only a
# setting whose old behaviour is bit-identical belongs here (rl_need_weights "": the unweighted RL draw;
# signal_tiers 10, signal_scale "rank": the compact line's tiers before the settings existed; sft_lr_decay "none":
# the constant SFT rate; unc_variance "labels": the closed-form reward variance).
ADDED_SETTINGS_AS_BEFORE = {"rl_need_weights": "", "signal_tiers": 10, "signal_scale": "rank", "sft_lr_decay": "none",
                            "unc_variance": "labels"}


def unused_settings(cfg: TrainConfig) -> set[str]:
    """The settings that cannot change what a run with ``cfg`` computes (besides where it writes)."""
    if cfg.rl_steps == 0:
        return set(RL_SETTINGS) - {"rl_steps"}
    return set(UNCERTAINTY_SETTINGS) if cfg.reward_mode != "flexrec" else set()


class ConfigError(ValueError):
    """Settings that cannot run; ``problems`` holds one line per wrong setting."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


def field_type(name: str) -> type:
    """The Python type of a TrainConfig field (``Optional[X]`` -> X)."""
    t = typing.get_type_hints(TrainConfig)[name]
    if typing.get_origin(t) is typing.Union:
        t = next(a for a in typing.get_args(t) if a is not type(None))
    return t


_TRUE, _FALSE = ("true", "yes", "on", "1"), ("false", "no", "off", "0")


def coerce(name: str, value: Any) -> Any:
    """``value`` as the type of setting ``name``; raises ValueError with what was expected.

    Numbers may come as strings (``--set lr=1e-3``, or YAML's ``1e-3``, which YAML reads as a string);
    booleans as true/false, yes/no, on/off or 1/0; a float where an integer is due is refused.
    """
    t = field_type(name)
    if t is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
            return value.strip().lower() in _TRUE
        raise ValueError("expected true or false")
    if t is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lstrip("+-").isdigit():
            return int(value)
        raise ValueError("expected an integer")
    if t is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise ValueError("expected a number")
    if isinstance(value, str):
        return value
    raise ValueError("expected a string")


def from_values(values: dict[str, Any], source: str) -> dict[str, Any]:
    """Checked and typed settings from ``values`` (names with - or _); every problem in one ConfigError."""
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    out, problems = {}, []
    for key, value in values.items():
        name = str(key).replace("-", "_")
        if name not in known:
            close = difflib.get_close_matches(name, known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            problems.append(f"{source}: unknown setting {key!r}{hint}; `python -m flexrec.train --help` lists them")
            continue
        try:
            out[name] = coerce(name, value)
        except ValueError as err:
            problems.append(f"{source}: {key} = {value!r}: {err} ({field_type(name).__name__})")
    if problems:
        raise ConfigError(problems)
    return out


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
        t = field_type(f.name)
        # argparse %-formats help strings: a literal % (e.g. "10%") must be doubled
        text = f"{helps.get(f.name, '')} (default: {f.default})".replace("%", "%%")
        if t is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=text)
        else:
            parser.add_argument(flag, type=t, default=None, help=text)
    return parser


def load_file(path: str) -> dict[str, Any]:
    """The settings of a YAML or JSON file, checked by name and type (ConfigError)."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError([f"--config {path}: no such file"])
    text = p.read_text()
    try:
        if p.suffix in (".yaml", ".yml"):
            import yaml

            values = yaml.safe_load(text) or {}
        else:
            values = json.loads(text)
    except Exception as err:  # yaml.YAMLError / json.JSONDecodeError: say where
        raise ConfigError([f"--config {path}: not valid {'YAML' if p.suffix in ('.yaml', '.yml') else 'JSON'}: "
                           f"{str(err).splitlines()[0]}"]) from None
    if not isinstance(values, dict):
        raise ConfigError([f"--config {path}: expected a mapping of setting: value, got {type(values).__name__}"])
    return from_values(values, f"--config {path}")


def parse_args(argv: Optional[list[str]] = None) -> TrainConfig:
    """Defaults, then ``--config`` file, then flags, each checked by name and type (ConfigError), then the
    ``--size`` recipe for what is still unset (``apply_size``); ``validate`` then checks values against each
    other and the registered needs."""
    args = build_parser().parse_args(argv)
    values: dict[str, Any] = {}
    if args.config:
        values.update(load_file(args.config))
    for f in dataclasses.fields(TrainConfig):
        v = getattr(args, f.name)
        if v is not None:
            values[f.name] = v
    return resolve(values)


def to_dict(cfg: TrainConfig) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


# How real data's compact prompts turn a history signal into its tier within the pool (flexrec.data.prompts)
SIGNAL_SCALES = ("rank", "value")
_CHOICES = {"reward_mode": tuple(REWARD_MODES), "imputer": IMPUTERS, "prompt": ("auto", "full", "compact"),
            "adv_baseline": ("pooled", "rank"), "gain": ("linear", "exp"), "dist_strategy": ("ddp", "fsdp"),
            "mixed_precision": ("no", "bf16"), "report_to": ("none", "tensorboard", "wandb"),
            "world_evidence": ("uniform", "sparse", "dense"), "unc_form": ("item", "rollout"),
            "unc_variance": ("labels", "members"),
            "critic_recalibrate": ("none", "val", "heldout", "heldout-groups"),
            "critic_observed_var": ("zero", "estimate"), "real_protocol": ("known", "implicit", "sparse"),
            "sft_ties": ("order", "set"), "signal_scale": SIGNAL_SCALES, "sft_lr_decay": ("none", "cosine"),
            "size": ("auto", "cpu", "full")}
_AT_LEAST_ONE = ("group_size", "prompts_per_step", "batch_size", "ppo_epochs", "eval_every", "save_every",
                 "critic_ensemble", "critic_hidden", "knn_neighbours", "world_users", "world_items", "world_topics",
                 "dist_timeout", "signal_tiers")
_NON_NEGATIVE = ("rl_steps", "sft_steps", "lora_rank", "need_stagger", "eval_users", "monitor_users", "micro_batch",
                 "sft_positions", "ndcg_cutoff", "critic_epochs", "threads")


def validate(cfg: TrainConfig, needs: dict) -> None:
    """Every check that needs no data or model, before any work: one ConfigError listing each problem."""
    problems = []
    for name in dataclasses.fields(TrainConfig):  # the types, for configs built in Python
        try:
            if coerce(name.name, getattr(cfg, name.name)) != getattr(cfg, name.name):
                raise ValueError("expected " + field_type(name.name).__name__)
        except ValueError as err:
            problems.append(f"--{name.name.replace('_', '-')} {getattr(cfg, name.name)!r}: {err}")
    if problems:
        raise ConfigError(problems)
    for name, choices in _CHOICES.items():
        if getattr(cfg, name) not in choices:
            problems.append(f"--{name.replace('_', '-')} {getattr(cfg, name)!r}: expected one of {', '.join(choices)}")
    for spec in dict.fromkeys(need_list(cfg.need, needs) + need_list(cfg.eval_needs or cfg.need, needs)):
        if spec not in needs:
            problems.append(f"unknown need {spec!r}; known needs: {', '.join(sorted(needs))}")
    for field in ("need_weights", "rl_need_weights"):
        spec = getattr(cfg, field)
        if any(name not in needs or not weight.replace(".", "", 1).isdigit() or float(weight) <= 0
               for name, weight in need_weight_items(spec)):
            problems.append(f"--{field.replace('_', '-')} {spec!r}: expected need=weight pairs with known needs "
                            f"({', '.join(sorted(needs))}) and positive weights, e.g. explore_new_topics=2")
    if cfg.num_candidates < 2:
        problems.append(f"--num-candidates must be >= 2, got {cfg.num_candidates}")
    for name in _AT_LEAST_ONE:
        if getattr(cfg, name) < 1:
            problems.append(f"--{name.replace('_', '-')} must be >= 1, got {getattr(cfg, name)}")
    for name in _NON_NEGATIVE:
        if getattr(cfg, name) < 0:
            problems.append(f"--{name.replace('_', '-')} must be >= 0, got {getattr(cfg, name)}")
    for name in ("lr", "sft_lr", "temperature", "grad_clip", "unc_eps", "unc_max_weight", "adv_delta"):
        if not getattr(cfg, name) > 0:
            problems.append(f"--{name.replace('_', '-')} must be > 0, got {getattr(cfg, name)}")
    if not 0.0 < cfg.observe_fraction <= 1.0:
        problems.append(f"--observe-fraction must be in (0, 1], got {cfg.observe_fraction}")
    if cfg.unc_variance == "members" and cfg.imputer == "critic" and cfg.critic_ensemble < 2:
        problems.append(f"--unc-variance members takes the spread of the critic's ensemble members: it needs "
                        f"--critic-ensemble 2 or more, got {cfg.critic_ensemble}")
    if cfg.resume and cfg.overwrite:
        problems.append("--resume continues a run and --overwrite deletes it: give one of them")
    if problems:
        raise ConfigError(problems)


def data_options(cfg: TrainConfig) -> dict[str, Any]:
    """Keyword options of ``flexrec.data.load`` for this config (the synthetic world's size)."""
    if cfg.data == "synthetic":
        return dict(seed=cfg.seed, n_users=cfg.world_users, n_items=cfg.world_items, n_topics=cfg.world_topics,
                    taste_scale=cfg.world_taste_scale,
                    observe_fraction=cfg.observe_fraction,
                    **({"evidence": cfg.world_evidence} if cfg.world_evidence != "uniform" else {}))
    options = dict(path=cfg.data_path or None, observe_fraction=cfg.observe_fraction, seed=cfg.seed)
    if cfg.items:
        options["items"] = cfg.items
    if cfg.data in ("ml-100k", "ml-1m"):
        options["protocol"] = cfg.real_protocol
    return options


def set_threads(threads: Optional[int] = None) -> None:
    """The CPU thread policy of every entry point (training, evaluation, load_run, experiments).

    ``threads``: torch's intra-op CPU threads; None takes ``TrainConfig.threads`` (1: see its comment);
    0 leaves torch's own choice. Only lowers or raises torch's setting; a GPU run is unaffected.
    """
    import torch

    n = TrainConfig.threads if threads is None else threads
    if n > 0 and torch.get_num_threads() != n:
        torch.set_num_threads(n)


def need_weight_items(spec: str) -> list[tuple[str, str]]:
    """``--need-weights`` "need=w,..." as (need, w) pairs, in order; spaces ignored (``validate`` checks them)."""
    return [item.partition("=")[::2] for item in filter(None, spec.replace(" ", "").split(","))]


def need_list(spec: str, needs: dict) -> list[str]:
    """"all" -> every registered need; "a,b" -> ["a", "b"]."""
    if spec == "all":
        return list(needs)
    return [s.strip() for s in spec.split(",") if s.strip()]

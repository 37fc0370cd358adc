"""The training run, top to bottom: ``setup`` -> ``run_steps`` -> ``finish``.

setup: settings -> data -> policy -> run directory -> critic fill of every training pool's labels ->
optimiser and state (or all of it from the checkpoint). run_steps: [SFT step | RL step: rollout ->
filled gains -> swap rewards -> uncertainty-scaled advantages -> PPO-clip loss -> step] -> log / eval /
save. finish: the final evaluation, the last checkpoint and the report. The steps are in
``flexrec.train.steps``, the math in ``flexrec.rl``, the critic in ``flexrec.critic``.

A training run scores validation users only (``RESULTS_SPLIT``): its curves, results.json, report.md and
printed table. It never builds the test users' pools; they are scored by ``python -m flexrec.eval`` and by
``python -m flexrec.experiments NAME --confirm``, so that no setting is chosen by looking at them.
"""

from __future__ import annotations

import dataclasses
import json
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch

from flexrec.config import EVAL_BATCH, TrainConfig, data_options, need_list, set_threads, to_dict, validate
from flexrec.critic import build_imputer, calibrate, fill_member_pools, fill_pools
from flexrec.data import NEEDS, build_examples, load, split_users
from flexrec.data.frames import absolute_spec
from flexrec.eval.evaluate import ItemPopularityRanker, PolicyRanker, mean_metrics
from flexrec.models import check_model_spec
from flexrec.train import data_parallel, distributed
from flexrec.train.build import build_policy, make_collate, ops_backends
from flexrec.train.report import USERS_LINE, results_table, untrained_label, write_report
from flexrec.train.rundir import (RunDir, check_new_run, check_report_to, code_version, describe_code, load_checkpoint,
                                  rng_state, set_rng_state)
from flexrec.train.steps import need_weights, rl_optimizer, rl_step, sample_batch, sft_lr_at, sft_step

RESULTS_SPLIT = "val"  # the users a run's results stages are scored on (recorded in config.json as results_split)
MONITOR = "monitor"  # the pools of the validation curves every eval_every steps: --monitor-users of RESULTS_SPLIT's


@dataclass
class Run:
    """Everything a training run holds between its steps."""

    cfg: TrainConfig
    device: torch.device
    data: Any
    examples: dict[str, list]  # split -> pools (train: the training needs; val: the evaluated needs; no test),
    # and MONITOR -> the validation curves' pools
    policy: Any  # RankingPolicy, or its DDP / FSDP wrapper
    tokenizer: Any
    collate: Callable
    rundir: RunDir
    gains: torch.Tensor  # (N, K) filled gains of every training pool, by candidate
    gain_var: torch.Tensor  # (N, K) their variances (0 where observed)
    by_need: list[np.ndarray]  # training pool indices of each need, in the SFT curriculum's order
    sft_weights: list[float]  # SFT sampling weight of each need of by_need
    rl_weights: list[float]  # RL sampling weight of each need of by_need
    sample_rng: np.random.Generator
    gumbel_gen: torch.Generator
    optimizer: torch.optim.Optimizer
    reference: Any = None  # the frozen RL reference, once RL starts
    start: int = 0
    results: dict = field(default_factory=dict)  # stage -> need -> metric -> mean, on RESULTS_SPLIT users
    report_lines: list[str] = field(default_factory=list)  # lines for report.md (critic calibration, ...)
    member_gains: Optional[torch.Tensor] = None  # (N, M, K) each critic ensemble member's gains (--unc-variance members)

    @property
    def total(self) -> int:
        return self.cfg.sft_steps + self.cfg.rl_steps


def train(cfg: TrainConfig, on_step: Optional[Callable[[int], None]] = None) -> dict:
    """Runs (or resumes) a whole training run; returns {stage: {need: {metric: value}}}."""
    run = setup(cfg)
    run_steps(run, on_step)
    return finish(run)


def resolve_config(cfg: TrainConfig) -> tuple[TrainConfig, Optional[dict]]:
    """The run's settings and, with ``--resume``, its checkpoint; every check that needs no data, first."""
    validate(cfg, NEEDS)
    resume = load_checkpoint(cfg.resume) if cfg.resume else None
    if resume is not None:  # an exact continuation: the run's own settings, in its own directory
        launch = {name: getattr(cfg, name) for name in data_parallel.LAUNCH_SETTINGS}  # but this launch's DDP/FSDP
        saved = {k: v for k, v in resume["config"].items() if k in {f.name for f in dataclasses.fields(TrainConfig)}}
        cfg = dataclasses.replace(TrainConfig(**saved), resume=cfg.resume, out=cfg.resume, overwrite=False,
                                  progress=cfg.progress, **launch)
    else:
        check_new_run(cfg.out, cfg.overwrite)
        # your own data's files, absolute in the saved config, so that the run reloads from any directory
        cfg = dataclasses.replace(cfg, data=absolute_spec(cfg.data),
                                  items=str(Path(cfg.items).resolve()) if cfg.items else "")
    data_parallel.check(cfg, distributed.planned_world(), resuming=resume is not None)
    check_model_spec(cfg.model)
    check_report_to(cfg.report_to)
    return cfg, resume


def setup(cfg: TrainConfig) -> Run:
    cfg, resume = resolve_config(cfg)
    device = distributed.device(cfg.device)  # under torchrun: cuda:LOCAL_RANK or the CPU
    train_needs, eval_needs = need_list(cfg.need, NEEDS), need_list(cfg.eval_needs or cfg.need, NEEDS)
    if device.type == "cpu":
        set_threads(cfg.threads)
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    K = cfg.num_candidates

    # ---- data ---------------------------------------------------------------------------------------
    data = load(cfg.data, **data_options(cfg))
    longest_history = int(np.diff(data.history_ptr).max())
    if K > data.n_items - longest_history:
        raise ValueError(
            f"--num-candidates {K} is larger than the pool the data allows ({data.n_items} items, "
            f"histories up to {longest_history}); lower K or use more items"
        )
    splits = split_users(data, seed=cfg.seed)
    examples = {
        split: build_examples(data, train_needs if split == "train" else eval_needs, split, K, cfg.seed,
                              max_users=(cfg.eval_users or None) if split != "train" else None)
        for split in ("train", RESULTS_SPLIT)  # never the test users (module docstring)
    }
    # the validation curves' users: the first monitor_users of the evaluated ones (the pools are per user)
    monitored = list(dict.fromkeys(ex.user for ex in examples[RESULTS_SPLIT]))[: cfg.monitor_users or None]
    examples[MONITOR] = [ex for ex in examples[RESULTS_SPLIT] if ex.user in set(monitored)]
    train_ex = examples["train"]
    if not train_ex:
        raise ValueError(f"no training examples: no training user has {K} eligible items")

    # ---- policy -------------------------------------------------------------------------------------
    # FSDP: built on the CPU, each rank moves only its shards to the GPU
    policy, tok = build_policy(cfg, data, train_ex, "cpu" if data_parallel.shards(cfg) else device)
    policy.train()
    distributed.join(device, cfg.dist_timeout)  # torchrun's process group (after the model, see there)
    if distributed.world() > 1:  # (the weight sum reads every parameter: only when there are ranks to compare)
        distributed.check_same("data, vocabularies or initial weights",
                               (len(train_ex), len(tok), float(sum(p.detach().double().sum() for p in policy.parameters()))))
    # torch's CPU kernels round differently per instruction set (AVX2, AVX512): a run repeats bit for bit only on the
    # same capability (ATEN_CPU_CAPABILITY=avx2 on a newer CPU repeats an AVX2 run's SFT, not its RL stage;
    # docs/real-data-protocol.md, "Repeating a run")
    meta = {"code_version": code_version(), "ops_backends": ops_backends(device.type), "results_split": RESULTS_SPLIT,
            "cpu_capability": torch.backends.cpu.get_cpu_capability()}
    rundir = RunDir(cfg.out, to_dict(cfg), writer=distributed.is_main(), fresh=resume is None,
                    overwrite=cfg.overwrite, report_to=cfg.report_to, meta=meta)  # only rank 0 writes and prints
    if distributed.is_main():
        print("flexrec.train config:\n" + json.dumps({**to_dict(cfg), **meta}, indent=2), flush=True)

    # ---- critic fill: every training pool's labels (observed as-is, the rest imputed) ---------------
    if resume is not None:
        gains, gain_var, report_lines = resume["gains"], resume["gain_var"], list(resume.get("report_lines", []))
        member_gains = resume.get("member_gains")
    else:
        gains, gain_var, report_lines, member_gains = fill_labels(cfg, data, splits, train_ex)
    if cfg.unc_variance == "members" and cfg.imputer == "critic" and cfg.rl_steps and member_gains is None:
        raise ValueError(f"--unc-variance members: {cfg.resume} holds no ensemble members' labels (it was filled "
                         "before flexrec stored them); start the run afresh")
    ops = dict(meta["ops_backends"])
    report_lines = [f"Code: {describe_code(meta['code_version'])}. Compiled extension: {ops.pop('extension')}. "
                    f"Ops backends on {device.type}: " + ", ".join(f"{op} {b}" for op, b in ops.items()) + ". "
                    f"torch CPU kernels: {meta['cpu_capability']}."] + \
        [line for line in report_lines if not line.startswith("Code: ")]

    order = cfg.need_order.split(",")  # the SFT curriculum's order; needs it does not name come last
    need_order = sorted(train_needs, key=lambda n: order.index(n) if n in order else len(order))
    by_need = [np.flatnonzero([ex.need == n for ex in train_ex]) for n in need_order]

    # ---- state: optimiser, reference policy, results; or all of it from the checkpoint --------------
    policy = data_parallel.wrap(policy, cfg, device, with_reference=cfg.rl_steps > 0)  # one rank: the policy itself
    optimizer = torch.optim.AdamW(policy.trainable_parameters(), lr=cfg.sft_lr if cfg.sft_steps else cfg.lr,
                                  weight_decay=0.0)
    run = Run(cfg, device, data, examples, policy, tok, make_collate(cfg), rundir, gains, gain_var, by_need,
              need_weights(cfg.need_weights, need_order), need_weights(cfg.rl_need_weights, need_order),
              np.random.default_rng([cfg.seed, 1]),
              torch.Generator().manual_seed(cfg.seed + 2), optimizer, report_lines=report_lines,
              member_gains=member_gains)
    if resume is not None:
        run.start, run.results = resume["step"], resume["results"]
        if run.start > cfg.sft_steps:  # RL had started: its optimiser and reference
            run.optimizer = rl_optimizer(policy, cfg)
            run.reference = data_parallel.frozen_copy(policy)
        data_parallel.load(resume, Path(cfg.resume), policy, run.optimizer, run.reference)  # any number of ranks
        set_rng_state(resume["rng"], run.sample_rng, run.gumbel_gen)
        rundir.truncate_metrics(run.start)
    return run


def fill_labels(cfg: TrainConfig, data, splits: dict,
                train_ex: list) -> tuple[torch.Tensor, torch.Tensor, list[str], Optional[torch.Tensor]]:
    """The filled gains and their variances of every training pool, (N, K) each, the report's lines, and each
    critic ensemble member's gains, (N, M, K) (`flexrec.critic.fill_member_pools`; None unless the imputer is the
    critic, with its variance, of two or more members), which ``--unc-variance members`` reads.

    Under torchrun the critic is fitted once, on rank 0, and its labels sent to the other ranks.
    """
    lines: list[str] = []
    gains = gain_var = member_gains = None
    if distributed.is_main():
        t0 = time.time()
        print(f"critic: fitting the {cfg.imputer} imputer on the observed feedback ...", flush=True)
        imputer = build_imputer(cfg.imputer, data, splits["train"], cfg.critic_ensemble, cfg.critic_epochs,
                                cfg.critic_hidden, cfg.knn_neighbours, cfg.seed, cfg.critic_evidence,
                                cfg.critic_recalibrate, splits["val"], cfg.critic_observed_var,
                                cfg.critic_cold_views)
        if cfg.imputer.startswith("critic"):
            line = calibrate(imputer, data, splits["val"]).line()
            print(line, flush=True)
            lines.append(line)
        gains_np, gain_var_np = fill_pools(data, imputer, train_ex, seed=cfg.seed)
        gains, gain_var = torch.from_numpy(gains_np), torch.from_numpy(gain_var_np)
        members_np = fill_member_pools(data, imputer, train_ex)
        member_gains = None if members_np is None else torch.from_numpy(members_np)
        if cfg.gain == "exp":  # g = 2^l - 1; delta method: Var g ~ (ln 2 * 2^l)^2 Var l
            gain_var = (np.log(2.0) * torch.pow(2.0, gains)) ** 2 * gain_var
            gains = torch.pow(2.0, gains) - 1.0
            member_gains = None if member_gains is None else torch.pow(2.0, member_gains) - 1.0
        print(f"critic fill ({cfg.imputer}) of {len(train_ex)} pools: {time.time() - t0:.1f}s", flush=True)
    if distributed.world() > 1:
        gains, gain_var, lines, member_gains = distributed.broadcast(
            (gains, gain_var, lines, member_gains) if distributed.is_main() else None)
    return gains, gain_var, lines, member_gains


def shuffled_slots(rng: np.random.Generator, n: int, K: int) -> np.ndarray:
    """A new candidate order for each of ``n`` pools (``--shuffle-slots``). Shapes: -> (n, K) int64."""
    return np.argsort(rng.random((n, K)), axis=1)


def permute_pool(example, order: np.ndarray):
    """``example`` with its candidates in ``order`` (slot k now holds the old slot order[k]'s item, labels
    and feedback). Shapes: order (K,) a permutation of 0..K-1."""
    return dataclasses.replace(example, items=example.items[order], true_labels=example.true_labels[order],
                               observed_labels=example.observed_labels[order],
                               observed_mask=example.observed_mask[order])


def permute_by_candidate(order: torch.Tensor, *values: Optional[torch.Tensor]) -> list[Optional[torch.Tensor]]:
    """Per-candidate tensors of a batch put in each pool's new slot order (as `permute_pool` does its items): the
    last dimension is the candidate's, anything between the pool's and it (the critic members' axis) is carried
    along. None stays None. Shapes: order (B, K); each value (B, K) or (B, ..., K) -> the same."""
    def move(x):
        index = order.view(order.shape[0], *([1] * (x.dim() - 2)), order.shape[1]).expand_as(x)
        return x.gather(-1, index)

    return [None if x is None else move(x) for x in values]


def evaluate_split(run: Run, split: str, ranker=None, label: str = "") -> dict:
    """Mean metrics per need on ``split`` (RESULTS_SPLIT or MONITOR; the policy's greedy rankings unless
    ``ranker``); under torchrun each rank ranks its share of the batches. ``label``: a progress bar of pools."""
    ranker = ranker or PolicyRanker(run.policy, run.tokenizer, run.data, run.collate, run.device)
    if label and run.cfg.progress and distributed.is_main():
        ranker = _CountingRanker(ranker, label, len(run.examples[split]))
    try:
        return distributed.evaluate_sharded(lambda exs: mean_metrics(ranker, exs, EVAL_BATCH), run.examples[split],
                                            EVAL_BATCH)
    finally:
        if isinstance(ranker, _CountingRanker):
            ranker.bar.close()


class _CountingRanker:
    """A ranker that advances a progress bar by the pools it ranks (the evaluations of a real LLM take minutes)."""

    def __init__(self, ranker, label: str, total: int):
        from tqdm.auto import tqdm

        self.ranker = ranker
        self.bar = tqdm(total=total, desc=label, unit="pool", leave=False, dynamic_ncols=True)

    def rank(self, examples: list):
        out = self.ranker.rank(examples)
        self.bar.update(len(examples))
        return out


def save(run: Run, done: int, rng: dict) -> None:
    """Checkpoint after ``done`` steps. DDP: rank 0 writes; FSDP: every rank writes its shards."""
    data_parallel.save(run.rundir.path, run.rundir.save_checkpoint, {
        "config": to_dict(run.cfg), "step": done, "results": run.results, "rng": rng, "gains": run.gains,
        "gain_var": run.gain_var, "report_lines": run.report_lines, "member_gains": run.member_gains,
    }, run.policy, run.optimizer, run.reference)


def run_steps(run: Run, on_step: Optional[Callable[[int], None]] = None) -> None:
    """The SFT steps, then the RL steps, from ``run.start``; Ctrl-C saves first (not under FSDP)."""
    cfg = run.cfg
    bar = _progress(cfg, run.start, run.total)
    done, done_rng = run.start, rng_state(run.sample_rng, run.gumbel_gen)
    try:
        for step in range(run.start, run.total):
            if step == 0:
                _stage(bar, "evaluation (before training)")
                run.results["untrained"] = evaluate_split(run, RESULTS_SPLIT, label="before training")
                run.results["popularity"] = evaluate_split(run, RESULTS_SPLIT, ItemPopularityRanker(run.data))
            if step == cfg.sft_steps and cfg.rl_steps:  # the SFT model becomes the RL reference
                if cfg.sft_steps:
                    _stage(bar, "evaluation (after SFT)")
                    run.results["sft"] = evaluate_split(run, RESULTS_SPLIT, label="after SFT")
                run.reference = data_parallel.frozen_copy(run.policy)
                run.optimizer = rl_optimizer(run.policy, cfg)
            sft = step < cfg.sft_steps
            _stage(bar, "SFT" if sft else "RL")
            active = run.by_need[: 1 + step // cfg.need_stagger] if cfg.need_stagger and sft else run.by_need
            idx = sample_batch(run.sample_rng, active, step, cfg.batch_size if sft else cfg.prompts_per_step,
                               cfg.need_pure_batches, run.sft_weights[: len(active)] if sft else run.rl_weights)
            order = shuffled_slots(run.sample_rng, len(idx), run.gains.shape[1]) if cfg.shuffle_slots else None
            rows = distributed.shard(np.arange(len(idx)))  # every rank drew the same global batch; each keeps its share
            idx = idx[rows]
            examples = [run.examples["train"][i] for i in idx]
            gains, gain_var = run.gains[idx], run.gain_var[idx]
            read = cfg.unc_variance == "members" and not sft and run.member_gains is not None  # else never touched
            members = run.member_gains[idx] if read else None
            if order is not None:
                order = torch.from_numpy(order[rows])
                examples = [permute_pool(ex, p.numpy()) for ex, p in zip(examples, order)]
                gains, gain_var, members = permute_by_candidate(order, gains, gain_var, members)
            batch = run.collate(examples, run.tokenizer, run.data).to(run.device)
            gains, gain_var = gains.to(run.device), gain_var.to(run.device)
            if sft:
                for group in run.optimizer.param_groups:  # sft_lr itself unless sft_lr_decay
                    group["lr"] = sft_lr_at(step, cfg)
                logs = sft_step(run.policy, run.optimizer, batch, gains, cfg)
            else:
                logs = rl_step(run.policy, run.reference, run.optimizer, batch, gains, gain_var, cfg, run.gumbel_gen,
                               None if members is None else members.to(run.device))
            logs = distributed.mean_over_ranks(logs)
            done, done_rng = step + 1, rng_state(run.sample_rng, run.gumbel_gen)

            if done % cfg.eval_every == 0 or done == run.total:
                _stage(bar, "evaluation (validation users)")
                for need, r in evaluate_split(run, MONITOR, label="validation curve").items():
                    logs[f"val_ndcg@5/{need}"] = r["ndcg@5"]
            run.rundir.log(done, logs)
            _stage(bar, "SFT" if sft else "RL")
            bar.set_postfix(_postfix(logs), refresh=False)
            bar.update(1)
            if done % cfg.save_every == 0:
                save(run, done, done_rng)
            if on_step is not None:
                on_step(done)
    except KeyboardInterrupt:
        if not data_parallel.is_sharded(run.policy):  # FSDP's save is collective, and another rank may be mid-step
            save(run, done, done_rng)
        bar.close()
        run.rundir.close()
        if distributed.is_main():
            print(f"\ninterrupted after step {done}; resume with: python -m flexrec.train --resume {run.rundir.path}"
                  + (" (from the last checkpoint: FSDP does not save on Ctrl-C)"
                     if data_parallel.is_sharded(run.policy) else ""), file=sys.stderr, flush=True)
        raise
    bar.close()


def finish(run: Run) -> dict:
    """The final evaluation on validation users, the last checkpoint, results.json and report.md."""
    cfg = run.cfg
    if distributed.is_main():
        print("evaluation (validation users, after training) ...", flush=True)
    if cfg.rl_steps:
        run.results["rl"] = evaluate_split(run, RESULTS_SPLIT, label="after training")
    elif cfg.sft_steps:
        run.results["sft"] = evaluate_split(run, RESULTS_SPLIT, label="after training")
    save(run, run.total, rng_state(run.sample_rng, run.gumbel_gen))
    if distributed.is_main():
        report = write_report(run.rundir.path, to_dict(cfg), run.results, run.rundir.metrics(), run.report_lines)
        (run.rundir.path / "results.json").write_text(json.dumps(run.results, indent=2) + "\n")
        print(f"\nResults ({USERS_LINE})\n" + results_table(run.results, untrained_label(cfg.model))
              + f"\n\nreport: {report}", flush=True)
    run.rundir.close()
    return run.results


def _progress(cfg: TrainConfig, start: int, total: int):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=start, disable=not (cfg.progress and distributed.is_main()), desc="flexrec",
                dynamic_ncols=True)


def _stage(bar, name: str) -> None:
    """Name the stage on the progress bar (SFT, RL, evaluation), shown at once when it changes."""
    if not bar.disable and bar.desc != name:
        bar.set_description(name)


def _postfix(logs: dict) -> dict:
    show = {"sft/loss": "loss", "rl/reward": "reward", "rl/kl": "kl"}
    out = {short: f"{logs[key]:.3f}" for key, short in show.items() if key in logs}
    ndcg = [v for k, v in logs.items() if k.startswith("val_ndcg@5/")]
    if ndcg:
        out["ndcg@5"] = f"{np.mean(ndcg):.3f}"
    return out

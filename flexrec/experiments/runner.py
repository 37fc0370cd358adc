"""Running an experiment: settings x methods x seeds -> per-user metrics on the true labels.

An `Experiment` is a list of `Setting`s (what the LLM is trained on, e.g. one need or all needs),
a list of `Method`s (a traditional baseline, the untrained policy, SFT, or SFT + RL with some reward
form / reward source), and the evaluations to run (training or held-out paraphrases). For each seed
and setting:
- one SFT-only run per label source (imputer) is trained; every RL method continues it through
  `adapters.fork_run` (same warm start, critic fill and random streams as a from-scratch run);
- the untrained policy is that run's initial policy; baselines are fitted on the same observed data;
- every method ranks the same pools and is scored on true labels: the validation users of seeds 0, 1, ...
  while settings are being chosen, and the test users of the reserved confirmation seeds
  (``CONFIRM_SEEDS``) only with ``confirm=True`` (`--confirm`), for the final report.
Per-user values are kept, so a method's interval is bootstrapped over users (stratified by seed), and a
difference between methods is paired and bootstrapped over seeds, then users
(``flexrec.eval.stats.hierarchical_bootstrap_ci``).
"""

from __future__ import annotations

import dataclasses
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from flexrec.eval.evaluate import METRICS, load_examples, per_user_values, rank_all, run_spec
from flexrec.eval.stats import Interval, bootstrap_ci, hierarchical_bootstrap_ci, per_seed_means

# Seeds reserved for the confirmation runs (`--confirm`): never used to choose a setting. Every other run
# (defaults, tuning, development experiments) uses seeds below CONFIRM_SEEDS[0] and validation users.
CONFIRM_SEEDS = (100, 101, 102, 103, 104)


def experiment_seeds(seeds, confirm: bool = False) -> list[int]:
    """The seeds an experiment runs: N -> 0..N-1, or the first N confirmation seeds with ``confirm``; a list is
    checked as it is. Raises ValueError for a reserved seed without ``confirm`` and for any other with it."""
    if isinstance(seeds, int):
        if confirm and not 1 <= seeds <= len(CONFIRM_SEEDS):
            raise ValueError(f"--confirm runs 1 to {len(CONFIRM_SEEDS)} seeds ({CONFIRM_SEEDS}), not {seeds}")
        seeds = list(CONFIRM_SEEDS[:seeds]) if confirm else list(range(seeds))
    seeds = [int(s) for s in seeds]
    if confirm and not set(seeds) <= set(CONFIRM_SEEDS):
        raise ValueError(f"--confirm runs the reserved seeds {CONFIRM_SEEDS} only, not {seeds}")
    if not confirm and any(s >= CONFIRM_SEEDS[0] for s in seeds):
        raise ValueError(f"seeds >= {CONFIRM_SEEDS[0]} are reserved for the confirmation runs (--confirm): they may "
                         f"never be used to choose a setting; got {seeds}")
    return seeds


@dataclass
class Method:
    """One row of a results table.

    kind: "baseline" (a `flexrec.baselines` model named by `baseline`), "untrained", "sft", or "rl";
    overrides: TrainConfig fields for this method's runs (e.g. reward_mode, imputer).
    """

    label: str
    kind: str
    overrides: dict = field(default_factory=dict)
    baseline: str = ""


@dataclass
class Setting:
    """What the policy is trained on, and which needs are evaluated."""

    label: str
    overrides: dict  # TrainConfig fields, e.g. {"need": "maximize_interest"}
    eval_needs: str = "all"


@dataclass
class Evaluation:
    label: str
    heldout_instructions: bool = False


@dataclass
class PaperOrder:
    """What the paper reports for an experiment, for the report's "against the paper" section.

    pairs: (above, below) method labels of this experiment that the paper orders that way; claim: the
    paper's claim in words, without its figures (its model, data and K differ from these runs).
    """

    pairs: list[tuple[str, str]]
    claim: str


@dataclass
class Experiment:
    name: str
    title: str
    description: str
    settings: list[Setting]
    methods: list[Method]
    evaluations: list[Evaluation] = field(default_factory=lambda: [Evaluation("training paraphrases")])
    compare: tuple[str, list[str]] = ("FlexRec", ["SFT", "GRPO seq-NDCG (Rec-R1-like)"])  # paired deltas
    compare_also: list[tuple[str, list[str]]] = field(default_factory=list)  # further (reference, others) tables
    curves: bool = False  # plot the RL reward curves across seeds (training stability)
    fidelity_eps: tuple = ()  # report `fidelity.advantage_fidelity` of each seed's SFT run at these unc_eps
    paper: Optional[PaperOrder] = None  # the paper's ordering, compared with ours in the report


# Sizes: TrainConfig overrides. "smoke" is for the test suite only (seconds, meaningless numbers).
# "default" is the budget of `python -m flexrec.train` with no arguments (1500 SFT + 300 RL steps on 1,000
# users): the size at which the README's claims are made (joint, 5 seeds: 25 runs, 22.1 min on 2 cores).
# "quick" runs all five experiments x 3 seeds on a 2-core CPU within 30 minutes (measured: 20.8 min, with
# other jobs on the box; 160 SFT + 30 RL steps took 13.7 min but left the joint model at random). "full" is
# meant for a GPU and a real LLM (K=20, a larger catalogue, twice the default steps; not yet run): the tiny model
# did not learn K=20 at all in 1500 SFT steps (validation NDCG@5 at the untrained level, measured on CPU).
SIZES = {
    "smoke": dict(world_users=60, world_items=80, sft_steps=3, rl_steps=2, prompts_per_step=2, group_size=2,
                  batch_size=4, critic_epochs=2, critic_ensemble=1, eval_every=1000, save_every=1000),
    "quick": dict(world_users=400, sft_steps=300, rl_steps=50, need_stagger=75, eval_every=1000, save_every=1000),
    "default": dict(eval_every=250, save_every=1000),
    "full": dict(world_users=1000, world_items=400, num_candidates=20, sft_steps=3000, rl_steps=600,
                 eval_every=100, save_every=200),
}
BASELINE_OPTIONS = {"smoke": {"bpr": {"epochs": 2}, "sasrec": {"epochs": 2}}}


@dataclass
class Cell:
    """Per-user values of one (setting, evaluation, method), pooled over seeds.

    values: {need: {metric: (N,) float64}}; strata: {need: (N,) seed of each value}.
    """

    values: dict = field(default_factory=dict)
    strata: dict = field(default_factory=dict)

    def add(self, seed: int, per_user: dict) -> None:
        for need, v in per_user.items():
            row = self.values.setdefault(need, {m: np.zeros(0) for m in METRICS})
            for m in METRICS:
                row[m] = np.concatenate([row[m], v[m]])
            self.strata[need] = np.concatenate([self.strata.get(need, np.zeros(0, int)), np.full(len(v[m]), seed)])

    def seeds(self, need: str) -> list[int]:
        return [int(s) for s in np.unique(self.strata[need])]

    def interval(self, need: str, metric: str, n_boot: int = 1000) -> Interval:
        return bootstrap_ci(self.values[need][metric], n_boot, strata=self.strata[need])

    def seed_std(self, need: str, metric: str = "ndcg@5") -> float:
        """Standard deviation over seeds of the per-seed mean (0 with one seed)."""
        v, s = self.values[need][metric], self.strata[need]
        means = [v[s == k].mean() for k in np.unique(s)]
        return float(np.std(means, ddof=1)) if len(means) > 1 else 0.0


def paired_delta(a: Cell, b: Cell, need: str, metric: str = "ndcg@5", n_boot: int = 1000) -> Interval:
    """Mean of a - b over the same (seed, user) pools, with a seed-aware interval (seeds, then users)."""
    diff = a.values[need][metric] - b.values[need][metric]
    return hierarchical_bootstrap_ci(diff, a.strata[need], n_boot)


def per_seed_delta(a: Cell, b: Cell, need: str, metric: str = "ndcg@5") -> dict:
    """{seed: mean of a - b over that seed's users}."""
    return per_seed_means(a.values[need][metric] - b.values[need][metric], a.strata[need])


def check_against_trainer(run: Path, stage: str, per_user: dict, split: str) -> None:
    """Fail loudly unless our reload of `run` scores exactly what the trainer's own evaluation did.

    The trainer scores its ``results_split`` users (config.json; "test" for runs made before the trainer
    scored validation users only) at the end of each stage (results.json). When ``split`` is that split,
    a difference means the adapter rebuilt a different world, prompt or model than the trainer trained on.
    """
    import json

    from flexrec.train.rundir import read_run_config

    if read_run_config(run).get("results_split", "test") != split:
        return
    path = Path(run) / "results.json"
    trainer = json.loads(path.read_text()).get(stage, {}) if path.is_file() else {}
    for need, r in trainer.items():
        if need in per_user and abs(float(per_user[need]["ndcg@5"].mean()) - r["ndcg@5"]) > 1e-6:
            raise RuntimeError(
                f"{run}: the reloaded {stage} policy scores NDCG@5 {per_user[need]['ndcg@5'].mean():.6f} on "
                f"{need}, the trainer's own evaluation {r['ndcg@5']:.6f}: flexrec.experiments.adapters no "
                "longer rebuilds what flexrec.train builds (see its docstring)")


def train_cfg(base: dict, *overrides: dict):
    from flexrec.config import resolve

    values = dict(base)
    for o in overrides:
        values.update(o)
    return resolve(values)


@dataclass
class SeedSetting:
    """One (seed, setting) of an experiment: its common settings, run folder and scored pools.

    ``sft_runs``: the SFT-only run of each label source (imputer), trained once and shared by every method."""

    seed: int
    setting: Setting
    common: dict  # TrainConfig fields of every run here
    root: Path  # where its runs go
    world: object  # the InteractionData the baselines fit on
    train_users: np.ndarray
    examples: dict  # evaluation label -> the scored pools
    sft_runs: dict = field(default_factory=dict)


def prepare(exp: Experiment, seed: int, setting: Setting, base: dict, runs_root: str, split: str) -> SeedSetting:
    """The pools every method of (seed, setting) is scored on: the trainer's own users of ``split``."""
    root = Path(runs_root) / exp.name / setting.label.replace(" ", "_") / f"seed{seed}"
    common = dict(base, seed=seed, eval_needs=setting.eval_needs, **setting.overrides)
    cfg0 = train_cfg(common, dict(rl_steps=0))
    examples = {}
    for ev in exp.evaluations:
        spec = run_spec(cfg0, split, ev.heldout_instructions, needs=setting.eval_needs)
        world, examples[ev.label], train_users = load_examples(spec)
    return SeedSetting(seed, setting, common, root, world, train_users, examples)


def sft_run(here: SeedSetting, imputer: str, log: Callable[[str], None]) -> tuple[Path, bool]:
    """The SFT-only run of ``imputer``'s label fill (trained on first use); and whether it was new here."""
    from flexrec.experiments import adapters

    if imputer in here.sft_runs:
        return here.sft_runs[imputer], False
    cfg = train_cfg(here.common, dict(rl_steps=0, imputer=imputer, out=str(here.root / f"sft-{imputer}")))
    log(f"seed {here.seed} {here.setting.label}: SFT ({imputer})")
    here.sft_runs[imputer] = adapters.train_run(cfg)
    return here.sft_runs[imputer], True


def method_ranker(method: Method, here: SeedSetting, size: str, device: str, log: Callable[[str], None]):
    """(ranker, trained runs, (run, stage) the trainer evaluated or None) of one method at (seed, setting)."""
    from flexrec.baselines import make_baseline
    from flexrec.experiments import adapters
    from flexrec.runs import load_run

    if method.kind == "baseline":
        opts = BASELINE_OPTIONS.get(size, {}).get(method.baseline, {})
        return make_baseline(method.baseline, here.world, here.train_users, seed=here.seed, **opts), [], None
    imputer = method.overrides.get("imputer", here.common.get("imputer", "critic"))
    parent, new = sft_run(here, imputer, log)
    trained = [parent] if new else []
    if method.kind in ("untrained", "sft"):
        return load_run(parent, untrained=method.kind == "untrained", device=device), trained, (parent, method.kind)
    if method.kind != "rl":
        raise ValueError(f"unknown method kind {method.kind!r}")
    slug = re.sub(r"[^a-z0-9]+", "-", method.label.lower()).strip("-")
    cfg = train_cfg(here.common, dict(imputer=imputer, out=str(here.root / slug)), method.overrides)
    log(f"seed {here.seed} {here.setting.label}: {method.label}")
    run = adapters.fork_run(parent, cfg) if cfg.sft_steps else adapters.train_run(cfg)
    return load_run(run, device=device), trained + [run], (run, "rl")


def run_experiment(exp: Experiment, size: str = "quick", seeds=3, model: str = "tiny",
                   data: str = "synthetic", device: str = "auto", runs_root: str = "runs/experiments",
                   extra: Optional[dict] = None, log: Callable[[str], None] = print,
                   confirm: bool = False, allow_dirty: bool = False) -> dict:
    """Train and evaluate everything; returns {setting: {evaluation: {method: Cell}}} and curves.

    ``seeds``: N or a list (``experiment_seeds``). Without ``confirm`` every method is scored on the validation
    users of seeds below ``CONFIRM_SEEDS[0]`` (for choosing settings); with ``confirm`` on the test users of the
    reserved confirmation seeds, once the settings are frozen; the two never share a user or a seed. A
    confirmation refuses to start from a tree with uncommitted changes unless ``allow_dirty``.

    Result: {"cells": that dict, "curves": {setting: {method: [(steps, rewards) per seed]}}, "seconds": this
    call's wall time, "train_seconds": the training runs' wall times when they ran (reused runs included),
    "runs": how many training runs, "split": the users scored, "seeds": the seeds, "confirm", "run_codes":
    {described code version: number of runs} of every run scored, "fidelity": {setting: (markdown lines, data)}
    of `fidelity.fidelity_section` when ``exp.fidelity_eps`` is set}.
    """
    from flexrec.config import set_threads
    from flexrec.experiments import adapters
    from flexrec.train.rundir import code_version, describe_code

    if size not in SIZES:
        raise ValueError(f"unknown size {size!r}; use one of {', '.join(SIZES)}")
    seeds = experiment_seeds(seeds, confirm)
    split = "test" if confirm else "val"
    if confirm and not allow_dirty and code_version().get("dirty"):
        raise DirtyTreeError(f"--confirm: {describe_code(code_version())}: commit first (the report must name the "
                             "code its runs were trained with), or pass --allow-dirty (the report then says so)")
    set_threads()
    base = dict(SIZES[size], model=model, data=data, device=device, progress=False, **(extra or {}))
    cells = {s.label: {e.label: {m.label: Cell() for m in exp.methods} for e in exp.evaluations} for s in exp.settings}
    curves = {s.label: {m.label: [] for m in exp.methods if m.kind == "rl"} for s in exp.settings}
    start, runs, code = time.time(), [], describe_code(code_version())  # the code that trains, read before anything runs
    critic_sft: dict[str, list[Path]] = {s.label: [] for s in exp.settings}  # each seed's SFT run on the critic fill
    scored: list[Path] = []  # every run a row was scored from (trained now or reused)
    for seed in seeds:
        for setting in exp.settings:
            here = prepare(exp, seed, setting, base, runs_root, split)
            for method in exp.methods:
                ranker, trained, checked = method_ranker(method, here, size, device, lambda s: log(f"[{exp.name}] {s}"))
                runs += trained
                scored += [checked[0]] if checked else []
                if method.kind == "rl":
                    curves[setting.label][method.label].append(adapters.reward_curve(trained[-1]))
                for ev in exp.evaluations:
                    perm = rank_all(ranker, here.examples[ev.label])
                    per_user = per_user_values(here.examples[ev.label], perm)
                    if checked and not ev.heldout_instructions:
                        check_against_trainer(*checked, per_user, split)
                    cells[setting.label][ev.label][method.label].add(seed, per_user)
            if "critic" in here.sft_runs:
                critic_sft[setting.label].append(here.sft_runs["critic"])
    fidelity = {}
    if exp.fidelity_eps:
        from flexrec.experiments.fidelity import fidelity_section

        log(f"[{exp.name}] advantage fidelity of the SFT runs")
        fidelity = {label: fidelity_section(r, exp.fidelity_eps) for label, r in critic_sft.items() if r}
    return {"cells": cells, "curves": curves, "seconds": time.time() - start, "base": base, "split": split,
            "train_seconds": sum(adapters.wall_seconds(r) for r in runs), "runs": len(runs), "code": code,
            "fidelity": fidelity, "seeds": seeds, "confirm": confirm, "allow_dirty": allow_dirty,
            "run_codes": run_codes(scored)}


class DirtyTreeError(RuntimeError):
    """A final report would rest on code that no commit holds."""


def run_codes(run_dirs: list[Path]) -> dict[str, int]:
    """{"commit abc1234" or "commit abc1234 + uncommitted changes": number of runs} of the runs' own
    config.json (``code_version``, recorded when each run was trained or resumed)."""
    from flexrec.train.rundir import describe_code, read_run_config

    counts: dict[str, int] = {}
    for run in dict.fromkeys(Path(r) for r in run_dirs):
        key = describe_code(read_run_config(run).get("code_version", {}))
        counts[key] = counts.get(key, 0) + 1
    return counts


def with_overrides(method: Method, **overrides) -> Method:
    return dataclasses.replace(method, overrides=dict(method.overrides, **overrides))

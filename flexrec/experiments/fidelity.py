"""How close the RL advantages that the trainer computes are to those of the true labels.

The trainer's rewards come from filled labels: observed where observed, the critic's mean elsewhere.
The uncertainty weights (`flexrec.rl.item_uncertainty_weights`) are meant to bring the scaled
advantages closer to the advantages that the true labels would give. Where every true label is known (the
synthetic world; on real data, the logged feedback that the trainer does not see), that can be measured
directly, without training anything:

1. take a run's SFT policy, its training pools and their filled labels and variances (from its checkpoint);
2. sample G rankings per prompt, as an RL step does;
3. compute FlexRec's item advantages (the causal swap reward, the run's cutoff and baseline) from the
   filled labels (A) and from the true labels (A*), and the uncertainty-scaled A for several eps;
4. report the cosine between the scaled A and A* over the decisions the reward scores. A scaling that
   helps raises it; one whose variances say little about the errors lowers it (it shrinks signal and
   noise alike). Also reported: the rank correlation between the reward variances and the squared
   advantage errors, and the effective share of the batch that the weights leave, (sum w)^2 / (n sum w^2).

    from flexrec.experiments.fidelity import advantage_fidelity
    advantage_fidelity("runs/default/joint/all_needs/seed0/sft-critic", eps=(0.1, 1.0, 10.0))

``forms`` adds the paper's rollout-level weights (`flexrec.rl.rollout_uncertainty_weights`, labels "rollout eps X")
beside the item-level ones ("eps X"); ``critic`` refits the run's critic with other options (evidence counts,
recalibration, the number of members; see `flexrec.critic.Critic.fit`) and fills the same pools with it, so that
critics can be compared on the same sampled rankings. Where the critic has two or more members, the weights from the
spread of the members' own rewards (`--unc-variance members`, `flexrec.rl.member_reward_variance`) are reported too
("members eps X", "members rollout eps X"). The critic's calibration is also measured where no choice is made on it: coverage
of the filled labels of the sampled pools against the true labels, and of the validation users' observed labels
(cross-fitted over two halves of the validation users when the critic is recalibrated on them, ``recalibrate``
"val"; with "heldout" the factors come from held-out training labels, and the validation users are out of sample).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable, Optional

import numpy as np
import torch

NO_SCALING = "w/o uncertainty"


def _rank_correlation(a: torch.Tensor, b: torch.Tensor) -> float:
    ra, rb = (x.argsort().argsort().to(torch.float64) for x in (a, b))
    return float(torch.corrcoef(torch.stack([ra, rb]))[0, 1])


def _cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a * b).sum() / (a.norm() * b.norm()).clamp(min=1e-12))


def _coverage(var: torch.Tensor, error: torch.Tensor) -> tuple[float, float]:
    z = error.abs() / var.clamp(min=1e-12).sqrt()
    return float((z <= 0.6745).float().mean()), float((z <= 1.6449).float().mean())


def rank_correlation_ceiling(var: torch.Tensor, seed: int = 0) -> float:
    """The rank correlation of ``var`` to squared errors that are exactly Gaussian with those variances, one draw
    each: what the best-calibrated variances of this spread could reach against single errors. Shapes: (N,) -> float."""
    z = torch.randn(var.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return _rank_correlation(var, z**2 * var.to(torch.float64))


def _known_labels(data, examples: list) -> torch.Tensor:
    """Where a pool's interest is observed (its label is the user's feedback). Shapes: -> (N, K) bool."""
    return torch.from_numpy(np.stack([data.observed.lookup(int(ex.user), np.asarray(ex.items, np.int64))[1]
                                      for ex in examples]))


def refit_fill(ranker, examples: list, evidence: bool, recalibrate: str, observed_var: str = "zero",
               cold_views: bool = False, ensemble: Optional[int] = None) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """The run's critic refitted with ``evidence`` / ``recalibrate`` / ``observed_var`` / ``cold_views`` (`Critic.fit`),
    ``ensemble`` members (default: the run's), and the filled labels of ``examples`` (as the trainer fills them),
    and its coverage on the validation users' observed labels. The dict also holds "member_gains", each member's
    labels (`flexrec.critic.fill_member_pools`; None with one member). Shapes: -> (N, K), (N, K), dict.
    """
    from flexrec.critic import (VarianceRecalibration, build_imputer, coverage, fill_member_pools, fill_pools,
                                observed_interest)
    from flexrec.data.pools import split_users

    cfg = ranker.config
    if cfg.imputer != "critic" or cfg.gain != "linear":
        raise ValueError("refitting compares critics: the run must use --imputer critic and --gain linear")
    splits = split_users(ranker.data, seed=cfg.seed)
    with torch.enable_grad():  # advantage_fidelity runs under no_grad; the critic trains
        critic = build_imputer("critic", ranker.data, splits["train"], ensemble or cfg.critic_ensemble, cfg.critic_epochs,
                               cfg.critic_hidden, cfg.knn_neighbours, cfg.seed, evidence, recalibrate,
                               splits["val"], observed_var, cold_views)
    gains, var = fill_pools(ranker.data, critic, examples, seed=cfg.seed)
    members = fill_member_pools(ranker.data, critic, examples)
    members = None if members is None else torch.from_numpy(members).float()
    recalibration = critic.recalibration
    if recalibrate == "val":
        critic.recalibration = None
    users, items, values = observed_interest(ranker.data, splits["val"])
    mu, raw_var = critic.predict(users, items)
    pred_var = raw_var.copy()
    if recalibrate == "val":  # out of sample: each half of the validation users by the factors fitted on the other half
        order = np.random.default_rng([cfg.seed, 5]).permutation(splits["val"])
        in_first = np.isin(users, order[: len(order) // 2])
        for fit_on in (in_first, ~in_first):
            factors = VarianceRecalibration.fit(mu[fit_on], raw_var[fit_on], values[fit_on])
            pred_var[~fit_on] = factors.apply(raw_var[~fit_on])
    critic.recalibration = recalibration
    c50, c90 = coverage(mu, pred_var, values)
    return torch.from_numpy(gains).float(), torch.from_numpy(var).float(), {"val_coverage_50": c50,
                                                                             "val_coverage_90": c90,
                                                                             "val_labels": len(values),
                                                                             "member_gains": members}


@torch.no_grad()
def advantage_fidelity(sft_run: str | Path, eps: Iterable[float] = (0.1, 1.0, 10.0), prompts: int = 512,
                       group_size: Optional[int] = None, seed: int = 0, device: str = "cpu",
                       forms: Iterable[str] = ("item",), critic: Optional[dict] = None) -> dict:
    """Fidelity of the (scaled) item advantages to the true labels' on ``prompts`` training pools of a run.

    ``sft_run``: a finished run directory (normally SFT only: the policy RL would start from). Rankings
    are sampled at the run's temperature, ``group_size`` (default: the run's) per prompt, with the run's
    reward cutoff, advantage baseline and weight clip.

    Returns {"cosine": {label: float}, "cosine_actual_error": {label: float}, "effective_share": {label: float},
    "variance_error_rank_corr": float, "prompts": int, "group_size": int}, with label NO_SCALING or "eps X".
    ``cosine_actual_error`` weights by each reward's actual squared error in place of its variance: the
    most that better variances could give under this form of weighting.
    """
    from flexrec import rl
    from flexrec.runs import load_run
    from flexrec.config import REWARD_MODES
    from flexrec.ops import swap_reward, swap_reward_var

    run = Path(sft_run)
    ranker = load_run(run, device=device)
    if "gains" not in ranker.checkpoint:
        raise ValueError(f"{run}: the checkpoint has no filled labels (was it written by flexrec.train?)")
    cfg = ranker.config
    train_ex = ranker.examples("train")
    gains_all, var_all = ranker.checkpoint["gains"].float(), ranker.checkpoint["gain_var"].float()
    if len(train_ex) != len(gains_all):
        raise ValueError(f"{run}: {len(train_ex)} training pools rebuilt but {len(gains_all)} filled in the checkpoint")
    if cfg.gain != "linear":  # the checkpoint holds the gains the rewards used; compare like with like
        raise ValueError(f"{run}: gain {cfg.gain!r}; the fidelity check compares linear gains (labels)")
    rng = np.random.default_rng(seed)
    pick = np.sort(rng.choice(len(train_ex), min(prompts, len(train_ex)), replace=False))
    G, K = group_size or cfg.group_size, cfg.num_candidates
    gen = torch.Generator().manual_seed(seed)
    perms = []
    ranker.policy.eval()
    for start in range(0, len(pick), 64):
        chunk = [train_ex[i] for i in pick[start:start + 64]]
        batch = ranker.collate(chunk, ranker.tokenizer, ranker.data)
        out = ranker.policy.rank(batch.input_ids.to(ranker.device), batch.attention_mask.to(ranker.device), K, G,
                                 temperature=cfg.temperature, generator=gen)
        perms.append(out.perm.cpu())
    perm = torch.cat(perms)  # (P, G, K)
    P = perm.shape[0]
    true = torch.from_numpy(np.stack([train_ex[i].true_labels for i in pick])).float()

    extra = {}
    members_all = ranker.checkpoint.get("member_gains")
    if critic is not None:  # another critic's fill of the same pools
        gains_all, var_all, extra = refit_fill(ranker, train_ex, bool(critic.get("evidence")),
                                               critic.get("recalibrate", "none"), critic.get("observed", "zero"),
                                               bool(critic.get("cold")), int(critic.get("ensemble", 0)) or None)
        members_all = extra.pop("member_gains")
    filled_g, filled_v, true_g = (rl.in_rank_order(x, perm) for x in (gains_all[pick], var_all[pick], true))
    # The labels the critic filled, and the observed ones; only the critic's labels (or, with the observed labels'
    # variance estimated, the observed ones too) have a variance: those are the labels the variance can rank.
    # (The Monte-Carlo variance of a label whose draws are all equal is rounding, ~1e-14: not a variance.)
    known = _known_labels(ranker.data, [train_ex[i] for i in pick])
    error, var = true - gains_all[pick], var_all[pick]
    unknown, known_var = ~known & (var > 1e-10), known & (var > 1e-10)
    extra.update(zip(("pool_coverage_50", "pool_coverage_90"), _coverage(var[unknown], error[unknown])))
    if known_var.any():
        extra.update(zip(("observed_coverage_50", "observed_coverage_90"), _coverage(var[known_var], error[known_var])))
    extra.update(label_variance_error_rank_corr=_rank_correlation(var[unknown], error[unknown] ** 2),
                 label_rank_corr_ceiling=rank_correlation_ceiling(var[unknown], seed),
                 label_rank_corr_ceiling_actual=rank_correlation_ceiling(error[unknown] ** 2, seed),
                 all_label_variance_error_rank_corr=_rank_correlation(var[unknown | known], error[unknown | known] ** 2),
                 observed_labels=int(known.sum()), filled_labels=int(unknown.sum()))
    # How much of the filled labels' squared error is an offset shared by the whole pool (the mean error of a pool's
    # filled labels, squared): a swap reward compares a list's items, so it sees such an offset only through IDCG.
    per_pool = unknown.sum(-1)
    offset = (error * unknown).sum(-1) / per_pool.clamp(min=1)
    extra.update(filled_label_mse=float((error[unknown] ** 2).mean()) if unknown.any() else 0.0,
                 filled_label_pool_offset_ms=float((offset[per_pool > 0] ** 2).mean()) if unknown.any() else 0.0)
    mode = REWARD_MODES["flexrec"][0]  # the trainer's item reward (the causal swap)
    per_rank = cfg.adv_baseline == "rank"
    reward = swap_reward(filled_g, cfg.ndcg_cutoff, mode).view(P, G, K)
    reward_true = swap_reward(true_g, cfg.ndcg_cutoff, mode).view(P, G, K)
    adv = rl.group_item_advantages(reward, cfg.adv_delta, per_rank)
    adv_true = rl.group_item_advantages(reward_true, cfg.adv_delta, per_rank)
    reward_var = swap_reward_var(filled_g, filled_v, cfg.ndcg_cutoff, mode).view(P, G, K)
    scored = rl.scored_decisions(K, cfg.ndcg_cutoff).expand(P, G, K)
    plain = _cosine(adv[scored], adv_true[scored])
    cosine, oracle, share = {NO_SCALING: plain}, {NO_SCALING: plain}, {NO_SCALING: 1.0}
    actual_var = (reward - reward_true) ** 2  # what a perfect critic's variance could at best say: the actual error
    for e in eps:
        w = rl.item_uncertainty_weights(reward_var, cfg.ndcg_cutoff, float(e), cfg.unc_max_weight)[scored]
        cosine[f"eps {e:g}"] = _cosine(w * adv[scored], adv_true[scored])
        share[f"eps {e:g}"] = float(w.sum() ** 2 / (len(w) * (w**2).sum()))
        w_best = rl.item_uncertainty_weights(actual_var, cfg.ndcg_cutoff, float(e), cfg.unc_max_weight)[scored]
        oracle[f"eps {e:g}"] = _cosine(w_best * adv[scored], adv_true[scored])
    if "rollout" in forms:  # the paper's form: one weight per rollout, from the variance of its NDCG@cutoff
        rollout_var = rl.rollout_reward_variance(filled_g, filled_v, cfg.ndcg_cutoff).view(P, G)
        ndcg_error = (swap_reward(filled_g, cfg.ndcg_cutoff, "sequence")[:, 0]
                      - swap_reward(true_g, cfg.ndcg_cutoff, "sequence")[:, 0]).view(P, G) ** 2
        for e in eps:
            w = rl.rollout_uncertainty_weights(rollout_var, K, cfg.ndcg_cutoff, float(e), cfg.unc_max_weight)[scored]
            cosine[f"rollout eps {e:g}"] = _cosine(w * adv[scored], adv_true[scored])
            share[f"rollout eps {e:g}"] = float(w.sum() ** 2 / (len(w) * (w**2).sum()))
            w_best = rl.rollout_uncertainty_weights(ndcg_error, K, cfg.ndcg_cutoff, float(e), cfg.unc_max_weight)[scored]
            oracle[f"rollout eps {e:g}"] = _cosine(w_best * adv[scored], adv_true[scored])
        extra["rollout_variance_error_rank_corr"] = _rank_correlation(rollout_var.flatten(), ndcg_error.flatten())
    if members_all is not None:  # --unc-variance members: the spread of the members' own rewards
        member_var = rl.member_reward_variance(members_all[pick].float(), perm, cfg.ndcg_cutoff, mode)
        member_rollout_var = rl.member_reward_variance(members_all[pick].float(), perm, cfg.ndcg_cutoff, "sequence")[..., 0]
        for e in eps:
            w = rl.item_uncertainty_weights(member_var, cfg.ndcg_cutoff, float(e), cfg.unc_max_weight)[scored]
            cosine[f"members eps {e:g}"] = _cosine(w * adv[scored], adv_true[scored])
            share[f"members eps {e:g}"] = float(w.sum() ** 2 / (len(w) * (w**2).sum()))
            oracle[f"members eps {e:g}"] = oracle[f"eps {e:g}"]
            if "rollout" in forms:
                w = rl.rollout_uncertainty_weights(member_rollout_var, K, cfg.ndcg_cutoff, float(e), cfg.unc_max_weight)[scored]
                cosine[f"members rollout eps {e:g}"] = _cosine(w * adv[scored], adv_true[scored])
                share[f"members rollout eps {e:g}"] = float(w.sum() ** 2 / (len(w) * (w**2).sum()))
                oracle[f"members rollout eps {e:g}"] = oracle[f"rollout eps {e:g}"]
        extra.update(members=int(members_all.shape[1]),
                     member_reward_variance_error_rank_corr=_rank_correlation(member_var[scored], actual_var[scored]),
                     member_reward_rank_corr_ceiling=rank_correlation_ceiling(member_var[scored], seed),
                     member_variance_advantage_error_rank_corr=_rank_correlation(member_var[scored],
                                                                                 ((adv - adv_true) ** 2)[scored]))
        if "rollout" in forms:
            extra["member_rollout_variance_error_rank_corr"] = _rank_correlation(member_rollout_var.flatten(),
                                                                                 ndcg_error.flatten())
    errors = (adv - adv_true) ** 2
    extra.update(reward_rank_corr_ceiling=rank_correlation_ceiling(reward_var[scored], seed),
                 reward_rank_corr_ceiling_actual=rank_correlation_ceiling(actual_var[scored], seed))
    return {"cosine": cosine, "cosine_actual_error": oracle, "effective_share": share,
            "variance_error_rank_corr": _rank_correlation(reward_var[scored], errors[scored]),
            "reward_variance_error_rank_corr": _rank_correlation(reward_var[scored], actual_var[scored]),
            "prompts": P, "group_size": G, **extra}


def fidelity_section(sft_runs: list[Path], eps: Iterable[float]) -> tuple[list[str], dict]:
    """The report section of `advantage_fidelity` over several seeds' SFT runs: (markdown lines, data)."""
    eps = tuple(eps)
    per_seed = [advantage_fidelity(r, eps) for r in sft_runs]
    labels = list(per_seed[0]["cosine"])
    lines = ["## Advantage fidelity on the training pools (why a strength helps or costs)", "",
             f"The RL advantages from the filled labels against those from the true labels, on "
             f"{per_seed[0]['prompts']} training prompts per seed, {per_seed[0]['group_size']} rankings each, "
             "sampled from the SFT policy that RL starts from (`flexrec.experiments.fidelity`). A scaling that "
             "helps raises the cosine; mean over seeds (sd). The last column weights by each reward's actual "
             "squared error instead of the critic's variance: the most any variance could give with this weighting.",
             "",
             "| scaling | cosine to the true advantages | effective batch share | with the actual errors as variances |",
             "|---|---|---|---|"]
    for label in labels:
        cos = np.array([s["cosine"][label] for s in per_seed])
        best = np.array([s["cosine_actual_error"][label] for s in per_seed])
        share = np.array([s["effective_share"][label] for s in per_seed])
        lines.append(f"| {label} | {cos.mean():.3f} ({cos.std():.3f}) | {share.mean():.2f} | {best.mean():.3f} |")
    corr = np.array([s["variance_error_rank_corr"] for s in per_seed])
    lines += ["", f"Rank correlation between a reward's variance and its advantage's squared error: "
              f"{corr.mean():.2f} (seeds: {', '.join(f'{c:.2f}' for c in corr)}).", ""]
    return lines, {"per_seed": per_seed, "runs": [str(r) for r in sft_runs]}


def main(argv: Optional[list[str]] = None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="python -m flexrec.experiments.fidelity",
                                description="How close a run's (uncertainty-scaled) RL advantages are to the "
                                            "true labels' advantages; prints JSON.")
    p.add_argument("run", help="a finished run directory (normally SFT only: the policy RL starts from)")
    p.add_argument("eps", nargs="*", type=float, default=[0.1, 1.0, 10.0], help="unc_eps values to compare")
    p.add_argument("--prompts", type=int, default=512, help="training prompts to sample rankings for")
    p.add_argument("--rollout", action="store_true", help="also the paper's rollout-level weights (--unc-form rollout)")
    p.add_argument("--critic", default="", help="refit the run's critic with these options, comma-separated: "
                                                "evidence, recalibrate=val|heldout|heldout-groups, observed=zero|estimate, "
                                                "cold (cold views), ensemble=N (members), or "
                                                "'base' (the run's own, refitted)")
    args = p.parse_args(argv)
    options = {k: v or True for k, v in (o.partition("=")[::2] for o in filter(None, args.critic.split(",")))}
    unknown = set(options) - {"evidence", "recalibrate", "base", "observed", "cold", "ensemble"}
    if (unknown or options.get("recalibrate", "val") not in ("val", "heldout", "heldout-groups")
            or options.get("observed", "zero") not in ("zero", "estimate")
            or not str(options.get("ensemble", "1")).isdigit() or int(options.get("ensemble", 1)) < 1):
        p.error(f"--critic {args.critic}: expected evidence, recalibrate=val|heldout|heldout-groups, observed=zero|estimate, "
                "cold, ensemble=N (N >= 1) or base")
    print(json.dumps(advantage_fidelity(args.run, args.eps, prompts=args.prompts,
                                        forms=("item", "rollout") if args.rollout else ("item",),
                                        critic=options or None), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

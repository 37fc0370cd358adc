"""The experiments of FLEXREC.md section 7, as `python -m flexrec.experiments NAME`.

    python -m flexrec.experiments joint --size quick --seeds 3
    python -m flexrec.experiments single-need --data ml-100k --seeds 1
    python -m flexrec.experiments reward-source --size full --model smollm2-135m --device cuda

Without `--confirm` an experiment runs seeds 0..N-1 and scores the validation users (for choosing settings);
`--confirm` runs the reserved seeds 100-104 (never used for any choice) and scores the test users, for the final
report. Each writes `results/NAME.md` (tables with 95% bootstrap intervals; differences between methods with a
seed-aware interval: seeds, then users), `results/NAME.json` and PNG plots; training runs go to
`runs/experiments/NAME/...` and are reused when an identical finished run is already there.
"""

from __future__ import annotations

from flexrec.experiments.runner import Evaluation, Experiment, Method, PaperOrder, Setting

BASELINES = [
    Method("random", "baseline", baseline="random"),
    Method("popularity", "baseline", baseline="popularity"),
    Method("item-KNN", "baseline", baseline="item-knn"),
    Method("BPR-MF", "baseline", baseline="bpr"),
    Method("SASRec", "baseline", baseline="sasrec"),
]
UNTRAINED = Method("untrained (random init)", "untrained")  # the tiny preset; see _experiments for a pretrained model
SFT = Method("SFT", "sft")
SEQ = Method("GRPO seq-NDCG (Rec-R1-like)", "rl", {"reward_mode": "seq"})
RANK = Method("GRPO rank-level (Rank-GRPO-like)", "rl", {"reward_mode": "rank"})
FLEXREC = Method("FlexRec", "rl", {"reward_mode": "flexrec"})
NOUNC = Method("FlexRec w/o uncertainty", "rl", {"reward_mode": "flexrec-nounc"})  # the causal swap reward alone
LLM = [UNTRAINED, SFT, SEQ, RANK, FLEXREC]
UNC_EPS = (0.1, 1.0, 10.0)  # the uncertainty-strength sweep (TrainConfig.unc_eps; w/o uncertainty is eps -> inf)
TUNING_LR = (1e-4, 3e-4, 1e-3)  # the rl-tuning grid (TrainConfig.lr x TrainConfig.ndcg_cutoff; cutoff 0 = whole list)
TUNING_CUTOFF = (5, 0)
NEED_NAMES = ("maximize_interest", "explore_new_topics", "trend_promotion")

# The paper's main tables (single-need and joint): FlexRec above every other method. No figure of the paper is
# repeated in a report (its model, data and K differ from these runs; FLEXREC.md section 8 has them).
_PAPER_MAIN_ORDER = PaperOrder([("FlexRec", m) for m in (SEQ.label, RANK.label, "SFT", "SASRec", UNTRAINED.label)],
                               "FlexRec ranks above every other method on every need it was trained on.")


def _experiments() -> dict[str, Experiment]:
    return {
        "single-need": Experiment(
            "single-need", "One need at a time (the paper's Table 1 shape)",
            "One policy per need, trained and tested on that need only.",
            [Setting(n, {"need": n}, eval_needs=n) for n in NEED_NAMES], BASELINES + LLM,
            paper=_PAPER_MAIN_ORDER),
        "joint": Experiment(
            "joint", "All needs jointly in one model",
            "One policy trained on every need, switching by the instruction in the prompt.",
            [Setting("all needs", {"need": "all"})], BASELINES + LLM + [NOUNC],
            compare=("FlexRec", ["SFT", SEQ.label, NOUNC.label]),
            compare_also=[(NOUNC.label, ["SFT", SEQ.label])],
            paper=_PAPER_MAIN_ORDER),
        "generalization": Experiment(
            "generalization", "Generalisation: trained on maximize_interest only",
            "Trained on maximize_interest only; tested on every need, with the training paraphrases and "
            "with held-out paraphrases it never saw.",
            [Setting("trained on maximize_interest", {"need": "maximize_interest"}, eval_needs="all")],
            [BASELINES[1], BASELINES[3], UNTRAINED, SFT, SEQ, FLEXREC],
            evaluations=[Evaluation("training paraphrases"), Evaluation("held-out paraphrases", True)],
            paper=PaperOrder(
                [("FlexRec", UNTRAINED.label), ("FlexRec", SEQ.label), ("FlexRec", "SFT")],
                "FlexRec above the model before training on needs it was not trained on (the paper measures "
                "Recall@5; compared here in NDCG@5).")),
        "reward-form": Experiment(
            "reward-form", "Reward form ablation",
            "All needs jointly; the same SFT warm start and RL budget, only the item reward differs. "
            "Every form is used without uncertainty scaling except the last row (the full method).",
            [Setting("all needs", {"need": "all"})],
            [SFT,
             Method("independent contribution", "rl", {"reward_mode": "independent"}),
             Method("non-causal swap", "rl", {"reward_mode": "noncausal"}),
             Method("causal swap", "rl", {"reward_mode": "flexrec-nounc"}),
             Method("sequence-level NDCG", "rl", {"reward_mode": "seq"}),
             Method("rank-level suffix DCG", "rl", {"reward_mode": "rank"}),
             Method("causal swap + uncertainty (FlexRec)", "rl", {"reward_mode": "flexrec"})],
            compare=("causal swap", ["independent contribution", "non-causal swap", "sequence-level NDCG",
                                     "rank-level suffix DCG"]),
            paper=PaperOrder(
                [("causal swap + uncertainty (FlexRec)", "causal swap")]
                + [(a, b) for a in ("causal swap + uncertainty (FlexRec)", "causal swap")
                   for b in ("independent contribution", "non-causal swap", "sequence-level NDCG",
                             "rank-level suffix DCG")],
                "the causal swap reward ahead of the independent, non-causal, sequence-level and rank-level forms, "
                "and uncertainty scaling adding to it (FLEXREC.md sections 3 and 5).")),
        "reward-source": Experiment(
            "reward-source", "Reward source ablation (sparse feedback)",
            "All needs jointly with observe_fraction of the feedback observed (the paper's sparse KuaiRec setting). "
            "The unobserved labels are filled by each imputer for both the SFT warm start and the RL "
            "rewards; every row uses the causal swap reward, and only the critic row has a variance to "
            "scale advantages by (the others give weights of exactly 1).",
            [Setting("all needs", {"need": "all"})],
            [Method("user-KNN", "rl", {"imputer": "user-knn"}),
             Method("item-KNN", "rl", {"imputer": "item-knn"}),
             Method("critic mean", "rl", {"imputer": "critic-mean"}),
             Method("critic + uncertainty (FlexRec)", "rl", {"imputer": "critic"})],
            compare=("critic + uncertainty (FlexRec)", ["user-KNN", "item-KNN", "critic mean"]), curves=True,
            paper=PaperOrder(
                [("critic + uncertainty (FlexRec)", "critic mean"), ("critic mean", "item-KNN"),
                 ("critic mean", "user-KNN")],
                "on sparse KuaiRec feedback the critic mean above item-KNN and user-KNN, and the critic with "
                "uncertainty above the critic mean.")),
        "uncertainty-strength": Experiment(
            "uncertainty-strength", "Choosing the uncertainty scaling's strength (validation users)",
            "All needs jointly; FlexRec with the weights w = 1 / (u + eps * mean u) at several eps, and without "
            "them (the limit eps -> inf). Small eps trusts the critic's variances most: rewards on its most "
            "uncertain labels are down-weighted hardest. The eps with the highest mean validation NDCG@5 over the "
            "needs is the one to use (`--unc-eps`).",
            [Setting("all needs", {"need": "all"})],
            [SFT, NOUNC] + [Method(_eps_label(e), "rl", {"reward_mode": "flexrec", "unc_eps": e}) for e in UNC_EPS],
            compare=(NOUNC.label, [_eps_label(e) for e in UNC_EPS]), fidelity_eps=UNC_EPS),
        "rl-tuning": Experiment(
            "rl-tuning", "Choosing the RL learning rate and the reward cutoff (validation users)",
            "All needs jointly; FlexRec continued from each seed's one SFT run at every (learning rate, reward "
            "cutoff) pair of the grid; the pair with the highest mean validation NDCG@5 over the needs is the one to "
            "use (`--lr`, `--ndcg-cutoff`).",
            [Setting("all needs", {"need": "all"})],
            [SFT] + [Method(_tuning_label(lr, n), "rl", {"reward_mode": "flexrec", "lr": lr, "ndcg_cutoff": n})
                     for lr in TUNING_LR for n in TUNING_CUTOFF],
            compare=(SFT.label, [_tuning_label(lr, n) for lr in TUNING_LR for n in TUNING_CUTOFF])),
    }


def _tuning_label(lr: float, cutoff: int) -> str:
    return f"FlexRec, lr {lr:g}, cutoff {cutoff}"


def _eps_label(eps: float) -> str:
    return f"FlexRec, eps {eps:g}"


EXPERIMENTS = _experiments()

__all__ = ["EXPERIMENTS", "Evaluation", "Experiment", "Method", "Setting"]

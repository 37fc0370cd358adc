"""The experiments of FLEXREC.md section 7, as `python -m flexrec.experiments NAME`.

    python -m flexrec.experiments joint --size quick --seeds 3
    python -m flexrec.experiments single-need --data ml-100k --seeds 1
    python -m flexrec.experiments reward-source --size full --model smollm2-135m --device cuda

Each writes `results/NAME.md` (tables with 95% bootstrap intervals over users, stratified by seed),
`results/NAME.json` and PNG plots; training runs go to `runs/experiments/NAME/...` and are reused
when an identical finished run is already there.
"""

from __future__ import annotations

from flexrec.experiments.runner import Evaluation, Experiment, Method, Setting

BASELINES = [
    Method("random", "baseline", baseline="random"),
    Method("popularity", "baseline", baseline="popularity"),
    Method("item-KNN", "baseline", baseline="item-knn"),
    Method("BPR-MF", "baseline", baseline="bpr"),
    Method("SASRec", "baseline", baseline="sasrec"),
]
UNTRAINED = Method("untrained LLM (zero-shot)", "untrained")
SFT = Method("SFT", "sft")
SEQ = Method("GRPO seq-NDCG (Rec-R1-like)", "rl", {"reward_mode": "seq"})
RANK = Method("GRPO rank-level (Rank-GRPO-like)", "rl", {"reward_mode": "rank"})
FLEXREC = Method("FlexRec", "rl", {"reward_mode": "flexrec"})
LLM = [UNTRAINED, SFT, SEQ, RANK, FLEXREC]
NEED_NAMES = ("maximize_interest", "explore_new_topics", "trend_promotion")


def _experiments() -> dict[str, Experiment]:
    return {
        "single-need": Experiment(
            "single-need", "One need at a time (the paper's Table 1 shape)",
            "One policy per need, trained and tested on that need only.",
            [Setting(n, {"need": n}, eval_needs=n) for n in NEED_NAMES], BASELINES + LLM),
        "joint": Experiment(
            "joint", "All needs jointly in one model",
            "One policy trained on every need, switching by the instruction in the prompt.",
            [Setting("all needs", {"need": "all"})], BASELINES + LLM),
        "generalization": Experiment(
            "generalization", "Generalisation: trained on maximize_interest only",
            "Trained on maximize_interest only; tested on every need, with the training paraphrases and "
            "with held-out paraphrases it never saw.",
            [Setting("trained on maximize_interest", {"need": "maximize_interest"}, eval_needs="all")],
            [BASELINES[1], BASELINES[3], UNTRAINED, SFT, SEQ, FLEXREC],
            evaluations=[Evaluation("training paraphrases"), Evaluation("held-out paraphrases", True)]),
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
                                     "rank-level suffix DCG"])),
        "reward-source": Experiment(
            "reward-source", "Reward source ablation (sparse feedback)",
            "All needs jointly with observe_fraction of the feedback observed (the paper's 10% KuaiRec). "
            "The unobserved labels are filled by each imputer for both the SFT warm start and the RL "
            "rewards; every row uses the causal swap reward, and only the critic row has a variance to "
            "scale advantages by (the others give weights of exactly 1).",
            [Setting("all needs", {"need": "all"})],
            [Method("user-KNN", "rl", {"imputer": "user-knn"}),
             Method("item-KNN", "rl", {"imputer": "item-knn"}),
             Method("critic mean", "rl", {"imputer": "critic-mean"}),
             Method("critic + uncertainty (FlexRec)", "rl", {"imputer": "critic"})],
            compare=("critic + uncertainty (FlexRec)", ["user-KNN", "item-KNN", "critic mean"]), curves=True),
    }


EXPERIMENTS = _experiments()

__all__ = ["EXPERIMENTS", "Evaluation", "Experiment", "Method", "Setting"]

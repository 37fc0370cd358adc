"""The final report of a run: the results table and PNG training curves, written to ``report.md``.

``pyplot()`` is the one matplotlib setup (headless) that this report and the experiments' reports use.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

STAGES = (("untrained", "untrained"), ("popularity", "popularity"), ("sft", "after SFT"), ("rl", "after RL"))
USERS_LINE = "validation users, greedy ranking; test users: python -m flexrec.eval"  # flexrec.train.loop.RESULTS_SPLIT


def untrained_label(model: str) -> str:
    """The row of the model before training: the tiny preset is random weights, not a zero-shot LLM."""
    return "untrained (random init)" if model == "tiny" else "before training (zero-shot)"


def results_table(results: dict[str, dict[str, dict[str, float]]], untrained: str = "untrained", k: int = 5) -> str:
    """Markdown table: one row per (need, method), NDCG@k and Recall@k. ``results[stage][need][metric]``;
    ``untrained``: the label of the model before training (``untrained_label``)."""
    needs = sorted({need for stage in results.values() for need in stage})
    lines = [f"| need | method | NDCG@{k} | Recall@{k} |", "|---|---|---|---|"]
    for need in needs:
        for key, label in STAGES:
            if key == "untrained":
                label = untrained
            if key in results and need in results[key]:
                r = results[key][need]
                lines.append(f"| {need} | {label} | {r[f'ndcg@{k}']:.3f} | {r[f'recall@{k}']:.3f} |")
    return "\n".join(lines)


def pyplot():
    """matplotlib.pyplot on the headless Agg backend (reports are written on servers without a display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_curves(rows: list[dict[str, Any]], keys: list[tuple[str, str]], title: str, path: Path,
                sft_steps: int) -> list[str]:
    """One PNG of the logged ``keys`` ((metric, legend label) pairs) against the step; a dashed line marks
    where SFT ends and RL begins when the run has both. Returns the curves' labels ([] if nothing was logged)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5, 3.2))
    drawn = []
    for key, label in keys:
        pts = [(r["step"], r[key]) for r in rows if key in r]
        if pts:
            ax.plot(*zip(*pts), label=label if len(keys) > 1 else None)
            drawn.append(label)
    steps = [r["step"] for r in rows]
    if drawn and sft_steps and steps and min(steps) < sft_steps < max(steps):
        ax.axvline(sft_steps, color="grey", ls="--", lw=0.8, label="SFT | RL")
        drawn.append("SFT | RL")
    ax.set_title(title)
    ax.set_xlabel("step")
    if drawn and ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return drawn


def write_report(run_dir: Path, config: dict[str, Any], results: dict, rows: list[dict[str, Any]],
                 extra: list[str] = ()) -> Path:
    """Writes report.md and its PNGs (reward, NDCG@5 per need, KL, entropy) into ``run_dir``."""
    run_dir = Path(run_dir)
    eval_keys = sorted({k for r in rows for k in r if k.startswith("val_ndcg@5/")})
    plots = [
        ("reward.png", [("rl/reward", "RL")], "rollout reward (mean NDCG of sampled lists)"),
        ("ndcg.png", [(k, k.split("/")[-1]) for k in eval_keys], "validation NDCG@5 per need"),
        ("kl.png", [("rl/kl", "RL")], "KL to the reference (k3)"),
        ("entropy.png", [("sft/entropy", "SFT"), ("rl/entropy", "RL")], "entropy of the step distributions"),
        ("loss.png", [("sft/loss", "SFT loss (NLL of the target ranking)"), ("rl/loss", "RL loss (PPO-clip)")],
         "training loss"),
    ]
    sft_steps = int(config.get("sft_steps", 0))
    images = [f"![{title}]({name})" for name, keys, title in plots
              if plot_curves(rows, keys, title, run_dir / name, sft_steps)]
    text = [
        "# flexrec run report",
        "",
        f"data `{config['data']}`, model `{config['model']}`, needs `{config['need']}`, "
        f"reward mode `{config['reward_mode']}`, K = {config['num_candidates']}, seed {config['seed']}",
        "",
        f"## Results ({USERS_LINE})",
        "",
        results_table(results, untrained_label(config["model"])),
        "",
        *extra,
        "",
        "## Training curves",
        "",
        *images,
        "",
    ]
    path = run_dir / "report.md"
    path.write_text("\n".join(text))
    return path

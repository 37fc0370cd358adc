"""The final report of a run: the results table and PNG training curves, written to ``report.md``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

STAGES = (("untrained", "untrained model"), ("popularity", "popularity"), ("sft", "after SFT"), ("rl", "after RL"))


def results_table(results: dict[str, dict[str, dict[str, float]]], k: int = 5) -> str:
    """Markdown table: one row per (need, method), NDCG@k and Recall@k. ``results[stage][need][metric]``."""
    needs = sorted({need for stage in results.values() for need in stage})
    lines = [f"| need | method | NDCG@{k} | Recall@{k} |", "|---|---|---|---|"]
    for need in needs:
        for key, label in STAGES:
            if key in results and need in results[key]:
                r = results[key][need]
                lines.append(f"| {need} | {label} | {r[f'ndcg@{k}']:.3f} | {r[f'recall@{k}']:.3f} |")
    return "\n".join(lines)


def _plot(rows: list[dict[str, Any]], keys: list[str], title: str, path: Path) -> bool:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.2))
    drawn = False
    for key in keys:
        pts = [(r["step"], r[key]) for r in rows if key in r]
        if pts:
            ax.plot(*zip(*pts), label=key.split("/")[-1] if len(keys) > 1 else None)
            drawn = True
    ax.set_title(title)
    ax.set_xlabel("step")
    if len(keys) > 1 and drawn:
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
        ("reward.png", ["rl/reward"], "rollout reward (mean NDCG of sampled lists)"),
        ("ndcg.png", eval_keys, "validation NDCG@5 per need"),
        ("kl.png", ["rl/kl"], "KL to the reference (k3)"),
        ("entropy.png", ["rl/entropy"], "entropy of the step distributions"),
        ("loss.png", ["sft/loss", "rl/loss"], "loss"),
    ]
    images = [f"![{title}]({name})" for name, keys, title in plots if _plot(rows, keys, title, run_dir / name)]
    text = [
        "# flexrec run report",
        "",
        f"data `{config['data']}`, model `{config['model']}`, needs `{config['need']}`, "
        f"reward mode `{config['reward_mode']}`, K = {config['num_candidates']}, seed {config['seed']}",
        "",
        "## Results (test users, greedy ranking)",
        "",
        results_table(results),
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

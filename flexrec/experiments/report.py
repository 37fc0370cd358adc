"""Writing an experiment's results: `results/NAME.md`, `results/NAME.json` and small PNG plots."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path

import numpy as np
import torch

from flexrec.config import resolve
from flexrec.eval.evaluate import METRICS
from flexrec.experiments.runner import DirtyTreeError, Experiment, paired_delta, per_seed_delta
from flexrec.train.report import pyplot, untrained_label

NAMES = {"ndcg@5": "NDCG@5", "ndcg@10": "NDCG@10", "ndcg@30": "NDCG@30", "recall@5": "Recall@5", "mrr@5": "MRR@5"}


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    gpu = f", GPU {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ", no GPU"
    return f"{platform.system()} {cpu}, {os.cpu_count()} CPU cores{gpu}, torch {torch.__version__}"


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text.lower()).strip("-")


_USERS = {"test": "test users of the confirmation seeds (`--confirm`; no setting was chosen on them)",
          "val": "validation users (the split for choosing settings; never the test users)"}


def write_report(exp: Experiment, out: dict, out_dir: str | Path, command: str, seeds, size: str,
                 n_boot: int = 1000) -> Path:
    """Write the markdown report, its JSON twin and the plots; returns the markdown path.

    A confirmation report (``out["confirm"]``) from runs trained on uncommitted code is refused
    (``DirtyTreeError``) unless ``out["allow_dirty"]``, and then its first line says so. Every number in the
    report is computed from ``out``'s runs."""
    out_dir = Path(out_dir)
    cells = out["cells"]
    codes = out.get("run_codes", {})
    dirty = sorted(c for c in codes if "uncommitted" in c)
    if out.get("confirm") and dirty and not out.get("allow_dirty"):
        raise DirtyTreeError(f"{sum(codes[c] for c in dirty)} run(s) were trained from uncommitted code ({', '.join(dirty)}): "
                             "retrain them from a commit, or pass --allow-dirty (the report then says so)")
    out_dir.mkdir(parents=True, exist_ok=True)
    base = {k: v for k, v in out["base"].items() if k not in ("progress",)}
    seed_list = out.get("seeds", list(range(seeds)) if isinstance(seeds, int) else seeds)
    lines = [f"# {exp.title}", ""]
    if dirty:
        lines += [f"**Not reproducible from a commit: {sum(codes[c] for c in dirty)} of the runs were trained from "
                  f"uncommitted code ({', '.join(dirty)})" + (" (--allow-dirty).**" if out.get("allow_dirty") else ".**"), ""]
    lines += [exp.description, "",
              f"- command: `{command}`",
              f"- size `{size}`, seeds {', '.join(map(str, seed_list))} (each seed: its own world, split, pools and "
              "training run)" + (" — the reserved confirmation seeds" if out.get("confirm") else ""),
              f"- settings: `{json.dumps(base, sort_keys=True)}`",
              f"- machine: {machine()}; {out.get('runs', 0)} training runs took {out.get('train_seconds', 0) / 60:.1f} min "
              f"when they ran; this report's call took {out['seconds'] / 60:.1f} min (finished runs are reused)",
              "- code of the runs (each run's config.json): "
              + ("; ".join(f"{c} ({n} runs)" for c, n in codes.items()) or "no training runs"),
              f"- every number is the mean over {_USERS[out.get('split', 'val')]} (pooled over seeds) on the TRUE "
              "labels, with a 95% bootstrap interval over users stratified by seed; `seed sd` is the standard "
              "deviation of the per-seed NDCG@5 means. A difference between two methods is paired (the same pools) "
              "and its 95% interval is seed-aware: it resamples the seeds, then the users within each seed.",
              "- NDCG@30 with K < 30 candidates is NDCG over the whole list (the cutoff is min(30, K)).", ""]
    summary: dict = {}
    for setting, by_eval in cells.items():
        for ev, by_method in by_eval.items():
            heading = f"{setting} — {ev}" if len(by_eval) > 1 else setting
            lines += [f"## {heading}", ""]
            needs = list(next(iter(by_method.values())).values)
            for need in needs:
                lines += [f"### {need}", "",
                          "| method | " + " | ".join(NAMES[m] for m in METRICS) + " | seed sd | n |",
                          "|---|" + "---|" * (len(METRICS) + 2)]
                for method, cell in by_method.items():
                    ivs = {m: cell.interval(need, m, n_boot) for m in METRICS}
                    summary.setdefault(setting, {}).setdefault(ev, {}).setdefault(need, {})[method] = {
                        **{m: iv.as_dict() for m, iv in ivs.items()}, "seed_sd_ndcg@5": cell.seed_std(need)}
                    lines.append(f"| {method} | " + " | ".join(str(ivs[m]) for m in METRICS)
                                 + f" | {cell.seed_std(need):.3f} | {ivs['ndcg@5'].n} |")
                lines.append("")
            part = summary.setdefault(setting, {}).setdefault(ev, {})
            lines += _deltas(exp.compare, by_method, needs, n_boot, part)
            for compare in exp.compare_also:
                lines += _deltas(compare, by_method, needs, n_boot, part.setdefault(f"vs {compare[0]}", {}))
            lines += _versus_random(by_method, needs, n_boot)
            lines += _against_floors(exp, by_method, needs, n_boot, part)
            lines += _against_paper(exp, by_method, needs, n_boot, base)
            png = out_dir / f"{exp.name}-{_slug(heading)}.png"
            _bars(by_method, needs, f"{exp.name}: {heading}", png)
            lines += [f"![NDCG@5 per need]({png.name})", ""]
    if exp.curves:
        lines += _stability(exp, out["curves"], out_dir, summary)
    for setting, (section, data) in out.get("fidelity", {}).items():
        lines += [section[0] + (f" ({setting})" if len(cells) > 1 else "")] + section[1:]
        summary.setdefault(setting, {})["advantage fidelity"] = data
    md = out_dir / f"{exp.name}.md"
    text = "\n".join(lines) + "\n"
    if base.get("model", "tiny") != "tiny":  # the row of the model before training: a pretrained model is zero-shot
        text = text.replace("untrained (random init)", untrained_label(base["model"]))
    md.write_text(text)
    (out_dir / f"{exp.name}.json").write_text(json.dumps(
        {"experiment": exp.name, "command": command, "size": size, "seeds": seed_list, "settings": base,
         "confirm": bool(out.get("confirm")), "split": out.get("split", "val"), "machine": machine(),
         "run_codes": codes, "seconds": out["seconds"], "train_seconds": out.get("train_seconds"),
         "results": summary}, indent=1, default=str) + "\n")
    return md


def _deltas(compare: tuple[str, list[str]], by_method: dict, needs: list[str], n_boot: int, summary: dict) -> list[str]:
    """Paired NDCG@5 differences of the reference method against each comparison."""
    ref, others = compare
    others = [o for o in others if o in by_method]
    if ref not in by_method or not others:
        return []
    lines = [f"Paired difference in NDCG@5, `{ref}` minus each (same pools; seed-aware 95% interval: seeds, then "
             f"users; an interval above 0 means `{ref}` is ahead):", "",
             "| need | " + " | ".join(others) + " |", "|---|" + "---|" * len(others)]
    wins = {o: [0, 0] for o in others}  # needs where ref is ahead (interval above 0), behind (interval below 0)
    per_seed = []
    for need in needs:
        ivs = [paired_delta(by_method[ref], by_method[o], need, "ndcg@5", n_boot) for o in others]
        seeds = {o: per_seed_delta(by_method[ref], by_method[o], need) for o in others}
        summary.setdefault("deltas", {})[need] = {o: dict(iv.as_dict(), per_seed=seeds[o]) for o, iv in zip(others, ivs)}
        lines.append(f"| {need} | " + " | ".join(f"{iv.mean:+.3f} [{iv.lo:+.3f}, {iv.hi:+.3f}]" for iv in ivs) + " |")
        per_seed += [f"| {need} | {o} | " + ", ".join(f"{d:+.3f}" for d in seeds[o].values()) + " |" for o in others]
        if need != "mean":
            for o, iv in zip(others, ivs):
                wins[o] = [wins[o][0] + (iv.lo > 0), wins[o][1] + (iv.hi < 0)]
    n = len([x for x in needs if x != "mean"])
    seed_names = ", ".join(map(str, by_method[ref].seeds(needs[0])))
    lines += ["", f"Per-seed differences (`{ref}` minus each; mean over each seed's users; seeds {seed_names}):", "",
              "| need | minus | per seed |", "|---|---|---|", *per_seed]
    lines += ["", "Reading (generated; \"ahead\" means the seed-aware interval is above 0): " + "; ".join(
        f"`{ref}` is ahead of `{o}` on {a}/{n} needs, behind on {b}/{n}, not separated on {n - a - b}/{n}"
        for o, (a, b) in wins.items()) + "."]
    return lines + [""]


def _versus_random(by_method: dict, needs: list[str], n_boot: int) -> list[str]:
    """Which rows are not distinguishable from a random order (a check that training did anything)."""
    need = "mean" if "mean" in needs else needs[0]
    if "random" not in by_method:
        return []
    same = [m for m, cell in by_method.items() if m != "random"
            and (lambda iv: iv.lo <= 0.0 <= iv.hi)(paired_delta(cell, by_method["random"], need, "ndcg@5", n_boot))]
    if not same:
        return [f"Reading (generated): every row differs from `random` in {need} NDCG@5 (paired 95% interval).", ""]
    return [f"Reading (generated): in {need} NDCG@5 these rows are indistinguishable from `random` (the paired "
            f"95% interval contains 0): {', '.join(f'`{m}`' for m in same)}.", ""]


FLOORS = ("random", "popularity")


def _against_floors(exp: Experiment, by_method: dict, needs: list[str], n_boot: int, summary: dict) -> list[str]:
    """Every trained method (SFT and RL) minus each floor (random order, popularity), paired, per need: whether
    training beat what needs no training (the bar of the real-data issue)."""
    floors = [f for f in FLOORS if f in by_method]
    trained = [m.label for m in exp.methods if m.kind in ("sft", "rl") and m.label in by_method]
    if not floors or not trained:
        return []
    lines = ["Paired difference in NDCG@5, each trained method minus " + " and ".join(f"`{f}`" for f in floors)
             + " (seed-aware 95% interval; above 0: the trained method is ahead):", "",
             "| method | " + " | ".join(f"{need} minus {f}" for need in needs for f in floors) + " |",
             "|---|" + "---|" * (len(needs) * len(floors))]
    ahead = {f: {need: 0 for need in needs} for f in floors}
    for method in trained:
        cells = []
        for need in needs:
            for f in floors:
                iv = paired_delta(by_method[method], by_method[f], need, "ndcg@5", n_boot)
                summary.setdefault("floors", {}).setdefault(method, {}).setdefault(need, {})[f] = iv.as_dict()
                ahead[f][need] += iv.lo > 0
                cells.append(f"{iv.mean:+.3f} [{iv.lo:+.3f}, {iv.hi:+.3f}]")
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    lines += ["", "Reading (generated): " + "; ".join(
        f"ahead of `{f}` on {need}: {ahead[f][need]}/{len(trained)} trained methods" for need in needs for f in floors)
        + ".", ""]
    return lines


def _against_paper(exp: Experiment, by_method: dict, needs: list[str], n_boot: int, base: dict) -> list[str]:
    """Each pair the paper orders, checked on our numbers (paired NDCG@5, per need). Only the direction is
    compared: the paper's figures come from another model, other data and another K, so none is repeated."""
    paper = exp.paper
    if paper is None:
        return []
    pairs = [(a, b) for a, b in paper.pairs if a in by_method and b in by_method]
    model = base.get("model", "tiny")
    K = resolve(dict(base)).num_candidates  # the data's default K where the settings give none (ml-100k: 20)
    model_text = "the tiny preset (randomly initialised)" if model == "tiny" else f"`{model}`"
    lines = [f"Against the paper: {paper.claim} Only the direction of each pair is compared, never a level: the "
             "paper post-trains a pretrained instruction-tuned LLM on real data (FLEXREC.md section 8) with "
             f"K = 30 candidates; these runs train {model_text} on `{base.get('data', 'synthetic')}` with "
             f"K = {K}.", "",
             "| paper: above | paper: below | " + " | ".join(needs) + " |", "|---|---|" + "---|" * len(needs)]
    differs = []
    for above, below in pairs:
        cells = []
        for need in needs:
            iv = paired_delta(by_method[above], by_method[below], need, "ndcg@5", n_boot)
            verdict = "as paper" if iv.lo > 0 else "reversed" if iv.hi < 0 else "tie"
            if verdict != "as paper" and need != "mean":
                differs.append(f"`{above}` vs `{below}` on {need} ({verdict})")
            cells.append(f"{verdict} ({iv.mean:+.3f} [{iv.lo:+.3f}, {iv.hi:+.3f}])")
        lines.append(f"| {above} | {below} | " + " | ".join(cells) + " |")
    lines += ["", "`as paper`: the paper's upper method is ahead with the seed-aware 95% interval above 0; `tie`: "
              "the interval contains 0; `reversed`: the interval is below 0.", ""]
    lines += ["Where these runs do not show the paper's order (generated): " + ("; ".join(differs) or "nowhere") + ".",
              ""]
    return lines


def _bars(by_method: dict, needs: list[str], title: str, path: Path) -> None:
    """Grouped bars of NDCG@5 per need and method, with the 95% intervals as error bars."""
    plt = pyplot()
    methods = list(by_method)
    fig, ax = plt.subplots(figsize=(min(9.0, max(5.0, 0.25 * len(needs) * len(methods))) + 2.0, 3.2), dpi=80)
    width = 0.8 / len(methods)
    for i, method in enumerate(methods):
        ivs = [by_method[method].interval(need, "ndcg@5", 300) for need in needs]
        x = np.arange(len(needs)) + (i - (len(methods) - 1) / 2) * width
        ax.bar(x, [iv.mean for iv in ivs], width, label=method,
               yerr=[[iv.mean - iv.lo for iv in ivs], [iv.hi - iv.mean for iv in ivs]], capsize=2)
    ax.set_xticks(np.arange(len(needs)), needs, fontsize=8)
    ax.set_ylabel("NDCG@5")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # beside the bars, never over them
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _stability(exp: Experiment, curves: dict, out_dir: Path, summary: dict) -> list[str]:
    """Reward curves across seeds, and their spread: the training-stability part of reward-source."""
    plt = pyplot()
    lines = ["## Training stability", "",
             "Sequence NDCG@5 of the RL rollouts under the filled labels (`rl/reward` in metrics.jsonl), "
             "per step. `across-seed sd` is the standard deviation across seeds at each step, averaged over "
             "steps; `step-to-step sd` is the standard deviation of the step-to-step change, averaged over seeds.",
             "", "| method | final reward (mean over seeds) | across-seed sd | step-to-step sd | seeds |", "|---|---|---|---|---|"]
    for setting, by_method in curves.items():
        fig, ax = plt.subplots(figsize=(5.5, 3.2), dpi=80)
        for method, runs in by_method.items():
            runs = [r for r in runs if len(r[1])]
            if not runs:
                continue
            n = min(len(r[1]) for r in runs)
            steps, ys = runs[0][0][:n], np.stack([r[1][:n] for r in runs])
            across = float(ys.std(0, ddof=1).mean()) if len(runs) > 1 else 0.0
            jitter = float(np.mean([np.diff(y).std() for y in ys])) if n > 2 else 0.0
            final = float(ys[:, -max(1, n // 10):].mean())
            summary.setdefault("stability", {})[method] = {"final": final, "across_seed_sd": across,
                                                           "step_sd": jitter, "seeds": len(runs)}
            lines.append(f"| {method} | {final:.3f} | {across:.3f} | {jitter:.3f} | {len(runs)} |")
            mean = ys.mean(0)
            ax.plot(steps, mean, label=method, lw=1)
            if len(runs) > 1:
                ax.fill_between(steps, mean - ys.std(0), mean + ys.std(0), alpha=0.2)
        ax.set_xlabel("step")
        ax.set_ylabel("rollout NDCG@5 (filled labels)")
        ax.set_title(f"{exp.name}: RL reward, mean ± sd over seeds", fontsize=9)
        ax.legend(fontsize=6)
        fig.tight_layout()
        png = out_dir / f"{exp.name}-curves-{_slug(setting)}.png"
        fig.savefig(png)
        plt.close(fig)
        lines += ["", f"![reward curves]({png.name})", ""]
    return lines

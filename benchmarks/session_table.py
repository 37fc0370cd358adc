"""The last step of benchmarks/gpu_session.sh: one table of every goal with its measured ratio,
and the same as markdown rows for benchmarks/RESULTS.md (written to OUT/gpu_session.md).

    python benchmarks/session_table.py --steps benchmarks/out/gpu_session_steps.tsv --out benchmarks/out

Reads what the session's steps wrote: OUT/gpu_kernels.json (benchmarks/test_gpu_kernels.py, its
"goals"), OUT/peers_rollouts.json (benchmarks/peers/test_rollouts.py) and the steps' status and
seconds. A goal whose step did not produce it is listed as not measured, with that step's status.
"""

from __future__ import annotations

import argparse
import csv
import json
import os

# (goal as benchmarks/test_gpu_kernels.py names it, without the provider; target; the row).
KERNEL_GOALS = [
    ("swap_reward B=8192 K=30 {p}: eager / {p}", ">= 20"),
    ("swap_reward B=8192 K=30 {p}: {p} / device copy", "<= 3"),
    ("decode_step B=256 H=2048 V=151936 {p}: full-vocab eager / {p}", ">= 5"),
    ("permutation_logprob fwd+bwd B=4096 K=30 {p}: eager / {p}", ">= 3"),
]
ROLLOUT_GOAL = ("rollouts vs constrained generate, SmolLM2 B=64 (K=30): constrained / flexrec", ">= 3")
SESSION_LIMIT_S = 600


def _load(path: str):
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def read_steps(path: str) -> dict[str, dict]:
    if not path or not os.path.exists(path):
        return {}
    with open(path) as f:
        return {r["step"]: r for r in csv.DictReader(f, delimiter="\t")}


def _met(ratio, target: str):
    if ratio is None:
        return None
    op, value = target.split()
    return ratio >= float(value) if op == ">=" else ratio <= float(value)


def goal_rows(out_dir: str, steps: dict[str, dict]) -> list[dict]:
    """Every goal: {goal, target, ratio or None, met or None, note}."""
    rows = []
    kernels = _load(os.path.join(out_dir, "gpu_kernels.json"))
    measured = {g["goal"]: g for g in (kernels or {}).get("goals", [])}
    bench = steps.get("kernel_bench", {}).get("status", "not run")
    for name, target in KERNEL_GOALS:
        for p in ("triton", "cuda"):
            goal = name.format(p=p)
            g = measured.get(goal)
            ratio = g["ratio"] if g else None
            note = "" if g else f"not measured (kernel_bench: {bench})"
            rows.append({"goal": goal, "target": target, "ratio": ratio, "met": _met(ratio, target),
                         "note": note})
    peers = _load(os.path.join(out_dir, "peers_rollouts.json")) or []
    flex = [r for r in peers if r.get("provider") == "flexrec" and r.get("model") == "smollm2-135m"
            and r.get("B") == 64 and r.get("G") == 1]
    ratio = flex[-1].get("x_vs_constrained") if flex else None
    note = "" if ratio is not None else (
        f"not measured (rollouts: {steps.get('rollouts', {}).get('status', 'not run')})")
    rows.append({"goal": ROLLOUT_GOAL[0], "target": ROLLOUT_GOAL[1], "ratio": ratio,
                 "met": _met(ratio, ROLLOUT_GOAL[1]), "note": note})
    train = steps.get("train")
    if train and train.get("status") == "ok":
        ratio = float(train["seconds"]) / float(train["budget_s"])
        rows.append({"goal": "SmolLM2 3 SFT + 3 RL steps: seconds / budget", "target": "<= 1",
                     "ratio": ratio, "met": ratio <= 1, "note": f"{train['seconds']} s"})
    else:
        rows.append({"goal": "SmolLM2 3 SFT + 3 RL steps: seconds / budget", "target": "<= 1",
                     "ratio": None, "met": None,
                     "note": f"not measured (train: {(train or {}).get('status', 'not run')})"})
    done = [float(r["seconds"]) for r in steps.values() if r.get("seconds") not in (None, "", "-")]
    if done:
        total = sum(done)
        rows.append({"goal": "session (steps before the table): seconds / 600", "target": "<= 1",
                     "ratio": total / SESSION_LIMIT_S, "met": total <= SESSION_LIMIT_S,
                     "note": f"{total:.0f} s"})
    return rows


def render(rows: list[dict], steps: dict[str, dict], device: str) -> tuple[str, str]:
    """(the plain table printed by the session, the markdown block for RESULTS.md)."""
    plain = [f"== goals ({device})", f"{'goal':<72} {'target':>7} {'ratio':>8}  met"]
    md = [f"Card: {device}. Command: `bash benchmarks/gpu_session.sh`.", "",
          "| goal | target | ratio | met? |", "|---|---|---|---|"]
    for r in rows:
        ratio = "-" if r["ratio"] is None else f"{r['ratio']:.2f}"
        met = "-" if r["met"] is None else ("yes" if r["met"] else "NO")
        note = f"  {r['note']}" if r["note"] else ""
        plain.append(f"{r['goal']:<72} {r['target']:>7} {ratio:>8}  {met}{note}")
        md.append(f"| {r['goal']} | {r['target']} | {ratio}{' (' + r['note'] + ')' if r['note'] else ''} "
                  f"| {met} |")
    md += ["", "| step | budget s | took s | status |", "|---|---|---|---|"]
    plain.append("== steps")
    for name, s in steps.items():
        plain.append(f"{name:<14} budget {s['budget_s']:>4} s  took {s['seconds']:>4} s  {s['status']}")
        md.append(f"| {name} | {s['budget_s']} | {s['seconds']} | {s['status']} |")
    return "\n".join(plain), "\n".join(md)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", default="", help="the session's steps TSV (step, budget_s, seconds, status)")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "out"))
    args = ap.parse_args(argv)
    steps = {k: v for k, v in read_steps(args.steps).items() if k != "table"}
    kernels = _load(os.path.join(args.out, "gpu_kernels.json")) or {}
    device = kernels.get("info", {}).get("device", "device unknown (kernel benchmarks did not run)")
    rows = goal_rows(args.out, steps)
    plain, md = render(rows, steps, device)
    print(plain)
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "gpu_session.md")
    with open(path, "w") as f:
        f.write(md + "\n")
    print(f"\n== rows for benchmarks/RESULTS.md (also in {path}):\n\n{md}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Markdown tables for benchmarks/RESULTS.md from the rows of the last peer run.

    python benchmarks/peers/tables.py [benchmarks/out]
"""

from __future__ import annotations

import json
import os
import sys

OUT = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "out")


def rows(name: str) -> list[dict]:
    path = os.path.join(OUT, f"{name}.json")
    return json.load(open(path)) if os.path.exists(path) else []


def fmt(x, digits: int = 2) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:,.{digits}f}"
    return str(x)


def rollouts() -> None:
    print("| model | B (P x G) | provider | prompt / new tokens | median ms | rankings/s | peak MiB | repaired | "
          "flexrec x | interleaved x | decode-phase x | FLOP bound | load |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    data = rows("peers_rollouts")
    for r in data:
        fx = next((f for f in data if f["provider"] == "flexrec" and f["model"] == r["model"] and f["B"] == r["B"]
                   and f.get("G", 1) == r.get("G", 1)), {})
        key = {"text": "x_vs_text", "constrained": "x_vs_constrained"}.get(r["provider"])
        speed = fmt(fx.get(key)) + "x" if key and fx.get(key) else ""
        decode = (fmt(fx["decode_x_vs_constrained"]) + "x"
                  if r["provider"] == "constrained" and fx.get("decode_x_vs_constrained") else "")
        inter = (fmt(fx["x_vs_constrained_interleaved"]) + "x"
                 if r["provider"] == "constrained" and fx.get("x_vs_constrained_interleaved") else "")
        bound = fmt(fx.get("flop_bound_vs_constrained")) + "x" if r["provider"] == "constrained" and fx else ""
        repaired = f"{r['repaired']}/{r['B']}"
        shape = f"{r['B']} ({r['B'] // r.get('G', 1)} x {r.get('G', 1)})" if r.get("G", 1) > 1 else str(r["B"])
        print(f"| {r['model']} | {shape} | {r['provider']} | {r['prompt_tokens']} / {r['new_tokens']} | "
              f"{fmt(r['median_ms'], 0)} | {fmt(r['rankings_per_s'])} | {fmt(r['peak_mib'], 1)} | {repaired} | "
              f"{speed} | {inter} | {decode} | {bound} | {r.get('load1')} |")


def train_step() -> None:
    print("| model | P x G | provider | step ms (median) | first step ms | peak MiB | repaired completions | "
          "x vs trl | x vs trl-gc | memory saving vs trl | memory saving vs trl-gc | load |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows("peers_train_step"):
        ratios = []
        for key in ("trl", "trl_gc"):
            x = r.get(f"x_vs_{key}")
            ratios.append(fmt(x) + "x" if x else "")
        for key in ("trl", "trl_gc"):
            saving = r.get(f"mem_saving_vs_{key}")
            ratios.append(f"{saving * 100:.0f}%" if saving is not None else "")
        repaired = f"{r['repaired']}/{r['completions']}" if "completions" in r else "0 (by construction)"
        print(f"| {r['model']} | {r['P']} x {r['G']} | {r['provider']} | {fmt(r['median_ms'], 0)} | "
              f"{fmt(r['first_step_ms'], 0)} | {fmt(r['peak_mib'], 1)} | {repaired} | {' | '.join(ratios)} | "
              f"{r.get('load1')} |")


def loss_head() -> None:
    print("| shape | rows N | provider | median ms | peak MiB (head trained) | of which weight grad | "
          "activations measured MiB | peak MiB (head frozen) | activations analytic MiB (N / RL step N=1920) | "
          "saving analytic | saving measured | flexrec x |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows("peers_loss_head"):
        fx = r["provider"] == "flexrec"
        print(f"| {r['model']} (H {r['H']}, V {r['V']}) | {r['lists'] * r['K']} | {r['provider']} | "
              f"{fmt(r['median_ms'], 0)} | {fmt(r['peak_mib'], 1)} | {fmt(r['weight_grad_mib'], 1)} | "
              f"{fmt(r['activation_measured_mib'], 1)} | {fmt(r['peak_frozen_head_mib'], 1)} | "
              f"{fmt(r['activation_analytic_mib'], 2)} / {fmt(r['activation_analytic_rl_step_mib'], 1)} | "
              f"{fmt(r.get('saving_activation_analytic_rl_step', 0) * 100, 1) + '%' if fx else ''} | "
              f"{fmt(r.get('saving_activation_measured', 0) * 100, 1) + '%' if fx else ''} | "
              f"{fmt(r.get('x_vs_full_vocab')) + 'x' if fx else ''} |")


if __name__ == "__main__":
    for title, fn in (("Rollouts", rollouts), ("Training step", train_step), ("Loss head", loss_head)):
        print(f"\n### {title}\n")
        fn()

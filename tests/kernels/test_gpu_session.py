"""benchmarks/gpu_session.sh, the one script a GPU session runs: its control flow on CPU
(--dry-run lists every step with a budget, 600 s in all at most) and the goal table it ends with."""

import json
import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
STEPS = ["env", "build", "cuda_tests", "kernel_bench", "rollouts", "train", "table"]


def test_dry_run_lists_every_step_with_a_budget_within_ten_minutes():
    proc = subprocess.run(["bash", os.path.join(ROOT, "benchmarks", "gpu_session.sh"), "--dry-run"],
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    steps = re.findall(r"^step (\d+)/(\d+) (\w+) +budget +(\d+) s", proc.stdout, re.MULTILINE)
    assert [s[2] for s in steps] == STEPS
    budgets = [int(s[3]) for s in steps]
    assert all(b > 0 for b in budgets)
    assert sum(budgets) <= 600
    assert f"total budget {sum(budgets)} s" in proc.stdout


def test_table_lists_every_goal_measured_or_not(tmp_path):
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    try:
        import session_table
    finally:
        sys.path.pop(0)
    (tmp_path / "gpu_kernels.json").write_text(json.dumps({
        "info": {"device": "NVIDIA H200"},
        "goals": [{"goal": "swap_reward B=8192 K=30 cuda: eager / cuda", "ratio": 25.0,
                   "target": ">= 20", "met": True}]}))
    (tmp_path / "peers_rollouts.json").write_text(json.dumps([
        {"op": "rollout", "provider": "flexrec", "model": "smollm2-135m", "B": 64, "G": 1,
         "x_vs_constrained": 2.5}]))
    steps = tmp_path / "steps.tsv"
    steps.write_text("step\tbudget_s\tseconds\tstatus\nkernel_bench\t150\t90\tok\n"
                     "rollouts\t110\t80\tok\ntrain\t100\t100\tTIMEOUT\n")
    assert session_table.main(["--steps", str(steps), "--out", str(tmp_path)]) == 0
    md = (tmp_path / "gpu_session.md").read_text()
    assert "Card: NVIDIA H200" in md
    # 4 kernel goals x 2 providers, the rollout goal, training, the session total.
    assert len(session_table.goal_rows(str(tmp_path), session_table.read_steps(str(steps)))) == 11
    assert "| swap_reward B=8192 K=30 cuda: eager / cuda | >= 20 | 25.00 | yes |" in md
    assert "constrained / flexrec | >= 3 | 2.50 | NO |" in md
    assert "not measured (train: TIMEOUT)" in md
    assert "| session (steps before the table): seconds / 600 | <= 1 | 0.45 (270 s) | yes |" in md

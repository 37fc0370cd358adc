"""The README's default table is what `python -m flexrec.train` prints on a fresh install (the slow tier, as CI runs)."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
COLUMNS = {"untrained (random init)": "untrained", "popularity": "popularity", "after SFT": "sft", "after RL": "rl"}


def readme_default_table(capability: str) -> dict[str, dict[str, tuple[str, str]]]:
    """{need: {stage: ("NDCG@5", "Recall@5")}} of the table after the README's "default run" marker for machines whose
    torch CPU kernels are ``capability`` (``torch.backends.cpu.get_cpu_capability()``: the rounding differs)."""
    text = README.read_text()
    marker = f"<!-- default-run-table {capability} -->"
    if marker not in text:
        raise AssertionError(f"README.md has no default-run table for torch CPU kernels {capability}: run "
                             f"`python -m flexrec.train` on such a machine and add its table after {marker}")
    start = text.index(marker)
    lines = []
    for line in text[start:].splitlines()[1:]:  # the table right after the marker, up to its first non-table line
        if not line.startswith("|"):
            break
        lines.append(line)
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    table = {}
    for line in lines[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) != len(header):
            break
        table[cells[0]] = {COLUMNS[h]: tuple(re.findall(r"\d\.\d{3}", c)) for h, c in zip(header[1:], cells[1:])}
    return table


def test_readme_table_parses():
    for capability in ("AVX2", "AVX512"):
        table = readme_default_table(capability)
        assert set(table) == {"maximize_interest", "explore_new_topics", "trend_promotion"}
        assert all(len(v) == 2 for row in table.values() for v in row.values())
    assert readme_default_table("AVX2") != readme_default_table("AVX512")


@pytest.mark.slow
def test_default_run_prints_the_readme_table(tmp_path):
    """The no-argument run, in a fresh process outside the checkout, as a user runs it after installing."""
    env = {k: v for k, v in os.environ.items() if k not in ("FLEXREC_BACKEND", "TRITON_INTERPRET")}
    out = subprocess.run([sys.executable, "-m", "flexrec.train", "--no-progress"], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=3000)
    assert out.returncode == 0, out.stderr[-3000:]
    results = json.loads((tmp_path / "runs" / "flexrec" / "results.json").read_text())
    capability = json.loads((tmp_path / "runs" / "flexrec" / "config.json").read_text())["cpu_capability"]
    for need, row in readme_default_table(capability).items():
        for stage, (ndcg, recall) in row.items():
            got = results[stage][need]
            assert (f"{got['ndcg@5']:.3f}", f"{got['recall@5']:.3f}") == (ndcg, recall), (need, stage)

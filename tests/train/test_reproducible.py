"""The same command prints the same table: a reduced training run, twice, in separate processes."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

import flexrec

_REDUCED = ["--world-users", "200", "--sft-steps", "40", "--rl-steps", "6", "--critic-ensemble", "1",
            "--critic-epochs", "10", "--eval-every", "1000", "--save-every", "1000", "--no-progress"]


def _table(out: str) -> list[str]:
    return [line for line in out.splitlines() if line.startswith("|")]


@pytest.mark.slow
def test_reduced_run_prints_the_same_table_in_two_processes(tmp_path):
    """7 min on the shared 2-core CPU with five other training jobs running. Each process starts afresh (its own
    imports, backends, thread pools)."""
    env = dict(os.environ, PYTHONPATH=str(Path(flexrec.__file__).resolve().parents[1]))
    tables = []
    for name in ("a", "b"):
        proc = subprocess.run([sys.executable, "-m", "flexrec.train", *_REDUCED, "--cache-dir", str(tmp_path / "cache"),
                               "--out", str(tmp_path / name)], cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=900)
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert "Results (validation users" in proc.stdout
        tables.append(_table(proc.stdout))
    assert len(tables[0]) == 2 + 3 * 4  # header, rule, 3 needs x 4 stages
    assert tables[0] == tables[1]

"""Collects benchmark rows and writes them as JSON, with each provider's speed-up over ``ref``.

Usage in a benchmark file (see test_cpu_ops.py)::

    from bench_rows import timed
    def test_x(benchmark): timed(benchmark, "cpu_ops", "swap_reward", "c", fn, B=4096, K=30)

At the end of the pytest session ``benchmarks/conftest.py`` calls ``write_all``, which writes
``benchmarks/out/<file>.json``: a list of rows {op, provider, <sizes>, mean_ms, ratio_vs_ref},
where ratio_vs_ref = mean of ``ref`` / mean of this provider, measured in the same run.
Nothing here ever fails on speed.
"""

from __future__ import annotations

import json
import os
from typing import Callable

OUT_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "out")
ROWS: dict[str, list[dict]] = {}


TIMES = ("mean_ms", "median_ms", "min_ms")


def add_row(file: str, op: str, provider: str, mean_s: float, median_s=None, min_s=None, **sizes):
    row = {"op": op, "provider": provider, **sizes, "mean_ms": mean_s * 1e3}
    if median_s is not None:
        row.update(median_ms=median_s * 1e3, min_ms=min_s * 1e3)
    ROWS.setdefault(file, []).append(row)


def timed(benchmark, file: str, op: str, provider: str, fn: Callable, rounds: int = 20, **sizes):
    """Time ``fn`` with pytest-benchmark (fixed rounds, so a run's length is predictable)."""
    benchmark.group = f"{op} " + " ".join(f"{k}={v}" for k, v in sizes.items())
    benchmark.extra_info.update({"op": op, "provider": provider, **sizes})
    result = benchmark.pedantic(fn, rounds=rounds, warmup_rounds=2, iterations=1)
    stats = benchmark.stats.stats
    add_row(file, op, provider, stats.mean, stats.median, stats.min, **sizes)
    return result


def with_ratios(rows: list[dict]) -> list[dict]:
    """Adds ratio_vs_ref (ref mean / mean) and median_ratio_vs_ref (ref median / median; the
    steadier of the two on a shared, loaded machine)."""

    def key(r):
        return tuple((k, v) for k, v in r.items() if k != "provider" and k not in TIMES)

    ref = {key(r): r for r in rows if r["provider"] == "ref"}
    out = []
    for r in rows:
        base = ref.get(key(r))
        ratios = {"ratio_vs_ref": base["mean_ms"] / r["mean_ms"] if base else None}
        if base and "median_ms" in r and "median_ms" in base:
            ratios["median_ratio_vs_ref"] = base["median_ms"] / r["median_ms"]
        out.append({**r, **ratios})
    return out


def write_all(out_dir: str = OUT_DIR) -> list[str]:
    """Write every collected file's rows; returns the paths written."""
    paths = []
    for file, rows in ROWS.items():
        os.makedirs(out_dir, exist_ok=True)
        # The output folder ignores itself, so results never end up in a commit.
        with open(os.path.join(out_dir, ".gitignore"), "w") as f:
            f.write("*\n")
        path = os.path.join(out_dir, f"{file}.json")
        with open(path, "w") as f:
            json.dump(with_ratios(rows), f, indent=1)
        paths.append(path)
    return paths


def summary_lines() -> list[str]:
    lines = []
    for file, rows in ROWS.items():
        for r in with_ratios(rows):
            skip = ("op", "provider", "ratio_vs_ref", "median_ratio_vs_ref") + TIMES
            sizes = " ".join(f"{k}={v}" for k, v in r.items() if k not in skip)
            line = f"{file}: {r['op']:<28} {r['provider']:<6} {sizes:<24} mean {r['mean_ms']:9.3f} ms"
            if r["ratio_vs_ref"] is not None:
                line += f" (x{r['ratio_vs_ref']:.1f} vs ref)"
            if "median_ms" in r:
                line += f"  median {r['median_ms']:9.3f} ms"
                if r.get("median_ratio_vs_ref") is not None:
                    line += f" (x{r['median_ratio_vs_ref']:.1f})"
            lines.append(line)
    return lines

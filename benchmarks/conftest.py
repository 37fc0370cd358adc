"""Benchmark session hooks: write the rows collected by bench_rows and print a summary.

``FLEXREC_BENCH_THREADS=N`` pins torch (and so the C++ kernels' at::parallel_for) to N threads;
on a shared, loaded box ``FLEXREC_BENCH_THREADS=1`` gives steadier ratios than two threads that
keep waiting for each other at OpenMP barriers.
"""

import os

import bench_rows
import torch


def pytest_configure(config):
    threads = os.environ.get("FLEXREC_BENCH_THREADS")
    if threads:
        torch.set_num_threads(int(threads))


def pytest_sessionfinish(session, exitstatus):
    bench_rows.write_all()


def pytest_terminal_summary(terminalreporter):
    lines = bench_rows.summary_lines()
    if lines:
        terminalreporter.section(
            f"flexrec benchmark rows, {torch.get_num_threads()} threads (also in benchmarks/out/*.json)"
        )
        for line in lines:
            terminalreporter.write_line(line)

"""Benchmark session hooks: write the rows collected by bench_rows and print a summary."""

import bench_rows


def pytest_sessionfinish(session, exitstatus):
    bench_rows.write_all()


def pytest_terminal_summary(terminalreporter):
    lines = bench_rows.summary_lines()
    if lines:
        terminalreporter.section("flexrec benchmark rows (also in benchmarks/out/*.json)")
        for line in lines:
            terminalreporter.write_line(line)

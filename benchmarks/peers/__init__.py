"""flexrec against what users use today (issue 8): see benchmarks/RESULTS.md."""

"""Benchmarks: each sets Django up itself and prints ratios against a baseline measured in the same process.

Run from the repository root, e.g. `.venv/bin/python -m bench.directory_import`; the last line of the output
is `<name>: <figure> (target <target>) PASS|FAIL`."""

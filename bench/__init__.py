"""Benchmark harness (operations.md section 3): `python -m bench` (or `python3 .ci/dev.py bench`) prints one table, each figure
next to the baseline measured in the same run, and writes it to bench/RESULTS.md. It reports; it never asserts."""

"""Benchmarks for cz-pipeline: ``python -m bench run`` (see bench/README.md).

Timings live here, never in the tests.
"""

"""Benchmarks behind `derain bench`: one harness, one module of cases per op family.

Each module in SUITES defines `cases(quick: bool) -> list[Case]`; a Case times
our op and its peers with the same harness (derain.bench.harness).
"""
SUITES = ["composite", "median", "ssim", "related", "block"]

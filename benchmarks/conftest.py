"""pytest-benchmark suites: `pytest benchmarks` times our ops and the peers side by side
(group = op and size). CI runs them once with --benchmark-disable so they cannot rot."""
import os

os.environ.setdefault("TRITON_INTERPRET", "1")

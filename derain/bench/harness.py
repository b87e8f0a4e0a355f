"""Timing and memory harness shared by every contender in `derain bench`.

`measure(fn)` runs fn a few times to warm up, then `repeats` times, and reports
the median and spread (min..max) in milliseconds, and the peak extra resident
memory (MiB) of one call: the process's peak RSS counter is reset through
/proc/self/clear_refs before the call and read back after it (Linux; None
elsewhere). That counts every allocator: torch, numpy, OpenCV, scipy alike.
"""
from __future__ import annotations

import gc
import statistics
import time
from dataclasses import dataclass, field
from typing import Callable


def _read_status_kb(key: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def peak_extra_mib(fn: Callable[[], object]) -> float | None:
    """Peak resident memory above the current level during one call of fn, in MiB."""
    gc.collect()
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset VmHWM to the current RSS
    except OSError:
        return None
    base = _read_status_kb("VmRSS")
    result = fn()
    peak = _read_status_kb("VmHWM")
    del result
    if base is None or peak is None:
        return None
    return max(0.0, (peak - base) / 1024.0)


@dataclass
class Timing:
    median_ms: float
    min_ms: float
    max_ms: float
    repeats: int
    peak_mib: float | None = None

    def as_dict(self) -> dict:
        return {"median_ms": self.median_ms, "min_ms": self.min_ms, "max_ms": self.max_ms,
                "repeats": self.repeats, "peak_extra_mib": self.peak_mib}


def measure(fn: Callable[[], object], warmup: int = 2, repeats: int = 7, max_seconds: float = 20.0,
            memory: bool = True) -> Timing:
    """Median time of fn() over `repeats` runs (fewer if they exceed max_seconds), after `warmup` runs."""
    for _ in range(warmup):
        fn()
    times = []
    start = time.perf_counter()
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
        if time.perf_counter() - start > max_seconds and len(times) >= 1:
            break
    peak = peak_extra_mib(fn) if memory else None
    return Timing(statistics.median(times), min(times), max(times), len(times), peak)


@dataclass
class Contender:
    """One implementation in a comparison: `make()` builds the zero-argument callable to time."""
    name: str
    make: Callable[[], Callable[[], object]]
    ours: bool = False
    note: str = ""


@dataclass
class Case:
    """One row group of the op table: our op and its peers on the same inputs."""
    op: str
    mode: str  # "forward" or "forward+backward"
    shape: str
    contenders: list[Contender] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # peers not installed / skipped, with reasons

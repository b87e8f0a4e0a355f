"""Timing and memory harness shared by every contender in `derain bench`.

`measure(fn)` runs fn a few times to warm up, then `repeats` times, and reports
the median, mean and spread (min..max) in milliseconds, and the peak extra
memory (MiB) of one call.

CPU memory: the process's peak RSS counter is reset through /proc/self/clear_refs
before the call and read back after it (Linux; None elsewhere); glibc's cached
free memory is returned to the OS first (malloc_trim), and so are the buffers
our kernels keep for reuse (derain_kernels.empty_output_cache), so that pages
reused from an earlier contender's frees are not missed. That counts every allocator:
torch, numpy, OpenCV, scipy alike. CUDA memory: torch's peak allocated bytes.

`budget_s`: a contender whose first call takes longer than the budget is not
repeated: its Timing has `skipped` set and holds that one call (time and memory).

`run_case(case)` times every contender of a Case with the same settings and
turns failures into rows ("failed: <reason>") instead of aborting the run.

CUDA: every timed sample ends with a synchronize; a fast contender (one call
under CUDA_SAMPLE_S) is timed over a batch of calls per sample (at most
CUDA_MAX_BATCH) and the sample is the batch's time over its size, so that the
host clock's resolution and one synchronize do not dominate a 20 µs kernel.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import gc
import math
import re
import statistics
import time
from dataclasses import dataclass, field
from typing import Callable

import torch

import derain_kernels as dk

CUDA_SAMPLE_S = 5e-3  # a CUDA sample lasts at least this long (calls batched) ...
CUDA_MAX_BATCH = 200  # ... with at most this many calls per sample


def _read_status_kb(key: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


_libc = None


def _malloc_trim() -> None:
    """Give glibc's cached free memory back to the OS (no-op off glibc)."""
    global _libc
    if _libc is None:
        try:
            _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            _libc.malloc_trim.argtypes = [ctypes.c_size_t]
        except (OSError, AttributeError):
            _libc = False
    if _libc:
        _libc.malloc_trim(0)


def _peak_call(fn: Callable[[], object], device: str = "cpu") -> tuple[float, float | None]:
    """Call fn once; return (seconds, peak extra MiB or None)."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        result = fn()
        torch.cuda.synchronize()
        seconds = time.perf_counter() - t0
        del result
        return seconds, max(0.0, (torch.cuda.max_memory_allocated() - base) / 2**20)
    # buffers our kernels keep for reuse would count in the base and hide our outputs' memory
    dk.empty_output_cache()
    _malloc_trim()
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset VmHWM to the current RSS
        base = _read_status_kb("VmRSS")
    except OSError:
        base = None
    t0 = time.perf_counter()
    result = fn()
    seconds = time.perf_counter() - t0
    peak = _read_status_kb("VmHWM") if base is not None else None
    del result
    if base is None or peak is None:
        return seconds, None
    return seconds, max(0.0, (peak - base) / 1024.0)


def peak_extra_mib(fn: Callable[[], object], device: str = "cpu") -> float | None:
    """Peak memory above the current level during one call of fn, in MiB (None if unknown)."""
    return _peak_call(fn, device)[1]


@dataclass
class Timing:
    median_ms: float
    min_ms: float
    max_ms: float
    repeats: int
    peak_mib: float | None = None
    mean_ms: float | None = None
    skipped: str | None = None  # why the contender was not repeated (over budget)
    batch: int = 1  # calls per timed sample (CUDA: fast calls are timed in batches)

    def as_dict(self) -> dict:
        return {"median_ms": self.median_ms, "mean_ms": self.mean_ms, "min_ms": self.min_ms,
                "max_ms": self.max_ms, "repeats": self.repeats, "peak_extra_mib": self.peak_mib,
                "skipped": self.skipped, "batch": self.batch}


class _Timer:
    """The measurement of one callable in stages, so that several can be interleaved.

    start(): the first call (timed, its peak memory read; it is the first warm-up call),
    the budget check, the other warm-up calls. step(): one timed call; False when done
    (`repeats` calls, or their total time passed max_seconds). finish(): the memory call
    and the Timing.
    """

    def __init__(self, fn, warmup=2, repeats=7, max_seconds=20.0, memory=True, budget_s=None, device="cpu"):
        self.fn, self.warmup, self.repeats, self.max_seconds = fn, warmup, max(1, repeats), max_seconds
        self.memory, self.budget_s, self.device = memory, budget_s, device
        self.sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
        self.times: list[float] = []
        self.slow = False
        self.first_mib = None
        self.batch = 1

    def start(self) -> Timing | None:
        """Returns a Timing when the contender is over budget (then it is done), else None."""
        if self.memory:
            first_s, self.first_mib = _peak_call(self.fn, self.device)
        else:
            t0 = time.perf_counter()
            self.fn()
            self.sync()
            first_s = time.perf_counter() - t0
        if self.budget_s is not None and first_s > self.budget_s:
            ms = first_s * 1e3
            return Timing(ms, ms, ms, 1, self.first_mib, ms,
                          skipped=f"one call took {first_s:.1f} s > budget {self.budget_s:g} s")
        # A slow contender (its planned calls would not fit in max_seconds) needs no more warm-up
        # than its first call, and its memory is that first call's: no extra calls of seconds each.
        self.slow = first_s * (self.warmup + self.repeats) > self.max_seconds
        for _ in range(0 if self.slow else self.warmup - 1):
            self.fn()
        self.sync()
        if self.device.startswith("cuda") and not self.slow:
            t0 = time.perf_counter()
            self.fn()
            self.sync()
            one = max(time.perf_counter() - t0, 1e-7)
            self.batch = max(1, min(CUDA_MAX_BATCH, math.ceil(CUDA_SAMPLE_S / one)))
        return None

    def step(self) -> bool:
        t0 = time.perf_counter()
        for _ in range(self.batch):
            self.fn()
        self.sync()
        self.times.append((time.perf_counter() - t0) * 1e3 / self.batch)
        return len(self.times) < self.repeats and sum(self.times) * self.batch / 1e3 <= self.max_seconds

    def finish(self) -> Timing:
        peak = None
        if self.memory:
            peak = self.first_mib if self.slow else peak_extra_mib(self.fn, self.device)
        t = self.times
        return Timing(statistics.median(t), min(t), max(t), len(t), peak, statistics.fmean(t), batch=self.batch)


def measure(fn: Callable[[], object], warmup: int = 2, repeats: int = 7, max_seconds: float = 20.0,
            memory: bool = True, budget_s: float | None = None, device: str = "cpu") -> Timing:
    """Time fn(): `warmup` calls (at least one, used for the budget check), then up to `repeats`
    timed calls (fewer once their total passes max_seconds), then one call for the peak memory.
    When the first call shows that the planned calls would exceed max_seconds, the first call
    is the only warm-up and its memory is reported (no extra call).

    On CUDA (`device="cuda..."`) every call is followed by a synchronize before its time is read.
    """
    timer = _Timer(fn, warmup, repeats, max_seconds, memory, budget_s, device)
    skipped = timer.start()
    if skipped is not None:
        return skipped
    while timer.step():
        pass
    return timer.finish()


@dataclass
class Contender:
    """One implementation in a comparison: `make()` builds the zero-argument callable to time.

    `expected_s`: a known single-call time; when above the run's budget the contender is
    skipped without being called. `device`: where it runs ("cpu" or "cuda"), for the
    synchronisation and the memory counter. The time make() takes is reported as setup
    time (e.g. torch.compile's compilation when make() compiles and calls once).
    """
    name: str
    make: Callable[[], Callable[[], object]]
    ours: bool = False
    note: str = ""
    expected_s: float | None = None
    device: str = "cpu"


@dataclass
class Case:
    """One row group of the op table: our op and its peers on the same inputs."""
    op: str
    mode: str  # "forward" or "forward+backward"
    shape: str
    contenders: list[Contender] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # peers not installed / skipped, with reasons


@dataclass
class Settings:
    """How `run_case` times: the same for every contender of a run."""
    warmup: int = 2
    repeats: int = 7
    max_seconds: float = 5.0
    budget_s: float | None = 10.0
    memory: bool = True
    interleave: bool = True  # timed calls round-robin over the contenders of a case


def shape_numel(shape: str) -> int | None:
    """Number of elements of a shape written like '8x3x128x128' (None if it is not one)."""
    m = re.match(r"\s*(\d+(?:\s*[x×]\s*\d+)+)", shape)
    if not m:
        return None
    return math.prod(int(v) for v in re.split(r"\s*[x×]\s*", m.group(1)))


def result_row(case: Case, c: Contender, status: str = "ok", reason: str = "") -> dict:
    """A result row with no measurement yet (what run_case fills in)."""
    return {"op": case.op, "mode": case.mode, "shape": case.shape, "impl": c.name, "ours": c.ours,
            "note": c.note, "device": c.device, "status": status, "reason": reason, "median_ms": None,
            "mean_ms": None, "min_ms": None, "max_ms": None, "repeats": 0, "batch": 1, "peak_extra_mib": None,
            "setup_s": None, "speedup_vs_ours": None}


def _failure(exc: Exception) -> str:
    msg = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {msg}"[:200]


def run_case(case: Case, settings: Settings, on_result: Callable[[dict], None] | None = None,
             over_budget: dict | None = None, on_round: Callable[[int, int], None] | None = None) -> list[dict]:
    """Time every contender of `case`; one result row (dict) per contender.

    Each contender is built (`make()`, timed as setup) and warmed up (budget check) in turn;
    with `settings.interleave` the timed calls then go round-robin (one call of each contender
    per round, so that a change of machine load hits all of them alike), else one contender
    after the other. `over_budget` maps (op, mode, contender) to the element count at which
    that contender went over budget in this run: it is then skipped on larger shapes without a
    call. Rows: status "ok" | "skipped" | "failed"; speedup_vs_ours = contender median / ours median.
    """
    rows = [result_row(case, c) for c in case.contenders]
    gc.collect()  # free what earlier cases left in reference cycles before measuring memory
    numel = shape_numel(case.shape)
    active = []  # (row, timer)

    def done(row, timing=None, exc=None):
        if exc is not None:
            row.update(status="failed", reason=_failure(exc))
        elif timing is not None:
            row.update(timing.as_dict())
            row.pop("skipped")
            if timing.skipped:
                row.update(status="skipped", reason=timing.skipped)
                if over_budget is not None and numel is not None:
                    over_budget[(case.op, case.mode, row["impl"])] = (numel, case.shape)
        if on_result is not None:
            on_result(row)

    for c, row in zip(case.contenders, rows):
        key = (case.op, case.mode, c.name)
        if c.expected_s is not None and settings.budget_s is not None and c.expected_s > settings.budget_s:
            row.update(status="skipped", reason=f"would take ~{c.expected_s:g} s > budget {settings.budget_s:g} s")
            done(row)
            continue
        if over_budget is not None and key in over_budget and numel is not None and numel >= over_budget[key][0]:
            row.update(status="skipped", reason=f"over budget at {over_budget[key][1]} already")
            done(row)
            continue
        try:
            t0 = time.perf_counter()
            fn = c.make()
            row["setup_s"] = time.perf_counter() - t0
            timer = _Timer(fn, settings.warmup, settings.repeats, settings.max_seconds, settings.memory,
                           settings.budget_s, c.device)
            skipped = timer.start()
        except Exception as exc:  # a failing contender is a result, not a crash of the run
            done(row, exc=exc)
            continue
        if skipped is not None:
            done(row, skipped)
        elif settings.interleave:
            active.append((row, timer))
        else:
            try:
                while timer.step():
                    pass
                done(row, timer.finish())
            except Exception as exc:
                done(row, exc=exc)

    rounds = max(1, settings.repeats)
    for i in range(rounds):
        if not active:
            break
        if on_round is not None:
            on_round(i + 1, rounds)
        still = []
        for row, timer in active:
            try:
                more = timer.step()
            except Exception as exc:
                done(row, exc=exc)
                continue
            if more:
                still.append((row, timer))
            else:
                try:
                    done(row, timer.finish())
                except Exception as exc:
                    done(row, exc=exc)
        active = still
    for row, timer in active:  # (only when rounds ran out first, which step() prevents)
        done(row, timer.finish())

    ours = next((r for r in rows if r["ours"] and r["median_ms"]), None)
    for r in rows:
        if ours is not None and not r["ours"] and r["median_ms"]:
            r["speedup_vs_ours"] = r["median_ms"] / ours["median_ms"]
    return rows


def on_device(cases: list[Case], device: str) -> list[Case]:
    """Mark every contender of `cases` as running on `device` (its synchronisation and memory counter)."""
    for case in cases:
        for c in case.contenders:
            c.device = device
    return cases

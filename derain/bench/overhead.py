"""Call overhead: what one call of each public op costs on tiny tensors, beside the bare
dispatcher call it makes and the nearest torch op.

For every public op, on the smallest inputs (1×1×4×4 images; the block 1×1×4×4 with 1×1×3×3
weights; windows of 3), with one torch thread, three contenders are timed:

- "derain_kernels": the public function (`derain_kernels.min_composite(x, y)`, ...): argument
  checks, the Python around the op, the dispatcher, autograd, the kernel;
- "torch.ops.derain": the bare dispatcher call(s) that the public function makes, with the
  very arguments it makes them with (recorded from one call of the public function, so the
  comparison follows the code as it is); the JSON row's note names them;
- "nearest torch op": one torch op of the same kind (`torch.minimum`, add+clamp, a pooling,
  one convolution, ...), the floor of a torch call on this machine.

Two modes, both with grad mode on (as in a plain call): "call, no grad" (no input requires
grad) and "call, requires grad" (the first image input requires grad: the forward call
records the autograd graph; no backward is run). Each contender is warmed up, then timed in
rounds of `calls` calls each, round-robin over the three; the figure is the fastest round's
time per call (µs), the steadiest statistic of a few-µs call on a busy machine. On CUDA each round ends with a
synchronize, so a round's time is host time plus whatever GPU work did not overlap it.

The goal (derain/bench/goals.py): ours at most 2× the bare dispatcher call.
"""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

import derain_kernels as dk

from .harness import Case, Contender, result_row
from .goals import OVERHEAD_BARE as BARE, OVERHEAD_MODES as MODES, OVERHEAD_TORCH as TORCH

SECTION = "overhead"
NO_GRAD, REQUIRES_GRAD = MODES
OURS = "derain_kernels"
#: The public ops whose call cost the section measures (every function of derain_kernels.__all__
#: that computes on tensors; `directional_kernels` only builds a constant bank).
PUBLIC_OPS = ("min_composite", "rain_composite", "median_filter", "soft_label", "ssim", "ssim_loss",
              "dark_channel", "dark_channel_loss", "tv_loss", "rain_direction_loss", "self_correcting_block",
              "conv3x3_relu", "conv3x3")


@dataclass
class TimingPlan:
    """warmup calls per contender, then `rounds` rounds of `calls` calls (round-robin)."""
    warmup: int = 100
    rounds: int = 20
    calls: int = 50


PLANS = {"full": TimingPlan(100, 20, 50), "quick": TimingPlan(20, 8, 25), "smoke": TimingPlan(2, 2, 3)}


def plan_for(quick: bool = False, smoke: bool = False) -> TimingPlan:
    return PLANS["smoke" if smoke else "quick" if quick else "full"]


@dataclass
class OpSpec:
    """One public op: `inputs(device)` -> (tensors, extra arguments); `ours(*tensors, *extra)`;
    `torch_op(*tensors, *extra)` the nearest torch op, described by `torch_text`."""
    name: str
    shape: str
    inputs: Callable[[str], tuple[list[torch.Tensor], list]]
    ours: Callable
    torch_op: Callable
    torch_text: str


def _images(n: int, device: str, shape=(1, 1, 4, 4)):
    gen = torch.Generator().manual_seed(0)
    return [torch.rand(shape, generator=gen).to(device) for _ in range(n)]


def _gauss11(device: str) -> torch.Tensor:
    g = torch.exp(-((torch.arange(11, dtype=torch.float32) - 5) ** 2) / (2 * 1.5 ** 2))
    g = g / g.sum()
    return (g[:, None] * g[None, :]).view(1, 1, 11, 11).to(device)


def _block_inputs(device: str):
    gen = torch.Generator().manual_seed(0)
    x = (torch.rand(1, 1, 4, 4, generator=gen) - 0.3).to(device)
    w1, w3 = (0.1 * torch.randn(1, 1, 3, 3, generator=gen)).to(device), (0.1 * torch.randn(1, 1, 3, 3, generator=gen)).to(device)
    b1, b3 = (0.1 * torch.randn(1, generator=gen)).to(device), (0.1 * torch.randn(1, generator=gen)).to(device)
    return [x, w1, b1, w3, b3], []


def _pool3(x, *_):
    return F.max_pool2d(x, 3, stride=1, padding=1)


SPECS = [
    OpSpec("min_composite", "1x1x4x4", lambda d: (_images(2, d), []), dk.min_composite,
           torch.minimum, "torch.minimum(x, y)"),
    OpSpec("rain_composite", "1x1x4x4", lambda d: (_images(2, d), []), dk.rain_composite,
           lambda c, r: (c + r).clamp(0, 1), "(clean + rain).clamp(0, 1)"),
    OpSpec("median_filter", "1x1x4x4 k3", lambda d: (_images(1, d), [3]), dk.median_filter,
           _pool3, "F.max_pool2d(x, 3, 1, 1) (no torch median)"),
    OpSpec("soft_label", "1x1x4x4 k3", lambda d: (_images(1, d), [3]), dk.soft_label,
           _pool3, "F.max_pool2d(x, 3, 1, 1)"),
    OpSpec("ssim", "1x1x4x4", lambda d: (_images(2, d) + [_gauss11(d)], []),
           lambda x, y, _w: dk.ssim(x, y), lambda x, y, w: F.conv2d(x, w, padding=5),
           "F.conv2d(x, 11×11 Gaussian, padding=5)"),
    OpSpec("ssim_loss", "1x1x4x4", lambda d: (_images(2, d) + [_gauss11(d)], []),
           lambda x, y, _w: dk.ssim_loss(x, y), lambda x, y, w: F.conv2d(x, w, padding=5),
           "F.conv2d(x, 11×11 Gaussian, padding=5)"),
    OpSpec("dark_channel", "1x1x4x4 p3", lambda d: (_images(1, d), [3]), dk.dark_channel,
           _pool3, "F.max_pool2d(x, 3, 1, 1)"),
    OpSpec("dark_channel_loss", "1x1x4x4 p3", lambda d: (_images(1, d), [3]), dk.dark_channel_loss,
           _pool3, "F.max_pool2d(x, 3, 1, 1)"),
    OpSpec("tv_loss", "1x1x4x4", lambda d: (_images(2, d), []), lambda x, _y: dk.tv_loss(x),
           F.l1_loss, "F.l1_loss(x, y)"),
    OpSpec("rain_direction_loss", "1x1x4x4", lambda d: (_images(2, d), [30.0]), dk.rain_direction_loss,
           lambda z, g, _a: F.l1_loss(z, g), "F.l1_loss(z, z_gt)"),
    OpSpec("self_correcting_block", "1x1x4x4 d3", _block_inputs, dk.self_correcting_block,
           lambda x, w1, b1, w3, b3: F.conv2d(x, w1, b1, padding=1), "F.conv2d(x, w1, b1, padding=1)"),
    OpSpec("conv3x3_relu", "1x1x4x4", lambda d: (_block_inputs(d)[0][:3], []), dk.conv3x3_relu,
           lambda x, w, b: F.conv2d(x, w, b, padding=1), "F.conv2d(x, w, b, padding=1)"),
    OpSpec("conv3x3", "1x1x4x4 tanh", lambda d: (_block_inputs(d)[0][:3], []),
           lambda x, w, b: dk.conv3x3(x, w, b, "tanh"), lambda x, w, b: F.conv2d(x, w, b, padding=1),
           "F.conv2d(x, w, b, padding=1)"),
]


# ---------------------------------------------------------------- the bare dispatcher calls
def _derain_name(func) -> str | None:
    """'derain::op' for a torch.ops.derain op (packet or overload), else None."""
    name = getattr(func, "_qualified_op_name", None)  # OpOverloadPacket
    if name is None and isinstance(func, torch._ops.OpOverload):
        name = func.name()
    return name if isinstance(name, str) and name.startswith("derain::") else None


class _RecordDerainCalls(TorchFunctionMode):
    """Records the torch.ops.derain calls made at the top level while active (the calls a
    public function makes; calls made inside an op are not seen)."""

    def __init__(self):
        super().__init__()
        self.calls: list[tuple[Callable, tuple, dict]] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if _derain_name(func) is not None:
            self.calls.append((func, args, kwargs))
        return func(*args, **kwargs)


def record_dispatcher_calls(fn: Callable[[], object]) -> list[tuple[Callable, tuple, dict]]:
    """The torch.ops.derain calls (op, args, kwargs) that one call of fn makes."""
    with _RecordDerainCalls() as rec:
        fn()
    return rec.calls


def bare_call(fn: Callable[[], object]) -> tuple[Callable[[], object], str]:
    """(a callable repeating the dispatcher calls one call of fn makes, their names).

    Raises RuntimeError when fn makes no torch.ops.derain call (the op then has no bare row)."""
    calls = record_dispatcher_calls(fn)
    if not calls:
        raise RuntimeError("the public function made no torch.ops.derain call")
    names = " + ".join("torch.ops." + _derain_name(f).replace("::", ".") for f, _, _ in calls)
    if len(calls) == 1:
        (f, a, k), = calls
        return (lambda: f(*a, **k)), names

    def run():
        for f, a, k in calls:
            f(*a, **k)
    return run, names


# ---------------------------------------------------------------- cases
def _contenders(spec: OpSpec, device: str, grad: bool) -> list[Contender]:
    tensors, extra = spec.inputs(device)
    if grad:
        tensors = [tensors[0].detach().clone().requires_grad_()] + tensors[1:]
    args = [*tensors, *extra]

    def ours():
        return lambda: spec.ours(*args)

    def bare():
        with torch.enable_grad():
            fn, names = bare_call(ours())
        bare_contender.note = names  # the row names the recorded dispatcher call(s)
        return fn

    def nearest():
        return lambda: spec.torch_op(*args)

    bare_contender = Contender(BARE, bare, device=device, note="the dispatcher call(s) ours makes")
    return [Contender(OURS, ours, ours=True, device=device, note=f"derain_kernels.{spec.name}"),
            bare_contender, Contender(TORCH, nearest, device=device, note=spec.torch_text)]


def cases(quick: bool = False, smoke: bool = False, device: str = "cpu") -> list[Case]:
    """One Case per public op and mode (no grad, requires grad)."""
    return [Case(spec.name, mode, spec.shape, _contenders(spec, device, mode == REQUIRES_GRAD))
            for spec in SPECS for mode in MODES]


# ---------------------------------------------------------------- timing
def time_rounds(fns: dict[str, Callable[[], object]], plan: TimingPlan, sync: Callable[[], None] = lambda: None,
                clock: Callable[[], float] = time.perf_counter,
                errors: dict[str, Exception] | None = None) -> dict[str, list[float]]:
    """µs per call of each fn, one value per round: `plan.warmup` calls each, then `plan.rounds`
    rounds of `plan.calls` calls of each fn in turn (round-robin), each round's time ending
    with sync(). A fn that raises is dropped (its exception stored in `errors`)."""
    errors = {} if errors is None else errors
    out: dict[str, list[float]] = {name: [] for name in fns}
    live = dict(fns)

    def attempt(name, body):
        try:
            body()
        except Exception as exc:
            errors[name] = exc
            live.pop(name, None)
            out.pop(name, None)

    for name, fn in list(live.items()):
        def warm(fn=fn):
            for _ in range(plan.warmup):
                fn()
            sync()
        attempt(name, warm)
    for _ in range(max(1, plan.rounds)):
        for name, fn in list(live.items()):
            def timed(name=name, fn=fn):
                t0 = clock()
                for _ in range(plan.calls):
                    fn()
                sync()
                out[name].append((clock() - t0) * 1e6 / plan.calls)
            attempt(name, timed)
    return out


def _failure(exc: Exception) -> str:
    msg = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {msg}"[:200]


def run_case(case: Case, plan: TimingPlan, on_result: Callable[[dict], None] | None = None) -> list[dict]:
    """Rows of one overhead case (as harness.run_case's, plus "us_per_call": the fastest round's
    µs per call; speedup_vs_ours = that contender's µs / ours). Every contender is timed with
    one torch thread and grad mode on; a contender that raises is a "failed" row and the
    others are still timed."""
    rows = {c.name: result_row(case, c) for c in case.contenders}
    for row in rows.values():
        row["us_per_call"] = None
    threads = torch.get_num_threads()
    device = case.contenders[0].device if case.contenders else "cpu"
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    errors: dict[str, Exception] = {}
    torch.set_num_threads(1)
    try:
        with torch.enable_grad():
            fns = {}
            for c in case.contenders:
                try:
                    t0 = time.perf_counter()
                    fn = c.make()
                    rows[c.name]["setup_s"] = time.perf_counter() - t0
                    fns[c.name] = fn
                except Exception as exc:
                    errors[c.name] = exc
                rows[c.name]["note"] = c.note  # (make() may name what it built)
            times = time_rounds(fns, plan, sync, errors=errors)
    finally:
        torch.set_num_threads(threads)
    for name, row in rows.items():
        if name in errors:
            row.update(status="failed", reason=_failure(errors[name]))
        ts = times.get(name)
        if ts:
            row.update(us_per_call=min(ts), min_ms=min(ts) / 1e3, median_ms=statistics.median(ts) / 1e3,
                       mean_ms=statistics.fmean(ts) / 1e3, max_ms=max(ts) / 1e3, repeats=len(ts),
                       batch=plan.calls)
    out = list(rows.values())
    ours = next((r for r in out if r["ours"] and r["us_per_call"]), None)
    for r in out:
        if ours is not None and not r["ours"] and r["us_per_call"]:
            r["speedup_vs_ours"] = r["us_per_call"] / ours["us_per_call"]
        if on_result is not None:
            on_result(r)
    return out

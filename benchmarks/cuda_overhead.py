"""Where a CUDA call of our ops spends its time (needs a GPU; run by scripts/gpu_check.sh).

For each op at a training size: the wall-clock time per call of the public op (argument
checks, torch.ops dispatch, the Python CUDA kernel registration, the Triton launcher), of
the Triton launcher called directly, and the GPU time of the kernels it runs (torch.profiler,
summed over the call's kernels, ours and torch's). Wall-clock times are per call over a
batch of calls with one synchronize; a call whose wall time is far above its GPU time is
bound by host-side overhead, not by its kernels.

    python benchmarks/cuda_overhead.py [--json FILE]
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

import derain_kernels as dk


def wall_us(fn, calls=200, rounds=5) -> float:
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    per = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        torch.cuda.synchronize()
        per.append((time.perf_counter() - t0) / calls * 1e6)
    return statistics.median(per)


def gpu_us(fn, calls=50) -> tuple[float, int]:
    """(GPU time per call in µs, kernels per call) from torch.profiler's device times."""
    from torch.profiler import ProfilerActivity, profile

    fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(calls):
            fn()
        torch.cuda.synchronize()
    total, count = 0.0, 0
    for e in prof.key_averages():
        t = getattr(e, "self_device_time_total", None)
        if t is None:
            t = getattr(e, "self_cuda_time_total", 0.0)
        if t and e.count:
            total += t
            count += e.count
    return total / calls, round(count / calls)


def cases():
    dev = "cuda"
    x, y = torch.rand(8, 3, 128, 128, device=dev), torch.rand(8, 3, 128, 128, device=dev)
    xb = (torch.rand(8, 16, 128, 128, device=dev) - 0.3).contiguous(memory_format=torch.channels_last)
    p = [0.1 * torch.randn(16, 16, 3, 3, device=dev), 0.1 * torch.randn(16, device=dev),
         0.1 * torch.randn(16, 16, 3, 3, device=dev), 0.1 * torch.randn(16, device=dev)]
    from derain.bench.block import eager_block
    from derain_kernels.triton import block as tb, composite as tc, ssim as ts, tv as tt

    return [
        ("min_composite fwd 8x3x128²", lambda: dk.min_composite(x, y), lambda: tc.min_composite(x, y),
         lambda: torch.where(x <= y, x, y)),
        ("rain_composite fwd 8x3x128²", lambda: dk.rain_composite(x, y - 0.5), lambda: tc.rain_composite(x, y, True),
         lambda: (x + y).clamp(0, 1)),
        ("ssim fwd 8x3x128²", lambda: dk.ssim(x, y),
         lambda: ts.ssim(x, y, 11, 1.5, 1.0, "zeros", "mean", 0.01, 0.03), None),
        ("tv_loss fwd 8x3x128²", lambda: dk.tv_loss(x), lambda: tt.tv_sums(x, 1),
         lambda: torch.diff(x, dim=-2).abs().mean() + torch.diff(x, dim=-1).abs().mean()),
        ("median k31 fwd 8x3x128²", lambda: dk.median_filter(x, 31), None, None),
        ("median k3 fwd 8x3x128²", lambda: dk.median_filter(x, 3), None, None),
        ("block fwd 8x16x128²", lambda: dk.self_correcting_block(xb, *p, 3), lambda: tb.self_correcting_block(xb, *p, 3),
         lambda: eager_block(xb, *p)),
    ]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    rows = []
    with torch.no_grad():
        for name, public, launcher, eager in cases():
            row = {"case": name, "public_wall_us": wall_us(public)}
            row["gpu_us"], row["kernels"] = gpu_us(public)
            row["launcher_wall_us"] = wall_us(launcher) if launcher else None
            row["eager_wall_us"] = wall_us(eager) if eager else None
            if eager:
                row["eager_gpu_us"], row["eager_kernels"] = gpu_us(eager)
            rows.append(row)
            print(json.dumps(row), flush=True)
    print("\n| case | public op µs/call | launcher alone | GPU time (kernels) | eager torch µs/call | eager GPU time |")
    print("|---|---:|---:|---:|---:|---:|")
    f = lambda v: "-" if v is None else f"{v:.1f}"  # noqa: E731
    for r in rows:
        print(f"| {r['case']} | {f(r['public_wall_us'])} | {f(r['launcher_wall_us'])} | {f(r['gpu_us'])} "
              f"({r['kernels']}) | {f(r['eager_wall_us'])} | {f(r.get('eager_gpu_us'))} |")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

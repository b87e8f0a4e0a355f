"""Median throughput in Mpix/s at k = 31 (float32, reflect), ours against torch unfold+median:
the figure the published GPU medians are quoted in (Adams 2021: ~260 Mpix/s exact float median
at k = 31 on an RTX 3090). scripts/gpu_check.sh runs it on a lent GPU.

    python benchmarks/median_throughput.py [--device cuda|cpu] [--k 31] [--smoke]

On a GPU it also times the per-pixel selection that the tiled kernel replaced (config
gpu_tiles=False). Prints one Markdown row per (implementation, shape): median ms over timed calls (CUDA events on a
GPU) and Mpix/s = output pixels / time.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

try:
    import derain  # noqa: F401
except ImportError:  # run from a checkout that is not installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import derain_kernels as dk
from derain.bench.median import unfold_median


def _time_ms(fn, device: str, repeats: int) -> float:
    fn()  # warm-up (also compiles nothing: the kernels are ahead of time)
    times = []
    for _ in range(repeats):
        if device == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end))
        else:
            t = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cpu", "cuda"])
    ap.add_argument("--k", type=int, default=31)
    ap.add_argument("--smoke", action="store_true", help="tiny images, two calls: checks that it runs")
    args = ap.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("median_throughput: --device cuda needs a CUDA GPU")
        return 1
    shapes = [(1, 3, 40, 36)] if args.smoke else [(8, 3, 128, 128), (1, 3, 512, 512), (1, 3, 1080, 1920)]
    repeats = 2 if args.smoke else 10
    k = args.k
    print(f"median_filter k = {k}, float32, reflect, {args.device}: "
          f"{torch.cuda.get_device_name(0) if args.device == 'cuda' else 'CPU'}")
    print("| impl | shape | ms | Mpix/s |")
    print("|---|---|---:|---:|")
    for shape in shapes:
        x = torch.rand(shape, device=args.device)
        mpix = x.numel() / 1e6
        impls = [("derain_kernels", lambda: dk.median_filter(x, k))]
        if args.device == "cuda":  # the per-pixel selection the tiles replaced, for the A/B
            def per_pixel(x=x):
                with dk.config.override(gpu_tiles=False):
                    return dk.median_filter(x, k)
            impls.append(("derain_kernels per-pixel (gpu_tiles=False)", per_pixel))
        if x.numel() * k * k * 4 < 4e9:  # unfold holds k² copies of the image
            impls.append(("torch unfold+median", lambda: unfold_median(x, k)))
        for name, fn in impls:
            with torch.no_grad():
                ms = _time_ms(fn, args.device, repeats)
            print(f"| {name} | {'x'.join(map(str, shape))} | {ms:.3f} | {mpix / ms * 1e3:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

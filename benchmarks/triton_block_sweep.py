"""Launch-parameter sweep of the Triton block kernels on a CUDA GPU (none in CI).

A tuning tool for the kernels' defaults, not a benchmark: the block against cuDNN is timed by
`derain bench --device cuda --only block`, the cost of a call by `derain bench --only overhead`.

GPU time of CUDA-graph replays (triton.testing.do_bench_cudagraph, so host overhead does not
count) at 8x16x128^2 and 1x16x512^2, channels-last: the forward (two convolution launches) over
BLOCK x num_warps x float32 dot precision, and one weight gradient (`_weight_grads`, d = 3, masked)
over BLOCK x WG_STEPS x num_warps x precision; first the error of each precision against the
float64 kernels. The defaults in derain_kernels/triton/block.py come from its run on an H200
(benchmarks/results/gpu.md).

    python benchmarks/triton_block_sweep.py
"""
from __future__ import annotations

import itertools
import sys
import time

import torch


def main() -> int:
    if not torch.cuda.is_available():
        print("triton_block_sweep: needs a CUDA GPU (torch.cuda.is_available() is False)")
        return 1
    import torch.nn.functional as F
    from triton.testing import do_bench_cudagraph

    from derain_kernels import reference as ref
    from derain_kernels.triton import block as tb

    dev = "cuda"
    g = torch.Generator().manual_seed(0)
    p = [(torch.randn(16, 16, 3, 3, generator=g) * 0.1).to(dev), (torch.randn(16, generator=g) * 0.1).to(dev),
         (torch.randn(16, 16, 3, 3, generator=g) * 0.1).to(dev), (torch.randn(16, generator=g) * 0.1).to(dev)]
    pcl = [t.contiguous(memory_format=torch.channels_last) if t.dim() == 4 else t for t in p]
    shapes = [(8, 16, 128, 128), (1, 16, 512, 512)]
    xs = {s: (torch.rand(s, device=dev) - 0.3).contiguous(memory_format=torch.channels_last) for s in shapes}
    gs = {s: torch.randn(s, device=dev).contiguous(memory_format=torch.channels_last) for s in shapes}
    t0 = time.time()

    def us(f):
        try:
            return do_bench_cudagraph(f, rep=40) * 1e3
        except Exception:  # a configuration that does not compile or launch
            return float("nan")

    def eager(x, w1, b1, w3, b3, d=3):
        la = F.relu(F.conv2d(x, w1, b1, padding=1))
        return F.relu(F.conv2d(x - la, w3, b3, padding=d, dilation=d) + la)

    for s in shapes:
        print(f"eager (cuDNN) forward {s}: {us(lambda: eager(xs[s], *pcl)):.1f} us")
    defaults = (tb.BLOCK, tb.WG_STEPS, tb.CONV_WARPS, tb.WG_WARPS, tb.CONV_PRECISION, tb.WG_PRECISION)
    x = xs[shapes[0]]
    p64 = [t.double() for t in p]
    for prec in ("ieee", "tf32x3", "tf32"):
        tb.CONV_PRECISION = tb.WG_PRECISION = prec
        out = tb.self_correcting_block(x, *p, 3)
        want = ref.self_correcting_block(x.double(), *p64, 3)
        gr = torch.randn_like(out)
        got = tb.self_correcting_block_backward(gr, x, out, *p, 3)
        got64 = tb.self_correcting_block_backward(gr.double(), x.double(), out.double(), *p64, 3)
        err = ((out.double() - want).abs().max() / want.abs().max()).item()
        gerr = " ".join(f"{((a.double() - b).abs().max() / b.abs().max()).item():.1e}" for a, b in zip(got, got64))
        print(f"precision {prec}: forward max|err|/max {err:.2e}; gradients (x w1 b1 w3 b3) {gerr}")
    print(f"[{time.time() - t0:.0f} s] forward (two convolutions), GPU us at {shapes}")
    for prec, blk, nw in itertools.product(("ieee", "tf32x3"), (32, 64, 128, 256), (1, 2, 4, 8)):
        tb.CONV_PRECISION, tb.BLOCK, tb.CONV_WARPS = prec, blk, nw
        r = "  ".join(f"{us(lambda: tb.self_correcting_block(xs[s], *p, 3)):7.1f}" for s in shapes)
        print(f"conv {prec:6s} BLOCK {blk:3d} warps {nw}: {r}", flush=True)
    print(f"[{time.time() - t0:.0f} s] one weight gradient, GPU us at {shapes}")
    for prec, blk, steps, nw in itertools.product(("ieee", "tf32x3"), (64, 128), (4, 8, 16, 32), (2, 4, 8)):
        tb.WG_PRECISION, tb.BLOCK, tb.WG_STEPS, tb.WG_WARPS = prec, blk, steps, nw
        r = "  ".join(f"{us(lambda: tb._weight_grads(xs[s], gs[s], 3, mask=xs[s])):7.1f}" for s in shapes)
        print(f"wgrad {prec:6s} BLOCK {blk:3d} steps {steps:2d} warps {nw}: {r}", flush=True)
    tb.BLOCK, tb.WG_STEPS, tb.CONV_WARPS, tb.WG_WARPS, tb.CONV_PRECISION, tb.WG_PRECISION = defaults
    print(f"[{time.time() - t0:.0f} s] done")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Peak extra memory of one SSIM forward / forward+backward call: ours vs the peers.

    python benchmarks/ssim_memory.py [--threads N]

glibc keeps freed large blocks for reuse (its mmap threshold grows after each
free), which hides the temporaries of a call from the resident-set counter; this
script re-executes itself with MALLOC_MMAP_THRESHOLD_ fixed at 128 KiB, so every
large tensor is mapped on allocation and unmapped on free, and the peak resident
memory above the starting level (derain.bench.harness.peak_extra_mib) is the
peak of the live tensors the call allocated. Timings are in `derain bench --only ssim`.
"""
from __future__ import annotations

import argparse
import os
import sys

if os.environ.get("MALLOC_MMAP_THRESHOLD_") is None:
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="131072")
    os.execve(sys.executable, [sys.executable, *sys.argv], env)

import torch  # noqa: E402

import derain_kernels as dk  # noqa: E402
from derain.bench.harness import peak_extra_mib  # noqa: E402
from derain.bench.ssim import SHAPES, _peers  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    peers, missing = _peers()
    impls = {"derain_kernels": (dk.ssim, dk.ssim_loss), **{k: v[:2] for k, v in peers.items()}}
    print("| shape | impl | forward MiB | forward+backward MiB | fwd+bwd vs ours |")
    print("|---|---|---:|---:|---:|")
    for shape in SHAPES:
        x = torch.rand(shape)
        y = (x + 0.1 * torch.randn(shape)).clamp(0, 1)
        rows = {}
        for name, (f, loss) in impls.items():
            def fwd():
                return f(x, y)

            def fwd_bwd():
                a = x.detach().requires_grad_()
                loss(a, y).backward()
                return None  # the gradient is freed with `a`; it counts while it is live

            fwd(), fwd_bwd()  # warm up (lazy initialisation, kernels, windows)
            rows[name] = (min(peak_extra_mib(fwd) for _ in range(3)), min(peak_extra_mib(fwd_bwd) for _ in range(3)))
        ours = rows["derain_kernels"][1]
        for name, (mf, mb) in rows.items():
            ratio = "" if name == "derain_kernels" else f"{mb / max(ours, 1e-9):.1f}x"
            print(f"| {'x'.join(map(str, shape))} | {name} | {mf:.1f} | {mb:.1f} | {ratio} |")
    for m in missing:
        print(f"(skipped: {m})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

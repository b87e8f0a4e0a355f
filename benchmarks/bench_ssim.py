"""ssim_loss forward+backward (and ssim forward) vs pytorch_msssim, kornia, torchmetrics and separable torch.

Same contenders as `derain bench --only ssim` (derain/bench/ssim.py); group = mode and size.
"""
import pytest
import torch

import derain_kernels as dk
from derain.bench.ssim import _peers

SHAPES = {"train-8x3x128": (8, 3, 128, 128), "infer-1x3x512": (1, 3, 512, 512)}
PEERS, MISSING = _peers()
IMPLS = {"derain_kernels": (dk.ssim, dk.ssim_loss), **{k: v[:2] for k, v in PEERS.items()}}


def _pair(shape):
    x = torch.rand(shape)
    return x, (x + 0.1 * torch.randn(shape)).clamp(0, 1)


@pytest.mark.parametrize("size", SHAPES)
@pytest.mark.parametrize("impl", IMPLS)
def test_ssim_loss_fwd_bwd(benchmark, impl, size):
    benchmark.group = f"ssim_loss fwd+bwd {size}"
    x, y = _pair(SHAPES[size])
    loss = IMPLS[impl][1]

    def step():
        a = x.detach().requires_grad_()
        loss(a, y).backward()
        return a.grad

    assert torch.isfinite(benchmark(step)).all()


@pytest.mark.parametrize("size", SHAPES)
@pytest.mark.parametrize("impl", IMPLS)
def test_ssim_forward(benchmark, impl, size):
    benchmark.group = f"ssim fwd {size}"
    x, y = _pair(SHAPES[size])
    f = IMPLS[impl][0]
    out = benchmark(lambda: f(x, y))
    assert 0 < float(out) <= 1

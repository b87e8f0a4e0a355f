"""Bench cases of ssim / ssim_loss against pytorch_msssim, kornia, torchmetrics and plain separable torch.

Each contender computes its own default convention (ours: "zeros", the authors'
SSIM; pytorch_msssim: "valid"; kornia and torchmetrics: reflect "same"), all with
an 11-tap Gaussian window (σ 1.5) and data range 1, so every one does the same
work. forward+backward is the loss 1 - SSIM (kornia's ssim_loss is (1 - SSIM)/2)
backpropagated to the first image.
"""
from __future__ import annotations

import importlib.util

import torch
import torch.nn.functional as F

import derain_kernels as dk

from .harness import Case, Contender, on_device

SHAPES = [(8, 3, 128, 128), (1, 3, 512, 512)]


def _window(dtype=torch.float32) -> torch.Tensor:
    g = torch.exp(-((torch.arange(11, dtype=torch.float64) - 5) ** 2) / (2 * 1.5 ** 2))
    return (g / g.sum()).to(dtype)


def separable_torch_ssim(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The plain PyTorch way: the five maps stacked, two grouped 1-D convolutions (zero padding 5)."""
    c = x.shape[1]
    w = _window(x.dtype).to(x.device)
    stack = torch.cat([x, y, x * x, y * y, x * y], 1)
    blur = F.conv2d(stack, w.view(1, 1, 1, 11).expand(5 * c, 1, 1, 11), padding=(0, 5), groups=5 * c)
    blur = F.conv2d(blur, w.view(1, 1, 11, 1).expand(5 * c, 1, 11, 1), padding=(5, 0), groups=5 * c)
    mx, my, exx, eyy, exy = blur.split(c, 1)
    vx, vy, cxy = exx - mx * mx, eyy - my * my, exy - mx * my
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return s.mean()


def _fwd_bwd(loss):
    def make(x, y):
        def run():
            a = x.detach().requires_grad_()
            loss(a, y).backward()
        return run
    return make


def _peers():
    """name -> (forward fn, loss fn, note); and the list of missing peers."""
    peers, missing = {}, []
    if importlib.util.find_spec("pytorch_msssim"):
        import pytorch_msssim as pm
        peers["pytorch_msssim"] = (lambda a, b: pm.ssim(a, b, data_range=1.0),
                                   lambda a, b: 1 - pm.ssim(a, b, data_range=1.0), "valid")
    else:
        missing.append("pytorch_msssim not installed")
    if importlib.util.find_spec("kornia"):
        import kornia
        peers["kornia"] = (lambda a, b: kornia.metrics.ssim(a, b, 11, max_val=1.0).mean(),
                           lambda a, b: kornia.losses.ssim_loss(a, b, 11, max_val=1.0), "reflect; loss (1-SSIM)/2")
    else:
        missing.append("kornia not installed")
    if importlib.util.find_spec("torchmetrics"):
        from torchmetrics.functional.image import structural_similarity_index_measure as tm_ssim
        peers["torchmetrics"] = (lambda a, b: tm_ssim(a, b, data_range=1.0),
                                 lambda a, b: 1 - tm_ssim(a, b, data_range=1.0), "reflect")
    else:
        missing.append("torchmetrics not installed")
    peers["separable torch"] = (separable_torch_ssim, lambda a, b: 1 - separable_torch_ssim(a, b), "zeros")
    return peers, missing


SMOKE_SHAPES = [(2, 3, 24, 20)]
# On a GPU also a full-HD frame: the size at which the GPU goal (≥ 3× pytorch_msssim) is also set.
GPU_SHAPES = [(1, 3, 1080, 1920)]


def cases(quick: bool = False, smoke: bool = False, device: str = "cpu") -> list[Case]:
    """smoke: tiny images to check that every contender runs."""
    shapes = SMOKE_SHAPES if smoke else SHAPES + (GPU_SHAPES if device != "cpu" else [])
    return [case for shape in shapes for case in _cases_for(shape, device)]


def _cases_for(shape, device) -> list[Case]:
    s = "x".join(map(str, shape))
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(shape, generator=gen)
    y = (x + 0.1 * torch.randn(shape, generator=gen)).clamp(0, 1)
    x, y = x.to(device), y.to(device)
    peers, missing = _peers()
    fwd = [Contender("derain_kernels", lambda: (lambda: dk.ssim(x, y)), ours=True, note="zeros")]
    fb = [Contender("derain_kernels", lambda: _fwd_bwd(dk.ssim_loss)(x, y), ours=True, note="zeros")]
    for name, (f, loss, note) in peers.items():
        fwd.append(Contender(name, (lambda f=f: (lambda: f(x, y))), note=note))
        fb.append(Contender(name, (lambda loss=loss: _fwd_bwd(loss)(x, y)), note=note))
    return on_device([Case("ssim", "forward", s, fwd, list(missing)),
                      Case("ssim_loss", "forward+backward", s, fb, list(missing))], device)

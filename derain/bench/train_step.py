"""One training step of the two-stage distillation (docs/method.md#the-distillation-loop), ours vs the peers' ops.

Inputs (batch 8, 128×128): X rainy crop, Y_s its soft label (precomputed, outside the
timed step), C an unrelated clean crop. The timed step:
    R, Ŷ, R_e, Ŷ_e = model.forward_train(X); D = rain_composite(C, R_e.detach()); Ĉ = model(D)
    L = β(1 − SSIM(Ŷ_e, Y_s)) + α(1 − SSIM(Ĉ, C)); L.backward(); Adam step
"Ours": derain_kernels.rain_composite + derain_kernels.ssim_loss and the model as built
here (its blocks fused when derain_kernels has them); peers: torch add+clamp +
pytorch_msssim.ssim (or kornia.metrics.ssim) and the same model with plain-PyTorch
blocks (network.eager_network). SSIM padding conventions differ (ours "zeros" as the authors;
pytorch_msssim "valid"; kornia "same" reflect): the compute is the same class.
"""
from __future__ import annotations

import importlib.util

import torch
import torch.nn.functional as F

import derain_kernels as dk
from derain.models import RainOerMeNet

from .harness import Case, Contender
from .network import eager_network

OP = "distillation training step"
MODE = "fwd+bwd+Adam"
T = 1  # iteration index of the loss schedule (value irrelevant for timing)
BETA, ALPHA = 1000.0 / (1000.0 + T), T / 1000.0


def _model(channels_last: bool, device: str = "cpu", eager: bool = False) -> RainOerMeNet:
    torch.manual_seed(0)
    m = RainOerMeNet().train().to(device)
    if eager:
        m = eager_network(m)
    return m.to(memory_format=torch.channels_last) if channels_last else m


def make_step(ssim_loss, composite, channels_last: bool, X, Ys, C, eager: bool = False):
    """A zero-argument callable doing one full training step; returns the loss.
    `eager`: the network's blocks in plain PyTorch (network.eager_network) instead of the model's."""
    model = _model(channels_last, X.device.type, eager)
    opt = torch.optim.Adam(model.parameters(), lr=2e-4, betas=(0.5, 0.999))
    if channels_last:
        X, Ys, C = (t.contiguous(memory_format=torch.channels_last) for t in (X, Ys, C))

    def step():
        opt.zero_grad(set_to_none=True)
        _, _, r_e, y_e = model.forward_train(X)
        d = composite(C, r_e.detach())
        c_hat = model(d)
        loss = BETA * ssim_loss(y_e, Ys) + ALPHA * ssim_loss(c_hat, C)
        loss.backward()
        opt.step()
        return loss.detach()
    return step


def _torch_composite(c, r):
    return (c + r).clamp(0, 1)


def cases(quick: bool = False, smoke: bool = False, devices: list[str] | None = None) -> list[Case]:
    """One Case per device (CPU, and CUDA when torch sees one)."""
    if devices is None:
        devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    return [_case(device, smoke) for device in devices]


def _case(device: str, smoke: bool) -> Case:
    shape = (2, 3, 32, 32) if smoke else (8, 3, 128, 128)
    gen = torch.Generator().manual_seed(0)
    X = torch.rand(shape, generator=gen).to(device)
    C = torch.rand(shape, generator=gen).to(device)
    Ys = F.avg_pool2d(X, 5, stride=1, padding=2, count_include_pad=False)  # a stand-in soft label
    case = Case(OP, MODE, "x".join(map(str, shape)), missing=[])

    def contender(name, loss_fn, composite, channels_last, ours=False, note=""):
        return Contender(name, lambda: make_step(loss_fn, composite, channels_last, X, Ys, C, eager=not ours),
                         ours=ours, note=note, device=device)

    if hasattr(dk, "ssim_loss"):
        case.contenders.append(contender("ours: derain_kernels, channels-last", lambda a, b: dk.ssim_loss(a, b),
                                         dk.rain_composite, True, ours=True))
    else:
        case.missing.append("ours: derain_kernels.ssim_loss not available in this build")
    if importlib.util.find_spec("pytorch_msssim"):
        from pytorch_msssim import ssim as ms_ssim

        def ms_loss(a, b):
            return 1 - ms_ssim(a, b, data_range=1.0, size_average=True, win_size=11, win_sigma=1.5)
        case.contenders.append(contender("pytorch_msssim, channels-last", ms_loss, _torch_composite, True))
        case.contenders.append(contender("pytorch_msssim, contiguous", ms_loss, _torch_composite, False))
    else:
        case.missing.append("pytorch_msssim not installed")
    if importlib.util.find_spec("kornia"):
        import kornia

        def kornia_loss(a, b):
            return 1 - kornia.metrics.ssim(a, b, 11, max_val=1.0).mean()
        case.contenders.append(contender("kornia, channels-last", kornia_loss, _torch_composite, True))
    else:
        case.missing.append("kornia not installed")
    return case

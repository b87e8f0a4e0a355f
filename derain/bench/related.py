"""Bench cases of the related methods' ops against the eager versions written as in the papers' code.

- dark channel (SSID-KD): min over channels, then -max_pool2d(-·) on a reflect-padded map
  (the papers' "maxpool" formulation), and unfold + min;
- TV (SSID-KD Eq. 11, UDRDR L_TV): torch.diff, abs, mean per direction, summed;
- rain direction (UDRDR Eq. 5): two depthwise conv2d per input (k∥ and k⊥, per-image
  kernels through groups = B·C), F.l1_loss of each pair, summed.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

import derain_kernels as dk

from .harness import Case, Contender, on_device

SHAPES = [(8, 3, 128, 128), (1, 3, 512, 512)]
PATCHES = (15, 61)


def eager_dark_channel_maxpool(x: torch.Tensor, patch: int) -> torch.Tensor:
    m = x.min(1, keepdim=True).values
    r = patch // 2
    return -F.max_pool2d(-F.pad(m, (r, r, r, r), mode="reflect"), patch, stride=1)


def eager_dark_channel_unfold(x: torch.Tensor, patch: int) -> torch.Tensor:
    B, C, H, W = x.shape
    r = patch // 2
    xp = F.pad(x, (r, r, r, r), mode="reflect")
    return F.unfold(xp, patch).amin(1).view(B, 1, H, W)


def eager_tv(x: torch.Tensor) -> torch.Tensor:
    return torch.diff(x, dim=-2).abs().mean() + torch.diff(x, dim=-1).abs().mean()


def eager_rain_direction(z: torch.Tensor, z_gt: torch.Tensor, angle: torch.Tensor) -> torch.Tensor:
    B, C, H, W = z.shape
    bank = dk.directional_kernels(dtype=z.dtype, device=z.device)
    par = torch.round(torch.remainder(angle, 180) / 10).long() % 18
    loss = 0
    for idx in (par, (par + 9) % 18):
        w = bank[idx][:, None].expand(B, C, 5, 5).reshape(B * C, 1, 5, 5)
        rz = F.conv2d(z.reshape(1, B * C, H, W), w, padding=2, groups=B * C)
        rg = F.conv2d(z_gt.reshape(1, B * C, H, W), w, padding=2, groups=B * C)
        loss = loss + F.l1_loss(rz, rg)
    return loss


def _fwd_bwd(f, *inputs, grad_of=1):
    def run():
        xs = [t.detach().requires_grad_(i < grad_of) for i, t in enumerate(inputs)]
        f(*xs).sum().backward()
    return run


SMOKE_SHAPES = [(2, 3, 24, 20)]


def cases(quick: bool = False, smoke: bool = False, device: str = "cpu") -> list[Case]:
    """smoke: tiny images to check that every contender runs."""
    return [case for shape in (SMOKE_SHAPES if smoke else SHAPES) for case in _cases_for(shape, quick, device)]


def _cases_for(shape, quick, device) -> list[Case]:
    out = []
    s = "x".join(map(str, shape))
    x = torch.rand(shape).to(device)
    z, zg = (torch.rand(shape) * 0.3).to(device), (torch.rand(shape) * 0.3).to(device)
    angle = (torch.rand(shape[0]) * 180).to(device)
    for patch in PATCHES[:1] if quick else PATCHES:
        dc = lambda t, p=patch: dk.dark_channel(t, p)  # noqa: E731
        mp = lambda t, p=patch: eager_dark_channel_maxpool(t, p)  # noqa: E731
        uf = lambda t, p=patch: eager_dark_channel_unfold(t, p)  # noqa: E731
        fwd = [Contender("derain_kernels", lambda f=dc: (lambda: f(x)), ours=True),
               Contender("eager maxpool", lambda f=mp: (lambda: f(x)), note="reflect pad + -max_pool2d(-min_c)")]
        missing = []
        if patch <= 15:
            fwd.append(Contender("eager unfold-min", lambda f=uf: (lambda: f(x)), note="reflect pad + unfold + amin"))
        else:
            missing.append(f"eager unfold-min: skipped at patch {patch} (needs C·patch²·H·W floats)")
        out.append(Case(f"dark_channel p={patch}", "forward", s, fwd, missing))
        out.append(Case(f"dark_channel_loss p={patch}", "forward+backward", s, [
            Contender("derain_kernels", lambda p=patch: _fwd_bwd(lambda t: dk.dark_channel_loss(t, p), x), ours=True),
            Contender("eager maxpool", lambda p=patch: _fwd_bwd(lambda t: eager_dark_channel_maxpool(t, p).abs().mean(), x)),
        ], list(missing)))
    out.append(Case("tv_loss", "forward", s, [
        Contender("derain_kernels", lambda: (lambda: dk.tv_loss(x)), ours=True),
        Contender("eager torch.diff", lambda: (lambda: eager_tv(x))),
    ]))
    out.append(Case("tv_loss", "forward+backward", s, [
        Contender("derain_kernels", lambda: _fwd_bwd(dk.tv_loss, x), ours=True),
        Contender("eager torch.diff", lambda: _fwd_bwd(eager_tv, x)),
    ]))
    out.append(Case("rain_direction_loss", "forward", s, [
        Contender("derain_kernels", lambda: (lambda: dk.rain_direction_loss(z, zg, angle)), ours=True),
        Contender("eager conv2d+L1", lambda: (lambda: eager_rain_direction(z, zg, angle)),
                  note="2 kernels x 2 inputs, depthwise conv2d"),
    ]))
    out.append(Case("rain_direction_loss", "forward+backward", s, [
        Contender("derain_kernels", lambda: _fwd_bwd(lambda a, b: dk.rain_direction_loss(a, b, angle), z, zg, grad_of=2),
                  ours=True),
        Contender("eager conv2d+L1", lambda: _fwd_bwd(lambda a, b: eager_rain_direction(a, b, angle), z, zg, grad_of=2)),
    ]))
    return on_device(out, device)

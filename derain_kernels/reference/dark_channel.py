"""Pure-PyTorch reference of the dark channel (the test oracle): explicit windows, exact ties."""
from __future__ import annotations

import math

import torch

from .._contracts import effective_patch


def mirror_index(i: torch.Tensor, n: int) -> torch.Tensor:
    """Periodic mirror (scipy 'mirror', torch 'reflect' repeated) of integer positions into [0, n)."""
    if n == 1:
        return torch.zeros_like(i)
    period = 2 * (n - 1)
    i = torch.remainder(i, period)
    return torch.where(i >= n, period - i, i)


def dark_channel_with_index(x: torch.Tensor, patch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(D, code) of x (B, C, H, W): D (B, 1, H, W); code = channel * H * W + row * W + col of the selected element.

    Windows are patch x patch, centred, over the periodic mirror extension; elements ordered
    by (value, code) with NaN before every number. Differentiable (gradient to the selected element).
    """
    B, C, H, W = x.shape
    r = patch // 2
    dev = x.device
    iy = mirror_index(torch.arange(-r, H + r, device=dev), H)
    ix = mirror_index(torch.arange(-r, W + r, device=dev), W)
    xe = x[:, :, iy][:, :, :, ix]  # (B, C, H + 2r, W + 2r)
    chan = torch.arange(C, device=dev).view(C, 1, 1)
    codes = ((iy.view(-1, 1) * W + ix.view(1, -1)).unsqueeze(0) + chan * (H * W)).to(torch.float64)
    vals = torch.nn.functional.unfold(xe, patch)  # (B, C * p * p, H * W)
    cods = torch.nn.functional.unfold(codes.unsqueeze(0), patch).long()  # (1, C * p * p, H * W)
    cods = cods.expand(B, -1, -1)
    vmin = vals.detach().amin(dim=1, keepdim=True)
    tie = (vals.detach() == vmin) | (torch.isnan(vals.detach()) & torch.isnan(vmin))
    big = torch.iinfo(torch.int64).max
    code = torch.where(tie, cods, torch.full_like(cods, big)).amin(dim=1, keepdim=True)
    pos = (cods == code).long().argmax(dim=1, keepdim=True)
    out = vals.gather(1, pos).view(B, 1, H, W)
    return out, code.view(B, 1, H, W)


def dark_channel(x: torch.Tensor, patch: int) -> torch.Tensor:
    """Dark channel of (..., C, H, W) -> (..., 1, H, W); see derain_kernels.dark_channel.

    A patch of 2·max(H, W) − 1 or more covers the whole periodic extension: it runs as that
    patch (the same result; see derain_kernels._contracts.effective_patch).
    """
    lead = x.shape[:-3]
    C, H, W = x.shape[-3:]
    patch = effective_patch(patch, H, W)
    if x.numel() == 0 and C > 0:  # an empty input has an empty dark channel
        return x.new_zeros(*lead, 1, H, W) + 0 * x.sum()
    out, _ = dark_channel_with_index(x.reshape(math.prod(lead), C, H, W), patch)
    return out.view(*lead, 1, H, W)


def dark_channel_loss(x: torch.Tensor, patch: int, reduction: str = "mean") -> torch.Tensor:
    """L1 distance of the dark channel to 0: mean / sum of |D(x)|, or per image (shape x.shape[:-3])."""
    d = dark_channel(x, patch).abs()
    if reduction == "mean":
        return d.mean()
    if reduction == "sum":
        return d.sum()
    return d.flatten(-3).mean(-1)

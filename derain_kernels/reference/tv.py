"""Pure-PyTorch reference of the total-variation loss (the test oracle)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .._contracts import as_images, tv_counts


def sign_keep_nan(d: torch.Tensor) -> torch.Tensor:
    """sign(d) with sign(0) = 0 and sign(NaN) = NaN (torch.sign maps NaN to 0)."""
    return torch.where(torch.isnan(d), d, torch.sign(d))


def abs_keep_nan(d: torch.Tensor) -> torch.Tensor:
    """|d| whose gradient is sign_keep_nan(d): a NaN difference passes NaN to its inputs."""
    return d * sign_keep_nan(d.detach())


def tv_sums(x: torch.Tensor, p: int = 1, padding: str = "valid") -> torch.Tensor:
    """(N, 2) per-image sums over (C, H, W) of |vertical difference|^p and |horizontal difference|^p.

    padding "zeros": the image has a zero row above it and a zero column to its left, so the
    first row and the first column are differences against 0 as well.
    """
    x4 = as_images(x)
    if padding == "zeros":
        x4 = F.pad(x4, (1, 0, 1, 0))
        dv = x4[..., 1:, 1:] - x4[..., :-1, 1:]
        dh = x4[..., 1:, 1:] - x4[..., 1:, :-1]
    else:
        dv = x4[..., 1:, :] - x4[..., :-1, :]
        dh = x4[..., :, 1:] - x4[..., :, :-1]
    phi = abs_keep_nan if p == 1 else (lambda d: d.square())
    return torch.stack([phi(dv).sum((1, 2, 3)), phi(dh).sum((1, 2, 3))], dim=1)


def tv_loss(x: torch.Tensor, reduction: str = "mean", p: int = 1, padding: str = "valid") -> torch.Tensor:
    """See derain_kernels.tv_loss. Means over no differences are NaN (like torch.mean)."""
    s = tv_sums(x, p, padding)
    nv, nh = tv_counts(x.shape, padding)
    if reduction == "sum":
        return s.sum()
    if reduction == "mean":
        n = s.shape[0]
        return s[:, 0].sum() / (n * nv) + s[:, 1].sum() / (n * nh)
    return (s[:, 0] / nv + s[:, 1] / nh).reshape(x.shape[:-3])

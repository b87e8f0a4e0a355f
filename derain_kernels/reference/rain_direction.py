"""Pure-PyTorch reference of the rain-direction regularizer (the test oracle), as UDRDR writes it."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def rain_direction_sums(z: torch.Tensor, z_gt: torch.Tensor, kernels: torch.Tensor) -> torch.Tensor:
    """(B, M): per image and kernel, sum over (C, H, W) of |k ⋆ z - k ⋆ z_gt| (depthwise conv2d, zero padding K//2)."""
    B, C, H, W = z.shape
    M, K = kernels.shape[1], kernels.shape[-1]
    weight = kernels[:, None].expand(B, C, M, K, K).reshape(B * C * M, 1, K, K).to(z.dtype)
    rz = F.conv2d(z.reshape(1, B * C, H, W), weight, padding=K // 2, groups=B * C)
    rg = F.conv2d(z_gt.reshape(1, B * C, H, W), weight, padding=K // 2, groups=B * C)
    return (rz - rg).abs().view(B, C, M, H, W).sum((1, 3, 4))


def rain_direction_loss(z, z_gt, angle, reduction: str = "mean", n: int = 18, size: int = 5) -> torch.Tensor:
    """See derain_kernels.rain_direction_loss (same kernel choice, reference arithmetic)."""
    from ..ops.rain_direction import select_kernels

    B, C, H, W = z.shape
    kernels = select_kernels(angle, B, n, size, z.dtype, z.device)
    s = rain_direction_sums(z, z_gt, kernels)
    if reduction == "sum":
        return s.sum()
    if reduction == "mean":
        return s.sum() / z.numel() if z.numel() else s.sum()
    return s.sum(1) / (C * H * W) if C * H * W else s.sum(1)

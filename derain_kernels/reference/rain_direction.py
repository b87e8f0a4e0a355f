"""Pure-PyTorch reference of the rain-direction regularizer (the test oracle).

UDRDR writes each term as L1(k ⋆ z − k ⋆ z_gt) with two depthwise conv2d; by linearity that
is |k ⋆ (z − z_gt)|, which is what the op defines (and the fused kernels compute): the
response at a pixel is the sum over the kernel's non-zero taps of k·d, d = z − z_gt, zero
outside the image. The two readings differ only for non-finite inputs: in a conv2d a zero
tap times an infinity is NaN, while here a tap that is not in the kernel reads nothing.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .._contracts import select_kernels
from .tv import abs_keep_nan


def rain_direction_sums(z: torch.Tensor, z_gt: torch.Tensor, kernels: torch.Tensor) -> torch.Tensor:
    """(B, M): per image and kernel, sum over (C, H, W) of |k ⋆ (z − z_gt)|.

    Cross-correlation over the non-zero taps of k (depthwise, zero padding K // 2, "same"
    size); the gradient of |·| is sign(·) with sign(0) = 0 and sign(NaN) = NaN.
    """
    B, C, H, W = z.shape
    M, K = kernels.shape[1], kernels.shape[-1]
    r = K // 2
    d = F.pad(z - z_gt, (r, r, r, r))  # (B, C, H + 2r, W + 2r)
    k = kernels.to(z.dtype)
    resp = z.new_zeros(B, M, C, H, W)
    for i in range(K):
        for j in range(K):
            w = k[:, :, i, j].reshape(B, M, 1, 1, 1)
            shifted = d[:, None, :, i:i + H, j:j + W]
            resp = resp + torch.where(w != 0, w * shifted, torch.zeros((), dtype=z.dtype, device=z.device))
    return abs_keep_nan(resp).sum((2, 3, 4))


def rain_direction_loss(z, z_gt, angle, reduction: str = "mean", n: int = 18, size: int = 5) -> torch.Tensor:
    """See derain_kernels.rain_direction_loss (same kernel choice, reference arithmetic)."""
    B, C, H, W = z.shape
    kernels = select_kernels(angle, B, n, size, z.dtype, z.device)
    s = rain_direction_sums(z, z_gt, kernels)
    if reduction == "sum":
        return s.sum()
    if reduction == "mean":
        return s.sum() / z.numel()
    return s.sum(1) / (C * H * W)

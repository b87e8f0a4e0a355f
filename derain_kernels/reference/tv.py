"""Pure-PyTorch reference of the total-variation loss (the test oracle)."""
from __future__ import annotations

import torch


def tv_sums(x: torch.Tensor, p: int = 1) -> torch.Tensor:
    """(N, 2) per-image sums over (C, H, W) of |vertical difference|^p and |horizontal difference|^p."""
    x4 = x.reshape(-1, *x.shape[-3:]) if x.dim() >= 3 else x.reshape(1, 1, *x.shape)
    dv = x4[..., 1:, :] - x4[..., :-1, :]
    dh = x4[..., :, 1:] - x4[..., :, :-1]
    phi = (lambda d: d.abs()) if p == 1 else (lambda d: d.square())
    return torch.stack([phi(dv).sum((1, 2, 3)), phi(dh).sum((1, 2, 3))], dim=1)


def tv_loss(x: torch.Tensor, reduction: str = "mean", p: int = 1) -> torch.Tensor:
    """See derain_kernels.tv_loss."""
    H, W = x.shape[-2:]
    C = x.shape[-3] if x.dim() >= 3 else 1
    s = tv_sums(x, p)
    nv, nh = C * (H - 1) * W, C * H * (W - 1)
    if reduction == "sum":
        return s.sum()
    if reduction == "mean":
        n = s.shape[0]
        mv = s[:, 0].sum() / (n * nv) if n * nv > 0 else s.new_zeros(())
        mh = s[:, 1].sum() / (n * nh) if n * nh > 0 else s.new_zeros(())
        return mv + mh
    per = (s[:, 0] / nv if nv > 0 else s[:, 0] * 0) + (s[:, 1] / nh if nh > 0 else s[:, 1] * 0)
    return per.view(x.shape[:-3])

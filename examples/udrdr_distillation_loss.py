"""UDRDR-style objective (Liu et al., ICCV 2021, §3) built from derain_kernels ops.

    L = L_content + 1.2 · L_direction + L_recons + 0.001 · L_TV + 0.01 · L_cycle + L_distill
    L_direction = Σ_{k ∈ {k∥, k⊥}} L1(k ⊗ z_syn − k ⊗ z_gt)       (Eq. 5, per-image angles)
    x_ref = y_gt + z_real                                         (Eq. 9)
    L_distill = L1(F3(x_real) − y_real) + 10 · L1(F3(x_ref) − y_gt) (Eq. 10)

`rain_direction_loss` replaces the two depthwise convolutions per kernel and input (checked
below against them), `tv_loss` the TV term, `rain_composite(..., clamp=False)` Eq. 9.

Runs in seconds on random tensors:  python examples/udrdr_distillation_loss.py
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

import derain_kernels as dk


def tiny_net(out_act=None, width: int = 8) -> nn.Module:
    """Stand-in for UDRDR's EDSR networks F1, F2, F3."""
    layers = [nn.Conv2d(3, width, 3, padding=1), nn.ReLU(), nn.Conv2d(width, 3, 3, padding=1)]
    return nn.Sequential(*layers, *([out_act] if out_act else []))


def papers_direction_term(z, z_gt, par: int, perp: int) -> torch.Tensor:
    """Eq. 5 as the paper's code writes it: conv2d per kernel and input, then L1 (one angle for the batch)."""
    bank = dk.directional_kernels(dtype=z.dtype)
    C = z.shape[1]
    loss = 0
    for idx in (par, perp):
        w = bank[idx].expand(C, 1, 5, 5)
        loss = loss + F.l1_loss(F.conv2d(z, w, padding=2, groups=C), F.conv2d(z_gt, w, padding=2, groups=C))
    return loss


def udrdr_loss(F1, F2, F3, x_syn, z_gt, y_gt, x_real, angle) -> torch.Tensor:
    z_syn, z_real = F1(x_syn), F1(x_real)  # rain maps (Eq. 2-3)
    y_syn, y_real = F2(x_syn - z_syn), F2(x_real - z_real)  # derained (Eq. 6-7)
    content = F.l1_loss(z_syn, z_gt)  # Eq. 4
    direction = dk.rain_direction_loss(z_syn, z_gt, angle)  # Eq. 5, angle (B,) in degrees
    recons = F.l1_loss(y_syn, y_gt)  # Eq. 8
    tv = dk.tv_loss(y_real)
    cycle = F.l1_loss(y_real + z_real, x_real)
    x_ref = dk.rain_composite(y_gt, z_real.detach(), clamp=False)  # Eq. 9
    distill = F.l1_loss(F3(x_real), y_real.detach()) + 10 * F.l1_loss(F3(x_ref), y_gt)  # Eq. 10
    return content + 1.2 * direction + recons + 0.001 * tv + 0.01 * cycle + distill


def main(size: int = 64, batch: int = 2, steps: int = 2) -> float:
    torch.manual_seed(0)
    F1, F2, F3 = tiny_net(nn.Tanh()), tiny_net(), tiny_net()
    params = [p for m in (F1, F2, F3) for p in m.parameters()]
    opt = torch.optim.Adam(params, lr=8e-4, eps=1e-4)
    y_gt = torch.rand(batch, 3, size, size)
    z_gt = torch.rand(batch, 3, size, size) * 0.3
    x_syn, x_real = (y_gt + z_gt).clamp(0, 1), torch.rand(batch, 3, size, size)
    angle = torch.tensor([20.0, 110.0])[:batch] if batch <= 2 else torch.rand(batch) * 180
    with torch.no_grad():  # the drop-in computes the paper's term exactly
        z = F1(x_syn)
        ours = dk.rain_direction_loss(z, z_gt, 20.0)
        torch.testing.assert_close(ours, papers_direction_term(z, z_gt, 2, 11), rtol=1e-5, atol=1e-7)
    for step in range(steps):
        loss = udrdr_loss(F1, F2, F3, x_syn, z_gt, y_gt, x_real, angle)
        opt.zero_grad()
        loss.backward()
        opt.step()
        print(f"step {step}: UDRDR loss {loss.item():.5f}")
    return loss.item()


if __name__ == "__main__":
    main()

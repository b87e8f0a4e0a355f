"""Triton kernels of the rain-direction sums (UDRDR regularizer), forward and backward.

Same semantics as csrc/ops/cpu/rain_direction_kernel.cpp: d = z - z_gt is formed in the
loads (k ⋆ z - k ⋆ z_gt = k ⋆ d), every kernel of the image in one program. Forward:
partial sums per (plane, block, kernel), added with torch. Backward: one pass writes
g[b, m] * sign(k_m ⋆ d) for every kernel, a second correlates it back with the kernels.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from .._layout import empty_like_layout

BLOCK = 256


@triton.jit
def _response(z_ptr, zg_ptr, k_ptr, plane_base, kbase, y, xx, H, W, mask, K: tl.constexpr):
    r = K // 2
    acc = tl.zeros_like(tl.load(z_ptr + plane_base + y * W + xx, mask=mask, other=0.0))
    for i in tl.static_range(K):
        for j in tl.static_range(K):
            w = tl.load(k_ptr + kbase + i * K + j)
            yy = y + (i - r)
            xj = xx + (j - r)
            m = mask & (yy >= 0) & (yy < H) & (xj >= 0) & (xj < W)
            off = plane_base + yy * W + xj
            d = tl.load(z_ptr + off, mask=m, other=0.0) - tl.load(zg_ptr + off, mask=m, other=0.0)
            acc += w * d
    return acc


@triton.jit
def _rd_fwd(z_ptr, zg_ptr, k_ptr, part_ptr, C, H, W, M, nblk, K: tl.constexpr, BLOCK: tl.constexpr):
    plane = tl.program_id(0)  # b * C + c
    blk = tl.program_id(1)
    b = plane // C
    offs = blk * BLOCK + tl.arange(0, BLOCK)
    mask = offs < H * W
    y = offs // W
    xx = offs % W
    plane_base = plane.to(tl.int64) * H * W
    for m in range(M):
        acc = _response(z_ptr, zg_ptr, k_ptr, plane_base, (b * M + m) * K * K, y, xx, H, W, mask, K)
        acc = tl.where(mask, tl.abs(acc), 0.0)
        tl.store(part_ptr + (plane * nblk + blk) * M + m, tl.sum(acc, axis=0))


@triton.jit
def _rd_signs(z_ptr, zg_ptr, k_ptr, g_ptr, s_ptr, C, H, W, M, K: tl.constexpr, BLOCK: tl.constexpr):
    plane = tl.program_id(0)
    blk = tl.program_id(1)
    b = plane // C
    offs = blk * BLOCK + tl.arange(0, BLOCK)
    mask = offs < H * W
    y = offs // W
    xx = offs % W
    plane_base = plane.to(tl.int64) * H * W
    for m in range(M):
        acc = _response(z_ptr, zg_ptr, k_ptr, plane_base, (b * M + m) * K * K, y, xx, H, W, mask, K)
        sgn = tl.where(acc > 0, 1.0, tl.where(acc < 0, -1.0, acc))
        gm = tl.load(g_ptr + b * M + m)
        tl.store(s_ptr + (plane.to(tl.int64) * M + m) * H * W + offs, (gm * sgn).to(acc.dtype), mask=mask)


@triton.jit
def _rd_bwd(s_ptr, k_ptr, gz_ptr, C, H, W, M, K: tl.constexpr, BLOCK: tl.constexpr):
    plane = tl.program_id(0)
    blk = tl.program_id(1)
    b = plane // C
    offs = blk * BLOCK + tl.arange(0, BLOCK)
    mask = offs < H * W
    y = offs // W
    xx = offs % W
    r = K // 2
    acc = tl.zeros_like(tl.load(s_ptr + plane.to(tl.int64) * M * H * W + offs, mask=mask, other=0.0))
    for m in range(M):
        sbase = (plane.to(tl.int64) * M + m) * H * W
        kbase = (b * M + m) * K * K
        for i in tl.static_range(K):
            for j in tl.static_range(K):
                w = tl.load(k_ptr + kbase + i * K + j)
                yy = y - (i - r)
                xj = xx - (j - r)
                mm = mask & (yy >= 0) & (yy < H) & (xj >= 0) & (xj < W)
                acc += w * tl.load(s_ptr + sbase + yy * W + xj, mask=mm, other=0.0)
    tl.store(gz_ptr + plane.to(tl.int64) * H * W + offs, acc, mask=mask)


def rain_direction_sums(z: torch.Tensor, z_gt: torch.Tensor, kernels: torch.Tensor) -> torch.Tensor:
    B, C, H, W = z.shape
    M, K = kernels.shape[1], kernels.shape[-1]
    if z.numel() == 0 or M == 0:
        return torch.zeros(B, M, dtype=z.dtype, device=z.device)
    nblk = triton.cdiv(H * W, BLOCK)
    part = torch.empty(B * C, nblk, M, dtype=z.dtype, device=z.device)
    _rd_fwd[(B * C, nblk)](z.contiguous(), z_gt.contiguous(), kernels.contiguous(), part, C, H, W, M, nblk,
                           K=K, BLOCK=BLOCK)
    return part.view(B, C * nblk, M).sum(1)


def rain_direction_sums_backward(grad: torch.Tensor, z: torch.Tensor, z_gt: torch.Tensor,
                                 kernels: torch.Tensor) -> torch.Tensor:
    out = empty_like_layout(z)
    B, C, H, W = z.shape
    M, K = kernels.shape[1], kernels.shape[-1]
    if z.numel() == 0:
        return out
    if M == 0:
        return out.zero_()
    kc = kernels.contiguous()
    signs = torch.empty(B * C, M, H, W, dtype=z.dtype, device=z.device)
    grid = (B * C, triton.cdiv(H * W, BLOCK))
    _rd_signs[grid](z.contiguous(), z_gt.contiguous(), kc, grad.contiguous(), signs, C, H, W, M, K=K, BLOCK=BLOCK)
    gz = out if out.is_contiguous() else torch.empty(z.shape, dtype=z.dtype, device=z.device)
    _rd_bwd[grid](signs, kc, gz, C, H, W, M, K=K, BLOCK=BLOCK)
    if gz is not out:
        out.copy_(gz)
    return out

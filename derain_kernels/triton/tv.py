"""Triton kernels of the total-variation sums (forward and backward).

Same semantics as csrc/ops/cpu/tv_kernel.cpp (padding "valid" and "zeros"). The
forward writes one partial sum per (image, block) program and adds them with torch
(deterministic, no atomics).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from .._layout import empty_like_layout

BLOCK = 1024


@triton.jit
def _tv_fwd(x_ptr, part_ptr, CHW, H, W, nblk, P2: tl.constexpr, ZEROS: tl.constexpr, IS_F64: tl.constexpr,
            BLOCK: tl.constexpr):
    # element (y, x) carries the differences to its lower and right neighbours, and with
    # padding "zeros" (ZEROS) the first row / column also the one to the zero border
    n = tl.program_id(0)
    blk = tl.program_id(1)
    offs = blk * BLOCK + tl.arange(0, BLOCK)
    mask = offs < CHW
    base = x_ptr + n.to(tl.int64) * CHW
    y = (offs // W) % H
    xx = offs % W
    v = tl.load(base + offs, mask=mask, other=0.0)
    mv = mask & (y + 1 < H)
    mh = mask & (xx + 1 < W)
    dv = tl.load(base + offs + W, mask=mv, other=0.0) - v
    dh = tl.load(base + offs + 1, mask=mh, other=0.0) - v
    dv = tl.where(mv, dv, tl.zeros_like(dv))
    dh = tl.where(mh, dh, tl.zeros_like(dh))
    if ZEROS:
        bv = tl.where(mask & (y == 0), v, tl.zeros_like(v))
        bh = tl.where(mask & (xx == 0), v, tl.zeros_like(v))
    if not IS_F64:
        dv = dv.to(tl.float32)
        dh = dh.to(tl.float32)
    if P2:
        fv = dv * dv
        fh = dh * dh
    else:
        fv = tl.abs(dv)
        fh = tl.abs(dh)
    if ZEROS:
        if not IS_F64:
            bv = bv.to(tl.float32)
            bh = bh.to(tl.float32)
        if P2:
            fv += bv * bv
            fh += bh * bh
        else:
            fv += tl.abs(bv)
            fh += tl.abs(bh)
    out = part_ptr + (n * nblk + blk) * 2
    tl.store(out, tl.sum(fv, axis=0))
    tl.store(out + 1, tl.sum(fh, axis=0))


@triton.jit
def _dphi(d, P2: tl.constexpr):
    if P2:
        r = 2.0 * d
    else:
        # sign with sign(0) = 0 and NaN kept
        r = tl.where(d > 0, 1.0, tl.where(d < 0, -1.0, d))
    return r


@triton.jit
def _tv_bwd(g_ptr, x_ptr, gx_ptr, total, CHW, H, W, P2: tl.constexpr, ZEROS: tl.constexpr, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < total
    n = offs // CHW
    y = (offs // W) % H
    xx = offs % W
    gv = tl.load(g_ptr + 2 * n, mask=mask, other=0.0)
    gh = tl.load(g_ptr + 2 * n + 1, mask=mask, other=0.0)
    v = tl.load(x_ptr + offs, mask=mask, other=0.0)
    acc = tl.zeros_like(v)
    m = mask & (y > 0)
    acc += tl.where(m, gv * _dphi(v - tl.load(x_ptr + offs - W, mask=m, other=0.0), P2), 0.0)
    m = mask & (y + 1 < H)
    acc -= tl.where(m, gv * _dphi(tl.load(x_ptr + offs + W, mask=m, other=0.0) - v, P2), 0.0)
    m = mask & (xx > 0)
    acc += tl.where(m, gh * _dphi(v - tl.load(x_ptr + offs - 1, mask=m, other=0.0), P2), 0.0)
    m = mask & (xx + 1 < W)
    acc -= tl.where(m, gh * _dphi(tl.load(x_ptr + offs + 1, mask=m, other=0.0) - v, P2), 0.0)
    if ZEROS:  # the first row / column against the zero border: d = v - 0
        acc += tl.where(mask & (y == 0), gv * _dphi(v, P2), 0.0)
        acc += tl.where(mask & (xx == 0), gh * _dphi(v, P2), 0.0)
    tl.store(gx_ptr + offs, acc.to(v.dtype), mask=mask)


def tv_sums(x: torch.Tensor, p: int, padding: str = "valid") -> torch.Tensor:
    N, C, H, W = x.shape
    chw = C * H * W
    if x.numel() == 0:
        return torch.zeros(N, 2, dtype=x.dtype, device=x.device)
    xc = x.contiguous()
    nblk = triton.cdiv(chw, BLOCK)
    acc_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    part = torch.empty(N, nblk, 2, dtype=acc_dtype, device=x.device)
    _tv_fwd[(N, nblk)](xc, part, chw, H, W, nblk, P2=p == 2, ZEROS=padding == "zeros",
                       IS_F64=x.dtype == torch.float64, BLOCK=BLOCK)
    return part.sum(1).to(x.dtype)


def tv_sums_backward(grad: torch.Tensor, x: torch.Tensor, p: int, padding: str = "valid") -> torch.Tensor:
    out = empty_like_layout(x)
    N, C, H, W = x.shape
    total = x.numel()
    if total == 0:
        return out
    xc = x.contiguous()
    gx = out if out.is_contiguous() else torch.empty_like(xc)
    _tv_bwd[(triton.cdiv(total, BLOCK),)](grad.contiguous(), xc, gx, total, C * H * W, H, W, P2=p == 2,
                                          ZEROS=padding == "zeros", BLOCK=BLOCK)
    if gx is not out:
        out.copy_(gx)
    return out

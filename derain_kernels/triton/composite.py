"""Triton kernels of min_composite and rain_composite (forward and backward).

Element-wise, one program per BLOCK elements of the flattened (broadcast)
operands. Semantics are those of derain_kernels.reference.composite.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from .._layout import empty_elementwise
from ._launch import flat_operands

BLOCK = 1024


@triton.jit
def _min_composite_fwd(x_ptr, y_ptr, out_ptr, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    x = tl.load(x_ptr + offs, mask=mask)
    y = tl.load(y_ptr + offs, mask=mask)
    take_x = (x != x) | (x <= y)
    tl.store(out_ptr + offs, tl.where(take_x, x, y), mask=mask)


@triton.jit
def _min_composite_bwd(g_ptr, x_ptr, y_ptr, gx_ptr, gy_ptr, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    g = tl.load(g_ptr + offs, mask=mask)
    x = tl.load(x_ptr + offs, mask=mask)
    y = tl.load(y_ptr + offs, mask=mask)
    take_x = (x != x) | (x <= y)
    zero = tl.zeros_like(g)
    tl.store(gx_ptr + offs, tl.where(take_x, g, zero), mask=mask)
    tl.store(gy_ptr + offs, tl.where(take_x, zero, g), mask=mask)


@triton.jit
def _rain_composite_fwd(c_ptr, r_ptr, out_ptr, n, CLAMP: tl.constexpr, IS_F64: tl.constexpr, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    c = tl.load(c_ptr + offs, mask=mask)
    r = tl.load(r_ptr + offs, mask=mask)
    if IS_F64:
        s = c + r
    else:
        s = c.to(tl.float32) + r.to(tl.float32)
    if CLAMP:
        # NaN stays NaN: both comparisons are false.
        s = tl.where(s < 0.0, 0.0, tl.where(s > 1.0, 1.0, s))
    tl.store(out_ptr + offs, s.to(c.dtype), mask=mask)


@triton.jit
def _rain_composite_bwd(g_ptr, c_ptr, r_ptr, gout_ptr, n, CLAMP: tl.constexpr, IS_F64: tl.constexpr, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    g = tl.load(g_ptr + offs, mask=mask)
    c = tl.load(c_ptr + offs, mask=mask)
    r = tl.load(r_ptr + offs, mask=mask)
    if IS_F64:
        s = c + r
    else:
        s = c.to(tl.float32) + r.to(tl.float32)
    if CLAMP:
        g = tl.where((s >= 0.0) & (s <= 1.0), g, tl.zeros_like(g))
    tl.store(gout_ptr + offs, g, mask=mask)


def _grid(n):
    return (triton.cdiv(max(n, 1), BLOCK),)


def min_composite(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    out = empty_elementwise(x, torch.broadcast_shapes(x.shape, y.shape))
    work, (xs, ys) = flat_operands(out, x, y)
    n = work.numel()
    if n:
        _min_composite_fwd[_grid(n)](xs, ys, work, n, BLOCK=BLOCK)
    if work is not out:
        out.copy_(work)
    return out


def min_composite_backward(grad: torch.Tensor, x: torch.Tensor, y: torch.Tensor):
    shape = torch.broadcast_shapes(x.shape, y.shape)
    gx = empty_elementwise(grad, shape)
    gy = empty_elementwise(grad, shape)
    work, (gs, xs, ys) = flat_operands(gx, grad, x, y)
    work_y = torch.empty_like(work) if work is not gx or gy.stride() != gx.stride() else gy
    n = work.numel()
    if n:
        _min_composite_bwd[_grid(n)](gs, xs, ys, work, work_y, n, BLOCK=BLOCK)
    if work is not gx:
        gx.copy_(work)
    if work_y is not gy:
        gy.copy_(work_y)
    return gx, gy


def rain_composite(clean: torch.Tensor, rain: torch.Tensor, clamp: bool = True) -> torch.Tensor:
    out = empty_elementwise(clean, torch.broadcast_shapes(clean.shape, rain.shape))
    work, (cs, rs) = flat_operands(out, clean, rain)
    n = work.numel()
    if n:
        _rain_composite_fwd[_grid(n)](cs, rs, work, n, CLAMP=bool(clamp), IS_F64=work.dtype == torch.float64, BLOCK=BLOCK)
    if work is not out:
        out.copy_(work)
    return out


def rain_composite_backward(grad: torch.Tensor, clean: torch.Tensor, rain: torch.Tensor,
                            clamp: bool = True) -> torch.Tensor:
    out = empty_elementwise(grad, torch.broadcast_shapes(clean.shape, rain.shape))
    work, (gs, cs, rs) = flat_operands(out, grad, clean, rain)
    n = work.numel()
    if n:
        _rain_composite_bwd[_grid(n)](gs, cs, rs, work, n, CLAMP=bool(clamp), IS_F64=work.dtype == torch.float64, BLOCK=BLOCK)
    if work is not out:
        out.copy_(work)
    return out

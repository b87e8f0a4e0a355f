"""Triton kernels of median_filter (forward) and median_filter_backward.

Exact and without k^2 memory: one program per BLOCK output pixels of one (H, W)
plane; each pixel finds its window's median by radix selection over the
order-preserving integer key of the value (one pass over the window per key
bit, counting the elements below a candidate), then breaks ties among equal
values by a second radix selection over the source index (zero pads first).
That is the selection rule of derain_kernels.reference.median: the middle
element of the window sorted by (value, source flat index). Windows holding a
NaN return NaN and select nothing. Memory: the output and, for the backward, an
int32 index map; no unfolded windows.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

BLOCK = 256
_PAD = {"reflect": 0, "replicate": 1, "zeros": 2}


@triton.jit
def _source(p, n, period, offset, PAD: tl.constexpr):
    """Source coordinate of padded coordinate p (any integer), and whether it is real."""
    if PAD == 0:  # periodic mirror (numpy.pad reflect); period = max(2(n-1), 1)
        m = (p + offset) % period
        s = tl.where(m < n, m, period - m)
        real = p == p
    elif PAD == 1:
        s = tl.minimum(tl.maximum(p, 0), n - 1)
        real = p == p
    else:
        real = (p >= 0) & (p < n)
        s = tl.where(real, p, 0)
    return s, real


@triton.jit
def _median_select(key_ptr, x_ptr, out_ptr, idx_ptr, total, H, W, period_h, offset_h, period_w, offset_w,
                   zero_key, nan_key, KH: tl.constexpr, KW: tl.constexpr, PAD: tl.constexpr,
                   FLIP: tl.constexpr, FLOAT: tl.constexpr, KBITS: tl.constexpr, IBITS: tl.constexpr, WRITE_VALUE: tl.constexpr,
                   BLOCK: tl.constexpr):
    HW = H * W
    flat = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = flat < total
    plane_off = (flat // HW) * HW  # pixels of all planes in one flat range
    offs = (flat % HW).to(tl.int32)
    y = offs // W
    x = offs % W
    kbase = key_ptr + plane_off
    t = (KH * KW - 1) // 2

    # 1. the median key: the largest K with #(key < K) <= t, built bit by bit (keys are
    # int64; FLIP: signed 64-bit keys, compared through the sign-flipped candidate)
    ans = tl.zeros([BLOCK], dtype=tl.int64)
    for b in range(KBITS):
        cand = ans | (tl.full([BLOCK], 1, tl.int64) << (KBITS - 1 - b))
        if FLIP:
            bound = cand ^ (tl.full([BLOCK], 1, tl.int64) << 63)
        else:
            bound = cand
        cnt = tl.zeros([BLOCK], dtype=tl.int32)
        for dy in range(KH):
            sy, ry = _source(y + dy - KH // 2, H, period_h, offset_h, PAD)
            for dx in range(KW):
                sx, rx = _source(x + dx - KW // 2, W, period_w, offset_w, PAD)
                k = tl.load(kbase + sy * W + sx, mask=mask & ry & rx, other=zero_key)
                cnt += (k < bound).to(tl.int32)
        ans = tl.where(cnt <= t, cand, ans)
    if FLIP:
        ans = ans ^ (tl.full([BLOCK], 1, tl.int64) << 63)

    # 2. elements below it and NaNs, then the tie among keys == ans by source index + 1
    # (zero pads: 0, before every real element)
    less = tl.zeros([BLOCK], dtype=tl.int32)
    nans = tl.zeros([BLOCK], dtype=tl.int32)
    for dy in range(KH):
        sy, ry = _source(y + dy - KH // 2, H, period_h, offset_h, PAD)
        for dx in range(KW):
            sx, rx = _source(x + dx - KW // 2, W, period_w, offset_w, PAD)
            k = tl.load(kbase + sy * W + sx, mask=mask & ry & rx, other=zero_key)
            less += (k < ans).to(tl.int32)
            nans += (k == nan_key).to(tl.int32)
    rest = t - less
    ians = tl.zeros([BLOCK], dtype=tl.int32)
    for b in range(IBITS):
        cand = ians | (1 << (IBITS - 1 - b))
        cnt = tl.zeros([BLOCK], dtype=tl.int32)
        for dy in range(KH):
            sy, ry = _source(y + dy - KH // 2, H, period_h, offset_h, PAD)
            for dx in range(KW):
                sx, rx = _source(x + dx - KW // 2, W, period_w, offset_w, PAD)
                real = ry & rx
                k = tl.load(kbase + sy * W + sx, mask=mask & real, other=zero_key)
                i1 = tl.where(real, sy * W + sx + 1, 0)
                cnt += ((k == ans) & (i1 < cand)).to(tl.int32)
        ians = tl.where(cnt <= rest, cand, ians)
    src = tl.where(nans > 0, -2, ians - 1)
    if WRITE_VALUE:
        val = tl.load(x_ptr + plane_off + tl.maximum(src, 0), mask=mask & (src >= 0), other=0)
        if FLOAT:
            val = tl.where(nans > 0, float("nan"), val)
        tl.store(out_ptr + flat, val, mask=mask)
    else:
        tl.store(idx_ptr + flat, src, mask=mask)


def _keys(planes: torch.Tensor):
    """Order-preserving int64 keys (-0 -> +0, NaN above +inf): (keys, zero_key, nan_key, bits, flip)."""
    if planes.dtype == torch.uint8:
        return planes.long(), 0, -1, 8, False
    if planes.dtype == torch.float64:
        b = (planes + 0.0).view(torch.int64)  # + 0.0 turns -0 into +0
        k = torch.where(b < 0, b ^ 0x7FFFFFFFFFFFFFFF, b)
        nan_key = 0x7FFFFFFFFFFFFFFF
        return torch.where(torch.isnan(planes), nan_key, k), 0, nan_key, 64, True
    b = (planes.float() + 0.0).view(torch.int32).long()  # half types convert exactly
    k = torch.where(b < 0, b ^ 0x7FFFFFFF, b) + (1 << 31)  # in [0, 2^32)
    nan_key = (1 << 32) - 1
    return torch.where(torch.isnan(planes), nan_key, k), 1 << 31, nan_key, 32, False


def _launch(x: torch.Tensor, kernel_size, padding: str, write_value: bool):
    if isinstance(kernel_size, int):
        kernel_size = (kernel_size, kernel_size)
    kh, kw = int(kernel_size[0]), int(kernel_size[1])
    H, W = x.shape[-2:]
    planes = x.reshape(-1, H, W).contiguous()
    out = torch.empty_like(planes) if write_value else None
    idx = None if write_value else torch.empty(planes.shape, dtype=torch.int32, device=x.device)
    if planes.numel() == 0:
        return out if write_value else idx
    keys, zero_key, nan_key, kbits, flip = _keys(planes)
    ibits = max(1, int(H * W).bit_length())  # source index + 1 in [0, H*W]
    ph, pw = max(2 * (H - 1), 1), max(2 * (W - 1), 1)
    oh, ow = ph * (kh // 2 // ph + 1), pw * (kw // 2 // pw + 1)
    total = planes.numel()
    grid = (triton.cdiv(total, BLOCK),)
    _median_select[grid](keys, planes, out if write_value else planes, idx if not write_value else keys,
                         total, H, W, ph, oh, pw, ow, zero_key, nan_key, KH=kh, KW=kw, PAD=_PAD[padding],
                         FLIP=flip, FLOAT=planes.is_floating_point(), KBITS=kbits, IBITS=ibits, WRITE_VALUE=write_value, BLOCK=BLOCK)
    return out if write_value else idx


def median_filter(x: torch.Tensor, kernel_size, padding: str = "reflect") -> torch.Tensor:
    out = torch.empty_like(x, memory_format=torch.preserve_format)
    if x.numel():
        out.copy_(_launch(x, kernel_size, padding, True).view(x.shape))
    return out


def median_filter_backward(grad: torch.Tensor, x: torch.Tensor, kernel_size, padding: str = "reflect") -> torch.Tensor:
    gx = torch.zeros_like(x, memory_format=torch.preserve_format)
    if x.numel() == 0:
        return gx
    H, W = x.shape[-2:]
    idx = _launch(x, kernel_size, padding, False).reshape(-1, H * W).long()
    g = grad.reshape(-1, H * W).to(torch.float64 if x.dtype == torch.float64 else torch.float32)
    acc = torch.zeros_like(g)
    acc.scatter_add_(1, idx.clamp(min=0), torch.where(idx >= 0, g, torch.zeros_like(g)))
    gx.copy_(acc.view(x.shape))
    return gx

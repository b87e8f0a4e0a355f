"""Triton kernels of dark_channel (forward with arg-min codes, and backward).

Same semantics as the C++ kernel (csrc/ops/cpu/dark_channel_kernel.cpp): elements ordered
by (value, code), code = channel * H * W + row * W + col, NaN first; mirror borders repeated
periodically. Separable: channel minimum, then a window minimum along rows and along
columns. On the GPU the window minimum uses doubling (a sparse table): ceil(log2(patch))
element-wise passes over the mirror-extended lines, so the cost grows with log(patch),
not patch or patch².
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

BLOCK = 1024


@triton.jit
def _before(a, ka, b, kb):
    an = a != a
    bn = b != b
    num = (a < b) | ((a == b) & (ka < kb))
    nan_case = an & ((~bn) | (ka < kb))
    return tl.where(an | bn, nan_case, num)


@triton.jit
def _channel_min(x_ptr, v_ptr, k_ptr, total, C, H, W, s0, s1, s2, s3, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < total
    b = offs // (H * W)
    pix = offs % (H * W)
    y = pix // W
    xx = pix % W
    base = b * s0 + y * s2 + xx * s3
    best = tl.load(x_ptr + base, mask=mask, other=0.0)
    bk = pix.to(tl.int64)
    for c in range(1, C):
        v = tl.load(x_ptr + base + c * s1, mask=mask, other=0.0)
        kk = pix.to(tl.int64) + c * H * W
        take = _before(v, kk, best, bk)
        best = tl.where(take, v, best)
        bk = tl.where(take, kk, bk)
    tl.store(v_ptr + offs, best, mask=mask)
    tl.store(k_ptr + offs, bk, mask=mask)


@triton.jit
def _extend(sv_ptr, sk_ptr, ev_ptr, ek_ptr, lines, n, L, r, G, A, Bs, S, BLOCK: tl.constexpr):
    # E[l, j] = src[line l, mirror(j - r)]; line l starts at (l // G) * A + (l % G) * Bs, stride S.
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < lines * L
    line = offs // L
    j = offs % L
    i = j - r
    i = tl.where(i < 0, -i, i)
    i = tl.where(i >= n, 2 * (n - 1) - i, i)
    src = (line // G) * A + (line % G) * Bs + i * S
    tl.store(ev_ptr + offs, tl.load(sv_ptr + src, mask=mask, other=0.0), mask=mask)
    tl.store(ek_ptr + offs, tl.load(sk_ptr + src, mask=mask, other=0), mask=mask)


@triton.jit
def _double(cv_ptr, ck_ptr, nv_ptr, nk_ptr, lines, L, s, BLOCK: tl.constexpr):
    # N[j] = min(Cur[j], Cur[j + s]) within each line (Cur[j] alone past the end).
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < lines * L
    j = offs % L
    a = tl.load(cv_ptr + offs, mask=mask, other=0.0)
    ka = tl.load(ck_ptr + offs, mask=mask, other=0)
    m2 = mask & (j + s < L)
    b = tl.load(cv_ptr + offs + s, mask=m2, other=0.0)
    kb = tl.load(ck_ptr + offs + s, mask=m2, other=0)
    take = m2 & _before(b, kb, a, ka)
    tl.store(nv_ptr + offs, tl.where(take, b, a), mask=mask)
    tl.store(nk_ptr + offs, tl.where(take, kb, ka), mask=mask)


@triton.jit
def _finish(cv_ptr, ck_ptr, ov_ptr, ok_ptr, lines, n, L, shift, G, A, Bs, S, BLOCK: tl.constexpr):
    # out[line l, i] = min(Cur[i], Cur[i + shift]) (two overlapping power-of-two windows).
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < lines * n
    line = offs // n
    i = offs % n
    p = line * L + i
    a = tl.load(cv_ptr + p, mask=mask, other=0.0)
    ka = tl.load(ck_ptr + p, mask=mask, other=0)
    b = tl.load(cv_ptr + p + shift, mask=mask, other=0.0)
    kb = tl.load(ck_ptr + p + shift, mask=mask, other=0)
    take = _before(b, kb, a, ka)
    dst = (line // G) * A + (line % G) * Bs + i * S
    tl.store(ov_ptr + dst, tl.where(take, b, a), mask=mask)
    tl.store(ok_ptr + dst, tl.where(take, kb, ka), mask=mask)


@triton.jit
def _scatter(g_ptr, k_ptr, gx_ptr, total, C, HW, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < total
    b = offs // HW
    code = tl.load(k_ptr + offs, mask=mask, other=0)
    g = tl.load(g_ptr + offs, mask=mask, other=0.0)
    dst = b.to(tl.int64) * C * HW + code
    tl.atomic_add(gx_ptr + dst, g, mask=mask)


def _grid(n):
    return (triton.cdiv(max(n, 1), BLOCK),)


def _window_min(sv, sk, ov, ok, lines, n, r, G, A, Bs, S):
    """Window minimum of radius r (clamped to n - 1) along `lines` lines of length n."""
    r = min(r, n - 1)
    w, L = 2 * r + 1, n + 2 * r
    ev = torch.empty(lines * L, dtype=sv.dtype, device=sv.device)
    ek = torch.empty(lines * L, dtype=torch.int64, device=sv.device)
    _extend[_grid(lines * L)](sv, sk, ev, ek, lines, n, L, r, G, A, Bs, S, BLOCK=BLOCK)
    span = 1
    if w > 1:
        nv, nk = torch.empty_like(ev), torch.empty_like(ek)
        while 2 * span <= w:
            _double[_grid(lines * L)](ev, ek, nv, nk, lines, L, span, BLOCK=BLOCK)
            ev, nv, ek, nk = nv, ev, nk, ek
            span *= 2
    _finish[_grid(lines * n)](ev, ek, ov, ok, lines, n, L, w - span, G, A, Bs, S, BLOCK=BLOCK)


def dark_channel(x: torch.Tensor, patch: int):
    B, C, H, W = x.shape
    out = torch.empty(B, 1, H, W, dtype=x.dtype, device=x.device)
    index = torch.empty(B, 1, H, W, dtype=torch.int64, device=x.device)
    total = B * H * W
    if total == 0:
        return out, index
    r = patch // 2
    cv = torch.empty(total, dtype=x.dtype, device=x.device)
    ck = torch.empty(total, dtype=torch.int64, device=x.device)
    _channel_min[_grid(total)](x, cv, ck, total, C, H, W, *x.stride(), BLOCK=BLOCK)
    rv, rk = torch.empty_like(cv), torch.empty_like(ck)
    # rows: line l = b * H + y starts at l * W, unit stride
    _window_min(cv, ck, rv, rk, B * H, W, r, 1, W, 0, 1)
    # columns: line l = b * W + x starts at b * H * W + x, stride W
    _window_min(rv, rk, out, index, B * W, H, r, W, H * W, 1, W)
    return out, index


def dark_channel_backward(grad: torch.Tensor, index: torch.Tensor, channels: int):
    B, _, H, W = grad.shape
    gx = torch.zeros(B, channels, H, W, dtype=grad.dtype, device=grad.device)
    total = B * H * W
    if total:
        _scatter[_grid(total)](grad.contiguous(), index.contiguous(), gx, total, channels, H * W, BLOCK=BLOCK)
    return gx

"""Triton kernels of SSIM (forward and backward), the CUDA kernels of derain::ssim.

Forward: one program per (plane, BH x BW tile of the map); the tile gathers its
window (tile + halo) through per-axis source-index tables, so one kernel covers
every padding mode ("zeros" index -1 -> 0, "valid", torch "reflect"), and
computes the five statistics, the SSIM map or its partial sum, and the five
derivative maps dS/d(mu_x, mu_y, E[x²], E[y²], E[xy]) in the same pass.
Backward: one program per (plane, tile of the input); the transposed blur is a
gather through per-axis transposed-window tables (reflected taps folded onto
their source rows/columns), combined with x and y into both gradients.
Semantics are those of derain_kernels.reference.ssim; see docs/ops/ssim.md.
"""
from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from .._contracts import SIGMA_MIN, map_shape

BH = 16
BW = 32


def _window(k: int, sigma: float) -> torch.Tensor:
    sigma = max(sigma, SIGMA_MIN)  # the same window; keeps 2σ² from underflowing to 0
    r = k // 2
    w = torch.tensor([math.exp(-((i - r) ** 2) / (2.0 * sigma * sigma)) for i in range(k)], dtype=torch.float64)
    return w / w.sum()


def _axis(n: int, k: int, padding: str):
    """(n_out, source[p] for every padded index p, R) of one axis."""
    r = k // 2
    if padding == "valid":
        return n - k + 1, torch.arange(n), 2 * r
    s = torch.arange(n + 2 * r) - r
    if padding == "zeros":
        s = torch.where((s < 0) | (s >= n), torch.full_like(s, -1), s)
    else:  # torch reflect, one reflection (r < n)
        s = torch.where(s < 0, -s, s)
        s = torch.where(s >= n, 2 * (n - 1) - s, s)
    return n, s, r


def _tables(n: int, k: int, sigma: float, padding: str, dtype, device):
    """Forward source table (n_out, k) int32 and transposed-window table (n, k) of one axis."""
    n_out, source, big_r = _axis(n, k, padding)
    w = _window(k, sigma)
    src = source.unfold(0, k, 1)  # (n_out, k): input feeding output o at tap k, or -1
    o = torch.arange(n_out).unsqueeze(1).expand(n_out, k)
    kk = torch.arange(k).unsqueeze(0).expand(n_out, k)
    valid = src >= 0
    s, oo, kv = src[valid], o[valid], kk[valid]
    t = oo - (s - big_r)
    table = torch.zeros(n * k, dtype=torch.float64)
    table.index_put_((s * k + t,), w[kv], accumulate=True)
    return (src.to(torch.int32).contiguous().to(device), table.view(n, k).to(dtype=dtype, device=device),
            w.to(dtype=dtype, device=device), n_out, big_r)


@triton.jit
def _div(a, b):
    """a / b rounded as IEEE division (the CPU's): a GPU's float32 `/` is approximate (2 ulp)."""
    if b.dtype == tl.float64:
        return a / b
    else:
        return tl.math.div_rn(a, b)


@triton.jit
def _ssim_fwd(x_ptr, y_ptr, rsrc_ptr, csrc_ptr, w_ptr, c_ptr, map_ptr, part_ptr, d_ptr,
              H, W, Ho, Wo, n_tw, plane_stride_d,
              K: tl.constexpr, WRITE_MAP: tl.constexpr, SAVE: tl.constexpr, BH: tl.constexpr, BW: tl.constexpr):
    plane = tl.program_id(0)
    th = tl.program_id(1)
    tw = tl.program_id(2)
    rows = th * BH + tl.arange(0, BH)
    cols = tw * BW + tl.arange(0, BW)
    rmask = rows < Ho
    cmask = cols < Wo
    x_base = x_ptr + plane.to(tl.int64) * H * W
    y_base = y_ptr + plane.to(tl.int64) * H * W
    c1 = tl.load(c_ptr)
    c2 = tl.load(c_ptr + 1)
    zero = tl.zeros((BH, BW), dtype=c1.dtype)
    mx = zero
    my = zero
    exx = zero
    eyy = zero
    exy = zero
    for ky in range(K):
        sr = tl.load(rsrc_ptr + rows * K + ky, mask=rmask, other=-1)
        wy = tl.load(w_ptr + ky)
        for kx in range(K):
            sc = tl.load(csrc_ptr + cols * K + kx, mask=cmask, other=-1)
            wxy = wy * tl.load(w_ptr + kx)
            m = (sr[:, None] >= 0) & (sc[None, :] >= 0)
            off = sr[:, None] * W + sc[None, :]
            xv = tl.load(x_base + off, mask=m, other=0.0)
            yv = tl.load(y_base + off, mask=m, other=0.0)
            mx += wxy * xv
            my += wxy * yv
            exx += wxy * (xv * xv)
            eyy += wxy * (yv * yv)
            exy += wxy * (xv * yv)
    vx = exx - mx * mx
    vy = eyy - my * my
    cxy = exy - mx * my
    okx = ~(vx < 0.0)
    oky = ~(vy < 0.0)
    sx = tl.where(okx, vx, zero)
    sy = tl.where(oky, vy, zero)
    sxy = tl.where(okx & oky, cxy, zero)
    a1 = 2.0 * (mx * my) + c1
    du = mx - my
    b1 = a1 + du * du
    a2 = 2.0 * sxy + c2
    b2 = sx + sy + c2
    den = b1 * b2
    s = _div(a1 * a2, den)
    omask = rmask[:, None] & cmask[None, :]
    moff = rows[:, None] * Wo + cols[None, :]
    if WRITE_MAP:
        tl.store(map_ptr + plane.to(tl.int64) * Ho * Wo + moff, s, mask=omask)
    part = tl.sum(tl.sum(tl.where(omask, s, zero), axis=1), axis=0)
    tl.store(part_ptr + (plane * (tl.num_programs(1) * n_tw) + th * n_tw + tw), part)
    if SAVE:
        inv = _div(1.0, den)
        t1 = a2 * inv
        t2 = _div(s, b1)
        t3 = a1 * inv
        t4 = _div(s, b2)
        if K == 1:
            # one tap: the variances and the covariance are identically 0 (E[x²] = μx²),
            # so they carry no gradient (the d-terms would cancel only up to round-off)
            ax = zero
            ay = zero
            bxy = zero
        else:
            ax = tl.where(okx, -t4, zero)
            ay = tl.where(oky, -t4, zero)
            bxy = tl.where(okx & oky, 2.0 * t3, zero)
        d0 = 2.0 * (my * t1 - mx * t2) - 2.0 * mx * ax - my * bxy
        d1 = 2.0 * (mx * t1 - my * t2) - 2.0 * my * ay - mx * bxy
        dbase = d_ptr + plane.to(tl.int64) * Ho * Wo + moff
        tl.store(dbase, d0, mask=omask)
        tl.store(dbase + plane_stride_d, d1, mask=omask)
        tl.store(dbase + 2 * plane_stride_d, ax, mask=omask)
        tl.store(dbase + 3 * plane_stride_d, ay, mask=omask)
        tl.store(dbase + 4 * plane_stride_d, bxy, mask=omask)


@triton.jit
def _ssim_bwd(x_ptr, y_ptr, d_ptr, g_ptr, gs_ptr, rt_ptr, ct_ptr, gx_ptr, gy_ptr,
              H, W, Ho, Wo, RV, RH, plane_stride_d,
              K: tl.constexpr, MAP_GRAD: tl.constexpr, BH: tl.constexpr, BW: tl.constexpr):
    plane = tl.program_id(0)
    rows = tl.program_id(1) * BH + tl.arange(0, BH)
    cols = tl.program_id(2) * BW + tl.arange(0, BW)
    rmask = rows < H
    cmask = cols < W
    dbase = d_ptr + plane.to(tl.int64) * Ho * Wo
    gbase = g_ptr + plane.to(tl.int64) * Ho * Wo
    gs = tl.load(gs_ptr + plane)
    zero = tl.zeros((BH, BW), dtype=gs.dtype)
    t0 = zero
    t1 = zero
    t2 = zero
    t3 = zero
    t4 = zero
    for tr in range(K):
        wr = tl.load(rt_ptr + rows * K + tr, mask=rmask, other=0.0)
        i = rows - RV + tr
        for tc in range(K):
            wc = tl.load(ct_ptr + cols * K + tc, mask=cmask, other=0.0)
            o = cols - RH + tc
            m = ((i >= 0) & (i < Ho) & rmask)[:, None] & ((o >= 0) & (o < Wo) & cmask)[None, :]
            wgt = wr[:, None] * wc[None, :]
            off = i[:, None] * Wo + o[None, :]
            if MAP_GRAD:
                wgt = wgt * tl.load(gbase + off, mask=m, other=0.0)
            t0 += wgt * tl.load(dbase + off, mask=m, other=0.0)
            t1 += wgt * tl.load(dbase + plane_stride_d + off, mask=m, other=0.0)
            t2 += wgt * tl.load(dbase + 2 * plane_stride_d + off, mask=m, other=0.0)
            t3 += wgt * tl.load(dbase + 3 * plane_stride_d + off, mask=m, other=0.0)
            t4 += wgt * tl.load(dbase + 4 * plane_stride_d + off, mask=m, other=0.0)
    imask = rmask[:, None] & cmask[None, :]
    ioff = plane.to(tl.int64) * H * W + rows[:, None] * W + cols[None, :]
    xv = tl.load(x_ptr + ioff, mask=imask, other=0.0)
    yv = tl.load(y_ptr + ioff, mask=imask, other=0.0)
    tl.store(gx_ptr + ioff, gs * (t0 + 2.0 * xv * t2 + yv * t4), mask=imask)
    tl.store(gy_ptr + ioff, gs * (t1 + 2.0 * yv * t3 + xv * t4), mask=imask)


def _planes(x: torch.Tensor) -> int:
    return math.prod(x.shape[:-2])


def ssim_with_dmaps(x: torch.Tensor, y: torch.Tensor, window_size: int, sigma: float, data_range: float,
                    padding: str, reduction: str, k1: float, k2: float, save_for_backward: bool):
    """(result, dmaps): the SSIM result and, if save_for_backward, the (5, planes, Ho, Wo) derivative maps."""
    h, w = x.shape[-2:]
    if h == 0 or w == 0:
        # empty images: an empty map, means over no values are NaN (as torch.mean)
        m = x.new_zeros(map_shape(x.shape, window_size, padding))
        dmaps = x.new_zeros((5, _planes(x), *m.shape[-2:])) if save_for_backward else x.new_empty((0,))
        if reduction == "map":
            return m, dmaps
        if reduction == "none" and x.dim() >= 3:
            return m.flatten(1).mean(1), dmaps
        return m.mean(), dmaps
    planes = _planes(x)
    xc = x.contiguous()
    yc = y.contiguous()
    rsrc, _, win, ho, _ = _tables(h, window_size, sigma, padding, x.dtype, x.device)
    csrc, _, _, wo, _ = _tables(w, window_size, sigma, padding, x.dtype, x.device)
    consts = torch.tensor([(k1 * data_range) ** 2, (k2 * data_range) ** 2], dtype=x.dtype, device=x.device)
    n_th, n_tw = triton.cdiv(ho, BH), triton.cdiv(wo, BW)
    write_map = reduction == "map"
    out_map = x.new_empty((*x.shape[:-2], ho, wo)) if write_map else x.new_empty((1,))
    partial = x.new_empty((planes, n_th * n_tw))
    dmaps = x.new_empty((5, planes, ho, wo)) if save_for_backward else x.new_empty((0,))
    if planes:
        _ssim_fwd[(planes, n_th, n_tw)](
            xc, yc, rsrc, csrc, win, consts, out_map, partial, dmaps if save_for_backward else partial,
            h, w, ho, wo, n_tw, planes * ho * wo,
            K=window_size, WRITE_MAP=write_map, SAVE=bool(save_for_backward), BH=BH, BW=BW,
            enable_fp_fusion=False)  # no FMA contraction, like the CPU build: SSIM(x, x) == 1 and
            # SSIM(x, y) == SSIM(y, x) bit for bit (the y-only gradient runs on (y, x))
    if write_map:
        return out_map, dmaps
    plane_mean = partial.double().sum(1) / (ho * wo)
    if reduction == "none" and x.dim() >= 3:
        return plane_mean.view(x.shape[0], -1).mean(1).to(x.dtype), dmaps
    return plane_mean.mean().to(x.dtype), dmaps


def ssim(x: torch.Tensor, y: torch.Tensor, window_size: int, sigma: float, data_range: float, padding: str,
         reduction: str, k1: float, k2: float) -> torch.Tensor:
    """Launcher with the schema of derain::ssim."""
    return ssim_with_dmaps(x, y, window_size, sigma, data_range, padding, reduction, k1, k2, False)[0]


def ssim_backward(grad: torch.Tensor, x: torch.Tensor, y: torch.Tensor, window_size: int, sigma: float,
                  data_range: float, padding: str, reduction: str, k1: float, k2: float):
    """Launcher with the schema of derain::_ssim_backward: recomputes the derivative maps, then the transposed blur."""
    dmaps = ssim_with_dmaps(x, y, window_size, sigma, data_range, padding, reduction, k1, k2, True)[1]
    return ssim_backward_from_dmaps(grad, x, y, dmaps, window_size, sigma, padding, reduction)


def ssim_backward_x(grad: torch.Tensor, x: torch.Tensor, y: torch.Tensor, window_size: int, sigma: float,
                    data_range: float, padding: str, reduction: str, k1: float, k2: float):
    """Launcher with the schema of derain::_ssim_backward_x: grad_x alone (here via `ssim_backward`)."""
    return ssim_backward(grad, x, y, window_size, sigma, data_range, padding, reduction, k1, k2)[0]


def ssim_with_grad(x: torch.Tensor, y: torch.Tensor, window_size: int, sigma: float, data_range: float,
                   padding: str, reduction: str, k1: float, k2: float, need_y: bool):
    """Launcher with the schema of derain::_ssim_with_grad: (value, d value/dx, d value/dy or an empty (0,))."""
    value, dmaps = ssim_with_dmaps(x, y, window_size, sigma, data_range, padding, reduction, k1, k2, True)
    ones = torch.ones(value.shape, dtype=x.dtype, device=x.device)
    gx, gy = ssim_backward_from_dmaps(ones, x, y, dmaps, window_size, sigma, padding, reduction)
    return value, gx, gy if need_y else x.new_empty((0,))


def ssim_backward_from_dmaps(grad: torch.Tensor, x: torch.Tensor, y: torch.Tensor, dmaps: torch.Tensor,
                             window_size: int, sigma: float, padding: str, reduction: str):
    """(grad_x, grad_y) from the derivative maps of `ssim_with_dmaps`."""
    h, w = x.shape[-2:]
    planes = _planes(x)
    gx = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    gy = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    if x.numel() == 0:
        return gx, gy
    xc = x.contiguous()
    yc = y.contiguous()
    _, rtab, _, ho, rv = _tables(h, window_size, sigma, padding, x.dtype, x.device)
    _, ctab, _, wo, rh = _tables(w, window_size, sigma, padding, x.dtype, x.device)
    map_grad = reduction == "map"
    if map_grad:
        gmap = grad.contiguous()
        gscale = torch.ones(planes, dtype=x.dtype, device=x.device)
    else:
        gmap = gx  # unused
        g = grad.reshape(-1).to(torch.float64)
        if reduction == "none" and x.dim() >= 3:
            per_b = planes // x.shape[0]
            gscale = (g / (ho * wo * per_b)).repeat_interleave(per_b)
        else:
            gscale = (g / (ho * wo * planes)).expand(planes)
        gscale = gscale.to(x.dtype).contiguous()
    _ssim_bwd[(planes, triton.cdiv(h, BH), triton.cdiv(w, BW))](
        xc, yc, dmaps.contiguous(), gmap, gscale, rtab, ctab, gx, gy,
        h, w, ho, wo, rv, rh, planes * ho * wo,
        K=window_size, MAP_GRAD=map_grad, BH=BH, BW=BW, enable_fp_fusion=False)
    return gx, gy

"""Pure-PyTorch reference of SSIM (the test oracle): separable Gaussian blur via conv2d.

Exact in float64, differentiable through PyTorch autograd. Semantics are those of
`derain_kernels.ssim` (see docs/ops/ssim.md), including the rules that keep the
result defined for every valid argument: the window of a tiny sigma, the range of
C1 and C2, one-tap windows and empty images.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .._contracts import SIGMA_MIN, compute_dtype, effective_constants, map_shape


def gaussian_window(window_size: int, sigma: float, dtype=torch.float64, device=None) -> torch.Tensor:
    """Normalised 1-D Gaussian of `window_size` taps (odd), computed in float64 then cast."""
    sigma = max(sigma, SIGMA_MIN)
    r = window_size // 2
    w = torch.tensor([math.exp(-((k - r) ** 2) / (2.0 * sigma * sigma)) for k in range(window_size)],
                     dtype=torch.float64)
    return (w / w.sum()).to(dtype=dtype, device=device)


def _blur(t: torch.Tensor, w: torch.Tensor, padding: str) -> torch.Tensor:
    """Separable blur of (P, 1, H, W) planes with the 1-D window w, padding per `padding`."""
    r = w.numel() // 2
    if padding == "zeros":
        t = F.pad(t, (r, r, r, r))
    elif padding == "reflect":
        t = F.pad(t, (r, r, r, r), mode="reflect")
    t = F.conv2d(t, w.view(1, 1, 1, -1))
    return F.conv2d(t, w.view(1, 1, -1, 1))


def _ratio(a1, a2, b1, b2):
    return (a1 * a2) / (b1 * b2)


def ssim_map(x: torch.Tensor, y: torch.Tensor, window_size: int = 11, sigma: float = 1.5,
             data_range: float = 1.0, padding: str = "zeros", k1: float = 0.01, k2: float = 0.03) -> torch.Tensor:
    """SSIM map of (..., H, W) inputs: (..., H, W) for "zeros"/"reflect", (..., H-w+1, W-w+1) for "valid"."""
    k1, k2, data_range, dtype = effective_constants(k1, k2, data_range, x.dtype)
    if dtype != x.dtype:
        return ssim_map(x.to(dtype), y.to(dtype), window_size, sigma, data_range, padding, k1, k2).to(x.dtype)
    lead, (h, wd) = x.shape[:-2], x.shape[-2:]
    c1 = (k1 * data_range) * (k1 * data_range)
    c2 = (k2 * data_range) * (k2 * data_range)
    if h == 0 or wd == 0:
        # an empty image has an empty map (its reductions follow torch: mean NaN, sum 0)
        return x.new_zeros(map_shape(x.shape, window_size, padding)) + 0 * (x.sum() + y.sum())
    if window_size == 1:
        # one tap: the local variances and covariance are identically 0 (E[x²] = x·x = μx²),
        # so S is the luminance term alone and they carry no gradient
        a1 = 2 * (x * y) + c1
        du = x - y
        b1 = a1 + du * du
        return _ratio(a1, c2, b1, c2)
    xs = x.reshape(-1, 1, h, wd)
    ys = y.reshape(-1, 1, h, wd)
    w = gaussian_window(window_size, sigma, x.dtype, x.device)
    mx, my = _blur(xs, w, padding), _blur(ys, w, padding)
    exx, eyy, exy = _blur(xs * xs, w, padding), _blur(ys * ys, w, padding), _blur(xs * ys, w, padding)
    vx = exx - mx * mx
    vy = eyy - my * my
    cxy = exy - mx * my
    # Variances clamped at 0; where one is clamped the covariance is 0 too (|cov| <= sx sy).
    sx, sy = vx.clamp(min=0), vy.clamp(min=0)
    sxy = torch.where((vx < 0) | (vy < 0), torch.zeros_like(cxy), cxy)
    a1 = 2 * (mx * my) + c1
    b1 = a1 + (mx - my) * (mx - my)  # = mx² + my² + c1, exactly a1 when mx == my
    a2 = 2 * sxy + c2
    b2 = sx + sy + c2
    s = _ratio(a1, a2, b1, b2)
    return s.reshape(*lead, *s.shape[-2:])


def ssim(x: torch.Tensor, y: torch.Tensor, window_size: int = 11, sigma: float = 1.5, data_range: float = 1.0,
         padding: str = "zeros", reduction: str = "mean", k1: float = 0.01, k2: float = 0.03) -> torch.Tensor:
    """SSIM: the map ("map"), its mean per leading index 0 ("none"), or its mean ("mean").

    Means of no values are NaN (like torch.mean); float16 / bfloat16 are computed in float32.
    """
    if x.dtype != compute_dtype(x.dtype):
        dt = compute_dtype(x.dtype)
        return ssim(x.to(dt), y.to(dt), window_size, sigma, data_range, padding, reduction, k1, k2).to(x.dtype)
    s = ssim_map(x, y, window_size, sigma, data_range, padding, k1, k2)
    if reduction == "map":
        return s
    if reduction == "none" and s.dim() >= 3:
        return s.flatten(1).mean(1)
    return s.mean()


def ssim_loss(x: torch.Tensor, y: torch.Tensor, window_size: int = 11, sigma: float = 1.5, data_range: float = 1.0,
              padding: str = "zeros", reduction: str = "mean", k1: float = 0.01, k2: float = 0.03) -> torch.Tensor:
    """1 - ssim(...)."""
    return 1 - ssim(x, y, window_size, sigma, data_range, padding, reduction, k1, k2)

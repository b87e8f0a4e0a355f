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

# Below this sigma every off-centre tap exp(-k²/(2σ²)) (|k| >= 1) is exactly 0 in double:
# the window is [0, ..., 0, 1, 0, ..., 0] for every sigma in (0, SIGMA_MIN], so sigma is
# raised to it (which keeps 2σ² from underflowing to 0 for sigma below ~1e-162).
SIGMA_MIN = 0.02

# C1 = (k1·L)² and C2 = (k2·L)² are used in these ranges, so that C1·C2 and 1 / (C1·C2) are
# normal numbers of the dtype: then (a1·a2) / (b1·b2) is never 0/0 or inf/inf for finite
# statistics, and identical images give exactly 1 for any data_range > 0. float32
# computations whose constants fall outside the float32 range run in float64; float64
# constants outside the float64 range are clamped to it (they are beyond what float64
# statistics of images in [0, data_range] could resolve anyway).
C_RANGE_FLOAT32 = (2.0 ** -62, 2.0 ** 62)
C_RANGE_FLOAT64 = (2.0 ** -510, 2.0 ** 510)


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """float16 / bfloat16 are computed in float32."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def effective_constants(k1: float, k2: float, data_range: float, dtype: torch.dtype):
    """(k1, k2, data_range, dtype) to compute SSIM with, following the C1/C2 range rule.

    Unchanged (bit for bit the same constants) when C1 and C2 lie in the range of the
    compute dtype. Otherwise the computation moves to float64, and a constant outside the
    float64 range is passed as its clamped square root with data_range 1 (the kernels
    form C = (k·L)·(k·L), so the other constant, passed as k·L, is unchanged).
    """
    dtype = compute_dtype(dtype)
    c1 = (k1 * data_range) * (k1 * data_range)
    c2 = (k2 * data_range) * (k2 * data_range)
    if dtype == torch.float32:
        lo, hi = C_RANGE_FLOAT32
        if lo <= c1 <= hi and lo <= c2 <= hi:
            return k1, k2, data_range, dtype
        dtype = torch.float64
    lo, hi = C_RANGE_FLOAT64
    if lo <= c1 <= hi and lo <= c2 <= hi:
        return k1, k2, data_range, dtype

    def root(k, c):
        return math.sqrt(lo) if c < lo else math.sqrt(hi) if c > hi else k * data_range

    return root(k1, c1), root(k2, c2), 1.0, dtype


def gaussian_window(window_size: int, sigma: float, dtype=torch.float64, device=None) -> torch.Tensor:
    """Normalised 1-D Gaussian of `window_size` taps (odd), computed in float64 then cast."""
    sigma = max(sigma, SIGMA_MIN)
    r = window_size // 2
    w = torch.tensor([math.exp(-((k - r) ** 2) / (2.0 * sigma * sigma)) for k in range(window_size)],
                     dtype=torch.float64)
    return (w / w.sum()).to(dtype=dtype, device=device)


def map_shape(shape, window_size: int, padding: str) -> tuple:
    """Shape of the SSIM map of inputs of `shape` (..., H, W)."""
    h, w = shape[-2:]
    if padding == "valid":
        h, w = h - window_size + 1, w - window_size + 1
    return (*shape[:-2], h, w)


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

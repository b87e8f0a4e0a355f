"""The ops' shared definitions: constants and small rules that the public wrappers
(derain_kernels/ops), the kernels (derain_kernels/triton) and the pure-PyTorch
references (derain_kernels/reference) all follow.

They live here, below all three layers, so that the references never import the
code they are the oracle for, and the kernels never import the wrappers. Nothing
here imports from ops/, triton/ or reference/ (tests/test_layers.py checks it).
"""
from __future__ import annotations

import math

import torch

# ---------------------------------------------------------------- median_filter
MEDIAN_PADDINGS = ("reflect", "replicate", "zeros")


# ---------------------------------------------------------------- self_correcting_block
def effective_dilation(dilation: int, h: int, w: int) -> int:
    """The dilation the kernels run: min(dilation, max(H, W)), with the same result.

    The dilated 3x3 convolution reads x − la at offsets ±d (zero padding d): once
    d >= H and d >= W every off-centre tap lies in the padding, so every d >= max(H, W)
    computes the centre tap alone. Running d = max(H, W) keeps memory bounded by the
    image (the kernels hold rows of W + 2d values, 2d + 1 of them) for any int dilation.
    """
    return min(dilation, max(h, w, 1))


# ---------------------------------------------------------------- dark_channel
def effective_patch(patch: int, h: int, w: int) -> int:
    """The patch the kernels run: min(patch, 2·max(H, W) − 1), with the same result.

    Borders repeat the image periodically (period 2n − 2), so once a window spans
    2n − 1 positions along a dimension of size n it covers all of it: every patch
    >= 2·max(H, W) − 1 gives the minimum of the whole image (values, selected element
    and gradient alike). Running that patch instead keeps any int patch computable.
    """
    return min(patch, max(2 * max(h, w) - 1, 1))


# ---------------------------------------------------------------- tv_loss
def as_images(x: torch.Tensor) -> torch.Tensor:
    """(..., C, H, W) or (H, W) -> (N, C, H, W), also for inputs with zero-size dimensions."""
    if x.dim() == 2:
        return x.reshape(1, 1, *x.shape)
    return x.reshape(math.prod(x.shape[:-3]), *x.shape[-3:])


def tv_counts(shape, padding: str = "valid") -> tuple[int, int]:
    """Numbers of vertical and horizontal differences per image of x of `shape`."""
    H, W = shape[-2:]
    C = shape[-3] if len(shape) >= 3 else 1
    if padding == "zeros":
        return C * H * W, C * H * W
    return C * max(H - 1, 0) * W, C * H * max(W - 1, 0)


# ---------------------------------------------------------------- ssim
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


def map_shape(shape, window_size: int, padding: str) -> tuple:
    """Shape of the SSIM map of inputs of `shape` (..., H, W)."""
    h, w = shape[-2:]
    if padding == "valid":
        h, w = h - window_size + 1, w - window_size + 1
    return (*shape[:-2], h, w)


# ---------------------------------------------------------------- rain_direction_loss
# Banks of at most this many values (n·size²) are built once and kept.
_CACHED_BANK_VALUES = 1 << 14
_BANKS: dict = {}


def line_kernel(theta_deg: float, size: int) -> list[list[float]]:
    """One anti-aliased line through the centre at theta (0° = right, counter-clockwise), sum 1."""
    r = size // 2
    t = math.radians(theta_deg)
    c, s = math.cos(t), math.sin(t)
    k = [[0.0] * size for _ in range(size)]
    # one unit of mass per step along the major axis, split linearly between the two
    # nearest pixels of the minor axis (Wu's anti-aliasing); rows grow downwards, so a
    # counter-clockwise angle moves up: row offset = -col offset * tan(theta).
    for a in range(-r, r + 1):
        if abs(c) >= abs(s):
            b = round(-a * s / c, 12)
            fl = math.floor(b)
            f = b - fl
            k[fl + r][a + r] += 1.0 - f
            if f > 0:
                k[fl + 1 + r][a + r] += f
        else:
            b = round(-a * c / s, 12)
            fl = math.floor(b)
            f = b - fl
            k[a + r][fl + r] += 1.0 - f
            if f > 0:
                k[a + r][fl + 1 + r] += f
    return [[v / size for v in row] for row in k]


def line_kernel_bank(n: int, size: int) -> torch.Tensor:
    """(n, size, size) float64: the line kernels at 0°, 180/n°, …, (n-1)·180/n° (not to be modified)."""
    key = (n, size)
    bank = _BANKS.get(key)
    if bank is None:
        bank = torch.tensor([line_kernel(i * 180.0 / n, size) for i in range(n)], dtype=torch.float64)
        if n * size * size <= _CACHED_BANK_VALUES:  # small banks (the usual ones) are kept
            _BANKS[key] = bank
    return bank


def kernel_indices(angle, batch: int, n: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """(parallel, perpendicular) bank indices (each (batch,) int64) of angles in degrees.

    parallel = round(mod(angle, 180) / (180 / n)) mod n, rounding halves up;
    perpendicular = the same for angle + 90°.
    """
    if isinstance(angle, torch.Tensor):
        a = angle.to(device=device, dtype=torch.float64).reshape(-1)
        if a.numel() == 1:
            a = a.expand(batch)
    else:
        a = torch.full((batch,), float(angle), dtype=torch.float64, device=device)
    step = 180.0 / n
    par = torch.floor(torch.remainder(a, 180.0) / step + 0.5).long() % n
    perp = torch.floor(torch.remainder(a + 90.0, 180.0) / step + 0.5).long() % n
    return par, perp


def select_kernels(angle, batch: int, n: int, size: int, dtype, device) -> torch.Tensor:
    """(batch, 2, size, size): the parallel and perpendicular kernels of each image's angle.

    A non-finite angle (NaN, inf) gives NaN kernels, so that image's loss is NaN.
    """
    bank = line_kernel_bank(n, size).to(dtype=dtype, device=device)
    if isinstance(angle, torch.Tensor):
        a = angle.to(device=device, dtype=torch.float64).reshape(-1)
        if a.numel() == 1:
            a = a.expand(batch)
        finite = torch.isfinite(a)
        par, perp = kernel_indices(torch.where(finite, a, torch.zeros_like(a)), batch, n, device)
        poison = torch.where(finite, 1.0, float("nan")).to(dtype).view(-1, 1, 1, 1)
        return torch.stack([bank[par], bank[perp]], dim=1) * poison
    par, perp = kernel_indices(angle, batch, n, device)
    return torch.stack([bank[par], bank[perp]], dim=1)

"""Pure-PyTorch reference of median_filter (the test oracle): pad + unfold + sort.

Selection rule (shared by every kernel): the window's kh*kw elements, counted with
multiplicity where padding repeats an element, are ordered by (value, source flat
index h*W + w within the (H, W) plane); zero-padding elements count as value 0
with index -1 (before real zeros). The element at the middle position
(kh*kw - 1) // 2 is the median; its value is returned and the gradient goes to it.
-0.0 and +0.0 are equal values (ordered by index). A window that contains a NaN
returns NaN and passes no gradient.

Padding of a window larger than the image: "reflect" is the periodic mirror of
numpy.pad(mode="reflect") (period 2*(n-1); a side of length 1 repeats its
element), "replicate" repeats the edge, "zeros" pads zeros.
"""
from __future__ import annotations

import torch

from .._contracts import MEDIAN_PADDINGS as PADDINGS  # noqa: F401


def source_index(n: int, before: int, after: int, padding: str, device=None) -> torch.Tensor:
    """Source index in [0, n) of each padded position -before .. n+after-1 (-1: a zero pad)."""
    p = torch.arange(-before, n + after, device=device)
    if padding == "replicate":
        return p.clamp(0, n - 1)
    if padding == "zeros":
        return torch.where((p >= 0) & (p < n), p, torch.full_like(p, -1))
    if n == 1:
        return torch.zeros_like(p)
    period = 2 * (n - 1)
    m = p.remainder(period)
    return torch.where(m < n, m, period - m)


def median_filter_indices(x: torch.Tensor, kernel_size: tuple[int, int], padding: str = "reflect",
                          max_chunk: int = 1 << 24):
    """(selected source flat index per output (int64, -1 for a zero pad), NaN-window mask)."""
    kh, kw = kernel_size
    H, W = x.shape[-2:]
    rh, rw = kh // 2, kw // 2
    planes = x.detach().reshape(-1, H, W)
    P = planes.shape[0]
    rows = source_index(H, rh, rh, padding, x.device)
    cols = source_index(W, rw, rw, padding, x.device)
    # padded source indices (Hp, Wp) and values (P, Hp, Wp)
    pidx = torch.where((rows[:, None] >= 0) & (cols[None, :] >= 0),
                       rows[:, None] * W + cols[None, :], torch.full((), -1, device=x.device))
    flat = planes.reshape(P, H * W)
    vals = torch.where(pidx >= 0, flat[:, pidx.clamp(min=0)], torch.zeros((), dtype=x.dtype, device=x.device))
    n = kh * kw
    mid = (n - 1) // 2
    out_idx = torch.empty(P, H, W, dtype=torch.int64, device=x.device)
    out_nan = torch.empty(P, H, W, dtype=torch.bool, device=x.device)
    rows_per_chunk = max(1, max_chunk // max(1, P * W * n))
    for r0 in range(0, H, rows_per_chunk):
        r1 = min(H, r0 + rows_per_chunk)
        v = vals[:, r0:r1 + kh - 1].unfold(1, kh, 1).unfold(2, kw, 1)  # (P, h, W, kh, kw)
        i = pidx[r0:r1 + kh - 1].unfold(0, kh, 1).unfold(1, kw, 1)  # (h, W, kh, kw)
        v = v.reshape(P, r1 - r0, W, n)
        i = i.reshape(1, r1 - r0, W, n).expand_as(v)
        # order by index, then stably by value (NaN sorts last)
        o1 = torch.sort(i, dim=-1, stable=True).indices
        i1 = torch.gather(i, -1, o1)
        v1 = torch.gather(v, -1, o1)
        if v1.dtype in (torch.float16, torch.bfloat16):
            v1 = v1.float()
        o2 = torch.sort(v1, dim=-1, stable=True).indices
        out_idx[:, r0:r1] = torch.gather(i1, -1, o2[..., mid:mid + 1]).squeeze(-1)
        out_nan[:, r0:r1] = torch.isnan(v1).any(-1) if v1.is_floating_point() else False
    return out_idx.reshape(x.shape), out_nan.reshape(x.shape)


def median_filter(x: torch.Tensor, kernel_size, padding: str = "reflect") -> torch.Tensor:
    """Exact median over the odd kh x kw window (see the module docstring for the rules).

    x: (..., H, W) float or uint8; kernel_size: int or (kh, kw). Differentiable
    (through torch.gather) for floating x.
    """
    if isinstance(kernel_size, int):
        kernel_size = (kernel_size, kernel_size)
    H, W = x.shape[-2:]
    if x.numel() == 0:
        return x.clone()
    idx, nan = median_filter_indices(x, tuple(kernel_size), padding)
    flat = x.reshape(*x.shape[:-2], H * W)
    picked = torch.gather(flat, -1, idx.clamp(min=0).reshape(*x.shape[:-2], H * W)).reshape(x.shape)
    zero = torch.zeros((), dtype=x.dtype, device=x.device)
    out = torch.where(idx >= 0, picked, zero)
    if x.is_floating_point():
        out = torch.where(nan, torch.full((), float("nan"), dtype=x.dtype, device=x.device), out)
    # the layout of x (channels-last stays channels-last), as the kernels do
    return torch.empty_like(x, memory_format=torch.preserve_format).copy_(out)

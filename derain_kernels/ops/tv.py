"""Total-variation loss of SSID-KD (Eq. 11) and UDRDR (L_TV): fused forward and backward."""
from __future__ import annotations

import torch

from .. import reference
from .._backend import has_op
from .._checks import check_choice, check_tensor
from ._common import register_triton_cuda

_CPP = has_op("tv_sums")
REAL_DTYPES = (torch.float32, torch.float64)
REDUCTIONS = ("mean", "sum", "none")


def tv_loss(x: torch.Tensor, reduction: str = "mean", p: int = 1) -> torch.Tensor:
    """Anisotropic total variation ||∇_v x||_p^p + ||∇_h x||_p^p (SSID-KD Eq. 11 with p = 1).

    x: (..., C, H, W) or (H, W); float32 / float64. Differences: vertical x[y+1, x] - x[y, x]
    and horizontal x[y, x+1] - x[y, x], within each channel; p = 1 takes |d|, p = 2 takes d²
    (squared differences, not the L2 norm).
    reduction "mean": mean of |d|^p over all vertical differences of the batch plus the mean
    over all horizontal ones (torch.nn.L1Loss on each term, summed); "sum": the sum of both
    sums; "none": per image (the last three dims), the same per-direction means, shape
    x.shape[:-3]. A direction without differences (H = 1 or W = 1) contributes 0.
    Gradient: p = 1 uses sign(d) with sign(0) = 0; p = 2 uses 2d. NaN propagates.
    """
    check_tensor(x, "x", dtypes=REAL_DTYPES, min_dim=2)
    check_choice(reduction, "reduction", REDUCTIONS)
    if isinstance(p, bool) or p not in (1, 2):
        raise ValueError(f"p must be 1 or 2, got {p!r}")
    if not _CPP:
        return reference.tv_loss(x, reduction, p)
    H, W = x.shape[-2:]
    C = x.shape[-3] if x.dim() >= 3 else 1
    x4 = x if x.dim() == 4 else x.reshape(-1, C, H, W)
    s = torch.ops.derain.tv_sums(x4, p)
    nv, nh = C * (H - 1) * W, C * H * (W - 1)
    if reduction == "sum":
        return s.sum()
    if reduction == "mean":
        n = s.shape[0]
        wv = 1.0 / (n * nv) if n * nv > 0 else 0.0
        wh = 1.0 / (n * nh) if n * nh > 0 else 0.0
        return s[:, 0].sum() * wv + s[:, 1].sum() * wh
    wv = 1.0 / nv if nv > 0 else 0.0
    wh = 1.0 / nh if nh > 0 else 0.0
    return (s[:, 0] * wv + s[:, 1] * wh).reshape(x.shape[:-3])


def _layout_like(x: torch.Tensor) -> torch.Tensor:
    """Layout of the C++/Triton gradient: x's if channels-last, contiguous otherwise."""
    if not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
        return torch.empty_like(x, memory_format=torch.channels_last)
    return torch.empty(x.shape, dtype=x.dtype, device=x.device)


if _CPP:
    @torch.library.register_fake("derain::tv_sums")
    def _tv_sums_fake(x, p):
        return x.new_empty(x.shape[0], 2)

    @torch.library.register_fake("derain::tv_sums_backward")
    def _tv_sums_backward_fake(grad, x, p):
        return _layout_like(x)

    def _setup(ctx, inputs, output):
        x, p = inputs
        ctx.save_for_backward(x)
        ctx.p = p

    def _backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return torch.ops.derain.tv_sums_backward(grad, x, ctx.p), None

    torch.library.register_autograd("derain::tv_sums", _backward, setup_context=_setup)

    for _op in ("tv_sums", "tv_sums_backward"):
        register_triton_cuda(_op, "tv", _op)

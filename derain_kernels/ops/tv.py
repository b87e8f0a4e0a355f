"""Total-variation loss of SSID-KD (Eq. 11) and UDRDR (L_TV): fused forward and backward."""
from __future__ import annotations

import torch

from .. import reference
from .._backend import has_op
from .._checks import check_choice, check_tensor
from .._contracts import as_images, tv_counts
from .._layout import empty_like_layout
from ._common import explain_failure, register_triton_cuda

_CPP = has_op("_tv_sums")
# tv_loss calls the op (sums and reduction in one call) first, and checks only when it raises
# (_common.explain_failure)
_TV_LOSS = torch.ops.derain._tv_loss.default if _CPP else None
REAL_DTYPES = (torch.float32, torch.float64)
REDUCTIONS = ("mean", "sum", "none")
PADDINGS = ("valid", "zeros")


def tv_loss(x: torch.Tensor, reduction: str = "mean", p: int = 1, padding: str = "valid") -> torch.Tensor:
    """Anisotropic total variation ||∇_v x||_p^p + ||∇_h x||_p^p (SSID-KD Eq. 11 with p = 1).

    x: (..., C, H, W) or (H, W); float32 / float64. Differences: vertical x[y+1, x] - x[y, x]
    and horizontal x[y, x+1] - x[y, x], within each channel; p = 1 takes |d|, p = 2 takes d²
    (squared differences, not the L2 norm).
    padding "valid" (default): only the differences inside the image, (H-1)·W vertical and
    H·(W-1) horizontal per channel (torch.diff). "zeros": the image has a zero row above it
    and a zero column to its left, so the first row and column count against 0 as well
    (H·W differences per direction; SSID-KD's zero-padded difference convolutions).
    reduction "mean": mean of |d|^p over all vertical differences of the batch plus the mean
    over all horizontal ones (torch.nn.L1Loss on each term, summed); "sum": the sum of both
    sums; "none": per image (the last three dims), the same per-direction means, shape
    x.shape[:-3]. A mean over no differences (H = 1 or W = 1 with "valid", empty inputs) is
    NaN, like torch.mean; a sum over none is 0.
    Gradient: p = 1 uses sign(d) with sign(0) = 0; p = 2 uses 2d. NaN propagates, to the
    gradient too (sign(NaN) = NaN).
    """
    if _CPP:
        try:
            if x.dim() == 4 and p.__class__ is int:  # (the schema would take a bool for p)
                return _TV_LOSS(x, reduction, p, padding)
        except Exception:
            explain_failure(_check, x, reduction, p, padding)
            raise
    _check(x, reduction, p, padding)
    if not _CPP:
        return reference.tv_loss(x, reduction, p, padding)
    x4 = x if x.dim() == 4 else as_images(x)
    s = torch.ops.derain._tv_sums(x4, p, padding)
    nv, nh = tv_counts(x.shape, padding)
    if reduction == "sum":
        return s.sum()
    if reduction == "mean":
        n = s.shape[0]
        return s[:, 0].sum() / (n * nv) + s[:, 1].sum() / (n * nh)
    return (s[:, 0] / nv + s[:, 1] / nh).reshape(x.shape[:-3])


def _check(x, reduction, p, padding) -> None:
    check_tensor(x, "x", dtypes=REAL_DTYPES, min_dim=2)
    _plan(reduction, p, padding)


def _plan(reduction, p, padding) -> None:
    check_choice(reduction, "reduction", REDUCTIONS)
    if isinstance(p, bool) or not isinstance(p, int):
        raise TypeError(f"p must be 1 or 2 (an int), got {type(p).__name__}")
    if p not in (1, 2):
        raise ValueError(f"p must be 1 or 2, got {p!r}")
    check_choice(padding, "padding", PADDINGS)


if _CPP:
    @torch.library.register_fake("derain::_tv_sums")
    def _tv_sums_fake(x, p, padding="valid"):
        return x.new_empty(x.shape[0], 2)

    @torch.library.register_fake("derain::_tv_sums_backward")
    def _tv_sums_backward_fake(grad, x, p, padding="valid"):
        return empty_like_layout(x)

    # autograd of _tv_sums: registered from C++ (csrc/ops/autograd/related_autograd.cpp)

    for _op in ("_tv_sums", "_tv_sums_backward"):
        register_triton_cuda(_op, "tv")

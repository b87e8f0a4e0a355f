"""Dark channel of SSID-KD (He et al.'s prior) and the dark-channel loss (docs/method.md#related-methods-that-use-the-same-ops, docs/ops/related.md).

D(x)(y, x) = min over the patch x patch window centred at (y, x) of min over channels.
"""
from __future__ import annotations

import math

import torch

from .. import reference
from .._backend import has_op
from .._checks import check_choice, check_int, check_tensor
from .._contracts import effective_patch
from ._common import eager_cache, explain_failure, register_triton_cuda

_CPP = has_op("_dark_channel")
# The public functions call the kernel first and check only when it raises (_common.explain_failure).
_DARK_CHANNEL = torch.ops.derain._dark_channel.default if _CPP else None
_DARK_CHANNEL_LOSS = torch.ops.derain._dark_channel_loss.default if _CPP else None  # the op and |.|, reduced
REAL_DTYPES = (torch.float32, torch.float64)
REDUCTIONS = ("mean", "sum", "none")


def _check_patch(patch) -> int:
    patch = check_int(patch, "patch", 1)
    if patch % 2 == 0:
        raise ValueError(f"patch must be odd (a window centred on each pixel), got {patch}")
    return patch


def _check_x(x) -> None:
    check_tensor(x, "x", dtypes=REAL_DTYPES, min_dim=3)
    if x.shape[-3] < 1:
        raise ValueError(f"x must have at least one channel (dim -3) to take the minimum over, "
                         f"got shape {tuple(x.shape)}")


def _check(x, patch) -> None:
    _check_x(x)
    _check_patch(patch)


def _check_loss(x, patch, reduction) -> None:
    _check(x, patch)
    check_choice(reduction, "reduction", REDUCTIONS)


@eager_cache()
def _patch_for(patch, h, w) -> int:
    """The checked patch, as the kernel runs it on H x W images (effective_patch)."""
    return effective_patch(_check_patch(patch), h, w)


def dark_channel(x: torch.Tensor, patch: int = 15) -> torch.Tensor:
    """Dark channel: min over channels and over the patch x patch window centred at each pixel.

    Shapes: x (..., C, H, W) with C >= 1 (RGB: C = 3) -> (..., 1, H, W) (channel dim kept);
    empty inputs (any other dimension 0) give empty outputs.
    Dtypes: float32, float64. patch: odd int >= 1, any size, also larger than the image.
    Borders: mirror without edge repeat (torch "reflect", scipy 'mirror'), repeated
    periodically, so a patch wider than 2W - 1 (or taller than 2H - 1) takes the minimum of
    the whole row (column) range. Gradient: all of it to the selected input element; ties go
    to the first element in channel-then-raster order (the smallest flat index into
    (C, H, W)). NaN counts as smaller than every number: it propagates and takes the gradient.
    Cost per pixel is independent of patch (van Herk / Gil-Werman running minimum).
    """
    if _CPP:
        try:
            if x.dim() == 4:
                return _DARK_CHANNEL(x, _patch_for(patch, x.shape[2], x.shape[3]))[0]
        except Exception:
            explain_failure(_check, x, patch)
            raise
    _check_x(x)
    patch = _check_patch(patch)
    lead, (C, H, W) = x.shape[:-3], x.shape[-3:]
    patch = effective_patch(patch, H, W)
    if not _CPP:
        return reference.dark_channel(x, patch)
    x4 = x.reshape(math.prod(lead), C, H, W) if x.dim() != 4 else x
    out, _ = torch.ops.derain._dark_channel(x4, patch)
    return out.reshape(*lead, 1, H, W) if x.dim() != 4 else out


def dark_channel_loss(x: torch.Tensor, patch: int = 15, reduction: str = "mean") -> torch.Tensor:
    """SSID-KD's dark-channel loss: the L1 distance of D(x) from 0.

    "mean": mean of |D(x)| over all (…, 1, H, W) values; "sum": their sum; "none": per image,
    the mean over (H, W), shape x.shape[:-3]. Means over no values are NaN and sums 0
    (torch.mean / torch.sum). Gradient sign(D) at each window's selected element
    (sign(0) = 0). For images in [0, 1], |D| = D.
    """
    if _CPP:
        try:
            # (the schema would take a bool for patch, and refuses ints beyond int64: those run below)
            if x.dim() == 4 and patch.__class__ is int and patch < 1 << 62:
                return _DARK_CHANNEL_LOSS(x, patch, reduction)
        except Exception:
            explain_failure(_check_loss, x, patch, reduction)
            raise
    _check_loss(x, patch, reduction)
    d = dark_channel(x, patch).abs()
    if reduction == "mean":
        return d.mean()
    if reduction == "sum":
        return d.sum()
    return d.flatten(-3).mean(-1)


if _CPP:
    @torch.library.register_fake("derain::_dark_channel")
    def _dark_channel_fake(x, patch):
        B, _, H, W = x.shape
        return x.new_empty(B, 1, H, W), x.new_empty(B, 1, H, W, dtype=torch.int64)

    @torch.library.register_fake("derain::_dark_channel_backward")
    def _dark_channel_backward_fake(grad, index, channels):
        B, _, H, W = grad.shape
        return grad.new_empty(B, channels, H, W)

    # autograd of _dark_channel: registered from C++ (csrc/ops/autograd/related_autograd.cpp); here,
    # the backward op's own (double backward)
    def _bwd_setup(ctx, inputs, output):
        _, index, _ = inputs
        ctx.save_for_backward(index)

    def _bwd_backward(ctx, gg):
        # linear in grad: d grad_x / d grad gathers gg at the selected elements
        (index,) = ctx.saved_tensors
        B, C, H, W = gg.shape
        return gg.reshape(B, -1).gather(1, index.reshape(B, -1)).view(B, 1, H, W), None, None

    torch.library.register_autograd("derain::_dark_channel_backward", _bwd_backward, setup_context=_bwd_setup)

    for _op in ("_dark_channel", "_dark_channel_backward"):
        register_triton_cuda(_op, "dark_channel")

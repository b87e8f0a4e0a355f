"""Output layouts of the kernels, shared by the fake-tensor rules and the Triton launchers.

The C++ kernels choose their outputs' memory layout by these rules; the fake
(meta) implementations and the Triton kernels allocate through the same
functions, so compiled graphs see the real strides on every device.
"""
from __future__ import annotations

import torch


def empty_elementwise(like: torch.Tensor, shape) -> torch.Tensor:
    """Output of an element-wise op: laid out like `like` when shapes match, else contiguous.

    Mirrors csrc/ops/elementwise.h.
    """
    shape = torch.Size(shape)
    if like.shape == shape:
        return torch.empty_like(like, memory_format=torch.preserve_format)
    return like.new_empty(shape)


def channels_last_out(x: torch.Tensor) -> bool:
    """The layout rule of the image kernels: a channels-last 4-D input (that is not also
    contiguous) gives channels-last outputs and gradients; anything else gives contiguous ones."""
    return x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()


def empty_like_layout(x: torch.Tensor) -> torch.Tensor:
    """An uninitialised tensor of x's shape, dtype and device in the layout `channels_last_out` picks."""
    fmt = torch.channels_last if channels_last_out(x) else torch.contiguous_format
    return torch.empty(x.shape, dtype=x.dtype, device=x.device, memory_format=fmt)


def empty_map(x: torch.Tensor, channels: int) -> torch.Tensor:
    """An uninitialised (N, channels, H, W) map of x's N, H, W, dtype and device, in the layout
    `channels_last_out` picks (a convolution's output or input gradient)."""
    fmt = torch.channels_last if channels_last_out(x) else torch.contiguous_format
    return torch.empty((x.shape[0], channels, *x.shape[2:]), dtype=x.dtype, device=x.device, memory_format=fmt)

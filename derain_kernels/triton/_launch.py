"""Shared helpers of the Triton launchers."""
from __future__ import annotations

import torch


def is_dense(t: torch.Tensor) -> bool:
    """Contiguous or channels-last: its storage can be walked as a flat array."""
    return t.is_contiguous() or (t.dim() == 4 and t.is_contiguous(memory_format=torch.channels_last))


def same_flat_layout(out: torch.Tensor, *tensors: torch.Tensor) -> bool:
    """True when all operands can be processed as flat arrays, element i matching element i."""
    return is_dense(out) and all(t.shape == out.shape and t.stride() == out.stride() for t in tensors)


def flat_operands(out: torch.Tensor, *tensors: torch.Tensor):
    """(work_out, inputs): flat-compatible buffers; copy work_out into out when it is not out."""
    if same_flat_layout(out, *tensors):
        return out, tensors
    work = torch.empty(out.shape, dtype=out.dtype, device=out.device)
    return work, tuple(t.expand(out.shape).contiguous() for t in tensors)

"""Reference of conv3x3_relu: ReLU(conv2d(cat(x, x2), weight, bias, padding=1))."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def conv3x3_relu(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
                 x2: torch.Tensor | None = None) -> torch.Tensor:
    inp = x if x2 is None else torch.cat([x, x2], 1)
    if inp.shape[-2] == 0 or inp.shape[-1] == 0:  # conv2d refuses empty images: an empty map, zero gradients
        return inp.new_zeros(inp.shape[0], weight.shape[0], *inp.shape[2:]) + 0 * (weight.sum() + bias.sum()
                                                                                  + inp.sum())
    return torch.relu(F.conv2d(inp, weight, bias, padding=1))

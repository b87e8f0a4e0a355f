"""Pure-PyTorch references of the compositing ops (the test oracle)."""
from __future__ import annotations

import torch


def min_composite(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """min(x, y), broadcasting; ties and NaN in x select x, a NaN in y alone selects y."""
    take_x = torch.isnan(x) | (x <= y)
    return torch.where(take_x, x, y)


def rain_composite(clean: torch.Tensor, rain: torch.Tensor, clamp: bool = True) -> torch.Tensor:
    """clamp(clean + rain, 0, 1) (the authors' D), or the plain sum when clamp=False."""
    s = clean + rain
    return s.clamp(0, 1) if clamp else s

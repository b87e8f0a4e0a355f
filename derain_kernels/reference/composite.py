"""Pure-PyTorch references of the compositing ops (the test oracle)."""
from __future__ import annotations

import torch


def min_composite(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """min(x, y), broadcasting; ties and NaN in x select x, a NaN in y alone selects y."""
    take_x = torch.isnan(x) | (x <= y)
    return torch.where(take_x, x, y)


def rain_composite(clean: torch.Tensor, rain: torch.Tensor, clamp: bool = True) -> torch.Tensor:
    """clamp(clean + rain, 0, 1) (the authors' D), or the plain sum when clamp=False.

    float16 / bfloat16 inputs are added in float32 and the clamp (value and gradient) acts on
    that sum, which is rounded to the dtype once at the end: so a sum just above 1 that would
    round to 1.0 in the dtype is still clamped (gradient 0), as it is in exact arithmetic.
    """
    if clean.dtype in (torch.float16, torch.bfloat16):
        return rain_composite(clean.float(), rain.float(), clamp).to(clean.dtype)
    s = clean + rain
    return s.clamp(0, 1) if clamp else s

"""Loss-weight and learning-rate schedules of the two-stage data distillation (docs/method.md#losses-and-their-weights).

t counts batches from 1 over the whole run (resumed runs continue the count).
"""
from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class WeightSchedule:
    """β(t) = beta_scale / (beta_scale + t); α(t) = min(t / alpha_scale, alpha_cap)."""

    beta_scale: float
    alpha_scale: float
    alpha_cap: float = math.inf

    def __call__(self, t: int) -> tuple[float, float]:
        """(α, β) at iteration t ≥ 1."""
        if t < 1:
            raise ValueError(f"t must be >= 1 (iterations count from 1), got {t}")
        alpha = min(t / self.alpha_scale, self.alpha_cap)
        beta = self.beta_scale / (self.beta_scale + t)
        return alpha, beta


#: "tip": TIP 2020 Eq. 9-10 as printed (α = t/1000 grows without bound; the paper trains 300K
#: iterations, so α reaches 300). "rain1400"/"rain200l": the authors' released code, α capped at
#: 10 / 50. "did": the released DID config, β = 500/(500+t), α = min(t/500, 100).
PRESETS: dict[str, WeightSchedule] = {
    "tip": WeightSchedule(1000.0, 1000.0),
    "rain1400": WeightSchedule(1000.0, 1000.0, 10.0),
    "rain200l": WeightSchedule(1000.0, 1000.0, 50.0),
    "did": WeightSchedule(500.0, 500.0, 100.0),
}


def weight_schedule(preset: str) -> WeightSchedule:
    try:
        return PRESETS[preset]
    except KeyError:
        raise ValueError(f"preset must be one of {sorted(PRESETS)}, got {preset!r}") from None


def lr_factor(t: int, total: int) -> float:
    """Constant 1 for the first half of `total` iterations, then linear decay towards 0.

    With h = total // 2: factor(t) = 1 for t ≤ h, else (total − t + 1) / (total − h + 1),
    so the decay is continuous at h and the last iteration uses 1 / (total − h + 1).
    """
    if total < 1:
        raise ValueError(f"total must be >= 1, got {total}")
    if not 1 <= t <= total:
        raise ValueError(f"t must be in [1, {total}], got {t}")
    half = total // 2
    if t <= half:
        return 1.0
    return (total - t + 1) / (total - half + 1)

"""Bench cases of min_composite and rain_composite against eager PyTorch."""
from __future__ import annotations

import torch

import derain_kernels as dk

from .harness import Case, Contender, on_device

SHAPES = [(8, 3, 128, 128), (1, 3, 512, 512)]
SMOKE_SHAPES = [(2, 3, 16, 16)]


def _fwd_bwd(f, *inputs):
    def run():
        xs = [t.detach().requires_grad_() for t in inputs]
        f(*xs).sum().backward()
    return run


def cases(quick: bool = False, smoke: bool = False, device: str = "cpu") -> list[Case]:
    return [case for shape in (SMOKE_SHAPES if smoke else SHAPES) for case in _cases_for(shape, device)]


def _cases_for(shape, device) -> list[Case]:
    # (a function per shape so that the lambdas below bind this shape's tensors)
    out = []
    s = "x".join(map(str, shape))
    x, y = torch.rand(shape).to(device), torch.rand(shape).to(device)
    r = (torch.rand(shape) - 0.3).to(device)
    eager_min = lambda a, b: torch.where(a <= b, a, b)  # noqa: E731  (ties to a, as ours)
    eager_rain = lambda c, q: (c + q).clamp(0, 1)  # noqa: E731
    out.append(Case("min_composite", "forward", s, [
        Contender("derain_kernels", lambda: (lambda: dk.min_composite(x, y)), ours=True),
        Contender("torch.where", lambda: (lambda: eager_min(x, y))),
        Contender("torch.minimum", lambda: (lambda: torch.minimum(x, y)), note="splits ties"),
    ]))
    out.append(Case("min_composite", "forward+backward", s, [
        Contender("derain_kernels", lambda: _fwd_bwd(dk.min_composite, x, y), ours=True),
        Contender("torch.where", lambda: _fwd_bwd(eager_min, x, y)),
    ]))
    out.append(Case("rain_composite", "forward", s, [
        Contender("derain_kernels", lambda: (lambda: dk.rain_composite(x, r)), ours=True),
        Contender("torch add+clamp", lambda: (lambda: eager_rain(x, r))),
    ]))
    out.append(Case("rain_composite", "forward+backward", s, [
        Contender("derain_kernels", lambda: _fwd_bwd(dk.rain_composite, x, r), ours=True),
        Contender("torch add+clamp", lambda: _fwd_bwd(eager_rain, x, r)),
    ]))
    return on_device(out, device)

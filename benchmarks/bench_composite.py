"""min_composite / rain_composite vs eager PyTorch (forward+backward), training and inference sizes."""
import pytest
import torch

import derain_kernels as dk

SHAPES = {"train-8x3x128": (8, 3, 128, 128), "infer-1x3x512": (1, 3, 512, 512)}
IMPLS = {
    "min_composite": {"ours": dk.min_composite, "torch.where": lambda a, b: torch.where(a <= b, a, b)},
    "rain_composite": {"ours": dk.rain_composite, "torch add+clamp": lambda c, r: (c + r).clamp(0, 1)},
}


@pytest.mark.parametrize("size", SHAPES)
@pytest.mark.parametrize("op,impl", [(op, impl) for op in IMPLS for impl in IMPLS[op]])
def test_composite_fwd_bwd(benchmark, op, impl, size):
    benchmark.group = f"{op} fwd+bwd {size}"
    shape = SHAPES[size]
    a = torch.rand(shape, requires_grad=True)
    b = (torch.rand(shape) - 0.3).requires_grad_()
    f = IMPLS[op][impl]

    def step():
        f(a, b).sum().backward()

    benchmark(step)
    assert a.grad is not None

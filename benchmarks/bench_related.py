"""dark_channel_loss / tv_loss / rain_direction_loss vs the eager versions of the papers (forward+backward)."""
import pytest
import torch

import derain_kernels as dk
from derain.bench.related import eager_dark_channel_maxpool, eager_rain_direction, eager_tv

SHAPES = {"train-8x3x128": (8, 3, 128, 128), "infer-1x3x512": (1, 3, 512, 512)}
IMPLS = {
    "dark_channel_loss p=15": {
        "ours": lambda x, y, a: dk.dark_channel_loss(x, 15),
        "eager maxpool": lambda x, y, a: eager_dark_channel_maxpool(x, 15).abs().mean(),
    },
    "tv_loss": {
        "ours": lambda x, y, a: dk.tv_loss(x),
        "eager torch.diff": lambda x, y, a: eager_tv(x),
    },
    "rain_direction_loss": {
        "ours": lambda x, y, a: dk.rain_direction_loss(x, y, a),
        "eager conv2d+L1": lambda x, y, a: eager_rain_direction(x, y, a),
    },
}


@pytest.mark.parametrize("size", SHAPES)
@pytest.mark.parametrize("op,impl", [(op, impl) for op in IMPLS for impl in IMPLS[op]])
def test_related_fwd_bwd(benchmark, op, impl, size):
    benchmark.group = f"{op} fwd+bwd {size}"
    shape = SHAPES[size]
    x = torch.rand(shape, requires_grad=True)
    y = torch.rand(shape)
    angle = torch.rand(shape[0]) * 180
    f = IMPLS[op][impl]

    def step():
        f(x, y, angle).backward()

    benchmark(step)
    assert x.grad is not None

"""RainOerMeNet inference (TIP Table IV input, 1×3×512×512): fused path vs eager PyTorch.

Variants: fused (`model.fused()`, when this build has it), eager contiguous, eager
channels-last, and torch.compile of the eager model (only with DERAIN_BENCH_COMPILE=1:
compiling takes minutes on a 2-core machine, too long for CI's single pass).
One group, so `pytest benchmarks/bench_network.py` prints them side by side.
"""
import os

import pytest
import torch

from derain.bench.network import eager_network
from derain.models import RainOerMeNet

SHAPE = (1, 3, 512, 512)
VARIANTS = ["fused", "eager contiguous", "eager channels-last", "torch.compile"]


def _runner(variant: str):
    torch.manual_seed(0)
    model = RainOerMeNet().eval()
    if variant == "fused":
        if not hasattr(model, "fused"):
            pytest.skip("RainOerMeNet.fused() is not in this build")
        return model.fused()
    eager = eager_network(model)  # every block in plain PyTorch
    if variant == "eager contiguous":
        return eager
    if variant == "eager channels-last":
        eager = eager.to(memory_format=torch.channels_last)
        return lambda x: eager(x.contiguous(memory_format=torch.channels_last))
    if os.environ.get("DERAIN_BENCH_COMPILE") != "1":
        pytest.skip("torch.compile variant: set DERAIN_BENCH_COMPILE=1 (compiles for minutes on 2 cores)")
    return torch.compile(eager)


@pytest.mark.parametrize("variant", VARIANTS)
def test_network_inference(benchmark, variant):
    benchmark.group = "RainOerMeNet G inference 1x3x512x512"
    run = _runner(variant)
    x = torch.rand(SHAPE)

    def infer():
        with torch.inference_mode():
            return run(x)

    infer()  # warm-up (compilation for torch.compile)
    y = benchmark(infer)
    assert y.shape == SHAPE and torch.isfinite(y).all()
